//! Scheduler throughput (issue 12 bench): pods bound per second with 1,000 pending pods on 100
//! simulated nodes over the in-memory store, through the real scheduling path (filters,
//! scores, the binding write and the Scheduled event per pod). Goal: >= 500 pods/s.
//! Run: `cargo bench --bench scheduler` (`--profile dev` for a quick, pessimistic figure).

use std::sync::Arc;
use std::time::Instant;

use rke2::controllers::scheduler::Scheduler;
use rke2::datastore::{Datastore, memory::MemoryStore};
use rke2::events::EventRecorder;
use rke2::registry::{NODES, PODS};
use rke2::storage::{ListOptions, Storage};
use serde_json::json;

const NODES_N: usize = 100;
const PODS_N: usize = 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = Storage::new(Datastore::from_impl(Arc::new(MemoryStore::default())));
    for i in 0..NODES_N {
        let taints = if i % 10 == 0 {
            json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"}])
        } else {
            json!([])
        };
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("node-{i:03}"), "labels": {"kubernetes.io/hostname": format!("node-{i:03}"), "zone": format!("z{}", i % 3)}},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}},
        });
        store.create(&NODES, None, node).await.unwrap();
    }
    for i in 0..PODS_N {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{i:04}"), "namespace": "default",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("rs-{}", i % 20), "uid": format!("rs-{}", i % 20), "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z0", "z1", "z2"]}]}]}}}},
        });
        store.create(&PODS, Some("default"), pod).await.unwrap();
    }
    let events = EventRecorder::for_datastore(
        store.datastore().clone(),
        "default-scheduler",
        "bench",
        std::time::Duration::from_secs(3600),
    );
    let mut scheduler = Scheduler::new(store.clone(), events);
    let started = Instant::now();
    scheduler.load().await.unwrap();
    while scheduler.schedule_next().await {}
    let elapsed = started.elapsed();
    let pods = store
        .list(&PODS, None, &ListOptions::default())
        .await
        .unwrap();
    let bound = pods
        .items
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
        .count();
    assert_eq!(bound, PODS_N, "every pod fits somewhere");
    println!(
        "scheduler: {bound} pods bound on {NODES_N} nodes in {:.3} s = {:.0} pods/s (goal >= 500 pods/s)",
        elapsed.as_secs_f64(),
        bound as f64 / elapsed.as_secs_f64()
    );
}
