//! The registry config file: where requests for a registry name really go, and how to trust and log in to it.
//!
//! Air-gapped sites put mirrors, private CAs and client certificates between names and hosts; the tests use
//! the same file to send `quay.io` to a loopback registry. Without an entry, a name is spoken to at
//! `https://<name>`, except loopback names (plain HTTP) and `docker.io` (`registry-1.docker.io`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::oci::reference::{DOCKER_HUB, DOCKER_HUB_ENDPOINT, is_loopback_host};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the registry config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the registry config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("in the registry config file {path}, registry `{name}`: {message}")]
    Entry { path: PathBuf, name: String, message: String },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RegistryEntry {
    name: String,
    endpoint: Option<String>,
    prefix: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    /// ECR behaviour and repository settings (`[registry.ecr]`), read by the ECR module.
    ecr: Option<toml::Table>,
}

/// Everything needed to talk to one registry name.
#[derive(Clone)]
pub struct Endpoint {
    /// The name as written in image references (`quay.io`).
    pub name: String,
    /// Scheme, host and port requests go to.
    pub base: Url,
    /// Path prefix inserted before repository names (mirror layouts), without slashes at the ends.
    pub prefix: Option<String>,
    pub tls: TlsSettings,
    /// Credentials written in the config file itself, if any.
    pub config_credentials: Option<(String, String)>,
    /// The `[registry.ecr]` table from the config file, if any, and the directory relative paths in it are
    /// relative to.
    pub ecr: Option<(toml::Table, PathBuf)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the configured password.
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The parsed registry config file (or the empty default).
#[derive(Debug, Default, Clone)]
pub struct RegistryConfig {
    path: Option<PathBuf>,
    entries: Vec<RegistryEntry>,
}

impl RegistryConfig {
    pub fn load(path: &Path) -> Result<RegistryConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<RegistryConfig, ConfigError> {
        let file: ConfigFile = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let mut entries = Vec::new();
        for mut e in file.registry {
            let err = |message: String| ConfigError::Entry { path: path.to_path_buf(), name: e.name.clone(), message };
            if e.name.is_empty() || e.name.contains('/') || e.name.contains("://") {
                return Err(err(
                    "`name` must be a registry host as written in image references, like `quay.io` or `reg.local:5000`"
                        .into(),
                ));
            }
            if let Some(ep) = &e.endpoint {
                let url = Url::parse(ep).map_err(|x| err(format!("`endpoint` `{ep}` is not a URL: {x}")))?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(err(format!("`endpoint` `{ep}` must start with http:// or https://")));
                }
            }
            if e.username.is_some() != e.password.is_some() {
                return Err(err("`username` and `password` go together".into()));
            }
            if e.client_cert.is_some() != e.client_key.is_some() {
                return Err(err("`client_cert` and `client_key` go together".into()));
            }
            for p in [&mut e.ca_file, &mut e.client_cert, &mut e.client_key].into_iter().flatten() {
                if p.is_relative() {
                    *p = base_dir.join(&*p);
                }
            }
            if entries.iter().any(|x: &RegistryEntry| x.name == e.name) {
                return Err(err("is listed twice".into()));
            }
            entries.push(e);
        }
        Ok(RegistryConfig { path: Some(path.to_path_buf()), entries })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every `[registry.ecr]` table: the registry name, the table, and the directory its paths are relative to.
    pub fn ecr_tables(&self) -> Vec<(&str, &toml::Table, &Path)> {
        let base = self.path.as_deref().and_then(Path::parent).unwrap_or(Path::new("."));
        self.entries.iter().filter_map(|e| e.ecr.as_ref().map(|t| (e.name.as_str(), t, base))).collect()
    }

    /// Where requests for `name` go.
    pub fn endpoint(&self, name: &str) -> Endpoint {
        let entry = self.entries.iter().find(|e| e.name == name);
        let default_base = if is_loopback_host(name) {
            format!("http://{name}")
        } else if name == DOCKER_HUB {
            format!("https://{DOCKER_HUB_ENDPOINT}")
        } else {
            format!("https://{name}")
        };
        let base = entry
            .and_then(|e| e.endpoint.as_deref())
            .map(|s| s.trim_end_matches('/').to_string())
            .unwrap_or(default_base);
        let base = Url::parse(&base).unwrap_or_else(|_| Url::parse(&format!("https://{name}")).expect("valid host"));
        let prefix =
            entry.and_then(|e| e.prefix.as_deref()).map(|p| p.trim_matches('/').to_string()).filter(|p| !p.is_empty());
        let tls = entry
            .map(|e| TlsSettings {
                ca_file: e.ca_file.clone(),
                insecure_skip_verify: e.insecure_skip_verify,
                client_cert: e.client_cert.clone(),
                client_key: e.client_key.clone(),
            })
            .unwrap_or_default();
        let config_credentials = entry.and_then(|e| Some((e.username.clone()?, e.password.clone()?)));
        let base_dir = self.path.as_deref().and_then(Path::parent).unwrap_or(Path::new(".")).to_path_buf();
        let ecr = entry.and_then(|e| e.ecr.clone()).map(|t| (t, base_dir));
        Endpoint { name: name.to_string(), base, prefix, tls, config_credentials, ecr }
    }
}

impl crate::support::hint::Hint for ConfigError {
    fn hint(&self) -> Option<String> {
        Some("see docs/usage.md, \"Registry config\", for the keys each [[registry]] entry accepts".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_conventions() {
        let c = RegistryConfig::default();
        assert_eq!(c.endpoint("127.0.0.1:5000").base.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(c.endpoint("localhost").base.as_str(), "http://localhost/");
        assert_eq!(c.endpoint("docker.io").base.as_str(), "https://registry-1.docker.io/");
        assert_eq!(c.endpoint("quay.io").base.as_str(), "https://quay.io/");
    }

    #[test]
    fn entries_map_names_and_resolve_relative_paths() {
        let text = r#"
[[registry]]
name = "quay.io"
endpoint = "http://127.0.0.1:5001/"
prefix = "/quay.io/"
ca_file = "ca.pem"
username = "u"
password = "p"
"#;
        let c = RegistryConfig::parse(text, Path::new("/etc/bundle/registries.toml")).unwrap();
        let e = c.endpoint("quay.io");
        assert_eq!(e.base.as_str(), "http://127.0.0.1:5001/");
        assert_eq!(e.prefix.as_deref(), Some("quay.io"));
        assert_eq!(e.tls.ca_file.as_deref(), Some(Path::new("/etc/bundle/ca.pem")));
        assert!(!format!("{e:?}").contains("\"p\""));
    }

    #[test]
    fn unknown_keys_and_half_credentials_are_rejected() {
        let p = Path::new("r.toml");
        let err = RegistryConfig::parse("[[registry]]\nname='a.io'\nendpointt='x'\n", p).unwrap_err().to_string();
        assert!(err.contains("endpointt"), "{err}");
        assert!(RegistryConfig::parse("[[registry]]\nname='a.io'\nusername='x'\n", p).is_err());
        assert!(RegistryConfig::parse("[[registry]]\nname='a.io'\nendpoint='ftp://x'\n", p).is_err());
    }
}
