//! One blob from a registry into a `BlobSink`, checked for size and digest on the way: one stream that resumes
//! with `Range` where it breaks off, a fresh start where the bytes came out wrong, and pieces (`pieces.rs`)
//! where the first stream shows that the wire sets the pace.

use futures_util::StreamExt;
use reqwest::header::RANGE;
use reqwest::{Response, StatusCode};
use url::Url;

use super::pieces::{Pieces, WirePace};
use super::{BlobSink, RegistryClient, Scope, content_range_start};
use crate::oci::digest::{Digest, DigestWriter};
use crate::registry::error::RegistryError;
use crate::registry::retry::{Attempt, Verdict};

/// How one stream of a blob's body ended.
enum StreamEnd {
    /// The body ended (with every byte, or early: the caller checks the length).
    Ended,
    /// The connection broke off.
    Broke(reqwest::Error),
    /// The wire sets the pace: the stream was dropped so that the rest comes in pieces.
    ToPieces,
}

/// One blob's download: what errors call it, where it comes from, and its size.
pub(super) struct Download {
    pub(super) what: String,
    pub(super) url: Url,
    pub(super) scope: [Scope; 1],
    pub(super) size: u64,
}

impl RegistryClient {
    /// Stream a blob into `sink`, verifying size and digest; a broken transfer resumes with `Range` where the
    /// registry supports it. `resume` is the hash of the bytes already in the sink, from an earlier,
    /// interrupted download; `DigestWriter::new()` to start from scratch. `progress` is told about every byte
    /// that is kept.
    pub async fn download_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        sink: &mut impl BlobSink,
        resume: DigestWriter,
        progress: &(dyn Fn(i64) + Sync),
    ) -> Result<(), RegistryError> {
        self.ping().await?;
        let blob = Download {
            what: format!("blob {digest} of {}/{repository}", self.name()),
            url: self.url(&format!("/v2/{}/blobs/{digest}", self.remote(repository))),
            scope: [self.scope(repository, false)],
            size,
        };
        let mut hasher = resume;
        let (mut broken_streams, mut mismatches, mut pieces_tried) = (0u32, 0u32, false);
        loop {
            // A blob big enough for pieces starts as one stream all the same, asking for `bytes=OFFSET-` so that
            // a registry that ignores ranges says so at no cost (200); the stream's first pieces' worth shows
            // whether the wire or this end sets the pace (`WirePace`), and only a wire that keeps us waiting is
            // worth the pieces' extra copies and connections.
            let probe = !pieces_tried && self.wants_pieces(size, hasher.len());
            let resp = self.open_stream(&blob, probe, &mut hasher, sink, progress).await?;
            let pace = probe.then(|| WirePace::new(hasher.len(), self.options.download_piece * 2));
            match self.read_stream(&blob, resp, pace, &mut hasher, sink, progress).await? {
                StreamEnd::ToPieces => {
                    pieces_tried = true;
                    let pieces = self.download_in_pieces(&blob, &mut hasher, sink, progress).await?;
                    if let Pieces::Stopped = pieces {
                        // The rest as one stream, from the first byte not yet hashed.
                        continue;
                    }
                }
                end if hasher.len() != size || matches!(end, StreamEnd::Broke(_)) => {
                    // A body that broke off, or ended early without an error: resume from where it stopped.
                    match self.options.retry.decide(broken_streams, Attempt::Broken { retryable: true }) {
                        Verdict::Wait(delay) => tokio::time::sleep(delay).await,
                        _ => {
                            return Err(match end {
                                StreamEnd::Broke(e) => self.connect_error(&blob.what, e),
                                _ => RegistryError::SizeMismatch {
                                    what: blob.what,
                                    expected: size,
                                    actual: hasher.len(),
                                },
                            });
                        }
                    }
                    broken_streams += 1;
                    continue;
                }
                StreamEnd::Ended | StreamEnd::Broke(_) => {}
            }
            let actual = hasher.clone().finish();
            if &actual != digest {
                // Never keep bad bytes; fetch once more from scratch in case they were damaged in transit.
                mismatches += 1;
                progress(-(size as i64));
                if mismatches > 1 {
                    return Err(RegistryError::DigestMismatch {
                        what: blob.what,
                        expected: digest.clone(),
                        actual,
                        size,
                    });
                }
                sink.restart().await.map_err(|e| RegistryError::io(&blob.what, e))?;
                hasher = DigestWriter::new();
                continue;
            }
            return sink.finish().await.map_err(|e| RegistryError::io(&blob.what, e));
        }
    }

    /// The blob's body from the hasher's length on (`probe`: ask with `Range` from the first byte too). A
    /// registry that answers 200 instead ignores ranges: it is remembered, and a download under way starts over.
    async fn open_stream(
        &self,
        blob: &Download,
        probe: bool,
        hasher: &mut DigestWriter,
        sink: &mut impl BlobSink,
        progress: &(dyn Fn(i64) + Sync),
    ) -> Result<Response, RegistryError> {
        let offset = hasher.len();
        let resp = self
            .send_with_retries(&blob.what, &blob.scope, &|| {
                let req = self.http.get(blob.url.clone());
                if offset > 0 || probe { req.header(RANGE, format!("bytes={offset}-")) } else { req }
            })
            .await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT if content_range_start(resp.headers()) == Some(offset) => {}
            s if s.is_success() => {
                if probe {
                    self.ranges_refused.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if offset > 0 {
                    progress(-(offset as i64));
                    sink.restart().await.map_err(|e| RegistryError::io(&blob.what, e))?;
                    *hasher = DigestWriter::new();
                }
            }
            _ => return Err(self.status_error(&blob.what, resp).await),
        }
        Ok(resp)
    }

    /// Hash the body into the sink until it ends, breaks off, or (`pace` watching it) shows that the wire sets
    /// the pace and the rest is worth asking for in pieces.
    async fn read_stream(
        &self,
        blob: &Download,
        resp: Response,
        mut pace: Option<WirePace>,
        hasher: &mut DigestWriter,
        sink: &mut impl BlobSink,
        progress: &(dyn Fn(i64) + Sync),
    ) -> Result<StreamEnd, RegistryError> {
        let mut stream = resp.bytes_stream();
        loop {
            let asked = std::time::Instant::now();
            let Some(chunk) = stream.next().await else { return Ok(StreamEnd::Ended) };
            if let Some(p) = &mut pace {
                p.waited(asked.elapsed());
            }
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return Ok(StreamEnd::Broke(e)),
            };
            let actual = hasher.len() + chunk.len() as u64;
            if actual > blob.size {
                return Err(RegistryError::SizeMismatch { what: blob.what.clone(), expected: blob.size, actual });
            }
            hasher.update(&chunk);
            sink.append(&chunk).await.map_err(|e| RegistryError::io(&blob.what, e))?;
            progress(chunk.len() as i64);
            if let Some(wire_bound) = pace.as_ref().and_then(|p| p.verdict(hasher.len())) {
                pace = None;
                if wire_bound && self.wants_pieces(blob.size, hasher.len()) {
                    return Ok(StreamEnd::ToPieces);
                }
            }
        }
    }
}
