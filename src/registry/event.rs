//! Event (core/v1, namespaced): its field selectors and `kubectl get events` columns.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::fields::typed;
use super::print::*;
use super::{NodeAccess, ResourceInfo};

/// `events`.
pub static EVENTS: ResourceInfo = ResourceInfo {
    short_names: &["ev"],
    node_access: NodeAccess::Write,
    expires: true,
    type_check: typed::<core::Event>,
    schema: Some(super::schema::schema_of::<core::Event>),
    printer: Printer {
        columns: COLUMNS,
        cells: event_cells,
        conditions: no_conditions,
    },
    field_selectors: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
    protobuf: Some(super::protobuf::CORE_V1),
    ..ResourceInfo::stored("", "events", "event", "Event", true, "/registry/events")
};

const COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "The object that this event is about."),
    wide(col(
        "Subobject",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    )),
    wide(col(
        "Source",
        "The component reporting this event. Should be a short machine understandable string.",
    )),
    col(
        "Message",
        "A human-readable description of the status of this operation.",
    ),
    wide(col(
        "First Seen",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    )),
    wide(col("Count", "The number of times this event has occurred.")),
    Column {
        priority: 1,
        ..NAME
    },
];

fn event_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first = match timestamp(ev.get("firstTimestamp")) {
        Some(t) => since(Some(t), now),
        // Events from the events.k8s.io API only carry eventTime.
        None => since(timestamp(ev.get("eventTime")), now),
    };
    let mut last = match timestamp(ev.get("lastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(ev, "/count");
    if let Some(series) = ev.get("series").filter(|s| s.is_object()) {
        last = since(timestamp(series.get("lastObservedTime")), now);
        count = int(series, "/count");
    } else if count == 0 {
        // Singleton events have no count in the new API.
        count = 1;
    }
    let kind = text(ev, "/involvedObject/kind").to_lowercase();
    let target = match text(ev, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    // Source: component (or reportingComponent), then ", host" (or reportingInstance).
    let component = match text(ev, "/source/component") {
        "" => text(ev, "/reportingComponent"),
        c => c,
    };
    let host = match text(ev, "/source/host") {
        "" => text(ev, "/reportingInstance"),
        h => h,
    };
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        last.into(),
        text(ev, "/type").into(),
        text(ev, "/reason").into(),
        target.into(),
        text(ev, "/involvedObject/fieldPath").into(),
        source.into(),
        text(ev, "/message").trim().into(),
        first.into(),
        count.into(),
        name(ev).into(),
    ]
}
