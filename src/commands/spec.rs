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
        if spec.chart.is_none() && spec.images.is_empty() {
            return Err(invalid("(top level)".into(), "a spec needs `chart` or `images`".into()));
        }
        if spec.chart.is_none() {
            for key in [
                ("repo", spec.repo.is_some()),
                ("version", spec.version.is_some()),
                ("passes", !spec.passes.is_empty()),
            ] {
                if key.1 {
                    return Err(invalid(key.0.into(), "only makes sense with `chart`".into()));
                }
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for v in &mut spec.values {
            if v.is_relative() {
                *v = base.join(&*v);
            }
        }
        // A local chart path is relative to the spec, like values files; names and URLs are left alone.
        if let Some(c) = &spec.chart {
            let candidate = base.join(c);
            if spec.repo.is_none() && !c.starts_with("oci://") && candidate.exists() {
                spec.chart = Some(candidate.to_string_lossy().into_owned());
            }
        }
        Ok(spec)
    }
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
        assert!(e.contains("needs `chart` or `images`"), "{e}");
        assert!(load("output: a\nimages: [nginx]\n").is_ok());
    }
}
