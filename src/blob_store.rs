//! A content-addressed directory of blobs (`sha256/<hex>`), where export stages what it downloads.
//!
//! A blob appears under its final name only after its bytes matched its digest; partial downloads live
//! under a temporary name that is removed on failure, so the store never holds unverified content.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::digest::{Digest, DigestWriter};
use crate::registry::{BlobSink, RegistryClient, RegistryError};

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

    /// Make `digest` available in the store: a stored copy is hashed first (a damaged one is removed and
    /// fetched again); otherwise it is downloaded, resuming a partial download an interrupted run left behind.
    /// Returns true: the bytes in the store have been verified in this run.
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
            let path = final_path.clone();
            let ok = tokio::task::spawn_blocking(move || hash_file(&path, u64::MAX).map(|(d, _)| d))
                .await
                .map_err(|e| io_err(std::io::Error::other(e)))?
                .map_err(io_err)?
                == *digest;
            if ok {
                progress(size as i64);
                return Ok(true);
            }
            std::fs::remove_file(&final_path).map_err(io_err)?;
        }
        // A fixed name lets an interrupted run's bytes be resumed; the lock keeps two runs from sharing it.
        let partial_path = self.dir.join("sha256").join(format!("{}.partial", digest.hex()));
        let fixed = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&partial_path).map_err(io_err)?;
        let (std_file, path, temp) = match fixed.try_lock() {
            Ok(()) => (fixed, partial_path, None),
            Err(_) => {
                let t = tempfile::Builder::new().prefix(&format!(".{}-", digest.hex())).suffix(".partial").tempfile_in(self.dir.join("sha256")).map_err(io_err)?;
                let (f, p) = t.into_parts();
                (f, p.to_path_buf(), Some(p))
            }
        };
        // Hash what an earlier run left, so the download continues from there.
        let existing = std_file.metadata().map_err(io_err)?.len();
        let resume = if existing > 0 && existing < size {
            let p = path.clone();
            let (_, hasher) = tokio::task::spawn_blocking(move || hash_file_state(&p, existing)).await.map_err(|e| io_err(std::io::Error::other(e)))?.map_err(io_err)?;
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
        let file = Arc::new(std_file);
        arrivals.writing(digest, file.clone(), resume.len());
        let mut sink = StagedFile { file, digest: digest.clone(), len: resume.len(), buf: Vec::with_capacity(STAGE_CHUNK), in_flight: None, arrivals };
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
                if matches!(e, RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. }) || temp.is_some() {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e)
            }
        }
    }
}

/// sha256 of the first `limit` bytes of a file, and how many there were.
fn hash_file(path: &Path, limit: u64) -> std::io::Result<(Digest, u64)> {
    let (d, h) = hash_file_state(path, limit)?;
    Ok((d, h.len()))
}

fn hash_file_state(path: &Path, limit: u64) -> std::io::Result<(Digest, DigestWriter)> {
    let mut h = DigestWriter::new();
    let f = std::fs::File::open(path)?;
    std::io::copy(&mut std::io::Read::take(std::io::BufReader::with_capacity(1 << 20, f), limit), &mut h)?;
    Ok((h.clone().finish(), h))
}

/// Bytes written to the staged file per write: big enough that writes are cheap, small enough that the
/// archive writer, which follows the file as it grows, is never far behind.
const STAGE_CHUNK: usize = 1 << 20;

type StageWrite = tokio::task::JoinHandle<std::io::Result<Vec<u8>>>;

/// The download's side of a staged blob: bytes are written at their offset by a blocking task while the next
/// chunk arrives (one write in flight), and every completed write is announced to the archive writer.
struct StagedFile<'a> {
    file: Arc<File>,
    digest: Digest,
    /// Bytes the file will hold once the write in flight completes, not counting `buf`.
    len: u64,
    buf: Vec<u8>,
    /// The write in flight; it hands its buffer back.
    in_flight: Option<StageWrite>,
    arrivals: &'a Arrivals,
}

impl StagedFile<'_> {
    /// Wait for the write in flight, announce it, and keep its buffer for reuse.
    async fn settle(&mut self) -> std::io::Result<()> {
        if let Some(write) = self.in_flight.take() {
            let mut spare = write.await.map_err(std::io::Error::other)??;
            if self.buf.is_empty() {
                spare.clear();
                self.buf = spare;
            }
        }
        Ok(())
    }

    async fn write_buf(&mut self) -> std::io::Result<()> {
        self.settle().await?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(STAGE_CHUNK));
        let offset = self.len;
        self.len += bytes.len() as u64;
        let (file, arrivals, digest) = (self.file.clone(), self.arrivals.clone(), self.digest.clone());
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&bytes, offset)?;
            // Announced from here, at once, so the archive writer never waits for the next chunk to arrive.
            arrivals.committed(&digest, offset + bytes.len() as u64);
            Ok(bytes)
        }));
        Ok(())
    }
}

impl BlobSink for StagedFile<'_> {
    async fn append(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let take = (STAGE_CHUNK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == STAGE_CHUNK {
                self.write_buf().await?;
            }
        }
        Ok(())
    }

    async fn restart(&mut self) -> std::io::Result<()> {
        self.settle().await?;
        self.buf.clear();
        self.len = 0;
        self.file.set_len(0)?;
        self.arrivals.restarted(&self.digest);
        Ok(())
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.write_buf().await?;
        self.settle().await
    }
}

/// One blob as the archive writer sees it.
#[derive(Default)]
struct Slot {
    /// The staged file while it is being written.
    file: Option<Arc<File>>,
    /// Bytes of `file` that are written.
    committed: u64,
    /// Bumped whenever the download starts over, making what was read from the file before worthless.
    generation: u32,
    /// Arrived: `Some(verified)`, where `verified` means hashed against the digest on the way in, in this run.
    done: Option<bool>,
}

#[derive(Default)]
struct ArrivalState {
    slots: HashMap<Digest, Slot>,
    /// Why no more blobs will come, if they won't.
    aborted: Option<String>,
}

/// What the downloads have put in the store so far, so that the archive writer can follow them: a blob that
/// is still downloading is read as it is written, instead of after its last byte.
#[derive(Clone, Default)]
pub struct Arrivals {
    inner: Arc<(Mutex<ArrivalState>, Condvar)>,
}

/// A blob's download started over after the archive writer had read part of it: those bytes are in the
/// archive already, so the archive must be written again (see `BlobFollower`).
#[derive(Debug, thiserror::Error)]
#[error("the download of {0} started over after part of it was written to the archive")]
pub struct DownloadRestarted(pub Digest);

impl Arrivals {
    fn update(&self, digest: &Digest, change: impl FnOnce(&mut Slot)) {
        let (state, cv) = &*self.inner;
        change(state.lock().expect("arrivals lock").slots.entry(digest.clone()).or_default());
        cv.notify_all();
    }

    /// The download of `digest` is writing `file`, which already holds `committed` bytes.
    fn writing(&self, digest: &Digest, file: Arc<File>, committed: u64) {
        self.update(digest, |s| {
            s.file = Some(file);
            s.committed = committed;
        });
    }

    fn generation(&self, digest: &Digest) -> u32 {
        self.inner.0.lock().expect("arrivals lock").slots.get(digest).map_or(0, |s| s.generation)
    }

    fn committed(&self, digest: &Digest, len: u64) {
        self.update(digest, |s| s.committed = len);
    }

    fn restarted(&self, digest: &Digest) {
        self.update(digest, |s| {
            s.committed = 0;
            s.generation += 1;
        });
    }

    /// `verified`: the bytes were hashed against the digest as they were written, in this run.
    pub fn arrived(&self, digest: &Digest, verified: bool) {
        self.update(digest, |s| s.done = Some(verified));
    }

    /// No more blobs will come: wake the waiter with this reason.
    pub fn abort(&self, why: String) {
        let (state, cv) = &*self.inner;
        state.lock().expect("arrivals lock").aborted.get_or_insert(why);
        cv.notify_all();
    }

    /// Read `digest` (`size` bytes, stored at `path` once complete) while it is still downloading.
    pub fn follow(&self, digest: &Digest, size: u64, path: PathBuf) -> BlobFollower {
        BlobFollower { arrivals: self.clone(), digest: digest.clone(), size, path, pos: 0, file: None, generation: 0, verified: None, hasher: None }
    }
}

/// Reads a blob from the store as its download writes it: each read returns bytes already written, waiting
/// for more when it has caught up; the end comes only once the download has checked the digest. If the
/// download starts over after bytes were read, reading fails with `DownloadRestarted`.
pub struct BlobFollower {
    arrivals: Arrivals,
    digest: Digest,
    size: u64,
    path: PathBuf,
    pos: u64,
    file: Option<Arc<File>>,
    generation: u32,
    verified: Option<bool>,
    /// Set when the blob arrived unverified (not hashed in this run): then this reader checks it.
    hasher: Option<DigestWriter>,
}

impl BlobFollower {
    /// How far the readable bytes go (waiting for some past `pos`), opening the file if needed.
    fn readable(&mut self) -> std::io::Result<u64> {
        let (state, cv) = &*self.arrivals.inner;
        let mut guard = state.lock().expect("arrivals lock");
        loop {
            if let Some(slot) = guard.slots.get(&self.digest) {
                if slot.generation != self.generation {
                    if self.pos > 0 {
                        return Err(std::io::Error::other(DownloadRestarted(self.digest.clone())));
                    }
                    self.generation = slot.generation;
                }
                if self.file.is_none() {
                    self.file = slot.file.clone();
                }
                if let Some(verified) = slot.done {
                    self.verified = Some(verified);
                    return Ok(self.size);
                }
                // The last byte is held back until the download has checked the digest: a reader that stops
                // after exactly `size` bytes must still learn whether the download started over.
                let end = slot.committed.min(self.size.saturating_sub(1));
                if end > self.pos && self.file.is_some() {
                    return Ok(end);
                }
            }
            if let Some(why) = &guard.aborted {
                return Err(std::io::Error::other(format!("the download of {} did not complete: {why}", self.digest)));
            }
            guard = cv.wait(guard).expect("arrivals lock");
        }
    }
}

impl std::io::Read for BlobFollower {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.size && self.verified.is_some() {
            return Ok(0);
        }
        let end = self.readable()?;
        match self.verified {
            Some(false) if self.pos == 0 && self.hasher.is_none() => self.hasher = Some(DigestWriter::new()),
            Some(false) if self.hasher.is_none() => return Err(std::io::Error::other(format!("blob {} arrived unverified", self.digest))),
            _ => {}
        }
        if self.file.is_none() {
            // Arrived without a download in this run (it was in the store already).
            let f = File::open(&self.path).map_err(|e| std::io::Error::new(e.kind(), format!("staged blob {}: {e}", self.path.display())))?;
            self.file = Some(Arc::new(f));
        }
        let want = (end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        use std::os::unix::fs::FileExt;
        let n = self.file.as_ref().expect("opened above").read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            // The file was cut under us: the download started over between `readable` and this read.
            if self.arrivals.generation(&self.digest) != self.generation {
                return Err(std::io::Error::other(DownloadRestarted(self.digest.clone())));
            }
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("staged blob {} is shorter than {} bytes", self.digest, self.size)));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.pos += n as u64;
        // Checked with the last byte, not on a later call: a reader that takes exactly `size` bytes (the
        // archive writer) never makes the call that returns 0.
        if self.pos == self.size
            && let Some(h) = self.hasher.take()
        {
            let actual = h.finish();
            if actual != self.digest {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("staged blob {} changed on disk (now {actual}); refusing to write it", self.digest),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    use super::*;

    fn staged(dir: &Path, bytes: &[u8]) -> Arc<File> {
        let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("blob")).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        Arc::new(f)
    }

    #[test]
    fn a_follower_reads_committed_bytes_while_the_download_runs_and_ends_when_it_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let digest = Digest::of(&data);
        let arrivals = Arrivals::default();
        let file = staged(dir.path(), &data[..1000]);
        arrivals.writing(&digest, file.clone(), 1000);
        let mut follower = arrivals.follow(&digest, data.len() as u64, dir.path().join("unused"));
        let mut buf = vec![0u8; 4096];
        assert_eq!(follower.read(&mut buf).unwrap(), 1000, "only what is committed");
        let writer = {
            let (arrivals, digest, data) = (arrivals.clone(), digest.clone(), data.clone());
            std::thread::spawn(move || {
                file.write_all_at(&data[1000..], 1000).unwrap();
                arrivals.committed(&digest, 3000);
                arrivals.arrived(&digest, true);
            })
        };
        let mut rest = Vec::new();
        follower.read_to_end(&mut rest).unwrap();
        writer.join().unwrap();
        assert_eq!([&buf[..1000], &rest[..]].concat(), data);
    }

    /// Regression: a reader that takes exactly `size` bytes (as the archive writer does) never makes the call
    /// that returns 0; if the whole blob was readable before its digest was checked, a download that then
    /// started over went unnoticed and the archive kept the bad bytes.
    #[test]
    fn the_last_byte_waits_for_the_digest_check() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 1000];
        let digest = Digest::of(&data);
        let arrivals = Arrivals::default();
        arrivals.writing(&digest, staged(dir.path(), &data), 1000);
        let mut follower = arrivals.follow(&digest, 1000, dir.path().join("unused"));
        let mut buf = vec![0u8; 1000];
        assert_eq!(follower.read(&mut buf).unwrap(), 999);
        arrivals.restarted(&digest);
        let err = follower.read(&mut buf).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<DownloadRestarted>()), "{err}");

        let mut again = arrivals.follow(&digest, 1000, dir.path().join("unused"));
        arrivals.committed(&digest, 1000);
        assert_eq!(again.read(&mut buf).unwrap(), 999);
        arrivals.arrived(&digest, true);
        assert_eq!(again.read(&mut buf).unwrap(), 1);
        assert_eq!(again.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_download_that_starts_over_after_bytes_were_read_fails_the_follower_but_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 2000];
        let digest = Digest::of(&data);
        let arrivals = Arrivals::default();
        arrivals.writing(&digest, staged(dir.path(), &data), 2000);
        // Restarted before anything was read: the follower just reads the new bytes.
        let mut early = arrivals.follow(&digest, 2000, dir.path().join("unused"));
        arrivals.restarted(&digest);
        arrivals.committed(&digest, 2000);
        let mut late = arrivals.follow(&digest, 2000, dir.path().join("unused"));
        let mut buf = vec![0u8; 100];
        assert_eq!(early.read(&mut buf).unwrap(), 100);
        assert_eq!(late.read(&mut buf).unwrap(), 100);
        // Restarted after: the bytes already read may be wrong.
        arrivals.restarted(&digest);
        let err = late.read(&mut buf).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<DownloadRestarted>()), "{err}");
    }

    #[test]
    fn an_unverified_arrival_is_hashed_by_the_follower_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"the content".to_vec();
        let digest = Digest::of(&good);
        std::fs::write(dir.path().join("b"), b"the c0ntent").unwrap();
        let arrivals = Arrivals::default();
        arrivals.arrived(&digest, false);
        // Exactly `size` bytes, as the archive writer reads.
        let err = arrivals.follow(&digest, good.len() as u64, dir.path().join("b")).read_exact(&mut vec![0u8; good.len()]).unwrap_err();
        assert!(err.to_string().contains("changed on disk"), "{err}");
        std::fs::write(dir.path().join("b"), &good).unwrap();
        let mut out = Vec::new();
        arrivals.follow(&digest, good.len() as u64, dir.path().join("b")).read_to_end(&mut out).unwrap();
        assert_eq!(out, good);
    }

    #[test]
    fn followers_fail_when_the_downloads_stop() {
        let arrivals = Arrivals::default();
        let digest = Digest::of(b"never");
        let waiter = {
            let arrivals = arrivals.clone();
            std::thread::spawn(move || arrivals.follow(&digest, 5, PathBuf::from("unused")).read(&mut [0u8; 5]).unwrap_err())
        };
        arrivals.abort("the registry went away".into());
        assert!(waiter.join().unwrap().to_string().contains("the registry went away"));
    }
}
