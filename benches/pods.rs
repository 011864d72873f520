//! Pod startup benchmark (docs/workloads.md, Performance): one server and two agents on loopback
//! addresses, the test images pre-imported on the agents. First 50 pods bound to one agent with
//! `spec.nodeName`, created at once: prints the create → Running latency p50/p99 (each pod from
//! its own creation, both seen by one `kubectl get pods --watch`), the time until all are
//! Running from the start of the `kubectl create`, and the agent daemon's RSS with those pods
//! running (containerd and the shims excluded). Then 100 pods across both agents: the same
//! figures. Goals: p99 <= 2 s, 100 pods all Running <= 30 s, agent RSS <= 32 MiB. After each
//! batch, all its pods (grace period 1 s) are deleted at once: prints the time until the last
//! one is gone and where the kubelets' stops went (p50/p99 of their `pod stopped` figures).
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

/// Deletes every pod (`prefix` names them) and prints the time until the last Pod object is
/// gone, from the start of the `kubectl delete`, and the kubelets' own figures for those pods
/// (their `pod stopped` log lines).
fn delete_pods(cluster: &PodCluster, title: &str, prefix: &str) {
    let k = &cluster.kubeconfig;
    let start = Instant::now();
    kubectl(k, &["delete", "pods", "--all", "--wait=false"]);
    let deleted = start.elapsed();
    wait_for(Duration::from_secs(300), "the pods gone", || {
        let out = kubectl(k, &["get", "pods", "-o", "name"]);
        (out.status.success() && out.stdout.is_empty()).then_some(())
    });
    println!("{title} (delete -> gone, grace period 1 s)");
    println!(
        "  all gone after: {:.2} s (kubectl delete took {:.2} s)",
        start.elapsed().as_secs_f64(),
        deleted.as_secs_f64()
    );
    let logs: String = cluster
        .agents
        .iter()
        .map(|(_, a)| a.daemon.log_text())
        .collect();
    let stopped: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("pod stopped") && l.contains(&format!("pod={prefix}")))
        .collect();
    for field in [
        "total_ms",
        "pre_stop_ms",
        "containers_ms",
        "sandbox_ms",
        "delete_ms",
    ] {
        let mut v: Vec<Duration> = stopped
            .iter()
            .filter_map(|l| log_field(l, field))
            .map(Duration::from_millis)
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort();
        println!(
            "  kubelet {field}: p50 {} p99 {} ({} pods)",
            quantile(&v, 0.50).as_millis(),
            quantile(&v, 0.99).as_millis(),
            v.len()
        );
    }
}

/// The number after `field=` in a log line.
fn log_field(line: &str, field: &str) -> Option<u64> {
    let at = line.find(&format!(" {field}="))? + field.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
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
    delete_pods(&cluster, "pods: delete 50 on one agent", "b");

    let two: Vec<(String, String)> = (0..100)
        .map(|i| (format!("c{i}"), nodes[i % 2].clone()))
        .collect();
    batch(&cluster, "pods: 100 across 2 agents", &two);
    delete_pods(&cluster, "pods: delete 100 across 2 agents", "c");
    cluster.stop_pods(&[]);
}
