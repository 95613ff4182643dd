//! Reading the target's executable: ELF segments and symbols, the Go version
//! from `.go.buildinfo`, the pclntab (functions, lines, frame sizes, inline
//! trees) and, through DWARF, the runtime's struct layout.
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
use crate::layout::Layout;
pub use buildinfo::GoVersion;
pub use elf::ElfImage;
pub use pclntab::{Func, Pclntab, SourceFrame};

/// Everything gospy knows about one Go executable.
pub struct Binary {
    pub path: PathBuf,
    pub image: Arc<ElfImage>,
    pub go_version: GoVersion,
    pub layout: Layout,
    pub pclntab: Pclntab,
}

impl Binary {
    /// Opens and parses a Go executable. Fails with [`Error::NotGo`] for a
    /// non-Go ELF, [`Error::BadBinary`] for a corrupt one, and
    /// [`Error::Unsupported`] when the layout cannot be determined (e.g. no
    /// DWARF, until built-in tables exist).
    pub fn open(path: &Path) -> Result<Binary> {
        let image = Arc::new(ElfImage::open(path)?);
        let go_version = buildinfo::read_go_version(&image).map_err(|reason| Error::NotGo {
            path: path.to_path_buf(),
            reason,
        })?;
        let layout = dwarf::read_layout(&image).map_err(|reason| Error::Unsupported {
            path: path.to_path_buf(),
            reason,
        })?;
        let pclntab =
            Pclntab::load(Arc::clone(&image), &go_version, &layout).map_err(|reason| {
                Error::BadBinary {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        Ok(Binary {
            path: path.to_path_buf(),
            image,
            go_version,
            layout,
            pclntab,
        })
    }
}
