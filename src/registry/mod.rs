//! Our own distribution-spec client (see `client`), and the pool of clients one run uses.

pub mod challenge;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use client::{BlobSink, BlobSource, ClientOptions, ManifestHead, PulledManifest, RegistryClient};
pub use config::RegistryConfig;
pub use credentials::Role;
pub use error::RegistryError;

/// Credentials a caller decided on, and how to renew them.
type CredentialOverride = (credentials::Credentials, Option<Arc<dyn credentials::CredentialSource>>);

/// Where one registry's client is made, once.
type ClientSlot = Arc<Mutex<Option<Arc<RegistryClient>>>>;

/// One client per registry name, so connections and tokens are shared by everything that talks to it.
pub struct Registries {
    config: RegistryConfig,
    options: ClientOptions,
    /// A slot per (registry, is destination). The pool lock is held only to find a slot; making a client (a
    /// credential helper process, CA files) holds that registry's slot alone, so other registries go on and
    /// callers for the same one wait for its client instead of making their own.
    clients: Mutex<HashMap<(String, bool), ClientSlot>>,
    /// Credentials decided by the caller (ECR tokens), by (registry, is destination).
    overrides: Mutex<HashMap<(String, bool), CredentialOverride>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl Registries {
    pub fn new(config: RegistryConfig, options: ClientOptions) -> Registries {
        Registries { config, options, clients: Mutex::new(HashMap::new()), overrides: Mutex::new(HashMap::new()) }
    }

    /// Use these credentials (and this way to renew them) for `name` in `role`, instead of looking them up.
    /// Takes effect for clients created afterwards.
    pub fn set_credentials(
        &self,
        name: &str,
        role: Role,
        creds: credentials::Credentials,
        refresher: Option<Arc<dyn credentials::CredentialSource>>,
    ) {
        let key = (name.to_string(), role == Role::Destination);
        self.overrides.lock().expect("registry pool lock").insert(key.clone(), (creds, refresher));
        self.clients.lock().expect("registry pool lock").remove(&key);
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The client for registry `name` in `role` (credentials differ per side of the transfer).
    pub fn client(&self, name: &str, role: Role) -> Result<Arc<RegistryClient>, PoolError> {
        let key = (name.to_string(), role == Role::Destination);
        let slot = self.clients.lock().expect("registry pool lock").entry(key.clone()).or_default().clone();
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let endpoint = self.config.endpoint(name);
        let overridden = self.overrides.lock().expect("registry pool lock").get(&key).cloned();
        let (creds, refresher) = match overridden {
            Some((c, r)) => (Some(c), r),
            None => (credentials::lookup(name, role, endpoint.config_credentials.as_ref())?, None),
        };
        let client = Arc::new(RegistryClient::new(endpoint, creds, refresher, self.options.clone())?);
        *slot = Some(client.clone());
        Ok(client)
    }
}

impl crate::support::hint::Hint for PoolError {
    fn hint(&self) -> Option<String> {
        match self {
            PoolError::Credentials(e) => e.hint(),
            PoolError::Registry(e) => e.hint(),
        }
    }
}
