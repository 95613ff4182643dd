//! The sampling loop of `gospy record`: at a fixed rate, copy the goroutines
//! to sample (one short pause), unwind them after the target resumes, and
//! count each distinct stack.
//!
//! Stacks are kept as physical frames (pcs): each distinct pc is symbolized
//! once, into a [`Location`] with its inlined calls, which is what pprof
//! wants and what keeps a long recording cheap.

mod nonblocking;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::binary::pclntab::SourceFrame;
use crate::error::{Error, Result};
use crate::goroutines::read_labels;
use crate::native::NativeUnwinder;
use crate::process::memory::Memory;
use crate::process::ptrace::Registers;
use crate::runtime::{self, GStatus, Goroutine};
use crate::snapshot::{Snapshot, SnapshotOptions};
use crate::stack::name_for_print;
use crate::target::Target;
use crate::unwind::{self, PcMap, PhysicalFrame, StackEnd, StartState, Unwinder};

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct SamplerOptions {
    /// Samples per second.
    pub rate: f64,
    /// Stop after this long (`None`: until stopped or the target exits).
    pub duration: Option<Duration>,
    /// Also sample goroutines that are not running: a wall-clock profile.
    pub idle: bool,
    /// Add a root frame naming the OS thread.
    pub threads: bool,
    /// Add a root frame naming the goroutine.
    pub goroutines: bool,
    /// Never stop the target: on-CPU samples from perf events (see
    /// [`nonblocking`]).
    pub nonblocking: bool,
    /// Add the C frames of goroutines in cgo calls (unwound with
    /// `.eh_frame`) above their Go frames (with `nonblocking`: above a
    /// `[cgo call]` root frame).
    pub native: bool,
}

/// Why sampling ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Interrupted,
    TargetExited,
}

/// One source-level frame at a [`Location`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// As the runtime prints it.
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
    /// Line of the function's `func` keyword (0 if unknown).
    pub start_line: u32,
}

/// A physical frame: a pc in the target and the source frames there,
/// innermost (inlined callee) first, the physical function last.
#[derive(Debug, Clone)]
pub struct Location {
    /// The pc (a return address, except for the leaf of a running goroutine).
    pub address: u64,
    pub lines: Vec<SourceLine>,
    /// A C frame (`--native`): one line naming the ELF symbol, with the
    /// mapped file (executable or library) as its file and no line number.
    pub native: bool,
}

/// A goroutine's pprof labels plus gospy's `goroutine_state` and
/// `wait_reason`, sorted by key.
pub type Labels = Arc<[(Arc<str>, Arc<str>)]>;

/// Everything that distinguishes one kind of sample from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stack {
    /// Pseudo-frames at the root (`thread 1234`, `goroutine 17`), outermost
    /// first.
    pub roots: Vec<Arc<str>>,
    /// Indices into [`Profile::locations`], innermost first.
    pub locations: Vec<u32>,
    /// Pseudo-frame at the leaf naming the state of a goroutine that was not
    /// running, e.g. `[chan receive]`.
    pub state: Option<Arc<str>>,
    pub labels: Labels,
}

/// One frame of a stack as the text formats show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRef<'a> {
    pub function: &'a str,
    /// Empty for pseudo-frames.
    pub file: &'a str,
    pub line: u32,
}

/// How much of a recording one stack stands for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Weight {
    /// Times it was seen.
    pub samples: u64,
    /// The time those samples stand for: CPU time of on-CPU samples (see
    /// [`Sampler::sample_on_cpu`] and [`nonblocking`]), goroutine wall time
    /// with `--idle`.
    pub nanos: u64,
}

impl std::ops::AddAssign for Weight {
    fn add_assign(&mut self, other: Weight) {
        self.samples += other.samples;
        self.nanos += other.nanos;
    }
}

impl Weight {
    /// One sample standing for `nanos`.
    pub fn one(nanos: u64) -> Weight {
        Weight { samples: 1, nanos }
    }
}

/// Stacks counted over a recording.
#[derive(Debug, Default)]
pub struct Profile {
    pub locations: Vec<Location>,
    /// Each distinct stack and how much it was seen.
    pub stacks: Vec<(Arc<Stack>, Weight)>,
    /// Waiting goroutines were sampled too (wall-clock, not on-CPU).
    pub idle: bool,
    /// Ticks (snapshots taken, or perf samples read).
    pub samples: u64,
    /// Time sampled but not attributed to a stack: goroutines whose stack
    /// could not be unwound at all.
    pub unattributed_nanos: u64,
    /// Snapshots that failed (the error of the last one is kept).
    pub errors: u64,
    /// Samples the kernel dropped because gospy read them too slowly
    /// (`--nonblocking`).
    pub lost: u64,
    pub last_error: Option<String>,
    /// When recording started.
    pub started: Option<SystemTime>,
    /// Wall time spent recording.
    pub elapsed: Duration,
    /// Sum of the target's pauses: with `--idle`, the time the whole
    /// target was stopped; on-CPU, the thread-time of the threads stopped
    /// one at a time.
    pub paused: Duration,
    /// `--nonblocking`: whether perf events sampled time in the kernel too
    /// (None in the default mode, which reads each thread's CPU time).
    pub kernel_time_sampled: Option<bool>,
    /// `--nonblocking`: time perf's clock counted that the kernel's CPU
    /// accounting did not (hypervisor steal time), left out of the weights.
    pub steal_nanos: u64,
}

impl Profile {
    /// The sum of every stack's weight.
    pub fn total_weight(&self) -> Weight {
        let mut total = Weight::default();
        for (_, w) in &self.stacks {
            total += *w;
        }
        total
    }

    /// The frames of `stack`, outermost first: root pseudo-frames, then each
    /// location's source frames (inlined callees after their callers), then
    /// the state pseudo-frame.
    pub fn frames<'a>(&'a self, stack: &'a Stack) -> impl Iterator<Item = FrameRef<'a>> + 'a {
        let pseudo = |name: &'a Arc<str>| FrameRef {
            function: name,
            file: "",
            line: 0,
        };
        let lines = stack
            .locations
            .iter()
            .rev()
            .filter_map(|&i| self.locations.get(i as usize))
            .flat_map(|loc| loc.lines.iter().rev())
            .map(|l| FrameRef {
                function: &l.function,
                file: &l.file,
                line: l.line,
            });
        stack
            .roots
            .iter()
            .map(pseudo)
            .chain(lines)
            .chain(stack.state.iter().map(pseudo))
    }
}

/// Samples `target` until the duration elapses, `stop()` returns true, or
/// the target exits. `progress` is called after every sample. Fails only if
/// sampling cannot start (`--nonblocking` without perf events).
pub fn record(
    target: &Target,
    options: SamplerOptions,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Profile),
) -> Result<(Profile, StopReason)> {
    let started = Instant::now();
    let mut sampler = Sampler::new(target, options);
    if options.native {
        // Every module's CFI and symbols are read now, not while the
        // target is stopped (or between perf samples).
        let unwinder = NativeUnwinder::new(target.pid())?;
        unwinder.preload();
        sampler.native = Some(unwinder);
    }
    sampler.profile.started = Some(SystemTime::now());
    let reason = if options.nonblocking {
        sampler.run_nonblocking(stop, progress)?
    } else {
        sampler.run_blocking(stop, progress)
    };
    crate::process::ptrace::release_leftovers();
    let mut profile = sampler.profile;
    profile.elapsed = started.elapsed();
    Ok((profile, reason))
}

/// C frames kept per sample (`--native`).
const MAX_NATIVE_FRAMES: usize = 128;

/// How often the label cache is emptied: label sets are immutable, but the
/// memory of one that is no longer used can be reused for another.
const LABEL_CACHE_SAMPLES: u64 = 100;

/// The frame under which on-CPU time of threads never seen running a
/// goroutine (`sysmon`) is counted; the runtime's own profiler does not
/// sample those threads.
pub const NO_GOROUTINE_FRAME: &str = "[runtime, no goroutine]";

/// The leaf pseudo-frame of a goroutine in `state` (a status or the
/// runtime's wait reason): `[chan receive]`. Parenthesised words become a
/// comma clause (`[select, no cases]`): `go tool pprof` drops parenthesised
/// text from function names.
fn state_frame(state: &str) -> String {
    format!("[{}]", state.replace(" (", ", ").replace(['(', ')'], ""))
}

/// The root frame of time that could not be given to a goroutine's stack;
/// the leaf under it says why.
pub const UNKNOWN_FRAME: &str = "[unknown]";

/// The root frame of a stack whose unwinding stopped before its goroutine's
/// first function (unreadable memory, a pc outside Go code, the depth cap).
pub const PARTIAL_STACK_FRAME: &str = "[partial stack]";

/// Longest a chosen thread is waited for at a tick: a thread on a CPU stops
/// within tens of microseconds; one that has not stopped by then is waiting
/// for a CPU.
const STOP_BUDGET: Duration = Duration::from_millis(2);

/// Threads whose scheduler times are remembered: beyond this (a program
/// that churns threads), the record is emptied and starts again.
const MAX_TRACKED_THREADS: usize = 40_000;

/// How often threads that were interrupted but had not stopped by a tick's
/// stop budget are checked (they stop as soon as they get a CPU, and stay
/// stopped until gospy lets them go).
const LEFTOVER_POLL: Duration = Duration::from_micros(250);

/// Sleeps until `until`, meanwhile letting go, every [`LEFTOVER_POLL`], the
/// threads a tick interrupted that have stopped since.
fn sleep_releasing_leftovers(until: Instant) {
    loop {
        crate::process::ptrace::release_leftovers();
        let now = Instant::now();
        if now >= until {
            return;
        }
        let left = until - now;
        if !crate::process::ptrace::has_leftovers() {
            std::thread::sleep(left);
            return;
        }
        std::thread::sleep(left.min(LEFTOVER_POLL));
    }
}

/// What is kept from one sample to the next.
struct Sampler<'t> {
    target: &'t Target,
    options: SamplerOptions,
    unwinder: Unwinder<'t>,
    /// Reused for every goroutine's physical frames.
    physical: Vec<PhysicalFrame>,
    /// Reused for one pc's source frames.
    source: Vec<SourceFrame<'t>>,
    /// Location index by (pc, pc used for line lookup).
    location_ids: PcMap<(u64, u64), Option<u32>>,
    names: HashMap<&'t str, Arc<str>>,
    files: HashMap<&'t str, Arc<str>>,
    /// Whether a goroutine is the runtime's own, by `g.startpc`.
    system: PcMap<u64, bool>,
    /// Labels by (`g.labels`, state, wait reason).
    labels: HashMap<(u64, &'static str, Option<&'static str>), Labels>,
    /// Index in `profile.stacks` of each stack.
    stack_ids: HashMap<Arc<Stack>, usize>,
    /// Goroutines that were not running at a recent sample, by `g` address.
    parked: PcMap<u64, Parked>,
    /// With `--native`: unwinds C frames.
    native: Option<NativeUnwinder>,
    /// Location index of each C frame, by (pc, innermost).
    native_location_ids: PcMap<(u64, bool), u32>,
    /// Each thread's CPU time (ns) when it was last given to a sample (or
    /// when the thread was first seen).
    thread_cpu: HashMap<i32, u64>,
    /// Threads seen running a goroutine at some tick.
    runs_goroutines: std::collections::HashSet<i32>,
    profile: Profile,
}

/// Where a goroutine that is not running stopped. While this stays the same
/// its stack cannot have changed: `g.trackingSeq` changes whenever it runs
/// (Go 1.17+; before that nothing is cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ParkedAt {
    goid: u64,
    status: GStatus,
    wait_reason: u8,
    tracking_seq: u8,
    stack_lo: u64,
    sched_sp: u64,
    sched_pc: u64,
    syscall_sp: u64,
    labels: u64,
    thread: u64,
}

/// A goroutine seen not running, and its stack then.
struct Parked {
    at: ParkedAt,
    /// Index in `profile.stacks`.
    stack_id: usize,
    /// The sample it was last seen in.
    seen: u64,
}

impl ParkedAt {
    fn of(g: &Goroutine) -> Option<ParkedAt> {
        Some(ParkedAt {
            goid: g.goid,
            status: g.status,
            wait_reason: g.wait_reason,
            tracking_seq: g.tracking_seq?,
            stack_lo: g.stack_lo,
            sched_sp: g.sched_sp,
            sched_pc: g.sched_pc,
            syscall_sp: g.syscall_sp,
            labels: g.labels,
            thread: g.m,
        })
    }
}

impl<'t> Sampler<'t> {
    fn new(target: &'t Target, options: SamplerOptions) -> Sampler<'t> {
        Sampler {
            target,
            options,
            unwinder: Unwinder::new(
                &target.binary.pclntab,
                target.bias,
                unwind::DEFAULT_MAX_DEPTH,
            ),
            physical: Vec::new(),
            source: Vec::new(),
            location_ids: PcMap::default(),
            names: HashMap::new(),
            files: HashMap::new(),
            system: PcMap::default(),
            labels: HashMap::new(),
            stack_ids: HashMap::new(),
            parked: PcMap::default(),
            native: None,
            native_location_ids: PcMap::default(),
            thread_cpu: HashMap::new(),
            runs_goroutines: std::collections::HashSet::new(),
            profile: Profile {
                idle: options.idle,
                ..Profile::default()
            },
        }
    }

    /// The recording loop: one snapshot (one short pause) at a fixed rate.
    fn run_blocking(
        &mut self,
        stop: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(&Profile),
    ) -> StopReason {
        let interval = self.interval();
        let started = Instant::now();
        let mut next = started;
        loop {
            if stop() {
                return StopReason::Interrupted;
            }
            if self
                .options
                .duration
                .is_some_and(|d| started.elapsed() >= d)
            {
                return StopReason::Duration;
            }
            match self.sample_once() {
                Ok(()) => {}
                Err(Error::NoSuchProcess(_) | Error::ProcessExited { .. } | Error::Zombie(_)) => {
                    return StopReason::TargetExited;
                }
                Err(e) => {
                    if !self.target.process.is_alive() {
                        return StopReason::TargetExited;
                    }
                    self.profile.errors += 1;
                    self.profile.last_error = Some(e.to_string());
                }
            }
            self.profile.samples += 1;
            self.profile.elapsed = started.elapsed();
            progress(&self.profile);
            // Fixed-rate schedule; when behind, skip ahead instead of bursting.
            next += interval;
            let now = Instant::now();
            if next > now {
                sleep_releasing_leftovers(next);
            } else {
                next = now;
            }
        }
    }

    /// The time between ticks.
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.options.rate.max(0.001))
    }

    /// Takes one tick's samples and counts them. With `--idle`: a snapshot
    /// of every goroutine (one short pause), each goroutine standing for one
    /// tick (`1/rate`) of wall time. On-CPU: see [`Sampler::sample_on_cpu`].
    fn sample_once(&mut self) -> Result<()> {
        if self.options.idle {
            let snapshot = self.take_idle_snapshot(SnapshotOptions {
                native: self.native.is_some(),
                ..SnapshotOptions::default()
            })?;
            self.profile.paused += snapshot.pause.unwrap_or_default();
            // Each goroutine stands for one tick of wall time.
            let tick_ns = self.interval().as_nanos() as u64;
            self.count_snapshot(&snapshot, true, &|_| tick_ns);
            return Ok(());
        }
        self.sample_on_cpu()
    }

    /// One on-CPU tick, weighted by CPU time as the runtime's own profiler
    /// is (a sample per 10 ms of each thread's CPU time).
    ///
    /// Each thread's CPU time is known exactly from the kernel
    /// (`/proc/PID/task/TID/schedstat`); sampling only says what it was
    /// spent on. At a tick, a thread that is runnable (`/proc` state R) and
    /// used CPU since its CPU time was last given to a sample is stopped
    /// ([`Snapshot::take_on_cpu`], one thread at a time) and its stack then
    /// stands for all that CPU time. A thread that used none is not
    /// stopped. One that does not stop within a short budget is waiting for
    /// a CPU (more threads than cores, or a CPU quota): its CPU time waits
    /// for its next sample, as does that of a thread sleeping at the tick.
    /// So the profile's total is the CPU time the threads used (up to the
    /// last sample of each), whatever the machine's load, and each thread's
    /// time is spread over what it was seen doing.
    fn sample_on_cpu(&mut self) -> Result<()> {
        let target = self.target;
        let threads = Snapshot::running_threads(target)?;
        let mut readings: HashMap<i32, (u64, u64)> = HashMap::new();
        let mut chosen = Vec::new();
        for t in threads {
            if target.thread_state(t.tid) != Some('R') {
                continue;
            }
            let Some(now) = target.thread_cpu_ns(t.tid) else {
                continue;
            };
            if t.goroutine.is_some() {
                self.runs_goroutines.insert(t.tid);
            }
            // First seen: its CPU time counts from now on.
            let last = *self.thread_cpu.entry(t.tid).or_insert(now);
            let used = now.saturating_sub(last);
            if used > 0 {
                readings.insert(t.tid, (now, used));
                chosen.push(t);
            }
        }
        if self.thread_cpu.len() > MAX_TRACKED_THREADS {
            self.thread_cpu.clear();
            self.runs_goroutines.clear();
        }
        if chosen.is_empty() {
            return Ok(());
        }
        let budget = (self.interval() / 4).min(STOP_BUDGET);
        let taken = Snapshot::take_on_cpu(target, &chosen, self.native.is_some(), budget)?;
        self.profile.paused += taken.snapshot.pause.unwrap_or_default();
        let snapshot = &taken.snapshot;
        let mut by_goroutine: HashMap<u64, u64> = HashMap::new();
        let mut without_goroutine = 0;
        for &tid in &taken.stopped {
            let Some(&(now, used)) = readings.get(&tid) else {
                continue;
            };
            let Some(m) = snapshot.machines.iter().find(|m| m.tid == tid as u64) else {
                continue;
            };
            match snapshot.goroutines.iter().find(|g| g.m == m.addr) {
                Some(g) => *by_goroutine.entry(g.addr).or_default() += used,
                // A thread that runs goroutines, between two: caught there
                // more often than it is there, because a thread woken to
                // run a goroutine is runnable in the scheduler until it
                // gets a CPU, and gets one as soon as gospy stops another.
                // Its CPU time waits for a sample with a goroutine.
                None if self.runs_goroutines.contains(&tid) => continue,
                // A thread never seen with a goroutine (sysmon): runtime
                // work with nothing of the program's to unwind.
                None => without_goroutine += used,
            }
            self.thread_cpu.insert(tid, now);
        }
        if without_goroutine > 0 {
            let stack = Stack {
                roots: vec![NO_GOROUTINE_FRAME.into()],
                locations: Vec::new(),
                state: None,
                labels: Arc::from(Vec::new()),
            };
            self.count(stack, Weight::one(without_goroutine));
        }
        self.count_snapshot(snapshot, true, &|g| {
            by_goroutine.get(&g.addr).copied().unwrap_or(0)
        });
        Ok(())
    }

    /// A snapshot of every goroutine, copying the stacks only of those not
    /// parked where they were at the last sample.
    fn take_idle_snapshot(&self, options: SnapshotOptions) -> Result<Snapshot> {
        let parked = &self.parked;
        Snapshot::take_with(self.target, options, &|g| {
            !parked
                .get(&g.addr)
                .is_some_and(|p| Some(p.at) == ParkedAt::of(g))
        })
    }

    /// Counts the goroutines of `snapshot` that are sampled: running ones
    /// (if `running`), and with `--idle` every other one but the runtime's;
    /// each stands for `nanos(g)`.
    fn count_snapshot(
        &mut self,
        snapshot: &Snapshot,
        running: bool,
        nanos: &dyn Fn(&Goroutine) -> u64,
    ) {
        let sample = self.profile.samples;
        if sample.is_multiple_of(LABEL_CACHE_SAMPLES) {
            self.labels.clear();
        }
        for g in &snapshot.goroutines {
            let is_running = g.status == GStatus::Running || snapshot.on_cpu.contains(&g.addr);
            if is_running && !running
                || !is_running && (!self.options.idle || self.is_system(g.start_pc))
                || snapshot.unstable.contains(&g.addr)
            {
                continue;
            }
            let at = (!is_running).then(|| ParkedAt::of(g)).flatten();
            // A goroutine parked where it was last time: same stack.
            let weight = Weight::one(nanos(g));
            if let Some(parked) = self.parked.get_mut(&g.addr) {
                if at == Some(parked.at) {
                    parked.seen = sample;
                    self.profile.stacks[parked.stack_id].1 += weight;
                    continue;
                }
            }
            let Some(stack) = self.stack_of(g, snapshot, is_running) else {
                self.count_unknown("[stack could not be unwound]", weight);
                continue;
            };
            let stack_id = self.count(stack, weight);
            if let Some(at) = at {
                self.parked.insert(
                    g.addr,
                    Parked {
                        at,
                        stack_id,
                        seen: sample,
                    },
                );
            }
        }
        self.parked.retain(|_, p| p.seen == sample);
    }

    /// Counts `weight` under [`UNKNOWN_FRAME`] and `why` (a pseudo-frame),
    /// for time that could not be given to a goroutine's stack: written
    /// with the rest, and reported.
    fn count_unknown(&mut self, why: &'static str, weight: Weight) {
        self.profile.unattributed_nanos += weight.nanos;
        let stack = Stack {
            roots: vec![UNKNOWN_FRAME.into()],
            locations: Vec::new(),
            state: Some(why.into()),
            labels: Arc::from(Vec::new()),
        };
        self.count(stack, weight);
    }

    /// Counts `weight` for `stack`; returns its index in `profile.stacks`.
    fn count(&mut self, stack: Stack, weight: Weight) -> usize {
        if let Some(&id) = self.stack_ids.get(&stack) {
            self.profile.stacks[id].1 += weight;
            return id;
        }
        let stack = Arc::new(stack);
        let id = self.profile.stacks.len();
        self.profile.stacks.push((stack.clone(), weight));
        self.stack_ids.insert(stack, id);
        id
    }

    /// Unwinds and symbolizes `g` (`on_cpu`: it was running Go or C code);
    /// `None` if nothing could be unwound.
    fn stack_of(&mut self, g: &Goroutine, snapshot: &Snapshot, on_cpu: bool) -> Option<Stack> {
        let start = unwind::start_state(g, snapshot.thread_view(g).as_ref()).ok()?;
        let thread = matches!(g.status, GStatus::Running | GStatus::Syscall)
            .then(|| snapshot.machines.iter().find(|m| m.addr == g.m))
            .flatten()
            .map(|m| m.tid);
        let mut locations = Vec::new();
        if let Some(regs) = thread.and_then(|tid| snapshot.native_registers.get(&tid)) {
            self.native_locations(regs, &snapshot.stacks, &mut locations);
        }
        self.stack_from(g, &start, &snapshot.stacks, thread, on_cpu, locations)
    }

    /// Appends the locations of the C frames on a thread stopped with
    /// `regs`, innermost first, up to the first Go frame.
    fn native_locations(&mut self, regs: &Registers, mem: &dyn Memory, out: &mut Vec<u32>) {
        let Some(unwinder) = &self.native else {
            return;
        };
        let target = self.target;
        let is_go = |pc: u64| target.in_go_code(pc);
        let (frames, _) = unwinder.unwind(regs, mem, &is_go, MAX_NATIVE_FRAMES);
        for (i, frame) in frames.iter().enumerate() {
            let key = (frame.pc, i == 0);
            let id = match self.native_location_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let function: Arc<str> = match &frame.function {
                        Some(name) => name.as_str().into(),
                        None => {
                            let file = frame.module.rsplit('/').next().unwrap_or("");
                            format!("?? ({file})").into()
                        }
                    };
                    let id = self.profile.locations.len() as u32;
                    self.profile.locations.push(Location {
                        address: frame.pc,
                        lines: vec![SourceLine {
                            function,
                            file: frame.module.clone(),
                            line: 0,
                            start_line: 0,
                        }],
                        native: true,
                    });
                    self.native_location_ids.insert(key, id);
                    id
                }
            };
            out.push(id);
        }
    }

    /// Unwinds `g` from `start` reading stack memory from `mem`, and builds
    /// its [`Stack`]: `locations` (C frames, if any) then the Go frames.
    /// `thread`: the OS thread running it, if any; `on_cpu`: it was running
    /// (Go or C code), so its stack gets no state frame.
    fn stack_from(
        &mut self,
        g: &Goroutine,
        start: &StartState,
        mem: &dyn Memory,
        thread: Option<u64>,
        on_cpu: bool,
        locations: Vec<u32>,
    ) -> Option<Stack> {
        let end = self.unwinder.unwind_into(start, mem, &mut self.physical);
        self.stack_of_physical(g, end, thread, on_cpu, locations)
    }

    /// [`Sampler::stack_from`]'s second half: `g`'s stack from the frames
    /// just unwound into `self.physical` (after `locations`), which ended
    /// as `end`.
    fn stack_of_physical(
        &mut self,
        g: &Goroutine,
        end: StackEnd,
        thread: Option<u64>,
        on_cpu: bool,
        mut locations: Vec<u32>,
    ) -> Option<Stack> {
        let physical = std::mem::take(&mut self.physical);
        locations.extend(physical.iter().filter_map(|p| self.location(p)));
        self.physical = physical;
        if locations.is_empty() {
            return None;
        }
        let mut stack = self.stack_with(g, thread, locations, on_cpu);
        if end != StackEnd::Complete {
            stack.roots.push(PARTIAL_STACK_FRAME.into());
        }
        Some(stack)
    }

    /// `g`'s [`Stack`] with `locations`: root frames as the options ask,
    /// labels, and unless it was `on_cpu` a leaf pseudo-frame naming its
    /// state, e.g. `[chan receive]`.
    fn stack_with(
        &mut self,
        g: &Goroutine,
        thread: Option<u64>,
        locations: Vec<u32>,
        on_cpu: bool,
    ) -> Stack {
        let mut roots = Vec::new();
        if self.options.threads {
            roots.push(match thread {
                Some(tid) => format!("thread {tid}").into(),
                None => "[no thread]".into(),
            });
        }
        if self.options.goroutines {
            roots.push(format!("goroutine {}", g.goid).into());
        }
        let wait_reason = matches!(g.status, GStatus::Waiting | GStatus::Leaked)
            .then(|| runtime::wait_reason_name(&self.target.binary.go_version, g.wait_reason))
            .flatten();
        let state = (!on_cpu).then(|| state_frame(wait_reason.unwrap_or(g.status.name())).into());
        Stack {
            roots,
            locations,
            state,
            labels: self.labels_of(g, wait_reason),
        }
    }

    /// The location of physical frame `p`, symbolized on first sight;
    /// `None` for `runtime.goexit`, the root of every goroutine, which says
    /// nothing.
    fn location(&mut self, p: &PhysicalFrame) -> Option<u32> {
        if let Some(&id) = self.location_ids.get(&(p.pc, p.sym_pc)) {
            return id;
        }
        let pclntab = &self.target.binary.pclntab;
        if pclntab.func_name(&p.func) == "runtime.goexit" {
            self.location_ids.insert((p.pc, p.sym_pc), None);
            return None;
        }
        self.source.clear();
        pclntab.source_frames(&p.func, p.sym_pc, &mut self.source);
        let mut lines = Vec::with_capacity(self.source.len());
        for sf in std::mem::take(&mut self.source) {
            lines.push(SourceLine {
                function: self
                    .names
                    .entry(sf.function)
                    .or_insert_with(|| name_for_print(sf.function).into())
                    .clone(),
                file: self
                    .files
                    .entry(sf.file)
                    .or_insert_with(|| sf.file.into())
                    .clone(),
                line: sf.line,
                start_line: sf.start_line,
            });
        }
        let id = self.profile.locations.len() as u32;
        self.profile.locations.push(Location {
            address: p.pc,
            lines,
            native: false,
        });
        self.location_ids.insert((p.pc, p.sym_pc), Some(id));
        Some(id)
    }

    /// `g`'s pprof labels plus `goroutine_state` and `wait_reason`.
    fn labels_of(&mut self, g: &Goroutine, wait_reason: Option<&'static str>) -> Labels {
        let key = (g.labels, g.status.name(), wait_reason);
        if let Some(labels) = self.labels.get(&key) {
            return labels.clone();
        }
        let mut labels: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        if g.labels != 0 {
            labels.extend(
                read_labels(&self.target.memory, &self.target.binary, g.labels)
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into())),
            );
        }
        labels.push(("goroutine_state".into(), g.status.name().into()));
        if let Some(reason) = wait_reason {
            labels.push(("wait_reason".into(), reason.into()));
        }
        labels.sort();
        let labels: Labels = labels.into();
        self.labels.insert(key, labels.clone());
        labels
    }

    /// Whether the goroutine starting at `start_pc` is the runtime's own.
    fn is_system(&mut self, start_pc: u64) -> bool {
        let pclntab = &self.target.binary.pclntab;
        let bias = self.target.bias;
        *self.system.entry(start_pc).or_insert_with(|| {
            let name = pclntab
                .find_func(start_pc.wrapping_sub(bias))
                .map(|f| pclntab.func_name(&f))
                .unwrap_or("");
            runtime::is_system_goroutine(name)
        })
    }
}

/// On-CPU samples step by step, for a caller that runs its own schedule and
/// reads the counts between steps (`gospy top`, which samples between
/// redraws). The counts in [`Profile::stacks`] keep growing and a stack
/// keeps its index, so a caller diffs them to get the counts of an
/// interval.
pub struct Stepper<'t> {
    sampler: Sampler<'t>,
    /// With `nonblocking`: the perf events that sample on their own.
    feed: Option<nonblocking::PerfFeed>,
}

impl<'t> Stepper<'t> {
    /// A sampler of `target`; `options.duration` is the caller's business.
    /// With `options.nonblocking`, perf events sample each thread every
    /// `1/rate` s of its CPU time (this fails if they are not permitted);
    /// otherwise each [`Stepper::sample`] is one ptrace snapshot.
    pub fn new(target: &'t Target, options: SamplerOptions) -> Result<Stepper<'t>> {
        let mut sampler = Sampler::new(target, options);
        sampler.profile.started = Some(SystemTime::now());
        let feed = if options.nonblocking {
            Some(nonblocking::PerfFeed::open(target, options.rate, false)?)
        } else {
            None
        };
        Ok(Stepper { sampler, feed })
    }

    /// Takes and counts one sample; with perf events, counts the samples
    /// taken since the last call (at most as often as the rings are meant
    /// to be read, so calling it often costs nothing). A failed sample is
    /// counted in [`Profile::errors`]; only the target's exit is returned,
    /// as `Err`.
    pub fn sample(&mut self) -> std::result::Result<(), StopReason> {
        if let Some(feed) = &mut self.feed {
            return feed.drain_if_due(&mut self.sampler);
        }
        let s = &mut self.sampler;
        match s.sample_once() {
            Ok(()) => {}
            Err(Error::NoSuchProcess(_) | Error::ProcessExited { .. } | Error::Zombie(_)) => {
                return Err(StopReason::TargetExited);
            }
            Err(e) => {
                if !s.target.process.is_alive() {
                    return Err(StopReason::TargetExited);
                }
                s.profile.errors += 1;
                s.profile.last_error = Some(e.to_string());
            }
        }
        s.profile.samples += 1;
        Ok(())
    }

    /// The counts so far.
    pub fn profile(&self) -> &Profile {
        &self.sampler.profile
    }
}

#[cfg(test)]
mod state_frame_tests {
    #[test]
    fn state_frames_have_no_parentheses() {
        assert_eq!(super::state_frame("chan receive"), "[chan receive]");
        assert_eq!(
            super::state_frame("select (no cases)"),
            "[select, no cases]"
        );
        assert_eq!(
            super::state_frame("chan receive (nil chan)"),
            "[chan receive, nil chan]"
        );
    }
}
