//! Locked-down registries: HTTPS with a private CA and htpasswd (Basic) auth, credentials from each source,
//! and clear errors, without secrets, when credentials are wrong or missing.

use rcgen::{CertificateParams, DnType, KeyPair};

use crate::harness::*;

const USER: &str = "importer";
const PASSWORD: &str = "correct-horse-battery";

/// A TLS registry with Basic auth; returns it and the CA's PEM path (inside `ws`).
fn secure_registry(ws: &Workspace) -> (Registry, std::path::PathBuf) {
    let (ca_path, issuer) = test_ca(ws, "ca");
    let (cert_path, key_path) = server_cert(ws, &issuer);
    let hash = bcrypt::hash_with_result(PASSWORD, 4).unwrap().format_for_version(bcrypt::Version::TwoY);
    let htpasswd = ws.write("htpasswd", &format!("{USER}:{hash}\n"));
    let reg = Registry::start_with(RegistryOptions {
        tls: Some((cert_path, key_path)),
        htpasswd: Some(htpasswd),
        ..Default::default()
    });
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
    let cfg = config(
        &ws,
        &dst,
        &format!("ca_file = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n", ca.display()),
    );
    ws.bundle(&["--registry-config", &cfg, "import", "-d", &dst.host(), "s.tar.zst"]).success();

    let ca_pem = std::fs::read(&ca).unwrap();
    let http = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .build()
        .unwrap();
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
    dst.assert_untouched("an import with wrong credentials");
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
    let r =
        ws.bundle(&["--registry-config", &cfg, "import", "-d", &dst.host(), "s.tar.zst", "--retries", "0"]).failure();
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
    let r = ws
        .bundle(&[
            "--registry-config",
            &cfg,
            "export",
            "--image",
            &format!("{}/private/app:2.0", reg.host()),
            "-o",
            "p.tar.zst",
        ])
        .success();
    assert!(!r.stderr.contains(PASSWORD));
    let archive = std::fs::read(ws.path("p.tar.zst")).unwrap();
    let tar = zstd::stream::decode_all(&archive[..]).unwrap();
    assert!(!String::from_utf8_lossy(&tar).contains(PASSWORD), "a secret was written into the archive");
    ws.bundle(&["verify", "p.tar.zst"]).success();
}

#[test]
fn client_certificates_open_an_mtls_registry() {
    let ws = Workspace::new();
    let (_src, img) = exported_archive(&ws);
    let (ca, issuer) = test_ca(&ws, "ca");
    let (client_ca, client_issuer) = test_ca(&ws, "client-ca");
    let (cert, key) = server_cert(&ws, &issuer);
    let dst = Registry::start_with(RegistryOptions {
        tls: Some((cert, key)),
        client_ca: Some(client_ca),
        ..Default::default()
    });
    let client_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "importer");
    let client = params.signed_by(&client_key, &client_issuer).unwrap();
    let client_cert = ws.write("client.pem", &client.pem());
    let client_key = ws.write("client-key.pem", &client_key.serialize_pem());

    // Without the client certificate the registry refuses the connection.
    let cfg = config(&ws, &dst, &format!("ca_file = \"{}\"\n", ca.display()));
    let r =
        ws.bundle(&["--registry-config", &cfg, "import", "-d", &dst.host(), "s.tar.zst", "--retries", "0"]).failure();
    assert!(r.stderr.contains("cannot reach registry"), "{}", r.stderr);
    // No request gets past the handshake, so there is no log to read; the storage says nothing was written.
    assert_eq!(dst.stored(""), Vec::<String>::new());

    let cfg = config(
        &ws,
        &dst,
        &format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            ca.display(),
            client_cert.display(),
            client_key.display()
        ),
    );
    ws.bundle(&["--registry-config", &cfg, "import", "-d", &dst.host(), "s.tar.zst"]).success();
    assert_eq!(dst.repositories(), vec![img.repo.clone()]);
}

#[test]
fn the_bearer_token_flow_works_against_a_token_auth_registry() {
    let mut ws = Workspace::new();
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 33, 8192);
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "s.tar.zst");
    let tr = TokenRegistry::start(&ws);
    let host = tr.registry.host();

    // No credentials: the registry's token service refuses, and the error says how to log in.
    let r = ws.bundle(&["import", "-d", &host, "s.tar.zst", "--retries", "0"]).failure();
    assert!(
        r.stderr.contains("requires authentication and no credentials were found")
            || r.stderr.contains("rejected the credentials"),
        "{}",
        r.stderr
    );

    ws.env("DST_REGISTRY_USERNAME", TOKEN_USER);
    ws.env("DST_REGISTRY_PASSWORD", "token-flow-s3cret");
    ws.bundle(&["import", "-d", &host, "s.tar.zst"]).success();
    let asked = tr.token_requests.lock().unwrap().clone();
    // Mounting the shared base layer into another repository needs one token with push on that repository and
    // pull (only) on the one it comes from; the registry mounts (201) only when the token grants both.
    let mounts: Vec<(String, String)> = tr
        .registry
        .requests()
        .iter()
        .filter(|l| l.contains("\"POST /v2/") && l.contains("mount=") && l.contains("\" 201 "))
        .filter_map(|l| {
            let url = url::Url::parse(&format!("http://x{}", l.split('"').nth(1)?.split(' ').nth(1)?)).ok()?;
            let target = url.path().strip_prefix("/v2/")?.strip_suffix("/blobs/uploads/")?.to_string();
            let from = url.query_pairs().find(|(k, _)| k == "from")?.1.into_owned();
            (from != target).then_some((target, from))
        })
        .collect();
    assert!(!mounts.is_empty(), "no blob was mounted from another repository:\n{}", tr.registry.log_text());
    for (target, from) in &mounts {
        let (push, pull) = (format!("repository:{target}:pull,push"), format!("repository:{from}:pull"));
        assert!(
            asked.iter().any(|scopes| scopes.contains(&push) && scopes.contains(&pull)),
            "no token request asked for {push} and {pull} together: {asked:?}"
        );
    }
    // One token per scope set, not one per request, and not one per concurrent request either (regression: the
    // requests that first needed a scope set each fetched a token for it: 16 here). The API check, then per
    // repository pull (probe) and push (uploads, manifests, mounts from itself), and push + pull for each of the
    // three mounts of the shared base layer from the repository that got it first: 12.
    let issued = tr.tokens_issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(issued <= 12, "{issued} tokens for {} images: {asked:?}", set.images.len());

    for img in &set.images {
        let token = tr.token(&format!("repository:{}:pull", img.repo));
        let r = reqwest::blocking::Client::new()
            .get(format!("{}/v2/{}/manifests/{}", tr.registry.base_url(), img.repo, img.tag))
            .bearer_auth(token)
            .header("accept", img.root_media_type.as_str())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}: {}", img.repo, r.status());
        assert_eq!(sha256(&r.bytes().unwrap()), img.root.digest);
    }

    // And back out of it, as a source.
    let mut ws2 = Workspace::new();
    ws2.env("DST_REGISTRY_USERNAME", "ignored-for-sources");
    let cfg = ws2.write(
        "cred.json",
        &format!("{{\"auths\":{{\"{host}\":{{\"username\":\"{TOKEN_USER}\",\"password\":\"token-flow-s3cret\"}}}}}}"),
    );
    ws2.env("REGISTRY_AUTH_FILE", cfg.to_str().unwrap());
    let refs: Vec<String> = set.images.iter().map(|i| format!("{host}/{}:{}", i.repo, i.tag)).collect();
    ws2.export(&refs, "back.tar.zst");
    ws2.bundle(&["verify", "back.tar.zst"]).success();
}

/// Planted secrets never appear in any output, at any verbosity, nor in the archive, and every one of them is
/// really used: a quay.io source routed to the TLS registry takes the STS pair, an export straight from that
/// registry takes the config file's password, the destination refuses the DST pair (so it was sent), and an ECR
/// import signs with the AWS secret and pushes with moto's token.
#[test]
fn planted_secrets_never_appear_in_output_or_archives() {
    const STS_USER: &str = "sts-robot";
    const STS_PASSWORD: &str = "sts-planted-s3cret";
    const DST_PASSWORD: &str = "dst-planted-s3cret";
    const AWS_SECRET: &str = "aws-planted-s3cret";
    let mut ws = Workspace::new();
    let (reg, ca) = secure_registry(&ws);
    // The registry takes the STS robot as well as USER (not the DST password).
    let sts_hash = bcrypt::hash_with_result(STS_PASSWORD, 4).unwrap().format_for_version(bcrypt::Version::TwoY);
    let mut htpasswd = std::fs::read_to_string(ws.path("htpasswd")).unwrap();
    htpasswd.push_str(&format!("{STS_USER}:{sts_hash}\n"));
    std::fs::write(ws.path("htpasswd"), htpasswd).unwrap();
    let img = image(&[random_layer(1024, 78)], "amd64", false);
    Pusher::with_tls(&reg.base_url(), &std::fs::read(&ca).unwrap(), USER, PASSWORD).image("private/app", "3.0", &img);
    let moto = Moto::start(false);
    moto.configure(&mut ws);
    let data = EcrDataPlane::start(&ws, &moto);
    let ca_file = format!("ca_file = \"{}\"\n", ca.display());
    // quay.io is the TLS registry, without credentials in the file (so the STS pair is used); the registry under
    // its own name has the config file's password; ECR's data plane is the moto-token registry.
    let sources = ws.write(
        "sources.toml",
        &format!(
            "[[registry]]\nname = \"quay.io\"\nendpoint = \"{}\"\n{ca_file}\n[[registry]]\nname = \"{}\"\nendpoint = \"{}\"\n{ca_file}username = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            reg.base_url(),
            reg.host(),
            reg.base_url()
        ),
    );
    let destinations = ws.write(
        "destinations.toml",
        &format!(
            "[[registry]]\nname = \"{}\"\nendpoint = \"{}\"\n{ca_file}\n[[registry]]\nname = \"{}\"\nendpoint = \"{}\"\n",
            reg.host(),
            reg.base_url(),
            ecr_host(),
            data.base_url()
        ),
    );
    let (sources, destinations) = (sources.to_str().unwrap(), destinations.to_str().unwrap());
    ws.env("STS_REGISTRY_USERNAME", STS_USER);
    ws.env("STS_REGISTRY_PASSWORD", STS_PASSWORD);
    ws.env("DST_REGISTRY_USERNAME", USER);
    ws.env("DST_REGISTRY_PASSWORD", DST_PASSWORD);
    ws.env("AWS_SECRET_ACCESS_KEY", AWS_SECRET); // after moto's own, so it wins

    let (dst, ecr) = (reg.host(), ecr_host());
    let mut outputs = Vec::new();
    for verbosity in [&[][..], &["-v"][..], &["-q"][..]] {
        let run = |extra: &[&str]| {
            let mut args = vec!["--registry-config", sources];
            args.extend(verbosity);
            args.extend(extra);
            ws.bundle(&args).success()
        };
        // The STS pair opens quay.io.
        let r = run(&["export", "--image", "quay.io/private/app:3.0", "-o", "s.tar.zst", "--force"]);
        outputs.push(r.stdout + &r.stderr);
        // The config file's password opens the same registry under its own name.
        let direct = format!("{}/private/app:3.0", reg.host());
        let r = run(&["export", "--image", &direct, "-o", "direct.tar.zst", "--force"]);
        outputs.push(r.stdout + &r.stderr);
        let r = ws.bundle(&["inspect", "s.tar.zst", "--json"]).success();
        outputs.push(r.stdout + &r.stderr);

        // The destination answers 401 to the DST pair: it was sent, and refused.
        let mut args = vec!["--registry-config", destinations];
        args.extend(verbosity);
        args.extend(["import", "-d", &dst, "s.tar.zst", "--retries", "0"]);
        let r = ws.bundle(&args).failure();
        assert!(
            r.stderr.contains("rejected the credentials from DST_REGISTRY_USERNAME/DST_REGISTRY_PASSWORD"),
            "{}",
            r.stderr
        );
        outputs.push(r.stdout + &r.stderr);

        // ECR: the SDK signs with the AWS secret, the push carries moto's token.
        let mut args = vec!["--registry-config", destinations];
        args.extend(verbosity);
        args.extend(["import", "-d", &ecr, "s.tar.zst"]);
        let r = ws.bundle(&args).success();
        outputs.push(r.stdout + &r.stderr);
    }
    assert_eq!(moto.repository_names(), ["private/app"]);
    let pushed = ecr_manifest(&data.registry, "private/app", "3.0").expect("the ECR import pushed the image");
    assert_eq!(sha256(&pushed), img.manifest.digest);
    for archive in ["s.tar.zst", "direct.tar.zst"] {
        let tar = zstd::stream::decode_all(&std::fs::read(ws.path(archive)).unwrap()[..]).unwrap();
        outputs.push(String::from_utf8_lossy(&tar).into_owned());
    }
    // Each secret, and the Basic header a client would build from it.
    use base64::Engine as _;
    let basic =
        |user: &str, password: &str| base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let secrets = [
        PASSWORD.to_string(),
        STS_PASSWORD.to_string(),
        DST_PASSWORD.to_string(),
        AWS_SECRET.to_string(),
        TOKEN_PASSWORD.to_string(),
        basic(USER, PASSWORD),
        basic(STS_USER, STS_PASSWORD),
        basic(USER, DST_PASSWORD),
        basic("AWS", TOKEN_PASSWORD),
    ];
    for secret in &secrets {
        for (i, o) in outputs.iter().enumerate() {
            assert!(!o.contains(secret.as_str()), "secret {secret} leaked in output #{i}:\n{o}");
        }
    }
}

/// A blob GET redirected to another host (object storage) must not carry the registry's credentials there.
#[test]
fn credentials_are_not_sent_to_another_host_on_redirect() {
    use std::io::{BufRead, BufReader, Write};

    let mut ws = Workspace::new();
    let data = ecr_data_plane(&ws); // a registry that wants Basic AWS:<token>
    let img = image(&[random_layer(4096, 88)], "amd64", false);
    let layer = img.layers[0].clone();
    Pusher::with_auth(&data.base_url(), "AWS", TOKEN_PASSWORD).image("app", "1", &img);

    // "Object storage" on another loopback address, recording the request heads it is sent.
    let storage = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let storage_port = storage.local_addr().unwrap().port();
    let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let (recorded, body) = (heads.clone(), layer.bytes.clone());
    std::thread::spawn(move || {
        for conn in storage.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (recorded, body) = (recorded.clone(), body.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                recorded.lock().unwrap().push(head);
                let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = conn.write_all(&body);
            });
        }
    });
    let proxy = FaultProxy::start(data.port);
    proxy.add(
        "GET",
        &format!("/blobs/{}", layer.digest),
        Fault::Redirect(format!("http://127.0.0.2:{storage_port}/bucket/{}", &layer.digest[7..])),
        1,
    );
    let cfg = ws.write(
        "r.toml",
        &format!("[[registry]]\nname = \"{}\"\nusername = \"AWS\"\npassword = \"{TOKEN_PASSWORD}\"\n", proxy.host()),
    );
    ws.env("BUNDLE_REGISTRY_CONFIG", cfg.to_str().unwrap());
    ws.bundle(&["export", "--image", &format!("{}/app:1", proxy.host()), "-o", "r.tar.zst"]).success();
    let heads = heads.lock().unwrap().clone();
    assert!(!heads.is_empty(), "the redirected GET never reached the storage host");
    for head in &heads {
        assert!(head.starts_with("GET /bucket/"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("authorization"), "credentials were sent to another host:\n{head}");
    }
    ws.bundle(&["verify", "r.tar.zst"]).success();
}

#[test]
fn check_asks_a_locked_down_destination_with_the_destination_credentials() {
    let mut ws = Workspace::new();
    let (_src, img) = exported_archive(&ws);
    let (dst, ca) = secure_registry(&ws);
    let with_password = config(
        &ws,
        &dst,
        &format!("ca_file = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n", ca.display()),
    );
    ws.bundle(&["--registry-config", &with_password, "import", "-d", &dst.host(), "s.tar.zst"]).success();
    let pod = format!(
        "kind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: a, image: '{}'}}]}}\n",
        img.reference(&dst.host())
    );
    ws.write("pod.yaml", &pod);
    let check = |ws: &Workspace, cfg: &str| {
        ws.bundle(&["--registry-config", cfg, "--retries", "0", "check", "-d", &dst.host(), "--manifests", "pod.yaml"])
    };
    // The CA alone: the registry wants credentials, so the image is unchecked, never ok.
    let ca_only = config(&ws, &dst, &format!("ca_file = \"{}\"\n", ca.display()));
    let refused = check(&ws, &ca_only).failure();
    assert!(refused.stdout.starts_with("unchecked  "), "{}", refused.stdout);
    assert!(refused.stdout.contains("requires authentication"), "{}", refused.stdout);
    // The destination's credentials from the environment, as import takes them.
    ws.env("DST_REGISTRY_USERNAME", USER);
    ws.env("DST_REGISTRY_PASSWORD", PASSWORD);
    let ok = check(&ws, &ca_only).success();
    assert_eq!(ok.stdout, format!("ok  {}\n", img.reference(&dst.host())));
    assert!(dst.count_requests(&format!("HEAD /v2/{}/manifests/", img.repo)) >= 1);
    for out in [&refused.stdout, &refused.stderr, &ok.stdout, &ok.stderr] {
        assert!(!out.contains(PASSWORD), "the password was printed: {out}");
    }
}
