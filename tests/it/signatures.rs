//! Trust across the gap. Vendor signatures: images signed the way cosign signs them (its simple-signing payload,
//! the `dev.cosignproject.cosign/signature` annotation, under `sha256-<hex>.sig` or as an OCI 1.1 referrer), with
//! openssl doing the ECDSA and Ed25519, are checked before anything is written; every kind of failure is named.
//! The bundle's own signature: made by bundle, checked by openssl and `ssh-keygen -Y verify` (never by bundle
//! alone), and required by import before anything is pushed.

use std::path::{Path, PathBuf};

use crate::harness::*;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const COSIGN_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

#[track_caller]
fn run(ws: &Workspace, program: &str, args: &[&str]) -> String {
    succeeded(&format!("{program} {}", args.join(" ")), &bounded(program, args, &ws.path(".")))
}

/// The tool's own answer (exit status and both streams), for checks that must fail.
fn run_status(ws: &Workspace, program: &str, args: &[&str]) -> (bool, String) {
    let out = bounded(program, args, &ws.path("."));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[derive(Clone, Copy, PartialEq)]
enum Algorithm {
    EcdsaP256,
    Ed25519,
}

/// A key pair made by openssl: NAME.key (PKCS#8 PEM) and NAME.pub (SubjectPublicKeyInfo PEM).
struct KeyPair {
    key: PathBuf,
    public: PathBuf,
    algorithm: Algorithm,
}

impl KeyPair {
    fn new(ws: &Workspace, name: &str, algorithm: Algorithm) -> KeyPair {
        let (key, public) = (format!("{name}.key"), format!("{name}.pub"));
        match algorithm {
            Algorithm::EcdsaP256 => run(
                ws,
                "openssl",
                &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key],
            ),
            Algorithm::Ed25519 => run(ws, "openssl", &["genpkey", "-algorithm", "ed25519", "-out", &key]),
        };
        run(ws, "openssl", &["pkey", "-in", &key, "-pubout", "-out", &public]);
        KeyPair { key: ws.path(&key), public: ws.path(&public), algorithm }
    }

    /// `sha256:` of the DER SubjectPublicKeyInfo, by openssl and sha2 (what bundle.json must name the key by).
    fn fingerprint(&self, ws: &Workspace) -> String {
        let der = ws.path(&format!("{}.der", self.public.file_name().unwrap().to_string_lossy()));
        let (p, d) = (self.public.to_string_lossy(), der.to_string_lossy());
        run(ws, "openssl", &["pkey", "-pubin", "-in", &p, "-outform", "DER", "-out", &d]);
        sha256(&std::fs::read(&der).unwrap())
    }

    /// base64 of openssl's signature over `message`: DER ECDSA over SHA-256, or Ed25519 (what cosign makes).
    fn sign(&self, ws: &Workspace, message: &[u8]) -> String {
        let input = ws.path(&format!("msg-{}", fastrand::u64(..)));
        std::fs::write(&input, message).unwrap();
        let output = input.with_extension("sig");
        let (k, i, o) = (self.key.to_string_lossy(), input.to_string_lossy(), output.to_string_lossy());
        match self.algorithm {
            Algorithm::EcdsaP256 => run(ws, "openssl", &["dgst", "-sha256", "-sign", &k, "-out", &o, &i]),
            Algorithm::Ed25519 => {
                run(ws, "openssl", &["pkeyutl", "-sign", "-rawin", "-inkey", &k, "-in", &i, "-out", &o])
            }
        };
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&output).unwrap())
    }
}

/// cosign's simple-signing payload for `digest`, as `cosign sign` writes it.
fn payload(reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// Where a signature is attached.
#[derive(Clone, Copy)]
enum Attach {
    /// `sha256-<hex>.sig`.
    CosignTag,
    /// An OCI 1.1 referrer (cosign's `--registry-referrers-mode=oci-1-1`), listed in the referrers tag schema's
    /// index, as a registry without the Referrers API keeps it.
    Referrer,
}

/// A cosign signature manifest over `subject` (`digest`, `size`), signing `payload`, with the signature
/// annotation `signature`; pushed to `repo` and attached.
#[allow(clippy::too_many_arguments)]
fn push_signature(
    p: &Pusher,
    repo: &str,
    subject: (&str, &str, usize),
    payload: &[u8],
    signature: &str,
    attach: Attach,
) -> Blob {
    let (digest, media_type, size) = subject;
    let layer = Blob::new(payload.to_vec());
    // cosign's config: an empty image whose one "layer" is the payload.
    let config = Blob::new(
        format!(
            r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{}}}}"#,
            layer.digest
        )
        .into_bytes(),
    );
    p.blob(repo, &config);
    p.blob(repo, &layer);
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.bytes.len()},
        "layers": [{
            "mediaType": SIMPLE_SIGNING, "digest": layer.digest, "size": layer.bytes.len(),
            "annotations": {SIGNATURE_ANNOTATION: signature},
        }],
    });
    let tag = digest.replacen(':', "-", 1);
    match attach {
        Attach::CosignTag => {
            let m = Blob::new(serde_json::to_vec(&m).unwrap());
            p.manifest(repo, &format!("{tag}.sig"), OCI_MANIFEST, &m.bytes);
            m
        }
        Attach::Referrer => {
            m["artifactType"] = serde_json::json!(COSIGN_ARTIFACT);
            m["subject"] = serde_json::json!({"mediaType": media_type, "digest": digest, "size": size});
            let m = Blob::new(serde_json::to_vec(&m).unwrap());
            p.manifest(repo, &m.digest, OCI_MANIFEST, &m.bytes);
            let index = serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [{"mediaType": OCI_MANIFEST, "digest": m.digest, "size": m.bytes.len(), "artifactType": COSIGN_ARTIFACT}],
            });
            p.manifest(repo, &tag, OCI_INDEX, &serde_json::to_vec(&index).unwrap());
            m
        }
    }
}

/// Sign `subject` of `image` (at `host`) with `key` over `signed_digest` (the subject's own, unless a test lies).
#[allow(clippy::too_many_arguments)]
fn sign_manifest(
    ws: &Workspace,
    p: &Pusher,
    host: &str,
    image: &SampleImage,
    subject: &Blob,
    media_type: &str,
    key: &KeyPair,
    signed_digest: &str,
    attach: Attach,
) {
    let body = payload(&format!("{host}/{}", image.repo), signed_digest);
    let signature = key.sign(ws, &body);
    push_signature(p, &image.repo, (&subject.digest, media_type, subject.bytes.len()), &body, &signature, attach);
}

fn sign_root(ws: &Workspace, p: &Pusher, host: &str, image: &SampleImage, key: &KeyPair, attach: Attach) {
    sign_manifest(ws, p, host, image, &image.root, &image.root_media_type, key, &image.root.digest, attach);
}

fn export_args<'a>(refs: &'a [String], keys: &'a [&'a Path], out: &'a str) -> Vec<String> {
    let mut args = vec!["export".to_string(), "-o".into(), out.into()];
    for r in refs {
        args.extend(["--image".into(), r.clone()]);
    }
    for k in keys {
        args.extend(["--verify-signatures".into(), k.to_string_lossy().into_owned()]);
    }
    args
}

fn bundle(ws: &Workspace, args: &[String]) -> Run {
    ws.bundle(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn vendor_signatures_verify_by_tag_and_referrer_and_are_recorded_and_shown() {
    let src = Registry::start();
    let ws = Workspace::new();
    let set = seed_sample(&src.base_url(), 301, 16 * 1024);
    let (host, p) = (src.host(), Pusher::new(&src.base_url()));
    let (ec, ed) =
        (KeyPair::new(&ws, "vendor-ec", Algorithm::EcdsaP256), KeyPair::new(&ws, "vendor-ed", Algorithm::Ed25519));
    let [agent, wait, nginx, reloader] = &set.images[..] else { panic!("four sample images") };
    sign_root(&ws, &p, &host, agent, &ec, Attach::CosignTag);
    // A platform manifest signed too, as a referrer: it must verify as well.
    let amd = &agent.manifests[1];
    sign_manifest(&ws, &p, &host, agent, amd, OCI_MANIFEST, &ec, &amd.digest, Attach::Referrer);
    sign_root(&ws, &p, &host, wait, &ed, Attach::CosignTag);
    sign_root(&ws, &p, &host, nginx, &ec, Attach::Referrer);
    sign_root(&ws, &p, &host, reloader, &ed, Attach::CosignTag);

    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&host)).collect();
    let r = bundle(&ws, &export_args(&refs, &[&ec.public, &ed.public], "signed.tar.zst")).success();
    assert!(r.stderr.contains("Signatures verified: 4 images, 5 manifests, by 2 of the 2 keys given"), "{}", r.stderr);

    let listing = ws.bundle(&["inspect", "--json", "signed.tar.zst"]).success();
    let v: serde_json::Value = serde_json::from_str(&listing.stdout).unwrap();
    assert_eq!(v["formatVersion"], 5);
    let mut recorded: Vec<(String, String, String, String)> = v["signatures"]
        .as_array()
        .expect("signatures in the listing")
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap().to_string();
            (f("image"), f("manifest"), f("key"), f("algorithm"))
        })
        .collect();
    recorded.sort();
    let (ec_id, ed_id) = (ec.fingerprint(&ws), ed.fingerprint(&ws));
    let mut expected = vec![
        (refs[0].clone(), agent.root.digest.clone(), ec_id.clone(), "ecdsa-p256".to_string()),
        (refs[0].clone(), amd.digest.clone(), ec_id.clone(), "ecdsa-p256".to_string()),
        (refs[1].clone(), wait.root.digest.clone(), ed_id.clone(), "ed25519".to_string()),
        (refs[2].clone(), nginx.root.digest.clone(), ec_id.clone(), "ecdsa-p256".to_string()),
        (refs[3].clone(), reloader.root.digest.clone(), ed_id, "ed25519".to_string()),
    ];
    expected.sort();
    assert_eq!(recorded, expected);
    let human = ws.bundle(&["inspect", "signed.tar.zst"]).success();
    assert!(human.stdout.contains("vendor signatures checked at export: 5 manifests, by 2 keys"), "{}", human.stdout);
    assert!(
        human.stdout.contains(&format!("{} {}: ecdsa-p256 key {ec_id}", refs[0], agent.root.digest)),
        "{}",
        human.stdout
    );
    // The record is part of what verify proves (bundle.json against the content, version included).
    ws.bundle(&["verify", "signed.tar.zst"]).success();

    // --platform replaces the index with a new one; the vendor signed the original, which is what is checked.
    let mut args = export_args(&refs[..1], &[&ec.public], "amd64.tar.zst");
    args.extend(["--platform".into(), "linux/amd64".into()]);
    bundle(&ws, &args).success();
    let listing = ws.bundle(&["inspect", "--json", "amd64.tar.zst"]).success();
    let v: serde_json::Value = serde_json::from_str(&listing.stdout).unwrap();
    let signed: Vec<&str> =
        v["signatures"].as_array().unwrap().iter().map(|s| s["manifest"].as_str().unwrap()).collect();
    assert_eq!(signed, {
        let mut d = vec![agent.root.digest.as_str(), amd.digest.as_str()];
        d.sort();
        d
    });
    assert_ne!(v["images"][0]["digest"], agent.root.digest.as_str(), "the index was not replaced");
    ws.bundle(&["verify", "amd64.tar.zst"]).success();
}

#[test]
fn unsigned_other_key_other_digest_malformed_and_unsigned_index_are_named_and_nothing_is_written() {
    let src = Registry::start();
    let dst = Registry::start();
    let ws = Workspace::new();
    let set = seed_sample(&src.base_url(), 311, 16 * 1024);
    let (host, p) = (src.host(), Pusher::new(&src.base_url()));
    let vendor = KeyPair::new(&ws, "vendor", Algorithm::EcdsaP256);
    let stranger = KeyPair::new(&ws, "stranger", Algorithm::EcdsaP256);
    let [agent, wait, nginx, reloader] = &set.images[..] else { panic!("four sample images") };
    // agent: only a platform manifest is signed; the index is not.
    let amd = &agent.manifests[1];
    sign_manifest(&ws, &p, &host, agent, amd, OCI_MANIFEST, &vendor, &amd.digest, Attach::CosignTag);
    // wait: signed, by another key.
    sign_root(&ws, &p, &host, wait, &stranger, Attach::CosignTag);
    // nginx: the vendor's key, over a payload naming another image's digest (a signature moved between images).
    sign_manifest(
        &ws,
        &p,
        &host,
        nginx,
        &nginx.root,
        &nginx.root_media_type,
        &vendor,
        &reloader.root.digest,
        Attach::Referrer,
    );
    // reloader: a signature annotation that is not base64.
    let body = payload(&format!("{host}/{}", reloader.repo), &reloader.root.digest);
    let subject = (reloader.root.digest.as_str(), reloader.root_media_type.as_str(), reloader.root.bytes.len());
    push_signature(&p, &reloader.repo, subject, &body, "%%% not base64 %%%", Attach::CosignTag);
    // And an image nobody signed.
    let lone = image(&[random_layer(4096, 319)], "amd64", false);
    p.image("vendor/unsigned", "1.0", &lone);

    let mut refs: Vec<String> = set.images.iter().map(|i| i.reference(&host)).collect();
    refs.push(format!("{host}/vendor/unsigned:1.0"));
    let r = bundle(&ws, &export_args(&refs, &[&vendor.public], "out.tar.zst")).failure();
    let e = &r.stderr;
    assert!(e.contains("5 of 5 images failed the signature check, so nothing was written"), "{e}");
    let line = |image: &str| {
        e.lines().find(|l| l.contains(&format!("- {image} "))).unwrap_or_else(|| panic!("{image} not named:\n{e}"))
    };
    assert!(line(&refs[0]).contains(&format!("index {}): no signature", agent.root.digest)), "{e}");
    assert!(
        line(&refs[0]).contains("its platform manifests carry signatures, but the index that names them all does not"),
        "{e}"
    );
    assert!(line(&refs[1]).contains("signed by another key"), "{e}");
    assert!(
        line(&refs[2]).contains(&format!("the signed payload is for another digest ({})", reloader.root.digest)),
        "{e}"
    );
    assert!(line(&refs[3]).contains("malformed signature"), "{e}");
    assert!(line(&refs[4]).contains("no signature"), "{e}");
    assert!(e.contains(&format!("hint: checked with {}", vendor.fingerprint(&ws))), "{e}");
    assert!(e.contains("cosign sign --recursive"), "{e}");
    let left: Vec<String> = listing(&ws.path(".")).into_iter().filter(|n| n.starts_with("out")).collect();
    assert!(left.is_empty(), "written after a refusal: {left:?}");
    assert!(ws.tmp_leftovers().is_empty(), "{:?}", ws.tmp_leftovers());

    // copy refuses the same way, before the destination is touched.
    let mut args = vec!["copy".to_string(), "-d".into(), dst.host()];
    for r in &refs {
        args.extend(["--image".into(), r.clone()]);
    }
    args.extend(["--verify-signatures".into(), vendor.public.to_string_lossy().into_owned()]);
    let r = bundle(&ws, &args).failure();
    assert!(r.stderr.contains("failed the signature check"), "{}", r.stderr);
    dst.assert_untouched("copy with unsigned images");

    // Keys that cannot check cosign signatures are refused with what to give instead.
    let r = ws
        .bundle(&[
            "export",
            "--image",
            &refs[2],
            "-o",
            "x.tar.zst",
            "--verify-signatures",
            &vendor.key.to_string_lossy(),
        ])
        .failure();
    assert!(r.stderr.contains("it is a private key") && r.stderr.contains("hint:"), "{}", r.stderr);
}

/// A signed export, proven by openssl; its archive altered (with a re-made sidecar, and without), an unsigned
/// archive, and a signature by another key: verify --key and import --require-signature refuse each, and the
/// destination stays untouched.
#[test]
fn bundle_signature_made_by_export_checks_with_openssl_and_guards_import() {
    let src = Registry::start();
    let dst = Registry::start();
    let ws = Workspace::new();
    let set = seed_sample(&src.base_url(), 321, 64 * 1024);
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    let builder = KeyPair::new(&ws, "builder", Algorithm::EcdsaP256);
    let other = KeyPair::new(&ws, "other", Algorithm::EcdsaP256);
    let mut args = export_args(&refs, &[], "b.tar.zst");
    args.extend(["--sign-key".into(), builder.key.to_string_lossy().into_owned()]);
    let r = bundle(&ws, &args).success();
    assert!(r.stderr.contains("Signed ") && r.stderr.contains("b.tar.zst.sig"), "{}", r.stderr);

    // openssl accepts it: cosign's blob signature (base64 of DER ECDSA over SHA-256) of the sidecar's bytes.
    run(&ws, "sh", &["-c", "base64 -d b.tar.zst.sig > b.sig.der"]);
    let ok = run(
        &ws,
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            &builder.public.to_string_lossy(),
            "-signature",
            "b.sig.der",
            "b.tar.zst.sha256",
        ],
    );
    assert!(ok.contains("Verified OK"), "{ok}");
    let (ok, text) = run_status(
        &ws,
        "openssl",
        &["dgst", "-sha256", "-verify", &other.public.to_string_lossy(), "-signature", "b.sig.der", "b.tar.zst.sha256"],
    );
    assert!(!ok, "openssl accepted another key: {text}");

    let r = ws.bundle(&["verify", "b.tar.zst", "--key", &builder.public.to_string_lossy()]).success();
    assert!(r.stdout.contains(&format!("signed by {}", builder.fingerprint(&ws))), "{}", r.stdout);
    let r = ws.bundle(&["verify", "b.tar.zst", "--key", &other.public.to_string_lossy()]).failure();
    assert!(r.stderr.contains("b.tar.zst.sig does not verify with"), "{}", r.stderr);

    // An archive altered after signing, its sidecar re-made to match: the signature no longer covers it.
    std::fs::create_dir(ws.path("altered")).unwrap();
    for f in ["b.tar.zst", "b.tar.zst.sha256", "b.tar.zst.sig"] {
        std::fs::copy(ws.path(f), ws.path(&format!("altered/{f}"))).unwrap();
    }
    let archive = ws.path("altered/b.tar.zst");
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&archive, &bytes).unwrap();
    run(&ws, "sh", &["-c", "cd altered && sha256sum b.tar.zst > b.tar.zst.sha256"]);
    let pubkey = builder.public.to_string_lossy().into_owned();
    let r = ws.bundle(&["verify", "altered/b.tar.zst", "--key", &pubkey]).failure();
    assert!(r.stderr.contains("does not verify with"), "{}", r.stderr);
    let r = ws.bundle(&["import", "altered/b.tar.zst", "-d", &dst.host(), "--require-signature", &pubkey]).failure();
    assert!(r.stderr.contains("does not verify with") && r.stderr.contains("do not import it"), "{}", r.stderr);
    // Altered, the signed sidecar kept: the content no longer matches what was signed.
    std::fs::copy(ws.path("b.tar.zst.sha256"), ws.path("altered/b.tar.zst.sha256")).unwrap();
    let r = ws.bundle(&["import", "altered/b.tar.zst", "-d", &dst.host(), "--require-signature", &pubkey]).failure();
    assert!(r.stderr.contains("does not match its sidecar"), "{}", r.stderr);
    // Unsigned.
    bundle(&ws, &export_args(&refs, &[], "u.tar.zst")).success();
    let r = ws.bundle(&["import", "u.tar.zst", "-d", &dst.host(), "--require-signature", &pubkey]).failure();
    assert!(
        r.stderr.contains("u.tar.zst is not signed: ") && r.stderr.contains("u.tar.zst.sig is missing"),
        "{}",
        r.stderr
    );
    // Signed, by a key the site does not trust.
    let r = ws
        .bundle(&["import", "b.tar.zst", "-d", &dst.host(), "--require-signature", &other.public.to_string_lossy()])
        .failure();
    assert!(r.stderr.contains("does not verify with"), "{}", r.stderr);
    dst.assert_untouched("imports refused for their signatures");

    let r = ws.bundle(&["import", "b.tar.zst", "-d", &dst.host(), "--require-signature", &pubkey]).success();
    assert!(r.stderr.contains("Signature of b.tar.zst verified: signed by"), "{}", r.stderr);
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
}

/// cosign's encrypted `cosign.key`, written by Python (hashlib's scrypt, PyNaCl's secretbox) around the PKCS#8 of
/// `pair`, as go-securesystemslib's `encrypted` package lays it out.
fn cosign_key(ws: &Workspace, pair: &KeyPair, password: &str) -> PathBuf {
    let der = ws.path("cosign-plain.der");
    run(
        ws,
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &pair.key.to_string_lossy(),
            "-outform",
            "DER",
            "-out",
            &der.to_string_lossy(),
        ],
    );
    let script = r#"
import base64, hashlib, json, os, sys
import nacl.secret
der = open(sys.argv[1], 'rb').read()
salt, nonce = os.urandom(32), os.urandom(24)
key = hashlib.scrypt(sys.argv[2].encode(), salt=salt, n=32768, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
box = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
b = lambda x: base64.b64encode(x).decode()
doc = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b(salt)},
       "cipher": {"name": "nacl/secretbox", "nonce": b(nonce)}, "ciphertext": b(box)}
body = base64.encodebytes(json.dumps(doc).encode()).decode()
open(sys.argv[3], 'w').write("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n" + body + "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
"#;
    let out = ws.path("cosign.key");
    let python = venv_python();
    run(ws, &python.to_string_lossy(), &["-c", script, &der.to_string_lossy(), password, &out.to_string_lossy()]);
    std::fs::remove_file(der).unwrap();
    out
}

/// Every volume of a set signed with an OpenSSH key at export (`ssh-keygen -Y verify` accepts each), signed again
/// with cosign's encrypted key by `bundle sign` (openssl accepts each), a wrong password refused with the old
/// signatures left whole, and the set imported with `--require-signature`.
#[test]
fn volumes_signed_with_ssh_and_cosign_keys_check_with_ssh_keygen_and_openssl() {
    let src = Registry::start();
    let dst = Registry::start();
    let mut ws = Workspace::new();
    let set = seed_sample(&src.base_url(), 331, 3 << 20);
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    run(&ws, "ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "builder", "-f", "id_ed25519"]);
    let public = std::fs::read_to_string(ws.path("id_ed25519.pub")).unwrap();
    ws.write("allowed_signers", &format!("builder@site namespaces=\"bundle\" {public}"));

    let mut args = export_args(&refs, &[], "v.tar.zst");
    args.extend(["--volume-size".into(), "2MiB".into(), "--parity".into(), "1".into()]);
    args.extend(["--sign-key".into(), "id_ed25519".into()]);
    bundle(&ws, &args).success();
    let files: Vec<String> = listing(&ws.path("."))
        .into_iter()
        .filter(|n| n.starts_with("v.") && (n.ends_with(".tar.zst") || n.ends_with(".bin")))
        .collect();
    assert!(files.len() >= 3 && files.iter().any(|f| f.ends_with(".bin")), "{files:?}");
    for f in &files {
        let check =
            format!("ssh-keygen -Y verify -f allowed_signers -I builder@site -n bundle -s {f}.sig < {f}.sha256");
        let out = run(&ws, "sh", &["-c", &check]);
        assert!(out.contains("Good \"bundle\" signature for builder@site"), "{f}: {out}");
        let r = ws.bundle(&["verify", f, "--key", "allowed_signers"]).success();
        assert!(r.stdout.contains("signed by SHA256:"), "{}", r.stdout);
    }

    // cosign's own key format, encrypted: the right password signs again, a wrong one changes nothing.
    let pair = KeyPair::new(&ws, "release", Algorithm::EcdsaP256);
    let key = cosign_key(&ws, &pair, "correct horse");
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(ws.path(&format!("{f}.sig"))).unwrap()).collect();
    ws.env("BUNDLE_SIGN_PASSWORD", "wrong horse");
    let mut sign = vec!["sign".to_string(), "--key".into(), key.to_string_lossy().into_owned()];
    sign.extend(files.iter().cloned());
    let r = bundle(&ws, &sign).failure();
    assert!(r.stderr.contains("is encrypted, and the password given does not open it"), "{}", r.stderr);
    assert!(!r.stderr.contains("correct horse") && !r.stderr.contains("wrong horse"), "{}", r.stderr);
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(ws.path(&format!("{f}.sig"))).unwrap()).collect();
    assert_eq!(before, after, "a refused signing changed signatures");
    ws.env("BUNDLE_SIGN_PASSWORD", "correct horse");
    bundle(&ws, &sign).success();
    for f in &files {
        let check = format!(
            "base64 -d {f}.sig > sig.der && openssl dgst -sha256 -verify {} -signature sig.der {f}.sha256",
            pair.public.display()
        );
        assert!(run(&ws, "sh", &["-c", &check]).contains("Verified OK"), "{f}");
    }
    let volumes: Vec<&str> = files.iter().filter(|f| f.ends_with(".tar.zst")).map(String::as_str).collect();
    let (host, pubkey) = (dst.host(), pair.public.to_string_lossy().into_owned());
    let mut import = vec!["import", "-d", host.as_str(), "--require-signature", pubkey.as_str()];
    import.extend(volumes.iter().copied());
    ws.bundle(&import).success();
    for img in &set.images {
        assert_image_at(&dst.base_url(), &img.repo, &img.tag, img);
    }
}

/// An encrypted OpenSSH ecdsa key, its passphrase from BUNDLE_SIGN_PASSWORD, signs what `ssh-keygen -Y verify`
/// accepts; a PEM public key is told apart from an SSH signature.
#[test]
fn encrypted_openssh_ecdsa_key_signs_a_delta_that_ssh_keygen_accepts() {
    let src = Registry::start();
    let mut ws = Workspace::new();
    let set = seed_sample(&src.base_url(), 341, 16 * 1024);
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    bundle(&ws, &export_args(&refs[..2], &[], "base.tar.zst")).success();
    let mut args = export_args(&refs, &[], "delta.tar.zst");
    args.extend(["--since".into(), "base.tar.zst".into()]);
    bundle(&ws, &args).success();
    run(&ws, "ssh-keygen", &["-q", "-t", "ecdsa", "-b", "256", "-N", "s3cret phrase", "-C", "ops", "-f", "id_ecdsa"]);
    ws.env("BUNDLE_SIGN_PASSWORD", "s3cret phrase");
    let r = ws.bundle(&["sign", "delta.tar.zst", "--key", "id_ecdsa"]).success();
    assert!(r.stderr.contains("SSH signature"), "{}", r.stderr);
    let public = std::fs::read_to_string(ws.path("id_ecdsa.pub")).unwrap();
    ws.write("allowed_signers", &format!("ops {public}"));
    let out = run(
        &ws,
        "sh",
        &["-c", "ssh-keygen -Y verify -f allowed_signers -I ops -n bundle -s delta.tar.zst.sig < delta.tar.zst.sha256"],
    );
    assert!(out.contains("Good \"bundle\" signature for ops with ECDSA key"), "{out}");
    ws.bundle(&["verify", "delta.tar.zst", "--key", "id_ecdsa.pub"]).success();
    let pem = KeyPair::new(&ws, "pem", Algorithm::EcdsaP256);
    let r = ws.bundle(&["verify", "delta.tar.zst", "--key", &pem.public.to_string_lossy()]).failure();
    assert!(r.stderr.contains("it is an SSH signature"), "{}", r.stderr);

    // openssl's other EC key files: SEC1 (`ecparam -genkey`), and PKCS#8 encrypted with a password.
    run(&ws, "openssl", &["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "sec1.key"]);
    run(&ws, "openssl", &["pkey", "-in", "sec1.key", "-pubout", "-out", "sec1.pub"]);
    let pem_key = pem.key.to_string_lossy().into_owned();
    run(
        &ws,
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            &pem_key,
            "-passout",
            "pass:s3cret phrase",
            "-out",
            "enc.key",
        ],
    );
    for (key, public) in [("sec1.key", "sec1.pub".to_string()), ("enc.key", pem.public.to_string_lossy().into_owned())]
    {
        ws.bundle(&["sign", "delta.tar.zst", "--key", key]).success();
        let check = format!(
            "base64 -d delta.tar.zst.sig > d.der && openssl dgst -sha256 -verify {public} -signature d.der delta.tar.zst.sha256"
        );
        assert!(run(&ws, "sh", &["-c", &check]).contains("Verified OK"), "{key}");
    }

    // Keys that cannot sign are refused before anything is downloaded, naming what they are.
    run(&ws, "openssl", &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key"]);
    let requests = src.requests().len();
    for (key, says) in [
        ("rsa.key", "neither EC P-256 nor Ed25519"),
        ("missing.key", "cannot read the key"),
        ("sec1.pub", "it is a public key"),
    ] {
        let mut args = export_args(&refs, &[], "never.tar.zst");
        args.extend(["--sign-key".into(), key.into()]);
        let r = bundle(&ws, &args).failure();
        assert!(r.stderr.contains(says) && r.stderr.contains("hint:"), "{key}: {}", r.stderr);
        assert!(!r.stderr.contains("BEGIN"), "key material in the error: {}", r.stderr);
    }
    assert_eq!(src.requests().len(), requests, "the source was asked something before the key was refused");
    assert!(!ws.path("never.tar.zst").exists());
}
