//! A content-addressed directory of blobs (`sha256/<hex>`), where export stages what it downloads.
//!
//! A blob appears under its final name only after its bytes matched its digest; partial downloads live
//! under a temporary name that is removed on failure, so the store never holds unverified content.

mod arrivals;
pub mod prune;
mod staged;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use arrivals::{Arrivals, BlobFollower, Rewrite};
use staged::StagedFile;

use crate::oci::digest::{Digest, DigestWriter};
use crate::registry::{RegistryClient, RegistryError};
use crate::support::direct_io::DirectFile;

pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn open(dir: &Path) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(dir.join("sha256"))?;
        Ok(BlobStore { dir: dir.to_path_buf() })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    /// Whether a complete blob of `size` bytes is stored.
    /// The directory the blobs are kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, digest: &Digest, size: u64) -> bool {
        std::fs::metadata(self.path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Store content we made ourselves (the chart artifact), under its digest.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<Digest> {
        let digest = Digest::of(bytes);
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.join("sha256"))?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(self.path(&digest)).map_err(|e| e.error)?;
        Ok(digest)
    }

    /// Store a local file (a spec's `files:`) under `digest`, hashed as it is copied: a file that changed since
    /// it was staged is refused, not stored under a digest it no longer has. A stored copy is used as it is.
    pub fn put_file(&self, path: &Path, digest: &Digest, size: u64) -> std::io::Result<()> {
        if self.contains(digest, size) {
            return Ok(());
        }
        let mut from = std::fs::File::open(path)?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.join("sha256"))?;
        let mut hasher = DigestWriter::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut from, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            std::io::Write::write_all(&mut tmp, &buf[..n])?;
        }
        let got = hasher.finish();
        if &got != digest {
            return Err(std::io::Error::other(format!(
                "{} changed while the export ran: it now has {got}, not {digest}",
                path.display()
            )));
        }
        tmp.persist(self.path(digest)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Make `digest` available in the store: a stored copy is used as it is; otherwise the blob is downloaded,
    /// resuming a partial download an interrupted run left behind. Returns whether the bytes in the store were
    /// verified in this run: false for a stored copy, which its reader must hash (and on a mismatch, remove
    /// and fetch again: `Rewrite::DamagedCacheBlob`).
    pub async fn fetch(
        &self,
        client: &RegistryClient,
        repository: &str,
        digest: &Digest,
        size: u64,
        progress: &(dyn Fn(i64) + Sync),
        arrivals: &Arrivals,
    ) -> Result<bool, RegistryError> {
        let what = format!("caching blob {digest}");
        let io_err = |e: std::io::Error| RegistryError::Io { what: what.clone(), source: e };
        let final_path = self.path(digest);
        if self.contains(digest, size) {
            // Not hashed here: the archive writer hashes it as it reads it (`BlobFollower`), one pass over the
            // bytes instead of two. Hashed here first, a 2 GiB layer took twice as long from a warm cache as
            // downloading it had. A damaged copy fails that write, and the export fetches it again.
            prune::touch(&final_path);
            progress(size as i64);
            return Ok(false);
        }
        // A fixed name lets an interrupted run's bytes be resumed; the lock keeps two runs from sharing it.
        let partial_path = self.dir.join("sha256").join(format!("{}.partial", digest.hex()));
        let fixed = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial_path)
            .map_err(io_err)?;
        let (std_file, path, temp) = match fixed.try_lock() {
            Ok(()) => (fixed, partial_path, None),
            Err(_) => {
                let t = tempfile::Builder::new()
                    .prefix(&format!(".{}-", digest.hex()))
                    .suffix(".partial")
                    .tempfile_in(self.dir.join("sha256"))
                    .map_err(io_err)?;
                let (f, p) = t.into_parts();
                (f, p.to_path_buf(), Some(p))
            }
        };
        // Hash what an earlier run left, so the download continues from there.
        let existing = std_file.metadata().map_err(io_err)?.len();
        let resume = if existing > 0 && existing < size {
            let p = path.clone();
            let hasher = tokio::task::spawn_blocking(move || hash_file_state(&p, existing))
                .await
                .map_err(|e| io_err(std::io::Error::other(e)))?
                .map_err(io_err)?;
            progress(existing as i64);
            hasher
        } else {
            // Only when there is something to drop: on ext4, truncating to zero makes the file's close start
            // writeback at once (auto_da_alloc), which costs a fresh download time for nothing.
            if existing > 0 {
                std_file.set_len(0).map_err(io_err)?;
            }
            DigestWriter::new()
        };
        let file = Arc::new(DirectFile::new(std_file, &path));
        arrivals.writing(digest, file.clone(), resume.len());
        let mut sink = StagedFile::new(file, digest.clone(), resume.len(), arrivals);
        let result = client.download_blob(repository, digest, size, &mut sink, resume, progress).await;
        drop(sink);
        match result {
            Ok(()) => {
                std::fs::rename(&path, &final_path).map_err(io_err)?;
                if let Some(t) = temp {
                    let _ = t.keep();
                }
                Ok(true)
            }
            Err(e) => {
                // Bad bytes are never kept; an interrupted transfer is kept for the next run.
                if matches!(e, RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. })
                    || temp.is_some()
                {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e)
            }
        }
    }
}

/// The hasher state after the first `limit` bytes of a file (what an interrupted download left).
fn hash_file_state(path: &Path, limit: u64) -> std::io::Result<DigestWriter> {
    let mut h = DigestWriter::new();
    let f = std::fs::File::open(path)?;
    std::io::copy(&mut std::io::Read::take(std::io::BufReader::with_capacity(1 << 20, f), limit), &mut h)?;
    Ok(h)
}
