//! Where a download's bytes go: the `BlobSink` the registry client writes into (so the client knows nothing
//! of files), writing the staged file in 1 MiB chunks and telling the archive writer about each one; or, for a
//! store that is not kept, handing a chunk to the archive writer close behind instead of writing it.

use std::sync::Arc;

use super::arrivals::Arrivals;
use crate::oci::digest::Digest;
use crate::registry::BlobSink;
use crate::support::direct_io::{AlignedBuf, DirectFile};

/// Bytes written to the staged file per write: big enough that writes are cheap, small enough that the
/// archive writer, which follows the file as it grows, is never far behind.
const STAGE_CHUNK: usize = 1 << 20;

type StageWrite = tokio::task::JoinHandle<std::io::Result<Arc<AlignedBuf>>>;

/// The download's side of a staged blob: bytes are written at their offset by a blocking task while the next
/// chunk arrives (one write in flight), and every completed write is announced to the archive writer.
pub(super) struct StagedFile<'a> {
    file: Arc<DirectFile>,
    digest: Digest,
    /// Bytes the file will hold once the write in flight completes, not counting `buf`.
    len: u64,
    /// Aligned, so that whole chunks can be written around the page cache.
    buf: AlignedBuf,
    /// The write in flight; it hands its buffer back, to be filled again.
    in_flight: Option<StageWrite>,
    spare: Option<AlignedBuf>,
    arrivals: &'a Arrivals,
}

impl<'a> StagedFile<'a> {
    /// Writes `digest` into `file`, which holds `len` bytes already.
    pub(super) fn new(file: Arc<DirectFile>, digest: Digest, len: u64, arrivals: &'a Arrivals) -> StagedFile<'a> {
        StagedFile { file, digest, len, buf: AlignedBuf::new(STAGE_CHUNK), in_flight: None, spare: None, arrivals }
    }

    /// Wait for the write in flight, announce it, and keep its buffer for reuse.
    async fn settle(&mut self) -> std::io::Result<()> {
        if let Some(write) = self.in_flight.take() {
            let written = write.await.map_err(std::io::Error::other)??;
            // Still held by a follower (it reads the chunk from memory): the pool supplies another.
            if let Ok(mut spare) = Arc::try_unwrap(written) {
                spare.clear();
                self.spare = Some(spare);
            }
        }
        Ok(())
    }

    async fn write_buf(&mut self) -> std::io::Result<()> {
        self.settle().await?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.spare.take().unwrap_or_else(|| AlignedBuf::new(STAGE_CHUNK));
        let bytes = std::mem::replace(&mut self.buf, next);
        let offset = self.len;
        self.len += bytes.len() as u64;
        let (file, arrivals, digest) = (self.file.clone(), self.arrivals.clone(), self.digest.clone());
        let bytes = Arc::new(bytes);
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let end = offset + bytes.len() as u64;
            // A store that is not kept and a follower close behind: the chunk goes to it, never to the disk.
            if arrivals.hand_over(&digest, end, &(offset, bytes.clone())) {
                return Ok(bytes);
            }
            file.write_all_at(bytes.as_slice(), offset)?;
            // Announced from here, at once, so the archive writer never waits for the next chunk to arrive;
            // the chunk itself goes along, for a follower close behind to read from memory.
            arrivals.committed_chunk(&digest, end, (offset, bytes.clone()));
            Ok(bytes)
        }));
        Ok(())
    }
}

impl BlobSink for StagedFile<'_> {
    async fn append(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let take = self.buf.extend(bytes);
            bytes = &bytes[take..];
            if self.buf.is_full() {
                self.write_buf().await?;
            }
        }
        Ok(())
    }

    async fn restart(&mut self) -> std::io::Result<()> {
        self.settle().await?;
        self.buf.clear();
        self.len = 0;
        self.file.buffered().set_len(0)?;
        self.arrivals.restarted(&self.digest);
        Ok(())
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.write_buf().await?;
        self.settle().await
    }
}
