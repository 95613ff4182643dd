//! Per-goroutine reports built from a [`Snapshot`]: status, wait reason and
//! time, thread, labels, creator and symbolized frames. This is what
//! `gospy dump` prints, and what the other subcommands aggregate.

use std::sync::Arc;

use crate::binary::Binary;
use crate::process::memory::Memory;
use crate::runtime::{self, GStatus, Goroutine};
use crate::snapshot::Snapshot;
use crate::stack::{self, Frame, Symbolizer};
use crate::target::Target;
use crate::unwind::{self, PcMap, PhysicalFrame, StackEnd, Unwinder};

/// Everything gospy reports about one goroutine.
#[derive(Debug, Clone)]
pub struct GoroutineReport {
    pub goid: u64,
    pub status: GStatus,
    /// The wait reason the runtime would print, when waiting.
    pub wait_reason: Option<&'static str>,
    /// Seconds since the goroutine blocked (at least), when the runtime
    /// recorded it (`g.waitsince`, set when a GC first sees it blocked).
    pub wait_seconds: Option<f64>,
    /// OS thread running it (running or in a syscall).
    pub thread_id: Option<u64>,
    pub locked_to_thread: bool,
    /// A runtime-internal goroutine (GC workers etc.).
    pub system: bool,
    /// pprof labels, sorted by key.
    pub labels: Vec<(String, String)>,
    pub created_by: Option<CreatedBy>,
    /// Innermost first. Shared by goroutines with identical stacks.
    pub frames: Arc<[Frame]>,
    /// The stack was cut at the depth limit.
    pub truncated: bool,
    /// Why the stack could not be read completely, if it could not.
    pub error: Option<String>,
    /// With `--native`: C frames on the goroutine's thread above the Go
    /// frames (a cgo call), innermost first.
    pub native_frames: Vec<crate::native::NativeFrame>,
}

/// The `go` statement that started a goroutine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedBy {
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
    /// Go 1.21+.
    pub parent_goid: Option<u64>,
    /// `go` statement pc minus the creator's entry (the runtime's `+0x..`).
    pub pc_offset: u64,
    /// The runtime would not print it (created by runtime internals).
    pub hidden: bool,
}

/// Options for [`reports`].
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    pub max_depth: usize,
    /// Read pprof labels (one more read per labelled goroutine).
    pub labels: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            max_depth: unwind::DEFAULT_MAX_DEPTH,
            labels: true,
        }
    }
}

/// Builds a report for every goroutine in `snapshot`, ordered by goid.
pub fn reports(
    target: &Target,
    snapshot: &Snapshot,
    options: ReportOptions,
) -> Vec<GoroutineReport> {
    let binary = &target.binary;
    let mut builder = Builder {
        binary,
        bias: target.bias,
        snapshot,
        unwinder: Unwinder::new(&binary.pclntab, target.bias, options.max_depth),
        symbolizer: Symbolizer::new(&binary.pclntab, &binary.go_version, target.bias),
        physical: Vec::new(),
        creators: PcMap::default(),
        system: PcMap::default(),
    };
    let machines: PcMap<u64, &runtime::Machine> =
        snapshot.machines.iter().map(|m| (m.addr, m)).collect();
    // Sorting references is cheaper than sorting the reports.
    let mut goroutines: Vec<&Goroutine> = snapshot.goroutines.iter().collect();
    goroutines.sort_by_key(|g| g.goid);
    goroutines
        .into_iter()
        .map(|g| {
            let mut report = builder.report(g);
            if matches!(g.status, GStatus::Running | GStatus::Syscall) && g.m != 0 {
                report.thread_id = machines.get(&g.m).map(|m| m.tid).filter(|&t| t != 0);
            }
            if options.labels && g.labels != 0 {
                report.labels = read_labels(&target.memory, binary, g.labels);
            }
            report
        })
        .collect()
}

/// Builds reports for the goroutines of one snapshot. Goroutines of one
/// program mostly start, park and get created in a few places, so what is
/// worked out about a pc is kept for the next goroutine.
struct Builder<'a> {
    binary: &'a Binary,
    bias: u64,
    snapshot: &'a Snapshot,
    unwinder: Unwinder<'a>,
    symbolizer: Symbolizer<'a>,
    /// Reused for every goroutine's physical frames.
    physical: Vec<PhysicalFrame>,
    /// The creator by `g.gopc` (`parent_goid` left unset).
    creators: PcMap<u64, Option<CreatedBy>>,
    /// Whether a goroutine is the runtime's own, by `g.startpc`.
    system: PcMap<u64, bool>,
}

impl<'a> Builder<'a> {
    fn report(&mut self, g: &Goroutine) -> GoroutineReport {
        let snapshot = self.snapshot;
        let version = &self.binary.go_version;
        let wait_reason = matches!(g.status, GStatus::Waiting | GStatus::Leaked)
            .then(|| runtime::wait_reason_name(version, g.wait_reason))
            .flatten();
        let wait_seconds = (matches!(g.status, GStatus::Waiting | GStatus::Syscall)
            && g.wait_since != 0)
            .then(|| (snapshot.monotonic_ns - g.wait_since).max(0) as f64 / 1e9);

        let start = if snapshot.unstable.contains(&g.addr) {
            Err(
                "goroutine changed while being read without a pause (--nonblocking); try again"
                    .to_string(),
            )
        } else {
            unwind::start_state(g, snapshot.thread_view(g).as_ref())
        };
        let (frames, truncated, error) = match start {
            Ok(start) => {
                let end = self
                    .unwinder
                    .unwind_into(&start, &snapshot.stacks, &mut self.physical);
                let frames = self.symbolizer.symbolize(&self.physical);
                match end {
                    StackEnd::Complete => (frames, false, None),
                    StackEnd::Truncated => (frames, true, None),
                    StackEnd::Incomplete(why) => (frames, false, Some(why)),
                }
            }
            Err(why) => (self.symbolizer.no_frames(), false, Some(why)),
        };

        GoroutineReport {
            goid: g.goid,
            status: g.status,
            wait_reason,
            wait_seconds,
            thread_id: None,
            locked_to_thread: g.locked_to_thread,
            system: self.is_system(g.start_pc),
            labels: Vec::new(),
            created_by: self.created_by(g),
            frames,
            truncated,
            error,
            native_frames: Vec::new(),
        }
    }

    /// Whether the goroutine starting at `start_pc` is the runtime's own.
    fn is_system(&mut self, start_pc: u64) -> bool {
        let pclntab = &self.binary.pclntab;
        let bias = self.bias;
        *self.system.entry(start_pc).or_insert_with(|| {
            let start_func = pclntab
                .find_func(start_pc.wrapping_sub(bias))
                .map(|f| pclntab.func_name(&f))
                .unwrap_or("");
            runtime::is_system_goroutine(start_func)
        })
    }

    /// The creator of `g`, as runtime/traceback.go `printcreatedby` finds
    /// it: the function containing `g.gopc` and the line of the `go`
    /// statement.
    fn created_by(&mut self, g: &Goroutine) -> Option<CreatedBy> {
        if g.goid == 1 || g.go_pc == 0 {
            return None;
        }
        let site = match self.creators.get(&g.go_pc) {
            Some(site) => site.clone(),
            None => {
                let site = self.creation_site(g.go_pc);
                self.creators.insert(g.go_pc, site.clone());
                site
            }
        };
        Some(CreatedBy {
            parent_goid: g.parent_goid.filter(|&p| p != 0),
            ..site?
        })
    }

    /// The creator for a `go` statement at `go_pc`, without `parent_goid`.
    fn creation_site(&mut self, go_pc: u64) -> Option<CreatedBy> {
        let pclntab = &self.binary.pclntab;
        let pc = go_pc.wrapping_sub(self.bias);
        let func = pclntab.find_func(pc)?;
        let trace_pc = if pc > func.entry { pc - 1 } else { pc };
        let (file, line) = pclntab.file_line(&func, trace_pc)?;
        let name = pclntab.func_name(&func);
        Some(CreatedBy {
            function: self.symbolizer.function_name(name),
            file: self.symbolizer.file_name(file),
            line,
            parent_goid: None,
            pc_offset: pc - func.entry,
            hidden: !stack::runtime_shows(
                &self.binary.go_version,
                name,
                pclntab.is_wrapper(&func),
                false,
                false,
            ),
        })
    }
}

/// Longest label key or value gospy reads.
const MAX_LABEL_LEN: u64 = 4096;
/// Most labels gospy reads from one goroutine.
const MAX_LABELS: u64 = 256;

/// Reads the pprof labels `g.labels` points to. Before Go 1.24 that is a
/// pointer to a `map[string]string` (runtime/map.go hmap, buckets of 8
/// string pairs);
/// from 1.24 a `labelMap` whose first word is a `[]label{key, value string}`
/// (runtime/pprof/label.go). Unreadable labels are skipped, not fatal.
pub fn read_labels(mem: &dyn Memory, binary: &Binary, ptr: u64) -> Vec<(String, String)> {
    let read_string = |addr: u64| -> Option<String> {
        let data = mem.read_u64(addr)?;
        let len = mem.read_u64(addr + 8)?;
        if len > MAX_LABEL_LEN {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        if len > 0 && !mem.read(data, &mut buf) {
            return None;
        }
        String::from_utf8(buf).ok()
    };
    let mut labels = Vec::new();
    if binary.go_version.at_least(1, 24) {
        let (Some(list), Some(len)) = (mem.read_u64(ptr), mem.read_u64(ptr + 8)) else {
            return labels;
        };
        for i in 0..len.min(MAX_LABELS) {
            let entry = list + i * 32;
            if let (Some(k), Some(v)) = (read_string(entry), read_string(entry + 16)) {
                labels.push((k, v));
            }
        }
    } else {
        // `g.labels` is a `*labelMap` (runtime/pprof SetGoroutineLabels),
        // the address of a map variable: the `*hmap` is one load further.
        let Some(ptr) = mem.read_u64(ptr).filter(|&p| p != 0) else {
            return labels;
        };
        // hmap: count int @0, B uint8 @9, buckets @16, oldbuckets @24.
        const BUCKET_SIZE: u64 = 8 + 8 * 16 + 8 * 16 + 8;
        const MIN_TOP_HASH: u8 = 5;
        let Some(b) = mem.read_u64(ptr + 8).map(|w| (w >> 8) as u8) else {
            return labels;
        };
        if b > 8 {
            return labels;
        }
        for bucket_array in [mem.read_u64(ptr + 16), mem.read_u64(ptr + 24)]
            .into_iter()
            .flatten()
        {
            if bucket_array == 0 {
                continue;
            }
            for i in 0..(1u64 << b) {
                let mut bucket = bucket_array + i * BUCKET_SIZE;
                for _ in 0..16 {
                    let mut tophash = [0u8; 8];
                    if bucket == 0 || !mem.read(bucket, &mut tophash) {
                        break;
                    }
                    for (slot, &top) in tophash.iter().enumerate() {
                        if top < MIN_TOP_HASH {
                            continue;
                        }
                        let key = bucket + 8 + slot as u64 * 16;
                        let value = bucket + 8 + 128 + slot as u64 * 16;
                        if let (Some(k), Some(v)) = (read_string(key), read_string(value)) {
                            labels.push((k, v));
                        }
                    }
                    bucket = mem.read_u64(bucket + BUCKET_SIZE - 8).unwrap_or(0);
                }
            }
            if labels.len() as u64 >= MAX_LABELS {
                break;
            }
        }
    }
    labels.sort();
    labels.dedup();
    labels
}
