//! The password of an encrypted signing key: `BUNDLE_SIGN_PASSWORD` (set, even empty: cosign allows an empty
//! password), else a prompt on the terminal without echo. Never logged, never kept beyond the key's decryption.

use std::path::Path;

use super::KeyError;
use crate::support::env_vars::BUNDLE_SIGN_PASSWORD;

pub fn for_key(path: &Path) -> Result<String, KeyError> {
    if let Some(p) = std::env::var_os(BUNDLE_SIGN_PASSWORD) {
        return Ok(p.to_string_lossy().into_owned());
    }
    // rpassword reads /dev/tty: with no terminal (CI, a pipeline), ask for the variable instead of hanging.
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_err() {
        return Err(KeyError::NoPassword { path: path.into() });
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    rpassword::prompt_password(format!("Password for {name}: "))
        .map_err(|source| KeyError::Prompt { path: path.into(), source })
}
