//! `gospy record` end to end, against the `cpusplit` fixture: one goroutine
//! that spends exactly 3/4 of its time in `main.chainA -> main.workA` and
//! 1/4 in `main.chainB -> main.workB` (see testdata/fixtures/cpusplit).

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const FIXTURE: &str = "cpusplit";
const WORK_A: &str = "main.workA";
const WORK_B: &str = "main.workB";
const CHAIN_A: &str = "main.chainA";
const CHAIN_B: &str = "main.chainB";

/// A fresh path under cargo's per-test temp dir.
fn temp_path(name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "gospy-record-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir.join(name)
}

/// Starts the fixture while holding a lock that keeps the other tests of
/// this file from running theirs: each fixture keeps a CPU busy, and on a
/// 2-core machine two of them plus gospy would distort the measured split
/// (a descheduled thread keeps its Go status "running" at a stale pc).
fn start_exclusive(bin: &std::path::Path) -> (std::sync::MutexGuard<'static, ()>, Target) {
    let guard = start_exclusive_lock();
    (guard, Target::start(bin, &[]))
}

/// Runs `gospy record --pid PID --duration SECONDS --format FORMAT -o OUT
/// extra...` and returns the output file's contents, or an error with
/// gospy's output if it failed, wrote nothing, took far from `seconds`, or
/// did not report "collected N ticks".
fn record(pid: u32, seconds: u32, format: &str, extra: &[&str]) -> Result<String, String> {
    record_with_stderr(pid, seconds, format, extra).map(|(text, _)| text)
}

/// [`record`], also returning gospy's stderr.
fn record_with_stderr(
    pid: u32,
    seconds: u32,
    format: &str,
    extra: &[&str],
) -> Result<(String, String), String> {
    // A name whose extension agrees with the format (or names none).
    let out = temp_path(match format {
        "flamegraph" => "x.svg",
        "folded" => "x.folded",
        "pprof" => "x.pb.gz",
        "speedscope" => "x.speedscope.json",
        _ => "x.out",
    });
    let pid = pid.to_string();
    let duration = seconds.to_string();
    let out_str = out.to_str().unwrap();
    let mut args = vec![
        "record",
        "--pid",
        &pid,
        "--duration",
        &duration,
        "--format",
        format,
        "-o",
        out_str,
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let output = run_gospy(&args);
    let took = started.elapsed();
    let describe = |o: &Output| {
        format!(
            "gospy {} ({}):\nstderr:\n{}\nstdout:\n{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        )
    };
    if !output.status.success() {
        return Err(format!("failed: {}", describe(&output)));
    }
    let wanted = Duration::from_secs(seconds.into());
    if took + Duration::from_millis(200) < wanted || took > wanted + Duration::from_secs(30) {
        return Err(format!(
            "took {took:?} for --duration {seconds}: {}",
            describe(&output)
        ));
    }
    if collected_samples(&String::from_utf8_lossy(&output.stderr)).is_none() {
        return Err(format!(
            "no \"collected N ticks\" on stderr: {}",
            describe(&output)
        ));
    }
    let text = std::fs::read_to_string(&out)
        .map_err(|e| format!("reading {}: {e}; {}", out.display(), describe(&output)))?;
    if let Some(dir) = out.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok((text, String::from_utf8_lossy(&output.stderr).into_owned()))
}

/// N from gospy's "collected N ticks, ..." line.
fn collected_samples(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        let rest = &line[line.find("collected ")? + "collected ".len()..];
        let (n, tail) = rest.split_once(' ')?;
        if tail.starts_with("tick") {
            n.parse().ok()
        } else {
            None
        }
    })
}

/// One folded line: frames root first, and its count.
#[derive(Debug)]
struct Folded {
    frames: Vec<String>,
    count: u64,
}

/// Parses folded stacks the way inferno's flamegraph expects them: each
/// non-empty line is `STACK COUNT`, split at the last space, where STACK
/// matches `[^ ]+( [^ ]+)*` (frames separated by `;`, none empty) and COUNT
/// is a positive decimal integer.
fn parse_folded(text: &str) -> Result<Vec<Folded>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| Err(format!("line {}: {why}: {line:?}", i + 1));
        let Some((stack, count)) = line.rsplit_once(' ') else {
            return bad("no space before the count");
        };
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return bad("count is not a decimal integer");
        }
        let Ok(count) = count.parse::<u64>() else {
            return bad("count out of range");
        };
        if count == 0 {
            return bad("count is 0");
        }
        if stack.is_empty() || stack.split(' ').any(str::is_empty) {
            return bad("stack is empty or has leading, trailing or double spaces");
        }
        let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
        if frames.iter().any(String::is_empty) {
            return bad("empty frame");
        }
        out.push(Folded { frames, count });
    }
    if out.is_empty() {
        return Err("no stacks".to_string());
    }
    Ok(out)
}

fn has_frame(f: &Folded, name: &str) -> bool {
    f.frames.iter().any(|n| n == name)
}

/// In every stack through `work`, `chain` is its caller (root first order).
fn check_chain(stacks: &[Folded], chain: &str, work: &str) -> Result<(), String> {
    for s in stacks.iter().filter(|s| has_frame(s, work)) {
        let i = s.frames.iter().position(|n| n == work).unwrap();
        if i == 0 || s.frames[i - 1] != chain {
            return Err(format!(
                "stack {:?} does not show {chain} calling {work} (root first)",
                s.frames
            ));
        }
        if s.frames[0] == "runtime.goexit" {
            return Err(format!(
                "stack {:?} starts with hidden frame runtime.goexit",
                s.frames
            ));
        }
    }
    Ok(())
}

fn cpu_split(target: &Target, extra: &[&str]) -> Result<(), String> {
    let mut args = vec!["--rate", "200"];
    args.extend_from_slice(extra);
    let text = record(target.pid(), 3, "folded", &args)?;
    let stacks = parse_folded(&text)?;
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    let sum = |work: &str| -> u64 {
        stacks
            .iter()
            .filter(|s| has_frame(s, work))
            .map(|s| s.count)
            .sum()
    };
    let (a, b) = (sum(WORK_A), sum(WORK_B));
    // Folded values are microseconds of CPU: one busy goroutine for 3 s.
    if total < 2_000_000 {
        return Err(format!(
            "only {total} us of CPU in 3 s of a busy goroutine (A {a}, B {b}):\n{text}"
        ));
    }
    if a + b == 0 {
        return Err(format!("no samples in {WORK_A} or {WORK_B}:\n{text}"));
    }
    let share = 100.0 * a as f64 / (a + b) as f64;
    if (share - 75.0).abs() > 3.0 {
        return Err(format!(
            "{WORK_A} has {share:.1}% of A+B samples (A {a}, B {b}, total {total}), \
             expected 75% +- 3:\n{text}"
        ));
    }
    check_chain(&stacks, CHAIN_A, WORK_A)?;
    check_chain(&stacks, CHAIN_B, WORK_B)
}

/// The sampled split of the fixture's work is its true 3:1 split, for every
/// toolchain, with ptrace pauses and with `--nonblocking` (perf events).
#[test]
fn cpu_split_matches_work_ratio() {
    let mut failures = Vec::new();
    for tc in toolchains() {
        let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
        let (_cpu, target) = start_exclusive(&bin);
        if let Err(e) = cpu_split(&target, &[]) {
            failures.push(format!("=== Go {}: {e}", tc.version));
        }
        if let Err(e) = cpu_split(&target, &["--nonblocking"]) {
            failures.push(format!("=== Go {} --nonblocking: {e}", tc.version));
        }
        if !target.is_running_not_stopped() {
            failures.push(format!("=== Go {}: target left stopped", tc.version));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The same on binaries built the way distributions build them (cgo,
/// external linker, PIE, stripped): no symbols, no DWARF.
#[test]
fn cpu_split_on_stripped_distro_builds() {
    let mut failures = Vec::new();
    for tc in toolchains() {
        let bin = build_fixture(FIXTURE, &tc, BuildMode::CgoPieStripped);
        let (_cpu, target) = start_exclusive(&bin);
        if let Err(e) = cpu_split(&target, &[]) {
            failures.push(format!("=== Go {}: {e}", tc.version));
        }
        if !target.is_running_not_stopped() {
            failures.push(format!("=== Go {}: target left stopped", tc.version));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Checks that `svg` is well-formed XML (quick-xml checks each end tag
/// against its start tag; we check nothing is left open) with an `svg` root.
fn check_xml(svg: &str) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let mut depth = 0usize;
    let mut root = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(ref t) | Event::Empty(ref t) => {
                if depth == 0 {
                    if root.is_some() {
                        return Err("more than one root element".to_string());
                    }
                    root = Some(String::from_utf8_lossy(t.local_name().as_ref()).into_owned());
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth -= 1,
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{depth} element(s) left open at the end"));
    }
    match root.as_deref() {
        Some("svg") => Ok(()),
        other => Err(format!("root element is {other:?}, not svg")),
    }
}

#[test]
fn flamegraph_is_well_formed_svg() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let svg = record(target.pid(), 1, "flamegraph", &[]).unwrap_or_else(|e| panic!("{e}"));
    let head = svg.trim_start();
    assert!(
        head.starts_with("<?xml") || head.starts_with("<svg"),
        "flamegraph does not start with <?xml or <svg:\n{}",
        &svg[..svg.len().min(500)]
    );
    if let Err(e) = check_xml(&svg) {
        panic!("flamegraph is not well-formed XML: {e}\n{svg}");
    }
    for f in [WORK_A, WORK_B] {
        assert!(svg.contains(f), "flamegraph does not mention {f}:\n{svg}");
    }
    assert!(target.is_running_not_stopped(), "target left stopped");
}

#[test]
fn folded_round_trips_through_inferno() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let text = record(target.pid(), 1, "folded", &[]).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = parse_folded(&text) {
        panic!("folded output is malformed: {e}\n{text}");
    }
    let mut svg = Vec::new();
    let mut opts = inferno::flamegraph::Options::default();
    inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg)
        .unwrap_or_else(|e| panic!("inferno rejected the folded output: {e}\n{text}"));
    let svg = String::from_utf8(svg).expect("inferno wrote non-UTF-8");
    assert!(
        svg.contains("<svg") && svg.contains(WORK_A),
        "inferno's SVG is empty or lacks {WORK_A}:\n{svg}"
    );
}

#[test]
fn record_leaves_target_running() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    record(target.pid(), 1, "folded", &[]).unwrap_or_else(|e| panic!("{e}"));
    // Give a stop the sampler might have left behind time to show.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        target.is_running_not_stopped(),
        "target left stopped: {:?}",
        thread_states(target.pid())
    );
}

/// The parsers above, on hand-written input (no gospy needed).
#[test]
fn folded_parser_self_test() {
    let ok = parse_folded("main.main;main.spin;main.chainA;main.workA 30\na;b c;d 1\n").unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].frames.len(), 4);
    assert_eq!(ok[0].count, 30);
    assert_eq!(ok[1].frames, ["a", "b c", "d"]);
    for bad in [
        "a;b", "a;b 0", "a;b x", "a;;b 1", " a 1", "a  b 1", "a;b -1", "",
    ] {
        assert!(parse_folded(bad).is_err(), "accepted {bad:?}");
    }
    assert_eq!(
        collected_samples("x\ncollected 612 ticks, 700 stacks\n"),
        Some(612)
    );
    assert_eq!(collected_samples("nothing"), None);
    assert!(check_xml("<?xml version=\"1.0\"?><svg><g><text>a</text></g><rect/></svg>").is_ok());
    assert!(check_xml("<svg><g></svg>").is_err());
    assert!(check_xml("<svg><g>").is_err());
    assert!(check_xml("<html></html>").is_err());
}

/// Runs `gospy record` without a duration, sends `signal` to `to_kill`
/// after a second, and returns gospy's exit status, stderr and the profile.
fn record_until_signal(
    pid: u32,
    to_kill: Option<u32>,
    signal: i32,
) -> (std::process::ExitStatus, String, String) {
    let out = temp_path("profile.txt");
    let child = std::process::Command::new(gospy_bin())
        .args(["record", "--pid", &pid.to_string(), "-f", "folded", "-o"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn gospy");
    std::thread::sleep(Duration::from_millis(1500));
    let victim = to_kill.unwrap_or(child.id());
    // SAFETY: sending a signal to a process we started.
    unsafe { libc::kill(victim as i32, signal) };
    let output = child.wait_with_output().expect("wait for gospy");
    let profile = std::fs::read_to_string(&out).unwrap_or_default();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
        profile,
    )
}

#[test]
fn ctrl_c_writes_the_profile_and_leaves_target_running() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    check_signal_ends_recording(&target, libc::SIGINT);
}

/// Sends `signal` to a running `gospy record` of `target`: it must exit 0
/// saying it was interrupted, having written a profile of the fixture's
/// work, and leave the target running.
fn check_signal_ends_recording(target: &Target, signal: i32) {
    let (status, stderr, profile) = record_until_signal(target.pid(), None, signal);
    assert!(
        status.success(),
        "gospy after signal {signal}: {status}\n{stderr}"
    );
    assert!(
        stderr.contains("interrupted") && collected_samples(&stderr).unwrap_or(0) > 50,
        "{stderr}"
    );
    let stacks = parse_folded(&profile).unwrap_or_else(|e| panic!("{e}"));
    assert!(stacks.iter().any(|f| has_frame(f, WORK_A)), "{profile}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(target.is_running_not_stopped());
}

/// SIGTERM (`timeout`, systemd) and SIGHUP (a closed ssh session) end the
/// recording as Ctrl-C does: profile written, summary printed, target left
/// running, and no temporary file left beside the profile.
#[test]
fn sigterm_and_sighup_write_the_profile_and_leave_target_running() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        check_signal_ends_recording(&target, signal);
    }
    let dir = temp_path("x");
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Whether a file's bytes are of the expected format.
type FileCheck = dyn Fn(&[u8]) -> bool;

/// Without `-f`, the output file's extension picks the format; `-f` and an
/// extension that disagree are refused before anything is written.
#[test]
fn format_follows_the_output_extension() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let pid = target.pid().to_string();
    let expect: [(&str, &FileCheck); 4] = [
        ("p.pb.gz", &|b| b.starts_with(&[0x1f, 0x8b])),
        ("p.svg", &|b| String::from_utf8_lossy(b).contains("<svg")),
        ("p.speedscope.json", &|b| {
            String::from_utf8_lossy(b).contains("speedscope.app/file-format-schema")
        }),
        ("p.folded", &|b| {
            parse_folded(&String::from_utf8_lossy(b)).is_ok_and(|f| !f.is_empty())
        }),
    ];
    for (name, is_right) in expect {
        let path = temp_path(name);
        let out = run_gospy(&[
            "record",
            "--pid",
            &pid,
            "-d",
            "1",
            "-o",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(is_right(&bytes), "{name} has the wrong format");
    }
    let path = temp_path("contradiction.svg");
    let out = run_gospy(&[
        "record",
        "--pid",
        &pid,
        "-d",
        "1",
        "-f",
        "pprof",
        "-o",
        path.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("contradicts"),
        "{stderr}"
    );
    assert!(
        !path.exists(),
        "nothing is written on a refused command line"
    );
    assert!(target.is_running_not_stopped());
}

/// Negative and zero numbers get gospy's own message (not clap's "use --
/// -1" tip, which would launch a program called -1), and py-spy's short
/// flags work.
#[test]
fn flags_messages_and_short_flags() {
    for (args, wanted) in [
        (
            &["record", "--pid", "1", "-d", "-1"][..],
            "--duration -1: give a number of seconds above 0",
        ),
        (
            &["record", "--pid", "1", "-r", "0"][..],
            "--rate 0: give a number of samples per second above 0",
        ),
        (&["record", "--pid", "1", "-r", "-5"][..], "--rate -5:"),
        (&["top", "--pid", "1", "-r", "0"][..], "--rate 0:"),
    ] {
        let out = run_gospy(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(wanted),
            "{args:?}: {stderr}"
        );
    }
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let path = temp_path("short.txt");
    let pid = target.pid().to_string();
    let out = run_gospy(&[
        "record",
        "--pid",
        &pid,
        "-d",
        "1",
        "-i",
        "-t",
        "-n",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let stacks = parse_folded(&text).unwrap_or_else(|e| panic!("{e}"));
    // -t: thread roots; -i: parked goroutines under their state.
    assert!(
        stacks
            .iter()
            .all(|s| s.frames[0].starts_with("thread ") || s.frames[0].starts_with('[')),
        "{text}"
    );
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.last().is_some_and(|f| f.starts_with('['))),
        "{text}"
    );
}

/// A rate the target cannot bear gets a warning that names the paused
/// fraction (and it is said even when stderr is not a terminal).
#[test]
fn too_high_a_rate_warns_how_long_the_target_is_stopped() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let (_, stderr) = record_with_stderr(target.pid(), 2, "folded", &["--idle", "-r", "10000"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stderr.contains("the target is stopped") && stderr.contains("% of the time"),
        "{stderr}"
    );
    assert!(target.is_running_not_stopped());
}

#[test]
fn target_exit_ends_the_recording_with_a_profile() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let (status, stderr, profile) =
        record_until_signal(target.pid(), Some(target.pid()), libc::SIGKILL);
    assert!(
        status.success(),
        "gospy failed when the target exited: {status}\n{stderr}"
    );
    assert!(
        stderr.contains("exited") && collected_samples(&stderr).unwrap_or(0) > 50,
        "{stderr}"
    );
    let stacks = parse_folded(&profile).unwrap_or_else(|e| panic!("{e}"));
    assert!(stacks.iter().any(|f| has_frame(f, WORK_A)), "{profile}");
}

/// The real `go tool pprof` opens our pprof file, and its own report shows
/// the 3:1 split of the fixture.
#[test]
fn pprof_opens_in_go_tool_pprof() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let path = record_pprof(target.pid(), "cpu.pb.gz", &["-d", "3", "-r", "200"]);
    let pprof = |args: &[&str]| go_tool_pprof(&tc, args, &path);
    let top = pprof(&["-top"]);
    let flat_percent = |function: &str| -> f64 {
        let line = top
            .lines()
            .find(|l| l.split_whitespace().last() == Some(function))
            .unwrap_or_else(|| panic!("{function} not in pprof -top:\n{top}"));
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    let a = flat_percent(WORK_A);
    let b = flat_percent(WORK_B);
    let share = 100.0 * a / (a + b);
    assert!(
        (share - 75.0).abs() <= 3.0,
        "pprof says workA has {share:.1}% of A+B:\n{top}"
    );
    assert!(
        top.contains("Type: samples") || top.contains("Type: cpu"),
        "{top}"
    );
    let traces = pprof(&["-traces"]);
    assert!(
        traces.contains(CHAIN_A) && traces.contains("main.spin"),
        "{traces}"
    );
    // Lines and files are there: -list shows the fixture's source.
    let list = pprof(&["-list", "main.workA"]);
    assert!(list.contains("cpusplit/main.go"), "{list}");
}

/// The speedscope file follows speedscope's file-format schema: a sampled
/// profile whose samples index a shared frame list, with one weight each.
#[test]
fn speedscope_matches_file_format_schema() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let text = record(target.pid(), 1, "speedscope", &[]).unwrap_or_else(|e| panic!("{e}"));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("speedscope file is JSON");
    assert_eq!(
        doc["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    let frames = doc["shared"]["frames"].as_array().expect("shared.frames");
    assert!(frames.iter().all(|f| f["name"].is_string()));
    let profiles = doc["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 1);
    let p = &profiles[0];
    assert_eq!(p["type"], "sampled");
    assert!(p["name"].is_string() && p["unit"] == "nanoseconds" && p["startValue"].is_u64());
    let samples = p["samples"].as_array().unwrap();
    let weights = p["weights"].as_array().unwrap();
    assert_eq!(samples.len(), weights.len());
    let total: u64 = weights.iter().map(|w| w.as_u64().unwrap()).sum();
    assert_eq!(p["endValue"].as_u64(), Some(total));
    assert!(total > 50_000_000, "{total} ns");
    for s in samples {
        for i in s.as_array().unwrap() {
            assert!((i.as_u64().unwrap() as usize) < frames.len());
        }
    }
    assert!(frames.iter().any(|f| f["name"] == WORK_A));
}

/// Whether `needle` (root first) is a subsequence of `frames`.
fn is_subsequence(needle: &[String], frames: &[String]) -> bool {
    let mut rest = frames.iter();
    needle.iter().all(|n| rest.any(|f| f == n))
}

/// `--idle` on the `parked` fixture: every goroutine the runtime's own
/// traceback shows parked is in the profile, with the frames the runtime
/// prints (in order, among gospy's which add runtime internals) and a leaf
/// frame naming its state; the extra parked goroutines are counted once per
/// sample each. For every toolchain.
fn idle_profile(tc: &Toolchain) -> Result<(), String> {
    const EXTRA: usize = 300;
    let bin = build_fixture("parked", tc, BuildMode::Default);
    let _cpu = start_exclusive_lock();
    let mut target = Target::start(&bin, &["-goroutines", &EXTRA.to_string()]);
    let truth = target.ground_truth();
    let (text, stderr) =
        record_with_stderr(target.pid(), 1, "folded", &["--idle", "--rate", "50"])?;
    let stacks = parse_folded(&text)?;
    let samples = collected_samples(&stderr).unwrap_or(0);
    if !stderr.contains("(0 errors") || samples < 10 {
        return Err(format!("{samples} samples with errors:\n{stderr}"));
    }
    let leaf_state = |s: &Folded| -> Option<String> {
        let leaf = s.frames.last()?;
        Some(leaf.strip_prefix('[')?.strip_suffix(']')?.to_string())
    };
    // The extra goroutines never move: each is in every sample.
    for f in ["main.extraParkA", "main.extraParkB", "main.extraParkC"] {
        // Folded values are microseconds: each tick at 50 Hz is 20 ms.
        let expected = truth.iter().filter(|g| g.has_function(f)).count() as u64 * samples * 20_000;
        let got: u64 = stacks
            .iter()
            .filter(|s| has_frame(s, f) && leaf_state(s).as_deref() == Some("chan receive"))
            .map(|s| s.count)
            .sum();
        if got != expected || expected == 0 {
            return Err(format!(
                "{f} under [chan receive]: {got} us of goroutine time, expected {expected}:\n{text}"
            ));
        }
    }
    for g in &truth {
        // Running and runnable goroutines move between the ground truth and
        // the recording.
        if matches!(g.state.as_str(), "running" | "runnable") {
            continue;
        }
        // gospy's state frames have no parentheses (go tool pprof drops
        // parenthesised text): `select (no cases)` is `[select, no cases]`.
        let state = g
            .state
            .trim_end_matches(" (leaked)")
            .replace(" (", ", ")
            .replace(['(', ')'], "");
        let state = state.as_str();
        // The runtime prints runtime.gopanic as `panic`; profiles keep the
        // function's name.
        let wanted: Vec<String> = g
            .frames
            .iter()
            .rev()
            .map(|f| match f.function.as_str() {
                "panic" => "runtime.gopanic".to_string(),
                name => name.to_string(),
            })
            .collect();
        let found = stacks
            .iter()
            .any(|s| leaf_state(s).as_deref() == Some(state) && is_subsequence(&wanted, &s.frames));
        if !found {
            return Err(format!(
                "goroutine {} [{}] with frames {wanted:?} (root first) is not in the idle profile:\n{text}",
                g.goid, g.state
            ));
        }
    }
    Ok(())
}

#[test]
fn idle_profile_shows_parked_goroutines_under_their_state() {
    let failures: Vec<String> = toolchains()
        .iter()
        .filter_map(|tc| {
            idle_profile(tc)
                .err()
                .map(|e| format!("=== Go {}: {e}", tc.version))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs `go tool pprof ARGS FILE` with toolchain `tc`; its stdout.
fn go_tool_pprof(tc: &Toolchain, args: &[&str], file: &std::path::Path) -> String {
    let out = std::process::Command::new(&tc.go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `gospy record --pid PID -f pprof -o FILE args...` and returns FILE;
/// panics with gospy's stderr if it fails.
fn record_pprof(pid: u32, name: &str, args: &[&str]) -> PathBuf {
    let path = temp_path(name);
    let pid = pid.to_string();
    let mut all = vec![
        "record",
        "--pid",
        &pid,
        "-f",
        "pprof",
        "-o",
        path.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = run_gospy(&all);
    assert!(
        out.status.success(),
        "gospy {}: {}",
        all.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The share of value a `go tool pprof -tags` report gives `value` of `key`.
fn tag_percent(tags: &str, key: &str, value: &str) -> Option<f64> {
    let section = tags.split(&format!(" {key}: Total")).nth(1)?;
    section.lines().skip(1).find_map(|line| {
        let (figures, name) = line.rsplit_once("): ")?;
        if name.trim() != value {
            return None;
        }
        figures
            .split('(')
            .nth(1)?
            .trim()
            .trim_end_matches('%')
            .parse()
            .ok()
    })
}

/// Each sample carries the goroutine's own pprof labels and its state:
/// `go tool pprof -tags` splits the fixture's chain=A / chain=B labels 3:1,
/// and `-tagfocus chain=B` keeps only workB.
#[test]
fn pprof_labels_match_the_fixture_and_filter_with_tagfocus() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let path = record_pprof(target.pid(), "labels.pb.gz", &["-d", "3", "-r", "200"]);
    let tags = go_tool_pprof(&tc, &["-tags"], &path);
    let a = tag_percent(&tags, "chain", "A").unwrap_or_else(|| panic!("no chain=A:\n{tags}"));
    let b = tag_percent(&tags, "chain", "B").unwrap_or_else(|| panic!("no chain=B:\n{tags}"));
    // CPU time of the runtime's threads between goroutines has no labels.
    let share_a = 100.0 * a / (a + b);
    assert!(
        (share_a - 75.0).abs() <= 3.0 && a + b > 90.0,
        "chain labels split {a}:{b}, expected 75:25:\n{tags}"
    );
    let running = tag_percent(&tags, "goroutine_state", "running").unwrap_or(0.0);
    assert!(
        (running - (a + b)).abs() < 0.5,
        "every labelled sample is running: {tags}"
    );
    let focused = go_tool_pprof(&tc, &["-top", "-tagfocus", "chain=B"], &path);
    let flat: Vec<&str> = focused
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert!(
        flat.first() == Some(&WORK_B) && !flat.contains(&WORK_A),
        "-tagfocus chain=B:\n{focused}"
    );
}

/// pprof of an `--idle` recording: waiting goroutines carry `wait_reason`
/// and their own labels; Functions have start lines and inlined calls share
/// their caller's Location (go tool pprof -raw prints them indented under
/// it).
#[test]
fn idle_pprof_has_wait_reasons_labels_start_lines_and_inlined_frames() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Default);
    let _cpu = start_exclusive_lock();
    let target = Target::start(&bin, &["-goroutines", "30"]);
    let path = record_pprof(
        target.pid(),
        "idle.pb.gz",
        &["--idle", "-d", "1", "-r", "50"],
    );
    let tags = go_tool_pprof(&tc, &["-tags"], &path);
    for (key, value) in [
        ("wait_reason", "chan receive"),
        ("goroutine_state", "waiting"),
        ("tier", "gold"),
        ("worker", "7"),
    ] {
        assert!(
            tag_percent(&tags, key, value).is_some(),
            "no {key}={value}:\n{tags}"
        );
    }
    let traces = go_tool_pprof(&tc, &["-traces", "-tagfocus", "tier=gold"], &path);
    assert!(traces.contains("main.parkLabeled"), "{traces}");
    let raw = go_tool_pprof(&tc, &["-raw"], &path);
    let source = std::fs::read_to_string(fixtures_dir().join("parked/parkers.go")).unwrap();
    let start_line = source
        .lines()
        .position(|l| l.starts_with("func extraParkA("))
        .unwrap()
        + 1;
    assert!(
        raw.lines()
            .any(|l| l.contains("main.extraParkA ") && l.ends_with(&format!(" s={start_line}"))),
        "no main.extraParkA with s={start_line} in -raw:\n{raw}"
    );
    // A Location line is "N: 0xADDR M=1 func file:line s=L"; inlined callers
    // follow on indented lines without an address.
    let inlined = raw
        .lines()
        .skip_while(|l| !l.starts_with("Locations"))
        .any(|l| l.starts_with("             ") && l.contains("main."));
    assert!(inlined, "no Location with inlined frames in -raw:\n{raw}");
    // State frames survive go tool pprof, which strips parenthesised text.
    let top = go_tool_pprof(&tc, &["-top", "-nodecount", "1000"], &path);
    for state in [
        "[select, no cases]",
        "[chan receive, nil chan]",
        "[chan receive]",
    ] {
        assert!(top.contains(state), "no {state} in -top:\n{top}");
    }
}

/// `--threads` and `--goroutines` put the OS thread and the goroutine at the
/// root of every stack: the fixture's one busy goroutine is goroutine 1 and
/// its thread is one of the target's.
#[test]
fn threads_and_goroutines_root_frames() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let text = record(target.pid(), 1, "folded", &["--threads", "--goroutines"])
        .unwrap_or_else(|e| panic!("{e}"));
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", target.pid()))
        .unwrap()
        .map(|e| format!("thread {}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let stacks = parse_folded(&text).unwrap_or_else(|e| panic!("{e}"));
    for s in stacks
        .iter()
        .filter(|s| has_frame(s, WORK_A) || has_frame(s, WORK_B))
    {
        assert!(
            tids.contains(&s.frames[0]) && s.frames[1] == "goroutine 1",
            "stack {:?} does not start with one of {tids:?} and goroutine 1",
            s.frames
        );
    }
    assert!(stacks.iter().any(|s| has_frame(s, WORK_A)), "{text}");
}

/// `gospy record -- PROGRAM ARGS` profiles the program from its start,
/// writes the profile when it exits and exits with its status.
#[test]
fn launch_mode_profiles_the_program_and_exits_with_its_status() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let _cpu = start_exclusive_lock();
    let path = temp_path("launch.folded");
    let out = run_gospy(&[
        "record",
        "-r",
        "200",
        "-f",
        "folded",
        "-o",
        path.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-for",
        "2s",
        "-exit",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("READY "),
        "the program's stdout is gospy's"
    );
    let samples = collected_samples(&stderr).unwrap_or(0);
    assert!(
        samples >= 200,
        "{samples} samples in 2 s at 200 Hz:\n{stderr}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let stacks = parse_folded(&text).unwrap_or_else(|e| panic!("{e}"));
    check_chain(&stacks, CHAIN_A, WORK_A).unwrap();
    check_chain(&stacks, CHAIN_B, WORK_B).unwrap();
}

/// A program that cannot be started is a clear error.
#[test]
fn launch_mode_reports_a_missing_program() {
    let out = run_gospy(&["record", "-o", "/dev/null", "--", "/nonexistent/prog"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("starting /nonexistent/prog"), "{stderr}");
}

/// The tracer of process `pid` (`TracerPid:` of each thread), 0 if none.
fn tracers(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.ok()?.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// `--nonblocking` never attaches to the target: while it records, no
/// thread of the target is ever traced or stopped, and it still collects
/// the busy goroutine's samples.
#[test]
fn nonblocking_never_stops_or_traces_the_target() {
    let tc = newest_toolchain();
    let bin = build_fixture(FIXTURE, &tc, BuildMode::Default);
    let (_cpu, target) = start_exclusive(&bin);
    let path = temp_path("nb.folded");
    let mut gospy = std::process::Command::new(gospy_bin())
        .args([
            "record",
            "--nonblocking",
            "-d",
            "2",
            "-r",
            "200",
            "-f",
            "folded",
            "-o",
        ])
        .arg(&path)
        .arg("--pid")
        .arg(target.pid().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn gospy");
    let mut checks = 0;
    while gospy.try_wait().unwrap().is_none() {
        let traced: Vec<u32> = tracers(target.pid())
            .into_iter()
            .filter(|&t| t != 0)
            .collect();
        assert!(
            traced.is_empty(),
            "target traced by {traced:?} during --nonblocking"
        );
        let stopped: Vec<(u32, char)> = thread_states(target.pid())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, s)| matches!(s, 't' | 'T'))
            .collect();
        assert!(stopped.is_empty(), "threads stopped: {stopped:?}");
        checks += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = gospy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && checks > 100,
        "{checks} checks; {stderr}"
    );
    assert!(stderr.contains("target threads stopped 0.0 ms"), "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    let stacks = parse_folded(&text).unwrap_or_else(|e| panic!("{e}"));
    check_chain(&stacks, CHAIN_A, WORK_A).unwrap();
    assert!(stacks.iter().any(|s| has_frame(s, WORK_B)), "{text}");
}

/// Whether `c_frames` (outermost first) are the `cgosplit` C chain of
/// chain `x` or its beginning (the thread may be in the wrapper or in
/// c_work_x itself, before or after their calls): `_cgo_*_Cfunc_c_work_x`,
/// `c_work_x`, `c_spin`, then anything (libc, the vDSO).
fn is_c_chain(c_frames: &[String], x: &str) -> bool {
    let wrapper_ok = c_frames
        .first()
        .is_some_and(|w| w.starts_with("_cgo_") && w.ends_with(&format!("_Cfunc_c_work_{x}")));
    let calls = [format!("c_work_{x}"), "c_spin".to_string()];
    let n = c_frames.len().saturating_sub(1).min(calls.len());
    wrapper_ok && c_frames[1..1 + n] == calls[..n]
}

/// The cgo twin of [`cpu_split`], on the `cgosplit` fixture, whose one
/// goroutine burns CPU in C, 3/4 under `main.chainA -> c_work_a` and 1/4
/// under `main.chainB -> c_work_b`. Time in C is on-CPU time: every sample
/// shows the Go stack up to `runtime.cgocall` (no state frame), and with
/// `--native` the C frames above it, innermost last in folded order.
fn cgo_split(target: &Target, native: bool) -> Result<(), String> {
    let mut args = vec!["--rate", "200"];
    if native {
        args.push("--native");
    }
    let text = record(target.pid(), 3, "folded", &args)?;
    let stacks = parse_folded(&text)?;
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    if total < 2_000_000 {
        return Err(format!(
            "only {total} us of CPU in 3 s of busy C code:\n{text}"
        ));
    }
    let mut a = 0;
    let mut b = 0;
    let mut with_c_frames = 0;
    for s in &stacks {
        let Some(i) = s.frames.iter().position(|f| f == CHAIN_A || f == CHAIN_B) else {
            continue;
        };
        let x = if s.frames[i] == CHAIN_A { "a" } else { "b" };
        let go_tail = [format!("main._Cfunc_c_work_{x}"), "runtime.cgocall".into()];
        if s.frames[i + 1..].get(..2) != Some(&go_tail[..]) {
            return Err(format!(
                "stack {:?} does not end in {go_tail:?} after {}",
                s.frames, s.frames[i]
            ));
        }
        let c_frames = &s.frames[i + 3..];
        // The runtime's own work around the call (exitsyscall) is Go code.
        let runtime_work = c_frames.first().is_some_and(|f| f.starts_with("runtime."));
        if !native && !c_frames.is_empty() && !runtime_work {
            return Err(format!(
                "frames above runtime.cgocall without --native: {:?}",
                s.frames
            ));
        }
        // The thread may be between runtime.cgocall and C (asmcgocall, the
        // cgo wrapper's prologue): then there is no C frame yet.
        if native && !c_frames.is_empty() && !runtime_work {
            if !is_c_chain(c_frames, x) {
                return Err(format!(
                    "C frames {c_frames:?} are not _cgo_*_Cfunc_c_work_{x}, c_work_{x}, c_spin"
                ));
            }
            with_c_frames += s.count;
        }
        if x == "a" {
            a += s.count;
        } else {
            b += s.count;
        }
    }
    if a + b < total * 9 / 10 {
        return Err(format!(
            "only {} of {total} samples under {CHAIN_A} or {CHAIN_B}:\n{text}",
            a + b
        ));
    }
    if native && with_c_frames < (a + b) * 9 / 10 {
        return Err(format!(
            "only {with_c_frames} of {} samples show C frames:\n{text}",
            a + b
        ));
    }
    let share = 100.0 * a as f64 / (a + b) as f64;
    if (share - 75.0).abs() > 3.0 {
        return Err(format!(
            "{CHAIN_A} has {share:.1}% of the samples (A {a}, B {b}), expected 75% +- 3:\n{text}"
        ));
    }
    Ok(())
}

/// CPU time spent in C (cgo calls) is on-CPU time: its split matches the
/// fixture's 3:1, with the Go frames up to the cgo call, and with
/// `--native` the C frames on top, for every toolchain. `--nonblocking`
/// cannot see the Go frames of a thread in C without stopping it: those
/// samples have a `[cgo call]` root, and with `--native` their C frames.
#[test]
fn cgo_cpu_split_with_and_without_native_frames() {
    let mut failures = Vec::new();
    for tc in toolchains() {
        let bin = build_fixture("cgosplit", &tc, BuildMode::Cgo);
        let (_cpu, target) = start_exclusive(&bin);
        for native in [false, true] {
            if let Err(e) = cgo_split(&target, native) {
                failures.push(format!("=== Go {} (native: {native}): {e}", tc.version));
            }
        }
        if let Err(e) = cgo_split_nonblocking(&target) {
            failures.push(format!("=== Go {} --nonblocking --native: {e}", tc.version));
        }
        if !target.is_running_not_stopped() {
            failures.push(format!("=== Go {}: target left stopped", tc.version));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `go tool pprof` reads the C frames of `--native`: Locations without a
/// mapping, named after their symbols, on top of the Go frames.
#[test]
fn pprof_of_native_frames_opens_in_go_tool_pprof() {
    let tc = newest_toolchain();
    let bin = build_fixture("cgosplit", &tc, BuildMode::Cgo);
    let (_cpu, target) = start_exclusive(&bin);
    let path = record_pprof(target.pid(), "native.pb.gz", &["-d", "1", "--native"]);
    let top = go_tool_pprof(&tc, &["-top"], &path);
    let leaf = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .and_then(|l| l.split_whitespace().last());
    assert_eq!(
        leaf,
        Some("c_spin"),
        "c_spin is not the hottest function:\n{top}"
    );
    let traces = go_tool_pprof(&tc, &["-traces"], &path);
    let trace = traces
        .split("-----------+")
        .find(|t| t.contains("c_work_a"))
        .unwrap_or_else(|| panic!("no trace through c_work_a:\n{traces}"));
    let names: Vec<&str> = trace
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} in trace:\n{trace}"))
    };
    assert!(
        at("c_spin") < at("c_work_a")
            && at("c_work_a") < at("runtime.cgocall")
            && at("runtime.cgocall") < at(CHAIN_A),
        "trace is not c_spin <- c_work_a <- ... runtime.cgocall <- main.chainA:\n{trace}"
    );
}

/// `cgosplit` with `--nonblocking --native`: (nearly) every sample has the
/// C frames (a prefix of the wrapper, c_work_x, c_spin), under `[cgo call]`
/// or under the goroutine's Go frames (main.chainX), split 3:1 between
/// c_work_a and c_work_b.
fn cgo_split_nonblocking(target: &Target) -> Result<(), String> {
    let args = ["--rate", "200", "--nonblocking", "--native"];
    let text = record(target.pid(), 3, "folded", &args)?;
    let stacks = parse_folded(&text)?;
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    let (mut a, mut b) = (0, 0);
    for s in &stacks {
        // `[cgo call]` then the C frames; or, when the goroutine was still in
        // that cgo call as the batch was read, its Go frames then the C ones.
        let Some(start) = s.frames.iter().position(|f| f.starts_with("_cgo_")) else {
            continue;
        };
        let c_frames = &s.frames[start..];
        let x = match c_frames.get(1).map(String::as_str) {
            Some("c_work_a") => "a",
            Some("c_work_b") => "b",
            _ => continue, // in the wrapper itself, or in libc/vDSO only
        };
        let chain = if x == "a" { CHAIN_A } else { CHAIN_B };
        if s.frames[0] != "[cgo call]" && !s.frames[..start].iter().any(|f| f == chain) {
            return Err(format!(
                "C frames of c_work_{x} under Go frames without {chain}: {:?}\n{text}",
                s.frames
            ));
        }
        if !is_c_chain(c_frames, x) {
            return Err(format!(
                "C frames {c_frames:?} are not _cgo_*_Cfunc_c_work_{x}, c_work_{x}, c_spin:\n{text}"
            ));
        }
        if x == "a" {
            a += s.count;
        } else {
            b += s.count;
        }
    }
    if total < 1_500_000 || a + b < total * 9 / 10 {
        return Err(format!(
            "only {} of {total} samples have c_work_a/b frames:\n{text}",
            a + b
        ));
    }
    let share = 100.0 * a as f64 / (a + b) as f64;
    if (share - 75.0).abs() > 3.0 {
        return Err(format!(
            "c_work_a has {share:.1}% of the samples (A {a}, B {b}), expected 75% +- 3:\n{text}"
        ));
    }
    Ok(())
}

/// `--idle --native`: a goroutine parked inside C (the `cgodeep` fixture's,
/// asleep in libc under c_outer -> c_middle -> c_inner) shows its C frames
/// above its Go frames, under its state.
#[test]
fn idle_native_shows_the_c_frames_of_a_goroutine_parked_in_c() {
    let tc = newest_toolchain();
    let bin = build_fixture("cgodeep", &tc, BuildMode::Cgo);
    let _cpu = start_exclusive_lock();
    let target = Target::start(&bin, &[]);
    let text = record(
        target.pid(),
        1,
        "folded",
        &["--idle", "--native", "-r", "20"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stacks = parse_folded(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let parked = stacks
        .iter()
        .find(|s| has_frame(s, "main.parkInC"))
        .unwrap_or_else(|| panic!("no main.parkInC stack:\n{text}"));
    let at = |name: &str| {
        parked
            .frames
            .iter()
            .position(|f| f == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", parked.frames))
    };
    assert!(
        at("main.parkInC") < at("runtime.cgocall")
            && at("runtime.cgocall") < at("c_outer")
            && at("c_outer") < at("c_middle")
            && at("c_middle") < at("c_inner"),
        "{:?}",
        parked.frames
    );
    assert_eq!(parked.frames.last().map(String::as_str), Some("[syscall]"));
    assert!(target.is_running_not_stopped(), "target left stopped");
}
