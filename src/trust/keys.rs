//! Public keys, as users hand them over: a PEM `PUBLIC KEY` (what `cosign generate-key-pair` and `openssl pkey
//! -pubout` write; ECDSA P-256 or Ed25519), an OpenSSH `.pub` line, or an `allowed_signers` file (what
//! `ssh-keygen -Y verify -f` reads). Each becomes a `TrustedKey` with a fingerprint a person can check by hand.

use std::path::{Path, PathBuf};

use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;

/// The namespace of every SSH signature `bundle` makes and accepts (`ssh-keygen -Y sign -n bundle`).
pub const SSH_NAMESPACE: &str = "bundle";

/// A key a signature may be made by.
#[derive(Clone)]
pub struct TrustedKey {
    /// `sha256:<hex>` of the DER SubjectPublicKeyInfo for a PEM key (`openssl pkey -pubin -outform DER | sha256sum`),
    /// `SHA256:<base64>` for an SSH key (`ssh-keygen -l`).
    pub fingerprint: String,
    /// The file it came from, for messages.
    pub file: PathBuf,
    /// For an allowed_signers entry: its principals.
    pub principals: Option<String>,
    pub key: PublicKey,
}

#[derive(Clone)]
pub enum PublicKey {
    EcdsaP256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Ssh(Box<ssh_key::PublicKey>),
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TrustedKey {
    /// `ecdsa-p256`, `ed25519`, or the SSH key type.
    pub fn algorithm(&self) -> String {
        match &self.key {
            PublicKey::EcdsaP256(_) => "ecdsa-p256".into(),
            PublicKey::Ed25519(_) => "ed25519".into(),
            PublicKey::Ssh(k) => k.algorithm().as_str().to_string(),
        }
    }

    /// `sha256:ab12… (ecdsa-p256, vendor.pub)`: what a message names a key by.
    pub fn describe(&self) -> String {
        let name = self.file.file_name().unwrap_or_default().to_string_lossy();
        match &self.principals {
            Some(p) => format!("{} ({}, {p} in {name})", self.fingerprint, self.algorithm()),
            None => format!("{} ({}, {name})", self.fingerprint, self.algorithm()),
        }
    }

    /// A PEM key verifies cosign's signatures; SSH keys verify SSH signatures only.
    pub fn is_pem(&self) -> bool {
        !matches!(self.key, PublicKey::Ssh(_))
    }

    /// Verify a raw signature over `message`: DER (or fixed-size) ECDSA P-256 with SHA-256, or Ed25519.
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match &self.key {
            PublicKey::EcdsaP256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
                sig.is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            PublicKey::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            PublicKey::Ssh(_) => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a key bundle can use: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{} holds no key: {what}", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("the key {} is encrypted, and the password given does not open it", path.display())]
    WrongPassword { path: PathBuf },
    #[error("the key {} is encrypted, and there is no password for it", path.display())]
    NoPassword { path: PathBuf },
    #[error("cannot read the password for {}", path.display())]
    Prompt {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is an SSH key, but cosign image signatures are checked with PEM public keys", path.display())]
    NotForImages { path: PathBuf },
}

impl crate::support::hint::Hint for KeyError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            KeyError::Read { .. } => "check the path and its permissions".into(),
            KeyError::Unsupported { .. } | KeyError::Empty { .. } => "public keys: a PEM `PUBLIC KEY` (ECDSA P-256 or Ed25519, as `cosign generate-key-pair` writes), an OpenSSH `.pub`, or an allowed_signers file; signing keys: a PEM PKCS#8 or SEC1 EC P-256 key, an Ed25519 PKCS#8 key, cosign's `cosign.key`, or an OpenSSH ed25519 or ecdsa key (docs/supply-chain.md)".into(),
            KeyError::WrongPassword { .. } => format!("check {}, or type the password again", crate::support::env_vars::BUNDLE_SIGN_PASSWORD),
            KeyError::NoPassword { .. } => format!("set {} to its password, or run where a terminal can ask for it", crate::support::env_vars::BUNDLE_SIGN_PASSWORD),
            KeyError::Prompt { .. } => format!("set {} to the key's password", crate::support::env_vars::BUNDLE_SIGN_PASSWORD),
            KeyError::NotForImages { .. } => "pass the vendor's cosign public key (cosign.pub, `-----BEGIN PUBLIC KEY-----`)".into(),
        })
    }
}

/// The PEM blocks of `text`: (label, DER). Malformed blocks are skipped by the caller's "holds no key".
pub(crate) fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line.trim().strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                break;
            }
            // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`) are not base64.
            if !l.contains(':') {
                body.push_str(l);
            }
        }
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            out.push((label.to_string(), der));
        }
    }
    out
}

/// Key files, allowed_signers files and signatures are a few KiB; more is not one (and is not read into memory).
pub(crate) const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// The bytes of a key file, refused unread above `MAX_KEY_FILE_BYTES`.
pub(crate) fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|source| KeyError::Read { path: path.into(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| KeyError::Read { path: path.into(), source })?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Unsupported { path: path.into(), what: "larger than any key file (1 MiB)".into() });
    }
    Ok(bytes)
}

/// Every key in `path` (a PEM file holds one, an allowed_signers file may hold several).
pub fn load_public(path: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    let text = read_key_file(path)?;
    let text = String::from_utf8_lossy(&text);
    let unsupported = |what: String| KeyError::Unsupported { path: path.into(), what };
    if text.contains("-----BEGIN ") {
        let blocks = pem_blocks(&text);
        let Some((label, der)) = blocks.first() else {
            return Err(KeyError::Empty { path: path.into(), what: "its PEM block is not base64" });
        };
        if label != "PUBLIC KEY" {
            return Err(unsupported(match label.as_str() {
                l if l.contains("PRIVATE") => format!("it is a private key ({l}); give the public key"),
                l => format!("a PEM `{l}`, not a `PUBLIC KEY`"),
            }));
        }
        return Ok(vec![TrustedKey {
            fingerprint: format!("sha256:{}", hex::encode(sha2::Sha256::digest(der))),
            file: path.into(),
            principals: None,
            key: pem_public(der).map_err(unsupported)?,
        }]);
    }
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let words = split_options(line);
        let key_at = words.iter().position(|w| is_ssh_key_type(w));
        let Some(at) = key_at else {
            return Err(unsupported(
                "a line that is neither an OpenSSH public key nor an allowed_signers entry".into(),
            ));
        };
        let options = words.get(1..at).unwrap_or_default().join(" ");
        // An allowed_signers entry limited to other namespaces does not vouch for bundle's signatures.
        if let Some(ns) = option_value(&options, "namespaces")
            && !ns.split(',').any(|n| n == SSH_NAMESPACE || n == "*")
        {
            continue;
        }
        if options.contains("cert-authority") {
            return Err(unsupported("a cert-authority entry: list the signing keys themselves".into()));
        }
        let key_text = words[at..].join(" ");
        let key = ssh_key::PublicKey::from_openssh(&key_text)
            .map_err(|e| unsupported(format!("an OpenSSH public key that cannot be read ({e})")))?;
        keys.push(TrustedKey {
            fingerprint: key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            file: path.into(),
            principals: (at > 0).then(|| words[0].clone()),
            key: PublicKey::Ssh(Box::new(key)),
        });
    }
    if keys.is_empty() {
        return Err(KeyError::Empty { path: path.into(), what: "no key line (or none for the `bundle` namespace)" });
    }
    Ok(keys)
}

/// A DER SubjectPublicKeyInfo: ECDSA P-256 or Ed25519.
fn pem_public(der: &[u8]) -> Result<PublicKey, String> {
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
        return Ok(PublicKey::EcdsaP256(k));
    }
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
        return Ok(PublicKey::Ed25519(k));
    }
    let algorithm = pkcs8::spki::SubjectPublicKeyInfoRef::try_from(der)
        .map(|spki| match spki.algorithm.oid.to_string().as_str() {
            "1.2.840.113549.1.1.1" => "an RSA key".to_string(),
            "1.2.840.10045.2.1" => "an EC key on a curve other than P-256".to_string(),
            oid => format!("a key of algorithm {oid}"),
        })
        .unwrap_or_else(|_| "not a DER SubjectPublicKeyInfo".into());
    Err(format!("{algorithm}; ECDSA P-256 (cosign's default) and Ed25519 are supported"))
}

fn is_ssh_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-sha2-") || word.starts_with("sk-")
}

/// Words of an allowed_signers line, a quoted option value kept whole (`namespaces="git,bundle"`).
fn split_options(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted) = (String::new(), false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `name="value"` (or `name=value`) in a comma-separated option list.
fn option_value(options: &str, name: &str) -> Option<String> {
    let at = options.find(&format!("{name}="))?;
    let rest = &options[at + name.len() + 1..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap_or_default().to_string(),
        None => rest.split([',', ' ']).next().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_signers_words_and_options() {
        let w = split_options(r#"alice@example.com namespaces="git,bundle" ssh-ed25519 AAAA comment"#);
        assert_eq!(w, vec!["alice@example.com", r#"namespaces="git,bundle""#, "ssh-ed25519", "AAAA", "comment"]);
        assert_eq!(option_value(r#"namespaces="git,bundle""#, "namespaces").as_deref(), Some("git,bundle"));
        assert_eq!(option_value("cert-authority", "namespaces"), None);
        assert!(is_ssh_key_type("ecdsa-sha2-nistp256") && !is_ssh_key_type("alice"));
    }

    #[test]
    fn a_file_larger_than_any_key_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pub");
        std::fs::write(&big, vec![b'A'; MAX_KEY_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(load_public(&big), Err(KeyError::Unsupported { what, .. }) if what.contains("1 MiB")));
        assert!(matches!(load_public(&dir.path().join("none.pub")), Err(KeyError::Read { .. })));
    }

    #[test]
    fn pem_blocks_skip_headers_and_garbage() {
        let text = "junk\n-----BEGIN PUBLIC KEY-----\nProc-Type: 4\nAAEC\n-----END PUBLIC KEY-----\n";
        assert_eq!(pem_blocks(text), vec![("PUBLIC KEY".to_string(), vec![0, 1, 2])]);
        assert!(pem_blocks("-----BEGIN X-----\n!!!\n-----END X-----").is_empty());
    }
}
