//! Shared harness for gospy's integration tests.
//!
//! Use it from a test file with `mod common;` and `use common::*;`.
//!
//! * Toolchains ([`toolchain`]): [`toolchains()`] returns every Go toolchain
//!   listed in `testdata/go-toolchains.txt`; a missing one panics ("Go 1.27
//!   is missing: run scripts/install-go-toolchains"): missing toolchains are
//!   failures, not skips. `GOSPY_TEST_GO=1.24,1.26` restricts the set for
//!   quick local runs (CI does not set it).
//! * Fixtures ([`build`]): [`build_fixture`]`("parked", &tc, BuildMode::Cgo)`
//!   builds `testdata/fixtures/parked` (cached in `target/gofixtures`, shared
//!   GOCACHE `target/gocache`, no network, safe to call from many threads and
//!   processes). [`BuildMode::ALL`] is the modes every toolchain-wide test
//!   should cover.
//! * Targets ([`target`]): [`Target::start`]`(&bin, &[])` runs a fixture
//!   until it has parked everything; [`Target::ground_truth`] asks the Go
//!   runtime itself for all stacks (`runtime.Stack(buf, true)` via SIGUSR1);
//!   the process is killed on drop (and exits by itself if the test process
//!   dies, via its stdin pipe).
//! * Runtime tracebacks ([`traceback`]): [`parse_traceback`] parses Go
//!   1.15–1.27 traceback text into [`RuntimeGoroutine`]s.
//! * gospy ([`gospy`]): [`run_gospy`], [`gospy_dump_json`], and the
//!   comparators [`compare_parked`] (frames + created_by), [`compare_labels`],
//!   [`compare_states`].
//! * The `parked` fixture's catalogue ([`parked`]): [`parked_catalogue`]
//!   lists each parked goroutine with its runtime state per Go version.
//!
//! A typical end-to-end test:
//!
//! ```ignore
//! for tc in toolchains() {
//!     for mode in BuildMode::ALL {
//!         let bin = build_fixture("parked", &tc, mode);
//!         let mut target = Target::start(&bin, &[]);
//!         let truth = target.ground_truth();
//!         let dump = gospy_dump_json(target.pid());
//!         if let Err(diff) = compare_parked(&truth, &dump) {
//!             panic!("Go {} {mode}: {diff}", tc.version);
//!         }
//!         assert!(target.is_running_not_stopped());
//!     }
//! }
//! ```
#![allow(dead_code, unused_imports)]

pub mod build;
pub mod corrupt;
pub mod gospy;
pub mod parked;
pub mod pprof_raw;
pub mod target;
pub mod toolchain;
pub mod traceback;

pub use build::{build_fixture, fixtures_dir, gocache_dir, gofixtures_dir, target_dir, BuildMode};
pub use gospy::{
    compare_labels, compare_parked, compare_states, gospy_bin, gospy_dump_json,
    gospy_dump_json_with, gospy_goroutine, gospy_goroutines, gospy_visible_frames, run_gospy,
};
pub use parked::{parked_catalogue, Parked, BURNERS, BURN_CHAIN, MAIN_LOOP};
pub use target::{thread_states, Target};
pub use toolchain::{newest_toolchain, repo_root, toolchain, toolchains, Toolchain};
pub use traceback::{
    parse_traceback, strip_args, Ancestor, CreatedBy, RuntimeFrame, RuntimeGoroutine,
};

/// Held by a test that measures CPU time or shares (one at a time in a test
/// binary: on a 2-core machine two of them plus gospy distort each other).
pub fn start_exclusive_lock() -> std::sync::MutexGuard<'static, ()> {
    static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
