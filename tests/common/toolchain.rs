//! The Go toolchains the tests run against: `testdata/go-toolchains.txt`,
//! installed at `/usr/lib/go-VERSION/bin/go` by `scripts/install-go-toolchains`.

use std::path::{Path, PathBuf};

/// One installed Go toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// `1.24` (as listed in testdata/go-toolchains.txt).
    pub version: String,
    /// `/usr/lib/go-1.24/bin/go`.
    pub go: PathBuf,
}

impl Toolchain {
    /// The minor version: 24 for `1.24`.
    pub fn minor(&self) -> u32 {
        self.version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("bad Go version {:?}", self.version))
    }

    /// Is this Go 1.`minor` or newer?
    pub fn at_least(&self, minor: u32) -> bool {
        self.minor() >= minor
    }

    /// GOROOT (`/usr/lib/go-1.24`).
    pub fn goroot(&self) -> PathBuf {
        self.go
            .parent()
            .and_then(Path::parent)
            .expect("go binary is GOROOT/bin/go")
            .to_path_buf()
    }

    /// The full version as the toolchain reports it (`go1.24.4`), from
    /// GOROOT/VERSION; this is what a binary's buildinfo says.
    pub fn full_version(&self) -> String {
        let path = self.goroot().join("VERSION");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.lines().next().unwrap_or("").trim().to_string()
    }
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Versions listed in testdata/go-toolchains.txt, in file order.
pub fn listed_versions() -> Vec<String> {
    let path = repo_root().join("testdata/go-toolchains.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Every required toolchain (all of testdata/go-toolchains.txt), or the
/// subset named by `GOSPY_TEST_GO=1.24,1.26` (for quick local runs; CI does
/// not set it). A missing toolchain is a test failure, not a skip: this
/// panics with the fix ("run scripts/install-go-toolchains").
pub fn toolchains() -> Vec<Toolchain> {
    let listed = listed_versions();
    let selected: Vec<String> = match std::env::var("GOSPY_TEST_GO") {
        Ok(s) if !s.trim().is_empty() => {
            let want: Vec<String> = s
                .split(',')
                .map(|v| v.trim().trim_start_matches("go").to_string())
                .filter(|v| !v.is_empty())
                .collect();
            for v in &want {
                assert!(
                    listed.contains(v),
                    "GOSPY_TEST_GO names Go {v}, which is not listed in testdata/go-toolchains.txt ({})",
                    listed.join(", ")
                );
            }
            listed.into_iter().filter(|v| want.contains(v)).collect()
        }
        _ => listed,
    };
    selected
        .into_iter()
        .map(|version| {
            let go = PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
            assert!(
                go.is_file(),
                "Go {version} is missing ({} does not exist): run scripts/install-go-toolchains",
                go.display()
            );
            Toolchain { version, go }
        })
        .collect()
}

/// The newest of [`toolchains()`].
pub fn newest_toolchain() -> Toolchain {
    toolchains()
        .into_iter()
        .max_by_key(Toolchain::minor)
        .expect("no Go toolchains listed")
}

/// The toolchain for one listed version (panics if it is not listed or not
/// installed). Ignores GOSPY_TEST_GO.
pub fn toolchain(version: &str) -> Toolchain {
    assert!(
        listed_versions().iter().any(|v| v == version),
        "Go {version} is not listed in testdata/go-toolchains.txt"
    );
    let go = PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
    assert!(
        go.is_file(),
        "Go {version} is missing ({} does not exist): run scripts/install-go-toolchains",
        go.display()
    );
    Toolchain {
        version: version.to_string(),
        go,
    }
}
