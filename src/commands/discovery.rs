//! From what the user named to resolved images, for `images`, `export` and `copy`: load the chart, pick helm
//! or the static scan, survey every pass, add the listed images, resolve them all.

use super::failure::Explain as _;

use super::settings::{ChartSettings, HelmChoice, SourceSettings};
use super::{Context, Failure, Outcome};
use crate::chart::render::{Helm, RenderOptions};
use crate::chart::source::{self, LoadedChart};
use crate::chart::survey::{self, Survey, SurveyOptions};
use crate::chart::values::UserValues;
use crate::export::resolve::ResolvedImage;
use crate::oci::platform::PlatformChoice;
use crate::oci::reference::ImageRef;

pub struct ChartInput {
    pub loaded: LoadedChart,
    pub survey: Survey,
}

/// `plan_values`: also work out the air-gap values plan (export does; `bundle images` and dry runs only list).
pub async fn survey_chart(ctx: &Context, args: &ChartSettings, plan_values: bool) -> Outcome<ChartInput> {
    let chart = &args.request.chart;
    let loaded = source::load(&args.request, &ctx.registries)
        .await
        .explain_with(|| format!("cannot load the chart `{chart}`"))?;
    ctx.printer.info(format!("Chart {} {} ({})", loaded.chart.meta.name, loaded.chart.meta.version, loaded.origin));

    let helm = match &args.helm {
        None => None,
        Some(HelmChoice::Search) => Helm::locate(None, args.helm_timeout)?,
        Some(HelmChoice::Path(p)) => Helm::locate(Some(p), args.helm_timeout)?,
    };
    match &helm {
        Some(h) => ctx.printer.detail(format!("rendering with {}", h.version().unwrap_or_default())),
        None => ctx.printer.warn(format!(
            "{}: finding images by scanning values files, which misses images that only templates compute; install helm (or pass --helm PATH) for a complete list",
            if args.helm.is_none() { "--no-helm" } else { "no helm binary on PATH" }
        )),
    }

    let mut files = Vec::new();
    for f in &args.values_files {
        let text =
            std::fs::read_to_string(f).explain_with(|| format!("cannot read the values file {}", f.display()))?;
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| {
            Failure::user(
                format!("the values file {} is not valid YAML: {e}", f.display()),
                "fix the file; helm would reject it too",
            )
        })?;
        files.push(if v.is_null() { serde_yaml_ng::Value::Mapping(Default::default()) } else { v });
    }
    let user = UserValues { files, set: args.set.clone(), set_string: args.set_string.clone() };
    // Validate the expressions up front, with the flag that carried them.
    crate::chart::values::overrides(&user, &[]).explain("invalid --set, --set-string or values")?;
    let passes = args.passes.clone();
    for p in &passes {
        crate::chart::values::overrides(&user, p).explain_with(|| format!("invalid --pass `{}`", p.join(",")))?;
    }
    let render = RenderOptions {
        value_files: args.values_files.clone(),
        set: args.set.clone(),
        set_string: args.set_string.clone(),
        kube_version: args.kube_version.clone(),
    };

    // helm renders the very package that will travel in the bundle.
    let package = tempfile::Builder::new()
        .prefix("bundle-chart-")
        .suffix(".tgz")
        .tempfile_in(&ctx.tmp_dir)
        .explain_with(|| format!("cannot create a temporary file under {}", ctx.tmp_dir.display()))?;
    std::fs::write(package.path(), &loaded.package).explain("cannot write the chart package")?;
    let loaded_for_task = loaded.clone();
    let package_path = package.path().to_path_buf();
    let tmp_dir = ctx.tmp_dir.clone();
    let survey = tokio::task::spawn_blocking(move || {
        let opts = SurveyOptions { user, render, passes, helm: helm.as_ref(), plan_values, tmp_dir };
        survey::survey(&loaded_for_task, &package_path, &opts)
    })
    .await
    .explain("the chart survey failed")?
    .explain_with(|| format!("cannot find the images of chart {}", loaded.chart.meta.name))?;
    drop(package);
    for w in &survey.warnings {
        ctx.printer.warn(w.clone());
    }
    let mut named = std::collections::BTreeSet::new();
    for i in &survey.incomplete {
        if named.insert((&i.name, &i.location)) {
            ctx.printer.warn(format!(
                "`{}` at {} is not an image reference: it lacks {}; bundle leaves it out rather than guess (if that part is used, give the chart the values that complete it)",
                i.name, i.location, i.missing
            ));
        }
    }
    Ok(ChartInput { loaded, survey })
}

/// The charts (each surveyed) and every image reference to carry: the charts' and the listed ones, without the
/// excluded, sorted and de-duplicated (an image two charts share travels once). `plan_values` as for
/// `survey_chart`.
pub async fn gather(
    ctx: &Context,
    sources: &SourceSettings,
    plan_values: bool,
) -> Outcome<(Vec<ChartInput>, Vec<ImageRef>)> {
    let mut charts: Vec<ChartInput> = Vec::new();
    for c in &sources.charts {
        let input = survey_chart(ctx, c, plan_values).await?;
        // Each chart is pushed to charts/NAME and gets NAME's values file: two of one name cannot both travel.
        if let Some(first) = charts.iter().find(|x| x.loaded.chart.meta.name == input.loaded.chart.meta.name) {
            return Err(Failure::user(
                format!(
                    "two charts of the suite are named `{}`: {} and {}",
                    input.loaded.chart.meta.name, first.loaded.origin, input.loaded.origin
                ),
                "a suite carries each chart once; remove one of the `charts` entries",
            ));
        }
        charts.push(input);
    }
    let mut refs = sources.images.clone();
    for c in &charts {
        refs.extend(chart_references(c, &sources.exclude)?);
    }
    let excluded: Vec<ImageRef> = sources.exclude.iter().filter_map(|e| ImageRef::parse(e).ok()).collect();
    refs.retain(|r| !excluded.contains(r));
    refs.sort();
    refs.dedup();
    Ok((charts, refs))
}

/// Resolve every reference (only the chosen platforms, with `choice`), say what choosing did, and, with
/// `referrers`, add the signatures, attestations and SBOMs attached to them (after the images).
pub async fn resolve(
    ctx: &Context,
    refs: &[ImageRef],
    choice: Option<&PlatformChoice>,
    referrers: bool,
) -> Outcome<Vec<ResolvedImage>> {
    ctx.printer.info(format!("Resolving {} images", refs.len()));
    // What the registries offer for signatures is learnt beside the resolution, not after it.
    let started = std::time::Instant::now();
    let survey = async {
        if referrers {
            Some(crate::export::referrers::survey(&ctx.registries, refs, ctx.concurrency).await)
        } else {
            None
        }
    };
    let (images, survey) =
        tokio::join!(crate::export::resolve_all(&ctx.registries, refs, choice, ctx.concurrency), survey);
    let mut images = images?;
    for img in &images {
        let Some(record) = &img.selection else { continue };
        match (record.mode, &record.original_digest) {
            (crate::oci::layout::SelectionMode::Whole, _) if img.source.digest().is_some() => {
                ctx.printer.warn(format!(
                    "{} is pinned by digest: all its platforms travel, so that the digest keeps resolving",
                    img.source
                ))
            }
            (crate::oci::layout::SelectionMode::Filter, Some(original)) => ctx.printer.info(format!(
                "{}: index {original} filtered to {} ({}), without {}",
                img.source,
                img.digest,
                img.platforms.join(","),
                record.dropped.join(",")
            )),
            _ => {}
        }
    }
    let Some(survey) = survey else { return Ok(images) };
    let found = crate::export::referrers::discover(&ctx.registries, &images, survey, ctx.concurrency).await?;
    for w in &found.warnings {
        ctx.printer.warn(w.clone());
    }
    for (image, n) in &found.left_behind {
        ctx.printer.warn(format!(
            "{image}: {n} signatures/attestations of its original index stay behind: they sign the index --platform replaced (the platform manifests' own travel)"
        ));
    }
    let artifacts: Vec<_> =
        found.artifacts.iter().filter_map(|a| a.artifact.as_ref()).filter(|r| r.is_artifact()).collect();
    if !artifacts.is_empty() {
        let count = |k| artifacts.iter().filter(|r| r.kind == k).count();
        use crate::oci::layout::ArtifactKind::*;
        ctx.printer.info(format!(
            "Found {} artifacts attached to them: {} signatures, {} attestations, {} SBOMs, {} other ({} requests, {:.1?})",
            artifacts.len(),
            count(Signature),
            count(Attestation),
            count(Sbom),
            count(Other),
            found.requests,
            started.elapsed()
        ));
    } else {
        ctx.printer.detail(format!(
            "no signatures, attestations or SBOMs attached ({} requests, {:.1?})",
            found.requests,
            started.elapsed()
        ));
    }
    images.extend(found.artifacts);
    Ok(images)
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

/// `--verify-signatures`: every image signed by one of the keys, or nothing happens (export writes nothing, copy
/// pushes nothing). The records say which key verified which manifest.
pub async fn check_signatures(
    ctx: &Context,
    sources: &SourceSettings,
    images: &[crate::export::resolve::ResolvedImage],
) -> Outcome<Vec<crate::oci::layout::SignatureRecord>> {
    if sources.signature_keys.is_empty() {
        return Ok(Vec::new());
    }
    let started = std::time::Instant::now();
    let records =
        crate::trust::image_signatures::check(&ctx.registries, images, &sources.signature_keys, ctx.concurrency)
            .await?;
    for r in &records {
        ctx.printer.detail(format!("{} {}: signature {} verified with {}", r.image, r.manifest, r.signature, r.key));
    }
    let images_signed = records.iter().map(|r| &r.image).collect::<std::collections::BTreeSet<_>>().len();
    if let Some(r) = &ctx.results {
        r.total("signaturesVerified", records.len());
    }
    let keys = records.iter().map(|r| &r.key).collect::<std::collections::BTreeSet<_>>();
    ctx.printer.info(format!(
        "Signatures verified: {images_signed} images, {} manifests, by {} of the {} keys given ({:.1?})",
        records.len(),
        keys.len(),
        sources.signature_keys.len(),
        started.elapsed()
    ));
    Ok(records)
}
