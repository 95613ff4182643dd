//! Where things are inside the Go runtime of one target: field offsets of the
//! runtime structs gospy reads, and the addresses of the runtime globals.
//!
//! This is the only place that knows offsets. It is filled from the target's
//! DWARF (`binary::dwarf`); built-in per-version tables can fill the same
//! type later for stripped binaries. Offsets are in bytes from the start of
//! the struct; `None` means the field does not exist in this Go version.
//! Reference values per version: shared/docs/go-runtime/offset-tables.md.

/// Field offsets of `runtime.g` (runtime/runtime2.go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GLayout {
    /// `unsafe.Sizeof(g{})`.
    pub size: u64,
    /// `g.stack.lo`; `g.stack.hi` is 8 bytes later.
    pub stack: u64,
    pub m: u64,
    /// `g.sched`, a `gobuf`.
    pub sched: u64,
    pub syscallsp: u64,
    pub syscallpc: u64,
    /// Go 1.23+.
    pub syscallbp: Option<u64>,
    pub atomicstatus: u64,
    pub goid: u64,
    pub waitsince: u64,
    pub waitreason: u64,
    pub lockedm: u64,
    /// Go 1.21+.
    pub parent_goid: Option<u64>,
    pub gopc: u64,
    pub startpc: u64,
    pub labels: u64,
    /// `g.trackingSeq` (Go 1.17+): incremented each time the goroutine stops
    /// running (runtime/proc.go `casgstatus`).
    pub tracking_seq: Option<u64>,
}

/// Field offsets of `runtime.gobuf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GobufLayout {
    pub sp: u64,
    pub pc: u64,
    pub bp: u64,
}

/// Field offsets of `runtime.m`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MLayout {
    pub size: u64,
    pub g0: u64,
    /// The Linux thread id, set in `minit` (runtime/os_linux.go).
    pub procid: u64,
    pub gsignal: u64,
    pub curg: u64,
    pub p: u64,
    pub id: u64,
    pub alllink: u64,
    pub lockedg: u64,
    pub incgo: u64,
    pub vdso_sp: u64,
    pub vdso_pc: u64,
}

/// Field offsets of `runtime.moduledata` that gospy needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuledataLayout {
    /// `pcHeader` (Go 1.16+); before that the first field is `pclntable []byte`.
    pub pc_header: Option<u64>,
    pub text: u64,
    pub etext: u64,
    /// `gofunc` (Go 1.18+): base of funcdata offsets.
    pub gofunc: Option<u64>,
}

/// Link-time addresses (not relocated; add the load bias for PIE) of the
/// runtime globals gospy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globals {
    /// `runtime.allgs`, a `[]*g`.
    pub allgs: u64,
    /// `runtime.allglen`.
    pub allglen: Option<u64>,
    /// `runtime.allm`, a `*m` heading the list linked by `m.alllink`.
    pub allm: u64,
    /// `runtime.firstmoduledata`.
    pub firstmoduledata: u64,
    /// `runtime.waitReasonStrings`, a `[N]string`, and N.
    pub wait_reason_strings: Option<(u64, u64)>,
    /// `runtime.runtimeInitTime` (nanotime at start).
    pub runtime_init_time: Option<u64>,
}

/// Everything gospy needs to know about where runtime data lives in one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub g: GLayout,
    pub gobuf: GobufLayout,
    pub m: MLayout,
    pub moduledata: ModuledataLayout,
    pub globals: Globals,
}

impl Layout {
    /// Offset of `g.sched.sp`.
    pub fn g_sched_sp(&self) -> u64 {
        self.g.sched + self.gobuf.sp
    }
    /// Offset of `g.sched.pc`.
    pub fn g_sched_pc(&self) -> u64 {
        self.g.sched + self.gobuf.pc
    }
    /// Offset of `g.sched.bp`.
    pub fn g_sched_bp(&self) -> u64 {
        self.g.sched + self.gobuf.bp
    }
    /// How many leading bytes of a `g` gospy reads: up to and including the
    /// last field it uses, so that one read per goroutine suffices.
    pub fn g_read_len(&self) -> u64 {
        let g = &self.g;
        let last = [
            g.stack + 16,
            g.m + 8,
            self.g_sched_bp() + 8,
            self.g_sched_pc() + 8,
            g.syscallsp + 8,
            g.syscallpc + 8,
            g.syscallbp.unwrap_or(0) + 8,
            g.atomicstatus + 4,
            g.goid + 8,
            g.waitsince + 8,
            g.waitreason + 1,
            g.lockedm + 8,
            g.parent_goid.unwrap_or(0) + 8,
            g.gopc + 8,
            g.startpc + 8,
            g.labels + 8,
            g.tracking_seq.unwrap_or(0) + 1,
        ];
        last.into_iter().max().unwrap_or(0)
    }
    /// How many leading bytes of an `m` gospy reads.
    pub fn m_read_len(&self) -> u64 {
        let m = &self.m;
        [
            m.g0, m.procid, m.gsignal, m.curg, m.p, m.id, m.alllink, m.lockedg, m.vdso_sp,
            m.vdso_pc,
        ]
        .into_iter()
        .map(|o| o + 8)
        .chain([m.incgo + 1])
        .max()
        .unwrap_or(0)
    }
}
