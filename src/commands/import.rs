//! `bundle import -d REGISTRY[/PREFIX] FILE`: plan from the archive's front, probe the destination
//! (`delivery`), prove the archive sound (`archive::proof`), push from the archive, write the values file.
//! A `docker save` archive is verified in full, then converted (`convert`) and pushed the
//! same way.

use std::path::Path;
use std::sync::Arc;

use super::failure::Explain as _;
use super::settings::ImportSettings;
use super::{Context, Outcome, human, results};
use crate::archive::checksum::sidecar_path;
use crate::archive::contents::Checked;
use crate::archive::docker_save::DockerSave;
use crate::archive::proof::{self, Proven};
use crate::archive::{ArchiveFile, BundleContents};
use crate::import::delivery;
use crate::import::push;

/// What an import of a `docker save` archive (and its verify) says about digests.
pub const DOCKER_SAVE_NOTE: &str = "docker save keeps no registry manifests: import writes a Docker schema 2 manifest per image (layers compressed with gzip), so manifest digests at the destination are new; configs travel byte for byte, so image IDs stay the same";

pub async fn run(ctx: &Context, args: ImportSettings) -> Outcome<()> {
    let started = std::time::Instant::now();
    if is_volume_set(&args.archives).await {
        return super::import_volumes::run(ctx, &args, started).await;
    }
    let target = &args.target;
    // Planning needs only the front of the archive (metadata and manifests) and the tar headers: when the
    // destination already has everything, nothing else is read.
    let (archive, contents, pending) = match proof::front(args.archive()).await {
        Some((archive, contents)) => (archive, contents, Some(proof::Pending::start(&ctx.printer, args.archive()))),
        None => match proof::verify_any(&ctx.printer, args.archive()).await? {
            (archive, Checked::Layout(contents)) => {
                print_verified(ctx, args.archive(), &contents, Proven::InFull);
                (archive, contents, None)
            }
            (archive, Checked::DockerSave(saved)) => {
                return import_docker_save(ctx, args, archive, &saved, started).await;
            }
        },
    };
    let prepared = delivery::prepare(ctx.at(), target, &contents, args.dry_run).await?;
    if prepared.nothing_to_do(&contents) && !args.dry_run {
        say_nothing_to_do(ctx, &args, &prepared, &contents, started);
        if let Some(check) = pending {
            check.abandon();
        }
        return Ok(prepared.finish(&ctx.printer, target, &contents).await?);
    }
    // Something will be pushed: the archive must be proven sound first, so a damaged one pushes nothing.
    let (archive, contents) = match pending {
        Some(check) => {
            let (archive, contents, how) = check.prove(&ctx.printer, args.archive(), archive, contents).await?;
            print_verified(ctx, args.archive(), &contents, how);
            (archive, contents)
        }
        None => (archive, contents),
    };
    let origin = push::ArchiveOrigin { archive, blobs: &contents.blobs };
    push_and_finish(ctx, &args, prepared, &origin, &contents, started).await
}

/// A `docker save` archive, verified in full: convert it (`convert`), then push as any
/// other archive.
async fn import_docker_save(
    ctx: &Context,
    args: ImportSettings,
    archive: Arc<ArchiveFile>,
    saved: &DockerSave,
    started: std::time::Instant,
) -> Outcome<()> {
    ctx.printer.info(format!(
        "Verified {}: a docker save archive, {} images, {} layers ({}); every config matches its image ID and every layer its diff_id",
        args.archive().display(),
        saved.images.len(),
        saved.layer_count(),
        human(saved.total_bytes())
    ));
    ctx.printer.info(DOCKER_SAVE_NOTE);
    if !archive.is_random_access() {
        ctx.printer.warn(format!(
            "{} is compressed as a whole, so each layer is read by decompressing it from the start; decompress it first (`gunzip -k` or `zstd -d`) to import faster",
            args.archive().display()
        ));
    }
    let plain = saved.plain_layers();
    let to_compress: u64 = plain.iter().map(|f| f.entry.size).sum();
    let progress = ctx.printer.transfer("compress", to_compress, plain.len() as u64);
    // Compression is CPU work: one thread per core, whatever the network concurrency.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let saved = saved.clone();
    let p = progress.clone();
    let converted = tokio::task::spawn_blocking(move || crate::import::convert::convert(archive, &saved, threads, &p))
        .await
        .explain("the conversion task failed")??;
    progress.finish();
    ctx.printer.detail(format!("compressed the layers in {:.1?}", progress.elapsed()));
    let contents = converted.contents;
    let prepared = delivery::prepare(ctx.at(), &args.target, &contents, args.dry_run).await?;
    if prepared.nothing_to_do(&contents) && !args.dry_run {
        say_nothing_to_do(ctx, &args, &prepared, &contents, started);
        return Ok(prepared.finish(&ctx.printer, &args.target, &contents).await?);
    }
    push_and_finish(ctx, &args, prepared, &converted.origin, &contents, started).await
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
    ctx: &Context,
    args: &ImportSettings,
    prepared: &delivery::Prepared,
    contents: &BundleContents,
    started: std::time::Instant,
) {
    results::note_delivery(ctx.results.as_deref(), prepared, contents, results::Ended::NothingToDo);
    ctx.printer.info(format!(
        "{} already holds all {} images of {} with the same digests; nothing to push (checked in {:.1?})",
        args.target.destination_text,
        prepared.plan.images.len(),
        args.archive().display(),
        started.elapsed()
    ));
}

/// The dry run's lines, or the push, its report and the values file.
pub(super) async fn push_and_finish(
    ctx: &Context,
    args: &ImportSettings,
    prepared: delivery::Prepared,
    origin: &dyn push::BlobOrigin,
    contents: &BundleContents,
    started: std::time::Instant,
) -> Outcome<()> {
    if args.dry_run {
        results::note_delivery(ctx.results.as_deref(), &prepared, contents, results::Ended::DryRun);
        prepared.print_dry_run(&ctx.printer, contents);
        return Ok(());
    }
    let target = &args.target;
    let stats = results::push(ctx, &prepared, origin, contents)
        .await
        .map_err(|e| delivery::push_failure(e, "import", &target.destination.registry, Some(args.archive())))?;
    results::note_delivery(ctx.results.as_deref(), &prepared, contents, results::Ended::Pushed(&stats));
    prepared.report(&ctx.printer, "Imported", contents, &stats, &target.destination_text, started);
    Ok(prepared.finish(&ctx.printer, target, contents).await?)
}

fn print_verified(ctx: &Context, path: &Path, contents: &BundleContents, how: Proven) {
    let how = match how {
        Proven::InFull => String::new(),
        Proven::BySidecar => format!(" against {}", sidecar_path(path).display()),
    };
    ctx.printer.info(format!(
        "Verified {}{how} ({} images, {})",
        path.display(),
        contents.images.len(),
        human(contents.total_bytes())
    ));
}
