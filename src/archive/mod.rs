//! The archive: a tar of an OCI image layout, compressed as seekable zstd, with a `sha256sum` sidecar.
//! See docs/archive-format.md for the format and the rules a valid archive follows. Reading it (`reader`,
//! `seekable`), proving it (`contents`, `proof`, `checksum`), writing it (`writer`), the other tools' archives it
//! reads (`docker_save`), and what it says of itself to others (`spdx`, the inventory).

pub mod checksum;
pub mod contents;
pub mod docker_save;
pub mod proof;
pub mod reader;
pub mod seekable;
pub mod spdx;
mod stored_frame;
pub mod writer;

pub use contents::{ArchiveImage, BundleContents};
pub use reader::{ArchiveFile, BlobEntry, Problem};
pub use writer::ArchiveWriter;
