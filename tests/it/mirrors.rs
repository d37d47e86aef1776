//! `--mirrors-out`: images pulled by their original names (`quay.io/…`, `docker.io/…`, `registry.k8s.io/…`)
//! come from the destination. podman and containerd pull for real through the files import wrote, with the
//! source names unreachable; the k3s/RKE2 and OpenShift files are checked against the structure their projects
//! document and followed, rule by rule, to the real destination registry; a mapping that would merge two
//! sources is refused before anything is pushed.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use crate::harness::*;

/// What the tests move: an image of each public registry the fixtures name, and one pinned by digest alone.
struct Moved {
    ws: Workspace,
    world: Registry,
    /// The registry config that routes the public names to `world`.
    cfg: String,
    /// (reference as the source names it, manifest digest at the source).
    images: Vec<(String, String)>,
}

fn moved() -> Moved {
    let ws = Workspace::new();
    let world = Registry::start();
    let (cfg, pinned) = seed_world(&ws, &world);
    let cfg = cfg.to_string_lossy().into_owned();
    let refs = [
        "quay.io/stackstate/worker:2.3.1".to_string(),
        "docker.io/library/busybox:1.36".to_string(),
        "registry.k8s.io/legacy/agent:3.1".to_string(),
        "ghcr.io/example/inner:0.3".to_string(),
        format!("quay.io/stackstate/pinned@{pinned}"),
    ];
    let images = refs
        .iter()
        .map(|r| {
            let (name, reference) = split(r);
            // The world registry holds each public name's images under the name itself.
            let (bytes, _) = get_manifest(&world.base_url(), &name, &reference).expect("seeded");
            (r.clone(), sha256(&bytes))
        })
        .collect();
    let mut args = vec!["--registry-config", &cfg, "export", "-o", "moved.tar.zst"];
    for r in &refs {
        args.extend(["--image", r.as_str()]);
    }
    ws.bundle(&args).success();
    Moved { ws, world, cfg, images }
}

/// `quay.io/a/b:1` → (`quay.io/a/b`, `1`); `…@sha256:x` → (`…`, `sha256:x`).
fn split(r: &str) -> (String, String) {
    match r.split_once('@') {
        Some((n, d)) => (n.to_string(), d.to_string()),
        None => {
            let (n, t) = r.rsplit_once(':').unwrap();
            (n.to_string(), t.to_string())
        }
    }
}

/// Each mapping, with the destination prefix its import uses.
const EVERY_MAPPING: [(&str, &str); 3] = [("path", "p"), ("keep-host", "k"), ("flatten", "f")];

/// Where the test expects `name` (`registry/repository`) to land under each mapping, worked out here.
fn landed(mapping: &str, prefix: &str, name: &str) -> String {
    let (registry, repository) = name.split_once('/').unwrap();
    let path = match mapping {
        "path" => repository.to_string(),
        "keep-host" => format!("{registry}/{repository}"),
        "flatten" => repository.rsplit('/').next().unwrap().to_string(),
        _ => unreachable!(),
    };
    if prefix.is_empty() { path } else { format!("{prefix}/{path}") }
}

/// `-d` for a prefix (none when empty).
fn destination(dst: &Registry, prefix: &str) -> String {
    if prefix.is_empty() { dst.host() } else { format!("{}/{prefix}", dst.host()) }
}

fn mapping_flag(mapping: &str) -> Option<&'static str> {
    match mapping {
        "keep-host" => Some("--keep-host"),
        "flatten" => Some("--flatten"),
        _ => None,
    }
}

/// `import -d DEST [--keep-host|--flatten] --mirrors-out DIR moved.tar.zst`, which must succeed.
fn import(m: &Moved, cfg: &str, dest: &str, mapping: &str, dir: &str) -> Run {
    let mut args = vec!["--registry-config", cfg, "import", "-d", dest, "--mirrors-out", dir];
    args.extend(mapping_flag(mapping));
    args.push("moved.tar.zst");
    m.ws.bundle(&args).success()
}

/// The destination's access log asked for `repository`'s manifests: the pull went where the mapping put it.
#[track_caller]
fn assert_pulled_from(dst: &Registry, repository: &str) {
    let needle = format!("/v2/{repository}/manifests/");
    assert!(dst.count_requests(&needle) > 0, "nothing asked the destination for {needle}:\n{}", dst.log_text());
}

#[test]
fn podman_pulls_every_image_by_its_original_name_from_the_destination_under_every_mapping() {
    let m = moved();
    let dst = Registry::start();
    for (mapping, prefix) in EVERY_MAPPING {
        let dir = format!("mirrors-{prefix}");
        import(&m, &m.cfg, &format!("{}/{prefix}", dst.host()), mapping, &dir);
        let conf = m.ws.path(&dir).join("registries.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("insecure = true"), "a plain-HTTP mirror must be marked insecure:\n{text}");
        let podman = Podman::new();
        let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())];
        for (r, digest) in &m.images {
            succeeded(
                &format!("podman pull {r} ({mapping})"),
                &podman.run_with(&["pull", "-q", r], &env, m.ws.dir.path()),
            );
            let inspect = succeeded(
                "podman image inspect",
                &podman.run(&["image", "inspect", "--format", "{{.Digest}}", r], m.ws.dir.path()),
            );
            assert_eq!(inspect.trim(), digest, "{r} under {mapping}: podman holds another manifest");
            dst.settle();
            assert_pulled_from(&dst, &landed(mapping, prefix, &split(r).0));
        }
    }
}

#[test]
fn containerd_pulls_by_original_name_through_certs_d_with_and_without_a_prefix_and_with_keep_host() {
    let m = moved();
    let dst = Registry::start();
    let ctr = Containerd::start();
    // With a prefix (override_path), at the destination's root (no override), and under --keep-host.
    for (mapping, prefix) in [("path", "p"), ("path", ""), ("keep-host", "k")] {
        let dir = format!("mirrors-{mapping}-{prefix}");
        import(&m, &m.cfg, &destination(&dst, prefix), mapping, &dir);
        let hosts = m.ws.path(&dir).join("certs.d");
        for (r, digest) in &m.images {
            let pull = ctr.ctr(
                &["images", "pull", "--hosts-dir", hosts.to_str().unwrap(), "--platform", "linux/amd64", r],
                None,
                m.ws.dir.path(),
            );
            succeeded(&format!("ctr images pull {r} ({mapping})"), &pull);
            let held: BTreeMap<String, String> = ctr.images().into_iter().collect();
            assert_eq!(held.get(r.as_str()), Some(digest), "{r} under {mapping}: {held:?}");
            dst.settle();
            assert_pulled_from(&dst, &landed(mapping, prefix, &split(r).0));
            succeeded("ctr images rm", &ctr.ctr(&["images", "rm", r], None, m.ws.dir.path()));
        }
    }

    // --flatten drops path components; containerd can only replace a registry and a prefix: no file, and said.
    let mut args = vec!["--registry-config", m.cfg.as_str(), "import", "--flatten", "--mirrors-out", "mirrors-f"];
    let dest = format!("{}/f", dst.host());
    args.extend(["-d", &dest, "moved.tar.zst"]);
    let r = m.ws.bundle(&args).success();
    assert!(
        r.stderr.contains("containerd cannot find the images of docker.io, ghcr.io, quay.io, registry.k8s.io"),
        "{}",
        r.stderr
    );
    assert!(!m.ws.path("mirrors-f/certs.d").exists(), "a containerd file that cannot land was written");
    assert!(m.ws.path("mirrors-f/registries.conf").is_file());
}

#[test]
fn a_private_ca_travels_with_the_configs_and_containerd_and_podman_trust_it() {
    let m = moved();
    let (ca, issuer) = test_ca(&m.ws, "mirror-ca");
    let (cert, key) = server_cert(&m.ws, &issuer);
    let dst = Registry::start_with(RegistryOptions { tls: Some((cert, key)), ..Default::default() });
    let world = std::fs::read_to_string(&m.cfg).unwrap();
    let cfg = m.ws.write(
        "secure.toml",
        &format!(
            "{world}[[registry]]\nname = \"{}\"\nendpoint = \"{}\"\nca_file = \"{}\"\n",
            dst.host(),
            dst.base_url(),
            ca.display()
        ),
    );
    let dest = format!("{}/secure", dst.host());
    import(&m, cfg.to_str().unwrap(), &dest, "path", "mirrors");
    let dir = m.ws.path("mirrors");
    let ca_pem = std::fs::read(&ca).unwrap();
    assert_eq!(std::fs::read(dir.join("certs.d/quay.io/ca.crt")).unwrap(), ca_pem);
    let hosts = std::fs::read_to_string(dir.join("certs.d/quay.io/hosts.toml")).unwrap();
    assert!(hosts.contains(&format!("[host.\"https://{}/v2/secure\"]", dst.host())), "{hosts}");
    assert!(!hosts.contains("skip_verify"), "verification skipped without being asked:\n{hosts}");
    let conf = std::fs::read_to_string(dir.join("registries.conf")).unwrap();
    assert!(!conf.contains("insecure"), "a verified HTTPS mirror marked insecure:\n{conf}");

    let (worker, digest) = &m.images[0];
    let ctr = Containerd::start();
    let hosts_dir = dir.join("certs.d");
    let pull = ctr.ctr(
        &["images", "pull", "--hosts-dir", hosts_dir.to_str().unwrap(), "--platform", "linux/amd64", worker],
        None,
        m.ws.dir.path(),
    );
    succeeded("ctr images pull over TLS with the copied CA", &pull);
    assert_eq!(ctr.images().into_iter().find(|(n, _)| n == worker).map(|(_, d)| d).as_ref(), Some(digest));

    let podman = Podman::new();
    let certs = dir.join("containers-certs.d").join(dst.host());
    assert_eq!(std::fs::read(certs.join("ca.crt")).unwrap(), ca_pem);
    let conf_path = dir.join("registries.conf");
    let env = [("CONTAINERS_REGISTRIES_CONF", conf_path.to_str().unwrap())];
    let out = podman.run_with(&["pull", "-q", "--cert-dir", certs.to_str().unwrap(), worker], &env, m.ws.dir.path());
    succeeded("podman pull over TLS with the copied CA", &out);
    dst.settle();
    assert_pulled_from(&dst, "secure/stackstate/worker");
}

/// `registries.yaml` as k3s documents it: `mirrors` (registry → `endpoint` URLs, `rewrite` regex → replacement)
/// and `configs` (registry → `tls`/`auth`), nothing else.
#[track_caller]
fn check_k3s_structure(doc: &Value) {
    let top = doc.as_mapping().expect("a mapping");
    for k in top.keys() {
        assert!(matches!(k.as_str(), Some("mirrors" | "configs")), "unknown top-level key {k:?}");
    }
    for (registry, mirror) in doc["mirrors"].as_mapping().expect("mirrors") {
        let mirror = mirror.as_mapping().unwrap_or_else(|| panic!("mirror {registry:?} is not a mapping"));
        for k in mirror.keys() {
            assert!(matches!(k.as_str(), Some("endpoint" | "rewrite")), "unknown key {k:?} in mirror {registry:?}");
        }
        let endpoints = mirror["endpoint"].as_sequence().expect("endpoint is a list");
        assert!(!endpoints.is_empty());
        for e in endpoints {
            let e = e.as_str().expect("endpoint URL");
            assert!(e.starts_with("http://") || e.starts_with("https://"), "endpoint {e} has no scheme");
        }
        for (pattern, replacement) in mirror.get("rewrite").and_then(Value::as_mapping).into_iter().flatten() {
            regex_lite::Regex::new(pattern.as_str().unwrap()).expect("rewrite keys are regular expressions");
            assert!(replacement.as_str().is_some());
        }
    }
    for (_, config) in doc.get("configs").and_then(Value::as_mapping).into_iter().flatten() {
        for (k, v) in config.as_mapping().unwrap() {
            let allowed: &[&str] = match k.as_str() {
                Some("tls") => &["ca_file", "cert_file", "key_file", "insecure_skip_verify"],
                Some("auth") => &["username", "password", "auth", "identitytoken"],
                other => panic!("unknown configs key {other:?}"),
            };
            for key in v.as_mapping().unwrap().keys() {
                assert!(allowed.contains(&key.as_str().unwrap()), "unknown {k:?} key {key:?}");
            }
        }
    }
}

/// What k3s pulls for `name` (`registry/repository`): the mirror's first endpoint, and the repository after
/// the first rewrite that matches.
fn k3s_pull(doc: &Value, name: &str) -> (String, String) {
    let (registry, repository) = name.split_once('/').unwrap();
    let mirror = &doc["mirrors"][registry];
    let endpoint = mirror["endpoint"][0].as_str().unwrap().to_string();
    for (pattern, replacement) in mirror.get("rewrite").and_then(Value::as_mapping).into_iter().flatten() {
        let re = regex_lite::Regex::new(pattern.as_str().unwrap()).unwrap();
        if re.is_match(repository) {
            return (endpoint, re.replace(repository, replacement.as_str().unwrap()).into_owned());
        }
    }
    (endpoint, repository.to_string())
}

#[test]
fn k3s_registries_yaml_sends_every_image_to_where_it_landed_under_every_mapping() {
    let m = moved();
    let dst = Registry::start();
    for (mapping, prefix) in EVERY_MAPPING {
        let dir = format!("mirrors-{prefix}");
        import(&m, &m.cfg, &format!("{}/{prefix}", dst.host()), mapping, &dir);
        let text = std::fs::read_to_string(m.ws.path(&dir).join("registries.yaml")).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        check_k3s_structure(&doc);
        assert!(doc.get("configs").is_none(), "plain HTTP needs no configs entry:\n{text}");
        for (r, digest) in &m.images {
            let (name, reference) = split(r);
            let (endpoint, repository) = k3s_pull(&doc, &name);
            assert_eq!(endpoint, dst.base_url(), "{r} under {mapping}:\n{text}");
            assert_eq!(repository, landed(mapping, prefix, &name), "{r} under {mapping}:\n{text}");
            let (bytes, _) = get_manifest(&endpoint, &repository, &reference)
                .unwrap_or_else(|| panic!("{r} under {mapping}: {endpoint}/{repository} has no {reference}"));
            assert_eq!(&sha256(&bytes), digest);
        }
    }
}

/// A registry host with an optional port and repository path, as the OpenShift API validates `source` and
/// `mirrors` (no tag, no digest); written from its documented pattern.
fn openshift_location() -> regex_lite::Regex {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?";
    let component = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";
    regex_lite::Regex::new(&format!("^{label}(\\.{label})*(:[0-9]+)?(/{component})*$")).unwrap()
}

/// `ImageDigestMirrorSet` / `ImageTagMirrorSet` as the config.openshift.io/v1 API documents them; returns
/// (source, mirrors) of each entry.
#[track_caller]
fn check_openshift_structure(doc: &Value, kind: &str, list: &str) -> Vec<(String, Vec<String>)> {
    assert_eq!(doc["apiVersion"].as_str(), Some("config.openshift.io/v1"));
    assert_eq!(doc["kind"].as_str(), Some(kind));
    let name = doc["metadata"]["name"].as_str().expect("metadata.name");
    let dns_label = regex_lite::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
    assert!(dns_label.is_match(name) && name.len() <= 63, "metadata.name {name:?} is not a DNS label");
    let spec = doc["spec"].as_mapping().expect("spec");
    assert_eq!(spec.len(), 1, "spec holds only {list}");
    let location = openshift_location();
    let mut out = Vec::new();
    for entry in spec[list].as_sequence().expect("a list") {
        for k in entry.as_mapping().unwrap().keys() {
            assert!(matches!(k.as_str(), Some("source" | "mirrors" | "mirrorSourcePolicy")), "unknown key {k:?}");
        }
        let source = entry["source"].as_str().expect("source").to_string();
        assert!(location.is_match(&source), "source {source} is not a registry location");
        let mirrors: Vec<String> =
            entry["mirrors"].as_sequence().expect("mirrors").iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert!(!mirrors.is_empty());
        for mirror in &mirrors {
            assert!(location.is_match(mirror), "mirror {mirror} is not a registry location");
            assert_ne!(mirror, &source);
        }
        out.push((source, mirrors));
    }
    out
}

/// What CRI-O pulls for `name` under these entries: the most specific source that is `name` or a prefix of it
/// at a `/`, replaced by its first mirror.
fn openshift_pull(entries: &[(String, Vec<String>)], name: &str) -> Option<String> {
    entries
        .iter()
        .filter(|(s, _)| name == s || name.starts_with(&format!("{s}/")))
        .max_by_key(|(s, _)| s.len())
        .map(|(s, mirrors)| format!("{}{}", mirrors[0], &name[s.len()..]))
}

#[test]
fn openshift_mirror_sets_send_digests_and_tags_to_where_they_landed_under_every_mapping() {
    let m = moved();
    let dst = Registry::start();
    for (mapping, prefix) in EVERY_MAPPING {
        let dir = format!("mirrors-{prefix}");
        import(&m, &m.cfg, &format!("{}/{prefix}", dst.host()), mapping, &dir);
        let read = |f: &str| -> Value {
            serde_yaml_ng::from_str(&std::fs::read_to_string(m.ws.path(&dir).join(f)).unwrap()).unwrap()
        };
        let idms = check_openshift_structure(&read("idms.yaml"), "ImageDigestMirrorSet", "imageDigestMirrors");
        let itms = check_openshift_structure(&read("itms.yaml"), "ImageTagMirrorSet", "imageTagMirrors");
        for (r, digest) in &m.images {
            let (name, reference) = split(r);
            let want = format!("{}/{}", dst.host(), landed(mapping, prefix, &name));
            // By digest through the IDMS, every image; by tag through the ITMS, the tagged ones.
            let mut pulls = vec![(&idms, digest.clone())];
            if !reference.starts_with("sha256:") {
                pulls.push((&itms, reference.clone()));
            }
            for (entries, reference) in pulls {
                let at = openshift_pull(entries, &name).unwrap_or_else(|| panic!("no entry covers {name}"));
                assert_eq!(at, want, "{r} under {mapping}");
                let repository = at.split_once('/').unwrap().1;
                let (bytes, _) = get_manifest(&dst.base_url(), repository, &reference).expect("landed");
                assert_eq!(&sha256(&bytes), digest);
            }
        }
    }
}

#[test]
fn two_sources_in_one_destination_repository_are_refused_before_anything_is_pushed() {
    let m = moved();
    // quay.io/library/busybox: the same path as docker.io's, other content, another tag (the same tag would be
    // refused by the push plan itself, mirrors or not).
    let other = image(&[random_layer(1024, 901)], "amd64", false);
    Pusher::new(&m.world.base_url()).image("quay.io/library/busybox", "1.36-q", &other);
    let args = |dest: &str, extra: &[&'static str]| {
        let mut a = vec!["--registry-config".to_string(), m.cfg.clone(), "import".into(), "-d".into(), dest.into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    m.ws.bundle(&[
        "--registry-config",
        &m.cfg,
        "export",
        "-o",
        "both.tar.zst",
        "--image",
        "docker.io/library/busybox:1.36",
        "--image",
        "quay.io/library/busybox:1.36-q",
    ])
    .success();
    let dst = Registry::start();
    let mut refused = args(&dst.host(), &["--mirrors-out", "mirrors"]);
    refused.push("both.tar.zst".into());
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    let r = m.ws.bundle(&refused).failure();
    assert!(
        r.stderr.contains(&format!(
            "{}/library/busybox <- docker.io/library/busybox and quay.io/library/busybox",
            dst.host()
        )),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: --keep-host"), "{}", r.stderr);
    assert!(!m.ws.path("mirrors").exists(), "configs written for a refused mapping");
    dst.assert_untouched("an import refused for its mirror configs");

    // --flatten merges repositories of one registry as well.
    let flat = m.ws.bundle(&[
        "--registry-config",
        &m.cfg,
        "import",
        "-d",
        &dst.host(),
        "--flatten",
        "--mirrors-out",
        "mirrors",
        "-t",
        "both.tar.zst",
    ]);
    assert!(flat.failure().stderr.contains("would hold images of more than one source repository"));

    // --keep-host keeps them apart, and each name pulls its own image.
    let mut kept = args(&dst.host(), &["--keep-host", "--mirrors-out", "mirrors"]);
    kept.push("both.tar.zst".into());
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    m.ws.bundle(&kept).success();
    let conf = m.ws.path("mirrors/registries.conf");
    let podman = Podman::new();
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())];
    for (r, digest) in [
        ("docker.io/library/busybox:1.36", m.images[1].1.clone()),
        ("quay.io/library/busybox:1.36-q", other.manifest.digest.clone()),
    ] {
        succeeded(&format!("podman pull {r}"), &podman.run_with(&["pull", "-q", r], &env, m.ws.dir.path()));
        let got =
            succeeded("inspect", &podman.run(&["image", "inspect", "--format", "{{.Digest}}", r], m.ws.dir.path()));
        assert_eq!(got.trim(), digest, "{r}");
    }
}

#[test]
fn dry_runs_of_import_and_copy_write_the_configs_and_push_nothing() {
    let m = moved();
    let dst = Registry::start();
    let dest = format!("{}/p", dst.host());
    let r = m
        .ws
        .bundle(&["--registry-config", &m.cfg, "import", "-d", &dest, "--mirrors-out", "dry", "-t", "moved.tar.zst"])
        .success();
    assert!(r.stderr.contains("(nothing was pushed)"), "{}", r.stderr);
    let mut copy = vec!["--registry-config", m.cfg.as_str(), "copy", "-d", &dest, "--mirrors-out", "copy-dry", "-t"];
    for (r, _) in &m.images {
        copy.extend(["--image", r.as_str()]);
    }
    m.ws.bundle(&copy).success();
    dst.assert_untouched("dry runs with --mirrors-out");
    // The same images to the same place: the same files, whichever command wrote them, and a real import
    // writes them too.
    import(&m, &m.cfg, &dest, "path", "real");
    let tree = |d: &str| files_under(&m.ws.path(d));
    let dry = tree("dry");
    assert_eq!(
        dry.keys().cloned().collect::<Vec<_>>(),
        [
            "certs.d/docker.io/hosts.toml",
            "certs.d/ghcr.io/hosts.toml",
            "certs.d/quay.io/hosts.toml",
            "certs.d/registry.k8s.io/hosts.toml",
            "idms.yaml",
            "itms.yaml",
            "registries.conf",
            "registries.yaml"
        ]
    );
    assert_eq!(dry, tree("copy-dry"), "copy and import disagree");
    assert_eq!(dry, tree("real"), "a dry run wrote other files than the import");
    // docker.io's fallback is Docker Hub's registry host, as containerd itself would use.
    let hub = String::from_utf8(dry["certs.d/docker.io/hosts.toml"].clone()).unwrap();
    assert!(hub.contains("server = \"https://registry-1.docker.io\""), "{hub}");
}

/// Every file under `root`, by its path relative to it, with its bytes.
fn files_under(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}
