//! Reading the target's memory with `process_vm_readv`.
//!
//! [`ProcessMemory`] reads the live process. [`MemorySnapshot`] copies many
//! ranges while the target is paused, in as few syscalls as possible, into
//! one arena; everything after the pause reads from it. Both implement
//! [`Memory`], so code that decodes runtime structures or unwinds stacks works
//! on either.
//!
//! `process_vm_readv` needs ptrace-attach permission on the target (root,
//! CAP_SYS_PTRACE, or yama ptrace_scope allowing it); it does not need the
//! target to be stopped or attached.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Most iovecs one `process_vm_readv` accepts (per side), `UIO_MAXIOV`.
pub const IOV_MAX: usize = 1024;
/// Largest single range [`MemorySnapshot::request`] accepts.
pub const MAX_RANGE: usize = 64 << 20;
/// Default of [`MemorySnapshot::set_merge_gap`]. The kernel spends about as
/// long on one more iovec as on copying a kilobyte or two.
pub const DEFAULT_MERGE_GAP: u64 = 1024;
/// Default total of bytes a [`MemorySnapshot`] may request.
pub const DEFAULT_SNAPSHOT_LIMIT: u64 = 1 << 30;
/// Bytes per syscall; the kernel silently truncates transfers past ~2 GiB.
const MAX_BATCH_BYTES: u64 = 256 << 20;
const PAGE_SIZE: u64 = 4096;
const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

/// Read access to a target's memory, live or snapshotted. Reads are
/// little-endian (x86-64).
pub trait Memory {
    /// Fills `buf` from `addr`; false if any byte is unavailable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    fn read_u8(&self, addr: u64) -> Option<u8> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b).then_some(b[0])
    }
    fn read_u16(&self, addr: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b).then(|| u16::from_le_bytes(b))
    }
    fn read_u32(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
    fn read_i64(&self, addr: u64) -> Option<i64> {
        self.read_u64(addr).map(|v| v as i64)
    }
}

impl<M: Memory + ?Sized> Memory for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        (**self).read(addr, buf)
    }
    fn read_u8(&self, addr: u64) -> Option<u8> {
        (**self).read_u8(addr)
    }
    fn read_u16(&self, addr: u64) -> Option<u16> {
        (**self).read_u16(addr)
    }
    fn read_u32(&self, addr: u64) -> Option<u32> {
        (**self).read_u32(addr)
    }
    fn read_u64(&self, addr: u64) -> Option<u64> {
        (**self).read_u64(addr)
    }
}

/// The live memory of process `pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    pid: i32,
}

/// Counts from [`ProcessMemory::read_packed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub syscalls: usize,
    pub failed: usize,
    pub bytes: u64,
}

/// Outcome of one `process_vm_readv`: bytes copied, or the errno.
fn vm_readv(
    pid: i32,
    local: &[libc::iovec],
    remote: &[libc::iovec],
) -> std::result::Result<usize, i32> {
    debug_assert!(local.len() <= IOV_MAX && remote.len() <= IOV_MAX);
    loop {
        // SAFETY: the local iovecs point to writable memory owned by the
        // caller for their whole length; the remote ones are only addresses
        // in the other process, checked by the kernel.
        let n = unsafe {
            libc::process_vm_readv(
                pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

fn remote_iov(addr: u64, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len,
    }
}

impl ProcessMemory {
    pub fn new(pid: i32) -> ProcessMemory {
        ProcessMemory { pid }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Errors that end a batch; `None` for errors that only concern the
    /// ranges (EFAULT).
    fn fatal(&self, errno: i32, addr: u64, len: usize) -> Option<Error> {
        match errno {
            libc::EFAULT => None,
            libc::ESRCH => Some(Error::ProcessExited { pid: self.pid }),
            libc::EPERM | libc::EACCES => Some(Error::PermissionDenied {
                pid: self.pid,
                operation: "read the memory of".into(),
            }),
            _ => Some(Error::Memory {
                addr,
                len,
                reason: std::io::Error::from_raw_os_error(errno).to_string(),
            }),
        }
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        if addr.checked_add(len as u64).is_none() {
            return Err(Error::Memory {
                addr,
                len,
                reason: "range wraps around the address space".into(),
            });
        }
        let local = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        }];
        let remote = [remote_iov(addr, len)];
        match vm_readv(self.pid, &local, &remote) {
            Ok(n) if n == len => Ok(()),
            Ok(n) => Err(Error::Memory {
                addr,
                len,
                reason: format!("only the first {n} bytes are mapped"),
            }),
            Err(errno) => Err(self.fatal(errno, addr, len).unwrap_or(Error::Memory {
                addr,
                len,
                reason: "address not mapped in the target".into(),
            })),
        }
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    /// Reads many ranges, packed one after the other into `out` (which must
    /// hold the sum of their lengths), up to [`IOV_MAX`] ranges per syscall.
    /// `ok[i]` tells whether range `i` was read completely; the bytes of a
    /// failed range are unspecified. A range that faults does not stop the
    /// others. Errors only for the process being gone or not permitted.
    pub fn read_packed(
        &self,
        ranges: &[(u64, usize)],
        out: &mut [u8],
        ok: &mut [bool],
    ) -> Result<BatchStats> {
        let total: usize = ranges.iter().map(|r| r.1).sum();
        assert!(out.len() >= total, "read_packed: output buffer too small");
        assert!(ok.len() >= ranges.len(), "read_packed: ok slice too small");
        let mut stats = BatchStats::default();
        let mut remote: Vec<libc::iovec> = Vec::with_capacity(IOV_MAX.min(ranges.len()));
        // Offset in `out` of each range start, computed on the fly.
        let mut i = 0usize;
        let mut pos = 0usize;
        while i < ranges.len() {
            remote.clear();
            let mut batch_bytes = 0u64;
            let mut j = i;
            while j < ranges.len() && remote.len() < IOV_MAX {
                let (addr, len) = ranges[j];
                if addr.checked_add(len as u64).is_none() || len > MAX_BATCH_BYTES as usize {
                    break; // handled alone below
                }
                if !remote.is_empty() && batch_bytes + len as u64 > MAX_BATCH_BYTES {
                    break;
                }
                remote.push(remote_iov(addr, len));
                batch_bytes += len as u64;
                j += 1;
            }
            if remote.is_empty() {
                // A range that cannot be read at all (wraps, or too large).
                ok[i] = false;
                stats.failed += 1;
                pos += ranges[i].1;
                i += 1;
                continue;
            }
            let local = [libc::iovec {
                iov_base: out[pos..].as_mut_ptr().cast(),
                iov_len: batch_bytes as usize,
            }];
            stats.syscalls += 1;
            let n = match vm_readv(self.pid, &local, &remote) {
                Ok(n) => n,
                Err(errno) => match self.fatal(errno, ranges[i].0, ranges[i].1) {
                    Some(e) => return Err(e),
                    None => 0,
                },
            };
            let mut left = n;
            while i < j && left >= ranges[i].1 {
                ok[i] = true;
                left -= ranges[i].1;
                pos += ranges[i].1;
                stats.bytes += ranges[i].1 as u64;
                i += 1;
            }
            if i < j {
                // Range i faulted; the kernel stopped there.
                ok[i] = false;
                stats.failed += 1;
                pos += ranges[i].1;
                i += 1;
            }
        }
        Ok(stats)
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        ProcessMemory::read(self, addr, buf).is_ok()
    }
}

/// One fetched range of a snapshot: `[start, end)` is at `arena[off..]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    start: u64,
    end: u64,
    off: usize,
}

/// What [`MemorySnapshot::fetch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Requests queued for this fetch.
    pub requests: usize,
    /// Requests refused since the previous fetch (too large, wrapping, or
    /// over the snapshot's limit).
    pub rejected: usize,
    /// Ranges actually read after merging, and after removing what earlier
    /// fetches already hold.
    pub ranges: usize,
    pub syscalls: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Ranges (or parts of merged ranges) that could not be read.
    pub failed_ranges: usize,
    pub failed_bytes: u64,
    pub elapsed: Duration,
}

/// Raw bytes of the target copied while it was paused.
///
/// Queue ranges with [`request`](Self::request), copy them with
/// [`fetch`](Self::fetch) (overlapping and adjacent ranges are merged, many
/// per syscall), then look them up with [`get`](Self::get) or the [`Memory`]
/// methods. Several request/fetch rounds can be made while the target is
/// paused (e.g. g structs first, then the stacks they point to).
///
/// A range that faults (unmapped page) is recorded as missing and does not
/// affect the others; when a merged range faults in the middle, what precedes
/// the faulting page is kept and reading goes on at the next requested range.
#[derive(Debug, Clone)]
pub struct MemorySnapshot {
    pending: Vec<(u64, u64)>,
    chunks: Vec<Chunk>,
    arena: Vec<u8>,
    missing: Vec<(u64, u64)>,
    limit: u64,
    accepted_bytes: u64,
    rejected: usize,
    merge_gap: u64,
}

impl Default for MemorySnapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySnapshot {
    /// A snapshot that accepts up to [`DEFAULT_SNAPSHOT_LIMIT`] bytes.
    pub fn new() -> MemorySnapshot {
        Self::with_limit(DEFAULT_SNAPSHOT_LIMIT)
    }

    /// A snapshot that accepts requests totalling at most `limit` bytes
    /// (ranges already held do not count again).
    pub fn with_limit(limit: u64) -> MemorySnapshot {
        MemorySnapshot {
            pending: Vec::new(),
            chunks: Vec::new(),
            arena: Vec::new(),
            missing: Vec::new(),
            limit,
            accepted_bytes: 0,
            rejected: 0,
            merge_gap: DEFAULT_MERGE_GAP,
        }
    }

    /// Requested ranges closer than `gap` bytes (at most 4095) are read as
    /// one, bytes in between included: fewer iovecs (each costs the kernel
    /// ~0.4 µs) for more bytes. Default [`DEFAULT_MERGE_GAP`]; 0 merges only
    /// overlapping or adjacent ranges. The arena may hold up to `gap` bytes
    /// per range more than was requested.
    pub fn set_merge_gap(&mut self, gap: u64) {
        // A gap under a page never touches a page that neither neighbour
        // touches, so it cannot make a readable range fault.
        self.merge_gap = gap.min(PAGE_SIZE - 1);
    }

    /// Queues `[addr, addr+len)` for the next [`fetch`](Self::fetch).
    /// Returns false, and queues nothing, if the range is larger than
    /// [`MAX_RANGE`], wraps, or would take the snapshot over its limit.
    pub fn request(&mut self, addr: u64, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        let Some(end) = addr.checked_add(len as u64) else {
            self.rejected += 1;
            return false;
        };
        if len > MAX_RANGE {
            self.rejected += 1;
            return false;
        }
        if self.contains(addr, len) {
            return true;
        }
        if self.accepted_bytes + len as u64 > self.limit {
            self.rejected += 1;
            return false;
        }
        self.accepted_bytes += len as u64;
        self.pending.push((addr, end));
        true
    }

    /// Reserves and touches arena space for `bytes` more bytes, so that a
    /// later [`fetch`](Self::fetch) of that much does not take page faults:
    /// call it before pausing the target to keep the pause short.
    pub fn prefault(&mut self, bytes: usize) {
        let bytes = bytes.min(self.limit as usize);
        self.arena.reserve(bytes);
        let spare = self.arena.spare_capacity_mut();
        for page in spare.chunks_mut(PAGE_SIZE as usize) {
            page[0].write(0);
        }
    }

    /// Number of ranges queued and not fetched yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Copies every queued range from `mem`. Ranges that cannot be read are
    /// recorded as missing; errors only when the process is gone or not
    /// readable at all.
    pub fn fetch(&mut self, mem: &ProcessMemory) -> Result<FetchStats> {
        let t0 = Instant::now();
        let mut stats = FetchStats {
            requests: self.pending.len(),
            rejected: std::mem::take(&mut self.rejected),
            ..FetchStats::default()
        };
        let mut reqs = std::mem::take(&mut self.pending);
        if reqs.is_empty() {
            stats.elapsed = t0.elapsed();
            return Ok(stats);
        }
        reqs.sort_unstable();
        let work = self.plan(&reqs);
        stats.ranges = work.len();
        let result = self.read_work(mem, &reqs, work, &mut stats);
        stats.elapsed = t0.elapsed();
        result.map(|()| stats)
    }

    /// Merges sorted requests and removes what earlier fetches hold.
    fn plan(&self, reqs: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(reqs.len() / 2 + 1);
        for &(s, e) in reqs {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(self.merge_gap) => {
                    if e > last.1 {
                        last.1 = e;
                    }
                }
                _ => merged.push((s, e)),
            }
        }
        if self.chunks.is_empty() {
            return merged;
        }
        let mut work = Vec::with_capacity(merged.len());
        // Chunks are sorted and disjoint: walk both lists together.
        let mut ci = self.chunks.partition_point(|c| c.end <= merged[0].0);
        for (mut s, e) in merged {
            while ci < self.chunks.len() && self.chunks[ci].end <= s {
                ci += 1;
            }
            let mut k = ci;
            while s < e {
                match self.chunks.get(k) {
                    Some(c) if c.start < e => {
                        if c.start > s {
                            work.push((s, c.start));
                        }
                        s = s.max(c.end);
                        k += 1;
                    }
                    _ => {
                        work.push((s, e));
                        s = e;
                    }
                }
            }
        }
        work
    }

    fn read_work(
        &mut self,
        mem: &ProcessMemory,
        reqs: &[(u64, u64)],
        mut work: Vec<(u64, u64)>,
        stats: &mut FetchStats,
    ) -> Result<()> {
        let total: u64 = work.iter().map(|w| w.1 - w.0).sum();
        self.arena.reserve(total as usize);
        let mut new_chunks: Vec<Chunk> = Vec::with_capacity(work.len());
        let mut remote: Vec<libc::iovec> = Vec::with_capacity(IOV_MAX.min(work.len()));
        let mut i = 0usize;
        let mut outcome = Ok(());
        while i < work.len() {
            remote.clear();
            let mut batch_bytes = 0u64;
            let mut j = i;
            while j < work.len() && remote.len() < IOV_MAX {
                let len = work[j].1 - work[j].0;
                if !remote.is_empty() && batch_bytes + len > MAX_BATCH_BYTES {
                    break;
                }
                remote.push(remote_iov(work[j].0, len as usize));
                batch_bytes += len;
                j += 1;
            }
            let base = self.arena.len();
            self.arena.reserve(batch_bytes as usize);
            let local = [libc::iovec {
                // SAFETY: `base` is the length, within the allocation; the
                // capacity past it is at least `batch_bytes`.
                iov_base: unsafe { self.arena.as_mut_ptr().add(base) }.cast(),
                iov_len: batch_bytes as usize,
            }];
            stats.syscalls += 1;
            let n = match vm_readv(mem.pid, &local, &remote) {
                Ok(n) => n.min(batch_bytes as usize),
                Err(errno) => match mem.fatal(errno, work[i].0, (work[i].1 - work[i].0) as usize) {
                    Some(e) => {
                        outcome = Err(e);
                        break;
                    }
                    None => 0,
                },
            };
            // SAFETY: the kernel wrote the first `n` bytes after `base`, all
            // within the reserved capacity.
            unsafe { self.arena.set_len(base + n) };
            stats.bytes += n as u64;
            let mut left = n as u64;
            let mut off = base;
            while i < j {
                let (s, e) = work[i];
                let len = e - s;
                if left < len {
                    break;
                }
                new_chunks.push(Chunk {
                    start: s,
                    end: e,
                    off,
                });
                off += len as usize;
                left -= len;
                i += 1;
            }
            if i == j {
                continue;
            }
            // work[i] faulted after `left` bytes: keep them, skip the page
            // that faulted, go on at the next request that starts after it.
            let (s, e) = work[i];
            if left > 0 {
                new_chunks.push(Chunk {
                    start: s,
                    end: s + left,
                    off,
                });
            }
            let fault = s + left;
            let resume = (fault & PAGE_MASK).saturating_add(PAGE_SIZE);
            let next = reqs.partition_point(|r| r.0 < resume);
            match reqs.get(next) {
                Some(&(ns, _)) if ns < e => {
                    self.missing.push((fault, ns));
                    stats.failed_bytes += ns - fault;
                    work[i].0 = ns;
                }
                _ => {
                    self.missing.push((fault, e));
                    stats.failed_bytes += e - fault;
                    i += 1;
                }
            }
            stats.failed_ranges += 1;
        }
        self.insert_chunks(new_chunks);
        outcome
    }

    /// Adds disjoint sorted chunks, then joins chunks that touch so a lookup
    /// across them finds one contiguous slice.
    fn insert_chunks(&mut self, new: Vec<Chunk>) {
        if new.is_empty() {
            return;
        }
        let all = if self.chunks.is_empty() {
            new
        } else {
            let old = std::mem::take(&mut self.chunks);
            let mut all = Vec::with_capacity(old.len() + new.len());
            let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
            loop {
                let take_a = match (a.peek(), b.peek()) {
                    (Some(x), Some(y)) => x.start <= y.start,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                all.push(if take_a { a.next() } else { b.next() }.unwrap());
            }
            all
        };
        let mut out: Vec<Chunk> = Vec::with_capacity(all.len());
        let mut k = 0;
        while k < all.len() {
            let mut run_end = k + 1;
            let mut contiguous = true;
            while run_end < all.len() && all[run_end].start == all[run_end - 1].end {
                let prev = &all[run_end - 1];
                contiguous &= all[run_end].off == prev.off + (prev.end - prev.start) as usize;
                run_end += 1;
            }
            let first = all[k];
            let last = all[run_end - 1];
            if contiguous {
                out.push(Chunk {
                    start: first.start,
                    end: last.end,
                    off: first.off,
                });
            } else {
                // Copy the run to the end of the arena in one piece.
                let off = self.arena.len();
                for c in &all[k..run_end] {
                    let len = (c.end - c.start) as usize;
                    self.arena.extend_from_within(c.off..c.off + len);
                }
                out.push(Chunk {
                    start: first.start,
                    end: last.end,
                    off,
                });
            }
            k = run_end;
        }
        self.chunks = out;
    }

    /// The bytes `[addr, addr+len)`, if they lie inside one fetched range.
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        let idx = self.chunks.partition_point(|c| c.start <= addr);
        let c = self.chunks.get(idx.checked_sub(1)?)?;
        if end > c.end {
            return None;
        }
        let off = c.off + (addr - c.start) as usize;
        Some(&self.arena[off..off + len])
    }

    /// The bytes from `addr` to the end of the fetched range holding it.
    pub fn get_available(&self, addr: u64) -> Option<&[u8]> {
        let idx = self.chunks.partition_point(|c| c.start <= addr);
        let c = self.chunks.get(idx.checked_sub(1)?)?;
        if addr >= c.end {
            return None;
        }
        let off = c.off + (addr - c.start) as usize;
        Some(&self.arena[off..c.off + (c.end - c.start) as usize])
    }

    pub fn contains(&self, addr: u64, len: usize) -> bool {
        self.get(addr, len).is_some()
    }

    pub fn read_u8(&self, addr: u64) -> Option<u8> {
        self.get(addr, 1).map(|b| b[0])
    }
    pub fn read_u16(&self, addr: u64) -> Option<u16> {
        self.get(addr, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn read_u32(&self, addr: u64) -> Option<u32> {
        self.get(addr, 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        self.get(addr, 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Ranges (or parts of ranges) that could not be read, in the order
    /// they failed.
    pub fn missing(&self) -> &[(u64, u64)] {
        &self.missing
    }

    /// Fetched ranges as `(start, end)`, sorted and disjoint.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.chunks.iter().map(|c| (c.start, c.end))
    }

    /// Bytes held (including copies made when joining ranges).
    pub fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Forgets everything, keeping the allocations for the next sample.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.chunks.clear();
        self.arena.clear();
        self.missing.clear();
        self.accepted_bytes = 0;
        self.rejected = 0;
    }
}

impl Memory for MemorySnapshot {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        match self.get(addr, buf.len()) {
            Some(b) => {
                buf.copy_from_slice(b);
                true
            }
            None => false,
        }
    }
    fn read_u8(&self, addr: u64) -> Option<u8> {
        MemorySnapshot::read_u8(self, addr)
    }
    fn read_u16(&self, addr: u64) -> Option<u16> {
        MemorySnapshot::read_u16(self, addr)
    }
    fn read_u32(&self, addr: u64) -> Option<u32> {
        MemorySnapshot::read_u32(self, addr)
    }
    fn read_u64(&self, addr: u64) -> Option<u64> {
        MemorySnapshot::read_u64(self, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ProcessMemory {
        ProcessMemory::new(std::process::id() as i32)
    }

    /// Three pages with the middle one unreadable.
    struct Holey {
        base: *mut u8,
    }
    impl Holey {
        fn new() -> Holey {
            // SAFETY: plain anonymous mappings.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    3 * 4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(p, libc::MAP_FAILED);
                let base = p as *mut u8;
                for i in 0..3 * 4096 {
                    if !(4096..8192).contains(&i) {
                        *base.add(i) = (i % 251) as u8;
                    }
                }
                // PROT_NONE rather than munmap: another test thread could map
                // something into a hole.
                assert_eq!(
                    libc::mprotect(base.add(4096).cast(), 4096, libc::PROT_NONE),
                    0
                );
                Holey { base }
            }
        }
        fn addr(&self, off: usize) -> u64 {
            self.base as u64 + off as u64
        }
    }
    impl Drop for Holey {
        fn drop(&mut self) {
            // SAFETY: unmapping what new() mapped.
            unsafe {
                libc::munmap(self.base.cast(), 3 * 4096);
            }
        }
    }
    fn expected(off: usize) -> u8 {
        (off % 251) as u8
    }

    #[test]
    fn live_reads() {
        let data: Vec<u64> = (0..64).map(|i| i * 0x0101_0101).collect();
        let m = me();
        assert_eq!(
            m.read_u64(data.as_ptr() as u64 + 8 * 5).unwrap(),
            5 * 0x0101_0101
        );
        assert_eq!(
            Memory::read_u64(&m, data.as_ptr() as u64 + 8),
            Some(0x0101_0101)
        );
        let h = Holey::new();
        assert!(matches!(
            m.read_u64(h.addr(4096)),
            Err(Error::Memory { .. })
        ));
        let mut buf = [0u8; 64];
        match m.read(h.addr(4096 - 32), &mut buf) {
            Err(Error::Memory { reason, .. }) => assert!(reason.contains("first 32"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!Memory::read(&m, h.addr(4096 - 32), &mut buf));
        assert!(matches!(
            m.read(u64::MAX - 3, &mut buf),
            Err(Error::Memory { .. })
        ));
    }

    #[test]
    fn packed_reads_skip_faulting_ranges() {
        let h = Holey::new();
        let m = me();
        let ranges = [
            (h.addr(0), 100),
            (h.addr(4000), 200), // crosses into the hole
            (h.addr(5000), 10),  // inside the hole
            (h.addr(8192), 16),
            (h.addr(0), 0),
            (h.addr(9000), 300),
            (u64::MAX - 4, 16), // wraps
            (h.addr(12), 4),
        ];
        let total: usize = ranges.iter().map(|r| r.1).sum();
        let mut out = vec![0u8; total];
        let mut ok = vec![false; ranges.len()];
        let stats = m.read_packed(&ranges, &mut out, &mut ok).unwrap();
        assert_eq!(ok, [true, false, false, true, true, true, false, true][..]);
        assert_eq!(stats.failed, 3);
        let mut pos = 0;
        for (k, &(addr, len)) in ranges.iter().enumerate() {
            if ok[k] {
                let off = (addr - h.addr(0)) as usize;
                for i in 0..len {
                    assert_eq!(out[pos + i], expected(off + i), "range {k} byte {i}");
                }
            }
            pos += len;
        }
    }

    #[test]
    fn packed_reads_many_iovecs() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let base = data.as_ptr() as u64;
        let ranges: Vec<(u64, usize)> = (0..3000).map(|i| (base + i * 31, 17)).collect();
        let mut out = vec![0u8; 3000 * 17];
        let mut ok = vec![false; 3000];
        let stats = me().read_packed(&ranges, &mut out, &mut ok).unwrap();
        assert_eq!(stats.syscalls, 3);
        assert!(ok.iter().all(|&b| b));
        for (k, chunk) in out.chunks(17).enumerate() {
            assert_eq!(chunk, &data[k * 31..k * 31 + 17]);
        }
    }

    #[test]
    fn snapshot_merges_and_looks_up() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 249) as u8).collect();
        let b = data.as_ptr() as u64;
        let mut s = MemorySnapshot::new();
        s.set_merge_gap(0);
        assert!(s.request(b + 100, 50));
        assert!(s.request(b + 120, 100)); // overlaps
        assert!(s.request(b + 220, 30)); // adjacent
        assert!(s.request(b + 1000, 8));
        assert!(s.request(b + 1000, 8)); // duplicate
        assert!(s.request(b + 5, 0)); // empty: nothing to do
        let st = s.fetch(&me()).unwrap();
        assert_eq!(st.requests, 5);
        assert_eq!(st.ranges, 2);
        assert_eq!(st.syscalls, 1);
        assert_eq!(st.bytes, 150 + 8);
        assert_eq!(st.failed_ranges, 0);
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            vec![(b + 100, b + 250), (b + 1000, b + 1008)]
        );
        assert_eq!(s.get(b + 100, 150).unwrap(), &data[100..250]);
        assert_eq!(s.get(b + 200, 10).unwrap(), &data[200..210]);
        assert!(s.get(b + 99, 2).is_none());
        assert!(s.get(b + 249, 2).is_none());
        assert!(s.get(b + 250, 1).is_none());
        assert!(s.get(b + 50, 1).is_none());
        assert!(s.get(u64::MAX, 2).is_none());
        assert_eq!(
            s.read_u64(b + 1000),
            Some(u64::from_le_bytes(data[1000..1008].try_into().unwrap()))
        );
        assert_eq!(
            s.read_u32(b + 1004),
            Some(u32::from_le_bytes(data[1004..1008].try_into().unwrap()))
        );
        assert_eq!(s.read_u8(b + 1007), Some(data[1007]));
        assert_eq!(s.read_u64(b + 1001), None);
        assert_eq!(s.get_available(b + 240).unwrap(), &data[240..250]);
        assert!(s.contains(b + 100, 0));
        let mut buf = [0u8; 4];
        assert!(Memory::read(&s, b + 130, &mut buf));
        assert_eq!(buf, data[130..134]);
        assert_eq!(Memory::read_u64(&&s, b + 1000), s.read_u64(b + 1000));
    }

    #[test]
    fn snapshot_merge_gap() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 249) as u8).collect();
        let b = data.as_ptr() as u64;
        let mut s = MemorySnapshot::new();
        s.set_merge_gap(64);
        s.request(b, 10);
        s.request(b + 60, 10);
        s.request(b + 200, 10);
        let st = s.fetch(&me()).unwrap();
        assert_eq!(st.ranges, 2);
        assert_eq!(s.get(b + 5, 60).unwrap(), &data[5..65]);
    }

    #[test]
    fn snapshot_incremental_rounds_join() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
        let b = data.as_ptr() as u64;
        let mut s = MemorySnapshot::new();
        s.set_merge_gap(0);
        s.request(b + 1000, 100);
        s.request(b + 3000, 100);
        s.fetch(&me()).unwrap();
        // Second round: already-held ranges are not requested again, and a
        // range overlapping both old ones joins them into one.
        assert!(s.request(b + 1010, 10));
        assert_eq!(s.pending(), 0);
        s.request(b + 900, 2300);
        s.request(b + 5000, 4);
        let st = s.fetch(&me()).unwrap();
        assert_eq!(st.ranges, 4); // [900,1000) [1100,3000) [3100,3200) [5000,5004)
        assert_eq!(st.bytes, 100 + 1900 + 100 + 4);
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            vec![(b + 900, b + 3200), (b + 5000, b + 5004)]
        );
        assert_eq!(s.get(b + 900, 2300).unwrap(), &data[900..3200]);
        // A third round adjacent to the first chunk.
        s.request(b + 3200, 50);
        s.fetch(&me()).unwrap();
        assert_eq!(s.get(b + 900, 2350).unwrap(), &data[900..3250]);
    }

    #[test]
    fn snapshot_keeps_what_precedes_a_hole() {
        let h = Holey::new();
        let mut s = MemorySnapshot::new();
        // Adjacent requests merge into one range that crosses the hole.
        s.request(h.addr(3000), 1096); // [3000, 4096) readable
        s.request(h.addr(4096), 4096); // the hole
        s.request(h.addr(8192), 100); // readable after the hole
        s.request(h.addr(8292), 200);
        s.request(h.addr(10000), 10);
        s.request(h.addr(6000), 10); // inside the hole, alone
        let st = s.fetch(&me()).unwrap();
        assert_eq!(st.failed_ranges, 1);
        assert_eq!(st.failed_bytes, 4096);
        assert_eq!(s.missing(), &[(h.addr(4096), h.addr(8192))]);
        assert_eq!(s.get(h.addr(3000), 1096).unwrap()[0], expected(3000));
        assert!(s.get(h.addr(4000), 200).is_none());
        assert!(s.get(h.addr(6000), 10).is_none());
        let got = s.get(h.addr(8192), 300).unwrap();
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &v)| v == expected(8192 + i)));
        assert_eq!(s.read_u8(h.addr(10009)), Some(expected(10009)));

        // The hole as the first byte of the request, then readable ranges
        // queued in the same batch.
        let mut s = MemorySnapshot::new();
        s.request(h.addr(5000), 10);
        s.request(h.addr(9000), 10);
        s.request(h.addr(0), 10);
        let st = s.fetch(&me()).unwrap();
        assert_eq!(st.failed_ranges, 1);
        assert_eq!(st.syscalls, 2);
        assert_eq!(s.read_u8(h.addr(0)), Some(expected(0)));
        assert_eq!(s.read_u8(h.addr(9009)), Some(expected(9009)));
        assert_eq!(s.read_u8(h.addr(5000)), None);
    }

    #[test]
    fn snapshot_limits() {
        let mut s = MemorySnapshot::with_limit(1000);
        assert!(!s.request(0x1000, MAX_RANGE + 1));
        assert!(!s.request(u64::MAX - 10, 100));
        assert!(s.request(0x1000, 600));
        assert!(!s.request(0x2000, 600));
        assert!(s.request(0x3000, 400));
        let st = s.fetch(&me()).unwrap();
        assert_eq!(st.rejected, 3);
        assert_eq!(st.requests, 2);
    }

    #[test]
    fn snapshot_errors_for_gone_process() {
        let mut s = MemorySnapshot::new();
        s.request(0x1000, 8);
        // PID 0x3ffffff is above any pid_max.
        let err = s.fetch(&ProcessMemory::new(0x3fff_ffff)).unwrap_err();
        assert!(matches!(err, Error::ProcessExited { .. }), "{err:?}");
    }

    #[test]
    fn snapshot_many_small_ranges() {
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 239) as u8).collect();
        let b = data.as_ptr() as u64;
        let mut s = MemorySnapshot::new();
        s.set_merge_gap(0);
        // 20k ranges of 96 bytes every 200 bytes, queued out of order.
        for i in (0..20_000u64).rev() {
            assert!(s.request(b + i * 200, 96));
        }
        let st = s.fetch(&me()).unwrap();
        assert_eq!(st.ranges, 20_000);
        assert_eq!(st.syscalls, 20);
        assert_eq!(st.bytes, 20_000 * 96);
        for i in (0..20_000usize).step_by(997) {
            assert_eq!(
                s.get(b + i as u64 * 200, 96).unwrap(),
                &data[i * 200..i * 200 + 96]
            );
        }
        s.clear();
        assert!(s.get(b, 1).is_none());
    }
}
