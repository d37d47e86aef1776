//! `import --files-out DIR`: each file the archive carries written back as `DIR/NAME`, its bytes checked
//! against its digest on the way. A file appears under its name only once it matched, so DIR never holds a
//! partial or altered file; names are checked again (an archive is input, whoever wrote it), so nothing is
//! written outside DIR.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FileError, name_problem};
use crate::archive::{ArchiveFile, BlobEntry};
use crate::oci::digest::{Digest, DigestWriter};
use crate::oci::layout::FileRecord;

/// A file written back.
#[derive(Debug)]
pub struct Restored {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Where a blob's bytes are: the archive (or volumes) and entries whose concatenation is the blob.
pub type Segments = Vec<(Arc<ArchiveFile>, BlobEntry)>;

/// Write every file of `files` into `dir` (created if missing), reading each from `segments_of` its digest.
pub fn restore(
    files: &[FileRecord],
    segments_of: &dyn Fn(&Digest) -> Option<Segments>,
    dir: &Path,
) -> Result<Vec<Restored>, FileError> {
    if files.is_empty() {
        return Err(FileError::NoFiles);
    }
    for f in files {
        if let Some(problem) = name_problem(&f.name) {
            return Err(FileError::BadName { name: f.name.clone(), problem });
        }
    }
    let write_failed = |f: &FileRecord, path: &Path| {
        let (name, path) = (f.name.clone(), path.to_path_buf());
        move |source| FileError::Write { name, path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_failed(&files[0], dir))?;
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        let damaged = |problem: String| FileError::Damaged { name: f.name.clone(), digest: f.digest.clone(), problem };
        let segments = segments_of(&f.digest).ok_or_else(|| damaged("the archive does not hold its content".into()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", f.name))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(write_failed(f, &path))?;
        let mut hasher = DigestWriter::new();
        let mut buf = vec![0u8; 1 << 20];
        for (archive, entry) in &segments {
            let mut reader = archive.open_blob(&f.digest, *entry).map_err(|e| damaged(e.to_string()))?;
            loop {
                let n = reader.read(&mut buf).map_err(|e| damaged(e.to_string()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                tmp.write_all(&buf[..n]).map_err(write_failed(f, &path))?;
            }
        }
        let size = hasher.len();
        let got = hasher.finish();
        if got != f.digest || size != f.size {
            return Err(damaged(format!("its bytes have sha256 {got} ({size} bytes)")));
        }
        tmp.as_file().sync_all().map_err(write_failed(f, &path))?;
        // Ordinary permissions (temporary files are created 0600); executables keep no mode across the gap.
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(write_failed(f, &path))?;
        tmp.persist(&path).map_err(|e| e.error).map_err(write_failed(f, &path))?;
        out.push(Restored { name: f.name.clone(), path, size });
    }
    Ok(out)
}
