//! Import of a delta: the blobs it leaves to its base must already be at the destination, found before anything
//! is pushed (and then mounted from where they are), or the import is refused naming them (`DeltaError`).

use futures_util::{StreamExt as _, TryStreamExt as _, stream};

use crate::archive::BundleContents;
use crate::export::delta::DeltaError;
use crate::import::push::{Destination, Presence, PushPlan};
use crate::oci::digest::Digest;
use crate::oci::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// Before a delta is pushed: every blob it leaves to its base that an incomplete image needs must be at the
/// destination, in the image's own repository or in one a base image was imported to (then it is mounted from
/// there). Found blobs become mount sources in `presence`; any missing one fails the import before a push.
pub async fn find_absent(
    client: &RegistryClient,
    dest: &Destination,
    plan: &PushPlan,
    contents: &BundleContents,
    presence: &mut Presence,
    concurrency: usize,
) -> Result<(), DeltaError> {
    let Some(delta) = contents.metadata.as_ref().and_then(|m| m.delta.as_ref()) else { return Ok(()) };
    let mut base_repos: Vec<String> = Vec::new();
    for r in delta.base.images.iter().filter_map(|s| ImageRef::parse(s).ok()) {
        let repo = dest.map(&r).repository().to_string();
        if !base_repos.contains(&repo) {
            base_repos.push(repo);
        }
    }
    // Only blobs an incomplete image still needs: a complete image's manifest proves its blobs are there.
    let wanted: Vec<(Digest, Vec<String>)> = delta
        .absent
        .iter()
        .filter(|b| !presence.present_somewhere.contains_key(&b.digest))
        .filter_map(|b| {
            let needing: Vec<String> = presence.missing_blobs.get(&b.digest)?.iter().cloned().collect();
            let mut candidates = needing.clone();
            candidates.extend(base_repos.iter().filter(|r| !needing.contains(r)).cloned());
            Some((b.digest.clone(), candidates))
        })
        .collect();
    let found: Vec<(Digest, Option<String>)> = stream::iter(wanted)
        .map(|(d, candidates)| async move {
            for repo in candidates {
                if client.head_blob(&repo, &d).await?.is_some() {
                    return Ok::<_, RegistryError>((d, Some(repo)));
                }
            }
            Ok((d, None))
        })
        .buffer_unordered(concurrency.max(1) * 2)
        .try_collect()
        .await?;
    let mut missing = Vec::new();
    for (d, at) in found {
        match at {
            Some(repo) => {
                if let Some(needing) = presence.missing_blobs.get_mut(&d)
                    && needing.remove(&repo)
                {
                    presence.blobs_present += 1;
                    if needing.is_empty() {
                        presence.missing_blobs.remove(&d);
                    }
                }
                presence.present_somewhere.insert(d, repo);
            }
            None => {
                let image = plan
                    .images
                    .iter()
                    .find(|p| contents.images[p.image].blobs.contains(&d))
                    .map(|p| p.source.to_string())
                    .unwrap_or_default();
                missing.push((d, image));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    Err(DeltaError::BaseMissing { destination: dest.registry.to_string(), base: Box::new(delta.base.clone()), missing })
}
