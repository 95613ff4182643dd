//! Benchmark of `gospy dump` (figures, not a pass/fail test):
//!
//!     cargo bench --bench dump [-- 1000 10000 100000]
//!
//! Starts the `parked` fixture (newest Go toolchain) with N extra parked
//! goroutines and, for each N, prints the median over several runs of:
//! how long gospy kept the target paused, gospy's total wall time and
//! peak RSS, and how long the fixture's own `runtime.Stack(buf, true)`
//! takes (it stops the target's world for all of that time). Goals (issue
//! "Engine and gospy dump"): pause <= 1/10 of runtime.Stack at every N,
//! wall <= 0.4 s and peak RSS <= 150 MB at 100k goroutines.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const RUNS: usize = 5;

struct Run {
    pause: Duration,
    wall: Duration,
    peak_rss_kib: i64,
}

/// Runs `gospy dump --pid PID` once, output discarded.
fn dump_once(pid: u32) -> Run {
    let started = Instant::now();
    let child = Command::new(gospy_bin())
        .args(["dump", "--pid", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gospy");
    let child_pid = child.id() as libc::pid_t;
    let output = child.wait_with_output_rusage();
    let wall = started.elapsed();
    let header =
        String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(4096)]).into_owned();
    // "Goroutines: N, target paused for X ms"
    let pause_ms: f64 = header
        .split("target paused for ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("gospy {child_pid} printed no pause:\n{header}"));
    Run {
        pause: Duration::from_secs_f64(pause_ms / 1e3),
        wall,
        peak_rss_kib: output.max_rss_kib,
    }
}

struct OutputWithRusage {
    stdout: Vec<u8>,
    max_rss_kib: i64,
}

trait WaitRusage {
    fn wait_with_output_rusage(self) -> OutputWithRusage;
}

impl WaitRusage for std::process::Child {
    /// Reads stdout to the end, then reaps the child with wait4 to get its
    /// peak RSS (std's wait does not report resource usage).
    fn wait_with_output_rusage(mut self) -> OutputWithRusage {
        use std::io::Read;
        let mut stdout = Vec::new();
        if let Some(mut out) = self.stdout.take() {
            out.read_to_end(&mut stdout).expect("read gospy output");
        }
        let mut status = 0;
        // SAFETY: rusage is plain data filled in by the kernel.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child, with valid out-pointers.
        let r = unsafe { libc::wait4(self.id() as libc::pid_t, &mut status, 0, &mut usage) };
        assert_eq!(r, self.id() as libc::pid_t, "wait4 failed");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "gospy failed: {status}"
        );
        OutputWithRusage {
            stdout,
            max_rss_kib: usage.ru_maxrss,
        }
    }
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs benchmark binaries too (without
    // `--bench`): they take minutes and measure nothing useful there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/dump.rs is a benchmark: run it with `cargo bench --bench dump`");
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    println!(
        "gospy dump benchmark: Go {}, median of {RUNS} runs, {} CPUs",
        tc.full_version(),
        num_cpus()
    );
    println!(
        "{:>9} {:>10} {:>14} {:>12} {:>10} {:>13} {:>10}",
        "extra gs", "pause ms", "runtime.Stack", "pause/Stack", "wall ms", "peak RSS MB", "goals"
    );
    for n in sizes {
        let mut target = Target::start(&bin, &["-goroutines", &n.to_string(), "-burners", "0"]);
        let mut stack_ns = Vec::new();
        for _ in 0..3 {
            target.ground_truth_text();
            stack_ns.push(
                target
                    .last_stack_ns()
                    .expect("fixture reports runtime.Stack time"),
            );
        }
        let runtime_stack = Duration::from_nanos(median(stack_ns));
        dump_once(target.pid()); // warm the page cache
        let runs: Vec<Run> = (0..RUNS).map(|_| dump_once(target.pid())).collect();
        let pause = median(runs.iter().map(|r| r.pause).collect());
        let wall = median(runs.iter().map(|r| r.wall).collect());
        let rss_mb = median(runs.iter().map(|r| r.peak_rss_kib).collect()) as f64 / 1024.0;
        let ratio = pause.as_secs_f64() / runtime_stack.as_secs_f64();
        let mut goals = vec![if ratio <= 0.1 {
            "pause ok"
        } else {
            "PAUSE MISSED"
        }];
        if n >= 100_000 {
            goals.push(if wall <= Duration::from_millis(400) {
                "wall ok"
            } else {
                "WALL MISSED"
            });
            goals.push(if rss_mb <= 150.0 {
                "rss ok"
            } else {
                "RSS MISSED"
            });
        }
        println!(
            "{:>9} {:>10.2} {:>11.2} ms {:>12.3} {:>10.1} {:>13.1} {}",
            n,
            pause.as_secs_f64() * 1e3,
            runtime_stack.as_secs_f64() * 1e3,
            ratio,
            wall.as_secs_f64() * 1e3,
            rss_mb,
            goals.join(", ")
        );
        assert!(target.is_running_not_stopped());
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
