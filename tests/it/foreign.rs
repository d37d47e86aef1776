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

#[test]
fn a_docker_save_archive_is_named_as_such() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 104, 32 * 1024);
    let ws = Workspace::new();
    let nginx = set.images[2].reference(&src.host());
    ok(skopeo(
        &["copy", "--src-tls-verify=false", &format!("docker://{nginx}"), &format!("docker-archive:saved.tar:{nginx}")],
        ws.dir.path(),
    ));
    let r = ws.bundle(&["verify", "saved.tar"]).failure();
    assert!(r.stderr.contains("this is a `docker save` archive"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("is not part of an OCI image layout"),
        "one explanation, not one per entry: {}",
        r.stderr
    );
}
