//! A running fixture process speaking the fixture protocol (see
//! `testdata/fixtures/parked/main.go`): it prints `READY <pid>` once every
//! goroutine is parked, and on SIGUSR1 writes `runtime.Stack(buf, true)` to
//! `$GOSPY_FIXTURE_DUMP`, then prints `STACKNS <ns>` and `DUMPED`.

use super::traceback::{parse_traceback, RuntimeGoroutine};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait for `READY`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for `DUMPED` after SIGUSR1.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// A live fixture process; killed and reaped on drop.
pub struct Target {
    child: Child,
    binary: PathBuf,
    /// Held open: the fixture exits when its stdin reaches EOF, so it dies
    /// with the test process even if Drop never runs.
    _stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    dir: PathBuf,
    dump_path: PathBuf,
    last_stack_ns: Option<u64>,
}

impl Target {
    /// Start `binary args...` and wait for `READY`. Panics (with the
    /// fixture's stderr) if it exits or is not ready within [`READY_TIMEOUT`].
    pub fn start(binary: &Path, args: &[&str]) -> Target {
        Target::start_with_env(binary, args, &[])
    }

    /// Like [`Target::start`] with extra environment variables. By default
    /// GOTRACEBACK is removed and GODEBUG is `tracebacklabels=1` (so Go 1.26+
    /// prints pprof labels in the ground truth; older versions ignore it);
    /// `env` overrides both.
    pub fn start_with_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Target {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "gospy-target-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let dump_path = dir.join("stacks.txt");

        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env_remove("GOTRACEBACK")
            .env("GODEBUG", "tracebacklabels=1")
            .env("GOSPY_FIXTURE_DUMP", &dump_path)
            .env("GOSPY_FIXTURE_EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut s = stderr.lock().unwrap_or_else(|e| e.into_inner());
                            if s.len() < 1 << 20 {
                                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                            }
                        }
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        let mut target = Target {
            child,
            binary: binary.to_path_buf(),
            _stdin: stdin,
            lines: rx,
            stderr,
            dir,
            dump_path,
            last_stack_ns: None,
        };
        let line = target.wait_for("READY", READY_TIMEOUT);
        let pid = target.pid();
        assert_eq!(
            line.trim(),
            format!("READY {pid}"),
            "{}: unexpected READY line",
            target.binary.display()
        );
        target
    }

    /// The fixture's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The executable that was started.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Everything the fixture wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Nanoseconds the fixture's last `runtime.Stack(buf, true)` took.
    pub fn last_stack_ns(&self) -> Option<u64> {
        self.last_stack_ns
    }

    /// Ask the runtime itself for every goroutine's stack (SIGUSR1) and
    /// return the raw text.
    pub fn ground_truth_text(&mut self) -> String {
        let _ = std::fs::remove_file(&self.dump_path);
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGUSR1) };
        assert_eq!(rc, 0, "kill(SIGUSR1): {}", std::io::Error::last_os_error());
        self.wait_for("DUMPED", DUMP_TIMEOUT);
        std::fs::read_to_string(&self.dump_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.dump_path.display()))
    }

    /// [`Target::ground_truth_text`], parsed.
    pub fn ground_truth(&mut self) -> Vec<RuntimeGoroutine> {
        let text = self.ground_truth_text();
        let gs = parse_traceback(&text);
        assert!(!gs.is_empty(), "no goroutines parsed from:\n{text}");
        gs
    }

    /// The process exists and none of its threads is stopped or traced-stopped
    /// (`t`/`T`) or dead (`Z`/`X`) per /proc/PID/task/*/stat.
    pub fn is_running_not_stopped(&self) -> bool {
        match thread_states(self.pid()) {
            Some(states) => {
                !states.is_empty()
                    && states
                        .iter()
                        .all(|(_, s)| !matches!(s, 't' | 'T' | 'Z' | 'X' | 'x'))
            }
            None => false,
        }
    }

    /// Wait for a stdout line starting with `prefix`; remembers `STACKNS`.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(ns) = line.strip_prefix("STACKNS ") {
                        self.last_stack_ns = ns.trim().parse().ok();
                    }
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} (pid {}): no {prefix} within {timeout:?}; thread states {:?}; stderr:\n{}",
                    self.binary.display(),
                    self.pid(),
                    thread_states(self.pid()),
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    // Give the stderr reader a moment to drain.
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "{} (pid {}) closed stdout before {prefix} (exit: {status:?}); stderr:\n{}",
                        self.binary.display(),
                        self.pid(),
                        self.stderr()
                    )
                }
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// (tid, state letter) of every thread of `pid`, or None if the process is
/// gone.
pub fn thread_states(pid: u32) -> Option<Vec<(u32, char)>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "tid (comm) S ..." — comm may contain spaces and parens.
        if let Some(state) = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
        {
            out.push((tid, state));
        }
    }
    Some(out)
}
