//! Proving the air-gap values file before it is written.
//!
//! Charts name their images in too many ways for any one rule (`global.imageRegistry` that some subcharts honour
//! and others do not, `registry` + `repository` maps whose templates also prepend the global, separate `tag`
//! keys, `imageRegistry` + `imageNamespace` + `name`, lists of image maps). So export asks helm:
//!
//! 1. **Trace.** One render per pass with every candidate values slot (`candidates`) marked with a unique
//!    marker and `global.imageRegistry` set to a marker of its own: each image the chart renders now says
//!    which values slots feed it and whether it honours the global.
//! 2. **Correct.** The plan (`ValuesPlan`) is rendered for a sentinel destination through the same code import
//!    uses (`values_out`), and each rendered image is compared with where import will push it. Images that
//!    land wrong try the next form for their slots (registry + repository, the registry carrying the prefix,
//!    the whole name in the repository, or nothing when the global alone moves them), a bounded number of
//!    rounds.
//! 3. **Check.** The final plan is rendered once more; whatever still does not land is named as unmovable.
//!
//! A render that fails (Bitnami's image check refuses any registry but its own) is tried again with
//! `global.security.allowInsecureImages=true`, which the plan then carries; when the probe cannot render at all,
//! export goes on with an unproven plan and a warning, never a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_yaml_ng::Value;

use super::Chart;
use super::ChartError;
use super::candidates::{self, Candidate, Slot};
use super::discover::{self, Finding, How};
use super::redact::holds_secret;
use super::render::{Extra, Helm, RenderOptions};
use super::values::get_at;
use super::values::{self, ScopedValues, UserValues};
use super::values_out::{self, parse_dotted, written_suffix};
use crate::destination::{Destination, Mapping};
use crate::layout::{OverrideValue, ValuesKey, ValuesOverride, ValuesPlan};
use crate::reference::ImageRef;

/// Correction rounds at most (each one render per pass); every image has at most a handful of forms to try.
const MAX_ROUNDS: usize = 6;
const GLOBAL_MARKER: &str = "bundle-global.invalid";
const SENTINEL_REGISTRY: &str = "bundle-sentinel.invalid";
/// Two levels, so a template that splits the registry setting on `/` shows up.
const SENTINEL_PREFIX: &str = "bundle-sentinel/prefix";

fn marker(i: usize) -> String {
    format!("bundle-trace-{i}.invalid/")
}

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
    source: ImageRef,
    target: ImageRef,
    written: String,
}

/// A rendered image and the values that move it: every site with the same source and the same feeding slots.
struct Group {
    sites: Vec<SiteKey>,
    source: ImageRef,
    options: Vec<Option<(usize, Form)>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Form {
    /// `registry` = the destination registry, the repository key = `PREFIX/path`.
    RegistryAndRepository,
    /// `registry` = `REGISTRY/PREFIX`, repository left as the chart has it.
    RegistryCarriesPrefix,
    /// The repository key holds the whole name (`registry`, if the map has one, emptied).
    WholeName,
    /// A string: the whole name, then the tag or digest the string itself carried.
    String,
    /// The repository key (or the string) holds only the path: the template puts the global setting in front.
    UnderGlobal,
}

fn run(input: &ProbeInput<'_>, warnings: &mut Vec<String>) -> Result<ValuesPlan, String> {
    let dest = sentinel();
    let scoped_per_pass: Vec<Vec<ScopedValues<'_>>> = input
        .passes
        .iter()
        .map(|p| values::overrides(input.user, p).map(|o| values::effective(input.chart, &o)))
        .collect::<Result<_, ChartError>>()
        .map_err(|e| e.to_string())?;

    // Sites: every image the plain renders show, by where it is.
    let mut sites: BTreeMap<SiteKey, Site> = BTreeMap::new();
    for (pass, findings) in input.plain.iter().enumerate() {
        for (place, written) in located(findings) {
            let Ok(source) = ImageRef::parse(&written) else { continue };
            let target = dest.map(&source);
            sites.insert((pass, place), Site { source, target, written });
        }
    }
    if sites.is_empty() {
        return Ok(ValuesPlan { proven: true, overrides: vec![], unmovable: vec![] });
    }

    // 1. Trace: candidates of every pass, one index space; one marked render per pass. The plain renders'
    // references stay known in every probe render, so each render finds the same places.
    let rendered: BTreeSet<String> = sites.values().map(|s| s.written.clone()).collect();
    let mut cands: Vec<Candidate> = Vec::new();
    for scoped in &scoped_per_pass {
        for c in candidates::find(scoped, &rendered) {
            if !cands.iter().any(|x| x.path == c.path) {
                cands.push(c);
            }
        }
    }
    let mut switch: Option<ValuesOverride> = None;
    let mut feeds: BTreeMap<SiteKey, (Vec<usize>, bool)> = BTreeMap::new();
    for (pass, scoped) in scoped_per_pass.iter().enumerate() {
        let mut trace = Vec::new();
        trace.push(literal(parse_dotted("global.imageRegistry"), Value::String(GLOBAL_MARKER.into())));
        for (i, c) in cands.iter().enumerate() {
            let (path, written) = c.marked();
            if get_at_scoped(scoped, &path).is_some() {
                trace.push(literal(path, Value::String(format!("{}{written}", marker(i)))));
            }
        }
        let trace = with_whole_lists(trace, scoped);
        let text = render_with_switch(input, pass, &trace, &mut switch)?;
        let found = discover::by_document(&text, "", &rendered).map_err(|e| e.to_string())?;
        let traced = located(&found);
        for (key, site) in sites.range((pass, (0, String::new(), 0))..(pass + 1, (0, String::new(), 0))) {
            let seen = traced.get(&key.1).cloned().unwrap_or_default();
            let mut f: Vec<usize> = (0..cands.len()).filter(|i| seen.contains(&marker(*i))).collect();
            if f.is_empty() && !seen.contains(GLOBAL_MARKER) {
                // The site did not survive the marked render in place: fall back to strings equal to its image.
                f = (0..cands.len())
                    .filter(|i| matches!(&cands[*i].slot, Slot::String { written } if *written == site.written))
                    .collect();
            }
            feeds.insert(key.clone(), (f, seen.contains(&format!("{GLOBAL_MARKER}/"))));
        }
    }

    // Groups and the forms each may take.
    let mut by_feed: BTreeMap<(Vec<usize>, bool, String), Vec<SiteKey>> = BTreeMap::new();
    for (key, (f, global)) in &feeds {
        by_feed.entry((f.clone(), *global, sites[key].source.name())).or_default().push(key.clone());
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut unmovable: BTreeSet<String> = BTreeSet::new();
    for ((f, global, _), keys) in by_feed {
        let source = sites[&keys[0]].source.clone();
        let mut options: Vec<Option<(usize, Form)>> = Vec::new();
        if global {
            options.push(None);
        }
        for &c in &f {
            if global {
                options.push(Some((c, Form::UnderGlobal)));
            }
            options.extend(forms(&cands[c]).into_iter().map(|form| Some((c, form))));
        }
        if options.is_empty() {
            unmovable.extend(keys.iter().map(|k| sites[k].written.clone()));
            continue;
        }
        groups.push(Group { sites: keys, source, options });
    }
    let uses_global = groups.iter().any(|g| g.options.first() == Some(&None));

    // 2. Correct: each group's option, advanced while its images land wrong.
    let mut state = vec![0usize; groups.len()];
    let mut settled = vec![false; groups.len()];
    for _ in 0..MAX_ROUNDS {
        let overrides = plan_overrides(&groups, &state, &settled, &cands, uses_global, &switch, &scoped_per_pass[0]);
        let landed = render_all(input, &overrides, &dest, &sites, &groups, &rendered)?;
        let mut advanced = false;
        for (g, ok) in landed.iter().enumerate() {
            if *ok || settled[g] {
                continue;
            }
            if state[g] + 1 < groups[g].options.len() {
                state[g] += 1;
                advanced = true;
            } else {
                settled[g] = true;
            }
        }
        if landed.iter().all(|ok| *ok) || !advanced {
            break;
        }
    }

    // 3. Check: the plan as it will be recorded (groups that never landed leave their values alone).
    let overrides = plan_overrides(&groups, &state, &settled, &cands, uses_global, &switch, &scoped_per_pass[0]);
    let landed = render_all(input, &overrides, &dest, &sites, &groups, &rendered)?;
    for (g, ok) in landed.iter().enumerate() {
        if !ok {
            unmovable.extend(groups[g].sites.iter().map(|k| sites[k].written.clone()));
        }
    }
    if let Some(s) = &switch {
        warnings.push(format!(
            "the chart refuses images from other registries unless `{}` is true; the air-gap values file sets it",
            values_out::dotted(&s.path)
        ));
    }
    Ok(ValuesPlan { proven: true, overrides, unmovable: unmovable.into_iter().collect() })
}

fn literal(path: Vec<ValuesKey>, value: Value) -> ValuesOverride {
    ValuesOverride { path, value: OverrideValue::Literal { value } }
}

/// The forms a candidate slot may take, most specific first.
fn forms(c: &Candidate) -> Vec<Form> {
    match &c.slot {
        Slot::Map { registry_key: true, .. } => {
            vec![Form::RegistryAndRepository, Form::RegistryCarriesPrefix, Form::WholeName]
        }
        Slot::Map { registry_key: false, .. } => vec![Form::WholeName, Form::RegistryAndRepository],
        Slot::String { .. } => vec![Form::String],
    }
}

/// What one form sets for `source` in candidate `c`.
fn assignments(c: &Candidate, form: Form, source: &ImageRef) -> Vec<ValuesOverride> {
    let image = source.to_string();
    let repository_key = match &c.slot {
        Slot::Map { repository_key: true, .. } => "repository".to_string(),
        Slot::Map { marker_key, .. } => marker_key.clone(),
        Slot::String { .. } => String::new(),
    };
    let set = |path: Vec<ValuesKey>, value: OverrideValue| ValuesOverride { path, value };
    match form {
        Form::RegistryAndRepository => vec![
            set(c.key("registry"), OverrideValue::Registry),
            set(c.key(&repository_key), OverrideValue::Repository { image }),
        ],
        Form::RegistryCarriesPrefix => vec![set(c.key("registry"), OverrideValue::Destination)],
        Form::WholeName => {
            let mut v = vec![set(c.key(&repository_key), OverrideValue::Name { image, suffix: String::new() })];
            if matches!(c.slot, Slot::Map { registry_key: true, .. }) {
                v.push(literal(c.key("registry"), Value::String(String::new())));
            }
            v
        }
        Form::String => {
            let Slot::String { written } = &c.slot else { return vec![] };
            vec![set(c.path.clone(), OverrideValue::Name { image, suffix: written_suffix(written).to_string() })]
        }
        Form::UnderGlobal => match &c.slot {
            Slot::String { written } => {
                vec![set(c.path.clone(), OverrideValue::Path { image, suffix: written_suffix(written).to_string() })]
            }
            Slot::Map { .. } => vec![set(c.key(&repository_key), OverrideValue::Path { image, suffix: String::new() })],
        },
    }
}

/// The overrides of the groups' current options; groups that ran out of options leave their values alone.
fn plan_overrides(
    groups: &[Group],
    state: &[usize],
    settled: &[bool],
    cands: &[Candidate],
    uses_global: bool,
    switch: &Option<ValuesOverride>,
    scoped: &[ScopedValues<'_>],
) -> Vec<ValuesOverride> {
    let mut out = Vec::new();
    if let Some(s) = switch {
        out.push(s.clone());
    }
    if uses_global {
        out.push(ValuesOverride { path: parse_dotted("global.imageRegistry"), value: OverrideValue::Destination });
    }
    let mut claimed: BTreeSet<usize> = BTreeSet::new();
    for (g, group) in groups.iter().enumerate() {
        if settled[g] {
            continue;
        }
        if let Some((c, form)) = group.options[state[g]] {
            // The first group to use a slot decides its form; a second group on the same slot shares it.
            if claimed.insert(c) {
                out.extend(assignments(&cands[c], form, &group.source));
            }
        }
    }
    with_whole_lists(out, scoped)
}

/// Overrides inside a list are preceded by the whole list as the values have it, because helm replaces a list
/// whole: an override of one element alone would drop every other element and field. A list holding a value under
/// a secret-looking key is not copied (it would land in bundle.json): overrides inside it are dropped, and the
/// check names its images as unmovable.
fn with_whole_lists(overrides: Vec<ValuesOverride>, scoped: &[ScopedValues<'_>]) -> Vec<ValuesOverride> {
    let mut out: Vec<ValuesOverride> = Vec::new();
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
                continue;
            }
        }
        out.push(o);
    }
    // Whole lists first, so element overrides land on them whatever order they came in.
    out.sort_by_key(|o| !matches!(&o.value, OverrideValue::Literal { value } if value.is_sequence()));
    out
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

/// Render every pass with `overrides` for `dest`; for each group, whether all its images landed.
fn render_all(
    input: &ProbeInput<'_>,
    overrides: &[ValuesOverride],
    dest: &Destination,
    sites: &BTreeMap<SiteKey, Site>,
    groups: &[Group],
    known: &BTreeSet<String>,
) -> Result<Vec<bool>, String> {
    let plan = ValuesPlan { proven: false, overrides: overrides.to_vec(), unmovable: vec![] };
    let values = values_out::values_for(&plan, dest);
    let mut seen: BTreeMap<SiteKey, String> = BTreeMap::new();
    for pass in 0..input.passes.len() {
        let text = render(input, pass, &values)?;
        let found = discover::by_document(&text, "", known).map_err(|e| e.to_string())?;
        for (place, reference) in located(&found) {
            seen.insert((pass, place), reference);
        }
    }
    let landed = |k: &SiteKey| seen.get(k).and_then(|r| ImageRef::parse(r).ok()).is_some_and(|r| r == sites[k].target);
    Ok(groups.iter().map(|g| g.sites.iter().all(landed)).collect())
}

/// The trace render of one pass; a refusal is tried once more with the chart's switch for foreign images.
fn render_with_switch(
    input: &ProbeInput<'_>,
    pass: usize,
    trace: &[ValuesOverride],
    switch: &mut Option<ValuesOverride>,
) -> Result<String, String> {
    let mut overrides = trace.to_vec();
    if let Some(s) = switch.as_ref() {
        overrides.insert(0, s.clone());
    }
    let values = |o: &[ValuesOverride]| {
        values_out::values_for(&ValuesPlan { proven: false, overrides: o.to_vec(), unmovable: vec![] }, &sentinel())
    };
    match render(input, pass, &values(&overrides)) {
        Ok(text) => Ok(text),
        Err(first) if switch.is_none() => {
            let s = literal(parse_dotted("global.security.allowInsecureImages"), Value::Bool(true));
            overrides.insert(0, s.clone());
            let text = render(input, pass, &values(&overrides)).map_err(|_| first)?;
            *switch = Some(s);
            Ok(text)
        }
        Err(e) => Err(e),
    }
}

fn render(input: &ProbeInput<'_>, pass: usize, values: &Value) -> Result<String, String> {
    let mut file = tempfile::Builder::new()
        .prefix("bundle-probe-")
        .suffix(".yaml")
        .tempfile_in(input.tmp_dir)
        .map_err(|e| format!("cannot create a temporary values file in {}: {e}", input.tmp_dir.display()))?;
    let text = serde_yaml_ng::to_string(values).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("cannot write a temporary values file: {e}"))?;
    input
        .helm
        .template(input.package, input.render, &input.passes[pass], Extra { set: &[], values_file: Some(file.path()) })
        .map_err(|e| crate::error_text::chain_line(&e))
}

/// Rendered images by where they are → the reference as written.
fn located(documents: &[Vec<Finding>]) -> BTreeMap<Place, String> {
    let mut out = BTreeMap::new();
    for (d, findings) in documents.iter().enumerate() {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for f in findings.iter().filter(|f| matches!(f.how, How::ImageKey | How::Args | How::Env | How::Configmap)) {
            let path = without_names(&f.location);
            let n = count.entry(path.clone()).or_default();
            out.insert((d, path, *n), f.reference.clone());
            *n += 1;
        }
    }
    out
}

/// `Kind/name key.path -> Kind/name key.path` (embedded documents) without the names.
fn without_names(location: &str) -> String {
    location
        .split(" -> ")
        .map(|part| match part.split_once(' ') {
            Some((label, path)) => format!("{} {path}", label.split('/').next().unwrap_or("")),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_in_lists_carry_the_whole_list_unless_it_holds_a_secret() {
        let chart = Chart::with_values(
            "packs: [{name: a, repository: x/a, tag: '1'}, {name: b, repository: x/b, tag: '2'}]\n\
             sidecars: [{image: x/c:1, password: hunter2}]\n",
        );
        let scoped = values::effective(&chart, &Value::Mapping(Default::default()));
        let set = |p: &str| ValuesOverride { path: parse_dotted(p), value: OverrideValue::Registry };
        let out = with_whole_lists(vec![set("packs[1].registry"), set("sidecars[0].image"), set("global.x")], &scoped);
        let paths: Vec<String> = out.iter().map(|o| values_out::dotted(&o.path)).collect();
        assert_eq!(paths, ["packs", "packs[1].registry", "global.x"]);
        let values =
            values_out::values_for(&ValuesPlan { proven: true, overrides: out, unmovable: vec![] }, &sentinel());
        let packs = values.get("packs").and_then(Value::as_sequence).unwrap();
        assert_eq!(packs.len(), 2);
        assert_eq!(packs[0].get("name").and_then(Value::as_str), Some("a"), "the other element is intact");
        assert_eq!(packs[1].get("tag").and_then(Value::as_str), Some("2"), "the other fields are intact");
        assert_eq!(packs[1].get("registry").and_then(Value::as_str), Some(SENTINEL_REGISTRY));
        assert!(!serde_yaml_ng::to_string(&values).unwrap().contains("hunter2"));
    }

    #[test]
    fn places_ignore_names() {
        assert_eq!(
            without_names("Job/x-30t0939 spec.template.spec.containers[0].image"),
            "Job spec.template.spec.containers[0].image"
        );
        assert_eq!(
            without_names("ConfigMap/c data.a -> Pod/p spec.containers[0].image"),
            "ConfigMap data.a -> Pod spec.containers[0].image"
        );
    }
}
