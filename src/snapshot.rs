//! A copy of the target's goroutines, threads and stacks, taken with the
//! target stopped for as short a time as possible.
//!
//! 1. While the target is paused: every M, the goroutines they run (running
//!    or in a system call), the thread registers and those goroutines'
//!    stacks: a handful of small reads, whatever the number of goroutines.
//! 2. With the target running again: `allgs`, every `g` and the stacks of
//!    the parked goroutines, each in one batched `process_vm_readv`. A parked
//!    goroutine's frames cannot change until it runs, so the gs are read
//!    once more afterwards; a goroutine whose status or saved stack pointers
//!    moved in between, or that was running, is
//! 3. copied again in a second, short pause (with `--nonblocking`: reported
//!    as unreadable instead).
//!
//! So each goroutine's stack is exact for one moment of the dump, and the
//! pause does not grow with the number of goroutines. Decoding and
//! unwinding happen afterwards.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::memory::{Memory, MemorySnapshot};
use crate::process::ptrace::{self, Pause};
use crate::runtime::{GStatus, Goroutine, Machine};
use crate::target::Target;
use crate::unwind::{PcSet, StackBounds, ThreadRegisters, ThreadView};

/// More goroutines than this in `allgs` means the slice header was misread.
const MAX_GOROUTINES: u64 = 20_000_000;
/// More Ms than this in `allm` means the list was misread (or is cyclic).
const MAX_MACHINES: usize = 100_000;
/// Largest part of one goroutine stack copied (a stack can grow to 1 GB).
const MAX_STACK_COPY: u64 = 16 << 20;
/// Largest part of a system (g0) stack copied.
const MAX_SYSTEM_STACK_COPY: u64 = 1 << 20;

/// How to take a snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotOptions {
    /// Read without stopping the target (`--nonblocking`): goroutines that
    /// change while being read are reported as unstable.
    pub nonblocking: bool,
    /// Also keep every stopped thread's registers and copy the top of its
    /// own (native) stack, for unwinding C frames (`--native`).
    pub native: bool,
}

/// How much of a thread's native stack is copied for `--native`: C frames
/// of a cgo call rarely go deeper.
const NATIVE_STACK_COPY: u64 = 64 << 10;

/// The thread a running goroutine was on when its stack was copied.
#[derive(Debug, Clone)]
pub struct ThreadContext {
    pub regs: ThreadRegisters,
    pub machine: Machine,
    pub g0_stack: Option<StackBounds>,
    pub gsignal_stack: Option<StackBounds>,
}

/// Everything read from the target.
pub struct Snapshot {
    /// Every goroutine in `allgs` that is not dead.
    pub goroutines: Vec<Goroutine>,
    /// Every M in `allm`.
    pub machines: Vec<Machine>,
    /// For goroutines running on a stopped thread, by `g` address.
    pub contexts: HashMap<u64, ThreadContext>,
    /// The copied stack memory.
    pub stacks: StackMemory,
    /// How long the target was stopped in all (`None` with `nonblocking`).
    pub pause: Option<Duration>,
    /// CLOCK_MONOTONIC at the snapshot, comparable with `g.waitsince`.
    pub monotonic_ns: i64,
    /// Goroutines (by `g` address) that changed while being read without a
    /// pause; their stacks cannot be trusted.
    pub unstable: PcSet<u64>,
    /// With [`SnapshotOptions::native`]: the registers of every thread
    /// stopped in the first pause, by thread id (their stacks are in
    /// `stacks`).
    pub native_registers: HashMap<u64, crate::process::ptrace::Registers>,
    /// Goroutines (by `g` address) in a system call or cgo call whose
    /// thread was on a CPU ([`Snapshot::take_running`] only).
    pub on_cpu: PcSet<u64>,
}

impl Snapshot {
    /// Takes a snapshot of `target`.
    pub fn take(target: &Target, options: SnapshotOptions) -> Result<Snapshot> {
        Snapshot::take_with(target, options, &|_| true)
    }

    /// Like [`Snapshot::take`], but copies the stack of a goroutine that is
    /// not running only if `needs_stack` says so: a sampler that already
    /// unwound a goroutine parked in the same place skips it.
    pub fn take_with(
        target: &Target,
        options: SnapshotOptions,
        needs_stack: &dyn Fn(&Goroutine) -> bool,
    ) -> Result<Snapshot> {
        let mem = &target.memory;
        let blocking = !options.nonblocking;

        let mut stacks = MemorySnapshot::new();
        let (mut state, mut paused_for) = if blocking {
            let (state, paused_for) = pause_and_copy_running(target, &mut stacks, options.native)?;
            (state, Some(paused_for))
        } else {
            (RuntimeState::default(), None)
        };
        state.monotonic_ns = monotonic_now_ns();

        // The target runs again: every goroutine, and parked ones' stacks.
        let captured: PcSet<u64> = state.goroutines.iter().map(|g| g.addr).collect();
        let mut g_bytes = MemorySnapshot::new();
        let others: Vec<Goroutine> = read_goroutines(target, &mut g_bytes)?
            .into_iter()
            .filter(|g| !captured.contains(&g.addr))
            .collect();
        drop(g_bytes);
        let mut changed: PcSet<u64> = PcSet::default();
        // A running goroutine caught inside a signal handler (async
        // preemption's SIGURG, SIGPROF) cannot be unwound from there, and
        // handlers are short: copy it again in the second pause.
        for (&addr, c) in &state.contexts {
            if c.gsignal_stack.is_some_and(|s| s.contains(c.regs.sp)) {
                changed.insert(addr);
            }
        }
        let mut copied = Vec::new();
        for g in &others {
            if is_running(g) {
                changed.insert(g.addr);
            } else if needs_stack(g) {
                request_stack(&mut stacks, g, &[g.sched_sp, g.syscall_sp]);
                copied.push(g.clone());
            }
        }
        stacks.fetch(mem)?;
        changed.extend(changed_goroutines(target, &copied)?);
        state.goroutines.extend(others);

        let mut recopied = MemorySnapshot::new();
        let mut unstable = PcSet::default();
        if !changed.is_empty() {
            if blocking {
                let pause = ptrace::pause(target.pid())?;
                let result = recopy(target, &pause, &changed, &mut state, &mut recopied);
                let second = pause.resume();
                paused_for = paused_for.map(|first| first + second);
                result?;
            } else {
                unstable = changed;
            }
        }

        Ok(state.into_snapshot(
            StackMemory {
                first: stacks,
                recopied,
            },
            paused_for,
            unstable,
        ))
    }

    /// Every thread the runtime knows (its Ms) with the goroutine it runs,
    /// if any, read without stopping anything: the candidates for an
    /// on-CPU sample. The caller picks the ones that use a CPU and passes
    /// them to [`Snapshot::take_on_cpu`].
    pub fn running_threads(target: &Target) -> Result<Vec<RunningThread>> {
        let layout = &target.binary.layout;
        let g_len = layout.g_read_len() as usize;
        let machines = read_machines(target)?;
        let mut g_bytes = MemorySnapshot::new();
        for m in &machines {
            for addr in [m.curg, m.g0, m.gsignal] {
                if addr != 0 {
                    g_bytes.request(addr, g_len);
                }
            }
        }
        g_bytes.fetch(&target.memory)?;
        let decode = |addr: u64| {
            g_bytes
                .get(addr, g_len)
                .and_then(|b| Goroutine::decode(addr, b, layout))
        };
        let bounds = |addr: u64| decode(addr)?.stack_bounds();
        Ok(machines
            .iter()
            .filter_map(|m| {
                let tid = i32::try_from(m.tid).ok().filter(|&t| t > 0)?;
                let goroutine = match m.curg {
                    0 => None,
                    curg => Some(decode(curg).filter(|g| !g.status.is_dead())?),
                };
                Some(RunningThread {
                    tid,
                    machine: m.clone(),
                    goroutine,
                    g0_stack: bounds(m.g0),
                    gsignal_stack: bounds(m.gsignal),
                })
            })
            .collect())
    }

    /// Takes a snapshot of the goroutines on the threads `threads` (from
    /// [`Snapshot::running_threads`]): each thread is stopped on its own,
    /// its registers, goroutine and stack copied, and let go at once, so a
    /// thread is stopped for tens of microseconds whatever the others do.
    /// A thread that has not stopped by `budget` is not on a CPU (runnable,
    /// waiting for one or throttled by a CPU quota) and is left out.
    ///
    /// A goroutine in a system call or cgo call (running C code, or busy in
    /// the kernel) gets its Go stack copied from `g.syscallsp` and is listed
    /// in [`Snapshot::on_cpu`]. With `native`, the registers and the top of
    /// the native stack of every stopped thread are kept too, for unwinding
    /// C frames.
    pub fn take_on_cpu(
        target: &Target,
        threads: &[RunningThread],
        native: bool,
        budget: Duration,
    ) -> Result<OnCpuSnapshot> {
        let tids: Vec<i32> = threads.iter().map(|t| t.tid).collect();
        let mut stacks = MemorySnapshot::new();
        let mut state = RuntimeState::default();
        let mut stops = ptrace::ThreadStops::interrupt(target.pid(), &tids)?;
        let deadline = std::time::Instant::now() + budget;
        let mut stopped = Vec::new();
        while let Some((tid, regs)) = stops.next_stopped(deadline) {
            let copied = threads
                .iter()
                .find(|t| t.tid == tid)
                .map(|t| copy_stopped_thread(target, t, &regs, native, &mut stacks, &mut state))
                .unwrap_or(Ok(()))
                .and_then(|()| stacks.fetch(&target.memory).map(|_| ()));
            stops.release(tid);
            copied?;
            stopped.push(tid);
        }
        let paused = stops.finish();
        state.monotonic_ns = monotonic_now_ns();
        Ok(OnCpuSnapshot {
            snapshot: state.into_snapshot(
                StackMemory {
                    first: stacks,
                    recopied: MemorySnapshot::new(),
                },
                Some(paused),
                PcSet::default(),
            ),
            stopped,
        })
    }

    /// The stopped thread `g` was running on, if it was running.
    pub fn thread_view(&self, g: &Goroutine) -> Option<ThreadView<'_>> {
        let c = self.contexts.get(&g.addr)?;
        Some(ThreadView {
            tid: c.machine.tid,
            regs: c.regs,
            machine: &c.machine,
            g0_stack: c.g0_stack,
            gsignal_stack: c.gsignal_stack,
        })
    }
}

/// Stack memory copied in the first pass, overlaid by what was copied again
/// for goroutines that changed meanwhile.
pub struct StackMemory {
    first: MemorySnapshot,
    recopied: MemorySnapshot,
}

impl Memory for StackMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.recopied.read(addr, buf) || self.first.read(addr, buf)
    }
}

/// What the paused pass found.
#[derive(Default)]
struct RuntimeState {
    goroutines: Vec<Goroutine>,
    machines: Vec<Machine>,
    contexts: HashMap<u64, ThreadContext>,
    monotonic_ns: i64,
    native_registers: HashMap<u64, crate::process::ptrace::Registers>,
    on_cpu: PcSet<u64>,
}

/// A thread running a goroutine, as read before any stop.
#[derive(Debug, Clone)]
pub struct RunningThread {
    pub tid: i32,
    pub machine: Machine,
    /// The goroutine the M runs (`m.curg`), in any live status: one that
    /// stops the world is waiting while its thread works for it. None for
    /// an M in the scheduler, idle or running runtime work of its own.
    pub goroutine: Option<Goroutine>,
    pub g0_stack: Option<StackBounds>,
    pub gsignal_stack: Option<StackBounds>,
}

/// What [`Snapshot::take_on_cpu`] took. `snapshot.pause` is the
/// thread-time the stopped threads spent stopped, summed.
pub struct OnCpuSnapshot {
    pub snapshot: Snapshot,
    /// Threads that stopped and were copied; `snapshot.machines` holds
    /// their Ms, as read while they were stopped where that was needed.
    pub stopped: Vec<i32>,
}

/// Copies, while `thread` is stopped with `regs`, the goroutine it runs and
/// its stack. The goroutine read before the stop is checked again; if the
/// thread switched goroutines meanwhile, or runs on its system stack or in
/// the VDSO, its M is read again for the current one.
fn copy_stopped_thread(
    target: &Target,
    thread: &RunningThread,
    regs: &ptrace::Registers,
    native: bool,
    stacks: &mut MemorySnapshot,
    state: &mut RuntimeState,
) -> Result<()> {
    let layout = &target.binary.layout;
    let g_len = layout.g_read_len() as usize;
    let mem = &target.memory;
    let read_g = |addr: u64| -> Result<Option<Goroutine>> {
        let mut buf = vec![0u8; g_len];
        mem.read(addr, &mut buf)?;
        Ok(Goroutine::decode(addr, &buf, layout))
    };
    let mut machine = thread.machine.clone();
    let mut g = match &thread.goroutine {
        Some(before) => read_g(before.addr)?.filter(|g| {
            g.goid == before.goid
                && g.status == before.status
                && match g.status {
                    GStatus::Running => g.stack_contains(regs.rsp),
                    GStatus::Syscall => {
                        g.syscall_sp == before.syscall_sp && g.stack_contains(g.syscall_sp)
                    }
                    _ => false,
                }
        }),
        None => None,
    };
    if g.is_none() {
        // Another goroutine, the system stack or the VDSO: the M says which
        // goroutine, and where its Go frames are.
        let mut buf = vec![0u8; layout.m_read_len() as usize];
        mem.read(machine.addr, &mut buf)?;
        if let Some(mut m) = Machine::decode(machine.addr, &buf, layout) {
            m.tid = machine.tid;
            machine = m;
        }
        if machine.curg != 0 {
            g = read_g(machine.curg)?.filter(|g| !g.status.is_dead());
        }
    }
    state.machines.push(machine.clone());
    let Some(mut g) = g else {
        return Ok(()); // in the scheduler, between goroutines
    };
    // The thread runs code for its goroutine whatever the status says: a
    // goroutine that stops the world, or is being parked, is "waiting"
    // while its thread works on the system stack for it.
    if g.status != GStatus::Syscall {
        g.status = GStatus::Running;
    }
    let system = [thread.g0_stack, thread.gsignal_stack];
    if g.status == GStatus::Running {
        let context = ThreadContext {
            regs: ThreadRegisters {
                pc: regs.rip,
                sp: regs.rsp,
            },
            machine,
            g0_stack: thread.g0_stack,
            gsignal_stack: thread.gsignal_stack,
        };
        copy_stack_candidates(stacks, &g, Some(&context));
        state.contexts.insert(g.addr, context);
    } else {
        request_stack(stacks, &g, &[g.syscall_sp]);
        state.on_cpu.insert(g.addr);
    }
    if native {
        keep_native_stack(stacks, state, thread.machine.tid, regs, &system);
    }
    state.goroutines.push(g);
    Ok(())
}

/// Goroutines whose stack changes while the target runs: their stacks are
/// only copied while it is paused.
fn is_running(g: &Goroutine) -> bool {
    matches!(g.status, GStatus::Running | GStatus::Copystack)
}

/// Checks that goroutines read with the target's layout look like
/// goroutines: start functions and parked pcs in Go code, known statuses,
/// positive distinct goids, sane stack bounds.
/// For layouts that are only the nearest known one.
pub(crate) fn check_layout(target: &Target) -> std::result::Result<(), String> {
    let mut g_bytes = MemorySnapshot::new();
    let gs = read_goroutines(target, &mut g_bytes).map_err(|e| e.to_string())?;
    if gs.is_empty() {
        return Err("no live goroutine in runtime.allgs".into());
    }
    // Where a goroutine starts and where a parked one stopped must be Go
    // code, and its saved stack pointer on its stack. A few may be caught
    // changing (nothing is paused here), so most, not all, must agree.
    let pclntab = &target.binary.pclntab;
    let checked: Vec<&Goroutine> = gs.iter().take(1000).collect();
    let consistent = checked
        .iter()
        .filter(|g| {
            let starts_in_go = pclntab
                .find_func(g.start_pc.wrapping_sub(target.bias))
                .is_some_and(|f| f.entry == g.start_pc.wrapping_sub(target.bias));
            let parked_in_go = !matches!(g.status, GStatus::Waiting | GStatus::Runnable)
                || (g.stack_contains(g.sched_sp) && target.in_go_code(g.sched_pc));
            starts_in_go && parked_in_go
        })
        .count();
    if consistent * 10 < checked.len() * 9 {
        return Err(format!(
            "only {consistent} of {} goroutines start in Go code and are parked on their stacks",
            checked.len()
        ));
    }
    let mut goids = PcSet::default();
    for g in checked {
        let stack = g.stack_hi.wrapping_sub(g.stack_lo);
        if let GStatus::Unknown(raw) = g.status {
            return Err(format!("goroutine at {:#x} has status {raw}", g.addr));
        }
        if g.goid == 0 || !goids.insert(g.goid) {
            return Err(format!("goroutine at {:#x} has goid {}", g.addr, g.goid));
        }
        if g.stack_lo >= g.stack_hi || !stack.is_power_of_two() || stack < 2048 {
            return Err(format!(
                "goroutine {} has stack [{:#x}, {:#x})",
                g.goid, g.stack_lo, g.stack_hi
            ));
        }
    }
    Ok(())
}

/// Reads the `allgs` slice header: array address and length.
fn read_allgs(target: &Target) -> Result<(u64, u64)> {
    let mut header = [0u8; 16];
    target.memory.read(
        target.binary.layout.globals.allgs + target.bias,
        &mut header,
    )?;
    let array = u64::from_le_bytes(header[0..8].try_into().unwrap_or_default());
    let count = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    if count > MAX_GOROUTINES || (count > 0 && array == 0) {
        return Err(Error::Other(format!(
            "runtime.allgs looks corrupt (len {count}, ptr {array:#x}); is the Go version supported?"
        )));
    }
    Ok((array, count))
}

/// Reads every live goroutine: the `allgs` array, then all gs in one batch.
fn read_goroutines(target: &Target, g_bytes: &mut MemorySnapshot) -> Result<Vec<Goroutine>> {
    let layout = &target.binary.layout;
    let (array, count) = read_allgs(target)?;
    let pointers = target.memory.read_vec(array, count as usize * 8)?;
    let g_addrs: Vec<u64> = pointers
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .filter(|&a| a != 0)
        .collect();
    let g_len = layout.g_read_len() as usize;
    for &addr in &g_addrs {
        g_bytes.request(addr, g_len);
    }
    g_bytes.fetch(&target.memory)?;
    Ok(g_addrs
        .iter()
        .filter_map(|&addr| Goroutine::decode(addr, g_bytes.get(addr, g_len)?, layout))
        .filter(|g| !g.status.is_dead())
        .collect())
}

impl RuntimeState {
    fn into_snapshot(
        self,
        stacks: StackMemory,
        pause: Option<Duration>,
        unstable: PcSet<u64>,
    ) -> Snapshot {
        Snapshot {
            goroutines: self.goroutines,
            machines: self.machines,
            contexts: self.contexts,
            stacks,
            pause,
            monotonic_ns: self.monotonic_ns,
            unstable,
            native_registers: self.native_registers,
            on_cpu: self.on_cpu,
        }
    }
}

/// Pauses the target for [`copy_running`] and resumes it, whatever happens;
/// returns how long it was stopped.
fn pause_and_copy_running(
    target: &Target,
    stacks: &mut MemorySnapshot,
    native: bool,
) -> Result<(RuntimeState, Duration)> {
    // Where each native stack ends, read before the pause.
    let maps = if native {
        target.process.maps()?
    } else {
        Vec::new()
    };
    let pause = ptrace::pause(target.pid())?;
    let copied = copy_running(target, &pause, stacks).map(|mut state| {
        if native {
            copy_native_stacks(&pause, &maps, stacks, &mut state);
        }
        state
    });
    let copied = match copied {
        Ok(state) => stacks.fetch(&target.memory).map(|_| state),
        Err(e) => Err(e),
    };
    let paused_for = pause.resume();
    Ok((copied?, paused_for))
}

/// Keeps the registers of every stopped thread that runs a goroutine and
/// queues the top of its stack (up to the end of the mapping it is in) for
/// copying.
fn copy_native_stacks(
    pause: &Pause,
    maps: &[crate::process::MapEntry],
    stacks: &mut MemorySnapshot,
    state: &mut RuntimeState,
) {
    // Only threads running a goroutine can show C frames above Go ones.
    let busy: Vec<u64> = state
        .machines
        .iter()
        .filter(|m| m.curg != 0)
        .map(|m| m.tid)
        .collect();
    for thread in pause.threads() {
        let Some(regs) = &thread.regs else { continue };
        let Some(tid) = u64::try_from(thread.tid).ok().filter(|t| busy.contains(t)) else {
            continue;
        };
        let mapping = maps
            .iter()
            .find(|m| m.start <= regs.rsp && regs.rsp < m.end)
            .map(|m| StackBounds {
                lo: m.start,
                hi: m.end,
            });
        keep_native_stack(stacks, state, tid, regs, &[mapping]);
    }
}

/// Keeps the registers of stopped thread `tid` for native unwinding and
/// queues the top of its stack: from rsp to the end of the first of
/// `system_stacks` holding it (at most [`NATIVE_STACK_COPY`]). A thread on
/// its goroutine's own stack has that copied already.
fn keep_native_stack(
    stacks: &mut MemorySnapshot,
    state: &mut RuntimeState,
    tid: u64,
    regs: &crate::process::ptrace::Registers,
    system_stacks: &[Option<StackBounds>],
) {
    state.native_registers.insert(tid, *regs);
    if let Some(s) = system_stacks
        .iter()
        .flatten()
        .find(|s| s.contains(regs.rsp))
    {
        stacks.request(regs.rsp, (s.hi - regs.rsp).min(NATIVE_STACK_COPY) as usize);
    }
}

/// The paused pass: every M, the goroutines they run, their registers and
/// stacks (and the system stacks the threads are on).
fn copy_running(
    target: &Target,
    pause: &Pause,
    stacks: &mut MemorySnapshot,
) -> Result<RuntimeState> {
    let layout = &target.binary.layout;
    let g_len = layout.g_read_len() as usize;
    let machines = read_machines(target)?;
    let mut g_bytes = MemorySnapshot::new();
    for m in machines.iter().filter(|m| m.curg != 0) {
        g_bytes.request(m.curg, g_len);
    }
    g_bytes.fetch(&target.memory)?;
    let mut goroutines: Vec<Goroutine> = machines
        .iter()
        .filter_map(|m| Goroutine::decode(m.curg, g_bytes.get(m.curg, g_len)?, layout))
        .filter(|g| !g.status.is_dead())
        .collect();
    goroutines.sort_by_key(|g| g.addr);
    goroutines.dedup_by_key(|g| g.addr);
    let contexts = thread_contexts(target, Some(pause), &machines, &goroutines)?;
    for g in &goroutines {
        copy_stack_candidates(stacks, g, contexts.get(&g.addr));
    }
    stacks.fetch(&target.memory)?;
    Ok(RuntimeState {
        goroutines,
        machines,
        contexts,
        ..RuntimeState::default()
    })
}

/// Queues the live part of `g`'s stack (and of the system stack its thread
/// is on) for copying.
fn copy_stack_candidates(
    stacks: &mut MemorySnapshot,
    g: &Goroutine,
    context: Option<&ThreadContext>,
) {
    let mut candidates = vec![g.sched_sp, g.syscall_sp];
    if let Some(c) = context {
        candidates.push(c.machine.vdso_sp);
        candidates.push(c.regs.sp);
        let system = [c.g0_stack, c.gsignal_stack];
        if let Some(s) = system.iter().flatten().find(|s| s.contains(c.regs.sp)) {
            stacks.request(
                c.regs.sp,
                (s.hi - c.regs.sp).min(MAX_SYSTEM_STACK_COPY) as usize,
            );
        }
    }
    request_stack(stacks, g, &candidates);
}

/// Queues `g`'s stack from the lowest of `sps` that lies on it to its top.
fn request_stack(stacks: &mut MemorySnapshot, g: &Goroutine, sps: &[u64]) {
    if let Some(sp) = sps.iter().copied().filter(|&sp| g.stack_contains(sp)).min() {
        stacks.request(sp, (g.stack_hi - sp).min(MAX_STACK_COPY) as usize);
    }
}

/// For each running goroutine on a stopped thread: registers, its M, and
/// the bounds of the M's system and signal stacks.
fn thread_contexts(
    target: &Target,
    pause: Option<&Pause>,
    machines: &[Machine],
    goroutines: &[Goroutine],
) -> Result<HashMap<u64, ThreadContext>> {
    let Some(pause) = pause else {
        return Ok(HashMap::new());
    };
    let layout = &target.binary.layout;
    let g_len = layout.g_read_len() as usize;
    let running: Vec<(&Goroutine, &Machine)> = goroutines
        .iter()
        .filter(|g| g.status == GStatus::Running)
        .filter_map(|g| Some((g, machines.iter().find(|m| m.addr == g.m)?)))
        .collect();
    let mut system_g = MemorySnapshot::new();
    for (_, m) in &running {
        for addr in [m.g0, m.gsignal] {
            if addr != 0 {
                system_g.request(addr, g_len);
            }
        }
    }
    system_g.fetch(&target.memory)?;
    let bounds_of =
        |addr: u64| Goroutine::decode(addr, system_g.get(addr, g_len)?, layout)?.stack_bounds();
    Ok(running
        .into_iter()
        .filter_map(|(g, m)| {
            let regs = pause.registers(i32::try_from(m.tid).ok()?)?;
            Some((
                g.addr,
                ThreadContext {
                    regs: ThreadRegisters {
                        pc: regs.rip,
                        sp: regs.rsp,
                    },
                    machine: m.clone(),
                    g0_stack: bounds_of(m.g0),
                    gsignal_stack: bounds_of(m.gsignal),
                },
            ))
        })
        .collect())
}

/// The goroutines (by `g` address) whose status or saved stack pointers
/// differ from `before` when read again.
fn changed_goroutines(target: &Target, before: &[Goroutine]) -> Result<PcSet<u64>> {
    let layout = &target.binary.layout;
    let g_len = layout.g_read_len() as usize;
    let mut again = MemorySnapshot::new();
    for g in before {
        again.request(g.addr, g_len);
    }
    again.fetch(&target.memory)?;
    Ok(before
        .iter()
        .filter(|g| {
            let now = again
                .get(g.addr, g_len)
                .and_then(|bytes| Goroutine::decode(g.addr, bytes, layout));
            !now.is_some_and(|now| same_place(g, &now))
        })
        .map(|g| g.addr)
        .collect())
}

/// Whether a goroutine read twice is parked in the same place: then its
/// stack copy taken in between is its stack.
fn same_place(a: &Goroutine, b: &Goroutine) -> bool {
    a.goid == b.goid
        && a.status == b.status
        && a.stack_lo == b.stack_lo
        && a.sched_sp == b.sched_sp
        && a.sched_pc == b.sched_pc
        && a.syscall_sp == b.syscall_sp
        && a.syscall_pc == b.syscall_pc
}

/// The second pause: re-reads the goroutines in `changed`, replaces them in
/// `state`, and copies their stacks again into `recopied`.
fn recopy(
    target: &Target,
    pause: &Pause,
    changed: &PcSet<u64>,
    state: &mut RuntimeState,
    recopied: &mut MemorySnapshot,
) -> Result<()> {
    let layout = &target.binary.layout;
    let g_len = layout.g_read_len() as usize;
    let mut g_bytes = MemorySnapshot::new();
    for &addr in changed {
        g_bytes.request(addr, g_len);
    }
    g_bytes.fetch(&target.memory)?;
    let fresh: Vec<Goroutine> = changed
        .iter()
        .filter_map(|&addr| Goroutine::decode(addr, g_bytes.get(addr, g_len)?, layout))
        .collect();
    let machines = read_machines(target)?;
    let contexts = thread_contexts(target, Some(pause), &machines, &fresh)?;
    for g in &fresh {
        copy_stack_candidates(recopied, g, contexts.get(&g.addr));
    }
    recopied.fetch(&target.memory)?;

    // Replace the stale entries; drop goroutines that exited meanwhile.
    let by_addr: HashMap<u64, Goroutine> = fresh.into_iter().map(|g| (g.addr, g)).collect();
    state.goroutines.retain_mut(|g| match by_addr.get(&g.addr) {
        Some(now) if !now.status.is_dead() => {
            *g = now.clone();
            true
        }
        Some(_) => false,
        None => !changed.contains(&g.addr),
    });
    for addr in changed {
        state.contexts.remove(addr);
    }
    state.contexts.extend(contexts);
    for m in machines {
        match state.machines.iter_mut().find(|old| old.addr == m.addr) {
            Some(old) => *old = m,
            None => state.machines.push(m),
        }
    }
    Ok(())
}

/// Walks `runtime.allm` (newest first, linked by `m.alllink`).
pub(crate) fn read_machines(target: &Target) -> Result<Vec<Machine>> {
    let layout = &target.binary.layout;
    let mem = &target.memory;
    let m_len = layout.m_read_len() as usize;
    let mut machines = Vec::new();
    let mut addr = mem.read_u64(layout.globals.allm + target.bias)?;
    let mut buf = vec![0u8; m_len];
    while addr != 0 && machines.len() < MAX_MACHINES {
        mem.read(addr, &mut buf)?;
        let Some(mut m) = Machine::decode(addr, &buf, layout) else {
            break;
        };
        addr = m.alllink;
        m.tid = target.host_tid(m.tid);
        machines.push(m);
    }
    Ok(machines)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the Go runtime's `nanotime`.
pub fn monotonic_now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}
