//! Pausing every thread of the target with ptrace, reading registers, and
//! letting it go again.
//!
//! [`pause`] attaches to every thread with `PTRACE_SEIZE` (which, unlike
//! `PTRACE_ATTACH`, sends no SIGSTOP), then `PTRACE_INTERRUPT`s them all, then
//! waits for all of them: attaching all first keeps the pause short. It
//! rescans `/proc/PID/task` until no new thread appears (once every known
//! thread is stopped, none can create another).
//!
//! A signal that arrives while a thread is being stopped shows up as a
//! signal-delivery-stop; it is remembered and re-injected by the detach,
//! otherwise it would be lost (SIGURG preemption, SIGPROF, SIGCHLD...).
//! A process that is stopped (state T) stays stopped after the detach.
//!
//! The kernel only accepts ptrace requests from the thread that attached, so
//! [`Pause`] is `!Send`: create, use and drop it on one thread. If gospy dies
//! (even by SIGKILL) the kernel detaches every tracee and the target runs on.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::{list_tasks, read_stat, thread_state};
use crate::error::{Error, Result};

/// How long [`pause`] waits for the threads to stop. A thread in
/// uninterruptible sleep (D state) only stops when it leaves it.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long [`Pause`] polls for threads to stop before it starts sleeping
/// between polls.
const SPIN_BEFORE_SLEEPING: Duration = Duration::from_micros(300);

/// Registers of a stopped thread (the kernel's `user_regs_struct`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registers {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    /// Holds the current g in Go code built with ABIInternal (1.17+) only.
    pub r14: u64,
    pub r15: u64,
    pub eflags: u64,
    /// The syscall number when stopped in a syscall, else `u64::MAX`
    /// (`-1`).
    pub orig_rax: u64,
    /// Thread pointer: Go's TLS g slot is at a small negative offset from it.
    pub fs_base: u64,
    pub gs_base: u64,
    pub cs: u64,
    pub ss: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl From<libc::user_regs_struct> for Registers {
    fn from(r: libc::user_regs_struct) -> Registers {
        Registers {
            rip: r.rip,
            rsp: r.rsp,
            rbp: r.rbp,
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            eflags: r.eflags,
            orig_rax: r.orig_rax,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            cs: r.cs,
            ss: r.ss,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }
}

impl StopKind {
    /// The signal to re-inject when letting a thread in this stop go: the
    /// one that was about to be delivered, if any.
    fn pending_signal(self) -> i32 {
        match self {
            StopKind::Signal(s) => s,
            _ => 0,
        }
    }
}

impl Registers {
    /// True when the thread stopped inside a system call (`orig_rax` holds
    /// its number); `rip` is then just after the `syscall` instruction.
    pub fn in_syscall(&self) -> bool {
        (self.orig_rax as i64) >= 0
    }
}

/// How a thread came to be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// By our `PTRACE_INTERRUPT`.
    Interrupt,
    /// The process is (or went) into a group-stop (SIGSTOP, SIGTSTP, ...);
    /// detaching leaves it stopped.
    GroupStop(i32),
    /// A signal was about to be delivered; it is re-injected on detach.
    Signal(i32),
    /// Did not stop before the timeout (e.g. uninterruptible sleep); no
    /// registers.
    NotStopped,
}

/// One thread of a paused process.
#[derive(Debug, Clone)]
pub struct StoppedThread {
    pub tid: i32,
    /// None if the thread did not stop or its registers could not be read.
    pub regs: Option<Registers>,
    pub stop: StopKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Seized and interrupted; no stop seen yet.
    Waiting,
    Stopped(StopKind),
    /// Waited for too long.
    TimedOut,
    /// Exited, or could not be attached after all.
    Gone,
}

#[derive(Debug)]
struct Tracee {
    tid: i32,
    state: State,
}

/// Exit statuses (`waitpid` form) that waiting on a traced thread consumed,
/// by thread id. When the thread was the main thread of a process we
/// started, this was the process's own exit status. Shared by all threads:
/// the sampler's thread reaps, the launcher's thread asks.
static REAPED_EXITS: std::sync::Mutex<Vec<(i32, libc::c_int)>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    /// Threads this OS thread attached to that had not stopped when their
    /// `Pause` ended, so could not be detached (a thread can only be
    /// detached in a ptrace-stop). They will stop (the interrupt is pending)
    /// and must then be detached, or they would stay stopped for as long as
    /// gospy runs. Retried on every pause and resume.
    static LEFTOVERS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// All threads of a process, stopped. Detaches (letting the process run)
/// on [`resume`](Pause::resume) or when dropped.
///
/// `!Send`: ptrace requests are only accepted from the thread that attached.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<gospy::process::Pause>();
/// ```
pub struct Pause {
    pid: i32,
    tracees: Vec<Tracee>,
    threads: Vec<StoppedThread>,
    started: Instant,
    stop_latency: Duration,
    done: bool,
    /// Held from the first interrupt until every thread is let go.
    boost: Option<RealtimeBoost>,
    _not_send: PhantomData<*const ()>,
}

/// Stops every thread of `pid` (see the module docs), waiting up to
/// [`DEFAULT_STOP_TIMEOUT`] for them.
pub fn pause(pid: i32) -> Result<Pause> {
    pause_with_timeout(pid, DEFAULT_STOP_TIMEOUT)
}

/// [`pause`] with another stop timeout. Threads that do not stop in time
/// are reported with [`StopKind::NotStopped`] and no registers.
pub fn pause_with_timeout(pid: i32, timeout: Duration) -> Result<Pause> {
    pause_impl(pid, timeout, None)
}

/// [`pause_with_timeout`] that calls `after_seize` once, after attaching to
/// the threads and before interrupting them: tests use it to make a signal
/// arrive in that window, which is otherwise a matter of luck.
#[doc(hidden)]
pub fn pause_with_hook(
    pid: i32,
    timeout: Duration,
    after_seize: &mut dyn FnMut(),
) -> Result<Pause> {
    pause_impl(pid, timeout, Some(after_seize))
}

/// Stops only the threads `tids` of `pid` (those that exist): for a sampler
/// that knows which threads run Go code and leaves the idle ones alone.
/// Threads created meanwhile are not stopped. No thread existing any more
/// is not an error (an empty pause), but the process being gone is.
pub fn pause_threads(pid: i32, tids: &[i32]) -> Result<Pause> {
    pause_selected(pid, DEFAULT_STOP_TIMEOUT, None, Some(tids))
}

fn pause_impl(pid: i32, timeout: Duration, hook: Option<&mut dyn FnMut()>) -> Result<Pause> {
    pause_selected(pid, timeout, hook, None)
}

/// Stops the threads `only` of `pid`, or all of them (rescanning for new
/// ones) when `None`.
fn pause_selected(
    pid: i32,
    timeout: Duration,
    hook: Option<&mut dyn FnMut()>,
    only: Option<&[i32]>,
) -> Result<Pause> {
    cleanup_leftovers();
    tighten_timer_slack();
    if pid <= 0 {
        return Err(Error::NoSuchProcess(pid));
    }
    // A sampler choosing threads checked the process before; its pauses
    // skip the /proc read to stay short.
    if only.is_none() {
        match read_stat(pid) {
            Ok(s) => super::check_not_zombie(pid, s.state)?,
            Err(_) => return Err(Error::NoSuchProcess(pid)),
        }
    }
    let mut p = Pause {
        pid,
        tracees: Vec::new(),
        threads: Vec::new(),
        started: Instant::now(),
        stop_latency: Duration::ZERO,
        done: false,
        boost: None,
        _not_send: PhantomData,
    };
    // From here on, any early return drops `p`, which detaches.
    p.stop_all(timeout, hook, only)?;
    // Once the target is stopped, nothing else on this machine should delay
    // gospy (it would delay the target too): run as a real-time thread until
    // it is let go, when allowed. Not before: threads being stopped need a
    // CPU to reach their stop, and a real-time poller would starve them.
    p.boost = Some(RealtimeBoost::new());
    p.read_registers();
    p.stop_latency = p.started.elapsed();
    Ok(p)
}

impl Pause {
    fn stop_all(
        &mut self,
        timeout: Duration,
        mut hook: Option<&mut dyn FnMut()>,
        only: Option<&[i32]>,
    ) -> Result<()> {
        let deadline = self.started + timeout;
        let mut fresh: Vec<usize> = Vec::new();
        let mut known: std::collections::HashSet<i32> = std::collections::HashSet::new();
        loop {
            let tids = match only {
                Some(only) => only
                    .iter()
                    .copied()
                    .filter(|&tid| is_thread_of(self.pid, tid))
                    .collect(),
                None => match list_tasks(self.pid) {
                    Ok(t) => t,
                    Err(_) => return Err(Error::ProcessExited { pid: self.pid }),
                },
            };
            fresh.clear();
            for tid in tids {
                if !known.insert(tid) {
                    continue;
                }
                let state = self.seize(tid)?;
                self.tracees.push(Tracee { tid, state });
                if state == State::Waiting {
                    fresh.push(self.tracees.len() - 1);
                }
            }
            if fresh.is_empty() {
                break;
            }
            if let Some(h) = hook.take() {
                h();
            }
            // Interrupt all the new ones, then wait for all of them.
            for &k in &fresh {
                let tid = self.tracees[k].tid;
                // SAFETY: plain ptrace request on a tracee.
                // ESRCH: it exited already; the wait below sees that.
                unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) };
            }
            self.wait_for_stops(deadline);
            if only.is_some() {
                break; // the chosen threads only, not new ones
            }
            if Instant::now() >= deadline {
                // Running threads (timed out) could keep cloning: stop
                // rescanning.
                break;
            }
        }
        let alive = self.tracees.iter().any(|t| !matches!(t.state, State::Gone));
        if !alive && only.is_none() {
            return Err(
                if std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
                    && read_stat(self.pid).is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
                {
                    Error::Other(format!(
                        "process {}: could not attach to any thread",
                        self.pid
                    ))
                } else {
                    Error::ProcessExited { pid: self.pid }
                },
            );
        }
        Ok(())
    }

    /// PTRACE_SEIZE one thread.
    fn seize(&self, tid: i32) -> Result<State> {
        seize(self.pid, tid)
    }
}

/// Whether `tid` is a live thread of process `pid` (a tid alone could be
/// another process's by now).
fn is_thread_of(pid: i32, tid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; tgkill only checks.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) == 0 }
}

/// PTRACE_SEIZE thread `tid` of `pid` (or adopt it if it is a leftover of
/// an earlier stop, still with an interrupt pending).
fn seize(pid: i32, tid: i32) -> Result<State> {
    // A thread left over from an earlier pause is still ours, with an
    // interrupt pending: just wait for it again.
    let adopted = LEFTOVERS.with(|l| {
        let mut l = l.borrow_mut();
        match l.iter().position(|&t| t == tid) {
            Some(i) => {
                l.swap_remove(i);
                true
            }
            None => false,
        }
    });
    if adopted {
        return Ok(State::Waiting);
    }
    // SAFETY: plain ptrace request.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) };
    if r == 0 {
        return Ok(State::Waiting);
    }
    match errno() {
        libc::ESRCH => Ok(State::Gone),
        libc::EPERM | libc::EACCES => {
            // An exiting thread (zombie) cannot be attached: skip it.
            match thread_state(pid, tid) {
                None | Some('Z') | Some('X') => return Ok(State::Gone),
                _ => {}
            }
            let status = format!("/proc/{}/task/{tid}/status", pid);
            if let Some(tracer) = other_tracer(&status) {
                return Err(traced_error(pid, tracer));
            }
            if let Some(tracer) = super::status_field_at(&status, "TracerPid:")
                .and_then(|s| s.parse::<i32>().ok())
                .filter(|&t| t != 0)
            {
                return Err(Error::Other(format!(
                    "process {} is already paused by this gospy (thread {tracer})",
                    pid
                )));
            }
            Err(Error::PermissionDenied {
                pid,
                operation: "attach to".into(),
            })
        }
        e => Err(Error::io(
            format!("PTRACE_SEIZE of thread {tid} of process {}", pid),
            std::io::Error::from_raw_os_error(e),
        )),
    }
}

impl Pause {
    /// Polls every waiting tracee until each has stopped or exited, or the
    /// deadline passes.
    fn wait_for_stops(&mut self, deadline: Instant) {
        // A running thread stops within microseconds of PTRACE_INTERRUPT,
        // but waking from even a 5 us sleep costs ~60 us in a VM: all of
        // it time the target stays stopped. So poll without sleeping at
        // first, then back off.
        let spin_until = Instant::now() + SPIN_BEFORE_SLEEPING;
        let mut backoff = Duration::from_micros(5);
        loop {
            let mut waiting = 0;
            let mut progress = false;
            for t in self.tracees.iter_mut() {
                if t.state != State::Waiting {
                    continue;
                }
                match wait_nohang(t.tid) {
                    WaitResult::Nothing => waiting += 1,
                    WaitResult::Stopped(kind) => {
                        t.state = State::Stopped(kind);
                        progress = true;
                    }
                    WaitResult::Gone => {
                        t.state = State::Gone;
                        progress = true;
                    }
                }
            }
            if waiting == 0 {
                return;
            }
            if Instant::now() >= deadline {
                for t in self.tracees.iter_mut() {
                    if t.state == State::Waiting {
                        t.state = State::TimedOut;
                    }
                }
                return;
            }
            if progress || Instant::now() < spin_until {
                backoff = Duration::from_micros(5);
                std::thread::yield_now();
            } else {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(1));
            }
        }
    }

    fn read_registers(&mut self) {
        self.threads.clear();
        for t in &self.tracees {
            let stop = match t.state {
                State::Stopped(kind) => kind,
                State::TimedOut | State::Waiting => StopKind::NotStopped,
                State::Gone => continue,
            };
            let regs = if stop == StopKind::NotStopped {
                None
            } else {
                getregs(t.tid)
            };
            self.threads.push(StoppedThread {
                tid: t.tid,
                regs,
                stop,
            });
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The threads, in TID order of discovery; exited ones are left out.
    pub fn threads(&self) -> &[StoppedThread] {
        &self.threads
    }

    /// Registers of thread `tid`, if it is stopped.
    pub fn registers(&self, tid: i32) -> Option<&Registers> {
        self.threads
            .iter()
            .find(|t| t.tid == tid)
            .and_then(|t| t.regs.as_ref())
    }

    /// Time from the first attach until every thread was stopped and its
    /// registers read.
    pub fn stop_latency(&self) -> Duration {
        self.stop_latency
    }

    /// True if the process was in (or entered) a group-stop: it stays
    /// stopped after resume.
    pub fn group_stopped(&self) -> bool {
        self.threads
            .iter()
            .any(|t| matches!(t.stop, StopKind::GroupStop(_)))
    }

    /// Lets the process run again: detaches from every thread, re-injecting
    /// pending signals. Returns how long the target was stopped (first
    /// attach to last detach).
    pub fn resume(mut self) -> Duration {
        self.detach_all()
    }

    fn detach_all(&mut self) -> Duration {
        if self.done {
            return self.started.elapsed();
        }
        self.done = true;
        // Each thread let go may preempt this one (it has slept, so the
        // scheduler favours it), leaving the rest stopped for a time slice
        // (~1.5 ms seen with a busy target on 2 cores): the real-time
        // boost taken at the pause is kept until the loop is done.
        let boost = self.boost.take();
        for t in &mut self.tracees {
            match t.state {
                State::Stopped(kind) => {
                    let sig = kind.pending_signal();
                    detach(t.tid, sig);
                }
                // Maybe it stopped by now.
                State::Waiting | State::TimedOut => let_go_or_leave_over(t.tid),
                State::Gone => {}
            }
            t.state = State::Gone;
        }
        let elapsed = self.started.elapsed();
        drop(boost);
        cleanup_leftovers();
        elapsed
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.detach_all();
    }
}

impl std::fmt::Debug for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pause")
            .field("pid", &self.pid)
            .field("threads", &self.threads)
            .field("stop_latency", &self.stop_latency)
            .finish()
    }
}

/// Threads stopped one by one for a CPU sample: each is interrupted at
/// once, and let go as soon as its caller has copied what it needs, instead
/// of holding every thread until the last one stops.
///
/// A thread that is runnable but not on a CPU (waiting for one, or
/// throttled by a cgroup CPU quota) cannot stop until the scheduler runs
/// it, which may take a whole quota period: such threads are not waited
/// for beyond a short budget ([`ThreadStops::next_stopped`]'s deadline).
/// Their interrupt stays pending, so they stop as soon as they run; they
/// are then let go by [`release_leftovers`], which the caller polls often
/// while [`has_leftovers`] (a thread stopped that way is held only until
/// the next poll).
///
/// `!Send` like [`Pause`]; dropping it lets every stopped thread go.
pub struct ThreadStops {
    tracees: Vec<(Tracee, Instant)>,
    /// Thread-time spent stopped so far: for each released thread, from
    /// when its stop was seen to its release. With each tracee: when it
    /// was interrupted, then when its stop was seen.
    stopped_time: Duration,
    boost: Option<RealtimeBoost>,
    _not_send: PhantomData<*const ()>,
}

impl ThreadStops {
    /// Seizes and interrupts the threads `tids` of `pid` that still exist.
    pub fn interrupt(pid: i32, tids: &[i32]) -> Result<ThreadStops> {
        cleanup_leftovers();
        tighten_timer_slack();
        let mut stops = ThreadStops {
            tracees: Vec::with_capacity(tids.len()),
            stopped_time: Duration::ZERO,
            boost: None,
            _not_send: PhantomData,
        };
        for &tid in tids {
            if !is_thread_of(pid, tid) {
                continue;
            }
            let state = seize(pid, tid)?;
            if state == State::Waiting {
                // SAFETY: plain ptrace request on a tracee; ESRCH (it
                // exited) shows up in the wait.
                unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) };
            }
            stops.tracees.push((Tracee { tid, state }, Instant::now()));
        }
        Ok(stops)
    }

    /// The next thread to have stopped, with its registers, or `None` once
    /// every thread has stopped, exited or been given up on at `deadline`.
    /// The caller copies what it needs, then calls [`ThreadStops::release`].
    pub fn next_stopped(&mut self, deadline: Instant) -> Option<(i32, Registers)> {
        let spin_until = Instant::now() + SPIN_BEFORE_SLEEPING;
        let mut backoff = Duration::from_micros(5);
        loop {
            let mut waiting = false;
            for (t, since) in self.tracees.iter_mut() {
                if t.state != State::Waiting {
                    continue;
                }
                match wait_nohang(t.tid) {
                    WaitResult::Nothing => waiting = true,
                    WaitResult::Gone => t.state = State::Gone,
                    WaitResult::Stopped(kind) => {
                        t.state = State::Stopped(kind);
                        // Stopped time counts from here: a thread waiting
                        // for a CPU was not running before either.
                        *since = Instant::now();
                        match getregs(t.tid) {
                            Some(regs) => {
                                // Nothing else should delay gospy while a
                                // thread of the target waits for it.
                                if self.boost.is_none() {
                                    self.boost = Some(RealtimeBoost::new());
                                }
                                return Some((t.tid, regs));
                            }
                            None => {
                                let tid = t.tid;
                                self.release(tid);
                                return self.next_stopped(deadline);
                            }
                        }
                    }
                }
            }
            if !waiting || Instant::now() >= deadline {
                return None;
            }
            if Instant::now() < spin_until {
                std::thread::yield_now();
            } else {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_micros(100));
            }
        }
    }

    /// Lets thread `tid` run again (re-injecting a signal that arrived while
    /// it was being stopped).
    pub fn release(&mut self, tid: i32) {
        if let Some((t, since)) = self.tracees.iter_mut().find(|(t, _)| t.tid == tid) {
            if let State::Stopped(kind) = t.state {
                let sig = kind.pending_signal();
                detach(tid, sig);
                self.stopped_time += since.elapsed();
                t.state = State::Gone;
            }
        }
        let any_stopped = self
            .tracees
            .iter()
            .any(|(t, _)| matches!(t.state, State::Stopped(_)));
        if !any_stopped {
            self.boost = None;
        }
    }

    /// Lets every thread go (threads that have not stopped yet become
    /// leftovers, let go when they stop); returns the thread-time they spent
    /// stopped.
    pub fn finish(mut self) -> Duration {
        self.release_all();
        self.stopped_time
    }

    fn release_all(&mut self) {
        let stopped: Vec<i32> = self
            .tracees
            .iter()
            .filter(|(t, _)| matches!(t.state, State::Stopped(_)))
            .map(|(t, _)| t.tid)
            .collect();
        for tid in stopped {
            self.release(tid);
        }
        for (t, _) in self.tracees.iter_mut() {
            if t.state == State::Waiting {
                let_go_or_leave_over(t.tid);
                t.state = State::Gone;
            }
        }
        self.boost = None;
    }
}

impl Drop for ThreadStops {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// Whether threads interrupted by an earlier stop have not been let go yet
/// (see [`ThreadStops`]): the caller should call [`release_leftovers`] soon.
pub fn has_leftovers() -> bool {
    LEFTOVERS.with(|l| !l.borrow().is_empty())
}

/// Makes the calling thread SCHED_FIFO until dropped, if permitted
/// (CAP_SYS_NICE); does nothing otherwise.
/// Set when the kernel refused gospy a real-time priority (no root or
/// CAP_SYS_NICE): stopped threads then wait longer for gospy to run.
static BOOST_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether gospy could not raise its priority while the target was stopped
/// (not root, no CAP_SYS_NICE): its pauses are then several times longer.
pub fn priority_boost_refused() -> bool {
    BOOST_REFUSED.load(std::sync::atomic::Ordering::Relaxed)
}

struct RealtimeBoost {
    saved: Option<(libc::c_int, libc::sched_param)>,
}

impl RealtimeBoost {
    fn new() -> RealtimeBoost {
        // SAFETY: scheduling calls on the calling thread (pid 0) with
        // parameter structs we own.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            let mut param: libc::sched_param = std::mem::zeroed();
            if policy != libc::SCHED_OTHER || libc::sched_getparam(0, &mut param) != 0 {
                return RealtimeBoost { saved: None };
            }
            let rt = libc::sched_param { sched_priority: 1 };
            if libc::sched_setscheduler(0, libc::SCHED_FIFO, &rt) != 0 {
                BOOST_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
                return RealtimeBoost { saved: None };
            }
            RealtimeBoost {
                saved: Some((policy, param)),
            }
        }
    }
}

impl Drop for RealtimeBoost {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.saved {
            // SAFETY: restores what new() saved, on the same thread (the
            // guard lives in a function call or in a `!Send` Pause).
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

enum WaitResult {
    Nothing,
    Stopped(StopKind),
    Gone,
}

/// Lets this thread's short sleeps (polling for threads to stop) end on
/// time: the default timer slack of 50 us would stretch every 5 us sleep to
/// ~55 us, all of it time the target spends stopped.
fn tighten_timer_slack() {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if !DONE.with(|d| d.replace(true)) {
        // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack (ns).
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn wait_nohang(tid: i32) -> WaitResult {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid on one specific thread we trace.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == 0 {
            return WaitResult::Nothing;
        }
        if r == -1 {
            if errno() == libc::EINTR {
                continue;
            }
            // ECHILD: not (or no longer) our tracee.
            return WaitResult::Gone;
        }
        if libc::WIFSTOPPED(status) {
            return WaitResult::Stopped(decode_stop(status));
        }
        // WIFEXITED / WIFSIGNALED. For a thread-group leader that is a
        // child of ours (launch mode) this reaped the whole process: keep
        // its status for `take_reaped_exit`.
        let mut reaped = REAPED_EXITS.lock().unwrap_or_else(|e| e.into_inner());
        // Exits of other threads pile up too; only the latest few matter.
        if reaped.len() >= 64 {
            reaped.remove(0);
        }
        reaped.push((tid, status));
        return WaitResult::Gone;
    }
}

/// Decodes a `WIFSTOPPED` status of a PTRACE_SEIZEd thread.
fn decode_stop(status: libc::c_int) -> StopKind {
    let sig = libc::WSTOPSIG(status);
    let event = (status >> 16) & 0xff;
    if event == libc::PTRACE_EVENT_STOP {
        match sig {
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {
                StopKind::GroupStop(sig)
            }
            _ => StopKind::Interrupt,
        }
    } else if event == 0 {
        StopKind::Signal(sig)
    } else {
        // Other PTRACE_EVENT_* need options we do not set.
        StopKind::Interrupt
    }
}

/// Lets go a thread that was interrupted but had not stopped when last
/// checked: detached if it has stopped since, else left over (see
/// [`LEFTOVERS`]) to be let go when it stops.
fn let_go_or_leave_over(tid: i32) {
    match wait_nohang(tid) {
        WaitResult::Stopped(kind) => {
            let sig = kind.pending_signal();
            detach(tid, sig);
        }
        WaitResult::Gone => {}
        WaitResult::Nothing => LEFTOVERS.with(|l| l.borrow_mut().push(tid)),
    }
}

fn detach(tid: i32, sig: i32) {
    // SAFETY: plain ptrace request; `data` is the signal number.
    let r = unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, sig as usize) };
    if r != 0 {
        // Not in a stop any more: killed while stopped (the process exited).
        // Its death is reported to us, its tracer, and until we reap it the
        // whole process stays a zombie its parent cannot reap.
        match wait_nohang(tid) {
            WaitResult::Gone => {}
            WaitResult::Nothing => LEFTOVERS.with(|l| l.borrow_mut().push(tid)),
            WaitResult::Stopped(kind) => {
                let sig = kind.pending_signal();
                // SAFETY: as above.
                unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, sig as usize) };
            }
        }
    }
}

/// The exit status (`waitpid` form) of `pid` if waiting on one of our
/// traced threads reaped it: for a program gospy launched whose main thread
/// was stopped for a sample as it exited, `waitpid(pid, __WALL)` returns
/// the process's exit, which `Child::try_wait` then never sees.
pub fn take_reaped_exit(pid: i32) -> Option<libc::c_int> {
    let mut reaped = REAPED_EXITS.lock().unwrap_or_else(|e| e.into_inner());
    let i = reaped.iter().position(|&(tid, _)| tid == pid)?;
    Some(reaped.swap_remove(i).1)
}

/// Reaps or lets go threads left over from earlier pauses (ones that had
/// not stopped yet, or were dying, when the pause ended). Pauses do this
/// themselves; a caller that will not pause again (a sampler that stopped,
/// waiting for its child to exit) calls it so that no thread of the target
/// stays attached.
pub fn release_leftovers() {
    cleanup_leftovers();
}

fn getregs(tid: i32) -> Option<Registers> {
    // SAFETY: user_regs_struct is plain data; the kernel fills it.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0usize,
            &mut regs as *mut libc::user_regs_struct,
        )
    };
    (r != -1).then(|| Registers::from(regs))
}

/// Detaches leftover tracees that have stopped since.
fn cleanup_leftovers() {
    LEFTOVERS.with(|l| {
        let mut l = l.borrow_mut();
        l.retain(|&tid| match wait_nohang(tid) {
            WaitResult::Nothing => true,
            WaitResult::Gone => false,
            WaitResult::Stopped(kind) => {
                let sig = kind.pending_signal();
                detach(tid, sig);
                false
            }
        });
    });
}

/// The PID of a process other than this one that traces `pid` (a debugger,
/// strace, another gospy), if any.
pub fn is_traced_by_other(pid: i32) -> Option<i32> {
    other_tracer(&format!("/proc/{pid}/status"))
}

fn other_tracer(status_path: &str) -> Option<i32> {
    let tracer = super::status_field_at(status_path, "TracerPid:")?
        .parse::<i32>()
        .ok()?;
    if tracer == 0 {
        return None;
    }
    // TracerPid is the tracing *thread*; ours if it is one of our threads.
    let ours = std::path::Path::new(&format!("/proc/self/task/{tracer}")).exists();
    if ours {
        return None;
    }
    // Report its process.
    let tgid = super::status_field(tracer, "Tgid:")
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(tracer);
    Some(tgid)
}

fn traced_error(pid: i32, tracer: i32) -> Error {
    let name = std::fs::read_to_string(format!("/proc/{tracer}/comm"))
        .map(|s| format!(" ({})", s.trim()))
        .unwrap_or_default();
    Error::Other(format!(
        "process {pid} is already being traced by PID {tracer}{name} (a debugger?); \
         only one tracer can attach at a time: detach it first"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(sig: i32, event: i32) -> libc::c_int {
        (event << 16) | (sig << 8) | 0x7f
    }

    #[test]
    fn decodes_stops() {
        assert_eq!(
            decode_stop(stopped(libc::SIGTRAP, libc::PTRACE_EVENT_STOP)),
            StopKind::Interrupt
        );
        assert_eq!(
            decode_stop(stopped(libc::SIGSTOP, libc::PTRACE_EVENT_STOP)),
            StopKind::GroupStop(libc::SIGSTOP)
        );
        assert_eq!(
            decode_stop(stopped(libc::SIGTSTP, libc::PTRACE_EVENT_STOP)),
            StopKind::GroupStop(libc::SIGTSTP)
        );
        assert_eq!(
            decode_stop(stopped(libc::SIGURG, 0)),
            StopKind::Signal(libc::SIGURG)
        );
        assert_eq!(
            decode_stop(stopped(libc::SIGSTOP, 0)),
            StopKind::Signal(libc::SIGSTOP)
        );
        assert_eq!(decode_stop(stopped(34, 0)), StopKind::Signal(34));
    }

    /// A launched program whose main thread we trace as it exits: waiting
    /// on the thread reaps the process, and its status must not be lost.
    #[test]
    fn exit_status_reaped_by_waiting_on_a_traced_thread_is_kept() {
        use std::io::Write;
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read line; exit 3"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // SAFETY: seizing our own child; it is detached by its exit.
        let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match wait_nohang(pid) {
                WaitResult::Gone => break,
                WaitResult::Stopped(kind) => detach(pid, kind.pending_signal()),
                WaitResult::Nothing => {}
            }
            assert!(Instant::now() < deadline, "the shell did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = take_reaped_exit(pid).expect("the exit status was kept");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
        assert_eq!(take_reaped_exit(pid), None, "taken once");
        // What launch mode's wait would have met without the kept status.
        assert!(child.try_wait().is_err(), "already reaped");
    }

    #[test]
    fn self_is_not_traced_by_other() {
        assert_eq!(is_traced_by_other(std::process::id() as i32), None);
    }
}
