//! Native (C) stack unwinding of a stopped thread, for goroutines inside cgo
//! calls (`--native`).
//!
//! The Go side of a goroutine in C ends at its cgo call (`runtime.cgocall` →
//! `runtime.asmcgocall`); the C frames live on the thread's system stack and
//! are described only by the `.eh_frame` of the module holding the code.
//! [`NativeUnwinder`] knows the executable mappings of the target (the
//! executable, its shared libraries and the VDSO) and unwinds a thread's
//! registers through them with DWARF CFI (gimli), symbolising each frame from
//! the module's ELF symbol table, as py-spy does for the C frames of Python.
//!
//! Files are always reached through `/proc/PID/map_files/` (the mapped file
//! itself, even when unlinked or replaced) or `/proc/PID/root/` (the target's
//! mount namespace), never by the path the target sees: from the host, a
//! containerised target's `/usr/lib/libc.so.6` is not the host's.
//!
//! Everything read from the target or its files is untrusted: every read is
//! bounds-checked, every loop and allocation bounded, and bad data ends the
//! unwind early instead of panicking.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, EhFrameHdr, EhFrameOffset, EndianSlice,
    EvaluationResult, Expression, LittleEndian, Location, Register, RegisterRule, UnwindContext,
    UnwindSection, UnwindTableRow, Value,
};

use crate::error::Result;
use crate::process::maps::{read_maps, MapEntry};
use crate::process::{Memory, ProcessMemory, Registers};

/// Hard cap on frames per unwind, whatever the caller asks for.
pub const MAX_FRAMES: usize = 4096;

/// Largest section (or whole in-memory image) read from a module; larger
/// ones are ignored (a corrupt header must not make gospy allocate
/// gigabytes).
const MAX_SECTION_BYTES: u64 = 256 << 20;
/// Most section headers read from one file.
const MAX_SECTIONS: u64 = 1 << 17;
/// Most program headers read from one file.
const MAX_PHDRS: u64 = 1 << 12;
/// Most symbols kept from one symbol table.
const MAX_SYMBOLS: usize = 4 << 20;
/// Longest symbol name kept (C++ names can be long; garbage has no end).
const MAX_NAME: usize = 64 << 10;
/// Most FDEs indexed for a module without a usable `.eh_frame_hdr`.
const MAX_FDES: usize = 4 << 20;
/// The VDSO is a few KiB; anything bigger is not a VDSO.
const MAX_VDSO_BYTES: u64 = 1 << 20;
/// Most executable mappings considered.
const MAX_MAPPINGS: usize = 1 << 16;
/// Operations one CFI expression may execute (a `DW_OP_skip` loop ends here).
const MAX_EXPR_STEPS: u32 = 1000;
/// Register or memory values one CFI expression may ask for.
const MAX_EXPR_INPUTS: usize = 64;
/// How far above the stack pointer a frame pointer may point and still be
/// believed: thread stacks are megabytes, a wild rbp is usually far off.
const MAX_FP_DISTANCE: u64 = 64 << 20;

/// DWARF register numbers of x86-64 (System V psABI, figure 3.36): 0-15 are
/// the general registers in this order, 16 is the return address (rip).
const RBX: usize = 3;
const RBP: usize = 6;
const RSP: usize = 7;
const R12: usize = 12;
const R14: usize = 14;
const RA: usize = 16;
const NREGS: usize = 17;
/// Registers a callee must preserve: when CFI has no rule for one, the
/// caller's value is the callee's.
const CALLEE_SAVED: [usize; 6] = [RBX, RBP, 12, 13, 14, 15];

/// Register values of one frame, by DWARF number; None where unknown (a
/// caller-saved register after a call, or a value the CFI could not
/// recover).
type RegSet = [Option<u64>; NREGS];

/// One native frame, innermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeFrame {
    /// The frame's pc: the thread's rip for the innermost frame (and for the
    /// frame a signal interrupted), else the return address.
    pub pc: u64,
    /// The symbol covering the pc (looked up at `pc - 1` for return
    /// addresses, which may be the first byte after a call to a function
    /// that never returns). Raw, not demangled. None when the module has no
    /// symbol there (e.g. a stripped executable).
    pub function: Option<String>,
    /// `pc` minus the symbol's start; 0 when `function` is None.
    pub offset: u64,
    /// The mapped file as the target names it (its `/proc/PID/maps` path,
    /// `[vdso]` for the VDSO).
    pub module: Arc<str>,
}

/// Where native unwinding reached Go code: the pc and the callee-saved
/// registers as the C frames restored them (None where the CFI lost them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoReturn {
    pub pc: u64,
    /// The stack pointer there (the C frames' canonical frame address).
    pub sp: Option<u64>,
    pub rbx: Option<u64>,
    pub rbp: Option<u64>,
    pub r12: Option<u64>,
    pub r14: Option<u64>,
}

/// Unwinds the native stacks of one target's threads.
///
/// Built once per target from `/proc/PID/maps`; each module's CFI and
/// symbols are read on first use and then kept, so later unwinds do no file
/// I/O ([`NativeUnwinder::preload`] does that I/O up front, before the target
/// is paused). Libraries loaded after [`NativeUnwinder::new`] are unknown to
/// it: unwinding stops at their pcs.
pub struct NativeUnwinder {
    pid: i32,
    /// Executable mappings, sorted by start and disjoint.
    ranges: Vec<MappedRange>,
    modules: Vec<Module>,
}

impl std::fmt::Debug for NativeUnwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeUnwinder")
            .field("pid", &self.pid)
            .field("mappings", &self.ranges.len())
            .field("modules", &self.modules.len())
            .finish()
    }
}

/// One executable mapping.
#[derive(Debug, Clone, Copy)]
struct MappedRange {
    start: u64,
    end: u64,
    module: usize,
}

/// One mapped file (or the VDSO).
struct Module {
    path: Arc<str>,
    source: Source,
    /// Start address and file offset of one of its executable mappings: what
    /// the load bias is computed from.
    anchor: (u64, u64),
    loaded: OnceLock<Option<Loaded>>,
}

/// Where a module's bytes come from.
enum Source {
    /// Paths to try in order (`/proc/PID/map_files/...`, `/proc/PID/root/...`).
    Files(Vec<PathBuf>),
    /// The VDSO, which exists only in the target's memory.
    Memory { pid: i32, start: u64, len: u64 },
    /// An image already in memory (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Bytes(Vec<u8>),
}

/// What was read from a module.
struct Loaded {
    /// Runtime address minus link-time address.
    bias: u64,
    cfi: Option<Cfi>,
    symbols: Symbols,
}

impl NativeUnwinder {
    /// Modules = executable file mappings of `/proc/PID/maps` (and the VDSO);
    /// files are opened through `/proc/PID/map_files/<range>` or
    /// `/proc/PID/root/<path>` (so a containerised target works from the
    /// host), never by the bare path. Each module's `.eh_frame` /
    /// `.eh_frame_hdr` and its symbols (`.symtab`, else `.dynsym`) are read
    /// from the file on first use and cached.
    pub fn new(pid: i32) -> Result<NativeUnwinder> {
        let maps = read_maps(pid)?;
        Ok(NativeUnwinder::from_maps(pid, &maps))
    }

    /// [`NativeUnwinder::new`] from an already parsed memory map.
    pub fn from_maps(pid: i32, maps: &[MapEntry]) -> NativeUnwinder {
        let mut ranges = Vec::new();
        let mut modules: Vec<Module> = Vec::new();
        // Mappings of one file share a module (and its parsed data): keyed
        // by device, inode and path, as a file can be mapped twice.
        let mut index: std::collections::HashMap<((u32, u32), u64, &str), usize> =
            Default::default();
        for m in maps.iter().filter(|m| m.is_executable() && m.end > m.start) {
            if ranges.len() >= MAX_MAPPINGS {
                break;
            }
            let module = if m.path == "[vdso]" {
                modules.push(Module {
                    path: Arc::from(m.path.as_str()),
                    source: Source::Memory {
                        pid,
                        start: m.start,
                        len: m.end - m.start,
                    },
                    anchor: (m.start, m.offset),
                    loaded: OnceLock::new(),
                });
                modules.len() - 1
            } else if m.inode != 0 && m.path.starts_with('/') {
                let key = (m.dev, m.inode, m.path.as_str());
                match index.get(&key) {
                    Some(&i) => i,
                    None => {
                        let mut paths = vec![PathBuf::from(format!(
                            "/proc/{pid}/map_files/{:x}-{:x}",
                            m.start, m.end
                        ))];
                        if !m.is_deleted() {
                            paths.push(PathBuf::from(format!("/proc/{pid}/root{}", m.path)));
                        }
                        modules.push(Module {
                            path: Arc::from(m.path.as_str()),
                            source: Source::Files(paths),
                            anchor: (m.start, m.offset),
                            loaded: OnceLock::new(),
                        });
                        index.insert(key, modules.len() - 1);
                        modules.len() - 1
                    }
                }
            } else {
                // Anonymous executable memory (JIT code): no CFI, no symbols.
                continue;
            };
            ranges.push(MappedRange {
                start: m.start,
                end: m.end,
                module,
            });
        }
        ranges.sort_by_key(|r| r.start);
        // /proc/PID/maps never overlaps; a crafted map might.
        ranges.dedup_by(|b, a| b.start < a.end);
        NativeUnwinder {
            pid,
            ranges,
            modules,
        }
    }

    /// The target's PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Reads every module's CFI and symbols now, so that unwinding a paused
    /// target does no file I/O. Returns how many modules have CFI.
    pub fn preload(&self) -> usize {
        self.modules
            .iter()
            .filter(|m| m.load().is_some_and(|l| l.cfi.is_some()))
            .count()
    }

    /// The module mapped at `addr`.
    fn module_at(&self, addr: u64) -> Option<&Module> {
        let i = self.ranges.partition_point(|r| r.start <= addr);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (addr < r.end).then(|| &self.modules[r.module])
    }

    /// The symbol at `pc` as a frame (looked up at `pc` itself): None when no
    /// module is mapped there.
    pub fn symbolize(&self, pc: u64) -> Option<NativeFrame> {
        let module = self.module_at(pc)?;
        Some(frame_for(module, module.load(), pc, pc))
    }

    /// Unwinds from the registers of a stopped thread (rip, rsp, rbp and, as
    /// the CFI asks, the other callee-saved registers), reading stack memory
    /// through `mem`, innermost frame first, until `stop_at(pc)` says the pc
    /// is Go code (that pc is returned and no frame is made for it), the
    /// stack pointer stops growing, a pc is outside every module, the CFI
    /// marks the outermost frame, or `max_frames` frames (at most
    /// [`MAX_FRAMES`]) were made. Return addresses are symbolised and looked
    /// up in the CFI at `pc - 1`. Where a module has no CFI for a pc, one
    /// step follows the frame-pointer chain instead.
    pub fn unwind(
        &self,
        regs: &Registers,
        mem: &dyn Memory,
        stop_at: &dyn Fn(u64) -> bool,
        max_frames: usize,
    ) -> (Vec<NativeFrame>, Option<u64>) {
        let (frames, go) = self.unwind_to_go(regs, mem, stop_at, max_frames);
        (frames, go.map(|g| g.pc))
    }

    /// Like [`unwind`](Self::unwind), but returns, with the Go pc reached,
    /// the registers the C frames restored there: the callee-saved ones
    /// (rbx, rbp, r12) are what the Go function that called into C had.
    pub fn unwind_to_go(
        &self,
        regs: &Registers,
        mem: &dyn Memory,
        stop_at: &dyn Fn(u64) -> bool,
        max_frames: usize,
    ) -> (Vec<NativeFrame>, Option<GoReturn>) {
        let max_frames = max_frames.min(MAX_FRAMES);
        let mut frames = Vec::new();
        let mut state = initial_regs(regs);
        let mut pc = regs.rip;
        // The innermost pc (and one a signal interrupted) is the address of
        // the next instruction to run, not a return address.
        let mut exact = true;
        let mut ctx = Box::new(UnwindContext::new());
        loop {
            if stop_at(pc) {
                let go = GoReturn {
                    pc,
                    sp: state[RSP],
                    rbx: state[RBX],
                    rbp: state[RBP],
                    r12: state[R12],
                    r14: state[R14],
                };
                return (frames, Some(go));
            }
            if frames.len() >= max_frames || pc == 0 {
                break;
            }
            let lookup = if exact { pc } else { pc.wrapping_sub(1) };
            let Some(module) = self.module_at(lookup) else {
                break;
            };
            let loaded = module.load();
            frames.push(frame_for(module, loaded, pc, lookup));

            let Some(sp) = state[RSP] else { break };
            let step = match loaded.and_then(|l| l.cfi.as_ref().map(|c| (l, c))) {
                Some((l, cfi)) => cfi.step(lookup.wrapping_sub(l.bias), &state, mem, &mut ctx),
                None => Step::NoInfo,
            };
            let (next, signal) = match step {
                Step::Next { regs, signal } => (regs, signal),
                Step::NoInfo => match frame_pointer_step(&state, mem) {
                    Some(regs) => (regs, false),
                    None => break,
                },
                Step::Outermost | Step::Failed => break,
            };
            let (Some(next_pc), Some(next_sp)) = (next[RA], next[RSP]) else {
                break;
            };
            // A frame's CFA lies above its callee's: a stack pointer that
            // does not grow means a loop or garbage. A signal frame may
            // return to another stack (sigaltstack), so it is exempt.
            if !signal && next_sp <= sp {
                break;
            }
            state = next;
            pc = next_pc;
            exact = signal;
        }
        (frames, None)
    }
}

/// Builds the frame for `pc`, symbolised at `lookup`.
fn frame_for(module: &Module, loaded: Option<&Loaded>, pc: u64, lookup: u64) -> NativeFrame {
    let sym = loaded.and_then(|l| {
        let (name, start) = l.symbols.lookup(lookup.wrapping_sub(l.bias))?;
        Some((
            name.to_string(),
            pc.wrapping_sub(start.wrapping_add(l.bias)),
        ))
    });
    let (function, offset) = match sym {
        Some((name, offset)) => (Some(name), offset),
        None => (None, 0),
    };
    NativeFrame {
        pc,
        function,
        offset,
        module: Arc::clone(&module.path),
    }
}

/// The ptrace registers by DWARF number.
fn initial_regs(r: &Registers) -> RegSet {
    [
        Some(r.rax),
        Some(r.rdx),
        Some(r.rcx),
        Some(r.rbx),
        Some(r.rsi),
        Some(r.rdi),
        Some(r.rbp),
        Some(r.rsp),
        Some(r.r8),
        Some(r.r9),
        Some(r.r10),
        Some(r.r11),
        Some(r.r12),
        Some(r.r13),
        Some(r.r14),
        Some(r.r15),
        Some(r.rip),
    ]
}

/// One step up the frame-pointer chain (`push rbp; mov rbp, rsp`): the
/// caller's rbp at [rbp], the return address at [rbp+8]. Only the registers
/// the chain itself recovers are known afterwards.
fn frame_pointer_step(state: &RegSet, mem: &dyn Memory) -> Option<RegSet> {
    let fp = state[RBP]?;
    let sp = state[RSP]?;
    if fp < sp || fp - sp > MAX_FP_DISTANCE || !fp.is_multiple_of(8) {
        return None;
    }
    let mut next = [None; NREGS];
    next[RBP] = Some(mem.read_u64(fp)?);
    next[RA] = Some(mem.read_u64(fp.checked_add(8)?)?);
    next[RSP] = Some(fp.checked_add(16)?);
    Some(next)
}

/// Outcome of one CFI step. Made once per frame and consumed at once, so
/// the size of `Next` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// The caller's registers; `signal` when the frame just unwound was a
    /// signal trampoline (its caller's pc is exact).
    Next { regs: RegSet, signal: bool },
    /// No FDE covers the pc.
    NoInfo,
    /// The CFI says there is no caller (return address undefined).
    Outermost,
    /// The CFI could not be evaluated (bad data, unreadable memory).
    Failed,
}

impl Module {
    /// The module's parsed data, read on first call; None if unreadable.
    fn load(&self) -> Option<&Loaded> {
        self.loaded
            .get_or_init(|| {
                let image = match &self.source {
                    Source::Files(paths) => paths.iter().find_map(|p| Image::open(p)),
                    Source::Memory { pid, start, len } => Image::from_target(*pid, *start, *len),
                    Source::Bytes(b) => Some(Image::Bytes(b.clone())),
                };
                load_module(&image?, self.anchor)
            })
            .as_ref()
    }
}

/// Read access to a module's bytes, bounded.
enum Image {
    File { file: File, len: u64 },
    Bytes(Vec<u8>),
}

impl Image {
    fn open(path: &std::path::Path) -> Option<Image> {
        let file = File::open(path).ok()?;
        let md = file.metadata().ok()?;
        if !md.is_file() {
            return None;
        }
        Some(Image::File {
            file,
            len: md.len(),
        })
    }

    /// The VDSO image, copied from the target's memory.
    fn from_target(pid: i32, start: u64, len: u64) -> Option<Image> {
        if len > MAX_VDSO_BYTES {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        Memory::read(&ProcessMemory::new(pid), start, &mut buf).then_some(Image::Bytes(buf))
    }

    fn len(&self) -> u64 {
        match self {
            Image::File { len, .. } => *len,
            Image::Bytes(b) => b.len() as u64,
        }
    }

    /// `len` bytes at `offset`, if they are all in the image and `len` is
    /// below the section cap.
    fn read(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let end = offset.checked_add(len)?;
        if end > self.len() || len > MAX_SECTION_BYTES {
            return None;
        }
        match self {
            Image::File { file, .. } => {
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, offset).ok()?;
                Some(buf)
            }
            Image::Bytes(b) => Some(b[offset as usize..end as usize].to_vec()),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The NUL-terminated string at `off` of a string table.
fn cstr(table: &[u8], off: u32) -> Option<&[u8]> {
    let rest = table.get(off as usize..)?;
    let rest = &rest[..rest.len().min(MAX_NAME + 1)];
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

/// An ELF64 program header (the fields used here).
#[derive(Debug, Clone, Copy)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// An ELF64 section header (the fields used here).
#[derive(Debug, Clone, Copy)]
struct Shdr {
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
}

const PT_LOAD: u32 = 1;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
const PF_X: u32 = 1;
const SHT_NOBITS: u32 = 8;
const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const SHF_EXECINSTR: u64 = 4;

/// Program and section headers of an ELF64 little-endian x86-64 file.
struct Headers {
    phdrs: Vec<Phdr>,
    sections: Vec<Shdr>,
    shstrtab: Vec<u8>,
}

impl Headers {
    fn parse(image: &Image) -> Option<Headers> {
        let eh = image.read(0, 64)?;
        // 64-bit, little-endian, x86-64.
        if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 || u16_at(&eh, 18)? != 62 {
            return None;
        }
        let phoff = u64_at(&eh, 0x20)?;
        let shoff = u64_at(&eh, 0x28)?;
        let phentsize = u64::from(u16_at(&eh, 0x36)?);
        let mut phnum = u64::from(u16_at(&eh, 0x38)?);
        let shentsize = u64::from(u16_at(&eh, 0x3a)?);
        let mut shnum = u64::from(u16_at(&eh, 0x3c)?);
        let mut shstrndx = u32::from(u16_at(&eh, 0x3e)?);

        let mut sections = Vec::new();
        if shoff != 0 && shentsize >= 64 {
            // Extended numbering: counts that do not fit 16 bits live in
            // section header 0.
            if shnum == 0 || shstrndx == 0xffff || phnum == 0xffff {
                let h0 = image.read(shoff, 64)?;
                if shnum == 0 {
                    shnum = u64_at(&h0, 32)?;
                }
                if shstrndx == 0xffff {
                    shstrndx = u32_at(&h0, 40)?;
                }
                if phnum == 0xffff {
                    phnum = u64::from(u32_at(&h0, 44)?);
                }
            }
            let shnum = shnum.min(MAX_SECTIONS);
            if let Some(raw) = image.read(shoff, shnum.checked_mul(shentsize)?) {
                for h in raw.chunks_exact(shentsize as usize) {
                    sections.push(Shdr {
                        name: u32_at(h, 0)?,
                        kind: u32_at(h, 4)?,
                        flags: u64_at(h, 8)?,
                        addr: u64_at(h, 16)?,
                        offset: u64_at(h, 24)?,
                        size: u64_at(h, 32)?,
                        link: u32_at(h, 40)?,
                    });
                }
            }
        }
        let mut phdrs = Vec::new();
        if phoff != 0 && phentsize >= 56 {
            let phnum = phnum.min(MAX_PHDRS);
            if let Some(raw) = image.read(phoff, phnum.checked_mul(phentsize)?) {
                for h in raw.chunks_exact(phentsize as usize) {
                    phdrs.push(Phdr {
                        kind: u32_at(h, 0)?,
                        flags: u32_at(h, 4)?,
                        offset: u64_at(h, 8)?,
                        vaddr: u64_at(h, 16)?,
                        filesz: u64_at(h, 32)?,
                    });
                }
            }
        }
        let shstrtab = sections
            .get(shstrndx as usize)
            .and_then(|s| image.read(s.offset, s.size))
            .unwrap_or_default();
        Some(Headers {
            phdrs,
            sections,
            shstrtab,
        })
    }

    fn section(&self, name: &str) -> Option<&Shdr> {
        self.sections
            .iter()
            .find(|s| s.kind != SHT_NOBITS && cstr(&self.shstrtab, s.name) == Some(name.as_bytes()))
    }

    /// Runtime minus link-time address, from one executable mapping: the
    /// executable PT_LOAD whose page-aligned file range holds the mapping's
    /// file offset gives the link-time address of that offset. Without one,
    /// assumes addresses equal file offsets (true of shared libraries).
    fn bias(&self, (start, offset): (u64, u64)) -> u64 {
        let page = |x: u64| x & !0xfff;
        let seg = self.phdrs.iter().find(|p| {
            p.kind == PT_LOAD
                && p.flags & PF_X != 0
                && page(p.offset) <= offset
                && offset < p.offset.saturating_add(p.filesz.max(1))
        });
        let vaddr_of_offset = match seg {
            Some(p) => p.vaddr.wrapping_sub(p.offset).wrapping_add(offset),
            None => offset,
        };
        start.wrapping_sub(vaddr_of_offset)
    }

    /// File offset of link-time address `vaddr` and the file bytes left in
    /// its PT_LOAD from there.
    fn vaddr_to_offset(&self, vaddr: u64) -> Option<(u64, u64)> {
        self.phdrs.iter().find_map(|p| {
            let rel = vaddr.checked_sub(p.vaddr)?;
            (p.kind == PT_LOAD && rel < p.filesz)
                .then(|| (p.offset.wrapping_add(rel), p.filesz - rel))
        })
    }
}

fn load_module(image: &Image, anchor: (u64, u64)) -> Option<Loaded> {
    let headers = Headers::parse(image)?;
    Some(Loaded {
        bias: headers.bias(anchor),
        cfi: Cfi::load(image, &headers),
        symbols: Symbols::load(image, &headers),
    })
}

/// A module's `.eh_frame` (and `.eh_frame_hdr`), in link-time addresses.
struct Cfi {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    /// `.eh_frame_hdr` and its address, if its binary search table can be
    /// used for this `.eh_frame`.
    hdr: Option<(Vec<u8>, u64)>,
    text_addr: u64,
    got_addr: u64,
    /// Sorted FDE ranges `(start, end, offset)`, built on first use when
    /// there is no usable `.eh_frame_hdr`.
    index: OnceLock<Vec<(u64, u64, usize)>>,
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

impl Cfi {
    fn load(image: &Image, h: &Headers) -> Option<Cfi> {
        let text_addr = h.section(".text").map_or(0, |s| s.addr);
        let got_addr = h.section(".got").map_or(0, |s| s.addr);
        let mut hdr = h
            .section(".eh_frame_hdr")
            .and_then(|s| Some((image.read(s.offset, s.size)?, s.addr)));
        let (eh_frame, eh_frame_addr) = match h.section(".eh_frame") {
            Some(s) => (image.read(s.offset, s.size)?, s.addr),
            None => {
                // No section headers (or no .eh_frame section): the
                // PT_GNU_EH_FRAME segment is the .eh_frame_hdr, which points
                // at .eh_frame; read that to the end of its segment.
                let p = h.phdrs.iter().find(|p| p.kind == PT_GNU_EH_FRAME)?;
                let hdr_bytes = image.read(p.offset, p.filesz)?;
                let bases = BaseAddresses::default().set_eh_frame_hdr(p.vaddr);
                let parsed = EhFrameHdr::new(&hdr_bytes, LittleEndian)
                    .parse(&bases, 8)
                    .ok()?;
                let addr = parsed.eh_frame_ptr().direct().ok()?;
                let (off, left) = h.vaddr_to_offset(addr)?;
                let data = image.read(off, left.min(MAX_SECTION_BYTES))?;
                hdr = Some((hdr_bytes, p.vaddr));
                (data, addr)
            }
        };
        let mut cfi = Cfi {
            eh_frame,
            eh_frame_addr,
            hdr: None,
            text_addr,
            got_addr,
            index: OnceLock::new(),
        };
        // Use the header's table only if it describes this .eh_frame.
        if let Some((bytes, addr)) = hdr {
            let bases = cfi.bases(addr);
            let usable = EhFrameHdr::new(&bytes, LittleEndian)
                .parse(&bases, 8)
                .is_ok_and(|p| {
                    p.table().is_some() && p.eh_frame_ptr().direct().ok() == Some(eh_frame_addr)
                });
            if usable {
                cfi.hdr = Some((bytes, addr));
            }
        }
        Some(cfi)
    }

    fn bases(&self, hdr_addr: u64) -> BaseAddresses {
        BaseAddresses::default()
            .set_eh_frame_hdr(hdr_addr)
            .set_eh_frame(self.eh_frame_addr)
            .set_text(self.text_addr)
            .set_got(self.got_addr)
    }

    fn section(&self) -> EhFrame<Slice<'_>> {
        let mut s = EhFrame::new(&self.eh_frame, LittleEndian);
        s.set_address_size(8);
        s
    }

    /// FDE ranges found by walking the whole section, sorted.
    fn build_index(&self) -> Vec<(u64, u64, usize)> {
        let eh = self.section();
        let bases = self.bases(0);
        let mut out = Vec::new();
        let mut entries = eh.entries(&bases);
        // Each entry is at least 4 bytes long: the walk ends with the
        // section, or at the first entry that does not parse.
        while let Ok(Some(entry)) = entries.next() {
            if let CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(EhFrame::cie_from_offset) {
                    if fde.len() > 0 {
                        out.push((fde.initial_address(), fde.end_address(), fde.offset()));
                    }
                }
            }
            if out.len() >= MAX_FDES {
                break;
            }
        }
        out.sort_unstable();
        out
    }

    /// The FDE covering link-time address `addr`.
    fn fde<'a>(
        &'a self,
        eh: &EhFrame<Slice<'a>>,
        bases: &BaseAddresses,
        addr: u64,
    ) -> Option<gimli::FrameDescriptionEntry<Slice<'a>>> {
        if let Some((bytes, _)) = &self.hdr {
            let parsed = EhFrameHdr::new(bytes, LittleEndian).parse(bases, 8).ok()?;
            let table = parsed.table()?;
            return table
                .fde_for_address(eh, bases, addr, EhFrame::cie_from_offset)
                .ok();
        }
        let index = self.index.get_or_init(|| self.build_index());
        let i = index.partition_point(|e| e.0 <= addr);
        let &(_, end, offset) = index.get(i.checked_sub(1)?)?;
        if addr >= end {
            return None;
        }
        let fde = eh
            .fde_from_offset(bases, EhFrameOffset(offset), EhFrame::cie_from_offset)
            .ok()?;
        fde.contains(addr).then_some(fde)
    }

    /// Unwinds one frame whose (link-time) lookup address is `addr`.
    fn step(
        &self,
        addr: u64,
        state: &RegSet,
        mem: &dyn Memory,
        ctx: &mut UnwindContext<usize>,
    ) -> Step {
        let eh = self.section();
        let bases = self.bases(self.hdr.as_ref().map_or(0, |h| h.1));
        let Some(fde) = self.fde(&eh, &bases, addr) else {
            return Step::NoInfo;
        };
        let ra_reg = fde.cie().return_address_register().0 as usize;
        let signal = fde.is_signal_trampoline();
        let encoding = fde.cie().encoding();
        let Ok(row) = fde.unwind_info_for_address(&eh, &bases, ctx, addr) else {
            return Step::Failed;
        };
        if ra_reg >= NREGS {
            return Step::Failed;
        }
        let eval = Evaluator {
            eh: &eh,
            encoding,
            state,
            mem,
        };
        match eval.apply(row, ra_reg) {
            Some(regs) if regs[RA].is_none() => Step::Outermost,
            Some(regs) => Step::Next { regs, signal },
            None => Step::Failed,
        }
    }
}

/// Evaluates one CFI row against a frame's registers.
struct Evaluator<'a, 'b> {
    eh: &'b EhFrame<Slice<'a>>,
    encoding: gimli::Encoding,
    state: &'b RegSet,
    mem: &'b dyn Memory,
}

impl Evaluator<'_, '_> {
    /// The caller's registers; None if the CFA or a needed saved register
    /// cannot be computed. The return address ends up in `RA` (None when
    /// the CFI marks it undefined: the outermost frame).
    fn apply(&self, row: &UnwindTableRow<usize>, ra_reg: usize) -> Option<RegSet> {
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                self.reg(*register)?.wrapping_add_signed(*offset)
            }
            CfaRule::Expression(e) => self.eval(e.get(self.eh).ok()?, None)?.0,
        };
        // Explicit rules by register; registers without one keep their
        // value if callee-saved and are lost otherwise.
        let mut rules: [Option<&RegisterRule<usize>>; NREGS] = [None; NREGS];
        for (reg, rule) in row.registers() {
            if let Some(slot) = rules.get_mut(reg.0 as usize) {
                *slot = Some(rule);
            }
        }
        let mut next: RegSet = [None; NREGS];
        for (r, slot) in next.iter_mut().enumerate() {
            *slot = match rules[r] {
                Some(rule) => self.rule(r, rule, cfa),
                None if CALLEE_SAVED.contains(&r) => self.state[r],
                None => None,
            };
        }
        // The return address column, wherever the CIE puts it, becomes the
        // caller's pc; the caller's stack pointer is the CFA.
        next[RA] = match rules[ra_reg] {
            Some(rule) => self.rule(ra_reg, rule, cfa),
            None => None,
        };
        next[RSP] = Some(cfa);
        Some(next)
    }

    fn reg(&self, r: Register) -> Option<u64> {
        self.state.get(r.0 as usize).copied().flatten()
    }

    /// The caller's value of register `r` under `rule`.
    fn rule(&self, r: usize, rule: &RegisterRule<usize>, cfa: u64) -> Option<u64> {
        match rule {
            RegisterRule::Undefined => None,
            RegisterRule::SameValue => self.state.get(r).copied().flatten(),
            RegisterRule::Offset(n) => self.mem.read_u64(cfa.wrapping_add_signed(*n)),
            RegisterRule::ValOffset(n) => Some(cfa.wrapping_add_signed(*n)),
            RegisterRule::Register(r) => self.reg(*r),
            RegisterRule::Expression(e) => {
                let (v, is_addr) = self.eval(e.get(self.eh).ok()?, Some(cfa))?;
                if is_addr {
                    self.mem.read_u64(v)
                } else {
                    Some(v)
                }
            }
            RegisterRule::ValExpression(e) => Some(self.eval(e.get(self.eh).ok()?, Some(cfa))?.0),
            RegisterRule::Constant(c) => Some(*c),
            _ => None,
        }
    }

    /// Runs a CFI expression, `cfa` pushed first for register rules. Returns
    /// the result and whether it is an address (as opposed to a value from
    /// `DW_OP_stack_value`).
    fn eval(&self, expr: Expression<Slice<'_>>, cfa: Option<u64>) -> Option<(u64, bool)> {
        let mut eval = expr.evaluation(self.encoding);
        eval.set_max_iterations(MAX_EXPR_STEPS);
        if let Some(cfa) = cfa {
            eval.set_initial_value(cfa);
        }
        let mut res = eval.evaluate().ok()?;
        for _ in 0..MAX_EXPR_INPUTS {
            res = match res {
                EvaluationResult::Complete => {
                    let pieces = eval.as_result();
                    let [piece] = pieces else { return None };
                    return match piece.location {
                        Location::Address { address } => Some((address, true)),
                        Location::Value { value } => Some((value.to_u64(u64::MAX).ok()?, false)),
                        _ => None,
                    };
                }
                EvaluationResult::RequiresRegister { register, .. } => eval
                    .resume_with_register(Value::Generic(self.reg(register)?))
                    .ok()?,
                EvaluationResult::RequiresMemory { address, size, .. } => {
                    let mut b = [0u8; 8];
                    let n = usize::from(size).min(8);
                    if !self.mem.read(address, &mut b[..n]) {
                        return None;
                    }
                    eval.resume_with_memory(Value::Generic(u64::from_le_bytes(b)))
                        .ok()?
                }
                EvaluationResult::RequiresCallFrameCfa => {
                    eval.resume_with_call_frame_cfa(cfa?).ok()?
                }
                _ => return None,
            };
        }
        None
    }
}

/// Function symbols of a module, sorted by address, one per address.
#[derive(Default)]
struct Symbols {
    entries: Vec<SymEntry>,
    names: String,
}

struct SymEntry {
    addr: u64,
    size: u64,
    name: u32,
    len: u32,
}

impl Symbols {
    /// `.symtab`, else `.dynsym`: function symbols (and untyped ones in
    /// executable sections, like assembly labels).
    fn load(image: &Image, h: &Headers) -> Symbols {
        for kind in [SHT_SYMTAB, SHT_DYNSYM] {
            let Some(tab) = h.sections.iter().find(|s| s.kind == kind) else {
                continue;
            };
            let Some(strs) = h.sections.get(tab.link as usize) else {
                continue;
            };
            let (Some(raw), Some(strtab)) = (
                image.read(tab.offset, tab.size),
                image.read(strs.offset, strs.size),
            ) else {
                continue;
            };
            let syms = Symbols::parse(&raw, &strtab, |shndx| {
                h.sections
                    .get(usize::from(shndx))
                    .is_some_and(|s| s.flags & SHF_EXECINSTR != 0)
            });
            if !syms.entries.is_empty() {
                return syms;
            }
        }
        Symbols::default()
    }

    /// Parses ELF64 symbol records. Of several names for one address (libc
    /// has `nanosleep` and `__nanosleep`), keeps the one a person would
    /// write: a function over an untyped label, fewest leading
    /// underscores, global over weak over local, then the shortest.
    fn parse(raw: &[u8], strtab: &[u8], exec_section: impl Fn(u16) -> bool) -> Symbols {
        type Rank = (u8, usize, u8, usize);
        let mut cands: Vec<(u64, Rank, u64, &[u8])> = Vec::new();
        for rec in raw.chunks_exact(24).take(MAX_SYMBOLS) {
            let (Some(name), Some(shndx), Some(value), Some(size)) = (
                u32_at(rec, 0),
                u16_at(rec, 6),
                u64_at(rec, 8),
                u64_at(rec, 16),
            ) else {
                continue;
            };
            let info = rec[4];
            // SHN_UNDEF and the reserved indices (SHN_ABS, SHN_COMMON, ...)
            // name no code.
            if value == 0 || shndx == 0 || shndx >= 0xff00 {
                continue;
            }
            let kind_rank = match info & 0xf {
                2 | 10 => 0,                   // STT_FUNC, STT_GNU_IFUNC
                0 if exec_section(shndx) => 1, // STT_NOTYPE in code
                _ => continue,
            };
            let bind_rank = match info >> 4 {
                1 => 0, // STB_GLOBAL
                2 => 1, // STB_WEAK
                0 => 2, // STB_LOCAL
                _ => 3,
            };
            let Some(name) = cstr(strtab, name).filter(|n| !n.is_empty()) else {
                continue;
            };
            let underscores = name.iter().take_while(|&&b| b == b'_').count();
            cands.push((
                value,
                (kind_rank, underscores, bind_rank, name.len()),
                size,
                name,
            ));
        }
        cands.sort_unstable_by(|a, b| (a.0, a.1, a.3).cmp(&(b.0, b.1, b.3)));
        cands.dedup_by_key(|c| c.0);
        let mut out = Symbols::default();
        for (addr, _, size, name) in cands {
            let name = String::from_utf8_lossy(name);
            let (Ok(off), Ok(len)) = (u32::try_from(out.names.len()), u32::try_from(name.len()))
            else {
                break;
            };
            out.names.push_str(&name);
            out.entries.push(SymEntry {
                addr,
                size,
                name: off,
                len,
            });
        }
        out
    }

    /// The symbol containing link-time address `addr` and its start. A
    /// symbol without a size covers everything up to the next one.
    fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.entries.partition_point(|e| e.addr <= addr);
        // A sized symbol that ends before `addr` may be nested in an
        // earlier, larger one: look back a little.
        for e in self.entries[..i].iter().rev().take(8) {
            if e.size == 0 || addr - e.addr < e.size {
                let name = self
                    .names
                    .get(e.name as usize..(e.name as usize).checked_add(e.len as usize)?)?;
                return Some((name, e.addr));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Memory of a fake target: a few ranges of bytes.
    #[derive(Default)]
    struct FakeMem(HashMap<u64, Vec<u8>>);

    impl FakeMem {
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.0.insert(addr, v.to_le_bytes().to_vec());
        }
    }

    impl Memory for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (&base, bytes) in &self.0 {
                if addr >= base && addr - base + buf.len() as u64 <= bytes.len() as u64 {
                    let off = (addr - base) as usize;
                    buf.copy_from_slice(&bytes[off..off + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    /// A CIE (augmentation "" or, for a signal trampoline, "zS"; absolute
    /// 8-byte FDE addresses, code
    /// alignment 1, data alignment -8, return address in r16) whose initial
    /// rules are `CFA = rsp + 8; rip at CFA - 8`: the state at a function's
    /// first instruction.
    fn cie(signal: bool) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 0, 1];
        body.extend_from_slice(if signal { b"zS\0" } else { b"\0" });
        body.extend_from_slice(&[1, 0x78, 16]);
        if signal {
            body.push(0); // augmentation data length
        }
        body.extend_from_slice(&[0x0c, 7, 8]); // DW_CFA_def_cfa rsp, 8
        body.extend_from_slice(&[0x80 | 16, 1]); // DW_CFA_offset r16, cfa-8
        while !body.len().is_multiple_of(4) {
            body.push(0); // DW_CFA_nop
        }
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend(body);
        out
    }

    /// Appends an FDE for `[start, start+len)` with `insns` to `eh`, which
    /// holds the CIE at offset `cie_off`.
    fn fde(eh: &mut Vec<u8>, cie_off: usize, start: u64, len: u64, insns: &[u8]) {
        let at = eh.len();
        let mut body = ((at + 4 - cie_off) as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(insns);
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        eh.extend_from_slice(&(body.len() as u32).to_le_bytes());
        eh.extend(body);
    }

    /// A minimal ELF64 x86-64 shared object: one executable PT_LOAD covering
    /// the whole file at vaddr 0, sections `.text`, `.eh_frame`, `.symtab`
    /// (with `.strtab`) and `.shstrtab`. Code lives at 0x1000..0x2000;
    /// `eh_frame` is placed at 0x2000.
    fn elf(eh_frame: &[u8], symbols: &[(&str, u64, u64)]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for &(name, addr, size) in symbols {
            let mut rec = vec![0u8; 24];
            rec[..4].copy_from_slice(&(strtab.len() as u32).to_le_bytes());
            rec[4] = 0x12; // STB_GLOBAL, STT_FUNC
            rec[6..8].copy_from_slice(&1u16.to_le_bytes()); // .text
            rec[8..16].copy_from_slice(&addr.to_le_bytes());
            rec[16..24].copy_from_slice(&size.to_le_bytes());
            symtab.extend(rec);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
        let shstrtab = b"\0.text\0.eh_frame\0.symtab\0.strtab\0.shstrtab\0".to_vec();
        let mut out = vec![0u8; 0x2000];
        let eh_off = out.len() as u64;
        out.extend_from_slice(eh_frame);
        let sym_off = out.len() as u64;
        out.extend_from_slice(&symtab);
        let str_off = out.len() as u64;
        out.extend_from_slice(&strtab);
        let shstr_off = out.len() as u64;
        out.extend_from_slice(&shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        // (name, type, flags, addr, offset, size, link, entsize)
        type Shdr = (u32, u32, u64, u64, u64, u64, u32, u64);
        let shdrs: [Shdr; 6] = [
            (0, 0, 0, 0, 0, 0, 0, 0),
            (1, 1, 6, 0x1000, 0x1000, 0x1000, 0, 0),
            (7, 1, 2, eh_off, eh_off, eh_frame.len() as u64, 0, 0),
            (17, 2, 0, 0, sym_off, symtab.len() as u64, 4, 24),
            (25, 3, 0, 0, str_off, strtab.len() as u64, 0, 0),
            (33, 3, 0, 0, shstr_off, shstrtab.len() as u64, 0, 0),
        ];
        for (name, kind, flags, addr, off, size, link, entsize) in shdrs {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[16..24].copy_from_slice(&addr.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h[40..44].copy_from_slice(&link.to_le_bytes());
            h[56..64].copy_from_slice(&entsize.to_le_bytes());
            out.extend(h);
        }
        let file_len = out.len() as u64;
        // ELF header and the program header right after it.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&6u16.to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&5u16.to_le_bytes());
        let ph = 64;
        out[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        out[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        out[ph + 32..ph + 40].copy_from_slice(&file_len.to_le_bytes());
        out[ph + 40..ph + 48].copy_from_slice(&file_len.to_le_bytes());
        out
    }

    /// An unwinder over one in-memory module mapped at `base`.
    fn unwinder(image: Vec<u8>, base: u64) -> NativeUnwinder {
        let len = (image.len() as u64 + 0xfff) & !0xfff;
        NativeUnwinder {
            pid: 0,
            ranges: vec![MappedRange {
                start: base,
                end: base + len,
                module: 0,
            }],
            modules: vec![Module {
                path: Arc::from("/fake/lib.so"),
                source: Source::Bytes(image),
                anchor: (base, 0),
                loaded: OnceLock::new(),
            }],
        }
    }

    const BASE: u64 = 0x7f00_0000_0000;
    const STACK: u64 = 0x7ffd_0000_1000;

    /// `leaf` (0x1000..0x1010) is stopped after `push rbx`, called from
    /// `middle` (0x1100..0x1140, frame `sub rsp, 24` after entry), called
    /// from `outer` (0x1200..0x1240, no CFI: the frame-pointer chain
    /// applies), called from code outside the module.
    fn three_frames() -> (NativeUnwinder, Registers, FakeMem) {
        let mut eh = cie(false);
        // leaf: after 1 byte (push rbx) CFA = rsp+16, rbx at CFA-16.
        fde(&mut eh, 0, 0x1000, 0x10, &[0x41, 0x0e, 16, 0x83, 2]);
        // middle: after 4 bytes CFA = rsp+32.
        fde(&mut eh, 0, 0x1100, 0x40, &[0x44, 0x0e, 32]);
        eh.extend_from_slice(&[0, 0, 0, 0]);
        let image = elf(
            &eh,
            &[
                ("leaf", 0x1000, 0x10),
                ("middle", 0x1100, 0x40),
                ("outer", 0x1200, 0x40),
            ],
        );
        let u = unwinder(image, BASE);
        let mut mem = FakeMem::default();
        let sp = STACK;
        mem.put_u64(sp, 0x1111); // saved rbx
        mem.put_u64(sp + 8, BASE + 0x1120); // return into middle
                                            // middle's frame: 24 bytes, then the return address into outer.
        mem.put_u64(sp + 16 + 24, BASE + 0x1230);
        // outer has a frame pointer chain: rbp = its frame.
        let fp = sp + 0x100;
        mem.put_u64(fp, 0);
        mem.put_u64(fp + 8, 0x40_1234); // Go code
        let regs = Registers {
            rip: BASE + 0x1005,
            rsp: sp,
            rbp: fp,
            rbx: 0x2222,
            ..Default::default()
        };
        (u, regs, mem)
    }

    #[test]
    fn unwinds_cfi_then_frame_pointers_to_go() {
        let (u, regs, mem) = three_frames();
        let go = |pc: u64| (0x40_0000..0x50_0000).contains(&pc);
        let (frames, go_pc) = u.unwind(&regs, &mem, &go, 64);
        let names: Vec<_> = frames.iter().map(|f| f.function.as_deref()).collect();
        assert_eq!(names, [Some("leaf"), Some("middle"), Some("outer")]);
        assert_eq!(frames[0].offset, 5);
        assert_eq!(frames[1].pc, BASE + 0x1120);
        assert_eq!(frames[1].offset, 0x20);
        assert_eq!(frames[2].offset, 0x30);
        assert_eq!(&*frames[2].module, "/fake/lib.so");
        assert_eq!(go_pc, Some(0x40_1234));

        // max_frames cuts, and a Go rip stops at once.
        let (frames, go_pc) = u.unwind(&regs, &mem, &go, 2);
        assert_eq!((frames.len(), go_pc), (2, None));
        let go_regs = Registers {
            rip: 0x40_1000,
            ..regs
        };
        assert_eq!(u.unwind(&go_regs, &mem, &go, 64), (vec![], Some(0x40_1000)));
        // Without a Go range the walk ends outside every module.
        let (frames, go_pc) = u.unwind(&regs, &mem, &|_| false, 64);
        assert_eq!((frames.len(), go_pc), (3, None));
        assert_eq!(
            u.symbolize(BASE + 0x1105).unwrap().function.as_deref(),
            Some("middle")
        );
        assert!(u.symbolize(BASE + 0x1180).unwrap().function.is_none());
    }

    #[test]
    fn restores_callee_saved_registers() {
        let (u, regs, mem) = three_frames();
        let module = &u.modules[0];
        let loaded = module.load().unwrap();
        let cfi = loaded.cfi.as_ref().unwrap();
        let mut ctx = UnwindContext::new();
        let state = initial_regs(&regs);
        let Step::Next { regs: next, signal } = cfi.step(0x1005, &state, &mem, &mut ctx) else {
            panic!("no step");
        };
        assert!(!signal);
        assert_eq!(next[RBX], Some(0x1111));
        assert_eq!(next[RBP], Some(regs.rbp)); // callee-saved, no rule
        assert_eq!(next[0], None); // rax: caller-saved
        assert_eq!(next[RSP], Some(STACK + 16));
        assert!(matches!(
            cfi.step(0x1180, &state, &mem, &mut ctx),
            Step::NoInfo
        ));
    }

    #[test]
    fn stack_that_does_not_grow_ends_the_walk() {
        let (u, regs, mut mem) = three_frames();
        // outer's frame pointer points below the stack pointer: no step.
        let regs_low_fp = Registers {
            rbp: STACK - 0x100,
            ..regs
        };
        let (frames, go) = u.unwind(&regs_low_fp, &mem, &|_| false, 64);
        assert_eq!((frames.len(), go), (3, None));

        // CFA = rsp (DW_CFA_def_cfa_offset 0): the caller's stack pointer
        // would equal this frame's, a loop.
        let mut eh = cie(false);
        fde(&mut eh, 0, 0x1000, 0x10, &[0x0e, 0]);
        let u = unwinder(elf(&eh, &[("flat", 0x1000, 0x10)]), BASE);
        mem.put_u64(STACK - 8, BASE + 0x1004);
        let (frames, go) = u.unwind(&regs, &mem, &|_| false, 64);
        assert_eq!((frames.len(), go), (1, None), "{frames:?}");
    }

    #[test]
    fn expression_loops_are_capped() {
        let mut eh = cie(false);
        // DW_CFA_def_cfa_expression { DW_OP_skip -3 }: loops forever.
        fde(&mut eh, 0, 0x1000, 0x10, &[0x0f, 3, 0x2f, 0xfd, 0xff]);
        // DW_CFA_expression r16 { DW_OP_breg7 0; DW_OP_deref;... }: the
        // return address at *(rsp) read through memory.
        fde(&mut eh, 0, 0x1100, 0x10, &[0x10, 16, 2, 0x77, 0]);
        let image = elf(&eh, &[("spin", 0x1000, 0x10), ("expr", 0x1100, 0x10)]);
        let u = unwinder(image, BASE);
        let mut mem = FakeMem::default();
        mem.put_u64(STACK, BASE + 0x1008);
        let regs = Registers {
            rip: BASE + 0x1004,
            rsp: STACK,
            ..Default::default()
        };
        let (frames, _) = u.unwind(&regs, &mem, &|_| false, 64);
        assert_eq!(frames.len(), 1);
        // The expression rule: RA at [rsp] = CFA(rsp+8)-8, back into spin.
        let regs = Registers {
            rip: BASE + 0x1104,
            ..regs
        };
        let (frames, _) = u.unwind(&regs, &mem, &|_| false, 64);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[1].function.as_deref(), Some("spin"));
    }

    #[test]
    fn signal_frames_resume_at_the_exact_pc() {
        // A signal trampoline (CIE augmentation "S") whose CFI, like glibc's
        // __restore_rt, finds the interrupted registers in the signal frame
        // on the stack: CFA = [rsp+0x20], rip at rsp+0x28. The interrupted
        // stack is below the trampoline's (an alternate signal stack there
        // would be anywhere).
        let mut eh = cie(true);
        let plain = eh.len();
        eh.extend(cie(false));
        // DW_CFA_def_cfa_expression { DW_OP_breg7 0x20; DW_OP_deref }
        // DW_CFA_expression r16 { DW_OP_breg7 0x28 }
        // (after the FDE's empty augmentation data, which "z" requires).
        let tramp = [0, 0x0f, 3, 0x77, 0x20, 0x06, 0x10, 16, 2, 0x77, 0x28];
        fde(&mut eh, 0, 0x1000, 0x10, &tramp);
        fde(&mut eh, plain, 0x1100, 0x40, &[]);
        let image = elf(
            &eh,
            &[("__restore_rt", 0x1000, 0x10), ("middle", 0x1100, 0x40)],
        );
        let u = unwinder(image, BASE);
        let low = STACK - 0x1000;
        let mut mem = FakeMem::default();
        mem.put_u64(STACK + 0x20, low + 8);
        // Interrupted at the very first instruction of middle: pc - 1 would
        // land outside it.
        mem.put_u64(STACK + 0x28, BASE + 0x1100);
        mem.put_u64(low + 8, 0x40_1000);
        let regs = Registers {
            rip: BASE + 0x1001,
            rsp: STACK,
            ..Default::default()
        };
        let go = |pc: u64| (0x40_0000..0x50_0000).contains(&pc);
        let (frames, go_pc) = u.unwind(&regs, &mem, &go, 64);
        let names: Vec<_> = frames.iter().map(|f| f.function.as_deref()).collect();
        assert_eq!(names, [Some("__restore_rt"), Some("middle")], "{frames:?}");
        assert_eq!(frames[1].offset, 0);
        assert_eq!(go_pc, Some(0x40_1000));
    }

    #[test]
    fn unwinder_is_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<NativeUnwinder>();
    }

    /// A deterministic byte stream (xorshift) for fuzz-like tests.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn garbage_modules_do_not_panic() {
        let regs = Registers {
            rip: BASE + 0x1004,
            rsp: STACK,
            rbp: STACK + 0x40,
            ..Default::default()
        };
        let mut mem = FakeMem::default();
        mem.0.insert(STACK, noise(7, 0x200));
        let mut images = vec![Vec::new(), b"\x7fELF".to_vec(), noise(1, 0x3000)];
        // A valid header over garbage, and headers claiming huge tables.
        let mut h = elf(&cie(false), &[("f", 0x1000, 0x10)]);
        h.truncate(0x1800);
        images.push(h);
        let mut h = elf(&cie(false), &[("f", 0x1000, 0x10)]);
        h[0x3c..0x3e].copy_from_slice(&0xffffu16.to_le_bytes());
        h[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        images.push(h);
        for image in images {
            let u = unwinder(image, BASE);
            let (frames, _) = u.unwind(&regs, &mem, &|_| false, 16);
            assert!(frames.len() <= 16);
        }
    }

    #[test]
    fn truncated_and_corrupt_eh_frames_do_not_panic() {
        let mut eh = cie(false);
        fde(&mut eh, 0, 0x1000, 0x10, &[0x41, 0x0e, 16, 0x83, 2]);
        fde(
            &mut eh,
            0,
            0x1100,
            0x40,
            &[0x44, 0x0e, 32, 0x0f, 3, 0x2f, 0xfd, 0xff],
        );
        let syms = [("leaf", 0x1000, 0x10), ("middle", 0x1100, 0x40)];
        let mut mem = FakeMem::default();
        mem.0.insert(STACK, noise(3, 0x400));
        let pcs = [0x1000, 0x1005, 0x100f, 0x1100, 0x1120, 0x1500];
        let mut variants = Vec::new();
        for cut in 0..=eh.len() {
            variants.push(eh[..cut].to_vec());
        }
        for seed in 1..200 {
            let mut v = eh.clone();
            let n = noise(seed, 4);
            let at = usize::from(n[0]) % v.len();
            v[at] ^= n[1] | 1;
            let at = usize::from(n[2]) % v.len();
            v[at] = n[3];
            variants.push(v);
        }
        variants.push(noise(99, 512));
        for v in variants {
            let u = unwinder(elf(&v, &syms), BASE);
            for pc in pcs {
                let regs = Registers {
                    rip: BASE + pc,
                    rsp: STACK + 0x10,
                    rbp: STACK + 0x80,
                    ..Default::default()
                };
                let (frames, _) = u.unwind(&regs, &mem, &|_| false, 32);
                assert!(frames.len() <= 32);
            }
        }
    }

    #[test]
    fn symbol_preferences() {
        // Aliases at one address: the name with fewest underscores wins,
        // then global over weak; sized symbols end, unsized ones do not.
        let mut raw = vec![0u8; 24];
        let mut strtab = vec![0u8];
        let mut add = |name: &str, info: u8, addr: u64, size: u64| {
            let mut rec = vec![0u8; 24];
            rec[..4].copy_from_slice(&(strtab.len() as u32).to_le_bytes());
            rec[4] = info;
            rec[6..8].copy_from_slice(&1u16.to_le_bytes());
            rec[8..16].copy_from_slice(&addr.to_le_bytes());
            rec[16..24].copy_from_slice(&size.to_le_bytes());
            raw.extend(rec);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        };
        add("__nanosleep", 0x12, 0x100, 0x10);
        add("nanosleep", 0x22, 0x100, 0x10);
        add("label", 0x10, 0x200, 0);
        add("data", 0x11, 0x300, 8);
        add("big", 0x12, 0x400, 0x100);
        add("nested", 0x12, 0x410, 0x10);
        let syms = Symbols::parse(&raw, &strtab, |i| i == 1);
        assert_eq!(syms.lookup(0x105), Some(("nanosleep", 0x100)));
        assert_eq!(syms.lookup(0x110), None);
        assert_eq!(syms.lookup(0x2ff), Some(("label", 0x200)));
        assert_eq!(syms.lookup(0x300), Some(("label", 0x200)));
        assert_eq!(syms.lookup(0x415), Some(("nested", 0x410)));
        assert_eq!(syms.lookup(0x480), Some(("big", 0x400)));
        assert_eq!(syms.lookup(0x50), None);
        // A name without its NUL is dropped, not read past the table.
        let syms = Symbols::parse(&raw, &strtab[..strtab.len() - 1], |i| i == 1);
        assert_eq!(syms.lookup(0x410), Some(("big", 0x400)));
    }

    #[test]
    fn bias_of_segments() {
        let h = Headers {
            phdrs: vec![
                Phdr {
                    kind: PT_LOAD,
                    flags: 4,
                    offset: 0,
                    vaddr: 0,
                    filesz: 0x26000,
                },
                Phdr {
                    kind: PT_LOAD,
                    flags: 5,
                    offset: 0x26000,
                    vaddr: 0x26000,
                    filesz: 0x15000,
                },
            ],
            sections: vec![],
            shstrtab: vec![],
        };
        assert_eq!(h.bias((0x7f00_0002_6000, 0x26000)), 0x7f00_0000_0000);
        // Go's internal linker: text at 0x401000, file offset 0x1000.
        let go = Headers {
            phdrs: vec![Phdr {
                kind: PT_LOAD,
                flags: 5,
                offset: 0,
                vaddr: 0x400000,
                filesz: 0x9000,
            }],
            ..h
        };
        assert_eq!(go.bias((0x400000, 0)), 0);
        assert_eq!(go.bias((0x5555_5540_0000, 0)), 0x5555_5500_0000);
    }

    #[test]
    fn unwinds_own_libc_frames_by_map() {
        // The module list of this very process holds libc and the test
        // binary, opened through /proc/self/map_files.
        let me = std::process::id() as i32;
        let u = NativeUnwinder::new(me).unwrap();
        assert!(u.preload() >= 2, "{u:?}");
        let getpid = libc::getpid as *const () as u64;
        let f = u.symbolize(getpid + 1).unwrap();
        assert!(f.module.contains("libc"), "{f:?}");
        assert_eq!(f.function.as_deref(), Some("getpid"), "{f:?}");
        assert_eq!(f.offset, 1);
    }

    #[test]
    fn reads_the_vdso_from_memory() {
        // SAFETY: getauxval only reads the auxiliary vector.
        let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
        if vdso == 0 {
            return; // booted with vdso=0: nothing to read
        }
        let u = NativeUnwinder::new(std::process::id() as i32).unwrap();
        let module = u.module_at(vdso).expect("[vdso] mapped");
        assert_eq!(&*module.path, "[vdso]");
        let loaded = module.load().expect("vdso image parsed");
        assert!(loaded.cfi.is_some(), "the vdso has .eh_frame");
        let (_, start) = loaded
            .symbols
            .entries
            .iter()
            .map(|e| (e, e.addr))
            .find(|(e, _)| {
                let name = &loaded.symbols.names[e.name as usize..(e.name + e.len) as usize];
                name.ends_with("clock_gettime")
            })
            .expect("clock_gettime in the vdso's symbols");
        let f = u.symbolize(start.wrapping_add(loaded.bias) + 2).unwrap();
        assert!(f.function.unwrap().ends_with("clock_gettime"));
    }
}
