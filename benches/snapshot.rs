//! Snapshot benchmark (issue 16): with 10k and 100k ConfigMaps stored, the time of
//! `rke2 etcd-snapshot save` (over D-Bus, real etcd) and of a restore to Ready: the
//! `--cluster-reset --cluster-reset-restore-path` run until it exits, then a normal start until
//! the `ready:` phase. Sizes: RKE2_BENCH_SNAPSHOT_OBJECTS (default "10000,100000").

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::bus::*;
use common::*;
use rke2::etcd::{self, EtcdTls};
use rke2::paths::ServerPaths;

const READY: Duration = Duration::from_secs(300);

/// A client of the server's etcd member, with its etcd client certificate.
async fn client(s: &ServerNode) -> etcd_client::Client {
    let tls = EtcdTls::load(&ServerPaths::new(&s.data_dir())).unwrap();
    etcd::connect(&[format!("https://{}:2379", s.ip)], &tls)
        .await
        .unwrap()
}

/// How many bench ConfigMaps etcd holds.
fn count(s: &ServerNode) -> i64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut kv = client(s).await.kv_client();
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        kv.get("/registry/configmaps/default/bench-", Some(opts))
            .await
            .unwrap()
            .count()
    })
}

/// Writes `n` ConfigMaps straight into etcd, 100 per transaction.
fn fill(s: &ServerNode, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = client(s).await;
        let mut kv = client.kv_client();
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<etcd_client::TxnOp> = chunk
                .iter()
                .map(|i| {
                    let value = serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("bench-{i}"), "namespace": "default",
                                     "uid": format!("00000000-0000-0000-0000-{i:012}"),
                                     "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "data": {"k": "v".repeat(100)}
                    });
                    etcd_client::TxnOp::put(
                        format!("/registry/configmaps/default/bench-{i}"),
                        value.to_string(),
                        None,
                    )
                })
                .collect();
            kv.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
        }
    });
}

fn main() {
    let sizes: Vec<usize> = std::env::var("RKE2_BENCH_SNAPSHOT_OBJECTS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("etcd snapshot save and restore-to-Ready (real etcd, one server, release build)");
    for n in sizes {
        let block = AddrBlock::new();
        let env = server_on_bus(&block, "b1", &[("token", "bench-token".into())]);
        let bus = &env.bus;
        let mut s = env.server;
        let t = Instant::now();
        fill(&s, n);
        let fill_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = rke2_cli(&bus.address(), false, &["etcd-snapshot", "save"]);
        let save_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(out.status.success(), "{}", text(&out));
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let size = fs::metadata(&path).unwrap().len();
        s.daemon.stop();

        let base = fs::read_to_string(&s.config).unwrap();
        fs::write(
            &s.config,
            format!("{base}cluster-reset: true\ncluster-reset-restore-path: {path}\n"),
        )
        .unwrap();
        let t = Instant::now();
        let mut reset = Daemon::start(
            "b1-reset",
            "server",
            &s.config,
            &s.dir.join("log-reset"),
            &[],
        );
        assert_eq!(reset.wait_exit(READY), Some(0), "{}", reset.log_tail());
        let reset_ms = t.elapsed().as_secs_f64() * 1000.0;
        fs::write(&s.config, &base).unwrap();
        let t = Instant::now();
        s.restart(&[]);
        s.daemon.wait_log("ready:", READY);
        let start_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(count(&s), n as i64, "restored objects");
        println!(
            "{n:>7} objects: snapshot {:>6.1} MiB   save {save_ms:>8.0} ms   restore run {reset_ms:>8.0} ms   start to ready {start_ms:>8.0} ms   restore-to-Ready {:>8.0} ms   (fill {fill_s:.1} s)",
            size as f64 / 1048576.0,
            reset_ms + start_ms
        );
        s.daemon.stop();
    }
}
