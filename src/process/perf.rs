//! Sampling the threads of a running process without stopping them, with
//! Linux perf events (`gospy record --nonblocking`).
//!
//! [`PerfSampler::open`] opens one software `task-clock` event per thread of
//! the target. Every `period_ns` of a thread's CPU time the kernel interrupts
//! it and, if it was running user code, writes a sample into a ring buffer
//! that gospy maps: the thread id, a timestamp, the user call chain the
//! kernel found by following frame pointers (Go code keeps them), the
//! registers IP, SP and BP and a copy of the top of the user stack. Nothing
//! in the target is stopped.
//! This is an on-CPU profile: a thread that is blocked, or busy in the kernel
//! (a system call), is not sampled.
//!
//! Events do not follow threads created after they were opened: the kernel's
//! `inherit` flag would, but it refuses to map the ring buffer of an
//! inherited per-thread event that is not bound to one CPU, which would
//! multiply the events by the number of CPUs. So [`PerfSampler::refresh_threads`]
//! rescans `/proc/PID/task` instead; call it periodically.
//!
//! Typical use:
//! ```no_run
//! # fn f() -> gospy::Result<()> {
//! use gospy::process::perf::PerfSampler;
//! use std::time::Duration;
//! let mut sampler = PerfSampler::open(1234, 10_000_000, 8192)?; // 100 Hz, 8 KiB of stack
//! let mut samples = Vec::new();
//! loop {
//!     sampler.wait(Duration::from_millis(100));
//!     sampler.read_samples(&mut samples);
//!     sampler.refresh_threads()?;
//!     // ... unwind `samples` ...
//! #   break;
//! }
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{list_tasks, proc_error, Process};
use crate::error::{Error, Result};

// The kernel ABI, from include/uapi/linux/perf_event.h (and
// arch/x86/include/uapi/asm/perf_regs.h for the register numbers).

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;

const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_SAMPLE_CALLCHAIN: u64 = 1 << 5;
const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
const PERF_SAMPLE_STACK_USER: u64 = 1 << 13;

// Bits of the bit-field word of `perf_event_attr` that follows `read_format`.
const ATTR_DISABLED: u64 = 1 << 0;
/// `wakeup_events` is `wakeup_watermark`: wake after that many bytes.
const ATTR_WATERMARK: u64 = 1 << 14;
const ATTR_EXCLUDE_KERNEL: u64 = 1 << 5;
const ATTR_EXCLUDE_HV: u64 = 1 << 6;
const ATTR_USE_CLOCKID: u64 = 1 << 25;
const ATTR_EXCLUDE_CALLCHAIN_KERNEL: u64 = 1 << 21;
/// Call chain entries at or above this are context markers
/// (`PERF_CONTEXT_USER` and the like), not addresses.
const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;

// x86 `enum perf_event_x86_regs`. Sampled registers are written in
// ascending order of these numbers: BX, BP, SP, IP, R12, R13, R14, R15 (the
// callee-saved registers, which unwinding C code with CFI may need).
const PERF_REG_X86_BX: u32 = 1;
const PERF_REG_X86_BP: u32 = 6;
const PERF_REG_X86_SP: u32 = 7;
const PERF_REG_X86_IP: u32 = 8;
const PERF_REG_X86_R12: u32 = 20;
const PERF_REG_X86_R13: u32 = 21;
const PERF_REG_X86_R14: u32 = 22;
const PERF_REG_X86_R15: u32 = 23;
/// `abi` of a sample taken without user registers (e.g. in a kernel thread).
const PERF_SAMPLE_REGS_ABI_NONE: u64 = 0;

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;

// Byte offsets of fields of `struct perf_event_mmap_page`, the first page of
// the mapping.
const MMAP_DATA_HEAD: usize = 1024;
const MMAP_DATA_TAIL: usize = 1032;
const MMAP_DATA_OFFSET: usize = 1040;
const MMAP_DATA_SIZE: usize = 1048;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (Linux 4.1, which
/// `use_clockid` needs anyway). The kernel accepts any size it knows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(dead_code)] // Read by the kernel, never by gospy.
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}

const PERF_ATTR_SIZE_VER5: usize = 112;
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER5);

/// Largest stack copy per sample: the kernel wants a multiple of 8 below
/// 65535 (a record's size is a `u16`; the kernel shrinks the copy further so
/// that the whole record fits).
pub const MAX_STACK_BYTES: u32 = 65528;

/// Data pages of each thread's ring buffer, at least (a power of two, as the
/// kernel requires). Each thread costs its ring plus one metadata page of
/// locked kernel memory: with 4 KiB stack copies 68 KiB at 100 Hz and 260
/// KiB at 1000 Hz (see [`data_pages`]).
const MIN_DATA_PAGES: usize = 8;

/// The ring grows beyond [`MIN_DATA_PAGES`] so that it holds at least this
/// many samples: with large stack copies a sample might otherwise not fit
/// at all, and would always be lost.
const MIN_SAMPLES_PER_RING: usize = 8;
/// Data pages of a ring, at most, unless [`MIN_SAMPLES_PER_RING`] needs
/// more: caps the memory locked per thread (256 KiB with 4 KiB pages).
const MAX_DATA_PAGES: usize = 64;
/// Rings are sized, within those bounds, to hold this long of a fully
/// busy thread's samples.
const RING_SPAN: Duration = Duration::from_millis(100);
/// Bounds of [`PerfSampler::drain_interval`].
const MIN_DRAIN_INTERVAL: Duration = Duration::from_millis(10);
const MAX_DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Entries of a sample's call chain, at most: the kernel's default
/// (`kernel.perf_event_max_stack`), and a user marker.
const MAX_CALLCHAIN: usize = 128;

/// Size of a sample record without the stack copy: header, pid and tid,
/// time, call chain, regs abi, eight registers, stack size, dyn_size.
const SAMPLE_FIXED_BYTES: usize = 8 + 8 + 8 + 8 + 8 * MAX_CALLCHAIN + 8 + 8 * 8 + 8 + 8;

/// One sample of one thread, taken while it ran user code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfSample {
    /// Thread id.
    pub tid: u32,
    /// `CLOCK_MONOTONIC` time of the sample, in nanoseconds.
    pub time_ns: u64,
    /// Instruction pointer (rip).
    pub ip: u64,
    /// Stack pointer (rsp).
    pub sp: u64,
    /// Frame pointer (rbp).
    pub bp: u64,
    /// r14, which holds the current `g` in Go code of Go 1.17+
    /// (ABIInternal): which goroutine ran, at the instant of the sample.
    pub r14: u64,
    /// The other callee-saved registers: rbx, r12, r13, r15.
    pub rbx: u64,
    pub r12: u64,
    pub r13: u64,
    pub r15: u64,
    /// Copy of the user stack from `sp` upwards. At most the requested
    /// size; shorter when the stack mapping ends sooner.
    pub stack: Vec<u8>,
    /// The user call chain at the sample: `ip`, then the return address of
    /// each frame found by following saved frame pointers from `bp`. Exact
    /// through Go frames (Go keeps frame pointers on amd64), except that a
    /// function sampled before it saved its frame pointer (prologue,
    /// frameless leaf) hides its caller; ends where the chain breaks (C
    /// code without frame pointers) or at the kernel's depth cap.
    pub callchain: Vec<u64>,
}

impl PerfSample {
    /// The sampled registers as a stopped thread's (those not sampled are
    /// 0): what a native unwinder starts from.
    pub fn registers(&self) -> super::ptrace::Registers {
        super::ptrace::Registers {
            rip: self.ip,
            rsp: self.sp,
            rbp: self.bp,
            rbx: self.rbx,
            r12: self.r12,
            r13: self.r13,
            r14: self.r14,
            r15: self.r15,
            ..Default::default()
        }
    }
}

/// Perf events sampling every thread of one process, each with its ring
/// buffer. Closes the events and unmaps the buffers when dropped.
#[derive(Debug)]
pub struct PerfSampler {
    pid: i32,
    /// Template for the events of threads found later.
    attr: PerfEventAttr,
    data_pages: usize,
    threads: Vec<ThreadEvent>,
    lost: u64,
    /// Reused copy of the record being parsed (at most 64 KiB: a record's
    /// size is a `u16`).
    scratch: Vec<u8>,
}

/// The event of one thread.
#[derive(Debug)]
struct ThreadEvent {
    tid: i32,
    // Declared before `fd` so that it is unmapped before the event closes.
    ring: Ring,
    fd: OwnedFd,
    /// The kernel reported the thread gone (POLLHUP): never poll it again.
    exited: Cell<bool>,
}

impl PerfSampler {
    /// Opens one event per thread of `pid` (every entry of
    /// `/proc/PID/task`), sampling each thread every `period_ns` of its own
    /// CPU time, with `stack_bytes` of user stack per sample (rounded up to
    /// a multiple of 8, at most [`MAX_STACK_BYTES`]).
    ///
    /// Fails with an explanation when perf events are not permitted
    /// (`perf_event_paranoid`, capabilities, a container's seccomp profile)
    /// or not available in this kernel. Threads that exit meanwhile are
    /// skipped.
    pub fn open(pid: i32, period_ns: u64, stack_bytes: u32) -> Result<PerfSampler> {
        if period_ns == 0 {
            return Err(Error::Other(
                "the perf sampling period must be at least 1 ns".into(),
            ));
        }
        // Same checks and messages as every other way of reading a process:
        // exists, is not a zombie, is a process rather than a thread.
        Process::open(pid)?;
        let stack_bytes = round_stack_bytes(stack_bytes);
        let page = page_size();
        let data_pages = data_pages(stack_bytes, page, period_ns);
        let mut attr = sampling_attr(period_ns, stack_bytes, data_pages * page / 2);
        if !may_open(&attr, pid) {
            // perf_event_paranoid 2 without CAP_PERFMON: user time only.
            attr.flags |= ATTR_EXCLUDE_KERNEL;
        }
        let mut sampler = PerfSampler {
            pid,
            attr,
            data_pages,
            threads: Vec::new(),
            lost: 0,
            scratch: Vec::new(),
        };
        sampler.refresh_threads()?;
        if sampler.threads.is_empty() {
            // Every thread exited between listing and opening.
            return Err(Error::ProcessExited { pid });
        }
        Ok(sampler)
    }

    /// Opens events for threads that appeared since the last call and drops
    /// the events of threads that exited, once their last samples were read
    /// by [`read_samples`](Self::read_samples). Call it periodically.
    ///
    /// Fails with [`Error::ProcessExited`] when the process is gone; the
    /// samples already collected can still be read.
    pub fn refresh_threads(&mut self) -> Result<()> {
        let tids = list_tasks(self.pid)
            .map_err(|e| proc_error(self.pid, e, "list the threads of", "task"))?;
        // A thread id can be reused by a new thread once the old one is gone:
        // only an event that did not hang up stands for the listed thread.
        self.threads.retain(|t| {
            let live = tids.binary_search(&t.tid).is_ok() && !t.hung_up();
            live || t.ring.has_data()
        });
        for tid in tids {
            if self.threads.iter().any(|t| t.tid == tid && !t.hung_up()) {
                continue;
            }
            let fallback = data_pages(self.attr.sample_stack_user, page_size(), u64::MAX);
            let opened = open_thread(&self.attr, self.pid, tid, self.data_pages, fallback)?;
            if let Some(event) = opened {
                self.threads.push(event);
            }
        }
        Ok(())
    }

    /// Appends the samples waiting in every ring buffer to `out`, and frees
    /// their space for the kernel. Samples the kernel could not write because
    /// a buffer was full are counted in [`lost`](Self::lost).
    pub fn read_samples(&mut self, out: &mut Vec<PerfSample>) {
        for t in &self.threads {
            // Acquire: the records before `head` are completely written.
            let head = t.ring.head().load(Ordering::Acquire);
            let tail = t.ring.tail().load(Ordering::Relaxed);
            drain(
                &t.ring.data,
                tail,
                head,
                &mut self.scratch,
                out,
                &mut self.lost,
            );
            // Release: our reads of the records are done before the kernel
            // may overwrite them.
            t.ring.tail().store(head, Ordering::Release);
        }
    }

    /// Blocks for `timeout`, or less if the kernel wakes it: half a ring
    /// was written, a thread exited, a signal arrived. Rings may hold
    /// samples when it returns either way: the caller drains them on its
    /// schedule, at least every [`drain_interval`](Self::drain_interval).
    pub fn wait(&self, timeout: Duration) {
        let polled: Vec<&ThreadEvent> = self.threads.iter().filter(|t| !t.exited.get()).collect();
        let mut fds: Vec<libc::pollfd> = polled
            .iter()
            .map(|t| libc::pollfd {
                fd: t.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds. With no fds
        // poll just sleeps, which is what waiting on no thread means.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n > 0 {
            for (t, p) in polled.iter().zip(&fds) {
                if p.revents & libc::POLLHUP != 0 {
                    t.exited.set(true);
                }
            }
        }
    }

    /// Whether time in the kernel (system calls, page faults) is sampled
    /// too, as the runtime's own profiler counts it; false when only user
    /// time may be sampled (`perf_event_paranoid` 2 without CAP_PERFMON).
    pub fn counts_kernel_time(&self) -> bool {
        self.attr.flags & ATTR_EXCLUDE_KERNEL == 0
    }

    /// Samples the kernel dropped because a ring buffer was full, since open.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// How often to drain the rings ([`read_samples`](Self::read_samples)):
    /// the time a fully busy thread takes to fill half its ring, within
    /// 10..100 ms. The kernel wakes a [`wait`](Self::wait)er only each time
    /// half a ring has been written: wakeups cost the sampled thread an
    /// interrupt of its own, and gospy waking often costs a 2-core machine
    /// more (at 1000 Hz, a wakeup every 4 samples and a drain every 10 ms
    /// were most of the target's slowdown).
    pub fn drain_interval(&self) -> Duration {
        let capacity = self.data_pages * page_size() / record_bytes(self.attr.sample_stack_user);
        Duration::from_nanos(self.attr.sample_period.saturating_mul(capacity as u64 / 2))
            .clamp(MIN_DRAIN_INTERVAL, MAX_DRAIN_INTERVAL)
    }

    /// Number of threads with an open event (including exited threads whose
    /// last samples were not read yet).
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }
}

/// `stack_bytes` as the kernel accepts it: a multiple of 8, at most
/// [`MAX_STACK_BYTES`].
fn round_stack_bytes(stack_bytes: u32) -> u32 {
    stack_bytes.min(MAX_STACK_BYTES).next_multiple_of(8)
}

/// Bytes of one sample record with `stack_bytes` of stack.
fn record_bytes(stack_bytes: u32) -> usize {
    // The kernel shrinks the stack copy so that a record fits in a u16.
    (SAMPLE_FIXED_BYTES + stack_bytes as usize).min(u16::MAX as usize)
}

/// Data pages of one ring buffer (a power of two) when its thread is
/// sampled every `period_ns` of CPU time: [`RING_SPAN`] of samples, within
/// [`MIN_DATA_PAGES`]..[`MAX_DATA_PAGES`], and at least
/// [`MIN_SAMPLES_PER_RING`] samples.
fn data_pages(stack_bytes: u32, page_size: usize, period_ns: u64) -> usize {
    let record = record_bytes(stack_bytes);
    let pages_for = |samples: usize| (samples * record).div_ceil(page_size).next_power_of_two();
    let span = (RING_SPAN.as_nanos() as u64 / period_ns.max(1)).min(1 << 20) as usize;
    pages_for(span)
        .clamp(MIN_DATA_PAGES, MAX_DATA_PAGES)
        .max(pages_for(MIN_SAMPLES_PER_RING))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

fn sampling_attr(period_ns: u64, stack_bytes: u32, wakeup_bytes: usize) -> PerfEventAttr {
    PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: PERF_ATTR_SIZE_VER5 as u32,
        // Counts the thread's own CPU time in ns, so the period is in ns.
        config: PERF_COUNT_SW_TASK_CLOCK,
        sample_period: period_ns,
        sample_type: PERF_SAMPLE_TID
            | PERF_SAMPLE_TIME
            | PERF_SAMPLE_CALLCHAIN
            | PERF_SAMPLE_REGS_USER
            | PERF_SAMPLE_STACK_USER,
        // Disabled until the ring buffer is mapped. Time in the kernel is
        // sampled too (a sample there carries the user registers and stack
        // of its system call): the runtime's profiler counts it, and so must
        // we; `open` excludes it where that is not permitted. CLOCK_MONOTONIC
        // timestamps compare with the rest of gospy's clocks.
        // Only the user part of the call chain.
        flags: ATTR_DISABLED
            | ATTR_EXCLUDE_HV
            | ATTR_USE_CLOCKID
            | ATTR_WATERMARK
            | ATTR_EXCLUDE_CALLCHAIN_KERNEL,
        // The kernel caps it at the ring's size (a smaller fallback ring).
        wakeup_events: u32::try_from(wakeup_bytes).unwrap_or(u32::MAX),
        sample_regs_user: (1 << PERF_REG_X86_BX)
            | (1 << PERF_REG_X86_BP)
            | (1 << PERF_REG_X86_SP)
            | (1 << PERF_REG_X86_IP)
            | (1 << PERF_REG_X86_R12)
            | (1 << PERF_REG_X86_R13)
            | (1 << PERF_REG_X86_R14)
            | (1 << PERF_REG_X86_R15),
        sample_stack_user: stack_bytes,
        clockid: libc::CLOCK_MONOTONIC,
        ..PerfEventAttr::default()
    }
}

/// Whether an event like `attr` may be opened on thread `tid` (a probe,
/// closed at once): false only when it is refused for lack of permission.
fn may_open(attr: &PerfEventAttr, tid: i32) -> bool {
    match perf_event_open(attr, tid) {
        Ok(_) => true,
        Err(e) => !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
    }
}

/// `perf_event_open(attr, tid, cpu -1 (any), no group, CLOEXEC)`.
fn perf_event_open(attr: &PerfEventAttr, tid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid perf_event_attr whose `size` is its own;
    // cpu -1 (any), no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            tid,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Opens, maps and enables the event of thread `tid`; None if the thread
/// exited meanwhile. A ring of `data_pages` that exceeds what may be locked
/// is mapped with `fallback_pages` instead (samples may then be lost at high
/// rates, and are counted).
fn open_thread(
    attr: &PerfEventAttr,
    pid: i32,
    tid: i32,
    data_pages: usize,
    fallback_pages: usize,
) -> Result<Option<ThreadEvent>> {
    let fd = match perf_event_open(attr, tid) {
        Ok(fd) => fd,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(err) => return Err(open_error(pid, tid, err)),
    };
    let ring = match Ring::map(&fd, data_pages) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && fallback_pages < data_pages => {
            Ring::map(&fd, fallback_pages)
        }
        mapped => mapped,
    }
    .map_err(|e| mmap_error(pid, data_pages.min(fallback_pages), e))?;
    // SAFETY: plain ioctl on our perf fd.
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("enabling the perf event of thread {tid} of process {pid}"),
            err,
        ));
    }
    Ok(Some(ThreadEvent {
        tid,
        ring,
        fd,
        exited: Cell::new(false),
    }))
}

impl ThreadEvent {
    /// True once the thread exited: the kernel then reports POLLHUP.
    fn hung_up(&self) -> bool {
        if !self.exited.get() {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: 0,
                revents: 0,
            };
            // SAFETY: one valid pollfd; timeout 0 never blocks.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            self.exited.set(n > 0 && p.revents & libc::POLLHUP != 0);
        }
        self.exited.get()
    }
}

fn open_error(pid: i32, tid: i32, err: std::io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => Error::Other(permission_message(pid)),
        Some(libc::ENOENT | libc::ENODEV | libc::ENOSYS | libc::EOPNOTSUPP) => {
            Error::Other(format!(
                "perf events are not available in this kernel or VM (perf_event_open: {err}); \
                 sample process {pid} with ptrace instead (without --nonblocking)"
            ))
        }
        Some(libc::EMFILE | libc::ENFILE) => Error::Other(format!(
            "out of file descriptors opening a perf event for thread {tid} of process {pid} \
             ({err}): gospy needs one per thread of the target; raise the limit (ulimit -n)"
        )),
        _ => Error::io(
            format!("perf_event_open for thread {tid} of process {pid}"),
            err,
        ),
    }
}

fn permission_message(pid: i32) -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let setting = match paranoid {
        Some(v) if v > 2 => format!(
            "/proc/sys/kernel/perf_event_paranoid is {v}, which forbids perf events to users \
             without CAP_PERFMON (sudo sysctl kernel.perf_event_paranoid=2 allows profiling \
             your own processes)"
        ),
        Some(v) => format!("/proc/sys/kernel/perf_event_paranoid is {v}"),
        None => "/proc/sys/kernel/perf_event_paranoid is unreadable".to_string(),
    };
    format!(
        "permission denied to open perf events on process {pid} (needed to sample it without \
         stopping it): {setting}. Run gospy as root, or give it CAP_PERFMON (CAP_SYS_ADMIN \
         before Linux 5.8), plus CAP_SYS_PTRACE for another user's process \
         (setcap cap_perfmon,cap_sys_ptrace+ep $(which gospy)). In a container, the default \
         seccomp profile also blocks perf_event_open: start it with --cap-add PERFMON \
         (docker/podman; --cap-add SYS_ADMIN on older engines) or --privileged"
    )
}

fn mmap_error(pid: i32, data_pages: usize, err: std::io::Error) -> Error {
    if err.raw_os_error() == Some(libc::EPERM) {
        let limit = std::fs::read_to_string("/proc/sys/kernel/perf_event_mlock_kb")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let per_thread = (data_pages + 1) * page_size() / 1024;
        return Error::Other(format!(
            "cannot map the perf ring buffers of process {pid}: they exceed the memory an \
             unprivileged user may lock ({per_thread} KiB per thread; \
             /proc/sys/kernel/perf_event_mlock_kb is {limit} KiB, plus `ulimit -l`). Run gospy \
             as root (or with CAP_IPC_LOCK), raise kernel.perf_event_mlock_kb, or copy fewer \
             stack bytes per sample"
        ));
    }
    Error::io(format!("mapping a perf ring buffer of process {pid}"), err)
}

/// The shared mapping of one event: a metadata page, then the data pages
/// the kernel writes records into.
#[derive(Debug)]
struct Ring {
    base: *mut libc::c_void,
    len: usize,
    data: RingData,
}

// SAFETY: the mapping belongs to this Ring alone (no aliasing copies), and
// the kernel side synchronises through data_head/data_tail, whatever thread
// reads it.
unsafe impl Send for Ring {}

impl Ring {
    fn map(fd: &OwnedFd, data_pages: usize) -> std::io::Result<Ring> {
        let page = page_size();
        let len = (1 + data_pages) * page;
        // SAFETY: a new shared mapping of the perf fd; writable so that the
        // kernel honours data_tail and never overwrites unread records.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both fields are in the metadata page, which is mapped.
        let (offset, size) = unsafe {
            let b = base.cast::<u8>();
            (
                std::ptr::read_volatile(b.add(MMAP_DATA_OFFSET).cast::<u64>()),
                std::ptr::read_volatile(b.add(MMAP_DATA_SIZE).cast::<u64>()),
            )
        };
        // Kernels before 4.1 leave these 0; the layout is the same.
        let valid = offset >= page as u64
            && size.is_power_of_two()
            && offset
                .checked_add(size)
                .is_some_and(|end| end <= len as u64);
        let (offset, size) = if valid {
            (offset as usize, size as usize)
        } else {
            (page, data_pages * page)
        };
        Ok(Ring {
            base,
            len,
            // SAFETY: offset + size lies within the mapping (checked above).
            data: RingData {
                ptr: unsafe { base.cast::<u8>().add(offset) },
                size: size as u64,
            },
        })
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: data_head is an 8-byte aligned u64 in the mapped metadata
        // page, which lives as long as `self`; the kernel stores to it
        // atomically.
        unsafe {
            &*self
                .base
                .cast::<u8>()
                .add(MMAP_DATA_HEAD)
                .cast::<AtomicU64>()
        }
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: as for `head`; only gospy writes data_tail.
        unsafe {
            &*self
                .base
                .cast::<u8>()
                .add(MMAP_DATA_TAIL)
                .cast::<AtomicU64>()
        }
    }

    /// True when records wait to be read.
    fn has_data(&self) -> bool {
        self.head().load(Ordering::Relaxed) != self.tail().load(Ordering::Relaxed)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`; nothing
        // borrows it past `self`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The data area of a ring buffer: `size` bytes (a power of two) at `ptr`.
/// Positions (`data_head`, `data_tail`) only grow; a position's byte is at
/// `position % size`.
#[derive(Debug)]
struct RingData {
    ptr: *const u8,
    size: u64,
}

impl RingData {
    /// Copies `out.len()` (at most `size`) bytes from position `pos`, across
    /// the end of the area if needed.
    fn copy(&self, pos: u64, out: &mut [u8]) {
        let len = out.len().min(self.size as usize);
        let start = (pos % self.size) as usize;
        let first = len.min(self.size as usize - start);
        // SAFETY: both ranges are within the `size` bytes at `ptr`, and the
        // kernel does not write between data_tail and data_head.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.ptr, out.as_mut_ptr().add(first), len - first);
        }
    }
}

/// Parses the records between positions `tail` and `head`. Nothing in the
/// ring is trusted: a record size that does not fit makes it skip the rest
/// (the caller moves the tail to `head` anyway).
fn drain(
    ring: &RingData,
    tail: u64,
    head: u64,
    scratch: &mut Vec<u8>,
    out: &mut Vec<PerfSample>,
    lost: &mut u64,
) {
    if head.wrapping_sub(tail) > ring.size {
        return;
    }
    let mut pos = tail;
    while pos != head {
        let avail = head.wrapping_sub(pos);
        let mut header = [0u8; 8];
        if avail < header.len() as u64 {
            return;
        }
        ring.copy(pos, &mut header);
        let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
        let size = u16::from_ne_bytes([header[6], header[7]]) as u64;
        if size < header.len() as u64 || size > avail {
            return;
        }
        scratch.resize(size as usize, 0);
        ring.copy(pos, scratch);
        match kind {
            PERF_RECORD_SAMPLE => out.extend(parse_sample(scratch)),
            PERF_RECORD_LOST => *lost += parse_lost(scratch).unwrap_or(0),
            _ => {}
        }
        pos = pos.wrapping_add(size);
    }
}

/// A `PERF_RECORD_SAMPLE` for our sample_type: header; u32 pid, tid; u64
/// time; u64 nr, nr u64 call chain entries; u64 abi, then BX, BP, SP, IP,
/// R12, R13, R14, R15 unless abi is NONE; u64 size, size bytes of stack,
/// then u64 dyn_size (bytes actually copied) unless size is 0.
/// None for a malformed record or one without user registers.
fn parse_sample(record: &[u8]) -> Option<PerfSample> {
    let mut r = Reader(record.get(8..)?);
    let _pid = r.u32()?;
    let tid = r.u32()?;
    let time_ns = r.u64()?;
    let chain_len = r.u64()?;
    let chain = r.bytes(chain_len.checked_mul(8)?)?;
    let callchain = chain
        .chunks_exact(8)
        .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
        .filter(|&a| a < PERF_CONTEXT_MAX)
        .take(MAX_CALLCHAIN)
        .collect();
    if r.u64()? == PERF_SAMPLE_REGS_ABI_NONE {
        return None;
    }
    let rbx = r.u64()?;
    let bp = r.u64()?;
    let sp = r.u64()?;
    let ip = r.u64()?;
    let r12 = r.u64()?;
    let r13 = r.u64()?;
    let r14 = r.u64()?;
    let r15 = r.u64()?;
    let size = r.u64()?;
    let data = r.bytes(size)?;
    let copied = if size == 0 { 0 } else { r.u64()? };
    let stack = data[..copied.min(size) as usize].to_vec();
    Some(PerfSample {
        tid,
        time_ns,
        ip,
        sp,
        bp,
        r14,
        rbx,
        r12,
        r13,
        r15,
        stack,
        callchain,
    })
}

/// A `PERF_RECORD_LOST`: header; u64 id; u64 number of lost records.
fn parse_lost(record: &[u8]) -> Option<u64> {
    let mut r = Reader(record.get(8..)?);
    let _id = r.u64()?;
    r.u64()
}

/// Reads native-endian fields off the front of a record, None past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.0.len())?;
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_record(tid: u32, ip: u64, stack: &[u8], dyn_size: u64) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(7u32.to_ne_bytes()); // pid
        body.extend(tid.to_ne_bytes());
        body.extend(1000u64.to_ne_bytes()); // time
        body.extend(3u64.to_ne_bytes()); // call chain: user marker, ip, a return
        body.extend((-512i64 as u64).to_ne_bytes());
        body.extend(ip.to_ne_bytes());
        body.extend(0x40_2000u64.to_ne_bytes());
        body.extend(2u64.to_ne_bytes()); // abi 64
        body.extend(0xb8u64.to_ne_bytes()); // bx
        body.extend(0xb0u64.to_ne_bytes()); // bp
        body.extend(0x5000u64.to_ne_bytes()); // sp
        body.extend(ip.to_ne_bytes());
        body.extend(0x12u64.to_ne_bytes()); // r12
        body.extend(0x13u64.to_ne_bytes()); // r13
        body.extend(0xc000u64.to_ne_bytes()); // r14
        body.extend(0x15u64.to_ne_bytes()); // r15
        body.extend((stack.len() as u64).to_ne_bytes());
        body.extend(stack);
        if !stack.is_empty() {
            body.extend(dyn_size.to_ne_bytes());
        }
        record(PERF_RECORD_SAMPLE, &body)
    }

    fn record(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(kind.to_ne_bytes());
        r.extend(0u16.to_ne_bytes()); // misc
        r.extend(((8 + body.len()) as u16).to_ne_bytes());
        r.extend(body);
        r
    }

    fn lost_record(n: u64) -> Vec<u8> {
        let mut body = 42u64.to_ne_bytes().to_vec(); // id
        body.extend(n.to_ne_bytes());
        record(PERF_RECORD_LOST, &body)
    }

    /// Writes `records` into a ring of `size` bytes from position `start`
    /// and drains it.
    fn run(size: usize, start: u64, records: &[Vec<u8>]) -> (Vec<PerfSample>, u64) {
        let mut area = vec![0u8; size];
        let mut pos = start;
        for b in records.iter().flatten() {
            area[(pos % size as u64) as usize] = *b;
            pos += 1;
        }
        let ring = RingData {
            ptr: area.as_ptr(),
            size: size as u64,
        };
        let (mut out, mut lost) = (Vec::new(), 0);
        drain(&ring, start, pos, &mut Vec::new(), &mut out, &mut lost);
        (out, lost)
    }

    #[test]
    fn parses_samples_and_lost_records_across_the_wrap() {
        let stack: Vec<u8> = (0..64).collect();
        let records = [
            sample_record(11, 0x401000, &stack, 40),
            lost_record(5),
            record(14, &[0; 16]), // PERF_RECORD_THROTTLE: ignored
            sample_record(12, 0x402000, &[], 0),
        ];
        let total: usize = records.iter().map(Vec::len).sum();
        // Start the ring so that the first record straddles its end.
        let (out, lost) = run(512, 512 - 40, &records);
        assert!(total <= 512);
        assert_eq!(lost, 5);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].tid, 11);
        assert_eq!(
            (out[0].ip, out[0].sp, out[0].bp, out[0].r14),
            (0x401000, 0x5000, 0xb0, 0xc000)
        );
        let regs = out[0].registers();
        assert_eq!(
            (regs.rbx, regs.r12, regs.r13, regs.r14, regs.r15, regs.rip),
            (0xb8, 0x12, 0x13, 0xc000, 0x15, 0x401000)
        );
        assert_eq!(out[0].stack, &stack[..40]);
        assert_eq!(out[0].callchain, [0x401000, 0x40_2000], "markers dropped");
        assert_eq!(out[0].time_ns, 1000);
        assert_eq!(out[1].tid, 12);
        assert!(out[1].stack.is_empty());
    }

    #[test]
    fn corrupt_sizes_never_read_outside_the_records() {
        let good = sample_record(1, 1, &[9; 16], 16);
        // Record size larger than the data: skipped, nothing after it parsed.
        let mut too_big = good.clone();
        too_big[6..8].copy_from_slice(&400u16.to_ne_bytes());
        let (out, _) = run(512, 0, &[too_big, good.clone()]);
        assert!(out.is_empty());
        // Size below a header: would loop forever if accepted.
        let mut tiny = good.clone();
        tiny[6..8].copy_from_slice(&4u16.to_ne_bytes());
        assert!(run(512, 0, &[tiny]).0.is_empty());
        // A stack size field beyond the record, and a huge dyn_size.
        let mut bad_stack = good.clone();
        let at = 8 + 8 + 8 + 8 + 32 + 64;
        bad_stack[at..at + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
        let mut big_dyn = good.clone();
        let end = big_dyn.len();
        big_dyn[end - 8..].copy_from_slice(&u64::MAX.to_ne_bytes());
        let (out, _) = run(512, 0, &[bad_stack, big_dyn, good.clone()]);
        assert_eq!(
            out.len(),
            2,
            "the malformed sample is skipped, not the next ones"
        );
        assert_eq!(out[0].stack, [9; 16], "dyn_size is capped by size");
        // A head further than the ring size from the tail: nothing read.
        let area = [0u8; 64];
        let ring = RingData {
            ptr: area.as_ptr(),
            size: 64,
        };
        let (mut out, mut lost) = (Vec::new(), 0);
        drain(&ring, 0, 1 << 40, &mut Vec::new(), &mut out, &mut lost);
        assert!(out.is_empty());
        // Truncated records.
        for len in 0..good.len() {
            assert!(parse_sample(&good[..len]).is_none());
        }
    }

    #[test]
    fn sample_without_user_registers_is_dropped() {
        let mut body = Vec::new();
        body.extend([0u8; 16]); // pid, tid, time
        body.extend(0u64.to_ne_bytes()); // empty call chain
        body.extend(PERF_SAMPLE_REGS_ABI_NONE.to_ne_bytes());
        body.extend(0u64.to_ne_bytes()); // stack size 0
        assert!(parse_sample(&record(PERF_RECORD_SAMPLE, &body)).is_none());
    }

    #[test]
    fn stack_size_and_ring_size() {
        assert_eq!(round_stack_bytes(0), 0);
        assert_eq!(round_stack_bytes(1), 8);
        assert_eq!(round_stack_bytes(4096), 4096);
        assert_eq!(round_stack_bytes(4097), 4104);
        assert_eq!(round_stack_bytes(u32::MAX), MAX_STACK_BYTES);
        const HZ_1: u64 = 1_000_000_000;
        // 100 ms of samples at 1 Hz is none: the minimum.
        assert_eq!(data_pages(1024, 4096, HZ_1), MIN_DATA_PAGES);
        // Larger samples need more than the minimum, in a power of two.
        assert_eq!(data_pages(8000, 4096, HZ_1), 32);
        assert_eq!(data_pages(16384, 4096, HZ_1), 64);
        // At least 8 samples, even beyond the usual maximum.
        assert_eq!(data_pages(MAX_STACK_BYTES, 4096, HZ_1), 128);
        assert!(128 * 4096 >= MIN_SAMPLES_PER_RING * u16::MAX as usize);
        // 100 ms of samples: 10 at 100 Hz, 100 (capped) at 1000 Hz.
        assert_eq!(data_pages(8000, 4096, HZ_1 / 100), 32);
        assert_eq!(data_pages(8000, 4096, HZ_1 / 1000), MAX_DATA_PAGES);
    }

    #[test]
    fn attr_matches_the_kernel_layout() {
        let a = sampling_attr(1_000_000, 4096, 1 << 16);
        let base = &a as *const PerfEventAttr as usize;
        // Offsets from linux/perf_event.h.
        assert_eq!(&a.sample_period as *const u64 as usize - base, 16);
        assert_eq!(&a.flags as *const u64 as usize - base, 40);
        assert_eq!(&a.wakeup_events as *const u32 as usize - base, 48);
        assert_eq!(&a.sample_regs_user as *const u64 as usize - base, 80);
        assert_eq!(&a.sample_stack_user as *const u32 as usize - base, 88);
        assert_eq!(&a.clockid as *const i32 as usize - base, 92);
        assert_eq!(a.sample_regs_user, 0xf0_01c2);
    }
}
