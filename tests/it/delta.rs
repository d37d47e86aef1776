//! Delta bundles (`export --since OLD`): only the blobs the base does not hold travel; import checks the rest is at
//! the destination before it pushes anything; moved tags are carried because blobs compare by digest.

use crate::harness::*;

/// The base's blob as a layer of a new image (its diff_id computed here, independently of bundle).
fn reused_layer(blob: &Blob) -> (Blob, String) {
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob.bytes[..]), &mut tar).unwrap();
    (blob.clone(), sha256(&tar))
}

/// The week after: nginx's tag moves to a new image on the same base layer, and a new repository appears whose
/// image shares that layer too. Returns every reference the new export carries and what each should be.
fn next_week(src: &Registry, set: &SampleSet) -> Vec<(String, SampleImage)> {
    let p = Pusher::new(&src.base_url());
    let nginx = &set.images[2];
    let shared = reused_layer(&nginx.blobs[1]);
    let moved = image(&[shared.clone(), random_layer(4096, 9001)], "amd64", true);
    p.image(&nginx.repo, &nginx.tag, &moved);
    let newapp = image(&[shared, random_layer(2048, 9002)], "amd64", false);
    p.image("acme/newapp", "1.0", &newapp);
    let mut out: Vec<(String, SampleImage)> = Vec::new();
    for (i, img) in set.images.iter().enumerate() {
        let now = if i == 2 { sample_single(&nginx.repo, &nginx.tag, &moved) } else { img.clone() };
        out.push((img.reference(&src.host()), now));
    }
    out.push((format!("{}/acme/newapp:1.0", src.host()), sample_single("acme/newapp", "1.0", &newapp)));
    out
}

#[test]
fn a_delta_imports_on_top_of_its_base_with_every_digest_equal() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 401, 256 * 1024);
    let mut ws = Workspace::new();
    ws.env("SOURCE_DATE_EPOCH", "1764460800");
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "base.tar.zst");
    ws.bundle(&["import", "-d", &dst.host(), "base.tar.zst"]).success();

    let week = next_week(&src, &set);
    let mut args = vec!["export", "--since", "base.tar.zst", "-o", "delta.tar.zst"];
    for (r, _) in &week {
        args.extend(["--image", r.as_str()]);
    }
    let mut dry = args.clone();
    dry.push("-t");
    let r = ws.bundle(&dry).success();
    assert!(r.stdout.contains("a delta of base.tar.zst: "), "{}", r.stdout);
    assert!(!ws.path("delta.tar.zst").exists());
    let r = ws.bundle(&args).success();
    assert!(r.stderr.contains("A delta of base.tar.zst"), "{}", r.stderr);
    let base_len = std::fs::metadata(ws.path("base.tar.zst")).unwrap().len();
    let delta_len = std::fs::metadata(ws.path("delta.tar.zst")).unwrap().len();
    assert!(delta_len * 4 < base_len, "the delta ({delta_len} bytes) should be far smaller than the base ({base_len})");

    let i = ws.bundle(&["inspect", "delta.tar.zst"]).success();
    assert!(i.stdout.contains("a delta of base.tar.zst (sha256 "), "{}", i.stdout);
    let v = ws.bundle(&["verify", "delta.tar.zst"]).success();
    assert!(v.stdout.contains("a delta of base.tar.zst (sha256 "), "{}", v.stdout);
    let base_sha = std::fs::read_to_string(ws.path("base.tar.zst.sha256")).unwrap();
    assert!(v.stdout.contains(base_sha.split_whitespace().next().unwrap()), "{}", v.stdout);

    // The same delta from the base's `inspect --json` instead of the base itself.
    let listing = ws.bundle(&["inspect", "--json", "base.tar.zst"]).success();
    std::fs::write(ws.path("base.json"), listing.stdout).unwrap();
    let mut args = vec!["export", "--since", "base.json", "-o", "delta2.tar.zst"];
    for (r, _) in &week {
        args.extend(["--image", r.as_str()]);
    }
    ws.bundle(&args).success();
    let sidecar = |f: &str| std::fs::read_to_string(ws.path(f)).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(sidecar("delta.tar.zst.sha256"), sidecar("delta2.tar.zst.sha256"), "the two deltas differ");

    ws.bundle(&["import", "-d", &dst.host(), "delta.tar.zst"]).success();
    for (_, img) in &week {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    let again = ws.bundle(&["import", "-d", &dst.host(), "delta.tar.zst"]).success();
    assert!(again.stderr.contains("nothing to push"), "{}", again.stderr);
}

#[test]
fn a_delta_into_a_registry_without_its_base_is_refused_and_pushes_nothing() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 402, 64 * 1024);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "base.tar.zst");
    let week = next_week(&src, &set);
    let mut args = vec!["export", "--since", "base.tar.zst", "-o", "delta.tar.zst"];
    for (r, _) in &week {
        args.extend(["--image", r.as_str()]);
    }
    ws.bundle(&args).success();

    let empty = Registry::start();
    let r = ws.bundle(&["import", "-d", &empty.host(), "delta.tar.zst"]).failure();
    assert!(r.stderr.contains("that this delta leaves to its base base.tar.zst"), "{}", r.stderr);
    assert!(r.stderr.contains("import the base archive base.tar.zst into this destination first"), "{}", r.stderr);
    empty.assert_untouched("import of a delta without its base");
    // A dry run says the same, and also pushes nothing.
    ws.bundle(&["import", "-t", "-d", &empty.host(), "delta.tar.zst"]).failure();
    empty.assert_untouched("dry run of a delta without its base");
}
