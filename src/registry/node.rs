//! Node (core/v1, cluster-scoped): taint validation, the `kubectl get nodes` columns.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::ListStrategy::{MergeByKey, MergePrimitive};
use super::fields::{FieldCause, cause, invalid_value, typed};
use super::print::*;
use super::schema::{ListSemantics, atomic, conditions, keyed, set};
use super::{NodeAccess, ResourceInfo};
use crate::validation::{TaintEffect, validate_label_key, validate_label_value};

/// Upstream's list tags on NodeSpec/NodeStatus.
const NODE_LISTS: &[ListSemantics] = &[
    set("io.k8s.api.core.v1.NodeSpec", "podCIDRs", true),
    atomic("io.k8s.api.core.v1.NodeSpec", "taints"),
    conditions("io.k8s.api.core.v1.NodeStatus"),
    keyed(
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        &["type"],
        "type",
        "merge",
    ),
    atomic("io.k8s.api.core.v1.NodeStatus", "images"),
    atomic("io.k8s.api.core.v1.NodeStatus", "volumesInUse"),
    atomic("io.k8s.api.core.v1.NodeStatus", "volumesAttached"),
];

/// `nodes`, stored at `/registry/minions` as upstream does.
pub static NODES: ResourceInfo = ResourceInfo {
    short_names: &["no"],
    subresources: &["status"],
    type_check: typed::<core::Node>,
    schema: Some(super::schema::schema_of::<core::Node>),
    lists: NODE_LISTS,
    validate: validate_taints,
    tracks_generation: true,
    printer: Printer {
        columns: COLUMNS,
        cells: node_cells,
        conditions: no_conditions,
    },
    field_selectors: &["spec.unschedulable"],
    node_access: NodeAccess::Own { namespace: None },
    protobuf: Some(super::protobuf::CORE_V1),
    list_strategies: &[
        ("status.conditions", MergeByKey("type")),
        ("status.addresses", MergeByKey("type")),
        ("spec.podCIDRs", MergePrimitive),
    ],
    ..ResourceInfo::stored("", "nodes", "node", "Node", false, "/registry/minions")
};

fn validate_taints(body: &Value, causes: &mut Vec<FieldCause>) {
    let Some(taints) = body
        .get("spec")
        .and_then(|s| s.get("taints"))
        .and_then(Value::as_array)
    else {
        return;
    };
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in taints.iter().enumerate() {
        let path = format!("spec.taints[{i}]");
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default();
        let (key, value, effect) = (s("key"), s("value"), s("effect"));
        if let Err(e) = validate_label_key(key) {
            causes.push(invalid_value(format!("{path}.key"), key, e));
        }
        if let Err(e) = validate_label_value(value) {
            causes.push(invalid_value(format!("{path}.value"), value, e));
        }
        if effect.is_empty() {
            causes.push(cause(format!("{path}.effect"), "Required value"));
        } else if effect.parse::<TaintEffect>().is_err() {
            causes.push(cause(
                format!("{path}.effect"),
                format!(
                    "Unsupported value: \"{effect}\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
                ),
            ));
        }
        if seen.contains(&(key, effect)) {
            causes.push(cause(
                path,
                format!(
                    "Duplicate value: \"{key}:{effect}\": taints must be unique by key and effect pair"
                ),
            ));
        } else {
            seen.push((key, effect));
        }
    }
}

const COLUMNS: &[Column] = &[
    NAME,
    col("Status", "The status of the node"),
    col("Roles", "The roles of the node"),
    AGE,
    col("Version", "Kubelet Version reported by the node."),
    wide(col("Internal-IP", ADDRESSES_DESC)),
    wide(col("External-IP", ADDRESSES_DESC)),
    wide(col(
        "OS-Image",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    )),
    wide(col(
        "Kernel-Version",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    )),
    wide(col(
        "Container-Runtime",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    )),
];

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Upstream builds a map by condition type, so the last Ready condition wins. Any status
    // other than "True" (including "Unknown", which the node lifecycle controller sets for a
    // lost node) prints "NotReady"; only a missing Ready condition prints "Unknown".
    let ready = list(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| text(c, "/type") == "Ready")
        .map(|c| text(c, "/status"));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }

    let roles = node_roles(node);
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    vec![
        name(node).into(),
        status.into(),
        roles.into(),
        age(node, now).into(),
        text(node, "/status/nodeInfo/kubeletVersion").into(),
        node_address(node, "InternalIP").into(),
        node_address(node, "ExternalIP").into(),
        or_placeholder(text(node, "/status/nodeInfo/osImage"), "<unknown>").into(),
        or_placeholder(text(node, "/status/nodeInfo/kernelVersion"), "<unknown>").into(),
        or_placeholder(
            text(node, "/status/nodeInfo/containerRuntimeVersion"),
            "<unknown>",
        )
        .into(),
    ]
}

/// Roles from `node-role.kubernetes.io/<role>` label keys and the `kubernetes.io/role` value,
/// sorted and deduplicated.
fn node_roles(node: &Value) -> BTreeSet<String> {
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let role = match k.strip_prefix(NODE_ROLE_PREFIX) {
                Some(suffix) => suffix,
                None if k == NODE_ROLE_LABEL => v.as_str().unwrap_or(""),
                None => continue,
            };
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        }
    }
    roles
}

/// The first address of the given type, or `<none>`.
fn node_address(node: &Value, kind: &str) -> String {
    list(node, "/status/addresses")
        .iter()
        .find(|a| text(a, "/type") == kind)
        .map_or_else(|| "<none>".to_string(), |a| text(a, "/address").to_string())
}
