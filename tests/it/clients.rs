//! Bundles in the hands of the container clients sites load them with, run for real (harness `clients`): podman
//! loads a one-image bundle and refuses a multi-image one; containerd 1.6 imports a bundle once it is
//! decompressed, and what `ctr images export` writes imports back into a registry with every digest kept.

use std::process::{Command, Stdio};

use crate::harness::*;

#[test]
fn podman_loads_a_one_image_bundle_but_not_a_multi_image_one() {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 301, 32 * 1024);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    let reloader = &set.images[3];
    ws.export(&[nginx.reference(&src.host())], "one.tar.zst").success();
    ws.export(&[nginx.reference(&src.host()), reloader.reference(&src.host())], "two.tar.zst").success();

    let podman = Podman::new();
    succeeded("podman load of a one-image bundle", &podman.run(&["load", "-i", "one.tar.zst"], ws.dir.path()));
    let loaded = podman.images();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0].0, nginx.reference(&src.host()));
    assert_eq!(loaded[0].1, nginx.root.digest, "podman kept another manifest digest");

    // podman 4.3 loads one image per OCI archive; docs/interop.md says to export one image per archive.
    let out = podman.run(&["load", "-i", "two.tar.zst"], ws.dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("more than one image"),
        "podman now loads multi-image OCI archives: update docs/interop.md\n{stderr}"
    );
}

#[test]
fn containerd_imports_a_decompressed_bundle_and_its_export_imports_back() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 302, 32 * 1024);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "all.tar.zst").success();
    let ctr = Containerd::start();

    // containerd 1.6 reads plain tars only.
    let out = ctr.ctr(&["images", "import", "--all-platforms", "all.tar.zst"], None, ws.dir.path());
    assert!(!out.status.success(), "ctr now reads zstd archives: update docs/interop.md");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid tar header"), "{out:?}");

    // `zstd -dc all.tar.zst | ctr -n k8s.io images import --all-platforms -`, as docs/interop.md says.
    let mut zstd = Command::new("zstd")
        .args(["-dc", "all.tar.zst"])
        .current_dir(ws.dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd");
    let piped = Stdio::from(zstd.stdout.take().unwrap());
    succeeded(
        "ctr images import -",
        &ctr.ctr(&["images", "import", "--all-platforms", "-"], Some(piped), ws.dir.path()),
    );
    assert!(zstd.wait().unwrap().success());
    let held = ctr.images();
    let expected: Vec<(String, String)> = {
        let mut e: Vec<_> = set.images.iter().map(|i| (i.reference(&src.host()), i.root.digest.clone())).collect();
        e.sort();
        e
    };
    assert_eq!(held, expected, "containerd holds other names or digests");

    // And back: what `ctr images export` writes (bare tags in ref.name, names in io.containerd.image.name, a
    // manifest.json beside the layout) imports with every digest kept.
    let mut export = vec!["images", "export", "--all-platforms", "r1.tar"];
    export.extend(refs.iter().map(String::as_str));
    succeeded("ctr images export", &ctr.ctr(&export, None, ws.dir.path()));
    ws.bundle(&["verify", "r1.tar"]).success();
    let inspect = ws.bundle(&["inspect", "r1.tar", "--json"]).success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert!(json["images"].as_array().unwrap().iter().all(|i| i["namedBy"] == "io.containerd.image.name"), "{json}");
    ws.bundle(&["import", "-d", &dst.host(), "r1.tar"]).success();
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
}
