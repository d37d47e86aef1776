//! The flags (cli.rs, as clap parsed them) and a bundle spec, made into settings once: merged, parsed and
//! checked here, so a command starts from values it can use as they are and every usage error is found before
//! any work. ripgrep's low args → high args.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::failure::{Explain as _, Failure, Outcome};
use crate::chart::source::ChartRequest;
use crate::commands::cli::{
    ChartArgs, CheckArgs, CopyArgs, DestinationArgs, EcrArgs, ExportArgs, ImagesArgs, ImportArgs, PlatformArgs,
    SourceArgs,
};
use crate::commands::spec::BundleSpec;
use crate::export::Staging;
use crate::export::blob_store::prune;
use crate::import::ecr::EcrSettings;
use crate::oci::destination::{Destination, Mapping};
use crate::oci::platform::PlatformChoice;
use crate::oci::reference::ImageRef;
use crate::support::env_vars;

/// A chart to survey and how to render it.
#[derive(Debug, Clone)]
pub struct ChartSettings {
    pub request: ChartRequest,
    /// `None`: scan values statically (--no-helm).
    pub helm: Option<HelmChoice>,
    pub helm_timeout: Duration,
    pub values_files: Vec<PathBuf>,
    pub set: Vec<String>,
    pub set_string: Vec<String>,
    pub kube_version: Option<String>,
    /// Each pass's own --set expressions; one empty pass when none were given.
    pub passes: Vec<Vec<String>>,
}

/// Which helm renders.
#[derive(Debug, Clone)]
pub enum HelmChoice {
    /// The one on PATH, if there is one.
    Search,
    Path(PathBuf),
}

impl ChartSettings {
    fn from_args(c: ChartArgs) -> Option<ChartSettings> {
        let chart = c.chart?;
        let passes = if c.passes.is_empty() {
            vec![vec![]]
        } else {
            c.passes.into_iter().map(|p| if p.trim().is_empty() { vec![] } else { vec![p] }).collect()
        };
        Some(ChartSettings {
            request: ChartRequest { chart, repo: c.repo, version: c.chart_version },
            helm: match (c.no_helm, c.helm) {
                (true, _) => None,
                (false, Some(p)) => Some(HelmChoice::Path(p)),
                (false, None) => Some(HelmChoice::Search),
            },
            helm_timeout: Duration::from_secs(c.helm_timeout),
            values_files: c.values,
            set: c.set,
            set_string: c.set_string,
            kube_version: c.kube_version,
            passes,
        })
    }
}

pub struct ImagesSettings {
    /// The chart, or a suite's charts (`--spec`), each listed on its own.
    pub charts: Vec<ChartSettings>,
    pub json: bool,
    /// Under each image, where it was found.
    pub why: bool,
    /// Resolve each image and show what --platform keeps (with --json only).
    pub platforms: Option<PlatformChoice>,
}

impl ImagesSettings {
    pub fn new(args: ImagesArgs) -> Outcome<ImagesSettings> {
        let charts = match &args.spec {
            Some(path) => spec_charts(BundleSpec::load(path)?, args.chart)?,
            None => ChartSettings::from_args(args.chart).into_iter().collect(),
        };
        if charts.is_empty() {
            return Err(Failure::user(
                "no chart given",
                "name one with -c CHART (a directory, a .tgz, a name with --repo URL, or oci://…), or a spec with --spec",
            ));
        }
        let platforms = platform_choice(args.platform, Vec::new())?;
        if platforms.is_some() && !args.json {
            return Err(Failure::user(
                "--platform needs --json in `bundle images`",
                "add --json to see, per image, which platforms would travel",
            ));
        }
        Ok(ImagesSettings { charts, json: args.json, why: args.why, platforms })
    }
}

/// What `bundle check` reads the images from.
pub enum CheckSource {
    /// Render this chart, every pass (helm required).
    Chart(Box<ChartSettings>),
    /// Rendered manifests in a file, or on stdin (`None`).
    Manifests(Option<PathBuf>),
}

pub struct CheckSettings {
    pub destination: Destination,
    pub source: CheckSource,
    pub json: bool,
    pub why: bool,
}

impl CheckSettings {
    pub fn new(args: CheckArgs) -> Outcome<CheckSettings> {
        let destination = Destination::parse(&args.destination).explain("invalid -d")?;
        let source = match (args.manifests, ChartSettings::from_args(args.chart)) {
            (Some(m), _) => CheckSource::Manifests((m != "-").then(|| PathBuf::from(m))),
            (None, Some(c)) if c.helm.is_none() => {
                return Err(Failure::user(
                    "bundle check renders the chart with helm; --no-helm leaves nothing to check",
                    "drop --no-helm (helm on PATH, or --helm PATH), or give rendered manifests with --manifests FILE",
                ));
            }
            (None, Some(c)) => CheckSource::Chart(Box::new(c)),
            (None, None) => {
                return Err(Failure::user(
                    "nothing to check: no chart and no manifests",
                    "give the chart as it will be installed (-c CHART with its -f, --set and --pass flags), or rendered manifests with --manifests FILE (- for stdin)",
                ));
            }
        };
        Ok(CheckSettings { destination, source, json: args.json, why: args.why })
    }
}

/// What to carry: the charts, the listed images, the files, the exclusions and the platforms (export and copy).
pub struct SourceSettings {
    /// The chart (-c, or a spec's `chart`), or a suite's charts (a spec's `charts`), in order.
    pub charts: Vec<ChartSettings>,
    /// A spec's `files:`, checked.
    pub files: Vec<crate::files::FileSource>,
    /// The listed images (--image, --images-file, the spec's), parsed, sorted and de-duplicated.
    pub images: Vec<ImageRef>,
    /// Images to leave out, as the chart writes them (a spec's `exclude:`).
    pub exclude: Vec<String>,
    /// `None`: every platform.
    pub platforms: Option<PlatformChoice>,
    /// Signatures, attestations and SBOMs travel with the images (not with --no-referrers).
    pub referrers: bool,
    /// `--verify-signatures`: every image must be signed by one of these (PEM) keys.
    pub signature_keys: Vec<crate::trust::TrustedKey>,
}

impl SourceSettings {
    /// The spec's settings under the command line's: flags add to lists and win over single values. Returns the
    /// spec's output name too (export uses it).
    fn new(mut args: SourceArgs, platform: PlatformArgs) -> Outcome<(SourceSettings, Option<PathBuf>)> {
        let mut exclude = Vec::new();
        let mut spec_output = None;
        let mut spec_platforms = Vec::new();
        let mut files = Vec::new();
        let charts = match args.spec.clone() {
            Some(path) => {
                let spec = BundleSpec::load(&path)?;
                exclude = spec.exclude.clone();
                files = spec.file_sources.clone();
                args.images = spec.images.iter().cloned().chain(args.images.drain(..)).collect();
                spec_output = spec.output.clone();
                spec_platforms = spec.platforms.clone();
                spec_charts(spec, args.chart)?
            }
            None => ChartSettings::from_args(args.chart).into_iter().collect(),
        };
        let images = collect_references(&args.images, &args.images_files)?;
        if images.is_empty() && charts.is_empty() && files.is_empty() {
            return Err(Failure::user(
                "no images given",
                "name images with --image REF (repeatable) or --images-file FILE, or a chart with -c CHART",
            ));
        }
        let platforms = platform_choice(platform, spec_platforms)?;
        let signature_keys = trusted_keys(&args.verify_signatures)?;
        if let Some(k) = signature_keys.iter().find(|k| !k.is_pem()) {
            return Err(crate::trust::KeyError::NotForImages { path: k.file.clone() }.into());
        }
        let referrers = !args.no_referrers;
        Ok((SourceSettings { charts, files, images, exclude, platforms, referrers, signature_keys }, spec_output))
    }
}

/// The charts of a spec and the command line: a single-chart spec's chart under the flags (they add to lists
/// and win over single values), or a suite's charts.
fn spec_charts(spec: BundleSpec, mut c: ChartArgs) -> Outcome<Vec<ChartSettings>> {
    if !spec.charts.is_empty() {
        return suite_charts(&spec, &c);
    }
    c.chart = c.chart.take().or(spec.chart);
    c.repo = c.repo.take().or(spec.repo);
    c.chart_version = c.chart_version.take().or(spec.version);
    c.kube_version = c.kube_version.take().or(spec.kube_version);
    c.set = spec.set.into_iter().chain(c.set.drain(..)).collect();
    c.set_string = spec.set_string.into_iter().chain(c.set_string.drain(..)).collect();
    c.values = spec.values.into_iter().chain(c.values.drain(..)).collect();
    c.passes = spec.passes.into_iter().chain(c.passes.drain(..)).collect();
    Ok(ChartSettings::from_args(c).into_iter().collect())
}

/// A suite's charts: each `charts` entry, with the command line's helm choice. The command line's own chart
/// flags would be ambiguous (which chart?), so they are refused.
fn suite_charts(spec: &BundleSpec, flags: &ChartArgs) -> Outcome<Vec<ChartSettings>> {
    let given = [
        ("-c", flags.chart.is_some()),
        ("--repo", flags.repo.is_some()),
        ("--version", flags.chart_version.is_some()),
        ("--set", !flags.set.is_empty()),
        ("--set-string", !flags.set_string.is_empty()),
        ("-f", !flags.values.is_empty()),
        ("--pass", !flags.passes.is_empty()),
        ("--kube-version", flags.kube_version.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
        return Err(Failure::user(
            format!("{flag} with a spec of several charts: it would not say which chart it is for"),
            "put it in that chart's `charts` entry of the spec",
        ));
    }
    Ok(spec
        .charts
        .iter()
        .filter_map(|c| {
            ChartSettings::from_args(ChartArgs {
                chart: Some(c.chart.clone()),
                repo: c.repo.clone(),
                chart_version: c.version.clone(),
                set: c.set.clone(),
                set_string: c.set_string.clone(),
                values: c.values.clone(),
                passes: c.passes.clone(),
                kube_version: c.kube_version.clone(),
                no_helm: flags.no_helm,
                helm: flags.helm.clone(),
                helm_timeout: flags.helm_timeout,
            })
        })
        .collect())
}

/// `--platform` (and a spec's `platforms:`) as one choice; `None` when no platform was named.
fn platform_choice(args: PlatformArgs, from_spec: Vec<String>) -> Outcome<Option<PlatformChoice>> {
    let mut platforms = args.platforms;
    for p in from_spec {
        platforms.push(p.parse().map_err(|e| {
            Failure::user(format!("the spec's `platforms:` entry {e}"), "write platforms as os/arch[/variant]")
        })?);
    }
    platforms.sort();
    platforms.dedup();
    Ok((!platforms.is_empty()).then_some(PlatformChoice { platforms, mode: args.platform_mode }))
}

pub struct ExportSettings {
    pub sources: SourceSettings,
    /// `None` only for a dry run without -o.
    pub output: Option<PathBuf>,
    pub dry_run: bool,
    pub force: bool,
    pub staging: Staging,
    /// bundle.json's `created`, from SOURCE_DATE_EPOCH.
    pub created: Option<String>,
    /// `--since OLD`: the archive this export is a delta of.
    pub since: Option<PathBuf>,
    /// `--volume-size`: write volumes of at most this many bytes.
    pub volume_size: Option<u64>,
    /// `--parity`: parity volumes beside them.
    pub parity: u32,
    /// `--sign-key`: read (and opened) before anything is downloaded.
    pub sign_key: Option<crate::trust::SigningKey>,
}

impl ExportSettings {
    pub fn new(args: ExportArgs, tmp_dir: &Path) -> Outcome<ExportSettings> {
        let output = args.output.clone();
        let (sources, spec_output) = SourceSettings::new(args.sources, args.platform)?;
        let output = match (output.or(spec_output), args.dry_run) {
            // Volumes get their own names; an archive of OUT's name is no obstacle.
            (Some(o), _) => Some(check_output(&o, args.force || args.volume_size.is_some())?),
            (None, true) => None,
            (None, false) => {
                return Err(Failure::user(
                    "no output file given",
                    "name it with -o OUT.tar.zst (or `output:` in a --spec file)",
                ));
            }
        };
        // Blobs land in the cache (kept, so a re-run downloads only what is missing) or, with --no-cache, in a
        // staging directory that is removed however the export ends.
        let staging = if args.no_cache {
            Staging::Temporary { tmp_dir: tmp_dir.to_path_buf() }
        } else {
            let dir = args.cache_dir.clone().or_else(default_cache_dir).ok_or_else(|| {
                Failure::user(
                    "no cache directory: neither XDG_CACHE_HOME nor HOME is set",
                    "pass --cache-dir DIR, or --no-cache",
                )
            })?;
            Staging::Cache { dir, max_bytes: args.cache_max_size.map_or(Some(prune::DEFAULT_MAX_BYTES), |l| l.0) }
        };
        Ok(ExportSettings {
            sources,
            output,
            dry_run: args.dry_run,
            force: args.force,
            staging,
            created: created_from_env()?,
            since: args.since,
            volume_size: args.volume_size.map(|v| v.0),
            parity: args.parity.unwrap_or(0),
            // A dry run signs nothing, but a key that cannot be used is worth knowing before the real run.
            sign_key: args.sign_key.as_deref().map(crate::trust::SigningKey::load).transpose()?,
        })
    }
}

/// Where images go (import and copy): the library's `Target`.
pub use crate::import::delivery::Target as DestinationSettings;

fn destination_settings(args: DestinationArgs) -> Outcome<DestinationSettings> {
    {
        let mapping = mapping_of(args.flatten, args.keep_host);
        let destination = Destination::parse(&args.destination)
            .map_err(|e| {
                Failure::user(
                    format!("invalid destination: {e}"),
                    "write it as host[:port] or host[:port]/prefix, e.g. -d registry.internal:5000/mirror",
                )
            })?
            .with_mapping(mapping);
        Ok(DestinationSettings {
            destination,
            destination_text: args.destination,
            values_out: args.values_out,
            mirrors_out: args.mirrors_out,
            ecr: ecr_settings(&args.ecr)?,
        })
    }
}

/// `--flatten` / `--keep-host` (clap keeps them apart) as a mapping.
fn mapping_of(flatten: bool, keep_host: bool) -> Mapping {
    if flatten {
        Mapping::Flatten
    } else if keep_host {
        Mapping::KeepHost
    } else {
        Mapping::Path
    }
}

/// One `bundle serve`: the library's `ServeJob`.
pub use crate::serve::ServeJob as ServeSettings;

pub fn serve_settings(args: crate::commands::cli::ServeArgs) -> Outcome<ServeSettings> {
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(Failure::user(
                "--tls-cert and --tls-key go together",
                "give the certificate chain and its key, both PEM",
            ));
        }
    };
    if !args.listen.ip().is_loopback() && tls.is_none() && !args.insecure {
        return Err(Failure::user(
            format!("--listen {}: beyond loopback this server would answer over plain HTTP", args.listen),
            "give --tls-cert and --tls-key (and --htpasswd for who may pull), listen on 127.0.0.1 (the default), or add --insecure",
        ));
    }
    let name = args.name.clone().unwrap_or_else(|| args.listen.to_string());
    let text = match &args.prefix {
        Some(p) => format!("{name}/{}", p.trim_matches('/')),
        None => name,
    };
    let mapping = mapping_of(args.flatten, args.keep_host);
    let destination = Destination::parse(&text)
        .map_err(|e| {
            Failure::user(
                format!("invalid --name or --prefix: {e}"),
                "write --name as host[:port] and --prefix as a path, e.g. --prefix mirror",
            )
        })?
        .with_mapping(mapping);
    Ok(ServeSettings {
        inputs: crate::volumes::expand_inputs(&args.archives).explain("cannot find the archive to serve")?,
        listen: args.listen,
        destination,
        verify_full: args.verify_full,
        values_out: args.values_out,
        mirrors_out: args.mirrors_out,
        tls,
        htpasswd: args.htpasswd,
    })
}

/// Every key of every file (`--verify-signatures`, `verify --key`, `import --require-signature`).
pub fn trusted_keys(paths: &[PathBuf]) -> Outcome<Vec<crate::trust::TrustedKey>> {
    let mut keys = Vec::new();
    for p in paths {
        keys.extend(crate::trust::keys::load_public(p)?);
    }
    Ok(keys)
}

/// One import: the library's `ImportJob`.
pub use crate::import::pipeline::ImportJob as ImportSettings;

pub fn import_settings(args: ImportArgs, tmp_dir: &Path) -> Outcome<ImportSettings> {
    Ok(ImportSettings {
        target: destination_settings(args.target)?,
        archives: crate::volumes::expand_inputs(&args.archives).explain("cannot find the archive to import")?,
        files_out: args.files_out,
        require_signature: trusted_keys(&args.require_signature)?,
        proven: Vec::new(),
        dry_run: args.dry_run,
        tmp_dir: tmp_dir.to_path_buf(),
    })
}

pub struct CopySettings {
    pub sources: SourceSettings,
    pub target: DestinationSettings,
    pub dry_run: bool,
}

impl CopySettings {
    pub fn new(args: CopyArgs) -> Outcome<CopySettings> {
        let (sources, _) = SourceSettings::new(args.sources, args.platform)?;
        Ok(CopySettings { sources, target: destination_settings(args.target)?, dry_run: args.dry_run })
    }
}

fn ecr_settings(a: &EcrArgs) -> Outcome<EcrSettings> {
    let mut tags = std::collections::BTreeMap::new();
    for t in &a.ecr_tags {
        let (k, v) = t.split_once('=').ok_or_else(|| {
            Failure::user(format!("--ecr-tag `{t}` is not KEY=VALUE"), "write it as --ecr-tag team=platform")
        })?;
        tags.insert(k.to_string(), v.to_string());
    }
    Ok(EcrSettings {
        enabled: a.ecr,
        region: a.ecr_region.clone(),
        registry_id: a.ecr_registry_id.clone(),
        scan_on_push: a.ecr_scan_on_push,
        tag_mutability: a.ecr_tag_mutability,
        tag_mutability_exclusions: a.ecr_tag_mutability_exclusion.clone(),
        encryption: a.ecr_encryption,
        kms_key: a.ecr_kms_key.clone(),
        tags,
        lifecycle_policy: a.ecr_lifecycle_policy.clone(),
        repository_policy: a.ecr_repository_policy.clone(),
        update_existing: a.ecr_update_existing,
    })
}

/// `$XDG_CACHE_HOME/bundle`, else `~/.cache/bundle`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os(env_vars::XDG_CACHE_HOME)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os(env_vars::HOME).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("bundle"))
}

/// `--image` values and the lines of every `--images-file`, normalised, de-duplicated and sorted (so the
/// archive does not depend on the order they were listed in).
pub fn collect_references(images: &[String], files: &[PathBuf]) -> Outcome<Vec<ImageRef>> {
    let mut refs = Vec::new();
    for (i, s) in images.iter().enumerate() {
        let r = ImageRef::parse(s).explain_with(|| format!("--image #{}", i + 1))?;
        refs.push(r);
    }
    for file in files {
        let text =
            std::fs::read_to_string(file).explain_with(|| format!("cannot read the images file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let r = ImageRef::parse(line).map_err(|e| {
                Failure::user(
                    format!("{}:{}: {e}", file.display(), n + 1),
                    "fix or remove that line; references look like `registry/path/name:tag` or `name@sha256:<digest>`",
                )
            })?;
            refs.push(r);
        }
    }
    refs.sort();
    refs.dedup();
    Ok(refs)
}

fn check_output(output: &Path, force: bool) -> Outcome<PathBuf> {
    if output.is_dir() {
        return Err(Failure::user(
            format!("{} is a directory", output.display()),
            "give the archive's file name, e.g. -o images.tar.zst",
        ));
    }
    if output.exists() && !force {
        return Err(Failure::user(
            format!("{} already exists", output.display()),
            "choose another name with -o, or pass --force to replace it",
        ));
    }
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Failure::user(
            format!("the directory {} does not exist", dir.display()),
            "create it first, or choose another -o path",
        ));
    }
    Ok(output.to_path_buf())
}

/// `created` for bundle.json: only from SOURCE_DATE_EPOCH, so archives carry no timestamp otherwise.
fn created_from_env() -> Outcome<Option<String>> {
    let Ok(v) = std::env::var(env_vars::SOURCE_DATE_EPOCH) else { return Ok(None) };
    let secs: u64 = v.trim().parse().map_err(|_| {
        Failure::user(
            format!("{}=`{v}` is not a number of seconds", env_vars::SOURCE_DATE_EPOCH),
            "set it to a Unix time, e.g. `date +%s`, or unset it",
        )
    })?;
    Ok(Some(httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))))
}
