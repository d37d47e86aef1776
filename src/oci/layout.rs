//! The OCI image layout inside the archive: `oci-layout`, `index.json`, our `bundle.json`, and blob paths.
//!
//! `index.json` names each image by its full normalised source reference, in both the OCI annotation (skopeo
//! picks images by it) and containerd's (`ctr import` names images by it). `bundle.json` is ours: the format
//! version and, per image, what a reader needs to plan an import before any blob streams past.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oci::digest::Digest;
use crate::oci::manifest::{Descriptor, OCI_INDEX};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const BUNDLE_FILE: &str = "bundle.json";
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const BLOBS_DIR: &str = "blobs/";
pub const SHA256_DIR: &str = "blobs/sha256/";

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Version of the `bundle.json` schema and the archive's layout rules (docs/archive-format.md).
pub const FORMAT_VERSION: u32 = 1;
/// A delta archive: version 1 plus `delta`, and blobs the images need left to the base. A release that reads
/// only version 1 refuses it by its version instead of reporting the absent blobs as missing.
pub const DELTA_FORMAT_VERSION: u32 = 2;
/// One volume of a set (`export --volume-size`, `split`): version 1 (or 2, with `delta`) plus `volume`, and the
/// blobs other volumes hold left out. A release that reads only versions 1 and 2 refuses it by its version
/// instead of reporting the other volumes' blobs as missing.
pub const VOLUME_FORMAT_VERSION: u32 = 3;
/// A suite: several charts (`charts`) or files (`files`), on top of any of the above. A release that reads only
/// versions 1 to 3 refuses it by its version instead of pushing its charts and files as plain images.
pub const SUITE_FORMAT_VERSION: u32 = 4;
/// Vendor signatures checked at export (`signatures`), on top of any of the above. Nothing else changes, but a
/// release that reads only versions 1 to 4 refuses the field it does not know by the version, not as damage.
pub const SIGNED_FORMAT_VERSION: u32 = 5;
/// Where a volume keeps the pieces of blobs that span volumes: `pieces/sha256/<hex of the piece>`.
pub const PIECES_DIR: &str = "pieces/sha256/";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl LayoutIndex {
    /// One descriptor per image, in the order given.
    pub fn new(images: &[BundleImage]) -> LayoutIndex {
        let manifests = images
            .iter()
            .map(|img| Descriptor {
                media_type: img.media_type.clone(),
                digest: img.digest.clone(),
                size: img.manifest_size,
                platform: None,
                annotations: Some(BTreeMap::from([
                    (CONTAINERD_NAME.to_string(), img.source.clone()),
                    (REF_NAME.to_string(), img.source.clone()),
                ])),
                artifact_type: None,
            })
            .collect();
        LayoutIndex { schema_version: 2, media_type: Some(OCI_INDEX.to_string()), manifests }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("index serialises");
        v.push(b'\n');
        v
    }
}

/// `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleMetadata {
    pub format_version: u32,
    pub tool: ToolInfo,
    /// RFC 3339, only when `SOURCE_DATE_EPOCH` was set: the archive is otherwise free of timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub images: Vec<BundleImage>,
    /// Every blob in the archive (manifests included), sorted by digest.
    pub blobs: Vec<BundleBlob>,
    /// The Helm chart the images were discovered from, when the bundle was exported from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartRecord>,
    /// A suite's charts, in the spec's order, when there are several (`chart` is then absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<ChartRecord>,
    /// Files that travel beside the images, each as an OCI artifact of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRecord>,
    /// A delta (`export --since`): the archive it builds on, and the blobs its images need that only the base
    /// holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaRecord>,
    /// One volume of a set: which one, and where every blob of the set is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRecord>,
    /// `export --verify-signatures`: which key verified the cosign signature of which manifest, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureRecord>,
}

/// A vendor signature that verified at export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignatureRecord {
    /// The image, as `images[].source` names it.
    pub image: String,
    /// The manifest signed: the image's index or manifest, or one of its platform manifests (for an index
    /// filtered by `--platform`, the source's original index).
    pub manifest: Digest,
    /// The key's fingerprint: `sha256:<hex>` of its DER SubjectPublicKeyInfo.
    pub key: String,
    /// `ecdsa-p256` or `ed25519`.
    pub algorithm: String,
    /// Where the signature was found: its cosign tag, or its digest as a referrer.
    pub signature: String,
}

/// Which volume of which set an archive is, and which volume holds each blob of the set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeRecord {
    /// The sha256 of the whole archive the set was cut from: the same in every volume of the set.
    pub set: Digest,
    /// This volume's number, from 1.
    pub number: u32,
    /// How many volumes the set has.
    pub count: u32,
    /// For each image of `images[]`, in order: the volumes that hold what it needs besides manifests.
    pub image_volumes: Vec<Vec<u32>>,
    /// Every blob of `blobs[]` that is not a manifest (manifests are in every volume), sorted by digest: on one
    /// volume, or in pieces across several.
    pub placement: Vec<Placement>,
}

/// Where one blob of a volume set is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    pub digest: Digest,
    /// The volume that holds the blob whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u32>,
    /// Or its pieces, in order: concatenated, they are the blob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Piece>,
}

/// A run of a blob's bytes, stored as `pieces/sha256/<hex>` on its volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Piece {
    pub volume: u32,
    pub digest: Digest,
    pub size: u64,
}

impl VolumeRecord {
    /// The volumes that hold `blobs` (whole or in pieces), in order; blobs it does not place (a delta's absent
    /// ones) need none.
    pub fn volumes_of(&self, blobs: &[Digest]) -> Vec<u32> {
        let mut out: Vec<u32> = blobs
            .iter()
            .filter_map(|d| self.placement.binary_search_by(|p| p.digest.cmp(d)).ok())
            .flat_map(|i| self.placement[i].volumes())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Placement {
    /// The volumes the blob needs.
    pub fn volumes(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.volume.into_iter().chain(self.pieces.iter().map(|p| p.volume)).collect();
        v.dedup();
        v
    }
}

/// What a delta leaves to its base.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaRecord {
    pub base: BaseRecord,
    /// Blobs the images need that are not in this archive (the base, or the bases before it, held them).
    pub absent: Vec<BundleBlob>,
}

/// The archive a delta was made against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseRecord {
    /// Its file name, as the user will look for it.
    pub file: String,
    /// The sha256 of the file (from its sidecar, or computed).
    pub sha256: String,
    /// When it was made: its bundle.json `created`, else its file's modification time (RFC 3339).
    pub created: String,
    /// Its images (source references): where an absent blob is looked for at the destination.
    pub images: Vec<String>,
}

/// A file that travels as an OCI artifact (one layer: the file, titled with its name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRecord {
    /// The file's name as import writes it back (`--files-out DIR/NAME`).
    pub name: String,
    /// The sha256 of its content (its layer's digest) and its size.
    pub digest: Digest,
    pub size: u64,
    /// Its artifact's reference among `images` (`files/NAME:TAG`).
    pub image: String,
    /// Where export read it: the path or URL the spec gave.
    pub origin: String,
}

/// How the chart was used, so that import can push it and write the values file for the air gap.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartRecord {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// Where the chart came from (a path, a repository, an oci:// reference).
    pub origin: String,
    /// `helm` (rendered with a helm binary) or `static` (values scan).
    pub discovery: String,
    /// The values every pass used.
    pub values: UserValues,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// Each render pass's own `--set` expressions.
    pub passes: Vec<Vec<String>>,
    /// Images found at a values path, and whether `global.imageRegistry` redirects them.
    pub image_values: Vec<ImageValueRecord>,
    /// Images no values path redirects (the plan's `unmovable`, kept for readers of older bundles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<String>,
    /// Whether some rendered image follows `global.imageRegistry` (learnt by rendering with a sentinel).
    #[serde(default)]
    pub global_image_registry: bool,
    /// The air-gap values file as a plan that only needs the destination filled in, and whether helm proved it
    /// at export. Absent in bundles exported before it existed: import derives an unproven one from
    /// `image_values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_plan: Option<ValuesPlan>,
}

/// The air-gap values file before the destination is known: overrides applied in order to an empty values
/// tree. Proven (at export, with helm) means: rendered with these overrides for a sentinel destination, every
/// image of `images`, in every pass, became exactly the reference import pushes it to, except `unmovable`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValuesPlan {
    pub proven: bool,
    pub overrides: Vec<ValuesOverride>,
    /// Images that do not land with these values, as the chart renders them, and why; import names each.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "unmovable_entries")]
    pub unmovable: Vec<Unmovable>,
    /// Every image the proof judged, as the chart renders it (empty in plans made before it was recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// An image the values cannot move, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Unmovable {
    pub image: String,
    pub reason: UnmovableReason,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum UnmovableReason {
    /// The templates write it: no values key feeds it.
    Template,
    /// Values feed it, but no change of them lands it where import pushes it.
    NoValueLandsIt,
    /// It sits in a list whose copy would carry a secret into bundle.json.
    SecretList,
}

impl UnmovableReason {
    pub fn text(self) -> &'static str {
        match self {
            UnmovableReason::Template => "the chart's templates write it; no values key moves it",
            UnmovableReason::NoValueLandsIt => "values feed it, but no setting of them lands it where import pushes it",
            UnmovableReason::SecretList => {
                "it is set in a list that also holds a secret, which bundle will not copy into the values file"
            }
        }
    }
}

/// Plans made before reasons were recorded hold bare image strings.
fn unmovable_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Unmovable>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Image(String),
        Full(Unmovable),
    }
    Ok(Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|e| match e {
            Entry::Image(image) => Unmovable { image, reason: UnmovableReason::Template },
            Entry::Full(u) => u,
        })
        .collect())
}

/// Set the value at `path` (map keys and list indexes from the top of the values).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValuesOverride {
    pub path: Vec<ValuesKey>,
    pub value: OverrideValue,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(untagged)]
pub enum ValuesKey {
    Index(usize),
    Key(String),
}

/// What an override sets, in terms of the destination (`REGISTRY[/PREFIX]`, mapped as import maps images).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "kind")]
pub enum OverrideValue {
    /// `REGISTRY/PREFIX` (or `REGISTRY`): a setting templates put in front of a repository.
    Destination,
    /// `REGISTRY` alone.
    Registry,
    /// The part of where import pushes `image` that the template puts between `before` and `after`: the rule
    /// every proven override follows. The template writes `before`, this value, then `after`; where import
    /// pushes `image` (its name, then the tag or digest as `image` writes them) must read the same, so the
    /// value is that text without `before` and `after`. A registry value is its whole front (`quay.io` with
    /// `after` = `/org/name:1` becomes `REGISTRY/PREFIX`), a repository after a global setting only its path.
    Between {
        image: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        before: Vec<Around>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        after: Vec<Around>,
    },
    /// Where import pushes `image`, without the registry: `PREFIX/org/name` (plans made before `between`).
    Repository { image: String },
    /// Where import pushes `image`, without the registry and the prefix (`org/name`), then `suffix` (plans made
    /// before `between`).
    Path {
        image: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        suffix: String,
    },
    /// Where import pushes `image`, registry included, then `suffix` (the tag or digest the chart's own value
    /// carried, so a tag the chart adds itself is never added twice).
    Name {
        image: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        suffix: String,
    },
    /// A value as it is: a whole list copied from the chart's values (helm replaces lists whole, so an
    /// override inside one carries all of it), or a switch the chart needs for images from another registry.
    Literal { value: serde_yaml_ng::Value },
}

/// Text around a value, in terms of the destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Around {
    /// Text the template or another value writes.
    Text(String),
    /// `REGISTRY/PREFIX` (a global setting in front).
    Destination,
    /// `REGISTRY` (another value of the same plan that holds the registry alone).
    Registry,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageValueRecord {
    #[serde(flatten)]
    pub value: ImageValue,
    pub covered_by_global: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleImage {
    /// Full normalised source reference, as the user asked for it (tag kept, digest if pinned).
    pub source: String,
    pub digest: Digest,
    pub media_type: String,
    /// Size of the root manifest itself (the index.json descriptor's size).
    pub manifest_size: u64,
    /// `os/arch[/variant]` of each platform; empty for a single-platform image without platform info.
    pub platforms: Vec<String>,
    /// Bytes of every distinct manifest and blob this image needs.
    pub size: u64,
    /// The chart itself, as a Helm OCI artifact (pushed to `DEST/charts/NAME:VERSION`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub helm_chart: bool,
    /// What `--platform` did to this index (absent when no platforms were chosen, or for single images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_selection: Option<PlatformRecord>,
    /// This entry is a signature, attestation, SBOM or other artifact of another image's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRecord>,
}

/// What an artifact that travels with an image is, what it is attached to, and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactRecord {
    pub kind: ArtifactKind,
    /// The manifest it is attached to: an image's index, one of its platform manifests, or another artifact.
    pub subject: Digest,
    /// The image (as `images[].source` names it) whose graph holds the subject, artifacts of artifacts included.
    pub image: String,
    pub attached_by: AttachedBy,
    /// The artifact's `artifactType` (or its config's media type), as a referrers list shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Signature,
    Attestation,
    Sbom,
    Other,
}

/// How an artifact is found from its subject, and so how it must be attached at the destination.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AttachedBy {
    /// cosign's tag beside the subject: `sha256-<hex>.sig`, `.att`, `.sbom` (the entry's source is that tag).
    CosignTag,
    /// OCI 1.1: the manifest's `subject` field, listed by the Referrers API or the `sha256-<hex>` tag's index.
    Referrers,
    /// Not an artifact: the referrers tag schema's index itself (the entry's source is the tag `sha256-<hex>`),
    /// carried byte for byte so that at a destination without the Referrers API the tag keeps the source's digest.
    /// Its children travel as `Referrers` entries of their own; it is pushed last, by `referrers::attach`.
    TagSchemaIndex,
}

impl ArtifactRecord {
    /// A signature, attestation, SBOM or other artifact, as opposed to the tag schema's index that lists them.
    pub fn is_artifact(&self) -> bool {
        self.attached_by != AttachedBy::TagSchemaIndex
    }
}

/// How an index travels when platforms were chosen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SelectionMode {
    /// A new index (the image's `digest`) listing only the chosen platforms of `originalDigest`.
    Filter,
    /// The original index; the `omitted` children and what only they need are not in the archive.
    Sparse,
    /// Every platform: the reference pins the index's digest, or every platform was chosen.
    #[default]
    Whole,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformRecord {
    pub mode: SelectionMode,
    /// The platforms asked for (`--platform`).
    pub chosen: Vec<String>,
    /// The index as the source registry serves it (`filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_size: Option<u64>,
    /// Platforms of the source index that do not travel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// Children of the index that are not in the archive (`sparse`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleBlob {
    pub digest: Digest,
    pub size: u64,
}

impl BundleMetadata {
    /// The format version this content needs: the highest of the features it uses.
    pub fn required_version(&self) -> u32 {
        if !self.signatures.is_empty() {
            SIGNED_FORMAT_VERSION
        } else if !self.charts.is_empty() || !self.files.is_empty() {
            SUITE_FORMAT_VERSION
        } else if self.volume.is_some() {
            VOLUME_FORMAT_VERSION
        } else if self.delta.is_some() {
            DELTA_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        }
    }

    /// Every chart the bundle carries: the one of a single-chart bundle, or a suite's.
    pub fn all_charts(&self) -> Vec<&ChartRecord> {
        self.chart.iter().chain(&self.charts).collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("metadata serialises");
        v.push(b'\n');
        v
    }

    pub fn total_blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// The digest named by a `blobs/sha256/<hex>` path, if it is one.
pub fn blob_digest(path: &str) -> Option<Digest> {
    path.strip_prefix(SHA256_DIR).and_then(|hex| format!("sha256:{hex}").parse().ok())
}

/// The digest named by a `pieces/sha256/<hex>` path, if it is one.
pub fn piece_digest(path: &str) -> Option<Digest> {
    path.strip_prefix(PIECES_DIR).and_then(|hex| format!("sha256:{hex}").parse().ok())
}

/// Where a volume stores the piece `digest`.
pub fn piece_path(digest: &Digest) -> String {
    format!("{PIECES_DIR}{}", digest.hex())
}

/// The values a user gave: files (in order, later wins), then `--set` and `--set-string` expressions.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserValues {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_string: Vec<String>,
}

/// An image found in values, and how to point it elsewhere (for the air-gap values file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageValue {
    /// Dotted values path from the top-level chart (`elasticsearch.exporter.image`).
    pub path: String,
    pub reference: String,
    pub shape: ImageShape,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "kind")]
pub enum ImageShape {
    /// A map: `registry` present or not, and the key that holds the repository (`repository`, `image`, `name`).
    Map {
        registry_key: bool,
        repository_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// A string `repo:tag` under an `image` key.
    String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_of_older_bundles_still_read() {
        // Before reasons were recorded, `unmovable` held bare images; before `between`, `name` and friends.
        let old: ValuesPlan = serde_json::from_str(
            r#"{"proven":true,"overrides":[{"path":["a","image"],"value":{"kind":"name","image":"busybox:1.36"}}],"unmovable":["busybox:1.36"]}"#,
        )
        .unwrap();
        assert_eq!(old.unmovable, vec![Unmovable { image: "busybox:1.36".into(), reason: UnmovableReason::Template }]);
        assert!(old.images.is_empty());
        let new = ValuesPlan {
            unmovable: vec![Unmovable { image: "x:1".into(), reason: UnmovableReason::NoValueLandsIt }],
            images: vec!["x:1".into()],
            ..old.clone()
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""unmovable":[{"image":"x:1","reason":"no-value-lands-it"}]"#), "{text}");
        assert_eq!(serde_json::from_str::<ValuesPlan>(&text).unwrap(), new);
    }
}
