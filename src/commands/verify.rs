//! `bundle verify FILE`: the offline completeness and integrity check (`archive::proof::verify`).

use super::{Context, Outcome, human};
use crate::archive::proof;

pub async fn run(ctx: &Context, archive: &std::path::Path) -> Outcome<()> {
    let (_, contents) = proof::verify(&ctx.printer, archive).await?;
    let checked = if contents.metadata.is_some() { "" } else { " (no bundle.json: not written by bundle)" };
    ctx.printer.result(format!(
        "{}: OK, {} images, {} blobs, {} verified{checked}",
        archive.display(),
        contents.images.len(),
        contents.blobs.len(),
        human(contents.total_bytes())
    ));
    Ok(())
}
