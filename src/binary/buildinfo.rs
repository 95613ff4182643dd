//! `.go.buildinfo`: the Go version (and module info) the linker embedded in
//! every Go executable.
//!
//! Format (debug/buildinfo/buildinfo.go, cmd/link/internal/ld/data.go): a
//! 16-byte aligned, 32-byte header `"\xff Go buildinf:"`, `ptrSize u8`,
//! `flags u8`, then two pointer-size words. With flags bit 1 clear (Go
//! ≤1.17) the words are addresses of the Go string headers
//! `runtime.buildVersion` and `runtime.modinfo`; with it set (1.18+) the two
//! strings follow the header inline, each prefixed by its uvarint length.

use std::fmt;

use super::elf::ElfImage;

/// A Go toolchain version, e.g. `go1.24.4 X:nocoverageredesign`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    /// 0 for `go1.21`, release candidates and devel builds.
    pub patch: u32,
    /// The string as embedded, e.g. `go1.23.1 X:nocoverageredesign`.
    pub raw: String,
}

impl GoVersion {
    /// Parses `go1.21`, `go1.21.13`, `go1.22rc1`, `go1.9beta2`,
    /// `go1.23.1 X:foo` and `devel go1.24-abcdef …`. Returns `None` when no
    /// `goMAJOR.MINOR` can be found at the start (after an optional `devel `).
    pub fn parse(s: &str) -> Option<GoVersion> {
        let raw = s.trim();
        let mut rest = raw.strip_prefix("devel ").unwrap_or(raw).trim_start();
        rest = rest.strip_prefix("go")?;
        let (major, r) = leading_number(rest)?;
        let r = r.strip_prefix('.')?;
        let (minor, r) = leading_number(r)?;
        let patch = match r.strip_prefix('.') {
            Some(p) => leading_number(p).map(|(n, _)| n).unwrap_or(0),
            None => 0,
        };
        Some(GoVersion {
            major,
            minor,
            patch,
            raw: raw.to_string(),
        })
    }

    /// Whether this is at least `major.minor` (patch ignored).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// The `X:` experiments in the version string (`GOEXPERIMENT`), which may
    /// change runtime layouts.
    pub fn experiments(&self) -> Option<&str> {
        self.raw
            .split_whitespace()
            .find_map(|w| w.strip_prefix("X:"))
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 || end > 9 {
        return None;
    }
    Some((s[..end].parse().ok()?, &s[end..]))
}

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
/// Longest version or modinfo string accepted (modinfo of a big program is a
/// few tens of KB).
const MAX_STRING: u64 = 16 << 20;

/// Raw contents of `.go.buildinfo`: (version, modinfo with its binary
/// sentinels).
fn read_raw(image: &ElfImage) -> Result<(Vec<u8>, Vec<u8>), String> {
    let addr = find_header(image).ok_or_else(|| "no .go.buildinfo found".to_string())?;
    let header = image
        .bytes_at(addr, HEADER_SIZE)
        .ok_or_else(|| "truncated .go.buildinfo header".to_string())?;
    let ptr_size = header[14];
    let flags = header[15];
    if flags & 2 != 0 {
        let (vers, next) = read_inline_string(image, addr + HEADER_SIZE as u64)
            .ok_or_else(|| "corrupt .go.buildinfo: bad version string".to_string())?;
        let modinfo = read_inline_string(image, next)
            .map(|(s, _)| s)
            .unwrap_or_default();
        Ok((vers, modinfo))
    } else {
        if ptr_size != 8 || flags & 1 != 0 {
            return Err(format!(
                ".go.buildinfo: unsupported pointer size {ptr_size} / flags {flags:#x} (not a 64-bit little-endian Go program)"
            ));
        }
        let word = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&header[16 + 8 * i..24 + 8 * i]);
            u64::from_le_bytes(a)
        };
        let vers = read_string_header(image, word(0))
            .ok_or_else(|| "corrupt .go.buildinfo: cannot read runtime.buildVersion".to_string())?;
        let modinfo = read_string_header(image, word(1)).unwrap_or_default();
        Ok((vers, modinfo))
    }
}

/// Link-time address of the buildinfo header: inside the `.go.buildinfo`
/// section, else in the first writable non-exec `PT_LOAD`.
fn find_header(image: &ElfImage) -> Option<u64> {
    if let Some(sec) = image.section(".go.buildinfo") {
        if let Some(bytes) = image.section_bytes(sec) {
            if let Some(a) = search_magic(bytes, sec.addr) {
                return Some(a);
            }
        }
    }
    let seg = image
        .segments
        .iter()
        .find(|s| s.is_write() && !s.is_exec())?;
    let bytes = image.bytes_from(seg.vaddr)?;
    search_magic(bytes, seg.vaddr)
}

/// Finds the magic at a 16-byte aligned address (debug/buildinfo
/// `searchMagic`, `buildInfoAlign = 16`).
fn search_magic(bytes: &[u8], base: u64) -> Option<u64> {
    let first = (16 - (base % 16) as usize) % 16;
    let mut i = first;
    while i.checked_add(HEADER_SIZE)? <= bytes.len() {
        if &bytes[i..i + MAGIC.len()] == MAGIC {
            return Some(base + i as u64);
        }
        i += 16;
    }
    None
}

fn read_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A uvarint-length-prefixed string at `addr`; returns it and the address
/// just past it.
fn read_inline_string(image: &ElfImage, addr: u64) -> Option<(Vec<u8>, u64)> {
    let rest = image.bytes_from(addr)?;
    let (len, n) = read_uvarint(rest)?;
    if len > MAX_STRING {
        return None;
    }
    let bytes = rest.get(n..n.checked_add(usize::try_from(len).ok()?)?)?;
    let next = addr.checked_add(n as u64)?.checked_add(len)?;
    Some((bytes.to_vec(), next))
}

/// A Go string whose header `{ptr, len}` is at link-time address `addr`.
fn read_string_header(image: &ElfImage, addr: u64) -> Option<Vec<u8>> {
    let ptr = image.read_ptr(addr)?;
    let len = image.read_u64(addr.checked_add(8)?)?;
    if len == 0 || len > MAX_STRING {
        return None;
    }
    Some(image.bytes_at(ptr, usize::try_from(len).ok()?)?.to_vec())
}

/// Reads the Go version from `.go.buildinfo`. The error (e.g. "no
/// .go.buildinfo found") says why the file does not look like a Go program.
pub fn read_go_version(image: &ElfImage) -> Result<GoVersion, String> {
    let (vers, _) = read_raw(image)?;
    let vers = String::from_utf8_lossy(&vers);
    if vers.is_empty() {
        return Err(".go.buildinfo has an empty Go version".to_string());
    }
    GoVersion::parse(&vers)
        .ok_or_else(|| format!("unrecognised Go version {vers:?} in .go.buildinfo"))
}

/// The module information (`go version -m`: `path`, `mod`, `dep`, `build`
/// lines), without the 16-byte sentinels. `None` if absent.
pub fn read_mod_info(image: &ElfImage) -> Option<String> {
    let (_, modinfo) = read_raw(image).ok()?;
    strip_sentinels(&modinfo).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// debug/buildinfo: `if len(mod) >= 33 && mod[len(mod)-17] == '\n'` strip 16
/// bytes at each end (the sentinels are binary, not UTF-8).
fn strip_sentinels(b: &[u8]) -> Option<&[u8]> {
    if b.len() >= 33 && b[b.len() - 17] == b'\n' {
        Some(&b[16..b.len() - 16])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::elf::test_util::{build_elf, Chunk};
    use std::path::Path;

    #[test]
    fn parse_versions() {
        let v = GoVersion::parse("go1.21").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 0));
        let v = GoVersion::parse("go1.21.13").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 13));
        let v = GoVersion::parse("go1.22rc1").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 0));
        let v = GoVersion::parse("go1.23.1 X:nocoverageredesign").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 23, 1));
        assert_eq!(v.experiments(), Some("nocoverageredesign"));
        assert_eq!(v.to_string(), "go1.23.1 X:nocoverageredesign");
        let v = GoVersion::parse("devel go1.24-abcdef Tue Jan 1 2025").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 24, 0));
        assert!(v.at_least(1, 24) && v.at_least(1, 9) && !v.at_least(1, 25));
        assert!(v.at_least(0, 99));
        assert!(!v.at_least(2, 0));
        for bad in [
            "",
            "go",
            "go1",
            "1.21",
            "gox.1",
            "devel +abc",
            "go1.",
            "go99999999999.1",
        ] {
            assert!(GoVersion::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sentinels() {
        let body = "path\tx\nmod\tx\t(devel)\t\n";
        let m = format!("0123456789abcdef{body}\n0123456789abcde");
        assert_eq!(m.len(), 16 + body.len() + 16);
        assert_eq!(strip_sentinels(m.as_bytes()), Some(body.as_bytes()));
        assert_eq!(strip_sentinels(b"short"), None);
        let mut bin = vec![0xffu8; 16];
        bin.extend_from_slice(body.as_bytes());
        bin.extend_from_slice(&[0x98; 16]);
        assert_eq!(strip_sentinels(&bin), Some(body.as_bytes()));
    }

    fn inline_blob(vers: &str, m: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.extend_from_slice(&[0u8; 16]);
        for s in [vers, m] {
            let mut n = s.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
            b.extend_from_slice(s.as_bytes());
        }
        b
    }

    #[test]
    fn inline_format_in_section_and_by_scan() {
        let m = format!("{}path\tmain\n{}", "x".repeat(16), "y".repeat(16));
        let blob = inline_blob("go1.24.4", &m);
        for section in [true, false] {
            let mut seg = vec![0u8; 48];
            seg.extend_from_slice(&blob);
            let elf = build_elf(
                &[Chunk {
                    name: ".go.buildinfo",
                    vaddr: 0x500000,
                    data: &seg,
                    flags: 6,
                    section,
                }],
                2,
            );
            let img = ElfImage::from_bytes(Path::new("t"), elf).unwrap();
            let v = read_go_version(&img).unwrap();
            assert_eq!(v.raw, "go1.24.4");
            assert_eq!(v.patch, 4);
            assert_eq!(read_mod_info(&img).as_deref(), Some("path\tmain\n"));
        }
    }

    #[test]
    fn pointer_format() {
        // Header at 0x600000, string headers at 0x600040, strings at 0x600080.
        let mut seg = vec![0u8; 0x100];
        seg[..14].copy_from_slice(MAGIC);
        seg[14] = 8;
        seg[15] = 0;
        seg[16..24].copy_from_slice(&0x600040u64.to_le_bytes());
        seg[24..32].copy_from_slice(&0x600050u64.to_le_bytes());
        seg[0x40..0x48].copy_from_slice(&0x600080u64.to_le_bytes());
        seg[0x48..0x50].copy_from_slice(&8u64.to_le_bytes());
        seg[0x50..0x58].copy_from_slice(&0x600090u64.to_le_bytes());
        seg[0x58..0x60].copy_from_slice(&u64::MAX.to_le_bytes()); // bogus length
        seg[0x80..0x89].copy_from_slice(b"go1.15.15");
        let elf = build_elf(
            &[Chunk {
                name: ".go.buildinfo",
                vaddr: 0x600000,
                data: &seg,
                flags: 6,
                section: true,
            }],
            2,
        );
        let img = ElfImage::from_bytes(Path::new("t"), elf).unwrap();
        let v = read_go_version(&img).unwrap();
        assert_eq!(v.raw, "go1.15.1"); // 8 bytes as the header says
        assert_eq!(read_mod_info(&img), None);
    }

    #[test]
    fn not_go_and_garbage() {
        let seg = vec![0u8; 64];
        let elf = build_elf(
            &[Chunk {
                name: ".data",
                vaddr: 0x600000,
                data: &seg,
                flags: 6,
                section: true,
            }],
            2,
        );
        let img = ElfImage::from_bytes(Path::new("t"), elf).unwrap();
        assert_eq!(read_go_version(&img).unwrap_err(), "no .go.buildinfo found");
        // Huge varint lengths and truncation.
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[8, 2]);
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(&[0xff; 12]);
        let elf = build_elf(
            &[Chunk {
                name: ".go.buildinfo",
                vaddr: 0x600000,
                data: &b,
                flags: 6,
                section: true,
            }],
            2,
        );
        let img = ElfImage::from_bytes(Path::new("t"), elf).unwrap();
        assert!(read_go_version(&img).is_err());
        for cut in 0..b.len() {
            let elf = build_elf(
                &[Chunk {
                    name: ".go.buildinfo",
                    vaddr: 0x600000,
                    data: &inline_blob("go1.22.1", "m")[..cut],
                    flags: 6,
                    section: true,
                }],
                2,
            );
            let img = ElfImage::from_bytes(Path::new("t"), elf).unwrap();
            let _ = read_go_version(&img);
            let _ = read_mod_info(&img);
        }
    }
}
