//! Checks the ELF, buildinfo and pclntab readers against Go's own tools and
//! runtime, for every Go toolchain installed under /usr/lib/go-1.NN.
//!
//! For each toolchain a small program (a method, a closure, an inlined
//! helper, a promoted-method wrapper) is built as a normal executable and as
//! a PIE. Then:
//! * the Go version from `.go.buildinfo` equals `go version`;
//! * every text symbol of `go tool nm` that the pclntab knows by name has
//!   the same entry address;
//! * `file_line` and `func_name` agree with `go tool addr2line` on a sample
//!   of PCs;
//! * inline expansion (`source_frames`) reproduces what the program's own
//!   `runtime.CallersFrames` printed when it ran;
//! * the table is also found by scanning when its section is hidden.
mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use gospy::binary::buildinfo::{read_go_version, read_mod_info};
use gospy::binary::pclntab::FUNC_FLAG_TOPFRAME;
use gospy::binary::{ElfImage, GoVersion, Pclntab, SourceFrame};
use gospy::layout::{Globals, Layout, ModuledataLayout};

const PROGRAM: &str = r#"package main

import (
	"fmt"
	"reflect"
	"runtime"
)

type Inner struct{ n int }

func (i Inner) Hello() int { return i.n + 1 }

type Outer struct{ Inner }

type Helloer interface{ Hello() int }

type T struct{ v int }

//go:noinline
func (t *T) Method(pcs []uintptr) int {
	return t.v + record(pcs)
}

// record is small enough to be inlined into (*T).Method.
func record(pcs []uintptr) int {
	return runtime.Callers(1, pcs)
}

//go:noinline
func work(pcs []uintptr) int {
	t := &T{v: 0}
	f := func() int { return t.Method(pcs) }
	return f()
}

var sink Helloer = Outer{Inner{1}}

func main() {
	pcs := make([]uintptr, 64)
	n := work(pcs)
	fmt.Printf("MAIN %x\n", reflect.ValueOf(main).Pointer())
	for _, pc := range pcs[:n] {
		fmt.Printf("PC %x\n", pc)
	}
	frames := runtime.CallersFrames(pcs[:n])
	for {
		fr, more := frames.Next()
		fmt.Printf("FRAME %s\t%s\t%d\n", fr.Function, fr.File, fr.Line)
		if !more {
			break
		}
	}
	fmt.Println("HELLO", sink.Hello())
}
"#;

struct Toolchain {
    minor: u32,
    go: PathBuf,
}

/// The toolchains listed in testdata/go-toolchains.txt (all must exist) and
/// any other /usr/lib/go-1.NN present.
fn toolchains() -> Vec<Toolchain> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = std::fs::read_to_string(root.join("testdata/go-toolchains.txt"))
        .expect("reading testdata/go-toolchains.txt");
    let mut minors: Vec<u32> = list
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|v| v.strip_prefix("1.")?.parse().ok())
        .collect();
    let mut missing = Vec::new();
    for &m in &minors {
        if !Path::new(&format!("/usr/lib/go-1.{m}/bin/go")).exists() {
            missing.push(format!("1.{m}"));
        }
    }
    assert!(
        missing.is_empty(),
        "Go toolchains {missing:?} listed in testdata/go-toolchains.txt are not installed; run scripts/install-go-toolchains"
    );
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(m) = name.strip_prefix("go-1.").and_then(|v| v.parse().ok()) {
                if e.path().join("bin/go").exists() && !minors.contains(&m) {
                    minors.push(m);
                }
            }
        }
    }
    minors.sort_unstable();
    minors
        .into_iter()
        .map(|minor| Toolchain {
            minor,
            go: PathBuf::from(format!("/usr/lib/go-1.{minor}/bin/go")),
        })
        .collect()
}

fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("binary_pclntab")
}

fn go_cmd(tc: &Toolchain) -> Command {
    let base = work_dir();
    let mut c = Command::new(&tc.go);
    c.env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", common::gocache_dir())
        .env("GOPATH", base.join("gopath"))
        .env("CGO_ENABLED", "0")
        .env_remove("GOROOT")
        .env_remove("GOOS")
        .env_remove("GOARCH");
    c
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// How a test binary is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// Default: internal linking, executable.
    Exe,
    /// `-buildmode=pie` (internal linking).
    Pie,
    /// `-ldflags=-s -w`: no symbols, no DWARF.
    ExeNoSyms,
    /// cgo-enabled external-link PIE, as distributions build (needs a C
    /// toolchain).
    ExtPie,
}

impl Variant {
    fn file_name(self) -> &'static str {
        match self {
            Variant::Exe => "prog",
            Variant::Pie => "prog-pie",
            Variant::ExeNoSyms => "prog-nosyms",
            Variant::ExtPie => "prog-extpie",
        }
    }
    fn is_pie(self) -> bool {
        matches!(self, Variant::Pie | Variant::ExtPie)
    }
}

fn have_c_toolchain() -> bool {
    ["gcc", "strip"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Builds the program; returns the source path and the binary path.
fn build(tc: &Toolchain, variant: Variant) -> (PathBuf, PathBuf) {
    let dir = work_dir().join(format!("go1.{}", tc.minor));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("main.go");
    std::fs::write(&src, PROGRAM).unwrap();
    let bin = dir.join(variant.file_name());
    let mut c = go_cmd(tc);
    c.current_dir(&dir).arg("build").arg("-o").arg(&bin);
    match variant {
        Variant::Exe => {}
        Variant::Pie => {
            c.arg("-buildmode=pie");
        }
        Variant::ExeNoSyms => {
            c.arg("-ldflags=-s -w");
        }
        Variant::ExtPie => {
            c.env("CGO_ENABLED", "1")
                .arg("-buildmode=pie")
                .arg("-ldflags=-linkmode=external");
        }
    }
    c.arg("main.go");
    run(c, &format!("go1.{} build ({variant:?})", tc.minor));
    (src, bin)
}

/// A copy of `bin` run through binutils `strip` (same addresses, no
/// `.symtab`, no DWARF).
fn strip_copy(bin: &Path) -> PathBuf {
    let out = bin.with_extension("stripped");
    let mut c = Command::new("strip");
    c.arg("-o").arg(&out).arg(bin);
    run(c, "strip");
    out
}

fn symbol_text_start(img: &ElfImage) -> Option<u64> {
    img.symbol("runtime.text").map(|s| s.addr)
}

fn symbol_gofunc(img: &ElfImage) -> Option<u64> {
    img.symbol("go:func.*")
        .or_else(|| img.symbol("go.func.*"))
        .map(|s| s.addr)
}

fn load(img: &Arc<ElfImage>, v: &GoVersion) -> Pclntab {
    Pclntab::load_with(
        Arc::clone(img),
        v,
        symbol_text_start(img),
        symbol_gofunc(img),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", img.path.display()))
}

#[derive(Default)]
struct Report {
    failures: Vec<String>,
    /// Failures of the binary being checked.
    current: usize,
}

impl Report {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if ok {
            return;
        }
        self.current += 1;
        if self.current <= 15 {
            self.failures.push(msg());
        } else if self.current == 16 {
            self.failures
                .push("  (more failures for this binary omitted)".into());
        }
    }
}

#[test]
fn pclntab_matches_go_tools_for_every_toolchain() {
    let tcs = toolchains();
    assert!(!tcs.is_empty(), "no Go toolchain under /usr/lib/go-1.*");
    let mut report = Report::default();
    for tc in &tcs {
        let go_version = run(
            {
                let mut c = go_cmd(tc);
                c.arg("version");
                c
            },
            "go version",
        );
        // "go version go1.24.4 linux/amd64"
        let expected = go_version
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        let mut full = None;
        for variant in [Variant::Exe, Variant::Pie, Variant::ExtPie] {
            // A missing C toolchain is a failure, not a skip: scripts/test
            // installs gcc (and with it binutils' strip).
            assert!(
                variant != Variant::ExtPie || have_c_toolchain(),
                "gcc and strip are needed for the external-link PIE checks: run scripts/test, which installs them"
            );
            let (src, bin) = build(tc, variant);
            report.current = 0;
            let tab = check_binary(tc, &src, &bin, &expected, variant, &mut report);
            if variant == Variant::Exe {
                full = Some(tab);
            } else if variant == Variant::ExtPie {
                // Same link without symbols: everything must be identical.
                let stripped = strip_copy(&bin);
                report.current = 0;
                check_stripped(tc, &tab, &stripped, true, &mut report);
            }
        }
        // A separate `-s -w` link: same functions, shifted addresses.
        let (_, bin) = build(tc, Variant::ExeNoSyms);
        report.current = 0;
        check_stripped(tc, full.as_ref().unwrap(), &bin, false, &mut report);
    }
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
}

fn check_binary(
    tc: &Toolchain,
    src: &Path,
    bin: &Path,
    expected: &str,
    variant: Variant,
    r: &mut Report,
) -> Pclntab {
    let pie = variant.is_pie();
    let tag = format!("go1.{} {variant:?}", tc.minor);
    let img = Arc::new(ElfImage::open(bin).unwrap());
    r.check(img.is_pie == pie, || {
        format!("{tag}: is_pie {}", img.is_pie)
    });
    r.check(img.go_build_id.is_some(), || {
        format!("{tag}: no Go build id")
    });
    let version = read_go_version(&img).unwrap();
    r.check(
        version.raw.split_whitespace().next() == Some(expected),
        || {
            format!(
                "{tag}: buildinfo version {:?}, go version says {expected}",
                version.raw
            )
        },
    );
    r.check((version.major, version.minor) == (1, tc.minor), || {
        format!("{tag}: parsed {version:?}")
    });
    // GOPATH-mode builds embed module info only from Go 1.18 on.
    let modinfo = read_mod_info(&img).unwrap_or_default();
    r.check(
        tc.minor < 18 || modinfo.contains("path\tcommand-line-arguments"),
        || format!("{tag}: modinfo {modinfo:?}"),
    );

    let tab = load(&img, &version);
    if tc.minor >= 18 {
        r.check(Some(tab.text_start()) == symbol_text_start(&img), || {
            format!("{tag}: text_start {:#x}", tab.text_start())
        });
    }
    check_load_via_layout(tc, &img, &version, &tab, &tag, r);

    // Names are unique enough; collect every entry per name anyway.
    let mut by_name: HashMap<&str, HashSet<u64>> = HashMap::new();
    for f in tab.funcs() {
        by_name
            .entry(tab.func_name(&f))
            .or_default()
            .insert(f.entry);
        // Structural invariants.
        r.check(f.entry < f.end, || {
            format!("{tag}: empty function {}", tab.func_name(&f))
        });
        r.check(tab.find_func(f.entry) == Some(f), || {
            format!("{tag}: find_func(entry) of {}", tab.func_name(&f))
        });
        r.check(tab.find_func(f.end - 1) == Some(f), || {
            format!("{tag}: find_func(end-1) of {}", tab.func_name(&f))
        });
        if let Some(d) = tab.sp_delta(&f, f.entry) {
            r.check(d == 0, || {
                format!("{tag}: sp_delta at entry of {} = {d}", tab.func_name(&f))
            });
        }
    }
    r.check(tab.find_func(tab.text_end()).is_none(), || {
        format!("{tag}: find_func(text_end)")
    });
    r.check(tab.find_func(0).is_none(), || {
        format!("{tag}: find_func(0)")
    });

    // go tool nm: every text symbol the pclntab knows has the same address.
    let nm = run(
        {
            let mut c = go_cmd(tc);
            c.arg("tool").arg("nm").arg(bin);
            c
        },
        "go tool nm",
    );
    let mut matched = 0;
    for line in nm.lines() {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        // External linking makes Go's symbols local ("t").
        if kind != "T" && kind != "t" {
            continue;
        }
        let name = it.collect::<Vec<_>>().join(" ");
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if let Some(entries) = by_name.get(name.as_str()) {
            matched += 1;
            r.check(entries.contains(&addr), || {
                format!("{tag}: {name}: nm says {addr:#x}, pclntab {entries:x?}")
            });
            if entries.len() == 1 {
                let f = tab.func_by_name(&name);
                r.check(f.map(|f| f.entry) == Some(addr), || {
                    format!("{tag}: func_by_name({name}) = {f:?}")
                });
            }
        }
    }
    r.check(matched > 500, || {
        format!("{tag}: only {matched} nm symbols matched")
    });

    // Specific functions.
    let get = |n: &str| tab.func_by_name(n);
    for n in [
        "main.main",
        "main.work",
        "main.(*T).Method",
        "runtime.goexit",
    ] {
        r.check(get(n).is_some(), || format!("{tag}: {n} not found"));
    }
    if let Some(goexit) = get("runtime.goexit") {
        r.check(tab.func_id(&goexit) != 0, || {
            format!("{tag}: goexit funcID 0")
        });
        if tc.minor >= 17 {
            r.check(tab.flag(&goexit) & FUNC_FLAG_TOPFRAME != 0, || {
                format!("{tag}: goexit flag {}", tab.flag(&goexit))
            });
        }
    }
    if let Some(m) = get("main.main") {
        r.check(!tab.is_wrapper(&m), || {
            format!("{tag}: main.main is a wrapper")
        });
        let want = PROGRAM
            .lines()
            .position(|l| l.starts_with("func main()"))
            .map(|i| i as u32 + 1);
        if tc.minor >= 20 {
            r.check(tab.start_line(&m) == want, || {
                format!(
                    "{tag}: start_line(main.main) {:?} want {want:?}",
                    tab.start_line(&m)
                )
            });
        } else {
            r.check(tab.start_line(&m).is_none(), || {
                format!("{tag}: start_line before 1.20")
            });
        }
        let mid = m.entry + (m.end - m.entry) / 2;
        let d = tab.sp_delta(&m, mid);
        r.check(d.is_some_and(|d| d > 0 && d % 8 == 0), || {
            format!("{tag}: sp_delta(main.main mid) {d:?}")
        });
    }
    // The promoted method called through an interface is an autogenerated
    // wrapper.
    match get("main.Outer.Hello").or_else(|| get("main.(*Outer).Hello")) {
        Some(w) => r.check(tab.is_wrapper(&w), || {
            format!(
                "{tag}: main.Outer.Hello funcID {} not wrapper ({})",
                tab.func_id(&w),
                tab.wrapper_func_id()
            )
        }),
        None => r.check(false, || format!("{tag}: no promoted-method wrapper")),
    }
    if let Some(d) = get("runtime.deferreturn") {
        r.check(tab.is_wrapper(&d), || {
            format!("{tag}: deferreturn not a wrapper")
        });
    }

    check_addr2line(tc, bin, pie, &tab, &tag, r);
    check_runtime_frames(bin, src, &tab, &tag, r);
    check_scan(&img, &version, &tab, &tag, r);
    tab
}

/// Loads the pclntab of a binary without symbols the way gospy must: from
/// the header's textStart (1.18–1.25) or `.go.module` (1.26+), and compares
/// it with the table of the binary with symbols. `same_link`: `stripped`
/// is a stripped copy of the same file (identical addresses); otherwise a
/// separate link of the same program.
fn check_stripped(
    tc: &Toolchain,
    full: &Pclntab,
    stripped: &Path,
    same_link: bool,
    r: &mut Report,
) {
    let tag = format!("go1.{} {}", tc.minor, stripped.display());
    let img = Arc::new(ElfImage::open(stripped).unwrap());
    r.check(!img.has_symbols(), || format!("{tag}: still has symbols"));
    let version = read_go_version(&img).unwrap();
    let tab = if tc.minor >= 26 {
        let Some((text, gofunc)) = moduledata_offsets(tc.minor) else {
            return;
        };
        let layout = Layout {
            moduledata: ModuledataLayout {
                text,
                gofunc: Some(gofunc),
                ..Default::default()
            },
            ..Default::default()
        };
        Pclntab::load(Arc::clone(&img), &version, &layout)
    } else {
        Pclntab::load_with(Arc::clone(&img), &version, None, None)
    };
    let tab = match tab {
        Ok(t) => t,
        Err(e) => {
            r.check(false, || format!("{tag}: {e}"));
            return;
        }
    };
    r.check(tab.len() == full.len(), || {
        format!("{tag}: {} functions, want {}", tab.len(), full.len())
    });
    if tc.minor >= 26 {
        r.check(tab.gofunc().is_some(), || {
            format!("{tag}: no gofunc from .go.module")
        });
        // With no layout at all the text start still comes from .go.module.
        let t = Pclntab::load(Arc::clone(&img), &version, &Layout::default());
        r.check(t.is_ok_and(|t| t.text_start() == tab.text_start()), || {
            format!("{tag}: load() with an empty layout")
        });
    }
    if same_link {
        r.check(tab.text_start() == full.text_start(), || {
            format!(
                "{tag}: text start {:#x}, want {:#x}",
                tab.text_start(),
                full.text_start()
            )
        });
        r.check(tab.table_addr() == full.table_addr(), || {
            format!("{tag}: table address")
        });
        if tc.minor >= 26 {
            r.check(tab.gofunc() == full.gofunc(), || {
                format!("{tag}: gofunc {:x?}", tab.gofunc())
            });
        }
        for (f, g) in full.funcs().zip(tab.funcs()) {
            r.check(
                f.entry == g.entry
                    && f.end == g.end
                    && full.func_name(&f) == tab.func_name(&g)
                    && full.file_line(&f, f.entry) == tab.file_line(&g, g.entry),
                || format!("{tag}: function {} differs", full.func_name(&f)),
            );
        }
    } else {
        // Per name: (size, position of the entry).
        type Shape<'a> = (u64, Option<(&'a str, u32)>);
        let mut theirs: HashMap<&str, Vec<Shape>> = HashMap::new();
        for g in tab.funcs() {
            theirs
                .entry(tab.func_name(&g))
                .or_default()
                .push((g.end - g.entry, tab.file_line(&g, g.entry)));
        }
        for f in full.funcs() {
            let want = (f.end - f.entry, full.file_line(&f, f.entry));
            let got = theirs.get(full.func_name(&f));
            r.check(got.is_some_and(|v| v.contains(&want)), || {
                format!("{tag}: {} {want:?} vs {got:?}", full.func_name(&f))
            });
        }
    }
    // Code addresses resolve to the right function.
    for name in ["main.main", "main.(*T).Method", "runtime.goexit"] {
        let f = tab.func_by_name(name);
        r.check(
            f.is_some_and(|f| tab.find_func(f.entry + (f.end - f.entry) / 2) == Some(f)),
            || format!("{tag}: {name} {f:?}"),
        );
    }
}

/// `runtime.moduledata` offsets of `text` and `gofunc`
/// (shared/docs/go-runtime/README.md §1.12), for the toolchains that have
/// been checked.
fn moduledata_offsets(minor: u32) -> Option<(u64, u64)> {
    match minor {
        19 => Some((176, 304)),
        21..=26 => Some((176, 320)),
        27 => Some((176, 344)),
        _ => None,
    }
}

/// `go tool addr2line` on a sample of PCs.
fn check_addr2line(
    tc: &Toolchain,
    bin: &Path,
    pie: bool,
    tab: &Pclntab,
    tag: &str,
    r: &mut Report,
) {
    let mut pcs = Vec::new();
    let step = (tab.len() / 300).max(1);
    for f in tab.funcs() {
        let name = tab.func_name(&f);
        if name.starts_with("main.") {
            let mut pc = f.entry;
            while pc < f.end {
                pcs.push(pc);
                pc += 7;
            }
        } else if f.index % step == 0 {
            pcs.push(f.entry);
            pcs.push(f.entry + (f.end - f.entry) / 2);
            pcs.push(f.end - 1);
        }
    }
    let mut child = go_cmd(tc)
        .arg("tool")
        .arg("addr2line")
        .arg(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("go tool addr2line");
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "addr2line: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    r.check(lines.len() == 2 * pcs.len(), || {
        format!(
            "{tag}: addr2line gave {} lines for {} pcs",
            lines.len(),
            pcs.len()
        )
    });
    // Older addr2line cannot symbolize PIEs at all (every answer is "?").
    if pie && lines.iter().step_by(2).all(|l| *l == "?") {
        return;
    }
    let mut compared = 0;
    for (i, pc) in pcs.iter().enumerate() {
        let (Some(func), Some(pos)) = (lines.get(2 * i), lines.get(2 * i + 1)) else {
            break;
        };
        let Some((file, line)) = pos.rsplit_once(':') else {
            continue;
        };
        let line: u32 = line.parse().unwrap_or(0);
        let f = tab.find_func(*pc);
        let ours_name = f.map(|f| tab.func_name(&f)).unwrap_or("?");
        r.check(ours_name == *func, || {
            format!("{tag}: {pc:#x}: func {ours_name} vs addr2line {func}")
        });
        let ours = f.and_then(|f| tab.file_line(&f, *pc));
        // gosym reports an unknown position as "?:0" or ":-1" (padding
        // after a function's last instruction).
        let theirs = (file != "?" && !file.is_empty()).then_some((file, line));
        r.check(ours == theirs, || {
            format!("{tag}: {pc:#x} ({func}): {ours:?} vs addr2line {theirs:?}")
        });
        compared += 1;
    }
    r.check(compared > 100, || {
        format!("{tag}: only {compared} addr2line comparisons")
    });
}

/// Runs the program and checks that inline expansion of each physical frame
/// reproduces `runtime.CallersFrames`.
fn check_runtime_frames(bin: &Path, src: &Path, tab: &Pclntab, tag: &str, r: &mut Report) {
    let out = run(Command::new(bin), "running the test program");
    let mut main_addr = None;
    let mut pcs = Vec::new();
    let mut frames = Vec::new();
    for line in out.lines() {
        if let Some(a) = line.strip_prefix("MAIN ") {
            main_addr = u64::from_str_radix(a, 16).ok();
        } else if let Some(a) = line.strip_prefix("PC ") {
            pcs.push(u64::from_str_radix(a, 16).unwrap());
        } else if let Some(f) = line.strip_prefix("FRAME ") {
            let parts: Vec<&str> = f.split('\t').collect();
            frames.push((
                parts[0].to_string(),
                parts[1].to_string(),
                parts[2].parse::<u32>().unwrap(),
            ));
        }
    }
    let main = tab.func_by_name("main.main").unwrap();
    let bias = main_addr.unwrap().wrapping_sub(main.entry);
    r.check(pcs.len() == frames.len(), || {
        format!("{tag}: {} pcs, {} frames", pcs.len(), frames.len())
    });
    let mut out: Vec<SourceFrame> = Vec::new();
    let mut i = 0;
    let mut saw_inlined = false;
    while i < pcs.len() && i < frames.len() {
        let mut pc = pcs[i].wrapping_sub(bias);
        let Some(f) = tab.find_func(pc) else {
            r.check(false, || {
                format!("{tag}: runtime pc {:#x} not found", pcs[i])
            });
            break;
        };
        // runtime.CallersFrames: `if pc > entry { pc-- }`.
        if pc > f.entry {
            pc -= 1;
        }
        out.clear();
        tab.source_frames(&f, pc, &mut out);
        for (k, sf) in out.iter().enumerate() {
            let Some(want) = frames.get(i + k) else {
                r.check(false, || {
                    format!("{tag}: more frames than the runtime at {i}+{k}: {sf:?}")
                });
                break;
            };
            saw_inlined |= sf.inlined;
            r.check(
                sf.function == want.0 && sf.file == want.1 && sf.line == want.2,
                || format!("{tag}: frame {}: ours {sf:?}, runtime {want:?}", i + k),
            );
            r.check(sf.inlined == (k + 1 < out.len()), || {
                format!("{tag}: inlined flag of {sf:?}")
            });
        }
        i += out.len();
    }
    r.check(saw_inlined, || format!("{tag}: no inlined frame seen"));
    let src = src.to_string_lossy();
    r.check(
        frames
            .first()
            .is_some_and(|f| f.0 == "main.record" && f.1 == src),
        || format!("{tag}: unexpected first runtime frame {:?}", frames.first()),
    );
}

/// Loads via `Pclntab::load` with a Layout holding the moduledata offsets
/// (from shared/docs/go-runtime/README.md §1.12) and checks the text start.
fn check_load_via_layout(
    tc: &Toolchain,
    img: &Arc<ElfImage>,
    v: &GoVersion,
    tab: &Pclntab,
    tag: &str,
    r: &mut Report,
) {
    let Some((text_off, gofunc_off)) = moduledata_offsets(tc.minor) else {
        return;
    };
    let mut layout = Layout {
        moduledata: ModuledataLayout {
            text: text_off,
            gofunc: Some(gofunc_off),
            ..Default::default()
        },
        globals: Globals {
            firstmoduledata: img.symbol("runtime.firstmoduledata").unwrap().addr,
            ..Default::default()
        },
        ..Default::default()
    };
    let t = Pclntab::load(Arc::clone(img), v, &layout).unwrap();
    r.check(t.text_start() == tab.text_start(), || {
        format!("{tag}: load() text start {:#x}", t.text_start())
    });
    r.check(t.gofunc() == symbol_gofunc(img), || {
        format!("{tag}: load() gofunc {:x?}", t.gofunc())
    });
    r.check(t.len() == tab.len(), || format!("{tag}: load() nfunc"));
    if tc.minor >= 26 {
        // Without the global's address: found through .go.module.
        layout.globals.firstmoduledata = 0;
        let t = Pclntab::load(Arc::clone(img), v, &layout).unwrap();
        r.check(t.text_start() == tab.text_start(), || {
            format!("{tag}: .go.module text start")
        });
    }
}

/// Hides the pclntab section's name so that the table must be found by
/// scanning, and checks the result is the same.
fn check_scan(img: &Arc<ElfImage>, v: &GoVersion, tab: &Pclntab, tag: &str, r: &mut Report) {
    let mut data = img.data.clone();
    let mut hidden = 0;
    for name in [&b".gopclntab\0"[..], &b".data.rel.ro.gopclntab\0"[..]] {
        let mut i = 0;
        while let Some(p) = data[i..].windows(name.len()).position(|w| w == name) {
            let at = i + p;
            // Only a string-table entry (preceded by a NUL).
            if at > 0 && data[at - 1] == 0 {
                data[at + name.len() - 9] = b'X'; // ".gopclntab" -> ".gopclXtab"
                hidden += 1;
            }
            i = at + 1;
        }
    }
    if hidden == 0 {
        // External-link PIEs have no section of their own: the table was
        // already found by scanning.
        r.check(img.is_pie && img.symbol("_cgo_init").is_some(), || {
            format!("{tag}: no pclntab section name to hide")
        });
        return;
    }
    let img2 = Arc::new(ElfImage::from_bytes(&img.path, data).unwrap());
    r.check(
        img2.section(".gopclntab").is_none() && img2.section(".data.rel.ro.gopclntab").is_none(),
        || format!("{tag}: section still visible"),
    );
    let t = Pclntab::load_with(img2, v, symbol_text_start(img), symbol_gofunc(img)).unwrap();
    r.check(t.table_addr() == tab.table_addr(), || {
        format!(
            "{tag}: scan found {:#x}, section {:#x}",
            t.table_addr(),
            tab.table_addr()
        )
    });
    r.check(
        t.len() == tab.len() && t.text_end() == tab.text_end(),
        || format!("{tag}: scan table differs"),
    );
}
