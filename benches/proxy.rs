//! Service proxy sync time (issue 13 bench): 1,000 services × 10 ready endpoints programmed into
//! a real nftables table, then one endpoint changed at a time; each sync goes from the listed
//! Service and EndpointSlice objects through the model, the ruleset, the difference to the
//! applied one and one `nft -f -` transaction. Prints the first (whole-table) sync and the
//! p50/p99 of the incremental ones. Goal: p99 <= 100 ms. Needs root and nft; the table
//! (`rke2-bench-<pid>`) is deleted at the end.
//! Run: `cargo bench --bench proxy`.

use std::time::{Duration, Instant};

use rke2::proxy::{model, nft, sync};
use serde_json::{Value, json};

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;
const CHANGES: usize = 200;

fn service(i: usize) -> Value {
    json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}")},
           "spec": {"type": "ClusterIP", "clusterIP": format!("198.19.{}.{}", i / 250, i % 250 + 1),
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn slice(i: usize, generation: usize) -> Value {
    let endpoints: Vec<Value> = (0..ENDPOINTS)
        .map(|j| {
            // The first endpoint's address moves with `generation`: one endpoint change.
            let host = if j == 0 { 100 + generation % 150 } else { j };
            // Endpoint j runs on node-j: the bench's node (node-0) holds one per service.
            json!({"addresses": [format!("198.18.{}.{}", i % 250, host)], "nodeName": format!("node-{j}"),
                   "conditions": {"ready": true}})
        })
        .collect();
    json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}-x"),
                        "labels": {model::SERVICE_NAME_LABEL: format!("svc-{i}")}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

/// CPU time used so far by this process and by its waited-for children (the `nft`s), in ms,
/// from /proc/self/stat: unlike wall time, it hardly moves with the machine's load.
fn cpu_ms() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the `(comm)`: utime, stime, cutime, cstime are 14-17 of the whole line.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 1000.0 / 100.0; // USER_HZ is 100 on Linux
    ((f[11] + f[12]) * tick, (f[13] + f[14]) * tick)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let spec = nft::TableSpec {
        name: format!("rke2-bench-{}", std::process::id()),
        node_ips: vec!["127.0.0.1".parse().unwrap()],
        cluster_cidrs: vec!["198.18.0.0/16".parse().unwrap()],
    };
    let services: Vec<Value> = (0..SERVICES).map(service).collect();
    let mut slices: Vec<Value> = (0..SERVICES).map(|i| slice(i, 0)).collect();
    let step = |applied, slices: &[Value]| {
        let ports = model::service_ports(&services, slices, "node-0");
        sync(&spec, applied, nft::render(&spec, &ports))
    };
    // The part before `nft`: model, ruleset and difference, timed alone.
    let prepare = |old: &Option<nft::Ruleset>, slices: &[Value]| {
        let ports = model::service_ports(&services, slices, "node-0");
        let new = nft::render(&spec, &ports);
        nft::diff_script(&spec, old.as_ref().expect("applied"), &new)
    };
    let start = Instant::now();
    let mut applied = step(None, &slices).await;
    let first = start.elapsed();
    assert!(
        applied.is_some(),
        "the first sync failed (root and nft needed)"
    );
    let mut times = Vec::with_capacity(CHANGES);
    let mut prep_times = Vec::with_capacity(CHANGES);
    let (mut cpu_ours, mut cpu_nft) = (0.0, 0.0);
    for n in 1..=CHANGES {
        let i = (n * 37) % SERVICES;
        slices[i] = slice(i, n);
        let start = Instant::now();
        std::hint::black_box(prepare(&applied, &slices));
        prep_times.push(start.elapsed());
        let (ours0, nft0) = cpu_ms();
        let start = Instant::now();
        applied = step(applied, &slices).await;
        times.push(start.elapsed());
        let (ours1, nft1) = cpu_ms();
        (cpu_ours, cpu_nft) = (cpu_ours + ours1 - ours0, cpu_nft + nft1 - nft0);
        assert!(applied.is_some(), "sync {n} failed");
    }
    let listed = std::process::Command::new("nft")
        .args(["list", "table", "inet", &spec.name])
        .output()
        .expect("nft");
    // Each endpoint is one `<address> . 8080` entry of its service's dnat map.
    let rules = String::from_utf8_lossy(&listed.stdout)
        .matches(" . 8080")
        .count();
    let _ = nft::delete_table(&spec.name).await;
    assert_eq!(rules, SERVICES * ENDPOINTS, "every endpoint has its rule");
    times.sort();
    prep_times.sort();
    println!(
        "service proxy, {SERVICES} services x {ENDPOINTS} endpoints ({rules} endpoints programmed)"
    );
    println!(
        "  first sync (whole table): {:8.1} ms",
        first.as_secs_f64() * 1000.0
    );
    println!(
        "  one endpoint changed:     p50 {:6.1} ms   p99 {:6.1} ms   max {:6.1} ms   (n={CHANGES}, goal p99 <= 100 ms)",
        pct(&times, 0.50),
        pct(&times, 0.99),
        pct(&times, 1.0)
    );
    println!(
        "    of which model + ruleset + diff: p50 {:6.1} ms   p99 {:6.1} ms",
        pct(&prep_times, 0.50),
        pct(&prep_times, 0.99)
    );
    println!(
        "  CPU per incremental sync: {:5.1} ms in-process, {:5.1} ms in nft (load-independent)",
        cpu_ours / CHANGES as f64,
        cpu_nft / CHANGES as f64
    );
}
