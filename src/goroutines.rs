//! Per-goroutine reports built from a [`Snapshot`]: status, wait reason and
//! time, thread, labels, creator and symbolized frames. This is what
//! `gospy dump` prints, and what the other subcommands aggregate.

use std::collections::HashMap;

use crate::binary::Binary;
use crate::process::memory::Memory;
use crate::runtime::{self, GStatus, Goroutine};
use crate::snapshot::Snapshot;
use crate::stack::{self, Frame};
use crate::target::Target;
use crate::unwind::{self, StackEnd, ThreadView, Unwinder};

/// Everything gospy reports about one goroutine.
#[derive(Debug, Clone)]
pub struct GoroutineReport {
    pub goid: u64,
    pub status: GStatus,
    /// The wait reason the runtime would print, when waiting.
    pub wait_reason: Option<String>,
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
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// The stack was cut at the depth limit.
    pub truncated: bool,
    /// Why the stack could not be read completely, if it could not.
    pub error: Option<String>,
}

/// The `go` statement that started a goroutine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedBy {
    pub function: String,
    pub file: String,
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
    let unwinder = Unwinder {
        pclntab: &binary.pclntab,
        bias: target.bias,
        max_depth: options.max_depth,
    };
    let machines: HashMap<u64, &runtime::Machine> =
        snapshot.machines.iter().map(|m| (m.addr, m)).collect();
    let mut out: Vec<GoroutineReport> = snapshot
        .goroutines
        .iter()
        .map(|g| {
            let machine = (g.m != 0).then(|| machines.get(&g.m).copied()).flatten();
            let thread = snapshot.thread_view(g);
            let mut report =
                report_one(binary, target.bias, snapshot, g, &unwinder, thread.as_ref());
            if matches!(g.status, GStatus::Running | GStatus::Syscall) {
                report.thread_id = machine.map(|m| m.tid).filter(|&t| t != 0);
            }
            if options.labels && g.labels != 0 {
                report.labels = read_labels(&target.memory, binary, g.labels);
            }
            report
        })
        .collect();
    out.sort_by_key(|r| r.goid);
    out
}

fn report_one(
    binary: &Binary,
    bias: u64,
    snapshot: &Snapshot,
    g: &Goroutine,
    unwinder: &Unwinder,
    thread: Option<&ThreadView>,
) -> GoroutineReport {
    let pclntab = &binary.pclntab;
    let version = &binary.go_version;
    let start_func = pclntab
        .find_func(g.start_pc.wrapping_sub(bias))
        .map(|f| pclntab.func_name(&f))
        .unwrap_or("");
    let wait_reason = matches!(g.status, GStatus::Waiting | GStatus::Leaked)
        .then(|| runtime::wait_reason_name(version, g.wait_reason).map(str::to_string))
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
        unwind::start_state(g, thread)
    };
    let (frames, truncated, error) = match start {
        Ok(start) => {
            let stack = unwinder.unwind(&start, &snapshot.stacks);
            let frames = stack::symbolize(pclntab, version, &stack, bias);
            match stack.end {
                StackEnd::Complete => (frames, false, None),
                StackEnd::Truncated => (frames, true, None),
                StackEnd::Incomplete(why) => (frames, false, Some(why)),
            }
        }
        Err(why) => (Vec::new(), false, Some(why)),
    };

    GoroutineReport {
        goid: g.goid,
        status: g.status,
        wait_reason,
        wait_seconds,
        thread_id: None,
        locked_to_thread: g.locked_to_thread,
        system: runtime::is_system_goroutine(start_func),
        labels: Vec::new(),
        created_by: created_by(binary, bias, g),
        frames,
        truncated,
        error,
    }
}

/// The creator of `g`, as runtime/traceback.go `printcreatedby` finds it:
/// the function containing `g.gopc` and the line of the `go` statement.
fn created_by(binary: &Binary, bias: u64, g: &Goroutine) -> Option<CreatedBy> {
    if g.goid == 1 || g.go_pc == 0 {
        return None;
    }
    let pclntab = &binary.pclntab;
    let pc = g.go_pc.wrapping_sub(bias);
    let func = pclntab.find_func(pc)?;
    let trace_pc = if pc > func.entry { pc - 1 } else { pc };
    let (file, line) = pclntab.file_line(&func, trace_pc)?;
    let name = pclntab.func_name(&func);
    Some(CreatedBy {
        function: stack::name_for_print(name),
        file: file.to_string(),
        line,
        parent_goid: g.parent_goid.filter(|&p| p != 0),
        pc_offset: pc - func.entry,
        hidden: !stack::runtime_shows(
            &binary.go_version,
            name,
            pclntab.is_wrapper(&func),
            false,
            false,
        ),
    })
}

/// Longest label key or value gospy reads.
const MAX_LABEL_LEN: u64 = 4096;
/// Most labels gospy reads from one goroutine.
const MAX_LABELS: u64 = 256;

/// Reads the pprof labels `g.labels` points to. Before Go 1.24 that is a
/// `map[string]string` (runtime/map.go hmap, buckets of 8 string pairs);
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
