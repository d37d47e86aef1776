//! Images kept in pieces: what an `image:` string in a rendered document really names.
//!
//! A container's `image:` is a reference as it stands (`busybox` is docker.io/library/busybox). Operators'
//! custom resources are different: a ClusterPolicy holds `repository: nvcr.io/nvidia`, `image: driver` and
//! `version: 595.91.07` side by side and the operator assembles `repository/image:version` at run time; istio's
//! injector config holds `global.proxy.image: proxyv2` under `global.hub` and `global.tag`. Sending `driver` to
//! a registry asks docker.io for `library/driver:latest`, an image nobody meant. So outside containers, an
//! `image` beside pieces (`repository`/`registry`/`hub`, `version`/`tag`) is assembled from them, and a bare name
//! with nothing to assemble it from, in a document that keeps its other images in pieces, is named as an image
//! the user must supply, never guessed.

use serde_yaml_ng::{Mapping, Value};

/// Keys that hold what goes before the name, most specific last (`registry/repository/image`).
const REGISTRY_KEYS: [&str; 2] = ["registry", "hub"];
const REPOSITORY_KEY: &str = "repository";
/// Keys that hold the tag.
const VERSION_KEYS: [&str; 2] = ["version", "tag"];

/// What an `image:` string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A reference: as written, or assembled from pieces (then `pieces` says which keys gave them).
    Reference { reference: String, pieces: Option<String> },
    /// A bare name without the parts to make a reference of it: the chart leaves them to the user.
    Incomplete { name: String, missing: &'static str },
}

/// Where an `image:` string sits.
pub struct Context<'a> {
    /// The map holding the `image` key.
    pub map: &'a Mapping,
    /// The maps above it, outermost first.
    pub ancestors: &'a [&'a Mapping],
    /// It is a container's image (an element of `containers`, `initContainers` or `ephemeralContainers`).
    pub in_container: bool,
    /// Some map of the same document holds an image beside its pieces: a bare name there is one of them.
    pub document_has_pieces: bool,
}

pub fn name(value: &str, cx: &Context<'_>) -> Named {
    let written = value.trim();
    let as_written = || Named::Reference { reference: written.to_string(), pieces: None };
    if cx.in_container {
        // istio's gateway charts write `image: auto`: the injecting webhook puts the proxy image there.
        if written == "auto" {
            return Named::Incomplete { name: written.to_string(), missing: "an image: the injecting webhook sets it" };
        }
        return as_written();
    }
    let shape = Shape::of(written);
    let mut used: Vec<String> = Vec::new();
    let mut name = written.to_string();

    if !shape.has_host {
        let mut front: Vec<String> = Vec::new();
        for key in REGISTRY_KEYS.iter().chain(std::iter::once(&REPOSITORY_KEY)) {
            if let Some(v) = text(cx.map, key) {
                // `registry` and `hub` are alternatives; `repository` may follow either.
                if *key == REPOSITORY_KEY || front.is_empty() {
                    front.push(v.trim_end_matches('/').to_string());
                    used.push((*key).to_string());
                }
            }
        }
        if front.is_empty()
            && shape.bare
            && let Some((key, v)) = inherited(cx, &REGISTRY_KEYS)
        {
            front.push(v.trim_end_matches('/').to_string());
            used.push(key);
        }
        if !front.is_empty() {
            name = format!("{}/{name}", front.join("/"));
        }
    }
    if !shape.has_tag {
        let version = VERSION_KEYS
            .iter()
            .find_map(|k| text(cx.map, k).map(|v| ((*k).to_string(), v)))
            .or_else(|| if shape.bare { inherited(cx, &VERSION_KEYS) } else { None });
        if let Some((key, v)) = version {
            name.push(if v.starts_with("sha256:") { '@' } else { ':' });
            name.push_str(&v);
            used.push(key);
        }
    }

    if shape.bare && (!used.is_empty() || cx.document_has_pieces) {
        let has_front = name.contains('/');
        let has_version = Shape::of(&name).has_tag;
        let missing = match (has_front, has_version) {
            (true, true) => "",
            (false, true) => "a registry or repository",
            (true, false) => "a version",
            (false, false) => "a registry or repository and a version",
        };
        if !missing.is_empty() {
            return Named::Incomplete { name: written.to_string(), missing };
        }
    }
    if used.is_empty() {
        return as_written();
    }
    used.insert(0, "image".into());
    Named::Reference { reference: name, pieces: Some(used.join(" + ")) }
}

/// Whether a map holds an image beside a non-empty piece: the mark of a document that keeps images in pieces.
pub fn holds_pieces(map: &Mapping) -> bool {
    matches!(map.get("image"), Some(Value::String(s)) if !s.trim().is_empty())
        && REGISTRY_KEYS
            .iter()
            .chain(&VERSION_KEYS)
            .chain(std::iter::once(&REPOSITORY_KEY))
            .any(|k| text(map, k).is_some())
}

/// The nearest value of one of `keys` above the image's map: in the map's own `global`, then in each ancestor
/// and its `global`, innermost first (istio keeps `hub` and `tag` in `global`, helm's place for defaults).
fn inherited(cx: &Context<'_>, keys: &[&str]) -> Option<(String, String)> {
    let global_of = |m: &Mapping| m.get("global").and_then(Value::as_mapping).cloned();
    let own = global_of(cx.map).map(|g| ("global.", g));
    let mut scopes: Vec<(&str, Mapping)> = own.into_iter().collect();
    for a in cx.ancestors.iter().rev() {
        scopes.push(("", (*a).clone()));
        if let Some(g) = global_of(a) {
            scopes.push(("global.", g));
        }
    }
    scopes.iter().find_map(|(prefix, m)| keys.iter().find_map(|k| text(m, k).map(|v| (format!("{prefix}{k}"), v))))
}

fn text(m: &Mapping, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What a written reference already has.
struct Shape {
    has_host: bool,
    has_tag: bool,
    /// No `/`, no tag, no digest: a name only.
    bare: bool,
}

impl Shape {
    fn of(s: &str) -> Shape {
        let first = s.split('/').next().unwrap_or("");
        let has_host = s.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
        let last = s.rsplit('/').next().unwrap_or("");
        let has_tag = last.contains(':') || s.contains('@');
        Shape { has_host, has_tag, bare: !s.contains('/') && !has_tag }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(yaml: &str) -> Mapping {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn named(image: &str, own: &str, ancestors: &[&str], in_container: bool, document_has_pieces: bool) -> Named {
        let own = map(own);
        let ancestors: Vec<Mapping> = ancestors.iter().map(|a| map(a)).collect();
        let refs: Vec<&Mapping> = ancestors.iter().collect();
        name(image, &Context { map: &own, ancestors: &refs, in_container, document_has_pieces })
    }

    fn reference(s: &str, pieces: &str) -> Named {
        Named::Reference { reference: s.into(), pieces: (!pieces.is_empty()).then(|| pieces.into()) }
    }

    #[test]
    fn operator_triples_are_assembled() {
        assert_eq!(
            named("driver", "{repository: nvcr.io/nvidia, image: driver, version: '595.91.07'}", &[], false, true),
            reference("nvcr.io/nvidia/driver:595.91.07", "image + repository + version")
        );
        assert_eq!(
            named("operator", "{registry: quay.io, image: operator, tag: v1.36.0}", &[], false, true),
            reference("quay.io/operator:v1.36.0", "image + registry + tag")
        );
        assert_eq!(
            named("org/agent", "{registry: quay.io, image: org/agent, tag: '2'}", &[], false, false),
            reference("quay.io/org/agent:2", "image + registry + tag")
        );
        assert_eq!(
            named("quay.io/org/a", "{image: quay.io/org/a, version: v1}", &[], false, false),
            reference("quay.io/org/a:v1", "image + version")
        );
        // A tag already written stays; a full reference beside pieces is left alone.
        assert_eq!(
            named("quay.io/p/p:v3", "{image: 'quay.io/p/p:v3', version: v3}", &[], false, false),
            reference("quay.io/p/p:v3", "")
        );
    }

    #[test]
    fn hub_and_tag_come_from_above_and_from_global() {
        // istio's injector values: global.proxy.image under global.hub and global.tag.
        let global = "{hub: docker.io/istio, tag: 1.30.3, proxy: {image: proxyv2}}";
        assert_eq!(
            named("proxyv2", "{image: proxyv2}", &["{global: {}}", global], false, false),
            reference("docker.io/istio/proxyv2:1.30.3", "image + hub + tag")
        );
        // The top of the values: empty own hub and tag, the global's apply.
        let top = "{hub: '', tag: '', image: pilot, global: {hub: docker.io/istio, tag: 1.30.3}}";
        assert_eq!(
            named("pilot", top, &[], false, false),
            reference("docker.io/istio/pilot:1.30.3", "image + global.hub + global.tag")
        );
    }

    #[test]
    fn bare_names_without_pieces_are_incomplete_not_guessed() {
        assert_eq!(
            named("vgpu-manager", "{enabled: false, image: vgpu-manager}", &["{driver: {}}"], false, true),
            Named::Incomplete { name: "vgpu-manager".into(), missing: "a registry or repository and a version" }
        );
        assert_eq!(
            named("driver", "{repository: nvcr.io/nvidia, image: driver, version: ''}", &[], false, true),
            Named::Incomplete { name: "driver".into(), missing: "a version" }
        );
        // Containers name images as they stand; so does a document that keeps no image in pieces.
        assert_eq!(named("busybox", "{name: b, image: busybox}", &[], true, true), reference("busybox", ""));
        assert_eq!(named("alpine", "{image: alpine}", &[], false, false), reference("alpine", ""));
        assert!(matches!(
            named("auto", "{name: istio-proxy, image: auto}", &[], true, false),
            Named::Incomplete { .. }
        ));
    }
}
