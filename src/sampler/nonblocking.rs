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
//! With `--idle`, the goroutines that are not running are added at the
//! requested rate from snapshots read without a pause; those that move while
//! being read are left out of that sample.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Sampler, StopReason, Weight};
use crate::error::{Error, Result};
use crate::process::memory::Memory;
use crate::process::perf::{PerfSample, PerfSampler};
use crate::runtime::{GStatus, Goroutine, Machine};
use crate::snapshot::{self, SnapshotOptions};
use crate::target::Target;
use crate::unwind::{self, ThreadRegisters, ThreadView};

/// Bytes of stack the kernel copies per sample: the innermost frames (a
/// few dozen in typical Go code), at the cost of a copy in the target's
/// context per sample. 4 KiB rather than 8: in `cargo bench --bench record`
/// the target's slowdown at 1000 Hz fell from 1.4-1.7% to 0.6-0.9%, and a
/// ring holds twice the samples.
const STACK_COPY_BYTES: u32 = 4096;
/// How often the thread list (perf events) and the M list are refreshed.
const REFRESH_EVERY: Duration = Duration::from_millis(250);

/// The root frame of a sample taken in C code, in place of its Go frames,
/// which are not known without stopping the thread (`record --native`
/// without `--nonblocking` shows them); with `--native` the C frames follow.
pub const CGO_CALL_FRAME: &str = "[cgo call]";

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
            live,
            last_copied: Cell::new(None),
            beyond_ok: Cell::new(None),
        }
    }

    /// Whether the last word read from the copy still holds the same value
    /// in the live stack (true if nothing was read from the copy).
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
        if addr >= copy_end {
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

/// Perf-event samples of one target, counted into a [`Sampler`] batch by
/// batch: the loop of `record --nonblocking`, and `top --nonblocking` one
/// step at a time.
pub(super) struct PerfFeed {
    perf: PerfSampler,
    /// The sampling period (of each thread's CPU time).
    period: Duration,
    /// The target's Ms by thread id, refreshed every [`REFRESH_EVERY`].
    machines: HashMap<u64, Machine>,
    next_refresh: Instant,
    last_drain: Instant,
    samples: Vec<PerfSample>,
}

impl PerfFeed {
    /// Opens perf events on every thread of `target`, sampling each every
    /// `1/rate` s of its CPU time.
    pub(super) fn open(target: &Target, rate: f64) -> Result<PerfFeed> {
        let period_ns = ((1e9 / rate.max(0.001)) as u64).max(1);
        let now = Instant::now();
        Ok(PerfFeed {
            perf: PerfSampler::open(target.pid(), period_ns, STACK_COPY_BYTES)?,
            period: Duration::from_nanos(period_ns),
            machines: HashMap::new(),
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
            match snapshot::read_machines(target) {
                Ok(ms) => self.machines = ms.into_iter().map(|m| (m.tid, m)).collect(),
                Err(e) => sampler.note_error(e),
            }
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

    /// Counts the samples waiting in the rings.
    fn count_waiting(&mut self, sampler: &mut Sampler<'_>) {
        self.last_drain = Instant::now();
        self.samples.clear();
        self.perf.read_samples(&mut self.samples);
        for sample in &self.samples {
            sampler.count_perf_sample(sample, &self.machines, self.period.as_nanos() as u64);
        }
        sampler.profile.lost = self.perf.lost();
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
        let mut feed = PerfFeed::open(target, self.options.rate)?;
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

    /// Counts one perf sample as a sample of the goroutine its thread runs.
    /// Without `--idle` each perf sample is a sample; with it, the samples
    /// are the snapshots and a perf sample adds one running goroutine.
    fn count_perf_sample(
        &mut self,
        sample: &PerfSample,
        machines: &HashMap<u64, Machine>,
        period_ns: u64,
    ) {
        if !self.options.idle {
            self.profile.samples += 1;
        }
        let target = self.target;
        let layout = &target.binary.layout;
        let Some(m) = machines.get(&u64::from(sample.tid)) else {
            // A thread the runtime did not create (cgo) or not yet listed.
            return;
        };
        let mut g_bytes = vec![0u8; layout.g_read_len() as usize];
        let mut read_g = |addr: u64| {
            target
                .memory
                .read(addr, &mut g_bytes)
                .ok()
                .and_then(|()| Goroutine::decode(addr, &g_bytes, layout))
        };
        // Go code of Go 1.17+ keeps its g in r14: the goroutine that ran at
        // the sample, even if the thread has switched to another since; and
        // with the sampled sp on its stack, nothing else is needed (one
        // read). Elsewhere (runtime assembly, system stack, C, older Go) r14
        // is anything: the M is read for its current goroutine.
        let in_register = (target.binary.go_version.at_least(1, 17)
            && target.in_go_code(sample.ip)
            && ![0, m.g0, m.gsignal].contains(&sample.r14))
        .then(|| read_g(sample.r14))
        .flatten()
        .filter(|g| g.stack_contains(sample.sp) && !g.status.is_dead());
        let (mut g, machine) = match in_register {
            Some(g) => (g, m.clone()),
            None => {
                // The M now: its current goroutine and VDSO state.
                let mut m_bytes = vec![0u8; layout.m_read_len() as usize];
                let machine = target
                    .memory
                    .read(m.addr, &mut m_bytes)
                    .ok()
                    .and_then(|()| Machine::decode(m.addr, &m_bytes, layout));
                let Some(machine) = machine.filter(|m| m.curg != 0) else {
                    return; // on the system stack without a goroutine: runtime work
                };
                let Some(g) = read_g(machine.curg) else {
                    return;
                };
                (g, machine)
            }
        };
        let mut bounds = |addr: u64| read_g(addr)?.stack_bounds();
        // In C code (a cgo call, status syscall, on the system stack): the
        // Go frames below it are on the goroutine's stack, which the sample
        // did not copy and which may have moved on to another call by now.
        // The sample is counted, but under a frame that says so.
        if g.status == GStatus::Syscall
            && !g.stack_contains(sample.sp)
            && !target.in_go_code(sample.ip)
        {
            // The C frames are the sample's own: its registers and stack copy.
            let mut locations = Vec::new();
            let memory = SampleMemory::new(sample.sp, &sample.stack, &target.memory);
            self.native_locations(&sample.registers(), &memory, &mut locations);
            let mut stack = self.stack_with(&g, Some(machine.tid), locations, true);
            stack.roots.push(CGO_CALL_FRAME.into());
            self.count(stack, Weight::one(period_ns));
            return;
        }
        // The goroutine must still be the one that was sampled: the stack
        // pointer is on its stack, or on the thread's system stack (whose
        // bounds are needed only then).
        let on_own_stack = g.stack_contains(sample.sp);
        let g0_stack = if on_own_stack {
            None
        } else {
            bounds(machine.g0)
        };
        if !on_own_stack && !g0_stack.is_some_and(|s| s.contains(sample.sp)) {
            return;
        }
        // It was running when sampled, whatever it does now.
        g.status = GStatus::Running;
        let view = ThreadView {
            tid: machine.tid,
            regs: ThreadRegisters {
                pc: sample.ip,
                sp: sample.sp,
            },
            machine: &machine,
            g0_stack,
            gsignal_stack: if on_own_stack {
                None
            } else {
                bounds(machine.gsignal)
            },
        };
        let Ok(start) = unwind::start_state(&g, Some(&view)) else {
            return;
        };
        let memory = SampleMemory::new(sample.sp, &sample.stack, &target.memory);
        if let Some(stack) =
            self.stack_from(&g, &start, &memory, Some(machine.tid), true, Vec::new())
        {
            self.count(stack, Weight::one(period_ns));
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
