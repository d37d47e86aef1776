//! Archives other tools made, as users already hold them: a layout tarred with `tar -C DIR -cf X.tar .`, a layout
//! directory read in place, a containerd export (bare tag in ref.name, the name in io.containerd.image.name, a
//! manifest.json beside the layout), and a docker save archive, which is named as such.

use std::process::Command;

use crate::harness::*;
use crate::interop::{ok, skopeo};

/// The sample's OCI index written by skopeo into the layout directory `dir` under its full name.
fn skopeo_layout(ws: &Workspace, src: &Registry, img: &SampleImage, dir: &str) -> String {
    let name = img.reference(&src.host());
    ok(skopeo(
        &["copy", "--all", "--src-tls-verify=false", &format!("docker://{name}"), &format!("oci:{dir}:{name}")],
        ws.dir.path(),
    ));
    name
}

#[track_caller]
fn assert_imported(dst: &Registry, img: &SampleImage) {
    let (bytes, _) = get_manifest(&dst.base_url(), &img.repo, &img.tag).expect("imported");
    assert_eq!(sha256(&bytes), img.root.digest);
    for b in &img.blobs {
        assert_eq!(get_blob(&dst.base_url(), &img.repo, &b.digest).map(|x| sha256(&x)), Some(b.digest.clone()));
    }
}

#[test]
fn regression_a_dot_rooted_tar_of_a_layout_is_accepted() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 101, 32 * 1024);
    let ws = Workspace::new();
    let agent = &set.images[0];
    skopeo_layout(&ws, &src, agent, "layout");
    let tar =
        Command::new("tar").args(["-C", "layout", "-cf", "dot.tar", "."]).current_dir(ws.dir.path()).output().unwrap();
    assert!(tar.status.success());
    let listing = Command::new("tar").args(["-tf", "dot.tar"]).current_dir(ws.dir.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).lines().any(|l| l == "./"), "the tar is not ./-rooted");
    let r = ws.bundle(&["verify", "dot.tar"]).success();
    assert!(r.stdout.contains("OK, 1 images"), "{}", r.stdout);
    ws.bundle(&["import", "-d", &dst.host(), "dot.tar"]).success();
    assert_imported(&dst, agent);
}

#[test]
fn an_oci_layout_directory_is_verified_inspected_and_imported_in_place() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 102, 32 * 1024);
    let mut ws = Workspace::new();
    ws.env("XDG_CACHE_HOME", ws.path("cache").to_str().unwrap());
    let agent = &set.images[0];
    let name = skopeo_layout(&ws, &src, agent, "layout");
    let r = ws.bundle(&["verify", "layout"]).success();
    assert!(r.stdout.contains("layout: OK, 1 images"), "{}", r.stdout);
    assert!(!r.stderr.contains(".sha256 not found"), "a directory has no sidecar to miss: {}", r.stderr);
    let inspect = ws.bundle(&["inspect", "layout", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(json["images"][0]["source"], name.as_str());
    assert_eq!(json["images"][0]["namedBy"], "org.opencontainers.image.ref.name");
    ws.bundle(&["import", "-d", &dst.host(), "layout"]).success();
    assert_imported(&dst, agent);
    assert!(ws.tmp_leftovers().is_empty(), "the directory was copied: {:?}", ws.tmp_leftovers());

    // A damaged blob in the directory is found, and nothing is pushed.
    let layer = &agent.blobs.last().unwrap().digest;
    let path = ws.path("layout").join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let r = ws.bundle(&["verify", "layout"]).failure();
    assert!(r.stderr.contains("content does not match its name"), "{}", r.stderr);
    let fresh = Registry::start();
    let r = ws.bundle(&["import", "-d", &fresh.host(), "layout"]).failure();
    fresh.assert_untouched("import of a damaged layout directory");
    assert!(r.stderr.contains("content does not match its name"), "{}", r.stderr);
}

#[test]
fn regression_a_containerd_export_is_named_by_io_containerd_image_name() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 103, 32 * 1024);
    let ws = Workspace::new();
    let agent = &set.images[0];
    let name = skopeo_layout(&ws, &src, agent, "ctr");
    // What `ctr images export` writes: ref.name a bare tag, the full name in containerd's annotation, and a
    // docker-style manifest.json beside the layout.
    let index_path = ws.path("ctr").join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"] = serde_json::json!({
        "org.opencontainers.image.ref.name": agent.tag,
        "io.containerd.image.name": name,
    });
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(ws.path("ctr").join("manifest.json"), format!(r#"[{{"RepoTags":["{name}"]}}]"#)).unwrap();
    let tar =
        Command::new("tar").args(["-C", "ctr", "-cf", "r1.tar", "."]).current_dir(ws.dir.path()).output().unwrap();
    assert!(tar.status.success());
    ws.bundle(&["verify", "r1.tar"]).success();
    let inspect = ws.bundle(&["inspect", "r1.tar", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(json["images"][0]["source"], name.as_str());
    assert_eq!(json["images"][0]["namedBy"], "io.containerd.image.name");
    ws.bundle(&["import", "-d", &dst.host(), "r1.tar"]).success();
    assert_imported(&dst, agent);
}

/// skopeo's `docker-archive:` of `img` (one image, named `name` and any `extra` tags) at `file`.
fn skopeo_docker_archive(ws: &Workspace, src: &Registry, img: &SampleImage, file: &str, extra: &[&str]) -> String {
    let name = img.reference(&src.host());
    let mut args = vec![
        "copy".to_string(),
        "--src-tls-verify=false".into(),
        format!("docker://{name}"),
        format!("docker-archive:{file}:{name}"),
    ];
    for t in extra {
        args.extend(["--additional-tag".to_string(), t.to_string()]);
    }
    ok(skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>(), ws.dir.path()));
    name
}

/// The image at `dst`/`repo`:`tag` is a Docker schema 2 manifest whose config is `img`'s (the image ID the
/// archive kept) and whose gzip layers decompress to the tars the config lists; returns the manifest digest.
#[track_caller]
fn assert_converted(dst: &Registry, repo: &str, tag: &str, img: &SampleImage) -> String {
    let (bytes, media_type) =
        get_manifest(&dst.base_url(), repo, tag).unwrap_or_else(|| panic!("{repo}:{tag} missing"));
    assert_eq!(media_type, "application/vnd.docker.distribution.manifest.v2+json");
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let source: serde_json::Value = serde_json::from_slice(&img.root.bytes).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(config, source["config"]["digest"].as_str().unwrap(), "the image ID changed");
    let config_bytes = get_blob(&dst.base_url(), repo, config).expect("config pushed");
    assert_eq!(sha256(&config_bytes), config);
    let config_json: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), config_json["rootfs"]["diff_ids"].as_array().unwrap().len());
    for (layer, diff_id) in layers.iter().zip(config_json["rootfs"]["diff_ids"].as_array().unwrap()) {
        assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
        let digest = layer["digest"].as_str().unwrap();
        let blob = get_blob(&dst.base_url(), repo, digest).expect("layer pushed");
        assert_eq!(sha256(&blob), digest);
        assert_eq!(blob.len() as u64, layer["size"].as_u64().unwrap());
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut tar).unwrap();
        assert_eq!(&sha256(&tar), diff_id.as_str().unwrap(), "a layer does not decompress to its diff_id");
    }
    sha256(&bytes)
}

#[test]
fn regression_a_docker_save_archive_is_imported_with_its_image_ids() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 104, 32 * 1024);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    let extra = format!("{}/library/nginx:stable", src.host());
    skopeo_docker_archive(&ws, &src, nginx, "saved.tar", &[&extra]);

    let r = ws.bundle(&["verify", "saved.tar"]).success();
    assert!(r.stdout.contains("OK, a docker save archive"), "{}", r.stdout);
    assert!(r.stdout.contains("1 images, 2 layers"), "{}", r.stdout);
    let inspect = ws.bundle(&["inspect", "saved.tar", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(json["format"], "docker-save");
    let source: serde_json::Value = serde_json::from_slice(&nginx.root.bytes).unwrap();
    let names: Vec<&str> = json["images"].as_array().unwrap().iter().map(|i| i["source"].as_str().unwrap()).collect();
    assert_eq!(names, [nginx.reference(&src.host()).as_str(), extra.as_str()]);
    for i in json["images"].as_array().unwrap() {
        assert_eq!(i["digest"], source["config"]["digest"], "inspect shows the image ID");
        assert_eq!(i["namedBy"], "manifest.json RepoTags");
        assert_eq!(i["platforms"][0], "linux/amd64");
    }
    // verify --json: a row per name, each with the image ID.
    let r = ws.bundle(&["verify", "--json", "saved.tar"]).success();
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((doc["ok"].as_bool(), doc["totals"]["layers"].as_u64()), (Some(true), Some(2)), "{doc}");
    let rows = doc["images"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{doc}");
    assert!(rows.iter().all(|i| i["digest"] == source["config"]["digest"] && i["outcome"] == "verified"), "{doc}");

    let r = ws.bundle(&["import", "-d", &dst.host(), "saved.tar"]).success();
    assert!(r.stderr.contains("manifest digests at the destination are new"), "{}", r.stderr);
    let digest = assert_converted(&dst, &nginx.repo, &nginx.tag, nginx);
    assert_eq!(assert_converted(&dst, "library/nginx", "stable", nginx), digest);

    // The same archive gzip'd or zstd-compressed as a whole converts to the same digests: nothing to push.
    for (tool, file) in [("gzip", "saved.tar.gz"), ("zstd", "saved.tar.zst")] {
        let out = Command::new(tool).args(["-k", "-q", "saved.tar"]).current_dir(ws.dir.path()).output().unwrap();
        assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
        ws.bundle(&["verify", file]).success();
        let r = ws.bundle(&["import", "-d", &dst.host(), file]).success();
        assert!(r.stderr.contains("nothing to push"), "{file}: {}", r.stderr);
    }
    let fresh = Registry::start();
    ws.bundle(&["import", "-d", &fresh.host(), "saved.tar.zst"]).success();
    assert_eq!(assert_converted(&fresh, &nginx.repo, &nginx.tag, nginx), digest, "the conversion is not deterministic");
}

#[test]
fn regression_a_podman_save_archive_of_two_images_imports_and_podman_pulls_the_same_image_ids() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 105, 32 * 1024);
    let ws = Workspace::new();
    let picked = [&set.images[2], &set.images[3]];
    let names: Vec<String> = picked.iter().map(|i| i.reference(&src.host())).collect();
    let podman = Podman::new();
    for n in &names {
        succeeded("podman pull", &podman.run(&["pull", "--tls-verify=false", n], ws.dir.path()));
    }
    let mut save = vec!["save", "-m", "--format", "docker-archive", "-o", "saved.tar"];
    save.extend(names.iter().map(String::as_str));
    succeeded("podman save", &podman.run(&save, ws.dir.path()));

    let r = ws.bundle(&["verify", "saved.tar"]).success();
    assert!(r.stdout.contains("OK, a docker save archive (manifest.json and layer tars): 2 images"), "{}", r.stdout);
    ws.bundle(&["import", "-d", &format!("{}/mirror", dst.host()), "saved.tar"]).success();
    let fresh = Podman::new();
    for img in picked {
        assert_converted(&dst, &format!("mirror/{}", img.repo), &img.tag, img);
        let at_dst = format!("{}/mirror/{}:{}", dst.host(), img.repo, img.tag);
        succeeded(
            "podman pull from the destination",
            &fresh.run(&["pull", "--tls-verify=false", &at_dst], ws.dir.path()),
        );
        let source: serde_json::Value = serde_json::from_slice(&img.root.bytes).unwrap();
        let pulled = fresh.images().into_iter().find(|(n, _, _)| n == &at_dst).expect("pulled");
        assert_eq!(pulled.2, source["config"]["digest"].as_str().unwrap(), "podman sees another image ID");
    }
}

/// Unpack skopeo's docker-archive `file` into `dir` and return its manifest.json.
fn unpack(ws: &Workspace, file: &str, dir: &str) -> serde_json::Value {
    std::fs::create_dir(ws.path(dir)).unwrap();
    let t = Command::new("tar").args(["-xf", file, "-C", dir]).current_dir(ws.dir.path()).status().unwrap();
    assert!(t.success());
    serde_json::from_slice(&std::fs::read(ws.path(dir).join("manifest.json")).unwrap()).unwrap()
}

/// Tar `dir`'s entries (not `./`-rooted, as docker writes them) into `file`.
fn pack(ws: &Workspace, dir: &str, file: &str) {
    let mut names: Vec<String> = std::fs::read_dir(ws.path(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let t = Command::new("tar").args(["-C", dir, "-cf", file]).args(&names).current_dir(ws.dir.path()).status();
    assert!(t.unwrap().success());
}

#[test]
fn regression_a_legacy_docker_save_archive_with_layer_tars_in_directories_imports() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 106, 32 * 1024);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    skopeo_docker_archive(&ws, &src, nginx, "saved.tar", &[]);
    // docker before 25 writes each layer as <id>/layer.tar (a real file) and names those in manifest.json.
    let mut manifest = unpack(&ws, "saved.tar", "legacy");
    let root = ws.path("legacy");
    for entry in std::fs::read_dir(&root).unwrap() {
        let link = entry.unwrap().path().join("layer.tar");
        if let Ok(target) = std::fs::read_link(&link) {
            let file = link.parent().unwrap().join(&target);
            std::fs::remove_file(&link).unwrap();
            std::fs::rename(&file, &link).unwrap();
            let old = file.file_name().unwrap().to_string_lossy().into_owned();
            let new = link.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            for l in manifest[0]["Layers"].as_array_mut().unwrap() {
                if l == old.as_str() {
                    *l = new.clone().into();
                }
            }
        }
    }
    assert!(manifest[0]["Layers"].as_array().unwrap().iter().all(|l| l.as_str().unwrap().ends_with("/layer.tar")));
    std::fs::write(root.join("manifest.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    pack(&ws, "legacy", "legacy.tar");
    ws.bundle(&["verify", "legacy.tar"]).success();
    ws.bundle(&["import", "-d", &dst.host(), "legacy.tar"]).success();
    assert_converted(&dst, &nginx.repo, &nginx.tag, nginx);
}

#[test]
fn a_damaged_or_unnamed_docker_save_archive_is_refused_naming_what_is_wrong_and_pushes_nothing() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 107, 32 * 1024);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    skopeo_docker_archive(&ws, &src, nginx, "saved.tar", &[]);
    let manifest = unpack(&ws, "saved.tar", "good");
    let config = manifest[0]["Config"].as_str().unwrap().to_string();
    let layer = manifest[0]["Layers"][1].as_str().unwrap().to_string();
    type Damage = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Damage, String)> = vec![
        (
            "layer",
            Box::new({
                let layer = layer.clone();
                move |d| {
                    let mut b = std::fs::read(d.join(&layer)).unwrap();
                    b[600] ^= 0xff;
                    std::fs::write(d.join(&layer), b).unwrap();
                }
            }),
            "is not the layer its config lists".into(),
        ),
        (
            "config",
            Box::new({
                let config = config.clone();
                move |d| {
                    let text = std::fs::read_to_string(d.join(&config)).unwrap().replace("amd64", "arm64");
                    std::fs::write(d.join(&config), text).unwrap();
                }
            }),
            "the config was altered".into(),
        ),
        (
            "missing",
            Box::new({
                let layer = layer.clone();
                move |d| std::fs::remove_file(d.join(&layer)).unwrap()
            }),
            format!("names the layer `{layer}`, which is not in the archive"),
        ),
        (
            "unnamed",
            Box::new(|d| {
                let path = d.join("manifest.json");
                let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                m[0]["RepoTags"] = serde_json::Value::Null;
                std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
            }),
            "has no RepoTags (it was saved by ID)".into(),
        ),
    ];
    for (name, damage, expect) in cases {
        let dir = format!("bad-{name}");
        unpack(&ws, "saved.tar", &dir);
        damage(&ws.path(&dir));
        let file = format!("{dir}.tar");
        pack(&ws, &dir, &file);
        let r = ws.bundle(&["verify", &file]).failure();
        assert!(r.stderr.contains(&expect), "{name}: verify should say `{expect}`:\n{}", r.stderr);
        let dst = Registry::start();
        let r = ws.bundle(&["import", "-d", &dst.host(), &file]).failure();
        assert!(r.stderr.contains(&expect), "{name}: {}", r.stderr);
        dst.assert_untouched(&format!("import of {name}"));
    }
}
