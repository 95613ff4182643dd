//! Physical frames turned into source-level frames: inlined calls expanded,
//! names printed as the runtime prints them, and runtime-internal frames
//! marked the way the runtime's default traceback hides them
//! (runtime/traceback.go `showfuncinfo`, `elideWrapperCalling`).

use crate::binary::{GoVersion, Pclntab, SourceFrame};
use crate::unwind::Stack;

/// One source-level frame of a goroutine's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Function name as the runtime prints it (generic shapes as `[...]`).
    pub function: String,
    pub file: String,
    pub line: u32,
    /// An inlined call: no machine frame of its own.
    pub inlined: bool,
    /// The runtime's default traceback would not show this frame.
    pub hidden: bool,
    /// For physical frames: pc minus function entry (the `+0x..` the
    /// runtime prints).
    pub pc_offset: Option<u64>,
}

/// Expands `stack` into source frames, innermost first.
pub fn symbolize(pclntab: &Pclntab, version: &GoVersion, stack: &Stack, bias: u64) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(stack.frames.len() + 4);
    let mut source = Vec::new();
    let mut shown_any = false;
    let mut callee_is_panic = false;
    for phys in &stack.frames {
        source.clear();
        pclntab.source_frames(&phys.func, phys.sym_pc, &mut source);
        if source.is_empty() {
            source.push(SourceFrame {
                function: pclntab.func_name(&phys.func),
                file: "?",
                line: 0,
                inlined: false,
                is_wrapper: false,
            });
        }
        // Before Go 1.16 the runtime judged an inlined frame by the name of
        // the function it was inlined into (runtime/traceback.go 1.15
        // gentraceback passes the physical funcInfo to showframe).
        let physical_name = source.last().map(|sf| sf.function).unwrap_or("");
        for sf in &source {
            let judged_name = if version.at_least(1, 16) {
                sf.function
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
                sf.function,
                "runtime.gopanic" | "runtime.sigpanic" | "runtime.panicwrap"
            );
            frames.push(Frame {
                function: name_for_print(sf.function),
                file: sf.file.to_string(),
                line: sf.line,
                inlined: sf.inlined,
                hidden,
                pc_offset: (!sf.inlined)
                    .then(|| phys.pc.wrapping_sub(bias).wrapping_sub(phys.func.entry)),
            });
        }
    }
    frames
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
