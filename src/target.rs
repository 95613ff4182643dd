//! A target: a live Go process together with its parsed executable.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::binary::{Binary, LayoutSource, OpenOptions};
use crate::error::{Error, Result};
use crate::layout::LayoutMatch;
use crate::process::memory::ProcessMemory;
use crate::process::{Process, ThreadStates};

/// A live Go process gospy inspects.
pub struct Target {
    pub process: Process,
    pub binary: Binary,
    /// Load bias: runtime address = link-time address + bias (0 unless PIE).
    pub bias: u64,
    pub memory: ProcessMemory,
    /// For a target in another PID namespace (a container seen from the
    /// host): gospy's thread ids by the target's own; refreshed on a miss.
    namespace_tids: Option<Mutex<HashMap<u64, u64>>>,
    thread_states: ThreadStates,
}

impl Target {
    /// Opens process `pid` and parses its executable (through
    /// /proc/PID/exe, so it works for deleted binaries and containers).
    pub fn attach(pid: i32) -> Result<Target> {
        Target::attach_with(pid, &OpenOptions::default())
    }

    /// [`Target::attach`] with options for reading the binary (`--bin`,
    /// `--go-version`). When the runtime layout is only the nearest known
    /// one, what is read from the process is checked against it first.
    pub fn attach_with(pid: i32, options: &OpenOptions) -> Result<Target> {
        let process = Process::open(pid)?;
        let binary = Binary::open_with(&process.exe_path(), options).map_err(|e| match e {
            Error::NotGo { reason, .. } => Error::NotGo {
                path: process.exe_display().into(),
                reason: format!("{reason}; is PID {pid} a Go program?"),
            },
            other => other,
        })?;
        let bias = process.load_bias(&binary.image)?;
        let memory = ProcessMemory::new(pid);
        let namespace_tids = if process.in_other_pid_namespace() {
            Some(Mutex::new(process.namespace_thread_ids()?))
        } else {
            None
        };
        let target = Target {
            process,
            binary,
            bias,
            memory,
            namespace_tids,
            thread_states: ThreadStates::new(pid),
        };
        if let LayoutSource::Table {
            matched: LayoutMatch::Nearest { wanted, known },
            ..
        } = &target.binary.layout_source
        {
            crate::snapshot::check_layout(&target).map_err(|why| Error::Unsupported {
                path: target.binary.path.clone(),
                reason: format!(
                    "gospy has no runtime layout for Go 1.{wanted} and the one of Go 1.{known} \
                     does not fit this process ({why}); give a debug build with --bin PATH, or \
                     another version with --go-version"
                ),
            })?;
        }
        Ok(target)
    }

    /// PID of the target.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Whether `pc` (a runtime address) is in a Go function of the binary,
    /// per its pclntab: where unwinding C frames stops.
    pub fn in_go_code(&self, pc: u64) -> bool {
        self.binary
            .pclntab
            .find_func(pc.wrapping_sub(self.bias))
            .is_some()
    }

    /// Scheduler state letter of thread `tid` (`R`: on a CPU or ready to
    /// run), None if it is gone. Cheap to ask again for the same thread.
    pub fn thread_state(&self, tid: i32) -> Option<char> {
        self.thread_states.state(tid)
    }

    /// CPU time thread `tid` has used so far, in ns; None if it is gone.
    /// Cheap to ask again for the same thread.
    pub fn thread_cpu_ns(&self, tid: i32) -> Option<u64> {
        self.thread_states.cpu_ns(tid)
    }

    /// gospy's id of the thread the target's runtime knows as `tid`
    /// (`m.procid`): the same unless the target is in another PID
    /// namespace; 0 if there is no such thread.
    pub fn host_tid(&self, tid: u64) -> u64 {
        let Some(map) = &self.namespace_tids else {
            return tid;
        };
        let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&host) = map.get(&tid) {
            return host;
        }
        // A thread started since: read the ids again.
        if let Ok(fresh) = self.process.namespace_thread_ids() {
            *map = fresh;
        }
        map.get(&tid).copied().unwrap_or(0)
    }
}
