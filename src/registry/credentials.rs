//! Where credentials for a registry come from, in order: the registry config file, the vendor script's
//! environment variables, podman's auth file, then docker's config (static `auths`, `credHelpers`,
//! `credsStore`).
//!
//! Each credential remembers where it came from, so an authentication failure can say which source to fix,
//! and the secret itself is never printed (`Debug` redacts it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde::Deserialize;

use crate::oci::reference::DOCKER_HUB;
use crate::support::child_process::{RunError, run_bounded};
use crate::support::env_vars;

/// Which side of a transfer a registry is on: the vendor's variables are per side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Destination,
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Human-readable origin, e.g. "DST_REGISTRY_USERNAME/PASSWORD" or "/root/.docker/config.json".
    pub origin: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: <redacted>, origin: {:?} }}", self.username, self.origin)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// Credentials that can be fetched again when the registry refuses them (ECR tokens expire after 12 hours,
/// and big imports outlive them).
pub trait CredentialSource: Send + Sync {
    fn fetch(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Credentials, String>> + Send + '_>>;
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the `auth` entry for `{registry}` in {path} is not base64 of `user:password`")]
    BadAuth { registry: String, path: PathBuf },
    #[error("credential helper `docker-credential-{helper}` failed for `{registry}`: {message}")]
    Helper { helper: String, registry: String, message: String },
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Find credentials for `registry` (the name as written in references).
///
/// `config_credentials` are the ones from the registry config file, which win over everything.
pub fn lookup(
    registry: &str,
    role: Role,
    config_credentials: Option<&(String, String)>,
) -> Result<Option<Credentials>, CredentialsError> {
    if let Some((u, p)) = config_credentials {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
            origin: "the registry config file".into(),
        }));
    }
    let env_pair = match role {
        Role::Source if registry == env_vars::STS_REGISTRY => {
            Some((env_vars::STS_REGISTRY_USERNAME, env_vars::STS_REGISTRY_PASSWORD))
        }
        Role::Destination => Some((env_vars::DST_REGISTRY_USERNAME, env_vars::DST_REGISTRY_PASSWORD)),
        Role::Source => None,
    };
    if let Some((uv, pv)) = env_pair
        && let (Ok(u), Ok(p)) = (std::env::var(uv), std::env::var(pv))
        && !u.is_empty()
    {
        return Ok(Some(Credentials { username: u, password: p, origin: format!("{uv}/{pv}") }));
    }
    for path in auth_files() {
        if let Some(c) = from_auth_file(&path, registry)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Podman's file first (it is explicit), then docker's.
fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os(env_vars::REGISTRY_AUTH_FILE) {
        files.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::var_os(env_vars::DOCKER_CONFIG) {
        files.push(Path::new(&dir).join("config.json"));
    } else if let Some(home) = std::env::var_os(env_vars::HOME) {
        files.push(Path::new(&home).join(".docker").join("config.json"));
    }
    files
}

/// The keys docker writes for `registry` in `auths` (`https://index.docker.io/v1/` for Docker Hub).
fn matches_key(key: &str, registry: &str) -> bool {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    if registry == DOCKER_HUB {
        matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
    } else {
        host == registry
    }
}

fn from_auth_file(path: &Path, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CredentialsError::Read { path: path.to_path_buf(), source }),
    };
    let config: DockerConfig = serde_json::from_str(&text)
        .map_err(|e| CredentialsError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    let origin = path.display().to_string();

    if let Some(helper) = config.cred_helpers.iter().find(|(k, _)| matches_key(k, registry)).map(|(_, h)| h) {
        return run_helper(helper, registry);
    }
    if let Some((_, entry)) = config.auths.iter().find(|(k, _)| matches_key(k, registry)) {
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials { username: u.clone(), password: p.clone(), origin }));
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad = || CredentialsError::BadAuth { registry: registry.to_string(), path: path.to_path_buf() };
            let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
            let raw = String::from_utf8(raw).map_err(|_| bad())?;
            let (u, p) = raw.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credentials { username: u.to_string(), password: p.to_string(), origin }));
        }
    }
    if let Some(store) = &config.creds_store {
        return run_helper(store, registry);
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// A helper may prompt (a hardware key, a login window) but must not hang an import forever.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `docker-credential-<helper> get`, the credential-helper protocol: server URL on stdin, JSON on stdout.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
    let program = format!("docker-credential-{helper}");
    let err = |message: String| CredentialsError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    let server = if registry == DOCKER_HUB { "https://index.docker.io/v1/".to_string() } else { registry.to_string() };
    let mut cmd = Command::new(&program);
    cmd.arg("get");
    let out = run_bounded(cmd, Some(server.into_bytes()), HELPER_TIMEOUT).map_err(|e| match e {
        RunError::Spawn(e) => err(format!("cannot run `{program}`: {e}")),
        RunError::TimedOut => {
            err(format!("`{program} get` did not answer within {} s and was stopped", HELPER_TIMEOUT.as_secs()))
        }
    })?;
    if !out.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The protocol's way of saying "nothing stored for this server".
        if stdout.contains("credentials not found")
            || String::from_utf8_lossy(&out.stderr).contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(err(format!("it exited with {}", out.status)));
    }
    let reply: HelperReply =
        serde_json::from_slice(&out.stdout).map_err(|_| err("its output is not the expected JSON".into()))?;
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
        origin: format!("credential helper {program}"),
    }))
}

impl crate::support::hint::Hint for CredentialsError {
    fn hint(&self) -> Option<String> {
        match self {
            CredentialsError::Helper { .. } => {
                Some("run the helper by hand (`echo REGISTRY | docker-credential-NAME get`) to see why it fails".into())
            }
            _ => Some(
                "fix or move the credentials file; docs/usage.md, \"Credentials\", lists where bundle looks".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_keys() {
        assert!(matches_key("https://index.docker.io/v1/", "docker.io"));
        assert!(matches_key("quay.io", "quay.io"));
        assert!(matches_key("https://quay.io", "quay.io"));
        assert!(!matches_key("quay.io.evil.com", "quay.io"));
    }

    #[test]
    fn reads_base64_auth_and_redacts_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"reg.example:5000":{"auth":"dXNlcjpzM2NyZXQ="}}}"#).unwrap();
        let c = from_auth_file(&path, "reg.example:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(from_auth_file(&path, "other.example").unwrap().is_none());
    }
}
