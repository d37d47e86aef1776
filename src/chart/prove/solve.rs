//! Solving: the values that land every image of a group where import pushes it, by the one rule (a value becomes
//! what lies between the same text in the image's destination reference), fewest changed keys first; then the
//! forms the trace cannot spell, checked by rendering only.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::super::values_out::written_suffix;
use super::trace::{Leaf, Seg, Traced};
use super::{MAX_CHOICES, SENTINEL_PREFIX, SENTINEL_REGISTRY, Site, SiteKey};
use crate::oci::layout::{Around, OverrideValue, ValuesKey};
use crate::oci::reference::ImageRef;

/// One way to set a component's values: values paths and what each gets.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Choice {
    pub set: Vec<(Vec<ValuesKey>, OverrideValue)>,
}

/// Images that share values, judged together.
pub(super) struct Component {
    pub sites: Vec<SiteKey>,
    pub choices: Vec<Choice>,
}

/// Sites grouped by the values they share (a value feeding several images is judged on all of them), each
/// with the choices to try, in order.
pub(super) fn components(
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

#[cfg(test)]
mod tests {
    use super::super::super::values_out;
    use super::super::sentinel;
    use super::*;
    use crate::oci::destination::{Destination, Mapping};
    use crate::oci::layout::{ValuesOverride, ValuesPlan};
    use std::collections::BTreeSet;

    fn leaf(path: &str, value: &str) -> Leaf {
        Leaf { path: super::super::super::values_out::parse_dotted(path), value: value.into(), map_registry: None }
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
