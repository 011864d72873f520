//! HA benchmark (issue: servers and agents join through a fixed registration address): time for
//! 3 servers + 1 agent behind HAProxy to be all Ready, and the API unavailability seen by the
//! agent's node heartbeats when a server is killed (the longest gap between successive lease
//! renewals, with a 200 ms heartbeat interval for the run). Run with etcd's default timings and
//! with `--heartbeat-interval=50 --election-timeout=500`. Goals: <= 10 s and <= 1 s.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn all_ready(k: &std::path::Path, n: usize) -> bool {
    let out = kubectl(k, &["get", "nodes", "--no-headers"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .count()
        == n
}

/// Sockets (any state) from `from` to `to:6443`, from /proc/net/tcp: the agent's API load
/// balancer dials its active backend for every request, so that server has the most.
fn sockets_between(from: Ipv4Addr, to: Ipv4Addr) -> usize {
    let hex = |ip: Ipv4Addr| {
        let o = ip.octets();
        format!("{:02X}{:02X}{:02X}{:02X}", o[3], o[2], o[1], o[0])
    };
    let (f, t) = (hex(from), format!("{}:192B", hex(to)));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].starts_with(&f) && cols[2] == t
        })
        .count()
}

/// Streams the agent's Lease through `server` and records every renewTime seen.
fn watch_renewals(
    server: &ServerNode,
    node: &str,
) -> (
    std::process::Child,
    Arc<Mutex<Vec<chrono::DateTime<chrono::Utc>>>>,
) {
    let tls = server.data_dir().join("server/tls");
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--cacert"])
        .arg(server.ca())
        .arg("--cert")
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"))
        .arg(format!(
            "https://{}:6443/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases?watch=1&fieldSelector=metadata.name%3D{node}",
            server.ip
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(t) = ev["object"]["spec"]["renewTime"].as_str()
                && let Ok(t) = chrono::DateTime::parse_from_rfc3339(t)
            {
                s2.lock().unwrap().push(t.with_timezone(&chrono::Utc));
            }
        }
    });
    (child, seen)
}

/// Which server the benchmark kills.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    /// The server the agent's API load balancer is using.
    AgentsApiServer,
    /// The etcd raft leader (an election on top of the failover).
    EtcdLeader,
}

fn leader_index(servers: &[ServerNode]) -> Option<usize> {
    servers.iter().position(|s| {
        let out = etcdctl(s, &["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let st = &v[0]["Status"];
        st["leader"].as_u64().is_some() && st["leader"] == st["header"]["member_id"]
    })
}

fn run(label: &str, etcd_args: &[&str], kill: Victim) {
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let ips: Vec<_> = (1..=3).map(|i| block.ip(i)).collect();
    let lb = Haproxy::start(block.ip(100), &ips, root.path());
    let t0 = Instant::now();
    let etcd: Vec<(&'static str, String)> = etcd_args
        .iter()
        .map(|a| ("etcd-arg[]", a.to_string()))
        .collect();
    let mut servers = start_servers_behind(&lb, &ips, root.path(), "bench-ha", &etcd);
    let agent_ip = block.ip(11);
    let _agent = start_agent(
        "a1",
        agent_ip,
        root.path(),
        &lb.url(),
        "bench-ha",
        &[("node-heartbeat-interval", "200ms".into())],
    );
    servers[0]
        .daemon
        .wait_log("ready:", Duration::from_secs(60));
    let k = kubeconfig_via(&servers[0].kubeconfig, lb.ip, &root.path().join("lb.yaml"));
    wait_for(Duration::from_secs(90), "4 nodes Ready", || {
        all_ready(&k, 4).then_some(())
    });
    let formed = t0.elapsed();
    println!(
        "[{label}] 3 servers + 1 agent all Ready after {:.2} s",
        formed.as_secs_f64()
    );

    // Let heartbeats settle, then kill the server the agent's API load balancer uses.
    std::thread::sleep(Duration::from_secs(3));
    let victim = match kill {
        Victim::AgentsApiServer => (0..3)
            .max_by_key(|&i| sockets_between(agent_ip, ips[i]))
            .unwrap(),
        Victim::EtcdLeader => leader_index(&servers).expect("an etcd leader"),
    };
    let what = match kill {
        Victim::AgentsApiServer => "the agent's active API server",
        Victim::EtcdLeader => "the etcd leader",
    };
    let watcher_idx = (victim + 1) % 3;
    let (mut watch, seen) = watch_renewals(&servers[watcher_idx], "a1");
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = chrono::Utc::now();
    servers[victim].daemon.kill9();
    std::thread::sleep(Duration::from_secs(8));
    let _ = watch.kill();
    let _ = watch.wait();
    let times = seen.lock().unwrap().clone();
    let window: Vec<_> = times
        .iter()
        .filter(|t| **t > killed_at - chrono::Duration::seconds(2))
        .cloned()
        .collect();
    let max_gap = window
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .max()
        .unwrap_or(-1);
    println!(
        "[{label}] killed s{} ({what}); longest gap between lease renewals: {} ms ({} renewals seen in 10 s, heartbeat interval 200 ms)",
        victim + 1,
        max_gap,
        window.len()
    );
    drop(lb);
}

fn main() {
    require_tool("haproxy", "haproxy");
    let default = ["heartbeat-interval=100", "election-timeout=1000"];
    let fast = ["heartbeat-interval=50", "election-timeout=500"];
    run("etcd default timings", &default, Victim::AgentsApiServer);
    run("etcd default timings", &default, Victim::EtcdLeader);
    run("etcd 50/500 ms", &fast, Victim::AgentsApiServer);
    run("etcd 50/500 ms", &fast, Victim::EtcdLeader);
}
