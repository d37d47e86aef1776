//! The chart patterns that broke the values file on public charts nobody here had tuned for (issue 25), one
//! fixture chart each: images kept in pieces by an operator, a registry with its organisation in one value,
//! hub/tag under internal defaults with an injected sidecar, a custom resource's image built from the
//! operator's registry, an image only the user's --set gives, and a header that claims only what was proven.
//! Each runs the whole loop against real registries: export, import, `helm template` with the values file,
//! and `bundle check` at the destination.

use std::collections::BTreeSet;

use crate::harness::*;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn chart(ws: &Workspace, name: &str) -> std::path::PathBuf {
    fixture_charts(ws).join(name)
}

/// Every image `bundle check` saw is ok.
#[track_caller]
fn all_ok(outcome: &LoopOutcome) {
    assert!(
        !outcome.checked.is_empty() && outcome.checked.values().all(|s| s == "ok"),
        "bundle check: {:?}\n{}",
        outcome.checked,
        outcome.values
    );
}

#[test]
fn regression_operator_images_kept_in_pieces_are_assembled_exported_and_moved_by_their_repository() {
    helm();
    let ws = Workspace::new();
    let chart = chart(&ws, "operator-pieces");
    let listed = ws.bundle(&["images", "-c", chart.to_str().unwrap()]).success();
    // The ClusterPolicy's `image: driver` is `repository/image:version`; no bare name reaches a registry.
    assert_eq!(
        listed.stdout.lines().map(str::to_string).collect::<BTreeSet<_>>(),
        set(&[
            "ghcr.io/pieces/container-toolkit:v1.20.0",
            "quay.io/pieces/cloud-native/k8s-driver-manager:v0.12.0",
            "quay.io/pieces/driver:595.91.07",
            "quay.io/pieces/gpu-operator:v2.0.0",
        ]),
        "{}",
        listed.stderr
    );
    // Components the chart leaves for the user are named, with what they lack, and not guessed.
    assert!(
        listed.stderr.contains("`vgpu-manager` at ClusterPolicy/cluster-policy spec.vgpuManager.image is not an image reference: it lacks a registry or repository and a version"),
        "{}",
        listed.stderr
    );
    assert!(listed.stderr.contains("`sandbox-plugin` at ClusterPolicy/cluster-policy spec.sandbox.image is not an image reference: it lacks a version"), "{}", listed.stderr);
    let why = ws.bundle(&["images", "-c", chart.to_str().unwrap(), "--why"]).success();
    assert!(
        why.stdout.contains(
            "quay.io/pieces/driver:595.91.07\n    common values: ClusterPolicy/cluster-policy spec.driver.image (image-key, assembled from image + repository + version)\n"
        ),
        "{}",
        why.stdout
    );

    let outcome = closed_loop(&ws, &chart, &[], &[], None);
    all_ok(&outcome);
    assert!(outcome.unmoved.is_empty() && outcome.warned.is_empty(), "{:?}\n{}", outcome.unmoved, outcome.values);
    assert_eq!(
        outcome.moved,
        set(&[
            "pieces/container-toolkit:v1.20.0",
            "pieces/cloud-native/k8s-driver-manager:v0.12.0",
            "pieces/driver:595.91.07",
            "pieces/gpu-operator:v2.0.0",
        ]),
        "{}",
        outcome.values
    );
    // The plan moves the pieces the operator puts in front, never the name.
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(&outcome.values).unwrap();
    let at = |p: &str| p.split('.').try_fold(&values, |v, k| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    let dest = &outcome.dest;
    assert_eq!(at("driver.repository"), Some(format!("{dest}/pieces")), "{}", outcome.values);
    assert_eq!(at("driver.manager.repository"), Some(format!("{dest}/pieces/cloud-native")), "{}", outcome.values);
    assert_eq!(at("operator.repository"), Some(format!("{dest}/pieces")), "{}", outcome.values);
    assert_eq!(at("toolkit.registry"), Some(dest.to_string()), "{}", outcome.values);
    assert!(at("driver.image").is_none() && at("toolkit.image").is_none(), "{}", outcome.values);
}

#[test]
fn regression_a_registry_with_its_organisation_in_one_value_moves_every_image_and_the_injected_sidecar() {
    helm();
    let ws = Workspace::new();
    let outcome = closed_loop(&ws, &chart(&ws, "registry-org"), &[], &[], None);
    all_ok(&outcome);
    assert_eq!(
        outcome.moved,
        set(&[
            "runtime/operator:1.18.3",
            "runtime/placement:1.18.3",
            "runtime/sentry:1.18.3",
            "runtime/scheduler:1.18.3",
            "runtime/injector:1.18.3",
            "runtime/daprd:1.18.3",
        ]),
        "{}",
        outcome.values
    );
    // One value moves all six: `ghcr.io/runtime` mapped as import maps names.
    let body: Vec<&str> = outcome.values.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(body, ["global:".to_string(), format!("  registry: {}/runtime", outcome.dest)], "{}", outcome.values);
    assert!(outcome.checked.contains_key(&format!("{}/runtime/daprd:1.18.3", outcome.dest)), "{:?}", outcome.checked);
}

#[test]
fn regression_hub_and_tag_under_internal_defaults_move_the_control_plane_and_the_injected_sidecar() {
    helm();
    let ws = Workspace::new();
    let chart = chart(&ws, "hub-tag");
    let listed = ws.bundle(&["images", "-c", chart.to_str().unwrap()]).success();
    // The sidecar is named only in the injector's values, in pieces; busybox only in its template.
    assert_eq!(
        listed.stdout.lines().map(str::to_string).collect::<BTreeSet<_>>(),
        set(&["busybox:1.28", "docker.io/mesh/pilot:1.30.3", "docker.io/mesh/proxyv2:1.30.3"])
    );
    let outcome = closed_loop(&ws, &chart, &[], &[], None);
    assert_eq!(outcome.moved, set(&["mesh/pilot:1.30.3", "mesh/proxyv2:1.30.3"]), "{}", outcome.values);
    // The template writes busybox itself: named by import, by the header and by the check.
    assert_eq!(outcome.warned, set(&["busybox:1.28"]));
    assert_eq!(outcome.unmoved, outcome.warned);
    let not_ok: BTreeSet<String> = outcome.checked.iter().filter(|(_, s)| *s != "ok").map(|(r, _)| r.clone()).collect();
    assert_eq!(not_ok, set(&["busybox:1.28"]), "{:?}", outcome.checked);
    // Only the global hub moves the sidecar too: one key, not the control plane's own `hub`.
    let body: Vec<&str> = outcome.values.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            "_internal_defaults_do_not_set:".to_string(),
            "  global:".to_string(),
            format!("    hub: {}/mesh", outcome.dest)
        ],
        "{}",
        outcome.values
    );
}

#[test]
fn regression_a_custom_resource_image_built_from_the_operator_registry_moves_with_the_operator() {
    helm();
    let ws = Workspace::new();
    let outcome = closed_loop(&ws, &chart(&ws, "operator-registry-cr"), &[], &[], None);
    all_ok(&outcome);
    assert_eq!(outcome.moved, set(&["vendor/operator:3.0.0", "vendor/agent:7.1.0"]), "{}", outcome.values);
    // `registry: HOST/PREFIX`, repository untouched: it moves the operator and the agent its CR names.
    let body: Vec<&str> = outcome.values.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        ["operator:".to_string(), "  image:".to_string(), format!("    registry: {}", outcome.dest)],
        "{}",
        outcome.values
    );
}

#[test]
fn regression_an_image_the_user_sets_with_set_is_in_the_values_file_and_import_prints_the_flags() {
    helm();
    let ws = Workspace::new();
    let chart = chart(&ws, "user-set");
    let pass =
        "proxy.enabled=true,proxy.image.registry=quay.io,proxy.image.repository=vendor/proxy,proxy.image.tag=2.0";
    let outcome = closed_loop(&ws, &chart, &[], &[vec![pass.into()]], None);
    all_ok(&outcome);
    // The harness installed with the user's --pass as --set flags, then the flags import printed: both land.
    assert_eq!(outcome.moved, set(&["vendor/app:1.0.0", "vendor/proxy:2.0"]), "{}", outcome.values);
    assert!(outcome.warned.is_empty(), "the key moves it; nothing is unmovable: {}", outcome.import_stderr);
    assert!(
        outcome
            .export_stderr
            .contains("the air-gap values file sets a key that you give with --set or --pass (proxy.image.registry)"),
        "{}",
        outcome.export_stderr
    );
    let dest = &outcome.dest;
    let flag = format!("  --set-string proxy.image.registry={dest}");
    assert!(outcome.import_stderr.contains("helm's --set beats every values file"), "{}", outcome.import_stderr);
    assert!(outcome.import_stderr.contains(&format!("{flag}\n")), "{}", outcome.import_stderr);
    assert!(outcome.values.contains(&format!("#   {}\n", flag.trim())), "the header says it too:\n{}", outcome.values);

    // Installed the way the proof renders, the user's values in a file before the air-gap file: lands too.
    let user = ws.write(
        "user-values.yaml",
        "proxy:\n  enabled: true\n  image: {registry: quay.io, repository: vendor/proxy, tag: '2.0'}\n",
    );
    let out = std::process::Command::new(helm())
        .args(["template", "bundle"])
        .arg(&chart)
        .arg("-f")
        .arg(&user)
        .arg("-f")
        .arg(ws.path("airgap.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let images = strict_images(&String::from_utf8(out.stdout).unwrap());
    assert!(images.contains(&format!("{dest}/vendor/proxy:2.0")), "{images:?}");
}

#[test]
fn regression_the_values_file_header_claims_only_what_was_proven() {
    helm();
    let ws = Workspace::new();
    let partial = closed_loop(&ws, &chart(&ws, "hub-tag"), &[], &[], None);
    assert!(
        partial.values.contains(&format!(
            "# Proven: 2 of 3 images land at {}; these do not:\n#   busybox:1.28: the chart's templates write it; no values key moves it\n",
            partial.dest
        )),
        "{}",
        partial.values
    );
    let ws = Workspace::new();
    let whole = closed_loop(&ws, &chart(&ws, "registry-org"), &[], &[], None);
    assert!(whole.values.contains(&format!("# Proven: all 6 images land at {} (", whole.dest)), "{}", whole.values);
    assert!(!whole.values.contains("do not"), "{}", whole.values);
}

/// Push a chart's images with `import`, then run `bundle check` on the chart as the site installs it.
#[test]
fn check_says_ok_not_under_or_missing_for_every_image_and_exits_0_only_when_all_are_ok() {
    helm();
    let ws = Workspace::new();
    let chart = chart(&ws, "registry-org");
    let c = chart.to_str().unwrap();
    let outcome = closed_loop(&ws, &chart, &[], &[], None);
    all_ok(&outcome);
    // The loop's registries are gone; a fresh destination holds what a second import pushes.
    let (world, dst) = (Registry::start(), Registry::start());
    let refs: BTreeSet<String> = ws.bundle(&["images", "-c", c]).success().stdout.lines().map(str::to_string).collect();
    seed(&world, &refs);
    let cfg = world_config(&ws, &world, &refs);
    let cfg = cfg.to_str().unwrap();
    ws.bundle(&["--registry-config", cfg, "export", "-c", c, "-o", "check.tar.zst"]).success();
    let dest = format!("{}/mirror", dst.host());
    ws.bundle(&["import", "-d", &dest, "check.tar.zst", "--values-out", "site.yaml"]).success();

    let ok = ws.bundle(&["check", "-d", &dest, "-c", c, "-f", "site.yaml"]).success();
    let lines: Vec<&str> = ok.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", ok.stdout);
    assert!(lines.iter().all(|l| l.starts_with("ok  ")), "{}", ok.stdout);
    assert!(ok.stderr.contains("6 images: 6 ok"), "{}", ok.stderr);

    // Without the values file every pod pulls from ghcr.io: not under the destination, exit 1.
    let public = ws.bundle(&["check", "-d", &dest, "-c", c]).failure();
    assert!(
        public.stdout.lines().all(|l| l.starts_with(&format!("not under {dest}  ghcr.io/runtime/"))),
        "{}",
        public.stdout
    );
    assert!(
        public.stderr.contains(&format!("error: 6 of 6 images would not be pulled from {dest}")),
        "{}",
        public.stderr
    );
    assert!(public.stderr.contains("hint: install with the air-gap values file"), "{}", public.stderr);

    // A tag the import never pushed: under the destination, missing there (HEAD answered 404).
    let missing =
        ws.bundle(&["check", "-d", &dest, "-c", c, "-f", "site.yaml", "--set", "global.tag=9.9", "--json"]).failure();
    let report: serde_json::Value = serde_json::from_str(&missing.stdout).unwrap();
    assert_eq!(report["formatVersion"], 1);
    assert_eq!(report["destination"], dest.as_str());
    let statuses: BTreeSet<&str> =
        report["images"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, BTreeSet::from(["missing"]), "{}", missing.stdout);
    let operator = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == format!("{dest}/runtime/operator:9.9").as_str());
    assert_eq!(operator.unwrap()["found"][0]["how"], "image-key", "{}", missing.stdout);
    assert!(dst.count_requests("HEAD /v2/mirror/runtime/operator/manifests/9.9") >= 1, "asked the destination");

    // Rendered manifests, from stdin, with where each image was found.
    let rendered = std::process::Command::new(helm())
        .args(["template", "bundle", c, "-f"])
        .arg(ws.path("site.yaml"))
        .output()
        .unwrap();
    let mut cmd = ws.command(&["check", "-d", &dest, "--manifests", "-", "--why"]);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &rendered.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "ok  {dest}/runtime/daprd:1.18.3\n      Deployment/runtime-injector spec.template.spec.containers[0].env[0].value (env)\n"
        )),
        "{stdout}"
    );
}

#[test]
fn check_refuses_what_it_cannot_check_with_the_reason_and_a_hint() {
    let ws = Workspace::new();
    let nothing = ws.bundle(&["check", "-d", "127.0.0.1:5000/mirror"]).failure();
    assert!(nothing.stderr.contains("error: nothing to check: no chart and no manifests"), "{}", nothing.stderr);
    assert!(nothing.stderr.contains("hint: give the chart as it will be installed"), "{}", nothing.stderr);
    let bad_dest = ws.command(&["check", "-d", "https://reg.local", "--manifests", "-"]).output().unwrap();
    assert_eq!(bad_dest.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_dest.stderr).contains("invalid -d"));
    ws.write("broken.yaml", "kind: Pod\nspec: [unclosed\n");
    let broken = ws.bundle(&["check", "-d", "127.0.0.1:5000/mirror", "--manifests", "broken.yaml"]).failure();
    assert!(broken.stderr.contains("cannot read the manifests in broken.yaml"), "{}", broken.stderr);
    let absent = ws.bundle(&["check", "-d", "127.0.0.1:5000/mirror", "--manifests", "absent.yaml"]).failure();
    assert!(absent.stderr.contains("cannot open absent.yaml"), "{}", absent.stderr);
    ws.write("empty.yaml", "kind: ConfigMap\nmetadata: {name: x}\n");
    let empty = ws.bundle(&["check", "-d", "127.0.0.1:5000/mirror", "--manifests", "empty.yaml"]).failure();
    assert!(empty.stderr.contains("error: no image found to check"), "{}", empty.stderr);
    // The destination that is not there: each image is unchecked with the reason, never ok.
    ws.write(
        "pod.yaml",
        "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: '127.0.0.1:9/mirror/a:1'}]}\n",
    );
    let down = ws.bundle(&["--retries", "0", "check", "-d", "127.0.0.1:9/mirror", "--manifests", "pod.yaml"]).failure();
    assert!(down.stdout.starts_with("unchecked  127.0.0.1:9/mirror/a:1\n"), "{}", down.stdout);
    assert!(down.stdout.contains("cannot reach registry 127.0.0.1:9"), "{}", down.stdout);
}
