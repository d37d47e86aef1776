//! After a push: signatures, attestations and SBOMs attached at the destination as at the source, and read back.
//! cosign tags were pushed as tags; referrers are listed by the registry's Referrers API or, where it has none,
//! by the referrers tag schema's index, which is the source's byte for byte unless the destination's own entries
//! must be kept. Discovery, at the source, is `export::referrers`.

use std::collections::{BTreeMap, BTreeSet};

use crate::archive::BundleContents;
use crate::export::referrers::{ReferrersError, digest_tag};
use crate::import::push::PushPlan;
use crate::oci::digest::Digest;
use crate::oci::layout::{ArtifactRecord, AttachedBy};
use crate::oci::manifest::OCI_INDEX;
use crate::registry::RegistryClient;

/// What attaching at the destination came to.
#[derive(Debug, Default)]
pub struct Attached {
    /// cosign tags read back with the archive's digests.
    pub tags: usize,
    /// Subjects whose referrers list (Referrers API or tag schema) holds every referrer of the archive.
    pub subjects: usize,
    /// Tag-schema indexes written as the source's bytes (or, for an archive that carries none, new).
    pub indexes_written: usize,
    /// Tag-schema indexes merged with entries the destination had of its own (their digest is new).
    pub indexes_merged: usize,
}

/// After the push: keep the referrers tag schema's index where the destination has no Referrers API, then read
/// back that every referrer of the archive is listed for its subject, and that cosign tags hold the archive's
/// digests.
///
/// The index under `sha256-<hex>` is the source's, byte for byte, when the archive carries it and the destination
/// has no index under that tag or one that lists nothing the source's does not: the tag then has the source's
/// digest. Only an index with entries of the destination's own (other referrers, pushed there by someone else) is
/// merged, deterministically (theirs first, then the archive's it lacks), and counted as such.
pub async fn attach(
    client: &RegistryClient,
    plan: &PushPlan,
    contents: &BundleContents,
) -> Result<Attached, ReferrersError> {
    let mut attached = Attached::default();
    // (destination repository, subject) -> (image, source repository, the archive's referrer descriptors)
    let mut groups: BTreeMap<(String, Digest), (String, String, Vec<serde_json::Value>)> = BTreeMap::new();
    for p in &plan.images {
        let img = &contents.images[p.image];
        let Some(record) = &img.artifact else { continue };
        let repo = p.target.repository().to_string();
        match record.attached_by {
            AttachedBy::CosignTag => {
                let tag = p.target.tag().unwrap_or_default();
                let what = format!("{}:{tag}", p.target.name());
                let head = client
                    .head_manifest(&repo, tag)
                    .await
                    .map_err(|source| ReferrersError::Attach { image: record.image.clone(), source })?;
                match head.and_then(|h| h.digest) {
                    Some(d) if d == img.digest => attached.tags += 1,
                    other => {
                        return Err(ReferrersError::Differs {
                            image: record.image.clone(),
                            what,
                            found: other.map_or_else(|| "nothing".to_string(), |d| d.to_string()),
                            expected: img.digest.clone(),
                        });
                    }
                }
            }
            AttachedBy::Referrers => {
                let stored = &contents.manifests[&img.digest];
                groups
                    .entry((repo, record.subject.clone()))
                    .or_insert_with(|| (record.image.clone(), p.source.repository().to_string(), Vec::new()))
                    .2
                    .push(descriptor_of(&img.digest, &stored.media_type, &stored.bytes, record));
            }
            // Never in a push plan: handled below, with the group of the subject it lists.
            AttachedBy::TagSchemaIndex => {}
        }
    }
    for ((repo, subject), (image, source_repo, ours)) in groups {
        let fail = |source| ReferrersError::Attach { image: image.clone(), source };
        let ours_digests: BTreeSet<String> =
            ours.iter().filter_map(|d| d["digest"].as_str().map(str::to_string)).collect();
        let listed = match client.referrers(&repo, &subject).await.map_err(fail)? {
            // The registry indexes referrers itself, from their `subject`.
            Some(list) => list.into_iter().map(|d| d.digest.to_string()).collect::<BTreeSet<_>>(),
            None => {
                let tag = digest_tag(&subject);
                let existing = match client.get_manifest(&repo, &tag).await {
                    Ok(m) if crate::oci::manifest::is_index(&m.media_type) => Some(m),
                    // Someone else's tag of that name: never overwrite it.
                    Ok(m) => {
                        return Err(ReferrersError::TagTaken {
                            image,
                            tag: format!("{repo}:{tag}"),
                            media_type: m.media_type,
                        });
                    }
                    Err(e) if e.status() == Some(404) => None,
                    Err(e) => return Err(fail(e)),
                };
                let entries = |bytes: &[u8]| crate::oci::platform::raw_entries(bytes).unwrap_or_default();
                let digests = |entries: &[serde_json::Value]| -> BTreeSet<String> {
                    entries.iter().filter_map(|d| d["digest"].as_str().map(str::to_string)).collect()
                };
                let theirs = existing.as_ref().map(|m| entries(&m.bytes)).unwrap_or_default();
                let have = digests(&theirs);
                let carried = carried_index(contents, &source_repo, &subject);
                let expected = match carried {
                    // Nothing at the destination the source's index does not list: the source's bytes.
                    Some((digest, stored)) if have.is_subset(&digests(&entries(&stored.bytes))) => {
                        if existing.as_ref().map(|m| &m.digest) != Some(digest) {
                            client.put_manifest(&repo, &tag, &stored.media_type, &stored.bytes).await.map_err(fail)?;
                            attached.indexes_written += 1;
                        }
                        Some(digest.clone())
                    }
                    // The destination's own entries stay: a merged index, when it lacks some of ours.
                    _ => {
                        let missing: Vec<serde_json::Value> = ours
                            .into_iter()
                            .filter(|d| d["digest"].as_str().is_some_and(|x| !have.contains(x)))
                            .collect();
                        if !missing.is_empty() {
                            let mut merged = theirs;
                            merged.extend(missing);
                            let index =
                                serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": merged});
                            let bytes = bytes::Bytes::from(serde_json::to_vec(&index).expect("an index serialises"));
                            client.put_manifest(&repo, &tag, OCI_INDEX, &bytes).await.map_err(fail)?;
                            if existing.is_some() {
                                attached.indexes_merged += 1;
                            } else {
                                attached.indexes_written += 1;
                            }
                        }
                        None
                    }
                };
                let back = client.get_manifest(&repo, &tag).await.map_err(fail)?;
                if let Some(expected) = expected
                    && back.digest != expected
                {
                    return Err(ReferrersError::Differs {
                        image,
                        what: format!("{repo}:{tag}"),
                        found: back.digest.to_string(),
                        expected,
                    });
                }
                digests(&entries(&back.bytes))
            }
        };
        if let Some(missing) = ours_digests.iter().find(|d| !listed.contains(*d)) {
            return Err(ReferrersError::Differs {
                image,
                what: format!("the referrers list of {repo}@{subject}"),
                found: format!("a list without {missing}"),
                expected: missing.parse().expect("a digest from the archive"),
            });
        }
        attached.subjects += 1;
    }
    Ok(attached)
}

/// The source's tag schema index for `subject` in `source_repo`, when the archive carries it.
fn carried_index<'a>(
    contents: &'a BundleContents,
    source_repo: &str,
    subject: &Digest,
) -> Option<(&'a Digest, &'a crate::archive::contents::StoredManifest)> {
    contents
        .images
        .iter()
        .filter(|i| i.source.repository() == source_repo)
        .filter(|i| i.artifact.as_ref().is_some_and(|a| !a.is_artifact() && &a.subject == subject))
        .find_map(|i| contents.manifests.get(&i.digest).map(|m| (&i.digest, m)))
}

/// The descriptor a referrers list holds for a manifest: media type, digest, size, artifactType, annotations.
fn descriptor_of(digest: &Digest, media_type: &str, bytes: &[u8], record: &ArtifactRecord) -> serde_json::Value {
    let manifest: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let mut d = serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
    let artifact_type = manifest
        .get("artifactType")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| record.artifact_type.clone())
        .or_else(|| manifest.pointer("/config/mediaType").and_then(|v| v.as_str()).map(str::to_string));
    if let Some(t) = artifact_type {
        d["artifactType"] = serde_json::Value::String(t);
    }
    if let Some(a) = manifest.get("annotations").filter(|a| a.is_object()) {
        d["annotations"] = a.clone();
    }
    d
}
