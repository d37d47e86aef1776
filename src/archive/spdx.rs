//! An SPDX 2.3 document of an archive, for the board that approves what crosses the gap: one package per image
//! (digest, purl, platforms), the chart that asked for them, and the signatures, attestations and SBOMs attached.
//! Made from `bundle.json` alone, so it is as fast as `inspect` on any archive; `verify` proves the content.

use serde_json::{Value, json};

use crate::oci::digest::Digest;
use crate::oci::layout::{ArtifactKind, BundleImage, BundleMetadata};
use crate::oci::reference::ImageRef;

/// The document for `metadata`; `name` is the archive's file name, `created` an RFC 3339 UTC time.
pub fn document(metadata: &BundleMetadata, name: &str, created: &str) -> Value {
    let id = |i: usize| format!("SPDXRef-Image-{i}");
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let charts = metadata.all_charts();
    let chart_id =
        |k: usize| if charts.len() == 1 { "SPDXRef-Chart".to_string() } else { format!("SPDXRef-Chart-{k}") };
    for (k, c) in charts.iter().enumerate() {
        packages.push(json!({
            "SPDXID": chart_id(k),
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": format!("Helm chart from {}; its images were found by {} discovery", c.origin, c.discovery),
        }));
        relationships.push(relation("SPDXRef-DOCUMENT", "DESCRIBES", &chart_id(k), None));
    }
    // Which charts need an image: a single chart needs all; a suite's chart the images its proof judged.
    let normal = |r: &str| ImageRef::parse(r).map(|r| r.to_string()).unwrap_or_else(|_| r.to_string());
    let needs: Vec<std::collections::BTreeSet<String>> =
        charts.iter().map(|c| c.values_plan.iter().flat_map(|p| &p.images).map(|i| normal(i)).collect()).collect();
    let files: std::collections::HashMap<&str, &crate::oci::layout::FileRecord> =
        metadata.files.iter().map(|f| (f.image.as_str(), f)).collect();
    // The package of each image, by its source reference (artifacts name their image that way).
    let by_source: std::collections::HashMap<&str, usize> = metadata
        .images
        .iter()
        .enumerate()
        .filter(|(_, i)| i.artifact.is_none())
        .map(|(n, i)| (i.source.as_str(), n))
        .collect();
    for (n, img) in metadata.images.iter().enumerate() {
        // The tag schema's index is how the referrers were listed, not a component of its own.
        if img.artifact.as_ref().is_some_and(|a| !a.is_artifact()) {
            continue;
        }
        let mut p = package(&id(n), img);
        if let Some(f) = files.get(img.source.as_str()) {
            p["primaryPackagePurpose"] = json!("FILE");
            p["comment"] = json!(format!("file {} from {}: {} bytes, {}", f.name, f.origin, f.size, f.digest));
            packages.push(p);
            relationships.push(relation("SPDXRef-DOCUMENT", "DESCRIBES", &id(n), None));
            continue;
        }
        packages.push(p);
        if let Some(a) = &img.artifact {
            let subject = by_source.get(a.image.as_str()).map(|s| id(*s)).unwrap_or_else(|| "SPDXRef-DOCUMENT".into());
            let what = match a.kind {
                ArtifactKind::Signature => "signature",
                ArtifactKind::Attestation => "attestation",
                ArtifactKind::Sbom => "SBOM",
                ArtifactKind::Other => "artifact",
            };
            relationships.push(relation(
                &id(n),
                "OTHER",
                &subject,
                Some(format!("{what} attached to manifest {} of this image", a.subject)),
            ));
            continue;
        }
        if img.helm_chart {
            // charts/NAME:VERSION is the package of chart NAME.
            let k = charts.iter().position(|c| {
                img.source.rsplit_once(':').is_some_and(|(name, version)| {
                    name.ends_with(&format!("charts/{}", c.name)) && version == c.version.replace('+', "_")
                })
            });
            match k {
                Some(k) => relationships.push(relation(&id(n), "PACKAGE_OF", &chart_id(k), None)),
                None => relationships.push(relation("SPDXRef-DOCUMENT", "DESCRIBES", &id(n), None)),
            }
            continue;
        }
        let users: Vec<usize> = if charts.len() == 1 {
            vec![0]
        } else {
            (0..charts.len()).filter(|k| needs[*k].contains(&normal(&img.source))).collect()
        };
        if users.is_empty() {
            relationships.push(relation("SPDXRef-DOCUMENT", "DESCRIBES", &id(n), None));
        }
        for k in users {
            relationships.push(relation(&chart_id(k), "DEPENDS_ON", &id(n), None));
        }
    }
    let namespace = Digest::of(&metadata.to_json());
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("bundle archive {name}"),
        "documentNamespace": format!("https://spdx.org/spdxdocs/bundle-{}", namespace.hex()),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: {}-{}", metadata.tool.name, metadata.tool.version)],
            "comment": format!("The images of {name} as its bundle.json lists them; `bundle verify` proves the archive holds exactly these."),
        },
        "packages": packages,
        "relationships": relationships,
    })
}

fn relation(from: &str, kind: &str, to: &str, comment: Option<String>) -> Value {
    let mut r = json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to});
    if let Some(c) = comment {
        r["comment"] = Value::String(c);
    }
    r
}

fn package(id: &str, img: &BundleImage) -> Value {
    let reference = ImageRef::parse(&img.source).ok();
    let name = reference.as_ref().map(|r| r.name()).unwrap_or_else(|| img.source.clone());
    let version =
        reference.as_ref().and_then(|r| r.tag().map(str::to_string)).unwrap_or_else(|| img.digest.to_string());
    let purpose = if img.artifact.is_some() || img.helm_chart { "OTHER" } else { "CONTAINER" };
    let mut comment = format!("{} ({}), {} bytes with every manifest and blob", img.source, img.media_type, img.size);
    if !img.platforms.is_empty() {
        comment.push_str(&format!("; platforms {}", img.platforms.join(", ")));
    }
    if let Some(original) = img.platform_selection.as_ref().and_then(|s| s.original_digest.as_ref()) {
        comment.push_str(&format!("; filtered from index {original}"));
    }
    let mut p = json!({
        "SPDXID": id,
        "name": name,
        "versionInfo": version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": purpose,
        "checksums": [{"algorithm": "SHA256", "checksumValue": img.digest.hex()}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": comment,
    });
    if let Some(r) = &reference {
        p["externalRefs"] = json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl(r, &img.digest),
        }]);
    }
    p
}

/// `pkg:oci/NAME@sha256%3AHEX?repository_url=REGISTRY/PATH&tag=TAG` (the purl spec's OCI type).
pub fn purl(r: &ImageRef, digest: &Digest) -> String {
    let last = r.repository().rsplit('/').next().unwrap_or(r.repository());
    let mut out = format!(
        "pkg:oci/{last}@{}?repository_url={}/{}",
        digest.as_str().replace(':', "%3A"),
        r.registry(),
        r.repository()
    );
    if let Some(t) = r.tag() {
        out.push_str(&format!("&tag={t}"));
    }
    out
}

/// `SystemTime` as RFC 3339 UTC (`2026-11-30T15:04:05Z`), without a date library.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_purls() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_050_000);
        assert_eq!(rfc3339(t), "2026-11-30T14:46:40Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let r = ImageRef::parse("quay.io/stackstate/agent:7.51.1").unwrap();
        let d = Digest::of(b"x");
        assert_eq!(
            purl(&r, &d),
            format!("pkg:oci/agent@sha256%3A{}?repository_url=quay.io/stackstate/agent&tag=7.51.1", d.hex())
        );
    }
}
