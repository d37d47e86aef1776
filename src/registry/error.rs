//! What can go wrong talking to a registry, worded for the person who has to fix it.

use crate::oci::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what}: cannot reach registry {registry} at {endpoint}")]
    Connect {
        registry: String,
        endpoint: String,
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: {registry} requires authentication and no credentials were found for it")]
    NoCredentials { registry: String, what: String },
    #[error("{what}: {registry} rejected the credentials from {origin}")]
    BadCredentials { registry: String, what: String, origin: String },
    #[error("{what}: {registry} denied access{}", detail_suffix(detail))]
    Denied { registry: String, what: String, detail: String },
    #[error("{what}: not found in {registry}{}", detail_suffix(detail))]
    NotFound { registry: String, what: String, detail: String },
    #[error("{what}: {registry} answered HTTP {status}{}", detail_suffix(detail))]
    Status { registry: String, what: String, status: u16, detail: String },
    #[error("{what}: the content does not match its digest (expected {expected}, got {actual} over {size} bytes)")]
    DigestMismatch { what: String, expected: Digest, actual: Digest, size: u64 },
    #[error("{what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("{what}: {message}")]
    Protocol { what: String, message: String },
    #[error("TLS settings for {registry}: {message}")]
    Tls { registry: String, message: String },
    /// The bytes being uploaded could not be produced (a damaged archive): not the registry's fault, and
    /// not worth a retry.
    #[error("{what}: its content could not be read")]
    Source {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: local I/O failed")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() { String::new() } else { format!(" ({detail})") }
}

impl RegistryError {
    /// The HTTP status the registry answered, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            RegistryError::NotFound { .. } => Some(404),
            _ => None,
        }
    }

    pub(crate) fn io(what: &str, source: std::io::Error) -> RegistryError {
        RegistryError::Io { what: what.to_string(), source }
    }
}

/// What the user can do about it.
impl crate::support::hint::Hint for RegistryError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            RegistryError::Connect { registry, source, .. } => {
                let chain = crate::support::error_text::chain_line(source);
                if chain.contains("certificate") || chain.contains("UnknownIssuer") || chain.contains("tls") {
                    format!(
                        "the TLS certificate of {registry} is not trusted; if it uses a private CA, add an entry for it to the registry config (--registry-config) with `ca_file = \"ca.pem\"`"
                    )
                } else {
                    format!(
                        "check that {registry} is up and reachable from this host; to send requests for it elsewhere (a mirror, a plain-HTTP endpoint), map it in the registry config (--registry-config) with `endpoint = \"https://host:port\"`"
                    )
                }
            }
            RegistryError::NoCredentials { registry, .. } => format!(
                "log in with `docker login {registry}` (bundle reads ~/.docker/config.json), set username/password for it in the registry config, or use the STS_REGISTRY_*/DST_REGISTRY_* variables"
            ),
            RegistryError::BadCredentials { origin, .. } => {
                format!("check the username and password in {origin}; they may be wrong or expired")
            }
            RegistryError::Denied { .. } => "the credentials are valid but lack permission for this repository".into(),
            RegistryError::NotFound { .. } => {
                "check the image name and tag; `skopeo inspect docker://IMAGE` shows what the registry has".into()
            }
            RegistryError::Source { .. } => {
                "the content being uploaded is damaged: from an archive, `bundle verify FILE` lists what is wrong (copy it again from the export side); from a source registry (`bundle copy`), run again, and if it repeats, the registry or a proxy before it alters the blob".into()
            }
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => {
                "the registry or something between it and this host altered the content; nothing was kept".into()
            }
            _ => return None,
        })
    }
}
