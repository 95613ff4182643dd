//! Finding the runtime's globals in a binary without symbols.
//!
//! A stripped Go executable (`-ldflags=-s -w`, binutils `strip`, every
//! distribution package) has no `.symtab` and no DWARF, but it keeps its
//! pclntab, so the runtime's *functions* can still be found by name. The
//! globals gospy reads (`runtime.allgs`, `allm`, `sched`, ...) are found here
//! by decoding (with the `iced-x86` decoder) the machine code of runtime
//! functions that are linked into every Go program and that use each global
//! in a recognisable way: `runtime.allgadd` appends to the `allgs` slice
//! (three words: pointer, length, capacity), `runtime.mcommoninit` loads
//! `allm` and publishes a new `*m` into it, and so on. Go code reaches its
//! globals through RIP-relative operands (internally and externally linked,
//! PIE or not), sometimes through a register that was loaded with `LEA`;
//! [`analyze_code`] follows both. Every address is checked to lie in a
//! writable segment, and where a second function uses the same global the
//! two must agree. `runtime.firstmoduledata` is found by scanning the data
//! for the word that points at the pclntab ([`find_moduledata`]).
//!
//! Which functions, per global (all of them exist in Go 1.15-1.27, except
//! where a version range is given; the sources are the toolchains' own
//! `src/runtime`):
//!
//! | global | found in | cross-checked in |
//! |---|---|---|
//! | `allgs`, `allglen`, `allgptr` | `allgadd` (proc.go) | `forEachG` (1.16+) / `checkdead` (1.15) |
//! | `allm` | `mcommoninit` (proc.go) | `mexit` (proc.go) |
//! | `sched` | `newproc1` (proc.go: `sched.goidgen` add) | `oneNewExtraM`, `mcommoninit` (`sched.lock`) |
//! | `allp` | `retake` (proc.go) | `checkdead` (proc.go) |
//! | `gomaxprocs` | `stopTheWorldWithSema` (proc.go) | `procresize` (proc.go) |
//! | `ncpu` / `numCPUStartup` | `osinit` (os_linux.go) | `schedinit` (proc.go) |
//! | `mheap_` | `stackpoolalloc` (stack.go) | `(*mcentral).grow` (mcentral.go) |
//! | `gcController` | `gcStart` (mgc.go) | `gcMarkDone` (mgc.go) |
//! | `work` | `putfull` (mgcwork.go) | `trygetfull` (mgcwork.go) |
//! | `memstats` | `(*mheap).grow` (mheap.go, 1.19+), `gcenable` (mgc.go, 1.15) | `(*mcache).releaseAll`, `gcenable` |
//! | `runtimeInitTime` | `main` (proc.go) | none |
//! | `waitReasonStrings` | `waitReason.String` (runtime2.go) | its strings are checked |
//! | g's TLS slot | `stackcheck` (asm_amd64.s) | `morestack` (asm_amd64.s) |
//! | `mbuckets`, `bbuckets`, `xbuckets` | `stkbucket` (mprof.go: the global in the block guarded by `typ == 1`, `typ == 3`, else) | `mProf_FlushLocked`; `BlockProfile`/`blockProfileInternal`, `MutexProfile`/`mutexProfileInternal` where linked |
//! | `mProfCycle` (1.19+) / `mProf` (1.15-1.18) | `mProf_Flush` (mprof.go: CAS of the cycle / `mProf.flushed = true`) | `mProf_Malloc` |
//! | `MemProfileRate` | `allocmcache` (mcache.go, inlined `nextSample`) | `profilealloc` (malloc.go) |
//! | `disableMemoryProfiling` (1.16+) | `schedinit` (proc.go, 1.21+) / `runtime.init` (mprof.go, 1.16-1.20): byte read before the `MemProfileRate` store | none |
//! | `blockprofilerate` | `blockevent` / `blocksampled` (mprof.go) | `chanrecv` (chan.go) |
//! | `mutexprofilerate` | `sync.event` (1.15-1.26) / `mutexevent` (1.27, mprof.go) | `semacquire1` (sema.go) |
//! | `ticks` | `schedinit` calling `ticks.init` (1.22+), `tickspersecond` (runtime.go, 1.15-1.21, linked only where used) | `(*ticksType).init` (1.22+) |
//!
//! All addresses are link-time addresses; nothing here panics or allocates
//! without bound on a corrupt file.

use std::collections::HashSet;
use std::sync::Arc;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};

use super::buildinfo::GoVersion;
use super::elf::ElfImage;
use super::pclntab::Pclntab;
use crate::layout::{Globals, ProfileGlobals};

/// Largest function body decoded. The biggest runtime function used here
/// (`procresize`) is a few KiB; a larger "function" is a corrupt table.
const MAX_FUNC_BYTES: u64 = 256 * 1024;

/// Most candidate pclntab headers tried when scanning a file for one.
const MAX_PCLNTAB_CANDIDATES: usize = 16;

/// Where a register's (or the outgoing-argument slot's) value came from, as
/// far as a straight-line reading of the code can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// Not known.
    Unknown,
    /// The address of a global (`LEA reg, [rip+X]`).
    Addr(u64),
    /// A value loaded from a global (`MOV reg, [X]`).
    Load {
        /// The global's address (plus displacement).
        addr: u64,
        /// Bytes loaded.
        size: u32,
    },
    /// A constant.
    Imm(u64),
    /// The result of a call to this address (0 for an indirect call).
    Ret(u64),
}

/// How an instruction uses a global's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Only reads it (`MOV reg, [X]`, `CMP [X], imm`).
    Read,
    /// Only writes it (`MOV [X], reg`).
    Write,
    /// Reads and writes it (`XCHG`, `LOCK XADD`, `INC`).
    ReadWrite,
    /// Takes its address (`LEA`).
    AddressOf,
}

/// The instruction families the rules distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `MOV`.
    Mov,
    /// `LEA`.
    Lea,
    /// `XCHG` (Go's atomic stores and swaps).
    Xchg,
    /// `XADD` (Go's atomic adds).
    Xadd,
    /// `CMP`.
    Cmp,
    /// Anything else.
    Other,
}

/// One use of a global by one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Address of the instruction.
    pub ip: u64,
    /// Address used (the global plus the operand's displacement).
    pub addr: u64,
    /// Operand size in bytes (0 for `LEA`).
    pub size: u32,
    /// Read, written, both, or address taken.
    pub kind: AccessKind,
    /// The instruction family.
    pub op: Op,
    /// For writes: the value written (the other operand).
    pub value: Value,
    /// The operand also has an index register (`[X + reg*scale]`).
    pub indexed: bool,
}

/// One call instruction and what its first argument looks like under both
/// Go calling conventions: `rax` (ABIInternal, Go 1.17+) and the word at
/// `0(SP)` (ABI0, Go 1.15-1.16 and assembly functions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSite {
    /// Address of the call instruction.
    pub ip: u64,
    /// Target of a direct call.
    pub target: Option<u64>,
    /// RAX before the call.
    pub rax: Value,
    /// The word at 0(SP) before the call.
    pub stack0: Value,
}

/// A load through the FS segment (the thread's TLS block on linux/amd64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsAccess {
    /// Address of the instruction.
    pub ip: u64,
    /// The FS-relative offset, when it is a constant or comes from a
    /// constant or a GOT word that could be read.
    pub offset: Option<FsOffset>,
}

/// How an FS-relative offset was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsOffset {
    /// A constant (`MOV reg, FS:[-8]`, or `MOV rcx, -8; MOV reg, FS:[rcx]`).
    Const(i64),
    /// Loaded from this word (a GOT entry of the initial-exec TLS model).
    FromWord(u64),
}

/// What [`analyze_code`] found in one function body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeRefs {
    /// Uses of globals, in code order.
    pub accesses: Vec<Access>,
    /// Calls, in code order.
    pub calls: Vec<CallSite>,
    /// FS-relative loads, in code order.
    pub fs: Vec<FsAccess>,
    /// Instructions decoded (invalid ones included).
    pub instructions: usize,
    /// Bytes that did not decode to a valid instruction.
    pub invalid: usize,
}

impl CodeRefs {
    /// Every use of exactly `addr`.
    pub fn at(&self, addr: u64) -> impl Iterator<Item = &Access> + '_ {
        self.accesses.iter().filter(move |a| a.addr == addr)
    }

    /// Whether `addr` is used at all.
    pub fn uses(&self, addr: u64) -> bool {
        self.at(addr).next().is_some()
    }

    /// Distinct addresses used, in first-use order.
    pub fn addresses(&self) -> Vec<u64> {
        let mut seen = HashSet::new();
        self.accesses
            .iter()
            .filter(|a| seen.insert(a.addr))
            .map(|a| a.addr)
            .collect()
    }
}

/// Register state of the straight-line reader: 16 GPRs and the word at
/// `0(SP)`.
struct State {
    regs: [Value; 16],
    stack0: Value,
}

impl State {
    fn new() -> State {
        State {
            regs: [Value::Unknown; 16],
            stack0: Value::Unknown,
        }
    }
    fn reset(&mut self) {
        *self = State::new();
    }
    fn get(&self, r: Register) -> Value {
        gpr(r).map_or(Value::Unknown, |i| self.regs[i])
    }
    fn set(&mut self, r: Register, v: Value) {
        if let Some(i) = gpr(r) {
            self.regs[i] = v;
        }
    }
}

/// Index 0-15 of the 64-bit register containing `r`, if it is a GPR.
fn gpr(r: Register) -> Option<usize> {
    let full = r.full_register();
    full.is_gpr64().then(|| full.number()).filter(|&n| n < 16)
}

fn op_of(m: Mnemonic) -> Op {
    match m {
        Mnemonic::Mov => Op::Mov,
        Mnemonic::Lea => Op::Lea,
        Mnemonic::Xchg => Op::Xchg,
        Mnemonic::Xadd => Op::Xadd,
        Mnemonic::Cmp => Op::Cmp,
        _ => Op::Other,
    }
}

fn kind_of(instr: &Instruction, i: u32) -> Option<OpKind> {
    instr.try_op_kind(i).ok()
}

fn near_target(instr: &Instruction) -> Option<u64> {
    match instr.try_op_kind(0) {
        Ok(OpKind::NearBranch64) => Some(instr.near_branch_target()),
        _ => None,
    }
}

/// Value of operand `i` when it is a register or an immediate.
fn operand_value(instr: &Instruction, i: u32, st: &State) -> Value {
    match instr.try_op_kind(i) {
        Ok(OpKind::Register) => instr
            .try_op_register(i)
            .map_or(Value::Unknown, |r| st.get(r)),
        Ok(
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64,
        ) => instr.try_immediate(i).map_or(Value::Unknown, Value::Imm),
        _ => Value::Unknown,
    }
}

/// Decodes `code` (x86-64, first byte at `ip`) and reports every use of a
/// global, every call with its first argument, and every FS-relative load.
///
/// The reading is straight-line: register contents are tracked from one
/// instruction to the next and forgotten at every branch target, after every
/// unconditional transfer and, except for the result register, at calls
/// (Go's calling conventions preserve no general register). That is enough
/// for the compiler's idioms (`LEA rcx, [X]; XCHG [rcx], rbx`) and never
/// invents a value. Garbage input decodes to invalid instructions, which
/// are counted and skipped.
pub fn analyze_code(code: &[u8], ip: u64) -> CodeRefs {
    let mut out = CodeRefs::default();
    // First pass: branch targets, where another path may join.
    let mut targets = HashSet::new();
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if matches!(
            instr.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        ) {
            if let Some(t) = near_target(&instr) {
                targets.insert(t);
            }
        }
    }

    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut st = State::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        out.instructions += 1;
        if instr.is_invalid() {
            out.invalid += instr.len().max(1);
            st.reset();
            continue;
        }
        if targets.contains(&instr.ip()) {
            st.reset();
        }
        step(&instr, &mut factory, &mut st, &mut out);
    }
    out
}

/// Processes one valid instruction.
fn step(
    instr: &Instruction,
    factory: &mut InstructionInfoFactory,
    st: &mut State,
    out: &mut CodeRefs,
) {
    let mnemonic = instr.mnemonic();
    let op = op_of(mnemonic);
    // A call's arguments, as they are before the call pushes its return
    // address.
    let mut call = matches!(
        instr.flow_control(),
        FlowControl::Call | FlowControl::IndirectCall
    )
    .then_some(CallSite {
        ip: instr.ip(),
        target: None,
        rax: st.regs[0],
        stack0: st.stack0,
    });
    let info = factory.info(instr);
    // The (single) explicit memory operand, if any.
    let mem_op = (0..instr.op_count()).find(|&i| kind_of(instr, i) == Some(OpKind::Memory));
    let mut new_dest: Option<Value> = None;
    if let Some(m) = mem_op {
        let access = info.try_op_access(m).unwrap_or(OpAccess::None);
        let base = instr.memory_base();
        let index = instr.memory_index();
        let disp = instr.memory_displacement64();
        let size = instr.memory_size().size() as u32;
        let other = if m == 0 { 1 } else { 0 };
        if instr.segment_prefix() == Register::FS {
            // TLS: FS:[disp] or FS:[reg+disp] with reg a known constant or
            // loaded from a GOT word.
            let offset = if base == Register::None && index == Register::None {
                Some(FsOffset::Const(disp as i64))
            } else if index == Register::None {
                match st.get(base) {
                    Value::Imm(v) => Some(FsOffset::Const(v.wrapping_add(disp) as i64)),
                    Value::Load { addr, size: 8 } if disp == 0 => Some(FsOffset::FromWord(addr)),
                    _ => None,
                }
            } else {
                None
            };
            out.fs.push(FsAccess {
                ip: instr.ip(),
                offset,
            });
        } else {
            let global = if base == Register::RIP {
                Some(disp)
            } else if base != Register::None {
                match st.get(base) {
                    Value::Addr(x) => Some(x.wrapping_add(disp)),
                    _ => None,
                }
            } else {
                None
            };
            let on_stack0 = base == Register::RSP && index == Register::None && disp == 0;
            if let Some(addr) = global {
                let kind = match access {
                    OpAccess::Read | OpAccess::CondRead => Some(AccessKind::Read),
                    OpAccess::Write | OpAccess::CondWrite => Some(AccessKind::Write),
                    OpAccess::ReadWrite | OpAccess::ReadCondWrite => Some(AccessKind::ReadWrite),
                    OpAccess::NoMemAccess => Some(AccessKind::AddressOf),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let value = match kind {
                        AccessKind::Write | AccessKind::ReadWrite => {
                            operand_value(instr, other, st)
                        }
                        _ => Value::Unknown,
                    };
                    out.accesses.push(Access {
                        ip: instr.ip(),
                        addr,
                        size: if op == Op::Lea { 0 } else { size },
                        kind,
                        op,
                        value,
                        indexed: index != Register::None,
                    });
                }
            }
            match op {
                Op::Lea if m == 1 => {
                    new_dest = Some(match global {
                        Some(a) if index == Register::None => Value::Addr(a),
                        _ => Value::Unknown,
                    });
                }
                Op::Mov if m == 1 => {
                    new_dest = Some(match global {
                        Some(addr) if index == Register::None => Value::Load { addr, size },
                        // 0(SP) after an ABI0 call: its first result.
                        None if on_stack0 && (size == 8 || size == 4) => st.stack0,
                        _ => Value::Unknown,
                    });
                }
                _ => {}
            }
            // Writes to the outgoing-argument slot 0(SP).
            if base == Register::RSP
                && index == Register::None
                && matches!(
                    access,
                    OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite
                )
            {
                let d = disp as i64;
                if on_stack0 && size == 8 && op == Op::Mov {
                    st.stack0 = operand_value(instr, other, st);
                } else if d > -(size as i64) && d < 8 {
                    st.stack0 = Value::Unknown;
                }
            }
        }
    } else if op == Op::Mov {
        new_dest = Some(operand_value(instr, 1, st));
    } else if mnemonic == Mnemonic::Xor
        && kind_of(instr, 0) == Some(OpKind::Register)
        && instr.try_op_register(0).ok() == instr.try_op_register(1).ok()
    {
        new_dest = Some(Value::Imm(0));
    }

    for u in info.used_registers() {
        if matches!(
            u.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            if u.register().full_register() == Register::RSP {
                // 0(SP) is another word now.
                st.stack0 = Value::Unknown;
            }
            st.set(u.register(), Value::Unknown);
        }
    }
    if let (Some(v), Ok(OpKind::Register)) = (new_dest, instr.try_op_kind(0)) {
        if let Ok(dest) = instr.try_op_register(0) {
            st.set(dest, v);
        }
    }

    match instr.flow_control() {
        FlowControl::Call | FlowControl::IndirectCall => {
            let target = near_target(instr);
            if let Some(c) = call.as_mut() {
                c.target = target;
                out.calls.push(*c);
            }
            st.reset();
            // The result: RAX under ABIInternal, 0(SP) for an ABI0 function
            // without arguments.
            let ret = Value::Ret(target.unwrap_or(0));
            st.regs[0] = ret;
            st.stack0 = ret;
        }
        FlowControl::UnconditionalBranch
        | FlowControl::IndirectBranch
        | FlowControl::Return
        | FlowControl::Interrupt
        | FlowControl::Exception => st.reset(),
        _ => {}
    }
}

/// `runtime.moduledata` of the main module, as far as gospy needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moduledata {
    /// Link-time address of `runtime.firstmoduledata`.
    pub addr: u64,
    /// Address of the pclntab it points at (`pcHeader`, or `pclntable.ptr`
    /// before Go 1.16).
    pub pclntab: u64,
    /// `moduledata.text`: start of the Go text (base of 1.18+ entry
    /// offsets).
    pub text: u64,
    /// `moduledata.etext`.
    pub etext: u64,
    /// `moduledata.gofunc` (Go 1.18+; base of funcdata offsets), where the
    /// field's offset is known for this version.
    pub gofunc: Option<u64>,
}

/// Offsets of `text` and `gofunc` in `runtime.moduledata` (runtime/symtab.go;
/// shared/docs/go-runtime/README.md §1.12, from the DWARF of each toolchain):
/// from the layout tables, else (a version they refuse) these known values. `gofunc` is `None` before 1.18.
fn moduledata_offsets(v: &GoVersion) -> (u64, Option<u64>) {
    // The built-in layout tables know both offsets, also for versions
    // between and after the known ones (nearest known layout).
    if let Ok((layout, _)) = crate::layout::Layout::for_version(v) {
        if layout.moduledata.text != 0 {
            return (layout.moduledata.text, layout.moduledata.gofunc);
        }
    }
    if !v.at_least(1, 16) {
        return (96, None);
    }
    let gofunc = match (v.major, v.minor) {
        (1, 19) => Some(304),
        (1, 21..=26) => Some(320),
        (1, 27) => Some(344),
        _ => None,
    };
    (176, gofunc)
}

/// Magic numbers of the four pclntab formats (runtime/symtab.go).
const PCLNTAB_MAGICS: [u32; 4] = [0xffff_fffb, 0xffff_fffa, 0xffff_fff0, 0xffff_fff1];

/// Candidate link-time addresses of the pclntab: its section if named, else
/// every 8-aligned `magic 00 00 01 08` in the file's segments (as
/// pclntab.rs locates it).
fn pclntab_candidates(image: &ElfImage) -> Vec<u64> {
    let mut out = Vec::new();
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = image.section(name) {
            out.push(s.addr);
        }
    }
    if !out.is_empty() {
        return out;
    }
    for seg in &image.segments {
        let Some(bytes) = image.bytes_from(seg.vaddr) else {
            continue;
        };
        let mut i = ((8 - (seg.vaddr % 8)) % 8) as usize;
        while i + 8 <= bytes.len() && out.len() < MAX_PCLNTAB_CANDIDATES {
            if bytes[i + 4..i + 8] == [0, 0, 1, 8] {
                let magic =
                    u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
                if PCLNTAB_MAGICS.contains(&magic) {
                    out.push(seg.vaddr.wrapping_add(i as u64));
                }
            }
            i += 8;
        }
    }
    out
}

fn in_exec(image: &ElfImage, addr: u64) -> bool {
    image.segment_containing(addr).is_some_and(|s| s.is_exec())
}

fn in_writable(image: &ElfImage, addr: u64, len: u64) -> bool {
    let Some(last) = addr.checked_add(len.saturating_sub(1)) else {
        return false;
    };
    match image.segment_containing(addr) {
        Some(s) => s.is_write() && s.contains(last),
        None => false,
    }
}

/// Validates a moduledata candidate at `addr` for the pclntab at `tab`.
fn check_moduledata(
    image: &ElfImage,
    version: &GoVersion,
    addr: u64,
    tab: u64,
) -> Option<Moduledata> {
    let (text_off, gofunc_off) = moduledata_offsets(version);
    if image.read_ptr(addr)? != tab {
        return None;
    }
    let magic = image.read_u32(tab)?;
    match magic {
        // 1.2 format (Go 1.15): `pclntable []byte` then `ftab []functab`,
        // a slice of the same table starting after the 16-byte header.
        0xffff_fffb => {
            let len = image.read_u64(addr.checked_add(8)?)?;
            let cap = image.read_u64(addr.checked_add(16)?)?;
            if len == 0
                || len != cap
                || image.read_ptr(addr.checked_add(24)?)? != tab.checked_add(16)?
            {
                return None;
            }
        }
        // 1.16+: the next field is `funcnametab []byte`, at the offset the
        // header gives (word 2 in 1.16-1.17, word 3 from 1.18: the header
        // gained textStart).
        0xffff_fffa | 0xffff_fff0 | 0xffff_fff1 => {
            let word = if magic == 0xffff_fffa { 2 } else { 3 };
            let nameoff = image.read_u64(tab.checked_add(8 + 8 * word)?)?;
            if image.read_ptr(addr.checked_add(8)?)? != tab.checked_add(nameoff)? {
                return None;
            }
        }
        _ => return None,
    }
    let text = image.read_ptr(addr.checked_add(text_off)?)?;
    let etext = image.read_ptr(addr.checked_add(text_off + 8)?)?;
    if !in_exec(image, text) || etext < text {
        return None;
    }
    let gofunc = gofunc_off
        .and_then(|o| image.read_ptr(addr.checked_add(o)?))
        .filter(|&g| g != 0 && image.segment_containing(g).is_some());
    Some(Moduledata {
        addr,
        pclntab: tab,
        text,
        etext,
        gofunc,
    })
}

/// Finds `runtime.firstmoduledata` without symbols: the start of the
/// `.go.module` section (Go 1.26+) if valid, else the one place in the
/// writable data holding a pointer to the pclntab (`pclntab_addr`, or every
/// candidate found by section name or magic) followed by the right second
/// field (the funcname table, or for Go 1.15 the functab slice), with a
/// text start inside executable code.
pub fn find_moduledata(
    image: &ElfImage,
    version: &GoVersion,
    pclntab_addr: Option<u64>,
) -> Result<Moduledata, String> {
    let tabs = match pclntab_addr {
        Some(t) => vec![t],
        None => pclntab_candidates(image),
    };
    if tabs.is_empty() {
        return Err("no pclntab found (no section and no magic)".into());
    }
    if let Some(sec) = image.section(".go.module") {
        for &t in &tabs {
            if let Some(md) = check_moduledata(image, version, sec.addr, t) {
                return Ok(md);
            }
        }
    }
    // First the words as written in the file; then, for a PIE whose linker
    // left relocated words 0, through the RELATIVE relocations (slower).
    let mut found = scan_for_moduledata(image, version, &tabs, false)?;
    if found.is_none() && image.is_pie {
        found = scan_for_moduledata(image, version, &tabs, true)?;
    }
    found.ok_or_else(|| {
        format!(
            "no moduledata found: no word in writable data points at the pclntab ({})",
            tabs.iter()
                .map(|t| format!("{t:#x}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// One pass over the writable data for [`find_moduledata`]; with
/// `relocated`, zero words are read through the relocations.
fn scan_for_moduledata(
    image: &ElfImage,
    version: &GoVersion,
    tabs: &[u64],
    relocated: bool,
) -> Result<Option<Moduledata>, String> {
    let mut found: Option<Moduledata> = None;
    for seg in image.segments.iter().filter(|s| s.is_write()) {
        let Some(bytes) = image.bytes_from(seg.vaddr) else {
            continue;
        };
        let start = ((8 - (seg.vaddr % 8)) % 8) as usize;
        let Some(words) = bytes.get(start..) else {
            continue;
        };
        for (i, w) in words.chunks_exact(8).enumerate() {
            let addr = seg.vaddr.wrapping_add((start + 8 * i) as u64);
            let mut v = [0u8; 8];
            v.copy_from_slice(w);
            let mut v = u64::from_le_bytes(v);
            if relocated {
                if v != 0 {
                    continue;
                }
                v = image.read_ptr(addr).unwrap_or(0);
            }
            if !tabs.contains(&v) {
                continue;
            }
            if let Some(md) = check_moduledata(image, version, addr, v) {
                match found {
                    Some(f) if f.addr != md.addr => {
                        return Err(format!(
                            "moduledata is ambiguous: candidates at {:#x} and {:#x}",
                            f.addr, md.addr
                        ))
                    }
                    _ => found = Some(md),
                }
            }
        }
    }
    Ok(found)
}

/// Loads the pclntab of a binary that may have no symbols: finds the
/// moduledata first (it gives the text start that Go 1.26+ headers omit,
/// and `gofunc`), then parses the table.
pub fn load_pclntab(
    image: Arc<ElfImage>,
    version: &GoVersion,
) -> Result<(Moduledata, Pclntab), String> {
    let md = find_moduledata(&image, version, None)?;
    let tab = Pclntab::load_with(image, version, Some(md.text), md.gofunc)?;
    if tab.table_addr() != md.pclntab {
        return Err(format!(
            "the moduledata at {:#x} points at a pclntab at {:#x}, but the table loaded is at {:#x}",
            md.addr,
            md.pclntab,
            tab.table_addr()
        ));
    }
    Ok((md, tab))
}

/// The runtime globals found in a binary, as link-time addresses. The
/// required ones are plain; the others are `None` when this Go version
/// lacks them or no rule recognised them, with the reason in `notes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeGlobals {
    /// `runtime.allgs`, a `[]*g`.
    pub allgs: u64,
    /// `runtime.allglen`.
    pub allglen: Option<u64>,
    /// `runtime.allgptr` (Go 1.16+).
    pub allgptr: Option<u64>,
    /// `runtime.allm`, a `*m`.
    pub allm: u64,
    /// `runtime.firstmoduledata` and the fields read from it.
    pub moduledata: Moduledata,
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
    /// `runtime.runtimeInitTime`.
    pub runtime_init_time: Option<u64>,
    /// `runtime.waitReasonStrings` and its length.
    pub wait_reason_strings: Option<(u64, u64)>,
    /// The globals of the runtime's own profiles.
    pub profiles: ProfileGlobals,
    /// Why an optional global is `None`, or was not cross-checked.
    pub notes: Vec<String>,
}

impl RuntimeGlobals {
    /// The globals as [`crate::layout::Layout`] holds them.
    pub fn to_layout_globals(&self) -> Globals {
        Globals {
            allgs: self.allgs,
            allglen: self.allglen,
            allm: self.allm,
            firstmoduledata: self.moduledata.addr,
            wait_reason_strings: self.wait_reason_strings,
            runtime_init_time: self.runtime_init_time,
            allp: self.allp,
            sched: self.sched,
            gomaxprocs: self.gomaxprocs,
            ncpu: self.ncpu,
            mheap: self.mheap,
            memstats: self.memstats,
            gc_controller: self.gc_controller,
            work: self.work,
            profiles: self.profiles,
        }
    }
}

/// Decoded runtime functions, by name, with the names of call targets.
struct Finder<'a> {
    image: &'a ElfImage,
    pclntab: &'a Pclntab,
    /// Go functions take arguments in registers (ABIInternal, Go 1.17+),
    /// else on the stack (ABI0).
    register_abi: bool,
}

impl Finder<'_> {
    /// Decodes the function `name`; `Err` if the pclntab has no such
    /// function or its code is not in the file.
    fn code(&self, name: &str) -> Result<CodeRefs, String> {
        let f = self
            .pclntab
            .func_by_name(name)
            .ok_or_else(|| format!("function {name} not found in the pclntab"))?;
        let len = f.end.saturating_sub(f.entry);
        if len == 0 || len > MAX_FUNC_BYTES {
            return Err(format!(
                "function {name} has an implausible size ({len} bytes)"
            ));
        }
        let code = self
            .image
            .bytes_at(f.entry, len as usize)
            .ok_or_else(|| format!("the code of {name} at {:#x} is not in the file", f.entry))?;
        Ok(analyze_code(code, f.entry))
    }

    /// Name of the function a call goes to (exact entry only).
    fn callee(&self, call: &CallSite) -> Option<&str> {
        let t = call.target?;
        let f = self.pclntab.find_func(t)?;
        (f.entry == t).then(|| self.pclntab.func_name(&f))
    }

    /// Distinct global addresses passed as the first argument (receiver) of
    /// calls whose callee's name satisfies `want`.
    fn receivers(&self, code: &CodeRefs, want: impl Fn(&str) -> bool) -> Vec<u64> {
        let mut out = Vec::new();
        for c in &code.calls {
            if !self.callee(c).is_some_and(&want) {
                continue;
            }
            let arg = if self.register_abi { c.rax } else { c.stack0 };
            let Value::Addr(arg) = arg else {
                continue;
            };
            if !out.contains(&arg) {
                out.push(arg);
            }
        }
        out
    }
}

/// Exactly one candidate, else an error naming the rule.
fn one(cands: Vec<u64>, what: &str) -> Result<u64, String> {
    match cands.as_slice() {
        [a] => Ok(*a),
        [] => Err(format!("{what}: no candidate")),
        many => Err(format!(
            "{what}: {} candidates ({})",
            many.len(),
            many.iter()
                .map(|a| format!("{a:#x}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Addresses X with X, X+8 and X+16 all used: slice headers.
fn slice_headers(code: &CodeRefs) -> Vec<u64> {
    code.addresses()
        .into_iter()
        .filter(|&x| code.uses(x.wrapping_add(8)) && code.uses(x.wrapping_add(16)))
        .collect()
}

/// Addresses X loaded with a plain 8-byte MOV whose X+8 is also used:
/// slices read by pointer and length.
fn slice_reads(code: &CodeRefs) -> Vec<u64> {
    let mut out: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| a.op == Op::Mov && a.kind == AccessKind::Read && a.size == 8 && !a.indexed)
        .map(|a| a.addr)
        .filter(|&x| code.uses(x.wrapping_add(8)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Finds the runtime globals of a Go 1.15-1.27 linux/amd64 binary without
/// using its symbols. `Err` if `allgs`, `allm` or the moduledata cannot be
/// found with confidence (a needed function is missing, a rule finds no or
/// several candidates, a candidate is not in writable data, or two
/// functions disagree); the other globals are optional.
pub fn find_globals(
    image: &ElfImage,
    pclntab: &Pclntab,
    version: &GoVersion,
) -> Result<RuntimeGlobals, String> {
    let fx = Finder {
        image,
        pclntab,
        register_abi: version.at_least(1, 17),
    };
    let mut notes = Vec::new();

    let moduledata = find_moduledata(image, version, Some(pclntab.table_addr()))?;
    if version.at_least(1, 18)
        && pclntab.text_start() != 0
        && pclntab.text_start() != moduledata.text
    {
        return Err(format!(
            "moduledata.text {:#x} differs from the pclntab's text start {:#x}",
            moduledata.text,
            pclntab.text_start()
        ));
    }
    if !in_writable(image, moduledata.addr, 8) {
        return Err(format!(
            "moduledata at {:#x} is not in writable data",
            moduledata.addr
        ));
    }

    let (allgs, allglen, allgptr) = find_allgs(&fx, version)?;
    let allm = find_allm(&fx)?;

    let mut g = RuntimeGlobals {
        allgs,
        allglen,
        allgptr,
        allm,
        moduledata,
        ..RuntimeGlobals::default()
    };
    let mut opt = |what: &str, r: Result<u64, String>, len: u64| -> Option<u64> {
        match r {
            Ok(a) if in_writable(image, a, len) => Some(a),
            Ok(a) => {
                notes.push(format!("{what}: candidate {a:#x} is not in writable data"));
                None
            }
            Err(e) => {
                notes.push(format!("{what}: {e}"));
                None
            }
        }
    };
    g.sched = opt("runtime.sched", find_sched(&fx), 8);
    g.allp = opt("runtime.allp", find_allp(&fx), 24);
    g.gomaxprocs = match g.sched {
        Some(s) => opt("runtime.gomaxprocs", find_gomaxprocs(&fx, s), 4),
        None => opt("runtime.gomaxprocs", Err("needs runtime.sched".into()), 4),
    };
    g.ncpu = opt("runtime.ncpu", find_ncpu(&fx), 4);
    g.mheap = opt("runtime.mheap_", find_mheap(&fx), 8);
    g.gc_controller = opt("runtime.gcController", find_gc_controller(&fx), 8);
    g.work = opt("runtime.work", find_work(&fx), 8);
    g.memstats = opt("runtime.memstats", find_memstats(&fx, version), 8);
    g.runtime_init_time = opt("runtime.runtimeInitTime", find_init_time(&fx), 8);
    let (mbuckets, bbuckets, xbuckets) = find_buckets(&fx);
    g.profiles.mbuckets = opt("runtime.mbuckets", mbuckets, 8);
    g.profiles.bbuckets = opt("runtime.bbuckets", bbuckets, 8);
    g.profiles.xbuckets = opt("runtime.xbuckets", xbuckets, 8);
    g.profiles.mprof_cycle = opt(
        if version.at_least(1, 19) {
            "runtime.mProfCycle"
        } else {
            "runtime.mProf"
        },
        find_mprof_cycle(&fx, version),
        if version.at_least(1, 19) { 4 } else { 8 },
    );
    g.profiles.mem_profile_rate = opt("runtime.MemProfileRate", find_mem_profile_rate(&fx), 8);
    if version.at_least(1, 16) {
        g.profiles.disable_memory_profiling = match g.profiles.mem_profile_rate {
            Some(r) => opt(
                "runtime.disableMemoryProfiling",
                find_disable_mem_profiling(&fx, version, r),
                1,
            ),
            None => opt(
                "runtime.disableMemoryProfiling",
                Err("needs runtime.MemProfileRate".into()),
                1,
            ),
        };
    }
    g.profiles.block_profile_rate =
        opt("runtime.blockprofilerate", find_block_profile_rate(&fx), 8);
    g.profiles.mutex_profile_rate =
        opt("runtime.mutexprofilerate", find_mutex_profile_rate(&fx), 8);
    g.profiles.ticks = opt("runtime.ticks", find_ticks(&fx, version), 16);
    g.wait_reason_strings = match find_wait_reasons(&fx) {
        Ok((a, n)) if in_writable(image, a, n * 16) => Some((a, n)),
        Ok((a, _)) => {
            notes.push(format!(
                "runtime.waitReasonStrings: {a:#x} is not in writable data"
            ));
            None
        }
        Err(e) => {
            notes.push(format!("runtime.waitReasonStrings: {e}"));
            None
        }
    };
    g.notes = notes;
    Ok(g)
}

/// `runtime.allgadd` (proc.go): `allgs = append(allgs, gp)` reads and writes
/// the three words of the slice header; then `allglen = len(allgs)` (a plain
/// store in 1.15, `atomic.Storeuintptr` = XCHG from 1.16) and, from 1.16,
/// `atomicstorep(&allgptr, &allgs[0])`.
fn find_allgs(fx: &Finder, version: &GoVersion) -> Result<(u64, Option<u64>, Option<u64>), String> {
    let code = fx.code("runtime.allgadd")?;
    let allgs = one(slice_headers(&code), "runtime.allgs in runtime.allgadd")?;
    if !in_writable(fx.image, allgs, 24) {
        return Err(format!(
            "runtime.allgs candidate {allgs:#x} is not in writable data"
        ));
    }
    let slice = [allgs, allgs + 8, allgs + 16];
    let stored_from = |src: u64| -> Vec<u64> {
        let mut v: Vec<u64> = code
            .accesses
            .iter()
            .filter(|a| {
                matches!(a.kind, AccessKind::Write | AccessKind::ReadWrite)
                    && a.size == 8
                    && !slice.contains(&a.addr)
                    && a.value == Value::Load { addr: src, size: 8 }
            })
            .map(|a| a.addr)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let allglen = one(stored_from(allgs + 8), "runtime.allglen").ok();
    // allgptr: the other word exchanged into (its store is behind a write
    // barrier check, so the stored value is not tracked).
    let allgptr = if version.at_least(1, 16) {
        let mut v: Vec<u64> = code
            .accesses
            .iter()
            .filter(|a| a.op == Op::Xchg && a.size == 8)
            .map(|a| a.addr)
            .filter(|a| !slice.contains(a) && Some(*a) != allglen)
            .collect();
        v.sort_unstable();
        v.dedup();
        one(v, "runtime.allgptr").ok()
    } else {
        None
    };
    // Second opinion: forEachG (1.16+) ranges over allgs under allglock;
    // in 1.15 checkdead does.
    let name = if version.at_least(1, 16) {
        "runtime.forEachG"
    } else {
        "runtime.checkdead"
    };
    let other = fx.code(name)?;
    if !(other.uses(allgs) && other.uses(allgs + 8)) {
        return Err(format!(
            "runtime.allgs: {name} does not read the slice found in runtime.allgadd ({allgs:#x})"
        ));
    }
    let writable = |a: &u64| in_writable(fx.image, *a, 8);
    Ok((allgs, allglen.filter(writable), allgptr.filter(writable)))
}

/// `runtime.mcommoninit` (proc.go): `mp.alllink = allm` loads allm, then
/// `atomicstorep(unsafe.Pointer(&allm), ...)` takes its address (or
/// exchanges into it when inlined). No other global there is both loaded
/// as a word and written or address-taken.
fn find_allm(fx: &Finder) -> Result<u64, String> {
    let code = fx.code("runtime.mcommoninit")?;
    let loaded: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| a.op == Op::Mov && a.kind == AccessKind::Read && a.size == 8 && !a.indexed)
        .map(|a| a.addr)
        .collect();
    let mut cands: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| {
            matches!(
                a.kind,
                AccessKind::AddressOf | AccessKind::ReadWrite | AccessKind::Write
            ) && loaded.contains(&a.addr)
        })
        .map(|a| a.addr)
        .collect();
    cands.sort_unstable();
    cands.dedup();
    let allm = one(cands, "runtime.allm in runtime.mcommoninit")?;
    if !in_writable(fx.image, allm, 8) {
        return Err(format!(
            "runtime.allm candidate {allm:#x} is not in writable data"
        ));
    }
    // mexit (proc.go) walks `for pprev := &allm; ...` to unlink its m.
    let other = fx.code("runtime.mexit")?;
    if !other.uses(allm) {
        return Err(format!(
            "runtime.allm: runtime.mexit does not use the address found in runtime.mcommoninit ({allm:#x})"
        ));
    }
    Ok(allm)
}

/// `runtime.newproc1` (proc.go) refills the per-P goid cache with
/// `atomic.Xadd64(&sched.goidgen, _GoidCacheBatch)` (`sched.goidgen.Add`
/// from 1.21): a LOCK XADD on the first word of `sched`. Cross-checks:
/// `oneNewExtraM` adds to the same word, and `mcommoninit` locks
/// `sched.lock` (offset 24, or 32 from Go 1.26: runtime2.go `schedt`).
fn find_sched(fx: &Finder) -> Result<u64, String> {
    let code = fx.code("runtime.newproc1")?;
    // _GoidCacheBatch = 16 (proc.go); oneNewExtraM adds 1.
    let xadds = |c: &CodeRefs, n: u64| -> Vec<u64> {
        let mut v: Vec<u64> = c
            .accesses
            .iter()
            .filter(|a| a.op == Op::Xadd && a.size == 8 && a.value == Value::Imm(n))
            .map(|a| a.addr)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let sched = one(xadds(&code, 16), "LOCK XADD of 16 in runtime.newproc1")?;
    if let Ok(extra) = fx.code("runtime.oneNewExtraM") {
        if !xadds(&extra, 1).contains(&sched) {
            return Err(format!("runtime.oneNewExtraM does not add to {sched:#x}"));
        }
    }
    let common = fx.code("runtime.mcommoninit")?;
    if !(common.uses(sched + 24) || common.uses(sched + 32)) {
        return Err(format!(
            "runtime.mcommoninit does not lock sched.lock of {sched:#x}"
        ));
    }
    Ok(sched)
}

/// `runtime.retake` (proc.go, run by sysmon): `for i := 0; i < len(allp);
/// i++ { pp := allp[i] ...`: the only slice it reads. `checkdead` ranges
/// over allp too.
fn find_allp(fx: &Finder) -> Result<u64, String> {
    let code = fx.code("runtime.retake")?;
    let allp = one(slice_reads(&code), "slice read in runtime.retake")?;
    let other = fx.code("runtime.checkdead")?;
    if !(other.uses(allp) && other.uses(allp + 8)) {
        return Err(format!(
            "runtime.checkdead does not read the slice at {allp:#x}"
        ));
    }
    Ok(allp)
}

/// `runtime.stopTheWorldWithSema` (proc.go): `sched.stopwait = gomaxprocs`,
/// a 4-byte load stored into `sched`. `procresize` reads and sets it.
fn find_gomaxprocs(fx: &Finder, sched: u64) -> Result<u64, String> {
    let code = fx.code("runtime.stopTheWorldWithSema")?;
    let mut cands: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| a.kind == AccessKind::Write && a.size == 4)
        .filter(|a| a.addr >= sched && a.addr - sched < 0x4000)
        .filter_map(|a| match a.value {
            Value::Load { addr, size: 4 } if addr < sched || addr - sched >= 0x4000 => Some(addr),
            _ => None,
        })
        .collect();
    cands.sort_unstable();
    cands.dedup();
    let gmp = one(
        cands,
        "a 4-byte global copied into sched in runtime.stopTheWorldWithSema",
    )?;
    let other = fx.code("runtime.procresize")?;
    if !other.uses(gmp) {
        return Err(format!("runtime.procresize does not use {gmp:#x}"));
    }
    Ok(gmp)
}

/// `runtime.osinit` (os_linux.go): `ncpu = getproccount()`
/// (`numCPUStartup = getCPUCount()` from Go 1.26): the 4-byte store of
/// that call's result. `schedinit` (proc.go) reads it (`procs := ncpu`).
fn find_ncpu(fx: &Finder) -> Result<u64, String> {
    let code = fx.code("runtime.osinit")?;
    let counters: Vec<u64> = ["runtime.getproccount", "runtime.getCPUCount"]
        .iter()
        .filter_map(|n| fx.pclntab.func_by_name(n).map(|f| f.entry))
        .collect();
    let mut cands: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| a.kind == AccessKind::Write && a.size == 4)
        .filter(|a| matches!(a.value, Value::Ret(t) if counters.contains(&t)))
        .map(|a| a.addr)
        .collect();
    cands.sort_unstable();
    cands.dedup();
    let ncpu = one(cands, "store of the CPU count in runtime.osinit")?;
    let other = fx.code("runtime.schedinit")?;
    if !other.uses(ncpu) {
        return Err(format!("runtime.schedinit does not read {ncpu:#x}"));
    }
    Ok(ncpu)
}

/// `runtime.stackpoolalloc` (stack.go) allocates spans from the one heap,
/// `mheap_.allocManual(...)` (in 1.15 inlined into a call of
/// `(*mheap).allocSpan`): the receiver of its `(*mheap)` method call.
/// `(*mcentral).grow` (mcentral.go) calls `mheap_.alloc`.
fn find_mheap(fx: &Finder) -> Result<u64, String> {
    let is_mheap = |n: &str| n.starts_with("runtime.(*mheap).");
    let code = fx.code("runtime.stackpoolalloc")?;
    let mheap = one(
        fx.receivers(&code, is_mheap),
        "(*mheap) receiver in runtime.stackpoolalloc",
    )?;
    let other = fx.code("runtime.(*mcentral).grow")?;
    if !fx.receivers(&other, is_mheap).contains(&mheap) {
        return Err(format!(
            "runtime.(*mcentral).grow does not call a method of {mheap:#x}"
        ));
    }
    Ok(mheap)
}

/// `runtime.gcStart` (mgc.go): `gcController.startCycle(...)`; `gcMarkDone`:
/// `gcController.endCycle(...)` (mgc.go; mgcpacer.go from 1.16).
fn find_gc_controller(fx: &Finder) -> Result<u64, String> {
    let is_ctl = |n: &str| n.starts_with("runtime.(*gcControllerState).");
    let code = fx.code("runtime.gcStart")?;
    let ctl = one(
        fx.receivers(&code, is_ctl),
        "(*gcControllerState) receiver in runtime.gcStart",
    )?;
    let other = fx.code("runtime.gcMarkDone")?;
    if !fx.receivers(&other, is_ctl).contains(&ctl) {
        return Err(format!(
            "runtime.gcMarkDone does not call a method of {ctl:#x}"
        ));
    }
    Ok(ctl)
}

/// `runtime.putfull` (mgcwork.go): `work.full.push(&b.node)`, and `full` is
/// the first field of `work`. `trygetfull` pops from it.
fn find_work(fx: &Finder) -> Result<u64, String> {
    let code = fx.code("runtime.putfull")?;
    let work = one(
        fx.receivers(&code, |n| n == "runtime.(*lfstack).push"),
        "(*lfstack).push receiver in runtime.putfull",
    )?;
    let other = fx.code("runtime.trygetfull")?;
    if !other.uses(work) {
        return Err(format!("runtime.trygetfull does not use {work:#x}"));
    }
    Ok(work)
}

/// Offset of `mstats.enablegc` (mstats.go), from the DWARF of each
/// toolchain (shared/docs/go-runtime/README.md §3.7); `None` for minors
/// nobody dumped.
fn enablegc_offset(v: &GoVersion) -> Option<u64> {
    match (v.major, v.minor) {
        (1, 15) => Some(4304),
        (1, 19 | 21..=24) => Some(7736),
        (1, 26 | 27) => Some(10432),
        _ => None,
    }
}

/// `memstats`: from Go 1.19 its first field is `heapStats`, and
/// `(*mheap).grow` (mheap.go) calls `memstats.heapStats.acquire/release`;
/// `(*mcache).releaseAll` (mcache.go) does too. Before, `gcenable` (mgc.go)
/// ends with `memstats.enablegc = true`, the only byte store of 1 there,
/// at a per-version offset; it also cross-checks the 1.19+ rule.
fn find_memstats(fx: &Finder, version: &GoVersion) -> Result<u64, String> {
    let enablegc = || -> Result<u64, String> {
        let off = enablegc_offset(version)
            .ok_or_else(|| format!("offset of mstats.enablegc unknown for {}", version.raw))?;
        let code = fx.code("runtime.gcenable")?;
        let mut c: Vec<u64> = code
            .accesses
            .iter()
            .filter(|a| a.kind == AccessKind::Write && a.size == 1 && a.value == Value::Imm(1))
            .map(|a| a.addr.wrapping_sub(off))
            .collect();
        c.sort_unstable();
        c.dedup();
        one(c, "byte store of true in runtime.gcenable")
    };
    if !version.at_least(1, 19) {
        return enablegc();
    }
    let is_hs = |n: &str| n.starts_with("runtime.(*consistentHeapStats).");
    let code = fx.code("runtime.(*mheap).grow")?;
    let ms = one(
        fx.receivers(&code, is_hs),
        "heapStats receiver in runtime.(*mheap).grow",
    )?;
    let other = fx.code("runtime.(*mcache).releaseAll")?;
    if !fx.receivers(&other, is_hs).contains(&ms) {
        return Err(format!(
            "runtime.(*mcache).releaseAll does not use heapStats at {ms:#x}"
        ));
    }
    if enablegc_offset(version).is_some() {
        let e = enablegc()?;
        if e != ms {
            return Err(format!(
                "heapStats gives {ms:#x} but runtime.gcenable's enablegc gives {e:#x}"
            ));
        }
    }
    Ok(ms)
}

/// `runtime.main` (proc.go): `runtimeInitTime = nanotime()`: the 8-byte
/// store of a `nanotime1` result.
fn find_init_time(fx: &Finder) -> Result<u64, String> {
    let nanotime = fx
        .pclntab
        .func_by_name("runtime.nanotime1")
        .ok_or("runtime.nanotime1 not found")?
        .entry;
    let code = fx.code("runtime.main")?;
    let mut c: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| a.kind == AccessKind::Write && a.size == 8 && a.value == Value::Ret(nanotime))
        .map(|a| a.addr)
        .collect();
    c.sort_unstable();
    c.dedup();
    one(c, "store of nanotime() in runtime.main")
}

/// `runtime.waitReason.String` (runtime2.go): `if w < 0 || w >=
/// waitReason(len(waitReasonStrings))` compares with the array length, then
/// indexes the array, the only global there. The entries must be short
/// printable strings.
fn find_wait_reasons(fx: &Finder) -> Result<(u64, u64), String> {
    let f = fx
        .pclntab
        .func_by_name("runtime.waitReason.String")
        .ok_or("runtime.waitReason.String not found (inlined everywhere)")?;
    let len = f.end.saturating_sub(f.entry).min(MAX_FUNC_BYTES);
    let bytes = fx
        .image
        .bytes_at(f.entry, len as usize)
        .ok_or("code not in the file")?;
    let code = analyze_code(bytes, f.entry);
    let mut arrays: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| a.kind == AccessKind::AddressOf || a.indexed)
        .map(|a| a.addr)
        .filter(|&a| in_writable(fx.image, a, 16))
        .collect();
    arrays.sort_unstable();
    arrays.dedup();
    // `waitReasonStrings[w]` loads the string's pointer and length: X and
    // X+8 are both indexed.
    let addr = match arrays.as_slice() {
        [x] => *x,
        [x, y] if *y == x.wrapping_add(8) => *x,
        _ => {
            return Err(format!(
                "array in runtime.waitReason.String: candidates {arrays:#x?}"
            ))
        }
    };
    // The bound: the first `CMP reg8, imm` of the function.
    let mut decoder = Decoder::with_ip(64, bytes, f.entry, DecoderOptions::NONE);
    let mut n = None;
    for instr in decoder.iter().take(16) {
        if instr.mnemonic() == Mnemonic::Cmp && kind_of(&instr, 0) == Some(OpKind::Register) {
            if let Value::Imm(v) = operand_value(&instr, 1, &State::new()) {
                n = Some(v & 0xff);
                break;
            }
        }
    }
    let n = n
        .filter(|&n| n > 0)
        .ok_or("no length compare in runtime.waitReason.String")?;
    for i in 0..n {
        let e = addr + 16 * i;
        let (Some(p), Some(l)) = (fx.image.read_ptr(e), fx.image.read_u64(e + 8)) else {
            return Err(format!("entry {i} not in the file"));
        };
        if l > 64 {
            return Err(format!("entry {i} has length {l}"));
        }
        if l > 0 {
            let s = fx
                .image
                .bytes_at(p, l as usize)
                .ok_or(format!("entry {i} points outside the file"))?;
            if !s.iter().all(|&c| (0x20..0x7f).contains(&c)) {
                return Err(format!("entry {i} is not printable text"));
            }
        }
    }
    Ok((addr, n))
}

/// Distinct addresses `code` reads with a plain, non-indexed `MOV` of
/// `size` bytes.
fn plain_reads(code: &CodeRefs, size: u32) -> Vec<u64> {
    let mut out: Vec<u64> = code
        .accesses
        .iter()
        .filter(|a| a.op == Op::Mov && a.kind == AccessKind::Read && a.size == size && !a.indexed)
        .map(|a| a.addr)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The condition an instruction runs under, as far as the compare right
/// before a conditional jump tells: `(imm, true)` on the path where the
/// compared value equals `imm`, `(imm, false)` on the other one.
type Guard = (u64, bool);

/// Globals addressed RIP-relative in the function `name`, each with the
/// [`Guard`] of the straight-line block it is in: a `CMP x, imm` directly
/// followed by `JNE` (or `JE`) guards both the fall-through and the jump
/// target until the next branch target or unconditional transfer. A block
/// reached under two different guards has none.
fn guarded_globals(fx: &Finder, name: &str) -> Result<Vec<(Guard, u64)>, String> {
    let f = fx
        .pclntab
        .func_by_name(name)
        .ok_or_else(|| format!("function {name} not found in the pclntab"))?;
    let len = f.end.saturating_sub(f.entry);
    if len == 0 || len > MAX_FUNC_BYTES {
        return Err(format!(
            "function {name} has an implausible size ({len} bytes)"
        ));
    }
    let code = fx
        .image
        .bytes_at(f.entry, len as usize)
        .ok_or_else(|| format!("the code of {name} at {:#x} is not in the file", f.entry))?;
    Ok(guarded_rip_operands(code, f.entry))
}

/// The work of [`guarded_globals`] on `code` (first byte at `ip`).
fn guarded_rip_operands(code: &[u8], ip: u64) -> Vec<(Guard, u64)> {
    // Pass 1: branch targets, and the guard each guarded block starts with
    // (None where two paths disagree).
    let mut targets = HashSet::new();
    let mut starts: std::collections::HashMap<u64, Option<Guard>> =
        std::collections::HashMap::new();
    let mut put = |at: u64, g: Guard| {
        starts
            .entry(at)
            .and_modify(|e| {
                if *e != Some(g) {
                    *e = None;
                }
            })
            .or_insert(Some(g));
    };
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut cmp_imm: Option<u64> = None;
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        let target = match instr.flow_control() {
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                near_target(&instr)
            }
            _ => None,
        };
        if let Some(t) = target {
            targets.insert(t);
        }
        if let (Some(imm), Some(t)) = (cmp_imm, target) {
            match instr.mnemonic() {
                Mnemonic::Jne => {
                    put(instr.next_ip(), (imm, true));
                    put(t, (imm, false));
                }
                Mnemonic::Je => {
                    put(t, (imm, true));
                    put(instr.next_ip(), (imm, false));
                }
                _ => {}
            }
        }
        cmp_imm = None;
        if !instr.is_invalid() && instr.mnemonic() == Mnemonic::Cmp {
            if let Value::Imm(v) = operand_value(&instr, 1, &State::new()) {
                cmp_imm = Some(v);
            }
        }
    }
    // Pass 2: the guard of every RIP-relative operand.
    let mut out = Vec::new();
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut cur: Option<Guard> = None;
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if let Some(g) = starts.get(&instr.ip()) {
            cur = *g;
        } else if targets.contains(&instr.ip()) {
            cur = None;
        }
        if instr.is_invalid() {
            cur = None;
            continue;
        }
        let rip_mem = (0..instr.op_count()).any(|i| kind_of(&instr, i) == Some(OpKind::Memory))
            && instr.memory_base() == Register::RIP;
        if let (Some(g), true) = (cur, rip_mem) {
            out.push((g, instr.memory_displacement64()));
        }
        if matches!(
            instr.flow_control(),
            FlowControl::UnconditionalBranch
                | FlowControl::IndirectBranch
                | FlowControl::Return
                | FlowControl::Interrupt
                | FlowControl::Exception
        ) {
            cur = None;
        }
    }
    out
}

/// The profiles' bucket lists (mprof.go): `runtime.stkbucket` links a new
/// bucket into one of three lists by its type, `if typ == memProfile`
/// (1) `mbuckets`, `else if typ == mutexProfile` (3) `xbuckets`, else
/// `bbuckets`: loaded and stored (`b.allnext = mbuckets; mbuckets = b`,
/// Go 1.15-1.18) or address taken (`allnext = &mbuckets`, 1.19+) in the
/// block each compare guards. `mProf_FlushLocked` walks `mbuckets`;
/// `BlockProfile`/`blockProfileInternal` and `MutexProfile`/
/// `mutexProfileInternal` walk the others where the program links them.
fn find_buckets(
    fx: &Finder,
) -> (
    Result<u64, String>,
    Result<u64, String>,
    Result<u64, String>,
) {
    let guarded = match guarded_globals(fx, "runtime.stkbucket") {
        Ok(g) => g,
        Err(e) => return (Err(e.clone()), Err(e.clone()), Err(e)),
    };
    let under = |want: &dyn Fn(Guard) -> bool, not: &[u64]| -> Vec<u64> {
        let mut v: Vec<u64> = guarded
            .iter()
            .filter(|(g, a)| want(*g) && !not.contains(a))
            .map(|&(_, a)| a)
            .filter(|a| a % 8 == 0)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let m = one(
        under(&|g| g == (1, true), &[]),
        "global under typ == memProfile in runtime.stkbucket",
    );
    let x = one(
        under(&|g| g == (3, true), &[]),
        "global under typ == mutexProfile in runtime.stkbucket",
    );
    let (m, x) = match (m, x) {
        (Ok(m), Ok(x)) if m == x => {
            let e = format!("runtime.stkbucket: the same global {m:#x} for two types");
            return (Err(e.clone()), Err(e.clone()), Err(e));
        }
        r => r,
    };
    let known: Vec<u64> = [&m, &x]
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    let b = one(
        under(&|g| !g.1 && (g.0 == 1 || g.0 == 3), &known),
        "global under the else of typ == mutexProfile in runtime.stkbucket",
    );
    // Cross-checks: every listed function the program has must use it.
    let check = |r: Result<u64, String>, names: &[&str]| -> Result<u64, String> {
        let a = r?;
        let present: Vec<(&str, CodeRefs)> = names
            .iter()
            .filter_map(|n| fx.code(n).ok().map(|c| (*n, c)))
            .collect();
        if !present.is_empty() && !present.iter().any(|(_, c)| c.uses(a)) {
            return Err(format!(
                "{} do(es) not use {a:#x}",
                present.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(a)
    };
    (
        check(m, &["runtime.mProf_FlushLocked", "runtime.mProf_Flush"]),
        check(b, &["runtime.blockProfileInternal", "runtime.BlockProfile"]),
        check(x, &["runtime.mutexProfileInternal", "runtime.MutexProfile"]),
    )
}

/// The heap profile cycle (mprof.go). Go 1.19+: `mProf_Flush` begins with
/// `mProfCycle.setFlushed()`, a compare-and-swap loop on the 4-byte
/// `mProfCycle`: the global both loaded and CAS'd there. Before: `mProf` is
/// `struct { cycle uint32; flushed bool; ... }` and `mProf_Flush` sets
/// `mProf.flushed = true`, the only byte store of 1 there, at `mProf+4`.
/// `mProf_Malloc` reads the cycle in both.
fn find_mprof_cycle(fx: &Finder, version: &GoVersion) -> Result<u64, String> {
    let code = fx.code("runtime.mProf_Flush")?;
    let cycle = if version.at_least(1, 19) {
        let loaded = plain_reads(&code, 4);
        let mut c: Vec<u64> = code
            .accesses
            .iter()
            .filter(|a| a.kind == AccessKind::ReadWrite && a.size == 4)
            .map(|a| a.addr)
            .filter(|a| loaded.contains(a))
            .collect();
        c.sort_unstable();
        c.dedup();
        one(c, "4-byte global loaded and swapped in runtime.mProf_Flush")?
    } else {
        let mut c: Vec<u64> = code
            .accesses
            .iter()
            .filter(|a| a.kind == AccessKind::Write && a.size == 1 && a.value == Value::Imm(1))
            .map(|a| a.addr.wrapping_sub(4))
            .collect();
        c.sort_unstable();
        c.dedup();
        one(c, "byte store of true in runtime.mProf_Flush")?
    };
    let other = fx.code("runtime.mProf_Malloc")?;
    if !plain_reads(&other, 4).contains(&cycle) {
        return Err(format!(
            "runtime.mProf_Malloc does not read the cycle at {cycle:#x}"
        ));
    }
    Ok(cycle)
}

/// `runtime.MemProfileRate` (malloc.go `nextSample`, inlined): the word
/// both `allocmcache` (mcache.go: `c.nextSample = nextSample()`) and
/// `profilealloc` (malloc.go) load, the only one they share.
fn find_mem_profile_rate(fx: &Finder) -> Result<u64, String> {
    let a = plain_reads(&fx.code("runtime.allocmcache")?, 8);
    let b = plain_reads(&fx.code("runtime.profilealloc")?, 8);
    one(
        a.into_iter().filter(|x| b.contains(x)).collect(),
        "word loaded by both runtime.allocmcache and runtime.profilealloc",
    )
}

/// `runtime.disableMemoryProfiling` (Go 1.16+, set by the linker): read
/// right before `MemProfileRate` is written, `if disableMemoryProfiling {
/// MemProfileRate = 0 }` in `schedinit` (proc.go, 1.21+), or
/// `MemProfileRate = defaultMemProfileRate(512 * 1024)` in the runtime's
/// package initialiser `runtime.init` (mprof.go, 1.16-1.20). The access
/// just before the store must be a byte load of a global.
fn find_disable_mem_profiling(fx: &Finder, version: &GoVersion, rate: u64) -> Result<u64, String> {
    let name = if version.at_least(1, 21) {
        "runtime.schedinit"
    } else {
        "runtime.init"
    };
    let code = fx.code(name)?;
    let mut c: Vec<u64> = code
        .accesses
        .windows(2)
        .filter(|w| {
            let (r, s) = (&w[0], &w[1]);
            s.addr == rate
                && s.kind == AccessKind::Write
                && s.size == 8
                && r.kind == AccessKind::Read
                && r.size == 1
                && !r.indexed
                && r.addr != rate
                && s.ip.wrapping_sub(r.ip) < 32
        })
        .map(|w| w[0].addr)
        .collect();
    c.sort_unstable();
    c.dedup();
    one(
        c,
        &format!("byte read before the store to MemProfileRate in {name}"),
    )
}

/// `runtime.blockprofilerate` (mprof.go): the only word `blockevent` loads
/// (`rate := int64(atomic.Load64(&blockprofilerate))`; in Go 1.15 that is
/// in `blocksampled`, and `blockevent` is inlined away). `chanrecv`
/// (chan.go) reads it too: `if blockprofilerate > 0`.
fn find_block_profile_rate(fx: &Finder) -> Result<u64, String> {
    let names = ["runtime.blockevent", "runtime.blocksampled"];
    let codes: Vec<CodeRefs> = names.iter().filter_map(|n| fx.code(n).ok()).collect();
    if codes.is_empty() {
        return Err(format!("none of {} found", names.join(", ")));
    }
    let mut c: Vec<u64> = codes.iter().flat_map(|c| plain_reads(c, 8)).collect();
    c.sort_unstable();
    c.dedup();
    let rate = one(c, "word loaded in runtime.blockevent/blocksampled")?;
    if !fx.code("runtime.chanrecv")?.uses(rate) {
        return Err(format!("runtime.chanrecv does not read {rate:#x}"));
    }
    Ok(rate)
}

/// `runtime.mutexprofilerate` (mprof.go): the only word `mutexevent`
/// loads, `rate := int64(atomic.Load64(&mutexprofilerate))`; the function
/// is linknamed `sync.event` up to Go 1.26 and `runtime.mutexevent` from
/// 1.27. `semacquire1` (sema.go) reads it too: `mutexprofilerate > 0`.
fn find_mutex_profile_rate(fx: &Finder) -> Result<u64, String> {
    let code = fx
        .code("runtime.mutexevent")
        .or_else(|_| fx.code("sync.event"))
        .map_err(|_| "neither runtime.mutexevent nor sync.event found".to_string())?;
    let rate = one(plain_reads(&code, 8), "word loaded in the mutex event")?;
    if !fx.code("runtime.semacquire1")?.uses(rate) {
        return Err(format!("runtime.semacquire1 does not read {rate:#x}"));
    }
    Ok(rate)
}

/// `runtime.ticks` (runtime.go), whose `lock` is its first field. Go
/// 1.22+: `schedinit` calls `ticks.init()`, which does `lock(&ticks.lock)`.
/// Before, only `tickspersecond` uses it (`lock(&ticks.lock)`), linked
/// only into programs that need CPU ticks per second (block and mutex
/// profiles, `runtime/pprof`): the one lock there.
fn find_ticks(fx: &Finder, version: &GoVersion) -> Result<u64, String> {
    let is_lock = |n: &str| matches!(n, "runtime.lock2" | "runtime.lock" | "runtime.lockWithRank");
    if !version.at_least(1, 22) {
        let code = fx.code("runtime.tickspersecond").map_err(|_| {
            "runtime.tickspersecond is not linked into this program (nor is runtime.ticks)"
                .to_string()
        })?;
        return one(
            fx.receivers(&code, is_lock),
            "lock receiver in runtime.tickspersecond",
        );
    }
    let code = fx.code("runtime.schedinit")?;
    let ticks = one(
        fx.receivers(&code, |n| n == "runtime.(*ticksType).init"),
        "(*ticksType).init receiver in runtime.schedinit",
    )?;
    let other = fx.code("runtime.(*ticksType).init")?;
    if !fx.receivers(&other, is_lock).contains(&ticks) {
        return Err(format!(
            "runtime.(*ticksType).init does not lock {ticks:#x}"
        ));
    }
    Ok(ticks)
}

/// Where the current `g` lives relative to the FS base on linux/amd64, as
/// a (negative) offset: `g = *(fs_base + offset)`.
///
/// Go's TLS slot is `runtime.tlsg`, a thread-local variable at the end of
/// the static TLS block. With the internal linker the slot is always
/// `-8` (cmd/link sets `runtime.tlsg` at offset -ptrsize, ld/sym.go); with
/// an external linker it is wherever the C linker placed `runtime.tlsg`
/// in `PT_TLS`: `-(PT_TLS.memsz rounded to its alignment) + tlsg`, e.g.
/// `-0x58` in a static glibc binary. Without symbols the offset is read
/// from the code: `runtime.stackcheck` (asm_amd64.s) begins with
/// `get_tls(CX); MOVQ g(CX), AX`, which the linkers emit as
/// `MOV rax, FS:[off]` (exe), `MOV rcx, off; MOV rax, FS:[rcx]` (PIE), or a
/// GOT load of `off` (initial-exec TLS). `runtime.morestack` does the same
/// and must agree.
pub fn g_tls_offset(image: &ElfImage, pclntab: &Pclntab) -> Option<i64> {
    let from = |name: &str| -> Option<i64> {
        let f = pclntab.func_by_name(name)?;
        let len = f.end.saturating_sub(f.entry).min(4096);
        let code = image.bytes_at(f.entry, len as usize)?;
        let refs = analyze_code(code, f.entry);
        let first = refs.fs.first()?;
        match first.offset? {
            FsOffset::Const(o) => Some(o),
            FsOffset::FromWord(w) => image.read_u64(w).map(|v| v as i64),
        }
    };
    let off = from("runtime.stackcheck")?;
    if !(-0x10000..0).contains(&off) {
        return None;
    }
    match from("runtime.morestack") {
        Some(o) if o != off => None,
        _ => Some(off),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `LEA rcx, [rip+X]; XCHG [rcx], rbx` (runtime.allgadd, Go 1.19+).
    #[test]
    fn lea_then_xchg_through_register() {
        let ip = 0x1000;
        // 48 8d 0d 10 00 00 00   lea rcx, [rip+0x10]   (next ip 0x1007)
        // 48 87 19               xchg [rcx], rbx
        let code = [0x48, 0x8d, 0x0d, 0x10, 0, 0, 0, 0x48, 0x87, 0x19];
        let r = analyze_code(&code, ip);
        assert_eq!(r.invalid, 0);
        let x = 0x1007 + 0x10;
        let kinds: Vec<_> = r.at(x).map(|a| (a.kind, a.op)).collect();
        assert_eq!(
            kinds,
            vec![
                (AccessKind::AddressOf, Op::Lea),
                (AccessKind::ReadWrite, Op::Xchg)
            ]
        );
    }

    /// `MOV rax, [rip+X]; MOV [rip+Y], rax`: the store carries its source.
    #[test]
    fn store_remembers_loaded_value() {
        // 48 8b 05 00 01 00 00   mov rax, [rip+0x100]  (next 0x2007)
        // 48 89 05 00 02 00 00   mov [rip+0x200], rax  (next 0x200e)
        let code = [0x48, 0x8b, 0x05, 0, 1, 0, 0, 0x48, 0x89, 0x05, 0, 2, 0, 0];
        let r = analyze_code(&code, 0x2000);
        let w = r
            .accesses
            .iter()
            .find(|a| a.kind == AccessKind::Write)
            .unwrap();
        assert_eq!(w.addr, 0x200e + 0x200);
        assert_eq!(
            w.value,
            Value::Load {
                addr: 0x2007 + 0x100,
                size: 8
            }
        );
    }

    /// A branch target forgets register contents.
    #[test]
    fn branch_targets_reset_state() {
        // 48 8d 0d 00 01 00 00   lea rcx, [rip+0x100]
        // eb 00                  jmp +0 (to the next instruction)
        // 48 87 19               xchg [rcx], rbx
        let code = [0x48, 0x8d, 0x0d, 0, 1, 0, 0, 0xeb, 0x00, 0x48, 0x87, 0x19];
        let r = analyze_code(&code, 0x3000);
        assert_eq!(r.accesses.len(), 1, "{:?}", r.accesses);
    }

    /// FS loads: constant, and through a register holding a constant.
    #[test]
    fn fs_offsets() {
        // 64 48 8b 04 25 f8 ff ff ff   mov rax, fs:[-8]
        let r = analyze_code(&[0x64, 0x48, 0x8b, 0x04, 0x25, 0xf8, 0xff, 0xff, 0xff], 0);
        assert_eq!(r.fs[0].offset, Some(FsOffset::Const(-8)));
        // 48 c7 c1 a8 ff ff ff   mov rcx, -0x58
        // 64 48 8b 01            mov rax, fs:[rcx]
        let r = analyze_code(
            &[
                0x48, 0xc7, 0xc1, 0xa8, 0xff, 0xff, 0xff, 0x64, 0x48, 0x8b, 0x01,
            ],
            0,
        );
        assert_eq!(r.fs[0].offset, Some(FsOffset::Const(-0x58)));
    }

    /// Calls record their first argument under both conventions.
    #[test]
    fn call_arguments() {
        // 48 8d 05 00 01 00 00   lea rax, [rip+0x100]  (next 0x7)
        // 48 89 04 24            mov [rsp], rax
        // e8 00 00 00 00         call 0x10
        let code = [
            0x48, 0x8d, 0x05, 0, 1, 0, 0, 0x48, 0x89, 0x04, 0x24, 0xe8, 0, 0, 0, 0,
        ];
        let r = analyze_code(&code, 0);
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].target, Some(0x10));
        assert_eq!(r.calls[0].rax, Value::Addr(0x107));
        assert_eq!(r.calls[0].stack0, Value::Addr(0x107));
    }

    /// `runtime.stkbucket`'s list choice (Go 1.19+): each LEA carries the
    /// compare that guards it, the else block the last compare's negation.
    #[test]
    fn guards_of_the_bucket_lists() {
        let code = [
            0x48, 0x83, 0xf9, 0x01, // 0x00 cmp rcx, 1
            0x75, 0x09, // 0x04 jne 0x0f
            0x48, 0x8d, 0x0d, 0x00, 0x01, 0x00, 0x00, // 0x06 lea rcx, [rip+0x100]
            0xeb, 0x16, // 0x0d jmp 0x25
            0x48, 0x83, 0xf9, 0x03, // 0x0f cmp rcx, 3
            0x75, 0x09, // 0x13 jne 0x1e
            0x48, 0x8d, 0x0d, 0x00, 0x02, 0x00, 0x00, // 0x15 lea rcx, [rip+0x200]
            0xeb, 0x07, // 0x1c jmp 0x25
            0x48, 0x8d, 0x0d, 0x00, 0x03, 0x00, 0x00, // 0x1e lea rcx, [rip+0x300]
            0x48, 0x8b, 0x05, 0x00, 0x04, 0x00, 0x00, // 0x25 mov rax, [rip+0x400]
            0xc3, // 0x2c ret
        ];
        assert_eq!(
            guarded_rip_operands(&code, 0),
            vec![((1, true), 0x10d), ((3, true), 0x21c), ((3, false), 0x325),]
        );
        // Garbage: no panic.
        let _ = guarded_rip_operands(&[0x48, 0x83], 0);
        let _ = guarded_rip_operands(&[0x75; 64], u64::MAX - 8);
    }

    /// Garbage and truncated code never panic.
    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9u32;
        let mut buf = vec![0u8; 4096];
        for round in 0..200 {
            for b in buf.iter_mut() {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (seed >> 24) as u8;
            }
            let cut = (round * 37) % buf.len();
            let r = analyze_code(&buf[..cut], u64::MAX - 64);
            assert!(r.instructions <= cut.max(1));
        }
        let _ = analyze_code(&[], 0);
        let _ = analyze_code(&[0x48], 0);
        let _ = analyze_code(&[0x0f; 15], 0);
    }
}
