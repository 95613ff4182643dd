//! The DWARF side of `gospy var`: package-level variables by name and a
//! typed model of Go's DWARF types.
//!
//! What the Go linker emits (cmd/link/internal/ld/dwarf.go, `newtype` and
//! the `synthesize*types` functions) and what this module relies on:
//!
//! * One compile unit per package, named by its import path, holding the
//!   package's variables as top-level `DW_TAG_variable` entries with their
//!   full Go name (`main.counter`, `net/http.DefaultClient`) and a
//!   `DW_OP_addr` location (`DW_OP_addrx` with DWARF 5, Go 1.26+).
//! * Every type once, at the top level of a `runtime` unit, referenced with
//!   `DW_FORM_ref_addr`. Each carries `DW_AT_go_kind` (0x2900, the
//!   `reflect.Kind`) and `DW_AT_go_runtime_type` (0x2904): the offset of the
//!   runtime type descriptor from the start of the section holding the type
//!   descriptors, i.e. from `runtime.firstmoduledata.types` (linker relocation
//!   `R_ADDROFF`; 0 for types the linker synthesized).
//! * Base types by `DW_AT_encoding` and size; strings and slices are
//!   structures (`{str, len}`, `{array, len, cap}`) with kind String/Slice;
//!   maps, channels and interfaces are typedefs with kind Map/Chan/Interface
//!   whose `DW_AT_type` is the runtime representation: a pointer to
//!   `hash<K,V>` (classic maps, `runtime.hmap` with buckets `bucket<K,V>`) or
//!   to `map<K,V>` (Swiss maps, Go 1.24+, `internal/runtime/maps.Map` with
//!   tables `table<K,V>` and groups), a pointer to `hchan<T>`, and
//!   `runtime.eface`/`runtime.iface`. Maps also carry `DW_AT_go_key` and
//!   `DW_AT_go_elem` (0x2901/0x2902), channels and slices `DW_AT_go_elem`.
//! * Named types are a typedef (with the name) of the definition, which
//!   bears the same name; `unsafe.Pointer` is a pointer type without
//!   `DW_AT_type`.
//!
//! Everything read here is bounded: typedef chains, member counts and array
//! lengths come from the file and are checked, never trusted.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::binary::dwarf::gerr;

use gimli::{AttributeValue, DebuggingInformationEntry, EndianSlice, LittleEndian, UnitHeader};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// `DW_AT_go_kind`: the Go kind of a type (`reflect.Kind` values).
const DW_AT_GO_KIND: gimli::DwAt = gimli::DwAt(0x2900);
/// `DW_AT_go_key`: the key type of a map.
const DW_AT_GO_KEY: gimli::DwAt = gimli::DwAt(0x2901);
/// `DW_AT_go_elem`: the element type of a map, channel or slice.
const DW_AT_GO_ELEM: gimli::DwAt = gimli::DwAt(0x2902);
/// `DW_AT_go_embedded_field`: the struct member is embedded.
const DW_AT_GO_EMBEDDED_FIELD: gimli::DwAt = gimli::DwAt(0x2903);
/// `DW_AT_go_runtime_type`: offset of the runtime type descriptor.
const DW_AT_GO_RUNTIME_TYPE: gimli::DwAt = gimli::DwAt(0x2904);

/// `reflect.Kind` values (internal/abi/type.go, runtime/typekind.go),
/// unchanged since Go 1.0.
mod go_kind {
    pub const CHAN: u64 = 18;
    pub const INTERFACE: u64 = 20;
    pub const MAP: u64 = 21;
    pub const SLICE: u64 = 23;
    pub const STRING: u64 = 24;
}

/// Longest typedef chain followed; Go emits at most two levels (a named
/// type's typedef, then its definition).
const MAX_TYPEDEF_CHAIN: usize = 16;
/// Most members read from one struct type: far above any real Go struct,
/// low enough that a corrupt DIE cannot make us allocate without bound.
const MAX_MEMBERS: usize = 1 << 16;

/// Shown when the binary has no DWARF at all.
pub const NO_DWARF: &str = "the binary has no DWARF debug info (built with -ldflags=-w, or \
stripped); gospy var reads variables and their types from DWARF: pass --bin PATH with an \
unstripped build of the same program (same source, same Go version, same flags except -s/-w)";

/// A type reference: an offset in `.debug_info`.
pub type TypeRef = usize;

/// A Go type, as far as decoding values needs it.
#[derive(Debug, Clone)]
pub struct GoType {
    /// The Go name (`int64`, `main.Inner`, `map[string]int`, `*main.Node`).
    pub name: String,
    /// Size in bytes of a value of this type.
    pub size: u64,
    /// What the type is, with its components.
    pub kind: Kind,
    /// Value of `DW_AT_go_runtime_type`, if any and non-zero.
    pub runtime_type: Option<u64>,
}

/// The shape of a Go type.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `bool`.
    Bool,
    /// Signed integer of `GoType::size` bytes.
    Int,
    /// Unsigned integer (also `uintptr`) of `GoType::size` bytes.
    Uint,
    /// `float32` or `float64`, by size.
    Float,
    /// `complex64` or `complex128`, by size.
    Complex,
    /// `string`: a `{data, len}` header.
    String,
    /// A pointer.
    Pointer {
        /// The pointee; `None` when DWARF does not say what it is.
        elem: Option<TypeRef>,
    },
    /// `unsafe.Pointer`.
    UnsafePointer,
    /// A func value: a pointer to a closure whose first word is the code.
    Func,
    /// `[len]elem`.
    Array {
        /// Element type.
        elem: TypeRef,
        /// Number of elements.
        len: u64,
    },
    /// `[]elem`: an `{array, len, cap}` header.
    Slice {
        /// Element type.
        elem: TypeRef,
    },
    /// A struct.
    Struct {
        /// Members in declaration order.
        fields: Vec<Field>,
    },
    /// A map value: a pointer to its header.
    Map {
        /// Key type.
        key: TypeRef,
        /// Value type.
        elem: TypeRef,
        /// `hash<K,V>` (classic) or `map<K,V>` (Swiss), when DWARF has it.
        header: Option<TypeRef>,
    },
    /// A channel: a pointer to its `hchan`.
    Chan {
        /// Element type.
        elem: TypeRef,
        /// `hchan<T>` (or `runtime.hchan`), when DWARF has it.
        header: Option<TypeRef>,
        /// Which way values may flow.
        dir: ChanDir,
    },
    /// An interface.
    Interface {
        /// Without methods (`interface {}`): the first word is the
        /// dynamic type, not an itab.
        empty: bool,
        /// `runtime.eface` or `runtime.iface`, when DWARF has it.
        repr: Option<TypeRef>,
    },
    /// Something gospy does not decode, with why.
    Unsupported(String),
}

/// Direction of a channel type, from its name (`chan T`, `<-chan T`,
/// `chan<- T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChanDir {
    /// `chan T`.
    Both,
    /// `chan<- T`.
    Send,
    /// `<-chan T`.
    Recv,
}

impl ChanDir {
    /// `both`, `send` or `recv`.
    pub fn name(self) -> &'static str {
        match self {
            ChanDir::Both => "both",
            ChanDir::Send => "send",
            ChanDir::Recv => "recv",
        }
    }
}

/// A struct member.
#[derive(Debug, Clone)]
pub struct Field {
    /// Field name (an embedded field's is its type's name).
    pub name: String,
    /// Byte offset in the struct.
    pub offset: u64,
    /// Field type.
    pub ty: TypeRef,
    /// Whether the field is embedded.
    pub embedded: bool,
}

impl GoType {
    /// The member `name` of a struct type.
    pub fn field(&self, name: &str) -> Option<&Field> {
        match &self.kind {
            Kind::Struct { fields } => fields.iter().find(|f| f.name == name),
            _ => None,
        }
    }
}

/// A package-level variable found in DWARF.
#[derive(Debug, Clone)]
pub struct VarEntry {
    /// Full Go name (`main.counter`).
    pub name: String,
    /// Link-time address in the DWARF binary.
    pub addr: u64,
    /// The variable's type.
    pub ty: TypeRef,
}

/// One compile unit: its header, abbreviations and the bases its indexed
/// forms (DWARF 5) are relative to.
struct UnitInfo<'a> {
    header: UnitHeader<R<'a>>,
    abbrevs: Arc<gimli::Abbreviations>,
    start: usize,
    end: usize,
    /// The package import path (`DW_AT_name` of the unit).
    name: String,
    str_offsets_base: gimli::DebugStrOffsetsBase<usize>,
    addr_base: gimli::DebugAddrBase<usize>,
}

/// The decompressed DWARF sections of one binary, which a [`DwarfInfo`]
/// borrows.
pub type DwarfSections = crate::binary::dwarf::DwarfSections<'static>;

/// The DWARF sections of the ELF file `data`. Fails with [`NO_DWARF`] when
/// there are none.
pub fn load_sections(data: &[u8]) -> Result<DwarfSections, String> {
    let file = object::File::parse(data).map_err(|e| format!("cannot parse ELF: {e}"))?;
    crate::binary::dwarf::DwarfSections::load(&file)?
        .map(|s| s.into_owned())
        .ok_or_else(|| NO_DWARF.to_string())
}

/// The DWARF of one Go binary, with lazily built indexes.
pub struct DwarfInfo<'a> {
    dwarf: gimli::Dwarf<R<'a>>,
    units: Vec<UnitInfo<'a>>,
    types: RefCell<HashMap<TypeRef, Rc<GoType>>>,
    /// How many [`DwarfInfo::ty`] calls are in progress (a recursion bound).
    resolving: Cell<usize>,
    /// `DW_AT_go_runtime_type` value → type, and type name → type, for the
    /// types unit (built on first use: interfaces need it).
    type_index: OnceCell<TypeIndex>,
}

#[derive(Default)]
struct TypeIndex {
    by_runtime_type: HashMap<u64, TypeRef>,
    by_name: HashMap<String, TypeRef>,
}

impl<'a> DwarfInfo<'a> {
    /// Indexes the units of `sections`.
    pub fn new(sections: &'a DwarfSections) -> Result<DwarfInfo<'a>, String> {
        let dwarf = sections.dwarf();
        let units = read_units(&dwarf)?;
        Ok(DwarfInfo {
            dwarf,
            units,
            types: RefCell::new(HashMap::new()),
            resolving: Cell::new(0),
            type_index: OnceCell::new(),
        })
    }

    /// Names of all compile units (Go packages), without duplicates.
    pub fn packages(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.units.iter().map(|u| u.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every package-level variable of the packages `keep` accepts (by
    /// import path), in DWARF order.
    pub fn variables(&self, keep: &dyn Fn(&str) -> bool) -> Result<Vec<VarEntry>, String> {
        let mut out = Vec::new();
        for unit in self.units.iter().filter(|u| keep(&u.name)) {
            let mut tree = unit
                .header
                .entries_tree(&unit.abbrevs, None)
                .map_err(gerr)?;
            let root = tree.root().map_err(gerr)?;
            let mut children = root.children();
            // The iterator skips each child's own children (function
            // bodies) without building them.
            while let Some(node) = children.next().map_err(gerr)? {
                let entry = node.entry();
                if entry.tag() != gimli::DW_TAG_variable {
                    continue;
                }
                let Some(name) = self.name(unit, entry) else {
                    continue;
                };
                let Some(addr) = self.var_addr(unit, entry) else {
                    continue;
                };
                let Some(ty) = entry
                    .attr_value(gimli::DW_AT_type)
                    .ok()
                    .flatten()
                    .and_then(|v| reference(unit, v))
                else {
                    continue;
                };
                out.push(VarEntry { name, addr, ty });
            }
        }
        Ok(out)
    }

    /// The type at `.debug_info` offset `at`.
    pub fn ty(&self, at: TypeRef) -> Result<Rc<GoType>, String> {
        let cached = self.types.borrow().get(&at).cloned();
        if let Some(t) = cached {
            return Ok(t);
        }
        // Reading a type reads at most a few others (an array's element
        // without byte size, a slice's `array` member, a map's header
        // pointer); only corrupt DWARF nests deeper.
        if self.resolving.get() >= MAX_TYPEDEF_CHAIN {
            return Err(format!("DWARF: type references nest too deep at {at:#x}"));
        }
        self.resolving.set(self.resolving.get() + 1);
        let t = self.read_type(at, 0);
        self.resolving.set(self.resolving.get() - 1);
        let t = Rc::new(t?);
        self.types.borrow_mut().insert(at, t.clone());
        Ok(t)
    }

    /// The type whose `DW_AT_go_runtime_type` is `value`.
    pub fn type_by_runtime_offset(&self, value: u64) -> Option<TypeRef> {
        self.type_index().by_runtime_type.get(&value).copied()
    }

    /// The type named `name` (as the runtime names it).
    pub fn type_by_name(&self, name: &str) -> Option<TypeRef> {
        self.type_index().by_name.get(name).copied()
    }

    fn unit_of(&self, at: usize) -> Option<&UnitInfo<'a>> {
        let i = self.units.partition_point(|u| u.end <= at);
        self.units.get(i).filter(|u| u.start <= at && at < u.end)
    }

    fn entry_at(
        &self,
        at: usize,
    ) -> Result<(&UnitInfo<'a>, DebuggingInformationEntry<'_, '_, R<'a>>), String> {
        let unit = self
            .unit_of(at)
            .ok_or_else(|| format!("DWARF: no unit contains offset {at:#x}"))?;
        let off = gimli::DebugInfoOffset(at)
            .to_unit_offset(&unit.header)
            .ok_or_else(|| format!("DWARF: bad offset {at:#x}"))?;
        let entry = unit.header.entry(&unit.abbrevs, off).map_err(gerr)?;
        Ok((unit, entry))
    }

    fn string(&self, unit: &UnitInfo<'a>, value: AttributeValue<R<'a>>) -> Option<String> {
        let r = match value {
            AttributeValue::String(s) => s,
            AttributeValue::DebugStrRef(off) => self.dwarf.debug_str.get_str(off).ok()?,
            AttributeValue::DebugLineStrRef(off) => self.dwarf.debug_line_str.get_str(off).ok()?,
            AttributeValue::DebugStrOffsetsIndex(index) => {
                let off = self
                    .dwarf
                    .debug_str_offsets
                    .get_str_offset(unit.header.format(), unit.str_offsets_base, index)
                    .ok()?;
                self.dwarf.debug_str.get_str(off).ok()?
            }
            _ => return None,
        };
        Some(String::from_utf8_lossy(r.slice()).into_owned())
    }

    fn name(
        &self,
        unit: &UnitInfo<'a>,
        entry: &DebuggingInformationEntry<'_, '_, R<'a>>,
    ) -> Option<String> {
        let value = entry.attr_value(gimli::DW_AT_name).ok()??;
        self.string(unit, value)
    }

    fn address(&self, unit: &UnitInfo<'a>, value: AttributeValue<R<'a>>) -> Option<u64> {
        match value {
            AttributeValue::Addr(a) => Some(a),
            AttributeValue::DebugAddrIndex(index) => self
                .dwarf
                .debug_addr
                .get_address(unit.header.address_size(), unit.addr_base, index)
                .ok(),
            other => other.udata_value(),
        }
    }

    /// The address of a variable whose location is a single `DW_OP_addr`
    /// (or `DW_OP_addrx`).
    fn var_addr(
        &self,
        unit: &UnitInfo<'a>,
        entry: &DebuggingInformationEntry<'_, '_, R<'a>>,
    ) -> Option<u64> {
        let expr = entry
            .attr_value(gimli::DW_AT_location)
            .ok()??
            .exprloc_value()?;
        let mut bytes = expr.0;
        match gimli::Operation::parse(&mut bytes, unit.header.encoding()).ok()? {
            gimli::Operation::Address { address } => Some(address),
            gimli::Operation::AddressIndex { index } => self
                .dwarf
                .debug_addr
                .get_address(unit.header.address_size(), unit.addr_base, index)
                .ok(),
            _ => None,
        }
    }

    fn read_type(&self, at: TypeRef, chain: usize) -> Result<GoType, String> {
        if chain > MAX_TYPEDEF_CHAIN {
            return Err(format!("DWARF: typedef chain too long at {at:#x}"));
        }
        let (unit, entry) = self.entry_at(at)?;
        let name = self.name(unit, &entry).unwrap_or_default();
        let attr = |a: gimli::DwAt| entry.attr_value(a).ok().flatten();
        let go_kind = attr(DW_AT_GO_KIND).and_then(|v| v.udata_value());
        let runtime_type = attr(DW_AT_GO_RUNTIME_TYPE)
            .and_then(|v| self.address(unit, v))
            .filter(|&v| v != 0);
        let byte_size = attr(gimli::DW_AT_byte_size).and_then(|v| v.udata_value());
        let type_ref = attr(gimli::DW_AT_type).and_then(|v| reference(unit, v));
        let go_elem = attr(DW_AT_GO_ELEM).and_then(|v| reference(unit, v));
        let mk = |size: u64, kind: Kind| GoType {
            name: name.clone(),
            size,
            kind,
            runtime_type,
        };
        let t = match entry.tag() {
            gimli::DW_TAG_base_type => {
                let size =
                    byte_size.ok_or_else(|| format!("DWARF: base type {name} has no size"))?;
                let encoding = match attr(gimli::DW_AT_encoding) {
                    Some(AttributeValue::Encoding(e)) => Some(e),
                    Some(v) => v.udata_value().map(|e| gimli::DwAte(e as u8)),
                    None => None,
                };
                let kind = match encoding {
                    Some(gimli::DW_ATE_boolean) => Kind::Bool,
                    Some(gimli::DW_ATE_signed) | Some(gimli::DW_ATE_signed_char) => Kind::Int,
                    Some(gimli::DW_ATE_unsigned) | Some(gimli::DW_ATE_unsigned_char) => Kind::Uint,
                    Some(gimli::DW_ATE_float) => Kind::Float,
                    Some(gimli::DW_ATE_complex_float) => Kind::Complex,
                    other => Kind::Unsupported(format!("base type encoding {other:?}")),
                };
                let ok = match kind {
                    Kind::Bool => size == 1,
                    Kind::Int | Kind::Uint => matches!(size, 1 | 2 | 4 | 8),
                    Kind::Float => matches!(size, 4 | 8),
                    Kind::Complex => matches!(size, 8 | 16),
                    _ => true,
                };
                if ok {
                    mk(size, kind)
                } else {
                    mk(size, Kind::Unsupported(format!("{size}-byte {name}")))
                }
            }
            gimli::DW_TAG_pointer_type => match type_ref {
                Some(elem) => mk(8, Kind::Pointer { elem: Some(elem) }),
                None => mk(8, Kind::UnsafePointer),
            },
            gimli::DW_TAG_subroutine_type => mk(8, Kind::Func),
            gimli::DW_TAG_array_type => {
                let elem = type_ref.ok_or_else(|| format!("DWARF: array {name} has no type"))?;
                let len = self.array_len(unit, at)?;
                let size = match byte_size {
                    Some(s) => s,
                    None => len.saturating_mul(self.ty(elem)?.size),
                };
                mk(size, Kind::Array { elem, len })
            }
            gimli::DW_TAG_structure_type => {
                let size = byte_size.ok_or_else(|| format!("DWARF: struct {name} has no size"))?;
                let fields = self.members(unit, at)?;
                let is_string = go_kind == Some(go_kind::STRING)
                    || (name == "string" && fields.iter().any(|f| f.name == "str"));
                let is_slice = go_kind == Some(go_kind::SLICE)
                    || (name.starts_with("[]") && fields.iter().any(|f| f.name == "array"));
                if is_string {
                    mk(size, Kind::String)
                } else if is_slice {
                    // The element type is DW_AT_go_elem, or what the
                    // `array` member points to.
                    let elem = match go_elem {
                        Some(e) => Some(e),
                        None => match fields.iter().find(|f| f.name == "array") {
                            Some(f) => match self.ty(f.ty)?.kind {
                                Kind::Pointer { elem } => elem,
                                _ => None,
                            },
                            None => None,
                        },
                    };
                    match elem {
                        Some(elem) => mk(size, Kind::Slice { elem }),
                        None => mk(
                            size,
                            Kind::Unsupported(format!("slice {name} without element type")),
                        ),
                    }
                } else {
                    mk(size, Kind::Struct { fields })
                }
            }
            gimli::DW_TAG_typedef => match go_kind {
                Some(go_kind::MAP) => {
                    let key = attr(DW_AT_GO_KEY).and_then(|v| reference(unit, v));
                    match (key, go_elem) {
                        (Some(key), Some(elem)) => mk(
                            8,
                            Kind::Map {
                                key,
                                elem,
                                header: self.pointee(type_ref)?,
                            },
                        ),
                        _ => mk(
                            8,
                            Kind::Unsupported(format!("map {name} without key/element types")),
                        ),
                    }
                }
                Some(go_kind::CHAN) => match go_elem {
                    Some(elem) => {
                        let dir = if name.starts_with("<-chan") {
                            ChanDir::Recv
                        } else if name.starts_with("chan<-") {
                            ChanDir::Send
                        } else {
                            ChanDir::Both
                        };
                        mk(
                            8,
                            Kind::Chan {
                                elem,
                                header: self.pointee(type_ref)?,
                                dir,
                            },
                        )
                    }
                    None => mk(
                        8,
                        Kind::Unsupported(format!("channel {name} without element type")),
                    ),
                },
                Some(go_kind::INTERFACE) => {
                    let empty = match type_ref {
                        Some(r) => {
                            let repr = self.ty(r)?;
                            repr.field("tab").is_none()
                        }
                        None => name.starts_with("interface {}"),
                    };
                    mk(
                        16,
                        Kind::Interface {
                            empty,
                            repr: type_ref,
                        },
                    )
                }
                _ => {
                    let target =
                        type_ref.ok_or_else(|| format!("DWARF: typedef {name} has no type"))?;
                    // Not through `ty`: the chain bound must carry over.
                    let cached = self.types.borrow().get(&target).cloned();
                    let mut t = match cached {
                        Some(t) => (*t).clone(),
                        None => self.read_type(target, chain + 1)?,
                    };
                    // The typedef carries the name users know (`error`,
                    // `main.Inner`).
                    if !name.is_empty() {
                        t.name = name;
                    }
                    if runtime_type.is_some() {
                        t.runtime_type = runtime_type;
                    }
                    t
                }
            },
            gimli::DW_TAG_unspecified_type => {
                mk(0, Kind::Unsupported(format!("unspecified type {name}")))
            }
            tag => mk(
                byte_size.unwrap_or(0),
                Kind::Unsupported(format!("DWARF tag {tag}")),
            ),
        };
        Ok(t)
    }

    /// What the pointer type `ptr` points to.
    fn pointee(&self, ptr: Option<TypeRef>) -> Result<Option<TypeRef>, String> {
        let Some(ptr) = ptr else { return Ok(None) };
        Ok(match self.ty(ptr)?.kind {
            Kind::Pointer { elem } => elem,
            _ => None,
        })
    }

    fn array_len(&self, unit: &UnitInfo<'a>, at: usize) -> Result<u64, String> {
        let off = gimli::DebugInfoOffset(at)
            .to_unit_offset(&unit.header)
            .ok_or_else(|| format!("DWARF: bad offset {at:#x}"))?;
        let mut tree = unit
            .header
            .entries_tree(&unit.abbrevs, Some(off))
            .map_err(gerr)?;
        let root = tree.root().map_err(gerr)?;
        let mut kids = root.children();
        while let Some(kid) = kids.next().map_err(gerr)? {
            let e = kid.entry();
            if e.tag() != gimli::DW_TAG_subrange_type {
                continue;
            }
            if let Some(n) = e
                .attr_value(gimli::DW_AT_count)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value())
            {
                return Ok(n);
            }
            if let Some(ub) = e
                .attr_value(gimli::DW_AT_upper_bound)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value())
            {
                return Ok(ub.saturating_add(1));
            }
        }
        Err(format!("DWARF: array type at {at:#x} has no length"))
    }

    fn members(&self, unit: &UnitInfo<'a>, at: usize) -> Result<Vec<Field>, String> {
        let off = gimli::DebugInfoOffset(at)
            .to_unit_offset(&unit.header)
            .ok_or_else(|| format!("DWARF: bad offset {at:#x}"))?;
        let mut tree = unit
            .header
            .entries_tree(&unit.abbrevs, Some(off))
            .map_err(gerr)?;
        let root = tree.root().map_err(gerr)?;
        let mut kids = root.children();
        let mut fields = Vec::new();
        while let Some(kid) = kids.next().map_err(gerr)? {
            let m = kid.entry();
            if m.tag() != gimli::DW_TAG_member {
                continue;
            }
            if fields.len() >= MAX_MEMBERS {
                return Err(format!("DWARF: struct at {at:#x} has too many members"));
            }
            let name = self.name(unit, m).unwrap_or_default();
            let offset = m
                .attr_value(gimli::DW_AT_data_member_location)
                .ok()
                .flatten()
                .and_then(|v| crate::binary::dwarf::member_offset(v, unit.header.encoding()))
                .ok_or_else(|| format!("DWARF: member {name} has no usable offset"))?;
            let Some(ty) = m
                .attr_value(gimli::DW_AT_type)
                .ok()
                .flatten()
                .and_then(|v| reference(unit, v))
            else {
                return Err(format!("DWARF: member {name} has no type"));
            };
            let embedded = matches!(
                m.attr_value(DW_AT_GO_EMBEDDED_FIELD).ok().flatten(),
                Some(AttributeValue::Flag(true))
            ) || m
                .attr_value(DW_AT_GO_EMBEDDED_FIELD)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value())
                .is_some_and(|v| v != 0);
            fields.push(Field {
                name,
                offset,
                ty,
                embedded,
            });
        }
        Ok(fields)
    }

    fn type_index(&self) -> &TypeIndex {
        self.type_index.get_or_init(|| {
            let mut index = TypeIndex::default();
            // Types live in `runtime` units; scanning only their top level
            // reads no function bodies.
            for unit in self.units.iter().filter(|u| u.name == "runtime") {
                if let Err(e) = self.index_unit(unit, &mut index) {
                    // A partial index only loses dynamic types of
                    // interfaces, which are then reported as unknown.
                    let _ = e;
                }
            }
            index
        })
    }

    fn index_unit(&self, unit: &UnitInfo<'a>, index: &mut TypeIndex) -> Result<(), String> {
        let mut tree = unit
            .header
            .entries_tree(&unit.abbrevs, None)
            .map_err(gerr)?;
        let root = tree.root().map_err(gerr)?;
        let mut children = root.children();
        while let Some(node) = children.next().map_err(gerr)? {
            let entry = node.entry();
            let at = match entry.offset().to_debug_info_offset(&unit.header) {
                Some(o) => o.0,
                None => continue,
            };
            if !is_type_tag(entry.tag()) {
                continue;
            }
            if let Some(rt) = entry
                .attr_value(DW_AT_GO_RUNTIME_TYPE)
                .ok()
                .flatten()
                .and_then(|v| self.address(unit, v))
                .filter(|&v| v != 0)
            {
                index.by_runtime_type.entry(rt).or_insert(at);
            }
            if let Some(name) = self.name(unit, entry) {
                // Named types are a typedef after their definition; the
                // first DIE of a name is the one with the kind attributes.
                index.by_name.entry(name).or_insert(at);
            }
        }
        Ok(())
    }
}

fn is_type_tag(tag: gimli::DwTag) -> bool {
    matches!(
        tag,
        gimli::DW_TAG_base_type
            | gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_structure_type
            | gimli::DW_TAG_array_type
            | gimli::DW_TAG_typedef
            | gimli::DW_TAG_subroutine_type
    )
}

/// A reference attribute as an offset in `.debug_info`.
fn reference(unit: &UnitInfo<'_>, value: AttributeValue<R<'_>>) -> Option<usize> {
    match value {
        AttributeValue::UnitRef(off) => off.to_debug_info_offset(&unit.header).map(|o| o.0),
        AttributeValue::DebugInfoRef(off) => Some(off.0),
        _ => None,
    }
}

fn read_units<'a>(dwarf: &gimli::Dwarf<R<'a>>) -> Result<Vec<UnitInfo<'a>>, String> {
    // Go writes a single abbreviation table shared by all units: parse
    // each distinct one once.
    let mut abbrev_cache: HashMap<usize, Arc<gimli::Abbreviations>> = HashMap::new();
    let mut units = Vec::new();
    let mut iter = dwarf.units();
    while let Some(header) = iter.next().map_err(gerr)? {
        let Some(start) = header.offset().as_debug_info_offset().map(|o| o.0) else {
            continue;
        };
        let end = start.saturating_add(header.length_including_self());
        let abbrevs = match abbrev_cache.get(&header.debug_abbrev_offset().0) {
            Some(a) => a.clone(),
            None => {
                let a = dwarf.abbreviations(&header).map_err(gerr)?;
                abbrev_cache.insert(header.debug_abbrev_offset().0, a.clone());
                a
            }
        };
        let mut info = UnitInfo {
            str_offsets_base: gimli::DebugStrOffsetsBase::default_for_encoding_and_file(
                header.encoding(),
                gimli::DwarfFileType::Main,
            ),
            addr_base: gimli::DebugAddrBase(0),
            header,
            abbrevs,
            start,
            end,
            name: String::new(),
        };
        let mut entries = info.header.entries(&info.abbrevs);
        let mut name_value = None;
        if let Some((_, root)) = entries.next_dfs().map_err(gerr)? {
            if root.tag() != gimli::DW_TAG_compile_unit {
                continue;
            }
            if let Ok(Some(AttributeValue::DebugStrOffsetsBase(b))) =
                root.attr_value(gimli::DW_AT_str_offsets_base)
            {
                info.str_offsets_base = b;
            }
            if let Ok(Some(AttributeValue::DebugAddrBase(b))) =
                root.attr_value(gimli::DW_AT_addr_base)
            {
                info.addr_base = b;
            }
            name_value = root.attr_value(gimli::DW_AT_name).ok().flatten();
        }
        if let Some(v) = name_value {
            // Resolving the name needs the bases just read.
            let name = match v {
                AttributeValue::String(s) => Some(String::from_utf8_lossy(s.slice()).into_owned()),
                AttributeValue::DebugStrRef(off) => dwarf
                    .debug_str
                    .get_str(off)
                    .ok()
                    .map(|s| String::from_utf8_lossy(s.slice()).into_owned()),
                AttributeValue::DebugStrOffsetsIndex(index) => dwarf
                    .debug_str_offsets
                    .get_str_offset(info.header.format(), info.str_offsets_base, index)
                    .ok()
                    .and_then(|off| dwarf.debug_str.get_str(off).ok())
                    .map(|s| String::from_utf8_lossy(s.slice()).into_owned()),
                _ => None,
            };
            info.name = name.unwrap_or_default();
        }
        units.push(info);
    }
    units.sort_by_key(|u| u.start);
    Ok(units)
}
