//! `gospy record`: sample the goroutines running on a CPU and write a
//! profile.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// The format a file name's extension names, if any.
    fn from_path(path: &std::path::Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let by_suffix = [
            (".speedscope.json", Format::Speedscope),
            (".json", Format::Speedscope),
            (".svg", Format::Flamegraph),
            (".pb.gz", Format::Pprof),
            (".pb", Format::Pprof),
            (".pprof", Format::Pprof),
            (".folded", Format::Folded),
            (".txt", Format::Folded),
        ];
        by_suffix
            .iter()
            .find(|(suffix, _)| name.ends_with(suffix))
            .map(|&(_, f)| f)
    }

    fn name(self) -> &'static str {
        match self {
            Format::Flamegraph => "flamegraph",
            Format::Folded => "folded",
            Format::Pprof => "pprof",
            Format::Speedscope => "speedscope",
        }
    }

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
#[command(after_help = "Examples:\n  \
    sudo gospy record --pid 1234 -o flame.svg\n  \
    sudo gospy record --pid 1234 -d 30 -o cpu.pb.gz && go tool pprof -top cpu.pb.gz\n  \
    gospy record --idle -o wall.txt -- ./server -addr 127.0.0.1:8080\n\n\
    The format follows the output file's extension (.svg, .pb.gz/.pb/.pprof, .txt/.folded, \
    .json/.speedscope.json) unless -f is given.")]
pub struct RecordArgs {
    /// PID of the Go process to profile.
    #[arg(
        short,
        long,
        required_unless_present = "command",
        conflicts_with = "command"
    )]
    pid: Option<i32>,
    /// Samples per second (more than 0, at most 10000).
    #[arg(short, long, default_value_t = 100.0, allow_negative_numbers = true)]
    rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C or the target exits).
    #[arg(short, long, allow_negative_numbers = true)]
    duration: Option<f64>,
    /// Output format (default: from the output file's extension, else
    /// flamegraph).
    #[arg(short, long, value_enum)]
    format: Option<Format>,
    /// Output file (default: gospy-PID-YYYYMMDD-HHMMSS.EXT, local time).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also sample goroutines that are not running, under a leaf frame
    /// naming their state (e.g. `[chan receive]`): a wall-clock profile.
    #[arg(short, long)]
    idle: bool,
    /// Add a root frame naming each goroutine's OS thread.
    #[arg(short, long)]
    threads: bool,
    /// Add a root frame naming each goroutine (`goroutine 17`).
    #[arg(long)]
    goroutines: bool,
    /// Never stop the target: sample running goroutines with Linux perf
    /// events (each thread every 1/RATE s of its CPU time) instead of
    /// ptrace; needs perf events (root or CAP_PERFMON, or one's own
    /// process with kernel.perf_event_paranoid <= 2).
    #[arg(long)]
    nonblocking: bool,
    /// Also show the C frames of goroutines inside cgo calls, above their
    /// Go frames (unwound with the binary's and libraries' .eh_frame); with
    /// --nonblocking, above a `[cgo call]` frame instead.
    #[arg(short, long)]
    native: bool,
    #[command(flatten)]
    binary: super::BinaryArgs,
    /// Launch this program (with its arguments, after `--`) and profile it
    /// from its start; gospy exits with its exit status.
    #[arg(last = true, value_name = "PROGRAM")]
    command: Vec<String>,
}

/// The program gospy started, in launch mode.
struct Launched {
    child: Child,
    command_line: String,
}

pub fn run(args: RecordArgs) -> Result<i32> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        return Err(Error::Other(format!(
            "--rate {}: give a number of samples per second above 0 and at most 10000 \
             (e.g. 0.5, 100, 1000)",
            args.rate
        )));
    }
    let format = output_format(args.format, args.output.as_deref())?;
    if let Some(d) = args.duration.filter(|d| !(*d > 0.0 && d.is_finite())) {
        return Err(Error::Other(format!(
            "--duration {d}: give a number of seconds above 0 (e.g. 0.5 or 30)"
        )));
    }
    // Bad options fail before a program is launched.
    args.binary.open_options()?;
    let mut launched = match args.command.split_first() {
        Some((program, rest)) => Some(launch(program, rest)?),
        None => None,
    };
    let pid = match (&launched, args.pid) {
        (Some(l), _) => l.child.id() as i32,
        (None, Some(pid)) => pid,
        (None, None) => return Err(Error::Other("give --pid PID or -- PROGRAM ARGS".into())),
    };
    let result = record(&args, format, pid, launched.as_ref());
    match launched.as_mut() {
        Some(l) => {
            // Say what went wrong now, not once the program has exited.
            if let Err(e) = &result {
                eprintln!("gospy: error: {e}");
            }
            let status = wait_for_child(l);
            Ok(if result.is_ok() { status } else { 1 })
        }
        None => result,
    }
}

/// Starts `program` with `args`, its standard streams shared with gospy.
fn launch(program: &str, args: &[String]) -> Result<Launched> {
    let child = Command::new(program)
        .args(args)
        .spawn()
        .map_err(|e| Error::io(format!("starting {program}"), e))?;
    let command_line = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Launched {
        child,
        command_line,
    })
}

/// Waits for the launched program after the profile is written, as `time`
/// or `perf record` do; Ctrl-C stops waiting (after a grace period in which
/// the program, which got the same SIGINT, may exit). Returns gospy's exit
/// code: the program's own, or 128 + signal.
fn wait_for_child(launched: &mut Launched) -> i32 {
    let pid = launched.child.id();
    let interrupts_before = super::interrupts();
    let mut give_up_at = None;
    let mut told = false;
    let waiting_since = Instant::now();
    loop {
        // A thread that died while a sample had it stopped must be reaped
        // by us, or the program stays a zombie.
        crate::process::ptrace::release_leftovers();
        let reaped = crate::process::ptrace::take_reaped_exit(pid as i32)
            .map(std::process::ExitStatus::from_raw);
        match reaped.map_or_else(|| launched.child.try_wait(), |s| Ok(Some(s))) {
            Ok(Some(status)) => {
                if let Some(code) = status.code() {
                    if code != 0 {
                        eprintln!("gospy: {} exited with status {code}", launched.command_line);
                    }
                    return code;
                }
                let signal = status.signal().unwrap_or(0);
                eprintln!(
                    "gospy: {} was killed by signal {signal}",
                    launched.command_line
                );
                return 128 + signal;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("gospy: waiting for process {pid}: {e}");
                return 1;
            }
        }
        if !told && waiting_since.elapsed() > Duration::from_millis(500) {
            told = true;
            eprintln!("gospy: waiting for process {pid} to exit (Ctrl-C to stop waiting)");
        }
        if give_up_at.is_none() && super::interrupts() > interrupts_before {
            give_up_at = Some(Instant::now() + Duration::from_secs(2));
        }
        if give_up_at.is_some_and(|t| Instant::now() >= t) {
            eprintln!("gospy: process {pid} is still running");
            return 130;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The format to write: `-f`, else the one the output file's extension
/// names, else a flamegraph. An extension that names another format than
/// `-f` is refused (an SVG in a `.pb.gz` helps nobody).
fn output_format(flag: Option<Format>, output: Option<&std::path::Path>) -> Result<Format> {
    let by_name = output.and_then(Format::from_path);
    match (flag, by_name) {
        (Some(f), Some(n)) if f.extension() != n.extension() => Err(Error::Other(format!(
            "-f {} contradicts the output file name {} (a {} extension); change one of them",
            f.name(),
            output.map(|p| p.display().to_string()).unwrap_or_default(),
            n.name()
        ))),
        (Some(f), _) => Ok(f),
        (None, Some(n)) => Ok(n),
        (None, None) => Ok(Format::Flamegraph),
    }
}

/// `YYYYMMDD-HHMMSS` in local time, for default file names.
pub(super) fn local_timestamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r only writes the tm we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return secs.to_string();
    }
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// An output file being written: a hidden file beside the final one,
/// renamed into place by [`PartialFile::finish`] and removed if dropped
/// before that.
pub(super) struct PartialFile {
    pub(super) file: File,
    temp: PathBuf,
    output: PathBuf,
    done: bool,
}

impl PartialFile {
    pub(super) fn create(output: &std::path::Path) -> Result<PartialFile> {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = output.with_file_name(format!(".{name}.gospy-{}.tmp", std::process::id()));
        let file = File::create(&temp)
            .map_err(|e| Error::io(format!("creating {}", output.display()), e))?;
        Ok(PartialFile {
            file,
            temp,
            output: output.to_path_buf(),
            done: false,
        })
    }

    pub(super) fn finish(mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.output)
            .map_err(|e| Error::io(format!("writing {}", self.output.display()), e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Samples process `pid` and writes the profile.
fn record(args: &RecordArgs, format: Format, pid: i32, launched: Option<&Launched>) -> Result<i32> {
    let target = Target::attach_with(pid, &args.binary.open_options()?).map_err(|e| match e {
        // Name the program the user gave, not a PID they never saw.
        Error::NotGo { path, reason } if launched.is_some() => Error::NotGo {
            reason: reason.replace(&format!("PID {pid}"), &path.display().to_string()),
            path,
        },
        other => other,
    })?;
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "gospy-{pid}-{}.{}",
            local_timestamp(SystemTime::now()),
            format.extension()
        ))
    });
    // Fail on an unwritable path before sampling, not after; the profile
    // is written beside it and renamed into place, so that no empty or
    // partial file is ever left at `output`.
    let partial = PartialFile::create(&output)?;

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let rate = args.rate;
    let mut warned = false;
    let mut warned_paused = false;
    let recorded = sampler::record(
        &target,
        SamplerOptions {
            rate,
            duration: args.duration.map(Duration::from_secs_f64),
            idle: args.idle,
            threads: args.threads,
            goroutines: args.goroutines,
            nonblocking: args.nonblocking,
            native: args.native,
        },
        &super::interrupted,
        &mut |p| {
            let secs = p.elapsed.as_secs_f64().max(1e-9);
            let achieved = p.samples as f64 / secs;
            let of_total = args
                .duration
                .map(|d| format!(" of {d:.1} s"))
                .unwrap_or_default();
            bar.set_message(format!(
                "{secs:.1} s{of_total}, {} ticks, {} errors, {achieved:.0}/s (Ctrl-C to stop)",
                p.samples, p.errors
            ));
            // Without --idle, --nonblocking samples follow CPU use, not a clock.
            let clocked = !args.nonblocking || args.idle;
            let paused = p.paused.as_secs_f64() / secs;
            if !warned_paused && secs > 1.0 && paused > 0.10 {
                warned_paused = true;
                // println would be lost when stderr is not a terminal.
                bar.suspend(|| {
                    eprintln!(
                        "gospy: warning: at {rate} Hz the target is stopped {:.0}% of the \
                         time (thread time per second); lower -r, or use --nonblocking",
                        paused * 100.0
                    )
                });
            }
            if clocked && !warned && secs > 2.0 && achieved < rate * 0.9 {
                warned = true;
                bar.suspend(|| {
                    eprintln!(
                        "gospy: warning: sampling is behind: {achieved:.0} ticks/s of {rate} \
                         requested"
                    )
                });
            }
        },
    );
    bar.finish_and_clear();
    let (profile, reason) = recorded?;

    let what = match launched {
        Some(l) => format!("gospy record -- {} (pid {pid})", l.command_line),
        None => format!(
            "gospy record --pid {pid} ({})",
            target.process.exe_display()
        ),
    };
    let measured = profile.total_weight();
    let time_kind = if args.idle {
        "goroutine-seconds of wall time"
    } else {
        "s of CPU"
    };
    let title = format!(
        "{what}, {}{} Hz, {:.1} s, {} ticks, {} stacks sampled, {:.2} {time_kind}",
        if args.idle { "wall clock, " } else { "" },
        rate,
        profile.elapsed.as_secs_f64(),
        profile.samples,
        measured.samples,
        measured.nanos as f64 / 1e9,
    );
    let mut out = BufWriter::new(&partial.file);
    match format {
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
    drop(out);
    partial.finish()?;

    match reason {
        // In launch mode, how the program ended is said once it is reaped.
        StopReason::TargetExited if launched.is_some() => {}
        StopReason::TargetExited => eprintln!("gospy: process {pid} exited"),
        StopReason::Interrupted => eprintln!("gospy: interrupted"),
        StopReason::Duration => {}
    }
    if profile.lost > 0 {
        eprintln!(
            "gospy: warning: the kernel dropped {} samples that gospy read too slowly",
            profile.lost
        );
    }
    if profile.unattributed_nanos > 0 && !args.idle {
        eprintln!(
            "gospy: {:.3} s of the CPU time sampled could not be given a goroutine's stack: \
             counted under [unknown] with the reason",
            profile.unattributed_nanos as f64 / 1e9
        );
    }
    if crate::process::ptrace::priority_boost_refused() {
        eprintln!(
            "gospy: warning: gospy could not raise its scheduling priority while threads were \
             stopped (it needs root or CAP_SYS_NICE), so the pauses were longer (2-10x); run as \
             root for the shortest pauses, or use --nonblocking"
        );
    }
    let steal = profile.steal_nanos as f64 / 1e9;
    if steal > 0.02 * (measured.nanos as f64 / 1e9 + steal) {
        eprintln!(
            "gospy: perf's clock counted {steal:.2} s that the kernel did not count as the \
             target's CPU time (time the hypervisor of this virtual machine took: steal time); \
             the samples were weighted to the process's CPU time"
        );
    }
    if profile.kernel_time_sampled == Some(false) {
        eprintln!(
            "gospy: warning: perf events may sample user time only here (perf_event_paranoid is \
             2 or more and gospy lacks CAP_PERFMON/CAP_SYS_ADMIN): time the target spent in \
             system calls is missing from this profile; run as root, or without --nonblocking"
        );
    }
    eprintln!(
        "collected {} ticks, {} stacks, {:.2} {time_kind} ({} errors{}) in {:.1} s; \
         target threads stopped {:.1} ms in total; wrote {}",
        profile.samples,
        measured.samples,
        measured.nanos as f64 / 1e9,
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
