//! `bundle verify FILE`: the offline completeness and integrity check.

use std::path::Path;
use std::sync::Arc;

use super::failure::Explain as _;

use super::{Context, Failure, Outcome, human};
use crate::archive::checksum::{read_sidecar, sidecar_path};
use crate::archive::contents::check;
use crate::archive::{ArchiveFile, BundleContents};

pub async fn run(ctx: &Context, args: crate::cli::VerifyArgs) -> Outcome<()> {
    let (_, contents) = verify_archive(ctx, &args.archive).await?;
    let checked = if contents.metadata.is_some() { "" } else { " (no bundle.json: not written by bundle)" };
    ctx.printer.result(format!(
        "{}: OK, {} images, {} blobs, {} verified{checked}",
        args.archive.display(),
        contents.images.len(),
        contents.blobs.len(),
        human(contents.total_bytes())
    ));
    Ok(())
}

/// Read the whole archive once and check everything; any problem is an error listing all problems.
pub async fn verify_archive(ctx: &Context, path: &Path) -> Outcome<(Arc<ArchiveFile>, BundleContents)> {
    let archive = match ArchiveFile::open(path) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            return Err(e).explain_with(|| format!("cannot verify {}", path.display()));
        }
    };
    let sidecar = read_sidecar(path).explain_with(|| format!("cannot verify {}", path.display()))?;
    if sidecar.is_none() {
        ctx.printer.warn(format!(
            "{} not found; checking the archive's content against its own digests only",
            sidecar_path(path).display()
        ));
    }
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let progress = ctx.printer.transfer("verify", len, 0);
    let scanning = archive.clone();
    let p = progress.clone();
    let scan = tokio::task::spawn_blocking(move || scanning.scan(&|n| p.add(n as i64)))
        .await
        .explain("the verification task failed")??;
    progress.finish();
    ctx.printer.detail(format!(
        "read {} in {:.1?}; sha256 {}",
        human(scan.file_len),
        progress.elapsed(),
        scan.file_digest.hex()
    ));
    let (contents, problems) = check(scan, sidecar.as_ref());
    match contents {
        Some(c) if problems.is_empty() => Ok((archive, c)),
        _ => {
            let shown = 20;
            let mut message = format!("{} failed verification ({} problems):", path.display(), problems.len());
            for p in problems.iter().take(shown) {
                message.push_str(&format!("\n  - {p}"));
            }
            if problems.len() > shown {
                message.push_str(&format!("\n  … and {} more", problems.len() - shown));
            }
            Err(Failure::user(
                message,
                "the archive is damaged, truncated or altered; copy it again from the export side and compare it with `sha256sum -c` against the .sha256 file written with it",
            ))
        }
    }
}
