//! Hollow-node scale bench (issue 18, docs/scale.md): `cargo bench --bench scale -- --nodes N`.
//!
//! Starts three servers on this machine behind HAProxy (the fixed registration address), then
//! simulates N nodes in this one process, on tokio:
//!
//! 1. **Registration storm**: all N register at once through the fixed address with the real
//!    supervisor protocol, through the library's own agent code (`ClusterAccess::connect`: CA
//!    check against the token hash; `agent::request_node_certificates`: node password and the
//!    two kubelet CSRs, with the agent's retry and backoff). Prints throughput, failures,
//!    retries and p50/p99 time per node.
//! 2. **Steady state**: each hollow node is a `NodeAgent` (the node agent every real node runs)
//!    that creates its Node and Lease, then renews its Lease every `--interval` seconds and
//!    writes its Node status when the agent finds it due (changed, or 5 minutes old; a share
//!    `--status-changes` of the nodes changes its image list each interval), and keeps a pods
//!    watch with `fieldSelector=spec.nodeName=<me>`. Each node talks to one server, spread
//!    evenly (a real agent's load balancer keeps one active backend); node requests go over the
//!    agent's kept-alive connections, the watch over its own long-lived connection. With
//!    `--preissued` the storm is skipped: the node client certificates are signed directly with
//!    the cluster's client CA (what the supervisor issues), so thousands of nodes reach the
//!    steady state within minutes. Meanwhile an admin client writes pods bound to
//!    random hollow nodes (watch delivery: write -> event at that node's watcher) and LISTs all
//!    nodes (`resourceVersion=0` and consistent). Prints latencies, each server's and etcd's
//!    RSS and CPU (from /proc), etcd's DB size and the machine's load average.
//!
//! Options: `--nodes N` (1000), `--steady SECS` (60), `--interval SECS` (10),
//! `--pods-per-sec R` (5), `--lists K` (20 of each kind), `--storm-timeout SECS` (900: nodes
//! not registered by then count as failed), `--preissued` (no storm), `--status-changes F`
//! (0.05, the share of nodes whose status changes each interval), `--etcd-arg K=V` (repeatable:
//! extra etcd flags for every server, to compare etcd settings).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;
use rke2::agent::node_agent::{NodeAgent, NodeAgentConfig};
use rke2::agent::{API_SERVER_NAME, NodeCertificates, request_node_certificates};
use rke2::clientaccess::ClusterAccess;
use rke2::https::{ClientIdentity, HttpsClient, ServerTrust};
use rke2::token::JoinToken;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-scale";
/// Nodes creating their Node and Lease at the same time (a third per server).
const CREATE_CONCURRENCY: usize = 96;

struct Options {
    nodes: usize,
    steady: Duration,
    interval: Duration,
    pods_per_sec: f64,
    lists: usize,
    storm_timeout: Duration,
    preissued: bool,
    status_changes: f64,
    etcd_args: Vec<String>,
}

fn options() -> Options {
    let mut o = Options {
        nodes: 1000,
        steady: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        pods_per_sec: 5.0,
        lists: 20,
        storm_timeout: Duration::from_secs(900),
        preissued: false,
        status_changes: 0.05,
        etcd_args: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> f64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--nodes" => o.nodes = value("--nodes") as usize,
            "--steady" => o.steady = Duration::from_secs_f64(value("--steady")),
            "--interval" => o.interval = Duration::from_secs_f64(value("--interval")),
            "--pods-per-sec" => o.pods_per_sec = value("--pods-per-sec"),
            "--lists" => o.lists = value("--lists") as usize,
            "--storm-timeout" => {
                o.storm_timeout = Duration::from_secs_f64(value("--storm-timeout"))
            }
            "--preissued" => o.preissued = true,
            "--status-changes" => o.status_changes = value("--status-changes"),
            "--etcd-arg" => o.etcd_args.push(
                it.next()
                    .cloned()
                    .unwrap_or_else(|| panic!("--etcd-arg needs K=V")),
            ),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Latency samples of one kind, with failures counted apart.
#[derive(Default)]
struct Samples {
    ok: Vec<Duration>,
    failed: usize,
    errors: std::collections::BTreeMap<String, usize>,
}

impl Samples {
    fn record(&mut self, took: Duration, ok: bool) {
        if ok {
            self.ok.push(took);
        } else {
            self.failed += 1;
        }
    }

    /// Records a request's outcome, counting failures by the first words of their error (the
    /// part before any address or name) so the report says what failed.
    fn record_result<E: std::fmt::Display>(&mut self, took: Duration, r: Result<(), E>) {
        if let Err(e) = &r {
            let e = e.to_string();
            let kind: String = e.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
            *self.errors.entry(kind).or_default() += 1;
        }
        self.record(took, r.is_ok());
    }

    fn errors_line(&self) -> String {
        let mut v: Vec<_> = self.errors.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter()
            .take(4)
            .map(|(k, n)| format!("{n} x \"{k}...\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn line(&self, what: &str) -> String {
        let mut v = self.ok.clone();
        v.sort();
        let pct = |p: usize| {
            v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "{what:<28} p50 {:>9}  p99 {:>9}  max {:>9}  ({} ok, {} failed)",
            pct(50),
            pct(99),
            v.last()
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into()),
            v.len(),
            self.failed
        )
    }
}

type Shared = Arc<Mutex<Samples>>;

/// CPU time (user + system, in clock ticks) of `pid`, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    n(11) + n(12)
}

/// Direct children of `pid` (the server's etcd).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The processes whose load is reported: each server and its etcd.
fn watched_pids(servers: &[ServerNode]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let pid = s.daemon.pid();
        out.push((format!("s{} rke2", i + 1), pid));
        for c in children(pid) {
            if comm(c) == "etcd" {
                out.push((format!("s{} etcd", i + 1), c));
            }
        }
    }
    out
}

/// TCP connections in state ESTABLISHED to local `port` (from /proc/net/tcp): the hollow
/// nodes' watches plus their kept-alive connections still open.
fn established_to(port: u16) -> usize {
    let port = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Remote address is field 2, state field 3 (01 = ESTABLISHED).
            f.len() > 3 && f[2].ends_with(&port) && f[3] == "01"
        })
        .count()
}

/// Clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on every Linux architecture).
const TICKS_PER_SEC: f64 = 100.0;

fn report_load(pids: &[(String, u32)], before: &[u64], window: Duration) {
    for ((name, pid), b) in pids.iter().zip(before) {
        let cpu = (cpu_ticks(*pid) - b) as f64 / TICKS_PER_SEC / window.as_secs_f64();
        println!(
            "{name:<10} RSS {:>6.0} MiB (peak {:>6.0} MiB)  CPU {:>5.1} % of a core",
            proc_status_kib(*pid, "VmRSS:") as f64 / 1024.0,
            proc_status_kib(*pid, "VmHWM:") as f64 / 1024.0,
            cpu * 100.0
        );
    }
    println!(
        "load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// A cheap pseudo-random sequence (xorshift) to pick nodes for pods.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One hollow node's registration through the fixed address; the time covers the CA check and
/// both CSRs, retries included.
async fn register(
    url: &str,
    token: &JoinToken,
    name: &str,
    ip: IpAddr,
    cancel: &CancellationToken,
) -> Result<NodeCertificates, String> {
    let access = match rke2::clientaccess::retry(cancel, "cluster CA check", || {
        ClusterAccess::connect(url, token, "node", None)
    })
    .await
    {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("cancelled".into()),
    };
    let password = rke2::token::random_hex(16);
    request_node_certificates(&access, name, &password, &[ip], cancel)
        .await
        .map_err(|e| e.to_string())
}

/// Counts the registration retries the library logged (lines of component `clientaccess`).
fn retries_logged(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("retrying in"))
        .count()
}

/// What the pods watches and the pod writer share: pod name -> when its write started.
type Pending = Arc<Mutex<HashMap<String, Instant>>>;

/// Keeps a pods watch for `node` (as a kubelet does) until `cancel`, recording the delivery
/// time of pods the writer created.
async fn watch_pods(
    client: HttpsClient,
    base: String,
    node: String,
    pending: Pending,
    delivery: Shared,
    cancel: CancellationToken,
) {
    let url = format!(
        "{base}/api/v1/pods?watch=true&resourceVersion=0&allowWatchBookmarks=true&fieldSelector=spec.nodeName%3D{node}"
    );
    let headers = [("accept", "application/json".to_string())];
    while !cancel.is_cancelled() {
        if let Ok((200, mut body)) = client.stream(http::Method::GET, &url, &headers).await {
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let frame = tokio::select! {
                    _ = cancel.cancelled() => return,
                    f = body.frame() => f,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if ev["type"] != "ADDED" {
                        continue;
                    }
                    if let Some(name) = ev.pointer("/object/metadata/name").and_then(|n| n.as_str())
                        && let Some(t) = pending.lock().unwrap().remove(name)
                    {
                        delivery.lock().unwrap().record(t.elapsed(), true);
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Renews the Lease every `interval`, from `offset` on, and writes the Node status when the
/// agent finds it due (as its own heartbeat does). Before each heartbeat the node changes its
/// image list with probability `changes`, standing for what makes a kubelet report between
/// its periodic reports (an image pulled or removed, a condition flipping), and for the
/// periodic reports themselves, which a 60 s window right after the nodes' creation would not
/// see otherwise (docs/scale.md).
#[allow(clippy::too_many_arguments)]
async fn heartbeat(
    agent: Arc<NodeAgent>,
    offset: Duration,
    interval: Duration,
    changes: f64,
    seed: u64,
    lease: Shared,
    status: Shared,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = Xorshift((seed + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut images: Vec<(String, u64)> = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if (rng.next(1_000_000) as f64) < changes * 1e6 {
            images.push((format!("registry.example/app:{}", images.len()), 10_000_000));
            agent.set_images(&images);
        }
        let t = Instant::now();
        let r = agent.renew_lease().await;
        lease.lock().unwrap().record_result(t.elapsed(), r);
        if agent.status_due() {
            let t = Instant::now();
            let r = agent.patch_status().await;
            status.lock().unwrap().record_result(t.elapsed(), r);
        }
    }
}

/// Signs each node's kubelet client certificate directly with the cluster's client CA from
/// `data_dir` (the subject and groups the supervisor's `client-kubelet.crt` route issues), for
/// `--preissued`. The serving certificate is not needed by a hollow node and left empty.
fn preissue(data_dir: &Path, names: &[String]) -> Vec<NodeCertificates> {
    let paths = rke2::paths::ServerPaths::new(data_dir);
    let ca = rke2::pki::CertAuthority::load(&paths.client_ca()).unwrap();
    let ca_pem = std::fs::read_to_string(&paths.client_ca().cert).unwrap();
    names
        .iter()
        .map(|name| {
            let spec =
                rke2::pki::LeafSpec::client(&format!("system:node:{name}"), &["system:nodes"]);
            let (client_cert_pem, client_key_pem) = ca.issue_with_new_key(&spec).unwrap();
            NodeCertificates {
                serving_cert_pem: String::new(),
                serving_key_pem: String::new(),
                client_cert_pem,
                client_key_pem,
                client_ca_pem: ca_pem.clone(),
            }
        })
        .collect()
}

/// Raises this process's open-file limit (inherited by the servers it starts): at 5,000 nodes
/// the bench holds two connections per node and each server a third of them.
fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = 1 << 17;
    let old = getrlimit(Resource::Nofile);
    let new = Rlimit {
        current: Some(want),
        maximum: Some(old.maximum.map_or(want, |m| m.max(want))),
    };
    if setrlimit(Resource::Nofile, new).is_err() {
        // Not privileged: up to the hard limit.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: old.maximum,
                maximum: old.maximum,
            },
        );
    }
    println!("open files limit {:?}", getrlimit(Resource::Nofile).current);
}

fn admin_client(server: &ServerNode) -> HttpsClient {
    let tls = server.data_dir().join("server/tls");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    HttpsClient::new(
        &ServerTrust::Ca(read(&server.ca())),
        Some(&ClientIdentity {
            cert_pem: read(&tls.join("client-admin.crt")),
            key_pem: read(&tls.join("client-admin.key")),
        }),
        Duration::from_secs(60),
    )
    .unwrap()
    .with_keep_alive()
}

fn main() {
    let o = options();
    require_tool("haproxy", "haproxy");
    raise_fd_limit();
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let ips: Vec<Ipv4Addr> = (1..=3).map(|i| block.ip(i)).collect();
    let lb = Haproxy::start(block.ip(100), &ips, root.path());
    let t0 = Instant::now();
    let extra: Vec<(&'static str, String)> = o
        .etcd_args
        .iter()
        .map(|a| ("etcd-arg[]", a.clone()))
        .collect();
    let mut servers = start_servers_behind(&lb, &ips, root.path(), TOKEN, &extra);
    for s in &mut servers {
        s.daemon.wait_log("ready:", Duration::from_secs(120));
    }
    for (i, _) in servers.iter().enumerate() {
        wait_node_ready(
            &servers[0].kubeconfig,
            &format!("s{}", i + 1),
            Duration::from_secs(90),
        );
    }
    println!(
        "3 servers Ready after {:.1} s; server pids {:?}",
        t0.elapsed().as_secs_f64(),
        servers.iter().map(|s| s.daemon.pid()).collect::<Vec<_>>()
    );
    let pids = watched_pids(&servers);
    let token = JoinToken::parse(&servers[0].token()).unwrap();
    let log = root.path().join("bench.log");
    tracing_subscriber::fmt()
        .with_writer(std::fs::File::create(&log).unwrap())
        .with_ansi(false)
        .with_env_filter("info")
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cancel = CancellationToken::new();
    let names: Vec<String> = (0..o.nodes).map(|i| format!("hollow-{i:05}")).collect();
    let node_ip = IpAddr::V4(block.ip(200));

    // 1. Registration storm.
    let results: Vec<(Duration, Result<NodeCertificates, String>)> = if o.preissued {
        let t = Instant::now();
        let certs = preissue(&servers[0].data_dir(), &names);
        println!(
            "pre-issued                  {} node client certificates in {:.1} s (no storm)",
            certs.len(),
            t.elapsed().as_secs_f64()
        );
        certs.into_iter().map(|c| (Duration::ZERO, Ok(c))).collect()
    } else {
        let before: Vec<u64> = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
        let storm_started = Instant::now();
        let results: Vec<(Duration, Result<NodeCertificates, String>)> = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for (i, name) in names.iter().enumerate() {
                let (url, token, name, cancel) =
                    (lb.url(), token.clone(), name.clone(), cancel.clone());
                set.spawn(async move {
                    let t = Instant::now();
                    let r = register(&url, &token, &name, node_ip, &cancel).await;
                    (i, t.elapsed(), r)
                });
            }
            let mut out: Vec<Option<(Duration, Result<NodeCertificates, String>)>> =
                (0..names.len()).map(|_| None).collect();
            let deadline = tokio::time::Instant::now() + o.storm_timeout;
            while let Ok(Some(r)) = tokio::time::timeout_at(deadline, set.join_next()).await {
                let (i, took, r) = r.unwrap();
                out[i] = Some((took, r));
            }
            // Registrations still going at the deadline count as failed.
            set.abort_all();
            out.into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        (
                            o.storm_timeout,
                            Err("not registered by the deadline".into()),
                        )
                    })
                })
                .collect()
        });
        let storm = storm_started.elapsed();
        let mut reg = Samples::default();
        let mut first_error = None;
        for (took, r) in &results {
            reg.record(*took, r.is_ok());
            if let (Err(e), None) = (r, &first_error) {
                first_error = Some(e.clone());
            }
        }
        println!(
            "registration storm          {} nodes in {:.1} s: {:.1} nodes/s, failed registrations {}, retries {}",
            o.nodes,
            storm.as_secs_f64(),
            reg.ok.len() as f64 / storm.as_secs_f64(),
            reg.failed,
            retries_logged(&log)
        );
        println!("{}", reg.line("registration time"));
        if let Some(e) = first_error {
            println!("first registration error: {e}");
        }
        report_load(&pids, &before, storm);
        results
    };

    // 2. Steady state.
    let ca_pem = std::fs::read_to_string(servers[0].ca()).unwrap();
    let (lease, status, delivery, create, lists0, lists) = (
        Shared::default(),
        Shared::default(),
        Shared::default(),
        Shared::default(),
        Shared::default(),
        Shared::default(),
    );
    let pending: Pending = Pending::default();
    let create_retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let admin = admin_client(&servers[0]);
    let admin_base = format!("https://{}:6443", servers[0].ip);
    let registered: Vec<(usize, NodeCertificates)> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, (_, r))| r.ok().map(|c| (i, c)))
        .collect();
    let hollow: Vec<String> = registered.iter().map(|(i, _)| names[*i].clone()).collect();
    let steady_started = Instant::now();
    // Bounded so that creating thousands of nodes does not become a handshake storm against
    // the servers' per-address limit on connections still handshaking (docs/limits.md).
    let creating = Arc::new(tokio::sync::Semaphore::new(CREATE_CONCURRENCY));
    let create_took = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (k, (i, certs)) in registered.iter().enumerate() {
            let base = format!("https://{}:6443", ips[k % 3]);
            let identity = ClientIdentity {
                cert_pem: certs.client_cert_pem.clone(),
                key_pem: certs.client_key_pem.clone(),
            };
            let agent = NodeAgent::new(NodeAgentConfig {
                node_name: names[*i].clone(),
                api_url: base.clone(),
                ca_pem: ca_pem.clone(),
                identity_cert_pem: identity.cert_pem.clone(),
                identity_key_pem: identity.key_pem.clone(),
                identity_slot: None,
                server_name: Some(API_SERVER_NAME.into()),
                labels: vec![],
                taints: vec![],
                annotations: Default::default(),
                addresses: vec![node_ip],
                heartbeat_interval: o.interval,
            })
            .unwrap();
            let watch_client = HttpsClient::new(
                &ServerTrust::Ca(ca_pem.clone()),
                Some(&identity),
                Duration::from_secs(30),
            )
            .unwrap()
            .with_server_name(API_SERVER_NAME);
            let (create, create_retries, cancel) =
                (create.clone(), create_retries.clone(), cancel.clone());
            let (lease, status, delivery, pending) = (
                lease.clone(),
                status.clone(),
                delivery.clone(),
                pending.clone(),
            );
            let name = names[*i].clone();
            let offset = o.interval.mul_f64(k as f64 / registered.len() as f64);
            let (interval, changes, creating) = (o.interval, o.status_changes, creating.clone());
            set.spawn(async move {
                let _permit = creating.acquire_owned().await;
                let agent = Arc::new(agent);
                // Retried like the node agent's own loop does until the Node and Lease exist;
                // the time covers the retries, a node still missing after a minute is failed.
                let t = Instant::now();
                let mut ok = false;
                while !ok && t.elapsed() < Duration::from_secs(60) && !cancel.is_cancelled() {
                    ok = agent.register(true).await.is_ok() && agent.renew_lease().await.is_ok();
                    if !ok {
                        create_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                create.lock().unwrap().record(t.elapsed(), ok);
                tokio::spawn(watch_pods(
                    watch_client,
                    base,
                    name,
                    pending,
                    delivery,
                    cancel.clone(),
                ));
                tokio::spawn(heartbeat(
                    agent, offset, interval, changes, k as u64, lease, status, cancel,
                ));
            });
        }
        while set.join_next().await.is_some() {}
        steady_started.elapsed()
    });
    println!(
        "{} (all in {:.1} s, {} retries)",
        create.lock().unwrap().line("node + lease creation"),
        create_took.as_secs_f64(),
        create_retries.load(std::sync::atomic::Ordering::Relaxed)
    );
    // Let every node reach its first heartbeat and open its watch, then measure.
    rt.block_on(async { tokio::time::sleep(o.interval).await });
    for s in [&lease, &status] {
        *s.lock().unwrap() = Samples::default();
    }
    let before: Vec<u64> = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
    let bench_before = cpu_ticks(std::process::id());
    let window_started = Instant::now();
    rt.block_on(async {
        let writer = {
            let (admin, base, pending, hollow) =
                (admin.clone(), admin_base.clone(), pending.clone(), hollow.clone());
            let every = Duration::from_secs_f64(1.0 / o.pods_per_sec);
            let count = (o.steady.as_secs_f64() * o.pods_per_sec) as usize;
            let steady = o.steady;
            tokio::spawn(async move {
                let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
                let mut failed = 0usize;
                for k in 0..count {
                    // The window bounds the writes even when each takes longer than planned.
                    if window_started.elapsed() >= steady {
                        break;
                    }
                    let node = &hollow[rng.next(hollow.len())];
                    let name = format!("wd-{k:06}");
                    let pod = serde_json::json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": "default"},
                        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
                    });
                    pending.lock().unwrap().insert(name.clone(), Instant::now());
                    let r = admin
                        .request(
                            http::Method::POST,
                            &format!("{base}/api/v1/namespaces/default/pods"),
                            &[("content-type", "application/json".into())],
                            Some(serde_json::to_vec(&pod).unwrap()),
                        )
                        .await;
                    if !matches!(r, Ok(ref r) if r.is_success()) {
                        pending.lock().unwrap().remove(&name);
                        failed += 1;
                    }
                    tokio::time::sleep(every).await;
                }
                failed
            })
        };
        let lister = {
            let (admin, base, lists0, lists) =
                (admin.clone(), admin_base.clone(), lists0.clone(), lists.clone());
            let every = o.steady.div_f64(o.lists.max(1) as f64);
            let (n, steady) = (o.lists, o.steady);
            tokio::spawn(async move {
                for _ in 0..n {
                    if window_started.elapsed() >= steady {
                        break;
                    }
                    for (query, samples) in [("?resourceVersion=0", &lists0), ("", &lists)] {
                        let t = Instant::now();
                        let r = admin
                            .request(
                                http::Method::GET,
                                &format!("{base}/api/v1/nodes{query}"),
                                &[],
                                None,
                            )
                            .await;
                        let ok = matches!(r, Ok(ref r) if r.is_success());
                        samples.lock().unwrap().record(t.elapsed(), ok);
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        let failed_writes = writer.await.unwrap();
        lister.await.unwrap();
        let rest = o.steady.saturating_sub(window_started.elapsed());
        tokio::time::sleep(rest.max(Duration::from_secs(5))).await;
        let undelivered = pending.lock().unwrap().len();
        println!(
            "steady state                {} hollow nodes, {:.0} s window, heartbeat every {:.0} s",
            hollow.len(),
            window_started.elapsed().as_secs_f64(),
            o.interval.as_secs_f64()
        );
        for (what, samples) in [("lease renewal", &lease), ("node status update", &status)] {
            let samples = samples.lock().unwrap();
            println!("{}", samples.line(what));
            if samples.failed > 0 {
                println!("  failures: {}", samples.errors_line());
            }
        }
        println!(
            "{}  ({failed_writes} pod writes failed, {undelivered} not delivered after 5 s)",
            delivery.lock().unwrap().line("watch delivery")
        );
        println!(
            "{}",
            lists0.lock().unwrap().line("LIST nodes rv=0")
        );
        println!("{}", lists.lock().unwrap().line("LIST nodes consistent"));
    });
    report_load(&pids, &before, window_started.elapsed());
    // The hollow nodes' own cost: with thousands of agents in this one process it can be what
    // the latencies above measure rather than the servers.
    let me = std::process::id();
    println!(
        "bench      RSS {:>6.0} MiB  CPU {:>5.1} % of a core (all hollow nodes, pod writer, lister)",
        proc_status_kib(me, "VmRSS:") as f64 / 1024.0,
        (cpu_ticks(me) - bench_before) as f64
            / TICKS_PER_SEC
            / window_started.elapsed().as_secs_f64()
            * 100.0
    );
    println!("established connections to 6443: {}", established_to(6443));
    for (i, s) in servers.iter().enumerate() {
        let out = etcdctl(s, &["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        println!(
            "s{} etcd DB size {:.1} MiB (in use {:.1} MiB)",
            i + 1,
            v[0]["Status"]["dbSize"].as_f64().unwrap_or(0.0) / 1048576.0,
            v[0]["Status"]["dbSizeInUse"].as_f64().unwrap_or(0.0) / 1048576.0
        );
    }
    cancel.cancel();
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(servers);
    drop(lb);
}
