//! `--platform`: which platforms of a multi-arch image travel, decided without ever breaking a digest.
//!
//! Dropping entries from an index makes a new index with a new digest. That is honest only where nobody holds
//! the old digest: a tag reference. So a tag gets a new index (`PlatformMode::Filter`) whose entries are the
//! original descriptors, byte-for-byte the same children; a digest-pinned reference keeps its index whole; and
//! `PlatformMode::Sparse` keeps the original index bytes but carries only the chosen children, for registries
//! that accept an index whose children are missing. docs/usage.md, "Platforms", has the trade-offs.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::oci::digest::Digest;
use crate::oci::manifest::{Descriptor, Platform};

/// BuildKit's attestation manifests sit in the index as `unknown/unknown` entries that name the image manifest
/// they describe in this annotation.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// One `os/arch[/variant]` the user chose.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for PlatformSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<PlatformSpec, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(format!("`{s}` is not os/arch or os/arch/variant (like linux/amd64 or linux/arm64/v8)"));
        }
        Ok(PlatformSpec {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl PlatformSpec {
    /// Without a variant, any variant of the os/arch matches (`linux/arm` keeps v6 and v7). With one, it must
    /// be equal; arm64 without a variant is v8, as containerd normalises it.
    pub fn matches(&self, p: &Platform) -> bool {
        if !self.os.eq_ignore_ascii_case(&p.os) || !self.architecture.eq_ignore_ascii_case(&p.architecture) {
            return false;
        }
        let Some(want) = &self.variant else { return true };
        let have = p.variant.as_deref().map(str::to_ascii_lowercase);
        let default = (self.architecture == "arm64").then_some("v8");
        have.as_deref().or(default) == Some(want.as_str())
    }
}

/// What to do with an index when platforms are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PlatformMode {
    /// A new index listing only the chosen platforms; the tag points at it.
    #[default]
    Filter,
    /// The original index, bytes and digest, with only the chosen children carried.
    Sparse,
}

/// The platforms chosen, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformChoice {
    pub platforms: Vec<PlatformSpec>,
    pub mode: PlatformMode,
}

impl PlatformChoice {
    pub fn matches(&self, p: &Platform) -> bool {
        self.platforms.iter().any(|s| s.matches(p))
    }

    pub fn describe(&self) -> String {
        self.platforms.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Whether an index entry is a BuildKit attestation manifest, and for which manifest.
pub fn attestation_subject(entry: &Descriptor) -> Option<&str> {
    let a = entry.annotations.as_ref()?;
    (a.get(REFERENCE_TYPE).map(String::as_str) == Some("attestation-manifest"))
        .then(|| a.get(REFERENCE_DIGEST).map(String::as_str))
        .flatten()
}

/// Which entries of one index stay, given what was decided for its nested indexes (`nested_kept`: the entries
/// that are indexes and still hold something). Platform entries stay when chosen; entries without a platform
/// (not images of one platform) stay; an attestation stays with the manifest it describes.
pub fn keep(entries: &[Descriptor], choice: &PlatformChoice, nested_kept: &BTreeSet<usize>) -> Vec<bool> {
    let mut keep: Vec<bool> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if crate::oci::manifest::is_index(&e.media_type) {
                nested_kept.contains(&i)
            } else if attestation_subject(e).is_some() {
                false // decided below, once the images are
            } else {
                e.platform.as_ref().is_none_or(|p| choice.matches(p))
            }
        })
        .collect();
    let kept: BTreeSet<String> =
        entries.iter().zip(&keep).filter(|(_, k)| **k).map(|(e, _)| e.digest.to_string()).collect();
    for (i, e) in entries.iter().enumerate() {
        if let Some(subject) = attestation_subject(e) {
            keep[i] = kept.contains(subject);
        }
    }
    keep
}

/// The index `original` with only `entries` in `manifests`, everything else as it was. The entries are the
/// original descriptors (nested indexes with their new digest and size). Keys come out sorted, so the same
/// input always gives the same bytes.
pub fn filtered_index(original: &[u8], entries: Vec<serde_json::Value>) -> Result<Bytes, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(original)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("manifests".into(), serde_json::Value::Array(entries));
    }
    Ok(Bytes::from(serde_json::to_vec(&value)?))
}

/// The raw descriptors of an index, as JSON values (annotations, urls and anything else kept).
pub fn raw_entries(index: &[u8]) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        manifests: Vec<serde_json::Value>,
    }
    Ok(serde_json::from_slice::<Raw>(index)?.manifests)
}

/// A raw descriptor pointing at a new child (a filtered nested index).
pub fn repoint(mut entry: serde_json::Value, digest: &Digest, size: u64) -> serde_json::Value {
    if let Some(obj) = entry.as_object_mut() {
        obj.insert("digest".into(), serde_json::Value::String(digest.to_string()));
        obj.insert("size".into(), serde_json::Value::from(size));
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform { os: os.into(), architecture: arch.into(), variant: variant.map(Into::into) }
    }

    #[test]
    fn parses_and_matches_variants() {
        let amd: PlatformSpec = "linux/amd64".parse().unwrap();
        assert!(amd.matches(&p("linux", "amd64", None)));
        assert!(!amd.matches(&p("linux", "arm64", None)));
        let arm: PlatformSpec = "linux/arm".parse().unwrap();
        assert!(arm.matches(&p("linux", "arm", Some("v6"))) && arm.matches(&p("linux", "arm", Some("v7"))));
        let v7: PlatformSpec = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&p("linux", "arm", Some("v6"))) && v7.matches(&p("linux", "arm", Some("v7"))));
        let v8: PlatformSpec = "linux/arm64/v8".parse().unwrap();
        assert!(v8.matches(&p("linux", "arm64", None)));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<PlatformSpec>().is_err(), "{bad}");
        }
    }

    fn entry(digest: &Digest, platform: Option<Platform>, subject: Option<&Digest>) -> Descriptor {
        Descriptor {
            media_type: crate::oci::manifest::OCI_MANIFEST.into(),
            digest: digest.clone(),
            size: 1,
            platform,
            annotations: subject.map(|s| {
                [
                    (REFERENCE_TYPE.to_string(), "attestation-manifest".to_string()),
                    (REFERENCE_DIGEST.into(), s.to_string()),
                ]
                .into()
            }),
            artifact_type: None,
        }
    }

    #[test]
    fn keeps_attestations_of_kept_platforms_only() {
        let (a, b, att_a, att_b) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"x"), Digest::of(b"y"));
        let entries = vec![
            entry(&a, Some(p("linux", "amd64", None)), None),
            entry(&b, Some(p("linux", "arm64", None)), None),
            entry(&att_a, Some(p("unknown", "unknown", None)), Some(&a)),
            entry(&att_b, Some(p("unknown", "unknown", None)), Some(&b)),
        ];
        let choice = PlatformChoice { platforms: vec!["linux/amd64".parse().unwrap()], mode: PlatformMode::Filter };
        assert_eq!(keep(&entries, &choice, &BTreeSet::new()), vec![true, false, true, false]);
    }

    #[test]
    fn filtered_index_is_deterministic_and_keeps_other_fields() {
        let original = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","annotations":{"z":"1"},"manifests":[{"digest":"sha256:1","size":1},{"digest":"sha256:2","size":2}]}"#;
        let entries = raw_entries(original).unwrap();
        let once = filtered_index(original, vec![entries[1].clone()]).unwrap();
        let again = filtered_index(original, vec![entries[1].clone()]).unwrap();
        assert_eq!(once, again);
        let v: serde_json::Value = serde_json::from_slice(&once).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(v["annotations"]["z"], "1");
    }
}
