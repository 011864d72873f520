//! Deployment benchmark (issue 13, docs/workloads.md, Performance): one server and two agents on
//! loopback addresses, the test image pre-imported on the agents under two names. Prints the
//! time from creating a 100-replica Deployment to all 100 replicas Ready, then the time to roll
//! a new image across it (`kubectl set image` to every replica updated and Ready, the old ones
//! gone). The Deployment's status is polled (one kubectl at a time, 100 ms apart), so figures
//! are ± a poll (about 0.2 s). Goal: 100 replicas Ready <= 45 s. Run with
//! `cargo bench --bench deployment` (root, containerd/runc/CNI plugins installed).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::workloads::*;
use common::*;

const REPLICAS: usize = 100;
/// The same busybox image under a second name, the rollout's "new image".
const NEW_IMAGE: &str = "docker.io/library/bb:2";

/// Polls the Deployment until `status` (replicas/updated/ready/available, observedGeneration)
/// says every replica is updated, Ready and the only one left.
fn wait_rolled_out(k: &std::path::Path, what: &str) {
    let want = format!("{REPLICAS}/{REPLICAS}/{REPLICAS}/{REPLICAS}");
    wait_for(Duration::from_secs(600), what, || {
        let out = kubectl(
            k,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.status.replicas}/{.status.updatedReplicas}/{.status.readyReplicas}/{.status.availableReplicas} {.status.observedGeneration} {.metadata.generation}",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut f = text.split_whitespace();
        let (Some(counts), Some(observed), Some(generation)) = (f.next(), f.next(), f.next())
        else {
            return None;
        };
        (counts == want && observed == generation).then_some(())
    });
}

fn main() {
    let block = AddrBlock::new();
    let octet = block.ip(1).octets()[1];
    // A /25 per node (up to 125 pods on one agent during the rollout's surge), pod CIDRs from
    // the block so runs next to other tests never share a range.
    let mut cluster = PodCluster::start(
        block,
        2,
        &[
            ("cluster-cidr", format!("198.18.{}.0/23", octet & !1)),
            ("node-cidr-mask-size", "25".into()),
            ("service-cidr", "198.19.0.0/16".into()),
        ],
        &[NEW_IMAGE],
    );
    let k = cluster.kubeconfig.clone();
    // The replicas go to the agents only (the server has no test images).
    for (name, _) in &cluster.agents {
        kubectl_ok(&k, &["label", "node", name, "bench=pods"]);
    }
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {REPLICAS}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      nodeSelector: {{bench: pods}}\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {BUSYBOX_IMAGE}\n        command: [\"sleep\", \"3600\"]\n"
    );
    let file = cluster.root.path().join("web.yaml");
    std::fs::write(&file, yaml).unwrap();

    let start = Instant::now();
    kubectl_ok(&k, &["create", "-f", &file.display().to_string()]);
    wait_rolled_out(&k, "100 replicas Ready");
    let ready = start.elapsed();

    let start = Instant::now();
    kubectl_ok(
        &k,
        &["set", "image", "deploy/web", &format!("c={NEW_IMAGE}")],
    );
    wait_rolled_out(&k, "the new image rolled out");
    let rollout = start.elapsed();

    println!("deployment: {REPLICAS} replicas on 2 agents (pre-imported images)");
    println!("  create -> all Ready: {:.1} s", ready.as_secs_f64());
    println!(
        "  rollout of a new image -> all updated and Ready: {:.1} s",
        rollout.as_secs_f64()
    );
    cluster.stop_pods(&["deploy/web"]);
}
