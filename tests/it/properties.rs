//! Property tests: the parsers that read untrusted input never panic, and damage is always noticed.

use proptest::prelude::*;

use bundle::archive::ArchiveFile;
use bundle::archive::contents::check;
use bundle::oci::digest::Digest;
use bundle::oci::reference::ImageRef;

use crate::harness::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any string: an error or a reference that prints and parses back to itself.
    #[test]
    fn references_parse_or_fail_and_round_trip(s in "\\PC{0,80}", t in "[a-zA-Z0-9._:/@-]{0,60}") {
        for input in [s.as_str(), t.as_str()] {
            if let Ok(r) = ImageRef::parse(input) {
                let again = ImageRef::parse(&r.to_string()).expect("a printed reference parses");
                prop_assert_eq!(again, r);
            }
        }
    }

    /// Any bytes, any declared media type: the manifest walker returns an error or links, never panics.
    #[test]
    fn the_manifest_walker_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), json in "\\{\"(mediaType|manifests|layers|config)\":[\\[\\{\"a-z0-9:,\\]\\} ]{0,80}") {
        let d = Digest::of(&bytes);
        let _ = bundle::oci::manifest::parse(&d, None, &bytes);
        let _ = bundle::oci::manifest::parse(&d, Some(bundle::oci::manifest::OCI_INDEX), json.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any bytes as an archive: open, scan and check return, with errors or problems, and never panic.
    #[test]
    fn the_archive_reader_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..4096), zstd_magic in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar.zst");
        let mut bytes = bytes;
        if zstd_magic && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(a) = ArchiveFile::open(&path) {
            if let Ok(scan) = a.scan(&|_| {}) {
                let _ = check(scan, None);
            }
            let _ = a.read_metadata();
            let _ = a.scan_front();
        }
    }
}

/// A small real archive, made once. Its largest gzip layer spans more than a frame, so the archive holds both
/// kinds of frame: compressed (metadata, manifests, small blobs) and stored (only layer bytes).
fn real_archive() -> &'static Vec<u8> {
    static ARCHIVE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let src = Registry::start();
        let set = seed_sample(&src.base_url(), 81, 3 << 19);
        let ws = Workspace::new();
        ws.export(&set.images.iter().map(|i| i.reference(&src.host())).collect::<Vec<_>>(), "p.tar.zst");
        std::fs::read(ws.path("p.tar.zst")).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any single flipped byte anywhere in a real archive is found by the content checks alone (no sidecar),
    /// or makes the file unreadable: it is never accepted.
    #[test]
    fn any_flipped_byte_is_never_accepted(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut bytes = real_archive().clone();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.tar.zst");
        std::fs::write(&path, &bytes).unwrap();
        let accepted = match ArchiveFile::open(&path) {
            Err(_) => false,
            Ok(a) => match a.scan(&|_| {}) {
                Err(_) => false,
                Ok(scan) => {
                    let (contents, problems) = check(scan, None);
                    contents.is_some() && problems.is_empty()
                }
            },
        };
        prop_assert!(!accepted, "flipping byte {} of {} with {:#04x} went unnoticed", i, bytes.len(), mask);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A real archive cut anywhere (in the metadata, a blob, the seek table) is never accepted.
    #[test]
    fn any_truncation_is_never_accepted(at in any::<prop::sample::Index>()) {
        let bytes = real_archive();
        let cut = at.index(bytes.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.tar.zst");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let accepted = ArchiveFile::open(&path)
            .ok()
            .and_then(|a| a.scan(&|_| {}).ok())
            .map(|scan| {
                let (contents, problems) = check(scan, None);
                contents.is_some() && problems.is_empty()
            })
            .unwrap_or(false);
        prop_assert!(!accepted, "cut at {} of {} went unnoticed", cut, bytes.len());
    }
}

/// A ConfigMap whose data holds `s`, as helm would print it.
fn configmap_holding(s: &str) -> String {
    let doc = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"payload": s}});
    serde_yaml_ng::to_string(&doc).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Regression (discovery hung on a ConfigMap string that is not YAML): any ConfigMap payload, YAML-like or
    /// not, is searched and discovery returns. A broken parser loop would spin, so the call runs on a thread
    /// and a bounded wait turns a hang into a failure.
    #[test]
    fn discovery_finishes_on_any_configmap_string(
        parts in proptest::collection::vec(prop_oneof![
            Just("image: quay.io/a/b:1\n".to_string()),
            Just("---\n".to_string()),
            Just("key: [unclosed\n".to_string()),
            Just("- {a: ".to_string()),
            Just("  nested:\n    image: ghcr.io/x/y:2\n".to_string()),
            Just("\t: :\n".to_string()),
            "\\PC{0,24}",
        ], 0..24)
    ) {
        let payload = parts.concat();
        let text = configmap_holding(&payload);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(bundle::chart::discover::from_rendered(&text, "").map(|f| f.len()));
        });
        let result = rx.recv_timeout(std::time::Duration::from_secs(20));
        prop_assert!(result.is_ok(), "discovery did not finish on payload {:?}", payload);
    }
}
