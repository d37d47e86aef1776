//! Real `docker-registry` processes (CNCF distribution) on free loopback ports, one temp storage dir each,
//! stopped when dropped. Readiness and events are read from the registry's own log, never waited for with
//! sleeps.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a registry may take to start or a logged event to appear before the test fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct RegistryOptions {
    /// (certificate PEM path, key PEM path) to serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// htpasswd file for Basic auth.
    pub htpasswd: Option<PathBuf>,
    /// CA whose client certificates are required (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Raw YAML for the `auth:` section (e.g. the token flow), instead of htpasswd.
    pub auth_yaml: Option<String>,
}

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    options: RegistryOptions,
    child: Option<Child>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    pub fn start_with(options: RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().expect("registry temp dir");
        let port = free_port();
        let mut r = Registry { port, dir, options, child: None, log: Default::default() };
        r.spawn();
        r
    }

    /// `127.0.0.1:PORT`, as written in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{}\n",
            self.storage().display(),
            self.port
        );
        if let Some((cert, key)) = &self.options.tls {
            yaml.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
            if let Some(ca) = &self.options.client_ca {
                yaml.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
        }
        if let Some(auth) = &self.options.auth_yaml {
            yaml.push_str(auth);
        }
        if let Some(h) = &self.options.htpasswd {
            yaml.push_str(&format!("auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n", h.display()));
        }
        std::fs::write(&config, yaml).expect("write registry config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        self.log.0.lock().unwrap().clear();
        for out in [
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stdout.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let (lines, cv) = &*log;
                    lines.lock().unwrap().push(line);
                    cv.notify_all();
                }
            });
        }
        self.child = Some(child);
        assert!(
            self.wait_for_log("listening on"),
            "docker-registry did not start on port {}:\n{}",
            self.port,
            self.log_text()
        );
    }

    /// Block until a log line contains `needle` (true) or the timeout passes (false).
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let (lines, cv) = &*self.log;
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut guard = lines.lock().unwrap();
        loop {
            if guard.iter().any(|l| l.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub fn log_text(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }

    /// Log lines of requests matching `needle` (method and path, e.g. "POST /v2/").
    pub fn count_requests(&self, needle: &str) -> usize {
        self.log.0.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port with the same storage (after `stop`).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Repositories in the registry, from its storage (no HTTP: works whatever the auth).
    pub fn repositories(&self) -> Vec<String> {
        let root = self.storage().join("docker/registry/v2/repositories");
        let mut out = Vec::new();
        collect_repos(&root, &root, &mut out);
        out.sort();
        out
    }
}

fn collect_repos(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "_manifests") {
            out.push(dir.strip_prefix(root).unwrap().to_string_lossy().to_string());
        } else if p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('_') {
            collect_repos(root, &p, out);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
