//! `gospy dump` output: text shaped like the Go runtime's own traceback, and
//! a JSON document with a stable schema (documented in README.md).

use std::io::{self, Write};

use serde::Serialize;

use crate::goroutines::GoroutineReport;

/// What the header of a dump says about the process.
#[derive(Debug, Clone)]
pub struct DumpHeader {
    pub pid: i32,
    pub binary: String,
    pub go_version: String,
    /// Where the runtime layout came from (`DWARF`, `built-in table ...`).
    pub layout_source: String,
    /// How long the target was stopped, if it was.
    pub pause_seconds: Option<f64>,
    /// Goroutines in the process, before filtering.
    pub total_goroutines: usize,
}

/// How to print frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Print runtime-internal frames the runtime's traceback hides.
    pub runtime_frames: bool,
}

/// Writes `goroutines` as text, like the runtime's traceback.
pub fn write_text(
    out: &mut dyn Write,
    header: &DumpHeader,
    goroutines: &[GoroutineReport],
    options: TextOptions,
) -> io::Result<()> {
    write!(
        out,
        "Process {}: {}\nGo version: {} (runtime layout: {})\nGoroutines: {}",
        header.pid, header.binary, header.go_version, header.layout_source, header.total_goroutines
    )?;
    if goroutines.len() != header.total_goroutines {
        write!(out, " ({} shown)", goroutines.len())?;
    }
    if let Some(pause) = header.pause_seconds {
        write!(out, ", target paused for {:.2} ms", pause * 1e3)?;
    }
    writeln!(out)?;
    // Goroutines are rendered into one buffer with plain byte copies and
    // handed on in large blocks: with 100k goroutines, `write!` piece by
    // piece through `dyn Write` cost more than building the reports.
    let mut buf = Vec::with_capacity(2 * OUTPUT_BLOCK);
    for g in goroutines {
        buf.push(b'\n');
        write_goroutine(&mut buf, g, options)?;
        if buf.len() >= OUTPUT_BLOCK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)
}

/// How much rendered text [`write_text`] collects before writing it out.
const OUTPUT_BLOCK: usize = 64 << 10;

fn write_goroutine(out: &mut Vec<u8>, g: &GoroutineReport, options: TextOptions) -> io::Result<()> {
    // The runtime's header (runtime/traceback.go goroutineheader), then what
    // it lacks: exact wait time, thread and labels.
    out.extend_from_slice(b"goroutine ");
    push_decimal(out, g.goid);
    out.extend_from_slice(b" [");
    out.extend_from_slice(g.wait_reason.unwrap_or(g.status.name()).as_bytes());
    if let Some(secs) = g.wait_seconds {
        let minutes = (secs / 60.0).floor();
        if minutes >= 1.0 {
            write!(out, ", {minutes} minutes")?;
        }
        out.extend_from_slice(b", waiting at least ");
        write_human_seconds(out, secs)?;
    }
    if g.locked_to_thread {
        out.extend_from_slice(b", locked to thread");
    }
    if let Some(tid) = g.thread_id {
        out.extend_from_slice(b", thread ");
        push_decimal(out, tid);
    }
    if !g.labels.is_empty() {
        let labels: Vec<String> = g
            .labels
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        write!(out, ", labels: {{{}}}", labels.join(", "))?;
    }
    out.extend_from_slice(b"]:\n");

    // C frames of a cgo call (--native), above the Go frames as in py-spy.
    for frame in &g.native_frames {
        out.extend_from_slice(frame.function.as_deref().unwrap_or("??").as_bytes());
        out.extend_from_slice(b" [C]\n\t");
        out.extend_from_slice(frame.module.as_bytes());
        if frame.function.is_some() && frame.offset > 0 {
            push_pc_offset(out, frame.offset);
        } else {
            out.extend_from_slice(b" pc=0x");
            push_digits(out, frame.pc, 16);
        }
        out.push(b'\n');
    }

    let mut printed = 0;
    for frame in g.frames.iter() {
        if frame.hidden && !options.runtime_frames {
            continue;
        }
        printed += 1;
        let name: &str = if &*frame.function == "runtime.gopanic" && !options.runtime_frames {
            "panic"
        } else {
            &frame.function
        };
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(if frame.inlined {
            b"(...)\n\t"
        } else {
            b"()\n\t"
        });
        push_position(out, &frame.file, frame.line);
        match frame.pc_offset {
            Some(off) if off > 0 && !frame.inlined => push_pc_offset(out, off),
            _ => {}
        }
        out.push(b'\n');
    }
    if g.truncated {
        writeln!(
            out,
            "...additional frames elided (stopped at {} frames)...",
            g.frames.len()
        )?;
    }
    if let Some(err) = &g.error {
        if printed == 0 {
            writeln!(out, "\t(stack unavailable: {err})")?;
        } else {
            writeln!(out, "\t(stack incomplete: {err})")?;
        }
    }
    if let Some(c) = &g.created_by {
        if !c.hidden || options.runtime_frames {
            out.extend_from_slice(b"created by ");
            out.extend_from_slice(c.function.as_bytes());
            if let Some(parent) = c.parent_goid {
                out.extend_from_slice(b" in goroutine ");
                push_decimal(out, parent);
            }
            out.extend_from_slice(b"\n\t");
            push_position(out, &c.file, c.line);
            if c.pc_offset > 0 {
                push_pc_offset(out, c.pc_offset);
            }
            out.push(b'\n');
        }
    }
    Ok(())
}

/// `file:line`.
fn push_position(out: &mut Vec<u8>, file: &str, line: u32) {
    out.extend_from_slice(file.as_bytes());
    out.push(b':');
    push_decimal(out, line.into());
}

/// ` +0x1c`: the runtime's pc offset, as `{:#x}` prints it.
fn push_pc_offset(out: &mut Vec<u8>, off: u64) {
    out.extend_from_slice(b" +0x");
    push_digits(out, off, 16);
}

/// `n` in decimal, as `{}` prints it.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    push_digits(out, n, 10);
}

/// `n` in `base` (at most 16), lowercase, without a prefix. Faster than
/// `write!` for the millions of numbers a large dump prints.
fn push_digits(out: &mut Vec<u8>, mut n: u64, base: u64) {
    let mut digits = [0u8; 64];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n % base) as usize];
        n /= base;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn write_human_seconds(out: &mut Vec<u8>, secs: f64) -> io::Result<()> {
    if secs < 60.0 {
        write!(out, "{secs:.1}s")
    } else {
        let total = secs.round() as u64;
        let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
        if h > 0 {
            write!(out, "{h}h{m:02}m{s:02}s")
        } else {
            write!(out, "{m}m{s:02}s")
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The JSON document of `gospy dump --json` (schema in README.md).
#[derive(Debug, Serialize)]
pub struct DumpDocument<'a> {
    pub pid: i32,
    pub binary: &'a str,
    pub go_version: &'a str,
    pub layout_source: &'a str,
    pub pause_seconds: Option<f64>,
    pub total_goroutines: usize,
    pub goroutines: Vec<JsonGoroutine<'a>>,
}

/// One goroutine in the JSON document.
#[derive(Debug, Serialize)]
pub struct JsonGoroutine<'a> {
    pub goid: u64,
    pub status: &'static str,
    pub wait_reason: Option<&'a str>,
    pub wait_seconds: Option<f64>,
    pub thread_id: Option<u64>,
    pub locked_to_thread: bool,
    pub system: bool,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub created_by: Option<JsonCreatedBy<'a>>,
    pub frames: Vec<JsonFrame<'a>>,
    pub truncated: bool,
    pub error: Option<&'a str>,
    /// `--native` only: C frames above the Go frames, innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub native_frames: Vec<JsonNativeFrame<'a>>,
}

/// One C frame (`--native`).
#[derive(Debug, Serialize)]
pub struct JsonNativeFrame<'a> {
    pub pc: u64,
    /// The symbol, if the module has one there.
    pub function: Option<&'a str>,
    /// pc minus the symbol's start.
    pub offset: u64,
    /// The mapped file.
    pub module: &'a str,
}

/// The `go` statement that created a goroutine.
#[derive(Debug, Serialize)]
pub struct JsonCreatedBy<'a> {
    pub function: &'a str,
    pub file: &'a str,
    pub line: u32,
    pub parent_goid: Option<u64>,
}

/// One source-level frame.
#[derive(Debug, Serialize)]
pub struct JsonFrame<'a> {
    pub function: &'a str,
    pub file: &'a str,
    pub line: u32,
    pub inlined: bool,
    pub hidden: bool,
}

/// Writes `goroutines` as one JSON document.
pub fn write_json(
    out: &mut dyn Write,
    header: &DumpHeader,
    goroutines: &[GoroutineReport],
) -> io::Result<()> {
    let doc = DumpDocument {
        pid: header.pid,
        binary: &header.binary,
        go_version: &header.go_version,
        layout_source: &header.layout_source,
        pause_seconds: header.pause_seconds,
        total_goroutines: header.total_goroutines,
        goroutines: goroutines
            .iter()
            .map(|g| JsonGoroutine {
                goid: g.goid,
                status: g.status.name(),
                wait_reason: g.wait_reason,
                wait_seconds: g.wait_seconds,
                thread_id: g.thread_id,
                locked_to_thread: g.locked_to_thread,
                system: g.system,
                labels: g
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
                created_by: g.created_by.as_ref().map(|c| JsonCreatedBy {
                    function: &c.function,
                    file: &c.file,
                    line: c.line,
                    parent_goid: c.parent_goid,
                }),
                frames: g
                    .frames
                    .iter()
                    .map(|f| JsonFrame {
                        function: &f.function,
                        file: &f.file,
                        line: f.line,
                        inlined: f.inlined,
                        hidden: f.hidden,
                    })
                    .collect(),
                truncated: g.truncated,
                error: g.error.as_deref(),
                native_frames: g
                    .native_frames
                    .iter()
                    .map(|f| JsonNativeFrame {
                        pc: f.pc,
                        function: f.function.as_deref(),
                        offset: f.offset,
                        module: &f.module,
                    })
                    .collect(),
            })
            .collect(),
    };
    // serde_json writes a few bytes at a time: buffering here keeps those
    // writes static calls instead of calls through `dyn Write`.
    let mut buffered = io::BufWriter::with_capacity(OUTPUT_BLOCK, &mut *out);
    serde_json::to_writer_pretty(&mut buffered, &doc).map_err(io::Error::other)?;
    buffered.flush()?;
    drop(buffered);
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_format() {
        for n in [0, 1, 9, 10, 0x1c, 255, 256, 4096, 123_456_789, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            push_pc_offset(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n} +{n:#x}"));
        }
    }
}
