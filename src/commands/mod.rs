//! One file per subcommand. This is the edge where library errors get context and hints (anyhow), and
//! where the global flags become the settings every command shares.

pub mod discovery;
pub mod ecr_prepare;
pub mod export;
pub mod images;
pub mod import;
pub mod inspect;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::GlobalArgs;
use crate::printer::{Printer, Verbosity};
use crate::registry::retry::RetryPolicy;
use crate::registry::{ClientOptions, Registries, RegistryConfig};

/// Settings every command shares, validated once.
pub struct Context {
    pub printer: Printer,
    pub registries: Registries,
    pub concurrency: usize,
    pub tmp_dir: PathBuf,
}

impl Context {
    pub fn new(global: &GlobalArgs) -> anyhow::Result<Context> {
        let verbosity = if global.quiet {
            Verbosity::Quiet
        } else if global.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let config = match &global.registry_config {
            Some(path) => RegistryConfig::load(path)?,
            None => RegistryConfig::default(),
        };
        // `[registry.ecr]` is used only by an ECR import, but a typo in it should not wait until then.
        for (name, table, base) in config.ecr_tables() {
            if let Err(e) = crate::ecr::EcrSettings::from_config(table, base) {
                return Err(user_error(
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
            connect_timeout: Duration::from_secs(global.connect_timeout.max(1)),
            read_timeout: Duration::from_secs(global.read_timeout.max(1)),
        };
        let tmp_dir = global.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(Context {
            printer: Printer::new(verbosity),
            registries: Registries::new(config, options),
            concurrency: global.concurrency as usize,
            tmp_dir,
        })
    }
}

/// An error whose message is complete as it stands, with what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
}

pub fn user_error(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError { message: message.into(), hint: Some(hint.into()) })
}

/// The first hint anywhere in the error's chain.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>()
            && u.hint.is_some()
        {
            return u.hint.clone();
        }
        if let Some(r) = cause.downcast_ref::<crate::registry::RegistryError>()
            && let Some(h) = r.hint()
        {
            return Some(h);
        }
        // Transparent wrappers hide the registry error from the chain; look inside them.
        let wrapped = match cause.downcast_ref::<crate::push::PushError>() {
            Some(crate::push::PushError::Registry(e)) => Some(e),
            Some(crate::push::PushError::Pool(crate::registry::PoolError::Registry(e))) => Some(e),
            _ => match cause.downcast_ref::<crate::registry::PoolError>() {
                Some(crate::registry::PoolError::Registry(e)) => Some(e),
                _ => None,
            },
        };
        if let Some(h) = wrapped.and_then(|e| e.hint()) {
            return Some(h);
        }
        if let Some(r) = cause.downcast_ref::<crate::resolve::ResolveError>()
            && let Some(h) = r.registry_error().and_then(|e| e.hint())
        {
            return Some(h);
        }
        if let Some(h) = cause.downcast_ref::<crate::ecr::EcrError>().and_then(|c| c.hint()) {
            return Some(h);
        }
        if let Some(h) = cause.downcast_ref::<crate::chart::ChartError>().and_then(|c| c.hint()) {
            return Some(h);
        }
        if cause.downcast_ref::<crate::registry::config::ConfigError>().is_some() {
            return Some("see docs/usage.md, \"Registry config\", for the keys each [[registry]] entry accepts".into());
        }
    }
    None
}

/// Human-readable size.
pub fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// Short form of a media type for tables.
pub fn short_media_type(media_type: &str) -> &str {
    use crate::manifest::*;
    match media_type {
        OCI_INDEX => "oci-index",
        OCI_MANIFEST => "oci-manifest",
        DOCKER_LIST => "docker-list",
        DOCKER_MANIFEST => "docker-manifest",
        OCI_ARTIFACT => "oci-artifact",
        other => other,
    }
}

/// Print image rows as an aligned table on stdout (widths follow the content).
pub fn print_image_table(rows: &[[String; 5]]) {
    let header = ["IMAGE", "DIGEST", "TYPE", "PLATFORMS", "SIZE"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows) {
        println!(
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
        );
    }
}

/// One table row for an image.
pub fn image_row(
    source: &str,
    digest: &crate::digest::Digest,
    media_type: &str,
    platforms: &[String],
    size: u64,
) -> [String; 5] {
    [
        source.to_string(),
        format!("sha256:{}", &digest.hex()[..12]),
        short_media_type(media_type).to_string(),
        if platforms.is_empty() { "-".to_string() } else { platforms.join(",") },
        human(size),
    ]
}
