//! Runtime struct layout from DWARF.
//!
//! The Go linker emits every type DIE once, in a compile unit named
//! `runtime` (there are several units with that name; types go into one of
//! them), and the package-level variables of the runtime in another `runtime`
//! unit. We scan only the top-level entries of the `runtime` units, stop as
//! soon as everything wanted was found, and never descend into functions.
//! What is wanted is the list of [`layout::STRUCTS`]; a field path such as
//! `stack.lo` is resolved by following the member's type to its struct.
//!
//! Handles all DWARF flavours Go has produced: GNU `.zdebug_*` sections with
//! a `ZLIB` header (Go ≤1.15), `SHF_COMPRESSED` `.debug_*` sections
//! (1.16+), and DWARF 5 (1.26+: `.debug_addr`, `DW_FORM_strx`, ...).
//! Decompression is done by `object`.
//!
//! Addresses returned are link-time addresses, as written in the file.

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{
    AttributeValue, DebuggingInformationEntry, EndianSlice, LittleEndian, Reader, UnitHeader,
};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::binary::elf::ElfImage;
use crate::layout::{self, Globals, Layout, ProfileGlobals, RawLayout, RawStruct};

type R<'a> = EndianSlice<'a, LittleEndian>;
type Dwarf<'a> = gimli::Dwarf<R<'a>>;

/// Shown to users when the binary carries no DWARF.
const NO_DWARF: &str = "no DWARF debug info (binary built with -ldflags=-w or stripped)";

/// Whether the binary carries DWARF debug info (a `.debug_info` section,
/// compressed or not).
pub fn has_dwarf(image: &ElfImage) -> bool {
    [".debug_info", ".zdebug_info"]
        .iter()
        .any(|name| image.section(name).is_some_and(|s| s.size > 0))
}

/// Reads the offsets of the runtime structs gospy uses and the link-time
/// addresses of the runtime globals.
pub fn read_layout(image: &ElfImage) -> Result<Layout, String> {
    read_layout_from_bytes(&image.data)
}

/// Like [`read_layout`], from the bytes of a whole ELF file.
pub fn read_layout_from_bytes(data: &[u8]) -> Result<Layout, String> {
    let file = parse_elf(data)?;
    let globals_from_symtab = symtab_globals(&file);

    let sections = load_sections(&file)?;
    let dwarf = sections.dwarf();

    let mut wanted = Wanted::for_layout();
    for name in GLOBAL_NAMES {
        if !globals_from_symtab.contains_key(name) {
            wanted.vars.insert(name.to_string(), None);
        }
    }
    scan(&dwarf, &mut wanted)?;

    let global = |name: &str| -> Option<VarInfo> {
        globals_from_symtab
            .get(name)
            .copied()
            .or_else(|| wanted.vars.get(name).copied().flatten())
    };
    let raw = raw_layout(&dwarf, &wanted)?;
    let mut layout = Layout::from_source(&raw)?;
    layout.globals = Globals {
        allgs: required_global(global("runtime.allgs"), "runtime.allgs")?,
        allglen: global("runtime.allglen").map(|v| v.addr),
        allm: required_global(global("runtime.allm"), "runtime.allm")?,
        firstmoduledata: required_global(
            global("runtime.firstmoduledata"),
            "runtime.firstmoduledata",
        )?,
        wait_reason_strings: global("runtime.waitReasonStrings")
            .and_then(|v| Some((v.addr, v.size? / 16)))
            .filter(|&(_, n)| n > 0),
        runtime_init_time: global("runtime.runtimeInitTime").map(|v| v.addr),
        allp: global("runtime.allp").map(|v| v.addr),
        sched: global("runtime.sched").map(|v| v.addr),
        gomaxprocs: global("runtime.gomaxprocs").map(|v| v.addr),
        ncpu: global("runtime.ncpu")
            .or_else(|| global("runtime.numCPUStartup"))
            .map(|v| v.addr),
        mheap: global("runtime.mheap_").map(|v| v.addr),
        memstats: global("runtime.memstats").map(|v| v.addr),
        gc_controller: global("runtime.gcController").map(|v| v.addr),
        work: global("runtime.work").map(|v| v.addr),
        profiles: ProfileGlobals {
            mbuckets: global("runtime.mbuckets").map(|v| v.addr),
            bbuckets: global("runtime.bbuckets").map(|v| v.addr),
            xbuckets: global("runtime.xbuckets").map(|v| v.addr),
            mprof_cycle: global("runtime.mProfCycle")
                .or_else(|| global("runtime.mProf"))
                .map(|v| v.addr),
            mem_profile_rate: global("runtime.MemProfileRate").map(|v| v.addr),
            disable_memory_profiling: global("runtime.disableMemoryProfiling").map(|v| v.addr),
            block_profile_rate: global("runtime.blockprofilerate").map(|v| v.addr),
            mutex_profile_rate: global("runtime.mutexprofilerate").map(|v| v.addr),
            ticks: global("runtime.ticks").map(|v| v.addr),
        },
    };
    Ok(layout)
}

/// The size of every struct and the offset of every field listed in
/// [`layout::STRUCTS`] (absent ones as `None`), from the bytes of a whole
/// ELF file: what `scripts/gen-layout-tables` turns into the built-in
/// tables, and what [`read_layout`] builds its `Layout` from.
pub fn read_raw_layout_from_bytes(data: &[u8]) -> Result<RawLayout, String> {
    let file = parse_elf(data)?;
    let sections = load_sections(&file)?;
    let dwarf = sections.dwarf();
    let mut wanted = Wanted::for_layout();
    scan(&dwarf, &mut wanted)?;
    raw_layout(&dwarf, &wanted)
}

/// All members of the struct type `struct_name` (e.g. `runtime.g`) with their
/// byte offsets, in DWARF order. Members without a name are reported as "".
pub fn struct_layout(image: &ElfImage, struct_name: &str) -> Result<Vec<(String, u64)>, String> {
    struct_layout_from_bytes(&image.data, struct_name)
}

/// Like [`struct_layout`], from the bytes of a whole ELF file.
pub fn struct_layout_from_bytes(
    data: &[u8],
    struct_name: &str,
) -> Result<Vec<(String, u64)>, String> {
    let file = parse_elf(data)?;
    let sections = load_sections(&file)?;
    let dwarf = sections.dwarf();
    let mut wanted = Wanted::default();
    wanted.want_struct(&[struct_name], true);
    scan(&dwarf, &mut wanted)?;
    match wanted.structs.remove(struct_name).flatten() {
        Some(s) => Ok(s.members.into_iter().map(|m| (m.name, m.offset)).collect()),
        None => Err(format!("DWARF: struct type {struct_name} not found")),
    }
}

/// The [`RawLayout`] of the structs found by a scan for
/// [`Wanted::for_layout`]: nested field paths (`stack.lo`) are resolved by
/// following each member's type.
fn raw_layout(dwarf: &Dwarf<'_>, wanted: &Wanted) -> Result<RawLayout, String> {
    let mut structs = Vec::with_capacity(layout::STRUCTS.len());
    for spec in layout::STRUCTS {
        let found = spec
            .dwarf_names()
            .find_map(|n| wanted.structs.get(n).and_then(Option::as_ref));
        // Go always emits the byte size; without it offsets cannot be
        // checked, so such a struct counts as absent (an error if required).
        let Some((info, size)) = found.and_then(|i| Some((i, i.size?))) else {
            if spec.required && found.is_some() {
                return Err(format!("DWARF: struct {} has no byte size", spec.name));
            }
            structs.push(RawStruct {
                name: spec.name,
                size: None,
                fields: spec.fields.iter().map(|f| (f.name, None)).collect(),
            });
            continue;
        };
        let mut fields = Vec::with_capacity(spec.fields.len());
        for field in spec.fields {
            let mut offset = None;
            for path in field.dwarf_paths() {
                offset = member_path_offset(dwarf, info, path)?;
                if offset.is_some() {
                    break;
                }
            }
            fields.push((field.name, offset));
        }
        structs.push(RawStruct {
            name: spec.name,
            size: Some(size),
            fields,
        });
    }
    Ok(RawLayout { structs })
}

/// Offset of the member path `a.b.c` inside `info`: `a`'s offset plus `b`'s
/// inside `a`'s type, and so on. `None` if a component does not exist.
fn member_path_offset(
    dwarf: &Dwarf<'_>,
    info: &StructInfo,
    path: &str,
) -> Result<Option<u64>, String> {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return Ok(None);
    };
    let Some(mut member) = info.member(first).cloned() else {
        return Ok(None);
    };
    let mut offset = member.offset;
    for part in parts {
        let Some(ty) = member.ty else {
            return Ok(None);
        };
        let Some(inner) = struct_at(dwarf, ty)? else {
            return Ok(None);
        };
        let Some(m) = inner.member(part) else {
            return Ok(None);
        };
        offset = offset
            .checked_add(m.offset)
            .ok_or_else(|| format!("DWARF: offset of {path} overflows"))?;
        member = m.clone();
    }
    Ok(Some(offset))
}

/// The struct type at `offset` in `.debug_info` (typedefs followed), or
/// `None` if it is not a struct.
fn struct_at(
    dwarf: &Dwarf<'_>,
    mut offset: gimli::DebugInfoOffset<usize>,
) -> Result<Option<StructInfo>, String> {
    // Typedef chains in Go's DWARF are short; the bound stops cycles in
    // corrupt input.
    for _ in 0..8 {
        let Some(header) = unit_containing(dwarf, offset) else {
            return Ok(None);
        };
        let Some(unit_offset) = offset.to_unit_offset(&header) else {
            return Ok(None);
        };
        let abbrevs = dwarf.abbreviations(&header).map_err(gerr)?;
        let ctx = UnitCtx::new(dwarf, &header, &abbrevs)?;
        let mut tree = header
            .entries_tree(&abbrevs, Some(unit_offset))
            .map_err(gerr)?;
        let node = tree.root().map_err(gerr)?;
        let entry = node.entry();
        match entry.tag() {
            gimli::DW_TAG_structure_type => return read_struct(&ctx, node).map(Some),
            gimli::DW_TAG_typedef => {
                let next = entry.attr_value(gimli::DW_AT_type).map_err(gerr)?;
                match next.and_then(|v| global_ref(v, &header)) {
                    Some(next) => offset = next,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// A type reference as an offset in `.debug_info`.
fn global_ref(
    value: AttributeValue<R<'_>>,
    header: &UnitHeader<R<'_>>,
) -> Option<gimli::DebugInfoOffset<usize>> {
    match value {
        AttributeValue::UnitRef(off) => off.to_debug_info_offset(header),
        AttributeValue::DebugInfoRef(off) => Some(off),
        _ => None,
    }
}

const GLOBAL_NAMES: [&str; 25] = [
    "runtime.allgs",
    "runtime.allglen",
    "runtime.allm",
    "runtime.firstmoduledata",
    "runtime.waitReasonStrings",
    "runtime.runtimeInitTime",
    "runtime.allp",
    "runtime.sched",
    "runtime.gomaxprocs",
    "runtime.ncpu",
    "runtime.numCPUStartup",
    "runtime.mheap_",
    "runtime.memstats",
    "runtime.gcController",
    "runtime.work",
    "runtime.mbuckets",
    "runtime.bbuckets",
    "runtime.xbuckets",
    "runtime.mProfCycle",
    "runtime.mProf",
    "runtime.MemProfileRate",
    "runtime.disableMemoryProfiling",
    "runtime.blockprofilerate",
    "runtime.mutexprofilerate",
    "runtime.ticks",
];

/// A struct type found in DWARF.
#[derive(Debug, Clone, Default)]
struct StructInfo {
    size: Option<u64>,
    members: Vec<Member>,
}

impl StructInfo {
    fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// A struct member: name ("" if none), byte offset and type (an offset in
/// `.debug_info`, to follow nested field paths).
#[derive(Debug, Clone)]
struct Member {
    name: String,
    offset: u64,
    ty: Option<gimli::DebugInfoOffset<usize>>,
}

/// A variable: link-time address and byte size (if known).
#[derive(Debug, Clone, Copy)]
struct VarInfo {
    addr: u64,
    size: Option<u64>,
}

/// What the scan looks for; `None` until found.
#[derive(Default)]
struct Wanted {
    /// By DWARF type name.
    structs: HashMap<String, Option<StructInfo>>,
    /// The alternative names of each wanted struct (one is enough), and
    /// whether it is required.
    groups: Vec<(Vec<String>, bool)>,
    vars: HashMap<String, Option<VarInfo>>,
}

impl Wanted {
    /// Every struct of [`layout::STRUCTS`], under all its DWARF names.
    fn for_layout() -> Wanted {
        let mut w = Wanted::default();
        for spec in layout::STRUCTS {
            let names: Vec<&str> = spec.dwarf_names().collect();
            w.want_struct(&names, spec.required);
        }
        w
    }
    fn want_struct(&mut self, names: &[&str], required: bool) {
        for &n in names {
            self.structs.insert(n.to_string(), None);
        }
        self.groups
            .push((names.iter().map(|n| n.to_string()).collect(), required));
    }
    fn group_found(&self, names: &[String]) -> bool {
        names
            .iter()
            .any(|n| matches!(self.structs.get(n), Some(Some(_))))
    }
    fn structs_done(&self) -> bool {
        self.groups.iter().all(|(names, _)| self.group_found(names))
    }
    fn required_structs_done(&self) -> bool {
        self.groups
            .iter()
            .all(|(names, required)| !required || self.group_found(names))
    }
    fn done(&self) -> bool {
        self.structs_done() && self.vars.values().all(Option::is_some)
    }
}

fn required_global(v: Option<VarInfo>, name: &str) -> Result<u64, String> {
    v.map(|v| v.addr).ok_or_else(|| {
        format!("runtime global {name} found neither in the ELF symbol table nor in DWARF")
    })
}

fn parse_elf(data: &[u8]) -> Result<object::File<'_>, String> {
    object::File::parse(data).map_err(|e| format!("cannot parse ELF: {e}"))
}

/// Wanted globals from `.symtab`: name → (address, size).
fn symtab_globals(file: &object::File<'_>) -> HashMap<&'static str, VarInfo> {
    let mut found = HashMap::new();
    for sym in file.symbols() {
        let Ok(name) = sym.name() else { continue };
        if !name.starts_with("runtime.") || sym.address() == 0 {
            continue;
        }
        if let Some(&key) = GLOBAL_NAMES.iter().find(|&&n| n == name) {
            let size = sym.size();
            found.entry(key).or_insert(VarInfo {
                addr: sym.address(),
                size: (size != 0).then_some(size),
            });
            if found.len() == GLOBAL_NAMES.len() {
                break;
            }
        }
    }
    found
}

/// The DWARF sections gospy reads, decompressed (GNU `.zdebug_*` and
/// SHF_COMPRESSED alike; borrowed from the file where not compressed). Only
/// the few needed ones are loaded, and so decompressed; the others are left
/// empty.
pub struct DwarfSections<'d> {
    info: Cow<'d, [u8]>,
    abbrev: Cow<'d, [u8]>,
    str: Cow<'d, [u8]>,
    addr: Cow<'d, [u8]>,
    str_offsets: Cow<'d, [u8]>,
    line_str: Cow<'d, [u8]>,
}

impl<'d> DwarfSections<'d> {
    /// The sections of `file`; `None` when it has no (or an empty)
    /// `.debug_info`, for the caller to explain in its own words.
    pub fn load(file: &object::File<'d>) -> Result<Option<DwarfSections<'d>>, String> {
        // `section_by_name(".debug_info")` also finds GNU `.zdebug_info`
        // (Go <= 1.15), and `uncompressed_data` undoes both compression
        // schemes.
        let load = |name: &str| -> Result<Option<Cow<'d, [u8]>>, String> {
            match file.section_by_name(name) {
                None => Ok(None),
                Some(s) => s
                    .uncompressed_data()
                    .map(Some)
                    .map_err(|e| format!("cannot decompress DWARF section {name}: {e}")),
            }
        };
        let info = match load(".debug_info")? {
            Some(d) if !d.is_empty() => d,
            _ => return Ok(None),
        };
        let abbrev = load(".debug_abbrev")?
            .ok_or("malformed DWARF: .debug_info present but .debug_abbrev missing")?;
        let empty = || Cow::Borrowed(&[][..]);
        Ok(Some(DwarfSections {
            info,
            abbrev,
            str: load(".debug_str")?.unwrap_or_else(empty),
            addr: load(".debug_addr")?.unwrap_or_else(empty),
            str_offsets: load(".debug_str_offsets")?.unwrap_or_else(empty),
            line_str: load(".debug_line_str")?.unwrap_or_else(empty),
        }))
    }

    /// The same sections, owning their bytes (to keep beside the file).
    pub fn into_owned(self) -> DwarfSections<'static> {
        let own = |c: Cow<'d, [u8]>| Cow::Owned(c.into_owned());
        DwarfSections {
            info: own(self.info),
            abbrev: own(self.abbrev),
            str: own(self.str),
            addr: own(self.addr),
            str_offsets: own(self.str_offsets),
            line_str: own(self.line_str),
        }
    }

    /// A gimli reader of these sections.
    pub fn dwarf<'s>(&'s self) -> Dwarf<'s> {
        let r = |d: &'s Cow<'d, [u8]>| EndianSlice::new(d, LittleEndian);
        Dwarf {
            debug_info: r(&self.info).into(),
            debug_abbrev: r(&self.abbrev).into(),
            debug_str: r(&self.str).into(),
            debug_addr: r(&self.addr).into(),
            debug_str_offsets: r(&self.str_offsets).into(),
            debug_line_str: r(&self.line_str).into(),
            ..Default::default()
        }
    }
}

/// The sections of `file`, or the reason (no DWARF) there are none.
fn load_sections<'d>(file: &object::File<'d>) -> Result<DwarfSections<'d>, String> {
    DwarfSections::load(file)?.ok_or_else(|| NO_DWARF.to_string())
}

/// A gimli error as a message.
pub(crate) fn gerr(e: gimli::Error) -> String {
    format!("malformed DWARF: {e}")
}

/// What we need of a unit besides its header: the bases for indexed forms.
struct UnitCtx<'a, 'u> {
    dwarf: &'u Dwarf<'a>,
    header: &'u UnitHeader<R<'a>>,
    str_offsets_base: gimli::DebugStrOffsetsBase<usize>,
    addr_base: gimli::DebugAddrBase<usize>,
}

impl<'a, 'u> UnitCtx<'a, 'u> {
    /// The context of a unit, with the bases its root entry declares.
    fn new(
        dwarf: &'u Dwarf<'a>,
        header: &'u UnitHeader<R<'a>>,
        abbrevs: &gimli::Abbreviations,
    ) -> Result<Self, String> {
        let mut ctx = UnitCtx {
            dwarf,
            header,
            str_offsets_base: gimli::DebugStrOffsetsBase::default_for_encoding_and_file(
                header.encoding(),
                gimli::DwarfFileType::Main,
            ),
            addr_base: gimli::DebugAddrBase(0),
        };
        let mut entries = header.entries(abbrevs);
        if let Some((_, root)) = entries.next_dfs().map_err(gerr)? {
            if let Ok(Some(AttributeValue::DebugStrOffsetsBase(b))) =
                root.attr_value(gimli::DW_AT_str_offsets_base)
            {
                ctx.str_offsets_base = b;
            }
            if let Ok(Some(AttributeValue::DebugAddrBase(b))) =
                root.attr_value(gimli::DW_AT_addr_base)
            {
                ctx.addr_base = b;
            }
        }
        Ok(ctx)
    }

    fn string(&self, value: AttributeValue<R<'a>>) -> Option<R<'a>> {
        match value {
            AttributeValue::String(s) => Some(s),
            AttributeValue::DebugStrRef(off) => self.dwarf.debug_str.get_str(off).ok(),
            AttributeValue::DebugLineStrRef(off) => self.dwarf.debug_line_str.get_str(off).ok(),
            AttributeValue::DebugStrOffsetsIndex(index) => {
                let off = self
                    .dwarf
                    .debug_str_offsets
                    .get_str_offset(self.header.format(), self.str_offsets_base, index)
                    .ok()?;
                self.dwarf.debug_str.get_str(off).ok()
            }
            _ => None,
        }
    }

    fn name(&self, entry: &DebuggingInformationEntry<'_, '_, R<'a>>) -> Option<R<'a>> {
        let value = entry.attr_value(gimli::DW_AT_name).ok()??;
        self.string(value)
    }

    /// The address of a variable whose location is a single `DW_OP_addr`
    /// (or `DW_OP_addrx`) expression.
    fn var_addr(&self, entry: &DebuggingInformationEntry<'_, '_, R<'a>>) -> Option<u64> {
        let expr = entry
            .attr_value(gimli::DW_AT_location)
            .ok()??
            .exprloc_value()?;
        let mut bytes = expr.0;
        match gimli::Operation::parse(&mut bytes, self.header.encoding()).ok()? {
            gimli::Operation::Address { address } => Some(address),
            gimli::Operation::AddressIndex { index } => self
                .dwarf
                .debug_addr
                .get_address(self.header.address_size(), self.addr_base, index)
                .ok(),
            _ => None,
        }
    }
}

/// Byte offset of a struct member (also used by `var`'s type reader).
pub(crate) fn member_offset(
    value: AttributeValue<R<'_>>,
    encoding: gimli::Encoding,
) -> Option<u64> {
    if let Some(v) = value.udata_value() {
        return Some(v);
    }
    // Old-style location expression: DW_OP_plus_uconst N.
    let mut bytes = value.exprloc_value()?.0;
    match gimli::Operation::parse(&mut bytes, encoding).ok()? {
        gimli::Operation::PlusConstant { value } if bytes.is_empty() => Some(value),
        _ => None,
    }
}

/// Scans `runtime` units first, then (only if required structs are still
/// missing) all other units, filling `wanted`. Variables are only searched
/// for in the `runtime` units, where the runtime's globals live. Optional
/// structs absent from the `runtime` units are absent: the Go linker puts
/// every type there.
fn scan(dwarf: &Dwarf<'_>, wanted: &mut Wanted) -> Result<(), String> {
    if wanted.done() {
        return Ok(());
    }
    for pass in [Pass::Runtime, Pass::Others] {
        if pass == Pass::Others && wanted.required_structs_done() {
            break;
        }
        let mut units = dwarf.units();
        while let Some(header) = units.next().map_err(gerr)? {
            scan_unit(dwarf, &header, wanted, pass)?;
            if wanted.done() || (pass == Pass::Others && wanted.required_structs_done()) {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Runtime,
    Others,
}

fn scan_unit<'a>(
    dwarf: &Dwarf<'a>,
    header: &UnitHeader<R<'a>>,
    wanted: &mut Wanted,
    pass: Pass,
) -> Result<(), String> {
    let abbrevs = dwarf.abbreviations(header).map_err(gerr)?;
    let ctx = UnitCtx::new(dwarf, header, &abbrevs)?;
    let mut tree = header.entries_tree(&abbrevs, None).map_err(gerr)?;
    let root = tree.root().map_err(gerr)?;
    {
        let entry = root.entry();
        if entry.tag() != gimli::DW_TAG_compile_unit {
            return Ok(());
        }
        let is_runtime = ctx.name(entry).is_some_and(|n| n.slice() == b"runtime");
        if is_runtime != (pass == Pass::Runtime) {
            return Ok(());
        }
    }
    let want_vars = pass == Pass::Runtime && wanted.vars.values().any(Option::is_none);

    let mut children = root.children();
    while let Some(node) = children.next().map_err(gerr)? {
        let entry = node.entry();
        let tag = entry.tag();
        if tag == gimli::DW_TAG_structure_type {
            let Some(name) = ctx.name(entry) else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(name.slice()) else {
                continue;
            };
            match wanted.structs.get(name) {
                Some(None) => {}
                _ => continue,
            }
            let name = name.to_string();
            let info = read_struct(&ctx, node)?;
            wanted.structs.insert(name, Some(info));
        } else if want_vars && tag == gimli::DW_TAG_variable {
            let Some(name) = ctx.name(entry) else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(name.slice()) else {
                continue;
            };
            let Some(slot) = wanted.vars.get_mut(name) else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
            let Some(addr) = ctx.var_addr(entry) else {
                continue;
            };
            let size = entry
                .attr_value(gimli::DW_AT_type)
                .ok()
                .flatten()
                .and_then(|t| type_byte_size(dwarf, header, t));
            *slot = Some(VarInfo { addr, size });
        } else {
            continue;
        }
        if wanted.done() {
            break;
        }
    }
    Ok(())
}

/// The size and members of the struct type DIE `node`.
fn read_struct<'a>(
    ctx: &UnitCtx<'a, '_>,
    node: gimli::EntriesTreeNode<'_, '_, '_, R<'a>>,
) -> Result<StructInfo, String> {
    let entry = node.entry();
    let name = ctx
        .name(entry)
        .map(|n| String::from_utf8_lossy(n.slice()).into_owned())
        .unwrap_or_default();
    let size = entry
        .attr_value(gimli::DW_AT_byte_size)
        .map_err(gerr)?
        .and_then(|v| v.udata_value());
    let mut members = Vec::new();
    let mut kids = node.children();
    while let Some(member) = kids.next().map_err(gerr)? {
        let m = member.entry();
        if m.tag() != gimli::DW_TAG_member {
            continue;
        }
        let mname = ctx
            .name(m)
            .map(|n| String::from_utf8_lossy(n.slice()).into_owned())
            .unwrap_or_default();
        let offset = m
            .attr_value(gimli::DW_AT_data_member_location)
            .map_err(gerr)?
            .and_then(|v| member_offset(v, ctx.header.encoding()))
            .ok_or_else(|| {
                format!("DWARF: member {name}.{mname} has no usable data_member_location")
            })?;
        let ty = m
            .attr_value(gimli::DW_AT_type)
            .map_err(gerr)?
            .and_then(|v| global_ref(v, ctx.header));
        members.push(Member {
            name: mname,
            offset,
            ty,
        });
    }
    Ok(StructInfo { size, members })
}

/// `DW_AT_byte_size` of the type a `DW_AT_type` attribute refers to (in this
/// unit or, for `DW_FORM_ref_addr`, in any unit). Typedefs are followed.
fn type_byte_size<'a>(
    dwarf: &Dwarf<'a>,
    header: &UnitHeader<R<'a>>,
    mut reference: AttributeValue<R<'a>>,
) -> Option<u64> {
    let mut current = *header;
    for _ in 0..8 {
        let (unit, offset) = match reference {
            AttributeValue::UnitRef(off) => (current, off),
            AttributeValue::DebugInfoRef(off) => {
                let unit = unit_containing(dwarf, off)?;
                let uoff = off.to_unit_offset(&unit)?;
                (unit, uoff)
            }
            _ => return None,
        };
        let abbrevs = dwarf.abbreviations(&unit).ok()?;
        let entry = unit.entry(&abbrevs, offset).ok()?;
        if let Some(size) = entry
            .attr_value(gimli::DW_AT_byte_size)
            .ok()
            .flatten()
            .and_then(|v| v.udata_value())
        {
            return Some(size);
        }
        reference = entry.attr_value(gimli::DW_AT_type).ok()??;
        current = unit;
    }
    None
}

fn unit_containing<'a>(
    dwarf: &Dwarf<'a>,
    offset: gimli::DebugInfoOffset<usize>,
) -> Option<UnitHeader<R<'a>>> {
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let start = header.offset().as_debug_info_offset()?.0;
        let end = start.checked_add(header.length_including_self())?;
        if (start..end).contains(&offset.0) {
            return Some(header);
        }
        if start > offset.0 {
            return None;
        }
    }
    None
}
