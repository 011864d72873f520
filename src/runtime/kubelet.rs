//! The kubelet-like pod loop. It lists and watches the Pods bound to this node
//! (`fieldSelector=spec.nodeName=<node>`) and gives each one a worker task that makes the CRI
//! state match the spec: one sandbox (found again after a restart by its pod-UID label, so
//! running pods are adopted, never recreated), init containers in order, then the containers,
//! restarted per `restartPolicy` with CrashLoopBackOff (10 s doubling to 5 min, reset after
//! 10 min of running). Each worker writes the pod's status like a kubelet. A pod that leaves
//! the API (or gets a deletionTimestamp) is stopped: SIGTERM, SIGKILL after its grace period,
//! sandbox removed. A node loop keeps the Node's runtime facts current (containerRuntimeVersion,
//! images, ephemeral-storage) and writes the CNI config once the Node has a podCIDR.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::containerd::Layout;
use super::cri::{Cri, v1};
use super::podspec::{self, PodContext};
use super::probes::{self, ProbeKind};
use super::registries::Registries;
use super::{Cni, NodeRuntimeConfig, RuntimeError, cni};
use crate::https::ClientIdentity;

/// Upstream's CrashLoopBackOff: 10 s doubling to 5 min, reset after 10 min of running.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often a worker re-checks its pod when nothing changed.
const RESYNC: Duration = Duration::from_secs(1);
/// How often the pod list is read again although the watch delivers every change (a safety
/// net; also when finished workers are dropped and orphaned sandboxes looked for).
const LIST_INTERVAL: Duration = Duration::from_secs(30);
/// Pause before listing again after a failed list, or a watch that ended at once.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// How often the Node's runtime facts are refreshed.
const NODE_INTERVAL: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Label scoping sandboxes to this node, so a shared containerd's other sandboxes are left alone.
pub const NODE_LABEL: &str = "io.rke2.node";

use crate::kubeclient::Api;

/// The node runtime's reads: JSON objects or a message naming the failure.
trait GetJson {
    async fn get_json(&self, path: &str) -> Result<Value, String>;
}

impl GetJson for Api {
    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let r = self
            .call(http::Method::GET, path, None, None)
            .await
            .map_err(|e| e.to_string())?;
        if !r.is_success() {
            return Err(format!("GET {path}: {} {}", r.status, r.error_message()));
        }
        serde_json::from_slice(&r.body).map_err(|e| e.to_string())
    }
}

/// Shared by the node loop and the pod workers.
struct Shared {
    cfg: NodeRuntimeConfig,
    layout: Layout,
    cri: Cri,
    api: Api,
    /// registries.yaml, for its `rewrite` rules (empty with an external containerd).
    registries: Registries,
    /// The Node's podCIDR once known (and the CNI config written), or `cni: none`.
    network_ready: watch::Receiver<bool>,
    /// The pause image was found present: later sandboxes skip the ImageStatus call (reset
    /// when a RunPodSandbox fails, in case the image went).
    pause_present: std::sync::atomic::AtomicBool,
    /// Pod starts (sandbox with its CNI ADD, then the containers) in flight at once. Unbounded,
    /// a burst of pods shares the CPU evenly and every one of them is Running only at the end;
    /// bounded, they finish one after another and most start much sooner (docs/workloads.md,
    /// Performance).
    start_slots: tokio::sync::Semaphore,
}

/// Pod starts in flight per CPU (see `Shared::start_slots`): enough to overlap one pod's
/// waiting on containerd, runc and the CNI plugins with another's work.
const STARTS_PER_CPU: usize = 4;

/// The kubelet.
pub struct Kubelet {
    shared: std::sync::Arc<Shared>,
    network_tx: watch::Sender<bool>,
}

impl Kubelet {
    pub fn new(
        cfg: NodeRuntimeConfig,
        layout: Layout,
        cri: Cri,
        registries: Registries,
    ) -> Result<Kubelet, RuntimeError> {
        let identity = ClientIdentity {
            cert_pem: cfg.identity_cert_pem.clone(),
            key_pem: cfg.identity_key_pem.clone(),
        };
        let api = Api::new(
            &cfg.api_url,
            &cfg.ca_pem,
            identity,
            cfg.server_name.as_deref(),
            REQUEST_TIMEOUT,
        )
        .map_err(|e| RuntimeError::Cri(format!("API client: {e}")))?
        // Every pod sync talks to the API: reuse connections instead of a handshake each.
        .with_keep_alive();
        let (network_tx, network_ready) = watch::channel(cfg.runtime.cni == Cni::None);
        Ok(Kubelet {
            shared: std::sync::Arc::new(Shared {
                cfg,
                layout,
                cri,
                api,
                registries,
                network_ready,
                pause_present: std::sync::atomic::AtomicBool::new(false),
                start_slots: tokio::sync::Semaphore::new(
                    STARTS_PER_CPU * std::thread::available_parallelism().map_or(1, |n| n.get()),
                ),
            }),
            network_tx,
        })
    }

    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let node_loop = node_loop(self.shared.clone(), self.network_tx, cancel.clone());
        let pod_loop = pod_loop(self.shared.clone(), cancel.clone());
        tokio::join!(node_loop, pod_loop);
    }
}

// ---------------------------------------------------------------------------------------------
// Node facts and the CNI config.

fn ephemeral_storage(path: &std::path::Path) -> Option<u64> {
    let dir = path.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_blocks.saturating_mul(st.f_frsize))
}

async fn node_loop(
    s: std::sync::Arc<Shared>,
    network: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let node_path = format!("/api/v1/nodes/{}", s.cfg.node_name);
    let mut posted: Option<Value> = None;
    loop {
        let wait = match node_once(&s, &node_path, &network, &mut posted).await {
            Ok(()) if *network.borrow() => NODE_INTERVAL,
            Ok(()) => Duration::from_secs(1),
            Err(e) => {
                tracing::debug!(component = "kubelet", "node status: {e}");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn node_once(
    s: &Shared,
    node_path: &str,
    network: &watch::Sender<bool>,
    posted: &mut Option<Value>,
) -> Result<(), String> {
    let node = s.api.get_json(node_path).await?;
    if s.cfg.runtime.cni == Cni::Bridge {
        match node.pointer("/spec/podCIDR").and_then(Value::as_str) {
            Some(cidr) if !cidr.is_empty() => {
                if cni::write(&s.cfg.node_name, cidr, &s.layout).map_err(|e| e.to_string())? {
                    tracing::info!(component = "kubelet", node = %s.cfg.node_name, "pod network: bridge {} on {cidr}", cni::bridge_name(&s.cfg.node_name));
                }
                network.send_if_modified(|v| !std::mem::replace(v, true));
            }
            _ => {
                if !*network.borrow() {
                    tracing::debug!(component = "kubelet", "waiting for the Node's spec.podCIDR");
                }
            }
        }
    }
    let version = s.cri.version().await.map_err(|e| e.to_string())?;
    let mut images: Vec<Value> = s
        .cri
        .list_images()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|i| {
            let mut names = i.repo_digests.clone();
            names.extend(i.repo_tags.clone());
            json!({"names": names, "sizeBytes": i.size})
        })
        .collect();
    images.sort_by_key(|i| std::cmp::Reverse(i["sizeBytes"].as_u64().unwrap_or(0)));
    images.truncate(50);
    let storage = ephemeral_storage(&s.layout.root()).unwrap_or(0);
    let patch = json!({"status": {
        "nodeInfo": {"containerRuntimeVersion": version},
        "capacity": {"ephemeral-storage": format!("{}Ki", storage / 1024)},
        "allocatable": {"ephemeral-storage": format!("{}Ki", storage / 1024)},
        "images": images,
    }});
    let current_version = node
        .pointer("/status/nodeInfo/containerRuntimeVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if posted.as_ref() == Some(&patch) && current_version == version {
        return Ok(());
    }
    let r = s
        .api
        .call(
            http::Method::PATCH,
            &format!("{node_path}/status"),
            Some("application/merge-patch+json"),
            Some(patch.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(format!(
            "patching node status: {} {}",
            r.status,
            r.error_message()
        ));
    }
    *posted = Some(patch);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pod list, watch and workers.

fn pods_path(node: &str) -> String {
    format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
}

struct Worker {
    tx: watch::Sender<Option<core::Pod>>,
    done: tokio::task::JoinHandle<()>,
}

/// The node's pods and the list's resourceVersion (where the watch starts).
async fn list_pods(s: &Shared) -> Result<(Vec<core::Pod>, String), String> {
    let mut list = s.api.get_json(&pods_path(&s.cfg.node_name)).await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let items = match list["items"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    let pods = items
        .into_iter()
        .filter_map(|p| serde_json::from_value::<core::Pod>(p).ok())
        .collect();
    Ok((pods, rv))
}

/// The pod workers by pod UID.
struct Workers {
    s: std::sync::Arc<Shared>,
    by_uid: HashMap<String, Worker>,
    cancel: CancellationToken,
}

impl Workers {
    /// Hands `pod` to its worker, starting one for a pod not seen before; returns its UID.
    fn put(&mut self, pod: core::Pod) -> Option<String> {
        let uid = podspec::meta(&pod).2.to_string();
        if uid.is_empty() {
            return None;
        }
        match self.by_uid.get(&uid) {
            Some(w) => {
                w.tx.send_if_modified(|old| {
                    if old.as_ref() == Some(&pod) {
                        false
                    } else {
                        *old = Some(pod);
                        true
                    }
                });
            }
            None => {
                let (tx, rx) = watch::channel(Some(pod));
                let done = tokio::spawn(pod_worker(
                    self.s.clone(),
                    uid.clone(),
                    rx,
                    self.cancel.clone(),
                ));
                self.by_uid.insert(uid.clone(), Worker { tx, done });
            }
        }
        Some(uid)
    }

    /// Tells the worker of a pod that left the API to stop it.
    fn gone(&mut self, uid: &str) {
        if let Some(w) = self.by_uid.get(uid) {
            w.tx.send_if_modified(|old| old.take().is_some());
        }
        self.by_uid.retain(|_, w| !w.done.is_finished());
    }

    /// Applies one watch event on the node's pods; `false` when the watch must start over.
    fn apply(&mut self, event_type: &str, object: Value) -> bool {
        match event_type {
            "ADDED" | "MODIFIED" => {
                if let Ok(pod) = serde_json::from_value::<core::Pod>(object) {
                    self.put(pod);
                }
            }
            "DELETED" => {
                if let Some(uid) = object.pointer("/metadata/uid").and_then(Value::as_str) {
                    self.gone(uid);
                }
            }
            "BOOKMARK" => {}
            _ => return false,
        }
        true
    }
}

/// Lists the node's pods, then follows the watch from the list's resourceVersion: each event
/// goes straight to its pod's worker (no relist per event, so a burst of N pods costs N
/// events, not N lists of N pods). A failed or ended watch, and every [`LIST_INTERVAL`] as a
/// safety net, lists again.
async fn pod_loop(s: std::sync::Arc<Shared>, cancel: CancellationToken) {
    let mut workers = Workers {
        s: s.clone(),
        by_uid: HashMap::new(),
        cancel: cancel.clone(),
    };
    let mut orphans: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        match list_pods(&s).await {
            Ok((pods, rv)) => {
                let mut seen = std::collections::HashSet::new();
                for pod in pods {
                    seen.extend(workers.put(pod));
                }
                let gone: Vec<String> = workers
                    .by_uid
                    .keys()
                    .filter(|uid| !seen.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    workers.gone(&uid);
                }
                // Sandboxes of pods this node no longer has (deleted while the daemon was down,
                // or left by a failed stop). In a task of its own: each waits out its grace
                // period, which must hold up neither the watch nor the other pods.
                // Listed here, before the watch starts workers that create new sandboxes.
                if orphans.as_ref().is_none_or(|t| t.is_finished()) {
                    seen.extend(workers.by_uid.keys().cloned());
                    match find_orphans(&s, &seen).await {
                        Ok(found) if !found.is_empty() => {
                            orphans = Some(tokio::spawn(remove_orphans(
                                s.clone(),
                                found,
                                cancel.clone(),
                            )));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(component = "kubelet", "orphan cleanup: {e}"),
                    }
                }
                let path = format!(
                    "{}&watch=true&allowWatchBookmarks=true&resourceVersion={rv}",
                    pods_path(&s.cfg.node_name)
                );
                let follow = s.api.stream_events(&path, &cancel, |event_type, object| {
                    workers.apply(event_type, object)
                });
                // The watch ends at LIST_INTERVAL at the latest: then the loop lists again.
                let started = Instant::now();
                let _ = tokio::time::timeout(LIST_INTERVAL, follow).await;
                // A watch refused or broken at once is not retried in a tight loop.
                if started.elapsed() < WATCH_RETRY {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(WATCH_RETRY) => {}
                    }
                }
            }
            Err(e) => {
                tracing::debug!(component = "kubelet", "listing pods: {e}");
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(WATCH_RETRY) => {}
                }
            }
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    for (_, w) in workers.by_uid {
        let _ = w.done.await;
    }
    if let Some(t) = orphans {
        let _ = t.await;
    }
}

/// A sandbox of this node whose pod is gone.
struct Orphan {
    sandbox: String,
    uid: String,
    grace: i64,
}

/// This node's sandboxes whose pod UID is not `known`.
async fn find_orphans(
    s: &Shared,
    known: &std::collections::HashSet<String>,
) -> Result<Vec<Orphan>, RuntimeError> {
    Ok(s.cri
        .list_sandboxes()
        .await?
        .into_iter()
        .filter(|sb| sb.labels.get(NODE_LABEL) == Some(&s.cfg.node_name))
        .filter_map(|sb| {
            let uid = sb.labels.get(podspec::POD_UID)?;
            if known.contains(uid) {
                return None;
            }
            let grace = sb
                .annotations
                .get(podspec::GRACE_ANNOTATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(30);
            Some(Orphan {
                uid: uid.clone(),
                sandbox: sb.id,
                grace,
            })
        })
        .collect())
}

/// Stops and removes the `orphans`, all at once (each waits out its own grace period).
async fn remove_orphans(
    s: std::sync::Arc<Shared>,
    orphans: Vec<Orphan>,
    cancel: CancellationToken,
) {
    let kills = orphans.iter().map(|o| {
        tracing::info!(component = "kubelet", pod_uid = %o.uid, "removing the sandbox of a pod that no longer exists");
        let s = &s;
        async move {
            if let Err(e) = kill_sandbox(s, &o.sandbox, o.grace).await {
                tracing::debug!(component = "kubelet", pod_uid = %o.uid, "orphan cleanup: {e}");
            }
        }
    });
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = futures_util::future::join_all(kills) => {}
    }
}

/// Stops every container of a sandbox (SIGTERM, SIGKILL after `grace` s) and removes it.
/// Returns where the time went.
async fn kill_sandbox(s: &Shared, sandbox: &str, grace: i64) -> Result<KillTimes, RuntimeError> {
    let t = Instant::now();
    let containers = s.cri.list_containers(Some(sandbox)).await?;
    let stops = containers
        .iter()
        .filter(|c| c.state == v1::ContainerState::ContainerRunning as i32)
        .map(|c| s.cri.stop_container(&c.id, grace));
    for r in futures_util::future::join_all(stops).await {
        r?;
    }
    let containers = t.elapsed();
    let t = Instant::now();
    s.cri.remove_sandbox(sandbox).await?;
    Ok(KillTimes {
        containers,
        sandbox: t.elapsed(),
    })
}

/// Per-container restart bookkeeping.
#[derive(Debug, Clone)]
struct Backoff {
    exit_id: String,
    delay: Duration,
}

/// A pod worker's memory between syncs.
#[derive(Default)]
struct WorkerState {
    backoff: HashMap<String, Backoff>,
    /// image → (retry after, delay, message) for failed pulls.
    pull_backoff: HashMap<String, (Instant, Duration, String)>,
    posted: Option<Value>,
    start_time: Option<String>,
    /// Per-container waiting reasons found in this sync.
    waiting: HashMap<String, (String, String)>,
    /// Probe bookkeeping of each running container, by container name.
    probes: HashMap<String, probes::ContainerProbes>,
    /// The pod's ready sandbox as of the last sync.
    sandbox_id: Option<String>,
    /// The last ContainerStatus of each of the pod's containers, by ID (see `observe`).
    statuses: HashMap<String, v1::ContainerStatus>,
    /// Where this pod's startup time went, until it is first reported Running.
    startup: Option<Startup>,
}

/// Where one pod's startup time goes (docs/workloads.md, Performance): logged once, at info,
/// when the pod is first reported Running, so a slow start can be attributed without a profiler.
struct Startup {
    /// When the worker got the pod (from the list or the watch).
    seen: Instant,
    /// Waiting for a start slot (`Shared::start_slots`).
    queued: Duration,
    /// RunPodSandbox, the CNI ADD included.
    sandbox: Duration,
    /// CreateContainer + StartContainer of every container (init containers included).
    containers: Duration,
    /// Status PATCHes until Running.
    status: Duration,
    /// Syncs until Running.
    syncs: u32,
}

async fn pod_worker(
    s: std::sync::Arc<Shared>,
    uid: String,
    mut rx: watch::Receiver<Option<core::Pod>>,
    cancel: CancellationToken,
) {
    let mut state = WorkerState {
        startup: Some(Startup {
            seen: Instant::now(),
            queued: Duration::ZERO,
            sandbox: Duration::ZERO,
            containers: Duration::ZERO,
            status: Duration::ZERO,
            syncs: 0,
        }),
        ..WorkerState::default()
    };
    let mut last: Option<core::Pod> = None;
    loop {
        let current = rx.borrow_and_update().clone();
        match current {
            None => {
                // Gone from the API: stop it with its grace period.
                let grace = last.as_ref().map(grace_seconds).unwrap_or(30);
                if let Err(e) = terminate(&s, &uid, grace, &mut KillTimes::default()).await {
                    tracing::warn!(component = "kubelet", pod_uid = %uid, "stopping deleted pod: {e}");
                }
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                let seen = Instant::now();
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .unwrap_or_else(|| grace_seconds(&pod));
                let grace = run_pre_stop(&s, &pod, &uid, grace).await;
                let pre_stop = seen.elapsed();
                let mut kill = KillTimes::default();
                if let Err(e) = terminate(&s, &uid, grace, &mut kill).await {
                    tracing::warn!(component = "kubelet", pod_uid = %uid, "stopping pod: {e}");
                }
                let t = Instant::now();
                let deleted = final_delete(&s, &pod, &mut rx, &cancel).await;
                let (ns, name, _) = podspec::meta(&pod);
                tracing::info!(
                    component = "kubelet",
                    pod = %name,
                    namespace = %ns,
                    grace_s = grace,
                    total_ms = seen.elapsed().as_millis() as u64,
                    pre_stop_ms = pre_stop.as_millis() as u64,
                    containers_ms = kill.containers.as_millis() as u64,
                    sandbox_ms = kill.sandbox.as_millis() as u64,
                    delete_ms = t.elapsed().as_millis() as u64,
                    "pod stopped"
                );
                last = Some(pod);
                match deleted {
                    // Wait for the object to go (or cancel).
                    FinalDelete::Done => tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = rx.changed() => if r.is_err() { return },
                    },
                    // A newer version (or the object's end) came while retrying: look again.
                    FinalDelete::Changed => {}
                    FinalDelete::Cancelled => return,
                }
                continue;
            }
            Some(pod) => {
                if let Err(e) = sync_pod(&s, &pod, &mut state).await {
                    tracing::debug!(component = "kubelet", pod_uid = %uid, "sync: {e}");
                }
                last = Some(pod);
            }
        }
        let resync_at = tokio::time::Instant::now() + RESYNC;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if needs_sync(last.as_ref(), rx.borrow().as_ref()) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(resync_at) => break,
            }
        }
    }
}

/// Whether a new version of the pod calls for a sync now rather than at the next resync: not
/// when only its status (and the metadata every write bumps) changed, which is mostly the
/// echo of this worker's own status write.
fn needs_sync(last: Option<&core::Pod>, new: Option<&core::Pod>) -> bool {
    let (Some(last), Some(new)) = (last, new) else {
        return true;
    };
    let (a, b) = (&last.metadata, &new.metadata);
    last.spec != new.spec
        || a.uid != b.uid
        || a.deletion_timestamp != b.deletion_timestamp
        || a.deletion_grace_period_seconds != b.deletion_grace_period_seconds
        || a.labels != b.labels
        || a.annotations != b.annotations
}

fn grace_seconds(pod: &core::Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

async fn our_sandboxes(s: &Shared, uid: &str) -> Result<Vec<v1::PodSandbox>, RuntimeError> {
    // Filtered by containerd, not here: one pod's sandboxes, not the node's.
    let mut list: Vec<v1::PodSandbox> = s.cri.list_sandboxes_labeled(podspec::POD_UID, uid).await?;
    list.sort_by_key(|sb| std::cmp::Reverse(sb.created_at));
    Ok(list)
}

/// Where one pod's stop goes (docs/workloads.md, Performance), logged with `pod stopped`.
#[derive(Debug, Default)]
struct KillTimes {
    /// StopContainer of the running containers (the grace period included).
    containers: Duration,
    /// StopPodSandbox (the CNI DEL included) and RemovePodSandbox.
    sandbox: Duration,
}

async fn terminate(
    s: &Shared,
    uid: &str,
    grace: i64,
    times: &mut KillTimes,
) -> Result<(), RuntimeError> {
    for sb in our_sandboxes(s, uid).await? {
        let t = kill_sandbox(s, &sb.id, grace).await?;
        times.containers += t.containers;
        times.sandbox += t.sandbox;
    }
    Ok(())
}

/// Upstream's shortest stop after a preStop hook: the hook may use up the grace period, the
/// container still gets this long between SIGTERM and SIGKILL.
const MIN_GRACE_AFTER_HOOK: i64 = 2;

/// The preStop exec hook of container `c`, if it has one.
fn pre_stop_command(c: &core::Container) -> Option<Vec<String>> {
    c.lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone())
}

/// Runs container `c`'s preStop exec hook in `container_id` within `grace` seconds, as the
/// kubelet does before it stops a container (on deletion and on a liveness or startup probe
/// kill); a failure is a `FailedPreStopHook` event and the stop goes on. Returns the grace
/// left for the stop: what the hook did not use, at least [`MIN_GRACE_AFTER_HOOK`] after a hook.
async fn pre_stop_hook(
    s: &Shared,
    pod: &core::Pod,
    c: &core::Container,
    container_id: &str,
    grace: i64,
) -> i64 {
    // Upstream skips the hook when there is no grace at all (a forced deletion).
    let Some(cmd) = pre_stop_command(c).filter(|_| grace > 0) else {
        return grace;
    };
    let started = Instant::now();
    let bound = Duration::from_secs(grace.max(0) as u64);
    // ExecSync enforces the deadline in the runtime; the outer one covers a stuck call.
    let result = tokio::time::timeout(
        bound + Duration::from_secs(2),
        s.cri.exec_sync(container_id, cmd.clone(), grace),
    )
    .await;
    let failure = match result {
        Ok(Ok(r)) if r.exit_code == 0 => None,
        Ok(Ok(r)) => Some((
            format!("command {cmd:?} exited with {}", r.exit_code),
            String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr),
        )),
        Ok(Err(e)) => Some((e.to_string(), String::new())),
        Err(_) => Some((format!("timed out after {grace}s"), String::new())),
    };
    if let Some((error, output)) = failure {
        let (ns, name, _) = podspec::meta(pod);
        let message = format!(
            "Exec lifecycle hook ({cmd:?}) for Container \"{}\" in Pod \"{name}_{ns}\" failed - error: {error}, message: {:?}",
            c.name,
            output.trim()
        );
        post_event(s, pod, &c.name, "Warning", "FailedPreStopHook", &message).await;
    }
    (grace - started.elapsed().as_secs() as i64).max(MIN_GRACE_AFTER_HOOK)
}

/// Runs the running containers' preStop exec hooks (together) before the pod is stopped;
/// returns the grace left for the stop.
async fn run_pre_stop(s: &Shared, pod: &core::Pod, uid: &str, grace: i64) -> i64 {
    let Ok(sandboxes) = our_sandboxes(s, uid).await else {
        return grace;
    };
    let Some(sb) = sandboxes.first() else {
        return grace;
    };
    let Ok(containers) = s.cri.list_containers(Some(&sb.id)).await else {
        return grace;
    };
    let hooks = pod
        .spec
        .iter()
        .flat_map(|sp| sp.containers.iter())
        .filter(|c| pre_stop_command(c).is_some())
        .filter_map(|c| {
            let ctr = containers.iter().find(|x| {
                x.state == v1::ContainerState::ContainerRunning as i32
                    && x.metadata.as_ref().map(|m| m.name.as_str()) == Some(c.name.as_str())
            })?;
            Some(pre_stop_hook(s, pod, c, &ctr.id, grace))
        });
    futures_util::future::join_all(hooks)
        .await
        .into_iter()
        .min()
        .unwrap_or(grace)
}

/// A refused or failed final delete of a Pod.
#[derive(Debug, thiserror::Error)]
enum FinalDeleteError {
    #[error("final delete: {source}")]
    Request {
        #[source]
        source: crate::https::ClientError,
    },
    #[error("final delete: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
}

/// How [`final_delete`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinalDelete {
    /// The API accepted it (or the object was already gone).
    Done,
    /// The worker's pod changed (or left) before a delete went through.
    Changed,
    Cancelled,
}

/// First pause before a failed final delete is sent again; it doubles up to
/// [`FINAL_DELETE_RETRY_MAX`].
const FINAL_DELETE_RETRY: Duration = Duration::from_millis(500);
const FINAL_DELETE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The final delete of a gracefully deleted Pod, once its containers are gone, sent again
/// after a failure (a timeout on a loaded host, a conflict) until it goes through or the pod
/// changes: nothing else would finish the deletion, since the list's and the watch's copies of
/// a Terminating pod do not change until it is gone (docs/workloads.md, Pod deletion).
async fn final_delete(
    s: &Shared,
    pod: &core::Pod,
    rx: &mut watch::Receiver<Option<core::Pod>>,
    cancel: &CancellationToken,
) -> FinalDelete {
    let (ns, name, _) = podspec::meta(pod);
    let mut pause = FINAL_DELETE_RETRY;
    let mut failures = 0u32;
    loop {
        let e = match send_final_delete(s, pod).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(component = "kubelet", pod = %name, namespace = %ns, "final delete went through after {failures} failed attempts");
                }
                return FinalDelete::Done;
            }
            Err(e) => e,
        };
        failures += 1;
        if failures == 1 {
            tracing::warn!(component = "kubelet", pod = %name, namespace = %ns, "{e}; retrying");
        } else {
            tracing::debug!(component = "kubelet", pod = %name, namespace = %ns, "{e} (attempt {failures})");
        }
        tokio::select! {
            _ = cancel.cancelled() => return FinalDelete::Cancelled,
            r = rx.changed() => {
                return if r.is_err() { FinalDelete::Cancelled } else { FinalDelete::Changed };
            }
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(FINAL_DELETE_RETRY_MAX);
    }
}

/// One DELETE of the Pod with grace period 0 and its UID as precondition (a pod of the same
/// name created since is left alone). Gone already counts as done.
async fn send_final_delete(s: &Shared, pod: &core::Pod) -> Result<(), FinalDeleteError> {
    let (ns, name, uid) = podspec::meta(pod);
    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                      "preconditions": {"uid": uid}});
    let r = s
        .api
        .call(
            http::Method::DELETE,
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            Some("application/json"),
            Some(body),
        )
        .await
        .map_err(|source| FinalDeleteError::Request { source })?;
    if r.is_success() || r.status == 404 {
        return Ok(());
    }
    Err(FinalDeleteError::Refused {
        status: r.status,
        message: r.error_message(),
    })
}

/// What one container looks like on the runtime.
#[derive(Debug, Clone, Default)]
struct Observed {
    /// Latest attempt's status.
    latest: Option<v1::ContainerStatus>,
    /// The attempt before it (for lastState).
    previous: Option<v1::ContainerStatus>,
    /// IDs of attempts older than `previous` (removed on restart).
    older: Vec<String>,
}

/// The pod's containers by name, from one ListContainers and a ContainerStatus per attempt
/// that matters; `cache` (by container ID) spares the ContainerStatus of an attempt whose state
/// has not changed since it was read: what it adds to the listing (times, exit code, reason,
/// image) is fixed once a container is running or exited, and the 1 s resync of every pod
/// would otherwise read it again and again (docs/workloads.md, Performance).
async fn observe(
    s: &Shared,
    sandbox: &str,
    cache: &mut HashMap<String, v1::ContainerStatus>,
) -> Result<HashMap<String, Observed>, RuntimeError> {
    let mut listed = std::collections::HashSet::new();
    let mut by_name: HashMap<String, Vec<v1::Container>> = HashMap::new();
    for c in s.cri.list_containers(Some(sandbox)).await? {
        let name = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        listed.insert(c.id.clone());
        by_name.entry(name).or_default().push(c);
    }
    cache.retain(|id, _| listed.contains(id));
    let mut out = HashMap::new();
    for (name, mut list) in by_name {
        list.sort_by_key(|c| {
            std::cmp::Reverse(c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0))
        });
        let mut o = Observed::default();
        for (i, c) in list.iter().enumerate() {
            if i > 1 {
                o.older.push(c.id.clone());
                continue;
            }
            let status = match cache.get(&c.id) {
                Some(st) if st.state == c.state => st.clone(),
                _ => {
                    let st = s.cri.container_status(&c.id).await?;
                    cache.insert(c.id.clone(), st.clone());
                    st
                }
            };
            if i == 0 {
                o.latest = Some(status);
            } else {
                o.previous = Some(status);
            }
        }
        out.insert(name, o);
    }
    Ok(out)
}

fn state_of(c: &v1::ContainerStatus) -> v1::ContainerState {
    v1::ContainerState::try_from(c.state).unwrap_or(v1::ContainerState::ContainerUnknown)
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp(nanos / 1_000_000_000, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn terminated_json(c: &v1::ContainerStatus) -> Value {
    let reason = if !c.reason.is_empty() && c.reason != "Completed" && c.reason != "Error" {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({
        "exitCode": c.exit_code,
        "reason": reason,
        "startedAt": rfc3339(c.started_at),
        "finishedAt": rfc3339(c.finished_at),
        "containerID": format!("containerd://{}", c.id),
    });
    if !c.message.is_empty() {
        t["message"] = json!(c.message);
    }
    json!({"terminated": t})
}

/// Whether `policy` restarts a container that exited with `code`.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// The next CrashLoopBackOff delay after a container that ran for `ran` exited.
pub fn next_backoff(current: Option<Duration>, ran: Duration) -> Duration {
    match current {
        _ if ran >= BACKOFF_RESET => BACKOFF_INITIAL,
        None => BACKOFF_INITIAL,
        Some(d) => (d * 2).min(BACKOFF_MAX),
    }
}

async fn ensure_image(
    s: &Shared,
    c: &core::Container,
    state: &mut WorkerState,
) -> Result<String, (String, String)> {
    let image = super::normalize_image(c.image.as_deref().unwrap_or(""));
    if c.image.as_deref().unwrap_or("").trim().is_empty() {
        return Err(("InvalidImageName".into(), "container image is empty".into()));
    }
    let policy = c
        .image_pull_policy
        .as_deref()
        .unwrap_or(if image.ends_with(":latest") {
            "Always"
        } else {
            "IfNotPresent"
        });
    // registries.yaml `rewrite`: the same image under its rewritten path at each mirror
    // endpoint (docs/workloads.md, "Private registries").
    let rewritten = s.registries.rewritten_pulls(&image);
    // What the node has already: the image under its own name, else under a rewritten one,
    // which runs by image ID so the pod keeps the name the user wrote.
    let mut present = s
        .cri
        .image_id(&image)
        .await
        .ok()
        .flatten()
        .map(|_| image.clone());
    for r in &rewritten {
        if present.is_some() {
            break;
        }
        present = s.cri.image_id(r).await.ok().flatten();
    }
    if let Some(p) = &present
        && policy != "Always"
    {
        return Ok(p.clone());
    }
    if present.is_none() && policy == "Never" {
        return Err((
            "ErrImageNeverPull".into(),
            format!("Container image \"{image}\" is not present with pull policy of Never"),
        ));
    }
    if let Some((until, _, msg)) = state.pull_backoff.get(&image)
        && Instant::now() < *until
    {
        return Err((
            "ImagePullBackOff".into(),
            format!("Back-off pulling image \"{image}\": {msg}"),
        ));
    }
    match pull(s, &image, &rewritten).await {
        Ok(r) => {
            state.pull_backoff.remove(&image);
            Ok(r)
        }
        Err(e) if present.is_some() => {
            tracing::debug!(
                component = "kubelet",
                "pull of present image {image} failed: {e}"
            );
            Ok(present.unwrap_or(image))
        }
        Err(e) => {
            let delay = state
                .pull_backoff
                .get(&image)
                .map(|(_, d, _)| (*d * 2).min(BACKOFF_MAX))
                .unwrap_or(BACKOFF_INITIAL);
            let msg = format!("failed to pull image \"{image}\": {e}");
            state
                .pull_backoff
                .insert(image.clone(), (Instant::now() + delay, delay, msg.clone()));
            Err(("ErrImagePull".into(), msg))
        }
    }
}

/// Pulls `image`: first its `rewritten` references (each at one mirror endpoint, in order),
/// then, like RKE2's fallback to the default endpoint, the name itself. Returns what the
/// container runs from: the image ID of a rewritten pull, else the name.
async fn pull(s: &Shared, image: &str, rewritten: &[String]) -> Result<String, String> {
    for r in rewritten {
        match s.cri.pull(r).await {
            Ok(id) if !id.is_empty() => {
                tracing::info!(component = "kubelet", "pulled {image} as {r} ({id})");
                return Ok(id);
            }
            Ok(_) => {}
            Err(e) => tracing::info!(
                component = "kubelet",
                "pulling {image} as {r} failed, trying the next endpoint: {e}"
            ),
        }
    }
    s.cri.pull(image).await.map(|_| image.to_string())
}

/// The pod's context (env and volume sources) for the current sandbox.
async fn pod_context(s: &Shared, pod: &core::Pod, pod_ip: &str) -> PodContext {
    let (ns, _, uid) = podspec::meta(pod);
    let (config_map_names, secret_names) = podspec::references(pod);
    let mut config_maps = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let get = |kind: &'static str, n: String| async move {
        let path = format!("/api/v1/namespaces/{ns}/{kind}/{n}");
        (n, s.api.get_json(&path).await)
    };
    let cm_reads = config_map_names.into_iter().map(|n| get("configmaps", n));
    let secret_reads = secret_names.into_iter().map(|n| get("secrets", n));
    let (cm_objs, secret_objs) = tokio::join!(
        futures_util::future::join_all(cm_reads),
        futures_util::future::join_all(secret_reads)
    );
    for (n, obj) in cm_objs {
        if let Ok(cm) = obj {
            let data: BTreeMap<String, String> =
                serde_json::from_value(cm["data"].clone()).unwrap_or_default();
            config_maps.insert(n, data);
        }
    }
    for (n, obj) in secret_objs {
        if let Ok(secret) = obj {
            secrets.insert(n, podspec::secret_data(&secret));
        }
    }
    PodContext {
        node_name: s.cfg.node_name.clone(),
        namespace: ns.to_string(),
        host_ip: s
            .cfg
            .node_ips
            .first()
            .map(|i| i.to_string())
            .unwrap_or_default(),
        pod_ip: pod_ip.to_string(),
        config_maps,
        secrets,
        pod_dir: s.layout.pods_dir().join(uid),
        log_dir: podspec::log_dir(&s.layout.pod_logs(), pod),
    }
}

/// Where a pod's containers go: its sandbox, the sandbox's config and the pod's context.
struct Target<'a> {
    sandbox: &'a str,
    config: &'a v1::PodSandboxConfig,
    ctx: &'a PodContext,
}

/// Starts (or restarts) one container; records why it is waiting when it cannot.
async fn start_container(
    s: &Shared,
    pod: &core::Pod,
    c: &core::Container,
    attempt: u32,
    target: &Target<'_>,
    state: &mut WorkerState,
) {
    let (sandbox_id, sandbox_cfg, ctx) = (target.sandbox, target.config, target.ctx);
    let image = match ensure_image(s, c, state).await {
        Ok(i) => i,
        Err(w) => {
            state.waiting.insert(c.name.clone(), w);
            return;
        }
    };
    let t = Instant::now();
    let result = async {
        let volumes = podspec::prepare_volumes(pod, ctx)
            .map_err(|e| ("CreateContainerConfigError".to_string(), e.0))?;
        let config = podspec::container_config(pod, c, &image, attempt, ctx, &volumes)
            .map_err(|e| ("CreateContainerConfigError".to_string(), e.0))?;
        s.cri
            .create_and_start(sandbox_id, config, sandbox_cfg.clone())
            .await
            .map_err(|e| ("RunContainerError".to_string(), e.to_string()))
    }
    .await;
    if let Some(st) = state.startup.as_mut() {
        st.containers += t.elapsed();
    }
    tracing::debug!(component = "kubelet", pod = ?pod.metadata.name, container = %c.name, ms = t.elapsed().as_millis() as u64, "CreateContainer + StartContainer");
    if let Err(w) = result {
        tracing::info!(component = "kubelet", pod = ?pod.metadata.name, container = %c.name, "{}: {}", w.0, w.1);
        state.waiting.insert(c.name.clone(), w);
    }
}

/// Makes the runtime match one pod and writes its status.
async fn sync_pod(
    s: &Shared,
    pod: &core::Pod,
    state: &mut WorkerState,
) -> Result<(), RuntimeError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let (_, _, uid) = podspec::meta(pod);
    let uid = uid.to_string();
    state.waiting.clear();
    if state.start_time.is_none() {
        state.start_time = Some(
            pod.status
                .as_ref()
                .and_then(|st| st.start_time.as_ref())
                .map(|t| t.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| {
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                }),
        );
    }
    let phase_now = pod
        .status
        .as_ref()
        .and_then(|st| st.phase.clone())
        .unwrap_or_default();
    let finished = phase_now == "Succeeded" || phase_now == "Failed";
    let host_network = spec.host_network.unwrap_or(false);

    // 1. The sandbox: the one found last time while it stays ready (one status call instead
    // of listing every sandbox of the node, per pod, per second), else looked up by pod UID.
    let mut sandboxes = Vec::new();
    let mut cached_status = None;
    if let Some(id) = &state.sandbox_id
        && let Ok(st) = s.cri.sandbox_status(id).await
        && st.state == v1::PodSandboxState::SandboxReady as i32
    {
        cached_status = Some(st);
    }
    let ready = match &cached_status {
        Some(st) => Some(st.id.clone()),
        None => {
            sandboxes = our_sandboxes(s, &uid).await?;
            sandboxes
                .iter()
                .find(|sb| sb.state == v1::PodSandboxState::SandboxReady as i32)
                .map(|sb| sb.id.clone())
        }
    };
    let mut sandbox_msg: Option<(String, String)> = None;
    // Held from a new sandbox through its containers' start (the status write comes after).
    let mut start_slot = None;
    let sandbox = match ready {
        Some(id) => Some(id),
        None if finished => None,
        None if !host_network && !*s.network_ready.borrow() => {
            sandbox_msg = Some((
                "ContainerCreating".into(),
                "waiting for the node's pod network (spec.podCIDR)".into(),
            ));
            None
        }
        None => {
            let t = Instant::now();
            start_slot = s.start_slots.acquire().await.ok();
            if let Some(st) = state.startup.as_mut() {
                st.queued += t.elapsed();
            }
            // A dead sandbox (pause gone) is replaced; its containers go with it.
            for sb in &sandboxes {
                let _ = kill_sandbox(s, &sb.id, 0).await;
            }
            let pause = s.cfg.runtime.pause_image();
            let pause_present =
                s.pause_present.load(Ordering::Relaxed) || s.cri.image_id(&pause).await?.is_some();
            s.pause_present.store(pause_present, Ordering::Relaxed);
            if !pause_present {
                // Never let containerd pull the sandbox image from the internet by itself.
                sandbox_msg = Some((
                    "ContainerCreating".into(),
                    format!(
                        "the pause image {pause} is not present: import it into {} (docs/workloads.md)",
                        s.layout.images_dir().display()
                    ),
                ));
                None
            } else {
                let ctx = pod_context(s, pod, "").await;
                let _ = std::fs::create_dir_all(&ctx.log_dir);
                let mut cfg = podspec::sandbox_config(pod, &ctx);
                cfg.dns_config =
                    super::dns_config::sandbox_dns(pod, s.cfg.cluster_dns.as_ref()).await;
                cfg.labels
                    .insert(NODE_LABEL.into(), s.cfg.node_name.clone());
                if let Some(m) = cfg.metadata.as_mut() {
                    m.attempt = sandboxes.len() as u32;
                }
                let t = Instant::now();
                let created = s.cri.run_sandbox(cfg).await;
                if let Some(st) = state.startup.as_mut() {
                    st.sandbox += t.elapsed();
                }
                tracing::debug!(component = "kubelet", pod = ?pod.metadata.name, ms = t.elapsed().as_millis() as u64, "RunPodSandbox");
                match created {
                    Ok(id) => Some(id),
                    Err(e) => {
                        s.pause_present.store(false, Ordering::Relaxed);
                        sandbox_msg = Some(("ContainerCreating".into(), e.to_string()));
                        None
                    }
                }
            }
        }
    };
    state.sandbox_id = sandbox.clone();
    let (pod_ip, observed, sandbox_cfg, ctx) = match &sandbox {
        Some(id) => {
            let st = match cached_status {
                Some(st) => st,
                None => s.cri.sandbox_status(id).await?,
            };
            let ip = st.network.map(|n| n.ip).unwrap_or_default();
            let ctx = pod_context(s, pod, &ip).await;
            let mut cfg = podspec::sandbox_config(pod, &ctx);
            cfg.labels
                .insert(NODE_LABEL.into(), s.cfg.node_name.clone());
            (
                ip,
                observe(s, id, &mut state.statuses).await?,
                Some(cfg),
                Some(ctx),
            )
        }
        None => (String::new(), HashMap::new(), None, None),
    };
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());

    // 2. Init containers in order, then the containers.
    let mut initialized = true;
    let mut init_failed = false;
    // Whether this sync started (or restarted) anything, so the runtime is worth reading again.
    let mut acted = false;
    if let (Some(sb), Some(cfg), Some(ctx)) = (&sandbox, &sandbox_cfg, &ctx) {
        let target = Target {
            sandbox: sb,
            config: cfg,
            ctx,
        };
        for c in spec.init_containers.iter().flatten() {
            let o = observed.get(&c.name).cloned().unwrap_or_default();
            match o.latest.as_ref().map(|l| (state_of(l), l)) {
                None => {
                    start_container(s, pod, c, 0, &target, state).await;
                    acted = true;
                    initialized = false;
                    break;
                }
                Some((v1::ContainerState::ContainerExited, l)) if l.exit_code == 0 => continue,
                Some((v1::ContainerState::ContainerExited, l)) => {
                    initialized = false;
                    if policy == "Never" {
                        init_failed = true;
                    } else {
                        restart_with_backoff(s, pod, c, l, &o, &target, state).await;
                        acted = true;
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
            }
        }
        if initialized && !finished {
            for c in &spec.containers {
                let o = observed.get(&c.name).cloned().unwrap_or_default();
                match o.latest.as_ref().map(|l| (state_of(l), l)) {
                    None => {
                        start_container(s, pod, c, 0, &target, state).await;
                        acted = true;
                    }
                    Some((v1::ContainerState::ContainerExited, l))
                        if restarts(&policy, l.exit_code) =>
                    {
                        restart_with_backoff(s, pod, c, l, &o, &target, state).await;
                        acted = true;
                    }
                    Some((v1::ContainerState::ContainerCreated, l)) => {
                        acted = true;
                        // Created but never started (the daemon died in between): start it.
                        let _ = s
                            .cri
                            .runtime
                            .clone()
                            .start_container(v1::StartContainerRequest {
                                container_id: l.id.clone(),
                            })
                            .await;
                    }
                    _ => {}
                }
            }
        }
    } else {
        initialized = spec.init_containers.as_ref().is_none_or(|v| v.is_empty());
    }
    drop(start_slot);
    // Re-read what changed (nothing did when nothing was started: spare the calls).
    let observed = match &sandbox {
        Some(id) if acted => observe(s, id, &mut state.statuses).await?,
        _ => observed,
    };
    let probe_host = if host_network {
        s.cfg
            .node_ips
            .first()
            .map(|i| i.to_string())
            .unwrap_or_default()
    } else {
        pod_ip.clone()
    };
    check_probes(s, pod, &spec, &observed, &probe_host, state).await;

    // 3. Status.
    let status = pod_status(
        s,
        pod,
        &spec,
        &observed,
        state,
        &pod_ip,
        initialized,
        init_failed,
        sandbox_msg,
    );
    if let Some(st) = state.startup.as_mut() {
        st.syncs += 1;
    }
    if state.posted.as_ref() != Some(&status) {
        let (ns, name, _) = podspec::meta(pod);
        let t = Instant::now();
        let r = s
            .api
            .call(
                http::Method::PATCH,
                &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
                Some("application/merge-patch+json"),
                Some(json!({"status": status})),
            )
            .await
            .map_err(|e| RuntimeError::Cri(e.to_string()))?;
        if let Some(st) = state.startup.as_mut() {
            st.status += t.elapsed();
        }
        if r.is_success() {
            if status["phase"] == "Running"
                && let Some(st) = state.startup.take()
            {
                tracing::info!(
                    component = "kubelet",
                    pod = %name,
                    namespace = %ns,
                    total_ms = st.seen.elapsed().as_millis() as u64,
                    queued_ms = st.queued.as_millis() as u64,
                    sandbox_ms = st.sandbox.as_millis() as u64,
                    containers_ms = st.containers.as_millis() as u64,
                    status_ms = st.status.as_millis() as u64,
                    syncs = st.syncs,
                    "pod running"
                );
            }
            state.posted = Some(status);
        } else {
            tracing::debug!(component = "kubelet", pod = %name, "status: {} {}", r.status, r.error_message());
        }
    }
    Ok(())
}

/// Runs the probes that are due for the pod's running containers (concurrently), records
/// the results, posts `Unhealthy` for each failure, and kills a container whose liveness or
/// startup probe failed (`Killing`; its preStop hook runs first, within the grace period), so
/// its restart policy restarts it.
async fn check_probes(
    s: &Shared,
    pod: &core::Pod,
    spec: &core::PodSpec,
    observed: &HashMap<String, Observed>,
    host: &str,
    state: &mut WorkerState,
) {
    let now = Instant::now();
    let now_nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let mut running = std::collections::HashSet::new();
    let mut due = Vec::new();
    for c in &spec.containers {
        let Some(l) = observed.get(&c.name).and_then(|o| o.latest.as_ref()) else {
            continue;
        };
        if state_of(l) != v1::ContainerState::ContainerRunning {
            continue;
        }
        running.insert(c.name.clone());
        let p = state
            .probes
            .entry(c.name.clone())
            .or_insert_with(|| probes::ContainerProbes::new(&l.id));
        if p.container_id != l.id {
            *p = probes::ContainerProbes::new(&l.id);
        }
        let running_for = Duration::from_nanos((now_nanos - l.started_at).max(0) as u64);
        for kind in p.due(c, running_for, now) {
            due.push((c, l.id.clone(), kind));
        }
    }
    // A container that is not running has no probe state: its next run starts afresh.
    state.probes.retain(|name, _| running.contains(name));
    let runs = due.iter().map(|(c, id, kind)| async move {
        let probe = kind.of(c).expect("due probes exist");
        let target = probes::Target {
            cri: &s.cri,
            container_id: id,
            host,
            container: c,
        };
        probes::run(probe, &target).await
    });
    let results = futures_util::future::join_all(runs).await;
    for ((c, _, kind), result) in due.into_iter().zip(results) {
        let set = probes::Settings::of(kind.of(c).expect("due probes exist"));
        let Some(p) = state.probes.get_mut(&c.name) else {
            continue;
        };
        p.counter(kind).record(result.is_ok(), &set, now);
        if let Err(msg) = result {
            let message = format!("{} probe failed: {msg}", kind.label());
            post_event(s, pod, &c.name, "Warning", "Unhealthy", &message).await;
        }
    }
    for c in &spec.containers {
        let Some((id, kind)) = state
            .probes
            .get(&c.name)
            .and_then(|p| p.failed_fatally().map(|k| (p.container_id.clone(), k)))
        else {
            continue;
        };
        let what = match kind {
            ProbeKind::Startup => "startup",
            _ => "liveness",
        };
        let message = format!(
            "Container {} failed {what} probe, will be restarted",
            c.name
        );
        post_event(s, pod, &c.name, "Normal", "Killing", &message).await;
        let grace = kind
            .of(c)
            .and_then(|p| p.termination_grace_period_seconds)
            .unwrap_or_else(|| grace_seconds(pod));
        tracing::info!(component = "kubelet", pod = ?pod.metadata.name, container = %c.name, "{message}");
        let grace = pre_stop_hook(s, pod, c, &id, grace).await;
        if let Err(e) = s.cri.stop_container(&id, grace).await {
            tracing::warn!(component = "kubelet", pod = ?pod.metadata.name, container = %c.name, "stopping after a failed {what} probe: {e}");
        }
        state.probes.remove(&c.name);
    }
}

/// Posts a core/v1 Event about one of the pod's containers, as the kubelet does. Repeats (same
/// container, type, reason and message) are one Event whose `count` and `lastTimestamp` grow:
/// its name derives from that identity, so a repeat's create answers 409 and becomes a patch.
async fn post_event(
    s: &Shared,
    pod: &core::Pod,
    container: &str,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let (ns, name, uid) = podspec::meta(pod);
    let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let field_path = format!("spec.containers{{{container}}}");
    let identity = format!("{uid}\n{field_path}\n{type_}\n{reason}\n{message}");
    let digest = ring::digest::digest(&ring::digest::SHA256, identity.as_bytes());
    let event_name = format!("{name}.{}", &hex::encode(digest.as_ref())[..16]);
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name, "uid": uid,
            "fieldPath": field_path,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": "kubelet", "host": s.cfg.node_name},
        "reportingComponent": "kubelet",
        "reportingInstance": s.cfg.node_name,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    let events = format!("/api/v1/namespaces/{ns}/events");
    let result = async {
        let r = s
            .api
            .call(
                http::Method::POST,
                &events,
                Some("application/json"),
                Some(event),
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 409 {
            return if r.is_success() {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.error_message()))
            };
        }
        let path = format!("{events}/{event_name}");
        let count = s.api.get_json(&path).await?["count"].as_i64().unwrap_or(1);
        let patch = json!({"count": count + 1, "lastTimestamp": stamp});
        let r = s
            .api
            .call(
                http::Method::PATCH,
                &path,
                Some("application/merge-patch+json"),
                Some(patch),
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.is_success() {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.error_message()))
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(component = "kubelet", pod = %name, "event {reason}: {e}");
    }
}

async fn restart_with_backoff(
    s: &Shared,
    pod: &core::Pod,
    c: &core::Container,
    last: &v1::ContainerStatus,
    o: &Observed,
    target: &Target<'_>,
    state: &mut WorkerState,
) {
    let ran = Duration::from_nanos((last.finished_at - last.started_at).max(0) as u64);
    let finished_ago = Duration::from_nanos(
        (chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - last.finished_at).max(0) as u64,
    );
    // One entry per container: the exit it was computed for and the delay; a new exit grows
    // the delay from the previous one.
    let delay = match state.backoff.get(&c.name) {
        Some(b) if b.exit_id == last.id => b.delay,
        prev => {
            let d = next_backoff(prev.map(|b| b.delay), ran);
            state.backoff.insert(
                c.name.clone(),
                Backoff {
                    exit_id: last.id.clone(),
                    delay: d,
                },
            );
            d
        }
    };
    if finished_ago < delay {
        let (ns, name, uid) = podspec::meta(pod);
        state.waiting.insert(
            c.name.clone(),
            (
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={name}_{ns}({uid})",
                    delay.as_secs(),
                    c.name
                ),
            ),
        );
        return;
    }
    // Keep the latest exited attempt for `logs --previous`; older ones go.
    for id in o.older.iter().chain(o.previous.iter().map(|p| &p.id)) {
        let _ = s.cri.remove_container(id).await;
    }
    let attempt = last.metadata.as_ref().map(|m| m.attempt).unwrap_or(0) + 1;
    start_container(s, pod, c, attempt, target, state).await;
}

#[allow(clippy::too_many_arguments)]
fn pod_status(
    s: &Shared,
    pod: &core::Pod,
    spec: &core::PodSpec,
    observed: &HashMap<String, Observed>,
    state: &WorkerState,
    pod_ip: &str,
    initialized: bool,
    init_failed: bool,
    sandbox_msg: Option<(String, String)>,
) -> Value {
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let container_status = |c: &core::Container, init: bool| -> Value {
        let o = observed.get(&c.name).cloned().unwrap_or_default();
        let image = c.image.clone().unwrap_or_default();
        let mut st = json!({
            "name": c.name,
            "image": image,
            "imageID": "",
            "ready": false,
            "restartCount": o.latest.as_ref().and_then(|l| l.metadata.as_ref()).map(|m| m.attempt).unwrap_or(0),
            "started": false,
        });
        if let Some(l) = &o.latest {
            st["containerID"] = json!(format!("containerd://{}", l.id));
            st["imageID"] = json!(l.image_ref);
        }
        if let Some(p) = &o.previous {
            st["lastState"] = terminated_json(p);
        }
        let waiting = state.waiting.get(&c.name).cloned().or_else(|| {
            if o.latest.is_none() {
                Some(sandbox_msg.clone().unwrap_or_else(|| {
                    if init || initialized {
                        ("ContainerCreating".into(), String::new())
                    } else {
                        ("PodInitializing".into(), String::new())
                    }
                }))
            } else {
                None
            }
        });
        match (&o.latest, waiting) {
            (Some(l), Some((reason, msg)))
                if state_of(l) == v1::ContainerState::ContainerExited =>
            {
                // Waiting to restart: the exit is the last state.
                st["lastState"] = terminated_json(l);
                st["state"] = json!({"waiting": {"reason": reason, "message": msg}});
            }
            (_, Some((reason, msg))) => {
                let mut w = json!({"reason": reason});
                if !msg.is_empty() {
                    w["message"] = json!(msg);
                }
                st["state"] = json!({"waiting": w});
            }
            (Some(l), None) => match state_of(l) {
                v1::ContainerState::ContainerRunning => {
                    st["state"] = json!({"running": {"startedAt": rfc3339(l.started_at)}});
                    // Probes decide (a container without probes is started and ready).
                    let p = state
                        .probes
                        .get(&c.name)
                        .filter(|p| p.container_id == l.id)
                        .cloned()
                        .unwrap_or_else(|| probes::ContainerProbes::new(&l.id));
                    st["ready"] = json!(!init && p.ready(c));
                    st["started"] = json!(init || p.started(c));
                }
                v1::ContainerState::ContainerExited => {
                    st["state"] = terminated_json(l);
                    st["ready"] = json!(init && l.exit_code == 0);
                }
                _ => st["state"] = json!({"waiting": {"reason": "ContainerCreating"}}),
            },
            (None, None) => st["state"] = json!({"waiting": {"reason": "ContainerCreating"}}),
        }
        st
    };
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| container_status(c, false))
        .collect();
    let init_statuses: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(c, true))
        .collect();
    let all_ready = !statuses.is_empty() && statuses.iter().all(|c| c["ready"] == true);
    let exited: Vec<i64> = statuses
        .iter()
        .filter_map(|c| {
            c.pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
        })
        .collect();
    let all_exited = !statuses.is_empty() && exited.len() == statuses.len();
    let phase = if init_failed {
        "Failed"
    } else if all_exited
        && policy != "Always"
        && (policy == "Never" || exited.iter().all(|c| *c == 0))
    {
        if exited.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if initialized
        && statuses.iter().all(|c| c.get("containerID").is_some())
        && statuses.iter().any(|c| {
            c.pointer("/state/running").is_some()
                || c.pointer("/lastState/terminated").is_some()
                || c.pointer("/state/terminated").is_some()
        })
    {
        "Running"
    } else {
        "Pending"
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let old_conditions: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|st| st.conditions.clone())
        .map(|c| {
            c.into_iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let condition = |ty: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let transition = old_conditions
            .iter()
            .find(|c| c["type"] == ty && c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.clone());
        let mut c = json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": transition});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            !pod_ip.is_empty() || spec.host_network.unwrap_or(false),
            None,
        ),
        condition(
            "Initialized",
            initialized || phase == "Succeeded",
            Some("ContainersNotInitialized"),
        ),
        condition("Ready", all_ready, Some(ready_reason)),
        condition("ContainersReady", all_ready, Some(ready_reason)),
        condition("PodScheduled", true, None),
    ];
    let host_ip = s
        .cfg
        .node_ips
        .first()
        .map(|i| i.to_string())
        .unwrap_or_default();
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": s.cfg.node_ips.iter().map(|i| json!({"ip": i.to_string()})).collect::<Vec<_>>(),
        "startTime": state.start_time,
        "qosClass": podspec::qos_class(pod),
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    let ip = if spec.host_network.unwrap_or(false) {
        host_ip.clone()
    } else {
        pod_ip.to_string()
    };
    if !ip.is_empty() {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_only_change_waits_for_the_resync() {
        let pod = |status: &str, labels: Value, deleting: bool| -> core::Pod {
            let mut p = json!({
                "metadata": {"name": "p", "uid": "u1", "labels": labels, "resourceVersion": status},
                "spec": {"containers": [{"name": "c", "image": "bb:1"}]},
                "status": {"phase": status},
            });
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(p).unwrap()
        };
        let pending = pod("Pending", json!({"a": "1"}), false);
        let running = pod("Running", json!({"a": "1"}), false);
        assert!(!needs_sync(Some(&pending), Some(&running)));
        assert!(needs_sync(
            Some(&pending),
            Some(&pod("Running", json!({"a": "2"}), false))
        ));
        assert!(needs_sync(
            Some(&pending),
            Some(&pod("Pending", json!({"a": "1"}), true))
        ));
        assert!(needs_sync(Some(&pending), None));
        assert!(needs_sync(None, Some(&pending)));
    }

    #[test]
    fn restart_policy_decides_restarts() {
        assert!(restarts("Always", 0));
        assert!(restarts("OnFailure", 1));
        assert!(!restarts("OnFailure", 0));
        assert!(!restarts("Never", 1));
    }

    #[test]
    fn crash_loop_backoff_doubles_to_five_minutes_and_resets() {
        let short = Duration::from_secs(1);
        let mut d = next_backoff(None, short);
        assert_eq!(d, Duration::from_secs(10));
        let mut seen = vec![d.as_secs()];
        for _ in 0..6 {
            d = next_backoff(Some(d), short);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            next_backoff(Some(d), Duration::from_secs(601)),
            BACKOFF_INITIAL
        );
    }
}
