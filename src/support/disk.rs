//! Disk before work: what a command will write, per filesystem, against the space free there, checked before
//! anything is downloaded, so a short disk fails in a second with the shortfall named instead of an hour later
//! with a write error (issue 32).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Bytes one step will write into `dir` (`what` names it in the error).
pub struct Need {
    pub dir: PathBuf,
    pub bytes: u64,
    pub what: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "not enough free space for {what}: {} needed in {}, {} free there",
    indicatif::HumanBytes(*.needed),
    .dir.display(),
    indicatif::HumanBytes(*.available)
)]
pub struct DiskShort {
    pub dir: PathBuf,
    pub what: String,
    pub needed: u64,
    pub available: u64,
}

impl crate::support::hint::Hint for DiskShort {
    fn hint(&self) -> Option<String> {
        Some(format!(
            "free {} there, or write elsewhere: -o for the archive, --cache-dir or --tmp-dir (with --no-cache) for the downloads",
            indicatif::HumanBytes(self.needed - self.available)
        ))
    }
}

/// Space free to an unprivileged writer in the filesystem of `dir` (its nearest existing ancestor).
fn available(dir: &Path) -> Option<(u64, u64)> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let dev = std::fs::metadata(existing).ok()?.dev();
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a valid out-pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some((dev, s.f_bavail as u64 * s.f_frsize as u64))
}

/// Needs on one filesystem add up. A filesystem that cannot be asked is not checked (the writes will say).
pub fn check(needs: &[Need]) -> Result<(), DiskShort> {
    check_with(needs, available)
}

fn check_with(needs: &[Need], free: impl Fn(&Path) -> Option<(u64, u64)>) -> Result<(), DiskShort> {
    let mut by_fs: BTreeMap<u64, (u64, u64, Vec<&Need>)> = BTreeMap::new();
    for n in needs.iter().filter(|n| n.bytes > 0) {
        let Some((dev, avail)) = free(&n.dir) else { continue };
        let e = by_fs.entry(dev).or_insert((avail, 0, Vec::new()));
        e.1 += n.bytes;
        e.2.push(n);
    }
    for (avail, needed, list) in by_fs.into_values() {
        if needed > avail {
            let what = list.iter().map(|n| n.what.as_str()).collect::<Vec<_>>().join(" and ");
            return Err(DiskShort { dir: list[0].dir.clone(), what, needed, available: avail });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(dir: &str, bytes: u64, what: &str) -> Need {
        Need { dir: dir.into(), bytes, what: what.into() }
    }

    #[test]
    fn needs_on_one_filesystem_add_up_and_the_short_one_is_named() {
        let free = |p: &Path| Some(if p.starts_with("/small") { (1, 100) } else { (2, 1000) });
        assert!(check_with(&[need("/small/a", 60, "a"), need("/big", 900, "b")], free).is_ok());
        let e = check_with(&[need("/small/a", 60, "the archive"), need("/small/b", 50, "the downloads")], free)
            .unwrap_err();
        assert_eq!((e.needed, e.available), (110, 100));
        assert_eq!(e.what, "the archive and the downloads");
        assert!(check_with(&[need("/nowhere", u64::MAX, "x")], |_| None).is_ok());
    }
}
