//! One survey of a chart: every pass rendered (or the values scanned), every image found with where and how,
//! and, for export, the air-gap values plan (proven with helm by `prove`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::ChartError;
use super::discover::{self, Finding, ImageValue};
use super::prove::{self, ProbeInput};
use super::redact::{redact_set, redact_user_values};
use super::render::{Extra, Helm, RenderOptions};
use super::source::LoadedChart;
use super::values::{self, UserValues};
use super::values_out;
use crate::oci::layout::{ChartRecord, ImageValueRecord, OverrideValue, ValuesPlan};
use crate::oci::reference::ImageRef;

pub struct Survey {
    pub findings: Vec<Finding>,
    pub record: ChartRecord,
    /// Set when discovery was static: images only templates compute may be missing.
    pub static_only: bool,
    /// What the user should know but what does not stop the survey (the probe's fallbacks).
    pub warnings: Vec<String>,
    /// Bare image names the rendered chart leaves without a registry or version: the user must supply them.
    pub incomplete: Vec<discover::Incomplete>,
}

pub struct SurveyOptions<'a> {
    pub user: UserValues,
    pub render: RenderOptions,
    /// Each pass's `--set` expressions; one empty pass when none were given.
    pub passes: Vec<Vec<String>>,
    pub helm: Option<&'a Helm>,
    /// Work out the air-gap values plan (export); `bundle images` only lists.
    pub plan_values: bool,
    /// Where the probe's temporary values files go.
    pub tmp_dir: PathBuf,
}

pub fn survey(loaded: &LoadedChart, package_path: &Path, opts: &SurveyOptions<'_>) -> Result<Survey, ChartError> {
    let mut findings = Vec::new();
    let mut image_values: Vec<ImageValue> = Vec::new();
    for pass in &opts.passes {
        let overrides = values::overrides(&opts.user, pass)?;
        let scoped = values::effective(&loaded.chart, &overrides);
        let (f, iv) = discover::scan_values(&scoped);
        if opts.helm.is_none() {
            findings.extend(f.into_iter().map(|mut x| {
                x.pass = Some(pass.join(","));
                x
            }));
        }
        image_values.extend(iv);
    }
    image_values.sort();
    image_values.dedup();

    let mut warnings = Vec::new();
    let mut incomplete = Vec::new();
    let mut plain: Vec<Vec<Vec<Finding>>> = Vec::new();
    if let Some(helm) = opts.helm {
        for pass in &opts.passes {
            let text = helm.template(package_path, &opts.render, pass, Extra::default())?;
            let found = discover::by_document(&text, &pass.join(","), &BTreeSet::new())?;
            findings.extend(found.documents.iter().flatten().cloned());
            incomplete.extend(found.incomplete);
            plain.push(found.documents);
        }
        // Rendered images no image map accounts for may still sit in values under another key (an operator's
        // `reloader: quay.io/…:v1` that only shows up in args): find them by value.
        let rendered: BTreeSet<&String> = plain.iter().flatten().flatten().map(|f| &f.reference).collect();
        let known: BTreeSet<String> = image_values.iter().filter_map(|iv| normalised(&iv.reference)).collect();
        let wanted: BTreeSet<&String> =
            rendered.into_iter().filter(|r| normalised(r).is_some_and(|n| !known.contains(&n))).collect();
        if !wanted.is_empty() {
            for pass in &opts.passes {
                let overrides = values::overrides(&opts.user, pass)?;
                for scope in values::effective(&loaded.chart, &overrides) {
                    find_strings(&scope.values, &mut scope.path.clone(), &wanted, &mut image_values);
                }
            }
            image_values.sort();
            image_values.dedup();
        }
    }

    let plan = if !opts.plan_values {
        None
    } else if let Some(helm) = opts.helm {
        let input = ProbeInput {
            helm,
            package: package_path,
            render: &opts.render,
            passes: &opts.passes,
            chart: &loaded.chart,
            user: &opts.user,
            tmp_dir: &opts.tmp_dir,
            plain: &plain,
        };
        match prove::prove(&input) {
            Ok(proof) => {
                warnings.extend(proof.warnings);
                Some(proof.plan)
            }
            Err(reason) => {
                warnings.push(format!(
                    "the air-gap values file could not be proven with helm ({reason}); import will write an unproven one, so check it with `helm template -f` before installing"
                ));
                Some(unproven(&image_values))
            }
        }
    } else {
        Some(unproven(&image_values))
    };

    let meta = &loaded.chart.meta;
    let global_image_registry = plan.as_ref().is_some_and(|p| {
        p.overrides
            .iter()
            .any(|o| o.value == OverrideValue::Destination && values_out::dotted(&o.path) == "global.imageRegistry")
    });
    let record = ChartRecord {
        name: meta.name.clone(),
        version: meta.version.clone(),
        app_version: meta.app_version.clone(),
        origin: loaded.origin.clone(),
        discovery: if opts.helm.is_some() { "helm".into() } else { "static".into() },
        values: redact_user_values(&opts.user),
        kube_version: opts.render.kube_version.clone(),
        passes: opts.passes.iter().map(|p| p.iter().map(|s| redact_set(s)).collect()).collect(),
        image_values: image_values
            .iter()
            .map(|iv| ImageValueRecord { value: iv.clone(), covered_by_global: false })
            .collect(),
        unmapped: plan.as_ref().map(|p| p.unmovable.iter().map(|u| u.image.clone()).collect()).unwrap_or_default(),
        global_image_registry,
        values_plan: plan,
    };
    if let Some(plan) = &record.values_plan {
        let fixed = values_out::fixed_by_set(plan, &record);
        if !fixed.is_empty() {
            let keys: Vec<String> = fixed.iter().map(|o| values_out::dotted(&o.path)).collect();
            warnings.push(format!(
                "the air-gap values file sets {} that you give with --set or --pass ({}); helm's --set beats every values file, so at install give them in a values file before the air-gap file (import prints the flags that do it otherwise)",
                if keys.len() == 1 { "a key" } else { "keys" },
                keys.join(", ")
            ));
        }
    }
    findings.sort();
    findings.dedup();
    incomplete.sort();
    incomplete.dedup();
    Ok(Survey { findings, record, static_only: opts.helm.is_none(), warnings, incomplete })
}

/// Without helm: every image value the scan found, in the form its shape suggests, unchecked.
fn unproven(image_values: &[ImageValue]) -> ValuesPlan {
    let refs: Vec<&ImageValue> = image_values.iter().collect();
    ValuesPlan { proven: false, overrides: values_out::unproven_overrides(&refs), ..Default::default() }
}

/// String leaves of a values tree equal to one of `wanted`, as `String`-shaped image values.
fn find_strings(v: &Value, path: &mut Vec<String>, wanted: &BTreeSet<&String>, out: &mut Vec<ImageValue>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                let Some(k) = k.as_str() else { continue };
                if k == "global" && path.is_empty() {
                    continue;
                }
                path.push(k.to_string());
                find_strings(val, path, wanted, out);
                path.pop();
            }
        }
        Value::String(s) if wanted.contains(&s.trim().to_string()) => {
            out.push(ImageValue {
                path: path.join("."),
                reference: s.trim().to_string(),
                shape: discover::ImageShape::String,
            });
        }
        _ => {}
    }
}

fn normalised(reference: &str) -> Option<String> {
    ImageRef::parse(reference).ok().map(|r| r.to_string())
}
