//! `docker save` archives (also `podman save --format docker-archive` and skopeo's `docker-archive:`): a
//! `manifest.json` naming, per image, a config file and one tar per layer. They hold no registry manifests, so
//! there is nothing to compare a manifest digest against; what can be proven is that every config is the image
//! its name says (`<hex>.json`: the image ID is the config's sha256) and every layer is the tar its config
//! lists (`rootfs.diff_ids`: the sha256 of the uncompressed tar). `check` proves that from a scan;
//! Import's `convert` turns the images into Docker schema 2 manifests with gzip layers, for import.
//!
//! The archive's directories, `repositories`, and the legacy per-layer directories (`<id>/json`,
//! `<id>/VERSION`, `<id>/layer.tar`, often a link to the layer file) are accepted and not needed.

pub mod gzip;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::Deserialize;

use super::reader::{BlobEntry, DOCKER_MANIFEST_FILE, FileContent, OtherEntry, OtherKind, Problem, Scan, normalise};
use crate::oci::digest::Digest;
use crate::oci::reference::ImageRef;

/// Where an image's name comes from in these archives.
pub const NAMED_BY: &str = "manifest.json RepoTags";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Links followed from one name to the file it stands for, at most: a loop ends here.
const MAX_LINK_HOPS: usize = 8;

/// A sound `docker save` archive.
#[derive(Debug, Clone)]
pub struct DockerSave {
    pub images: Vec<SavedImage>,
    pub file_digest: Digest,
    pub file_len: u64,
}

/// One `manifest.json` entry: an image, under every name `RepoTags` gives it.
#[derive(Debug, Clone)]
pub struct SavedImage {
    pub names: Vec<ImageRef>,
    /// The config; its digest is the image ID.
    pub config: SavedFile,
    pub config_bytes: Bytes,
    pub layers: Vec<SavedLayer>,
    /// `os/architecture[/variant]` from the config.
    pub platform: String,
}

/// A file of the archive, as the scan found it.
#[derive(Debug, Clone)]
pub struct SavedFile {
    pub path: String,
    pub entry: BlobEntry,
    /// sha256 of the file's bytes.
    pub digest: Digest,
}

#[derive(Debug, Clone)]
pub struct SavedLayer {
    pub file: SavedFile,
    /// The file is gzip already (it travels as it is); otherwise it is the uncompressed tar, compressed on import.
    pub gzip: bool,
}

impl SavedImage {
    /// Bytes of the config and the layers as the archive holds them.
    pub fn size(&self) -> u64 {
        self.config.entry.size + self.layers.iter().map(|l| l.file.entry.size).sum::<u64>()
    }
}

impl DockerSave {
    pub fn total_bytes(&self) -> u64 {
        self.distinct_files().values().map(|f| f.entry.size).sum()
    }

    /// Every config and layer file, once.
    pub fn distinct_files(&self) -> BTreeMap<&str, &SavedFile> {
        let mut files = BTreeMap::new();
        for img in &self.images {
            files.insert(img.config.path.as_str(), &img.config);
            for l in &img.layers {
                files.insert(l.file.path.as_str(), &l.file);
            }
        }
        files
    }

    /// The layer files that are uncompressed tars (compressed on import), each once.
    pub fn plain_layers(&self) -> Vec<&SavedFile> {
        let mut plain: BTreeMap<&Digest, &SavedFile> = BTreeMap::new();
        for l in self.images.iter().flat_map(|i| &i.layers).filter(|l| !l.gzip) {
            plain.entry(&l.file.digest).or_insert(&l.file);
        }
        plain.into_values().collect()
    }

    pub fn layer_count(&self) -> usize {
        self.distinct_files().len() - self.images.iter().map(|i| &i.config.digest).collect::<BTreeSet<_>>().len()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigFacts {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

/// Check a scan of a `docker save` archive: everything `manifest.json` names is present, every config matches the
/// image ID in its name, every layer matches its diff_id, every image has a name, and nothing else is there.
pub fn check(scan: Scan) -> (Option<DockerSave>, Vec<Problem>) {
    let mut problems = scan.problems.clone();
    let mut problem = |entry: &str, message: String| problems.push(Problem { entry: entry.to_string(), message });
    let manifest = scan.docker_manifest.as_deref().unwrap_or_default();
    let entries: Vec<ManifestEntry> = match serde_json::from_slice(manifest) {
        Ok(e) => e,
        Err(e) => {
            problem(
                DOCKER_MANIFEST_FILE,
                format!("is not a docker save manifest (a list of Config, RepoTags, Layers): {e}"),
            );
            return (None, problems);
        }
    };
    if entries.is_empty() {
        problem(DOCKER_MANIFEST_FILE, "lists no images".into());
    }
    let files = Files::new(&scan.others);
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut images = Vec::new();
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("{DOCKER_MANIFEST_FILE} [{i}]");
        let config = match files.resolve(&e.config, &mut used) {
            Ok(f) => f,
            Err(m) => {
                problem(&at, format!("names the config `{}`, which {m}", e.config));
                continue;
            }
        };
        let (config_file, config_json) = config;
        if let Some(id) = image_id_in_name(&e.config)
            && id != config_file.digest.hex()
        {
            problem(
                &e.config,
                format!(
                    "is named for image ID {id}, but its sha256 is {}: the config was altered",
                    config_file.digest.hex()
                ),
            );
        }
        let Some(config_bytes) = config_json else {
            problem(&e.config, "is not a JSON image config".into());
            continue;
        };
        let facts: ConfigFacts = match serde_json::from_slice(&config_bytes) {
            Ok(f) => f,
            Err(err) => {
                problem(&e.config, format!("is not an image config with rootfs.diff_ids: {err}"));
                continue;
            }
        };
        if facts.rootfs.diff_ids.len() != e.layers.len() {
            problem(
                &at,
                format!(
                    "lists {} layers, but its config {} lists {} diff_ids",
                    e.layers.len(),
                    e.config,
                    facts.rootfs.diff_ids.len()
                ),
            );
            continue;
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in e.layers.iter().zip(&facts.rootfs.diff_ids) {
            let (file, _) = match files.resolve(layer, &mut used) {
                Ok(f) => f,
                Err(m) => {
                    problem(&at, format!("names the layer `{layer}`, which {m}"));
                    continue;
                }
            };
            let content = files.content(&file.path);
            let (uncompressed, gzip) = match content {
                FileContent::Plain => (Some(file.digest.clone()), false),
                FileContent::Gzip(d) => (d, true),
                FileContent::Zstd => {
                    problem(
                        layer,
                        "is zstd-compressed; bundle reads docker save layers that are plain or gzip tars".into(),
                    );
                    continue;
                }
            };
            match uncompressed {
                None => problem(layer, "is gzip data that does not decompress: the layer is damaged".into()),
                Some(d) if &d != diff_id => problem(
                    layer,
                    format!(
                        "is not the layer its config lists: its tar's sha256 is {}, the config's diff_id is {}",
                        d.hex(),
                        diff_id.hex()
                    ),
                ),
                Some(_) => layers.push(SavedLayer { file, gzip }),
            }
        }
        let mut names = Vec::new();
        for tag in e.repo_tags.iter().flatten() {
            match ImageRef::parse(tag) {
                Ok(r) => {
                    if let Some(other) = named.insert(r.to_string(), i) {
                        problem(&at, format!("names `{tag}`, which entry [{other}] names too"));
                    }
                    names.push(r);
                }
                Err(err) => problem(&at, format!("has the RepoTag `{tag}`, which is not an image reference ({err})")),
            }
        }
        if e.repo_tags.as_ref().is_none_or(Vec::is_empty) {
            problem(
                &at,
                format!(
                    "image {} has no RepoTags (it was saved by ID), so it has no name to import it under; save it by name (`docker save REPOSITORY:TAG`)",
                    config_file.digest
                ),
            );
        }
        if layers.len() != e.layers.len() {
            continue;
        }
        let platform = [Some(facts.os), Some(facts.architecture), facts.variant]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        images.push(SavedImage { names, config: config_file, config_bytes, layers, platform });
    }
    for other in &scan.others {
        match &other.kind {
            OtherKind::Link { target: None, .. } => problem(&other.path, "is a link that leaves the archive".into()),
            OtherKind::File { .. } if !used.contains(&other.path) && !is_legacy(&other.path) => problem(
                &other.path,
                format!("is not part of a docker save archive: {DOCKER_MANIFEST_FILE} does not name it"),
            ),
            _ => {}
        }
    }
    for path in scan.blobs.keys().map(|d| d.layout_path()) {
        problem(&path, format!("is not part of a docker save archive: {DOCKER_MANIFEST_FILE} does not name it"));
    }
    if !problems.is_empty() {
        return (None, problems);
    }
    (Some(DockerSave { images, file_digest: scan.file_digest, file_len: scan.file_len }), problems)
}

/// `<64 hex>.json` or `blobs/sha256/<64 hex>`: the image ID a config file's name carries.
fn image_id_in_name(path: &str) -> Option<&str> {
    let name = path.strip_suffix(".json").or_else(|| path.strip_prefix(crate::oci::layout::SHA256_DIR))?;
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// The legacy per-layer files older docker and containers/image write beside the images' own files.
fn is_legacy(path: &str) -> bool {
    path == "repositories"
        || path
            .split_once('/')
            .is_some_and(|(dir, name)| !dir.contains('/') && matches!(name, "json" | "VERSION" | "layer.tar"))
}

/// The archive's files and links by path.
struct Files<'a> {
    entries: BTreeMap<&'a str, &'a OtherKind>,
}

impl<'a> Files<'a> {
    fn new(others: &'a [OtherEntry]) -> Files<'a> {
        Files { entries: others.iter().map(|o| (o.path.as_str(), &o.kind)).collect() }
    }

    /// The file `path` names, following links; records every path it passed through in `used`.
    fn resolve(&self, path: &str, used: &mut BTreeSet<String>) -> Result<(SavedFile, Option<Bytes>), String> {
        let mut at = normalise(path).filter(|p| p != ".").ok_or("leaves the archive")?;
        for _ in 0..=MAX_LINK_HOPS {
            used.insert(at.clone());
            match self.entries.get(at.as_str()) {
                None => return Err("is not in the archive".into()),
                Some(OtherKind::Directory) => return Err("is a directory".into()),
                Some(OtherKind::Link { target: None, .. }) => return Err("is a link that leaves the archive".into()),
                Some(OtherKind::Link { target: Some(t), .. }) => at = t.clone(),
                Some(OtherKind::File { entry, digest, json, .. }) => {
                    let file = SavedFile { path: at, entry: *entry, digest: digest.clone() };
                    return Ok((file, json.clone()));
                }
            }
        }
        Err(format!("is a chain of more than {MAX_LINK_HOPS} links"))
    }

    fn content(&self, path: &str) -> FileContent {
        match self.entries.get(path) {
            Some(OtherKind::File { content, .. }) => content.clone(),
            _ => FileContent::Plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_come_from_config_names() {
        let hex = "a".repeat(64);
        assert_eq!(image_id_in_name(&format!("{hex}.json")), Some(hex.as_str()));
        assert_eq!(image_id_in_name(&format!("blobs/sha256/{hex}")), Some(hex.as_str()));
        assert_eq!(image_id_in_name("config.json"), None);
    }

    #[test]
    fn legacy_layer_directories_are_recognised() {
        assert!(is_legacy("0123/json"));
        assert!(is_legacy("0123/layer.tar"));
        assert!(is_legacy("repositories"));
        assert!(!is_legacy("0123/other"));
        assert!(!is_legacy("a/b/json"));
    }
}
