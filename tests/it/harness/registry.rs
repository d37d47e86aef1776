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

/// The repository name of the harness's own `settle` requests, left out of every count.
const SENTINEL: &str = "bundle-harness-sentinel";
static SENTINELS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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

    /// Wait until every request the registry has answered is in the log. The registry writes its access log
    /// after the response, from another goroutine, so a count taken the moment a client exits can miss its last
    /// requests: send a request of our own, after everything else, and wait for its line.
    pub fn settle(&self) {
        assert!(
            self.options.client_ca.is_none(),
            "settle: this registry wants client certificates; the harness has none"
        );
        let n = SENTINELS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = format!("/v2/{SENTINEL}-{n}/tags/list");
        let sent = harness_client().get(format!("{}{path}", self.base_url())).send();
        assert!(sent.is_ok(), "settle: the registry on port {} did not answer: {sent:?}", self.port);
        assert!(
            self.wait_for_log(&format!("\"GET {path} ")),
            "settle: the registry never logged {path}:\n{}",
            self.log_text()
        );
    }

    /// Access-log lines of the requests answered so far (after `settle`), without the harness's own.
    pub fn requests(&self) -> Vec<String> {
        self.settle();
        let lines = self.log.0.lock().unwrap();
        lines.iter().filter(|l| is_access_line(l) && !l.contains(SENTINEL)).cloned().collect()
    }

    /// Requests answered so far matching `needle` (method and path, e.g. "POST /v2/"), counted after `settle`.
    pub fn count_requests(&self, needle: &str) -> usize {
        self.requests().iter().filter(|l| l.contains(needle)).count()
    }

    /// Requests that write (POST, PUT, PATCH, DELETE) answered so far.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|l| ["\"POST ", "\"PUT ", "\"PATCH ", "\"DELETE "].iter().any(|m| l.contains(m)))
            .collect()
    }

    /// Nothing was written at all: no request that writes reached the registry, its storage holds no repository
    /// (not even blobs of one, `_layers`, or an unfinished upload, `_uploads`), and `_catalog` lists none.
    /// `repositories()` sees only tags; this sees a blob pushed before a refusal.
    #[track_caller]
    pub fn assert_untouched(&self, what: &str) {
        let writes = self.writes();
        assert!(writes.is_empty(), "{what}: the registry got writes:\n{}", writes.join("\n"));
        let stored = self.stored("");
        assert!(stored.is_empty(), "{what}: the registry's storage holds:\n{}", stored.join("\n"));
        if self.options.htpasswd.is_none() && self.options.auth_yaml.is_none() {
            let catalog = harness_client()
                .get(format!("{}/v2/_catalog", self.base_url()))
                .send()
                .and_then(|r| r.text())
                .expect("GET /v2/_catalog");
            assert_eq!(catalog.trim(), r#"{"repositories":[]}"#, "{what}: _catalog lists something");
        }
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

    /// Everything the registry stores for repositories under `prefix` ("" for all): tags, blob links and
    /// unfinished uploads alike.
    pub fn stored(&self, prefix: &str) -> Vec<String> {
        let root = self.storage().join("docker/registry/v2/repositories");
        let mut out = Vec::new();
        collect_paths(&root, &root.join(prefix), &mut out);
        out.sort();
        out
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

/// The harness's own requests (the sentinel, `_catalog`): bounded, and any certificate, as they only look.
fn harness_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().danger_accept_invalid_certs(true).timeout(EVENT_TIMEOUT).build().unwrap()
}

/// Every file and directory under `dir`, relative to `root`.
fn collect_paths(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
        if p.is_dir() {
            collect_paths(root, &p, out);
        }
    }
}

/// An access-log line (`127.0.0.1 - - [time] "GET /v2/… HTTP/1.1" 200 …`), not one of the app's own lines.
fn is_access_line(line: &str) -> bool {
    !line.starts_with("time=") && line.contains("] \"") && line.contains(" HTTP/")
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
