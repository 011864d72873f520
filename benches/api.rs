//! Kubernetes API benchmark (issue: Kubernetes API on 6443): p50/p99 latency and throughput of
//! node GET, LIST (100 and 1000 nodes) and PATCH through the real TLS stack (keep-alive
//! connections with the admin client certificate), the server's RSS with 1000 nodes stored, and
//! the watch cache's bytes per cached node.
//! Goals: p99 of mutating requests <= 10 ms, LIST of 1000 nodes <= 50 ms, RSS <= 64 MiB.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;

use common::*;

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr, tls: Arc<rustls::ClientConfig>) -> Conn {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn { sender }
    }

    /// For GET requests `ct` is used as the Accept header (a GET has no body to type).
    async fn call(&mut self, method: &str, path: &str, ct: &str, body: Vec<u8>) -> (u16, Bytes) {
        self.sender.ready().await.unwrap();
        let accept = if method == "GET" {
            ct
        } else {
            "application/json"
        };
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", ct)
            .header("accept", accept)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

fn tls_config(s: &ServerNode) -> Arc<rustls::ClientConfig> {
    let tls = s.data_dir().join("server/tls");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(s.ca()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<_> = CertificateDer::pem_file_iter(tls.join("client-admin.crt"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls.join("client-admin.key")).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    Arc::new(cfg)
}

fn node_body(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "bench": "yes"},
                     "annotations": {"rke2.io/internal-ip": "10.1.2.3", "rke2.io/hostname": name}},
        "spec": {"taints": [{"key": "dedicated", "value": "bench", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready",
                            "lastHeartbeatTime": "2026-11-28T00:00:00Z", "lastTransitionTime": "2026-11-28T00:00:00Z"}],
            "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kernelVersion": "6.1.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kubeletVersion": "v1.32.4",
                         "containerRuntimeVersion": "", "operatingSystem": "linux", "architecture": "amd64",
                         "machineID": "0123456789abcdef0123456789abcdef", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
            "capacity": {"cpu": "2", "memory": "24000000Ki", "pods": "110"}
        }
    }))
    .unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{label:<30} p50 {:7.2} ms   p99 {:7.2} ms   max {:7.2} ms   (n={})",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        samples.len()
    );
}

async fn latencies(
    conn: &mut Conn,
    n: usize,
    mut req: impl FnMut(usize) -> (&'static str, String, &'static str, Vec<u8>),
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (m, path, ct, body) = req(i);
        let t = Instant::now();
        let (status, b) = conn.call(m, &path, ct, body).await;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(
            (200..300).contains(&status),
            "{m} {path}: {status} {}",
            String::from_utf8_lossy(&b)
        );
    }
    out
}

async fn throughput(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    clients: usize,
    secs: u64,
    path: &str,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let tls = tls.clone();
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr, tls).await;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (s, _) = c.call("GET", &path, "application/json", vec![]).await;
                assert_eq!(s, 200);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs as f64
}

/// Memory per cached object (docs/watch-cache.md §Memory): the server's 1000 nodes, as it
/// stored them, loaded into a watch cache over the in-memory store; the cache's own accounting
/// and the allocation it caused, both divided by the object count.
async fn cache_memory(list: &[u8]) {
    use rke2::datastore::{Datastore, memory::MemoryStore};
    use rke2::registry::NODES;
    use rke2::storage::watch_cache::{CacheConfig, WatchCaches};
    let list: serde_json::Value = serde_json::from_slice(list).unwrap();
    let items = list["items"].as_array().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let caches = WatchCaches::new(cancel.clone(), CacheConfig::default());
    let ds = caches.fenced(&Datastore::from_impl(MemoryStore::new()));
    let cache = caches.kind(&NODES).unwrap();
    let json_bytes: usize = items
        .iter()
        .map(|o| serde_json::to_vec(o).unwrap().len())
        .sum();
    let rss_before = proc_status_kib(std::process::id(), "VmRSS:");
    for o in items {
        let key = NODES.key(None, o["metadata"]["name"].as_str().unwrap());
        ds.put(&key, serde_json::to_vec(o).unwrap()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while cache.stats().objects < items.len() {
        assert!(Instant::now() < deadline, "the cache loads the nodes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_after = proc_status_kib(std::process::id(), "VmRSS:");
    let stats = cache.stats();
    println!(
        "{:<30} {:9} bytes per object ({} nodes, {} bytes of JSON each; store + cache RSS growth {} bytes per object)",
        "watch cache memory",
        stats.bytes_per_object(),
        stats.objects,
        json_bytes / items.len().max(1),
        (rss_after.saturating_sub(rss_before) as usize * 1024) / items.len().max(1)
    );
    cancel.cancel();
}

fn main() {
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s = start_server(
        "api1",
        block.ip(1),
        root.path(),
        &[("token", "bench".into())],
    );
    s.daemon.wait_log("ready:", Duration::from_secs(60));
    let addr = std::net::SocketAddr::from((s.ip, 6443));
    let tls = tls_config(&s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Conn::open(addr, tls.clone()).await;
        let create = |from: usize, to: usize| (from..to).map(|i| format!("bench-{i:04}")).collect::<Vec<_>>();
        let names = create(0, 99);
        let creates = latencies(&mut c, names.len(), |i| ("POST", "/api/v1/nodes".into(), "application/json", node_body(&names[i]))).await;
        println!("API benchmark against one server with real etcd (keep-alive TLS, admin client certificate)");
        report("CREATE node", creates);
        let list100 = latencies(&mut c, 50, |_| ("GET", "/api/v1/nodes".into(), "application/json", vec![])).await;
        report("LIST 100 nodes", list100);
        let names = create(99, 999);
        let creates = latencies(&mut c, names.len(), |i| ("POST", "/api/v1/nodes".into(), "application/json", node_body(&names[i]))).await;
        report("CREATE node (to 1000)", creates);
        let list1000 = latencies(&mut c, 30, |_| ("GET", "/api/v1/nodes".into(), "application/json", vec![])).await;
        report("LIST 1000 nodes", list1000);
        let table1000 = latencies(&mut c, 200, |_| {
            ("GET", "/api/v1/nodes".into(), "application/json;as=Table;v=v1;g=meta.k8s.io,application/json", vec![])
        })
        .await;
        report("LIST 1000 nodes as Table", table1000);
        let gets = latencies(&mut c, 2000, |i| ("GET", format!("/api/v1/nodes/bench-{:04}", i % 999), "application/json", vec![])).await;
        report("GET node", gets);
        let patches = latencies(&mut c, 1000, |i| {
            ("PATCH", format!("/api/v1/nodes/bench-{:04}", i % 999), "application/merge-patch+json", format!(r#"{{"metadata":{{"labels":{{"round":"r{i}"}}}}}}"#).into_bytes())
        })
        .await;
        report("PATCH node (merge patch)", patches);
        let list0 = latencies(&mut c, 200, |_| ("GET", "/api/v1/nodes?resourceVersion=0".into(), "application/json", vec![])).await;
        report("LIST 1000 nodes rv=0 (cache)", list0);
        let (_, listed) = c.call("GET", "/api/v1/nodes", "application/json", vec![]).await;
        cache_memory(&listed).await;
        let rps = throughput(addr, tls.clone(), 8, 5, "/api/v1/nodes/bench-0001").await;
        println!("{:<30} {rps:9.0} requests/s (8 keep-alive clients, 5 s)", "GET node throughput");
        let rps = throughput(addr, tls.clone(), 4, 5, "/api/v1/nodes?limit=100").await;
        println!("{:<30} {rps:9.0} requests/s (4 clients, 5 s)", "LIST 100 (limit) throughput");
    });
    let pid = s.daemon.pid();
    println!(
        "{:<30} RSS {:.1} MiB   peak {:.1} MiB (daemon only, etcd excluded)",
        "server with 1000 nodes",
        proc_status_kib(pid, "VmRSS:") as f64 / 1024.0,
        proc_status_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    s.daemon.stop();
}
