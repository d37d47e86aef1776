//! ECR before an import pushes anything: the settings (flags over the registry config's `[registry.ecr]`), every
//! repository name ECR would refuse, the repositories (created with their settings, or found with theirs), and
//! the data-plane token, renewed as it expires. `bundle check` needs the token alone (`login`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::{Ecr, EcrError, EcrRegistry, EcrSettings, detect, validate_repository_name};
use crate::import::push::PushPlan;
use crate::oci::destination::Destination;
use crate::registry::credentials::{CredentialSource, Credentials};
use crate::registry::{Registries, Role};
use crate::support::printer::Printer;

/// What the import needs to know about ECR once repositories are in place.
pub struct EcrSession {
    /// Tag mutability per destination repository (for repositories that existed or were created).
    pub mutability: BTreeMap<String, super::TagMutability>,
}

struct TokenSource(Arc<Ecr>);

impl CredentialSource for TokenSource {
    fn fetch(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Credentials, String>> + Send + '_>> {
        Box::pin(async move { self.0.token().await.map_err(|e| e.to_string()) })
    }
}

/// For a destination ECR (by its host name, or the registry config's `ecr` table) serves: use its data-plane
/// token, renewed as it expires. Returns whether it is ECR. What `bundle check` needs of ECR: no repositories.
pub async fn login(registries: &Registries, registry: &str) -> Result<bool, EcrError> {
    let endpoint = registries.config().endpoint(registry);
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
    let token = ecr.token().await.map_err(|e| EcrError::Token(Box::new(e)))?;
    registries.set_credentials(registry, Role::Destination, token, Some(Arc::new(TokenSource(ecr))));
    Ok(true)
}

/// Set up ECR if the destination is ECR; `None` otherwise.
pub async fn prepare(
    registries: &Registries,
    printer: &Printer,
    concurrency: usize,
    flags: &EcrSettings,
    dest: &Destination,
    plan: &PushPlan,
    dry_run: bool,
) -> Result<Option<EcrSession>, EcrError> {
    let endpoint = registries.config().endpoint(&dest.registry);
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
            let unknown = |what| EcrError::Unidentified { registry: dest.registry.clone(), what };
            let registry_id = settings.registry_id.clone().ok_or_else(|| unknown("account"))?;
            let region = settings.region.clone().ok_or_else(|| unknown("region"))?;
            EcrRegistry { registry_id, region }
        }
    };
    let policies = settings.validate()?;

    // Every name ECR would refuse, before any call.
    let bad: Vec<String> = plan.repositories.keys().filter_map(|r| validate_repository_name(r).err()).collect();
    if !bad.is_empty() {
        return Err(EcrError::RefusedNames(bad));
    }

    printer.info(format!("ECR registry {} in {}", registry.registry_id, registry.region));
    let ecr = Arc::new(Ecr::connect(&registry).await?);
    let token = ecr.token().await.map_err(|e| EcrError::Token(Box::new(e)))?;
    registries.set_credentials(&dest.registry, Role::Destination, token, Some(Arc::new(TokenSource(ecr.clone()))));

    let existing: Vec<(String, Option<super::TagMutability>)> = stream::iter(plan.repositories.keys().cloned())
        .map(|name| {
            let ecr = ecr.clone();
            async move { ecr.describe(&name).await.map(|m| (name, m)) }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let mut mutability = BTreeMap::new();
    let mut existing: Vec<_> = existing;
    existing.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, state) in existing {
        match state {
            Some(m) => {
                if dry_run {
                    printer.result(format!(
                        "ECR repository {name} exists (tag mutability {}){}",
                        m.mode,
                        if settings.update_existing { "; would apply the settings" } else { "; left as it is" }
                    ));
                } else if settings.update_existing {
                    ecr.update(&name, &settings, &policies).await?;
                }
                let applied = settings.update_existing && settings.tag_mutability.is_some();
                mutability.insert(name, if applied { super::TagMutability::of(&settings) } else { m });
            }
            None if dry_run => {
                printer.result(format!("Would create ECR repository {name} ({})", settings.describe()));
            }
            None => {
                let state = ecr.create(&name, &settings, &policies).await?;
                match state {
                    super::RepositoryState::Existing { mutability: m } => {
                        printer.detail(format!("ECR repository {name} was created meanwhile by someone else"));
                        mutability.insert(name, m);
                    }
                    _ => {
                        printer.info(format!("Created ECR repository {name} ({})", settings.describe()));
                        mutability.insert(name, super::TagMutability::of(&settings));
                    }
                }
            }
        }
    }
    Ok(Some(EcrSession { mutability }))
}
