//! The runtime's own profiles (runtime/mprof.go), read from outside:
//! memory ([`heap`]), blocking and mutex contention ([`contention`]);
//! also the goroutine and thread creation profiles ([`goroutine`],
//! [`threadcreate`]), which keep no buckets.
//!
//! Each profile is a list of *buckets*, one per call stack (and, for
//! memory, allocation size), headed by a global (`runtime.mbuckets`,
//! `bbuckets`, `xbuckets`) and linked by `bucket.allnext`, newest first. A
//! bucket is a 48-byte header (`next`, `allnext`, `typ`, `hash`, `size`,
//! `nstk`), `nstk` return pcs, then the profile's record. The runtime
//! never frees buckets, so the list is read without stopping the target;
//! a list that does not end, or a bucket that claims an absurd stack, ends
//! the read with an error.

pub mod contention;
pub mod goroutine;
pub mod heap;
pub mod threadcreate;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::binary::pclntab::SourceFrame;
use crate::error::{Error, Result};
use crate::output::pprof::{ValueProfile, ValueSample};
use crate::process::memory::Memory;
use crate::sampler::{Location, SourceLine};
use crate::target::Target;

pub use heap::{heap_profile, read_mem_profile, MemProfile, MemProfileKind};

/// Bytes of a bucket's header (runtime/mprof.go `bucket`: six words).
const BUCKET_HEADER_BYTES: u64 = 48;

/// Most pcs a bucket's stack may hold (`maxProfStackDepth` is 1024 in Go
/// 1.23+, 32 before): a larger `nstk` is a corrupt or changing bucket.
const MAX_STACK_DEPTH: u64 = 1024;

/// Most buckets read: a list longer than this is taken to be corrupt (a
/// program with this many distinct stacks does not exist).
const MAX_BUCKETS: usize = 1_000_000;

/// One bucket as read: its size field, stack and record words.
#[derive(Debug, Clone)]
struct RawBucket {
    /// The allocation size (memory profile buckets; 0 otherwise).
    size: u64,
    /// Return pcs, innermost first.
    stack: Vec<u64>,
    /// The record after the stack, `record_words` words.
    record: Vec<u64>,
}

/// Reads the bucket list from `head` (a runtime address), each bucket with
/// `record_words` words of record; `what` names the profile in errors.
fn read_bucket_list(
    mem: &dyn Memory,
    head: u64,
    record_words: u64,
    what: &str,
) -> Result<Vec<RawBucket>> {
    let mem = &BlockCache::new(mem);
    let mut buckets = Vec::new();
    let mut seen = HashSet::new();
    let mut addr = head;
    while addr != 0 {
        if buckets.len() >= MAX_BUCKETS || !seen.insert(addr) {
            return Err(Error::Other(format!(
                "the {what} profile's bucket list does not end (at {addr:#x} after {} buckets)",
                buckets.len()
            )));
        }
        let mut header = [0u8; BUCKET_HEADER_BYTES as usize];
        if !mem.read(addr, &mut header) {
            return Err(Error::Other(format!(
                "cannot read {what} profile bucket at {addr:#x}"
            )));
        }
        let words = words_of(&header);
        let (allnext, size, nstk) = (words[1], words[4], words[5]);
        if nstk > MAX_STACK_DEPTH {
            return Err(Error::Other(format!(
                "{what} profile bucket at {addr:#x} claims {nstk} stack pcs"
            )));
        }
        let mut body = vec![0u8; ((nstk + record_words) * 8) as usize];
        if !mem.read(addr + BUCKET_HEADER_BYTES, &mut body) {
            return Err(Error::Other(format!(
                "cannot read {what} profile bucket at {addr:#x}"
            )));
        }
        let mut words = words_of(&body);
        let record = words.split_off(nstk as usize);
        buckets.push(RawBucket {
            size,
            stack: words,
            record,
        });
        addr = allnext;
    }
    Ok(buckets)
}

/// `after` minus `before`, as `/debug/pprof/NAME?seconds=S` serves it
/// (net/http/pprof `serveDeltaProfile`: `before` scaled by -1, merged):
/// samples with the same frames and labels are subtracted, all-zero
/// results dropped, a sample only in `before` is negated.
pub fn difference(before: &ValueProfile, after: &ValueProfile) -> ValueProfile {
    type Key = (
        Vec<(String, String, u32)>,
        Vec<(String, i64)>,
        Vec<(String, String)>,
    );
    let key = |p: &ValueProfile, s: &ValueSample| -> Key {
        let frames = s
            .locations
            .iter()
            .filter_map(|&i| p.locations.get(i as usize))
            .flat_map(|l| &l.lines)
            .map(|l| (l.function.to_string(), l.file.to_string(), l.line))
            .collect();
        (frames, s.numeric_labels.clone(), s.labels.clone())
    };
    let mut out = ValueProfile {
        samples: Vec::new(),
        locations: after.locations.clone(),
        ..after.clone()
    };
    let mut index: HashMap<Key, usize> = HashMap::new();
    for s in &after.samples {
        match index.get(&key(after, s)) {
            Some(&i) => {
                let t: &mut ValueSample = &mut out.samples[i];
                for (v, w) in t.values.iter_mut().zip(&s.values) {
                    *v = v.wrapping_add(*w);
                }
            }
            None => {
                index.insert(key(after, s), out.samples.len());
                out.samples.push(s.clone());
            }
        }
    }
    let offset = out.locations.len() as u32;
    out.locations.extend(before.locations.iter().cloned());
    for s in &before.samples {
        match index.get(&key(before, s)) {
            Some(&i) => {
                for (v, w) in out.samples[i].values.iter_mut().zip(&s.values) {
                    *v = v.wrapping_sub(*w);
                }
            }
            None => {
                index.insert(key(before, s), out.samples.len());
                out.samples.push(ValueSample {
                    locations: s.locations.iter().map(|&l| l + offset).collect(),
                    values: s.values.iter().map(|v| v.wrapping_neg()).collect(),
                    numeric_labels: s.numeric_labels.clone(),
                    labels: s.labels.clone(),
                });
            }
        }
    }
    out.samples.retain(|s| s.values.iter().any(|&v| v != 0));
    out
}

/// Bytes read at a time by [`BlockCache`].
const CACHE_BLOCK: u64 = 64 * 1024;

/// Reads memory a 64 KiB aligned block at a time and serves reads within
/// the last block from it: the runtime allocates buckets one after another
/// from the same chunks (`persistentalloc`), so one read serves hundreds of
/// buckets instead of two reads each. A block that cannot be read whole
/// (it crosses into unmapped memory) falls back to direct reads.
struct BlockCache<'a> {
    mem: &'a dyn Memory,
    block: std::cell::RefCell<(u64, Vec<u8>)>,
}

impl<'a> BlockCache<'a> {
    fn new(mem: &'a dyn Memory) -> BlockCache<'a> {
        BlockCache {
            mem,
            block: std::cell::RefCell::new((0, Vec::new())),
        }
    }
}

impl Memory for BlockCache<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        let base = addr - addr % CACHE_BLOCK;
        if end > base + CACHE_BLOCK {
            return self.mem.read(addr, buf);
        }
        let mut block = self.block.borrow_mut();
        if block.1.is_empty() || block.0 != base {
            let mut bytes = vec![0u8; CACHE_BLOCK as usize];
            if !self.mem.read(base, &mut bytes) {
                return self.mem.read(addr, buf);
            }
            *block = (base, bytes);
        }
        let at = (addr - base) as usize;
        buf.copy_from_slice(&block.1[at..at + buf.len()]);
        true
    }
}

/// Little-endian words of `bytes` (a multiple of 8 long).
fn words_of(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect()
}

/// Turns the runtime's return pcs into Locations, one per logical frame,
/// as `runtime/pprof` does with `runtime.CallersFrames`.
struct Symbolizer<'t> {
    target: &'t Target,
    locations: Vec<Location>,
    /// Location ids by (pc, depth in the pc's inlined calls).
    ids: HashMap<(u64, usize), Option<u32>>,
    /// [`Symbolizer::logical_frames`] by pc: stacks share most of their pcs.
    logical: HashMap<u64, Rc<[SourceLine]>>,
    frames: Vec<SourceFrame<'t>>,
}

impl<'t> Symbolizer<'t> {
    fn new(target: &'t Target) -> Symbolizer<'t> {
        Symbolizer {
            target,
            locations: Vec::new(),
            ids: Default::default(),
            logical: HashMap::new(),
            frames: Vec::new(),
        }
    }

    /// `runtime.FuncForPC(pc).Name()`: the innermost function (inlined or
    /// not) at `pc` itself.
    fn func_for_pc(&mut self, pc: u64) -> Option<&'t str> {
        let pclntab = &self.target.binary.pclntab;
        let link = pc.wrapping_sub(self.target.bias);
        let f = pclntab.find_func(link)?;
        self.frames.clear();
        pclntab.source_frames(&f, link, &mut self.frames);
        self.frames.first().map(|sf| sf.function)
    }

    /// The logical frames at return pc `pc` (the call before it),
    /// innermost first, without inlined wrappers; empty for a pc in no
    /// function.
    fn logical_frames(&mut self, pc: u64) -> Rc<[SourceLine]> {
        if let Some(frames) = self.logical.get(&pc) {
            return frames.clone();
        }
        let frames: Rc<[SourceLine]> = self.symbolize_logical(pc).into();
        self.logical.insert(pc, frames.clone());
        frames
    }

    fn symbolize_logical(&mut self, pc: u64) -> Vec<SourceLine> {
        let pclntab = &self.target.binary.pclntab;
        let link = pc.wrapping_sub(self.target.bias);
        let Some(f) = pclntab.find_func(link) else {
            return Vec::new();
        };
        let call = if link > f.entry { link - 1 } else { link };
        self.frames.clear();
        pclntab.source_frames(&f, call, &mut self.frames);
        // runtime.CallersFrames leaves out the inlined callers that are
        // wrappers (`addMapping-fm`), as tracebacks do.
        self.frames
            .iter()
            .enumerate()
            .filter(|(depth, sf)| *depth == 0 || !sf.is_wrapper)
            .map(|(_, sf)| SourceLine {
                // runtime/pprof names frames by their full symbol names
                // (generic shapes included: `slices.Grow[go.shape.uint8]`).
                function: sf.function.into(),
                file: sf.file.into(),
                line: sf.line,
                start_line: sf.start_line,
            })
            .collect()
    }

    /// The locations of `stack`'s return pcs: one per logical frame, as
    /// `runtime.CallersFrames` gives them. A pc whose call was inlined
    /// stands for its inlined frames and their callers, unless the stack
    /// already lists those callers next (`runtime.Callers` stacks do; frame
    /// pointer stacks of Go 1.23+'s block and mutex profiles do not).
    /// `runtime.goexit` and pcs in no function have none.
    fn locations(&mut self, stack: &[u64]) -> Vec<u32> {
        let expanded: Vec<Rc<[SourceLine]>> =
            stack.iter().map(|&pc| self.logical_frames(pc)).collect();
        let mut out = Vec::new();
        for (i, frames) in expanded.iter().enumerate() {
            let next = expanded.get(i + 1);
            let already_listed = |k: usize| next.is_some_and(|n| **n == frames[k..]);
            for (depth, line) in frames.iter().enumerate() {
                if depth > 0 && already_listed(depth) {
                    break;
                }
                if &*line.function == "runtime.goexit" {
                    continue;
                }
                let key = (stack[i], depth);
                let id = match self.ids.get(&key) {
                    Some(&id) => id,
                    None => {
                        let id = self.locations.len() as u32;
                        self.locations.push(Location {
                            address: stack[i],
                            lines: vec![line.clone()],
                            native: false,
                        });
                        self.ids.insert(key, Some(id));
                        Some(id)
                    }
                };
                out.extend(id);
            }
        }
        out
    }

    fn into_locations(self) -> Vec<Location> {
        self.locations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Memory made of 8-byte words at given addresses.
    struct Words(BTreeMap<u64, u64>);

    impl Memory for Words {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (i, chunk) in buf.chunks_mut(8).enumerate() {
                match self.0.get(&(addr + 8 * i as u64)) {
                    Some(w) => chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]),
                    None => return false,
                }
            }
            true
        }
    }

    /// A bucket at `addr`: header, `stack`, then `record`.
    fn bucket(m: &mut Words, addr: u64, allnext: u64, size: u64, stack: &[u64], record: &[u64]) {
        let header = [0, allnext, 1, 0, size, stack.len() as u64];
        for (i, w) in header.iter().chain(stack).chain(record).enumerate() {
            m.0.insert(addr + 8 * i as u64, *w);
        }
    }

    #[test]
    fn bucket_list_is_read_in_order() {
        let mut m = Words(BTreeMap::new());
        bucket(&mut m, 0x1000, 0x2000, 64, &[0x401000, 0x402000], &[3, 4]);
        bucket(&mut m, 0x2000, 0, 128, &[0x403000], &[5, 6]);
        let b = read_bucket_list(&m, 0x1000, 2, "test").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].size, &b[0].stack[..], &b[0].record[..]),
            (64, &[0x401000, 0x402000][..], &[3, 4][..])
        );
        assert_eq!(
            (b[1].size, &b[1].stack[..], &b[1].record[..]),
            (128, &[0x403000][..], &[5, 6][..])
        );
    }

    #[test]
    fn a_cycle_or_an_absurd_stack_ends_the_read_with_an_error() {
        let mut m = Words(BTreeMap::new());
        bucket(&mut m, 0x1000, 0x2000, 64, &[1], &[0, 0]);
        bucket(&mut m, 0x2000, 0x1000, 64, &[1], &[0, 0]);
        let e = read_bucket_list(&m, 0x1000, 2, "test").unwrap_err();
        assert!(e.to_string().contains("does not end"), "{e}");

        let mut m = Words(BTreeMap::new());
        bucket(&mut m, 0x1000, 0, 64, &[], &[]);
        m.0.insert(0x1000 + 40, u64::MAX);
        let e = read_bucket_list(&m, 0x1000, 2, "test").unwrap_err();
        assert!(e.to_string().contains("stack pcs"), "{e}");

        let m = Words(BTreeMap::new());
        assert!(read_bucket_list(&m, 0x1000, 2, "test").is_err());
    }
}
