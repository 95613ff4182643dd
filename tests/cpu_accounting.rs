//! On-CPU profiles against the runtime's own CPU profiler over the same
//! window: the `cpukinds` fixture burns CPU in five kinds of code and, on
//! SIGUSR1, writes `pprof.StartCPUProfile` output for its `-window`, while
//! gospy records the same seconds. Both files are read with the real
//! `go tool pprof -traces`. With `-lock` the fixture also writes the exact
//! split of that window (each worker locked to a thread, its thread CPU
//! clock read after every quantum): the runtime's profiler itself is several
//! points off it on this machine's kind (README, "What a sample is"), so
//! the 3-point goal is checked against the exact split.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A kind of code: the fixture's function for it, then any root frame a
/// profiler counts its time under when its goroutine is not known.
type Kind = &'static [&'static str];

const KINDS: [Kind; 5] = [
    &["main.kindPlain"],
    &["main.kindVDSO"],
    &["main.kindSTW"],
    &["main.kindAlloc"],
    &["main.kindSyscall"],
];

/// A cgo build's kinds: the five, then C code called through cgo.
const CGO_KINDS: [Kind; 6] = [
    KINDS[0],
    KINDS[1],
    KINDS[2],
    KINDS[3],
    KINDS[4],
    &["main.kindCgo"],
];

/// The same for `--nonblocking`, which counts C code under `[cgo call]`
/// (README, "What a sample is").
const NONBLOCKING_CGO_KINDS: [Kind; 6] = [
    KINDS[0],
    KINDS[1],
    KINDS[2],
    KINDS[3],
    KINDS[4],
    &["main.kindCgo", "[cgo call]"],
];

const WINDOW_SECS: u32 = 5;

/// Longer under a CPU quota: half the samples per second.
const QUOTA_WINDOW_SECS: u32 = 10;

/// A profile as `go tool pprof -traces` shows it: (seconds, functions).
fn traces(tc: &Toolchain, file: &Path) -> Result<Vec<(f64, Vec<String>)>, String> {
    let out = Command::new(&tc.go)
        .args(["tool", "pprof", "-traces"])
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", gocache_dir())
        .output()
        .map_err(|e| format!("go tool pprof: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go tool pprof -traces {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut samples = Vec::new();
    for block in text.split("-----------+-------------------------------------------------------") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        // Label lines ("key: value") come before the first frame.
        let Some((value, first)) = lines.by_ref().find_map(|l| {
            let (v, f) = l.trim_start().split_once(char::is_whitespace)?;
            Some((seconds(v)?, f.trim().to_string()))
        }) else {
            continue;
        };
        let mut funcs = vec![first];
        funcs.extend(lines.map(|l| l.trim().to_string()));
        samples.push((value, funcs));
    }
    Ok(samples)
}

/// `10ms`, `1.20s`, `350us` as seconds.
fn seconds(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "mins" | "min" => 60.0,
        _ => return None,
    };
    Some(n * scale)
}

/// A profile's total seconds and each kind's share (percent of the total).
type Shares = (f64, Vec<f64>);

/// Total seconds and each kind's share (percent of the total).
fn shares(samples: &[(f64, Vec<String>)], kinds: &[Kind]) -> Shares {
    let total: f64 = samples.iter().map(|s| s.0).sum();
    let shares = kinds
        .iter()
        .map(|k| {
            let t: f64 = samples
                .iter()
                .filter(|s| s.1.iter().any(|f| k.contains(&f.as_str())))
                .map(|s| s.0)
                .sum();
            100.0 * t / total.max(1e-9)
        })
        .collect();
    (total, shares)
}

fn tmp(name: &str) -> PathBuf {
    let dir = target_dir().join("tmp/cpu-accounting");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// One comparison: the runtime's and gospy's profiles of the same window,
/// gospy's summary line, and the CPU time `/proc` says the target used.
struct Comparison {
    runtime: Shares,
    /// The fixture's exact split (`-lock`): process CPU seconds, shares.
    exact: Option<Shares>,
    gospy: Shares,
    /// gospy's profile as `go tool pprof -traces` shows it.
    gospy_traces: Vec<(f64, Vec<String>)>,
    stderr: String,
    proc_cpu_secs: f64,
    /// Seconds the hypervisor took from this machine's CPUs meanwhile.
    steal_secs: f64,
}

/// The machine's steal time so far (`/proc/stat`'s eighth CPU column), in
/// seconds: time a virtual machine's CPUs waited for the host.
fn machine_steal_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// utime + stime of `pid`, in seconds.
fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// How to run one comparison.
struct Setup<'a> {
    /// How the fixture is built (cgo builds have a sixth kind).
    build: BuildMode,
    kinds: &'a [Kind],
    gomaxprocs: usize,
    /// gospy's rate (the runtime's is the fixture's default, 100 Hz).
    rate: &'a str,
    window_secs: u32,
    /// gospy's extra flags.
    extra: &'a [&'a str],
    /// Lock the fixture's workers to threads and have it write the exact
    /// split too.
    lock: bool,
}

/// Records the fixture as `setup` says with gospy and with the runtime
/// over the same window, calling `prepare(pid)` once the fixture runs.
fn compare_with(
    tc: &Toolchain,
    setup: &Setup,
    prepare: &dyn Fn(u32) -> Result<(), String>,
) -> Result<Comparison, String> {
    let bin = build_fixture("cpukinds", tc, setup.build);
    let tag = format!(
        "go{}-{}-{:?}{}",
        tc.version,
        setup.gomaxprocs,
        setup.build,
        setup.extra.join("")
    );
    let runtime_file = tmp(&format!("runtime-{tag}.pprof"));
    let gospy_file = tmp(&format!("gospy-{tag}.pprof"));
    let exact_file = PathBuf::from(format!("{}.truth", runtime_file.display()));
    let _ = std::fs::remove_file(&exact_file);
    let window = format!("{}s", setup.window_secs);
    let mut fixture_args = vec![
        "-profile",
        runtime_file.to_str().unwrap(),
        "-window",
        &window,
    ];
    if setup.lock {
        fixture_args.push("-lock");
    }
    let mut target = Target::start_with_env(
        &bin,
        &fixture_args,
        &[("GOMAXPROCS", &setup.gomaxprocs.to_string())],
    );
    prepare(target.pid())?;
    std::thread::sleep(Duration::from_millis(500));
    let pid = target.pid().to_string();
    let duration = setup.window_secs.to_string();
    let mut args = vec![
        "record", "--pid", &pid, "-d", &duration, "-r", setup.rate, "-f", "pprof", "-o",
    ];
    let out_path = gospy_file.to_str().unwrap().to_string();
    args.push(&out_path);
    args.extend_from_slice(setup.extra);
    let cpu_before = proc_cpu_secs(target.pid());
    let steal_before = machine_steal_secs();
    // SAFETY: kill sends a signal to our own child.
    let rc = unsafe { libc::kill(target.pid() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(rc, 0);
    let out = run_gospy(&args);
    let proc_cpu = proc_cpu_secs(target.pid()) - cpu_before;
    let steal_secs = machine_steal_secs() - steal_before;
    if !out.status.success() {
        return Err(format!(
            "gospy record failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    target.wait_for("PROFILED", Duration::from_secs(30));
    let gospy_traces = traces(tc, &gospy_file)?;
    let exact = if setup.lock {
        Some(exact_split(&exact_file, setup.kinds.len())?)
    } else {
        None
    };
    Ok(Comparison {
        exact,
        runtime: shares(&traces(tc, &runtime_file)?, setup.kinds),
        gospy: shares(&gospy_traces, setup.kinds),
        gospy_traces,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        proc_cpu_secs: proc_cpu,
        steal_secs,
    })
}

/// The fixture's `.truth` file: one line of nanoseconds per kind, then the
/// process's CPU nanoseconds over the same window.
fn exact_split(path: &Path, kinds: usize) -> Result<Shares, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("the fixture wrote no exact split {}: {e}", path.display()))?;
    let nanos: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    if nanos.len() != kinds + 1 || nanos[kinds] <= 0.0 {
        return Err(format!("{}: unexpected contents {text:?}", path.display()));
    }
    let process = nanos[kinds];
    let shares = nanos[..kinds].iter().map(|k| 100.0 * k / process).collect();
    Ok((process / 1e9, shares))
}

fn describe(label: &str, (total, shares): &Shares) -> String {
    let kinds: Vec<String> = CGO_KINDS
        .iter()
        .zip(shares)
        .map(|(k, s)| format!("{}={s:.1}%", k[0].trim_start_matches("main.kind")))
        .collect();
    format!("{label}: {total:.2} s of CPU, {}", kinds.join(" "))
}

/// The issue's goal: each kind's share within 3 points of the truth.
const GOAL_SHARE_POINTS: f64 = 3.0;

/// Worst share difference (points) from the exact split allowed in the
/// default (ptrace) mode: measured up to 2.7 points with as many Ps as
/// cores and up to 5.0 with twice as many (the stop-the-world kind
/// over-counted, system calls under-counted; README). The goal of 3 is not
/// met there yet.
const DEFAULT_MODE_EXACT_POINTS: f64 = 8.0;

/// Before Go 1.17, `--nonblocking` loses the goroutine frames of samples
/// in the vDSO: the function that calls it keeps its stack pointer in BP
/// there, which breaks the frame pointer chain, and the goroutine's frames
/// are read from the live stack after the fact (README: "What a sample
/// is"); the vDSO kind is under-counted by ~10 points on this fixture (its
/// workers change function every 5 ms).
const OLD_GO_NONBLOCKING_EXACT_POINTS: f64 = 14.0;

/// Worst share difference allowed from the runtime's own profile. The
/// runtime's profiler is itself up to ~9 points off the exact split here
/// (system calls over-counted, stop-the-world and allocation under-counted;
/// measured gospy against it: up to 8.1 points in `--nonblocking`, 10.4 in
/// the default mode), so this is looser than the goal: it catches a kind
/// of code gospy loses altogether.
const RUNTIME_SHARE_POINTS: f64 = 15.0;

/// The same before Go 1.17 in `--nonblocking` (the vDSO, above).
const OLD_GO_NONBLOCKING_RUNTIME_POINTS: f64 = 20.0;

/// The same under a one-core CPU quota: measured 4.4-7.3 points on an
/// otherwise idle machine, 11.2 once with a build running beside it (the
/// stop-the-world kind over-counted: README, "What a sample is").
const QUOTA_SHARE_POINTS: f64 = 15.0;

/// Total CPU time agrees within 10% with the fixture's own CPU time over
/// the window, the runtime's profile or what `/proc` says the target used,
/// in both modes, with as many Ps as cores and with twice as many (where a
/// sampler that counts runnable threads as running inflates it), on every
/// toolchain; each kind of code (the vDSO, the system stack, the kernel,
/// the GC) gets its share of it, as the exact split and the runtime's
/// profiler say; and `--nonblocking` writes every sample it collected.
#[test]
fn on_cpu_time_agrees_with_the_runtimes_profiler() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut failures = Vec::new();
    let _lock = start_exclusive_lock();
    for tc in &toolchains() {
        for gomaxprocs in [cores, 2 * cores] {
            let old_go = go_minor(&tc.version) < 17;
            for (mode, extra, exact_points, runtime_points) in [
                (
                    "default",
                    &[][..],
                    DEFAULT_MODE_EXACT_POINTS,
                    RUNTIME_SHARE_POINTS,
                ),
                (
                    "--nonblocking",
                    &["--nonblocking"][..],
                    if old_go {
                        OLD_GO_NONBLOCKING_EXACT_POINTS
                    } else {
                        GOAL_SHARE_POINTS
                    },
                    if old_go {
                        OLD_GO_NONBLOCKING_RUNTIME_POINTS
                    } else {
                        RUNTIME_SHARE_POINTS
                    },
                ),
            ] {
                let setup = Setup {
                    build: BuildMode::Default,
                    kinds: &KINDS,
                    gomaxprocs,
                    rate: "200",
                    window_secs: WINDOW_SECS,
                    extra,
                    lock: true,
                };
                let compared = compare_with(tc, &setup, &|_| Ok(()));
                let c = match compared {
                    Ok(c) => c,
                    Err(e) => {
                        failures.push(format!(
                            "Go {} GOMAXPROCS={gomaxprocs} {mode}: {e}",
                            tc.version
                        ));
                        continue;
                    }
                };
                check(
                    tc,
                    &setup,
                    mode,
                    &c,
                    (exact_points, runtime_points),
                    &mut failures,
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Checks comparison `c` (made as `setup` says, gospy in `mode`): the total,
/// the shares against the exact split (within `exact_points`) and the
/// runtime's (within `runtime_points`), and that `--nonblocking` wrote every
/// sample. Failures are pushed to `out`; returns the description.
fn check(
    tc: &Toolchain,
    setup: &Setup,
    mode: &str,
    c: &Comparison,
    (exact_points, runtime_points): (f64, f64),
    out: &mut Vec<String>,
) -> String {
    let exact = c.exact.as_ref().expect("the fixture ran with -lock");
    let text = format!(
        "Go {} GOMAXPROCS={} {:?} {mode}\n  {}\n  {}\n  {}",
        tc.version,
        setup.gomaxprocs,
        setup.build,
        describe("exact  ", exact),
        describe("runtime", &c.runtime),
        describe("gospy  ", &c.gospy)
    );
    eprintln!("{text}");
    // Three references, each with a known flaw: the runtime's
    // profiler sometimes loses a quarter of its samples (seen
    // with Go 1.22), /proc's figure spans gospy's start-up too,
    // and the fixture's window is its own sleep, not gospy's.
    // Within 10% of any passes; 0.65x (the old --nonblocking)
    // or 1.33x (counting runnable threads) fail.
    let vs_exact = c.gospy.0 / exact.0.max(1e-9);
    let vs_runtime = c.gospy.0 / c.runtime.0.max(1e-9);
    let vs_proc = c.gospy.0 / c.proc_cpu_secs.max(1e-9);
    if ![vs_exact, vs_runtime, vs_proc]
        .iter()
        .any(|r| (0.9..=1.1).contains(r))
    {
        out.push(format!(
            "{text}\n  /proc: {:.2} s; total CPU ratio {vs_exact:.2} to the \
             fixture's, {vs_runtime:.2} to the runtime's, {vs_proc:.2} to /proc's (machine steal time meanwhile: \
             {:.2} s)",
            c.proc_cpu_secs, c.steal_secs
        ));
    }
    let worst = worst_share_difference(exact, &c.gospy);
    if worst > exact_points {
        out.push(format!(
            "{text}\n  worst share difference from the exact split {worst:.1} \
             points (allowed {exact_points})"
        ));
    }
    let worst = worst_share_difference(&c.runtime, &c.gospy);
    if worst > runtime_points {
        out.push(format!(
            "{text}\n  worst share difference from the runtime's {worst:.1} \
             points (allowed {runtime_points})"
        ));
    }
    if setup.extra.contains(&"--nonblocking") {
        // One perf sample per 1/rate s of a thread's CPU time as
        // perf's clock counts it: every sample is written, for
        // that time less any steal time (never more).
        let (ticks, secs) = ticks_and_seconds(&c.stderr);
        let rate: f64 = setup.rate.parse().expect("a numeric rate");
        if ticks == 0 || secs > ticks as f64 / rate + 0.011 {
            out.push(format!(
                "{text}\n  {ticks} samples collected at {rate} Hz but {secs} s written:\n{}",
                c.stderr
            ));
        }
    }
    text
}

/// C code called through cgo (a cgo build of the fixture has it as a sixth
/// kind), recorded with `--native`, as cores x1 above: its share agrees with
/// the exact split and the runtime's as the other kinds' do, and its time
/// carries the C frames (`cpukinds_c_burn`), in the default mode above its
/// goroutine's Go frames. `--nonblocking` knows a C sample's goroutine
/// (asmcgocall leaves it on the system stack) but not its Go frames, which
/// would be read a batch later: it counts C samples under `[cgo call]`.
#[test]
fn cgo_code_gets_its_share_with_native() {
    let gomaxprocs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut failures = Vec::new();
    let _lock = start_exclusive_lock();
    for tc in &toolchains() {
        let old_go = go_minor(&tc.version) < 17;
        for (mode, extra, kinds, points) in [
            (
                "default",
                &["--native"][..],
                &CGO_KINDS,
                (DEFAULT_MODE_EXACT_POINTS, RUNTIME_SHARE_POINTS),
            ),
            (
                "--nonblocking",
                &["--nonblocking", "--native"][..],
                &NONBLOCKING_CGO_KINDS,
                if old_go {
                    (
                        OLD_GO_NONBLOCKING_EXACT_POINTS,
                        OLD_GO_NONBLOCKING_RUNTIME_POINTS,
                    )
                } else {
                    (GOAL_SHARE_POINTS, RUNTIME_SHARE_POINTS)
                },
            ),
        ] {
            let setup = Setup {
                build: BuildMode::Cgo,
                kinds,
                gomaxprocs,
                rate: "200",
                window_secs: WINDOW_SECS,
                extra,
                lock: true,
            };
            let c = match compare_with(tc, &setup, &|_| Ok(())) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("Go {} cgo {mode}: {e}", tc.version));
                    continue;
                }
            };
            let text = check(tc, &setup, mode, &c, points, &mut failures);
            let exact_cgo = c.exact.as_ref().map_or(0.0, |e| e.1[5]);
            let share_with = |frames: &[&str]| {
                let total: f64 = c.gospy_traces.iter().map(|s| s.0).sum();
                let with: f64 = c
                    .gospy_traces
                    .iter()
                    .filter(|s| frames.iter().all(|f| s.1.iter().any(|g| g == f)))
                    .map(|s| s.0)
                    .sum();
                100.0 * with / total.max(1e-9)
            };
            let with_c = share_with(&["cpukinds_c_burn"]);
            if (with_c - exact_cgo).abs() > points.0 {
                failures.push(format!(
                    "{text}\n  {with_c:.1}% has the C frame cpukinds_c_burn, the C code's \
                     exact share is {exact_cgo:.1}%"
                ));
            }
            let with_both = share_with(&["cpukinds_c_burn", "main.kindCgo"]);
            if mode == "default" && (with_both - exact_cgo).abs() > points.0 {
                failures.push(format!(
                    "{text}\n  {with_both:.1}% has the C frame cpukinds_c_burn under \
                     main.kindCgo, the C code's exact share is {exact_cgo:.1}%"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The minor version of a toolchain ("1.15" -> 15).
fn go_minor(version: &str) -> u32 {
    let minor = version.split('.').nth(1).and_then(|m| m.parse().ok());
    minor.unwrap_or_else(|| panic!("toolchain version {version:?} is not 1.N"))
}

/// The largest difference, in points, between two profiles' shares.
fn worst_share_difference(a: &Shares, b: &Shares) -> f64 {
    a.1.iter()
        .zip(&b.1)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// (ticks, CPU seconds) from gospy's summary line, "collected N ticks, M
/// stacks, X s of CPU ...".
fn ticks_and_seconds(stderr: &str) -> (u64, f64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("collected "))
        .unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    let ticks = words.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    let secs = words
        .iter()
        .position(|w| *w == "stacks,")
        .and_then(|i| words.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN);
    (ticks, secs)
}

/// A cgroup with a CPU quota of one core, removed on drop: cgroup v1's CPU
/// controller at /sys/fs/cgroup/cpu (this machine's kind), else cgroup v2's
/// `cpu.max` under /sys/fs/cgroup.
struct OneCoreGroup(PathBuf);

impl OneCoreGroup {
    fn new() -> Result<OneCoreGroup, String> {
        let name = format!("gospy-test-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let v2_has_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"));
        let (dir, v1_mode) = if v1.join("cpu.cfs_quota_us").exists() {
            (v1.join(&name), true)
        } else if v2_has_cpu {
            // Children get the cpu controller only if the parent delegates it.
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            (v2.join(&name), false)
        } else {
            return Err(
                "this test needs cgroup v1's CPU controller at /sys/fs/cgroup/cpu or \
                        cgroup v2 with the cpu controller at /sys/fs/cgroup"
                    .into(),
            );
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "cannot create {} ({e}): this test needs root",
                dir.display()
            )
        })?;
        let group = OneCoreGroup(dir);
        if v1_mode {
            group.write("cpu.cfs_period_us", "100000")?;
            group.write("cpu.cfs_quota_us", "100000")?;
        } else {
            group.write("cpu.max", "100000 100000")?;
        }
        Ok(group)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.0.join(file), value)
            .map_err(|e| format!("writing {value} to {}/{file}: {e}", self.0.display()))
    }

    /// Moves every thread of process `pid` into the group.
    fn add(&self, pid: u32) -> Result<(), String> {
        self.write("cgroup.procs", &pid.to_string())
    }

    fn throttled(&self) -> u64 {
        std::fs::read_to_string(self.0.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for OneCoreGroup {
    fn drop(&mut self) {
        // The fixture is gone by now (killed when its Target dropped);
        // a group with no process in it can be removed.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A container-like CPU limit: a quota of one core with GOMAXPROCS=2, so
/// the target's threads are throttled for part of every 100 ms period. A
/// throttled thread cannot stop until its quota refills: gospy must not
/// hold the program stopped for it (the old design paused the target 36%
/// of the time here), must reach its rate, and must still count the CPU
/// time the target really used (`/proc`: the runtime's own profiler loses
/// samples under throttling, so it is not the reference for the total).
#[test]
fn cpu_quota_neither_freezes_the_target_nor_skews_the_profile() {
    let tc = newest_toolchain();
    let _lock = start_exclusive_lock();
    let group = OneCoreGroup::new().unwrap_or_else(|e| panic!("{e}"));
    let setup = Setup {
        build: BuildMode::Default,
        kinds: &KINDS,
        gomaxprocs: 2,
        rate: "100",
        window_secs: QUOTA_WINDOW_SECS,
        extra: &[],
        lock: false,
    };
    let c = compare_with(&tc, &setup, &|pid| group.add(pid)).unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}\n{}\n/proc: {:.2} s of CPU\n{}",
        describe("runtime", &c.runtime),
        describe("gospy  ", &c.gospy),
        c.proc_cpu_secs,
        c.stderr
    );
    eprintln!("{text}");
    assert!(group.throttled() > 10, "the quota did not throttle: {text}");
    let ratio = c.gospy.0 / c.proc_cpu_secs.max(1e-9);
    assert!(
        (0.9..=1.1).contains(&ratio),
        "total CPU ratio {ratio:.2}: {text}"
    );
    let worst = worst_share_difference(&c.runtime, &c.gospy);
    assert!(
        worst <= QUOTA_SHARE_POINTS,
        "worst share difference {worst:.1}: {text}"
    );
    // "collected N ticks, ...; target threads stopped P ms in total".
    let line = c
        .stderr
        .lines()
        .find(|l| l.starts_with("collected "))
        .unwrap_or("");
    let ticks: u64 = line
        .strip_prefix("collected ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let stopped_ms: f64 = line
        .split_once("target threads stopped ")
        .and_then(|(_, r)| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::MAX);
    let window_ms = f64::from(QUOTA_WINDOW_SECS) * 1000.0;
    assert!(
        stopped_ms <= window_ms / 100.0,
        "threads stopped {stopped_ms} ms in {window_ms} ms: {text}"
    );
    assert!(
        ticks as f64 >= 0.9 * 100.0 * f64::from(QUOTA_WINDOW_SECS),
        "{ticks} ticks at 100 Hz: {text}"
    );
}
