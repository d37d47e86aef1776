//! Big blobs come down as several `Range` requests at once, so that one blob is not held to what one connection
//! carries: object stores and CDNs in front of registries cap each connection well below the link, and a single
//! TCP stream over a long path seldom fills it.
//!
//! A big blob starts as one stream (`download_blob`); when its first two pieces' worth shows that the wire, not
//! this end, sets the pace (`WirePace`), the stream is dropped and the rest comes in pieces. The pieces are
//! hashed and handed to the sink in order, as the first missing one arrives, while the ones after
//! it keep coming (`download_in_pieces`); the sink writes the blob once, as it would from one stream. Pieces
//! waiting their turn are held in memory: at most `PIECES_PER_BLOB` per blob and `PIECE_BUDGET` in the whole run,
//! so memory stays bounded whatever the number of big blobs. Any piece that goes wrong (a registry that ignores
//! `Range` and answers 200, a wrong `Content-Range`, a body cut short, an error after the retry policy's
//! attempts) ends the pieces: the download goes on as one stream from the first byte not yet hashed, with that
//! path's own resume and retries, so nothing is lost but the pieces in flight. A registry that ignored `Range`
//! once is not asked for pieces again.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use reqwest::StatusCode;
use reqwest::header::RANGE;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::download::Download;
use super::{BlobSink, RegistryClient, content_range_start};
use crate::oci::digest::DigestWriter;
use crate::registry::error::RegistryError;

/// Bytes per `Range` request, unless `BUNDLE_DOWNLOAD_PIECE_SIZE` says otherwise. Blobs of at most two pieces
/// come down as one stream.
pub const DEFAULT_PIECE: u64 = 8 << 20;
/// Requests of one blob in flight at once.
const PIECES_PER_BLOB: usize = 4;
/// Pieces in flight or waiting in the whole run: 8 of 8 MiB is 64 MiB at most, however many big blobs there are.
static PIECE_BUDGET: Semaphore = Semaphore::const_new(8);

/// How a download in pieces ended.
pub(super) enum Pieces {
    /// Every byte hashed and in the sink.
    Done,
    /// Stopped (or never started) at the hasher's length: the rest comes as one stream.
    Stopped,
}

/// Who sets the pace of one stream: over its first `span` bytes, the time spent waiting for the wire against the
/// time spent on the bytes (hashing them, the sink writing them). Pieces are worth their cost (an extra copy of
/// every byte, more connections, memory) only when the wire keeps us waiting: on a fast wire (loopback, a LAN
/// registry) the disk or the archive writer is the limit, and pieces made a 1 GiB export 1.4x slower there.
pub(super) struct WirePace {
    started: std::time::Instant,
    until: u64,
    waited: std::time::Duration,
}

impl WirePace {
    /// Watch the stream from `from` (bytes already hashed) for `span` bytes.
    pub(super) fn new(from: u64, span: u64) -> WirePace {
        WirePace { started: std::time::Instant::now(), until: from.saturating_add(span), waited: Default::default() }
    }

    pub(super) fn waited(&mut self, d: std::time::Duration) {
        self.waited += d;
    }

    /// Once `span` bytes have come (`hashed` is the hasher's length): whether the wire set the pace, that is,
    /// at least half the time went to waiting for it.
    pub(super) fn verdict(&self, hashed: u64) -> Option<bool> {
        self.verdict_after(hashed, self.started.elapsed())
    }

    /// `verdict`, `elapsed` after the watch began.
    fn verdict_after(&self, hashed: u64, elapsed: std::time::Duration) -> Option<bool> {
        (hashed >= self.until).then(|| self.waited * 2 >= elapsed)
    }
}

/// One piece's bytes, holding its share of the budget until they are in the sink.
struct Piece {
    start: u64,
    bytes: Bytes,
    _permit: SemaphorePermit<'static>,
}

impl RegistryClient {
    /// Whether the rest of a blob (`size` bytes, `from` of them hashed) is worth asking for in pieces.
    pub(super) fn wants_pieces(&self, size: u64, from: u64) -> bool {
        let piece = self.options.download_piece;
        !self.ranges_refused.load(Ordering::Relaxed) && size.saturating_sub(from) > piece.saturating_mul(2)
    }

    /// Download `blob` from the hasher's length on, in pieces, into `sink` (see the module doc).
    /// Errors are the sink's only; a failed request ends in `Pieces::Stopped`.
    pub(super) async fn download_in_pieces(
        &self,
        blob: &Download,
        hasher: &mut DigestWriter,
        sink: &mut impl BlobSink,
        progress: &(dyn Fn(i64) + Sync),
    ) -> Result<Pieces, RegistryError> {
        let size = blob.size;
        if !self.wants_pieces(size, hasher.len()) {
            return Ok(Pieces::Stopped);
        }
        let piece = self.options.download_piece;
        let mut next = hasher.len();
        // The next piece in line, from `next` on, holding `permit`.
        let launch = |next: &mut u64, permit| {
            let end = (*next + piece).min(size);
            let start = std::mem::replace(next, end);
            self.fetch_piece(blob, start, end, permit)
        };
        let mut flying = FuturesUnordered::new();
        let mut ready: BTreeMap<u64, Piece> = BTreeMap::new();
        loop {
            while next < size && flying.len() + ready.len() < PIECES_PER_BLOB {
                // The blob's first piece waits for the budget; the others only take what is free.
                let permit = if flying.is_empty() && ready.is_empty() {
                    PIECE_BUDGET.acquire().await.expect("the budget is never closed")
                } else {
                    match PIECE_BUDGET.try_acquire() {
                        Ok(p) => p,
                        Err(_) => break,
                    }
                };
                flying.push(launch(&mut next, permit));
            }
            let Some(head) = ready.remove(&hasher.len()) else {
                // Waiting for the next piece in order; a share of the budget freed meanwhile starts one more.
                let room = next < size && flying.len() + ready.len() < PIECES_PER_BLOB;
                tokio::select! {
                    got = flying.next() => match got {
                        Some(Ok(p)) => {
                            ready.insert(p.start, p);
                        }
                        Some(Err(())) | None => return Ok(Pieces::Stopped),
                    },
                    permit = PIECE_BUDGET.acquire(), if room => {
                        flying.push(launch(&mut next, permit.expect("the budget is never closed")));
                    }
                }
                continue;
            };
            hasher.update(&head.bytes);
            // The sink writes while the pieces after this one keep arriving.
            let mut failed = false;
            {
                let write = sink.append(&head.bytes);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        written = &mut write => {
                            written.map_err(|e| RegistryError::io(&blob.what, e))?;
                            break;
                        }
                        Some(got) = flying.next() => match got {
                            Ok(p) => {
                                ready.insert(p.start, p);
                            }
                            Err(()) => failed = true,
                        },
                    }
                }
            }
            progress(head.bytes.len() as i64);
            if hasher.len() == size {
                return Ok(Pieces::Done);
            }
            if failed {
                return Ok(Pieces::Stopped);
            }
        }
    }

    /// Bytes `start..end` of the blob, whole, or `Err(())` for anything else (said why in the module doc).
    async fn fetch_piece(
        &self,
        blob: &Download,
        start: u64,
        end: u64,
        permit: SemaphorePermit<'static>,
    ) -> Result<Piece, ()> {
        let range = format!("bytes={start}-{}", end - 1);
        let resp = self
            .send_with_retries(&blob.what, &blob.scope, &|| {
                self.http.get(blob.url.clone()).header(RANGE, range.clone())
            })
            .await
            .map_err(drop)?;
        if resp.status() != StatusCode::PARTIAL_CONTENT || content_range_start(resp.headers()) != Some(start) {
            if resp.status().is_success() {
                self.ranges_refused.store(true, Ordering::Relaxed);
            }
            return Err(());
        }
        let want = (end - start) as usize;
        let mut bytes = BytesMut::with_capacity(want);
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(drop)?;
            if bytes.len() + chunk.len() > want {
                return Err(());
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() != want {
            return Err(());
        }
        Ok(Piece { start, bytes: bytes.freeze(), _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::WirePace;

    const MIB: u64 = 1 << 20;

    /// On a fast wire (loopback, a registry on the LAN) the bytes wait for us, not we for them: the blob stays
    /// one stream. Only a wire that keeps us waiting at least half the time is worth pieces.
    #[test]
    fn a_stream_that_keeps_us_waiting_less_than_half_the_time_stays_one_stream() {
        let mut pace = WirePace::new(0, 16 * MIB);
        pace.waited(Duration::from_millis(30));
        assert_eq!(pace.verdict_after(16 * MIB - 1, Duration::from_secs(1)), None, "no verdict before the span");
        assert_eq!(pace.verdict_after(16 * MIB, Duration::from_millis(100)), Some(false), "fast wire");
        pace.waited(Duration::from_millis(20));
        assert_eq!(pace.verdict_after(16 * MIB, Duration::from_millis(100)), Some(true), "half the time waiting");
    }

    /// A stream resumed at an offset is watched from there, for the same span.
    #[test]
    fn a_resumed_stream_is_watched_from_where_it_resumed() {
        let mut pace = WirePace::new(40 * MIB, 16 * MIB);
        pace.waited(Duration::from_millis(90));
        assert_eq!(pace.verdict_after(50 * MIB, Duration::from_millis(100)), None);
        assert_eq!(pace.verdict_after(56 * MIB, Duration::from_millis(100)), Some(true));
    }
}
