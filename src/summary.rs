//! `gospy summary`: one screen about a Go process, read from the runtime's
//! own globals (`runtime.sched`, `allp`, `memstats`, `gcController`) without
//! stopping the world, plus the goroutine list of a [`Snapshot`].
//!
//! The heap figures are computed the way `runtime.ReadMemStats` computes
//! them (runtime/mstats.go `readmemstats_m`), but without its
//! stop-the-world and its flush of every P's mcache (`flushallmcaches`).
//! So, from Go 1.16 on:
//!
//! * `mallocs`, `frees`, `live_bytes` (HeapAlloc) and `objects`
//!   (HeapObjects) sum the three shards of `memstats.heapStats` (what the
//!   runtime's `consistentHeapStats.unsafeRead` does). Objects allocated
//!   from a span a P holds in its mcache are only added to those shards when
//!   the span goes back (runtime/mcache.go `refill`, `releaseAll`), which
//!   happens at every GC and every ReadMemStats: these figures miss the
//!   allocations made since, at most a few spans per P. They are flagged
//!   `approximate`.
//! * `in_use_bytes` (HeapInuse) and `sys_bytes` (HeapSys) come from
//!   `gcController.heapInUse/heapFree/heapReleased` (runtime/mgcpacer.go),
//!   updated when spans are allocated: exact up to concurrent changes.
//!
//! Up to Go 1.15 `memstats.heap_alloc`, `nmalloc`, `nfree` and
//! `heap_objects` are only computed by `updatememstats` (runtime/mstats.go,
//! run by ReadMemStats and heap dumps): gospy reports those values, which
//! are as of the last ReadMemStats, and says so; before any ReadMemStats it
//! reports `memstats.heap_live` as the live bytes.
//!
//! GC figures (`numgc`, `numforcedgc`, `pause_total_ns`, `pause_ns`,
//! `last_gc_unix`, `gc_cpu_fraction`) are written by the runtime at the end
//! of each GC (runtime/mgc.go `gcMarkTermination`): exact.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::goroutines::GoroutineReport;
use crate::layout::Layout;
use crate::process::memory::ProcessMemory;
use crate::runtime::Goroutine;
use crate::snapshot::Snapshot;
use crate::target::Target;

/// Largest runtime struct copied in one read (`mstats` is about 8 KiB).
const MAX_STRUCT_READ: u64 = 1 << 20;
/// More Ps than this in `allp` means the slice was misread (the runtime's
/// limit, `_MaxGomaxprocs` in runtime/runtime2.go, is 1024).
const MAX_PROCS: u64 = 1 << 14;
/// More size classes than this means the heapStatsDelta layout is odd
/// (there are 67 or 68: runtime/sizeclasses.go).
const MAX_SIZE_CLASSES: u64 = 256;
/// Longest type name read.
const MAX_NAME: u64 = 4096;

/// `class_to_size` of Go 1.16+ (runtime/sizeclasses.go; moved to
/// internal/runtime/gc/sizeclasses.go `SizeClassToSize` in Go 1.26, same
/// values): bytes per object of each size class. Used when the binary has
/// no symbol to read the target's own table from.
const CLASS_TO_SIZE_68: [u16; 68] = [
    0, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320,
    352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792,
    2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728,
    10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672,
    32768,
];

/// Where a goroutine's location in the list comes from (`--pc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PcChoice {
    /// The innermost frame the runtime's traceback would show.
    #[default]
    Current,
    /// The goroutine's start function (`g.startpc`).
    Start,
    /// The `go` statement that created it (`g.gopc`).
    Go,
}

/// Everything `gospy summary` shows; serialized as its `--json` output
/// (schema in README.md).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Target PID.
    pub pid: i32,
    /// Target executable.
    pub binary: String,
    /// Go version of the binary.
    pub go_version: String,
    /// Where the runtime layout came from.
    pub layout_source: String,
    /// `runtime.gomaxprocs`.
    pub gomaxprocs: Option<i64>,
    /// `runtime.ncpu` (`numCPUStartup` from Go 1.26).
    pub ncpu: Option<i64>,
    /// Seconds since `runtime.runtimeInitTime` (runtime/proc.go `main`).
    pub uptime_seconds: Option<f64>,
    /// How long the goroutine snapshot stopped the target.
    pub pause_seconds: Option<f64>,
    /// `runtime.sched` figures.
    pub scheduler: Scheduler,
    /// Heap figures, as `runtime.MemStats` names them.
    pub heap: Heap,
    /// Garbage collector figures.
    pub gc: Gc,
    /// One entry per P of `runtime.allp`.
    pub procs: Vec<Proc>,
    /// The process's threads by state, from /proc.
    pub threads: Threads,
    /// The runtime's own sampled heap profile (`gospy profile heap`), or
    /// null if the program keeps none (a note says why).
    pub heap_profile: Option<HeapProfile>,
    /// Goroutine counts.
    pub goroutine_counts: GoroutineCounts,
    /// Every goroutine, by goid.
    pub goroutines: Vec<GoroutineLine>,
    /// Figures gospy could not read, and why.
    pub notes: Vec<String>,
}

/// The heap profile in brief: where the sampled live memory was allocated.
#[derive(Debug, Clone, Serialize)]
pub struct HeapProfile {
    /// `runtime.MemProfileRate`: one allocation sampled per this many bytes.
    pub rate: i64,
    /// The heap profile cycle (one per GC) the figures are as of.
    pub cycle: u32,
    /// Live bytes the profile estimates (its `inuse_space` total).
    pub inuse_bytes: i64,
    /// The top three allocation sites by live bytes: the innermost frame
    /// `runtime/pprof` shows (runtime frames hidden), as `go tool pprof -top`
    /// counts flat.
    pub top_sites: Vec<HeapSite>,
}

/// One allocation site of [`HeapProfile::top_sites`].
#[derive(Debug, Clone, Serialize)]
pub struct HeapSite {
    pub function: String,
    pub inuse_bytes: i64,
}

/// Scheduler figures (runtime/runtime2.go `schedt`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scheduler {
    /// `sched.nmidle`: idle Ms.
    pub idle_threads: Option<i64>,
    /// `sched.nmspinning`: Ms looking for work.
    pub spinning_threads: Option<i64>,
    /// `sched.mnext`: Ms created so far.
    pub threads_created: Option<i64>,
    /// `sched.npidle`: idle Ps.
    pub idle_procs: Option<i64>,
    /// `sched.ngsys`: the runtime's own goroutines.
    pub system_goroutines: Option<i64>,
    /// Length of the global run queue (`sched.runqsize`, `runq.size` from Go
    /// 1.26).
    pub global_runqueue: Option<i64>,
}

/// Heap figures, named after `runtime.MemStats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Heap {
    /// HeapInuse: bytes in in-use spans.
    pub in_use_bytes: Option<u64>,
    /// HeapSys: bytes of heap memory obtained from the OS.
    pub sys_bytes: Option<u64>,
    /// HeapAlloc: bytes of allocated heap objects (live and not yet swept).
    pub live_bytes: Option<u64>,
    /// HeapObjects.
    pub objects: Option<u64>,
    /// Mallocs: cumulative objects allocated.
    pub mallocs: Option<u64>,
    /// Frees: cumulative objects freed.
    pub frees: Option<u64>,
    /// `live_bytes`, `objects`, `mallocs` and `frees` miss allocations the
    /// runtime has not yet accounted (see the module documentation).
    pub approximate: bool,
}

/// Garbage collector figures (runtime/mstats.go `mstats`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Gc {
    /// NumGC: completed cycles.
    pub count: Option<u64>,
    /// NumForcedGC: cycles forced by runtime.GC or debug.FreeOSMemory.
    pub forced_count: Option<u64>,
    /// PauseTotalNs.
    pub pause_total_ns: Option<u64>,
    /// The last cycle's pause: `PauseNs[(NumGC+255)%256]`.
    pub last_pause_ns: Option<u64>,
    /// LastGC: end of the last cycle, Unix ns; null before the first.
    pub last_gc_unix_ns: Option<u64>,
    /// Seconds from the last cycle's end to the summary.
    pub since_last_gc_seconds: Option<f64>,
    /// GCCPUFraction.
    pub cpu_fraction: Option<f64>,
    /// GOGC (`gcController.gcPercent`), Go 1.19+.
    pub gogc: Option<i64>,
}

/// One P (runtime/runtime2.go `p`).
#[derive(Debug, Clone, Serialize)]
pub struct Proc {
    /// `p.id`.
    pub id: i64,
    /// `idle`, `running`, `syscall`, `gcstop` or `dead` (`_Pidle`...).
    pub status: String,
    /// `p.schedtick`: goroutines scheduled on it.
    pub schedtick: u64,
    /// `p.syscalltick`: system calls made on it.
    pub syscalltick: u64,
    /// `m.id` of the M holding it, if any.
    pub m_id: Option<i64>,
    /// Goroutines in its local run queue (`runqtail - runqhead`, plus
    /// `runnext` when set).
    pub runqueue: u64,
}

/// Threads by state letter of /proc/PID/task/TID/stat.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Threads {
    /// All threads.
    pub total: usize,
    /// `R`.
    pub running: usize,
    /// `S` and `D`.
    pub sleeping: usize,
    /// `T` and `t`.
    pub stopped: usize,
    /// `Z` and `X`.
    pub zombie: usize,
}

/// Goroutine counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GoroutineCounts {
    /// Every live goroutine, the runtime's own included.
    pub total: usize,
    /// What `runtime.NumGoroutine` counts: not the runtime's own.
    pub user: usize,
    /// The runtime's own goroutines (GC workers, ...).
    pub system: usize,
    /// By status (`running`, `waiting`, ...).
    pub by_status: BTreeMap<String, usize>,
}

/// One goroutine of the list.
#[derive(Debug, Clone, Serialize)]
pub struct GoroutineLine {
    /// Goroutine id.
    pub goid: u64,
    /// Status name.
    pub status: String,
    /// Wait reason, when waiting.
    pub wait_reason: Option<String>,
    /// OS thread, when running or in a system call.
    pub thread_id: Option<u64>,
    /// A runtime-internal goroutine.
    pub system: bool,
    /// Where it is, per `--pc`.
    pub location: Option<Location>,
    /// The channel it is blocked on, for `chan send` / `chan receive`.
    pub channel: Option<Channel>,
}

/// A source location.
#[derive(Debug, Clone, Serialize)]
pub struct Location {
    /// Function name.
    pub function: String,
    /// Source file.
    pub file: String,
    /// Line.
    pub line: u32,
}

/// A channel a goroutine is blocked on (runtime/chan.go `hchan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    /// `send` or `receive`, from the wait reason.
    pub direction: String,
    /// Element type name, from its runtime type descriptor.
    pub elem_type: Option<String>,
    /// `dataqsiz`: buffer capacity.
    pub capacity: u64,
    /// `qcount`: elements in the buffer.
    pub length: u64,
    /// `closed != 0`.
    pub closed: bool,
}

/// Builds the summary of `target` from its globals and the goroutines of
/// `snapshot` / `reports` (from [`crate::goroutines::reports`]).
pub fn collect(
    target: &Target,
    snapshot: &Snapshot,
    reports: &[GoroutineReport],
    pc: PcChoice,
) -> Summary {
    let mut notes = Vec::new();
    let reader = Reader {
        mem: &target.memory,
        layout: &target.binary.layout,
        bias: target.bias,
    };
    let globals = &reader.layout.globals;
    let int32_global = |addr: Option<u64>| {
        addr.and_then(|a| reader.bytes(a, 4))
            .and_then(|b| le_i32(&b, 0))
            .map(i64::from)
    };
    let gomaxprocs = int32_global(globals.gomaxprocs);
    let ncpu = int32_global(globals.ncpu);
    let uptime_seconds = globals
        .runtime_init_time
        .and_then(|a| reader.bytes(a, 8))
        .and_then(|b| le_u64(&b, 0))
        .filter(|&t| t != 0)
        .and_then(|t| snapshot.monotonic_ns.checked_sub(t as i64))
        .map(|ns| ns as f64 / 1e9);

    let scheduler = read_scheduler(&reader, &mut notes);
    let mstats = match (globals.memstats, reader.layout.memstats.size) {
        (Some(addr), Some(size)) => reader.bytes(addr, size),
        _ => None,
    };
    if mstats.is_none() {
        notes.push("runtime.memstats not found or unreadable: no heap or GC figures".into());
    }
    let gcc = match (globals.gc_controller, reader.layout.gc_controller.size) {
        (Some(addr), Some(size)) => reader.bytes(addr, size),
        _ => None,
    };
    let heap = mstats
        .as_deref()
        .map(|m| read_heap(target, &reader, m, gcc.as_deref(), &mut notes))
        .unwrap_or_default();
    let mut gc = mstats
        .as_deref()
        .map(|m| read_gc(reader.layout, m))
        .unwrap_or_default();
    if let (Some(pct), Some(b)) = (reader.layout.gc_controller.gc_percent, gcc.as_deref()) {
        gc.gogc = le_i32(b, pct).map(i64::from);
    }
    if let Some(last) = gc.last_gc_unix_ns {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as f64)
            .unwrap_or(0.0);
        gc.since_last_gc_seconds = Some(((now - last as f64) / 1e9).max(0.0));
    }
    let procs = read_procs(&reader, snapshot, &mut notes);
    let threads = match target.process.thread_states() {
        Ok(states) => count_threads(&states),
        Err(e) => {
            notes.push(format!("threads: {e}"));
            Threads::default()
        }
    };
    let by_goid: HashMap<u64, &Goroutine> =
        snapshot.goroutines.iter().map(|g| (g.goid, g)).collect();
    let mut counts = GoroutineCounts {
        total: reports.len(),
        ..GoroutineCounts::default()
    };
    let types_base = types_base(target, &reader);
    let mut goroutines = Vec::with_capacity(reports.len());
    for r in reports {
        if r.system {
            counts.system += 1;
        } else {
            counts.user += 1;
        }
        *counts
            .by_status
            .entry(r.status.name().to_string())
            .or_default() += 1;
        let g = by_goid.get(&r.goid).copied();
        let channel = match (g, r.wait_reason) {
            (Some(g), Some(reason)) => read_channel(&reader, types_base, target, g, reason),
            _ => None,
        };
        goroutines.push(GoroutineLine {
            goid: r.goid,
            status: r.status.name().to_string(),
            wait_reason: r.wait_reason.map(str::to_string),
            thread_id: r.thread_id,
            system: r.system,
            location: location(target, r, g, pc),
            channel,
        });
    }
    let heap_profile = match crate::mprof::read_mem_profile(target) {
        Ok(read) => Some(heap_profile_summary(target, &read)),
        Err(e) => {
            notes.push(format!("heap profile: {e}"));
            None
        }
    };
    Summary {
        pid: target.pid(),
        binary: target.process.exe_display(),
        go_version: target.binary.go_version.to_string(),
        layout_source: target.binary.layout_source.to_string(),
        gomaxprocs,
        ncpu,
        uptime_seconds,
        pause_seconds: snapshot.pause.map(|d| d.as_secs_f64()),
        scheduler,
        heap,
        gc,
        procs,
        threads,
        heap_profile,
        goroutine_counts: counts,
        goroutines,
        notes,
    }
}

/// Live bytes by allocation site, from the memory profile as `runtime/pprof`
/// would write it.
fn heap_profile_summary(target: &Target, read: &crate::mprof::MemProfile) -> HeapProfile {
    let profile = crate::mprof::heap_profile(target, read, crate::mprof::MemProfileKind::Heap);
    // inuse_space is the last of the four sample types.
    let inuse = |s: &crate::output::pprof::ValueSample| s.values.get(3).copied().unwrap_or(0);
    let mut by_site: std::collections::BTreeMap<String, i64> = Default::default();
    for s in &profile.samples {
        let site = s
            .locations
            .first()
            .and_then(|&i| profile.locations.get(i as usize))
            .and_then(|l| l.lines.first())
            .map_or_else(|| "?".to_string(), |l| l.function.to_string());
        *by_site.entry(site).or_default() += inuse(s);
    }
    let mut sites: Vec<HeapSite> = by_site
        .into_iter()
        .filter(|&(_, bytes)| bytes > 0)
        .map(|(function, inuse_bytes)| HeapSite {
            function,
            inuse_bytes,
        })
        .collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.inuse_bytes));
    sites.truncate(3);
    HeapProfile {
        rate: read.rate,
        cycle: read.cycle,
        inuse_bytes: profile.samples.iter().map(inuse).sum(),
        top_sites: sites,
    }
}

/// Reads runtime globals and structs at link-time addresses.
struct Reader<'a> {
    mem: &'a ProcessMemory,
    layout: &'a Layout,
    bias: u64,
}

impl Reader<'_> {
    /// `len` bytes at link-time address `addr`; `None` if unreadable or
    /// implausibly large.
    fn bytes(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        self.raw(addr.checked_add(self.bias)?, len)
    }

    /// `len` bytes at runtime address `addr`.
    fn raw(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        if addr == 0 || len == 0 || len > MAX_STRUCT_READ {
            return None;
        }
        self.mem.read_vec(addr, len as usize).ok()
    }

    fn u64_at(&self, addr: u64) -> Option<u64> {
        self.raw(addr, 8).and_then(|b| le_u64(&b, 0))
    }
}

fn le_u64(b: &[u8], off: u64) -> Option<u64> {
    let off = usize::try_from(off).ok()?;
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

fn le_u32(b: &[u8], off: u64) -> Option<u32> {
    let off = usize::try_from(off).ok()?;
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn le_i32(b: &[u8], off: u64) -> Option<i32> {
    le_u32(b, off).map(|v| v as i32)
}

fn le_u16(b: &[u8], off: u64) -> Option<u16> {
    let off = usize::try_from(off).ok()?;
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

/// `runtime.sched`: the int32/uint32 counters (atomic wrappers of the same
/// size from Go 1.21, runtime/runtime2.go `schedt`).
fn read_scheduler(reader: &Reader, notes: &mut Vec<String>) -> Scheduler {
    let s = &reader.layout.sched;
    let bytes = match (reader.layout.globals.sched, s.size) {
        (Some(addr), Some(size)) => reader.bytes(addr, size),
        _ => None,
    };
    let Some(b) = bytes else {
        notes.push("runtime.sched not found or unreadable: no scheduler figures".into());
        return Scheduler::default();
    };
    let i32_field = |off: Option<u64>| off.and_then(|o| le_i32(&b, o)).map(i64::from);
    Scheduler {
        idle_threads: i32_field(s.nmidle),
        spinning_threads: i32_field(s.nmspinning),
        threads_created: s.mnext.and_then(|o| le_u64(&b, o)).map(|v| v as i64),
        idle_procs: i32_field(s.npidle),
        system_goroutines: i32_field(s.ngsys),
        global_runqueue: i32_field(s.runq_size),
    }
}

/// The heap figures (see the module documentation for how, per version).
fn read_heap(
    target: &Target,
    reader: &Reader,
    m: &[u8],
    gcc: Option<&[u8]>,
    notes: &mut Vec<String>,
) -> Heap {
    let ms = &reader.layout.memstats;
    let gl = &reader.layout.gc_controller;
    let field = |b: Option<&[u8]>, off: Option<u64>| b.zip(off).and_then(|(b, o)| le_u64(b, o));
    let mut heap = Heap::default();
    // Go 1.19+: gcController (runtime/mgcpacer.go); before: memstats.
    match (
        field(gcc, gl.heap_in_use),
        field(gcc, gl.heap_free),
        field(gcc, gl.heap_released),
    ) {
        (Some(inuse), Some(free), Some(released)) => {
            heap.in_use_bytes = Some(inuse);
            heap.sys_bytes = inuse
                .checked_add(free)
                .and_then(|s| s.checked_add(released));
        }
        _ => {
            heap.in_use_bytes = field(Some(m), ms.heap_inuse);
            heap.sys_bytes = field(Some(m), ms.heap_sys);
        }
    }
    if let Some(stats) = ms.heap_stats {
        match sum_heap_stats(target, reader, m, stats) {
            Some((mallocs, frees, alloc, free)) => {
                heap.mallocs = Some(mallocs);
                heap.frees = Some(frees);
                heap.objects = Some(mallocs.saturating_sub(frees));
                heap.live_bytes = Some(alloc.saturating_sub(free));
                heap.approximate = true;
            }
            None => notes.push("memstats.heapStats unreadable: no allocation counts".into()),
        }
    } else {
        // Go ≤1.15: values of the last updatememstats (runtime/mstats.go).
        let nmalloc = field(Some(m), ms.nmalloc);
        if nmalloc.is_some_and(|n| n > 0) {
            heap.mallocs = nmalloc;
            heap.frees = field(Some(m), ms.nfree);
            heap.objects = field(Some(m), ms.heap_objects);
            heap.live_bytes = field(Some(m), ms.heap_alloc);
            notes.push(format!(
                "Go {}: live bytes, objects, mallocs and frees are as of the program's last \
                 runtime.ReadMemStats",
                target.binary.go_version
            ));
        } else {
            heap.live_bytes = field(Some(m), ms.heap_live);
            notes.push(
                "the program never called runtime.ReadMemStats: live bytes are memstats.heap_live \
                 (including unused parts of cached spans); no object counts"
                    .into(),
            );
        }
        heap.approximate = true;
    }
    heap
}

/// Sums the three `heapStatsDelta` shards of `memstats.heapStats` as
/// `consistentHeapStats.unsafeRead` does and derives (mallocs, frees,
/// bytes allocated, bytes freed) as `readmemstats_m` does
/// (runtime/mstats.go): tiny allocations count as both a malloc and a
/// free, small ones weigh their size class.
fn sum_heap_stats(
    target: &Target,
    reader: &Reader,
    m: &[u8],
    stats: u64,
) -> Option<(u64, u64, u64, u64)> {
    let d = &reader.layout.heap_stats_delta;
    let stride = d.size?;
    let small_alloc = d.small_alloc_count?;
    let large_free = d.large_free?;
    // smallAllocCount ends where largeFree starts.
    let classes = large_free.checked_sub(small_alloc)? / 8;
    if classes == 0 || classes > MAX_SIZE_CLASSES {
        return None;
    }
    let sizes = class_sizes(target, reader, classes)?;
    let (mut mallocs, mut frees, mut alloc, mut free) = (0u64, 0u64, 0u64, 0u64);
    for shard in 0..3u64 {
        let base = stats.checked_add(shard.checked_mul(stride)?)?;
        let at = |off: Option<u64>| le_u64(m, base.checked_add(off?)?);
        let tiny = at(d.tiny_alloc_count)?;
        mallocs = mallocs.wrapping_add(at(d.large_alloc_count)?.wrapping_add(tiny));
        frees = frees.wrapping_add(at(d.large_free_count)?.wrapping_add(tiny));
        alloc = alloc.wrapping_add(at(d.large_alloc)?);
        free = free.wrapping_add(at(d.large_free)?);
        for (i, &size) in sizes.iter().enumerate() {
            let i = i as u64 * 8;
            let a = at(Some(small_alloc + i))?;
            let f = at(d.small_free_count.map(|o| o + i))?;
            mallocs = mallocs.wrapping_add(a);
            frees = frees.wrapping_add(f);
            alloc = alloc.wrapping_add(a.wrapping_mul(u64::from(size)));
            free = free.wrapping_add(f.wrapping_mul(u64::from(size)));
        }
    }
    Some((mallocs, frees, alloc, free))
}

/// Bytes per object of each of the `classes` size classes: the target's
/// own `class_to_size` when the symbol table has it, else the built-in
/// table of Go 1.16+.
fn class_sizes(target: &Target, reader: &Reader, classes: u64) -> Option<Vec<u16>> {
    let image = &target.binary.image;
    let symbol = image
        .symbol("runtime.class_to_size")
        .or_else(|| image.symbol("internal/runtime/gc.SizeClassToSize"));
    if let Some(sym) = symbol {
        if let Some(b) = reader.bytes(sym.addr, classes * 2) {
            return (0..classes).map(|i| le_u16(&b, i * 2)).collect();
        }
    }
    (classes == CLASS_TO_SIZE_68.len() as u64).then(|| CLASS_TO_SIZE_68.to_vec())
}

/// GC figures from `memstats` (runtime/mstats.go).
fn read_gc(layout: &Layout, m: &[u8]) -> Gc {
    let ms = &layout.memstats;
    let u64_field = |off: Option<u64>| off.and_then(|o| le_u64(m, o));
    let u32_field = |off: Option<u64>| off.and_then(|o| le_u32(m, o)).map(u64::from);
    let count = u32_field(ms.numgc);
    let last_pause_ns = match (count, ms.pause_ns) {
        (Some(n), Some(off)) if n > 0 => le_u64(m, off + ((n + 255) % 256) * 8),
        _ => None,
    };
    Gc {
        count,
        forced_count: u32_field(ms.numforcedgc),
        pause_total_ns: u64_field(ms.pause_total_ns),
        last_pause_ns,
        last_gc_unix_ns: u64_field(ms.last_gc_unix).filter(|&t| t != 0),
        since_last_gc_seconds: None,
        cpu_fraction: u64_field(ms.gc_cpu_fraction).map(f64::from_bits),
        gogc: None,
    }
}

/// Every P of `runtime.allp` (runtime/runtime2.go `p`).
fn read_procs(reader: &Reader, snapshot: &Snapshot, notes: &mut Vec<String>) -> Vec<Proc> {
    let p = &reader.layout.p;
    let Some(allp) = reader.layout.globals.allp else {
        notes.push("runtime.allp not found: no per-P figures".into());
        return Vec::new();
    };
    let Some(header) = reader.bytes(allp, 16) else {
        notes.push("runtime.allp unreadable".into());
        return Vec::new();
    };
    let (Some(ptr), Some(len)) = (le_u64(&header, 0), le_u64(&header, 8)) else {
        return Vec::new();
    };
    if len > MAX_PROCS {
        notes.push(format!("runtime.allp has an implausible length {len}"));
        return Vec::new();
    }
    let Some(ptrs) = reader.raw(ptr, len * 8) else {
        notes.push("runtime.allp unreadable".into());
        return Vec::new();
    };
    let read_len = [
        p.id,
        p.status,
        p.schedtick,
        p.syscalltick,
        p.runqhead,
        p.runqtail,
    ]
    .into_iter()
    .flatten()
    .map(|o| o + 4)
    .chain([p.m, p.runnext].into_iter().flatten().map(|o| o + 8))
    .max()
    .unwrap_or(0);
    let m_ids: HashMap<u64, i64> = snapshot.machines.iter().map(|m| (m.addr, m.id)).collect();
    let mut out = Vec::new();
    for i in 0..len {
        let Some(addr) = le_u64(&ptrs, i * 8).filter(|&a| a != 0) else {
            continue;
        };
        let Some(b) = reader.raw(addr, read_len) else {
            continue;
        };
        let u32_field = |off: Option<u64>| off.and_then(|o| le_u32(&b, o)).unwrap_or(0);
        let m = p.m.and_then(|o| le_u64(&b, o)).unwrap_or(0);
        let runnext = p.runnext.and_then(|o| le_u64(&b, o)).unwrap_or(0);
        let queued = u32_field(p.runqtail).wrapping_sub(u32_field(p.runqhead));
        out.push(Proc {
            id: i64::from(u32_field(p.id) as i32),
            status: match u32_field(p.status) {
                0 => "idle".into(),
                1 => "running".into(),
                2 => "syscall".into(),
                3 => "gcstop".into(),
                4 => "dead".into(),
                other => format!("status {other}"),
            },
            schedtick: u64::from(u32_field(p.schedtick)),
            syscalltick: u64::from(u32_field(p.syscalltick)),
            m_id: (m != 0).then(|| m_ids.get(&m).copied()).flatten(),
            // A torn read of head and tail can give a huge difference; the
            // queue holds at most 256 (runtime/runtime2.go `runq`).
            runqueue: u64::from(queued.min(256)) + u64::from(runnext != 0),
        });
    }
    out
}

fn count_threads(states: &[(i32, char)]) -> Threads {
    let mut t = Threads {
        total: states.len(),
        ..Threads::default()
    };
    for &(_, s) in states {
        match s {
            'R' => t.running += 1,
            'S' | 'D' | 'I' => t.sleeping += 1,
            'T' | 't' => t.stopped += 1,
            'Z' | 'X' | 'x' => t.zombie += 1,
            _ => {}
        }
    }
    t
}

/// The channel a goroutine blocked in `chansend`/`chanrecv` waits on:
/// `g.waiting` is its sudog and `sudog.c` the channel (runtime/chan.go).
/// `select` waits on several sudogs and nil channels on none: not read.
fn read_channel(
    reader: &Reader,
    types_base: Option<u64>,
    target: &Target,
    g: &Goroutine,
    reason: &str,
) -> Option<Channel> {
    let direction = if reason.starts_with("chan send") {
        "send"
    } else if reason.starts_with("chan receive") {
        "receive"
    } else {
        return None;
    };
    if reason.contains("nil chan") {
        return None;
    }
    let l = reader.layout;
    let sudog = reader.u64_at(g.addr.checked_add(l.g.waiting?)?)?;
    let c = reader.u64_at(sudog.checked_add(l.sudog.c?)?)?;
    let h = &l.hchan;
    let bytes = reader.raw(c, h.size?)?;
    let elemtype = le_u64(&bytes, h.elemtype?)?;
    Some(Channel {
        direction: direction.to_string(),
        elem_type: types_base.and_then(|base| type_name(reader, target, base, elemtype)),
        capacity: le_u64(&bytes, h.dataqsiz?)?,
        length: le_u64(&bytes, h.qcount?)?,
        closed: le_u32(&bytes, h.closed?)? != 0,
    })
}

/// Where the type descriptors start (runtime address): the symbol
/// `runtime.types`, or without symbols `firstmoduledata.types`
/// (runtime/symtab.go `moduledata`). Only the first module is looked at:
/// gospy reads executables, not plugins.
fn types_base(target: &Target, reader: &Reader) -> Option<u64> {
    if let Some(sym) = target.binary.image.symbol("runtime.types") {
        return sym.addr.checked_add(target.bias);
    }
    let md = reader.layout.globals.firstmoduledata;
    let off = reader.layout.moduledata.types?;
    if md == 0 {
        return None;
    }
    reader
        .bytes(md.checked_add(off)?, 8)
        .and_then(|b| le_u64(&b, 0))
        .filter(|&a| a != 0)
}

/// The name of the runtime type descriptor at `rtype`: `str` is an offset
/// from the types section (`runtime.types`) to an encoded name: a flags
/// byte, then the length (big-endian uint16 before Go 1.17, a uvarint
/// since: runtime/type.go `name`, internal/abi/type.go `Name`), then the
/// bytes. With `tflagExtraStar` the stored name has one `*` too many.
fn type_name(reader: &Reader, target: &Target, base: u64, rtype: u64) -> Option<String> {
    let t = &reader.layout.rtype;
    let header = reader.raw(rtype, t.size?)?;
    let tflag = *header.get(usize::try_from(t.tflag?).ok()?)?;
    let off = le_i32(&header, t.str?)?;
    let at = base.checked_add_signed(i64::from(off))?;
    let head = reader.raw(at, 11)?;
    let (len, start) = name_header(&head, target.binary.go_version.at_least(1, 17))?;
    let bytes = reader.raw(at.checked_add(start)?, len)?;
    let mut name = String::from_utf8_lossy(&bytes).into_owned();
    // tflagExtraStar (runtime/type.go, internal/abi/type.go).
    if tflag & 2 != 0 && name.starts_with('*') {
        name.remove(0);
    }
    Some(name)
}

/// (length, offset of the first byte) of the encoded name whose first
/// bytes are `head`: a flags byte, then the length as a uvarint (Go 1.17+,
/// `varint`) or a big-endian uint16. `None` for an empty or implausibly
/// long name.
fn name_header(head: &[u8], varint: bool) -> Option<(u64, u64)> {
    let (len, start) = if varint {
        let mut len = 0u64;
        let mut used = 0u64;
        // At most 10 bytes encode a uint64.
        for (i, &b) in head.get(1..)?.iter().take(10).enumerate() {
            len |= u64::from(b & 0x7f) << (7 * i);
            used = i as u64 + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        (len, 1 + used)
    } else {
        (
            u64::from(u16::from_be_bytes([*head.get(1)?, *head.get(2)?])),
            3,
        )
    };
    (len > 0 && len <= MAX_NAME).then_some((len, start))
}

/// Where a goroutine is, per `--pc`.
fn location(
    target: &Target,
    r: &GoroutineReport,
    g: Option<&Goroutine>,
    pc: PcChoice,
) -> Option<Location> {
    match pc {
        PcChoice::Current => r
            .frames
            .iter()
            .find(|f| !f.hidden)
            .or_else(|| r.frames.first())
            .map(|f| Location {
                function: f.function.to_string(),
                file: f.file.to_string(),
                line: f.line,
            }),
        PcChoice::Go => r.created_by.as_ref().map(|c| Location {
            function: c.function.to_string(),
            file: c.file.to_string(),
            line: c.line,
        }),
        PcChoice::Start => {
            let tab = &target.binary.pclntab;
            let pc = g?.start_pc.checked_sub(target.bias)?;
            let f = tab.find_func(pc)?;
            let (file, line) = tab.file_line(&f, f.entry)?;
            Some(Location {
                function: crate::stack::name_for_print(tab.func_name(&f)),
                file: file.to_string(),
                line,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_headers_of_both_encodings() {
        // Go 1.17+: flags, uvarint length.
        assert_eq!(name_header(&[0, 3, b'i', b'n', b't'], true), Some((3, 2)));
        assert_eq!(name_header(&[0, 0x80 | 0x2c, 0x01], true), Some((172, 3)));
        // Before: flags, big-endian uint16.
        assert_eq!(name_header(&[0, 0, 6, b's'], false), Some((6, 3)));
        assert_eq!(name_header(&[0, 0], true), None);
        assert_eq!(name_header(&[0, 0xff, 0xff], false), None);
        assert_eq!(name_header(&[0], false), None);
        assert_eq!(name_header(&[0xff; 11], true), None);
    }

    #[test]
    fn threads_by_state() {
        let t = count_threads(&[(1, 'R'), (2, 'S'), (3, 'D'), (4, 't'), (5, 'Z'), (6, 'S')]);
        assert_eq!(
            (t.total, t.running, t.sleeping, t.stopped, t.zombie),
            (6, 1, 3, 1, 1)
        );
    }

    #[test]
    fn size_classes_grow() {
        assert!(CLASS_TO_SIZE_68.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(CLASS_TO_SIZE_68[67], 32768);
    }
}
