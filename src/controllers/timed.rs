//! A watch-driven controller (see `driven`) that also has work due at times no watch reports:
//! Job back-off delays and `ttlSecondsAfterFinished`, CronJob schedules. Besides the watch
//! loop, a ticker runs the same sync every `period` while this server leads; a mutex keeps the
//! two from syncing at once (two concurrent passes would both create the missing pods).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch as tokio_watch};
use tokio_util::sync::CancellationToken;

use super::driven;
use super::watch::store_when_ready;
use crate::datastore::StoreCell;
use crate::registry::ResourceInfo;
use crate::storage::{ObjectError, Storage};

/// Runs `sync` on every batch of changes of `kinds` and every `period`, while leading, until
/// `cancel`.
pub async fn run<F, Fut>(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
    component: &'static str,
    kinds: &[&'static ResourceInfo],
    period: Duration,
    sync: F,
) where
    F: Fn(Storage) -> Fut + Clone,
    Fut: Future<Output = Result<i64, ObjectError>>,
{
    let lock = Arc::new(Mutex::new(()));
    let serialised = |store: Storage| {
        let (lock, sync) = (lock.clone(), sync.clone());
        async move {
            let _one_at_a_time = lock.lock().await;
            sync(store).await
        }
    };
    let ticker = async {
        let Some(ds) = store_when_ready(&cell, &cancel).await else {
            return;
        };
        let store = Storage::new(ds);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if *is_leader.borrow()
                && let Err(e) = serialised(store.clone()).await
            {
                tracing::debug!(component, "timed sync failed: {e}");
            }
        }
    };
    tokio::join!(
        driven::run(
            cell.clone(),
            is_leader.clone(),
            cancel.clone(),
            component,
            kinds,
            serialised,
        ),
        ticker
    );
}
