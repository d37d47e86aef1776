//! The export pipeline: resolved images → blobs in a store → one archive and its sidecar, published
//! atomically under the output name.
//!
//! Downloads and archive writing run at the same time: the writer follows each blob as its download writes it
//! (`blob_store::Arrivals`). When the writer learns that bytes it already wrote must not stay (a download started
//! over, a cached blob was damaged), `pack::write` says so as `Packed::Again` and the archive is written again
//! from the store: a round per damaged blob, so at most one per blob.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt as _, stream};

use crate::archive::checksum::{sidecar_line, sidecar_path};
use crate::chart::source::LoadedChart;
use crate::export::blob_store::prune::{self, CacheLock, PruneOutcome};
use crate::export::blob_store::{Arrivals, BlobStore, Rewrite};
use crate::export::pack::{self, Packed};
use crate::export::pull::{self, PullError};
use crate::export::resolve::{ResolveError, ResolvedImage, resolve};
use crate::oci::digest::Digest;
use crate::oci::layout::ChartRecord;
use crate::oci::reference::ImageRef;
use crate::registry::Registries;
use crate::support::hint::Hint;
use crate::support::printer::Printer;

/// Where downloaded blobs are kept while the archive is written.
pub enum Staging {
    /// The blob cache: kept, so a re-run downloads only what is missing; pruned to `max_bytes` afterwards
    /// (`None`: never).
    Cache { dir: PathBuf, max_bytes: Option<u64> },
    /// A temporary directory under `tmp_dir`, removed when the export ends, however it ends.
    Temporary { tmp_dir: PathBuf },
}

/// One export, settled: what to write, where, and how.
pub struct ArchiveJob<'a> {
    /// `--since`: blobs the base holds are left out (a delta).
    pub base: Option<crate::export::delta::Base>,
    pub images: Vec<ResolvedImage>,
    /// Each chart travels as an OCI artifact beside its images.
    pub charts: Vec<(&'a LoadedChart, ChartRecord)>,
    /// Files that travel as OCI artifacts of their own (staged: hashed, or downloaded and checked).
    pub files: &'a [crate::files::StagedFile],
    /// `--verify-signatures`: what verified, for bundle.json.
    pub signatures: Vec<crate::oci::layout::SignatureRecord>,
    /// `--volume-size` (bytes, parity volumes): the archive is then cut into volumes beside it, which needs the
    /// space of a second copy (and of the parity volumes) on the output's filesystem.
    pub volumes: Option<(u64, u32)>,
    pub output: PathBuf,
    /// An existing output may be replaced.
    pub replace: bool,
    pub staging: Staging,
    /// `created` for bundle.json (from SOURCE_DATE_EPOCH only, so archives carry no timestamp otherwise).
    pub created: Option<String>,
    pub concurrency: usize,
}

/// What was written.
pub struct Exported {
    pub images: usize,
    pub blobs: usize,
    /// Bytes of content (blobs and manifests) in the archive.
    pub content_bytes: u64,
    pub compressed_bytes: u64,
    pub digest: Digest,
    pub sidecar: PathBuf,
    pub pulled_blobs: usize,
    pub pulled_bytes: u64,
    pub pull_time: Duration,
    /// What pruning the cache came to, when there is a cache with a limit.
    pub pruned: Option<(PathBuf, u64, Result<PruneOutcome, std::io::Error>)>,
    /// A delta: the base's file name, and the blobs (count, bytes) left to it.
    pub left_out: Option<(String, usize, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot stage the chart")]
    Chart(#[source] std::io::Error),
    #[error("cannot stage the file `{name}`")]
    File {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pull(Box<PullError>),
    #[error("the archive writer failed")]
    Writer(#[source] tokio::task::JoinError),
    #[error("cannot move the finished file to {}: {source}", path.display())]
    Publish {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        /// The name was taken while the export ran.
        appeared: bool,
    },
    #[error("{count} of {of} images could not be resolved:{list}")]
    Resolve { count: usize, of: usize, list: String, hint: Option<String> },
    #[error(transparent)]
    ResolveOne(Box<ResolveError>),
    #[error(transparent)]
    Disk(#[from] crate::support::disk::DiskShort),
}

// Boxed: registry errors are large, and every `Result` of the pipeline would carry their size.
impl From<PullError> for ExportError {
    fn from(e: PullError) -> ExportError {
        ExportError::Pull(Box::new(e))
    }
}

impl From<ResolveError> for ExportError {
    fn from(e: ResolveError) -> ExportError {
        ExportError::ResolveOne(Box::new(e))
    }
}

impl Hint for ExportError {
    fn hint(&self) -> Option<String> {
        match self {
            ExportError::Io { .. } | ExportError::Chart(_) | ExportError::File { .. } => {
                Some("check that the directory exists, is writable and has space; --tmp-dir and --cache-dir move the work elsewhere".into())
            }
            ExportError::Pull(e) => e.hint(),
            ExportError::Writer(_) => None,
            ExportError::Publish { appeared: true, .. } => {
                Some("it appeared while the export ran; choose another name or pass --force".into())
            }
            ExportError::Publish { .. } => Some("check the permissions of its directory".into()),
            ExportError::Resolve { hint, .. } => hint.clone(),
            ExportError::ResolveOne(e) => e.hint(),
            ExportError::Disk(e) => e.hint(),
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { what, path, source }
}

/// Resolve every reference, `concurrency` at a time; every failure is reported, so one run tells the user
/// everything to fix.
pub async fn resolve_all(
    registries: &Registries,
    refs: &[ImageRef],
    choice: Option<&crate::oci::platform::PlatformChoice>,
    concurrency: usize,
) -> Result<Vec<ResolvedImage>, ExportError> {
    let results: Vec<_> = stream::iter(refs.iter().enumerate())
        .map(|(i, r)| async move { (i, resolve(registries, r, choice).await) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut ok = vec![None; refs.len()];
    let mut failed = Vec::new();
    for (i, result) in results {
        match result {
            Ok(img) => ok[i] = Some(img),
            Err(e) => failed.push((i, e)),
        }
    }
    if failed.is_empty() {
        return Ok(ok.into_iter().map(|x| x.expect("resolved")).collect());
    }
    failed.sort_by_key(|(i, _)| *i);
    if failed.len() == 1 {
        let (_, e) = failed.pop().expect("one failure");
        return Err(e.into());
    }
    let list: String =
        failed.iter().map(|(_, e)| format!("\n  - {}", crate::support::error_text::chain_line(e))).collect();
    let hint = failed.iter().find_map(|(_, e)| e.hint());
    Err(ExportError::Resolve { count: failed.len(), of: refs.len(), list, hint })
}

/// Download, write and publish the archive of `job`; the output name holds nothing until the archive and its
/// sidecar are complete.
pub async fn write_archive(
    registries: &Registries,
    printer: &Printer,
    job: ArchiveJob<'_>,
) -> Result<Exported, ExportError> {
    let ArchiveJob {
        base,
        mut images,
        charts,
        files,
        signatures,
        volumes,
        output,
        replace,
        staging,
        created,
        concurrency,
    } = job;
    // The temporary directory of `Staging::Temporary` lives until this function returns.
    let (store, _temporary, cache) = match &staging {
        Staging::Temporary { tmp_dir } => {
            std::fs::create_dir_all(tmp_dir).map_err(io("create the temporary directory", tmp_dir))?;
            let dir = tempfile::Builder::new()
                .prefix("bundle-export-")
                .tempdir_in(tmp_dir)
                .map_err(io("create a staging directory under", tmp_dir))?;
            let store = BlobStore::open(dir.path()).map_err(io("prepare the staging directory", dir.path()))?;
            (store, Some(dir), None)
        }
        Staging::Cache { dir, max_bytes } => {
            printer.detail(format!("blob cache: {}", dir.display()));
            let store = BlobStore::open(dir).map_err(io("use the cache directory", dir))?;
            let lock = CacheLock::shared(dir).map_err(io("lock the cache directory", dir))?;
            (store, None, Some((dir.clone(), *max_bytes, lock)))
        }
    };
    let records = charts.iter().map(|(_, r)| r.clone()).collect();
    for (loaded, _) in &charts {
        let artifact = crate::chart::artifact::oci_artifact(loaded).map_err(ExportError::Chart)?;
        for (_, bytes) in &artifact.blobs {
            store.put(bytes).map_err(ExportError::Chart)?;
        }
        images.push(artifact.image);
    }
    let mut file_records = Vec::new();
    for file in files {
        let artifact = crate::files::artifact(file);
        let failed = |source| ExportError::File { name: file.name.clone(), source };
        store.put(&artifact.config.1).map_err(failed)?;
        store.put_file(&file.path, &file.digest, file.size).map_err(failed)?;
        images.push(artifact.image);
        file_records.push(artifact.record);
    }
    let mut meta = pack::metadata(&images, created, records, file_records);
    meta.signatures = signatures;
    meta.format_version = meta.required_version();
    let mut jobs = pull::jobs(&images);
    let left_out = base.map(|base| {
        let manifests = images.iter().flat_map(|i| i.manifests.iter().map(|m| m.digest.clone())).collect();
        let absent = base.apply(&mut meta, &manifests);
        // What the base holds is not downloaded either.
        jobs.retain(|j| !absent.contains(&j.digest));
        let bytes = meta.delta.as_ref().map_or(0, |d| d.absent.iter().map(|b| b.size).sum());
        (base.record.file, absent.len(), bytes)
    });
    let pulled_bytes: u64 = jobs.iter().map(|j| j.size).sum();

    // The archive is written under a temporary name next to OUT (same filesystem, so the rename is atomic).
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    // Disk before work: the downloads the store lacks, and the archive (its content, which compression of
    // already-compressed layers hardly shrinks; volumes and parity beside it), before any download starts.
    let absent: u64 = meta.delta.as_ref().map_or(0, |d| d.absent.iter().map(|b| b.size).sum());
    let in_archive = meta.total_blob_bytes().saturating_sub(absent);
    let to_stage: u64 = jobs.iter().filter(|j| !store.contains(&j.digest, j.size)).map(|j| j.size).sum();
    let for_volumes = volumes.map_or(0, |(size, parity)| in_archive + u64::from(parity) * size.min(in_archive));
    crate::support::disk::check(&[
        crate::support::disk::Need { dir: store.dir().to_path_buf(), bytes: to_stage, what: "the downloads".into() },
        crate::support::disk::Need {
            dir: dir.clone(),
            bytes: in_archive + for_volumes,
            what: if volumes.is_some() { "the archive and its volumes".into() } else { "the archive".into() },
        },
    ])?;
    let file_name = output.file_name().unwrap_or_default().to_string_lossy().to_string();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(io("create a temporary file in", &dir))?;
    let content_bytes = meta.total_blob_bytes();
    let progress = printer.transfer("pull", pulled_bytes, jobs.len() as u64);
    let writing = printer.transfer("write", content_bytes, meta.blobs.len() as u64);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Without a cache the staged copy is only a buffer: what the archive writer can take as it lands is never
    // written to it, so the blob is written once, to the archive.
    let arrivals = match &staging {
        Staging::Temporary { .. } => Arrivals::handing_over(),
        Staging::Cache { .. } => Arrivals::default(),
    };
    for img in images.iter().filter(|i| i.made_here()) {
        for b in &img.blobs {
            arrivals.arrived(&b.digest, true);
        }
    }
    let store = Arc::new(store);
    let images = Arc::new(images);
    let meta = Arc::new(meta);
    let pack = |file: std::fs::File| {
        let (images, meta, store, arrivals, w) =
            (images.clone(), meta.clone(), store.clone(), arrivals.clone(), writing.clone());
        tokio::task::spawn_blocking(move || {
            pack::write(file, &images, &meta, &store, threads, &|n| w.add(n as i64), &arrivals)
        })
    };
    let reopen = |truncate: bool| -> Result<std::fs::File, ExportError> {
        let mut file = temp.as_file().try_clone().map_err(io("open the temporary archive", temp.path()))?;
        if truncate {
            file.set_len(0).map_err(io("rewrite the temporary archive", temp.path()))?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
                .map_err(io("rewrite the temporary archive", temp.path()))?;
        }
        Ok(file)
    };
    let pack_task = pack(reopen(false)?);
    let pulled = pull::pull_all(registries, &store, &jobs, concurrency, &progress, &arrivals).await;
    progress.finish();
    let mut packed = pack_task.await.map_err(ExportError::Writer)?;
    pulled?;
    let written = loop {
        match packed {
            Ok(Packed::Written(w)) => break w,
            Err(e) => return Err(io("write the archive", &output)(e)),
            Ok(Packed::Again(why)) => {
                // Downloaded again before the rewrite: a damaged cached blob, and the blobs handed to the writer
                // and never staged whole (written this time).
                let mut again = arrivals.stop_handing_over();
                if let Rewrite::DamagedCacheBlob(digest) = &why {
                    printer.warn(format!(
                        "the cached copy of {digest} did not match its digest; it was removed and is downloaded again"
                    ));
                    again.push(digest.clone());
                }
                for digest in &again {
                    let path = store.path(digest);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io("remove the blob to download again", &path)(e));
                        }
                        _ => {}
                    }
                }
                let again: Vec<_> = jobs.iter().filter(|j| again.contains(&j.digest)).cloned().collect();
                pull::pull_all(registries, &store, &again, concurrency, &progress, &arrivals).await?;
                printer.detail(format!("{why}; writing the archive again"));
                writing.reset();
                packed = pack(reopen(true)?).await.map_err(ExportError::Writer)?;
            }
        }
    };
    printer.detail(format!(
        "pulled {} blobs ({}) in {:.1?}",
        jobs.len(),
        indicatif::HumanBytes(pulled_bytes),
        progress.elapsed()
    ));
    writing.finish();

    let sidecar = sidecar_path(&output);
    let mut side_temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.sha256."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(io("create the checksum file", &sidecar))?;
    side_temp
        .write_all(sidecar_line(&output, &written.digest).as_bytes())
        .and_then(|()| side_temp.as_file().sync_all())
        .map_err(io("write the checksum file", &sidecar))?;
    // Temporary files are created private (0600); the results are ordinary files.
    for f in [temp.as_file(), side_temp.as_file()] {
        set_readable(f).map_err(io("set the permissions of", &output))?;
    }
    publish(temp, &output, replace)?;
    publish(side_temp, &sidecar, true)?;

    let pruned = cache.and_then(|(dir, max_bytes, lock)| {
        let max = max_bytes?;
        let keep: HashSet<Digest> = meta.blobs.iter().map(|b| b.digest.clone()).collect();
        let outcome = prune::prune(&dir, lock, &keep, max);
        Some((dir, max, outcome))
    });
    Ok(Exported {
        images: images.len(),
        blobs: meta.blobs.len(),
        content_bytes,
        compressed_bytes: written.compressed_len,
        digest: written.digest,
        sidecar,
        pulled_blobs: jobs.len(),
        pulled_bytes,
        pull_time: progress.elapsed(),
        pruned,
        left_out,
    })
}

/// Rename a finished temporary file to its final name; `replace` decides whether an existing file may go.
fn publish(temp: tempfile::NamedTempFile, path: &Path, replace: bool) -> Result<(), ExportError> {
    let result = if replace { temp.persist(path) } else { temp.persist_noclobber(path) };
    result.map(|_| ()).map_err(|e| ExportError::Publish {
        path: path.to_path_buf(),
        source: e.error,
        appeared: path.exists(),
    })
}

fn set_readable(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}
