//! Damaged archives are refused by verify and push nothing on import; outputs are never half-written.

use crate::harness::*;

fn exported(layer: usize, seed: u64) -> (Registry, Registry, Workspace, SampleSet) {
    let src = Registry::start();
    let dst = Registry::start();
    let set = seed_sample(&src.base_url(), seed, layer);
    let ws = Workspace::new();
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "s.tar.zst");
    (src, dst, ws, set)
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_byte_fails_verify_and_import_pushes_nothing() {
    let (_src, dst, ws, _) = exported(256 * 1024, 11);
    let len = std::fs::metadata(ws.path("s.tar.zst")).unwrap().len() as usize;
    flip_byte(&ws.path("s.tar.zst"), len / 2);

    let r = ws.bundle(&["verify", "s.tar.zst"]).failure();
    assert!(r.stderr.contains("s.tar.zst failed verification"), "{}", r.stderr);
    assert!(r.stderr.contains("the .sha256 file says"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: the archive is damaged"), "{}", r.stderr);

    let r = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).failure();
    assert!(r.stderr.contains("failed verification"), "{}", r.stderr);
    dst.assert_untouched("import of a damaged archive");
}

#[test]
fn flipped_byte_is_found_by_content_checks_without_the_sidecar() {
    let (_src, dst, ws, _) = exported(256 * 1024, 12);
    std::fs::remove_file(ws.path("s.tar.zst.sha256")).unwrap();
    let len = std::fs::metadata(ws.path("s.tar.zst")).unwrap().len() as usize;
    flip_byte(&ws.path("s.tar.zst"), len / 3);
    let r = ws.bundle(&["verify", "s.tar.zst"]).failure();
    assert!(r.stderr.contains("not found; checking the archive's content"), "{}", r.stderr);
    assert!(r.stderr.contains("failed verification"), "{}", r.stderr);
    ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).failure();
    dst.assert_untouched("import of a damaged archive");
}

#[test]
fn truncated_archive_fails_verify_and_import_pushes_nothing() {
    let (_src, dst, ws, _) = exported(256 * 1024, 13);
    let bytes = std::fs::read(ws.path("s.tar.zst")).unwrap();
    std::fs::write(ws.path("s.tar.zst"), &bytes[..bytes.len() / 2]).unwrap();
    let r = ws.bundle(&["verify", "s.tar.zst"]).failure();
    assert!(r.stderr.contains("s.tar.zst"), "{}", r.stderr);
    // Without the sidecar, the content checks alone must notice.
    std::fs::remove_file(ws.path("s.tar.zst.sha256")).unwrap();
    let r = ws.bundle(&["verify", "s.tar.zst"]).failure();
    assert!(r.stderr.contains("truncated") || r.stderr.contains("missing"), "{}", r.stderr);
    ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).failure();
    dst.assert_untouched("import of a damaged archive");
}

#[test]
fn an_existing_output_is_not_overwritten() {
    let (src, _dst, ws, set) = exported(4096, 14);
    let before = std::fs::read(ws.path("s.tar.zst")).unwrap();
    let r = ws.bundle(&["export", "--image", &set.images[2].reference(&src.host()), "-o", "s.tar.zst"]).failure();
    assert!(r.stderr.contains("s.tar.zst already exists"), "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(ws.path("s.tar.zst")).unwrap(), before);
    ws.bundle(&["export", "--image", &set.images[2].reference(&src.host()), "-o", "s.tar.zst", "--force"]).success();
    assert_ne!(std::fs::read(ws.path("s.tar.zst")).unwrap(), before);
    ws.bundle(&["verify", "s.tar.zst"]).success();
    assert_eq!(listing(ws.dir.path()).iter().filter(|n| n.contains(".partial")).count(), 0);
}

#[test]
fn a_reimport_that_pushes_nothing_reads_only_the_front_but_a_real_import_verifies_everything() {
    let (_src, dst, ws, _) = exported(512 * 1024, 15);
    ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).success();
    // Damage a layer (the end of the archive holds the largest blobs), after the import.
    let len = std::fs::metadata(ws.path("s.tar.zst")).unwrap().len() as usize;
    flip_byte(&ws.path("s.tar.zst"), len - 4096);
    let again = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).success();
    assert!(again.stderr.contains("nothing to push"), "{}", again.stderr);
    // Anything that would push reads, and refuses, the damaged archive.
    let empty = Registry::start();
    let r = ws.bundle(&["import", "-d", &empty.host(), "s.tar.zst"]).failure();
    assert!(r.stderr.contains("failed verification"), "{}", r.stderr);
    empty.assert_untouched("import of an archive damaged after an import");
}

/// Import trusts a matching sidecar enough to start uploading without a full verification pass, but still
/// hashes every blob it uploads: an archive altered together with its sidecar pushes no image.
#[test]
fn an_archive_altered_with_its_sidecar_is_caught_blob_by_blob_and_tags_nothing() {
    let (_src, dst, ws, set) = exported(512 * 1024, 16);
    let len = std::fs::metadata(ws.path("s.tar.zst")).unwrap().len() as usize;
    flip_byte(&ws.path("s.tar.zst"), len - 4096);
    let forged =
        format!("{}  s.tar.zst\n", sha256(&std::fs::read(ws.path("s.tar.zst")).unwrap()).trim_start_matches("sha256:"));
    std::fs::write(ws.path("s.tar.zst.sha256"), forged).unwrap();
    let r = ws.bundle(&["import", "-d", &dst.host(), "s.tar.zst"]).failure();
    assert!(r.stderr.contains("s.tar.zst is damaged"), "{}", r.stderr);
    assert!(r.stderr.contains("read back from the archive does not match its digest"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: the content being uploaded is damaged"), "{}", r.stderr);
    for img in &set.images {
        assert!(get_manifest(&dst.base_url(), &img.repo, &img.tag).is_none(), "{} was tagged", img.repo);
    }
}

/// Disk before work: an export whose archive, or whose downloads, cannot fit where they go stops before a single
/// blob is downloaded, naming the directory and the shortfall; so does a split. (A tmpfs of 6 MiB, mounted in a
/// mount namespace of the run's own; the images hold about 8.5 MiB.)
#[test]
fn a_disk_too_small_is_refused_before_anything_is_downloaded() {
    let src = Registry::start();
    let ws = Workspace::new();
    let set = seed_sample(&src.base_url(), 421, 3 << 20);
    let mut args = vec!["export".to_string()];
    for i in &set.images {
        args.extend(["--image".into(), i.reference(&src.host())]);
    }
    let blob_gets = || src.requests().iter().filter(|l| l.contains("GET /v2/") && l.contains("/blobs/")).count();
    let with =
        |extra: &[&str]| -> Vec<String> { args.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect() };
    let run =
        |a: Vec<String>| ws.bundle_on_small_disk("small", "6m", &a.iter().map(String::as_str).collect::<Vec<_>>());

    // The archive's directory is short.
    let r = run(with(&["-o", "small/out.tar.zst", "--cache-dir", "cache"])).failure();
    assert!(r.stderr.contains("not enough free space for the archive:"), "{}", r.stderr);
    assert!(r.stderr.contains("needed in small, 6.00 MiB free there"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: free ") && r.stderr.contains("-o for the archive"), "{}", r.stderr);
    // The staging directory (--no-cache under --tmp-dir) is short.
    let r = run(with(&["-o", "out.tar.zst", "--no-cache", "--tmp-dir", "small"])).failure();
    assert!(r.stderr.contains("not enough free space for the downloads:"), "{}", r.stderr);
    assert_eq!(blob_gets(), 0, "a blob was downloaded before the disk was checked");
    assert!(!ws.path("out.tar.zst").exists());

    // With room, the same export works; its split into a short directory is refused before a volume is written.
    ws.bundle(&with(&["-o", "out.tar.zst"]).iter().map(String::as_str).collect::<Vec<_>>()).success();
    let r = ws
        .bundle_on_small_disk(
            "small",
            "6m",
            &["split", "--volume-size", "4MiB", "out.tar.zst", "-o", "small/v.tar.zst"],
        )
        .failure();
    assert!(r.stderr.contains("not enough free space for the volumes:"), "{}", r.stderr);
}
