//! Physical frames turned into source-level frames: inlined calls expanded,
//! names printed as the runtime prints them, and runtime-internal frames
//! marked the way the runtime's default traceback hides them
//! (runtime/traceback.go `showfuncinfo`, `elideWrapperCalling`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::binary::{GoVersion, Pclntab, SourceFrame};
use crate::unwind::{PcMap, PhysicalFrame};

/// One source-level frame of a goroutine's stack.
///
/// Names are shared (`Arc<str>`): a dump of many goroutines repeats the
/// same few functions and files, each stored once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Function name as the runtime prints it (generic shapes as `[...]`).
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
    /// An inlined call: no machine frame of its own.
    pub inlined: bool,
    /// The runtime's default traceback would not show this frame.
    pub hidden: bool,
    /// For physical frames: pc minus function entry (the `+0x..` the
    /// runtime prints).
    pub pc_offset: Option<u64>,
}

/// Turns physical frames into source frames for one target, remembering
/// what it worked out: goroutines parked in the same place (a worker pool,
/// connections waiting in netpoll) share one symbolized stack, and every
/// function and file name is allocated once.
pub struct Symbolizer<'a> {
    pclntab: &'a Pclntab,
    version: &'a GoVersion,
    bias: u64,
    /// Symbolized stacks by their physical frames.
    stacks: PcMap<StackKey, Arc<[Frame]>>,
    /// Inline expansion of each physical frame, by `sym_pc`.
    expansions: PcMap<u64, Box<[Expanded<'a>]>>,
    /// Printed function names, by pclntab name.
    functions: HashMap<&'a str, Arc<str>>,
    files: HashMap<&'a str, Arc<str>>,
    empty: Arc<[Frame]>,
    /// Reused to build the key of each stack looked up.
    key: Vec<(u64, u64)>,
}

/// A stack's physical frames as `(pc, sym_pc)`, innermost first: all that
/// its source frames depend on.
type StackKey = Box<[(u64, u64)]>;

/// One source frame of a physical frame, before the context-dependent
/// `hidden` judgement.
struct Expanded<'a> {
    /// As in the pclntab (what [`runtime_shows`] judges).
    raw_name: &'a str,
    function: Arc<str>,
    file: Arc<str>,
    line: u32,
    inlined: bool,
    is_wrapper: bool,
}

impl<'a> Symbolizer<'a> {
    pub fn new(pclntab: &'a Pclntab, version: &'a GoVersion, bias: u64) -> Symbolizer<'a> {
        Symbolizer {
            pclntab,
            version,
            bias,
            stacks: PcMap::default(),
            expansions: PcMap::default(),
            functions: HashMap::new(),
            files: HashMap::new(),
            empty: Arc::new([]),
            key: Vec::new(),
        }
    }

    /// A stack without frames (shared, so it allocates nothing).
    pub fn no_frames(&self) -> Arc<[Frame]> {
        self.empty.clone()
    }

    /// `name` as the runtime prints it ([`name_for_print`]), shared.
    pub fn function_name(&mut self, name: &'a str) -> Arc<str> {
        self.functions
            .entry(name)
            .or_insert_with(|| name_for_print(name).into())
            .clone()
    }

    /// The file name `file`, shared.
    pub fn file_name(&mut self, file: &'a str) -> Arc<str> {
        self.files
            .entry(file)
            .or_insert_with(|| file.into())
            .clone()
    }

    /// Expands `physical` (innermost first) into source frames, innermost
    /// first.
    pub fn symbolize(&mut self, physical: &[PhysicalFrame]) -> Arc<[Frame]> {
        if physical.is_empty() {
            return self.no_frames();
        }
        // The frames depend only on each physical frame's pc (its function
        // and `+0x..`) and sym_pc (its lines and inlining).
        self.key.clear();
        self.key.extend(physical.iter().map(|p| (p.pc, p.sym_pc)));
        if let Some(frames) = self.stacks.get(self.key.as_slice()) {
            return frames.clone();
        }
        let frames: Arc<[Frame]> = self.expand_stack(physical).into();
        self.stacks
            .insert(self.key.as_slice().into(), frames.clone());
        frames
    }

    fn expand_stack(&mut self, physical: &[PhysicalFrame]) -> Vec<Frame> {
        let version = self.version;
        let mut frames = Vec::with_capacity(physical.len() + 4);
        let mut shown_any = false;
        let mut callee_is_panic = false;
        for phys in physical {
            let pc_offset = phys
                .pc
                .wrapping_sub(self.bias)
                .wrapping_sub(phys.func.entry);
            let source = self.expand(phys);
            // Before Go 1.16 the runtime judged an inlined frame by the name of
            // the function it was inlined into (runtime/traceback.go 1.15
            // gentraceback passes the physical funcInfo to showframe).
            let physical_name = source.last().map(|sf| sf.raw_name).unwrap_or("");
            for sf in source {
                let judged_name = if version.at_least(1, 16) {
                    sf.raw_name
                } else {
                    physical_name
                };
                let hidden = !runtime_shows(
                    version,
                    judged_name,
                    sf.is_wrapper,
                    !shown_any,
                    callee_is_panic,
                );
                shown_any |= !hidden;
                callee_is_panic = matches!(
                    sf.raw_name,
                    "runtime.gopanic" | "runtime.sigpanic" | "runtime.panicwrap"
                );
                frames.push(Frame {
                    function: sf.function.clone(),
                    file: sf.file.clone(),
                    line: sf.line,
                    inlined: sf.inlined,
                    hidden,
                    pc_offset: (!sf.inlined).then_some(pc_offset),
                });
            }
        }
        frames
    }

    /// The source frames of one physical frame, innermost first.
    fn expand(&mut self, phys: &PhysicalFrame) -> &[Expanded<'a>] {
        if !self.expansions.contains_key(&phys.sym_pc) {
            let pclntab = self.pclntab;
            let mut source = Vec::new();
            pclntab.source_frames(&phys.func, phys.sym_pc, &mut source);
            if source.is_empty() {
                source.push(SourceFrame {
                    function: pclntab.func_name(&phys.func),
                    file: "?",
                    line: 0,
                    inlined: false,
                    is_wrapper: false,
                    start_line: 0,
                });
            }
            let expanded = source
                .iter()
                .map(|sf| Expanded {
                    raw_name: sf.function,
                    function: self.function_name(sf.function),
                    file: self.file_name(sf.file),
                    line: sf.line,
                    inlined: sf.inlined,
                    is_wrapper: sf.is_wrapper,
                })
                .collect();
            self.expansions.insert(phys.sym_pc, expanded);
        }
        &self.expansions[&phys.sym_pc]
    }
}

/// A function name as the runtime prints it: the type arguments of a
/// generic function become `[...]` (runtime/traceback.go `funcNameForPrint`).
pub fn name_for_print(name: &str) -> String {
    if let (Some(open), Some(close)) = (name.find('['), name.rfind(']')) {
        if close > open {
            return format!("{}[...]{}", &name[..open], &name[close + 1..]);
        }
    }
    name.to_string()
}

/// Whether the runtime's default traceback (GOTRACEBACK=single) shows a
/// frame (runtime/traceback.go `showfuncinfo`).
pub fn runtime_shows(
    version: &GoVersion,
    name: &str,
    is_wrapper: bool,
    first_frame: bool,
    callee_is_panic: bool,
) -> bool {
    if is_wrapper && !callee_is_panic {
        return false;
    }
    if version.at_least(1, 26) && matches!(name, "runtime.runFinalizers" | "runtime.runCleanups") {
        return true;
    }
    if name == "runtime.gopanic" && !first_frame {
        return true;
    }
    name.contains('.') && (!name.starts_with("runtime.") || is_exported_runtime(version, name))
}

/// runtime/traceback.go `isExportedRuntime`; from Go 1.23 a method also
/// needs an exported receiver type.
fn is_exported_runtime(version: &GoVersion, name: &str) -> bool {
    let Some(rest) = name.strip_prefix("runtime.") else {
        return false;
    };
    let upper = |s: &str| s.bytes().next().is_some_and(|b| b.is_ascii_uppercase());
    if !version.at_least(1, 23) {
        return upper(rest);
    }
    let (receiver, func) = match rest.rfind('.') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => ("", rest),
    };
    let receiver = receiver
        .strip_prefix("(*")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(receiver);
    upper(func) && (receiver.is_empty() || upper(receiver))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> GoVersion {
        GoVersion::parse(s).unwrap()
    }

    #[test]
    fn generic_names_print_like_the_runtime() {
        assert_eq!(
            name_for_print("main.Map[go.shape.int,go.shape.string]"),
            "main.Map[...]"
        );
        assert_eq!(
            name_for_print("main.(*List[go.shape.int]).Push"),
            "main.(*List[...]).Push"
        );
        assert_eq!(name_for_print("main.main.func1"), "main.main.func1");
    }

    #[test]
    fn runtime_frames_are_hidden_like_the_runtime() {
        let go124 = v("go1.24.4");
        assert!(!runtime_shows(&go124, "runtime.gopark", false, true, false));
        assert!(runtime_shows(&go124, "runtime.Gosched", false, true, false));
        assert!(runtime_shows(&go124, "main.main", false, true, false));
        assert!(!runtime_shows(
            &go124,
            "runtime.gopanic",
            false,
            true,
            false
        ));
        assert!(runtime_shows(
            &go124,
            "runtime.gopanic",
            false,
            false,
            false
        ));
        assert!(!runtime_shows(&go124, "main.(*T).M", true, false, false));
        assert!(runtime_shows(&go124, "main.(*T).M", true, false, true));
        assert!(!runtime_shows(&go124, "gogo", false, false, false));
        // Receiver rules changed in 1.23.
        assert!(!runtime_shows(
            &go124,
            "runtime.(*mheap).Alloc",
            false,
            false,
            false
        ));
        assert!(!runtime_shows(
            &v("go1.21.1"),
            "runtime.(*Func).Name",
            false,
            false,
            false
        ));
        assert!(runtime_shows(
            &go124,
            "runtime.(*Func).Name",
            false,
            false,
            false
        ));
    }
}
