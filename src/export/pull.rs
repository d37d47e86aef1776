//! Downloads every distinct blob of a set of resolved images into a `BlobStore`, concurrently and within a
//! bound. A blob shared by many images (a base layer) is fetched once.

use std::collections::BTreeMap;

use futures_util::{TryStreamExt, stream};

use crate::export::blob_store::BlobStore;
use crate::export::resolve::ResolvedImage;
use crate::oci::digest::Digest;
use crate::oci::reference::ImageRef;
use crate::registry::{PoolError, Registries, RegistryError, Role};
use crate::support::printer::Transfer;

/// One blob to fetch, and the image repository to fetch it from.
#[derive(Debug, Clone)]
pub struct PullJob {
    pub digest: Digest,
    pub size: u64,
    pub from: ImageRef,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot download blob {digest} of {image}")]
    Registry {
        digest: Digest,
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Distinct blobs of `images`, in the order the archive writes them (by digest), so that writing can follow
/// the downloads.
pub fn jobs(images: &[ResolvedImage]) -> Vec<PullJob> {
    let mut unique: BTreeMap<Digest, PullJob> = BTreeMap::new();
    // The chart's and the files' artifacts were made here and are staged already.
    for img in images.iter().filter(|i| !i.made_here()) {
        for b in &img.blobs {
            unique.entry(b.digest.clone()).or_insert_with(|| PullJob {
                digest: b.digest.clone(),
                size: b.size,
                from: img.source.clone(),
            });
        }
    }
    let mut jobs: Vec<PullJob> = unique.into_values().collect();
    jobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    jobs
}

pub async fn pull_all(
    registries: &Registries,
    store: &BlobStore,
    jobs: &[PullJob],
    concurrency: usize,
    progress: &Transfer,
    arrivals: &crate::export::blob_store::Arrivals,
) -> Result<(), PullError> {
    let result = async {
        // `buffered`-like: at most `concurrency` in flight, started in archive order.
        stream::iter(jobs.iter().map(Ok::<_, PullError>))
            .try_for_each_concurrent(concurrency.max(1), |job| async move {
                let client = registries.client(job.from.registry(), Role::Source)?;
                progress.item_started();
                let count = |n: i64| progress.add(n);
                let result = store.fetch(&client, job.from.repository(), &job.digest, job.size, &count, arrivals).await;
                progress.item_done();
                if let Ok(verified) = result {
                    arrivals.arrived(&job.digest, verified);
                }
                result.map(|_| ()).map_err(|source| PullError::Registry {
                    digest: job.digest.clone(),
                    image: job.from.to_string(),
                    source,
                })
            })
            .await?;
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        arrivals.abort(crate::support::error_text::chain_line(e));
    }
    result
}

impl crate::support::hint::Hint for PullError {
    fn hint(&self) -> Option<String> {
        match self {
            PullError::Registry { source, .. } => source.hint(),
            PullError::Pool(e) => e.hint(),
        }
    }
}
