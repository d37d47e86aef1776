//! Manifest media types and the graph walk.
//!
//! We never re-serialise a manifest: its bytes are its identity. This module only parses them far enough to
//! find the children (index entries) and blobs (config, layers, subject) that must travel with it.

use serde::Deserialize;

use crate::oci::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Helm's OCI chart artifacts: Chart.yaml as JSON in the config, the package as the one layer.
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CONTENT: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Every manifest type we ask registries for, most specific first.
pub const ACCEPT: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST, OCI_ARTIFACT];

/// Registries refuse larger manifests (ECR: 4 MiB); refusing them ourselves bounds memory.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} is not valid JSON: {source}")]
    Json {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {digest} has media type `{media_type}`, which is not a supported image manifest or index")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("manifest {digest} is {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit registries accept")]
    TooLarge { digest: Digest, size: usize },
}

/// A reference from one manifest to content, as it appears in the JSON.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// What an artifact is (a signature, an SBOM), in a referrers list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor of a blob we made: its media type, digest and size, nothing else.
    pub fn of_blob(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: None,
            artifact_type: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    blobs: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
}

/// What a manifest points at: child manifests (for an index) or blobs (for an image or artifact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestLinks {
    pub media_type: String,
    pub children: Vec<Descriptor>,
    pub blobs: Vec<Descriptor>,
}

impl ManifestLinks {
    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Parse `bytes` (whose digest is `digest`) far enough to walk it.
///
/// `declared` is the media type the registry or the parent descriptor gave; the JSON's own `mediaType`
/// wins when present, as it is what registries validate against on push.
pub fn parse(digest: &Digest, declared: Option<&str>, bytes: &[u8]) -> Result<ManifestLinks, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { digest: digest.clone(), size: bytes.len() });
    }
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Json { digest: digest.clone(), source })?;
    let media_type = raw
        .media_type
        .clone()
        .or_else(|| declared.map(str::to_string))
        .or_else(|| raw.manifests.as_ref().map(|_| OCI_INDEX.to_string()))
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let unsupported = || ManifestError::UnsupportedMediaType { digest: digest.clone(), media_type: media_type.clone() };
    let mut links = ManifestLinks { media_type: media_type.clone(), children: vec![], blobs: vec![] };
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            links.children = raw.manifests.unwrap_or_default();
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            links.blobs.extend(raw.config);
            links.blobs.extend(raw.layers.unwrap_or_default());
        }
        OCI_ARTIFACT => {
            links.blobs.extend(raw.blobs.unwrap_or_default());
        }
        _ => return Err(unsupported()),
    }
    // A `subject` names another manifest (signatures, SBOMs); it is a reference, not content we must carry.
    let _ = raw.subject;
    Ok(links)
}

impl crate::support::hint::Hint for ManifestError {
    fn hint(&self) -> Option<String> {
        match self {
            ManifestError::UnsupportedMediaType { .. } => {
                Some("bundle carries OCI and Docker schema 2 images and indexes; leave this one out".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_docker_schema2_and_oci_index() {
        let cfg = Digest::of(b"c");
        let l = Digest::of(b"l");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{cfg}","size":1}},"layers":[{{"mediaType":"y","digest":"{l}","size":1}}]}}"#
        );
        let links = parse(&Digest::of(m.as_bytes()), None, m.as_bytes()).unwrap();
        assert_eq!(links.blobs.len(), 2);
        assert!(!links.is_index());

        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{cfg}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let links = parse(&Digest::of(idx.as_bytes()), Some(OCI_INDEX), idx.as_bytes()).unwrap();
        assert!(links.is_index());
        assert_eq!(links.children[0].platform.as_ref().unwrap().to_string(), "linux/arm64/v8");
    }

    #[test]
    fn rejects_schema1_and_garbage() {
        let d = Digest::of(b"x");
        assert!(
            parse(&d, None, br#"{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#).is_err()
        );
        assert!(parse(&d, None, b"not json").is_err());
    }
}
