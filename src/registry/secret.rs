//! Secret (core/v1, namespaced): key and size rules, type-specific keys, `stringData` folded
//! into `data`, immutable type and (when `immutable`) data.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};

use super::fields::*;
use super::print::*;
use super::{NodeAccess, ResourceInfo};

/// `secrets`.
pub static SECRETS: ResourceInfo = ResourceInfo {
    type_check: typed::<core::Secret>,
    schema: Some(super::schema::schema_of::<core::Secret>),
    validate: validate_secret,
    on_create: default_secret,
    on_update,
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    field_selectors: &["type"],
    node_access: NodeAccess::Hidden,
    protobuf: Some(super::protobuf::CORE_V1),
    ..ResourceInfo::stored("", "secrets", "secret", "Secret", true, "/registry/secrets")
};

fn validate_secret(body: &Value, causes: &mut Vec<FieldCause>) {
    let data = body.get("data").and_then(Value::as_object);
    let string_data = body.get("stringData").and_then(Value::as_object);
    let mut total = 0usize;
    for (field, map, decoded) in [("data", data, true), ("stringData", string_data, false)] {
        for (k, v) in map.into_iter().flatten() {
            if let Err(e) = validate_config_key(k) {
                causes.push(invalid_value(format!("{field}[{k}]"), k, e));
            }
            let s = v.as_str().unwrap_or_default();
            total += k.len() + if decoded { base64_len(s) } else { s.len() };
        }
    }
    if total > MAX_DATA_BYTES {
        causes.push(cause(
            "data",
            format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        ));
    }
    let has = |k: &str| {
        data.is_some_and(|m| m.contains_key(k)) || string_data.is_some_and(|m| m.contains_key(k))
    };
    let required: &[&str] = match body.get("type").and_then(Value::as_str).unwrap_or_default() {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/basic-auth" => {
            if !has("username") && !has("password") {
                causes.push(cause(
                    "data[username]",
                    "Required value: either username or password must be provided",
                ));
            }
            &[]
        }
        "kubernetes.io/service-account-token" => {
            let named = meta(body)
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !named {
                causes.push(cause(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "Required value",
                ));
            }
            &[]
        }
        _ => &[],
    };
    for k in required {
        if !has(k) {
            causes.push(cause(format!("data[{k}]"), "Required value"));
        }
    }
}

/// `stringData` is write-only: its entries overwrite `data` (base64-encoded), and `type`
/// defaults to `Opaque` (upstream conversion and defaulting).
fn default_secret(obj: &mut Value) {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        if let Some(Value::Object(data)) = obj.get_mut("data") {
            for (k, v) in sd {
                let s = v.as_str().unwrap_or_default();
                data.insert(k, Value::String(B64.encode(s)));
            }
        }
    }
    let typed = obj
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !typed {
        obj["type"] = json!("Opaque");
    }
}

/// `type` never changes; data is frozen once `immutable` is set.
fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    default_secret(new);
    let (ot, nt) = (
        old.get("type").and_then(Value::as_str).unwrap_or("Opaque"),
        new.get("type").and_then(Value::as_str).unwrap_or_default(),
    );
    if ot != nt {
        causes.push(invalid_value("type", nt, "field is immutable"));
    }
    check_immutable_data(old, new, &["data"], causes);
}

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col(
        "Data",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

// Upstream sends the key counts as integers although the column says "string".
fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        text(obj, "/type").into(),
        (object_len(obj, "/data") as i64).into(),
        age(obj, now).into(),
    ]
}
