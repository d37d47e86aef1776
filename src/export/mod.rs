//! Export: from image references to one archive. Resolve each reference to its complete manifest graph at the
//! source (`resolve`, with the attached signatures, attestations and SBOMs: `referrers`), download the blobs into
//! the content-addressed store (`pull`, `blob_store`), leave out what a base archive holds (`delta`), and write the
//! archive as the downloads arrive (`pack`, `pipeline`). `bundle copy` and `bundle images` resolve the same way.

pub mod blob_store;
pub mod delta;
pub mod pack;
mod pipeline;
pub mod pull;
pub mod referrers;
pub mod resolve;

pub use pipeline::*;
