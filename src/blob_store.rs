//! A content-addressed directory of blobs (`sha256/<hex>`), where export stages what it downloads.
//!
//! A blob appears under its final name only after its bytes matched its digest; partial downloads live
//! under a temporary name that is removed on failure, so the store never holds unverified content.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::digest::Digest;
use crate::registry::{RegistryClient, RegistryError};

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

    /// Download `digest` from `repository` unless it is stored already. Returns true when it was downloaded
    /// (and so verified) now, false when a stored copy (from an earlier run) is used as it is.
    pub async fn fetch(
        &self,
        client: &RegistryClient,
        repository: &str,
        digest: &Digest,
        size: u64,
        progress: &(dyn Fn(i64) + Sync),
    ) -> Result<bool, RegistryError> {
        if self.contains(digest, size) {
            progress(size as i64);
            return Ok(false);
        }
        let what = format!("staging blob {digest}");
        let partial = tempfile::Builder::new()
            .prefix(&format!(".{}-", digest.hex()))
            .suffix(".partial")
            .tempfile_in(self.dir.join("sha256"))
            .map_err(|e| RegistryError::Io { what: what.clone(), source: e })?;
        let (std_file, partial_path) = partial.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let result = client.download_blob(repository, digest, size, &mut file, progress).await;
        drop(file);
        match result {
            Ok(()) => partial_path
                .persist(self.path(digest))
                .map_err(|e| RegistryError::Io { what, source: e.error })
                .map(|_| true),
            // Dropping the TempPath removes the partial file.
            Err(e) => Err(e),
        }
    }
}

/// Which blobs have landed in the store, so that the archive writer can follow the downloads blob by blob
/// instead of waiting for all of them.
#[derive(Clone, Default)]
pub struct Arrivals {
    /// Arrived blobs (with whether their bytes were verified on the way in), and why arrivals stopped.
    inner: Arc<(Mutex<(HashMap<Digest, bool>, Option<String>)>, Condvar)>,
}

impl Arrivals {
    /// `verified`: the bytes were hashed against the digest as they were written, in this run.
    pub fn arrived(&self, digest: &Digest, verified: bool) {
        let (state, cv) = &*self.inner;
        state.lock().expect("arrivals lock").0.insert(digest.clone(), verified);
        cv.notify_all();
    }

    /// No more blobs will come: wake the waiter with this reason.
    pub fn abort(&self, why: String) {
        let (state, cv) = &*self.inner;
        state.lock().expect("arrivals lock").1.get_or_insert(why);
        cv.notify_all();
    }

    /// Block until `digest` has arrived (returning whether it was verified on the way in), or fail if the
    /// downloads stopped.
    pub fn wait(&self, digest: &Digest) -> std::io::Result<bool> {
        let (state, cv) = &*self.inner;
        let mut guard = state.lock().expect("arrivals lock");
        loop {
            if let Some(verified) = guard.0.get(digest) {
                return Ok(*verified);
            }
            if let Some(why) = &guard.1 {
                return Err(std::io::Error::other(format!("the download of {digest} did not complete: {why}")));
            }
            guard = cv.wait(guard).expect("arrivals lock");
        }
    }
}
