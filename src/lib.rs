//! `bundle`: move the container images of a Helm chart into an air-gapped network as one verified archive.
//!
//! The binary (`src/main.rs`) only parses flags and dispatches to `commands`; the work lives in folders by
//! capability, from the top down: `commands` (one file per subcommand, the command line, specs) → `export`
//! (references to an archive) → `volumes` (an archive in pieces) and `chart` (a chart's images and values) and `files` (files that travel
//! beside the images) and
//! `check` (does a destination hold what pods will pull) and `serve` (archives as a read-only registry) →
//! `import` (images into a registry, ECR included) →
//! `mirrors` (runtime configs that find the pushed images by their original names) →
//! `archive` (the format: read, prove, write) and `registry` (our distribution client) → `oci` (references,
//! digests, manifests, layouts, platforms) → `support` (output, hints, errors, environment, child processes).
//!
//! Linux only: staging uses `O_DIRECT` and `sync_file_range`, child processes are killed by pid. Air-gapped
//! sites run the tool on Linux hosts; a build for anything else stops here rather than half-working.

#[cfg(not(target_os = "linux"))]
compile_error!("bundle builds for Linux only (O_DIRECT staging, sync_file_range); see README.md, \"Install\"");

pub mod archive;
pub mod chart;
pub mod check;
pub mod commands;
pub mod export;
pub mod files;
pub mod import;
pub mod mirrors;
pub mod oci;
pub mod registry;
pub mod serve;
pub mod support;
pub mod trust;
pub mod volumes;
