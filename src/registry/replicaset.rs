//! ReplicaSet (apps/v1, namespaced): `replicas` defaults to 1, the selector must select the
//! template and never changes, `scale` and `status` subresources, upstream's table columns.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{Value, json};

use super::ResourceInfo;
use super::fields::{FieldCause, typed};
use super::print::*;
use super::workload;

/// `replicasets`.
pub static REPLICA_SETS: ResourceInfo = ResourceInfo {
    short_names: &["rs"],
    categories: &["all"],
    subresources: &["status", "scale"],
    type_check: typed::<apps::ReplicaSet>,
    schema: Some(super::schema::schema_of::<apps::ReplicaSet>),
    list_strategies: super::workload::LIST_STRATEGIES,
    lists: &[super::schema::conditions(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
    )],
    validate: workload::validate_spec,
    tracks_generation: true,
    on_create,
    on_update,
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    go_package: "apps",
    protobuf: Some(super::protobuf::APPS_V1),
    ..ResourceInfo::stored(
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        "/registry/replicasets",
    )
};

fn on_create(obj: &mut Value) {
    workload::default_spec(obj, "replicas", json!(1));
    workload::default_template(obj);
    obj["status"] = json!({"replicas": 0});
}

fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    workload::default_spec(new, "replicas", json!(1));
    workload::default_template(new);
    workload::selector_immutable(old, new, causes);
}

const COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "Number of desired pods."),
    col("Current", "Number of actual replicas."),
    col("Ready", "Number of ready replicas."),
    AGE,
    wide(col(
        "Containers",
        "Names of each container in the template.",
    )),
    wide(col(
        "Images",
        "Images referenced by each container in the template.",
    )),
    wide(col(
        "Selector",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
    )),
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let [containers, images, selector] = workload::wide_cells(obj);
    vec![
        name(obj).into(),
        int(obj, "/spec/replicas").into(),
        int(obj, "/status/replicas").into(),
        int(obj, "/status/readyReplicas").into(),
        age(obj, now).into(),
        containers,
        images,
        selector,
    ]
}
