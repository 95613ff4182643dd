//! The binary readers against damaged copies of real Go binaries: DWARF,
//! symbols, pclntab and buildinfo bytes flipped, set to 0xff or zero, or cut
//! short. Every case must end, within a time limit, in a layout (possibly
//! the built-in table's) or a clear error: no panic, no hang, and bounded
//! memory for the whole run.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ::gospy::binary::{buildinfo, dwarf, Binary, ElfImage, SourceFrame};
use common::corrupt::{damage, section_range, Damage, Rng};
use common::*;

/// The sections gospy reads from the file, as alternatives by Go version.
const SECTIONS: &[&[&str]] = &[
    &[".debug_info", ".zdebug_info"],
    &[".debug_abbrev", ".zdebug_abbrev"],
    &[".debug_line", ".zdebug_line"],
    &[".symtab"],
    &[".strtab"],
    &[".gopclntab", ".data.rel.ro.gopclntab"],
    &[".go.buildinfo"],
    &[".note.go.buildid"],
];

const DAMAGES: &[Damage] = &[
    Damage::FlipBytes(1),
    Damage::FlipBytes(8),
    Damage::FlipBytes(200),
    Damage::Ones(8),
    Damage::Ones(64),
    Damage::Zeros(16),
    Damage::ZeroTail,
];

/// Per case: one open can take a while on a loaded 2-core CI machine (DWARF
/// of a 2 MB binary), a hang takes forever.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Peak resident memory of this test process allowed: the binaries are a
/// few MB; an allocation sized by a corrupt length would blow far past it.
const MAX_RSS_BYTES: u64 = 1 << 30;

/// Everything a dump or a profile asks of a binary: open it (layout from
/// DWARF or table), then look up functions, lines, inline frames and frame
/// sizes over its code.
fn exercise(path: &Path) -> Result<usize, String> {
    if let Ok(image) = ElfImage::open(path) {
        let _ = buildinfo::read_go_version(&image);
        let _ = dwarf::read_layout(&image);
    }
    let binary = Binary::open(path).map_err(|e| e.to_string())?;
    let tab = &binary.pclntab;
    let mut frames: Vec<SourceFrame> = Vec::new();
    let mut looked_up = 0;
    let (start, end) = (tab.text_start(), tab.text_end());
    let step = ((end.saturating_sub(start)) / 4000).max(1);
    let mut pc = start;
    while pc < end {
        if let Some(f) = tab.find_func(pc) {
            let _ = tab.func_name(&f);
            let _ = tab.file_line(&f, pc);
            let _ = tab.sp_delta(&f, pc);
            let _ = tab.start_line(&f);
            frames.clear();
            tab.source_frames(&f, pc, &mut frames);
            looked_up += 1;
        }
        pc += step;
    }
    Ok(looked_up)
}

/// Runs [`exercise`] on its own thread, so a hang is reported as one.
fn exercise_with_timeout(path: &Path) -> Result<Result<usize, String>, String> {
    let (tx, rx) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| exercise(&owned));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(CASE_TIMEOUT) {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {what}"))
        }
        Err(_) => Err(format!("no result within {CASE_TIMEOUT:?} (hang?)")),
    }
}

fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage writes one rusage struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn damaged_binaries_give_an_error_or_a_fallback_never_a_panic_or_hang() {
    let all = toolchains();
    // The oldest and newest toolchains cover the old (.zdebug, pclntab 1.2)
    // and new (SHF_COMPRESSED, pclntab 1.20) formats.
    let picked = [all.first().unwrap().clone(), all.last().unwrap().clone()];
    let dir = target_dir().join("tmp/corrupt-input");
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut opened = 0;
    for tc in &picked {
        for mode in [BuildMode::Default, BuildMode::Pie] {
            let bin = build_fixture("parked", tc, mode);
            let original = std::fs::read(&bin).unwrap();
            exercise(&bin).unwrap_or_else(|e| panic!("undamaged {}: {e}", bin.display()));
            for (s, names) in SECTIONS.iter().enumerate() {
                let Some(range) = section_range(&original, names) else {
                    // .note.go.buildid is absent in some modes; DWARF
                    // sections are always there in these builds.
                    assert!(
                        !names[0].starts_with(".debug") && names[0] != ".gopclntab",
                        "{}: no section {names:?}",
                        bin.display()
                    );
                    continue;
                };
                for (d, &how) in DAMAGES.iter().enumerate() {
                    for round in 0..2u64 {
                        let seed = (s as u64) << 16 | (d as u64) << 8 | round;
                        let mut data = original.clone();
                        damage(&mut data, range.clone(), how, &mut Rng::new(seed));
                        let path = dir.join(format!("go{}-{}-case", tc.version, mode.name()));
                        std::fs::write(&path, &data).unwrap();
                        cases += 1;
                        let tag = format!(
                            "Go {} {} {} {how:?} seed {seed:#x}",
                            tc.version,
                            mode.name(),
                            names[0]
                        );
                        match exercise_with_timeout(&path) {
                            Ok(Ok(_)) => opened += 1,
                            Ok(Err(e)) if e.trim().is_empty() => {
                                failures.push(format!("{tag}: empty error message"))
                            }
                            Ok(Err(_)) => {}
                            Err(e) => failures.push(format!("{tag}: {e}")),
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Most damage to DWARF, symbols or notes still opens (fallbacks); a
    // run where nothing opened exercised only the first check.
    assert!(opened * 4 > cases, "only {opened} of {cases} cases opened");
    let rss = peak_rss_bytes();
    assert!(
        rss < MAX_RSS_BYTES,
        "peak RSS {} MB over {cases} cases",
        rss >> 20
    );
}
