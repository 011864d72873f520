//! Leader election among servers: the leader holds etcd key `/rke2/leader/<name>` bound to a
//! short lease and keeps it alive; everyone else retries creating the key. Losing the lease
//! (etcd trouble, a stalled process) drops leadership within the TTL.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::context::Ctx;
use crate::datastore::Cas;

/// Lease TTL of the leader key, seconds.
const LEASE_TTL: i64 = 6;
/// Keep-alive / retry interval.
const RENEW_INTERVAL: Duration = Duration::from_secs(2);

/// Campaigns for `name`; the returned receiver says whether this server currently leads.
pub fn campaign(
    ctx: Ctx,
    name: &'static str,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tracker.spawn(async move {
        let key = format!("/rke2/leader/{name}");
        let me = ctx.node.name.clone();
        let mut lease: Option<i64> = None;
        loop {
            let Some(store) = ctx.store.get().cloned() else { return };
            let leading = match lease {
                Some(id) => matches!(store.lease_keep_alive_once(id).await, Ok(ttl) if ttl > 0),
                None => false,
            };
            if !leading {
                if lease.take().is_some() {
                    tracing::warn!(component = "controllers", "lost leadership of {name}");
                }
                if let Ok(id) = store.lease_grant(LEASE_TTL).await {
                    match store.create_with_lease(&key, me.clone().into_bytes(), id).await {
                        Ok(Cas::Written(_)) => {
                            tracing::info!(component = "controllers", node = %me, "became leader of {name}");
                            lease = Some(id);
                        }
                        _ => {
                            let _ = store.lease_revoke(id).await;
                        }
                    }
                }
            }
            let _ = tx.send(lease.is_some());
            tokio::select! {
                _ = cancel.cancelled() => {
                    if let Some(id) = lease {
                        // A courtesy so another server takes over at once; when the whole
                        // cluster is stopping there may be no quorum left to answer it.
                        let _ = tokio::time::timeout(crate::datastore::SHUTDOWN_CALL_TIMEOUT, store.lease_revoke(id)).await;
                    }
                    let _ = tx.send(false);
                    return;
                }
                _ = tokio::time::sleep(RENEW_INTERVAL) => {}
            }
        }
    });
    rx
}
