//! The trace: which values feed each rendered image, and where in it they sit. Each value that could feed one
//! gets a marker glued to its front; the marked render shows every image as text and values, in order.
//! Renders are matched document by document, by `Kind/name`.

use std::collections::{BTreeMap, BTreeSet};

use super::super::candidates::{self, Candidate, Slot};
use super::super::discover::{Finding, How};
use super::super::values::ScopedValues;
use super::super::values_out::parse_dotted;
use super::{GLOBAL_MARKER, Place};
use crate::oci::layout::ValuesKey;

/// A value's trace marker is glued to its front as one word (`bundletrace6zdcgm`, `bundletrace3zquay.io`), so the
/// value keeps its shape: a bare name stays bare (an operator still assembles it from its `repository`), a
/// registry stays a host.
pub(super) const MARKER_FRONT: &str = "bundletrace";
const MARKER_BACK: &str = "z";

pub(super) fn marker(i: usize) -> String {
    format!("{MARKER_FRONT}{i}{MARKER_BACK}")
}

/// A token of a trace render that holds a marker is an image the walk must report, fully qualified or not.
pub(super) fn marked(token: &str) -> bool {
    token.contains(MARKER_FRONT) || token.contains(GLOBAL_MARKER)
}

/// A value the proof may change.
pub(super) struct Leaf {
    pub path: Vec<ValuesKey>,
    /// What it holds now (empty for a map's name key the templates default).
    pub value: String,
    /// For a map's name key: whether the map has a `registry` key, which the whole-name form empties.
    pub map_registry: Option<bool>,
}

/// A piece of a rendered reference, as the trace shows it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seg {
    Text(String),
    Leaf(usize),
    /// `global.imageRegistry`.
    Global,
}

/// How one site reads in the trace.
#[derive(Debug, Clone, Default)]
pub(super) struct Traced {
    pub segs: Vec<Seg>,
    /// Leaves whose marker shows but not their value after it (a template that transforms the value): they
    /// feed the site, but where their text ends is unknown.
    pub opaque: BTreeSet<usize>,
}

impl Traced {
    pub fn leaves(&self) -> impl Iterator<Item = usize> + '_ {
        self.segs
            .iter()
            .filter_map(|s| if let Seg::Leaf(l) = s { Some(*l) } else { None })
            .chain(self.opaque.iter().copied())
    }
}

/// The values that could feed an image: the candidates' marked keys (a map's name key even when empty, which
/// templates default) and every string that is a part of a rendered reference, one per path.
pub(super) fn leaves_of(scoped_per_pass: &[Vec<ScopedValues<'_>>], rendered: &BTreeSet<String>) -> Vec<Leaf> {
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
pub(super) fn segments(traced: &str, leaves: &[Leaf]) -> Traced {
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
pub(super) fn spelled(written: &str, leaves: &[Leaf]) -> Traced {
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

/// Rendered images by where they are → the reference as written. `aligned` maps each document to the plain
/// render's (`align`); without it the documents are the plain render's own.
pub(super) fn located(documents: &[Vec<Finding>], aligned: Option<&[Option<usize>]>) -> BTreeMap<Place, String> {
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
pub(super) fn align(plain: &[Vec<Finding>], other: &[Vec<Finding>]) -> Vec<Option<usize>> {
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

    pub(crate) fn leaf(path: &str, value: &str) -> Leaf {
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
}
