//! The values file for the air gap: what makes the chart pull every image from the destination registry.
//!
//! Export works out a `ValuesPlan` (proven with helm by `prove`, or derived from the values scan without it);
//! import only fills in the destination here. The probe renders through this very function with a sentinel
//! destination, so the file import writes is the file that was proven.

use serde_yaml_ng::{Mapping, Value};

use super::discover::ImageShape;
use super::values::{parse_key, set_at};
use crate::destination::Destination;
use crate::layout::{ChartRecord, ImageValue, OverrideValue, ValuesKey, ValuesOverride, ValuesPlan};
use crate::reference::ImageRef;

/// The values tree `plan` gives for `dest`.
pub fn values_for(plan: &ValuesPlan, dest: &Destination) -> Value {
    let mut v = Value::Mapping(Mapping::new());
    for o in &plan.overrides {
        set_at(&mut v, &o.path, resolve(&o.value, dest));
    }
    v
}

/// `REGISTRY/PREFIX`, or `REGISTRY` without a prefix.
pub fn destination_text(dest: &Destination) -> String {
    match &dest.prefix {
        Some(p) => format!("{}/{p}", dest.registry),
        None => dest.registry.clone(),
    }
}

fn resolve(value: &OverrideValue, dest: &Destination) -> Value {
    let mapped = |image: &str| ImageRef::parse(image).ok().map(|r| dest.map(&r));
    let text = match value {
        OverrideValue::Destination => destination_text(dest),
        OverrideValue::Registry => dest.registry.clone(),
        OverrideValue::Repository { image } => mapped(image).map(|t| t.repository().to_string()).unwrap_or_default(),
        OverrideValue::Name { image, suffix } => {
            mapped(image).map(|t| format!("{}{suffix}", t.name())).unwrap_or_default()
        }
        OverrideValue::Path { image, suffix } => mapped(image)
            .map(|t| {
                let repository = t.repository();
                let path = dest
                    .prefix
                    .as_deref()
                    .and_then(|p| repository.strip_prefix(p)?.strip_prefix('/'))
                    .unwrap_or(repository);
                format!("{path}{suffix}")
            })
            .unwrap_or_default(),
        OverrideValue::Literal { value } => return value.clone(),
    };
    Value::String(text)
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
    ValuesPlan { proven: false, overrides, unmovable: record.unmapped.clone() }
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
            unmovable: vec![],
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
