//! Where an import (or a values file) sends images: `-d REGISTRY[/PREFIX]` and how a source path maps under it.
//!
//! Its own module because three parts agree on it: the push plan, the ECR repository names, and the values
//! file that points a chart at the same places (`chart::values_out`).

use crate::oci::reference::{ImageRef, ReferenceError};

/// `-d REGISTRY[/PREFIX]`, and how source paths map under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub registry: String,
    pub prefix: Option<String>,
    pub mapping: Mapping,
}

/// How a source path becomes a destination path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mapping {
    /// Drop the registry host, keep the path (helm's global.imageRegistry convention).
    #[default]
    Path,
    /// Keep only the last path component (registries that limit path depth).
    Flatten,
    /// Keep the source registry host as the first path component.
    KeepHost,
}

impl Destination {
    pub fn parse(s: &str) -> Result<Destination, ReferenceError> {
        let s = s.trim().trim_end_matches('/');
        let invalid = |reason: &str| ReferenceError::Invalid { input: s.to_string(), reason: reason.to_string() };
        if s.contains("://") {
            return Err(invalid("give the registry as host[:port][/prefix], without a scheme"));
        }
        let (registry, prefix) = match s.split_once('/') {
            Some((r, p)) => (r, Some(p.to_string())),
            None => (s, None),
        };
        if registry.is_empty() {
            return Err(invalid("the registry host is missing"));
        }
        // Validate host and prefix with the reference grammar.
        let probe = format!("{registry}/{}x:t", prefix.as_deref().map(|p| format!("{p}/")).unwrap_or_default());
        let parsed =
            ImageRef::parse(&probe).map_err(|_| invalid("expected host[:port][/path], like reg.local:5000/mirror"))?;
        if parsed.registry() != registry {
            return Err(invalid("the first component must be a registry host (with a `.` or `:` or `localhost`)"));
        }
        Ok(Destination { registry: registry.to_string(), prefix, mapping: Mapping::Path })
    }

    pub fn with_mapping(mut self, mapping: Mapping) -> Destination {
        self.mapping = mapping;
        self
    }

    /// Drop the source registry host, keep the path, put it under the prefix (`quay.io/a/b:1` → `DEST/a/b:1`).
    pub fn map(&self, source: &ImageRef) -> ImageRef {
        let path = match self.mapping {
            Mapping::Path => source.repository().to_string(),
            Mapping::Flatten => source.repository().rsplit('/').next().unwrap_or(source.repository()).to_string(),
            // Ports are not valid in a path component; `host:5000` becomes `host-5000`.
            Mapping::KeepHost => {
                format!("{}/{}", source.registry().replace(':', "-").to_ascii_lowercase(), source.repository())
            }
        };
        let repo = match &self.prefix {
            Some(p) => format!("{p}/{path}"),
            None => path,
        };
        source.with_location(&self.registry, &repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn mapping_drops_the_source_host_and_keeps_the_path() {
        let d = Destination::parse("reg.local:5000").unwrap();
        let flat = d.clone().with_mapping(Mapping::Flatten);
        assert_eq!(flat.map(&r("quay.io/stackstate/wait:1.0.0")).to_string(), "reg.local:5000/wait:1.0.0");
        let host = Destination::parse("reg.local:5000/m").unwrap().with_mapping(Mapping::KeepHost);
        assert_eq!(
            host.map(&r("quay.io/stackstate/wait:1.0.0")).to_string(),
            "reg.local:5000/m/quay.io/stackstate/wait:1.0.0"
        );
        assert_eq!(host.map(&r("127.0.0.1:5000/a:1")).to_string(), "reg.local:5000/m/127.0.0.1-5000/a:1");
        assert_eq!(d.map(&r("quay.io/stackstate/wait:1.0.0")).to_string(), "reg.local:5000/stackstate/wait:1.0.0");
        assert_eq!(d.map(&r("justwatch/x:1")).to_string(), "reg.local:5000/justwatch/x:1");
        assert_eq!(d.map(&r("nginx")).to_string(), "reg.local:5000/library/nginx:latest");
        let p = Destination::parse("reg.local:5000/mirror/").unwrap();
        assert_eq!(p.prefix.as_deref(), Some("mirror"));
        assert_eq!(p.map(&r("registry.k8s.io/a/b:v1")).to_string(), "reg.local:5000/mirror/a/b:v1");
        let pinned = r("quay.io/a/b@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(p.map(&pinned).tag(), None);
    }

    #[test]
    fn bad_destinations_are_refused() {
        for bad in ["", "https://reg.local", "mirror", "reg.local:5000/Upper", "reg.local:99999"] {
            assert!(Destination::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Destination::parse("localhost/x").is_ok());
    }
}
