//! Helm charts: load a chart with its dependencies, compute its values, find every image it can run, and
//! package it to travel inside the bundle.
//!
//! Users start from a chart, not an image list. Discovery renders the chart with a real helm binary when
//! there is one (`render`), and otherwise scans values files statically (`discover::scan_values`), which
//! can miss images that only templates compute. For export, `prove` works out (and with helm, proves) the
//! values that point the chart at the air-gapped registry; `values_out` fills in the destination at import.

pub mod artifact;
pub mod candidates;
pub mod discover;
pub mod package;
pub mod pieces;
pub mod prove;
pub mod redact;
pub mod render;
pub mod source;
pub mod survey;
pub mod values;
pub mod values_out;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot read the chart at {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not a valid chart: {message}")]
    Invalid { what: String, message: String },
    #[error("chart `{chart}` needs {missing}, which {are} not in its charts/ directory")]
    MissingDependencies { chart: String, missing: String, are: &'static str },
    #[error("`helm template` with {pass} did not finish within {seconds} s and was stopped")]
    HelmTimedOut { pass: String, seconds: u64 },
    #[error("{0}")]
    Other(String),
}

/// `Chart.yaml`, the parts we use.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartMeta {
    #[serde(default)]
    pub api_version: Option<String>,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub app_version: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, rename = "type")]
    pub chart_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Dependency {
    /// The name the subchart's values live under in the parent.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// A loaded chart and, recursively, the subcharts it will render with.
#[derive(Debug, Clone)]
pub struct Chart {
    pub meta: ChartMeta,
    /// `values.yaml` (an empty mapping when absent).
    pub values: Value,
    /// Subcharts under the key their values live under (alias or name), in a stable order.
    pub subcharts: Vec<Subchart>,
}

#[derive(Debug, Clone)]
pub struct Subchart {
    pub key: String,
    /// The dependency entry that brought it in (None for an unlisted chart found in charts/).
    pub dependency: Option<Dependency>,
    pub chart: Chart,
}

/// Files of a chart as they are laid out inside its package (paths relative to the chart root).
pub type ChartFiles = BTreeMap<String, Vec<u8>>;

impl Chart {
    /// A chart named `c`, version 1, with these values and no subcharts: what unit tests of values need.
    #[cfg(test)]
    pub(crate) fn with_values(values: &str) -> Chart {
        Chart {
            meta: ChartMeta {
                api_version: None,
                name: "c".into(),
                version: "1".into(),
                app_version: None,
                dependencies: vec![],
                annotations: Default::default(),
                chart_type: None,
                description: None,
            },
            values: serde_yaml_ng::from_str(values).expect("test values are YAML"),
            subcharts: vec![],
        }
    }

    /// Load a chart from its files (a directory's content or an unpacked .tgz). `dir` is the chart's directory
    /// on disk, if any, for `file://` dependencies.
    pub fn from_files(files: &ChartFiles, what: &str, dir: Option<&Path>) -> Result<Chart, ChartError> {
        let invalid = |message: String| ChartError::Invalid { what: what.to_string(), message };
        let chart_yaml = files.get("Chart.yaml").ok_or_else(|| invalid("it has no Chart.yaml".into()))?;
        let meta: ChartMeta = serde_yaml_ng::from_slice(chart_yaml).map_err(|e| invalid(format!("Chart.yaml: {e}")))?;
        let values = match files.get("values.yaml") {
            Some(v) if !v.iter().all(u8::is_ascii_whitespace) => {
                serde_yaml_ng::from_slice::<Value>(v).map_err(|e| invalid(format!("values.yaml: {e}")))?
            }
            _ => Value::Mapping(Default::default()),
        };
        let values = if values.is_null() { Value::Mapping(Default::default()) } else { values };

        // charts/: subchart directories and packaged subcharts.
        let mut vendored: Vec<Chart> = Vec::new();
        let mut dirs: BTreeMap<String, ChartFiles> = BTreeMap::new();
        for (path, bytes) in files {
            let Some(rest) = path.strip_prefix("charts/") else { continue };
            match rest.split_once('/') {
                None if rest.ends_with(".tgz") => {
                    let sub_files = unpack_tgz(bytes, &format!("{what}/charts/{rest}"))?;
                    vendored.push(Chart::from_files(&sub_files, &format!("{what}/charts/{rest}"), None)?);
                }
                Some((dir_name, inner)) => {
                    dirs.entry(dir_name.to_string()).or_default().insert(inner.to_string(), bytes.clone());
                }
                None => {}
            }
        }
        for (dir_name, sub_files) in &dirs {
            if sub_files.contains_key("Chart.yaml") {
                let sub_dir = dir.map(|d| d.join("charts").join(dir_name));
                vendored.push(Chart::from_files(sub_files, &format!("{what}/charts/{dir_name}"), sub_dir.as_deref())?);
            }
        }

        let mut subcharts = Vec::new();
        let mut used = vec![false; vendored.len()];
        let mut missing = Vec::new();
        for dep in &meta.dependencies {
            // Prefer an exact version match, then any chart of that name (helm does the same for vendored charts).
            let found = vendored
                .iter()
                .position(|c| c.meta.name == dep.name && dep.version.as_deref().is_some_and(|v| v == c.meta.version))
                .or_else(|| vendored.iter().position(|c| c.meta.name == dep.name));
            match found {
                Some(i) => {
                    used[i] = true;
                    subcharts.push(Subchart {
                        key: dep.key().to_string(),
                        dependency: Some(dep.clone()),
                        chart: vendored[i].clone(),
                    });
                }
                None => match (dep.repository.as_deref().and_then(|r| r.strip_prefix("file://")), dir) {
                    (Some(rel), Some(dir)) => {
                        let dep_dir = dir.join(rel);
                        let dep_files = read_dir_files(&dep_dir)?;
                        let chart = Chart::from_files(&dep_files, &dep_dir.display().to_string(), Some(&dep_dir))?;
                        subcharts.push(Subchart { key: dep.key().to_string(), dependency: Some(dep.clone()), chart });
                    }
                    _ => missing.push(match &dep.version {
                        Some(v) => format!("{} {v}", dep.name),
                        None => dep.name.clone(),
                    }),
                },
            }
        }
        if !missing.is_empty() {
            let are = if missing.len() == 1 { "is" } else { "are" };
            return Err(ChartError::MissingDependencies { chart: meta.name.clone(), missing: missing.join(", "), are });
        }
        for (i, c) in vendored.into_iter().enumerate() {
            if !used[i] {
                subcharts.push(Subchart { key: c.meta.name.clone(), dependency: None, chart: c });
            }
        }
        Ok(Chart { meta, values, subcharts })
    }
}

/// Every regular file below `dir`, with paths relative to it; `.helmignore` patterns are honoured.
pub fn read_dir_files(dir: &Path) -> Result<ChartFiles, ChartError> {
    let read_err = |path: &Path, source| ChartError::Read { path: path.to_path_buf(), source };
    let ignore = match std::fs::read_to_string(dir.join(".helmignore")) {
        Ok(text) => package::HelmIgnore::parse(&text),
        Err(_) => package::HelmIgnore::default(),
    };
    let mut files = ChartFiles::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| read_err(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| read_err(&d, e))?;
            let path = entry.path();
            let rel = path.strip_prefix(dir).expect("below dir").to_string_lossy().replace('\\', "/");
            let ft = entry.file_type().map_err(|e| read_err(&path, e))?;
            if ignore.is_ignored(&rel, ft.is_dir()) {
                continue;
            }
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() || (ft.is_symlink() && path.is_file()) {
                files.insert(rel, std::fs::read(&path).map_err(|e| read_err(&path, e))?);
            }
        }
    }
    Ok(files)
}

/// The files of a packaged chart, with the top directory (`NAME/`) stripped.
pub fn unpack_tgz(bytes: &[u8], what: &str) -> Result<ChartFiles, ChartError> {
    let invalid = |message: String| ChartError::Invalid { what: what.to_string(), message };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut files = ChartFiles::new();
    let mut top: Option<String> = None;
    for entry in archive.entries().map_err(|e| invalid(format!("not a gzip'd tar: {e}")))? {
        let mut entry = entry.map_err(|e| invalid(format!("not a gzip'd tar: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| invalid(e.to_string()))?.to_string_lossy().replace('\\', "/");
        if path.split('/').any(|c| c == "..") || path.starts_with('/') {
            return Err(invalid(format!("entry `{path}` leaves the chart")));
        }
        let Some((first, rest)) = path.split_once('/') else { continue };
        match &top {
            None => top = Some(first.to_string()),
            Some(t) if t != first => return Err(invalid("it holds more than one top-level directory".into())),
            _ => {}
        }
        if entry.size() > 64 << 20 {
            return Err(invalid(format!("`{path}` is larger than 64 MiB")));
        }
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf).map_err(|e| invalid(e.to_string()))?;
        files.insert(rest.to_string(), buf);
    }
    if files.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    Ok(files)
}

/// What the user can do about it.
impl crate::support::hint::Hint for ChartError {
    fn hint(&self) -> Option<String> {
        match self {
            ChartError::MissingDependencies { .. } => Some(
                "run `helm dependency build` in the chart directory (it downloads them into charts/), or point -c at a packaged chart that includes them".into(),
            ),
            ChartError::HelmTimedOut { .. } => Some(
                "raise the limit with --helm-timeout SECS (or BUNDLE_HELM_TIMEOUT), or check that the chart renders with `helm template` alone".into(),
            ),
            _ => None,
        }
    }
}
