//! Trust across the gap: who made what crosses it.
//!
//! The sidecar proves an archive is what was written, not who wrote it: anyone who can alter the archive can
//! rewrite the sidecar. Two checks close that. Before an export writes anything, every image must carry a cosign
//! signature by one of the vendor's keys over its own digest (`image_signatures`); and the bundle itself is signed
//! (`archive_signature`): a signature over the sidecar's bytes, which name the archive's sha256, so that
//! `--require-signature` at the site proves origin and content together. Keys are read once into the types of
//! `keys` (what verifies) and `signing_key` (what signs); key material never reaches a message.

pub mod archive_signature;
mod cosign_key;
pub mod image_signatures;
pub mod keys;
mod password;
pub mod signing_key;

pub use keys::{KeyError, TrustedKey};
pub use signing_key::SigningKey;
