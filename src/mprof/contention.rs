//! The block and mutex profiles: `runtime.bbuckets`, `runtime.xbuckets`.
//!
//! A program keeps them once it calls `runtime.SetBlockProfileRate` or
//! `runtime.SetMutexProfileFraction`. After a bucket's stack comes a
//! `blockRecord`: `count` (an `int64` up to Go 1.18, a `float64` since:
//! sampled events are scaled up when recorded) and `cycles` (CPU ticks
//! spent blocked). `runtime/pprof` (`printCountCycleProfile`) writes
//! `contentions/count` and `delay/nanoseconds`, the ticks converted with
//! the runtime's ticks per second; up to Go 1.20 it also multiplies the
//! mutex profile by the current sampling fraction (`scaleMutexProfile`).

use std::time::Duration;

use super::{read_bucket_list, Symbolizer};
use crate::error::{Error, Result};
use crate::output::pprof::{ValueProfile, ValueSample};
use crate::process::memory::Memory;
use crate::target::Target;

/// Which contention profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentionKind {
    /// Where goroutines blocked (channels, select, sync.Cond, mutexes...).
    Block,
    /// Where goroutines held a contended sync.Mutex / RWMutex (and, from Go
    /// 1.22, runtime locks).
    Mutex,
}

impl ContentionKind {
    pub fn name(self) -> &'static str {
        match self {
            ContentionKind::Block => "block",
            ContentionKind::Mutex => "mutex",
        }
    }
}

/// One record as `runtime.BlockProfile` / `MutexProfile` returns it.
#[derive(Debug, Clone)]
pub struct ContentionRecord {
    /// Events (at least 1, as the runtime reports it).
    pub count: i64,
    /// CPU ticks spent.
    pub cycles: i64,
    /// Return pcs, innermost first.
    pub stack: Vec<u64>,
}

/// A contention profile as read at one moment.
#[derive(Debug, Clone)]
pub struct ContentionProfile {
    pub kind: ContentionKind,
    pub records: Vec<ContentionRecord>,
    /// `runtime.blockprofilerate` (ticks) or `runtime.mutexprofilerate`.
    pub rate: i64,
    /// CPU ticks per second: the runtime's figure, or gospy's own
    /// measurement if the runtime has not measured it yet.
    pub ticks_per_second: i64,
    /// Whether `ticks_per_second` is gospy's measurement.
    pub ticks_measured_here: bool,
}

/// Reads the target's block or mutex profile without stopping it: `Err`
/// with a clear reason if the program never enabled it.
pub fn read_contention_profile(target: &Target, kind: ContentionKind) -> Result<ContentionProfile> {
    let globals = &target.binary.layout.globals.profiles;
    let (head, rate) = match kind {
        ContentionKind::Block => (globals.bbuckets, globals.block_profile_rate),
        ContentionKind::Mutex => (globals.xbuckets, globals.mutex_profile_rate),
    };
    let unsupported = |reason: String| Error::Unsupported {
        path: target.binary.path.clone(),
        reason,
    };
    let (Some(head), Some(rate)) = (head, rate) else {
        return Err(unsupported(format!(
            "the runtime's {} profile globals were not found in this binary",
            kind.name()
        )));
    };
    let mem: &dyn Memory = &target.memory;
    let read = |addr: u64, what: &str| {
        mem.read_u64(addr + target.bias)
            .ok_or_else(|| Error::Other(format!("cannot read {what} at {addr:#x}")))
    };
    let rate = read(rate, "the profile rate")? as i64;
    let head = read(head, "the profile's bucket list")?;
    let raw = read_bucket_list(mem, head, 2, kind.name())?;
    if raw.is_empty() {
        let how = match kind {
            ContentionKind::Block => "runtime.SetBlockProfileRate(1)",
            ContentionKind::Mutex => "runtime.SetMutexProfileFraction(5)",
        };
        let state = if rate == 0 {
            "is off in this program (it keeps one only after it calls"
        } else {
            "has no events yet (profiling is on: the program called"
        };
        return Err(unsupported(format!(
            "the {} profile {state} {how}, e.g. at start-up)",
            kind.name()
        )));
    }
    let float_count = target.binary.go_version.at_least(1, 19);
    let records = raw
        .into_iter()
        .map(|b| {
            let count = if float_count {
                f64::from_bits(b.record[0]) as i64
            } else {
                b.record[0] as i64
            };
            ContentionRecord {
                // The runtime reports at least one event.
                count: if count == 0 { 1 } else { count },
                cycles: b.record[1] as i64,
                stack: b.stack,
            }
        })
        .collect();
    let (ticks_per_second, ticks_measured_here) = ticks_per_second(target)?;
    Ok(ContentionProfile {
        kind,
        records,
        rate,
        ticks_per_second,
        ticks_measured_here,
    })
}

/// The runtime's CPU ticks per second (runtime.go `ticks.val`), or, before
/// the runtime measured it (it does on first use), gospy's measurement of
/// the same clock: the TSC, which `cputicks` reads, against
/// CLOCK_MONOTONIC, which `nanotime` reads; from Go 1.22 since the
/// runtime's own start (`ticks.startTicks`, `startTime`), as it would.
fn ticks_per_second(target: &Target) -> Result<(i64, bool)> {
    let version = &target.binary.go_version;
    let Some(ticks) = target.binary.layout.globals.profiles.ticks else {
        return Ok((measure_ticks_per_second(None), true));
    };
    // The layout of `ticksType`: `lock mutex` (one word), then `pad
    // uint32` and `val uint64` up to 1.20, `val` alone in 1.21, and
    // `startTicks`, `startTime`, `val` from 1.22.
    let val_offset = if version.at_least(1, 22) {
        24
    } else if version.at_least(1, 21) {
        8
    } else {
        16
    };
    let mem: &dyn Memory = &target.memory;
    let base = ticks + target.bias;
    let val = mem.read_u64(base + val_offset).unwrap_or(0) as i64;
    if val > 0 {
        return Ok((val, false));
    }
    let start = if version.at_least(1, 22) {
        mem.read_u64(base + 8)
            .zip(mem.read_u64(base + 16))
            .filter(|&(t, n)| t > 0 && n > 0)
    } else {
        None
    };
    Ok((measure_ticks_per_second(start), true))
}

/// TSC ticks per second of CLOCK_MONOTONIC time: since `start` (ticks,
/// nanoseconds), or over a 20 ms wait of gospy's own.
fn measure_ticks_per_second(start: Option<(u64, u64)>) -> i64 {
    let now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        // SAFETY: RDTSC has no preconditions on x86-64.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        (tsc, ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    };
    let (t0, n0) = match start {
        Some(s) => s,
        None => {
            let s = now();
            std::thread::sleep(Duration::from_millis(20));
            s
        }
    };
    let (t1, n1) = now();
    let ns = n1.saturating_sub(n0).max(1) as u128;
    let ticks = t1.saturating_sub(t0) as u128;
    ((ticks * 1_000_000_000 / ns) as i64).max(1)
}

/// The pprof profile `runtime/pprof` writes for `profile`
/// (`pprof.Lookup("block")` / `("mutex")`): records by delay, longest
/// first.
pub fn contention_profile(target: &Target, profile: &ContentionProfile) -> ValueProfile {
    let version = &target.binary.go_version;
    // Up to Go 1.20 pprof scales the mutex profile by the current fraction
    // (scaleMutexProfile); from 1.21 the runtime scales each event.
    let mutex_scale =
        (profile.kind == ContentionKind::Mutex && !version.at_least(1, 21)).then_some(profile.rate);
    let cpu_ghz = profile.ticks_per_second as f64 / 1e9;
    let mut records: Vec<&ContentionRecord> = profile.records.iter().collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.cycles));
    let mut symbols = Symbolizer::new(target);
    let samples = records
        .iter()
        .map(|r| {
            let nanos = r.cycles as f64 / cpu_ghz;
            let (count, nanos) = match mutex_scale {
                Some(period) => (r.count.wrapping_mul(period), nanos * period as f64),
                None => (r.count, nanos),
            };
            ValueSample {
                locations: symbols.locations(&r.stack),
                values: vec![count, nanos as i64],
                numeric_labels: Vec::new(),
                labels: Vec::new(),
            }
        })
        .collect();
    ValueProfile {
        sample_types: vec![
            ("contentions".into(), "count".into()),
            ("delay".into(), "nanoseconds".into()),
        ],
        default_sample_type: None,
        period_type: ("contentions".into(), "count".into()),
        period: 1,
        duration_nanos: 0,
        locations: symbols.into_locations(),
        samples,
    }
}
