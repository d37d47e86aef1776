//! The bundle's own signature: `ARCHIVE.sig`, over the bytes of `ARCHIVE.sha256`.
//!
//! The sidecar names the archive's sha256, so a signature over it covers the archive; signing the small file
//! instead of the archive keeps the check a cheap read and lets `cosign verify-blob`, `openssl dgst -verify` and
//! `ssh-keygen -Y verify` check it where bundle is not installed. What the signature proves is only as good as the
//! match between the archive and its sidecar, so every check here is followed by that match (`verify`,
//! `import --require-signature` read the archive against the sidecar before trusting anything in it).

use std::path::{Path, PathBuf};

use super::keys::{PublicKey, SSH_NAMESPACE, TrustedKey};
use super::signing_key::SigningKey;
use crate::archive::checksum::{SidecarError, read_sidecar, sidecar_path};
use crate::oci::digest::Digest;

/// `ARCHIVE.sig` beside `ARCHIVE`.
pub fn signature_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".sig");
    archive.with_file_name(name)
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveSignatureError {
    #[error("{} is not signed: {} is missing", archive.display(), signature.display())]
    Unsigned { archive: PathBuf, signature: PathBuf },
    #[error("{} has no sidecar {}, which is what its signature covers", archive.display(), sidecar.display())]
    NoSidecar { archive: PathBuf, sidecar: PathBuf },
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} does not verify with {keys}: {why}", signature.display())]
    NotByTheseKeys { signature: PathBuf, keys: String, why: String },
    #[error("{} does not match its sidecar: its sha256 is {actual}, the signed sidecar says {expected}", archive.display())]
    ContentDiffers { archive: PathBuf, expected: Digest, actual: Digest },
    #[error("cannot sign {}: {message}", archive.display())]
    Sign { archive: PathBuf, message: String },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::support::hint::Hint for ArchiveSignatureError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ArchiveSignatureError::Unsigned { .. } => {
                "bring the .sig file its builder wrote (export --sign-key, bundle sign) beside the archive".into()
            }
            ArchiveSignatureError::NoSidecar { .. } => "bring the .sha256 file that came with the archive".into(),
            ArchiveSignatureError::Sidecar(e) => return crate::support::hint::Hint::hint(e),
            ArchiveSignatureError::Read { .. } | ArchiveSignatureError::Write { .. } => {
                "check the file and its directory's permissions".into()
            }
            ArchiveSignatureError::NotByTheseKeys { .. } => "this archive was not signed by the key you trust, or it (or its sidecar) was changed after signing: do not import it; ask its builder for the key they signed with (docs/supply-chain.md)".into(),
            ArchiveSignatureError::ContentDiffers { .. } => "the archive was changed after it was signed, or damaged in transit: do not import it; copy it again".into(),
            ArchiveSignatureError::Sign { .. } => "check the key (docs/supply-chain.md)".into(),
        })
    }
}

/// The sidecar's bytes and the digest they name, after checking it names this archive.
fn sidecar_of(archive: &Path) -> Result<(Vec<u8>, Digest), ArchiveSignatureError> {
    let sidecar = sidecar_path(archive);
    let digest = read_sidecar(archive)?
        .ok_or_else(|| ArchiveSignatureError::NoSidecar { archive: archive.into(), sidecar: sidecar.clone() })?;
    let bytes = std::fs::read(&sidecar).map_err(|source| ArchiveSignatureError::Read { path: sidecar, source })?;
    Ok((bytes, digest))
}

/// The archive's sha256, against its sidecar's.
pub fn check_content(
    archive: &Path,
    expected: &Digest,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(), ArchiveSignatureError> {
    let actual = crate::archive::checksum::file_digest(archive, on_bytes)
        .map_err(|source| ArchiveSignatureError::Read { path: archive.into(), source })?;
    if &actual != expected {
        return Err(ArchiveSignatureError::ContentDiffers {
            archive: archive.into(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// Sign `archive`'s sidecar with `key`, writing `ARCHIVE.sig` (replaced whole, never half-written). `known`: the
/// archive's sha256 as just written, else it is read and checked against the sidecar first: a signature over a
/// sidecar the archive does not match would vouch for something else.
pub fn sign(archive: &Path, key: &SigningKey, known: Option<&Digest>) -> Result<PathBuf, ArchiveSignatureError> {
    let (bytes, digest) = sidecar_of(archive)?;
    match known {
        Some(d) if d == &digest => {}
        Some(d) => {
            return Err(ArchiveSignatureError::ContentDiffers {
                archive: archive.into(),
                expected: digest,
                actual: d.clone(),
            });
        }
        None => check_content(archive, &digest, &|_| {})?,
    }
    let signature =
        key.sign(&bytes).map_err(|message| ArchiveSignatureError::Sign { archive: archive.into(), message })?;
    let path = signature_path(archive);
    let write = |source| ArchiveSignatureError::Write { path: path.clone(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".bundle-sig-").tempfile_in(dir).map_err(write)?;
    std::io::Write::write_all(&mut tmp, &signature).map_err(write)?;
    tmp.persist(&path).map_err(|e| write(e.error))?;
    Ok(path)
}

/// A signature that verified: by which key, over a sidecar naming which sha256.
pub struct SignedBy {
    pub key: TrustedKey,
    pub sidecar_digest: Digest,
}

/// Check `ARCHIVE.sig` over `ARCHIVE.sha256` with `keys`. The archive itself is not read: the caller checks it
/// against `sidecar_digest` (`check_content`, or a verification that compares the sidecar).
pub fn verify(archive: &Path, keys: &[TrustedKey]) -> Result<SignedBy, ArchiveSignatureError> {
    let path = signature_path(archive);
    let signature = match std::fs::File::open(&path) {
        Ok(f) => {
            // A signature is at most a few KiB (an SSH signature ~300 bytes); read no more than a key file's bound.
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, super::keys::MAX_KEY_FILE_BYTES), &mut bytes)
                .map_err(|source| ArchiveSignatureError::Read { path: path.clone(), source })?;
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArchiveSignatureError::Unsigned { archive: archive.into(), signature: path });
        }
        Err(source) => return Err(ArchiveSignatureError::Read { path, source }),
    };
    let (sidecar, sidecar_digest) = sidecar_of(archive)?;
    let names = keys.iter().map(TrustedKey::describe).collect::<Vec<_>>().join(", ");
    let refused =
        |why: String| ArchiveSignatureError::NotByTheseKeys { signature: path.clone(), keys: names.clone(), why };
    let text = String::from_utf8_lossy(&signature);
    if text.trim_start().starts_with("-----BEGIN SSH SIGNATURE-----") {
        let sig = ssh_key::SshSig::from_pem(text.trim().as_bytes())
            .map_err(|e| refused(format!("it is not a readable SSH signature ({e})")))?;
        if sig.namespace() != SSH_NAMESPACE {
            return Err(refused(format!(
                "it is an SSH signature for namespace `{}`, not `{SSH_NAMESPACE}`",
                sig.namespace()
            )));
        }
        for k in keys {
            if let PublicKey::Ssh(pk) = &k.key
                && pk.verify(SSH_NAMESPACE, &sidecar, &sig).is_ok()
            {
                return Ok(SignedBy { key: k.clone(), sidecar_digest });
            }
        }
        let by = ssh_key::PublicKey::from(sig.public_key().clone()).fingerprint(ssh_key::HashAlg::Sha256);
        return Err(refused(if keys.iter().any(|k| !k.is_pem()) {
            format!("it is an SSH signature by {by}, not by these keys, or the sidecar changed after signing")
        } else {
            format!("it is an SSH signature (by {by}); these are PEM keys")
        }));
    }
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| refused("it is neither base64 (cosign's blob signature) nor an SSH signature".into()))?;
    if let Some(k) = keys.iter().find(|k| k.verify_raw(&sidecar, &raw)) {
        return Ok(SignedBy { key: k.clone(), sidecar_digest });
    }
    Err(refused(if keys.iter().any(TrustedKey::is_pem) {
        "the signature is not by these keys, or the sidecar changed after signing".into()
    } else {
        "it is a cosign blob signature; these are SSH keys".into()
    }))
}

/// `import --require-signature`: the signature over the sidecar verifies with one of `keys`, and the archive's
/// sha256 is the one the signed sidecar names. Both before anything else is read from the archive.
pub fn require(
    archive: &Path,
    keys: &[TrustedKey],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<SignedBy, ArchiveSignatureError> {
    let signed = verify(archive, keys)?;
    check_content(archive, &signed.sidecar_digest, on_bytes)?;
    Ok(signed)
}
