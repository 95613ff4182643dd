//! Renderers of a [`ValueProfile`] (the runtime's heap, allocs, block and
//! mutex profiles) for one of its sample types: folded stacks, SVG
//! flamegraphs, speedscope files and a `go tool pprof -top`-like table.
//! The pprof file itself is [`crate::output::pprof::write_values`]'s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};

use inferno::flamegraph::color::{BasicPalette, Palette};

use crate::output::pprof::{ValueProfile, ValueSample};
use crate::output::{flamegraph, folded, speedscope};
use crate::sampler::SourceLine;

/// The index of the sample type `name` in `profile`, as `go tool pprof
/// -sample_index` picks it: a type's name (`inuse_space` also finds a
/// legacy `space`) or a 0-based number. None (or "") picks the profile's
/// default type if it has one, else the last type. An unknown name gives
/// an error listing the valid ones; a number out of range, the range.
pub fn sample_index(profile: &ValueProfile, name: Option<&str>) -> Result<usize, String> {
    let types = &profile.sample_types;
    let Some(last) = types.len().checked_sub(1) else {
        return Err("the profile has no sample types".to_string());
    };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        let default = profile
            .default_sample_type
            .as_deref()
            .and_then(|d| types.iter().position(|(t, _)| t == d));
        return Ok(default.unwrap_or(last));
    };
    if let Ok(i) = name.parse::<i64>() {
        return usize::try_from(i)
            .ok()
            .filter(|&i| i <= last)
            .ok_or_else(|| format!("sample index {name} is outside the range [0..{last}]"));
    }
    // pprof's legacy rule: "inuse_space" also names a type called "space".
    let no_inuse = name.strip_prefix("inuse_").unwrap_or(name);
    types
        .iter()
        .position(|(t, _)| t == name || t == no_inuse)
        .ok_or_else(|| {
            let names: Vec<&str> = types.iter().map(|(t, _)| t.as_str()).collect();
            format!(
                "unknown sample type {name:?}: must be one of {} (or an index 0..{last})",
                names.join(", ")
            )
        })
}

/// Writes the stacks of `profile` as folded lines, `root;...;leaf VALUE`,
/// VALUE being the sum of sample type `index` over the samples with that
/// stack. Each location contributes its lines, inlined callees after their
/// callers. Stacks whose sum is not positive (folded counts cannot be
/// negative) and samples without frames are left out; lines are sorted.
pub fn write_folded(out: &mut dyn Write, profile: &ValueProfile, index: usize) -> io::Result<()> {
    for line in folded_lines(profile, index) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Writes sample type `index` of `profile` as an SVG flamegraph titled
/// `title`, drawn by inferno from [`write_folded`]'s lines, its counts named
/// after the type's unit (bytes, objects, nanoseconds or count).
pub fn write_flamegraph(
    out: &mut dyn Write,
    profile: &ValueProfile,
    index: usize,
    title: &str,
) -> io::Result<()> {
    let lines = folded_lines(profile, index);
    let (kind, measure) = kind(profile, index);
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    let objects = kind.ends_with("objects");
    options.count_name = match measure {
        Measure::Bytes => "bytes",
        Measure::Nanoseconds => "nanoseconds",
        Measure::Count if objects => "objects",
        Measure::Count => "count",
    }
    .to_string();
    // flamegraph.pl's conventions: green-blue for memory, blue for waiting.
    options.colors = if measure == Measure::Bytes || objects {
        Palette::Basic(BasicPalette::Mem)
    } else {
        Palette::Basic(BasicPalette::Io)
    };
    flamegraph::draw(out, &lines, &mut options)
}

/// Writes sample type `index` of `profile` as a speedscope file named
/// `name`: one "sampled" profile with one sample per distinct stack
/// (outermost frame first, frames by function, file and line), weighing its
/// summed value, in "bytes", "nanoseconds" or "none" (counts). As with
/// [`write_folded`], stacks whose sum is not positive are left out.
pub fn write_speedscope(
    out: &mut dyn Write,
    profile: &ValueProfile,
    index: usize,
    name: &str,
) -> io::Result<()> {
    type Key<'a> = (&'a str, &'a str, u32);
    // A BTreeMap: samples in a stable order, whatever the profile's.
    let mut stacks: BTreeMap<Vec<Key>, i128> = BTreeMap::new();
    for sample in &profile.samples {
        let v = value(sample, index);
        if v == 0 {
            continue;
        }
        let key: Vec<Key> = frames(profile, sample)
            .map(|l| (&*l.function, &*l.file, l.line))
            .collect();
        if !key.is_empty() {
            *stacks.entry(key).or_insert(0) += i128::from(v);
        }
    }
    let mut frames: Vec<speedscope::Frame> = Vec::new();
    let mut ids: HashMap<Key, usize> = HashMap::new();
    let mut samples = Vec::with_capacity(stacks.len());
    let mut weights = Vec::with_capacity(stacks.len());
    for (key, sum) in stacks {
        let Ok(weight) = u64::try_from(sum) else {
            continue;
        };
        if weight == 0 {
            continue;
        }
        let sample = key
            .iter()
            .map(|&k| {
                *ids.entry(k).or_insert_with(|| {
                    frames.push(speedscope::Frame {
                        name: k.0,
                        file: k.1,
                        line: k.2,
                    });
                    frames.len() - 1
                })
            })
            .collect();
        samples.push(sample);
        weights.push(weight);
    }
    let unit = match kind(profile, index).1 {
        Measure::Bytes => "bytes",
        Measure::Nanoseconds => "nanoseconds",
        Measure::Count => "none",
    };
    speedscope::write_sampled(out, name, unit, frames, samples, weights)
}

/// Writes sample type `index` of `profile` as `go tool pprof -top` does
/// (with `-nodefraction=0 -nodecount=limit`): a header naming the type and
/// the total, then one row per function with its flat value (samples whose
/// leaf line is in it), cumulative value (samples with it anywhere, once per
/// sample even if recursive) and their shares of the total, sorted by flat
/// value, then name. At most `limit` rows (0: all); the header says how
/// many were left out. Values share one unit, chosen as pprof does (bytes
/// as "12.50MB", nanoseconds as "1.20s"); functions inlined into their
/// callers are marked "(inline)", or "(partial-inline)" if some calls
/// were not inlined.
pub fn write_text(
    out: &mut dyn Write,
    profile: &ValueProfile,
    index: usize,
    limit: usize,
) -> io::Result<()> {
    let (kind, measure) = kind(profile, index);
    let mut table = table(profile, index);
    let all = table.rows.len();
    let flat_total = table
        .rows
        .iter()
        .fold(0i64, |s, r| s.saturating_add(r.flat));
    if limit > 0 {
        table.rows.truncate(limit);
    }
    mark_inline(profile, index, &mut table.rows, flat_total);
    let rows = &table.rows[..];
    let unit = output_unit(measure, rows, table.total);
    let show = |v: i64| format_value(v, unit);
    let flat_shown = rows.iter().fold(0i64, |s, r| s.saturating_add(r.flat));
    writeln!(out, "Type: {kind}")?;
    writeln!(
        out,
        "Showing nodes accounting for {}, {} of {} total",
        show(flat_shown),
        percentage(flat_shown, table.total).trim(),
        show(table.total)
    )?;
    if rows.len() < all {
        writeln!(
            out,
            "Showing top {} nodes out of {all} ({} dropped)",
            rows.len(),
            all - rows.len()
        )?;
    }
    writeln!(
        out,
        "{:>10} {:>5}% {:>5}% {:>10} {:>5}%",
        "flat", "flat", "sum", "cum", "cum"
    )?;
    let mut flat_sum = 0i64;
    for row in rows {
        flat_sum = flat_sum.saturating_add(row.flat);
        let mark = match (row.called_inline, row.called_plain) {
            (true, true) => " (partial-inline)",
            (true, false) => " (inline)",
            _ => "",
        };
        writeln!(
            out,
            "{:>10} {} {} {:>10} {}  {}{mark}",
            show(row.flat),
            percentage(row.flat, table.total),
            percentage(flat_sum, table.total),
            show(row.cum),
            percentage(row.cum, table.total),
            row.function,
        )?;
    }
    Ok(())
}

/// What a sample type measures, which decides units and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Bytes,
    Nanoseconds,
    /// Objects, contentions, anything else.
    Count,
}

/// The name of sample type `index` and what it measures: by its unit, or
/// by its name where the unit is not one of pprof's usual ones.
fn kind(profile: &ValueProfile, index: usize) -> (&str, Measure) {
    let Some((kind, unit)) = profile.sample_types.get(index) else {
        return ("", Measure::Count);
    };
    let measure = match unit.to_ascii_lowercase().as_str() {
        "bytes" | "byte" | "b" => Measure::Bytes,
        "nanoseconds" | "nanosecond" | "ns" => Measure::Nanoseconds,
        "count" => Measure::Count,
        _ if kind.ends_with("_space") => Measure::Bytes,
        _ if kind == "delay" => Measure::Nanoseconds,
        _ => Measure::Count,
    };
    (kind, measure)
}

/// Value `index` of `sample`; a sample short of values has 0 there.
fn value(sample: &ValueSample, index: usize) -> i64 {
    sample.values.get(index).copied().unwrap_or(0)
}

/// The source lines of `sample`, outermost first: locations root first,
/// each one's physical function before the calls inlined into it.
fn frames<'a>(
    profile: &'a ValueProfile,
    sample: &'a ValueSample,
) -> impl Iterator<Item = &'a SourceLine> + 'a {
    sample
        .locations
        .iter()
        .rev()
        .filter_map(|&i| profile.locations.get(i as usize))
        .flat_map(|loc| loc.lines.iter().rev())
}

/// The folded lines of sample type `index`, sorted.
fn folded_lines(profile: &ValueProfile, index: usize) -> Vec<String> {
    let mut by_names: HashMap<String, i128> = HashMap::new();
    for sample in &profile.samples {
        let v = value(sample, index);
        if v == 0 {
            continue;
        }
        let names: Vec<String> = frames(profile, sample)
            .map(|l| folded::frame_name(&l.function))
            .collect();
        if !names.is_empty() {
            *by_names.entry(names.join(";")).or_insert(0) += i128::from(v);
        }
    }
    let mut lines: Vec<String> = by_names
        .into_iter()
        .filter(|&(_, v)| v > 0)
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect();
    lines.sort();
    lines
}

/// One function of the `-top` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Row<'a> {
    function: &'a str,
    flat: i64,
    cum: i64,
    /// It has a caller that inlined every call (pprof's inline edge).
    called_inline: bool,
    /// It has a caller that called it at least once without inlining.
    called_plain: bool,
}

struct Table<'a> {
    /// Sum of the absolute values of all samples, as pprof's total.
    total: i64,
    /// Functions with a nonzero flat or cum value, sorted for display.
    rows: Vec<Row<'a>>,
}

/// pprof's call graph at function granularity, for `-top`.
fn table(profile: &ValueProfile, index: usize) -> Table<'_> {
    let mut total = 0i64;
    let mut rows: HashMap<&str, Row> = HashMap::new();
    for sample in &profile.samples {
        let v = value(sample, index);
        total = total.saturating_add(v.saturating_abs());
        if v == 0 {
            continue;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut leaf = None;
        for line in frames(profile, sample) {
            let name = &*line.function;
            // Recursion: a sample counts once in a function's cum.
            if seen.insert(name) {
                let row = rows.entry(name).or_default();
                row.cum = row.cum.saturating_add(v);
            }
            leaf = Some(name);
        }
        if let Some(leaf) = leaf {
            let row = rows.entry(leaf).or_default();
            row.flat = row.flat.saturating_add(v);
        }
    }
    let mut rows: Vec<Row> = rows
        .into_iter()
        .map(|(function, row)| Row { function, ..row })
        .filter(|r| r.flat != 0 || r.cum != 0)
        .collect();
    rows.sort_by(|a, b| {
        b.flat
            .unsigned_abs()
            .cmp(&a.flat.unsigned_abs())
            .then_with(|| a.function.cmp(b.function))
    });
    Table { total, rows }
}

/// Marks the functions of `rows` called inline, as pprof does in the graph
/// of the rows it shows: an edge joins each shown function to the nearest
/// shown caller in a stack, inline if the callee's line was inlined into
/// its location, and stays inline only if it always is. pprof drops edges
/// lighter than 0.1% (its -edgefraction) of `flat_total`, the flat sum of
/// all functions, before it looks, so they mark nothing here either.
fn mark_inline(profile: &ValueProfile, index: usize, rows: &mut [Row], flat_total: i64) {
    let shown: HashSet<&str> = rows.iter().map(|r| r.function).collect();
    // (caller, callee) → (every call between them was inlined, weight).
    let mut edges: HashMap<(&str, &str), (bool, i64)> = HashMap::new();
    for sample in &profile.samples {
        let v = value(sample, index);
        if v == 0 {
            continue;
        }
        // A recursive stack weighs on an edge once.
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut parent: Option<&str> = None;
        let locations = sample
            .locations
            .iter()
            .rev()
            .filter_map(|&i| profile.locations.get(i as usize));
        for loc in locations {
            let physical = loc.lines.len().saturating_sub(1);
            for (j, line) in loc.lines.iter().enumerate().rev() {
                let name = &*line.function;
                if !shown.contains(name) {
                    continue;
                }
                if let Some(caller) = parent.filter(|&p| p != name) {
                    let inline = j != physical;
                    let edge = edges.entry((caller, name)).or_insert((inline, 0));
                    edge.0 &= inline;
                    if seen.insert((caller, name)) {
                        edge.1 = edge.1.saturating_add(v);
                    }
                }
                parent = Some(name);
            }
        }
    }
    let cutoff = (flat_total as f64 * 0.001) as i64;
    for row in rows.iter_mut() {
        row.called_inline = false;
        row.called_plain = false;
    }
    let index: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.function, i))
        .collect();
    let edges = edges
        .into_iter()
        .filter(|(_, (_, weight))| weight.unsigned_abs() >= cutoff.unsigned_abs());
    for ((_, callee), (inline, _)) in edges {
        if let Some(row) = index.get(callee).and_then(|&i| rows.get_mut(i)) {
            if inline {
                row.called_inline = true;
            } else {
                row.called_plain = true;
            }
        }
    }
}

/// A display unit: its name and how many base units (bytes, nanoseconds,
/// counts) it holds.
type Unit = (&'static str, f64);

/// pprof's units (internal/measurement), smallest first.
const BYTE_UNITS: &[Unit] = &[
    ("B", 1.0),
    ("kB", 1024.0),
    ("MB", 1_048_576.0),
    ("GB", 1_073_741_824.0),
    ("TB", 1_099_511_627_776.0),
    ("PB", 1_125_899_906_842_624.0),
];
const TIME_UNITS: &[Unit] = &[
    ("ns", 1.0),
    ("us", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("hrs", 3.6e12),
];

/// The largest unit in which `value` is at least 1, as pprof's autoScale;
/// for 0, pprof's default unit (B, s). Counts have no unit.
fn auto_unit(measure: Measure, value: i64) -> Unit {
    let (units, default) = match measure {
        Measure::Bytes => (BYTE_UNITS, BYTE_UNITS[0]),
        Measure::Nanoseconds => (TIME_UNITS, TIME_UNITS[3]),
        Measure::Count => return ("", 1.0),
    };
    let v = value.unsigned_abs() as f64;
    units
        .iter()
        .rev()
        .find(|u| v / u.1 >= 1.0)
        .copied()
        .unwrap_or(default)
}

/// The one unit of the whole table, by pprof's "minimum" rule
/// (report.selectOutputUnit): the unit of the smallest value shown, unless
/// that is under 1% of the total in a smaller unit, when the unit of 100
/// times it is used, so that small values may show as 0.01.
fn output_unit(measure: Measure, rows: &[Row], total: i64) -> Unit {
    let min = rows
        .iter()
        .map(|r| {
            if r.flat != 0 {
                r.flat.unsigned_abs()
            } else {
                r.cum.unsigned_abs()
            }
        })
        .filter(|&v| v > 0)
        .min()
        .map_or(total, |v| i64::try_from(v).unwrap_or(i64::MAX));
    let min_unit = auto_unit(measure, min);
    let max_unit = auto_unit(measure, total);
    if min_unit.0 != max_unit.0 && i128::from(min) * 100 < i128::from(total) {
        auto_unit(measure, min.saturating_mul(100))
    } else {
        min_unit
    }
}

/// `value` in `unit` as pprof's measurement.ScaledLabel: two decimals, no
/// ".00", and a bare "0".
fn format_value(value: i64, unit: Unit) -> String {
    let text = format!("{:.2}", value as f64 / unit.1);
    let text = text.strip_suffix(".00").unwrap_or(&text);
    if text == "0" || text == "-0" {
        return "0".to_string();
    }
    format!("{text}{}", unit.0)
}

/// `value`'s share of `total` as pprof's measurement.Percentage: "  100%",
/// else `%5.2f%%` from 1%, `%5.2g%%` below.
fn percentage(value: i64, total: i64) -> String {
    let ratio = if total != 0 {
        (value as f64 / total as f64).abs() * 100.0
    } else {
        0.0
    };
    if (99.95..=100.05).contains(&ratio) {
        "  100%".to_string()
    } else if ratio >= 1.0 {
        format!("{ratio:5.2}%")
    } else {
        format!("{:>5}%", format_g2(ratio))
    }
}

/// Go's `%.2g` of a non-negative `x`: two significant digits, trailing
/// zeros dropped, exponent form below 1e-4 or from 100.
fn format_g2(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    // Rounding to two digits first gives the exponent %g decides on.
    let sci = format!("{x:.1e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..2).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.unsigned_abs())
    } else {
        let decimals = usize::try_from(1 - exp).unwrap_or(0);
        trim(&format!("{x:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::Location;

    fn loc(functions: &[&str]) -> Location {
        Location {
            address: 0x1000,
            lines: functions
                .iter()
                .map(|f| SourceLine {
                    function: (*f).into(),
                    file: "main.go".into(),
                    line: 10,
                    start_line: 1,
                })
                .collect(),
            native: false,
        }
    }

    fn sample(locations: &[u32], values: [i64; 4]) -> ValueSample {
        ValueSample {
            locations: locations.to_vec(),
            values: values.to_vec(),
            numeric_labels: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// A heap profile: main.helper inlined into main.work, main.rec
    /// recursing, two samples with one stack, a sample without frames and
    /// an all-zero one.
    fn heap() -> ValueProfile {
        let types = [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
        ];
        ValueProfile {
            sample_types: types
                .iter()
                .map(|t| {
                    let unit = if t.ends_with("space") {
                        "bytes"
                    } else {
                        "count"
                    };
                    (t.to_string(), unit.to_string())
                })
                .collect(),
            default_sample_type: Some("inuse_space".into()),
            period_type: ("space".into(), "bytes".into()),
            period: 512 * 1024,
            duration_nanos: 0,
            locations: vec![
                loc(&["main.alloc"]),
                // Lines innermost first: helper was inlined into work.
                loc(&["main.helper", "main.work"]),
                loc(&["main.rec"]),
                loc(&["main.rec"]),
                loc(&["main.main"]),
                loc(&["runtime.main"]),
            ],
            samples: vec![
                sample(&[0, 1, 4, 5], [2, 2048, 1, 1024]),
                sample(&[0, 1, 4, 5], [1, 1024, 1, 512]),
                sample(&[0, 2, 3, 2, 4, 5], [4, 4096, 0, 0]),
                sample(&[1, 4, 5], [1, 10 << 20, 1, 10 << 20]),
                sample(&[], [1, 100, 1, 100]),
                sample(&[4, 5], [0, 0, 0, 0]),
            ],
        }
    }

    fn text(f: impl Fn(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).expect("writing to a Vec");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn sample_index_by_name_number_and_default() {
        let p = heap();
        assert_eq!(sample_index(&p, None), Ok(3));
        assert_eq!(sample_index(&p, Some("")), Ok(3));
        assert_eq!(sample_index(&p, Some("alloc_space")), Ok(1));
        assert_eq!(sample_index(&p, Some("2")), Ok(2));
        let mut no_default = p.clone();
        no_default.default_sample_type = None;
        assert_eq!(sample_index(&no_default, None), Ok(3));
        no_default.default_sample_type = Some("nonsense".into());
        assert_eq!(sample_index(&no_default, None), Ok(3));
        // pprof's legacy names: inuse_space finds "space".
        let legacy = ValueProfile {
            sample_types: vec![
                ("objects".into(), "count".into()),
                ("space".into(), "bytes".into()),
            ],
            ..Default::default()
        };
        assert_eq!(sample_index(&legacy, Some("inuse_objects")), Ok(0));
        assert_eq!(sample_index(&legacy, None), Ok(1));
    }

    #[test]
    fn sample_index_errors() {
        let p = heap();
        let err = sample_index(&p, Some("delay")).expect_err("unknown type");
        assert!(err.contains("\"delay\""), "{err}");
        for t in [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
        ] {
            assert!(err.contains(t), "{err}");
        }
        let err = sample_index(&p, Some("4")).expect_err("out of range");
        assert!(err.contains("[0..3]"), "{err}");
        assert!(sample_index(&p, Some("-1")).is_err());
        assert!(sample_index(&ValueProfile::default(), None).is_err());
    }

    #[test]
    fn folded_sums_equal_stacks_and_skips_zeros() {
        let p = heap();
        let inuse = text(|o| write_folded(o, &p, 3));
        // The recursive stack is all zero in use; the frameless sample has
        // nowhere to go; equal stacks are one line of 1024 + 512.
        assert_eq!(
            inuse,
            "runtime.main;main.main;main.work;main.helper 10485760\n\
             runtime.main;main.main;main.work;main.helper;main.alloc 1536\n"
        );
        let alloc = text(|o| write_folded(o, &p, 1));
        assert_eq!(
            alloc,
            "runtime.main;main.main;main.rec;main.rec;main.rec;main.alloc 4096\n\
             runtime.main;main.main;main.work;main.helper 10485760\n\
             runtime.main;main.main;main.work;main.helper;main.alloc 3072\n"
        );
    }

    #[test]
    fn folded_is_independent_of_sample_order_and_drops_negative_sums() {
        let mut p = heap();
        let before = text(|o| write_folded(o, &p, 1));
        p.samples.reverse();
        assert_eq!(text(|o| write_folded(o, &p, 1)), before);
        p.samples.push(sample(&[0, 1, 4, 5], [0, -3072, 0, 0]));
        let after = text(|o| write_folded(o, &p, 1));
        assert!(!after.contains("main.alloc 3072"), "{after}");
        assert_eq!(after.lines().count(), 2, "{after}");
        // A frame name cannot break the format.
        p.locations[0].lines[0].function = "odd;name\nhere".into();
        let odd = text(|o| write_folded(o, &p, 1));
        assert!(odd.contains(";odd:name here 4096\n"), "{odd}");
    }

    #[test]
    fn text_flat_cum_recursion_and_order() {
        let p = heap();
        let t = table(&p, 1);
        assert_eq!(t.total, 2048 + 1024 + 4096 + (10 << 20) + 100);
        let got: Vec<(&str, i64, i64)> =
            t.rows.iter().map(|r| (r.function, r.flat, r.cum)).collect();
        assert_eq!(
            got,
            [
                ("main.helper", 10 << 20, (10 << 20) + 3072),
                ("main.alloc", 7168, 7168),
                ("main.main", 0, (10 << 20) + 7168),
                // Three frames deep, counted once.
                ("main.rec", 0, 4096),
                ("main.work", 0, (10 << 20) + 3072),
                ("runtime.main", 0, (10 << 20) + 7168),
            ]
        );
        let mut rows = t.rows.clone();
        mark_inline(&p, 1, &mut rows, 0);
        assert!(rows[0].called_inline && !rows[0].called_plain);
        assert!(rows[1..].iter().all(|r| !r.called_inline));
        // Also called by main.main without inlining: partly inline.
        let mut partly = p.clone();
        partly.locations.push(loc(&["main.helper"]));
        partly.samples.push(sample(&[6, 4, 5], [1, 1, 1, 1]));
        let mut rows = table(&partly, 1).rows;
        mark_inline(&partly, 1, &mut rows, 0);
        assert!(rows[0].called_inline && rows[0].called_plain);
        // An edge is inline only if every call along it was: main.work
        // calling it once more, not inlined, makes main.helper plain.
        partly.locations.push(loc(&["main.work"]));
        partly.samples.pop();
        partly.samples.push(sample(&[6, 7, 4, 5], [1, 1, 1, 1]));
        let mut rows = table(&partly, 1).rows;
        mark_inline(&partly, 1, &mut rows, 0);
        assert!(!rows[0].called_inline && rows[0].called_plain);
        // pprof ignores edges under 0.1% of the flat total: main.work's
        // calls to main.helper weigh 10MB + 3kB.
        let mut rows = t.rows.clone();
        mark_inline(&p, 1, &mut rows, (10 << 20) * 1001);
        assert!(!rows[0].called_inline && !rows[0].called_plain);
        mark_inline(&p, 1, &mut rows, (10 << 20) * 1000);
        assert!(rows[0].called_inline);
        // Nothing is left of main.rec in use.
        assert!(table(&p, 3).rows.iter().all(|r| r.function != "main.rec"));
    }

    #[test]
    fn text_matches_pprof_top() {
        // As `go tool pprof -top -nodefraction=0 -sample_index=...
        // [-nodecount=2]` prints this profile (written by
        // pprof::write_values), but for its File and Time lines and the
        // count of rows dropped.
        let p = heap();
        let expected = "\
Type: alloc_space
Showing nodes accounting for 10247kB, 100% of 10247.10kB total
      flat  flat%   sum%        cum   cum%
   10240kB 99.93% 99.93%    10243kB   100%  main.helper (inline)
       7kB 0.068%   100%        7kB 0.068%  main.alloc
         0     0%   100%    10247kB   100%  main.main
         0     0%   100%        4kB 0.039%  main.rec
         0     0%   100%    10243kB   100%  main.work
         0     0%   100%    10247kB   100%  runtime.main
";
        assert_eq!(text(|o| write_text(o, &p, 1, 0)), expected);
        let objects = "\
Type: alloc_objects
Showing nodes accounting for 8, 88.89% of 9 total
Showing top 2 nodes out of 6 (4 dropped)
      flat  flat%   sum%        cum   cum%
         7 77.78% 77.78%          7 77.78%  main.alloc
         1 11.11% 88.89%          4 44.44%  main.helper
";
        // Without main.work shown, main.helper has no caller to be inlined
        // into (so pprof says).
        assert_eq!(text(|o| write_text(o, &p, 0, 2)), objects);
        let inuse = "\
Type: inuse_space
Showing nodes accounting for 10241.50kB, 100% of 10241.60kB total
      flat  flat%   sum%        cum   cum%
   10240kB   100%   100% 10241.50kB   100%  main.helper (inline)
    1.50kB 0.015%   100%     1.50kB 0.015%  main.alloc
         0     0%   100% 10241.50kB   100%  main.main
         0     0%   100% 10241.50kB   100%  main.work
         0     0%   100% 10241.50kB   100%  runtime.main
";
        assert_eq!(text(|o| write_text(o, &p, 3, 0)), inuse);
    }

    #[test]
    fn text_units_follow_pprof() {
        let bytes = |v| format_value(v, auto_unit(Measure::Bytes, v));
        assert_eq!(bytes(13_107_200), "12.50MB");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.50kB");
        assert_eq!(bytes(0), "0");
        let nanos = |v| format_value(v, auto_unit(Measure::Nanoseconds, v));
        assert_eq!(nanos(1_200_000_000), "1.20s");
        assert_eq!(nanos(350_000_000), "350ms");
        assert_eq!(nanos(1500), "1.50us");
        assert_eq!(nanos(7_200_000_000_000), "2hrs");
        assert_eq!(format_value(8001, auto_unit(Measure::Count, 8001)), "8001");
        // The smallest row decides, unless it is under 1% of the total.
        let row = |flat, cum| Row {
            function: "f",
            flat,
            cum,
            ..Default::default()
        };
        let rows = [row(0, 540_793), row(12 << 20, 12 << 20)];
        assert_eq!(output_unit(Measure::Bytes, &rows, 13_685_924).0, "kB");
        let rows = [row(3 << 30, 3 << 30), row(0, 2 << 20)];
        assert_eq!(output_unit(Measure::Bytes, &rows, 4 << 30).0, "MB");
        let rows = [row(3 << 30, 3 << 30), row(0, 20 << 10)];
        assert_eq!(output_unit(Measure::Bytes, &rows, 4 << 30).0, "MB");
        assert_eq!(output_unit(Measure::Nanoseconds, &[], 0).0, "s");
        assert_eq!(percentage(1, 8039), "0.012%");
        assert_eq!(percentage(0, 8039), "    0%");
        assert_eq!(percentage(8033, 8039), "99.93%");
        assert_eq!(percentage(8036, 8039), "  100%");
        assert_eq!(percentage(1, 1_000_000), "0.0001%");
        assert_eq!(percentage(1, 100_000_000), "1e-06%");
        assert_eq!(percentage(5, 0), "    0%");
    }

    fn block() -> ValueProfile {
        ValueProfile {
            sample_types: vec![
                ("contentions".into(), "count".into()),
                ("delay".into(), "nanoseconds".into()),
            ],
            locations: vec![loc(&["sync.(*Mutex).Lock"]), loc(&["main.main"])],
            samples: vec![
                ValueSample {
                    locations: vec![0, 1],
                    values: vec![3, 1_200_000_000],
                    numeric_labels: Vec::new(),
                    labels: Vec::new(),
                },
                ValueSample {
                    locations: vec![1],
                    values: vec![1, 350_000_000],
                    numeric_labels: Vec::new(),
                    labels: Vec::new(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn text_of_block_profile_in_time_units() {
        let p = block();
        let index = sample_index(&p, None).expect("a type");
        assert_eq!(index, 1);
        let out = text(|o| write_text(o, &p, index, 10));
        // 350ms is not under 1% of 1.55s: all in ms.
        let expected = "\
Type: delay
Showing nodes accounting for 1550ms, 100% of 1550ms total
      flat  flat%   sum%        cum   cum%
    1200ms 77.42% 77.42%     1200ms 77.42%  sync.(*Mutex).Lock
     350ms 22.58%   100%     1550ms   100%  main.main
";
        assert_eq!(out, expected);
    }

    #[test]
    fn speedscope_units_weights_and_frames() {
        let p = heap();
        let json: serde_json::Value =
            serde_json::from_str(&text(|o| write_speedscope(o, &p, 1, "heap")))
                .expect("valid JSON");
        let profile = &json["profiles"][0];
        assert_eq!(profile["type"], "sampled");
        assert_eq!(profile["unit"], "bytes");
        assert_eq!(profile["name"], "heap");
        let weights: Vec<u64> = profile["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .filter_map(|w| w.as_u64())
            .collect();
        assert_eq!(weights.iter().sum::<u64>(), 3072 + 4096 + (10 << 20));
        assert_eq!(profile["endValue"], 3072 + 4096 + (10 << 20));
        assert_eq!(weights.len(), 3);
        let frames = json["shared"]["frames"].as_array().expect("frames");
        let names: Vec<&str> = frames.iter().filter_map(|f| f["name"].as_str()).collect();
        // main.rec appears once in the frame list although its stack has it
        // three times, at two locations with the same line.
        assert_eq!(names.iter().filter(|&&n| n == "main.rec").count(), 1);
        // Outermost first, helper after the function it was inlined into.
        let stack = |i: usize| -> Vec<&str> {
            profile["samples"][i]
                .as_array()
                .expect("sample")
                .iter()
                .filter_map(|f| f.as_u64())
                .filter_map(|f| names.get(f as usize).copied())
                .collect()
        };
        assert!((0..3).any(|i| stack(i)
            == [
                "runtime.main",
                "main.main",
                "main.work",
                "main.helper",
                "main.alloc"
            ]));

        let counts: serde_json::Value =
            serde_json::from_str(&text(|o| write_speedscope(o, &p, 0, "heap")))
                .expect("valid JSON");
        assert_eq!(counts["profiles"][0]["unit"], "none");
    }

    #[test]
    fn flamegraph_names_counts_by_type() {
        let p = heap();
        let svg = text(|o| write_flamegraph(o, &p, 3, "in use"));
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("in use"));
        // A frame counts its callees too.
        assert!(svg.contains("main.helper (10,487,296 bytes, 100.00%)"));
        assert!(svg.contains("main.alloc (1,536 bytes, 0.01%)"));
        let svg = text(|o| write_flamegraph(o, &p, 2, "objects"));
        assert!(svg.contains("objects"));
        assert!(svg.contains("main.helper (3 objects, 100.00%)"));
        assert!(svg.contains("main.alloc (2 objects, 66.67%)"));
        // Nothing in use for any stack: a placeholder, not an error.
        let mut empty = p.clone();
        empty.samples.clear();
        let svg = text(|o| write_flamegraph(o, &empty, 3, "nothing"));
        assert!(svg.contains("nothing: no samples"), "{svg}");
    }
}
