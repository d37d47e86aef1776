//! Vendor signatures, checked before anything is written: every image's top manifest (its index, or its only
//! manifest) must carry a cosign signature by one of the given keys over its own digest, and every platform
//! manifest that carries signatures must have one that verifies too.
//!
//! cosign's signature is an OCI manifest found under the tag `sha256-<hex>.sig` beside the image, or (cosign's OCI
//! 1.1 mode) as a referrer of the signed manifest. Each of its layers is a simple-signing payload (JSON naming
//! `critical.image.docker-manifest-digest`) with the signature in the `dev.cosignproject.cosign/signature`
//! annotation: base64 ECDSA P-256 (over the payload's SHA-256) or Ed25519. A signature proves the key holder
//! signed the payload; the payload's digest is what ties it to this image, so both are checked. Discovery
//! (`export::referrers`) has already found and resolved the signature manifests; only their payloads are read
//! here. Keyless signatures (Fulcio certificates, Rekor entries) need a trusted root and are not checked.

use std::collections::BTreeMap;

use futures_util::{StreamExt as _, stream};

use super::keys::TrustedKey;
use crate::export::resolve::ResolvedImage;
use crate::oci::digest::Digest;
use crate::oci::layout::{ArtifactKind, AttachedBy, SignatureRecord};
use crate::oci::reference::ImageRef;
use crate::registry::{PoolError, Registries, RegistryError, Role};

pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
/// A payload is a few hundred bytes; more is not a payload.
const MAX_PAYLOAD_BYTES: u64 = 256 * 1024;

/// Why a manifest has no signature that verifies. Ordered: the most telling reason is reported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    NoSignature,
    Malformed(String),
    OtherKey,
    OtherDigest(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoSignature => write!(f, "no signature"),
            Refusal::Malformed(what) => write!(f, "malformed signature: {what}"),
            Refusal::OtherKey => write!(f, "signed by another key"),
            Refusal::OtherDigest(d) => write!(f, "the signed payload is for another digest ({d})"),
        }
    }
}

/// One manifest that failed, and why.
#[derive(Debug, Clone)]
pub struct Failed {
    pub image: String,
    pub manifest: Digest,
    /// `index`, `linux/amd64`, …
    pub what: String,
    pub refusal: Refusal,
    /// Set on an unsigned index whose platform manifests are signed.
    pub note: Option<String>,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {}): {}", self.image, self.what, self.manifest, self.refusal)?;
        if let Some(n) = &self.note {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageSignatureError {
    #[error("{} of {of} images failed the signature check, so nothing was written:{}", failed_images(.failed), list(.failed))]
    Failed { of: usize, failed: Vec<Failed>, keys: String },
    #[error("cannot read the signature payload {digest} of {image}")]
    Registry {
        image: String,
        digest: Digest,
        #[source]
        source: RegistryError,
    },
    #[error("cannot read the signature of the original index of {image}")]
    Resolve {
        image: String,
        #[source]
        source: Box<crate::export::resolve::ResolveError>,
    },
    #[error("cannot read the signatures of {image}")]
    Pool {
        image: String,
        #[source]
        source: PoolError,
    },
}

fn failed_images(failed: &[Failed]) -> usize {
    failed.iter().map(|f| &f.image).collect::<std::collections::BTreeSet<_>>().len()
}

fn list(failed: &[Failed]) -> String {
    failed.iter().map(|f| format!("\n  - {f}")).collect()
}

impl crate::support::hint::Hint for ImageSignatureError {
    fn hint(&self) -> Option<String> {
        match self {
            ImageSignatureError::Failed { keys, failed, .. } => {
                let unsigned_index = failed.iter().any(|f| f.note.is_some());
                Some(format!(
                    "checked with {keys}. Carry only what the vendor signed: check that these are the vendor's keys, that the images are the vendor's (not a mirror's rebuild){}; `cosign verify --key KEY IMAGE` shows the same",
                    if unsigned_index {
                        ", and ask the vendor to sign the index itself (cosign sign --recursive)"
                    } else {
                        ""
                    }
                ))
            }
            ImageSignatureError::Registry { source, .. } => source.hint(),
            ImageSignatureError::Pool { source, .. } => source.hint(),
            ImageSignatureError::Resolve { source, .. } => source.hint(),
        }
    }
}

/// A manifest's outcome: the signature that verified, or why none did.
type Verdict = Result<SignatureRecord, Refusal>;

/// A manifest to check and where its signatures are.
struct Subject<'a> {
    image: &'a ResolvedImage,
    digest: Digest,
    what: String,
    /// The top manifest must verify; a platform manifest only where it carries signatures.
    required: bool,
    signatures: Vec<&'a ResolvedImage>,
}

/// Check every image of `images` (artifacts and what we made are not images) with `keys`; every failure is
/// reported at once. The records say which key verified which manifest, for bundle.json.
pub async fn check(
    registries: &Registries,
    images: &[ResolvedImage],
    keys: &[TrustedKey],
    concurrency: usize,
) -> Result<Vec<SignatureRecord>, ImageSignatureError> {
    let mut by_subject: BTreeMap<(&str, &Digest), Vec<&ResolvedImage>> = BTreeMap::new();
    for a in images {
        if let Some(r) = a.artifact.as_ref().filter(|r| r.kind == ArtifactKind::Signature && r.is_artifact()) {
            by_subject.entry((r.image.as_str(), &r.subject)).or_default().push(a);
        }
    }
    let checked: Vec<&ResolvedImage> = images.iter().filter(|i| !i.made_here() && i.artifact.is_none()).collect();
    let mut subjects = Vec::new();
    let mut fetched: Vec<ResolvedImage> = Vec::new();
    for img in &checked {
        let platforms = platform_names(img);
        let name = img.source.to_string();
        // --platform filter replaced the index: the vendor signed the original, whose signature stays behind, so
        // it is fetched for the check.
        let original = img.selection.as_ref().and_then(|s| s.original_digest.clone());
        if let Some(orig) = &original
            && let Some(sig) = cosign_tag_signature(registries, img, orig).await?
        {
            fetched.push(sig);
        }
        for m in &img.manifests {
            let top = m.digest == img.digest;
            let digest = if top { original.clone().unwrap_or_else(|| m.digest.clone()) } else { m.digest.clone() };
            let what = if !top {
                platforms.get(&m.digest).cloned().unwrap_or_else(|| "manifest".into())
            } else if crate::oci::manifest::is_index(&img.media_type) {
                "index".into()
            } else {
                "manifest".into()
            };
            let signatures = by_subject.get(&(name.as_str(), &digest)).cloned().unwrap_or_default();
            subjects.push((img, digest, what, top, signatures));
        }
    }
    let subjects: Vec<Subject> = subjects
        .into_iter()
        .map(|(image, digest, what, required, mut signatures)| {
            signatures.extend(fetched.iter().filter(|f| {
                f.artifact.as_ref().is_some_and(|r| r.subject == digest && r.image == image.source.to_string())
            }));
            Subject { image, digest, what, required, signatures }
        })
        .collect();

    let verdicts: Vec<Result<(usize, Verdict), ImageSignatureError>> = stream::iter(subjects.iter().enumerate())
        .map(|(i, s)| async move { Ok((i, verdict(registries, s, keys).await?)) })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut records = Vec::new();
    let mut failed = Vec::new();
    for v in verdicts {
        let (i, outcome) = v?;
        let s = &subjects[i];
        match outcome {
            Ok(record) => records.push(record),
            Err(Refusal::NoSignature) if !s.required => {}
            Err(refusal) => {
                let signed_children = s.required
                    && refusal == Refusal::NoSignature
                    && subjects
                        .iter()
                        .any(|o| std::ptr::eq(o.image, s.image) && !o.required && !o.signatures.is_empty());
                failed.push(Failed {
                    image: s.image.source.to_string(),
                    manifest: s.digest.clone(),
                    what: s.what.clone(),
                    refusal,
                    note: signed_children.then(|| {
                        "its platform manifests carry signatures, but the index that names them all does not".into()
                    }),
                });
            }
        }
    }
    if !failed.is_empty() {
        let keys = keys.iter().map(TrustedKey::describe).collect::<Vec<_>>().join(", ");
        return Err(ImageSignatureError::Failed { of: checked.len(), failed, keys });
    }
    records.sort_by(|a, b| (&a.image, &a.manifest).cmp(&(&b.image, &b.manifest)));
    Ok(records)
}

/// The platform of each child of the image's top index, by digest.
fn platform_names(img: &ResolvedImage) -> BTreeMap<Digest, String> {
    let Some(root) = img.manifests.iter().find(|m| m.digest == img.digest) else { return BTreeMap::new() };
    let Ok(links) = crate::oci::manifest::parse(&root.digest, Some(&root.media_type), &root.bytes) else {
        return BTreeMap::new();
    };
    links.children.iter().filter_map(|c| c.platform.as_ref().map(|p| (c.digest.clone(), p.to_string()))).collect()
}

/// The signature under cosign's tag for `digest` in the image's repository, resolved; `None` when there is none.
async fn cosign_tag_signature(
    registries: &Registries,
    img: &ResolvedImage,
    digest: &Digest,
) -> Result<Option<ResolvedImage>, ImageSignatureError> {
    let tag = format!("{}.sig", crate::export::referrers::digest_tag(digest));
    let reference = ImageRef::parse(&format!("{}/{}:{tag}", img.source.registry(), img.source.repository()))
        .expect("a reference built from a valid one");
    match crate::export::resolve::resolve(registries, &reference, None).await {
        Ok(mut sig) => {
            sig.artifact = Some(crate::oci::layout::ArtifactRecord {
                kind: ArtifactKind::Signature,
                subject: digest.clone(),
                image: img.source.to_string(),
                attached_by: AttachedBy::CosignTag,
                artifact_type: None,
            });
            Ok(Some(sig))
        }
        // No such tag: unsigned, which the verdict says.
        Err(e) if e.registry_error().and_then(RegistryError::status) == Some(404) => Ok(None),
        Err(e) => Err(ImageSignatureError::Resolve { image: img.source.to_string(), source: Box::new(e) }),
    }
}

/// The first signature of `subject` that verifies, or the most telling reason none does.
async fn verdict(
    registries: &Registries,
    subject: &Subject<'_>,
    keys: &[TrustedKey],
) -> Result<Verdict, ImageSignatureError> {
    let mut worst = Refusal::NoSignature;
    for sig in &subject.signatures {
        let Some(root) = sig.manifests.iter().find(|m| m.digest == sig.digest) else { continue };
        let layers = match crate::oci::manifest::parse(&root.digest, Some(&root.media_type), &root.bytes) {
            Ok(l) => l.blobs,
            Err(_) => {
                worst = worst.max(Refusal::Malformed("its manifest cannot be read".into()));
                continue;
            }
        };
        let signed: Vec<_> = layers
            .iter()
            .filter_map(|l| l.annotations.as_ref()?.get(SIGNATURE_ANNOTATION).map(|s| (l, s.clone())))
            .collect();
        if signed.is_empty() {
            worst = worst.max(Refusal::Malformed(format!(
                "{} has no layer with a {SIGNATURE_ANNOTATION} annotation",
                sig.source
            )));
            continue;
        }
        for (layer, annotation) in signed {
            use base64::Engine as _;
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(annotation.trim()) else {
                worst = worst.max(Refusal::Malformed(format!("the signature of layer {} is not base64", layer.digest)));
                continue;
            };
            if layer.size > MAX_PAYLOAD_BYTES {
                worst = worst.max(Refusal::Malformed(format!("payload {} is {} bytes", layer.digest, layer.size)));
                continue;
            }
            let client = registries
                .client(sig.source.registry(), Role::Source)
                .map_err(|source| ImageSignatureError::Pool { image: subject.image.source.to_string(), source })?;
            let payload = client
                .get_blob_bytes(sig.source.repository(), &layer.digest, MAX_PAYLOAD_BYTES)
                .await
                .map_err(|source| ImageSignatureError::Registry {
                    image: subject.image.source.to_string(),
                    digest: layer.digest.clone(),
                    source,
                })?;
            let Some(key) = keys.iter().find(|k| k.verify_raw(&payload, &raw)) else {
                worst = worst.max(Refusal::OtherKey);
                continue;
            };
            match signed_digest(&payload) {
                Ok(d) if d == subject.digest.as_str() => {
                    return Ok(Ok(SignatureRecord {
                        image: subject.image.source.to_string(),
                        manifest: subject.digest.clone(),
                        key: key.fingerprint.clone(),
                        algorithm: key.algorithm(),
                        signature: sig.source.to_string(),
                    }));
                }
                Ok(d) => worst = worst.max(Refusal::OtherDigest(d)),
                Err(what) => worst = worst.max(Refusal::Malformed(what)),
            }
        }
    }
    Ok(Err(worst))
}

/// `critical.image.docker-manifest-digest` of a simple-signing payload of cosign's type.
pub fn signed_digest(payload: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| "the signed payload is not JSON".to_string())?;
    let critical = &v["critical"];
    if critical["type"].as_str() != Some(SIMPLE_SIGNING_TYPE) {
        return Err(format!("the signed payload's critical.type is not `{SIMPLE_SIGNING_TYPE}`"));
    }
    critical["image"]["docker-manifest-digest"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the signed payload has no critical.image.docker-manifest-digest".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_digest_and_refusal_order() {
        let p = br#"{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#;
        assert_eq!(signed_digest(p).unwrap(), "sha256:ab");
        assert!(signed_digest(br#"{"critical":{"type":"other"}}"#).unwrap_err().contains("critical.type"));
        assert!(signed_digest(b"nope").is_err());
        assert!(Refusal::OtherDigest("d".into()) > Refusal::OtherKey);
        assert!(Refusal::OtherKey > Refusal::Malformed("m".into()));
        assert!(Refusal::Malformed("m".into()) > Refusal::NoSignature);
    }
}
