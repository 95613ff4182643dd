//! `gospy summary`: one screen about a Go process.

use std::io::{self, Write};

use clap::{Args, ValueEnum};

use crate::goroutines::{self, ReportOptions};
use crate::output::summary as render;
use crate::snapshot::{Snapshot, SnapshotOptions};
use crate::summary::{self, PcChoice};
use crate::target::Target;
use crate::Result;

/// Which pc locates each goroutine in the list.
#[derive(Clone, Copy, ValueEnum)]
enum Pc {
    /// The innermost frame the runtime's traceback shows.
    Current,
    /// The goroutine's start function.
    Start,
    /// The `go` statement that created it.
    Go,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sudo gospy summary --pid 1234\n  \
    sudo gospy summary --pid 1234 --pc go\n  \
    sudo gospy summary --pid 1234 --json | jq .gc")]
pub struct SummaryArgs {
    /// PID of the Go process to inspect.
    #[arg(short, long)]
    pid: i32,
    /// Write one JSON document instead of text (schema in README.md).
    #[arg(long)]
    json: bool,
    /// Where each goroutine of the list is: its current function, its
    /// start function, or the `go` statement that created it.
    #[arg(long, value_enum, default_value = "current")]
    pc: Pc,
    /// Do not pause the target to read the goroutines.
    #[arg(long)]
    nonblocking: bool,
    #[command(flatten)]
    binary: super::BinaryArgs,
}

pub fn run(args: SummaryArgs) -> Result<i32> {
    let target = Target::attach_with(args.pid, &args.binary.open_options()?)?;
    let snapshot = Snapshot::take(
        &target,
        SnapshotOptions {
            nonblocking: args.nonblocking,
            ..SnapshotOptions::default()
        },
    )?;
    let reports = goroutines::reports(
        &target,
        &snapshot,
        ReportOptions {
            labels: false,
            ..ReportOptions::default()
        },
    );
    let pc = match args.pc {
        Pc::Current => PcChoice::Current,
        Pc::Start => PcChoice::Start,
        Pc::Go => PcChoice::Go,
    };
    let summary = summary::collect(&target, &snapshot, &reports, pc);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = if args.json {
        render::write_json(&mut out, &summary)
    } else {
        render::write_text(&mut out, &summary)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        // `gospy summary | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(crate::Error::io("writing the summary", e)),
    }
    Ok(0)
}
