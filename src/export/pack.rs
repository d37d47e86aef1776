//! Writes resolved images and their staged blobs as the archive (docs/archive-format.md).
//!
//! Entry order is fixed: `oci-layout`, `index.json`, `bundle.json`, the two directories, every manifest
//! (sorted by digest), then every other blob (sorted by digest). Metadata first lets a streaming reader plan
//! before the large blobs pass; sorting makes the bytes depend only on the content.

use std::collections::BTreeMap;
use std::io::{self, Read};

use crate::archive::writer::{ArchiveWriter, WrittenArchive};
use crate::export::blob_store::{BlobStore, Rewrite};
use crate::export::resolve::ResolvedImage;
use crate::oci::digest::Digest;
use crate::oci::layout::{
    BLOBS_DIR, BUNDLE_FILE, BundleBlob, BundleImage, BundleMetadata, FORMAT_VERSION, INDEX_FILE, LayoutIndex,
    OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, SHA256_DIR, ToolInfo,
};

/// `bundle.json` for `images`; `created` is set only from SOURCE_DATE_EPOCH. One chart and no files is the
/// single-chart form every release reads (`chart`, version 1); several charts or any file make a suite.
pub fn metadata(
    images: &[ResolvedImage],
    created: Option<String>,
    mut charts: Vec<crate::oci::layout::ChartRecord>,
    files: Vec<crate::oci::layout::FileRecord>,
) -> BundleMetadata {
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for img in images {
        for m in &img.manifests {
            blobs.insert(m.digest.clone(), m.bytes.len() as u64);
        }
        for b in &img.blobs {
            blobs.insert(b.digest.clone(), b.size);
        }
    }
    let chart = if charts.len() == 1 && files.is_empty() { charts.pop() } else { None };
    let mut meta = BundleMetadata {
        format_version: FORMAT_VERSION,
        tool: ToolInfo { name: "bundle".into(), version: env!("CARGO_PKG_VERSION").into() },
        created,
        images: images
            .iter()
            .map(|img| BundleImage {
                source: img.source.to_string(),
                digest: img.digest.clone(),
                media_type: img.media_type.clone(),
                manifest_size: img.manifest_size,
                platforms: img.platforms.clone(),
                size: img.size(),
                helm_chart: img.helm_chart(),
                platform_selection: img.selection.clone(),
                artifact: img.artifact.clone(),
            })
            .collect(),
        blobs: blobs.into_iter().map(|(digest, size)| BundleBlob { digest, size }).collect(),
        chart,
        charts,
        files,
        delta: None,
        volume: None,
        signatures: Vec::new(),
    };
    meta.format_version = meta.required_version();
    meta
}

/// What writing the archive came to.
pub enum Packed {
    Written(WrittenArchive),
    /// The file holds bytes it must not keep; write it again once the reason is dealt with.
    Again(Rewrite),
}

/// Write the archive into `file`, following the downloads: a blob is read from the store while it is still
/// being written. Blobs are verified by their download (or, from the cache, before use); one that arrived
/// unverified is hashed on its way in, so a damaged cache can never produce an archive that lies. If a
/// download starts over after part of it was written, or a cached blob is damaged, the result is
/// `Packed::Again` and the caller writes the archive again once the downloads are done.
pub fn write(
    file: std::fs::File,
    images: &[ResolvedImage],
    meta: &BundleMetadata,
    store: &BlobStore,
    threads: usize,
    on_bytes: &(dyn Fn(u64) + Sync),
    arrivals: &crate::export::blob_store::Arrivals,
) -> io::Result<Packed> {
    let written = (|| {
        let mut w = ArchiveWriter::new(file, threads);
        w.add_bytes(OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)?;
        w.add_bytes(INDEX_FILE, &LayoutIndex::new(&meta.images).to_json())?;
        w.add_bytes(BUNDLE_FILE, &meta.to_json())?;
        w.add_dir(BLOBS_DIR)?;
        w.add_dir(SHA256_DIR)?;

        let mut manifests = BTreeMap::new();
        for img in images {
            for m in &img.manifests {
                manifests.insert(m.digest.clone(), m.bytes.clone());
            }
        }
        for (digest, bytes) in &manifests {
            w.add_bytes(&digest.layout_path(), bytes)?;
            on_bytes(bytes.len() as u64);
        }
        for blob in meta.blobs.iter().filter(|b| !manifests.contains_key(&b.digest)) {
            // Follows the download while it runs; hashes the blob itself if it was not verified on arrival.
            let follower = arrivals.follow(&blob.digest, blob.size, store.path(&blob.digest));
            w.add_reader(&blob.digest.layout_path(), blob.size, CountingReader { inner: follower, on_bytes })?;
        }
        w.finish()
    })();
    match written {
        Ok(written) => Ok(Packed::Written(written)),
        // A follower's read failed for a reason it recorded: that reason, typed, decides.
        Err(e) => arrivals.take_rewrite().map(Packed::Again).ok_or(e),
    }
}

struct CountingReader<'a, R> {
    inner: R,
    on_bytes: &'a (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}
