//! `bundle split --volume-size SIZE FILE`: verify the archive, then cut it into volumes (`volumes::split`).
//! `export --volume-size` ends here too, with the archive it just wrote.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::failure::Explain as _;
use super::{Context, Outcome, human};
use crate::archive::proof;
use crate::archive::{ArchiveFile, BundleContents};
use crate::commands::cli::SplitArgs;
use crate::oci::digest::Digest;
use crate::volumes::split::{SplitJob, WrittenVolume, publish, split};

pub async fn run(ctx: &Context, args: SplitArgs) -> Outcome<()> {
    let started = std::time::Instant::now();
    let (archive, contents) = proof::verify(&ctx.printer, &args.archive).await?;
    ctx.printer.info(format!(
        "Verified {} ({} images, {})",
        args.archive.display(),
        contents.images.len(),
        human(contents.total_bytes())
    ));
    let output = args.output.clone().unwrap_or_else(|| args.archive.clone());
    let set = contents.file_digest.clone();
    let shape = Shape { size: args.volume_size.0, parity: args.parity.unwrap_or(0) };
    let written = cut(ctx, archive, contents, set, shape, output, args.force).await?;
    report(ctx, &written, args.volume_size.0, started);
    Ok(())
}

/// The volumes asked for: their size, and how many parity volumes go with them.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub size: u64,
    pub parity: u32,
}

/// Cut `archive` into volumes named after `output`, with a progress bar.
pub async fn cut(
    ctx: &Context,
    archive: Arc<ArchiveFile>,
    contents: BundleContents,
    set: Digest,
    shape: Shape,
    output: PathBuf,
    replace: bool,
) -> Outcome<Vec<WrittenVolume>> {
    let Shape { size, parity } = shape;
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let total = contents.total_bytes();
    crate::support::disk::check(&[crate::support::disk::Need {
        dir: dir.clone(),
        bytes: total + u64::from(parity) * size.min(total),
        what: "the volumes".into(),
    }])?;
    // Volumes are written here and renamed into place once all are done; removed however the split ends.
    let staging = tempfile::Builder::new()
        .prefix(".bundle-volumes-")
        .tempdir_in(&dir)
        .explain_with(|| format!("cannot write the volumes into {}", dir.display()))?;
    let progress = ctx.printer.transfer("split", contents.total_bytes(), 0);
    let p = progress.clone();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let staged = staging.path().to_path_buf();
    let written = tokio::task::spawn_blocking(move || {
        let job =
            SplitJob { archive, contents: &contents, set, size, output, replace, threads, parity, staging: staged };
        split(job, &|n| p.add(n as i64))
    })
    .await
    .explain("the split task failed")?
    .explain("cannot write the volumes")?;
    progress.finish();
    publish(&written, replace).explain("cannot write the volumes")?;
    Ok(written)
}

/// One line per volume, then how to use them.
pub fn report(ctx: &Context, written: &[WrittenVolume], size: u64, started: std::time::Instant) {
    let total: u64 = written.iter().map(|v| v.len).sum();
    let parity = written.iter().filter(|v| v.parity).count();
    let with_parity = match parity {
        0 => String::new(),
        n => format!(" and {n} parity volumes (any {n} lost volumes can be rebuilt)"),
    };
    ctx.printer.info(format!(
        "Wrote {} volumes{with_parity} of at most {} ({} in all) in {:.1?}:",
        written.len() - parity,
        human(size),
        human(total),
        started.elapsed()
    ));
    for v in written {
        let name =
            v.path.file_name().map_or_else(|| v.path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let what = match v.parity {
            true => "parity".to_string(),
            false => format!("{} blobs, {} pieces of blobs that span volumes", v.blobs, v.pieces),
        };
        ctx.printer.result(format!("{name}  {}  {what}  sha256 {}", human(v.len), v.digest.hex()));
    }
    if let Some(first) = written.first() {
        let dir = first.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        ctx.printer.info(format!(
            "Each volume verifies alone (`bundle verify VOLUME`); import them together, in any order: `bundle import -d REGISTRY {}`",
            dir.display()
        ));
    }
}
