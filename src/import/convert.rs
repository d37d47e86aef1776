//! From a proven `docker save` archive (`archive::docker_save`) to what import pushes: one Docker schema 2 manifest per image, the config
//! byte for byte (so the image ID is unchanged), and each uncompressed layer tar as gzip.
//!
//! The gzip is deterministic (fixed level, no file name, mtime 0, one compressor version pinned by Cargo.lock),
//! so the same archive converts to the same digests every time and a re-import finds everything present.
//! Nothing is staged: the conversion compresses each layer once to learn its digest and size, and the push
//! compresses it again as it uploads, checking that the bytes come out the same.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::archive::contents::StoredManifest;
use crate::archive::docker_save::{DOCKER_CONFIG, DOCKER_LAYER_GZIP, DockerSave, NAMED_BY, SavedFile, gzip};
use crate::archive::{ArchiveFile, ArchiveImage, BlobEntry, BundleContents};
use crate::import::push::{ArchiveOrigin, Attempts, BlobOrigin, ChunkSender};
use crate::oci::digest::{Digest, DigestWriter, HashingRead};
use crate::oci::manifest::{self, DOCKER_MANIFEST};
use crate::registry::BlobSource;
use crate::support::printer::Transfer;

/// gzip level 6, the level `docker push` and `gzip` use: layers come out the size users know.
const GZIP_LEVEL: u32 = 6;
/// Chunks handed to the upload (and held back: the last one waits for the digest check).
const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read the layer {path} again to compress it")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl crate::support::hint::Hint for ConvertError {
    fn hint(&self) -> Option<String> {
        Some("the archive was verified a moment ago: check that it is not being changed or removed, and that the disk reads without errors".into())
    }
}

/// The images of a docker save archive as an import pushes them, and where each blob's bytes come from.
pub struct Converted {
    pub contents: BundleContents,
    pub origin: DockerSaveOrigin,
}

/// Compress every distinct uncompressed layer (each on `threads` threads) and build the manifests.
pub fn convert(
    archive: Arc<ArchiveFile>,
    saved: &DockerSave,
    threads: usize,
    progress: &Transfer,
) -> Result<Converted, ConvertError> {
    let gzipped = compress_all(&archive, saved.plain_layers(), threads, progress)?;

    let mut stored: BTreeMap<Digest, BlobEntry> = BTreeMap::new();
    let mut to_gzip: HashMap<Digest, GzipLayer> = HashMap::new();
    let mut blobs: BTreeMap<Digest, BlobEntry> = BTreeMap::new();
    let mut manifests = HashMap::new();
    let mut images = Vec::new();
    for img in &saved.images {
        stored.insert(img.config.digest.clone(), img.config.entry);
        blobs.insert(img.config.digest.clone(), img.config.entry);
        let mut layers = Vec::new();
        for l in &img.layers {
            let (digest, size) = if l.gzip {
                stored.insert(l.file.digest.clone(), l.file.entry);
                (l.file.digest.clone(), l.file.entry.size)
            } else {
                let (digest, size) = gzipped[&l.file.digest].clone();
                to_gzip.insert(digest.clone(), GzipLayer { raw: l.file.clone(), size });
                (digest, size)
            };
            blobs.insert(digest.clone(), BlobEntry { offset: l.file.entry.offset, size });
            layers.push(Descriptor { media_type: DOCKER_LAYER_GZIP, size, digest });
        }
        let bytes = schema2(&img.config, layers);
        let digest = Digest::of(&bytes);
        let links = manifest::parse(&digest, Some(DOCKER_MANIFEST), &bytes).expect("the manifest written here parses");
        let mut image_blobs: Vec<Digest> = Vec::new();
        for b in &links.blobs {
            if !image_blobs.contains(&b.digest) {
                image_blobs.push(b.digest.clone());
            }
        }
        let size = bytes.len() as u64 + image_blobs.iter().map(|d| blobs[d].size).sum::<u64>();
        for name in &img.names {
            images.push(ArchiveImage {
                source: name.clone(),
                digest: digest.clone(),
                media_type: DOCKER_MANIFEST.into(),
                platforms: vec![img.platform.clone()].into_iter().filter(|p| !p.is_empty()).collect(),
                size,
                manifests: vec![digest.clone()],
                blobs: image_blobs.clone(),
                helm_chart: false,
                omitted: Vec::new(),
                artifact: None,
                named_by: NAMED_BY,
            });
        }
        let bytes = Bytes::from(bytes);
        manifests.insert(digest, StoredManifest { media_type: DOCKER_MANIFEST.into(), bytes, links });
    }
    let contents = BundleContents {
        images,
        manifests,
        blobs,
        pieces: BTreeMap::new(),
        metadata: None,
        file_digest: saved.file_digest.clone(),
        file_len: saved.file_len,
    };
    Ok(Converted { contents, origin: DockerSaveOrigin { archive, threads, stored, to_gzip } })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    size: u64,
    digest: Digest,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema2 {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// The manifest's bytes: compact JSON with fields in a fixed order, so the same image always gets the same
/// digest.
fn schema2(config: &SavedFile, layers: Vec<Descriptor>) -> Vec<u8> {
    let m = Schema2 {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: Descriptor { media_type: DOCKER_CONFIG, size: config.entry.size, digest: config.digest.clone() },
        layers,
    };
    serde_json::to_vec(&m).expect("a manifest serialises")
}

/// Each layer's gzip digest and size, by the digest of its tar. One layer at a time, each on `threads` threads.
fn compress_all(
    archive: &ArchiveFile,
    layers: Vec<&SavedFile>,
    threads: usize,
    progress: &Transfer,
) -> Result<HashMap<Digest, (Digest, u64)>, ConvertError> {
    let mut results = HashMap::new();
    for layer in layers {
        let mut out = DigestWriter::new();
        gzip_layer(archive, layer, &mut out, threads, Some(progress))
            .map_err(|source| ConvertError::Read { path: layer.path.clone(), source })?;
        let size = out.len();
        results.insert(layer.digest.clone(), (out.finish(), size));
        progress.item_done();
    }
    Ok(results)
}

/// Compress the layer tar `raw` into `out`, checking on the way that the tar is still the one verified.
fn gzip_layer(
    archive: &ArchiveFile,
    raw: &SavedFile,
    out: &mut dyn Write,
    threads: usize,
    progress: Option<&Transfer>,
) -> io::Result<()> {
    let count = |n: u64| {
        if let Some(p) = progress {
            p.add(n as i64);
        }
    };
    let mut reader = HashingRead::new(archive.open_blob(&raw.digest, raw.entry)?, &count);
    gzip::gzip(&mut reader, out, GZIP_LEVEL, threads)?;
    if !reader.matches(&raw.digest, raw.entry.size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} changed since it was verified: it no longer matches {}", raw.path, raw.digest),
        ));
    }
    Ok(())
}

/// A layer pushed as the gzip of a tar in the archive.
#[derive(Debug, Clone)]
struct GzipLayer {
    raw: SavedFile,
    size: u64,
}

/// The bytes of a converted image: configs and gzip layers straight from the archive, the other layers
/// compressed again as they upload.
pub struct DockerSaveOrigin {
    archive: Arc<ArchiveFile>,
    /// Threads each layer is compressed on.
    threads: usize,
    stored: BTreeMap<Digest, BlobEntry>,
    to_gzip: HashMap<Digest, GzipLayer>,
}

impl BlobOrigin for DockerSaveOrigin {
    fn parallel(&self) -> bool {
        self.archive.is_random_access()
    }

    fn source(&self, digest: &Digest, size: u64, progress: &Transfer) -> Box<dyn BlobSource + Send> {
        match self.to_gzip.get(digest) {
            None => ArchiveOrigin { archive: self.archive.clone(), blobs: &self.stored }.source(digest, size, progress),
            Some(layer) => Box::new(GzipSource {
                archive: self.archive.clone(),
                layer: layer.clone(),
                digest: digest.clone(),
                threads: self.threads,
                attempts: Attempts::new(progress),
            }),
        }
    }
}

/// One upload's body: the layer compressed on a thread of its own, in chunks through a bounded channel; the
/// last chunk goes only once the whole output matched the digest the conversion found.
struct GzipSource {
    archive: Arc<ArchiveFile>,
    threads: usize,
    layer: GzipLayer,
    digest: Digest,
    attempts: Attempts,
}

impl BlobSource for GzipSource {
    fn open(&self) -> io::Result<reqwest::Body> {
        let (archive, layer, digest) = (self.archive.clone(), self.layer.clone(), self.digest.clone());
        let threads = self.threads;
        Ok(self.attempts.body(4, move |tx, attempts| {
            let mut sink = ChunkSink {
                tx,
                pending: Vec::with_capacity(CHUNK * 2),
                hasher: DigestWriter::new(),
                attempts,
                closed: false,
            };
            let run = gzip_layer(&archive, &layer.raw, &mut sink, threads, None)
                .and_then(|()| sink.finish(&digest, layer.size));
            match run {
                Err(_) if sink.closed => Ok(()), // the request was dropped
                other => other,
            }
        }))
    }

    fn failure(&self) -> Option<io::Error> {
        self.attempts.failure()
    }
}

/// Gathers the compressor's output into chunks for the upload, always holding at least one byte back.
struct ChunkSink<'a> {
    tx: &'a ChunkSender,
    pending: Vec<u8>,
    hasher: DigestWriter,
    attempts: &'a Attempts,
    /// The receiving request is gone.
    closed: bool,
}

impl ChunkSink<'_> {
    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let n = chunk.len();
        if self.tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            self.closed = true;
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"));
        }
        self.attempts.count(n);
        Ok(())
    }

    /// Send the held-back bytes once everything written matched `digest` and `size`.
    fn finish(&mut self, digest: &Digest, size: u64) -> io::Result<()> {
        let actual = std::mem::take(&mut self.hasher);
        let len = actual.len();
        let actual = actual.finish();
        if len != size || &actual != digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("compressing the layer again gave {actual} ({len} bytes), not {digest} ({size} bytes)"),
            ));
        }
        let rest = std::mem::take(&mut self.pending);
        if rest.is_empty() { Ok(()) } else { self.send(rest) }
    }
}

impl Write for ChunkSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.pending.extend_from_slice(buf);
        // Strictly more than a chunk: what stays behind is never empty, so the last bytes wait for the check.
        while self.pending.len() > CHUNK {
            let rest = self.pending.split_off(CHUNK);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.send(chunk)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
