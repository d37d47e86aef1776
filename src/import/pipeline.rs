//! Import, the pipeline: plan from the archive's front, probe the destination (`delivery`, ECR included), prove
//! the archive sound (`archive::proof`), push from the archive, read back and finish (`delivery::finish`). Its
//! inputs: our archive, another tool's layout, a `docker save` archive (verified in full, then converted by
//! `convert` and pushed the same way), or the volumes of a set (`volume_set`). The command calls `import` once.

use std::path::Path;
use std::sync::Arc;

pub use super::job::{ImportError, ImportJob};
use crate::archive::checksum::sidecar_path;
use crate::archive::contents::Checked;
use crate::archive::docker_save::DockerSave;
use crate::archive::proof::{self, Proven};
use crate::archive::{ArchiveFile, BundleContents};
use crate::import::delivery::{self, Surroundings};
use crate::import::push;

/// What an import of a `docker save` archive (and its verify) says about digests.
pub const DOCKER_SAVE_NOTE: &str = "docker save keeps no registry manifests: import writes a Docker schema 2 manifest per image (layers compressed with gzip), so manifest digests at the destination are new; configs travel byte for byte, so image IDs stay the same";

/// Import `job`: one call from plan to finish.
pub async fn import(at: Surroundings<'_>, args: &ImportJob) -> Result<(), ImportError> {
    let started = std::time::Instant::now();
    let checked;
    let args = if args.require_signature.is_empty() {
        args
    } else {
        checked = ImportJob { proven: require_signatures(at, args).await?, ..args.clone() };
        &checked
    };
    if is_volume_set(&args.archives).await {
        return super::volume_set::import(at, args, started).await;
    }
    let target = &args.target;
    // Planning needs only the front of the archive (metadata and manifests) and the tar headers: when the
    // destination already has everything, nothing else is read.
    let (archive, contents, pending) = match proof::front(args.archive()).await {
        Some((archive, contents)) => {
            let pending = proof::Pending::start_proven(at.printer, args.archive(), args.proven(args.archive()));
            (archive, contents, Some(pending))
        }
        None => match proof::verify_any(at.printer, args.archive()).await? {
            (archive, Checked::Layout(contents)) => {
                print_verified(at, args.archive(), &contents, Proven::InFull);
                (archive, contents, None)
            }
            (archive, Checked::DockerSave(saved)) => {
                return import_docker_save(at, args, archive, &saved, started).await;
            }
        },
    };
    args.files_wanted(&contents)?;
    let prepared = delivery::prepare(at, target, &contents, args.dry_run).await?;
    if prepared.nothing_to_do(&contents) && !args.dry_run {
        say_nothing_to_do(at, args, &prepared, &contents, started);
        if let Some(check) = pending {
            check.abandon();
        }
        prepared.finish(at.printer, target, &contents).await?;
        return write_files(at, args, &prepared, &archive, &contents).await;
    }
    // Something will be pushed: the archive must be proven sound first, so a damaged one pushes nothing.
    let (archive, contents) = match pending {
        Some(check) => {
            let (archive, contents, how) = check.prove(at.printer, args.archive(), archive, contents).await?;
            print_verified(at, args.archive(), &contents, how);
            (archive, contents)
        }
        None => (archive, contents),
    };
    let origin = push::ArchiveOrigin { archive: archive.clone(), blobs: &contents.blobs };
    push_and_finish(at, args, &prepared, &origin, &contents, started).await?;
    if !args.dry_run {
        write_files(at, args, &prepared, &archive, &contents).await?;
    }
    Ok(())
}

/// `--require-signature`: every file given (each volume, each parity volume) signed by a trusted key and
/// matching its signed sidecar, before anything is planned or pushed. What it read need not be read again.
async fn require_signatures(
    at: Surroundings<'_>,
    args: &ImportJob,
) -> Result<Vec<(std::path::PathBuf, crate::oci::digest::Digest)>, ImportError> {
    let mut proven = Vec::new();
    for path in &args.archives {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let progress = at.printer.transfer("check", len, 0);
        let (file, keys, p) = (path.clone(), args.require_signature.clone(), progress.clone());
        let signed = tokio::task::spawn_blocking(move || {
            crate::trust::archive_signature::require(&file, &keys, &|n| p.add(n as i64))
        })
        .await
        .map_err(|source| ImportError::Task { what: "signature check", source })?;
        progress.finish();
        let signed = signed?;
        at.printer.info(format!(
            "Signature of {} verified: signed by {}; its sha256 {} is the one the signed sidecar names",
            path.display(),
            signed.key.describe(),
            signed.sidecar_digest.hex()
        ));
        proven.push((path.clone(), signed.sidecar_digest));
    }
    Ok(proven)
}

/// `--files-out DIR`: every file written back from the archive, checked on the way.
async fn write_files(
    at: Surroundings<'_>,
    args: &ImportJob,
    prepared: &delivery::Prepared,
    archive: &Arc<ArchiveFile>,
    contents: &BundleContents,
) -> Result<(), ImportError> {
    let Some(dir) = &args.files_out else { return Ok(()) };
    let segments = |d: &crate::oci::digest::Digest| contents.blobs.get(d).map(|e| vec![(archive.clone(), *e)]);
    Ok(prepared.write_files(at.printer, dir, contents, &segments).await?)
}

/// A `docker save` archive, verified in full: convert it (`convert`), then push as any
/// other archive.
async fn import_docker_save(
    at: Surroundings<'_>,
    args: &ImportJob,
    archive: Arc<ArchiveFile>,
    saved: &DockerSave,
    started: std::time::Instant,
) -> Result<(), ImportError> {
    at.printer.info(format!(
        "Verified {}: a docker save archive, {} images, {} layers ({}); every config matches its image ID and every layer its diff_id",
        args.archive().display(),
        saved.images.len(),
        saved.layer_count(),
        crate::support::printer::human(saved.total_bytes())
    ));
    at.printer.info(DOCKER_SAVE_NOTE);
    if !archive.is_random_access() {
        at.printer.warn(format!(
            "{} is compressed as a whole, so each layer is read by decompressing it from the start; decompress it first (`gunzip -k` or `zstd -d`) to import faster",
            args.archive().display()
        ));
    }
    let plain = saved.plain_layers();
    let to_compress: u64 = plain.iter().map(|f| f.entry.size).sum();
    let progress = at.printer.transfer("compress", to_compress, plain.len() as u64);
    // Compression is CPU work: one thread per core, whatever the network concurrency.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let saved = saved.clone();
    let p = progress.clone();
    let converted = tokio::task::spawn_blocking(move || crate::import::convert::convert(archive, &saved, threads, &p))
        .await
        .map_err(|source| ImportError::Task { what: "conversion", source })??;
    progress.finish();
    at.printer.detail(format!("compressed the layers in {:.1?}", progress.elapsed()));
    let contents = converted.contents;
    args.files_wanted(&contents)?;
    let prepared = delivery::prepare(at, &args.target, &contents, args.dry_run).await?;
    if prepared.nothing_to_do(&contents) && !args.dry_run {
        say_nothing_to_do(at, args, &prepared, &contents, started);
        return Ok(prepared.finish(at.printer, &args.target, &contents).await?);
    }
    push_and_finish(at, args, &prepared, &converted.origin, &contents, started).await
}

/// Several inputs, or one that is a volume: a volume set. (Several inputs that are not volumes are refused
/// when the set is put together, naming the one that is not.)
async fn is_volume_set(archives: &[std::path::PathBuf]) -> bool {
    if archives.len() > 1 {
        return true;
    }
    let path = archives[0].clone();
    tokio::task::spawn_blocking(move || {
        ArchiveFile::open(&path).ok().and_then(|a| a.read_metadata().ok().flatten()).is_some_and(|m| m.volume.is_some())
    })
    .await
    .unwrap_or(false)
}

fn say_nothing_to_do(
    at: Surroundings<'_>,
    args: &ImportJob,
    prepared: &delivery::Prepared,
    contents: &BundleContents,
    started: std::time::Instant,
) {
    at.observer.ended(prepared, contents, delivery::Ended::NothingToDo);
    at.printer.info(format!(
        "{} already holds all {} images of {} with the same digests; nothing to push (checked in {:.1?})",
        args.target.destination_text,
        prepared.plan.images.len(),
        args.archive().display(),
        started.elapsed()
    ));
}

/// The dry run's lines, or the push, its report and the values file.
async fn push_and_finish(
    at: Surroundings<'_>,
    args: &ImportJob,
    prepared: &delivery::Prepared,
    origin: &dyn push::BlobOrigin,
    contents: &BundleContents,
    started: std::time::Instant,
) -> Result<(), ImportError> {
    if args.dry_run {
        return Ok(prepared.dry_run(at, &args.target, contents)?);
    }
    let target = &args.target;
    let stats = prepared
        .push(at, origin, contents)
        .await
        .map_err(|e| delivery::push_failure(e, "import", &target.destination.registry, Some(args.archive())))?;
    prepared.report(at, "Imported", contents, &stats, &target.destination_text, started);
    Ok(prepared.finish(at.printer, target, contents).await?)
}

fn print_verified(at: Surroundings<'_>, path: &Path, contents: &BundleContents, how: Proven) {
    let how = match how {
        Proven::InFull => String::new(),
        Proven::BySidecar => format!(" against {}", sidecar_path(path).display()),
    };
    at.printer.info(format!(
        "Verified {}{how} ({} images, {})",
        path.display(),
        contents.images.len(),
        crate::support::printer::human(contents.total_bytes())
    ));
}
