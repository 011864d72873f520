//! Pod (core/v1, namespaced): `Pending` on create, its field selectors, the `kubectl get pods`
//! columns and row conditions.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};

use super::ListStrategy::MergeByKey;
use super::fields::typed;
use super::print::*;
use super::schema::{ListSemantics, atomic, keyed};
use super::{ResourceInfo, pod_spec};

const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const EPHEMERAL: &str = "io.k8s.api.core.v1.EphemeralContainer";
const POD_STATUS: &str = "io.k8s.api.core.v1.PodStatus";

/// Upstream's list tags on PodSpec, Container, EphemeralContainer and PodStatus.
const POD_LISTS: &[ListSemantics] = &[
    keyed(POD_SPEC, "volumes", &["name"], "name", "merge,retainKeys"),
    keyed(POD_SPEC, "initContainers", &["name"], "name", "merge"),
    keyed(POD_SPEC, "containers", &["name"], "name", "merge"),
    keyed(POD_SPEC, "ephemeralContainers", &["name"], "name", "merge"),
    keyed(POD_SPEC, "imagePullSecrets", &["name"], "name", "merge"),
    keyed(POD_SPEC, "hostAliases", &["ip"], "ip", "merge"),
    keyed(
        POD_SPEC,
        "topologySpreadConstraints",
        &["topologyKey", "whenUnsatisfiable"],
        "topologyKey",
        "merge",
    ),
    keyed(
        POD_SPEC,
        "resourceClaims",
        &["name"],
        "name",
        "merge,retainKeys",
    ),
    keyed(POD_SPEC, "schedulingGates", &["name"], "name", "merge"),
    atomic(POD_SPEC, "tolerations"),
    atomic(POD_SPEC, "readinessGates"),
    keyed(
        CONTAINER,
        "ports",
        &["containerPort", "protocol"],
        "containerPort",
        "merge",
    ),
    keyed(CONTAINER, "env", &["name"], "name", "merge"),
    keyed(
        CONTAINER,
        "volumeMounts",
        &["mountPath"],
        "mountPath",
        "merge",
    ),
    keyed(
        CONTAINER,
        "volumeDevices",
        &["devicePath"],
        "devicePath",
        "merge",
    ),
    atomic(CONTAINER, "envFrom"),
    atomic(CONTAINER, "command"),
    atomic(CONTAINER, "args"),
    atomic(CONTAINER, "resizePolicy"),
    keyed(
        EPHEMERAL,
        "ports",
        &["containerPort", "protocol"],
        "containerPort",
        "merge",
    ),
    keyed(EPHEMERAL, "env", &["name"], "name", "merge"),
    keyed(
        EPHEMERAL,
        "volumeMounts",
        &["mountPath"],
        "mountPath",
        "merge",
    ),
    keyed(
        EPHEMERAL,
        "volumeDevices",
        &["devicePath"],
        "devicePath",
        "merge",
    ),
    super::schema::conditions(POD_STATUS),
    keyed(POD_STATUS, "podIPs", &["ip"], "ip", "merge"),
    keyed(POD_STATUS, "hostIPs", &["ip"], "ip", "merge"),
    atomic(POD_STATUS, "containerStatuses"),
    atomic(POD_STATUS, "initContainerStatuses"),
    atomic(POD_STATUS, "ephemeralContainerStatuses"),
];

/// `pods`.
pub static PODS: ResourceInfo = ResourceInfo {
    short_names: &["po"],
    categories: &["all"],
    subresources: &[
        "status",
        "binding",
        "eviction",
        "log",
        "exec",
        "attach",
        "portforward",
    ],
    type_check: typed::<core::Pod>,
    schema: Some(super::schema::schema_of::<core::Pod>),
    lists: POD_LISTS,
    tracks_generation: true,
    on_create,
    validate: pod_spec::validate,
    on_update: pod_spec::on_update,
    printer: Printer {
        columns: COLUMNS,
        cells: pod_cells,
        conditions,
    },
    // Kubelets write their pods' status (crate::runtime::kubelet).
    node_access: super::NodeAccess::Bound,
    field_selectors: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    ],
    protobuf: Some(super::protobuf::CORE_V1),
    list_strategies: &[
        ("spec.containers", MergeByKey("name")),
        ("spec.containers.env", MergeByKey("name")),
        ("spec.containers.volumeMounts", MergeByKey("mountPath")),
        ("spec.containers.volumeDevices", MergeByKey("devicePath")),
        ("spec.containers.ports", MergeByKey("containerPort")),
        ("spec.initContainers", MergeByKey("name")),
        ("spec.initContainers.env", MergeByKey("name")),
        ("spec.initContainers.volumeMounts", MergeByKey("mountPath")),
        (
            "spec.initContainers.volumeDevices",
            MergeByKey("devicePath"),
        ),
        ("spec.initContainers.ports", MergeByKey("containerPort")),
        ("spec.ephemeralContainers", MergeByKey("name")),
        ("spec.ephemeralContainers.env", MergeByKey("name")),
        (
            "spec.ephemeralContainers.volumeMounts",
            MergeByKey("mountPath"),
        ),
        (
            "spec.ephemeralContainers.volumeDevices",
            MergeByKey("devicePath"),
        ),
        (
            "spec.ephemeralContainers.ports",
            MergeByKey("containerPort"),
        ),
        ("status.conditions", MergeByKey("type")),
        ("status.podIPs", MergeByKey("ip")),
        ("status.hostIPs", MergeByKey("ip")),
        ("spec.volumes", MergeByKey("name")),
        ("spec.imagePullSecrets", MergeByKey("name")),
        ("spec.hostAliases", MergeByKey("ip")),
        ("spec.schedulingGates", MergeByKey("name")),
        ("spec.resourceClaims", MergeByKey("name")),
        ("spec.topologySpreadConstraints", MergeByKey("topologyKey")),
    ],
    ..ResourceInfo::stored("", "pods", "pod", "Pod", true, "/registry/pods")
};

fn on_create(obj: &mut Value) {
    pod_spec::apply_defaults(obj);
    pod_spec::add_default_tolerations(obj);
    obj["status"] = json!({"phase": "Pending", "qosClass": pod_spec::qos_class(obj)});
    pod_spec::mark_scheduling_gated(obj);
}

/// Row conditions: only finished pods have one, so clients can de-emphasise them.
fn conditions(obj: &Value) -> Option<Value> {
    let (reason, message) = match text(obj, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    }]))
}

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(col(
        "IP",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    )),
    wide(col(
        "Node",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.",
    )),
    wide(col(
        "Nominated Node",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
    )),
    wide(col(
        "Readiness Gates",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    )),
];

/// A sidecar: an init container with `restartPolicy: Always`.
fn is_restartable_init(pod: &Value, container_name: &str) -> bool {
    list(pod, "/spec/initContainers")
        .iter()
        .find(|c| text(c, "/name") == container_name)
        .is_some_and(|c| text(c, "/restartPolicy") == "Always")
}

fn has_condition_true(pod: &Value, kind: &str) -> bool {
    list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == kind && text(c, "/status") == "True")
}

/// `finishedAt` of the container's last termination, if any.
fn last_termination(status: &Value) -> Option<DateTime<Utc>> {
    timestamp(status.pointer("/lastState/terminated/finishedAt"))
}

/// Keeps the later of two optional times (Go compares zero times as earliest).
fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Reason for a terminated container without one: the signal, else the exit code.
fn terminated_without_reason(terminated: &Value, prefix: &str) -> String {
    let signal = int(terminated, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int(terminated, "/exitCode"))
    }
}

/// Upstream `printPod`: READY `ready/total`, STATUS (the pod's reason refined by init and
/// container states), RESTARTS (`n` or `n (age ago)`), AGE, then the wide IP, NODE,
/// NOMINATED NODE and READINESS GATES.
fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let init_specs = list(pod, "/spec/initContainers");
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    // Sidecars (restartable init containers) count as containers.
    let total = list(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| text(c, "/restartPolicy") == "Always")
            .count();
    let mut ready: usize = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;

    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, cs) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let count = int(cs, "/restartCount");
        restarts += count;
        last_restart = later(last_restart, last_termination(cs));
        let sidecar = is_restartable_init(pod, text(cs, "/name"));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, last_termination(cs));
        }
        let terminated = cs.pointer("/state/terminated").filter(|t| t.is_object());
        let waiting_reason = text(cs, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            match text(t, "/reason") {
                "" => terminated_without_reason(t, "Init:"),
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || has_condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(cs, "/restartCount");
            last_restart = later(last_restart, last_termination(cs));
            let waiting_reason = text(cs, "/state/waiting/reason");
            let terminated = cs.pointer("/state/terminated").filter(|t| t.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = match text(t, "/reason") {
                    "" => terminated_without_reason(t, ""),
                    r => r.to_string(),
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod with a completed container but one still running is not "Completed".
        if reason == "Completed" && has_running {
            reason = if has_condition_true(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = list(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "/status/podIP"));

    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(pod, "/status/conditions");
        let met = gates
            .iter()
            .filter(|g| {
                let kind = text(g, "/conditionType");
                // Only the first condition of that type counts, as upstream.
                conditions
                    .iter()
                    .find(|c| text(c, "/type") == kind)
                    .is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };

    vec![
        name(pod).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        age(pod, now).into(),
        or_placeholder(pod_ip, "<none>").into(),
        or_placeholder(text(pod, "/spec/nodeName"), "<none>").into(),
        or_placeholder(text(pod, "/status/nominatedNodeName"), "<none>").into(),
        readiness_gates.into(),
    ]
}
