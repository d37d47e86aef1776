//! Signatures, attestations and SBOMs travel with their images and resolve at the destination from the same
//! digests: cosign's tags (for an index and for one of its platform manifests), an attestation, an SBOM referrer
//! in the referrers tag schema, and a signature on that SBOM; exported, verified, imported under a prefix into a
//! destination that already lists a referrer of its own, and copied.

use crate::harness::*;

const COSIGN_SIG: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const SPDX: &str = "application/spdx+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

fn tag_of(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// An artifact manifest: an empty config, one layer, optionally a subject and an artifactType.
fn artifact(
    p: &Pusher,
    repo: &str,
    layer_type: &str,
    payload: &str,
    subject: Option<&Blob>,
    artifact_type: Option<&str>,
) -> Blob {
    let config = Blob::new(b"{}".to_vec());
    let layer = Blob::new(payload.as_bytes().to_vec());
    p.blob(repo, &config);
    p.blob(repo, &layer);
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": EMPTY, "digest": config.digest, "size": config.bytes.len()},
        "layers": [{"mediaType": layer_type, "digest": layer.digest, "size": layer.bytes.len()}],
        "annotations": {"org.example.note": payload},
    });
    if let Some(s) = subject {
        m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": s.digest, "size": s.bytes.len()});
    }
    if let Some(t) = artifact_type {
        m["artifactType"] = serde_json::json!(t);
    }
    Blob::new(serde_json::to_vec(&m).unwrap())
}

/// A referrers tag schema index as other tools write it: keys in their own order (not sorted, as serde_json
/// writes them), indented, with a trailing newline. Re-serialising it would change its digest.
fn referrers_index(entries: &[(&Blob, &str)]) -> Blob {
    let manifests: Vec<String> = entries
        .iter()
        .map(|(b, t)| {
            format!(
                "    {{\n      \"mediaType\": \"{OCI_MANIFEST}\",\n      \"size\": {},\n      \"digest\": \"{}\",\n      \"artifactType\": \"{t}\"\n    }}",
                b.bytes.len(),
                b.digest
            )
        })
        .collect();
    let text = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{OCI_INDEX}\",\n  \"manifests\": [\n{}\n  ]\n}}\n",
        manifests.join(",\n")
    );
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("the index is JSON");
    assert_ne!(serde_json::to_vec(&parsed).unwrap(), text.as_bytes(), "serialised unlike serde_json would");
    Blob::new(text.into_bytes())
}

pub(crate) struct Signed {
    pub(crate) set: SampleSet,
    /// (tag, manifest) of every cosign-tag artifact.
    tags: Vec<(String, Blob)>,
    pub(crate) sbom: Blob,
    /// The tag schema's index listing the SBOM, as the source holds it.
    index: Blob,
    /// The platform manifest the SBOM is attached to.
    pub(crate) sbom_subject: String,
}

pub(crate) fn seed_signed(base: &str) -> Signed {
    let set = seed_sample(base, 91, 32 * 1024);
    let p = Pusher::new(base);
    let agent = &set.images[0];
    let repo = agent.repo.as_str();
    let amd = agent.manifests[1].clone();
    let mut tags = Vec::new();
    for (subject, suffix, layer_type, note) in [
        (&agent.root, "sig", COSIGN_SIG, "index signature"),
        (&amd, "sig", COSIGN_SIG, "amd64 signature"),
        (&agent.root, "att", DSSE, "index provenance"),
    ] {
        let m = artifact(&p, repo, layer_type, note, None, None);
        let tag = format!("{}.{suffix}", tag_of(&subject.digest));
        p.manifest(repo, &tag, OCI_MANIFEST, &m.bytes);
        tags.push((tag, m));
    }
    // An SBOM of the amd64 manifest, a referrer listed in the tag schema's index, and a signature on the SBOM.
    let sbom = artifact(&p, repo, SPDX, r#"{"spdxVersion":"SPDX-2.3"}"#, Some(&amd), Some(SPDX));
    p.manifest(repo, &sbom.digest, OCI_MANIFEST, &sbom.bytes);
    let index = referrers_index(&[(&sbom, SPDX)]);
    p.manifest(repo, &tag_of(&amd.digest), OCI_INDEX, &index.bytes);
    let sbom_sig = artifact(&p, repo, COSIGN_SIG, "sbom signature", None, None);
    let tag = format!("{}.sig", tag_of(&sbom.digest));
    p.manifest(repo, &tag, OCI_MANIFEST, &sbom_sig.bytes);
    tags.push((tag, sbom_sig));
    Signed { sbom_subject: amd.digest.clone(), set, tags, sbom, index }
}

/// At `base`/`repo`: every cosign tag has the source's digest, and the SBOM is listed for its subject by the
/// source's own index, byte for byte.
#[track_caller]
fn assert_attached(base: &str, repo: &str, s: &Signed) {
    assert_listed(base, repo, s);
    let (index, _) = get_manifest(base, repo, &tag_of(&s.sbom_subject)).expect("the referrers tag index");
    assert_eq!(sha256(&index), s.index.digest, "the referrers tag's index was re-serialised");
}

/// At `base`/`repo`: every cosign tag has the source's digest, and the SBOM is listed for its subject.
#[track_caller]
fn assert_listed(base: &str, repo: &str, s: &Signed) {
    for (tag, m) in &s.tags {
        let (bytes, _) = get_manifest(base, repo, tag).unwrap_or_else(|| panic!("{repo}:{tag} missing"));
        assert_eq!(sha256(&bytes), m.digest, "{repo}:{tag}");
    }
    let (bytes, _) = get_manifest(base, repo, &s.sbom.digest).expect("the SBOM manifest");
    assert_eq!(bytes, s.sbom.bytes);
    let (index, _) = get_manifest(base, repo, &tag_of(&s.sbom_subject)).expect("the referrers tag index");
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let listed: Vec<&str> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert!(listed.contains(&s.sbom.digest.as_str()), "{index}");
    let entry = index["manifests"].as_array().unwrap().iter().find(|m| m["digest"] == s.sbom.digest.as_str()).unwrap();
    assert_eq!(entry["artifactType"], SPDX);
}

#[test]
fn signatures_attestations_and_sboms_travel_and_resolve_from_the_same_digests() {
    let src = Registry::start();
    let dst = Registry::start();
    let s = seed_signed(&src.base_url());
    let ws = Workspace::new();
    let refs: Vec<String> = s.set.images.iter().map(|i| i.reference(&src.host())).collect();
    let r = ws.export(&refs, "signed.tar.zst");
    assert!(
        r.stderr.contains("Found 5 artifacts attached to them: 3 signatures, 1 attestations, 1 SBOMs"),
        "{}",
        r.stderr
    );
    ws.bundle(&["verify", "signed.tar.zst"]).success();

    let inspect = ws.bundle(&["inspect", "signed.tar.zst", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    let rows = json["images"].as_array().unwrap();
    let agent = rows.iter().find(|i| i["source"].as_str().unwrap().ends_with("agent:7.51.1")).unwrap();
    assert_eq!(agent["attached"], serde_json::json!({"signatures": 3, "attestations": 1, "sboms": 1, "other": 0}));
    let sbom = rows.iter().find(|i| i["digest"] == s.sbom.digest.as_str()).expect("the SBOM is listed");
    assert_eq!(sbom["artifact"]["kind"], "sbom");
    assert_eq!(sbom["artifact"]["artifactType"], SPDX);
    assert_eq!(sbom["artifact"]["subject"], s.sbom_subject.as_str());
    assert_eq!(sbom["artifact"]["attachedBy"], "referrers");
    let nginx = rows.iter().find(|i| i["source"].as_str().unwrap().ends_with("nginx:1.25")).unwrap();
    assert_eq!(nginx["attached"]["signatures"], 0);
    let table = ws.bundle(&["inspect", "signed.tar.zst"]).success();
    assert!(table.stdout.contains("sbom") && table.stdout.contains("signature"), "{}", table.stdout);
    // The inventory's packages are exactly what was seeded: the four images, the four cosign-tag artifacts and
    // the SBOM, by digest.
    let mut seeded: Vec<String> = s.set.images.iter().map(|i| i.root.digest.clone()).collect();
    seeded.extend(s.tags.iter().map(|(_, m)| m.digest.clone()));
    seeded.push(s.sbom.digest.clone());
    assert_eq!(seeded.len(), 9);
    assert_spdx_inventory(&ws, "signed.tar.zst", &seeded);

    // Into a destination without the Referrers API and without the tag: the source's index, byte for byte.
    let r = ws.bundle(&["import", "-d", &format!("{}/clean", dst.host()), "signed.tar.zst"]).success();
    assert!(
        r.stderr.contains("4 cosign tags and the referrers of 1 manifests read back (1 referrers indexes written)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("merged"), "{}", r.stderr);
    assert_attached(&dst.base_url(), "clean/stackstate/agent", &s);
    let again = ws.bundle(&["import", "-d", &format!("{}/clean", dst.host()), "signed.tar.zst"]).success();
    assert!(again.stderr.contains("(0 referrers indexes written)"), "{}", again.stderr);

    // The destination already lists a referrer of its own for the SBOM's subject: it must stay listed, in an
    // index merged with the archive's (so with a digest of its own), and the import says so.
    let repo = "mirror/stackstate/agent";
    let p = Pusher::new(&dst.base_url());
    let theirs = artifact(&p, repo, "text/plain", "theirs", None, Some("application/vnd.example.note"));
    p.manifest(repo, &theirs.digest, OCI_MANIFEST, &theirs.bytes);
    let existing = referrers_index(&[(&theirs, "application/vnd.example.note")]);
    p.manifest(repo, &tag_of(&s.sbom_subject), OCI_INDEX, &existing.bytes);

    let r = ws.bundle(&["import", "-d", &format!("{}/mirror", dst.host()), "signed.tar.zst"]).success();
    assert!(
        r.stderr.contains("4 cosign tags and the referrers of 1 manifests read back (0 referrers indexes written)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("1 referrers indexes at ") && r.stderr.contains("merged with the archive's"),
        "{}",
        r.stderr
    );
    assert_listed(&dst.base_url(), repo, &s);
    let (index, _) = get_manifest(&dst.base_url(), repo, &tag_of(&s.sbom_subject)).unwrap();
    assert_ne!(sha256(&index), s.index.digest);
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert!(
        index["manifests"].as_array().unwrap().iter().any(|m| m["digest"] == theirs.digest.as_str()),
        "lost the destination's own referrer: {index}"
    );
    // The images themselves are unchanged.
    let agent_img = &s.set.images[0];
    assert_eq!(sha256(&get_manifest(&dst.base_url(), repo, &agent_img.tag).unwrap().0), agent_img.root.digest);

    // A re-import changes nothing and still reads everything back.
    let again = ws.bundle(&["import", "-d", &format!("{}/mirror", dst.host()), "signed.tar.zst"]).success();
    assert!(again.stderr.contains("(0 referrers indexes written)"), "{}", again.stderr);
    assert!(!again.stderr.contains("merged"), "{}", again.stderr);
}

#[test]
fn no_referrers_leaves_them_out_and_copy_carries_them() {
    let src = Registry::start();
    let s = seed_signed(&src.base_url());
    let ws = Workspace::new();
    let agent = s.set.images[0].reference(&src.host());
    ws.bundle(&["export", "--no-referrers", "--image", &agent, "-o", "plain.tar.zst"]).success();
    let inspect = ws.bundle(&["inspect", "plain.tar.zst", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(json["images"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["images"][0]["attached"]["signatures"], 0);

    // A filtered index is new: signatures of the original index stay behind, the platform manifests' travel.
    let r = ws.bundle(&["export", "--platform", "linux/amd64", "--image", &agent, "-o", "amd.tar.zst"]).success();
    assert!(r.stderr.contains("2 signatures/attestations of its original index stay behind"), "{}", r.stderr);
    let inspect = ws.bundle(&["inspect", "amd.tar.zst", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(
        json["images"][0]["attached"],
        serde_json::json!({"signatures": 2, "attestations": 0, "sboms": 1, "other": 0})
    );

    let dst = Registry::start();
    let dry = ws.bundle(&["copy", "-d", &dst.host(), "--image", &agent, "-t"]).success();
    assert!(dry.stdout.contains(&format!("{}.sig", tag_of(&s.set.images[0].root.digest))), "{}", dry.stdout);
    ws.bundle(&["copy", "-d", &dst.host(), "--image", &agent]).success();
    assert_attached(&dst.base_url(), "stackstate/agent", &s);
}

/// `inspect --format spdx-json` validates against the SPDX 2.3 schema, with a package per image and artifact,
/// each with its digest and purl, and each artifact related to its image.
fn assert_spdx_inventory(ws: &Workspace, archive: &str, digests: &[String]) {
    let r = ws.bundle(&["inspect", archive, "--format", "spdx-json"]).success();
    let doc = ws.write("inventory.spdx.json", &r.stdout);
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spdx/spdx-2.3-schema.json");
    let check = std::process::Command::new(venv_python())
        .args(["-c", "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))); print('valid')"])
        .arg(&doc)
        .arg(&schema)
        .output()
        .unwrap();
    assert!(check.status.success(), "not valid SPDX 2.3: {}", String::from_utf8_lossy(&check.stderr));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["spdxVersion"], "SPDX-2.3");
    let packages = v["packages"].as_array().unwrap();
    let mut listed: Vec<String> = packages
        .iter()
        .map(|p| format!("sha256:{}", p["checksums"][0]["checksumValue"].as_str().unwrap_or_default()))
        .collect();
    listed.sort();
    let mut expected = digests.to_vec();
    expected.sort();
    assert_eq!(listed, expected, "one package per image and artifact, by digest");
    for p in packages {
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256", "{p}");
        assert!(p["externalRefs"][0]["referenceLocator"].as_str().unwrap().starts_with("pkg:oci/"), "{p}");
    }
    let others = v["relationships"].as_array().unwrap().iter().filter(|r| r["relationshipType"] == "OTHER").count();
    assert_eq!(others, 5, "one relationship per artifact: {v}");
    // An invalid document is caught (the check can fail).
    let broken = ws
        .write("broken.spdx.json", &r.stdout.replacen("SPDX-2.3", "SPDX-9", 1).replacen("\"SPDXID\"", "\"SPDXid\"", 1));
    let check = std::process::Command::new(venv_python())
        .args(["-c", "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))"])
        .arg(&broken)
        .arg(&schema)
        .output()
        .unwrap();
    assert!(!check.status.success(), "the schema check accepts anything");
}
