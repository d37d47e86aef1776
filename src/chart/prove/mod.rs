//! Proving the air-gap values file before it is written.
//!
//! Charts name their images in too many ways for a list of forms (`global.imageRegistry` that some subcharts
//! honour, `registry` + `repository` maps, a registry with the organisation in one value, an operator's
//! `repository` + `image` + `version`, separate `tag` keys, lists of image maps). One rule covers them: a value
//! that feeds an image sits at some place in the rendered reference, between text the template (or other
//! values) writes; set it to what lies between that same text in the reference import pushes the image to. A
//! registry value (`quay.io` before `/org/name:1`) becomes `REGISTRY/PREFIX`, dapr's `ghcr.io/dapr` becomes
//! `REGISTRY/PREFIX/dapr`, a repository after a global setting becomes its path. So export asks helm:
//!
//! 1. **Trace.** One render per pass with every value that could feed an image (`candidates`) marked at its
//!    front and `global.imageRegistry` set to a marker of its own: each rendered image now reads as text and
//!    the values in it, in order (`Seg`). The user's `--set` and `--pass` values are rendered from a values
//!    file, the way a user installs (their values in a file, the air-gap file last), so values they set are
//!    traced too; helm's `--set` would beat any file.
//! 2. **Solve.** Images that share a value are judged together (a component). For each, the changes that make
//!    every one of its images read exactly where import pushes it, fewest changed keys first: none (the global
//!    setting alone), one value, a registry and the value after it; then, checked by rendering only, the whole
//!    name in a map's name key.
//! 3. **Check.** The plan is rendered for a sentinel destination through the code import uses (`values_out`);
//!    a component whose images do not all land tries its next choice, a bounded number of rounds, and whatever
//!    still does not land is recorded as unmovable, with the reason.
//!
//! A render that fails (Bitnami's image check refuses any registry but its own) is tried again with
//! `global.security.allowInsecureImages=true`, which the plan then carries; when the probe cannot render at all,
//! export goes on with an unproven plan and a warning, never a failure.

mod renderer;
mod solve;
mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_yaml_ng::Value;

use super::Chart;
use super::ChartError;
use super::discover::{self, Finding};
use super::redact::holds_secret;
use super::render::{Helm, RenderOptions};
use super::values::get_at;
use super::values::{self, ScopedValues, UserValues};
use super::values_out::{self, parse_dotted, written_suffix};
use crate::oci::destination::{Destination, Mapping};
use crate::oci::layout::{OverrideValue, Unmovable, UnmovableReason, ValuesKey, ValuesOverride, ValuesPlan};
use crate::oci::reference::ImageRef;
use renderer::Renderer;
use solve::{Component, components};
use trace::{Seg, Traced, align, leaves_of, located, marked, marker, segments, spelled};

/// Checking rounds at most (each one render per pass); a component has a handful of choices at most.
const MAX_ROUNDS: usize = 6;
/// Choices tried per component at most.
const MAX_CHOICES: usize = 16;
const GLOBAL_MARKER: &str = "bundle-global.invalid";
const SENTINEL_REGISTRY: &str = "bundle-sentinel.invalid";
/// Two levels, so a template that splits the registry setting on `/` shows up.
const SENTINEL_PREFIX: &str = "bundle-sentinel/prefix";

pub fn sentinel() -> Destination {
    Destination { registry: SENTINEL_REGISTRY.into(), prefix: Some(SENTINEL_PREFIX.into()), mapping: Mapping::Path }
}

pub struct ProbeInput<'a> {
    pub helm: &'a Helm,
    pub package: &'a Path,
    pub render: &'a RenderOptions,
    pub passes: &'a [Vec<String>],
    pub chart: &'a Chart,
    pub user: &'a UserValues,
    pub tmp_dir: &'a Path,
    /// Each pass's plain render, document by document.
    pub plain: &'a [Vec<Vec<Finding>>],
}

pub struct Proof {
    pub plan: ValuesPlan,
    pub warnings: Vec<String>,
}

/// The proven plan, or why the probe could not render (the caller falls back to an unproven plan).
pub fn prove(input: &ProbeInput<'_>) -> Result<Proof, String> {
    let mut warnings = Vec::new();
    let plan = run(input, &mut warnings)?;
    Ok(Proof { plan, warnings })
}

/// Where an image appears: the pass, then `Place`.
type SiteKey = (usize, Place);
/// The document (in helm's order), the key path inside it (kinds kept, names dropped: a Job named after the
/// time has another name in every render), and the n-th reference at that path (args may hold several).
type Place = (usize, String, usize);

struct Site {
    target: ImageRef,
    written: String,
    /// Where import pushes it, written the way the chart wrote it: the mapped name, then the chart's own tag
    /// or digest text (`nginx` stays without `:latest`).
    target_text: String,
}

fn run(input: &ProbeInput<'_>, warnings: &mut Vec<String>) -> Result<ValuesPlan, String> {
    let dest = sentinel();
    let scoped_per_pass: Vec<Vec<ScopedValues<'_>>> = input
        .passes
        .iter()
        .map(|p| values::overrides(input.user, p).map(|o| values::effective(input.chart, &o)))
        .collect::<Result<_, ChartError>>()
        .map_err(|e| e.to_string())?;
    let renderer = Renderer::new(input)?;

    // Sites: every image the plain renders show, by where it is.
    let mut sites: BTreeMap<SiteKey, Site> = BTreeMap::new();
    for (pass, findings) in input.plain.iter().enumerate() {
        for (place, written) in located(findings, None) {
            let Ok(source) = ImageRef::parse(&written) else { continue };
            let target = dest.map(&source);
            let target_text = format!("{}{}", target.name(), written_suffix(&written));
            sites.insert((pass, place), Site { target, written, target_text });
        }
    }
    let images: Vec<String> = sites.values().map(|s| s.written.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    if sites.is_empty() {
        return Ok(ValuesPlan { proven: true, overrides: vec![], unmovable: vec![], images });
    }

    // 1. Trace: the values that could feed an image, of every pass, in one index space; one marked render per
    // pass. The plain renders' references stay known in every probe render, so each render finds the same places.
    let rendered: BTreeSet<String> = images.iter().cloned().collect();
    let leaves = leaves_of(&scoped_per_pass, &rendered);
    let mut switch: Option<ValuesOverride> = None;
    let mut traced: BTreeMap<SiteKey, Traced> = BTreeMap::new();
    for (pass, scoped) in scoped_per_pass.iter().enumerate() {
        let mut trace = vec![literal(parse_dotted("global.imageRegistry"), Value::String(GLOBAL_MARKER.into()))];
        for (i, leaf) in leaves.iter().enumerate() {
            if get_at_scoped(scoped, &leaf.path).is_some() {
                trace.push(literal(leaf.path.clone(), Value::String(format!("{}{}", marker(i), leaf.value))));
            }
        }
        let (trace, _) = with_whole_lists(trace, scoped);
        let text = renderer.render_with_switch(pass, &trace, &mut switch)?;
        let found = discover::by_document_with(&text, "", &rendered, &marked).map_err(|e| e.to_string())?;
        let at = located(&found.documents, Some(&align(&input.plain[pass], &found.documents)));
        for (key, site) in sites.range((pass, (0, String::new(), 0))..(pass + 1, (0, String::new(), 0))) {
            let t = match at.get(&key.1) {
                Some(reference) => segments(reference, &leaves),
                // The site did not survive the marked render in place: the values that spell it, in place.
                None => spelled(&site.written, &leaves),
            };
            traced.insert(key.clone(), t);
        }
    }
    let uses_global = traced.values().any(|t| t.segs.first() == Some(&Seg::Global));

    // 2. Solve, component by component.
    let components = components(&sites, &traced, &leaves, uses_global);

    // 3. Check: each component's choice, advanced while its images land wrong.
    // A component that runs out of choices leaves its values as the chart has them (`None`).
    let mut state: Vec<Option<usize>> = components.iter().map(|c| (!c.choices.is_empty()).then_some(0)).collect();
    for _ in 0..MAX_ROUNDS {
        let overrides = plan_overrides(&components, &state, uses_global, &switch, &scoped_per_pass[0]).0;
        let landed = renderer.landed(&overrides, &dest, &sites, &rendered)?;
        let mut advanced = false;
        for (c, comp) in components.iter().enumerate() {
            let Some(at) = state[c] else { continue };
            if comp.sites.iter().all(|k| landed.contains(k)) {
                continue;
            }
            state[c] = (at + 1 < comp.choices.len()).then_some(at + 1);
            advanced |= state[c].is_some();
        }
        if !advanced {
            break;
        }
    }

    // The plan as it will be recorded, rendered once more: whatever still does not land is unmovable.
    let (overrides, dropped) = plan_overrides(&components, &state, uses_global, &switch, &scoped_per_pass[0]);
    let landed = renderer.landed(&overrides, &dest, &sites, &rendered)?;
    let mut unmovable: BTreeSet<Unmovable> = BTreeSet::new();
    for (c, comp) in components.iter().enumerate() {
        for key in comp.sites.iter().filter(|k| !landed.contains(*k)) {
            let fed = traced.get(key).is_some_and(|t| t.leaves().next().is_some());
            let reason = if dropped.contains(&c) {
                UnmovableReason::SecretList
            } else if fed {
                UnmovableReason::NoValueLandsIt
            } else {
                UnmovableReason::Template
            };
            unmovable.insert(Unmovable { image: sites[key].written.clone(), reason });
        }
    }
    // One image may land in one place and not in another: it is named once, with the first reason.
    let mut named = BTreeSet::new();
    let unmovable: Vec<Unmovable> = unmovable.into_iter().filter(|u| named.insert(u.image.clone())).collect();
    if let Some(s) = &switch {
        warnings.push(format!(
            "the chart refuses images from other registries unless `{}` is true; the air-gap values file sets it",
            values_out::dotted(&s.path)
        ));
    }
    Ok(ValuesPlan { proven: true, overrides, unmovable, images })
}

fn literal(path: Vec<ValuesKey>, value: Value) -> ValuesOverride {
    ValuesOverride { path, value: OverrideValue::Literal { value } }
}

/// The overrides of the components' current choices, and the components whose overrides had to be dropped
/// (inside a list that holds a secret).
fn plan_overrides(
    components: &[Component],
    state: &[Option<usize>],
    uses_global: bool,
    switch: &Option<ValuesOverride>,
    scoped: &[ScopedValues<'_>],
) -> (Vec<ValuesOverride>, BTreeSet<usize>) {
    let mut out = Vec::new();
    if let Some(s) = switch {
        out.push(s.clone());
    }
    if uses_global {
        out.push(ValuesOverride { path: parse_dotted("global.imageRegistry"), value: OverrideValue::Destination });
    }
    let mut owner: BTreeMap<Vec<ValuesKey>, usize> = BTreeMap::new();
    for (c, comp) in components.iter().enumerate() {
        let Some(choice) = state[c].and_then(|at| comp.choices.get(at)) else { continue };
        for (path, value) in &choice.set {
            owner.insert(path.clone(), c);
            out.push(ValuesOverride { path: path.clone(), value: value.clone() });
        }
    }
    let (out, dropped_paths) = with_whole_lists(out, scoped);
    let dropped = dropped_paths.iter().filter_map(|p| owner.get(p).copied()).collect();
    (out, dropped)
}

/// Overrides inside a list are preceded by the whole list as the values have it, because helm replaces a list
/// whole: an override of one element alone would drop every other element and field. A list holding a value under
/// a secret-looking key is not copied (it would land in bundle.json): overrides inside it are dropped (returned),
/// and the check names their images as unmovable.
fn with_whole_lists(
    overrides: Vec<ValuesOverride>,
    scoped: &[ScopedValues<'_>],
) -> (Vec<ValuesOverride>, Vec<Vec<ValuesKey>>) {
    let mut out: Vec<ValuesOverride> = Vec::new();
    let mut dropped = Vec::new();
    let mut lists: BTreeMap<Vec<ValuesKey>, bool> = BTreeMap::new();
    for o in overrides {
        if let Some(at) = o.path.iter().position(|k| matches!(k, ValuesKey::Index(_))) {
            let list_path = o.path[..at].to_vec();
            let copied = *lists.entry(list_path.clone()).or_insert_with(|| match get_at_scoped(scoped, &list_path) {
                Some(list) if !holds_secret(list) => {
                    out.push(literal(list_path.clone(), list.clone()));
                    true
                }
                _ => false,
            });
            if !copied {
                dropped.push(o.path);
                continue;
            }
        }
        out.push(o);
    }
    // Whole lists first, so element overrides land on them whatever order they came in.
    out.sort_by_key(|o| !matches!(&o.value, OverrideValue::Literal { value } if value.is_sequence()));
    (out, dropped)
}

/// The effective value at a path from the top: looked up in the deepest chart scope the path enters, where
/// subchart defaults and the parent's values for it are merged as helm merges them.
fn get_at_scoped<'v>(scoped: &'v [ScopedValues<'_>], path: &[ValuesKey]) -> Option<&'v Value> {
    let scope = scoped
        .iter()
        .filter(|s| {
            s.path.len() <= path.len() && s.path.iter().zip(path).all(|(a, b)| matches!(b, ValuesKey::Key(k) if k == a))
        })
        .max_by_key(|s| s.path.len())?;
    get_at(&scope.values, &path[scope.path.len()..])
}

#[cfg(test)]
mod tests {
    use super::renderer::plan_of;
    use super::*;

    #[test]
    fn overrides_in_lists_carry_the_whole_list_unless_it_holds_a_secret() {
        let chart = Chart::with_values(
            "packs: [{name: a, repository: x/a, tag: '1'}, {name: b, repository: x/b, tag: '2'}]\n\
             sidecars: [{image: x/c:1, password: hunter2}]\n",
        );
        let scoped = values::effective(&chart, &Value::Mapping(Default::default()));
        let set = |p: &str| ValuesOverride { path: parse_dotted(p), value: OverrideValue::Registry };
        let (out, dropped) =
            with_whole_lists(vec![set("packs[1].registry"), set("sidecars[0].image"), set("global.x")], &scoped);
        let paths: Vec<String> = out.iter().map(|o| values_out::dotted(&o.path)).collect();
        assert_eq!(paths, ["packs", "packs[1].registry", "global.x"]);
        assert_eq!(dropped, vec![parse_dotted("sidecars[0].image")]);
        let values = values_out::values_for(&plan_of(&out), &sentinel());
        let packs = values.get("packs").and_then(Value::as_sequence).unwrap();
        assert_eq!(packs.len(), 2);
        assert_eq!(packs[0].get("name").and_then(Value::as_str), Some("a"), "the other element is intact");
        assert_eq!(packs[1].get("tag").and_then(Value::as_str), Some("2"), "the other fields are intact");
        assert_eq!(packs[1].get("registry").and_then(Value::as_str), Some(SENTINEL_REGISTRY));
        assert!(!serde_yaml_ng::to_string(&values).unwrap().contains("hunter2"));
    }
}
