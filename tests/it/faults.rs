//! Faults on the network, from a fault-injecting proxy in front of a real docker-registry: transient ones are
//! retried and the run ends with the right digests; persistent ones end in a clear error after bounded retries;
//! bad bytes are never accepted.

use crate::harness::*;

const LAYER: usize = 1 << 20;

struct Faulty {
    ws: Workspace,
    src: Registry,
    proxy: FaultProxy,
    set: SampleSet,
}

/// The sample images in a registry, reachable through a fault proxy (referenced by the proxy's address).
fn faulty_source(seed: u64) -> Faulty {
    faulty_source_with(seed, LAYER)
}

fn faulty_source_with(seed: u64, layer: usize) -> Faulty {
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), seed, layer);
    let proxy = FaultProxy::start(src.port);
    Faulty { ws: Workspace::new(), src, proxy, set }
}

impl Faulty {
    fn refs(&self) -> Vec<String> {
        self.set.images.iter().map(|i| i.reference(&self.proxy.host())).collect()
    }

    fn export_args(&self, out: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["--retries".into(), "3".into(), "export".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        for r in self.refs() {
            a.push("--image".into());
            a.push(r);
        }
        a.extend(["-o".into(), out.into()]);
        a
    }

    fn run(&self, args: &[String]) -> Run {
        self.ws.bundle(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The shared base layer (the largest blob).
    fn layer(&self) -> String {
        self.set.images[0].blobs[1].digest.clone()
    }

    /// Import the archive into a clean registry and check every digest.
    fn check_archive(&self, out: &str) {
        self.ws.bundle(&["verify", out]).success();
        let dst = Registry::start();
        self.ws.bundle(&["import", "-d", &dst.host(), out]).success();
        for img in &self.set.images {
            let (bytes, _) = get_manifest(&dst.base_url(), &img.repo, &img.tag).unwrap();
            assert_eq!(sha256(&bytes), img.root.digest);
            for b in &img.blobs {
                assert_eq!(get_blob(&dst.base_url(), &img.repo, &b.digest).map(|x| sha256(&x)), Some(b.digest.clone()));
            }
        }
    }
}

#[test]
fn export_resumes_a_blob_with_range_after_a_reset_in_its_middle() {
    let f = faulty_source(71);
    let layer = f.layer();
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::ResetAfter(LAYER / 3), 1);
    f.run(&f.export_args("a.tar.zst", &[])).success();
    assert!(f.proxy.ranged(&layer) >= 1, "the download restarted from zero instead of resuming");
    f.check_archive("a.tar.zst");
}

#[test]
fn export_retries_5xx_bursts_and_honours_429_retry_after() {
    let f = faulty_source(72);
    f.proxy.add("GET", "/manifests/", Fault::Status(503, None), 2);
    f.proxy.add("GET", "/blobs/", Fault::Status(429, Some(1)), 1);
    f.proxy.add("GET", "/blobs/", Fault::Status(502, None), 2);
    f.proxy.add("GET", "/blobs/", Fault::Status(504, None), 1);
    f.run(&f.export_args("a.tar.zst", &[])).success();
    let faulted = f.proxy.seen.lock().unwrap().iter().filter(|s| s.faulted()).count();
    assert_eq!(faulted, 6, "every injected fault was met and retried");
    assert_waited_retry_after(&f.proxy, 1);
    f.check_archive("a.tar.zst");
}

#[test]
fn a_persistent_error_ends_in_a_clear_error_after_bounded_retries_and_no_archive() {
    let f = faulty_source(73);
    f.proxy.add("GET", "/manifests/", Fault::Status(500, None), usize::MAX);
    let refs = f.refs();
    let args = vec!["--retries", "2", "export", "--image", &refs[2], "-o", "a.tar.zst"];
    let r = f.ws.bundle(&args).failure();
    assert!(r.stderr.contains("answered HTTP 500 (INJECTED: injected 500)"), "{}", r.stderr);
    assert_eq!(f.proxy.count("GET", "/manifests/"), 3, "one attempt and two retries");
    assert!(listing(f.ws.dir.path()).iter().all(|n| !n.contains("a.tar.zst")), "{:?}", listing(f.ws.dir.path()));
}

#[test]
fn a_corrupted_byte_is_never_accepted() {
    let f = faulty_source(74);
    let layer = f.layer();
    // Once: the blob is fetched again and the export succeeds with the right bytes.
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::Corrupt(1000), 1);
    f.run(&f.export_args("a.tar.zst", &["--no-cache"])).success();
    assert_eq!(f.proxy.count("GET", &format!("/blobs/{layer}")), 2);
    f.check_archive("a.tar.zst");

    // Always: the export fails, says why, and leaves no archive and nothing in the cache for that blob.
    f.proxy.clear();
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::Corrupt(1000), usize::MAX);
    let r = f.run(&f.export_args("b.tar.zst", &[]));
    let r = r.failure();
    assert!(r.stderr.contains("does not match its digest"), "{}", r.stderr);
    assert!(!f.ws.path("b.tar.zst").exists());
    assert!(listing(f.ws.dir.path()).iter().all(|n| !n.contains(".partial")));
    let cache = f.ws.path(".cache/bundle/sha256");
    assert!(
        listing(&cache).iter().all(|n| !n.starts_with(&layer[7..])),
        "bad bytes kept in the cache: {:?}",
        listing(&cache)
    );
    let _ = &f.src;
}

/// Regression (found while making the archive writer follow downloads as they are written): a download that
/// fails its digest starts over, but the writer had already put its first bytes into the archive. The
/// archive must then be written again, not published with the bad bytes or abandoned.
#[test]
fn a_download_restarted_after_the_archive_writer_read_part_of_it_rewrites_the_archive() {
    // Large enough that what the writer takes of it shows in the temporary archive, which is written in 4 MiB
    // blocks.
    const BIG: usize = 16 << 20;
    let mut f = faulty_source_with(79, BIG);
    // One stream, so that the hold comes 12 MiB into the one response (pieces are 8 MiB).
    f.ws.env("BUNDLE_DOWNLOAD_PIECE_SIZE", "1GiB");
    let layer = f.layer();
    // Everything the archive holds before the layer (blobs sort by digest; manifests are small).
    let before: usize = f
        .set
        .images
        .iter()
        .flat_map(|i| i.blobs.iter().chain(&i.manifests))
        .filter(|b| b.digest < layer)
        .map(|b| (b.digest.clone(), b.bytes.len()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .values()
        .sum();
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::CorruptThenHold { at: 1000, hold_after: 12 << 20 }, 1);
    let args = f.export_args("a.tar.zst", &["--no-cache"]);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.insert(0, "-v");
    let child =
        f.ws.command(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(f.proxy.wait_held(), "the export never reached the held blob");
    // Wait (bounded) until the temporary archive holds 2 MiB of the layer: the writer is following it.
    let partial_len = || partial_archive_len(&f.ws, "a.tar.zst");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while partial_len() < before + (2 << 20) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        partial_len() >= before + (2 << 20),
        "the archive writer did not follow the download ({} bytes)",
        partial_len()
    );
    f.proxy.release();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("started over after part of it was written to the archive; writing the archive again"),
        "{stderr}"
    );
    assert_eq!(f.proxy.count("GET", &format!("/blobs/{layer}")), 2);
    f.check_archive("a.tar.zst");
}

#[test]
fn import_retries_failed_uploads_and_manifest_pushes() {
    let f = faulty_source(75);
    f.ws.export(&f.set.images.iter().map(|i| i.reference(&f.src.host())).collect::<Vec<_>>(), "s.tar.zst");
    let dst = Registry::start();
    let proxy = FaultProxy::start(dst.port);
    proxy.add("POST", "/blobs/uploads/", Fault::Status(503, None), 2);
    proxy.add("PUT", "/blobs/uploads/", Fault::Status(500, None), 1);
    proxy.add("PUT", "/blobs/uploads/", Fault::CutUpload(LAYER / 4), 1);
    proxy.add("PUT", "/manifests/", Fault::Status(502, None), 2);
    f.ws.bundle(&["import", "-d", &proxy.host(), "s.tar.zst"]).success();
    let faulted = proxy.seen.lock().unwrap().iter().filter(|s| s.faulted()).count();
    assert_eq!(faulted, 6);
    for img in &f.set.images {
        let (bytes, _) = get_manifest(&dst.base_url(), &img.repo, &img.tag).unwrap();
        assert_eq!(sha256(&bytes), img.root.digest);
    }
}

#[test]
fn ctrl_c_during_export_leaves_no_archive_and_a_reusable_cache() {
    let f = faulty_source(76);
    let layer = f.layer();
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::Hold, 1);
    let args = f.export_args("a.tar.zst", &[]);
    let child =
        f.ws.command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    assert!(f.proxy.wait_held(), "the export never reached the held blob");
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    f.proxy.release();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    // The message is export's own: what an interrupted export leaves, not what an import would.
    assert!(stderr.contains("error: interrupted; nothing was written under the output name"), "{stderr}");
    assert!(!stderr.contains("import"), "{stderr}");
    let left: Vec<String> = listing(f.ws.dir.path()).into_iter().filter(|n| n.contains("a.tar.zst")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The cache keeps what was downloaded: the re-run completes.
    f.proxy.clear();
    f.run(&f.export_args("a.tar.zst", &[])).success();
    f.check_archive("a.tar.zst");
}

/// Two exports share the cache. One that finishes with `--cache-max-size 0` while the other is still
/// downloading prunes nothing (it would remove blobs from under the other), and the other completes; once
/// alone, the next export prunes.
#[test]
fn an_export_does_not_prune_the_cache_under_another_running_export() {
    let f = faulty_source(80);
    let layer = f.layer();
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::Hold, 1);
    let args = f.export_args("a.tar.zst", &[]);
    let first =
        f.ws.command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    assert!(f.proxy.wait_held(), "the first export never reached the held blob");

    let nginx = f.set.images.iter().find(|i| i.repo == "library/nginx").unwrap();
    let second = |out: &str| {
        f.ws.bundle(&["-v", "export", "--image", &nginx.reference(&f.src.host()), "-o", out, "--cache-max-size", "0"])
            .success()
    };
    let r = second("n.tar.zst");
    assert!(r.stderr.contains("not pruned: another export is using it"), "{}", r.stderr);
    assert!(!r.stderr.contains("Pruned the blob cache"), "{}", r.stderr);

    f.proxy.release();
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    f.check_archive("a.tar.zst");

    let r = second("n2.tar.zst");
    assert!(r.stderr.contains("Pruned the blob cache"), "{}", r.stderr);
}

#[test]
fn a_stalled_response_times_out_and_is_retried() {
    let f = faulty_source(77);
    let layer = f.layer();
    // The first GET of the layer never gets an answer: the read timeout ends that attempt, the retry succeeds.
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::Hold, 1);
    let mut args = vec!["--read-timeout".to_string(), "1".to_string()];
    args.extend(f.export_args("a.tar.zst", &["--no-cache"]));
    f.run(&args).success();
    assert_eq!(f.proxy.count("GET", &format!("/blobs/{layer}")), 2);
    f.check_archive("a.tar.zst");
}

#[test]
fn export_survives_a_registry_that_dies_and_comes_back() {
    let f = faulty_source(78);
    // Requests meet a dead registry (connections closed unanswered) for a while, then it is back: within the
    // retry budget (--retries 3, so three dropped attempts of the same request are survivable).
    f.proxy.add("GET", "/", Fault::Drop, 3);
    f.run(&f.export_args("a.tar.zst", &[])).success();
    f.check_archive("a.tar.zst");
}

#[test]
fn import_honours_429_retries_stalls_and_never_accepts_a_corrupted_upload() {
    let f = faulty_source(79);
    f.ws.export(&f.set.images.iter().map(|i| i.reference(&f.src.host())).collect::<Vec<_>>(), "s.tar.zst");
    let dst = Registry::start();
    let proxy = FaultProxy::start(dst.port);
    proxy.add("POST", "/blobs/uploads/", Fault::Status(429, Some(1)), 1);
    proxy.add("HEAD", "/manifests/", Fault::Hold, 1);
    // One corrupted byte in an upload: the registry refuses the blob, the import fails, nothing wrong is kept.
    proxy.add("PUT", "/blobs/uploads/", Fault::CorruptUpload(100), 1);
    // One request at a time, so the faults are met in order (the held probe, the 429'd upload start, the corrupted
    // upload) and the last one ends the import: a concurrent import could end on the corruption while the 429 wait
    // is still running.
    let args = ["--read-timeout", "1", "import", "-d", &proxy.host(), "s.tar.zst", "--concurrency", "1"];
    let r = f.ws.bundle(&args).failure();
    assert!(r.stderr.contains("run the same command again"), "{}", r.stderr);
    // It is the corrupted upload that ends the import, and the error names that blob.
    let (corrupted, _) = proxy.retry_of(|f| matches!(f, Fault::CorruptUpload(_))).expect("no upload was corrupted");
    let digest = upload_digest(&corrupted.path);
    assert!(r.stderr.contains(&digest), "the failure does not name the corrupted blob {digest}:\n{}", r.stderr);
    // The 429'd request was sent again, no sooner than its Retry-After said; the held one was given up and retried.
    assert_waited_retry_after(&proxy, 1);
    let (held, retry) = proxy.retry_of(|f| matches!(f, Fault::Hold)).expect("no request was held");
    assert!(retry.is_some(), "the held {} {} was never retried", held.method, held.path);
    proxy.release();
    // The re-run completes, and every manifest at the destination has the source digest.
    f.ws.bundle(&["import", "-d", &proxy.host(), "s.tar.zst"]).success();
    for img in &f.set.images {
        let (bytes, _) = get_manifest(&dst.base_url(), &img.repo, &img.tag).unwrap();
        assert_eq!(sha256(&bytes), img.root.digest);
        for b in &img.blobs {
            assert_eq!(get_blob(&dst.base_url(), &img.repo, &b.digest).map(|x| sha256(&x)), Some(b.digest.clone()));
        }
    }
    assert!(proxy.seen.lock().unwrap().iter().filter(|s| s.faulted()).count() >= 3);
}

/// The first request answered 429 with `Retry-After: seconds` was sent again, and not before that wait.
#[track_caller]
fn assert_waited_retry_after(proxy: &FaultProxy, seconds: u64) {
    let (first, retry) =
        proxy.retry_of(|f| matches!(f, Fault::Status(429, Some(_)))).expect("no request was answered 429");
    let retry = retry.unwrap_or_else(|| panic!("the 429'd {} {} was never sent again", first.method, first.path));
    let waited = retry.at.duration_since(first.at);
    assert!(
        waited >= std::time::Duration::from_secs(seconds),
        "the 429'd {} {} was sent again after {waited:?}, before its Retry-After of {seconds} s",
        first.method,
        first.path
    );
}

/// The digest an upload's PUT completes (`…/blobs/uploads/ID?…digest=sha256%3A…`).
fn upload_digest(path: &str) -> String {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let value = query.split('&').find_map(|kv| kv.strip_prefix("digest=")).expect("an upload PUT names its digest");
    value.replace("%3A", ":").replace("%3a", ":")
}

#[test]
fn sigterm_during_import_then_a_rerun_completes() {
    let f = faulty_source(80);
    f.ws.export(&f.set.images.iter().map(|i| i.reference(&f.src.host())).collect::<Vec<_>>(), "s.tar.zst");
    let dst = Registry::start();
    let proxy = FaultProxy::start(dst.port);
    proxy.add("PUT", "/blobs/uploads/", Fault::Hold, 1);
    let child =
        f.ws.command(&["import", "-d", &proxy.host(), "s.tar.zst"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    assert!(proxy.wait_held(), "the import never reached an upload");
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    proxy.release();
    f.ws.bundle(&["import", "-d", &proxy.host(), "s.tar.zst"]).success();
    for img in &f.set.images {
        let (bytes, _) = get_manifest(&dst.base_url(), &img.repo, &img.tag).unwrap();
        assert_eq!(sha256(&bytes), img.root.digest);
    }
}

/// Bytes per chunk in the chunked-upload tests (BUNDLE_UPLOAD_CHUNK_SIZE): the 5 MiB shared layer goes up in five.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Every blob of the sample set, by digest, with its size.
fn blob_sizes(set: &SampleSet) -> std::collections::BTreeMap<String, usize> {
    set.images.iter().flat_map(|i| i.blobs.iter().map(|b| (b.digest.clone(), b.bytes.len()))).collect()
}

/// `/v2/REPO/blobs/uploads/UUID` of an upload request (its session, without the state the registry adds).
fn session_of(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// A blob larger than a chunk goes up in PATCHes; one cut midway is resumed in the same session from the offset the
/// registry reports: the import finishes, what was sent in vain is less than a chunk, the digests are right.
#[test]
fn a_big_upload_cut_midway_resumes_from_the_registry_offset_in_chunks() {
    let mut f = faulty_source_with(81, 5 << 20);
    f.ws.export(&f.set.images.iter().map(|i| i.reference(&f.src.host())).collect::<Vec<_>>(), "s.tar.zst");
    let dst = Registry::start();
    let proxy = FaultProxy::start(dst.port);
    proxy.add_after("PATCH", "/blobs/uploads/", 2, Fault::CutUpload(300 << 10), 1);
    f.ws.env("BUNDLE_UPLOAD_CHUNK_SIZE", "1MiB");
    f.ws.bundle(&["import", "-d", &proxy.host(), "s.tar.zst", "--concurrency", "1"]).success();
    for img in &f.set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    let seen = proxy.requests();
    let cut = seen.iter().find(|s| s.faulted()).expect("a PATCH was cut");
    assert_eq!(cut.method, "PATCH");
    assert!(cut.length <= UPLOAD_CHUNK, "a chunk of {} bytes", cut.length);
    let session = session_of(&cut.path);
    let in_session = |s: &&Seen| session_of(&s.path) == session;
    // The resume asked the registry where the upload stands, and stayed in the session.
    assert!(seen.iter().filter(in_session).any(|s| s.method == "GET" && s.at >= cut.at), "no upload status asked");
    let put = seen.iter().filter(in_session).find(|s| s.method == "PUT").expect("the session was completed");
    assert_eq!(put.length, 0, "the blob was not sent in chunks");
    let sizes = blob_sizes(&f.set);
    let size = sizes[&upload_digest(&put.path)];
    assert!(size > UPLOAD_CHUNK, "a blob of {size} bytes needs no chunks");
    // Every byte of the blob reached the registry once: the PATCHes that got through carry exactly its size.
    let delivered: usize =
        seen.iter().filter(in_session).filter(|s| s.method == "PATCH" && !s.faulted()).map(|s| s.length).sum();
    assert_eq!(delivered, size);
    // Every blob larger than a chunk went up in chunks, no request larger than a chunk.
    assert!(seen.iter().all(|s| s.length <= UPLOAD_CHUNK.max(64 << 10)), "a request larger than a chunk");
}

/// A blob past 4 GiB (the layers of AI and CUDA images run to 3–10 GiB), exported, then imported in the default
/// 64 MiB chunks through a proxy that cuts the chunk starting at exactly 4 GiB midway: the upload resumes in its
/// session from the offset the registry reports (2^32, which a 32-bit offset would wrap to 0), what was sent in vain
/// is less than a chunk, and the blob read back from the destination has the source's digest.
#[test]
fn a_blob_of_several_gib_cut_at_4_gib_resumes_from_the_registry_offset_and_lands_whole() {
    const CHUNK: u64 = 64 << 20;
    // The cut chunk is a whole one, and one more follows it.
    let size = (4u64 << 30) + (80 << 20);
    // Both registries' storage, the archive, and what staging may write: said plainly rather than as a failed write.
    let tmp = std::env::temp_dir();
    let free = free_bytes(&tmp);
    assert!(
        free > 3 * size,
        "this test needs {} GiB free under {}, which has {} GiB",
        (3 * size) >> 30,
        tmp.display(),
        free >> 30
    );
    let src = Registry::start();
    let layer = BigLayer::new(size, 84);
    let manifest = Pusher::new(&src.base_url()).big_image(&src.storage(), "ai/model-server", "1.0", &layer);
    let ws = Workspace::new();
    let image = format!("{}/ai/model-server:1.0", src.host());
    ws.bundle(&["export", "--no-cache", "--image", &image, "-o", "big.tar.zst"]).success();
    let archive = std::fs::metadata(ws.path("big.tar.zst")).unwrap().len();
    assert!(archive < size / 4, "the archive of the stamped layer is {archive} bytes: it should compress");
    let dst = Registry::start();
    let proxy = FaultProxy::start(dst.port);
    let at_4_gib = ((4u64 << 30) / CHUNK) as usize;
    proxy.add_after("PATCH", "/blobs/uploads/", at_4_gib, Fault::CutUpload(20 << 20), 1);
    ws.bundle(&["import", "-d", &proxy.host(), "big.tar.zst", "--concurrency", "1"]).success();

    let seen = proxy.requests();
    let cut = seen.iter().find(|s| s.faulted()).expect("a PATCH was cut");
    assert_eq!(cut.method, "PATCH");
    assert_eq!(cut.content_range, Some(format!("{}-{}", 4u64 << 30, (4u64 << 30) + CHUNK - 1)));
    assert!(cut.length as u64 <= CHUNK, "a chunk of {} bytes", cut.length);
    let session = session_of(&cut.path);
    let in_session = |s: &&Seen| session_of(&s.path) == session;
    assert!(seen.iter().filter(in_session).any(|s| s.method == "GET" && s.at >= cut.at), "no upload status asked");
    let resumed = seen
        .iter()
        .filter(in_session)
        .find(|s| s.method == "PATCH" && s.at > cut.at)
        .expect("the upload went on in its session");
    assert_eq!(
        resumed.content_range.as_deref().and_then(|r| r.split('-').next()),
        Some((4u64 << 30).to_string().as_str()),
        "the upload resumed elsewhere than the registry's offset"
    );
    let delivered: u64 =
        seen.iter().filter(in_session).filter(|s| s.method == "PATCH" && !s.faulted()).map(|s| s.length as u64).sum();
    assert_eq!(delivered, size, "every byte of the blob reached the registry exactly once");

    let (bytes, _) = get_manifest(&dst.base_url(), "ai/model-server", "1.0").expect("the image landed");
    assert_eq!(sha256(&bytes), manifest.digest);
    assert_eq!(stream_digest(&dst.base_url(), "ai/model-server", &layer.digest), (layer.digest.clone(), size));
}

/// Bytes free for an unprivileged user on the filesystem of `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the struct it is given and reads a NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut s) }, 0, "statvfs {}", dir.display());
    s.f_bavail as u64 * s.f_frsize as u64
}

/// A registry that refuses PATCH gets each big blob in one PUT instead, and the import finishes.
#[test]
fn a_registry_that_refuses_chunks_gets_each_big_blob_in_one_put() {
    let mut f = faulty_source_with(82, 3 << 20);
    f.ws.export(&f.set.images.iter().map(|i| i.reference(&f.src.host())).collect::<Vec<_>>(), "s.tar.zst");
    let dst = Registry::start();
    let proxy = FaultProxy::start(dst.port);
    proxy.add("PATCH", "/blobs/uploads/", Fault::Status(405, None), usize::MAX);
    f.ws.env("BUNDLE_UPLOAD_CHUNK_SIZE", "1MiB");
    f.ws.bundle(&["import", "-d", &proxy.host(), "s.tar.zst"]).success();
    for img in &f.set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
    let seen = proxy.requests();
    let sizes = blob_sizes(&f.set);
    let big: Vec<&String> = sizes.iter().filter(|(_, s)| **s > UPLOAD_CHUNK).map(|(d, _)| d).collect();
    assert!(!big.is_empty());
    let puts: Vec<&Seen> = seen.iter().filter(|s| s.method == "PUT" && s.path.contains("/blobs/uploads/")).collect();
    for d in big {
        let put = puts.iter().find(|s| &upload_digest(&s.path) == d).unwrap_or_else(|| panic!("{d} not uploaded"));
        assert_eq!(put.length, sizes[d], "{d} did not go up in one PUT");
    }
    assert_eq!(
        seen.iter().filter(|s| s.method == "PATCH").count(),
        sizes.values().filter(|s| **s > UPLOAD_CHUNK).count()
    );
}

/// Pieces of the downloads in pieces tests (`BUNDLE_DOWNLOAD_PIECE_SIZE`).
const PIECE: usize = 1 << 20;
/// A wire that caps each connection well below loopback, so that pieces are worth it (`WirePace`).
const CAPPED_WIRE: usize = 16 << 20;

/// `bytes=A-B` → (A, B + 1); an open range (`bytes=A-`) → (A, None).
fn range_of(s: &Seen) -> Option<(usize, Option<usize>)> {
    let (a, b) = s.range.as_deref()?.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, if b.is_empty() { None } else { Some(b.parse::<usize>().ok()? + 1) }))
}

/// Through a wire that caps each connection, a big blob starts as one stream and, once that stream shows the wire
/// sets the pace, the rest comes as several `Range` requests at once (one of them unanswered while the others are
/// asked), covering the rest of the blob exactly once, hashed in order: the archive holds the right digest.
#[test]
fn a_big_blob_on_a_capped_wire_comes_down_in_parallel_range_pieces_and_keeps_its_digest() {
    let mut f = faulty_source_with(83, 6 * PIECE);
    f.ws.env("BUNDLE_DOWNLOAD_PIECE_SIZE", "1MiB");
    f.proxy.cap_each_connection(CAPPED_WIRE);
    let layer = f.layer();
    let path = format!("/blobs/{layer}");
    // The first request is the one stream; the second, the first piece.
    f.proxy.add_after("GET", &path, 1, Fault::Hold, 1);
    let args = f.export_args("a.tar.zst", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child =
        f.ws.command(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(f.proxy.wait_held(), "the export never asked for the layer in pieces");
    // While one piece is held unanswered, the others of the blob are asked for (bounded wait).
    let is_piece = |s: &Seen| matches!(range_of(s), Some((_, Some(_))));
    let others = || f.proxy.requests().iter().filter(|s| s.path.contains(&path) && is_piece(s) && !s.faulted()).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while others() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let in_parallel = others();
    f.proxy.release();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(in_parallel >= 3, "only {in_parallel} other pieces while one piece was held");
    let gets: Vec<Seen> =
        f.proxy.requests().into_iter().filter(|s| s.method == "GET" && s.path.contains(&path)).collect();
    assert_eq!(range_of(&gets[0]), Some((0, None)), "the blob did not start as one stream asking for bytes=0-");
    let mut pieces: Vec<(usize, usize)> = gets[1..]
        .iter()
        .map(|s| match range_of(s) {
            Some((a, Some(b))) => (a, b),
            _ => panic!("a later request of the layer that is not a piece: {:?}", s.range),
        })
        .collect();
    pieces.sort();
    let size = blob_sizes(&f.set)[&layer];
    // The stream brought at least its two pieces' worth; the pieces bring the rest, each byte once.
    let from = pieces[0].0;
    assert!((2 * PIECE..size).contains(&from), "the pieces start at {from}");
    assert_eq!(pieces.len(), (size - from).div_ceil(PIECE), "{pieces:?}");
    for (i, (a, b)) in pieces.iter().enumerate() {
        assert_eq!(
            (*a, *b),
            (from + i * PIECE, (from + (i + 1) * PIECE).min(size)),
            "the pieces do not cover the rest of the blob once: {pieces:?}"
        );
    }
    f.check_archive("a.tar.zst");
}

/// A registry that ignores `Range` (200 with the whole body) gets each big blob as one stream: the first one's
/// answer says so, and no piece is asked for.
#[test]
fn a_registry_that_ignores_range_gets_each_big_blob_as_one_stream() {
    let mut f = faulty_source_with(84, 6 * PIECE);
    f.ws.env("BUNDLE_DOWNLOAD_PIECE_SIZE", "1MiB");
    // Slow enough that pieces would be asked for, if Range were answered.
    f.proxy.cap_each_connection(CAPPED_WIRE);
    f.proxy.add("GET", "/blobs/sha256:", Fault::IgnoreRange, usize::MAX);
    let args = f.export_args("a.tar.zst", &["--concurrency", "1"]);
    f.run(&args).success();
    f.check_archive("a.tar.zst");
    let sizes = blob_sizes(&f.set);
    let big: Vec<&String> = sizes.iter().filter(|(_, s)| **s > 2 * PIECE).map(|(d, _)| d).collect();
    assert!(big.len() >= 2, "the sample needs two blobs big enough for pieces: {sizes:?}");
    let seen = f.proxy.requests();
    let gets = |d: &str| -> Vec<&Seen> { seen.iter().filter(|s| s.method == "GET" && s.path.ends_with(d)).collect() };
    // The first big blob asked for: one stream asking for `bytes=0-`, answered 200 and whole; the others: one
    // stream each, without a Range header.
    let first = big.iter().min_by_key(|d| gets(d)[0].at).unwrap();
    let of_first = gets(first);
    assert_eq!(of_first.len(), 1, "{:?}", of_first.iter().map(|s| &s.range).collect::<Vec<_>>());
    assert_eq!(range_of(of_first[0]), Some((0, None)));
    for d in big.iter().filter(|d| *d != first) {
        let g = gets(d);
        assert_eq!((g.len(), g[0].range.as_deref()), (1, None), "{d} was asked for with Range after Range was ignored");
    }
}

/// A piece cut midway ends the pieces: the rest of the blob comes as one stream from the first byte not yet
/// hashed (a piece boundary), and the digest is right.
#[test]
fn a_piece_cut_midway_ends_the_pieces_and_the_rest_comes_as_one_stream() {
    let mut f = faulty_source_with(85, 6 * PIECE);
    f.ws.env("BUNDLE_DOWNLOAD_PIECE_SIZE", "1MiB");
    f.proxy.cap_each_connection(CAPPED_WIRE);
    let layer = f.layer();
    let path = format!("/blobs/{layer}");
    f.proxy.add_after("GET", &path, 2, Fault::ResetAfter(300 << 10), 1);
    let args = f.export_args("a.tar.zst", &[]);
    f.run(&args).success();
    f.check_archive("a.tar.zst");
    let seen = f.proxy.requests();
    let cut = seen.iter().find(|s| s.faulted()).expect("a piece was cut");
    assert!(matches!(range_of(cut), Some((_, Some(_)))), "the cut request was not a piece: {:?}", cut.range);
    // After the cut: one stream, open-ended, from a piece boundary (or from the start, with no Range).
    let stream: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.contains(&path) && s.at > cut.at && !matches!(range_of(s), Some((_, Some(_)))))
        .collect();
    assert_eq!(
        stream.len(),
        1,
        "{:?}",
        seen.iter().filter(|s| s.path.contains(&path)).map(|s| &s.range).collect::<Vec<_>>()
    );
    let starts: Vec<usize> = seen
        .iter()
        .filter(|s| s.path.contains(&path))
        .filter_map(|s| match range_of(s) {
            Some((a, Some(_))) => Some(a),
            _ => None,
        })
        .collect();
    match range_of(stream[0]) {
        Some((from, None)) => assert!(starts.contains(&from), "the stream starts mid-piece: {from} ({starts:?})"),
        other => panic!("{other:?}"),
    }
}

/// Without a cache, a big layer the archive writer follows closely is handed to it chunk by chunk and never
/// staged: held 12 MiB into its download, with the writer caught up, the staged file holds (allocated on the
/// disk) almost none of those bytes, where a staging copy would hold all of them. The archive is whole, with
/// pieces off and with pieces on.
#[test]
fn a_no_cache_export_hands_a_big_layer_to_the_archive_without_staging_it() {
    const BIG: usize = 16 << 20;
    const HOLD: usize = 12 << 20;
    // One image whose layer sorts before its config, so the writer follows the layer from its first byte.
    let img = (0..64)
        .map(|seed| image(&[random_layer_with(BIG, 9100 + seed, flate2::Compression::none())], "amd64", false))
        .find(|img| img.layers[0].digest < img.config.digest)
        .expect("a seed whose layer sorts first");
    let src = Registry::start();
    Pusher::new(&src.base_url()).image("big/layer", "1", &img);
    let proxy = FaultProxy::start(src.port);
    let mut f = Faulty {
        ws: Workspace::new(),
        src,
        proxy,
        set: SampleSet { images: vec![sample_single("big/layer", "1", &img)] },
    };
    let layer = img.layers[0].digest.clone();
    f.ws.env("BUNDLE_DOWNLOAD_PIECE_SIZE", "1GiB");
    f.proxy.add("GET", &format!("/blobs/{layer}"), Fault::CorruptThenHold { at: usize::MAX, hold_after: HOLD }, 1);
    std::fs::create_dir(f.ws.path("staging")).unwrap();
    let args = f.export_args("a.tar.zst", &["--no-cache", "--tmp-dir", "staging"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child =
        f.ws.command(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(f.proxy.wait_held(), "the export never got 12 MiB into the layer");
    // Wait (bounded) until the temporary archive holds 8 MiB: the writer has caught up with the download.
    let archive_len = || partial_archive_len(&f.ws, "a.tar.zst");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while archive_len() < (8 << 20) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let in_archive = archive_len();
    // What the staged copy of the layer occupies on the disk (its blocks, not its length: a file with holes).
    let staged: Vec<(String, u64)> = files_under(&f.ws.path("staging"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(layer.trim_start_matches("sha256:")))
        .map(|p| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&p).unwrap();
            (p.display().to_string(), m.blocks() * 512)
        })
        .collect();
    f.proxy.release();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(in_archive >= 8 << 20, "the writer did not follow the download ({in_archive} bytes)");
    assert_eq!(staged.len(), 1, "one staged file of the layer: {staged:?}");
    assert!(staged[0].1 <= 4 << 20, "{} bytes of the layer were staged on the disk, of 12 MiB received", staged[0].1);
    assert_eq!(f.proxy.count("GET", &format!("/blobs/{layer}")), 1, "the layer was downloaded once");
    assert!(listing(&f.ws.path("staging")).is_empty(), "the staging directory is left empty");
    f.check_archive("a.tar.zst");

    // With pieces (a capped wire), handed over in order as well.
    f.ws.env("BUNDLE_DOWNLOAD_PIECE_SIZE", "1MiB");
    f.proxy.clear();
    f.proxy.cap_each_connection(CAPPED_WIRE);
    f.run(&f.export_args("b.tar.zst", &["--no-cache", "--tmp-dir", "staging"])).success();
    assert!(f.proxy.count("GET", &format!("/blobs/{layer}")) > 4, "the layer came down in pieces");
    f.check_archive("b.tar.zst");
}

/// Every file under `dir`, at any depth (a bounded walk: the staging directory is two levels deep).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { dirs.push(path) } else { found.push(path) }
        }
    }
    found
}

/// The length of the temporary archive an export to `out` is writing (`.OUT.*.partial`), 0 if there is none.
fn partial_archive_len(ws: &Workspace, out: &str) -> usize {
    listing(ws.dir.path())
        .iter()
        .filter(|n| n.starts_with(&format!(".{out}.")) && n.ends_with(".partial"))
        .map(|n| std::fs::metadata(ws.path(n)).map_or(0, |m| m.len() as usize))
        .max()
        .unwrap_or(0)
}
