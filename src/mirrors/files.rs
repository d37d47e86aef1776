//! The directory as a whole: staged beside DIR, then swapped in, so DIR is always one run's complete set and
//! an interrupted write leaves the earlier set (or nothing) in place, never a mixture.

use std::path::{Path, PathBuf};

use super::{MirrorError, TOP_LEVEL};

/// What was written: the directory and its files, relative to it.
#[derive(Debug, Clone)]
pub struct Written {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

pub fn replace_dir(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> Result<Written, MirrorError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MirrorError::Write { path, source }
    };
    let existing = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => return Err(failed(dir)(std::io::Error::other("it exists and is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(failed(dir)(e)),
    };
    if existing {
        // Only an earlier run's set is replaced: anything else in DIR is the user's.
        for entry in std::fs::read_dir(dir).map_err(failed(dir))? {
            let name = entry.map_err(failed(dir))?.file_name().to_string_lossy().into_owned();
            if !TOP_LEVEL.contains(&name.as_str()) {
                return Err(MirrorError::Foreign { dir: dir.to_path_buf(), entry: name });
            }
        }
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(failed(parent))?;
    let stage = tempfile::Builder::new().prefix(".bundle-mirrors-").tempdir_in(parent).map_err(failed(parent))?;
    for (rel, bytes) in files {
        let path = stage.path().join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(failed(&dir.join(rel)))?;
        }
        std::fs::write(&path, bytes).map_err(failed(&dir.join(rel)))?;
    }
    if existing {
        let trash =
            tempfile::Builder::new().prefix(".bundle-mirrors-old-").tempdir_in(parent).map_err(failed(parent))?;
        let old = trash.path().join("old");
        std::fs::rename(dir, &old).map_err(failed(dir))?;
        if let Err(e) = std::fs::rename(stage.path(), dir) {
            let _ = std::fs::rename(&old, dir);
            return Err(failed(dir)(e));
        }
    } else {
        std::fs::rename(stage.path(), dir).map_err(failed(dir))?;
    }
    // The staging directory is DIR now; nothing is left for its guard to remove.
    let _ = stage.keep();
    Ok(Written { dir: dir.to_path_buf(), files: files.iter().map(|(p, _)| p.clone()).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str, s: &str) -> (PathBuf, Vec<u8>) {
        (PathBuf::from(p), s.as_bytes().to_vec())
    }

    #[test]
    fn a_rerun_replaces_the_whole_set_and_foreign_files_stop_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out/mirrors");
        replace_dir(&dir, &[file("registries.conf", "a"), file("certs.d/quay.io/hosts.toml", "q")]).unwrap();
        replace_dir(&dir, &[file("registries.conf", "b"), file("certs.d/ghcr.io/hosts.toml", "g")]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("registries.conf")).unwrap(), "b");
        assert!(!dir.join("certs.d/quay.io").exists(), "the earlier run's host stayed");
        assert!(dir.join("certs.d/ghcr.io/hosts.toml").is_file());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("out")).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "staging or trash left beside DIR");

        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = replace_dir(&dir, &[file("registries.conf", "c")]).unwrap_err();
        assert!(matches!(err, MirrorError::Foreign { ref entry, .. } if entry == "notes.txt"), "{err:?}");
        assert_eq!(std::fs::read_to_string(dir.join("registries.conf")).unwrap(), "b");
    }
}
