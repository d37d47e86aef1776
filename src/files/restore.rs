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
use crate::registry::{BlobSink, RegistryClient};

/// A file written back.
#[derive(Debug)]
pub struct Restored {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Where a blob's bytes are: the archive (or volumes) and entries whose concatenation is the blob.
pub type Segments = Vec<(Arc<ArchiveFile>, BlobEntry)>;

/// Where a file's bytes are, when the archive does not hold them (a delta leaves an unchanged file to its base,
/// whose import put it at the destination): the destination's client and the file artifact's repository there.
pub type Elsewhere<'a> = &'a dyn Fn(&FileRecord) -> Option<(Arc<RegistryClient>, String)>;

/// Write every file of `files` into `dir` (created if missing), reading each from `segments_of` its digest, or
/// from the destination (`elsewhere`) when the archive leaves it to its base.
pub async fn restore(
    files: &[FileRecord],
    segments_of: &(dyn Fn(&Digest) -> Option<Segments> + Sync),
    elsewhere: Elsewhere<'_>,
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
    std::fs::create_dir_all(dir).map_err(write_failed(&files[0], dir))?;
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        let restored = match segments_of(&f.digest) {
            Some(segments) => {
                let (f2, dir2) = (f.clone(), dir.to_path_buf());
                tokio::task::spawn_blocking(move || from_archive(&f2, &segments, &dir2))
                    .await
                    .map_err(|e| write_failed(f, &path)(std::io::Error::other(e)))??
            }
            None => match elsewhere(f) {
                Some((client, repository)) => from_registry(f, &client, &repository, dir).await?,
                None => {
                    return Err(FileError::Damaged {
                        name: f.name.clone(),
                        digest: f.digest.clone(),
                        problem: "the archive does not hold its content".into(),
                    });
                }
            },
        };
        out.push(restored);
    }
    Ok(out)
}

fn write_failed(f: &FileRecord, path: &Path) -> impl FnOnce(std::io::Error) -> FileError + use<> {
    let (name, path) = (f.name.clone(), path.to_path_buf());
    move |source| FileError::Write { name, path, source }
}

/// A temporary file in `dir` that becomes `dir/NAME` once its bytes matched.
fn partial(f: &FileRecord, dir: &Path) -> Result<tempfile::NamedTempFile, FileError> {
    tempfile::Builder::new()
        .prefix(&format!(".{}.", f.name))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(write_failed(f, &dir.join(&f.name)))
}

/// Ordinary permissions (temporary files are created 0600; executables keep no mode across the gap), then
/// the file under its name.
fn publish(f: &FileRecord, tmp: tempfile::NamedTempFile, path: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt as _;
    tmp.as_file().sync_all().map_err(write_failed(f, path))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(write_failed(f, path))?;
    tmp.persist(path).map_err(|e| e.error).map_err(write_failed(f, path))?;
    Ok(())
}

/// The file from the destination registry, checked by the download itself against its digest.
async fn from_registry(
    f: &FileRecord,
    client: &RegistryClient,
    repository: &str,
    dir: &Path,
) -> Result<Restored, FileError> {
    let path = dir.join(&f.name);
    let tmp = partial(f, dir)?;
    let file = tmp.reopen().map_err(write_failed(f, &path))?;
    let mut sink = FileSink(tokio::fs::File::from_std(file));
    client.download_blob(repository, &f.digest, f.size, &mut sink, DigestWriter::new(), &|_| {}).await.map_err(
        |e| FileError::Damaged {
            name: f.name.clone(),
            digest: f.digest.clone(),
            problem: format!(
                "the archive leaves it to its base, and the destination did not give it: {}",
                crate::support::error_text::chain_line(&e)
            ),
        },
    )?;
    publish(f, tmp, &path)?;
    Ok(Restored { name: f.name.clone(), path, size: f.size })
}

/// A download's bytes into a file.
struct FileSink(tokio::fs::File);

impl BlobSink for FileSink {
    async fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        self.0.write_all(bytes).await
    }

    async fn restart(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncSeekExt as _;
        self.0.set_len(0).await?;
        self.0.seek(std::io::SeekFrom::Start(0)).await.map(|_| ())
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        self.0.flush().await
    }
}

/// The file from the archive's entries, hashed on the way.
fn from_archive(f: &FileRecord, segments: &Segments, dir: &Path) -> Result<Restored, FileError> {
    let path = dir.join(&f.name);
    {
        let damaged = |problem: String| FileError::Damaged { name: f.name.clone(), digest: f.digest.clone(), problem };
        let mut tmp = partial(f, dir)?;
        let mut hasher = DigestWriter::new();
        let mut buf = vec![0u8; 1 << 20];
        for (archive, entry) in segments {
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
        publish(f, tmp, &path)?;
        Ok(Restored { name: f.name.clone(), path, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_leaves_dir_is_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let evil = FileRecord {
            name: "../evil".into(),
            digest: Digest::of(b"x"),
            size: 1,
            image: "docker.io/files/evil:0".into(),
            origin: "hostile".into(),
        };
        let good = FileRecord { name: "ok.txt".into(), ..evil.clone() };
        let err = restore(&[good, evil], &|_| None, &|_| None, &dir).await.unwrap_err();
        assert!(matches!(err, FileError::BadName { ref name, .. } if name == "../evil"), "{err:?}");
        assert!(!dir.exists() && !tmp.path().join("evil").exists(), "something was written");
    }
}
