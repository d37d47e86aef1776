//! Import and copy: images into a destination registry. Where each image goes (`destination`), what the push
//! does and in what order (`push`), Amazon ECR's repositories and tokens (`ecr`), a `docker save` archive made
//! pushable (`convert`), and the blobs of a copy read straight from the source registries (`copy`).

pub mod convert;
pub mod copy;
pub mod delivery;
pub mod destination;
pub mod ecr;
pub mod push;
