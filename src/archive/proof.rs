//! Proving an archive sound: in full (`verify`, and import when it cannot plan from the front), or, for an
//! import that plans from the archive's front, by its sidecar checksum running beside the planning (`Pending`).
//!
//! `bundle verify` and `bundle import` both prove through here, so they agree on what "sound" means.

use std::path::Path;
use std::sync::Arc;

use super::checksum::{SidecarError, file_digest, read_sidecar, sidecar_path};
use super::contents::{Checked, check, check_any};
use super::reader::ArchiveError;
use super::{ArchiveFile, BundleContents};
use crate::oci::digest::Digest;
use crate::support::hint::Hint;
use crate::support::printer::Printer;

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("cannot verify {}", path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: ArchiveError,
    },
    #[error("cannot verify {}", path.display())]
    Sidecar {
        path: std::path::PathBuf,
        #[source]
        source: SidecarError,
    },
    #[error("the verification task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("{} is a `docker save` archive, which has no manifests to read here", path.display())]
    DockerSave { path: std::path::PathBuf },
    #[error("{} failed verification ({} problems):{}", path.display(), problems.len(), listed(problems))]
    Unsound { path: std::path::PathBuf, problems: Vec<String> },
}

/// The first 20 problems, one per line; the count says how many there are.
fn listed(problems: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut text: String = problems.iter().take(SHOWN).map(|p| format!("\n  - {p}")).collect();
    if problems.len() > SHOWN {
        text.push_str(&format!("\n  … and {} more", problems.len() - SHOWN));
    }
    text
}

impl Hint for ProofError {
    fn hint(&self) -> Option<String> {
        match self {
            ProofError::Open { source, .. } => source.hint(),
            ProofError::Sidecar { source, .. } => source.hint(),
            ProofError::Task(_) => None,
            ProofError::DockerSave { .. } => Some("`bundle import` and `bundle verify` read it as it is".into()),
            ProofError::Unsound { .. } => Some(super::seekable::DAMAGED_ARCHIVE_HINT.into()),
        }
    }
}

/// How an archive was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// Every entry read and checked.
    InFull,
    /// The file's sha256 equals its sidecar's: byte for byte what export wrote (which verified every blob).
    BySidecar,
}

/// Read the whole archive once and check everything; any problem is an error listing all of them. An OCI layout
/// or a `docker save` archive.
pub async fn verify_any(printer: &Printer, path: &Path) -> Result<(Arc<ArchiveFile>, Checked), ProofError> {
    let archive = Arc::new(ArchiveFile::open(path).map_err(|source| ProofError::Open { path: path.into(), source })?);
    let sidecar = read_sidecar(path).map_err(|source| ProofError::Sidecar { path: path.into(), source })?;
    // A layout directory has no sidecar to miss: every blob is checked against its name.
    if sidecar.is_none() && !archive.is_directory() {
        printer.warn(format!(
            "{} not found; checking the archive's content against its own digests only",
            sidecar_path(path).display()
        ));
    }
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let progress = printer.transfer("verify", len, 0);
    let scanning = archive.clone();
    let p = progress.clone();
    let scan = tokio::task::spawn_blocking(move || scanning.scan(&|n| p.add(n as i64)))
        .await?
        .map_err(|source| ProofError::Open { path: path.into(), source })?;
    progress.finish();
    printer.detail(format!(
        "read {} in {:.1?}; sha256 {}",
        indicatif::HumanBytes(scan.file_len),
        progress.elapsed(),
        scan.file_digest.hex()
    ));
    let (checked, problems) = check_any(scan, sidecar.as_ref());
    match checked {
        Some(c) if problems.is_empty() => Ok((archive, c)),
        _ => {
            Err(ProofError::Unsound { path: path.into(), problems: problems.iter().map(ToString::to_string).collect() })
        }
    }
}

/// `verify_any`, for callers that need an OCI layout: a `docker save` archive is an error saying to import it.
pub async fn verify(printer: &Printer, path: &Path) -> Result<(Arc<ArchiveFile>, BundleContents), ProofError> {
    match verify_any(printer, path).await? {
        (archive, Checked::Layout(contents)) => Ok((archive, contents)),
        (_, Checked::DockerSave(_)) => Err(ProofError::DockerSave { path: path.into() }),
    }
}

/// Contents from the front of the archive and the tar headers (our seekable layout only; for a volume, the blobs
/// placed on it and its pieces), with every blob's location but no blob read yet; `None` means "verify in full
/// first". Nothing here is proven yet: pair it with `Pending::start` and `prove` before pushing anything.
pub async fn front(path: &Path) -> Option<(Arc<ArchiveFile>, BundleContents)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let archive = ArchiveFile::open(&path).ok()?;
        let mut scan = archive.scan_front().ok()??;
        let located = archive.locate().ok()??;
        // A volume holds only the blobs placed on it (bundle.json lists the whole set's), and pieces.
        let volume = scan
            .metadata
            .as_ref()
            .and_then(|m| serde_json::from_slice::<crate::oci::layout::BundleMetadata>(m).ok())
            .and_then(|m| m.volume);
        if let Some(v) = &volume {
            let elsewhere: std::collections::BTreeSet<&Digest> =
                v.placement.iter().filter(|p| p.volume != Some(v.number)).map(|p| &p.digest).collect();
            scan.blobs.retain(|d, _| !elsewhere.contains(d));
        } else if !located.pieces.is_empty() {
            return None;
        }
        // Every blob bundle.json lists, where the headers say it is, with the size both agree on; nothing more.
        if located.blobs.len() != scan.blobs.len() {
            return None;
        }
        for (digest, entry) in scan.blobs.iter_mut() {
            let at = located.blobs.get(digest).filter(|l| l.size == entry.size)?;
            *entry = *at;
        }
        // Pieces named by their digests, as blobs are here: the sidecar check proves them, or the full verify.
        for (digest, entry) in located.pieces {
            let kind = super::reader::OtherKind::File {
                entry,
                digest: digest.clone(),
                json: None,
                content: super::reader::FileContent::Plain,
            };
            scan.others.push(super::reader::OtherEntry { path: crate::oci::layout::piece_path(&digest), kind });
        }
        let (contents, problems) = check(scan, None);
        contents.filter(|_| problems.is_empty()).map(|c| (Arc::new(archive), c))
    })
    .await
    .ok()?
}

/// The sidecar check of an archive planned from its front, started as soon as the plan is known so that it
/// runs while the destination is probed. A thread of its own: when nothing needs pushing, the import ends
/// without waiting for it. `None` inside: the archive has no (readable) sidecar.
pub struct Pending(Option<RunningCheck>);

/// A sidecar check: still running on its thread, or already done by the caller (`import --require-signature`
/// read the whole file against the sidecar it verified the signature of).
enum RunningCheck {
    Reading(ReadingCheck),
    Done,
}

struct ReadingCheck {
    expected: Digest,
    result: std::sync::mpsc::Receiver<std::io::Result<Digest>>,
    progress: crate::support::printer::Transfer,
}

impl Pending {
    pub fn start(printer: &Printer, path: &Path) -> Pending {
        let Ok(Some(expected)) = read_sidecar(path) else { return Pending(None) };
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let progress = printer.transfer("check", len, 0);
        let (tx, result) = std::sync::mpsc::sync_channel(1);
        let (file, p) = (path.to_path_buf(), progress.clone());
        std::thread::spawn(move || {
            let _ = tx.send(file_digest(&file, &|n| p.add(n as i64)));
        });
        Pending(Some(RunningCheck::Reading(ReadingCheck { expected, result, progress })))
    }

    /// `path` was read whole and its sha256 is `proven`: when its sidecar names that digest, nothing is read again.
    pub fn start_proven(printer: &Printer, path: &Path, proven: Option<&Digest>) -> Pending {
        match (proven, read_sidecar(path)) {
            (Some(p), Ok(Some(expected))) if *p == expected => Pending(Some(RunningCheck::Done)),
            _ => Pending::start(printer, path),
        }
    }

    /// Not needed after all (nothing to push): clear its progress bar; the thread ends with the process.
    pub fn abandon(self) {
        if let Some(RunningCheck::Reading(running)) = self.0 {
            running.progress.finish();
        }
    }

    /// Prove the archive planned from its front. With a `.sha256` sidecar that matches, the file is byte for
    /// byte what export wrote, and each blob is hashed again as it is uploaded; that costs one sequential read
    /// instead of a full verification pass. Without a sidecar, or when it does not match, the full verification
    /// decides (and lists every problem).
    pub async fn prove(
        self,
        printer: &Printer,
        path: &Path,
        archive: Arc<ArchiveFile>,
        contents: BundleContents,
    ) -> Result<(Arc<ArchiveFile>, BundleContents, Proven), ProofError> {
        if let Pending(Some(RunningCheck::Done)) = self {
            return Ok((archive, contents, Proven::BySidecar));
        }
        if let Pending(Some(RunningCheck::Reading(ReadingCheck { expected, result, progress }))) = self {
            let actual = tokio::task::spawn_blocking(move || result.recv()).await?;
            progress.finish();
            if actual.is_ok_and(|r| r.is_ok_and(|d| d == expected)) {
                return Ok((archive, contents, Proven::BySidecar));
            }
        }
        let (archive, contents) = verify(printer, path).await?;
        Ok((archive, contents, Proven::InFull))
    }
}
