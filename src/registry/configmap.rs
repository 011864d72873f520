//! ConfigMap (core/v1, namespaced): key and size rules, data frozen once `immutable` is set.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::fields::*;
use super::print::*;
use super::{NodeAccess, ResourceInfo};

/// `configmaps`.
pub static CONFIGMAPS: ResourceInfo = ResourceInfo {
    short_names: &["cm"],
    type_check: typed::<core::ConfigMap>,
    schema: Some(super::schema::schema_of::<core::ConfigMap>),
    validate: validate_configmap,
    on_update,
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    // Nodes read only the ConfigMaps their pods reference (crate::apiserver::authz).
    node_access: NodeAccess::Hidden,
    protobuf: Some(super::protobuf::CORE_V1),
    ..ResourceInfo::stored(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        "/registry/configmaps",
    )
};

fn validate_configmap(body: &Value, causes: &mut Vec<FieldCause>) {
    let data = body.get("data").and_then(Value::as_object);
    let binary = body.get("binaryData").and_then(Value::as_object);
    let mut total = 0usize;
    for (k, v) in data.into_iter().flatten() {
        if let Err(e) = validate_config_key(k) {
            causes.push(invalid_value(format!("data[{k}]"), k, e));
        }
        total += v.as_str().map_or(0, str::len);
    }
    for (k, v) in binary.into_iter().flatten() {
        if let Err(e) = validate_config_key(k) {
            causes.push(invalid_value(format!("binaryData[{k}]"), k, e));
        }
        if data.is_some_and(|d| d.contains_key(k)) {
            causes.push(invalid_value(
                format!("data[{k}]"),
                k,
                "duplicate of key present in binaryData",
            ));
        }
        total += base64_len(v.as_str().unwrap_or_default());
    }
    if total > MAX_DATA_BYTES {
        causes.push(cause(
            "data",
            format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
}

fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    check_immutable_data(old, new, &["data", "binaryData"], causes);
}

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Data",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        ((object_len(obj, "/data") + object_len(obj, "/binaryData")) as i64).into(),
        age(obj, now).into(),
    ]
}
