//! The error type of the gospy library. Every variant renders as one clear,
//! actionable line for the user; the CLI prints it and exits non-zero.

use std::path::PathBuf;

/// Result with gospy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when gospy reads a binary or a process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with PID {0}")]
    NoSuchProcess(i32),

    #[error("process {0} is a zombie (it has exited and waits for its parent to reap it); there is nothing left to inspect")]
    Zombie(i32),

    #[error("{}", permission_message(*.pid, .operation))]
    PermissionDenied { pid: i32, operation: String },

    #[error("process {pid} exited while gospy was reading it")]
    ProcessExited { pid: i32 },

    #[error("{path}: not a Go program ({reason})")]
    NotGo { path: PathBuf, reason: String },

    #[error("{path}: cannot parse binary: {reason}")]
    BadBinary { path: PathBuf, reason: String },

    #[error("{path}: unsupported: {reason}")]
    Unsupported { path: PathBuf, reason: String },

    #[error("reading target memory at {addr:#x} ({len} bytes) failed: {reason}")]
    Memory {
        addr: u64,
        len: usize,
        reason: String,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with what gospy was doing.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

fn permission_message(pid: i32, operation: &str) -> String {
    let in_container = std::path::Path::new("/.dockerenv").exists()
        || std::fs::read_to_string("/proc/1/cgroup")
            .map(|s| s.contains("docker") || s.contains("kubepods") || s.contains("containerd"))
            .unwrap_or(false);
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    // The cause first: whose process it is and who gospy runs as.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let cause = match owner {
        Some(uid) if uid != me => {
            format!("process {pid} belongs to uid {uid}; gospy runs as uid {me}. ")
        }
        Some(_) if me != 0 => format!(
            "process {pid} is gospy's own user's (uid {me}), but the kernel still refused. "
        ),
        _ => String::new(),
    };
    let mut msg = format!(
        "permission denied to {operation} process {pid}: {cause}gospy needs ptrace access to the \
         target. Run gospy as root (sudo), or give it CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep \
         $(which gospy))"
    );
    match scope {
        Some(1) => msg.push_str(
            "; or allow ptrace of non-children: sudo sysctl kernel.yama.ptrace_scope=0 (it is 1 now)",
        ),
        Some(2) => msg.push_str("; kernel.yama.ptrace_scope is 2, which allows ptrace only with CAP_SYS_PTRACE"),
        Some(3) => msg.push_str(
            "; kernel.yama.ptrace_scope is 3, which forbids ptrace entirely until reboot",
        ),
        _ => {}
    }
    if in_container {
        msg.push_str(
            "; gospy seems to run in a container: start it with --cap-add SYS_PTRACE \
             (docker/podman) or add SYS_PTRACE to the pod's securityContext capabilities",
        );
    }
    msg
}
