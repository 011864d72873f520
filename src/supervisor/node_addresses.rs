//! The addresses every Node reports, indexed by address, for the kubelet serving-certificate
//! route: it must leave other nodes' addresses out of a certificate's SANs (docs/security.md),
//! and reading every Node from etcd per request made each registration cost O(nodes) time and,
//! with hundreds of registrations at once, hundreds of decoded copies of all Nodes
//! (docs/scale.md). The index follows the Nodes with one list and one datastore watch per
//! server, started on the route's first use; a lookup costs O(requested addresses).
//!
//! Until the index has listed, or while its watch is broken, lookups answer `None` and the
//! route reads the Nodes from etcd as before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::datastore::{Change, Datastore, Stored};
use crate::storage::Storage;

/// Pause before relisting after the watch broke.
const RELIST_DELAY: Duration = Duration::from_secs(1);

/// The addresses a Node reports: `status.addresses` and the node-address annotations RKE2 sets
/// (`rke2.io/internal-ip`, `etcd.rke2.cattle.io/node-address`), comma-separated.
pub fn reported_addresses(node: &serde_json::Value) -> Vec<IpAddr> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("address").and_then(|v| v.as_str()));
    let annotated = ["rke2.io/internal-ip", "etcd.rke2.cattle.io/node-address"]
        .iter()
        .filter_map(|k| node.pointer("/metadata/annotations")?.get(*k)?.as_str())
        .flat_map(|v| v.split(','));
    let mut out: Vec<IpAddr> = addresses
        .chain(annotated)
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Node (by etcd key) -> its name and addresses, and address -> the names reporting it.
#[derive(Debug, Default)]
struct Index {
    by_key: HashMap<String, (String, Vec<IpAddr>)>,
    by_ip: HashMap<IpAddr, Vec<String>>,
}

impl Index {
    fn put(&mut self, kv: &Stored) {
        self.remove(&kv.key);
        // An undecodable Node reports nothing; the API server refuses to write one anyway.
        let Ok(v) = crate::storage::decode(&crate::registry::NODES, kv) else {
            return;
        };
        let Some(name) = v.pointer("/metadata/name").and_then(|n| n.as_str()) else {
            return;
        };
        let ips = reported_addresses(&v);
        for ip in &ips {
            self.by_ip.entry(*ip).or_default().push(name.to_string());
        }
        self.by_key.insert(kv.key.clone(), (name.to_string(), ips));
    }

    fn remove(&mut self, key: &str) {
        let Some((name, ips)) = self.by_key.remove(key) else {
            return;
        };
        for ip in ips {
            if let Some(names) = self.by_ip.get_mut(&ip) {
                names.retain(|n| *n != name);
                if names.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::Put { kv, .. } => self.put(kv),
            Change::Delete { key, .. } => self.remove(key),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// `None` until listed, and while the watch is being reopened.
    index: RwLock<Option<Index>>,
    started: AtomicBool,
}

impl Shared {
    fn set(&self, index: Option<Index>) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
    }
}

/// The index handle the supervisor router carries; its watch stops when the last router clone
/// is dropped.
#[derive(Debug)]
pub struct NodeAddresses {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    _stop: DropGuard,
}

impl Default for NodeAddresses {
    fn default() -> Self {
        let cancel = CancellationToken::new();
        NodeAddresses {
            shared: Arc::default(),
            _stop: cancel.clone().drop_guard(),
            cancel,
        }
    }
}

impl NodeAddresses {
    /// Which of `ips` a Node other than `node` reports; `None` while the index is not ready
    /// (the first call starts it on `store`).
    pub fn claimed_by_others(
        &self,
        store: &Datastore,
        node: &str,
        ips: &[IpAddr],
    ) -> Option<Vec<IpAddr>> {
        if !self.shared.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(follow(
                self.shared.clone(),
                store.clone(),
                self.cancel.clone(),
            ));
        }
        let guard = self.shared.index.read().unwrap_or_else(|p| p.into_inner());
        let index = guard.as_ref()?;
        Some(
            ips.iter()
                .filter(|ip| {
                    index
                        .by_ip
                        .get(ip)
                        .is_some_and(|names| names.iter().any(|n| n != node))
                })
                .copied()
                .collect(),
        )
    }
}

/// Lists the Nodes, then applies the watch from the list's revision; relists when the watch
/// breaks (the index is unavailable meanwhile, so lookups fall back to etcd).
async fn follow(shared: Arc<Shared>, store: Datastore, cancel: CancellationToken) {
    let info = &crate::registry::NODES;
    let prefix = info.list_prefix(None);
    let storage = Storage::new(store.clone());
    let all = crate::storage::ListOptions::default();
    while !cancel.is_cancelled() {
        let listed = tokio::select! {
            _ = cancel.cancelled() => return,
            r = storage.list_stored(info, None, &all) => r,
        };
        let watched = match listed {
            Ok(page) => {
                let mut index = Index::default();
                for kv in &page.items {
                    index.put(kv);
                }
                match store.watch(&prefix, page.resource_version + 1).await {
                    Ok(w) => Some((index, w)),
                    Err(e) => {
                        tracing::debug!(component = "supervisor", "node address index: {e}");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::debug!(component = "supervisor", "node address index: {e}");
                None
            }
        };
        if let Some((index, mut watch)) = watched {
            shared.set(Some(index));
            loop {
                let batch = tokio::select! {
                    _ = cancel.cancelled() => return,
                    b = watch.next() => b,
                };
                match batch {
                    Ok(Some((changes, _))) => {
                        let mut guard = shared.index.write().unwrap_or_else(|p| p.into_inner());
                        if let Some(index) = guard.as_mut() {
                            changes.iter().for_each(|c| index.apply(c));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(component = "supervisor", "node address watch: {e}");
                        break;
                    }
                }
            }
            shared.set(None);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RELIST_DELAY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::memory::MemoryStore;

    fn node(name: &str, ips: &[&str], annotation: Option<&str>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name},
            "status": {"addresses": ips.iter().map(|a| serde_json::json!({"type": "InternalIP", "address": a})).collect::<Vec<_>>()},
        });
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = serde_json::json!({"rke2.io/internal-ip": a});
        }
        v
    }

    #[tokio::test]
    async fn follows_nodes_as_they_change() {
        let store = Datastore::from_impl(MemoryStore::new());
        let storage = Storage::new(store.clone());
        let nodes = &crate::registry::NODES;
        storage
            .create(nodes, None, node("a", &["10.0.0.1"], Some("10.0.0.2,bad")))
            .await
            .unwrap();
        let index = NodeAddresses::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let asked = [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")];
        let wait_for = |want: Vec<IpAddr>, node: &'static str| {
            let (index, store, asked) = (&index, &store, &asked);
            async move {
                for _ in 0..500 {
                    if index.claimed_by_others(store, node, asked) == Some(want.clone()) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!(
                    "index never answered {want:?}: {:?}",
                    index.claimed_by_others(store, node, asked)
                );
            }
        };
        wait_for(vec![ip("10.0.0.1"), ip("10.0.0.2")], "b").await;
        // A node's own addresses are not foreign to it.
        wait_for(vec![], "a").await;
        // Changes arrive through the watch: a new node, an address moved, a deletion.
        storage
            .create(nodes, None, node("c", &["10.0.0.3"], None))
            .await
            .unwrap();
        wait_for(asked.to_vec(), "b").await;
        storage
            .modify(nodes, None, "a", None, |v: &mut serde_json::Value| {
                v["status"] = node("a", &["10.0.0.9"], None)["status"].take();
                v["metadata"]["annotations"] = serde_json::json!({});
                Ok::<_, crate::storage::ObjectError>(())
            })
            .await
            .unwrap();
        wait_for(vec![ip("10.0.0.3")], "b").await;
        storage.delete(nodes, None, "c", None, None).await.unwrap();
        wait_for(vec![], "b").await;
    }
}
