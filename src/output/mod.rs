//! Rendering what gospy found: one file per output format.

pub mod dump;
pub mod flamegraph;
pub mod folded;
pub mod pprof;
pub mod speedscope;
pub mod summary;
pub mod values;
