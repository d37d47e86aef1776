//! `bundle check`: the site's proof before `helm install`, and after it.
//!
//! The values file is proven at export for a sentinel destination; what the site runs is another render, with
//! its own values, against its own registry. So the site asks the same questions of that render: for every image
//! a pod will pull (found by discovery: `image:` keys, images in env, args and ConfigMaps, operators' images kept
//! in pieces), is it under the destination, and is it there? The answer comes from the destination itself (a
//! HEAD of the tag or digest, with the registry config's credentials), not from what the bundle says it pushed.

use std::collections::BTreeMap;

use futures_util::{StreamExt, stream};
use serde::Serialize;

use crate::chart::discover::{Finding, Incomplete};
use crate::oci::destination::Destination;
use crate::oci::reference::ImageRef;
use crate::registry::{Registries, Role};

/// What one image's check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "detail")]
pub enum Status {
    /// Under the destination, and its tag or digest is there.
    Ok,
    /// The pod would pull it from somewhere else.
    NotUnder,
    /// Under the destination, but the destination does not have it.
    Missing,
    /// Not a valid image reference (the pod could not pull it anywhere).
    Invalid(String),
    /// The destination could not be asked (unreachable, credentials refused): the reason.
    Unchecked(String),
}

impl Status {
    /// The word the table prints.
    pub fn word(&self, dest: &str) -> String {
        match self {
            Status::Ok => "ok".into(),
            Status::NotUnder => format!("not under {dest}"),
            Status::Missing => format!("missing at {dest}"),
            Status::Invalid(_) => "invalid".into(),
            Status::Unchecked(_) => "unchecked".into(),
        }
    }
}

/// One image a pod will pull, where it was found, and what the destination said.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    pub reference: String,
    #[serde(flatten)]
    pub status: Status,
    pub found: Vec<Finding>,
}

/// The whole check.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub format_version: u32,
    pub destination: String,
    pub images: Vec<Checked>,
    /// Names that are no image reference (an operator's component left for the user to complete): listed, not
    /// checked.
    pub incomplete: Vec<Incomplete>,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.images.iter().all(|c| c.status == Status::Ok)
    }

    /// How many images have each status word.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in &self.images {
            *out.entry(c.status.word(&self.destination)).or_default() += 1;
        }
        out
    }
}

/// Whether `image` is under `dest`: on its registry, under its prefix.
pub fn under(image: &ImageRef, dest: &Destination) -> bool {
    image.registry() == dest.registry
        && dest.prefix.as_deref().is_none_or(|p| image.repository().strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// Check every image of `findings` against `dest`, `concurrency` questions at a time.
pub async fn check(
    registries: &Registries,
    dest: &Destination,
    findings: Vec<Finding>,
    incomplete: Vec<Incomplete>,
    concurrency: usize,
) -> Report {
    let mut by_reference: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
    for f in findings {
        by_reference.entry(f.reference.clone()).or_default().push(f);
    }
    let images = stream::iter(by_reference)
        .map(|(reference, found)| async move {
            let status = match ImageRef::parse(&reference) {
                Err(e) => Status::Invalid(e.to_string()),
                Ok(image) if !under(&image, dest) => Status::NotUnder,
                Ok(image) => present(registries, &image).await,
            };
            Checked { reference, status, found }
        })
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    Report { format_version: 1, destination: crate::chart::values_out::destination_text(dest), images, incomplete }
}

/// A HEAD of the image's digest (what the runtime pulls when the reference pins one) or tag at its registry.
async fn present(registries: &Registries, image: &ImageRef) -> Status {
    let client = match registries.client(image.registry(), Role::Destination) {
        Ok(c) => c,
        Err(e) => return Status::Unchecked(crate::support::error_text::chain_line(&e)),
    };
    match client.head_manifest(image.repository(), &image.manifest_reference()).await {
        Ok(Some(_)) => Status::Ok,
        Ok(None) => Status::Missing,
        Err(e) if e.status() == Some(404) => Status::Missing,
        Err(e) => Status::Unchecked(crate::support::error_text::chain_line(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_means_the_registry_and_the_prefix_on_a_path_boundary() {
        let dest = Destination::parse("reg.local:5000/mirror").unwrap();
        let r = |s: &str| ImageRef::parse(s).unwrap();
        assert!(under(&r("reg.local:5000/mirror/org/a:1"), &dest));
        assert!(!under(&r("reg.local:5000/mirrored/org/a:1"), &dest));
        assert!(!under(&r("reg.local:5000/org/a:1"), &dest));
        assert!(!under(&r("quay.io/mirror/org/a:1"), &dest));
        assert!(under(&r("reg.local:5000/anything:1"), &Destination::parse("reg.local:5000").unwrap()));
    }
}
