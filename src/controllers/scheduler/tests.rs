//! The scheduler loop over the in-memory store: binding, unschedulable reporting and events,
//! retries on node and pod changes, cordon, leadership.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::datastore::memory::MemoryStore;
use crate::registry::EVENTS;

fn storage() -> (Datastore, Storage) {
    let ds = Datastore::from_impl(Arc::new(MemoryStore::default()));
    (ds.clone(), Storage::new(ds))
}

fn node(name: &str, taints: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}},
    })
}

fn pod(name: &str, spec: Value) -> Value {
    let mut s = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
           "spec": s, "status": {"phase": "Pending"}})
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn node_of(s: &Storage, name: &str) -> String {
    s.get(&PODS, Some("default"), name).await.unwrap()["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

struct Running {
    cancel: CancellationToken,
    leader: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn start(ds: &Datastore) -> Running {
    let (leader, rx) = watch::channel(true);
    let cancel = CancellationToken::new();
    let events = crate::events::EventRecorder::for_datastore(
        ds.clone(),
        COMPONENT,
        "s1",
        std::time::Duration::from_secs(3600),
    );
    tokio::spawn(run(ds.clone(), events, rx, cancel.clone()));
    Running { cancel, leader }
}

#[tokio::test]
async fn binds_pending_pods_and_respects_taints() {
    let (ds, s) = storage();
    let critical = json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"}]);
    s.create(&NODES, None, node("server", critical))
        .await
        .unwrap();
    for a in ["agent-1", "agent-2"] {
        s.create(&NODES, None, node(a, json!([]))).await.unwrap();
    }
    for i in 0..6 {
        s.create(&PODS, Some("default"), pod(&format!("web-{i}"), json!({})))
            .await
            .unwrap();
    }
    let tolerant = json!({"tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                          "nodeSelector": {"kubernetes.io/hostname": "server"}});
    s.create(&PODS, Some("default"), pod("addon", tolerant))
        .await
        .unwrap();
    // A pod naming its node and one for another scheduler are left alone.
    s.create(
        &PODS,
        Some("default"),
        pod("pinned", json!({"nodeName": "server"})),
    )
    .await
    .unwrap();
    s.create(
        &PODS,
        Some("default"),
        pod("other", json!({"schedulerName": "custom"})),
    )
    .await
    .unwrap();
    let _run = start(&ds);
    wait_for("all pods bound", || async {
        for i in 0..6 {
            if node_of(&s, &format!("web-{i}")).await.is_empty() {
                return false;
            }
        }
        !node_of(&s, "addon").await.is_empty()
    })
    .await;
    let mut per_agent = std::collections::BTreeMap::new();
    for i in 0..6 {
        let n = node_of(&s, &format!("web-{i}")).await;
        assert!(n.starts_with("agent-"), "web-{i} landed on {n}");
        *per_agent.entry(n).or_insert(0) += 1;
    }
    assert_eq!(
        per_agent.values().copied().collect::<Vec<_>>(),
        vec![3, 3],
        "spread evenly"
    );
    assert_eq!(node_of(&s, "addon").await, "server");
    assert_eq!(node_of(&s, "other").await, "");
    let web = s.get(&PODS, Some("default"), "web-0").await.unwrap();
    assert_eq!(web["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(web["status"]["conditions"][0]["status"], "True");
}

#[tokio::test]
async fn unschedulable_pods_get_the_message_and_an_event_then_retry_on_node_changes() {
    let (ds, s) = storage();
    let critical = json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"}]);
    s.create(&NODES, None, node("server", critical))
        .await
        .unwrap();
    let mut cordoned = node("agent", json!([]));
    cordoned["spec"]["unschedulable"] = json!(true);
    s.create(&NODES, None, cordoned).await.unwrap();
    s.create(&PODS, Some("default"), pod("waiting", json!({})))
        .await
        .unwrap();
    let _run = start(&ds);
    let expected = "0/2 nodes are available: 1 node(s) had untolerated taint {CriticalAddonsOnly: true}, \
                    1 node(s) were unschedulable. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling..";
    wait_for("the PodScheduled=False condition", || async {
        let p = s.get(&PODS, Some("default"), "waiting").await.unwrap();
        p.pointer("/status/conditions/0/reason") == Some(&json!("Unschedulable"))
    })
    .await;
    let p = s.get(&PODS, Some("default"), "waiting").await.unwrap();
    assert_eq!(p["status"]["conditions"][0]["status"], "False");
    assert_eq!(p["status"]["conditions"][0]["message"], expected);
    let events = s
        .list(&EVENTS, Some("default"), &ListOptions::default())
        .await
        .unwrap();
    let failed: Vec<&Value> = events
        .items
        .iter()
        .filter(|e| e["reason"] == "FailedScheduling")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["message"], expected);
    assert_eq!(failed[0]["involvedObject"]["name"], "waiting");
    assert_eq!(failed[0]["type"], "Warning");
    // Uncordoning the agent lets the pod through.
    s.modify(&NODES, None, "agent", None, |n| {
        n["spec"]["unschedulable"] = json!(false);
        Ok::<(), crate::storage::ObjectError>(())
    })
    .await
    .unwrap();
    wait_for("binding after uncordon", || async {
        node_of(&s, "waiting").await == "agent"
    })
    .await;
    let p = s.get(&PODS, Some("default"), "waiting").await.unwrap();
    assert_eq!(p["status"]["conditions"][0]["status"], "True");
}

#[tokio::test]
async fn a_full_node_takes_pods_again_when_one_is_deleted() {
    let (ds, s) = storage();
    let mut small = node("small", json!([]));
    small["status"]["allocatable"]["cpu"] = json!("1");
    s.create(&NODES, None, small).await.unwrap();
    let big = json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "800m"}}}]});
    s.create(&PODS, Some("default"), pod("first", big.clone()))
        .await
        .unwrap();
    let _run = start(&ds);
    wait_for("first bound", || async {
        node_of(&s, "first").await == "small"
    })
    .await;
    s.create(&PODS, Some("default"), pod("second", big))
        .await
        .unwrap();
    wait_for("second unschedulable", || async {
        let p = s.get(&PODS, Some("default"), "second").await.unwrap();
        p.pointer("/status/conditions/0/message").and_then(Value::as_str).is_some_and(|m| {
            m == "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
        })
    })
    .await;
    s.delete(&PODS, Some("default"), "first", None, None)
        .await
        .unwrap();
    wait_for("second bound", || async {
        node_of(&s, "second").await == "small"
    })
    .await;
}

/// On a paused clock, a sleep returns only once every task is idle: after it, the scheduler
/// has processed everything it was sent, so "nothing was bound" is a settled fact, not a race.
#[tokio::test(start_paused = true)]
async fn nothing_is_scheduled_without_leadership() {
    let (ds, s) = storage();
    s.create(&NODES, None, node("n", json!([]))).await.unwrap();
    s.create(&PODS, Some("default"), pod("p", json!({})))
        .await
        .unwrap();
    let run = start(&ds);
    wait_for("bound while leading", || async {
        node_of(&s, "p").await == "n"
    })
    .await;
    run.leader.send(false).unwrap();
    // Let the loop see the lost leadership before the pod arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.create(&PODS, Some("default"), pod("q", json!({})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node_of(&s, "q").await, "", "a follower must not bind");
    run.leader.send(true).unwrap();
    wait_for("bound after regaining leadership", || async {
        node_of(&s, "q").await == "n"
    })
    .await;
}

#[tokio::test]
async fn gated_pods_wait_for_their_gates_to_be_removed() {
    let (ds, s) = storage();
    s.create(&NODES, None, node("n", json!([]))).await.unwrap();
    s.create(
        &PODS,
        Some("default"),
        pod("a-gated", json!({"schedulingGates": [{"name": "wait"}]})),
    )
    .await
    .unwrap();
    s.create(&PODS, Some("default"), pod("free", json!({})))
        .await
        .unwrap();
    // Queued in name order, "a-gated" would be bound before "free" without its gate.
    let _run = start(&ds);
    wait_for("the ungated pod bound", || async {
        node_of(&s, "free").await == "n"
    })
    .await;
    let gated = s.get(&PODS, Some("default"), "a-gated").await.unwrap();
    assert_eq!(gated["spec"]["nodeName"], Value::Null, "a gated pod waits");
    assert_eq!(
        gated["status"]["conditions"][0]["reason"],
        "SchedulingGated"
    );
    s.modify(&PODS, Some("default"), "a-gated", None, |p| {
        p["spec"]["schedulingGates"] = json!([]);
        Ok::<(), crate::storage::ObjectError>(())
    })
    .await
    .unwrap();
    wait_for("bound once ungated", || async {
        node_of(&s, "a-gated").await == "n"
    })
    .await;
}
