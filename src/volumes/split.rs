//! Write the volumes of an archive (`bundle split`, and `export --volume-size` once the whole archive is
//! written). Every byte copied is hashed against the digest it must have, so a volume never holds a blob the
//! archive did not prove; the volumes appear under their names only when all of them are written.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::VolumeError;
use super::plan::{self, PiecePlan, VolumePlan};
use crate::archive::checksum::{sidecar_line, sidecar_path};
use crate::archive::{ArchiveFile, ArchiveWriter, BlobEntry, BundleContents};
use crate::oci::digest::{Digest, DigestWriter, HashingRead};
use crate::oci::layout::{
    BLOBS_DIR, BUNDLE_FILE, BundleMetadata, INDEX_FILE, LayoutIndex, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, Piece,
    Placement, SHA256_DIR, VolumeRecord,
};

/// One split, settled.
pub struct SplitJob<'a> {
    pub archive: Arc<ArchiveFile>,
    /// The archive's contents, proven (or planned from its front: every byte copied is hashed anyway).
    pub contents: &'a BundleContents,
    /// The sha256 of the archive file: the set's name.
    pub set: Digest,
    /// Most bytes a volume may have.
    pub size: u64,
    /// `DIR/NAME.tar.zst`: volumes are `DIR/NAME.partNNN.tar.zst`.
    pub output: PathBuf,
    pub replace: bool,
    pub threads: usize,
    /// Parity volumes to write (0: none).
    pub parity: u32,
    /// A directory on the output's filesystem where volumes are written before they take their names; the
    /// caller owns it, so an interrupted split leaves nothing behind.
    pub staging: PathBuf,
}

/// A volume written.
pub struct WrittenVolume {
    pub path: PathBuf,
    /// Where it is until `publish`.
    staged: PathBuf,
    pub digest: Digest,
    pub len: u64,
    pub blobs: usize,
    pub pieces: usize,
    /// Bytes of blobs and pieces it holds.
    pub bytes: u64,
    /// A parity volume (`parity::`), not an archive.
    pub parity: bool,
}

/// Cut `job.archive` into volumes; `on_bytes` hears of every blob byte copied.
pub fn split(job: SplitJob<'_>, on_bytes: &(dyn Fn(u64) + Sync)) -> Result<Vec<WrittenVolume>, VolumeError> {
    let path = job.archive.path().to_path_buf();
    let meta = job.contents.metadata.as_ref().ok_or_else(|| VolumeError::Foreign { path: path.clone() })?;
    if let Some(v) = &meta.volume {
        return Err(VolumeError::AlreadyVolume { path, number: v.number });
    }
    // Every volume leaves room for a parity volume's header (and an even length), whether or not parity is asked
    // for, so the volumes of an archive are the same either way.
    let planned = job.size.saturating_sub(super::parity::HEADER) & !1;
    let (volumes, records) = settle(job.contents, meta, &job.set, planned).map_err(|e| match e {
        VolumeError::TooSmall { fixed, .. } => VolumeError::TooSmall { size: job.size, fixed },
        other => other,
    })?;
    let count = records.len() as u32;
    let names: Vec<PathBuf> = (1..=count).map(|n| super::volume_path(&job.output, n, count)).collect();
    if !job.replace
        && let Some(taken) = names.iter().find(|p| p.exists())
    {
        return Err(VolumeError::Exists { path: taken.clone() });
    }
    let records = fill_piece_digests(&job, records, &volumes)?;

    let index = LayoutIndex::new(&meta.images).to_json();
    let mut manifests: Vec<(&Digest, &[u8])> =
        job.contents.manifests.iter().map(|(d, m)| (d, m.bytes.as_ref())).collect();
    manifests.sort();
    let mut written = Vec::new();
    for ((volume, record), name) in volumes.iter().zip(&records).zip(&names) {
        let mut volume_meta = meta.clone();
        volume_meta.volume = Some(record.clone());
        volume_meta.format_version = volume_meta.required_version();
        let front = Front { index: &index, metadata: volume_meta.to_json(), manifests: &manifests };
        written.push(write_volume(&job, &front, volume, record, name, on_bytes)?);
    }
    if job.parity > 0 {
        let outputs: Vec<PathBuf> =
            (1..=job.parity).map(|i| super::parity::parity_path(&job.output, i, job.parity)).collect();
        let staged: Vec<PathBuf> =
            outputs.iter().map(|o| job.staging.join(o.file_name().unwrap_or_default())).collect();
        let volumes: Vec<PathBuf> = written.iter().map(|v| v.staged.clone()).collect();
        for ((digest, len), (out, staged)) in
            super::parity::write(&job.set, &volumes, &staged)?.into_iter().zip(outputs.into_iter().zip(staged))
        {
            write_sidecar(&staged, &out, &digest)?;
            written.push(WrittenVolume { path: out, staged, digest, len, blobs: 0, pieces: 0, bytes: 0, parity: true });
        }
    }
    Ok(written)
}

/// `staged`'s sidecar, naming the file as `name`.
fn write_sidecar(staged: &Path, name: &Path, digest: &Digest) -> Result<(), VolumeError> {
    std::fs::File::create(sidecar_path(staged))
        .and_then(|mut side| side.write_all(sidecar_line(name, digest).as_bytes()).and_then(|()| side.sync_all()))
        .map_err(|source| VolumeError::Io { what: "write", path: sidecar_path(name), source })
}

/// What every volume of a set carries before its blobs (bundle.json differs by its volume number).
struct Front<'a> {
    index: &'a [u8],
    metadata: Vec<u8>,
    manifests: &'a [(&'a Digest, &'a [u8])],
}

/// Write one volume and its sidecar into the staging directory.
fn write_volume(
    job: &SplitJob<'_>,
    front: &Front<'_>,
    volume: &VolumePlan,
    record: &VolumeRecord,
    name: &Path,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<WrittenVolume, VolumeError> {
    let failed = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| VolumeError::Io { what, path, source }
    };
    let staged = job.staging.join(name.file_name().unwrap_or_default());
    let file = std::fs::File::create(&staged).map_err(failed("create", &staged))?;
    let mut w = ArchiveWriter::new(file, job.threads);
    (|| {
        w.add_bytes(OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)?;
        w.add_bytes(INDEX_FILE, front.index)?;
        w.add_bytes(BUNDLE_FILE, &front.metadata)?;
        w.add_dir(BLOBS_DIR)?;
        w.add_dir(SHA256_DIR)?;
        for (digest, body) in front.manifests {
            w.add_bytes(&digest.layout_path(), body)?;
        }
        Ok(())
    })()
    .map_err(failed("write", name))?;
    let mut bytes = 0;
    let mut whole: Vec<&Digest> = volume.blobs.iter().collect();
    whole.sort();
    for digest in whole {
        let entry = job.contents.blobs[digest];
        copy(job, &mut w, &digest.layout_path(), digest, entry, on_bytes, name)?;
        bytes += entry.size;
    }
    let mut stored = HashSet::new();
    for piece in &volume.pieces {
        let digest = piece_digest(record, piece);
        // The same bytes twice (two pieces alike) are stored once: a piece is found by its digest.
        if !stored.insert(digest.clone()) {
            continue;
        }
        let at = job.contents.blobs[&piece.blob];
        let entry = BlobEntry { offset: at.offset + piece.offset, size: piece.size };
        copy(job, &mut w, &crate::oci::layout::piece_path(&digest), &digest, entry, on_bytes, name)?;
        bytes += piece.size;
    }
    let done = w.finish().map_err(failed("write", name))?;
    if done.compressed_len > job.size {
        return Err(VolumeError::Overflow { number: record.number, len: done.compressed_len, size: job.size });
    }
    write_sidecar(&staged, name, &done.digest)?;
    Ok(WrittenVolume {
        path: name.to_path_buf(),
        staged,
        digest: done.digest,
        len: done.compressed_len,
        blobs: volume.blobs.len(),
        pieces: volume.pieces.len(),
        bytes,
        parity: false,
    })
}

/// Give every written volume and its sidecar its name; only once all are written, so a failed split leaves
/// no volume under its name. Without `replace`, a name taken meanwhile is an error.
pub fn publish(written: &[WrittenVolume], replace: bool) -> Result<(), VolumeError> {
    for v in written {
        for (from, to) in [(v.staged.clone(), v.path.clone()), (sidecar_path(&v.staged), sidecar_path(&v.path))] {
            if !replace && to.exists() {
                return Err(VolumeError::Exists { path: to });
            }
            std::fs::rename(&from, &to).map_err(|source| VolumeError::Io {
                what: "move the finished volume to",
                path: to,
                source,
            })?;
        }
    }
    Ok(())
}

/// The plan and each volume's record, with bundle.json's own size taken into account: a larger set means a longer
/// placement list, which takes room on every volume, so the plan is made again until the room it assumed holds.
fn settle(
    contents: &BundleContents,
    meta: &BundleMetadata,
    set: &Digest,
    size: u64,
) -> Result<(Vec<VolumePlan>, Vec<VolumeRecord>), VolumeError> {
    // Image by image, each blob once; manifests are on every volume, and a delta's absent blobs on none.
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for img in &contents.images {
        for d in img.blobs.iter().filter(|d| contents.blobs.contains_key(*d) && !contents.manifests.contains_key(*d)) {
            if seen.insert(d.clone()) {
                order.push((d.clone(), contents.blobs[d].size));
            }
        }
    }
    let index_len = LayoutIndex::new(&meta.images).to_json().len() as u64;
    let manifests: u64 = contents.manifests.values().map(|m| plan::entry_len(m.bytes.len() as u64)).sum();
    let carried = |bundle_json: u64| {
        plan::entry_len(OCI_LAYOUT_CONTENT.len() as u64)
            + plan::entry_len(index_len)
            + plan::entry_len(bundle_json)
            + 2 * 512
            + manifests
            + 1024
    };
    let capacity = plan::tar_capacity(size);
    let mut assumed = meta.to_json().len() as u64 + 4096;
    // Each round can only grow `assumed`, and the placement list is bounded by the blobs and volumes: a handful of
    // rounds settles it.
    for _ in 0..16 {
        let fixed = carried(assumed);
        let volumes = plan::plan(&order, capacity, fixed)
            .ok_or(VolumeError::TooSmall { size, fixed: plan::compressed_bound(fixed) })?;
        let records = records(contents, set, &volumes);
        let longest = records
            .iter()
            .map(|r| {
                let mut m = meta.clone();
                m.volume = Some(r.clone());
                m.format_version = m.required_version();
                m.to_json().len() as u64
            })
            .max()
            .unwrap_or(0);
        if longest <= assumed {
            return Ok((volumes, records));
        }
        assumed = longest + longest / 64;
    }
    Err(VolumeError::TooSmall { size, fixed: plan::compressed_bound(carried(assumed)) })
}

/// Each volume's record, pieces named by a placeholder digest until their bytes are hashed.
fn records(contents: &BundleContents, set: &Digest, volumes: &[VolumePlan]) -> Vec<VolumeRecord> {
    let count = volumes.len() as u32;
    let mut placement: BTreeMap<Digest, Placement> = BTreeMap::new();
    for (i, v) in volumes.iter().enumerate() {
        let number = i as u32 + 1;
        for b in &v.blobs {
            placement.insert(b.clone(), Placement { digest: b.clone(), volume: Some(number), pieces: Vec::new() });
        }
        for p in &v.pieces {
            let entry = placement.entry(p.blob.clone()).or_insert_with(|| Placement {
                digest: p.blob.clone(),
                volume: None,
                pieces: vec![],
            });
            entry.pieces.push(Piece { volume: number, digest: Digest::of(b""), size: p.size });
        }
    }
    let mut record = VolumeRecord {
        set: set.clone(),
        number: 0,
        count,
        image_volumes: Vec::new(),
        placement: placement.into_values().collect(),
    };
    record.image_volumes = contents.images.iter().map(|i| record.volumes_of(&i.blobs)).collect();
    (1..=count).map(|number| VolumeRecord { number, ..record.clone() }).collect()
}

/// The digest `record` gives the piece `plan` cut: the one that starts at the same offset of the same blob.
fn piece_digest(record: &VolumeRecord, plan: &PiecePlan) -> Digest {
    let at = record.placement.binary_search_by(|p| p.digest.cmp(&plan.blob)).expect("every cut blob is placed");
    let mut offset = 0;
    for piece in &record.placement[at].pieces {
        if offset == plan.offset {
            return piece.digest.clone();
        }
        offset += piece.size;
    }
    unreachable!("the record lists the pieces the plan cut")
}

/// Read every blob that spans volumes once: check it against its digest, and name each piece by its own.
fn fill_piece_digests(
    job: &SplitJob<'_>,
    mut records: Vec<VolumeRecord>,
    volumes: &[VolumePlan],
) -> Result<Vec<VolumeRecord>, VolumeError> {
    let path = job.archive.path();
    let mut cut: BTreeMap<&Digest, Vec<&PiecePlan>> = BTreeMap::new();
    for p in volumes.iter().flat_map(|v| &v.pieces) {
        cut.entry(&p.blob).or_default().push(p);
    }
    let mut digests: BTreeMap<&Digest, Vec<Digest>> = BTreeMap::new();
    for (blob, pieces) in &cut {
        let entry = job.contents.blobs[*blob];
        let mut reader = job.archive.open_blob(blob, entry).map_err(|source| VolumeError::Io {
            what: "read",
            path: path.into(),
            source,
        })?;
        let mut whole = DigestWriter::new();
        let mut named = Vec::new();
        for p in pieces {
            let mut piece = DigestWriter::new();
            let mut tee = TeeWriter(&mut whole, &mut piece);
            let n = std::io::copy(&mut (&mut reader).take(p.size), &mut tee).map_err(|source| VolumeError::Io {
                what: "read",
                path: path.into(),
                source,
            })?;
            if n != p.size {
                return Err(VolumeError::Changed { path: path.into(), digest: (*blob).clone() });
            }
            named.push(piece.finish());
        }
        if whole.len() != entry.size || whole.finish() != **blob {
            return Err(VolumeError::Changed { path: path.into(), digest: (*blob).clone() });
        }
        digests.insert(blob, named);
    }
    for record in &mut records {
        for p in &mut record.placement {
            if let Some(named) = digests.get(&p.digest) {
                for (piece, digest) in p.pieces.iter_mut().zip(named) {
                    piece.digest = digest.clone();
                }
            }
        }
    }
    Ok(records)
}

struct TeeWriter<'a>(&'a mut DigestWriter, &'a mut DigestWriter);

impl Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copy `entry`'s bytes into the volume as `entry_path`, hashed on the way: they must be `digest`.
fn copy(
    job: &SplitJob<'_>,
    w: &mut ArchiveWriter,
    entry_path: &str,
    digest: &Digest,
    entry: BlobEntry,
    on_bytes: &(dyn Fn(u64) + Sync),
    volume: &Path,
) -> Result<(), VolumeError> {
    let path = job.archive.path();
    let reader = job.archive.open_blob(digest, entry).map_err(|source| VolumeError::Io {
        what: "read",
        path: path.into(),
        source,
    })?;
    let mut hashing = HashingRead::new(reader, on_bytes);
    w.add_reader(entry_path, entry.size, &mut hashing).map_err(|source| VolumeError::Io {
        what: "write",
        path: volume.into(),
        source,
    })?;
    if !hashing.matches(digest, entry.size) {
        return Err(VolumeError::Changed { path: path.into(), digest: digest.clone() });
    }
    Ok(())
}
