//! `bundle verify FILE`: the offline completeness and integrity check (`archive::proof::verify_any`).

use super::{Context, Outcome, human};
use crate::archive::contents::Checked;
use crate::archive::proof;

pub async fn run(ctx: &Context, archive: &std::path::Path) -> Outcome<()> {
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
            ctx.printer.result(format!(
                "{}: OK, {} images, {} blobs, {} verified{checked}",
                archive.display(),
                contents.images.len(),
                contents.blobs.len(),
                human(contents.total_bytes())
            ));
        }
        Checked::DockerSave(saved) => {
            ctx.printer.result(format!(
                "{}: OK, a docker save archive (manifest.json and layer tars): {} images, {} layers, {} verified: every config against its image ID and every layer against its config's diff_id",
                archive.display(),
                saved.images.len(),
                saved.layer_count(),
                human(saved.total_bytes())
            ));
            ctx.printer.info(super::import::DOCKER_SAVE_NOTE);
        }
    }
    Ok(())
}
