//! skopeo is the interop peer: it must read what we write, and we must read what it writes.

use std::process::Command;

use crate::harness::*;

pub fn skopeo(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    let mut all = vec!["--insecure-policy"];
    all.extend_from_slice(args);
    bounded("skopeo", &all, cwd)
}

#[track_caller]
pub fn ok(out: std::process::Output) {
    assert!(out.status.success(), "skopeo failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn is_docker_typed(img: &SampleImage) -> bool {
    img.root_media_type.starts_with("application/vnd.docker.")
}

/// skopeo 1.9 (containers/image 5.23) only looks at index.json entries with OCI media types, so an image we
/// keep in its original Docker media types (its digest must not change) is invisible to it. This pins that
/// known limitation: if a newer skopeo reads such entries, this fails and docs/interop.md must be updated.
#[track_caller]
fn assert_skopeo_skips_docker_types(out: std::process::Output, reference: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no descriptor found for reference"),
        "skopeo now reads Docker-typed entries ({reference}): update docs/interop.md\n{stderr}"
    );
}

#[test]
fn skopeo_copies_every_oci_image_out_of_our_archive() {
    let src = Registry::start();
    let dst = Registry::start();
    // A 3 MiB base layer: the archive has stored frames (raw blocks we write ourselves) as well as frames
    // zstd compressed, and the plain zstd and tar tools read both.
    let set = seed_sample(&src.base_url(), 21, 3 << 20);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "s.tar.zst");

    // zstd -d, then skopeo's oci-archive transport, image by image, by its full source name.
    let z = Command::new("zstd")
        .args(["-q", "-d", "s.tar.zst", "-o", "s.tar"])
        .current_dir(ws.dir.path())
        .status()
        .unwrap();
    assert!(z.success());
    for (img, r) in set.images.iter().zip(&refs) {
        let target = format!("docker://{}/via-archive/{}:{}", dst.host(), img.repo, img.tag);
        let out = skopeo(
            &[
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                &format!("oci-archive:s.tar:{r}"),
                &target,
            ],
            ws.dir.path(),
        );
        if is_docker_typed(img) {
            assert_skopeo_skips_docker_types(out, r);
            continue;
        }
        ok(out);
        let (bytes, _) = get_manifest(&dst.base_url(), &format!("via-archive/{}", img.repo), &img.tag).unwrap();
        assert_eq!(sha256(&bytes), img.root.digest, "skopeo changed the digest of {r}");
    }

    // tar --zstd -x, then skopeo's oci transport on the directory.
    std::fs::create_dir(ws.path("layout")).unwrap();
    let t = Command::new("tar")
        .args(["--zstd", "-xf", "s.tar.zst", "-C", "layout"])
        .current_dir(ws.dir.path())
        .status()
        .unwrap();
    assert!(t.success());
    for (img, r) in set.images.iter().zip(&refs) {
        let target = format!("docker://{}/via-dir/{}:{}", dst.host(), img.repo, img.tag);
        let out = skopeo(
            &["copy", "--all", "--preserve-digests", "--dest-tls-verify=false", &format!("oci:layout:{r}"), &target],
            ws.dir.path(),
        );
        if is_docker_typed(img) {
            assert_skopeo_skips_docker_types(out, r);
            continue;
        }
        ok(out);
        let (bytes, _) = get_manifest(&dst.base_url(), &format!("via-dir/{}", img.repo), &img.tag).unwrap();
        assert_eq!(sha256(&bytes), img.root.digest);
    }
}

/// A Docker-typed image is invisible to skopeo by reference (above), but a one-image archive copies when no
/// reference is given; `--preserve-digests` keeps its digest (without it, skopeo recompresses the layers).
#[test]
fn skopeo_copies_a_docker_typed_image_from_a_one_image_archive_without_a_reference() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 23, 64 * 1024);
    let ws = Workspace::new();
    let nginx = &set.images[2];
    assert!(is_docker_typed(nginx));
    ws.export(&[nginx.reference(&src.host())], "one.tar.zst").success();
    let z = Command::new("zstd").args(["-q", "-d", "one.tar.zst", "-o", "one.tar"]).current_dir(ws.dir.path()).status();
    assert!(z.unwrap().success());
    assert_skopeo_skips_docker_types(
        skopeo(
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci-archive:one.tar:{}", nginx.reference(&src.host())),
                &format!("docker://{}/by-ref/nginx:1", dst.host()),
            ],
            ws.dir.path(),
        ),
        &nginx.reference(&src.host()),
    );
    ok(skopeo(
        &[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "oci-archive:one.tar",
            &format!("docker://{}/no-ref/nginx:1", dst.host()),
        ],
        ws.dir.path(),
    ));
    assert_image_at(&dst.base_url(), "no-ref/nginx", "1", nginx);
}

#[test]
fn a_skopeo_oci_archive_is_importable() {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), 22, 64 * 1024);
    let ws = Workspace::new();
    let agent = &set.images[0]; // the OCI index: skopeo keeps OCI content as it is
    let name = agent.reference(&src.host());
    ok(skopeo(
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &format!("oci-archive:skopeo.tar:{name}"),
        ],
        ws.dir.path(),
    ));
    let r = ws.bundle(&["verify", "skopeo.tar"]).success();
    assert!(r.stdout.contains("no bundle.json"), "{}", r.stdout);
    ws.bundle(&["import", "-d", &dst.host(), "skopeo.tar"]).success();
    let (bytes, _) = get_manifest(&dst.base_url(), &agent.repo, &agent.tag).unwrap();
    assert_eq!(sha256(&bytes), agent.root.digest);
    for b in &agent.blobs {
        assert_eq!(get_blob(&dst.base_url(), &agent.repo, &b.digest).map(|x| sha256(&x)), Some(b.digest.clone()));
    }

    // An archive whose image is named by a bare tag cannot be imported, and says why.
    ok(skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}", set.images[3].reference(&src.host())),
            "oci-archive:bare.tar:v1",
        ],
        ws.dir.path(),
    ));
    let r = ws.bundle(&["import", "-d", &dst.host(), "bare.tar"]).failure();
    assert!(
        r.stderr.contains("names the image `v1` in `org.opencontainers.image.ref.name`, which is not a full image reference, and has no full reference in `io.containerd.image.name` either"),
        "{}",
        r.stderr
    );
}
