//! Locked-down registries: HTTPS with a private CA and htpasswd (Basic) auth, credentials from each source,
//! and clear errors, without secrets, when credentials are wrong or missing.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::harness::*;

const USER: &str = "importer";
const PASSWORD: &str = "correct-horse-battery";

/// A TLS registry with Basic auth; returns it and the CA's PEM path (inside `ws`).
fn secure_registry(ws: &Workspace) -> (Registry, std::path::PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "bundle test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap().signed_by(&server_key, &issuer).unwrap();

    let ca_path = ws.write("ca.pem", &ca_cert.pem());
    let cert_path = ws.write("server.pem", &server.pem());
    let key_path = ws.write("server-key.pem", &server_key.serialize_pem());
    let hash = bcrypt::hash_with_result(PASSWORD, 4).unwrap().format_for_version(bcrypt::Version::TwoY);
    let htpasswd = ws.write("htpasswd", &format!("{USER}:{hash}\n"));
    let reg = Registry::start_with(RegistryOptions { tls: Some((cert_path, key_path)), htpasswd: Some(htpasswd) });
    (reg, ca_path)
}

/// A plain source registry with one image, exported into `ws/s.tar.zst`.
fn exported_archive(ws: &Workspace) -> (Registry, SampleImage) {
    let src = Registry::start();
    let mut set = seed_sample(&src.base_url(), 31, 8192);
    let img = set.images.remove(2);
    ws.bundle(&["export", "--image", &img.reference(&src.host()), "-o", "s.tar.zst"]).success();
    (src, img)
}

fn config(ws: &Workspace, reg: &Registry, extra: &str) -> String {
    let path = ws.write(
        "registries.toml",
        &format!("[[registry]]\nname = \"{}\"\nendpoint = \"https://127.0.0.1:{}\"\n{extra}", reg.host(), reg.port),
    );
    path.to_string_lossy().into_owned()
}

#[test]
fn import_into_tls_registry_with_private_ca_and_basic_auth() {
    let ws = Workspace::new();
    let (_src, img) = exported_archive(&ws);
    let (dst, ca) = secure_registry(&ws);
    let cfg = config(&ws, &dst, &format!("ca_file = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n", ca.display()));
    ws.bundle(&["--registry-config", &cfg, "import", "-d", &dst.host(), "s.tar.zst"]).success();

    let ca_pem = std::fs::read(&ca).unwrap();
    let http = reqwest::blocking::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()]).build().unwrap();
    let r = http
        .get(format!("{}/v2/{}/manifests/{}", dst.base_url(), img.repo, img.tag))
        .basic_auth(USER, Some(PASSWORD))
        .header("accept", img.root_media_type.as_str())
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(sha256(&r.bytes().unwrap()), img.root.digest);
}

#[test]
fn wrong_credentials_are_a_clear_error_and_the_secret_is_never_printed() {
    let mut ws = Workspace::new();
    let (_src, _) = exported_archive(&ws);
    let (dst, ca) = secure_registry(&ws);
    let cfg = config(&ws, &dst, &format!("ca_file = \"{}\"\n", ca.display()));
    ws.env("DST_REGISTRY_USERNAME", USER);
    ws.env("DST_REGISTRY_PASSWORD", "wrong-s3cret-value");
    let r = ws.bundle(&["--registry-config", &cfg, "-v", "import", "-d", &dst.host(), "s.tar.zst"]).failure();
    assert!(!r.stderr.contains("wrong-s3cret-value") && !r.stdout.contains("wrong-s3cret-value"));
    let stderr = normalise(&r.stderr, &ws, &[&dst]);
    let error: String = stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.starts_with("  Caused by:") || l.starts_with("hint:"))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("wrong_credentials", error);
    assert_eq!(dst.repositories(), Vec::<String>::new());
}

#[test]
fn missing_credentials_say_how_to_provide_them() {
    let ws = Workspace::new();
    let (_src, _) = exported_archive(&ws);
    let (dst, ca) = secure_registry(&ws);
    let cfg = config(&ws, &dst, &format!("ca_file = \"{}\"\n", ca.display()));
    let r = ws.bundle(&["--registry-config", &cfg, "import", "-d", &dst.host(), "s.tar.zst"]).failure();
    assert!(r.stderr.contains("requires authentication and no credentials were found"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: log in with `docker login"), "{}", r.stderr);
}

#[test]
fn an_untrusted_certificate_is_refused_with_a_hint() {
    let ws = Workspace::new();
    let (_src, _) = exported_archive(&ws);
    let (dst, _ca) = secure_registry(&ws);
    let cfg = config(&ws, &dst, &format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\n"));
    let r = ws.bundle(&["--registry-config", &cfg, "import", "-d", &dst.host(), "s.tar.zst", "--retries", "0"]).failure();
    assert!(r.stderr.contains("cannot reach registry"), "{}", r.stderr);
    assert!(r.stderr.contains("ca_file"), "{}", r.stderr);
    assert!(!r.stderr.contains(PASSWORD));
}

#[test]
fn source_credentials_come_from_the_docker_config() {
    let ws = Workspace::new();
    let (reg, ca) = secure_registry(&ws);
    let img = image(&[random_layer(4096, 77)], "amd64", false);
    Pusher::with_tls(&reg.base_url(), &std::fs::read(&ca).unwrap(), USER, PASSWORD).image("private/app", "2.0", &img);
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::create_dir_all(ws.path(".docker")).unwrap();
    ws.write(".docker/config.json", &format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", reg.host()));
    let cfg = config(&ws, &reg, &format!("ca_file = \"{}\"\n", ca.display()));
    let r = ws.bundle(&["--registry-config", &cfg, "export", "--image", &format!("{}/private/app:2.0", reg.host()), "-o", "p.tar.zst"]).success();
    assert!(!r.stderr.contains(PASSWORD));
    let archive = std::fs::read(ws.path("p.tar.zst")).unwrap();
    let tar = zstd::stream::decode_all(&archive[..]).unwrap();
    assert!(!String::from_utf8_lossy(&tar).contains(PASSWORD), "a secret was written into the archive");
    ws.bundle(&["verify", "p.tar.zst"]).success();
}
