//! Volumes (`export --volume-size`, `split`): files of a chosen size that each verify alone, that import in any
//! order, and with one missing, import every image they complete and name what is missing.

use std::collections::BTreeSet;

use crate::harness::*;

const MIB: u64 = 1 << 20;
/// Small enough that the 3 MiB shared layer spans volumes, large enough for the metadata every volume carries.
const VOLUME: &str = "2MiB";

/// The sample set with 3 MiB layers (random, so incompressible: the volumes are as large as their content).
fn sample(src: &Registry, seed: u64) -> (SampleSet, Vec<String>) {
    let set = seed_sample(&src.base_url(), seed, 3 * MIB as usize);
    let refs = set.images.iter().map(|i| i.reference(&src.host())).collect();
    (set, refs)
}

fn export_volumes(ws: &Workspace, refs: &[String], out: &str) -> Vec<String> {
    let mut args = vec!["export", "--volume-size", VOLUME, "-o", out];
    for r in refs {
        args.extend(["--image", r.as_str()]);
    }
    let r = ws.bundle(&args).success();
    assert!(r.stderr.contains("Wrote "), "{}", r.stderr);
    volume_names(ws, out.trim_end_matches(".tar.zst"))
}

/// `STEM.partNNN.tar.zst` in the workspace, in order.
fn volume_names(ws: &Workspace, stem: &str) -> Vec<String> {
    listing(&ws.path("."))
        .into_iter()
        .filter(|n| n.starts_with(&format!("{stem}.part")) && n.ends_with(".tar.zst"))
        .collect()
}

/// The tar entries of a volume, read by the `tar` and `zstd` tools (not by bundle).
fn entries(ws: &Workspace, volume: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("timeout")
        .args(["60", "tar", "--zstd", "-tf", volume])
        .current_dir(ws.path("."))
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -t {volume}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// The volumes each blob is in: whole (`blobs/sha256/HEX`, from the tar listings), or in pieces (which pieces
/// make a blob is bundle.json's statement; each piece file is found in the listings).
fn volumes_of_blob(ws: &Workspace, volumes: &[String], digest: &str) -> BTreeSet<usize> {
    let hex = digest.trim_start_matches("sha256:");
    let whole: BTreeSet<usize> =
        (0..volumes.len()).filter(|i| entries(ws, &volumes[*i]).contains(&format!("blobs/sha256/{hex}"))).collect();
    if !whole.is_empty() {
        return whole;
    }
    let listing = ws.bundle(&["inspect", "--json", &volumes[0]]).success();
    let v: serde_json::Value = serde_json::from_str(&listing.stdout).unwrap();
    let placement = v["volume"]["placement"].as_array().unwrap();
    let p = placement.iter().find(|p| p["digest"] == digest).unwrap_or_else(|| panic!("{digest} is not placed"));
    let mut found = BTreeSet::new();
    for piece in p["pieces"].as_array().unwrap() {
        let path = format!("pieces/sha256/{}", piece["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let holders: Vec<usize> = (0..volumes.len()).filter(|i| entries(ws, &volumes[*i]).contains(&path)).collect();
        assert!(!holders.is_empty(), "piece {path} of {digest} is on no volume");
        found.extend(holders);
    }
    found
}

#[test]
fn volumes_verify_alone_fit_their_size_and_import_in_reverse_order_with_every_digest_equal() {
    let src = Registry::start();
    let dst = Registry::start();
    let (set, refs) = sample(&src, 601);
    let ws = Workspace::new();
    let volumes = export_volumes(&ws, &refs, "set.tar.zst");
    assert!(volumes.len() >= 4, "{volumes:?}");
    assert!(!ws.path("set.tar.zst").exists(), "the whole archive is not left behind");
    assert!(ws.tmp_leftovers().is_empty(), "{:?}", ws.tmp_leftovers());
    let hidden: Vec<String> =
        listing(&ws.path(".")).into_iter().filter(|n| n.starts_with(".bundle-") || n.ends_with(".partial")).collect();
    assert!(hidden.is_empty(), "staging left behind: {hidden:?}");

    // The shared 3 MiB layer is larger than a volume: it spans volumes in pieces.
    let shared = &set.images[0].blobs[1];
    assert_eq!(shared.bytes.len() as u64 / MIB, 3);
    assert!(volumes_of_blob(&ws, &volumes, &shared.digest).len() >= 2);

    for (i, v) in volumes.iter().enumerate() {
        let len = std::fs::metadata(ws.path(v)).unwrap().len();
        assert!(len <= 2 * MIB, "{v} is {len} bytes");
        // The sidecar is sha256sum's format and matches the file.
        let side = std::fs::read_to_string(ws.path(&format!("{v}.sha256"))).unwrap();
        let digest = sha256(&std::fs::read(ws.path(v)).unwrap());
        assert_eq!(side, format!("{}  {v}\n", digest.trim_start_matches("sha256:")));
        let r = ws.bundle(&["verify", v]).success();
        assert!(r.stdout.contains(&format!("volume {} of {}", i + 1, volumes.len())), "{}", r.stdout);
    }
    // Any one volume lists the whole set.
    let inspect = ws.bundle(&["inspect", &volumes[1]]).success();
    for r in &refs {
        assert!(inspect.stdout.contains(r.as_str()), "{r} not listed:\n{}", inspect.stdout);
    }
    assert!(inspect.stdout.contains(&format!("volume 2 of {}", volumes.len())), "{}", inspect.stdout);

    // `split` of the whole archive gives the very same volumes.
    ws.export(&refs, "whole.tar.zst");
    ws.bundle(&["split", "--volume-size", VOLUME, "whole.tar.zst", "-o", "cut.tar.zst"]).success();
    let cut = volume_names(&ws, "cut");
    assert_eq!(cut.len(), volumes.len());
    for (a, b) in volumes.iter().zip(&cut) {
        assert_eq!(
            sha256(&std::fs::read(ws.path(a)).unwrap()),
            sha256(&std::fs::read(ws.path(b)).unwrap()),
            "{a} and {b} differ"
        );
    }
    // Splitting again does not overwrite without --force.
    let again = ws.bundle(&["split", "--volume-size", VOLUME, "whole.tar.zst", "-o", "cut.tar.zst"]).failure();
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    let host = dst.host();
    let mut args = vec!["import", "-d", host.as_str()];
    let reversed: Vec<String> = volumes.iter().rev().cloned().collect();
    args.extend(reversed.iter().map(String::as_str));
    let r = ws.bundle(&args).success();
    // Each volume is planned from its front and proven by its sidecar, as a single archive is.
    for v in &volumes {
        assert!(r.stderr.contains(&format!("Verified {v} against {v}.sha256: volume")), "{}", r.stderr);
    }
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    // A directory of volumes is the same set; a re-run pushes nothing.
    std::fs::create_dir(ws.path("disc")).unwrap();
    for v in &volumes {
        std::fs::copy(ws.path(v), ws.path(&format!("disc/{v}"))).unwrap();
    }
    let r = ws.bundle(&["import", "-d", &host, "disc"]).success();
    assert!(r.stderr.contains("nothing to push"), "{}", r.stderr);
}

#[test]
fn with_a_volume_missing_the_complete_images_are_imported_and_the_missing_volume_is_named() {
    let src = Registry::start();
    let dst = Registry::start();
    let (set, refs) = sample(&src, 602);
    let ws = Workspace::new();
    let volumes = export_volumes(&ws, &refs, "set.tar.zst");
    let last = volumes.len() - 1;
    let given: Vec<&str> = volumes[..last].iter().map(String::as_str).collect();

    // Which images the last volume holds something of: the ground truth from the tar listings.
    let needs_last: Vec<bool> = set
        .images
        .iter()
        .map(|img| img.blobs.iter().any(|b| volumes_of_blob(&ws, &volumes, &b.digest).contains(&last)))
        .collect();
    assert!(needs_last.contains(&true) && needs_last.contains(&false), "{needs_last:?}: the test needs both kinds");

    let host = dst.host();
    let mut args = vec!["import", "-d", host.as_str()];
    args.extend(given.iter().rev());
    let r = ws.bundle(&args).failure();
    assert!(r.stderr.contains(&format!("volume {} ({})", last + 1, volumes[last])), "{}", r.stderr);
    for (img, needs) in set.images.iter().zip(&needs_last) {
        let reference = img.reference(&src.host());
        if *needs {
            assert!(get_manifest(&dst.base_url(), &img.repo, &img.tag).is_none(), "{reference} was pushed");
            assert!(r.stderr.contains(&reference), "{reference} not named:\n{}", r.stderr);
        } else {
            assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
        }
    }
    // With the last volume brought, the rest follows.
    ws.bundle(&["import", "-d", &host, "set.part*.tar.zst"]).success();
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
}

#[test]
fn a_volume_size_too_small_for_the_metadata_is_refused_and_writes_nothing() {
    let src = Registry::start();
    let (_, refs) = sample(&src, 603);
    let ws = Workspace::new();
    ws.export(&refs, "whole.tar.zst");
    let before = listing(&ws.path("."));
    let r = ws.bundle(&["split", "--volume-size", "8KiB", "whole.tar.zst"]).failure();
    assert!(r.stderr.contains("cannot hold what every volume carries"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: choose a volume size of at least"), "{}", r.stderr);
    assert_eq!(listing(&ws.path(".")), before);
    // A size that is not one is a usage error (exit 2), like any bad flag.
    let out = ws.command(&["split", "--volume-size", "5 parsecs", "whole.tar.zst"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a volume size"));
}

/// Re-pack a volume from its extracted files, as `tar --zstd -c` writes it (bundle reads such a stream too).
fn repack(ws: &Workspace, dir: &str, out: &str) {
    let files: Vec<String> = ["oci-layout", "index.json", "bundle.json", "blobs", "pieces"].map(String::from).to_vec();
    let mut args =
        vec!["60".to_string(), "tar".into(), "--zstd".into(), "-cf".into(), out.into(), "-C".into(), dir.into()];
    args.extend(files);
    let out = std::process::Command::new("timeout").args(&args).current_dir(ws.path(".")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_volume_with_a_damaged_or_missing_piece_fails_verify_naming_it_and_its_set_imports_nothing() {
    let src = Registry::start();
    let (_, refs) = sample(&src, 604);
    let ws = Workspace::new();
    let volumes = export_volumes(&ws, &refs, "set.tar.zst");
    let (index, piece) = volumes
        .iter()
        .enumerate()
        .find_map(|(i, v)| entries(&ws, v).into_iter().find(|e| e.starts_with("pieces/sha256/")).map(|p| (i, p)))
        .expect("a volume holds a piece");
    std::fs::create_dir(ws.path("x")).unwrap();
    let untar = std::process::Command::new("timeout")
        .args(["60", "tar", "--zstd", "-xf", &volumes[index], "-C", "x"])
        .current_dir(ws.path("."))
        .output()
        .unwrap();
    assert!(untar.status.success());
    // Re-packed intact, it still verifies (its sidecar no longer applies: the bytes differ).
    repack(&ws, "x", "repacked.tar.zst");
    ws.bundle(&["verify", "repacked.tar.zst"]).success();

    let path = ws.path(&format!("x/{piece}"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    repack(&ws, "x", "damaged.tar.zst");
    let r = ws.bundle(&["verify", "damaged.tar.zst"]).failure();
    assert!(r.stderr.contains(&format!("{piece}: content does not match its name")), "{}", r.stderr);

    std::fs::remove_file(&path).unwrap();
    repack(&ws, "x", "short.tar.zst");
    let r = ws.bundle(&["verify", "short.tar.zst"]).failure();
    assert!(r.stderr.contains(&format!("{piece}: is missing (a piece of a blob that spans volumes)")), "{}", r.stderr);

    // The damaged volume in place of the sound one: the set is refused before anything is pushed.
    let dst = Registry::start();
    let host = dst.host();
    let mut args = vec!["import", "-d", host.as_str(), "damaged.tar.zst"];
    args.extend(volumes.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, v)| v.as_str()));
    let r = ws.bundle(&args).failure();
    assert!(r.stderr.contains("damaged.tar.zst failed verification"), "{}", r.stderr);
    dst.assert_untouched("import of a set with a damaged volume");

    // A volume altered in place beside its old sidecar: planned from its front, then the sidecar disagrees, the
    // full verification finds the damage, and nothing is pushed.
    std::fs::create_dir(ws.path("altered")).unwrap();
    for v in &volumes {
        std::fs::copy(ws.path(v), ws.path(&format!("altered/{v}"))).unwrap();
        std::fs::copy(ws.path(&format!("{v}.sha256")), ws.path(&format!("altered/{v}.sha256"))).unwrap();
    }
    let target = ws.path(&format!("altered/{}", volumes[0]));
    let mut bytes = std::fs::read(&target).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&target, bytes).unwrap();
    let r = ws.bundle(&["import", "-d", &host, "altered"]).failure();
    assert!(r.stderr.contains(&format!("{} failed verification", volumes[0])), "{}", r.stderr);
    dst.assert_untouched("import of a set with a volume altered beside its sidecar");
}

#[test]
fn a_delta_cut_into_volumes_imports_on_top_of_its_base_set() {
    let src = Registry::start();
    let dst = Registry::start();
    let (set, mut refs) = sample(&src, 605);
    let mut ws = Workspace::new();
    ws.env("SOURCE_DATE_EPOCH", "1764460800");
    let base = export_volumes(&ws, &refs, "base.tar.zst");
    let host = dst.host();
    let mut args = vec!["import", "-d", host.as_str()];
    args.extend(base.iter().map(String::as_str));
    ws.bundle(&args).success();

    // A new image, with a layer larger than a volume, beside the unchanged ones.
    let newapp = image(&[random_layer(3 * MIB as usize, 6051)], "amd64", false);
    Pusher::new(&src.base_url()).image("acme/newapp", "1.0", &newapp);
    refs.push(format!("{}/acme/newapp:1.0", src.host()));
    // Any one volume of the base stands for its set.
    let mut args = vec!["export", "--since", &base[1], "--volume-size", VOLUME, "-o", "delta.tar.zst"];
    for r in &refs {
        args.extend(["--image", r.as_str()]);
    }
    ws.bundle(&args).success();
    let delta = volume_names(&ws, "delta");
    assert!(delta.len() >= 2 && delta.len() < base.len(), "{delta:?} against {base:?}");
    let v = ws.bundle(&["verify", &delta[0]]).success();
    assert!(v.stdout.contains("a delta of base.part*.tar.zst (sha256 "), "{}", v.stdout);
    assert!(v.stdout.contains(&format!("volume 1 of {}", delta.len())), "{}", v.stdout);

    let mut args = vec!["import", "-d", host.as_str()];
    args.extend(delta.iter().rev().map(String::as_str));
    ws.bundle(&args).success();
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    assert_image_at(&dst.base_url(), "acme/newapp", "1.0", &sample_single("acme/newapp", "1.0", &newapp));
}

#[test]
fn parity_volumes_rebuild_two_lost_volumes_at_import() {
    let src = Registry::start();
    let dst = Registry::start();
    let (set, refs) = sample(&src, 606);
    let ws = Workspace::new();
    let mut args = vec!["export", "--volume-size", VOLUME, "--parity", "2", "-o", "set.tar.zst"];
    for r in &refs {
        args.extend(["--image", r.as_str()]);
    }
    let r = ws.bundle(&args).success();
    let volumes = volume_names(&ws, "set");
    let written = format!("Wrote {} volumes and 2 parity volumes (any 2 lost volumes can be rebuilt)", volumes.len());
    assert!(r.stderr.contains(&written), "{}", r.stderr);
    let parity = ["set.parity01.bin", "set.parity02.bin"];
    for p in parity {
        let len = std::fs::metadata(ws.path(p)).unwrap().len();
        assert!(len <= 2 * MIB, "{p} is {len} bytes");
        let r = ws.bundle(&["verify", p]).success();
        assert!(r.stdout.contains("OK, parity volume"), "{}", r.stdout);
    }
    // Two discs lost: the others and the parity volumes make them again, byte for byte.
    std::fs::create_dir(ws.path("disc")).unwrap();
    let lost = [1, volumes.len() - 1];
    for (_, v) in volumes.iter().enumerate().filter(|(i, _)| !lost.contains(i)) {
        std::fs::copy(ws.path(v), ws.path(&format!("disc/{v}"))).unwrap();
        std::fs::copy(ws.path(&format!("{v}.sha256")), ws.path(&format!("disc/{v}.sha256"))).unwrap();
    }
    for p in parity {
        std::fs::copy(ws.path(p), ws.path(&format!("disc/{p}"))).unwrap();
        std::fs::copy(ws.path(&format!("{p}.sha256")), ws.path(&format!("disc/{p}.sha256"))).unwrap();
    }
    let r = ws.bundle(&["import", "-d", &dst.host(), "disc"]).success();
    for i in lost {
        assert!(r.stderr.contains(&format!("Rebuilt volume {} of {}", i + 1, volumes.len())), "{}", r.stderr);
    }
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    assert!(ws.tmp_leftovers().is_empty(), "{:?}", ws.tmp_leftovers());

    // A damaged parity volume is refused rather than used.
    let mut bytes = std::fs::read(ws.path("disc/set.parity01.bin")).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(ws.path("disc/set.parity01.bin"), bytes).unwrap();
    ws.bundle(&["verify", "disc/set.parity01.bin"]).failure();
    let r = ws.bundle(&["import", "-d", &dst.host(), "disc"]).failure();
    assert!(r.stderr.contains("does not match its sidecar"), "{}", r.stderr);
}

#[test]
fn volumes_of_two_sets_or_an_archive_among_volumes_are_refused_and_nothing_is_pushed() {
    let src = Registry::start();
    let dst = Registry::start();
    let (_, refs) = sample(&src, 607);
    let ws = Workspace::new();
    let a = export_volumes(&ws, &refs, "a.tar.zst");
    let b = export_volumes(&ws, &refs[..2], "b.tar.zst");
    ws.export(&refs, "whole.tar.zst");
    let host = dst.host();

    let r = ws.bundle(&["import", "-d", &host, &a[0], &b[0]]).failure();
    assert!(r.stderr.contains("are volumes of different sets"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: import the volumes of one set at a time"), "{}", r.stderr);
    let r = ws.bundle(&["import", "-d", &host, &a[0], "whole.tar.zst"]).failure();
    assert!(r.stderr.contains("whole.tar.zst is not a volume of a set"), "{}", r.stderr);
    let r = ws.bundle(&["import", "-d", &host, "nothing-here.part*.tar.zst"]).failure();
    assert!(r.stderr.contains("no volumes (NAME.partNNN.tar.zst, NAME.parityNN.bin) match"), "{}", r.stderr);
    dst.assert_untouched("imports of mismatched volumes");
}
