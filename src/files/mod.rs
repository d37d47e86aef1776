//! Files that travel beside the images: install scripts, CLI binaries, RPMs, offline docs.
//!
//! A site installs products, and products come with files that are not images. Each file travels as an OCI
//! artifact of its own (`artifact`): one layer holding the file, titled with its name, so the archive verifies
//! it like every blob, a registry stores it and `oras pull` fetches it. A spec names a local `path`, or a `url`
//! with the `sha256` it must have (`stage` fetches and checks it before anything else is downloaded); import
//! writes the files back (`restore`), each checked against its digest, never outside the directory it is given.

mod artifact;
mod restore;
mod stage;

use std::path::PathBuf;

pub use artifact::{ARTIFACT_TYPE, FileArtifact, artifact};
pub use restore::{Elsewhere, Restored, Segments, restore};
pub use stage::{StagedFile, stage};

use crate::oci::digest::Digest;

/// One file a spec names, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSource {
    /// The name it travels and is written back under.
    pub name: String,
    pub from: FileOrigin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileOrigin {
    Path(PathBuf),
    Url { url: url::Url, sha256: Digest },
}

impl FileOrigin {
    /// The path or URL, as the spec gave it (recorded in bundle.json).
    pub fn text(&self) -> String {
        match self {
            FileOrigin::Path(p) => p.display().to_string(),
            FileOrigin::Url { url, .. } => url.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the file {path} (`{name}`)")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot download `{name}` from {url}")]
    Download {
        name: String,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("`{name}` from {url} has sha256 {got}, but the spec says {expected}; nothing was exported")]
    Mismatch { name: String, url: String, expected: Digest, got: Digest },
    #[error("cannot write `{name}` to {path}")]
    Write {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the archive's `{name}` ({digest}) is damaged: {problem}; nothing of it was written")]
    Damaged { name: String, digest: Digest, problem: String },
    #[error("the archive names a file `{name}`, which {problem}; nothing was written")]
    BadName { name: String, problem: &'static str },
    #[error("--files-out: the archive carries no files")]
    NoFiles,
}

impl crate::support::hint::Hint for FileError {
    fn hint(&self) -> Option<String> {
        match self {
            FileError::Read { .. } => Some("check `path:` in the spec's `files:` (relative paths are relative to the spec)".into()),
            FileError::Download { .. } => Some("check the URL and that this host can reach it".into()),
            FileError::Mismatch { .. } => Some(
                "the file changed, or the sha256 in the spec is wrong: compare with the publisher's checksum before you change it".into(),
            ),
            FileError::Write { .. } => Some("check that the directory is writable and has space".into()),
            FileError::Damaged { .. } => Some("bundle verify names what is damaged; transfer the archive again".into()),
            FileError::BadName { .. } => Some("the archive was not written by bundle export; do not restore its files".into()),
            FileError::NoFiles => Some("export with a spec that lists `files:`".into()),
        }
    }
}

/// Why `name` cannot be a file's name, if it cannot: one plain file name, written back as it is.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 200 {
        Some("is longer than 200 characters")
    } else if !name.chars().any(|c| c.is_ascii_alphanumeric()) {
        Some("has no letter or digit")
    } else if name.starts_with('.') {
        Some("starts with `.` (no hidden files, no `..`)")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)) {
        Some("has a character other than letters, digits, `.`, `_`, `+` and `-` (no `/`: one plain file name)")
    } else {
        None
    }
}

/// The repository component of a file's artifact: its name lowercased, every other character a `-`.
pub fn repository_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_file_name() {
        for ok in ["install.sh", "rke2-v1.30_amd64+x.tar.gz", "README"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "..", "a b", "a\\b", "x\0"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(repository_name("RKE2-v1.30_amd64+x.tar.gz"), "rke2-v1-30-amd64-x-tar-gz");
        assert_eq!(repository_name("install.sh"), "install-sh");
    }
}
