//! `bundle export`: the spec and the flags → the references (a chart's and the listed ones) → resolved
//! images → `export::write_archive` (the library's pipeline) → the report.

use super::discovery;
use super::failure::Explain as _;
use super::results::{ImageOutcome, ImageResult};
use super::settings::ExportSettings;
use super::{Context, Outcome, human};
use crate::export::ArchiveJob;
use crate::export::blob_store::prune::PruneOutcome;
use crate::export::resolve::ResolvedImage;
use crate::export::{pack, pull};

pub async fn run(ctx: &Context, settings: ExportSettings) -> Outcome<()> {
    let started = std::time::Instant::now();
    // The base first: a wrong --since fails before any registry is asked anything.
    let base = match &settings.since {
        Some(old) => Some(crate::export::delta::Base::load(old)?),
        None => None,
    };
    // Files next: a URL whose content does not match its sha256 fails before any chart or image is fetched.
    let files = if settings.dry_run {
        Vec::new()
    } else {
        let staged = crate::files::stage(&settings.sources.files, &ctx.tmp_dir).await?;
        for f in &staged {
            ctx.printer.info(format!("File {} ({}, {}) from {}", f.name, human(f.size), f.digest, f.origin));
        }
        staged
    };
    let (charts, refs) = discovery::gather(ctx, &settings.sources, !settings.dry_run).await?;
    let images =
        discovery::resolve(ctx, &refs, settings.sources.platforms.as_ref(), settings.sources.referrers).await?;
    let signatures = discovery::check_signatures(ctx, &settings.sources, &images).await?;
    let records: Vec<_> = charts.iter().map(|c| c.survey.record.clone()).collect();

    let noted = |outcome| images.iter().map(|i| ImageResult::new(&i.source, &i.digest, outcome)).collect::<Vec<_>>();
    if settings.dry_run {
        print_plan(&ctx.printer, &images);
        if let Some(r) = &ctx.results {
            r.images(noted(ImageOutcome::WouldExport));
        }
        let mut meta = pack::metadata(&images, None, records, Vec::new());
        let mut blob_bytes: u64 = pull::jobs(&images).iter().map(|j| j.size).sum();
        if let Some(base) = &base {
            let manifests = images.iter().flat_map(|i| i.manifests.iter().map(|m| m.digest.clone())).collect();
            base.apply(&mut meta, &manifests);
            let absent = meta.delta.as_ref().map_or(0, |d| d.absent.iter().map(|b| b.size).sum::<u64>());
            blob_bytes = blob_bytes.saturating_sub(absent);
            ctx.printer.result(format!(
                "a delta of {}: {} blobs ({}) its images need would be left to it",
                base.record.file,
                meta.delta.as_ref().map_or(0, |d| d.absent.len()),
                human(absent)
            ));
        }
        for f in &settings.sources.files {
            ctx.printer.result(format!(
                "file {} from {}; it travels in the bundle as files/{}",
                f.name,
                f.from.text(),
                crate::files::repository_name(&f.name)
            ));
        }
        for c in &charts {
            ctx.printer.result(format!(
                "chart {} {} found {} images ({}); it travels in the bundle as charts/{}:{}",
                c.loaded.chart.meta.name,
                c.loaded.chart.meta.version,
                c.survey.findings.iter().map(|f| &f.reference).collect::<std::collections::BTreeSet<_>>().len(),
                if c.survey.static_only {
                    "static values scan: images only templates compute may be missing"
                } else {
                    "rendered with helm"
                },
                c.loaded.chart.meta.name,
                c.loaded.chart.meta.version
            ));
        }
        if let Some(r) = &ctx.results {
            r.total("images", images.len());
            r.total("blobs", meta.blobs.len());
            r.total("bytesToDownload", blob_bytes);
            r.total("dryRun", true);
        }
        ctx.printer.result(format!(
            "{} images, {} distinct blobs, {} to download{}; nothing written (dry run)",
            images.len(),
            meta.blobs.len(),
            human(blob_bytes),
            settings.output.as_ref().map(|o| format!(", would write {}", o.display())).unwrap_or_default()
        ));
        return Ok(());
    }
    let output = settings.output.clone().expect("set unless dry run");
    // Volumes: the whole archive is written first, in a directory beside them that goes away however the
    // export ends, then cut; `split` of the same archive gives the same volumes.
    let whole_dir = match settings.volume_size {
        Some(_) => {
            let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            Some(
                tempfile::Builder::new()
                    .prefix(".bundle-whole-")
                    .tempdir_in(dir)
                    .explain_with(|| format!("cannot write into {}", dir.display()))?,
            )
        }
        None => None,
    };
    let written_to = match &whole_dir {
        Some(d) => d.path().join(output.file_name().unwrap_or_default()),
        None => output.clone(),
    };
    for img in &images {
        ctx.printer.detail(format!("{} -> {} ({})", img.source, img.digest, human(img.size())));
    }
    let exported = noted(ImageOutcome::Exported);
    let job = ArchiveJob {
        base,
        images,
        charts: charts.iter().map(|c| (&c.loaded, c.survey.record.clone())).collect(),
        files: &files,
        signatures,
        volumes: settings.volume_size.map(|size| (size, settings.parity)),
        output: written_to.clone(),
        replace: settings.force || whole_dir.is_some(),
        staging: settings.staging,
        created: settings.created,
        concurrency: ctx.concurrency,
    };
    let done = crate::export::write_archive(&ctx.registries, &ctx.printer, job).await?;
    if let Some(r) = &ctx.results {
        r.images(exported);
        r.total("images", done.images);
        r.total("blobs", done.blobs);
        r.total("contentBytes", done.content_bytes);
        r.total("compressedBytes", done.compressed_bytes);
        r.total("archive", output.display().to_string());
        r.total("sha256", done.digest.hex());
    }

    match settings.volume_size {
        None => {
            ctx.printer.info(format!(
                "Exported {} images ({} blobs, {} of content, {} compressed) to {} in {:.1?}",
                done.images,
                done.blobs,
                human(done.content_bytes),
                human(done.compressed_bytes),
                output.display(),
                started.elapsed()
            ));
            ctx.printer.info(format!("sha256 {}  (in {})", done.digest.hex(), done.sidecar.display()));
            if let Some(key) = &settings.sign_key {
                super::sign::sign_written(ctx, key, &[(output.clone(), Some(done.digest.clone()))])?;
            }
        }
        Some(size) => {
            ctx.printer.info(format!(
                "Exported {} images ({} blobs, {} of content, {} compressed) in {:.1?}; cutting it into volumes",
                done.images,
                done.blobs,
                human(done.content_bytes),
                human(done.compressed_bytes),
                started.elapsed()
            ));
            let archive = std::sync::Arc::new(
                crate::archive::ArchiveFile::open(&written_to).explain("cannot read the archive just written")?,
            );
            // Planned from the archive's front; every byte the split copies is hashed against its digest.
            let (archive, contents) = match crate::archive::proof::front(&written_to).await {
                Some(found) => found,
                None => crate::archive::proof::verify(&ctx.printer, archive.path()).await?,
            };
            let written = super::split::cut(
                ctx,
                archive,
                contents,
                done.digest.clone(),
                super::split::Shape { size, parity: settings.parity },
                output.clone(),
                settings.force,
            )
            .await?;
            super::split::report(ctx, &written, size, started);
            if let Some(key) = &settings.sign_key {
                let volumes: Vec<_> = written.iter().map(|v| (v.path.clone(), Some(v.digest.clone()))).collect();
                super::sign::sign_written(ctx, key, &volumes)?;
            }
        }
    }
    if let Some((base, blobs, bytes)) = &done.left_out {
        ctx.printer.info(format!(
            "A delta of {base}: {blobs} blobs ({}) its images need are left to it; import {base} before this archive",
            human(*bytes)
        ));
    }
    match done.pruned {
        Some((dir, max, Ok(PruneOutcome::Pruned { removed, removed_bytes, kept_bytes }))) => ctx.printer.info(format!(
            "Pruned the blob cache {}: removed {removed} blobs ({}) this export did not use, {} kept (limit {})",
            dir.display(),
            human(removed_bytes),
            human(kept_bytes),
            human(max)
        )),
        Some((dir, _, Ok(PruneOutcome::InUse))) => {
            ctx.printer.detail(format!("blob cache {} not pruned: another export is using it", dir.display()))
        }
        // The archive is complete: a cache that cannot be pruned is worth a warning, not a failure.
        Some((dir, _, Err(e))) => ctx.printer.warn(format!("cannot prune the blob cache {}: {e}", dir.display())),
        Some((_, _, Ok(PruneOutcome::WithinLimit))) | None => {}
    }
    Ok(())
}

fn print_plan(printer: &crate::support::printer::Printer, images: &[ResolvedImage]) {
    let rows: Vec<_> = images
        .iter()
        .map(|i| {
            super::image_row(
                &i.source.to_string(),
                &i.digest,
                &i.media_type,
                &i.platforms,
                i.size(),
                i.artifact.as_ref(),
            )
        })
        .collect();
    super::print_image_table(printer, &rows);
}
