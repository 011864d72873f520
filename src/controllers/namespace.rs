//! The namespace controller (leader only, watch-driven; docs/namespaces.md): for every namespace
//! marked Terminating by a DELETE it removes the contents of every namespaced kind, records
//! upstream's deletion conditions, removes the `kubernetes` finalizer under the `finalize`
//! subresource's rules, and deletes the namespace once no finalizer is left. Failures are
//! retried; a new leader (or a restarted watch) starts from a full list, so nothing is missed.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::storage;
use crate::cluster::context::Ctx;
use crate::datastore::Change;
use crate::registry::NAMESPACES;
use crate::storage::ListOptions;
use crate::storage::namespaces;

/// How soon a namespace whose finalization failed (or whose content reappeared) is retried.
const RETRY: Duration = Duration::from_secs(2);

#[derive(serde::Deserialize)]
struct Facts {
    metadata: MetaFacts,
}

#[derive(serde::Deserialize)]
struct MetaFacts {
    name: String,
    #[serde(rename = "deletionTimestamp", default)]
    deletion_timestamp: Option<String>,
}

/// The name of a stored namespace when it is terminating.
fn terminating(value: &[u8]) -> Option<String> {
    let f: Facts = serde_json::from_slice(value).ok()?;
    f.metadata.deletion_timestamp.map(|_| f.metadata.name)
}

/// Runs the controller until `cancel`.
pub async fn run(ctx: Ctx, mut is_leader: watch::Receiver<bool>, cancel: CancellationToken) {
    loop {
        let Some(store) = storage(&ctx) else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => continue,
            }
        };
        // Full resync: every terminating namespace, then changes after the list's revision.
        let listed = store
            .list_stored(&NAMESPACES, None, &ListOptions::default())
            .await;
        let stream = match &listed {
            Ok(l) => {
                store
                    .datastore()
                    .watch(&NAMESPACES.list_prefix(None), l.resource_version + 1)
                    .await
            }
            Err(_) => Err(crate::datastore::DatastoreError::Timeout),
        };
        let (Ok(listed), Ok(mut stream)) = (listed, stream) else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => continue,
            }
        };
        let mut pending: BTreeSet<String> = listed
            .items
            .iter()
            .filter_map(|kv| terminating(&kv.value))
            .collect();
        loop {
            if *is_leader.borrow() {
                let mut done = Vec::new();
                for name in &pending {
                    match namespaces::finalize(&store, name).await {
                        Ok(true) => done.push(name.clone()),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            component = "namespace-controller",
                            namespace = %name,
                            "deleting the namespace's content failed, retrying: {e}"
                        ),
                    }
                }
                for name in done {
                    pending.remove(&name);
                }
            }
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                changed = is_leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new leader starts from a full list.
                    break;
                }
                _ = tokio::time::sleep(RETRY), if !pending.is_empty() => continue,
                m = stream.next() => m,
            };
            match msg {
                Ok(Some((changes, _))) => {
                    for change in changes {
                        if let Change::Put { kv, .. } = change
                            && let Some(name) = terminating(&kv.value)
                        {
                            pending.insert(name);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(
                        component = "namespace-controller",
                        "namespace watch ended, resyncing: {e}"
                    );
                    break;
                }
            }
        }
    }
}
