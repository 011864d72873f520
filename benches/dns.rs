//! Cluster DNS throughput and latency (issue 13 bench, docs/dns.md): the node's DNS server
//! (hickory-server with the cluster records handler) on a loopback address, loaded with 1,000
//! Services and a headless Service of 10 endpoints, queried over UDP by one client (latency) and then by concurrent clients (throughput) on
//! the same machine with a mix of A, SRV, headless and NXDOMAIN questions. Prints queries/s and
//! the p50/p99 latency. Goal: p99 <= 2 ms.
//! Run: `cargo bench --bench dns` (`--profile dev` for a quick, pessimistic figure).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rke2::dns::records::Records;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 1000;
const CLIENTS: usize = 8;
const QUERIES_PER_CLIENT: usize = 5000;

fn records() -> Records {
    let mut r = Records::new("cluster.local").unwrap();
    for i in 0..SERVICES {
        let svc = json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 10)},
            "spec": {"clusterIP": format!("198.19.{}.{}", i / 250, i % 250 + 1),
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        });
        r.put_service(&serde_json::from_value(svc).unwrap());
    }
    r.put_service(
        &serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "ns-0"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        }))
        .unwrap(),
    );
    let endpoints: Vec<_> = (0..10)
        .map(|i| json!({"addresses": [format!("198.18.0.{}", i + 2)], "conditions": {"ready": true}}))
        .collect();
    r.put_slice(
        &serde_json::from_value(json!({
            "metadata": {"name": "db-1", "namespace": "ns-0",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
        }))
        .unwrap(),
    );
    r
}

fn question(i: usize) -> (String, RecordType) {
    let s = (i * 7919) % SERVICES;
    match i % 4 {
        0 | 1 => (
            format!("svc-{s}.ns-{}.svc.cluster.local.", s % 10),
            RecordType::A,
        ),
        2 => (
            format!("_http._tcp.svc-{s}.ns-{}.svc.cluster.local.", s % 10),
            RecordType::SRV,
        ),
        _ if i % 8 == 3 => ("db.ns-0.svc.cluster.local.".into(), RecordType::A),
        _ => (format!("nope-{s}.ns-1.svc.cluster.local."), RecordType::A),
    }
}

async fn client(server: SocketAddr, offset: usize) -> Vec<Duration> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut times = Vec::with_capacity(QUERIES_PER_CLIENT);
    for i in 0..QUERIES_PER_CLIENT {
        let (name, t) = question(offset + i);
        let mut m = Message::new((i % 65536) as u16, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(&name).unwrap(), t));
        let q = m.to_vec().unwrap();
        let start = Instant::now();
        sock.send(&q).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .expect("an answer within 2 s")
            .unwrap();
        times.push(start.elapsed());
        let answer = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(answer.metadata.id, (i % 65536) as u16);
    }
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records = Arc::new(RwLock::new(records()));
    let probe = std::net::UdpSocket::bind("127.0.0.53:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let cancel = CancellationToken::new();
    let handle = rke2::dns::server::serve(addr, records, cancel.clone()).unwrap();
    // Warm-up.
    client(addr, 0).await;
    for clients in [1, CLIENTS] {
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| tokio::spawn(client(addr, c * QUERIES_PER_CLIENT)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        all.sort();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        println!(
            "dns: {} queries from {clients} client(s) over {SERVICES} services in {:.2} s: {:.0} queries/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (goal p99 <= 2 ms)",
            all.len(),
            elapsed.as_secs_f64(),
            all.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            all.last().unwrap().as_secs_f64() * 1e3,
        );
    }
    cancel.cancel();
    let _ = handle.await;
}
