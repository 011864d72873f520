//! Taint-based eviction on the leading server, as upstream's node lifecycle and taint-eviction
//! controllers: a node whose `Ready` condition is `False` gets the
//! `node.kubernetes.io/not-ready:NoExecute` taint, `Unknown` gets
//! `node.kubernetes.io/unreachable:NoExecute` (both with `timeAdded`), and recovery removes
//! them. Pods on a node with NoExecute taints they do not tolerate are deleted at once; pods
//! tolerating every such taint are deleted when the shortest `tolerationSeconds` of the
//! tolerations used has passed since the taint was added (never without one). Each eviction
//! is recorded as a `TaintManagerEviction` event. Like upstream's pod garbage collector, a pod
//! bound to a node that no longer exists is deleted after a quarantine. A pass runs every
//! [`PASS_INTERVAL`]; pods are read only while some node has a NoExecute taint, and every
//! [`ORPHAN_CHECK_EVERY`] passes for orphans.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::watch::store_when_ready;
use crate::controllers::scheduler::predicates::{
    NodeInfo, PodInfo, Readiness, TAINT_NOT_READY, TAINT_UNREACHABLE, Taint, Toleration,
};
use crate::datastore::StoreCell;
use crate::events::{EventRecorder, EventType, ObjectRef};
use crate::registry::{NODES, PODS};
use crate::storage::ObjectError;
use crate::storage::decoded::Decoded;
use crate::storage::pods;
use crate::storage::watch_cache::WatchCaches;
use crate::storage::{ListOptions, Storage};

/// How often taints and evictions are reconciled (also the precision of `tolerationSeconds`).
pub const PASS_INTERVAL: Duration = Duration::from_secs(1);
/// Pods are checked for a missing node every this many passes.
const ORPHAN_CHECK_EVERY: u64 = 10;
/// How long a pod may name a node that does not exist before it is deleted (upstream PodGC's
/// quarantine, so a pod created for a node about to register is not deleted at once).
const ORPHAN_QUARANTINE_SECONDS: i64 = 40;
pub const COMPONENT: &str = "taint-eviction-controller";
const NO_EXECUTE: &str = "NoExecute";

/// The condition taint a node should carry for its readiness, if any.
fn condition_taint(readiness: Readiness, has_ready_condition: bool) -> Option<&'static str> {
    match readiness {
        Readiness::Ready => None,
        Readiness::NotReady => Some(TAINT_NOT_READY),
        // A node without any Ready condition yet has simply not reported.
        Readiness::Unknown if has_ready_condition => Some(TAINT_UNREACHABLE),
        Readiness::Unknown => None,
    }
}

/// The node's `spec.taints` with the condition taints set to `want` (keeping the `timeAdded`
/// of one that stays); `None` when nothing changes.
pub fn reconcile_condition_taints(
    taints: &[Value],
    want: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Vec<Value>> {
    let is_condition = |t: &Value| {
        t["effect"] == NO_EXECUTE && (t["key"] == TAINT_NOT_READY || t["key"] == TAINT_UNREACHABLE)
    };
    let current: Vec<&Value> = taints.iter().filter(|t| is_condition(t)).collect();
    let matches = match want {
        Some(key) => current.len() == 1 && current[0]["key"] == key,
        None => current.is_empty(),
    };
    if matches {
        return None;
    }
    let mut out: Vec<Value> = taints
        .iter()
        .filter(|t| !is_condition(t))
        .cloned()
        .collect();
    if let Some(key) = want {
        out.push(json!({
            "key": key,
            "effect": NO_EXECUTE,
            "timeAdded": now.to_rfc3339_opts(SecondsFormat::Secs, true),
        }));
    }
    Some(out)
}

/// When a pod on a node with these NoExecute `taints` must go: `None` = it tolerates them
/// forever; a time at or before now = at once. `since` is when the taints were added.
/// Upstream `getMinTolerationTime` over the first toleration matching each taint.
pub fn eviction_time(
    taints: &[Taint],
    tolerations: &[Toleration],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut min: Option<i64> = None;
    let mut any = false;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        any = true;
        let Some(used) = tolerations.iter().find(|t| t.tolerates(taint)) else {
            return Some(now);
        };
        if let Some(s) = used.seconds {
            min = Some(min.map_or(s, |m| m.min(s)));
        }
    }
    if !any {
        return None;
    }
    min.map(|s| {
        if s <= 0 {
            now
        } else {
            since + chrono::Duration::seconds(s)
        }
    })
}

fn taints_of(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The controller's memory across passes: when taints without `timeAdded` were first seen.
struct Pass {
    events: EventRecorder,
    first_seen: HashMap<(String, String), DateTime<Utc>>,
    /// Passes run, to read all pods for orphans only every [`ORPHAN_CHECK_EVERY`] passes.
    count: u64,
    /// Pods bound to a node that does not exist, by `namespace/name`, with when first seen.
    orphans: HashMap<String, DateTime<Utc>>,
    /// The Nodes as last decoded.
    nodes: Decoded<NodeView>,
}

/// What a pass reads of a Node.
struct NodeView {
    info: NodeInfo,
    /// Whether it has reported a `Ready` condition at all.
    has_ready: bool,
    taints: Vec<Value>,
}

impl Pass {
    fn new(events: EventRecorder) -> Pass {
        Pass {
            events,
            first_seen: HashMap::new(),
            count: 0,
            orphans: HashMap::new(),
            nodes: Decoded::default(),
        }
    }

    async fn run(&mut self, store: &Storage) -> Result<(), ObjectError> {
        let now = Utc::now();
        // Decoded again only when a Node changes: most passes parse no Node at all.
        self.nodes
            .refresh(store, &NODES, None, |b| {
                let obj: Value = serde_json::from_slice(b).ok()?;
                Some(NodeView {
                    info: NodeInfo::from_object(&obj)?,
                    has_ready: obj
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready")),
                    taints: taints_of(&obj),
                })
            })
            .await?;
        let mut tainted: HashMap<String, (Vec<Taint>, DateTime<Utc>)> = HashMap::new();
        for view in self.nodes.iter() {
            let name = &view.info.name;
            let want = condition_taint(view.info.readiness, view.has_ready);
            let mut updated = None;
            if reconcile_condition_taints(&view.taints, want, now).is_some() {
                match store
                    .modify(&NODES, None, name, None, |n| {
                        if let Some(next) = reconcile_condition_taints(&taints_of(n), want, now) {
                            if next.is_empty() {
                                if let Some(spec) = n["spec"].as_object_mut() {
                                    spec.remove("taints");
                                }
                            } else {
                                n["spec"]["taints"] = Value::Array(next);
                            }
                        }
                        Ok::<(), ObjectError>(())
                    })
                    .await
                {
                    Ok(obj) => {
                        tracing::info!(component = COMPONENT, node = %name, "node readiness {:?}: condition taint now {}", view.info.readiness, want.unwrap_or("none"));
                        updated = NodeInfo::from_object(&obj);
                    }
                    Err(e) => {
                        tracing::debug!(component = COMPONENT, node = %name, "updating condition taints: {e}");
                    }
                }
            }
            let node = updated.as_ref().unwrap_or(&view.info);
            let no_execute: Vec<Taint> = node
                .taints
                .iter()
                .filter(|t| t.effect == NO_EXECUTE)
                .cloned()
                .collect();
            if no_execute.is_empty() {
                continue;
            }
            // The taints count from their latest addition.
            let since = no_execute
                .iter()
                .map(|t| {
                    t.time_added
                        .as_deref()
                        .and_then(parse_time)
                        .unwrap_or_else(|| {
                            *self
                                .first_seen
                                .entry((name.clone(), t.key.clone()))
                                .or_insert(now)
                        })
                })
                .max()
                .unwrap_or(now);
            tainted.insert(name.clone(), (no_execute, since));
        }
        self.first_seen.retain(|(n, _), _| tainted.contains_key(n));
        self.count += 1;
        let check_orphans = self.count.is_multiple_of(ORPHAN_CHECK_EVERY);
        if tainted.is_empty() && !check_orphans {
            return Ok(());
        }
        let node_names: std::collections::HashSet<&str> =
            self.nodes.iter().map(|v| v.info.name.as_str()).collect();
        let all = store.list(&PODS, None, &ListOptions::default()).await?;
        let mut orphans = HashMap::new();
        for obj in &all.items {
            let Some(pod) = PodInfo::from_object(obj) else {
                continue;
            };
            if check_orphans
                && !pod.node_name.is_empty()
                && !node_names.contains(pod.node_name.as_str())
            {
                let key = pod.key();
                let since = self.orphans.get(&key).copied().unwrap_or(now);
                if now - since >= chrono::Duration::seconds(ORPHAN_QUARANTINE_SECONDS) {
                    tracing::info!(component = COMPONENT, pod = %key, node = %pod.node_name, "deleting a pod bound to a node that does not exist");
                    let opts = pods::DeleteOptions {
                        uid: Some(pod.uid.clone()),
                        ..Default::default()
                    };
                    if let Err(e) = pods::delete(store, &pod.namespace, &pod.name, &opts).await {
                        tracing::debug!(component = COMPONENT, pod = %key, "deleting an orphaned pod: {e}");
                    }
                } else {
                    orphans.insert(key, since);
                }
                continue;
            }
            if pod.deleting || !pod.occupies_node() {
                continue;
            }
            let Some((taints, since)) = tainted.get(&pod.node_name) else {
                continue;
            };
            let Some(at) = eviction_time(taints, &pod.tolerations, *since, now) else {
                continue;
            };
            if at > now {
                continue;
            }
            self.evict(store, obj, &pod).await;
        }
        if check_orphans {
            self.orphans = orphans;
        }
        Ok(())
    }

    async fn evict(&self, store: &Storage, obj: &Value, pod: &PodInfo) {
        let key = pod.key();
        tracing::info!(component = COMPONENT, pod = %key, node = %pod.node_name, "evicting pod from a NoExecute-tainted node");
        if let Err(e) = self
            .events
            .record(
                &ObjectRef::of(&PODS, obj),
                EventType::Normal,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {key}"),
            )
            .await
        {
            tracing::debug!(component = COMPONENT, pod = %key, "recording the eviction event: {e}");
        }
        let opts = pods::DeleteOptions {
            uid: Some(pod.uid.clone()),
            ..Default::default()
        };
        match pods::delete(store, &pod.namespace, &pod.name, &opts).await {
            Ok(_) | Err(ObjectError::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(component = COMPONENT, pod = %key, "could not delete pod: {e}")
            }
        }
    }
}

/// Runs the controller while leading, until `cancel`; Nodes are read from this server's watch
/// caches (`caches`).
pub async fn run(
    cell: StoreCell,
    caches: Arc<WatchCaches>,
    events: EventRecorder,
    is_leader: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let Some(ds) = store_when_ready(&cell, &cancel).await else {
        return;
    };
    let store = Storage::cached(&ds, caches);
    let mut pass = Pass::new(events.clone());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PASS_INTERVAL) => {}
        }
        if !*is_leader.borrow() {
            pass = Pass::new(events.clone());
            continue;
        }
        if let Err(e) = pass.run(&store).await {
            tracing::debug!(component = COMPONENT, "taint eviction pass failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: key.into(),
            operator: "Exists".into(),
            value: String::new(),
            effect: NO_EXECUTE.into(),
            seconds,
        }
    }

    #[test]
    fn eviction_times_follow_upstream() {
        let now = Utc::now();
        let since = now - chrono::Duration::seconds(3);
        let unreachable = [taint(TAINT_UNREACHABLE, NO_EXECUTE)];
        assert_eq!(
            eviction_time(&unreachable, &[], since, now),
            Some(now),
            "untolerated: at once"
        );
        assert_eq!(
            eviction_time(&unreachable, &[tol(TAINT_UNREACHABLE, None)], since, now),
            None,
            "forever"
        );
        assert_eq!(
            eviction_time(&unreachable, &[tol(TAINT_UNREACHABLE, Some(5))], since, now),
            Some(since + chrono::Duration::seconds(5))
        );
        assert_eq!(
            eviction_time(&unreachable, &[tol(TAINT_UNREACHABLE, Some(0))], since, now),
            Some(now)
        );
        let two = [
            taint(TAINT_UNREACHABLE, NO_EXECUTE),
            taint("CriticalAddonsOnly", NO_EXECUTE),
        ];
        assert_eq!(
            eviction_time(&two, &[tol(TAINT_UNREACHABLE, Some(5))], since, now),
            Some(now),
            "one untolerated"
        );
        assert_eq!(
            eviction_time(
                &two,
                &[
                    tol(TAINT_UNREACHABLE, Some(50)),
                    tol("CriticalAddonsOnly", Some(10))
                ],
                since,
                now
            ),
            Some(since + chrono::Duration::seconds(10)),
            "the shortest period"
        );
        assert_eq!(
            eviction_time(&[taint("k", "NoSchedule")], &[], since, now),
            None,
            "NoSchedule evicts nobody"
        );
    }

    #[test]
    fn condition_taints_follow_readiness() {
        let now = Utc::now();
        let admin = json!({"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"});
        assert_eq!(
            condition_taint(Readiness::NotReady, true),
            Some(TAINT_NOT_READY)
        );
        assert_eq!(
            condition_taint(Readiness::Unknown, true),
            Some(TAINT_UNREACHABLE)
        );
        assert_eq!(condition_taint(Readiness::Unknown, false), None);
        let added =
            reconcile_condition_taints(std::slice::from_ref(&admin), Some(TAINT_UNREACHABLE), now)
                .unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!(added[1]["key"], TAINT_UNREACHABLE);
        assert!(added[1]["timeAdded"].is_string());
        assert_eq!(
            reconcile_condition_taints(&added, Some(TAINT_UNREACHABLE), now),
            None,
            "stable"
        );
        let switched = reconcile_condition_taints(&added, Some(TAINT_NOT_READY), now).unwrap();
        assert_eq!(
            switched
                .iter()
                .filter(|t| t["key"] == TAINT_NOT_READY)
                .count(),
            1
        );
        assert_eq!(
            switched
                .iter()
                .filter(|t| t["key"] == TAINT_UNREACHABLE)
                .count(),
            0
        );
        assert_eq!(
            reconcile_condition_taints(&switched, None, now).unwrap(),
            vec![admin]
        );
    }

    #[tokio::test]
    async fn a_pass_taints_lost_nodes_and_evicts_their_pods() {
        let ds = crate::datastore::Datastore::from_impl(Arc::new(
            crate::datastore::memory::MemoryStore::default(),
        ));
        let store = Storage::new(ds);
        let node = |name: &str, ready: &str, taints: Value| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"taints": taints},
                   "status": {"conditions": [{"type": "Ready", "status": ready}],
                              "nodeInfo": {"containerRuntimeVersion": "containerd://1.6"}}})
        };
        store
            .create(&NODES, None, node("lost", "Unknown", json!([])))
            .await
            .unwrap();
        store
            .create(
                &NODES,
                None,
                node(
                    "server",
                    "True",
                    json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"}]),
                ),
            )
            .await
            .unwrap();
        let pod = |name: &str, node: &str, tolerations: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": name},
                   "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}], "tolerations": tolerations},
                   "status": {"phase": "Running"}})
        };
        let forever =
            json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]);
        let now = json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}]);
        let critical = json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}]);
        for (name, node, tol) in [
            // Admission gives it the default 300 s toleration.
            ("plain", "lost", json!([])),
            ("patient", "lost", forever),
            ("impatient", "lost", now),
            ("user", "server", json!([])),
            ("addon", "server", critical),
        ] {
            store
                .create(&PODS, Some("default"), pod(name, node, tol))
                .await
                .unwrap();
        }
        let mut pass = Pass::new(EventRecorder::for_datastore(
            store.datastore().clone(),
            COMPONENT,
            "s1",
            std::time::Duration::from_secs(3600),
        ));
        pass.run(&store).await.unwrap();
        let lost = store.get(&NODES, None, "lost").await.unwrap();
        assert_eq!(lost["spec"]["taints"][0]["key"], TAINT_UNREACHABLE);
        assert_eq!(lost["spec"]["taints"][0]["effect"], "NoExecute");
        let exists = |name: &'static str| {
            let store = store.clone();
            async move {
                store
                    .get_opt(&PODS, Some("default"), name)
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        assert!(
            !exists("impatient").await,
            "tolerationSeconds 0 on an unreachable node: deleted"
        );
        assert!(exists("patient").await && exists("plain").await);
        // The server's pods: a user pod is gone; on a Ready node with a runtime the deletion
        // is graceful (the runtime finishes it), so it is marked.
        let user = store.get(&PODS, Some("default"), "user").await.unwrap();
        assert!(user["metadata"]["deletionTimestamp"].is_string());
        assert!(store.get(&PODS, Some("default"), "addon").await.unwrap()["metadata"]["deletionTimestamp"].is_null());
        let events = store
            .list(
                &crate::registry::EVENTS,
                Some("default"),
                &ListOptions::default(),
            )
            .await
            .unwrap();
        let mut evicted: Vec<&str> = events
            .items
            .iter()
            .filter(|e| e["reason"] == "TaintManagerEviction")
            .map(|e| e["involvedObject"]["name"].as_str().unwrap())
            .collect();
        evicted.sort();
        assert_eq!(evicted, ["impatient", "user"]);
        // Recovery removes the condition taint.
        store
            .modify(&NODES, None, "lost", None, |n| {
                n["status"]["conditions"][0]["status"] = json!("True");
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        pass.run(&store).await.unwrap();
        assert!(store.get(&NODES, None, "lost").await.unwrap()["spec"]["taints"].is_null());
        // A pod bound to a node that does not exist goes after the quarantine.
        store
            .create(&PODS, Some("default"), pod("orphan", "gone", json!([])))
            .await
            .unwrap();
        pass.count = ORPHAN_CHECK_EVERY - 1;
        pass.run(&store).await.unwrap();
        assert!(exists("orphan").await, "quarantined first");
        let seen = pass.orphans["default/orphan"];
        pass.orphans.insert(
            "default/orphan".into(),
            seen - chrono::Duration::seconds(ORPHAN_QUARANTINE_SECONDS),
        );
        pass.count = ORPHAN_CHECK_EVERY - 1;
        pass.run(&store).await.unwrap();
        assert!(!exists("orphan").await, "deleted after the quarantine");
        assert!(exists("plain").await);
    }
}
