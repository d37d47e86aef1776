//! Concurrent work that, on the first failure, starts nothing new but lets what is under way finish.
//!
//! `try_for_each_concurrent` drops the futures in flight when one fails. For requests that change the
//! destination (a manifest `PUT`) that is wrong: a dropped request the registry had read whole is still
//! stored after we stop, so what we then report (which images landed) races the registry. Waiting for the few
//! requests under way costs little and makes the report exact.

use std::future::Future;

use futures_util::{StreamExt, stream};

/// Run `work` on each item, `concurrency` at a time. After the first error no item starts; the ones started
/// finish. Returns the first error.
pub async fn for_each_draining<T, E, F, Fut>(
    items: impl IntoIterator<Item = T>,
    concurrency: usize,
    work: F,
) -> Result<(), E>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let first_failure: std::sync::Mutex<Option<E>> = std::sync::Mutex::new(None);
    let failed = || first_failure.lock().expect("failure slot").is_some();
    stream::iter(items)
        .for_each_concurrent(concurrency.max(1), |item| {
            let (first_failure, work) = (&first_failure, &work);
            async move {
                if failed() {
                    return;
                }
                if let Err(e) = work(item).await {
                    first_failure.lock().expect("failure slot").get_or_insert(e);
                }
            }
        })
        .await;
    first_failure.into_inner().expect("failure slot").map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The bug: an import whose one image failed called another image failed that the registry stored anyway,
    /// because its manifest `PUT` was dropped in flight.
    #[tokio::test]
    async fn a_failure_lets_the_work_under_way_finish_and_starts_nothing_new() {
        let (go, wait) = tokio::sync::watch::channel(false);
        let finished = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        let r = for_each_draining([0, 1, 2, 3], 2, |i| {
            let (go, mut wait, finished, started) = (&go, wait.clone(), &finished, &started);
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                if i == 1 {
                    // Fails, and only then lets item 0 (in flight) go on.
                    go.send(true).unwrap();
                    return Err(format!("item {i} failed"));
                }
                wait.wait_for(|go| *go).await.unwrap();
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
        assert_eq!(r, Err("item 1 failed".to_string()));
        assert_eq!(finished.load(Ordering::SeqCst), 1, "item 0, under way when item 1 failed, finished");
        assert_eq!(started.load(Ordering::SeqCst), 2, "items 2 and 3 never started");
    }

    #[tokio::test]
    async fn without_a_failure_every_item_runs() {
        let done = AtomicUsize::new(0);
        let r: Result<(), ()> = for_each_draining(0..10, 3, |_| async {
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert_eq!((r, done.load(Ordering::SeqCst)), (Ok(()), 10));
    }
}
