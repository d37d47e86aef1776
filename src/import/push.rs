//! Push a set of images (an archive's, or for `copy` the ones just resolved) into the destination registry:
//! map every image, probe what is there, push what is missing.
//!
//! Order is what registries require and what makes an interrupted push resumable: blobs, then child
//! manifests, then indexes, then tags. Existence is probed first, so a re-run only HEADs what is there. A blob
//! is uploaded once per destination and mounted into the other repositories that need it. Where the bytes come
//! from is a `BlobOrigin`: the archive for import (`ArchiveOrigin`), the source registry for copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::sync::Mutex;

use crate::archive::reader::read_up_to;
use crate::archive::{ArchiveFile, BlobEntry, BundleContents};
pub use crate::oci::destination::{Destination, Mapping};
use crate::oci::digest::{Digest, DigestWriter};
use crate::oci::reference::ImageRef;
use crate::registry::{BlobSource, PoolError, RegistryClient, RegistryError};
use crate::support::printer::Transfer;

/// One image's push: where it goes and the index of the image in the archive.
#[derive(Debug, Clone)]
pub struct ImagePush {
    pub source: ImageRef,
    pub target: ImageRef,
    pub image: usize,
}

/// Everything an import will do, before it does it.
#[derive(Debug)]
pub struct PushPlan {
    pub images: Vec<ImagePush>,
    /// Destination repository → blobs it needs.
    pub repositories: BTreeMap<String, BTreeSet<Digest>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "two images would be pushed to {target} with different content: {first} ({first_digest}) and {second} ({second_digest})"
    )]
    Collision { target: String, first: String, first_digest: Digest, second: String, second_digest: Digest },
    #[error(
        "{registry} refused the index of {image} ({digest}): it was carried sparse (only the chosen platforms' manifests), and this registry stores an index only with all its children"
    )]
    SparseRefused {
        image: String,
        registry: String,
        digest: Digest,
        // Boxed: it would otherwise double the size of every push result.
        #[source]
        source: Box<RegistryError>,
    },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl PushPlan {
    pub fn new(contents: &BundleContents, dest: &Destination) -> Result<PushPlan, PushError> {
        let mut images = Vec::new();
        let mut targets: HashMap<String, (String, Digest)> = HashMap::new();
        for (i, img) in contents.images.iter().enumerate() {
            // The referrers tag schema's index is pushed after everything it lists, by `referrers::attach`,
            // and only where the destination keeps referrers that way.
            if img.artifact.as_ref().is_some_and(|a| !a.is_artifact()) {
                continue;
            }
            let target = dest.map(&img.source);
            // The tag (or, for digest-only references, the repository and digest) is what could collide.
            let key = match target.tag() {
                Some(t) => format!("{}:{t}", target.name()),
                None => format!("{}@{}", target.name(), img.digest),
            };
            if let Some((first, first_digest)) = targets.get(&key)
                && first_digest != &img.digest
            {
                return Err(PushError::Collision {
                    target: key,
                    first: first.clone(),
                    first_digest: first_digest.clone(),
                    second: img.source.to_string(),
                    second_digest: img.digest.clone(),
                });
            }
            targets.insert(key, (img.source.to_string(), img.digest.clone()));
            images.push(ImagePush { source: img.source.clone(), target, image: i });
        }
        let mut repositories: BTreeMap<String, BTreeSet<Digest>> = BTreeMap::new();
        for p in &images {
            repositories
                .entry(p.target.repository().to_string())
                .or_default()
                .extend(contents.images[p.image].blobs.iter().cloned());
        }
        Ok(PushPlan { images, repositories })
    }
}

/// How `probe` learns which blobs an incomplete image's repository already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCheck {
    /// A HEAD per (repository, blob): the plan is exact before anything is pushed (dry runs, ECR).
    Head,
    /// Not before the push: each blob's first upload starts with `POST ?mount=DIGEST&from=SAME_REPOSITORY`,
    /// which the registry answers with 201 when the repository has the blob, and otherwise with the upload
    /// session the blob needed anyway. One request instead of HEAD + POST per missing blob; on `many` (800
    /// blobs in 200 repositories) that is a quarter of all requests. A registry that does not mount answers
    /// 202 either way, and a blob it already had is uploaded again: correct, only slower.
    OnUpload,
}

/// What the destination already has, learnt by HEAD requests.
#[derive(Debug, Default)]
pub struct Presence {
    /// (repository, manifest digest) present.
    pub manifests: BTreeSet<(String, Digest)>,
    /// Tags that already point at our digest.
    pub tags_current: BTreeSet<String>,
    /// `repository:tag` that exist with another digest (they will be overwritten, or refused if immutable).
    pub tags_elsewhere: BTreeMap<String, Digest>,
    /// (repository, blob) pairs that must be pushed.
    pub missing_blobs: BTreeMap<Digest, BTreeSet<String>>,
    /// Blobs already somewhere in the destination, with one repository that has them (a mount source).
    pub present_somewhere: BTreeMap<Digest, String>,
    pub blobs_present: usize,
    /// `missing_blobs` holds every blob of the incomplete images, unchecked (`BlobCheck::OnUpload`).
    pub unchecked: bool,
}

impl Presence {
    /// Whether the destination has every image, with current tags: an import would push nothing.
    pub fn nothing_to_do(&self, plan: &PushPlan, contents: &BundleContents) -> bool {
        self.missing_blobs.is_empty()
            && self.images_complete(plan, contents) == plan.images.len()
            && plan.images.iter().all(|p| match p.target.tag() {
                Some(t) => self.tags_current.contains(&format!("{}:{t}", p.target.repository())),
                None => true,
            })
    }

    /// Images whose root manifest is already in its destination repository.
    pub fn images_complete(&self, plan: &PushPlan, contents: &BundleContents) -> usize {
        plan.images
            .iter()
            .filter(|p| {
                self.manifests.contains(&(p.target.repository().to_string(), contents.images[p.image].digest.clone()))
            })
            .count()
    }

    pub fn bytes_to_upload(&self, contents: &BundleContents) -> u64 {
        self.missing_blobs
            .keys()
            .filter(|d| !self.present_somewhere.contains_key(*d))
            .filter_map(|d| contents.blobs.get(d))
            .map(|b| b.size)
            .sum()
    }
    pub fn blobs_to_upload(&self) -> usize {
        self.missing_blobs.keys().filter(|d| !self.present_somewhere.contains_key(*d)).count()
    }
    pub fn blobs_to_mount(&self) -> usize {
        self.missing_blobs
            .iter()
            .map(|(d, repos)| repos.len() - usize::from(!self.present_somewhere.contains_key(d)))
            .sum()
    }
}

/// Probe the destination. An image whose root manifest is already in its repository needs nothing else:
/// registries accept a manifest only once everything it references is present.
pub async fn probe(
    client: &RegistryClient,
    plan: &PushPlan,
    contents: &BundleContents,
    concurrency: usize,
    check: BlobCheck,
) -> Result<Presence, PushError> {
    let mut presence = Presence { unchecked: check == BlobCheck::OnUpload, ..Presence::default() };
    // Roots and tags first.
    type RootProbe = (usize, bool, Option<Option<Digest>>);
    let roots: Vec<RootProbe> = stream::iter(plan.images.iter().enumerate())
        .map(|(i, p)| async move {
            let img = &contents.images[p.image];
            let repo = p.target.repository();
            let tag_digest = match p.target.tag() {
                Some(t) => client.head_manifest(repo, t).await?.map(|h| h.digest),
                None => None,
            };
            // A tag that already points at our digest proves the manifest is there: a re-run asks once per image.
            let by_digest = matches!(&tag_digest, Some(Some(d)) if d == &img.digest)
                || client.head_manifest(repo, img.digest.as_str()).await?.is_some();
            Ok::<_, RegistryError>((i, by_digest, tag_digest))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut needed: BTreeMap<String, BTreeSet<Digest>> = BTreeMap::new();
    for (i, root_present, tag_digest) in roots {
        let p = &plan.images[i];
        let ours = &contents.images[p.image].digest;
        let tag_current = match (p.target.tag(), &tag_digest) {
            (None, _) => true,
            (Some(_), Some(Some(d))) => d == ours,
            // A registry that answers HEAD without a digest header: treat the tag as needing a PUT.
            _ => false,
        };
        if let (Some(t), Some(Some(d))) = (p.target.tag(), &tag_digest)
            && d != ours
        {
            presence.tags_elsewhere.insert(format!("{}:{t}", p.target.repository()), d.clone());
        }
        let p = &plan.images[i];
        let img = &contents.images[p.image];
        let repo = p.target.repository().to_string();
        if root_present {
            presence.manifests.extend(img.manifests.iter().map(|m| (repo.clone(), m.clone())));
            // The registry accepted this image's manifests, so it holds their blobs: a mount source for
            // incomplete images that share them (a new release on the same base layers).
            for b in &img.blobs {
                presence.present_somewhere.entry(b.clone()).or_insert_with(|| repo.clone());
            }
            if tag_current && let Some(t) = p.target.tag() {
                presence.tags_current.insert(format!("{repo}:{t}"));
            }
        } else {
            needed.entry(repo).or_default().extend(img.blobs.iter().cloned());
        }
    }
    // Blobs of images that are not complete yet.
    let pairs: Vec<(String, Digest)> =
        needed.iter().flat_map(|(r, ds)| ds.iter().map(move |d| (r.clone(), d.clone()))).collect();
    if check == BlobCheck::OnUpload {
        for (repo, d) in pairs {
            presence.missing_blobs.entry(d).or_default().insert(repo);
        }
        return Ok(presence);
    }
    let found: Vec<(String, Digest, bool)> = stream::iter(pairs)
        .map(|(repo, d)| async move {
            let present = client.head_blob(&repo, &d).await?.is_some();
            Ok::<_, RegistryError>((repo, d, present))
        })
        .buffer_unordered(concurrency.max(1) * 2)
        .try_collect()
        .await?;
    for (repo, d, present) in found {
        if present {
            presence.blobs_present += 1;
            presence.present_somewhere.entry(d).or_insert(repo);
        } else {
            presence.missing_blobs.entry(d).or_default().insert(repo);
        }
    }
    Ok(presence)
}

/// Push repository by repository: each repository is complete (blobs and manifests) before its blobs are
/// mounted elsewhere. ECR only mounts a blob from a repository where a manifest already references it.
pub async fn execute_in_order(
    client: &RegistryClient,
    origin: &dyn BlobOrigin,
    plan: &PushPlan,
    contents: &BundleContents,
    presence: &Presence,
    concurrency: usize,
    progress: &Transfer,
) -> Result<PushStats, PushError> {
    let mut total = PushStats::default();
    let mut mountable: BTreeMap<Digest, String> = BTreeMap::new();
    for repo in plan.repositories.keys() {
        let images: Vec<ImagePush> = plan.images.iter().filter(|p| p.target.repository() == repo).cloned().collect();
        let sub_plan =
            PushPlan { images, repositories: BTreeMap::from([(repo.clone(), plan.repositories[repo].clone())]) };
        let sub_presence = Presence {
            manifests: presence.manifests.clone(),
            tags_current: presence.tags_current.clone(),
            tags_elsewhere: BTreeMap::new(),
            missing_blobs: presence
                .missing_blobs
                .iter()
                .filter(|(_, repos)| repos.contains(repo))
                .map(|(d, _)| (d.clone(), BTreeSet::from([repo.clone()])))
                .collect(),
            present_somewhere: mountable.clone(),
            blobs_present: 0,
            unchecked: presence.unchecked,
        };
        total += execute(client, origin, &sub_plan, contents, &sub_presence, concurrency, progress).await?;
        for d in &plan.repositories[repo] {
            mountable.entry(d.clone()).or_insert_with(|| repo.clone());
        }
    }
    Ok(total)
}

/// Run the push. Returns (blobs uploaded, blobs mounted, manifests pushed).
pub async fn execute(
    client: &RegistryClient,
    origin: &dyn BlobOrigin,
    plan: &PushPlan,
    contents: &BundleContents,
    presence: &Presence,
    concurrency: usize,
    progress: &Transfer,
) -> Result<PushStats, PushError> {
    let stats = Mutex::new(PushStats::default());
    let concurrency = if origin.parallel() { concurrency.max(1) } else { 1 };
    stream::iter(presence.missing_blobs.iter().map(Ok::<_, PushError>))
        .try_for_each_concurrent(concurrency, |(digest, repos)| {
            let stats = &stats;
            async move {
                let size = contents.blob_size(digest);
                let mut repos = repos.iter();
                // The first repository gets the bytes (mounted from elsewhere in the destination if possible);
                // every other one mounts from it, concurrently: one shared base layer may go to hundreds.
                let source = match presence.present_somewhere.get(digest) {
                    Some(from) => from.clone(),
                    None => {
                        let first = repos.next().expect("a missing blob is missing somewhere");
                        // Unchecked: ask the repository to mount the blob from itself, which opens the
                        // upload session only if it does not have it (201: it does).
                        let (present, session) = if presence.unchecked {
                            let session = client.mount_blob(first, digest, first).await?;
                            (session.is_none(), session)
                        } else {
                            (false, None)
                        };
                        if present {
                            progress.skipped(size);
                            stats.lock().await.present += 1;
                        } else {
                            upload(client, origin, first, digest, size, session, progress).await?;
                            stats.lock().await.count_upload(size);
                        }
                        first.clone()
                    }
                };
                stream::iter(repos.map(Ok::<_, PushError>))
                    .try_for_each_concurrent(concurrency, |repo| {
                        let source = source.clone();
                        async move {
                            match client.mount_blob(repo, digest, &source).await? {
                                None => stats.lock().await.mounted += 1,
                                Some(session) => {
                                    // The registry would not mount (ECR without blob mounting, another
                                    // account): upload into the session it opened.
                                    upload(client, origin, repo, digest, size, Some(session), progress).await?;
                                    stats.lock().await.count_upload(size);
                                }
                            }
                            Ok(())
                        }
                    })
                    .await
            }
        })
        .await?;

    // Manifests: per image, children first and the root last; the root goes under its tag. Images before the
    // signatures, attestations and SBOMs attached to them, so an artifact never names a subject that is not there.
    let done: Mutex<BTreeSet<(String, Digest)>> = Mutex::new(presence.manifests.clone());
    let (subjects, artifacts): (Vec<&ImagePush>, Vec<&ImagePush>) =
        plan.images.iter().partition(|p| contents.images[p.image].artifact.is_none());
    for phase in [subjects, artifacts] {
        push_manifests(client, &phase, contents, presence, concurrency, &done, &stats).await?;
    }
    Ok(stats.into_inner())
}

/// Push the manifests of `images`, `concurrency` images at a time.
///
/// When one image fails, no other image starts, but the ones under way finish (`support::drain` says why): the
/// failure's report asks the destination which images landed, and must not race a `PUT` still being stored.
async fn push_manifests(
    client: &RegistryClient,
    images: &[&ImagePush],
    contents: &BundleContents,
    presence: &Presence,
    concurrency: usize,
    done: &Mutex<BTreeSet<(String, Digest)>>,
    stats: &Mutex<PushStats>,
) -> Result<(), PushError> {
    crate::support::drain::for_each_draining(images.iter().copied(), concurrency, |p| {
        push_image_manifests(client, p, contents, presence, done, stats)
    })
    .await
}

/// One image's manifests: children first, the root last, under its tag.
async fn push_image_manifests(
    client: &RegistryClient,
    p: &ImagePush,
    contents: &BundleContents,
    presence: &Presence,
    done: &Mutex<BTreeSet<(String, Digest)>>,
    stats: &Mutex<PushStats>,
) -> Result<(), PushError> {
    let img = &contents.images[p.image];
    let repo = p.target.repository().to_string();
    for m in &img.manifests {
        let is_root = m == &img.digest;
        let key = (repo.clone(), m.clone());
        let stored = &contents.manifests[m];
        if is_root {
            continue;
        }
        if done.lock().await.contains(&key) {
            continue;
        }
        client.put_manifest(&repo, m.as_str(), &stored.media_type, &stored.bytes).await?;
        stats.lock().await.manifests += 1;
        done.lock().await.insert(key);
    }
    let stored = &contents.manifests[&img.digest];
    let tag_key = p.target.tag().map(|t| format!("{repo}:{t}"));
    let current = tag_key.as_ref().is_some_and(|k| presence.tags_current.contains(k));
    if !current {
        let reference = p.target.tag().map(str::to_string).unwrap_or_else(|| img.digest.to_string());
        client.put_manifest(&repo, &reference, &stored.media_type, &stored.bytes).await.map_err(|source| {
            match source.status() {
                // Docker distribution answers 400 MANIFEST_BLOB_UNKNOWN; others 400 or 404.
                Some(400 | 404) if !img.omitted.is_empty() => PushError::SparseRefused {
                    image: p.source.to_string(),
                    registry: client.name().to_string(),
                    digest: img.digest.clone(),
                    source: Box::new(source),
                },
                _ => PushError::Registry(source),
            }
        })?;
        stats.lock().await.manifests += 1;
    }
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PushStats {
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub mounted: usize,
    /// Blobs found already in their repository at push time (`BlobCheck::OnUpload`).
    pub present: usize,
    pub manifests: usize,
}

impl PushStats {
    fn count_upload(&mut self, size: u64) {
        self.uploaded += 1;
        self.uploaded_bytes += size;
    }
}

impl std::ops::AddAssign for PushStats {
    fn add_assign(&mut self, o: PushStats) {
        self.uploaded += o.uploaded;
        self.uploaded_bytes += o.uploaded_bytes;
        self.mounted += o.mounted;
        self.present += o.present;
        self.manifests += o.manifests;
    }
}

async fn upload(
    client: &RegistryClient,
    origin: &dyn BlobOrigin,
    repo: &str,
    digest: &Digest,
    size: u64,
    session: Option<url::Url>,
    progress: &Transfer,
) -> Result<(), RegistryError> {
    progress.item_started();
    let source = origin.source(digest, size, progress);
    let result = client.upload_blob(repo, digest, size, source.as_ref(), session).await;
    progress.item_done();
    result
}

/// Where the bytes of the blobs being pushed come from.
pub trait BlobOrigin: Sync {
    /// Whether many blobs can be read at once.
    fn parallel(&self) -> bool;
    /// The body of one blob, reopened for each upload attempt; the bytes must be verified on their way, so
    /// that the registry never receives a complete blob that differs from its digest.
    fn source(&self, digest: &Digest, size: u64, progress: &Transfer) -> Box<dyn BlobSource + Send>;
}

/// Blobs read straight from a verified archive.
pub struct ArchiveOrigin<'a> {
    pub archive: Arc<ArchiveFile>,
    pub blobs: &'a BTreeMap<Digest, BlobEntry>,
}

impl BlobOrigin for ArchiveOrigin<'_> {
    /// Sequential access is all a stream-only archive allows; parallel readers would each decompress from
    /// the start.
    fn parallel(&self) -> bool {
        self.archive.is_random_access()
    }

    fn source(&self, digest: &Digest, _size: u64, progress: &Transfer) -> Box<dyn BlobSource + Send> {
        // A delta leaves blobs to its base; they are mounted, and an upload of one is a mount the registry refused.
        let Some(entry) = self.blobs.get(digest) else { return Box::new(NotInArchive(digest.clone())) };
        Box::new(ArchiveBlob::new(vec![(self.archive.clone(), *entry)], digest, progress))
    }
}

/// A blob the archive does not hold (a delta's, left to its base).
pub struct NotInArchive(pub Digest);

impl BlobSource for NotInArchive {
    fn open(&self) -> std::io::Result<reqwest::Body> {
        Err(self.failure().expect("always fails"))
    }

    fn failure(&self) -> Option<std::io::Error> {
        Some(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("blob {} is left to the base archive, and the destination did not mount it", self.0),
        ))
    }
}

/// What the upload attempts of one blob read from a file share: the bytes reported to the progress bar (taken
/// back when an attempt starts over) and why the source failed in the last attempt. `body` runs the reading on a
/// thread of its own and hands its chunks to the request through a bounded channel.
#[derive(Clone)]
pub struct Attempts {
    progress: Transfer,
    counted: Arc<AtomicI64>,
    failed: Arc<std::sync::Mutex<Option<(std::io::ErrorKind, String)>>>,
}

/// What `Attempts::body`'s producer sends chunks into.
pub type ChunkSender = tokio::sync::mpsc::Sender<std::io::Result<Bytes>>;

impl Attempts {
    pub fn new(progress: &Transfer) -> Attempts {
        Attempts { progress: progress.clone(), counted: Arc::new(AtomicI64::new(0)), failed: Arc::default() }
    }

    /// A new attempt's body, `depth` chunks deep: what the last attempt reported is taken back and its failure
    /// forgotten; an error `produce` returns is recorded and ends the body.
    pub fn body(
        &self,
        depth: usize,
        produce: impl FnOnce(&ChunkSender, &Attempts) -> std::io::Result<()> + Send + 'static,
    ) -> reqwest::Body {
        let previous = self.counted.swap(0, Ordering::Relaxed);
        self.progress.add(-previous);
        *self.failed.lock().expect("failure slot") = None;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(depth);
        let attempts = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = produce(&tx, &attempts) {
                *attempts.failed.lock().expect("failure slot") = Some((e.kind(), e.to_string()));
                let _ = tx.blocking_send(Err(e));
            }
        });
        let stream = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        reqwest::Body::wrap_stream(stream)
    }

    /// `n` bytes went to the request.
    pub fn count(&self, n: usize) {
        self.progress.add(n as i64);
        self.counted.fetch_add(n as i64, Ordering::Relaxed);
    }

    pub fn failure(&self) -> Option<std::io::Error> {
        self.failed
            .lock()
            .expect("failure slot")
            .as_ref()
            .map(|(kind, message)| std::io::Error::new(*kind, message.clone()))
    }
}

/// A blob's bytes read straight from the archive (or, for a blob that spans volumes, from its pieces in order),
/// hashed as they go: a mismatch fails the upload body, so the registry never receives a complete blob that
/// differs from its digest.
pub struct ArchiveBlob {
    segments: Arc<Vec<(Arc<ArchiveFile>, BlobEntry)>>,
    size: u64,
    digest: Digest,
    attempts: Attempts,
}

impl ArchiveBlob {
    /// The blob `digest` is the concatenation of `segments`.
    pub fn new(segments: Vec<(Arc<ArchiveFile>, BlobEntry)>, digest: &Digest, progress: &Transfer) -> ArchiveBlob {
        let size = segments.iter().map(|(_, e)| e.size).sum();
        ArchiveBlob { segments: Arc::new(segments), size, digest: digest.clone(), attempts: Attempts::new(progress) }
    }
}

const CHUNK: usize = 256 * 1024;

impl BlobSource for ArchiveBlob {
    fn open(&self) -> std::io::Result<reqwest::Body> {
        let mut read = self.checked_read(0);
        Ok(self.attempts.body(8, move |tx, _| {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = read_up_to(&mut read, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the request was dropped
                }
            }
        }))
    }

    fn reader(&self, from: u64) -> Option<std::io::Result<Box<dyn std::io::Read + Send>>> {
        // This pass reports the bytes the registry holds at once, and counts the rest as they are read.
        let previous = self.attempts.counted.swap(from as i64, Ordering::Relaxed);
        self.attempts.progress.add(from as i64 - previous);
        *self.attempts.failed.lock().expect("failure slot") = None;
        Some(Ok(Box::new(self.checked_read(from))))
    }

    fn failure(&self) -> Option<std::io::Error> {
        self.attempts.failure()
    }
}

/// `ArchiveBlob`'s bytes as a reader, hashed as they go: the read that would complete the blob fails instead if
/// the digest does not match, and any failure is recorded as the source's.
struct CheckedRead {
    segments: Arc<Vec<(Arc<ArchiveFile>, BlobEntry)>>,
    next: usize,
    current: Box<dyn std::io::Read + Send>,
    hasher: DigestWriter,
    size: u64,
    digest: Digest,
    /// Bytes before this offset are not counted as progress (the registry holds them).
    from: u64,
    attempts: Attempts,
}

impl ArchiveBlob {
    /// A pass over the blob's bytes, checked; progress counted from `from` on.
    fn checked_read(&self, from: u64) -> CheckedRead {
        CheckedRead {
            segments: self.segments.clone(),
            next: 0,
            current: Box::new(std::io::empty()),
            hasher: DigestWriter::new(),
            size: self.size,
            digest: self.digest.clone(),
            from,
            attempts: self.attempts.clone(),
        }
    }
}

impl CheckedRead {
    fn read_checked(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n == 0 {
                let Some((archive, entry)) = self.segments.get(self.next) else {
                    if self.hasher.len() != self.size {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("blob {} is short in the archive", self.digest),
                        ));
                    }
                    return Ok(0);
                };
                self.current = archive.open_blob(&self.digest, *entry)?;
                self.next += 1;
                continue;
            }
            let start = self.hasher.len();
            self.hasher.update(&buf[..n]);
            if self.hasher.len() > self.size
                || (self.hasher.len() == self.size && self.hasher.clone().finish() != self.digest)
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("blob {} read back from the archive does not match its digest", self.digest),
                ));
            }
            let counted = self.hasher.len().saturating_sub(start.max(self.from));
            self.attempts.count(counted as usize);
            return Ok(n);
        }
    }
}

impl std::io::Read for CheckedRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_checked(buf).inspect_err(|e| {
            *self.attempts.failed.lock().expect("failure slot") = Some((e.kind(), e.to_string()));
        })
    }
}

impl crate::support::hint::Hint for PushError {
    fn hint(&self) -> Option<String> {
        match self {
            PushError::Collision { .. } => Some(
                "keep the registry host in the path (--keep-host) or import into another prefix, so the two images land apart".into(),
            ),
            PushError::SparseRefused { .. } => Some(
                "export (or copy) again with --platform-mode filter (the default: a new index of the chosen platforms), or without --platform to carry every platform".into(),
            ),
            PushError::Pool(e) => e.hint(),
            PushError::Registry(e) => e.hint(),
        }
    }
}
