//! Mirror configs for every container runtime: pulling an image by its original name finds it inside the gap.
//!
//! A values file moves only what a chart's values can move: an operator that creates pods from names it
//! carries, a test pod, a hard-coded registry still pull from the public registry and fail in the gap. Every
//! runtime can be told to look for a registry's images elsewhere; `bundle` knows exactly what it pushed where,
//! so it writes that for each (`--mirrors-out DIR`), derived from the pushed pairs (`routes`):
//!
//! - `registries.conf`: containers-registries.conf(5) version 2 (podman, CRI-O, buildah, skopeo), `containers`;
//! - `certs.d/SOURCE/hosts.toml`: containerd's `config_path` layout, `containerd`;
//! - `registries.yaml`: k3s and RKE2, `k3s`;
//! - `idms.yaml`, `itms.yaml`: OpenShift's ImageDigestMirrorSet and ImageTagMirrorSet, `openshift`.
//!
//! Everything is rendered in memory before the directory is touched (`files`), so a refused mapping or an
//! unreadable CA writes nothing, and a written directory is always one run's complete set. docs/mirrors.md says
//! where each file goes on a node.

mod containerd;
mod containers;
mod files;
mod k3s;
mod openshift;
pub mod routes;

use std::path::{Path, PathBuf};

pub use files::Written;
pub use routes::{Collision, Route};

use crate::oci::destination::Destination;
use crate::oci::reference::ImageRef;
use crate::registry::config::Endpoint;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(
        "--mirrors-out: {} destination {} would hold images of more than one source repository, so a mirror rule for each source would hand one of them the other's tags:\n  - {}",
        .0.len(),
        if .0.len() == 1 { "repository" } else { "repositories" },
        .0.iter().map(|c| format!("{} <- {}", c.destination, c.sources.join(" and "))).collect::<Vec<_>>().join("\n  - ")
    )]
    Collision(Vec<Collision>),
    #[error("--mirrors-out: cannot read the destination's CA certificate {path} (ca_file in the registry config)")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the mirror configs into {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--mirrors-out {dir} holds {entry}, which bundle does not write; nothing was written there")]
    Foreign { dir: PathBuf, entry: String },
}

impl crate::support::hint::Hint for MirrorError {
    fn hint(&self) -> Option<String> {
        match self {
            MirrorError::Collision(_) => Some(
                "--keep-host puts each source registry under a path of its own (without --flatten every repository keeps its full path); or leave out --mirrors-out and use the values file".into(),
            ),
            MirrorError::Ca { .. } => Some("fix ca_file in the registry config (--registry-config)".into()),
            MirrorError::Write { .. } => None,
            MirrorError::Foreign { .. } => {
                Some("give --mirrors-out a new or empty directory, or one an earlier run wrote".into())
            }
        }
    }
}

/// How nodes reach the destination: its name, whether it speaks plain HTTP, and how to trust it.
#[derive(Debug, Clone)]
pub struct MirrorHost {
    /// The destination registry as image references name it (`-d`'s host).
    pub registry: String,
    /// `-d`'s path prefix, if any (it names the OpenShift objects).
    pub prefix: Option<String>,
    pub plain_http: bool,
    /// `insecure_skip_verify` in the registry config: asked for, so written; never otherwise.
    pub skip_verify: bool,
    /// The CA certificate the registry config trusts for it: its path there and its bytes (copied beside the
    /// files of runtimes that resolve a relative path).
    pub ca: Option<(PathBuf, Vec<u8>)>,
    /// Client certificate and key paths, referenced where they are and never copied (a key is a secret).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl MirrorHost {
    /// From the registry config's entry for the destination (`bundle` talks to it the way nodes will).
    pub fn from_endpoint(destination: &Destination, endpoint: &Endpoint) -> Result<MirrorHost, MirrorError> {
        let ca = match &endpoint.tls.ca_file {
            Some(path) => Some((
                path.clone(),
                std::fs::read(path).map_err(|source| MirrorError::Ca { path: path.clone(), source })?,
            )),
            None => None,
        };
        let client = endpoint.tls.client_cert.clone().zip(endpoint.tls.client_key.clone());
        Ok(MirrorHost {
            registry: destination.registry.clone(),
            prefix: destination.prefix.clone(),
            plain_http: endpoint.base.scheme() == "http",
            skip_verify: endpoint.tls.insecure_skip_verify,
            ca,
            client,
        })
    }

    /// `http://reg:5000` or `https://reg:5000`.
    fn url(&self) -> String {
        format!("{}://{}", if self.plain_http { "http" } else { "https" }, self.registry)
    }

    /// Whether runtimes must be told the registry is not verified TLS (plain HTTP, or verification skipped).
    fn insecure(&self) -> bool {
        self.plain_http || self.skip_verify
    }
}

/// The rules for one push, ready to render.
#[derive(Debug, Clone)]
pub struct MirrorSet {
    pub routes: Vec<Route>,
    pub host: MirrorHost,
}

impl MirrorSet {
    /// The rules for what was (or would be) pushed: (source, target) pairs. Refuses a mapping under which two
    /// source repositories share a destination repository.
    pub fn new<'a>(
        pushed: impl IntoIterator<Item = (&'a ImageRef, &'a ImageRef)>,
        host: MirrorHost,
    ) -> Result<MirrorSet, MirrorError> {
        let routes = routes::routes(pushed).map_err(MirrorError::Collision)?;
        Ok(MirrorSet { routes, host })
    }

    /// Source registries containerd cannot be told about: their images did not land under one prefix.
    pub fn beyond_containerd(&self) -> Vec<&str> {
        let mut out: Vec<&str> =
            self.routes.iter().filter(|r| !r.whole_registry()).map(|r| r.registry.as_str()).collect();
        out.dedup();
        out
    }

    /// Every file, as (path relative to DIR, bytes).
    pub fn render(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = vec![(PathBuf::from(containers::FILE), containers::registries_conf(self).into_bytes())];
        if let Some((_, ca)) = &self.host.ca {
            files.push((containers::ca_path(&self.host), ca.clone()));
        }
        for route in self.routes.iter().filter(|r| r.whole_registry()) {
            files.push((containerd::hosts_path(route), containerd::hosts_toml(self, route).into_bytes()));
            if let Some((_, ca)) = &self.host.ca {
                files.push((containerd::ca_path(route), ca.clone()));
            }
        }
        files.push((PathBuf::from(k3s::FILE), k3s::registries_yaml(self).into_bytes()));
        files.push((PathBuf::from(openshift::IDMS_FILE), openshift::idms(self).into_bytes()));
        files.push((PathBuf::from(openshift::ITMS_FILE), openshift::itms(self).into_bytes()));
        files
    }

    /// Render and write into `dir`, replacing an earlier run's set there.
    pub fn write(&self, dir: &Path) -> Result<Written, MirrorError> {
        files::replace_dir(dir, &self.render())
    }
}

/// The names `files` may find in DIR from an earlier run.
const TOP_LEVEL: &[&str] = &[
    containers::FILE,
    containers::CERTS_DIR,
    containerd::CERTS_DIR,
    k3s::FILE,
    openshift::IDMS_FILE,
    openshift::ITMS_FILE,
];

/// A TOML basic string: quoted, with `\`, `"` and control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `quay.io/a:1, quay.io/b:2 and 3 more`: which images a rule covers, for a comment.
fn covers(route: &Route) -> String {
    const SHOWN: usize = 3;
    let shown = route.images.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    match route.images.len() {
        n if n > SHOWN => format!("{n} images: {shown} and {} more", n - SHOWN),
        1 => format!("1 image: {shown}"),
        n => format!("{n} images: {shown}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
        let parsed: toml::Table = toml::from_str(&format!("k = {}", toml_string("a\"b\\c\n\u{7f}"))).unwrap();
        assert_eq!(parsed["k"].as_str(), Some("a\"b\\c\n\u{7f}"));
    }
}
