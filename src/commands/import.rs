//! `bundle import -d REGISTRY[/PREFIX] FILE`: verify, plan, probe, push.

use anyhow::Context as _;

use super::{Context, human, user_error};
use crate::cli::ImportArgs;
use crate::push::{self, Destination, PushPlan};
use crate::registry::Role;

pub async fn run(ctx: &Context, args: ImportArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dest = Destination::parse(&args.destination).map_err(|e| {
        user_error(format!("invalid destination: {e}"), "write it as host[:port] or host[:port]/prefix, e.g. -d registry.internal:5000/mirror")
    })?;
    let (archive, contents) = super::verify::verify_archive(ctx, &args.archive).await?;
    ctx.printer.info(format!("Verified {} ({} images, {})", args.archive.display(), contents.images.len(), human(contents.total_bytes())));

    let plan = PushPlan::new(&contents, &dest).context("cannot plan the import")?;
    let client = ctx.registries.client(&dest.registry, Role::Destination).context("cannot prepare the destination registry")?;
    let presence = push::probe(&client, &plan, &contents, ctx.concurrency)
        .await
        .with_context(|| format!("cannot check what {} already has", dest.registry))?;

    if args.dry_run {
        for p in &plan.images {
            println!("Copying {} to {} (dry-run)", p.source, p.target);
        }
        println!(
            "Plan: {} images into {} repositories of {} ({} already complete); {} blobs already present; {} blobs to upload ({}), {} to mount; nothing changed (dry run)",
            plan.images.len(),
            plan.repositories.len(),
            dest.registry,
            presence.images_complete(&plan, &contents),
            presence.blobs_present,
            presence.blobs_to_upload(),
            human(presence.bytes_to_upload(&contents)),
            presence.blobs_to_mount(),
        );
        return Ok(());
    }

    let upload_bytes = presence.bytes_to_upload(&contents);
    let progress = ctx.printer.transfer("push", upload_bytes, presence.blobs_to_upload() as u64);
    let stats = push::execute(&client, archive, &plan, &contents, &presence, ctx.concurrency, &progress)
        .await
        .with_context(|| format!("import into {} did not complete; run the same command again to finish it (what was pushed is kept)", dest.registry))?;
    progress.finish();
    for p in &plan.images {
        ctx.printer.detail(format!("{} -> {}", p.source, p.target));
    }
    ctx.printer.info(format!(
        "Imported {} images into {} ({} were already complete): {} blobs uploaded ({}), {} mounted, {} already present, {} manifests pushed, in {:.1?}",
        plan.images.len(),
        args.destination,
        presence.images_complete(&plan, &contents),
        stats.uploaded,
        human(upload_bytes),
        stats.mounted,
        presence.blobs_present,
        stats.manifests,
        started.elapsed()
    ));
    Ok(())
}
