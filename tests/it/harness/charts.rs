//! Chart fixtures: the fixture charts copied into a workspace (the `.tgz` subchart built), a registry seeded
//! with every image they can name, a registry config that sends quay.io, docker.io, registry.k8s.io and
//! ghcr.io there, and a tiny static HTTP server for chart repositories.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::Workspace;
use super::fixtures::*;
use super::registry::Registry;

/// Every image the fixture chart `platform` can run, in any pass, plus the one only its annotation names.
pub const PLATFORM_IMAGES: &[&str] = &[
    "quay.io/stackstate/platform-api:2.3.0",
    "quay.io/stackstate/worker:2.3.1",
    "quay.io/stackstate/pinned:1.0",
    "quay.io/stackstate/operator:v1",
    "quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0",
    "quay.io/prometheus/prometheus:v2.51.0",
    "docker.io/library/busybox:1.36",
    "quay.io/stackstate/computed-sidecar:2.3.0",
    "quay.io/prometheuscommunity/elasticsearch-exporter:v1.7.0",
    "quay.io/prometheuscommunity/kafka-exporter:v1.6.0",
    "registry.k8s.io/legacy/agent:3.1",
    "ghcr.io/example/localdep:0.1",
    "quay.io/stackstate/annotated-tool:0.9",
    "ghcr.io/example/inner:0.3",
    "quay.io/stackstate/kube-legacy:1.0",
];

pub const NAMES: &[&str] = &["quay.io", "docker.io", "registry.k8s.io", "ghcr.io"];

/// Copy the fixture charts into `ws/charts` and build `platform/charts/legacy-1.0.0.tgz` with `helm package`.
pub fn fixture_charts(ws: &Workspace) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts");
    let dst = ws.path("charts");
    copy_dir(&src, &dst);
    let (legacy, vendored) = (dst.join("legacy"), dst.join("platform/charts"));
    helm_run(ws, &["package", legacy.to_str().unwrap(), "-d", vendored.to_str().unwrap()]);
    assert!(vendored.join("legacy-1.0.0.tgz").is_file(), "helm package wrote no legacy-1.0.0.tgz");
    dst
}

/// `helm package` of the platform chart into `out`, as its publisher would release it: the `file://` dependency
/// vendored into `charts/` first (what `helm dependency build` does; it would also try the network for `legacy`).
/// Returns the package's path.
pub fn helm_package_platform(ws: &Workspace, charts: &Path, out: &Path) -> PathBuf {
    let platform = charts.join("platform");
    if !platform.join("charts/localdep").exists() {
        copy_dir(&charts.join("localdep"), &platform.join("charts/localdep"));
    }
    let printed = helm_run(ws, &["package", platform.to_str().unwrap(), "-d", out.to_str().unwrap()]);
    let path = printed.trim().rsplit(": ").next().map(PathBuf::from).expect("helm package names its package");
    assert!(path.is_file(), "helm package said {printed}");
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A registry holding every fixture image under `<registry name>/<path>`, and the registry config (in `ws`)
/// that routes the public names to it. Returns the config path and the digest of the pinned image.
pub fn seed_world(ws: &Workspace, world: &Registry) -> (PathBuf, String) {
    let p = Pusher::new(&world.base_url());
    let mut pinned = String::new();
    for (i, r) in PLATFORM_IMAGES.iter().enumerate() {
        let (name, tag) = r.rsplit_once(':').unwrap();
        let img = image(&[random_layer(1024, 500 + i as u64)], "amd64", false);
        p.image(name, tag, &img);
        if name.ends_with("/pinned") {
            pinned = img.manifest.digest.clone();
        }
    }
    let mut cfg = String::new();
    for n in NAMES {
        cfg.push_str(&format!(
            "[[registry]]\nname = \"{n}\"\nendpoint = \"{}\"\nprefix = \"{n}\"\n\n",
            world.base_url()
        ));
    }
    (ws.write("world.toml", &cfg), pinned)
}

/// Serves the files of a directory over HTTP on a free loopback port until dropped.
pub struct StaticServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl StaticServer {
    pub fn start(root: &Path) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (root, flag) = (root.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Drain the headers.
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
                let file = root.join(&path);
                let reply = match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let mut r =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                                .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = conn.write_all(&reply);
            }
        });
        StaticServer { port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The helm binary the tests render with; they fail (not skip) without it.
pub fn helm() -> PathBuf {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("helm")).find(|p| p.is_file()));
    found.expect("these tests need a helm binary on PATH: run scripts/install-helm")
}

/// Run helm with its config, cache and data inside `ws` (nothing of the machine's helm setup leaks in), bounded
/// by the clients' timeout; panics, with helm's stderr, unless it succeeds. Returns stdout.
#[track_caller]
pub fn helm_run(ws: &Workspace, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["--kill-after=10", super::clients::CLIENT_TIMEOUT_SECS])
        .arg(helm())
        .args(args)
        .env("HELM_CONFIG_HOME", ws.path("helm-config"))
        .env("HELM_CACHE_HOME", ws.path("helm-cache"))
        .env("HELM_DATA_HOME", ws.path("helm-data"))
        .current_dir(ws.dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run helm");
    assert!(out.status.success(), "helm {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// Every image the rendered documents name under a key named `image`: the reviewer's rule as
/// scripts/chart-ground-truth states it, written again here without bundle's code. A container's image counts as
/// written (istio's `image: auto` placeholder excepted); outside containers an image kept in pieces counts as
/// assembled (`image` beside `registry`/`hub` and `repository`, then `version`/`tag`; a bare name takes
/// `hub`/`registry` and `tag`/`version` from above or from `global`), and a bare name left incomplete in a document
/// that keeps images in pieces is no image. ConfigMap data holding YAML documents is searched too.
pub fn strict_images(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).expect("helm prints YAML");
        let mut docs = vec![v.clone()];
        if v.get("kind").and_then(Value::as_str) == Some("ConfigMap")
            && let Some(Value::Mapping(data)) = v.get("data")
        {
            for s in data.values().filter_map(Value::as_str).filter(|s| s.len() <= 1 << 20) {
                for inner in serde_yaml_ng::Deserializer::from_str(s) {
                    match Value::deserialize(inner) {
                        Ok(d @ (Value::Mapping(_) | Value::Sequence(_))) => docs.push(d),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        }
        for d in &docs {
            oracle::walk(d, &mut Vec::new(), None, oracle::has_pieces(d), &mut out);
        }
    }
    out
}

/// The test's own statement of the pieces rule (see `strict_images`).
mod oracle {
    use std::collections::BTreeSet;

    use serde_yaml_ng::{Mapping, Value};

    fn piece(m: &Mapping, key: &str) -> Option<String> {
        match m.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn has_pieces(v: &Value) -> bool {
        match v {
            Value::Mapping(m) => {
                let image = matches!(m.get("image"), Some(Value::String(s)) if !s.trim().is_empty());
                (image && ["registry", "hub", "repository", "version", "tag"].iter().any(|k| piece(m, k).is_some()))
                    || m.values().any(has_pieces)
            }
            Value::Sequence(s) => s.iter().any(has_pieces),
            _ => false,
        }
    }

    fn from_above(own: &Mapping, above: &[&Mapping], keys: &[&str]) -> Option<String> {
        let mut scopes: Vec<&Mapping> = own.get("global").and_then(Value::as_mapping).into_iter().collect();
        for a in above.iter().rev() {
            scopes.push(a);
            scopes.extend(a.get("global").and_then(Value::as_mapping));
        }
        scopes.iter().find_map(|s| keys.iter().find_map(|k| piece(s, k)))
    }

    fn assemble(value: &str, own: &Mapping, above: &[&Mapping], doc_has_pieces: bool) -> Option<String> {
        let first = value.split('/').next().unwrap_or("");
        let host = value.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
        let tagged = |s: &str| s.rsplit('/').next().unwrap_or("").contains(':') || s.contains('@');
        let bare = !value.contains('/') && !tagged(value);
        let (mut name, mut used) = (value.to_string(), false);
        if !host {
            let front = piece(own, "registry").or_else(|| piece(own, "hub"));
            let mut parts: Vec<String> = front.into_iter().chain(piece(own, "repository")).collect();
            if parts.is_empty() && bare {
                parts.extend(from_above(own, above, &["registry", "hub"]));
            }
            if !parts.is_empty() {
                let parts: Vec<&str> = parts.iter().map(|p| p.trim_end_matches('/')).collect();
                name = format!("{}/{name}", parts.join("/"));
                used = true;
            }
        }
        if !tagged(value) {
            let version = piece(own, "version")
                .or_else(|| piece(own, "tag"))
                .or_else(|| if bare { from_above(own, above, &["version", "tag"]) } else { None });
            if let Some(v) = version {
                name = format!("{name}{}{v}", if v.starts_with("sha256:") { '@' } else { ':' });
                used = true;
            }
        }
        if bare && (used || doc_has_pieces) && !(name.contains('/') && tagged(&name)) {
            return None;
        }
        Some(name)
    }

    pub fn walk<'v>(
        v: &'v Value,
        above: &mut Vec<&'v Mapping>,
        list: Option<&str>,
        pieces: bool,
        out: &mut BTreeSet<String>,
    ) {
        match v {
            Value::Mapping(m) => {
                for (k, val) in m {
                    match (k.as_str(), val) {
                        (Some("image"), Value::String(s)) if !s.trim().is_empty() => {
                            let s = s.trim();
                            let container =
                                matches!(list, Some("containers" | "initContainers" | "ephemeralContainers"));
                            let image = if container {
                                (s != "auto").then(|| s.to_string())
                            } else {
                                assemble(s, m, above, pieces)
                            };
                            out.extend(image);
                        }
                        (key, Value::Sequence(items)) => {
                            above.push(m);
                            for item in items {
                                walk(item, above, key, pieces, out);
                            }
                            above.pop();
                        }
                        _ => {
                            above.push(m);
                            walk(val, above, None, pieces, out);
                            above.pop();
                        }
                    }
                }
            }
            Value::Sequence(s) => s.iter().for_each(|x| walk(x, above, None, pieces, out)),
            _ => {}
        }
    }
}

/// The whitespace-, quote- and `=`-separated words of the strings in rendered documents (keys and values;
/// comments are not read, as no pod reads them), for "does this reference appear" questions.
pub fn words(text: &str) -> BTreeSet<String> {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Mapping(m) => {
                for (k, val) in m {
                    strings(k, out);
                    strings(val, out);
                }
            }
            Value::Sequence(s) => s.iter().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        strings(&Value::deserialize(doc).expect("helm prints YAML"), &mut all);
    }
    all.iter()
        .flat_map(|s| s.split(|c: char| c.is_whitespace() || "\"'=,;()[]{}|`".contains(c)))
        .map(|w| w.trim_end_matches(['.', ':']).to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// A registry config that sends every registry host in `refs` to `world`, under the host's name.
pub fn world_config(ws: &Workspace, world: &Registry, refs: &BTreeSet<String>) -> PathBuf {
    let hosts: BTreeSet<String> =
        refs.iter().map(|r| bundle::oci::reference::ImageRef::parse(r).unwrap().registry().to_string()).collect();
    let mut cfg = String::new();
    for h in hosts {
        cfg.push_str(&format!(
            "[[registry]]\nname = \"{h}\"\nendpoint = \"{}\"\nprefix = \"{h}\"\n\n",
            world.base_url()
        ));
    }
    ws.write("world.toml", &cfg)
}

/// A small fake image under each reference's real name (host as the first path component).
pub fn seed(world: &Registry, refs: &BTreeSet<String>) {
    let p = Pusher::new(&world.base_url());
    for (i, r) in refs.iter().enumerate() {
        let parsed = bundle::oci::reference::ImageRef::parse(r).unwrap();
        assert!(parsed.digest().is_none(), "{r}: a digest pin cannot be faked; drop it with test_set");
        let img = image(&[random_layer(256, 9000 + i as u64)], "amd64", false);
        p.image(&format!("{}/{}", parsed.registry(), parsed.repository()), parsed.tag().unwrap_or("latest"), &img);
    }
}

/// What one chart's closed loop showed: images the rendered chart pulls from the destination (`moved`, each
/// checked to exist there), images it still pulls from elsewhere (`unmoved`), and those import warned about.
pub struct LoopOutcome {
    pub moved: BTreeSet<String>,
    pub unmoved: BTreeSet<String>,
    pub warned: BTreeSet<String>,
    pub values: String,
    pub export_stderr: String,
    /// Seconds `bundle export` took (the proof included).
    pub export_secs: f64,
    /// Each pass rendered with the values file.
    pub renders: Vec<String>,
    /// What `bundle check` said of each image of that render: `ok`, `not-under`, `missing`, …
    pub checked: BTreeMap<String, String>,
    pub import_stderr: String,
    /// `HOST:PORT/mirror`, where import pushed.
    pub dest: String,
}

/// Fake images under the chart's real names in a loopback registry, `export -c`, `import -d DEST/mirror
/// --values-out`, and `helm template` of every pass with the values file: every image under the destination
/// must exist there.
pub fn closed_loop(
    ws: &Workspace,
    chart: &Path,
    set: &[String],
    passes: &[Vec<String>],
    kube_version: Option<&str>,
) -> LoopOutcome {
    let world = Registry::start();
    let dst = Registry::start();
    let mut chart_args: Vec<String> = vec!["-c".into(), chart.display().to_string()];
    for s in set {
        chart_args.extend(["--set".into(), s.clone()]);
    }
    for p in passes {
        chart_args.extend(["--pass".into(), p.join(",")]);
    }
    if let Some(k) = kube_version {
        chart_args.extend(["--kube-version".into(), k.to_string()]);
    }
    let mut images = vec!["images".to_string()];
    images.extend(chart_args.iter().cloned());
    let refs: BTreeSet<String> = ws
        .bundle(&images.iter().map(String::as_str).collect::<Vec<_>>())
        .success()
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    seed(&world, &refs);
    let cfg = world_config(ws, &world, &refs);
    let mut export: Vec<String> = vec!["--registry-config".into(), cfg.display().to_string(), "export".into()];
    export.extend(chart_args.iter().cloned());
    export.extend(["-o".into(), "loop.tar.zst".into()]);
    let started = std::time::Instant::now();
    let export = ws.bundle(&export.iter().map(String::as_str).collect::<Vec<_>>()).success();
    let export_secs = started.elapsed().as_secs_f64();
    let dest = format!("{}/mirror", dst.host());
    let import = ws.bundle(&["import", "-d", &dest, "loop.tar.zst", "--values-out", "airgap.yaml"]).success();
    let warned: BTreeSet<String> = import
        .stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("warning: ")?;
            rest.split_once(&format!(" does not land at {dest} with airgap.yaml: ")).map(|(image, _)| image.to_string())
        })
        .collect();
    // Keys the export's --set or --pass also set: the user adds the flags import printed after the values file.
    let flags: Vec<String> = import
        .stderr
        .lines()
        .skip_while(|l| !l.contains("add these flags after it:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.trim().strip_prefix("--set-string ").map(|f| format!("--set-string={f}")))
        .collect();
    let values_path = ws.path("airgap.yaml");
    let values = std::fs::read_to_string(&values_path).unwrap();
    let (mut moved, mut unmoved, mut renders) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    let passes: Vec<Vec<String>> = if passes.is_empty() { vec![vec![]] } else { passes.to_vec() };
    for pass in &passes {
        let mut cmd = Command::new(helm());
        cmd.args(["template", "bundle"]).arg(chart).args(["--namespace", "default", "-f"]).arg(&values_path);
        for s in set.iter().chain(pass) {
            cmd.args(["--set", s]);
        }
        cmd.args(&flags);
        if let Some(k) = kube_version {
            cmd.args(["--kube-version", k]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: helm template with the values file failed: {}\n{values}",
            chart.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let present = words(&text);
        let prefix = format!("{dest}/");
        for image in strict_images(&text)
            .iter()
            .map(String::as_str)
            .chain(present.iter().map(String::as_str).filter(|w| refs.contains(*w)))
        {
            match image.strip_prefix(&prefix) {
                Some(rest) => moved.insert(rest.to_string()),
                None => unmoved.insert(image.to_string()),
            };
        }
        // References under the destination outside `image:` keys (env, args, configs); a word without a tag or
        // digest there is a repository setting, not something a pod pulls.
        for w in present.iter().filter(|w| w.starts_with(&prefix)) {
            let rest = &w[prefix.len()..];
            if rest.rsplit('/').next().is_some_and(|last| last.contains(':')) || rest.contains('@') {
                moved.insert(rest.to_string());
            }
        }
        renders.push(text);
    }
    for rest in &moved {
        let (repo, reference) = match rest.split_once('@') {
            Some((name, digest)) => (name.rsplit_once(':').map_or(name, |(n, _)| n), digest),
            None => rest.rsplit_once(':').unwrap_or((rest.as_str(), "latest")),
        };
        assert!(
            get_manifest(&dst.base_url(), &format!("mirror/{repo}"), reference).is_some(),
            "{}: the values file sends a pod to {dest}/{rest}, which import did not push\n{values}",
            chart.display()
        );
    }
    // The site's own check, through bundle: the same render, every image ok, or not under the destination
    // for exactly the images import named.
    let mut check: Vec<String> = vec!["check".into(), "-d".into(), dest.clone()];
    check.extend(chart_args.iter().cloned());
    check.extend(["-f".into(), values_path.display().to_string(), "--json".into()]);
    check.extend(flags.iter().cloned());
    let run = ws.bundle(&check.iter().map(String::as_str).collect::<Vec<_>>());
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("bundle check printed no JSON ({e}): {}\n{}", run.stdout, run.stderr));
    let mut checked = BTreeMap::new();
    for image in report["images"].as_array().expect("images") {
        checked.insert(
            image["reference"].as_str().expect("reference").to_string(),
            image["status"].as_str().expect("status").to_string(),
        );
    }
    // A render with no image to check proves nothing: check says so and fails.
    assert_eq!(
        run.code == 0,
        !checked.is_empty() && checked.values().all(|s| s == "ok"),
        "bundle check exits 0 exactly when there are images and every one is ok: {}",
        run.stderr
    );
    LoopOutcome {
        moved,
        unmoved,
        warned,
        values,
        export_stderr: export.stderr,
        export_secs,
        renders,
        checked,
        import_stderr: import.stderr,
        dest,
    }
}

/// Every rendered image is under `dest` (`HOST/PREFIX`) and its manifest exists in `dst` under that prefix;
/// `context` (the values file) goes into the failure message.
#[track_caller]
pub fn assert_images_exist_at<'a>(
    dst: &Registry,
    dest: &str,
    images: impl IntoIterator<Item = &'a String>,
    context: &str,
) {
    let prefix = dest.split_once('/').map_or("", |(_, p)| p);
    for image in images {
        let rest = image
            .strip_prefix(&format!("{dest}/"))
            .unwrap_or_else(|| panic!("{image} is not under {dest}\nvalues:\n{context}"));
        let (repo, reference) = match rest.split_once('@') {
            Some((name, digest)) => (name.rsplit_once(':').map_or(name, |(n, _)| n), digest),
            None => rest.rsplit_once(':').unwrap(),
        };
        assert!(
            get_manifest(&dst.base_url(), &format!("{prefix}/{repo}"), reference).is_some(),
            "{image} is not at the destination\nvalues:\n{context}"
        );
    }
}
