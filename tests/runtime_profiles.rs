//! `gospy profile heap|allocs|block|mutex` against the runtime's own
//! profiles written at the same moment: the `heapprof` fixture retains
//! memory from known call paths, makes a known amount of contention, turns
//! its GC off, and on SIGUSR1 writes `pprof.Lookup(NAME)` for the four;
//! gospy then reads the same records from outside. Both are read with the
//! real `go tool pprof -raw` and compared sample by sample: every frame
//! (function, file, line), every value and the `bytes` label (block and
//! mutex delays within 1%: gospy may have to measure the CPU tick rate
//! itself, which the runtime measures on first use).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pprof_raw::*;
use common::*;

/// The samples with a value other than zero, sorted. Buckets with nothing
/// published yet (those created by the fixture's own profile writing, after
/// it took its snapshot) are all zeros in both.
fn nonzero(raw: &Raw) -> Vec<RawSample> {
    let mut s: Vec<RawSample> = raw
        .samples
        .iter()
        .filter(|s| s.values.iter().any(|&v| v != 0))
        .cloned()
        .collect();
    s.sort();
    s
}

/// Whether `s` is contention on the runtime's own locks, which Go 1.22+
/// records in the mutex profile (every frame in the runtime, e.g.
/// `runtime._LostContendedRuntimeLock`): an idle program's background work
/// (sysmon, the scavenger) can add one between the fixture's write and
/// gospy's read, so the mutex comparison leaves them out.
fn runtime_lock_contention(s: &RawSample) -> bool {
    !s.frames.is_empty()
        && s.frames
            .iter()
            .all(|f| f.starts_with("runtime.") || f.starts_with("internal/runtime/"))
}

/// Differences between two profiles, as lines for a failure message. The
/// last value of each sample may differ by `last_value_tolerance` (a
/// fraction of the larger).
fn differences(runtime: &Raw, gospy: &Raw, last_value_tolerance: f64) -> Vec<String> {
    let mut out = Vec::new();
    if runtime.header != gospy.header {
        out.push(format!(
            "headers differ:\nruntime:\n{}gospy:\n{}",
            runtime.header, gospy.header
        ));
    }
    // Sorted by frames, labels, then values: a sample and its twin end up
    // at the same index unless the sets differ.
    let order = |a: &RawSample, b: &RawSample| {
        (&a.frames, &a.labels, &a.values).cmp(&(&b.frames, &b.labels, &b.values))
    };
    let (mut r, mut g) = (nonzero(runtime), nonzero(gospy));
    r.sort_by(order);
    g.sort_by(order);
    let close = |a: &RawSample, b: &RawSample| {
        let n = a.values.len();
        a.frames == b.frames
            && a.labels == b.labels
            && n == b.values.len()
            && n > 0
            && a.values[..n - 1] == b.values[..n - 1]
            && (a.values[n - 1] - b.values[n - 1]).abs() as f64
                <= last_value_tolerance * a.values[n - 1].abs().max(b.values[n - 1].abs()) as f64
    };
    if r.len() != g.len() || r.iter().zip(&g).any(|(a, b)| !close(a, b)) {
        for s in r.iter().filter(|s| !g.iter().any(|t| close(s, t))) {
            out.push(format!("only in the runtime's: {s:?}"));
        }
        for s in g.iter().filter(|s| !r.iter().any(|t| close(s, t))) {
            out.push(format!("only in gospy's: {s:?}"));
        }
        if out.is_empty() {
            out.push(format!(
                "{} samples in the runtime's, {} in gospy's",
                r.len(),
                g.len()
            ));
        }
    }
    out
}

fn tmp(name: &str) -> PathBuf {
    let dir = target_dir().join("tmp/runtime-profiles");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Signals the fixture, waits for its profiles, then runs gospy for both
/// and compares; failures are pushed to `failures`. Returns gospy's heap
/// profile.
fn compare_now(
    tc: &Toolchain,
    target: &mut Target,
    signal: libc::c_int,
    prefix: &Path,
    label: &str,
    failures: &mut Vec<String>,
) -> Option<Raw> {
    // SAFETY: kill sends a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(target.pid() as libc::pid_t, signal) },
        0
    );
    target.wait_for("PROFILED", Duration::from_secs(30));
    let pid = target.pid().to_string();
    let mut heap = None;
    for name in ["heap", "allocs", "block", "mutex"] {
        let ours = PathBuf::from(format!("{}.gospy.{name}", prefix.display()));
        let out = run_gospy(&["profile", name, "--pid", &pid, "-o", ours.to_str().unwrap()]);
        if !out.status.success() {
            failures.push(format!(
                "{label} {name}: gospy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let theirs = PathBuf::from(format!("{}.{name}", prefix.display()));
        let (mut runtime, mut gospy) = match (raw(tc, &theirs), raw(tc, &ours)) {
            (Ok(r), Ok(g)) => (r, g),
            (Err(e), _) | (_, Err(e)) => {
                failures.push(format!("{label} {name}: {e}"));
                continue;
            }
        };
        if name == "mutex" {
            runtime.samples.retain(|s| !runtime_lock_contention(s));
            gospy.samples.retain(|s| !runtime_lock_contention(s));
        }
        // The fixture makes 7 kinds of retained memory, 3 of blocking and
        // 1 of mutex contention.
        let expected = if name == "mutex" { 1 } else { 3 };
        if nonzero(&runtime).len() < expected {
            failures.push(format!(
                "{label} {name}: the runtime's profile has only {} samples: {runtime:?}",
                runtime.samples.len()
            ));
        }
        let tolerance = if name == "block" || name == "mutex" {
            0.01
        } else {
            0.0
        };
        let diff = differences(&runtime, &gospy, tolerance);
        if !diff.is_empty() {
            failures.push(format!("{label} {name}:\n  {}", diff.join("\n  ")));
        }
        if name == "heap" {
            heap = Some(gospy);
        }
    }
    heap
}

/// The heap, allocs, block and mutex profiles equal the runtime's own,
/// sample by sample, for every toolchain and build mode (stripped ones
/// included), at the default MemProfileRate and at 1; after a further
/// burst and a GC, gospy's next read has the burst.
#[test]
fn profiles_equal_the_runtimes() {
    let mut failures = Vec::new();
    for tc in &toolchains() {
        for mode in [
            BuildMode::Default,
            BuildMode::Pie,
            BuildMode::Stripped,
            BuildMode::CgoPieStripped,
        ] {
            let bin = build_fixture("heapprof", tc, mode);
            for rate in ["-1", "1"] {
                let label = format!("Go {} {} rate {rate}", tc.version, mode.name());
                let prefix = tmp(&format!("go{}-{}-{rate}", tc.version, mode.name()));
                let mut target =
                    Target::start(&bin, &["-rate", rate, "-out", prefix.to_str().unwrap()]);
                compare_now(
                    tc,
                    &mut target,
                    libc::SIGUSR1,
                    &prefix,
                    &label,
                    &mut failures,
                );
                let after = compare_now(
                    tc,
                    &mut target,
                    libc::SIGUSR2,
                    &prefix,
                    &format!("{label} after a burst"),
                    &mut failures,
                );
                let has_burst = after.is_some_and(|raw| {
                    nonzero(&raw)
                        .iter()
                        .any(|s| s.frames.iter().any(|f| f.starts_with("main.burst ")))
                });
                if !has_burst {
                    failures.push(format!("{label}: main.burst missing after the GC"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A program that references nothing of the memory profile (the `globals`
/// fixture imports no `runtime/pprof`) has memory profiling turned off by
/// the linker from Go 1.16: one clear line and a non-zero exit. Go 1.15
/// has no such switch and keeps the profile: gospy writes it. The block and
/// mutex profiles are off unless the program turns them on: one line
/// saying how.
#[test]
fn disabled_profiles_are_a_clear_error() {
    let mut failures = Vec::new();
    for tc in &toolchains() {
        let bin = build_fixture("globals", tc, BuildMode::Stripped);
        let target = Target::start(&bin, &[]);
        let pid = target.pid().to_string();
        let out_file = tmp(&format!("disabled-go{}.pb.gz", tc.version));
        let _ = std::fs::remove_file(&out_file);
        let out = run_gospy(&[
            "profile",
            "heap",
            "--pid",
            &pid,
            "-o",
            out_file.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let keeps_one = tc.version == "1.15";
        if keeps_one {
            if !out.status.success() || !out_file.exists() {
                failures.push(format!("Go {}: expected a profile: {stderr}", tc.version));
            }
        } else if out.status.success()
            || !stderr.contains("keeps no memory profile")
            || !stderr.contains("runtime/pprof")
            || stderr.lines().count() != 1
            || out_file.exists()
        {
            failures.push(format!(
                "Go {}: expected one line saying memory profiling is off, got status {} and {stderr:?}",
                tc.version, out.status
            ));
        }
        for (name, how) in [
            ("block", "SetBlockProfileRate"),
            ("mutex", "SetMutexProfileFraction"),
        ] {
            let out = run_gospy(&[
                "profile",
                name,
                "--pid",
                &pid,
                "-o",
                out_file.to_str().unwrap(),
            ]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !stderr.contains(how) || stderr.lines().count() != 1 {
                failures.push(format!(
                    "Go {} {name}: expected one line saying how to turn it on, got status {} and {stderr:?}",
                    tc.version, out.status
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The other formats show one sample type (`--sample-index`, else the
/// profile's default): folded stacks add up to the same total as the pprof
/// file's values of that type, the text table and the flamegraph name the
/// fixture's call paths, and a wrong type is refused with the valid ones.
#[test]
fn formats_show_the_chosen_sample_type() {
    let tc = newest_toolchain();
    let bin = build_fixture("heapprof", &tc, BuildMode::Default);
    let prefix = tmp("formats");
    let target = Target::start(&bin, &["-out", prefix.to_str().unwrap()]);
    let pid = target.pid().to_string();
    let file = |ext: &str| PathBuf::from(format!("{}.gospy.{ext}", prefix.display()));
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["profile"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--pid", &pid]);
        let out = run_gospy(&all);
        assert!(
            out.status.success(),
            "gospy {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pb = file("pb.gz");
    run(&["allocs", "-o", &path(&pb)]);
    let raw = raw(&tc, &pb).unwrap_or_else(|e| panic!("{e}"));
    for (index, name) in [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ]
    .iter()
    .enumerate()
    {
        let folded = file(&format!("{name}.folded"));
        run(&["allocs", "--sample-index", name, "-o", &path(&folded)]);
        let text = std::fs::read_to_string(&folded).unwrap();
        let total: i64 = text
            .lines()
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<i64>().ok())
            .sum();
        let expected: i64 = raw.samples.iter().map(|s| s.values[index]).sum();
        assert_eq!(total, expected, "{name}: folded total vs pprof's\n{text}");
        assert!(text.contains("main.hugeObjects"), "{text}");
    }
    let table = run(&["heap", "-f", "text"]);
    assert!(table.contains("Type: inuse_space"), "{table}");
    assert!(table.contains("main.hugeObjects"), "{table}");
    let svg = file("svg");
    run(&["heap", "-o", &path(&svg)]);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("main.buildTree"),
        "{svg:.300}"
    );

    let out = run_gospy(&[
        "profile",
        "heap",
        "--pid",
        &pid,
        "-f",
        "text",
        "--sample-index",
        "delay",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("inuse_space"),
        "{stderr}"
    );
}

/// `-d`: gospy reads, waits, reads again and writes the difference, which
/// must equal the difference of the fixture's own profiles written just
/// before its first read and just after the burst and GC that happen
/// during the wait (`go tool pprof -base`); for allocs and block, on the
/// oldest and newest toolchains. Without a GC in between, a heap
/// difference is empty and gospy says why.
#[test]
fn duration_writes_the_difference_of_two_reads() {
    let mut failures = Vec::new();
    let all = toolchains();
    let ends = [all.first(), all.last()];
    for tc in ends.into_iter().flatten() {
        let bin = build_fixture("heapprof", tc, BuildMode::Default);
        let prefix = tmp(&format!("delta-go{}", tc.version));
        let mut target = Target::start(&bin, &["-out", prefix.to_str().unwrap()]);
        let pid = target.pid().to_string();
        let signal = |target: &mut Target, sig| {
            // SAFETY: kill sends a signal to our own child.
            assert_eq!(unsafe { libc::kill(target.pid() as libc::pid_t, sig) }, 0);
            target.wait_for("PROFILED", Duration::from_secs(30));
        };
        signal(&mut target, libc::SIGUSR1);
        let names = ["allocs", "block"];
        for name in names {
            let from = format!("{}.{name}", prefix.display());
            std::fs::copy(&from, format!("{from}.before")).unwrap();
        }
        let children: Vec<_> = names
            .into_iter()
            .map(|name| {
                let out = format!("{}.gospy-delta.{name}", prefix.display());
                let child = Command::new(gospy_bin())
                    .args(["profile", name, "--pid", &pid, "-d", "3", "-o", &out])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (name, out, child)
            })
            .collect();
        // Both have read once by now (reading takes milliseconds).
        std::thread::sleep(Duration::from_millis(1000));
        signal(&mut target, libc::SIGUSR2);
        for (name, out, child) in children {
            let label = format!("Go {} {name} -d", tc.version);
            let done = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&done.stderr);
            if !done.status.success() {
                failures.push(format!("{label}: gospy failed: {stderr}"));
                continue;
            }
            if name == "allocs" && !stderr.contains("heap profile cycles") {
                failures.push(format!("{label}: no GC cycles named: {stderr}"));
            }
            let after = PathBuf::from(format!("{}.{name}", prefix.display()));
            let before = format!("{}.{name}.before", prefix.display());
            let expected = raw_with(tc, &after, &["-base", &before]);
            let (expected, gospy) = match (expected, raw(tc, Path::new(&out))) {
                (Ok(e), Ok(g)) => (e, g),
                (Err(e), _) | (_, Err(e)) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            if name == "allocs"
                && !nonzero(&gospy)
                    .iter()
                    .any(|s| s.frames.iter().any(|f| f.starts_with("main.burst ")))
            {
                failures.push(format!("{label}: main.burst is not in the difference"));
            }
            let tolerance = if name == "block" { 0.01 } else { 0.0 };
            let diff = differences(&expected, &gospy, tolerance);
            if !diff.is_empty() {
                failures.push(format!("{label}:\n  {}", diff.join("\n  ")));
            }
        }
        // No GC during the wait: nothing published, and gospy says so.
        let out_file = format!("{}.gospy-nogc.heap", prefix.display());
        let out = run_gospy(&[
            "profile", "heap", "--pid", &pid, "-d", "0.5", "-o", &out_file,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stderr.contains("no GC ran") {
            failures.push(format!("Go {}: heap -d without a GC: {stderr}", tc.version));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `gospy summary` names the top three allocation sites of the heap profile
/// with their live bytes: those of the runtime's own heap profile written at
/// the same moment (leaf function, `inuse_space` summed), and its total.
#[test]
fn summary_names_the_top_allocation_sites() {
    let tc = newest_toolchain();
    let bin = build_fixture("heapprof", &tc, BuildMode::Default);
    let prefix = tmp("summary");
    let mut target = Target::start(&bin, &["-out", prefix.to_str().unwrap()]);
    // SAFETY: kill sends a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(target.pid() as libc::pid_t, libc::SIGUSR1) },
        0
    );
    target.wait_for("PROFILED", Duration::from_secs(30));
    let runtime = raw(&tc, &PathBuf::from(format!("{}.heap", prefix.display())))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut by_site: BTreeMap<String, i64> = BTreeMap::new();
    for s in &runtime.samples {
        let leaf = s
            .frames
            .first()
            .map_or("?", |f| f.split(' ').next().unwrap_or("?"));
        *by_site.entry(leaf.to_string()).or_default() += s.values[3];
    }
    let mut expected: Vec<(String, i64)> = by_site.into_iter().filter(|s| s.1 > 0).collect();
    expected.sort_by_key(|s| std::cmp::Reverse(s.1));
    expected.truncate(3);
    let total: i64 = runtime.samples.iter().map(|s| s.values[3]).sum();

    let json = gospy_summary_json(target.pid());
    let hp = &json["heap_profile"];
    let sites: Vec<(String, i64)> = hp["top_sites"]
        .as_array()
        .unwrap_or_else(|| panic!("no heap_profile.top_sites: {json}"))
        .iter()
        .map(|s| {
            (
                s["function"].as_str().unwrap_or("").to_string(),
                s["inuse_bytes"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(sites, expected, "{hp}");
    assert_eq!(hp["inuse_bytes"].as_i64(), Some(total), "{hp}");
    assert_eq!(hp["rate"].as_i64(), Some(512 * 1024), "{hp}");
}

fn gospy_summary_json(pid: u32) -> serde_json::Value {
    let out = run_gospy(&["summary", "--pid", &pid.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
