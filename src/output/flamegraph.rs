//! SVG flamegraphs, drawn by inferno from the folded stacks.

use std::io::{self, Write};

use crate::output::folded;
use crate::sampler::Profile;

/// Writes `profile` as an SVG flamegraph titled `title`.
pub fn write(out: &mut dyn Write, profile: &Profile, title: &str) -> io::Result<()> {
    let lines = folded::lines(profile);
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "µs".to_string();
    draw(out, &lines, &mut options)
}

/// Draws folded `lines` with `options`; `options.title` also titles the
/// placeholder written for no lines.
pub(crate) fn draw(
    out: &mut dyn Write,
    lines: &[String],
    options: &mut inferno::flamegraph::Options,
) -> io::Result<()> {
    if lines.is_empty() {
        // inferno refuses an empty profile; an empty SVG says the truth.
        return writeln!(
            out,
            r#"<?xml version="1.0" standalone="no"?><svg xmlns="http://www.w3.org/2000/svg" width="1200" height="60"><text x="10" y="30">{}: no samples</text></svg>"#,
            escape(&options.title)
        );
    }
    inferno::flamegraph::from_lines(options, lines.iter().map(String::as_str), out)
        .map_err(io::Error::other)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
