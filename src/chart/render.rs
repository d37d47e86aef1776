//! Rendering with a real helm binary: `helm template` once per pass, with the user's values.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ChartError;

/// How the user asked the chart to be rendered; handed to helm as the same flags.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub value_files: Vec<PathBuf>,
    pub set: Vec<String>,
    pub set_string: Vec<String>,
    pub kube_version: Option<String>,
}

pub struct Helm {
    path: PathBuf,
}

impl Helm {
    /// `explicit` (from --helm) must work; otherwise `helm` on PATH, if any.
    pub fn locate(explicit: Option<&Path>) -> Result<Option<Helm>, ChartError> {
        if let Some(p) = explicit {
            let helm = Helm { path: p.to_path_buf() };
            helm.version().map_err(|e| ChartError::Other(format!("--helm {}: {e}", p.display())))?;
            return Ok(Some(helm));
        }
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|d| d.join("helm")).find(|p| p.is_file()))
            .unwrap_or_default();
        Ok(found.map(|path| Helm { path }).filter(|h| h.version().is_ok()))
    }

    pub fn version(&self) -> Result<String, String> {
        let out = Command::new(&self.path).args(["version", "--short"]).output().map_err(|e| format!("cannot run it: {e}"))?;
        if !out.status.success() {
            return Err(format!("`helm version` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `helm template` of the packaged chart with the user's values and one pass's `--set` expressions.
    pub fn template(&self, chart: &Path, opts: &RenderOptions, pass: &[String], extra_set: &[String]) -> Result<String, ChartError> {
        let mut cmd = Command::new(&self.path);
        cmd.args(["template", "bundle"]).arg(chart).args(["--namespace", "default"]);
        for f in &opts.value_files {
            cmd.arg("--values").arg(f);
        }
        for s in &opts.set {
            cmd.args(["--set", s]);
        }
        for s in &opts.set_string {
            cmd.args(["--set-string", s]);
        }
        for s in pass.iter().chain(extra_set) {
            cmd.args(["--set", s]);
        }
        if let Some(v) = &opts.kube_version {
            cmd.args(["--kube-version", v]);
        }
        let out = cmd.output().map_err(|e| ChartError::Other(format!("cannot run {}: {e}", self.path.display())))?;
        if !out.status.success() {
            let pass_text = if pass.is_empty() { "the common values".to_string() } else { format!("pass `{}`", pass.join(",")) };
            return Err(ChartError::Other(format!(
                "`helm template` failed with {pass_text}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        String::from_utf8(out.stdout).map_err(|_| ChartError::Other("helm printed output that is not UTF-8".into()))
    }
}
