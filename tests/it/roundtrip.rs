//! Export → verify → import between two real registries, and what re-runs and interruptions do.

use crate::harness::*;

const LAYER: usize = 512 * 1024;

fn export_sample(ws: &Workspace, src: &Registry, set: &SampleSet, out: &str) -> Run {
    let list: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    let file = ws.write("images.txt", &format!("# sample images\n\n{}\n", list.join("\n")));
    ws.bundle(&["export", "--images-file", file.to_str().unwrap(), "-o", out]).success()
}

#[test]
fn export_verify_import_roundtrip_preserves_every_digest() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 1, LAYER);
    let ws = Workspace::new();

    // A digest-pinned reference (tag@digest) and a digest-only one travel too.
    let nginx = &set.images[2];
    let pinned_tag = format!("{}/library/nginx:1.25@{}", src.host(), nginx.root.digest);
    let reloader = &set.images[3];
    let digest_only = format!("{}/{}@{}", src.host(), reloader.repo, reloader.root.digest);
    let list: Vec<String> =
        set.images.iter().map(|i| i.reference(&src.host())).chain([pinned_tag.clone(), digest_only]).collect();
    let file = ws.write("images.txt", &list.join("\n"));
    let run = ws.bundle(&["export", "--images-file", file.to_str().unwrap(), "-o", "sample.tar.zst"]).success();
    assert!(run.stderr.contains("Exported 6 images"), "{}", run.stderr);
    assert_eq!(listing(ws.dir.path()).iter().filter(|n| n.starts_with("sample")).count(), 2);
    assert!(ws.tmp_leftovers().is_empty(), "staging left behind: {:?}", ws.tmp_leftovers());

    // The sidecar works with plain sha256sum.
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "sample.tar.zst.sha256"])
        .current_dir(ws.dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    let verify = ws.bundle(&["verify", "sample.tar.zst"]).success();
    assert!(verify.stdout.contains("OK, 6 images"), "{}", verify.stdout);

    let inspect = ws.bundle(&["inspect", "sample.tar.zst", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    let agent = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"].as_str().unwrap().ends_with("agent:7.51.1"))
        .unwrap();
    assert_eq!(agent["digest"], set.images[0].root.digest);
    assert_eq!(agent["platforms"], serde_json::json!(["linux/amd64", "linux/arm64"]));
    // A reader that went away is not a failure of the command that wrote to it.
    for args in [
        &["inspect", "sample.tar.zst", "--json"][..],
        &["inspect", "sample.tar.zst"][..],
        &["verify", "sample.tar.zst"][..],
    ] {
        let r = ws.bundle_into_closed_pipe(args).success();
        assert!(!r.stderr.contains("panicked") && !r.stderr.contains("error"), "{args:?}: {}", r.stderr);
    }

    ws.bundle(&["import", "-d", &dst.host(), "sample.tar.zst"]).success();
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    // The digest-only reference is pushed by digest, and the pinned one keeps its tag.
    assert_image_at(&dst.base_url(), &reloader.repo, &reloader.root.digest, reloader);
    assert_image_at(&dst.base_url(), "library/nginx", "1.25", nginx);

    // A path prefix on the destination.
    ws.bundle(&["import", "-d", &format!("{}/mirror/team", dst.host()), "sample.tar.zst"]).success();
    assert_image_at(&dst.base_url(), "mirror/team/stackstate/agent", "7.51.1", &set.images[0]);
}

#[test]
fn export_is_deterministic_whatever_the_order_of_images() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 2, LAYER);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "a.tar.zst");
    let mut b = vec!["export", "--concurrency", "1"];
    for r in refs.iter().rev() {
        b.extend(["--image", r.as_str()]);
    }
    b.extend(["-o", "b.tar.zst"]);
    ws.bundle(&b).success();
    let (x, y) = (std::fs::read(ws.path("a.tar.zst")).unwrap(), std::fs::read(ws.path("b.tar.zst")).unwrap());
    assert_eq!(x.len(), y.len());
    assert!(x == y, "the two archives differ");
}

#[test]
fn dry_runs_change_nothing() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 3, LAYER);
    let ws = Workspace::new();

    let r = ws.bundle(&["export", "--image", &set.images[0].reference(&src.host()), "-o", "x.tar.zst", "-t"]).success();
    assert!(r.stdout.contains(&set.images[0].root.digest[..19]), "{}", r.stdout);
    assert!(r.stdout.contains("linux/amd64,linux/arm64"), "{}", r.stdout);
    assert!(r.stdout.contains("nothing written"), "{}", r.stdout);
    assert!(!ws.path("x.tar.zst").exists());

    export_sample(&ws, &src, &set, "s.tar.zst");
    let src_writes = src.writes().len();
    let r = ws.bundle(&["import", "-d", &format!("{}/mirror", dst.host()), "s.tar.zst", "-t"]).success();
    let line = format!(
        "Copying {}/stackstate/wait:1.0.0 to {}/mirror/stackstate/wait:1.0.0 (dry-run)",
        src.host(),
        dst.host()
    );
    assert!(r.stdout.contains(&line), "{}", r.stdout);
    assert!(r.stdout.contains("0 blobs already present"), "{}", r.stdout);
    assert!(r.stdout.contains("nothing changed"), "{}", r.stdout);
    dst.assert_untouched("a dry-run import");
    assert_eq!(src.writes().len(), src_writes, "a dry-run import wrote to the source");
}

#[test]
fn reimport_uploads_nothing_and_only_checks() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 4, LAYER);
    let ws = Workspace::new();
    export_sample(&ws, &src, &set, "s.tar.zst");
    let first = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).success();
    assert!(!first.stderr.contains(" 0 blobs uploaded"), "{}", first.stderr);
    let writes = |r: &Registry| r.count_requests("\"PUT ") + r.count_requests("\"POST ") + r.count_requests("\"PATCH ");
    let before = writes(&dst);
    let second = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).success();
    assert!(second.stderr.contains("already holds all 4 images"), "{}", second.stderr);
    assert!(second.stderr.contains("nothing to push"), "{}", second.stderr);
    assert_eq!(writes(&dst), before, "a re-import wrote to the registry");
    let dry = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst", "-t"]).success();
    assert!(dry.stdout.contains("(4 already complete)"), "{}", dry.stdout);
}

#[test]
fn interrupted_import_completes_on_rerun() {
    let src = Registry::start();
    let mut dst = Registry::start();
    let set = seed_sample(&src.base_url(), 5, 6 << 20);
    let ws = Workspace::new();
    export_sample(&ws, &src, &set, "s.tar.zst");

    // The import goes through a proxy that lets the first blob land and holds the second upload: the registry
    // dies while the import is mid-push, with exactly one blob stored, however loaded the machine.
    let proxy = FaultProxy::start(dst.port);
    proxy.add_after("PUT", "/blobs/uploads/", 1, Fault::Hold, 1);
    let child = ws
        .command(&["import", "-d", &proxy.host(), "s.tar.zst", "--concurrency", "1", "--retries", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(proxy.wait_held(), "the second upload never came");
    assert_eq!(dst.count_requests("\"PUT /v2/"), 1, "one blob lands before the registry stops");
    dst.stop();
    proxy.release();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");

    dst.restart();
    let blob_heads =
        |r: &Registry| r.requests().iter().filter(|l| l.contains("\"HEAD /v2/") && l.contains("/blobs/")).count();
    let heads_before = blob_heads(&dst);
    let rerun = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).success();
    // The blob that landed is found by asking its repository to mount it from itself (no HEAD per blob), and
    // is not sent again.
    assert!(rerun.stderr.contains(" 1 already present"), "{}", rerun.stderr);
    assert_eq!(blob_heads(&dst), heads_before, "{}", dst.log_text());
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
}

/// A new release next to one already imported: the layers it shares with the complete image are mounted from
/// that image's repository, not uploaded again.
#[test]
fn shared_layers_of_a_complete_image_are_mounted_not_uploaded() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 12, LAYER);
    let ws = Workspace::new();
    let nginx = set.images.iter().find(|i| i.repo == "library/nginx").unwrap();
    let reloader = set.images.iter().find(|i| i.repo == "prometheus-operator/prometheus-config-reloader").unwrap();
    ws.bundle(&["export", "--image", &nginx.reference(&src.host()), "-o", "one.tar.zst"]).success();
    ws.bundle(&["import", "-d", &dst.host(), "one.tar.zst"]).success();
    ws.bundle(&[
        "export",
        "--image",
        &nginx.reference(&src.host()),
        "--image",
        &reloader.reference(&src.host()),
        "-o",
        "two.tar.zst",
    ])
    .success();
    let r = ws.bundle(&["import", "-d", &dst.host(), "two.tar.zst"]).success();
    // The reloader's config and its own layer are uploaded; the base layer it shares with nginx is mounted.
    assert!(r.stderr.contains("(1 were already complete): 2 blobs uploaded"), "{}", r.stderr);
    assert!(r.stderr.contains(", 1 mounted,"), "{}", r.stderr);
    let mounts = dst
        .requests()
        .iter()
        .filter(|l| l.contains("\"POST /v2/prometheus-operator/") && l.contains("from=library%2Fnginx"))
        .count();
    assert_eq!(mounts, 1, "{}", dst.log_text());
    assert_image_at(&dst.base_url(), &reloader.repo, &reloader.tag, reloader);
}

#[test]
fn unknown_image_is_a_clear_error_and_nothing_is_written() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 6, 4096);
    let ws = Workspace::new();
    let good = set.images[2].reference(&src.host());
    let missing = format!("{}/stackstate/does-not-exist:1.0", src.host());
    let r = ws.bundle(&["export", "--image", &good, "--image", &missing, "-o", "x.tar.zst"]).failure();
    assert!(r.stderr.contains(&format!("cannot resolve {missing}")), "{}", r.stderr);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: check the image name and tag"), "{}", r.stderr);
    assert!(!r.stderr.contains(&format!("cannot resolve {good}")), "{}", r.stderr);
    assert_eq!(listing(ws.dir.path()).iter().filter(|n| n.contains("x.tar")).count(), 0);
    assert!(ws.tmp_leftovers().is_empty());
}

#[test]
fn unreachable_registry_is_a_clear_error() {
    let ws = Workspace::new();
    let port = free_port();
    let r = ws
        .bundle(&["export", "--image", &format!("127.0.0.1:{port}/a/b:1"), "-o", "x.tar.zst", "--retries", "1"])
        .failure();
    assert!(
        r.stderr.contains(&format!("cannot reach registry 127.0.0.1:{port} at http://127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: check that 127.0.0.1:"), "{}", r.stderr);
    assert!(!ws.path("x.tar.zst").exists());
}

#[test]
fn two_sources_colliding_on_one_destination_tag_push_nothing() {
    let a = Registry::start();
    let b = Registry::start();
    let dst = Registry::start();
    // The same path and tag in two registries, with different content.
    let one = image(&[random_layer(2048, 91)], "amd64", false);
    let two = image(&[random_layer(2048, 92)], "amd64", false);
    Pusher::new(&a.base_url()).image("team/app", "1.0", &one);
    Pusher::new(&b.base_url()).image("team/app", "1.0", &two);
    let ws = Workspace::new();
    ws.bundle(&[
        "export",
        "--image",
        &format!("{}/team/app:1.0", a.host()),
        "--image",
        &format!("{}/team/app:1.0", b.host()),
        "-o",
        "c.tar.zst",
    ])
    .success();
    let r = ws.bundle(&["import", "-d", &dst.host(), "c.tar.zst"]).failure();
    assert!(
        r.stderr.contains(&format!("two images would be pushed to {}/team/app:1.0 with different content", dst.host())),
        "{}",
        r.stderr
    );
    dst.assert_untouched("an import of two images bound for one tag");
}

#[test]
fn flatten_and_keep_host_map_paths_and_flatten_collisions_stop_the_import() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 8, 4096);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "s.tar.zst");
    ws.bundle(&["import", "-d", &format!("{}/flat", dst.host()), "s.tar.zst", "--flatten"]).success();
    ws.bundle(&["import", "-d", &format!("{}/hosts", dst.host()), "s.tar.zst", "--keep-host"]).success();
    let host_path = src.host().replace(':', "-");
    for img in &set.images {
        let last = img.repo.rsplit('/').next().unwrap();
        assert_image_at(&dst.base_url(), &format!("flat/{last}"), &img.tag, img);
        assert_image_at(&dst.base_url(), &format!("hosts/{host_path}/{}", img.repo), &img.tag, img);
    }

    // Two images whose last components and tags match, with different content.
    let a = image(&[random_layer(512, 61)], "amd64", false);
    let b = image(&[random_layer(512, 62)], "amd64", false);
    Pusher::new(&src.base_url()).image("team-a/app", "1", &a);
    Pusher::new(&src.base_url()).image("team-b/app", "1", &b);
    ws.export(&[format!("{}/team-a/app:1", src.host()), format!("{}/team-b/app:1", src.host())], "c.tar.zst");
    ws.bundle(&["import", "-d", &format!("{}/ok", dst.host()), "c.tar.zst"]).success();
    let writes = dst.writes().len();
    let r = ws.bundle(&["import", "-d", &format!("{}/clash", dst.host()), "c.tar.zst", "--flatten"]).failure();
    assert!(
        r.stderr.contains(&format!("two images would be pushed to {}/clash/app:1 with different content", dst.host())),
        "{}",
        r.stderr
    );
    assert_eq!(dst.stored("clash"), Vec::<String>::new(), "a refused flatten stored something");
    assert_eq!(dst.writes().len(), writes, "a refused flatten wrote to the destination");
}

/// The cache is bounded: after an export, the blobs it did not use go, least recently used first, until the
/// cache fits `--cache-max-size`. A blob an export used again is recent again.
#[test]
fn the_blob_cache_is_pruned_to_its_limit_least_recently_used_first() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 13, 64 * 1024);
    let ws = Workspace::new();
    let by_repo = |r: &str| set.images.iter().find(|i| i.repo == r).unwrap();
    let (nginx, wait, agent) = (by_repo("library/nginx"), by_repo("stackstate/wait"), by_repo("stackstate/agent"));
    let cached = |img: &SampleImage| -> Vec<bool> {
        img.blobs.iter().map(|b| ws.path(&format!(".cache/bundle/sha256/{}", &b.digest[7..])).exists()).collect()
    };
    let export = |img: &SampleImage, out: &str, limit: &str| {
        ws.bundle(&["export", "--image", &img.reference(&src.host()), "-o", out, "--cache-max-size", limit]).success()
    };
    // What the cache holds, by digest (blobs only; the cache's own bookkeeping files aside).
    let in_cache = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(ws.path(".cache/bundle/sha256"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|n| format!("sha256:{n}"))
            .collect()
    };
    let distinct =
        |img: &SampleImage| img.blobs.iter().map(|b| b.digest.clone()).collect::<std::collections::BTreeSet<_>>();
    export(wait, "w.tar.zst", "unlimited");
    export(nginx, "n.tar.zst", "unlimited");
    assert!(cached(wait).iter().chain(&cached(nginx)).all(|&c| c), "the exports did not fill the cache");
    // wait's blobs were used first, nginx's since: a limit of 0 after an agent export keeps only agent's blobs.
    let r = export(agent, "a.tar.zst", "0");
    assert!(r.stderr.contains("Pruned the blob cache"), "{}", r.stderr);
    assert_eq!(in_cache(), distinct(agent), "after pruning to 0, the cache holds exactly what the export used");
    ws.bundle(&["verify", "a.tar.zst"]).success();

    // Least recently used first: nginx is downloaded, then wait, then nginx is exported again from the cache
    // (which marks its blobs used), then agent with a limit one byte short of everything: wait's blobs go first.
    export(nginx, "n2.tar.zst", "unlimited");
    export(wait, "w2.tar.zst", "unlimited");
    export(nginx, "n3.tar.zst", "unlimited");
    // Distinct blobs (a multi-arch image lists its shared base layer once per platform), and their cached sizes.
    let bytes = |ds: &std::collections::BTreeSet<String>| -> u64 {
        ds.iter()
            .map(|d| std::fs::metadata(ws.path(&format!(".cache/bundle/sha256/{}", &d[7..]))).map_or(0, |m| m.len()))
            .sum()
    };
    let all: std::collections::BTreeSet<String> = [agent, nginx, wait].iter().flat_map(|i| distinct(i)).collect();
    let limit = bytes(&all) - 1;
    let r = export(agent, "a2.tar.zst", &limit.to_string());
    assert!(r.stderr.contains("Pruned the blob cache"), "{}", r.stderr);
    let gone: std::collections::BTreeSet<String> = all.difference(&in_cache()).cloned().collect();
    // One byte over: the least recently used blobs go, and those are wait's alone (nginx's were used since, and
    // agent's are this export's).
    assert!(!gone.is_empty(), "nothing was pruned");
    let wait_only: std::collections::BTreeSet<String> =
        distinct(wait).difference(&distinct(agent)).filter(|d| !distinct(nginx).contains(*d)).cloned().collect();
    assert!(gone.is_subset(&wait_only), "pruned {gone:?}, not only wait's own blobs {wait_only:?}");
    // Without the flag the default limit (20 GiB) leaves this small cache alone.
    let r = ws.bundle(&["export", "--image", &wait.reference(&src.host()), "-o", "w3.tar.zst"]).success();
    assert!(!r.stderr.contains("Pruned"), "{}", r.stderr);
}

#[test]
fn a_repeated_export_downloads_only_what_is_missing_and_a_damaged_cache_entry_is_fetched_again() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 9, 256 * 1024);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    let blob_gets =
        || src.requests().iter().filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:")).count();
    ws.export(&refs, "a.tar.zst");
    let after_first = blob_gets();
    assert!(after_first >= 13, "{after_first}");

    ws.export(&refs, "b.tar.zst");
    assert_eq!(blob_gets(), after_first, "a repeated export downloaded blobs again");
    assert_eq!(std::fs::read(ws.path("a.tar.zst")).unwrap(), std::fs::read(ws.path("b.tar.zst")).unwrap());

    // A damaged cache entry is noticed (as the archive writer hashes it), removed and fetched again, and the
    // archive is written again without it.
    let victim = &set.images[0].blobs.last().unwrap().digest;
    let cached = ws.path(&format!(".cache/bundle/sha256/{}", &victim[7..]));
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&cached, bytes).unwrap();
    let run = ws.export(&refs, "c.tar.zst");
    assert!(run.stderr.contains(&format!("the cached copy of {victim} did not match its digest")), "{}", run.stderr);
    assert_eq!(blob_gets(), after_first + 1);
    assert_eq!(std::fs::read(ws.path("a.tar.zst")).unwrap(), std::fs::read(ws.path("c.tar.zst")).unwrap());

    // Two damaged entries: a round each, and still the same archive.
    for image in [&set.images[1], &set.images[2]] {
        let path = ws.path(&format!(".cache/bundle/sha256/{}", &image.blobs[0].digest[7..]));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    ws.export(&refs, "e.tar.zst");
    assert_eq!(blob_gets(), after_first + 3);
    assert_eq!(std::fs::read(ws.path("a.tar.zst")).unwrap(), std::fs::read(ws.path("e.tar.zst")).unwrap());

    // --no-cache stages in TMPDIR and leaves nothing there.
    ws.bundle(&["export", "--no-cache", "--image", &refs[0], "-o", "d.tar.zst"]).success();
    assert!(ws.tmp_leftovers().is_empty(), "{:?}", ws.tmp_leftovers());
}
