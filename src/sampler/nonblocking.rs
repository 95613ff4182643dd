//! `--nonblocking`: on-CPU samples without ever stopping the target.
//!
//! Linux perf events sample each thread of the target every `1/rate` seconds
//! of its own CPU time and copy its registers and the top of its stack at
//! that instant (`process::perf`). gospy reads the samples in batches (tens
//! of milliseconds apart: waking less often costs the target less), finds
//! the goroutine that ran and unwinds from the copied stack; frames deeper
//! than the copy are read from the live process (a goroutine's callers do
//! not change while it runs in the frames above them). In Go code of Go
//! 1.17+, the sampled r14 is that goroutine's `g`; otherwise it is the
//! goroutine the thread's M runs when the batch is read, and a sample whose
//! stack pointer is not on that goroutine's stack (it switched meanwhile) is
//! dropped. Labels are those the goroutine has when the batch is read.
//!
//! Perf's task clock counts the time a virtual machine's hypervisor takes
//! from a running thread (steal time); the kernel's CPU accounting, which
//! `top`, `/proc` and the runtime's own profiler follow, does not. Under a
//! busy host a third of the samples can be such time, so each batch's
//! samples are weighted down until the time written tracks the process's
//! CPU time as the kernel accounts it (never up: missing kernel time or
//! lost samples are not invented).
//!
//! With `--idle`, the goroutines that are not running are added at the
//! requested rate from snapshots read without a pause; those that move while
//! being read are left out of that sample.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Sampler, Stack, StopReason, Weight, NO_GOROUTINE_FRAME};
use crate::error::{Error, Result};
use crate::native::{GoReturn, NativeUnwinder};
use crate::process::memory::Memory;
use crate::process::perf::{PerfSample, PerfSampler};
use crate::runtime::{GStatus, Goroutine, Machine};
use crate::snapshot::{self, SnapshotOptions};
use crate::target::Target;
use crate::unwind::{StackBounds, StackEnd, StartState, UserSwitch};
use std::sync::Arc;

/// The goroutine root of a stack whose goroutine is not known (with
/// `--goroutines`).
const UNKNOWN_GOROUTINE_FRAME: &str = "goroutine ?";

/// Bytes of stack the kernel copies per sample: the innermost frames (a
/// few dozen in typical Go code), at the cost of a copy in the target's
/// context per sample. 4 KiB rather than 8: in `cargo bench --bench record`
/// the target's slowdown at 1000 Hz fell from 1.4-1.7% to 0.6-0.9%, and a
/// ring holds twice the samples.
const STACK_COPY_BYTES: u32 = 4096;
/// How often the thread list (perf events) and the M list are refreshed.
const REFRESH_EVERY: Duration = Duration::from_millis(250);

/// C frames unwound to find the Go code that called into C or the vDSO.
const MAX_C_FRAMES: usize = 64;

/// How soon the M list is read again for a sample of a thread it lacks (a
/// thread started since, or one the runtime did not create).
const MISSING_M_REFRESH: Duration = Duration::from_millis(20);

/// Why a perf sample was not given to a goroutine's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unattributed {
    /// The thread is not one of the runtime's Ms (a thread C code started).
    NotAnM,
    /// The goroutine the M runs now is not the one sampled: the sampled
    /// stack pointer is on none of its stacks.
    Switched,
    /// Go's signal handler (on the `gsignal` stack).
    SignalHandler,
    /// Code from which no way leads back to Go frames.
    NoGoFrames,
}

impl Unattributed {
    fn frame(self) -> &'static str {
        match self {
            Unattributed::NotAnM => "[thread not started by the Go runtime]",
            Unattributed::Switched => "[goroutine switched before its stack was read]",
            Unattributed::SignalHandler => "[signal handler]",
            Unattributed::NoGoFrames => "[code with no way back to Go frames]",
        }
    }
}

/// What attributing a perf sample needs besides the [`Sampler`].
struct SampleContext {
    /// The sampling period (of each thread's CPU time), in ns.
    period_ns: u64,
    /// The target's Ms by thread id.
    machines: HashMap<u64, Machine>,
    /// When `machines` was read.
    machines_read: Instant,
    /// The target's modules (for the vDSO's CFI), unless the sampler has
    /// its own for `--native`.
    modules: Option<NativeUnwinder>,
}

/// The root frame of a sample taken in C code, in place of its Go frames,
/// which are not known without stopping the thread (`record --native`
/// without `--nonblocking` shows them); with `--native` the C frames follow.
pub const CGO_CALL_FRAME: &str = "[cgo call]";

/// The weight of each of `count` samples (of `period` ns of perf's clock)
/// when the process used `used` ns of CPU and `written` are written:
/// what is left of `used`, shared, and at most a period each.
fn batch_weight(used: u64, written: u64, count: u64, period: u64) -> u64 {
    (used.saturating_sub(written) / count.max(1)).min(period)
}

/// Stack memory of one sample: the kernel's copy from `sp` up, then the
/// live process.
///
/// The live part is read up to a batch interval after the sample: if the
/// goroutine has meanwhile returned from the frames the copy ends in, the
/// frames beyond are no longer its callers. So before the first read
/// beyond the copy, the last word the unwinder read from the copy (a
/// return address slot) is read live too: if it changed, nothing beyond the
/// copy is served and the stack ends there.
struct SampleMemory<'a> {
    sp: u64,
    copy: &'a [u8],
    /// The top of the stack the copy is of: addresses from there up are
    /// another stack's (after a switch from the system stack), read live.
    copied_stack_hi: u64,
    live: &'a dyn Memory,
    /// Address of the last 8-byte read served from the copy.
    last_copied: Cell<Option<u64>>,
    /// Whether reads beyond the copy are served (decided on the first).
    beyond_ok: Cell<Option<bool>>,
}

impl<'a> SampleMemory<'a> {
    fn new(sp: u64, copy: &'a [u8], live: &'a dyn Memory) -> SampleMemory<'a> {
        SampleMemory {
            sp,
            copy,
            copied_stack_hi: u64::MAX,
            live,
            last_copied: Cell::new(None),
            beyond_ok: Cell::new(None),
        }
    }

    /// Whether the last word read from the copy still holds the same value
    /// in the live stack (true if nothing was read from the copy).
    /// The same, knowing where the copied stack ends.
    fn of_stack(mut self, hi: Option<u64>) -> SampleMemory<'a> {
        self.copied_stack_hi = hi.unwrap_or(u64::MAX);
        self
    }

    fn copy_still_live(&self) -> bool {
        let Some(addr) = self.last_copied.get() else {
            return true;
        };
        let mut copied = [0u8; 8];
        self.read_copy(addr, &mut copied)
            && self.live.read_u64(addr) == Some(u64::from_le_bytes(copied))
    }

    fn read_copy(&self, addr: u64, buf: &mut [u8]) -> bool {
        let copied = addr
            .checked_sub(self.sp)
            .and_then(|off| usize::try_from(off).ok())
            .and_then(|off| self.copy.get(off..off.checked_add(buf.len())?));
        match copied {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

impl Memory for SampleMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if self.read_copy(addr, buf) {
            if buf.len() == 8 {
                self.last_copied.set(Some(addr));
            }
            return true;
        }
        let copy_end = self.sp.saturating_add(self.copy.len() as u64);
        if addr >= copy_end && addr < self.copied_stack_hi {
            let ok = match self.beyond_ok.get() {
                Some(ok) => ok,
                None => {
                    let ok = self.copy_still_live();
                    self.beyond_ok.set(Some(ok));
                    ok
                }
            };
            if !ok {
                return false;
            }
        }
        // Below `sp`: another stack (a switch from the system stack).
        self.live.read(addr, buf)
    }
}

/// Where `addr`, on a goroutine stack that has since been copied to `now`,
/// is now: stacks of the runtime's stack pool (up to 16 KiB)
/// are aligned to their size, and a copy keeps every frame's distance from
/// the top (runtime/stack.go `copystack`). The old stack is taken to have
/// had the current size (for an old stack twice as large, right for frames
/// in its upper half, which the caller checks by the return address found
/// there). None for large stacks, which are not aligned.
fn moved_stack_address(addr: u64, now: StackBounds) -> Option<u64> {
    let size = now.hi.checked_sub(now.lo)?;
    if !size.is_power_of_two() || size > 16 << 10 {
        return None;
    }
    let old_hi = (addr | (size - 1)).checked_add(1)?;
    let moved = now.hi.checked_sub(old_hi - addr)?;
    now.contains(moved).then_some(moved)
}

/// The part of a sample's call chain (`chain`: its pc, then return
/// addresses) beyond the frames unwound from its stack copy (their pcs
/// `unwound`, innermost first, the first being the sampled pc): None unless
/// they line up. A function sampled before it saved its frame pointer hides
/// its caller from the chain, so the chain may lag the frames by one.
fn chain_beyond<'c>(unwound: &[u64], chain: &'c [u64]) -> Option<&'c [u64]> {
    let last = unwound.len().checked_sub(1).filter(|&l| l >= 1)?;
    if chain.first() != unwound.first() {
        return None;
    }
    [0isize, -1, 1].into_iter().find_map(|lag| {
        let at = |i: usize| usize::try_from(i as isize + lag).ok().filter(|&j| j >= 1);
        let lined_up = (1..=last).all(|i| at(i).is_none_or(|j| chain.get(j) == Some(&unwound[i])));
        let end = at(last)?;
        (lined_up && end < chain.len()).then(|| &chain[end + 1..])
    })
}

/// Memory with nothing in it: what lies beyond a sample's stack copy when
/// the live stack can no longer be trusted.
struct NoMemory;

impl Memory for NoMemory {
    fn read(&self, _addr: u64, _buf: &mut [u8]) -> bool {
        false
    }
}

/// Perf-event samples of one target, counted into a [`Sampler`] batch by
/// batch: the loop of `record --nonblocking`, and `top --nonblocking` one
/// step at a time.
pub(super) struct PerfFeed {
    perf: PerfSampler,
    /// The sampling period (of each thread's CPU time).
    period: Duration,
    /// The Ms are refreshed every [`REFRESH_EVERY`].
    context: SampleContext,
    next_refresh: Instant,
    last_drain: Instant,
    samples: Vec<PerfSample>,
    /// The process's CPU time when the events were opened; None when it
    /// could not be read or kernel time is not sampled (the samples then
    /// miss the time in system calls, and no steal time is corrected).
    cpu_at_open: Option<Duration>,
    /// Time written so far, and the weight of one sample in the last batch.
    written_nanos: u64,
    sample_nanos: u64,
}

impl PerfFeed {
    /// Opens perf events on every thread of `target`, sampling each every
    /// `1/rate` s of its CPU time.
    pub(super) fn open(target: &Target, rate: f64, has_modules: bool) -> Result<PerfFeed> {
        let period_ns = ((1e9 / rate.max(0.001)) as u64).max(1);
        let now = Instant::now();
        let modules = if has_modules {
            None
        } else {
            Some(NativeUnwinder::new(target.pid())?)
        };
        let perf = PerfSampler::open(target.pid(), period_ns, STACK_COPY_BYTES)?;
        let cpu_at_open = if perf.counts_kernel_time() {
            target.process.cpu_time().ok()
        } else {
            None
        };
        Ok(PerfFeed {
            perf,
            cpu_at_open,
            written_nanos: 0,
            sample_nanos: period_ns,
            period: Duration::from_nanos(period_ns),
            context: SampleContext {
                period_ns,
                machines: HashMap::new(),
                machines_read: now,
                modules,
            },
            next_refresh: now,
            last_drain: now,
            samples: Vec::new(),
        })
    }

    /// Refreshes the thread and M lists when due, then counts the samples
    /// waiting. `Err` when the target is gone.
    pub(super) fn drain(
        &mut self,
        sampler: &mut Sampler<'_>,
    ) -> std::result::Result<(), StopReason> {
        let target = sampler.target;
        if !target.process.is_alive() {
            return Err(StopReason::TargetExited);
        }
        let now = Instant::now();
        if now >= self.next_refresh {
            self.next_refresh = now + REFRESH_EVERY;
            sampler.labels.clear();
            match self.perf.refresh_threads() {
                Ok(()) => {}
                Err(Error::NoSuchProcess(_) | Error::ProcessExited { .. }) => {
                    return Err(StopReason::TargetExited)
                }
                Err(e) => sampler.note_error(e),
            }
            self.read_machines(sampler);
        }
        self.count_waiting(sampler);
        Ok(())
    }

    /// Like [`PerfFeed::drain`], but only once the drain interval passed
    /// since the last drain (a caller that steps faster than that).
    pub(super) fn drain_if_due(
        &mut self,
        sampler: &mut Sampler<'_>,
    ) -> std::result::Result<(), StopReason> {
        if self.last_drain.elapsed() < self.perf.drain_interval() {
            return Ok(());
        }
        self.drain(sampler)
    }

    fn read_machines(&mut self, sampler: &mut Sampler<'_>) {
        self.context.machines_read = Instant::now();
        match snapshot::read_machines(sampler.target) {
            Ok(ms) => self.context.machines = ms.into_iter().map(|m| (m.tid, m)).collect(),
            Err(e) => sampler.note_error(e),
        }
    }

    /// Counts the samples waiting in the rings.
    fn count_waiting(&mut self, sampler: &mut Sampler<'_>) {
        self.last_drain = Instant::now();
        self.samples.clear();
        self.perf.read_samples(&mut self.samples);
        let machines = &self.context.machines;
        if self.context.machines_read.elapsed() >= MISSING_M_REFRESH
            && self
                .samples
                .iter()
                .any(|s| !machines.contains_key(&u64::from(s.tid)))
        {
            self.read_machines(sampler);
        }
        let nanos = self.sample_weight(sampler, self.samples.len() as u64);
        for sample in &self.samples {
            sampler.count_perf_sample(sample, &self.context, nanos);
        }
        sampler.profile.lost = self.perf.lost();
    }

    /// The time each of the `count` samples of this batch stands for: one
    /// period, less the share of steal time (see the module docs). The
    /// budget is the process's CPU time since open less the time already
    /// written, so a batch weighted too low (`/proc` counts in 10 ms ticks)
    /// is made up by the next. A target that exited keeps the last weight.
    fn sample_weight(&mut self, sampler: &mut Sampler<'_>, count: u64) -> u64 {
        let period = self.context.period_ns;
        if count == 0 {
            return period;
        }
        if let Some(start) = self.cpu_at_open {
            if let Ok(now) = sampler.target.process.cpu_time() {
                let used = now.saturating_sub(start).as_nanos() as u64;
                self.sample_nanos = batch_weight(used, self.written_nanos, count, period);
            }
        }
        self.written_nanos += self.sample_nanos * count;
        sampler.profile.steal_nanos += (period - self.sample_nanos) * count;
        self.sample_nanos
    }
}

impl Sampler<'_> {
    /// The recording loop of `--nonblocking`; see the module docs.
    pub(super) fn run_nonblocking(
        &mut self,
        stop: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(&super::Profile),
    ) -> Result<StopReason> {
        let target = self.target;
        let mut feed = PerfFeed::open(target, self.options.rate, self.native.is_some())?;
        self.profile.kernel_time_sampled = Some(feed.perf.counts_kernel_time());
        let started = Instant::now();
        let interval = feed.period;
        let mut next_tick = started;
        loop {
            let ended = if stop() {
                Some(StopReason::Interrupted)
            } else if self
                .options
                .duration
                .is_some_and(|d| started.elapsed() >= d)
            {
                Some(StopReason::Duration)
            } else {
                None
            };
            if let Some(reason) = ended {
                // The samples since the last drain belong to the recording.
                feed.count_waiting(self);
                return Ok(reason);
            }
            if let Err(reason) = feed.drain(self) {
                return Ok(reason);
            }
            if self.options.idle && Instant::now() >= next_tick {
                next_tick = (next_tick + interval).max(Instant::now());
                match self.take_idle_snapshot(SnapshotOptions {
                    nonblocking: true,
                    ..SnapshotOptions::default()
                }) {
                    Ok(snapshot) => {
                        let nanos = interval.as_nanos() as u64;
                        self.count_snapshot(&snapshot, false, &|_| nanos)
                    }
                    Err(e) => self.note_error(e),
                }
                self.profile.samples += 1;
            }
            self.profile.elapsed = started.elapsed();
            progress(&self.profile);
            // Waking less often costs the target less (see
            // PerfSampler::drain_interval); --idle ticks at its rate.
            let drain = feed.perf.drain_interval();
            let mut wait = if self.options.idle {
                next_tick.saturating_duration_since(Instant::now())
            } else {
                drain
            };
            if let Some(d) = self.options.duration {
                wait = wait.min(d.saturating_sub(started.elapsed()));
            }
            feed.perf.wait(wait.min(drain));
        }
    }

    /// Counts one perf sample: under the stack of the goroutine it caught
    /// running, else under [`super::UNKNOWN_FRAME`] and the reason, so that every
    /// collected sample is written. Without `--idle` each perf sample is a
    /// sample; with it, the samples are the snapshots and a perf sample adds
    /// one running goroutine.
    fn count_perf_sample(&mut self, sample: &PerfSample, context: &SampleContext, nanos: u64) {
        if !self.options.idle {
            self.profile.samples += 1;
        }
        let weight = Weight::one(nanos);
        match self.perf_sample_stack(sample, context) {
            Ok(stack) => {
                self.count(stack, weight);
            }
            Err(why) => self.count_unknown(why.frame(), weight),
        }
    }

    /// The stack a perf sample caught; see the module docs.
    fn perf_sample_stack(
        &mut self,
        sample: &PerfSample,
        context: &SampleContext,
    ) -> std::result::Result<Stack, Unattributed> {
        let target = self.target;
        let layout = &target.binary.layout;
        let m = context
            .machines
            .get(&u64::from(sample.tid))
            .ok_or(Unattributed::NotAnM)?;
        let g_bytes = std::cell::RefCell::new(vec![0u8; layout.g_read_len() as usize]);
        let read_g = |addr: u64| {
            let mut bytes = g_bytes.borrow_mut();
            target
                .memory
                .read(addr, &mut bytes)
                .ok()
                .and_then(|()| Goroutine::decode(addr, &bytes, layout))
        };
        let memory = SampleMemory::new(sample.sp, &sample.stack, &target.memory);
        let in_go = target.in_go_code(sample.ip);
        // Outside Go code (the vDSO, C): the C frames lead back to the Go
        // function that called them (CFI; the vDSO has it).
        let (in_vdso, go_return) = if in_go {
            (false, None)
        } else {
            let modules = self.native.as_ref().or(context.modules.as_ref());
            let is_go = |pc: u64| target.in_go_code(pc);
            let (frames, go_return) = modules.map_or((Vec::new(), None), |u| {
                u.unwind_to_go(&sample.registers(), &memory, &is_go, MAX_C_FRAMES)
            });
            let in_vdso = frames.first().is_some_and(|f| &*f.module == "[vdso]");
            (in_vdso, go_return)
        };
        if let Some(go) = go_return.filter(|_| !in_vdso) {
            if let Some(stack) = self.cgo_call_stack(sample, go, &memory, m.tid, &read_g) {
                return Ok(stack);
            }
        }
        // Go code of Go 1.17+ keeps its g in r14: the goroutine that ran at
        // the sample, even if the thread has switched to another since (in
        // the vDSO, r14 as its CFI restored it: C code preserves it).
        // Elsewhere (runtime assembly, system stack, C, older Go) r14 is
        // anything: the M is read for its current goroutine, which must
        // still be the sampled one (checked below by the stack pointer).
        let r14 = if in_go {
            Some(sample.r14)
        } else if in_vdso {
            go_return.and_then(|go| go.r14)
        } else {
            None
        };
        let in_register = r14
            .filter(|r14| {
                target.binary.go_version.at_least(1, 17) && ![0, m.g0, m.gsignal].contains(r14)
            })
            .and_then(read_g)
            .filter(|g| !g.status.is_dead() && g.stack_lo < g.stack_hi);
        let (mut g, machine) = match in_register {
            Some(g) => (g, m.clone()),
            None => {
                let mut m_bytes = vec![0u8; layout.m_read_len() as usize];
                let machine = target
                    .memory
                    .read(m.addr, &mut m_bytes)
                    .ok()
                    .and_then(|()| Machine::decode(m.addr, &m_bytes, layout))
                    .ok_or(Unattributed::Switched)?;
                let g0 = || read_g(machine.g0).and_then(|g0| g0.stack_bounds());
                if machine.curg == 0 {
                    // Sampled running a goroutine (on its stack, or on the
                    // system stack for it) that the M has left since: the
                    // sample's own frames, if they are whole.
                    if in_go {
                        if let Some(stack) = self.stack_of_unknown_goroutine(sample, m.tid) {
                            return Ok(stack);
                        }
                    }
                    // The runtime's own work on the system stack (scheduler,
                    // GC, sysmon): its frames, as the runtime's profiler
                    // shows them, under a root that says so.
                    return Ok(self.no_goroutine_stack(sample, in_go, g0(), &memory));
                }
                let Some(g) = read_g(machine.curg) else {
                    return self
                        .stack_of_unknown_goroutine(sample, m.tid)
                        .ok_or(Unattributed::Switched);
                };
                (g, machine)
            }
        };
        // The system stacks' bounds cost a read each; most samples (Go code
        // on the goroutine's own stack) need neither.
        let g0_bounds = std::cell::OnceCell::new();
        let g0_stack =
            || *g0_bounds.get_or_init(|| read_g(machine.g0).and_then(|g0| g0.stack_bounds()));
        let copied_stack_hi = if g.stack_contains(sample.sp) {
            Some(g.stack_hi)
        } else {
            g0_stack().filter(|s| s.contains(sample.sp)).map(|s| s.hi)
        };
        let memory =
            SampleMemory::new(sample.sp, &sample.stack, &target.memory).of_stack(copied_stack_hi);
        let on_known_stack =
            |sp: u64| g.stack_contains(sp) || g0_stack().is_some_and(|s| s.contains(sp));
        // Where the Go frames start: the sampled pc; in the vDSO, the
        // caller of the Go function that called it.
        let (pc, sp, trap) = if in_go {
            (sample.ip, sample.sp, true)
        } else if let (true, Some(go)) = (in_vdso, go_return) {
            if let Some(stack) = self.vdso_stack_from_chain(sample, go, &g, &memory, machine.tid) {
                return Ok(stack);
            }
            self.vdso_caller(go, &g, &memory, &on_known_stack)
                .ok_or(Unattributed::Switched)?
        } else if g.status == GStatus::Syscall && !g.stack_contains(sample.sp) {
            // In C code (a cgo call): the Go frames below it are on the
            // goroutine's stack, which the sample did not copy and which
            // may have moved on to another call by now. The sample is
            // counted, but under a frame that says so; the C frames are the
            // sample's own (registers and stack copy).
            let mut locations = Vec::new();
            self.native_locations(&sample.registers(), &memory, &mut locations);
            let mut stack = self.stack_with(&g, Some(machine.tid), locations, true);
            stack.roots.push(CGO_CALL_FRAME.into());
            return Ok(stack);
        } else {
            return Err(Unattributed::NoGoFrames);
        };
        let user_stack = StackBounds {
            lo: g.stack_lo,
            hi: g.stack_hi,
        };
        let start = if user_stack.contains(sp) {
            StartState {
                pc,
                sp,
                trap,
                stack: Some(user_stack),
                user_switch: None,
            }
        } else if g0_stack().is_some_and(|s| s.contains(sp)) {
            StartState {
                pc,
                sp,
                trap,
                stack: g0_stack(),
                user_switch: Some(UserSwitch {
                    stack: user_stack,
                    sched_sp: g.sched_sp,
                    sched_pc: g.sched_pc,
                }),
            }
        } else if read_g(machine.gsignal)
            .and_then(|s| s.stack_bounds())
            .is_some_and(|s| s.contains(sp))
        {
            return Err(Unattributed::SignalHandler);
        } else if in_go {
            // The goroutine's stack has moved since the sample (grown, or
            // shrunk by the GC: copied elsewhere) or it is another
            // goroutine's now. The frames the copy holds are the sample's
            // own: unwind them, and nothing beyond.
            let copied = StackBounds {
                lo: sample.sp,
                hi: sample.sp.saturating_add(sample.stack.len() as u64),
            };
            let start = StartState {
                pc,
                sp,
                trap,
                stack: Some(copied),
                user_switch: None,
            };
            g.status = GStatus::Running;
            return self
                .sample_stack_from(&g, &start, sample, &NoMemory, machine.tid, Vec::new())
                .ok_or(Unattributed::NoGoFrames);
        } else {
            return Err(Unattributed::Switched);
        };
        // It was running when sampled, whatever it does now.
        g.status = GStatus::Running;
        let mut locations = Vec::new();
        if !in_go {
            self.native_locations(&sample.registers(), &memory, &mut locations);
        }
        self.sample_stack_from(&g, &start, sample, &memory, machine.tid, locations)
            .ok_or(Unattributed::NoGoFrames)
    }

    /// The stack of `g` from `start` (after `locations`): the frames in the
    /// sample's stack copy, then those of its call chain beyond them, taken
    /// at the instant of the sample. Only when the chain does not line up
    /// with the copy's frames (or breaks: C code without frame pointers,
    /// the kernel's depth cap) are the frames beyond the copy read from
    /// `beyond`, the live process, where they may have changed since.
    fn sample_stack_from(
        &mut self,
        g: &Goroutine,
        start: &StartState,
        sample: &PerfSample,
        beyond: &dyn Memory,
        tid: u64,
        locations: Vec<u32>,
    ) -> Option<Stack> {
        let end = if self.unwind_copy_and_chain(start, sample) {
            StackEnd::Complete
        } else {
            let memory = SampleMemory::new(sample.sp, &sample.stack, beyond);
            self.unwinder
                .unwind_into(start, &memory, &mut self.physical)
        };
        self.stack_of_physical(g, end, Some(tid), true, locations)
    }

    /// Unwinds from `start` into `self.physical` with the sample's stack
    /// copy only, then continues with its call chain where the two line up.
    /// True if the frames are whole (they reach a stack's root).
    fn unwind_copy_and_chain(&mut self, start: &StartState, sample: &PerfSample) -> bool {
        let copy_only = SampleMemory::new(sample.sp, &sample.stack, &NoMemory);
        let end = self
            .unwinder
            .unwind_into(start, &copy_only, &mut self.physical);
        let cut = self.cut_at_systemstack();
        if end == StackEnd::Complete && !cut {
            return true;
        }
        let pcs: Vec<u64> = self.physical.iter().map(|f| f.pc).collect();
        chain_beyond(&pcs, &sample.callchain)
            .is_some_and(|rest| self.unwinder.extend_with_returns(rest, &mut self.physical))
    }

    /// Cuts the frames just unwound after the first `runtime.systemstack`
    /// they went on past: beyond it the system stack holds only its own
    /// root (`mstart`) once the goroutine's saved context is gone, while
    /// the sample's call chain leads on to the goroutine's frames. True if
    /// it cut.
    fn cut_at_systemstack(&mut self) -> bool {
        let pclntab = &self.target.binary.pclntab;
        let at = self
            .physical
            .iter()
            .position(|f| pclntab.func_name(&f.func) == "runtime.systemstack");
        match at {
            Some(i) if i + 1 < self.physical.len() => {
                self.physical.truncate(i + 1);
                true
            }
            _ => false,
        }
    }

    /// The stack of a sample in Go code whose goroutine is not known (before
    /// Go 1.17 it is the one the M runs when the batch is read, and the M
    /// may have switched since): its frames from the stack copy and the
    /// call chain, if they are whole and lead to a goroutine's root, with no
    /// goroutine's labels or id.
    fn stack_of_unknown_goroutine(&mut self, sample: &PerfSample, tid: u64) -> Option<Stack> {
        let copied = StackBounds {
            lo: sample.sp,
            hi: sample.sp.saturating_add(sample.stack.len() as u64),
        };
        let start = StartState {
            pc: sample.ip,
            sp: sample.sp,
            trap: true,
            stack: Some(copied),
            user_switch: None,
        };
        if !self.unwind_copy_and_chain(&start, sample) {
            return None;
        }
        let pclntab = &self.target.binary.pclntab;
        let root = self.physical.last()?;
        if pclntab.func_name(&root.func) != "runtime.goexit" {
            return None;
        }
        let physical = std::mem::take(&mut self.physical);
        let locations: Vec<u32> = physical.iter().filter_map(|p| self.location(p)).collect();
        self.physical = physical;
        let mut roots = Vec::new();
        if self.options.threads {
            roots.push(format!("thread {tid}").into());
        }
        if self.options.goroutines {
            roots.push(UNKNOWN_GOROUTINE_FRAME.into());
        }
        (!locations.is_empty()).then(|| Stack {
            roots,
            locations,
            state: None,
            labels: Default::default(),
        })
    }

    /// A vDSO sample's stack from its call chain (Go 1.17+, whose vDSO
    /// callers keep the frame pointer chain intact): the C frames from the
    /// stack copy, then the Go frames from the caller of the function that
    /// called the vDSO (`go`), where the runtime's own traceback starts
    /// (runtime/proc.go `sigprof`, `m.vdsoPC`). None if the chain is not
    /// whole.
    fn vdso_stack_from_chain(
        &mut self,
        sample: &PerfSample,
        go: GoReturn,
        g: &Goroutine,
        memory: &dyn Memory,
        tid: u64,
    ) -> Option<Stack> {
        let target = self.target;
        let chain = &sample.callchain;
        let first_go = chain.iter().position(|&pc| target.in_go_code(pc))?;
        let func_of = |pc: u64| {
            target
                .binary
                .pclntab
                .find_func(pc.wrapping_sub(target.bias).wrapping_sub(1))
                .map(|f| f.entry)
        };
        let mut rest = &chain[first_go..];
        // The function that called the vDSO, if its frame is in the chain.
        let caller = func_of(rest[0]);
        if caller.is_some() && caller == func_of(go.pc) {
            rest = &rest[1..];
        }
        self.physical.clear();
        if !self.unwinder.extend_with_returns(rest, &mut self.physical) {
            return None;
        }
        let mut locations = Vec::new();
        self.native_locations(&sample.registers(), memory, &mut locations);
        let mut g = g.clone();
        g.status = GStatus::Running;
        self.stack_of_physical(&g, StackEnd::Complete, Some(tid), true, locations)
    }

    /// For a sample in the vDSO, where the runtime's traceback starts too
    /// (`m.vdsoPC`/`vdsoSP`, runtime/proc.go `sigprof`): the caller of the
    /// Go function that called the vDSO (`runtime.nanotime1`, `time.now`,
    /// ...) as (return pc, its stack pointer, exact = false). That function
    /// switched to the system stack and keeps its own stack pointer in a
    /// register C code preserves (R12 since Go 1.17, BP before:
    /// runtime/sys_linux_amd64.s); `go` has the registers as the vDSO's CFI
    /// restored them. None if that stack pointer is on none of
    /// `on_known_stack`'s stacks (the goroutine moved on).
    fn vdso_caller(
        &self,
        go: GoReturn,
        g: &Goroutine,
        memory: &dyn Memory,
        on_known_stack: &dyn Fn(u64) -> bool,
    ) -> Option<(u64, u64, bool)> {
        let target = self.target;
        let pclntab = &target.binary.pclntab;
        let call = go.pc.wrapping_sub(target.bias).wrapping_sub(1);
        let func = pclntab.find_func(call)?;
        let frame = u64::try_from(pclntab.sp_delta(&func, call)?).ok()?;
        let registers = if target.binary.go_version.at_least(1, 17) {
            [go.r12, go.rbp]
        } else {
            [go.rbp, go.r12]
        };
        let registers = registers.into_iter().flatten();
        let own_sp = match registers.clone().find(|&sp| on_known_stack(sp)) {
            Some(sp) => sp,
            // The goroutine's small stack was copied since (grown, or
            // shrunk by a GC): its frames keep their distance from the top.
            None => {
                let now = StackBounds {
                    lo: g.stack_lo,
                    hi: g.stack_hi,
                };
                registers
                    .filter_map(|sp| moved_stack_address(sp, now))
                    .next()?
            }
        };
        let ret_slot = own_sp.checked_add(frame)?;
        let ret = memory.read_u64(ret_slot)?;
        target
            .in_go_code(ret)
            .then(|| (ret, ret_slot.wrapping_add(8), false))
    }

    /// A sample of C code called through cgo, whose C frames led back to
    /// `go`, a return into `runtime.asmcgocall`: None if `go` is elsewhere.
    ///
    /// asmcgocall left the goroutine's g on the system stack, in the
    /// sample's copy (runtime/asm_amd64.s): the sample is counted for that
    /// goroutine (its labels) under `[cgo call]`, with the C frames if
    /// `--native` asked for them.
    fn cgo_call_stack(
        &mut self,
        sample: &PerfSample,
        go: GoReturn,
        memory: &dyn Memory,
        tid: u64,
        read_g: &dyn Fn(u64) -> Option<Goroutine>,
    ) -> Option<Stack> {
        let target = self.target;
        let pclntab = &target.binary.pclntab;
        let func = pclntab.find_func(go.pc.wrapping_sub(target.bias))?;
        if !matches!(
            pclntab.func_name(&func),
            "runtime.asmcgocall" | "runtime.asmcgocall.abi0"
        ) {
            return None;
        }
        // The saved g is at +8 (+48 before Go 1.22, which kept 32 bytes of
        // Windows shadow space below it).
        let g_slot = if target.binary.go_version.at_least(1, 22) {
            8
        } else {
            48
        };
        let sp = go.sp?;
        let g = read_g(memory.read_u64(sp.checked_add(g_slot)?)?)?;
        let mut locations = Vec::new();
        self.native_locations(&sample.registers(), memory, &mut locations);
        // The goroutine's Go frames are not known: they are read live a
        // batch later, and by then the goroutine may be in another cgo call
        // at the same depth from other frames (seen: chainA's call where
        // the sample was in chainB's).
        let mut stack = self.stack_with(&g, Some(tid), locations, true);
        stack.roots.push(CGO_CALL_FRAME.into());
        Some(stack)
    }

    /// A sample of a thread running no goroutine: the runtime's frames on
    /// its system stack (when the sample is in Go code there) under
    /// [`NO_GOROUTINE_FRAME`].
    fn no_goroutine_stack(
        &mut self,
        sample: &PerfSample,
        in_go: bool,
        g0_stack: Option<StackBounds>,
        memory: &dyn Memory,
    ) -> Stack {
        let mut locations = Vec::new();
        if in_go && g0_stack.is_some_and(|s| s.contains(sample.sp)) {
            let start = StartState {
                pc: sample.ip,
                sp: sample.sp,
                trap: true,
                stack: g0_stack,
                user_switch: None,
            };
            self.unwinder
                .unwind_into(&start, memory, &mut self.physical);
            let physical = std::mem::take(&mut self.physical);
            locations.extend(physical.iter().filter_map(|p| self.location(p)));
            self.physical = physical;
        }
        Stack {
            roots: vec![NO_GOROUTINE_FRAME.into()],
            locations,
            state: None,
            labels: Arc::from(Vec::new()),
        }
    }

    /// Records a failed step without ending the recording.
    fn note_error(&mut self, e: Error) {
        self.profile.errors += 1;
        self.profile.last_error = Some(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Live memory: 8-byte words from `base`.
    struct Live {
        base: u64,
        words: Vec<u64>,
    }

    impl Memory for Live {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let Some(off) = addr.checked_sub(self.base).map(|o| o as usize) else {
                return false;
            };
            match bytes.get(off..off + buf.len()) {
                Some(b) => {
                    buf.copy_from_slice(b);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn call_chains_continue_the_frames_of_the_copy_where_they_line_up() {
        // Frames 0x10 (sampled pc), 0x20, 0x30; the chain goes on to 0x40, 0x50.
        let chain = [0x10, 0x20, 0x30, 0x40, 0x50];
        assert_eq!(
            chain_beyond(&[0x10, 0x20, 0x30], &chain),
            Some(&[0x40, 0x50][..])
        );
        // Sampled in a prologue: the chain lacks the caller 0x20.
        let lagging = [0x10, 0x30, 0x40, 0x50];
        assert_eq!(
            chain_beyond(&[0x10, 0x20, 0x30], &lagging),
            Some(&[0x40, 0x50][..])
        );
        // Nothing beyond: an empty rest.
        assert_eq!(
            chain_beyond(&[0x10, 0x20, 0x30, 0x40, 0x50], &chain),
            Some(&[][..])
        );
        // Frames that disagree with the chain, another sampled pc, or no
        // return address to line up with: no rest.
        assert_eq!(chain_beyond(&[0x10, 0x21, 0x31], &chain), None);
        assert_eq!(chain_beyond(&[0x11, 0x20], &chain), None);
        assert_eq!(chain_beyond(&[0x10], &chain), None);
        assert_eq!(chain_beyond(&[], &chain), None);
        assert_eq!(chain_beyond(&[0x10, 0x20], &[]), None);
    }

    #[test]
    fn batches_are_weighted_to_the_cpu_time_used_never_above_a_period() {
        // No steal: CPU time at least covers the samples, a period each.
        assert_eq!(batch_weight(1_050, 0, 10, 100), 100);
        // A third stolen: 15 samples of perf's clock for 1000 ns of CPU.
        let (mut written, mut used) = (0, 0);
        for _ in 0..10 {
            used += 1_000;
            written += 15 * batch_weight(used, written, 15, 100);
        }
        assert!((9_900..=10_000).contains(&written), "{written}");
        // A batch weighted low is made up by the next (10 ms /proc ticks).
        assert_eq!(batch_weight(1_000, 1_000, 10, 100), 0);
        assert_eq!(batch_weight(3_000, 1_000, 10, 100), 100);
        assert_eq!(batch_weight(5, 0, 0, 100), 5);
    }

    #[test]
    fn addresses_on_a_copied_stack_keep_their_distance_from_the_top() {
        let now = StackBounds {
            lo: 0x3000,
            hi: 0x4000,
        };
        // Same size, elsewhere: 0x148 below the old top is 0x148 below the new.
        assert_eq!(moved_stack_address(0x2eb8, now), Some(0x3eb8));
        // From an 8 KiB stack at 0x8000..0xa000, 0x200 below its top.
        assert_eq!(moved_stack_address(0x9e00, now), Some(0x3e00));
        // Large stacks are not size-aligned: no guess.
        let large = StackBounds {
            lo: 0x10_0000,
            hi: 0x12_0000,
        };
        assert_eq!(moved_stack_address(0x5_0000, large), None);
    }

    #[test]
    fn frames_beyond_the_copy_only_while_its_last_slot_is_unchanged() {
        let copy: Vec<u8> = [10u64, 11].iter().flat_map(|w| w.to_le_bytes()).collect();
        // Unchanged: the slot at 0x1008 still holds 11, so 0x1018 is served.
        let live = Live {
            base: 0x1000,
            words: vec![10, 11, 12, 13],
        };
        let mem = SampleMemory::new(0x1000, &copy, &live);
        assert_eq!(mem.read_u64(0x1008), Some(11));
        assert_eq!(mem.read_u64(0x1018), Some(13));
        // The goroutine returned past that frame: nothing beyond the copy.
        let moved = Live {
            base: 0x1000,
            words: vec![10, 99, 12, 13],
        };
        let mem = SampleMemory::new(0x1000, &copy, &moved);
        assert_eq!(mem.read_u64(0x1008), Some(11), "the copy is the sample");
        assert_eq!(mem.read_u64(0x1018), None);
        assert_eq!(mem.read_u64(0x1010), None);
        // Below sp (another stack) is always live.
        let other = Live {
            base: 0x800,
            words: vec![7],
        };
        let mem = SampleMemory::new(0x1000, &copy, &other);
        assert_eq!(mem.read_u64(0x800), Some(7));
    }
}
