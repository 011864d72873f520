//! Shared helpers for the integration tests: unique loopback addresses per test, running the
//! real `rke2` binary with its own data directory, polling with generous timeouts (never bare
//! sleeps), real kubectl/etcdctl/curl, and cleanup of every started process even on failure.
#![allow(dead_code)]

pub mod bus;
pub mod streaming;
pub mod workloads;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The binary under test: the one cargo built, or `RKE2_BENCH_BIN` when set (a bench run
/// against an earlier build, for before/after figures from one bench binary).
pub fn rke2_bin() -> PathBuf {
    std::env::var_os("RKE2_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rke2")))
}

/// Fails with a clear message when a required tool is missing (CI installs them all).
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(tool).is_file());
    assert!(
        found,
        "{tool} is required for this test: apt-get install -y {package}"
    );
}

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);
static NEXT_SUFFIX: AtomicU32 = AtomicU32::new(0);

/// A suffix unique within this test process (file names of successive logs and the like).
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT_SUFFIX.fetch_add(1, Ordering::SeqCst)
    )
}

/// A block of loopback addresses 127.A.B.1..N reserved for one test: A from the process id,
/// B a per-process counter, so tests in parallel (threads or processes) never share addresses.
/// Two test processes whose ids give the same A are kept apart by a claim: the block's owner
/// holds a listener on `127.A.B.1:`[`BLOCK_CLAIM_PORT`] for the block's lifetime, and binding it
/// is atomic, so exactly one process gets each block.
#[derive(Debug, Clone)]
pub struct AddrBlock {
    a: u8,
    b: u8,
    _claim: std::sync::Arc<TcpListener>,
}

/// The port whose listener claims an [`AddrBlock`] (outside Linux's default ephemeral range and
/// every port a test node uses).
const BLOCK_CLAIM_PORT: u16 = 65001;

impl AddrBlock {
    pub fn new() -> AddrBlock {
        loop {
            let n = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
            let a = 20 + (std::process::id() % 200) as u8;
            let b = (n % 250 + 1) as u8;
            let ip = Ipv4Addr::new(127, a, b, 1);
            let Ok(claim) = TcpListener::bind((ip, BLOCK_CLAIM_PORT)) else {
                continue;
            };
            // Skip blocks whose addresses are already in use by something else.
            if [9345u16, 6443, 2379, 2380]
                .iter()
                .all(|p| TcpListener::bind((ip, *p)).is_ok())
            {
                return AddrBlock {
                    a,
                    b,
                    _claim: std::sync::Arc::new(claim),
                };
            }
        }
    }

    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.a, self.b, host)
    }

    /// A node name of this block alone (`<base>-<A>x<B>`). A node's pod bridge is named after
    /// the node, and other test processes run nodes in the same network namespace at the same
    /// time: two nodes named alike would share one bridge, and one's cleanup would take the
    /// other's pod network namespaces with it.
    pub fn node_name(&self, base: &str) -> String {
        format!("{base}-{}x{}", self.a, self.b)
    }
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `rke2` process; killed (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `rke2 <role> --config <config>` with the given extra environment.
    pub fn start(
        name: &str,
        role: &str,
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(rke2_bin());
        cmd.arg(role)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::spawn(name, cmd, log)
    }

    /// Starts `cmd` (rke2 itself, or a launcher that execs it in place, such as
    /// `systemd-socket-activate` or `nsenter`, so the pid stays rke2's) with stdout and stderr
    /// in `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Daemon {
        let out = fs::File::create(log).expect("log file");
        cmd.stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null());
        let child = cmd.spawn().expect("spawn rke2");
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages: etcd's own chatter is left out, its
    /// warnings and errors (why it exited) stay.
    pub fn log_tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| !l.contains("etcd: ") || l.contains(" ERROR ") || l.contains(" WARN "))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "{}: no {needle:?} after {timeout:?}:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not exit within {timeout:?}:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Option<i32> {
        if let Some(c) = self.child.as_mut()
            && c.try_wait().ok().flatten().is_none()
        {
            self.signal("TERM");
            return self.wait_exit(Duration::from_secs(30));
        }
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .and_then(|s| s.code())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 15 s: what dropping does.
    pub fn terminate(&mut self) {
        let pid = self.pid();
        if let Some(c) = self.child.as_mut()
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Runs `rke2 killall` for the node whose config is `config` (its `data-dir`): what a killed
/// daemon left behind (containers, the pod bridge, the nftables table, the DNS route) goes.
fn killall_node(config: &Path) {
    let Ok(text) = fs::read_to_string(config) else {
        return;
    };
    let Ok(yaml) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
        return;
    };
    let Some(data_dir) = yaml.get("data-dir").and_then(|d| d.as_str()) else {
        return;
    };
    killall_data_dir(Path::new(data_dir));
}

/// Runs `rke2 killall --data-dir <data_dir>` when the directory exists, ignoring the outcome
/// (cleanup on the way out of a test, failed or not).
pub fn killall_data_dir(data_dir: &Path) {
    if data_dir.exists() {
        let _ = Command::new(rke2_bin())
            .arg("killall")
            .arg("--data-dir")
            .arg(data_dir)
            .output();
    }
}

impl Drop for ServerNode {
    fn drop(&mut self) {
        self.daemon.terminate();
        killall_node(&self.config);
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.daemon.terminate();
        killall_node(&self.config);
    }
}

/// Whether kubectl lists every node of `names` as Ready.
pub fn all_ready(k: &Path, names: &[&str]) -> bool {
    let out = kubectl(k, &["get", "nodes", "--no-headers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success()
        && names.iter().all(|n| {
            text.lines().any(|l| {
                l.split_whitespace().next() == Some(n)
                    && l.split_whitespace().nth(1) == Some("Ready")
            })
        })
}

/// Writes a YAML config from key/value lines.
/// Keys ending in `[]` are list elements; a repeated scalar key keeps the last value.
pub fn write_config(path: &Path, entries: &[(&str, String)]) {
    let mut text = String::new();
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut scalars: Vec<(&str, &String)> = Vec::new();
    for (k, v) in entries {
        if let Some(key) = k.strip_suffix("[]") {
            lists.entry(key).or_default().push(v.clone());
        } else if let Some(slot) = scalars.iter_mut().find(|(sk, _)| sk == k) {
            slot.1 = v;
        } else {
            scalars.push((k, v));
        }
    }
    for (k, v) in scalars {
        text.push_str(&format!("{k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    for (k, vs) in lists {
        text.push_str(&format!("{k}:\n"));
        for v in vs {
            text.push_str(&format!("  - {}\n", serde_json::to_string(&v).unwrap()));
        }
    }
    fs::write(path, text).expect("write config");
}

/// One test server node on its own loopback address.
pub struct ServerNode {
    pub daemon: Daemon,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub kubeconfig: PathBuf,
}

impl ServerNode {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn token(&self) -> String {
        fs::read_to_string(self.data_dir().join("server/token"))
            .expect("token file")
            .trim()
            .to_string()
    }

    pub fn supervisor(&self) -> String {
        format!("https://{}:9345", self.ip)
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir().join("server/tls/server-ca.crt")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.kubeconfig, args)
    }

    /// A raw API request with the admin client certificate through curl (`body` sent as
    /// `content_type`); returns (HTTP status, body).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: &str,
    ) -> (u16, String) {
        let tls = self.data_dir().join("server/tls");
        let mut args = vec![
            "-X".to_string(),
            method.to_string(),
            "--cert".into(),
            tls.join("client-admin.crt").display().to_string(),
            "--key".into(),
            tls.join("client-admin.key").display().to_string(),
            "-H".into(),
            format!("Content-Type: {content_type}"),
        ];
        if let Some(b) = body {
            args.push("--data-binary".into());
            args.push(b.to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(
            &format!("https://{}:6443{path}", self.ip),
            &self.ca(),
            &refs,
        )
    }

    /// Restarts the daemon with the same config.
    pub fn restart(&mut self, extra_env: &[(&str, &str)]) {
        self.daemon.stop();
        let log = self.dir.join(format!("log-{}", unique_suffix()));
        self.daemon = Daemon::start(
            &self.daemon.name.clone(),
            "server",
            &self.config,
            &log,
            extra_env,
        );
    }
}

/// Base config lines of a test server at `ip` under `dir`.
pub fn server_config(name: &str, ip: Ipv4Addr, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("node-name", name.to_string()),
        ("node-ip", ip.to_string()),
        ("bind-address", ip.to_string()),
        ("data-dir", dir.join("data").display().to_string()),
        (
            "write-kubeconfig",
            dir.join("rke2.yaml").display().to_string(),
        ),
        ("node-heartbeat-interval", "2s".to_string()),
        ("etcd-arg[]", "heartbeat-interval=50".to_string()),
        ("etcd-arg[]", "election-timeout=500".to_string()),
    ]
}

/// Starts a server with `extra` config lines; does not wait for readiness.
pub fn start_server(
    name: &str,
    ip: Ipv4Addr,
    root: &Path,
    extra: &[(&'static str, String)],
) -> ServerNode {
    start_server_env(name, ip, root, extra, &[])
}

/// [`start_server`] with extra environment variables for the daemon.
pub fn start_server_env(
    name: &str,
    ip: Ipv4Addr,
    root: &Path,
    extra: &[(&'static str, String)],
    env: &[(&str, &str)],
) -> ServerNode {
    start_server_with(name, ip, root, extra, |config, log| {
        Daemon::start(name, "server", config, log, env)
    })
}

/// [`start_server`] with the launch left to `launch(config, log)` (e.g. inside a namespace).
pub fn start_server_with(
    name: &str,
    ip: Ipv4Addr,
    root: &Path,
    extra: &[(&'static str, String)],
    launch: impl FnOnce(&Path, &Path) -> Daemon,
) -> ServerNode {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let mut entries = server_config(name, ip, &dir);
    entries.extend(extra.iter().cloned());
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    let daemon = launch(&config, &dir.join("log"));
    ServerNode {
        daemon,
        ip,
        kubeconfig: dir.join("rke2.yaml"),
        config,
        dir,
    }
}

/// Config lines of a test agent at `ip` under `dir`, joining through `server` (a supervisor
/// URL) with `token`; its load balancers listen on `ip` too.
pub fn agent_config(
    name: &str,
    ip: Ipv4Addr,
    dir: &Path,
    server: &str,
    token: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("node-name", name.to_string()),
        ("node-ip", ip.to_string()),
        ("server", server.to_string()),
        ("token", token.to_string()),
        ("data-dir", dir.join("data").display().to_string()),
        (
            "node-password-file",
            dir.join("node-password").display().to_string(),
        ),
        ("lb-bind-address", ip.to_string()),
        ("node-heartbeat-interval", "2s".to_string()),
    ]
}

/// Writes an agent's config under `root/<name>` (see [`agent_config`]) and returns its path.
pub fn write_agent_config(
    name: &str,
    ip: Ipv4Addr,
    root: &Path,
    server: &str,
    token: &str,
) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    write_config(&config, &agent_config(name, ip, &dir, server, token));
    config
}

/// Tells the test log about a skipped test. Written to the real stderr (not through
/// `eprintln!`, which the test harness captures and hides for tests that return normally).
/// With `RKE2_TEST_REQUIRE=<anything>` in the environment a skip is a failure instead (CI).
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    if std::env::var_os("RKE2_TEST_REQUIRE").is_some() {
        panic!("{test}: cannot run ({reason}) and RKE2_TEST_REQUIRE is set");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// One sd_notify datagram the test (acting as the service manager) received.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    /// Sender pid from SCM_CREDENTIALS (0 if missing).
    pub pid: u32,
    pub text: String,
}

impl Notification {
    /// The value of `KEY=` in this datagram, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// The service manager's end of `NOTIFY_SOCKET`: a datagram socket that records every
/// message with its sender's pid (SO_PASSCRED), as systemd does for `NotifyAccess=main`.
pub struct NotifyReceiver {
    pub path: PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<Notification>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotifyReceiver {
    pub fn bind(path: &Path) -> NotifyReceiver {
        use std::os::unix::net::UnixDatagram;
        let sock = UnixDatagram::bind(path).expect("bind notify socket");
        rustix::net::sockopt::set_socket_passcred(&sock, true).expect("SO_PASSCRED");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (messages, stop) = (messages.clone(), stop.clone());
            std::thread::spawn(move || {
                use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
                while !stop.load(Ordering::SeqCst) {
                    let mut space =
                        [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
                    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
                    let mut buf = vec![0u8; 65536];
                    let n = match rustix::net::recvmsg(
                        &sock,
                        &mut [std::io::IoSliceMut::new(&mut buf)],
                        &mut cmsg,
                        RecvFlags::empty(),
                    ) {
                        Ok(r) => r.bytes,
                        Err(_) => continue, // timeout: check `stop`
                    };
                    let mut pid = 0;
                    for m in cmsg.drain() {
                        if let RecvAncillaryMessage::ScmCredentials(c) = m {
                            pid = c.pid.as_raw_nonzero().get() as u32;
                        }
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    messages.lock().unwrap().push(Notification {
                        at: Instant::now(),
                        pid,
                        text,
                    });
                }
            })
        };
        NotifyReceiver {
            path: path.to_path_buf(),
            messages,
            stop,
            thread: Some(thread),
        }
    }

    pub fn messages(&self) -> Vec<Notification> {
        self.messages.lock().unwrap().clone()
    }

    /// Every `STATUS=` value, in order.
    pub fn statuses(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|m| m.get("STATUS").map(str::to_string))
            .collect()
    }

    /// Waits for a message for which `pred` holds; returns it.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Notification) -> bool,
    ) -> Notification {
        let start = Instant::now();
        loop {
            let messages = self.messages();
            if let Some(m) = messages.iter().find(|m| pred(m)) {
                return m.clone();
            }
            let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; received: {texts:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NotifyReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs kubectl with a fresh cache dir (the dispatcher caches discovery otherwise).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    kubectl_run(Path::new("kubectl"), kubeconfig, args, None)
}

/// [`kubectl`] with a given kubectl binary (`/usr/lib/google-cloud-sdk/bin/kubectl.1.27`, ...).
pub fn kubectl_bin(bin: &str, kubeconfig: &Path, args: &[&str]) -> Output {
    kubectl_run(Path::new(bin), kubeconfig, args, None)
}

/// Every kubectl installed, with a label: `/usr/bin/kubectl` (the dispatcher picks 1.32 for
/// this server) and the versioned ones under the Cloud SDK (`1.27` ... `1.33`), when present.
pub fn installed_kubectls() -> Vec<(String, PathBuf)> {
    let mut out = vec![("dispatcher".to_string(), PathBuf::from("kubectl"))];
    for minor in 27..=33 {
        let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}"));
        if p.exists() {
            out.push((format!("1.{minor}"), p));
        } else {
            eprintln!("{} not installed: not tested", p.display());
        }
    }
    out
}

/// Runs one kubectl binary (e.g. a version under /usr/lib/google-cloud-sdk/bin) with a fresh
/// cache dir, feeding `stdin` when given.
pub fn kubectl_run(bin: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("--request-timeout=20s")
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("wait for kubectl")
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ReplicaSets of `kubectl get rs <args>` that `keep` accepts, as
/// (name, spec.replicas, `deployment.kubernetes.io/revision`, first container's image).
pub fn replica_set_rows(
    kubeconfig: &Path,
    args: &[&str],
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<(String, i64, String, String)> {
    let out = kubectl(kubeconfig, &[&["get", "rs", "-o", "json"], args].concat());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let text = |r: &serde_json::Value, pointer: &str| {
        r.pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| keep(r))
        .map(|r| {
            (
                text(r, "/metadata/name"),
                r["spec"]["replicas"].as_i64().unwrap_or(-1),
                text(
                    r,
                    "/metadata/annotations/deployment.kubernetes.io~1revision",
                ),
                text(r, "/spec/template/spec/containers/0/image"),
            )
        })
        .collect()
}

/// Waits until `kubectl get node <name>` shows `Ready` (STATUS column starts with Ready).
pub fn wait_node_ready(kubeconfig: &Path, node: &str, timeout: Duration) {
    wait_for(timeout, &format!("node {node} Ready"), || {
        let out = kubectl(kubeconfig, &["get", "node", node, "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success()
            && text
                .split_whitespace()
                .nth(1)
                .is_some_and(|s| s.starts_with("Ready")))
        .then_some(())
    });
}

/// curl with the given CA; returns (HTTP status, body).
/// A request with a client certificate pair (and an optional merge-patch body) through curl;
/// returns (status, body).
pub fn curl_as(
    url: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    method: &str,
    merge_patch: Option<&str>,
) -> (u16, String) {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let mut args = vec!["--cert", &cert, "--key", &key, "-X", method];
    if let Some(b) = merge_patch {
        args.extend([
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            b,
        ]);
    }
    curl(url, ca, &args)
}

pub fn curl(url: &str, ca: &Path, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// etcdctl against a server's etcd with its client certificate.
pub fn etcdctl(node: &ServerNode, args: &[&str]) -> Output {
    etcdctl_at(&node.data_dir(), node.ip, args)
}

/// etcdctl against the etcd at `ip` with the client certificate under `data_dir`.
pub fn etcdctl_at(data_dir: &Path, ip: Ipv4Addr, args: &[&str]) -> Output {
    etcdctl_with(Command::new("etcdctl"), data_dir, ip, args)
}

/// [`etcdctl_at`] run by `cmd` (`etcdctl`, or a launcher such as `ip netns exec <ns> etcdctl`).
pub fn etcdctl_with(mut cmd: Command, data_dir: &Path, ip: Ipv4Addr, args: &[&str]) -> Output {
    let tls = data_dir.join("server/tls/etcd");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{ip}:2379"))
        .arg(format!("--cacert={}", tls.join("server-ca.crt").display()))
        .arg(format!("--cert={}", tls.join("client.crt").display()))
        .arg(format!("--key={}", tls.join("client.key").display()))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// Whether something accepts TCP connections at `addr`.
pub fn port_open(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The pids of processes whose command line contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut cmd = String::new();
        if fs::File::open(e.path().join("cmdline"))
            .and_then(|mut f| f.read_to_string(&mut cmd))
            .is_ok()
            && cmd.replace('\0', " ").contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// File mode bits.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

/// One test agent node.
pub struct AgentNode {
    pub daemon: Daemon,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    pub config: PathBuf,
}

/// Starts an agent on `ip` joining `server_url` with `token`.
pub fn start_agent(
    name: &str,
    ip: Ipv4Addr,
    root: &Path,
    server_url: &str,
    token: &str,
    extra: &[(&'static str, String)],
) -> AgentNode {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let mut entries: Vec<(&str, String)> = vec![
        ("node-name", name.to_string()),
        ("node-ip", ip.to_string()),
        ("server", server_url.to_string()),
        ("token", token.to_string()),
        ("data-dir", dir.join("data").display().to_string()),
        ("lb-bind-address", ip.to_string()),
        (
            "node-password-file",
            dir.join("node-password").display().to_string(),
        ),
        ("node-heartbeat-interval", "1s".to_string()),
    ];
    entries.extend(extra.iter().cloned());
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    let daemon = Daemon::start(name, "agent", &config, &dir.join("log"), &[]);
    AgentNode {
        daemon,
        ip,
        dir,
        config,
    }
}

/// HAProxy in TCP mode as the fixed registration address in front of `servers` (ports 9345 and
/// 6443), with active checks so dead servers leave the rotation within a second.
pub struct Haproxy {
    pub daemon: Daemon,
    pub ip: Ipv4Addr,
}

impl Haproxy {
    pub fn start(ip: Ipv4Addr, servers: &[Ipv4Addr], dir: &Path) -> Haproxy {
        require_tool("haproxy", "haproxy");
        let mut cfg = String::from(
            "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n",
        );
        for (name, port, check) in [("sup", 9345, "/ping"), ("api", 6443, "/readyz")] {
            cfg.push_str(&format!(
                "frontend {name}\n  bind {ip}:{port}\n  default_backend {name}\nbackend {name}\n  option httpchk GET {check}\n  default-server inter 500ms fall 2 rise 1 check check-ssl verify none\n"
            ));
            for (i, s) in servers.iter().enumerate() {
                cfg.push_str(&format!("  server s{i} {s}:{port}\n"));
            }
        }
        let path = dir.join("haproxy.cfg");
        fs::write(&path, cfg).unwrap();
        let log = dir.join("haproxy.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start haproxy");
        let hp = Haproxy {
            daemon: Daemon {
                name: "haproxy".into(),
                child: Some(child),
                log,
            },
            ip,
        };
        wait_for(Duration::from_secs(10), "haproxy listening", || {
            port_open(SocketAddr::from((ip, 9345))).then_some(())
        });
        hp
    }

    pub fn url(&self) -> String {
        format!("https://{}:9345", self.ip)
    }
}

/// Starts servers `s1`, `s2`, ... at `ips` with `token`, all reachable through `lb` (its address
/// is in their certificates); the first creates the cluster, the others join through `lb`. Each
/// gets `extra` config lines too. Does not wait for readiness.
pub fn start_servers_behind(
    lb: &Haproxy,
    ips: &[Ipv4Addr],
    root: &Path,
    token: &str,
    extra: &[(&'static str, String)],
) -> Vec<ServerNode> {
    let mut servers = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let mut lines: Vec<(&'static str, String)> =
            vec![("token", token.into()), ("tls-san[]", lb.ip.to_string())];
        lines.extend(extra.iter().cloned());
        if i > 0 {
            lines.push(("server", lb.url()));
        }
        servers.push(start_server(&format!("s{}", i + 1), *ip, root, &lines));
    }
    servers
}

/// A copy of `kubeconfig` pointing at `host:6443` instead.
pub fn kubeconfig_via(kubeconfig: &Path, host: Ipv4Addr, out: &Path) -> PathBuf {
    let text = fs::read_to_string(kubeconfig).unwrap();
    let replaced: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server: https://") {
                format!("    server: https://{host}:6443")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(out, replaced + "\n").unwrap();
    out.to_path_buf()
}

/// etcd members as (name, is_learner) from a server's etcd.
pub fn etcd_members(node: &ServerNode) -> Option<Vec<(String, bool)>> {
    let out = etcdctl(node, &["member", "list", "-w", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["members"]
            .as_array()?
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["isLearner"].as_bool().unwrap_or(false),
                )
            })
            .collect(),
    )
}

/// The index of the server whose etcd member is the leader, asking each in turn.
pub fn etcd_leader(servers: &[ServerNode]) -> Option<usize> {
    etcd_leader_by(servers.len(), |i| {
        etcdctl(&servers[i], &["endpoint", "status", "-w", "json"])
    })
}

/// [`etcd_leader`] with the `etcdctl endpoint status -w json` of server `i` run by `status`
/// (e.g. from inside a network namespace).
pub fn etcd_leader_by(n: usize, status: impl Fn(usize) -> Output) -> Option<usize> {
    (0..n).find(|i| {
        serde_json::from_slice::<serde_json::Value>(&status(*i).stdout)
            .ok()
            .is_some_and(|v| {
                let st = &v[0]["Status"];
                st["leader"].as_u64().is_some() && st["leader"] == st["header"]["member_id"]
            })
    })
}

/// The Ready condition status of `node` ("True", "False", "Unknown").
pub fn ready_condition(kubeconfig: &Path, node: &str) -> Option<String> {
    let out = kubectl(
        kubeconfig,
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts a server on a fresh address block with `extra` config lines and waits until it logs
/// `ready:` (real etcd, kubectl and curl are required).
pub fn start_ready_server(
    name: &str,
    extra: &[(&'static str, String)],
    timeout: Duration,
) -> (tempfile::TempDir, AddrBlock, ServerNode) {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubernetes-client");
    require_tool("curl", "curl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s = start_server(name, block.ip(1), root.path(), extra);
    s.daemon.wait_log("ready:", timeout);
    (root, block, s)
}
