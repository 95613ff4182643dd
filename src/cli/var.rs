//! `gospy var`: read package-level variables of a running Go program.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;

use crate::var::render::{self, JsonHeader};
use crate::var::{self, Options, Session, Variable};
use crate::Result;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sudo gospy var --pid 1234 --name main.counter\n  \
    sudo gospy var --pid 1234 --name 'main.*' --depth 2\n  \
    sudo gospy var --pid 1234 --name os.Args --json\n\n\
    Globals the program never uses are removed by the linker and cannot be read.")]
pub struct VarArgs {
    /// PID of the Go process to inspect.
    #[arg(short, long)]
    pid: i32,
    /// Variable to read: its full Go name (main.counter,
    /// net/http.DefaultClient), or a pattern where * matches any run of
    /// characters and ? one character (main.*). Repeat for several.
    #[arg(long = "name", value_name = "PKG.NAME", required = true)]
    names: Vec<String>,
    /// Write one JSON document instead of text (schema in README.md).
    #[arg(long)]
    json: bool,
    /// Read variables and types from this binary's DWARF instead of the
    /// target's executable: an unstripped build of the same program, for
    /// targets built with -ldflags=-s -w or stripped.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Follow pointers this many levels deep.
    #[arg(long, default_value_t = var::DEFAULT_DEPTH)]
    depth: usize,
    /// Show at most this many elements per array, slice, map or channel.
    #[arg(long, default_value_t = var::DEFAULT_MAX_ELEMENTS)]
    max_elements: usize,
    /// Show at most this many bytes per string.
    #[arg(long, default_value_t = var::DEFAULT_MAX_STRING)]
    max_string: usize,
    /// Stop the target while reading, so that all values are from the same
    /// instant (by default the target keeps running).
    #[arg(long)]
    pause: bool,
    /// Decode interface contents from the runtime type descriptors even
    /// where DWARF has the type (a check of that fallback, for tests).
    #[arg(long, hide = true)]
    runtime_types: bool,
}

pub fn run(args: VarArgs) -> Result<i32> {
    let session = Session::attach(args.pid, args.bin.as_deref())?;
    let mut inspector = session.inspector()?;
    inspector.set_runtime_types_only(args.runtime_types);
    let found = inspector.find(&args.names)?;
    let opts = Options {
        depth: args.depth,
        max_elements: args.max_elements,
        max_string: args.max_string,
    };
    let pause = if args.pause {
        Some(session.process().pause()?)
    } else {
        None
    };
    let read: Result<Vec<Variable>> = found.iter().map(|v| inspector.read(v, &opts)).collect();
    if let Some(p) = pause {
        p.resume();
    }
    let vars = read?;

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = if args.json {
        let header = JsonHeader {
            pid: session.process().pid(),
            binary: session.process().exe_display(),
            dwarf_binary: args.bin.as_ref().map(|p| p.display().to_string()),
            go_version: session.go_version().raw.clone(),
        };
        serde_json::to_writer(&mut out, &render::json_document(&header, &vars))
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        render::write_text(&mut out, &vars)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        // `gospy var ... | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(crate::Error::io("writing the variables", e)),
    }
    Ok(0)
}
