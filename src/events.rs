//! The event recorder: core/v1 Events (also served as events.k8s.io/v1) for what the server's
//! components do, shaped like client-go's recorder writes them (`source`, `reportingComponent`,
//! `firstTimestamp`/`lastTimestamp`, `count`). Events about the same object with the same
//! type, reason, message and source are one Event whose `count` and `lastTimestamp` grow. The
//! Event's name is derived from that identity (`<object>.<hash>`, the shape of client-go's
//! `<object>.<hex>` names), so finding the earlier occurrence is one read by name, however many
//! Events the namespace holds, and it holds across restarts and leader changes. Every write goes through
//! [`Storage::with_ttl`], so an Event expires `event-ttl` after its last update (an etcd lease,
//! as upstream). Any subsystem with the datastore can build a recorder with
//! [`EventRecorder::new`]; failures are returned, never retried here.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::datastore::StoreCell;
use crate::datastore::{Datastore, DatastoreError};
use crate::registry::{EVENTS, ResourceInfo};
use crate::storage::{ObjectError, Storage};

/// Where Events about cluster-scoped objects (nodes) are kept, as upstream keeps them.
pub const CLUSTER_SCOPED_EVENT_NAMESPACE: &str = "default";

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What an Event is about (`involvedObject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: String,
}

impl ObjectRef {
    /// A reference to a stored object of `info`.
    pub fn of(info: &ResourceInfo, obj: &Value) -> ObjectRef {
        let meta = |k: &str| {
            obj.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        ObjectRef {
            kind: info.kind.to_string(),
            api_version: info.api_version(),
            name: meta("name"),
            namespace: Some(meta("namespace")).filter(|n| !n.is_empty()),
            uid: meta("uid"),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": self.kind, "apiVersion": self.api_version, "name": self.name,
        });
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if let Some(ns) = &self.namespace {
            v["namespace"] = json!(ns);
        }
        v
    }

    /// The namespace the Event lives in.
    fn event_namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(CLUSTER_SCOPED_EVENT_NAMESPACE)
    }
}

/// Records Events on behalf of one component of this server.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    store: StoreCell,
    component: String,
    host: String,
    ttl: Duration,
}

/// The Event's name: the object's name and a hash of the Event's identity (upstream's
/// aggregation key: the object, type, reason, message and source).
fn event_name(
    about: &ObjectRef,
    kind: EventType,
    reason: &str,
    message: &str,
    component: &str,
) -> String {
    let mut key = Vec::new();
    for part in [
        about.kind.as_str(),
        about.namespace.as_deref().unwrap_or_default(),
        about.name.as_str(),
        about.uid.as_str(),
        kind.as_str(),
        reason,
        message,
        component,
    ] {
        // Length-prefixed, so no two different identities share an encoding.
        key.extend_from_slice(&(part.len() as u64).to_le_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &key);
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}.{hex}", about.name)
}

impl EventRecorder {
    /// A recorder for `component` (`node-controller`, `etcd`, ...) on host `host`; Events live
    /// `ttl` after their last update.
    pub fn new(store: StoreCell, component: &str, host: &str, ttl: Duration) -> EventRecorder {
        EventRecorder {
            store,
            component: component.to_string(),
            host: host.to_string(),
            ttl,
        }
    }

    /// [`EventRecorder::new`] over a datastore that is already open.
    pub fn for_datastore(
        store: Datastore,
        component: &str,
        host: &str,
        ttl: Duration,
    ) -> EventRecorder {
        EventRecorder::new(
            std::sync::Arc::new(tokio::sync::OnceCell::new_with(Some(store))),
            component,
            host,
            ttl,
        )
    }

    fn storage(&self) -> Result<Storage, ObjectError> {
        self.store
            .get()
            .cloned()
            .map(|ds| Storage::new(ds).with_ttl(self.ttl))
            .ok_or_else(|| {
                ObjectError::Datastore(DatastoreError::Unavailable("datastore not ready".into()))
            })
    }

    /// Records an Event: a new one, or the matching one with `count` + 1 and a fresh
    /// `lastTimestamp` (and a fresh lifetime).
    pub async fn record(
        &self,
        about: &ObjectRef,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ObjectError> {
        self.write(about, kind, reason, message, true).await
    }

    /// Records an Event only if no matching one exists (for facts re-derived after a restart
    /// or a leader change, which must not count as new occurrences).
    pub async fn record_once(
        &self,
        about: &ObjectRef,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ObjectError> {
        self.write(about, kind, reason, message, false).await
    }

    async fn write(
        &self,
        about: &ObjectRef,
        kind: EventType,
        reason: &str,
        message: &str,
        count_repeats: bool,
    ) -> Result<(), ObjectError> {
        let store = self.storage()?;
        let ns = about.event_namespace();
        let name = event_name(about, kind, reason, message, &self.component);
        let stamp = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": about.to_json(),
            "reason": reason,
            "message": message,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": kind.as_str(),
            "eventTime": null,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        });
        // Two tries: an Event created (by another writer) between the create and the update,
        // or one that expired between them, is handled by the other branch on the second try.
        for _ in 0..2 {
            match store.create(&EVENTS, Some(ns), event.clone()).await {
                Ok(_) => return Ok(()),
                Err(ObjectError::AlreadyExists { .. }) if !count_repeats => return Ok(()),
                Err(ObjectError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            let counted = store
                .modify(&EVENTS, Some(ns), &name, None, |e| {
                    let count = e["count"].as_i64().unwrap_or(1);
                    e["count"] = json!(count + 1);
                    e["lastTimestamp"] = json!(stamp);
                    Ok(())
                })
                .await;
            match counted {
                Ok(_) => return Ok(()),
                Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`EventRecorder::record`], logging instead of returning a failure: for components whose
    /// work must not depend on the Event being written.
    pub async fn emit(&self, about: &ObjectRef, kind: EventType, reason: &str, message: &str) {
        if let Err(e) = self.record(about, kind, reason, message).await {
            tracing::debug!(component = %self.component, reason, "could not record an event: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::memory::MemoryStore;
    use crate::storage::ListOptions;

    fn recorder() -> (EventRecorder, Storage) {
        let cell: StoreCell = Default::default();
        let ds = Datastore::from_impl(MemoryStore::new());
        cell.set(ds.clone()).unwrap();
        (
            EventRecorder::new(cell, "node-controller", "s1", Duration::from_secs(3600)),
            Storage::new(ds),
        )
    }

    fn node_ref() -> ObjectRef {
        ObjectRef {
            kind: "Node".into(),
            api_version: "v1".into(),
            name: "n1".into(),
            namespace: None,
            uid: "u1".into(),
        }
    }

    async fn events(store: &Storage) -> Vec<Value> {
        store
            .list(&EVENTS, Some("default"), &ListOptions::default())
            .await
            .unwrap()
            .items
    }

    #[tokio::test]
    async fn repeats_are_counted_on_one_event() {
        let (rec, store) = recorder();
        let n = node_ref();
        rec.record(
            &n,
            EventType::Normal,
            "NodeReady",
            "Node n1 status is now: NodeReady",
        )
        .await
        .unwrap();
        rec.record(
            &n,
            EventType::Normal,
            "NodeReady",
            "Node n1 status is now: NodeReady",
        )
        .await
        .unwrap();
        let evs = events(&store).await;
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0]["count"], 2);
        assert_eq!(evs[0]["involvedObject"]["name"], "n1");
        assert_eq!(evs[0]["source"]["component"], "node-controller");
        assert!(
            evs[0]["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("n1.")
        );
        // A different reason is a different Event; record_once does not count repeats.
        rec.record(
            &n,
            EventType::Normal,
            "NodeNotReady",
            "Node n1 status is now: NodeNotReady",
        )
        .await
        .unwrap();
        rec.record_once(
            &n,
            EventType::Normal,
            "NodeReady",
            "Node n1 status is now: NodeReady",
        )
        .await
        .unwrap();
        let evs = events(&store).await;
        assert_eq!(evs.len(), 2);
        let ready = evs.iter().find(|e| e["reason"] == "NodeReady").unwrap();
        assert_eq!(ready["count"], 2);
    }

    #[tokio::test]
    async fn a_new_recorder_counts_on_the_earlier_event() {
        // A restart or a leader change brings a new recorder: the repeat still lands on the
        // Event the old one wrote, found by name among many others.
        let (first, store) = recorder();
        for i in 0..50 {
            let mut other = node_ref();
            other.name = format!("other{i}");
            first
                .record(&other, EventType::Normal, "NodeReady", "ready")
                .await
                .unwrap();
        }
        first
            .record(&node_ref(), EventType::Warning, "Rebooted", "n1 rebooted")
            .await
            .unwrap();
        let second = EventRecorder::for_datastore(
            store.datastore().clone(),
            "node-controller",
            "s2",
            Duration::from_secs(3600),
        );
        second
            .record(&node_ref(), EventType::Warning, "Rebooted", "n1 rebooted")
            .await
            .unwrap();
        let evs = events(&store).await;
        assert_eq!(evs.len(), 51);
        let rebooted: Vec<_> = evs.iter().filter(|e| e["reason"] == "Rebooted").collect();
        assert_eq!(rebooted.len(), 1);
        assert_eq!(rebooted[0]["count"], 2);
    }
}
