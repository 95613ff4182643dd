//! `gospy profile goroutine|threadcreate` against the runtime's own
//! profiles written at the same moment: the `heapprof` fixture parks
//! goroutines with known stacks and pprof labels for good, stays idle, and
//! on SIGUSR1 writes `pprof.Lookup("goroutine")` and `("threadcreate")`
//! (after its other profiles); gospy then reads the same goroutines and Ms
//! from outside. Both are read with the real `go tool pprof -raw` and
//! compared: every goroutine stack (function, file, line per logical
//! frame), its count and labels must be equal, but for the one goroutine
//! that differs by construction (see [`without_writer`]); the thread
//! creation stacks must be equal as a multiset, allowing for threads
//! created after the fixture wrote its profile (see [`compare_threads`]).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pprof_raw::*;
use common::*;

/// Every sample with its count, sorted: (frames, labels) -> count.
fn counts(samples: &[RawSample]) -> BTreeMap<(Vec<String>, String), i64> {
    let mut out = BTreeMap::new();
    for s in samples {
        *out.entry((s.frames.clone(), s.labels.clone())).or_default() +=
            s.values.first().copied().unwrap_or(0);
    }
    out
}

/// The samples but the main goroutine's. It is the one that wrote the
/// runtime's profile, so there it is recorded inside the write (its stack
/// runs through `runtime/pprof.writeGoroutine`), while gospy, reading
/// afterwards, finds it back in `main.main`'s signal loop (a channel
/// receive). It is the only goroutine with `main.main` on its stack (the
/// stdin watcher is `main.main.func1`); exactly one such sample, of one
/// goroutine, is taken out of each, and it must look as described.
fn without_writer(samples: &[RawSample], runtime: bool) -> Result<Vec<RawSample>, String> {
    let is_main = |s: &RawSample| s.frames.iter().any(|f| f.starts_with("main.main "));
    let main: Vec<&RawSample> = samples.iter().filter(|s| is_main(s)).collect();
    let expected = if runtime {
        "runtime/pprof.writeGoroutine "
    } else {
        "runtime.chanrecv"
    };
    match main.as_slice() {
        [s] if s.values == [1] && s.frames.iter().any(|f| f.starts_with(expected)) => {}
        _ => {
            return Err(format!(
                "expected one sample of the main goroutine through {expected}, got {main:?}"
            ))
        }
    }
    Ok(samples.iter().filter(|s| !is_main(s)).cloned().collect())
}

/// Differences between the goroutine profiles, as lines for a failure
/// message.
fn compare_goroutines(runtime: &Raw, gospy: &Raw) -> Vec<String> {
    let mut out = Vec::new();
    if runtime.header != gospy.header {
        out.push(format!(
            "headers differ:\nruntime:\n{}gospy:\n{}",
            runtime.header, gospy.header
        ));
    }
    let (r, g) = match (
        without_writer(&runtime.samples, true),
        without_writer(&gospy.samples, false),
    ) {
        (Ok(r), Ok(g)) => (counts(&r), counts(&g)),
        (Err(e), _) => return vec![format!("the runtime's: {e}")],
        (_, Err(e)) => return vec![format!("gospy's: {e}")],
    };
    // The fixture's goroutines must be there, or the comparison says
    // little.
    let has = |frame: &str, labels: &str| {
        r.keys()
            .any(|(f, l)| f.iter().any(|x| x.starts_with(frame)) && l.contains(labels))
    };
    for (frame, labels) in [
        ("main.parkedPlain ", ""),
        ("main.parkedLabelled ", "tier:[gold] worker:[alpha]"),
        ("main.parkedLabelled ", "worker:[beta]"),
        ("main.parkedDeep ", ""),
        ("main.inlinedReceive ", ""),
        ("main.parkedSleeping ", ""),
        ("main.parkedOnWaitGroup ", ""),
    ] {
        if !has(frame, labels) {
            out.push(format!(
                "the runtime's profile has no {frame}with labels {labels:?}"
            ));
        }
    }
    for (key, n) in &r {
        match g.get(key) {
            Some(m) if m == n => {}
            m => out.push(format!(
                "{n} in the runtime's, {m:?} in gospy's: {:?} {}",
                key.0, key.1
            )),
        }
    }
    for (key, m) in &g {
        if !r.contains_key(key) {
            out.push(format!("only in gospy's ({m}): {:?} {}", key.0, key.1));
        }
    }
    out
}

/// Differences between the thread creation profiles: gospy read the Ms
/// after the runtime's first profile and before its second, and a Go
/// program never gives a thread back here (no goroutine exits locked to
/// its thread), so each stack's count in gospy's must lie between its
/// counts in the two (equal unless the runtime started a thread in
/// between, e.g. for a blocking system call).
fn compare_threads(before: &Raw, gospy: &Raw, after: &Raw) -> Vec<String> {
    let mut out = Vec::new();
    if before.header != gospy.header {
        out.push(format!(
            "headers differ:\nruntime:\n{}gospy:\n{}",
            before.header, gospy.header
        ));
    }
    let (b, g, a) = (
        counts(&before.samples),
        counts(&gospy.samples),
        counts(&after.samples),
    );
    // Most Ms are started from a system stack and have no creation stack
    // (`go tool pprof` up to 1.19 does not even show such samples); the
    // one LockOSThread starts for os/signal has one in every version.
    if !b.keys().any(|(frames, _)| !frames.is_empty()) {
        out.push(format!(
            "the runtime's profile has no creation stack: {b:?}"
        ));
    }
    let keys: std::collections::BTreeSet<_> = b.keys().chain(g.keys()).chain(a.keys()).collect();
    for key in keys {
        let count = |m: &BTreeMap<(Vec<String>, String), i64>| m.get(key).copied().unwrap_or(0);
        let (nb, ng, na) = (count(&b), count(&g), count(&a));
        if !(nb <= ng && ng <= na) {
            out.push(format!(
                "{ng} threads in gospy's, {nb} in the runtime's before, {na} after: {:?}",
                key.0
            ));
        }
    }
    out
}

fn tmp(name: &str) -> PathBuf {
    let dir = target_dir().join("tmp/goroutine-profile");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Signals the fixture and waits for its profiles.
fn profiled(target: &mut Target) {
    // SAFETY: kill sends a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(target.pid() as libc::pid_t, libc::SIGUSR1) },
        0
    );
    target.wait_for("PROFILED", Duration::from_secs(30));
}

/// Runs `gospy profile NAME` into `out`; `Err` with its stderr if it fails.
fn gospy_profile(name: &str, pid: &str, out: &Path) -> Result<(), String> {
    let o = run_gospy(&["profile", name, "--pid", pid, "-o", out.to_str().unwrap()]);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "gospy profile {name} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// The goroutine and threadcreate profiles equal the runtime's own for
/// every toolchain, default and stripped builds.
#[test]
fn goroutine_and_threadcreate_profiles_equal_the_runtimes() {
    let mut failures = Vec::new();
    for tc in &toolchains() {
        for mode in [BuildMode::Default, BuildMode::Stripped] {
            let label = format!("Go {} {}", tc.version, mode.name());
            let bin = build_fixture("heapprof", tc, mode);
            let prefix = tmp(&format!("go{}-{}", tc.version, mode.name()));
            let file = |ext: &str| PathBuf::from(format!("{}.{ext}", prefix.display()));
            let mut target = Target::start(&bin, &["-out", prefix.to_str().unwrap()]);
            let pid = target.pid().to_string();
            profiled(&mut target);
            std::fs::copy(file("goroutine"), file("first.goroutine")).unwrap();
            std::fs::copy(file("threadcreate"), file("first.threadcreate")).unwrap();
            let ours = |name: &str| file(&format!("gospy.{name}"));
            for name in ["goroutine", "threadcreate"] {
                if let Err(e) = gospy_profile(name, &pid, &ours(name)) {
                    failures.push(format!("{label}: {e}"));
                }
            }
            // The runtime's threads after gospy read them.
            profiled(&mut target);
            let read = |f: &Path| raw(tc, f);
            match (read(&file("first.goroutine")), read(&ours("goroutine"))) {
                (Ok(r), Ok(g)) => {
                    let diff = compare_goroutines(&r, &g);
                    if !diff.is_empty() {
                        failures.push(format!("{label} goroutine:\n  {}", diff.join("\n  ")));
                    }
                }
                (Err(e), _) | (_, Err(e)) => failures.push(format!("{label} goroutine: {e}")),
            }
            match (
                read(&file("first.threadcreate")),
                read(&ours("threadcreate")),
                read(&file("threadcreate")),
            ) {
                (Ok(b), Ok(g), Ok(a)) => {
                    let diff = compare_threads(&b, &g, &a);
                    if !diff.is_empty() {
                        failures.push(format!("{label} threadcreate:\n  {}", diff.join("\n  ")));
                    }
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    failures.push(format!("{label} threadcreate: {e}"))
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
