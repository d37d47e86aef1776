//! moto's server as the ECR control plane (the real AWS SDK talks to it through AWS_ENDPOINT_URL_ECR), and
//! a docker-registry that accepts exactly the token moto issues as the data plane.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::Workspace;
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
        let r = reqwest::blocking::Client::new()
            .post(self.endpoint())
            .header("X-Amz-Target", format!("AmazonEC2ContainerRegistry_V20150921.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("Authorization", format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/ecr/aws4_request, SignedHeaders=host, Signature=0"))
            .body(body.to_string())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_slice(&r.bytes().unwrap()).unwrap_or(serde_json::Value::Null))
    }

    pub fn repository(&self, name: &str) -> Option<serde_json::Value> {
        let (status, v) = self.call("DescribeRepositories", serde_json::json!({"repositoryNames": [name]}));
        (status == 200).then(|| v["repositories"][0].clone())
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

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
