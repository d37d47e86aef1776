//! Big blobs go up in chunks (`PATCH` with `Content-Range`), so that a cut connection costs at most the chunk in
//! flight rather than the whole blob, and no single request is larger than a chunk (Quay refuses a PUT over
//! 20 GB; proxies and load balancers time out long ones).
//!
//! After a failed chunk the registry is asked where the upload stands (`GET` of the upload URL: `Range: 0-N`), and
//! the upload resumes from there, in the same session: the source is read again from the start and hashed (the
//! bytes the registry holds are not sent again), so every byte is still checked against the digest before the
//! last one leaves. A session the registry has lost starts over. A registry that refuses the first chunk gets the
//! whole blob in one `PUT` instead (`Chunked::Refused`).

use std::sync::Arc;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use url::Url;

use super::{BlobSource, RegistryClient, Scope, header_str};
use crate::oci::digest::Digest;
use crate::registry::error::RegistryError;
use crate::registry::retry::{Attempt, Verdict};

/// Bytes one request of a chunked upload carries, unless the registry asks for more (`OCI-Chunk-Min-Length`).
pub const DEFAULT_CHUNK: u64 = 64 << 20;
/// The pieces the reading thread hands over: small enough to bound memory, large enough to keep the wire busy.
const PIECE: usize = 256 * 1024;
const CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";

pub(super) enum Chunked {
    Done,
    /// The registry does not take chunks (or this source cannot be read again from the start): use one PUT.
    Refused,
}

/// The reading side of one pass over the source: pieces in order, and a piece split across two chunks.
struct Feed {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    carry: Option<Bytes>,
}

impl Feed {
    /// Read `source` on a thread of its own, from the start (hashing all of it: its reader checks the digest),
    /// handing over the bytes from `from` on.
    fn start(source: Box<dyn std::io::Read + Send>, from: u64) -> Arc<tokio::sync::Mutex<Feed>> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        std::thread::spawn(move || {
            let mut source = source;
            let mut skip = from;
            loop {
                let mut buf = vec![0u8; PIECE];
                let n = match crate::archive::seekable::read_up_to(&mut source, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                buf.truncate(n);
                let mut piece = Bytes::from(buf);
                if skip > 0 {
                    let dropped = skip.min(n as u64);
                    skip -= dropped;
                    piece = piece.slice(dropped as usize..);
                    if piece.is_empty() {
                        continue;
                    }
                }
                if tx.blocking_send(Ok(piece)).is_err() {
                    return; // the upload stopped reading
                }
            }
        });
        Arc::new(tokio::sync::Mutex::new(Feed { rx, carry: None }))
    }
}

/// A request body of the next `len` bytes of `feed`.
fn chunk_body(feed: Arc<tokio::sync::Mutex<Feed>>, len: u64) -> reqwest::Body {
    let stream = futures_util::stream::unfold((feed, len), |(feed, left)| async move {
        if left == 0 {
            return None;
        }
        let mut f = feed.lock().await;
        let next = match f.carry.take() {
            Some(b) => Ok(b),
            None => match f.rx.recv().await {
                Some(item) => item,
                None => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the blob ended early")),
            },
        };
        match next {
            Ok(mut piece) => {
                if piece.len() as u64 > left {
                    f.carry = Some(piece.split_off(left as usize));
                }
                let n = piece.len() as u64;
                drop(f);
                Some((Ok::<Bytes, std::io::Error>(piece), (feed, left - n)))
            }
            Err(e) => {
                drop(f);
                Some((Err(e), (feed, 0)))
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// `Range: 0-N` of an upload status: the bytes the registry holds (N + 1). No header: none.
fn held(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = header_str(headers, RANGE.as_str())?;
    let end = v.trim().trim_start_matches("bytes=").split_once('-')?.1;
    end.trim().parse::<u64>().ok().map(|e| e + 1)
}

impl RegistryClient {
    /// Upload `digest` in chunks into the session at `location` (opened with `chunk_min` from its answer).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upload_in_chunks(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        mut location: Url,
        chunk_min: Option<u64>,
    ) -> Result<Chunked, RegistryError> {
        let what = format!("upload of blob {digest} to {}/{repository}", self.name());
        let scopes = [self.scope(repository, true)];
        let policy = self.options.retry;
        let chunk = self.options.upload_chunk.max(chunk_min.unwrap_or(0)).max(1);
        let Some(reader) = source.reader(0) else { return Ok(Chunked::Refused) };
        let mut feed = Feed::start(reader.map_err(|e| RegistryError::io(&what, e))?, 0);
        let mut offset = 0u64;
        let mut failures = 0u32;
        while offset < size {
            let len = chunk.min(size - offset);
            self.prepare_auth(&what, &scopes).await?;
            let req = self
                .http
                .patch(location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header("Content-Range", format!("{offset}-{}", offset + len - 1))
                .header(CONTENT_LENGTH, len)
                .body(chunk_body(feed.clone(), len));
            let result = self.send_once(&scopes, req).await;
            if result.is_err()
                && let Some(source) = source.failure()
            {
                return Err(RegistryError::Source { what, source });
            }
            match result {
                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                    let next = self.location(&what, &r)?;
                    let at = held(r.headers()).unwrap_or(offset + len);
                    location = next;
                    if at == offset + len {
                        offset = at;
                        continue;
                    }
                    // The registry kept other than what was sent: read again from what it holds.
                    offset = at.min(size);
                    feed = self.feed_from(source, offset, &what)?;
                    continue;
                }
                // The first chunk refused outright: this registry wants the blob in one piece.
                Ok(r)
                    if offset == 0
                        && failures == 0
                        && matches!(r.status().as_u16(), 400 | 404 | 405 | 413 | 416 | 501) =>
                {
                    return Ok(Chunked::Refused);
                }
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && failures < policy.max_retries => {
                    let challenge = r
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .and_then(super::challenge::parse);
                    match challenge {
                        Some(c) => self.authenticate(&what, &c, &scopes).await?,
                        None => return Err(self.unauthorized(&what)),
                    }
                }
                Ok(r) => {
                    match policy.decide(failures, Attempt::Answered { status: r.status(), headers: r.headers() }) {
                        Verdict::Wait(delay) => tokio::time::sleep(delay).await,
                        _ => return Err(self.status_error(&what, r).await),
                    }
                }
                Err(e) => match policy.decide(failures, Attempt::Broken { retryable: true }) {
                    Verdict::Wait(delay) => tokio::time::sleep(delay).await,
                    _ => return Err(self.connect_error(&what, e)),
                },
            }
            // A chunk that did not land: ask where the upload stands, and go on from there.
            failures += 1;
            match self.upload_status(&location, &scopes, &what).await? {
                Some((at, url)) => {
                    location = url;
                    offset = at.min(size);
                }
                None => {
                    let (url, _) = self.open_upload(repository, &scopes, &what).await?;
                    location = url;
                    offset = 0;
                }
            }
            feed = self.feed_from(source, offset, &what)?;
        }
        let mut put_url = location;
        put_url.query_pairs_mut().append_pair("digest", digest.as_str());
        let resp = self
            .send_with_retries(&what, &scopes, &|| self.http.put(put_url.clone()).header(CONTENT_LENGTH, 0))
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&what, resp).await);
        }
        Ok(Chunked::Done)
    }

    fn feed_from(
        &self,
        source: &dyn BlobSource,
        offset: u64,
        what: &str,
    ) -> Result<Arc<tokio::sync::Mutex<Feed>>, RegistryError> {
        let reader = source.reader(offset).ok_or_else(|| RegistryError::Protocol {
            what: what.to_string(),
            message: "the source cannot be read again".into(),
        })?;
        Ok(Feed::start(reader.map_err(|e| RegistryError::io(what, e))?, offset))
    }

    /// Where an upload stands: the bytes the registry holds and the URL to go on at; `None`: the session is gone.
    async fn upload_status(
        &self,
        location: &Url,
        scopes: &[Scope],
        what: &str,
    ) -> Result<Option<(u64, Url)>, RegistryError> {
        let resp = self.send_with_retries(what, scopes, &|| self.http.get(location.clone())).await?;
        match resp.status() {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::ACCEPTED => {
                let at = held(resp.headers()).unwrap_or(0);
                let url = match header_str(resp.headers(), LOCATION.as_str()) {
                    Some(_) => self.location(what, &resp)?,
                    None => location.clone(),
                };
                Ok(Some((at, url)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error(what, resp).await),
        }
    }

    /// POST for a new upload session: its URL, and the smallest chunk the registry takes, when it says.
    pub(super) async fn open_upload(
        &self,
        repository: &str,
        scopes: &[Scope],
        what: &str,
    ) -> Result<(Url, Option<u64>), RegistryError> {
        let url = self.url(&format!("/v2/{}/blobs/uploads/", self.remote(repository)));
        let resp =
            self.send_with_retries(what, scopes, &|| self.http.post(url.clone()).header(CONTENT_LENGTH, 0)).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(what, resp).await);
        }
        let min = header_str(resp.headers(), CHUNK_MIN_LENGTH).and_then(|v| v.trim().parse().ok());
        Ok((self.location(what, &resp)?, min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_status_range() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(held(&h), None);
        h.insert(RANGE, "0-1023".parse().unwrap());
        assert_eq!(held(&h), Some(1024));
        h.insert(RANGE, "bytes=0-9".parse().unwrap());
        assert_eq!(held(&h), Some(10));
    }

    #[tokio::test]
    async fn chunks_take_exactly_their_bytes_across_pieces() {
        let data: Vec<u8> = (0..(PIECE * 3 + 17)).map(|i| (i % 251) as u8).collect();
        let feed = Feed::start(Box::new(std::io::Cursor::new(data.clone())), 5);
        let mut got = Vec::new();
        for len in [PIECE as u64 + 3, 7, (data.len() - 5 - PIECE - 10) as u64] {
            let body = chunk_body(feed.clone(), len);
            let bytes = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
            assert_eq!(bytes.len() as u64, len);
            got.extend_from_slice(&bytes);
        }
        assert_eq!(got, &data[5..]);
    }
}
