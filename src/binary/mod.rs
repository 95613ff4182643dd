//! Reading the target's executable: ELF segments and symbols, the Go version
//! from `.go.buildinfo`, the pclntab (functions, lines, frame sizes, inline
//! trees) and the runtime's struct layout: from DWARF, from a debug build
//! (`--bin`), or from gospy's per-version tables for stripped binaries.
//!
//! All addresses here are link-time addresses, as written in the file. The
//! process side adds the load bias for PIE.

pub mod buildinfo;
pub mod dwarf;
pub mod elf;
pub mod globals;
pub mod pclntab;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::layout::{Layout, LayoutMatch};
pub use buildinfo::GoVersion;
pub use elf::ElfImage;
pub use pclntab::{Func, Pclntab, SourceFrame};

/// Everything gospy knows about one Go executable.
pub struct Binary {
    pub path: PathBuf,
    pub image: Arc<ElfImage>,
    pub go_version: GoVersion,
    pub layout: Layout,
    /// Where `layout` came from.
    pub layout_source: LayoutSource,
    pub pclntab: Pclntab,
}

/// Where the runtime's struct layouts and global addresses came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSource {
    /// The binary's own DWARF and symbols.
    Dwarf,
    /// A debug build of the same program (`--bin`).
    DebugBinary(PathBuf),
    /// gospy's built-in table for the Go version, with globals found by
    /// decoding runtime code: a stripped binary, or one whose DWARF could
    /// not be read (`dwarf_error` says why).
    Table {
        matched: LayoutMatch,
        dwarf_error: Option<String>,
    },
}

impl std::fmt::Display for LayoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutSource::Dwarf => write!(f, "DWARF"),
            LayoutSource::DebugBinary(p) => write!(f, "DWARF of {}", p.display()),
            LayoutSource::Table {
                matched,
                dwarf_error,
            } => {
                match matched {
                    LayoutMatch::Exact { minor } => write!(f, "built-in table for Go 1.{minor}")?,
                    LayoutMatch::Nearest { wanted, known } => {
                        write!(f, "built-in table for Go 1.{known} (nearest to 1.{wanted})")?
                    }
                    LayoutMatch::None { reason } => return write!(f, "{reason}"),
                }
                match dwarf_error {
                    None => write!(f, ", no symbols"),
                    Some(e) => write!(f, ", the binary's DWARF is unreadable ({e})"),
                }
            }
        }
    }
}

/// How to open a binary.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Use this Go version instead of the one in `.go.buildinfo`
    /// (`--go-version`).
    pub go_version: Option<GoVersion>,
    /// A debug build of the same program to take DWARF and symbols from
    /// (`--bin`).
    pub debug_binary: Option<PathBuf>,
}

impl Binary {
    /// Opens and parses a Go executable. Fails with [`Error::NotGo`] for a
    /// non-Go ELF, [`Error::BadBinary`] for a corrupt one, and
    /// [`Error::Unsupported`] when the layout cannot be determined.
    pub fn open(path: &Path) -> Result<Binary> {
        Binary::open_with(path, &OpenOptions::default())
    }

    /// [`Binary::open`] with options. The layout comes from the debug
    /// binary if one is given (it must be the same build), else from the
    /// binary's DWARF, else (stripped) from the built-in table for its Go
    /// version with the globals found in the runtime's code.
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Binary> {
        let image = Arc::new(ElfImage::open(path)?);
        let go_version = match (&options.go_version, buildinfo::read_go_version(&image)) {
            (Some(v), _) => v.clone(),
            (None, Ok(v)) => v,
            (None, Err(reason)) => {
                return Err(Error::NotGo {
                    path: path.to_path_buf(),
                    reason,
                })
            }
        };
        let unsupported = |reason: String| Error::Unsupported {
            path: path.to_path_buf(),
            reason,
        };
        let bad = |reason: String| Error::BadBinary {
            path: path.to_path_buf(),
            reason,
        };
        let (layout, layout_source, pclntab) = if let Some(debug) = &options.debug_binary {
            let debug_image = ElfImage::open(debug)?;
            same_build(&image, &debug_image).map_err(|why| {
                unsupported(format!(
                    "--bin {} is not a debug build of this binary: {why}",
                    debug.display()
                ))
            })?;
            let layout = dwarf::read_layout(&debug_image)
                .map_err(|e| unsupported(format!("--bin {}: {e}", debug.display())))?;
            let pclntab = Pclntab::load(Arc::clone(&image), &go_version, &layout).map_err(bad)?;
            (layout, LayoutSource::DebugBinary(debug.clone()), pclntab)
        } else {
            // A binary whose DWARF is corrupt is treated like a stripped
            // one: the runtime it runs is still a Go version gospy knows.
            let from_dwarf = dwarf::has_dwarf(&image).then(|| dwarf::read_layout(&image));
            match from_dwarf {
                Some(Ok(layout)) => {
                    let pclntab =
                        Pclntab::load(Arc::clone(&image), &go_version, &layout).map_err(bad)?;
                    (layout, LayoutSource::Dwarf, pclntab)
                }
                Some(Err(dwarf_error)) => {
                    let why = format!("the binary's DWARF is unreadable ({dwarf_error})");
                    let (layout, matched, pclntab) = table_layout(&image, &go_version, &why)?;
                    let source = LayoutSource::Table {
                        matched,
                        dwarf_error: Some(dwarf_error),
                    };
                    (layout, source, pclntab)
                }
                None => {
                    let why = "the binary has no DWARF";
                    let (layout, matched, pclntab) = table_layout(&image, &go_version, why)?;
                    let source = LayoutSource::Table {
                        matched,
                        dwarf_error: None,
                    };
                    (layout, source, pclntab)
                }
            }
        };
        Ok(Binary {
            path: path.to_path_buf(),
            image,
            go_version,
            layout,
            layout_source,
            pclntab,
        })
    }
}

/// The layout of a binary without usable DWARF (`no_dwarf` says why, for
/// errors): gospy's built-in table for `version`, with the runtime's
/// globals found in its code.
fn table_layout(
    image: &Arc<ElfImage>,
    version: &GoVersion,
    no_dwarf: &str,
) -> Result<(Layout, LayoutMatch, Pclntab)> {
    let path = || image.path.clone();
    let (mut layout, matched) = Layout::for_version(version).map_err(|e| Error::Unsupported {
        path: path(),
        reason: format!("{e}; {no_dwarf}: a debug build of it can be given with --bin PATH"),
    })?;
    let (_, pclntab) =
        globals::load_pclntab(Arc::clone(image), version).map_err(|reason| Error::BadBinary {
            path: path(),
            reason,
        })?;
    let found =
        globals::find_globals(image, &pclntab, version).map_err(|e| Error::Unsupported {
            path: path(),
            reason: format!(
                "{no_dwarf}, and the runtime's globals could not be found in its code ({e}); \
                 give a debug build of it with --bin PATH"
            ),
        })?;
    layout.globals = found.to_layout_globals();
    Ok((layout, matched, pclntab))
}

/// Whether `debug` is a build of the same program as `running`: the same Go
/// build id, else the same GNU build id, else the same pclntab bytes
/// (functions, lines and code addresses all agree).
fn same_build(running: &ElfImage, debug: &ElfImage) -> std::result::Result<(), String> {
    if let (Some(a), Some(b)) = (&running.go_build_id, &debug.go_build_id) {
        return if a == b {
            Ok(())
        } else {
            Err(format!(
                "Go build id {b} differs from the running binary's {a}"
            ))
        };
    }
    if let (Some(a), Some(b)) = (&running.build_id, &debug.build_id) {
        return if a == b {
            Ok(())
        } else {
            Err(format!(
                "build id {b} differs from the running binary's {a}"
            ))
        };
    }
    fn table(image: &ElfImage) -> Option<&[u8]> {
        [".gopclntab", ".data.rel.ro.gopclntab"]
            .iter()
            .find_map(|name| image.section(name))
            .and_then(|sec| image.section_bytes(sec))
    }
    match (table(running), table(debug)) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (Some(_), Some(_)) => Err("their pclntabs differ".into()),
        _ => Err("neither has a build id, and their pclntabs cannot be compared".into()),
    }
}
