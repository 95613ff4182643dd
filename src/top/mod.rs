//! `gospy top`: a live view of a running Go program, refreshed every
//! interval: where its goroutines spend CPU time (per function, %own and
//! %total of on-CPU samples, like py-spy's `top`) and what its goroutines
//! are doing (grouped by current function, start function or creation
//! site, with their mix of states).
//!
//! This module holds the model (counting, grouping, sorting, filtering) and
//! the plain-text rendering used when stdout is not a terminal; [`tui`]
//! draws the same model full-screen. The loop that drives both is
//! [`run`]: it samples with [`crate::sampler::Stepper`] between redraws, so
//! there is one sampler, the one `gospy record` uses.

pub mod tui;

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::goroutines::{self, GoroutineReport, ReportOptions};
use crate::process::memory::Memory;
use crate::runtime::GStatus;
use crate::sampler::{Profile, SamplerOptions, Stepper};
use crate::snapshot::{Snapshot, SnapshotOptions};
use crate::target::Target;
use crate::{Error, Result};

/// What the table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// On-CPU samples per function.
    #[default]
    Functions,
    /// Goroutines grouped by the given key.
    Goroutines(Grouping),
}

impl View {
    /// The table's title.
    pub fn title(self) -> &'static str {
        match self {
            View::Functions => "Functions by on-CPU samples",
            View::Goroutines(g) => g.title(),
        }
    }

    /// Names of the sortable columns, in the order of the sort keys `1`, `2`...
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            View::Functions => &["%Own", "%Total", "Function"],
            View::Goroutines(_) => &["Count", "Running", "Group"],
        }
    }
}

/// How goroutines are grouped in the goroutine view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// The innermost frame the runtime's traceback would show.
    Current,
    /// The outermost shown frame: the function the goroutine started in.
    Start,
    /// The `go` statement that created it (`created by` in tracebacks).
    Creator,
}

impl Grouping {
    /// The table's title.
    pub fn title(self) -> &'static str {
        match self {
            Grouping::Current => "Goroutines by current function",
            Grouping::Start => "Goroutines by start function",
            Grouping::Creator => "Goroutines by creation site",
        }
    }

    /// The `--group` value naming it.
    pub fn parse(name: &str) -> Option<Grouping> {
        match name {
            "current" => Some(Grouping::Current),
            "start" => Some(Grouping::Start),
            "creator" => Some(Grouping::Creator),
            _ => None,
        }
    }
}

/// Samples attributed to one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRow {
    /// As the runtime prints it.
    pub function: Arc<str>,
    /// CPU time (ns) of samples with this function as the leaf.
    pub own: u64,
    /// CPU time (ns) of samples with this function anywhere on the stack
    /// (once per sample).
    pub total: u64,
}

/// Per-function counts over some samples.
#[derive(Debug, Clone, Default)]
pub struct FunctionTable {
    /// Wall time the counts were taken over: 100% is one goroutine on a
    /// CPU for all of it.
    pub seconds: f64,
    /// Unordered.
    pub rows: Vec<FunctionRow>,
}

impl FunctionTable {
    /// The CPU time, in seconds, of `nanos` (a row's `own` or `total`).
    pub fn seconds(&self, nanos: u64) -> f64 {
        nanos as f64 / 1e9
    }

    /// `nanos` of CPU time as a percentage of the wall time the table
    /// covers: 100% is one CPU busy the whole time.
    pub fn percent(&self, nanos: u64) -> f64 {
        if self.seconds <= 0.0 {
            0.0
        } else {
            nanos as f64 / 1e9 * 100.0 / self.seconds
        }
    }
}

/// The functions of one stack, worked out once per distinct stack.
#[derive(Debug, Clone)]
struct StackFunctions {
    leaf: Option<Arc<str>>,
    /// Each function on the stack once.
    all: Vec<Arc<str>>,
}

/// Turns the sampler's ever-growing stack counts into per-function counts
/// for the last interval and since the start.
#[derive(Debug, Default)]
pub struct FunctionCounter {
    /// CPU time (ns) of each stack (by index in [`Profile::stacks`]) at the
    /// last [`FunctionCounter::update`].
    seen: Vec<u64>,
    functions: Vec<StackFunctions>,
    cumulative: HashMap<Arc<str>, (u64, u64)>,
    cumulative_seconds: f64,
}

impl FunctionCounter {
    /// Counts what `profile` gained since the last call, `seconds` ago;
    /// returns the counts of that interval.
    pub fn update(&mut self, profile: &Profile, seconds: f64) -> FunctionTable {
        let mut interval: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
        for (i, (stack, weight)) in profile.stacks.iter().enumerate() {
            if i == self.seen.len() {
                self.seen.push(0);
                self.functions.push(stack_functions(profile, stack));
            }
            let delta = weight.nanos.saturating_sub(self.seen[i]);
            self.seen[i] = weight.nanos;
            if delta == 0 {
                continue;
            }
            let f = &self.functions[i];
            if let Some(leaf) = &f.leaf {
                interval.entry(leaf.clone()).or_default().0 += delta;
            }
            for name in &f.all {
                interval.entry(name.clone()).or_default().1 += delta;
            }
        }
        self.cumulative_seconds += seconds;
        for (name, (own, total)) in &interval {
            let c = self.cumulative.entry(name.clone()).or_default();
            c.0 += own;
            c.1 += total;
        }
        table(seconds, &interval)
    }

    /// The counts since the start.
    pub fn cumulative(&self) -> FunctionTable {
        table(self.cumulative_seconds, &self.cumulative)
    }
}

fn table(seconds: f64, counts: &HashMap<Arc<str>, (u64, u64)>) -> FunctionTable {
    FunctionTable {
        seconds,
        rows: counts
            .iter()
            .map(|(function, &(own, total))| FunctionRow {
                function: function.clone(),
                own,
                total,
            })
            .collect(),
    }
}

fn stack_functions(profile: &Profile, stack: &crate::sampler::Stack) -> StackFunctions {
    // Innermost first: the first source line of the first location is the
    // leaf (an inlined callee, if any, before its caller).
    let mut all: Vec<Arc<str>> = Vec::new();
    for &i in &stack.locations {
        if let Some(loc) = profile.locations.get(i as usize) {
            for line in &loc.lines {
                if !all.contains(&line.function) {
                    all.push(line.function.clone());
                }
            }
        }
    }
    StackFunctions {
        leaf: all.first().cloned(),
        all,
    }
}

/// Goroutines sharing one grouping key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// The function (or `function file:line` of a creation site).
    pub key: String,
    /// Goroutines in the group.
    pub count: usize,
    /// How many of them are running on a CPU.
    pub running: usize,
    /// E.g. `12 waiting (chan receive 10, select 2), 1 running`.
    pub states: String,
}

/// Groups the program's own goroutines (not the runtime's) by `grouping`.
pub fn group_goroutines(reports: &[GoroutineReport], grouping: Grouping) -> Vec<GroupRow> {
    let mut groups: HashMap<String, Vec<&GoroutineReport>> = HashMap::new();
    for g in reports.iter().filter(|g| !g.system) {
        groups.entry(group_key(g, grouping)).or_default().push(g);
    }
    groups
        .into_iter()
        .map(|(key, gs)| GroupRow {
            key,
            count: gs.len(),
            running: gs.iter().filter(|g| g.status == GStatus::Running).count(),
            states: state_mix(gs.iter().map(|g| (g.status.name(), g.wait_reason))),
        })
        .collect()
}

fn group_key(g: &GoroutineReport, grouping: Grouping) -> String {
    let mut shown = g.frames.iter().filter(|f| !f.hidden);
    let function = |f: Option<&crate::stack::Frame>| {
        f.or_else(|| g.frames.first())
            .map(|f| f.function.to_string())
            .unwrap_or_else(|| match g.status {
                // --nonblocking reads no running goroutine's stack.
                GStatus::Running => "(running: stack not read)".into(),
                _ => "(no frames)".into(),
            })
    };
    match grouping {
        Grouping::Current => function(shown.next()),
        Grouping::Start => function(shown.next_back()),
        Grouping::Creator => match &g.created_by {
            Some(c) => format!("{} {}:{}", c.function, short_file(&c.file), c.line),
            None => "(not created by a go statement)".into(),
        },
    }
}

/// The last two components of a path: enough to tell files apart.
fn short_file(file: &str) -> &str {
    let mut cut = file.len();
    for _ in 0..2 {
        match file[..cut].rfind('/') {
            Some(i) => cut = i,
            None => return file,
        }
    }
    &file[cut + 1..]
}

/// Goroutines in one state: the state, how many, and how many per wait
/// reason.
type StateCount = (&'static str, usize, Vec<(&'static str, usize)>);

/// `12 waiting (chan receive 10, select 2), 1 running` from each goroutine's
/// (status, wait reason): states by count, wait reasons by count within
/// them.
pub fn state_mix(goroutines: impl Iterator<Item = (&'static str, Option<&'static str>)>) -> String {
    let mut states: Vec<StateCount> = Vec::new();
    for (name, wait_reason) in goroutines {
        let i = match states.iter().position(|s| s.0 == name) {
            Some(i) => i,
            None => {
                states.push((name, 0, Vec::new()));
                states.len() - 1
            }
        };
        let state = &mut states[i];
        state.1 += 1;
        if let Some(reason) = wait_reason {
            match state.2.iter_mut().find(|r| r.0 == reason) {
                Some(r) => r.1 += 1,
                None => state.2.push((reason, 1)),
            }
        }
    }
    states.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    states
        .iter_mut()
        .map(|(name, n, reasons)| {
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let detail = match reasons.as_slice() {
                [] => String::new(),
                // One reason for all: no count needed.
                [(r, c)] if c == n => format!(" ({r})"),
                rs => format!(
                    " ({})",
                    rs.iter()
                        .map(|(r, c)| format!("{r} {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            format!("{n} {name}{detail}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Garbage collector figures read from `runtime.memstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcFigures {
    /// Completed GC cycles.
    pub cycles: u32,
    /// Sum of stop-the-world pauses.
    pub pause_total: Duration,
    /// The last cycle's pause.
    pub last_pause: Option<Duration>,
}

/// Reads [`GcFigures`] from the live process: two small reads, no pause.
/// `None` if the binary's layout lacks them.
pub fn read_gc(target: &Target) -> Option<GcFigures> {
    let layout = &target.binary.layout;
    let base = layout.globals.memstats? + target.bias;
    let mem: &dyn Memory = &target.memory;
    let cycles = mem.read_u32(base + layout.memstats.numgc?)?;
    let pause = mem.read_u64(base + layout.memstats.pause_total_ns?)?;
    // `pause_ns` is a ring of the last 256 pauses; the runtime writes the
    // latest at (numgc+255)%256.
    let last_pause = match layout.memstats.pause_ns {
        Some(ring) if cycles > 0 => mem
            .read_u64(base + ring + ((u64::from(cycles) + 255) % 256) * 8)
            .map(Duration::from_nanos),
        _ => None,
    };
    Some(GcFigures {
        cycles,
        pause_total: Duration::from_nanos(pause),
        last_pause,
    })
}

/// Everything one refresh shows.
#[derive(Debug, Clone, Default)]
pub struct Refresh {
    /// The interval's per-function counts.
    pub functions: FunctionTable,
    /// Since the start.
    pub cumulative: FunctionTable,
    /// From one snapshot at the end of the interval.
    pub goroutines: Vec<GoroutineReport>,
    /// Samples per second achieved over the interval.
    pub rate: f64,
    /// Mean pause of the target per sample over the interval.
    pub pause_per_sample: Duration,
    /// Pause of the goroutine snapshot.
    pub snapshot_pause: Duration,
    /// Failed samples since the start.
    pub errors: u64,
    /// Why the last failed sample failed.
    pub last_error: Option<String>,
    /// Read at the end of the interval, if the layout has them.
    pub gc: Option<GcFigures>,
    /// GC cycles completed during the interval.
    pub gc_cycles_delta: Option<u32>,
    /// Refreshes so far, this one included.
    pub iteration: u64,
    /// Since `gospy top` started.
    pub elapsed: Duration,
}

/// Facts about the target that do not change.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    /// The target's PID.
    pub pid: i32,
    /// Its executable, as `/proc/PID/exe` names it.
    pub binary: String,
    /// From the binary (or `--go-version`).
    pub go_version: String,
    /// Requested samples per second.
    pub rate: f64,
    /// The target is never stopped (`--nonblocking`).
    pub nonblocking: bool,
}

/// What the user chose with the keys: view, sort order, filter, pause.
#[derive(Debug, Clone, Default)]
pub struct ViewState {
    /// The table shown.
    pub view: View,
    /// Index into the view's [`View::sort_columns`].
    pub sort: usize,
    /// Ascending instead of the default (numbers descending, names
    /// ascending).
    pub reverse: bool,
    /// Case-insensitive substring rows must contain.
    pub filter: String,
    /// While typing a filter after `/`.
    pub editing: Option<String>,
    /// Sampling and refreshing stopped (space).
    pub paused: bool,
    /// Show counts since the start instead of the last interval.
    pub cumulative: bool,
}

impl ViewState {
    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }
}

/// A table ready to print: column names and rows of cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableText {
    /// What the table shows.
    pub title: String,
    /// Column headings.
    pub columns: Vec<&'static str>,
    /// One cell per column in each row, in display order.
    pub rows: Vec<Vec<String>>,
}

/// The rows `state` selects from `refresh`, filtered and sorted, as text.
pub fn table_text(refresh: &Refresh, state: &ViewState) -> TableText {
    let filter = state.filter.to_lowercase();
    let keep = |name: &str| filter.is_empty() || name.to_lowercase().contains(&filter);
    let view = state.view();
    let numeric_desc = |a: u64, b: u64, reverse: bool| {
        if reverse {
            a.cmp(&b)
        } else {
            b.cmp(&a)
        }
    };
    match view {
        View::Functions => {
            let t = if state.cumulative {
                &refresh.cumulative
            } else {
                &refresh.functions
            };
            let mut rows: Vec<&FunctionRow> = t.rows.iter().filter(|r| keep(&r.function)).collect();
            rows.sort_by(|a, b| {
                let by_name = a.function.cmp(&b.function);
                match state.sort {
                    0 => numeric_desc(a.own, b.own, state.reverse)
                        .then(numeric_desc(a.total, b.total, state.reverse))
                        .then(by_name),
                    1 => numeric_desc(a.total, b.total, state.reverse)
                        .then(numeric_desc(a.own, b.own, state.reverse))
                        .then(by_name),
                    _ if state.reverse => by_name.reverse(),
                    _ => by_name,
                }
            });
            TableText {
                title: format!(
                    "{}{}",
                    view.title(),
                    if state.cumulative {
                        " (since start)"
                    } else {
                        " (last interval)"
                    }
                ),
                columns: vec!["%Own", "%Total", "OwnTime", "TotalTime", "Function"],
                rows: rows
                    .iter()
                    .map(|r| {
                        vec![
                            format!("{:.1}", t.percent(r.own)),
                            format!("{:.1}", t.percent(r.total)),
                            format!("{:.2}s", t.seconds(r.own)),
                            format!("{:.2}s", t.seconds(r.total)),
                            r.function.to_string(),
                        ]
                    })
                    .collect(),
            }
        }
        View::Goroutines(grouping) => {
            let mut rows = group_goroutines(&refresh.goroutines, grouping);
            rows.retain(|r| keep(&r.key));
            rows.sort_by(|a, b| {
                let by_name = a.key.cmp(&b.key);
                match state.sort {
                    0 => numeric_desc(a.count as u64, b.count as u64, state.reverse).then(by_name),
                    1 => numeric_desc(a.running as u64, b.running as u64, state.reverse)
                        .then(b.count.cmp(&a.count))
                        .then(by_name),
                    _ if state.reverse => by_name.reverse(),
                    _ => by_name,
                }
            });
            TableText {
                title: view.title().to_string(),
                columns: vec![
                    "Count",
                    match grouping {
                        Grouping::Creator => "Created by",
                        _ => "Function",
                    },
                    "States",
                ],
                rows: rows
                    .into_iter()
                    .map(|r| vec![r.count.to_string(), r.key, r.states])
                    .collect(),
            }
        }
    }
}

/// The header lines: process, goroutines by state, sampling, GC.
pub fn header_lines(info: &TargetInfo, refresh: &Refresh, state: &ViewState) -> Vec<String> {
    let user: Vec<&GoroutineReport> = refresh.goroutines.iter().filter(|g| !g.system).collect();
    let system = refresh.goroutines.len() - user.len();
    let mut by_status: Vec<(&'static str, usize)> = Vec::new();
    for g in &user {
        match by_status.iter_mut().find(|s| s.0 == g.status.name()) {
            Some(s) => s.1 += 1,
            None => by_status.push((g.status.name(), 1)),
        }
    }
    by_status.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let statuses = by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let gc = match refresh.gc {
        Some(gc) => format!(
            "GC: {} cycles{}, {:.1} ms stop-the-world pauses in total{}",
            gc.cycles,
            refresh
                .gc_cycles_delta
                .map(|d| format!(" (+{d} in the last interval)"))
                .unwrap_or_default(),
            gc.pause_total.as_secs_f64() * 1e3,
            gc.last_pause
                .map(|p| format!(", last {:.3} ms", p.as_secs_f64() * 1e3))
                .unwrap_or_default()
        ),
        None => "GC: figures unavailable for this binary".into(),
    };
    let errors = match (&refresh.last_error, refresh.errors) {
        (_, 0) => String::new(),
        (Some(e), n) => format!(", {n} failed samples (last: {e})"),
        (None, n) => format!(", {n} failed samples"),
    };
    vec![
        format!(
            "gospy top: pid {} {} ({}){}",
            info.pid,
            info.binary,
            info.go_version,
            if state.paused { "  [PAUSED]" } else { "" }
        ),
        format!("Goroutines: {} ({statuses}) + {system} runtime", user.len()),
        if info.nonblocking {
            format!(
                "Sampling: {:.0}/s of {} requested per busy thread, target never paused (--nonblocking){errors}",
                refresh.rate, info.rate
            )
        } else {
            format!(
                "Sampling: {:.0}/s of {} requested, target paused {:.2} ms per sample, {:.2} ms for the goroutine snapshot{errors}",
                refresh.rate,
                info.rate,
                refresh.pause_per_sample.as_secs_f64() * 1e3,
                refresh.snapshot_pause.as_secs_f64() * 1e3
            )
        },
        gc,
    ]
}

/// Writes one plain-text snapshot: header, the chosen table and, in the
/// functions view, the goroutine grouping too (a file gets both).
pub fn write_text(
    out: &mut dyn Write,
    info: &TargetInfo,
    refresh: &Refresh,
    state: &ViewState,
    grouping: Grouping,
    max_rows: usize,
) -> io::Result<()> {
    writeln!(
        out,
        "--- {:.1} s, refresh {} ---",
        refresh.elapsed.as_secs_f64(),
        refresh.iteration
    )?;
    for line in header_lines(info, refresh, state) {
        writeln!(out, "{line}")?;
    }
    let mut views = vec![state.view()];
    if state.view() == View::Functions {
        views.push(View::Goroutines(grouping));
    }
    for view in views {
        let s = ViewState {
            view,
            sort: if view == state.view() { state.sort } else { 0 },
            ..state.clone()
        };
        let t = table_text(refresh, &s);
        writeln!(out, "\n{}:", t.title)?;
        write_columns(out, &t, max_rows)?;
    }
    writeln!(out)?;
    out.flush()
}

/// Prints `t` as aligned columns: numbers right-aligned, the last column
/// (names, states) left as is.
fn write_columns(out: &mut dyn Write, t: &TableText, max_rows: usize) -> io::Result<()> {
    let shown = &t.rows[..t.rows.len().min(max_rows)];
    let n = t.columns.len();
    let mut widths: Vec<usize> = t.columns.iter().map(|c| c.len()).collect();
    for row in shown {
        for (i, cell) in row.iter().enumerate().take(n - 1) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else if t.columns.get(i).is_some_and(|c| is_text_column(c)) {
                s.push_str(&format!("{cell:<w$}", w = widths[i]));
            } else {
                s.push_str(&format!("{cell:>w$}", w = widths[i]));
            }
        }
        s
    };
    let header: Vec<String> = t.columns.iter().map(|c| c.to_string()).collect();
    writeln!(out, "{}", line(&header))?;
    for row in shown {
        writeln!(out, "{}", line(row))?;
    }
    if t.rows.len() > shown.len() {
        writeln!(out, "({} more)", t.rows.len() - shown.len())?;
    }
    Ok(())
}

/// Whether a column holds text (left-aligned) rather than numbers.
fn is_text_column(name: &str) -> bool {
    matches!(name, "Function" | "Created by" | "States" | "Group")
}

/// How to run `gospy top`.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// Samples per second.
    pub rate: f64,
    /// Between refreshes.
    pub interval: Duration,
    /// Stop after this many refreshes.
    pub iterations: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Full-screen view (stdout is a terminal) or plain snapshots.
    pub interactive: bool,
    /// Grouping of the goroutine view (first shown by `g`, and printed in
    /// plain mode).
    pub grouping: Grouping,
    /// Rows per table in plain mode.
    pub max_rows: usize,
    /// Never stop the target: on-CPU samples from perf events, goroutine
    /// views read without a pause.
    pub nonblocking: bool,
}

/// What the loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Redraw with the changed [`ViewState`].
    Redraw,
    /// Leave.
    Quit,
    /// Nothing changed.
    None,
}

/// Why `gospy top` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `q`, Ctrl-C, or the iterations/duration ran out.
    Done,
    /// The target exited.
    TargetExited,
}

/// Runs `gospy top` on `target` until the user quits, the iterations or
/// duration run out, or the target exits.
pub fn run(target: &Target, options: &TopOptions, interrupted: &dyn Fn() -> bool) -> Result<Ended> {
    let info = TargetInfo {
        pid: target.pid(),
        binary: target.process.exe_display(),
        go_version: target.binary.go_version.to_string(),
        rate: options.rate,
        nonblocking: options.nonblocking,
    };
    let mut ui = if options.interactive {
        Some(tui::Tui::start().map_err(|e| Error::io("setting up the terminal", e))?)
    } else {
        None
    };
    let mut state = ViewState::default();
    let ended = drive(target, options, interrupted, &info, &mut state, &mut ui);
    // Restore before anything is printed below the view.
    if let Some(ui) = ui.take() {
        ui.stop();
    }
    ended
}

/// The loop of [`run`]: sample at the rate, refresh at the interval, and
/// between them wait for keys.
fn drive(
    target: &Target,
    options: &TopOptions,
    interrupted: &dyn Fn() -> bool,
    info: &TargetInfo,
    state: &mut ViewState,
    ui: &mut Option<tui::Tui>,
) -> Result<Ended> {
    let grouping = options.grouping;
    let mut stepper = Stepper::new(
        target,
        SamplerOptions {
            rate: options.rate,
            duration: None,
            idle: false,
            threads: false,
            goroutines: false,
            nonblocking: options.nonblocking,
            native: false,
        },
    )?;
    let mut counter = FunctionCounter::default();
    let tick = Duration::from_secs_f64(1.0 / options.rate);
    let started = Instant::now();
    let mut next_sample = started;
    let mut next_refresh = started + options.interval;
    let mut last_refresh = started;
    let mut last_samples = 0u64;
    let mut last_paused = Duration::ZERO;
    let mut refresh = Refresh::default();
    // A first goroutine view at once, so the screen is not empty for a whole
    // interval.
    if let Err(ended) = refresh_goroutines(target, options.nonblocking, &mut refresh) {
        return Ok(ended);
    }
    refresh.gc = read_gc(target);
    if let Some(ui) = ui.as_mut() {
        ui.draw(info, &refresh, state)
            .map_err(|e| Error::io("drawing", e))?;
    }
    let mut was_paused = false;
    loop {
        if interrupted() || tui::terminated() {
            return Ok(Ended::Done);
        }
        let now = Instant::now();
        if was_paused && !state.paused {
            // Resumed: a fresh interval, so the rate is not diluted by the
            // pause.
            last_refresh = now;
            next_refresh = now + options.interval;
            next_sample = now;
        }
        was_paused = state.paused;
        if !state.paused && now >= next_sample {
            if stepper.sample().is_err() {
                return Ok(Ended::TargetExited);
            }
            next_sample += tick;
            // Behind schedule: skip ahead rather than burst.
            if next_sample < Instant::now() {
                next_sample = Instant::now();
            }
        }
        let now = Instant::now();
        if now >= next_refresh {
            next_refresh += options.interval;
            if next_refresh < now {
                next_refresh = now + options.interval;
            }
            // Paused, nothing samples: notice the target's exit all the same.
            if state.paused && !target.process.is_alive() {
                return Ok(Ended::TargetExited);
            }
            if !state.paused {
                let profile = stepper.profile();
                let secs = now.duration_since(last_refresh).as_secs_f64().max(1e-9);
                let samples = profile.samples - last_samples;
                refresh.functions = counter.update(profile, secs);
                refresh.cumulative = counter.cumulative();
                refresh.rate = samples as f64 / secs;
                refresh.pause_per_sample = if samples == 0 {
                    Duration::ZERO
                } else {
                    (profile.paused - last_paused) / samples as u32
                };
                refresh.errors = profile.errors;
                refresh.last_error = profile.last_error.clone();
                last_samples = profile.samples;
                last_paused = profile.paused;
                last_refresh = now;
                if let Err(ended) = refresh_goroutines(target, options.nonblocking, &mut refresh) {
                    return Ok(ended);
                }
                let gc = read_gc(target);
                refresh.gc_cycles_delta = match (refresh.gc, gc) {
                    (Some(a), Some(b)) => Some(b.cycles.wrapping_sub(a.cycles)),
                    _ => None,
                };
                refresh.gc = gc;
                refresh.iteration += 1;
                refresh.elapsed = started.elapsed();
                match ui.as_mut() {
                    Some(ui) => ui
                        .draw(info, &refresh, state)
                        .map_err(|e| Error::io("drawing", e))?,
                    None => {
                        let stdout = io::stdout();
                        let mut out = stdout.lock();
                        match write_text(
                            &mut out,
                            info,
                            &refresh,
                            state,
                            grouping,
                            options.max_rows,
                        ) {
                            Ok(()) => {}
                            // `gospy top | head` is fine.
                            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                                return Ok(Ended::Done)
                            }
                            Err(e) => return Err(Error::io("writing", e)),
                        }
                    }
                }
                if options.iterations.is_some_and(|n| refresh.iteration >= n)
                    || options.duration.is_some_and(|d| started.elapsed() >= d)
                {
                    return Ok(Ended::Done);
                }
            }
        }
        let wake = if state.paused {
            next_refresh
        } else {
            next_sample.min(next_refresh)
        };
        // Wake at least every 100 ms to notice Ctrl-C (SIGINT) in plain mode.
        let wait = wake
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match ui.as_mut() {
            Some(ui) => {
                let action = match ui.poll(wait).map_err(|e| Error::io("reading keys", e))? {
                    Some(tui::Input::Key(key)) => tui::handle_key(state, key, grouping),
                    Some(tui::Input::Resized) => Action::Redraw,
                    None => Action::None,
                };
                match action {
                    Action::Quit => return Ok(Ended::Done),
                    Action::Redraw => ui
                        .draw(info, &refresh, state)
                        .map_err(|e| Error::io("drawing", e))?,
                    Action::None => {}
                }
            }
            None => std::thread::sleep(wait),
        }
    }
}

/// Reads the goroutine view into `refresh` (with `nonblocking`, without a
/// pause). A failed snapshot (e.g. the target was mid-change) keeps the last
/// view; the next interval tries again. `Err` when the target exited.
fn refresh_goroutines(
    target: &Target,
    nonblocking: bool,
    refresh: &mut Refresh,
) -> std::result::Result<(), Ended> {
    let options = SnapshotOptions {
        nonblocking,
        ..SnapshotOptions::default()
    };
    match Snapshot::take(target, options) {
        Ok(snapshot) => {
            refresh.goroutines = goroutines::reports(
                target,
                &snapshot,
                ReportOptions {
                    labels: false,
                    ..ReportOptions::default()
                },
            );
            refresh.snapshot_pause = snapshot.pause.unwrap_or_default();
            Ok(())
        }
        Err(_) if !target.process.is_alive() => Err(Ended::TargetExited),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_mix_orders_by_count() {
        let mut gs = vec![("running", None)];
        gs.extend(std::iter::repeat_n(("waiting", Some("chan receive")), 10));
        gs.extend(std::iter::repeat_n(("waiting", Some("select")), 2));
        assert_eq!(
            state_mix(gs.into_iter()),
            "12 waiting (chan receive 10, select 2), 1 running"
        );
        let one = [("waiting", Some("sleep"))];
        assert_eq!(state_mix(one.into_iter()), "1 waiting (sleep)");
    }

    #[test]
    fn short_file_keeps_two_components() {
        assert_eq!(short_file("/src/app/worker.go"), "app/worker.go");
        assert_eq!(short_file("worker.go"), "worker.go");
        assert_eq!(short_file("app/worker.go"), "app/worker.go");
    }
}
