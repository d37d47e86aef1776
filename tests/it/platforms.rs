//! `--platform`: a tag's index becomes a new index of the chosen platforms whose children keep their digests;
//! pinned indexes travel whole; attestations follow their platform; nested indexes are filtered too; sparse
//! mode keeps the index digest and is refused, clearly, by a registry that needs every child.

use crate::harness::*;

const LAYER: usize = 64 * 1024;

fn manifest_json(base: &str, repo: &str, reference: &str) -> Option<(Vec<u8>, serde_json::Value)> {
    get_manifest(base, repo, reference).map(|(b, _)| {
        let v = serde_json::from_slice(&b).unwrap();
        (b, v)
    })
}

fn entry_digests(index: &serde_json::Value) -> Vec<String> {
    index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_string()).collect()
}

fn inspect_image(ws: &Workspace, archive: &str, suffix: &str) -> serde_json::Value {
    let r = ws.bundle(&["inspect", archive, "--json"]).success();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["images"].as_array().unwrap().iter().find(|i| i["source"].as_str().unwrap().ends_with(suffix)).unwrap().clone()
}

#[test]
fn platform_filter_makes_a_new_index_whose_children_keep_their_digests() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 71, LAYER);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    let mut args = vec!["export", "--platform", "linux/amd64", "-o", "amd.tar.zst"];
    for r in &refs {
        args.extend(["--image", r.as_str()]);
    }
    let r = ws.bundle(&args).success();
    let (agent, wait) = (&set.images[0], &set.images[1]);
    assert!(r.stderr.contains(&format!("index {} filtered to", agent.root.digest)), "{}", r.stderr);
    ws.bundle(&["verify", "amd.tar.zst"]).success();

    // The original digest is recorded beside the new one, for the OCI index and the Docker list alike.
    for (img, suffix) in [(agent, "agent:7.51.1"), (wait, "wait:1.0.0")] {
        let row = inspect_image(&ws, "amd.tar.zst", suffix);
        let sel = &row["platformSelection"];
        assert_eq!(sel["mode"], "filter", "{row}");
        assert_eq!(sel["originalDigest"], img.root.digest.as_str());
        assert_eq!(sel["dropped"], serde_json::json!(["linux/arm64"]));
        assert_ne!(row["digest"], img.root.digest.as_str());
        assert_eq!(row["platforms"], serde_json::json!(["linux/amd64"]));
    }

    // Same input, same bytes.
    args[4] = "amd-again.tar.zst";
    ws.bundle(&args).success();
    let a = std::fs::read(ws.path("amd.tar.zst")).unwrap();
    let b = std::fs::read(ws.path("amd-again.tar.zst")).unwrap();
    assert!(a == b, "two exports of the same filtered images differ");

    let dry = ws.bundle(&["import", "-d", &dst.host(), "amd.tar.zst", "-t"]).success();
    assert!(
        dry.stdout.contains(&format!(
            "Copying {} to {}/stackstate/agent:7.51.1 (dry-run) [platforms linux/amd64 of index {}",
            refs[0],
            dst.host(),
            agent.root.digest
        )),
        "{}",
        dry.stdout
    );
    ws.bundle(&["import", "-d", &dst.host(), "amd.tar.zst"]).success();
    for img in [agent, wait] {
        let (bytes, index) = manifest_json(&dst.base_url(), &img.repo, &img.tag).unwrap();
        assert_ne!(sha256(&bytes), img.root.digest);
        let amd = &img.manifests[1];
        let arm = &img.manifests[2];
        assert_eq!(entry_digests(&index), vec![amd.digest.clone()], "{index}");
        assert_eq!(get_manifest(&dst.base_url(), &img.repo, &amd.digest).unwrap().0, amd.bytes);
        assert!(get_manifest(&dst.base_url(), &img.repo, &arm.digest).is_none(), "arm64 travelled");
        // The rest of the index is the source's, media type included.
        let source: serde_json::Value = serde_json::from_slice(&img.root.bytes).unwrap();
        assert_eq!(index["mediaType"], source["mediaType"]);
        assert_eq!(index["manifests"][0], source["manifests"][0]);
    }
    // Single-platform images of the chosen platform travel as they are.
    let nginx = &set.images[2];
    assert_eq!(sha256(&get_manifest(&dst.base_url(), &nginx.repo, &nginx.tag).unwrap().0), nginx.root.digest);

    // copy filters the same way: the same new index, the same children.
    let dst2 = Registry::start();
    ws.bundle(&["copy", "-d", &dst2.host(), "--platform", "linux/amd64", "--image", &refs[0]]).success();
    let exported = get_manifest(&dst.base_url(), &agent.repo, &agent.tag).unwrap().0;
    assert_eq!(get_manifest(&dst2.base_url(), &agent.repo, &agent.tag).unwrap().0, exported);
    assert_eq!(
        get_manifest(&dst2.base_url(), &agent.repo, &agent.manifests[1].digest).unwrap().0,
        agent.manifests[1].bytes
    );
}

#[test]
fn a_digest_pinned_index_travels_whole_and_a_single_image_of_another_platform_is_an_error() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 72, LAYER);
    let ws = Workspace::new();
    let agent = &set.images[0];
    let pinned = format!("{}/{}@{}", src.host(), agent.repo, agent.root.digest);
    let r = ws.bundle(&["export", "--platform", "linux/amd64", "--image", &pinned, "-o", "p.tar.zst"]).success();
    assert!(r.stderr.contains("is pinned by digest: all its platforms travel"), "{}", r.stderr);
    let row = inspect_image(&ws, "p.tar.zst", agent.root.digest.as_str());
    assert_eq!(row["digest"], agent.root.digest.as_str());
    assert_eq!(row["platforms"], serde_json::json!(["linux/amd64", "linux/arm64"]));
    assert_eq!(row["platformSelection"]["mode"], "whole");

    let nginx = set.images[2].reference(&src.host());
    let r = ws.bundle(&["export", "--platform", "linux/arm64", "--image", &nginx, "-o", "n.tar.zst"]).failure();
    assert!(r.stderr.contains(&nginx) && r.stderr.contains("only linux/amd64"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: add one of its platforms to --platform"), "{}", r.stderr);
    assert!(!ws.path("n.tar.zst").exists());

    let r = ws.bundle(&["export", "--platform", "linux", "--image", &nginx, "-o", "n.tar.zst"]);
    assert_eq!(r.code, 2, "a malformed platform is a usage error: {}", r.stderr);
    assert!(r.stderr.contains("`linux` is not os/arch"), "{}", r.stderr);
}

/// An index as BuildKit writes it (an attestation manifest per platform) with a nested index beside them.
struct Attested {
    root: Blob,
    amd: Image,
    arm: Image,
    att_amd: Image,
    att_arm: Image,
    nested_amd: Image,
    nested_ppc: Image,
}

fn seed_attested(base: &str) -> Attested {
    let p = Pusher::new(base);
    let amd = image(&[random_layer(LAYER, 81)], "amd64", false);
    let arm = image(&[random_layer(LAYER, 82)], "arm64", false);
    let att_amd = image(&[random_layer(512, 83)], "unknown", false);
    let att_arm = image(&[random_layer(512, 84)], "unknown", false);
    let nested_amd = image(&[random_layer(1024, 85)], "amd64", false);
    let nested_ppc = image(&[random_layer(1024, 86)], "ppc64le", false);
    let nested = index(&[(&nested_amd, "amd64"), (&nested_ppc, "ppc64le")], false);
    for (repo_img, tag) in [(&amd, "amd"), (&arm, "arm"), (&att_amd, "att-amd"), (&att_arm, "att-arm")] {
        p.image("app/attested", tag, repo_img);
    }
    p.index("app/attested", "nested", &[&nested_amd, &nested_ppc], &nested, OCI_INDEX);
    let desc = |img: &Image, platform: serde_json::Value| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": img.manifest.digest, "size": img.manifest.bytes.len(), "platform": platform});
    let attestation = |img: &Image, subject: &Image| {
        let mut d = desc(img, serde_json::json!({"architecture": "unknown", "os": "unknown"}));
        d["annotations"] = serde_json::json!({
            "vnd.docker.reference.digest": subject.manifest.digest,
            "vnd.docker.reference.type": "attestation-manifest",
        });
        d
    };
    let root = Blob::new(
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                desc(&amd, serde_json::json!({"architecture": "amd64", "os": "linux"})),
                desc(&arm, serde_json::json!({"architecture": "arm64", "os": "linux"})),
                attestation(&att_amd, &amd),
                attestation(&att_arm, &arm),
                {"mediaType": OCI_INDEX, "digest": nested.digest, "size": nested.bytes.len()},
            ],
        }))
        .unwrap(),
    );
    p.manifest("app/attested", "1.0", OCI_INDEX, &root.bytes);
    Attested { root, amd, arm, att_amd, att_arm, nested_amd, nested_ppc }
}

#[test]
fn attestations_follow_their_platform_and_nested_indexes_are_filtered_too() {
    let src = Registry::start();
    let dst = Registry::start();
    let a = seed_attested(&src.base_url());
    let ws = Workspace::new();
    let image = format!("{}/app/attested:1.0", src.host());
    ws.bundle(&["copy", "-d", &dst.host(), "--platform", "linux/amd64", "--image", &image]).success();
    let base = dst.base_url();
    let (root_bytes, root) = manifest_json(&base, "app/attested", "1.0").unwrap();
    let entries = entry_digests(&root);
    assert_eq!(entries.len(), 3, "{root}");
    assert_eq!(entries[0], a.amd.manifest.digest);
    assert_eq!(entries[1], a.att_amd.manifest.digest);
    let (nested_bytes, nested) = manifest_json(&base, "app/attested", &entries[2]).unwrap();
    assert_eq!(sha256(&nested_bytes), entries[2]);
    assert_eq!(entry_digests(&nested), vec![a.nested_amd.manifest.digest.clone()]);
    for kept in [&a.amd, &a.att_amd, &a.nested_amd] {
        assert_eq!(get_manifest(&base, "app/attested", &kept.manifest.digest).unwrap().0, kept.manifest.bytes);
        for l in &kept.layers {
            assert!(get_blob(&base, "app/attested", &l.digest).is_some());
        }
    }
    for dropped in [&a.arm, &a.att_arm, &a.nested_ppc] {
        assert!(
            get_manifest(&base, "app/attested", &dropped.manifest.digest).is_none(),
            "a dropped platform travelled"
        );
    }
    // A new index (of the bytes the destination serves, not of JSON serialised again here), the rest the source's.
    assert_ne!(sha256(&root_bytes), a.root.digest);
    let source: serde_json::Value = serde_json::from_slice(&a.root.bytes).unwrap();
    assert_eq!(root["mediaType"], source["mediaType"]);

    // `images --json` is chart-only; export's dry run shows the same choice without writing anything.
    let r = ws.bundle(&["export", "--platform", "linux/arm64", "--image", &image, "-t"]).success();
    assert!(r.stdout.contains("linux/arm64") && !r.stdout.contains("linux/amd64"), "{}", r.stdout);
}

#[test]
fn sparse_mode_keeps_the_index_digest_and_docker_registry_refuses_it_clearly() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 73, LAYER);
    let ws = Workspace::new();
    let agent = &set.images[0];
    let image = agent.reference(&src.host());
    ws.bundle(&[
        "export",
        "--platform",
        "linux/arm64",
        "--platform-mode",
        "sparse",
        "--image",
        &image,
        "-o",
        "s.tar.zst",
    ])
    .success();
    let verify = ws.bundle(&["verify", "s.tar.zst"]).success();
    assert!(verify.stdout.contains("OK, 1 images"), "{}", verify.stdout);
    let row = inspect_image(&ws, "s.tar.zst", "agent:7.51.1");
    assert_eq!(row["digest"], agent.root.digest.as_str(), "sparse keeps the index digest");
    assert_eq!(row["platformSelection"]["mode"], "sparse");
    assert_eq!(row["platformSelection"]["omitted"], serde_json::json!([agent.manifests[1].digest]));
    assert_eq!(row["platforms"], serde_json::json!(["linux/arm64"]));

    let r = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).failure();
    assert!(r.stderr.contains(&format!("refused the index of {image}")), "{}", r.stderr);
    assert!(r.stderr.contains("does not store sparse indexes, and running again will not change that"), "{}", r.stderr);
    assert!(r.stderr.contains("--platform-mode filter"), "{}", r.stderr);
    // What was pushed is the chosen child, not a visible half image.
    assert!(get_manifest(&dst.base_url(), &agent.repo, &agent.tag).is_none());

    // copy in sparse mode fails the same way.
    let r = ws
        .bundle(&[
            "copy",
            "-d",
            &dst.host(),
            "--platform",
            "linux/arm64",
            "--platform-mode",
            "sparse",
            "--image",
            &image,
        ])
        .failure();
    assert!(r.stderr.contains("--platform-mode filter"), "{}", r.stderr);
}

#[test]
fn images_json_shows_what_platform_would_keep() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let world = Registry::start();
    let (cfg, pinned) = seed_world(&ws, &world);
    // One image of the chart becomes multi-platform: its index is what --platform filters.
    let amd = image(&[random_layer(1024, 901)], "amd64", false);
    let arm = image(&[random_layer(1024, 902)], "arm64", false);
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")], false);
    Pusher::new(&world.base_url()).index("quay.io/stackstate/worker", "2.3.1", &[&amd, &arm], &idx, OCI_INDEX);
    let set = format!("pinned.image.digest={pinned}");
    let chart = charts.join("platform");
    let args = ["--registry-config", cfg.to_str().unwrap(), "images", "-c", chart.to_str().unwrap(), "--set", &set];
    let mut json = args.to_vec();
    json.extend(["--json", "--platform", "linux/amd64"]);
    let r = ws.bundle(&json).success();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let images = v["images"].as_array().unwrap();
    assert!(images.len() >= 10);
    let worker = images
        .iter()
        .find(|i| i["reference"] == "quay.io/stackstate/worker:2.3.1")
        .unwrap_or_else(|| panic!("no worker image in {v}"));
    // What a copy with the same --platform writes at a destination: an index of the amd64 child alone.
    let dst = Registry::start();
    let source = "quay.io/stackstate/worker:2.3.1";
    let cfg = cfg.to_str().unwrap();
    ws.bundle(&["--registry-config", cfg, "copy", "-d", &dst.host(), "--platform", "linux/amd64", "--image", source])
        .success();
    let (copied, _) = get_manifest(&dst.base_url(), "stackstate/worker", "2.3.1").unwrap();
    let copied_index: serde_json::Value = serde_json::from_slice(&copied).unwrap();
    assert_eq!(entry_digests(&copied_index), vec![amd.manifest.digest.clone()], "{copied_index}");
    assert_eq!(worker["travels"]["digest"], sha256(&copied).as_str(), "{worker}");
    assert_ne!(worker["travels"]["digest"], idx.digest.as_str(), "{worker}");
    assert_eq!(worker["travels"]["platforms"], serde_json::json!(["linux/amd64"]), "{worker}");
    assert_eq!(worker["travels"]["platformSelection"]["originalDigest"], idx.digest.as_str(), "{worker}");
    assert_eq!(worker["travels"]["platformSelection"]["dropped"], serde_json::json!(["linux/arm64"]), "{worker}");
    // The single-platform images travel as they are.
    for i in images.iter().filter(|i| i != &worker) {
        assert!(i["travels"]["digest"].as_str().unwrap().starts_with("sha256:"), "{i}");
    }
    let mut plain = args.to_vec();
    plain.extend(["--platform", "linux/amd64"]);
    let r = ws.bundle(&plain).failure();
    assert!(r.stderr.contains("--platform needs --json"), "{}", r.stderr);
}
