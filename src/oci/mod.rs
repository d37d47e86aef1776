//! The OCI data model every other part speaks: image references (`reference`), content digests (`digest`),
//! manifests and their media types (`manifest`), the image layout and bundle.json inside the archive (`layout`),
//! platforms (`platform`), and where an image goes at a destination (`destination`: `-d REGISTRY[/PREFIX]` and
//! the name mapping). No I/O: these are values, parsed and checked.

pub mod destination;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod reference;
