//! `bundle sign FILE… --key KEY`: each archive checked against its sidecar, then `trust::archive_signature::sign`.

use super::failure::Explain as _;
use super::{Context, Outcome};
use crate::trust::{SigningKey, archive_signature};

pub async fn run(ctx: &Context, args: super::cli::SignArgs) -> Outcome<()> {
    let key = SigningKey::load(&args.key)?;
    let files = crate::volumes::expand_inputs(&args.archives).explain("cannot find the archives to sign")?;
    for file in files {
        let (path, key_ref) = (file.clone(), &key);
        // Reading the archive against its sidecar is a whole sequential read: off the async threads.
        let signature = tokio::task::block_in_place(|| archive_signature::sign(&path, key_ref, None))?;
        ctx.printer.info(format!(
            "Signed {}: {} ({}, key {})",
            file.display(),
            signature.display(),
            key.signature_kind(),
            key.fingerprint()
        ));
    }
    Ok(())
}

/// Sign what export just wrote (its sha256 is known), naming each signature.
pub fn sign_written(
    ctx: &Context,
    key: &SigningKey,
    written: &[(std::path::PathBuf, Option<crate::oci::digest::Digest>)],
) -> Outcome<()> {
    for (path, digest) in written {
        let signature = tokio::task::block_in_place(|| archive_signature::sign(path, key, digest.as_ref()))?;
        ctx.printer.info(format!(
            "Signed {} ({}, key {})",
            signature.display(),
            key.signature_kind(),
            key.fingerprint()
        ));
    }
    Ok(())
}
