//! `bundle`: move the container images of a Helm chart into an air-gapped network as one verified archive.
//!
//! The binary (`src/main.rs`) only parses flags and dispatches to `commands`; the work lives in modules with
//! one job each: `reference` (image names), `registry` (our distribution client), `resolve` (manifest
//! graphs) and `platform` (--platform), `referrers` (signatures, attestations, SBOMs), `pull` and `blob_store`
//! (downloads), `pack` and `archive` (the archive format), `push` (import and copy), `copy` (registry to registry),
//! `spdx` (the inventory).
//!
//! Linux only: staging uses `O_DIRECT` and `sync_file_range`, child processes are killed by pid. Air-gapped
//! sites run the tool on Linux hosts; a build for anything else stops here rather than half-working.

#[cfg(not(target_os = "linux"))]
compile_error!("bundle builds for Linux only (O_DIRECT staging, sync_file_range); see README.md, \"Install\"");

pub mod archive;
pub mod blob_store;
pub mod chart;
pub mod check;
pub mod child_process;
pub mod cli;
pub mod commands;
pub mod convert;
pub mod copy;
pub mod delta;
pub mod destination;
pub mod digest;
pub mod ecr;
pub mod env_vars;
pub mod error_text;
pub mod export;
pub mod hint;
pub mod layout;
pub mod manifest;
pub mod pack;
pub mod platform;
pub mod printer;
pub mod pull;
pub mod push;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod resolve;
pub mod spdx;
pub mod spec;
pub mod volumes;
