//! From what was pushed where to the rules a runtime can hold: a source prefix and the destination path that
//! replaces it.
//!
//! Runtimes rewrite a name by prefix: `quay.io` → `reg.internal/mirror` turns `quay.io/a/b:1` into
//! `reg.internal/mirror/a/b:1`. A source registry whose every image landed at its own path under one common
//! destination path (the default mapping, `--keep-host`, a prefix) gets one rule for the whole registry. One
//! whose images did not (`--flatten` drops path components) gets one rule per repository, and containerd, which
//! can only replace a host and prefix the path, gets none for it.
//!
//! Rules are derived from the pushed pairs alone, not from the mapping's name, so they say exactly what the push
//! did; and two source repositories that landed in one destination repository are refused, because a rule for
//! each would hand one of them the other's tags.

use std::collections::{BTreeMap, BTreeSet};

use crate::oci::reference::ImageRef;

/// One rule: pull `source` (a registry, or one repository of it) from `path` at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The source registry as written in references (`quay.io`, `docker.io`, `reg.local:5000`).
    pub registry: String,
    /// The one repository the rule covers, or `None` for the whole registry.
    pub repository: Option<String>,
    /// The destination path that replaces the source prefix: for a registry rule the path its repositories go
    /// under (empty for the root), for a repository rule the destination repository.
    pub path: String,
    /// The images it covers, as the source names them, sorted.
    pub images: Vec<String>,
}

impl Route {
    /// `quay.io` or `quay.io/a/b`: what the runtime matches names against.
    pub fn source(&self) -> String {
        match &self.repository {
            Some(r) => format!("{}/{r}", self.registry),
            None => self.registry.clone(),
        }
    }

    /// `reg.internal:5000/mirror`: the source prefix's replacement, registry included.
    pub fn mirror(&self, destination: &str) -> String {
        if self.path.is_empty() { destination.to_string() } else { format!("{destination}/{}", self.path) }
    }

    /// Whether the rule covers a whole registry (containerd can hold it).
    pub fn whole_registry(&self) -> bool {
        self.repository.is_none()
    }
}

/// Two or more source repositories pushed into one destination repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub destination: String,
    pub sources: Vec<String>,
}

/// The rules for `pushed` (source, target) pairs, sorted by source; or every destination repository that
/// received more than one source repository.
pub fn routes<'a>(
    pushed: impl IntoIterator<Item = (&'a ImageRef, &'a ImageRef)>,
) -> Result<Vec<Route>, Vec<Collision>> {
    // Destination repository → the source repositories that went there.
    let mut landed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Source registry → source repository → (destination repository, images).
    let mut by_registry: BTreeMap<String, BTreeMap<String, (String, BTreeSet<String>)>> = BTreeMap::new();
    for (source, target) in pushed {
        landed.entry(target.name()).or_default().insert(source.name());
        by_registry
            .entry(source.registry().to_string())
            .or_default()
            .entry(source.repository().to_string())
            .or_insert_with(|| (target.repository().to_string(), BTreeSet::new()))
            .1
            .insert(source.to_string());
    }
    let collisions: Vec<Collision> = landed
        .into_iter()
        .filter(|(_, sources)| sources.len() > 1)
        .map(|(destination, sources)| Collision { destination, sources: sources.into_iter().collect() })
        .collect();
    if !collisions.is_empty() {
        return Err(collisions);
    }
    let mut out = Vec::new();
    for (registry, repositories) in by_registry {
        let bases: BTreeSet<Option<String>> =
            repositories.iter().map(|(source, (target, _))| base_of(source, target)).collect();
        match bases.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(base)] => out.push(Route {
                registry,
                repository: None,
                path: base.clone(),
                images: repositories.into_values().flat_map(|(_, images)| images).collect(),
            }),
            _ => out.extend(repositories.into_iter().map(|(source, (target, images))| Route {
                registry: registry.clone(),
                repository: Some(source),
                path: target,
                images: images.into_iter().collect(),
            })),
        }
    }
    Ok(out)
}

/// The path `source` was put under to make `target`, if `target` is `source` under a path (or `source` itself).
fn base_of(source: &str, target: &str) -> Option<String> {
    if target == source {
        return Some(String::new());
    }
    target.strip_suffix(source)?.strip_suffix('/').map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::destination::{Destination, Mapping};

    fn routes_for(dest: &str, mapping: Mapping, sources: &[&str]) -> Result<Vec<Route>, Vec<Collision>> {
        let dest = Destination::parse(dest).unwrap().with_mapping(mapping);
        let pairs: Vec<(ImageRef, ImageRef)> = sources
            .iter()
            .map(|s| {
                let s = ImageRef::parse(s).unwrap();
                let t = dest.map(&s);
                (s, t)
            })
            .collect();
        routes(pairs.iter().map(|(s, t)| (s, t)))
    }

    fn summary(routes: &[Route]) -> Vec<(String, String)> {
        routes.iter().map(|r| (r.source(), r.mirror("D"))).collect()
    }

    #[test]
    fn a_registry_whose_paths_are_kept_gets_one_rule() {
        let sources = ["quay.io/a/b:1", "quay.io/c:2", "nginx:1", "registry.k8s.io/x/y/z:3"];
        let s = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let path = routes_for("r.local/m", Mapping::Path, &sources).unwrap();
        assert_eq!(summary(&path), s(&[("docker.io", "D/m"), ("quay.io", "D/m"), ("registry.k8s.io", "D/m")]));
        assert_eq!(path[1].images, ["quay.io/a/b:1", "quay.io/c:2"]);
        let root = routes_for("r.local", Mapping::Path, &sources).unwrap();
        assert_eq!(summary(&root), s(&[("docker.io", "D"), ("quay.io", "D"), ("registry.k8s.io", "D")]));
        let host = routes_for("r.local/m", Mapping::KeepHost, &["quay.io/a/b:1", "127.0.0.1:5000/a:1"]).unwrap();
        assert_eq!(summary(&host), s(&[("127.0.0.1:5000", "D/m/127.0.0.1-5000"), ("quay.io", "D/m/quay.io")]));
    }

    #[test]
    fn flattened_paths_get_a_rule_per_repository() {
        let flat = routes_for("r.local/m", Mapping::Flatten, &["quay.io/a/b:1", "quay.io/c:2", "nginx:1"]).unwrap();
        let got = summary(&flat);
        assert_eq!(got[0], ("docker.io/library/nginx".to_string(), "D/m/nginx".to_string()));
        assert_eq!(got[1], ("quay.io/a/b".to_string(), "D/m/b".to_string()));
        assert_eq!(got[2], ("quay.io/c".to_string(), "D/m/c".to_string()));
        assert!(flat.iter().all(|r| !r.whole_registry()));
        // A registry whose only repository has one component flattens to its own path: one rule still holds.
        let one = routes_for("r.local", Mapping::Flatten, &["quay.io/c:2"]).unwrap();
        assert!(one[0].whole_registry());
    }

    #[test]
    fn two_sources_in_one_destination_repository_are_named() {
        let err =
            routes_for("r.local", Mapping::Path, &["docker.io/foo/x:1", "quay.io/foo/x:2", "quay.io/y:1"]).unwrap_err();
        assert_eq!(
            err,
            [Collision {
                destination: "r.local/foo/x".into(),
                sources: vec!["docker.io/foo/x".into(), "quay.io/foo/x".into()]
            }]
        );
        assert!(routes_for("r.local", Mapping::Flatten, &["quay.io/a/x:1", "quay.io/b/x:1"]).is_err());
        // Apart under --keep-host; and tags of one repository are one source.
        assert!(routes_for("r.local", Mapping::KeepHost, &["docker.io/foo/x:1", "quay.io/foo/x:2"]).is_ok());
        assert!(routes_for("r.local", Mapping::Path, &["quay.io/foo/x:1", "quay.io/foo/x:2"]).is_ok());
    }
}
