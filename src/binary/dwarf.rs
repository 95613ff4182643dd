//! Runtime struct layout from DWARF.
//!
//! The Go linker emits every type DIE once, in a compile unit named
//! `runtime` (there are several units with that name; types go into one of
//! them), and the package-level variables of the runtime in another `runtime`
//! unit. We scan only the top-level entries of the `runtime` units, stop as
//! soon as everything wanted was found, and never descend into functions.
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
use crate::layout::{GLayout, Globals, GobufLayout, Layout, MLayout, ModuledataLayout};

type R<'a> = EndianSlice<'a, LittleEndian>;
type Dwarf<'a> = gimli::Dwarf<R<'a>>;

/// Shown to users when the binary carries no DWARF.
const NO_DWARF: &str = "no DWARF debug info (binary built with -ldflags=-w or stripped); \
gospy currently reads the Go runtime's struct layouts from DWARF, so it needs a binary \
built without -w (and without -s) and not stripped";

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
    let dwarf = borrow_sections(&sections);

    let mut wanted = Wanted::default();
    for name in [G, GOBUF, M, MODULEDATA, STACK] {
        wanted.structs.insert(name.to_string(), None);
    }
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
    let g = StructView::new(&wanted, G)?;
    let gobuf = StructView::new(&wanted, GOBUF)?;
    let m = StructView::new(&wanted, M)?;
    let md = StructView::new(&wanted, MODULEDATA)?;
    // `g.stack` is a `runtime.stack{lo, hi}`; `stack.lo` is at +0 in every
    // Go version, but take it from DWARF when we have it.
    let stack_lo = StructView::new(&wanted, STACK)
        .ok()
        .and_then(|s| s.opt("lo"))
        .unwrap_or(0);

    let layout = Layout {
        g: GLayout {
            size: g.size()?,
            stack: g
                .req("stack")?
                .checked_add(stack_lo)
                .ok_or("DWARF: runtime.stack.lo offset overflows")?,
            m: g.req("m")?,
            sched: g.req("sched")?,
            syscallsp: g.req("syscallsp")?,
            syscallpc: g.req("syscallpc")?,
            syscallbp: g.opt("syscallbp"),
            atomicstatus: g.req("atomicstatus")?,
            goid: g.req("goid")?,
            waitsince: g.req("waitsince")?,
            waitreason: g.req("waitreason")?,
            lockedm: g.req("lockedm")?,
            parent_goid: g.opt("parentGoid"),
            gopc: g.req("gopc")?,
            startpc: g.req("startpc")?,
            labels: g.req("labels")?,
            tracking_seq: g.opt("trackingSeq"),
        },
        gobuf: GobufLayout {
            sp: gobuf.req("sp")?,
            pc: gobuf.req("pc")?,
            bp: gobuf.req("bp")?,
        },
        m: MLayout {
            size: m.size()?,
            g0: m.req("g0")?,
            procid: m.req("procid")?,
            gsignal: m.req("gsignal")?,
            curg: m.req("curg")?,
            p: m.req("p")?,
            id: m.req("id")?,
            alllink: m.req("alllink")?,
            lockedg: m.req("lockedg")?,
            incgo: m.req("incgo")?,
            vdso_sp: m.req("vdsoSP")?,
            vdso_pc: m.req("vdsoPC")?,
        },
        moduledata: ModuledataLayout {
            pc_header: md.opt("pcHeader"),
            text: md.req("text")?,
            etext: md.req("etext")?,
            gofunc: md.opt("gofunc"),
        },
        globals: Globals {
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
        },
    };
    Ok(layout)
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
    let dwarf = borrow_sections(&sections);
    let mut wanted = Wanted::default();
    wanted.structs.insert(struct_name.to_string(), None);
    scan(&dwarf, &mut wanted)?;
    match wanted.structs.remove(struct_name).flatten() {
        Some(s) => Ok(s.members),
        None => Err(format!("DWARF: struct type {struct_name} not found")),
    }
}

const G: &str = "runtime.g";
const GOBUF: &str = "runtime.gobuf";
const M: &str = "runtime.m";
const MODULEDATA: &str = "runtime.moduledata";
const STACK: &str = "runtime.stack";

const GLOBAL_NAMES: [&str; 6] = [
    "runtime.allgs",
    "runtime.allglen",
    "runtime.allm",
    "runtime.firstmoduledata",
    "runtime.waitReasonStrings",
    "runtime.runtimeInitTime",
];

/// A struct type found in DWARF.
#[derive(Debug, Clone, Default)]
struct StructInfo {
    size: Option<u64>,
    members: Vec<(String, u64)>,
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
    structs: HashMap<String, Option<StructInfo>>,
    vars: HashMap<String, Option<VarInfo>>,
}

impl Wanted {
    fn done(&self) -> bool {
        self.structs.values().all(Option::is_some) && self.vars.values().all(Option::is_some)
    }
    fn structs_done(&self) -> bool {
        self.structs.values().all(Option::is_some)
    }
}

/// Member lookups in one wanted struct, with error messages naming it.
struct StructView<'w> {
    name: &'static str,
    info: &'w StructInfo,
}

impl<'w> StructView<'w> {
    fn new(wanted: &'w Wanted, name: &'static str) -> Result<Self, String> {
        match wanted.structs.get(name) {
            Some(Some(info)) => Ok(StructView { name, info }),
            _ => Err(format!(
                "DWARF: struct type {name} not found in the debug info"
            )),
        }
    }
    fn size(&self) -> Result<u64, String> {
        self.info
            .size
            .ok_or_else(|| format!("DWARF: struct {} has no byte size", self.name))
    }
    fn opt(&self, field: &str) -> Option<u64> {
        self.info
            .members
            .iter()
            .find(|(n, _)| n == field)
            .map(|&(_, off)| off)
    }
    fn req(&self, field: &str) -> Result<u64, String> {
        let off = self.opt(field).ok_or_else(|| {
            format!(
                "DWARF: struct {} has no field `{field}` (unsupported Go version?)",
                self.name
            )
        })?;
        // A sane offset lies inside the struct; this also keeps later
        // `offset + len` arithmetic far from overflow on malformed input.
        if let Some(size) = self.info.size {
            if off >= size {
                return Err(format!(
                    "DWARF: field {}.{field} at offset {off} lies outside the struct (size {size})",
                    self.name
                ));
            }
        }
        Ok(off)
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

/// The DWARF sections we read, decompressed. Only the few needed ones are
/// loaded (and so decompressed); the others stay empty.
struct Sections<'d> {
    info: Cow<'d, [u8]>,
    abbrev: Cow<'d, [u8]>,
    str: Cow<'d, [u8]>,
    addr: Cow<'d, [u8]>,
    str_offsets: Cow<'d, [u8]>,
    line_str: Cow<'d, [u8]>,
}

fn load_sections<'d>(file: &object::File<'d>) -> Result<Sections<'d>, String> {
    // `section_by_name(".debug_info")` also finds GNU `.zdebug_info`, and
    // `uncompressed_data` undoes both compression schemes.
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
        _ => return Err(NO_DWARF.to_string()),
    };
    let abbrev = load(".debug_abbrev")?.ok_or_else(|| {
        format!("DWARF: .debug_info present but .debug_abbrev missing; {NO_DWARF}")
    })?;
    let empty = || Cow::Borrowed(&[][..]);
    Ok(Sections {
        info,
        abbrev,
        str: load(".debug_str")?.unwrap_or_else(empty),
        addr: load(".debug_addr")?.unwrap_or_else(empty),
        str_offsets: load(".debug_str_offsets")?.unwrap_or_else(empty),
        line_str: load(".debug_line_str")?.unwrap_or_else(empty),
    })
}

fn borrow_sections<'a>(s: &'a Sections<'_>) -> Dwarf<'a> {
    let r = |d: &'a Cow<'_, [u8]>| EndianSlice::new(d, LittleEndian);
    Dwarf {
        debug_info: r(&s.info).into(),
        debug_abbrev: r(&s.abbrev).into(),
        debug_str: r(&s.str).into(),
        debug_addr: r(&s.addr).into(),
        debug_str_offsets: r(&s.str_offsets).into(),
        debug_line_str: r(&s.line_str).into(),
        ..Default::default()
    }
}

fn gerr(e: gimli::Error) -> String {
    format!("malformed DWARF: {e}")
}

/// What we need of a unit besides its header: the bases for indexed forms.
struct UnitCtx<'a, 'u> {
    dwarf: &'u Dwarf<'a>,
    header: &'u UnitHeader<R<'a>>,
    str_offsets_base: gimli::DebugStrOffsetsBase<usize>,
    addr_base: gimli::DebugAddrBase<usize>,
}

impl<'a> UnitCtx<'a, '_> {
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

/// Byte offset of a struct member.
fn member_offset(value: AttributeValue<R<'_>>, encoding: gimli::Encoding) -> Option<u64> {
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

/// Scans `runtime` units first, then (only if structs are still missing)
/// all other units, filling `wanted`. Variables are only searched for in the
/// `runtime` units, where the runtime's globals live.
fn scan(dwarf: &Dwarf<'_>, wanted: &mut Wanted) -> Result<(), String> {
    if wanted.done() {
        return Ok(());
    }
    for pass in [Pass::Runtime, Pass::Others] {
        let mut units = dwarf.units();
        while let Some(header) = units.next().map_err(gerr)? {
            scan_unit(dwarf, &header, wanted, pass)?;
            if wanted.done() || (pass == Pass::Others && wanted.structs_done()) {
                return Ok(());
            }
        }
        if wanted.structs_done() {
            break;
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
    let mut tree = header.entries_tree(&abbrevs, None).map_err(gerr)?;
    let root = tree.root().map_err(gerr)?;

    let mut ctx = UnitCtx {
        dwarf,
        header,
        str_offsets_base: gimli::DebugStrOffsetsBase::default_for_encoding_and_file(
            header.encoding(),
            gimli::DwarfFileType::Main,
        ),
        addr_base: gimli::DebugAddrBase(0),
    };
    {
        let entry = root.entry();
        if entry.tag() != gimli::DW_TAG_compile_unit {
            return Ok(());
        }
        if let Ok(Some(AttributeValue::DebugStrOffsetsBase(b))) =
            entry.attr_value(gimli::DW_AT_str_offsets_base)
        {
            ctx.str_offsets_base = b;
        }
        if let Ok(Some(AttributeValue::DebugAddrBase(b))) = entry.attr_value(gimli::DW_AT_addr_base)
        {
            ctx.addr_base = b;
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
            let Some(slot) = wanted.structs.get_mut(name) else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
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
                let off = m
                    .attr_value(gimli::DW_AT_data_member_location)
                    .map_err(gerr)?
                    .and_then(|v| member_offset(v, header.encoding()))
                    .ok_or_else(|| {
                        format!("DWARF: member {name}.{mname} has no usable data_member_location")
                    })?;
                members.push((mname, off));
            }
            *slot = Some(StructInfo { size, members });
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
