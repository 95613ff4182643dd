//! `gospy profile`: the profiles the Go runtime keeps itself, read from the
//! target's memory and written as `/debug/pprof/NAME` would serve them.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, ValueEnum};

use super::record::{local_timestamp, PartialFile};
use crate::mprof::contention::{self, ContentionKind};
use crate::mprof::{self, MemProfileKind};
use crate::output::pprof::{self, PprofSource};
use crate::target::Target;
use crate::{Error, Result};

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
}

impl ProfileName {
    fn name(self) -> &'static str {
        match self {
            ProfileName::Heap => "heap",
            ProfileName::Allocs => "allocs",
            ProfileName::Block => "block",
            ProfileName::Mutex => "mutex",
        }
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sudo gospy profile heap --pid 1234 && go tool pprof gospy-1234-heap-*.pb.gz\n  \
    sudo gospy profile allocs --pid 1234 -o allocs.pb.gz\n  \
    sudo gospy profile mutex --pid 1234 -o mutex.pb.gz\n\n\
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
    /// Output file (default gospy-PID-NAME-TIMESTAMP.pb.gz): a
    /// gzip-compressed pprof profile, for `go tool pprof`.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    binary: super::BinaryArgs,
}

pub fn run(args: ProfileArgs) -> Result<i32> {
    let target = Target::attach_with(args.pid, &args.binary.open_options()?)?;
    let (profile, summary) = match args.name {
        ProfileName::Heap | ProfileName::Allocs => {
            let kind = match args.name {
                ProfileName::Heap => MemProfileKind::Heap,
                _ => MemProfileKind::Allocs,
            };
            let read = mprof::read_mem_profile(&target)?;
            let summary = format!(
                "{} buckets, MemProfileRate {} (heap profile cycle {})",
                read.buckets.len(),
                read.rate,
                read.cycle
            );
            (mprof::heap_profile(&target, &read, kind), summary)
        }
        ProfileName::Block | ProfileName::Mutex => {
            let kind = match args.name {
                ProfileName::Block => ContentionKind::Block,
                _ => ContentionKind::Mutex,
            };
            let read = contention::read_contention_profile(&target, kind)?;
            let rate = match kind {
                ContentionKind::Block => format!("block profile rate {} ticks", read.rate),
                ContentionKind::Mutex => format!("mutex profile fraction 1/{}", read.rate),
            };
            let summary = format!(
                "{} buckets, {rate}, {} ticks/s{}",
                read.records.len(),
                read.ticks_per_second,
                if read.ticks_measured_here {
                    " (measured by gospy: the program has not yet)"
                } else {
                    ""
                }
            );
            (contention::contention_profile(&target, &read), summary)
        }
    };
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "gospy-{}-{}-{}.pb.gz",
            args.pid,
            args.name.name(),
            local_timestamp(SystemTime::now())
        ))
    });
    let mut partial = PartialFile::create(&output)?;
    let binary = target.binary.path.display().to_string();
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
