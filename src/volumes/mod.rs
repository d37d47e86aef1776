//! Volumes: one archive cut into files of a chosen size (a CD, a DVD, a USB stick, a data diode's file-size
//! cap), each a valid archive of its own that `bundle verify` checks alone, and that import takes in any order.
//!
//! Why a volume is a whole archive, not a byte range of one (as `split` would cut it): a lost or damaged volume
//! then costs only the images it holds, every volume proves itself on the far side before the others arrive,
//! and a set can be imported as its volumes come in. Every volume carries the layout metadata and every
//! manifest (small), so any one of them lists the whole set; blobs are placed on one volume each, and a blob
//! that does not fit what is left of a volume continues on the next as pieces cut at 1 MiB boundaries of its
//! bytes (docs/archive-format.md, "Volumes").
//!
//! `plan` decides what goes where, `split` writes the volumes of a finished archive (export with
//! `--volume-size` writes the whole archive, then splits it, so the two give the same bytes), `set` gathers
//! the volumes an import was given and says which images they complete.

pub mod parity;
pub mod plan;
pub mod set;
pub mod split;

use std::path::{Path, PathBuf};

use crate::oci::digest::Digest;
use crate::support::hint::Hint;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{} has no bundle.json: only archives bundle wrote can be cut into volumes", path.display())]
    Foreign { path: PathBuf },
    #[error("{} is already volume {number} of a set", path.display())]
    AlreadyVolume { path: PathBuf, number: u32 },
    #[error(
        "a volume of {size} bytes cannot hold what every volume carries ({fixed} bytes of metadata and manifests) and 1 MiB of blobs"
    )]
    TooSmall { size: u64, fixed: u64 },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed while it was cut into volumes: blob {digest} no longer matches its digest", path.display())]
    Changed { path: PathBuf, digest: Digest },
    #[error("volume {number} came out at {len} bytes, more than the {size} asked for")]
    Overflow { number: u32, len: u64, size: u64 },
    #[error("{} is not a volume of a set (its bundle.json has no `volume`)", path.display())]
    NotAVolume { path: PathBuf },
    #[error("{} and {} are volumes of different sets ({} and {})", first.display(), second.display(), first_set, second_set)]
    MixedSets { first: PathBuf, second: PathBuf, first_set: Digest, second_set: Digest },
    #[error("{} and {} are both volume {number} of the set, with different content", first.display(), second.display())]
    TwoOfOne { first: PathBuf, second: PathBuf, number: u32 },
    #[error("no volumes (NAME.partNNN.tar.zst, NAME.parityNN.bin) match {}", pattern.display())]
    NoneFound { pattern: PathBuf },
    #[error("cannot compute or use the parity volumes: {reason}")]
    Parity { reason: String },
}

impl Hint for VolumeError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            VolumeError::Foreign { .. } => "import it, then export the images again with --volume-size".into(),
            VolumeError::AlreadyVolume { .. } => "split the whole archive the set was cut from".into(),
            VolumeError::TooSmall { fixed, .. } => {
                format!("choose a volume size of at least {}", indicatif::HumanBytes(fixed + (1 << 20) + 4096))
            }
            VolumeError::Exists { .. } => "choose another name with -o, or pass --force to replace the volumes".into(),
            VolumeError::Io { .. } => "check that the directory exists, is writable and has space".into(),
            VolumeError::Changed { .. } => {
                "make sure nothing writes the archive while it is split, then run again".into()
            }
            VolumeError::Overflow { .. } => {
                "this is a bug in bundle; report it, and choose a slightly smaller size meanwhile".into()
            }
            VolumeError::NotAVolume { .. } => {
                "import one archive at a time, or the volumes of one set (NAME.part001.tar.zst NAME.part002.tar.zst …)"
                    .into()
            }
            VolumeError::MixedSets { .. } | VolumeError::TwoOfOne { .. } => {
                "import the volumes of one set at a time; `bundle inspect` of a volume names its set".into()
            }
            VolumeError::NoneFound { .. } => {
                "give the volumes' files, their directory, or a pattern that matches them".into()
            }
            VolumeError::Parity { .. } => {
                "give the parity volumes of this set as they were written (NAME.parityNN.bin, unchanged)".into()
            }
        })
    }
}

/// A volume size: bytes, with a unit (`700MiB`, `4.7GB`, `2G`), or a medium's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSize(pub u64);

/// Media by name, at the capacity a file on them can use: a CD-R of 80 minutes holds 737,280,000 bytes of data, a
/// DVD±R 4,707,319,808, a dual-layer DVD 8,543,666,176, a BD-R 25,025,314,816 per layer; what is left is room for
/// the filesystem (UDF) and the sidecars.
pub const MEDIA: [(&str, u64); 5] = [
    ("cd", 700 << 20),
    ("dvd", 4_700_000_000),
    ("dvd-dl", 8_500_000_000),
    ("bd25", 25_000_000_000),
    ("bd50", 50_000_000_000),
];

impl std::str::FromStr for VolumeSize {
    type Err = String;
    fn from_str(s: &str) -> Result<VolumeSize, String> {
        let t = s.trim();
        if let Some((_, size)) = MEDIA.iter().find(|(name, _)| name.eq_ignore_ascii_case(t)) {
            return Ok(VolumeSize(*size));
        }
        let bad = || format!("`{s}` is not a volume size (like 700MiB, 4.7GB, 2GiB, or cd, dvd, dvd-dl, bd25, bd50)");
        let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let multiplier: u128 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 9 {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let fraction_value: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| bad())? };
        let scale = 10u128.pow(fraction.len() as u32);
        let bytes = whole * multiplier + fraction_value * multiplier / scale;
        u64::try_from(bytes).map(VolumeSize).map_err(|_| format!("`{s}` is too large"))
    }
}

/// `DIR/NAME.tar.zst` → `DIR/NAME.partNNN.tar.zst` (three digits, more when the set needs them).
pub fn volume_path(output: &Path, number: u32, count: u32) -> PathBuf {
    let width = count.to_string().len().max(3);
    output.with_file_name(format!("{}.part{number:0width$}.tar.zst", stem(output)))
}

/// `NAME` of `DIR/NAME.tar.zst` (the whole name when it has another ending): what a set's files are named after.
pub fn stem(output: &Path) -> String {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    name.strip_suffix(".tar.zst").unwrap_or(&name).to_string()
}

/// The volume number in a `NAME.partNNN.tar.zst` file name.
fn number_in_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_suffix(".tar.zst")?;
    let (stem, digits) = rest.rsplit_once(".part")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| Some((stem, digits.parse().ok()?)))?
}

/// Where a volume of the set that `given` belongs to is expected: `given`'s name with the number changed.
pub fn sibling_name(given: &Path, number: u32, count: u32) -> Option<String> {
    let name = given.file_name()?.to_string_lossy();
    let (stem, _) = number_in_name(&name)?;
    let path = volume_path(Path::new(&format!("{stem}.tar.zst")), number, count);
    Some(path.to_string_lossy().into_owned())
}

/// Import's inputs, as files: a directory that is not a layout stands for the volumes in it, and a pattern the
/// shell did not expand (quoted) for the files it matches.
pub fn expand_inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>, VolumeError> {
    let mut out = Vec::new();
    for arg in args {
        let found: Vec<PathBuf> =
            if arg.is_dir() && !arg.join("oci-layout").exists() && !arg.join("index.json").exists() {
                list(arg, |name| number_in_name(name).is_some() || parity::is_parity_name(name))?
            } else if !arg.exists() && arg.file_name().is_some_and(|n| n.to_string_lossy().contains(['*', '?'])) {
                let pattern = arg.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let dir = arg.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                list(dir, |name| wildcard(pattern.as_bytes(), name.as_bytes()))?
            } else {
                vec![arg.clone()]
            };
        if found.is_empty() {
            return Err(VolumeError::NoneFound { pattern: arg.clone() });
        }
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// The regular files of `dir` whose names pass `keep`, sorted.
fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, VolumeError> {
    let io = |source| VolumeError::Io { what: "list", path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep(&name) && entry.file_type().map_err(io)?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `*` (any run) and `?` (any one byte) against a whole name. Iterative, with one point to go back to: linear in
/// practice and bounded by the product of the two lengths.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == b'?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_media_names() {
        let size = |s: &str| s.parse::<VolumeSize>().map(|v| v.0);
        assert_eq!(size("700MiB"), Ok(700 << 20));
        assert_eq!(size("4.7GB"), Ok(4_700_000_000));
        assert_eq!(size("2G"), Ok(2 << 30));
        assert_eq!(size("1.5KiB"), Ok(1536));
        assert_eq!(size("123"), Ok(123));
        assert_eq!(size("DVD"), Ok(4_700_000_000));
        assert_eq!(size("bd50"), Ok(50_000_000_000));
        assert!(size("4.7").is_ok());
        for bad in ["", "GB", "1.2.3GB", "5 parsecs", "-1", "99999999999TB"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_names_count_from_one_with_three_digits_or_more() {
        assert_eq!(volume_path(Path::new("out/x.tar.zst"), 2, 5), Path::new("out/x.part002.tar.zst"));
        assert_eq!(volume_path(Path::new("x"), 12, 1200), Path::new("x.part0012.tar.zst"));
        assert_eq!(number_in_name("x.part007.tar.zst"), Some(("x", 7)));
        assert_eq!(number_in_name("x.tar.zst"), None);
        assert_eq!(sibling_name(Path::new("/d/a.b.part002.tar.zst"), 3, 3).as_deref(), Some("a.b.part003.tar.zst"));
    }

    #[test]
    fn wildcards_match_whole_names() {
        assert!(wildcard(b"x.part*.tar.zst", b"x.part001.tar.zst"));
        assert!(wildcard(b"*", b"anything"));
        assert!(wildcard(b"a?c", b"abc"));
        assert!(!wildcard(b"x.part*.tar.zst", b"x.part001.tar.zst.sha256"));
        assert!(!wildcard(b"a*b*c", b"aXbY"));
    }
}
