//! `bundle images -c CHART`: the images a chart needs, one per line (or, with --json, where each was found).

use std::collections::BTreeMap;

use serde::Serialize;

use super::discovery::survey_chart;
use super::failure::Explain as _;
use super::settings::ImagesSettings;
use super::{Context, Outcome};
use crate::chart::discover::Finding;
use crate::oci::reference::ImageRef;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listing<'a> {
    chart: ChartInfo<'a>,
    images: Vec<ImageEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChartInfo<'a> {
    name: &'a str,
    version: &'a str,
    origin: &'a str,
    discovery: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageEntry<'a> {
    reference: &'a str,
    found: Vec<&'a Finding>,
    /// With --platform: what would travel.
    #[serde(skip_serializing_if = "Option::is_none")]
    travels: Option<Travels>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Travels {
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform_selection: Option<crate::oci::layout::PlatformRecord>,
    /// Signatures, attestations and SBOMs that would travel with it: (kind, artifact reference).
    attached: Vec<(crate::oci::layout::ArtifactKind, String)>,
}

/// Where one finding is, for `--why`: `pass P: Kind/name key.path (how, from its pieces)`.
pub fn why(f: &Finding) -> String {
    let how = serde_json::to_value(f.how).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let pass = match f.pass.as_deref() {
        Some("") => "common values: ".to_string(),
        Some(p) => format!("pass {p}: "),
        None => String::new(),
    };
    let pieces = f.pieces.as_deref().map(|p| format!(", assembled from {p}")).unwrap_or_default();
    format!("{pass}{} ({how}{pieces})", f.location)
}

/// Each chart's list: one chart as it always was; a suite's charts each under a `# chart NAME VERSION` line
/// (text, still an images file) or as an array of listings (`--json`).
pub async fn run(ctx: &Context, settings: ImagesSettings) -> Outcome<()> {
    let suite = settings.charts.len() > 1;
    let mut listings = Vec::new();
    for chart in &settings.charts {
        if let Some(listing) = list(ctx, &settings, chart, suite).await? {
            listings.push(listing);
        }
    }
    if suite && settings.json {
        // Each listing keeps its own key order; the array around them is plain JSON.
        ctx.printer.result(format!("[\n{}\n]", listings.join(",\n")));
    } else if let Some(one) = listings.pop() {
        ctx.printer.result(one);
    }
    Ok(())
}

/// One chart's images: printed (text), or returned as its JSON listing.
async fn list(
    ctx: &Context,
    settings: &ImagesSettings,
    chart: &super::settings::ChartSettings,
    suite: bool,
) -> Outcome<Option<String>> {
    let input = survey_chart(ctx, chart, false).await?;
    let mut by_ref: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &input.survey.findings {
        by_ref.entry(f.reference.as_str()).or_default().push(f);
    }
    if settings.json {
        // With --platform, each image is resolved to show which platforms would travel.
        let mut travels: BTreeMap<&str, Travels> = BTreeMap::new();
        if let Some(choice) = &settings.platforms {
            let refs = by_ref
                .keys()
                .map(|r| ImageRef::parse(r).map(|parsed| (*r, parsed)))
                .collect::<Result<Vec<_>, _>>()
                .explain("the chart names an invalid image reference")?;
            let parsed: Vec<ImageRef> = refs.iter().map(|(_, p)| p.clone()).collect();
            let mut images = super::discovery::resolve(ctx, &parsed, Some(choice), true).await?;
            let artifacts = images.split_off(parsed.len());
            for ((written, _), img) in refs.iter().zip(images) {
                let attached = artifacts
                    .iter()
                    .filter_map(|a| a.artifact.as_ref().filter(|r| r.is_artifact()).map(|r| (r, a)))
                    .filter(|(r, _)| r.image == img.source.to_string())
                    .map(|(r, a)| (r.kind, a.source.to_string()))
                    .collect();
                travels.insert(
                    written,
                    Travels {
                        digest: img.digest.to_string(),
                        media_type: img.media_type,
                        platforms: img.platforms,
                        platform_selection: img.selection,
                        attached,
                    },
                );
            }
        }
        let r = &input.survey.record;
        let listing = Listing {
            chart: ChartInfo { name: &r.name, version: &r.version, origin: &r.origin, discovery: &r.discovery },
            images: by_ref
                .into_iter()
                .map(|(reference, found)| ImageEntry { reference, found, travels: travels.remove(reference) })
                .collect(),
        };
        ctx.printer.info(format!(
            "{} images",
            input.survey.findings.iter().map(|f| &f.reference).collect::<std::collections::BTreeSet<_>>().len()
        ));
        return Ok(Some(serde_json::to_string_pretty(&listing).expect("the listing serialises")));
    } else {
        if suite {
            let r = &input.survey.record;
            ctx.printer.result(format!("# chart {} {} ({})", r.name, r.version, r.origin));
        }
        for (reference, found) in &by_ref {
            ctx.printer.result(reference);
            if settings.why {
                for f in found {
                    ctx.printer.result(format!("    {}", why(f)));
                }
            }
        }
    }
    ctx.printer.info(format!(
        "{} images",
        input.survey.findings.iter().map(|f| &f.reference).collect::<std::collections::BTreeSet<_>>().len()
    ));
    Ok(None)
}
