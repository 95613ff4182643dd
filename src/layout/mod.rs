//! Where things are inside the Go runtime of one target: field offsets of the
//! runtime structs gospy reads, and the addresses of the runtime globals.
//!
//! This is the only place that knows offsets. [`STRUCTS`] lists every
//! (struct, field path) gospy reads. A [`LayoutSource`] answers "size of this
//! struct" and "offset of this field" for them, and [`Layout::from_source`]
//! turns the answers into a [`Layout`]. There are two sources, so DWARF and
//! the built-in tables fill `Layout` through the same code:
//!
//! * the target's DWARF (`binary::dwarf`), which also gives the globals;
//! * for binaries without DWARF, the tables of [`tables`], generated from the
//!   DWARF of real toolchain builds by `scripts/gen-layout-tables` and chosen
//!   by the target's Go version ([`Layout::for_version`]). They leave the
//!   globals zero: those are addresses, different in every binary.
//!
//! Offsets are in bytes from the start of the struct; `None` means the field
//! (or the whole struct) does not exist in this Go version. Reference values
//! per version: shared/docs/go-runtime/offset-tables.md.

pub mod tables;

use std::fmt;

use crate::binary::GoVersion;

/// `runtime.g`, a goroutine (runtime/runtime2.go).
pub const G: &str = "runtime.g";
/// `runtime.gobuf`, saved registers (runtime/runtime2.go).
pub const GOBUF: &str = "runtime.gobuf";
/// `runtime.m`, an OS thread (runtime/runtime2.go).
pub const M: &str = "runtime.m";
/// `runtime.moduledata` (runtime/symtab.go).
pub const MODULEDATA: &str = "runtime.moduledata";
/// `runtime.p`, a scheduler context (runtime/runtime2.go).
pub const P: &str = "runtime.p";
/// `runtime.schedt`, the type of `runtime.sched` (runtime/runtime2.go).
pub const SCHEDT: &str = "runtime.schedt";
/// `runtime.mstats`, the type of `runtime.memstats` (runtime/mstats.go).
pub const MSTATS: &str = "runtime.mstats";
/// `runtime.heapStatsDelta`, one shard of `memstats.heapStats` (Go 1.16+,
/// runtime/mstats.go).
pub const HEAP_STATS_DELTA: &str = "runtime.heapStatsDelta";
/// `runtime.gcControllerState`, the type of `runtime.gcController`
/// (runtime/mgc.go ≤1.17, runtime/mgcpacer.go 1.18+).
pub const GC_CONTROLLER: &str = "runtime.gcControllerState";
/// `runtime.hchan`, a channel (runtime/chan.go).
pub const HCHAN: &str = "runtime.hchan";
/// `runtime.sudog`, a goroutine waiting on a channel (runtime/runtime2.go).
pub const SUDOG: &str = "runtime.sudog";
/// `runtime._type`, a type descriptor (runtime/type.go; `internal/abi.Type`
/// from Go 1.21, internal/abi/type.go).
pub const TYPE: &str = "runtime._type";

/// One runtime struct gospy reads, with the fields it reads from it.
#[derive(Debug, Clone, Copy)]
pub struct StructSpec {
    /// gospy's name for the struct, the key in the tables: the runtime's
    /// name (`runtime.g`).
    pub name: &'static str,
    /// Further DWARF type names to try when `name` is absent (types that
    /// moved package).
    pub dwarf_aliases: &'static [&'static str],
    /// gospy cannot work without it: DWARF lacking it is refused, and the
    /// DWARF reader looks for it beyond the `runtime` units.
    pub required: bool,
    /// The fields read from it.
    pub fields: &'static [FieldSpec],
}

impl StructSpec {
    /// The DWARF type names to try, in order.
    pub fn dwarf_names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.dwarf_aliases.iter().copied())
    }

    /// The field named `name`, if listed.
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// One field gospy reads.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// The key in the tables: a member name, or a dotted path through
    /// nested structs (`stack.lo` is `lo` of the `runtime.stack` in `g`).
    pub name: &'static str,
    /// Further DWARF member paths to try, in order, when `name` is absent
    /// (fields renamed or moved between versions). The table stores the
    /// offset of the first that exists under `name`.
    pub dwarf_aliases: &'static [&'static str],
}

impl FieldSpec {
    /// The DWARF member paths to try, in order.
    pub fn dwarf_paths(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.dwarf_aliases.iter().copied())
    }
}

const fn f(name: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        dwarf_aliases: &[],
    }
}

const fn renamed(name: &'static str, dwarf_aliases: &'static [&'static str]) -> FieldSpec {
    FieldSpec {
        name,
        dwarf_aliases,
    }
}

/// Every (struct, field path) gospy reads, the one list of them: the DWARF
/// reader and the table generator read exactly these, and
/// [`Layout::from_source`] asks for nothing else (a unit test checks both
/// ways). Adding a field here means regenerating the tables
/// (`scripts/gen-layout-tables`).
pub const STRUCTS: &[StructSpec] = &[
    StructSpec {
        name: G,
        dwarf_aliases: &[],
        required: true,
        fields: &[
            f("stack.lo"),
            f("m"),
            f("sched"),
            f("syscallsp"),
            f("syscallpc"),
            f("syscallbp"),
            f("atomicstatus"),
            f("goid"),
            f("waitsince"),
            f("waitreason"),
            f("lockedm"),
            f("parentGoid"),
            f("gopc"),
            f("startpc"),
            f("labels"),
            f("trackingSeq"),
            // For `gospy summary`: the sudog a goroutine blocked on a
            // channel waits in (runtime/chan.go chansend/chanrecv).
            f("waiting"),
        ],
    },
    StructSpec {
        name: GOBUF,
        dwarf_aliases: &[],
        required: true,
        fields: &[f("sp"), f("pc"), f("bp")],
    },
    StructSpec {
        name: M,
        dwarf_aliases: &[],
        required: true,
        fields: &[
            f("g0"),
            f("procid"),
            f("gsignal"),
            f("curg"),
            f("p"),
            f("id"),
            f("alllink"),
            f("lockedg"),
            f("incgo"),
            f("vdsoSP"),
            f("vdsoPC"),
            // For `gospy profile threadcreate`: the [32]uintptr stack that
            // created the thread (runtime/proc.go mcommoninit).
            f("createstack"),
        ],
    },
    StructSpec {
        name: MODULEDATA,
        dwarf_aliases: &[],
        required: true,
        // `types` (the base of type name offsets) for `gospy summary`'s
        // channel element types in binaries without symbols.
        fields: &[
            f("pcHeader"),
            f("text"),
            f("etext"),
            f("gofunc"),
            f("types"),
        ],
    },
    StructSpec {
        name: P,
        dwarf_aliases: &[],
        required: false,
        fields: &[
            f("id"),
            f("status"),
            f("schedtick"),
            f("syscalltick"),
            f("m"),
            f("mcache"),
            f("runqhead"),
            f("runqtail"),
            f("runq"),
            f("runnext"),
        ],
    },
    StructSpec {
        name: SCHEDT,
        dwarf_aliases: &[],
        required: false,
        fields: &[
            f("goidgen"),
            f("lastpoll"),
            f("midle"),
            f("nmidle"),
            f("nmidlelocked"),
            f("mnext"),
            f("maxmcount"),
            f("nmsys"),
            f("nmfreed"),
            f("ngsys"),
            f("nGsyscallNoP"),
            f("pidle"),
            f("npidle"),
            f("nmspinning"),
            f("needspinning"),
            f("runq"),
            // Go 1.26 replaced `runqsize` by a `size` in `gQueue`
            // (runtime/proc.go); both are the int32 length.
            renamed("runqsize", &["runq.size"]),
            f("gcwaiting"),
            f("stopwait"),
            f("sysmonwait"),
            f("profilehz"),
            f("totaltime"),
            f("idleTime"),
            f("totalMutexWaitTime"),
        ],
    },
    StructSpec {
        name: MSTATS,
        dwarf_aliases: &[],
        required: false,
        fields: &[
            // Up to Go 1.15 (at least) the heap figures live here; later
            // in `heapStats` shards and `gcController` (runtime/mstats.go).
            f("nmalloc"),
            f("nfree"),
            f("heap_alloc"),
            f("heap_sys"),
            f("heap_idle"),
            f("heap_inuse"),
            f("heap_released"),
            f("heap_objects"),
            f("next_gc"),
            f("heap_live"),
            f("heap_marked"),
            f("tinyallocs"),
            f("stacks_sys"),
            f("mspan_sys"),
            f("mcache_sys"),
            f("buckhash_sys"),
            renamed("gc_sys", &["gcMiscSys"]),
            f("other_sys"),
            f("last_gc_unix"),
            f("pause_total_ns"),
            f("pause_ns"),
            f("numgc"),
            f("numforcedgc"),
            f("gc_cpu_fraction"),
            f("last_gc_nanotime"),
            // `[3]heapStatsDelta` and its generation counter (Go 1.16+).
            f("heapStats.stats"),
            f("heapStats.gen"),
        ],
    },
    StructSpec {
        name: HEAP_STATS_DELTA,
        dwarf_aliases: &[],
        required: false,
        fields: &[
            f("inHeap"),
            f("inStacks"),
            f("tinyAllocCount"),
            f("largeAlloc"),
            f("largeAllocCount"),
            f("smallAllocCount"),
            f("largeFree"),
            f("largeFreeCount"),
            f("smallFreeCount"),
        ],
    },
    StructSpec {
        name: GC_CONTROLLER,
        dwarf_aliases: &[],
        required: false,
        fields: &[
            f("gcPercent"),
            f("memoryLimit"),
            f("heapMinimum"),
            f("gcPercentHeapGoal"),
            f("heapLive"),
            f("heapScan"),
            f("heapMarked"),
            f("heapInUse"),
            f("heapReleased"),
            f("heapFree"),
            f("totalAlloc"),
            f("totalFree"),
            f("mappedReady"),
        ],
    },
    StructSpec {
        name: HCHAN,
        dwarf_aliases: &[],
        required: false,
        fields: &[
            f("qcount"),
            f("dataqsiz"),
            f("buf"),
            f("elemsize"),
            f("closed"),
            f("elemtype"),
            f("sendx"),
            f("recvx"),
            f("recvq"),
            f("sendq"),
        ],
    },
    StructSpec {
        name: SUDOG,
        dwarf_aliases: &[],
        required: false,
        fields: &[f("c")],
    },
    StructSpec {
        name: TYPE,
        // `type _type = abi.Type` since Go 1.21, with exported field names.
        dwarf_aliases: &["internal/abi.Type"],
        required: false,
        fields: &[
            renamed("size", &["Size_"]),
            renamed("ptrdata", &["PtrBytes"]),
            renamed("hash", &["Hash"]),
            renamed("tflag", &["TFlag"]),
            renamed("kind", &["Kind_"]),
            renamed("str", &["Str"]),
        ],
    },
];

/// The spec of the struct named `name` in [`STRUCTS`].
pub fn struct_spec(name: &str) -> Option<&'static StructSpec> {
    STRUCTS.iter().find(|s| s.name == name)
}

/// Answers the two questions a [`Layout`] is built from, for the structs
/// and fields of [`STRUCTS`] (by their gospy names).
pub trait LayoutSource {
    /// Where the answers come from, for error messages.
    fn describe(&self) -> String;
    /// `unsafe.Sizeof` of the struct; `None` if the struct does not exist.
    fn struct_size(&self, strukt: &str) -> Option<u64>;
    /// Byte offset of the field (path) from the start of the struct; `None`
    /// if it does not exist.
    fn field_offset(&self, strukt: &str, field: &str) -> Option<u64>;
}

/// Sizes and offsets of every struct and field of [`STRUCTS`] as read from
/// one binary: the owned counterpart of a [`VersionTable`], in the same
/// order as [`STRUCTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLayout {
    /// One entry per [`STRUCTS`] entry.
    pub structs: Vec<RawStruct>,
}

/// One struct of a [`RawLayout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStruct {
    /// [`StructSpec::name`].
    pub name: &'static str,
    /// `None` if this Go version has no such struct.
    pub size: Option<u64>,
    /// ([`FieldSpec::name`], offset), one per listed field.
    pub fields: Vec<(&'static str, Option<u64>)>,
}

impl RawLayout {
    fn find(&self, strukt: &str) -> Option<&RawStruct> {
        self.structs.iter().find(|s| s.name == strukt)
    }
}

/// A `RawLayout` comes from DWARF ([`VersionTable::to_raw`] copies are for
/// comparing with it).
impl LayoutSource for RawLayout {
    fn describe(&self) -> String {
        "DWARF".to_string()
    }
    fn struct_size(&self, strukt: &str) -> Option<u64> {
        self.find(strukt)?.size
    }
    fn field_offset(&self, strukt: &str, field: &str) -> Option<u64> {
        let s = self.find(strukt)?;
        s.fields.iter().find(|(n, _)| *n == field)?.1
    }
}

/// The built-in layout of one Go minor version (see [`tables`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionTable {
    /// Go 1.`minor`.
    pub minor: u32,
    /// The toolchain it was generated from (`go1.24.4`).
    pub toolchain: &'static str,
    /// One entry per [`STRUCTS`] entry, in that order.
    pub structs: &'static [StructTable],
}

/// One struct of a [`VersionTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructTable {
    /// [`StructSpec::name`].
    pub name: &'static str,
    /// `None` if this Go version has no such struct.
    pub size: Option<u64>,
    /// ([`FieldSpec::name`], offset), one per listed field.
    pub fields: &'static [(&'static str, Option<u64>)],
}

impl VersionTable {
    /// The same data as an owned [`RawLayout`], to compare with DWARF.
    pub fn to_raw(&self) -> RawLayout {
        RawLayout {
            structs: self
                .structs
                .iter()
                .map(|s| RawStruct {
                    name: s.name,
                    size: s.size,
                    fields: s.fields.to_vec(),
                })
                .collect(),
        }
    }

    fn find(&self, strukt: &str) -> Option<&StructTable> {
        self.structs.iter().find(|s| s.name == strukt)
    }
}

impl LayoutSource for VersionTable {
    fn describe(&self) -> String {
        format!(
            "built-in layout of Go 1.{} ({})",
            self.minor, self.toolchain
        )
    }
    fn struct_size(&self, strukt: &str) -> Option<u64> {
        self.find(strukt)?.size
    }
    fn field_offset(&self, strukt: &str, field: &str) -> Option<u64> {
        let s = self.find(strukt)?;
        s.fields.iter().find(|(n, _)| *n == field)?.1
    }
}

/// Field offsets of `runtime.g` (runtime/runtime2.go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GLayout {
    /// `unsafe.Sizeof(g{})`.
    pub size: u64,
    /// `g.stack.lo`; `g.stack.hi` is 8 bytes later.
    pub stack: u64,
    /// `g.m`: the M running the goroutine, 0 if none.
    pub m: u64,
    /// `g.sched`, a `gobuf`.
    pub sched: u64,
    /// `g.syscallsp`: the SP saved on entering a system call or cgo call.
    pub syscallsp: u64,
    /// `g.syscallpc`.
    pub syscallpc: u64,
    /// Go 1.23+.
    pub syscallbp: Option<u64>,
    /// `g.atomicstatus` (4 bytes).
    pub atomicstatus: u64,
    /// `g.goid`.
    pub goid: u64,
    /// `g.waitsince` (nanotime; set by the GC).
    pub waitsince: u64,
    /// `g.waitreason` (1 byte).
    pub waitreason: u64,
    /// `g.lockedm`: non-zero when locked to its thread.
    pub lockedm: u64,
    /// Go 1.21+.
    pub parent_goid: Option<u64>,
    /// `g.gopc`: pc of the `go` statement.
    pub gopc: u64,
    /// `g.startpc`: entry of the goroutine's function.
    pub startpc: u64,
    /// `g.labels`: pprof labels.
    pub labels: u64,
    /// `g.trackingSeq` (Go 1.17+): incremented each time the goroutine stops
    /// running (runtime/proc.go `casgstatus`).
    pub tracking_seq: Option<u64>,
    /// `g.waiting`: the `sudog` of a goroutine blocked on a channel (read
    /// only by `gospy summary`, outside [`Layout::g_read_len`]).
    pub waiting: Option<u64>,
}

/// Field offsets of `runtime.sudog` (runtime/runtime2.go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SudogLayout {
    /// `unsafe.Sizeof(sudog{})`.
    pub size: Option<u64>,
    /// `sudog.c`: the `*hchan` waited on.
    pub c: Option<u64>,
}

/// Field offsets of `runtime.gobuf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GobufLayout {
    /// `gobuf.sp`.
    pub sp: u64,
    /// `gobuf.pc`.
    pub pc: u64,
    /// `gobuf.bp`.
    pub bp: u64,
}

/// Field offsets of `runtime.m`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MLayout {
    /// `unsafe.Sizeof(m{})`.
    pub size: u64,
    /// `m.g0`: the scheduling goroutine.
    pub g0: u64,
    /// The Linux thread id, set in `minit` (runtime/os_linux.go).
    pub procid: u64,
    /// `m.gsignal`: the signal-handling goroutine.
    pub gsignal: u64,
    /// `m.curg`: the user goroutine it runs.
    pub curg: u64,
    /// `m.p`.
    pub p: u64,
    /// `m.id`.
    pub id: u64,
    /// `m.alllink`: next in `runtime.allm`.
    pub alllink: u64,
    /// `m.lockedg`.
    pub lockedg: u64,
    /// `m.incgo` (1 byte).
    pub incgo: u64,
    /// `m.vdsoSP`.
    pub vdso_sp: u64,
    /// `m.vdsoPC`.
    pub vdso_pc: u64,
    /// `m.createstack`: the return pcs of the call that created the M
    /// (`[32]uintptr`); optional so that it never stops `dump`.
    pub createstack: Option<u64>,
}

/// Field offsets of `runtime.moduledata` that gospy needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuledataLayout {
    /// `pcHeader` (Go 1.16+); before that the first field is `pclntable []byte`.
    pub pc_header: Option<u64>,
    /// `moduledata.text`.
    pub text: u64,
    /// `moduledata.etext`.
    pub etext: u64,
    /// `gofunc` (Go 1.18+): base of funcdata offsets.
    pub gofunc: Option<u64>,
    /// `moduledata.types`: start of the type descriptors, the base of
    /// `nameOff`/`typeOff` (runtime/type.go `resolveNameOff`).
    pub types: Option<u64>,
}

/// Field offsets of `runtime.p` (runtime/runtime2.go), the elements of
/// `runtime.allp`. For `gospy summary`: all optional, so that a change here
/// never stops `dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PLayout {
    /// `unsafe.Sizeof(p{})`.
    pub size: Option<u64>,
    /// `p.id` (int32).
    pub id: Option<u64>,
    /// `p.status` (uint32: `_Pidle`, `_Prunning`, ...).
    pub status: Option<u64>,
    /// `p.schedtick` (uint32).
    pub schedtick: Option<u64>,
    /// `p.syscalltick` (uint32).
    pub syscalltick: Option<u64>,
    /// `p.m`: the M it is attached to, 0 if idle.
    pub m: Option<u64>,
    /// `p.mcache`.
    pub mcache: Option<u64>,
    /// `p.runqhead` (uint32).
    pub runqhead: Option<u64>,
    /// `p.runqtail` (uint32).
    pub runqtail: Option<u64>,
    /// `p.runq`, `[256]guintptr`.
    pub runq: Option<u64>,
    /// `p.runnext`.
    pub runnext: Option<u64>,
}

/// Field offsets of `runtime.schedt`, the type of `runtime.sched`
/// (runtime/runtime2.go). Counters are int32/uint32 (atomic wrappers of
/// the same size from Go 1.21) unless noted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedtLayout {
    /// `unsafe.Sizeof(schedt{})`.
    pub size: Option<u64>,
    /// `goidgen` (uint64): last goroutine id handed out.
    pub goidgen: Option<u64>,
    /// `lastpoll` (int64).
    pub lastpoll: Option<u64>,
    /// `midle`: idle Ms.
    pub midle: Option<u64>,
    /// `nmidle`.
    pub nmidle: Option<u64>,
    /// `nmidlelocked`.
    pub nmidlelocked: Option<u64>,
    /// `mnext` (int64): Ms created so far.
    pub mnext: Option<u64>,
    /// `maxmcount`.
    pub maxmcount: Option<u64>,
    /// `nmsys`.
    pub nmsys: Option<u64>,
    /// `nmfreed` (int64).
    pub nmfreed: Option<u64>,
    /// `ngsys`: system goroutines.
    pub ngsys: Option<u64>,
    /// `nGsyscallNoP` (Go 1.26+).
    pub n_gsyscall_no_p: Option<u64>,
    /// `pidle`: idle Ps.
    pub pidle: Option<u64>,
    /// `npidle`.
    pub npidle: Option<u64>,
    /// `nmspinning`.
    pub nmspinning: Option<u64>,
    /// `needspinning` (Go 1.21+).
    pub needspinning: Option<u64>,
    /// `runq`, the global run queue (`gQueue`).
    pub runq: Option<u64>,
    /// The global run queue's length (int32): `runqsize` up to Go 1.25,
    /// `runq.size` from 1.26.
    pub runq_size: Option<u64>,
    /// `gcwaiting` (uint32; 1-byte `atomic.Bool` from Go 1.21).
    pub gcwaiting: Option<u64>,
    /// `stopwait`.
    pub stopwait: Option<u64>,
    /// `sysmonwait` (uint32; 1-byte `atomic.Bool` from Go 1.21).
    pub sysmonwait: Option<u64>,
    /// `profilehz`.
    pub profilehz: Option<u64>,
    /// `totaltime` (int64): ∫gomaxprocs dt.
    pub totaltime: Option<u64>,
    /// `idleTime` (int64, Go 1.21+).
    pub idle_time: Option<u64>,
    /// `totalMutexWaitTime` (int64, Go 1.21+).
    pub total_mutex_wait_time: Option<u64>,
}

/// Field offsets of `runtime.mstats`, the type of `runtime.memstats`
/// (runtime/mstats.go). Up to Go 1.15 the heap figures are here; later
/// versions keep them in [`HeapStatsDeltaLayout`] shards and
/// [`GcControllerLayout`]. All uint64 unless noted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MstatsLayout {
    /// `unsafe.Sizeof(mstats{})`.
    pub size: Option<u64>,
    /// `nmalloc` (≤1.15).
    pub nmalloc: Option<u64>,
    /// `nfree` (≤1.15).
    pub nfree: Option<u64>,
    /// `heap_alloc` (≤1.15).
    pub heap_alloc: Option<u64>,
    /// `heap_sys` (≤1.15).
    pub heap_sys: Option<u64>,
    /// `heap_idle` (≤1.15).
    pub heap_idle: Option<u64>,
    /// `heap_inuse` (≤1.15).
    pub heap_inuse: Option<u64>,
    /// `heap_released` (≤1.15).
    pub heap_released: Option<u64>,
    /// `heap_objects` (≤1.15).
    pub heap_objects: Option<u64>,
    /// `next_gc` (≤1.15): the heap goal.
    pub next_gc: Option<u64>,
    /// `heap_live` (≤1.15).
    pub heap_live: Option<u64>,
    /// `heap_marked` (≤1.15).
    pub heap_marked: Option<u64>,
    /// `tinyallocs` (≤1.15).
    pub tinyallocs: Option<u64>,
    /// `stacks_sys`.
    pub stacks_sys: Option<u64>,
    /// `mspan_sys`.
    pub mspan_sys: Option<u64>,
    /// `mcache_sys`.
    pub mcache_sys: Option<u64>,
    /// `buckhash_sys`.
    pub buckhash_sys: Option<u64>,
    /// `gc_sys`, renamed `gcMiscSys` later.
    pub gc_sys: Option<u64>,
    /// `other_sys`.
    pub other_sys: Option<u64>,
    /// `last_gc_unix`: wall-clock ns.
    pub last_gc_unix: Option<u64>,
    /// `pause_total_ns`.
    pub pause_total_ns: Option<u64>,
    /// `pause_ns`, a `[256]uint64` ring indexed by `(numgc+255)%256`.
    pub pause_ns: Option<u64>,
    /// `numgc` (uint32).
    pub numgc: Option<u64>,
    /// `numforcedgc` (uint32).
    pub numforcedgc: Option<u64>,
    /// `gc_cpu_fraction` (float64).
    pub gc_cpu_fraction: Option<u64>,
    /// `last_gc_nanotime`: monotonic ns.
    pub last_gc_nanotime: Option<u64>,
    /// `heapStats.stats`, a `[3]heapStatsDelta` (Go 1.16+): summing the
    /// three shards is the runtime's `unsafeRead`.
    pub heap_stats: Option<u64>,
    /// `heapStats.gen` (uint32, Go 1.16+).
    pub heap_stats_gen: Option<u64>,
}

/// Field offsets of `runtime.heapStatsDelta` (Go 1.16+, runtime/mstats.go).
/// All int64/uint64; the `*Count` arrays have one entry per size class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeapStatsDeltaLayout {
    /// `unsafe.Sizeof(heapStatsDelta{})`: the stride of `heapStats.stats`.
    pub size: Option<u64>,
    /// `inHeap`.
    pub in_heap: Option<u64>,
    /// `inStacks`.
    pub in_stacks: Option<u64>,
    /// `tinyAllocCount`.
    pub tiny_alloc_count: Option<u64>,
    /// `largeAlloc` (bytes).
    pub large_alloc: Option<u64>,
    /// `largeAllocCount`.
    pub large_alloc_count: Option<u64>,
    /// `smallAllocCount`, `[NumSizeClasses]uint64`; it ends at `largeFree`.
    pub small_alloc_count: Option<u64>,
    /// `largeFree` (bytes).
    pub large_free: Option<u64>,
    /// `largeFreeCount`.
    pub large_free_count: Option<u64>,
    /// `smallFreeCount`, `[NumSizeClasses]uint64`.
    pub small_free_count: Option<u64>,
}

/// Field offsets of `runtime.gcControllerState`, the type of
/// `runtime.gcController` (runtime/mgcpacer.go), where the heap figures
/// moved from `mstats` (all present from Go 1.19). 8 bytes each unless
/// noted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcControllerLayout {
    /// `unsafe.Sizeof(gcControllerState{})`.
    pub size: Option<u64>,
    /// `gcPercent` (int32): GOGC.
    pub gc_percent: Option<u64>,
    /// `memoryLimit` (int64): GOMEMLIMIT.
    pub memory_limit: Option<u64>,
    /// `heapMinimum`.
    pub heap_minimum: Option<u64>,
    /// `gcPercentHeapGoal`: the heap goal from GOGC alone.
    pub gc_percent_heap_goal: Option<u64>,
    /// `heapLive`.
    pub heap_live: Option<u64>,
    /// `heapScan`.
    pub heap_scan: Option<u64>,
    /// `heapMarked`.
    pub heap_marked: Option<u64>,
    /// `heapInUse`.
    pub heap_in_use: Option<u64>,
    /// `heapReleased`.
    pub heap_released: Option<u64>,
    /// `heapFree`.
    pub heap_free: Option<u64>,
    /// `totalAlloc`.
    pub total_alloc: Option<u64>,
    /// `totalFree`.
    pub total_free: Option<u64>,
    /// `mappedReady`.
    pub mapped_ready: Option<u64>,
}

/// Field offsets of `runtime.hchan` (runtime/chan.go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HchanLayout {
    /// `unsafe.Sizeof(hchan{})`.
    pub size: Option<u64>,
    /// `qcount` (uint): elements queued.
    pub qcount: Option<u64>,
    /// `dataqsiz` (uint): buffer capacity.
    pub dataqsiz: Option<u64>,
    /// `buf`.
    pub buf: Option<u64>,
    /// `elemsize` (uint16).
    pub elemsize: Option<u64>,
    /// `closed` (uint32).
    pub closed: Option<u64>,
    /// `elemtype`, a `*_type`.
    pub elemtype: Option<u64>,
    /// `sendx` (uint).
    pub sendx: Option<u64>,
    /// `recvx` (uint).
    pub recvx: Option<u64>,
    /// `recvq`, a `waitq{first, last *sudog}`.
    pub recvq: Option<u64>,
    /// `sendq`, a `waitq`.
    pub sendq: Option<u64>,
}

/// Field offsets of `runtime._type` (`internal/abi.Type` from Go 1.21).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeLayout {
    /// `unsafe.Sizeof(_type{})`: where the kind-specific part starts.
    pub size: Option<u64>,
    /// `size` / `Size_` (uintptr): the described type's size.
    pub type_size: Option<u64>,
    /// `ptrdata` / `PtrBytes` (uintptr).
    pub ptrdata: Option<u64>,
    /// `hash` / `Hash` (uint32).
    pub hash: Option<u64>,
    /// `tflag` / `TFlag` (uint8).
    pub tflag: Option<u64>,
    /// `kind` / `Kind_` (uint8).
    pub kind: Option<u64>,
    /// `str` / `Str` (int32 offset of the name).
    pub str: Option<u64>,
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
    /// `runtime.allp`, a `[]*p`.
    pub allp: Option<u64>,
    /// `runtime.sched`, a `schedt`.
    pub sched: Option<u64>,
    /// `runtime.gomaxprocs`, an `int32`.
    pub gomaxprocs: Option<u64>,
    /// `runtime.ncpu` (`runtime.numCPUStartup` from Go 1.26), an `int32`.
    pub ncpu: Option<u64>,
    /// `runtime.mheap_`.
    pub mheap: Option<u64>,
    /// `runtime.memstats`.
    pub memstats: Option<u64>,
    /// `runtime.gcController`.
    pub gc_controller: Option<u64>,
    /// `runtime.work` (GC phase times, pause figures).
    pub work: Option<u64>,
    /// The runtime's own profiles.
    pub profiles: ProfileGlobals,
}

/// Link-time addresses of the globals of the runtime's own memory, block
/// and mutex profiles (runtime/mprof.go, runtime/runtime.go); `None` where
/// the binary has no such global or it could not be found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileGlobals {
    /// `runtime.mbuckets`: the newest memory profile bucket, a `*bucket`
    /// heading the list linked by `bucket.allnext`.
    pub mbuckets: Option<u64>,
    /// `runtime.bbuckets`: the block profile's buckets, likewise.
    pub bbuckets: Option<u64>,
    /// `runtime.xbuckets`: the mutex profile's buckets, likewise.
    pub xbuckets: Option<u64>,
    /// The heap profile cycle: `runtime.mProfCycle` (Go 1.19+, a `uint32`
    /// holding cycle << 1 | flushed) or `runtime.mProf` (before: a struct
    /// of `cycle uint32` then `flushed bool`).
    pub mprof_cycle: Option<u64>,
    /// `runtime.MemProfileRate`, an `int`.
    pub mem_profile_rate: Option<u64>,
    /// `runtime.disableMemoryProfiling`, a `bool` (Go 1.16+).
    pub disable_memory_profiling: Option<u64>,
    /// `runtime.blockprofilerate`, a `uint64` (in CPU ticks).
    pub block_profile_rate: Option<u64>,
    /// `runtime.mutexprofilerate`, a `uint64`.
    pub mutex_profile_rate: Option<u64>,
    /// `runtime.ticks`: its `val` (ticks per second once measured) is its
    /// last 8 bytes.
    pub ticks: Option<u64>,
}

/// Everything gospy needs to know about where runtime data lives in one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// `runtime.g`.
    pub g: GLayout,
    /// `runtime.gobuf`.
    pub gobuf: GobufLayout,
    /// `runtime.m`.
    pub m: MLayout,
    /// `runtime.moduledata`.
    pub moduledata: ModuledataLayout,
    /// `runtime.p`.
    pub p: PLayout,
    /// `runtime.schedt`.
    pub sched: SchedtLayout,
    /// `runtime.mstats`.
    pub memstats: MstatsLayout,
    /// `runtime.heapStatsDelta`.
    pub heap_stats_delta: HeapStatsDeltaLayout,
    /// `runtime.gcControllerState`.
    pub gc_controller: GcControllerLayout,
    /// `runtime.hchan`.
    pub hchan: HchanLayout,
    /// `runtime.sudog`.
    pub sudog: SudogLayout,
    /// `runtime._type`.
    pub rtype: TypeLayout,
    /// Addresses of the globals (zero in a layout built from the tables).
    pub globals: Globals,
}

/// Reads a [`LayoutSource`] for [`Layout::from_source`], refusing anything
/// not listed in [`STRUCTS`] and offsets outside their struct.
struct Reader<'a> {
    src: &'a dyn LayoutSource,
}

impl Reader<'_> {
    fn listed(&self, strukt: &str, field: &str) -> Result<(), String> {
        match struct_spec(strukt).and_then(|s| s.field(field)) {
            Some(_) => Ok(()),
            // A programming error, caught by the unit tests; an error rather
            // than a panic all the same.
            None => Err(format!(
                "internal error: {strukt}.{field} is not listed in layout::STRUCTS"
            )),
        }
    }

    fn size(&self, strukt: &str) -> Option<u64> {
        self.src.struct_size(strukt)
    }

    fn req_size(&self, strukt: &str) -> Result<u64, String> {
        self.size(strukt).ok_or_else(|| {
            format!(
                "{}: struct type {strukt} not found (unsupported Go version?)",
                self.src.describe()
            )
        })
    }

    fn opt(&self, strukt: &str, field: &str) -> Result<Option<u64>, String> {
        self.listed(strukt, field)?;
        let Some(off) = self.src.field_offset(strukt, field) else {
            return Ok(None);
        };
        // A sane offset lies inside the struct; this also keeps later
        // `offset + len` arithmetic far from overflow on malformed input.
        match self.size(strukt) {
            Some(size) if off < size => Ok(Some(off)),
            size => Err(format!(
                "{}: field {strukt}.{field} at offset {off} lies outside the struct (size {size:?})",
                self.src.describe()
            )),
        }
    }

    fn req(&self, strukt: &str, field: &str) -> Result<u64, String> {
        match self.opt(strukt, field)? {
            Some(off) => Ok(off),
            None if self.size(strukt).is_none() => Err(format!(
                "{}: struct type {strukt} not found (unsupported Go version?)",
                self.src.describe()
            )),
            None => Err(format!(
                "{}: struct {strukt} has no field `{field}` (unsupported Go version?)",
                self.src.describe()
            )),
        }
    }
}

impl Layout {
    /// Builds the layout (globals left zero) from `src`: the single path
    /// from DWARF or from a built-in table to a `Layout`. Fails if a field
    /// gospy cannot work without is missing or an offset is implausible.
    pub fn from_source(src: &dyn LayoutSource) -> Result<Layout, String> {
        let r = Reader { src };
        Ok(Layout {
            g: GLayout {
                size: r.req_size(G)?,
                stack: r.req(G, "stack.lo")?,
                m: r.req(G, "m")?,
                sched: r.req(G, "sched")?,
                syscallsp: r.req(G, "syscallsp")?,
                syscallpc: r.req(G, "syscallpc")?,
                syscallbp: r.opt(G, "syscallbp")?,
                atomicstatus: r.req(G, "atomicstatus")?,
                goid: r.req(G, "goid")?,
                waitsince: r.req(G, "waitsince")?,
                waitreason: r.req(G, "waitreason")?,
                lockedm: r.req(G, "lockedm")?,
                parent_goid: r.opt(G, "parentGoid")?,
                gopc: r.req(G, "gopc")?,
                startpc: r.req(G, "startpc")?,
                labels: r.req(G, "labels")?,
                tracking_seq: r.opt(G, "trackingSeq")?,
                waiting: r.opt(G, "waiting")?,
            },
            gobuf: GobufLayout {
                sp: r.req(GOBUF, "sp")?,
                pc: r.req(GOBUF, "pc")?,
                bp: r.req(GOBUF, "bp")?,
            },
            m: MLayout {
                size: r.req_size(M)?,
                g0: r.req(M, "g0")?,
                procid: r.req(M, "procid")?,
                gsignal: r.req(M, "gsignal")?,
                curg: r.req(M, "curg")?,
                p: r.req(M, "p")?,
                id: r.req(M, "id")?,
                alllink: r.req(M, "alllink")?,
                lockedg: r.req(M, "lockedg")?,
                incgo: r.req(M, "incgo")?,
                vdso_sp: r.req(M, "vdsoSP")?,
                vdso_pc: r.req(M, "vdsoPC")?,
                createstack: r.opt(M, "createstack")?,
            },
            moduledata: ModuledataLayout {
                pc_header: r.opt(MODULEDATA, "pcHeader")?,
                text: r.req(MODULEDATA, "text")?,
                etext: r.req(MODULEDATA, "etext")?,
                gofunc: r.opt(MODULEDATA, "gofunc")?,
                types: r.opt(MODULEDATA, "types")?,
            },
            p: PLayout {
                size: r.size(P),
                id: r.opt(P, "id")?,
                status: r.opt(P, "status")?,
                schedtick: r.opt(P, "schedtick")?,
                syscalltick: r.opt(P, "syscalltick")?,
                m: r.opt(P, "m")?,
                mcache: r.opt(P, "mcache")?,
                runqhead: r.opt(P, "runqhead")?,
                runqtail: r.opt(P, "runqtail")?,
                runq: r.opt(P, "runq")?,
                runnext: r.opt(P, "runnext")?,
            },
            sched: SchedtLayout {
                size: r.size(SCHEDT),
                goidgen: r.opt(SCHEDT, "goidgen")?,
                lastpoll: r.opt(SCHEDT, "lastpoll")?,
                midle: r.opt(SCHEDT, "midle")?,
                nmidle: r.opt(SCHEDT, "nmidle")?,
                nmidlelocked: r.opt(SCHEDT, "nmidlelocked")?,
                mnext: r.opt(SCHEDT, "mnext")?,
                maxmcount: r.opt(SCHEDT, "maxmcount")?,
                nmsys: r.opt(SCHEDT, "nmsys")?,
                nmfreed: r.opt(SCHEDT, "nmfreed")?,
                ngsys: r.opt(SCHEDT, "ngsys")?,
                n_gsyscall_no_p: r.opt(SCHEDT, "nGsyscallNoP")?,
                pidle: r.opt(SCHEDT, "pidle")?,
                npidle: r.opt(SCHEDT, "npidle")?,
                nmspinning: r.opt(SCHEDT, "nmspinning")?,
                needspinning: r.opt(SCHEDT, "needspinning")?,
                runq: r.opt(SCHEDT, "runq")?,
                runq_size: r.opt(SCHEDT, "runqsize")?,
                gcwaiting: r.opt(SCHEDT, "gcwaiting")?,
                stopwait: r.opt(SCHEDT, "stopwait")?,
                sysmonwait: r.opt(SCHEDT, "sysmonwait")?,
                profilehz: r.opt(SCHEDT, "profilehz")?,
                totaltime: r.opt(SCHEDT, "totaltime")?,
                idle_time: r.opt(SCHEDT, "idleTime")?,
                total_mutex_wait_time: r.opt(SCHEDT, "totalMutexWaitTime")?,
            },
            memstats: MstatsLayout {
                size: r.size(MSTATS),
                nmalloc: r.opt(MSTATS, "nmalloc")?,
                nfree: r.opt(MSTATS, "nfree")?,
                heap_alloc: r.opt(MSTATS, "heap_alloc")?,
                heap_sys: r.opt(MSTATS, "heap_sys")?,
                heap_idle: r.opt(MSTATS, "heap_idle")?,
                heap_inuse: r.opt(MSTATS, "heap_inuse")?,
                heap_released: r.opt(MSTATS, "heap_released")?,
                heap_objects: r.opt(MSTATS, "heap_objects")?,
                next_gc: r.opt(MSTATS, "next_gc")?,
                heap_live: r.opt(MSTATS, "heap_live")?,
                heap_marked: r.opt(MSTATS, "heap_marked")?,
                tinyallocs: r.opt(MSTATS, "tinyallocs")?,
                stacks_sys: r.opt(MSTATS, "stacks_sys")?,
                mspan_sys: r.opt(MSTATS, "mspan_sys")?,
                mcache_sys: r.opt(MSTATS, "mcache_sys")?,
                buckhash_sys: r.opt(MSTATS, "buckhash_sys")?,
                gc_sys: r.opt(MSTATS, "gc_sys")?,
                other_sys: r.opt(MSTATS, "other_sys")?,
                last_gc_unix: r.opt(MSTATS, "last_gc_unix")?,
                pause_total_ns: r.opt(MSTATS, "pause_total_ns")?,
                pause_ns: r.opt(MSTATS, "pause_ns")?,
                numgc: r.opt(MSTATS, "numgc")?,
                numforcedgc: r.opt(MSTATS, "numforcedgc")?,
                gc_cpu_fraction: r.opt(MSTATS, "gc_cpu_fraction")?,
                last_gc_nanotime: r.opt(MSTATS, "last_gc_nanotime")?,
                heap_stats: r.opt(MSTATS, "heapStats.stats")?,
                heap_stats_gen: r.opt(MSTATS, "heapStats.gen")?,
            },
            heap_stats_delta: HeapStatsDeltaLayout {
                size: r.size(HEAP_STATS_DELTA),
                in_heap: r.opt(HEAP_STATS_DELTA, "inHeap")?,
                in_stacks: r.opt(HEAP_STATS_DELTA, "inStacks")?,
                tiny_alloc_count: r.opt(HEAP_STATS_DELTA, "tinyAllocCount")?,
                large_alloc: r.opt(HEAP_STATS_DELTA, "largeAlloc")?,
                large_alloc_count: r.opt(HEAP_STATS_DELTA, "largeAllocCount")?,
                small_alloc_count: r.opt(HEAP_STATS_DELTA, "smallAllocCount")?,
                large_free: r.opt(HEAP_STATS_DELTA, "largeFree")?,
                large_free_count: r.opt(HEAP_STATS_DELTA, "largeFreeCount")?,
                small_free_count: r.opt(HEAP_STATS_DELTA, "smallFreeCount")?,
            },
            gc_controller: GcControllerLayout {
                size: r.size(GC_CONTROLLER),
                gc_percent: r.opt(GC_CONTROLLER, "gcPercent")?,
                memory_limit: r.opt(GC_CONTROLLER, "memoryLimit")?,
                heap_minimum: r.opt(GC_CONTROLLER, "heapMinimum")?,
                gc_percent_heap_goal: r.opt(GC_CONTROLLER, "gcPercentHeapGoal")?,
                heap_live: r.opt(GC_CONTROLLER, "heapLive")?,
                heap_scan: r.opt(GC_CONTROLLER, "heapScan")?,
                heap_marked: r.opt(GC_CONTROLLER, "heapMarked")?,
                heap_in_use: r.opt(GC_CONTROLLER, "heapInUse")?,
                heap_released: r.opt(GC_CONTROLLER, "heapReleased")?,
                heap_free: r.opt(GC_CONTROLLER, "heapFree")?,
                total_alloc: r.opt(GC_CONTROLLER, "totalAlloc")?,
                total_free: r.opt(GC_CONTROLLER, "totalFree")?,
                mapped_ready: r.opt(GC_CONTROLLER, "mappedReady")?,
            },
            hchan: HchanLayout {
                size: r.size(HCHAN),
                qcount: r.opt(HCHAN, "qcount")?,
                dataqsiz: r.opt(HCHAN, "dataqsiz")?,
                buf: r.opt(HCHAN, "buf")?,
                elemsize: r.opt(HCHAN, "elemsize")?,
                closed: r.opt(HCHAN, "closed")?,
                elemtype: r.opt(HCHAN, "elemtype")?,
                sendx: r.opt(HCHAN, "sendx")?,
                recvx: r.opt(HCHAN, "recvx")?,
                recvq: r.opt(HCHAN, "recvq")?,
                sendq: r.opt(HCHAN, "sendq")?,
            },
            sudog: SudogLayout {
                size: r.size(SUDOG),
                c: r.opt(SUDOG, "c")?,
            },
            rtype: TypeLayout {
                size: r.size(TYPE),
                type_size: r.opt(TYPE, "size")?,
                ptrdata: r.opt(TYPE, "ptrdata")?,
                hash: r.opt(TYPE, "hash")?,
                tflag: r.opt(TYPE, "tflag")?,
                kind: r.opt(TYPE, "kind")?,
                str: r.opt(TYPE, "str")?,
            },
            globals: Globals::default(),
        })
    }

    /// The built-in layout for a target of Go `version` (for binaries
    /// without DWARF), and how well it matches: see [`LayoutMatch::choose`]
    /// for which table serves which version. Globals are left zero. Fails
    /// when no table applies ([`LayoutMatch::None`]), saying why.
    ///
    /// `GOEXPERIMENT`s in the version string are ignored: the tables are of
    /// default builds, and an experiment that changes runtime structs shows
    /// up as implausible values, which callers validate anyway.
    pub fn for_version(version: &GoVersion) -> Result<(Layout, LayoutMatch), String> {
        let choice = LayoutMatch::choose(version);
        let minor = match &choice {
            LayoutMatch::Exact { minor } => *minor,
            LayoutMatch::Nearest { known, .. } => *known,
            LayoutMatch::None { reason } => {
                return Err(format!(
                    "no built-in runtime layout fits {version}: {reason}"
                ))
            }
        };
        let table = tables::TABLES
            .iter()
            .find(|t| t.minor == minor)
            .ok_or_else(|| format!("internal error: no built-in table for Go 1.{minor}"))?;
        Ok((Layout::from_source(table)?, choice))
    }

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

/// How well the built-in layout chosen for a Go version fits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutMatch {
    /// Generated from a toolchain of the target's own minor version, Go
    /// 1.`minor`.
    Exact {
        /// The target's (and the table's) minor version.
        minor: u32,
    },
    /// There is no table for Go 1.`wanted`; the one of Go 1.`known` is used.
    /// What is read with it must be validated (goids, statuses, stack
    /// bounds), and the user told when it does not fit.
    Nearest {
        /// The target's minor version.
        wanted: u32,
        /// The minor version of the table used.
        known: u32,
    },
    /// No table applies.
    None {
        /// Why, for the user.
        reason: String,
    },
}

/// Versions without a table whose nearest lower table is the wrong choice,
/// and the table to use instead, from what is known of Go's sources (see
/// [`LayoutMatch::choose`]).
const EXCEPTIONS: &[(u32, u32)] = &[(17, 19), (18, 19)];

impl LayoutMatch {
    /// Chooses the table for a target of Go `version` among the built-in
    /// ones ([`tables::TABLES`]):
    ///
    /// * a table of the same minor version: [`LayoutMatch::Exact`];
    /// * older than the oldest table (Go 1.15), or not Go 1: none;
    /// * otherwise the nearest lower table ([`LayoutMatch::Nearest`]): for
    ///   versions between tables (1.20 uses 1.19) and newer than the newest
    ///   (1.28 uses 1.27), on the bet that a new release changes little,
    ///   which the caller's validation checks. Exceptions, from Go's
    ///   sources history (runtime/runtime2.go; shared notes §3.2-§3.10):
    ///   * 1.16 uses 1.15 (the rule): its `g`, `gobuf` and `m` are 1.15's.
    ///     Its `moduledata` already has 1.19's `pcHeader` prefix, but gospy
    ///     reads `moduledata.text`/`gofunc` only for Go 1.18+ pclntabs.
    ///   * 1.17 and 1.18 use 1.19: 1.17 added `g.tracking`, `trackingSeq`,
    ///     `runnableStamp` and `runnableTime` before `lockedm`, moving
    ///     `lockedm`, `gopc`, `startpc` and `labels` 16 bytes up to exactly
    ///     where 1.19 has them (eBPF profilers' label offsets agree: 344
    ///     up to 1.16, 360 for 1.17-1.20); `m` and `gobuf` are the same in
    ///     1.15 and 1.19, and 1.18's `moduledata` gained `gofunc` like 1.19.
    ///
    ///   Go 1.25 has its own table (from a toolchain installed from PyPI):
    ///   it removed `gobuf.ret` and 1.26 then added fields to `g` and `m`,
    ///   so neither neighbour fits it.
    pub fn choose(version: &GoVersion) -> LayoutMatch {
        let known: Vec<u32> = tables::TABLES.iter().map(|t| t.minor).collect();
        choose_among(version.major, version.minor, &known)
    }
}

/// [`LayoutMatch::choose`] among the tables of the minor versions `known`.
fn choose_among(major: u32, minor: u32, known: &[u32]) -> LayoutMatch {
    if major != 1 {
        return LayoutMatch::None {
            reason: format!("gospy knows Go 1 only, not Go {major}"),
        };
    }
    if known.contains(&minor) {
        return LayoutMatch::Exact { minor };
    }
    let Some(&oldest) = known.iter().min() else {
        return LayoutMatch::None {
            reason: "no built-in tables".to_string(),
        };
    };
    if minor < oldest {
        return LayoutMatch::None {
            reason: format!("gospy supports Go 1.{oldest} and later"),
        };
    }
    if let Some(&(_, other)) = EXCEPTIONS
        .iter()
        .find(|&&(m, other)| m == minor && known.contains(&other))
    {
        return LayoutMatch::Nearest {
            wanted: minor,
            known: other,
        };
    }
    match known.iter().copied().filter(|&k| k < minor).max() {
        Some(k) => LayoutMatch::Nearest {
            wanted: minor,
            known: k,
        },
        None => LayoutMatch::None {
            reason: format!("gospy supports Go 1.{oldest} and later"),
        },
    }
}

impl fmt::Display for LayoutMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutMatch::Exact { minor } => write!(f, "built-in layout of Go 1.{minor}"),
            LayoutMatch::Nearest { wanted, known } => write!(
                f,
                "no built-in layout for Go 1.{wanted}; using the nearest known, Go 1.{known}"
            ),
            LayoutMatch::None { reason } => f.write_str(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn nearest(wanted: u32, known: u32) -> LayoutMatch {
        LayoutMatch::Nearest { wanted, known }
    }

    #[test]
    fn nearest_version_choice() {
        let known = [15, 19, 21, 22, 23, 24, 25, 26, 27];
        let c = |minor| choose_among(1, minor, &known);
        assert_eq!(c(25), LayoutMatch::Exact { minor: 25 });
        assert_eq!(c(24), LayoutMatch::Exact { minor: 24 });
        assert_eq!(c(15), LayoutMatch::Exact { minor: 15 });
        assert_eq!(c(16), nearest(16, 15));
        assert_eq!(c(17), nearest(17, 19));
        assert_eq!(c(18), nearest(18, 19));
        assert_eq!(c(20), nearest(20, 19));
        assert_eq!(c(28), nearest(28, 27));
        assert_eq!(c(99), nearest(99, 27));
        assert!(matches!(c(14), LayoutMatch::None { reason } if reason.contains("1.15")));
        assert!(matches!(c(0), LayoutMatch::None { .. }));
        assert!(matches!(
            choose_among(2, 0, &known),
            LayoutMatch::None { .. }
        ));
        assert!(matches!(choose_among(1, 24, &[]), LayoutMatch::None { .. }));
        // An exception pointing at a table that does not exist falls back
        // to the rule; a table for a once-missing version wins.
        assert_eq!(choose_among(1, 17, &[15, 21]), nearest(17, 15));
        assert_eq!(choose_among(1, 25, &[24, 26]), nearest(25, 24));
    }

    #[test]
    fn choose_uses_the_real_tables() {
        let v = |s: &str| GoVersion::parse(s).unwrap();
        for t in tables::TABLES {
            let version = v(&format!("go1.{}.3", t.minor));
            assert_eq!(
                LayoutMatch::choose(&version),
                LayoutMatch::Exact { minor: t.minor }
            );
        }
        let newest = tables::TABLES.iter().map(|t| t.minor).max().unwrap();
        let future = v(&format!("go1.{}.1 X:foo", newest + 5));
        let (layout, m) = Layout::for_version(&future).unwrap();
        assert_eq!(m, nearest(newest + 5, newest));
        assert_eq!(layout.globals, Globals::default());
        assert!(Layout::for_version(&v("go1.25.0")).is_ok());
        assert!(Layout::for_version(&v("go1.12.17")).is_err());
    }

    /// The tables hold exactly the structs and fields of STRUCTS, in order,
    /// one per minor version, and each yields a Layout: a stale table (a
    /// field added to STRUCTS without regenerating) fails here.
    #[test]
    fn tables_match_the_list() {
        assert!(!tables::TABLES.is_empty());
        let mut last = 0;
        for t in tables::TABLES {
            assert!(t.minor > last, "tables not sorted by minor version");
            last = t.minor;
            assert!(t.toolchain.starts_with(&format!("go1.{}", t.minor)));
            let names: Vec<_> = t.structs.iter().map(|s| s.name).collect();
            let want: Vec<_> = STRUCTS.iter().map(|s| s.name).collect();
            assert_eq!(names, want, "Go 1.{}: regenerate the tables", t.minor);
            for (s, spec) in t.structs.iter().zip(STRUCTS) {
                let fields: Vec<_> = s.fields.iter().map(|(n, _)| *n).collect();
                let want: Vec<_> = spec.fields.iter().map(|f| f.name).collect();
                assert_eq!(fields, want, "Go 1.{} {}", t.minor, s.name);
                if s.size.is_none() {
                    assert!(s.fields.iter().all(|(_, o)| o.is_none()));
                }
            }
            let layout = Layout::from_source(t).unwrap();
            assert!(layout.g.size > 0 && layout.m.size > 0);
        }
    }

    /// A source answering every listed field with a distinct offset, and
    /// recording what was asked.
    struct Recording {
        asked: RefCell<BTreeSet<(String, String)>>,
        answer: bool,
    }

    impl LayoutSource for Recording {
        fn describe(&self) -> String {
            "test".into()
        }
        fn struct_size(&self, _: &str) -> Option<u64> {
            self.answer.then_some(1 << 20)
        }
        fn field_offset(&self, strukt: &str, field: &str) -> Option<u64> {
            self.asked
                .borrow_mut()
                .insert((strukt.to_string(), field.to_string()));
            self.answer.then_some(8)
        }
    }

    #[test]
    fn from_source_reads_exactly_the_list() {
        let src = Recording {
            asked: RefCell::default(),
            answer: true,
        };
        Layout::from_source(&src).unwrap();
        let listed: BTreeSet<(String, String)> = STRUCTS
            .iter()
            .flat_map(|s| {
                s.fields
                    .iter()
                    .map(|f| (s.name.to_string(), f.name.to_string()))
            })
            .collect();
        assert_eq!(*src.asked.borrow(), listed);
        // Names are unique, so a table lookup by name is unambiguous.
        assert_eq!(
            STRUCTS
                .iter()
                .map(|s| s.name)
                .collect::<BTreeSet<_>>()
                .len(),
            STRUCTS.len()
        );
        for s in STRUCTS {
            let names: BTreeSet<_> = s.fields.iter().map(|f| f.name).collect();
            assert_eq!(names.len(), s.fields.len(), "{}", s.name);
        }
    }

    #[test]
    fn bad_sources_are_errors() {
        let empty = Recording {
            asked: RefCell::default(),
            answer: false,
        };
        let e = Layout::from_source(&empty).unwrap_err();
        assert!(e.contains("runtime.g not found"), "{e}");

        // An offset outside its struct.
        let t = tables::TABLES.last().unwrap();
        let mut raw = t.to_raw();
        let g = raw.structs.iter_mut().find(|s| s.name == G).unwrap();
        g.fields[0].1 = Some(u64::MAX);
        let e = Layout::from_source(&raw).unwrap_err();
        assert!(e.contains("outside the struct"), "{e}");
        // A required field missing.
        let mut raw = t.to_raw();
        let m = raw.structs.iter_mut().find(|s| s.name == M).unwrap();
        m.fields.retain(|(n, _)| *n != "curg");
        let e = Layout::from_source(&raw).unwrap_err();
        assert!(e.contains("runtime.m has no field `curg`"), "{e}");
        // An optional struct missing is fine.
        let mut raw = t.to_raw();
        raw.structs.retain(|s| s.name != HCHAN);
        assert_eq!(
            Layout::from_source(&raw).unwrap().hchan,
            HchanLayout::default()
        );
    }

    /// A few values from shared/docs/go-runtime/offset-tables.md (the
    /// integration test `layout_tables` compares every value it lists).
    #[test]
    fn spot_checks_against_the_notes() {
        let layout = |minor: u32| {
            let t = tables::TABLES.iter().find(|t| t.minor == minor).unwrap();
            Layout::from_source(t).unwrap()
        };
        let l15 = layout(15);
        assert_eq!(
            (l15.g.size, l15.g.labels, l15.g.tracking_seq),
            (376, 344, None)
        );
        assert_eq!(l15.memstats.heap_alloc, Some(48));
        assert_eq!(l15.memstats.heap_stats, None);
        assert_eq!(l15.moduledata.text, 96);
        let l19 = layout(19);
        assert_eq!((l19.g.lockedm, l19.g.labels), (232, 360));
        assert_eq!(l19.gc_controller.heap_live, Some(136));
        let l24 = layout(24);
        assert_eq!((l24.g.syscallbp, l24.g.goid), (Some(128), 160));
        assert_eq!(l24.sched.runq_size, Some(120));
        let l26 = layout(26);
        assert_eq!((l26.m.curg, l26.g_sched_bp()), (184, 96));
        // runqsize became runq.size: sched.runq (128) + gQueue.size (16).
        assert_eq!(l26.sched.runq_size, Some(144));
        assert_eq!(l26.heap_stats_delta.tiny_alloc_count, Some(40));
        let l27 = layout(27);
        assert_eq!(l27.moduledata.gofunc, Some(344));
        assert_eq!(l27.memstats.numgc, Some(7680));
    }
}
