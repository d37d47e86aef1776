//! The chart half of `images` and `export`: load the chart, pick helm or the static scan, survey every pass.

use super::failure::Explain as _;

use super::settings::{ChartSettings, HelmChoice};
use super::{Context, Failure, Outcome};
use crate::chart::render::{Helm, RenderOptions};
use crate::chart::source::{self, LoadedChart};
use crate::chart::survey::{self, Survey, SurveyOptions};
use crate::chart::values::UserValues;

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
    Ok(ChartInput { loaded, survey })
}
