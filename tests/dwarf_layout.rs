//! `binary::dwarf` against every installed Go toolchain: builds a tiny
//! program (default and PIE), reads its layout from DWARF and compares it with
//! the reference dumps in `testdata/go-runtime/layouts/go1.NN.txt` (made by
//! scripts/dump-go-reference with readelf, sharing no code with gospy) and
//! with `go tool nm`.
mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use gospy::binary::dwarf;
use gospy::binary::ElfImage;
use gospy::layout::Layout;

const PROGRAM: &str = r#"package main

import "time"

var sink int

func main() {
	go func() { time.Sleep(time.Hour) }()
	time.Sleep(time.Millisecond)
	sink++
}
"#;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn layouts_dir() -> PathBuf {
    let dir = manifest_dir().join("testdata/go-runtime/layouts");
    assert!(
        dir.is_dir(),
        "reference layouts not found at {}",
        dir.display()
    );
    dir
}

/// Installed toolchains as ("1.NN", path to `go`), sorted by minor. Fails if
/// a toolchain listed in testdata/go-toolchains.txt is missing.
fn toolchains() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/usr/lib").expect("read /usr/lib").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name.strip_prefix("go-") else {
            continue;
        };
        let go = entry.path().join("bin/go");
        if version.starts_with("1.") && go.is_file() {
            found.push((version.to_string(), go));
        }
    }
    found.sort_by_key(|(v, _)| v[2..].parse::<u32>().unwrap_or(u32::MAX));

    let listed = fs::read_to_string(manifest_dir().join("testdata/go-toolchains.txt"))
        .expect("read testdata/go-toolchains.txt");
    let missing: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| !v.starts_with('#'))
        .filter(|v| !found.iter().any(|(f, _)| f == v))
        .collect();
    assert!(
        missing.is_empty(),
        "Go toolchains {missing:?} are missing; run scripts/install-go-toolchains"
    );
    assert!(!found.is_empty(), "no Go toolchain in /usr/lib/go-1.*");
    found
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Builds PROGRAM with `go` into target/tmp/dwarf_layout/go<version>/<out>.
fn build(version: &str, go: &Path, out: &str, extra: &[&str]) -> Result<PathBuf, String> {
    let dir = tmp_root().join("dwarf_layout").join(format!("go{version}"));
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let src = dir.join("main.go");
    if fs::read_to_string(&src).ok().as_deref() != Some(PROGRAM) {
        fs::write(&src, PROGRAM).map_err(|e| format!("write {}: {e}", src.display()))?;
    }
    let bin = dir.join(out);
    let output = Command::new(go)
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .args(extra)
        .arg("main.go")
        .current_dir(&dir)
        .env("GOCACHE", common::gocache_dir())
        .env("GOPATH", tmp_root().join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .output()
        .map_err(|e| format!("run {}: {e}", go.display()))?;
    if !output.status.success() {
        return Err(format!(
            "go{version} build {extra:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(bin)
}

/// One reference dump: struct name → (size, members), variable name → size.
#[derive(Default)]
struct Reference {
    structs: HashMap<String, (u64, Vec<(String, u64)>)>,
    vars: HashMap<String, (String, u64)>,
}

/// Parses `layouts/go1.NN.txt`:
/// `VAR <name> type=<type> size=<n>` and `STRUCT <name> size=<n>` followed
/// by member lines `<dec offset> <hex offset> <name> <type...> (<size>)`.
fn parse_reference(text: &str) -> Reference {
    let mut r = Reference::default();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VAR ") {
            current = None;
            let (name, rest) = rest.split_once(' ').expect("VAR line");
            let (ty, size) = rest.rsplit_once(" size=").expect("VAR size");
            let ty = ty.strip_prefix("type=").expect("VAR type");
            r.vars
                .insert(name.to_string(), (ty.to_string(), size.parse().unwrap()));
        } else if let Some(rest) = line.strip_prefix("STRUCT ") {
            let (name, size) = rest.split_once(" size=").expect("STRUCT line");
            r.structs
                .insert(name.to_string(), (size.trim().parse().unwrap(), Vec::new()));
            current = Some(name.to_string());
        } else if let Some(name) = &current {
            let mut words = line.split_whitespace();
            let (Some(off), Some(_hex), Some(member)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let off: u64 = off.parse().expect("member offset");
            r.structs
                .get_mut(name)
                .unwrap()
                .1
                .push((member.to_string(), off));
        }
    }
    r
}

fn load_reference(version: &str) -> Result<Reference, String> {
    let path = layouts_dir().join(format!("go{version}.txt"));
    let text = fs::read_to_string(&path).map_err(|e| {
        format!(
            "no reference layout for go{version} at {}: {e} \
             (run scripts/dump-go-reference {version})",
            path.display()
        )
    })?;
    Ok(parse_reference(&text))
}

/// The Layout the reference says we should get (except globals).
fn expected_layout(r: &Reference, version: &str) -> Result<Layout, String> {
    let s = |name: &str| {
        r.structs
            .get(name)
            .ok_or_else(|| format!("go{version} reference has no {name}"))
    };
    let (g_size, g) = s("runtime.g")?;
    let (_, gobuf) = s("runtime.gobuf")?;
    let (m_size, m) = s("runtime.m")?;
    let (_, md) = s("runtime.moduledata")?;
    let opt =
        |members: &[(String, u64)], f: &str| members.iter().find(|(n, _)| n == f).map(|&(_, o)| o);
    let req = |members: &[(String, u64)], s: &str, f: &str| {
        opt(members, f).ok_or_else(|| format!("go{version} reference has no {s}.{f}"))
    };
    let mut l = Layout::default();
    l.g.size = *g_size;
    l.g.stack = req(g, "g", "stack")?;
    l.g.m = req(g, "g", "m")?;
    l.g.sched = req(g, "g", "sched")?;
    l.g.syscallsp = req(g, "g", "syscallsp")?;
    l.g.syscallpc = req(g, "g", "syscallpc")?;
    l.g.syscallbp = opt(g, "syscallbp");
    l.g.atomicstatus = req(g, "g", "atomicstatus")?;
    l.g.goid = req(g, "g", "goid")?;
    l.g.waitsince = req(g, "g", "waitsince")?;
    l.g.waitreason = req(g, "g", "waitreason")?;
    l.g.lockedm = req(g, "g", "lockedm")?;
    l.g.parent_goid = opt(g, "parentGoid");
    l.g.gopc = req(g, "g", "gopc")?;
    l.g.startpc = req(g, "g", "startpc")?;
    l.g.labels = req(g, "g", "labels")?;
    l.g.tracking_seq = opt(g, "trackingSeq");
    l.gobuf.sp = req(gobuf, "gobuf", "sp")?;
    l.gobuf.pc = req(gobuf, "gobuf", "pc")?;
    l.gobuf.bp = req(gobuf, "gobuf", "bp")?;
    l.m.size = *m_size;
    l.m.g0 = req(m, "m", "g0")?;
    l.m.procid = req(m, "m", "procid")?;
    l.m.gsignal = req(m, "m", "gsignal")?;
    l.m.curg = req(m, "m", "curg")?;
    l.m.p = req(m, "m", "p")?;
    l.m.id = req(m, "m", "id")?;
    l.m.alllink = req(m, "m", "alllink")?;
    l.m.lockedg = req(m, "m", "lockedg")?;
    l.m.incgo = req(m, "m", "incgo")?;
    l.m.vdso_sp = req(m, "m", "vdsoSP")?;
    l.m.vdso_pc = req(m, "m", "vdsoPC")?;
    l.moduledata.pc_header = opt(md, "pcHeader");
    l.moduledata.text = req(md, "moduledata", "text")?;
    l.moduledata.etext = req(md, "moduledata", "etext")?;
    l.moduledata.gofunc = opt(md, "gofunc");
    Ok(l)
}

/// Copies the layouts of the structs `gospy summary` reads (p, schedt,
/// memstats, ...) from `from`: not in the scope of this test.
fn copy_summary_structs(to: &mut Layout, from: &Layout) {
    to.p = from.p.clone();
    to.sched = from.sched.clone();
    to.memstats = from.memstats.clone();
    to.heap_stats_delta = from.heap_stats_delta.clone();
    to.gc_controller = from.gc_controller.clone();
    to.hchan = from.hchan.clone();
    to.rtype = from.rtype.clone();
    to.sudog = from.sudog.clone();
    to.g.waiting = from.g.waiting;
    to.moduledata.types = from.moduledata.types;
}

/// `go tool nm` of a binary: symbol name → address.
fn nm(go: &Path, bin: &Path) -> Result<HashMap<String, u64>, String> {
    let output = Command::new(go)
        .args(["tool", "nm"])
        .arg(bin)
        .env("GOCACHE", common::gocache_dir())
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("go tool nm: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "go tool nm failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut syms = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [addr, _kind, name] = words[..] {
            if let Ok(addr) = u64::from_str_radix(addr, 16) {
                syms.insert(name.to_string(), addr);
            }
        }
    }
    Ok(syms)
}

/// Element count of a `[N]string` reference type, e.g. `[37]struct string`.
fn array_len(ty: &str) -> Option<u64> {
    ty.strip_prefix('[')?.split_once(']')?.0.parse().ok()
}

/// Turns `.symtab` into a PROGBITS section in a copy of `bin`, so the
/// globals can only come from DWARF.
fn hide_symtab(bin: &Path) -> Result<Vec<u8>, String> {
    let mut data = fs::read(bin).map_err(|e| e.to_string())?;
    let u16_at = |d: &[u8], o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let shentsize = u16_at(&data, 0x3a);
    let shnum = u16_at(&data, 0x3c);
    let mut hidden = 0;
    for i in 0..shnum {
        let ty = shoff + i * shentsize + 4;
        if data[ty..ty + 4] == 2u32.to_le_bytes() {
            data[ty..ty + 4].copy_from_slice(&1u32.to_le_bytes());
            hidden += 1;
        }
    }
    if hidden == 0 {
        return Err("no SHT_SYMTAB section to hide".into());
    }
    let file = object::File::parse(&*data).map_err(|e| e.to_string())?;
    if object::Object::symbols(&file).next().is_some() {
        return Err("symbols still visible after hiding .symtab".into());
    }
    Ok(data)
}

fn check_binary(version: &str, go: &Path, bin: &Path, r: &Reference) -> Result<(), String> {
    let image = ElfImage::open(bin).map_err(|e| format!("open: {e}"))?;
    let layout = dwarf::read_layout(&image).map_err(|e| format!("read_layout: {e}"))?;

    let mut expected = expected_layout(r, version)?;
    let syms = nm(go, bin)?;
    let sym = |n: &str| {
        syms.get(n)
            .copied()
            .ok_or_else(|| format!("go tool nm shows no {n}"))
    };
    let (wrs_type, _) = r
        .vars
        .get("runtime.waitReasonStrings")
        .ok_or("reference has no runtime.waitReasonStrings")?;
    expected.globals.allgs = sym("runtime.allgs")?;
    expected.globals.allglen = Some(sym("runtime.allglen")?);
    expected.globals.allm = sym("runtime.allm")?;
    expected.globals.firstmoduledata = sym("runtime.firstmoduledata")?;
    expected.globals.wait_reason_strings = Some((
        sym("runtime.waitReasonStrings")?,
        array_len(wrs_type).ok_or("bad waitReasonStrings type")?,
    ));
    expected.globals.runtime_init_time = Some(sym("runtime.runtimeInitTime")?);
    let optional = |n: &str| syms.get(n).copied();
    expected.globals.allp = optional("runtime.allp");
    expected.globals.sched = optional("runtime.sched");
    expected.globals.gomaxprocs = optional("runtime.gomaxprocs");
    expected.globals.ncpu = optional("runtime.ncpu").or_else(|| optional("runtime.numCPUStartup"));
    expected.globals.mheap = optional("runtime.mheap_");
    expected.globals.memstats = optional("runtime.memstats");
    expected.globals.gc_controller = optional("runtime.gcController");
    expected.globals.work = optional("runtime.work");
    expected.globals.profiles = gospy::layout::ProfileGlobals {
        mbuckets: optional("runtime.mbuckets"),
        bbuckets: optional("runtime.bbuckets"),
        xbuckets: optional("runtime.xbuckets"),
        mprof_cycle: optional("runtime.mProfCycle").or_else(|| optional("runtime.mProf")),
        mem_profile_rate: optional("runtime.MemProfileRate"),
        disable_memory_profiling: optional("runtime.disableMemoryProfiling"),
        block_profile_rate: optional("runtime.blockprofilerate"),
        mutex_profile_rate: optional("runtime.mutexprofilerate"),
        ticks: optional("runtime.ticks"),
    };
    // The reference files (readelf) predate m.createstack; tests/layout_tables.rs
    // checks it against the generated tables.
    expected.m.createstack = layout.m.createstack;
    // The structs read for `gospy summary` are compared with DWARF and with
    // testdata/go-runtime/offset-tables.md by tests/layout_tables.rs.
    copy_summary_structs(&mut expected, &layout);
    if layout != expected {
        return Err(format!(
            "layout differs from reference\n got: {layout:?}\nwant: {expected:?}"
        ));
    }

    for name in [
        "runtime.g",
        "runtime.gobuf",
        "runtime.m",
        "runtime.moduledata",
    ] {
        let got = dwarf::struct_layout(&image, name).map_err(|e| format!("{name}: {e}"))?;
        let want = &r.structs[name].1;
        if &got != want {
            return Err(format!(
                "struct_layout({name}) differs\n got: {got:?}\nwant: {want:?}"
            ));
        }
    }
    match dwarf::struct_layout(&image, "runtime.noSuchType") {
        Err(e) if e.contains("runtime.noSuchType") => {}
        other => return Err(format!("struct_layout(noSuchType) gave {other:?}")),
    }

    // Without .symtab the globals must come from DWARF, with the same result.
    let data = hide_symtab(bin)?;
    let from_dwarf = dwarf::read_layout_from_bytes(&data)
        .map_err(|e| format!("read_layout without .symtab: {e}"))?;
    if from_dwarf != expected {
        return Err(format!(
            "layout without .symtab differs\n got: {from_dwarf:?}\nwant: {expected:?}"
        ));
    }
    Ok(())
}

fn check_all(mode: &str, extra: &[&str]) {
    let mut failures = Vec::new();
    for (version, go) in toolchains() {
        let result = load_reference(&version).and_then(|r| {
            let bin = build(&version, &go, &format!("prog-{mode}"), extra)?;
            check_binary(&version, &go, &bin, &r)
        });
        if let Err(e) = result {
            failures.push(format!("go{version} ({mode}): {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn layout_matches_reference_default_build() {
    check_all("default", &[]);
}

#[test]
fn layout_matches_reference_pie_build() {
    check_all("pie", &["-buildmode=pie"]);
}

#[test]
fn stripped_binary_gives_clear_no_dwarf_error() {
    let mut failures = Vec::new();
    for (version, go) in toolchains() {
        let result = build(&version, &go, "prog-stripped", &["-ldflags=-s -w"]).and_then(|bin| {
            let image = ElfImage::open(&bin).map_err(|e| format!("open: {e}"))?;
            match dwarf::read_layout(&image) {
                Err(e) if e.starts_with("no DWARF debug info") && e.contains("-w") => Ok(()),
                other => Err(format!("expected the no-DWARF error, got {other:?}")),
            }
        });
        if let Err(e) = result {
            failures.push(format!("go{version}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(dwarf::read_layout_from_bytes(b"not an ELF file").is_err());
    assert!(dwarf::read_layout_from_bytes(&[]).is_err());
}

/// Corrupts bytes of an uncompressed `.debug_info`/`.debug_abbrev` many
/// times: every outcome must be Ok or Err, never a panic.
#[test]
fn corrupt_dwarf_never_panics() {
    use object::{Object, ObjectSection};
    let (version, go) = toolchains().pop().unwrap();
    let bin = build(
        &version,
        &go,
        "prog-plaindwarf",
        &["-ldflags=-compressdwarf=false"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let original = fs::read(&bin).unwrap();
    let ranges: Vec<(usize, usize)> = {
        let file = object::File::parse(&*original).unwrap();
        [".debug_info", ".debug_abbrev"]
            .iter()
            .map(|name| {
                let s = file
                    .section_by_name(name)
                    .expect("uncompressed DWARF section");
                let (off, len) = s.file_range().expect("file range");
                (off as usize, len as usize)
            })
            .collect()
    };
    assert!(dwarf::read_layout_from_bytes(&original).is_ok());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200 {
        let mut data = original.clone();
        let (off, len) = ranges[round % ranges.len()];
        for _ in 0..1 + next() % 16 {
            let at = off + (next() as usize) % len;
            data[at] = next() as u8;
        }
        let _ = dwarf::read_layout_from_bytes(&data);
        let _ = dwarf::struct_layout_from_bytes(&data, "runtime.g");
    }
}
