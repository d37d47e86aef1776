//! `bundle serve`: archives as a read-only registry, read where they lie. Real clients pull from it (skopeo,
//! podman, containerd's ctr, helm, and bundle's own copy) and get the source's digests: a multi-arch OCI index,
//! a Docker manifest list, a digest-pinned reference, the chart, a delta served with its base, a volume set.
//! Ranges are exact, the Referrers API lists a carried SBOM, writes are refused, and a blob whose bytes went
//! bad on disk never reaches a client whole.

use std::process::Command;

use crate::harness::*;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
}

#[test]
fn every_client_pulls_the_sources_digests_from_a_served_archive() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 71, 64 * 1024);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "all.tar.zst");
    let served = ServeProcess::start(&ws, &[], &["all.tar.zst"]);
    let base = served.base_url();

    // As a registry: every manifest and blob byte for byte, the source's media types.
    for img in &set.images {
        assert_image_at(&base, &img.repo, &img.tag, img);
        assert_image_at(&base, &img.repo, &img.root.digest, img);
    }

    // skopeo copies the multi-arch index out of it, every platform, digests kept.
    let dst = Registry::start();
    let agent = &set.images[0];
    let out = bounded(
        "skopeo",
        &[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{}/{}:{}", served.host(), agent.repo, agent.tag),
            &format!("docker://{}/{}:{}", dst.host(), agent.repo, agent.tag),
        ],
        ws.dir.path(),
    );
    succeeded("skopeo copy from bundle serve", &out);
    assert_image_at(&dst.base_url(), &agent.repo, &agent.tag, agent);

    // podman pulls the Docker-typed single image; containerd the Docker manifest list.
    let nginx = &set.images[2];
    let podman = Podman::new();
    let pulled = format!("{}/{}:{}", served.host(), nginx.repo, nginx.tag);
    succeeded("podman pull", &podman.run(&["pull", "-q", "--tls-verify=false", &pulled], ws.dir.path()));
    let digest =
        succeeded("inspect", &podman.run(&["image", "inspect", "--format", "{{.Digest}}", &pulled], ws.dir.path()));
    assert_eq!(digest.trim(), nginx.root.digest);
    let wait = &set.images[1];
    let ctr = Containerd::start();
    let name = format!("{}/{}:{}", served.host(), wait.repo, wait.tag);
    succeeded(
        "ctr images pull",
        &ctr.ctr(&["images", "pull", "--plain-http", "--platform", "linux/amd64", &name], None, ws.dir.path()),
    );
    assert_eq!(ctr.images().into_iter().find(|(n, _)| n == &name).map(|(_, d)| d), Some(wait.root.digest.clone()));

    // bundle's own copy reads from it by a digest-pinned reference.
    let again = Registry::start();
    let pinned = format!("{}/{}@{}", served.host(), agent.repo, agent.root.digest);
    ws.bundle(&["copy", "--image", &pinned, "-d", &again.host()]).success();
    assert_image_at(&again.base_url(), &agent.repo, &agent.root.digest, agent);
    // And export reads it as any registry: the archive of it has the source's digests.
    let re = format!("{}/{}:{}", served.host(), wait.repo, wait.tag);
    ws.bundle(&["export", "--image", &re, "-o", "again.tar.zst"]).success();
    let inspect: serde_json::Value =
        serde_json::from_str(&ws.bundle(&["inspect", "--json", "again.tar.zst"]).success().stdout).unwrap();
    assert_eq!(inspect["images"][0]["digest"], wait.root.digest.as_str());

    // Range: exactly the bytes asked for.
    let layer = &agent.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap();
    let url = format!("{base}/v2/{}/blobs/{}", agent.repo, layer.digest);
    let r = http().get(&url).header("Range", "bytes=1000-40999").send().unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 1000-40999/{}", layer.bytes.len()).as_str());
    assert_eq!(r.bytes().unwrap().as_ref(), &layer.bytes[1000..41000]);
    let r = http().get(&url).header("Range", format!("bytes={}-", layer.bytes.len())).send().unwrap();
    assert_eq!(r.status().as_u16(), 416);

    // Lists page as the spec says.
    let tags: serde_json::Value = http()
        .get(format!("{base}/v2/{}/tags/list?n=5", agent.repo))
        .send()
        .unwrap()
        .bytes()
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!([agent.tag]));
    let catalog: serde_json::Value = http()
        .get(format!("{base}/v2/_catalog?n=2"))
        .send()
        .unwrap()
        .bytes()
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let mut all: Vec<&str> = set.images.iter().map(|i| i.repo.as_str()).collect();
    all.sort();
    assert_eq!(catalog["repositories"], serde_json::json!(all[..2]));
    let rest: serde_json::Value = http()
        .get(format!("{base}/v2/_catalog?last={}", all[1]))
        .send()
        .unwrap()
        .bytes()
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(rest["repositories"], serde_json::json!(all[2..]));

    // Writes are refused with the spec's error, and nothing changes.
    for (method, path) in [
        (reqwest::Method::POST, format!("/v2/{}/blobs/uploads/", agent.repo)),
        (reqwest::Method::PUT, format!("/v2/{}/manifests/other", agent.repo)),
        (reqwest::Method::DELETE, format!("/v2/{}/manifests/{}", agent.repo, agent.root.digest)),
    ] {
        let r = http().request(method.clone(), format!("{base}{path}")).body("{}").send().unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    }
    let out = bounded(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--src-tls-verify=false",
            &format!("docker://{}/{}:{}", src.host(), nginx.repo, nginx.tag),
            &format!("docker://{}/pushed/here:1", served.host()),
        ],
        ws.dir.path(),
    );
    assert!(!out.status.success(), "a push into bundle serve succeeded");
    assert_eq!(http().get(format!("{base}/v2/pushed/here/manifests/1")).send().unwrap().status().as_u16(), 404);
    assert_image_at(&base, &agent.repo, &agent.tag, agent);

    // Parallel pulls of every image at once, each complete.
    std::thread::scope(|s| {
        for img in set.images.iter().chain(&set.images) {
            let base = base.clone();
            s.spawn(move || assert_image_at(&base, &img.repo, &img.tag, img));
        }
    });

    let (code, stderr) = served.stop();
    assert_eq!(code, Some(0), "SIGTERM ends bundle serve with 0:\n{stderr}");
    assert!(stderr.contains("Stopping"), "{stderr}");
}

#[test]
fn the_referrers_api_lists_a_carried_sbom() {
    let src = Registry::start();
    let signed = crate::referrers::seed_signed(&src.base_url());
    let agent = &signed.set.images[0];
    let ws = Workspace::new();
    ws.export(&[agent.reference(&src.host())], "signed.tar.zst");
    let served = ServeProcess::start(&ws, &[], &["signed.tar.zst"]);
    let url = format!("{}/v2/{}/referrers/{}", served.base_url(), agent.repo, signed.sbom_subject);
    let list: serde_json::Value =
        http().get(&url).send().unwrap().bytes().map(|b| serde_json::from_slice(&b).unwrap()).unwrap();
    let found: Vec<&str> =
        list["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(found, [signed.sbom.digest.as_str()], "{list}");
    assert_eq!(list["manifests"][0]["artifactType"], "application/spdx+json");
    let filtered = http().get(format!("{url}?artifactType=application/vnd.example")).send().unwrap();
    assert_eq!(filtered.headers()["oci-filters-applied"], "artifactType");
    let filtered: serde_json::Value = serde_json::from_slice(&filtered.bytes().unwrap()).unwrap();
    assert_eq!(filtered["manifests"], serde_json::json!([]));
}

#[test]
fn helm_installs_from_a_served_chart_bundle_and_a_delta_is_served_with_its_base() {
    helm();
    let ws = Workspace::new();
    let charts = fixture_charts(&ws);
    let world = Registry::start();
    let (cfg, pinned) = seed_world(&ws, &world);
    let cfg = cfg.to_str().unwrap();
    let set = format!("pinned.image.digest={pinned}");
    let chart = charts.join("platform");
    ws.bundle(&[
        "--registry-config",
        cfg,
        "export",
        "-c",
        chart.to_str().unwrap(),
        "--set",
        &set,
        "-o",
        "chart.tar.zst",
    ])
    .success();
    let served =
        ServeProcess::start(&ws, &[], &["--prefix", "airgap", "--values-out", "served-values.yaml", "chart.tar.zst"]);
    let pulled = ws.path("pulled");
    std::fs::create_dir_all(&pulled).unwrap();
    let out = Command::new(helm())
        .args([
            "pull",
            &format!("oci://{}/airgap/charts/platform", served.host()),
            "--version",
            "1.4.0",
            "--plain-http",
            "-d",
        ])
        .arg(&pulled)
        .env("HELM_CONFIG_HOME", ws.path("helm-config"))
        .env("HELM_CACHE_HOME", ws.path("helm-cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "helm pull from bundle serve: {}", String::from_utf8_lossy(&out.stderr));
    // The values file serve wrote for its own address sends every rendered image to an image it serves.
    let out = Command::new(helm())
        .args(["template", "x"])
        .arg(pulled.join("platform-1.4.0.tgz"))
        .args(["-f"])
        .arg(ws.path("served-values.yaml"))
        .args(["--set", &set])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // bundle check asks the server for every image the render pulls: all there, under its address.
    std::fs::write(ws.path("rendered.yaml"), &out.stdout).unwrap();
    let dest = format!("{}/airgap", served.host());
    let r = ws.bundle(&["check", "-d", &dest, "--manifests", "rendered.yaml"]);
    assert_eq!(r.code, 0, "bundle check against bundle serve:\n{}\n{}", r.stdout, r.stderr);
    drop(served);

    // A week later: one image moved on. The delta alone is refused; with its base, everything is served.
    let next = image(&[random_layer(1024, 777)], "amd64", false);
    Pusher::new(&world.base_url()).image("quay.io/stackstate/worker", "2.3.1", &next);
    ws.bundle(&[
        "--registry-config",
        cfg,
        "export",
        "-c",
        chart.to_str().unwrap(),
        "--set",
        &set,
        "--since",
        "chart.tar.zst",
        "-o",
        "week2.tar.zst",
    ])
    .success();
    let alone = ws.command(&["serve", "--listen", "127.0.0.1:1", "week2.tar.zst"]).output().unwrap();
    let alone = String::from_utf8_lossy(&alone.stderr).into_owned();
    assert!(alone.contains("which none of the given archives holds") && alone.contains("give the base"), "{alone}");
    let both = ServeProcess::start(&ws, &[], &["chart.tar.zst", "week2.tar.zst"]);
    let (bytes, _) = get_manifest(&both.base_url(), "stackstate/worker", "2.3.1").expect("the moved image");
    assert_eq!(sha256(&bytes), next.manifest.digest, "the delta's tag wins");
    let pinned_repo = "stackstate/pinned";
    assert!(get_manifest(&both.base_url(), pinned_repo, &pinned).is_some(), "the base's image");
    // Every blob of an unchanged image comes from the base.
    let (manifest, _) = get_manifest(&both.base_url(), "stackstate/platform-api", "2.3.0").unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert!(get_blob(&both.base_url(), "stackstate/platform-api", layer).is_some());
}

#[test]
fn two_archives_giving_one_name_two_digests_are_refused_at_start() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 72, 4096);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    ws.export(&[nginx.reference(&src.host())], "one.tar.zst");
    let other = image(&[random_layer(2048, 73)], "amd64", false);
    Pusher::new(&src.base_url()).image(&nginx.repo, &nginx.tag, &other);
    ws.export(&[nginx.reference(&src.host())], "two.tar.zst");
    let r = ws.command(&["serve", "--listen", "127.0.0.1:1", "one.tar.zst", "two.tar.zst"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "would be served with two digests: {} (from one.tar.zst) and {}",
            nginx.root.digest, other.manifest.digest
        )),
        "{stderr}"
    );
}

#[test]
fn volumes_are_served_together_and_a_damaged_frame_never_reaches_a_client() {
    let src = Registry::start();
    let p = Pusher::new(&src.base_url());
    let big = image(&[random_layer_with(3 << 20, 74, flate2::Compression::none())], "amd64", false);
    p.image("big/layer", "1", &big);
    let ws = Workspace::new();
    let reference = format!("{}/big/layer:1", src.host());
    ws.bundle(&["export", "--image", &reference, "--volume-size", "2MiB", "-o", "v.tar.zst"]).success();
    let volumes: Vec<String> =
        listing(ws.dir.path()).into_iter().filter(|f| f.starts_with("v.part") && f.ends_with(".tar.zst")).collect();
    assert!(volumes.len() >= 2, "{volumes:?}");
    let args: Vec<&str> = volumes.iter().map(String::as_str).collect();
    let missing = ws.command(&[&["serve", "--listen", "127.0.0.1:1"][..], &args[..1]].concat()).output().unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("serve needs every volume"));
    let served = ServeProcess::start(&ws, &[], &args);
    let layer = &big.layers[0];
    let url = format!("{}/v2/big/layer/blobs/{}", served.base_url(), layer.digest);
    let whole = http().get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&whole), layer.digest, "the layer from its pieces");
    drop(served);

    // One archive, damaged on disk after serve proved it: the layer's bytes never arrive whole.
    ws.export(std::slice::from_ref(&reference), "whole.tar.zst");
    let served = ServeProcess::start(&ws, &[], &["whole.tar.zst"]);
    let path = ws.path("whole.tar.zst");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let url = format!("{}/v2/big/layer/blobs/{}", served.base_url(), layer.digest);
    let got = http().get(&url).send().and_then(|r| r.bytes());
    if let Ok(body) = &got {
        assert_ne!(sha256(body), layer.digest, "a damaged blob was sent whole");
        assert!(body.len() < layer.bytes.len(), "a damaged blob was sent at full length");
    }
    let (_, stderr) = served.stop();
    assert!(stderr.contains(&layer.digest), "the log does not name the damaged blob:\n{stderr}");

    // A layout directory has no frame checksums: its blob file altered after the start fails its digest, and the
    // last chunk is held back, so the client never gets it whole.
    ws.export(&[reference], "again.tar.zst");
    let layout = ws.path("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let out = bounded("tar", &["--zstd", "-xf", "again.tar.zst", "-C", "layout"], ws.dir.path());
    succeeded("tar -x", &out);
    let served = ServeProcess::start(&ws, &[], &["layout"]);
    let blob = layout.join("blobs/sha256").join(layer.digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();
    let url = format!("{}/v2/big/layer/blobs/{}", served.base_url(), layer.digest);
    let got = http().get(&url).send().and_then(|r| r.bytes());
    if let Ok(body) = &got {
        assert!(body.len() < layer.bytes.len(), "a blob that fails its digest was sent at full length");
    }
    let (_, stderr) = served.stop();
    assert!(stderr.contains(&format!("blob {} was not sent whole", layer.digest)), "{stderr}");
}

#[test]
fn over_tls_with_an_htpasswd_only_a_user_pulls() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 75, 8192);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    ws.export(&[nginx.reference(&src.host())], "one.tar.zst");
    let (ca, issuer) = test_ca(&ws, "serve-ca");
    let (cert, key) = server_cert(&ws, &issuer);
    let hash = bcrypt::hash_with_result("s3cret-pass", 4).unwrap().format_for_version(bcrypt::Version::TwoY);
    ws.write("htpasswd", &format!("site:{hash}\n"));
    let served = ServeProcess::start(
        &ws,
        &[],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--htpasswd",
            "htpasswd",
            "one.tar.zst",
        ],
    );
    let https = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://{}/v2/{}/manifests/{}", served.host(), nginx.repo, nginx.tag);
    let refused = https.get(&url).send().unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Basic realm=\"bundle serve\"");
    assert_eq!(https.get(&url).basic_auth("site", Some("wrong")).send().unwrap().status().as_u16(), 401);
    let ok = https.get(&url).basic_auth("site", Some("s3cret-pass")).send().unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(sha256(&ok.bytes().unwrap()), nginx.root.digest);

    // skopeo, trusting the CA and giving the user, copies the image out with its digest; without the user, not.
    let certs = ws.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let dst = Registry::start();
    let copy = |creds: Option<&str>| {
        let mut args = vec![
            "copy".to_string(),
            "--src-cert-dir".into(),
            certs.display().to_string(),
            "--dest-tls-verify=false".into(),
        ];
        if let Some(c) = creds {
            args.extend(["--src-creds".into(), c.into()]);
        }
        args.push(format!("docker://{}/{}:{}", served.host(), nginx.repo, nginx.tag));
        args.push(format!("docker://{}/{}:{}", dst.host(), nginx.repo, nginx.tag));
        bounded("skopeo", &args.iter().map(String::as_str).collect::<Vec<_>>(), ws.dir.path())
    };
    assert!(!copy(None).status.success(), "skopeo pulled without a user");
    succeeded("skopeo copy over TLS with basic auth", &copy(Some("site:s3cret-pass")));
    assert_image_at(&dst.base_url(), &nginx.repo, &nginx.tag, nginx);

    // Beyond loopback: plain HTTP is refused unless asked for.
    let r = ws.bundle(&["serve", "--listen", "0.0.0.0:1", "one.tar.zst"]).failure();
    assert!(r.stderr.contains("beyond loopback this server would answer over plain HTTP"), "{}", r.stderr);
}

#[test]
fn its_mirror_configs_send_pulls_by_the_original_name_to_the_server() {
    let mut src = Registry::start();
    let set = seed_sample(&src.base_url(), 76, 8192);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    let original = nginx.reference(&src.host());
    ws.export(std::slice::from_ref(&original), "one.tar.zst");
    let served = ServeProcess::start(&ws, &[], &["--prefix", "gap", "--mirrors-out", "mirrors", "one.tar.zst"]);
    // The source is gone: only the server can answer for its name.
    src.stop();
    let conf = ws.path("mirrors/registries.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains(&format!("location = \"{}/gap\"", served.host())), "{text}");
    let podman = Podman::new();
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())];
    succeeded("podman pull by the original name", &podman.run_with(&["pull", "-q", &original], &env, ws.dir.path()));
    let digest =
        succeeded("inspect", &podman.run(&["image", "inspect", "--format", "{{.Digest}}", &original], ws.dir.path()));
    assert_eq!(digest.trim(), nginx.root.digest);
}
