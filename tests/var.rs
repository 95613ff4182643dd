//! `gospy var` against the `globals` fixture (testdata/fixtures/globals),
//! which prints its own view of every package-level variable (through
//! package reflect, in the shape of gospy's JSON values) before READY: on
//! every toolchain, every variable gospy reads must equal the program's own
//! view (values, lengths, map contents as sets, dynamic types, channel
//! buffers). Plus the limits, the text form, and the errors: unknown names,
//! non-Go processes, binaries without DWARF (and `--bin` for them).

mod common;

use common::{
    build_fixture, newest_toolchain, run_gospy, toolchains, BuildMode, Target, Toolchain,
};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};

/// Limits high enough that gospy shows everything the fixture has.
const ALL: [&str; 6] = [
    "--max-elements",
    "100000",
    "--max-string",
    "100000",
    "--depth",
    "20",
];

/// The fixture running, and its own view: variable name → value.
struct Globals {
    target: Target,
    truth: Vec<(String, Value)>,
}

fn start(bin: &Path) -> Globals {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "globals-{}-{}.txt",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&out);
    let target = Target::start_with_env(bin, &[], &[("GOSPY_GLOBALS_OUT", out.to_str().unwrap())]);
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("{}: reading {}: {e}", bin.display(), out.display()));
    let _ = std::fs::remove_file(&out);
    let truth = text
        .lines()
        .map(|line| {
            let rest = line
                .strip_prefix("VAR ")
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let (name, json) = rest.split_once(' ').unwrap();
            let v: Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("fixture JSON for {name}: {e}: {json}"));
            (name.to_string(), v)
        })
        .collect::<Vec<_>>();
    assert!(
        truth.len() > 50,
        "{}: only {} variables",
        bin.display(),
        truth.len()
    );
    Globals { target, truth }
}

fn ok_stdout(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstderr:\n{}\nstdout:\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `gospy var --pid PID --json ARGS...`, parsed: variable name → entry.
fn gospy_vars(pid: u32, args: &[&str]) -> HashMap<String, Value> {
    let pid = pid.to_string();
    let mut all = vec!["var", "--pid", pid.as_str(), "--json"];
    all.extend_from_slice(args);
    let out = run_gospy(&all);
    let stdout = ok_stdout(&out, &format!("gospy {}", all.join(" ")));
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("gospy var --json printed invalid JSON ({e}):\n{stdout}"));
    assert_eq!(doc["pid"].as_u64(), Some(pid.parse().unwrap()));
    doc["variables"]
        .as_array()
        .expect("variables array")
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect()
}

/// Checks that everything in `want` (the fixture's view) is in `got`
/// (gospy's), which may have more (addresses, truncated flags). Map entries
/// are compared as sets, keyed by their keys.
fn check(path: &str, want: &Value, got: &Value, errs: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    None => errs.push(format!("{p}: missing from gospy's output {got}")),
                    Some(gv) if k == "entries" => check_entries(&p, wv, gv, errs),
                    Some(gv) => check(&p, wv, gv, errs),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                errs.push(format!(
                    "{path}: {} items in the program, {} from gospy",
                    w.len(),
                    g.len()
                ));
                return;
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                check(&format!("{path}[{i}]"), wv, gv, errs);
            }
        }
        (Value::Number(w), Value::Number(g)) => {
            let same = if w.is_f64() || g.is_f64() {
                let (a, b) = (w.as_f64().unwrap(), g.as_f64().unwrap());
                // serde_json's default float parsing may be off by an ulp.
                a == b || ((a - b) / a).abs() < 1e-12
            } else {
                w.as_i64() == g.as_i64() && w.as_u64() == g.as_u64()
            };
            if !same {
                errs.push(format!("{path}: program {w}, gospy {g}"));
            }
        }
        (w, g) => {
            if w != g {
                errs.push(format!("{path}: program {w}, gospy {g}"));
            }
        }
    }
}

/// What identifies a value regardless of addresses: its kind, scalar value
/// and elements.
fn canon(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut parts = Vec::new();
            for k in [
                "kind", "value", "real", "imag", "items", "fields", "name", "target",
            ] {
                if let Some(x) = m.get(k) {
                    parts.push(format!("{k}={}", canon(x)));
                }
            }
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(",")),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:e}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn check_entries(path: &str, want: &Value, got: &Value, errs: &mut Vec<String>) {
    let (Some(w), Some(g)) = (want.as_array(), got.as_array()) else {
        errs.push(format!("{path}: not an array in gospy's output"));
        return;
    };
    if w.len() != g.len() {
        errs.push(format!(
            "{path}: {} entries in the program, {} from gospy",
            w.len(),
            g.len()
        ));
    }
    let by_key: HashMap<String, &Value> = g.iter().map(|e| (canon(&e["key"]), e)).collect();
    for e in w {
        let key = canon(&e["key"]);
        match by_key.get(&key) {
            None => errs.push(format!("{path}: key {key} missing from gospy's output")),
            Some(ge) => {
                check(&format!("{path}[{key}].key"), &e["key"], &ge["key"], errs);
                check(
                    &format!("{path}[{key}].value"),
                    &e["value"],
                    &ge["value"],
                    errs,
                );
            }
        }
    }
}

/// Reads every variable with gospy (plus, for interfaces, once more from
/// the runtime type descriptors) and compares with the fixture's view.
fn compare_all(what: &str, g: &Globals, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--name", "main.*"];
    args.extend_from_slice(&ALL);
    args.extend_from_slice(extra);
    let got = gospy_vars(g.target.pid(), &args);
    let mut errs = Vec::new();
    for (name, want) in &g.truth {
        match got.get(name) {
            None => errs.push(format!(
                "{what}: {name} not listed by gospy var --name 'main.*'"
            )),
            Some(v) => {
                check(&format!("{what}: {name}"), want, &v["value"], &mut errs);
                if v["type"] != want["type"] {
                    errs.push(format!(
                        "{what}: {name}: type {} vs {}",
                        v["type"], want["type"]
                    ));
                }
            }
        }
    }
    // The same interfaces, decoded from the runtime type descriptors.
    let mut args = vec![
        "--runtime-types",
        "--name",
        "main.vIface*",
        "--name",
        "main.vError",
    ];
    args.extend_from_slice(&ALL);
    args.extend_from_slice(extra);
    let got = gospy_vars(g.target.pid(), &args);
    for (name, want) in g.truth.iter().filter(|(n, _)| got.contains_key(n)) {
        check(
            &format!("{what} --runtime-types: {name}"),
            want,
            &got[name]["value"],
            &mut errs,
        );
    }
    errs
}

fn report(errs: Vec<String>) {
    if !errs.is_empty() {
        let n = errs.len();
        let shown: Vec<String> = errs.into_iter().take(40).collect();
        panic!("{n} differences:\n{}", shown.join("\n"));
    }
}

/// One toolchain: the default build, plus PIE and cgo (external linker)
/// for the oldest and newest toolchains.
fn toolchain_run(tc: &Toolchain, more: bool) -> Vec<String> {
    let mut modes = vec![BuildMode::Default];
    if more {
        modes.extend([BuildMode::Pie, BuildMode::Cgo]);
    }
    let mut errs = Vec::new();
    for mode in modes {
        let bin = build_fixture("globals", tc, mode);
        let g = start(&bin);
        errs.extend(compare_all(&format!("Go {} {mode}", tc.version), &g, &[]));
        assert!(g.target.is_running_not_stopped());
    }
    errs
}

#[test]
fn every_variable_matches_the_program_on_every_toolchain() {
    let tcs = toolchains();
    let (oldest, newest) = (tcs.first().cloned(), tcs.last().cloned());
    let errs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = tcs
            .iter()
            .map(|tc| {
                let more = Some(tc) == oldest.as_ref() || Some(tc) == newest.as_ref();
                s.spawn(move || toolchain_run(tc, more))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    report(errs);
}

#[test]
fn limits_cut_collections_strings_and_depth() {
    let tc = newest_toolchain();
    let g = start(&build_fixture("globals", &tc, BuildMode::Default));
    let pid = g.target.pid();
    let got = gospy_vars(
        pid,
        &[
            "--name",
            "main.vMapLarge",
            "--name",
            "main.vLongString",
            "--name",
            "main.vSlice",
        ],
    );
    let map = &got["main.vMapLarge"]["value"];
    assert_eq!(map["len"], 900, "{map}");
    assert_eq!(map["entries"].as_array().unwrap().len(), 100);
    assert_eq!(map["truncated"], true);
    let s = &got["main.vLongString"]["value"];
    assert_eq!(s["len"], 5000);
    assert_eq!(s["truncated"], true);
    assert_eq!(
        s["value"].as_str().unwrap(),
        &"0123456789".repeat(500)[..1024]
    );
    assert_eq!(got["main.vSlice"]["value"]["truncated"], false);

    let got = gospy_vars(
        pid,
        &[
            "--name",
            "main.vSlice",
            "--max-elements",
            "2",
            "--name",
            "main.vCycle",
            "--depth",
            "1",
        ],
    );
    let slice = &got["main.vSlice"]["value"];
    assert_eq!(
        (slice["len"].as_u64(), slice["cap"].as_u64()),
        (Some(5), Some(8))
    );
    assert_eq!(slice["items"].as_array().unwrap().len(), 2);
    assert_eq!(slice["truncated"], true);
    // vCycle -> a -> b -> a: with depth 1, a is shown and b is not.
    let a = &got["main.vCycle"]["value"]["target"];
    assert_eq!(a["fields"][0]["value"]["value"], 1, "{a}");
    let next = &a["fields"][1]["value"];
    assert_eq!(next["kind"], "pointer");
    assert_eq!(next["target"]["kind"], "truncated", "{next}");
    // With the default depth, the cycle is found.
    let got = gospy_vars(pid, &["--name", "main.vCycle"]);
    let b = &got["main.vCycle"]["value"]["target"]["fields"][1]["value"]["target"];
    assert_eq!(b["fields"][1]["value"]["target"]["kind"], "cycle", "{b}");
}

#[test]
fn text_output_is_go_like() {
    let tc = newest_toolchain();
    let g = start(&build_fixture("globals", &tc, BuildMode::Default));
    let pid = g.target.pid().to_string();
    let names = [
        "main.vInt8",
        "main.vUint64",
        "main.vFloat32",
        "main.vComplex128",
        "main.vString",
        "main.vUnicode",
        "main.vNilPtr",
        "main.vPtrPtr",
        "main.vStruct",
        "main.vArray",
        "main.vSlice",
        "main.vNilSlice",
        "main.vMapTiny",
        "main.vMapNil",
        "main.vIfaceInt",
        "main.vIfacePtrBox",
        "main.vError",
        "main.vNilError",
        "main.vChan",
        "main.vClosedChan",
        "main.vFunc",
    ];
    let mut args = vec!["var", "--pid", pid.as_str()];
    for n in names {
        args.extend(["--name", n]);
    }
    let stdout = ok_stdout(&run_gospy(&args), "gospy var");
    let want = r#"main.vInt8 = int8(-8)
main.vUint64 = uint64(6400000000000)
main.vFloat32 = float32(0.82500005)
main.vComplex128 = complex128((1.25+2.3333333333333335i))
main.vString = "hello, gospy"
main.vUnicode = "héllo\twörld \"quoted\" ✓"
main.vNilPtr = (*main.Inner)(nil)
main.vPtrPtr = &&int(99)
main.vStruct = main.Outer{Name: "outer", N: 3, In: {A: -1, B: "inner"}, P: &main.Inner{A: 8, B: "via pointer"}, Tags: {"x", "y"}, hidden: 12}
main.vArray = [5]int16{0, 1, 4, 9, 16}
main.vSlice = []int{0, 10, 20, 30, 40} (len 5, cap 8)
main.vNilSlice = []int(nil)
main.vMapTiny = map[string]int{"one": 1, "three": 3, "two": 2} (len 3)
main.vMapNil = map[string]int(nil)
main.vIfaceInt = interface {}(int(12345))
main.vIfacePtrBox = interface {}(main.PtrBox{P: &int(99)})
main.vError = error(&errors.errorString{s: "boom"})
main.vNilError = error(nil)
main.vChan = chan int{22, 33, 44} (len 3, cap 5)
main.vClosedChan = chan string{"last"} (len 1, cap 2, closed)
main.vFunc = func(string) string(strings.ToUpper)
"#;
    assert_eq!(stdout, want);
}

fn failure(args: &[&str]) -> String {
    let out = run_gospy(args);
    assert!(
        !out.status.success(),
        "gospy {} succeeded:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_names_are_errors_with_close_matches() {
    let tc = newest_toolchain();
    let g = start(&build_fixture("globals", &tc, BuildMode::Default));
    let pid = g.target.pid().to_string();
    let var = |name: &str| failure(&["var", "--pid", &pid, "--name", name]);

    let err = var("main.vInt9");
    assert!(
        err.contains("no package-level variable \"main.vInt9\""),
        "{err}"
    );
    assert!(err.contains("main.vInt8"), "{err}");
    let err = var("vMapTiny");
    assert!(err.contains("did you mean main.vMapTiny"), "{err}");
    let err = var("mian.vInt8");
    assert!(
        err.contains("no package \"mian\"") && err.contains("did you mean main"),
        "{err}"
    );
    let err = var("main.nothing*");
    assert!(err.contains("no variable matches"), "{err}");
    // A good name with a bad one is an error too: nothing is printed.
    let out = run_gospy(&[
        "var",
        "--pid",
        &pid,
        "--name",
        "main.vInt8",
        "--name",
        "main.nope",
    ]);
    assert!(!out.status.success() && out.stdout.is_empty());
}

#[test]
fn non_go_processes_are_refused() {
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("starting sleep");
    let pid = child.id().to_string();
    let err = failure(&["var", "--pid", &pid, "--name", "main.x"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(err.contains("not a Go program"), "{err}");
}

#[test]
fn binaries_without_dwarf_need_bin() {
    let tc = newest_toolchain();
    // -ldflags=-s -w: the data sits a few bytes away from the default
    // build's, so --bin addresses are translated section by section; and
    // binutils strip of a PIE: the same addresses, plus the load bias.
    for (mode, debug) in [
        (BuildMode::Stripped, BuildMode::Default),
        (BuildMode::PieStripped, BuildMode::Pie),
    ] {
        let g = start(&build_fixture("globals", &tc, mode));
        let pid = g.target.pid().to_string();
        let err = failure(&["var", "--pid", &pid, "--name", "main.vInt"]);
        assert!(
            err.contains("no DWARF") && err.contains("--bin"),
            "{mode}: {err}"
        );

        let debug_bin = build_fixture("globals", &tc, debug);
        let debug_bin = debug_bin.to_str().unwrap();
        let errs = compare_all(&format!("{mode} with --bin"), &g, &["--bin", debug_bin]);
        report(errs);

        // A --bin of another program is refused, and one built with
        // another Go version too.
        let other = build_fixture("cpusplit", &tc, BuildMode::Default);
        let err = failure(&[
            "var",
            "--pid",
            &pid,
            "--name",
            "main.vInt",
            "--bin",
            other.to_str().unwrap(),
        ]);
        assert!(err.contains("not a build of the target's program"), "{err}");
        let other = build_fixture("globals", &toolchains()[0], BuildMode::Default);
        if toolchains()[0] != tc {
            let err = failure(&[
                "var",
                "--pid",
                &pid,
                "--name",
                "main.vInt",
                "--bin",
                other.to_str().unwrap(),
            ]);
            assert!(err.contains("was built with"), "{err}");
        }
    }
}

#[test]
fn pause_reads_and_resumes() {
    let tc = newest_toolchain();
    let g = start(&build_fixture("globals", &tc, BuildMode::Default));
    let got = gospy_vars(g.target.pid(), &["--pause", "--name", "main.vInt"]);
    assert_eq!(got["main.vInt"]["value"]["value"], 42);
    assert!(g.target.is_running_not_stopped());
}

#[test]
fn corrupt_values_are_unreadable_not_fatal() {
    for tc in [toolchains()[0].clone(), newest_toolchain()] {
        let g = start(&build_fixture("globals", &tc, BuildMode::Default));
        // Limits as high as they go: nothing may be allocated from the
        // lengths the target claims.
        let got = gospy_vars(
            g.target.pid(),
            &[
                "--name",
                "main.vBad*",
                "--max-elements",
                "1000000000000",
                "--max-string",
                "1000000000000",
            ],
        );
        let kind = |name: &str| {
            got[name]["value"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        for name in [
            "main.vBadString",
            "main.vBadSlice",
            "main.vBadMap",
            "main.vBadChan",
        ] {
            assert_eq!(
                kind(name),
                "unreadable",
                "Go {}: {name}: {}",
                tc.version,
                got[name]
            );
        }
        // The interface's type word points to garbage: whatever gospy makes
        // of it, it is an interface whose value it could not decode.
        let iface = &got["main.vBadIface"]["value"];
        assert_eq!(iface["kind"], "interface", "Go {}: {iface}", tc.version);
        assert_eq!(
            iface["value"]["kind"], "unreadable",
            "Go {}: {iface}",
            tc.version
        );
        assert!(g.target.is_running_not_stopped());
    }
}
