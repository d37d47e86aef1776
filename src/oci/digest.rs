//! Content digests (`sha256:<hex>`), the identity of every manifest and blob we move.
//!
//! Only sha256 is accepted: it is what every registry we target computes, and refusing the rest keeps a
//! digest string safe to use as a file name inside the archive.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("`{0}` is not a digest: expected `sha256:` followed by 64 lowercase hex characters")]
    Malformed(String),
    #[error("`{0}` uses an unsupported digest algorithm: only sha256 is supported")]
    Unsupported(String),
}

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).into())
    }

    pub fn from_sha256(raw: [u8; 32]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(raw)))
    }

    /// The hex part, used as the blob's file name (`blobs/sha256/<hex>`).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path of this blob inside an OCI image layout.
    pub fn layout_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_string()));
        };
        if alg != "sha256" {
            if !alg.is_empty() && alg.bytes().all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b)) {
                return Err(DigestError::Unsupported(s.to_string()));
            }
            return Err(DigestError::Malformed(s.to_string()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental sha256 that also counts bytes, so a stream is checked for both size and content.
#[derive(Clone, Default)]
pub struct DigestWriter {
    hasher: Sha256,
    len: u64,
}

impl DigestWriter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.hasher.finalize().into())
    }
}

impl std::io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hashes what is read through it and tells `on_bytes` how much, so a copy is checked as it goes.
pub struct HashingRead<'a, R> {
    inner: R,
    hasher: DigestWriter,
    on_bytes: &'a (dyn Fn(u64) + Sync),
}

impl<'a, R: std::io::Read> HashingRead<'a, R> {
    pub fn new(inner: R, on_bytes: &'a (dyn Fn(u64) + Sync)) -> Self {
        HashingRead { inner, hasher: DigestWriter::new(), on_bytes }
    }

    /// Whether exactly `size` bytes went by and they hash to `expected`.
    pub fn matches(self, expected: &Digest, size: u64) -> bool {
        self.hasher.len() == size && self.hasher.finish() == *expected
    }
}

impl<R: std::io::Read> std::io::Read for HashingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

impl crate::support::hint::Hint for DigestError {
    fn hint(&self) -> Option<String> {
        Some("digests look like `sha256:` and 64 hex characters; copy it from `skopeo inspect` or the registry".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_is_the_well_known_value() {
        assert_eq!(Digest::of(b"").as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn rejects_uppercase_short_and_other_algorithms() {
        let good = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(good.parse::<Digest>().is_ok());
        assert!(good.to_uppercase().replace("SHA256", "sha256").parse::<Digest>().is_err());
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(matches!("sha512:abc".parse::<Digest>(), Err(DigestError::Unsupported(_))));
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
    }
}
