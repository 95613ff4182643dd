//! Native (C) unwinding of a goroutine blocked inside a cgo call, against
//! live processes of the `cgodeep` fixture (testdata/fixtures/cgodeep:
//! `main.parkInC` → `c_outer` → `c_middle` → `c_inner` → libc `sleep`,
//! compiled without frame pointers), checked against gdb.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ::gospy::binary::ElfImage;
use ::gospy::native::{NativeFrame, NativeUnwinder};
use ::gospy::process::maps::read_maps;
use ::gospy::process::ProcessMemory;
use common::{build_fixture, newest_toolchain, BuildMode, Target};

/// Link-time `[start, end)` of a `.symtab` symbol of `image`.
fn symbol_range(image: &ElfImage, name: &str) -> (u64, u64) {
    let s = image
        .symbol(name)
        .unwrap_or_else(|| panic!("{}: no symbol {name}", image.path.display()));
    (s.addr, s.addr + s.size)
}

/// The symbol of `image` whose range holds `addr`.
fn symbol_at(image: &ElfImage, addr: u64) -> Option<String> {
    image
        .symbols()
        .find(|(_, s)| s.addr <= addr && addr < s.addr + s.size)
        .map(|(n, _)| n.to_string())
}

/// What the fixture's binary tells about Go and C code. The cgo build is not
/// a PIE, so link-time addresses are the runtime ones (asserted).
struct Layout {
    image: ElfImage,
    go_text: (u64, u64),
}

impl Layout {
    fn of(bin: &Path) -> Layout {
        let image = ElfImage::open(bin).unwrap();
        assert!(!image.is_pie, "the cgo fixture is expected to be non-PIE");
        let go_text = (
            symbol_range(&image, "runtime.text").0,
            symbol_range(&image, "runtime.etext").0,
        );
        Layout { image, go_text }
    }

    fn is_go(&self, pc: u64) -> bool {
        (self.go_text.0..self.go_text.1).contains(&pc)
    }
}

/// The one thread of `pid` whose rip is in libc, unwound natively while
/// the process is paused: (tid, frames, first Go pc). Resumes the target
/// before returning.
fn unwind_thread_in_libc(
    pid: i32,
    layout: &Layout,
) -> (i32, Vec<NativeFrame>, Option<u64>, NativeUnwinder) {
    let unwinder = NativeUnwinder::new(pid).unwrap();
    unwinder.preload();
    let libc: Vec<(u64, u64)> = read_maps(pid)
        .unwrap()
        .into_iter()
        .filter(|m| m.is_executable() && m.path.contains("/libc.so"))
        .map(|m| (m.start, m.end))
        .collect();
    assert!(!libc.is_empty(), "no libc mapped in {pid}");
    let mem = ProcessMemory::new(pid);

    let pause = ::gospy::process::ptrace::pause(pid).unwrap();
    let mut found = Vec::new();
    for t in pause.threads() {
        let Some(regs) = &t.regs else { continue };
        if libc.iter().any(|&(s, e)| (s..e).contains(&regs.rip)) {
            let (frames, go) = unwinder.unwind(regs, &mem, &|pc| layout.is_go(pc), 64);
            found.push((t.tid, frames, go));
        }
    }
    pause.resume();

    assert_eq!(
        found.len(),
        1,
        "expected exactly one thread in libc (the cgo sleeper): {found:#?}"
    );
    let (tid, frames, go) = found.pop().unwrap();
    (tid, frames, go, unwinder)
}

/// Checks the C part of the sleeper's stack: libc's sleep functions, then
/// the binary's `c_inner`, `c_middle`, `c_outer` and cgo's wrapper (by pc,
/// so that a stripped copy is checked too), then Go code in
/// `runtime.asmcgocall`. Returns the index of the first binary frame.
fn check_shape(frames: &[NativeFrame], go: Option<u64>, layout: &Layout) -> usize {
    let shown = || format!("{frames:#?}");
    let first_bin = frames
        .iter()
        .position(|f| !f.module.contains("/libc.so"))
        .unwrap_or_else(|| panic!("no frame outside libc:\n{}", shown()));
    let libc_names: Vec<_> = frames[..first_bin]
        .iter()
        .map(|f| f.function.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(
        libc_names.last().copied(),
        Some("sleep"),
        "libc frames {libc_names:?}:\n{}",
        shown()
    );
    assert!(
        libc_names.iter().all(|n| n.contains("sleep")),
        "libc frames {libc_names:?}"
    );
    let bin_frames = &frames[first_bin..];
    let by_pc: Vec<_> = bin_frames
        .iter()
        .map(|f| symbol_at(&layout.image, f.pc - 1).unwrap_or_default())
        .collect();
    assert_eq!(by_pc.len(), 4, "binary frames {by_pc:?}:\n{}", shown());
    assert_eq!(&by_pc[..3], ["c_inner", "c_middle", "c_outer"]);
    assert!(
        by_pc[3].starts_with("_cgo_") && by_pc[3].ends_with("_Cfunc_c_outer"),
        "{by_pc:?}"
    );
    let go = go.unwrap_or_else(|| panic!("Go code not reached:\n{}", shown()));
    let go_fn = symbol_at(&layout.image, go).unwrap_or_default();
    assert!(
        go_fn == "runtime.asmcgocall.abi0" || go_fn == "runtime.asmcgocall",
        "first Go pc {go:#x} is in {go_fn:?}, not runtime.asmcgocall"
    );
    first_bin
}

/// One frame of a gdb backtrace: pc (when gdb prints it) and function.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GdbFrame {
    pc: Option<u64>,
    function: String,
}

/// Runs gdb on `pid` and returns the backtrace of thread `tid`. Separate
/// debug info is turned off so gdb names libc's functions from its ELF
/// symbols, as gospy does (with libc6-dbg it would name
/// `__GI___clock_nanosleep`).
fn gdb_backtrace(pid: i32, tid: i32) -> Vec<GdbFrame> {
    let mut child = Command::new("gdb")
        .args(["-nx", "-batch", "-p", &pid.to_string()])
        .args(["-iex", "set debuginfod enabled off"])
        .args(["-iex", "set auto-load off"])
        .args(["-iex", "set debug-file-directory /nonexistent"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running gdb");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gdb did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("(LWP {tid})");
    let mut frames = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("Thread ") {
            inside = line.contains(&header);
            continue;
        }
        let Some(rest) = line.strip_prefix('#').filter(|_| inside) else {
            continue;
        };
        // "#3  0x00000000004ad66a in c_inner (x=27) at cdeep.c:21" or
        // "#0  runtime.futex () at ...".
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
        let (pc, rest) = match rest.strip_prefix("0x") {
            Some(hex) => {
                let (num, tail) = hex.split_once(" in ").unwrap_or((hex, ""));
                (u64::from_str_radix(num.trim(), 16).ok(), tail)
            }
            None => (None, rest),
        };
        let function = rest.split(" (").next().unwrap_or("").trim().to_string();
        frames.push(GdbFrame { pc, function });
    }
    assert!(
        !frames.is_empty(),
        "no backtrace for thread {tid} in gdb's output:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    frames
}

#[test]
fn cgo_c_frames_match_gdb() {
    let tc = newest_toolchain();
    let bin = build_fixture("cgodeep", &tc, BuildMode::Cgo);
    let layout = Layout::of(&bin);
    let target = Target::start(&bin, &[]);
    let pid = target.pid() as i32;

    let (tid, frames, go, _) = unwind_thread_in_libc(pid, &layout);
    assert!(target.is_running_not_stopped(), "target left stopped");
    let first_bin = check_shape(&frames, go, &layout);
    let names: Vec<_> = frames[first_bin..]
        .iter()
        .map(|f| f.function.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        &names[..3],
        ["c_inner", "c_middle", "c_outer"],
        "{frames:#?}"
    );
    for f in &frames[first_bin..] {
        assert!(f.module.ends_with("/cgodeep"), "{f:?}");
        assert_eq!(
            f.pc - f.offset,
            symbol_range(&layout.image, f.function.as_deref().unwrap()).0
        );
    }

    // gdb, attached after gospy let go, sees the same blocked thread.
    let gdb = gdb_backtrace(pid, tid);
    assert!(
        target.is_running_not_stopped(),
        "target left stopped by gdb"
    );
    let go_at = gdb
        .iter()
        .position(|f| f.pc.is_some_and(|pc| layout.is_go(pc)))
        .unwrap_or_else(|| panic!("gdb never reached Go code: {gdb:#?}"));
    let ours: Vec<GdbFrame> = frames
        .iter()
        .map(|f| GdbFrame {
            pc: Some(f.pc),
            function: f.function.clone().unwrap_or_else(|| "??".into()),
        })
        .collect();
    let theirs: Vec<GdbFrame> = gdb[..go_at]
        .iter()
        .zip(&ours)
        // gdb omits the pc of a frame stopped at the start of a line.
        .map(|(g, o)| GdbFrame {
            pc: g.pc.or(o.pc),
            function: g.function.clone(),
        })
        .collect();
    assert_eq!(
        (ours.len(), &ours[..]),
        (go_at, &theirs[..]),
        "gospy's native frames differ from gdb's:\ngdb: {gdb:#?}"
    );
    assert_eq!(gdb[go_at].pc, go, "first Go frame");
}

#[test]
fn stripped_deleted_binary_unwinds_by_eh_frame() {
    let tc = newest_toolchain();
    let bin = build_fixture("cgodeep", &tc, BuildMode::Cgo);
    let layout = Layout::of(&bin);

    // A stripped copy that is deleted once running: its C symbols are gone,
    // its .eh_frame stays, and it can only be read through
    // /proc/PID/map_files.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("native-stripped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("cgodeep");
    std::fs::copy(&bin, &copy).unwrap();
    let out = Command::new("strip").arg(&copy).output().expect("strip");
    assert!(out.status.success(), "{out:?}");
    assert!(!ElfImage::open(&copy).unwrap().has_symbols());
    let target = Target::start(&copy, &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    let pid = target.pid() as i32;

    let (_, frames, go, unwinder) = unwind_thread_in_libc(pid, &layout);
    assert!(target.is_running_not_stopped(), "target left stopped");
    let first_bin = check_shape(&frames, go, &layout);
    for f in &frames[first_bin..] {
        assert!(f.module.ends_with("/cgodeep (deleted)"), "{f:?}");
        // .dynsym has a few cgo exports (crosscall2, ...), none of these.
        assert_eq!(f.function, None, "{f:?}");
    }
    // Symbols still come from .dynsym where the stripped binary has them.
    let crosscall2 = symbol_range(&layout.image, "crosscall2").0;
    let f = unwinder.symbolize(crosscall2 + 1).unwrap();
    assert_eq!(f.function.as_deref(), Some("crosscall2"), "{f:?}");
}
