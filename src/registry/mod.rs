//! Our own distribution-spec client (see `client`), and the pool of clients one run uses.

pub mod challenge;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use client::{BlobSource, ClientOptions, ManifestHead, PulledManifest, RegistryClient};
pub use config::RegistryConfig;
pub use credentials::Role;
pub use error::RegistryError;

/// One client per registry name, so connections and tokens are shared by everything that talks to it.
pub struct Registries {
    config: RegistryConfig,
    options: ClientOptions,
    clients: Mutex<HashMap<(String, bool), Arc<RegistryClient>>>,
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
        Registries { config, options, clients: Mutex::new(HashMap::new()) }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The client for registry `name` in `role` (credentials differ per side of the transfer).
    pub fn client(&self, name: &str, role: Role) -> Result<Arc<RegistryClient>, PoolError> {
        let key = (name.to_string(), role == Role::Destination);
        let mut clients = self.clients.lock().expect("registry pool lock");
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let endpoint = self.config.endpoint(name);
        let creds = credentials::lookup(name, role, endpoint.config_credentials.as_ref())?;
        let client = Arc::new(RegistryClient::new(endpoint, creds, self.options.clone())?);
        clients.insert(key, client.clone());
        Ok(client)
    }
}
