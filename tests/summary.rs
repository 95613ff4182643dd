//! `gospy summary` against the `summary` fixture's own figures
//! (testdata/fixtures/summary/main.go): on SIGUSR1 the fixture calls
//! runtime.ReadMemStats, NumGoroutine and GOMAXPROCS, writes them as JSON
//! and stays quiet, and gospy must read the same figures from outside.
//!
//! Tolerances (why: see src/summary.rs):
//!
//! * exact: GOMAXPROCS, NumGC, NumForcedGC, PauseTotalNs, the last pause,
//!   LastGC, GCCPUFraction (all written once at the end of a GC), the user
//!   goroutine count (NumGoroutine), the channel details of every parked
//!   goroutine;
//! * heap bytes and object counts: within 1% + 64 KiB (bytes) or 1% + 64
//!   (counts). ReadMemStats flushes every mcache, so right after it the
//!   runtime's counters equal its result; what the fixture allocates while
//!   writing its report (a few small objects, at most a new span) is the
//!   only difference.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `gospy summary --pid PID ARGS...`, stdout; panics with stderr on failure.
fn summary(pid: u32, args: &[&str]) -> String {
    let pid = pid.to_string();
    let mut all = vec!["summary", "--pid", &pid];
    all.extend_from_slice(args);
    let out = run_gospy(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gospy {all:?} failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn summary_json(pid: u32, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = summary(pid, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON ({e}):\n{text}"))
}

/// The fixture's own figures (its report to SIGUSR1).
fn fixture_figures(target: &mut Target) -> Value {
    let text = target.ground_truth_text();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture report ({e}):\n{text}"))
}

fn close(name: &str, ours: &Value, theirs: &Value, slack: u64) -> Result<(), String> {
    let (Some(a), Some(b)) = (ours.as_u64(), theirs.as_u64()) else {
        return Err(format!("{name}: gospy {ours}, runtime {theirs}"));
    };
    let allowed = b / 100 + slack;
    if a.abs_diff(b) > allowed {
        return Err(format!(
            "{name}: gospy {a}, runtime {b} (allowed ±{allowed})"
        ));
    }
    Ok(())
}

fn exact(name: &str, ours: &Value, theirs: &Value) -> Result<(), String> {
    if ours != theirs {
        return Err(format!("{name}: gospy {ours}, runtime {theirs}"));
    }
    Ok(())
}

/// (start function, direction, element type, capacity, length) of the
/// fixture's parked goroutines.
const PARKED: &[(&str, &str, &str, u64, u64)] = &[
    ("main.parkRecvInt", "receive", "int", 0, 0),
    ("main.parkSendStrings", "send", "string", 4, 4),
    ("main.parkRecvPoints", "receive", "main.point", 8, 0),
    ("main.parkSendPtrs", "send", "*int", 0, 0),
    ("main.parkRecvBytes", "receive", "[]uint8", 2, 0),
];

fn check(tc: &Toolchain, target: &mut Target) -> Result<(), String> {
    let truth = fixture_figures(target);
    let s = summary_json(target.pid(), &["--pc", "start"]);
    let mut errors = Vec::new();
    let mut push = |r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    push(exact("gomaxprocs", &s["gomaxprocs"], &truth["gomaxprocs"]));
    push(exact("ncpu", &s["ncpu"], &truth["num_cpu"]));
    let gc = &s["gc"];
    push(exact("num_gc", &gc["count"], &truth["num_gc"]));
    push(exact(
        "num_forced_gc",
        &gc["forced_count"],
        &truth["num_forced_gc"],
    ));
    push(exact(
        "pause_total_ns",
        &gc["pause_total_ns"],
        &truth["pause_total_ns"],
    ));
    push(exact(
        "last_pause_ns",
        &gc["last_pause_ns"],
        &truth["last_pause_ns"],
    ));
    push(exact(
        "last_gc",
        &gc["last_gc_unix_ns"],
        &truth["last_gc_unix_ns"],
    ));
    let (f1, f2) = (
        gc["cpu_fraction"].as_f64(),
        truth["gc_cpu_fraction"].as_f64(),
    );
    if !matches!((f1, f2), (Some(a), Some(b)) if (a - b).abs() <= 1e-12 * b.abs().max(1.0)) {
        push(Err(format!(
            "gc_cpu_fraction: gospy {f1:?}, runtime {f2:?}"
        )));
    }
    let heap = &s["heap"];
    push(close(
        "heap_inuse",
        &heap["in_use_bytes"],
        &truth["heap_inuse"],
        64 << 10,
    ));
    push(close(
        "heap_sys",
        &heap["sys_bytes"],
        &truth["heap_sys"],
        64 << 10,
    ));
    push(close(
        "heap_alloc",
        &heap["live_bytes"],
        &truth["heap_alloc"],
        64 << 10,
    ));
    push(close(
        "heap_objects",
        &heap["objects"],
        &truth["heap_objects"],
        64,
    ));
    push(close("mallocs", &heap["mallocs"], &truth["mallocs"], 64));
    push(close("frees", &heap["frees"], &truth["frees"], 64));
    // The fixture keeps 4 MiB live.
    if heap["live_bytes"].as_u64().unwrap_or(0) < 4 << 20 {
        push(Err(format!("live bytes below the fixture's 4 MiB: {heap}")));
    }
    push(exact(
        "goroutines",
        &s["goroutine_counts"]["user"],
        &truth["goroutines"],
    ));
    let procs = s["procs"].as_array().cloned().unwrap_or_default();
    if Some(procs.len() as u64) != truth["gomaxprocs"].as_u64() {
        push(Err(format!(
            "{} Ps for GOMAXPROCS {}",
            procs.len(),
            truth["gomaxprocs"]
        )));
    }
    let threads = &s["threads"];
    if threads["total"].as_u64().unwrap_or(0) == 0 {
        push(Err(format!("no threads: {threads}")));
    }
    if s["uptime_seconds"]
        .as_f64()
        .is_none_or(|u| !(0.0..600.0).contains(&u))
    {
        push(Err(format!("uptime {}", s["uptime_seconds"])));
    }
    let gs = s["goroutines"].as_array().cloned().unwrap_or_default();
    for &(start, dir, elem, cap, len) in PARKED {
        let Some(g) = gs.iter().find(|g| g["location"]["function"] == start) else {
            push(Err(format!("no goroutine starting at {start}")));
            continue;
        };
        let want = serde_json::json!({
            "direction": dir, "elem_type": elem, "capacity": cap, "length": len, "closed": false
        });
        push(exact(&format!("{start} channel"), &g["channel"], &want));
    }
    // The main goroutine waits for signals on a chan os.Signal of capacity 1.
    let main = gs.iter().find(|g| g["goid"] == 1);
    let want = serde_json::json!({
        "direction": "receive", "elem_type": "os.Signal", "capacity": 1, "length": 0, "closed": false
    });
    push(exact(
        "main goroutine channel",
        main.map_or(&Value::Null, |g| &g["channel"]),
        &want,
    ));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("Go {}: {}", tc.version, errors.join("\n  ")))
    }
}

#[test]
fn summary_matches_the_runtime_figures() {
    for_each_build(&BuildMode::ALL);
}

/// Without symbols or DWARF the layout comes from the built-in tables and
/// the globals from the runtime's code (src/binary/globals.rs).
#[test]
fn summary_of_stripped_builds_matches_the_runtime_figures() {
    for_each_build(&BuildMode::STRIPPED);
}

fn for_each_build(modes: &[BuildMode]) {
    let mut failures = Vec::new();
    for tc in toolchains() {
        for &mode in modes {
            let started = Instant::now();
            let bin = build_fixture("summary", &tc, mode);
            let mut target = Target::start(&bin, &[]);
            if let Err(e) = check(&tc, &mut target) {
                failures.push(format!("=== {} {e}", mode.name()));
            }
            if !target.is_running_not_stopped() {
                failures.push(format!(
                    "=== Go {} {}: target left stopped",
                    tc.version,
                    mode.name()
                ));
            }
            eprintln!("Go {} {}: {:?}", tc.version, mode.name(), started.elapsed());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn text_output_renders_every_section() {
    let tc = newest_toolchain();
    let bin = build_fixture("summary", &tc, BuildMode::Default);
    let target = Target::start(&bin, &[]);
    let text = summary(target.pid(), &[]);
    let process = format!("Process {}: ", target.pid());
    for needle in [
        process.as_str(),
        "Go version: go1.",
        "GOMAXPROCS: ",
        "Scheduler: ",
        "Heap: in use ",
        "GC: ",
        "  P0 ",
        "Threads: ",
        "Goroutines: ",
        "[chan send, send on chan string (len 4, cap 4)] main.parkSendStrings",
        "[chan receive, receive on chan main.point (len 0, cap 8)] main.parkRecvPoints",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    // --pc go names the `go` statements in main.startParkers.
    let text = summary(target.pid(), &["--pc", "go"]);
    assert!(text.contains("main.startParkers"), "{text}");
}

#[test]
fn errors_are_one_line() {
    let err = |args: &[&str]| {
        let out = run_gospy(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_ne!(out.status.code(), Some(101), "gospy panicked");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        stderr
    };
    let e = err(&["summary", "--pid", "999999999"]);
    assert!(e.contains("no process with PID 999999999"), "{e}");
    let mut sleep = Command::new("sleep").arg("60").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let e = err(&["summary", "--pid", &sleep.id().to_string()]);
    assert!(e.contains("not a Go program"), "{e}");
    sleep.kill().unwrap();
    sleep.wait().unwrap();
    // Usage errors are clap's (several lines, exit status 2).
    let out = run_gospy(&["summary", "--pid", "1", "--pc", "banana"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("banana"));
}
