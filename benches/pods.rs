//! Pod startup benchmark (docs/workloads.md, Performance): one server and two agents on loopback
//! addresses, the test images pre-imported on the agents. First 50 pods bound to one agent with
//! `spec.nodeName`, created at once: prints the create → Running latency p50/p99 (each pod from
//! its own creation, both seen by one `kubectl get pods --watch`), the time until all are
//! Running from the start of the `kubectl create`, and the agent daemon's RSS with those pods
//! running (containerd and the shims excluded). Then 100 pods across both agents: the same
//! figures. Goals: p99 <= 2 s, 100 pods all Running <= 30 s, agent RSS <= 32 MiB.
//! Run with `cargo bench --bench pods` (root, containerd/runc/CNI plugins installed);
//! `RKE2_BENCH_BIN=<an earlier rke2>` runs it against another build for before/after figures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::workloads::*;
use common::*;

/// Creates `pods` (name, node) at once and prints their startup figures once all are Running.
fn batch(cluster: &PodCluster, title: &str, pods: &[(String, String)]) {
    let k = &cluster.kubeconfig;
    let mut yaml = String::new();
    for (name, node) in pods {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {BUSYBOX_IMAGE}\n    command: [\"sleep\", \"3600\"]\n"
        ));
    }
    let file = cluster.root.path().join("pods.yaml");
    std::fs::write(&file, yaml).unwrap();
    let times = PodTimes::start(k);
    let start = Instant::now();
    // `create` is one POST per pod (`apply` would read each first).
    kubectl_ok(
        k,
        &[
            "create",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ],
    );
    let created = start.elapsed();
    wait_for(Duration::from_secs(300), "all pods Running", || {
        (times.running() == pods.len()).then_some(())
    });
    let (lat, last) = times.latencies();
    let total = last.expect("pods Running") - start;
    println!("{title} (create -> Running, pre-imported image)");
    println!("  p50 startup: {:.2} s", quantile(&lat, 0.50).as_secs_f64());
    println!("  p99 startup: {:.2} s", quantile(&lat, 0.99).as_secs_f64());
    println!(
        "  all Running after: {:.2} s (kubectl create took {:.2} s)",
        total.as_secs_f64(),
        created.as_secs_f64()
    );
}

/// Deletes every pod and waits until they are gone.
fn delete_pods(k: &std::path::Path) {
    kubectl(k, &["delete", "pods", "--all", "--wait=false"]);
    wait_for(Duration::from_secs(180), "the pods gone", || {
        let out = kubectl(k, &["get", "pods", "-o", "name"]);
        (out.status.success() && out.stdout.is_empty()).then_some(())
    });
}

fn main() {
    // Pod CIDRs from the block (a /26 per node, three nodes), so runs next to other tests
    // never share a pod range.
    let block = AddrBlock::new();
    let block_octet = block.ip(1).octets()[1];
    let mut cluster = PodCluster::start(
        block,
        2,
        &[
            ("cluster-cidr", format!("198.18.{block_octet}.0/24")),
            ("node-cidr-mask-size", "26".into()),
            ("service-cidr", "198.19.0.0/16".into()),
        ],
        &[],
    );
    let nodes: Vec<String> = cluster.agents.iter().map(|(n, _)| n.clone()).collect();

    let one: Vec<(String, String)> = (0..50)
        .map(|i| (format!("b{i}"), nodes[0].clone()))
        .collect();
    batch(&cluster, "pods: 50 on one agent", &one);
    let rss = proc_status_kib(cluster.agents[0].1.daemon.pid(), "VmRSS:");
    println!(
        "  agent daemon RSS with 50 pods: {:.1} MiB (containerd excluded)",
        rss as f64 / 1024.0
    );
    delete_pods(&cluster.kubeconfig);

    let two: Vec<(String, String)> = (0..100)
        .map(|i| (format!("c{i}"), nodes[i % 2].clone()))
        .collect();
    batch(&cluster, "pods: 100 across 2 agents", &two);
    cluster.stop_pods(&[]);
}
