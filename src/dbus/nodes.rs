//! `io.rke2.Nodes1`: list, inspect, cordon, label, taint and delete nodes, and the
//! `NodeAdded`/`NodeRemoved`/`NodeReadyChanged` signals fed by an etcd watch on the Node
//! objects. Methods are thin wrappers over [`crate::cluster::admin`]; mutations are root only.

use std::time::Duration;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use super::errors::BusError;
use super::{SERVER_PATH, require_root};
use crate::cluster::admin::{self, NodeSummary};
use crate::cluster::context::Ctx;
use crate::datastore::{Change, DatastoreError};
use crate::registry::NODES;

/// `io.rke2.Nodes1` of a server.
#[derive(Debug, Clone)]
pub struct Nodes {
    ctx: Ctx,
}

impl Nodes {
    pub fn new(ctx: Ctx) -> Self {
        Nodes { ctx }
    }
}

/// Nodes of the cluster. A node is the struct (ssbasssssa{ss}as): name, Ready condition status
/// ("True", "False", "Unknown" or ""), cordoned, roles, internal IP, version, creation time
/// (RFC 3339), etcd member ("" for agents), labels, taints ("key[=value]:Effect").
/// Errors: io.rke2.Error.{NotFound, InvalidArgument, AccessDenied, NotReady, Conflict, Failed}.
/// Every method but ListNodes and GetNode is root only.
#[interface(name = "io.rke2.Nodes1")]
impl Nodes {
    /// All nodes, sorted by name. Each is (name, Ready condition status "True"/"False"/
    /// "Unknown"/"", cordoned, roles, internal IP, version, created (RFC 3339), etcd member
    /// ("" for agents), labels, taints "key[=value]:Effect").
    async fn list_nodes(&self) -> Result<Vec<NodeSummary>, BusError> {
        Ok(admin::list_nodes(&self.ctx).await?)
    }

    /// One node by name, as in ListNodes.
    async fn get_node(&self, name: String) -> Result<NodeSummary, BusError> {
        Ok(admin::get_node(&self.ctx, &name).await?)
    }

    /// Marks a node unschedulable (spec.unschedulable).
    async fn cordon_node(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<(), BusError> {
        let uid = require_root(conn, &hdr, "CordonNode").await?;
        admin::set_unschedulable(&self.ctx, &name, true).await?;
        tracing::info!(component = "dbus", uid, node = %name, "node cordoned");
        Ok(())
    }

    /// Makes a node schedulable again.
    async fn uncordon_node(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<(), BusError> {
        let uid = require_root(conn, &hdr, "UncordonNode").await?;
        admin::set_unschedulable(&self.ctx, &name, false).await?;
        tracing::info!(component = "dbus", uid, node = %name, "node uncordoned");
        Ok(())
    }

    /// Sets ("key=value") or removes ("key-") labels; all are checked before any is applied.
    async fn label_node(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        labels: Vec<String>,
    ) -> Result<(), BusError> {
        let uid = require_root(conn, &hdr, "LabelNode").await?;
        admin::label_node(&self.ctx, &name, &labels).await?;
        tracing::info!(component = "dbus", uid, node = %name, "node labels changed: {labels:?}");
        Ok(())
    }

    /// Adds ("key[=value]:Effect", replacing the same key and effect) or removes ("key-",
    /// "key:Effect-") taints; all are checked before any is applied.
    async fn taint_node(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        taints: Vec<String>,
    ) -> Result<(), BusError> {
        let uid = require_root(conn, &hdr, "TaintNode").await?;
        admin::taint_node(&self.ctx, &name, &taints).await?;
        tracing::info!(component = "dbus", uid, node = %name, "node taints changed: {taints:?}");
        Ok(())
    }

    /// Deletes a node. A server node's etcd member is removed too (the last voting member is
    /// refused with io.rke2.Error.Conflict). Returns the removed etcd member, "" for agents.
    async fn delete_node(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<String, BusError> {
        let uid = require_root(conn, &hdr, "DeleteNode").await?;
        let member = admin::delete_node(&self.ctx, &name).await?;
        tracing::info!(component = "dbus", uid, node = %name, etcd_member = ?member, "node deleted");
        Ok(member.unwrap_or_default())
    }

    /// A node was registered.
    #[zbus(signal)]
    async fn node_added(emitter: &SignalEmitter<'_>, name: &str) -> zbus::Result<()>;

    /// A node was deleted.
    #[zbus(signal)]
    async fn node_removed(emitter: &SignalEmitter<'_>, name: &str) -> zbus::Result<()>;

    /// The status of a node's Ready condition changed ("True", "False" or "Unknown").
    #[zbus(signal)]
    async fn node_ready_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        ready: &str,
    ) -> zbus::Result<()>;
}

/// A node event to signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Added(String),
    Removed(String),
    ReadyChanged(String, String),
}

fn decode(value: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(value).ok()
}

/// The events one stored change means. A node created already Ready gives Added then
/// ReadyChanged; a heartbeat that changes nothing about readiness gives nothing.
pub fn node_events(change: &Change) -> Vec<NodeEvent> {
    match change {
        Change::Put { kv, prev, created } => {
            let Some(now) = decode(&kv.value) else {
                return vec![];
            };
            let name = now
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let before = prev.as_ref().and_then(|p| decode(&p.value));
            let mut events = Vec::new();
            if *created || before.is_none() {
                events.push(NodeEvent::Added(name.clone()));
            }
            let ready_now = admin::ready_status(&now);
            let ready_before = before.as_ref().and_then(admin::ready_status);
            if let Some(r) = ready_now
                && ready_before.as_ref() != Some(&r)
            {
                events.push(NodeEvent::ReadyChanged(name, r));
            }
            events
        }
        Change::Delete { key, prev, .. } => {
            let name = prev
                .as_ref()
                .and_then(|p| decode(&p.value))
                .and_then(|v| {
                    v.pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| key.rsplit('/').next().unwrap_or_default().to_string());
            vec![NodeEvent::Removed(name)]
        }
    }
}

/// Watches the Node objects and emits the signals, resuming after the last seen revision when
/// the watch breaks. Returns when emitting fails (the connection is gone).
pub async fn emit_node_signals(ctx: Ctx, conn: Connection) {
    let Ok(emitter) = SignalEmitter::new(&conn, SERVER_PATH) else {
        return;
    };
    let prefix = NODES.list_prefix(None);
    let mut start = 0i64;
    loop {
        if let Some(store) = ctx.store.get().cloned()
            && let Ok(mut stream) = store.watch(&prefix, start).await
        {
            loop {
                let (changes, rev) = match stream.next().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(DatastoreError::Compacted { .. }) => {
                        // Missed changes cannot be replayed; carry on from now.
                        start = 0;
                        break;
                    }
                    Err(_) => break,
                };
                for change in &changes {
                    for event in node_events(change) {
                        let sent = match &event {
                            NodeEvent::Added(n) => Nodes::node_added(&emitter, n).await,
                            NodeEvent::Removed(n) => Nodes::node_removed(&emitter, n).await,
                            NodeEvent::ReadyChanged(n, r) => {
                                Nodes::node_ready_changed(&emitter, n, r).await
                            }
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                }
                if rev > 0 {
                    start = rev + 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::Stored;
    use serde_json::json;

    fn stored(v: serde_json::Value) -> Stored {
        Stored {
            key: "/registry/minions/a1".into(),
            value: serde_json::to_vec(&v).unwrap().into(),
            mod_revision: 2,
            create_revision: 1,
        }
    }

    fn node(ready: Option<&str>) -> serde_json::Value {
        let mut n = json!({"metadata": {"name": "a1"}});
        if let Some(r) = ready {
            n["status"] = json!({"conditions": [{"type": "Ready", "status": r}]});
        }
        n
    }

    #[test]
    fn changes_become_node_events() {
        let created = Change::Put {
            kv: stored(node(Some("True"))),
            prev: None,
            created: true,
        };
        assert_eq!(
            node_events(&created),
            vec![
                NodeEvent::Added("a1".into()),
                NodeEvent::ReadyChanged("a1".into(), "True".into())
            ]
        );
        let heartbeat = Change::Put {
            kv: stored(node(Some("True"))),
            prev: Some(stored(node(Some("True")))),
            created: false,
        };
        assert!(node_events(&heartbeat).is_empty());
        let lost = Change::Put {
            kv: stored(node(Some("Unknown"))),
            prev: Some(stored(node(Some("True")))),
            created: false,
        };
        assert_eq!(
            node_events(&lost),
            vec![NodeEvent::ReadyChanged("a1".into(), "Unknown".into())]
        );
        let deleted = Change::Delete {
            key: "/registry/minions/a1".into(),
            prev: None,
            revision: 3,
        };
        assert_eq!(node_events(&deleted), vec![NodeEvent::Removed("a1".into())]);
    }
}
