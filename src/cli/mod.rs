//! The command line: argument parsing and one small module per subcommand.

mod dump;
mod record;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

/// Set by the Ctrl-C handler; long-running commands poll it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the user pressed Ctrl-C (SIGINT) or sent SIGTERM.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
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
    /// Sample the goroutines running on a CPU and write a flamegraph or
    /// folded stacks.
    Record(record::RecordArgs),
}

/// Runs gospy with the process arguments and returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    // Ctrl-C must never leave the target stopped: the handler only sets a
    // flag, and the thread that paused the target resumes it before exiting.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed));
    let result = match cli.command {
        Command::Dump(args) => dump::run(args),
        Command::Record(args) => record::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gospy: error: {err}");
            1
        }
    }
}
