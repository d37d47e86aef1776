//! What a `bundle serve` serves: every image of the given archives under the name import would push it to,
//! its manifests' exact bytes, where each blob's bytes lie in the archives, and the referrers of each manifest.
//!
//! Built once at start from the archives' fronts (no blob is read); a name that two archives give two digests
//! is refused then, naming both, and so is an image whose blobs no given archive holds (a delta without its base).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::archive::contents::StoredManifest;
use crate::archive::{ArchiveFile, BlobEntry, BundleContents};
use crate::oci::destination::Destination;
use crate::oci::digest::Digest;
use crate::oci::layout::AttachedBy;
use crate::oci::manifest::Descriptor;
use crate::oci::reference::ImageRef;

/// Where a blob's bytes are: entries whose concatenation is the blob (one, or a volume set's pieces).
pub type Segments = Vec<(Arc<ArchiveFile>, BlobEntry)>;

/// One input, loaded: its contents and where each of its blobs is.
pub struct Served {
    pub name: String,
    pub contents: BundleContents,
    pub blobs: BTreeMap<Digest, Segments>,
    /// The sha256 of the file (from its sidecar), which a delta names as its base.
    pub sha256: Option<String>,
}

impl Served {
    /// Whether this input is a delta made against `other` (the next release of it: its names win).
    fn builds_on(&self, other: &Served) -> bool {
        let base = self.contents.metadata.as_ref().and_then(|m| m.delta.as_ref()).map(|d| &d.base);
        base.is_some_and(|b| other.sha256.as_deref() == Some(b.sha256.as_str()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{name} would be served with two digests: {first} (from {first_from}) and {second} (from {second_from})")]
    TwoDigests { name: String, first: Digest, first_from: String, second: Digest, second_from: String },
    #[error("{image} (from {from}) needs blob {blob}, which none of the given archives holds")]
    Missing { image: String, from: String, blob: Digest },
}

impl crate::support::hint::Hint for CatalogError {
    fn hint(&self) -> Option<String> {
        match self {
            CatalogError::TwoDigests { .. } => Some(
                "serve the archives under different prefixes (two serve processes), or leave one out; --keep-host keeps two registries' images apart".into(),
            ),
            CatalogError::Missing { .. } => Some("a delta is served with its base: give the base archive too".into()),
        }
    }
}

/// Everything the server answers from.
#[derive(Default)]
pub struct Catalog {
    /// Repository → tag → manifest digest.
    pub tags: BTreeMap<String, BTreeMap<String, Digest>>,
    /// Repository → every manifest of the graphs of its images.
    pub repositories: BTreeMap<String, BTreeSet<Digest>>,
    pub manifests: HashMap<Digest, StoredManifest>,
    /// Blob → its size and where its bytes are.
    pub blobs: HashMap<Digest, (u64, Segments)>,
    /// (repository, subject) → the referrers' descriptors.
    pub referrers: BTreeMap<(String, Digest), Vec<Descriptor>>,
    /// (source, name served) of every image, for the start line, the values file and the mirror configs.
    pub pushed: Vec<(ImageRef, ImageRef)>,
}

impl Catalog {
    pub fn build(inputs: &[Served], dest: &Destination) -> Result<Catalog, CatalogError> {
        let mut cat = Catalog::default();
        // Name → (digest, the input that gave it).
        let mut named: HashMap<String, (Digest, usize)> = HashMap::new();
        for input in inputs {
            for (digest, segments) in &input.blobs {
                let size = segments.iter().map(|(_, e)| e.size).sum();
                cat.blobs.entry(digest.clone()).or_insert_with(|| (size, segments.clone()));
            }
            cat.manifests.extend(input.contents.manifests.iter().map(|(d, m)| (d.clone(), m.clone())));
        }
        // Bases before the deltas made against them, so that a delta's names win over its base's.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|i| inputs.iter().filter(|o| inputs[*i].builds_on(o)).count());
        for i in order {
            let input = &inputs[i];
            for img in &input.contents.images {
                let target = dest.map(&img.source);
                let repo = target.repository().to_string();
                if let Some(tag) = target.tag() {
                    let name = format!("{}:{tag}", target.name());
                    if let Some((first, from)) = named.get(&name)
                        && first != &img.digest
                        && !input.builds_on(&inputs[*from])
                    {
                        return Err(CatalogError::TwoDigests {
                            name,
                            first: first.clone(),
                            first_from: inputs[*from].name.clone(),
                            second: img.digest.clone(),
                            second_from: input.name.clone(),
                        });
                    }
                    named.insert(name, (img.digest.clone(), i));
                    cat.tags.entry(repo.clone()).or_default().insert(tag.to_string(), img.digest.clone());
                }
                cat.repositories.entry(repo.clone()).or_default().extend(img.manifests.iter().cloned());
                for blob in &img.blobs {
                    if !cat.blobs.contains_key(blob) {
                        return Err(CatalogError::Missing {
                            image: img.source.to_string(),
                            from: input.name.clone(),
                            blob: blob.clone(),
                        });
                    }
                }
                if let Some(a) = img.artifact.as_ref().filter(|a| a.attached_by == AttachedBy::Referrers)
                    && let Some(m) = cat.manifests.get(&img.digest)
                {
                    let annotations = serde_json::from_slice::<serde_json::Value>(&m.bytes)
                        .ok()
                        .and_then(|v| serde_json::from_value(v.get("annotations")?.clone()).ok());
                    let list = cat.referrers.entry((repo.clone(), a.subject.clone())).or_default();
                    if !list.iter().any(|d| d.digest == img.digest) {
                        list.push(Descriptor {
                            media_type: m.media_type.clone(),
                            digest: img.digest.clone(),
                            size: m.bytes.len() as u64,
                            platform: None,
                            annotations,
                            artifact_type: a.artifact_type.clone(),
                        });
                    }
                }
                if !img.helm_chart {
                    cat.pushed.retain(|(s, _)| s != &img.source);
                    cat.pushed.push((img.source.clone(), target));
                }
            }
        }
        Ok(cat)
    }

    /// Whether `repository` is served at all.
    pub fn has_repository(&self, repository: &str) -> bool {
        self.repositories.contains_key(repository)
    }
}
