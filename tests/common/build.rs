//! Building the Go fixture programs of `testdata/fixtures/<name>/`.
//!
//! [`build_fixture`] builds into
//! `target/gofixtures/<name>-go<ver>-<mode>-<hash>/<name>`, where the hash
//! covers the fixture's sources, the mode's build flags and the toolchain's
//! exact version, so an existing output is always current and is reused
//! across test runs. Builds run in GOPATH mode (`GO111MODULE=off`, no go.mod)
//! with `GOPROXY=off`, `GOTOOLCHAIN=local`, `GOENV=off`: never any network.
//!
//! Concurrency: one in-process lock per output, and across processes each
//! build goes to a private temp dir that is renamed into place; if another
//! process won the race, its (identical) output is used.
//!
//! Environment overrides (optional, e.g. for a persistent CI cache):
//! `GOSPY_GOCACHE` (default `target/gocache`, shared by all toolchains and
//! modes) and `GOSPY_GOFIXTURES` (default `target/gofixtures`).

use super::toolchain::{repo_root, Toolchain};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// How a fixture is built. To add a mode, add a variant and
/// its arms in [`BuildMode::name`], [`BuildMode::cgo`],
/// [`BuildMode::go_build_args`] (and [`BuildMode::post_build`] for steps like
/// binutils `strip`), then add it to [`BuildMode::ALL`] if every
/// toolchain-wide test should cover it. The name, flags and post-build
/// description are part of the cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildMode {
    /// `CGO_ENABLED=0`, default build mode (static, non-PIE, internal linker).
    Default,
    /// `CGO_ENABLED=0 -buildmode=pie`.
    Pie,
    /// `CGO_ENABLED=1 -ldflags=-linkmode=external` (gcc links; the fixture
    /// gains its cgo parker).
    Cgo,
    /// `CGO_ENABLED=1 -ldflags=-linkmode=external -buildmode=pie`: the
    /// unstripped twin of [`BuildMode::CgoPieStripped`] (how distributions
    /// build Go programs, before `strip`).
    CgoPie,
    /// `CGO_ENABLED=0 -ldflags=-s -w`: no `.symtab`, no DWARF. The flags are
    /// recorded in the binary's build info, so its data sits a few bytes
    /// away from a [`BuildMode::Default`] build's.
    Stripped,
    /// [`BuildMode::Pie`], then binutils `strip` (which moves no allocated
    /// section: addresses equal the `Pie` build's).
    PieStripped,
    /// [`BuildMode::CgoPie`], then binutils `strip`.
    CgoPieStripped,
}

impl BuildMode {
    /// The modes every toolchain-wide test covers.
    pub const ALL: [BuildMode; 3] = [BuildMode::Default, BuildMode::Pie, BuildMode::Cgo];

    /// The modes without symbols or DWARF.
    pub const STRIPPED: [BuildMode; 3] = [
        BuildMode::Stripped,
        BuildMode::PieStripped,
        BuildMode::CgoPieStripped,
    ];

    /// Short name used in paths and messages.
    pub fn name(self) -> &'static str {
        match self {
            BuildMode::Default => "default",
            BuildMode::Pie => "pie",
            BuildMode::Cgo => "cgo",
            BuildMode::CgoPie => "cgo-pie",
            BuildMode::Stripped => "stripped",
            BuildMode::PieStripped => "pie-stripped",
            BuildMode::CgoPieStripped => "cgo-pie-stripped",
        }
    }

    /// Whether the binary has neither `.symtab` nor DWARF.
    pub fn stripped(self) -> bool {
        matches!(
            self,
            BuildMode::Stripped | BuildMode::PieStripped | BuildMode::CgoPieStripped
        )
    }

    /// The same build with symbols: same flags minus `-s -w`, no `strip`.
    /// The mode itself if it is not stripped.
    pub fn unstripped(self) -> BuildMode {
        match self {
            BuildMode::Stripped => BuildMode::Default,
            BuildMode::PieStripped => BuildMode::Pie,
            BuildMode::CgoPieStripped => BuildMode::CgoPie,
            m => m,
        }
    }

    /// Built with CGO_ENABLED=1 (so the `cgo` build tag is set).
    pub fn cgo(self) -> bool {
        matches!(
            self,
            BuildMode::Cgo | BuildMode::CgoPie | BuildMode::CgoPieStripped
        )
    }

    /// Position-independent executable.
    pub fn pie(self) -> bool {
        matches!(
            self,
            BuildMode::Pie | BuildMode::CgoPie | BuildMode::PieStripped | BuildMode::CgoPieStripped
        )
    }

    /// Extra `go build` arguments (before the package).
    pub fn go_build_args(self) -> Vec<String> {
        match self {
            BuildMode::Default => vec![],
            BuildMode::Pie => vec!["-buildmode=pie".into()],
            BuildMode::Cgo => vec!["-ldflags=-linkmode=external".into()],
            BuildMode::CgoPie | BuildMode::CgoPieStripped => vec![
                "-ldflags=-linkmode=external".into(),
                "-buildmode=pie".into(),
            ],
            BuildMode::Stripped => vec!["-ldflags=-s -w".into()],
            BuildMode::PieStripped => vec!["-buildmode=pie".into()],
        }
    }

    /// A step run on the built binary before it is published: binutils
    /// `strip` for the modes that need it. Described in
    /// [`BuildMode::post_build_key`] so the cache key changes with it.
    pub fn post_build(self, binary: &Path) {
        match self {
            BuildMode::PieStripped | BuildMode::CgoPieStripped => {
                let out = Command::new("strip")
                    .arg(binary)
                    .output()
                    .unwrap_or_else(|e| panic!("running strip (binutils): {e}"));
                assert!(
                    out.status.success(),
                    "strip {} failed ({}): {}",
                    binary.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            BuildMode::Default
            | BuildMode::Pie
            | BuildMode::Cgo
            | BuildMode::CgoPie
            | BuildMode::Stripped => {}
        }
    }

    /// What [`BuildMode::post_build`] does, for the cache key.
    pub fn post_build_key(self) -> &'static str {
        match self {
            BuildMode::PieStripped | BuildMode::CgoPieStripped => "strip",
            BuildMode::Default
            | BuildMode::Pie
            | BuildMode::Cgo
            | BuildMode::CgoPie
            | BuildMode::Stripped => "",
        }
    }

    fn cache_key(self) -> String {
        format!(
            "{} cgo={} args={:?} post={}",
            self.name(),
            self.cgo(),
            self.go_build_args(),
            self.post_build_key()
        )
    }
}

impl std::fmt::Display for BuildMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cargo target directory (parent of CARGO_TARGET_TMPDIR).
pub fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

/// `testdata/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("testdata/fixtures")
}

/// Where built fixtures go (`target/gofixtures` or `$GOSPY_GOFIXTURES`).
pub fn gofixtures_dir() -> PathBuf {
    match std::env::var_os("GOSPY_GOFIXTURES") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("gofixtures"),
    }
}

/// The shared GOCACHE (`target/gocache` or `$GOSPY_GOCACHE`).
pub fn gocache_dir() -> PathBuf {
    match std::env::var_os("GOSPY_GOCACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => target_dir().join("gocache"),
    }
}

fn key_lock(key: &str) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(key.to_string()).or_default().clone()
}

/// 64-bit FNV-1a (stable across Rust versions, unlike DefaultHasher).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

fn collect_files(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = rel.join(entry.file_name());
        if path.is_dir() {
            collect_files(&path, &rel, out);
        } else {
            out.push((rel, path));
        }
    }
}

/// Hash of the fixture's sources, the mode and the exact toolchain.
fn fingerprint(src: &Path, tc: &Toolchain, mode: BuildMode) -> u64 {
    let mut h = Fnv::new();
    h.write(b"gospy-fixture-v1");
    h.write(mode.cache_key().as_bytes());
    h.write(tc.version.as_bytes());
    h.write(tc.go.as_os_str().as_encoded_bytes());
    // The exact release (1.24.4 vs 1.24.5) changes the binary.
    h.write(
        std::fs::read(tc.goroot().join("VERSION"))
            .unwrap_or_default()
            .as_slice(),
    );
    let mut files = Vec::new();
    collect_files(src, Path::new(""), &mut files);
    files.sort();
    for (rel, path) in files {
        h.write(rel.as_os_str().as_encoded_bytes());
        h.write(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
        );
    }
    h.0
}

/// Build `testdata/fixtures/<name>` with `tc` in `mode` (or reuse the cached
/// output) and return the path of the executable. Panics with the compiler
/// output if the build fails.
pub fn build_fixture(name: &str, tc: &Toolchain, mode: BuildMode) -> PathBuf {
    let src = fixtures_dir().join(name);
    assert!(src.is_dir(), "no fixture {}", src.display());
    let hash = fingerprint(&src, tc, mode);
    let key = format!("{name}-go{}-{}-{hash:016x}", tc.version, mode.name());
    let root = gofixtures_dir();
    let out_dir = root.join(&key);
    let out = out_dir.join(name);

    let lock = key_lock(&key);
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if out.is_file() {
        return out;
    }

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = root.join(format!(
        ".tmp-{key}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    let tmp_bin = tmp.join(name);

    let gopath = target_dir().join("gopath");
    let gocache = gocache_dir();
    std::fs::create_dir_all(&gocache).unwrap();
    std::fs::create_dir_all(&gopath).unwrap();

    let mut cmd = Command::new(&tc.go);
    cmd.arg("build")
        .arg("-o")
        .arg(&tmp_bin)
        .args(mode.go_build_args())
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", &gocache)
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOENV", "off")
        .env("CGO_ENABLED", if mode.cgo() { "1" } else { "0" })
        .env_remove("GOROOT")
        .env_remove("GOOS")
        .env_remove("GOARCH")
        .env_remove("GOEXPERIMENT")
        .env_remove("GOBIN");
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tc.go.display()));
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        panic!(
            "building fixture {name} with Go {} ({mode}) failed ({}):\n{:?}\n{}{}",
            tc.version,
            output.status,
            cmd,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    mode.post_build(&tmp_bin);

    match std::fs::rename(&tmp, &out_dir) {
        Ok(()) => {}
        Err(_) if out.is_file() => {
            // Another process published the same build first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            panic!("renaming {} to {}: {e}", tmp.display(), out_dir.display());
        }
    }
    assert!(out.is_file(), "{} missing after build", out.display());
    out
}
