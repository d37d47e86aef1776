//! The values file for the air gap: what makes the chart pull every image from the destination registry.
//!
//! Export works out a `ValuesPlan` (proven with helm by `prove`, or derived from the values scan without it);
//! import only fills in the destination here. The probe renders through this very function with a sentinel
//! destination, so the file import writes is the file that was proven.

use serde_yaml_ng::{Mapping, Value};

use super::discover::ImageShape;
use super::values::{parse_key, set_at, set_keys};
use crate::oci::destination::{self, Destination};
use crate::oci::layout::{
    Around, ChartRecord, ImageValue, OverrideValue, Unmovable, UnmovableReason, ValuesKey, ValuesOverride, ValuesPlan,
};
use crate::oci::reference::ImageRef;

/// The values tree `plan` gives for `dest`. An override that cannot be read for this destination (a value
/// between text that the mapping does not keep, see `unresolved`) is left out.
pub fn values_for(plan: &ValuesPlan, dest: &Destination) -> Value {
    let mut v = Value::Mapping(Mapping::new());
    for o in &plan.overrides {
        if let Some(value) = resolve(&o.value, dest) {
            set_at(&mut v, &o.path, value);
        }
    }
    v
}

/// The overrides of `plan` that cannot be read for `dest`: `--flatten` drops the organisation a registry value
/// carries (`ghcr.io/dapr` cannot become a front of `REGISTRY/PREFIX/daprd`), so that value cannot be written.
pub fn unresolved(plan: &ValuesPlan, dest: &Destination) -> Vec<String> {
    plan.overrides.iter().filter(|o| resolve(&o.value, dest).is_none()).map(|o| dotted(&o.path)).collect()
}

/// `REGISTRY/PREFIX`, or `REGISTRY` without a prefix.
pub fn destination_text(dest: &Destination) -> String {
    match &dest.prefix {
        Some(p) => format!("{}/{p}", dest.registry),
        None => dest.registry.clone(),
    }
}

fn resolve(value: &OverrideValue, dest: &Destination) -> Option<Value> {
    let mapped = |image: &str| ImageRef::parse(image).ok().map(|r| dest.map(&r));
    let text = match value {
        OverrideValue::Destination => destination_text(dest),
        OverrideValue::Registry => dest.registry.clone(),
        OverrideValue::Between { image, before, after } => {
            let target = mapped(image)?;
            let text = format!("{}{}", target.name(), written_suffix(image));
            let inner = text.strip_prefix(&spell(before, dest))?.strip_suffix(&spell(after, dest))?;
            if inner.is_empty() {
                return None;
            }
            inner.to_string()
        }
        OverrideValue::Repository { image } => mapped(image)?.repository().to_string(),
        OverrideValue::Name { image, suffix } => format!("{}{suffix}", mapped(image)?.name()),
        OverrideValue::Path { image, suffix } => {
            let t = mapped(image)?;
            let repository = t.repository();
            let path = dest
                .prefix
                .as_deref()
                .and_then(|p| repository.strip_prefix(p)?.strip_prefix('/'))
                .unwrap_or(repository);
            format!("{path}{suffix}")
        }
        OverrideValue::Literal { value } => return Some(value.clone()),
    };
    Some(Value::String(text))
}

fn spell(pieces: &[Around], dest: &Destination) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Around::Text(t) => t.clone(),
            Around::Destination => destination_text(dest),
            Around::Registry => dest.registry.clone(),
        })
        .collect()
}

/// The header of the values file: what it is for and exactly what was proven of it, never more.
pub fn header(record: &ChartRecord, plan: &ValuesPlan, dest: &Destination) -> String {
    let at = destination_text(dest);
    let mut h = format!(
        "# Values that make chart {} {} pull its images from {at}.\n# Written by bundle; pass with -f, after your own values files.\n",
        record.name, record.version
    );
    if !plan.proven {
        h.push_str(
            "# Unproven: the chart was surveyed without helm (or helm could not render the probe); check it with\n# `helm template -f` before installing.\n",
        );
    } else if dest.mapping != destination::Mapping::Path {
        h.push_str(
            "# Proven at export for the default name mapping only; this push used another, so check it with `helm template -f`.\n",
        );
    } else {
        let n = plan.images.len();
        let landing = n.saturating_sub(plan.unmovable.len());
        h.push_str(&match (plan.unmovable.is_empty(), n) {
            (true, 0) => "# Proven: helm rendered every pass with these values at export or copy, and every image landed where\n# it is pushed.\n".to_string(),
            (true, n) => format!("# Proven: all {n} images land at {at} (helm rendered every pass with these values at export or copy).\n"),
            (false, 0) => "# Proven for every image but these, which do not land:\n".to_string(),
            (false, n) => format!("# Proven: {landing} of {n} images land at {at}; these do not:\n"),
        });
        for u in &plan.unmovable {
            h.push_str(&format!("#   {}: {}\n", u.image, u.reason.text()));
        }
    }
    let fixed = fixed_by_set(plan, record);
    if !fixed.is_empty() {
        h.push_str(
            "# helm's --set beats every values file: these keys were also given with --set or --pass at export, so\n",
        );
        h.push_str("# at install give them in a values file before this one, or add these flags after it:\n");
        for flag in helm_flags(&fixed, dest) {
            h.push_str(&format!("#   {flag}\n"));
        }
    }
    h
}

/// The overrides of `plan` whose keys a `--set`, `--set-string` or `--pass` of the export also sets (the same
/// key, a key inside it, or a key it lies inside): helm's `--set` beats every `-f`, so the file alone does not
/// move them at install.
pub fn fixed_by_set(plan: &ValuesPlan, record: &ChartRecord) -> Vec<ValuesOverride> {
    let set: Vec<Vec<ValuesKey>> = record
        .values
        .set
        .iter()
        .chain(&record.values.set_string)
        .chain(record.passes.iter().flatten())
        .flat_map(|e| set_keys(e))
        .collect();
    let within = |a: &[ValuesKey], b: &[ValuesKey]| a.len() <= b.len() && a == &b[..a.len()];
    plan.overrides.iter().filter(|o| set.iter().any(|s| within(s, &o.path) || within(&o.path, s))).cloned().collect()
}

/// helm flags that set `overrides` for `dest` on the command line: `--set-string` for text (so no value is
/// reinterpreted), `--set` for a switch or a number. A list cannot be given that way: it is named instead
/// (`KEY: a list, give it in a values file`).
pub fn helm_flags(overrides: &[ValuesOverride], dest: &Destination) -> Vec<String> {
    overrides
        .iter()
        .filter_map(|o| {
            let key = dotted(&o.path).replace(',', "\\,");
            Some(match resolve(&o.value, dest)? {
                Value::String(s) => format!("--set-string {key}={}", s.replace(',', "\\,")),
                Value::Bool(b) => format!("--set {key}={b}"),
                Value::Number(n) => format!("--set {key}={n}"),
                _ => format!("({key}: a list or map, give it in a values file)"),
            })
        })
        .collect()
}

/// `a.b[0].c` (the values scan's dotted paths, written like --set keys) as keys; empty if it is not one.
pub fn parse_dotted(path: &str) -> Vec<ValuesKey> {
    parse_key(path).unwrap_or_default()
}

/// `path` as helm's --set would write it, for messages.
pub fn dotted(path: &[ValuesKey]) -> String {
    let mut s = String::new();
    for k in path {
        match k {
            ValuesKey::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(&k.replace('.', "\\."));
            }
            ValuesKey::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The tag and/or digest a reference string carries as written (`:1.0`, `@sha256:…`, `:1.0@sha256:…`), or "".
pub fn written_suffix(value: &str) -> &str {
    let last_slash = value.rfind('/').map_or(0, |i| i + 1);
    match value[last_slash..].find([':', '@']) {
        Some(i) => &value[last_slash + i..],
        None => "",
    }
}

/// The plan a bundle carries, or for a bundle exported before plans existed, the one its image values give.
pub fn plan_of(record: &ChartRecord) -> ValuesPlan {
    if let Some(plan) = &record.values_plan {
        return plan.clone();
    }
    let mut overrides = Vec::new();
    if record.global_image_registry {
        overrides
            .push(ValuesOverride { path: parse_dotted("global.imageRegistry"), value: OverrideValue::Destination });
    }
    let values: Vec<&ImageValue> =
        record.image_values.iter().filter(|iv| !iv.covered_by_global).map(|iv| &iv.value).collect();
    overrides.extend(unproven_overrides(&values));
    let unmovable = record
        .unmapped
        .iter()
        .map(|image| Unmovable { image: image.clone(), reason: UnmovableReason::Template })
        .collect();
    ValuesPlan { proven: false, overrides, unmovable, images: vec![] }
}

/// Overrides for image values found by the values scan, in the form that fits their shape, unchecked. Paths
/// inside lists cannot be expressed without the whole list (helm replaces lists whole), so they are left out
/// here; the proof (`prove`) carries whole lists.
pub fn unproven_overrides(values: &[&ImageValue]) -> Vec<ValuesOverride> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for iv in values {
        let path = parse_dotted(&iv.path);
        if path.is_empty() || path.iter().any(|k| matches!(k, ValuesKey::Index(_))) || !seen.insert(path.clone()) {
            continue;
        }
        if ImageRef::parse(&iv.reference).is_err() {
            continue;
        }
        let image = iv.reference.clone();
        let at = |key: &str| {
            let mut p = path.clone();
            p.push(ValuesKey::Key(key.to_string()));
            p
        };
        match &iv.shape {
            ImageShape::Map { registry_key: true, repository_key, .. } => {
                out.push(ValuesOverride { path: at("registry"), value: OverrideValue::Registry });
                out.push(ValuesOverride { path: at(repository_key), value: OverrideValue::Repository { image } });
            }
            ImageShape::Map { registry_key: false, repository_key, .. } => {
                out.push(ValuesOverride {
                    path: at(repository_key),
                    value: OverrideValue::Name { image, suffix: String::new() },
                });
            }
            ImageShape::String => {
                // A string shape's reference is the value as written.
                let suffix = written_suffix(&iv.reference).to_string();
                out.push(ValuesOverride { path: path.clone(), value: OverrideValue::Name { image, suffix } });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::values::get_at;

    #[test]
    fn suffixes_as_written() {
        assert_eq!(written_suffix("oliver006/redis_exporter"), "");
        assert_eq!(written_suffix("host:5000/a/b:1.0"), ":1.0");
        assert_eq!(written_suffix("a/b@sha256:abc"), "@sha256:abc");
        assert_eq!(written_suffix("a/b:1@sha256:abc"), ":1@sha256:abc");
    }

    #[test]
    fn paths_round_trip_and_lists_are_set_in_place() {
        let p = parse_dotted("stackstate.stackpacks.images[1].repository");
        assert_eq!(dotted(&p), "stackstate.stackpacks.images[1].repository");
        let mut v: Value = serde_yaml_ng::from_str("a: [{r: x, t: '1'}, {r: y, t: '2'}]").unwrap();
        set_at(&mut v, &parse_dotted("a[1].r"), Value::String("z".into()));
        assert_eq!(v, serde_yaml_ng::from_str::<Value>("a: [{r: x, t: '1'}, {r: z, t: '2'}]").unwrap());
    }

    #[test]
    fn the_plan_is_filled_in_with_the_destination() {
        let plan = ValuesPlan {
            proven: true,
            overrides: vec![
                ValuesOverride { path: parse_dotted("global.imageRegistry"), value: OverrideValue::Destination },
                ValuesOverride { path: parse_dotted("a.image.registry"), value: OverrideValue::Registry },
                ValuesOverride {
                    path: parse_dotted("a.image.repository"),
                    value: OverrideValue::Repository { image: "quay.io/org/a:1".into() },
                },
                ValuesOverride {
                    path: parse_dotted("b.image"),
                    value: OverrideValue::Name { image: "nginx".into(), suffix: String::new() },
                },
            ],
            ..Default::default()
        };
        let dest = Destination::parse("reg.local:5000/mirror").unwrap();
        let v = values_for(&plan, &dest);
        let want: Value = serde_yaml_ng::from_str(
            "global: {imageRegistry: reg.local:5000/mirror}\na: {image: {registry: reg.local:5000, repository: mirror/org/a}}\nb: {image: reg.local:5000/mirror/library/nginx}\n",
        )
        .unwrap();
        assert_eq!(v, want);
        let bare = values_for(&plan, &Destination::parse("reg.local:5000").unwrap());
        assert_eq!(get_at(&bare, &parse_dotted("a.image.repository")).and_then(Value::as_str), Some("org/a"));
    }
}
