//! Profiles as `go tool pprof -raw` prints them, parsed for comparison:
//! the runtime's own profiles against gospy's, sample by sample.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::build::gocache_dir;
use super::toolchain::Toolchain;

/// One sample as `go tool pprof -raw` shows it: values, frames
/// ("function file:line", leaf first) and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RawSample {
    pub values: Vec<i64>,
    pub frames: Vec<String>,
    pub labels: String,
}

/// A profile as `go tool pprof -raw` prints it: the period line, the
/// sample types and the samples.
#[derive(Debug)]
pub struct Raw {
    pub header: String,
    pub samples: Vec<RawSample>,
}

pub fn raw(tc: &Toolchain, file: &Path) -> Result<Raw, String> {
    raw_with(tc, file, &[])
}

/// `go tool pprof -raw EXTRA... FILE`.
pub fn raw_with(tc: &Toolchain, file: &Path, extra: &[&str]) -> Result<Raw, String> {
    let out = Command::new(&tc.go)
        .args(["tool", "pprof", "-raw"])
        .args(extra)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", gocache_dir())
        .output()
        .map_err(|e| format!("go tool pprof: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go tool pprof -raw {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(parse_raw(&String::from_utf8_lossy(&out.stdout)))
}

pub fn parse_raw(text: &str) -> Raw {
    let mut header = String::new();
    let mut samples: Vec<(Vec<i64>, Vec<u64>, String)> = Vec::new();
    let mut locations: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut section = "";
    let mut last_location = 0;
    for line in text.lines() {
        match line.trim() {
            "Samples:" => {
                section = "samples";
                continue;
            }
            "Locations" => {
                section = "locations";
                continue;
            }
            "Mappings" => {
                section = "mappings";
                continue;
            }
            _ => {}
        }
        match section {
            "" if line.starts_with("PeriodType") || line.starts_with("Period:") => {
                header.push_str(line);
                header.push('\n');
            }
            "samples" => {
                if let Some((values, locs)) = line.split_once(':').filter(|_| {
                    line.trim_start()
                        .starts_with(|c: char| c.is_ascii_digit() || c == '-')
                }) {
                    let values = values
                        .split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect();
                    let locs = locs
                        .split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect();
                    samples.push((values, locs, String::new()));
                } else if line.contains(":[") {
                    if let Some(s) = samples.last_mut() {
                        s.2.push_str(line.trim());
                    }
                } else if !line.trim().is_empty() {
                    header.push_str(line.trim());
                    header.push('\n');
                }
            }
            "locations" => {
                let words: Vec<&str> = line.split_whitespace().collect();
                // "N: 0xADDR M=1 function file:line:col s=START", or a
                // further (inlined) line: "function file:line:col s=START".
                let (id, rest) = match words.first().and_then(|w| w.strip_suffix(':')) {
                    Some(id) => (id.parse().ok(), &words[words.len().min(3)..]),
                    None => (None, &words[..]),
                };
                if let Some(id) = id {
                    last_location = id;
                }
                if let [function, place, ..] = rest {
                    let place = place.rsplit_once(':').map_or(*place, |(p, _col)| p);
                    locations
                        .entry(last_location)
                        .or_default()
                        .push(format!("{function} {place}"));
                }
            }
            _ => {}
        }
    }
    let samples = samples
        .into_iter()
        .map(|(values, locs, labels)| RawSample {
            values,
            frames: locs
                .iter()
                .flat_map(|l| locations.get(l).cloned().unwrap_or_default())
                .collect(),
            labels,
        })
        .collect();
    Raw { header, samples }
}
