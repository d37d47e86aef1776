//! `bundle check -d DEST`: every image the chart's pods will pull, each `ok`, `not under DEST` or `missing at
//! DEST`; exit 0 only when all are ok.

use std::io::Read as _;

use super::discovery::survey_chart;
use super::failure::Explain as _;
use super::settings::{CheckSettings, CheckSource};
use super::{Context, Failure, Outcome};
use crate::chart::discover::{self, Finding};
use crate::check::{self, Report, Status};

/// Rendered manifests larger than this are refused (a pods listing of a large cluster is tens of MiB).
const MAX_MANIFEST_BYTES: u64 = 512 << 20;

pub async fn run(ctx: &Context, settings: CheckSettings) -> Outcome<()> {
    let (findings, incomplete) = match &settings.source {
        CheckSource::Chart(chart) => {
            let input = survey_chart(ctx, chart, false).await?;
            if input.survey.static_only {
                return Err(Failure::user(
                    "bundle check renders the chart with helm, and there is no helm binary",
                    "install helm (scripts/install-helm) or pass --helm PATH; or give rendered manifests with --manifests FILE",
                ));
            }
            (input.survey.findings, input.survey.incomplete)
        }
        CheckSource::Manifests(path) => {
            let text = read_manifests(path.as_deref())?;
            let what = path.as_ref().map_or("stdin".to_string(), |p| p.display().to_string());
            let rendered = discover::by_document(&text, "", &Default::default())
                .explain_with(|| format!("cannot read the manifests in {what}"))?;
            // Rendered manifests have no passes.
            let findings: Vec<Finding> =
                rendered.documents.into_iter().flatten().map(|f| Finding { pass: None, ..f }).collect();
            (findings, rendered.incomplete)
        }
    };
    crate::import::ecr::session::login(&ctx.registries, &settings.destination.registry).await?;
    let report = check::check(&ctx.registries, &settings.destination, findings, incomplete, ctx.concurrency).await;
    print(ctx, &settings, &report);
    if report.images.is_empty() {
        return Err(Failure::user(
            "no image found to check",
            "check that the chart renders pods with these values (or that the manifests hold some)",
        ));
    }
    if report.all_ok() {
        return Ok(());
    }
    let bad = report.images.iter().filter(|c| c.status != Status::Ok).count();
    Err(Failure::user(
        format!("{bad} of {} images would not be pulled from {}", report.images.len(), report.destination),
        "install with the air-gap values file import wrote (-f, after your own values files), import the bundle that holds the missing images, or see `bundle check --why` for where each is set",
    ))
}

fn read_manifests(path: Option<&std::path::Path>) -> Outcome<String> {
    let mut text = String::new();
    let what = path.map_or("stdin".to_string(), |p| p.display().to_string());
    let read = match path {
        Some(p) => std::fs::File::open(p)
            .explain_with(|| format!("cannot open {what}"))?
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_string(&mut text),
        None => std::io::stdin().lock().take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text),
    };
    read.explain_with(|| format!("cannot read {what} (it must be UTF-8 YAML)"))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Failure::user(
            format!("{what} is larger than {} MiB", MAX_MANIFEST_BYTES >> 20),
            "check the rendered manifests of one release at a time",
        ));
    }
    Ok(text)
}

fn print(ctx: &Context, settings: &CheckSettings, report: &Report) {
    if settings.json {
        ctx.printer.result_json(report);
    } else {
        let words: Vec<String> = report.images.iter().map(|c| c.status.word(&report.destination)).collect();
        let width = words.iter().map(String::len).max().unwrap_or(0);
        for (c, word) in report.images.iter().zip(&words) {
            ctx.printer.result(format!("{word:<width$}  {}", c.reference));
            if let Status::Invalid(why) | Status::Unchecked(why) = &c.status {
                ctx.printer.result(format!("{:width$}    {why}", ""));
            }
            if settings.why {
                for f in &c.found {
                    ctx.printer.result(format!("{:width$}    {}", "", super::images::why(f)));
                }
            }
        }
    }
    // A chart's survey has named these already.
    if matches!(settings.source, CheckSource::Manifests(_)) {
        for i in &report.incomplete {
            ctx.printer.warn(format!(
                "`{}` at {} is not an image reference (it lacks {}); not checked",
                i.name, i.location, i.missing
            ));
        }
    }
    let counts: Vec<String> = report.counts().iter().map(|(w, n)| format!("{n} {w}")).collect();
    ctx.printer.info(format!("{} images: {}", report.images.len(), counts.join(", ")));
}
