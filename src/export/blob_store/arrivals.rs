//! How the archive writer follows downloads: which blobs have arrived, how much of each is written, and a
//! reader (`BlobFollower`) that reads a blob while it is still downloading.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::oci::digest::{Digest, DigestWriter};
use crate::support::direct_io::{AlignedBuf, DirectFile, ReadAhead};

/// Bytes a follower reads from the disk at a time when it reads around the page cache.
const FOLLOW_CHUNK: usize = 1 << 20;
/// Chunks a followed download keeps in memory after writing them, so that a follower close behind reads them
/// from there instead of from the disk (which then only writes the cache): at most this many MiB per export.
const RECENT_CHUNKS: usize = 4;

/// A chunk of a staged file in memory: its offset in the file and its bytes.
pub(super) type Chunk = (u64, Arc<AlignedBuf>);

fn covers((at, chunk): &Chunk, pos: u64) -> bool {
    *at <= pos && pos < at + chunk.len() as u64
}

/// One blob as the archive writer sees it.
#[derive(Default)]
struct Slot {
    /// The staged file while it is being written.
    file: Option<Arc<DirectFile>>,
    /// Bytes of `file` that are written.
    committed: u64,
    /// Bumped whenever the download starts over, making what was read from the file before worthless.
    generation: u32,
    /// Arrived: `Some(verified)`, where `verified` means hashed against the digest on the way in, in this run.
    done: Option<bool>,
    /// A follower is reading this blob: its download keeps its last chunks in `recent`.
    followed: bool,
    recent: std::collections::VecDeque<Chunk>,
    /// How far the follower has read (told on each of its reads), and in which generation of the download.
    read_to: u64,
    read_generation: u32,
    /// Downloads waiting in `hand_over` for the follower to read on: each read of the follower wakes them.
    waiters: u32,
    /// Chunks handed to the follower and never written (`Arrivals::hand_over`), kept until it has read them.
    handed: std::collections::VecDeque<Chunk>,
    /// The spans of the file that were handed over and never written (start, end), in order: never read from
    /// the file.
    holes: Vec<(u64, u64)>,
}

/// Wait until `decide` (given the slot of `digest`, if there is one, and whether the downloads were aborted)
/// answers. While it waits, the slot counts it in `waiters`, so that each read of the follower wakes it.
fn wait_for<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, ArrivalState>,
    digest: &Digest,
    mut decide: impl FnMut(Option<&Slot>, bool) -> Option<T>,
) -> (MutexGuard<'a, ArrivalState>, T) {
    loop {
        if let Some(answer) = decide(guard.slots.get(digest), guard.aborted.is_some()) {
            return (guard, answer);
        }
        if let Some(s) = guard.slots.get_mut(digest) {
            s.waiters += 1;
        }
        guard = cv.wait(guard).expect("arrivals lock");
        if let Some(s) = guard.slots.get_mut(digest) {
            s.waiters = s.waiters.saturating_sub(1);
        }
    }
}

#[derive(Default)]
struct ArrivalState {
    slots: HashMap<Digest, Slot>,
    /// Why no more blobs will come, if they won't.
    aborted: Option<String>,
    /// Why the archive being written must be written again, once a follower found out.
    rewrite: Option<Rewrite>,
    /// The store is not kept (`--no-cache`): a chunk its follower is close behind goes to it and not to the disk.
    hand_over: bool,
}

/// What the downloads have put in the store so far, so that the archive writer can follow them: a blob that
/// is still downloading is read as it is written, instead of after its last byte.
#[derive(Clone, Default)]
pub struct Arrivals {
    inner: Arc<(Mutex<ArrivalState>, Condvar)>,
}

/// Why the archive that followed the downloads holds bytes it must not keep, and has to be written again.
/// A follower's read fails when it finds out, and the reason is kept here, typed, for the writer's caller
/// (`Arrivals::take_rewrite`): the `io::Error` that travels through the tar writer only says that reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rewrite {
    /// A blob's download started over after the writer had read part of it: those bytes are in the archive.
    #[error("the download of {0} started over after part of it was written to the archive")]
    DownloadRestarted(Digest),
    /// A blob that was in the store already (from an earlier run) does not match its digest: the cache is
    /// damaged. The copy must be removed and fetched again first.
    #[error("the cached copy of {0} does not match its digest (the cache is damaged)")]
    DamagedCacheBlob(Digest),
}

impl Arrivals {
    /// For a store that is not kept (the staging directory of `--no-cache`): a download the archive writer
    /// follows closely hands its chunks to the writer instead of writing them, so the blob is written once, to
    /// the archive (`hand_over`).
    pub fn handing_over() -> Arrivals {
        let arrivals = Arrivals::default();
        arrivals.inner.0.lock().expect("arrivals lock").hand_over = true;
        arrivals
    }

    /// Chunks are written from now on, and the blobs that have holes (bytes handed over) are returned, their
    /// slots forgotten: the archive is to be written again, so they must be downloaded again first.
    pub fn stop_handing_over(&self) -> Vec<Digest> {
        let mut state = self.inner.0.lock().expect("arrivals lock");
        state.hand_over = false;
        let holed: Vec<Digest> =
            state.slots.iter().filter(|(_, s)| !s.holes.is_empty()).map(|(d, _)| d.clone()).collect();
        for d in &holed {
            state.slots.remove(d);
        }
        holed
    }

    /// Give `chunk` of `digest` (ending at `len`) to its follower instead of writing it, when the store is not
    /// kept and the blob is being followed. First wait until the follower has read all but the last chunk (it
    /// reads what is behind from the disk), then hand the chunk over and wait until it has read up to it: the
    /// download runs at the archive writer's pace, and at most two chunks wait in memory. Returns false when the
    /// chunk must be written as usual. Runs on a blocking thread (it waits); every wait is bounded by the
    /// follower, which reads on, or is dropped (done, or failed), or by the downloads stopping.
    pub(super) fn hand_over(&self, digest: &Digest, len: u64, chunk: &Chunk) -> bool {
        let (state, cv) = &*self.inner;
        let mut guard = state.lock().expect("arrivals lock");
        if !guard.hand_over {
            return false;
        }
        let at = chunk.0;
        let span = chunk.1.len() as u64;
        let Some(generation) = guard.slots.get(digest).map(|s| s.generation) else { return false };
        // Not to a follower of bytes from before the download started over: it is about to fail.
        let following = |s: &Slot| s.followed && s.generation == generation && s.read_generation == generation;
        let close_behind;
        (guard, close_behind) = wait_for(cv, guard, digest, |slot, aborted| match slot {
            Some(s) if following(s) && !aborted => (at.saturating_sub(s.read_to) <= span * 2).then_some(true),
            _ => Some(false),
        });
        if !close_behind {
            return false;
        }
        let slot = guard.slots.get_mut(digest).expect("checked above");
        let read_to = slot.read_to;
        slot.handed.retain(|(a, c)| a + c.len() as u64 > read_to);
        slot.handed.push_back(chunk.clone());
        slot.committed = len;
        match slot.holes.last_mut() {
            Some((_, end)) if *end == at => *end = len,
            _ => slot.holes.push((at, len)),
        }
        cv.notify_all();
        let _ = wait_for(cv, guard, digest, |slot, aborted| match slot {
            Some(s) if following(s) && s.read_to < at && !aborted => None,
            _ => Some(()),
        });
        true
    }

    fn update(&self, digest: &Digest, change: impl FnOnce(&mut Slot)) {
        let (state, cv) = &*self.inner;
        change(state.lock().expect("arrivals lock").slots.entry(digest.clone()).or_default());
        cv.notify_all();
    }

    /// The download of `digest` is writing `file`, which already holds `committed` bytes.
    pub(super) fn writing(&self, digest: &Digest, file: Arc<DirectFile>, committed: u64) {
        self.update(digest, |s| {
            s.file = Some(file);
            s.committed = committed;
        });
    }

    fn generation(&self, digest: &Digest) -> u32 {
        self.inner.0.lock().expect("arrivals lock").slots.get(digest).map_or(0, |s| s.generation)
    }

    #[cfg(test)]
    fn committed(&self, digest: &Digest, len: u64) {
        self.update(digest, |s| s.committed = len);
    }

    /// `chunk` is written, ending at `len`; a follower may take it from memory.
    pub(super) fn committed_chunk(&self, digest: &Digest, len: u64, chunk: Chunk) {
        self.update(digest, |s| {
            s.committed = len;
            if s.followed {
                if s.recent.len() == RECENT_CHUNKS {
                    s.recent.pop_front();
                }
                s.recent.push_back(chunk);
            }
        });
    }

    pub(super) fn restarted(&self, digest: &Digest) {
        self.update(digest, |s| {
            s.committed = 0;
            s.generation += 1;
            s.recent.clear();
            s.handed.clear();
            s.holes.clear();
            s.read_to = 0;
        });
    }

    /// `verified`: the bytes were hashed against the digest as they were written, in this run.
    pub fn arrived(&self, digest: &Digest, verified: bool) {
        self.update(digest, |s| s.done = Some(verified));
    }

    /// The archive must be written again; the first reason found is kept.
    fn must_rewrite(&self, why: Rewrite) -> std::io::Error {
        let message = why.to_string();
        self.inner.0.lock().expect("arrivals lock").rewrite.get_or_insert(why);
        std::io::Error::other(message)
    }

    /// Why the archive must be written again, if a follower found a reason since the last call.
    pub fn take_rewrite(&self) -> Option<Rewrite> {
        self.inner.0.lock().expect("arrivals lock").rewrite.take()
    }

    /// No more blobs will come: wake the waiter with this reason.
    pub fn abort(&self, why: String) {
        let (state, cv) = &*self.inner;
        state.lock().expect("arrivals lock").aborted.get_or_insert(why);
        cv.notify_all();
    }

    /// Read `digest` (`size` bytes, stored at `path` once complete) while it is still downloading.
    pub fn follow(&self, digest: &Digest, size: u64, path: PathBuf) -> BlobFollower {
        self.inner.0.lock().expect("arrivals lock").slots.entry(digest.clone()).or_default().followed = true;
        BlobFollower {
            arrivals: self.clone(),
            digest: digest.clone(),
            size,
            path,
            pos: 0,
            file: None,
            generation: 0,
            verified: None,
            hasher: None,
            chunk: None,
            found: None,
            ahead: None,
        }
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
    file: Option<Arc<DirectFile>>,
    generation: u32,
    verified: Option<bool>,
    /// Set when the blob arrived unverified (a copy from the cache, not hashed in this run): then this reader
    /// checks it.
    hasher: Option<DigestWriter>,
    /// The chunk being read from: one the download left in memory, or the last span read around the page
    /// cache (the caller's buffers are not aligned, so direct reads land here first).
    chunk: Option<Chunk>,
    /// A chunk the download left in memory covering `pos`, found by `readable`.
    found: Option<Chunk>,
    /// The next chunk, being read from the disk while this one is used (started at the first disk read).
    ahead: Option<ReadAhead>,
}

impl Drop for BlobFollower {
    fn drop(&mut self) {
        // Done with this blob: its download need not keep chunks for it any more.
        let (state, cv) = &*self.arrivals.inner;
        if let Some(slot) = state.lock().unwrap_or_else(|e| e.into_inner()).slots.get_mut(&self.digest) {
            slot.followed = false;
            slot.recent.clear();
            slot.handed.clear();
        }
        // A download waiting to hand this blob a chunk stops waiting.
        cv.notify_all();
    }
}

impl BlobFollower {
    /// How far the readable bytes go (waiting for some past `pos`), opening the file if needed.
    fn readable(&mut self) -> std::io::Result<u64> {
        let (state, cv) = &*self.arrivals.inner;
        let mut guard = state.lock().expect("arrivals lock");
        loop {
            if let Some(slot) = guard.slots.get_mut(&self.digest) {
                if slot.generation != self.generation {
                    if self.pos > 0 {
                        drop(guard);
                        return Err(self.arrivals.must_rewrite(Rewrite::DownloadRestarted(self.digest.clone())));
                    }
                    self.generation = slot.generation;
                    self.chunk = None;
                    self.found = None;
                    if let Some(a) = &mut self.ahead {
                        a.discard();
                    }
                }
                // Told on every read, so that a download handing this blob chunks knows when to go on.
                if (slot.read_to, slot.read_generation) != (self.pos, self.generation) {
                    (slot.read_to, slot.read_generation) = (self.pos, self.generation);
                    if slot.waiters > 0 {
                        cv.notify_all();
                    }
                }
                if self.file.is_none() {
                    self.file = slot.file.clone();
                }
                let in_memory = self.chunk.as_ref().is_some_and(|c| covers(c, self.pos));
                if !in_memory {
                    self.found = slot.recent.iter().chain(&slot.handed).find(|c| covers(c, self.pos)).cloned();
                }
                // What was handed over is read from memory or not at all: the file has a hole there.
                let hole = slot.holes.iter().find(|(_, end)| *end > self.pos).copied();
                let from_disk = !in_memory && self.found.is_none();
                if from_disk && hole.is_some_and(|(start, _)| start <= self.pos) {
                    return Err(std::io::Error::other(format!(
                        "bytes of {} from {} were handed to the archive writer and are gone",
                        self.digest, self.pos
                    )));
                }
                let disk_limit = if from_disk { hole.map_or(u64::MAX, |(start, _)| start) } else { u64::MAX };
                if let Some(verified) = slot.done {
                    self.verified = Some(verified);
                    return Ok(self.size.min(disk_limit));
                }
                // The last byte is held back until the download has checked the digest: a reader that stops
                // after exactly `size` bytes must still learn whether the download started over.
                let end = slot.committed.min(self.size.saturating_sub(1)).min(disk_limit);
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

impl BlobFollower {
    /// Read at `pos` (below `end`, the readable limit): from the last direct chunk if it holds `pos`, else a
    /// new direct chunk if the span is aligned, else through the page cache.
    fn read_at(&mut self, buf: &mut [u8], end: u64) -> std::io::Result<usize> {
        let file = self.file.clone().expect("opened by the caller");
        if let Some(found) = self.found.take() {
            self.chunk = Some(found);
        }
        if !self.chunk.as_ref().is_some_and(|c| covers(c, self.pos)) {
            let (own, direct) = match self.ahead.as_mut().and_then(|a| a.take(self.pos)) {
                Some((read, result)) => (read, result?),
                None => {
                    // Reuse our own read buffer unless it was one of the download's chunks.
                    let mut own = match self.chunk.take() {
                        Some((_, c)) => Arc::try_unwrap(c).unwrap_or_else(|_| AlignedBuf::new(FOLLOW_CHUNK)),
                        None => AlignedBuf::new(FOLLOW_CHUNK),
                    };
                    let direct = file.read_direct(&mut own, self.pos, end)?;
                    (own, direct)
                }
            };
            if direct.is_none() {
                use std::os::unix::fs::FileExt;
                return file.buffered().read_at(buf, self.pos);
            }
            if own.is_empty() {
                return Ok(0);
            }
            // The next chunk is read while this one is used.
            let next = self.pos + own.len() as u64;
            if next < end {
                self.ahead.get_or_insert_with(ReadAhead::new).start(
                    file.clone(),
                    AlignedBuf::new(FOLLOW_CHUNK),
                    next,
                    end,
                );
            }
            self.chunk = Some((self.pos, Arc::new(own)));
        }
        let (at, chunk) = self.chunk.as_ref().expect("covers pos");
        let from = (self.pos - at) as usize;
        // A chunk from memory may run past what is readable yet (the held-back last byte).
        let n = buf.len().min(chunk.len() - from).min((end - self.pos) as usize);
        buf[..n].copy_from_slice(&chunk.as_slice()[from..from + n]);
        Ok(n)
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
            Some(false) if self.hasher.is_none() => {
                return Err(std::io::Error::other(format!("blob {} arrived unverified", self.digest)));
            }
            _ => {}
        }
        if self.file.is_none() {
            // Arrived without a download in this run: in the store already (then hashed here), or made here.
            let f = DirectFile::open_read(&self.path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("staged blob {}: {e}", self.path.display())))?;
            self.file = Some(Arc::new(f));
        }
        let want = (end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.read_at(&mut buf[..want], end)?;
        if n == 0 {
            // The file was cut under us: the download started over between `readable` and this read.
            if self.arrivals.generation(&self.digest) != self.generation {
                return Err(self.arrivals.must_rewrite(Rewrite::DownloadRestarted(self.digest.clone())));
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("staged blob {} is shorter than {} bytes", self.digest, self.size),
            ));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.pos += n as u64;
        // Checked with the last byte, not on a later call: a reader that takes exactly `size` bytes (the
        // archive writer) never makes the call that returns 0.
        if self.pos == self.size
            && let Some(h) = self.hasher.take()
            && h.finish() != self.digest
        {
            return Err(self.arrivals.must_rewrite(Rewrite::DamagedCacheBlob(self.digest.clone())));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Everything `follower` gives, read 1000 bytes at a time (odd sizes, as the tar writer's are not aligned).
    fn read_in_small_reads(follower: &mut BlobFollower) -> Vec<u8> {
        let (mut out, mut buf) = (Vec::new(), vec![0u8; 1000]);
        loop {
            let n = follower.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn staged(dir: &std::path::Path, bytes: &[u8]) -> Arc<DirectFile> {
        let path = dir.join("blob");
        let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        let f = DirectFile::new(f, &path);
        f.write_all_at(bytes, 0).unwrap();
        Arc::new(f)
    }

    /// The file stays empty here: what the follower reads can only come from the chunks in memory.
    #[test]
    fn a_follower_close_behind_reads_chunks_from_memory_and_releases_them() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let arrivals = Arrivals::default();
        arrivals.writing(&digest, staged(dir.path(), &[]), 0);

        // Nobody follows yet: the chunk is not kept.
        let mut early = AlignedBuf::new(4096);
        early.extend(&data[..1000]);
        let early = Arc::new(early);
        arrivals.committed_chunk(&digest, 1000, (0, early.clone()));
        assert_eq!(Arc::strong_count(&early), 1);

        let mut follower = arrivals.follow(&digest, data.len() as u64, dir.path().join("unused"));
        let chunks: Vec<Arc<AlignedBuf>> = data
            .chunks(1000)
            .map(|part| {
                let mut c = AlignedBuf::new(4096);
                c.extend(part);
                Arc::new(c)
            })
            .collect();
        for (i, c) in chunks.iter().enumerate() {
            arrivals.committed_chunk(&digest, (i as u64 + 1) * 1000, (i as u64 * 1000, c.clone()));
        }
        arrivals.arrived(&digest, true);
        let mut out = Vec::new();
        follower.read_to_end(&mut out).unwrap();
        assert!(out == data);
        drop(follower);
        assert!(chunks.iter().all(|c| Arc::strong_count(c) == 1), "the chunks are released with the follower");
    }

    /// Reads of odd sizes over a blob written in aligned chunks: served from direct chunks where the span is
    /// aligned, through the page cache for the tail, the same bytes either way.
    #[test]
    fn a_follower_reads_the_same_bytes_through_direct_chunks_and_the_page_cache() {
        use crate::support::direct_io::ALIGN;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> =
            (0..(FOLLOW_CHUNK + 3 * ALIGN + 123) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let digest = Digest::of(&data);
        let arrivals = Arrivals::default();
        let file = staged(dir.path(), &[]);
        arrivals.writing(&digest, file.clone(), 0);
        let mut follower = arrivals.follow(&digest, data.len() as u64, dir.path().join("unused"));
        let writer = {
            let (arrivals, digest, data) = (arrivals.clone(), digest.clone(), data.clone());
            std::thread::spawn(move || {
                let mut chunk = AlignedBuf::new(2 * ALIGN);
                for (i, part) in data.chunks(2 * ALIGN).enumerate() {
                    chunk.clear();
                    chunk.extend(part);
                    file.write_all_at(chunk.as_slice(), (i * 2 * ALIGN) as u64).unwrap();
                    arrivals.committed(&digest, (i * 2 * ALIGN + part.len()) as u64);
                }
                arrivals.arrived(&digest, true);
            })
        };
        let out = read_in_small_reads(&mut follower);
        writer.join().unwrap();
        assert!(out == data, "{} bytes read back, {} written", out.len(), data.len());
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
        assert_eq!(arrivals.take_rewrite(), Some(Rewrite::DownloadRestarted(digest.clone())), "{err}");

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
        assert_eq!(arrivals.take_rewrite(), Some(Rewrite::DownloadRestarted(digest.clone())), "{err}");
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
        let err = arrivals
            .follow(&digest, good.len() as u64, dir.path().join("b"))
            .read_exact(&mut vec![0u8; good.len()])
            .unwrap_err();
        assert_eq!(arrivals.take_rewrite(), Some(Rewrite::DamagedCacheBlob(digest.clone())), "{err}");
        std::fs::write(dir.path().join("b"), &good).unwrap();
        let mut out = Vec::new();
        arrivals.follow(&digest, good.len() as u64, dir.path().join("b")).read_to_end(&mut out).unwrap();
        assert_eq!(out, good);
    }

    /// A copy from the cache (arrived unverified) is read chunk after chunk, the next one read ahead, and hashed
    /// on the way: the bytes come out whole whatever the read sizes, and a byte changed deep in the file (in a
    /// chunk that was read ahead) is caught with the last byte.
    #[test]
    fn a_cached_blob_read_ahead_in_chunks_is_hashed_and_a_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> =
            (0..(3 * FOLLOW_CHUNK + 777) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
        let digest = Digest::of(&data);
        let path = dir.path().join("cached");
        std::fs::write(&path, &data).unwrap();
        let arrivals = Arrivals::default();
        arrivals.arrived(&digest, false);
        for read_size in [4096, 100_000, 3 * FOLLOW_CHUNK] {
            let mut follower = arrivals.follow(&digest, data.len() as u64, path.clone());
            let mut out = Vec::new();
            let mut buf = vec![0u8; read_size];
            while out.len() < data.len() {
                let n = follower.read(&mut buf).unwrap();
                assert!(n > 0, "ended early at {}", out.len());
                out.extend_from_slice(&buf[..n]);
            }
            assert!(out == data, "reads of {read_size} bytes");
        }
        let mut damaged = data.clone();
        damaged[2 * FOLLOW_CHUNK + 5] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        let err = arrivals.follow(&digest, data.len() as u64, path).read_exact(&mut vec![0u8; data.len()]).unwrap_err();
        assert_eq!(arrivals.take_rewrite(), Some(Rewrite::DamagedCacheBlob(digest.clone())), "{err}");
    }

    /// Without a cache, a download the writer follows closely hands it every chunk: the file stays empty, the
    /// follower reads the blob whole, and the blob is reported as having holes (to be fetched again before a
    /// rewrite). A follower that is gone leaves the bytes it did not read unreadable, never zeros from the file.
    #[test]
    fn chunks_handed_to_a_follower_close_behind_are_never_written_and_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let digest = Digest::of(&data);
        let arrivals = Arrivals::handing_over();
        let file = staged(dir.path(), &[]);
        arrivals.writing(&digest, file.clone(), 0);
        let mut follower = arrivals.follow(&digest, data.len() as u64, dir.path().join("unused"));
        let download = {
            let (arrivals, digest, data, file) = (arrivals.clone(), digest.clone(), data.clone(), file.clone());
            std::thread::spawn(move || {
                let mut handed = 0;
                for (i, part) in data.chunks(4096).enumerate() {
                    let mut c = AlignedBuf::new(4096);
                    c.extend(part);
                    let (at, end) = (i as u64 * 4096, (i * 4096 + part.len()) as u64);
                    let chunk = (at, Arc::new(c));
                    if arrivals.hand_over(&digest, end, &chunk) {
                        handed += 1;
                    } else {
                        file.write_all_at(chunk.1.as_slice(), at).unwrap();
                        arrivals.committed_chunk(&digest, end, chunk);
                    }
                }
                arrivals.arrived(&digest, true);
                handed
            })
        };
        let out = read_in_small_reads(&mut follower);
        assert_eq!(download.join().unwrap(), data.len().div_ceil(4096), "every chunk handed over");
        assert!(out == data, "{} bytes read, {} sent", out.len(), data.len());
        assert_eq!(file.buffered().metadata().unwrap().len(), 0, "nothing written to the staged file");
        drop(follower);

        let mut late = arrivals.follow(&digest, data.len() as u64, dir.path().join("unused"));
        let err = late.read(&mut [0u8; 1000]).unwrap_err();
        assert!(err.to_string().contains("handed to the archive writer"), "{err}");
        assert_eq!(arrivals.stop_handing_over(), vec![digest.clone()]);
        assert!(!arrivals.hand_over(&digest, 1, &(0, Arc::new(AlignedBuf::new(4096)))), "handing over stopped");
    }

    /// A kept store (the cache) never hands over, and nor does a store nobody follows: the chunk is written.
    #[test]
    fn a_cache_or_an_unfollowed_blob_gets_its_chunks_written() {
        let digest = Digest::of(b"x");
        let chunk = (0, Arc::new(AlignedBuf::new(4096)));
        let cache = Arrivals::default();
        let _follower = cache.follow(&digest, 10, PathBuf::from("unused"));
        assert!(!cache.hand_over(&digest, 1, &chunk));
        let nobody = Arrivals::handing_over();
        nobody.arrived(&digest, false);
        assert!(!nobody.hand_over(&digest, 1, &chunk));
        assert!(nobody.stop_handing_over().is_empty());
    }

    #[test]
    fn followers_fail_when_the_downloads_stop() {
        let arrivals = Arrivals::default();
        let digest = Digest::of(b"never");
        let waiter = {
            let arrivals = arrivals.clone();
            std::thread::spawn(move || {
                arrivals.follow(&digest, 5, PathBuf::from("unused")).read(&mut [0u8; 5]).unwrap_err()
            })
        };
        arrivals.abort("the registry went away".into());
        assert!(waiter.join().unwrap().to_string().contains("the registry went away"));
    }
}
