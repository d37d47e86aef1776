//! `bundle verify FILE`: the offline completeness and integrity check (`archive::proof::verify_any`).

use super::failure::Explain as _;
use super::results::{ImageOutcome, ImageResult};
use super::{Context, Outcome, human};
use crate::archive::contents::Checked;
use crate::archive::proof;

pub async fn run(ctx: &Context, archive: &std::path::Path, keys: &[crate::trust::TrustedKey]) -> Outcome<()> {
    // The signature first (a small read); the content is then proven against the sidecar it covers.
    let signed = match keys {
        [] => None,
        keys => Some(crate::trust::archive_signature::verify(archive, keys)?),
    };
    let signed_text = signed.as_ref().map(|s| format!("; signed by {}", s.key.describe())).unwrap_or_default();
    if let (Some(s), Some(r)) = (&signed, &ctx.results) {
        r.total("signedBy", s.key.fingerprint.clone());
    }
    if let Some(header) = crate::volumes::parity::ParityHeader::read(archive) {
        return parity(ctx, archive, &header, &signed_text).await;
    }
    let (_, checked) = proof::verify_any(&ctx.printer, archive).await?;
    match checked {
        Checked::Layout(contents) => {
            let delta = contents.metadata.as_ref().and_then(|m| m.delta.as_ref());
            let mut checked = match (&contents.metadata, delta) {
                (None, _) => " (no bundle.json: not written by bundle)".to_string(),
                (Some(_), None) => String::new(),
                (Some(_), Some(d)) => format!("; {}", super::describe_delta(d)),
            };
            if let Some(v) = contents.volume() {
                checked.push_str(&format!(
                    "; {}: it holds {} of the set's blobs and {} pieces of blobs that span volumes, and lists the whole set",
                    super::describe_volume(v),
                    contents.blobs.len() - contents.manifests.len(),
                    contents.pieces.len()
                ));
            }
            if let Some(r) = &ctx.results {
                let images =
                    contents.images.iter().map(|i| ImageResult::new(&i.source, &i.digest, ImageOutcome::Verified));
                r.images(images.collect());
                r.total("images", contents.images.len());
                r.total("blobs", contents.blobs.len());
                r.total("bytes", contents.total_bytes());
                r.total("archive", archive.display().to_string());
            }
            ctx.printer.result(format!(
                "{}: OK, {} images, {} blobs, {} verified{checked}{signed_text}",
                archive.display(),
                contents.images.len(),
                contents.blobs.len(),
                human(contents.total_bytes())
            ));
        }
        Checked::DockerSave(saved) => {
            if let Some(r) = &ctx.results {
                // Each of an image's names, with its image ID (the config's digest): a docker save archive has no
                // manifests.
                let images = saved.images.iter().flat_map(|i| {
                    i.names.iter().map(|n| ImageResult::new(n, &i.config.digest, ImageOutcome::Verified))
                });
                r.images(images.collect());
                r.total("images", saved.images.len());
                r.total("layers", saved.layer_count());
                r.total("bytes", saved.total_bytes());
                r.total("archive", archive.display().to_string());
            }
            ctx.printer.result(format!(
                "{}: OK, a docker save archive (manifest.json and layer tars): {} images, {} layers, {} verified: every config against its image ID and every layer against its config's diff_id{signed_text}",
                archive.display(),
                saved.images.len(),
                saved.layer_count(),
                human(saved.total_bytes())
            ));
            ctx.printer.info(crate::import::pipeline::DOCKER_SAVE_NOTE);
        }
    }
    Ok(())
}

/// A parity volume holds no images to check: its sha256 against its sidecar is what can be proven alone.
async fn parity(
    ctx: &Context,
    path: &std::path::Path,
    header: &crate::volumes::parity::ParityHeader,
    signed_text: &str,
) -> Outcome<()> {
    use crate::archive::checksum::{file_digest, read_sidecar, sidecar_path};
    let what = format!(
        "parity volume {} of {} of set {} (with the set's {} volumes: any {} lost can be rebuilt)",
        header.index, header.parity, header.set, header.count, header.parity
    );
    let expected = read_sidecar(path).explain_with(|| format!("cannot verify {}", path.display()))?;
    let Some(expected) = expected else {
        return Err(super::Failure::user(
            format!("{} is a {what}, and its sidecar {} is missing", path.display(), sidecar_path(path).display()),
            "a parity volume is checked against its .sha256 sidecar; bring it along",
        ));
    };
    let file = path.to_path_buf();
    let actual = tokio::task::spawn_blocking(move || file_digest(&file, &|_| {}))
        .await
        .explain("the verification task failed")?
        .explain_with(|| format!("cannot read {}", path.display()))?;
    if actual != expected {
        return Err(super::Failure::user(
            format!(
                "{} failed verification: its sha256 is {} but its sidecar says {}",
                path.display(),
                actual.hex(),
                expected.hex()
            ),
            "copy the parity volume again; a damaged one cannot rebuild anything",
        ));
    }
    if let Some(r) = &ctx.results {
        r.total("parityVolume", header.index);
        r.total("archive", path.display().to_string());
        r.total("sha256", actual.hex());
    }
    ctx.printer.result(format!("{}: OK, {what}; its sha256 matches its sidecar{signed_text}", path.display()));
    Ok(())
}
