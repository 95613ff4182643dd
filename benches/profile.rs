//! Benchmark of `gospy profile heap` on a large memory profile (figures,
//! not a pass/fail test):
//!
//!     cargo bench --bench profile [-- DEPTH...]    # default depths 14 17
//!
//! Starts the `manysites` fixture (newest Go toolchain), which allocates
//! from 2^DEPTH distinct call stacks with MemProfileRate = 1, so its memory
//! profile has about that many buckets, and prints the median over several
//! runs of: the time gospy took to read the bucket list (its own summary
//! line), its total wall time (attach, read, symbolize, write the pprof
//! file) and its peak RSS. Goal (issue "gospy profile"): 100k buckets read
//! well under a second.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const RUNS: usize = 5;

/// One run: (buckets, read time, wall time, peak RSS in KiB).
// The child is reaped with wait4 (for its peak RSS), which clippy does not
// see.
#[allow(clippy::zombie_processes)]
fn profile_once(pid: u32, out: &str) -> (u64, Duration, Duration, i64) {
    let started = Instant::now();
    let child = Command::new(gospy_bin())
        .args(["profile", "heap", "--pid", &pid.to_string(), "-o", out])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn gospy");
    let id = child.id() as libc::pid_t;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr {
        use std::io::Read;
        e.read_to_string(&mut stderr).expect("read gospy's stderr");
    }
    let mut status = 0;
    // SAFETY: rusage is plain data filled in by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers.
    assert_eq!(unsafe { libc::wait4(id, &mut status, 0, &mut usage) }, id);
    let wall = started.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "gospy failed: {stderr}"
    );
    // "heap profile: N buckets read in X s, ..."
    let buckets = stderr
        .split("heap profile: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bucket count in {stderr:?}"));
    let read = stderr
        .split("read in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no read time in {stderr:?}"));
    (
        buckets,
        Duration::from_secs_f64(read),
        wall,
        usage.ru_maxrss,
    )
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/profile.rs is a benchmark: run it with `cargo bench --bench profile`");
        return;
    }
    let depths: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let depths = if depths.is_empty() {
        vec![14, 17]
    } else {
        depths
    };
    let tc = newest_toolchain();
    let bin = build_fixture("manysites", &tc, BuildMode::Default);
    let out = target_dir().join("tmp/bench-profile.pb.gz");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    println!(
        "gospy profile heap benchmark: Go {}, median of {RUNS} runs",
        tc.full_version()
    );
    println!(
        "{:>9} {:>10} {:>10} {:>10}",
        "buckets", "read", "wall", "peak RSS"
    );
    for depth in depths {
        let target = Target::start(&bin, &["-depth", &depth.to_string()]);
        let runs: Vec<_> = (0..RUNS)
            .map(|_| profile_once(target.pid(), out.to_str().unwrap()))
            .collect();
        println!(
            "{:>9} {:>8.0}ms {:>8.0}ms {:>8}MB",
            runs[0].0,
            median(runs.iter().map(|r| r.1.as_secs_f64()).collect()) * 1e3,
            median(runs.iter().map(|r| r.2.as_secs_f64()).collect()) * 1e3,
            median(runs.iter().map(|r| r.3).collect()) / 1024
        );
    }
}
