//! A spec's files made ready before anything else is downloaded: a local file hashed where it is, a URL
//! downloaded into the temporary directory and checked against the sha256 the spec gives.

use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use super::{FileError, FileOrigin, FileSource};
use crate::oci::digest::{Digest, DigestWriter};

/// A file ready to travel: where its bytes are now, their digest and size.
#[derive(Debug)]
pub struct StagedFile {
    pub name: String,
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    /// The path or URL the spec gave.
    pub origin: String,
    /// A download, removed when the export ends.
    _download: Option<tempfile::TempPath>,
}

/// Every file of `files`, in order: local ones hashed, URLs downloaded under `tmp_dir` and checked.
pub async fn stage(files: &[FileSource], tmp_dir: &Path) -> Result<Vec<StagedFile>, FileError> {
    let mut out = Vec::new();
    for f in files {
        out.push(match &f.from {
            FileOrigin::Path(path) => {
                let (name, path2) = (f.name.clone(), path.clone());
                let (digest, size) = tokio::task::spawn_blocking(move || hash_file(&path2))
                    .await
                    .map_err(|e| FileError::Read { name: name.clone(), path: path.clone(), source: e.into() })?
                    .map_err(|source| FileError::Read { name, path: path.clone(), source })?;
                StagedFile {
                    name: f.name.clone(),
                    path: path.clone(),
                    digest,
                    size,
                    origin: f.from.text(),
                    _download: None,
                }
            }
            FileOrigin::Url { url, sha256 } => download(&f.name, url, sha256, tmp_dir).await?,
        });
    }
    Ok(out)
}

/// The sha256 and size of a regular file.
pub fn hash_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    // A file that changes after this is refused when it is staged (`BlobStore::put_file` hashes it again).
    Ok((crate::archive::checksum::file_digest(path, &|_| {})?, meta.len()))
}

async fn download(name: &str, url: &url::Url, expected: &Digest, tmp_dir: &Path) -> Result<StagedFile, FileError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| FileError::Download {
        name: name.to_string(),
        url: url.to_string(),
        source,
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("bundle/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| failed(e.into()))?;
    let response = http.get(url.clone()).send().await.map_err(|e| failed(e.into()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status()).into()));
    }
    std::fs::create_dir_all(tmp_dir).map_err(|e| failed(e.into()))?;
    let temp = tempfile::Builder::new()
        .prefix("bundle-file-")
        .tempfile_in(tmp_dir)
        .map_err(|e| failed(e.into()))?
        .into_temp_path();
    let mut out = tokio::fs::File::create(&temp).await.map_err(|e| failed(e.into()))?;
    let mut hasher = DigestWriter::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| failed(e.into()))?;
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(|e| failed(e.into()))?;
    }
    out.flush().await.map_err(|e| failed(e.into()))?;
    let size = hasher.len();
    let got = hasher.finish();
    if &got != expected {
        return Err(FileError::Mismatch {
            name: name.to_string(),
            url: url.to_string(),
            expected: expected.clone(),
            got,
        });
    }
    Ok(StagedFile {
        name: name.to_string(),
        path: temp.to_path_buf(),
        digest: got,
        size,
        origin: url.to_string(),
        _download: Some(temp),
    })
}
