//! The loop of a watch-driven controller: while this server leads, list and sync everything,
//! then watch the kinds the controller reads and sync again after every batch of changes
//! (batches that queued up meanwhile are coalesced into one sync), and at least every
//! [`RESYNC`] for what depends on time alone (a Deployment's progress deadline), or every given
//! period for controllers with work due at times no watch reports (Job back-off and TTLs,
//! CronJob schedules: [`run_every`]). A controller that cares about some changes only (the
//! garbage collector: owners and deletions, not status updates) passes a filter
//! ([`run_filtered`]); batches with no change it wants cause no sync. Syncs never overlap: one
//! loop runs them all. A failed watch or sync starts over with a fresh list; losing leadership
//! stops the watches.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch as tokio_watch};
use tokio_util::sync::CancellationToken;

use super::watch::{forward, store_when_ready};
use crate::datastore::{Change, StoreCell};
use serde_json::Value;

use crate::registry::ResourceInfo;
use crate::registry::print::text;
use crate::storage::{ObjectError, Storage};

/// How long to wait before listing again after a failed sync.
const RETRY: Duration = Duration::from_secs(1);

/// The longest time between two syncs when nothing changes.
pub const RESYNC: Duration = Duration::from_secs(15);

/// Runs `sync` (which returns the revision its reads saw) as described above, until `cancel`.
pub async fn run<F, Fut>(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
    component: &'static str,
    kinds: &[&'static ResourceInfo],
    sync: F,
) where
    F: Fn(Storage) -> Fut,
    Fut: Future<Output = Result<i64, ObjectError>>,
{
    run_every(cell, is_leader, cancel, component, kinds, RESYNC, sync).await
}

/// [`run`], syncing at least every `period` when nothing changes.
pub async fn run_every<F, Fut>(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
    component: &'static str,
    kinds: &[&'static ResourceInfo],
    period: Duration,
    sync: F,
) where
    F: Fn(Storage) -> Fut,
    Fut: Future<Output = Result<i64, ObjectError>>,
{
    let every_change: Relevant = |_| true;
    run_filtered(
        cell,
        is_leader,
        cancel,
        component,
        kinds,
        period,
        every_change,
        sync,
    )
    .await
}

/// Which watched changes call for a sync.
pub type Relevant = fn(&Change) -> bool;

/// [`run_every`], syncing after a batch of changes only when one of them is `relevant`.
#[allow(clippy::too_many_arguments)]
pub async fn run_filtered<F, Fut>(
    cell: StoreCell,
    mut is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
    component: &'static str,
    kinds: &[&'static ResourceInfo],
    period: Duration,
    relevant: Relevant,
    sync: F,
) where
    F: Fn(Storage) -> Fut,
    Fut: Future<Output = Result<i64, ObjectError>>,
{
    let Some(ds) = store_when_ready(&cell, &cancel).await else {
        return;
    };
    let store = Storage::new(ds.clone());
    loop {
        while !*is_leader.borrow() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = is_leader.changed() => if r.is_err() { return },
            }
        }
        let rev = match sync(store.clone()).await {
            Ok(rev) => rev,
            Err(e) => {
                tracing::debug!(component, "sync failed: {e}");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
                continue;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watches = cancel.child_token();
        for info in kinds {
            forward(
                ds.clone(),
                info.list_prefix(None),
                rev + 1,
                (),
                tx.clone(),
                watches.clone(),
            );
        }
        // A deadline, not a sleep inside the select: other branches (leadership renewals)
        // wake the loop often, and must not postpone the resync.
        let mut resync_at = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = is_leader.changed() => {
                    if r.is_err() || !*is_leader.borrow() { break }
                }
                _ = tokio::time::sleep_until(resync_at) => {
                    if let Err(e) = sync(store.clone()).await {
                        tracing::debug!(component, "sync failed: {e}");
                        break;
                    }
                    resync_at = tokio::time::Instant::now() + period;
                }
                batch = rx.recv() => {
                    let Some((_, Ok(changes))) = batch else { break };
                    let mut wanted = changes.iter().any(relevant);
                    let mut failed = false;
                    while let Ok((_, b)) = rx.try_recv() {
                        match b {
                            Ok(changes) => wanted |= changes.iter().any(relevant),
                            Err(_) => failed = true,
                        }
                    }
                    if failed {
                        break;
                    }
                    if !wanted {
                        continue;
                    }
                    if let Err(e) = sync(store.clone()).await {
                        tracing::debug!(component, "sync failed: {e}");
                        break;
                    }
                    resync_at = tokio::time::Instant::now() + period;
                }
            }
        }
        watches.cancel();
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Objects grouped by `metadata.namespace`, for syncing each owner against its namespace.
pub fn by_namespace(items: &[Value]) -> BTreeMap<&str, Vec<Value>> {
    let mut out: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for item in items {
        out.entry(text(item, "/metadata/namespace"))
            .or_default()
            .push(item.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::Datastore;
    use crate::datastore::memory::MemoryStore;
    use crate::registry::CONFIGMAPS;
    use std::sync::{Arc, Mutex};

    /// Lets the watch forwarders and the loop (on this current-thread runtime) run.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn batches_without_a_relevant_change_cause_no_sync() {
        let ds = Datastore::from_impl(Arc::new(MemoryStore::default()));
        let cell: StoreCell = Arc::new(tokio::sync::OnceCell::new_with(Some(ds.clone())));
        let (_leading, is_leader) = tokio_watch::channel(true);
        let cancel = CancellationToken::new();
        // Each sync records how many config maps it saw.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let wanted: Relevant = |c| match c {
            Change::Put { kv, .. } => kv.key.ends_with("/wanted"),
            Change::Delete { .. } => false,
        };
        let loop_task = tokio::spawn({
            let (seen, cancel) = (seen.clone(), cancel.clone());
            async move {
                run_filtered(
                    cell,
                    is_leader,
                    cancel,
                    "test",
                    &[&CONFIGMAPS],
                    Duration::from_secs(3600),
                    wanted,
                    |store| {
                        let seen = seen.clone();
                        async move {
                            let page = store
                                .list_stored(&CONFIGMAPS, None, &Default::default())
                                .await?;
                            seen.lock().unwrap().push(page.items.len());
                            Ok(page.resource_version)
                        }
                    },
                )
                .await
            }
        });
        settle().await;
        for name in ["a", "b", "c", "wanted"] {
            ds.put(&CONFIGMAPS.key(Some("default"), name), b"{}".to_vec())
                .await
                .unwrap();
            settle().await;
        }
        assert_eq!(*seen.lock().unwrap(), [0, 4]);
        cancel.cancel();
        loop_task.await.unwrap();
    }
}
