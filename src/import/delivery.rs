//! The destination half of `import` and `copy`: plan, prepare ECR, probe, print the dry run, push, report, and
//! end with the signatures read back, the chart's install line and the values file. The two commands differ only
//! in where the images and their bytes come from (an archive, or the source registries): `BlobOrigin`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::{ArchiveImage, BundleContents};
use crate::chart::values_out;
use crate::export::delta::DeltaError;
use crate::export::referrers::ReferrersError;
use crate::import::ecr::{EcrError, EcrSettings};
use crate::import::push::{self, BlobOrigin, Presence, PushError, PushPlan, PushStats};
use crate::mirrors::{MirrorError, MirrorHost, MirrorSet};
use crate::oci::destination::Destination;
use crate::oci::reference::ImageRef;
use crate::registry::{PoolError, Registries, RegistryClient, Role};
use crate::support::printer::Printer;

/// Where the images go, as the flags said.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where images go, with the path mapping the flags chose.
    pub destination: Destination,
    /// `-d` as the user wrote it, for messages.
    pub destination_text: String,
    pub values_out: Option<PathBuf>,
    /// Where to write the runtimes' mirror configs (`mirrors`), also in a dry run.
    pub mirrors_out: Option<PathBuf>,
    /// ECR settings from the flags (the registry config's `[registry.ecr]` is laid under them).
    pub ecr: EcrSettings,
}

/// What a run needs of its surroundings: the registries, the output, how many requests at once, and who is told
/// how the push ended.
#[derive(Clone, Copy)]
pub struct Surroundings<'a> {
    pub registries: &'a Registries,
    pub printer: &'a Printer,
    pub concurrency: usize,
    pub observer: &'a dyn Observer,
}

/// How a push ended.
pub enum Ended<'a> {
    DryRun,
    NothingToDo,
    Pushed(&'a PushStats),
    /// The error, and the plan's images found at the destination after it (pushed before it struck).
    Failed(String, std::collections::BTreeSet<usize>),
}

/// Told how each push ended, with what was planned: the command's `--json` document.
pub trait Observer: Sync {
    /// Whether it wants to be told at all: after a failed push, finding what made it costs a request per image.
    fn watching(&self) -> bool;
    fn ended(&self, prepared: &Prepared, contents: &BundleContents, ended: Ended<'_>);
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot plan the push")]
    Plan(#[source] Box<PushError>),
    #[error("cannot prepare the destination registry")]
    Pool(#[source] PoolError),
    #[error("cannot check what {registry} already has")]
    Probe {
        registry: String,
        #[source]
        source: Box<PushError>,
    },
    #[error(transparent)]
    Ecr(#[from] EcrError),
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error(
        "{} tags already exist with other content in repositories whose tags are immutable; nothing was pushed:\n  - {}",
        .0.len(),
        .0.join("\n  - ")
    )]
    ImmutableTags(Vec<String>),
    /// The push stopped; `message` says it in the command's terms (`import`, `copy`).
    #[error("{message}")]
    Push {
        message: String,
        #[source]
        source: Box<PushError>,
    },
    #[error(transparent)]
    Referrers(#[from] ReferrersError),
    #[error(transparent)]
    Mirrors(#[from] MirrorError),
    #[error(transparent)]
    Files(#[from] crate::files::FileError),
    #[error("--values-out needs a chart (-c), and there is none")]
    NoChart,
    #[error("cannot write {path}")]
    Values {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::support::hint::Hint for DeliveryError {
    fn hint(&self) -> Option<String> {
        match self {
            DeliveryError::Plan(e) | DeliveryError::Probe { source: e, .. } | DeliveryError::Push { source: e, .. } => {
                e.hint()
            }
            DeliveryError::Pool(e) => e.hint(),
            DeliveryError::Ecr(e) => e.hint(),
            DeliveryError::Delta(e) => e.hint(),
            DeliveryError::ImmutableTags(_) => Some(
                "an immutable tag cannot be moved: push into another prefix (-d REGISTRY/PREFIX), or ask the repository owner".into(),
            ),
            DeliveryError::Referrers(e) => e.hint(),
            DeliveryError::Mirrors(e) => e.hint(),
            DeliveryError::Files(e) => e.hint(),
            DeliveryError::NoChart => Some("export (or copy) with -c CHART, so the chart and its values travel".into()),
            DeliveryError::Values { .. } => None,
        }
    }
}

/// The destination, probed: what is there and what a push would do.
pub struct Prepared {
    pub plan: PushPlan,
    pub presence: Presence,
    client: Arc<RegistryClient>,
    ecr: Option<crate::import::ecr::session::EcrSession>,
    /// The runtimes' mirror rules, when `--mirrors-out` asks for them: derived (and a colliding mapping
    /// refused) before anything is pushed.
    mirrors: Option<MirrorSet>,
}

/// Plan where each image goes, set up ECR, and learn what the destination already has.
pub async fn prepare(
    at: Surroundings<'_>,
    target: &Target,
    contents: &BundleContents,
    dry_run: bool,
) -> Result<Prepared, DeliveryError> {
    let dest = &target.destination;
    let plan = PushPlan::new(contents, dest).map_err(|e| DeliveryError::Plan(Box::new(e)))?;
    let mirrors = match &target.mirrors_out {
        Some(_) => Some(mirror_set(at.registries, dest, &plan, contents)?),
        None => None,
    };
    // Repositories are prepared once (ECR: created, token fetched).
    let ecr = crate::import::ecr::session::prepare(
        at.registries,
        at.printer,
        at.concurrency,
        &target.ecr,
        dest,
        &plan,
        dry_run,
    )
    .await?;
    let client = at.registries.client(&dest.registry, Role::Destination).map_err(DeliveryError::Pool)?;
    // A dry run must say exactly what would be pushed, and ECR mounts only from repositories whose manifests
    // reference the blob: both check blobs with HEAD. Otherwise each blob's first upload checks for itself.
    let check = if dry_run || ecr.is_some() { push::BlobCheck::Head } else { push::BlobCheck::OnUpload };
    let mut presence = push::probe(&client, &plan, contents, at.concurrency, check)
        .await
        .map_err(|source| DeliveryError::Probe { registry: dest.registry.clone(), source: Box::new(source) })?;
    // A delta: what it leaves to its base must be there already, before anything is pushed.
    crate::import::delta_base::find_absent(&client, dest, &plan, contents, &mut presence, at.concurrency).await?;
    if let Some(session) = &ecr {
        check_immutable_tags(&presence, session)?;
    }
    Ok(Prepared { plan, presence, client, ecr, mirrors })
}

/// The rules for the plan's images (a chart is pulled by helm, not by a runtime, and has none), with the
/// destination as the registry config says nodes reach it.
fn mirror_set(
    registries: &Registries,
    dest: &Destination,
    plan: &PushPlan,
    contents: &BundleContents,
) -> Result<MirrorSet, MirrorError> {
    let host = MirrorHost::from_endpoint(dest, &registries.config().endpoint(&dest.registry))?;
    // Files are not pulled by runtimes either (their artifacts are named in bundle.json).
    let files: std::collections::BTreeSet<String> =
        contents.metadata.iter().flat_map(|m| &m.files).map(|f| f.image.clone()).collect();
    let pushed = plan
        .images
        .iter()
        .filter(|p| !contents.images[p.image].helm_chart && !files.contains(&p.source.to_string()))
        .map(|p| (&p.source, &p.target));
    MirrorSet::new(pushed, host)
}

impl Prepared {
    pub fn nothing_to_do(&self, contents: &BundleContents) -> bool {
        self.presence.nothing_to_do(&self.plan, contents)
    }

    /// The destination registry, as its client names it.
    pub fn registry_name(&self) -> &str {
        self.client.name()
    }

    /// Whether plan image `i` was complete, with its tag current, before anything was pushed.
    pub fn was_complete(&self, i: usize, contents: &BundleContents) -> bool {
        let p = &self.plan.images[i];
        let repo = p.target.repository().to_string();
        self.presence.manifests.contains(&(repo.clone(), contents.images[p.image].digest.clone()))
            && p.target.tag().is_none_or(|t| self.presence.tags_current.contains(&format!("{repo}:{t}")))
    }

    /// After a failed push: the images that made it anyway (their root manifest is at the destination).
    pub async fn found_after_failure(&self, contents: &BundleContents) -> std::collections::BTreeSet<usize> {
        let mut found = std::collections::BTreeSet::new();
        for (i, p) in self.plan.images.iter().enumerate() {
            let digest = &contents.images[p.image].digest;
            if let Ok(Some(_)) = self.client.head_manifest(p.target.repository(), digest.as_str()).await {
                found.insert(i);
            }
        }
        found
    }

    /// A dry run's end: the seed's lines and the plan (`print_dry_run`), and the mirror configs, which name
    /// where the images would be.
    pub fn dry_run(
        &self,
        at: Surroundings<'_>,
        target: &Target,
        contents: &BundleContents,
    ) -> Result<(), DeliveryError> {
        self.print_dry_run(at, contents);
        self.write_mirrors(at.printer, target, true)
    }

    /// The seed's dry-run lines (`Copying SRC to DST (dry-run)`), one per image, then the plan.
    fn print_dry_run(&self, at: Surroundings<'_>, contents: &BundleContents) {
        at.observer.ended(self, contents, Ended::DryRun);
        let printer = at.printer;
        for p in &self.plan.images {
            let img = &contents.images[p.image];
            let filtered = contents
                .metadata
                .as_ref()
                .and_then(|m| m.images.get(p.image))
                .and_then(|m| m.platform_selection.as_ref())
                .map(|s| describe_selection(s, img))
                .unwrap_or_default();
            printer.result(format!("Copying {} to {} (dry-run){filtered}", describe_source(img, &p.source), p.target));
        }
        let presence = &self.presence;
        printer.result(format!(
            "Plan: {} images into {} repositories of {} ({} already complete); {} blobs already present; {} blobs to upload ({}), {} to mount; nothing changed (dry run)",
            self.plan.images.len(),
            self.plan.repositories.len(),
            self.client.name(),
            presence.images_complete(&self.plan, contents),
            presence.blobs_present,
            presence.blobs_to_upload(),
            crate::support::printer::human(presence.bytes_to_upload(contents)),
            presence.blobs_to_mount(),
        ));
    }

    /// Push what is missing, with a progress bar.
    pub async fn push(
        &self,
        at: Surroundings<'_>,
        origin: &dyn BlobOrigin,
        contents: &BundleContents,
    ) -> Result<PushStats, PushError> {
        let presence = &self.presence;
        let progress =
            at.printer.transfer("push", presence.bytes_to_upload(contents), presence.blobs_to_upload() as u64);
        let run = if self.ecr.is_some() {
            // ECR mounts a blob only from a repository whose manifests already reference it.
            push::execute_in_order(&self.client, origin, &self.plan, contents, presence, at.concurrency, &progress)
                .await
        } else {
            push::execute(&self.client, origin, &self.plan, contents, presence, at.concurrency, &progress).await
        };
        match &run {
            Ok(_) => progress.finish(),
            Err(e) if at.observer.watching() => {
                let found = self.found_after_failure(contents).await;
                at.observer.ended(self, contents, Ended::Failed(crate::support::error_text::chain_line(e), found));
            }
            Err(_) => {}
        }
        run
    }

    /// One line per image (verbose) and the totals.
    pub fn report(
        &self,
        at: Surroundings<'_>,
        verb: &str,
        contents: &BundleContents,
        stats: &PushStats,
        target: &str,
        started: std::time::Instant,
    ) {
        at.observer.ended(self, contents, Ended::Pushed(stats));
        let printer = at.printer;
        for p in &self.plan.images {
            printer.detail(format!("{} -> {}", describe_source(&contents.images[p.image], &p.source), p.target));
        }
        printer.info(format!(
            "{verb} {} images into {target} ({} were already complete): {} blobs uploaded ({}), {} mounted, {} already present, {} manifests pushed, in {:.1?}",
            self.plan.images.len(),
            self.presence.images_complete(&self.plan, contents),
            stats.uploaded,
            crate::support::printer::human(stats.uploaded_bytes),
            stats.mounted,
            self.presence.blobs_present + stats.present,
            stats.manifests,
            started.elapsed()
        ));
    }

    /// What every successful push ends with: signatures and referrers attached and read back, how to install the
    /// chart, and the values file.
    pub async fn finish(
        &self,
        printer: &Printer,
        target: &Target,
        contents: &BundleContents,
    ) -> Result<(), DeliveryError> {
        if contents.images.iter().any(|i| i.artifact.is_some()) {
            let attached = crate::import::attach::attach(&self.client, &self.plan, contents).await?;
            printer.info(format!(
                "Signatures, attestations and SBOMs resolve at {} as at the source: {} cosign tags and the referrers of {} manifests read back ({} referrers indexes written)",
                target.destination_text, attached.tags, attached.subjects, attached.indexes_written
            ));
            if attached.indexes_merged > 0 {
                printer.warn(format!(
                    "{} referrers indexes at {} list referrers of the destination's own: merged with the archive's, so those tags have new digests (not the source's)",
                    attached.indexes_merged, target.destination_text
                ));
            }
        }
        for p in self.plan.images.iter().filter(|p| contents.images[p.image].helm_chart) {
            printer.info(format!(
                "Chart: helm install RELEASE oci://{}/{} --version {}",
                p.target.registry(),
                p.target.repository(),
                p.target.tag().unwrap_or_default().replace('_', "+")
            ));
        }
        for f in contents.metadata.iter().flat_map(|m| &m.files) {
            if let Some(p) = self.plan.images.iter().find(|p| p.source.to_string() == f.image) {
                printer.info(format!("File {}: {} (oras pull {} writes it back)", f.name, p.target, p.target));
            }
        }
        if let Some(path) = &target.values_out {
            write_values(printer, contents, &target.destination, path)?;
        }
        self.write_mirrors(printer, target, false)
    }

    /// `--files-out DIR`: every file the bundle carries, from the archive (`segments_of`), or from the
    /// destination when a delta leaves it to its base.
    pub async fn write_files(
        &self,
        printer: &Printer,
        dir: &Path,
        contents: &BundleContents,
        segments_of: &(dyn Fn(&crate::oci::digest::Digest) -> Option<crate::files::Segments> + Sync),
    ) -> Result<(), DeliveryError> {
        let files = contents.metadata.as_ref().map(|m| m.files.as_slice()).unwrap_or_default();
        let elsewhere = |f: &crate::oci::layout::FileRecord| {
            let p = self.plan.images.iter().find(|p| p.source.to_string() == f.image)?;
            Some((self.client.clone(), p.target.repository().to_string()))
        };
        for f in crate::files::restore(files, segments_of, &elsewhere, dir).await? {
            printer.info(format!(
                "Wrote {} ({}), its sha256 checked",
                f.path.display(),
                crate::support::printer::human(f.size)
            ));
        }
        Ok(())
    }

    /// `--mirrors-out DIR`: every runtime's config, and what it cannot cover.
    fn write_mirrors(&self, printer: &Printer, target: &Target, dry_run: bool) -> Result<(), DeliveryError> {
        let (Some(set), Some(dir)) = (&self.mirrors, &target.mirrors_out) else {
            return Ok(());
        };
        let written = set.write(dir)?;
        let hosts = written.files.iter().filter(|f| f.ends_with("hosts.toml")).count();
        let registries = set.routes.iter().map(|r| r.registry.as_str()).collect::<std::collections::BTreeSet<_>>();
        printer.info(format!(
            "Wrote the mirror configs for the images of {} to {}: registries.conf (podman, CRI-O), certs.d/ ({hosts} containerd {}), registries.yaml (k3s, RKE2), idms.yaml and itms.yaml (OpenShift){}; docs/mirrors.md says where each goes",
            registries.into_iter().collect::<Vec<_>>().join(", "),
            dir.display(),
            if hosts == 1 { "host" } else { "hosts" },
            if dry_run { ", naming where the images would be (nothing was pushed)" } else { "" },
        ));
        let beyond = set.beyond_containerd();
        if !beyond.is_empty() {
            printer.warn(format!(
                "containerd cannot find the images of {} at {}: they did not land under one path prefix (--flatten drops path components), and containerd's hosts.toml replaces only the registry and a prefix, so certs.d/ has no file for them; containerd nodes need the values file for these images, or a mapping without --flatten",
                beyond.join(", "),
                target.destination_text
            ));
        }
        Ok(())
    }
}

/// What to tell the user when a push stopped, in the terms of the command (`import`, `copy`).
pub fn push_failure(e: PushError, verb: &str, registry: &str, archive: Option<&Path>) -> DeliveryError {
    let message = match (&e, archive) {
        (push::PushError::Registry(crate::registry::RegistryError::Source { .. }), Some(path)) => format!(
            "{verb} into {registry} stopped: {} is damaged (images whose manifests were not pushed are not visible)",
            path.display()
        ),
        (push::PushError::SparseRefused { .. }, _) => format!(
            "{verb} into {registry} stopped: the registry does not store sparse indexes, and running again will not change that"
        ),
        _ => format!(
            "{verb} into {registry} did not complete; run the same command again to finish it (what was pushed is kept)"
        ),
    };
    DeliveryError::Push { message, source: Box::new(e) }
}

/// `[platforms linux/amd64 of index sha256:… as sha256:…]`: what --platform did, on the dry-run line.
fn describe_selection(record: &crate::oci::layout::PlatformRecord, img: &ArchiveImage) -> String {
    use crate::oci::layout::SelectionMode;
    let kept = if img.platforms.is_empty() { record.chosen.join(",") } else { img.platforms.join(",") };
    match (record.mode, &record.original_digest) {
        (SelectionMode::Filter, Some(original)) => {
            format!(" [platforms {kept} of index {original}, as new index {}]", img.digest)
        }
        (SelectionMode::Sparse, _) => {
            format!(" [platforms {kept} of index {}, sparse: {} children left out]", img.digest, record.omitted.len())
        }
        _ => format!(" [all platforms of index {}]", img.digest),
    }
}

/// A tag that exists with another digest in a repository whose tags are immutable would fail mid-push:
/// refuse it before anything is pushed.
fn check_immutable_tags(
    presence: &Presence,
    session: &crate::import::ecr::session::EcrSession,
) -> Result<(), DeliveryError> {
    let conflicts: Vec<String> = presence
        .tags_elsewhere
        .iter()
        .filter(|(repo_tag, _)| {
            let (repo, tag) = repo_tag.rsplit_once(':').unwrap_or((repo_tag.as_str(), ""));
            session.mutability.get(repo).is_some_and(|m| m.is_immutable(tag))
        })
        .map(|(repo_tag, digest)| format!("{repo_tag} (now {digest})"))
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(DeliveryError::ImmutableTags(conflicts))
}

/// A chart is shown as what it is, not under its placeholder name.
fn describe_source(img: &ArchiveImage, source: &ImageRef) -> String {
    if img.helm_chart {
        format!(
            "chart {}",
            source.repository().trim_start_matches("charts/").to_string() + ":" + source.tag().unwrap_or_default()
        )
    } else {
        source.to_string()
    }
}

/// The values files that point each chart at the destination: `--values-out FILE` for a single chart, or
/// `DIR/CHART-airgap-values.yaml` for each chart when the bundle has several (or FILE is a directory).
fn write_values(
    printer: &Printer,
    contents: &BundleContents,
    dest: &Destination,
    out: &Path,
) -> Result<(), DeliveryError> {
    let charts = contents.metadata.as_ref().map(|m| m.all_charts()).unwrap_or_default();
    write_values_for(printer, &charts, dest, out)
}

/// The values files of `charts` for `dest` (import's, copy's, and serve's for its own address).
pub fn write_values_for(
    printer: &Printer,
    charts: &[&crate::oci::layout::ChartRecord],
    dest: &Destination,
    out: &Path,
) -> Result<(), DeliveryError> {
    if charts.is_empty() {
        return Err(DeliveryError::NoChart);
    }
    if charts.len() == 1 && !out.is_dir() {
        return write_values_file(printer, charts[0], dest, out);
    }
    std::fs::create_dir_all(out).map_err(|source| DeliveryError::Values { path: out.to_path_buf(), source })?;
    for record in charts {
        write_values_file(printer, record, dest, &out.join(values_file_name(&record.name)))?;
    }
    Ok(())
}

/// `CHART-airgap-values.yaml`: a chart's values file in a `--values-out` directory.
pub fn values_file_name(chart: &str) -> String {
    format!("{chart}-airgap-values.yaml")
}

/// One chart's values file, written atomically, and what the user must know about it.
fn write_values_file(
    printer: &Printer,
    record: &crate::oci::layout::ChartRecord,
    dest: &Destination,
    path: &Path,
) -> Result<(), DeliveryError> {
    let failed = |source| DeliveryError::Values { path: path.to_path_buf(), source };
    let plan = values_out::plan_of(record);
    let values = values_out::values_for(&plan, dest);
    let text = format!(
        "{}{}",
        values_out::header(record, &plan, dest),
        serde_yaml_ng::to_string(&values).map_err(|e| failed(std::io::Error::other(e)))?
    );
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(failed)?;
    tmp.persist(path).map_err(|e| failed(e.error))?;
    printer.info(format!("Wrote {} (use it with -f)", path.display()));
    if !plan.proven {
        printer.warn(format!(
            "{} is unproven: the chart was surveyed without helm; render the chart with it before installing",
            path.display()
        ));
    } else if dest.mapping != crate::import::push::Mapping::Path {
        printer.warn(format!(
            "{} was proven for the default name mapping, not for --flatten or --keep-host; render the chart with it before installing",
            path.display()
        ));
    }
    for key in values_out::unresolved(&plan, dest) {
        printer.warn(format!(
            "`{key}` cannot be written for this name mapping (it would have to drop part of its value); {} leaves it out",
            path.display()
        ));
    }
    let at = values_out::destination_text(dest);
    for u in &plan.unmovable {
        printer.warn(format!(
            "{} does not land at {at} with {}: {}; override it by hand",
            u.image,
            path.display(),
            u.reason.text()
        ));
    }
    let fixed = values_out::fixed_by_set(&plan, record);
    if !fixed.is_empty() {
        let flags = values_out::helm_flags(&fixed, dest);
        let keys = if fixed.len() == 1 { "a key".to_string() } else { format!("{} keys", fixed.len()) };
        printer.warn(format!(
            "helm's --set beats every values file, and {keys} of {} {} given with --set or --pass at export; at install, give those values in a values file before -f {}, or add these flags after it:\n{}",
            path.display(),
            if fixed.len() == 1 { "was" } else { "were" },
            path.display(),
            flags.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(())
}
