//! `bundle copy`: registry to registry without an archive, between real registries (and into ECR through
//! moto): the seed's dry-run lines, every digest equal at the destination, re-runs that only check, nothing
//! on disk, and the chart with its values file.

use std::process::Command;

use crate::harness::*;

const LAYER: usize = 256 * 1024;

#[test]
fn copy_dry_run_prints_the_seed_line_per_image_and_changes_nothing() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 61, 16 * 1024);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    let mut args = vec!["copy", "-d", "DEST", "-t"];
    let dest = format!("{}/mirror", dst.host());
    args[2] = &dest;
    for r in &refs {
        args.extend(["--image", r.as_str()]);
    }
    let r = ws.bundle(&args).success();
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("Copying ")).collect();
    let mut expected: Vec<String> = set
        .images
        .iter()
        .map(|i| format!("Copying {} to {dest}/{}:{} (dry-run)", i.reference(&src.host()), i.repo, i.tag))
        .collect();
    expected.sort();
    let mut got: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    got.sort();
    assert_eq!(got, expected, "{}", r.stdout);
    assert!(r.stdout.contains("nothing changed (dry run)"), "{}", r.stdout);
    dst.assert_untouched("a dry-run copy");
}

#[test]
fn regression_copy_takes_a_spec_without_an_output_name() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 62, 16 * 1024);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    ws.write("copy.yaml", &format!("images: [{}]\n", nginx.reference(&src.host())));
    ws.bundle(&["copy", "-d", &dst.host(), "--spec", "copy.yaml"]).success();
    assert_image_at(&dst.base_url(), &nginx.repo, &nginx.tag, nginx);
    // export still needs a name, from the spec or -o.
    let r = ws.bundle(&["export", "--spec", "copy.yaml"]).failure();
    assert!(r.stderr.contains("no output file given"), "{}", r.stderr);
}

#[test]
fn copy_pushes_every_digest_stages_nothing_and_a_recopy_only_checks() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 62, LAYER);
    let mut ws = Workspace::new();
    // Nothing may land in the cache or TMPDIR: point the cache somewhere we can watch.
    let cache = ws.path("xdg-cache");
    ws.env("XDG_CACHE_HOME", cache.to_str().unwrap());
    let list: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    let file = ws.write("images.txt", &list.join("\n"));
    let dest = format!("{}/mirror", dst.host());
    let r = ws.bundle(&["copy", "-d", &dest, "--images-file", file.to_str().unwrap()]).success();
    assert!(r.stderr.contains("Copied 4 images"), "{}", r.stderr);
    for img in &set.images {
        assert_image_at(&dst.base_url(), &format!("mirror/{}", img.repo), &img.tag, img);
    }
    assert!(ws.tmp_leftovers().is_empty(), "copy left files in TMPDIR: {:?}", ws.tmp_leftovers());
    assert!(!cache.exists(), "copy wrote into the cache");
    assert!(listing(ws.dir.path()).iter().all(|n| !n.ends_with(".tar.zst")), "copy wrote an archive");

    // The base layer all four images share was uploaded once and mounted into the three other repositories.
    let shared = &set.images[2].blobs[1].digest;
    assert!(set.images.iter().all(|i| i.blobs.iter().any(|b| &b.digest == shared)), "the sample's shared layer");
    let hex = &shared["sha256:".len()..];
    let requests = dst.requests();
    let uploaded: Vec<_> = requests.iter().filter(|l| l.contains("\"PUT /v2/") && l.contains(hex)).collect();
    assert_eq!(uploaded.len(), 1, "the shared layer is uploaded once:\n{requests:#?}");
    let mounted: Vec<_> = requests
        .iter()
        .filter(|l| l.contains("\"POST /v2/") && l.contains("from=") && l.contains(hex) && l.contains("\" 201 "))
        .collect();
    assert_eq!(mounted.len(), 3, "the shared layer is mounted into the other three repositories:\n{requests:#?}");
    let blob_gets =
        |r: &Registry| r.requests().iter().filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/")).count();
    let writes = dst.writes().len();
    let gets = blob_gets(&src);
    let again = ws.bundle(&["copy", "-d", &dest, "--images-file", file.to_str().unwrap()]).success();
    assert!(again.stderr.contains("already holds all 4 images"), "{}", again.stderr);
    assert_eq!(dst.writes()[writes..], [] as [String; 0], "a re-copy wrote to the destination");
    assert_eq!(blob_gets(&src), gets, "a re-copy read blobs from the source");
}

#[test]
fn copy_of_a_chart_pushes_it_and_its_values_file_sends_every_pod_to_an_image_that_exists() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let world = Registry::start();
    let dst = Registry::start();
    let (cfg, pinned) = seed_world(&ws, &world);
    let cfg = cfg.to_str().unwrap();
    let set = format!("pinned.image.digest={pinned}");
    let chart = charts.join("platform");
    let dest = format!("{}/airgap", dst.host());
    let r = ws
        .bundle(&[
            "--registry-config",
            cfg,
            "copy",
            "-d",
            &dest,
            "-c",
            chart.to_str().unwrap(),
            "--set",
            &set,
            "--values-out",
            "copy-values.yaml",
        ])
        .success();
    assert!(r.stderr.contains("Copied 13 images"), "12 images and the chart: {}", r.stderr);
    assert!(
        r.stderr.contains(&format!("helm install RELEASE oci://{dest}/charts/platform --version 1.4.0")),
        "{}",
        r.stderr
    );
    let values = std::fs::read_to_string(ws.path("copy-values.yaml")).unwrap();
    assert!(values.contains(&format!("# Proven: all 12 images land at {dest} (")), "{values}");

    // helm pulls the chart from the destination and renders it with the values: every image exists there.
    let pulled = ws.path("pulled");
    std::fs::create_dir_all(&pulled).unwrap();
    let out = Command::new(helm())
        .args(["pull", &format!("oci://{dest}/charts/platform"), "--version", "1.4.0", "--plain-http", "-d"])
        .arg(&pulled)
        .env("HELM_CONFIG_HOME", ws.path("helm-config"))
        .env("HELM_CACHE_HOME", ws.path("helm-cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "helm pull: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(helm())
        .args(["template", "x"])
        .arg(pulled.join("platform-1.4.0.tgz"))
        .args(["-f", ws.path("copy-values.yaml").to_str().unwrap(), "--set", &set])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let images = strict_images(&String::from_utf8(out.stdout).unwrap());
    assert!(images.len() >= 10, "{images:?}");
    assert_images_exist_at(&dst, &dest, &images, &values);
}

#[test]
fn regression_copy_never_completes_a_blob_whose_source_bytes_are_wrong() {
    // The source serves one layer with a flipped byte every time: the destination must never hold it, and the
    // error names the blob and the source.
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 63, 64 * 1024);
    let nginx = &set.images[2];
    let layer = nginx.blobs.last().unwrap().digest.clone();
    let proxy = FaultProxy::start(src.port);
    proxy.add("GET", &format!("/v2/library/nginx/blobs/{layer}"), Fault::Corrupt(100), usize::MAX);
    let ws = Workspace::new();
    let image = format!("{}/library/nginx:1.25", proxy.host());
    let r = ws.bundle(&["--retries", "1", "copy", "-d", &dst.host(), "--image", &image]).failure();
    assert!(r.stderr.contains("copy into") && r.stderr.contains(&layer), "{}", r.stderr);
    assert!(r.stderr.contains("did not match its digest twice"), "{}", r.stderr);
    assert!(get_blob(&dst.base_url(), "library/nginx", &layer).is_none(), "a wrong blob was stored");
    assert!(get_manifest(&dst.base_url(), "library/nginx", "1.25").is_none(), "the image became visible");
}

#[test]
fn copy_into_ecr_creates_the_repositories_first() {
    let mut ws = Workspace::new();
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 64, 32 * 1024);
    let moto = Moto::start(false);
    moto.configure(&mut ws);
    // The data plane refuses pushes to repositories moto does not have, as ECR does: "first" is checked.
    let data = EcrDataPlane::start(&ws, &moto);
    let config = ws.write(
        "registries.toml",
        &format!("[[registry]]\nname = \"{}\"\nendpoint = \"{}\"\n", ecr_host(), data.base_url()),
    );
    let config = config.to_str().unwrap();
    let host = ecr_host();
    let mut args = vec!["--registry-config", config, "copy", "-d", &host, "--ecr-tag-mutability", "IMMUTABLE"];
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    for r in &refs {
        args.extend(["--image", r.as_str()]);
    }
    let mut dry = args.clone();
    dry.push("-t");
    let r = ws.bundle(&dry).success();
    assert!(r.stdout.contains("Would create ECR repository stackstate/agent"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("Copying {} to {host}/stackstate/agent:7.51.1 (dry-run)", refs[0])),
        "{}",
        r.stdout
    );
    assert!(moto.repository_names().is_empty(), "a dry run created repositories");

    ws.bundle(&args).success();
    let mut names = moto.repository_names();
    names.sort();
    assert_eq!(
        names,
        ["library/nginx", "prometheus-operator/prometheus-config-reloader", "stackstate/agent", "stackstate/wait"]
    );
    assert_eq!(moto.repository("stackstate/agent").unwrap()["imageTagMutability"], "IMMUTABLE");
    for img in &set.images {
        let bytes = ecr_manifest(&data.registry, &img.repo, &img.tag).unwrap_or_else(|| panic!("{} missing", img.repo));
        assert_eq!(sha256(&bytes), img.root.digest);
    }
}
