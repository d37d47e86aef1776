//! Rendering for the proof the way a user installs: their values files, then their `--set`, `--set-string` and
//! the pass's values as one more file, then the probe's values last; and reading where each image landed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::super::discover;
use super::super::render::{Extra, RenderOptions};
use super::super::values::{self, UserValues};
use super::super::values_out::{self, parse_dotted};
use super::trace::{align, located};
use super::{ProbeInput, Site, SiteKey, literal, sentinel};
use crate::oci::destination::Destination;
use crate::oci::layout::{ValuesOverride, ValuesPlan};
use crate::oci::reference::ImageRef;

/// Renders for the proof the way a user installs: the user's values files, then their `--set` and the pass's
/// values as one more file, then the probe's file last.
pub(super) struct Renderer<'a> {
    input: &'a ProbeInput<'a>,
    /// Per pass: the values files before the probe's.
    files: Vec<Vec<PathBuf>>,
    _set_files: Vec<tempfile::NamedTempFile>,
}

impl<'a> Renderer<'a> {
    pub fn new(input: &'a ProbeInput<'a>) -> Result<Renderer<'a>, String> {
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

    pub fn render(&self, pass: usize, values: &Value) -> Result<String, String> {
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
            .map_err(|e| crate::support::error_text::chain_line(&e))
    }

    /// The trace render of one pass; a refusal is tried once more with the chart's switch for foreign images.
    pub fn render_with_switch(
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
    pub fn landed(
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

pub(super) fn plan_of(overrides: &[ValuesOverride]) -> ValuesPlan {
    ValuesPlan { proven: false, overrides: overrides.to_vec(), unmovable: vec![], images: vec![] }
}

pub(super) fn temp_values(dir: &Path, values: &Value) -> Result<tempfile::NamedTempFile, String> {
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
