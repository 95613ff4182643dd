//! On-CPU profiles against the runtime's own CPU profiler over the same
//! window: the `cpukinds` fixture burns CPU in five kinds of code and, on
//! SIGUSR1, writes `pprof.StartCPUProfile` output for its `-window`, while
//! gospy records the same seconds. Both files are read with the real
//! `go tool pprof -traces`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const KINDS: [&str; 5] = [
    "main.kindPlain",
    "main.kindVDSO",
    "main.kindSTW",
    "main.kindAlloc",
    "main.kindSyscall",
];

const WINDOW_SECS: u32 = 5;

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
fn shares(samples: &[(f64, Vec<String>)]) -> Shares {
    let total: f64 = samples.iter().map(|s| s.0).sum();
    let shares = KINDS
        .iter()
        .map(|k| {
            let t: f64 = samples
                .iter()
                .filter(|s| s.1.iter().any(|f| f == k))
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

/// Records the fixture with gospy and with the runtime over the same
/// window; returns (runtime, gospy) as (total seconds, shares).
fn compare(tc: &Toolchain, gomaxprocs: usize, extra: &[&str]) -> Result<(Shares, Shares), String> {
    let bin = build_fixture("cpukinds", tc, BuildMode::Default);
    let tag = format!("go{}-{gomaxprocs}{}", tc.version, extra.join(""));
    let runtime_file = tmp(&format!("runtime-{tag}.pprof"));
    let gospy_file = tmp(&format!("gospy-{tag}.pprof"));
    let window = format!("{WINDOW_SECS}s");
    let mut target = Target::start_with_env(
        &bin,
        &[
            "-profile",
            runtime_file.to_str().unwrap(),
            "-window",
            &window,
        ],
        &[("GOMAXPROCS", &gomaxprocs.to_string())],
    );
    std::thread::sleep(Duration::from_millis(500));
    let pid = target.pid().to_string();
    let duration = WINDOW_SECS.to_string();
    let mut args = vec![
        "record", "--pid", &pid, "-d", &duration, "-r", "200", "-f", "pprof", "-o",
    ];
    let out_path = gospy_file.to_str().unwrap().to_string();
    args.push(&out_path);
    args.extend_from_slice(extra);
    // SAFETY: kill sends a signal to our own child.
    let rc = unsafe { libc::kill(target.pid() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(rc, 0);
    let out = run_gospy(&args);
    if !out.status.success() {
        return Err(format!(
            "gospy record failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    target.wait_for("PROFILED", Duration::from_secs(30));
    let runtime = shares(&traces(tc, &runtime_file)?);
    let gospy = shares(&traces(tc, &gospy_file)?);
    Ok((runtime, gospy))
}

fn describe(label: &str, (total, shares): &Shares) -> String {
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(shares)
        .map(|(k, s)| format!("{}={s:.1}%", k.trim_start_matches("main.kind")))
        .collect();
    format!("{label}: {total:.2} s of CPU, {}", kinds.join(" "))
}

/// Total CPU time agrees with the runtime's profile within 10%, with as
/// many Ps as cores and with twice as many (where a sampler that counts
/// runnable threads as running inflates it), and each kind of code (the
/// vDSO, the system stack, the kernel, the GC) gets its share of it.
///
/// Shares are checked within 10 points: measured differences are up to ~4
/// points with as many Ps as cores and up to ~6.5 with twice as many (the
/// README's table); the issue's goal of 3 is not met yet at 2x.
#[test]
fn on_cpu_time_agrees_with_the_runtimes_profiler() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let all = toolchains();
    // Oldest and newest: Go 1.15's profiler uses a process-wide timer,
    // 1.18+ per-thread timers.
    let picked = [all.first().unwrap().clone(), all.last().unwrap().clone()];
    let mut failures = Vec::new();
    let _lock = start_exclusive_lock();
    for tc in &picked {
        for gomaxprocs in [cores, 2 * cores] {
            let report = match compare(tc, gomaxprocs, &[]) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("Go {} GOMAXPROCS={gomaxprocs}: {e}", tc.version));
                    continue;
                }
            };
            let (runtime, gospy) = &report;
            let text = format!(
                "Go {} GOMAXPROCS={gomaxprocs}\n  {}\n  {}",
                tc.version,
                describe("runtime", runtime),
                describe("gospy  ", gospy)
            );
            eprintln!("{text}");
            let ratio = gospy.0 / runtime.0.max(1e-9);
            let worst = runtime
                .1
                .iter()
                .zip(&gospy.1)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            if !(0.9..=1.1).contains(&ratio) {
                failures.push(format!("{text}\n  total CPU ratio {ratio:.2}"));
            }
            if worst > 10.0 {
                failures.push(format!(
                    "{text}\n  worst share difference {worst:.1} points"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One CPU-heavy test at a time: they measure the machine.
fn start_exclusive_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
