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

    /// Takes a snapshot of only the goroutines running on a CPU: step 1
    /// above, one short pause. This is what an on-CPU profile needs, at a
    /// cost independent of the goroutine count.
    ///
    /// To keep the pause short, the Ms, the goroutines they run and their
    /// system stacks are read before it, and only the threads running a
    /// goroutine are stopped (idle threads, sysmon and threads in system
    /// calls are not). While stopped, a thread whose stack pointer is on its
    /// goroutine's stack (it is that goroutine, running Go code) needs only
    /// its registers and the stack copied; any other case (system stack,
    /// VDSO, a goroutine switch in between) reads the Ms and goroutines
    /// again during the pause. A goroutine that starts running in the few
    /// microseconds before the pause is missed by this snapshot.
    ///
    /// A goroutine in a system call or cgo call whose thread is on a CPU
    /// (`/proc` state R: running C code, or busy in the kernel) is on-CPU
    /// too: its thread is stopped as well, its Go stack copied from
    /// `g.syscallsp`, and it is listed in [`Snapshot::on_cpu`]. With
    /// `native`, the registers and the top of the native stack of every
    /// stopped thread are kept too, for unwinding C frames.
    pub fn take_running(target: &Target, native: bool) -> Result<Snapshot> {
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
        let running: Vec<(&Machine, Goroutine, i32)> = machines
            .iter()
            .filter_map(|m| {
                let g = decode(m.curg)?;
                let tid = i32::try_from(m.tid).ok().filter(|&t| t > 0)?;
                let on_cpu = match g.status {
                    GStatus::Running => true,
                    GStatus::Syscall => target.thread_state(tid) == Some('R'),
                    _ => false,
                };
                on_cpu.then_some((m, g, tid))
            })
            .collect();
        let tids: Vec<i32> = running.iter().map(|&(_, _, tid)| tid).collect();

        let pause = ptrace::pause_threads(target.pid(), &tids)?;
        // The goroutines again, now that their threads are stopped: fields
        // such as the labels may have changed since the read above.
        let mut fresh_bytes = MemorySnapshot::new();
        for (_, g, _) in &running {
            fresh_bytes.request(g.addr, g_len);
        }
        let fetched = fresh_bytes.fetch(&target.memory);
        let mut stacks = MemorySnapshot::new();
        let mut state = RuntimeState::default();
        let mut fast = fetched.is_ok();
        for (m, before, tid) in &running {
            if !fast {
                break;
            }
            let Some(regs) = pause.registers(*tid) else {
                continue; // exited, or did not stop in time
            };
            let now = fresh_bytes
                .get(before.addr, g_len)
                .and_then(|b| Goroutine::decode(before.addr, b, layout));
            let Some(g) = now.filter(|g| {
                g.goid == before.goid
                    && g.status == before.status
                    && match g.status {
                        GStatus::Running => g.stack_contains(regs.rsp),
                        _ => g.syscall_sp == before.syscall_sp && g.stack_contains(g.syscall_sp),
                    }
            }) else {
                fast = false;
                break;
            };
            let g = &g;
            let g0_stack = bounds(m.g0);
            let gsignal_stack = bounds(m.gsignal);
            if g.status == GStatus::Running {
                let context = ThreadContext {
                    regs: ThreadRegisters {
                        pc: regs.rip,
                        sp: regs.rsp,
                    },
                    machine: (*m).clone(),
                    g0_stack,
                    gsignal_stack,
                };
                request_stack(&mut stacks, g, &[regs.rsp]);
                state.contexts.insert(g.addr, context);
            } else {
                request_stack(&mut stacks, g, &[g.syscall_sp]);
                state.on_cpu.insert(g.addr);
            }
            if native {
                keep_native_stack(
                    &mut stacks,
                    &mut state,
                    m.tid,
                    regs,
                    &[g0_stack, gsignal_stack],
                );
            }
            state.goroutines.push(g.clone());
        }
        let copied = if fast {
            state.machines = machines.clone();
            stacks.fetch(&target.memory).map(|_| state)
        } else {
            // Some thread switched goroutines meanwhile: the general path,
            // which reads the Ms again.
            stacks = MemorySnapshot::new();
            copy_running(target, &pause, &mut stacks)
                .map(|mut state| {
                    let stopped: Vec<u64> = tids.iter().map(|&t| t as u64).collect();
                    for m in &state.machines {
                        if stopped.contains(&m.tid) {
                            let on_cpu = state
                                .goroutines
                                .iter()
                                .find(|g| g.addr == m.curg && g.status == GStatus::Syscall);
                            if let Some(g) = on_cpu {
                                state.on_cpu.insert(g.addr);
                            }
                        }
                    }
                    if native {
                        for m in state.machines.clone() {
                            let regs = i32::try_from(m.tid).ok().and_then(|t| pause.registers(t));
                            if let Some(regs) = regs.filter(|_| m.curg != 0) {
                                let system = [bounds(m.g0), bounds(m.gsignal)];
                                keep_native_stack(&mut stacks, &mut state, m.tid, regs, &system);
                            }
                        }
                    }
                    state
                })
                .and_then(|state| stacks.fetch(&target.memory).map(|_| state))
        };
        let paused_for = pause.resume();
        let mut state = copied?;
        state.monotonic_ns = monotonic_now_ns();
        Ok(state.into_snapshot(
            StackMemory {
                first: stacks,
                recopied: MemorySnapshot::new(),
            },
            Some(paused_for),
            PcSet::default(),
        ))
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
        if let Some(g0) = c.g0_stack.filter(|s| s.contains(c.regs.sp)) {
            stacks.request(
                c.regs.sp,
                (g0.hi - c.regs.sp).min(MAX_SYSTEM_STACK_COPY) as usize,
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
