//! Generates `src/layout/tables.rs`, gospy's built-in runtime struct layouts
//! for binaries without DWARF. Run it through `scripts/gen-layout-tables`,
//! which also formats the output.
//!
//! For every Go toolchain listed in `testdata/go-toolchains.txt` (installed
//! at `/usr/lib/go-1.NN/bin/go` by `scripts/install-go-toolchains`; a
//! missing one is an error, so the table never silently loses a version),
//! it builds a tiny program in GOPATH mode, reads the sizes and offsets of
//! everything in `gospy::layout::STRUCTS` from its DWARF with gospy's own
//! reader, and writes one `VersionTable` per minor version.
//!
//! Usage: `cargo run --example gen_layout_tables -- [--out FILE]`
//! (default `src/layout/tables.rs`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use gospy::binary::{buildinfo, dwarf, ElfImage};
use gospy::layout::{Layout, RawLayout};

/// The program whose DWARF is read: the runtime's types come with any Go
/// program; the channel only makes sure `runtime.hchan` is used.
const PROGRAM: &str = r#"package main

import "time"

var sink int

func main() {
	c := make(chan int, 1)
	go func() { c <- 1; time.Sleep(time.Hour) }()
	sink += <-c
	time.Sleep(time.Millisecond)
}
"#;

fn main() {
    if let Err(e) = run() {
        eprintln!("gen_layout_tables: {e}");
        std::process::exit(1);
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => repo_root().join("target"),
    }
}

/// The GOCACHE the tests use too (`GOSPY_GOCACHE` or `target/gocache`).
fn gocache_dir() -> PathBuf {
    match std::env::var_os("GOSPY_GOCACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("gocache"),
    }
}

fn run() -> Result<(), String> {
    let mut out = repo_root().join("src/layout/tables.rs");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a file")?),
            other => return Err(format!("unknown argument {other:?} (usage: [--out FILE])")),
        }
    }

    let mut tables = Vec::new();
    for version in listed_versions()? {
        let go = PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
        if !go.is_file() {
            return Err(format!(
                "Go {version} is missing ({} does not exist): run scripts/install-go-toolchains",
                go.display()
            ));
        }
        let bin = build(&version, &go)?;
        let image = ElfImage::open(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
        let go_version = buildinfo::read_go_version(&image)?;
        let minor = version
            .strip_prefix("1.")
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| format!("bad version {version:?} in testdata/go-toolchains.txt"))?;
        if (go_version.major, go_version.minor) != (1, minor) {
            return Err(format!(
                "{} built a {go_version} binary, not Go {version}",
                go.display()
            ));
        }
        let raw = dwarf::read_raw_layout_from_bytes(&image.data)
            .map_err(|e| format!("Go {version}: {e}"))?;
        // The table must be usable: every field gospy requires is there.
        Layout::from_source(&raw).map_err(|e| format!("Go {version}: {e}"))?;
        let toolchain = go_version
            .raw
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        eprintln!("gen_layout_tables: Go {version} ({toolchain}) read");
        tables.push((minor, toolchain, raw));
    }
    tables.sort_by_key(|(minor, _, _)| *minor);
    if let Some(w) = tables.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("Go 1.{} is listed twice", w[0].0));
    }
    if tables.is_empty() {
        return Err("no toolchains listed in testdata/go-toolchains.txt".into());
    }

    fs::write(&out, render(&tables)).map_err(|e| format!("write {}: {e}", out.display()))?;
    eprintln!("gen_layout_tables: wrote {}", out.display());
    Ok(())
}

/// Versions listed in testdata/go-toolchains.txt (`1.24`), in file order.
fn listed_versions() -> Result<Vec<String>, String> {
    let path = repo_root().join("testdata/go-toolchains.txt");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Builds PROGRAM with `go` (GOPATH mode, no network, the tests' GOCACHE),
/// into target/gen-layout-tables/go<version>/prog.
fn build(version: &str, go: &Path) -> Result<PathBuf, String> {
    let dir = target_dir()
        .join("gen-layout-tables")
        .join(format!("go{version}"));
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let src = dir.join("main.go");
    fs::write(&src, PROGRAM).map_err(|e| format!("write {}: {e}", src.display()))?;
    let gocache = gocache_dir();
    let gopath = target_dir().join("gopath");
    for d in [&gocache, &gopath] {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let bin = dir.join("prog");
    let output = Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg("main.go")
        .current_dir(&dir)
        .env("GOCACHE", &gocache)
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOENV", "off")
        .env("CGO_ENABLED", "0")
        // Default builds only: experiments can change runtime structs.
        .env_remove("GOEXPERIMENT")
        .env_remove("GOROOT")
        .env_remove("GOOS")
        .env_remove("GOARCH")
        .output()
        .map_err(|e| format!("run {}: {e}", go.display()))?;
    if !output.status.success() {
        return Err(format!(
            "Go {version}: go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(bin)
}

fn opt(v: Option<u64>) -> String {
    match v {
        Some(n) => format!("Some({n})"),
        None => "None".to_string(),
    }
}

/// The Rust source of `src/layout/tables.rs` (formatted by rustfmt later).
fn render(tables: &[(u32, String, RawLayout)]) -> String {
    let mut s = String::new();
    s.push_str(
        "//! Built-in runtime struct layouts, one per Go minor version, for binaries\n\
         //! without DWARF (chosen by `Layout::for_version`).\n\
         //!\n\
         //! GENERATED FILE, do not edit. `scripts/gen-layout-tables`\n\
         //! (examples/gen_layout_tables.rs) wrote it from the DWARF of a small\n\
         //! program built with each toolchain listed in testdata/go-toolchains.txt.\n\
         //! To regenerate (e.g. after adding a field to `layout::STRUCTS` or a\n\
         //! toolchain to that list): run scripts/install-go-toolchains, then\n\
         //! scripts/gen-layout-tables. tests/layout_tables.rs checks this file\n\
         //! against the DWARF of every listed toolchain.\n\n",
    );
    s.push_str("use super::{StructTable, VersionTable};\n\n");
    s.push_str("/// The tables, sorted by minor version.\n");
    s.push_str("pub const TABLES: &[VersionTable] = &[\n");
    for (minor, toolchain, raw) in tables {
        let _ = writeln!(
            s,
            "VersionTable {{ minor: {minor}, toolchain: {toolchain:?}, structs: &["
        );
        for st in &raw.structs {
            let _ = writeln!(
                s,
                "StructTable {{ name: {:?}, size: {}, fields: &[",
                st.name,
                opt(st.size)
            );
            for (name, off) in &st.fields {
                let _ = writeln!(s, "({name:?}, {}),", opt(*off));
            }
            s.push_str("]},\n");
        }
        s.push_str("]},\n");
    }
    s.push_str("];\n");
    s
}
