//! A whole product in one bundle: two real corpus charts (cert-manager and ingress-nginx), an extra image and
//! two files (a local one and one fetched by URL against its sha256), exported from one spec, verified,
//! imported into a registry under a prefix; each chart installed with its own values file pulls only images at
//! the destination (`bundle check`), both charts are at `charts/NAME`, the files come back byte for byte, and a
//! blob both charts share is stored once. Bad suite specs are refused before anything is downloaded.

use std::collections::BTreeSet;

use std::path::Path;

use crate::corpus::{CorpusChart, corpus, say};
use crate::harness::*;

const CHARTS: [&str; 2] = ["cert-manager-v1.21.1", "ingress-nginx-4.15.1"];
const EXTRA: &str = "docker.io/library/busybox:1.36";

/// The two corpus charts, or None (said) when the corpus lacks them.
fn suite_charts() -> Option<(std::path::PathBuf, Vec<CorpusChart>)> {
    let (dir, charts) = corpus()?;
    let chosen: Vec<CorpusChart> =
        CHARTS.iter().filter_map(|id| charts.iter().find(|c| c.id == *id).cloned()).collect();
    if chosen.len() < CHARTS.len() {
        say(&format!("NOT TESTED: the suite needs {} from the corpus", CHARTS.join(" and ")));
        return None;
    }
    Some((dir, chosen))
}

/// The chart's `set` and `test_set` (digest pins dropped: fake images cannot match them), one expression each.
fn sets(c: &CorpusChart) -> Vec<String> {
    c.set.iter().chain(&c.test_set).cloned().collect()
}

/// A YAML list of strings, quoted.
fn yaml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
}

/// Every image `refs` names, faked in `world` with one base layer they all share and one layer of their own.
fn seed_sharing(world: &Registry, refs: &BTreeSet<String>) -> String {
    let p = Pusher::new(&world.base_url());
    let base = random_layer(4096, 7000);
    let shared = base.0.digest.clone();
    for (i, r) in refs.iter().enumerate() {
        let parsed = bundle::oci::reference::ImageRef::parse(r).unwrap();
        let img = image(&[base.clone(), random_layer(512, 7001 + i as u64)], "amd64", false);
        p.image(&format!("{}/{}", parsed.registry(), parsed.repository()), parsed.tag().unwrap_or("latest"), &img);
    }
    shared
}

#[test]
fn a_suite_of_two_charts_an_image_and_files_lands_whole_and_each_chart_pulls_only_from_the_destination() {
    let Some((dir, charts)) = suite_charts() else { return };
    helm();
    let ws = Workspace::new();
    let world = Registry::start();
    let dst = Registry::start();

    // What each chart needs, as `bundle images` lists it for that chart alone.
    let mut refs: BTreeSet<String> = [EXTRA.to_string()].into();
    let mut per_chart = Vec::new();
    for c in &charts {
        let mut args = vec!["images".to_string()];
        args.extend(c.bundle_args(&dir, true));
        let listed: BTreeSet<String> = ws
            .bundle(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .success()
            .stdout
            .lines()
            .map(str::to_string)
            .collect();
        refs.extend(listed.iter().cloned());
        per_chart.push(listed);
    }
    let shared = seed_sharing(&world, &refs);
    let cfg = world_config(&ws, &world, &refs);

    // Files: one local, one served over HTTP and named by its sha256.
    let install = random_bytes(3000, 11);
    std::fs::write(ws.path("install.sh"), &install).unwrap();
    let served = ws.path("served");
    std::fs::create_dir_all(&served).unwrap();
    let cli = random_bytes(200_000, 12);
    std::fs::write(served.join("cli.tar.gz"), &cli).unwrap();
    let server = StaticServer::start(&served);

    let mut spec = String::from("output: suite.tar.zst\ncharts:\n");
    for c in &charts {
        spec.push_str(&format!("  - chart: {}\n    set: {}\n", c.package(&dir).display(), yaml_list(&sets(c))));
        if !c.passes.is_empty() {
            spec.push_str(&format!("    passes: {}\n", yaml_list(&c.passes)));
        }
    }
    spec.push_str(&format!(
        "images: [{EXTRA}]\nfiles:\n  - path: install.sh\n  - url: http://127.0.0.1:{}/cli.tar.gz\n    sha256: {}\n",
        server.port,
        sha256(&cli)
    ));
    ws.write("suite.yaml", &spec);
    let cfg = cfg.to_str().unwrap();
    ws.bundle(&["--registry-config", cfg, "export", "--spec", "suite.yaml"]).success();
    ws.bundle(&["verify", "suite.tar.zst"]).success();

    // bundle.json names both charts and both files; the base layer every image shares is in the tar once.
    let inspect: serde_json::Value =
        serde_json::from_str(&ws.bundle(&["inspect", "--json", "suite.tar.zst"]).success().stdout).unwrap();
    assert_eq!(inspect["formatVersion"], 4);
    let names: Vec<&str> = inspect["charts"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cert-manager", "ingress-nginx"]);
    let files: Vec<&str> = inspect["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(files, ["install.sh", "cli.tar.gz"]);
    let listing =
        std::process::Command::new("tar").args(["--zstd", "-tf"]).arg(ws.path("suite.tar.zst")).output().unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    let hex = shared.trim_start_matches("sha256:");
    assert_eq!(
        listing.lines().filter(|l| l.ends_with(hex)).count(),
        1,
        "the shared base layer is stored more than once"
    );

    // The SPDX inventory: both charts, each depending on images, and the two files.
    let spdx: serde_json::Value =
        serde_json::from_str(&ws.bundle(&["inspect", "--format", "spdx-json", "suite.tar.zst"]).success().stdout)
            .unwrap();
    let packages = spdx["packages"].as_array().unwrap();
    let purpose = |p: &str| packages.iter().filter(|x| x["primaryPackagePurpose"] == p).count();
    assert_eq!(purpose("FILE"), 2, "{spdx:#}");
    let chart_ids: Vec<&str> = packages
        .iter()
        .filter(|x| x["primaryPackagePurpose"] == "APPLICATION")
        .map(|x| x["SPDXID"].as_str().unwrap())
        .collect();
    assert_eq!(chart_ids.len(), 2);
    for id in chart_ids {
        let depends = spdx["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["spdxElementId"] == id && r["relationshipType"] == "DEPENDS_ON")
            .count();
        assert!(depends > 0, "{id} depends on no image");
    }

    let dest = format!("{}/site", dst.host());
    let import = ws
        .bundle(&["import", "-d", &dest, "suite.tar.zst", "--values-out", "values", "--files-out", "files"])
        .success();
    for (name, version) in [("cert-manager", "v1.21.1"), ("ingress-nginx", "4.15.1")] {
        assert!(
            import.stderr.contains(&format!("helm install RELEASE oci://{dest}/charts/{name} --version {version}")),
            "{}",
            import.stderr
        );
        assert!(
            get_manifest(&dst.base_url(), &format!("site/charts/{name}"), version).is_some(),
            "{name} not at charts/{name}"
        );
    }
    // The file's artifact at the destination is oras's shape: its one layer is the file, titled with its name.
    let repo = "site/files/install-sh";
    let tag = &sha256(&install)["sha256:".len()..][..16];
    let (manifest, _) = get_manifest(&dst.base_url(), repo, tag).expect("the file's artifact at the destination");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.bundle.file.v1");
    let layer = &manifest["layers"][0];
    assert_eq!(layer["annotations"]["org.opencontainers.image.title"], "install.sh");
    assert_eq!(get_blob(&dst.base_url(), repo, layer["digest"].as_str().unwrap()).unwrap(), install);
    assert!(import.stderr.contains(&format!("File install.sh: {dest}/files/install-sh:{tag}")), "{}", import.stderr);
    assert_eq!(std::fs::read(ws.path("files/install.sh")).unwrap(), install, "install.sh changed on its way");
    assert_eq!(std::fs::read(ws.path("files/cli.tar.gz")).unwrap(), cli, "cli.tar.gz changed on its way");
    for r in &refs {
        let parsed = bundle::oci::reference::ImageRef::parse(r).unwrap();
        let at = format!("site/{}", parsed.repository());
        assert!(get_manifest(&dst.base_url(), &at, parsed.tag().unwrap()).is_some(), "{r} is not at {dest}");
    }

    // Each chart, installed from the destination with its own values file, pulls only images that are there.
    for (c, listed) in charts.iter().zip(&per_chart) {
        let name = c.id.rsplit_once('-').unwrap().0;
        let version = c.id.rsplit_once('-').unwrap().1;
        let values = ws.path(&format!("values/{name}-airgap-values.yaml"));
        assert!(values.is_file(), "no values file for {name}:\n{}", import.stderr);
        let mut check = vec![
            "check".to_string(),
            "-d".into(),
            dest.clone(),
            "-c".into(),
            format!("oci://{dest}/charts/{name}"),
            "--version".into(),
            version.into(),
            "-f".into(),
            values.display().to_string(),
        ];
        for s in sets(c) {
            check.extend(["--set".into(), s]);
        }
        for p in &c.passes {
            check.extend(["--pass".into(), p.clone()]);
        }
        let r = ws.bundle(&check.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(r.code, 0, "bundle check of {name} with its values file:\n{}\n{}", r.stdout, r.stderr);
        let ok = r.stdout.lines().filter(|l| l.starts_with("ok ")).count();
        assert!(ok >= listed.len().min(1), "{name}: check saw no image:\n{}", r.stdout);
    }
}

#[test]
fn bad_suite_specs_are_refused_before_anything_is_downloaded() {
    let ws = Workspace::new();
    let world = Registry::start();
    let charts = fixture_charts(&ws);
    let (cfg, _) = seed_world(&ws, &world);
    let cfg = cfg.to_str().unwrap();
    let platform = charts.join("platform");
    let body = b"#!/bin/sh\necho hi\n";
    let served = ws.path("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::write(served.join("tool.sh"), body).unwrap();
    let server = StaticServer::start(&served);
    let wrong = "0".repeat(64);
    // Seeding is done: from here on, every request counts.
    let seeded = world.count_requests("/v2/");
    for (spec, named) in [
        (format!("charts:\n  - chart: {}\n    sett: [a=1]\n", platform.display()), "at `charts[0]"),
        (format!("charts:\n  - chart: {0}\n  - chart: {0}\n", platform.display()), "`charts[1]`"),
        ("images: [quay.io/stackstate/worker:2.3.1]\nfiles:\n  - path: missing.sh\n".to_string(), "`files[0]`"),
        (
            format!(
                "images: [quay.io/stackstate/worker:2.3.1]\nfiles:\n  - url: http://127.0.0.1:{}/tool.sh\n    sha256: {wrong}\n",
                server.port
            ),
            "`tool.sh` from http://127.0.0.1",
        ),
    ] {
        ws.write("bad.yaml", &spec);
        let r = ws.bundle(&["--registry-config", cfg, "export", "--spec", "bad.yaml", "-o", "bad.tar.zst"]).failure();
        assert!(r.stderr.contains(named), "{spec}\n{}", r.stderr);
        assert!(!ws.path("bad.tar.zst").exists(), "an archive was written for a refused spec");
        assert_eq!(world.count_requests("/v2/"), seeded, "a registry was asked before the spec was refused:\n{spec}");
    }
    // The mismatch says both digests.
    let r = ws.bundle(&["--registry-config", cfg, "export", "--spec", "bad.yaml", "-o", "bad.tar.zst"]).failure();
    assert!(
        r.stderr.contains(&format!("but the spec says sha256:{wrong}")) && r.stderr.contains(&sha256(body)),
        "{}",
        r.stderr
    );
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// A suite of the fixture charts `platform` and `legacy` (which `platform` also vendors: their images overlap)
/// with `files`, written for `ws`; `extra` adds more `files:` entries.
fn fixture_suite(charts: &Path, pinned: &str, extra: &str) -> String {
    format!(
        "charts:\n  - chart: {}\n    set: [\"pinned.image.digest={pinned}\"]\n  - chart: {}\nfiles:\n  - path: notes.txt\n{extra}",
        charts.join("platform").display(),
        charts.join("legacy").display(),
    )
}

#[test]
fn a_suite_delta_leaves_unchanged_files_to_its_base_and_its_volumes_import_whole() {
    let ws = Workspace::new();
    let world = Registry::start();
    let charts = fixture_charts(&ws);
    let (cfg, pinned) = seed_world(&ws, &world);
    let cfg = cfg.to_str().unwrap();
    let notes = random_bytes(10_000, 21);
    std::fs::write(ws.path("notes.txt"), &notes).unwrap();
    ws.write("week1.yaml", &fixture_suite(&charts, &pinned, ""));
    ws.bundle(&["--registry-config", cfg, "export", "--no-helm", "--spec", "week1.yaml", "-o", "week1.tar.zst"])
        .success();

    // A week later: a new tool beside the same notes. The delta leaves the notes (and every image blob) to week 1.
    let tool = random_bytes(3 * 1024 * 1024, 22);
    std::fs::write(ws.path("tool.bin"), &tool).unwrap();
    ws.write("week2.yaml", &fixture_suite(&charts, &pinned, "  - path: tool.bin\n"));
    let spec2 = ["--registry-config", cfg, "export", "--no-helm", "--spec", "week2.yaml"];
    let mut delta = spec2.to_vec();
    delta.extend(["--since", "week1.tar.zst", "-o", "week2.tar.zst"]);
    ws.bundle(&delta).success();
    let inspect: serde_json::Value =
        serde_json::from_str(&ws.bundle(&["inspect", "--json", "week2.tar.zst"]).success().stdout).unwrap();
    assert_eq!(inspect["formatVersion"], 4, "a suite's delta is a suite");
    let absent: Vec<&str> =
        inspect["delta"]["absent"].as_array().unwrap().iter().map(|b| b["digest"].as_str().unwrap()).collect();
    assert!(absent.contains(&sha256(&notes).as_str()), "the unchanged file travels again: {absent:?}");
    assert!(!absent.contains(&sha256(&tool).as_str()), "the new file is left to a base that lacks it");

    let dst = Registry::start();
    let dest = format!("{}/p", dst.host());
    ws.bundle(&["import", "-d", &dest, "week1.tar.zst"]).success();
    let r = ws
        .bundle(&["import", "-d", &dest, "week2.tar.zst", "--files-out", "week2-files", "--values-out", "v2"])
        .success();
    assert_eq!(std::fs::read(ws.path("week2-files/notes.txt")).unwrap(), notes, "the notes, from the destination");
    assert_eq!(std::fs::read(ws.path("week2-files/tool.bin")).unwrap(), tool, "the tool, from the delta");
    for chart in ["platform", "legacy"] {
        assert!(ws.path(&format!("v2/{chart}-airgap-values.yaml")).is_file(), "{}", r.stderr);
    }

    // The same suite in volumes of 2 MiB: the tool spans them; imported together, everything lands.
    let mut volumes = spec2.to_vec();
    volumes.extend(["--volume-size", "2MiB", "-o", "vol.tar.zst"]);
    ws.bundle(&volumes).success();
    let parts: Vec<String> = listing(ws.dir.path()).into_iter().filter(|f| f.starts_with("vol.part")).collect();
    let parts: Vec<&String> = parts.iter().filter(|f| f.ends_with(".tar.zst")).collect();
    assert!(parts.len() >= 2, "one volume: {parts:?}");
    let other = Registry::start();
    let mut import = vec!["import".to_string(), "-d".into(), other.host(), "--files-out".into(), "vol-files".into()];
    import.extend(parts.iter().map(|p| p.to_string()));
    ws.bundle(&import.iter().map(String::as_str).collect::<Vec<_>>()).success();
    assert_eq!(std::fs::read(ws.path("vol-files/tool.bin")).unwrap(), tool, "the tool, from its pieces");
    assert_eq!(std::fs::read(ws.path("vol-files/notes.txt")).unwrap(), notes);
    for chart in ["platform:1.4.0", "legacy:1.0.0"] {
        let (name, version) = chart.split_once(':').unwrap();
        assert!(get_manifest(&other.base_url(), &format!("charts/{name}"), version).is_some(), "{chart}");
    }
}

#[test]
fn files_out_of_a_bundle_without_files_is_refused_before_anything_is_pushed() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 63, 4096);
    let ws = Workspace::new();
    ws.export(&[set.images[0].reference(&src.host())], "plain.tar.zst");
    let dst = Registry::start();
    let r = ws.bundle(&["import", "-d", &dst.host(), "plain.tar.zst", "--files-out", "out"]).failure();
    assert!(r.stderr.contains("--files-out: the archive carries no files"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: export with a spec that lists `files:`"), "{}", r.stderr);
    dst.assert_untouched("an import refused for --files-out");
    assert!(!ws.path("out").exists());
}
