//! Helm charts: discovery with helm and without, chart sources (directory, .tgz, repository, oci://), the
//! chart travelling in the bundle, and the air-gap values file checked in a closed loop with the real helm.

use std::process::Command;

use crate::harness::*;

const DIGEST_SET: &str = "pinned.image.digest";

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn expected(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// What helm renders for `platform` with the common values (the kafka exporter is off by its condition).
fn rendered_images(pinned: &str) -> Vec<String> {
    let pinned = format!("quay.io/stackstate/pinned:1.0@{pinned}");
    expected(&[
        "busybox:1.36",
        "ghcr.io/example/inner:0.3",
        "ghcr.io/example/localdep:0.1",
        "quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0",
        "quay.io/prometheus/prometheus:v2.51.0",
        "quay.io/prometheuscommunity/elasticsearch-exporter:v1.7.0",
        "quay.io/stackstate/computed-sidecar:2.3.0",
        "quay.io/stackstate/operator:v1",
        &pinned,
        "quay.io/stackstate/platform-api:2.3.0",
        "quay.io/stackstate/worker:2.3.1",
        "registry.k8s.io/legacy/agent:3.1",
    ])
}

const FAKE_DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn helm_discovery_finds_images_in_every_place_a_chart_puts_them() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let chart = charts.join("platform");
    let set = format!("{DIGEST_SET}={FAKE_DIGEST}");
    let r = ws.bundle(&["images", "-c", chart.to_str().unwrap(), "--set", &set]).success();
    assert_eq!(lines(&r.stdout), rendered_images(FAKE_DIGEST), "stderr: {}", r.stderr);

    // --json says where and how each was found.
    let r = ws.bundle(&["images", "-c", chart.to_str().unwrap(), "--set", &set, "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["chart"]["discovery"], "helm");
    let how = |reference: &str| -> Vec<String> {
        json["images"].as_array().unwrap().iter().find(|i| i["reference"] == reference).unwrap()["found"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| format!("{} {}", f["how"].as_str().unwrap(), f["location"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(how("quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0"), vec!["args Deployment/bundle-operator spec.template.spec.containers[0].args[1]"]);
    assert_eq!(how("quay.io/prometheus/prometheus:v2.51.0"), vec!["image-key Prometheus/bundle spec.image"]);
    assert_eq!(how("busybox:1.36"), vec!["image-key Job/bundle-migrate spec.template.spec.containers[0].image"]);
}

#[test]
fn static_discovery_without_helm_and_its_known_misses() {
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let set = format!("{DIGEST_SET}={FAKE_DIGEST}");
    let r = ws.bundle(&["images", "-c", charts.join("platform").to_str().unwrap(), "--set", &set, "--no-helm"]).success();
    assert!(r.stderr.contains("misses images that only templates compute"), "{}", r.stderr);
    let mut want = rendered_images(FAKE_DIGEST);
    // Known misses of the values scan: an image only ever written into container args from a key not named
    // like an image, and an image the templates compute.
    want.retain(|i| !i.contains("prometheus-config-reloader") && !i.contains("computed-sidecar"));
    // What only the static mode reads: Chart.yaml's artifacthub.io/images annotation.
    want.push("quay.io/stackstate/annotated-tool:0.9".into());
    want.sort();
    assert_eq!(lines(&r.stdout), want);
}

#[test]
fn passes_values_files_and_set_string_apply_like_helm() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let chart = charts.join("platform");
    ws.write("override.yaml", "worker:\n  image:\n    tag: \"9.9.9\"\n");
    for mode in [&[][..], &["--no-helm"][..]] {
        let mut args = vec!["images", "-c", chart.to_str().unwrap(), "--pass", "", "--pass", "kafka-exporter.enabled=true", "-f", "override.yaml", "--set-string", "operator.image.tag=2"];
        args.extend(mode);
        let out = lines(&ws.bundle(&args).success().stdout);
        assert!(out.contains(&"quay.io/prometheuscommunity/kafka-exporter:v1.6.0".to_string()), "{mode:?}: {out:?}");
        assert!(out.contains(&"quay.io/prometheuscommunity/elasticsearch-exporter:v1.7.0".to_string()), "{mode:?}: {out:?}");
        assert!(out.contains(&"quay.io/stackstate/worker:9.9.9".to_string()), "{mode:?}: {out:?}");
        assert!(out.contains(&"quay.io/stackstate/operator:2".to_string()), "{mode:?}: {out:?}");
        assert!(!out.iter().any(|l| l.contains("worker:2.3.1")), "{mode:?}: {out:?}");
    }
    // Without the pass, the condition keeps the second alias off.
    let out = ws.bundle(&["images", "-c", chart.to_str().unwrap()]).success().stdout;
    assert!(!out.contains("kafka-exporter"), "{out}");
    assert!(!out.contains("kube-legacy"), "helm's default Kubernetes version is newer: {out}");

    // A tag switches off the nested subchart (in both modes); --kube-version reaches the templates.
    for mode in [&[][..], &["--no-helm"][..]] {
        let mut args = vec!["images", "-c", chart.to_str().unwrap(), "--set", "tags.extras=false"];
        args.extend(mode);
        let out = ws.bundle(&args).success().stdout;
        assert!(!out.contains("example/inner"), "{mode:?}: {out}");
        assert!(out.contains("example/localdep"), "{mode:?}: {out}");
    }
    let out = ws.bundle(&["images", "-c", chart.to_str().unwrap(), "--kube-version", "1.24.0"]).success().stdout;
    assert!(out.contains("quay.io/stackstate/kube-legacy:1.0"), "{out}");
}

#[test]
fn a_missing_dependency_is_named_with_the_fix() {
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    std::fs::remove_file(charts.join("platform/charts/legacy-1.0.0.tgz")).unwrap();
    let r = ws.bundle(&["images", "-c", charts.join("platform").to_str().unwrap()]).failure();
    assert!(r.stderr.contains("chart `platform` needs legacy 1.0.0, which is not in its charts/ directory"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: run `helm dependency build`"), "{}", r.stderr);
}

#[test]
fn charts_come_from_a_repository_index_with_version_choice_and_digest_check() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let repo = ws.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let mut entries = String::new();
    for version in ["1.3.0", "1.4.0", "1.5.0-rc.1"] {
        let chart_yaml = charts.join("platform/Chart.yaml");
        let text = std::fs::read_to_string(&chart_yaml).unwrap().replace("version: 1.4.0", &format!("version: {version}")).replace("version: 1.3.0", &format!("version: {version}")).replace("version: 1.5.0-rc.1", &format!("version: {version}"));
        std::fs::write(&chart_yaml, text).unwrap();
        let tgz = bundle::chart::package::package_dir(&charts.join("platform")).unwrap();
        let file = format!("platform-{version}.tgz");
        std::fs::write(repo.join(&file), &tgz).unwrap();
        entries.push_str(&format!("    - version: {version}\n      urls: [{file}]\n      digest: {}\n", &sha256(&tgz)[7..]));
    }
    std::fs::write(repo.join("index.yaml"), format!("apiVersion: v1\nentries:\n  platform:\n{entries}")).unwrap();
    let server = StaticServer::start(&repo);

    let r = ws.bundle(&["images", "-c", "platform", "-r", &server.url(), "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["chart"]["version"], "1.4.0", "the newest stable version");
    let r = ws.bundle(&["images", "-c", "platform", "-r", &server.url(), "--version", "1.3.0", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["chart"]["version"], "1.3.0");

    // A package that does not match the index's digest is refused.
    let mut bytes = std::fs::read(repo.join("platform-1.4.0.tgz")).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(repo.join("platform-1.4.0.tgz"), bytes).unwrap();
    let r = ws.bundle(&["images", "-c", "platform", "-r", &server.url()]).failure();
    assert!(r.stderr.contains("does not match the digest in the repository index"), "{}", r.stderr);
    let r = ws.bundle(&["images", "-c", "platform", "-r", &server.url(), "--version", "7.0.0"]).failure();
    assert!(r.stderr.contains("platform 7.0.0 is not in the repository"), "{}", r.stderr);
}

#[test]
fn charts_come_from_an_oci_registry() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let reg = Registry::start();
    let tgz = bundle::chart::package::package_dir(&charts.join("platform")).unwrap();
    let layer = Blob::new(tgz);
    let config = Blob::new(br#"{"name":"platform","version":"1.4.0"}"#.to_vec());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": config.digest, "size": config.bytes.len()},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": layer.digest, "size": layer.bytes.len()}],
    });
    let p = Pusher::new(&reg.base_url());
    p.blob("charts/platform", &config);
    p.blob("charts/platform", &layer);
    p.manifest("charts/platform", "1.4.0", OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    let set = format!("{DIGEST_SET}={FAKE_DIGEST}");
    let r = ws.bundle(&["images", "-c", &format!("oci://{}/charts/platform", reg.host()), "--version", "1.4.0", "--set", &set]).success();
    assert_eq!(lines(&r.stdout), rendered_images(FAKE_DIGEST));
    let r = ws.bundle(&["images", "-c", &format!("oci://{}/charts/platform", reg.host()), "--version", "9.9.9"]).failure();
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
}

/// Every image `helm template` renders, by the same simple rule a reviewer would use.
fn helm_images(chart: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(helm()).args(["template", "x", chart]).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut images: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            if let Some(v) = l.strip_prefix("image:") {
                return Some(v.trim().trim_matches('"').to_string());
            }
            l.strip_prefix("--prometheus-config-reloader=").map(str::to_string)
        })
        .collect();
    images.sort();
    images.dedup();
    images
}

#[test]
fn chart_travels_in_the_bundle_and_the_values_file_closes_the_loop() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let world = Registry::start();
    let dst = Registry::start();
    let (cfg, pinned) = seed_world(&ws, &world);
    let cfg = cfg.to_str().unwrap();
    let set = format!("{DIGEST_SET}={pinned}");
    let chart = charts.join("platform");

    let r = ws
        .bundle(&["--registry-config", cfg, "export", "-c", chart.to_str().unwrap(), "--set", &set, "--pass", "", "--pass", "kafka-exporter.enabled=true", "-o", "platform.tar.zst"])
        .success();
    assert!(r.stderr.contains("Exported 14 images"), "13 images and the chart: {}", r.stderr);
    let inspect = ws.bundle(&["inspect", "platform.tar.zst"]).success();
    assert!(inspect.stdout.contains("charts/platform:1.4.0"), "{}", inspect.stdout);

    let dest = format!("{}/airgap", dst.host());
    let dry = ws.bundle(&["import", "-d", &dest, "platform.tar.zst", "-t"]).success();
    assert!(dry.stdout.contains(&format!("Copying chart platform:1.4.0 to {dest}/charts/platform:1.4.0 (dry-run)")), "{}", dry.stdout);
    let r = ws.bundle(&["import", "-d", &dest, "platform.tar.zst", "--values-out", "airgap-values.yaml"]).success();
    assert!(r.stderr.contains(&format!("helm install RELEASE oci://{dest}/charts/platform --version 1.4.0")), "{}", r.stderr);

    // The chart can be pulled from the destination by helm itself.
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
    let pulled_chart = pulled.join("platform-1.4.0.tgz");
    let pulled_chart = pulled_chart.to_str().unwrap();

    // Rendered with the generated values, every image is in the destination, and exists there.
    let values = std::fs::read_to_string(ws.path("airgap-values.yaml")).unwrap();
    assert!(values.contains("imageRegistry:"), "{values}");
    let values_path = ws.path("airgap-values.yaml").to_string_lossy().into_owned();
    for pass in [&[][..], &["--set", "kafka-exporter.enabled=true"][..]] {
        let mut args = vec!["-f", values_path.as_str(), "--set", &set];
        args.extend(pass);
        let images = helm_images(pulled_chart, &args);
        assert!(images.len() >= 11, "{images:?}");
        for image in &images {
            let rest = image.strip_prefix(&format!("{dest}/")).unwrap_or_else(|| panic!("{image} is not under {dest}\nvalues:\n{values}"));
            let (repo, reference) = match rest.split_once('@') {
                Some((name, digest)) => (name.rsplit_once(':').map_or(name, |(n, _)| n), digest),
                None => rest.rsplit_once(':').unwrap(),
            };
            assert!(get_manifest(&dst.base_url(), &format!("airgap/{repo}"), reference).is_some(), "{image} was not pushed\nvalues:\n{values}");
        }
    }
}

#[test]
fn bundle_specs_drive_exports_and_bad_ones_name_the_key() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let world = Registry::start();
    let (cfg, pinned) = seed_world(&ws, &world);
    ws.write(
        "spec.yaml",
        &format!(
            "chart: charts/platform\nset: [\"{DIGEST_SET}={pinned}\"]\npasses: [\"\"]\nimages: [quay.io/stackstate/annotated-tool:0.9]\nexclude: [busybox:1.36]\noutput: from-spec.tar.zst\n"
        ),
    );
    let _ = charts;
    let r = ws.bundle(&["--registry-config", cfg.to_str().unwrap(), "export", "--spec", "spec.yaml", "-t"]).success();
    assert!(r.stdout.contains("quay.io/stackstate/annotated-tool:0.9"), "{}", r.stdout);
    assert!(!r.stdout.contains("library/busybox"), "excluded: {}", r.stdout);
    ws.bundle(&["--registry-config", cfg.to_str().unwrap(), "export", "--spec", "spec.yaml"]).success();
    ws.bundle(&["verify", "from-spec.tar.zst"]).success();

    ws.write("bad.yaml", "chart: charts/platform\noutput: x.tar.zst\npasses: [\"\"]\nexclude: [a]\nextra_images: [b]\n");
    let r = ws.bundle(&["export", "--spec", "bad.yaml"]).failure();
    assert!(r.stderr.contains("bundle spec bad.yaml: at `extra_images`") || r.stderr.contains("extra_images"), "{}", r.stderr);

    // The shipped specs parse.
    for spec in ["bundles/stackstate.yaml", "bundles/demo.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(spec);
        bundle::spec::BundleSpec::load(&path).unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
}
