//! `bundle import -d REGISTRY V1 V2 …`: the volumes of a set, in any order. Each is verified alone, the set is
//! put together (`volumes::set`), every image whose volumes are all there is pushed, and then, when volumes are
//! missing, the import fails naming them and the images they hold.

use super::failure::Explain as _;
use super::settings::ImportSettings;
use super::{Context, Failure, Outcome, delivery, human};
use crate::archive::contents::Checked;
use crate::archive::proof;
use crate::volumes::VolumeError;
use crate::volumes::set::{Assembled, GivenVolume, assemble};

pub async fn run(ctx: &Context, args: &ImportSettings, started: std::time::Instant) -> Outcome<()> {
    let mut given = Vec::new();
    for path in &args.archives {
        let (archive, checked) = proof::verify_any(&ctx.printer, path).await?;
        let not_a_volume = || VolumeError::NotAVolume { path: path.clone() };
        let Checked::Layout(contents) = checked else {
            return Err(not_a_volume()).explain("cannot import these volumes");
        };
        let Some(v) = contents.volume() else { return Err(not_a_volume()).explain("cannot import these volumes") };
        ctx.printer.info(format!(
            "Verified {}: volume {} of {} ({} blobs and {} pieces, {})",
            path.display(),
            v.number,
            v.count,
            contents.blobs.len() - contents.manifests.len(),
            contents.pieces.len(),
            human(contents.blobs.values().chain(contents.pieces.values()).map(|e| e.size).sum())
        ));
        given.push(GivenVolume { path: path.clone(), archive, contents });
    }
    let set = assemble(given).explain("cannot import these volumes")?;
    let contents = &set.contents;
    if !set.missing.is_empty() {
        ctx.printer.warn(format!(
            "{} of the {} volumes of set {} are here; the {} images they complete are imported, the other {} are not",
            set.given.len(),
            set.count,
            set.set,
            contents.images.len(),
            set.incomplete.len()
        ));
    }
    let prepared = delivery::prepare(ctx, &args.target, contents, args.dry_run).await?;
    if args.dry_run {
        prepared.print_dry_run(ctx, contents);
    } else if prepared.nothing_to_do(contents) {
        ctx.printer.info(format!(
            "{} already holds all {} images these volumes complete, with the same digests; nothing to push (checked in {:.1?})",
            args.target.destination_text,
            prepared.plan.images.len(),
            started.elapsed()
        ));
    } else {
        let registry = &args.target.destination.registry;
        let stats = prepared
            .push(ctx, &set.origin, contents)
            .await
            .map_err(|e| delivery::push_failure(e, "import", registry, None))?;
        prepared.report(ctx, "Imported", contents, &stats, &args.target.destination_text, started);
    }
    if set.missing.is_empty() {
        if !args.dry_run {
            prepared.finish(ctx, &args.target, contents).await?;
        }
        return Ok(());
    }
    Err(missing_volumes(&set))
}

/// The failure that names each missing volume and the images waiting for it.
fn missing_volumes(set: &Assembled) -> Failure {
    let lines: Vec<String> = set
        .missing
        .iter()
        .map(|m| {
            let file = m.file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default();
            let images = if m.images.is_empty() { "no image of its own".to_string() } else { m.images.join(", ") };
            format!("  - volume {}{file}: {images}", m.number)
        })
        .collect();
    Failure::user(
        format!(
            "{} of the {} images were not imported: {} of the {} volumes of set {} are missing:\n{}",
            set.incomplete.len(),
            set.incomplete.len() + set.contents.images.len(),
            set.missing.len(),
            set.count,
            set.set,
            lines.join("\n")
        ),
        "bring the missing volumes and run the import again with every volume (what was pushed is kept, so only the rest is pushed)",
    )
}
