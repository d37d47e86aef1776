//! Signing keys, and the signature each makes over a sidecar's bytes.
//!
//! PEM keys make cosign's blob signature: the base64 of the DER ECDSA P-256 signature over SHA-256 (or of the
//! 64-byte Ed25519 signature), which `cosign verify-blob --key PUB --signature FILE.sig FILE.sha256` and `openssl
//! dgst -sha256 -verify PUB` accept. OpenSSH keys make an SSH signature in the `bundle` namespace, which
//! `ssh-keygen -Y verify -n bundle` accepts.

use std::path::{Path, PathBuf};

use p256::pkcs8::DecodePrivateKey as _;

use super::cosign_key;
use super::keys::{KeyError, SSH_NAMESPACE, pem_blocks};

pub struct SigningKey {
    pub file: PathBuf,
    kind: Kind,
}

enum Kind {
    EcdsaP256(p256::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Ssh(Box<ssh_key::PrivateKey>),
}

impl SigningKey {
    /// Read `path`; an encrypted key is opened with the password from `BUNDLE_SIGN_PASSWORD` or the terminal.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let bytes = super::keys::read_key_file(path)?;
        let text = String::from_utf8_lossy(&bytes);
        let unsupported = |what: String| KeyError::Unsupported { path: path.into(), what };
        let Some((label, der)) = pem_blocks(&text).into_iter().next() else {
            return Err(KeyError::Empty {
                path: path.into(), what: "no PEM block (`-----BEGIN … PRIVATE KEY-----`)"
            });
        };
        let kind = match label.as_str() {
            "PRIVATE KEY" => pkcs8_key(&der).map_err(unsupported)?,
            "EC PRIVATE KEY" => {
                let secret = p256::SecretKey::from_sec1_der(&der)
                    .map_err(|_| unsupported("a SEC1 EC key that is not on P-256".into()))?;
                Kind::EcdsaP256(secret.into())
            }
            "ENCRYPTED PRIVATE KEY" => {
                let password = super::password::for_key(path)?;
                let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
                    .map_err(|_| unsupported("an encrypted PKCS#8 key that cannot be read".into()))?;
                let plain =
                    info.decrypt(password.as_bytes()).map_err(|_| KeyError::WrongPassword { path: path.into() })?;
                pkcs8_key(plain.as_bytes()).map_err(unsupported)?
            }
            l if cosign_key::LABELS.contains(&l) => {
                let password = super::password::for_key(path)?;
                match cosign_key::open(&der, &password) {
                    cosign_key::Opened::Key(der) => pkcs8_key(&der).map_err(unsupported)?,
                    cosign_key::Opened::WrongPassword => return Err(KeyError::WrongPassword { path: path.into() }),
                    cosign_key::Opened::Malformed(what) => {
                        return Err(unsupported(format!("a cosign key with {what}")));
                    }
                }
            }
            "OPENSSH PRIVATE KEY" => {
                let key = ssh_key::PrivateKey::from_openssh(text.as_bytes())
                    .map_err(|e| unsupported(format!("an OpenSSH key that cannot be read ({e})")))?;
                let key = if key.is_encrypted() {
                    let password = super::password::for_key(path)?;
                    key.decrypt(password.as_bytes()).map_err(|_| KeyError::WrongPassword { path: path.into() })?
                } else {
                    key
                };
                match key.algorithm() {
                    ssh_key::Algorithm::Ed25519
                    | ssh_key::Algorithm::Ecdsa { curve: ssh_key::EcdsaCurve::NistP256 } => {}
                    other => {
                        return Err(unsupported(format!(
                            "an OpenSSH {} key; ed25519 and ecdsa-sha2-nistp256 are supported",
                            other.as_str()
                        )));
                    }
                }
                Kind::Ssh(Box::new(key))
            }
            "PUBLIC KEY" => return Err(unsupported("it is a public key; signing needs the private key".into())),
            "RSA PRIVATE KEY" => return Err(unsupported("an RSA key; ECDSA P-256 and Ed25519 are supported".into())),
            l => return Err(unsupported(format!("a PEM `{l}`"))),
        };
        Ok(SigningKey { file: path.into(), kind })
    }

    /// The fingerprint the matching public key has (`keys::TrustedKey::fingerprint`).
    pub fn fingerprint(&self) -> String {
        use p256::pkcs8::EncodePublicKey as _;
        use sha2::Digest as _;
        let spki = match &self.kind {
            Kind::EcdsaP256(k) => k.verifying_key().to_public_key_der().map(|d| d.as_bytes().to_vec()),
            Kind::Ed25519(k) => k.verifying_key().to_public_key_der().map(|d| d.as_bytes().to_vec()),
            Kind::Ssh(k) => return k.public_key().fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        };
        spki.map(|d| format!("sha256:{}", hex::encode(sha2::Sha256::digest(d)))).unwrap_or_default()
    }

    /// `cosign blob signature` or `SSH signature`: what `sign` writes.
    pub fn signature_kind(&self) -> &'static str {
        match self.kind {
            Kind::Ssh(_) => "SSH signature",
            _ => "cosign blob signature",
        }
    }

    /// The content of the `.sig` file for `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        use p256::ecdsa::signature::Signer as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b).into_bytes();
        Ok(match &self.kind {
            Kind::EcdsaP256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                b64(sig.to_der().as_bytes())
            }
            Kind::Ed25519(k) => b64(&k.sign(message).to_bytes()),
            Kind::Ssh(k) => {
                let sig = k.sign(SSH_NAMESPACE, ssh_key::HashAlg::Sha512, message).map_err(|e| e.to_string())?;
                sig.to_pem(ssh_key::LineEnding::LF).map_err(|e| e.to_string())?.into_bytes()
            }
        })
    }
}

/// A PKCS#8 DER private key: EC P-256 or Ed25519.
fn pkcs8_key(der: &[u8]) -> Result<Kind, String> {
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
        return Ok(Kind::EcdsaP256(k));
    }
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
        return Ok(Kind::Ed25519(Box::new(k)));
    }
    Err("a PKCS#8 key that is neither EC P-256 nor Ed25519".into())
}
