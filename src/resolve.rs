//! From image references to complete, verified manifest graphs: the plan of everything an export must carry.
//!
//! Indexes are walked fully (every platform, nested indexes too) and every manifest's bytes are checked
//! against the digest its parent or the registry gave before they are trusted.

use std::collections::BTreeSet;

use futures_util::future::try_join_all;

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, ManifestError};
use crate::reference::ImageRef;
use crate::registry::{PoolError, PulledManifest, Registries, RegistryClient, RegistryError, Role};

/// One image with everything it needs.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as requested, normalised (tag kept; digest only if the user pinned one).
    pub source: ImageRef,
    pub digest: Digest,
    pub media_type: String,
    pub manifest_size: u64,
    pub platforms: Vec<String>,
    /// Children before parents; the root manifest last.
    pub manifests: Vec<PulledManifest>,
    /// Config and layer blobs, without duplicates.
    pub blobs: Vec<Descriptor>,
    /// The chart itself, packaged as a Helm OCI artifact (not pulled from a registry).
    pub helm_chart: bool,
}

impl ResolvedImage {
    /// Bytes of every distinct manifest and blob.
    pub fn size(&self) -> u64 {
        self.manifests.iter().map(|m| m.bytes.len() as u64).sum::<u64>()
            + self.blobs.iter().map(|b| b.size).sum::<u64>()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {image}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("cannot resolve {image}")]
    Manifest {
        image: String,
        #[source]
        source: ManifestError,
    },
    #[error("cannot resolve {image}")]
    Pool {
        image: String,
        #[source]
        source: PoolError,
    },
    #[error("cannot resolve {image}: manifest {digest} is {actual} bytes, but its index says {expected}")]
    SizeMismatch { image: String, digest: Digest, expected: u64, actual: u64 },
}

impl ResolveError {
    pub fn registry_error(&self) -> Option<&RegistryError> {
        match self {
            ResolveError::Registry { source, .. } => Some(source),
            ResolveError::Pool { source: PoolError::Registry(e), .. } => Some(e),
            _ => None,
        }
    }
}

pub async fn resolve(registries: &Registries, image: &ImageRef) -> Result<ResolvedImage, ResolveError> {
    let name = image.to_string();
    let client = registries
        .client(image.registry(), Role::Source)
        .map_err(|source| ResolveError::Pool { image: name.clone(), source })?;
    let root = client
        .get_manifest(image.repository(), &image.manifest_reference())
        .await
        .map_err(|source| ResolveError::Registry { image: name.clone(), source })?;
    let mut graph = Graph { client: &client, image, manifests: Vec::new(), blobs: Vec::new(), seen: BTreeSet::new() };
    let links = graph.walk(root.clone(), None).await?;
    let platforms = links.children.iter().filter_map(|c| c.platform.as_ref().map(|p| p.to_string())).collect();
    let Graph { manifests, blobs, .. } = graph;
    Ok(ResolvedImage {
        source: image.clone(),
        digest: root.digest.clone(),
        media_type: links.media_type.clone(),
        manifest_size: root.bytes.len() as u64,
        platforms,
        manifests,
        blobs,
        helm_chart: false,
    })
}

struct Graph<'a> {
    client: &'a RegistryClient,
    image: &'a ImageRef,
    manifests: Vec<PulledManifest>,
    blobs: Vec<Descriptor>,
    seen: BTreeSet<Digest>,
}

impl Graph<'_> {
    /// Record `m` and everything below it; children are fetched concurrently.
    fn walk<'s>(
        &'s mut self,
        mut m: PulledManifest,
        declared: Option<&'s str>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<manifest::ManifestLinks, ResolveError>> + Send + 's>>
    {
        Box::pin(async move {
            let name = self.image.to_string();
            let links = manifest::parse(&m.digest, declared.or(Some(&m.media_type)), &m.bytes)
                .map_err(|source| ResolveError::Manifest { image: name.clone(), source })?;
            m.media_type = links.media_type.clone();
            if !self.seen.insert(m.digest.clone()) {
                return Ok(links);
            }
            let children: Vec<&Descriptor> = links.children.iter().filter(|c| !self.seen.contains(&c.digest)).collect();
            let client = self.client;
            let repo = self.image.repository();
            let name = &name;
            let pulled = try_join_all(children.iter().map(|c| async move {
                let pm = client
                    .get_manifest(repo, c.digest.as_str())
                    .await
                    .map_err(|source| ResolveError::Registry { image: name.to_string(), source })?;
                if pm.bytes.len() as u64 != c.size {
                    return Err(ResolveError::SizeMismatch {
                        image: name.to_string(),
                        digest: c.digest.clone(),
                        expected: c.size,
                        actual: pm.bytes.len() as u64,
                    });
                }
                Ok((pm, c.media_type.clone()))
            }))
            .await?;
            for (pm, media_type) in pulled {
                self.walk(pm, Some(&media_type)).await?;
            }
            for b in &links.blobs {
                if self.seen.insert(b.digest.clone()) {
                    self.blobs.push(b.clone());
                }
            }
            self.manifests.push(m);
            Ok(links)
        })
    }
}

impl crate::hint::Hint for ResolveError {
    fn hint(&self) -> Option<String> {
        match self {
            ResolveError::Registry { source, .. } => source.hint(),
            ResolveError::Pool { source, .. } => source.hint(),
            ResolveError::Manifest { source, .. } => source.hint(),
            ResolveError::SizeMismatch { .. } => {
                Some("the registry serves an index that does not match its manifests; report it to its owner".into())
            }
        }
    }
}
