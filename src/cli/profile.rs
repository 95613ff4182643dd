//! `gospy profile`: the profiles the Go runtime keeps itself, read from the
//! target's memory and written as `/debug/pprof/NAME` would serve them.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, ValueEnum};

use super::record::{local_timestamp, PartialFile};
use crate::mprof::contention::{self, ContentionKind};
use crate::mprof::{self, MemProfileKind};
use crate::output::pprof::{self, PprofSource, ValueProfile};
use crate::output::values;
use crate::target::Target;
use crate::{Error, Result};

/// Rows of the text table.
const TEXT_ROWS: usize = 30;

/// Which of the runtime's profiles.
#[derive(Clone, Copy, ValueEnum)]
enum ProfileName {
    /// Sampled memory in use, by allocation site (default type inuse_space).
    Heap,
    /// Sampled memory allocated since the program started, by allocation
    /// site (default type alloc_space).
    Allocs,
    /// Where goroutines blocked, and for how long (once the program called
    /// runtime.SetBlockProfileRate).
    Block,
    /// Where contended mutexes were held (once the program called
    /// runtime.SetMutexProfileFraction).
    Mutex,
    /// Every goroutine's stack and pprof labels, counted by stack (the
    /// runtime's own goroutines left out); pauses the target as dump does.
    Goroutine,
    /// The stack that created each OS thread (M) of the runtime.
    Threadcreate,
}

impl ProfileName {
    fn name(self) -> &'static str {
        match self {
            ProfileName::Heap => "heap",
            ProfileName::Allocs => "allocs",
            ProfileName::Block => "block",
            ProfileName::Mutex => "mutex",
            ProfileName::Goroutine => "goroutine",
            ProfileName::Threadcreate => "threadcreate",
        }
    }
}

/// How to write the profile.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileFormat {
    /// gzip-compressed pprof with every sample type, as the runtime writes it.
    Pprof,
    /// SVG flamegraph of one sample type (--sample-index).
    Flamegraph,
    /// Folded stacks with the value of one sample type.
    Folded,
    /// JSON for https://www.speedscope.app, one sample type.
    Speedscope,
    /// A `go tool pprof -top`-like table, to stdout unless -o is given.
    Text,
}

impl ProfileFormat {
    fn name(self) -> &'static str {
        match self {
            ProfileFormat::Pprof => "pprof",
            ProfileFormat::Flamegraph => "flamegraph",
            ProfileFormat::Folded => "folded",
            ProfileFormat::Speedscope => "speedscope",
            ProfileFormat::Text => "text",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ProfileFormat::Pprof => "pb.gz",
            ProfileFormat::Flamegraph => "svg",
            ProfileFormat::Folded => "folded",
            ProfileFormat::Speedscope => "speedscope.json",
            ProfileFormat::Text => "txt",
        }
    }

    /// The format a file name's extension names, if any (as for `record`).
    fn from_path(path: &std::path::Path) -> Option<ProfileFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        [
            (".json", ProfileFormat::Speedscope),
            (".svg", ProfileFormat::Flamegraph),
            (".pb.gz", ProfileFormat::Pprof),
            (".pb", ProfileFormat::Pprof),
            (".pprof", ProfileFormat::Pprof),
            (".folded", ProfileFormat::Folded),
            (".txt", ProfileFormat::Text),
        ]
        .iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|&(_, f)| f)
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sudo gospy profile heap --pid 1234 && go tool pprof gospy-1234-heap-*.pb.gz\n  \
    sudo gospy profile allocs --pid 1234 -o allocs.pb.gz\n  \
    sudo gospy profile allocs --pid 1234 -d 30   # allocated during the next 30 s\n  \
    sudo gospy profile mutex --pid 1234 -f text\n  \
    sudo gospy profile heap --pid 1234 -f flamegraph -o heap.svg\n  \
    sudo gospy profile allocs --pid 1234 -f folded --sample-index alloc_objects\n\n\
    The profile is the one the program itself keeps (runtime.MemProfile, BlockProfile, \
    MutexProfile): gospy reads it without stopping or changing the program, and writes what \
    /debug/pprof/NAME would have served at that moment.")]
pub struct ProfileArgs {
    /// The profile to read.
    #[arg(value_enum)]
    name: ProfileName,
    /// PID of the Go process.
    #[arg(short, long)]
    pid: i32,
    /// Output file (default gospy-PID-NAME-TIMESTAMP.EXT; text goes to
    /// stdout). Its extension picks the format when -f is not given.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Output format (default: from -o's extension, else pprof).
    #[arg(short, long, value_enum)]
    format: Option<ProfileFormat>,
    /// The sample type the non-pprof formats show, by name or number
    /// (e.g. inuse_space, alloc_objects, delay; default as go tool pprof:
    /// the profile's default type); for pprof, the type `go tool pprof`
    /// shows first.
    #[arg(long, value_name = "TYPE")]
    sample_index: Option<String>,
    /// Read the profile, wait this many seconds, read it again and write
    /// the difference: what was allocated (or blocked) meanwhile, as
    /// /debug/pprof/NAME?seconds=S.
    #[arg(short, long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// goroutine: read without pausing the target (as dump --nonblocking);
    /// the stacks of goroutines running meanwhile may be cut short.
    #[arg(long)]
    nonblocking: bool,
    #[command(flatten)]
    binary: super::BinaryArgs,
}

/// One read of a profile: the profile and a line about what was read.
struct Read {
    profile: ValueProfile,
    summary: String,
    /// The heap profile cycle (one per GC) of a memory profile.
    heap_cycle: Option<u32>,
}

fn read_profile(target: &Target, name: ProfileName, nonblocking: bool) -> Result<Read> {
    Ok(match name {
        ProfileName::Heap | ProfileName::Allocs => {
            let kind = match name {
                ProfileName::Heap => MemProfileKind::Heap,
                _ => MemProfileKind::Allocs,
            };
            let started = Instant::now();
            let read = mprof::read_mem_profile(target)?;
            Read {
                summary: format!(
                    "{} buckets read in {:.3} s, MemProfileRate {} (heap profile cycle {})",
                    read.buckets.len(),
                    started.elapsed().as_secs_f64(),
                    read.rate,
                    read.cycle
                ),
                heap_cycle: Some(read.cycle),
                profile: mprof::heap_profile(target, &read, kind),
            }
        }
        ProfileName::Block | ProfileName::Mutex => {
            let kind = match name {
                ProfileName::Block => ContentionKind::Block,
                _ => ContentionKind::Mutex,
            };
            let read = contention::read_contention_profile(target, kind)?;
            let rate = match kind {
                ContentionKind::Block => format!("block profile rate {} ticks", read.rate),
                ContentionKind::Mutex => format!("mutex profile fraction 1/{}", read.rate),
            };
            Read {
                summary: format!(
                    "{} buckets, {rate}, {} ticks/s{}",
                    read.records.len(),
                    read.ticks_per_second,
                    if read.ticks_measured_here {
                        " (measured by gospy: the program has not yet)"
                    } else {
                        ""
                    }
                ),
                heap_cycle: None,
                profile: contention::contention_profile(target, &read),
            }
        }
        ProfileName::Goroutine => {
            let read = mprof::goroutine::read_goroutine_profile(target, nonblocking)?;
            let mut summary = format!(
                "{} goroutines in {} samples ({} of the runtime's own left out)",
                read.goroutines,
                read.profile.samples.len(),
                read.system
            );
            match read.pause {
                Some(pause) => {
                    summary += &format!(", target paused for {:.2} ms", pause.as_secs_f64() * 1e3)
                }
                None => summary += ", target not paused",
            }
            if read.incomplete > 0 {
                summary += &format!("; {} stacks read only in part", read.incomplete);
            }
            if !read.unreadable.is_empty() {
                let (goid, why) = &read.unreadable[0];
                summary += &format!(
                    "; {} goroutines left out, unreadable (goroutine {goid}: {why})",
                    read.unreadable.len()
                );
            }
            Read {
                summary,
                heap_cycle: None,
                profile: read.profile,
            }
        }
        ProfileName::Threadcreate => {
            let read = mprof::threadcreate::read_threadcreate_profile(target)?;
            Read {
                summary: format!(
                    "{} threads in {} samples",
                    read.threads,
                    read.profile.samples.len()
                ),
                heap_cycle: None,
                profile: read.profile,
            }
        }
    })
}

/// Sleeps `duration`, or until Ctrl-C; returns the time slept.
fn wait(duration: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < duration && !super::interrupted() {
        std::thread::sleep((duration - start.elapsed()).min(Duration::from_millis(100)));
    }
    start.elapsed()
}

pub fn run(args: ProfileArgs) -> Result<i32> {
    let target = Target::attach_with(args.pid, &args.binary.open_options()?)?;
    let first = read_profile(&target, args.name, args.nonblocking)?;
    let (profile, summary) = match args.duration {
        None => (first.profile, first.summary),
        Some(secs) => {
            let duration = Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| Error::Other(format!("-d {secs}: not a positive duration")))?;
            eprintln!(
                "{} profile read; reading it again in {secs} s (Ctrl-C to read it now)",
                args.name.name()
            );
            let waited = wait(duration);
            let second = read_profile(&target, args.name, args.nonblocking)?;
            let mut profile = mprof::difference(&first.profile, &second.profile);
            profile.duration_nanos = waited.as_nanos() as i64;
            let span = match (first.heap_cycle, second.heap_cycle) {
                (Some(a), Some(b)) if a == b => format!(
                    "; no GC ran in between (heap profile cycle {a}), so the difference is \
                     empty: the runtime publishes memory profile records at each GC; read \
                     over a longer time (-d)"
                ),
                (Some(a), Some(b)) => format!("; heap profile cycles {a} to {b}"),
                _ => String::new(),
            };
            let summary = format!(
                "difference over {:.1} s: {} samples changed{span}",
                waited.as_secs_f64(),
                profile.samples.len()
            );
            (profile, summary)
        }
    };
    let format =
        match (
            args.format,
            args.output.as_deref().and_then(ProfileFormat::from_path),
        ) {
            (Some(f), Some(n)) if f != n => {
                return Err(Error::Other(format!(
                "-f {} contradicts the output file name {} (a {} extension); change one of them",
                f.name(),
                args.output.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                n.name()
            )))
            }
            (Some(f), _) | (None, Some(f)) => f,
            (None, None) => ProfileFormat::Pprof,
        };
    let index = values::sample_index(&profile, args.sample_index.as_deref())
        .map_err(|e| Error::Other(format!("--sample-index: {e}")))?;
    let type_name = profile.sample_types[index].0.clone();
    if format == ProfileFormat::Text && args.output.is_none() {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match values::write_text(&mut out, &profile, index, TEXT_ROWS).and_then(|()| out.flush()) {
            // `| head` closed the pipe: what it wanted was written.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            r => r.map_err(|e| Error::io("writing to stdout", e))?,
        }
        eprintln!("{} profile: {summary}", args.name.name());
        return Ok(0);
    }
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "gospy-{}-{}-{}.{}",
            args.pid,
            args.name.name(),
            local_timestamp(SystemTime::now()),
            format.extension()
        ))
    });
    let mut partial = PartialFile::create(&output)?;
    let binary = target.binary.path.display().to_string();
    let title = format!(
        "gospy profile {} --pid {}: {type_name}",
        args.name.name(),
        args.pid
    );
    let written = match format {
        ProfileFormat::Pprof => {
            let mut profile = profile;
            if args.sample_index.is_some() {
                profile.default_sample_type = Some(type_name.clone());
            }
            let source = PprofSource {
                binary: &binary,
                build_id: target.binary.image.go_build_id.as_deref().or(target
                    .binary
                    .image
                    .build_id
                    .as_deref()),
                period_ns: 0,
            };
            pprof::write_values(&mut partial.file, &profile, &source)
        }
        ProfileFormat::Flamegraph => {
            values::write_flamegraph(&mut partial.file, &profile, index, &title)
        }
        ProfileFormat::Folded => values::write_folded(&mut partial.file, &profile, index),
        ProfileFormat::Speedscope => {
            values::write_speedscope(&mut partial.file, &profile, index, &title)
        }
        ProfileFormat::Text => values::write_text(&mut partial.file, &profile, index, TEXT_ROWS),
    };
    written
        .and_then(|()| partial.file.flush())
        .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
    partial.finish()?;
    eprintln!(
        "{} profile: {summary}; wrote {}",
        args.name.name(),
        output.display()
    );
    Ok(0)
}
