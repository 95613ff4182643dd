//! Tests of `gospy::process::perf` against real processes. The busy target
//! is this test binary itself, run again as a child with GOSPY_PERF_HELPER
//! set (see `helper_busy`), so no compiler is needed. They need permission
//! to use perf events on children (root, or perf_event_paranoid <= 2).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gospy::process::perf::{PerfSample, PerfSampler, MAX_STACK_BYTES};
use gospy::process::{MapEntry, Process};
use gospy::Error;

/// A value the helper's busy threads keep in their stack frame, for the
/// tests to find in the sampled stack copies.
const CANARY: u64 = 0x6f73_7079_6361_6e61;

/// 1 ms of a thread's CPU time between samples.
const PERIOD_NS: u64 = 1_000_000;

/// Not a test by itself: the body of the child process the tests sample,
/// run with GOSPY_PERF_HELPER=1. Commands on stdin, one per line: `spawn`
/// starts a thread that burns CPU and prints `tid N`; `stop` ends the newest
/// one and prints `stopped`. It exits at the end of stdin, so it does not
/// outlive a test process that dies.
#[test]
fn helper_busy() {
    if std::env::var_os("GOSPY_PERF_HELPER").is_none() {
        return;
    }
    let mut running: Vec<(Arc<AtomicBool>, JoinHandle<()>)> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().trim() {
            "spawn" => {
                let stop = Arc::new(AtomicBool::new(false));
                let flag = stop.clone();
                let (tx, rx) = std::sync::mpsc::channel();
                let handle = std::thread::spawn(move || {
                    // SAFETY: gettid(2) has no preconditions.
                    tx.send(unsafe { libc::syscall(libc::SYS_gettid) }).unwrap();
                    burn(&flag);
                });
                println!("tid {}", rx.recv().unwrap());
                running.push((stop, handle));
            }
            "stop" => {
                let (stop, handle) = running.pop().expect("a running thread");
                stop.store(true, Ordering::Relaxed);
                handle.join().unwrap();
                println!("stopped");
            }
            other => panic!("unknown command {other:?}"),
        }
        std::io::stdout().flush().unwrap();
    }
    std::process::exit(0);
}

/// Spins until `stop`, with [`CANARY`] in its own stack frame, so it is in
/// every stack copy taken while the thread runs here. It calls [`step`] so
/// that it is not a leaf: an optimised leaf may keep the canary in the red
/// zone below the stack pointer, which a stack copy does not include.
#[inline(never)]
fn burn(stop: &AtomicBool) {
    let canary = [CANARY; 4];
    std::hint::black_box(&canary);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n = step(n);
    }
    std::hint::black_box(&canary);
}

#[inline(never)]
fn step(n: u64) -> u64 {
    std::hint::black_box(n.wrapping_add(1))
}

/// The helper process, killed and reaped on drop.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn start() -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_busy", "--nocapture", "--test-threads=1"])
            .env("GOSPY_PERF_HELPER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the helper");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Helper {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `command`, returns the rest of the answer line starting with
    /// `prefix` (libtest's own lines are skipped).
    fn ask(&mut self, command: &str, prefix: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the helper exited before answering {command:?}");
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_string();
            }
        }
    }

    /// Starts a busy thread; returns its tid.
    fn spawn_busy(&mut self) -> u32 {
        self.ask("spawn", "tid ").parse().unwrap()
    }

    fn stop_busy(&mut self) {
        self.ask("stop", "stopped");
    }

    /// Kills the helper and checks it died of that.
    fn kill(mut self) {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tests that burn CPU or open perf events in this process take turns: each
/// busy thread gets a CPU on a small machine, and the perf file descriptors
/// of this process are those of one test.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Perf event file descriptors and ring buffer mappings of this process.
fn own_perf_resources() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == "anon_inode:[perf_event]")
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.ends_with("anon_inode:[perf_event]"))
        .count();
    (fds, maps)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we own.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What [`collect`] saw.
struct Collected {
    samples: Vec<PerfSample>,
    /// State letters of the target's threads, read all along.
    states: String,
    /// CPU time each of the watched threads used meanwhile, in ns.
    cpu: Vec<u64>,
}

/// Reads samples for at least `min`, and on until each of `watch` has used
/// `cpu_target` of CPU time (at most 1.5 s): a loaded machine makes the
/// test slower instead of making its counts meaningless.
fn collect(
    sampler: &mut PerfSampler,
    pid: i32,
    watch: &[u32],
    min: Duration,
    cpu_target: Duration,
) -> Collected {
    // Samples from before the CPU time is first read do not count.
    sampler.read_samples(&mut Vec::new());
    let start: Vec<u64> = watch.iter().map(|&tid| cpu_ns(pid, tid)).collect();
    let used = |start: &[u64]| -> Vec<u64> {
        watch
            .iter()
            .zip(start)
            .map(|(&tid, s)| cpu_ns(pid, tid) - s)
            .collect()
    };
    let mut samples = Vec::new();
    let mut states = String::new();
    let t0 = Instant::now();
    loop {
        sampler.wait(Duration::from_millis(20));
        sampler.read_samples(&mut samples);
        let threads = Process::open(pid).unwrap().thread_states().unwrap();
        states.extend(threads.iter().map(|&(_, s)| s));
        let enough = used(&start)
            .iter()
            .all(|&ns| ns >= cpu_target.as_nanos() as u64);
        if t0.elapsed() >= Duration::from_millis(1500) || (enough && t0.elapsed() >= min) {
            break;
        }
    }
    sampler.read_samples(&mut samples);
    Collected {
        cpu: used(&start),
        samples,
        states,
    }
}

/// Time thread `tid` spent on a CPU so far, in ns (first field of
/// schedstat).
fn cpu_ns(pid: i32, tid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Checks that `n` samples (kept or lost) match `cpu_ns` of CPU time at one
/// per [`PERIOD_NS`]. The kernel samples CPU time, not wall time, so this
/// holds however loaded the machine is. Typically 90-100% of the periods
/// give a sample; on a loaded VM some fewer (a late timer skips periods, a
/// tick that lands in kernel code is dropped), hence the low bound. More
/// than one per period would be a reader bug (a record read twice).
fn assert_rate(what: &str, n: u64, cpu_ns: u64) {
    let expected = cpu_ns / PERIOD_NS;
    assert!(
        n * 2 + 6 >= expected && n <= expected + expected / 10 + 3,
        "{what}: {n} samples for {expected} ms of CPU time"
    );
}

fn count_of(samples: &[PerfSample], tid: u32) -> usize {
    samples.iter().filter(|s| s.tid == tid).count()
}

fn mapping_of(maps: &[MapEntry], addr: u64) -> Option<&MapEntry> {
    maps.iter().find(|m| m.contains(addr))
}

#[test]
fn busy_thread_is_sampled_without_being_stopped() {
    let _lock = exclusive();
    let mut helper = Helper::start();
    let tid = helper.spawn_busy();
    let pid = helper.pid();
    let stack_bytes = 4096;

    let before = monotonic_ns();
    let mut sampler = PerfSampler::open(pid, PERIOD_NS, stack_bytes).unwrap();
    let got = collect(
        &mut sampler,
        pid,
        &[tid],
        Duration::from_millis(300),
        Duration::from_millis(100),
    );
    let after = monotonic_ns();
    let samples = &got.samples;

    assert!(!samples.is_empty(), "no samples");
    assert_rate(
        "busy thread",
        samples.len() as u64 + sampler.lost(),
        got.cpu[0],
    );
    assert!(
        samples.iter().all(|s| s.tid == tid),
        "samples of other threads than the busy {tid}: {:?}",
        samples.iter().map(|s| s.tid).collect::<Vec<_>>()
    );
    // Never stopped (T) or traced (t): only running or sleeping.
    assert!(
        got.states.chars().all(|c| c == 'R' || c == 'S'),
        "states seen: {}",
        got.states
    );

    let maps = Process::open(pid).unwrap().maps().unwrap();
    let mut last_time = before;
    for s in samples {
        let text = mapping_of(&maps, s.ip).unwrap_or_else(|| panic!("ip {:#x} unmapped", s.ip));
        assert!(text.is_executable(), "ip {:#x} in {text:?}", s.ip);
        let stack = mapping_of(&maps, s.sp).unwrap_or_else(|| panic!("sp {:#x} unmapped", s.sp));
        assert!(
            stack.is_readable() && stack.is_writable(),
            "sp {:#x} in {stack:?}",
            s.sp
        );
        assert!(!s.stack.is_empty() && s.stack.len() <= stack_bytes as usize);
        let has_canary = s
            .stack
            .chunks_exact(8)
            .any(|w| u64::from_ne_bytes(w.try_into().unwrap()) == CANARY);
        assert!(has_canary, "no canary in the stack copy at sp {:#x}", s.sp);
        // CLOCK_MONOTONIC, in order.
        assert!(s.time_ns >= last_time && s.time_ns <= after, "{s:?}");
        last_time = s.time_ns;
    }

    drop(sampler);
    helper.kill();
}

#[test]
fn full_ring_counts_lost_samples() {
    let _lock = exclusive();
    let mut helper = Helper::start();
    let tid = helper.spawn_busy();
    let pid = helper.pid();
    let cpu_before = cpu_ns(pid, tid);
    // Maximal stack copies fill the ring with 4 samples; it is not read
    // until the thread has used 100 ms of CPU time.
    let mut sampler = PerfSampler::open(pid, PERIOD_NS, MAX_STACK_BYTES).unwrap();
    let t0 = Instant::now();
    while cpu_ns(pid, tid) - cpu_before < 100 * PERIOD_NS && t0.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut samples = Vec::new();
    sampler.read_samples(&mut samples);
    let kept = samples.len();
    assert!(kept > 0, "no samples");
    // The kernel reports the drops in a record it writes once there is
    // room again.
    let t0 = Instant::now();
    while sampler.lost() == 0 && t0.elapsed() < Duration::from_secs(1) {
        sampler.wait(Duration::from_millis(20));
        sampler.read_samples(&mut samples);
    }
    let cpu = cpu_ns(pid, tid) - cpu_before;
    assert!(
        samples
            .iter()
            .all(|s| s.tid == tid && s.stack.len() <= MAX_STACK_BYTES as usize),
        "unexpected samples"
    );
    assert!(
        sampler.lost() as usize > kept,
        "{kept} samples kept, {} lost",
        sampler.lost()
    );
    assert_rate("kept and lost", samples.len() as u64 + sampler.lost(), cpu);
}

#[test]
fn idle_process_gives_almost_no_samples() {
    let _lock = exclusive();
    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    let pid = child.id() as i32;
    // Past the dynamic loader's start-up, asleep.
    let t0 = Instant::now();
    while Process::open(pid).unwrap().thread_states().unwrap() != [(pid, 'S')] {
        assert!(t0.elapsed() < Duration::from_secs(2), "sleep never slept");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut sampler = PerfSampler::open(pid, PERIOD_NS, 1024).unwrap();
    assert_eq!(sampler.thread_count(), 1);
    let got = collect(
        &mut sampler,
        pid,
        &[],
        Duration::from_millis(300),
        Duration::ZERO,
    );
    assert!(
        got.samples.len() <= 1,
        "{} samples of sleep",
        got.samples.len()
    );
    assert_eq!(sampler.lost(), 0);
    drop(sampler);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn drop_closes_events_and_unmaps_rings() {
    let _lock = exclusive();
    let mut helper = Helper::start();
    helper.spawn_busy();
    helper.spawn_busy();
    assert_eq!(own_perf_resources(), (0, 0));
    let sampler = PerfSampler::open(helper.pid(), PERIOD_NS, 1024).unwrap();
    // The helper's main thread, maybe libtest's, and the two busy ones.
    let n = sampler.thread_count();
    assert!(n >= 3, "{n} threads");
    assert_eq!(own_perf_resources(), (n, n));
    drop(sampler);
    assert_eq!(own_perf_resources(), (0, 0));
}

#[test]
fn wrong_pid_is_a_clear_error() {
    // Above any pid_max.
    let pid = i32::MAX;
    match PerfSampler::open(pid, PERIOD_NS, 1024) {
        Err(e @ Error::NoSuchProcess(_)) => assert!(e.to_string().contains(&pid.to_string())),
        other => panic!("expected NoSuchProcess, got {other:?}"),
    }
    assert!(matches!(
        PerfSampler::open(0, PERIOD_NS, 1024),
        Err(Error::NoSuchProcess(0))
    ));
    // A process that has exited and been reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let gone = child.id() as i32;
    child.wait().unwrap();
    assert!(matches!(
        PerfSampler::open(gone, PERIOD_NS, 1024),
        Err(Error::NoSuchProcess(p)) if p == gone
    ));
    // A period of 0 would count without ever sampling.
    let me = std::process::id() as i32;
    let err = PerfSampler::open(me, 0, 1024).unwrap_err();
    assert!(err.to_string().contains("period"), "{err}");
}

#[test]
fn new_threads_are_sampled_after_refresh_and_exited_ones_dropped() {
    let _lock = exclusive();
    let mut helper = Helper::start();
    let pid = helper.pid();
    let first = helper.spawn_busy();
    let mut sampler = PerfSampler::open(pid, PERIOD_NS, 512).unwrap();
    let threads_before = sampler.thread_count();
    let short = Duration::from_millis(50);

    let second = helper.spawn_busy();
    // Events do not follow new threads by themselves...
    let got = collect(&mut sampler, pid, &[first, second], short, short);
    assert_eq!(count_of(&got.samples, second), 0);
    assert!(got.cpu[1] >= 20 * PERIOD_NS, "the second thread never ran");
    assert_rate(
        "first thread",
        count_of(&got.samples, first) as u64,
        got.cpu[0],
    );
    // ... refresh_threads picks them up.
    sampler.refresh_threads().unwrap();
    assert_eq!(sampler.thread_count(), threads_before + 1);
    let got = collect(
        &mut sampler,
        pid,
        &[first, second],
        Duration::from_millis(200),
        short,
    );
    for (i, tid) in [first, second].into_iter().enumerate() {
        let n = count_of(&got.samples, tid) as u64;
        assert_rate(&format!("thread {tid}"), n, got.cpu[i]);
        assert!(n > 0, "no samples of thread {tid}");
    }

    helper.stop_busy();
    // The thread's end reaches /proc and its event shortly after the join.
    let t0 = Instant::now();
    loop {
        sampler.read_samples(&mut Vec::new());
        sampler.refresh_threads().unwrap();
        if sampler.thread_count() == threads_before {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "the exited thread's event was not dropped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = collect(&mut sampler, pid, &[first], short, short);
    assert_eq!(count_of(&got.samples, second), 0);
    assert_rate("remaining thread", got.samples.len() as u64, got.cpu[0]);
    helper.kill();
}

/// Not a test by itself: run by `denied_perf_events_are_explained` with
/// GOSPY_PERF_DENIED_HELPER=<pid>. Installs a seccomp filter that fails
/// perf_event_open with EPERM, as a container's default profile does, and
/// prints the error of opening a sampler on that pid.
#[test]
fn helper_denied() {
    let Ok(pid) = std::env::var("GOSPY_PERF_DENIED_HELPER") else {
        return;
    };
    deny_perf_event_open();
    match PerfSampler::open(pid.parse().unwrap(), PERIOD_NS, 1024) {
        Ok(_) => println!("RESULT opened"),
        Err(e) => println!("RESULT {e}"),
    }
    std::io::stdout().flush().unwrap();
}

/// Makes perf_event_open fail with EPERM in this thread (and threads it
/// starts later), with a classic-BPF seccomp filter on the syscall number.
fn deny_perf_event_open() {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let mut filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, NR_OFFSET),
        jeq(libc::SYS_perf_event_open as u32, 0, 1),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with a filter program that outlives the call (the
    // kernel copies it).
    let r = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}

#[test]
fn denied_perf_events_are_explained() {
    let mut target = Command::new("sleep").arg("5").spawn().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_denied",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GOSPY_PERF_DENIED_HELPER", target.id().to_string())
        .output()
        .unwrap();
    target.kill().unwrap();
    target.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result from the helper: {stdout}"));
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap();
    let needed = [
        format!(
            "permission denied to open perf events on process {}",
            target.id()
        ),
        format!(
            "/proc/sys/kernel/perf_event_paranoid is {}",
            paranoid.trim()
        ),
        "root".into(),
        "CAP_PERFMON".into(),
        "seccomp".into(),
        "--cap-add PERFMON".into(),
        "--privileged".into(),
    ];
    for n in needed {
        assert!(result.contains(&n), "{n:?} missing in: {result}");
    }
}
