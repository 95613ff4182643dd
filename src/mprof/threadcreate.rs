//! The thread creation profile (`pprof.Lookup("threadcreate")`): one
//! record per M in `runtime.allm` with the stack that created it,
//! `m.createstack` (`[32]uintptr`, filled by `callers` in
//! runtime/proc.go `mcommoninit` unless the M was created from a system
//! stack, which leaves it empty).
//!
//! `runtime/pprof` (`writeThreadCreate`, `printCountProfile`) counts the
//! Ms by stack: `threadcreate/count`, period 1, most frequent first. The
//! list is read without stopping the target, as the runtime reads it.

use std::collections::HashMap;

use super::Symbolizer;
use crate::error::{Error, Result};
use crate::output::pprof::{ValueProfile, ValueSample};
use crate::snapshot::read_machines;
use crate::target::Target;

/// Words in `m.createstack` (runtime/runtime2.go, every version).
const CREATE_STACK_WORDS: usize = 32;

/// The thread creation profile as read.
#[derive(Debug, Clone)]
pub struct ThreadCreateProfile {
    /// The profile `runtime/pprof` would write.
    pub profile: ValueProfile,
    /// Ms read from `runtime.allm`.
    pub threads: usize,
}

/// Reads every M's creation stack and counts them as `runtime/pprof` does.
pub fn read_threadcreate_profile(target: &Target) -> Result<ThreadCreateProfile> {
    let Some(offset) = target.binary.layout.m.createstack else {
        return Err(Error::Unsupported {
            path: target.binary.path.clone(),
            reason: "runtime.m has no createstack field in this binary's layout".into(),
        });
    };
    let machines = read_machines(target)?;
    let mut stacks = Vec::with_capacity(machines.len());
    for m in &machines {
        let mut bytes = [0u8; CREATE_STACK_WORDS * 8];
        let addr = m.addr.checked_add(offset).ok_or_else(|| {
            Error::Other(format!(
                "runtime.m at {:#x} lies at the top of memory",
                m.addr
            ))
        })?;
        target.memory.read(addr, &mut bytes)?;
        let mut stack = super::words_of(&bytes);
        // `callers` fills the array from the start and the rest stays
        // zero: up to Go 1.22 `StackRecord.Stack` ends the stack at the
        // first zero. From 1.23 runtime/pprof keeps all 32 words and
        // writes a line-less location at 0xffffffffffffffff for each zero;
        // those name nothing, so gospy leaves them out (`go tool pprof`
        // shows the same frames either way).
        if let Some(end) = stack.iter().position(|&pc| pc == 0) {
            stack.truncate(end);
        }
        stacks.push(stack);
    }
    Ok(ThreadCreateProfile {
        threads: machines.len(),
        profile: count_profile(target, "threadcreate", &stacks),
    })
}

/// `printCountProfile` for stacks of return pcs (`runtime.Callers`
/// stacks): one sample per distinct stack with how many there are, most
/// first, ties in the order of the runtime's key (`@ 0x...` hex pcs).
fn count_profile(target: &Target, name: &str, stacks: &[Vec<u64>]) -> ValueProfile {
    let mut counts: HashMap<&[u64], i64> = HashMap::new();
    for s in stacks {
        *counts.entry(s.as_slice()).or_default() += 1;
    }
    let mut distinct: Vec<(&[u64], i64)> = counts.into_iter().collect();
    distinct.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| runtime_key(a.0).cmp(&runtime_key(b.0)))
    });
    let mut symbols = Symbolizer::new(target);
    let samples = distinct
        .iter()
        .map(|(stack, count)| ValueSample {
            locations: symbols.locations(stack),
            values: vec![*count],
            numeric_labels: Vec::new(),
            labels: Vec::new(),
        })
        .collect();
    ValueProfile {
        sample_types: vec![(name.into(), "count".into())],
        default_sample_type: None,
        period_type: (name.into(), "count".into()),
        period: 1,
        duration_nanos: 0,
        locations: symbols.into_locations(),
        samples,
    }
}

/// The string `printCountProfile` sorts equal counts by.
fn runtime_key(stack: &[u64]) -> String {
    let mut key = String::from("@");
    for pc in stack {
        key.push_str(&format!(" {pc:#x}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::runtime_key;

    #[test]
    fn the_key_is_the_runtimes() {
        assert_eq!(runtime_key(&[0x401000, 0x2a]), "@ 0x401000 0x2a");
        assert_eq!(runtime_key(&[]), "@");
    }
}
