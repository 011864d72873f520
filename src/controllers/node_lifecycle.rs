//! The node lifecycle controller (leader only): a node whose Lease in `kube-node-lease` went
//! unrenewed for `node-monitor-grace-period` gets `Ready=Unknown`, as upstream's node lifecycle
//! controller does; a node agent that comes back reports `Ready=True` itself
//! (docs/architecture.md §5.5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::RECONCILE_INTERVAL;
use crate::daemon::Runtime;
use crate::datastore::StoreCell;
use crate::registry::{LEASES, NODES};
use crate::storage::decoded::Decoded;
use crate::storage::watch_cache::WatchCaches;
use crate::storage::{ObjectError, Storage};

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[derive(serde::Deserialize)]
pub(super) struct NameOnly {
    pub(super) name: String,
}

#[derive(serde::Deserialize, Default)]
struct ConditionFacts {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    status: String,
}

#[derive(serde::Deserialize, Default)]
struct NodeStatusFacts {
    #[serde(default)]
    conditions: Vec<ConditionFacts>,
}

/// The fields of a Node the lifecycle controller reads.
#[derive(serde::Deserialize)]
pub(super) struct NodeFacts {
    pub(super) metadata: NameOnly,
    #[serde(default)]
    status: NodeStatusFacts,
}

impl NodeFacts {
    pub(super) fn ready_status(&self) -> Option<&str> {
        self.status
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .map(|c| c.status.as_str())
    }
}

#[derive(serde::Deserialize, Default)]
struct LeaseSpecFacts {
    #[serde(rename = "renewTime")]
    renew_time: Option<String>,
}

/// The fields of a Lease the lifecycle controller reads.
#[derive(serde::Deserialize)]
struct LeaseFacts {
    metadata: NameOnly,
    #[serde(default)]
    spec: LeaseSpecFacts,
}

/// What the controller keeps across passes while leading: when each node was first seen, and
/// the decoded Nodes and Lease renew times (decoded again only when they change).
#[derive(Default)]
struct Memory {
    first_seen: BTreeMap<String, DateTime<Utc>>,
    nodes: Decoded<NodeFacts>,
    renewals: Decoded<(String, DateTime<Utc>)>,
}

/// Marks nodes whose Lease went unrenewed for `grace` `Ready=Unknown`, while `is_leader`.
/// `now` is the clock the grace period is measured on: the wall clock in production (Lease
/// renew times are wall-clock stamps), tokio's paused clock in unit tests. Nodes and Leases are
/// read from this server's watch caches (`caches`), as upstream's controller reads informers.
pub async fn run<C>(
    store: StoreCell,
    caches: Arc<WatchCaches>,
    runtime: Runtime,
    grace: Duration,
    is_leader: tokio::sync::watch::Receiver<bool>,
    now: C,
    cancel: CancellationToken,
) where
    C: Fn() -> DateTime<Utc>,
{
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::seconds(40));
    let ticker = runtime.liveness("node-lifecycle", RECONCILE_INTERVAL);
    // A node seen for the first time gets a full grace period from now, so a new leader does
    // not mark everything Unknown based on stale timestamps.
    let mut memory = Memory::default();
    loop {
        ticker.tick();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
        }
        if !*is_leader.borrow() {
            memory = Memory::default();
            continue;
        }
        let Some(store) = store.get().map(|ds| Storage::cached(ds, caches.clone())) else {
            continue;
        };
        reconcile(&store, grace, now(), &mut memory).await;
    }
}

/// One pass: every node whose last renewal (or first sighting) is older than `grace` and that
/// is not already `Unknown` gets `Ready=Unknown`.
async fn reconcile(
    store: &Storage,
    grace: chrono::Duration,
    now: DateTime<Utc>,
    memory: &mut Memory,
) {
    // Only names, Ready status and renew times are needed: decode just those, and only for
    // objects written since the last pass, so this loop stays cheap with thousands of nodes.
    let Memory {
        first_seen,
        nodes,
        renewals,
    } = memory;
    let listed = nodes
        .refresh(store, &NODES, None, |b| serde_json::from_slice(b).ok())
        .await;
    let renewed = renewals
        .refresh(store, &LEASES, Some("kube-node-lease"), |b| {
            let l: LeaseFacts = serde_json::from_slice(b).ok()?;
            Some((l.metadata.name, parse_time(l.spec.renew_time.as_deref()?)?))
        })
        .await;
    if listed.is_err() || renewed.is_err() {
        return;
    }
    let renewals: HashMap<&str, DateTime<Utc>> =
        renewals.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    for node in nodes.iter() {
        let name = node.metadata.name.as_str();
        let seen = match first_seen.get(name) {
            Some(t) => *t,
            None => *first_seen.entry(name.to_string()).or_insert(now),
        };
        let last = renewals.get(name).copied().unwrap_or(seen).max(seen);
        if now - last <= grace || node.ready_status() == Some("Unknown") {
            continue;
        }
        tracing::warn!(
            component = "node-lifecycle",
            node = name,
            "node stopped renewing its lease; marking it Ready=Unknown"
        );
        let result: Result<Value, ObjectError> = store
            .modify(&NODES, None, name, None, |n| {
                let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let conds = n["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut out: Vec<Value> =
                    conds.into_iter().filter(|c| c["type"] != "Ready").collect();
                out.push(json!({
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }));
                n["status"]["conditions"] = Value::Array(out);
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(
                component = "node-lifecycle",
                node = name,
                "could not update node: {e}"
            );
        }
    }
    let names: HashSet<&str> = nodes.iter().map(|n| n.metadata.name.as_str()).collect();
    first_seen.retain(|n, _| names.contains(n.as_str()));
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use tokio::time::Instant;

    use super::*;
    use crate::datastore::Datastore;
    use crate::datastore::memory::MemoryStore;

    const GRACE: Duration = Duration::from_secs(40);

    fn stamp(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    async fn ready(store: &Storage, node: &str) -> String {
        let n = store.get(&NODES, None, node).await.unwrap();
        n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .map(|c| c["status"].as_str().unwrap().to_string())
            .unwrap()
    }

    /// What a node agent does on a heartbeat: renew its Lease, report Ready.
    async fn heartbeat(store: &Storage, node: &str, now: DateTime<Utc>) {
        store
            .modify(&LEASES, Some("kube-node-lease"), node, None, |l| {
                l["spec"]["renewTime"] = json!(stamp(now));
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        store
            .modify(&NODES, None, node, None, |n| {
                n["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
    }

    /// An in-memory datastore as the controller sees it (a cell, and started watch caches
    /// over it) and as the test writes to it.
    fn memory_store() -> (StoreCell, Arc<WatchCaches>, Storage) {
        let datastore = Datastore::from_impl(MemoryStore::new());
        let cell: StoreCell = Arc::new(tokio::sync::OnceCell::new());
        cell.set(datastore.clone()).unwrap();
        let caches = Arc::new(WatchCaches::new(
            CancellationToken::new(),
            Default::default(),
        ));
        caches.start_all(&datastore);
        (cell, caches, Storage::new(datastore))
    }

    /// A Node reporting `Ready=True`.
    async fn ready_node(store: &Storage, name: &str) {
        store
            .create(
                &NODES,
                None,
                json!({"metadata": {"name": name},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            )
            .await
            .unwrap();
    }

    /// A wall clock that follows tokio's paused clock from a fixed time.
    fn paused_clock() -> impl Fn() -> DateTime<Utc> + Copy {
        let (t0, wall0) = (
            Instant::now(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        );
        move || wall0 + chrono::Duration::from_std(Instant::now() - t0).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn unrenewed_nodes_turn_unknown_after_the_grace_period_and_renewed_ones_stay_ready() {
        let (cell, caches, store) = memory_store();
        let clock = paused_clock();
        for node in ["n1", "n2"] {
            ready_node(&store, node).await;
            store
                .create(
                    &LEASES,
                    Some("kube-node-lease"),
                    json!({"metadata": {"name": node}, "spec": {"renewTime": stamp(clock())}}),
                )
                .await
                .unwrap();
        }
        let (_leader, is_leader) = tokio::sync::watch::channel(true);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            cell,
            caches,
            Runtime::new("s1", "server"),
            GRACE,
            is_leader,
            clock,
            cancel.clone(),
        ));

        // Within the grace period both stay Ready; n2 keeps renewing from here on.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            heartbeat(&store, "n2", clock()).await;
        }
        assert_eq!(ready(&store, "n1").await, "True");
        // Past it (plus one reconcile interval), the silent node is Unknown, the live one not.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            heartbeat(&store, "n2", clock()).await;
        }
        assert_eq!(ready(&store, "n1").await, "Unknown");
        assert_eq!(ready(&store, "n2").await, "True");
        let n1 = store.get(&NODES, None, "n1").await.unwrap();
        assert_eq!(n1["status"]["conditions"][0]["reason"], "NodeStatusUnknown");

        // n1's agent comes back: it is Ready again and the controller leaves it so while it
        // renews, then marks it Unknown once more a grace period after it stops.
        heartbeat(&store, "n1", clock()).await;
        tokio::time::sleep(GRACE - Duration::from_secs(5)).await;
        assert_eq!(ready(&store, "n1").await, "True");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ready(&store, "n1").await, "Unknown");

        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_changes_nothing() {
        let (cell, caches, store) = memory_store();
        ready_node(&store, "n1").await;
        let (_leader, is_leader) = tokio::sync::watch::channel(false);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            cell,
            caches,
            Runtime::new("s1", "server"),
            GRACE,
            is_leader,
            paused_clock(),
            cancel.clone(),
        ));
        tokio::time::sleep(GRACE * 3).await;
        assert_eq!(ready(&store, "n1").await, "True");
        cancel.cancel();
        task.await.unwrap();
    }
}
