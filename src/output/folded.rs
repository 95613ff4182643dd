//! Folded stacks: one `outer;inner;leaf value` line per distinct stack, the
//! format flamegraph.pl and inferno read. The value is the time the stack
//! stands for in microseconds: CPU time in an on-CPU profile, goroutine
//! wall time with `--idle`.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::sampler::Profile;

/// The folded lines of `profile`, sorted so that output is deterministic.
/// Stacks that differ only in lines or labels are one stack here.
pub fn lines(profile: &Profile) -> Vec<String> {
    let mut by_names: HashMap<String, u64> = HashMap::new();
    for (stack, weight) in &profile.stacks {
        let frames: Vec<String> = profile
            .frames(stack)
            .map(|f| frame_name(f.function))
            .collect();
        *by_names.entry(frames.join(";")).or_insert(0) += weight.nanos;
    }
    let mut lines: Vec<String> = by_names
        .into_iter()
        .map(|(stack, nanos)| (stack, (nanos + 500) / 1000))
        .filter(|&(_, micros)| micros > 0)
        .map(|(stack, micros)| format!("{stack} {micros}"))
        .collect();
    lines.sort();
    lines
}

/// `function` as a frame of a folded line. `;` separates frames and a line
/// is one stack: neither may appear inside a frame name. Spaces may (the
/// count is after the last one).
pub(crate) fn frame_name(function: &str) -> String {
    function.replace(';', ":").replace('\n', " ")
}

/// Writes `profile` as folded stacks.
pub fn write(out: &mut dyn Write, profile: &Profile) -> io::Result<()> {
    for line in lines(profile) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
