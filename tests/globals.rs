//! `binary::globals` against every Go toolchain: the runtime globals found
//! without symbols, by decoding runtime functions, must be exactly the
//! addresses the symbol table names.
//!
//! For each toolchain and each stripped mode (`-ldflags=-s -w`, PIE +
//! `strip`, external-linked cgo PIE + `strip`), the `parked` fixture is also
//! built in the matching unstripped mode. The true addresses come from the
//! unstripped binary's `.symtab`. `strip` moves no allocated section, which
//! is checked (every allocated section at the same address, same text
//! start); `-s -w` is recorded in the binary's build info, which shifts data
//! by a few bytes, so there an address is carried over as (section, offset)
//! after checking that the section has the same size in both binaries.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ::gospy::binary::buildinfo::read_go_version;
use ::gospy::binary::globals::{
    analyze_code, find_globals, find_moduledata, g_tls_offset, load_pclntab, RuntimeGlobals,
};
use ::gospy::binary::{ElfImage, GoVersion, Pclntab};
use common::{build_fixture, newest_toolchain, toolchains, BuildMode};

fn open(path: &Path) -> (Arc<ElfImage>, GoVersion) {
    let image =
        Arc::new(ElfImage::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let version = read_go_version(&image).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (image, version)
}

/// The link-time address of symbol `name` in an unstripped binary.
fn sym(image: &ElfImage, name: &str) -> Option<u64> {
    image.symbol(name).map(|s| s.addr)
}

/// Where g's TLS slot is by the ELF rules (Go's linker: -8 when there is
/// no `PT_TLS`; otherwise `runtime.tlsg - round_up(PT_TLS.memsz, align)`,
/// cmd/link/internal/ld/elf.go and the C linkers' variant II TLS layout).
fn true_tls_offset(image: &ElfImage) -> i64 {
    let d = &image.data;
    let u16_at = |o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap());
    let phoff = u64_at(32) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32::from_le_bytes(d[ph..ph + 4].try_into().unwrap()) == 7 {
            let (memsz, align) = (u64_at(ph + 40), u64_at(ph + 48).max(1));
            let block = memsz.div_ceil(align) * align;
            let tlsg = sym(image, "runtime.tlsg").unwrap_or(0);
            return tlsg as i64 - block as i64;
        }
    }
    -8
}

/// Carries an address of `from` over to `to`: the identical address when
/// `same_layout`, else the same offset in the section of the same name
/// (which must have the same size).
fn carry(from: &ElfImage, to: &ElfImage, addr: u64, same_layout: bool) -> Result<u64, String> {
    if same_layout {
        return Ok(addr);
    }
    // An end marker (runtime.etext) may sit just past its section.
    let s = from
        .sections
        .iter()
        .find(|s| s.alloc && s.size > 0 && addr >= s.addr && addr - s.addr < s.size)
        .or_else(|| {
            from.sections
                .iter()
                .find(|s| s.alloc && s.size > 0 && addr == s.addr + s.size)
        })
        .ok_or_else(|| format!("{addr:#x} is in no section"))?;
    let t = to
        .section(&s.name)
        .ok_or_else(|| format!("no section {} in the stripped binary", s.name))?;
    if t.size != s.size {
        return Err(format!(
            "section {} has size {:#x} unstripped but {:#x} stripped",
            s.name, s.size, t.size
        ));
    }
    Ok(t.addr + (addr - s.addr))
}

/// What the symbol table says, as (field, address) in the shape of
/// [`RuntimeGlobals`]. Fields the toolchain does not have are absent.
fn truth(image: &ElfImage, version: &GoVersion) -> BTreeMap<&'static str, u64> {
    let mut t = BTreeMap::new();
    let mut put = |k: &'static str, name: &str| {
        if let Some(a) = sym(image, name) {
            t.insert(k, a);
        }
    };
    put("allgs", "runtime.allgs");
    put("allglen", "runtime.allglen");
    put("allgptr", "runtime.allgptr");
    put("allm", "runtime.allm");
    put("moduledata", "runtime.firstmoduledata");
    put("text", "runtime.text");
    put("etext", "runtime.etext");
    put("allp", "runtime.allp");
    put("sched", "runtime.sched");
    put("gomaxprocs", "runtime.gomaxprocs");
    put("ncpu", "runtime.ncpu");
    put("ncpu", "runtime.numCPUStartup");
    put("mheap", "runtime.mheap_");
    put("memstats", "runtime.memstats");
    put("gc_controller", "runtime.gcController");
    put("work", "runtime.work");
    put("runtime_init_time", "runtime.runtimeInitTime");
    put("wait_reason_strings", "runtime.waitReasonStrings");
    put("mbuckets", "runtime.mbuckets");
    put("bbuckets", "runtime.bbuckets");
    put("xbuckets", "runtime.xbuckets");
    put("mprof_cycle", "runtime.mProf");
    put("mprof_cycle", "runtime.mProfCycle");
    put("mem_profile_rate", "runtime.MemProfileRate");
    put("disable_memory_profiling", "runtime.disableMemoryProfiling");
    put("block_profile_rate", "runtime.blockprofilerate");
    put("mutex_profile_rate", "runtime.mutexprofilerate");
    put("ticks", "runtime.ticks");
    if version.at_least(1, 18) {
        put("gofunc", "go.func.*");
        put("gofunc", "go:func.*");
    }
    t
}

/// The same fields from [`RuntimeGlobals`].
fn found(g: &RuntimeGlobals) -> BTreeMap<&'static str, u64> {
    let mut f = BTreeMap::new();
    let mut put = |k: &'static str, v: Option<u64>| {
        if let Some(a) = v {
            f.insert(k, a);
        }
    };
    put("allgs", Some(g.allgs));
    put("allglen", g.allglen);
    put("allgptr", g.allgptr);
    put("allm", Some(g.allm));
    put("moduledata", Some(g.moduledata.addr));
    put("text", Some(g.moduledata.text));
    put("etext", Some(g.moduledata.etext));
    put("allp", g.allp);
    put("sched", g.sched);
    put("gomaxprocs", g.gomaxprocs);
    put("ncpu", g.ncpu);
    put("mheap", g.mheap);
    put("memstats", g.memstats);
    put("gc_controller", g.gc_controller);
    put("work", g.work);
    put("runtime_init_time", g.runtime_init_time);
    put("wait_reason_strings", g.wait_reason_strings.map(|w| w.0));
    put("gofunc", g.moduledata.gofunc);
    let p = &g.profiles;
    put("mbuckets", p.mbuckets);
    put("bbuckets", p.bbuckets);
    put("xbuckets", p.xbuckets);
    put("mprof_cycle", p.mprof_cycle);
    put("mem_profile_rate", p.mem_profile_rate);
    put("disable_memory_profiling", p.disable_memory_profiling);
    put("block_profile_rate", p.block_profile_rate);
    put("mutex_profile_rate", p.mutex_profile_rate);
    put("ticks", p.ticks);
    f
}

/// Fields that may legitimately be missing for a version: `gofunc` where
/// moduledata's layout was never dumped (1.18, 1.20; not tested).
fn optional_for(field: &str, version: &GoVersion) -> bool {
    field == "gofunc" && !matches!(version.minor, 19 | 21..=27)
}

/// Compares found against true addresses; returns the differences.
fn compare(
    label: &str,
    version: &GoVersion,
    truth: &BTreeMap<&'static str, u64>,
    found: &BTreeMap<&'static str, u64>,
    notes: &[String],
) -> Vec<String> {
    let mut bad = Vec::new();
    for (k, &want) in truth {
        match found.get(k) {
            Some(&got) if got == want => {}
            Some(&got) => bad.push(format!(
                "{label}: {k} found at {got:#x}, symbol at {want:#x}"
            )),
            None if optional_for(k, version) => {}
            None => bad.push(format!(
                "{label}: {k} not found (symbol at {want:#x}); notes: {notes:?}"
            )),
        }
    }
    for (k, got) in found {
        if !truth.contains_key(k) {
            bad.push(format!(
                "{label}: {k} found at {got:#x} but the binary has no such symbol"
            ));
        }
    }
    bad
}

/// `gofunc` is the base of inline trees: with it, the stripped table must
/// expand inlined calls exactly as the unstripped twin (loaded from its
/// symbols) does, at every instruction of the fixture's `main.` functions.
fn same_inline_frames(label: &str, stripped: &Pclntab, full: &Arc<ElfImage>) -> Vec<String> {
    let version = read_go_version(full).unwrap();
    let layout = ::gospy::binary::dwarf::read_layout(full).unwrap();
    let twin = Pclntab::load(Arc::clone(full), &version, &layout).unwrap();
    let mut bad = Vec::new();
    let mut inlined = 0;
    for f in twin
        .funcs()
        .filter(|f| twin.func_name(f).starts_with("main."))
    {
        for pc in f.entry..f.end {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            twin.source_frames(&f, pc, &mut a);
            match stripped.find_func(pc) {
                Some(sf) => stripped.source_frames(&sf, pc, &mut b),
                None => bad.push(format!("{label}: no function at {pc:#x}")),
            }
            if a != b {
                bad.push(format!("{label}: frames at {pc:#x}: {a:?} vs {b:?}"));
                return bad;
            }
            inlined += a.iter().filter(|fr| fr.inlined).count();
        }
    }
    if inlined == 0 {
        bad.push(format!(
            "{label}: no inlined frame in main.*: the gofunc check is vacuous"
        ));
    }
    bad
}

/// Builds `fixture` with `tc` in the stripped `mode` and in its unstripped
/// twin: `find_globals` on the stripped binary must give exactly the twin's
/// symbol addresses, and so must it on the twin itself. Problems go to
/// `bad`, a line of timings and notes to `report`.
fn check_stripped(
    fixture: &str,
    tc: &common::toolchain::Toolchain,
    mode: BuildMode,
    bad: &mut Vec<String>,
    report: &mut Vec<String>,
) {
    let t0 = Instant::now();
    let stripped_bin = build_fixture(fixture, tc, mode);
    let full_bin = build_fixture(fixture, tc, mode.unstripped());
    let built = t0.elapsed();
    let label = format!("{fixture}, Go {} {mode}", tc.version);
    let (stripped, version) = open(&stripped_bin);
    let (full, full_version) = open(&full_bin);
    assert_eq!(version, full_version, "{label}");
    assert!(
        !stripped.has_symbols(),
        "{label}: the stripped binary has symbols"
    );
    assert!(
        full.has_symbols(),
        "{label}: the unstripped twin has no symbols"
    );
    assert!(
        stripped.section(".debug_info").is_none() && stripped.section(".zdebug_info").is_none(),
        "{label}: the stripped binary has DWARF"
    );

    // strip moves nothing; -s -w shifts data (build info differs).
    let same_layout = mode != BuildMode::Stripped;
    if same_layout {
        for s in full.sections.iter().filter(|s| s.alloc) {
            let t = stripped.section(&s.name);
            assert_eq!(
                t.map(|t| (t.addr, t.size)),
                Some((s.addr, s.size)),
                "{label}: section {} moved when stripping",
                s.name
            );
        }
    }

    let t1 = Instant::now();
    let loaded = load_pclntab(Arc::clone(&stripped), &version);
    let (md, tab) = match loaded {
        Ok(x) => x,
        Err(e) => {
            bad.push(format!("{label}: loading the pclntab without symbols: {e}"));
            return;
        }
    };
    let text = sym(&full, "runtime.text").expect("runtime.text");
    let text = carry(&full, &stripped, text, same_layout).unwrap();
    assert_eq!(md.text, text, "{label}: text start");
    let g = match find_globals(&stripped, &tab, &version) {
        Ok(g) => g,
        Err(e) => {
            bad.push(format!("{label}: find_globals: {e}"));
            return;
        }
    };
    let elapsed = t1.elapsed();
    let mut want = BTreeMap::new();
    let mut found_here = found(&g);
    for (k, a) in truth(&full, &version) {
        match carry(&full, &stripped, a, same_layout) {
            Ok(a) => {
                want.insert(k, a);
            }
            // go:func.* is in .rodata, which the build info makes
            // longer under -s -w: check it by its use instead.
            Err(_) if k == "gofunc" => {
                found_here.remove("gofunc");
                bad.extend(same_inline_frames(&label, &tab, &full));
            }
            Err(e) => bad.push(format!("{label}: {k}: {e}")),
        }
    }
    bad.extend(compare(&label, &version, &want, &found_here, &g.notes));
    if let Some(size) = full.symbol("runtime.waitReasonStrings").map(|s| s.size) {
        if g.wait_reason_strings.map(|w| w.1) != Some(size / 16) {
            bad.push(format!(
                "{label}: waitReasonStrings length {:?}, symbol size says {}",
                g.wait_reason_strings,
                size / 16
            ));
        }
    }
    let tls = true_tls_offset(&full);
    let got = g_tls_offset(&stripped, &tab);
    if got != Some(tls) {
        bad.push(format!("{label}: g TLS offset {got:?}, expected {tls}"));
    }

    // The unstripped twin, through the same code.
    let flabel = format!("{fixture}, Go {} {}", tc.version, mode.unstripped());
    match load_pclntab(Arc::clone(&full), &version)
        .and_then(|(_, tab)| Ok((find_globals(&full, &tab, &version)?, tab)))
    {
        Ok((fg, ftab)) => {
            bad.extend(compare(
                &flabel,
                &version,
                &truth(&full, &version),
                &found(&fg),
                &fg.notes,
            ));
            if g_tls_offset(&full, &ftab) != Some(tls) {
                bad.push(format!("{flabel}: g TLS offset differs"));
            }
        }
        Err(e) => bad.push(format!("{flabel}: {e}")),
    }
    report.push(format!(
        "{label}: built in {:.1?}, globals found in {:.1?}{}",
        built,
        elapsed,
        if g.notes.is_empty() {
            String::new()
        } else {
            format!(" (notes: {:?})", g.notes)
        }
    ));
}

/// Every stripped mode of every toolchain: `find_globals` on the stripped
/// binary gives exactly the unstripped twin's symbol addresses, and so does
/// it on the twin itself.
#[test]
fn stripped_binaries_give_the_symbol_addresses() {
    let mut bad = Vec::new();
    let mut report = Vec::new();
    for tc in toolchains() {
        for mode in BuildMode::STRIPPED {
            check_stripped("parked", &tc, mode, &mut bad, &mut report);
        }
    }
    for r in &report {
        eprintln!("{r}");
    }
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The profile globals in a program that links the block and mutex
/// profiles and CPU tick rates (`runtime/pprof` with `pprof.Lookup`: the
/// `heapprof` fixture): there `runtime.ticks` exists in every version
/// (before Go 1.22 only `tickspersecond` uses it, which the `parked`
/// fixture does not link) and `bbuckets`/`xbuckets` are cross-checked in
/// `BlockProfile`/`MutexProfile`. Stripped and PIE-stripped builds of every
/// toolchain. The fixture is `testdata/fixtures/heapprof` (the memory
/// profile tests' own).
#[test]
fn profile_globals_where_every_profile_is_linked() {
    let mut bad = Vec::new();
    let mut report = Vec::new();
    for tc in toolchains() {
        for mode in [BuildMode::Stripped, BuildMode::PieStripped] {
            // Not vacuous: the twin has the symbols the parked fixture lacks.
            let (full, version) = open(&build_fixture("heapprof", &tc, mode.unstripped()));
            let t = truth(&full, &version);
            for k in [
                "ticks",
                "bbuckets",
                "xbuckets",
                "block_profile_rate",
                "mutex_profile_rate",
            ] {
                if !t.contains_key(k) {
                    bad.push(format!(
                        "heapprof, Go {} {mode}: no symbol for {k}",
                        tc.version
                    ));
                }
            }
            check_stripped("heapprof", &tc, mode, &mut bad, &mut report);
        }
    }
    for r in &report {
        eprintln!("{r}");
    }
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The default, PIE and cgo builds with symbols (the modes the rest of the
/// suite runs) agree with their own symbol tables too, when the pclntab is
/// loaded the usual way.
#[test]
fn unstripped_default_modes_agree_with_symbols() {
    let mut bad = Vec::new();
    for tc in toolchains() {
        for mode in BuildMode::ALL {
            let label = format!("Go {} {mode}", tc.version);
            let (image, version) = open(&build_fixture("parked", &tc, mode));
            let layout = ::gospy::binary::dwarf::read_layout(&image).unwrap();
            let tab = Pclntab::load(Arc::clone(&image), &version, &layout).unwrap();
            match find_globals(&image, &tab, &version) {
                Ok(g) => {
                    bad.extend(compare(
                        &label,
                        &version,
                        &truth(&image, &version),
                        &found(&g),
                        &g.notes,
                    ));
                    assert_eq!(g.to_layout_globals().allgs, layout.globals.allgs);
                    assert_eq!(g.to_layout_globals(), layout.globals, "{label}");
                }
                Err(e) => bad.push(format!("{label}: {e}")),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Renames `runtime.NAME` in the pclntab's name table (same length), so the
/// function disappears for lookups by name.
fn hide_function(data: &mut [u8], name: &str) {
    let needle: Vec<u8> = [name.as_bytes(), b"\0"].concat();
    let pos = data
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("{name} not in the file"));
    // "runtime.x" -> "runtime.X": still a valid, different name.
    let i = pos + "runtime.".len();
    data[i] = data[i].to_ascii_uppercase();
}

/// A binary whose `runtime.allgadd` (or `mcommoninit`) cannot be found
/// gives an error naming it, not a panic or a wrong answer.
#[test]
fn missing_function_is_a_clear_error() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::Stripped);
    let (image, version) = open(&bin);
    for name in ["runtime.allgadd", "runtime.mcommoninit", "runtime.mexit"] {
        let mut data = image.data.clone();
        hide_function(&mut data, name);
        let img = Arc::new(ElfImage::from_bytes(&bin, data).unwrap());
        let (_, tab) = load_pclntab(Arc::clone(&img), &version).unwrap();
        assert!(tab.func_by_name(name).is_none());
        let err = find_globals(&img, &tab, &version).unwrap_err();
        assert!(
            err.contains(name) && err.contains("not found"),
            "{name}: {err}"
        );
    }
    // An optional global's function missing only drops that global.
    let mut data = image.data.clone();
    hide_function(&mut data, "runtime.retake");
    let img = Arc::new(ElfImage::from_bytes(&bin, data).unwrap());
    let (_, tab) = load_pclntab(Arc::clone(&img), &version).unwrap();
    let g = find_globals(&img, &tab, &version).unwrap();
    assert_eq!(g.allp, None);
    assert!(
        g.notes.iter().any(|n| n.contains("runtime.retake")),
        "{:?}",
        g.notes
    );
    assert!(g.sched.is_some() && g.mheap.is_some());
    // Without runtime.stkbucket the three bucket lists are unknown, the
    // rest of the profile globals are not.
    let mut data = image.data.clone();
    hide_function(&mut data, "runtime.stkbucket");
    let img = Arc::new(ElfImage::from_bytes(&bin, data).unwrap());
    let (_, tab) = load_pclntab(Arc::clone(&img), &version).unwrap();
    let g = find_globals(&img, &tab, &version).unwrap();
    let p = g.profiles;
    assert_eq!((p.mbuckets, p.bbuckets, p.xbuckets), (None, None, None));
    assert!(
        g.notes.iter().any(|n| n.contains("runtime.stkbucket")),
        "{:?}",
        g.notes
    );
    assert!(p.mprof_cycle.is_some() && p.mem_profile_rate.is_some() && p.ticks.is_some());
}

/// Deterministic pseudo-random bytes.
fn noise(seed: &mut u64, out: &mut [u8]) {
    for b in out {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *b = *seed as u8;
    }
}

/// Garbage in the decoded functions, truncated functions and truncated
/// files: errors or (for the optional globals) `None`, never a panic, and
/// never an address outside writable data.
#[test]
fn garbage_code_never_panics() {
    let tc = newest_toolchain();
    let bin = build_fixture("parked", &tc, BuildMode::PieStripped);
    let (image, version) = open(&bin);
    let (_, tab) = load_pclntab(Arc::clone(&image), &version).unwrap();
    let funcs = [
        "runtime.allgadd",
        "runtime.forEachG",
        "runtime.mcommoninit",
        "runtime.mexit",
        "runtime.newproc1",
        "runtime.retake",
        "runtime.stopTheWorldWithSema",
        "runtime.osinit",
        "runtime.stackpoolalloc",
        "runtime.gcStart",
        "runtime.putfull",
        "runtime.(*mheap).grow",
        "runtime.main",
        "runtime.waitReason.String",
        "runtime.stackcheck",
        "runtime.stkbucket",
        "runtime.mProf_Flush",
        "runtime.allocmcache",
        "runtime.profilealloc",
        "runtime.schedinit",
        "runtime.blockevent",
        "runtime.mutexevent",
        "runtime.(*ticksType).init",
    ];
    let ranges: Vec<(usize, usize)> = funcs
        .iter()
        .filter_map(|n| tab.func_by_name(n))
        .map(|f| {
            let off = image.vaddr_to_offset(f.entry).unwrap() as usize;
            (off, (f.end - f.entry) as usize)
        })
        .collect();
    assert_eq!(ranges.len(), funcs.len());
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..24 {
        let mut data = image.data.clone();
        for &(off, len) in &ranges {
            match round % 3 {
                // All noise.
                0 => noise(&mut seed, &mut data[off..off + len]),
                // The first half kept, the rest noise: truncated mid-way.
                1 => noise(&mut seed, &mut data[off + len / 2..off + len]),
                // A few flipped bytes.
                _ => {
                    for _ in 0..8 {
                        let mut r = [0u8; 8];
                        noise(&mut seed, &mut r);
                        let i = off + (u64::from_le_bytes(r) as usize) % len;
                        data[i] ^= r[0] | 1;
                    }
                }
            }
        }
        let img = ElfImage::from_bytes(&bin, data).unwrap();
        let g = find_globals(&img, &tab, &version);
        if let Ok(g) = g {
            for (k, a) in found(&g) {
                if !matches!(k, "text" | "etext" | "gofunc") {
                    assert!(
                        img.segment_containing(a).is_some_and(|s| s.is_write()),
                        "round {round}: {k} at {a:#x} outside writable data"
                    );
                }
            }
        }
        let _ = g_tls_offset(&img, &tab);
    }
    // Truncated files: the moduledata scan and everything after it.
    for cut in [
        0usize,
        64,
        4096,
        image.data.len() / 3,
        image.data.len() / 2,
        image.data.len() - 1,
    ] {
        if let Ok(img) = ElfImage::from_bytes(&bin, image.data[..cut].to_vec()) {
            let img = Arc::new(img);
            let _ = find_moduledata(&img, &version, None);
            if let Ok((_, t)) = load_pclntab(Arc::clone(&img), &version) {
                let _ = find_globals(&img, &t, &version);
            }
            let _ = find_globals(&img, &tab, &version);
            let _ = g_tls_offset(&img, &tab);
        }
    }
    // Raw decoder input: every offset into a real function, and noise.
    let f = tab.func_by_name("runtime.mcommoninit").unwrap();
    let code = image.bytes_at(f.entry, (f.end - f.entry) as usize).unwrap();
    for start in 0..code.len().min(64) {
        let _ = analyze_code(&code[start..], f.entry + start as u64);
    }
    let mut buf = vec![0u8; 1 << 16];
    noise(&mut seed, &mut buf);
    let r = analyze_code(&buf, 0);
    assert!(r.instructions <= buf.len());
}
