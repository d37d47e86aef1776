//! moto's server as the ECR control plane (the real AWS SDK talks to it through AWS_ENDPOINT_URL_ECR), and
//! a docker-registry that accepts exactly the token moto issues as the data plane.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::Workspace;
use super::proxy::{Fault, FaultProxy};
use super::registry::{Registry, RegistryOptions, free_port};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// moto's GetAuthorizationToken password for ACCOUNT.
pub const TOKEN_PASSWORD: &str = "123456789012-auth-token";

pub fn ecr_host() -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com")
}

/// The Python of the venv moto runs from (it has `jsonschema`, which moto's server needs too).
pub fn venv_python() -> PathBuf {
    let server = moto_server();
    let python = server.with_file_name("python3");
    if python.is_file() { python } else { PathBuf::from("python3") }
}

fn moto_server() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("moto_server")).find(|p| p.is_file()));
    on_path
        .or_else(|| Some(PathBuf::from("/opt/bundle-venv/bin/moto_server")).filter(|p| p.is_file()))
        .expect("these tests need moto_server: python3 -m venv /opt/bundle-venv && /opt/bundle-venv/bin/pip install 'moto[server]'")
}

pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    /// `auth`: make moto check AWS credentials (unknown keys are refused).
    pub fn start(auth: bool) -> Moto {
        let port = free_port();
        let mut cmd = Command::new(moto_server());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let mut child = cmd.spawn().expect("start moto_server");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Running on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("moto_server did not start");
        Moto { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for `bundle`: dummy credentials, the region, no instance metadata, the endpoint.
    pub fn configure(&self, ws: &mut Workspace) {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL_ECR", &self.endpoint()),
        ] {
            ws.env(k, v);
        }
    }

    /// Call an ECR action on moto directly (JSON 1.1 protocol; moto does not check signatures unless asked).
    pub fn call(&self, action: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        call(&self.endpoint(), action, body)
    }

    pub fn repository(&self, name: &str) -> Option<serde_json::Value> {
        describe_repository(&self.endpoint(), name)
    }

    pub fn repository_names(&self) -> Vec<String> {
        let (_, v) = self.call("DescribeRepositories", serde_json::json!({}));
        let mut names: Vec<String> = v["repositories"]
            .as_array()
            .map(|a| a.iter().map(|r| r["repositoryName"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn call(endpoint: &str, action: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::Client::new()
        .post(endpoint)
            .header("X-Amz-Target", format!("AmazonEC2ContainerRegistry_V20150921.{action}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("Authorization", format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/ecr/aws4_request, SignedHeaders=host, Signature=0"))
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().unwrap()).unwrap_or(serde_json::Value::Null))
}

fn describe_repository(endpoint: &str, name: &str) -> Option<serde_json::Value> {
    let (status, v) = call(endpoint, "DescribeRepositories", serde_json::json!({"repositoryNames": [name]}));
    (status == 200).then(|| v["repositories"][0].clone())
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ECR's data plane as ECR behaves: a docker-registry that accepts only moto's token, behind a gate that asks
/// moto about every request. A repository moto does not have is NAME_UNKNOWN (docker-registry alone would
/// create it on the first push), and a tag the repository's mutability settings make immutable is never
/// overwritten (TAG_INVALID, ECR's ImageTagAlreadyExistsException) whatever the client checked first.
pub struct EcrDataPlane {
    pub registry: Registry,
    pub gate: FaultProxy,
}

impl EcrDataPlane {
    pub fn start(ws: &Workspace, moto: &Moto) -> EcrDataPlane {
        let registry = ecr_data_plane(ws);
        let (endpoint, tags) = (moto.endpoint(), registry.storage().join("docker/registry/v2/repositories"));
        let gate = move |method: &str, path: &str| -> Option<Fault> {
            let (name, rest) = repository_of(path)?;
            let Some(repo) = describe_repository(&endpoint, &name) else {
                let message =
                    format!("The repository with name '{name}' does not exist in the registry with id '{ACCOUNT}'");
                return Some(Fault::Refuse(404, "NAME_UNKNOWN", message));
            };
            let tag = rest.strip_prefix("manifests/").filter(|t| !t.starts_with("sha256:"))?;
            let exists = tags.join(&name).join("_manifests/tags").join(tag).join("current/link").is_file();
            if method == "PUT" && exists && tag_is_immutable(&repo, tag) {
                let message = format!(
                    "The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten because the tag is immutable."
                );
                return Some(Fault::Refuse(400, "TAG_INVALID", message));
            }
            None
        };
        let gate = FaultProxy::start_gated(registry.port, std::sync::Arc::new(gate));
        EcrDataPlane { registry, gate }
    }

    /// Where the registry config sends ECR's hostname: the gate.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.gate.host())
    }
}

/// `/v2/NAME/(blobs|manifests|tags)/REST` → (NAME, `blobs/…`); None for `/v2/` and `/v2/_catalog`.
fn repository_of(path: &str) -> Option<(String, String)> {
    let path = path.split('?').next()?.strip_prefix("/v2/")?;
    let at = ["/blobs/", "/manifests/", "/tags/"].iter().filter_map(|k| path.rfind(k)).max()?;
    Some((path[..at].to_string(), path[at + 1..].to_string()))
}

/// Whether `tag` may not move in `repo` (a DescribeRepositories entry), as ECR decides: the mutability, and
/// for the `*_WITH_EXCLUSION` kinds the wildcard filters that make a tag the exception.
fn tag_is_immutable(repo: &serde_json::Value, tag: &str) -> bool {
    let excluded = || {
        repo["imageTagMutabilityExclusionFilters"]
            .as_array()
            .is_some_and(|fs| fs.iter().filter_map(|f| f["filter"].as_str()).any(|f| wildcard(f, tag)))
    };
    match repo["imageTagMutability"].as_str() {
        Some("IMMUTABLE") => true,
        Some("IMMUTABLE_WITH_EXCLUSION") => !excluded(),
        Some("MUTABLE_WITH_EXCLUSION") => excluded(),
        _ => false,
    }
}

/// ECR's wildcard filters: `*` stands for any run of characters.
fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head) && (0..=text.len() - head.len()).any(|i| wildcard(tail, &text[head.len() + i..]))
        }
    }
}

/// A docker-registry that accepts only `AWS:<moto's token>` (Basic, over plain HTTP on loopback).
pub fn ecr_data_plane(ws: &Workspace) -> Registry {
    let hash = bcrypt::hash_with_result(TOKEN_PASSWORD, 4).unwrap().format_for_version(bcrypt::Version::TwoY);
    let htpasswd = ws.write("ecr-htpasswd", &format!("AWS:{hash}\n"));
    Registry::start_with(RegistryOptions { htpasswd: Some(htpasswd), ..Default::default() })
}

/// A manifest's bytes from the data plane, with the token.
pub fn ecr_manifest(data: &Registry, repo: &str, reference: &str) -> Option<Vec<u8>> {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/v2/{repo}/manifests/{reference}", data.base_url()))
        .basic_auth("AWS", Some(TOKEN_PASSWORD))
        .header(
            "accept",
            [super::OCI_INDEX, super::OCI_MANIFEST, super::DOCKER_LIST, super::DOCKER_MANIFEST].join(", "),
        )
        .send()
        .unwrap();
    r.status().is_success().then(|| r.bytes().unwrap().to_vec())
}
