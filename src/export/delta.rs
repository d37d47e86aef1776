//! Delta bundles: `export --since OLD` leaves out every blob OLD holds (or left to its own base), and `import`
//! of a delta first proves the destination has each of those blobs, before anything is pushed.
//!
//! Blobs are compared by digest, never by reference: a tag that moved to a new digest travels (its manifests are
//! always in the delta, they are small), and a layer two releases share travels once. OLD is read from its front
//! only (bundle.json), or is the `bundle inspect --json` output of it, so the old archive need not be at hand.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::archive::ArchiveFile;
use crate::archive::checksum::{file_digest, read_sidecar};
use crate::oci::digest::Digest;
use crate::oci::layout::{BaseRecord, BundleBlob, BundleMetadata, DeltaRecord};
use crate::registry::RegistryError;

/// The archive a delta is made against: what it names, and every blob a destination that imported it holds.
#[derive(Debug, Clone)]
pub struct Base {
    pub record: BaseRecord,
    pub held: BTreeSet<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("cannot read the base archive {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no bundle.json, so what it holds is unknown", path.display())]
    NotBundle { path: PathBuf },
    #[error("{} is not the `bundle inspect --json` output of a bundle archive: {reason}", path.display())]
    Listing { path: PathBuf, reason: String },
    #[error(
        "{destination} lacks {} blobs that this delta leaves to its base {} (sha256 {}, made {}):{}",
        missing.len(), base.file, base.sha256, base.created, examples(missing)
    )]
    // Boxed: the record would otherwise make every `Result` of this module large.
    BaseMissing { destination: String, base: Box<BaseRecord>, missing: Vec<(Digest, String)> },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The first few missing blobs, with an image that needs each.
fn examples(missing: &[(Digest, String)]) -> String {
    let mut text: String = missing.iter().take(5).map(|(d, img)| format!("\n  - {d} (needed by {img})")).collect();
    if missing.len() > 5 {
        text.push_str(&format!("\n  … and {} more", missing.len() - 5));
    }
    text
}

impl crate::support::hint::Hint for DeltaError {
    fn hint(&self) -> Option<String> {
        match self {
            DeltaError::Read { .. } => Some("check the path given to --since".into()),
            DeltaError::NotBundle { .. } | DeltaError::Listing { .. } => Some(
                "--since takes an archive bundle exported (its bundle.json says what it holds), or the output of `bundle inspect --json` of one".into(),
            ),
            DeltaError::BaseMissing { base, .. } => Some(format!(
                "import the base archive {} into this destination first, then this delta (nothing was pushed)",
                base.file
            )),
            DeltaError::Registry(e) => e.hint(),
        }
    }
}

/// What `bundle inspect --json` prints, as far as a base needs it.
#[derive(serde::Deserialize)]
struct Listing {
    archive: String,
    format: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    created: Option<String>,
    images: Vec<ListedImage>,
    #[serde(default)]
    blobs: Option<Vec<BundleBlob>>,
    #[serde(default)]
    delta: Option<DeltaRecord>,
    #[serde(default)]
    volume: Option<crate::oci::layout::VolumeRecord>,
}

#[derive(serde::Deserialize)]
struct ListedImage {
    source: String,
}

impl Base {
    /// Read the base from an archive (its bundle.json and sidecar) or from `bundle inspect --json` output.
    pub fn load(path: &Path) -> Result<Base, DeltaError> {
        let read = |source| DeltaError::Read { path: path.to_path_buf(), source };
        let mut start = [0u8; 1];
        let n = crate::archive::reader::read_up_to(&mut std::fs::File::open(path).map_err(read)?, &mut start)
            .map_err(read)?;
        if n == 1 && start[0] == b'{' {
            return Base::from_listing(path);
        }
        let archive = ArchiveFile::open(path).map_err(|e| read(std::io::Error::other(e.to_string())))?;
        let meta = archive
            .read_metadata()
            .map_err(|e| read(std::io::Error::other(e.to_string())))?
            .ok_or_else(|| DeltaError::NotBundle { path: path.to_path_buf() })?;
        let created = meta.created.clone().unwrap_or_else(|| modified(path));
        if let Some(v) = &meta.volume {
            let (file, sha256) = volume_set(path, v);
            return Ok(Base::from_metadata(&meta, file, sha256, created));
        }
        let sha256 = match read_sidecar(path).ok().flatten() {
            Some(d) => d,
            // No sidecar: the file itself is hashed, once.
            None => file_digest(path, &|_| {}).map_err(read)?,
        };
        Ok(Base::from_metadata(&meta, file_name(path), sha256.hex().to_string(), created))
    }

    fn from_metadata(meta: &BundleMetadata, file: String, sha256: String, created: String) -> Base {
        let mut held: BTreeSet<Digest> = meta.blobs.iter().map(|b| b.digest.clone()).collect();
        held.extend(meta.delta.iter().flat_map(|d| d.absent.iter().map(|b| b.digest.clone())));
        let images = meta.images.iter().map(|i| i.source.clone()).collect();
        Base { record: BaseRecord { file, sha256, created, images }, held }
    }

    fn from_listing(path: &Path) -> Result<Base, DeltaError> {
        let bad = |reason: String| DeltaError::Listing { path: path.to_path_buf(), reason };
        let text = std::fs::read(path).map_err(|source| DeltaError::Read { path: path.to_path_buf(), source })?;
        let listing: Listing = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if listing.format != "bundle" {
            return Err(bad(format!("it lists a `{}` archive, not one bundle exported", listing.format)));
        }
        let blobs = listing.blobs.ok_or_else(|| bad("it has no `blobs` (an older bundle wrote it)".into()))?;
        let no_sha256 = || bad("it has no `sha256` (the archive had no sidecar)".into());
        let mut held: BTreeSet<Digest> = blobs.iter().map(|b| b.digest.clone()).collect();
        held.extend(listing.delta.iter().flat_map(|d| d.absent.iter().map(|b| b.digest.clone())));
        let file = Path::new(&listing.archive).file_name().map(|n| n.to_string_lossy().into_owned());
        let (file, sha256) = match &listing.volume {
            Some(v) => volume_set(Path::new(&listing.archive), v),
            None => (file.unwrap_or(listing.archive), listing.sha256.ok_or_else(no_sha256)?),
        };
        let record = BaseRecord {
            file,
            sha256,
            created: listing.created.unwrap_or_else(|| modified(path)),
            images: listing.images.into_iter().map(|i| i.source).collect(),
        };
        Ok(Base { record, held })
    }

    /// Make `meta` a delta against this base: every blob the base holds leaves the archive (manifests stay, so the
    /// graphs and tags are all here). Returns the digests left out.
    pub fn apply(&self, meta: &mut BundleMetadata, manifests: &BTreeSet<Digest>) -> BTreeSet<Digest> {
        let (absent, kept): (Vec<BundleBlob>, Vec<BundleBlob>) =
            meta.blobs.drain(..).partition(|b| !manifests.contains(&b.digest) && self.held.contains(&b.digest));
        meta.blobs = kept;
        let left_out = absent.iter().map(|b| b.digest.clone()).collect();
        meta.delta = Some(DeltaRecord { base: self.record.clone(), absent });
        meta.format_version = meta.required_version();
        left_out
    }
}

/// A volume stands for its set: named `NAME.part*.tar.zst`, with the sha256 of the archive it was cut from.
fn volume_set(path: &Path, volume: &crate::oci::layout::VolumeRecord) -> (String, String) {
    let name = crate::volumes::sibling_name(path, 0, volume.count)
        .map(|n| n.replacen(".part000.", ".part*.", 1).replacen(".part0000.", ".part*.", 1))
        .unwrap_or_else(|| file_name(path));
    (name, volume.set.hex().to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn modified(path: &Path) -> String {
    let when = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
    crate::archive::spdx::rfc3339(when)
}
