//! Every environment variable `bundle` reads, in one place, so the docs and the code cannot drift apart.

/// Path of the registry config file (TOML), same as `--registry-config`.
pub const BUNDLE_REGISTRY_CONFIG: &str = "BUNDLE_REGISTRY_CONFIG";
/// Directory holding docker's `config.json` (docker's own variable).
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
/// Podman's credentials file (`auth.json`), read after docker's config.
pub const REGISTRY_AUTH_FILE: &str = "REGISTRY_AUTH_FILE";
/// Credentials for the source registry `quay.io`, as the vendor's `copy_images.sh` takes them.
pub const STS_REGISTRY_USERNAME: &str = "STS_REGISTRY_USERNAME";
pub const STS_REGISTRY_PASSWORD: &str = "STS_REGISTRY_PASSWORD";
/// Credentials for the `bundle import` destination registry, as the vendor's script takes them.
pub const DST_REGISTRY_USERNAME: &str = "DST_REGISTRY_USERNAME";
pub const DST_REGISTRY_PASSWORD: &str = "DST_REGISTRY_PASSWORD";
/// Reproducible-builds convention: when set, `bundle.json` records this time as the creation time.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Where temporary files go when `--tmp-dir` is not given (the platform's usual variable).
pub const TMPDIR: &str = "TMPDIR";
/// The export blob cache, same as `--cache-dir`.
pub const BUNDLE_CACHE_DIR: &str = "BUNDLE_CACHE_DIR";
/// The export blob cache's size limit, same as `--cache-max-size`.
pub const BUNDLE_CACHE_MAX_SIZE: &str = "BUNDLE_CACHE_MAX_SIZE";
/// Seconds one `helm` run (template, version) may take, same as `--helm-timeout`.
pub const BUNDLE_HELM_TIMEOUT: &str = "BUNDLE_HELM_TIMEOUT";
/// The user's cache directory (XDG); the blob cache defaults to `$XDG_CACHE_HOME/bundle`.
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// Home directory, for `~/.docker/config.json` and the default cache `~/.cache/bundle`.
pub const HOME: &str = "HOME";

/// The password of an encrypted signing key (`--sign-key`, `bundle sign --key`): cosign's `cosign.key`, an
/// encrypted PKCS#8 or OpenSSH key. Unset: asked for on the terminal. Never logged.
pub const BUNDLE_SIGN_PASSWORD: &str = "BUNDLE_SIGN_PASSWORD";

/// Bytes per request of a chunked blob upload (import, copy); blobs larger than this go up in chunks of it,
/// each resumed where a cut one stopped. A size with a unit; default 64MiB, at least 1MiB.
pub const BUNDLE_UPLOAD_CHUNK_SIZE: &str = "BUNDLE_UPLOAD_CHUNK_SIZE";

/// Bytes per `Range` request when a big blob is downloaded in parallel pieces (export, copy, files); blobs of
/// more than two pieces come that way, four requests at a time. A size with a unit; default 8MiB, at least 1MiB;
/// a size larger than any blob turns pieces off.
pub const BUNDLE_DOWNLOAD_PIECE_SIZE: &str = "BUNDLE_DOWNLOAD_PIECE_SIZE";

/// Read when bundle is built, not when it runs (build.rs, scripts/release): the commit and the glibc floor that
/// `bundle --version` reports.
pub const BUNDLE_BUILD_COMMIT: &str = "BUNDLE_BUILD_COMMIT";
pub const BUNDLE_GLIBC_FLOOR: &str = "BUNDLE_GLIBC_FLOOR";

/// The registry the vendor's `STS_REGISTRY_*` variables are meant for.
pub const STS_REGISTRY: &str = "quay.io";
