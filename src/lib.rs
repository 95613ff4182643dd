//! gospy: a non-invasive sampling profiler and inspector for running Go
//! programs on Linux x86-64.
//!
//! Data flows one way (see README.md, "How it works"):
//! [`binary`] reads the executable, [`process`] pauses and reads the live
//! process, [`runtime`] rebuilds the goroutines from a memory snapshot,
//! [`unwind`] turns each into frames, and [`output`] renders them.

pub mod binary;
pub mod cli;
pub mod error;
pub mod goroutines;
pub mod layout;
pub mod mprof;
pub mod native;
pub mod output;
pub mod process;
pub mod runtime;
pub mod sampler;
pub mod snapshot;
pub mod stack;
pub mod summary;
pub mod target;
pub mod top;
pub mod unwind;
pub mod var;

pub use error::{Error, Result};
