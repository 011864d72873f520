//! Writes core/v1 Events about objects for the scheduler and the taint manager, in the shape
//! `kubectl describe` and `kubectl get events` read (`involvedObject`, `source`, first/last
//! timestamps, `count`). One function, so a shared event recorder can replace it later.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::registry::EVENTS;
use crate::storage::ObjectError;
use crate::storage::Storage;

/// `Normal` or `Warning`, as upstream's event types.
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

/// Records one event about `object` (any stored object with apiVersion, kind and metadata).
pub async fn record(
    store: &Storage,
    object: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
    component: &str,
) -> Result<(), ObjectError> {
    let text = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let now = Utc::now();
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let namespace = match text("/metadata/namespace") {
        "" => "default",
        ns => ns,
    };
    let nanos = now.timestamp_nanos_opt().unwrap_or_default();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        // Upstream names events `<object>.<unix nanos in hex>`.
        "metadata": {"name": format!("{}.{nanos:x}", text("/metadata/name")), "namespace": namespace},
        "involvedObject": {
            "apiVersion": text("/apiVersion"),
            "kind": text("/kind"),
            "namespace": text("/metadata/namespace"),
            "name": text("/metadata/name"),
            "uid": text("/metadata/uid"),
            "resourceVersion": text("/metadata/resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": event_type.as_str(),
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    store
        .create(&EVENTS, Some(namespace), event)
        .await
        .map(|_| ())
}
