//! A target: a live Go process together with its parsed executable.

use crate::binary::Binary;
use crate::error::{Error, Result};
use crate::process::memory::ProcessMemory;
use crate::process::Process;

/// A live Go process gospy inspects.
pub struct Target {
    pub process: Process,
    pub binary: Binary,
    /// Load bias: runtime address = link-time address + bias (0 unless PIE).
    pub bias: u64,
    pub memory: ProcessMemory,
}

impl Target {
    /// Opens process `pid` and parses its executable (through
    /// /proc/PID/exe, so it works for deleted binaries and containers).
    pub fn attach(pid: i32) -> Result<Target> {
        let process = Process::open(pid)?;
        let binary = Binary::open(&process.exe_path()).map_err(|e| match e {
            Error::NotGo { reason, .. } => Error::NotGo {
                path: process.exe_display().into(),
                reason: format!("{reason}; is PID {pid} a Go program?"),
            },
            other => other,
        })?;
        let bias = process.load_bias(&binary.image)?;
        let memory = ProcessMemory::new(pid);
        Ok(Target {
            process,
            binary,
            bias,
            memory,
        })
    }

    /// PID of the target.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }
}
