//! DaemonSet (apps/v1, namespaced): upstream's defaults (RollingUpdate with `maxUnavailable: 1`,
//! `maxSurge: 0`, revisionHistoryLimit 10), the selector rules shared with the other apps/v1
//! workloads, a `status` subresource and upstream's table columns.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{Value, json};

use super::ResourceInfo;
use super::fields::{FieldCause, cause, typed};
use super::print::*;
use super::workload;

/// `daemonsets`.
pub static DAEMON_SETS: ResourceInfo = ResourceInfo {
    short_names: &["ds"],
    categories: &["all"],
    subresources: &["status"],
    type_check: typed::<apps::DaemonSet>,
    schema: Some(super::schema::schema_of::<apps::DaemonSet>),
    list_strategies: super::workload::LIST_STRATEGIES,
    lists: &[super::schema::conditions(
        "io.k8s.api.apps.v1.DaemonSetStatus",
    )],
    validate,
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
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        "/registry/daemonsets",
    )
};

fn defaults(obj: &mut Value) {
    workload::default_spec(obj, "revisionHistoryLimit", json!(10));
    workload::default_spec(obj, "updateStrategy", json!({}));
    if let Some(strategy) = obj
        .pointer_mut("/spec/updateStrategy")
        .and_then(Value::as_object_mut)
    {
        let kind = strategy
            .entry("type")
            .or_insert(json!("RollingUpdate"))
            .clone();
        if kind == "RollingUpdate" {
            let ru = strategy.entry("rollingUpdate").or_insert(json!({}));
            if let Some(ru) = ru.as_object_mut() {
                ru.entry("maxUnavailable").or_insert(json!(1));
                ru.entry("maxSurge").or_insert(json!(0));
            }
        }
    }
    workload::default_template(obj);
}

fn on_create(obj: &mut Value) {
    defaults(obj);
    obj["status"] = json!({
        "currentNumberScheduled": 0,
        "desiredNumberScheduled": 0,
        "numberMisscheduled": 0,
        "numberReady": 0,
    });
}

fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    defaults(new);
    workload::selector_immutable(old, new, causes);
}

fn validate(body: &Value, causes: &mut Vec<FieldCause>) {
    workload::validate_spec(body, causes);
    let strategy = &body["spec"]["updateStrategy"];
    match text(strategy, "/type") {
        "" | "RollingUpdate" | "OnDelete" => {}
        other => causes.push(cause(
            "spec.updateStrategy.type",
            format!(
                "Unsupported value: \"{other}\": supported values: \"OnDelete\", \"RollingUpdate\""
            ),
        )),
    }
}

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    col(
        "Current",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    col(
        "Ready",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    col(
        "Node Selector",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
    ),
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
        "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    )),
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let [containers, images, selector] = workload::wide_cells(obj);
    vec![
        name(obj).into(),
        int(obj, "/status/desiredNumberScheduled").into(),
        int(obj, "/status/currentNumberScheduled").into(),
        int(obj, "/status/numberReady").into(),
        int(obj, "/status/updatedNumberScheduled").into(),
        int(obj, "/status/numberAvailable").into(),
        format_labels(obj.pointer("/spec/template/spec/nodeSelector")).into(),
        age(obj, now).into(),
        containers,
        images,
        selector,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_cells_like_upstream() {
        let mut d = json!({"metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"nodeSelector": {"role": "edge", "disk": "ssd"},
                                  "containers": [{"name": "c", "image": "x:1"}]}}}});
        on_create(&mut d);
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        let mut causes = Vec::new();
        validate(&d, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        d["spec"]["updateStrategy"]["type"] = json!("Sometimes");
        validate(&d, &mut causes);
        assert_eq!(causes.len(), 1);
        let row = cells(&d, Utc::now());
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(row[6], "disk=ssd,role=edge");
    }
}
