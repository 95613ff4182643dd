//! Types from the target's runtime type descriptors, for the dynamic
//! types of interfaces that DWARF does not describe.
//!
//! The linker writes DWARF only for types that variables, parameters or
//! locals use (cmd/link/internal/ld/dwarf.go); a type that is only ever
//! converted to an interface has a runtime descriptor but no DWARF. Such a
//! type is read from the descriptor into the same [`GoType`] model, its
//! components mapped back to DWARF whenever DWARF has them.
//!
//! Descriptor layout (runtime/type.go before Go 1.21, internal/abi/type.go
//! since; the same on amd64 in Go 1.15-1.27): the common `_type` header is
//! 48 bytes: size at 0, tflag at 20, kind at 23 (low 5 bits), str (a name
//! offset) at 40. Kind-specific fields follow at 48: `elem` for pointers,
//! slices, arrays (then `slice`, `len` at 64) and channels (then `dir` at
//! 56); `pkgPath` then `fields` (a slice at 56) for structs, each field
//! `{name *byte, typ *_type, offset uintptr}` with the offset shifted left
//! by one and the embedded flag in bit 0 before Go 1.19 (`offsetAnon`);
//! `pkgPath` then `methods` (a slice at 56) for interfaces.

use std::rc::Rc;

use super::dwarf::{ChanDir, Field, GoType, Kind, TypeRef};
use super::Inspector;
use crate::process::memory::Memory;

/// Marks a [`TypeRef`] that is the address of a runtime type descriptor,
/// not a `.debug_info` offset (which never comes near 2^63).
pub(super) const RUNTIME_REF: TypeRef = 1 << 63;

/// Most struct fields read from a descriptor.
const MAX_FIELDS: u64 = 1 << 12;

/// `reflect.Kind` values (internal/abi/type.go).
mod kind {
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const INT64: u8 = 6;
    pub const UINT: u8 = 7;
    pub const UINTPTR: u8 = 12;
    pub const FLOAT32: u8 = 13;
    pub const FLOAT64: u8 = 14;
    pub const COMPLEX64: u8 = 15;
    pub const COMPLEX128: u8 = 16;
    pub const ARRAY: u8 = 17;
    pub const CHAN: u8 = 18;
    pub const FUNC: u8 = 19;
    pub const INTERFACE: u8 = 20;
    pub const MAP: u8 = 21;
    pub const POINTER: u8 = 22;
    pub const SLICE: u8 = 23;
    pub const STRING: u8 = 24;
    pub const STRUCT: u8 = 25;
    pub const UNSAFE_POINTER: u8 = 26;
}

impl Inspector<'_> {
    /// The type `r` refers to: DWARF, or a runtime descriptor.
    pub(super) fn ty(&self, r: TypeRef) -> Result<Rc<GoType>, String> {
        if r & RUNTIME_REF == 0 {
            return self.dwarf.ty(r);
        }
        let addr = (r & !RUNTIME_REF) as u64;
        let cached = self.runtime_types.borrow().get(&addr).cloned();
        if let Some(t) = cached {
            return Ok(t);
        }
        let t = Rc::new(self.read_runtime_type(addr)?);
        self.runtime_types.borrow_mut().insert(addr, t.clone());
        Ok(t)
    }

    /// The type of the runtime descriptor at `rtype`: its DWARF type when
    /// DWARF has one, else the descriptor itself.
    pub(super) fn runtime_type_ref(&self, rtype: u64) -> TypeRef {
        let runtime = RUNTIME_REF | (rtype as TypeRef);
        match self.dwarf_type_of(rtype) {
            // Maps need the layouts DWARF synthesizes for them.
            Some(t) if self.runtime_types_only => match self.dwarf.ty(t) {
                Ok(ty) if matches!(ty.kind, Kind::Map { .. }) => t,
                _ => runtime,
            },
            Some(t) => t,
            None => runtime,
        }
    }

    /// The DWARF type whose `DW_AT_go_runtime_type` designates the runtime
    /// descriptor at `rtype`.
    fn dwarf_type_of(&self, rtype: u64) -> Option<TypeRef> {
        if let Some(base) = self.types_base() {
            if let Some(t) = rtype
                .checked_sub(base)
                .and_then(|off| self.dwarf.type_by_runtime_offset(off))
            {
                return Some(t);
            }
        }
        // Go 1.15 writes absolute addresses for a few builtin types
        // (uintptr, unsafe.Pointer).
        let link = self
            .session
            .addr_map
            .exe_to_debug(rtype.wrapping_sub(self.session.bias))?;
        self.dwarf.type_by_runtime_offset(link)
    }

    fn read_runtime_type(&self, rtype: u64) -> Result<GoType, String> {
        let word = |off: u64| {
            self.mem
                .read_u64(rtype + off)
                .ok_or_else(|| format!("cannot read the type descriptor at {rtype:#x}"))
        };
        let size = word(0)?;
        let k = self
            .mem
            .read_u8(rtype + 23)
            .ok_or_else(|| format!("cannot read the type descriptor at {rtype:#x}"))?
            & 31;
        let name = self
            .runtime_type_name(rtype)
            .unwrap_or_else(|| format!("<type at {rtype:#x}>"));
        if size > super::decode::MAX_LEN {
            return Err(format!(
                "corrupt type descriptor at {rtype:#x} (size {size})"
            ));
        }
        let elem = |off: u64| -> Result<TypeRef, String> {
            match word(off)? {
                0 => Err(format!("type descriptor at {rtype:#x} has no element type")),
                e => Ok(self.runtime_type_ref(e)),
            }
        };
        let kind = match k {
            kind::BOOL => Kind::Bool,
            kind::INT..=kind::INT64 => Kind::Int,
            kind::UINT..=kind::UINTPTR => Kind::Uint,
            kind::FLOAT32 | kind::FLOAT64 => Kind::Float,
            kind::COMPLEX64 | kind::COMPLEX128 => Kind::Complex,
            kind::STRING => Kind::String,
            kind::UNSAFE_POINTER => Kind::UnsafePointer,
            kind::FUNC => Kind::Func,
            kind::POINTER => Kind::Pointer {
                elem: Some(elem(48)?),
            },
            kind::SLICE => Kind::Slice { elem: elem(48)? },
            kind::ARRAY => Kind::Array {
                elem: elem(48)?,
                len: word(64)?,
            },
            kind::CHAN => Kind::Chan {
                elem: elem(48)?,
                header: self.dwarf.type_by_name("runtime.hchan"),
                // runtime/type.go chantype.dir: 1 recv, 2 send, 3 both.
                dir: match word(56)? {
                    1 => ChanDir::Recv,
                    2 => ChanDir::Send,
                    _ => ChanDir::Both,
                },
            },
            kind::INTERFACE => {
                let empty = word(64)? == 0;
                let repr = if empty {
                    "runtime.eface"
                } else {
                    "runtime.iface"
                };
                Kind::Interface {
                    empty,
                    repr: self.dwarf.type_by_name(repr),
                }
            }
            kind::STRUCT => Kind::Struct {
                fields: self.runtime_fields(rtype)?,
            },
            kind::MAP => Kind::Unsupported(format!("map type {name} not described in DWARF")),
            other => Kind::Unsupported(format!("runtime type kind {other}")),
        };
        Ok(GoType {
            name,
            size,
            kind,
            runtime_type: None,
        })
    }

    fn runtime_fields(&self, rtype: u64) -> Result<Vec<Field>, String> {
        let bad = || format!("cannot read the struct type descriptor at {rtype:#x}");
        let data = self.mem.read_u64(rtype + 56).ok_or_else(bad)?;
        let len = self.mem.read_u64(rtype + 64).ok_or_else(bad)?;
        if len > MAX_FIELDS {
            return Err(format!(
                "corrupt struct type descriptor at {rtype:#x} ({len} fields)"
            ));
        }
        let packed = !self.session.go_version.at_least(1, 19);
        let mut fields = Vec::with_capacity(len as usize);
        for i in 0..len {
            let f = data + 24 * i;
            let (Some(name), Some(typ), Some(off)) = (
                self.mem.read_u64(f),
                self.mem.read_u64(f + 8),
                self.mem.read_u64(f + 16),
            ) else {
                return Err(bad());
            };
            let flags = self.mem.read_u8(name).unwrap_or(0);
            let (offset, embedded) = if packed {
                (off >> 1, off & 1 != 0)
            } else {
                // internal/abi/type.go Name.IsEmbedded: bit 3 of the flags.
                (off, flags & (1 << 3) != 0)
            };
            fields.push(Field {
                name: self.read_name(name).unwrap_or_default(),
                offset,
                ty: self.runtime_type_ref(typ),
                embedded,
            });
        }
        Ok(fields)
    }

    /// An encoded name at `at`: a flags byte, the length (big-endian
    /// uint16 before Go 1.17, a uvarint since: runtime/type.go name,
    /// internal/abi/type.go Name), the bytes.
    pub(super) fn read_name(&self, at: u64) -> Option<String> {
        let (len, start) = if self.session.go_version.at_least(1, 17) {
            let mut len = 0u64;
            let mut p = at + 1;
            for shift in (0..64).step_by(7) {
                let b = self.mem.read_u8(p)?;
                p += 1;
                len |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            (len, p)
        } else {
            let hi = self.mem.read_u8(at + 1)?;
            let lo = self.mem.read_u8(at + 2)?;
            (u64::from(u16::from_be_bytes([hi, lo])), at + 3)
        };
        if len > 4096 {
            return None;
        }
        let mut bytes = vec![0u8; len as usize];
        if !self.mem.read(start, &mut bytes) {
            return None;
        }
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The name of the runtime type descriptor at `rtype`: `str` (offset
    /// 40) is an offset from the types base to an encoded name; with
    /// tflagExtraStar (bit 1 of `tflag`, offset 20) the stored name has a
    /// `*` too many.
    pub(super) fn runtime_type_name(&self, rtype: u64) -> Option<String> {
        let base = self.types_base()?;
        let tflag = self.mem.read_u8(rtype + 20)?;
        let str_off = self.mem.read_u32(rtype + 40)? as i32;
        let mut s = self.read_name(base.checked_add_signed(i64::from(str_off))?)?;
        if s.is_empty() {
            return None;
        }
        if tflag & 2 != 0 && s.starts_with('*') {
            s.remove(0);
        }
        Some(s)
    }
}
