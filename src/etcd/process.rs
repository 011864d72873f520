//! The etcd child process: its command line, spawning it so it dies with the daemon (even on
//! `kill -9`), forwarding its logs, restarting it with backoff when it crashes, and stopping it
//! cleanly on shutdown.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::EtcdError;

/// How long etcd gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Restart backoff bounds after a crash.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// What etcd logs when its member was removed from the cluster; it then exits and must not be
/// restarted (its data directory is no longer usable).
const REMOVED_MESSAGE: &str = "has been permanently removed from the cluster";

/// Free space below which the disk holding etcd's data counts as full: etcd preallocates its
/// 64 MB WAL segments, so less than one segment means the next one cannot be created.
pub const DISK_FULL_BELOW: u64 = 64 * 1024 * 1024;
/// What etcd logs when a write hit ENOSPC, and when its backend quota (NOSPACE alarm) is hit.
const DISK_FULL_MESSAGES: &[&str] = &["no space left on device", "database space exceeded"];

/// Names a full disk under etcd's data directory, for errors that would otherwise only say
/// "no quorum?": `Some(message)` when the filesystem holding `data_dir` (or its nearest
/// existing parent) has less than `min_free` bytes available to unprivileged writers.
pub fn disk_space_problem(data_dir: &Path, min_free: u64) -> Option<String> {
    let dir = data_dir.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(dir).ok()?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    (free < min_free).then(|| {
        format!(
            "the disk holding the etcd data directory {} is full ({} KiB free)",
            data_dir.display(),
            free / 1024
        )
    })
}

/// Whether the filesystem of `data_dir` has room for etcd (see [`DISK_FULL_BELOW`]).
pub fn disk_full(data_dir: &Path) -> Option<String> {
    disk_space_problem(data_dir, DISK_FULL_BELOW)
}

/// Whether etcd creates a new cluster or joins an existing one (only read on first start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialClusterState {
    New,
    Existing,
}

/// Everything needed to run this server's etcd member.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub bin: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    pub address: IpAddr,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    /// Also listen for clients on loopback (when the node address is not loopback and the
    /// loopback port is free).
    pub loopback_client: bool,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub server_ca: PathBuf,
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    pub peer_ca: PathBuf,
    /// `name=peerURL,...`
    pub initial_cluster: String,
    pub initial_state: InitialClusterState,
    /// Extra `flag=value` arguments from `etcd-arg`; they override ours.
    pub extra_args: Vec<String>,
}

/// `https://<ip>:<port>` with brackets for IPv6.
pub fn url(scheme: &str, ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    }
}

impl EtcdSettings {
    pub fn client_url(&self) -> String {
        url("https", self.address, self.client_port)
    }

    pub fn peer_url(&self) -> String {
        url("https", self.address, self.peer_port)
    }

    /// The etcd command line.
    pub fn args(&self) -> Vec<String> {
        let mut client_urls = vec![self.client_url()];
        if self.loopback_client && !self.address.is_loopback() {
            client_urls.push(url("https", IpAddr::from([127, 0, 0, 1]), self.client_port));
        }
        // Metrics/health are plain HTTP, so keep them on loopback unless the node address
        // itself is a loopback address (several test nodes on one host).
        let metrics_ip = if self.address.is_loopback() {
            self.address
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        let p = |p: &Path| p.display().to_string();
        let mut args: Vec<(String, String)> = vec![
            ("name".into(), self.name.clone()),
            ("data-dir".into(), p(&self.data_dir)),
            ("listen-client-urls".into(), client_urls.join(",")),
            ("advertise-client-urls".into(), self.client_url()),
            ("listen-peer-urls".into(), self.peer_url()),
            ("initial-advertise-peer-urls".into(), self.peer_url()),
            (
                "listen-metrics-urls".into(),
                url("http", metrics_ip, self.metrics_port),
            ),
            ("initial-cluster".into(), self.initial_cluster.clone()),
            (
                "initial-cluster-state".into(),
                match self.initial_state {
                    InitialClusterState::New => "new".into(),
                    InitialClusterState::Existing => "existing".into(),
                },
            ),
            ("cert-file".into(), p(&self.server_cert)),
            ("key-file".into(), p(&self.server_key)),
            ("trusted-ca-file".into(), p(&self.server_ca)),
            ("client-cert-auth".into(), "true".into()),
            ("peer-cert-file".into(), p(&self.peer_cert)),
            ("peer-key-file".into(), p(&self.peer_key)),
            ("peer-trusted-ca-file".into(), p(&self.peer_ca)),
            ("peer-client-cert-auth".into(), "true".into()),
            ("snapshot-count".into(), "10000".into()),
            ("logger".into(), "zap".into()),
            ("log-outputs".into(), "stderr".into()),
        ];
        for extra in &self.extra_args {
            let (k, v) = extra.split_once('=').unwrap_or((extra.as_str(), "true"));
            let k = k.trim_start_matches('-');
            match args.iter_mut().find(|(ak, _)| ak == k) {
                Some(slot) => slot.1 = v.to_string(),
                None => args.push((k.to_string(), v.to_string())),
            }
        }
        args.into_iter()
            .map(|(k, v)| format!("--{k}={v}"))
            .collect()
    }
}

/// Finds the etcd binary: the configured path, else `etcd` on `PATH`.
pub fn find_etcd_binary(
    configured: Option<&Path>,
    path_var: Option<&str>,
) -> Result<PathBuf, EtcdError> {
    if let Some(p) = configured {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(EtcdError::BinaryNotFound(format!(
            "etcd-bin {} does not exist; install etcd (Debian: apt-get install -y etcd-server; Nix: pkgs.etcd) or fix etcd-bin",
            p.display()
        )));
    }
    let path_var =
        path_var.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join("etcd");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(EtcdError::BinaryNotFound(
        "etcd was not found on PATH; install it (Debian: apt-get install -y etcd-server; Nix: pkgs.etcd) \
         or set etcd-bin to its path"
            .into(),
    ))
}

/// What the supervisor reports about the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    Starting,
    Running {
        pid: u32,
    },
    Crashed {
        restarts: u32,
    },
    /// The member was removed from the cluster (its node was deleted).
    Removed,
    Stopped,
}

/// The service manager's variables, which are meant for the daemon alone. etcd speaks
/// sd_notify itself: with `NOTIFY_SOCKET` it would send READY=1 on the daemon's behalf long
/// before the node is ready (and `LISTEN_*`/`WATCHDOG_*` describe the daemon's pid and fds).
pub const SERVICE_MANAGER_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Settings given to etcd through its environment (`ETCD_<FLAG>`) rather than its command
/// line, so that a release without the flag only warns about an unknown variable instead of
/// refusing to start. etcd refuses a variable and a flag for the same setting, so a flag of
/// that name in `etcd-arg` replaces the variable.
///
/// - `map` is etcd 3.5's default bbolt freelist (RKE2 ships 3.5): a hash map of free pages.
///   etcd 3.4, Debian 12's, defaults to a sorted array that each page allocation scans; at
///   5,000 nodes the map cut the lease-renewal p50 by a fifth and p99 by 7-15 %
///   (docs/scale.md).
/// - Watch progress notifications every 100 ms (etcd's default is 10 minutes) to watches that
///   asked for them and had no event since the last one: they tell an idle kind's watch cache
///   that it is current, so a consistent LIST of it can be answered from memory. Only the
///   caches of kinds with 500 objects or more ask (docs/watch-cache.md). etcd 3.4's progress
///   *requests* can overtake events, so the daemon does not use them.
pub const ENV_DEFAULTS: [(&str, &str); 2] = [
    ("experimental-backend-bbolt-freelist-type", "map"),
    ("experimental-watch-progress-notify-interval", "100ms"),
];

/// etcd's environment variable for `flag`.
fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

impl EtcdSettings {
    /// The [`ENV_DEFAULTS`] not replaced by an `etcd-arg` flag, as (variable, value).
    pub fn env(&self) -> Vec<(String, String)> {
        ENV_DEFAULTS
            .iter()
            .filter(|(flag, _)| {
                !self.extra_args.iter().any(|a| {
                    let name = a.split_once('=').map_or(a.as_str(), |(k, _)| k);
                    name.trim_start_matches('-') == *flag
                })
            })
            .map(|(flag, value)| (env_name(flag), value.to_string()))
            .collect()
    }
}

fn command(settings: &EtcdSettings) -> Command {
    let mut cmd = Command::new(&settings.bin);
    cmd.args(settings.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in SERVICE_MANAGER_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(settings.env());
    cmd
}

fn spawn(settings: &EtcdSettings) -> std::io::Result<Child> {
    spawn_tied(command(settings), "etcd")
}

/// Spawns `cmd` so that it dies with the daemon: the kernel sends it SIGTERM when the daemon
/// exits, even on SIGKILL, so no orphaned child keeps ports, data directories or sockets.
pub fn spawn_tied(mut cmd: Command, what: &'static str) -> std::io::Result<Child> {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl and getppid); it allocates nothing and takes no
    // locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // The daemon may have died between fork and prctl; then nobody would signal us.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other(format!(
                    "parent exited before {what} started"
                )));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Forwards etcd's zap JSON log lines to tracing: errors and warnings as such, the chatty
/// info level as debug.
fn forward_logs(child: &mut Child, member: String, data_dir: PathBuf, removed: Arc<AtomicBool>) {
    let streams: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in streams {
        let member = member.clone();
        let removed = removed.clone();
        let data_dir = data_dir.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
                let level = parsed
                    .as_ref()
                    .and_then(|v| v.get("level"))
                    .and_then(|l| l.as_str())
                    .unwrap_or("info")
                    .to_string();
                let msg = parsed
                    .as_ref()
                    .and_then(|v| v.get("msg"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| line.clone());
                if line.contains(REMOVED_MESSAGE) {
                    removed.store(true, Ordering::SeqCst);
                }
                if DISK_FULL_MESSAGES.iter().any(|m| line.contains(m)) {
                    // etcd's own line says ENOSPC or NOSPACE somewhere in a long JSON record;
                    // say plainly which directory's disk is the problem.
                    let detail = disk_full(&data_dir).unwrap_or_else(|| {
                        if line.contains("database space exceeded") {
                            format!(
                                "etcd's database in {} reached its size quota (alarm NOSPACE); \
                                 compact and defragment it, then disarm the alarm",
                                data_dir.display()
                            )
                        } else {
                            format!(
                                "etcd ran out of disk space for its data directory {}",
                                data_dir.display()
                            )
                        }
                    });
                    tracing::error!(component = "etcd", etcd_member = %member, "{detail}: {msg}");
                }
                match relevel(&level, &msg) {
                    tracing::Level::ERROR => {
                        tracing::error!(component = "etcd", etcd_member = %member, detail = %line, "etcd: {msg}")
                    }
                    tracing::Level::WARN => {
                        tracing::warn!(component = "etcd", etcd_member = %member, detail = %line, "etcd: {msg}")
                    }
                    tracing::Level::INFO => {
                        tracing::info!(component = "etcd", etcd_member = %member, detail = %line, "etcd: {msg}")
                    }
                    _ => {
                        tracing::debug!(component = "etcd", etcd_member = %member, detail = %line, "etcd: {msg}")
                    }
                }
            }
        });
    }
}

/// etcd warnings that are part of normal operation in a cluster whose members join, restart
/// and get promoted: they describe peers connecting, a join retried until the new member is
/// reachable, or a configuration only a test would change. Shown at info, not as warnings.
const EXPECTED_WARNINGS: [&str; 10] = [
    "rejecting member add request",
    "established TCP streaming connection with remote peer",
    "lost TCP streaming connection with remote peer",
    "stopped TCP streaming connection with remote peer",
    "closed TCP streaming connection with remote peer",
    "peer became inactive",
    "prober detected unhealthy status",
    "failed to reach the peer URL",
    "failed to get version",
    "simple token is not cryptographically signed",
];

/// The level an etcd log line is shown at: etcd's info chatter at debug, its warnings expected
/// while members join or restart at info, real warnings and errors as they are.
pub fn relevel(level: &str, msg: &str) -> tracing::Level {
    match level {
        "error" | "fatal" | "panic" | "dpanic" => tracing::Level::ERROR,
        "warn" if EXPECTED_WARNINGS.iter().any(|w| msg.starts_with(w)) => tracing::Level::INFO,
        "warn" => tracing::Level::WARN,
        _ => tracing::Level::DEBUG,
    }
}

async fn stop(child: &mut Child) {
    stop_child(child, STOP_GRACE, "etcd").await
}

/// Stops a child: SIGTERM, then SIGKILL if it has not exited after `grace`.
pub async fn stop_child(child: &mut Child, grace: Duration, what: &str) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(
            component = what,
            "{what} did not stop within {grace:?}; killing it"
        );
    }
    let _ = child.kill().await;
}

/// Runs etcd until `cancel` fires, restarting it with exponential backoff when it exits.
/// `state` reports the child's state; `settings` may be replaced between restarts (e.g. to
/// switch from `existing` to a restart with data, which etcd handles by itself).
pub async fn supervise(
    settings: EtcdSettings,
    cancel: CancellationToken,
    state: watch::Sender<ProcessState>,
) -> Result<(), EtcdError> {
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut restarts = 0u32;
    loop {
        let _ = state.send(ProcessState::Starting);
        let mut child = spawn(&settings).map_err(|e| EtcdError::Spawn {
            bin: settings.bin.display().to_string(),
            source: e,
        })?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(component = "etcd", etcd_member = %settings.name, pid, "etcd started");
        let _ = state.send(ProcessState::Running { pid });
        let removed = Arc::new(AtomicBool::new(false));
        forward_logs(
            &mut child,
            settings.name.clone(),
            settings.data_dir.clone(),
            removed.clone(),
        );
        let started = tokio::time::Instant::now();
        tokio::select! {
            _ = cancel.cancelled() => {
                stop(&mut child).await;
                tracing::info!(component = "etcd", etcd_member = %settings.name, "etcd stopped");
                let _ = state.send(ProcessState::Stopped);
                return Ok(());
            }
            status = child.wait() => {
                // The log forwarders may still be draining the last lines.
                for _ in 0..20 {
                    if removed.load(Ordering::SeqCst) { break; }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if removed.load(Ordering::SeqCst) {
                    let _ = state.send(ProcessState::Removed);
                    // The whole db directory (etcd's data and its member name), absolute, so
                    // the message can be followed from any working directory.
                    let db = settings.data_dir.parent().unwrap_or(&settings.data_dir);
                    let db = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
                    return Err(EtcdError::Removed(settings.name.clone(), db));
                }
                restarts += 1;
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if started.elapsed() > STABLE_RUN {
                    backoff = RESTART_BACKOFF_MIN;
                }
                tracing::error!(
                    component = "etcd", etcd_member = %settings.name, restarts,
                    "etcd exited unexpectedly ({status}); restarting in {backoff:?}"
                );
                let _ = state.send(ProcessState::Crashed { restarts });
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = state.send(ProcessState::Stopped);
                return Ok(());
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_lines_are_releveled() {
        use tracing::Level;
        assert_eq!(
            relevel(
                "warn",
                "rejecting member add request; local member has not been connected to all peers, reconfigure breaks active quorum"
            ),
            Level::INFO
        );
        assert_eq!(
            relevel(
                "warn",
                "established TCP streaming connection with remote peer"
            ),
            Level::INFO
        );
        assert_eq!(relevel("warn", "apply request took too long"), Level::WARN);
        assert_eq!(relevel("info", "raft.node: elected leader"), Level::DEBUG);
        assert_eq!(relevel("error", "failed to publish"), Level::ERROR);
    }

    fn settings() -> EtcdSettings {
        EtcdSettings {
            bin: "/usr/bin/etcd".into(),
            name: "n1-abcdef12".into(),
            data_dir: "/d/server/db/etcd".into(),
            address: "127.0.1.2".parse().unwrap(),
            client_port: 2379,
            peer_port: 2380,
            metrics_port: 2381,
            loopback_client: false,
            server_cert: "s.crt".into(),
            server_key: "s.key".into(),
            server_ca: "ca.crt".into(),
            peer_cert: "p.crt".into(),
            peer_key: "p.key".into(),
            peer_ca: "pca.crt".into(),
            initial_cluster: "n1-abcdef12=https://127.0.1.2:2380".into(),
            initial_state: InitialClusterState::New,
            extra_args: vec![
                "heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
                "snapshot-count=5".into(),
            ],
        }
    }

    #[test]
    fn args_use_node_address_and_extra_args_override() {
        let a = settings().args();
        assert!(a.contains(&"--listen-client-urls=https://127.0.1.2:2379".to_string()));
        assert!(a.contains(&"--listen-metrics-urls=http://127.0.1.2:2381".to_string()));
        assert!(a.contains(&"--heartbeat-interval=50".to_string()));
        assert!(a.contains(&"--election-timeout=500".to_string()));
        assert!(a.contains(&"--snapshot-count=5".to_string()));
        assert!(!a.contains(&"--snapshot-count=10000".to_string()));
        let mut s = settings();
        s.address = "10.0.0.5".parse().unwrap();
        s.loopback_client = true;
        let a = s.args();
        assert!(a.contains(
            &"--listen-client-urls=https://10.0.0.5:2379,https://127.0.0.1:2379".to_string()
        ));
        assert!(a.contains(&"--listen-metrics-urls=http://127.0.0.1:2381".to_string()));
    }

    #[test]
    fn etcd_does_not_inherit_the_service_manager_environment() {
        let cmd = command(&settings());
        let removed: Vec<String> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for var in SERVICE_MANAGER_ENV {
            assert!(removed.iter().any(|r| r == var), "{var} is inherited");
        }
    }

    #[test]
    fn the_freelist_default_goes_by_environment_unless_an_etcd_arg_sets_it() {
        let var = "ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE";
        let s = settings();
        assert_eq!(
            s.env(),
            vec![
                (var.to_string(), "map".to_string()),
                (
                    "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL".to_string(),
                    "100ms".to_string()
                )
            ]
        );
        let passed = |s: &EtcdSettings| {
            command(s)
                .as_std()
                .get_envs()
                .any(|(k, v)| k == var && v.is_some_and(|v| v == "map"))
        };
        assert!(passed(&s));
        for arg in [
            "experimental-backend-bbolt-freelist-type=array",
            "--experimental-backend-bbolt-freelist-type=array",
        ] {
            let mut s = settings();
            s.extra_args = vec![arg.into()];
            assert!(s.env().iter().all(|(k, _)| k != var), "{arg}");
            assert!(!passed(&s), "{arg}");
            assert!(
                s.args()
                    .contains(&"--experimental-backend-bbolt-freelist-type=array".into())
            );
        }
    }

    #[test]
    fn missing_binary_explains_how_to_install() {
        let e = find_etcd_binary(Some(Path::new("/nonexistent/etcd")), None).unwrap_err();
        assert!(e.to_string().contains("apt-get install -y etcd-server"));
        let e = find_etcd_binary(None, Some("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("etcd-bin"));
    }

    #[test]
    fn disk_space_problem_names_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("server/db/etcd");
        // The data directory need not exist yet: its nearest parent's filesystem counts.
        let msg = disk_space_problem(&data, u64::MAX).expect("no disk has u64::MAX bytes free");
        assert!(msg.contains(&data.display().to_string()), "{msg}");
        assert!(msg.contains("is full"), "{msg}");
        assert_eq!(disk_space_problem(&data, 0), None);
    }
}
