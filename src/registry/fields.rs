//! Helpers shared by the kind declarations: field causes of `Invalid` errors, metadata access,
//! the default hooks a kind gets unless it declares its own, and rules several kinds share
//! (config keys, `immutable` data).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::validation::validate_dns_subdomain;

/// One field-level cause of an `Invalid` (422) error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCause {
    /// JSON path of the field, e.g. `metadata.labels` or `spec.taints[0].effect`.
    pub field: String,
    pub message: String,
}

/// Upstream's limit on the data of one Secret or ConfigMap (`MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

pub fn meta(v: &Value) -> Option<&Map<String, Value>> {
    v.get("metadata").and_then(Value::as_object)
}

pub fn meta_str<'a>(v: &'a Value, key: &str) -> &'a str {
    meta(v)
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn cause(field: impl Into<String>, message: impl Into<String>) -> FieldCause {
    FieldCause {
        field: field.into(),
        message: message.into(),
    }
}

pub fn invalid_value(
    field: impl Into<String>,
    value: &str,
    why: impl std::fmt::Display,
) -> FieldCause {
    cause(field, format!("Invalid value: \"{value}\": {why}"))
}

pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Just made sure it is an object.
        _ => unreachable!("metadata is an object"),
    }
}

pub fn ensure_object(obj: &mut Value) {
    if !obj.is_object() {
        *obj = json!({});
    }
}

/// Deserializes the body into the typed `k8s-openapi` struct `T`, for type errors only.
pub fn typed<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<(), String> {
    T::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

/// Type check of a kind without a typed model: only the structural checks apply.
pub fn untyped(_: &Value) -> Result<(), String> {
    Ok(())
}

/// Name rule of most kinds: a DNS subdomain.
pub fn dns_subdomain_name(name: &str) -> Result<(), String> {
    validate_dns_subdomain(name).map_err(|e| e.0)
}

/// Validation of a kind with no rules beyond the common metadata ones.
pub fn no_validation(_: &Value, _: &mut Vec<FieldCause>) {}

/// Create defaulting of a kind with no rules beyond the common metadata ones.
pub fn no_defaults(_: &mut Value) {}

/// Update rules of a kind with none beyond the common metadata ones.
pub fn no_update_rules(_: &Value, _: &mut Value, _: &mut Vec<FieldCause>) {}

/// Upstream `IsConfigMapKey`, used for Secret and ConfigMap keys.
pub fn validate_config_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
             (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    if key == "." || key == ".." {
        return Err(format!("must not be '{key}'"));
    }
    if key.starts_with("..") {
        return Err("must not start with '..'".into());
    }
    Ok(())
}

/// Decoded length of a base64 string without decoding it.
pub fn base64_len(s: &str) -> usize {
    let pad = s.bytes().rev().take_while(|&b| b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad)
}

/// Upstream `ValidateSecretUpdate` / `ValidateConfigMapUpdate` for `immutable: true`.
pub fn check_immutable_data(
    old: &Value,
    new: &Value,
    fields: &[&str],
    causes: &mut Vec<FieldCause>,
) {
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return;
    }
    let msg = "Forbidden: field is immutable when `immutable` is set";
    if new.get("immutable") != Some(&Value::Bool(true)) {
        causes.push(cause("immutable", msg));
    }
    for f in fields {
        // Absent and empty maps are the same to Go.
        let norm = |v: Option<&Value>| match v {
            Some(Value::Object(m)) if !m.is_empty() => Some(m.clone()),
            _ => None,
        };
        if norm(old.get(*f)) != norm(new.get(*f)) {
            causes.push(cause(*f, msg));
        }
    }
}
