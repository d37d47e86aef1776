//! From a scan to verified contents: the images, their manifest graphs, and where every blob is.
//!
//! This is where "complete and unaltered" is decided: the sidecar matches the file, every blob matched its
//! name during the scan, every manifest reachable from `index.json` is present with the size its parent
//! declares, every blob a manifest needs is present with its declared size, `bundle.json` agrees with all of
//! that, and nothing else is in the archive.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::docker_save::DockerSave;
use super::reader::{BlobEntry, DOCKER_MANIFEST_FILE, OtherKind, Problem, Scan};
use crate::oci::digest::Digest;
use crate::oci::layout::{
    BundleMetadata, CONTAINERD_NAME, DELTA_FORMAT_VERSION, FORMAT_VERSION, LayoutIndex, REF_NAME,
    SIGNED_FORMAT_VERSION, SUITE_FORMAT_VERSION, VOLUME_FORMAT_VERSION, VolumeRecord,
};
use crate::oci::manifest::{self, ManifestLinks};
use crate::oci::reference::ImageRef;

/// One image of the archive, with its graph in push order.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    pub source: ImageRef,
    pub digest: Digest,
    pub media_type: String,
    pub platforms: Vec<String>,
    /// Bytes of every distinct manifest and blob the image needs.
    pub size: u64,
    /// Manifests, children before the indexes that list them; the root is last.
    pub manifests: Vec<Digest>,
    /// Config and layer blobs, without duplicates.
    pub blobs: Vec<Digest>,
    /// The bundled Helm chart (an OCI artifact), not a container image.
    pub helm_chart: bool,
    /// Children of the index left out by `--platform-mode sparse`: the index names them, the archive does not
    /// hold them.
    pub omitted: Vec<Digest>,
    /// A signature, attestation or SBOM of another image's manifest, pushed after it.
    pub artifact: Option<crate::oci::layout::ArtifactRecord>,
    /// Where the name came from: `bundle.json`, or the index.json annotation that held a full reference.
    pub named_by: &'static str,
}

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
    pub links: ManifestLinks,
}

/// A verified archive's contents.
#[derive(Debug, Clone)]
pub struct BundleContents {
    pub images: Vec<ArchiveImage>,
    pub manifests: HashMap<Digest, StoredManifest>,
    pub blobs: BTreeMap<Digest, BlobEntry>,
    /// A volume's pieces of blobs that span volumes, by the piece's digest (empty in a whole archive).
    pub pieces: BTreeMap<Digest, BlobEntry>,
    /// `None` for archives another tool wrote (skopeo's oci-archive).
    pub metadata: Option<BundleMetadata>,
    pub file_digest: Digest,
    pub file_len: u64,
}

impl BundleContents {
    pub fn total_bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.size).sum()
    }

    /// The size of a blob the images need: in the archive, or left to a delta's base.
    pub fn blob_size(&self, digest: &Digest) -> u64 {
        match self.blobs.get(digest) {
            Some(b) => b.size,
            None => self
                .metadata
                .as_ref()
                .and_then(|m| m.delta.as_ref())
                .and_then(|d| d.absent.iter().find(|b| &b.digest == digest))
                .map_or(0, |b| b.size),
        }
    }

    /// Which volume of which set this archive is, when it is one.
    pub fn volume(&self) -> Option<&VolumeRecord> {
        self.metadata.as_ref().and_then(|m| m.volume.as_ref())
    }
}

/// What a sound archive turned out to be.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per command run, moved once
pub enum Checked {
    /// An OCI image layout (ours, or another tool's): images with their manifests, ready to push.
    Layout(BundleContents),
    /// A `docker save` archive: configs and layer tars, without manifests (import writes them).
    DockerSave(DockerSave),
}

/// Check a scan of any archive bundle reads: an OCI layout, or a `docker save` archive (`manifest.json` and no
/// layout). Returns what it is when sound, and every problem found.
pub fn check_any(scan: Scan, sidecar: Option<&Digest>) -> (Option<Checked>, Vec<Problem>) {
    if scan.oci_layout.is_none() && scan.index.is_none() && scan.docker_manifest.is_some() && !scan.directory {
        let mut problems = sidecar_problems(&scan, sidecar);
        let (saved, found) = super::docker_save::check(scan);
        problems.extend(found);
        return match saved {
            Some(s) if problems.is_empty() => (Some(Checked::DockerSave(s)), problems),
            _ => (None, problems),
        };
    }
    let (contents, problems) = check(scan, sidecar);
    (contents.map(Checked::Layout), problems)
}

/// The file against its `.sha256` sidecar.
fn sidecar_problems(scan: &Scan, sidecar: Option<&Digest>) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(expected) = sidecar
        && expected != &scan.file_digest
    {
        add(
            &mut problems,
            "archive",
            format!(
                "its sha256 is {} but the .sha256 file says {}; the file was altered or is incomplete",
                scan.file_digest.hex(),
                expected.hex()
            ),
        );
    }
    problems
}

/// Check a scan of an OCI layout. Returns the contents when the archive is sound (no problems), and every
/// problem found.
pub fn check(scan: Scan, sidecar: Option<&Digest>) -> (Option<BundleContents>, Vec<Problem>) {
    let mut problems = scan.problems.clone();
    problems.extend(sidecar_problems(&scan, sidecar));
    // Another kind of archive altogether: one problem that says which, not one per entry. Unless the archive is
    // damaged: a header that lies about its size hides every entry after it, so the damage is the cause to name.
    if scan.oci_layout.is_none() && scan.index.is_none() {
        if !problems.is_empty() {
            return (None, problems);
        }
        let what = if scan.directory && scan.extras.iter().any(|e| e == DOCKER_MANIFEST_FILE) {
            "this directory is an unpacked `docker save` archive (manifest.json and layer tars); bundle reads docker save archives as tar files: `tar -C DIR -cf OUT.tar .`, then import OUT.tar"
        } else if scan.extras.iter().any(|e| e == DOCKER_MANIFEST_FILE) {
            "this looks like a `docker save` archive, but its manifest.json is larger than bundle reads"
        } else if scan.directory {
            "this directory is not an OCI image layout: it has no oci-layout and no index.json"
        } else {
            "this is not an OCI image layout nor a `docker save` archive: it has no oci-layout, no index.json and no manifest.json"
        };
        return (None, vec![Problem { entry: "archive".into(), message: what.into() }]);
    }
    match &scan.oci_layout {
        None => add(&mut problems, "oci-layout", "is missing".into()),
        Some(b) => {
            let ok = serde_json::from_slice::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v.get("imageLayoutVersion").and_then(|x| x.as_str()).map(|s| s == "1.0.0"))
                .unwrap_or(false);
            if !ok {
                add(&mut problems, "oci-layout", "is not `{\"imageLayoutVersion\":\"1.0.0\"}`".into());
            }
        }
    }
    let index = match &scan.index {
        None => {
            add(&mut problems, "index.json", "is missing".into());
            None
        }
        Some(b) => match serde_json::from_slice::<LayoutIndex>(b) {
            Ok(i) => Some(i),
            Err(e) => {
                add(&mut problems, "index.json", format!("is not a valid image index: {e}"));
                None
            }
        },
    };
    let metadata = match &scan.metadata {
        None => None,
        Some(b) => {
            let version = serde_json::from_slice::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v.get("formatVersion").and_then(|x| x.as_u64()));
            match version {
                Some(v) if !(FORMAT_VERSION as u64..=SIGNED_FORMAT_VERSION as u64).contains(&v) => {
                    add(
                        &mut problems,
                        "bundle.json",
                        format!(
                            "has format version {v}, but this bundle reads versions {FORMAT_VERSION} to {SIGNED_FORMAT_VERSION}; use the bundle release that wrote it"
                        ),
                    );
                    None
                }
                _ => match serde_json::from_slice::<BundleMetadata>(b) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        add(&mut problems, "bundle.json", format!("is not valid: {e}"));
                        None
                    }
                },
            }
        }
    };
    let volume = metadata.as_ref().is_some_and(|m| m.volume.is_some());
    let pieces = outside_the_layout(&scan, volume, &mut problems);
    let Some(index) = index else { return (None, problems) };

    // Blobs a delta leaves to its base, or (a volume) other volumes hold: needed, and not in this archive.
    let absent = not_held_here(metadata.as_ref());
    // Walk every image's graph.
    let mut manifests: HashMap<Digest, StoredManifest> = HashMap::new();
    let mut referenced: BTreeSet<Digest> = BTreeSet::new();
    let mut images = Vec::new();
    for (i, desc) in index.manifests.iter().enumerate() {
        let entry = format!("index.json manifests[{i}]");
        let (name, named_by) = image_name(metadata.as_ref().and_then(|m| m.images.get(i)), desc);
        let source = match name.as_deref().map(|n| (n, parse_image_name(n))) {
            Some((_, Ok(r))) => Some(r),
            Some((n, Err(msg))) => {
                add(
                    &mut problems,
                    &entry,
                    format!(
                        "names the image `{n}` in `{named_by}`, which {msg}, and has no full reference in `{CONTAINERD_NAME}` either; import needs the full source reference (re-create the archive with `skopeo copy … oci-archive:FILE:REGISTRY/REPO:TAG`)"
                    ),
                );
                None
            }
            None => {
                add(
                    &mut problems,
                    &entry,
                    format!(
                        "has neither a `{REF_NAME}` nor an `{CONTAINERD_NAME}` annotation, so the image has no name to import it under"
                    ),
                );
                None
            }
        };
        let omitted: BTreeSet<Digest> = metadata
            .as_ref()
            .and_then(|m| m.images.get(i))
            .and_then(|img| img.platform_selection.as_ref())
            .map(|s| s.omitted.iter().cloned().collect())
            .unwrap_or_default();
        let mut walk = Walk {
            omitted: &omitted,
            absent: &absent,
            scan: &scan,
            manifests: &mut manifests,
            order: Vec::new(),
            blobs: Vec::new(),
            seen: BTreeSet::new(),
            problems: Vec::new(),
            platforms: Vec::new(),
        };
        walk.visit(&desc.digest, Some(&desc.media_type), desc.size, &entry, true);
        let Walk { order, blobs, seen, problems: walk_problems, platforms, .. } = walk;
        problems.extend(walk_problems);
        // A delta's image is as large as it was in full: absent blobs count.
        let size = seen.iter().filter_map(|d| scan.blobs.get(d).map(|b| b.size).or(absent.get(d).copied())).sum();
        referenced.extend(seen);
        if let Some(source) = source {
            images.push(ArchiveImage {
                source,
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                platforms,
                size,
                manifests: order,
                blobs,
                helm_chart: metadata.as_ref().and_then(|m| m.images.get(i)).is_some_and(|img| img.helm_chart),
                omitted: omitted.into_iter().collect(),
                named_by,
                artifact: metadata.as_ref().and_then(|m| m.images.get(i)).and_then(|img| img.artifact.clone()),
            });
        }
    }
    for d in scan.blobs.keys().filter(|d| !referenced.contains(*d)) {
        problems
            .push(Problem { entry: d.layout_path(), message: "is not referenced by any image in index.json".into() });
    }

    if let Some(meta) = &metadata {
        check_metadata(meta, &index, &scan, &images, &absent, &mut problems);
        if let Some(record) = &meta.volume {
            check_volume(meta, record, &scan, &manifests, &pieces, &mut problems);
            let computed: Vec<Vec<u32>> = images.iter().map(|i| record.volumes_of(&i.blobs)).collect();
            if images.len() == meta.images.len() && computed != record.image_volumes {
                add(&mut problems, "bundle.json", "says images need other volumes than its placement does".into());
            }
        }
    }
    if !problems.is_empty() {
        return (None, problems);
    }
    let contents = BundleContents {
        images,
        manifests,
        blobs: scan.blobs.clone(),
        pieces,
        metadata,
        file_digest: scan.file_digest.clone(),
        file_len: scan.file_len,
    };
    (Some(contents), problems)
}

/// Entries outside the layout's paths: problems, except a volume's pieces (returned, checked against their
/// names) and their directories.
fn outside_the_layout(scan: &Scan, volume: bool, problems: &mut Vec<Problem>) -> BTreeMap<Digest, BlobEntry> {
    let mut pieces = BTreeMap::new();
    for other in &scan.others {
        if volume
            && let (Some(name), OtherKind::File { entry, digest, .. }) =
                (crate::oci::layout::piece_digest(&other.path), &other.kind)
        {
            if &name == digest {
                pieces.insert(name, *entry);
            } else {
                add(problems, &other.path, format!("content does not match its name: found {digest}"));
            }
            continue;
        }
        // Tools that re-pack a volume (tar -c of its extracted files) add the pieces' directories.
        if volume
            && matches!(other.kind, OtherKind::Directory)
            && matches!(other.path.as_str(), "pieces" | "pieces/sha256")
        {
            continue;
        }
        let message = match &other.kind {
            OtherKind::Directory => "unexpected directory".to_string(),
            OtherKind::Link { hard, .. } => format!(
                "is a {}, but an image layout holds only regular files and directories",
                if *hard { "hard link" } else { "symbolic link" }
            ),
            OtherKind::File { .. } => "is not part of an OCI image layout".into(),
        };
        add(problems, &other.path, message);
    }
    pieces
}

/// The name of index.json entry `desc`, and where it came from: bundle.json when there is one; else
/// `org.opencontainers.image.ref.name` when it is a full reference, else `io.containerd.image.name` (containerd
/// and docker exports put a bare tag in the first and the full name in the second).
fn image_name(
    recorded: Option<&crate::oci::layout::BundleImage>,
    desc: &crate::oci::manifest::Descriptor,
) -> (Option<String>, &'static str) {
    if let Some(img) = recorded {
        return (Some(img.source.clone()), crate::oci::layout::BUNDLE_FILE);
    }
    let annotation = |key| desc.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    match (annotation(REF_NAME), annotation(CONTAINERD_NAME)) {
        (Some(r), _) if parse_image_name(&r).is_ok() => (Some(r), REF_NAME),
        (_, Some(c)) => (Some(c), CONTAINERD_NAME),
        (r, None) => (r, REF_NAME),
    }
}

/// A name from index.json, accepted only when it is a real reference (not a bare tag like `1.0`).
fn parse_image_name(name: &str) -> Result<ImageRef, String> {
    if !name.contains(['/', ':', '@']) {
        return Err("is not a full image reference".into());
    }
    ImageRef::parse(name).map_err(|e| format!("is not a valid image reference ({e})"))
}

fn check_metadata(
    meta: &BundleMetadata,
    index: &LayoutIndex,
    scan: &Scan,
    images: &[ArchiveImage],
    elsewhere: &BTreeMap<Digest, u64>,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |message: String| problems.push(Problem { entry: "bundle.json".into(), message });
    let expected = meta.required_version();
    let kind = match expected {
        SIGNED_FORMAT_VERSION => "a bundle with checked vendor signatures",
        SUITE_FORMAT_VERSION => "a suite (several charts, or files)",
        VOLUME_FORMAT_VERSION => "a volume",
        DELTA_FORMAT_VERSION => "a delta",
        _ => "an archive that is neither a delta nor a volume",
    };
    if meta.format_version != expected {
        problem(format!("has format version {}, but {kind} has version {expected}", meta.format_version));
    }
    // A signature record names a manifest the archive carries (or, for an index --platform filtered, the
    // original the vendor signed).
    for r in &meta.signatures {
        let image = meta.images.iter().find(|i| i.source == r.image);
        let original = image.and_then(|i| i.platform_selection.as_ref()).and_then(|s| s.original_digest.as_ref());
        if image.is_none() {
            problem(format!("records a signature of {}, which is not one of its images", r.image));
        } else if original != Some(&r.manifest) && meta.blobs.binary_search_by(|b| b.digest.cmp(&r.manifest)).is_err() {
            problem(format!("records a signature of {} over {}, which the archive does not hold", r.image, r.manifest));
        }
    }
    for b in meta.delta.iter().flat_map(|d| &d.absent).filter(|b| scan.blobs.contains_key(&b.digest)) {
        problem(format!("leaves blob {} to the base, but the archive holds it", b.digest));
    }
    // A volume lists every blob of its set; the ones other volumes hold are checked by `check_volume`.
    if meta.images.len() != index.manifests.len() {
        problem(format!("lists {} images but index.json lists {}", meta.images.len(), index.manifests.len()));
    }
    for (img, desc) in meta.images.iter().zip(&index.manifests) {
        if img.digest != desc.digest || img.media_type != desc.media_type || img.manifest_size != desc.size {
            problem(format!("image `{}` does not match its index.json entry (digest, media type or size)", img.source));
        }
    }
    // A file's record names its artifact and the blob that holds it: import writes the file from that blob.
    for f in &meta.files {
        match images.iter().find(|i| i.source.to_string() == f.image) {
            Some(img) if img.blobs.contains(&f.digest) => {}
            Some(_) => problem(format!(
                "file `{}` names blob {}, which its artifact {} does not hold",
                f.name, f.digest, f.image
            )),
            None => problem(format!("file `{}` names artifact {}, which the archive does not list", f.name, f.image)),
        }
    }
    for (img, found) in meta.images.iter().zip(images) {
        if img.size != found.size {
            problem(format!(
                "image `{}` is said to be {} bytes, its content adds up to {}",
                img.source, img.size, found.size
            ));
        }
    }
    let listed: BTreeMap<&Digest, u64> = meta.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    for (d, size) in listed.iter().filter(|(d, _)| !elsewhere.contains_key(**d)) {
        match scan.blobs.get(*d) {
            None if !scan.problems.iter().any(|p| p.entry == d.layout_path()) => {
                problem(format!("lists blob {d}, which is missing from the archive"))
            }
            Some(e) if e.size != *size => {
                problem(format!("lists blob {d} as {size} bytes, the archive holds {}", e.size))
            }
            _ => {}
        }
    }
    for d in scan.blobs.keys().filter(|d| !listed.contains_key(d)) {
        problem(format!("does not list blob {d}, which the archive holds"));
    }
}

/// Blobs the images need that this archive does not hold, with their sizes: those a delta leaves to its base,
/// and in a volume, those other volumes hold (whole or in pieces, some perhaps on this one).
fn not_held_here(meta: Option<&BundleMetadata>) -> BTreeMap<Digest, u64> {
    let Some(meta) = meta else { return BTreeMap::new() };
    let mut out: BTreeMap<Digest, u64> =
        meta.delta.iter().flat_map(|d| &d.absent).map(|b| (b.digest.clone(), b.size)).collect();
    if let Some(v) = &meta.volume {
        let sizes: BTreeMap<&Digest, u64> = meta.blobs.iter().map(|b| (&b.digest, b.size)).collect();
        for p in v.placement.iter().filter(|p| p.volume != Some(v.number)) {
            if let Some(size) = sizes.get(&p.digest) {
                out.insert(p.digest.clone(), *size);
            }
        }
    }
    out
}

/// A volume's own rules: it is one of its set, its placement accounts for every blob of the set exactly once,
/// it holds the blobs and pieces placed on it and none placed elsewhere.
fn check_volume(
    meta: &BundleMetadata,
    record: &VolumeRecord,
    scan: &Scan,
    manifests: &HashMap<Digest, StoredManifest>,
    pieces: &BTreeMap<Digest, BlobEntry>,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |message: String| problems.push(Problem { entry: "bundle.json".into(), message });
    let (number, count) = (record.number, record.count);
    if number == 0 || number > count {
        problem(format!("says this is volume {number} of {count}"));
    }
    if !record.placement.is_sorted_by(|a, b| a.digest < b.digest) {
        problem("places blobs in an order other than by digest".into());
    }
    let sizes: BTreeMap<&Digest, u64> = meta.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let mut placed = BTreeSet::new();
    let mut expected_pieces = BTreeMap::new();
    for p in &record.placement {
        if !placed.insert(&p.digest) {
            problem(format!("places blob {} twice", p.digest));
            continue;
        }
        let Some(size) = sizes.get(&p.digest) else {
            problem(format!("places blob {}, which its blob list does not have", p.digest));
            continue;
        };
        if manifests.contains_key(&p.digest) {
            problem(format!("places manifest {} on one volume, but every volume holds every manifest", p.digest));
        }
        let volumes = p.volumes();
        if volumes.iter().any(|v| *v == 0 || *v > count) {
            problem(format!("places blob {} on a volume outside 1 to {count}", p.digest));
        }
        match (p.volume, p.pieces.is_empty()) {
            // One placed here and missing is reported with the blob list.
            (Some(v), true) => {
                if v != number && scan.blobs.contains_key(&p.digest) {
                    problem(format!("places blob {} on volume {v}, but this volume holds it", p.digest));
                }
            }
            (None, false) => {
                if p.pieces.iter().map(|x| x.size).sum::<u64>() != *size {
                    problem(format!("the pieces of blob {} do not add up to its {size} bytes", p.digest));
                }
                if scan.blobs.contains_key(&p.digest) {
                    problem(format!("stores blob {} in pieces, but this volume holds it whole", p.digest));
                }
                for x in p.pieces.iter().filter(|x| x.volume == number) {
                    expected_pieces.insert(&x.digest, x.size);
                }
            }
            _ => problem(format!("places blob {} both whole and in pieces, or nowhere", p.digest)),
        }
    }
    for b in meta.blobs.iter().filter(|b| !manifests.contains_key(&b.digest) && !placed.contains(&b.digest)) {
        problem(format!("does not say which volume holds blob {}", b.digest));
    }
    for (d, size) in &expected_pieces {
        match pieces.get(*d) {
            None => problems.push(Problem {
                entry: crate::oci::layout::piece_path(d),
                message: "is missing (a piece of a blob that spans volumes)".into(),
            }),
            Some(e) if e.size != *size => problems.push(Problem {
                entry: crate::oci::layout::piece_path(d),
                message: format!("is {} bytes but bundle.json says {size}", e.size),
            }),
            Some(_) => {}
        }
    }
    for d in pieces.keys().filter(|d| !expected_pieces.contains_key(d)) {
        problems.push(Problem {
            entry: crate::oci::layout::piece_path(d),
            message: "is not a piece bundle.json places on this volume".into(),
        });
    }
}

struct Walk<'a> {
    /// Children bundle.json says were left out on purpose (sparse platform selection).
    omitted: &'a BTreeSet<Digest>,
    /// Blobs a delta leaves to its base, with their sizes: needed, and not in the archive.
    absent: &'a BTreeMap<Digest, u64>,
    scan: &'a Scan,
    manifests: &'a mut HashMap<Digest, StoredManifest>,
    order: Vec<Digest>,
    blobs: Vec<Digest>,
    seen: BTreeSet<Digest>,
    problems: Vec<Problem>,
    platforms: Vec<String>,
}

impl Walk<'_> {
    fn visit(&mut self, digest: &Digest, declared: Option<&str>, size: u64, parent: &str, root: bool) {
        if !self.seen.insert(digest.clone()) {
            return;
        }
        let path = digest.layout_path();
        let Some(entry) = self.scan.blobs.get(digest) else {
            if !self.scan.problems.iter().any(|p| p.entry == path) {
                self.problems
                    .push(Problem { entry: path, message: format!("is missing (a manifest referenced by {parent})") });
            }
            return;
        };
        if entry.size != size {
            self.problems
                .push(Problem { entry: path, message: format!("is {} bytes but {parent} says {size}", entry.size) });
            return;
        }
        let Some(bytes) = self.scan.json_blobs.get(digest) else {
            self.problems.push(Problem {
                entry: path,
                message: format!("is not a JSON manifest, but {parent} references it as one"),
            });
            return;
        };
        let links = match manifest::parse(digest, declared, bytes) {
            Ok(l) => l,
            Err(e) => {
                self.problems.push(Problem { entry: path, message: e.to_string() });
                return;
            }
        };
        let here = format!("manifest {digest}");
        for child in links.children.iter().filter(|c| !self.omitted.contains(&c.digest)) {
            if root && let Some(p) = &child.platform {
                self.platforms.push(p.to_string());
            }
            self.visit(&child.digest, Some(&child.media_type), child.size, &here, false);
        }
        for blob in &links.blobs {
            if !self.seen.insert(blob.digest.clone()) {
                continue;
            }
            let bpath = blob.digest.layout_path();
            match self.scan.blobs.get(&blob.digest) {
                None if self.absent.get(&blob.digest) == Some(&blob.size) => self.blobs.push(blob.digest.clone()),
                None if self.absent.contains_key(&blob.digest) => self.problems.push(Problem {
                    entry: bpath,
                    message: format!(
                        "is left to the base or another volume with another size than {here} says ({})",
                        blob.size
                    ),
                }),
                None if self.scan.problems.iter().any(|p| p.entry == bpath) => {}
                None => {
                    self.problems.push(Problem { entry: bpath, message: format!("is missing (referenced by {here})") })
                }
                Some(e) if e.size != blob.size => self.problems.push(Problem {
                    entry: bpath,
                    message: format!("is {} bytes but {here} says {}", e.size, blob.size),
                }),
                Some(_) => self.blobs.push(blob.digest.clone()),
            }
        }
        self.manifests.insert(
            digest.clone(),
            StoredManifest { media_type: links.media_type.clone(), bytes: bytes.clone(), links },
        );
        self.order.push(digest.clone());
    }
}

fn add(problems: &mut Vec<Problem>, entry: &str, message: String) {
    problems.push(Problem { entry: entry.to_string(), message });
}
