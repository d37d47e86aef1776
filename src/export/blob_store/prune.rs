//! Keeping the blob cache bounded: after an export, the blobs it did not use go, least recently used first,
//! until the cache fits its size limit.
//!
//! The cache lives in the user's home on a connected host that exports bundle after bundle; without a bound it
//! grows by every image ever exported. Recency is the file's modification time: a download writes it, and a
//! cached blob an export uses is touched. Exports sharing a cache hold a shared lock on `.lock` while they
//! run; pruning needs it exclusively and is skipped (until the next export) while another export runs, so it
//! never removes a blob from under one.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::time::SystemTime;

use crate::oci::digest::Digest;

/// The cache's size limit when none is given: room for a few large bundles.
pub const DEFAULT_MAX_BYTES: u64 = 20 << 30;

/// A cache size limit, as `--cache-max-size` takes it; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimit(pub Option<u64>);

impl std::str::FromStr for CacheLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_limit(s).map(CacheLimit)
    }
}

/// A cache size limit: `unlimited`, or a number of bytes with an optional binary unit (`KiB`, `MiB`, `GiB`,
/// `TiB`; `K`, `M`, `G`, `T` too). `0` keeps only the blobs of the export that just ran.
pub fn parse_limit(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("`{s}` is not a size (like 20GiB, 500MiB, 0 or unlimited)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => return Err(format!("unknown size unit `{other}` in `{s}` (use KiB, MiB, GiB or TiB)")),
    };
    number.checked_mul(1 << shift).map(Some).ok_or_else(|| format!("`{s}` is too large"))
}

/// Held (shared) by an export for as long as it uses the cache.
pub struct CacheLock {
    file: File,
}

impl CacheLock {
    /// Waits only while another export is pruning.
    pub fn shared(dir: &Path) -> std::io::Result<CacheLock> {
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(dir.join(".lock"))?;
        file.lock_shared()?;
        Ok(CacheLock { file })
    }

    /// Exclusive access, if no other export holds the cache; gives the shared lock up either way.
    fn into_exclusive(self) -> Option<File> {
        self.file.unlock().ok()?;
        self.file.try_lock().ok().map(|()| self.file)
    }
}

/// What pruning did.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum PruneOutcome {
    /// The cache fits its limit.
    #[default]
    WithinLimit,
    /// Another export is using the cache: nothing was removed.
    InUse,
    Pruned {
        removed: usize,
        removed_bytes: u64,
        kept_bytes: u64,
    },
}

/// Remove files from `dir/sha256`, least recently modified first, until the directory holds at most `max`
/// bytes, never touching the blobs in `keep` (the export that just ran).
pub fn prune(dir: &Path, lock: CacheLock, keep: &HashSet<Digest>, max: u64) -> std::io::Result<PruneOutcome> {
    let Some(_exclusive) = lock.into_exclusive() else { return Ok(PruneOutcome::InUse) };
    let mut entries: Vec<(SystemTime, u64, std::path::PathBuf)> = Vec::new();
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir.join("sha256"))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        total += meta.len();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kept = format!("sha256:{name}").parse::<Digest>().is_ok_and(|d| keep.contains(&d));
        if !kept {
            entries.push((meta.modified()?, meta.len(), entry.path()));
        }
    }
    if total <= max {
        return Ok(PruneOutcome::WithinLimit);
    }
    entries.sort();
    let (mut removed, mut removed_bytes) = (0, 0);
    for (_, len, path) in entries {
        if total <= max {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        total -= len;
        removed += 1;
        removed_bytes += len;
    }
    Ok(PruneOutcome::Pruned { removed, removed_bytes, kept_bytes: total })
}

/// Mark a cached blob as used now, for the least-recently-used order.
pub fn touch(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn blob(dir: &Path, content: &[u8], age_secs: u64) -> Digest {
        let d = Digest::of(content);
        let path = dir.join("sha256").join(d.hex());
        std::fs::write(&path, content).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        d
    }

    fn present(dir: &Path, d: &Digest) -> bool {
        dir.join("sha256").join(d.hex()).exists()
    }

    #[test]
    fn the_least_recently_used_blobs_go_first_and_the_exports_own_never() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sha256")).unwrap();
        let oldest = blob(dir.path(), &[1; 100], 300);
        let old = blob(dir.path(), &[2; 100], 200);
        let recent = blob(dir.path(), &[3; 100], 100);
        let mine = blob(dir.path(), &[4; 100], 1000);
        let keep = HashSet::from([mine.clone()]);

        let lock = CacheLock::shared(dir.path()).unwrap();
        assert_eq!(prune(dir.path(), lock, &keep, 400).unwrap(), PruneOutcome::WithinLimit);
        let lock = CacheLock::shared(dir.path()).unwrap();
        let outcome = prune(dir.path(), lock, &keep, 250).unwrap();
        assert_eq!(outcome, PruneOutcome::Pruned { removed: 2, removed_bytes: 200, kept_bytes: 200 });
        assert!(!present(dir.path(), &oldest) && !present(dir.path(), &old));
        assert!(present(dir.path(), &recent) && present(dir.path(), &mine));
        // A limit of zero keeps only the export's own blobs.
        let lock = CacheLock::shared(dir.path()).unwrap();
        prune(dir.path(), lock, &keep, 0).unwrap();
        assert!(!present(dir.path(), &recent) && present(dir.path(), &mine));
    }

    #[test]
    fn nothing_is_pruned_while_another_export_holds_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sha256")).unwrap();
        let d = blob(dir.path(), &[5; 100], 100);
        let other = CacheLock::shared(dir.path()).unwrap();
        let lock = CacheLock::shared(dir.path()).unwrap();
        assert_eq!(prune(dir.path(), lock, &HashSet::new(), 0).unwrap(), PruneOutcome::InUse);
        assert!(present(dir.path(), &d));
        drop(other);
        let lock = CacheLock::shared(dir.path()).unwrap();
        assert!(matches!(
            prune(dir.path(), lock, &HashSet::new(), 0).unwrap(),
            PruneOutcome::Pruned { removed: 1, .. }
        ));
    }

    #[test]
    fn limits_parse_with_binary_units() {
        assert_eq!(parse_limit("0"), Ok(Some(0)));
        assert_eq!(parse_limit("500MiB"), Ok(Some(500 << 20)));
        assert_eq!(parse_limit("20G"), Ok(Some(20 << 30)));
        assert_eq!(parse_limit("1 TiB"), Ok(Some(1 << 40)));
        assert_eq!(parse_limit("Unlimited"), Ok(None));
        assert!(parse_limit("20GB").unwrap_err().contains("unit"));
        assert!(parse_limit("lots").is_err());
        assert!(parse_limit("99999999999T").is_err());
    }
}
