//! One survey of a chart: every pass rendered (or the values scanned), every image found with where and how,
//! and which values paths redirect which images, for bundle.json and the air-gap values file.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml_ng::Value;

use super::ChartError;
use super::discover::{self, Finding, ImageValue};
use super::render::{Helm, RenderOptions};
use super::source::LoadedChart;
use super::values::{self, UserValues};
use crate::layout::{ChartRecord, ImageValueRecord};
use crate::reference::ImageRef;

/// A registry name that cannot exist, used to see which images follow `global.imageRegistry`.
const SENTINEL: &str = "bundle-sentinel.invalid";

pub struct Survey {
    pub findings: Vec<Finding>,
    pub record: ChartRecord,
    /// Set when discovery was static: images only templates compute may be missing.
    pub static_only: bool,
}

pub struct SurveyOptions<'a> {
    pub user: UserValues,
    pub render: RenderOptions,
    /// Each pass's `--set` expressions; one empty pass when none were given.
    pub passes: Vec<Vec<String>>,
    pub helm: Option<&'a Helm>,
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

    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut rendered: BTreeSet<String> = BTreeSet::new();
    if let Some(helm) = opts.helm {
        for pass in &opts.passes {
            let text = helm.template(package_path, &opts.render, pass, &[])?;
            let found = discover::from_rendered(&text, &pass.join(","))?;
            rendered.extend(found.iter().map(|f| f.reference.clone()));
            findings.extend(found);
            let sentinel = helm.template(package_path, &opts.render, pass, &[format!("global.imageRegistry={SENTINEL}")])?;
            covered.extend(discover::from_rendered(&sentinel, "")?.into_iter().map(|f| f.reference));
        }
        // Rendered images no image map accounts for may still sit in values under another key (an operator's
        // `reloader: quay.io/…:v1` that only shows up in args): find them by value, so they can be redirected.
        let known: BTreeSet<String> = image_values.iter().filter_map(|iv| normalised(&iv.reference)).collect();
        let wanted: BTreeSet<&String> = rendered.iter().filter(|r| normalised(r).is_some_and(|n| !known.contains(&n))).collect();
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
    let record_values: Vec<ImageValueRecord> = image_values
        .iter()
        .map(|iv| ImageValueRecord { value: iv.clone(), covered_by_global: covered.contains(&sentinel_form(&iv.reference)) })
        .collect();
    // Images a render produced that neither a values path nor global.imageRegistry redirects.
    let from_values: BTreeSet<String> = image_values.iter().filter_map(|iv| normalised(&iv.reference)).collect();
    let unmapped = rendered
        .iter()
        .filter(|r| normalised(r).is_some_and(|n| !from_values.contains(&n)) && !covered.contains(&sentinel_form(r)))
        .cloned()
        .collect();
    let global_image_registry = rendered.iter().any(|r| covered.contains(&sentinel_form(r)));

    let meta = &loaded.chart.meta;
    let record = ChartRecord {
        name: meta.name.clone(),
        version: meta.version.clone(),
        app_version: meta.app_version.clone(),
        origin: loaded.origin.clone(),
        discovery: if opts.helm.is_some() { "helm".into() } else { "static".into() },
        values: redact_user_values(&opts.user),
        kube_version: opts.render.kube_version.clone(),
        passes: opts.passes.iter().map(|p| p.iter().map(|s| redact_set(s)).collect()).collect(),
        image_values: record_values,
        unmapped,
        global_image_registry,
    };
    findings.sort();
    findings.dedup();
    Ok(Survey { findings, record, static_only: opts.helm.is_none() })
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
            out.push(ImageValue { path: path.join("."), reference: s.trim().to_string(), shape: discover::ImageShape::String });
        }
        _ => {}
    }
}

/// How an image renders when `global.imageRegistry` points at the sentinel and the chart honours it: the
/// sentinel host, then the path bundle import would push it to (with `library/` for official images).
fn sentinel_form(reference: &str) -> String {
    match ImageRef::parse(reference) {
        Ok(r) => {
            let mut s = format!("{SENTINEL}/{}", r.repository());
            if let Some(t) = r.tag() {
                s.push(':');
                s.push_str(t);
            }
            if let Some(d) = r.digest() {
                s.push('@');
                s.push_str(d.as_str());
            }
            s
        }
        Err(_) => String::new(),
    }
}

fn normalised(reference: &str) -> Option<String> {
    ImageRef::parse(reference).ok().map(|r| r.to_string())
}

/// Key names whose values are secrets in practice; their values never go into bundle.json.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "apikey", "api_key", "license", "credential", "auth", "key"].iter().any(|w| k.contains(w))
        && !matches!(k.as_str(), "keys" | "keyboard")
}

fn redact_set(expr: &str) -> String {
    expr.split(',')
        .map(|a| match a.split_once('=') {
            Some((k, _)) if is_secret_key(k.rsplit('.').next().unwrap_or(k)) => format!("{k}=<redacted>"),
            _ => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_value(v: &Value) -> Value {
    match v {
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, val)| {
                    let secret = k.as_str().is_some_and(is_secret_key) && !val.is_mapping() && !val.is_sequence();
                    (k.clone(), if secret { Value::String("<redacted>".into()) } else { redact_value(val) })
                })
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.iter().map(redact_value).collect()),
        other => other.clone(),
    }
}

fn redact_user_values(u: &UserValues) -> UserValues {
    UserValues {
        files: u.files.iter().map(redact_value).collect(),
        set: u.set.iter().map(|s| redact_set(s)).collect(),
        set_string: u.set_string.iter().map(|s| redact_set(s)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_the_record() {
        assert_eq!(redact_set("stackstate.license.key=abc,stackstate.baseUrl=http://x,minio.secretKey=s"), "stackstate.license.key=<redacted>,stackstate.baseUrl=http://x,minio.secretKey=<redacted>");
        let v: Value = serde_yaml_ng::from_str("a: {password: p, user: u}\nimage: {tag: '1'}\n").unwrap();
        let r = serde_yaml_ng::to_string(&redact_value(&v)).unwrap();
        assert!(!r.contains(" p\n") && r.contains("<redacted>") && r.contains("user: u"), "{r}");
    }

    #[test]
    fn sentinel_form_keeps_library() {
        assert_eq!(sentinel_form("nginx:1.25"), "bundle-sentinel.invalid/library/nginx:1.25");
        assert_eq!(sentinel_form("quay.io/a/b:1"), "bundle-sentinel.invalid/a/b:1");
    }
}
