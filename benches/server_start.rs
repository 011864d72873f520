//! Server start benchmark (issue: server core): time from `rke2 server` to ready (the `ready:`
//! phase, which is also when READY=1 is sent), and the daemon's peak RSS (etcd excluded), over
//! several fresh starts and restarts. Goal: <= 2 s and <= 64 MiB on a 2-core machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

fn summary(label: &str, mut v: Vec<f64>, unit: &str) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = v[v.len() / 2];
    println!(
        "{label:<34} median {median:8.1} {unit}   min {:8.1}   max {:8.1}   (n={})",
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

fn main() {
    let runs: usize = std::env::var("RKE2_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut fresh = Vec::new();
    let mut restart = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let block = AddrBlock::new();
        let root = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let mut s = start_server(
            "b1",
            block.ip(1),
            root.path(),
            &[("token", "bench-token".into())],
        );
        wait_ready_fast(&mut s);
        fresh.push(t.elapsed().as_secs_f64() * 1000.0);
        // Let the controllers and node agent run for a while before reading the peak.
        std::thread::sleep(Duration::from_secs(3));
        rss.push(proc_status_kib(s.daemon.pid(), "VmHWM:") as f64 / 1024.0);
        s.daemon.stop();
        let t = Instant::now();
        s.restart(&[]);
        wait_ready_fast(&mut s);
        restart.push(t.elapsed().as_secs_f64() * 1000.0);
        s.daemon.stop();
    }
    println!("rke2 server start ({runs} runs, real etcd, debug logs off)");
    summary("fresh start to ready", fresh, "ms");
    summary("restart with data to ready", restart, "ms");
    summary("daemon peak RSS (VmHWM, no etcd)", rss, "MiB");
}

/// Polls the log every 10 ms for the ready phase.
fn wait_ready_fast(s: &mut ServerNode) {
    let start = Instant::now();
    while !s.daemon.log_text().contains("ready:") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not ready:\n{}",
            s.daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
