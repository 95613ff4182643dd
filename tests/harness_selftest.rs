//! Tests of the test harness itself (tests/common): the traceback parser on
//! captured samples, the comparators on synthetic gospy output, and the
//! `parked` fixture built with every toolchain in every mode, checked against
//! the runtime's own dump. None of this needs gospy to work.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn sample(name: &str) -> Vec<RuntimeGoroutine> {
    let path = repo_root().join("testdata/tracebacks").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse_traceback(&text)
}

fn by_function<'a>(gs: &'a [RuntimeGoroutine], f: &str) -> &'a RuntimeGoroutine {
    let found: Vec<_> = gs.iter().filter(|g| g.has_function(f)).collect();
    assert_eq!(found.len(), 1, "{f}: {} goroutines", found.len());
    found[0]
}

fn functions(g: &RuntimeGoroutine) -> Vec<&str> {
    g.frames.iter().map(|f| f.function.as_str()).collect()
}

fn file_base(f: &RuntimeFrame) -> &str {
    f.file.rsplit('/').next().unwrap()
}

// ---------------------------------------------------------------- parser

#[test]
fn parse_go115_cgo_sample() {
    let gs = sample("go1.15-cgo.txt");
    assert_eq!(gs.len(), 29);
    let main = &gs[0];
    assert_eq!((main.goid, main.state.as_str()), (1, "running"));
    assert!(main.is_dumper() && main.is_moving());
    assert_eq!(
        functions(main),
        [
            "main.dumpStacks",
            "main.handleDump",
            "main.signalLoop",
            "main.main"
        ]
    );
    assert_eq!(main.created_by, None);

    let mutex = by_function(&gs, "main.parkMutexLock");
    assert_eq!(mutex.state, "semacquire");
    assert_eq!(
        functions(mutex),
        [
            "sync.runtime_SemacquireMutex",
            "sync.(*Mutex).lockSlow",
            "sync.(*Mutex).Lock",
            "main.parkMutexLock"
        ]
    );
    assert!(mutex.frames[2].inlined && !mutex.frames[3].inlined);
    let cb = mutex.created_by.as_ref().unwrap();
    assert_eq!(
        (cb.function.as_str(), cb.line, cb.parent_goid),
        ("main.baseParkers.func7", 91, None)
    );
    assert!(cb.file.ends_with("/testdata/fixtures/parked/parkers.go"));

    // 1.15 prints the inlined runtime.goparkunlock inside
    // sync.runtime_notifyListWait (visibility follows the physical function).
    let cond = by_function(&gs, "main.parkCondWait");
    assert_eq!(cond.frames[0].function, "runtime.goparkunlock");
    assert!(cond.frames[0].inlined);

    let inl = by_function(&gs, "main.waitOn");
    assert_eq!(functions(inl), ["main.waitOn", "main.parkInlined"]);
    assert!(inl.frames[0].inlined);
    assert_eq!(inl.frames[0].line, 250);

    let panicking = by_function(&gs, "main.parkInPanic.func1");
    assert_eq!(
        functions(panicking),
        ["main.parkInPanic.func1", "panic", "main.parkInPanic"]
    );
    assert_eq!(file_base(&panicking.frames[1]), "panic.go");

    let cgo = by_function(&gs, "main._Cfunc_gospy_block_forever");
    assert_eq!(cgo.state, "syscall");
    assert_eq!(cgo.frames[0].file, "_cgo_gotypes.go");
    assert_eq!(cgo.frames[1].function, "main.parkInCgo");

    let locked = by_function(&gs, "main.parkLockedThread");
    assert_eq!(locked.state, "chan receive");
    assert_eq!(locked.header_extra, ["locked to thread"]);
    assert!(locked.locked_to_thread());

    let burners: Vec<_> = gs
        .iter()
        .filter(|g| g.has_function("main.burnInner"))
        .collect();
    assert_eq!(burners.len(), 2);
    assert!(burners
        .iter()
        .all(|g| g.state == "runnable" && g.is_moving()));

    let ptr = by_function(&gs, "main.(*waiter).parkPtr");
    assert_eq!(
        functions(ptr),
        ["main.(*waiter).parkPtr", "main.runPtrMethod"]
    );
    assert!(by_function(&gs, "main.waiter.parkValue").has_function("main.runValueMethod"));
    assert!(gs
        .iter()
        .all(|g| !g.elided && !g.unavailable && g.labels.is_none()));
}

#[test]
fn parse_go121_sample() {
    let gs = sample("go1.21.txt");
    let signal = gs
        .iter()
        .find(|g| g.has_function("os/signal.loop"))
        .unwrap();
    assert_eq!(signal.state, "syscall");
    let cb = signal.created_by.as_ref().unwrap();
    assert_eq!(cb.function, "os/signal.Notify.func1.1");
    assert_eq!(cb.parent_goid, Some(1));

    let mutex = by_function(&gs, "main.parkMutexLock");
    assert_eq!(mutex.state, "sync.Mutex.Lock");
    assert_eq!(mutex.created_by.as_ref().unwrap().parent_goid, Some(1));
    assert_eq!(
        by_function(&gs, "main.parkRWMutexRLock").state,
        "sync.RWMutex.RLock"
    );
    assert_eq!(
        by_function(&gs, "main.parkRWMutexLock").state,
        "sync.RWMutex.Lock"
    );
    assert_eq!(
        by_function(&gs, "main.parkWaitGroupWait").state,
        "semacquire"
    );

    let generic = by_function(&gs, "main.parkGeneric[...]");
    assert_eq!(
        functions(generic),
        ["main.parkGeneric[...]", "main.runGeneric"]
    );
    let method = by_function(&gs, "main.(*genericBox[...]).park");
    assert_eq!(method.frames[1].function, "main.runGenericMethod");
    // 1.21-1.26 name closures inlined into main.main after it.
    assert_eq!(
        generic.created_by.as_ref().unwrap().function,
        "main.main.genericParkers.func1"
    );

    let deep = by_function(&gs, "main.parkDeep");
    assert_eq!(deep.frames.len(), 5, "captured with -depth 3");
    let labeled = by_function(&gs, "main.parkLabeled.func1");
    assert_eq!(
        functions(labeled),
        [
            "main.parkLabeled.func1",
            "runtime/pprof.Do",
            "main.parkLabeled"
        ]
    );
    assert_eq!(labeled.labels, None);
}

#[test]
fn parse_go127_labels_sample() {
    let gs = sample("go1.27-cgo-labels.txt");
    let labeled = by_function(&gs, "main.parkLabeled.func1");
    let want: BTreeMap<String, String> = [("tier", "gold"), ("worker", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(labeled.labels.as_ref(), Some(&want));
    assert_eq!(labeled.state, "chan receive");
    assert!(labeled.header_extra.is_empty());
    assert_eq!(gs.iter().filter(|g| g.labels.is_some()).count(), 1);
    assert_eq!(
        by_function(&gs, "main.parkWaitGroupWait").state,
        "sync.WaitGroup.Wait"
    );
    assert_eq!(
        functions(by_function(&gs, "main.parkMutexLock")),
        [
            "internal/sync.runtime_SemacquireMutex",
            "internal/sync.(*Mutex).lockSlow",
            "internal/sync.(*Mutex).Lock",
            "sync.(*Mutex).Lock",
            "main.parkMutexLock"
        ]
    );
    // Wrappers (gowrap) are hidden from the default traceback.
    let args = by_function(&gs, "main.parkGoWithArgs");
    assert_eq!(functions(args), ["main.parkGoWithArgs"]);
}

#[test]
fn parse_go126_labels_sample() {
    let gs = sample("go1.26-labels.txt");
    let labeled = by_function(&gs, "main.parkLabeled.func1");
    let labels = labeled.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels["tier"], "gold");
    assert_eq!(labels["worker"], "7");
    assert_eq!(labeled.state, "chan receive");
    assert!(labeled.header_extra.is_empty());
    let locked = by_function(&gs, "main.parkLockedThread");
    assert_eq!(locked.header_extra, ["locked to thread"]);
    assert_eq!(locked.labels, None);
}

#[test]
fn parse_go119_ancestors_sample() {
    let gs = sample("go1.19-ancestors.txt");
    let recv = by_function(&gs, "main.parkChanRecv");
    assert_eq!(functions(recv), ["main.parkChanRecv"]);
    assert_eq!(
        recv.created_by.as_ref().unwrap().function,
        "main.baseParkers.func1"
    );
    assert_eq!(recv.ancestors.len(), 1);
    let a = &recv.ancestors[0];
    assert_eq!(a.goid, 1);
    assert_eq!(
        a.frames
            .iter()
            .map(|f| f.function.as_str())
            .collect::<Vec<_>>(),
        ["main.baseParkers.func1", "main.main"]
    );
    assert_eq!(a.created_by, None);
    let signal = gs
        .iter()
        .find(|g| g.has_function("os/signal.loop"))
        .unwrap();
    assert_eq!(signal.frames.len(), 2);
    assert_eq!(signal.ancestors[0].frames.len(), 6);
}

#[test]
fn parse_go124_deep_elided_sample() {
    let gs = sample("go1.24-deep.txt");
    let deep = by_function(&gs, "main.parkDeep");
    assert!(deep.elided);
    assert_eq!(deep.elided_at, Some(50));
    assert_eq!(deep.frames.len(), 100);
    assert_eq!(deep.frames[99].function, "main.parkDeep");
    assert!(deep.created_by.is_some());
    assert!(!gs[0].elided);
}

#[test]
fn parse_sigquit_system_samples() {
    let gs = sample("go1.24-cgo-sigquit-system.txt");
    assert_eq!(gs[0].goid, 0);
    assert_eq!(gs[0].state, "idle");
    assert!(gs[0].raw_header.contains("gp=0x"));
    assert_eq!(gs[0].frames[0].function, "runtime.futex");
    assert_eq!(gs[0].frames[0].line, 557);
    assert_eq!(file_base(&gs[0].frames[0]), "sys_linux_amd64.s");
    let main = gs.iter().find(|g| g.goid == 1).unwrap();
    assert_eq!(main.state, "chan receive");
    assert_eq!(main.frames.last().unwrap().function, "runtime.goexit");
    assert_eq!(main.frames[0].function, "runtime.gopark");
    let cgo = by_function(&gs, "main.parkInCgo");
    assert_eq!(cgo.frames[0].function, "runtime.cgocall");
    // The register dump after the last goroutine is ignored.
    assert!(gs
        .last()
        .unwrap()
        .frames
        .iter()
        .all(|f| !f.function.starts_with("rax")));

    let gs = sample("go1.15-sigquit-system.txt");
    assert_eq!(gs[0].goid, 0);
    assert!(gs.iter().any(|g| g.has_function("main.burnInner")));
    let panicking = by_function(&gs, "main.parkInPanic");
    assert!(panicking.has_function("panic"));
    assert_eq!(panicking.frames.last().unwrap().function, "runtime.goexit");
}

#[test]
fn parse_synthetic_variants() {
    let text = "panic: boom [recovered]\n\tpanic: again\n\n\
goroutine 12 gp=0xc000007a40 m=3 mp=0xc000100008 [running]:\n\
\tgoroutine running on other thread; stack unavailable\n\
created by main.start in goroutine 1\n\
\t/src/app/main.go:10 +0x25\n\
\n\
goroutine 13 [chan receive (leaked), 5 minutes, locked to thread] {\"a ]b\": \"x\\\"y\", k: v}:\n\
main.deep(0x1, {0x2, 0x3}, ...)\n\
\t/src/app/main.go:20 +0x1d\n\
...additional frames elided...\n\
created by main.start\n\
\t/src/app/main.go:11 +0x30\n\
\n\
goroutine 14 [select]:\n\
main.Map[...](...)\n\
\t/src/app/gen.go:5\n\
main.(*T[...]).m(0xc00001)\n\
\t/src/app/gen.go:9 +0x1\n\
...7 frames elided...\n\
main.main()\n\
\t/src/app/main.go:3 +0x2\n";
    let gs = parse_traceback(text);
    assert_eq!(gs.len(), 3);
    assert!(gs[0].unavailable && gs[0].frames.is_empty() && gs[0].is_moving());
    assert_eq!(gs[0].created_by.as_ref().unwrap().parent_goid, Some(1));
    assert_eq!(gs[1].state, "chan receive (leaked)");
    assert_eq!(gs[1].header_extra, ["5 minutes", "locked to thread"]);
    let labels = gs[1].labels.as_ref().unwrap();
    assert_eq!(labels.get("a ]b").map(String::as_str), Some("x\"y"));
    assert_eq!(labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(gs[1].frames[0].function, "main.deep");
    assert!(gs[1].elided);
    assert_eq!(gs[1].elided_at, Some(1));
    assert_eq!(gs[1].created_by.as_ref().unwrap().line, 11);
    assert_eq!(
        functions(&gs[2]),
        ["main.Map[...]", "main.(*T[...]).m", "main.main"]
    );
    assert!(gs[2].frames[0].inlined && !gs[2].frames[1].inlined);
    assert_eq!(gs[2].elided_at, Some(2));
    assert_eq!(strip_args("main.(*T).m(0xc0000, ...)"), "main.(*T).m");
    assert_eq!(strip_args("runtime.goexit({})"), "runtime.goexit");
    assert_eq!(strip_args("created"), "created");
}

// ----------------------------------------------------------- comparators

/// A gospy-like JSON document that agrees with `gs`, with a hidden runtime
/// frame on top of every stack.
fn fake_gospy(gs: &[RuntimeGoroutine]) -> Value {
    let goroutines: Vec<Value> = gs
        .iter()
        .map(|g| {
            let mut frames = vec![
                json!({"function": "runtime.gopark", "file": "/go/src/runtime/proc.go",
                "line": 435, "inlined": false, "hidden": true}),
            ];
            frames.extend(g.frames.iter().map(|f| {
                json!({"function": f.function, "file": f.file, "line": f.line,
                    "inlined": f.inlined, "hidden": false})
            }));
            let created_by = g.created_by.as_ref().map(|c| {
                json!({"function": c.function, "file": c.file, "line": c.line,
                    "parent_goid": c.parent_goid.unwrap_or(1)})
            });
            json!({"goid": g.goid, "status": "waiting", "wait_reason": g.state,
                "system": false, "locked_to_thread": g.locked_to_thread(),
                "labels": g.labels, "created_by": created_by, "frames": frames,
                "truncated": false, "error": null})
        })
        .collect();
    json!({"pid": 1, "goroutines": goroutines})
}

#[test]
fn compare_parked_accepts_equal_and_reports_diffs() {
    let gs = sample("go1.21.txt");
    let mut gospy = fake_gospy(&gs);
    let parked = gs
        .iter()
        .filter(|g| !g.is_moving() && !g.is_dumper())
        .count();
    assert_eq!(compare_parked(&gs, &gospy), Ok(parked));
    assert_eq!(
        compare_labels(
            &sample("go1.27-cgo-labels.txt"),
            &fake_gospy(&sample("go1.27-cgo-labels.txt"))
        ),
        Ok(1)
    );

    // A wrong line on a parked goroutine is reported side by side.
    let idx = gs
        .iter()
        .position(|g| g.has_function("main.parkSelect"))
        .unwrap();
    gospy["goroutines"][idx]["frames"][1]["line"] = json!(999);
    let err = compare_parked(&gs, &gospy).unwrap_err();
    assert!(
        err.contains("!!  0 main.parkSelect parkers.go:134"),
        "{err}"
    );
    assert!(err.contains("main.parkSelect parkers.go:999"), "{err}");

    // Running goroutines are not compared; missing ones are reported.
    let mut gospy = fake_gospy(&gs);
    let burner = gs
        .iter()
        .position(|g| g.has_function("main.burnInner"))
        .unwrap();
    gospy["goroutines"][burner]["frames"][1]["line"] = json!(1);
    assert_eq!(compare_parked(&gs, &gospy), Ok(parked));
    gospy["goroutines"].as_array_mut().unwrap().remove(burner);
    let err = compare_parked(&gs, &gospy).unwrap_err();
    assert!(err.contains("not in gospy's"), "{err}");

    // Extra non-system goroutines are reported, system ones are not.
    let mut gospy = fake_gospy(&gs);
    let extra = json!({"goid": 9999, "status": "waiting", "system": false, "frames": []});
    gospy["goroutines"].as_array_mut().unwrap().push(extra);
    assert!(compare_parked(&gs, &gospy).unwrap_err().contains("9999"));
    gospy["goroutines"][gs.len()]["system"] = json!(true);
    assert_eq!(compare_parked(&gs, &gospy), Ok(parked));

    // created_by must match, including the parent goid when printed.
    let mut gospy = fake_gospy(&gs);
    gospy["goroutines"][idx]["created_by"]["parent_goid"] = json!(7);
    assert!(compare_parked(&gs, &gospy)
        .unwrap_err()
        .contains("created_by differs"));

    // Elided stacks: the first and last parts must match.
    let deep = sample("go1.24-deep.txt");
    let mut gospy = fake_gospy(&deep);
    let d = deep.iter().position(|g| g.elided).unwrap();
    let frames = gospy["goroutines"][d]["frames"].as_array_mut().unwrap();
    let filler = frames[10].clone();
    for _ in 0..22 {
        frames.insert(51, filler.clone());
    }
    assert_eq!(compare_parked(&deep, &gospy), Ok(1));
}

#[test]
fn compare_states_maps_headers() {
    let gs = sample("go1.21.txt");
    let mut gospy = fake_gospy(&gs);
    for (i, g) in gs.iter().enumerate() {
        if g.state == "syscall" {
            gospy["goroutines"][i]["status"] = json!("syscall");
            gospy["goroutines"][i]["wait_reason"] = Value::Null;
        }
    }
    let parked = gs
        .iter()
        .filter(|g| !g.is_moving() && !g.is_dumper())
        .count();
    assert_eq!(compare_states(&gs, &gospy), Ok(parked));
    let i = gs.iter().position(|g| g.locked_to_thread()).unwrap();
    gospy["goroutines"][i]["locked_to_thread"] = json!(false);
    assert!(compare_states(&gs, &gospy).is_err());
}

// -------------------------------------------------------------- fixtures

#[test]
fn toolchains_are_installed() {
    // Fails with the install hint if a listed toolchain is missing.
    assert!(!toolchains().is_empty());
    for tc in toolchains() {
        assert!(
            tc.full_version().starts_with(&format!("go{}", tc.version)),
            "{tc:?}"
        );
    }
}

/// Check one running fixture against the catalogue; returns a list of
/// problems.
fn check_parked(tc: &Toolchain, mode: BuildMode) -> Vec<String> {
    let bin = build_fixture("parked", tc, mode);
    let mut target = Target::start(&bin, &[]);
    let truth = target.ground_truth();
    let mut problems = Vec::new();
    let mut bad = |s: String| problems.push(format!("Go {} {mode}: {s}", tc.version));

    let catalogue = parked_catalogue(tc, mode);
    let mut explained = std::collections::HashSet::new();
    let mut parked_goids = Vec::new();
    for p in &catalogue {
        let found: Vec<_> = truth
            .iter()
            .filter(|g| g.has_function(p.function))
            .collect();
        if found.len() != 1 {
            bad(format!("{}: in {} goroutines", p.function, found.len()));
            continue;
        }
        let g = found[0];
        explained.insert(g.goid);
        parked_goids.push(g.goid);
        if g.state != p.state {
            bad(format!(
                "{}: state {:?}, want {:?}",
                p.function, g.state, p.state
            ));
        }
        if g.locked_to_thread() != p.locked_to_thread {
            bad(format!("{}: header {:?}", p.function, g.raw_header));
        }
        let i = g.frame_index(p.function).unwrap();
        for (k, caller) in p.callers.iter().enumerate() {
            if g.frames.get(i + 1 + k).map(|f| f.function.as_str()) != Some(caller) {
                bad(format!(
                    "{}: frame {} is not {caller}: {:?}",
                    p.function,
                    i + 1 + k,
                    functions(g)
                ));
            }
        }
        if g.frames[i].inlined != p.inlined {
            bad(format!("{}: inlined={}", p.function, g.frames[i].inlined));
        }
        if g.elided || g.unavailable || g.created_by.is_none() {
            bad(format!(
                "{}: elided/unavailable/no creator: {g:?}",
                p.function
            ));
        }
        if tc.at_least(26) && !p.labels.is_empty() {
            let want: BTreeMap<String, String> = p
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if g.labels.as_ref() != Some(&want) {
                bad(format!("{}: labels {:?}", p.function, g.labels));
            }
        }
    }
    if let Some(d) = truth.iter().find(|g| g.has_function("main.recurse")) {
        let n = d
            .frames
            .iter()
            .filter(|f| f.function == "main.recurse")
            .count();
        if n != 61 || d.frames.len() >= 100 {
            bad(format!(
                "recursion: {n} recurse frames of {}",
                d.frames.len()
            ));
        }
    }

    let burners: Vec<_> = truth
        .iter()
        .filter(|g| g.has_function(BURN_CHAIN[0]))
        .collect();
    if burners.len() != BURNERS {
        bad(format!("{} burners", burners.len()));
    }
    for g in &burners {
        explained.insert(g.goid);
        let i = g.frame_index(BURN_CHAIN[0]).unwrap();
        let chain: Vec<&str> = g.frames[i..].iter().map(|f| f.function.as_str()).collect();
        if chain != BURN_CHAIN || !g.is_moving() {
            bad(format!("burner: [{}] {chain:?}", g.state));
        }
    }
    let dumpers: Vec<_> = truth.iter().filter(|g| g.is_dumper()).collect();
    if dumpers.len() != 1 || dumpers[0].goid != 1 || !dumpers[0].has_function(MAIN_LOOP) {
        bad(format!("dumper: {dumpers:?}"));
    }
    for g in &truth {
        if g.is_dumper() || explained.contains(&g.goid) || g.has_function("os/signal.loop") {
            continue;
        }
        bad(format!(
            "unexpected goroutine {}: {:?}",
            g.raw_header,
            functions(g)
        ));
    }

    // Parked goroutines stay exactly where they are. (os/signal.loop is not
    // in the catalogue: every SIGUSR1 wakes it, so the runtime may catch it
    // `running` on its way back into signal_recv.)
    let again = target.ground_truth();
    for g in truth.iter().filter(|g| parked_goids.contains(&g.goid)) {
        match again.iter().find(|a| a.goid == g.goid) {
            Some(a) if a.frames == g.frames && a.state == g.state => {}
            other => bad(format!("goroutine {} moved: {g:?} -> {other:?}", g.goid)),
        }
    }
    if !target.is_running_not_stopped() {
        bad(format!(
            "target not running: {:?}",
            thread_states(target.pid())
        ));
    }
    problems
}

fn check_mode_on_all_toolchains(mode: BuildMode) {
    let mut problems = Vec::new();
    for tc in toolchains() {
        problems.extend(check_parked(&tc, mode));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn parked_fixture_default_all_toolchains() {
    check_mode_on_all_toolchains(BuildMode::Default);
}

#[test]
fn parked_fixture_pie_all_toolchains() {
    check_mode_on_all_toolchains(BuildMode::Pie);
}

#[test]
fn parked_fixture_cgo_all_toolchains() {
    check_mode_on_all_toolchains(BuildMode::Cgo);
}

#[test]
fn parked_fixture_extra_goroutines() {
    let tc = toolchains().pop().unwrap();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    let mut target = Target::start(&bin, &["-goroutines", "300"]);
    let truth = target.ground_truth();
    for f in ["main.extraParkA", "main.extraParkB", "main.extraParkC"] {
        let n = truth.iter().filter(|g| g.has_function(f)).count();
        assert_eq!(n, 100, "{f}");
    }
    assert!(target.last_stack_ns().is_some_and(|ns| ns > 0));
    assert!(target.is_running_not_stopped());
}

#[test]
fn build_is_cached() {
    let tc = toolchains().pop().unwrap();
    let a = build_fixture("parked", &tc, BuildMode::Pie);
    let modified = std::fs::metadata(&a).unwrap().modified().unwrap();
    let b = build_fixture("parked", &tc, BuildMode::Pie);
    assert_eq!(a, b);
    assert_eq!(std::fs::metadata(&b).unwrap().modified().unwrap(), modified);
    assert_ne!(a, build_fixture("parked", &tc, BuildMode::Default));
    let name = a.parent().unwrap().file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(&format!("parked-go{}-pie-", tc.version)),
        "{name}"
    );
}
