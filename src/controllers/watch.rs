//! Forwards a store watch into a channel, so control loops `select!` on a cancel-safe
//! receiver together with their timers and leadership, and several watches share one loop.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::datastore::{Change, Datastore, DatastoreError};

/// One batch from a forwarded watch, tagged with the caller's `source`; an `Err` ends it
/// (including a stream that simply ended), after which the caller lists again.
pub type Tagged<T> = (T, Result<Vec<Change>, DatastoreError>);

/// Watches `prefix` from revision `from` and sends each batch tagged with `source` until the
/// watch fails, the receiver goes away or `cancel` fires.
pub fn forward<T: Copy + Send + 'static>(
    store: Datastore,
    prefix: String,
    from: i64,
    source: T,
    tx: mpsc::UnboundedSender<Tagged<T>>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut stream = match store.watch(&prefix, from).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send((source, Err(e)));
                return;
            }
        };
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = stream.next() => n,
            };
            let batch = match next {
                Ok(Some((changes, _))) => Ok(changes),
                Ok(None) => Err(DatastoreError::Unavailable("watch ended".into())),
                Err(e) => Err(e),
            };
            let end = batch.is_err();
            if tx.send((source, batch)).is_err() || end {
                return;
            }
        }
    });
}

/// Waits until this server leads; `false` on cancellation or when the election is gone.
pub async fn until_leader(
    is_leader: &mut tokio::sync::watch::Receiver<bool>,
    cancel: &CancellationToken,
) -> bool {
    while !*is_leader.borrow_and_update() {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            r = is_leader.changed() => if r.is_err() { return false },
        }
    }
    true
}

/// Waits until the server's store is set (etcd ready); `None` on cancellation.
pub async fn store_when_ready(
    cell: &crate::datastore::StoreCell,
    cancel: &CancellationToken,
) -> Option<Datastore> {
    loop {
        if let Some(s) = cell.get() {
            return Some(s.clone());
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}
