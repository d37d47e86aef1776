//! Where a chart comes from, with helm's meanings: a directory, a packaged `.tgz`, a chart name in a chart
//! repository (`-r URL`: `index.yaml`, `--version` or the newest stable version, digest checked), or an
//! `oci://` reference pulled with our registry client.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Chart, ChartError, package, unpack_tgz};
use crate::oci::digest::Digest;
use crate::oci::reference::ImageRef;
use crate::registry::{Registries, Role};

use crate::oci::manifest::HELM_CONTENT;
/// Charts are small; anything larger is refused rather than held in memory.
const MAX_CHART_BYTES: u64 = 64 << 20;

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct ChartRequest {
    pub chart: String,
    pub repo: Option<String>,
    pub version: Option<String>,
}

/// A chart ready to render and to ship: its package bytes and the loaded tree.
#[derive(Debug, Clone)]
pub struct LoadedChart {
    pub package: Vec<u8>,
    pub chart: Chart,
    /// Where it came from, for messages and bundle.json.
    pub origin: String,
}

pub async fn load(req: &ChartRequest, registries: &Registries) -> Result<LoadedChart, ChartError> {
    if let Some(reference) = req.chart.strip_prefix("oci://") {
        if req.repo.is_some() {
            return Err(ChartError::Other("--repo does not go with an oci:// chart".into()));
        }
        let package = pull_oci(reference, req.version.as_deref(), registries).await?;
        return from_package(package, req.chart.clone());
    }
    if let Some(repo) = &req.repo {
        let (package, origin) = from_repository(repo, &req.chart, req.version.as_deref()).await?;
        return from_package(package, origin);
    }
    let path = PathBuf::from(&req.chart);
    if path.is_dir() {
        let package = package::package_dir(&path)?;
        let files = super::read_dir_files(&path)?;
        let chart = Chart::from_files(&files, &path.display().to_string(), Some(&path))?;
        check_version(&chart, req.version.as_deref())?;
        // Only the directory's name: the bundle must not depend on (or reveal) where it was exported from.
        return Ok(LoadedChart { package, chart, origin: format!("directory {}", base_name(&path)) });
    }
    if path.is_file() {
        let package = std::fs::read(&path).map_err(|source| ChartError::Read { path: path.clone(), source })?;
        let loaded = from_package(package, format!("package {}", base_name(&path)))?;
        check_version(&loaded.chart, req.version.as_deref())?;
        return Ok(loaded);
    }
    Err(ChartError::Other(format!(
        "chart `{}` is not a directory, a .tgz file or an oci:// reference; to use a chart repository, add --repo URL",
        req.chart
    )))
}

fn base_name(path: &std::path::Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn from_package(package: Vec<u8>, origin: String) -> Result<LoadedChart, ChartError> {
    let files = unpack_tgz(&package, &origin)?;
    let chart = Chart::from_files(&files, &origin, None)?;
    Ok(LoadedChart { package, chart, origin })
}

fn check_version(chart: &Chart, wanted: Option<&str>) -> Result<(), ChartError> {
    match wanted {
        Some(v) if v != chart.meta.version => {
            Err(ChartError::Other(format!("the chart is {} {}, not version {v}", chart.meta.name, chart.meta.version)))
        }
        _ => Ok(()),
    }
}

async fn pull_oci(reference: &str, version: Option<&str>, registries: &Registries) -> Result<Vec<u8>, ChartError> {
    // Helm writes `+` in versions as `_` in tags.
    let with_tag = match version {
        Some(v) if !reference.rsplit('/').next().unwrap_or("").contains(':') => {
            format!("{reference}:{}", v.replace('+', "_"))
        }
        _ => reference.to_string(),
    };
    let image = ImageRef::parse(&with_tag).map_err(|e| ChartError::Other(format!("oci://{with_tag}: {e}")))?;
    let err = |e: &dyn std::error::Error| {
        ChartError::Other(format!("cannot pull chart oci://{with_tag}: {}", crate::support::error_text::chain_line(e)))
    };
    let client = registries.client(image.registry(), Role::Source).map_err(|e| err(&e))?;
    let manifest = client.get_manifest(image.repository(), &image.manifest_reference()).await.map_err(|e| err(&e))?;
    #[derive(Deserialize)]
    struct Layer {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: Digest,
        size: u64,
    }
    #[derive(Deserialize)]
    struct Manifest {
        layers: Vec<Layer>,
    }
    let m: Manifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|_| ChartError::Other(format!("oci://{with_tag} is not an image manifest (is it a chart?)")))?;
    let layer = m.layers.iter().find(|l| l.media_type == HELM_CONTENT).ok_or_else(|| {
        ChartError::Other(format!("oci://{with_tag} has no {HELM_CONTENT} layer: it is not a Helm chart"))
    })?;
    if layer.size > MAX_CHART_BYTES {
        return Err(ChartError::Other(format!("oci://{with_tag}: the chart is larger than {MAX_CHART_BYTES} bytes")));
    }
    let bytes = client.get_blob_bytes(image.repository(), &layer.digest, MAX_CHART_BYTES).await.map_err(|e| err(&e))?;
    Ok(bytes.to_vec())
}

#[derive(Deserialize)]
struct RepoIndex {
    #[serde(default)]
    entries: std::collections::BTreeMap<String, Vec<RepoEntry>>,
}

#[derive(Deserialize, Clone)]
struct RepoEntry {
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

async fn from_repository(repo: &str, name: &str, version: Option<&str>) -> Result<(Vec<u8>, String), ChartError> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("bundle/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| ChartError::Other(e.to_string()))?;
    let base = url::Url::parse(&format!("{}/", repo.trim_end_matches('/')))
        .map_err(|e| ChartError::Other(format!("--repo `{repo}` is not a URL: {e}")))?;
    let index_url = base.join("index.yaml").expect("relative join");
    let fetch = |url: url::Url| {
        let http = http.clone();
        async move {
            let resp = http.get(url.clone()).send().await.map_err(|e| {
                ChartError::Other(format!("cannot fetch {url}: {}", crate::support::error_text::chain_line(&e)))
            })?;
            if !resp.status().is_success() {
                return Err(ChartError::Other(format!("cannot fetch {url}: HTTP {}", resp.status())));
            }
            resp.bytes().await.map_err(|e| ChartError::Other(format!("cannot fetch {url}: {e}")))
        }
    };
    let index: RepoIndex = serde_yaml_ng::from_slice(&fetch(index_url.clone()).await?)
        .map_err(|e| ChartError::Other(format!("{index_url} is not a chart repository index: {e}")))?;
    let entries = index
        .entries
        .get(name)
        .ok_or_else(|| ChartError::Other(format!("chart `{name}` is not in the repository {repo}")))?;
    let entry = match version {
        Some(v) => entries
            .iter()
            .find(|e| e.version == v || e.version.trim_start_matches('v') == v.trim_start_matches('v'))
            .cloned()
            .ok_or_else(|| {
                let mut available: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
                available.truncate(10);
                ChartError::Other(format!(
                    "{name} {v} is not in the repository {repo} (it has {})",
                    available.join(", ")
                ))
            })?,
        None => newest_stable(entries).ok_or_else(|| {
            ChartError::Other(format!("the repository {repo} has no stable version of {name}; pass --version"))
        })?,
    };
    let url = entry
        .urls
        .first()
        .ok_or_else(|| ChartError::Other(format!("{name} {} has no download URL in the index", entry.version)))?;
    let url = base.join(url).map_err(|e| ChartError::Other(format!("bad chart URL `{url}`: {e}")))?;
    let bytes = fetch(url.clone()).await?;
    if let Some(expected) = &entry.digest {
        let actual = Digest::of(&bytes);
        if actual.hex() != expected.trim_start_matches("sha256:") {
            return Err(ChartError::Other(format!(
                "{url} does not match the digest in the repository index (expected {expected}, got {})",
                actual.hex()
            )));
        }
    }
    Ok((bytes.to_vec(), format!("{name} {} from {repo}", entry.version)))
}

/// Highest version without a pre-release part, by semantic-version order.
fn newest_stable(entries: &[RepoEntry]) -> Option<RepoEntry> {
    entries
        .iter()
        .filter_map(|e| semver_key(&e.version).map(|k| (k, e)))
        .filter(|(k, _)| !k.3)
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, e)| e.clone())
}

/// (major, minor, patch, is_prerelease)
fn semver_key(v: &str) -> Option<(u64, u64, u64, bool)> {
    let v = v.trim_start_matches('v');
    let core = v.split('+').next()?;
    let (nums, pre) = match core.split_once('-') {
        Some((n, _)) => (n, true),
        None => (core, false),
    };
    let mut it = nums.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next().unwrap_or("0").parse().ok()?;
    let patch = it.next().unwrap_or("0").parse().ok()?;
    Some((major, minor, patch, pre))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_stable_skips_prereleases() {
        let e = |v: &str| RepoEntry { version: v.into(), urls: vec![], digest: None };
        let got = newest_stable(&[e("1.9.0"), e("1.10.0"), e("2.0.0-rc.1"), e("1.10.0+build")]).unwrap();
        assert!(got.version.starts_with("1.10.0"));
    }
}
