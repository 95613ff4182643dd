//! `gospy dump`: every goroutine's stack, once.

use std::io::{self, Write};

use clap::Args;

use crate::goroutines::{self, GoroutineReport, ReportOptions};
use crate::native::NativeUnwinder;
use crate::output::dump::{self, DumpHeader, TextOptions};
use crate::snapshot::{Snapshot, SnapshotOptions};
use crate::target::Target;
use crate::Result;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sudo gospy dump --pid 1234\n  \
    sudo gospy dump --pid 1234 --status \"chan receive\",select --match handler\n  \
    sudo gospy dump --pid 1234 --json > goroutines.json\n  \
    sudo gospy dump --pid 1234 --nonblocking --native")]
pub struct DumpArgs {
    /// PID of the Go process to inspect.
    #[arg(short, long)]
    pid: i32,
    /// Write one JSON document instead of text (schema in README.md).
    #[arg(long)]
    json: bool,
    /// Only goroutines with this status or wait reason (e.g. running,
    /// runnable, syscall, waiting, "chan receive"); repeat or separate with
    /// commas for several.
    #[arg(long, value_delimiter = ',')]
    status: Vec<String>,
    /// Only goroutines with a frame, creator or label containing this text.
    #[arg(long = "match", value_name = "SUBSTRING")]
    matches: Option<String>,
    /// Also show the runtime's own goroutines (GC workers, finalizers...).
    #[arg(long)]
    system: bool,
    /// Also show runtime-internal frames the Go traceback hides.
    #[arg(long)]
    runtime_frames: bool,
    /// Do not pause the target; goroutines that change while being read
    /// are reported as unreadable.
    #[arg(long)]
    nonblocking: bool,
    /// Stop unwinding a stack after this many frames.
    #[arg(long, default_value_t = crate::unwind::DEFAULT_MAX_DEPTH)]
    max_depth: usize,
    /// Also show the C frames of goroutines in cgo calls (unwound with the
    /// binary's and libraries' .eh_frame).
    #[arg(short, long)]
    native: bool,
    #[command(flatten)]
    binary: super::BinaryArgs,
}

pub fn run(args: DumpArgs) -> Result<i32> {
    let target = Target::attach_with(args.pid, &args.binary.open_options()?)?;
    if args.native && args.nonblocking {
        return Err(crate::Error::Other(
            "--native needs the threads' registers, which --nonblocking does not read".into(),
        ));
    }
    // Modules are parsed before the pause, not during it.
    let native = if args.native {
        let unwinder = NativeUnwinder::new(target.pid())?;
        unwinder.preload();
        Some(unwinder)
    } else {
        None
    };
    let snapshot = Snapshot::take(
        &target,
        SnapshotOptions {
            nonblocking: args.nonblocking,
            native: args.native,
        },
    )?;
    let all = goroutines::reports(
        &target,
        &snapshot,
        ReportOptions {
            max_depth: args.max_depth.max(1),
            labels: true,
        },
    );
    let mut all = all;
    if let Some(unwinder) = &native {
        add_native_frames(&target, &snapshot, unwinder, &mut all);
    }
    let total = all.len();
    let shown: Vec<GoroutineReport> = all.into_iter().filter(|g| keep(&args, g)).collect();
    let header = DumpHeader {
        pid: target.pid(),
        binary: target.process.exe_display(),
        go_version: target.binary.go_version.to_string(),
        layout_source: target.binary.layout_source.to_string(),
        pause_seconds: snapshot.pause.map(|d| d.as_secs_f64()),
        total_goroutines: total,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = if args.json {
        dump::write_json(&mut out, &header, &shown)
    } else {
        dump::write_text(
            &mut out,
            &header,
            &shown,
            TextOptions {
                runtime_frames: args.runtime_frames,
            },
        )
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        // `gospy dump | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(crate::Error::io("writing the dump", e)),
    }
    Ok(if super::interrupted() { 130 } else { 0 })
}

/// Unwinds the C frames of every goroutine on a thread, from that thread's
/// registers and stack as copied in the pause, up to the first Go pc.
fn add_native_frames(
    target: &Target,
    snapshot: &Snapshot,
    unwinder: &NativeUnwinder,
    reports: &mut [GoroutineReport],
) {
    let is_go = |pc: u64| target.in_go_code(pc);
    for report in reports {
        let Some(regs) = report
            .thread_id
            .and_then(|tid| snapshot.native_registers.get(&tid))
        else {
            continue;
        };
        let (frames, _) = unwinder.unwind(regs, &snapshot.stacks, &is_go, MAX_NATIVE_FRAMES);
        report.native_frames = frames;
    }
}

/// C frames shown per goroutine.
const MAX_NATIVE_FRAMES: usize = 256;

fn keep(args: &DumpArgs, g: &GoroutineReport) -> bool {
    if g.system && !args.system {
        return false;
    }
    if !args.status.is_empty() {
        let status = g.status.name();
        let reason = g.wait_reason.unwrap_or("");
        if !args.status.iter().any(|s| {
            s.eq_ignore_ascii_case(status) || (!reason.is_empty() && s.eq_ignore_ascii_case(reason))
        }) {
            return false;
        }
    }
    if let Some(needle) = &args.matches {
        let hit = g
            .frames
            .iter()
            .any(|f| f.function.contains(needle.as_str()) || f.file.contains(needle.as_str()))
            || g.created_by
                .as_ref()
                .is_some_and(|c| c.function.contains(needle.as_str()))
            || g.labels
                .iter()
                .any(|(k, v)| k.contains(needle.as_str()) || v.contains(needle.as_str()));
        if !hit {
            return false;
        }
    }
    true
}
