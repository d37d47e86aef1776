//! `bundle import -d REGISTRY[/PREFIX] FILE`: plan from the archive's front, probe the destination, prove the
//! archive sound (`archive::proof`), push (`push`), write the values file.

use std::path::Path;

use super::failure::Explain as _;

use super::settings::ImportSettings;
use super::{Context, Failure, Outcome, human};
use crate::archive::BundleContents;
use crate::archive::checksum::sidecar_path;
use crate::archive::proof::{self, Proven};
use crate::chart::values_out;
use crate::destination::Destination;
use crate::push::{self, PushPlan};
use crate::registry::Role;

pub async fn run(ctx: &Context, args: ImportSettings) -> Outcome<()> {
    let started = std::time::Instant::now();
    let dest = args.destination.clone();
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
    let plan = PushPlan::new(&contents, &dest).explain("cannot plan the import")?;
    // Repositories are prepared once (ECR: created, token fetched).
    let ecr = super::ecr_prepare::prepare(ctx, &args.ecr, &dest, &plan, args.dry_run).await?;
    let client =
        ctx.registries.client(&dest.registry, Role::Destination).explain("cannot prepare the destination registry")?;
    // A dry run must say exactly what would be pushed, and ECR mounts only from repositories whose manifests
    // reference the blob: both check blobs with HEAD. Otherwise each blob's first upload checks for itself.
    let check = if args.dry_run || ecr.is_some() { push::BlobCheck::Head } else { push::BlobCheck::OnUpload };
    let presence = push::probe(&client, &plan, &contents, ctx.concurrency, check)
        .await
        .explain_with(|| format!("cannot check what {} already has", dest.registry))?;
    if let Some(session) = &ecr {
        check_immutable_tags(&presence, session)?;
    }
    if presence.nothing_to_do(&plan, &contents) && !args.dry_run {
        ctx.printer.info(format!(
            "{} already holds all {} images of {} with the same digests; nothing to push (checked in {:.1?})",
            args.destination_text,
            plan.images.len(),
            args.archive.display(),
            started.elapsed()
        ));
        if let Some(check) = pending {
            check.abandon();
        }
        return finish(ctx, &args, &contents, &plan, &dest);
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
        for p in &plan.images {
            ctx.printer.result(format!(
                "Copying {} to {} (dry-run)",
                describe_source(&contents.images[p.image], &p.source),
                p.target
            ));
        }
        ctx.printer.result(format!(
            "Plan: {} images into {} repositories of {} ({} already complete); {} blobs already present; {} blobs to upload ({}), {} to mount; nothing changed (dry run)",
            plan.images.len(),
            plan.repositories.len(),
            dest.registry,
            presence.images_complete(&plan, &contents),
            presence.blobs_present,
            presence.blobs_to_upload(),
            human(presence.bytes_to_upload(&contents)),
            presence.blobs_to_mount(),
        ));
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
    let stats = run.map_err(|e| {
        let damaged = matches!(&e, push::PushError::Registry(crate::registry::RegistryError::Source { .. }));
        let message = if damaged {
            format!(
                "import into {} stopped: {} is damaged (images whose manifests were not pushed are not visible)",
                dest.registry,
                args.archive.display()
            )
        } else {
            format!(
                "import into {} did not complete; run the same command again to finish it (what was pushed is kept)",
                dest.registry
            )
        };
        Failure::from(e).explained(message)
    })?;
    progress.finish();
    for p in &plan.images {
        ctx.printer.detail(format!("{} -> {}", describe_source(&contents.images[p.image], &p.source), p.target));
    }
    ctx.printer.info(format!(
        "Imported {} images into {} ({} were already complete): {} blobs uploaded ({}), {} mounted, {} already present, {} manifests pushed, in {:.1?}",
        plan.images.len(),
        args.destination_text,
        presence.images_complete(&plan, &contents),
        stats.uploaded,
        human(stats.uploaded_bytes),
        stats.mounted,
        presence.blobs_present + stats.present,
        stats.manifests,
        started.elapsed()
    ));
    finish(ctx, &args, &contents, &plan, &dest)
}

/// What every successful import ends with: how to install the chart, and the values file.
fn finish(
    ctx: &Context,
    args: &ImportSettings,
    contents: &crate::archive::BundleContents,
    plan: &PushPlan,
    dest: &Destination,
) -> Outcome<()> {
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

/// A tag that exists with another digest in a repository whose tags are immutable would fail mid-import:
/// refuse it before anything is pushed.
fn check_immutable_tags(presence: &push::Presence, session: &super::ecr_prepare::EcrSession) -> Outcome<()> {
    let conflicts: Vec<String> = presence
        .tags_elsewhere
        .iter()
        .filter(|(repo_tag, _)| {
            let (repo, tag) = repo_tag.rsplit_once(':').unwrap_or((repo_tag.as_str(), ""));
            session.mutability.get(repo).is_some_and(|m| m.is_immutable(tag))
        })
        .map(|(repo_tag, digest)| format!("{repo_tag} (now {digest})"))
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(Failure::user(
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
        format!(
            "chart {}",
            source.repository().trim_start_matches("charts/").to_string() + ":" + source.tag().unwrap_or_default()
        )
    } else {
        source.to_string()
    }
}

/// The values file that points the bundled chart at the destination, written atomically.
fn write_values(
    ctx: &Context,
    contents: &crate::archive::BundleContents,
    dest: &Destination,
    path: &std::path::Path,
) -> Outcome<()> {
    let record = contents.metadata.as_ref().and_then(|m| m.chart.as_ref()).ok_or_else(|| {
        Failure::user(
            "--values-out needs a bundle exported from a chart (-c), and this one has none",
            "export with -c CHART to bundle the chart and its values",
        )
    })?;
    let plan = values_out::plan_of(record);
    let values = values_out::values_for(&plan, dest);
    // What the file's header says about the proof, and what the user is warned of.
    let (proof, caution) = if !plan.proven {
        (
            "# Unproven: the bundle was exported without helm (or helm could not render the probe); check it with\n# `helm template -f` before installing.\n",
            Some("is unproven: the bundle was exported without helm; render the chart with it before installing"),
        )
    } else if dest.mapping != crate::push::Mapping::Path {
        (
            "# Proven at export for the default name mapping; this import used another, so check it with `helm template -f`.\n",
            Some(
                "was proven for the default name mapping, not for --flatten or --keep-host; render the chart with it before installing",
            ),
        )
    } else {
        (
            "# Proven at export: helm rendered every image of every pass with these values at the registry import pushes to.\n",
            None,
        )
    };
    let text = format!(
        "# Values that make chart {} {} pull every image from {}.\n# Written by bundle import; pass with -f.\n{proof}{}",
        record.name,
        record.version,
        values_out::destination_text(dest),
        serde_yaml_ng::to_string(&values).explain("cannot write the values file")?
    );
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).explain_with(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).explain_with(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).explain_with(|| format!("cannot write {}", path.display()))?;
    ctx.printer.info(format!("Wrote {} (use it with -f)", path.display()));
    if let Some(caution) = caution {
        ctx.printer.warn(format!("{} {caution}", path.display()));
    }
    for image in &plan.unmovable {
        ctx.printer.warn(format!(
            "{image} is computed by the chart's templates and no values key moves it; override it by hand"
        ));
    }
    Ok(())
}
