//! A consistent copy of the target's goroutines, threads and stacks.
//!
//! The target is paused (unless `--nonblocking`) only while raw bytes are
//! copied: the `allgs` array, every `g`, every `m`, the thread registers and
//! the live part of every stack, each step one batched `process_vm_readv`.
//! Decoding and unwinding happen after it runs again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::memory::MemorySnapshot;
use crate::process::ptrace;
use crate::runtime::{GStatus, Goroutine, Machine};
use crate::target::Target;
use crate::unwind::{StackBounds, ThreadRegisters};

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
    /// Read without stopping the target (`--nonblocking`): faster for the
    /// target, but what is read may be torn; the unwinder validates it.
    pub nonblocking: bool,
}

/// Everything read from the target at one moment.
pub struct Snapshot {
    /// Every goroutine in `allgs` that is not dead.
    pub goroutines: Vec<Goroutine>,
    /// Every M in `allm`.
    pub machines: Vec<Machine>,
    /// Registers of every stopped thread, by TID.
    pub threads: HashMap<u64, ThreadRegisters>,
    /// System (g0) and signal stacks of each M, by M address.
    pub system_stacks: HashMap<u64, (Option<StackBounds>, Option<StackBounds>)>,
    /// The copied stack memory.
    pub stacks: MemorySnapshot,
    /// How long the target was stopped (`None` with `nonblocking`).
    pub pause: Option<Duration>,
    /// CLOCK_MONOTONIC at the snapshot, comparable with `g.waitsince`.
    pub monotonic_ns: i64,
    /// Goroutines (by `g` address) whose state changed while they were
    /// being read without a pause; their stacks cannot be trusted.
    pub unstable: HashSet<u64>,
}

impl Snapshot {
    /// Takes a snapshot of `target`.
    pub fn take(target: &Target, options: SnapshotOptions) -> Result<Snapshot> {
        let pause = if options.nonblocking {
            None
        } else {
            Some(ptrace::pause(target.pid())?)
        };
        let started = Instant::now();
        let result = copy_runtime_state(target, pause.as_ref());
        let paused_for = pause.map(|p| p.resume());
        let mut snapshot = result?;
        snapshot.pause = paused_for.or(if options.nonblocking {
            None
        } else {
            Some(started.elapsed())
        });
        Ok(snapshot)
    }

    /// The M with address `addr`.
    pub fn machine(&self, addr: u64) -> Option<&Machine> {
        self.machines.iter().find(|m| m.addr == addr)
    }
}

fn copy_runtime_state(target: &Target, pause: Option<&ptrace::Pause>) -> Result<Snapshot> {
    let layout = &target.binary.layout;
    let mem = &target.memory;
    let monotonic_ns = monotonic_now_ns();

    // allgs: a []*g slice header, then the pointer array.
    let allgs_addr = layout.globals.allgs + target.bias;
    let mut header = [0u8; 24];
    mem.read(allgs_addr, &mut header)?;
    let array = u64::from_le_bytes(header[0..8].try_into().unwrap_or_default());
    let count = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    if count > MAX_GOROUTINES || (count > 0 && array == 0) {
        return Err(Error::Other(format!(
            "runtime.allgs looks corrupt (len {count}, ptr {array:#x}); is the Go version supported?"
        )));
    }
    let mut pointers = vec![0u8; count as usize * 8];
    mem.read(array, &mut pointers)?;
    let g_addrs: Vec<u64> = pointers
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .filter(|&a| a != 0)
        .collect();
    drop(pointers);

    // Every g, in one batch.
    let g_len = layout.g_read_len() as usize;
    let mut g_bytes = MemorySnapshot::new();
    for &addr in &g_addrs {
        g_bytes.request(addr, g_len);
    }
    g_bytes.fetch(mem)?;
    let goroutines: Vec<Goroutine> = g_addrs
        .iter()
        .filter_map(|&addr| Goroutine::decode(addr, g_bytes.get(addr, g_len)?, layout))
        .filter(|g| !g.status.is_dead())
        .collect();
    drop(g_bytes);

    // The list of Ms, then their g0 and gsignal goroutines.
    let machines = read_machines(target)?;
    let mut system_g = MemorySnapshot::new();
    for m in &machines {
        for addr in [m.g0, m.gsignal] {
            if addr != 0 {
                system_g.request(addr, g_len);
            }
        }
    }
    system_g.fetch(mem)?;
    let bounds_of = |addr: u64| {
        let g = Goroutine::decode(addr, system_g.get(addr, g_len)?, layout)?;
        (g.stack_lo < g.stack_hi).then_some(StackBounds {
            lo: g.stack_lo,
            hi: g.stack_hi,
        })
    };
    let system_stacks: HashMap<u64, (Option<StackBounds>, Option<StackBounds>)> = machines
        .iter()
        .map(|m| (m.addr, (bounds_of(m.g0), bounds_of(m.gsignal))))
        .collect();

    let threads: HashMap<u64, ThreadRegisters> = pause
        .map(|p| {
            p.threads()
                .iter()
                .filter_map(|t| {
                    let regs = t.regs.as_ref()?;
                    Some((
                        t.tid as u64,
                        ThreadRegisters {
                            pc: regs.rip,
                            sp: regs.rsp,
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();

    // The live part of every stack: from the lowest stack pointer we may
    // start from up to the top of the stack.
    let mut stacks = MemorySnapshot::new();
    for g in &goroutines {
        let mut candidates = vec![g.sched_sp, g.syscall_sp];
        if g.status == GStatus::Running {
            if let Some(m) = machines.iter().find(|m| m.addr == g.m) {
                candidates.push(m.vdso_sp);
                if let Some(regs) = threads.get(&m.tid) {
                    candidates.push(regs.sp);
                    if let Some((Some(g0), _)) = system_stacks.get(&m.addr) {
                        if g0.contains(regs.sp) {
                            let len = (g0.hi - regs.sp).min(MAX_SYSTEM_STACK_COPY);
                            stacks.request(regs.sp, len as usize);
                        }
                    }
                }
            }
        }
        let lowest = candidates
            .into_iter()
            .filter(|&sp| g.stack_contains(sp))
            .min();
        if let Some(sp) = lowest {
            let len = (g.stack_hi - sp).min(MAX_STACK_COPY);
            stacks.request(sp, len as usize);
        }
    }
    stacks.fetch(mem)?;

    // Without a pause, a goroutine that ran meanwhile may have a torn
    // stack copy: read the gs again and drop the ones that changed.
    let unstable = if pause.is_none() {
        changed_goroutines(target, &goroutines)?
    } else {
        HashSet::new()
    };

    Ok(Snapshot {
        goroutines,
        machines,
        threads,
        system_stacks,
        stacks,
        pause: None,
        monotonic_ns,
        unstable,
    })
}

/// The goroutines whose status or saved stack pointers differ from
/// `before` when read again.
fn changed_goroutines(target: &Target, before: &[Goroutine]) -> Result<HashSet<u64>> {
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
            !now.is_some_and(|now| {
                now.status == g.status
                    && now.goid == g.goid
                    && now.sched_sp == g.sched_sp
                    && now.syscall_sp == g.syscall_sp
            })
        })
        .map(|g| g.addr)
        .collect())
}

/// Walks `runtime.allm` (newest first, linked by `m.alllink`).
fn read_machines(target: &Target) -> Result<Vec<Machine>> {
    let layout = &target.binary.layout;
    let mem = &target.memory;
    let m_len = layout.m_read_len() as usize;
    let mut machines = Vec::new();
    let mut addr = mem.read_u64(layout.globals.allm + target.bias)?;
    let mut buf = vec![0u8; m_len];
    while addr != 0 && machines.len() < MAX_MACHINES {
        mem.read(addr, &mut buf)?;
        let Some(m) = Machine::decode(addr, &buf, layout) else {
            break;
        };
        addr = m.alllink;
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
