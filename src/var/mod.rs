//! `gospy var`: read a running Go program's package-level variables by
//! name, decoded through the DWARF types of its binary.
//!
//! [`Session::attach`] opens the process and the DWARF (of its own
//! executable, or of `--bin`, an unstripped build of the same program);
//! [`Session::inspector`] indexes it; [`Inspector::find`] resolves names and patterns (`main.counter`,
//! `main.*`) to variables; [`Inspector::read`] decodes one into a
//! [`TypedValue`] tree, following pointers up to a depth, with every length
//! read from the target bounded; [`render`] prints trees as Go-like text or
//! JSON.
//!
//! The target is read while it runs (unless the caller pauses it): each
//! value is a consistent read of its own bytes, but a map or slice the
//! program modifies meanwhile may be seen half-updated. Decoding never
//! trusts the target: a corrupt length or pointer yields
//! [`Value::Unreadable`], never a panic or a huge allocation.

mod decode;
pub mod dwarf;
mod maps;
pub mod render;
mod rtype;

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::binary::buildinfo::read_go_version;
use crate::binary::{ElfImage, GoVersion};
use crate::error::{Error, Result};
use crate::process::memory::{Memory, ProcessMemory};
use crate::process::Process;
use dwarf::{DwarfInfo, DwarfSections, VarEntry};

/// Limits of one decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Pointers followed from a variable, one after the other (a value
    /// further away is [`Value::Truncated`]).
    pub depth: usize,
    /// Elements shown per array, slice, map or channel.
    pub max_elements: usize,
    /// Bytes shown per string.
    pub max_string: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            depth: DEFAULT_DEPTH,
            max_elements: DEFAULT_MAX_ELEMENTS,
            max_string: DEFAULT_MAX_STRING,
        }
    }
}

/// Default of [`Options::depth`].
pub const DEFAULT_DEPTH: usize = 4;
/// Default of [`Options::max_elements`].
pub const DEFAULT_MAX_ELEMENTS: usize = 100;
/// Default of [`Options::max_string`].
pub const DEFAULT_MAX_STRING: usize = 1024;

/// Values decoded per variable at most (then [`Value::Truncated`]): bounds
/// the output of wide trees that the per-collection limit alone does not
/// (a slice of 100 maps of 100 slices...).
pub const MAX_VALUES: usize = 200_000;
/// Nesting of values (structs, arrays, elements...) at most: bounds the
/// recursion of the decoder on self-referencing data that has no pointer to
/// detect a cycle by.
pub const MAX_NESTING: usize = 100;
/// Target memory read per [`Inspector`] at most, in 4 KiB pages.
pub const MAX_READ_PAGES: usize = 64 * 1024;

/// A decoded value with its Go type name.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedValue {
    /// Go type name as in DWARF (`int64`, `*main.Node`, `map[string]int`).
    pub type_name: String,
    /// The value.
    pub value: Value,
}

/// A decoded Go value. Addresses are the target's.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any signed integer.
    Int(i64),
    /// Any unsigned integer, `uintptr` included.
    Uint(u64),
    /// `float32` (converted exactly) or `float64`.
    Float(f64),
    /// `complex64` (converted exactly) or `complex128`.
    Complex {
        /// Real part.
        re: f64,
        /// Imaginary part.
        im: f64,
    },
    /// `bool`.
    Bool(bool),
    /// A string.
    String {
        /// The first [`Options::max_string`] bytes.
        bytes: Vec<u8>,
        /// The full length in bytes.
        len: u64,
    },
    /// A non-nil pointer.
    Pointer {
        /// Where it points.
        addr: u64,
        /// What it points to (possibly [`Value::Cycle`],
        /// [`Value::Truncated`] or [`Value::Unreadable`]).
        target: Box<TypedValue>,
    },
    /// A non-nil `unsafe.Pointer` (not followed: its type is unknown).
    UnsafePointer(u64),
    /// A non-nil func value.
    Func {
        /// Address of its code.
        entry: u64,
        /// Name of the function there, from the symbol table.
        function: Option<String>,
    },
    /// Fields (name, value) in declaration order.
    Struct(Vec<(String, TypedValue)>),
    /// An array.
    Array {
        /// Number of elements.
        len: u64,
        /// The first [`Options::max_elements`] elements.
        items: Vec<TypedValue>,
    },
    /// A non-nil slice.
    Slice {
        /// Address of the backing array.
        addr: u64,
        /// Length.
        len: u64,
        /// Capacity.
        cap: u64,
        /// The first [`Options::max_elements`] elements.
        items: Vec<TypedValue>,
    },
    /// A non-nil map.
    Map {
        /// Address of the map header.
        addr: u64,
        /// Number of entries.
        len: u64,
        /// (key, value) pairs: all of them, or [`Options::max_elements`];
        /// sorted by key when keys are numbers, strings or booleans.
        entries: Vec<(TypedValue, TypedValue)>,
    },
    /// A non-nil interface.
    Interface {
        /// Name of the dynamic type.
        dynamic_type: String,
        /// The value, of the dynamic type.
        value: Box<TypedValue>,
    },
    /// A non-nil channel.
    Chan {
        /// Address of its `hchan`.
        addr: u64,
        /// Element type name.
        elem_type: String,
        /// Values in the buffer.
        len: u64,
        /// Buffer size.
        cap: u64,
        /// Whether it is closed.
        closed: bool,
        /// `both`, `send` or `recv`.
        dir: &'static str,
        /// The buffered values, oldest first (at most
        /// [`Options::max_elements`]).
        items: Vec<TypedValue>,
    },
    /// A nil pointer, slice, map, channel, func or interface.
    Nil,
    /// A pointer (or slice, map, channel, boxed interface value) to a value
    /// that is already being shown further up the tree.
    Cycle {
        /// Where it points.
        addr: u64,
    },
    /// A value that could not be read, and why.
    Unreadable(String),
    /// A value left out because of a limit, and which one.
    Truncated(String),
}

impl TypedValue {
    /// A value with its type name.
    pub fn new(type_name: impl Into<String>, value: Value) -> TypedValue {
        TypedValue {
            type_name: type_name.into(),
            value,
        }
    }
}

/// One variable read from the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// Full Go name (`main.counter`).
    pub name: String,
    /// Address in the target.
    pub address: u64,
    /// Its value.
    pub value: TypedValue,
}

/// A live Go process and the DWARF that describes its variables: what
/// [`Session::inspector`] borrows.
pub struct Session {
    process: Process,
    exe: ElfImage,
    /// The `--bin` file, when the DWARF comes from there.
    debug_binary: Option<ElfImage>,
    go_version: GoVersion,
    bias: u64,
    sections: DwarfSections,
    addr_map: AddrMap,
}

impl Session {
    /// Opens process `pid` and the DWARF of its executable, or of
    /// `debug_binary` (`--bin`: an unstripped build of the same program)
    /// when given.
    pub fn attach(pid: i32, debug_binary: Option<&Path>) -> Result<Session> {
        let process = Process::open(pid)?;
        let not_go = |reason: String| Error::NotGo {
            path: process.exe_display().into(),
            reason: format!("{reason}; is PID {pid} a Go program?"),
        };
        let exe = ElfImage::open(&process.exe_path()).map_err(|e| match e {
            Error::BadBinary { reason, .. } => not_go(reason),
            other => other,
        })?;
        let go_version = read_go_version(&exe).map_err(not_go)?;
        let bias = process.load_bias(&exe)?;
        let (sections, addr_map, debug_image) = match debug_binary {
            None => {
                let sections = dwarf::load_sections(&exe.data).map_err(|reason| {
                    Error::Other(format!("{}: {reason}", process.exe_display()))
                })?;
                (sections, AddrMap::identity(), None)
            }
            Some(path) => {
                let image = ElfImage::open(path)?;
                let version = read_go_version(&image).map_err(|reason| Error::NotGo {
                    path: path.to_path_buf(),
                    reason,
                })?;
                if version.raw != go_version.raw {
                    return Err(Error::Other(format!(
                        "--bin {} was built with {}, but process {pid} with {}: \
                         pass a build of the same program with the same Go version",
                        path.display(),
                        version.raw,
                        go_version.raw
                    )));
                }
                let sections = dwarf::load_sections(&image.data).map_err(|reason| {
                    Error::Other(format!("--bin {}: {reason}", path.display()))
                })?;
                let map = AddrMap::between(&image, &exe)
                    .map_err(|e| Error::Other(format!("--bin {}: {e}", path.display())))?;
                (sections, map, Some(image))
            }
        };
        Ok(Session {
            process,
            exe,
            debug_binary: debug_image,
            go_version,
            bias,
            sections,
            addr_map,
        })
    }

    /// An inspector of the process's variables.
    pub fn inspector(&self) -> Result<Inspector<'_>> {
        let dwarf = DwarfInfo::new(&self.sections)
            .map_err(|reason| Error::Other(format!("{}: {reason}", self.dwarf_path().display())))?;
        Ok(Inspector {
            session: self,
            dwarf,
            mem: PageCache::new(self.process.memory()),
            types_base: OnceCell::new(),
            functions: OnceCell::new(),
            runtime_types: RefCell::new(HashMap::new()),
            runtime_types_only: false,
        })
    }

    /// The target process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The Go version the target was built with.
    pub fn go_version(&self) -> &GoVersion {
        &self.go_version
    }

    /// The file the DWARF comes from.
    pub fn dwarf_path(&self) -> PathBuf {
        match &self.debug_binary {
            Some(image) => image.path.clone(),
            None => PathBuf::from(self.process.exe_display()),
        }
    }

    /// The runtime address of a link-time address of the DWARF binary.
    fn runtime_addr(&self, link: u64) -> u64 {
        self.addr_map.debug_to_exe(link).wrapping_add(self.bias)
    }

    /// The file the DWARF and symbols come from.
    fn dwarf_image(&self) -> &ElfImage {
        self.debug_binary.as_ref().unwrap_or(&self.exe)
    }
}

/// Finds and decodes the variables of a [`Session`]'s process.
pub struct Inspector<'s> {
    session: &'s Session,
    dwarf: DwarfInfo<'s>,
    mem: PageCache,
    /// Where the runtime type descriptors start in the target
    /// (`runtime.firstmoduledata.types`), once looked up.
    types_base: OnceCell<Option<u64>>,
    /// Function symbols of the DWARF binary by link-time address.
    functions: OnceCell<HashMap<u64, String>>,
    /// Types read from runtime type descriptors, by descriptor address.
    runtime_types: RefCell<HashMap<u64, Rc<dwarf::GoType>>>,
    /// See [`Inspector::set_runtime_types_only`].
    runtime_types_only: bool,
}

impl<'s> Inspector<'s> {
    /// The variables named by `patterns`, in order and without duplicates:
    /// full Go names (`main.counter`, `net/http.DefaultClient`) or patterns
    /// with `*` (any run of characters) and `?` (one character), such as
    /// `main.*`. A name that matches nothing is an error that lists close
    /// matches.
    pub fn find(&self, patterns: &[String]) -> Result<Vec<VarEntry>> {
        let mut out: Vec<VarEntry> = Vec::new();
        let mut seen = HashSet::new();
        for pattern in patterns {
            let found = self.find_one(pattern)?;
            for v in found {
                if seen.insert(v.name.clone()) {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    fn find_one(&self, pattern: &str) -> Result<Vec<VarEntry>> {
        let is_glob = pattern.contains(['*', '?']);
        // Variables live in the unit of their package, named by its import
        // path: only those units are read. The literal start of a pattern
        // narrows them down the same way.
        let literal = match pattern.find(['*', '?']) {
            Some(i) => &pattern[..i],
            None => pattern,
        };
        let keep = |unit: &str| {
            let prefix = format!("{unit}.");
            literal.starts_with(&prefix) || (is_glob && prefix.starts_with(literal))
        };
        let vars = self.dwarf.variables(&keep).map_err(Error::Other)?;
        let found: Vec<VarEntry> = vars
            .into_iter()
            .filter(|v| {
                if is_glob {
                    glob_match(pattern.as_bytes(), v.name.as_bytes())
                } else {
                    v.name == pattern
                }
            })
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
        Err(Error::Other(self.not_found_message(pattern, is_glob)))
    }

    fn not_found_message(&self, pattern: &str, is_glob: bool) -> String {
        let what = if is_glob {
            format!("no variable matches {pattern:?}")
        } else {
            format!("no package-level variable {pattern:?}")
        };
        let packages = self.dwarf.packages();
        let has_package = packages
            .iter()
            .any(|p| pattern.starts_with(&format!("{p}.")));
        if !has_package && !is_glob && !pattern.contains('.') {
            // A bare name: look for it in every package.
            let all = self.dwarf.variables(&|_| true).unwrap_or_default();
            let suffix = format!(".{pattern}");
            let hits: Vec<&str> = all
                .iter()
                .filter(|v| v.name.ends_with(&suffix))
                .map(|v| v.name.as_str())
                .take(5)
                .collect();
            if !hits.is_empty() {
                return format!(
                    "{what}: names are qualified by package; did you mean {}?",
                    hits.join(", ")
                );
            }
            return format!("{what}: names are qualified by package, like main.{pattern}");
        }
        if !has_package {
            let package = match pattern.rfind('.') {
                Some(i) if !is_glob => &pattern[..i],
                _ => pattern,
            };
            let mut close: Vec<(usize, &str)> = packages
                .iter()
                .map(|p| (distance(package, p), *p))
                .filter(|&(d, p)| d <= 3 || p.ends_with(&format!("/{package}")))
                .collect();
            close.sort();
            let close: Vec<&str> = close.into_iter().take(5).map(|(_, p)| p).collect();
            return if close.is_empty() {
                format!("{what}: the program has no package {package:?} with variables")
            } else {
                format!(
                    "{what}: the program has no package {package:?}; did you mean {}?",
                    close.join(", ")
                )
            };
        }
        let keep = |unit: &str| pattern.starts_with(&format!("{unit}."));
        let vars = self.dwarf.variables(&keep).unwrap_or_default();
        let short = |s: &str| s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase();
        let want = short(pattern);
        let mut close: Vec<(usize, &str)> = vars
            .iter()
            .map(|v| {
                let have = short(&v.name);
                let d = if have.contains(&want) || want.contains(&have) {
                    0
                } else {
                    distance(&want, &have)
                };
                (d, v.name.as_str())
            })
            .filter(|&(d, _)| d <= 2)
            .collect();
        close.sort();
        let close: Vec<&str> = close.into_iter().take(5).map(|(_, n)| n).collect();
        if close.is_empty() {
            format!("{what} (the package has {} variables)", vars.len())
        } else {
            format!("{what}; close matches: {}", close.join(", "))
        }
    }

    /// Reads and decodes `var` within `opts`.
    pub fn read(&self, var: &VarEntry, opts: &Options) -> Result<Variable> {
        let address = self.session.runtime_addr(var.addr);
        let value = decode::Decoder::new(self, *opts).value_at(address, var.ty, 0);
        if let Some(err) = self.mem.fatal.borrow_mut().take() {
            return Err(err);
        }
        Ok(Variable {
            name: var.name.clone(),
            address,
            value,
        })
    }

    /// Decode the values held by interfaces from the target's runtime type
    /// descriptors even when DWARF describes their types (except maps,
    /// whose layout only DWARF gives). That is the fallback for dynamic
    /// types without DWARF; this switch lets tests check it against types
    /// that have DWARF.
    pub fn set_runtime_types_only(&mut self, on: bool) {
        self.runtime_types_only = on;
        self.runtime_types.borrow_mut().clear();
    }

    /// Forgets what was read from the target, so that the next
    /// [`Inspector::read`] sees current values.
    pub fn refresh(&self) {
        self.mem.pages.borrow_mut().clear();
    }

    /// Where the runtime's type descriptors start in the target:
    /// `DW_AT_go_runtime_type` values are offsets from there.
    fn types_base(&self) -> Option<u64> {
        *self.types_base.get_or_init(|| {
            // runtime.firstmoduledata.types (runtime/symtab.go moduledata)
            // holds it in every Go version; the symbol runtime.types is the
            // same address when the binary has symbols.
            let from_var = (|| {
                let keep = |u: &str| u == "runtime";
                let vars = self.dwarf.variables(&keep).ok()?;
                let md = vars.iter().find(|v| v.name == "runtime.firstmoduledata")?;
                let ty = self.dwarf.ty(md.ty).ok()?;
                let field = ty.field("types")?;
                let base = self
                    .mem
                    .read_u64(self.session.runtime_addr(md.addr) + field.offset)?;
                (base != 0).then_some(base)
            })();
            from_var.or_else(|| {
                let image = self.session.dwarf_image();
                image
                    .symbol("runtime.types")
                    .map(|s| self.session.runtime_addr(s.addr))
            })
        })
    }

    /// The name of the function whose entry is `pc` (a runtime address).
    fn function_at(&self, pc: u64) -> Option<String> {
        let functions = self.functions.get_or_init(|| {
            let image = self.session.dwarf_image();
            image
                .symbols()
                .filter(|(_, s)| {
                    image
                        .segment_containing(s.addr)
                        .is_some_and(|seg| seg.is_exec())
                })
                .map(|(name, s)| (s.addr, name.to_string()))
                .collect()
        });
        let link = self
            .session
            .addr_map
            .exe_to_debug(pc.wrapping_sub(self.session.bias))?;
        functions.get(&link).cloned()
    }
}

/// Translates link-time addresses of the DWARF binary (`--bin`) into those
/// of the target's executable, section by section: a build with
/// `-ldflags=-s -w` differs from the default build of the same source only
/// by the few bytes of build information that record the flags, which
/// shift the later sections as a whole.
struct AddrMap {
    /// (start, end, start in the executable), by start.
    pieces: Vec<(u64, u64, u64)>,
}

impl AddrMap {
    fn identity() -> AddrMap {
        AddrMap { pieces: Vec::new() }
    }

    /// The map from `debug`'s sections to `exe`'s. Fails unless they
    /// look like builds of the same program: the same Go build id, or the
    /// same sections with the same sizes except those that record the build
    /// flags (`.go.buildinfo`, and `.rodata`, which holds the flags as a
    /// string after the type descriptors; checked on Go 1.15-1.27 between
    /// default and `-ldflags=-s -w` builds).
    fn between(debug: &ElfImage, exe: &ElfImage) -> std::result::Result<AddrMap, String> {
        let same_build = matches!(
            (&debug.go_build_id, &exe.go_build_id),
            (Some(a), Some(b)) if a == b
        );
        let mut pieces = Vec::new();
        let mut differ = Vec::new();
        for s in debug.sections.iter().filter(|s| s.alloc && s.addr != 0) {
            let Some(e) = exe
                .sections
                .iter()
                .find(|e| e.alloc && e.name == s.name && e.addr != 0)
            else {
                differ.push(format!("{} (missing from the target)", s.name));
                continue;
            };
            let flags_only = matches!(
                s.name.as_str(),
                ".go.buildinfo" | ".note.go.buildid" | ".rodata"
            );
            if e.size != s.size && !flags_only {
                differ.push(format!("{} ({} vs {} bytes)", s.name, s.size, e.size));
            }
            pieces.push((s.addr, s.addr.saturating_add(s.size.max(e.size)), e.addr));
        }
        if !same_build && !differ.is_empty() {
            return Err(format!(
                "not a build of the target's program: sections differ: {}; pass a build of \
                 the same source with the same Go version and flags (-s and -w aside)",
                differ.join(", ")
            ));
        }
        pieces.sort_unstable();
        Ok(AddrMap { pieces })
    }

    fn debug_to_exe(&self, addr: u64) -> u64 {
        self.pieces
            .iter()
            .find(|&&(start, end, _)| (start..end).contains(&addr))
            .map(|&(start, _, to)| to.wrapping_add(addr - start))
            .unwrap_or(addr)
    }

    fn exe_to_debug(&self, addr: u64) -> Option<u64> {
        if self.pieces.is_empty() {
            return Some(addr);
        }
        self.pieces
            .iter()
            .find(|&&(start, end, to)| addr >= to && addr - to < end - start)
            .map(|&(start, _, to)| start + (addr - to))
    }
}

const PAGE: u64 = 4096;

/// The target's memory, read a page at a time and kept: decoding reads many
/// small pieces (fields, slots, headers) that mostly share pages. Remembers
/// the first error that concerns the whole process (it exited, permission
/// denied) for the caller to report instead of a tree of unreadable values.
struct PageCache {
    mem: ProcessMemory,
    pages: RefCell<HashMap<u64, Option<Rc<[u8]>>>>,
    fatal: RefCell<Option<Error>>,
}

impl PageCache {
    fn new(mem: ProcessMemory) -> PageCache {
        PageCache {
            mem,
            pages: RefCell::new(HashMap::new()),
            fatal: RefCell::new(None),
        }
    }

    fn page(&self, base: u64) -> Option<Rc<[u8]>> {
        if let Some(p) = self.pages.borrow().get(&base) {
            return p.clone();
        }
        if self.pages.borrow().len() >= MAX_READ_PAGES || self.fatal.borrow().is_some() {
            return None;
        }
        let mut buf = vec![0u8; PAGE as usize];
        let page = match self.mem.read(base, &mut buf) {
            Ok(()) => Some(Rc::from(buf)),
            Err(e @ (Error::PermissionDenied { .. } | Error::ProcessExited { .. })) => {
                *self.fatal.borrow_mut() = Some(e);
                None
            }
            Err(_) => None,
        };
        self.pages.borrow_mut().insert(base, page.clone());
        page
    }
}

impl Memory for PageCache {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if addr.checked_add(buf.len() as u64).is_none() {
            return false;
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr + done as u64;
            let base = at & !(PAGE - 1);
            let Some(page) = self.page(base) else {
                return false;
            };
            let off = (at - base) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[off..off + n]);
            done += n;
        }
        true
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of bytes and
/// `?` any one byte.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative matcher with backtracking to the last star: linear in
    // practice, no recursion.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Edit distance between two short strings (for "did you mean").
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"main.*", b"main.counter"));
        assert!(glob_match(b"main.*", b"main."));
        assert!(!glob_match(b"main.*", b"mainx.counter"));
        assert!(glob_match(b"*.Default*", b"net/http.DefaultClient"));
        assert!(glob_match(b"main.v?nt", b"main.vInt"));
        assert!(!glob_match(b"main.v?nt", b"main.vIInt"));
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(!glob_match(b"a*b*c", b"aXbYbZ"));
        assert!(glob_match(b"main.counter", b"main.counter"));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("counter", "counter"), 0);
        assert_eq!(distance("countr", "counter"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn addr_map_roundtrip() {
        let map = AddrMap {
            pieces: vec![(0x1000, 0x2000, 0x1000), (0x5000, 0x6000, 0x5020)],
        };
        assert_eq!(map.debug_to_exe(0x1010), 0x1010);
        assert_eq!(map.debug_to_exe(0x5010), 0x5030);
        assert_eq!(map.exe_to_debug(0x5030), Some(0x5010));
        assert_eq!(map.debug_to_exe(0x9000), 0x9000);
        assert_eq!(map.exe_to_debug(0x9000), None);
        assert_eq!(AddrMap::identity().exe_to_debug(0x42), Some(0x42));
    }
}
