//! Running the gospy binary and comparing its output with the runtime's own
//! traceback (the ground truth from [`super::Target::ground_truth`]).

use super::traceback::{RuntimeFrame, RuntimeGoroutine};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Output};

/// The gospy binary cargo built for these tests.
pub fn gospy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gospy")
}

/// Run `gospy args...` and return its output (whatever the exit status).
pub fn run_gospy(args: &[&str]) -> Output {
    Command::new(gospy_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", gospy_bin()))
}

/// `gospy dump --pid PID --json`, parsed. Panics with gospy's stderr if it
/// fails or prints something that is not JSON.
pub fn gospy_dump_json(pid: u32) -> Value {
    gospy_dump_json_with(pid, &[])
}

/// [`gospy_dump_json`] with extra arguments (e.g. `--bin PATH`).
pub fn gospy_dump_json_with(pid: u32, extra: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut args = vec!["dump", "--pid", &pid, "--json"];
    args.extend_from_slice(extra);
    let out = run_gospy(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gospy dump --pid {pid} --json failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
        out.status
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("gospy dump --json printed invalid JSON ({e}):\n{stdout}\nstderr:\n{stderr}")
    })
}

/// gospy's goroutines (the `goroutines` array).
pub fn gospy_goroutines(gospy: &Value) -> &[Value] {
    gospy["goroutines"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("gospy JSON has no goroutines array: {gospy}"))
}

/// The goroutine with this goid in gospy's JSON.
pub fn gospy_goroutine(gospy: &Value, goid: u64) -> Option<&Value> {
    gospy_goroutines(gospy)
        .iter()
        .find(|g| g["goid"].as_u64() == Some(goid))
}

/// gospy's frames of one goroutine without those marked `hidden: true`, in
/// the runtime's form (what the runtime's default traceback prints).
pub fn gospy_visible_frames(g: &Value) -> Vec<RuntimeFrame> {
    g["frames"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|f| !f["hidden"].as_bool().unwrap_or(false))
        .map(|f| RuntimeFrame {
            // The runtime prints runtime.gopanic as "panic"
            // (runtime/traceback.go printFuncName).
            function: match f["function"].as_str().unwrap_or("<no function>") {
                "runtime.gopanic" => "panic".to_string(),
                other => other.to_string(),
            },
            file: f["file"].as_str().unwrap_or("<no file>").to_string(),
            line: f["line"].as_u64().unwrap_or(0) as u32,
            inlined: f["inlined"].as_bool().unwrap_or(false),
        })
        .collect()
}

fn same(a: &RuntimeFrame, b: &RuntimeFrame) -> bool {
    a.function == b.function && a.file == b.file && a.line == b.line
}

fn frames_equal(runtime: &RuntimeGoroutine, theirs: &[RuntimeFrame]) -> bool {
    let ours = &runtime.frames;
    match runtime.elided_at {
        // The runtime printed the first k and the last n-k frames.
        Some(k) if runtime.elided => {
            let tail = ours.len() - k;
            theirs.len() > ours.len()
                && ours[..k].iter().zip(&theirs[..k]).all(|(a, b)| same(a, b))
                && ours[k..]
                    .iter()
                    .zip(&theirs[theirs.len() - tail..])
                    .all(|(a, b)| same(a, b))
        }
        _ => ours.len() == theirs.len() && ours.iter().zip(theirs).all(|(a, b)| same(a, b)),
    }
}

fn created_by_problem(runtime: &RuntimeGoroutine, g: &Value) -> Option<String> {
    let cb = runtime.created_by.as_ref()?;
    let theirs = &g["created_by"];
    if theirs.is_null() {
        return Some(format!("created_by: runtime `{cb}`, gospy null"));
    }
    let t_fn = theirs["function"].as_str().unwrap_or("");
    let t_file = theirs["file"].as_str().unwrap_or("");
    let t_line = theirs["line"].as_u64().unwrap_or(0);
    let t_parent = theirs["parent_goid"].as_u64();
    let parent_ok = cb.parent_goid.is_none() || cb.parent_goid == t_parent;
    if t_fn == cb.function && t_file == cb.file && t_line == u64::from(cb.line) && parent_ok {
        return None;
    }
    Some(format!(
        "created_by differs:\n    runtime: {cb}\n    gospy:   created by {t_fn} in goroutine {} {t_file}:{t_line}",
        t_parent.map_or("?".to_string(), |p| p.to_string())
    ))
}

fn short(f: &RuntimeFrame) -> String {
    let base = f.file.rsplit('/').next().unwrap_or(&f.file);
    format!("{} {}:{}", f.function, base, f.line)
}

/// Side-by-side listing of the two frame lists, rows that differ marked `!!`.
fn side_by_side(runtime: &RuntimeGoroutine, theirs: &[RuntimeFrame]) -> String {
    let ours = &runtime.frames;
    let rows = ours.len().max(theirs.len());
    let left: Vec<String> = (0..rows)
        .map(|i| ours.get(i).map(short).unwrap_or_default())
        .collect();
    let width = left.iter().map(String::len).max().unwrap_or(0).clamp(7, 70);
    let mut s = format!(
        "     # {:width$}  gospy (hidden frames dropped)\n",
        "runtime"
    );
    for (i, l) in left.iter().enumerate() {
        let a = ours.get(i);
        let b = theirs.get(i);
        let differs = match (a, b) {
            (Some(a), Some(b)) => !same(a, b),
            _ => true,
        };
        let r = b.map(short).unwrap_or_default();
        let mark = if differs { "!!" } else { "  " };
        s.push_str(&format!("  {mark}{i:3} {l:width$}  {r}\n"));
        if let (Some(a), Some(b)) = (a, b) {
            if a.file != b.file && short(a) == short(b) {
                s.push_str(&format!(
                    "         runtime file {}\n         gospy file   {}\n",
                    a.file, b.file
                ));
            }
        }
        if i == runtime.elided_at.unwrap_or(usize::MAX) {
            s.push_str("        (the runtime elided frames here)\n");
        }
    }
    s
}

fn describe_gospy(g: &Value) -> String {
    format!(
        "gospy: status={} wait_reason={} truncated={} error={}",
        g["status"], g["wait_reason"], g["truncated"], g["error"]
    )
}

fn finish(problems: Vec<String>, compared: usize, total: usize) -> Result<usize, String> {
    if problems.is_empty() {
        return Ok(compared);
    }
    const SHOW: usize = 6;
    let mut msg = format!(
        "{} problem(s) ({compared} of {total} runtime goroutines matched):\n\n",
        problems.len()
    );
    for p in problems.iter().take(SHOW) {
        msg.push_str(p);
        msg.push('\n');
    }
    if problems.len() > SHOW {
        msg.push_str(&format!("... and {} more\n", problems.len() - SHOW));
    }
    Err(msg)
}

/// Compare gospy's goroutines with the runtime's own traceback.
///
/// For every runtime goroutine whose stack is available and which is not
/// running/runnable (those move), gospy's goroutine with the same goid must
/// have exactly the same (function, file, line) list once frames marked
/// `hidden: true` are dropped (if the runtime elided frames, its first and
/// last parts must match gospy's first and last frames), and the same
/// created_by function/file/line (and parent goid when the runtime printed
/// one). Every goroutine the runtime printed must exist in gospy, and every
/// gospy goroutine that is not `system` (nor dead/idle) must exist in the
/// runtime's dump. The goroutine that ran runtime.Stack is not compared.
///
/// Returns how many goroutines were compared, or a readable report of the
/// first mismatches.
pub fn compare_parked(runtime: &[RuntimeGoroutine], gospy: &Value) -> Result<usize, String> {
    let Some(list) = gospy["goroutines"].as_array() else {
        return Err(format!("gospy JSON has no goroutines array: {gospy}"));
    };
    let by_goid: HashMap<u64, &Value> = list
        .iter()
        .filter_map(|g| g["goid"].as_u64().map(|id| (id, g)))
        .collect();
    let runtime_goids: HashSet<u64> = runtime.iter().map(|g| g.goid).collect();
    let mut problems = Vec::new();
    let mut compared = 0;
    for rg in runtime {
        if rg.is_dumper() {
            continue;
        }
        let Some(g) = by_goid.get(&rg.goid) else {
            problems.push(format!(
                "goroutine {} [{}] (top: {}) is in the runtime's dump but not in gospy's",
                rg.goid,
                rg.state,
                rg.frames.first().map(short).unwrap_or_default()
            ));
            continue;
        };
        if rg.unavailable || rg.is_moving() {
            continue;
        }
        let theirs = gospy_visible_frames(g);
        let frames_ok = frames_equal(rg, &theirs);
        let cb_problem = created_by_problem(rg, g);
        if frames_ok && cb_problem.is_none() {
            compared += 1;
            continue;
        }
        let mut p = format!("{}\n  {}\n", rg.raw_header, describe_gospy(g));
        if !frames_ok {
            p.push_str(&side_by_side(rg, &theirs));
        }
        if let Some(c) = cb_problem {
            p.push_str("  ");
            p.push_str(&c);
            p.push('\n');
        }
        problems.push(p);
    }
    for g in list {
        let goid = g["goid"].as_u64().unwrap_or(u64::MAX);
        let status = g["status"].as_str().unwrap_or("");
        if g["system"].as_bool() == Some(false)
            && !matches!(status, "dead" | "idle")
            && !runtime_goids.contains(&goid)
        {
            let top = gospy_visible_frames(g)
                .first()
                .map(short)
                .unwrap_or_default();
            problems.push(format!(
                "gospy reports non-system goroutine {goid} ({status}, top: {top}) that the runtime did not print"
            ));
        }
    }
    finish(problems, compared, runtime.len())
}

/// For every runtime goroutine whose header printed pprof labels (Go 1.26+
/// with GODEBUG=tracebacklabels=1, which [`super::Target`] sets), gospy's
/// `labels` must be equal. Returns how many were compared.
pub fn compare_labels(runtime: &[RuntimeGoroutine], gospy: &Value) -> Result<usize, String> {
    let mut problems = Vec::new();
    let mut compared = 0;
    for rg in runtime {
        let Some(want) = &rg.labels else { continue };
        let Some(g) = gospy_goroutine(gospy, rg.goid) else {
            problems.push(format!("goroutine {} missing from gospy", rg.goid));
            continue;
        };
        let got: BTreeMap<String, String> = g["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if &got == want {
            compared += 1;
        } else {
            problems.push(format!(
                "{}\n  labels: runtime {want:?}, gospy {}",
                rg.raw_header, g["labels"]
            ));
        }
    }
    finish(problems, compared, runtime.len())
}

/// For every parked runtime goroutine (not running/runnable, not the
/// dumper): a `syscall` header must be gospy status `syscall`; any other
/// state is a wait reason, so gospy must say status `waiting` (or `leaked`
/// for ` (leaked)` states) with that `wait_reason`; `locked to thread` must
/// match `locked_to_thread`. Returns how many were compared.
pub fn compare_states(runtime: &[RuntimeGoroutine], gospy: &Value) -> Result<usize, String> {
    let mut problems = Vec::new();
    let mut compared = 0;
    for rg in runtime {
        if rg.is_dumper() || rg.is_moving() || rg.unavailable {
            continue;
        }
        let Some(g) = gospy_goroutine(gospy, rg.goid) else {
            problems.push(format!("goroutine {} missing from gospy", rg.goid));
            continue;
        };
        let status = g["status"].as_str().unwrap_or("");
        let reason = g["wait_reason"].as_str().unwrap_or("");
        let state_ok = if rg.state == "syscall" {
            status == "syscall"
        } else if let Some(r) = rg.state.strip_suffix(" (leaked)") {
            status == "leaked" && reason == r
        } else {
            status == "waiting" && reason == rg.state
        };
        let locked_ok = g["locked_to_thread"].as_bool() == Some(rg.locked_to_thread());
        if state_ok && locked_ok {
            compared += 1;
        } else {
            problems.push(format!(
                "{}\n  gospy: status={} wait_reason={} locked_to_thread={}",
                rg.raw_header, g["status"], g["wait_reason"], g["locked_to_thread"]
            ));
        }
    }
    finish(problems, compared, runtime.len())
}
