//! The command line: argument parsing and one small module per subcommand.

mod dump;
mod profile;
mod record;
mod summary;
mod top;
mod var;

use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Parser, Subcommand};

/// Counted by the Ctrl-C handler; long-running commands poll it.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Whether the user pressed Ctrl-C (SIGINT) or sent SIGTERM.
pub fn interrupted() -> bool {
    interrupts() > 0
}

/// How many times the user pressed Ctrl-C (or sent SIGTERM).
pub fn interrupts() -> usize {
    INTERRUPTS.load(Ordering::Relaxed)
}

#[derive(Parser)]
#[command(
    name = "gospy",
    version,
    about = "Sampling profiler and inspector for running Go programs",
    long_about = "gospy reads a running Go program from the outside: no agent, no code change, \
                  no restart. It needs ptrace access to the target (run as root or with \
                  CAP_SYS_PTRACE)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every goroutine's stack once, like the Go runtime's traceback.
    Dump(dump::DumpArgs),
    /// Sample a running (or launched) Go program and write a flamegraph,
    /// pprof, folded or speedscope profile.
    Record(record::RecordArgs),
    /// Live view: functions by on-CPU samples and goroutines by function,
    /// refreshed every second (plain snapshots when stdout is not a terminal).
    Top(top::TopArgs),
    /// One screen about the process: scheduler, heap, GC, Ps, threads and
    /// goroutines.
    Summary(summary::SummaryArgs),
    /// Read the profiles the runtime keeps itself (heap, allocs) and write
    /// what /debug/pprof/NAME would serve, without an endpoint.
    Profile(profile::ProfileArgs),
    /// Read package-level variables (main.counter, main.*) through the
    /// binary's DWARF types.
    Var(var::VarArgs),
}

/// How to read the target's binary: options shared by the subcommands.
#[derive(clap::Args, Clone, Default)]
pub struct BinaryArgs {
    /// Take DWARF and symbols from this debug build of the target's program
    /// (for a stripped target; it must be the same build: same build id).
    #[arg(long = "bin", value_name = "PATH")]
    debug_binary: Option<std::path::PathBuf>,
    /// Read the target as this Go version (e.g. 1.24) instead of the one
    /// recorded in its binary.
    #[arg(long, value_name = "VERSION")]
    go_version: Option<String>,
}

impl BinaryArgs {
    /// The options for [`crate::binary::Binary::open_with`].
    pub fn open_options(&self) -> crate::Result<crate::binary::OpenOptions> {
        let go_version = match &self.go_version {
            None => None,
            Some(v) => {
                let text = if v.starts_with("go") {
                    v.clone()
                } else {
                    format!("go{v}")
                };
                Some(crate::binary::GoVersion::parse(&text).ok_or_else(|| {
                    crate::Error::Other(format!(
                        "--go-version {v}: expected a Go version like 1.24 or go1.24.3"
                    ))
                })?)
            }
        };
        Ok(crate::binary::OpenOptions {
            go_version,
            debug_binary: self.debug_binary.clone(),
        })
    }
}

/// Runs gospy with the process arguments and returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    // Ctrl-C must never leave the target stopped: the handler only sets a
    // flag, and the thread that paused the target resumes it before exiting.
    let _ = ctrlc::set_handler(|| {
        INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    });
    let result = match cli.command {
        Command::Dump(args) => dump::run(args),
        Command::Record(args) => record::run(args),
        Command::Top(args) => top::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Var(args) => var::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gospy: error: {err}");
            1
        }
    }
}
