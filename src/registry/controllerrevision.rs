//! ControllerRevision (apps/v1, namespaced): an immutable snapshot of a workload's template
//! (`data`) with its `revision` number, kept by the DaemonSet controller so `kubectl rollout
//! history|undo ds` can read old templates. Upstream's validation (revision not negative, data
//! required and immutable) and table columns (`NAME CONTROLLER REVISION AGE`).

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1 as apps;
use serde_json::Value;

use super::ResourceInfo;
use super::fields::{FieldCause, cause, typed};
use super::print::*;

/// `controllerrevisions`.
pub static CONTROLLER_REVISIONS: ResourceInfo = ResourceInfo {
    type_check: typed::<apps::ControllerRevision>,
    schema: Some(super::schema::schema_of::<apps::ControllerRevision>),
    validate,
    on_update,
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    go_package: "apps",
    ..ResourceInfo::stored(
        "apps",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        true,
        "/registry/controllerrevisions",
    )
};

fn validate(body: &Value, causes: &mut Vec<FieldCause>) {
    if let Some(n) = body.get("revision").and_then(Value::as_i64)
        && n < 0
    {
        causes.push(cause(
            "revision",
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
    if body.get("data").is_none_or(Value::is_null) {
        causes.push(cause("data", "Required value: data is mandatory"));
    }
}

fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    if old.get("data") != new.get("data") {
        causes.push(cause("data", "Invalid value: field is immutable"));
    }
}

const COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "Controller of the object"),
    col(
        "Revision",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

/// Upstream's CONTROLLER cell: `<kind>.<group>/<name>` of the controlling owner.
fn controller_cell(obj: &Value) -> String {
    list(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r["controller"] == true)
        .map_or_else(
            || "<none>".to_string(),
            |r| {
                let kind = text(r, "/kind").to_lowercase();
                let name = text(r, "/name");
                match text(r, "/apiVersion").split_once('/') {
                    Some((group, _)) => format!("{kind}.{group}/{name}"),
                    None => format!("{kind}/{name}"),
                }
            },
        )
}

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        controller_cell(obj).into(),
        int(obj, "/revision").into(),
        age(obj, now).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_and_cells_like_upstream() {
        let rev = json!({"metadata": {"name": "x-abc", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "uid": "u", "controller": true}]},
            "data": {"spec": {"template": {"$patch": "replace"}}}, "revision": 2});
        let mut causes = Vec::new();
        validate(&rev, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let row = cells(&rev, Utc::now());
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(row[1], "daemonset.apps/x");
        assert_eq!(row[2], 2);

        let mut bad = rev.clone();
        bad["revision"] = json!(-1);
        bad.as_object_mut().unwrap().remove("data");
        validate(&bad, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["revision", "data"]);

        let mut changed = rev.clone();
        changed["data"] = json!({});
        let mut causes = Vec::new();
        on_update(&rev, &mut changed, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            cells(&json!({"metadata": {"name": "y"}}), Utc::now())[1],
            "<none>"
        );
    }
}
