//! systemd plumbing: socket-activated listeners ([`listeners`]), readiness and status
//! notifications with a watchdog that only pets while the daemon's loops make progress,
//! signal handling, and the runtime state that STATUS=, D-Bus properties and logs share.

pub mod listeners;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the node is doing, in words (STATUS= and the D-Bus `Phase` property).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    pub phase: String,
    pub ready: bool,
    /// Voting etcd members (servers only).
    pub server_count: u32,
    /// Registered nodes seen by this server.
    pub node_count: u32,
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
}

impl Runtime {
    pub fn new(node_name: &str, role: &'static str) -> Runtime {
        Runtime {
            state: watch::Sender::new(NodeState::default()),
            node_name: node_name.to_string(),
            role,
            liveness: Arc::new(Liveness::default()),
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

    /// Sends STOPPING=1.
    pub fn stopping(&self) {
        self.state.send_modify(|s| {
            s.ready = false;
            s.phase = "stopping".into();
        });
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(component = "daemon", "sd_notify failed: {e}");
    }
}

/// Progress counters of the loops the watchdog depends on.
#[derive(Debug, Default)]
struct Liveness {
    loops: std::sync::Mutex<BTreeMap<&'static str, (Duration, Arc<AtomicU64>)>>,
    epoch: std::sync::OnceLock<Instant>,
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
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (period, last))| {
                let allowed = (period.as_millis() as u64) * 3 + 5_000;
                now.saturating_sub(last.load(Ordering::Relaxed)) > allowed
            })
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Pets the systemd watchdog at half of `WATCHDOG_USEC` while every registered loop is alive.
/// A stalled loop stops the petting, so systemd kills and restarts a wedged daemon.
pub async fn run_watchdog(runtime: Runtime, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let half = interval / 2;
    tracing::info!(
        component = "daemon",
        "systemd watchdog enabled ({interval:?}); petting every {half:?}"
    );
    let mut warned = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(half) => {}
        }
        let stalled = runtime.liveness.stalled();
        if stalled.is_empty() {
            notify(&[NotifyState::Watchdog]);
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

/// Waits for SIGTERM or SIGINT, then cancels `cancel`.
pub async fn wait_for_shutdown_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(component = "daemon", "cannot handle SIGTERM: {e}");
            return;
        }
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(component = "daemon", "cannot handle SIGINT: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(component = "daemon", "SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!(component = "daemon", "SIGINT received, shutting down"),
        _ = cancel.cancelled() => return,
    }
    cancel.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_detects_stalled_loops() {
        let l = Liveness::default();
        let t = l.register("fast", Duration::from_millis(0));
        assert!(l.stalled().is_empty());
        // Pretend the last tick was long ago.
        t.last.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        // 0 ms period allows 5 s of slack, so still alive.
        assert!(l.stalled().is_empty());
    }
}
