//! `bundle copy -d REGISTRY[/PREFIX]`: the sources of export (`discovery`), the destination steps of import
//! (`delivery`), and between them the library's `copy`: blobs stream from registry to registry.

use std::collections::HashMap;

use super::failure::Explain as _;
use super::settings::CopySettings;
use super::{Context, Outcome, discovery};
use crate::export::pack;
use crate::import::copy::{RegistryOrigin, contents_of};
use crate::import::delivery;

pub async fn run(ctx: &Context, settings: CopySettings) -> Outcome<()> {
    let started = std::time::Instant::now();
    let target = &settings.target;
    // The values plan is proven with helm only when a values file will be written.
    if !settings.sources.files.is_empty() {
        return Err(super::Failure::user(
            "copy pushes images and charts; the spec's `files:` travel in archives",
            "export the spec and import the archive (import --files-out DIR writes the files back), or remove `files:`",
        ));
    }
    let (charts, refs) = discovery::gather(ctx, &settings.sources, target.values_out.is_some()).await?;
    let mut images =
        discovery::resolve(ctx, &refs, settings.sources.platforms.as_ref(), settings.sources.referrers).await?;
    discovery::check_signatures(ctx, &settings.sources, &images).await?;
    let mut local = HashMap::new();
    for c in &charts {
        let artifact = crate::chart::artifact::oci_artifact(&c.loaded).explain("cannot package the chart")?;
        local.extend(artifact.blobs);
        images.push(artifact.image);
    }
    let meta = pack::metadata(&images, None, charts.iter().map(|c| c.survey.record.clone()).collect(), Vec::new());
    let contents = contents_of(&images, meta).explain("cannot plan the copy")?;
    let prepared = delivery::prepare(ctx.at(), target, &contents, settings.dry_run).await?;
    if settings.dry_run {
        return Ok(prepared.dry_run(ctx.at(), target, &contents)?);
    }
    if prepared.nothing_to_do(&contents) {
        ctx.at().observer.ended(&prepared, &contents, delivery::Ended::NothingToDo);
        ctx.printer.info(format!(
            "{} already holds all {} images with the same digests; nothing to copy (checked in {:.1?})",
            target.destination_text,
            prepared.plan.images.len(),
            started.elapsed()
        ));
        return Ok(prepared.finish(&ctx.printer, target, &contents).await?);
    }
    let origin =
        RegistryOrigin::new(&ctx.registries, &images, local).explain("cannot prepare the source registries")?;
    let stats = prepared
        .push(ctx.at(), &origin, &contents)
        .await
        .map_err(|e| delivery::push_failure(e, "copy", &target.destination.registry, None))?;
    prepared.report(ctx.at(), "Copied", &contents, &stats, &target.destination_text, started);
    Ok(prepared.finish(&ctx.printer, target, &contents).await?)
}
