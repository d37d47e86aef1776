//! `bundle import -d REGISTRY[/PREFIX] FILE`: verify, plan, probe, push.

use anyhow::Context as _;

use super::{Context, human, user_error};
use crate::cli::ImportArgs;
use crate::push::{self, Destination, Mapping, PushPlan};
use crate::registry::Role;

pub async fn run(ctx: &Context, args: ImportArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mapping = if args.flatten {
        Mapping::Flatten
    } else if args.keep_host {
        Mapping::KeepHost
    } else {
        Mapping::Path
    };
    let dest = Destination::parse(&args.destination)
        .map_err(|e| {
            user_error(format!("invalid destination: {e}"), "write it as host[:port] or host[:port]/prefix, e.g. -d registry.internal:5000/mirror")
        })?
        .with_mapping(mapping);
    // First only the front of the archive (metadata and manifests): when the destination already has
    // everything, nothing will be pushed and the layers need not be read.
    let front = front_contents(&args.archive).await;
    // Repositories are prepared once (ECR: created, token fetched), whichever path the import takes.
    let mut prepared = None;
    if let (Some(contents), false) = (&front, args.dry_run) {
        let plan = PushPlan::new(contents, &dest).context("cannot plan the import")?;
        let ecr = super::ecr_prepare::prepare(ctx, &args.ecr, &dest, &plan, false).await?;
        let client = ctx.registries.client(&dest.registry, Role::Destination).context("cannot prepare the destination registry")?;
        let presence = push::probe(&client, &plan, contents, ctx.concurrency)
            .await
            .with_context(|| format!("cannot check what {} already has", dest.registry))?;
        if let Some(session) = &ecr {
            check_immutable_tags(&presence, session)?;
        }
        if presence.nothing_to_do(&plan, contents) {
            ctx.printer.info(format!(
                "{} already holds all {} images of {} with the same digests; nothing to push (checked in {:.1?})",
                args.destination,
                plan.images.len(),
                args.archive.display(),
                started.elapsed()
            ));
            finish(ctx, &args, contents, &plan, &dest)?;
            return Ok(());
        }
        prepared = Some(ecr);
    }

    let (archive, contents) = super::verify::verify_archive(ctx, &args.archive).await?;
    ctx.printer.info(format!("Verified {} ({} images, {})", args.archive.display(), contents.images.len(), human(contents.total_bytes())));

    let plan = PushPlan::new(&contents, &dest).context("cannot plan the import")?;
    let ecr = match prepared {
        Some(ecr) => ecr,
        None => super::ecr_prepare::prepare(ctx, &args.ecr, &dest, &plan, args.dry_run).await?,
    };
    let client = ctx.registries.client(&dest.registry, Role::Destination).context("cannot prepare the destination registry")?;
    let presence = push::probe(&client, &plan, &contents, ctx.concurrency)
        .await
        .with_context(|| format!("cannot check what {} already has", dest.registry))?;

    if let Some(session) = &ecr {
        check_immutable_tags(&presence, session)?;
    }

    if args.dry_run {
        for p in &plan.images {
            println!("Copying {} to {} (dry-run)", describe_source(&contents.images[p.image], &p.source), p.target);
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
    let run = if ecr.is_some() {
        // ECR mounts a blob only from a repository whose manifests already reference it.
        push::execute_in_order(&client, archive, &plan, &contents, &presence, ctx.concurrency, &progress).await
    } else {
        push::execute(&client, archive, &plan, &contents, &presence, ctx.concurrency, &progress).await
    };
    let stats = run
        .with_context(|| format!("import into {} did not complete; run the same command again to finish it (what was pushed is kept)", dest.registry))?;
    progress.finish();
    for p in &plan.images {
        ctx.printer.detail(format!("{} -> {}", describe_source(&contents.images[p.image], &p.source), p.target));
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
    finish(ctx, &args, &contents, &plan, &dest)
}

/// What every successful import ends with: how to install the chart, and the values file.
fn finish(ctx: &Context, args: &ImportArgs, contents: &crate::archive::BundleContents, plan: &PushPlan, dest: &Destination) -> anyhow::Result<()> {
    if let Some(chart) = contents.images.iter().zip(&plan.images).find(|(img, _)| img.helm_chart) {
        let target = &chart.1.target;
        ctx.printer.info(format!(
            "Chart: helm install RELEASE oci://{}/{} --version {}",
            target.registry(),
            target.repository(),
            target.tag().unwrap_or_default().replace('_', "+")
        ));
    }
    if let Some(path) = &args.values_out {
        write_values(ctx, contents, dest, path)?;
    }
    Ok(())
}

/// Contents from the front of the archive (our layout only), for planning; `None` means "verify fully".
async fn front_contents(path: &std::path::Path) -> Option<crate::archive::BundleContents> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let archive = crate::archive::ArchiveFile::open(&path).ok()?;
        let scan = archive.scan_front().ok()??;
        let (contents, problems) = crate::archive::contents::check(scan, None);
        contents.filter(|_| problems.is_empty())
    })
    .await
    .ok()?
}

/// A tag that exists with another digest in a repository whose tags are immutable would fail mid-import:
/// refuse it before anything is pushed.
fn check_immutable_tags(presence: &push::Presence, session: &super::ecr_prepare::EcrSession) -> anyhow::Result<()> {
    let conflicts: Vec<String> = presence
        .tags_elsewhere
        .iter()
        .filter(|(repo_tag, _)| {
            let repo = repo_tag.rsplit_once(':').map_or(repo_tag.as_str(), |(r, _)| r);
            session.mutability.get(repo).is_some_and(|m| m.starts_with("IMMUTABLE"))
        })
        .map(|(repo_tag, digest)| format!("{repo_tag} (now {digest})"))
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(user_error(
        format!(
            "{} tags already exist with other content in repositories whose tags are immutable; nothing was pushed:\n  - {}",
            conflicts.len(),
            conflicts.join("\n  - ")
        ),
        "an immutable tag cannot be moved: import into another prefix (-d REGISTRY/PREFIX), or ask the repository owner",
    ))
}

/// A chart is shown as what it is, not under its placeholder name.
fn describe_source(img: &crate::archive::ArchiveImage, source: &crate::reference::ImageRef) -> String {
    if img.helm_chart {
        format!("chart {}", source.repository().trim_start_matches("charts/").to_string() + ":" + source.tag().unwrap_or_default())
    } else {
        source.to_string()
    }
}

/// The values file that points the bundled chart at the destination, written atomically.
fn write_values(ctx: &Context, contents: &crate::archive::BundleContents, dest: &Destination, path: &std::path::Path) -> anyhow::Result<()> {
    let record = contents.metadata.as_ref().and_then(|m| m.chart.as_ref()).ok_or_else(|| {
        user_error("--values-out needs a bundle exported from a chart (-c), and this one has none", "export with -c CHART to bundle the chart and its values")
    })?;
    let (values, unmapped) = crate::chart::values_out::air_gap_values(record, dest);
    let text = format!(
        "# Values that make chart {} {} pull every image from {}.\n# Written by bundle import; pass with -f.\n{}",
        record.name,
        record.version,
        args_dest(dest),
        serde_yaml_ng::to_string(&values).context("cannot write the values file")?
    );
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    ctx.printer.info(format!("Wrote {} (use it with -f)", path.display()));
    for image in &unmapped {
        ctx.printer.warn(format!("{image} is computed by the chart's templates and no values path was found for it; override it by hand"));
    }
    Ok(())
}

fn args_dest(dest: &Destination) -> String {
    match &dest.prefix {
        Some(p) => format!("{}/{p}", dest.registry),
        None => dest.registry.clone(),
    }
}
