//! Decoding values from the target's memory with their DWARF types.
//!
//! Every value is decoded at an address: variables in the data sections,
//! pointer targets, slice and channel elements, map slots. Even a value
//! stored directly in an interface's data word has one: the word itself.

use super::dwarf::{GoType, Kind, TypeRef};
use super::{Inspector, Options, TypedValue, Value, MAX_NESTING, MAX_VALUES};
use crate::process::memory::Memory;

/// Largest length or capacity believed: Go's maximum allocation is far
/// below 2^48 bytes on amd64 (runtime/malloc.go maxAlloc), so anything
/// beyond is corruption or a torn read.
pub(super) const MAX_LEN: u64 = 1 << 48;
/// Most bytes read for one string, whatever `--max-string` says: the page
/// cache's budget is the real bound, this keeps one allocation sane.
const MAX_STRING_READ: u64 = 64 << 20;
/// Capacity reserved up front for a list of elements; lists grow past it
/// only as elements are actually decoded.
pub(super) const RESERVE: u64 = 1024;

/// One decoding run: limits, counters and the pointers on the current
/// path (for cycles).
pub(super) struct Decoder<'a, 's> {
    pub(super) ins: &'a Inspector<'s>,
    pub(super) opts: Options,
    values: usize,
    nesting: usize,
    /// (address, type) of every pointer target, slice, map and channel
    /// being decoded further up the tree.
    path: Vec<(u64, TypeRef)>,
}

impl<'a, 's> Decoder<'a, 's> {
    pub(super) fn new(ins: &'a Inspector<'s>, opts: Options) -> Decoder<'a, 's> {
        Decoder {
            ins,
            opts,
            values: 0,
            nesting: 0,
            path: Vec::new(),
        }
    }

    /// The value of type `ty` at `addr`. `depth` is the number of pointers
    /// followed to get here.
    pub(super) fn value_at(&mut self, addr: u64, ty: TypeRef, depth: usize) -> TypedValue {
        let t = match self.ins.ty(ty) {
            Ok(t) => t,
            Err(e) => return TypedValue::new("?", Value::Unreadable(e)),
        };
        if self.values >= MAX_VALUES {
            return TypedValue::new(
                t.name.clone(),
                Value::Truncated(format!("output limit ({MAX_VALUES} values)")),
            );
        }
        if self.nesting >= MAX_NESTING {
            return TypedValue::new(
                t.name.clone(),
                Value::Truncated(format!("nesting limit ({MAX_NESTING})")),
            );
        }
        self.values += 1;
        // A value whose first byte is not mapped is unreadable as a whole,
        // rather than field by field.
        if t.size > 0 && self.ins.mem.read_u8(addr).is_none() {
            return TypedValue::new(t.name.clone(), unreadable(addr, t.size));
        }
        self.nesting += 1;
        let value = self.decode(addr, ty, &t, depth);
        self.nesting -= 1;
        TypedValue::new(t.name.clone(), value)
    }

    fn decode(&mut self, addr: u64, ty: TypeRef, t: &GoType, depth: usize) -> Value {
        match &t.kind {
            Kind::Bool => match self.ins.mem.read_u8(addr) {
                Some(b) => Value::Bool(b != 0),
                None => unreadable(addr, 1),
            },
            Kind::Int | Kind::Uint => {
                let size = t.size as usize;
                let mut b = [0u8; 8];
                if size > 8 || !self.ins.mem.read(addr, &mut b[..size]) {
                    return unreadable(addr, t.size);
                }
                let raw = u64::from_le_bytes(b);
                if matches!(t.kind, Kind::Uint) {
                    Value::Uint(raw)
                } else {
                    // Sign-extend from the type's width.
                    let shift = 64 - 8 * size as u32;
                    Value::Int(((raw << shift) as i64) >> shift)
                }
            }
            Kind::Float => match t.size {
                4 => match self.ins.mem.read_u32(addr) {
                    Some(b) => Value::Float(f64::from(f32::from_bits(b))),
                    None => unreadable(addr, 4),
                },
                _ => match self.ins.mem.read_u64(addr) {
                    Some(b) => Value::Float(f64::from_bits(b)),
                    None => unreadable(addr, 8),
                },
            },
            Kind::Complex => {
                let parts = if t.size == 8 {
                    self.ins
                        .mem
                        .read_u32(addr)
                        .zip(self.ins.mem.read_u32(addr + 4))
                        .map(|(re, im)| {
                            (f64::from(f32::from_bits(re)), f64::from(f32::from_bits(im)))
                        })
                } else {
                    self.ins
                        .mem
                        .read_u64(addr)
                        .zip(self.ins.mem.read_u64(addr + 8))
                        .map(|(re, im)| (f64::from_bits(re), f64::from_bits(im)))
                };
                match parts {
                    Some((re, im)) => Value::Complex { re, im },
                    None => unreadable(addr, t.size),
                }
            }
            Kind::String => self.string_at(addr),
            Kind::Pointer { elem } => {
                let Some(p) = self.ins.mem.read_u64(addr) else {
                    return unreadable(addr, 8);
                };
                if p == 0 {
                    return Value::Nil;
                }
                match elem {
                    Some(elem) => Value::Pointer {
                        addr: p,
                        target: Box::new(self.follow(p, *elem, depth)),
                    },
                    None => Value::UnsafePointer(p),
                }
            }
            Kind::UnsafePointer => match self.ins.mem.read_u64(addr) {
                Some(0) => Value::Nil,
                Some(p) => Value::UnsafePointer(p),
                None => unreadable(addr, 8),
            },
            Kind::Func => {
                // A func value points to a closure whose first word is the
                // code pointer (runtime/runtime2.go funcval).
                let Some(closure) = self.ins.mem.read_u64(addr) else {
                    return unreadable(addr, 8);
                };
                if closure == 0 {
                    return Value::Nil;
                }
                match self.ins.mem.read_u64(closure) {
                    Some(entry) => Value::Func {
                        entry,
                        function: self.ins.function_at(entry),
                    },
                    None => unreadable(closure, 8),
                }
            }
            Kind::Array { elem, len } => {
                let elem_size = match self.ins.ty(*elem) {
                    Ok(e) => e.size,
                    Err(e) => return Value::Unreadable(e),
                };
                let n = (*len).min(self.opts.max_elements as u64);
                let mut items = Vec::with_capacity(n.min(RESERVE) as usize);
                for i in 0..n {
                    let at = addr.wrapping_add(i.wrapping_mul(elem_size));
                    if !self.push_item(&mut items, at, *elem, depth) {
                        break;
                    }
                }
                Value::Array { len: *len, items }
            }
            Kind::Slice { elem } => self.slice_at(addr, ty, *elem, depth),
            Kind::Struct { fields } => {
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    let v = self.value_at(addr.wrapping_add(f.offset), f.ty, depth);
                    out.push((f.name.clone(), v));
                }
                Value::Struct(out)
            }
            Kind::Map { key, elem, header } => {
                let Some(h) = self.ins.mem.read_u64(addr) else {
                    return unreadable(addr, 8);
                };
                if h == 0 {
                    return Value::Nil;
                }
                let Some(header) = header else {
                    return Value::Unreadable("the map's runtime layout is not in DWARF".into());
                };
                if self.path.contains(&(h, ty)) {
                    return Value::Cycle { addr: h };
                }
                self.path.push((h, ty));
                let v = super::maps::decode(self, h, *key, *elem, *header, depth);
                self.path.pop();
                v
            }
            Kind::Chan { elem, header, dir } => {
                self.chan_at(addr, ty, *elem, *header, dir.name(), depth)
            }
            Kind::Interface { empty, repr } => self.interface_at(addr, *empty, *repr, depth),
            Kind::Unsupported(why) => Value::Unreadable(format!("cannot decode: {why}")),
        }
    }

    /// Appends the element at `at` to `items`; false if its memory is not
    /// mapped, after which the following elements are not tried (they are
    /// in the same unmapped range, typically a reservation the runtime has
    /// not backed with memory yet).
    fn push_item(
        &mut self,
        items: &mut Vec<TypedValue>,
        at: u64,
        elem: TypeRef,
        depth: usize,
    ) -> bool {
        let item = self.value_at(at, elem, depth);
        let mapped = !matches!(&item.value, Value::Unreadable(r) if r.starts_with(UNMAPPED));
        items.push(item);
        mapped
    }

    /// Follows a non-nil pointer `p` to a value of type `elem`.
    fn follow(&mut self, p: u64, elem: TypeRef, depth: usize) -> TypedValue {
        let name = || {
            self.ins
                .ty(elem)
                .map(|t| t.name.clone())
                .unwrap_or_default()
        };
        if self.path.contains(&(p, elem)) {
            return TypedValue::new(name(), Value::Cycle { addr: p });
        }
        if depth >= self.opts.depth {
            return TypedValue::new(
                name(),
                Value::Truncated(format!("depth limit ({})", self.opts.depth)),
            );
        }
        self.path.push((p, elem));
        let v = self.value_at(p, elem, depth + 1);
        self.path.pop();
        v
    }

    fn string_at(&mut self, addr: u64) -> Value {
        // A string header is {data pointer, length} (runtime/string.go
        // stringStruct), in every Go version.
        let (Some(data), Some(len)) =
            (self.ins.mem.read_u64(addr), self.ins.mem.read_u64(addr + 8))
        else {
            return unreadable(addr, 16);
        };
        if len > MAX_LEN {
            return Value::Unreadable(format!("corrupt string header (length {len})"));
        }
        if len > 0 && data == 0 {
            return Value::Unreadable(format!("corrupt string header (nil data, length {len})"));
        }
        let n = len.min(self.opts.max_string as u64).min(MAX_STRING_READ) as usize;
        let mut bytes = vec![0u8; n];
        if !self.ins.mem.read(data, &mut bytes) {
            return unreadable(data, n as u64);
        }
        Value::String { bytes, len }
    }

    fn slice_at(&mut self, addr: u64, ty: TypeRef, elem: TypeRef, depth: usize) -> Value {
        // A slice header is {array, len, cap} (runtime/slice.go slice).
        let words = (
            self.ins.mem.read_u64(addr),
            self.ins.mem.read_u64(addr + 8),
            self.ins.mem.read_u64(addr + 16),
        );
        let (Some(data), Some(len), Some(cap)) = words else {
            return unreadable(addr, 24);
        };
        if data == 0 {
            return if len == 0 && cap == 0 {
                Value::Nil
            } else {
                Value::Unreadable(format!(
                    "corrupt slice header (nil array, len {len}, cap {cap})"
                ))
            };
        }
        if len > cap || cap > MAX_LEN {
            return Value::Unreadable(format!("corrupt slice header (len {len}, cap {cap})"));
        }
        let elem_size = match self.ins.ty(elem) {
            Ok(e) => e.size,
            Err(e) => return Value::Unreadable(e),
        };
        if self.path.contains(&(data, ty)) {
            return Value::Cycle { addr: data };
        }
        self.path.push((data, ty));
        let n = len.min(self.opts.max_elements as u64);
        let mut items = Vec::with_capacity(n.min(RESERVE) as usize);
        for i in 0..n {
            let at = data.wrapping_add(i.wrapping_mul(elem_size));
            if !self.push_item(&mut items, at, elem, depth) {
                break;
            }
        }
        self.path.pop();
        Value::Slice {
            addr: data,
            len,
            cap,
            items,
        }
    }

    fn chan_at(
        &mut self,
        addr: u64,
        ty: TypeRef,
        elem: TypeRef,
        header: Option<TypeRef>,
        dir: &'static str,
        depth: usize,
    ) -> Value {
        let Some(h) = self.ins.mem.read_u64(addr) else {
            return unreadable(addr, 8);
        };
        if h == 0 {
            return Value::Nil;
        }
        let elem_type = match self.ins.ty(elem) {
            Ok(e) => e,
            Err(e) => return Value::Unreadable(e),
        };
        // hchan<T> is a copy of runtime.hchan (runtime/chan.go): the ring
        // buffer `buf` of `dataqsiz` elements holds `qcount` of them,
        // starting at index `recvx`.
        let Some(hchan) = header.and_then(|h| self.ins.ty(h).ok()) else {
            return Value::Unreadable("the channel's runtime layout is not in DWARF".into());
        };
        let field = |name: &str| hchan.field(name).map(|f| h + f.offset);
        let word = |name: &str| field(name).and_then(|a| self.ins.mem.read_u64(a));
        let (Some(qcount), Some(dataqsiz), Some(buf), Some(recvx)) =
            (word("qcount"), word("dataqsiz"), word("buf"), word("recvx"))
        else {
            return unreadable(h, hchan.size);
        };
        let closed = field("closed")
            .and_then(|a| self.ins.mem.read_u32(a))
            .unwrap_or(0)
            != 0;
        if qcount > dataqsiz || dataqsiz > MAX_LEN || (dataqsiz > 0 && recvx >= dataqsiz) {
            return Value::Unreadable(format!(
                "corrupt channel (qcount {qcount}, dataqsiz {dataqsiz}, recvx {recvx})"
            ));
        }
        if self.path.contains(&(h, ty)) {
            return Value::Cycle { addr: h };
        }
        self.path.push((h, ty));
        let n = qcount.min(self.opts.max_elements as u64);
        let mut items = Vec::with_capacity(n.min(RESERVE) as usize);
        for i in 0..n {
            let slot = (recvx + i) % dataqsiz;
            let at = buf.wrapping_add(slot.wrapping_mul(elem_type.size));
            if !self.push_item(&mut items, at, elem, depth) {
                break;
            }
        }
        self.path.pop();
        Value::Chan {
            addr: h,
            elem_type: elem_type.name.clone(),
            len: qcount,
            cap: dataqsiz,
            closed,
            dir,
            items,
        }
    }

    fn interface_at(
        &mut self,
        addr: u64,
        empty: bool,
        repr: Option<TypeRef>,
        depth: usize,
    ) -> Value {
        // runtime.eface is {_type, data}, runtime.iface {tab, data} with the
        // dynamic type in the itab (runtime/runtime2.go; internal/abi.ITab
        // since Go 1.22): the type or itab word is first, data second.
        let (Some(first), Some(data)) =
            (self.ins.mem.read_u64(addr), self.ins.mem.read_u64(addr + 8))
        else {
            return unreadable(addr, 16);
        };
        if first == 0 {
            return Value::Nil;
        }
        let rtype = if empty {
            first
        } else {
            let off = repr.map_or(8, |r| self.itab_type_offset(r));
            match self.ins.mem.read_u64(first + off) {
                Some(t) if t != 0 => t,
                _ => return Value::Unreadable(format!("unreadable itab at {first:#x}")),
            }
        };
        let dyn_ref = self.ins.runtime_type_ref(rtype);
        let dyn_type = match self.ins.ty(dyn_ref) {
            Ok(t) => t,
            Err(e) => {
                let name = self
                    .ins
                    .runtime_type_name(rtype)
                    .unwrap_or_else(|| format!("<type at {rtype:#x}>"));
                return Value::Interface {
                    dynamic_type: name,
                    value: Box::new(TypedValue::new(String::new(), Value::Unreadable(e))),
                };
            }
        };
        let value = if self.is_direct_iface(&dyn_type, 0) {
            // Pointer-shaped values are the data word itself.
            self.value_at(addr + 8, dyn_ref, depth)
        } else if data == 0 {
            TypedValue::new(
                dyn_type.name.clone(),
                Value::Unreadable("nil data pointer".into()),
            )
        } else if self.path.contains(&(data, dyn_ref)) {
            TypedValue::new(dyn_type.name.clone(), Value::Cycle { addr: data })
        } else {
            self.path.push((data, dyn_ref));
            let v = self.value_at(data, dyn_ref, depth);
            self.path.pop();
            v
        };
        Value::Interface {
            dynamic_type: dyn_type.name.clone(),
            value: Box::new(value),
        }
    }

    /// Offset of the dynamic type in the itab an iface points to: `_type`
    /// (runtime.itab) or `Type` (internal/abi.ITab); 8 in every version.
    fn itab_type_offset(&self, repr: TypeRef) -> u64 {
        let offset = (|| {
            let iface = self.ins.ty(repr).ok()?;
            let tab = iface.field("tab")?;
            let Kind::Pointer { elem: Some(itab) } = self.ins.ty(tab.ty).ok()?.kind else {
                return None;
            };
            let itab = self.ins.ty(itab).ok()?;
            itab.field("_type")
                .or_else(|| itab.field("Type"))
                .map(|f| f.offset)
        })();
        offset.unwrap_or(8)
    }

    /// Whether an interface stores a value of type `t` in its data word
    /// rather than behind a pointer: pointers, maps, channels, funcs and
    /// unsafe pointers, and arrays of one / structs of one such field
    /// (cmd/compile/internal/types/type.go IsDirectIface).
    fn is_direct_iface(&self, t: &GoType, nest: usize) -> bool {
        if nest > 16 {
            return false;
        }
        match &t.kind {
            Kind::Pointer { .. }
            | Kind::UnsafePointer
            | Kind::Map { .. }
            | Kind::Chan { .. }
            | Kind::Func => true,
            Kind::Array { elem, len: 1 } => self
                .ins
                .ty(*elem)
                .is_ok_and(|e| self.is_direct_iface(&e, nest + 1)),
            Kind::Struct { fields } if fields.len() == 1 => self
                .ins
                .ty(fields[0].ty)
                .is_ok_and(|f| self.is_direct_iface(&f, nest + 1)),
            _ => false,
        }
    }
}

/// How the reason of [`unreadable`] starts.
const UNMAPPED: &str = "cannot read ";

/// The value at `addr` could not be read.
pub(super) fn unreadable(addr: u64, len: u64) -> Value {
    Value::Unreadable(format!("{UNMAPPED}{len} bytes at {addr:#x}"))
}
