//! Where images may sit in a chart's values: every map or string that could be what a template turns into an
//! image reference, and every string that is a part of a rendered reference on its path boundaries (a registry
//! `quay.io`, a `registry/org` like dapr's `ghcr.io/dapr`, an operator's `repository: nvcr.io/nvidia`, a whole
//! name). Deliberately liberal: the probe (`prove`) marks each candidate and renders once to learn which of them
//! really feed which rendered image, and where in it, so a false candidate costs nothing but a marker.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use super::values::ScopedValues;
use crate::oci::layout::ValuesKey;
use crate::oci::reference::ImageRef;

/// More candidates than this in one chart is not a chart; the rest are ignored.
const MAX_CANDIDATES: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// From the top of the values (subchart values under their key).
    pub path: Vec<ValuesKey>,
    pub slot: Slot,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// A map holding an image's parts: `marker_key` holds its name (`repository`, else `image`, else `name`).
    Map { marker_key: String, written: String, registry_key: bool, repository_key: bool },
    /// A string holding a reference (`image: "repo:tag"`, an operator's `reloader: quay.io/…:v1`).
    String { written: String },
}

impl Candidate {
    /// The key this candidate's trace marker goes in, and what it holds now.
    pub fn marked(&self) -> (Vec<ValuesKey>, &str) {
        match &self.slot {
            Slot::Map { marker_key, written, .. } => (self.key(marker_key), written),
            Slot::String { written } => (self.path.clone(), written),
        }
    }

    /// The path of `key` inside this candidate's map.
    pub fn key(&self, key: &str) -> Vec<ValuesKey> {
        let mut p = self.path.clone();
        p.push(ValuesKey::Key(key.to_string()));
        p
    }
}

/// Every candidate in the effective values of the chart and its enabled subcharts. `rendered` are the
/// references the chart rendered: a string equal to one of them is a candidate under any key.
pub fn find(scoped: &[ScopedValues<'_>], rendered: &BTreeSet<String>) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (mut path, key, v) in roots(scoped) {
        walk(key, v, &mut path, false, rendered, &mut out);
    }
    out.truncate(MAX_CANDIDATES);
    out
}

/// Every string in the effective values that is a part of a rendered reference on its path boundaries: its start
/// (`quay.io`, `ghcr.io/dapr`, `nginx`), or a part with a `/` or `.` further in (`bitnami/wordpress` after a
/// registry). Single words further in (`operator`, `agent`) are left out: names like that are everywhere in values.
pub fn find_parts(scoped: &[ScopedValues<'_>], rendered: &BTreeSet<String>) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (mut path, _, v) in roots(scoped) {
        parts(v, &mut path, rendered, &mut out, 0);
    }
    out.truncate(MAX_CANDIDATES);
    out
}

/// The top-level values of each chart's scope, with their paths from the top. A subchart's own keys are walked
/// in its own scope, where its defaults are merged; its globals are its parent's, set at the top.
fn roots<'s>(scoped: &'s [ScopedValues<'_>]) -> Vec<(Vec<ValuesKey>, &'s str, &'s Value)> {
    let mut out = Vec::new();
    for scope in scoped {
        let subcharts: BTreeSet<&str> = scope.chart.subcharts.iter().map(|s| s.key.as_str()).collect();
        let Value::Mapping(m) = &scope.values else { continue };
        for (k, v) in m {
            let Some(key) = k.as_str() else { continue };
            if subcharts.contains(key) || (key == "global" && !scope.path.is_empty()) {
                continue;
            }
            let mut path: Vec<ValuesKey> = scope.path.iter().map(|p| ValuesKey::Key(p.clone())).collect();
            path.push(ValuesKey::Key(key.to_string()));
            out.push((path, key, v));
        }
    }
    out
}

fn parts(v: &Value, path: &mut Vec<ValuesKey>, rendered: &BTreeSet<String>, out: &mut Vec<Candidate>, depth: usize) {
    if out.len() >= MAX_CANDIDATES || depth > 64 {
        return;
    }
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                let Some(k) = k.as_str() else { continue };
                path.push(ValuesKey::Key(k.to_string()));
                parts(val, path, rendered, out, depth + 1);
                path.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, item) in s.iter().enumerate() {
                path.push(ValuesKey::Index(i));
                parts(item, path, rendered, out, depth + 1);
                path.pop();
            }
        }
        Value::String(s) => {
            let s = s.trim();
            if rendered.iter().any(|r| is_part_of(s, r)) {
                out.push(Candidate { path: path.clone(), slot: Slot::String { written: s.to_string() } });
            }
        }
        _ => {}
    }
}

/// `part` sits in `reference` between path boundaries: at its start or after a `/`, and before a `/`, `:`, `@`
/// or its end. Further in than the start it must hold a `/` or `.`.
pub fn is_part_of(part: &str, reference: &str) -> bool {
    if part.len() < 2 || part.contains(char::is_whitespace) || part.contains("{{") {
        return false;
    }
    let further_in_ok = part.contains('/') || part.contains('.');
    boundary_starts(part, reference).any(|i| i == 0 || further_in_ok)
}

/// `name` is a whole path component run of `reference` (`cert-manager-controller` in
/// `quay.io/jetstack/cert-manager-controller:v1`), single words included: for a map's name key.
pub fn is_name_in(name: &str, reference: &str) -> bool {
    !name.is_empty() && boundary_starts(name, reference).next().is_some()
}

/// Where `part` stands in `reference` between path boundaries: at its start or after a `/`, and before a `/`,
/// `:`, `@` or its end.
fn boundary_starts<'a>(part: &'a str, reference: &'a str) -> impl Iterator<Item = usize> + 'a {
    let bytes = reference.as_bytes();
    reference.match_indices(part).map(|(i, _)| i).filter(move |&i| {
        let end = i + part.len();
        (i == 0 || bytes[i - 1] == b'/') && (end == bytes.len() || matches!(bytes[end], b'/' | b':' | b'@'))
    })
}

fn image_like(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("image") && !k.contains("pullsecret") && !k.contains("pullpolicy")
}

fn non_empty(m: &serde_yaml_ng::Mapping, key: &str) -> Option<String> {
    m.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Keys under an image map that hold anything but a name.
fn not_a_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["tag", "version", "digest", "policy", "pullsecret", "registry", "namespace", "sha"].iter().any(|w| k.contains(w))
}

fn walk(
    key: &str,
    v: &Value,
    path: &mut Vec<ValuesKey>,
    under_image: bool,
    rendered: &BTreeSet<String>,
    out: &mut Vec<Candidate>,
) {
    if out.len() >= MAX_CANDIDATES {
        return;
    }
    match v {
        Value::Mapping(m) => {
            let has = |k: &str| m.contains_key(k);
            let parts_of_an_image =
                image_like(key) || (has("repository") && (has("tag") || has("registry") || has("digest")));
            // A name to mark; an empty `repository` under an image key counts too (charts that default it in
            // templates, like traefik's `repository: null`): the marker alone still shows where it lands.
            let marker = ["repository", "image", "name"]
                .into_iter()
                .find_map(|k| non_empty(m, k).map(|w| (k, w)))
                .or_else(|| (image_like(key) && has("repository")).then(|| ("repository", String::new())));
            if let (true, Some((marker_key, written))) = (parts_of_an_image, marker) {
                out.push(Candidate {
                    path: path.clone(),
                    slot: Slot::Map {
                        marker_key: marker_key.to_string(),
                        written,
                        registry_key: has("registry"),
                        repository_key: has("repository"),
                    },
                });
                return;
            }
            for (k, val) in m {
                let Some(k) = k.as_str() else { continue };
                path.push(ValuesKey::Key(k.to_string()));
                walk(k, val, path, under_image || image_like(key), rendered, out);
                path.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, item) in s.iter().enumerate() {
                path.push(ValuesKey::Index(i));
                walk(key, item, path, under_image, rendered, out);
                path.pop();
            }
        }
        Value::String(s) => {
            let s = s.trim();
            let lower = key.to_ascii_lowercase();
            // `image: repo:tag`, `initImage: …`, or a name in a map of images (`images: {operator: ghcr.io/…}`).
            let image_key = lower == "image" || lower.ends_with("image") || (under_image && !not_a_name(key));
            if !s.is_empty() && ((image_key && ImageRef::parse(s).is_ok()) || rendered.contains(s)) {
                out.push(Candidate { path: path.clone(), slot: Slot::String { written: s.to_string() } });
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::Chart;

    #[test]
    fn parts_sit_on_path_boundaries() {
        let r = "ghcr.io/dapr/operator:1.18.3";
        for yes in ["ghcr.io", "ghcr.io/dapr", "ghcr.io/dapr/operator", r, "dapr/operator"] {
            assert!(is_part_of(yes, r), "{yes}");
        }
        for no in ["ghcr", "dapr", "operator", "1.18.3", "ghcr.io/da", "o/dapr", ""] {
            assert!(!is_part_of(no, r), "{no}");
        }
        assert!(is_part_of("nginx", "nginx:1.25"));
        assert!(is_part_of("docker.io", "docker.io/bitnami/wordpress:6"));
    }

    fn chart(values: &str) -> Chart {
        Chart::with_values(values)
    }

    #[test]
    fn maps_strings_and_lists_are_candidates_policies_are_not() {
        let c = chart(
            "global: {image: {repository: quay.io/argoproj/argocd, tag: v3}}\n\
             imageRegistry: quay.io\nimageNamespace: jetstack\n\
             image: {registry: null, repository: '', name: cert-manager-controller, pullPolicy: IfNotPresent}\n\
             exporter: {image: oliver006/redis_exporter, tag: v1.75.0}\n\
             stackpacks: {images: [{registry: quay.io, repository: stackstate/a, tag: '1'}, {registry: quay.io, repository: stackstate/b}]}\n\
             imagePullSecrets: [{name: regcred}]\n\
             reloader: quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0\n\
             traefik: {image: {registry: null, repository: null, tag: null}}\n\
             images: {tag: 0.15.0, operator: ghcr.io/kedacore/http-add-on-operator, pullPolicy: Always}\n",
        );
        let scoped = crate::chart::values::effective(&c, &Value::Mapping(Default::default()));
        let rendered = BTreeSet::from(["quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0".to_string()]);
        let found: Vec<(String, String)> = find(&scoped, &rendered)
            .iter()
            .map(|c| (crate::chart::values_out::dotted(&c.marked().0), c.marked().1.to_string()))
            .collect();
        let want: Vec<(String, String)> = [
            ("global.image.repository", "quay.io/argoproj/argocd"),
            ("image.name", "cert-manager-controller"),
            ("exporter.image", "oliver006/redis_exporter"),
            ("stackpacks.images[0].repository", "stackstate/a"),
            ("stackpacks.images[1].repository", "stackstate/b"),
            ("reloader", "quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0"),
            ("traefik.image.repository", ""),
            ("images.operator", "ghcr.io/kedacore/http-add-on-operator"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mut f = found.clone();
        f.sort();
        let mut w = want.clone();
        w.sort();
        assert_eq!(f, w);
    }
}
