//! Namespace (core/v1, cluster-scoped): DNS-label names, the `kubernetes` finalizer and the
//! name label on create, finalizers kept on update.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};

use super::ListStrategy;
use super::ResourceInfo;
use super::fields::{FieldCause, meta_str, metadata_mut, typed};
use super::print::*;
use super::schema::{ListSemantics, atomic, conditions};
use crate::validation::validate_dns_label;

/// Label set on every Namespace by upstream defaulting.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespaces that exist from the start and may not be deleted (upstream protects `default`,
/// `kube-system` and `kube-public`; `kube-node-lease` holds every node's heartbeat, so it is
/// protected here too).
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Upstream's list tags on NamespaceSpec and NamespaceStatus.
const NAMESPACE_LISTS: &[ListSemantics] = &[
    atomic("io.k8s.api.core.v1.NamespaceSpec", "finalizers"),
    conditions("io.k8s.api.core.v1.NamespaceStatus"),
];

/// `namespaces`.
pub static NAMESPACES: ResourceInfo = ResourceInfo {
    short_names: &["ns"],
    subresources: &["status", "finalize"],
    type_check: typed::<core::Namespace>,
    schema: Some(super::schema::schema_of::<core::Namespace>),
    lists: NAMESPACE_LISTS,
    name_rule: dns_label,
    tracks_generation: true,
    on_create,
    on_update,
    printer: Printer {
        columns: &[NAME, col("Status", "The status of the namespace"), AGE],
        cells,
        conditions: no_conditions,
    },
    field_selectors: &["status.phase"],
    protobuf: Some(super::protobuf::CORE_V1),
    list_strategies: &[("status.conditions", ListStrategy::MergeByKey("type"))],
    ..ResourceInfo::stored(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        "/registry/namespaces",
    )
};

fn dns_label(name: &str) -> Result<(), String> {
    validate_dns_label(name).map_err(|e| e.0)
}

/// `status.phase: Active`, the `kubernetes` finalizer and the name label.
fn on_create(obj: &mut Value) {
    obj["status"] = json!({"phase": "Active"});
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let fins = &mut obj["spec"]["finalizers"];
    if !fins.is_array() {
        *fins = json!([]);
    }
    if let Some(list) = fins.as_array_mut()
        && !list.iter().any(|f| f == "kubernetes")
    {
        list.push(json!("kubernetes"));
    }
    default_namespace_label(obj);
}

/// `spec.finalizers` only change through `/finalize`; the name label stays.
fn on_update(old: &Value, new: &mut Value, _: &mut Vec<FieldCause>) {
    let fins = old.get("spec").and_then(|s| s.get("finalizers")).cloned();
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    match fins {
        Some(f) => new["spec"]["finalizers"] = f,
        None => {
            if let Some(s) = new["spec"].as_object_mut() {
                s.remove("finalizers");
            }
        }
    }
    default_namespace_label(new);
}

/// Upstream `SetDefaults_Namespace`: the namespace's name as a label, always.
fn default_namespace_label(obj: &mut Value) {
    let name = meta_str(obj, "name").to_string();
    if name.is_empty() {
        return;
    }
    let m = metadata_mut(obj);
    if !m.get("labels").is_some_and(Value::is_object) {
        m.insert("labels".into(), json!({}));
    }
    if let Some(Value::Object(labels)) = m.get_mut("labels") {
        labels.insert(NAMESPACE_NAME_LABEL.into(), Value::String(name));
    }
}

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        text(obj, "/status/phase").into(),
        age(obj, now).into(),
    ]
}
