//! `gospy top`: a live view of where a Go program spends CPU time and what
//! its goroutines are doing.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use crate::target::Target;
use crate::top::{self, Ended, Grouping, TopOptions};
use crate::{Error, Result};

#[derive(Args)]
#[command(
    after_help = "Keys: q or Ctrl-C quit, g switch view / grouping, s next sort column, \
    S reverse, 1-3 sort by column, c last interval / since start, / filter (Enter applies, \
    Esc clears), space pause.\n\nExamples:\n  \
    sudo gospy top --pid 1234\n  \
    sudo gospy top --pid 1234 --interval 5 --iterations 3 > snapshots.txt"
)]
pub struct TopArgs {
    /// PID of the Go process to watch.
    #[arg(short, long)]
    pid: i32,
    /// On-CPU samples per second.
    #[arg(short, long, default_value_t = 100.0, allow_negative_numbers = true)]
    rate: f64,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many refreshes.
    #[arg(long)]
    iterations: Option<u64>,
    /// Stop after this many seconds.
    #[arg(short, long)]
    duration: Option<f64>,
    /// Group the goroutine view by the current function, the start
    /// function, or the creation site (`go` statement).
    #[arg(long, default_value = "current", value_parser = ["current", "start", "creator"])]
    group: String,
    /// Rows per table when printing plain snapshots (stdout not a terminal).
    #[arg(long, default_value_t = 30)]
    rows: usize,
    /// Never stop the target: sample running goroutines with Linux perf
    /// events (as `record --nonblocking`) and read the goroutine view
    /// without a pause.
    #[arg(long)]
    nonblocking: bool,
    #[command(flatten)]
    binary: super::BinaryArgs,
}

pub fn run(args: TopArgs) -> Result<i32> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        return Err(Error::Other(format!(
            "--rate {}: give a number of samples per second above 0 and at most 10000 \
             (e.g. 0.5, 100, 1000)",
            args.rate
        )));
    }
    if !(args.interval >= 0.05 && args.interval.is_finite()) {
        return Err(Error::Other(
            "--interval must be at least 0.05 seconds".into(),
        ));
    }
    if args.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        return Err(Error::Other(
            "--duration must be a positive number of seconds".into(),
        ));
    }
    let target = Target::attach_with(args.pid, &args.binary.open_options()?)?;
    let options = TopOptions {
        rate: args.rate,
        interval: Duration::from_secs_f64(args.interval),
        iterations: args.iterations,
        duration: args.duration.map(Duration::from_secs_f64),
        interactive: std::io::stdout().is_terminal(),
        grouping: Grouping::parse(&args.group).unwrap_or(Grouping::Current),
        max_rows: args.rows.max(1),
        nonblocking: args.nonblocking,
    };
    match top::run(&target, &options, &super::interrupted)? {
        Ended::TargetExited => eprintln!("gospy: process {} exited", args.pid),
        Ended::Done => {}
    }
    Ok(0)
}
