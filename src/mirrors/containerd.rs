//! `certs.d/SOURCE/hosts.toml` for containerd's `config_path` (the CRI plugin's registry config, and
//! `ctr --hosts-dir`).
//!
//! containerd keys its host config by the source registry and can replace only the host and the start of the
//! path: `[host."https://reg/v2/PREFIX"]` with `override_path = true` sends `/v2/PREFIX/a/b/manifests/…`.
//! It cannot rewrite the repository itself, so a registry whose images did not land under one prefix
//! (`--flatten`) gets no file (`MirrorSet::beyond_containerd`). `override_path` is read by containerd 1.6 and
//! later (1.6.20 is tested); without a path no override is needed and any containerd with `config_path` reads it.

use std::path::PathBuf;

use super::{MirrorSet, Route, covers, toml_string};
use crate::registry::config::RegistryConfig;

pub const CERTS_DIR: &str = "certs.d";

pub fn hosts_path(route: &Route) -> PathBuf {
    PathBuf::from(CERTS_DIR).join(&route.registry).join("hosts.toml")
}

/// The CA beside hosts.toml: containerd resolves a relative `ca` against the file's directory.
pub fn ca_path(route: &Route) -> PathBuf {
    PathBuf::from(CERTS_DIR).join(&route.registry).join("ca.crt")
}

pub fn hosts_toml(set: &MirrorSet, route: &Route) -> String {
    let host = &set.host;
    // The source's own endpoint, by the usual conventions (docker.io is registry-1.docker.io): the fallback.
    let server = RegistryConfig::default().endpoint(&route.registry).base;
    let mut url = host.url();
    if !route.path.is_empty() {
        url = format!("{url}/v2/{}", route.path);
    }
    let mut out = format!(
        "# Written by bundle: pull {}'s images from {} first.\n\
         # {}\n\
         # containerd config_path layout: copy certs.d/ to the directory the CRI plugin's registry config_path\n\
         # names, e.g. /etc/containerd/certs.d (see docs/mirrors.md).\n\
         server = {}\n\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
        route.registry,
        route.mirror(&host.registry),
        covers(route),
        toml_string(server.as_str().trim_end_matches('/')),
        toml_string(&url),
    );
    if !route.path.is_empty() {
        out.push_str("  override_path = true\n");
    }
    if host.ca.is_some() {
        out.push_str("  ca = \"ca.crt\"\n");
    }
    if let Some((cert, key)) = &host.client {
        out.push_str(&format!(
            "  client = [[{}, {}]]\n",
            toml_string(&cert.to_string_lossy()),
            toml_string(&key.to_string_lossy())
        ));
    }
    if host.skip_verify {
        out.push_str("  skip_verify = true\n");
    }
    out
}
