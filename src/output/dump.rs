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
        "Process {}: {}\nGo version: {}\nGoroutines: {}",
        header.pid, header.binary, header.go_version, header.total_goroutines
    )?;
    if goroutines.len() != header.total_goroutines {
        write!(out, " ({} shown)", goroutines.len())?;
    }
    if let Some(pause) = header.pause_seconds {
        write!(out, ", target paused for {:.2} ms", pause * 1e3)?;
    }
    writeln!(out)?;
    for g in goroutines {
        writeln!(out)?;
        write_goroutine(out, g, options)?;
    }
    Ok(())
}

fn write_goroutine(
    out: &mut dyn Write,
    g: &GoroutineReport,
    options: TextOptions,
) -> io::Result<()> {
    // The runtime's header (runtime/traceback.go goroutineheader), then what
    // it lacks: exact wait time, thread and labels.
    write!(out, "goroutine {} [", g.goid)?;
    write!(out, "{}", g.wait_reason.unwrap_or(g.status.name()))?;
    if let Some(secs) = g.wait_seconds {
        let minutes = (secs / 60.0).floor();
        if minutes >= 1.0 {
            write!(out, ", {minutes} minutes")?;
        }
        write!(out, ", waiting at least {}", human_seconds(secs))?;
    }
    if g.locked_to_thread {
        write!(out, ", locked to thread")?;
    }
    if let Some(tid) = g.thread_id {
        write!(out, ", thread {tid}")?;
    }
    if !g.labels.is_empty() {
        let labels: Vec<String> = g
            .labels
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        write!(out, ", labels: {{{}}}", labels.join(", "))?;
    }
    writeln!(out, "]:")?;

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
        if frame.inlined {
            writeln!(out, "{name}(...)\n\t{}:{}", frame.file, frame.line)?;
        } else {
            write!(out, "{name}()\n\t{}:{}", frame.file, frame.line)?;
            match frame.pc_offset {
                Some(off) if off > 0 => writeln!(out, " +{off:#x}")?,
                _ => writeln!(out)?,
            }
        }
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
            write!(out, "created by {}", c.function)?;
            if let Some(parent) = c.parent_goid {
                write!(out, " in goroutine {parent}")?;
            }
            write!(out, "\n\t{}:{}", c.file, c.line)?;
            if c.pc_offset > 0 {
                write!(out, " +{:#x}", c.pc_offset)?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn human_seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let total = secs.round() as u64;
        let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
        if h > 0 {
            format!("{h}h{m:02}m{s:02}s")
        } else {
            format!("{m}m{s:02}s")
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
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
