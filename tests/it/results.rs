//! `--json` on export, verify, import and copy: stdout is one JSON document and nothing else, each image with
//! what happened to it, checked against the registries themselves; a failed run's document carries the error
//! and its hint, with the exit status unchanged.

use crate::harness::*;

/// The run's stdout, which must be exactly one JSON document.
#[track_caller]
fn document(r: &Run) -> serde_json::Value {
    let mut docs = serde_json::Deserializer::from_str(&r.stdout).into_iter::<serde_json::Value>();
    let doc = docs.next().unwrap_or_else(|| panic!("no JSON on stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr));
    let doc = doc.unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", r.stdout));
    assert!(docs.next().is_none(), "more than one document on stdout:\n{}", r.stdout);
    assert_eq!(doc["formatVersion"], 1, "{doc}");
    doc
}

fn outcomes(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["source"].as_str().unwrap().to_string(), i["outcome"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn json_results_of_export_verify_import_and_copy_are_one_document_each() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 121, 8 * 1024);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    let mut export = vec!["export", "--json", "-o", "s.tar.zst"];
    for r in &refs {
        export.extend(["--image", r.as_str()]);
    }
    let r = ws.bundle(&export).success();
    let doc = document(&r);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["command"], "export");
    let sidecar = std::fs::read_to_string(ws.path("s.tar.zst.sha256")).unwrap();
    assert_eq!(doc["totals"]["sha256"].as_str().unwrap(), sidecar.split_whitespace().next().unwrap());
    for img in &set.images {
        let row = doc["images"].as_array().unwrap().iter().find(|i| i["source"] == img.reference(&src.host()));
        let row = row.unwrap_or_else(|| panic!("{} missing: {doc}", img.repo));
        assert_eq!(row["digest"], img.root.digest.as_str());
        assert_eq!(row["outcome"], "exported");
    }
    // Progress and messages stay on stderr.
    assert!(r.stderr.contains("Exported 4 images"), "{}", r.stderr);

    let doc = document(&ws.bundle(&["verify", "--json", "s.tar.zst"]).success());
    assert_eq!(doc["totals"]["images"], 4);
    assert!(outcomes(&doc).iter().all(|(_, o)| o == "verified"), "{doc}");

    // A dry run: what would be pushed; nothing is.
    let r = ws.bundle(&["import", "-t", "--json", "-d", &dst.host(), "s.tar.zst"]).success();
    assert!(r.stderr.contains("(dry-run)"), "the dry-run lines go to stderr: {}", r.stderr);
    let doc = document(&r);
    assert!(outcomes(&doc).iter().all(|(_, o)| o == "would-push"), "{doc}");
    assert_eq!(doc["totals"]["dryRun"], true);
    dst.assert_untouched("a dry-run import with --json");

    let doc = document(&ws.bundle(&["import", "--json", "-d", &dst.host(), "s.tar.zst"]).success());
    assert!(outcomes(&doc).iter().all(|(_, o)| o == "pushed"), "{doc}");
    for img in &set.images {
        let row = doc["images"].as_array().unwrap().iter().find(|i| i["source"] == img.reference(&src.host())).unwrap();
        assert_eq!(row["destination"], format!("{}/{}:{}", dst.host(), img.repo, img.tag));
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    assert!(doc["totals"]["blobsUploaded"].as_u64().unwrap() > 0, "{doc}");
    let normalised = normalise(&serde_json::to_string_pretty(&doc).unwrap(), &ws, &[&src, &dst]);
    insta::assert_snapshot!("import_json", normalised);

    let doc = document(&ws.bundle(&["import", "--json", "-d", &dst.host(), "s.tar.zst"]).success());
    assert!(outcomes(&doc).iter().all(|(_, o)| o == "present"), "a re-import pushes nothing: {doc}");

    // copy, into a prefix: the same document.
    let mut copy = vec!["copy", "--json", "-d"];
    let prefix = format!("{}/copied", dst.host());
    copy.push(&prefix);
    for r in &refs {
        copy.extend(["--image", r.as_str()]);
    }
    let doc = document(&ws.bundle(&copy).success());
    assert_eq!(doc["command"], "copy");
    assert!(outcomes(&doc).iter().all(|(_, o)| o == "pushed"), "{doc}");
}

#[test]
fn json_result_of_a_failed_import_names_the_error_its_hint_and_each_image() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 122, 8 * 1024);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "s.tar.zst");

    // Nothing listening: the run fails before any image, exit 1, the error and its hint in the document.
    let dead = format!("127.0.0.1:{}", free_port());
    let r = ws.bundle(&["--retries", "0", "import", "--json", "-d", &dead, "s.tar.zst"]).failure();
    let doc = document(&r);
    assert_eq!(doc["ok"], false);
    assert!(doc["error"]["message"].as_str().unwrap().contains(&dead), "{doc}");
    assert!(doc["error"]["hint"].is_string(), "{doc}");
    assert!(r.stderr.contains("error: "), "the error is on stderr too: {}", r.stderr);

    // A damaged archive: verify's document says so, naming the archive.
    let bytes = std::fs::read(ws.path("s.tar.zst")).unwrap();
    std::fs::write(ws.path("cut.tar.zst"), &bytes[..bytes.len() / 2]).unwrap();
    let doc = document(&ws.bundle(&["verify", "--json", "cut.tar.zst"]).failure());
    assert_eq!((doc["command"].as_str(), doc["ok"].as_bool()), (Some("verify"), Some(false)), "{doc}");
    assert!(doc["error"]["message"].as_str().unwrap().contains("cut.tar.zst"), "{doc}");

    // The manifests of one image are refused for good: it failed, with the error; the others are what the
    // destination really holds.
    let proxy = FaultProxy::start(dst.port);
    proxy.add("PUT", "/v2/library/nginx/manifests/", Fault::Status(500, None), usize::MAX);
    let r = ws.bundle(&["--retries", "0", "import", "--json", "-d", &proxy.host(), "s.tar.zst"]).failure();
    let doc = document(&r);
    assert_eq!(doc["ok"], false);
    for row in doc["images"].as_array().unwrap() {
        let img = set.images.iter().find(|i| row["source"] == i.reference(&src.host())).unwrap();
        let there = get_manifest(&dst.base_url(), &img.repo, &img.root.digest).is_some();
        match row["outcome"].as_str().unwrap() {
            "pushed" => assert!(there, "{} is said pushed but is not there", img.repo),
            "failed" => {
                assert!(!there, "{} is said failed but is there", img.repo);
                assert!(row["error"].as_str().unwrap().contains("500"), "{row}");
            }
            other => panic!("{}: {other}", img.repo),
        }
    }
    let nginx = doc["images"].as_array().unwrap().iter().find(|i| i["source"].as_str().unwrap().contains("nginx"));
    assert_eq!(nginx.unwrap()["outcome"], "failed", "{doc}");
}
