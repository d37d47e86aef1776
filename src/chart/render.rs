//! Rendering with a real helm binary: `helm template` once per pass, with the user's values.
//!
//! helm is a child process we do not control: every run is bounded by a timeout (a chart whose templates loop,
//! a helm waiting on something that never comes), and a run that overstays is killed and named with its pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::ChartError;
use crate::support::child_process::{RunError, run_bounded};

/// How the user asked the chart to be rendered; handed to helm as the same flags.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub value_files: Vec<PathBuf>,
    pub set: Vec<String>,
    pub set_string: Vec<String>,
    pub kube_version: Option<String>,
}

/// One `helm template` run's own additions to the user's values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// `--set` expressions after the pass's own.
    pub set: &'a [String],
    /// A values file after the user's (the candidate air-gap values).
    pub values_file: Option<&'a Path>,
}

pub struct Helm {
    path: PathBuf,
    timeout: Duration,
}

impl Helm {
    /// `explicit` (from --helm) must work; otherwise `helm` on PATH, if any.
    pub fn locate(explicit: Option<&Path>, timeout: Duration) -> Result<Option<Helm>, ChartError> {
        if let Some(p) = explicit {
            let helm = Helm { path: p.to_path_buf(), timeout };
            helm.version().map_err(|e| ChartError::Other(format!("--helm {}: {e}", p.display())))?;
            return Ok(Some(helm));
        }
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|d| d.join("helm")).find(|p| p.is_file()))
            .unwrap_or_default();
        Ok(found.map(|path| Helm { path, timeout }).filter(|h| h.version().is_ok()))
    }

    pub fn version(&self) -> Result<String, String> {
        let mut cmd = Command::new(&self.path);
        cmd.args(["version", "--short"]);
        let out = run_bounded(cmd, None, self.timeout).map_err(|e| match e {
            RunError::Spawn(e) => format!("cannot run it: {e}"),
            RunError::TimedOut => format!("`helm version` did not finish within {} s", self.timeout.as_secs()),
        })?;
        if !out.success() {
            return Err(format!("`helm version` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `helm template` of the packaged chart with the user's values and one pass's `--set` expressions.
    pub fn template(
        &self,
        chart: &Path,
        opts: &RenderOptions,
        pass: &[String],
        extra: Extra<'_>,
    ) -> Result<String, ChartError> {
        let mut cmd = Command::new(&self.path);
        cmd.args(["template", "bundle"]).arg(chart).args(["--namespace", "default"]);
        for f in opts.value_files.iter().map(PathBuf::as_path).chain(extra.values_file) {
            cmd.arg("--values").arg(f);
        }
        for s in &opts.set {
            cmd.args(["--set", s]);
        }
        for s in &opts.set_string {
            cmd.args(["--set-string", s]);
        }
        for s in pass.iter().chain(extra.set) {
            cmd.args(["--set", s]);
        }
        if let Some(v) = &opts.kube_version {
            cmd.args(["--kube-version", v]);
        }
        let pass_text =
            if pass.is_empty() { "the common values".to_string() } else { format!("pass `{}`", pass.join(",")) };
        let out = run_bounded(cmd, None, self.timeout).map_err(|e| match e {
            RunError::Spawn(e) => ChartError::Other(format!("cannot run {}: {e}", self.path.display())),
            RunError::TimedOut => ChartError::HelmTimedOut { pass: pass_text.clone(), seconds: self.timeout.as_secs() },
        })?;
        if !out.success() {
            return Err(ChartError::Other(format!(
                "`helm template` failed with {pass_text}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        String::from_utf8(out.stdout).map_err(|_| ChartError::Other("helm printed output that is not UTF-8".into()))
    }
}
