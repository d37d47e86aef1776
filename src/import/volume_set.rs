//! Import of the volumes of a set (`bundle import -d REGISTRY V1 V2 …`), as an input of the pipeline, in any order. Each is planned from its front and
//! proven as a single archive is (by its sidecar beside the probe, else in full), lost volumes are rebuilt from
//! parity volumes when there are enough, the set is put together (`volumes::set`), every image whose volumes are
//! all there is pushed, and then, when volumes are missing, the import fails naming them and the images they hold.

use super::delivery::{self, Surroundings};
use super::job::{ImportError, ImportJob};
use crate::archive::contents::Checked;
use crate::archive::proof;
use crate::volumes::VolumeError;
use crate::volumes::parity::ParityHeader;
use crate::volumes::set::{Assembled, GivenVolume, assemble};

pub async fn import(at: Surroundings<'_>, args: &ImportJob, started: std::time::Instant) -> Result<(), ImportError> {
    let mut given = Vec::new();
    let mut parity = Vec::new();
    let mut unproven = Vec::new();
    for path in &args.archives {
        if let Some(header) = ParityHeader::read(path) {
            parity.push((header, path.clone()));
            continue;
        }
        match plan_volume(at, path, args.proven(path)).await {
            Some(u) => {
                given.push(GivenVolume {
                    path: path.clone(),
                    archive: u.archive.clone(),
                    contents: u.contents.clone(),
                });
                unproven.push(u);
            }
            None => given.push(verify_volume(at, path).await?),
        }
    }
    let Some(first) = given.first() else {
        let path = args.archives[0].clone();
        return Err(ImportError::Volumes(VolumeError::NotAVolume { path }));
    };
    let record = first.contents.volume().expect("verified as a volume").clone();
    let mut rebuilt_dir = None;
    let have: Vec<u32> = given.iter().filter_map(|g| g.contents.volume().map(|v| v.number)).collect();
    let missing: Vec<u32> = (1..=record.count).filter(|n| !have.contains(n)).collect();
    parity.retain(|(h, path)| {
        let same = h.set == record.set && h.count == record.count;
        if !same {
            at.printer.warn(format!("{} is a parity volume of another set; not used", path.display()));
        }
        same
    });
    if !missing.is_empty() && !parity.is_empty() {
        if missing.len() > parity.len() {
            at.printer.warn(format!(
                "{} volumes are missing and {} parity volumes are here: parity rebuilds at most as many volumes as there are parity volumes",
                missing.len(),
                parity.len()
            ));
        } else {
            // A rebuild reads the other volumes: they must be proven first.
            prove_all(at, std::mem::take(&mut unproven)).await?;
            let dir = tempfile::Builder::new()
                .prefix("bundle-rebuilt-")
                .tempdir_in(&args.tmp_dir)
                .map_err(|source| ImportError::TempDir { dir: args.tmp_dir.clone(), source })?;
            for rebuilt in rebuild(at, &given, &parity, &missing, dir.path()).await? {
                given.push(rebuilt);
            }
            // Kept until the push is done: the rebuilt volumes are read from it.
            rebuilt_dir = Some(dir);
        }
    }
    let set = assemble(given).map_err(ImportError::Volumes)?;
    let pushed = push(at, args, set, unproven, started).await;
    drop(rebuilt_dir);
    pushed
}

/// Rebuild the missing volumes from the others and the parity volumes, then verify each as any volume.
async fn rebuild(
    at: Surroundings<'_>,
    given: &[GivenVolume],
    parity: &[(ParityHeader, std::path::PathBuf)],
    missing: &[u32],
    dir: &std::path::Path,
) -> Result<Vec<GivenVolume>, ImportError> {
    let first = &given[0];
    let count = first.contents.volume().expect("a volume").count;
    let set = first.contents.volume().expect("a volume").set.clone();
    // Each volume of this set once (volumes of another set are refused when the set is put together).
    let mut present: Vec<(u32, std::path::PathBuf)> = Vec::new();
    for v in given.iter().filter_map(|g| g.contents.volume().filter(|v| v.set == set).map(|v| (v.number, &g.path))) {
        if !present.iter().any(|(n, _)| *n == v.0) {
            present.push((v.0, v.1.clone()));
        }
    }
    let template = first.path.clone();
    let (parity, missing, dir) = (parity.to_vec(), missing.to_vec(), dir.to_path_buf());
    let name =
        move |n: u32| crate::volumes::sibling_name(&template, n, count).unwrap_or_else(|| format!("volume{n}.tar.zst"));
    // A damaged parity volume would rebuild a damaged volume: its sidecar, when it came along, says first.
    for (_, path) in &parity {
        let file = path.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let expected = crate::archive::checksum::read_sidecar(&file).ok().flatten();
            expected.map(|e| crate::archive::checksum::file_digest(&file, &|_| {}).is_ok_and(|a| a == e))
        })
        .await
        .map_err(|source| ImportError::Task { what: "rebuild", source })?;
        if checked == Some(false) {
            return Err(ImportError::DamagedParity(path.clone()));
        }
    }
    let used = parity.len();
    let rebuilt = tokio::task::spawn_blocking(move || {
        crate::volumes::parity::rebuild(count, &present, &parity, &missing, &dir, name)
    })
    .await
    .map_err(|source| ImportError::Task { what: "rebuild", source })?
    .map_err(ImportError::Rebuild)?;
    let mut out = Vec::new();
    for (n, path) in rebuilt {
        at.printer.info(format!("Rebuilt volume {n} of {count} from the others and {used} parity volumes"));
        out.push(verify_volume(at, &path).await?);
    }
    Ok(out)
}

/// A volume planned from its front (metadata, manifests, tar headers) whose sidecar check runs while the
/// destination is probed; proven before anything is pushed, as a single archive is.
struct Unproven {
    path: std::path::PathBuf,
    archive: std::sync::Arc<crate::archive::ArchiveFile>,
    contents: crate::archive::BundleContents,
    check: proof::Pending,
}

/// Plan a volume from its front when its sidecar is there to prove it by; `None`: verify it in full instead.
async fn plan_volume(
    at: Surroundings<'_>,
    path: &std::path::Path,
    proven: Option<&crate::oci::digest::Digest>,
) -> Option<Unproven> {
    crate::archive::checksum::read_sidecar(path).ok().flatten()?;
    let (archive, contents) = proof::front(path).await?;
    contents.volume()?;
    let check = proof::Pending::start_proven(at.printer, path, proven);
    Some(Unproven { path: path.to_path_buf(), archive, contents, check })
}

/// Prove volumes planned from their fronts: by their sidecars, or (when one does not match) in full.
async fn prove_all(at: Surroundings<'_>, unproven: Vec<Unproven>) -> Result<(), ImportError> {
    for u in unproven {
        let (_, contents, how) = u.check.prove(at.printer, &u.path, u.archive, u.contents).await?;
        let against = match how {
            proof::Proven::BySidecar => {
                format!(" against {}", crate::archive::checksum::sidecar_path(&u.path).display())
            }
            proof::Proven::InFull => String::new(),
        };
        at.printer.info(format!("Verified {}{against}: {}", u.path.display(), held(&contents)));
    }
    Ok(())
}

/// `volume 2 of 5 (3 blobs and 1 pieces, 1.2 GiB)`.
fn held(contents: &crate::archive::BundleContents) -> String {
    let v = contents.volume().expect("a volume");
    format!(
        "volume {} of {} ({} blobs and {} pieces, {})",
        v.number,
        v.count,
        contents.blobs.len() - contents.manifests.len(),
        contents.pieces.len(),
        crate::support::printer::human(contents.blobs.values().chain(contents.pieces.values()).map(|e| e.size).sum())
    )
}

/// Verify one volume in full.
async fn verify_volume(at: Surroundings<'_>, path: &std::path::Path) -> Result<GivenVolume, ImportError> {
    let path = path.to_path_buf();
    let (archive, checked) = proof::verify_any(at.printer, &path).await?;
    let not_a_volume = || VolumeError::NotAVolume { path: path.clone() };
    let Checked::Layout(contents) = checked else {
        return Err(ImportError::Volumes(not_a_volume()));
    };
    if contents.volume().is_none() {
        return Err(ImportError::Volumes(not_a_volume()));
    }
    at.printer.info(format!("Verified {}: {}", path.display(), held(&contents)));
    Ok(GivenVolume { path: path.clone(), archive, contents })
}

/// Push what the volumes complete; fail naming what is missing.
async fn push(
    at: Surroundings<'_>,
    args: &ImportJob,
    set: Assembled,
    unproven: Vec<Unproven>,
    started: std::time::Instant,
) -> Result<(), ImportError> {
    let contents = &set.contents;
    if !set.missing.is_empty() {
        at.printer.warn(format!(
            "{} of the {} volumes of set {} are here; the {} images they complete are imported, the other {} are not",
            set.given.len(),
            set.count,
            set.set,
            contents.images.len(),
            set.incomplete.len()
        ));
    }
    args.files_wanted(contents)?;
    let prepared = delivery::prepare(at, &args.target, contents, args.dry_run).await?;
    if prepared.nothing_to_do(contents) && !args.dry_run {
        for u in unproven {
            u.check.abandon();
        }
    } else {
        // Something will be pushed (or shown): every volume must be proven sound first.
        prove_all(at, unproven).await?;
    }
    if args.dry_run {
        prepared.dry_run(at, &args.target, contents)?;
    } else if prepared.nothing_to_do(contents) {
        at.observer.ended(&prepared, contents, delivery::Ended::NothingToDo);
        at.printer.info(format!(
            "{} already holds all {} images these volumes complete, with the same digests; nothing to push (checked in {:.1?})",
            args.target.destination_text,
            prepared.plan.images.len(),
            started.elapsed()
        ));
    } else {
        let registry = &args.target.destination.registry;
        let stats = prepared
            .push(at, &set.origin, contents)
            .await
            .map_err(|e| delivery::push_failure(e, "import", registry, None))?;
        prepared.report(at, "Imported", contents, &stats, &args.target.destination_text, started);
    }
    if set.missing.is_empty() {
        if !args.dry_run {
            prepared.finish(at.printer, &args.target, contents).await?;
            if let Some(dir) = &args.files_out {
                prepared.write_files(at.printer, dir, contents, &|d| set.origin.segments(d)).await?;
            }
        }
        return Ok(());
    }
    Err(missing_volumes(&set))
}

/// The failure that names each missing volume and the images waiting for it.
fn missing_volumes(set: &Assembled) -> ImportError {
    let lines: Vec<String> = set
        .missing
        .iter()
        .map(|m| {
            let file = m.file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default();
            let images = if m.images.is_empty() { "no image of its own".to_string() } else { m.images.join(", ") };
            format!("  - volume {}{file}: {images}", m.number)
        })
        .collect();
    ImportError::MissingVolumes(format!(
        "{} of the {} images were not imported: {} of the {} volumes of set {} are missing:\n{}",
        set.incomplete.len(),
        set.incomplete.len() + set.contents.images.len(),
        set.missing.len(),
        set.count,
        set.set,
        lines.join("\n")
    ))
}
