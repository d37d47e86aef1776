//! Signatures, attestations and SBOMs travel with their images: found at the source, carried byte for byte as
//! entries of their own (`ArtifactRecord` says what each is attached to, and how), and attached at the
//! destination so that they resolve from the subject's digest exactly as at the source.
//!
//! Two ways of attaching exist, and both are followed. cosign's tags (`sha256-<hex>.sig`, `.att`, `.sbom` beside the
//! image) are tags: they travel and are pushed as tags. OCI 1.1 referrers name their subject in the manifest; a
//! registry lists them through the Referrers API, or, when it has none, a client keeps the index under the tag
//! `sha256-<hex>` itself. Discovery reads each repository's tag list once (so a registry without artifacts costs one
//! request per repository, not several per digest) and asks the Referrers API once per digest only where a registry
//! showed it has one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::{StreamExt as _, TryStreamExt as _, stream};

use crate::export::resolve::{ResolveError, ResolvedImage, resolve};
use crate::oci::digest::Digest;
use crate::oci::layout::{ArtifactKind, ArtifactRecord, AttachedBy};
use crate::oci::manifest::Descriptor;
use crate::oci::reference::ImageRef;
use crate::registry::{PoolError, Registries, RegistryError, Role};

/// Artifacts of artifacts (a signature on an SBOM) are followed this many levels below an image.
pub const MAX_DEPTH: usize = 3;

const COSIGN_TAGS: [(&str, ArtifactKind); 3] =
    [("sig", ArtifactKind::Signature), ("att", ArtifactKind::Attestation), ("sbom", ArtifactKind::Sbom)];

#[derive(Debug, thiserror::Error)]
pub enum ReferrersError {
    #[error("cannot look for the signatures, attestations and SBOMs of {image}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("cannot look for the signatures, attestations and SBOMs of {image}")]
    Pool {
        image: String,
        #[source]
        source: PoolError,
    },
    #[error("cannot attach the artifacts of {image} at the destination")]
    Attach {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error(
        "{image}: at the destination, {tag} (where the referrers tag schema lists referrers) holds a {media_type}, not an index"
    )]
    TagTaken { image: String, tag: String, media_type: String },
    #[error("{image}: at the destination, {what} resolves to {found}, but the archive holds {expected}")]
    Differs { image: String, what: String, found: String, expected: Digest },
}

/// The tag cosign and the referrers tag schema derive from a digest: `sha256-<hex>`.
pub fn digest_tag(digest: &Digest) -> String {
    digest.as_str().replacen(':', "-", 1)
}

/// What kind of artifact an `artifactType` (or a config media type) names.
pub fn kind_of(artifact_type: Option<&str>) -> ArtifactKind {
    let t = artifact_type.unwrap_or_default().to_ascii_lowercase();
    // cosign's OCI 1.1 mode names its signatures `application/vnd.dev.cosign.artifact.sig.v1+json`.
    if ["signature", "simplesigning", "sigstore.bundle", "notary", "cosign.artifact.sig"].iter().any(|k| t.contains(k))
    {
        ArtifactKind::Signature
    } else if ["in-toto", "dsse", "attestation", "provenance"].iter().any(|k| t.contains(k)) {
        ArtifactKind::Attestation
    } else if ["spdx", "cyclonedx", "sbom", "syft"].iter().any(|k| t.contains(k)) {
        ArtifactKind::Sbom
    } else {
        ArtifactKind::Other
    }
}

/// What discovery found.
#[derive(Default)]
pub struct Found {
    /// Every artifact, resolved, with its `artifact` record set; subjects before the artifacts attached to them.
    pub artifacts: Vec<ResolvedImage>,
    /// Images filtered by `--platform` whose original index had artifacts: they sign the original digest, which
    /// does not travel. (image, how many)
    pub left_behind: Vec<(String, usize)>,
    /// Requests made to learn it (tag lists, referrers lists, tag-schema indexes).
    pub requests: usize,
    /// What could not be looked at (a registry that refuses tag lists, a listed artifact that is gone): the
    /// images still travel, without what was not found.
    pub warnings: Vec<String>,
}

/// (registry, repository)
type Repository = (String, String);

/// One manifest to look for artifacts of.
#[derive(Clone)]
struct Subject {
    /// The image (its source reference, as bundle.json names it) whose graph holds this manifest.
    image: String,
    /// Its registry and repository.
    at: ImageRef,
    digest: Digest,
}

/// What the source registries offer, learnt before the images are resolved (so it runs beside `resolve`): each
/// repository's tags, and whether each registry has the Referrers API.
#[derive(Default)]
pub struct Survey {
    tags: HashMap<Repository, BTreeSet<String>>,
    api: HashMap<String, bool>,
    requests: usize,
    warnings: Vec<String>,
}

/// One tag list per repository of `refs`, and one Referrers API question per registry.
pub async fn survey(registries: &Registries, refs: &[ImageRef], concurrency: usize) -> Survey {
    let mut survey = Survey::default();
    let repos: BTreeSet<Repository> =
        refs.iter().map(|r| (r.registry().to_string(), r.repository().to_string())).collect();
    // The API is asked once per registry, in its first repository.
    let mut first_repository: BTreeMap<String, String> = BTreeMap::new();
    for (registry, repository) in &repos {
        first_repository.entry(registry.clone()).or_insert_with(|| repository.clone());
    }
    let listing = stream::iter(repos)
        .map(|(registry, repository)| async move {
            let tags = match registries.client(&registry, Role::Source) {
                Ok(client) => {
                    client.list_tags(&repository).await.map_err(|e| crate::support::error_text::chain_line(&e))
                }
                Err(e) => Err(crate::support::error_text::chain_line(&e)),
            };
            ((registry, repository), tags)
        })
        .buffer_unordered(concurrency.max(1) * 2)
        .collect::<Vec<_>>();
    // Any well-formed digest will do: a registry with the API answers 200 (an empty list) for every one.
    let probe = Digest::of(b"");
    let asking = stream::iter(first_repository)
        .map(|(registry, repository)| {
            let probe = probe.clone();
            async move {
                let answer = match registries.client(&registry, Role::Source) {
                    Ok(client) => client
                        .referrers(&repository, &probe)
                        .await
                        .map_err(|e| crate::support::error_text::chain_line(&e)),
                    Err(e) => Err(crate::support::error_text::chain_line(&e)),
                };
                (registry, answer)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>();
    let (listed, asked) = tokio::join!(listing, asking);
    survey.requests += listed.len() + asked.len();
    for (repo, result) in listed {
        match result {
            Ok(list) => {
                survey.tags.insert(repo, list.into_iter().collect());
            }
            Err(e) => survey.warnings.push(format!(
                "cannot list the tags of {}/{}, so cosign signatures and tag-schema referrers there were not looked for: {e}",
                repo.0, repo.1
            )),
        }
    }
    for (registry, answer) in asked {
        let has = answer.unwrap_or_else(|e| {
            survey.warnings.push(format!("cannot ask {registry} for referrers; using the tag schema only: {e}"));
            None
        });
        survey.api.insert(registry, has.is_some());
    }
    survey
}

/// Find the artifacts of every manifest of `images`, and theirs, to `MAX_DEPTH`, with what `survey` learnt.
pub async fn discover(
    registries: &Registries,
    images: &[ResolvedImage],
    survey: Survey,
    concurrency: usize,
) -> Result<Found, ReferrersError> {
    let Survey { tags, api, requests, warnings } = survey;
    let mut found = Found { requests, warnings, ..Found::default() };
    let sources: Vec<&ResolvedImage> = images.iter().filter(|i| !i.made_here()).collect();
    for img in &sources {
        let Some(original) = img.selection.as_ref().and_then(|s| s.original_digest.as_ref()) else { continue };
        let tag = digest_tag(original);
        let key = (img.source.registry().to_string(), img.source.repository().to_string());
        let n = tags.get(&key).map_or(0, |repo_tags| repo_tags.iter().filter(|t| t.starts_with(&tag)).count());
        if n > 0 {
            found.left_behind.push((img.source.to_string(), n));
        }
    }

    let mut level: Vec<Subject> = sources
        .iter()
        .flat_map(|img| {
            img.manifests.iter().map(|m| Subject {
                image: img.source.to_string(),
                at: img.source.clone(),
                digest: m.digest.clone(),
            })
        })
        .collect();
    let mut seen: BTreeSet<(String, Digest)> = BTreeSet::new();
    for _ in 0..MAX_DEPTH {
        if level.is_empty() {
            break;
        }
        let (tags, api) = (&tags, &api);
        let batches: Vec<(Vec<(ImageRef, ArtifactRecord)>, usize)> = stream::iter(level)
            .map(|subject| async move { candidates(registries, &subject, tags, api).await })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        let mut wanted = Vec::new();
        for (batch, requests) in batches {
            found.requests += requests;
            for (reference, record) in batch {
                if seen.insert((reference.to_string(), record.subject.clone())) {
                    wanted.push((reference, record));
                }
            }
        }
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        let results: Vec<(ArtifactRecord, ImageRef, Result<ResolvedImage, ResolveError>)> = stream::iter(wanted)
            .map(|(reference, record)| async move {
                let result = resolve(registries, &reference, None).await;
                (record, reference, result)
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut resolved = Vec::new();
        for (record, reference, result) in results {
            match result {
                Ok(mut img) => {
                    img.artifact = Some(record);
                    resolved.push(img);
                }
                // Listed but gone (deleted, or another repository's): the image travels without it.
                Err(e) => found.warnings.push(format!(
                    "{}: the {:?} {reference} it lists cannot be resolved and does not travel: {}",
                    record.image,
                    record.kind,
                    crate::support::error_text::chain_line(&e)
                )),
            }
        }
        level = resolved
            .iter()
            .filter(|a| a.artifact.as_ref().is_some_and(|r| r.is_artifact()))
            .flat_map(|a| {
                let image = a.artifact.as_ref().map(|r| r.image.clone()).unwrap_or_default();
                a.manifests.iter().map(move |m| Subject {
                    image: image.clone(),
                    at: a.source.clone(),
                    digest: m.digest.clone(),
                })
            })
            .collect();
        found.artifacts.extend(resolved);
    }
    // The same artifact reached twice (an index and its child signed by one signature) travels once.
    let mut unique = BTreeSet::new();
    found.artifacts.retain(|a| unique.insert(a.source.to_string()));
    Ok(found)
}

/// The artifacts attached to one manifest, as references to resolve, and the requests it took.
async fn candidates(
    registries: &Registries,
    subject: &Subject,
    tags: &HashMap<Repository, BTreeSet<String>>,
    api: &HashMap<String, bool>,
) -> Result<(Vec<(ImageRef, ArtifactRecord)>, usize), ReferrersError> {
    let (registry, repository) = (subject.at.registry(), subject.at.repository());
    let repo_tags = tags.get(&(registry.to_string(), repository.to_string()));
    let has_tag = |t: &str| repo_tags.is_some_and(|set| set.contains(t));
    let base = digest_tag(&subject.digest);
    let record = |kind, attached_by, artifact_type| ArtifactRecord {
        kind,
        subject: subject.digest.clone(),
        image: subject.image.clone(),
        attached_by,
        artifact_type,
    };
    let at = |suffix: String| {
        ImageRef::parse(&format!("{registry}/{repository}{suffix}")).expect("a reference built from a valid one")
    };
    let mut out = Vec::new();
    for (suffix, kind) in COSIGN_TAGS {
        let tag = format!("{base}.{suffix}");
        if has_tag(&tag) {
            out.push((at(format!(":{tag}")), record(kind, AttachedBy::CosignTag, None)));
        }
    }
    let failed = |source| ReferrersError::Registry { image: subject.image.clone(), source };
    let client = registries
        .client(registry, Role::Source)
        .map_err(|source| ReferrersError::Pool { image: subject.image.clone(), source })?;
    let mut requests = 0;
    let listed: Vec<Descriptor> = if api.get(registry).copied().unwrap_or(false) {
        requests += 1;
        client.referrers(repository, &subject.digest).await.map_err(failed)?.unwrap_or_default()
    } else if has_tag(&base) {
        requests += 1;
        let index = client.get_manifest(repository, &base).await.map_err(failed)?;
        let listed = serde_json::from_slice::<ReferrersIndex>(&index.bytes).map(|i| i.manifests).unwrap_or_default();
        // The index itself travels too, byte for byte, so that a destination keeping referrers the same way gets
        // the tag with the source's digest (the house rule for every pulled manifest).
        if !listed.is_empty() && crate::oci::manifest::is_index(&index.media_type) {
            out.push((at(format!(":{base}")), record(ArtifactKind::Other, AttachedBy::TagSchemaIndex, None)));
        }
        listed
    } else {
        Vec::new()
    };
    for d in listed {
        let kind = kind_of(d.artifact_type.as_deref());
        out.push((at(format!("@{}", d.digest)), record(kind, AttachedBy::Referrers, d.artifact_type)));
    }
    Ok((out, requests))
}

#[derive(serde::Deserialize)]
struct ReferrersIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl crate::support::hint::Hint for ReferrersError {
    fn hint(&self) -> Option<String> {
        match self {
            ReferrersError::Registry { source, .. } | ReferrersError::Attach { source, .. } => source.hint(),
            ReferrersError::Pool { source, .. } => source.hint(),
            ReferrersError::TagTaken { .. } => Some(
                "that tag is taken by something else: import into another prefix (-d REGISTRY/PREFIX), or use a registry with the Referrers API".into(),
            ),
            ReferrersError::Differs { .. } => Some(
                "another client changed the tag or the referrers list during the import; run the import again, then check with `cosign verify` against the destination".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_tags() {
        assert_eq!(kind_of(Some("application/vnd.dev.cosign.simplesigning.v1+json")), ArtifactKind::Signature);
        assert_eq!(kind_of(Some("application/vnd.dev.cosign.artifact.sig.v1+json")), ArtifactKind::Signature);
        assert_eq!(kind_of(Some("application/vnd.in-toto+json")), ArtifactKind::Attestation);
        assert_eq!(kind_of(Some("application/spdx+json")), ArtifactKind::Sbom);
        assert_eq!(kind_of(Some("application/vnd.cyclonedx+json")), ArtifactKind::Sbom);
        assert_eq!(kind_of(None), ArtifactKind::Other);
        let d = Digest::of(b"x");
        assert_eq!(digest_tag(&d), format!("sha256-{}", d.hex()));
    }
}
