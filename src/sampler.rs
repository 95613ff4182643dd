//! The sampling loop of `gospy record`: at a fixed rate, copy the running
//! goroutines (one short pause), unwind them after the target resumes, and
//! count each distinct stack.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::goroutines::{self, ReportOptions};
use crate::runtime::GStatus;
use crate::snapshot::Snapshot;
use crate::target::Target;

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct SamplerOptions {
    /// Samples per second.
    pub rate: f64,
    /// Stop after this long (`None`: until stopped or the target exits).
    pub duration: Option<Duration>,
}

/// Why sampling ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Interrupted,
    TargetExited,
}

/// One frame of a sampled stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampledFrame {
    /// As the runtime prints it.
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
}

/// Stacks counted over a recording: each key is a stack, outermost first,
/// with the frames the runtime's traceback hides dropped.
#[derive(Debug, Default)]
pub struct Profile {
    pub stacks: HashMap<Vec<SampledFrame>, u64>,
    /// Snapshots taken.
    pub samples: u64,
    /// Snapshots that failed (the error of the last one is kept).
    pub errors: u64,
    pub last_error: Option<String>,
    /// When recording started.
    pub started: Option<std::time::SystemTime>,
    /// Wall time spent recording.
    pub elapsed: Duration,
    /// Sum of the target's pauses.
    pub paused: Duration,
}

/// Samples `target` until the duration elapses, `stop()` returns true, or
/// the target exits. `progress` is called after every sample.
pub fn record(
    target: &Target,
    options: SamplerOptions,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Profile),
) -> (Profile, StopReason) {
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(0.001));
    let started = Instant::now();
    let mut profile = Profile {
        started: Some(std::time::SystemTime::now()),
        ..Profile::default()
    };
    let mut next = started;
    let reason = loop {
        if stop() {
            break StopReason::Interrupted;
        }
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::Duration;
        }
        match sample_once(target, &mut profile) {
            Ok(()) => {}
            Err(Error::NoSuchProcess(_) | Error::ProcessExited { .. } | Error::Zombie(_)) => {
                break StopReason::TargetExited;
            }
            Err(e) => {
                if !target.process.is_alive() {
                    break StopReason::TargetExited;
                }
                profile.errors += 1;
                profile.last_error = Some(e.to_string());
            }
        }
        profile.samples += 1;
        profile.elapsed = started.elapsed();
        progress(&profile);
        // Fixed-rate schedule; when behind, skip ahead instead of bursting.
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    };
    profile.elapsed = started.elapsed();
    (profile, reason)
}

fn sample_once(target: &Target, profile: &mut Profile) -> Result<()> {
    let snapshot = Snapshot::take_running(target)?;
    profile.paused += snapshot.pause.unwrap_or_default();
    let reports = goroutines::reports(
        target,
        &snapshot,
        ReportOptions {
            labels: false,
            ..ReportOptions::default()
        },
    );
    for report in reports
        .iter()
        .filter(|r| r.status == GStatus::Running && !r.system)
    {
        let stack: Vec<SampledFrame> = report
            .frames
            .iter()
            .rev()
            .filter(|f| !f.hidden)
            .map(|f| SampledFrame {
                function: Arc::clone(&f.function),
                file: Arc::clone(&f.file),
                line: f.line,
            })
            .collect();
        if !stack.is_empty() {
            *profile.stacks.entry(stack).or_insert(0) += 1;
        }
    }
    Ok(())
}
