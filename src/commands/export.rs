//! `bundle export`: references → resolved graphs → staged blobs → one archive, published atomically.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::failure::Explain as _;
use futures_util::{StreamExt, stream};

use super::discovery::{self, ChartInput};
use super::{Context, Failure, Outcome, human};
use crate::archive::checksum::{sidecar_line, sidecar_path};
use crate::blob_store::prune::{self, CacheLock};
use crate::blob_store::{BlobStore, DamagedCacheBlob, DownloadRestarted};
use crate::chart::artifact;
use crate::cli::ExportArgs;
use crate::digest::Digest;
use crate::env_vars;
use crate::hint::Hint as _;
use crate::reference::ImageRef;
use crate::resolve::{ResolvedImage, resolve};
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
    let mut images = resolve_all(ctx, &refs).await?;
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
    // staging directory that is removed when dropped: on success, failure or interruption.
    let mut cache = None;
    let (store, staging) = if args.no_cache {
        std::fs::create_dir_all(&ctx.tmp_dir)
            .explain_with(|| format!("cannot create the temporary directory {}", ctx.tmp_dir.display()))?;
        let staging = tempfile::Builder::new()
            .prefix("bundle-export-")
            .tempdir_in(&ctx.tmp_dir)
            .explain_with(|| format!("cannot create a staging directory under {}", ctx.tmp_dir.display()))?;
        (BlobStore::open(staging.path()).explain("cannot prepare the staging directory")?, Some(staging))
    } else {
        let dir = args.cache_dir.clone().or_else(default_cache_dir).ok_or_else(|| {
            Failure::user(
                "no cache directory: neither XDG_CACHE_HOME nor HOME is set",
                "pass --cache-dir DIR, or --no-cache",
            )
        })?;
        ctx.printer.detail(format!("blob cache: {}", dir.display()));
        let store =
            BlobStore::open(&dir).explain_with(|| format!("cannot use the cache directory {}", dir.display()))?;
        let lock =
            CacheLock::shared(&dir).explain_with(|| format!("cannot lock the cache directory {}", dir.display()))?;
        cache = Some((dir, lock));
        (store, None)
    };
    if let Some(c) = &chart {
        images.push(artifact::oci_artifact(&c.loaded, &store).explain("cannot stage the chart")?);
    }
    let meta = pack::metadata(&images, created_from_env()?, record);
    let jobs = pull::jobs(&images);
    let blob_bytes: u64 = jobs.iter().map(|j| j.size).sum();

    // The archive is written under a temporary name next to OUT (same filesystem, so the rename is atomic),
    // while the downloads are still running: the writer follows them blob by blob, in archive order.
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = output.file_name().unwrap_or_default().to_string_lossy().to_string();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .explain_with(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let file = temp.as_file().try_clone().explain("cannot open the temporary archive")?;
    let total = meta.total_blob_bytes();
    let progress = ctx.printer.transfer("pull", blob_bytes, jobs.len() as u64);
    let writing = ctx.printer.transfer("write", total, meta.blobs.len() as u64);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arrivals = crate::blob_store::Arrivals::default();
    for img in images.iter().filter(|i| i.helm_chart) {
        for b in &img.blobs {
            arrivals.arrived(&b.digest, true);
        }
    }
    let store = std::sync::Arc::new(store);
    let pack = |file: std::fs::File| {
        let (images, meta, store, arrivals, w) =
            (images.clone(), meta.clone(), store.clone(), arrivals.clone(), writing.clone());
        tokio::task::spawn_blocking(move || {
            pack::write(file, &images, &meta, &store, threads, &|n| w.add(n as i64), &arrivals)
        })
    };
    let pack_task = pack(file);
    let pulled = pull::pull_all(&ctx.registries, &store, &jobs, ctx.concurrency, &progress, &arrivals).await;
    progress.finish();
    let mut written = pack_task.await.explain("the archive writer failed")?;
    pulled?;
    // Rare: the archive holds bytes it must not keep, so it is written again from the store. Either a download
    // started over after the writer took part of it (its bytes failed the digest), or a cached blob turned out
    // damaged: that one is removed and fetched again first. A round per damaged blob, so at most one per blob.
    for _ in 0..=jobs.len() {
        let Some(inner) = written.as_ref().err().and_then(|e| e.get_ref()) else { break };
        if let Some(DamagedCacheBlob(digest)) = inner.downcast_ref::<DamagedCacheBlob>() {
            ctx.printer.warn(format!(
                "the cached copy of {digest} did not match its digest; it was removed and is downloaded again"
            ));
            std::fs::remove_file(store.path(digest))
                .explain_with(|| format!("cannot remove the damaged cached blob {digest}"))?;
            let job = jobs.iter().filter(|j| &j.digest == digest).cloned().collect::<Vec<_>>();
            pull::pull_all(&ctx.registries, &store, &job, 1, &progress, &arrivals).await?;
        } else if !inner.is::<DownloadRestarted>() {
            break;
        }
        ctx.printer.detail(format!("{inner}; writing the archive again"));
        let mut file = temp.as_file().try_clone().explain("cannot open the temporary archive")?;
        file.set_len(0).explain("cannot rewrite the temporary archive")?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).explain("cannot rewrite the temporary archive")?;
        writing.reset();
        written = pack(file).await.explain("the archive writer failed")?;
    }
    let written = written.explain_with(|| format!("cannot write the archive {}", output.display()))?;
    ctx.printer.detail(format!("pulled {} blobs ({}) in {:.1?}", jobs.len(), human(blob_bytes), progress.elapsed()));
    writing.finish();

    let sidecar = sidecar_path(&output);
    let mut side_temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.sha256."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .explain("cannot create the checksum file")?;
    side_temp.write_all(sidecar_line(&output, &written.digest).as_bytes()).explain("cannot write the checksum file")?;
    side_temp.as_file().sync_all().explain("cannot write the checksum file")?;
    // Temporary files are created private (0600); the results are ordinary files.
    for f in [temp.as_file(), side_temp.as_file()] {
        set_readable(f).explain("cannot set the archive's permissions")?;
    }
    publish(temp, &output, args.force)?;
    publish(side_temp, &sidecar, true)?;

    ctx.printer.info(format!(
        "Exported {} images ({} blobs, {} of content, {} compressed) to {} in {:.1?}",
        images.len(),
        meta.blobs.len(),
        human(total),
        human(written.compressed_len),
        output.display(),
        started.elapsed()
    ));
    ctx.printer.info(format!("sha256 {}  (in {})", written.digest.hex(), sidecar.display()));
    drop(staging);
    if let Some((dir, lock)) = cache {
        let limit = args.cache_max_size.map_or(Some(prune::DEFAULT_MAX_BYTES), |l| l.0);
        if let Some(max) = limit {
            let keep: HashSet<Digest> = meta.blobs.iter().map(|b| b.digest.clone()).collect();
            // The archive is complete: a cache that cannot be pruned is worth a warning, not a failure.
            match prune::prune(&dir, lock, &keep, max) {
                Ok(prune::PruneOutcome::Pruned { removed, removed_bytes, kept_bytes }) => ctx.printer.info(format!(
                    "Pruned the blob cache {}: removed {removed} blobs ({}) this export did not use, {} kept (limit {})",
                    dir.display(),
                    human(removed_bytes),
                    human(kept_bytes),
                    human(max)
                )),
                Ok(prune::PruneOutcome::InUse) => {
                    ctx.printer.detail(format!("blob cache {} not pruned: another export is using it", dir.display()))
                }
                Ok(prune::PruneOutcome::WithinLimit) => {}
                Err(e) => ctx.printer.warn(format!("cannot prune the blob cache {}: {e}", dir.display())),
            }
        }
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

async fn resolve_all(ctx: &Context, refs: &[ImageRef]) -> Outcome<Vec<ResolvedImage>> {
    let results: Vec<_> = stream::iter(refs.iter().enumerate())
        .map(|(i, r)| async move { (i, resolve(&ctx.registries, r).await) })
        .buffer_unordered(ctx.concurrency)
        .collect()
        .await;
    let mut ok = vec![None; refs.len()];
    let mut failed = Vec::new();
    for (i, result) in results {
        match result {
            Ok(img) => ok[i] = Some(img),
            Err(e) => failed.push((i, e)),
        }
    }
    if failed.is_empty() {
        return Ok(ok.into_iter().map(|x| x.expect("resolved")).collect());
    }
    failed.sort_by_key(|(i, _)| *i);
    if failed.len() == 1 {
        let (_, e) = failed.pop().expect("one failure");
        return Err(e.into());
    }
    // Report every image that failed, so one run tells the user everything to fix.
    let mut message = format!("{} of {} images could not be resolved:", failed.len(), refs.len());
    for (_, e) in &failed {
        message.push_str(&format!("\n  - {}", crate::error_text::chain_line(e)));
    }
    match failed.iter().find_map(|(_, e)| e.hint()) {
        Some(hint) => Err(Failure::user(message, hint)),
        None => Err(Failure::message(message)),
    }
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

/// Rename a finished temporary file to its final name; `replace` decides whether an existing file may go.
fn publish(temp: tempfile::NamedTempFile, path: &Path, replace: bool) -> Outcome<()> {
    let result = if replace { temp.persist(path) } else { temp.persist_noclobber(path) };
    result.map(|_| ()).map_err(|e| {
        Failure::user(
            format!("cannot move the finished file to {}: {}", path.display(), e.error),
            if path.exists() {
                "it appeared while the export ran; choose another name or pass --force"
            } else {
                "check the permissions of its directory"
            },
        )
    })
}

fn set_readable(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}
