//! ECR destinations: moto's server is the control plane (through the real AWS SDK), a docker-registry that
//! only accepts moto's token is the data plane.

use crate::harness::*;

struct EcrSetup {
    ws: Workspace,
    moto: Moto,
    data: EcrDataPlane,
    _src: Registry,
    set: SampleSet,
    config: String,
}

/// Source registry with the sample images exported to `s.tar.zst`, moto, the data plane, and a registry config
/// routing the ECR hostname to the data plane.
fn setup(moto_auth: bool) -> EcrSetup {
    let mut ws = Workspace::new();
    let src = Registry::start();
    let set = seed_sample(&src.base_url(), 41, 32 * 1024);
    let refs: Vec<String> = set.images.iter().map(|i| i.reference(&src.host())).collect();
    ws.export(&refs, "s.tar.zst");
    let moto = Moto::start(moto_auth);
    moto.configure(&mut ws);
    let data = EcrDataPlane::start(&ws, &moto);
    let config = ws.write(
        "registries.toml",
        &format!("[[registry]]\nname = \"{}\"\nendpoint = \"{}\"\n", ecr_host(), data.base_url()),
    );
    EcrSetup { ws, moto, data, _src: src, set, config: config.to_string_lossy().into_owned() }
}

#[test]
fn import_into_ecr_creates_repositories_with_the_requested_settings() {
    let s = setup(false);
    let ws = &s.ws;
    ws.write("lifecycle.json", r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#);
    ws.write("policy.json", r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["ecr:BatchGetImage"]}]}"#);
    // A repository that exists already, with other settings: it must be left alone.
    let (status, _) = s.moto.call(
        "CreateRepository",
        serde_json::json!({"repositoryName": "stackstate/wait", "imageTagMutability": "MUTABLE"}),
    );
    assert_eq!(status, 200);

    let settings = [
        "--ecr-scan-on-push",
        "true",
        "--ecr-tag-mutability",
        "IMMUTABLE",
        "--ecr-encryption",
        "KMS",
        "--ecr-kms-key",
        "alias/airgap",
        "--ecr-tag",
        "team=platform",
        "--ecr-tag",
        "env=prod",
        "--ecr-lifecycle-policy",
        "lifecycle.json",
        "--ecr-repository-policy",
        "policy.json",
    ];
    let host = ecr_host();
    let mut dry = vec!["--registry-config", &s.config, "import", "-d", &host, "s.tar.zst", "-t"];
    dry.extend(settings);
    let r = ws.bundle(&dry).success();
    assert!(r.stdout.contains("Would create ECR repository stackstate/agent (scan on push: on, tag mutability: IMMUTABLE, encryption: KMS (alias/airgap), tags: env=prod,team=platform"), "{}", r.stdout);
    assert!(
        r.stdout.contains("ECR repository stackstate/wait exists (tag mutability MUTABLE); left as it is"),
        "{}",
        r.stdout
    );
    assert_eq!(s.moto.repository_names(), vec!["stackstate/wait"], "a dry run created repositories");

    let mut run = vec!["--registry-config", &s.config, "import", "-d", &host, "s.tar.zst"];
    run.extend(settings);
    ws.bundle(&run).success();

    let created = ["library/nginx", "prometheus-operator/prometheus-config-reloader", "stackstate/agent"];
    let mut all: Vec<&str> = created.to_vec();
    all.push("stackstate/wait");
    all.sort();
    assert_eq!(s.moto.repository_names(), all);
    for name in created {
        let repo = s.moto.repository(name).unwrap();
        assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true, "{name}: {repo}");
        assert_eq!(repo["imageTagMutability"], "IMMUTABLE", "{name}");
        assert_eq!(repo["encryptionConfiguration"]["encryptionType"], "KMS", "{name}");
        assert_eq!(repo["encryptionConfiguration"]["kmsKey"], "alias/airgap", "{name}");
        let (_, tags) = s.moto.call("ListTagsForResource", serde_json::json!({"resourceArn": repo["repositoryArn"]}));
        let mut tags: Vec<String> = tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| format!("{}={}", t["Key"].as_str().unwrap(), t["Value"].as_str().unwrap()))
            .collect();
        tags.sort();
        assert_eq!(tags, vec!["env=prod", "team=platform"], "{name}");
        let (status, lc) = s.moto.call("GetLifecyclePolicy", serde_json::json!({"repositoryName": name}));
        assert_eq!(status, 200, "{name}: {lc}");
        assert!(lc["lifecyclePolicyText"].as_str().unwrap().contains("sinceImagePushed"));
        let (status, pol) = s.moto.call("GetRepositoryPolicy", serde_json::json!({"repositoryName": name}));
        assert_eq!(status, 200, "{name}: {pol}");
    }
    let wait = s.moto.repository("stackstate/wait").unwrap();
    assert_eq!(wait["imageTagMutability"], "MUTABLE", "the existing repository was changed");
    assert_eq!(wait["imageScanningConfiguration"]["scanOnPush"], false);
    let (status, _) = s.moto.call("GetLifecyclePolicy", serde_json::json!({"repositoryName": "stackstate/wait"}));
    assert_ne!(status, 200, "a policy was applied to the existing repository");

    // The images, pulled back from the data plane with the token, have the source digests.
    for img in &s.set.images {
        let bytes =
            ecr_manifest(&s.data.registry, &img.repo, &img.tag).unwrap_or_else(|| panic!("{} missing", img.repo));
        assert_eq!(sha256(&bytes), img.root.digest);
    }

    // Re-importing into immutable repositories is fine when the digests are the same.
    let r = ws.bundle(&["--registry-config", &s.config, "import", "-d", &host, "s.tar.zst"]).success();
    assert!(r.stderr.contains("nothing to push"), "{}", r.stderr);
}

#[test]
fn an_immutable_tag_with_other_content_stops_the_import_before_anything_is_pushed() {
    let s = setup(false);
    let ws = &s.ws;
    let host = ecr_host();
    ws.bundle(&[
        "--registry-config",
        &s.config,
        "import",
        "-d",
        &host,
        "s.tar.zst",
        "--ecr-tag-mutability",
        "IMMUTABLE",
    ])
    .success();

    // Same names and tags, other content.
    let other = Registry::start();
    let set2 = seed_sample(&other.base_url(), 42, 32 * 1024);
    let refs: Vec<String> = set2.images.iter().map(|i| i.reference(&other.host())).collect();
    ws.export(&refs, "other.tar.zst");
    let writes = |r: &Registry| r.count_requests("\"PUT ") + r.count_requests("\"POST ");
    let before = writes(&s.data.registry);
    let r = ws.bundle(&["--registry-config", &s.config, "import", "-d", &host, "other.tar.zst"]).failure();
    assert!(
        r.stderr.contains("tags already exist with other content in repositories whose tags are immutable"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("stackstate/agent:7.51.1 (now sha256:"), "{}", r.stderr);
    assert_eq!(writes(&s.data.registry), before, "something was pushed");
}

/// Regression: under IMMUTABLE_WITH_EXCLUSION every tag was treated as immutable, so a tag the repository's
/// exclusion filters leave mutable stopped the import. The filters are read back from ECR (the second import
/// passes no settings).
#[test]
fn tags_an_exclusion_filter_leaves_mutable_may_move_and_the_others_may_not() {
    let s = setup(false);
    let ws = &s.ws;
    let host = ecr_host();
    ws.bundle(&[
        "--registry-config",
        &s.config,
        "import",
        "-d",
        &host,
        "s.tar.zst",
        "--ecr-tag-mutability",
        "IMMUTABLE_WITH_EXCLUSION",
        "--ecr-tag-mutability-exclusion",
        "7.*",
        "--ecr-tag-mutability-exclusion",
        "1.2*",
    ])
    .success();
    let repo = s.moto.repository("stackstate/agent").unwrap();
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE_WITH_EXCLUSION", "{repo}");

    let other = Registry::start();
    let set2 = seed_sample(&other.base_url(), 43, 32 * 1024);
    let refs: Vec<String> = set2.images.iter().map(|i| i.reference(&other.host())).collect();
    ws.export(&refs, "other.tar.zst");
    let r = ws.bundle(&["--registry-config", &s.config, "import", "-d", &host, "other.tar.zst"]).failure();
    // Excluded (mutable): agent:7.51.1, nginx:1.25. Not excluded: wait:1.0.0, the reloader's v0.73.0.
    assert!(r.stderr.contains("2 tags already exist with other content"), "{}", r.stderr);
    assert!(r.stderr.contains("stackstate/wait:1.0.0 (now sha256:"), "{}", r.stderr);
    assert!(r.stderr.contains("prometheus-config-reloader:v0.73.0 (now sha256:"), "{}", r.stderr);
    assert!(!r.stderr.contains("stackstate/agent:7.51.1"), "{}", r.stderr);
    assert!(!r.stderr.contains("library/nginx:1.25"), "{}", r.stderr);

    // When only the excluded tags change, the import goes ahead and they move (the data plane, asking moto as ECR
    // would, lets them); the immutable ones keep their first content.
    let excluded = |i: &&SampleImage| i.repo == "stackstate/agent" || i.repo == "library/nginx";
    let moved: Vec<&SampleImage> = set2.images.iter().filter(excluded).collect();
    ws.export(&moved.iter().map(|i| i.reference(&other.host())).collect::<Vec<_>>(), "moved.tar.zst");
    ws.bundle(&["--registry-config", &s.config, "import", "-d", &host, "moved.tar.zst"]).success();
    for (before, after) in s.set.images.iter().zip(&set2.images) {
        let now = ecr_manifest(&s.data.registry, &before.repo, &before.tag).map(|b| sha256(&b));
        let expected = if excluded(&after) { &after.root.digest } else { &before.root.digest };
        assert_eq!(now.as_ref(), Some(expected), "{}:{}", before.repo, before.tag);
    }
    assert_ne!(s.set.images[0].root.digest, set2.images[0].root.digest, "the two samples differ");
}

#[test]
fn repository_names_ecr_would_refuse_are_refused_up_front() {
    let mut ws = Workspace::new();
    let src = Registry::start();
    let img = image(&[random_layer(512, 3)], "amd64", false);
    Pusher::new(&src.base_url()).image("team/my__app", "1", &img);
    ws.export(&[format!("{}/team/my__app:1", src.host())], "s.tar.zst");
    let moto = Moto::start(false);
    moto.configure(&mut ws);
    let r = ws.bundle(&["import", "-d", &ecr_host(), "s.tar.zst"]).failure();
    assert!(r.stderr.contains("`team/my__app` is not a valid ECR repository name"), "{}", r.stderr);
    assert!(moto.repository_names().is_empty());
}

#[test]
fn refused_aws_credentials_are_a_clear_error_without_the_secret() {
    let mut s = setup(true);
    s.ws.env("AWS_SECRET_ACCESS_KEY", "expired-s3cret-key-value");
    let r = s.ws.bundle(&["--registry-config", &s.config, "import", "-d", &ecr_host(), "s.tar.zst"]).failure();
    assert!(r.stderr.contains("GetAuthorizationToken failed"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: the AWS credentials were refused or have expired"), "{}", r.stderr);
    assert!(!r.stderr.contains("expired-s3cret-key-value"));
}

#[test]
fn forced_ecr_behaviour_for_a_private_name_needs_account_and_region() {
    let mut s = setup(false);
    // A VPC endpoint alias that does not look like ECR.
    let alias = "ecr.airgap.internal";
    std::fs::write(&s.config, format!("[[registry]]\nname = \"{alias}\"\nendpoint = \"{}\"\n\n[registry.ecr]\nenabled = true\nscan_on_push = true\n", s.data.base_url())).unwrap();
    let r = s.ws.bundle(&["--registry-config", &s.config, "import", "-d", alias, "s.tar.zst"]).failure();
    assert!(r.stderr.contains("pass --ecr-registry-id ACCOUNT"), "{}", r.stderr);
    s.ws.env("AWS_REGION", REGION);
    s.ws.bundle(&[
        "--registry-config",
        &s.config,
        "import",
        "-d",
        alias,
        "s.tar.zst",
        "--ecr-registry-id",
        ACCOUNT,
        "--ecr-region",
        REGION,
    ])
    .success();
    assert_eq!(s.moto.repository("stackstate/agent").unwrap()["imageScanningConfiguration"]["scanOnPush"], true);
}

/// A registry client whose credentials have expired fetches new ones on 401 instead of failing.
#[test]
fn expired_registry_credentials_are_renewed_on_401() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bundle::registry::credentials::{CredentialSource, Credentials};

    struct Renew(Arc<AtomicUsize>);
    impl CredentialSource for Renew {
        fn fetch(
            &self,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Credentials, String>> + Send + '_>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Ok(Credentials { username: "AWS".into(), password: TOKEN_PASSWORD.into(), origin: "test".into() })
            })
        }
    }
    let ws = Workspace::new();
    let data = ecr_data_plane(&ws);
    let img = image(&[random_layer(256, 9)], "amd64", false);
    let hash_user = |p: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{}/v2/", data.base_url()))
            .basic_auth("AWS", Some(p))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(hash_user(TOKEN_PASSWORD), 200);
    // Seed with the right password.
    Pusher::with_auth(&data.base_url(), "AWS", TOKEN_PASSWORD).image("app", "1", &img);

    let calls = Arc::new(AtomicUsize::new(0));
    let config = bundle::registry::RegistryConfig::default();
    let registries = bundle::registry::Registries::new(config, bundle::registry::ClientOptions::default());
    let stale = Credentials {
        username: "AWS".into(),
        password: "expired-token".into(),
        origin: "ECR GetAuthorizationToken".into(),
    };
    registries.set_credentials(
        &data.host(),
        bundle::registry::Role::Destination,
        stale,
        Some(Arc::new(Renew(calls.clone()))),
    );
    let client = registries.client(&data.host(), bundle::registry::Role::Destination).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pulled = rt.block_on(client.get_manifest("app", "1")).unwrap();
    assert_eq!(pulled.digest.as_str(), img.manifest.digest);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "credentials were renewed exactly once");
}

/// Also the regression test for a race found here: two imports writing the same manifest at once made
/// docker-registry answer the slower one `MANIFEST_BLOB_UNKNOWN`/`DIGEST_INVALID` (its filesystem driver does
/// not write atomically); such answers to a manifest PUT are now retried.
#[test]
fn two_imports_at_once_both_succeed_and_update_existing_applies_settings() {
    let s = setup(false);
    let host = ecr_host();
    let args = [
        "--registry-config",
        s.config.as_str(),
        "import",
        "-d",
        host.as_str(),
        "s.tar.zst",
        "--ecr-scan-on-push",
        "false",
    ];
    let children: Vec<_> = (0..2)
        .map(|_| {
            s.ws.command(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for img in &s.set.images {
        assert_eq!(
            ecr_manifest(&s.data.registry, &img.repo, &img.tag).map(|b| sha256(&b)),
            Some(img.root.digest.clone())
        );
        assert_eq!(s.moto.repository(&img.repo).unwrap()["imageScanningConfiguration"]["scanOnPush"], false);
    }

    // Existing repositories change only when asked to.
    s.ws.bundle(&["--registry-config", &s.config, "import", "-d", &host, "s.tar.zst", "--ecr-scan-on-push", "true"])
        .success();
    assert_eq!(s.moto.repository("stackstate/agent").unwrap()["imageScanningConfiguration"]["scanOnPush"], false);
    s.ws.bundle(&[
        "--registry-config",
        &s.config,
        "import",
        "-d",
        &host,
        "s.tar.zst",
        "--ecr-scan-on-push",
        "true",
        "--ecr-tag-mutability",
        "IMMUTABLE",
        "--ecr-update-existing",
    ])
    .success();
    let repo = s.moto.repository("stackstate/agent").unwrap();
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE");
}
