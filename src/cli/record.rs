//! `gospy record`: sample the goroutines running on a CPU and write a
//! profile.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{flamegraph, folded, pprof, speedscope};
use crate::sampler::{self, SamplerOptions, StopReason};
use crate::target::Target;
use crate::{Error, Result};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// SVG flamegraph.
    Flamegraph,
    /// Folded stacks (`outer;inner count`), as flamegraph.pl and inferno read.
    Folded,
    /// gzip-compressed pprof protobuf, for `go tool pprof`.
    Pprof,
    /// JSON for https://www.speedscope.app.
    Speedscope,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Flamegraph => "svg",
            Format::Folded => "txt",
            Format::Pprof => "pb.gz",
            Format::Speedscope => "speedscope.json",
        }
    }
}

#[derive(Args)]
pub struct RecordArgs {
    /// PID of the Go process to profile.
    #[arg(short, long)]
    pid: i32,
    /// Samples per second.
    #[arg(short, long, default_value_t = 100.0)]
    rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C or the target exits).
    #[arg(short, long)]
    duration: Option<f64>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Flamegraph)]
    format: Format,
    /// Output file (default: gospy-PID-TIMESTAMP.EXT).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(args: RecordArgs) -> Result<i32> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        return Err(Error::Other(
            "--rate must be between 0 and 10000 samples per second".into(),
        ));
    }
    let target = Target::attach(args.pid)?;
    let output = args.output.clone().unwrap_or_else(|| {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!(
            "gospy-{}-{stamp}.{}",
            args.pid,
            args.format.extension()
        ))
    });
    // Fail on an unwritable path before sampling, not after.
    let file = File::create(&output)
        .map_err(|e| Error::io(format!("creating {}", output.display()), e))?;

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let rate = args.rate;
    let mut warned = false;
    let (profile, reason) = sampler::record(
        &target,
        SamplerOptions {
            rate,
            duration: args.duration.map(Duration::from_secs_f64),
        },
        &super::interrupted,
        &mut |p| {
            let secs = p.elapsed.as_secs_f64().max(1e-9);
            let achieved = p.samples as f64 / secs;
            bar.set_message(format!(
                "{:.1}s, {} samples, {} errors, {:.0}/s (Ctrl-C to stop)",
                secs, p.samples, p.errors, achieved
            ));
            if !warned && secs > 2.0 && achieved < rate * 0.9 {
                warned = true;
                bar.println(format!(
                    "gospy: warning: sampling is behind: {achieved:.0} samples/s of {rate} requested"
                ));
            }
        },
    );
    bar.finish_and_clear();

    let title = format!(
        "gospy record --pid {} ({}), {} Hz, {:.1} s, {} samples",
        args.pid,
        target.process.exe_display(),
        rate,
        profile.elapsed.as_secs_f64(),
        profile.samples
    );
    let mut out = BufWriter::new(file);
    match args.format {
        Format::Flamegraph => flamegraph::write(&mut out, &profile, &title),
        Format::Folded => folded::write(&mut out, &profile),
        Format::Speedscope => speedscope::write(&mut out, &profile, &title),
        Format::Pprof => {
            let binary = target.process.exe_display();
            let image = &target.binary.image;
            pprof::write(
                &mut out,
                &profile,
                &pprof::PprofSource {
                    binary: &binary,
                    build_id: image.go_build_id.as_deref().or(image.build_id.as_deref()),
                    period_ns: (1e9 / rate) as i64,
                },
            )
        }
    }
    .and_then(|()| out.flush())
    .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;

    match reason {
        StopReason::TargetExited => eprintln!("gospy: process {} exited", args.pid),
        StopReason::Interrupted => eprintln!("gospy: interrupted"),
        StopReason::Duration => {}
    }
    eprintln!(
        "collected {} samples ({} errors{}) in {:.1} s; target paused {:.1} ms in total; wrote {}",
        profile.samples,
        profile.errors,
        profile
            .last_error
            .as_deref()
            .map(|e| format!(", last: {e}"))
            .unwrap_or_default(),
        profile.elapsed.as_secs_f64(),
        profile.paused.as_secs_f64() * 1e3,
        output.display()
    );
    Ok(0)
}
