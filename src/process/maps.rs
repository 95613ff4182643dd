//! `/proc/PID/maps` and the load bias of the main executable.
//!
//! The load bias is what gets added to a link-time address from the file to
//! get the address in the running process: 0 for a non-PIE executable, the
//! base chosen by the kernel for a PIE. Go's internal linker builds PIEs whose
//! first PT_LOAD has `p_vaddr` 0x400000 (not 0), so the bias is *not* simply
//! the start of the first mapping (docs/go-runtime §1.5).

use std::path::Path;

use crate::error::{Error, Result};

/// Page size of linux/amd64. The kernel maps segments at page granularity.
const PAGE_MASK: u64 = !0xfff;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// `rwxp` / `r--s` etc., as in the file.
    pub perms: [u8; 4],
    /// File offset of `start` (0 for anonymous mappings).
    pub offset: u64,
    /// Device of the mapped file as (major, minor); (0, 0) when anonymous.
    pub dev: (u32, u32),
    /// Inode of the mapped file; 0 when anonymous.
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`); empty when
    /// anonymous. A file that was unlinked has the suffix ` (deleted)`.
    pub path: String,
}

impl MapEntry {
    pub fn is_readable(&self) -> bool {
        self.perms[0] == b'r'
    }
    pub fn is_writable(&self) -> bool {
        self.perms[1] == b'w'
    }
    pub fn is_executable(&self) -> bool {
        self.perms[2] == b'x'
    }
    pub fn is_shared(&self) -> bool {
        self.perms[3] == b's'
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// True when the mapped file has been unlinked (path ends in ` (deleted)`).
    pub fn is_deleted(&self) -> bool {
        self.path.ends_with(" (deleted)")
    }
    /// The path without a ` (deleted)` suffix.
    pub fn file_path(&self) -> &str {
        self.path.strip_suffix(" (deleted)").unwrap_or(&self.path)
    }
    /// The permissions as text, e.g. `r-xp`.
    pub fn perms_str(&self) -> &str {
        std::str::from_utf8(&self.perms).unwrap_or("????")
    }
}

/// Parses the text of `/proc/PID/maps`. Lines that do not parse are skipped
/// (the format has been stable forever; this only guards against surprises).
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// Reads and parses `/proc/PID/maps`.
pub fn read_maps(pid: i32) -> Result<Vec<MapEntry>> {
    let path = format!("/proc/{pid}/maps");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_maps(&text)),
        Err(e) => Err(super::proc_error(pid, e, "read the memory map of", &path)),
    }
}

fn parse_line(line: &str) -> Option<MapEntry> {
    // start-end perms offset dev inode [path]; the path may contain spaces.
    let mut rest = line;
    let mut next = || -> Option<&str> {
        let s = rest.trim_start_matches(' ');
        let end = s.find(' ').unwrap_or(s.len());
        let (tok, tail) = s.split_at(end);
        rest = tail;
        if tok.is_empty() {
            None
        } else {
            Some(tok)
        }
    };
    let range = next()?;
    let perms_s = next()?;
    let offset_s = next()?;
    let dev_s = next()?;
    let inode_s = next()?;
    let path = rest.trim_start_matches(' ').to_string();

    let (start_s, end_s) = range.split_once('-')?;
    let start = u64::from_str_radix(start_s, 16).ok()?;
    let end = u64::from_str_radix(end_s, 16).ok()?;
    if end < start {
        return None;
    }
    let pb = perms_s.as_bytes();
    if pb.len() != 4 {
        return None;
    }
    let perms = [pb[0], pb[1], pb[2], pb[3]];
    let offset = u64::from_str_radix(offset_s, 16).ok()?;
    let (maj, min) = dev_s.split_once(':')?;
    let dev = (
        u32::from_str_radix(maj, 16).ok()?,
        u32::from_str_radix(min, 16).ok()?,
    );
    let inode = inode_s.parse::<u64>().ok()?;
    Some(MapEntry {
        start,
        end,
        perms,
        offset,
        dev,
        inode,
        path,
    })
}

/// What identifies the main executable's file among the mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExeIdentity {
    /// (major, minor) of the file's device, from `stat /proc/PID/exe`.
    pub dev: Option<(u32, u32)>,
    pub inode: Option<u64>,
    /// Target of the `/proc/PID/exe` link, possibly with ` (deleted)`.
    pub path: Option<String>,
}

impl ExeIdentity {
    /// Identity of the executable of `pid`: `stat` through `/proc/PID/exe`
    /// (which reaches the file even in another mount namespace or when it
    /// was deleted) and the link text.
    pub fn of_process(pid: i32) -> ExeIdentity {
        use std::os::unix::fs::MetadataExt;
        let link = format!("/proc/{pid}/exe");
        let (dev, inode) = match std::fs::metadata(&link) {
            Ok(md) => {
                let d = md.dev();
                (Some((libc::major(d), libc::minor(d))), Some(md.ino()))
            }
            Err(_) => (None, None),
        };
        let path = std::fs::read_link(&link)
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        ExeIdentity { dev, inode, path }
    }
}

/// The first PT_LOAD (lowest file offset) of the executable: link-time
/// virtual address and file offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstLoad {
    pub vaddr: u64,
    pub offset: u64,
}

/// Finds the mapping of the main executable that holds its first PT_LOAD.
///
/// Matches by device+inode first, then by path (ignoring ` (deleted)`), then
/// by inode alone (overlayfs may report another device in maps than `stat`
/// does), and requires the mapping's file offset to equal the segment's
/// offset rounded down to a page.
pub fn find_exe_mapping<'a>(
    maps: &'a [MapEntry],
    first: FirstLoad,
    exe: &ExeIdentity,
) -> Option<&'a MapEntry> {
    let want_off = first.offset & PAGE_MASK;
    let candidates = || {
        maps.iter()
            .filter(move |m| m.offset == want_off && m.inode != 0)
    };
    if let (Some(dev), Some(inode)) = (exe.dev, exe.inode) {
        if let Some(m) = candidates().find(|m| m.dev == dev && m.inode == inode) {
            return Some(m);
        }
    }
    if let Some(path) = &exe.path {
        let want = path.strip_suffix(" (deleted)").unwrap_or(path);
        if !want.is_empty() {
            if let Some(m) = candidates().find(|m| m.file_path() == want) {
                return Some(m);
            }
        }
    }
    if let Some(inode) = exe.inode {
        if let Some(m) = candidates().find(|m| m.inode == inode) {
            return Some(m);
        }
    }
    None
}

/// Load bias of the main executable: `mapping.start - (first.vaddr & !0xfff)`
/// for the mapping found by [`find_exe_mapping`]. 0 for non-PIE executables.
pub fn load_bias(maps: &[MapEntry], first: FirstLoad, exe: &ExeIdentity) -> Option<u64> {
    let m = find_exe_mapping(maps, first, exe)?;
    Some(m.start.wrapping_sub(first.vaddr & PAGE_MASK))
}

/// Load bias from the auxiliary vector: `AT_PHDR - link-time address of the
/// program headers`. `e_phoff` is the file offset of the program headers,
/// which lie inside the first PT_LOAD. Used as a fallback when no mapping
/// matches; wrong for a program started as `ld.so ./prog`, where `AT_PHDR`
/// describes the loader.
pub fn load_bias_from_auxv(auxv: &[u8], first: FirstLoad, e_phoff: u64) -> Option<u64> {
    const AT_PHDR: u64 = 3;
    let phdr = auxv_value(auxv, AT_PHDR)?;
    let phdr_vaddr = first
        .vaddr
        .checked_add(e_phoff.checked_sub(first.offset)?)?;
    Some(phdr.wrapping_sub(phdr_vaddr))
}

/// Looks up one entry of a raw `/proc/PID/auxv` (pairs of u64).
pub fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    for pair in auxv.chunks_exact(16) {
        let k = u64::from_le_bytes(pair[0..8].try_into().ok()?);
        let v = u64::from_le_bytes(pair[8..16].try_into().ok()?);
        if k == 0 {
            return None;
        }
        if k == key {
            return Some(v);
        }
    }
    None
}

/// Reads `e_phoff` from an ELF64 header.
pub(crate) fn read_e_phoff(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut hdr = [0u8; 64];
    f.read_exact(&mut hdr).ok()?;
    if &hdr[0..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return None;
    }
    Some(u64::from_le_bytes(hdr[0x20..0x28].try_into().ok()?))
}

/// Computes the bias for `pid` from its maps, falling back to the auxv.
pub(crate) fn load_bias_for(pid: i32, exe_path: &Path, first: FirstLoad) -> Result<u64> {
    let maps = read_maps(pid)?;
    let exe = ExeIdentity::of_process(pid);
    if let Some(bias) = load_bias(&maps, first, &exe) {
        return Ok(bias);
    }
    if let (Ok(auxv), Some(phoff)) = (
        std::fs::read(format!("/proc/{pid}/auxv")),
        read_e_phoff(exe_path),
    ) {
        if let Some(bias) = load_bias_from_auxv(&auxv, first, phoff) {
            // Only trust it if it points into a mapping of some file.
            let start = (first.vaddr & PAGE_MASK).wrapping_add(bias);
            if maps.iter().any(|m| m.contains(start) && m.inode != 0) {
                return Ok(bias);
            }
        }
    }
    Err(Error::Other(format!(
        "cannot find the executable {} in the memory map of process {pid} \
         (no mapping at file offset {:#x})",
        exe.path.as_deref().unwrap_or("?"),
        first.offset & PAGE_MASK
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_PIE: &str = "\
7f0000400000-7f00004c5000 r-xp 00000000 fd:01 1234                       /app/server
7f00004c5000-7f0000600000 r--p 000c5000 fd:01 1234                       /app/server
7f0000600000-7f0000620000 rw-p 00200000 fd:01 1234                       /app/server
7f0000620000-7f0000650000 rw-p 00000000 00:00 0 
c000000000-c004000000 rw-p 00000000 00:00 0 
7ffd1c3de000-7ffd1c3ff000 rw-p 00000000 00:00 0                          [stack]
7ffd1c3ff000-7ffd1c403000 r--p 00000000 00:00 0                          [vvar]
";

    #[test]
    fn parses_lines() {
        let maps = parse_maps(GO_PIE);
        assert_eq!(maps.len(), 7);
        let m = &maps[0];
        assert_eq!(m.start, 0x7f0000400000);
        assert_eq!(m.end, 0x7f00004c5000);
        assert_eq!(m.perms_str(), "r-xp");
        assert!(m.is_readable() && m.is_executable() && !m.is_writable() && !m.is_shared());
        assert_eq!(m.offset, 0);
        assert_eq!(m.dev, (0xfd, 1));
        assert_eq!(m.inode, 1234);
        assert_eq!(m.path, "/app/server");
        assert_eq!(maps[3].path, "");
        assert_eq!(maps[3].inode, 0);
        assert_eq!(maps[5].path, "[stack]");
    }

    #[test]
    fn parses_paths_with_spaces_and_deleted() {
        let maps = parse_maps(
            "00400000-00401000 r-xp 00001000 08:02 77 /tmp/my dir/prog (deleted)\n\
             garbage line\n",
        );
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].path, "/tmp/my dir/prog (deleted)");
        assert!(maps[0].is_deleted());
        assert_eq!(maps[0].file_path(), "/tmp/my dir/prog");
        assert_eq!(maps[0].offset, 0x1000);
    }

    #[test]
    fn go_internal_pie_bias_is_not_mapping_start() {
        let maps = parse_maps(GO_PIE);
        let first = FirstLoad {
            vaddr: 0x400000,
            offset: 0,
        };
        let exe = ExeIdentity {
            dev: Some((0xfd, 1)),
            inode: Some(1234),
            path: Some("/app/server".into()),
        };
        assert_eq!(load_bias(&maps, first, &exe), Some(0x7f0000000000));
    }

    #[test]
    fn non_pie_bias_is_zero() {
        let maps = parse_maps(
            "00400000-00480000 r-xp 00000000 fd:01 99 /usr/bin/prog\n\
             00480000-00500000 r--p 00080000 fd:01 99 /usr/bin/prog\n",
        );
        let first = FirstLoad {
            vaddr: 0x400000,
            offset: 0,
        };
        let exe = ExeIdentity {
            dev: Some((0xfd, 1)),
            inode: Some(99),
            path: None,
        };
        assert_eq!(load_bias(&maps, first, &exe), Some(0));
    }

    #[test]
    fn matches_deleted_path_and_offsets() {
        // First PT_LOAD at offset 0x40 (not page aligned) in a deleted file,
        // another library mapped with the same offset earlier in the map.
        let maps = parse_maps(
            "55d000000000-55d000001000 r--p 00000000 08:01 5 /lib/other.so\n\
             55e000000000-55e000002000 r--p 00001000 08:01 6 /tmp/prog (deleted)\n\
             55e000002000-55e000003000 r--p 00000000 08:01 6 /tmp/prog (deleted)\n",
        );
        let first = FirstLoad {
            vaddr: 0x40,
            offset: 0x40,
        };
        // Device/inode unknown (stat failed): path match, ignoring (deleted).
        let exe = ExeIdentity {
            dev: None,
            inode: None,
            path: Some("/tmp/prog (deleted)".into()),
        };
        assert_eq!(load_bias(&maps, first, &exe), Some(0x55e000002000));
        // Device/inode mismatch (overlayfs): inode alone.
        let exe = ExeIdentity {
            dev: Some((0, 0x2a)),
            inode: Some(6),
            path: Some("/elsewhere/prog".into()),
        };
        assert_eq!(load_bias(&maps, first, &exe), Some(0x55e000002000));
        // Nothing matches.
        let exe = ExeIdentity {
            dev: Some((8, 1)),
            inode: Some(7),
            path: Some("/nope".into()),
        };
        assert_eq!(load_bias(&maps, first, &exe), None);
    }

    #[test]
    fn auxv_fallback() {
        let mut auxv = Vec::new();
        for (k, v) in [(6u64, 4096u64), (3, 0x5555_5555_4040), (0, 0)] {
            auxv.extend_from_slice(&k.to_le_bytes());
            auxv.extend_from_slice(&v.to_le_bytes());
        }
        let first = FirstLoad {
            vaddr: 0,
            offset: 0,
        };
        assert_eq!(auxv_value(&auxv, 6), Some(4096));
        assert_eq!(auxv_value(&auxv, 99), None);
        assert_eq!(
            load_bias_from_auxv(&auxv, first, 0x40),
            Some(0x5555_5555_4000)
        );
        let first = FirstLoad {
            vaddr: 0x400000,
            offset: 0,
        };
        assert_eq!(
            load_bias_from_auxv(&auxv, first, 0x40),
            Some(0x5555_5515_4000)
        );
    }
}
