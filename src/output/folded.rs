//! Folded stacks: one `outer;inner;leaf count` line per distinct stack, the
//! format flamegraph.pl and inferno read.

use std::io::{self, Write};

use crate::sampler::Profile;

/// The folded lines of `profile`, sorted so that output is deterministic.
pub fn lines(profile: &Profile) -> Vec<String> {
    let mut lines: Vec<String> = profile
        .stacks
        .iter()
        .map(|(stack, count)| {
            // `;` separates frames and a space precedes the count: neither
            // may appear inside a frame name.
            let frames: Vec<String> = stack
                .iter()
                .map(|f| f.replace(';', ":").replace(' ', "_"))
                .collect();
            format!("{} {count}", frames.join(";"))
        })
        .collect();
    lines.sort();
    lines
}

/// Writes `profile` as folded stacks.
pub fn write(out: &mut dyn Write, profile: &Profile) -> io::Result<()> {
    for line in lines(profile) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
