//! Packaging a chart directory into a `.tgz` that helm reads and that travels in the bundle.
//!
//! Deterministic like the archive itself (sorted entries, fixed modes and times, gzip without a timestamp), so
//! the same chart directory always gives the same package and the same digest. `file://` dependencies that are
//! not vendored yet are packaged into `charts/`, as `helm dependency build` would do.

use std::io::Write;
use std::path::Path;

use super::{Chart, ChartError, ChartFiles, read_dir_files};

/// `.helmignore`: one glob per line; `dir/` matches directories; `*` and `?` within a path component; a pattern
/// without `/` matches the last component anywhere. Comments (`#`) and blank lines are skipped.
#[derive(Debug, Default)]
pub struct HelmIgnore {
    patterns: Vec<(String, bool)>,
}

impl HelmIgnore {
    pub fn parse(text: &str) -> HelmIgnore {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
            .map(|l| (l.trim_end_matches('/').trim_start_matches("./").to_string(), l.ends_with('/')))
            .collect();
        HelmIgnore { patterns }
    }

    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        // VCS metadata never belongs in a chart package.
        if matches!(name, ".git" | ".hg" | ".svn") {
            return true;
        }
        self.patterns.iter().any(|(p, dir_only)| {
            if *dir_only && !is_dir {
                return false;
            }
            if p.contains('/') { glob(p, rel) } else { glob(p, name) }
        })
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != '/' && go(p, &t[1..])),
            (Some('?'), Some(c)) if *c != '/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(&p, &t)
}

/// Package the chart in `dir` (with `file://` dependencies vendored) as `.tgz` bytes.
pub fn package_dir(dir: &Path) -> Result<Vec<u8>, ChartError> {
    let mut files = read_dir_files(dir)?;
    vendor_file_dependencies(dir, &mut files)?;
    let chart = Chart::from_files(&files, &dir.display().to_string(), Some(dir))?;
    Ok(tgz(&chart.meta.name, &files))
}

fn vendor_file_dependencies(dir: &Path, files: &mut ChartFiles) -> Result<(), ChartError> {
    let Some(chart_yaml) = files.get("Chart.yaml") else { return Ok(()) };
    let meta: super::ChartMeta = serde_yaml_ng::from_slice(chart_yaml)
        .map_err(|e| ChartError::Invalid { what: dir.display().to_string(), message: format!("Chart.yaml: {e}") })?;
    for dep in &meta.dependencies {
        let Some(rel) = dep.repository.as_deref().and_then(|r| r.strip_prefix("file://")) else { continue };
        let vendored = files.keys().any(|k| {
            k.strip_prefix("charts/").is_some_and(|rest| {
                rest.starts_with(&format!("{}-", dep.name)) && rest.ends_with(".tgz")
                    || rest.starts_with(&format!("{}/", dep.name))
            })
        });
        if vendored {
            continue;
        }
        let dep_dir = dir.join(rel);
        let bytes = package_dir(&dep_dir)?;
        let dep_meta = Chart::from_files(
            &super::unpack_tgz(&bytes, &dep_dir.display().to_string())?,
            &dep_dir.display().to_string(),
            None,
        )?
        .meta;
        files.insert(format!("charts/{}-{}.tgz", dep_meta.name, dep_meta.version), bytes);
    }
    Ok(())
}

/// A gzip'd tar of `files` under `name/`, with everything that could vary fixed.
pub fn tgz(name: &str, files: &ChartFiles) -> Vec<u8> {
    let gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("{name}/{path}")).expect("chart paths fit in a tar header");
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        tar.append(&h, &bytes[..]).expect("writing to memory");
    }
    let mut gz = tar.into_inner().expect("writing to memory");
    gz.flush().expect("writing to memory");
    gz.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helmignore_globs() {
        let i = HelmIgnore::parse("# c\n*.tmp\nci/\nsecret.yaml\ndocs/*.md\n");
        assert!(i.is_ignored("a/b.tmp", false));
        assert!(i.is_ignored("ci", true));
        assert!(!i.is_ignored("ci", false));
        assert!(i.is_ignored("templates/secret.yaml", false));
        assert!(i.is_ignored("docs/x.md", false));
        assert!(!i.is_ignored("docs/sub/x.md", false));
        assert!(!i.is_ignored("values.yaml", false));
        assert!(i.is_ignored(".git", true));
    }

    #[test]
    fn packages_are_deterministic_and_round_trip() {
        let mut files = ChartFiles::new();
        files.insert("Chart.yaml".into(), b"apiVersion: v2\nname: demo\nversion: 1.2.3\n".to_vec());
        files.insert("values.yaml".into(), b"image: {repository: a/b, tag: '1'}\n".to_vec());
        let a = tgz("demo", &files);
        assert_eq!(a, tgz("demo", &files));
        let back = crate::chart::unpack_tgz(&a, "demo").unwrap();
        assert_eq!(back, files);
    }
}
