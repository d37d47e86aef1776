//! A blob's bytes as a response body, decoded from the archive as they are sent: a bounded channel of 256 KiB
//! chunks between the reading thread and the connection, so memory stays bounded whatever the blob's size.
//!
//! A whole blob is hashed on its way and its last chunk held back until the bytes matched the digest: a
//! damaged frame ends the response early, and no client ever receives a complete blob that differs from its
//! name. A `Range` is read from where it starts (the seekable format decodes only the frames it touches);
//! its bytes were proven with the archive at start and are checked by each frame's own checksum.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::{Semaphore, mpsc};

use super::catalog::Segments;
use crate::archive::BlobEntry;
use crate::archive::seekable::read_up_to;
use crate::oci::digest::{Digest, DigestWriter};

const CHUNK: usize = 256 * 1024;
/// Chunks in flight per response.
const IN_FLIGHT: usize = 4;

pub type BlobBody = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

/// The body for `digest` (`size` bytes at `segments`), or for bytes `range` (inclusive) of it. `readers` bounds
/// how many blobs are read at once across every client; `on_damage` is told when bytes fail their digest.
pub fn body(
    segments: Segments,
    digest: Digest,
    size: u64,
    range: Option<(u64, u64)>,
    readers: Arc<Semaphore>,
    on_damage: Box<dyn FnOnce(String) + Send>,
) -> BlobBody {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(IN_FLIGHT);
    tokio::spawn(async move {
        let Ok(permit) = readers.acquire_owned().await else { return };
        let _ = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let sent = match range {
                None => send_whole(&segments, &digest, size, &tx),
                Some((start, end)) => send_range(&segments, &digest, start, end, &tx),
            };
            if let Err(e) = sent {
                // A client that went away is no news; anything else means the archive's bytes are bad there.
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    on_damage(format!("blob {digest} was not sent whole: {e}"));
                }
                let _ = tx.blocking_send(Err(e));
            }
        })
        .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    StreamBody::new(Box::pin(stream))
}

fn send(tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, chunk: Bytes) -> std::io::Result<()> {
    // The client went away: stop reading.
    tx.blocking_send(Ok(Frame::data(chunk)))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client closed the connection"))
}

fn send_whole(
    segments: &Segments,
    digest: &Digest,
    size: u64,
    tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) -> std::io::Result<()> {
    let mut hasher = DigestWriter::new();
    let mut held: Option<Bytes> = None;
    for (archive, entry) in segments {
        each_chunk(&mut archive.open_blob(digest, *entry)?, |chunk| {
            hasher.update(&chunk);
            match held.replace(chunk) {
                Some(previous) => send(tx, previous),
                None => Ok(()),
            }
        })?;
    }
    let len = hasher.len();
    let got = hasher.finish();
    if &got != digest || len != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("its bytes read as {got} ({len} bytes): the archive is damaged there"),
        ));
    }
    match held {
        Some(last) => send(tx, last),
        None => Ok(()),
    }
}

fn send_range(
    segments: &Segments,
    digest: &Digest,
    start: u64,
    end: u64,
    tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) -> std::io::Result<()> {
    let mut at = 0u64;
    for (archive, entry) in segments {
        let (from, to) = (at, at + entry.size);
        at = to;
        if to <= start || from > end {
            continue;
        }
        let skip = start.saturating_sub(from);
        let take = (end + 1).min(to) - from - skip;
        let mut reader: Box<dyn Read + Send> = if archive.is_directory() {
            // A layout directory's blob is a file of its own: read past the start.
            let mut r = archive.open_blob(digest, *entry)?;
            std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())?;
            Box::new(r.take(take))
        } else {
            archive.open_blob(digest, BlobEntry { offset: entry.offset + skip, size: take })?
        };
        each_chunk(&mut reader, |chunk| send(tx, chunk))?;
    }
    Ok(())
}

/// `reader`'s bytes in chunks of `CHUNK` (the last one shorter), each handed to `f`.
fn each_chunk(reader: &mut dyn Read, mut f: impl FnMut(Bytes) -> std::io::Result<()>) -> std::io::Result<()> {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = read_up_to(reader, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        f(Bytes::from(buf))?;
    }
}
