//! Finding the images a chart can run.
//!
//! From rendered manifests: every string under a key named `image` anywhere (pods, init and ephemeral
//! containers, custom resources), and fully qualified references that appear in container args and commands,
//! env values and ConfigMap payloads (which may embed whole manifests). From values (no helm): image maps in
//! their common shapes and `image: "repo:tag"` strings, plus the image annotations of Chart.yaml.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_yaml_ng::Value;

use super::values::ScopedValues;
use super::{Chart, ChartError};
use crate::oci::reference::ImageRef;

/// How an image was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// A rendered `image:` key.
    ImageKey,
    /// A fully qualified reference in container args or command.
    Args,
    /// A fully qualified reference in an env value.
    Env,
    /// In a ConfigMap's data (an embedded manifest's `image:` or a fully qualified reference).
    Configmap,
    /// The static values scan.
    ValuesScan,
    /// Chart.yaml's `artifacthub.io/images` or `helm.sh/images`.
    Annotation,
    /// Given with --image or --images-file.
    Listed,
}

/// One place an image was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// As the chart writes it, or as assembled from its pieces.
    pub reference: String,
    pub how: How,
    /// The render pass (its --set expressions; "" for the common values only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pass: Option<String>,
    /// `Kind/name key.path` for rendered documents, the values path for the scan, the annotation name.
    pub location: String,
    /// For an image kept in pieces: the keys it was assembled from (`image + repository + version`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pieces: Option<String>,
}

/// A bare image name a rendered document holds without the parts that make it a reference (an operator's
/// component the chart leaves for the user to fill in): named, never sent to a registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Incomplete {
    pub name: String,
    /// What it lacks: `a version`, `a registry or repository`, or both.
    pub missing: &'static str,
    pub pass: String,
    pub location: String,
}

/// What one render holds: the images of each document, in helm's order, and the incomplete names.
#[derive(Debug, Default)]
pub struct Rendered {
    pub documents: Vec<Vec<Finding>>,
    pub incomplete: Vec<Incomplete>,
}

pub use crate::oci::layout::{ImageShape, ImageValue};

/// Images in the documents `helm template` printed for one pass.
pub fn from_rendered(text: &str, pass: &str) -> Result<Vec<Finding>, ChartError> {
    Ok(by_document(text, pass, &BTreeSet::new())?.documents.into_iter().flatten().collect())
}

/// The same, document by document, in the order helm printed them. The probe matches images between renders
/// by document and position, because names may differ between two renders (a Job named after the time).
///
/// Outside `image:` keys only fully qualified references count, or references equal to one an `image:` key
/// names (or to one of `known`): an injector's `AGENT_INJECT_VAULT_IMAGE: hashicorp/vault:2.0.4` is the image it
/// will inject, and must move with it.
pub fn by_document(text: &str, pass: &str, known: &BTreeSet<String>) -> Result<Rendered, ChartError> {
    by_document_with(text, pass, known, &|_| false)
}

/// `by_document`, where tokens outside `image:` keys for which `also` holds count as references too (the probe's
/// marked values, which are not fully qualified when the value was not).
pub fn by_document_with(
    text: &str,
    pass: &str,
    known: &BTreeSet<String>,
    also: &dyn Fn(&str) -> bool,
) -> Result<Rendered, ChartError> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| {
            ChartError::Other(format!("helm printed a document (#{}) that is not valid YAML: {e}", i + 1))
        })?;
        docs.push(value);
    }
    let mut known = known.clone();
    let mut scratch = Vec::new();
    for doc in &docs {
        let mut found = Vec::new();
        walk_document(doc, &Walk { pass, known: &BTreeSet::new(), also }, "", &mut found, &mut scratch);
        known.extend(found.into_iter().filter(|f| f.how == How::ImageKey).map(|f| f.reference));
    }
    let walk = Walk { pass, known: &known, also };
    let mut rendered = Rendered::default();
    for doc in &docs {
        let mut found = Vec::new();
        walk_document(doc, &walk, "", &mut found, &mut rendered.incomplete);
        rendered.documents.push(found);
    }
    rendered.incomplete.sort();
    rendered.incomplete.dedup();
    Ok(rendered)
}

/// What a walk over rendered documents carries along.
struct Walk<'a> {
    pass: &'a str,
    known: &'a BTreeSet<String>,
    also: &'a dyn Fn(&str) -> bool,
}

/// Where the walk is inside one document.
struct Place<'v, 'l> {
    kind: &'l str,
    label: &'l str,
    /// The maps above the current value, outermost first.
    ancestors: Vec<&'v serde_yaml_ng::Mapping>,
    /// Some map of this document keeps an image in pieces.
    has_pieces: bool,
}

fn walk_document(doc: &Value, w: &Walk<'_>, outer: &str, out: &mut Vec<Finding>, incomplete: &mut Vec<Incomplete>) {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() && name.is_empty() && !doc.is_mapping() {
        return;
    }
    let label = format!("{outer}{kind}/{name}");
    let mut at = Place { kind, label: &label, ancestors: Vec::new(), has_pieces: any_pieces(doc, 0) };
    walk(doc, &mut Vec::new(), &mut at, w, out, incomplete);
}

/// Whether some map in `v` holds an image beside its pieces (bounded depth: rendered documents are shallow).
fn any_pieces(v: &Value, depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    match v {
        Value::Mapping(m) => super::pieces::holds_pieces(m) || m.values().any(|x| any_pieces(x, depth + 1)),
        Value::Sequence(s) => s.iter().any(|x| any_pieces(x, depth + 1)),
        _ => false,
    }
}

/// `--engine-image`, `-image`, `--sidecar-image=`: a command-line flag whose value is an image.
fn image_flag(s: &str) -> bool {
    let s = s.trim();
    let name = s.split('=').next().unwrap_or(s);
    name.starts_with('-') && name.to_ascii_lowercase().ends_with("image")
}

/// `docker_image`, `sidecarImage`, `connection_pooler_image`: a key that names an image, other than `image`.
fn named_like_an_image(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.len() > "image".len() && k.ends_with("image")
}

/// A reference with an explicit tag or digest (so `true`, `latest` or a bare word under such a key is not one).
fn has_tag(s: &str) -> bool {
    let last = s.rsplit('/').next().unwrap_or("");
    (last.contains(':') || s.contains('@')) && !s.contains("://") && ImageRef::parse(s).is_ok()
}

/// An element of one of these lists is a container, whose `image` is a reference as it stands.
fn in_container(path: &[String]) -> bool {
    path.last()
        .and_then(|p| p.split('[').next())
        .is_some_and(|k| matches!(k, "containers" | "initContainers" | "ephemeralContainers"))
        && path.last().is_some_and(|p| p.ends_with(']'))
}

fn walk<'v>(
    v: &'v Value,
    path: &mut Vec<String>,
    at: &mut Place<'v, '_>,
    w: &Walk<'_>,
    out: &mut Vec<Finding>,
    incomplete: &mut Vec<Incomplete>,
) {
    let pass = w.pass;
    let (kind, label) = (at.kind, at.label);
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
                };
                if key == "image" {
                    // Maps under `image` (e.g. an image policy) are not images.
                    if let Value::String(s) = val
                        && !s.trim().is_empty()
                    {
                        let cx = super::pieces::Context {
                            map: m,
                            ancestors: &at.ancestors,
                            in_container: in_container(path),
                            document_has_pieces: at.has_pieces,
                        };
                        path.push(key);
                        let location = format!("{label} {}", path.join("."));
                        path.pop();
                        match super::pieces::name(s, &cx) {
                            super::pieces::Named::Reference { reference, pieces } => out.push(Finding {
                                reference,
                                how: if kind == "ConfigMap" { How::Configmap } else { How::ImageKey },
                                pass: Some(pass.to_string()),
                                location,
                                pieces,
                            }),
                            super::pieces::Named::Incomplete { name, missing } => {
                                incomplete.push(Incomplete { name, missing, pass: pass.to_string(), location })
                            }
                        }
                    }
                    continue;
                }
                // An operator's configuration names images under keys of their own (`docker_image`,
                // `connectionPoolerImage`), and in env vars named for them (longhorn's manager creates its CSI
                // pods from `CSI_ATTACHER_IMAGE: longhornio/csi-attacher:v4.4.2`): a reference with a tag there
                // is one, fully qualified or not.
                let env_image = key == "value"
                    && path.iter().any(|p| p.split('[').next() == Some("env"))
                    && m.get("name").and_then(Value::as_str).is_some_and(|n| n.to_ascii_lowercase().contains("image"));
                if let Value::String(s) = val
                    && (named_like_an_image(&key) || env_image)
                    && has_tag(s.trim())
                {
                    path.push(key);
                    out.push(Finding {
                        reference: s.trim().to_string(),
                        how: if env_image {
                            How::Env
                        } else if kind == "ConfigMap" {
                            How::Configmap
                        } else {
                            How::ImageKey
                        },
                        pass: Some(pass.to_string()),
                        location: format!("{label} {}", path.join(".")),
                        pieces: None,
                    });
                    path.pop();
                    continue;
                }
                path.push(key);
                at.ancestors.push(m);
                walk(val, path, at, w, out, incomplete);
                at.ancestors.pop();
                path.pop();
            }
        }
        Value::Sequence(s) => {
            let flags = path.last().is_some_and(|p| matches!(p.split('[').next(), Some("args" | "command")));
            for (i, item) in s.iter().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                // `--engine-image` then `longhornio/longhorn-engine:v1.6.0`: the value of an image flag.
                let flagged = flags
                    && i > 0
                    && s[i - 1].as_str().is_some_and(image_flag)
                    && item.as_str().is_some_and(|v| has_tag(v.trim()) && !is_fully_qualified(v.trim()));
                if flagged {
                    out.push(Finding {
                        reference: item.as_str().unwrap_or_default().trim().to_string(),
                        how: How::Args,
                        pass: Some(pass.to_string()),
                        location: format!("{label} {}", path.join(".")),
                        pieces: None,
                    });
                } else {
                    walk(item, path, at, w, out, incomplete);
                }
                path.pop();
                path.push(last);
            }
        }
        Value::String(s) => {
            let in_segment = |names: &[&str]| {
                path.iter().any(|p| {
                    let base = p.split('[').next().unwrap_or(p);
                    names.contains(&base)
                })
            };
            let how = if in_segment(&["args", "command"]) {
                Some(How::Args)
            } else if in_segment(&["env"]) {
                Some(How::Env)
            } else if kind == "ConfigMap" && path.first().is_some_and(|p| p == "data") {
                Some(How::Configmap)
            } else {
                None
            };
            let Some(how) = how else { return };
            // A ConfigMap may carry whole manifests (operators that apply them later): walk them like
            // rendered documents, which says more about where an image is than a bare token does.
            let mut embedded = Vec::new();
            // `image:`, `"image":`, `natsImage:`: anything that may name an image is worth parsing.
            if how == How::Configmap && (s.contains("image") || s.contains("Image")) {
                let inner_label = format!("{label} {} -> ", path.join("."));
                for inner in embedded_documents(s) {
                    walk_document(&inner, w, &inner_label, &mut embedded, incomplete);
                }
                for f in &mut embedded {
                    f.how = How::Configmap;
                }
            }
            let mut seen: BTreeSet<&str> = embedded.iter().map(|f| f.reference.as_str()).collect();
            let location = format!("{label} {}", path.join("."));
            let mut previous = "";
            for token in tokens(s) {
                // `--engine-image=longhornio/longhorn-engine:v1.6.0`: the value of an image flag.
                let flagged = how == How::Args && image_flag(previous) && has_tag(token);
                previous = token;
                let counts = is_fully_qualified(token)
                    || w.known.contains(token)
                    || flagged
                    || ((w.also)(token) && ImageRef::parse(token).is_ok());
                if counts && seen.insert(token) {
                    out.push(Finding {
                        reference: token.to_string(),
                        how,
                        pass: Some(pass.to_string()),
                        location: location.clone(),
                        pieces: None,
                    });
                }
            }
            // A template a ConfigMap carries (an injector's, which is not YAML until it is filled in) names
            // the images it writes literally on `image:` lines.
            if how == How::Configmap {
                for reference in template_images(s) {
                    if seen.insert(reference) {
                        out.push(Finding {
                            reference: reference.to_string(),
                            how,
                            pass: Some(pass.to_string()),
                            location: location.clone(),
                            pieces: None,
                        });
                    }
                }
            }
            out.extend(embedded);
        }
        _ => {}
    }
}

/// Embedded strings larger than this are only searched for bare references, not parsed as YAML.
const MAX_EMBEDDED_BYTES: usize = 1 << 20;
/// Documents read from one embedded string at most.
const MAX_EMBEDDED_DOCUMENTS: usize = 256;

/// The YAML documents a ConfigMap string holds, if it holds any. Most such strings are not YAML at all (scripts,
/// config files, JSON fragments): parsing stops at the first error, because serde_yaml_ng's multi-document
/// iterator yields the same error forever after one (a ConfigMap of the SUSE Observability agent made
/// discovery spin on it), and documents before the error are kept.
pub fn embedded_documents(s: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if s.len() > MAX_EMBEDDED_BYTES {
        return out;
    }
    for doc in serde_yaml_ng::Deserializer::from_str(s).take(MAX_EMBEDDED_DOCUMENTS) {
        match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// Literal references on `image:` lines of a text (`image: busybox:1.28`, `- image: "quay.io/a/b:1"`): those with
/// a tag, a digest or a path, since a bare word there may be a template's placeholder.
fn template_images(s: &str) -> impl Iterator<Item = &str> {
    s.lines().take(1 << 16).filter_map(|line| {
        let line = line.trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
        let value = line.strip_prefix("image:")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        let literal = !value.is_empty() && !value.contains("{{") && !value.contains(char::is_whitespace);
        let named = value.contains('/') || value.contains(':') || value.contains('@');
        (literal && named && ImageRef::parse(value).is_ok()).then_some(value)
    })
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || "=\"'`,;()[]{}<>|".contains(c))
        .map(|t| t.trim_end_matches(['.', ':']))
        .filter(|t| !t.is_empty())
}

/// A reference with a registry host, a path, and an explicit tag or digest: the only strings outside
/// `image:` keys we treat as images (anything looser would catch URLs and service addresses).
pub fn is_fully_qualified(token: &str) -> bool {
    if token.contains("://") || token.starts_with('-') || !token.contains('/') {
        return false;
    }
    let Some((host, path)) = token.split_once('/') else { return false };
    if !(host.contains('.') || host.contains(':') || host == "localhost") || path.is_empty() {
        return false;
    }
    // `app.kubernetes.io/component:template` is a label selector (chaos-mesh's TEMPLATE_LABELS): label and
    // annotation prefixes under kubernetes.io are never registries.
    if host == "kubernetes.io" || host.ends_with(".kubernetes.io") {
        return false;
    }
    let last = token.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !token.contains('@') {
        return false;
    }
    ImageRef::parse(token).is_ok()
}

/// The static scan: image maps and strings in every enabled chart's effective values, and annotations.
pub fn scan_values(scoped: &[ScopedValues<'_>]) -> (Vec<Finding>, Vec<ImageValue>) {
    let mut findings = Vec::new();
    let mut image_values = Vec::new();
    let mut annotated: BTreeSet<(String, String)> = BTreeSet::new();
    for scope in scoped {
        let subchart_keys: BTreeSet<&str> = scope.chart.subcharts.iter().map(|s| s.key.as_str()).collect();
        let global_registry = scope
            .values
            .get("global")
            .and_then(|g| g.get("imageRegistry"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let ctx = ScanCtx { chart: scope.chart, global_registry };
        if let Value::Mapping(m) = &scope.values {
            for (k, v) in m {
                let Some(key) = k.as_str() else { continue };
                if key == "global" || subchart_keys.contains(key) {
                    continue;
                }
                let mut path = scope.path.clone();
                path.push(key.to_string());
                scan(&ctx, key, v, &mut path, &mut findings, &mut image_values);
            }
        }
        for (name, text) in &scope.chart.meta.annotations {
            if name != "artifacthub.io/images" && name != "helm.sh/images" {
                continue;
            }
            for reference in annotation_images(text) {
                if annotated.insert((scope.chart.meta.name.clone(), reference.clone())) {
                    findings.push(Finding {
                        reference,
                        how: How::Annotation,
                        pass: None,
                        location: format!("{} Chart.yaml annotations.{name}", scope.chart.meta.name),
                        pieces: None,
                    });
                }
            }
        }
    }
    (findings, image_values)
}

struct ScanCtx<'a> {
    chart: &'a Chart,
    global_registry: Option<String>,
}

fn scan(
    ctx: &ScanCtx<'_>,
    key: &str,
    v: &Value,
    path: &mut Vec<String>,
    findings: &mut Vec<Finding>,
    image_values: &mut Vec<ImageValue>,
) {
    match v {
        Value::Mapping(m) => {
            if let Some((reference, shape)) = image_map(ctx, key, m) {
                let dotted = path.join(".");
                findings.push(Finding {
                    reference: reference.clone(),
                    how: How::ValuesScan,
                    pass: None,
                    location: dotted.clone(),
                    pieces: None,
                });
                image_values.push(ImageValue { path: dotted, reference, shape });
                return;
            }
            for (k, val) in m {
                let Some(k) = k.as_str() else { continue };
                path.push(k.to_string());
                scan(ctx, k, val, path, findings, image_values);
                path.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, item) in s.iter().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                scan(ctx, key, item, path, findings, image_values);
                path.pop();
                path.push(last);
            }
        }
        Value::String(s) if key == "image" && !s.trim().is_empty() && ImageRef::parse(s.trim()).is_ok() => {
            let dotted = path.join(".");
            let reference = s.trim().to_string();
            findings.push(Finding {
                reference: reference.clone(),
                how: How::ValuesScan,
                pass: None,
                location: dotted.clone(),
                pieces: None,
            });
            image_values.push(ImageValue { path: dotted, reference, shape: ImageShape::String });
        }
        _ => {}
    }
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `{registry, repository|image|name, tag, digest}` under an image-like key, or any map with `repository` and
/// a `tag`, `registry` or `digest`.
fn image_map(ctx: &ScanCtx<'_>, key: &str, m: &serde_yaml_ng::Mapping) -> Option<(String, ImageShape)> {
    let get = |k: &str| scalar(m.get(k));
    let image_like = key.to_ascii_lowercase().contains("image");
    let has_detail = get("tag").is_some() || get("registry").is_some() || get("digest").is_some();
    let repository_key = if get("repository").is_some() && (image_like || has_detail) {
        "repository"
    } else if image_like && get("image").is_some() && has_detail {
        "image"
    } else if image_like && get("name").is_some() && has_detail {
        "name"
    } else {
        return None;
    };
    let repository = get(repository_key)?;
    let registry_key = m.contains_key("registry");
    let registry = get("registry").or_else(|| ctx.global_registry.clone());
    let tag = get("tag").or_else(|| ctx.chart.meta.app_version.clone());
    let digest = get("digest");
    let mut reference = match &registry {
        Some(r) => format!("{}/{}", r.trim_end_matches('/'), repository),
        None => repository.clone(),
    };
    if let Some(t) = &tag
        && !repository.rsplit('/').next().unwrap_or("").contains(':')
    {
        reference.push(':');
        reference.push_str(t);
    }
    if let Some(d) = &digest {
        reference.push('@');
        reference.push_str(d);
    }
    ImageRef::parse(&reference).ok()?;
    Some((reference, ImageShape::Map { registry_key, repository_key: repository_key.to_string(), tag, digest }))
}

/// `artifacthub.io/images` is YAML: a list of `{name, image}`; `helm.sh/images` the same or a list of strings.
fn annotation_images(text: &str) -> Vec<String> {
    let Ok(v) = serde_yaml_ng::from_str::<Value>(text) else { return Vec::new() };
    let Some(items) = v.as_sequence() else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match item {
            Value::String(s) => Some(s.trim().to_string()),
            Value::Mapping(m) => m.get("image").and_then(Value::as_str).map(|s| s.trim().to_string()),
            _ => None,
        })
        .filter(|s| ImageRef::parse(s).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_qualified_references_only() {
        for yes in [
            "quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0",
            "127.0.0.1:5000/a/b:1",
            "reg.io/a@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(is_fully_qualified(yes), "{yes}");
        }
        for no in [
            "nginx:1.25",
            "https://quay.io/a/b:1",
            "svc.ns.svc.cluster.local:8080",
            "quay.io/a/b",
            "--flag=x",
            "a/b:1",
            "app.kubernetes.io/component:template",
        ] {
            assert!(!is_fully_qualified(no), "{no}");
        }
    }

    #[test]
    fn embedded_strings_that_are_not_yaml_end() {
        // Regression: after a parse error the multi-document iterator repeats the error forever.
        assert!(embedded_documents("a: [unclosed\nimage: x:1\n").is_empty());
        let docs = embedded_documents("kind: A\nimage: x:1\n---\nkey: [unclosed\n---\nkind: B\n");
        assert_eq!(docs.len(), 1, "documents before the error are kept, none after");
        assert!(embedded_documents(&"image: x:1\n".repeat(200_000)).is_empty(), "too large to parse");
    }

    #[test]
    fn rendered_images_args_env_and_embedded_manifests() {
        let text = r#"
kind: Deployment
metadata: {name: op}
spec:
  template:
    spec:
      initContainers: [{name: init, image: "busybox:1.36"}]
      containers:
        - name: op
          image: quay.io/org/operator:v1
          args: ["--prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0", "--log=info"]
          env: [{name: SIDECAR, value: "ghcr.io/org/sidecar:2.0"}]
---
kind: Prometheus
metadata: {name: p}
spec: {image: "quay.io/prometheus/prometheus:v2.51.0", imagePullPolicy: {not: an-image}}
---
kind: ConfigMap
metadata: {name: embedded}
data:
  job.yaml: |
    kind: Job
    metadata: {name: j}
    spec: {template: {spec: {containers: [{name: j, image: "registry.k8s.io/kubectl:v1.31.0"}]}}}
"#;
        let f = from_rendered(text, "").unwrap();
        let got: Vec<(&str, How)> = f.iter().map(|f| (f.reference.as_str(), f.how)).collect();
        assert!(got.contains(&("busybox:1.36", How::ImageKey)));
        assert!(got.contains(&("quay.io/org/operator:v1", How::ImageKey)));
        assert!(got.contains(&("quay.io/prometheus-operator/prometheus-config-reloader:v0.73.0", How::Args)));
        assert!(got.contains(&("ghcr.io/org/sidecar:2.0", How::Env)));
        assert!(got.contains(&("quay.io/prometheus/prometheus:v2.51.0", How::ImageKey)));
        assert!(got.contains(&("registry.k8s.io/kubectl:v1.31.0", How::Configmap)));
        assert_eq!(got.len(), 6, "{got:?}");
    }
}
