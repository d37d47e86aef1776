//! Image references, parsed and normalised the way docker and containerd do it.
//!
//! Users write `nginx`, `justwatch/x:1` or `quay.io/org/app:1@sha256:…`; everything downstream (archive names,
//! destination mapping, the values file) needs one canonical spelling, `docker.io/library/nginx:latest`.

use std::fmt;
use std::str::FromStr;

use crate::oci::digest::{Digest, DigestError};

/// The registry name Docker Hub images are written under.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API is really served.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("`{input}` is not a valid image reference: {reason}")]
    Invalid { input: String, reason: String },
    #[error("`{input}` is not a valid image reference")]
    Digest {
        input: String,
        #[source]
        source: DigestError,
    },
}

/// A fully normalised image reference: registry, repository path, and a tag and/or digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Invalid { input: input.to_string(), reason: reason.to_string() };
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.chars().any(|c| c.is_whitespace()) {
            return Err(invalid("it contains whitespace"));
        }
        if s.contains("://") {
            return Err(invalid("image references have no scheme; drop the `https://` part"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::Digest { input: input.to_string(), source })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/', so `host:5000/repo` keeps its port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(invalid("the repository name is missing"));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(
                "the tag must be 1-128 characters of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            ));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_registry_host(first) => (first.to_string(), rest.to_string()),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if registry.is_empty() || !valid_host(&registry) {
            return Err(invalid("the registry host is malformed"));
        }
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
        for component in repository.split('/') {
            if !valid_path_component(component) {
                let reason = if component.chars().any(|c| c.is_ascii_uppercase()) {
                    format!("repository names must be lowercase (`{component}`)")
                } else {
                    format!(
                        "`{component}` is not a valid path component (lowercase letters and digits, separated by `.`, `_`, `__` or `-`)"
                    )
                };
                return Err(invalid(&reason));
            }
        }
        if repository.len() > 255 {
            return Err(invalid("the repository name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when there is one (it wins over the tag), else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => unreachable!("parse always sets a tag or a digest"),
        }
    }

    /// The same name and tag in another registry and repository.
    pub fn with_location(&self, registry: &str, repository: &str) -> ImageRef {
        ImageRef { registry: registry.to_string(), repository: repository.to_string(), ..self.clone() }
    }

    /// This reference pinned to `digest`, keeping the tag for naming.
    pub fn pinned(&self, digest: Digest) -> ImageRef {
        ImageRef { digest: Some(digest), ..self.clone() }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Docker's rule: the first component names a registry only if it has a `.` or a `:`, or is `localhost`.
fn is_registry_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn valid_host(host: &str) -> bool {
    // host[:port], where host may be a bracketed IPv6 literal.
    let (host, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return false;
    }
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, the distribution grammar for one path component.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `host` (with or without a port) is a loopback name: `localhost`, `127.0.0.0/8` or `::1`.
/// Such registries are spoken to over plain HTTP, the docker and go-containerregistry convention.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else if host.matches(':').count() > 1 {
        host // a bare IPv6 literal without a port
    } else {
        host.split_once(':').map_or(host, |(h, _)| h)
    };
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl crate::support::hint::Hint for ReferenceError {
    fn hint(&self) -> Option<String> {
        Some("references look like `registry/path/name:tag` or `name@sha256:<digest>`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(norm("justwatch/x:1"), "docker.io/justwatch/x:1");
        assert_eq!(norm("index.docker.io/library/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("quay.io/stackstate/wait:1.0.0"), "quay.io/stackstate/wait:1.0.0");
        assert_eq!(norm("127.0.0.1:5000/a/b:t"), "127.0.0.1:5000/a/b:t");
        assert_eq!(norm("localhost/a"), "localhost/a:latest");
        assert_eq!(norm("registry.k8s.io/a/b/c/d:v1"), "registry.k8s.io/a/b/c/d:v1");
        assert_eq!(norm("[::1]:5000/x:y"), "[::1]:5000/x:y");
    }

    #[test]
    fn digest_wins_and_tag_is_kept_for_naming() {
        let r = ImageRef::parse(&format!("quay.io/a/b:1.0@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.manifest_reference(), D);
        let r = ImageRef::parse(&format!("quay.io/a/b@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("quay.io/a/b@{D}"));
    }

    #[test]
    fn port_is_not_a_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "app");
        assert_eq!(r.tag(), Some("latest"));
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        for bad in [
            "",
            "Nginx",
            "a b",
            "quay.io/a/b:",
            "quay.io/a/b:-x",
            "quay.io//b",
            "https://quay.io/a",
            "a/b@sha256:zz",
            "quay.io:99999/a",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let err = ImageRef::parse("quay.io/Org/app").unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
    }

    #[test]
    fn loopback_detection() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["quay.io", "10.0.0.1:5000", "[::2]:5000", "localhost.example.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
