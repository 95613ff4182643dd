//! Damaged copies of real binaries, for the robustness tests: a section's
//! bytes overwritten in place, so the file still loads and runs (the
//! sections gospy reads from the file are not the ones the loader maps, or
//! are only read by gospy).

use std::ops::Range;
use std::path::Path;

use object::{Object, ObjectSection};

/// File range of the first of `names` present in the ELF `data`.
pub fn section_range(data: &[u8], names: &[&str]) -> Option<Range<usize>> {
    let file = object::File::parse(data).ok()?;
    names.iter().find_map(|name| {
        let (start, size) = file.section_by_name(name)?.file_range()?;
        Some(start as usize..(start + size) as usize)
    })
}

/// A small deterministic generator (xorshift64*), so a failing case can be
/// reproduced from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (which must not be 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How a section is damaged.
#[derive(Debug, Clone, Copy)]
pub enum Damage {
    /// `n` single bytes set to random values.
    FlipBytes(usize),
    /// A run of `n` bytes set to 0xff (huge lengths, counts and offsets).
    Ones(usize),
    /// A run of `n` bytes set to zero.
    Zeros(usize),
    /// Everything from a random point to the end of the section zeroed.
    ZeroTail,
}

/// Applies `damage` to `range` of `data` with `rng`.
pub fn damage(data: &mut [u8], range: Range<usize>, damage: Damage, rng: &mut Rng) {
    let len = range.len();
    if len == 0 {
        return;
    }
    let mut run = |n: usize, value: u8, rng: &mut Rng| {
        let n = n.min(len);
        let start = range.start + rng.below(len - n + 1);
        data[start..start + n].fill(value);
    };
    match damage {
        Damage::FlipBytes(n) => {
            for _ in 0..n {
                let at = range.start + rng.below(len);
                data[at] = rng.next() as u8;
            }
        }
        Damage::Ones(n) => run(n, 0xff, rng),
        Damage::Zeros(n) => run(n, 0, rng),
        Damage::ZeroTail => {
            let start = range.start + rng.below(len);
            data[start..range.end].fill(0);
        }
    }
}

/// Writes a copy of the executable `from` to `to` with the first 256 bytes
/// of its DWARF info section overwritten by 0xff: any DWARF reader fails on
/// it, while the program still runs. Panics if the binary has no DWARF.
pub fn copy_with_corrupt_dwarf(from: &Path, to: &Path) {
    let mut data = std::fs::read(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    let range = section_range(&data, &[".debug_info", ".zdebug_info"])
        .unwrap_or_else(|| panic!("{} has no DWARF info section", from.display()));
    let end = range.end.min(range.start + 256);
    data[range.start..end].fill(0xff);
    std::fs::write(to, &data).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}
