//! `copy`: push resolved images straight from their source registries, without an archive.
//!
//! The push itself is import's (`push`); what differs is where the bytes come from. A `RegistryOrigin` streams
//! each blob from the source registry into the upload: nothing is staged on disk, a bounded channel of chunks
//! sits between the download and the upload, and the last chunk is held back until the download has matched
//! the digest, so the destination never receives a complete blob that differs from its name.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream;

use crate::archive::contents::StoredManifest;
use crate::archive::{ArchiveImage, BlobEntry, BundleContents};
use crate::export::resolve::ResolvedImage;
use crate::import::push::BlobOrigin;
use crate::oci::digest::{Digest, DigestWriter};
use crate::oci::layout::BundleMetadata;
use crate::oci::manifest::{self, ManifestError};
use crate::registry::{BlobSink, BlobSource, PoolError, Registries, RegistryClient, Role};
use crate::support::printer::Transfer;

/// Chunks in flight between one blob's download and its upload: at most 4 × 256 KiB per blob.
const CHANNEL_CHUNKS: usize = 4;
/// The download's small reads are gathered into chunks of this size before they go to the upload: fewer
/// wake-ups and writes on both sides of the channel.
const CHUNK: usize = 256 * 1024;

/// The contents an archive of `images` would have, so the push can plan exactly as import does. Blob entries
/// carry only sizes (offset 0): the bytes come from the source registries, not from a file.
pub fn contents_of(images: &[ResolvedImage], metadata: BundleMetadata) -> Result<BundleContents, ManifestError> {
    let mut manifests = HashMap::new();
    let mut blobs = BTreeMap::new();
    let mut out = Vec::new();
    for img in images {
        for m in &img.manifests {
            let links = manifest::parse(&m.digest, Some(&m.media_type), &m.bytes)?;
            manifests.insert(
                m.digest.clone(),
                StoredManifest { media_type: links.media_type.clone(), bytes: m.bytes.clone(), links },
            );
        }
        for b in &img.blobs {
            blobs.insert(b.digest.clone(), BlobEntry { offset: 0, size: b.size });
        }
        out.push(ArchiveImage {
            source: img.source.clone(),
            digest: img.digest.clone(),
            media_type: img.media_type.clone(),
            platforms: img.platforms.clone(),
            size: img.size(),
            manifests: img.manifests.iter().map(|m| m.digest.clone()).collect(),
            blobs: img.blobs.iter().map(|b| b.digest.clone()).collect(),
            helm_chart: img.helm_chart(),
            omitted: img.selection.as_ref().map(|s| s.omitted.clone()).unwrap_or_default(),
            artifact: img.artifact.clone(),
            named_by: "the command line",
        });
    }
    Ok(BundleContents {
        images: out,
        manifests,
        blobs,
        pieces: Default::default(),
        metadata: Some(metadata),
        file_digest: Digest::of(b""),
        file_len: 0,
    })
}

/// Blobs read from the source registries while they are pushed.
pub struct RegistryOrigin {
    /// Each blob's source: a client and the repository of an image that has it.
    from: BTreeMap<Digest, (Arc<RegistryClient>, String)>,
    /// Blobs made here (the chart artifact's config and package), small.
    local: HashMap<Digest, Bytes>,
}

impl RegistryOrigin {
    pub fn new(
        registries: &Registries,
        images: &[ResolvedImage],
        local: HashMap<Digest, Bytes>,
    ) -> Result<RegistryOrigin, PoolError> {
        let mut from = BTreeMap::new();
        for img in images.iter().filter(|i| !i.made_here()) {
            let client = registries.client(img.source.registry(), Role::Source)?;
            for b in &img.blobs {
                from.entry(b.digest.clone()).or_insert_with(|| (client.clone(), img.source.repository().to_string()));
            }
        }
        Ok(RegistryOrigin { from, local })
    }
}

impl BlobOrigin for RegistryOrigin {
    fn parallel(&self) -> bool {
        true
    }

    fn source(&self, digest: &Digest, size: u64, progress: &Transfer) -> Box<dyn BlobSource + Send> {
        if let Some(bytes) = self.local.get(digest) {
            return Box::new(LocalBlob { bytes: bytes.clone(), progress: progress.clone() });
        }
        let (client, repository) = self.from.get(digest).cloned().expect("every pushed blob has a source");
        Box::new(StreamedBlob {
            client,
            repository,
            digest: digest.clone(),
            size,
            progress: progress.clone(),
            counted: Arc::new(AtomicI64::new(0)),
            restarts: Arc::default(),
            failed: Arc::default(),
        })
    }
}

struct LocalBlob {
    bytes: Bytes,
    progress: Transfer,
}

impl BlobSource for LocalBlob {
    fn open(&self) -> std::io::Result<reqwest::Body> {
        self.progress.add(self.bytes.len() as i64);
        Ok(reqwest::Body::from(self.bytes.clone()))
    }
}

/// One blob, downloaded anew for each upload attempt and fed to the upload as it arrives.
struct StreamedBlob {
    client: Arc<RegistryClient>,
    repository: String,
    digest: Digest,
    size: u64,
    progress: Transfer,
    /// Bytes this source has reported to `progress`, taken back when an attempt restarts.
    counted: Arc<AtomicI64>,
    /// Downloads that had to start over (wrong bytes, or a server that ignored Range).
    restarts: Arc<AtomicU32>,
    /// Why the download failed in the last attempt, when it was the source that failed.
    failed: Arc<Mutex<Option<String>>>,
}

/// Like the download's own rule: bytes that are wrong twice are the source's fault, not the line's.
const MAX_RESTARTS: u32 = 2;

impl BlobSource for StreamedBlob {
    fn open(&self) -> std::io::Result<reqwest::Body> {
        let previous = self.counted.swap(0, Ordering::Relaxed);
        self.progress.add(-previous);
        *self.failed.lock().expect("failure slot") = None;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_CHUNKS);
        let (client, repository, digest, size) =
            (self.client.clone(), self.repository.clone(), self.digest.clone(), self.size);
        let mut sink = ChannelSink {
            tx: tx.clone(),
            held: None,
            gathering: Vec::with_capacity(CHUNK),
            progress: self.progress.clone(),
            counted: self.counted.clone(),
            restarted: false,
        };
        let (failed, restarts) = (self.failed.clone(), self.restarts.clone());
        tokio::spawn(async move {
            let result =
                client.download_blob(&repository, &digest, size, &mut sink, DigestWriter::new(), &|_| {}).await;
            // A closed channel means the upload stopped first: that failure is the upload's to report. A sink
            // that had to start over fails this attempt only, the first time: the upload's retry downloads again.
            let Err(e) = result else { return };
            if tx.is_closed() {
                return;
            }
            let message = if sink.restarted {
                if restarts.fetch_add(1, Ordering::Relaxed) + 1 < MAX_RESTARTS {
                    return;
                }
                format!(
                    "blob {digest} from {}/{repository} did not match its digest twice (or the registry ignored a Range request); the upload was stopped before its last byte, so the destination kept nothing of it",
                    client.name()
                )
            } else {
                format!("{} (from {}/{repository})", crate::support::error_text::chain_line(&e), client.name())
            };
            *failed.lock().expect("failure slot") = Some(message.clone());
            let _ = tx.send(Err(std::io::Error::other(message))).await;
        });
        let stream = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(reqwest::Body::wrap_stream(stream))
    }

    fn failure(&self) -> Option<std::io::Error> {
        self.failed.lock().expect("failure slot").as_ref().map(|m| std::io::Error::other(m.clone()))
    }
}

/// Passes downloaded bytes on in `CHUNK`s, one chunk behind: the last chunk and whatever follows it go only once
/// the download has matched the digest (`finish`), so a blob with wrong bytes never reaches the destination whole.
struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    /// A full chunk, held back until the next one is full (or the download is proven).
    held: Option<Bytes>,
    /// The chunk being gathered.
    gathering: Vec<u8>,
    progress: Transfer,
    counted: Arc<AtomicI64>,
    restarted: bool,
}

impl ChannelSink {
    async fn send(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let n = chunk.len() as i64;
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))?;
        self.progress.add(n);
        self.counted.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

impl BlobSink for ChannelSink {
    async fn append(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let take = (CHUNK - self.gathering.len()).min(bytes.len());
            self.gathering.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.gathering.len() == CHUNK {
                let full = Bytes::from(std::mem::replace(&mut self.gathering, Vec::with_capacity(CHUNK)));
                if let Some(previous) = self.held.replace(full) {
                    self.send(previous).await?;
                }
            }
        }
        Ok(())
    }

    /// Bytes already sent cannot be taken back: this upload attempt fails, and the next one starts over.
    async fn restart(&mut self) -> std::io::Result<()> {
        self.restarted = true;
        let message =
            "the download started over (damaged bytes or a server that ignored Range); the upload starts over too";
        let _ = self.tx.send(Err(std::io::Error::new(std::io::ErrorKind::Interrupted, message))).await;
        Err(std::io::Error::new(std::io::ErrorKind::Interrupted, message))
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        if let Some(last) = self.held.take() {
            self.send(last).await?;
        }
        if !self.gathering.is_empty() {
            let rest = Bytes::from(std::mem::take(&mut self.gathering));
            self.send(rest).await?;
        }
        Ok(())
    }
}
