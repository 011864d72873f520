//! systemd plumbing: socket-activated listeners ([`listeners`]), readiness and status
//! notifications with a watchdog that only pets while the daemon's loops make progress,
//! signal handling, and the runtime state that STATUS=, D-Bus properties and logs share.

pub mod listeners;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
// tokio's clock (not std's) so the liveness arithmetic follows the runtime's time source.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the node is doing, in words (STATUS= and the D-Bus `Phase` property).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    pub phase: String,
    pub ready: bool,
    /// Voting etcd members (servers only).
    pub server_count: u32,
    /// Voting servers whose Node is Ready.
    pub ready_server_count: u32,
    /// Registered nodes seen by this server.
    pub node_count: u32,
    /// Registered nodes whose Ready condition is True.
    pub ready_node_count: u32,
    pub etcd_members: Vec<String>,
    pub apiserver_endpoints: Vec<String>,
    /// Agent load-balancer backends and their health (agents only).
    pub lb_backends: Vec<(String, String)>,
}

/// Shared runtime state: one writer per field, many readers (sd_notify, D-Bus, logs).
#[derive(Debug, Clone)]
pub struct Runtime {
    state: watch::Sender<NodeState>,
    pub node_name: String,
    pub role: &'static str,
    liveness: Arc<Liveness>,
    stopping_sent: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(node_name: &str, role: &'static str) -> Runtime {
        Runtime {
            state: watch::Sender::new(NodeState::default()),
            node_name: node_name.to_string(),
            role,
            liveness: Arc::new(Liveness::default()),
            stopping_sent: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<NodeState> {
        self.state.subscribe()
    }

    pub fn snapshot(&self) -> NodeState {
        self.state.borrow().clone()
    }

    /// Sets the phase; logs it and tells the service manager (STATUS=).
    pub fn set_phase(&self, phase: impl Into<String>) {
        let phase = phase.into();
        let changed = self.state.send_if_modified(|s| {
            if s.phase == phase {
                return false;
            }
            s.phase = phase.clone();
            true
        });
        if changed {
            tracing::info!(component = "daemon", node = %self.node_name, "{phase}");
            notify(&[NotifyState::Status(&phase)]);
        }
    }

    /// Marks the node ready: READY=1 together with the current status.
    pub fn set_ready(&self, phase: impl Into<String>) {
        let phase = phase.into();
        self.state.send_modify(|s| {
            s.ready = true;
            s.phase = phase.clone();
        });
        tracing::info!(component = "daemon", node = %self.node_name, "{phase}");
        notify(&[NotifyState::Ready, NotifyState::Status(&phase)]);
    }

    /// Updates other fields of the state.
    pub fn update(&self, f: impl FnOnce(&mut NodeState)) {
        self.state.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
    }

    /// Registers a loop whose progress the watchdog requires; call `tick()` on the returned
    /// handle every iteration. `period` is how often it ticks when healthy.
    pub fn liveness(&self, name: &'static str, period: Duration) -> LoopTicker {
        self.liveness.register(name, period)
    }

    /// Sends STOPPING=1 (once, however often it is called: both the shutdown signal and the
    /// end of the run call it, and the first one wins).
    pub fn stopping(&self) {
        if self.stopping_sent.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(component = "daemon", node = %self.node_name, "stopping");
        self.state.send_modify(|s| {
            s.ready = false;
            s.phase = "stopping".into();
        });
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// glibc malloc arenas the daemon may use. glibc's default is 8 per core, and every thread
/// that meets a locked arena gets its own, which keeps freed memory resident in each (about
/// 9 of an agent's 50 MiB with 50 pods, docs/workloads.md, Performance); two are enough for
/// a daemon that spends its time waiting on sockets.
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`]; call before any thread starts (and not
/// when the environment sets `MALLOC_ARENA_MAX`: the operator's choice wins). A no-op on other
/// C libraries.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a malloc tunable; it is called once, before the runtime
        // starts its threads, with a parameter and value glibc documents.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// STATUS= of a ready server: "ready: 3 servers, 5 nodes" while every voting server's Node and
/// every Node is Ready, else "ready: 2 of 3 servers ready, 4 of 5 nodes ready"; with a warning
/// for an even number of voting servers (docs/architecture.md §2: RKE2 only says so in its docs).
pub fn ready_status(s: &NodeState) -> String {
    let servers = s.server_count;
    let even = if servers > 0 && servers.is_multiple_of(2) {
        " (even number of servers: an odd number is required for fault tolerance)"
    } else {
        ""
    };
    let count = |ready: u32, total: u32, one: &str, many: &str| {
        if ready >= total {
            plural(total, one, many)
        } else {
            format!("{ready} of {} ready", plural(total, one, many))
        }
    };
    format!(
        "ready: {}, {}{even}",
        count(s.ready_server_count, servers, "server", "servers"),
        count(s.ready_node_count, s.node_count, "node", "nodes")
    )
}

/// STATUS= while etcd has no leader: how many voting members (servers) are reachable out of
/// how many; more than half of them are needed.
pub fn quorum_status(reachable: usize, voters: usize) -> String {
    format!("waiting for quorum ({reachable}/{voters} servers)")
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(component = "daemon", "sd_notify failed: {e}");
    }
}

/// Extra time a loop may take beyond three of its periods before it counts as stalled: a
/// round of a few etcd calls that each run into their 5 s timeout (say, while quorum is lost)
/// must not get a healthy daemon killed. A loop stuck for good is still noticed well within
/// the units' WatchdogSec=60s plus one petting interval.
const STALL_SLACK: Duration = Duration::from_secs(15);

/// Progress counters of the loops the watchdog depends on.
#[derive(Debug)]
struct Liveness {
    loops: std::sync::Mutex<BTreeMap<&'static str, (Duration, Arc<AtomicU64>)>>,
    epoch: std::sync::OnceLock<Instant>,
    slack: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::with_slack(STALL_SLACK)
    }
}

/// Handle a loop uses to show it is alive.
#[derive(Debug, Clone)]
pub struct LoopTicker {
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl LoopTicker {
    pub fn tick(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Liveness {
    fn with_slack(slack: Duration) -> Liveness {
        Liveness {
            loops: Default::default(),
            epoch: Default::default(),
            slack,
        }
    }

    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    fn register(&self, name: &'static str, period: Duration) -> LoopTicker {
        let epoch = self.epoch();
        let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, (period, last.clone()));
        LoopTicker { last, epoch }
    }

    /// The loops that have not ticked within three of their periods (plus slack).
    fn stalled(&self) -> Vec<&'static str> {
        let now = self.epoch().elapsed().as_millis() as u64;
        let slack = self.slack.as_millis() as u64;
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (period, last))| {
                let allowed = (period.as_millis() as u64) * 3 + slack;
                now.saturating_sub(last.load(Ordering::Relaxed)) > allowed
            })
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Pets the systemd watchdog at half of `WATCHDOG_USEC` while every registered loop is alive.
/// A stalled loop stops the petting, so systemd kills and restarts a wedged daemon. (systemd
/// only enforces the watchdog once READY=1 was sent; start-up is bounded by TimeoutStartSec=.)
pub async fn run_watchdog(runtime: Runtime, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let half = interval / 2;
    tracing::info!(
        component = "daemon",
        "systemd watchdog enabled ({interval:?}); petting every {half:?}"
    );
    watchdog_loop(&runtime.liveness, half, cancel, || {
        notify(&[NotifyState::Watchdog])
    })
    .await;
}

/// Calls `pet` every `every` while no registered loop is stalled.
async fn watchdog_loop(
    liveness: &Liveness,
    every: Duration,
    cancel: CancellationToken,
    mut pet: impl FnMut(),
) {
    let mut warned = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let stalled = liveness.stalled();
        if stalled.is_empty() {
            pet();
            if warned {
                tracing::info!(
                    component = "daemon",
                    "all loops alive again; petting the watchdog"
                );
            }
            warned = false;
        } else if !warned {
            tracing::error!(
                component = "daemon",
                "not petting the watchdog: stalled loops {stalled:?}"
            );
            warned = true;
        }
    }
}

/// Sends STOPPING=1 when `cancel` fires (shutdown signal or fatal error).
pub async fn stopping_on_cancel(runtime: Runtime, cancel: CancellationToken) {
    cancel.cancelled().await;
    runtime.stopping();
}

/// Waits for SIGTERM or SIGINT, then cancels `cancel` (a graceful shutdown). A SIGTERM or
/// SIGINT while shutting down (a second signal, or one after a fatal error started the
/// shutdown) returns its name: the caller exits at once. SIGHUP (whose default action would
/// kill the daemon without stopping etcd) is logged and otherwise ignored: configuration
/// reload is not supported, so the units define no `ExecReload=`. Returns `None` only when the
/// handlers cannot be installed.
pub async fn wait_for_shutdown_signal(cancel: CancellationToken) -> Option<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (t, i, h) => {
            let e = [t.err(), i.err(), h.err()].into_iter().flatten().next();
            tracing::error!(
                component = "daemon",
                "cannot install signal handlers: {}",
                e.map(|e| e.to_string()).unwrap_or_default()
            );
            return None;
        }
    };
    loop {
        let shutting_down = cancel.is_cancelled();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                tracing::warn!(
                    component = "daemon",
                    "SIGHUP received: reloading the configuration is not supported; restart the service to apply changes"
                );
                continue;
            }
            // Shutdown started elsewhere: keep listening, a signal now forces the exit.
            _ = cancel.cancelled(), if !shutting_down => continue,
        };
        if shutting_down {
            return Some(name);
        }
        tracing::info!(
            component = "daemon",
            "{name} received, shutting down (send it again to exit at once)"
        );
        cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn liveness_detects_stalled_loops() {
        let l = Liveness::default();
        let t = l.register("fast", Duration::from_secs(2));
        assert!(l.stalled().is_empty());
        // Three periods plus the 15 s slack may pass without a tick...
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert!(l.stalled().is_empty());
        // ...one second more may not.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(l.stalled(), ["fast"]);
        t.tick();
        assert!(l.stalled().is_empty());
    }

    /// On tokio's paused clock: sleeps advance virtual time only, so a loaded machine cannot
    /// make the loop look stalled.
    #[tokio::test(start_paused = true)]
    async fn watchdog_pets_only_while_every_loop_ticks() {
        use tokio::time::sleep;
        let l = Arc::new(Liveness::with_slack(Duration::from_millis(50)));
        let t = l.register("loop", Duration::from_millis(10));
        let pets = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let task = {
            let (l, pets, cancel) = (l.clone(), pets.clone(), cancel.clone());
            tokio::spawn(async move {
                watchdog_loop(&l, Duration::from_millis(20), cancel, || {
                    pets.fetch_add(1, Ordering::SeqCst);
                })
                .await
            })
        };
        for _ in 0..30 {
            t.tick();
            sleep(Duration::from_millis(10)).await;
        }
        let alive = pets.load(Ordering::SeqCst);
        assert!(alive >= 3, "only {alive} pets while the loop ticked");
        // The loop stops ticking: after 3 periods + slack (80 ms) the petting must stop.
        sleep(Duration::from_millis(300)).await;
        let stalled = pets.load(Ordering::SeqCst);
        sleep(Duration::from_millis(200)).await;
        assert_eq!(
            pets.load(Ordering::SeqCst),
            stalled,
            "petted a stalled daemon"
        );
        // Progress again: petting resumes.
        for _ in 0..30 {
            t.tick();
            sleep(Duration::from_millis(10)).await;
        }
        assert!(pets.load(Ordering::SeqCst) > stalled);
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn status_wording() {
        let counts = |ready_servers, servers, ready_nodes, nodes| NodeState {
            server_count: servers,
            ready_server_count: ready_servers,
            node_count: nodes,
            ready_node_count: ready_nodes,
            ..NodeState::default()
        };
        assert_eq!(ready_status(&counts(1, 1, 1, 1)), "ready: 1 server, 1 node");
        assert_eq!(
            ready_status(&counts(3, 3, 5, 5)),
            "ready: 3 servers, 5 nodes"
        );
        assert!(
            ready_status(&counts(2, 2, 2, 2)).starts_with("ready: 2 servers, 2 nodes (even number")
        );
        // A stopped server's Node is NotReady: both counts say so, and recover with it.
        assert_eq!(
            ready_status(&counts(2, 3, 4, 5)),
            "ready: 2 of 3 servers ready, 4 of 5 nodes ready"
        );
        assert_eq!(
            ready_status(&counts(3, 3, 4, 5)),
            "ready: 3 servers, 4 of 5 nodes ready"
        );
        assert_eq!(
            ready_status(&counts(0, 1, 0, 1)),
            "ready: 0 of 1 server ready, 0 of 1 node ready"
        );
        assert_eq!(quorum_status(1, 3), "waiting for quorum (1/3 servers)");
    }
}
