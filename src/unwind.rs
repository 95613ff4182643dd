//! Unwinding one goroutine into physical frames with pclntab frame sizes
//! (`pcsp`), following the rules the runtime's own unwinder applies on amd64
//! (runtime/traceback.go: `unwinder.initAt`, `resolveInternal`, `next`).
//! See shared/docs/go-runtime/README.md §2.
//!
//! Frame pointers are not used: they drop the caller of a function stopped
//! in its prologue or in a frameless leaf.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::binary::pclntab::{FUNC_FLAG_SPWRITE, FUNC_FLAG_TOPFRAME};
use crate::binary::{Func, Pclntab};
use crate::process::memory::Memory;
use crate::runtime::{GStatus, Goroutine, Machine};

/// A map keyed by pcs (or other words read from the target), for the
/// per-pc caches of unwinding and symbolization: they are looked up once or
/// more per frame of every goroutine, where SipHash would be a good part of
/// the cost.
pub type PcMap<K, V> = HashMap<K, V, BuildHasherDefault<PcHasher>>;

/// A set of pcs or addresses, hashed like [`PcMap`].
pub type PcSet<K> = HashSet<K, BuildHasherDefault<PcHasher>>;

/// The multiply-rotate hash of rustc's `FxHasher`: fast for integer keys,
/// not resistant to crafted collisions (a hostile target can at worst make
/// gospy slower).
#[derive(Default, Clone, Copy)]
pub struct PcHasher(u64);

impl Hasher for PcHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // The multiplication mixes upwards: an aligned address keeps its
        // zero low bits, which are the ones the map picks buckets with. The
        // rotation brings well-mixed bits down (as rustc-hash 2 does).
        self.0.rotate_left(26)
    }
}

/// Default cap on physical frames per goroutine.
pub const DEFAULT_MAX_DEPTH: usize = 1024;

/// Half-open address range `[lo, hi)` of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackBounds {
    pub lo: u64,
    pub hi: u64,
}

impl StackBounds {
    /// Whether `addr` is inside the stack.
    pub fn contains(&self, addr: u64) -> bool {
        self.lo <= addr && addr < self.hi
    }
}

/// The registers of a stopped thread that unwinding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadRegisters {
    pub pc: u64,
    pub sp: u64,
}

/// What is known about the thread a running goroutine is on.
#[derive(Debug, Clone, Copy)]
pub struct ThreadView<'a> {
    pub tid: u64,
    pub regs: ThreadRegisters,
    pub machine: &'a Machine,
    /// Stack of the M's g0 (system stack), if it could be read.
    pub g0_stack: Option<StackBounds>,
    /// Stack of the M's signal-handling goroutine, if it could be read.
    pub gsignal_stack: Option<StackBounds>,
}

/// Where unwinding starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartState {
    pub pc: u64,
    pub sp: u64,
    /// The pc is exact (taken from a stopped thread), not a return address.
    pub trap: bool,
    /// Stack the walk starts on.
    pub stack: Option<StackBounds>,
    /// Set when starting on the system stack (g0) of a thread running a user
    /// goroutine: where to continue on the user stack at `systemstack`,
    /// `morestack` or `mcall`.
    pub user_switch: Option<UserSwitch>,
}

/// The user goroutine's saved context to jump to from its thread's g0 stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSwitch {
    pub stack: StackBounds,
    /// `curg.sched.sp`/`pc`, set by the switch to g0.
    pub sched_sp: u64,
    pub sched_pc: u64,
}

/// One physical (machine) frame.
#[derive(Debug, Clone, Copy)]
pub struct PhysicalFrame {
    /// The frame's pc in the target (return address, or exact for trap frames).
    pub pc: u64,
    /// The function, from the pclntab.
    pub func: Func,
    /// Link-time pc to look lines and inlining up with: `pc - 1` for return
    /// addresses (inside the CALL), the pc itself for trap frames and at a
    /// function's entry (runtime/traceback.go `symPC`).
    pub sym_pc: u64,
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackEnd {
    /// Reached the bottom of the stack (`runtime.goexit`, `mstart`, ...).
    Complete,
    /// Stopped at the depth cap.
    Truncated,
    /// Stopped early; the reason says why.
    Incomplete(String),
}

/// The result of unwinding one goroutine.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Innermost first.
    pub frames: Vec<PhysicalFrame>,
    pub end: StackEnd,
}

/// Unwinds stacks of one target.
pub struct Unwinder<'a> {
    pub pclntab: &'a Pclntab,
    /// Load bias: target address = link-time address + bias.
    pub bias: u64,
    pub max_depth: usize,
    /// What the pclntab says about each link-time pc seen so far. Parked
    /// goroutines stop at a handful of distinct pcs, so with many of them
    /// nearly every frame is a hit and no pcsp table is decoded twice.
    facts: RefCell<PcMap<u64, Option<PcFacts<'a>>>>,
}

/// The pclntab facts the walk needs about one pc (`None` in the cache: the
/// pc is outside Go code).
#[derive(Clone, Copy)]
struct PcFacts<'a> {
    func: Func,
    name: &'a str,
    flag: u8,
    sp_delta: Option<i64>,
}

/// Whether the caller of function `name` was interrupted there (a signal,
/// an injected call) rather than calling it: its pc is then exact.
fn interrupts_its_caller(name: &str) -> bool {
    matches!(
        name,
        "runtime.sigpanic" | "runtime.asyncPreempt" | "runtime.debugCallV2"
    )
}

/// Decides where to start unwinding goroutine `g`, as the runtime does for
/// its status (shared/docs/go-runtime/README.md §2.3, §2.5). `thread` is the
/// stopped thread running it, when it is running.
pub fn start_state(g: &Goroutine, thread: Option<&ThreadView>) -> Result<StartState, String> {
    let user_stack = StackBounds {
        lo: g.stack_lo,
        hi: g.stack_hi,
    };
    let saved = |pc: u64, sp: u64| -> Result<StartState, String> {
        if sp == 0 || pc == 0 {
            return Err("no saved context".to_string());
        }
        Ok(StartState {
            pc,
            sp,
            trap: false,
            stack: Some(user_stack),
            user_switch: None,
        })
    };
    match g.status {
        GStatus::Running => {
            let Some(t) = thread else {
                return Err("running on a thread gospy did not stop; stack unavailable".into());
            };
            if user_stack.contains(t.regs.sp) {
                return Ok(StartState {
                    pc: t.regs.pc,
                    sp: t.regs.sp,
                    trap: true,
                    stack: Some(user_stack),
                    user_switch: None,
                });
            }
            if t.machine.vdso_sp != 0 {
                // Inside a VDSO call (time.now, nanotime1): the runtime
                // recorded where it left Go code (runtime/proc.go sigprof).
                return saved(t.machine.vdso_pc, t.machine.vdso_sp);
            }
            if t.gsignal_stack.is_some_and(|s| s.contains(t.regs.sp)) {
                return Err("thread is running a signal handler; stack unavailable".into());
            }
            Ok(StartState {
                pc: t.regs.pc,
                sp: t.regs.sp,
                trap: true,
                stack: t.g0_stack,
                user_switch: Some(UserSwitch {
                    stack: user_stack,
                    sched_sp: g.sched_sp,
                    sched_pc: g.sched_pc,
                }),
            })
        }
        GStatus::Syscall => saved(g.syscall_pc, g.syscall_sp),
        GStatus::Waiting | GStatus::Runnable | GStatus::Preempted | GStatus::Leaked => {
            if g.syscall_sp != 0 {
                saved(g.syscall_pc, g.syscall_sp)
            } else {
                saved(g.sched_pc, g.sched_sp)
            }
        }
        GStatus::Copystack => Err("stack is being copied (growing); try again".into()),
        other => Err(format!("goroutine is {}", other.name())),
    }
}

impl<'a> Unwinder<'a> {
    pub fn new(pclntab: &'a Pclntab, bias: u64, max_depth: usize) -> Unwinder<'a> {
        Unwinder {
            pclntab,
            bias,
            max_depth,
            facts: RefCell::default(),
        }
    }

    /// Walks the stack from `start`, reading stack memory from `mem`.
    pub fn unwind(&self, start: &StartState, mem: &dyn Memory) -> Stack {
        let mut frames = Vec::new();
        let end = self.unwind_into(start, mem, &mut frames);
        Stack { frames, end }
    }

    /// Like [`Unwinder::unwind`], into `frames` (cleared first), so one
    /// buffer serves every goroutine.
    pub fn unwind_into(
        &self,
        start: &StartState,
        mem: &dyn Memory,
        frames: &mut Vec<PhysicalFrame>,
    ) -> StackEnd {
        frames.clear();
        self.walk(start, mem, frames)
    }

    /// Appends to `frames` the frames of `returns`, the return addresses of
    /// a call chain taken by following saved frame pointers (innermost
    /// first), if it is whole: every address in Go code, the last one in a
    /// stack's root (`runtime.goexit`, `mstart`) and within the depth cap.
    /// Otherwise `frames` is left as it was and the result is false.
    pub fn extend_with_returns(&self, returns: &[u64], frames: &mut Vec<PhysicalFrame>) -> bool {
        let before = frames.len();
        // The caller of these was interrupted, not calling: its pc is exact.
        let mut trap = frames.last().is_some_and(|f| {
            self.facts(f.func.entry)
                .is_some_and(|facts| interrupts_its_caller(facts.name))
        });
        for &pc in returns {
            let link_pc = pc.wrapping_sub(self.bias);
            let facts = if trap {
                self.facts(link_pc)
            } else {
                // A return address may be the first byte after its
                // function (a call as the last instruction).
                self.facts(link_pc.wrapping_sub(1))
            };
            let Some(facts) = facts.filter(|_| frames.len() < self.max_depth) else {
                frames.truncate(before);
                return false;
            };
            let sym_pc = if trap || link_pc == facts.func.entry {
                link_pc
            } else {
                link_pc - 1
            };
            frames.push(PhysicalFrame {
                pc,
                func: facts.func,
                sym_pc,
            });
            trap = interrupts_its_caller(facts.name);
        }
        let whole = frames.len() > before
            && frames.last().is_some_and(|f| {
                self.facts(f.func.entry).is_some_and(|facts| {
                    facts.flag & FUNC_FLAG_TOPFRAME != 0
                        || matches!(facts.name, "runtime.goexit" | "runtime.mstart")
                })
            });
        if !whole {
            frames.truncate(before);
        }
        whole
    }

    /// The facts about link-time `pc`, from the cache or the pclntab.
    fn facts(&self, pc: u64) -> Option<PcFacts<'a>> {
        *self.facts.borrow_mut().entry(pc).or_insert_with(|| {
            let func = self.pclntab.find_func(pc)?;
            Some(PcFacts {
                func,
                name: self.pclntab.func_name(&func),
                flag: self.pclntab.flag(&func),
                sp_delta: self.pclntab.sp_delta(&func, pc),
            })
        })
    }

    fn walk(
        &self,
        start: &StartState,
        mem: &dyn Memory,
        frames: &mut Vec<PhysicalFrame>,
    ) -> StackEnd {
        let mut pc = start.pc;
        let mut sp = start.sp;
        let mut trap = start.trap;
        let mut stack = start.stack;
        let mut user_switch = start.user_switch;
        loop {
            if frames.len() >= self.max_depth {
                return StackEnd::Truncated;
            }
            let link_pc = pc.wrapping_sub(self.bias);
            let Some(PcFacts {
                func,
                name,
                flag,
                sp_delta,
            }) = self.facts(link_pc)
            else {
                return StackEnd::Incomplete(format!("pc {pc:#x} is outside Go code"));
            };
            let sym_pc = if trap || link_pc == func.entry {
                link_pc
            } else {
                link_pc - 1
            };
            frames.push(PhysicalFrame { pc, func, sym_pc });

            if flag & FUNC_FLAG_TOPFRAME != 0
                || matches!(name, "runtime.goexit" | "runtime.mstart" | "runtime.rt0_go")
            {
                return StackEnd::Complete;
            }

            // Leaving the system stack for the user goroutine's stack, as
            // runtime/traceback.go `resolveInternal` does on g0.
            if let Some(switch) = user_switch {
                match name {
                    "runtime.systemstack" if switch.sched_sp != 0 => {
                        sp = switch.sched_sp;
                        stack = Some(switch.stack);
                        user_switch = None;
                    }
                    "runtime.morestack" | "runtime.mcall" if switch.sched_sp != 0 => {
                        // The saved context is the function that called
                        // morestack (or mcall); it replaces this frame.
                        if name == "runtime.morestack" {
                            frames.pop();
                        }
                        pc = switch.sched_pc;
                        sp = switch.sched_sp;
                        trap = false;
                        stack = Some(switch.stack);
                        user_switch = None;
                        continue;
                    }
                    _ => {}
                }
            }
            if matches!(name, "runtime.mcall" | "runtime.morestack") {
                // Bottom of a system stack with no user goroutine to go to.
                return StackEnd::Complete;
            }
            if flag & FUNC_FLAG_SPWRITE != 0
                && !matches!(name, "runtime.systemstack" | "runtime.cgocallback")
            {
                return StackEnd::Incomplete(format!("{name} switches stacks"));
            }

            let Some(sp_delta) = sp_delta else {
                return StackEnd::Incomplete(format!("no frame size for {name} at {pc:#x}"));
            };
            if sp_delta < 0 {
                return StackEnd::Incomplete(format!("negative frame size in {name}"));
            }
            let Some(fp) = sp.checked_add(sp_delta as u64 + 8) else {
                return StackEnd::Incomplete("stack pointer overflow".into());
            };
            let ret_slot = fp - 8;
            if let Some(bounds) = stack {
                if !bounds.contains(ret_slot) {
                    return StackEnd::Incomplete(format!(
                        "frame of {name} leaves its stack ({ret_slot:#x} not in {:#x}..{:#x})",
                        bounds.lo, bounds.hi
                    ));
                }
            }
            let Some(ret) = mem.read_u64(ret_slot) else {
                return StackEnd::Incomplete(format!("stack memory at {ret_slot:#x} unavailable"));
            };
            if ret == 0 {
                return StackEnd::Incomplete(format!("no return address above {name}"));
            }
            // The caller of these was interrupted, not calling: its pc is exact.
            trap = interrupts_its_caller(name);
            pc = ret;
            sp = fp;
        }
    }
}
