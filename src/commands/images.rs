//! `bundle images -c CHART`: the images a chart needs, one per line (or, with --json, where each was found).

use std::collections::BTreeMap;

use serde::Serialize;

use super::discovery::survey_chart;
use super::settings::ImagesSettings;
use super::{Context, Outcome};
use crate::chart::discover::Finding;

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
}

pub async fn run(ctx: &Context, settings: ImagesSettings) -> Outcome<()> {
    let input = survey_chart(ctx, &settings.chart, false).await?;
    let mut by_ref: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &input.survey.findings {
        by_ref.entry(f.reference.as_str()).or_default().push(f);
    }
    if settings.json {
        let r = &input.survey.record;
        let listing = Listing {
            chart: ChartInfo { name: &r.name, version: &r.version, origin: &r.origin, discovery: &r.discovery },
            images: by_ref.into_iter().map(|(reference, found)| ImageEntry { reference, found }).collect(),
        };
        ctx.printer.result_json(&listing);
    } else {
        for reference in by_ref.keys() {
            ctx.printer.result(reference);
        }
    }
    ctx.printer.info(format!(
        "{} images",
        input.survey.findings.iter().map(|f| &f.reference).collect::<std::collections::BTreeSet<_>>().len()
    ));
    Ok(())
}
