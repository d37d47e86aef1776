//! The ECR part of `bundle import`: settings, repository names, repositories, and the data-plane token.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::failure::Explain as _;
use futures_util::{StreamExt, TryStreamExt, stream};

use super::{Context, Failure, Outcome};
use crate::import::destination::Destination;
use crate::import::ecr::{Ecr, EcrRegistry, EcrSettings, detect, validate_repository_name};
use crate::import::push::PushPlan;
use crate::registry::Role;
use crate::registry::credentials::{CredentialSource, Credentials};

/// What the import needs to know about ECR once repositories are in place.
pub struct EcrSession {
    /// Tag mutability per destination repository (for repositories that existed or were created).
    pub mutability: BTreeMap<String, crate::import::ecr::TagMutability>,
}

struct TokenSource(Arc<Ecr>);

impl CredentialSource for TokenSource {
    fn fetch(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Credentials, String>> + Send + '_>> {
        Box::pin(async move { self.0.token().await.map_err(|e| e.to_string()) })
    }
}

/// For a destination ECR (by its host name, or the registry config's `ecr` table) serves: use its data-plane
/// token, renewed as it expires. Returns whether it is ECR. What `bundle check` needs of ECR: no repositories.
pub async fn login(ctx: &Context, registry: &str) -> Outcome<bool> {
    let endpoint = ctx.registries.config().endpoint(registry);
    let settings = match &endpoint.ecr {
        Some((table, base)) => EcrSettings::from_config(table, base)?,
        None => EcrSettings::default(),
    };
    let Some(detected) = detect(registry) else { return Ok(false) };
    let at = EcrRegistry {
        registry_id: settings.registry_id.clone().unwrap_or(detected.registry_id),
        region: settings.region.clone().unwrap_or(detected.region),
    };
    let ecr = Arc::new(Ecr::connect(&at).await?);
    let token = ecr.token().await.explain("cannot get an ECR authorization token")?;
    ctx.registries.set_credentials(registry, Role::Destination, token, Some(Arc::new(TokenSource(ecr))));
    Ok(true)
}

/// Set up ECR if the destination is ECR; `None` otherwise.
pub async fn prepare(
    ctx: &Context,
    flags: &EcrSettings,
    dest: &Destination,
    plan: &PushPlan,
    dry_run: bool,
) -> Outcome<Option<EcrSession>> {
    let endpoint = ctx.registries.config().endpoint(&dest.registry);
    let from_config = match &endpoint.ecr {
        Some((table, base)) => EcrSettings::from_config(table, base)?,
        None => EcrSettings::default(),
    };
    let settings = from_config.overlay(flags.clone());
    let detected = detect(&dest.registry);
    let registry = match (detected, settings.enabled) {
        (None, false) => return Ok(None),
        (Some(d), _) => EcrRegistry {
            registry_id: settings.registry_id.clone().unwrap_or(d.registry_id),
            region: settings.region.clone().unwrap_or(d.region),
        },
        (None, true) => {
            let registry_id = settings.registry_id.clone().ok_or_else(|| {
                Failure::user(
                    format!("{} is treated as ECR (--ecr) but its account is unknown", dest.registry),
                    "pass --ecr-registry-id ACCOUNT (and --ecr-region REGION)",
                )
            })?;
            let region = settings.region.clone().ok_or_else(|| {
                Failure::user(
                    format!("{} is treated as ECR (--ecr) but its region is unknown", dest.registry),
                    "pass --ecr-region REGION",
                )
            })?;
            EcrRegistry { registry_id, region }
        }
    };
    let policies = settings.validate()?;

    // Every name ECR would refuse, before any call.
    let bad: Vec<String> = plan.repositories.keys().filter_map(|r| validate_repository_name(r).err()).collect();
    if !bad.is_empty() {
        return Err(Failure::user(
            format!("ECR would refuse {} repository names:\n  - {}", bad.len(), bad.join("\n  - ")),
            "ECR allows single `.`, `_` or `-` between lowercase letters and digits; --flatten or a different -d prefix may help",
        ));
    }

    ctx.printer.info(format!("ECR registry {} in {}", registry.registry_id, registry.region));
    let ecr = Arc::new(Ecr::connect(&registry).await?);
    let token = ecr.token().await.explain("cannot get an ECR authorization token")?;
    ctx.registries.set_credentials(&dest.registry, Role::Destination, token, Some(Arc::new(TokenSource(ecr.clone()))));

    let existing: Vec<(String, Option<crate::import::ecr::TagMutability>)> =
        stream::iter(plan.repositories.keys().cloned())
            .map(|name| {
                let ecr = ecr.clone();
                async move { ecr.describe(&name).await.map(|m| (name, m)) }
            })
            .buffer_unordered(ctx.concurrency)
            .try_collect()
            .await?;
    let mut mutability = BTreeMap::new();
    let mut existing: Vec<_> = existing;
    existing.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, state) in existing {
        match state {
            Some(m) => {
                if dry_run {
                    ctx.printer.result(format!(
                        "ECR repository {name} exists (tag mutability {}){}",
                        m.mode,
                        if settings.update_existing { "; would apply the settings" } else { "; left as it is" }
                    ));
                } else if settings.update_existing {
                    ecr.update(&name, &settings, &policies).await?;
                }
                let applied = settings.update_existing && settings.tag_mutability.is_some();
                mutability.insert(name, if applied { crate::import::ecr::TagMutability::of(&settings) } else { m });
            }
            None if dry_run => {
                ctx.printer.result(format!("Would create ECR repository {name} ({})", settings.describe()));
            }
            None => {
                let state = ecr.create(&name, &settings, &policies).await?;
                match state {
                    crate::import::ecr::RepositoryState::Existing { mutability: m } => {
                        ctx.printer.detail(format!("ECR repository {name} was created meanwhile by someone else"));
                        mutability.insert(name, m);
                    }
                    _ => {
                        ctx.printer.info(format!("Created ECR repository {name} ({})", settings.describe()));
                        mutability.insert(name, crate::import::ecr::TagMutability::of(&settings));
                    }
                }
            }
        }
    }
    Ok(Some(EcrSession { mutability }))
}
