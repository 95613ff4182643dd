//! The goroutine profile (`pprof.Lookup("goroutine").WriteTo(w, 0)`),
//! rebuilt from one snapshot of the target's goroutines.
//!
//! The runtime keeps no such profile: `runtime/pprof` asks the runtime
//! (runtime/mprof.go `goroutineProfileWithLabels`) for every goroutine's
//! stack and labels while the world is stopped, then counts them
//! (pprof.go `printCountProfile`). gospy does the same from outside, on a
//! snapshot taken as `gospy dump` takes one:
//!
//! - which goroutines: every live one but the runtime's own
//!   (`isSystemGoroutine`: started in a `runtime.` function other than
//!   `runtime.main`), the finalizer and cleanup goroutines included only
//!   while they run user code. In the runtime's profile the goroutine
//!   asking for it is included too, at the call; from outside there is no
//!   such goroutine.
//! - which frames: the runtime's `saveg` traceback from `g.syscallsp` (in a
//!   system call) or `g.sched`, every frame (runtime ones included) with
//!   inlined calls expanded one per logical frame, wrappers left out as
//!   `tracebackPCs` leaves them out, at most 32 logical frames up to Go
//!   1.22 (`StackRecord.Stack0`) and 128 from 1.23 (the default of
//!   GODEBUG=profstackdepth), the last one's inlining callers restored as
//!   pprof's `expandFinalInlineFrame` does. `runtime.goexit` is dropped,
//!   as pprof drops it.
//! - one sample per distinct (stack, labels) with its number of
//!   goroutines, most first; a goroutine with a label set (even an empty
//!   one) never shares a sample with one without.

use std::collections::HashMap;
use std::time::Duration;

use crate::binary::pclntab::SourceFrame;
use crate::error::Result;
use crate::goroutines::read_labels;
use crate::output::pprof::{ValueProfile, ValueSample};
use crate::runtime::{self, Goroutine};
use crate::sampler::{Location, SourceLine};
use crate::snapshot::{Snapshot, SnapshotOptions};
use crate::target::Target;
use crate::unwind::{self, PhysicalFrame, StackEnd, Unwinder};

/// The goroutine profile as read.
#[derive(Debug, Clone)]
pub struct GoroutineProfile {
    /// The profile `runtime/pprof` would write.
    pub profile: ValueProfile,
    /// Goroutines counted.
    pub goroutines: usize,
    /// Live goroutines left out as the runtime's own.
    pub system: usize,
    /// Goroutines left out because no stack could be read for them (goid,
    /// why): e.g. changed while read with `nonblocking`.
    pub unreadable: Vec<(u64, String)>,
    /// Goroutines counted whose stack could be read only in part.
    pub incomplete: usize,
    /// How long the target was stopped (None with `nonblocking`).
    pub pause: Option<Duration>,
}

/// Logical frames the runtime records per goroutine: `StackRecord.Stack0`
/// up to Go 1.22, `debug.profstackdepth` (default 128) from 1.23.
fn max_logical_frames(target: &Target) -> usize {
    if target.binary.go_version.at_least(1, 23) {
        128
    } else {
        32
    }
}

/// Takes a snapshot of `target` (pausing it as `gospy dump` does, unless
/// `nonblocking`) and builds its goroutine profile.
pub fn read_goroutine_profile(target: &Target, nonblocking: bool) -> Result<GoroutineProfile> {
    let snapshot = Snapshot::take(
        target,
        SnapshotOptions {
            nonblocking,
            native: false,
        },
    )?;
    Ok(profile_of_snapshot(target, &snapshot))
}

/// One logical frame as the runtime records it.
#[derive(Debug, Clone)]
struct Logical {
    /// The pc runtime/pprof would see for it, and its depth in that pc's
    /// inlined calls: what tells two frames apart.
    key: (u64, u32),
    line: SourceLine,
}

/// The goroutine profile of the goroutines in `snapshot`.
fn profile_of_snapshot(target: &Target, snapshot: &Snapshot) -> GoroutineProfile {
    let mut builder = Builder {
        target,
        unwinder: Unwinder::new(
            &target.binary.pclntab,
            target.bias,
            unwind::DEFAULT_MAX_DEPTH,
        ),
        physical: Vec::new(),
        source: Vec::new(),
        max: max_logical_frames(target),
    };
    let mut out = GoroutineProfile {
        profile: ValueProfile::default(),
        goroutines: 0,
        system: 0,
        unreadable: Vec::new(),
        incomplete: 0,
        pause: snapshot.pause,
    };
    type Key = (Vec<(u64, u32)>, Option<Vec<(String, String)>>);
    let mut counts: HashMap<Key, (i64, Vec<SourceLine>)> = HashMap::new();
    let mut goroutines: Vec<&Goroutine> = snapshot.goroutines.iter().collect();
    goroutines.sort_by_key(|g| g.goid);
    for g in goroutines {
        let start_func = builder.function_at(g.start_pc);
        let varies = matches!(
            start_func,
            "runtime.runfinq" | "runtime.runFinalizers" | "runtime.runCleanups"
        );
        if runtime::is_system_goroutine(start_func) && !varies {
            out.system += 1;
            continue;
        }
        let start = if snapshot.unstable.contains(&g.addr) {
            Err("changed while being read without a pause".to_string())
        } else {
            unwind::start_state(g, snapshot.thread_view(g).as_ref())
        };
        let start = match start {
            Ok(s) => s,
            Err(why) => {
                out.unreadable.push((g.goid, why));
                continue;
            }
        };
        let end = builder
            .unwinder
            .unwind_into(&start, &snapshot.stacks, &mut builder.physical);
        let frames = builder.logical_frames();
        // The finalizer goroutine (runtime.fingStatus) and cleanup
        // goroutines (g.runningCleanups) count as the program's only while
        // they call its code; their stack says whether they do.
        if varies
            && frames
                .iter()
                .all(|f| f.line.function.starts_with("runtime."))
        {
            out.system += 1;
            continue;
        }
        if frames.is_empty() {
            out.unreadable
                .push((g.goid, "no frame could be unwound".into()));
            continue;
        }
        if matches!(end, StackEnd::Incomplete(_)) {
            out.incomplete += 1;
        }
        let labels = (g.labels != 0).then(|| read_labels(&target.memory, &target.binary, g.labels));
        let key = (frames.iter().map(|f| f.key).collect(), labels);
        let entry = counts
            .entry(key)
            .or_insert_with(|| (0, frames.into_iter().map(|f| f.line).collect()));
        entry.0 += 1;
        out.goroutines += 1;
    }

    // printCountProfile: most goroutines first, ties by the runtime's key
    // (hex pcs, then labels).
    let mut samples: Vec<(Key, (i64, Vec<SourceLine>))> = counts.into_iter().collect();
    samples.sort_by(|(ka, (ca, _)), (kb, (cb, _))| cb.cmp(ca).then_with(|| ka.cmp(kb)));
    let mut locations: Vec<Location> = Vec::new();
    let mut ids: HashMap<(u64, u32), u32> = HashMap::new();
    let profile_samples = samples
        .into_iter()
        .map(|((keys, labels), (count, lines))| ValueSample {
            locations: keys
                .iter()
                .zip(lines)
                .map(|(&key, line)| {
                    *ids.entry(key).or_insert_with(|| {
                        // pprof's address is the call's pc (Frame.PC).
                        locations.push(Location {
                            address: key.0.wrapping_sub(1),
                            lines: vec![line],
                            native: false,
                        });
                        (locations.len() - 1) as u32
                    })
                })
                .collect(),
            values: vec![count],
            numeric_labels: Vec::new(),
            labels: labels.unwrap_or_default(),
        })
        .collect();
    out.profile = ValueProfile {
        sample_types: vec![("goroutine".into(), "count".into())],
        default_sample_type: None,
        period_type: ("goroutine".into(), "count".into()),
        period: 1,
        duration_nanos: 0,
        locations,
        samples: profile_samples,
    };
    out
}

/// What is reused from one goroutine to the next.
struct Builder<'t> {
    target: &'t Target,
    unwinder: Unwinder<'t>,
    /// The physical frames of the goroutine at hand.
    physical: Vec<PhysicalFrame>,
    source: Vec<SourceFrame<'t>>,
    max: usize,
}

/// Whether the runtime leaves out a wrapper whose callee is `callee`
/// (runtime/traceback.go `elideWrapperCalling`): always, unless the
/// wrapper called a panic.
fn elide_wrapper_calling(callee: Option<&str>) -> bool {
    !matches!(
        callee,
        Some("runtime.gopanic" | "runtime.sigpanic" | "runtime.panicwrap")
    )
}

impl<'t> Builder<'t> {
    /// The name of the function containing `pc` ("" if none).
    fn function_at(&self, pc: u64) -> &'t str {
        let pclntab = &self.target.binary.pclntab;
        pclntab
            .find_func(pc.wrapping_sub(self.target.bias))
            .map(|f| pclntab.func_name(&f))
            .unwrap_or("")
    }

    /// The logical frames of `self.physical` as `saveg` records them and
    /// runtime/pprof then shows them (see the module's documentation).
    fn logical_frames(&mut self) -> Vec<Logical> {
        let pclntab = &self.target.binary.pclntab;
        // Every logical frame, innermost first: (physical index, depth in
        // its inlined calls, frame), wrappers already left out.
        let mut all: Vec<(usize, u32, SourceLine)> = Vec::new();
        let mut callee: Option<&'t str> = None;
        let mut expansions: Vec<Vec<SourceFrame<'t>>> = Vec::with_capacity(self.physical.len());
        for (i, p) in self.physical.iter().enumerate() {
            self.source.clear();
            pclntab.source_frames(&p.func, p.sym_pc, &mut self.source);
            expansions.push(self.source.clone());
            for (depth, sf) in self.source.iter().enumerate() {
                if !(sf.is_wrapper && elide_wrapper_calling(callee)) {
                    all.push((i, depth as u32, source_line(sf)));
                }
                callee = Some(sf.function);
            }
        }
        if all.len() > self.max {
            // The record holds `max` pcs; pprof's expandFinalInlineFrame
            // then adds back the inlining callers of the last one.
            all.truncate(self.max);
            if let Some(&(i, depth, _)) = all.last() {
                let mut callee = expansions[i].get(depth as usize).map(|sf| sf.function);
                for (d, sf) in expansions[i].iter().enumerate().skip(depth as usize + 1) {
                    if !(sf.is_wrapper && elide_wrapper_calling(callee)) {
                        all.push((i, d as u32, source_line(sf)));
                    }
                    callee = Some(sf.function);
                }
            }
        }
        all.into_iter()
            .filter(|(_, _, line)| &*line.function != "runtime.goexit")
            .map(|(i, depth, line)| Logical {
                // The return pc (or trap pc + 1) runtime/pprof sees for
                // the physical frame; its inlined frames share it here.
                key: (
                    self.physical[i]
                        .sym_pc
                        .wrapping_add(self.target.bias)
                        .wrapping_add(1),
                    depth,
                ),
                line,
            })
            .collect()
    }
}

/// A source frame as a profile line: full symbol names, as runtime/pprof
/// writes them (generic shapes included).
fn source_line(sf: &SourceFrame) -> SourceLine {
    SourceLine {
        function: sf.function.into(),
        file: sf.file.into(),
        line: sf.line,
        start_line: sf.start_line,
    }
}

#[cfg(test)]
mod tests {
    use super::elide_wrapper_calling;

    #[test]
    fn wrappers_are_elided_unless_they_called_a_panic() {
        assert!(elide_wrapper_calling(None));
        assert!(elide_wrapper_calling(Some("main.f")));
        assert!(!elide_wrapper_calling(Some("runtime.sigpanic")));
        assert!(!elide_wrapper_calling(Some("runtime.gopanic")));
    }
}
