//! What an import is asked to do (`ImportJob`) and how it fails (`ImportError`): shared by the pipeline and its
//! inputs (`volume_set`), so neither needs the other's internals.

use std::path::{Path, PathBuf};

use crate::archive::proof::ProofError;
use crate::import::convert::ConvertError;
use crate::import::delivery::{DeliveryError, Target};
use crate::volumes::VolumeError;

/// One import, as the flags said.
#[derive(Debug, Clone)]
pub struct ImportJob {
    pub target: Target,
    /// One archive, or the volumes of a set (directories and patterns expanded).
    pub archives: Vec<PathBuf>,
    /// `--files-out DIR`: the files the bundle carries, written back after the push.
    pub files_out: Option<PathBuf>,
    /// `--require-signature`: every archive (every volume) must be signed by one of these keys, and match its
    /// signed sidecar, before anything is pushed.
    pub require_signature: Vec<crate::trust::TrustedKey>,
    /// Files whose sha256 `--require-signature` already read and matched with their signed sidecars: the
    /// import's own sidecar proof does not read them again.
    pub proven: Vec<(PathBuf, crate::oci::digest::Digest)>,
    pub dry_run: bool,
    /// Where rebuilt volumes are written while they are pushed.
    pub tmp_dir: PathBuf,
}

impl ImportJob {
    /// The archive, when there is one (a volume set is imported by `volume_set`).
    pub fn archive(&self) -> &Path {
        &self.archives[0]
    }

    /// What `--require-signature` proved of `path`'s content, if anything.
    pub fn proven(&self, path: &Path) -> Option<&crate::oci::digest::Digest> {
        self.proven.iter().find(|(p, _)| p == path).map(|(_, d)| d)
    }

    /// `--files-out` for a bundle without files is refused before anything is pushed.
    pub fn files_wanted(&self, contents: &crate::archive::BundleContents) -> Result<(), ImportError> {
        let carried = contents.metadata.as_ref().is_some_and(|m| !m.files.is_empty());
        if self.files_out.is_some() && !carried {
            return Err(crate::files::FileError::NoFiles.into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error(transparent)]
    Signature(#[from] crate::trust::archive_signature::ArchiveSignatureError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("the {what} task failed")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error(transparent)]
    Files(#[from] crate::files::FileError),
    #[error("cannot import these volumes")]
    Volumes(#[source] VolumeError),
    #[error("cannot use the temporary directory {}", .dir.display())]
    TempDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} does not match its sidecar, so it cannot rebuild the missing volumes", .0.display())]
    DamagedParity(PathBuf),
    #[error("cannot rebuild the missing volumes")]
    Rebuild(#[source] VolumeError),
    /// Images of the set wait for volumes that are not here (the message names each).
    #[error("{0}")]
    MissingVolumes(String),
}

impl crate::support::hint::Hint for ImportError {
    fn hint(&self) -> Option<String> {
        match self {
            ImportError::Delivery(e) => e.hint(),
            ImportError::Proof(e) => e.hint(),
            ImportError::Signature(e) => e.hint(),
            ImportError::Convert(e) => e.hint(),
            ImportError::Files(e) => e.hint(),
            ImportError::Volumes(e) | ImportError::Rebuild(e) => e.hint(),
            ImportError::DamagedParity(_) => Some("copy the parity volume again, or bring the missing volumes".into()),
            ImportError::MissingVolumes(_) => Some(
                "bring the missing volumes and run the import again with every volume (what was pushed is kept, so only the rest is pushed)".into(),
            ),
            ImportError::Task { .. } | ImportError::TempDir { .. } => None,
        }
    }
}
