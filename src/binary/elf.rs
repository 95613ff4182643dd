//! ELF access: segments, sections, symbols, build ids.
//!
//! [`ElfImage`] holds the whole executable in memory and answers questions in
//! link-time addresses (the addresses written in the file). Everything that
//! reads through it is bounds-checked: a truncated or corrupt file yields
//! `None`, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;

use crate::error::{Error, Result};

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Link-time virtual address of the first byte.
    pub vaddr: u64,
    /// Size in memory (file-backed part plus zero-filled bss part).
    pub memsz: u64,
    /// File offset of the first byte.
    pub offset: u64,
    /// Size of the file-backed part.
    pub filesz: u64,
    /// `p_flags`: `PF_X` = 1, `PF_W` = 2, `PF_R` = 4.
    pub flags: u32,
}

impl Segment {
    /// `PF_X`: executable.
    pub fn is_exec(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
    /// `PF_W`: writable.
    pub fn is_write(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
    /// Whether `vaddr` lies in the segment's memory image (file part or bss).
    pub fn contains(&self, vaddr: u64) -> bool {
        vaddr >= self.vaddr && vaddr - self.vaddr < self.memsz
    }
}

/// One section header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// Link-time address (0 for non-allocated sections).
    pub addr: u64,
    pub size: u64,
    /// File offset of the section's bytes (meaningless when `nobits`).
    pub offset: u64,
    /// `SHF_ALLOC`: the section is part of the memory image.
    pub alloc: bool,
    /// `SHT_NOBITS` (e.g. `.bss`): no bytes in the file.
    pub nobits: bool,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_flags`.
    pub flags: u64,
}

impl Section {
    /// Whether the section has bytes in the file.
    pub fn has_data(&self) -> bool {
        !self.nobits
    }
}

/// An ELF symbol from `.symtab`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Link-time address.
    pub addr: u64,
    pub size: u64,
}

/// A parsed 64-bit little-endian x86-64 ELF executable, held in memory.
pub struct ElfImage {
    /// Where the file was read from.
    pub path: PathBuf,
    /// The whole file. Other modules re-parse it (e.g. for DWARF).
    pub data: Vec<u8>,
    /// `ET_DYN` (a PIE): add the load bias to every address.
    pub is_pie: bool,
    /// `PT_LOAD` program headers, in file order.
    pub segments: Vec<Segment>,
    /// All section headers (may be empty).
    pub sections: Vec<Section>,
    /// The GNU build-id note (`NT_GNU_BUILD_ID`), lowercase hex.
    pub build_id: Option<String>,
    /// Go's build id (the `.note.go.buildid` note, name "Go", type 4).
    pub go_build_id: Option<String>,
    symbols: HashMap<String, Symbol>,
    /// `R_X86_64_RELATIVE` relocations (offset, addend), sorted; built on
    /// first use by [`ElfImage::read_ptr`].
    relative_relocs: OnceLock<Vec<(u64, u64)>>,
}

impl std::fmt::Debug for ElfImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfImage")
            .field("path", &self.path)
            .field("len", &self.data.len())
            .field("is_pie", &self.is_pie)
            .field("segments", &self.segments)
            .field("sections", &self.sections.len())
            .field("symbols", &self.symbols.len())
            .field("build_id", &self.build_id)
            .field("go_build_id", &self.go_build_id)
            .finish()
    }
}

/// Go's note type for `.note.go.buildid` (cmd/link/internal/ld/elf.go,
/// `ELF_NOTE_GOBUILDID_TAG`).
const GO_NOTE_BUILDID: u32 = 4;

impl ElfImage {
    /// Reads and parses the executable at `path`.
    pub fn open(path: &Path) -> Result<ElfImage> {
        let data =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        ElfImage::from_bytes(path, data)
    }

    /// Parses an executable already in memory; `path` is only used in
    /// messages.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<ElfImage> {
        let bad = |reason: String| Error::BadBinary {
            path: path.to_path_buf(),
            reason,
        };
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(bad("not an ELF file".into()));
        }
        if data.len() < 20 {
            return Err(bad("truncated ELF header".into()));
        }
        match data[4] {
            elf::ELFCLASS64 => {}
            elf::ELFCLASS32 => {
                return Err(bad(
                    "32-bit ELF; gospy supports only 64-bit x86-64 executables".into(),
                ))
            }
            c => return Err(bad(format!("unknown ELF class {c}"))),
        }
        if data[5] != elf::ELFDATA2LSB {
            return Err(bad(
                "big-endian ELF; gospy supports only x86-64 executables".into(),
            ));
        }
        let header = elf::FileHeader64::<Endianness>::parse(data.as_slice())
            .map_err(|e| bad(format!("invalid ELF header: {e}")))?;
        let endian = header
            .endian()
            .map_err(|e| bad(format!("invalid ELF header: {e}")))?;
        let machine = header.e_machine(endian);
        if machine != elf::EM_X86_64 {
            return Err(bad(format!(
                "ELF machine {machine} ({}); gospy supports only x86-64",
                machine_name(machine)
            )));
        }
        let is_pie = header.e_type(endian) == elf::ET_DYN;

        let phdrs = header
            .program_headers(endian, data.as_slice())
            .map_err(|e| bad(format!("invalid program headers: {e}")))?;
        let mut segments = Vec::new();
        for ph in phdrs {
            if ph.p_type(endian) != elf::PT_LOAD {
                continue;
            }
            segments.push(Segment {
                vaddr: ph.p_vaddr(endian),
                memsz: ph.p_memsz(endian),
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
                flags: ph.p_flags(endian),
            });
        }

        let mut sections = Vec::new();
        let mut symbols = HashMap::new();
        let mut build_id = None;
        let mut go_build_id = None;
        // A file with broken section headers can still be usable through its
        // segments (the pclntab and buildinfo can be found by scanning).
        if let Ok(table) = header.sections(endian, data.as_slice()) {
            for sh in table.iter() {
                let name = table
                    .section_name(endian, sh)
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                let kind = sh.sh_type(endian);
                sections.push(Section {
                    name,
                    addr: sh.sh_addr(endian),
                    size: sh.sh_size(endian),
                    offset: sh.sh_offset(endian),
                    alloc: sh.sh_flags(endian) & u64::from(elf::SHF_ALLOC) != 0,
                    nobits: kind == elf::SHT_NOBITS,
                    kind,
                    flags: sh.sh_flags(endian),
                });
                if let Ok(Some(notes)) = sh.notes(endian, data.as_slice()) {
                    scan_notes(notes, endian, &mut build_id, &mut go_build_id);
                }
            }
            if let Ok(symtab) = table.symbols(endian, data.as_slice(), elf::SHT_SYMTAB) {
                for sym in symtab.iter() {
                    let addr = sym.st_value.get(endian);
                    if addr == 0 {
                        continue;
                    }
                    let Ok(name) = symtab.symbol_name(endian, sym) else {
                        continue;
                    };
                    if name.is_empty() {
                        continue;
                    }
                    let Ok(name) = std::str::from_utf8(name) else {
                        continue;
                    };
                    symbols.entry(name.to_string()).or_insert(Symbol {
                        addr,
                        size: sym.st_size.get(endian),
                    });
                }
            }
        }
        if build_id.is_none() || go_build_id.is_none() {
            for ph in phdrs {
                if let Ok(Some(notes)) = ph.notes(endian, data.as_slice()) {
                    scan_notes(notes, endian, &mut build_id, &mut go_build_id);
                }
            }
        }

        Ok(ElfImage {
            path: path.to_path_buf(),
            data,
            is_pie,
            segments,
            sections,
            build_id,
            go_build_id,
            symbols,
            relative_relocs: OnceLock::new(),
        })
    }

    /// The `.symtab` symbol `name` (exact name, e.g. `runtime.text` or
    /// `runtime.stackcheck.abi0`), if present with a nonzero address.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).copied()
    }

    /// All `.symtab` symbols with a nonzero address, in no particular order.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, Symbol)> {
        self.symbols.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Whether the file has a symbol table (it does not after `-s` or
    /// `strip`).
    pub fn has_symbols(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// The `PT_LOAD` with the lowest file offset: its `vaddr` rounded down to
    /// the page size is what the process maps at the load bias.
    pub fn first_load(&self) -> Option<&Segment> {
        self.segments.iter().min_by_key(|s| s.offset)
    }

    /// The `PT_LOAD` whose memory image contains `vaddr`.
    pub fn segment_containing(&self, vaddr: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.contains(vaddr))
    }

    /// File offset of the file-backed byte at link-time address `vaddr`.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let rel = vaddr.checked_sub(s.vaddr)?;
            if rel >= s.filesz {
                return None;
            }
            let off = s.offset.checked_add(rel)?;
            (off < self.data.len() as u64).then_some(off)
        })
    }

    /// Link-time address of the byte at file offset `offset`, if it is in a
    /// `PT_LOAD`.
    pub fn offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let rel = offset.checked_sub(s.offset)?;
            (rel < s.filesz).then(|| s.vaddr.wrapping_add(rel))
        })
    }

    /// The `len` file-backed bytes at link-time address `vaddr`. `None` if
    /// any of them is outside the file part of a single `PT_LOAD` (e.g. in
    /// bss) or past the end of the file.
    pub fn bytes_at(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let len64 = len as u64;
        for s in &self.segments {
            let Some(rel) = vaddr.checked_sub(s.vaddr) else {
                continue;
            };
            let Some(end) = rel.checked_add(len64) else {
                continue;
            };
            if end > s.filesz {
                continue;
            }
            let start = s.offset.checked_add(rel)?;
            let stop = start.checked_add(len64)?;
            let start = usize::try_from(start).ok()?;
            let stop = usize::try_from(stop).ok()?;
            if let Some(b) = self.data.get(start..stop) {
                return Some(b);
            }
        }
        None
    }

    /// The file-backed bytes from `vaddr` to the end of the file part of its
    /// `PT_LOAD`.
    pub fn bytes_from(&self, vaddr: u64) -> Option<&[u8]> {
        for s in &self.segments {
            let Some(rel) = vaddr.checked_sub(s.vaddr) else {
                continue;
            };
            if rel >= s.filesz {
                continue;
            }
            let start = usize::try_from(s.offset.checked_add(rel)?).ok()?;
            let stop = usize::try_from(s.offset.checked_add(s.filesz)?).ok()?;
            let stop = stop.min(self.data.len());
            if let Some(b) = self.data.get(start..stop) {
                return Some(b);
            }
        }
        None
    }

    /// Little-endian u64 at `vaddr` (file-backed only).
    pub fn read_u64(&self, vaddr: u64) -> Option<u64> {
        let b = self.bytes_at(vaddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Little-endian u32 at `vaddr` (file-backed only).
    pub fn read_u32(&self, vaddr: u64) -> Option<u32> {
        let b = self.bytes_at(vaddr, 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    /// A pointer stored at `vaddr`, as a link-time address. Linkers normally
    /// write the link-time value into the file even where a PIE has an
    /// `R_X86_64_RELATIVE` relocation; if the file holds 0 there and the
    /// relocation exists, its addend is returned instead.
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        let v = self.read_u64(vaddr)?;
        if v != 0 || !self.is_pie {
            return Some(v);
        }
        let relocs = self
            .relative_relocs
            .get_or_init(|| self.load_relative_relocs());
        match relocs.binary_search_by_key(&vaddr, |r| r.0) {
            Ok(i) => Some(relocs[i].1),
            Err(_) => Some(0),
        }
    }

    fn load_relative_relocs(&self) -> Vec<(u64, u64)> {
        const RELA64_SIZE: usize = 24;
        let mut out = Vec::new();
        for s in &self.sections {
            if s.kind != elf::SHT_RELA || s.nobits {
                continue;
            }
            let Some(bytes) = self.section_bytes(s) else {
                continue;
            };
            for rel in bytes.chunks_exact(RELA64_SIZE) {
                let word = |i: usize| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&rel[i..i + 8]);
                    u64::from_le_bytes(a)
                };
                let (offset, info, addend) = (word(0), word(8), word(16));
                if (info & 0xffff_ffff) as u32 == elf::R_X86_64_RELATIVE {
                    out.push((offset, addend));
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The raw file bytes of section `name` (still compressed if the section
    /// is compressed). `None` for `SHT_NOBITS` or out-of-file sections.
    pub fn section_data(&self, name: &str) -> Option<&[u8]> {
        self.section_bytes(self.section(name)?)
    }

    /// The raw file bytes of `section`.
    pub fn section_bytes(&self, section: &Section) -> Option<&[u8]> {
        if section.nobits {
            return None;
        }
        let start = usize::try_from(section.offset).ok()?;
        let end = start.checked_add(usize::try_from(section.size).ok()?)?;
        self.data.get(start..end)
    }
}

fn scan_notes(
    mut notes: object::read::elf::NoteIterator<'_, elf::FileHeader64<Endianness>>,
    endian: Endianness,
    build_id: &mut Option<String>,
    go_build_id: &mut Option<String>,
) {
    // Bounded by the section size: each note consumes at least 12 bytes.
    while let Ok(Some(note)) = notes.next() {
        let name = note.name();
        let kind = note.n_type(endian);
        if name == elf::ELF_NOTE_GNU && kind == elf::NT_GNU_BUILD_ID && build_id.is_none() {
            let desc = note.desc();
            if !desc.is_empty() {
                *build_id = Some(desc.iter().map(|b| format!("{b:02x}")).collect());
            }
        } else if name == b"Go" && kind == GO_NOTE_BUILDID && go_build_id.is_none() {
            let desc = note.desc();
            let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
            if end > 0 {
                *go_build_id = Some(String::from_utf8_lossy(&desc[..end]).into_owned());
            }
        }
    }
}

fn machine_name(m: u16) -> &'static str {
    match m {
        elf::EM_386 => "i386",
        elf::EM_ARM => "arm",
        elf::EM_AARCH64 => "arm64",
        elf::EM_PPC64 => "ppc64",
        elf::EM_S390 => "s390x",
        elf::EM_RISCV => "riscv",
        elf::EM_MIPS => "mips",
        elf::EM_LOONGARCH => "loong64",
        _ => "unknown",
    }
}

/// Builders of small synthetic ELF files for unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// One segment (and section) of a synthetic ELF.
    pub struct Chunk<'a> {
        pub name: &'a str,
        pub vaddr: u64,
        pub data: &'a [u8],
        /// `PF_*` flags.
        pub flags: u32,
        /// Whether to emit a section header for it.
        pub section: bool,
    }

    fn put16(v: &mut [u8], at: usize, x: u16) {
        v[at..at + 2].copy_from_slice(&x.to_le_bytes());
    }
    fn put32(v: &mut [u8], at: usize, x: u32) {
        v[at..at + 4].copy_from_slice(&x.to_le_bytes());
    }
    fn put64(v: &mut [u8], at: usize, x: u64) {
        v[at..at + 8].copy_from_slice(&x.to_le_bytes());
    }

    /// Builds an ELF64 x86-64 executable with one `PT_LOAD` per chunk and,
    /// for chunks with `section`, a `PROGBITS` section of the same name.
    pub fn build_elf(chunks: &[Chunk<'_>], e_type: u16) -> Vec<u8> {
        let phnum = chunks.len();
        let sect: Vec<&Chunk> = chunks.iter().filter(|c| c.section).collect();
        let mut out = vec![0u8; 64 + 56 * phnum];
        // Segment data, each at a 16-aligned offset congruent to its vaddr
        // modulo 16.
        let mut offsets = Vec::new();
        for c in chunks {
            while out.len() % 4096 != (c.vaddr % 4096) as usize {
                out.push(0);
            }
            offsets.push(out.len() as u64);
            out.extend_from_slice(c.data);
        }
        // Section name table.
        let mut shstr = vec![0u8];
        let mut name_offs = Vec::new();
        for c in &sect {
            name_offs.push(shstr.len() as u32);
            shstr.extend_from_slice(c.name.as_bytes());
            shstr.push(0);
        }
        let shstr_name = shstr.len() as u32;
        shstr.extend_from_slice(b".shstrtab\0");
        let shstr_off = out.len() as u64;
        out.extend_from_slice(&shstr);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len();
        let shnum = sect.len() + 2;
        out.resize(shoff + 64 * shnum, 0);
        // Section headers: null, chunks..., .shstrtab.
        let mut si = 1;
        for (i, c) in chunks.iter().enumerate() {
            if !c.section {
                continue;
            }
            let h = shoff + 64 * si;
            put32(&mut out, h, name_offs[si - 1]);
            put32(&mut out, h + 4, 1); // PROGBITS
            put64(&mut out, h + 8, 2); // SHF_ALLOC
            put64(&mut out, h + 16, c.vaddr);
            put64(&mut out, h + 24, offsets[i]);
            put64(&mut out, h + 32, c.data.len() as u64);
            put64(&mut out, h + 48, 8);
            si += 1;
        }
        let h = shoff + 64 * si;
        put32(&mut out, h, shstr_name);
        put32(&mut out, h + 4, 3); // STRTAB
        put64(&mut out, h + 24, shstr_off);
        put64(&mut out, h + 32, shstr.len() as u64);
        put64(&mut out, h + 48, 1);

        // ELF header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little endian
        out[6] = 1; // EV_CURRENT
        put16(&mut out, 16, e_type);
        put16(&mut out, 18, 62); // x86-64
        put32(&mut out, 20, 1);
        put64(&mut out, 32, 64); // phoff
        put64(&mut out, 40, shoff as u64);
        put16(&mut out, 52, 64);
        put16(&mut out, 54, 56);
        put16(&mut out, 56, phnum as u16);
        put16(&mut out, 58, 64);
        put16(&mut out, 60, shnum as u16);
        put16(&mut out, 62, (shnum - 1) as u16);
        for (i, c) in chunks.iter().enumerate() {
            let h = 64 + 56 * i;
            put32(&mut out, h, 1); // PT_LOAD
            put32(&mut out, h + 4, c.flags);
            put64(&mut out, h + 8, offsets[i]);
            put64(&mut out, h + 16, c.vaddr);
            put64(&mut out, h + 24, c.vaddr);
            put64(&mut out, h + 32, c.data.len() as u64);
            put64(&mut out, h + 40, c.data.len() as u64 + 64); // some bss
            put64(&mut out, h + 48, 4096);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{build_elf, Chunk};
    use super::*;

    fn image(data: Vec<u8>) -> Result<ElfImage> {
        ElfImage::from_bytes(Path::new("test"), data)
    }

    #[test]
    fn rejects_non_elf_and_wrong_arch() {
        assert!(matches!(
            image(b"#!/bin/sh\n".to_vec()),
            Err(Error::BadBinary { .. })
        ));
        assert!(matches!(image(vec![]), Err(Error::BadBinary { .. })));
        let mut d = build_elf(&[], 2);
        d[18] = 183; // aarch64
        let e = image(d).unwrap_err().to_string();
        assert!(e.contains("x86-64"), "{e}");
        let mut d = build_elf(&[], 2);
        d[4] = 1;
        let e = image(d).unwrap_err().to_string();
        assert!(e.contains("32-bit"), "{e}");
    }

    #[test]
    fn segments_and_bytes_at() {
        let text = [0x90u8; 100];
        let data: Vec<u8> = (0..=255u8).collect();
        let d = build_elf(
            &[
                Chunk {
                    name: ".text",
                    vaddr: 0x401000,
                    data: &text,
                    flags: 5,
                    section: true,
                },
                Chunk {
                    name: ".data",
                    vaddr: 0x500010,
                    data: &data,
                    flags: 6,
                    section: true,
                },
            ],
            2,
        );
        let img = image(d).unwrap();
        assert!(!img.is_pie);
        assert_eq!(img.segments.len(), 2);
        assert_eq!(img.first_load().unwrap().vaddr, 0x401000);
        assert_eq!(img.bytes_at(0x401000, 100).unwrap(), &text[..]);
        assert!(img.bytes_at(0x401000, 101).is_none());
        assert_eq!(img.bytes_at(0x500010 + 5, 3).unwrap(), &[5, 6, 7]);
        assert_eq!(img.read_u32(0x500010).unwrap(), 0x03020100);
        assert_eq!(img.read_u64(0x500018).unwrap(), 0x0f0e0d0c0b0a0908);
        // bss part
        assert!(img.bytes_at(0x500010 + 256, 1).is_none());
        assert!(img.segment_containing(0x500010 + 256).is_some());
        assert!(img.bytes_at(u64::MAX, 2).is_none());
        assert!(img.bytes_at(0x500010, usize::MAX).is_none());
        assert!(img.bytes_at(0, 0).is_none());
        assert_eq!(img.section_data(".data").unwrap(), &data[..]);
        assert!(img.section(".data").unwrap().alloc);
        let off = img.vaddr_to_offset(0x500011).unwrap();
        assert_eq!(img.data[off as usize], 1);
        assert_eq!(img.offset_to_vaddr(off), Some(0x500011));
        assert_eq!(img.bytes_from(0x500010 + 250).unwrap().len(), 6);
        assert!(img.symbol("main.main").is_none());
        assert!(img.build_id.is_none());
    }

    #[test]
    fn build_id_notes() {
        fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
            let mut n = Vec::new();
            n.extend_from_slice(&(name.len() as u32).to_le_bytes());
            n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            n.extend_from_slice(&kind.to_le_bytes());
            n.extend_from_slice(name);
            while n.len() % 4 != 0 {
                n.push(0);
            }
            n.extend_from_slice(desc);
            while n.len() % 4 != 0 {
                n.push(0);
            }
            n
        }
        let mut notes = note(b"GNU\0", 3, &[0xde, 0xad, 0xbe, 0xef, 0x01]);
        notes.extend(note(b"Go\0\0", 4, b"abc/def\0"));
        let mut d = build_elf(
            &[Chunk {
                name: ".note",
                vaddr: 0x400f00,
                data: &notes,
                flags: 4,
                section: true,
            }],
            2,
        );
        // Make section 1 an SHT_NOTE with 4-byte alignment.
        let shoff = u64::from_le_bytes(d[40..48].try_into().unwrap()) as usize;
        d[shoff + 64 + 4..shoff + 64 + 8].copy_from_slice(&7u32.to_le_bytes());
        d[shoff + 64 + 48..shoff + 64 + 56].copy_from_slice(&4u64.to_le_bytes());
        let img = image(d).unwrap();
        assert_eq!(img.build_id.as_deref(), Some("deadbeef01"));
        assert_eq!(img.go_build_id.as_deref(), Some("abc/def"));
    }

    #[test]
    fn truncated_files_never_panic() {
        let data = [7u8; 300];
        let d = build_elf(
            &[Chunk {
                name: ".data",
                vaddr: 0x500000,
                data: &data,
                flags: 6,
                section: true,
            }],
            3,
        );
        for cut in (0..d.len()).step_by(7) {
            if let Ok(img) = image(d[..cut].to_vec()) {
                let _ = img.bytes_at(0x500000, 300);
                let _ = img.read_u64(0x500100);
                let _ = img.section_data(".data");
            }
        }
        // Garbage headers.
        let mut seed = 0x12345678u32;
        for _ in 0..200 {
            let mut g = d.clone();
            for _ in 0..8 {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                let i = (seed as usize >> 8) % 128.min(g.len());
                g[i] = (seed >> 24) as u8;
            }
            if let Ok(img) = image(g) {
                let _ = img.bytes_at(0x500000, 16);
                let _ = img.read_ptr(0x500000);
            }
        }
    }
}
