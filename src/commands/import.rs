//! `bundle import -d REGISTRY[/PREFIX] FILE`: plan from the archive's front, probe the destination
//! (`delivery`), prove the archive sound (`archive::proof`), push from the archive, write the values file.

use std::path::Path;

use super::settings::ImportSettings;
use super::{Context, Outcome, delivery, human};
use crate::archive::BundleContents;
use crate::archive::checksum::sidecar_path;
use crate::archive::proof::{self, Proven};
use crate::push;

pub async fn run(ctx: &Context, args: ImportSettings) -> Outcome<()> {
    let started = std::time::Instant::now();
    let target = &args.target;
    // Planning needs only the front of the archive (metadata and manifests) and the tar headers: when the
    // destination already has everything, nothing else is read.
    let (archive, contents, pending) = match proof::front(&args.archive).await {
        Some((archive, contents)) => (archive, contents, Some(proof::Pending::start(&ctx.printer, &args.archive))),
        None => {
            let (archive, contents) = proof::verify(&ctx.printer, &args.archive).await?;
            print_verified(ctx, &args.archive, &contents, Proven::InFull);
            (archive, contents, None)
        }
    };
    let prepared = delivery::prepare(ctx, target, &contents, args.dry_run).await?;
    if prepared.nothing_to_do(&contents) && !args.dry_run {
        ctx.printer.info(format!(
            "{} already holds all {} images of {} with the same digests; nothing to push (checked in {:.1?})",
            target.destination_text,
            prepared.plan.images.len(),
            args.archive.display(),
            started.elapsed()
        ));
        if let Some(check) = pending {
            check.abandon();
        }
        return prepared.finish(ctx, target, &contents).await;
    }
    // Something will be pushed: the archive must be proven sound first, so a damaged one pushes nothing.
    let (archive, contents) = match pending {
        Some(check) => {
            let (archive, contents, how) = check.prove(&ctx.printer, &args.archive, archive, contents).await?;
            print_verified(ctx, &args.archive, &contents, how);
            (archive, contents)
        }
        None => (archive, contents),
    };
    if args.dry_run {
        prepared.print_dry_run(ctx, &contents);
        return Ok(());
    }
    let dest = &target.destination;
    let origin = push::ArchiveOrigin { archive, blobs: &contents.blobs };
    let stats = prepared
        .push(ctx, &origin, &contents)
        .await
        .map_err(|e| delivery::push_failure(e, "import", &dest.registry, Some(&args.archive)))?;
    prepared.report(ctx, "Imported", &contents, &stats, &target.destination_text, started);
    prepared.finish(ctx, target, &contents).await
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
