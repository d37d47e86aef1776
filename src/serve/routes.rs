//! The distribution spec's pull side, answered from the catalog: `/v2/`, manifests (by tag or digest, HEAD and
//! GET, the exact stored bytes and media type), blobs (HEAD, GET, a single `Range`), `tags/list` and `_catalog`
//! (with `n` and `last`), and the Referrers API. Everything that would write gets 405 `UNSUPPORTED`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, header};
use tokio::sync::Semaphore;

use super::blob;
use super::catalog::Catalog;
use crate::oci::digest::Digest;
use crate::oci::manifest::OCI_INDEX;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// What handling one request needs.
pub struct Server {
    pub catalog: Catalog,
    /// Blobs read at once, across every client.
    pub readers: Arc<Semaphore>,
    /// `--htpasswd`: every request must carry a user's password.
    pub users: Option<super::access::Users>,
    /// Told of every request (the access log) and of damaged bytes.
    pub log: Box<dyn Fn(String) + Send + Sync>,
    pub warn: Arc<dyn Fn(String) + Send + Sync>,
}

pub async fn handle<B>(server: Arc<Server>, req: Request<B>) -> Result<Response<Body>, std::convert::Infallible> {
    let (method, path, query) =
        (req.method().clone(), req.uri().path().to_string(), req.uri().query().map(str::to_string));
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let response = match &server.users {
        Some(users) if !users.allows(authorization) => {
            let mut r = error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"bundle serve\""));
            r
        }
        _ => route(&server, &method, &path, query.as_deref(), range.as_deref()),
    };
    (server.log)(format!("{method} {path} {}", response.status().as_u16()));
    Ok(response)
}

fn route(server: &Server, method: &Method, path: &str, query: Option<&str>, range: Option<&str>) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "bundle serve is read-only: this registry is an archive",
        );
    }
    let head = method == Method::HEAD;
    let cat = &server.catalog;
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "not a registry API path");
    };
    if rest.is_empty() {
        return json(StatusCode::OK, Bytes::from_static(b"{}"), head);
    }
    if rest == "_catalog" {
        let names: Vec<&String> = cat.repositories.keys().collect();
        let page = paged(&names, query);
        return json(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({ "repositories": page })).unwrap().into(),
            head,
        );
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let Some(tags) = cat.tags.get(name).filter(|_| cat.has_repository(name)) else {
            return unknown_name(name);
        };
        let list: Vec<&String> = tags.keys().collect();
        let page = paged(&list, query);
        return json(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({ "name": name, "tags": page })).unwrap().into(),
            head,
        );
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(cat, name, reference, head);
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return blob_response(server, name, digest, range, head);
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return referrers(cat, name, digest, query, head);
    }
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "not a registry API path")
}

fn manifest(cat: &Catalog, name: &str, reference: &str, head: bool) -> Response<Body> {
    let Some(held) = cat.repositories.get(name) else { return unknown_name(name) };
    let digest = match reference.parse::<Digest>() {
        Ok(d) if held.contains(&d) => d,
        Ok(_) => return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown"),
        Err(_) => match cat.tags.get(name).and_then(|t| t.get(reference)) {
            Some(d) => d.clone(),
            None => return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown"),
        },
    };
    let Some(m) = cat.manifests.get(&digest) else {
        return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown");
    };
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.bytes.len())
        .header("Docker-Content-Digest", digest.as_str());
    r = r.header(header::ETAG, format!("\"{digest}\""));
    r.body(if head { empty() } else { full(m.bytes.clone()) }).expect("a valid response")
}

fn blob_response(server: &Server, name: &str, digest: &str, range: Option<&str>, head: bool) -> Response<Body> {
    let cat = &server.catalog;
    if !cat.has_repository(name) {
        return unknown_name(name);
    }
    let Ok(digest) = digest.parse::<Digest>() else {
        return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "not a digest");
    };
    let Some((size, segments)) = cat.blobs.get(&digest) else {
        return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry");
    };
    let size = *size;
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""));
    let range = match range.map(|r| parse_range(r, size)) {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(empty())
                .expect("a valid response");
        }
    };
    let (status, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1),
        None => (StatusCode::OK, size),
    };
    let mut builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    if let Some((start, end)) = range {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    if head || len == 0 {
        return builder.body(empty()).expect("a valid response");
    }
    let warn = server.warn.clone();
    let body = blob::body(
        segments.clone(),
        digest.clone(),
        size,
        range,
        server.readers.clone(),
        Box::new(move |message| warn(message)),
    );
    builder.body(body.boxed_unsync()).expect("a valid response")
}

/// `bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX` within `size`, as an inclusive range; `None` when it
/// cannot be satisfied (several ranges are not served: the whole blob answers them).
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

fn referrers(cat: &Catalog, name: &str, digest: &str, query: Option<&str>, head: bool) -> Response<Body> {
    if !cat.has_repository(name) {
        return unknown_name(name);
    }
    let Ok(subject) = digest.parse::<Digest>() else {
        return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "not a digest");
    };
    let wanted = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("artifactType="))
        .map(|t| t.replace("%2F", "/").replace("%2B", "+").replace("%2f", "/").replace("%2b", "+"));
    let list: Vec<_> = cat
        .referrers
        .get(&(name.to_string(), subject))
        .into_iter()
        .flatten()
        .filter(|d| wanted.as_deref().is_none_or(|w| d.artifact_type.as_deref() == Some(w)))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": list,
    }))
    .unwrap();
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX)
        .header(header::CONTENT_LENGTH, body.len());
    if wanted.is_some() {
        r = r.header("OCI-Filters-Applied", "artifactType");
    }
    r.body(if head { empty() } else { full(body.into()) }).expect("a valid response")
}

/// `n` and `last` paging over a sorted list.
fn paged<'a>(items: &[&'a String], query: Option<&str>) -> Vec<&'a String> {
    let param = |k: &str| {
        query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let last = param("last");
    let n = param("n").and_then(|n| n.parse::<usize>().ok());
    let after = items.iter().filter(|i| last.as_deref().is_none_or(|l| i.as_str() > l)).copied();
    match n {
        Some(n) => after.take(n).collect(),
        None => after.collect(),
    }
}

fn json(status: StatusCode, body: Bytes, head: bool) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(if head { empty() } else { full(body) })
        .expect("a valid response")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&serde_json::json!({"errors": [{"code": code, "message": message}]})).unwrap();
    json(status, body.into(), false)
}

fn unknown_name(name: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", &format!("repository name not known to registry: {name}"))
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> Body {
    full(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_the_spec_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
