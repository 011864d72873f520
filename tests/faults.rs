//! Fault suite (issue 17): a 3-server cluster on loopback addresses under a write load, with
//! one fault per test — kill -9 of a daemon, of an etcd child and of the etcd leader's daemon,
//! SIGSTOP/SIGCONT, quorum loss, a data disk that fills (a small tmpfs in a private mount
//! namespace) and a network partition (servers and clients in network namespaces on a bridge,
//! the leader's cable pulled). Afterwards every acknowledged write must be present (0 lost); the longest time
//! without an acknowledged write is printed, never asserted (figures belong to benches).
//!
//! The load is a thread creating ConfigMaps and merge-patching every fifth one over HTTPS with
//! the admin certificate (curl), trying the servers in turn, so a dead server only costs one
//! timeout. A write counts as acknowledged only on 201/200 (or 409 AlreadyExists for a create
//! whose earlier attempt timed out after all: the object is there).

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

const FORM: Duration = Duration::from_secs(90);

/// One 3-server cluster at a time: six etcd and rke2 processes per scenario already fill the
/// 2-core CI machine, and the harness runs tests in parallel threads.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A failed scenario poisons the lock; the next one must still run.
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}
const RECOVER: Duration = Duration::from_secs(60);

struct Cluster {
    servers: Vec<ServerNode>,
    /// Admin credentials and CA for the load (copied from s1).
    creds: Creds,
    /// Last, so it is dropped last: the nodes stop (and `rke2 killall` reads their config)
    /// before their directories go.
    _root: tempfile::TempDir,
}

#[derive(Clone)]
struct Creds {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The network namespace clients run in (the partition test); `None`: the host's.
    netns: Option<String>,
}

impl Creds {
    /// `program` run where the clients live.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }
}

/// Forms a 3-server cluster (s2 and s3 join through s1's supervisor address). `start` decides
/// how a server is started (the disk-full test runs s3 in a mount namespace).
fn form_cluster(
    block: &AddrBlock,
    token: &str,
    start: impl FnMut(&str, Ipv4Addr, &Path, &[(&'static str, String)]) -> ServerNode,
) -> Cluster {
    let ips = [block.ip(1), block.ip(2), block.ip(3)];
    form_cluster_at(ips, None, token, start)
}

/// [`form_cluster`] at given addresses, with clients (the load, etcdctl) in `netns`.
fn form_cluster_at(
    ips: [Ipv4Addr; 3],
    netns: Option<String>,
    token: &str,
    mut start: impl FnMut(&str, Ipv4Addr, &Path, &[(&'static str, String)]) -> ServerNode,
) -> Cluster {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("curl", "curl");
    let root = tempfile::tempdir().unwrap();
    let s1 = start("s1", ips[0], root.path(), &[("token", token.into())]);
    let join = vec![("token", token.to_string()), ("server", s1.supervisor())];
    let mut servers = vec![s1];
    servers[0].daemon.wait_log("ready:", FORM);
    for i in 2..=3u8 {
        servers.push(start(
            &format!("s{i}"),
            ips[usize::from(i) - 1],
            root.path(),
            &join,
        ));
    }
    for s in &mut servers {
        s.daemon.wait_log("ready:", FORM);
    }
    let tls = servers[0].data_dir().join("server/tls");
    let creds = Creds {
        ca: tls.join("server-ca.crt"),
        cert: tls.join("client-admin.crt"),
        key: tls.join("client-admin.key"),
        netns,
    };
    let c = Cluster {
        _root: root,
        servers,
        creds,
    };
    wait_for(FORM, "3 voting etcd members", || {
        let out = etcdctl_via(&c, c.servers[0].ip, &["member", "list", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let voters = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["isLearner"] != true && m["name"].as_str().is_some_and(|n| !n.is_empty()))
            .count();
        (voters == 3).then_some(())
    });
    c
}

fn default_start(
    name: &str,
    ip: Ipv4Addr,
    root: &Path,
    extra: &[(&'static str, String)],
) -> ServerNode {
    start_server(name, ip, root, extra)
}

/// One HTTPS request with the admin certificate: (status, body); status 0 when no answer.
fn request(
    creds: &Creds,
    ip: Ipv4Addr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let out = creds
        .command("curl")
        .args(["-sS", "--max-time", "3", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(&creds.ca)
        .arg("--cert")
        .arg(&creds.cert)
        .arg("--key")
        .arg(&creds.key)
        .args(["-X", method, "-H", &format!("Content-Type: {content_type}")])
        .args(if body.is_empty() {
            vec![]
        } else {
            vec!["--data-binary", body]
        })
        .arg(format!("https://{ip}:6443{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// What the load saw.
#[derive(Debug, Default)]
struct LoadReport {
    attempts: usize,
    created: Vec<String>,
    patched: Vec<String>,
    longest_gap: Duration,
}

struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<LoadReport>>,
}

impl Load {
    fn start(creds: Creds, ips: Vec<Ipv4Addr>, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let prefix = prefix.to_string();
        let handle = std::thread::spawn(move || {
            let mut r = LoadReport::default();
            let mut last_ack = Instant::now();
            let mut n = 0usize;
            // Try each server once, starting with a different one per write.
            let send = |n: usize, method: &str, path: &str, ct: &str, body: &str| {
                (0..ips.len()).find_map(|k| {
                    let ip = ips[(n + k) % ips.len()];
                    let (code, _) = request(&creds, ip, method, path, ct, body);
                    matches!(code, 200 | 201 | 409).then_some(code)
                })
            };
            while !flag.load(Ordering::SeqCst) {
                n += 1;
                r.attempts += 1;
                let name = format!("{prefix}-{n}");
                let body = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"n":"{n}"}}}}"#
                );
                let acked = match send(
                    n,
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    "application/json",
                    &body,
                ) {
                    Some(201) | Some(409) => {
                        r.created.push(name);
                        true
                    }
                    _ => false,
                };
                // Patch an object created earlier, once each.
                let patched = if n.is_multiple_of(5) && r.created.len() > 3 {
                    let target = r.created[r.created.len() - 3].clone();
                    let ok = send(
                        n,
                        "PATCH",
                        &format!("/api/v1/namespaces/default/configmaps/{target}"),
                        "application/merge-patch+json",
                        r#"{"data":{"p":"patched"}}"#,
                    ) == Some(200);
                    if ok && !r.patched.contains(&target) {
                        r.patched.push(target);
                    }
                    ok
                } else {
                    false
                };
                if acked || patched {
                    r.longest_gap = r.longest_gap.max(last_ack.elapsed());
                    last_ack = Instant::now();
                }
            }
            r.longest_gap = r.longest_gap.max(last_ack.elapsed());
            r
        });
        Load {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().expect("load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Waits until the cluster takes writes again through `ip`.
fn wait_writable(c: &Cluster, ip: Ipv4Addr, what: &str) {
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"probe-"}}"#;
    wait_for(RECOVER, what, || {
        (request(
            &c.creds,
            ip,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            body,
        )
        .0 == 201)
            .then_some(())
    });
}

/// Keeps the fault in place under load for `seconds` (the exposure of the scenario, not a wait
/// for a condition), polling `/readyz` meanwhile so a hung server shows in the logs.
fn run_load_for(c: &Cluster, ip: Ipv4Addr, seconds: u64) {
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let _ = request(&c.creds, ip, "GET", "/readyz", "application/json", "");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every acknowledged create and patch is there: reads the ConfigMaps through `ip`.
fn check_no_loss(c: &Cluster, ip: Ipv4Addr, scenario: &str, r: &LoadReport) {
    let (code, body) = wait_for(RECOVER, "list configmaps", || {
        let (code, body) = request(
            &c.creds,
            ip,
            "GET",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "",
        );
        (code == 200).then_some((code, body))
    });
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let items = list["items"].as_array().unwrap();
    let present = |name: &str| items.iter().find(|i| i["metadata"]["name"] == name);
    let lost: Vec<&String> = r.created.iter().filter(|n| present(n).is_none()).collect();
    let lost_patches: Vec<&String> = r
        .patched
        .iter()
        .filter(|n| present(n).is_none_or(|i| i["data"]["p"] != "patched"))
        .collect();
    eprintln!(
        "[faults] {scenario}: {} attempts, {} creates and {} patches acknowledged, {} lost, longest unavailability {:.2?}",
        r.attempts,
        r.created.len(),
        r.patched.len(),
        lost.len() + lost_patches.len(),
        r.longest_gap
    );
    assert!(
        !r.created.is_empty(),
        "{scenario}: no write was acknowledged"
    );
    assert!(
        lost.is_empty() && lost_patches.is_empty(),
        "{scenario}: lost creates {lost:?}, lost patches {lost_patches:?}"
    );
}

fn ips(c: &Cluster) -> Vec<Ipv4Addr> {
    c.servers.iter().map(|s| s.ip).collect()
}

/// The pid of a server's etcd child (its data dir is on the command line).
fn etcd_pid(s: &ServerNode) -> Option<u32> {
    let needle = s.data_dir().join("server/db/etcd").display().to_string();
    pids_matching(&needle)
        .into_iter()
        .find(|p| *p != s.daemon.pid())
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// etcdctl against `ip`'s etcd with s1's client certificate (one etcd CA signs them all; s3's
/// own files may sit in a mount namespace the test cannot see).
fn etcdctl_via(c: &Cluster, ip: Ipv4Addr, args: &[&str]) -> std::process::Output {
    etcdctl_with(
        c.creds.command("etcdctl"),
        &c.servers[0].data_dir(),
        ip,
        args,
    )
}

/// The index of the etcd leader, asking each server's etcd.
fn leader(c: &Cluster) -> Option<usize> {
    etcd_leader_by(c.servers.len(), |i| {
        etcdctl_via(c, c.servers[i].ip, &["endpoint", "status", "-w", "json"])
    })
}

fn healthy_again(c: &Cluster, idx: usize) {
    let s = &c.servers[idx];
    let start = Instant::now();
    loop {
        let out = etcdctl_via(c, s.ip, &["endpoint", "health"]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < RECOVER,
            "{} etcd not healthy again after {RECOVER:?}: {}{}\nalarms: {}\nlog:\n{}",
            s.daemon.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&etcdctl_via(c, s.ip, &["alarm", "list"]).stdout),
            s.daemon
                .log_text()
                .lines()
                .filter(|l| !l.contains("TCP streaming") && !l.contains("find remote peer"))
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill9_of_a_server_daemon_loses_no_write() {
    let _serial = serial();
    let block = AddrBlock::new();
    let mut c = form_cluster(&block, "faults-kill9", default_start);
    let load = Load::start(c.creds.clone(), ips(&c), "k9");
    run_load_for(&c, c.servers[0].ip, 3);
    let victim = 2;
    c.servers[victim].daemon.kill9();
    run_load_for(&c, c.servers[0].ip, 4);
    c.servers[victim].restart(&[]);
    c.servers[victim].daemon.wait_log("ready:", RECOVER);
    healthy_again(&c, victim);
    run_load_for(&c, c.servers[0].ip, 2);
    let report = load.finish();
    check_no_loss(&c, c.servers[victim].ip, "kill -9 daemon", &report);
}

#[test]
fn kill9_of_an_etcd_child_loses_no_write() {
    let _serial = serial();
    let block = AddrBlock::new();
    let c = form_cluster(&block, "faults-etcd", default_start);
    let load = Load::start(c.creds.clone(), ips(&c), "ke");
    run_load_for(&c, c.servers[0].ip, 3);
    let victim = 1;
    let pid = etcd_pid(&c.servers[victim]).expect("etcd child of s2");
    kill(pid, "KILL");
    // The daemon restarts its etcd; the member catches up.
    wait_for(RECOVER, "a new etcd child", || {
        etcd_pid(&c.servers[victim])
            .filter(|p| *p != pid)
            .map(|_| ())
    });
    healthy_again(&c, victim);
    run_load_for(&c, c.servers[0].ip, 2);
    let report = load.finish();
    check_no_loss(&c, c.servers[victim].ip, "kill -9 etcd child", &report);
}

#[test]
fn kill9_of_the_leaders_daemon_loses_no_write() {
    let _serial = serial();
    let block = AddrBlock::new();
    let mut c = form_cluster(&block, "faults-leader", default_start);
    let load = Load::start(c.creds.clone(), ips(&c), "kl");
    run_load_for(&c, c.servers[0].ip, 3);
    let leader = wait_for(RECOVER, "an etcd leader", || leader(&c));
    let other = (leader + 1) % 3;
    c.servers[leader].daemon.kill9();
    wait_writable(&c, c.servers[other].ip, "writes after the leader's death");
    run_load_for(&c, c.servers[other].ip, 3);
    c.servers[leader].restart(&[]);
    c.servers[leader].daemon.wait_log("ready:", RECOVER);
    healthy_again(&c, leader);
    let report = load.finish();
    check_no_loss(&c, c.servers[leader].ip, "kill -9 leader daemon", &report);
}

#[test]
fn sigstop_and_sigcont_lose_no_write() {
    let _serial = serial();
    let block = AddrBlock::new();
    let c = form_cluster(&block, "faults-stop", default_start);
    let load = Load::start(c.creds.clone(), ips(&c), "st");
    run_load_for(&c, c.servers[0].ip, 3);
    let leader = wait_for(RECOVER, "an etcd leader", || leader(&c));
    let other = (leader + 1) % 3;
    // Freeze the leader's daemon and its etcd: to its peers it is gone, to itself no time passes.
    let s = &c.servers[leader];
    let pids = [s.daemon.pid(), etcd_pid(s).expect("etcd child")];
    for p in pids {
        kill(p, "STOP");
    }
    let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_writable(
            &c,
            c.servers[other].ip,
            "writes while the leader is stopped",
        );
        run_load_for(&c, c.servers[other].ip, 4);
    }));
    for p in pids {
        kill(p, "CONT");
    }
    if let Err(e) = resumed {
        std::panic::resume_unwind(e);
    }
    healthy_again(&c, leader);
    run_load_for(&c, c.servers[other].ip, 2);
    let report = load.finish();
    check_no_loss(&c, c.servers[leader].ip, "SIGSTOP/SIGCONT leader", &report);
}

#[test]
fn quorum_loss_and_return_lose_no_write() {
    let _serial = serial();
    let block = AddrBlock::new();
    let mut c = form_cluster(&block, "faults-quorum", default_start);
    let load = Load::start(c.creds.clone(), ips(&c), "q");
    run_load_for(&c, c.servers[0].ip, 3);
    c.servers[1].daemon.kill9();
    c.servers[2].daemon.kill9();
    // No quorum: writes must fail rather than be acknowledged and lost.
    run_load_for(&c, c.servers[0].ip, 4);
    c.servers[1].restart(&[]);
    c.servers[2].restart(&[]);
    for i in 1..3 {
        c.servers[i].daemon.wait_log("ready:", RECOVER);
    }
    wait_writable(&c, c.servers[0].ip, "writes after quorum is back");
    run_load_for(&c, c.servers[0].ip, 2);
    let report = load.finish();
    check_no_loss(&c, c.servers[2].ip, "quorum loss (2 of 3 down)", &report);
}

/// A process holding a private mount namespace with a tmpfs mounted over a server's data dir;
/// rke2 runs inside it through `nsenter` (which execs, so the pid stays rke2's). Killing the
/// holder (on drop) ends the namespace and frees the tmpfs.
struct MountNs {
    holder: Daemon,
}

impl MountNs {
    fn new(data_dir: &Path, size: &str, log: &Path) -> MountNs {
        std::fs::create_dir_all(data_dir).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size},mode=0700 rke2-faults {} && echo mounted && exec sleep 100000",
                data_dir.display()
            ));
        let mut holder = Daemon::spawn("mount-ns", cmd, log);
        holder.wait_log("mounted", Duration::from_secs(10));
        MountNs { holder }
    }

    /// `path` as seen inside the namespace (through /proc/<pid>/root).
    fn inside(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.pid()))
            .join(path.strip_prefix("/").unwrap())
    }

    /// `rke2 server --config <config>` inside the namespace.
    fn start_server(&self, name: &str, config: &Path, log: &Path) -> Daemon {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.pid()))
            .arg("--")
            .arg(rke2_bin())
            .args(["server", "--config"])
            .arg(config)
            .env("RUST_LOG", "info");
        Daemon::spawn(name, cmd, log)
    }
}

#[test]
fn a_full_data_disk_loses_no_write() {
    let _serial = serial();
    require_tool("unshare", "util-linux");
    require_tool("nsenter", "util-linux");
    let block = AddrBlock::new();
    let mut ns: Option<MountNs> = None;
    let mut c = form_cluster(&block, "faults-disk", |name, ip, root, extra| {
        if name != "s3" {
            return start_server(name, ip, root, extra);
        }
        // s3's data dir is a 256 MiB tmpfs (etcd preallocates 64 MiB WAL segments).
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let m = MountNs::new(&dir.join("data"), "256m", &dir.join("mount-ns.log"));
        let node = start_server_with(name, ip, root, extra, |config, log| {
            m.start_server(name, config, log)
        });
        ns = Some(m);
        node
    });
    let ns = ns.expect("s3 runs in a mount namespace");
    let load = Load::start(c.creds.clone(), ips(&c), "df");
    run_load_for(&c, c.servers[0].ip, 3);
    // Fill the disk, then make etcd need space: kill it so the restart must write.
    let fill = ns.inside(&c.servers[2].data_dir().join("fill"));
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", fill.display()))
        .status();
    let filled = std::fs::metadata(&fill).map(|m| m.len()).unwrap_or(0);
    eprintln!("[faults] s3 data disk filled with {} MiB", filled >> 20);
    if let Some(pid) = etcd_pid(&c.servers[2]) {
        kill(pid, "KILL");
    }
    run_load_for(&c, c.servers[0].ip, 5);
    let log = c.servers[2].daemon.log_text();
    let complaints = log
        .lines()
        .filter(|l| l.contains("no space left") || l.contains("etcd exited"))
        .count();
    eprintln!("[faults] s3 log lines about the full disk or etcd exits: {complaints}");
    // Free the space; the member recovers (restarting rke2 in the namespace if it gave up).
    std::fs::remove_file(&fill).unwrap();
    if !c.servers[2].daemon.running() {
        let log = c.servers[2].dir.join(format!("log-{}", unique_suffix()));
        c.servers[2].daemon = ns.start_server("s3", &c.servers[2].config, &log);
    }
    healthy_again(&c, 2);
    run_load_for(&c, c.servers[0].ip, 2);
    let report = load.finish();
    check_no_loss(&c, c.servers[2].ip, "full data disk on s3", &report);
    // Stop s3 before its namespace goes away, then the namespace.
    c.servers[2].daemon.stop();
    drop(ns);
}

/// Network namespaces for a partition: `<p>-sw` holds bridge br0, `<p>-n1..3` (the servers,
/// 198.18.0.1-3) and `<p>-c` (the clients, 198.18.0.100) each hang off it by a veth whose
/// bridge end is `p1..p3` / `pc`. The host namespace gets nothing and never reaches 198.18/15.
/// Drop kills what still runs in them (only processes this test started) and deletes them.
struct NetLab {
    prefix: String,
}

impl NetLab {
    fn new() -> NetLab {
        require_tool("ip", "iproute2");
        let lab = NetLab {
            prefix: format!("rkf{}", unique_suffix()),
        };
        let sw = lab.ns("sw");
        lab.ip(&["netns", "add", &sw]);
        lab.ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        lab.ip(&["-n", &sw, "link", "set", "br0", "up"]);
        lab.ip(&["-n", &sw, "link", "set", "lo", "up"]);
        for (host, addr) in [("n1", 1), ("n2", 2), ("n3", 3), ("c", 100)] {
            let ns = lab.ns(host);
            let port = format!("p{}", host.trim_start_matches('n'));
            lab.ip(&["netns", "add", &ns]);
            lab.ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            lab.ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            lab.ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("198.18.0.{addr}/24"),
                "dev",
                "eth0",
            ]);
            lab.ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            lab.ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Unplugs (or plugs back) server `i`'s cable (1-based).
    fn cable(&self, i: usize, up: bool) {
        let sw = self.ns("sw");
        let port = format!("p{i}");
        self.ip(&[
            "-n",
            &sw,
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for host in ["n1", "n2", "n3", "c", "sw"] {
            let ns = self.ns(host);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

#[test]
fn a_network_partition_loses_no_write() {
    let _serial = serial();
    let lab = NetLab::new();
    let ips = [1u8, 2, 3].map(|i| Ipv4Addr::new(198, 18, 0, i));
    let c = form_cluster_at(
        ips,
        Some(lab.ns("c")),
        "faults-partition",
        |name, ip, root, extra| {
            let host = format!("n{}", name.trim_start_matches('s'));
            let ns = lab.ns(&host);
            start_server_with(name, ip, root, extra, |config, log| {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns])
                    .arg(rke2_bin())
                    .args(["server", "--config"])
                    .arg(config)
                    .env("RUST_LOG", "info");
                Daemon::spawn(name, cmd, log)
            })
        },
    );
    let load = Load::start(c.creds.clone(), ips.to_vec(), "np");
    run_load_for(&c, ips[0], 3);
    // Cut the leader off: the other two elect a new one and keep taking writes.
    let cut = wait_for(RECOVER, "an etcd leader", || leader(&c));
    let other = (cut + 1) % 3;
    lab.cable(cut + 1, false);
    let during = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_writable(&c, ips[other], "writes on the majority side");
        run_load_for(&c, ips[other], 4);
    }));
    lab.cable(cut + 1, true);
    if let Err(e) = during {
        std::panic::resume_unwind(e);
    }
    healthy_again(&c, cut);
    run_load_for(&c, ips[other], 2);
    let report = load.finish();
    check_no_loss(&c, ips[cut], "partition of the leader", &report);
    // Servers stop (Cluster drop) before their namespaces go (NetLab drop).
    drop(c);
    drop(lab);
}
