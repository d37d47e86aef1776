//! `registries.yaml` for k3s and RKE2 (`/etc/rancher/k3s/registries.yaml`, `/etc/rancher/rke2/registries.yaml`).
//!
//! A mirror per source registry, its `endpoint` the destination; the path a push put images under is a
//! `rewrite` (k3s v1.21 and later, RKE2 likewise), which k3s applies to the repository when it pulls from the
//! endpoint: `^(.*)$` → `PREFIX/$1` for a registry rule, an anchored `^a/b$` → `PREFIX/b` per repository
//! otherwise, so `--flatten` lands here as well. TLS settings go under `configs`, keyed by the destination;
//! credentials are never written (add `auth` there, or use a pull secret).

use std::collections::BTreeMap;

use serde::Serialize;

use super::MirrorSet;

pub const FILE: &str = "registries.yaml";

#[derive(Serialize)]
struct RegistriesYaml {
    mirrors: BTreeMap<String, Mirror>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<String, Config>,
}

#[derive(Serialize)]
struct Mirror {
    endpoint: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    rewrite: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Config {
    tls: Tls,
}

#[derive(Serialize)]
struct Tls {
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    insecure_skip_verify: bool,
}

pub fn registries_yaml(set: &MirrorSet) -> String {
    let host = &set.host;
    let mut mirrors: BTreeMap<String, Mirror> = BTreeMap::new();
    for route in &set.routes {
        let mirror = mirrors
            .entry(route.registry.clone())
            .or_insert_with(|| Mirror { endpoint: vec![host.url()], rewrite: BTreeMap::new() });
        match &route.repository {
            None if route.path.is_empty() => {}
            None => {
                mirror.rewrite.insert("^(.*)$".into(), format!("{}/$1", route.path));
            }
            Some(repository) => {
                mirror.rewrite.insert(format!("^{}$", regex_escape(repository)), route.path.clone());
            }
        }
    }
    let mut configs = BTreeMap::new();
    if host.ca.is_some() || host.client.is_some() || host.skip_verify {
        configs.insert(
            host.registry.clone(),
            Config {
                tls: Tls {
                    ca_file: host.ca.as_ref().map(|(p, _)| p.to_string_lossy().into_owned()),
                    cert_file: host.client.as_ref().map(|(c, _)| c.to_string_lossy().into_owned()),
                    key_file: host.client.as_ref().map(|(_, k)| k.to_string_lossy().into_owned()),
                    insecure_skip_verify: host.skip_verify,
                },
            },
        );
    }
    let body = serde_yaml_ng::to_string(&RegistriesYaml { mirrors, configs }).expect("plain maps serialise");
    let paths = if host.ca.is_some() || host.client.is_some() {
        "# The TLS file paths are the registry config's: the files must be at these paths on every node.\n"
    } else {
        ""
    };
    format!(
        "# Written by bundle: k3s and RKE2 pull these registries' images from {} first.\n\
         # Copy to /etc/rancher/k3s/registries.yaml (RKE2: /etc/rancher/rke2/registries.yaml) on every node and\n\
         # restart k3s (rke2-server or rke2-agent); see docs/mirrors.md.\n{paths}{body}",
        host.registry
    )
}

/// `repository` as a regular expression that matches only itself (RE2 syntax, which k3s uses).
fn regex_escape(repository: &str) -> String {
    let mut out = String::with_capacity(repository.len());
    for c in repository.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_repository_matches_only_itself() {
        let re = regex_lite::Regex::new(&format!("^{}$", regex_escape("a.b/c-d_e"))).unwrap();
        assert!(re.is_match("a.b/c-d_e"));
        assert!(!re.is_match("axb/c-d_e"), "`.` must not match any character");
        assert_eq!(regex_escape("x(y)+$"), "x\\(y\\)\\+\\$");
    }
}
