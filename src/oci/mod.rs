//! The OCI data model every other part speaks: image references (`reference`), content digests (`digest`),
//! manifests and their media types (`manifest`), the image layout and bundle.json inside the archive (`layout`),
//! and platforms (`platform`). No I/O: these are values, parsed and checked.

pub mod digest;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod reference;
