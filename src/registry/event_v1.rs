//! Event in `events.k8s.io/v1`: the same objects as core/v1 Events (one etcd prefix, stored in
//! the core form, as upstream stores them), with upstream's field mapping between the versions.

use k8s_openapi::api::events::v1 as events;
use serde_json::{Map, Value, json};

use super::fields::typed;
use super::{NodeAccess, ResourceInfo};

/// `events.events.k8s.io`.
pub static EVENTS_V1: ResourceInfo = ResourceInfo {
    short_names: &["ev"],
    node_access: NodeAccess::Write,
    go_package: "events",
    type_check: typed::<events::Event>,
    schema: Some(super::schema::schema_of::<events::Event>),
    protobuf: Some("k8s.io.api.events.v1"),
    expires: true,
    to_storage: to_core,
    from_storage: from_core,
    ..ResourceInfo::stored(
        "events.k8s.io",
        "events",
        "event",
        "Event",
        true,
        "/registry/events",
    )
};

/// `(events.k8s.io/v1 field, core/v1 field)` pairs of upstream's conversion
/// (`Convert_v1_Event_To_core_Event`); the other fields have the same name in both.
const FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Renames the fields of [`FIELDS`]: to the core names when `to_core`, else back.
fn rename(obj: &mut Value, to_core: bool) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let mut moved = Map::new();
    for &(v1, core) in FIELDS {
        let (from, to) = if to_core { (v1, core) } else { (core, v1) };
        if let Some(v) = map.remove(from) {
            moved.insert(to.to_string(), v);
        }
    }
    map.extend(moved);
}

/// events.k8s.io/v1 → the stored core/v1 form.
fn to_core(obj: &mut Value) {
    rename(obj, true);
    obj["apiVersion"] = json!("v1");
    obj["kind"] = json!("Event");
}

/// Stored core/v1 → events.k8s.io/v1.
fn from_core(obj: &mut Value) {
    rename(obj, false);
    obj["apiVersion"] = json!("events.k8s.io/v1");
    obj["kind"] = json!("Event");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node", "name": "n1"}, "message": "m", "reason": "R",
            "count": 3, "source": {"component": "c"}, "reportingComponent": "rc",
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z"});
        let mut v1 = core.clone();
        from_core(&mut v1);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["regarding"]["name"], "n1");
        assert_eq!(v1["note"], "m");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["reportingController"], "rc");
        assert!(v1.get("involvedObject").is_none() && v1.get("message").is_none());
        let mut back = v1.clone();
        to_core(&mut back);
        assert_eq!(back, core);
    }
}
