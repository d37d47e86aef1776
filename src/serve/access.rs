//! Who may reach `bundle serve`: TLS from a certificate and key (rustls), and basic auth from an htpasswd file
//! of bcrypt hashes (what docker distribution's htpasswd accepts), for a server beyond loopback.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot use the TLS certificate {cert} and key {key}: {message}")]
    Tls { cert: PathBuf, key: PathBuf, message: String },
    #[error("cannot read the htpasswd file {path}")]
    ReadHtpasswd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the htpasswd file {path}, line {line}: {message}")]
    Htpasswd { path: PathBuf, line: usize, message: String },
}

impl crate::support::hint::Hint for AccessError {
    fn hint(&self) -> Option<String> {
        match self {
            AccessError::Tls { .. } => {
                Some("give PEM files: the certificate chain (--tls-cert) and its private key (--tls-key)".into())
            }
            AccessError::ReadHtpasswd { .. } => None,
            AccessError::Htpasswd { .. } => {
                Some("write each line as USER:BCRYPT-HASH, e.g. with `htpasswd -B -c FILE USER`".into())
            }
        }
    }
}

/// A TLS acceptor for the certificate chain and key in these PEM files.
pub fn tls(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, AccessError> {
    let failed = |message: String| AccessError::Tls { cert: cert.to_path_buf(), key: key.to_path_buf(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if chain.is_empty() {
        return Err(failed("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| failed(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| failed(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The users of an htpasswd file, and the `Authorization` values already found good (bcrypt is slow on purpose,
/// and a pull sends dozens of requests).
pub struct Users {
    hashes: Vec<(String, String)>,
    good: Mutex<HashSet<String>>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, AccessError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AccessError::ReadHtpasswd { path: path.to_path_buf(), source })?;
        let mut hashes = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: &str| AccessError::Htpasswd {
                path: path.to_path_buf(),
                line: n + 1,
                message: message.into(),
            };
            let (user, hash) = line.split_once(':').ok_or_else(|| bad("expected USER:HASH"))?;
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(bad("only bcrypt hashes ($2y$…) are accepted"));
            }
            hashes.push((user.to_string(), hash.to_string()));
        }
        if hashes.is_empty() {
            return Err(AccessError::Htpasswd {
                path: path.to_path_buf(),
                line: 0,
                message: "it names no user".into(),
            });
        }
        Ok(Users { hashes, good: Mutex::new(HashSet::new()) })
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else { return false };
        if self.good.lock().expect("not poisoned").contains(value) {
            return true;
        }
        let Some(encoded) = value.strip_prefix("Basic ") else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Ok(text) = String::from_utf8(decoded) else { return false };
        let Some((user, password)) = text.split_once(':') else { return false };
        let ok = self.hashes.iter().any(|(u, hash)| u == user && bcrypt::verify(password, hash).unwrap_or(false));
        if ok {
            self.good.lock().expect("not poisoned").insert(value.to_string());
        }
        ok
    }
}
