//! Rendering what gospy found: one file per output format.

pub mod dump;
