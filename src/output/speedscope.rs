//! speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json):
//! one "sampled" profile whose samples are stacks of indices into a shared
//! frame list, outermost first, each with a weight (its sample count).

use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::sampler::{FrameRef, Profile};

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared<'a>,
    profiles: Vec<SampledProfile>,
    name: &'a str,
    exporter: String,
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<Frame<'a>>,
}

/// One entry of the shared frame list.
#[derive(Serialize)]
pub(crate) struct Frame<'a> {
    pub(crate) name: &'a str,
    /// Pseudo-frames (threads, goroutine states) have neither.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) file: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) line: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SampledProfile {
    r#type: &'static str,
    name: String,
    unit: &'static str,
    start_value: u64,
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

/// Writes `profile` as a speedscope file named `title`.
pub fn write(out: &mut dyn Write, profile: &Profile, title: &str) -> io::Result<()> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut index: HashMap<FrameRef, usize> = HashMap::new();
    let mut stacks: Vec<_> = profile.stacks.iter().collect();
    stacks.sort();
    let mut samples = Vec::with_capacity(stacks.len());
    let mut weights = Vec::with_capacity(stacks.len());
    for (stack, weight) in stacks {
        let sample = profile
            .frames(stack)
            .map(|f| {
                *index.entry(f).or_insert_with(|| {
                    frames.push(Frame {
                        name: f.function,
                        file: f.file,
                        line: f.line,
                    });
                    frames.len() - 1
                })
            })
            .collect();
        samples.push(sample);
        weights.push(weight.nanos);
    }
    write_sampled(out, title, "nanoseconds", frames, samples, weights)
}

/// Writes one "sampled" profile named `title`: `samples` are stacks of
/// indices into `frames`, outermost first, each weighing its `weights`
/// entry in `unit` (one of speedscope's units: "nanoseconds", "bytes",
/// "none", ...).
pub(crate) fn write_sampled(
    out: &mut dyn Write,
    title: &str,
    unit: &'static str,
    frames: Vec<Frame>,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
) -> io::Result<()> {
    let total = weights.iter().sum();
    let file = File {
        schema: "https://www.speedscope.app/file-format-schema.json",
        shared: Shared { frames },
        profiles: vec![SampledProfile {
            r#type: "sampled",
            name: title.to_string(),
            unit,
            start_value: 0,
            end_value: total,
            samples,
            weights,
        }],
        name: title,
        exporter: format!("gospy {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(&mut *out, &file).map_err(io::Error::other)?;
    writeln!(out)
}
