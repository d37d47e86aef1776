//! A file as an OCI artifact, the shape `oras push` makes: an image manifest with `artifactType`, the empty
//! config (`{}`), and one layer holding the file, titled with its name (`oras pull` writes it back under that
//! title). Built from the name and the content's digest alone, so the same file always makes the same
//! manifest.

use bytes::Bytes;

use super::StagedFile;
use crate::export::resolve::{Made, ResolvedImage};
use crate::oci::digest::Digest;
use crate::oci::layout::FileRecord;
use crate::oci::manifest::{Descriptor, OCI_MANIFEST};
use crate::oci::reference::ImageRef;

/// What a file's manifest says it is.
pub const ARTIFACT_TYPE: &str = "application/vnd.bundle.file.v1";
/// The layer holds the file's bytes as they are.
const LAYER_TYPE: &str = "application/octet-stream";
/// The OCI empty descriptor's media type and content.
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
const TITLE: &str = "org.opencontainers.image.title";

/// The artifact to carry, its small config blob, and the record bundle.json keeps.
pub struct FileArtifact {
    pub image: ResolvedImage,
    pub config: (Digest, Bytes),
    pub record: FileRecord,
}

/// `files/NAME:HEX16` (the first 16 hex digits of the content's sha256: a new file, a new tag).
pub fn artifact(file: &StagedFile) -> FileArtifact {
    let config = Bytes::from_static(EMPTY);
    let config_digest = Digest::of(&config);
    let config_desc = Descriptor::of_blob(EMPTY_TYPE, config_digest.clone(), EMPTY.len() as u64);
    let layer = Descriptor {
        annotations: Some([(TITLE.to_string(), file.name.clone())].into()),
        ..Descriptor::of_blob(LAYER_TYPE, file.digest.clone(), file.size)
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": config_desc,
        "layers": [layer],
    }))
    .expect("manifest serialises");
    let source = ImageRef::parse(&format!("files/{}:{}", super::repository_name(&file.name), &file.digest.hex()[..16]))
        .expect("a validated name makes a valid reference");
    let record = FileRecord {
        name: file.name.clone(),
        digest: file.digest.clone(),
        size: file.size,
        image: source.to_string(),
        origin: file.origin.clone(),
    };
    let image = ResolvedImage::made(source, Made::File, manifest, vec![config_desc, layer]);
    FileArtifact { image, config: (config_digest, config), record }
}
