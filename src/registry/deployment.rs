//! Deployment (apps/v1, namespaced): upstream's defaults (1 replica, RollingUpdate 25%/25%,
//! revisionHistoryLimit 10, progressDeadlineSeconds 600), the selector rules shared with
//! ReplicaSets, `scale` and `status` subresources, upstream's table columns.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::{Value, json};

use super::ResourceInfo;
use super::fields::{FieldCause, cause, typed};
use super::print::*;
use super::workload;

/// `deployments`.
pub static DEPLOYMENTS: ResourceInfo = ResourceInfo {
    short_names: &["deploy"],
    categories: &["all"],
    subresources: &["status", "scale"],
    type_check: typed::<apps::Deployment>,
    schema: Some(super::schema::schema_of::<apps::Deployment>),
    list_strategies: super::workload::LIST_STRATEGIES,
    lists: &[super::schema::conditions(
        "io.k8s.api.apps.v1.DeploymentStatus",
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
        "deployments",
        "deployment",
        "Deployment",
        true,
        "/registry/deployments",
    )
};

fn defaults(obj: &mut Value) {
    workload::default_spec(obj, "replicas", json!(1));
    workload::default_spec(obj, "revisionHistoryLimit", json!(10));
    workload::default_spec(obj, "progressDeadlineSeconds", json!(600));
    workload::default_spec(obj, "strategy", json!({}));
    if let Some(strategy) = obj
        .pointer_mut("/spec/strategy")
        .and_then(Value::as_object_mut)
    {
        let kind = strategy
            .entry("type")
            .or_insert(json!("RollingUpdate"))
            .clone();
        if kind == "RollingUpdate" {
            let ru = strategy.entry("rollingUpdate").or_insert(json!({}));
            if let Some(ru) = ru.as_object_mut() {
                ru.entry("maxUnavailable").or_insert(json!("25%"));
                ru.entry("maxSurge").or_insert(json!("25%"));
            }
        }
    }
    workload::default_template(obj);
}

fn on_create(obj: &mut Value) {
    defaults(obj);
    obj["status"] = json!({});
}

fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    defaults(new);
    workload::selector_immutable(old, new, causes);
}

/// An int-or-percent that is zero (`0`, `"0%"`).
fn is_zero(v: &Value) -> bool {
    v.as_i64() == Some(0) || v.as_str().is_some_and(|s| s.trim_end_matches('%') == "0")
}

fn validate(body: &Value, causes: &mut Vec<FieldCause>) {
    workload::validate_spec(body, causes);
    let strategy = &body["spec"]["strategy"];
    match text(strategy, "/type") {
        "" | "RollingUpdate" => {
            let ru = &strategy["rollingUpdate"];
            if ru.is_object()
                && ru.get("maxSurge").is_some_and(is_zero)
                && ru.get("maxUnavailable").is_some_and(is_zero)
            {
                causes.push(cause(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "Invalid value: 0: may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        "Recreate" => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                causes.push(cause(
                    "spec.strategy.rollingUpdate",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        other => causes.push(cause(
            "spec.strategy.type",
            format!(
                "Unsupported value: \"{other}\": supported values: \"Recreate\", \"RollingUpdate\""
            ),
        )),
    }
}

const COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
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
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
    )),
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let [containers, images, selector] = workload::wide_cells(obj);
    vec![
        name(obj).into(),
        format!(
            "{}/{}",
            int(obj, "/status/readyReplicas"),
            int(obj, "/spec/replicas")
        )
        .into(),
        int(obj, "/status/updatedReplicas").into(),
        int(obj, "/status/availableReplicas").into(),
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
    fn defaults_like_upstream() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        on_create(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut causes = Vec::new();
        validate(&d, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": 0, "maxUnavailable": "0%"});
        validate(&d, &mut causes);
        assert_eq!(causes.len(), 1);
    }
}
