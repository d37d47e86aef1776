//! The volumes an import was given, as one archive: which images they complete, where each blob's bytes are
//! (one volume, or pieces on several), and which volumes are missing and what they would have brought.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::VolumeError;
use crate::archive::{ArchiveFile, BlobEntry, BundleContents};
use crate::import::push::{ArchiveBlob, BlobOrigin, NotInArchive};
use crate::oci::digest::Digest;
use crate::registry::BlobSource;
use crate::support::printer::Transfer;

/// One volume, verified.
pub struct GivenVolume {
    pub path: PathBuf,
    pub archive: Arc<ArchiveFile>,
    pub contents: BundleContents,
}

/// A volume of the set that was not given.
#[derive(Debug, Clone)]
pub struct MissingVolume {
    pub number: u32,
    /// The file name it should have, from the names of the given ones.
    pub file: Option<String>,
    /// The images that cannot be imported without it.
    pub images: Vec<String>,
}

/// The given volumes, put together.
pub struct Assembled {
    /// The images every blob of which the given volumes hold (or a delta leaves to its base), ready to push.
    pub contents: BundleContents,
    pub origin: VolumeOrigin,
    pub set: Digest,
    pub count: u32,
    pub given: Vec<u32>,
    pub missing: Vec<MissingVolume>,
    /// Images that cannot be imported yet (their sources).
    pub incomplete: Vec<String>,
}

/// Put verified volumes together. They must all be volumes of one set; the same volume twice is allowed when it
/// is the same file content.
pub fn assemble(mut given: Vec<GivenVolume>) -> Result<Assembled, VolumeError> {
    given.sort_by_key(|g| g.contents.volume().map_or(0, |v| v.number));
    let mut kept: Vec<GivenVolume> = Vec::new();
    for g in given {
        let Some(record) = g.contents.volume() else { return Err(VolumeError::NotAVolume { path: g.path }) };
        if let Some(first) = kept.first() {
            let first_record = first.contents.volume().expect("kept volumes are volumes");
            if first_record.set != record.set {
                return Err(VolumeError::MixedSets {
                    first: first.path.clone(),
                    second: g.path,
                    first_set: first_record.set.clone(),
                    second_set: record.set.clone(),
                });
            }
        }
        if let Some(same) = kept.iter().find(|k| k.contents.volume().is_some_and(|v| v.number == record.number)) {
            if same.contents.file_digest != g.contents.file_digest {
                return Err(VolumeError::TwoOfOne { first: same.path.clone(), second: g.path, number: record.number });
            }
            continue;
        }
        kept.push(g);
    }
    let first = kept.first().expect("import has at least one input");
    let record = first.contents.volume().expect("a volume").clone();
    let meta = first.contents.metadata.clone().expect("a volume has bundle.json");
    let given: Vec<u32> = kept.iter().filter_map(|g| g.contents.volume().map(|v| v.number)).collect();

    // Where each blob's bytes are among the given volumes.
    let mut segments: BTreeMap<Digest, Vec<(Arc<ArchiveFile>, BlobEntry)>> = BTreeMap::new();
    let mut pieces: BTreeMap<&Digest, (Arc<ArchiveFile>, BlobEntry)> = BTreeMap::new();
    for g in &kept {
        for (d, e) in &g.contents.blobs {
            segments.entry(d.clone()).or_insert_with(|| vec![(g.archive.clone(), *e)]);
        }
        for (d, e) in &g.contents.pieces {
            pieces.entry(d).or_insert_with(|| (g.archive.clone(), *e));
        }
    }
    for p in record.placement.iter().filter(|p| !p.pieces.is_empty()) {
        let found: Option<Vec<_>> = p.pieces.iter().map(|x| pieces.get(&x.digest).cloned()).collect();
        if let Some(found) = found {
            segments.insert(p.digest.clone(), found);
        }
    }
    let absent: BTreeSet<&Digest> = meta.delta.iter().flat_map(|d| &d.absent).map(|b| &b.digest).collect();

    // An image is complete when every blob it needs is here (or left to a delta's base); an artifact also needs
    // the image it is attached to.
    let images = &first.contents.images;
    let mut complete: Vec<bool> =
        images.iter().map(|i| i.blobs.iter().all(|d| segments.contains_key(d) || absent.contains(d))).collect();
    for _ in 0..images.len() {
        let mut changed = false;
        for (i, img) in images.iter().enumerate() {
            let Some(artifact) = &img.artifact else { continue };
            let subject_done = images
                .iter()
                .zip(&complete)
                .filter(|(other, _)| other.source.to_string() == artifact.image)
                .all(|(_, done)| *done);
            if complete[i] && !subject_done {
                complete[i] = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut missing: BTreeMap<u32, Vec<String>> =
        (1..=record.count).filter(|n| !given.contains(n)).map(|n| (n, Vec::new())).collect();
    let mut incomplete = Vec::new();
    for (i, img) in images.iter().enumerate().filter(|(i, _)| !complete[*i]) {
        incomplete.push(img.source.to_string());
        let needs = record.image_volumes.get(i).cloned().unwrap_or_default();
        for n in needs.iter().filter(|n| !given.contains(n)) {
            missing.entry(*n).or_default().push(img.source.to_string());
        }
    }
    let missing = missing
        .into_iter()
        .map(|(number, images)| MissingVolume {
            number,
            file: super::sibling_name(&first.path, number, record.count),
            images,
        })
        .collect();

    let mut contents = first.contents.clone();
    let mut meta_kept = meta.clone();
    let keep: Vec<usize> = (0..images.len()).filter(|i| complete[*i]).collect();
    contents.images = keep.iter().map(|i| images[*i].clone()).collect();
    meta_kept.images = keep.iter().filter_map(|i| meta.images.get(*i).cloned()).collect();
    contents.metadata = Some(meta_kept);
    // Sizes for the plan and the progress bar; the bytes are reached through the origin.
    contents.blobs = segments
        .iter()
        .map(|(d, s)| (d.clone(), BlobEntry { offset: 0, size: s.iter().map(|(_, e)| e.size).sum() }))
        .collect();
    contents.pieces = BTreeMap::new();
    Ok(Assembled {
        contents,
        origin: VolumeOrigin { segments },
        set: record.set,
        count: record.count,
        given,
        missing,
        incomplete,
    })
}

/// Blobs read from the volumes that hold them, a spanning blob from its pieces in order.
pub struct VolumeOrigin {
    segments: BTreeMap<Digest, Vec<(Arc<ArchiveFile>, BlobEntry)>>,
}

impl VolumeOrigin {
    /// Where blob `digest` is: the volumes' entries whose concatenation is the blob.
    pub fn segments(&self, digest: &Digest) -> Option<Vec<(Arc<ArchiveFile>, BlobEntry)>> {
        self.segments.get(digest).cloned()
    }
}

impl BlobOrigin for VolumeOrigin {
    fn parallel(&self) -> bool {
        true
    }

    fn source(&self, digest: &Digest, _size: u64, progress: &Transfer) -> Box<dyn BlobSource + Send> {
        match self.segments.get(digest) {
            Some(s) => Box::new(ArchiveBlob::new(s.clone(), digest, progress)),
            None => Box::new(NotInArchive(digest.clone())),
        }
    }
}
