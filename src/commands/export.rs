//! `bundle export`: the spec and the flags → the references (a chart's and the listed ones) → resolved
//! images → `export::write_archive` (the library's pipeline) → the report.

use std::path::{Path, PathBuf};

use super::failure::Explain as _;

use super::discovery::{self, ChartInput};
use super::{Context, Failure, Outcome, human};
use crate::blob_store::prune::{self, PruneOutcome};
use crate::cli::ExportArgs;
use crate::env_vars;
use crate::export::{ArchiveJob, Staging};
use crate::reference::ImageRef;
use crate::resolve::ResolvedImage;
use crate::spec::BundleSpec;
use crate::{pack, pull};

pub async fn run(ctx: &Context, mut args: ExportArgs) -> Outcome<()> {
    let started = std::time::Instant::now();
    let mut exclude = Vec::new();
    if let Some(path) = args.spec.clone() {
        let spec = BundleSpec::load(&path)?;
        exclude = spec.exclude.clone();
        apply_spec(&mut args, spec);
    }
    let output = match (&args.output, args.dry_run) {
        (Some(o), _) => Some(check_output(o, args.force)?),
        (None, true) => None,
        (None, false) => {
            return Err(Failure::user(
                "no output file given",
                "name it with -o OUT.tar.zst (or `output:` in a --spec file)",
            ));
        }
    };
    let chart = discovery::survey_chart(ctx, &args.chart, !args.dry_run).await?;
    let mut refs = collect_references(&args.images, &args.images_files)?;
    if let Some(c) = &chart {
        refs.extend(chart_references(c, &exclude)?);
    }
    let excluded: Vec<ImageRef> = exclude.iter().filter_map(|e| ImageRef::parse(e).ok()).collect();
    refs.retain(|r| !excluded.contains(r));
    refs.sort();
    refs.dedup();
    if refs.is_empty() && chart.is_none() {
        return Err(Failure::user(
            "no images to export",
            "name images with --image REF (repeatable) or --images-file FILE, or a chart with -c CHART",
        ));
    }

    ctx.printer.info(format!("Resolving {} images", refs.len()));
    let images = crate::export::resolve_all(&ctx.registries, &refs, ctx.concurrency).await?;
    let record = chart.as_ref().map(|c| c.survey.record.clone());

    if args.dry_run {
        print_plan(&ctx.printer, &images);
        let meta = pack::metadata(&images, None, record);
        let blob_bytes: u64 = pull::jobs(&images).iter().map(|j| j.size).sum();
        if let Some(c) = &chart {
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
        ctx.printer.result(format!(
            "{} images, {} distinct blobs, {} to download{}; nothing written (dry run)",
            images.len(),
            meta.blobs.len(),
            human(blob_bytes),
            output.as_ref().map(|o| format!(", would write {}", o.display())).unwrap_or_default()
        ));
        return Ok(());
    }
    let output = output.expect("set unless dry run");
    for img in &images {
        ctx.printer.detail(format!("{} -> {} ({})", img.source, img.digest, human(img.size())));
    }
    // Blobs land in the cache (kept, so a re-run downloads only what is missing) or, with --no-cache, in a
    // staging directory that is removed however the export ends.
    let staging = if args.no_cache {
        Staging::Temporary { tmp_dir: ctx.tmp_dir.clone() }
    } else {
        let dir = args.cache_dir.clone().or_else(default_cache_dir).ok_or_else(|| {
            Failure::user(
                "no cache directory: neither XDG_CACHE_HOME nor HOME is set",
                "pass --cache-dir DIR, or --no-cache",
            )
        })?;
        Staging::Cache { dir, max_bytes: args.cache_max_size.map_or(Some(prune::DEFAULT_MAX_BYTES), |l| l.0) }
    };
    let job = ArchiveJob {
        images,
        chart: chart.as_ref().map(|c| (&c.loaded, c.survey.record.clone())),
        output: output.clone(),
        replace: args.force,
        staging,
        created: created_from_env()?,
        concurrency: ctx.concurrency,
    };
    let done = crate::export::write_archive(&ctx.registries, &ctx.printer, job).await?;

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

/// `$XDG_CACHE_HOME/bundle`, else `~/.cache/bundle`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os(env_vars::XDG_CACHE_HOME)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os(env_vars::HOME).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("bundle"))
}

/// The spec's settings under the command line's: flags add to lists and win over single values.
fn apply_spec(args: &mut ExportArgs, spec: BundleSpec) {
    let c = &mut args.chart;
    c.chart = c.chart.take().or(spec.chart);
    c.repo = c.repo.take().or(spec.repo);
    c.chart_version = c.chart_version.take().or(spec.version);
    c.kube_version = c.kube_version.take().or(spec.kube_version);
    c.set = spec.set.into_iter().chain(c.set.drain(..)).collect();
    c.set_string = spec.set_string.into_iter().chain(c.set_string.drain(..)).collect();
    c.values = spec.values.into_iter().chain(c.values.drain(..)).collect();
    c.passes = spec.passes.into_iter().chain(c.passes.drain(..)).collect();
    args.images = spec.images.into_iter().chain(args.images.drain(..)).collect();
    args.output = args.output.take().or(Some(spec.output));
}

/// The chart's images as references; `exclude` holds images to leave out, as the chart writes them.
fn chart_references(c: &ChartInput, exclude: &[String]) -> Outcome<Vec<ImageRef>> {
    let mut out = Vec::new();
    for f in c.survey.findings.iter().filter(|f| !exclude.contains(&f.reference)) {
        let r = ImageRef::parse(&f.reference).map_err(|e| {
            Failure::user(
                format!(
                    "the chart names the image `{}` ({}), which is not a valid reference: {e}",
                    f.reference, f.location
                ),
                "fix the values that produce it, or leave it out with `exclude:` in a bundle spec",
            )
        })?;
        out.push(r);
    }
    Ok(out)
}

/// `--image` values and the lines of every `--images-file`, normalised, de-duplicated and sorted (so the
/// archive does not depend on the order they were listed in).
pub fn collect_references(images: &[String], files: &[PathBuf]) -> Outcome<Vec<ImageRef>> {
    let mut refs = Vec::new();
    for (i, s) in images.iter().enumerate() {
        let r = ImageRef::parse(s).explain_with(|| format!("--image #{}", i + 1))?;
        refs.push(r);
    }
    for file in files {
        let text =
            std::fs::read_to_string(file).explain_with(|| format!("cannot read the images file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let r = ImageRef::parse(line).map_err(|e| {
                Failure::user(
                    format!("{}:{}: {e}", file.display(), n + 1),
                    "fix or remove that line; references look like `registry/path/name:tag` or `name@sha256:<digest>`",
                )
            })?;
            refs.push(r);
        }
    }
    refs.sort();
    refs.dedup();
    Ok(refs)
}

fn check_output(output: &Path, force: bool) -> Outcome<PathBuf> {
    if output.is_dir() {
        return Err(Failure::user(
            format!("{} is a directory", output.display()),
            "give the archive's file name, e.g. -o images.tar.zst",
        ));
    }
    if output.exists() && !force {
        return Err(Failure::user(
            format!("{} already exists", output.display()),
            "choose another name with -o, or pass --force to replace it",
        ));
    }
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Failure::user(
            format!("the directory {} does not exist", dir.display()),
            "create it first, or choose another -o path",
        ));
    }
    Ok(output.to_path_buf())
}

fn print_plan(printer: &crate::printer::Printer, images: &[ResolvedImage]) {
    let rows: Vec<_> = images
        .iter()
        .map(|i| super::image_row(&i.source.to_string(), &i.digest, &i.media_type, &i.platforms, i.size()))
        .collect();
    super::print_image_table(printer, &rows);
}

/// `created` for bundle.json: only from SOURCE_DATE_EPOCH, so archives carry no timestamp otherwise.
fn created_from_env() -> Outcome<Option<String>> {
    let Ok(v) = std::env::var(env_vars::SOURCE_DATE_EPOCH) else { return Ok(None) };
    let secs: u64 = v.trim().parse().map_err(|_| {
        Failure::user(
            format!("{}=`{v}` is not a number of seconds", env_vars::SOURCE_DATE_EPOCH),
            "set it to a Unix time, e.g. `date +%s`, or unset it",
        )
    })?;
    Ok(Some(httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))))
}
