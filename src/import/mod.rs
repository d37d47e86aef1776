//! Import and copy: images into a destination registry. Import's pipeline (`pipeline`: plan, prove, prepare the
//! destination, push, read back), its inputs (our archives and other tools', `docker save` archives made pushable
//! by `convert`, the volumes of a set: `volume_set`), the destination half import and copy share (`delivery`:
//! where each image goes, `destination`; what the push does and in what order, `push`; Amazon ECR, `ecr`), and
//! the blobs of a copy read straight from the source registries (`copy`).

pub mod attach;
pub mod convert;
pub mod copy;
pub mod delivery;
pub mod delta_base;
pub mod ecr;
pub mod job;
pub mod pipeline;
pub mod push;
pub mod volume_set;
