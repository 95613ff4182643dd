//! Go's runtime model rebuilt from raw bytes: goroutines (`runtime.g`) and
//! machines (`runtime.m`, i.e. OS threads), decoded with a [`Layout`].
//!
//! Nothing here touches the process: callers hand in the bytes they copied
//! (usually from a [`crate::process::memory::MemorySnapshot`]).

use crate::binary::GoVersion;
use crate::layout::Layout;

/// `_Gscan`: OR'd into the status while the GC scans the stack
/// (runtime/runtime2.go).
const G_SCAN: u32 = 0x1000;

/// A goroutine's scheduling state: `g.atomicstatus` without the scan bit
/// (runtime/runtime2.go, `_Gidle` .. `_Gdeadextra`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GStatus {
    Idle,
    Runnable,
    Running,
    Syscall,
    Waiting,
    Dead,
    Copystack,
    Preempted,
    /// Go 1.26+: a goroutine the GC proved can never be woken.
    Leaked,
    /// Go 1.26+: a dead g attached to an extra M for cgo callbacks.
    DeadExtra,
    /// A value this version of gospy does not know.
    Unknown(u32),
}

impl GStatus {
    /// Decodes `g.atomicstatus` (scan bit already removed).
    pub fn from_raw(raw: u32) -> GStatus {
        match raw {
            0 => GStatus::Idle,
            1 => GStatus::Runnable,
            2 => GStatus::Running,
            3 => GStatus::Syscall,
            4 => GStatus::Waiting,
            6 => GStatus::Dead,
            8 => GStatus::Copystack,
            9 => GStatus::Preempted,
            10 => GStatus::Leaked,
            11 => GStatus::DeadExtra,
            other => GStatus::Unknown(other),
        }
    }

    /// The name the runtime prints (runtime/traceback.go `gStatusStrings`),
    /// also used in gospy's JSON.
    pub fn name(self) -> &'static str {
        match self {
            GStatus::Idle => "idle",
            GStatus::Runnable => "runnable",
            GStatus::Running => "running",
            GStatus::Syscall => "syscall",
            GStatus::Waiting => "waiting",
            GStatus::Dead => "dead",
            GStatus::Copystack => "copystack",
            GStatus::Preempted => "preempted",
            GStatus::Leaked => "leaked",
            GStatus::DeadExtra => "waiting for cgo callback",
            GStatus::Unknown(_) => "???",
        }
    }

    /// Whether the goroutine no longer exists (its g is kept for reuse).
    pub fn is_dead(self) -> bool {
        matches!(self, GStatus::Dead | GStatus::DeadExtra | GStatus::Idle)
    }
}

/// One goroutine as decoded from its `runtime.g`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goroutine {
    /// Address of the `g` in the target.
    pub addr: u64,
    pub goid: u64,
    pub status: GStatus,
    /// The GC was scanning the stack (`_Gscan` set).
    pub scanning: bool,
    /// Raw `g.waitreason`; meaningful when waiting.
    pub wait_reason: u8,
    /// `g.waitsince` (CLOCK_MONOTONIC ns, set by the GC; 0 if unknown).
    pub wait_since: i64,
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// `g.m`: the M running it, when running or in a syscall.
    pub m: u64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub syscall_sp: u64,
    pub syscall_pc: u64,
    pub syscall_bp: u64,
    /// `g.lockedm != 0`: wired to its thread by LockOSThread.
    pub locked_to_thread: bool,
    /// Go 1.21+: goid of the creator.
    pub parent_goid: Option<u64>,
    /// PC of the `go` statement that created it.
    pub go_pc: u64,
    /// Entry PC of the goroutine's function.
    pub start_pc: u64,
    /// `g.labels` (pprof labels), 0 if none.
    pub labels: u64,
    /// `g.trackingSeq` (Go 1.17+): changes whenever the goroutine has run.
    pub tracking_seq: Option<u8>,
}

impl Goroutine {
    /// Decodes a goroutine from the first [`Layout::g_read_len`] bytes of its
    /// `g`. Returns `None` if `bytes` is too short.
    pub fn decode(addr: u64, bytes: &[u8], layout: &Layout) -> Option<Goroutine> {
        let g = &layout.g;
        let raw_status = le_u32(bytes, g.atomicstatus)?;
        Some(Goroutine {
            addr,
            goid: le_u64(bytes, g.goid)?,
            status: GStatus::from_raw(raw_status & !G_SCAN),
            scanning: raw_status & G_SCAN != 0,
            wait_reason: *bytes.get(usize::try_from(g.waitreason).ok()?)?,
            wait_since: le_u64(bytes, g.waitsince)? as i64,
            stack_lo: le_u64(bytes, g.stack)?,
            stack_hi: le_u64(bytes, g.stack + 8)?,
            m: le_u64(bytes, g.m)?,
            sched_sp: le_u64(bytes, layout.g_sched_sp())?,
            sched_pc: le_u64(bytes, layout.g_sched_pc())?,
            sched_bp: le_u64(bytes, layout.g_sched_bp())?,
            syscall_sp: le_u64(bytes, g.syscallsp)?,
            syscall_pc: le_u64(bytes, g.syscallpc)?,
            syscall_bp: match g.syscallbp {
                Some(off) => le_u64(bytes, off)?,
                None => 0,
            },
            locked_to_thread: le_u64(bytes, g.lockedm)? != 0,
            parent_goid: match g.parent_goid {
                Some(off) => Some(le_u64(bytes, off)?),
                None => None,
            },
            go_pc: le_u64(bytes, g.gopc)?,
            start_pc: le_u64(bytes, g.startpc)?,
            labels: le_u64(bytes, g.labels)?,
            tracking_seq: match g.tracking_seq {
                Some(off) => Some(*bytes.get(usize::try_from(off).ok()?)?),
                None => None,
            },
        })
    }

    /// Whether `addr` lies on this goroutine's stack.
    pub fn stack_contains(&self, addr: u64) -> bool {
        self.stack_lo <= addr && addr < self.stack_hi
    }

    /// Its stack, if the bounds are sane (for the system stacks of an M:
    /// `g0`, `gsignal`).
    pub fn stack_bounds(&self) -> Option<crate::unwind::StackBounds> {
        (self.stack_lo < self.stack_hi).then_some(crate::unwind::StackBounds {
            lo: self.stack_lo,
            hi: self.stack_hi,
        })
    }
}

/// One M (an OS thread the runtime created or adopted), from its `runtime.m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub addr: u64,
    /// `m.id`.
    pub id: i64,
    /// `m.procid`: the Linux thread id.
    pub tid: u64,
    pub g0: u64,
    pub gsignal: u64,
    /// The user goroutine this M runs, 0 if none.
    pub curg: u64,
    pub p: u64,
    pub lockedg: u64,
    pub incgo: bool,
    pub vdso_sp: u64,
    pub vdso_pc: u64,
    /// Next M in `runtime.allm`.
    pub alllink: u64,
}

impl Machine {
    /// Decodes an M from the first [`Layout::m_read_len`] bytes of its `m`.
    pub fn decode(addr: u64, bytes: &[u8], layout: &Layout) -> Option<Machine> {
        let m = &layout.m;
        Some(Machine {
            addr,
            id: le_u64(bytes, m.id)? as i64,
            tid: le_u64(bytes, m.procid)?,
            g0: le_u64(bytes, m.g0)?,
            gsignal: le_u64(bytes, m.gsignal)?,
            curg: le_u64(bytes, m.curg)?,
            p: le_u64(bytes, m.p)?,
            lockedg: le_u64(bytes, m.lockedg)?,
            incgo: *bytes.get(usize::try_from(m.incgo).ok()?)? != 0,
            vdso_sp: le_u64(bytes, m.vdso_sp)?,
            vdso_pc: le_u64(bytes, m.vdso_pc)?,
            alllink: le_u64(bytes, m.alllink)?,
        })
    }
}

/// The string the runtime prints for a wait reason
/// (runtime/runtime2.go `waitReasonStrings`), per Go version. The order was
/// reshuffled several times; tables checked against each toolchain's
/// `runtime.waitReasonStrings` (testdata/go-runtime/wait-reasons/, made by
/// scripts/dump-go-reference).
pub fn wait_reason_name(version: &GoVersion, reason: u8) -> Option<&'static str> {
    let table: &[&str] = if version.at_least(1, 26) {
        WAIT_REASONS_1_26
    } else if version.at_least(1, 25) {
        WAIT_REASONS_1_25
    } else if version.at_least(1, 24) {
        WAIT_REASONS_1_24
    } else if version.at_least(1, 23) {
        WAIT_REASONS_1_23
    } else if version.at_least(1, 22) {
        WAIT_REASONS_1_22
    } else if version.at_least(1, 21) {
        WAIT_REASONS_1_21
    } else {
        WAIT_REASONS_1_15
    };
    table
        .get(reason as usize)
        .copied()
        .filter(|s| !s.is_empty())
}

const WAIT_REASONS_1_15: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "timer goroutine (idle)",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "preempted",
    "debug call",
];

const WAIT_REASONS_1_21: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
];

const WAIT_REASONS_1_22: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
];

const WAIT_REASONS_1_23: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
];

const WAIT_REASONS_1_24: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "sync.WaitGroup.Wait",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
    "synctest.Run",
    "synctest.Wait",
    "chan receive (synctest)",
    "chan send (synctest)",
    "select (synctest)",
];

// Go 1.25 added "GOMAXPROCS updater (idle)" (index 12) and "cleanup wait".
const WAIT_REASONS_1_25: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "GOMAXPROCS updater (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "sync.WaitGroup.Wait",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
    "synctest.Run",
    "synctest.Wait",
    "chan receive (durable)",
    "chan send (durable)",
    "select (durable)",
    "sync.WaitGroup.Wait (durable)",
    "cleanup wait",
];

const WAIT_REASONS_1_26: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "finalizer wait",
    "force gc (idle)",
    "GOMAXPROCS updater (idle)",
    "semacquire",
    "sleep",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "select (no cases)",
    "select",
    "chan receive",
    "chan send",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "sync.WaitGroup.Wait",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
    "synctest.Run",
    "synctest.Wait",
    "chan receive (durable)",
    "chan send (durable)",
    "select (durable)",
    "sync.WaitGroup.Wait (durable)",
    "cleanup wait",
];

/// Whether the runtime counts a goroutine started at `start_func` as a
/// system goroutine, hidden from tracebacks (runtime/traceback.go
/// `isSystemGoroutine`): any `runtime.` start function except the main
/// goroutine and a few that run user code.
pub fn is_system_goroutine(start_func: &str) -> bool {
    start_func.starts_with("runtime.")
        && !matches!(
            start_func,
            "runtime.main" | "runtime.corostart" | "runtime.handleAsyncEvent"
        )
}

/// Reads a little-endian u64 at `off` in `bytes`.
pub(crate) fn le_u64(bytes: &[u8], off: u64) -> Option<u64> {
    let off = usize::try_from(off).ok()?;
    let b = bytes.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Reads a little-endian u32 at `off` in `bytes`.
pub(crate) fn le_u32(bytes: &[u8], off: u64) -> Option<u32> {
    let off = usize::try_from(off).ok()?;
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(s: &str) -> GoVersion {
        GoVersion::parse(s).unwrap()
    }

    /// The built-in tables equal the `runtime.waitReasonStrings` dumped from
    /// each toolchain listed in testdata/go-toolchains.txt
    /// (testdata/go-runtime/wait-reasons/go1.NN.txt, by
    /// scripts/dump-go-reference). A listed toolchain without a dump fails.
    #[test]
    fn wait_reason_tables_match_toolchain_dumps() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let list = std::fs::read_to_string(root.join("testdata/go-toolchains.txt"))
            .expect("read testdata/go-toolchains.txt");
        let minors: Vec<u32> = list
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let version = l.split_whitespace().next().unwrap();
                version.strip_prefix("1.").unwrap().parse().unwrap()
            })
            .collect();
        let dir = root.join("testdata/go-runtime/wait-reasons");
        for &minor in &minors {
            let path = dir.join(format!("go1.{minor}.txt"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run scripts/dump-go-reference 1.{minor})",
                    path.display()
                )
            });
            let v = version(&format!("go1.{minor}"));
            let mut count = 0;
            for (i, item) in text.split("\" ").enumerate() {
                let Some((index, name)) = item.trim().split_once("=\"") else {
                    continue;
                };
                let index: u8 = index.trim().parse().unwrap();
                assert_eq!(index as usize, i);
                let expected = name.trim_end_matches('"');
                let expected = (!expected.is_empty()).then_some(expected);
                assert_eq!(
                    wait_reason_name(&v, index),
                    expected,
                    "go1.{minor} #{index}"
                );
                count += 1;
            }
            assert!(count > 20, "go1.{minor}: parsed only {count} entries");
            assert_eq!(
                wait_reason_name(&v, count as u8),
                None,
                "go1.{minor} past end"
            );
        }
        assert!(minors.len() >= 9, "toolchain list too short: {minors:?}");
    }

    #[test]
    fn system_goroutines() {
        assert!(is_system_goroutine("runtime.gcBgMarkWorker"));
        assert!(!is_system_goroutine("runtime.main"));
        assert!(!is_system_goroutine("main.worker"));
    }

    #[test]
    fn decode_rejects_short_input() {
        let layout = Layout::default();
        assert!(Goroutine::decode(0, &[], &layout).is_none());
        assert!(Machine::decode(0, &[0; 4], &layout).is_none());
    }
}
