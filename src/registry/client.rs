//! One registry, spoken to over the distribution API: auth, manifests, blobs, retries.
//!
//! Every request names the repository scopes it needs; the client answers 401 challenges itself (Basic, or
//! the docker token flow with a token cached per scope set and refreshed on the next 401), retries transient
//! failures, and verifies everything it downloads against its digest before anyone else sees it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::{Mutex, OnceCell};
use url::Url;

use super::challenge::{self, Challenge};
use super::config::Endpoint;
use super::credentials::{CredentialSource, Credentials};
use super::error::RegistryError;
use super::retry::{Attempt, RetryPolicy, Verdict};
use crate::oci::digest::Digest;
use crate::oci::manifest::{ACCEPT as MANIFEST_TYPES, MAX_MANIFEST_BYTES};
use crate::oci::reference::is_loopback_host;

mod chunked;
mod download;
mod pieces;

/// Where a downloaded blob's bytes go, in order. The download hashes them; the sink stores them.
pub trait BlobSink: Send {
    /// Append the next bytes.
    fn append(&mut self, bytes: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Throw away everything appended (including bytes the sink started with): the download starts over.
    fn restart(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
    /// The last byte was appended and the content matched its digest.
    fn finish(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Network behaviour shared by all registry clients of one run.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub retry: RetryPolicy,
    /// Blobs larger than this go up in chunks of this size (`chunked`).
    pub upload_chunk: u64,
    /// Bytes per `Range` request of a download in pieces; blobs of more than two pieces come that way (`pieces`).
    pub download_piece: u64,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response before the attempt counts as failed.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            upload_chunk: chunked::DEFAULT_CHUNK,
            download_piece: pieces::DEFAULT_PIECE,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Repository access a request needs, as docker token scopes name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The repository as the registry sees it (with the endpoint's prefix).
    repository: String,
    push: bool,
}

impl Scope {
    fn as_param(&self) -> String {
        format!("repository:{}:{}", self.repository, if self.push { "pull,push" } else { "pull" })
    }
}

#[derive(Default)]
struct AuthState {
    scheme: Option<Scheme>,
    /// Bearer tokens by the scope set they were issued for.
    tokens: HashMap<String, String>,
}

#[derive(Clone)]
enum Scheme {
    Anonymous,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

/// A manifest as pulled: its exact bytes, media type and verified digest.
#[derive(Debug, Clone)]
pub struct PulledManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a HEAD on a manifest told us.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
}

/// A blob body that can be produced again for each attempt (uploads restart from the first byte).
pub trait BlobSource: Sync {
    fn open(&self) -> std::io::Result<reqwest::Body>;
    /// The blob's bytes read from the start, checked against the digest as they are read (the last read fails
    /// instead of completing a wrong blob); bytes before `from` are the ones the registry already holds, not
    /// counted again as progress. `None`: this source gives bodies only, and big blobs go up in one PUT.
    fn reader(&self, _from: u64) -> Option<std::io::Result<Box<dyn std::io::Read + Send>>> {
        None
    }
    /// Why the last body opened stopped, when the source itself failed (rather than the connection).
    fn failure(&self) -> Option<std::io::Error> {
        None
    }
}

pub struct RegistryClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    credentials: std::sync::RwLock<Option<Credentials>>,
    refresher: Option<std::sync::Arc<dyn CredentialSource>>,
    auth: Mutex<AuthState>,
    /// One token fetch at a time per scope set: concurrent requests for a new scope set wait for the first
    /// one's token instead of each fetching their own.
    token_flights: std::sync::Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
    pinged: OnceCell<()>,
    /// The registry answered a `Range` request with the whole blob: its blobs come as one stream from now on.
    ranges_refused: std::sync::atomic::AtomicBool,
    options: ClientOptions,
}

impl RegistryClient {
    pub fn new(
        endpoint: Endpoint,
        credentials: Option<Credentials>,
        refresher: Option<std::sync::Arc<dyn CredentialSource>>,
        options: ClientOptions,
    ) -> Result<RegistryClient, RegistryError> {
        let tls_err = |message: String| RegistryError::Tls { registry: endpoint.name.clone(), message };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bundle/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .pool_max_idle_per_host(64);
        if let Some(ca) = &endpoint.tls.ca_file {
            let pem = std::fs::read(ca).map_err(|e| tls_err(format!("cannot read ca_file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| tls_err(format!("ca_file {} is not a PEM certificate bundle: {e}", ca.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let (Some(cert), Some(key)) = (&endpoint.tls.client_cert, &endpoint.tls.client_key) {
            let mut pem =
                std::fs::read(cert).map_err(|e| tls_err(format!("cannot read client_cert {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key).map_err(|e| tls_err(format!("cannot read client_key {}: {e}", key.display())))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| tls_err(format!("client_cert/client_key are not a PEM certificate and key: {e}")))?;
            builder = builder.identity(identity);
        }
        if endpoint.tls.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| tls_err(e.to_string()))?;
        Ok(RegistryClient {
            http,
            endpoint,
            credentials: std::sync::RwLock::new(credentials),
            refresher,
            auth: Mutex::new(AuthState::default()),
            token_flights: std::sync::Mutex::new(HashMap::new()),
            pinged: OnceCell::new(),
            ranges_refused: std::sync::atomic::AtomicBool::new(false),
            options,
        })
    }

    /// The registry name as written in image references.
    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    /// The repository name as the registry sees it (mirror prefix applied).
    fn remote(&self, repository: &str) -> String {
        match &self.endpoint.prefix {
            Some(p) => format!("{p}/{repository}"),
            None => repository.to_string(),
        }
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.endpoint.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{path}"));
        url
    }

    fn scope(&self, repository: &str, push: bool) -> Scope {
        Scope { repository: self.remote(repository), push }
    }

    /// `GET /v2/`: proves the registry answers and learns its auth scheme, once per client.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        self.pinged
            .get_or_try_init(|| async {
                let what = "API check (GET /v2/)".to_string();
                let url = self.url("/v2/");
                let resp = self.send_with_retries(&what, &[], &|| self.http.get(url.clone())).await;
                match resp {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(self.status_error(&what, r).await),
                    // A registry that wants credentials we lack still proved it is there; the request that
                    // needs them will report it with its own scope.
                    Err(RegistryError::NoCredentials { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }

    // ----- manifests -----

    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<PulledManifest, RegistryError> {
        self.ping().await?;
        let what = format!("manifest {}/{}:{}", self.name(), repository, reference).replace(":sha256:", "@sha256:");
        let url = self.url(&format!("/v2/{}/manifests/{}", self.remote(repository), reference));
        let scope = [self.scope(repository, false)];
        let resp = self
            .send_with_retries(&what, &scope, &|| self.http.get(url.clone()).header(ACCEPT, MANIFEST_TYPES.join(", ")))
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&what, resp).await);
        }
        let header_digest = header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST_BYTES as u64) {
            return Err(RegistryError::Protocol {
                what,
                message: format!("the manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES).await.map_err(|e| self.connect_error(&what, e))?;
        let actual = Digest::of(&bytes);
        let expected = reference.parse::<Digest>().ok().or(header_digest);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(RegistryError::DigestMismatch { what, expected, actual, size: bytes.len() as u64 });
        }
        let media_type = media_type_of(&bytes).or(content_type).unwrap_or_default();
        Ok(PulledManifest { digest: actual, media_type, bytes })
    }

    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        self.ping().await?;
        let what = format!("manifest {}/{}:{}", self.name(), repository, reference).replace(":sha256:", "@sha256:");
        let url = self.url(&format!("/v2/{}/manifests/{}", self.remote(repository), reference));
        let scope = [self.scope(repository, false)];
        let resp = self
            .send_with_retries(&what, &scope, &|| self.http.head(url.clone()).header(ACCEPT, MANIFEST_TYPES.join(", ")))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(ManifestHead {
                digest: header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok()),
                media_type: header_str(resp.headers(), CONTENT_TYPE.as_str()).map(str::to_string),
            })),
            _ => Err(self.status_error(&what, resp).await),
        }
    }

    /// Every tag of a repository, following `Link` pages (at most `MAX_PAGES`); a repository the registry does not
    /// know has none.
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        self.ping().await?;
        let what = format!("tag list of {}/{repository}", self.name());
        let scope = [self.scope(repository, false)];
        let mut url = self.url(&format!("/v2/{}/tags/list", self.remote(repository)));
        url.query_pairs_mut().append_pair("n", "1000");
        let mut tags = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = url.clone();
            let resp = self.send_with_retries(&what, &scope, &|| self.http.get(page.clone())).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            if !resp.status().is_success() {
                return Err(self.status_error(&what, resp).await);
            }
            let next = next_page(&resp);
            let bytes = read_limited(resp, MAX_MANIFEST_BYTES).await.map_err(|e| self.connect_error(&what, e))?;
            let list: TagList = serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::Protocol { what: what.clone(), message: format!("not a tag list: {e}") })?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => return Ok(tags),
            }
        }
        Err(RegistryError::Protocol { what, message: format!("more than {MAX_PAGES} pages") })
    }

    /// The OCI 1.1 Referrers API: the descriptors of the manifests whose `subject` is `digest`, following `Link`
    /// pages. `Ok(None)` when the registry does not offer the API (it answers 404 for the route).
    pub async fn referrers(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<crate::oci::manifest::Descriptor>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<crate::oci::manifest::Descriptor>,
        }
        self.ping().await?;
        let what = format!("referrers of {}/{repository}@{digest}", self.name());
        let scope = [self.scope(repository, false)];
        let mut url = self.url(&format!("/v2/{}/referrers/{digest}", self.remote(repository)));
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = url.clone();
            let resp = self
                .send_with_retries(&what, &scope, &|| {
                    self.http.get(page.clone()).header(ACCEPT, crate::oci::manifest::OCI_INDEX)
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.status_error(&what, resp).await);
            }
            let next = next_page(&resp);
            let bytes = read_limited(resp, MAX_MANIFEST_BYTES).await.map_err(|e| self.connect_error(&what, e))?;
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                what: what.clone(),
                message: format!("not an image index: {e}"),
            })?;
            found.extend(index.manifests);
            match next {
                Some(n) => url = n,
                None => return Ok(Some(found)),
            }
        }
        Err(RegistryError::Protocol { what, message: format!("more than {MAX_PAGES} pages") })
    }

    /// PUT the exact bytes under `reference` (a tag or the manifest's digest). Returns whether the registry
    /// processed the manifest's `subject` (it answered with `OCI-Subject`: its Referrers API lists it).
    ///
    /// A registry may answer 400 `MANIFEST_BLOB_UNKNOWN`/`BLOB_UNKNOWN`/`DIGEST_INVALID` for content that was
    /// pushed a moment ago: eventually consistent storage (S3), or another import writing the same content at
    /// the same time (docker-registry's filesystem driver does not write atomically). Those are retried, a
    /// bounded number of times, before they count as errors.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &Bytes,
    ) -> Result<bool, RegistryError> {
        self.ping().await?;
        let what =
            format!("push of manifest {}/{}:{}", self.name(), repository, reference).replace(":sha256:", "@sha256:");
        let url = self.url(&format!("/v2/{}/manifests/{}", self.remote(repository), reference));
        let scope = [self.scope(repository, true)];
        let policy = self.options.retry;
        let mut attempt = 0;
        let resp = loop {
            let resp = self
                .send_with_retries(&what, &scope, &|| {
                    self.http.put(url.clone()).header(CONTENT_TYPE, media_type).body(bytes.clone())
                })
                .await?;
            if resp.status() != StatusCode::BAD_REQUEST {
                break resp;
            }
            // Some registries make a blob visible to manifest pushes a moment after its upload completed.
            let detail = error_detail(resp).await;
            let transient =
                ["MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"].iter().any(|c| detail.contains(c));
            match policy.decide(attempt, Attempt::Transient) {
                Verdict::Wait(delay) if transient => tokio::time::sleep(delay).await,
                _ => {
                    return Err(RegistryError::Status { registry: self.name().to_string(), what, status: 400, detail });
                }
            }
            attempt += 1;
        };
        if !resp.status().is_success() {
            return Err(self.status_error(&what, resp).await);
        }
        // Some registries (ECR) omit Location and even the digest header; when the digest is there it must match.
        if let Some(d) = header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse::<Digest>().ok()) {
            let ours = Digest::of(bytes);
            if d != ours {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected: ours,
                    actual: d,
                    size: bytes.len() as u64,
                });
            }
        }
        Ok(resp.headers().contains_key("oci-subject"))
    }

    // ----- blobs -----

    /// The blob's size if the repository has it.
    pub async fn head_blob(&self, repository: &str, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        self.ping().await?;
        let what = format!("blob {digest} in {}/{repository}", self.name());
        let url = self.url(&format!("/v2/{}/blobs/{digest}", self.remote(repository)));
        let scope = [self.scope(repository, false)];
        let resp = self.send_with_retries(&what, &scope, &|| self.http.head(url.clone())).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp.content_length().unwrap_or(0))),
            _ => Err(self.status_error(&what, resp).await),
        }
    }

    /// A small blob (a chart, a config) into memory, verified; refuses blobs larger than `limit`.
    pub async fn get_blob_bytes(&self, repository: &str, digest: &Digest, limit: u64) -> Result<Bytes, RegistryError> {
        self.ping().await?;
        let what = format!("blob {digest} of {}/{repository}", self.name());
        let url = self.url(&format!("/v2/{}/blobs/{digest}", self.remote(repository)));
        let scope = [self.scope(repository, false)];
        let resp = self.send_with_retries(&what, &scope, &|| self.http.get(url.clone())).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&what, resp).await);
        }
        let bytes = read_limited(resp, limit as usize + 1).await.map_err(|e| self.connect_error(&what, e))?;
        if bytes.len() as u64 > limit {
            return Err(RegistryError::Protocol { what, message: format!("it is larger than {limit} bytes") });
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Try to mount `digest` from `from` (a repository of the same registry). `Ok(None)` means it is mounted;
    /// `Ok(Some(location))` means the registry opened an upload session instead.
    pub async fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Option<Url>, RegistryError> {
        self.ping().await?;
        let what = format!("mount of blob {digest} into {}/{repository} from {from}", self.name());
        let mut url = self.url(&format!("/v2/{}/blobs/uploads/", self.remote(repository)));
        url.query_pairs_mut().append_pair("mount", digest.as_str()).append_pair("from", &self.remote(from));
        // Mounting from the repository itself (a check that opens an upload session only when needed) needs only
        // the push scope: the same token as the uploads to that repository.
        let scopes = [self.scope(repository, true), self.scope(from, false)];
        let scopes = if from == repository { &scopes[..1] } else { &scopes[..] };
        let resp =
            self.send_with_retries(&what, scopes, &|| self.http.post(url.clone()).header(CONTENT_LENGTH, 0)).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(self.location(&what, &resp)?)),
            _ => Err(self.status_error(&what, resp).await),
        }
    }

    /// Upload a blob: POST for a session (or use `session`, e.g. from a refused mount), then, for a blob larger
    /// than a chunk whose source can be read again, PATCHes that resume where a cut one stopped (`chunked`);
    /// otherwise (or where chunks are refused) one monolithic PUT with Content-Length, each retry a new session
    /// with the source reopened.
    pub async fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        mut session: Option<Url>,
    ) -> Result<(), RegistryError> {
        self.ping().await?;
        let what = format!("upload of blob {digest} to {}/{repository}", self.name());
        let scopes = [self.scope(repository, true)];
        let policy = self.options.retry;
        if size > self.options.upload_chunk {
            let (location, chunk_min) = match session.take() {
                Some(l) => (l, None),
                None => self.open_upload(repository, &scopes, &what).await?,
            };
            match self.upload_in_chunks(repository, digest, size, source, location, chunk_min).await? {
                chunked::Chunked::Done => return Ok(()),
                // One PUT in a new session; the refused one expires at the registry.
                chunked::Chunked::Refused => {}
            }
        }
        let mut attempt = 0;
        loop {
            let location = match session.take() {
                Some(l) => l,
                None => self.open_upload(repository, &scopes, &what).await?.0,
            };
            let mut put_url = location;
            put_url.query_pairs_mut().append_pair("digest", digest.as_str());
            self.prepare_auth(&what, &scopes).await?;
            let body = source.open().map_err(|e| RegistryError::io(&what, e))?;
            let req = self
                .http
                .put(put_url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body);
            let result = self.send_once(&scopes, req).await;
            if result.is_err()
                && let Some(source) = source.failure()
            {
                return Err(RegistryError::Source { what, source });
            }
            // A failed upload is retried whole (a new session, the source reopened): the body was consumed.
            let verdict = match &result {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => policy.decide(attempt, Attempt::Answered { status: r.status(), headers: r.headers() }),
                Err(_) => policy.decide(attempt, Attempt::Broken { retryable: true }),
            };
            match (verdict, result) {
                (Verdict::Wait(delay), _) => tokio::time::sleep(delay).await,
                // A token that expired during a long upload: fetch a new one, as often as retries last.
                (Verdict::Reauthenticate, Ok(r)) if attempt < policy.max_retries => {
                    let challenge =
                        r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).and_then(challenge::parse);
                    match challenge {
                        Some(c) => self.authenticate(&what, &c, &scopes).await?,
                        None => return Err(self.unauthorized(&what)),
                    }
                }
                (_, Ok(r)) => return Err(self.status_error(&what, r).await),
                (_, Err(e)) => return Err(self.connect_error(&what, e)),
            }
            attempt += 1;
        }
    }

    // ----- plumbing -----

    fn location(&self, what: &str, resp: &Response) -> Result<Url, RegistryError> {
        let loc = header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| RegistryError::Protocol {
            what: what.to_string(),
            message: "the registry opened an upload session without a Location header".into(),
        })?;
        // Relative locations are resolved against the URL that answered.
        resp.url().join(loc).map_err(|e| RegistryError::Protocol {
            what: what.to_string(),
            message: format!("the upload Location `{loc}` is not a valid URL: {e}"),
        })
    }

    /// Send one request, adding the Authorization header for `scopes` if the scheme is known.
    async fn send_once(&self, scopes: &[Scope], req: RequestBuilder) -> Result<Response, reqwest::Error> {
        let header = self.auth_header(scopes).await;
        let req = match header {
            Some(h) => req.header(AUTHORIZATION, h),
            None => req,
        };
        req.send().await
    }

    /// Send with retries on transient failures and one re-authentication per attempt on 401.
    async fn send_with_retries(
        &self,
        what: &str,
        scopes: &[Scope],
        build: &(dyn Fn() -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let policy = self.options.retry;
        let mut retries = 0;
        let mut reauthenticated = false;
        let mut refreshed = false;
        self.prepare_auth(what, scopes).await?;
        loop {
            let resp = match self.send_once(scopes, build()).await {
                Ok(resp) => resp,
                Err(e) => match policy.decide(retries, Attempt::Broken { retryable: is_retryable_error(&e) }) {
                    Verdict::Wait(delay) => {
                        tokio::time::sleep(delay).await;
                        retries += 1;
                        continue;
                    }
                    _ => return Err(self.connect_error(what, e)),
                },
            };
            match policy.decide(retries, Attempt::Answered { status: resp.status(), headers: resp.headers() }) {
                Verdict::Wait(delay) => {
                    tokio::time::sleep(delay).await;
                    retries += 1;
                    continue;
                }
                Verdict::Reauthenticate => {
                    let challenge =
                        resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).and_then(challenge::parse);
                    match challenge {
                        Some(c) if !reauthenticated => {
                            self.authenticate(what, &c, scopes).await?;
                            reauthenticated = true;
                        }
                        // Credentials that were accepted before may have expired: fetch them once more.
                        Some(c) if !refreshed && self.refresher.is_some() => {
                            self.refresh_credentials(what).await?;
                            refreshed = true;
                            self.auth.lock().await.tokens.clear();
                            if matches!(c, Challenge::Bearer { .. }) {
                                self.authenticate(what, &c, scopes).await?;
                            }
                        }
                        _ => return Err(self.unauthorized(what)),
                    }
                    continue;
                }
                Verdict::Accept | Verdict::GiveUp => {}
            }
            if resp.status() == StatusCode::FORBIDDEN {
                let detail = error_detail(resp).await;
                return Err(RegistryError::Denied {
                    registry: self.name().to_string(),
                    what: what.to_string(),
                    detail,
                });
            }
            return Ok(resp);
        }
    }

    /// Once a registry is known to use tokens, fetch the token for a new scope set before the request rather
    /// than after a 401 (one handshake per scope set instead of one per request kind).
    async fn prepare_auth(&self, what: &str, scopes: &[Scope]) -> Result<(), RegistryError> {
        let pending = {
            let state = self.auth.lock().await;
            match &state.scheme {
                Some(Scheme::Bearer { realm, service }) if !state.tokens.contains_key(&scope_key(scopes)) => {
                    Some(Challenge::Bearer { realm: realm.to_string(), service: service.clone(), scope: None })
                }
                _ => None,
            }
        };
        let Some(challenge) = pending else { return Ok(()) };
        let key = scope_key(scopes);
        let flight = self.token_flights.lock().expect("token flights lock").entry(key.clone()).or_default().clone();
        let _one_at_a_time = flight.lock().await;
        if self.auth.lock().await.tokens.contains_key(&key) {
            // Fetched by the request we waited for.
            return Ok(());
        }
        self.authenticate(what, &challenge, scopes).await
    }

    fn current_credentials(&self) -> Option<Credentials> {
        self.credentials.read().expect("credentials lock").clone()
    }

    async fn refresh_credentials(&self, what: &str) -> Result<(), RegistryError> {
        let Some(source) = &self.refresher else { return Ok(()) };
        let fresh = source.fetch().await.map_err(|message| RegistryError::Protocol {
            what: what.to_string(),
            message: format!("cannot renew the credentials for {}: {message}", self.name()),
        })?;
        *self.credentials.write().expect("credentials lock") = Some(fresh);
        Ok(())
    }

    async fn auth_header(&self, scopes: &[Scope]) -> Option<String> {
        let state = self.auth.lock().await;
        match state.scheme.as_ref()? {
            Scheme::Anonymous => None,
            Scheme::Basic => self.current_credentials().as_ref().map(Credentials::basic_header),
            Scheme::Bearer { .. } => state.tokens.get(&scope_key(scopes)).map(|t| format!("Bearer {t}")),
        }
    }

    /// Answer a challenge: remember Basic, or fetch a bearer token for exactly these scopes.
    async fn authenticate(&self, what: &str, challenge: &Challenge, scopes: &[Scope]) -> Result<(), RegistryError> {
        match challenge {
            Challenge::Basic => {
                let mut state = self.auth.lock().await;
                if self.current_credentials().is_none() {
                    state.scheme = Some(Scheme::Anonymous);
                    return Err(self.unauthorized(what));
                }
                if matches!(state.scheme, Some(Scheme::Basic)) {
                    // We already sent these credentials and they were refused.
                    return Err(self.unauthorized(what));
                }
                state.scheme = Some(Scheme::Basic);
                Ok(())
            }
            Challenge::Bearer { realm, service, .. } => {
                let realm_url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
                    what: what.to_string(),
                    message: format!("the token realm `{realm}` is not a URL: {e}"),
                })?;
                let realm_host = realm_url.host_str().unwrap_or_default().to_string();
                if realm_url.scheme() != "https"
                    && !is_loopback_host(&realm_host)
                    && self.endpoint.base.scheme() == "https"
                {
                    return Err(RegistryError::Protocol {
                        what: what.to_string(),
                        message: format!(
                            "the token realm `{realm}` is not HTTPS; refusing to send credentials over plain HTTP"
                        ),
                    });
                }
                let mut url = realm_url.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", &s.as_param());
                    }
                }
                let token_what = format!("token request to {}", realm_url.origin().ascii_serialization());
                let policy = self.options.retry;
                let mut retries = 0;
                let resp = loop {
                    let mut req = self.http.get(url.clone());
                    if let Some(c) = &self.current_credentials() {
                        req = req.header(AUTHORIZATION, c.basic_header());
                    }
                    let verdict = match req.send().await {
                        Ok(r) => match policy
                            .decide(retries, Attempt::Answered { status: r.status(), headers: r.headers() })
                        {
                            // A refusal is not retried here: it is reported below as bad credentials.
                            Verdict::Accept | Verdict::Reauthenticate | Verdict::GiveUp => break r,
                            wait => wait,
                        },
                        Err(e) => match policy.decide(retries, Attempt::Broken { retryable: is_retryable_error(&e) }) {
                            Verdict::Wait(delay) => Verdict::Wait(delay),
                            _ => return Err(self.connect_error(&token_what, e)),
                        },
                    };
                    if let Verdict::Wait(delay) = verdict {
                        tokio::time::sleep(delay).await;
                    }
                    retries += 1;
                };
                if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
                    return Err(self.unauthorized(what));
                }
                if !resp.status().is_success() {
                    return Err(self.status_error(&token_what, resp).await);
                }
                #[derive(serde::Deserialize)]
                struct TokenReply {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = read_limited(resp, 1 << 20).await.map_err(|e| self.connect_error(&token_what, e))?;
                let reply: TokenReply = serde_json::from_slice(&body).map_err(|_| RegistryError::Protocol {
                    what: token_what.clone(),
                    message: "the token service's answer is not the expected JSON".into(),
                })?;
                let token = reply.token.or(reply.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
                    RegistryError::Protocol {
                        what: token_what.clone(),
                        message: "the token service returned no token".into(),
                    }
                })?;
                let mut state = self.auth.lock().await;
                state.scheme = Some(Scheme::Bearer { realm: realm_url, service: service.clone() });
                state.tokens.insert(scope_key(scopes), token);
                Ok(())
            }
        }
    }

    fn unauthorized(&self, what: &str) -> RegistryError {
        match &self.current_credentials() {
            Some(c) => RegistryError::BadCredentials {
                registry: self.name().to_string(),
                what: what.to_string(),
                origin: c.origin.clone(),
            },
            None => RegistryError::NoCredentials { registry: self.name().to_string(), what: what.to_string() },
        }
    }

    fn connect_error(&self, what: &str, source: reqwest::Error) -> RegistryError {
        RegistryError::Connect {
            registry: self.name().to_string(),
            endpoint: self.endpoint.base.origin().ascii_serialization(),
            what: what.to_string(),
            source,
        }
    }

    async fn status_error(&self, what: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let detail = error_detail(resp).await;
        if status == 404 {
            return RegistryError::NotFound { registry: self.name().to_string(), what: what.to_string(), detail };
        }
        RegistryError::Status { registry: self.name().to_string(), what: what.to_string(), status, detail }
    }
}

fn scope_key(scopes: &[Scope]) -> String {
    let mut s: Vec<String> = scopes.iter().map(Scope::as_param).collect();
    s.sort();
    s.join(" ")
}

fn is_retryable_error(e: &reqwest::Error) -> bool {
    // Builder errors (a bad URL) will not get better; everything on the wire may.
    !e.is_builder() && !e.is_redirect()
}

/// Pages of a list: at most this many are followed.
const MAX_PAGES: usize = 1000;

/// The `Link: <URL>; rel="next"` of a paginated answer, resolved against the URL that answered.
fn next_page(resp: &Response) -> Option<Url> {
    let link = header_str(resp.headers(), "link")?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| resp.url().join(target.trim().trim_matches(['<', '>'])).ok())?
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    // "bytes 100-199/200"
    let v = header_str(headers, "content-range")?;
    v.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// The manifest's own `mediaType` field, which is what registries validate a push against.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.media_type
}

async fn read_limited(resp: Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            out.extend_from_slice(&chunk[..limit - out.len()]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The distribution error body (`{"errors":[{"code","message"}]}`) in a few words, if there is one.
async fn error_detail(resp: Response) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(body) = read_limited(resp, 64 * 1024).await else { return String::new() };
    if let Ok(errs) = serde_json::from_slice::<Errors>(&body) {
        let parts: Vec<String> = errs
            .errors
            .iter()
            .map(|e| match (&e.code, &e.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        return parts.join("; ");
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('<') {
        return String::new();
    }
    text.chars().take(200).collect()
}
