//! One file per subcommand. This is the edge where library errors get context (`Failure`, carrying the hint
//! of the error at its root), where the global flags become the settings every command shares, and where the
//! exit code is decided. The command line itself (`cli`, clap's derive) and bundle specs (`spec`, the YAML a
//! spec file holds) live here too: both are what a user types, read once into settings.

pub mod check;
pub mod cli;
pub mod copy;
pub mod discovery;
pub mod documentation;
pub mod export;
pub mod failure;
pub mod images;
pub mod import;
pub mod inspect;
pub mod results;
pub mod serve;
pub mod settings;
pub mod sign;
pub mod spec;
pub mod split;
pub mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub use failure::{Explain, Failure, Outcome};

use crate::commands::cli::{Cli, Command, GlobalArgs};
use crate::registry::retry::RetryPolicy;
use crate::registry::{ClientOptions, Registries, RegistryConfig};
use crate::support::printer::{Printer, Verbosity};

/// Run one command line to its exit code: 0 done, 1 failed, 130 interrupted (2, bad usage, is clap's).
pub fn run(cli: Cli) -> ExitCode {
    let json = json_document(&cli.command);
    let printer = Printer::new(verbosity(&cli.global));
    let printer = if json.is_some() { printer.with_json_document() } else { printer };
    let results = std::sync::Arc::new(results::Results::default());
    let command = match cli.command {
        Command::Completions(args) => return documentation::completions(&printer, args.shell),
        Command::Manpage => return documentation::manpage(&printer),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"), &[], None);
            return ExitCode::from(1);
        }
    };
    let on_interrupt = interrupted_message(&command);
    let serving = matches!(command, Command::Serve(_));
    let result = runtime.block_on(async {
        let mut ctx = Context::new(&cli.global, printer.clone())?;
        if json.is_some() {
            ctx.results = Some(results.clone());
        }
        let work = async {
            match command {
                Command::Export(args) => export::run(&ctx, settings::ExportSettings::new(args, &ctx.tmp_dir)?).await,
                Command::Verify(args) => verify::run(&ctx, &args.archive, &settings::trusted_keys(&args.keys)?).await,
                Command::Sign(args) => sign::run(&ctx, args).await,
                Command::Import(args) => import::run(&ctx, settings::import_settings(args, &ctx.tmp_dir)?).await,
                Command::Copy(args) => copy::run(&ctx, settings::CopySettings::new(args)?).await,
                Command::Inspect(args) => {
                    let format = if args.json { crate::commands::cli::InspectFormat::Json } else { args.format };
                    inspect::run(&ctx, &args.archive, format).await
                }
                Command::Split(args) => split::run(&ctx, args).await,
                Command::Images(args) => images::run(&ctx, settings::ImagesSettings::new(args)?).await,
                Command::Check(args) => check::run(&ctx, settings::CheckSettings::new(args)?).await,
                Command::Serve(args) => serve::run(&ctx, settings::serve_settings(args)?).await,
                Command::Completions(_) | Command::Manpage => unreachable!("handled without a runtime"),
            }
        };
        // A server stops on SIGINT or SIGTERM by itself, letting responses in flight end: a success.
        if serving {
            return work.await.map(|()| ExitCode::SUCCESS);
        }
        // On Ctrl-C or SIGTERM the command's future is dropped, which removes its temporary files.
        tokio::select! {
            r = work => r.map(|()| ExitCode::SUCCESS),
            () = interrupted() => {
                let message = format!("interrupted; {on_interrupt}");
                printer.error(&message, &[], None);
                if let Some(command) = json {
                    let error = results::RunError { message: &message, causes: &[], hint: None };
                    printer.document(&results.document(command, Some(error)));
                }
                Ok(ExitCode::from(130))
            }
        }
    });
    // Blocking tasks (archive writing) may still hold files; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(code) => {
            if let Some(command) = json
                && code == ExitCode::SUCCESS
            {
                printer.document(&results.document(command, None));
            }
            code
        }
        Err(failure) => {
            let (message, causes, hint) = (failure.message_text(), failure.causes(), failure.hint());
            printer.error(&message, &causes, hint);
            if let Some(command) = json {
                let error = results::RunError { message: &message, causes: &causes, hint };
                printer.document(&results.document(command, Some(error)));
            }
            ExitCode::from(1)
        }
    }
}

/// The command's name when it was asked for a JSON document of its result (`--json`).
fn json_document(command: &Command) -> Option<&'static str> {
    match command {
        Command::Export(a) if a.json => Some("export"),
        Command::Verify(a) if a.json => Some("verify"),
        Command::Import(a) if a.json => Some("import"),
        Command::Copy(a) if a.json => Some("copy"),
        _ => None,
    }
}

/// What an interruption leaves behind, in each command's terms.
fn interrupted_message(command: &Command) -> &'static str {
    match command {
        Command::Export(_) => {
            "nothing was written under the output name; blobs downloaded into the cache are kept, so a re-run downloads only the rest"
        }
        Command::Import(_) => "what was pushed is kept; run the same import again to finish it",
        Command::Copy(_) => "what was pushed is kept; run the same copy again to finish it",
        Command::Verify(_) => "the archive was not fully checked",
        Command::Split(_) => "no volume was written under its name",
        Command::Sign(_) => "archives already named were signed; a signature is written whole or not at all",
        Command::Images(_) => "the image list is incomplete",
        Command::Check(_) => "the check did not finish; nothing was changed",
        Command::Inspect(_) | Command::Serve(_) | Command::Completions(_) | Command::Manpage => "nothing was changed",
    }
}

/// Ctrl-C or SIGTERM (what `timeout` and service managers send).
async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn verbosity(global: &GlobalArgs) -> Verbosity {
    if global.quiet {
        Verbosity::Quiet
    } else if global.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    }
}

/// Settings every command shares, validated once.
pub struct Context {
    pub printer: Printer,
    pub registries: Registries,
    pub concurrency: usize,
    pub tmp_dir: PathBuf,
    /// `--json`: what the command notes for the run's document.
    pub results: Option<std::sync::Arc<results::Results>>,
}

impl Context {
    pub fn new(global: &GlobalArgs, printer: Printer) -> Outcome<Context> {
        let config = match &global.registry_config {
            Some(path) => RegistryConfig::load(path)?,
            None => RegistryConfig::default(),
        };
        // `[registry.ecr]` is used only by an ECR import, but a typo in it should not wait until then.
        for (name, table, base) in config.ecr_tables() {
            if let Err(e) = crate::import::ecr::EcrSettings::from_config(table, base) {
                return Err(Failure::user(
                    format!(
                        "the registry config {}: the entry for {name}: {e}",
                        config.path().unwrap_or(Path::new("?")).display()
                    ),
                    "fix the [registry.ecr] table; docs/ecr.md lists its keys",
                ));
            }
        }
        let options = ClientOptions {
            retry: RetryPolicy { max_retries: global.retries, ..RetryPolicy::default() },
            upload_chunk: upload_chunk()?,
            download_piece: download_piece()?,
            connect_timeout: Duration::from_secs(global.connect_timeout.max(1)),
            read_timeout: Duration::from_secs(global.read_timeout.max(1)),
        };
        let tmp_dir = global.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(Context {
            printer,
            registries: Registries::new(config, options),
            concurrency: global.concurrency as usize,
            tmp_dir,
            results: None,
        })
    }
}

impl Context {
    /// What the library's import and copy need of the run.
    pub fn at(&self) -> crate::import::delivery::Surroundings<'_> {
        crate::import::delivery::Surroundings {
            registries: &self.registries,
            printer: &self.printer,
            concurrency: self.concurrency,
            observer: &self.results,
        }
    }
}

pub use crate::support::printer::human;

/// Short form of a media type for tables.
pub fn short_media_type(media_type: &str) -> &str {
    use crate::oci::manifest::*;
    match media_type {
        OCI_INDEX => "oci-index",
        OCI_MANIFEST => "oci-manifest",
        DOCKER_LIST => "docker-list",
        DOCKER_MANIFEST => "docker-manifest",
        OCI_ARTIFACT => "oci-artifact",
        // A docker save archive's image: the digest shown is the image ID.
        crate::archive::docker_save::DOCKER_CONFIG => "docker-image-id",
        other => other,
    }
}

/// What a delta leaves to its base, as verify and inspect say it.
pub fn describe_delta(delta: &crate::oci::layout::DeltaRecord) -> String {
    format!(
        "a delta of {} (sha256 {}, made {}): {} blobs ({}) its images need are left to it",
        delta.base.file,
        delta.base.sha256,
        delta.base.created,
        delta.absent.len(),
        human(delta.absent.iter().map(|b| b.size).sum())
    )
}

/// `volume 2 of 5 of set sha256:…`.
pub fn describe_volume(volume: &crate::oci::layout::VolumeRecord) -> String {
    format!("volume {} of {} of set {}", volume.number, volume.count, volume.set)
}

/// Print image rows as an aligned table on stdout (widths follow the content).
pub fn print_image_table(printer: &Printer, rows: &[[String; 5]]) {
    let header = ["IMAGE", "DIGEST", "TYPE", "PLATFORMS", "SIZE"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows) {
        printer.result(format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        ));
    }
}

/// One table row for an image; an artifact shows its kind and the manifest it is attached to instead of its
/// media type and platforms.
pub fn image_row(
    source: &str,
    digest: &crate::oci::digest::Digest,
    media_type: &str,
    platforms: &[String],
    size: u64,
    artifact: Option<&crate::oci::layout::ArtifactRecord>,
) -> [String; 5] {
    let (kind, platforms) = match artifact {
        Some(a) => (format!("{:?}", a.kind).to_lowercase(), format!("-> sha256:{}", &a.subject.hex()[..12])),
        None => (
            short_media_type(media_type).to_string(),
            if platforms.is_empty() { "-".to_string() } else { platforms.join(",") },
        ),
    };
    [source.to_string(), format!("sha256:{}", &digest.hex()[..12]), kind, platforms, human(size)]
}

/// `BUNDLE_DOWNLOAD_PIECE_SIZE`: bytes per `Range` request of a big blob's download.
fn download_piece() -> Result<u64, Failure> {
    use crate::support::env_vars::BUNDLE_DOWNLOAD_PIECE_SIZE;
    size_from_env(
        BUNDLE_DOWNLOAD_PIECE_SIZE,
        ClientOptions::default().download_piece,
        "write it with a unit: 8MiB, 64MiB; a size larger than any blob turns pieces off; or unset it (8MiB)",
    )
}

/// `BUNDLE_UPLOAD_CHUNK_SIZE`: bytes per chunk of a chunked upload (and the size above which uploads are chunked).
fn upload_chunk() -> Result<u64, Failure> {
    use crate::support::env_vars::BUNDLE_UPLOAD_CHUNK_SIZE;
    size_from_env(
        BUNDLE_UPLOAD_CHUNK_SIZE,
        ClientOptions::default().upload_chunk,
        "write it with a unit: 64MiB, 1GiB; or unset it (64MiB)",
    )
}

/// A size of at least 1 MiB from the environment variable `name`, or `default` when it is unset.
fn size_from_env(name: &str, default: u64, hint: &str) -> Result<u64, Failure> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .parse::<crate::volumes::VolumeSize>()
            .map(|s| s.0)
            .ok()
            .filter(|n| *n >= 1 << 20)
            .ok_or_else(|| Failure::user(format!("{name}=`{v}` is not a size of at least 1MiB"), hint)),
    }
}
