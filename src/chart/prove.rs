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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
use crate::layout::{Around, OverrideValue, Unmovable, UnmovableReason, ValuesKey, ValuesOverride, ValuesPlan};
use crate::reference::ImageRef;

/// Checking rounds at most (each one render per pass); a component has a handful of choices at most.
const MAX_ROUNDS: usize = 6;
/// Choices tried per component at most.
const MAX_CHOICES: usize = 16;
const GLOBAL_MARKER: &str = "bundle-global.invalid";
const SENTINEL_REGISTRY: &str = "bundle-sentinel.invalid";
/// Two levels, so a template that splits the registry setting on `/` shows up.
const SENTINEL_PREFIX: &str = "bundle-sentinel/prefix";
/// A value's trace marker is glued to its front as one word (`bundletrace6zdcgm`, `bundletrace3zquay.io`), so the
/// value keeps its shape: a bare name stays bare (an operator still assembles it from its `repository`), a
/// registry stays a host.
const MARKER_FRONT: &str = "bundletrace";
const MARKER_BACK: &str = "z";

fn marker(i: usize) -> String {
    format!("{MARKER_FRONT}{i}{MARKER_BACK}")
}

/// A token of a trace render that holds a marker is an image the walk must report, fully qualified or not.
fn marked(token: &str) -> bool {
    token.contains(MARKER_FRONT) || token.contains(GLOBAL_MARKER)
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
    target: ImageRef,
    written: String,
    /// Where import pushes it, written the way the chart wrote it: the mapped name, then the chart's own tag
    /// or digest text (`nginx` stays without `:latest`).
    target_text: String,
}

/// A value the proof may change.
struct Leaf {
    path: Vec<ValuesKey>,
    /// What it holds now (empty for a map's name key the templates default).
    value: String,
    /// For a map's name key: whether the map has a `registry` key, which the whole-name form empties.
    map_registry: Option<bool>,
}

/// A piece of a rendered reference, as the trace shows it.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Text(String),
    Leaf(usize),
    /// `global.imageRegistry`.
    Global,
}

/// How one site reads in the trace.
#[derive(Debug, Clone, Default)]
struct Traced {
    segs: Vec<Seg>,
    /// Leaves whose marker shows but not their value after it (a template that transforms the value): they
    /// feed the site, but where their text ends is unknown.
    opaque: BTreeSet<usize>,
}

impl Traced {
    fn leaves(&self) -> impl Iterator<Item = usize> + '_ {
        self.segs
            .iter()
            .filter_map(|s| if let Seg::Leaf(l) = s { Some(*l) } else { None })
            .chain(self.opaque.iter().copied())
    }
}

/// One way to set a component's values: values paths and what each gets.
#[derive(Debug, Clone, PartialEq)]
struct Choice {
    set: Vec<(Vec<ValuesKey>, OverrideValue)>,
}

/// Images that share values, judged together.
struct Component {
    sites: Vec<SiteKey>,
    choices: Vec<Choice>,
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

/// The values that could feed an image: the candidates' marked keys (a map's name key even when empty, which
/// templates default) and every string that is a part of a rendered reference, one per path.
fn leaves_of(scoped_per_pass: &[Vec<ScopedValues<'_>>], rendered: &BTreeSet<String>) -> Vec<Leaf> {
    let mut leaves: Vec<Leaf> = Vec::new();
    let mut seen: BTreeSet<Vec<ValuesKey>> = BTreeSet::new();
    // The global setting is traced by a marker of its own.
    seen.insert(parse_dotted("global.imageRegistry"));
    for scoped in scoped_per_pass {
        let found: Vec<Candidate> =
            candidates::find(scoped, rendered).into_iter().chain(candidates::find_parts(scoped, rendered)).collect();
        for c in found {
            let (path, value) = c.marked();
            // Only values that can be part of an image are marked: a marker elsewhere (a storage type under
            // `imageChartStorage`) changes what the chart renders. A map's name key counts when it is empty (the
            // templates default it) or a part of a rendered reference between any path boundaries.
            let feeds = match &c.slot {
                Slot::Map { .. } => value.is_empty() || rendered.iter().any(|r| candidates::is_name_in(value, r)),
                Slot::String { .. } => rendered.iter().any(|r| candidates::is_part_of(value, r) || r == value),
            };
            if !feeds || !seen.insert(path.clone()) {
                continue;
            }
            let map_registry = match &c.slot {
                Slot::Map { registry_key, .. } => Some(*registry_key),
                Slot::String { .. } => None,
            };
            leaves.push(Leaf { path, value: value.to_string(), map_registry });
        }
    }
    leaves
}

/// A traced reference as text and the values in it.
fn segments(traced: &str, leaves: &[Leaf]) -> Traced {
    let mut t = Traced::default();
    let mut rest = traced;
    let mut text = String::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(GLOBAL_MARKER) {
            flush(&mut text, &mut t.segs);
            t.segs.push(Seg::Global);
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix(MARKER_FRONT)
            && let Some((n, tail)) = after.split_once(MARKER_BACK)
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && let Ok(i) = n.parse::<usize>()
            && i < leaves.len()
        {
            flush(&mut text, &mut t.segs);
            match tail.strip_prefix(leaves[i].value.as_str()) {
                Some(tail) => {
                    t.segs.push(Seg::Leaf(i));
                    rest = tail;
                }
                None => {
                    t.opaque.insert(i);
                    rest = tail;
                }
            }
            continue;
        }
        let c = rest.chars().next().expect("not empty");
        text.push(c);
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut text, &mut t.segs);
    t
}

fn flush(text: &mut String, segs: &mut Vec<Seg>) {
    if !text.is_empty() {
        segs.push(Seg::Text(std::mem::take(text)));
    }
}

/// For a site the trace did not show in place: each value that spells its front, in place of the trace.
fn spelled(written: &str, leaves: &[Leaf]) -> Traced {
    let mut t = Traced { segs: vec![Seg::Text(written.to_string())], opaque: BTreeSet::new() };
    for (i, leaf) in leaves.iter().enumerate() {
        if !leaf.value.is_empty()
            && let Some(after) = written.strip_prefix(leaf.value.as_str())
            && (after.is_empty() || after.starts_with(['/', ':', '@']))
        {
            t.segs = vec![Seg::Leaf(i)];
            if !after.is_empty() {
                t.segs.push(Seg::Text(after.to_string()));
            }
            break;
        }
    }
    t
}

/// Sites grouped by the values they share (a value feeding several images is judged on all of them), each
/// with the choices to try, in order.
fn components(
    sites: &BTreeMap<SiteKey, Site>,
    traced: &BTreeMap<SiteKey, Traced>,
    leaves: &[Leaf],
    uses_global: bool,
) -> Vec<Component> {
    // Union-find over leaves; a site joins the component of its leaves, or stands alone.
    let mut parent: Vec<usize> = (0..leaves.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for t in traced.values() {
        let ls: Vec<usize> = t.leaves().collect();
        for w in ls.windows(2) {
            let (a, b) = (root(&mut parent, w[0]), root(&mut parent, w[1]));
            parent[a] = b;
        }
    }
    let mut groups: BTreeMap<(usize, Option<SiteKey>), Vec<SiteKey>> = BTreeMap::new();
    for key in sites.keys() {
        let t = &traced[key];
        let group = match t.leaves().next() {
            Some(l) => (root(&mut parent, l), None),
            None => (usize::MAX, Some(key.clone())),
        };
        groups.entry(group).or_default().push(key.clone());
    }
    let global = if uses_global { format!("{SENTINEL_REGISTRY}/{SENTINEL_PREFIX}") } else { String::new() };
    groups
        .into_values()
        .map(|keys| {
            let solver = Solver { sites, traced, leaves, global: &global, keys: &keys };
            Component { choices: solver.choices(), sites: keys }
        })
        .collect()
}

/// The choices of one component.
struct Solver<'a> {
    sites: &'a BTreeMap<SiteKey, Site>,
    traced: &'a BTreeMap<SiteKey, Traced>,
    leaves: &'a [Leaf],
    /// What `global.imageRegistry` holds in the plan (empty when the plan does not set it).
    global: &'a str,
    keys: &'a [SiteKey],
}

/// A leaf's value in a choice being built: its text under the sentinel, and how it is written for any destination.
#[derive(Clone)]
struct Set {
    text: String,
    piece: Option<Around>,
    value: OverrideValue,
}

impl Solver<'_> {
    fn choices(&self) -> Vec<Choice> {
        let mut out: Vec<Choice> = Vec::new();
        let mut push = |c: Choice| {
            if !out.contains(&c) && out.len() < MAX_CHOICES {
                out.push(c);
            }
        };
        let none = BTreeMap::new();
        if self.all_land(&none) {
            push(Choice { set: vec![] });
            return out;
        }
        let path = |l: usize| self.leaves[l].path.clone();
        // One value: each leaf of the component, leaves feeding more images first.
        let mut singles: Vec<(usize, usize)> = Vec::new();
        for &l in &self.component_leaves() {
            let feeds = self.keys.iter().filter(|k| self.traced[*k].leaves().any(|x| x == l)).count();
            singles.push((usize::MAX - feeds, l));
        }
        singles.sort();
        for &(_, l) in &singles {
            if let Some(set) = self.derive(l, &none) {
                let mut values = BTreeMap::new();
                values.insert(l, set.clone());
                if self.all_land(&values) {
                    push(Choice { set: vec![(path(l), set.value)] });
                }
            }
        }
        // A registry and the value after it: `registry` = REGISTRY, the next value what follows it.
        for key in self.keys {
            let segs = &self.traced[key].segs;
            let in_order: Vec<usize> =
                segs.iter().filter_map(|s| if let Seg::Leaf(l) = s { Some(*l) } else { None }).collect();
            for (i, &first) in in_order.iter().enumerate() {
                for &second in &in_order[i + 1..] {
                    let mut values = BTreeMap::new();
                    values.insert(
                        first,
                        Set {
                            text: SENTINEL_REGISTRY.to_string(),
                            piece: Some(Around::Registry),
                            value: OverrideValue::Registry,
                        },
                    );
                    let Some(set) = self.derive(second, &values) else { continue };
                    values.insert(second, set.clone());
                    if self.all_land(&values) {
                        push(Choice { set: vec![(path(first), OverrideValue::Registry), (path(second), set.value)] });
                    }
                }
            }
        }
        // Checked by rendering only, for values the trace cannot spell (a map's name key the templates default
        // when empty, beside a `registry` that is null: traefik), or whose text the template transforms: a map's
        // `registry` and name key, its `registry` carrying the prefix, or the whole name in the name key with the
        // `registry` emptied; a string's whole name or, under the global setting, its path.
        for key in self.keys {
            let site = &self.sites[key];
            for l in self.traced[key].leaves() {
                let leaf = &self.leaves[l];
                let image = site.written.clone();
                match leaf.map_registry {
                    Some(has_registry) => {
                        let mut registry = path(l);
                        registry.pop();
                        registry.push(ValuesKey::Key("registry".into()));
                        if has_registry {
                            push(Choice {
                                set: vec![
                                    (registry.clone(), OverrideValue::Registry),
                                    (path(l), OverrideValue::Repository { image: image.clone() }),
                                ],
                            });
                            push(Choice { set: vec![(registry.clone(), OverrideValue::Destination)] });
                        }
                        let mut whole = vec![(path(l), OverrideValue::Name { image, suffix: String::new() })];
                        if has_registry {
                            whole.push((registry, OverrideValue::Literal { value: Value::String(String::new()) }));
                        }
                        push(Choice { set: whole });
                    }
                    None => {
                        let suffix = written_suffix(&leaf.value).to_string();
                        if !self.global.is_empty() {
                            push(Choice {
                                set: vec![(
                                    path(l),
                                    OverrideValue::Path { image: image.clone(), suffix: suffix.clone() },
                                )],
                            });
                        }
                        push(Choice { set: vec![(path(l), OverrideValue::Name { image, suffix })] });
                    }
                }
            }
        }
        out
    }

    /// The leaves the component's sites show, in order of first appearance.
    fn component_leaves(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for key in self.keys {
            for l in self.traced[key].leaves() {
                if !out.contains(&l) {
                    out.push(l);
                }
            }
        }
        out
    }

    /// The one value of `l` that lands every site it feeds, given the values already set; None when the sites
    /// disagree, or one of them cannot be read (the value twice in it, or next to a value whose text is unknown).
    fn derive(&self, l: usize, set: &BTreeMap<usize, Set>) -> Option<Set> {
        let mut found: Option<Set> = None;
        for key in self.keys {
            let t = &self.traced[key];
            if t.opaque.contains(&l) {
                return None;
            }
            let at: Vec<usize> =
                t.segs.iter().enumerate().filter(|(_, s)| **s == Seg::Leaf(l)).map(|(i, _)| i).collect();
            match at.as_slice() {
                [] => continue,
                [i] => {
                    let (before, before_pieces) = self.spell(&t.segs[..*i], set)?;
                    let (after, after_pieces) = self.spell(&t.segs[i + 1..], set)?;
                    let site = &self.sites[key];
                    let text = site.target_text.strip_prefix(&before)?.strip_suffix(&after)?;
                    if text.is_empty() {
                        return None;
                    }
                    match &found {
                        Some(f) if f.text != text => return None,
                        Some(_) => {}
                        None => {
                            found = Some(Set {
                                text: text.to_string(),
                                piece: None,
                                value: OverrideValue::Between {
                                    image: site.written.clone(),
                                    before: before_pieces,
                                    after: after_pieces,
                                },
                            })
                        }
                    }
                }
                _ => return None,
            }
        }
        found
    }

    /// The text segments make under the sentinel, and as pieces for any destination. None when a value's
    /// text is unknown there: a value that stays empty (templates default it) or one the trace could not read.
    fn spell(&self, segs: &[Seg], set: &BTreeMap<usize, Set>) -> Option<(String, Vec<Around>)> {
        let mut text = String::new();
        let mut pieces: Vec<Around> = Vec::new();
        let push_text = |pieces: &mut Vec<Around>, s: &str| match pieces.last_mut() {
            Some(Around::Text(t)) => t.push_str(s),
            _ => pieces.push(Around::Text(s.to_string())),
        };
        for s in segs {
            match s {
                Seg::Text(x) => {
                    text.push_str(x);
                    push_text(&mut pieces, x);
                }
                Seg::Global => {
                    if self.global.is_empty() {
                        return None;
                    }
                    text.push_str(self.global);
                    pieces.push(Around::Destination);
                }
                Seg::Leaf(j) => match set.get(j) {
                    Some(v) => {
                        text.push_str(&v.text);
                        match &v.piece {
                            Some(p) => pieces.push(p.clone()),
                            None => push_text(&mut pieces, &v.text),
                        }
                    }
                    None if self.leaves[*j].value.is_empty() => return None,
                    None => {
                        text.push_str(&self.leaves[*j].value);
                        push_text(&mut pieces, &self.leaves[*j].value);
                    }
                },
            }
        }
        if pieces.iter().all(|p| matches!(p, Around::Text(t) if t.is_empty())) {
            pieces.clear();
        }
        Some((text, pieces))
    }

    /// Whether, by the trace, every site of the component reads where import pushes it with these values.
    fn all_land(&self, set: &BTreeMap<usize, Set>) -> bool {
        self.keys.iter().all(|key| {
            let t = &self.traced[key];
            t.opaque.is_empty()
                && self
                    .spell(&t.segs, set)
                    .and_then(|(text, _)| ImageRef::parse(&text).ok())
                    .is_some_and(|r| r == self.sites[key].target)
        })
    }
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

/// Renders for the proof the way a user installs: the user's values files, then their `--set` and the pass's
/// values as one more file, then the probe's file last.
struct Renderer<'a> {
    input: &'a ProbeInput<'a>,
    /// Per pass: the values files before the probe's.
    files: Vec<Vec<PathBuf>>,
    _set_files: Vec<tempfile::NamedTempFile>,
}

impl<'a> Renderer<'a> {
    fn new(input: &'a ProbeInput<'a>) -> Result<Renderer<'a>, String> {
        let mut files = Vec::new();
        let mut set_files = Vec::new();
        let user_set =
            UserValues { files: vec![], set: input.user.set.clone(), set_string: input.user.set_string.clone() };
        for pass in input.passes {
            let values = values::overrides(&user_set, pass).map_err(|e| e.to_string())?;
            let mut list = input.render.value_files.clone();
            if values.as_mapping().is_some_and(|m| !m.is_empty()) {
                let file = temp_values(input.tmp_dir, &values)?;
                list.push(file.path().to_path_buf());
                set_files.push(file);
            }
            files.push(list);
        }
        Ok(Renderer { input, files, _set_files: set_files })
    }

    fn render(&self, pass: usize, values: &Value) -> Result<String, String> {
        let file = temp_values(self.input.tmp_dir, values)?;
        let opts = RenderOptions {
            value_files: self.files[pass].clone(),
            set: vec![],
            set_string: vec![],
            kube_version: self.input.render.kube_version.clone(),
        };
        self.input
            .helm
            .template(self.input.package, &opts, &[], Extra { set: &[], values_file: Some(file.path()) })
            .map_err(|e| crate::error_text::chain_line(&e))
    }

    /// The trace render of one pass; a refusal is tried once more with the chart's switch for foreign images.
    fn render_with_switch(
        &self,
        pass: usize,
        trace: &[ValuesOverride],
        switch: &mut Option<ValuesOverride>,
    ) -> Result<String, String> {
        let mut overrides = trace.to_vec();
        if let Some(s) = switch.as_ref() {
            overrides.insert(0, s.clone());
        }
        let values = |o: &[ValuesOverride]| values_out::values_for(&plan_of(o), &sentinel());
        match self.render(pass, &values(&overrides)) {
            Ok(text) => Ok(text),
            Err(first) if switch.is_none() => {
                let s = literal(parse_dotted("global.security.allowInsecureImages"), Value::Bool(true));
                overrides.insert(0, s.clone());
                let text = self.render(pass, &values(&overrides)).map_err(|_| first)?;
                *switch = Some(s);
                Ok(text)
            }
            Err(e) => Err(e),
        }
    }

    /// Render every pass with `overrides` for `dest`: the sites that landed where import pushes them.
    fn landed(
        &self,
        overrides: &[ValuesOverride],
        dest: &Destination,
        sites: &BTreeMap<SiteKey, Site>,
        known: &BTreeSet<String>,
    ) -> Result<BTreeSet<SiteKey>, String> {
        let values = values_out::values_for(&plan_of(overrides), dest);
        let mut out = BTreeSet::new();
        for pass in 0..self.input.passes.len() {
            let text = self.render(pass, &values)?;
            let found = discover::by_document(&text, "", known).map_err(|e| e.to_string())?;
            let aligned = align(&self.input.plain[pass], &found.documents);
            for (place, reference) in located(&found.documents, Some(&aligned)) {
                let key = (pass, place);
                if let Some(site) = sites.get(&key)
                    && ImageRef::parse(&reference).is_ok_and(|r| r == site.target)
                {
                    out.insert(key);
                }
            }
        }
        Ok(out)
    }
}

fn plan_of(overrides: &[ValuesOverride]) -> ValuesPlan {
    ValuesPlan { proven: false, overrides: overrides.to_vec(), unmovable: vec![], images: vec![] }
}

fn temp_values(dir: &Path, values: &Value) -> Result<tempfile::NamedTempFile, String> {
    let mut file = tempfile::Builder::new()
        .prefix("bundle-probe-")
        .suffix(".yaml")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a temporary values file in {}: {e}", dir.display()))?;
    let text = serde_yaml_ng::to_string(values).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("cannot write a temporary values file: {e}"))?;
    Ok(file)
}

/// Rendered images by where they are → the reference as written. `aligned` maps each document to the plain
/// render's (`align`); without it the documents are the plain render's own.
fn located(documents: &[Vec<Finding>], aligned: Option<&[Option<usize>]>) -> BTreeMap<Place, String> {
    let mut out = BTreeMap::new();
    for (d, findings) in documents.iter().enumerate() {
        let Some(d) = aligned.map_or(Some(d), |a| a.get(d).copied().flatten()) else { continue };
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

/// A document's `Kind/name`, from its findings (documents without images need no matching).
fn label(findings: &[Finding]) -> Option<&str> {
    let location = &findings.first()?.location;
    Some(location.split(" -> ").next().unwrap_or(location).split(' ').next().unwrap_or(""))
}

/// For each document of another render of the chart, the plain render's document it is: the one with the same
/// `Kind/name`, else the next one of the same kind not matched yet (a Job named after the time). By index it
/// would not do: a value the probe marks can drop a document (a volume claim for another storage type), and
/// every document after it would be read as its neighbour.
fn align(plain: &[Vec<Finding>], other: &[Vec<Finding>]) -> Vec<Option<usize>> {
    let plain_labels: Vec<Option<&str>> = plain.iter().map(|f| label(f)).collect();
    let other_labels: Vec<Option<&str>> = other.iter().map(|f| label(f)).collect();
    let mut taken = vec![false; plain.len()];
    let mut out = vec![None; other.len()];
    let kind = |l: &str| l.split('/').next().unwrap_or("").to_string();
    for (i, l) in other_labels.iter().enumerate() {
        let Some(l) = l else { continue };
        if let Some(j) = (0..plain.len()).find(|j| !taken[*j] && plain_labels[*j] == Some(*l)) {
            taken[j] = true;
            out[i] = Some(j);
        }
    }
    for (i, l) in other_labels.iter().enumerate() {
        let Some(l) = l else { continue };
        if out[i].is_some() {
            continue;
        }
        if let Some(j) = (0..plain.len()).find(|j| !taken[*j] && plain_labels[*j].is_some_and(|p| kind(p) == kind(l))) {
            taken[j] = true;
            out[i] = Some(j);
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

    fn leaf(path: &str, value: &str) -> Leaf {
        Leaf { path: parse_dotted(path), value: value.into(), map_registry: None }
    }

    #[test]
    fn traces_read_as_text_and_values() {
        let leaves = [leaf("a.registry", "docker.io"), leaf("a.repository", "bitnami/x"), leaf("b", "")];
        let t = segments(&format!("{}docker.io/{}bitnami/x:1", marker(0), marker(1)), &leaves);
        assert_eq!(marker(12), "bundletrace12z");
        assert_eq!(t.segs, [Seg::Leaf(0), Seg::Text("/".into()), Seg::Leaf(1), Seg::Text(":1".into())]);
        let g = segments(&format!("{GLOBAL_MARKER}/{}:2", marker(2)), &leaves);
        assert_eq!(g.segs, [Seg::Global, Seg::Text("/".into()), Seg::Leaf(2), Seg::Text(":2".into())]);
        // A value the template changed (upper-cased, trimmed) feeds the site, but its end is unknown.
        let o = segments(&format!("{}DOCKER.IO/x:1", marker(0)), &leaves);
        assert!(o.opaque.contains(&0));
    }

    /// The one rule, on the shapes the issue names: each is the value that reads right between its neighbours.
    #[test]
    fn one_rule_moves_registries_organisations_and_shared_values() {
        let dest = sentinel();
        let site = |w: &str| {
            let target = dest.map(&ImageRef::parse(w).unwrap());
            Site { target_text: format!("{}{}", target.name(), written_suffix(w)), target, written: w.into() }
        };
        // dapr: `registry: ghcr.io/dapr` feeds every image; one value moves them all.
        // An operator and its custom resource share `registry`: `HOST/PREFIX` moves both, a repository does not.
        let leaves = [
            leaf("global.registry", "ghcr.io/dapr"),
            leaf("op.registry", "quay.io"),
            leaf("op.repository", "org/operator"),
        ];
        let mut sites = BTreeMap::new();
        let mut traced = BTreeMap::new();
        let key = |n: usize| (0usize, (n, String::new(), 0usize));
        for (n, (w, segs)) in [
            ("ghcr.io/dapr/operator:1.18", vec![Seg::Leaf(0), Seg::Text("/operator:1.18".into())]),
            ("ghcr.io/dapr/daprd:1.18", vec![Seg::Leaf(0), Seg::Text("/daprd:1.18".into())]),
            ("quay.io/org/operator:2", vec![Seg::Leaf(1), Seg::Text("/".into()), Seg::Leaf(2), Seg::Text(":2".into())]),
            ("quay.io/org/agent:3", vec![Seg::Leaf(1), Seg::Text("/org/agent:3".into())]),
        ]
        .into_iter()
        .enumerate()
        {
            sites.insert(key(n), site(w));
            traced.insert(key(n), Traced { segs, opaque: BTreeSet::new() });
        }
        let comps = components(&sites, &traced, &leaves, false);
        assert_eq!(comps.len(), 2);
        let text = |c: &Choice| {
            let plan = ValuesPlan {
                overrides: c.set.iter().map(|(p, v)| ValuesOverride { path: p.clone(), value: v.clone() }).collect(),
                ..Default::default()
            };
            serde_yaml_ng::to_string(&values_out::values_for(&plan, &dest)).unwrap()
        };
        let dapr = comps.iter().find(|c| c.sites.contains(&key(0))).unwrap();
        assert_eq!(
            text(&dapr.choices[0]),
            "global:\n  registry: bundle-sentinel.invalid/bundle-sentinel/prefix/dapr\n"
        );
        let op = comps.iter().find(|c| c.sites.contains(&key(2))).unwrap();
        assert_eq!(text(&op.choices[0]), "op:\n  registry: bundle-sentinel.invalid/bundle-sentinel/prefix\n");
        // For another destination the same plan reads differently, through the same mapping import uses.
        let flat = Destination::parse("reg.local:5000").unwrap().with_mapping(Mapping::Flatten);
        let plan = ValuesPlan {
            overrides: vec![ValuesOverride { path: leaves[0].path.clone(), value: dapr.choices[0].set[0].1.clone() }],
            ..Default::default()
        };
        assert_eq!(
            values_out::values_for(&plan, &flat).get("global").and_then(|g| g.get("registry")).and_then(Value::as_str),
            Some("reg.local:5000")
        );
    }
}
