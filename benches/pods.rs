//! Pod startup benchmark (docs/workloads.md): one server and one agent on loopback addresses,
//! the test images pre-imported on the agent, then 50 pods bound to the agent with
//! `spec.nodeName` created at once. Prints the create → Running latency p50/p99 and the total
//! time (polled every 100 ms, so figures are ±0.1 s), and the agent daemon's RSS with those pods
//! running (containerd and the shims excluded). Goals: p99 <= 2 s, agent RSS <= 32 MiB.
//! Run with `cargo bench --bench pods` (root, containerd/runc/CNI plugins installed).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::workloads::*;
use common::*;

const PODS: usize = 50;

fn main() {
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let server_ip = block.ip(1);
    let agent_ip = block.ip(2);
    // Node names (and so CNI bridge names) and the cluster CIDR (a /25 of 198.18.0.0/16, a /26
    // per node) are derived from the address block, so runs next to other tests never share a
    // bridge or a pod range.
    let o = agent_ip.octets();
    let (server_name, agent_name) = (
        format!("bs{}x{}", o[1], o[2]),
        format!("ba{}x{}", o[1], o[2]),
    );
    let cluster_cidr = format!("198.18.{}.{}/25", o[1], (o[2] % 2) * 128);
    let server = start_server(
        &server_name,
        server_ip,
        root.path(),
        &[
            ("cluster-cidr", cluster_cidr),
            ("node-cidr-mask-size", "26".into()),
            ("service-cidr", "198.19.0.0/16".into()),
            ("pause-image", PAUSE_IMAGE.into()),
        ],
    );
    let _server_cleanup = NodeCleanup(server.data_dir());
    let k = server.kubeconfig.clone();
    wait_node_ready(&k, &server_name, Duration::from_secs(120));
    let agent_dir = root.path().join(&agent_name);
    build_images(
        &root.path().join("build"),
        &agent_dir.join("data/agent/images"),
    );
    let _agent_cleanup = NodeCleanup(agent_dir.join("data"));
    let mut agent = start_agent(
        &agent_name,
        agent_ip,
        root.path(),
        &server.supervisor(),
        &server.token(),
        &[("pause-image", PAUSE_IMAGE.into())],
    );
    wait_node_ready(&k, &agent_name, Duration::from_secs(120));
    wait_for(Duration::from_secs(60), "agent images and CNI", || {
        let out = kubectl(
            &k,
            &[
                "get",
                "node",
                &agent_name,
                "-o",
                "jsonpath={.status.images[*].names}",
            ],
        );
        let cni = agent_dir.join("data/agent/etc/cni/net.d/10-rke2-bridge.conflist");
        (String::from_utf8_lossy(&out.stdout).contains("bb:1") && cni.is_file()).then_some(())
    });

    let mut yaml = String::new();
    for i in 0..PODS {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b{i}}}\nspec:\n  nodeName: {agent_name}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {BUSYBOX_IMAGE}\n    command: [\"sleep\", \"3600\"]\n"
        ));
    }
    let file = root.path().join("pods.yaml");
    std::fs::write(&file, yaml).unwrap();
    let start = Instant::now();
    kubectl_ok(
        &k,
        &[
            "apply",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ],
    );
    let mut running: BTreeMap<String, Duration> = BTreeMap::new();
    wait_for(Duration::from_secs(300), "all pods Running", || {
        let out = kubectl(
            &k,
            &[
                "get",
                "pods",
                "--no-headers",
                "-o",
                "custom-columns=N:.metadata.name,P:.status.phase",
            ],
        );
        let now = start.elapsed();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut cols = line.split_whitespace();
            if let (Some(n), Some("Running")) = (cols.next(), cols.next()) {
                running.entry(n.to_string()).or_insert(now);
            }
        }
        (running.len() == PODS).then_some(())
    });
    let total = start.elapsed();
    let mut lat: Vec<Duration> = running.values().copied().collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    let rss = proc_status_kib(agent.daemon.pid(), "VmRSS:");
    println!("pods: {PODS} on one agent (create -> Running, pre-imported image)");
    println!("  p50 startup: {:.2} s", pct(0.50).as_secs_f64());
    println!("  p99 startup: {:.2} s", pct(0.99).as_secs_f64());
    println!("  all Running after: {:.2} s", total.as_secs_f64());
    println!(
        "  agent daemon RSS with {PODS} pods: {:.1} MiB (containerd excluded)",
        rss as f64 / 1024.0
    );
    // Stop the pods through the node before it goes (killall cleans up whatever is left).
    kubectl(&k, &["delete", "pods", "--all", "--wait=false"]);
    wait_for(
        Duration::from_secs(120),
        "the pods' sandboxes removed",
        || {
            (std::fs::read_dir("/run/netns")
                .map(|d| d.count())
                .unwrap_or(0)
                == 0
                || pids_matching("sleep 3600").is_empty())
            .then_some(())
        },
    );
    agent.daemon.stop();
}
