//! Bundle specs: a YAML file in `bundles/` that makes an export repeatable (chart, repository, version,
//! values, passes, extra and excluded images, output name). Unknown or missing keys are rejected with their
//! path, so a typo never silently changes what is exported.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleSpec {
    /// The archive to write, relative to the current directory. Export needs it (or `-o`); `copy` and `images`
    /// write no archive and ignore it.
    #[serde(default)]
    pub output: Option<PathBuf>,
    #[serde(default)]
    pub chart: Option<String>,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub set_string: Vec<String>,
    /// Values files, relative to the spec file.
    #[serde(default)]
    pub values: Vec<PathBuf>,
    #[serde(default)]
    pub kube_version: Option<String>,
    /// Render passes, each a `--set` expression (`""` for the common values only).
    #[serde(default)]
    pub passes: Vec<String>,
    /// Images to add to those the chart needs.
    #[serde(default)]
    pub images: Vec<String>,
    /// Images to leave out (as written by the chart or in `images`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Platforms to carry (`os/arch[/variant]`), as `--platform`; empty: all.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Several charts, each as the single-chart keys above (a suite); instead of `chart`.
    #[serde(default)]
    pub charts: Vec<ChartSpec>,
    /// Files that travel beside the images.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// `files`, checked (`load` fills it in).
    #[serde(skip)]
    pub file_sources: Vec<crate::files::FileSource>,
}

/// One chart of a suite: what a single-chart spec says of its chart.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartSpec {
    pub chart: String,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub set_string: Vec<String>,
    /// Values files, relative to the spec file.
    #[serde(default)]
    pub values: Vec<PathBuf>,
    #[serde(default)]
    pub kube_version: Option<String>,
    #[serde(default)]
    pub passes: Vec<String>,
}

/// A file to carry: a local `path`, or a `url` with the `sha256` it must have; `name` defaults to the last
/// component of either.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileSpec {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the bundle spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle spec {path}: at `{at}`: {message}")]
    Invalid { path: PathBuf, at: String, message: String },
}

impl BundleSpec {
    pub fn load(path: &Path) -> Result<BundleSpec, SpecError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
        let invalid = |at: String, message: String| SpecError::Invalid { path: path.to_path_buf(), at, message };
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let mut spec: BundleSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let at = if at == "." { "(top level)".to_string() } else { at };
            invalid(at, e.into_inner().to_string())
        })?;
        if spec.chart.is_none() && spec.charts.is_empty() && spec.images.is_empty() && spec.files.is_empty() {
            return Err(invalid("(top level)".into(), "a spec needs `chart`, `charts`, `images` or `files`".into()));
        }
        if spec.chart.is_some() && !spec.charts.is_empty() {
            return Err(invalid("charts".into(), "give one chart as `chart` or several as `charts`, not both".into()));
        }
        if spec.chart.is_none() {
            for key in [
                ("repo", spec.repo.is_some()),
                ("version", spec.version.is_some()),
                ("passes", !spec.passes.is_empty()),
            ] {
                if key.1 {
                    let with = if spec.charts.is_empty() { "with `chart`" } else { "in a `charts` entry" };
                    return Err(invalid(key.0.into(), format!("only makes sense {with}")));
                }
            }
            for (key, given) in [
                ("set", !spec.set.is_empty()),
                ("setString", !spec.set_string.is_empty()),
                ("values", !spec.values.is_empty()),
                ("kubeVersion", spec.kube_version.is_some()),
            ] {
                if given && !spec.charts.is_empty() {
                    return Err(invalid(key.into(), "belongs in each `charts` entry of a suite".into()));
                }
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        relative_to_spec(base, &mut spec.values, &mut spec.chart, spec.repo.is_some());
        for c in &mut spec.charts {
            let mut chart = Some(std::mem::take(&mut c.chart));
            relative_to_spec(base, &mut c.values, &mut chart, c.repo.is_some());
            c.chart = chart.unwrap_or_default();
        }
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (i, c) in spec.charts.iter().enumerate() {
            let name = expected_name(c);
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                return Err(invalid(
                    format!("charts[{i}]"),
                    format!(
                        "names chart `{name}` again (charts[{first}] is `{name}` too); a suite carries each chart once"
                    ),
                ));
            }
            seen.push((name, i));
        }
        for f in &mut spec.files {
            if let Some(p) = &mut f.path
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        }
        spec.file_sources = spec.file_sources(path)?;
        Ok(spec)
    }

    /// The spec's files, checked: each a readable local file or a URL with a sha256, under a name that is one
    /// plain file name, and no name twice. Nothing is read or fetched here but the local files' metadata.
    fn file_sources(&self, path: &Path) -> Result<Vec<crate::files::FileSource>, SpecError> {
        use crate::files::{FileOrigin, FileSource};
        let invalid = |i: usize, message: String| SpecError::Invalid {
            path: path.to_path_buf(),
            at: format!("files[{i}]"),
            message,
        };
        let mut out: Vec<FileSource> = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let (from, default_name) = match (&f.path, &f.url, &f.sha256) {
                (Some(p), None, None) => {
                    match std::fs::metadata(p) {
                        Ok(m) if m.is_file() => {}
                        Ok(_) => return Err(invalid(i, format!("`path` {} is not a regular file", p.display()))),
                        Err(e) => return Err(invalid(i, format!("`path` {}: {e}", p.display()))),
                    }
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    (FileOrigin::Path(p.clone()), name)
                }
                (None, Some(u), Some(sum)) => {
                    let url = url::Url::parse(u).map_err(|e| invalid(i, format!("`url` {u} is not a URL: {e}")))?;
                    if url.scheme() != "https" && url.scheme() != "http" {
                        return Err(invalid(i, format!("`url` {u} must be http:// or https://")));
                    }
                    let hex = sum.strip_prefix("sha256:").unwrap_or(sum);
                    let sha256: crate::oci::digest::Digest = format!("sha256:{}", hex.to_ascii_lowercase())
                        .parse()
                        .map_err(|_| invalid(i, format!("`sha256` {sum} is not 64 hex digits")))?;
                    let name = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default().to_string();
                    (FileOrigin::Url { url, sha256 }, name)
                }
                (None, Some(_), None) => {
                    return Err(invalid(i, "a `url` needs the `sha256` the file must have".into()));
                }
                (Some(_), Some(_), _) => return Err(invalid(i, "give `path` or `url`, not both".into())),
                (Some(_), None, Some(_)) => {
                    return Err(invalid(i, "`sha256` goes with `url` (a local file is hashed as it is)".into()));
                }
                (None, None, _) => return Err(invalid(i, "needs `path` (a local file) or `url` and `sha256`".into())),
            };
            let name = f.name.clone().unwrap_or(default_name);
            if let Some(problem) = crate::files::name_problem(&name) {
                return Err(invalid(i, format!("the name `{name}` {problem}; set `name:`")));
            }
            let repo = crate::files::repository_name(&name);
            if let Some(j) = out.iter().position(|o| o.name == name || crate::files::repository_name(&o.name) == repo) {
                return Err(invalid(
                    i,
                    format!("`{name}` is named like files[{j}] (`{}`); give one of them another `name:`", out[j].name),
                ));
            }
            out.push(FileSource { name, from });
        }
        Ok(out)
    }
}

/// Values files and a local chart path are relative to the spec; chart names and URLs are left alone.
fn relative_to_spec(base: &Path, values: &mut [PathBuf], chart: &mut Option<String>, has_repo: bool) {
    for v in values {
        if v.is_relative() {
            *v = base.join(&*v);
        }
    }
    if let Some(c) = chart {
        let candidate = base.join(&*c);
        if !has_repo && !c.starts_with("oci://") && candidate.exists() {
            *c = candidate.to_string_lossy().into_owned();
        }
    }
}

/// The name a suite entry's chart will have, as far as the spec tells without downloading anything: the
/// name in a repository, the last component of an oci:// reference, or a local chart's Chart.yaml name.
fn expected_name(c: &ChartSpec) -> String {
    if c.repo.is_some() {
        return c.chart.clone();
    }
    if let Some(rest) = c.chart.strip_prefix("oci://") {
        return rest.rsplit('/').next().unwrap_or(rest).split(':').next().unwrap_or_default().to_string();
    }
    let dir = Path::new(&c.chart);
    if dir.is_dir()
        && let Ok(text) = std::fs::read_to_string(dir.join("Chart.yaml"))
        && let Ok(meta) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        && let Some(name) = meta.get("name").and_then(|n| n.as_str())
    {
        return name.to_string();
    }
    c.chart.clone()
}

impl crate::support::hint::Hint for SpecError {
    fn hint(&self) -> Option<String> {
        match self {
            SpecError::Read { .. } => Some("check the path given to --spec".into()),
            SpecError::Invalid { .. } => Some("docs/usage.md, \"Bundle specs\", lists the keys a spec accepts".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<BundleSpec, SpecError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.yaml");
        std::fs::write(&p, text).unwrap();
        BundleSpec::load(&p)
    }

    #[test]
    fn unknown_and_missing_keys_name_their_path() {
        let e = load("output: a.tar.zst\nchart: x\npasses: ['a=b']\nimagse: []\n").unwrap_err().to_string();
        assert!(e.contains("imagse"), "{e}");
        // `output` is export's, and -o may give it: a spec for copy has none.
        assert!(load("images: [nginx]\n").is_ok_and(|s| s.output.is_none()));
        let e = load("output: a\nchart: x\npasses: [{set: 1}]\n").unwrap_err().to_string();
        assert!(e.contains("passes[0]"), "{e}");
        let e = load("output: a\n").unwrap_err().to_string();
        assert!(e.contains("needs `chart`, `charts`, `images` or `files`"), "{e}");
        assert!(load("output: a\nimages: [nginx]\n").is_ok());
    }

    #[test]
    fn a_suite_names_its_bad_entry() {
        let e = |t: &str| load(t).unwrap_err().to_string();
        let ok = load("charts:\n  - chart: a\n    repo: https://r\n  - chart: oci://r.local/x/b\n").unwrap();
        assert_eq!(ok.charts.len(), 2);
        assert!(e("charts:\n  - chart: a\n    sett: [x=1]\n").contains("at `charts[0]"), "unknown key");
        let twice = e("charts:\n  - chart: a\n    repo: https://r\n  - chart: oci://o.local/a\n");
        assert!(twice.contains("`charts[1]`") && twice.contains("names chart `a` again"), "{twice}");
        assert!(e("chart: a\ncharts:\n  - chart: b\n").contains("not both"));
        assert!(e("charts:\n  - chart: a\nset: [x=1]\n").contains("belongs in each `charts` entry"));
        let missing = e("files:\n  - path: nope.sh\n");
        assert!(missing.contains("`files[0]`") && missing.contains("nope.sh"), "{missing}");
        assert!(e("files:\n  - url: https://x.local/a.sh\n").contains("needs the `sha256`"));
        assert!(e("files:\n  - url: https://x.local/a.sh\n    sha256: abc\n").contains("not 64 hex digits"));
        assert!(e("files:\n  - url: ftp://x.local/a.sh\n    sha256: abc\n").contains("http:// or https://"));
        let sum = "a".repeat(64);
        let bad_name = e(&format!("files:\n  - url: https://x.local/a.sh\n    sha256: {sum}\n    name: ../a\n"));
        assert!(bad_name.contains("the name `../a`"), "{bad_name}");
        let same = e(&format!(
            "files:\n  - url: https://x.local/a.sh\n    sha256: {sum}\n  - url: https://y.local/a.sh\n    sha256: {sum}\n"
        ));
        assert!(same.contains("`files[1]`") && same.contains("named like files[0]"), "{same}");
        let good = load(&format!("files:\n  - url: https://x.local/d/a.sh\n    sha256: sha256:{sum}\n")).unwrap();
        assert_eq!(good.file_sources[0].name, "a.sh");
    }
}
