//! Reading Go maps: the classic hash map (Go <= 1.23, and 1.24-1.25 with
//! GOEXPERIMENT=noswissmap) and the Swiss-table map (Go 1.24+).
//!
//! Both layouts are taken from the types the linker synthesizes per map
//! type (cmd/link/internal/ld/dwarf.go `synthesizemaptypesOld` /
//! `synthesizemaptypesSwiss`), so offsets, slot sizes and group layouts are
//! never hard-coded; only the meaning of the control bytes is.
//!
//! Every count read from the target is bounded, and walking stops as soon
//! as enough entries were found: the map's own length says how many exist.

use std::collections::HashSet;

use super::decode::{unreadable, Decoder, MAX_LEN};
use super::dwarf::{GoType, Kind, TypeRef};
use super::{TypedValue, Value};
use crate::process::memory::Memory;

/// Largest bucket count exponent believed (`hmap.B`).
const MAX_B: u8 = 40;
/// Longest overflow chain walked from one bucket.
const MAX_OVERFLOW_CHAIN: usize = 1 << 16;
/// Largest Swiss directory believed (`Map.dirLen`).
const MAX_DIRECTORY: u64 = 1 << 24;
/// Most groups walked in one Swiss table.
const MAX_GROUPS: u64 = 1 << 32;

/// `runtime/map.go`: tophash values below minTopHash (5) mark empty slots
/// (0 emptyRest, 1 emptyOne) and, in old buckets of a growing map, slots
/// already moved to the new buckets (2 evacuatedX, 3 evacuatedY,
/// 4 evacuatedEmpty).
const MIN_TOP_HASH: u8 = 5;
/// `runtime/map.go` hmap.flags: the map grows to the same size.
const SAME_SIZE_GROW: u8 = 8;

/// Decodes the map whose header (`hash<K,V>` or `map<K,V>`) is at `h`.
pub(super) fn decode(
    dec: &mut Decoder<'_, '_>,
    h: u64,
    key: TypeRef,
    elem: TypeRef,
    header: TypeRef,
    depth: usize,
) -> Value {
    let types = (|| Ok::<_, String>((dec.ins.ty(header)?, dec.ins.ty(key)?, dec.ins.ty(elem)?)))();
    let (hdr, key_t, elem_t) = match types {
        Ok(t) => t,
        Err(e) => return Value::Unreadable(e),
    };
    let mut walk = Walk {
        key,
        elem,
        key_size: key_t.size,
        elem_size: elem_t.size,
        depth,
        want: 0,
        entries: Vec::new(),
    };
    let result = if hdr.field("buckets").is_some() {
        classic(dec, h, &hdr, &mut walk)
    } else if hdr.field("dirPtr").is_some() {
        swiss(dec, h, &hdr, &mut walk)
    } else {
        Err(format!("unknown map layout {}", hdr.name))
    };
    match result {
        Ok(len) => {
            let mut entries = walk.entries;
            sort_entries(&mut entries);
            Value::Map {
                addr: h,
                len,
                entries,
            }
        }
        Err(e) => Value::Unreadable(e),
    }
}

/// What a walk collects and how a slot is decoded.
struct Walk {
    key: TypeRef,
    elem: TypeRef,
    key_size: u64,
    elem_size: u64,
    depth: usize,
    /// How many entries to collect.
    want: usize,
    entries: Vec<(TypedValue, TypedValue)>,
}

impl Walk {
    fn full(&self) -> bool {
        self.entries.len() >= self.want
    }

    /// Decodes the entry whose key slot is at `k` (`slot_key` bytes wide)
    /// and value slot at `v`. A slot narrower than its type holds a pointer
    /// to the key or value: maps store keys and values larger than 128
    /// bytes indirectly (runtime/map.go maxKeySize/maxElemSize,
    /// internal/abi/map_swiss.go SwissMapMaxKeyBytes/SwissMapMaxElemBytes).
    fn take(&mut self, dec: &mut Decoder<'_, '_>, k: u64, slot_key: u64, v: u64, slot_elem: u64) {
        let key = match indirect(dec, k, slot_key, self.key_size) {
            Ok(at) => dec.value_at(at, self.key, self.depth),
            Err(e) => TypedValue::new(String::new(), e),
        };
        let value = match indirect(dec, v, slot_elem, self.elem_size) {
            Ok(at) => dec.value_at(at, self.elem, self.depth),
            Err(e) => TypedValue::new(String::new(), e),
        };
        self.entries.push((key, value));
    }
}

/// Where a key or value of `size` bytes is, given its slot at `slot` of
/// `slot_size` bytes.
fn indirect(dec: &Decoder<'_, '_>, slot: u64, slot_size: u64, size: u64) -> Result<u64, Value> {
    if slot_size == size {
        return Ok(slot);
    }
    match dec.ins.mem.read_u64(slot) {
        Some(0) => Err(Value::Unreadable("nil indirect map slot".into())),
        Some(p) => Ok(p),
        None => Err(unreadable(slot, 8)),
    }
}

/// The type a pointer-typed member of `t` points to.
fn pointee(dec: &Decoder<'_, '_>, t: &GoType, member: &str) -> Result<std::rc::Rc<GoType>, String> {
    let f = t
        .field(member)
        .ok_or_else(|| format!("{} has no member {member}", t.name))?;
    match dec.ins.ty(f.ty)?.kind {
        Kind::Pointer { elem: Some(e) } => dec.ins.ty(e),
        _ => Err(format!("{}.{member} is not a pointer", t.name)),
    }
}

/// Offset of `member` in `t`.
fn offset(t: &GoType, member: &str) -> Result<u64, String> {
    t.field(member)
        .map(|f| f.offset)
        .ok_or_else(|| format!("{} has no member {member}", t.name))
}

/// An array member of a struct: offset, element count, element size.
fn array_member(
    dec: &Decoder<'_, '_>,
    t: &GoType,
    member: &str,
) -> Result<(u64, u64, u64), String> {
    let f = t
        .field(member)
        .ok_or_else(|| format!("{} has no member {member}", t.name))?;
    match dec.ins.ty(f.ty)?.kind {
        Kind::Array { elem, len } => Ok((f.offset, len, dec.ins.ty(elem)?.size)),
        _ => Err(format!("{}.{member} is not an array", t.name)),
    }
}

fn read_u64(dec: &Decoder<'_, '_>, addr: u64) -> Result<u64, String> {
    dec.ins
        .mem
        .read_u64(addr)
        .ok_or_else(|| format!("cannot read 8 bytes at {addr:#x}"))
}

fn read_u8(dec: &Decoder<'_, '_>, addr: u64) -> Result<u8, String> {
    dec.ins
        .mem
        .read_u8(addr)
        .ok_or_else(|| format!("cannot read 1 byte at {addr:#x}"))
}

/// The classic map (runtime/map.go): `hash<K,V>` is runtime.hmap with
/// `buckets` (2^B buckets) and, while growing, `oldbuckets` (half as many,
/// or as many for a same-size grow) whose not yet evacuated entries are
/// still there. A `bucket<K,V>` has 8 `tophash` bytes, 8 `keys`, 8
/// `values` and an `overflow` pointer. Returns the map's length.
fn classic(
    dec: &mut Decoder<'_, '_>,
    h: u64,
    hdr: &GoType,
    walk: &mut Walk,
) -> Result<u64, String> {
    let count = read_u64(dec, h + offset(hdr, "count")?)?;
    let b = read_u8(dec, h + offset(hdr, "B")?)?;
    let flags = read_u8(dec, h + offset(hdr, "flags")?)?;
    let buckets = read_u64(dec, h + offset(hdr, "buckets")?)?;
    let oldbuckets = read_u64(dec, h + offset(hdr, "oldbuckets")?)?;
    if count > MAX_LEN || b > MAX_B {
        return Err(format!("corrupt map header (count {count}, B {b})"));
    }
    walk.want = count.min(dec.opts.max_elements as u64) as usize;
    if walk.want == 0 {
        return Ok(count);
    }
    let bucket = pointee(dec, hdr, "buckets")?;
    let (tophash_off, slots, _) = array_member(dec, &bucket, "tophash")?;
    let (keys_off, _, key_slot) = array_member(dec, &bucket, "keys")?;
    let (values_off, _, elem_slot) = array_member(dec, &bucket, "values")?;
    let overflow_off = offset(&bucket, "overflow")?;
    // 8 slots per bucket in every version (runtime/map.go bucketCnt).
    if slots == 0 || slots > 64 {
        return Err(format!("unexpected bucket layout ({slots} slots)"));
    }
    let layout = BucketLayout {
        size: bucket.size,
        slots,
        tophash_off,
        keys_off,
        key_slot,
        values_off,
        elem_slot,
        overflow_off,
    };
    let mut visited = HashSet::new();
    if buckets != 0 {
        walk_buckets(dec, walk, &layout, buckets, 1u64 << b, &mut visited)?;
    }
    if oldbuckets != 0 && !walk.full() {
        let old = if flags & SAME_SIZE_GROW != 0 || b == 0 {
            1u64 << b
        } else {
            1u64 << (b - 1)
        };
        walk_buckets(dec, walk, &layout, oldbuckets, old, &mut visited)?;
    }
    Ok(count)
}

struct BucketLayout {
    size: u64,
    slots: u64,
    tophash_off: u64,
    keys_off: u64,
    key_slot: u64,
    values_off: u64,
    elem_slot: u64,
    overflow_off: u64,
}

fn walk_buckets(
    dec: &mut Decoder<'_, '_>,
    walk: &mut Walk,
    l: &BucketLayout,
    array: u64,
    n: u64,
    visited: &mut HashSet<u64>,
) -> Result<(), String> {
    for i in 0..n {
        let mut bucket = array.wrapping_add(i.wrapping_mul(l.size));
        let mut chain = 0;
        while bucket != 0 && chain < MAX_OVERFLOW_CHAIN && visited.insert(bucket) {
            let mut tophash = vec![0u8; l.slots as usize];
            if !dec.ins.mem.read(bucket + l.tophash_off, &mut tophash) {
                return Err(format!("cannot read map bucket at {bucket:#x}"));
            }
            for (j, &top) in tophash.iter().enumerate() {
                if top < MIN_TOP_HASH {
                    continue;
                }
                let j = j as u64;
                walk.take(
                    dec,
                    bucket + l.keys_off + j * l.key_slot,
                    l.key_slot,
                    bucket + l.values_off + j * l.elem_slot,
                    l.elem_slot,
                );
                if walk.full() {
                    return Ok(());
                }
            }
            bucket = read_u64(dec, bucket + l.overflow_off)?;
            chain += 1;
        }
    }
    Ok(())
}

/// The Swiss map (internal/runtime/maps/map.go): `map<K,V>` is maps.Map.
/// With `dirLen` 0, `dirPtr` is a single group (a small map of at most 8
/// entries); otherwise it points to `dirLen` table pointers, where a table
/// may appear several times. A `table<K,V>` holds `groups`: `lengthMask+1`
/// groups, each a control word of 8 bytes followed by 8 slots (or, with
/// GOEXPERIMENT=mapsplitgroup in Go 1.27, 8 keys then 8 values). A control
/// byte with the high bit clear marks a full slot; 0x80 (empty) and 0xFE
/// (deleted) have it set (internal/runtime/maps/group.go). Returns the
/// map's length.
fn swiss(dec: &mut Decoder<'_, '_>, m: u64, hdr: &GoType, walk: &mut Walk) -> Result<u64, String> {
    let used = read_u64(dec, m + offset(hdr, "used")?)?;
    let dir_ptr = read_u64(dec, m + offset(hdr, "dirPtr")?)?;
    let dir_len = read_u64(dec, m + offset(hdr, "dirLen")?)?;
    if used > MAX_LEN || dir_len > MAX_DIRECTORY {
        return Err(format!(
            "corrupt map header (used {used}, dirLen {dir_len})"
        ));
    }
    walk.want = used.min(dec.opts.max_elements as u64) as usize;
    if walk.want == 0 || dir_ptr == 0 {
        return Ok(used);
    }
    // dirPtr is typed **table<K,V> in DWARF.
    let table_ptr = pointee(dec, hdr, "dirPtr")?;
    let table = match table_ptr.kind {
        Kind::Pointer { elem: Some(t) } => dec.ins.ty(t)?,
        _ => {
            return Err(format!(
                "{}.dirPtr is not a pointer to table pointers",
                hdr.name
            ))
        }
    };
    let groups_off = offset(&table, "groups")?;
    let groups_t = dec.ins.ty(table
        .field("groups")
        .ok_or_else(|| format!("{} has no member groups", table.name))?
        .ty)?;
    let data_off = offset(&groups_t, "data")?;
    let mask_off = offset(&groups_t, "lengthMask")?;
    let group = pointee(dec, &groups_t, "data")?;
    let layout = GroupLayout::of(dec, &group)?;

    if dir_len == 0 {
        scan_group(dec, walk, &layout, dir_ptr)?;
        return Ok(used);
    }
    let mut seen = HashSet::new();
    for i in 0..dir_len {
        let t = read_u64(dec, dir_ptr + 8 * i)?;
        if t == 0 || !seen.insert(t) {
            continue;
        }
        let mask = read_u64(dec, t + groups_off + mask_off)?;
        let data = read_u64(dec, t + groups_off + data_off)?;
        if mask >= MAX_GROUPS || data == 0 {
            return Err(format!("corrupt map table at {t:#x} (lengthMask {mask})"));
        }
        for g in 0..=mask {
            scan_group(
                dec,
                walk,
                &layout,
                data.wrapping_add(g.wrapping_mul(layout.size)),
            )?;
            if walk.full() {
                return Ok(used);
            }
        }
    }
    Ok(used)
}

/// Where keys and values are in a Swiss map group.
struct GroupLayout {
    size: u64,
    ctrl_off: u64,
    slots: u64,
    /// Key of slot i at `keys_off + i * key_stride`; same for values.
    keys_off: u64,
    key_stride: u64,
    key_slot: u64,
    elems_off: u64,
    elem_stride: u64,
    elem_slot: u64,
}

impl GroupLayout {
    fn of(dec: &Decoder<'_, '_>, group: &GoType) -> Result<GroupLayout, String> {
        let ctrl_off = offset(group, "ctrl")?;
        if group.field("slots").is_some() {
            // Interleaved: slots [8]struct{key K; elem V}.
            let (slots_off, slots, slot_size) = array_member(dec, group, "slots")?;
            let slot_t = match dec
                .ins
                .dwarf
                .ty(group.field("slots").map_or(0, |f| f.ty))?
                .kind
            {
                Kind::Array { elem, .. } => dec.ins.ty(elem)?,
                _ => return Err(format!("{}.slots is not an array", group.name)),
            };
            let key = slot_t
                .field("key")
                .ok_or_else(|| format!("{} has no key", slot_t.name))?;
            let elem = slot_t
                .field("elem")
                .ok_or_else(|| format!("{} has no elem", slot_t.name))?;
            Ok(GroupLayout {
                size: group.size,
                ctrl_off,
                slots,
                keys_off: slots_off + key.offset,
                key_stride: slot_size,
                key_slot: dec.ins.ty(key.ty)?.size,
                elems_off: slots_off + elem.offset,
                elem_stride: slot_size,
                elem_slot: dec.ins.ty(elem.ty)?.size,
            })
        } else {
            // Split: keys [8]K, elems [8]V.
            let (keys_off, slots, key_slot) = array_member(dec, group, "keys")?;
            let (elems_off, _, elem_slot) = array_member(dec, group, "elems")?;
            Ok(GroupLayout {
                size: group.size,
                ctrl_off,
                slots,
                keys_off,
                key_stride: key_slot,
                key_slot,
                elems_off,
                elem_stride: elem_slot,
                elem_slot,
            })
        }
    }
}

fn scan_group(
    dec: &mut Decoder<'_, '_>,
    walk: &mut Walk,
    l: &GroupLayout,
    g: u64,
) -> Result<(), String> {
    let ctrl = read_u64(dec, g + l.ctrl_off)?;
    for i in 0..l.slots.min(8) {
        let c = (ctrl >> (8 * i)) as u8;
        if c & 0x80 != 0 {
            continue;
        }
        walk.take(
            dec,
            g + l.keys_off + i * l.key_stride,
            l.key_slot,
            g + l.elems_off + i * l.elem_stride,
            l.elem_slot,
        );
        if walk.full() {
            return Ok(());
        }
    }
    Ok(())
}

/// Sorts entries by key when every key is a number, string or boolean
/// (as Go's fmt prints maps), so the output is stable across runs.
fn sort_entries(entries: &mut [(TypedValue, TypedValue)]) {
    if entries.iter().all(|(k, _)| sort_key(k).is_some()) {
        entries.sort_by(|a, b| {
            sort_key(&a.0)
                .partial_cmp(&sort_key(&b.0))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
}

/// A map key as something ordered.
#[derive(PartialEq, PartialOrd)]
enum SortKey<'a> {
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a [u8]),
    Bool(bool),
}

fn sort_key(v: &TypedValue) -> Option<SortKey<'_>> {
    Some(match &v.value {
        Value::Int(i) => SortKey::Int(*i),
        Value::Uint(u) => SortKey::Uint(*u),
        Value::Float(f) if !f.is_nan() => SortKey::Float(*f),
        Value::String { bytes, .. } => SortKey::Str(bytes),
        Value::Bool(b) => SortKey::Bool(*b),
        _ => return None,
    })
}
