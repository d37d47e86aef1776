//! The `OUT.tar.zst.sha256` sidecar, in `sha256sum` format so `sha256sum -c` works where `bundle` is not
//! installed (a security officer's workstation between the two networks).

use std::path::{Path, PathBuf};

use crate::oci::digest::Digest;

pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    archive.with_file_name(name)
}

/// `<hex>  <file name>\n`; the name is relative so the pair can be moved together.
pub fn sidecar_line(archive: &Path, digest: &Digest) -> String {
    format!("{}  {}\n", digest.hex(), archive.file_name().unwrap_or_default().to_string_lossy())
}

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not in sha256sum format (`<64 hex>  <file name>`)")]
    Malformed { path: PathBuf },
    #[error("{path} is for `{named}`, not `{actual}`")]
    OtherFile { path: PathBuf, named: String, actual: String },
}

/// The digest the sidecar next to `archive` records, if there is a sidecar.
pub fn read_sidecar(archive: &Path) -> Result<Option<Digest>, SidecarError> {
    let path = sidecar_path(archive);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SidecarError::Read { path, source }),
    };
    let line = text.lines().next().unwrap_or_default();
    let (hex, name) = line
        .split_once("  ")
        .or_else(|| line.split_once(" *"))
        .ok_or(SidecarError::Malformed { path: path.clone() })?;
    let digest: Digest =
        format!("sha256:{}", hex.trim()).parse().map_err(|_| SidecarError::Malformed { path: path.clone() })?;
    let actual = archive.file_name().unwrap_or_default().to_string_lossy().to_string();
    let named = name.trim().to_string();
    // A renamed archive keeps a valid sidecar only if the sidecar was renamed too; compare base names.
    let named_base = Path::new(&named).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if named_base != actual {
        return Err(SidecarError::OtherFile { path, named, actual });
    }
    Ok(Some(digest))
}

/// sha256 of a whole file, read sequentially; `on_bytes` is told about progress.
pub fn file_digest(path: &Path, on_bytes: &(dyn Fn(u64) + Sync)) -> std::io::Result<Digest> {
    // Read once, so around the page cache where the filesystem allows (support::direct_io says why).
    let mut file = crate::support::direct_io::SequentialReader::open(path)?;
    let mut hasher = crate::oci::digest::DigestWriter::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
        on_bytes(n as u64);
    }
}

impl crate::support::hint::Hint for SidecarError {
    fn hint(&self) -> Option<String> {
        Some("the .sha256 file beside the archive must be the one export wrote with it; copy it again, or remove it to check the archive against its own digests only".into())
    }
}
