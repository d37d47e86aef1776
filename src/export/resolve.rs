//! From image references to complete, verified manifest graphs: the plan of everything an export must carry.
//!
//! Indexes are walked fully (every platform, nested indexes too) and every manifest's bytes are checked
//! against the digest its parent or the registry gave before they are trusted.

use std::collections::{BTreeSet, HashMap};

use futures_util::future::try_join_all;

use crate::oci::digest::Digest;
use crate::oci::layout::{PlatformRecord, SelectionMode};
use crate::oci::manifest::{self, Descriptor, ManifestError, ManifestLinks};
use crate::oci::platform::{self, PlatformChoice, PlatformMode};
use crate::oci::reference::ImageRef;
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
    /// Made here rather than pulled: the chart packaged as a Helm OCI artifact, or a file's artifact. Its blobs
    /// are staged before the pull.
    pub made: Option<Made>,
    /// What `--platform` did to this image, when platforms were chosen and it is an index.
    pub selection: Option<PlatformRecord>,
    /// A signature, attestation or SBOM of another image's manifest (`referrers`).
    pub artifact: Option<crate::oci::layout::ArtifactRecord>,
}

/// What an image made here (not pulled from a registry) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Chart,
    File,
}

impl ResolvedImage {
    /// The chart, as a Helm OCI artifact.
    pub fn helm_chart(&self) -> bool {
        self.made == Some(Made::Chart)
    }

    /// Made here (a chart or a file): nothing to pull, no signatures to look for.
    pub fn made_here(&self) -> bool {
        self.made.is_some()
    }

    /// An OCI image manifest we wrote (`manifest`, its bytes), named `source`, over `blobs`.
    pub fn made(source: ImageRef, made: Made, manifest: Vec<u8>, blobs: Vec<Descriptor>) -> ResolvedImage {
        use crate::oci::manifest::OCI_MANIFEST;
        let digest = Digest::of(&manifest);
        ResolvedImage {
            source,
            digest: digest.clone(),
            media_type: OCI_MANIFEST.into(),
            manifest_size: manifest.len() as u64,
            platforms: vec![],
            manifests: vec![PulledManifest { digest, media_type: OCI_MANIFEST.into(), bytes: manifest.into() }],
            blobs,
            made: Some(made),
            selection: None,
            artifact: None,
        }
    }

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
    #[error("{image} has none of the chosen platforms ({chosen}); it has {available}")]
    NoChosenPlatform { image: String, chosen: String, available: String },
    #[error("cannot resolve {image}: its config {digest} is not valid JSON ({message})")]
    Config { image: String, digest: Digest, message: String },
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

/// Resolve `image` to its whole graph; with `choice`, only the chosen platforms of an index (see `platform`).
pub async fn resolve(
    registries: &Registries,
    image: &ImageRef,
    choice: Option<&PlatformChoice>,
) -> Result<ResolvedImage, ResolveError> {
    let name = image.to_string();
    let client = registries
        .client(image.registry(), Role::Source)
        .map_err(|source| ResolveError::Pool { image: name.clone(), source })?;
    let mut root = client
        .get_manifest(image.repository(), &image.manifest_reference())
        .await
        .map_err(|source| ResolveError::Registry { image: name.clone(), source })?;
    let root_links = manifest::parse(&root.digest, Some(&root.media_type), &root.bytes)
        .map_err(|source| ResolveError::Manifest { image: name.clone(), source })?;
    let mut graph = Graph {
        client: &client,
        image,
        manifests: Vec::new(),
        blobs: Vec::new(),
        seen: BTreeSet::new(),
        skip: BTreeSet::new(),
        replaced: HashMap::new(),
    };
    let mut selection = None;
    match choice {
        Some(choice) if root_links.is_index() => {
            let chosen = choice.platforms.iter().map(ToString::to_string).collect();
            if image.digest().is_some() {
                // Someone holds this digest: it must keep resolving, so every platform travels.
                selection = Some(PlatformRecord { mode: SelectionMode::Whole, chosen, ..PlatformRecord::default() });
            } else {
                let picked = select(&client, image, &root, &root_links, choice).await?;
                if !picked.kept_any {
                    return Err(ResolveError::NoChosenPlatform {
                        image: name,
                        chosen: choice.describe(),
                        available: picked.dropped.join(", "),
                    });
                }
                let mut record = PlatformRecord { chosen, dropped: picked.dropped, ..PlatformRecord::default() };
                match (choice.mode, picked.bytes) {
                    (_, None) => record.mode = SelectionMode::Whole,
                    (PlatformMode::Filter, Some(bytes)) => {
                        record.mode = SelectionMode::Filter;
                        record.original_digest = Some(root.digest.clone());
                        record.original_size = Some(root.bytes.len() as u64);
                        root = PulledManifest { digest: Digest::of(&bytes), media_type: root.media_type, bytes };
                        graph.replaced = picked.replaced;
                    }
                    (PlatformMode::Sparse, Some(_)) => {
                        record.mode = SelectionMode::Sparse;
                        record.omitted = picked.omitted.iter().cloned().collect();
                        graph.skip = picked.omitted;
                    }
                }
                selection = Some(record);
            }
        }
        Some(choice) => check_single_platform(&client, image, &root_links, choice).await?,
        None => {}
    }
    let links = graph.walk(root.clone(), None).await?;
    let platforms = links
        .children
        .iter()
        .filter(|c| !graph.skip.contains(&c.digest))
        .filter_map(|c| c.platform.as_ref().map(|p| p.to_string()))
        .collect();
    let Graph { manifests, blobs, .. } = graph;
    Ok(ResolvedImage {
        source: image.clone(),
        digest: root.digest.clone(),
        media_type: links.media_type.clone(),
        manifest_size: root.bytes.len() as u64,
        platforms,
        manifests,
        blobs,
        made: None,
        selection,
        artifact: None,
    })
}

/// An image of one platform must be of a chosen one: its config says which.
async fn check_single_platform(
    client: &RegistryClient,
    image: &ImageRef,
    links: &ManifestLinks,
    choice: &PlatformChoice,
) -> Result<(), ResolveError> {
    const IMAGE_CONFIGS: [&str; 2] =
        ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
    // Artifacts (charts, signatures) have no platform.
    let Some(config) = links.blobs.first().filter(|c| IMAGE_CONFIGS.contains(&c.media_type.as_str())) else {
        return Ok(());
    };
    let name = image.to_string();
    let bytes = client
        .get_blob_bytes(image.repository(), &config.digest, manifest::MAX_MANIFEST_BYTES as u64 * 4)
        .await
        .map_err(|source| ResolveError::Registry { image: name.clone(), source })?;
    #[derive(serde::Deserialize)]
    struct ConfigPlatform {
        os: Option<String>,
        architecture: Option<String>,
        variant: Option<String>,
    }
    let config: ConfigPlatform = serde_json::from_slice(&bytes).map_err(|e| ResolveError::Config {
        image: name.clone(),
        digest: config.digest.clone(),
        message: e.to_string(),
    })?;
    // A config that names no platform (cosign's signature images, some artifacts) belongs to every platform.
    let (Some(os), Some(architecture)) =
        (config.os.filter(|s| !s.is_empty()), config.architecture.filter(|s| !s.is_empty()))
    else {
        return Ok(());
    };
    let platform = manifest::Platform { os, architecture, variant: config.variant };
    if choice.matches(&platform) {
        return Ok(());
    }
    Err(ResolveError::NoChosenPlatform {
        image: name,
        chosen: choice.describe(),
        available: format!("only {platform} (it is not a multi-platform index)"),
    })
}

/// What choosing platforms does to one index (and the indexes nested in it).
#[derive(Default)]
struct Picked {
    /// The new index's bytes; `None` when every entry stays.
    bytes: Option<bytes::Bytes>,
    kept_any: bool,
    /// Entries left out, at every level.
    omitted: BTreeSet<Digest>,
    /// New nested indexes, by their new digest.
    replaced: HashMap<Digest, PulledManifest>,
    dropped: Vec<String>,
}

fn select<'a>(
    client: &'a RegistryClient,
    image: &'a ImageRef,
    index: &'a PulledManifest,
    links: &'a ManifestLinks,
    choice: &'a PlatformChoice,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Picked, ResolveError>> + Send + 'a>> {
    Box::pin(async move {
        let name = image.to_string();
        let mut picked = Picked::default();
        let mut nested_kept = BTreeSet::new();
        let mut repointed: HashMap<usize, (Digest, u64)> = HashMap::new();
        for (i, entry) in links.children.iter().enumerate().filter(|(_, e)| manifest::is_index(&e.media_type)) {
            let child = fetch_child(client, image, entry).await?;
            let child_links = manifest::parse(&child.digest, Some(&entry.media_type), &child.bytes)
                .map_err(|source| ResolveError::Manifest { image: name.clone(), source })?;
            let sub = select(client, image, &child, &child_links, choice).await?;
            if sub.kept_any {
                nested_kept.insert(i);
            }
            if let Some(bytes) = sub.bytes.clone().filter(|_| sub.kept_any) {
                let new = PulledManifest { digest: Digest::of(&bytes), media_type: child.media_type.clone(), bytes };
                repointed.insert(i, (new.digest.clone(), new.bytes.len() as u64));
                picked.replaced.insert(new.digest.clone(), new);
            }
            picked.omitted.extend(sub.omitted);
            picked.replaced.extend(sub.replaced);
            picked.dropped.extend(sub.dropped);
        }
        let keep = platform::keep(&links.children, choice, &nested_kept);
        for (entry, kept) in links.children.iter().zip(&keep) {
            if !kept {
                picked.omitted.insert(entry.digest.clone());
                if let (Some(p), None) = (&entry.platform, platform::attestation_subject(entry)) {
                    picked.dropped.push(p.to_string());
                }
            }
        }
        picked.kept_any = keep.iter().any(|k| *k);
        if keep.iter().all(|k| *k) && repointed.is_empty() {
            return Ok(picked);
        }
        let malformed = |e: serde_json::Error| ResolveError::Config {
            image: name.clone(),
            digest: index.digest.clone(),
            message: e.to_string(),
        };
        let raw = platform::raw_entries(&index.bytes).map_err(malformed)?;
        let entries = raw
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.get(*i).copied().unwrap_or(false))
            .map(|(i, e)| match repointed.get(&i) {
                Some((d, size)) => platform::repoint(e, d, *size),
                None => e,
            })
            .collect();
        picked.bytes = Some(platform::filtered_index(&index.bytes, entries).map_err(malformed)?);
        Ok(picked)
    })
}

async fn fetch_child(
    client: &RegistryClient,
    image: &ImageRef,
    c: &Descriptor,
) -> Result<PulledManifest, ResolveError> {
    let name = image.to_string();
    let pm = client
        .get_manifest(image.repository(), c.digest.as_str())
        .await
        .map_err(|source| ResolveError::Registry { image: name.clone(), source })?;
    if pm.bytes.len() as u64 != c.size {
        return Err(ResolveError::SizeMismatch {
            image: name,
            digest: c.digest.clone(),
            expected: c.size,
            actual: pm.bytes.len() as u64,
        });
    }
    Ok(pm)
}

struct Graph<'a> {
    client: &'a RegistryClient,
    image: &'a ImageRef,
    manifests: Vec<PulledManifest>,
    blobs: Vec<Descriptor>,
    seen: BTreeSet<Digest>,
    /// Children that do not travel (`--platform-mode sparse`).
    skip: BTreeSet<Digest>,
    /// Indexes made here (filtered nested indexes): not fetched, taken from this map.
    replaced: HashMap<Digest, PulledManifest>,
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
            let children: Vec<&Descriptor> = links
                .children
                .iter()
                .filter(|c| !self.seen.contains(&c.digest) && !self.skip.contains(&c.digest))
                .collect();
            let (client, image, replaced) = (self.client, self.image, &self.replaced);
            let pulled = try_join_all(children.iter().map(|c| async move {
                let pm = match replaced.get(&c.digest) {
                    Some(made) => made.clone(),
                    None => fetch_child(client, image, c).await?,
                };
                Ok::<_, ResolveError>((pm, c.media_type.clone()))
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

impl crate::support::hint::Hint for ResolveError {
    fn hint(&self) -> Option<String> {
        match self {
            ResolveError::Registry { source, .. } => source.hint(),
            ResolveError::Pool { source, .. } => source.hint(),
            ResolveError::Manifest { source, .. } => source.hint(),
            ResolveError::SizeMismatch { .. } => {
                Some("the registry serves an index that does not match its manifests; report it to its owner".into())
            }
            ResolveError::NoChosenPlatform { .. } => {
                Some("add one of its platforms to --platform, or leave the image out (a spec's `exclude:`)".into())
            }
            ResolveError::Config { .. } => {
                Some("the registry serves a malformed manifest or config; report it to the image's publisher".into())
            }
        }
    }
}
