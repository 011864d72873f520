//! The DaemonSet controller on the leading server, as upstream's: one pod per eligible node.
//! A node is eligible when the pod (the template plus the tolerations upstream adds to every
//! daemon pod) matches its `nodeSelector` and required node affinity and tolerates its
//! NoSchedule and NoExecute taints; a pod already on a node whose only untolerated taints are
//! NoSchedule keeps running (upstream `shouldContinueRunning`). Pods are pinned to their node
//! with a required `metadata.name` node affinity term and placed by the scheduler, as upstream
//! does. Failed pods are replaced; surplus pods on a node are deleted. Rolling updates replace
//! pods whose `controller-revision-hash` is not the template's, at most `maxUnavailable` nodes
//! unavailable at a time (`OnDelete` replaces only deleted pods). Status reports the
//! desired/current/ready/updated/available/misscheduled counts `kubectl rollout status ds`
//! reads. Driven by watches on DaemonSets, pods and nodes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::deployment::{scaled, template_hash};
use super::driven;
use super::replicaset::{controller_uid, is_available, is_deleting, is_ready, pod_from_template};
use super::scheduler::predicates::{
    NodeInfo, PodInfo, TAINT_NOT_READY, TAINT_UNREACHABLE, Taint, node_affinity_fits, tolerated,
};
use crate::datastore::StoreCell;
use crate::registry::print::text;
use crate::registry::{DAEMON_SETS, NODES, PODS};
use crate::storage::pods;
use crate::storage::{ListOptions, ObjectError, Storage};

const COMPONENT: &str = "daemonset-controller";
/// The label naming the template revision a daemon pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";
/// The (deprecated, still set upstream) label with the DaemonSet generation of a pod.
const TEMPLATE_GENERATION: &str = "pod-template-generation";

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`):
/// daemons stay on not-ready and unreachable nodes and ignore pressure and cordoning.
fn default_tolerations(host_network: bool) -> Vec<Value> {
    let mut out = vec![
        json!({"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}),
    ];
    for key in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        out.push(json!({"key": key, "operator": "Exists", "effect": "NoSchedule"}));
    }
    if host_network {
        out.push(json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}));
    }
    out
}

/// The template's revision hash (the template without the label itself).
fn revision_hash(ds: &Value) -> String {
    template_hash(&ds["spec"]["template"], 0)
}

/// The daemon pod of `ds` for `node`, not yet created: the template with the default
/// tolerations, the revision labels and a required affinity term naming the node (upstream
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: it replaces the template's required terms, which
/// the controller has already checked).
fn daemon_pod(ds: &Value, node: &str, hash: &str) -> Value {
    let mut pod = pod_from_template(&DAEMON_SETS, ds);
    let labels = &mut pod["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[REVISION_HASH] = json!(hash);
    labels[TEMPLATE_GENERATION] = json!(
        ds["metadata"]["generation"]
            .as_i64()
            .unwrap_or(1)
            .to_string()
    );
    with_default_tolerations(&mut pod["spec"]);
    let term =
        json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    let spec = &mut pod["spec"];
    if !spec["affinity"].is_object() {
        spec["affinity"] = json!({});
    }
    if !spec["affinity"]["nodeAffinity"].is_object() {
        spec["affinity"]["nodeAffinity"] = json!({});
    }
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": [term]});
    pod
}

/// Adds the default daemon tolerations a pod spec does not already have (by key and effect).
fn with_default_tolerations(spec: &mut Value) {
    let host_network = spec["hostNetwork"] == true;
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    if let Some(list) = spec["tolerations"].as_array_mut() {
        for t in default_tolerations(host_network) {
            if !list
                .iter()
                .any(|have| have["key"] == t["key"] && have["effect"] == t["effect"])
            {
                list.push(t);
            }
        }
    }
}

/// Whether the daemon pod should run on a node, and whether one already there may keep
/// running (upstream `NodeShouldRunDaemonPod`).
fn placement(pod: &PodInfo, node: &NodeInfo) -> (bool, bool) {
    if !node_affinity_fits(pod, node) {
        return (false, false);
    }
    let untolerated = |effect: &str| {
        node.taints
            .iter()
            .any(|t: &Taint| t.effect == effect && !tolerated(&pod.tolerations, t))
    };
    let continue_running = !untolerated("NoExecute");
    (
        continue_running && !untolerated("NoSchedule"),
        continue_running,
    )
}

/// The node a daemon pod belongs to: its `spec.nodeName`, or the node its affinity names.
fn node_of(pod: &Value) -> &str {
    let bound = text(pod, "/spec/nodeName");
    if !bound.is_empty() {
        return bound;
    }
    pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

async fn delete_pod(store: &Storage, pod: &Value) -> Result<(), ObjectError> {
    let opts = pods::DeleteOptions {
        uid: Some(text(pod, "/metadata/uid").to_string()),
        ..Default::default()
    };
    match pods::delete(
        store,
        text(pod, "/metadata/namespace"),
        text(pod, "/metadata/name"),
        &opts,
    )
    .await
    {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Syncs one DaemonSet against the nodes and the pods of its namespace.
pub async fn sync_one(
    store: &Storage,
    ds: &Value,
    nodes: &[NodeInfo],
    pods_in_ns: &[Value],
    now: DateTime<Utc>,
) -> Result<(), ObjectError> {
    if is_deleting(ds) {
        return Ok(());
    }
    let ns = text(ds, "/metadata/namespace");
    let name = text(ds, "/metadata/name");
    let uid = text(ds, "/metadata/uid");
    let hash = revision_hash(ds);
    let min_ready = ds["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let mut template_pod =
        json!({"metadata": {"name": "template"}, "spec": ds["spec"]["template"]["spec"].clone()});
    with_default_tolerations(&mut template_pod["spec"]);
    let Some(template) = PodInfo::from_object(&template_pod) else {
        return Ok(());
    };

    // This DaemonSet's pods by node, oldest first.
    let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for pod in pods_in_ns {
        if controller_uid(pod) == Some(uid) {
            by_node.entry(node_of(pod)).or_default().push(pod);
        }
    }
    for list in by_node.values_mut() {
        list.sort_by_key(|p| text(p, "/metadata/creationTimestamp").to_string());
    }

    let mut to_create: Vec<&str> = Vec::new();
    let mut to_delete: Vec<&Value> = Vec::new();
    // Per eligible node: its kept pod (if any).
    let mut kept: Vec<(&str, Option<&Value>)> = Vec::new();
    let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
    for node in nodes {
        let (should_run, may_continue) = placement(&template, node);
        let pods: Vec<&Value> = by_node.remove(node.name.as_str()).unwrap_or_default();
        let live: Vec<&Value> = pods.iter().copied().filter(|p| !is_deleting(p)).collect();
        if should_run {
            desired += 1;
            if !pods.is_empty() {
                current += 1;
            }
        } else if !pods.is_empty() {
            misscheduled += 1;
        }
        if !may_continue {
            to_delete.extend(live);
            continue;
        }
        let (failed, running): (Vec<&Value>, Vec<&Value>) = live
            .into_iter()
            .partition(|p| text(p, "/status/phase") == "Failed");
        to_delete.extend(failed);
        if running.len() > 1 {
            to_delete.extend(&running[1..]);
        }
        if should_run {
            // A pod still terminating holds the node until it is gone.
            let keep = running
                .first()
                .copied()
                .or_else(|| pods.iter().copied().find(|p| is_deleting(p)));
            if keep.is_none() {
                to_create.push(node.name.as_str());
            }
            kept.push((node.name.as_str(), keep));
        }
    }
    // Pods on nodes that no longer exist.
    for pods in by_node.values() {
        to_delete.extend(pods.iter().copied().filter(|p| !is_deleting(p)));
    }

    // Rolling update: replace outdated pods, keeping at most maxUnavailable nodes unavailable.
    let strategy = &ds["spec"]["updateStrategy"];
    if text(strategy, "/type") != "OnDelete" {
        let max_unavailable = scaled(
            strategy
                .pointer("/rollingUpdate/maxUnavailable")
                .unwrap_or(&json!(1)),
            desired,
            true,
        )
        .max(1);
        let mut unavailable = kept
            .iter()
            .filter(|(_, p)| !p.is_some_and(|p| !is_deleting(p) && is_available(p, min_ready, now)))
            .count() as i64;
        let outdated = |p: &Value| text(p, &format!("/metadata/labels/{REVISION_HASH}")) != hash;
        // Outdated pods that are unavailable anyway go first, without using the budget.
        for (_, pod) in &kept {
            if let Some(p) = pod
                && !is_deleting(p)
                && outdated(p)
                && !is_available(p, min_ready, now)
            {
                to_delete.push(p);
            }
        }
        for (_, pod) in &kept {
            if unavailable >= max_unavailable {
                break;
            }
            if let Some(p) = pod
                && !is_deleting(p)
                && outdated(p)
                && is_available(p, min_ready, now)
            {
                to_delete.push(p);
                unavailable += 1;
            }
        }
    }

    for node in &to_create {
        let created = store
            .create(&PODS, Some(ns), daemon_pod(ds, node, &hash))
            .await?;
        tracing::debug!(component = COMPONENT, daemonset = %name, node = %node, pod = %text(&created, "/metadata/name"), "created daemon pod");
    }
    for pod in &to_delete {
        delete_pod(store, pod).await?;
    }

    let (mut ready, mut available, mut updated) = (0, 0, 0);
    for (_, pod) in &kept {
        let Some(p) = pod else { continue };
        if is_ready(p) {
            ready += 1;
        }
        if is_available(p, min_ready, now) {
            available += 1;
        }
        if text(p, &format!("/metadata/labels/{REVISION_HASH}")) == hash {
            updated += 1;
        }
    }
    let mut status = json!({
        "currentNumberScheduled": current,
        "desiredNumberScheduled": desired,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "observedGeneration": ds["metadata"]["generation"].as_i64().unwrap_or(1),
    });
    // Go's `omitempty` leaves these out at zero.
    for (k, n) in [
        ("updatedNumberScheduled", updated),
        ("numberAvailable", available),
        ("numberUnavailable", desired - available),
    ] {
        if n > 0 {
            status[k] = json!(n);
        }
    }
    if let Some(c) = ds["status"].get("conditions") {
        status["conditions"] = c.clone();
    }
    if ds.get("status") != Some(&status) {
        store
            .modify(&DAEMON_SETS, Some(ns), name, None, |current| {
                if text(current, "/metadata/uid") == uid {
                    current["status"] = status.clone();
                }
                Ok::<(), ObjectError>(())
            })
            .await?;
    }
    Ok(())
}

/// Syncs every DaemonSet; returns the revision the lists were read at.
pub async fn sync_all(store: &Storage) -> Result<i64, ObjectError> {
    let sets = store
        .list(&DAEMON_SETS, None, &ListOptions::default())
        .await?;
    let node_list = store.list(&NODES, None, &ListOptions::default()).await?;
    let all_pods = store.list(&PODS, None, &ListOptions::default()).await?;
    let nodes: Vec<NodeInfo> = node_list
        .items
        .iter()
        .filter_map(NodeInfo::from_object)
        .collect();
    let by_ns = driven::by_namespace(&all_pods.items);
    let now = Utc::now();
    for ds in &sets.items {
        let pods = by_ns
            .get(text(ds, "/metadata/namespace"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Err(e) = sync_one(store, ds, &nodes, pods, now).await {
            tracing::debug!(component = COMPONENT, daemonset = %text(ds, "/metadata/name"), "sync failed: {e}");
        }
    }
    Ok(sets
        .resource_version
        .min(node_list.resource_version)
        .min(all_pods.resource_version))
}

/// Runs the controller while leading, until `cancel`.
pub async fn run(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    driven::run(
        cell,
        is_leader,
        cancel,
        COMPONENT,
        &[&DAEMON_SETS, &PODS, &NODES],
        |store| async move { sync_all(&store).await },
    )
    .await
}
