//! The event recorder: core/v1 Events (also served as events.k8s.io/v1) for what the server's
//! components do, shaped like client-go's recorder writes them (`source`, `reportingComponent`,
//! `firstTimestamp`/`lastTimestamp`, `count`). Events about the same object with the same
//! type, reason, message and source are one Event whose `count` and `lastTimestamp` grow (the
//! lookup is in etcd, so it holds across restarts and leader changes). Every write goes through
//! [`Storage::with_ttl`], so an Event expires `event-ttl` after its last update (an etcd lease,
//! as upstream). Any subsystem with the datastore can build a recorder with
//! [`EventRecorder::new`]; failures are returned, never retried here.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::datastore::DatastoreError;
use crate::datastore::StoreCell;
use crate::registry::{EVENTS, ResourceInfo};
use crate::storage::{ListOptions, ObjectError, Storage};

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

/// The identity of an Event for deduplication (upstream's aggregation key).
fn same_event(
    ev: &Value,
    regarding: &Value,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) -> bool {
    let io = &ev["involvedObject"];
    ["kind", "name", "namespace", "uid"]
        .iter()
        .all(|k| io.get(*k) == regarding.get(*k))
        && ev["type"] == kind
        && ev["reason"] == reason
        && ev["message"] == message
        && ev["source"]["component"] == component
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

    fn storage(&self) -> Result<Storage, ObjectError> {
        self.store
            .get()
            .cloned()
            .map(|ds| Storage::new(ds).with_ttl(self.ttl))
            .ok_or_else(|| {
                ObjectError::Datastore(DatastoreError::Unavailable("datastore not ready".into()))
            })
    }

    /// The stored Event matching this one, if any.
    async fn existing(
        &self,
        store: &Storage,
        ns: &str,
        regarding: &Value,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Option<Value>, ObjectError> {
        let events = store
            .list(&EVENTS, Some(ns), &ListOptions::default())
            .await?;
        Ok(events.items.into_iter().find(|ev| {
            same_event(
                ev,
                regarding,
                kind.as_str(),
                reason,
                message,
                &self.component,
            )
        }))
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
        let regarding = about.to_json();
        let now = Utc::now();
        let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        if let Some(ev) = self
            .existing(&store, ns, &regarding, kind, reason, message)
            .await?
        {
            if !count_repeats {
                return Ok(());
            }
            let name = ev["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let result = store
                .modify(&EVENTS, Some(ns), &name, None, |e| {
                    let count = e["count"].as_i64().unwrap_or(1);
                    e["count"] = json!(count + 1);
                    e["lastTimestamp"] = json!(stamp);
                    Ok(())
                })
                .await;
            // An Event that expired between the lookup and the update is recorded anew.
            match result {
                Ok(_) => return Ok(()),
                Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // client-go's name: the object's name and the time in hex nanoseconds.
        let name = format!(
            "{}.{:x}",
            about.name,
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": regarding,
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
        store.create(&EVENTS, Some(ns), event).await?;
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
    use crate::datastore::Datastore;
    use crate::datastore::memory::MemoryStore;

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
}
