//! The memory profile (`heap`, `allocs`): `runtime.mbuckets`.
//!
//! Every Go program that links `runtime.MemProfile` samples its allocations
//! (one per `runtime.MemProfileRate` bytes on average) into buckets, one
//! per allocation size and call stack. After a bucket's stack comes a
//! `memRecord`: the published counts (`active`) and three cycles not yet
//! published (`future`). Go 1.15-1.26 keep counts and bytes per cycle
//! (`allocs, frees, alloc_bytes, free_bytes`); Go 1.27 keeps counts only
//! (bytes are counts times the bucket's size).
//!
//! What `runtime.MemProfile` returns is `active` after flushing the cycle
//! the heap profile cycle counter points at into it (and all three future
//! cycles when nothing was published yet, before the first GC). gospy
//! cannot flush (it never writes to the target), so it adds those counts
//! itself: the same figures, without the side effect.
//!
//! [`heap_profile`] then turns the records into what `runtime/pprof`
//! writes (runtime/pprof/protomem.go `writeHeapProto`).

use super::{read_bucket_list, Symbolizer};
use crate::error::{Error, Result};
use crate::output::pprof::{ValueProfile, ValueSample};
use crate::process::memory::Memory;
use crate::target::Target;

/// Times the bucket list is read again when a GC published a new cycle
/// while it was being read.
const CYCLE_RETRIES: usize = 5;

/// One memory profile record as `runtime.MemProfile` returns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemRecord {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub free_bytes: u64,
}

impl MemRecord {
    fn add(&mut self, other: &MemRecord) {
        self.allocs = self.allocs.wrapping_add(other.allocs);
        self.frees = self.frees.wrapping_add(other.frees);
        self.alloc_bytes = self.alloc_bytes.wrapping_add(other.alloc_bytes);
        self.free_bytes = self.free_bytes.wrapping_add(other.free_bytes);
    }
}

/// One bucket of the memory profile.
#[derive(Debug, Clone)]
pub struct MemBucket {
    /// The allocation size.
    pub size: u64,
    /// Return pcs, innermost first, one per logical (inlined or not)
    /// frame, as `runtime.Callers` gives them.
    pub stack: Vec<u64>,
    /// The published counts (what `runtime.MemProfile` returns).
    pub record: MemRecord,
}

/// The memory profile as read at one moment.
#[derive(Debug, Clone)]
pub struct MemProfile {
    /// `runtime.MemProfileRate` when read.
    pub rate: i64,
    /// The heap profile cycle (one per GC) whose snapshot is published.
    pub cycle: u32,
    /// Buckets, newest first (the runtime's own order).
    pub buckets: Vec<MemBucket>,
}

/// Where one version keeps a bucket's `memRecord` fields.
struct RecordLayout {
    /// Words per `memRecordCycle`: 4 (with bytes), 2 from Go 1.27.
    cycle_words: u64,
}

impl RecordLayout {
    fn for_target(target: &Target) -> RecordLayout {
        let with_bytes = !target.binary.go_version.at_least(1, 27);
        RecordLayout {
            cycle_words: if with_bytes { 4 } else { 2 },
        }
    }

    /// Bytes of a `memRecord`: `active` and `future[3]`.
    fn bytes(&self) -> u64 {
        4 * self.cycle_words * 8
    }

    /// The `memRecordCycle` at `i` (0: active, 1-3: future[0-2]) of a
    /// record read as `words`, for a bucket of object size `size`.
    fn cycle(&self, words: &[u64], i: usize, size: u64) -> MemRecord {
        let base = i * self.cycle_words as usize;
        let w = |k: usize| words.get(base + k).copied().unwrap_or(0);
        if self.cycle_words == 4 {
            MemRecord {
                allocs: w(0),
                frees: w(1),
                alloc_bytes: w(2),
                free_bytes: w(3),
            }
        } else {
            MemRecord {
                allocs: w(0),
                frees: w(1),
                alloc_bytes: w(0).wrapping_mul(size),
                free_bytes: w(1).wrapping_mul(size),
            }
        }
    }
}

/// Reads the target's memory profile, without stopping it: `Err` with a
/// clear reason if the program keeps none (memory profiling disabled by
/// the linker or `MemProfileRate = 0`) or its globals are not known.
pub fn read_mem_profile(target: &Target) -> Result<MemProfile> {
    let globals = &target.binary.layout.globals.profiles;
    let unsupported = |reason: String| Error::Unsupported {
        path: target.binary.path.clone(),
        reason,
    };
    let (Some(mbuckets), Some(rate_addr), Some(cycle_addr)) = (
        globals.mbuckets,
        globals.mem_profile_rate,
        globals.mprof_cycle,
    ) else {
        return Err(unsupported(
            "the runtime's memory profile globals (runtime.mbuckets, runtime.MemProfileRate, \
             the heap profile cycle) were not found in this binary"
                .into(),
        ));
    };
    let mem: &dyn Memory = &target.memory;
    let read_u64 = |addr: u64, what: &str| {
        mem.read_u64(addr + target.bias)
            .ok_or_else(|| Error::Other(format!("cannot read {what} at {addr:#x}")))
    };
    if let Some(addr) = globals.disable_memory_profiling {
        let disabled = mem.read_u8(addr + target.bias).unwrap_or(0) != 0;
        if disabled {
            return Err(unsupported(
                "this program keeps no memory profile: the linker turned memory profiling off \
                 because nothing in it uses runtime.MemProfile (importing runtime/pprof or \
                 net/http/pprof turns it on)"
                    .into(),
            ));
        }
    }
    let rate = read_u64(rate_addr, "runtime.MemProfileRate")? as i64;
    let layout = RecordLayout::for_target(target);
    let old_cycle = !target.binary.go_version.at_least(1, 19);
    let read_cycle = || -> Result<u32> {
        let v = mem
            .read_u32(cycle_addr + target.bias)
            .ok_or_else(|| Error::Other("cannot read the heap profile cycle".into()))?;
        // Go 1.19+ keeps the flushed flag in bit 0 (mProfCycleHolder).
        Ok(if old_cycle { v } else { v >> 1 })
    };
    let mut last_err = None;
    for _ in 0..CYCLE_RETRIES {
        let before = read_cycle()?;
        let head = read_u64(mbuckets, "runtime.mbuckets")?;
        let buckets = match read_buckets(mem, head, &layout, before) {
            Ok(b) => b,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        if read_cycle()? == before {
            if rate == 0 && buckets.is_empty() {
                return Err(unsupported(
                    "this program keeps no memory profile: runtime.MemProfileRate is 0 (it \
                     samples allocations only if MemProfileRate is set above 0 before they \
                     happen)"
                        .into(),
                ));
            }
            return Ok(MemProfile {
                rate,
                cycle: before,
                buckets,
            });
        }
    }
    Err(last_err.unwrap_or_else(|| {
        Error::Other("the heap profile kept changing (a GC ran at every read)".into())
    }))
}

/// Reads the bucket list from `head`, with each bucket's published counts
/// as of heap profile cycle `cycle`.
fn read_buckets(
    mem: &dyn Memory,
    head: u64,
    layout: &RecordLayout,
    cycle: u32,
) -> Result<Vec<MemBucket>> {
    let raw = read_bucket_list(mem, head, layout.bytes() / 8, "memory")?;
    let current = (cycle % 3) as usize;
    let mut buckets = Vec::with_capacity(raw.len());
    let mut futures = Vec::with_capacity(raw.len());
    for b in raw {
        let mut published = layout.cycle(&b.record, 0, b.size);
        // runtime.MemProfile first flushes future[cycle % 3] into active.
        published.add(&layout.cycle(&b.record, 1 + current, b.size));
        let future: Vec<MemRecord> = (0..3)
            .filter(|&c| c != current)
            .map(|c| layout.cycle(&b.record, 1 + c, b.size))
            .collect();
        futures.push(future);
        buckets.push(MemBucket {
            size: b.size,
            stack: b.stack,
            record: published,
        });
    }
    // Nothing published yet (no GC so far): MemProfile then takes every
    // cycle, so that a program that never collects still has a profile.
    if buckets
        .iter()
        .all(|b| b.record.allocs == 0 && b.record.frees == 0)
    {
        for (b, future) in buckets.iter_mut().zip(&futures) {
            for f in future {
                b.record.add(f);
            }
        }
    }
    Ok(buckets)
}

/// Which of the two memory profiles `runtime/pprof` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemProfileKind {
    /// `heap`: default sample type `inuse_space`.
    Heap,
    /// `allocs`: the same data, default sample type `alloc_space`.
    Allocs,
}

/// The pprof profile `runtime/pprof` writes for `profile`
/// (`WriteHeapProfile`, `Lookup("allocs")`): every bucket, including
/// those with nothing in use, with the four sample types scaled up for
/// sampling, the numeric label `bytes` and the leading `runtime.*` frames
/// hidden.
pub fn heap_profile(target: &Target, profile: &MemProfile, kind: MemProfileKind) -> ValueProfile {
    let version = &target.binary.go_version;
    let counts_only = version.at_least(1, 27);
    let hide_internal_runtime = version.at_least(1, 24);
    let mut symbols = Symbolizer::new(target);
    let mut samples = Vec::with_capacity(profile.buckets.len());
    for b in &profile.buckets {
        let mut stack: &[u64] = &b.stack;
        let hidden = |name: &str| {
            name.starts_with("runtime.")
                || (hide_internal_runtime && name.starts_with("internal/runtime/"))
        };
        if let Some(first) = stack
            .iter()
            .position(|&pc| !symbols.func_for_pc(pc).is_some_and(hidden))
        {
            stack = &stack[first..];
        }
        let mut locations = symbols.locations(stack);
        if locations.is_empty() {
            locations = symbols.locations(&b.stack);
        }
        let r = &b.record;
        let inuse_objects = r.allocs.wrapping_sub(r.frees) as i64;
        let (values, bytes_label) = if counts_only {
            let size = b.size as i64;
            let (a, ab) = scale_heap_sample_size(r.allocs as i64, size, profile.rate);
            let (i, ib) = scale_heap_sample_size(inuse_objects, size, profile.rate);
            (vec![a, ab, i, ib], Some(size))
        } else {
            let inuse_bytes = r.alloc_bytes.wrapping_sub(r.free_bytes) as i64;
            let (a, ab) = scale_heap_sample(r.allocs as i64, r.alloc_bytes as i64, profile.rate);
            let (i, ib) = scale_heap_sample(inuse_objects, inuse_bytes, profile.rate);
            let block = if r.allocs > 0 {
                r.alloc_bytes as i64 / r.allocs as i64
            } else {
                0
            };
            (vec![a, ab, i, ib], (block != 0).then_some(block))
        };
        samples.push(ValueSample {
            locations,
            values,
            numeric_labels: bytes_label
                .map(|v| vec![("bytes".to_string(), v)])
                .unwrap_or_default(),
            labels: Vec::new(),
        });
    }
    let types = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(t, u)| (t.to_string(), u.to_string()))
            .collect()
    };
    ValueProfile {
        sample_types: types(&[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]),
        default_sample_type: match kind {
            MemProfileKind::Heap => None,
            MemProfileKind::Allocs => Some("alloc_space".into()),
        },
        period_type: ("space".into(), "bytes".into()),
        period: profile.rate,
        duration_nanos: 0,
        locations: symbols.into_locations(),
        samples,
    }
}

/// runtime/pprof's `scaleHeapSample` up to Go 1.26: `count` objects of
/// `size` bytes in all, sampled one per `rate` bytes on average, scaled
/// up to estimate all of them.
fn scale_heap_sample(count: i64, size: i64, rate: i64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, size);
    }
    let avg = size as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-avg / rate as f64).exp());
    ((count as f64 * scale) as i64, (size as f64 * scale) as i64)
}

/// The same from Go 1.27, which knows each bucket's object size.
fn scale_heap_sample_size(count: i64, avg_size: i64, rate: i64) -> (i64, i64) {
    if count == 0 || avg_size == 0 {
        return (0, 0);
    }
    let size = count.wrapping_mul(avg_size);
    if rate <= 1 {
        return (count, size);
    }
    let scale = 1.0 / (1.0 - (-(avg_size as f64) / rate as f64).exp());
    ((count as f64 * scale) as i64, (size as f64 * scale) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_scaled_as_runtime_pprof_scales_them() {
        // Expected values from Go's own runtime/pprof scaleHeapSample (Go
        // 1.27, math.Exp). One 1 MiB object sampled at 512 KiB was sampled
        // with probability 1 - e^-2, so it stands for 1.156... objects.
        assert_eq!(scale_heap_sample(1, 1 << 20, 512 << 10), (1, 1_212_696));
        assert_eq!(
            scale_heap_sample_size(1, 1 << 20, 512 << 10),
            scale_heap_sample(1, 1 << 20, 512 << 10)
        );
        // Small objects are scaled up a lot.
        assert_eq!(scale_heap_sample(10, 160, 512 << 10), (327_685, 5_242_960));
        // Rate 1 (every allocation) and zeros are left as they are.
        assert_eq!(scale_heap_sample(7, 700, 1), (7, 700));
        assert_eq!(scale_heap_sample_size(7, 100, 1), (7, 700));
        assert_eq!(scale_heap_sample(0, 0, 512 << 10), (0, 0));
    }

    #[test]
    fn go_1_27_records_have_counts_only() {
        let old = RecordLayout { cycle_words: 4 };
        let new = RecordLayout { cycle_words: 2 };
        let words = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        assert_eq!(old.bytes(), 128);
        assert_eq!(new.bytes(), 64);
        assert_eq!(
            old.cycle(&words, 1, 32),
            MemRecord {
                allocs: 5,
                frees: 6,
                alloc_bytes: 7,
                free_bytes: 8
            }
        );
        assert_eq!(
            new.cycle(&words, 1, 32),
            MemRecord {
                allocs: 3,
                frees: 4,
                alloc_bytes: 96,
                free_bytes: 128
            }
        );
    }
}
