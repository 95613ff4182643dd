//! `gospy dump` end to end, against the `parked` fixture built by every
//! required Go toolchain in every build mode. Ground truth is the runtime's
//! own `runtime.Stack(buf, true)`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Runs `check` for every toolchain in `mode`, collecting failures so one
/// run reports every broken version at once.
fn for_each_toolchain(
    mode: BuildMode,
    check: impl Fn(&Toolchain, &mut Target) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for tc in toolchains() {
        let bin = build_fixture("parked", &tc, mode);
        let mut target = Target::start(&bin, &[]);
        if let Err(e) = check(&tc, &mut target) {
            failures.push(format!("=== Go {} {}: {e}", tc.version, mode.name()));
        }
        if !target.is_running_not_stopped() {
            failures.push(format!(
                "=== Go {} {}: target left stopped",
                tc.version,
                mode.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every parked goroutine's frames and creator equal the runtime's; labels
/// and states agree; the CPU burners show their call chain.
fn matches_runtime(tc: &Toolchain, target: &mut Target) -> Result<(), String> {
    matches_runtime_with(tc, target, &[])
}

/// [`matches_runtime`] with extra gospy arguments.
fn matches_runtime_with(tc: &Toolchain, target: &mut Target, extra: &[&str]) -> Result<(), String> {
    let truth = target.ground_truth();
    let dump = gospy_dump_json_with(target.pid(), extra);
    let compared = compare_parked(&truth, &dump)?;
    let expected = parked_catalogue(tc, BuildMode::Default).len();
    if compared < expected {
        return Err(format!(
            "compared only {compared} goroutines, expected at least {expected}"
        ));
    }
    compare_labels(&truth, &dump)?;
    compare_states(&truth, &dump)?;
    check_burners(&dump)?;
    check_json_schema(&dump, target.pid())
}

fn check_burners(dump: &Value) -> Result<(), String> {
    let burners: Vec<&Value> = gospy_goroutines(dump)
        .iter()
        .filter(|g| {
            gospy_visible_frames(g)
                .iter()
                .any(|f| f.function == BURN_CHAIN[2])
        })
        .collect();
    if burners.len() != BURNERS {
        // Say what the missing one looked like (an unreadable stack?).
        let unreadable: Vec<String> = gospy_goroutines(dump)
            .iter()
            .filter(|g| g["error"].is_string())
            .map(|g| format!("goroutine {} [{}]: {}", g["goid"], g["status"], g["error"]))
            .collect();
        return Err(format!(
            "expected {BURNERS} burner goroutines, found {}; unreadable stacks: {unreadable:?}",
            burners.len()
        ));
    }
    for g in burners {
        let names: Vec<String> = gospy_visible_frames(g)
            .into_iter()
            .map(|f| f.function)
            .collect();
        let chain: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with("main.burn"))
            .collect();
        // A burner caught in burnMiddle's loop header shows only part of
        // the chain, but always in call order and always ending at burnOuter.
        let in_order = chain.windows(2).all(|w| {
            let pos = |n: &str| BURN_CHAIN.iter().position(|c| *c == n);
            pos(w[0]) < pos(w[1])
        });
        if chain.last() != Some(&BURN_CHAIN[2]) || !in_order {
            return Err(format!(
                "burner stack {names:?} does not show {BURN_CHAIN:?}"
            ));
        }
        let status = g["status"].as_str().unwrap_or("");
        if !matches!(status, "running" | "runnable" | "preempted") {
            return Err(format!("burner has status {status}"));
        }
        if status == "running" && g["thread_id"].as_u64().is_none() {
            return Err(format!("running burner without thread_id: {g}"));
        }
        if g["error"].is_string() {
            return Err(format!("burner stack incomplete: {}", g["error"]));
        }
    }
    Ok(())
}

/// The documented JSON schema (README.md, "JSON schema").
fn check_json_schema(dump: &Value, pid: u32) -> Result<(), String> {
    let bad = |what: &str| Err(format!("JSON schema: {what}"));
    if dump["pid"].as_u64() != Some(pid as u64) {
        return bad("pid");
    }
    if !dump["go_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("go1."))
    {
        return bad("go_version");
    }
    if !dump["binary"].is_string()
        || !dump["pause_seconds"].is_f64()
        || !dump["total_goroutines"].is_u64()
    {
        return bad("binary/pause_seconds/total_goroutines");
    }
    for g in gospy_goroutines(dump) {
        let ok = g["goid"].is_u64()
            && g["status"].is_string()
            && (g["wait_reason"].is_string() || g["wait_reason"].is_null())
            && (g["wait_seconds"].is_f64() || g["wait_seconds"].is_null())
            && (g["thread_id"].is_u64() || g["thread_id"].is_null())
            && g["locked_to_thread"].is_boolean()
            && g["system"].is_boolean()
            && g["labels"].is_object()
            && (g["created_by"].is_null()
                || (g["created_by"]["function"].is_string()
                    && g["created_by"]["file"].is_string()
                    && g["created_by"]["line"].is_u64()
                    && (g["created_by"]["parent_goid"].is_u64()
                        || g["created_by"]["parent_goid"].is_null())))
            && g["frames"].as_array().is_some_and(|fs| {
                fs.iter().all(|f| {
                    f["function"].is_string()
                        && f["file"].is_string()
                        && f["line"].is_u64()
                        && f["inlined"].is_boolean()
                        && f["hidden"].is_boolean()
                })
            })
            && g["truncated"].is_boolean()
            && (g["error"].is_string() || g["error"].is_null());
        if !ok {
            return bad(&format!("goroutine {g}"));
        }
        if g["status"] == "waiting" && !g["wait_reason"].is_string() {
            return bad(&format!("waiting goroutine without wait_reason: {g}"));
        }
    }
    Ok(())
}

#[test]
fn dump_matches_runtime_default_build() {
    for_each_toolchain(BuildMode::Default, matches_runtime);
}

#[test]
fn dump_matches_runtime_pie_build() {
    for_each_toolchain(BuildMode::Pie, matches_runtime);
}

#[test]
fn dump_matches_runtime_cgo_build() {
    for_each_toolchain(BuildMode::Cgo, matches_runtime);
}

/// [`matches_runtime`] for a binary without symbols or DWARF: gospy must say
/// it used its built-in table, and the binary must really have neither.
fn matches_runtime_stripped(tc: &Toolchain, target: &mut Target) -> Result<(), String> {
    let image = ::gospy::binary::ElfImage::open(target.binary()).map_err(|e| e.to_string())?;
    if image.symbol("runtime.allgs").is_some() || image.section(".debug_info").is_some() {
        return Err(format!(
            "{} still has symbols or DWARF",
            target.binary().display()
        ));
    }
    let dump = gospy_dump_json(target.pid());
    let source = dump["layout_source"].as_str().unwrap_or("");
    if !source.starts_with(&format!("built-in table for Go 1.{}", tc.minor())) {
        return Err(format!("layout_source is {source:?}"));
    }
    matches_runtime(tc, target)
}

/// Built with `-ldflags=-s -w`: no symbol table, no DWARF.
#[test]
fn dump_matches_runtime_stripped_build() {
    for_each_toolchain(BuildMode::Stripped, matches_runtime_stripped);
}

/// `-buildmode=pie`, then binutils `strip`.
#[test]
fn dump_matches_runtime_pie_stripped_build() {
    for_each_toolchain(BuildMode::PieStripped, matches_runtime_stripped);
}

/// The way distributions build: cgo, external linker, PIE, then `strip`.
#[test]
fn dump_matches_runtime_distro_build() {
    for_each_toolchain(BuildMode::CgoPieStripped, matches_runtime_stripped);
}

/// A binary whose DWARF is corrupt is read like a stripped one: the layout
/// comes from the built-in table, the header says why, and the dump still
/// equals the runtime's.
#[test]
fn dump_with_corrupt_dwarf_falls_back_to_the_table() {
    let mut failures = Vec::new();
    for tc in toolchains() {
        let bin = build_fixture("parked", &tc, BuildMode::Default);
        let dir = target_dir().join("tmp/corrupt-dwarf");
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(format!("parked-go{}", tc.version));
        common::corrupt::copy_with_corrupt_dwarf(&bin, &copy);
        let mut target = Target::start(&copy, &[]);
        let dump = gospy_dump_json(target.pid());
        let source = dump["layout_source"].as_str().unwrap_or("");
        let want = format!("built-in table for Go 1.{}", tc.minor());
        let result = if !source.starts_with(&want) || !source.contains("DWARF is unreadable") {
            Err(format!("layout_source is {source:?}"))
        } else {
            matches_runtime(&tc, &mut target)
        };
        if let Err(e) = result {
            failures.push(format!("=== Go {}: {e}", tc.version));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `--bin` with the unstripped build of a stripped target takes the
/// layout from its DWARF (and still matches the runtime); a debug build of
/// another program, or of another build of it, is refused.
#[test]
fn debug_binary_must_match_and_is_used() {
    for_each_toolchain(BuildMode::PieStripped, |tc, target| {
        let twin = build_fixture("parked", tc, BuildMode::Pie);
        let twin_arg = twin.to_str().unwrap();
        let dump = gospy_dump_json_with(target.pid(), &["--bin", twin_arg]);
        let source = dump["layout_source"].as_str().unwrap_or("");
        if source != format!("DWARF of {twin_arg}") {
            return Err(format!("layout_source with --bin is {source:?}"));
        }
        matches_runtime_with(tc, target, &["--bin", twin_arg])?;
        let other = build_fixture("parked", tc, BuildMode::Default);
        let err = gospy_error(&[
            "dump",
            "--pid",
            &target.pid().to_string(),
            "--bin",
            other.to_str().unwrap(),
        ]);
        if !err.contains("is not a debug build of this binary") {
            return Err(format!("mismatched --bin: {err}"));
        }
        Ok(())
    });
}

/// The text output parses as a Go traceback and says the same as the
/// runtime for every parked goroutine.
#[test]
fn text_output_reads_like_the_runtime_traceback() {
    for_each_toolchain(BuildMode::Default, |_, target| {
        let truth = target.ground_truth();
        let out = run_gospy(&["dump", "--pid", &target.pid().to_string()]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.starts_with(&format!("Process {}: ", target.pid()))
            || !text.contains("\nGo version: go1.")
        {
            return Err(format!("header missing:\n{text}"));
        }
        let ours = parse_traceback(&text);
        let mut compared = 0;
        for theirs in truth
            .iter()
            .filter(|g| !g.is_moving() && !g.unavailable && !g.is_dumper())
        {
            let Some(mine) = ours.iter().find(|g| g.goid == theirs.goid) else {
                return Err(format!(
                    "goroutine {} missing from text output",
                    theirs.goid
                ));
            };
            if mine.state != theirs.state {
                return Err(format!(
                    "goroutine {}: state {:?} vs runtime {:?}",
                    theirs.goid, mine.state, theirs.state
                ));
            }
            let strip = |g: &RuntimeGoroutine| -> Vec<(String, String, u32)> {
                g.frames
                    .iter()
                    .map(|f| (f.function.clone(), f.file.clone(), f.line))
                    .collect()
            };
            if strip(mine) != strip(theirs) || mine.created_by != theirs.created_by {
                return Err(format!(
                    "goroutine {} differs:\n gospy:   {:?} {:?}\n runtime: {:?} {:?}",
                    theirs.goid,
                    strip(mine),
                    mine.created_by,
                    strip(theirs),
                    theirs.created_by
                ));
            }
            compared += 1;
        }
        if compared < 20 {
            return Err(format!("only {compared} goroutines compared"));
        }
        Ok(())
    });
}

/// Goroutines running on a CPU are unwound from their thread's registers,
/// through the system stack (g0 -> user stack at systemstack/morestack) and
/// the VDSO, to the same outermost frame every time.
#[test]
fn running_goroutines_unwind_through_system_stack_and_vdso() {
    let mut failures = Vec::new();
    for tc in toolchains() {
        let bin = build_fixture("parked", &tc, BuildMode::Default);
        let target = Target::start(&bin, &["-busy", "-burners", "0"]);
        let mut complete = [0usize; 2];
        for _ in 0..15 {
            let dump = gospy_dump_json(target.pid());
            for g in gospy_goroutines(&dump) {
                let frames = gospy_visible_frames(g);
                let Some(which) = ["main.burnRuntime", "main.burnClock"]
                    .iter()
                    .position(|f| frames.iter().any(|fr| fr.function == *f))
                else {
                    continue;
                };
                match g["error"].as_str() {
                    None => {
                        let last = frames.last().map(|f| f.function.as_str());
                        if last != Some(["main.burnRuntime", "main.burnClock"][which]) {
                            failures.push(format!(
                                "Go {}: stack does not end at its goroutine's function: {g}",
                                tc.version
                            ));
                        }
                        complete[which] += 1;
                    }
                    // A thread caught inside a signal handler (preemption
                    // signals fly during stop-the-world) has no usable stack.
                    Some(e) if e.contains("signal handler") => {}
                    Some(e) => failures.push(format!("Go {}: {e}: {g}", tc.version)),
                }
            }
        }
        if complete.contains(&0) {
            failures.push(format!(
                "Go {}: complete stacks of burnRuntime/burnClock: {complete:?}",
                tc.version
            ));
        }
        assert!(target.is_running_not_stopped());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn filters_select_goroutines() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    let target = Target::start(&bin, &[]);
    let pid = target.pid().to_string();
    let json = |extra: &[&str]| -> Value {
        let mut args = vec!["dump", "--json", "--pid", &pid];
        args.extend_from_slice(extra);
        let out = run_gospy(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let all = json(&[]);
    let all_gs = gospy_goroutines(&all);
    assert!(
        all_gs.iter().all(|g| g["system"] == false),
        "system goroutines shown by default"
    );

    let with_system = json(&["--system"]);
    assert!(gospy_goroutines(&with_system)
        .iter()
        .any(|g| g["system"] == true));
    assert!(gospy_goroutines(&with_system).len() > all_gs.len());
    assert_eq!(with_system["total_goroutines"], all["total_goroutines"]);

    let sleeping = json(&["--status", "sleep"]);
    let sleeping = gospy_goroutines(&sleeping);
    assert!(!sleeping.is_empty());
    assert!(sleeping.iter().all(|g| g["wait_reason"] == "sleep"));

    let chans = json(&["--status", "chan receive,chan send"]);
    let chans = gospy_goroutines(&chans);
    assert!(chans.iter().any(|g| g["wait_reason"] == "chan send"));
    assert!(chans
        .iter()
        .all(|g| g["wait_reason"] == "chan receive" || g["wait_reason"] == "chan send"));

    let matched = json(&["--match", "parkCondWait"]);
    let matched = gospy_goroutines(&matched);
    assert_eq!(matched.len(), 1, "{matched:?}");

    let labelled = json(&["--match", "gold"]);
    let labelled = gospy_goroutines(&labelled);
    assert_eq!(labelled.len(), 1);
    assert_eq!(labelled[0]["labels"]["tier"], "gold");

    // Every frame visible with --runtime-frames, ending at runtime.goexit.
    let out = run_gospy(&[
        "dump",
        "--pid",
        &pid,
        "--runtime-frames",
        "--match",
        "parkChanRecv",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("runtime.gopark()"), "{text}");
    assert!(text.contains("runtime.goexit()"), "{text}");
}

#[test]
fn deep_stacks_are_cut_and_say_so() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    let target = Target::start(&bin, &[]);
    let pid = target.pid().to_string();
    // parkDeep itself is below the cut; main.recurse is above it.
    let out = run_gospy(&[
        "dump",
        "--json",
        "--pid",
        &pid,
        "--max-depth",
        "20",
        "--match",
        "main.recurse",
    ]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gs = gospy_goroutines(&doc);
    assert_eq!(gs.len(), 1, "{gs:?}");
    let deep = &gs[0];
    assert_eq!(deep["truncated"], true);
    assert!(deep["frames"].as_array().unwrap().len() >= 20);
    let text = run_gospy(&[
        "dump",
        "--pid",
        &pid,
        "--max-depth",
        "20",
        "--match",
        "main.recurse",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("...additional frames elided (stopped at"),
        "{text}"
    );
}

#[test]
fn nonblocking_dump_agrees_on_parked_goroutines() {
    for_each_toolchain(BuildMode::Default, |_, target| {
        let truth = target.ground_truth();
        let out = run_gospy(&[
            "dump",
            "--json",
            "--nonblocking",
            "--pid",
            &target.pid().to_string(),
        ]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let dump: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        if !dump["pause_seconds"].is_null() {
            return Err("nonblocking dump reports a pause".into());
        }
        // Running goroutines cannot be unwound without stopping their
        // thread: they must carry an error, never made-up frames.
        for g in gospy_goroutines(&dump) {
            if g["status"] == "running" && !g["error"].is_string() {
                return Err(format!(
                    "running goroutine without error in nonblocking mode: {g}"
                ));
            }
        }
        compare_parked(&truth, &dump).map(|_| ())
    });
}

fn gospy_error(args: &[&str]) -> String {
    let out = run_gospy(args);
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert_ne!(
        out.status.code(),
        Some(101),
        "gospy panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    stderr
}

#[test]
fn bad_input_gives_one_clear_line() {
    // No such process.
    let err = gospy_error(&["dump", "--pid", "999999999"]);
    assert!(err.contains("no process with PID 999999999"), "{err}");

    // A process that is not a Go program.
    let mut sleep = Command::new("sleep").arg("60").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let err = gospy_error(&["dump", "--pid", &sleep.id().to_string()]);
    assert!(err.contains("not a Go program"), "{err}");
    sleep.kill().unwrap();
    sleep.wait().unwrap();

    // A zombie: a child that exited and was not reaped.
    let mut zombie = Command::new("true").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{}/stat", zombie.id()))
        .unwrap_or_default()
        .contains(") Z")
    {
        assert!(Instant::now() < deadline, "child never became a zombie");
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = gospy_error(&["dump", "--pid", &zombie.id().to_string()]);
    assert!(err.contains("zombie"), "{err}");
    zombie.wait().unwrap();

    // Bad options.
    let err = gospy_error(&["dump", "--pid", "1", "--go-version", "banana"]);
    assert!(err.contains("--go-version banana"), "{err}");

    // A Go binary gospy cannot use: no DWARF (built with -ldflags=-w) and
    // a Go version forced to one without a built-in layout.
    let tc = newest_toolchain();
    let dir = target_dir().join("tmp/dump-nodwarf");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("main.go");
    std::fs::write(
        &src,
        "package main\n\nimport \"time\"\n\nfunc main() { time.Sleep(time.Hour) }\n",
    )
    .unwrap();
    let bin = dir.join("nodwarf");
    let status = Command::new(&tc.go)
        .args(["build", "-ldflags=-w", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", gocache_dir())
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .status()
        .unwrap();
    assert!(status.success());
    let mut nodwarf = Command::new(&bin).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let err = gospy_error(&[
        "dump",
        "--pid",
        &nodwarf.id().to_string(),
        "--go-version",
        "1.14",
    ]);
    assert!(err.contains("go1.14") && err.contains("--bin"), "{err}");
    nodwarf.kill().unwrap();
    nodwarf.wait().unwrap();
}

#[test]
fn permission_denied_explains_what_to_do() {
    // An unprivileged user may not inspect a root-owned process.
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    let target = Target::start(&bin, &[]);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(gospy_bin())
        .args(["dump", "--pid", &target.pid().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    // The cause, in so many words.
    let cause = format!(
        "process {} belongs to uid 0; gospy runs as uid 65534",
        target.pid()
    );
    assert!(err.contains(&cause), "{err}");
    assert!(
        err.contains("CAP_SYS_PTRACE") && err.contains("root"),
        "{err}"
    );
    assert!(target.is_running_not_stopped());
}

/// Killing gospy with SIGKILL, or interrupting it with Ctrl-C (SIGINT), at
/// any moment of a dump (including while the target is paused) leaves the
/// target running.
#[test]
fn target_survives_gospy_killed_or_interrupted_mid_dump() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    // Enough goroutines that a dump takes a while.
    let mut target = Target::start(&bin, &["-goroutines", "20000"]);
    let pid = target.pid().to_string();
    for signal in [libc::SIGKILL, libc::SIGINT] {
        for delay_ms in [0u64, 1, 2, 3, 5, 8, 12, 20, 30, 50] {
            let mut gospy = Command::new(gospy_bin())
                .args(["dump", "--pid", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(gospy.id() as i32, signal) };
            let status = gospy.wait().unwrap();
            if signal == libc::SIGINT {
                // Interrupted: exits 130, or 0 if the dump had finished;
                // never a panic.
                assert!(
                    matches!(status.code(), Some(0 | 130)) || status.code().is_none(),
                    "gospy exited with {status} after SIGINT"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
            assert!(
                target.is_running_not_stopped(),
                "target stopped after gospy got signal {signal} at {delay_ms} ms"
            );
        }
    }
    // And it still works: it answers its own stack dump request.
    assert!(!target.ground_truth().is_empty());
}

/// The target keeps running after a normal dump, and a second dump sees
/// the same parked goroutines.
#[test]
fn repeated_dumps_are_stable() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Pie);
    let mut target = Target::start(&bin, &[]);
    let truth = target.ground_truth();
    for _ in 0..5 {
        let dump = gospy_dump_json(target.pid());
        compare_parked(&truth, &dump).unwrap();
        assert!(target.is_running_not_stopped());
    }
}

/// `--native` shows the C frames of a goroutine inside a cgo call above its
/// Go frames (the `cgodeep` fixture: main.parkInC -> c_outer -> c_middle ->
/// c_inner -> libc sleep), on the oldest and newest toolchains; without it
/// there are none.
#[test]
fn native_shows_c_frames_of_cgo_calls() {
    let all = toolchains();
    let mut failures = Vec::new();
    for tc in [all.first().unwrap(), all.last().unwrap()] {
        let bin = build_fixture("cgodeep", tc, BuildMode::Cgo);
        let target = Target::start(&bin, &[]);
        let dump = gospy_dump_json_with(target.pid(), &["--native"]);
        let g = gospy_goroutines(&dump).iter().find(|g| {
            gospy_visible_frames(g)
                .iter()
                .any(|f| f.function == "main.parkInC")
        });
        let names: Vec<&str> = g
            .and_then(|g| g["native_frames"].as_array())
            .map(|fs| fs.iter().filter_map(|f| f["function"].as_str()).collect())
            .unwrap_or_default();
        let wanted = ["sleep", "c_inner", "c_middle", "c_outer"];
        let mut rest = names.iter();
        if !wanted.iter().all(|w| rest.any(|n| n == w)) {
            failures.push(format!(
                "Go {}: native frames {names:?}, wanted {wanted:?} in order",
                tc.version
            ));
        }
        let plain = gospy_dump_json(target.pid());
        if gospy_goroutines(&plain)
            .iter()
            .any(|g| g.get("native_frames").is_some())
        {
            failures.push(format!("Go {}: native frames without --native", tc.version));
        }
        if !target.is_running_not_stopped() {
            failures.push(format!("Go {}: target left stopped", tc.version));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A target in its own PID namespace (a container seen from the host, here
/// made with `unshare --pid`): its runtime knows its threads by namespace
/// ids, gospy by host ids. Running goroutines must still be found on their
/// (host) threads and unwound.
#[test]
fn target_in_another_pid_namespace() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(&bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed for this test");
    // The fixture is unshare's child; it says READY 1 (its namespace pid).
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(unshare.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("READY 1"), "fixture said {line:?}");
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let pid: u32 = children.trim().parse().unwrap();
    let host_tids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut result = Ok(());
    // Burners can be runnable at the moment of a dump: try a few times to
    // catch one running.
    for _ in 0..5 {
        let dump = gospy_dump_json(pid);
        result = check_burners(&dump).and_then(|()| {
            let running: Vec<u64> = gospy_goroutines(&dump)
                .iter()
                .filter(|g| g["status"] == "running")
                .filter_map(|g| g["thread_id"].as_u64())
                .collect();
            match running.iter().find(|t| !host_tids.contains(t)) {
                Some(t) => Err(format!("thread {t} is not one of {host_tids:?}")),
                None if running.is_empty() => Err("no running goroutine caught".into()),
                None => Ok(()),
            }
        });
        if result.is_ok() {
            break;
        }
    }
    let _ = unshare.kill();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = unshare.wait();
    result.unwrap();
}

/// A Go version without a built-in layout uses the nearest known one, and
/// gospy checks it against the process: a newer version than any known
/// (read with the newest layout) works and matches the runtime; a layout
/// that does not fit (Go 1.18 -> 1.19's, on a newest-toolchain build) is
/// refused with an explanation, not turned into garbage stacks.
#[test]
fn nearest_known_layout_is_checked_against_the_process() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Stripped);
    let mut target = Target::start(&bin, &[]);
    let newer = format!("1.{}", tc.minor() + 1);
    let dump = gospy_dump_json_with(target.pid(), &["--go-version", &newer]);
    let source = dump["layout_source"].as_str().unwrap_or("");
    assert!(
        source.contains(&format!("nearest to {newer}")),
        "layout_source {source:?}"
    );
    matches_runtime_with(&tc, &mut target, &["--go-version", &newer]).unwrap();
    let err = gospy_error(&[
        "dump",
        "--pid",
        &target.pid().to_string(),
        "--go-version",
        "1.18",
    ]);
    assert!(
        err.contains("does not fit this process") && err.contains("--bin"),
        "{err}"
    );
}
