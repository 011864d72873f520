//! The DaemonSet controller on the leading server, as upstream's: one pod per eligible node.
//! A node is eligible when the pod (the template plus the tolerations upstream adds to every
//! daemon pod) matches its `nodeSelector` and required node affinity and tolerates its
//! NoSchedule and NoExecute taints; a pod already on a node whose only untolerated taints are
//! NoSchedule keeps running (upstream `shouldContinueRunning`). Pods are pinned to their node
//! with a required `metadata.name` node affinity term and placed by the scheduler, as upstream
//! does. Failed pods are replaced; surplus pods on a node are deleted. Rolling updates replace
//! pods whose `controller-revision-hash` is not the template's, at most `maxUnavailable` nodes
//! unavailable at a time, or with `maxSurge` a new pod next to the old one on at most that many
//! nodes, the old one going once the new one is available (`OnDelete` replaces only deleted
//! pods). Each template is kept as a
//! ControllerRevision `<ds>-<hash>` (upstream's `constructHistory`): its `data` is the patch
//! `kubectl rollout undo ds` applies, its `revision` the next number when the template becomes
//! current again, and old revisions no pod uses go beyond `revisionHistoryLimit`. Status
//! reports the desired/current/ready/updated/available/misscheduled counts `kubectl rollout
//! status ds` reads. Driven by watches on DaemonSets, pods, nodes and ControllerRevisions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::deployment::{scaled, template_hash};
use super::driven;
use super::replicaset::{
    controller_ref, controller_uid, delete_pod, is_available, is_deleting, is_ready,
    pod_from_template, write_status,
};
use super::scheduler::predicates::{
    NodeInfo, PodInfo, TAINT_NOT_READY, TAINT_UNREACHABLE, Taint, node_affinity_fits, tolerated,
};
use crate::datastore::StoreCell;
use crate::registry::print::text;
use crate::registry::{CONTROLLER_REVISIONS, DAEMON_SETS, NODES, PODS};
use crate::storage::decoded::Decoded;
use crate::storage::watch_cache::WatchCaches;
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

/// The `data` of a template's ControllerRevision, as upstream's `getPatch` makes it: a
/// strategic merge patch replacing `spec.template`, which `kubectl rollout undo ds` sends back
/// as it is and `kubectl rollout history --revision` applies to show the template.
pub fn revision_data(ds: &Value) -> Value {
    let mut template = ds["spec"]["template"].clone();
    if !template.is_object() {
        template = json!({});
    }
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// The `revision` number of a ControllerRevision.
fn revision_number(rev: &Value) -> i64 {
    rev["revision"].as_i64().unwrap_or(0)
}

/// Keeps the DaemonSet's history (upstream `constructHistory` and `cleanupHistory`): the
/// current template's revision `<ds>-<hash>` exists and has the highest number (a template
/// that becomes current again, as after `kubectl rollout undo`, gets the next number), and of
/// the old revisions no live pod uses, only the newest `revisionHistoryLimit` stay.
async fn sync_history(
    store: &Storage,
    ds: &Value,
    hash: &str,
    revisions_in_ns: &[Value],
    pod_hashes: &BTreeSet<&str>,
) -> Result<(), ObjectError> {
    let ns = text(ds, "/metadata/namespace");
    let uid = text(ds, "/metadata/uid");
    let current_name = format!("{}-{hash}", text(ds, "/metadata/name"));
    let mut owned: Vec<&Value> = revisions_in_ns
        .iter()
        .filter(|r| controller_uid(r) == Some(uid) && !is_deleting(r))
        .collect();
    let max = owned.iter().map(|r| revision_number(r)).max().unwrap_or(0);
    match owned
        .iter()
        .position(|r| text(r, "/metadata/name") == current_name)
    {
        Some(i) => {
            let current = owned.remove(i);
            if revision_number(current) < max {
                store
                    .modify(&CONTROLLER_REVISIONS, Some(ns), &current_name, None, |r| {
                        r["revision"] = json!(max + 1);
                        Ok::<(), ObjectError>(())
                    })
                    .await?;
            }
        }
        None => {
            let mut labels = ds["spec"]["template"]["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[REVISION_HASH] = json!(hash);
            let mut metadata = json!({
                "name": current_name,
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [controller_ref(&DAEMON_SETS, ds)],
            });
            // Upstream copies the DaemonSet's annotations (`kubernetes.io/change-cause` is
            // what `kubectl rollout history` prints).
            if let Some(a) = ds["metadata"].get("annotations").filter(|a| a.is_object()) {
                metadata["annotations"] = a.clone();
            }
            let rev = json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": metadata,
                "data": revision_data(ds),
                "revision": max + 1,
            });
            store.create(&CONTROLLER_REVISIONS, Some(ns), rev).await?;
        }
    }
    let limit = ds["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let mut unused: Vec<&Value> = owned
        .into_iter()
        .filter(|r| !pod_hashes.contains(text(r, &format!("/metadata/labels/{REVISION_HASH}"))))
        .collect();
    if unused.len() > limit {
        unused.sort_by_key(|r| revision_number(r));
        let surplus = unused.len() - limit;
        for r in &unused[..surplus] {
            match store
                .delete(
                    &CONTROLLER_REVISIONS,
                    Some(ns),
                    text(r, "/metadata/name"),
                    Some(text(r, "/metadata/uid")),
                    None,
                )
                .await
            {
                Ok(_) | Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
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

/// Syncs one DaemonSet against the nodes and the pods of its namespace.
pub async fn sync_one(
    store: &Storage,
    ds: &Value,
    nodes: &[&NodeInfo],
    pods_in_ns: &[Value],
    revisions_in_ns: &[Value],
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
    let pod_hashes: BTreeSet<&str> = by_node
        .values()
        .flatten()
        .map(|p| text(p, &format!("/metadata/labels/{REVISION_HASH}")))
        .collect();
    sync_history(store, ds, &hash, revisions_in_ns, &pod_hashes).await?;

    let strategy = &ds["spec"]["updateStrategy"];
    let rolling = text(strategy, "/type") != "OnDelete";
    let max_surge = strategy
        .pointer("/rollingUpdate/maxSurge")
        .cloned()
        .unwrap_or(json!(0));
    // With a surge, a node runs its new pod next to the old one until the new one is available
    // (upstream's surge path of `rollingUpdate`), instead of losing its daemon meanwhile.
    let surging = rolling && max_surge != json!(0) && max_surge != json!("0%");
    let outdated = |p: &Value| text(p, &format!("/metadata/labels/{REVISION_HASH}")) != hash;

    let mut to_create: Vec<&str> = Vec::new();
    let mut to_delete: Vec<&Value> = Vec::new();
    // Per eligible node: its kept pod (if any).
    let mut kept: Vec<(&str, Option<&Value>)> = Vec::new();
    // Surge: nodes running an old and a new pod, and nodes whose available old pod waits for one.
    let (mut surge_in_use, mut surge_candidates) = (0, Vec::new());
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
        if surging && should_run {
            // At most one new and one old pod per node, the oldest of each.
            let (new, old): (Vec<&Value>, Vec<&Value>) =
                running.into_iter().partition(|p| !outdated(p));
            to_delete.extend(new.iter().skip(1));
            to_delete.extend(old.iter().skip(1));
            let (new, old) = (new.first().copied(), old.first().copied());
            match (new, old) {
                (Some(n), Some(o)) => {
                    surge_in_use += 1;
                    if is_available(n, min_ready, now) {
                        to_delete.push(o);
                    }
                }
                // An old pod that is not available anyway is replaced without using the surge.
                (None, Some(o)) if !is_available(o, min_ready, now) => {
                    to_create.push(node.name.as_str())
                }
                (None, Some(_)) => surge_candidates.push(node.name.as_str()),
                (None, None) if !pods.iter().any(|p| is_deleting(p)) => {
                    to_create.push(node.name.as_str())
                }
                _ => {}
            }
            let keep = new
                .or(old)
                .or_else(|| pods.iter().copied().find(|p| is_deleting(p)));
            kept.push((node.name.as_str(), keep));
            continue;
        }
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

    if surging {
        let budget = (scaled(&max_surge, desired, true) - surge_in_use).max(0) as usize;
        to_create.extend(surge_candidates.into_iter().take(budget));
    }

    // Rolling update: replace outdated pods, keeping at most maxUnavailable nodes unavailable.
    if rolling && !surging {
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
    write_status(store, &DAEMON_SETS, ds, status).await
}

/// Syncs every DaemonSet; returns the revision the lists were read at.
pub async fn sync_all(store: &Storage) -> Result<i64, ObjectError> {
    sync_all_with(store, store, &mut Decoded::default()).await
}

/// [`sync_all`], reading Nodes through `node_store` (this server's watch cache) and keeping
/// what was decoded of each in `nodes` between syncs, so a sync after a Node heartbeat decodes
/// that Node alone.
async fn sync_all_with(
    store: &Storage,
    node_store: &Storage,
    nodes: &mut Decoded<NodeInfo>,
) -> Result<i64, ObjectError> {
    let sets = store
        .list(&DAEMON_SETS, None, &ListOptions::default())
        .await?;
    // Without DaemonSets there is nothing to place: the Node heartbeats and other owners' pods
    // that wake this controller all the time then cost no read at all.
    if sets.items.is_empty() {
        *nodes = Decoded::default();
        return Ok(sets.resource_version);
    }
    let nodes_revision = nodes
        .refresh(node_store, &NODES, None, |b| {
            NodeInfo::from_object(&serde_json::from_slice(b).ok()?)
        })
        .await?;
    let all_pods = store.list(&PODS, None, &ListOptions::default()).await?;
    let revisions = store
        .list(&CONTROLLER_REVISIONS, None, &ListOptions::default())
        .await?;
    let nodes: Vec<&NodeInfo> = nodes.iter().collect();
    let by_ns = driven::by_namespace(&all_pods.items);
    let revisions_by_ns = driven::by_namespace(&revisions.items);
    let now = Utc::now();
    for ds in &sets.items {
        let ns = text(ds, "/metadata/namespace");
        let pods = by_ns.get(ns).map(Vec::as_slice).unwrap_or_default();
        let history = revisions_by_ns
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Err(e) = sync_one(store, ds, &nodes, pods, history, now).await {
            tracing::debug!(component = COMPONENT, daemonset = %text(ds, "/metadata/name"), "sync failed: {e}");
        }
    }
    Ok(sets
        .resource_version
        .min(nodes_revision)
        .min(all_pods.resource_version)
        .min(revisions.resource_version))
}

/// Runs the controller while leading, until `cancel`; Nodes are read from this server's watch
/// caches (`caches`).
pub async fn run(
    cell: StoreCell,
    caches: Arc<WatchCaches>,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let nodes = Arc::new(tokio::sync::Mutex::new(Decoded::default()));
    driven::run(
        cell,
        is_leader,
        cancel,
        COMPONENT,
        &[&DAEMON_SETS, &PODS, &NODES, &CONTROLLER_REVISIONS],
        |store| {
            let (caches, nodes) = (caches.clone(), nodes.clone());
            async move {
                let node_store = Storage::cached(store.datastore(), caches);
                sync_all_with(&store, &node_store, &mut *nodes.lock().await).await
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store() -> Storage {
        Storage::new(crate::datastore::Datastore::from_impl(Arc::new(
            crate::datastore::memory::MemoryStore::default(),
        )))
    }

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": labels},
               "spec": {"taints": taints},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn ds(name: &str, tolerations: Value, node_selector: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"tolerations": tolerations, "nodeSelector": node_selector,
                                              "containers": [{"name": "c", "image": "x:1"}]}}}})
    }

    async fn setup(store: &Storage) {
        for n in [
            node("agent1", json!({"role": "edge"}), json!([])),
            node("agent2", json!({}), json!([])),
            node(
                "server1",
                json!({}),
                json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"}]),
            ),
            node(
                "cordoned",
                json!({}),
                json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
            ),
        ] {
            store.create(&NODES, None, n).await.unwrap();
        }
    }

    async fn pods_by_node(store: &Storage, uid: &str) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for p in store
            .list(&PODS, Some("default"), &ListOptions::default())
            .await
            .unwrap()
            .items
        {
            if controller_uid(&p) == Some(uid) && !is_deleting(&p) {
                out.entry(node_of(&p).to_string()).or_default().push(p);
            }
        }
        out
    }

    async fn mark_ready(store: &Storage, pod: &Value) {
        let name = text(pod, "/metadata/name").to_string();
        store
            .modify(&PODS, Some("default"), &name, None, |p| {
                p["spec"]["nodeName"] = json!(node_of(p).to_string());
                p["status"]["phase"] = json!("Running");
                p["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn one_pod_per_tolerating_node_and_status() {
        let store = store();
        setup(&store).await;
        let plain = store
            .create(
                &DAEMON_SETS,
                Some("default"),
                ds("plain", json!([]), json!({})),
            )
            .await
            .unwrap();
        let critical = store
            .create(
                &DAEMON_SETS,
                Some("default"),
                ds(
                    "critical",
                    json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}]),
                    json!({}),
                ),
            )
            .await
            .unwrap();
        let edge = store
            .create(
                &DAEMON_SETS,
                Some("default"),
                ds("edge", json!([]), json!({"role": "edge"})),
            )
            .await
            .unwrap();
        sync_all(&store).await.unwrap();

        let uid = |o: &Value| text(o, "/metadata/uid").to_string();
        let plain_pods = pods_by_node(&store, &uid(&plain)).await;
        assert_eq!(
            plain_pods.keys().collect::<Vec<_>>(),
            ["agent1", "agent2"],
            "no pod on the CriticalAddonsOnly server nor the NoSchedule node"
        );
        let critical_pods = pods_by_node(&store, &uid(&critical)).await;
        assert_eq!(
            critical_pods.keys().collect::<Vec<_>>(),
            ["agent1", "agent2", "server1"]
        );
        let edge_pods = pods_by_node(&store, &uid(&edge)).await;
        assert_eq!(edge_pods.keys().collect::<Vec<_>>(), ["agent1"]);

        // The pod is pinned to its node and carries upstream's default tolerations.
        let pod = &plain_pods["agent1"][0];
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        assert!(text(pod, "/metadata/name").starts_with("plain-"));
        assert!(!text(pod, &format!("/metadata/labels/{REVISION_HASH}")).is_empty());
        let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
        for key in [
            TAINT_NOT_READY,
            TAINT_UNREACHABLE,
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(tolerations.iter().any(|t| t["key"] == key), "{key}");
        }

        // A second pass changes nothing.
        sync_all(&store).await.unwrap();
        assert_eq!(pods_by_node(&store, &uid(&plain)).await.len(), 2);

        for p in plain_pods.values().flatten() {
            mark_ready(&store, p).await;
        }
        sync_all(&store).await.unwrap();
        let status = store
            .get(&DAEMON_SETS, Some("default"), "plain")
            .await
            .unwrap()["status"]
            .clone();
        assert_eq!(status["desiredNumberScheduled"], 2);
        assert_eq!(status["currentNumberScheduled"], 2);
        assert_eq!(status["numberReady"], 2);
        assert_eq!(status["numberAvailable"], 2);
        assert_eq!(status["updatedNumberScheduled"], 2);
        assert_eq!(status["numberMisscheduled"], 0);
        assert!(status.get("numberUnavailable").is_none());

        // A NoExecute taint the pod does not tolerate evicts it.
        store
            .modify(&NODES, None, "agent2", None, |n| {
                n["spec"]["taints"] = json!([{"key": "gone", "effect": "NoExecute"}]);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        let left = pods_by_node(&store, &uid(&plain)).await;
        assert!(!left.contains_key("agent2") || left["agent2"].is_empty());
    }

    #[tokio::test]
    async fn rolling_update_keeps_max_unavailable() {
        let store = store();
        setup(&store).await;
        let d = store
            .create(
                &DAEMON_SETS,
                Some("default"),
                ds(
                    "roll",
                    json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}]),
                    json!({}),
                ),
            )
            .await
            .unwrap();
        let uid = text(&d, "/metadata/uid").to_string();
        sync_all(&store).await.unwrap();
        let first = pods_by_node(&store, &uid).await;
        assert_eq!(first.len(), 3);
        for p in first.values().flatten() {
            mark_ready(&store, p).await;
        }
        store
            .modify(&DAEMON_SETS, Some("default"), "roll", None, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("x:2");
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        // One node at a time (maxUnavailable 1): one old pod is going, none new yet.
        let during = pods_by_node(&store, &uid).await;
        assert_eq!(during.len(), 2, "{:?}", during.keys());
        // Once it is gone (at once here: the test nodes run no container runtime), the node
        // gets a new pod.
        sync_all(&store).await.unwrap();
        let after = pods_by_node(&store, &uid).await;
        assert_eq!(after.len(), 3);
        let images: Vec<&str> = after
            .values()
            .flatten()
            .map(|p| text(p, "/spec/containers/0/image"))
            .collect();
        assert_eq!(
            images.iter().filter(|i| **i == "x:2").count(),
            1,
            "{images:?}"
        );
        // Nothing more goes while the new pod is not available.
        sync_all(&store).await.unwrap();
        assert_eq!(pods_by_node(&store, &uid).await.len(), 3);
        let status = store
            .get(&DAEMON_SETS, Some("default"), "roll")
            .await
            .unwrap()["status"]
            .clone();
        assert_eq!(status["updatedNumberScheduled"], 1);
        assert_eq!(status["numberAvailable"], 2);
        assert_eq!(status["numberUnavailable"], 1);
    }

    async fn revisions(store: &Storage) -> Vec<(String, i64, String)> {
        let mut out: Vec<(String, i64, String)> = store
            .list(
                &CONTROLLER_REVISIONS,
                Some("default"),
                &ListOptions::default(),
            )
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| {
                (
                    text(r, "/metadata/name").to_string(),
                    revision_number(r),
                    text(r, "/data/spec/template/spec/containers/0/image").to_string(),
                )
            })
            .collect();
        out.sort_by_key(|r| r.1);
        out
    }

    async fn set_image(store: &Storage, name: &str, image: &str) {
        store
            .modify(&DAEMON_SETS, Some("default"), name, None, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn history_is_kept_as_controller_revisions() {
        let store = store();
        setup(&store).await;
        // No node matches: the history alone is looked at.
        let mut d = ds("hist", json!([]), json!({"role": "none"}));
        d["spec"]["revisionHistoryLimit"] = json!(1);
        d["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "first"});
        let d = store
            .create(&DAEMON_SETS, Some("default"), d)
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        let first = revisions(&store).await;
        let hash1 = revision_hash(&d);
        assert_eq!(first, [(format!("hist-{hash1}"), 1, "x:1".to_string())]);
        let rev = store
            .get(&CONTROLLER_REVISIONS, Some("default"), &first[0].0)
            .await
            .unwrap();
        assert_eq!(rev["metadata"]["labels"][REVISION_HASH], hash1.as_str());
        assert_eq!(rev["metadata"]["labels"]["app"], "hist");
        assert_eq!(rev["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        assert_eq!(
            rev["metadata"]["annotations"]["kubernetes.io/change-cause"],
            "first"
        );
        assert_eq!(rev["data"]["spec"]["template"]["$patch"], "replace");
        // A second pass changes nothing.
        sync_all(&store).await.unwrap();
        assert_eq!(revisions(&store).await, first);

        set_image(&store, "hist", "x:2").await;
        sync_all(&store).await.unwrap();
        let second = revisions(&store).await;
        assert_eq!(second.len(), 2, "{second:?}");
        assert_eq!(second[1].1, 2);
        assert_eq!(second[1].2, "x:2");

        // Back to the first template (what `rollout undo` does): its revision is renumbered,
        // no new one is made.
        set_image(&store, "hist", "x:1").await;
        sync_all(&store).await.unwrap();
        let third = revisions(&store).await;
        assert_eq!(
            third,
            [
                second[1].clone(),
                (first[0].0.clone(), 3, "x:1".to_string())
            ]
        );

        // A third template: the oldest unused revision goes beyond revisionHistoryLimit 1.
        set_image(&store, "hist", "x:3").await;
        sync_all(&store).await.unwrap();
        let images: Vec<(i64, String)> = revisions(&store)
            .await
            .into_iter()
            .map(|r| (r.1, r.2))
            .collect();
        assert_eq!(images, [(3, "x:1".to_string()), (4, "x:3".to_string())]);
    }

    #[tokio::test]
    async fn rolling_update_with_surge_keeps_every_node_running() {
        let store = store();
        setup(&store).await;
        let mut d = ds(
            "surge",
            json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}]),
            json!({}),
        );
        d["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        let d = store
            .create(&DAEMON_SETS, Some("default"), d)
            .await
            .unwrap();
        let uid = text(&d, "/metadata/uid").to_string();
        sync_all(&store).await.unwrap();
        for p in pods_by_node(&store, &uid).await.values().flatten() {
            mark_ready(&store, p).await;
        }
        set_image(&store, "surge", "x:2").await;
        sync_all(&store).await.unwrap();
        // One node (the surge) gets a new pod next to its old one; no old pod goes yet.
        let during = pods_by_node(&store, &uid).await;
        assert_eq!(during.len(), 3);
        let doubled: Vec<&String> = during
            .iter()
            .filter(|(_, p)| p.len() == 2)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(doubled.len(), 1, "{during:?}");
        sync_all(&store).await.unwrap();
        assert_eq!(
            pods_by_node(&store, &uid).await[doubled[0]].len(),
            2,
            "not available yet"
        );
        // The new pod is available: the old one on that node goes, the next node surges.
        let new_pod = during[doubled[0]]
            .iter()
            .find(|p| text(p, "/spec/containers/0/image") == "x:2")
            .unwrap()
            .clone();
        mark_ready(&store, &new_pod).await;
        sync_all(&store).await.unwrap();
        // (The surge was still in use during that pass, as upstream counts it.)
        sync_all(&store).await.unwrap();
        let after = pods_by_node(&store, &uid).await;
        let images: Vec<Vec<&str>> = after
            .values()
            .map(|pods| {
                pods.iter()
                    .map(|p| text(p, "/spec/containers/0/image"))
                    .collect()
            })
            .collect();
        assert_eq!(after[doubled[0]].len(), 1, "{images:?}");
        assert_eq!(
            text(&after[doubled[0]][0], "/spec/containers/0/image"),
            "x:2"
        );
        assert_eq!(
            after.values().filter(|p| p.len() == 2).count(),
            1,
            "{images:?}"
        );
        assert!(
            after.values().all(|p| !p.is_empty()),
            "no node without its daemon"
        );
    }
}
