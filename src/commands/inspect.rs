//! `bundle inspect FILE [--json]`: what is in an archive, from its metadata.

use super::failure::Explain as _;
use serde::Serialize;

use super::{Context, Failure, Outcome, human};
use crate::archive::ArchiveFile;
use crate::archive::contents::{Checked, check_any};
use crate::archive::docker_save::{DOCKER_CONFIG, NAMED_BY};
use crate::commands::cli::InspectFormat;

/// The SPDX document, from `bundle.json` alone.
async fn spdx(ctx: &Context, archive: &std::path::Path) -> Outcome<()> {
    let path = archive.to_path_buf();
    let meta = tokio::task::spawn_blocking(move || {
        ArchiveFile::open(&path)
            .and_then(|a| a.read_metadata())
            .explain_with(|| format!("cannot inspect {}", path.display()))
    })
    .await
    .explain("the inspect task failed")??;
    let meta = meta.ok_or_else(|| {
        Failure::user(
            format!("{} has no bundle.json, so there is no inventory to write", archive.display()),
            "an SPDX document is written for archives bundle exported; `bundle inspect --json` lists any archive",
        )
    })?;
    let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let created = crate::archive::spdx::rfc3339(std::time::SystemTime::now());
    ctx.printer.result_json(&crate::archive::spdx::document(&meta, &name, &created));
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    archive: String,
    /// `bundle` (ours, with bundle.json), `oci-layout` (another tool's layout) or `docker-save`.
    format: &'static str,
    format_version: Option<u32>,
    /// From the `.sha256` sidecar, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    images: Vec<ImageRow>,
    totals: Totals,
    /// Every blob (bundle archives): with `sha256`, enough for `export --since` to make a delta of this archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    blobs: Option<Vec<crate::oci::layout::BundleBlob>>,
    /// A delta's base and the blobs left to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<crate::oci::layout::DeltaRecord>,
    /// One volume of a set: which one, and which volume holds each blob of the set.
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<crate::oci::layout::VolumeRecord>,
    /// The charts the bundle carries (name, version, where from), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    charts: Vec<ChartRow>,
    /// The files the bundle carries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<crate::oci::layout::FileRecord>,
    /// The vendor signatures export checked (`--verify-signatures`): which key verified which manifest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    signatures: Vec<crate::oci::layout::SignatureRecord>,
    /// The bundle's own signature file (FILE.sig) when there is one beside it; not checked here (`verify --key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_file: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChartRow {
    name: String,
    version: String,
    origin: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageRow {
    source: String,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    size: u64,
    /// What --platform did at export: the original index digest, the mode, what was left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    platform_selection: Option<crate::oci::layout::PlatformRecord>,
    /// For an image: how many signatures, attestations, SBOMs and other artifacts travel attached to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    attached: Option<Attached>,
    /// For an artifact: what it is and what it is attached to.
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact: Option<crate::oci::layout::ArtifactRecord>,
    /// Where the image's name comes from: `bundle.json`, or, in another tool's archive, the index.json annotation
    /// that held a full reference (`org.opencontainers.image.ref.name` or `io.containerd.image.name`).
    named_by: &'static str,
}

#[derive(Serialize, Default)]
struct Attached {
    signatures: usize,
    attestations: usize,
    sboms: usize,
    other: usize,
}

/// Count each image's artifacts (artifacts of its artifacts included: they name the same image).
fn count_attached(rows: &mut [ImageRow]) {
    use crate::oci::layout::ArtifactKind;
    let mut counts: std::collections::BTreeMap<String, Attached> = std::collections::BTreeMap::new();
    for r in rows.iter().filter_map(|r| r.artifact.as_ref()).filter(|r| r.is_artifact()) {
        let c = counts.entry(r.image.clone()).or_default();
        match r.kind {
            ArtifactKind::Signature => c.signatures += 1,
            ArtifactKind::Attestation => c.attestations += 1,
            ArtifactKind::Sbom => c.sboms += 1,
            ArtifactKind::Other => c.other += 1,
        }
    }
    for row in rows.iter_mut().filter(|r| r.artifact.is_none()) {
        row.attached = Some(counts.remove(&row.source).unwrap_or_default());
    }
}

#[derive(Serialize)]
struct Totals {
    images: usize,
    blobs: usize,
    bytes: u64,
}

pub async fn run(ctx: &Context, archive: &std::path::Path, format: InspectFormat) -> Outcome<()> {
    if format == InspectFormat::SpdxJson {
        return spdx(ctx, archive).await;
    }
    let json = format == InspectFormat::Json;
    let path = archive.to_path_buf();
    let listing = tokio::task::spawn_blocking(move || listing(&path)).await.explain("the inspect task failed")??;
    if json {
        ctx.printer.result_json(&listing);
        return Ok(());
    }
    let rows: Vec<_> = listing
        .images
        .iter()
        .map(|i| {
            let digest: crate::oci::digest::Digest = i.digest.parse().expect("digests in a listing are valid");
            super::image_row(&i.source, &digest, &i.media_type, &i.platforms, i.size, i.artifact.as_ref())
        })
        .collect();
    super::print_image_table(&ctx.printer, &rows);
    if listing.format == "docker-save" {
        ctx.printer.info(
            "a docker save archive: the digests shown are image IDs (config digests); it keeps no manifests, and import writes new ones",
        );
    }
    if let Some(d) = &listing.delta {
        ctx.printer.result(format!("{}; import it first", super::describe_delta(d)));
    }
    if let Some(v) = &listing.volume {
        ctx.printer.result(format!("{}; the images need these volumes:", super::describe_volume(v)));
        for (image, volumes) in listing.images.iter().zip(&v.image_volumes) {
            let list: Vec<String> = volumes.iter().map(u32::to_string).collect();
            let list = if list.is_empty() { "none (manifests only)".to_string() } else { list.join(", ") };
            ctx.printer.result(format!("  {}: {list}", image.source));
        }
    }
    for c in &listing.charts {
        ctx.printer.result(format!("chart {} {} (from {})", c.name, c.version, c.origin));
    }
    for f in &listing.files {
        ctx.printer.result(format!(
            "file {} ({}, {}) from {}, as {}",
            f.name,
            human(f.size),
            f.digest,
            f.origin,
            f.image
        ));
    }
    if !listing.signatures.is_empty() {
        let keys: std::collections::BTreeSet<_> = listing.signatures.iter().map(|r| &r.key).collect();
        ctx.printer.result(format!(
            "vendor signatures checked at export: {} manifests, by {} keys:",
            listing.signatures.len(),
            keys.len()
        ));
        for r in &listing.signatures {
            ctx.printer
                .result(format!("  {} {}: {} key {} ({})", r.image, r.manifest, r.algorithm, r.key, r.signature));
        }
    }
    if let Some(sig) = &listing.signature_file {
        ctx.printer.result(format!("signed: {sig} (check it with `bundle verify --key PUB`)"));
    }
    ctx.printer.result(format!(
        "{} images, {} blobs, {}",
        listing.totals.images,
        listing.totals.blobs,
        human(listing.totals.bytes)
    ));
    Ok(())
}

fn signature_file(path: &std::path::Path) -> Option<String> {
    let sig = crate::trust::archive_signature::signature_path(path);
    sig.exists().then(|| sig.display().to_string())
}

fn listing(path: &std::path::Path) -> Outcome<Listing> {
    let archive = ArchiveFile::open(path).explain_with(|| format!("cannot inspect {}", path.display()))?;
    // bundle.json comes first in our archives, so this reads only the first few kilobytes.
    if let Some(meta) = archive.read_metadata().explain_with(|| format!("cannot inspect {}", path.display()))? {
        let mut listing = Listing {
            archive: path.display().to_string(),
            format: "bundle",
            format_version: Some(meta.format_version),
            sha256: crate::archive::checksum::read_sidecar(path).ok().flatten().map(|d| d.hex().to_string()),
            created: meta.created.clone(),
            blobs: Some(meta.blobs.clone()),
            delta: meta.delta.clone(),
            volume: meta.volume.clone(),
            charts: meta
                .all_charts()
                .into_iter()
                .map(|c| ChartRow { name: c.name.clone(), version: c.version.clone(), origin: c.origin.clone() })
                .collect(),
            files: meta.files.clone(),
            signatures: meta.signatures.clone(),
            signature_file: signature_file(path),
            totals: Totals { images: meta.images.len(), blobs: meta.blobs.len(), bytes: meta.total_blob_bytes() },
            images: meta
                .images
                .into_iter()
                .map(|i| ImageRow {
                    source: i.source,
                    digest: i.digest.to_string(),
                    media_type: i.media_type,
                    platforms: i.platforms,
                    size: i.size,
                    platform_selection: i.platform_selection,
                    attached: None,
                    artifact: i.artifact,
                    named_by: crate::oci::layout::BUNDLE_FILE,
                })
                .collect(),
        };
        count_attached(&mut listing.images);
        return Ok(listing);
    }
    // Another tool's archive: the facts have to be read from the content.
    let scan = archive.scan(&|_| {})?;
    let (checked, problems) = check_any(scan, None);
    let Some(checked) = checked else {
        let list: Vec<String> = problems.iter().take(10).map(|p| format!("  - {p}")).collect();
        return Err(Failure::user(
            format!("{} is not a valid image archive:\n{}", path.display(), list.join("\n")),
            crate::archive::seekable::DAMAGED_ARCHIVE_HINT,
        ));
    };
    let row = |source: String, digest: String, media_type: String, platforms: Vec<String>, size, named_by| ImageRow {
        source,
        digest,
        media_type,
        platforms,
        size,
        platform_selection: None,
        attached: None,
        artifact: None,
        named_by,
    };
    // Another tool's archive: no bundle.json, so no version, sidecar facts, blob list or delta.
    let foreign = |format, totals, images| Listing {
        archive: path.display().to_string(),
        format,
        format_version: None,
        sha256: None,
        created: None,
        images,
        totals,
        blobs: None,
        delta: None,
        volume: None,
        charts: Vec::new(),
        files: Vec::new(),
        signatures: Vec::new(),
        signature_file: signature_file(path),
    };
    Ok(match checked {
        Checked::Layout(contents) => foreign(
            "oci-layout",
            Totals { images: contents.images.len(), blobs: contents.blobs.len(), bytes: contents.total_bytes() },
            contents
                .images
                .iter()
                .map(|i| {
                    let (source, digest) = (i.source.to_string(), i.digest.to_string());
                    row(source, digest, i.media_type.clone(), i.platforms.clone(), i.size, i.named_by)
                })
                .collect(),
        ),
        // No manifests: each row shows the image ID (the config's digest), which is what docker save keeps.
        Checked::DockerSave(saved) => foreign(
            "docker-save",
            Totals {
                images: saved.images.iter().map(|i| i.names.len()).sum(),
                blobs: saved.distinct_files().len(),
                bytes: saved.total_bytes(),
            },
            saved
                .images
                .iter()
                .flat_map(|i| {
                    i.names.iter().map(|n| {
                        let platforms = vec![i.platform.clone()];
                        let config = DOCKER_CONFIG.to_string();
                        row(n.to_string(), i.config.digest.to_string(), config, platforms, i.size(), NAMED_BY)
                    })
                })
                .collect(),
        ),
    })
}
