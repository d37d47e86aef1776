//! Helm charts: discovery with helm and without, chart sources (directory, .tgz, repository, oci://), the
//! chart travelling in the bundle, and the air-gap values file checked in a closed loop with the real helm.

use std::collections::BTreeSet;
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
    assert_eq!(
        how("quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0"),
        vec!["args Deployment/bundle-operator spec.template.spec.containers[0].args[1]"]
    );
    assert_eq!(how("quay.io/prometheus/prometheus:v2.51.0"), vec!["image-key Prometheus/bundle spec.image"]);
    assert_eq!(how("busybox:1.36"), vec!["image-key Job/bundle-migrate spec.template.spec.containers[0].image"]);
}

#[test]
fn static_discovery_without_helm_and_its_known_misses() {
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let set = format!("{DIGEST_SET}={FAKE_DIGEST}");
    let r =
        ws.bundle(&["images", "-c", charts.join("platform").to_str().unwrap(), "--set", &set, "--no-helm"]).success();
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
        let mut args = vec![
            "images",
            "-c",
            chart.to_str().unwrap(),
            "--pass",
            "",
            "--pass",
            "kafka-exporter.enabled=true",
            "-f",
            "override.yaml",
            "--set-string",
            "operator.image.tag=2",
        ];
        args.extend(mode);
        let out = lines(&ws.bundle(&args).success().stdout);
        assert!(out.contains(&"quay.io/prometheuscommunity/kafka-exporter:v1.6.0".to_string()), "{mode:?}: {out:?}");
        assert!(
            out.contains(&"quay.io/prometheuscommunity/elasticsearch-exporter:v1.7.0".to_string()),
            "{mode:?}: {out:?}"
        );
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
    assert!(
        r.stderr.contains("chart `platform` needs legacy 1.0.0, which is not in its charts/ directory"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: run `helm dependency build`"), "{}", r.stderr);
}

#[test]
fn charts_come_from_a_repository_index_with_version_choice_and_digest_check() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let repo = ws.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    // The repository as helm makes one: `helm package` per version, then `helm repo index` with absolute URLs.
    let server = StaticServer::start(&repo);
    let chart_yaml = charts.join("platform/Chart.yaml");
    let original = std::fs::read_to_string(&chart_yaml).unwrap();
    assert!(original.contains("\nversion: 1.4.0\n"), "{original}");
    for version in ["1.3.0", "1.4.0", "1.5.0-rc.1"] {
        std::fs::write(&chart_yaml, original.replace("\nversion: 1.4.0\n", &format!("\nversion: {version}\n")))
            .unwrap();
        helm_package_platform(&ws, &charts, &repo);
    }
    helm_run(&ws, &["repo", "index", repo.to_str().unwrap(), "--url", &server.url()]);

    let r = ws.bundle(&["images", "-c", "platform", "-r", &server.url(), "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["chart"]["version"], "1.4.0", "the newest stable version");
    let r = ws.bundle(&["images", "-c", "platform", "-r", &server.url(), "--version", "1.3.0", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["chart"]["version"], "1.3.0");
    // What helm itself finds there.
    let found = helm_run(&ws, &["show", "chart", "platform", "--repo", &server.url()]);
    assert!(found.contains("version: 1.4.0"), "{found}");

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
    // Pushed as helm pushes charts: `helm package`, then `helm push` to the registry.
    let tgz = helm_package_platform(&ws, &charts, &ws.path("packaged"));
    let destination = format!("oci://{}/charts", reg.host());
    helm_run(&ws, &["push", tgz.to_str().unwrap(), &destination, "--plain-http"]);
    let set = format!("{DIGEST_SET}={FAKE_DIGEST}");
    let r = ws
        .bundle(&[
            "images",
            "-c",
            &format!("oci://{}/charts/platform", reg.host()),
            "--version",
            "1.4.0",
            "--set",
            &set,
        ])
        .success();
    assert_eq!(lines(&r.stdout), rendered_images(FAKE_DIGEST));
    let r =
        ws.bundle(&["images", "-c", &format!("oci://{}/charts/platform", reg.host()), "--version", "9.9.9"]).failure();
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
        .bundle(&[
            "--registry-config",
            cfg,
            "export",
            "-c",
            chart.to_str().unwrap(),
            "--set",
            &set,
            "--pass",
            "",
            "--pass",
            "kafka-exporter.enabled=true",
            "-o",
            "platform.tar.zst",
        ])
        .success();
    assert!(r.stderr.contains("Exported 14 images"), "13 images and the chart: {}", r.stderr);
    let inspect = ws.bundle(&["inspect", "platform.tar.zst"]).success();
    assert!(inspect.stdout.contains("charts/platform:1.4.0"), "{}", inspect.stdout);

    let dest = format!("{}/airgap", dst.host());
    let dry = ws.bundle(&["import", "-d", &dest, "platform.tar.zst", "-t"]).success();
    assert!(
        dry.stdout.contains(&format!("Copying chart platform:1.4.0 to {dest}/charts/platform:1.4.0 (dry-run)")),
        "{}",
        dry.stdout
    );
    let r = ws.bundle(&["import", "-d", &dest, "platform.tar.zst", "--values-out", "airgap-values.yaml"]).success();
    assert!(
        r.stderr.contains(&format!("helm install RELEASE oci://{dest}/charts/platform --version 1.4.0")),
        "{}",
        r.stderr
    );

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
        assert_images_exist_at(&dst, &dest, &images, &values);
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

    ws.write(
        "bad.yaml",
        "chart: charts/platform\noutput: x.tar.zst\npasses: [\"\"]\nexclude: [a]\nextra_images: [b]\n",
    );
    let r = ws.bundle(&["export", "--spec", "bad.yaml"]).failure();
    assert!(
        r.stderr.contains("bundle spec bad.yaml: at `extra_images`") || r.stderr.contains("extra_images"),
        "{}",
        r.stderr
    );

    // The shipped specs parse.
    for spec in [
        "bundles/stackstate.yaml",
        "bundles/demo.yaml",
        "bundles/suse-observability.yaml",
        "bundles/suse-observability-agent.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(spec);
        bundle::commands::spec::BundleSpec::load(&path).unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
}

/// The `wild` fixture: one of each way public charts name images that broke the values file (issue 12).
fn wild(ws: &Workspace) -> std::path::PathBuf {
    fixture_charts(ws).join("wild")
}

#[test]
fn regression_discovery_of_a_configmap_script_that_is_not_yaml_ends() {
    helm();
    let ws = Workspace::new();
    let chart = wild(&ws);
    // Discovery used to spin forever on a ConfigMap string that mentions `image:` but is not YAML: a bounded
    // wait makes a regression a failure instead of a hung suite.
    let run = bundle::support::child_process::run_bounded(
        ws.command(&["images", "-c", chart.to_str().unwrap()]),
        None,
        std::time::Duration::from_secs(120),
    )
    .unwrap_or_else(|_| panic!("bundle images did not finish"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.contains("quay.io/stackstate/stackgraph-console:7.1") && stdout.contains("busybox:1.36"),
        "{stdout}"
    );
}

#[test]
fn regression_values_file_sends_every_pod_of_the_wild_patterns_to_an_image_that_exists() {
    helm();
    let ws = Workspace::new();
    let chart = wild(&ws);
    let outcome = closed_loop(&ws, &chart, &[], &[vec![], vec!["hbase.console.enabled=false".into()]], None);
    let v = &outcome.values;
    // Bitnami's check: the probe rendered with the chart's switch for foreign images, which the file carries.
    assert!(outcome.export_stderr.contains("global.security.allowInsecureImages"), "{}", outcome.export_stderr);
    assert!(v.contains("allowInsecureImages: true"), "{v}");
    // Only the image the template writes itself stays, and import names it.
    assert_eq!(outcome.unmoved, BTreeSet::from(["busybox:1.36".to_string()]), "{v}");
    assert_eq!(outcome.warned, outcome.unmoved);
    let want: BTreeSet<String> = [
        "wild/app:1.0",                             // global.imageRegistry
        "oliver006/redis_exporter:v1.75.0",         // redis-ha: the tag key untouched, no `:latest`
        "argoproj/argocd:v3.0.0",                   // argo-cd: global.image.repository
        "jetstack/cert-manager-controller:v1.21.1", // cert-manager: imageRegistry + imageNamespace + name
        "stackstate/stackpacks:1.0",                // a list, carried whole
        "stackstate/stackpacks-extra:2.0",
        "hashicorp/vault:1.15.0",                        // vault: also in an env value
        "stackstate/hbase-master:2.5",                   // hbase: global + "/" + repository, not DEST/DEST
        "stackstate/stackgraph-console:7.1",             // two deep
        "kube-state-metrics/kube-state-metrics:v2.10.0", // kube-state-metrics: not DEST/mirror/mirror
        "prometheus/pushgateway:v1.11.0",                // registry inside the repository, global in front
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(outcome.moved, want, "{v}");
    // The list override kept every element and field: the init containers keep their names.
    for text in &outcome.renders {
        assert!(
            text.contains("name: init-stackpacks-base") && text.contains("name: init-stackpacks-extra"),
            "{v}\n{text}"
        );
        assert!(text.contains("value: \"127.0.0.1:"), "the injector's env moved too:\n{text}");
    }
    // The header claims exactly what was proven: the images that land, and the one that does not, with why.
    let total = outcome.moved.len() + outcome.unmoved.len();
    assert!(v.contains(&format!("# Proven: {} of {total} images land at ", total - 1)), "{v}");
    assert!(v.contains("#   busybox:1.36: the chart's templates write it; no values key moves it\n"), "{v}");
}

#[test]
fn without_helm_the_values_file_is_written_and_called_unproven() {
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let world = Registry::start();
    let dst = Registry::start();
    let (cfg, pinned) = seed_world(&ws, &world);
    let set = format!("{DIGEST_SET}={pinned}");
    ws.bundle(&[
        "--registry-config",
        cfg.to_str().unwrap(),
        "export",
        "--no-helm",
        "-c",
        charts.join("platform").to_str().unwrap(),
        "--set",
        &set,
        "-o",
        "p.tar.zst",
    ])
    .success();
    let r = ws
        .bundle(&["import", "-d", &format!("{}/airgap", dst.host()), "p.tar.zst", "--values-out", "v.yaml"])
        .success();
    assert!(r.stderr.contains("v.yaml is unproven: the chart was surveyed without helm"), "{}", r.stderr);
    let v = std::fs::read_to_string(ws.path("v.yaml")).unwrap();
    assert!(v.contains("# Unproven") && v.contains("repository: airgap/stackstate/worker"), "{v}");
}

#[test]
fn a_helm_that_never_finishes_is_stopped_and_named() {
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    // A helm that answers `version` and then hangs on `template`, as a chart whose templates loop would.
    let fake =
        ws.write("slow-helm", "#!/bin/sh\nif [ \"$1\" = version ]; then echo v3.17.3; exit 0; fi\nexec sleep 600\n");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = std::time::Instant::now();
    let r = ws
        .bundle(&[
            "images",
            "-c",
            charts.join("legacy").to_str().unwrap(),
            "--helm",
            fake.to_str().unwrap(),
            "--helm-timeout",
            "2",
            "--pass",
            "a=b",
        ])
        .failure();
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    assert!(
        r.stderr.contains("`helm template` with pass `a=b` did not finish within 2 s and was stopped"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: raise the limit with --helm-timeout"), "{}", r.stderr);
}
