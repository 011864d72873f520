//! The node lifecycle controller (leader only): a node whose Lease in `kube-node-lease` went
//! unrenewed for `node-monitor-grace-period` gets `Ready=Unknown`, as upstream's node lifecycle
//! controller does; a node agent that comes back reports `Ready=True` itself
//! (docs/architecture.md §5.5).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::RECONCILE_INTERVAL;
use crate::daemon::Runtime;
use crate::datastore::StoreCell;
use crate::registry::{LEASES, NODES};
use crate::storage::{ListOptions, ObjectError, Storage};

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

/// Marks nodes whose Lease went unrenewed for `grace` `Ready=Unknown`, while `is_leader`.
/// `now` is the clock the grace period is measured on: the wall clock in production (Lease
/// renew times are wall-clock stamps), tokio's paused clock in unit tests.
pub async fn run<C>(
    store: StoreCell,
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
    let mut first_seen: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    loop {
        ticker.tick();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
        }
        if !*is_leader.borrow() {
            first_seen.clear();
            continue;
        }
        let Some(store) = store.get().cloned().map(Storage::new) else {
            continue;
        };
        reconcile(&store, grace, now(), &mut first_seen).await;
    }
}

/// One pass: every node whose last renewal (or first sighting) is older than `grace` and that
/// is not already `Unknown` gets `Ready=Unknown`.
async fn reconcile(
    store: &Storage,
    grace: chrono::Duration,
    now: DateTime<Utc>,
    first_seen: &mut BTreeMap<String, DateTime<Utc>>,
) {
    // Only names, Ready status and renew times are needed: decode just those, so this
    // loop stays cheap with thousands of nodes.
    let (Ok(nodes), Ok(leases)) = (
        store
            .list_stored(&NODES, None, &ListOptions::default())
            .await,
        store
            .list_stored(&LEASES, Some("kube-node-lease"), &ListOptions::default())
            .await,
    ) else {
        return;
    };
    let nodes: Vec<NodeFacts> = nodes
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    let renewals: BTreeMap<String, DateTime<Utc>> = leases
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<LeaseFacts>(&kv.value).ok())
        .filter_map(|l| Some((l.metadata.name, parse_time(l.spec.renew_time.as_deref()?)?)))
        .collect();
    for node in &nodes {
        let name = node.metadata.name.as_str();
        let seen = *first_seen.entry(name.to_string()).or_insert(now);
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
    first_seen.retain(|n, _| nodes.iter().any(|x| &x.metadata.name == n));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    /// An in-memory datastore as the controller sees it (a cell) and as the test writes to it.
    fn memory_store() -> (StoreCell, Storage) {
        let datastore = Datastore::from_impl(MemoryStore::new());
        let cell: StoreCell = Arc::new(tokio::sync::OnceCell::new());
        cell.set(datastore.clone()).unwrap();
        (cell, Storage::new(datastore))
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
        let (cell, store) = memory_store();
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
        let (cell, store) = memory_store();
        ready_node(&store, "n1").await;
        let (_leader, is_leader) = tokio::sync::watch::channel(false);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            cell,
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
