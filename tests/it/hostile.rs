//! Hostile or damaged archives: `verify` and `import` refuse them with a clear message, write nothing outside
//! their scratch space (they never extract anything) and push nothing.

use crate::harness::*;

/// A valid little archive's entries (uncompressed tar), to be damaged one way per test.
fn valid_entries() -> Vec<(String, Vec<u8>)> {
    let img = image(&[random_layer(2048, 5)], "amd64", false);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": img.manifest.digest, "size": img.manifest.bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "quay.io/hostile/app:1"}
        }]
    });
    let mut entries = vec![
        ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json".to_string(), serde_json::to_vec(&index).unwrap()),
    ];
    for b in [&img.manifest, &img.config, &img.layers[0]] {
        entries.push((format!("blobs/sha256/{}", &b.digest[7..]), b.bytes.clone()));
    }
    entries
}

fn write_tar(
    path: &std::path::Path,
    entries: &[(String, Vec<u8>)],
    extra: impl FnOnce(&mut tar::Builder<std::fs::File>),
) {
    let mut t = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        t.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    extra(&mut t);
    t.finish().unwrap();
}

/// Raw header with any path (tar::Builder refuses `..` and absolute paths, which is the point).
fn raw_entry(t: &mut tar::Builder<std::fs::File>, name: &str, kind: tar::EntryType, body: &[u8], link: Option<&str>) {
    let mut h = tar::Header::new_old();
    {
        let bytes = h.as_old_mut();
        bytes.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    t.append(&h, body).unwrap();
}

#[track_caller]
fn refused(ws: &Workspace, name: &str, expect: &str) {
    let dst = Registry::start();
    let r = ws.bundle(&["verify", name]).failure();
    assert!(r.stderr.contains(expect), "verify of {name} should mention `{expect}`:\n{}", r.stderr);
    let r = ws.bundle(&["import", "-d", &dst.host(), name]).failure();
    assert!(r.stderr.contains("failed verification"), "{}", r.stderr);
    dst.assert_untouched(&format!("import of {name}"));
}

#[test]
fn the_valid_base_archive_is_accepted() {
    let ws = Workspace::new();
    write_tar(&ws.path("ok.tar"), &valid_entries(), |_| {});
    ws.bundle(&["verify", "ok.tar"]).success();
}

#[test]
fn path_escapes_links_and_devices_are_refused() {
    let ws = Workspace::new();
    let cases: [(&str, tar::EntryType, Option<&str>, &str); 5] = [
        ("../escape", tar::EntryType::Regular, None, "leaves the archive"),
        ("/etc/evil", tar::EntryType::Regular, None, "leaves the archive"),
        ("blobs/sha256/link", tar::EntryType::Symlink, Some("/etc/passwd"), "symbolic link"),
        ("blobs/sha256/hard", tar::EntryType::Link, Some("index.json"), "hard link"),
        ("blobs/sha256/dev", tar::EntryType::Char, None, "character device"),
    ];
    for (i, (name, kind, link, expect)) in cases.into_iter().enumerate() {
        let file = format!("case{i}.tar");
        write_tar(&ws.path(&file), &valid_entries(), |t| raw_entry(t, name, kind, b"", link));
        refused(&ws, &file, expect);
    }
    assert!(!ws.dir.path().parent().unwrap().join("escape").exists());
}

#[test]
fn duplicate_names_wrong_names_and_lying_sizes_are_refused() {
    let ws = Workspace::new();
    let mut dup = valid_entries();
    dup.push(dup[1].clone());
    write_tar(&ws.path("dup.tar"), &dup, |_| {});
    refused(&ws, "dup.tar", "appears twice");

    let mut renamed = valid_entries();
    let last = renamed.len() - 1;
    renamed[last].0 = format!("blobs/sha256/{}", "0".repeat(64));
    write_tar(&ws.path("renamed.tar"), &renamed, |_| {});
    refused(&ws, "renamed.tar", "content does not match its name");

    // A manifest whose declared layer size is a lie.
    let mut lying = valid_entries();
    let index: serde_json::Value = serde_json::from_slice(&lying[1].1).unwrap();
    let mut desc = index["manifests"][0].clone();
    desc["size"] = serde_json::json!(desc["size"].as_u64().unwrap() + 1);
    lying[1].1 = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [desc]})).unwrap();
    write_tar(&ws.path("lying.tar"), &lying, |_| {});
    refused(&ws, "lying.tar", "bytes but index.json");
}

#[test]
fn missing_blobs_and_unexpected_entries_are_refused() {
    let ws = Workspace::new();
    let mut no_layer = valid_entries();
    no_layer.pop();
    write_tar(&ws.path("nolayer.tar"), &no_layer, |_| {});
    refused(&ws, "nolayer.tar", "is missing (referenced by manifest");

    let mut no_manifest = valid_entries();
    no_manifest.remove(2);
    write_tar(&ws.path("nomanifest.tar"), &no_manifest, |_| {});
    refused(&ws, "nomanifest.tar", "is missing (a manifest referenced by index.json");

    let mut extra = valid_entries();
    extra.push(("notes.txt".into(), b"hello".to_vec()));
    extra.push(("blobs/sha256/".to_string() + &sha256(b"stray")[7..], b"stray".to_vec()));
    write_tar(&ws.path("extra.tar"), &extra, |_| {});
    refused(&ws, "extra.tar", "is not part of an OCI image layout");
    let r = ws.bundle(&["verify", "extra.tar"]).failure();
    assert!(r.stderr.contains("is not referenced by any image"), "{}", r.stderr);
}

#[test]
fn a_bundle_json_of_another_format_version_is_refused() {
    let ws = Workspace::new();
    let mut entries = valid_entries();
    entries.insert(
        2,
        (
            "bundle.json".into(),
            br#"{"formatVersion": 99, "tool": {"name": "bundle", "version": "9"}, "images": [], "blobs": []}"#.to_vec(),
        ),
    );
    write_tar(&ws.path("future.tar"), &entries, |_| {});
    refused(&ws, "future.tar", "has format version 99");
}

#[test]
fn a_huge_declared_size_is_not_trusted() {
    // A header that claims an 8 GiB entry (the most a ustar size field holds) in a file of a few KiB: the reader
    // must not allocate for it or trust it.
    let ws = Workspace::new();
    let path = ws.path("bomb.tar");
    write_tar(&path, &valid_entries(), |_| {});
    let mut bytes = std::fs::read(&path).unwrap();
    // The first header is oci-layout's: set its size field to 8 GiB - 1 (octal) and fix the checksum.
    let size = format!("{:011o}\0", (1u64 << 33) - 1);
    bytes[124..136].copy_from_slice(size.as_bytes());
    bytes[148..156].copy_from_slice(b"        ");
    let sum: u32 = bytes[..512].iter().map(|b| *b as u32).sum();
    bytes[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    std::fs::write(&path, bytes).unwrap();
    // Within 1 GiB of address space (a verify of a sound archive needs a fraction of it): allocating for the
    // header's claim would abort the run.
    let r = ws.bundle_within(1 << 30, &["verify", "bomb.tar"]).failure();
    assert!(r.stderr.contains("bomb.tar failed verification"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("oci-layout: is {} bytes, more than the", (1u64 << 33) - 1)), "{}", r.stderr);
    assert!(r.stderr.contains("the archive ends too early (truncated?)"), "{}", r.stderr);
    // The same limit leaves a sound archive alone.
    write_tar(&ws.path("ok.tar"), &valid_entries(), |_| {});
    ws.bundle_within(1 << 30, &["verify", "ok.tar"]).success();
}
