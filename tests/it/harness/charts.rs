//! Chart fixtures: the fixture charts copied into a workspace (the `.tgz` subchart built), a registry seeded
//! with every image they can name, a registry config that sends quay.io, docker.io, registry.k8s.io and
//! ghcr.io there, and a tiny static HTTP server for chart repositories.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::fixtures::*;
use super::registry::Registry;
use super::Workspace;

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

/// Copy the fixture charts into `ws/charts` and build `platform/charts/legacy-1.0.0.tgz`.
pub fn fixture_charts(ws: &Workspace) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts");
    let dst = ws.path("charts");
    copy_dir(&src, &dst);
    let tgz = bundle::chart::package::package_dir(&dst.join("legacy")).unwrap();
    std::fs::write(dst.join("platform/charts/legacy-1.0.0.tgz"), tgz).unwrap();
    dst
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
        cfg.push_str(&format!("[[registry]]\nname = \"{n}\"\nendpoint = \"{}\"\nprefix = \"{n}\"\n\n", world.base_url()));
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
                        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
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
