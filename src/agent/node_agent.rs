//! The node agent that runs on every node (docs/architecture.md §2): registers the Node (labels and
//! taints applied at creation, `node-label`s re-applied on every start as RKE2 does), renews its
//! Lease in `kube-node-lease` every heartbeat interval, keeps `Ready=True` while the node process
//! is healthy, and re-registers if its Node is deleted. It talks to the API over HTTPS with the
//! node's `system:node:<name>` client certificate, like a kubelet: over kept-alive connections,
//! writing the Node status only when it changed or every [`STATUS_REPORT_FREQUENCY`], and
//! learning about its own Node (deleted, marked NotReady) from a watch rather than by reading
//! it at every heartbeat (docs/scale.md, "The node agent's requests").

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::daemon::LoopTicker;
use crate::https::{ClientIdentity, HttpsClient, ServerTrust, TlsError};
use crate::kubeclient::{Api, LineSplitter};
use crate::validation::{NodeLabel, Taint};

/// Lease duration written into the node's Lease (kubelet default).
pub const LEASE_DURATION_SECONDS: i64 = 40;
/// Version reported as kubeletVersion (and shown in `kubectl get nodes`).
pub const KUBELET_VERSION: &str = concat!("v1.32.4+rke2rs", env!("CARGO_PKG_VERSION"));
/// Timeout of one API request made by the node agent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry interval after a failed heartbeat: short, so the node rides through a server failover.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// Pause before watching the own Node again after a watch ended (the server closes watches
/// now and then) or failed; the heartbeat still notices a deletion meanwhile.
const REWATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the Node status is written although nothing in it changed (upstream kubelet's
/// `nodeStatusReportFrequency`); the Lease alone says the node is alive in between.
pub const STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(300);

/// Everything the node agent needs.
#[derive(Debug, Clone)]
pub struct NodeAgentConfig {
    pub node_name: String,
    /// `https://host:port` of the API (direct for servers, the local LB for agents).
    pub api_url: String,
    pub ca_pem: String,
    pub identity_cert_pem: String,
    pub identity_key_pem: String,
    /// When set, presented instead of the PEM identity above, so a certificate renewed while
    /// running is used at the next request (a server's own node agent).
    pub identity_slot: Option<std::sync::Arc<crate::https::CertSlot>>,
    /// Name to verify the API certificate against (the URL host may be a local LB address).
    pub server_name: Option<String>,
    pub labels: Vec<NodeLabel>,
    pub taints: Vec<Taint>,
    pub annotations: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
    pub heartbeat_interval: Duration,
}

/// Node agent errors.
#[derive(Debug, thiserror::Error)]
pub enum NodeAgentError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Api(String),
    #[error(transparent)]
    Request(#[from] crate::https::ClientError),
}

fn now_micro() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn now_secs() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Facts about this machine for `status.nodeInfo` and capacity.
fn node_info() -> (Value, Value) {
    let uname = rustix::system::uname();
    let kernel = uname.release().to_string_lossy().into_owned();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into());
    let arch = crate::host::arch();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let info = json!({
        "machineID": read_trimmed("/etc/machine-id").unwrap_or_default(),
        "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid").unwrap_or_default(),
        "bootID": read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        "kernelVersion": kernel,
        "osImage": os_image,
        "containerRuntimeVersion": "",
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": arch,
    });
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{mem_kib}Ki"),
        "pods": "110",
    });
    (info, capacity)
}

fn ready_condition(status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
    })
}

/// Puts the heartbeat and transition times into every condition of `status` (left out of the
/// status the agent compares, since they change at every write).
fn stamp_conditions(status: &mut Value) {
    let now = now_secs();
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions {
            c["lastHeartbeatTime"] = json!(now);
            c["lastTransitionTime"] = json!(now);
        }
    }
}

/// The body of a status write for `status` (as [`NodeAgentConfig::status`] gives it): the
/// condition times stamped, and no `nodeInfo.containerRuntimeVersion`, which the node runtime
/// writes (src/runtime/kubelet.rs): the empty placeholder the Node is created with must not
/// overwrite the real `containerd://…` at every report.
fn status_report(status: &Value) -> Value {
    let mut report = status.clone();
    stamp_conditions(&mut report);
    if let Some(info) = report.get_mut("nodeInfo").and_then(Value::as_object_mut) {
        info.remove("containerRuntimeVersion");
    }
    report
}

/// What the own-Node watch last told about the Node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// No watch is open, or it has not delivered the Node yet: read the Node to know.
    Unknown,
    /// Present, with Ready=True or not.
    Ready(bool),
    Deleted,
}

/// Whether a Node object carries `Ready=True`.
fn node_is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        == Some("True")
}

impl NodeAgentConfig {
    fn hostname_label_set(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.node_name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ]);
        let arch = crate::host::arch();
        labels.insert("kubernetes.io/arch".into(), arch.into());
        labels.insert("beta.kubernetes.io/arch".into(), arch.into());
        for l in &self.labels {
            labels.insert(l.key.clone(), l.value.clone());
        }
        labels
    }

    /// The node's status without condition timestamps (see [`stamp_conditions`]).
    fn status(&self, images: &[Value]) -> Value {
        let (info, capacity) = node_info();
        let mut addresses: Vec<Value> = self
            .addresses
            .iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
            .collect();
        addresses.push(json!({"type": "Hostname", "address": self.node_name}));
        let mut status = json!({
            "conditions": [ready_condition("True", "KubeletReady", "rke2-rs node agent is posting ready status")],
            "addresses": addresses,
            "nodeInfo": info,
            "capacity": capacity,
            "allocatable": capacity,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        });
        if !images.is_empty() {
            status["images"] = Value::Array(images.to_vec());
        }
        status
    }

    fn node_object(&self, images: &[Value]) -> Value {
        let mut status = self.status(images);
        stamp_conditions(&mut status);
        let taints: Vec<Value> = self.taints.iter().map(Taint::to_json).collect();
        let mut spec = json!({});
        if !taints.is_empty() {
            spec["taints"] = Value::Array(taints);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": self.hostname_label_set(),
                "annotations": self.annotations,
            },
            "spec": spec,
            "status": status,
        })
    }
}

/// The node agent.
pub struct NodeAgent {
    cfg: NodeAgentConfig,
    api: Api,
    /// The status last written (without timestamps) and when, to write only changes and the
    /// periodic report.
    reported: Mutex<Option<(Instant, Value)>>,
    /// `status.images`, as last set by [`NodeAgent::set_images`].
    images: Mutex<Vec<Value>>,
    /// What the own-Node watch last saw.
    seen: Mutex<Seen>,
}

impl NodeAgent {
    pub fn new(cfg: NodeAgentConfig) -> Result<NodeAgent, NodeAgentError> {
        let mut client = HttpsClient::new(
            &ServerTrust::Ca(cfg.ca_pem.clone()),
            Some(&ClientIdentity {
                cert_pem: cfg.identity_cert_pem.clone(),
                key_pem: cfg.identity_key_pem.clone(),
            }),
            REQUEST_TIMEOUT,
        )?;
        if let Some(name) = &cfg.server_name {
            client = client.with_server_name(name);
        }
        if let Some(slot) = &cfg.identity_slot {
            client = client.with_client_cert_slot(slot.clone());
        }
        // Kept-alive connections: a heartbeat is no TCP + TLS handshake (with client-certificate
        // verification on the server) when a connection is still open. Every request the agent
        // sends may be repeated on a fresh connection when a reused one fails: Lease and status
        // writes are merge patches of absolute values, creations answer 409 the second time.
        // Not with a renewable identity: a kept connection would go on presenting the
        // certificate it was opened with after the slot holds a renewed one.
        if cfg.identity_slot.is_none() {
            client = client.with_keep_alive();
        }
        Ok(NodeAgent {
            api: Api {
                client,
                base: cfg.api_url.trim_end_matches('/').to_string(),
            },
            cfg,
            reported: Mutex::new(None),
            images: Mutex::new(Vec::new()),
            seen: Mutex::new(Seen::Unknown),
        })
    }

    /// Sets the images reported in `status.images` (names and size, as a kubelet lists what the
    /// runtime holds); a change is written at the next heartbeat.
    pub fn set_images(&self, images: &[(String, u64)]) {
        let images = images
            .iter()
            .map(|(name, size)| json!({"names": [name], "sizeBytes": size}))
            .collect();
        *self.images.lock().unwrap_or_else(|e| e.into_inner()) = images;
    }

    fn current_status(&self) -> Value {
        let images = self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.cfg.status(&images)
    }

    /// Whether the status must be written now: it changed since the last write, or that write
    /// is [`STATUS_REPORT_FREQUENCY`] old (or there was none).
    pub fn status_due(&self) -> bool {
        let status = self.current_status();
        match &*self.reported.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, last)) => *last != status || at.elapsed() >= STATUS_REPORT_FREQUENCY,
            None => true,
        }
    }

    fn seen(&self) -> Seen {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_seen(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }

    fn node_path(&self) -> String {
        format!("/api/v1/nodes/{}", self.cfg.node_name)
    }

    fn lease_path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
            self.cfg.node_name
        )
    }

    /// Creates the Node, or (on restart) re-applies labels and marks it Ready.
    pub async fn register(&self, first_start: bool) -> Result<(), NodeAgentError> {
        let resp = self
            .api
            .call(http::Method::GET, &self.node_path(), None, None)
            .await?;
        match resp.status {
            404 => {
                let images = self
                    .images
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let node = self.cfg.node_object(&images);
                let resp = self
                    .api
                    .call(
                        http::Method::POST,
                        "/api/v1/nodes",
                        Some("application/json"),
                        Some(node),
                    )
                    .await?;
                match resp.status {
                    201 | 200 => {
                        tracing::info!(component = "node-agent", node = %self.cfg.node_name, "registered node");
                    }
                    409 => {}
                    s => {
                        return Err(NodeAgentError::Api(format!(
                            "creating node: {s} {}",
                            resp.error_message()
                        )));
                    }
                }
                // Status is written through the status subresource like a kubelet does.
                self.patch_status().await
            }
            200 => {
                if first_start {
                    // node-label applies on every start (RKE2); taints only at creation.
                    let patch = json!({"metadata": {"labels": self.cfg.hostname_label_set(), "annotations": self.cfg.annotations}});
                    let resp = self
                        .api
                        .call(
                            http::Method::PATCH,
                            &self.node_path(),
                            Some("application/merge-patch+json"),
                            Some(patch),
                        )
                        .await?;
                    if !resp.is_success() {
                        return Err(NodeAgentError::Api(format!(
                            "labelling node: {} {}",
                            resp.status,
                            resp.error_message()
                        )));
                    }
                }
                self.patch_status().await
            }
            s => Err(NodeAgentError::Api(format!(
                "reading node: {s} {}",
                resp.error_message()
            ))),
        }
    }

    /// Writes the node's status (Ready, addresses, capacity) through the status subresource.
    pub async fn patch_status(&self) -> Result<(), NodeAgentError> {
        let status = self.current_status();
        let stamped = status_report(&status);
        let resp = self
            .api
            .call(
                http::Method::PATCH,
                &format!("{}/status", self.node_path()),
                Some("application/merge-patch+json"),
                Some(json!({"status": stamped})),
            )
            .await?;
        if resp.is_success() {
            *self.reported.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), status));
            Ok(())
        } else {
            Err(NodeAgentError::Api(format!(
                "updating node status: {} {}",
                resp.status,
                resp.error_message()
            )))
        }
    }

    /// Renews the Lease, creating it if needed.
    pub async fn renew_lease(&self) -> Result<(), NodeAgentError> {
        let patch = json!({"spec": {
            "holderIdentity": self.cfg.node_name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now_micro(),
        }});
        let resp = self
            .api
            .call(
                http::Method::PATCH,
                &self.lease_path(),
                Some("application/merge-patch+json"),
                Some(patch.clone()),
            )
            .await?;
        match resp.status {
            200 => Ok(()),
            404 => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.cfg.node_name, "namespace": "kube-node-lease"},
                    "spec": patch["spec"],
                });
                let resp = self
                    .api
                    .call(
                        http::Method::POST,
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                        Some("application/json"),
                        Some(lease),
                    )
                    .await?;
                if resp.is_success() || resp.status == 409 {
                    Ok(())
                } else {
                    Err(NodeAgentError::Api(format!(
                        "creating lease: {} {}",
                        resp.status,
                        resp.error_message()
                    )))
                }
            }
            s => Err(NodeAgentError::Api(format!(
                "renewing lease: {s} {}",
                resp.error_message()
            ))),
        }
    }

    /// One heartbeat: renew the Lease; re-register a deleted Node; restore Ready=True; write
    /// the status when it changed or the periodic report is due. The own-Node watch tells
    /// deletion and readiness; only while it has not (no watch open yet, or it failed) is the
    /// Node read, as before.
    async fn heartbeat(&self) -> Result<(), NodeAgentError> {
        self.renew_lease().await?;
        let seen = match self.seen() {
            Seen::Unknown => {
                let resp = self
                    .api
                    .call(http::Method::GET, &self.node_path(), None, None)
                    .await?;
                match resp.status {
                    404 => Seen::Deleted,
                    200 => Seen::Ready(
                        serde_json::from_slice::<Value>(&resp.body)
                            .is_ok_and(|node| node_is_ready(&node)),
                    ),
                    s => {
                        return Err(NodeAgentError::Api(format!(
                            "reading node: {s} {}",
                            resp.error_message()
                        )));
                    }
                }
            }
            seen => seen,
        };
        match seen {
            Seen::Deleted => {
                tracing::warn!(component = "node-agent", node = %self.cfg.node_name, "node object was deleted; registering again");
                self.register(false).await
            }
            Seen::Ready(false) => {
                tracing::info!(component = "node-agent", node = %self.cfg.node_name, "marking node Ready again");
                self.patch_status().await
            }
            Seen::Ready(true) | Seen::Unknown if self.status_due() => self.patch_status().await,
            Seen::Ready(true) | Seen::Unknown => Ok(()),
        }
    }

    /// Registers and then heartbeats until `cancel`. `registered` turns true once the Node and
    /// Lease exist; `ticker` proves progress to the watchdog. A watch on the own Node cuts the
    /// wait short when the Node is deleted, so it is registered again within a second rather
    /// than at the next heartbeat.
    pub async fn run(
        self,
        registered: watch::Sender<bool>,
        ticker: LoopTicker,
        cancel: CancellationToken,
    ) {
        let deleted = Notify::new();
        tokio::select! {
            _ = self.heartbeat_loop(registered, ticker, &deleted, &cancel) => {}
            _ = self.watch_loop(&deleted, &cancel) => {}
        }
    }

    /// Watches the own Node until `cancel`, waking `deleted` on every DELETED event. Between
    /// watches what it saw is forgotten (`Seen::Unknown`), so the heartbeat reads the Node.
    async fn watch_loop(&self, deleted: &Notify, cancel: &CancellationToken) {
        loop {
            let result = self.watch_own_node(deleted, cancel).await;
            self.set_seen(Seen::Unknown);
            let pause = match result {
                Ok(()) => REWATCH_INTERVAL,
                Err(e) => {
                    tracing::debug!(component = "node-agent", node = %self.cfg.node_name, "watching the node: {e}");
                    REWATCH_INTERVAL.max(self.cfg.heartbeat_interval)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One watch request on the own Node; returns when the server ends it or on `cancel`.
    async fn watch_own_node(
        &self,
        deleted: &Notify,
        cancel: &CancellationToken,
    ) -> Result<(), NodeAgentError> {
        let url = format!(
            "{}/api/v1/nodes?watch=true&fieldSelector=metadata.name%3D{}",
            self.api.base, self.cfg.node_name
        );
        let headers = [("accept", "application/json".to_string())];
        let (status, mut body) = self
            .api
            .client
            .stream(http::Method::GET, &url, &headers)
            .await?;
        if status != 200 {
            return Err(NodeAgentError::Api(format!("watching node: HTTP {status}")));
        }
        let mut lines = LineSplitter::default();
        loop {
            let frame = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                frame = body.frame() => frame,
            };
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|e| NodeAgentError::Api(format!("watching node: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            lines.push(&data);
            // One JSON event per line.
            while let Some(line) = lines.next_line() {
                let line = line.map_err(|e| NodeAgentError::Api(format!("watching node: {e}")))?;
                let seen = seen_in_event(line);
                if seen == Some(Seen::Deleted) {
                    tracing::info!(component = "node-agent", node = %self.cfg.node_name, "node object deleted; registering again now");
                    deleted.notify_one();
                }
                if let Some(seen) = seen {
                    self.set_seen(seen);
                }
            }
        }
    }

    /// The heartbeat part of [`NodeAgent::run`].
    async fn heartbeat_loop(
        &self,
        registered: watch::Sender<bool>,
        ticker: LoopTicker,
        deleted: &Notify,
        cancel: &CancellationToken,
    ) {
        let mut first = true;
        let mut failures = 0u32;
        loop {
            ticker.tick();
            let result = if first || !*registered.borrow() {
                match self.register(first).await {
                    Ok(()) => self.renew_lease().await,
                    Err(e) => Err(e),
                }
            } else {
                self.heartbeat().await
            };
            let wait = match result {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(component = "node-agent", node = %self.cfg.node_name, "API reachable again after {failures} failed attempts");
                    }
                    failures = 0;
                    first = false;
                    let _ = registered.send(true);
                    self.cfg.heartbeat_interval
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(component = "node-agent", node = %self.cfg.node_name, "heartbeat failed: {e}");
                    }
                    RETRY_INTERVAL.min(self.cfg.heartbeat_interval)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = deleted.notified() => {}
            }
        }
    }
}

/// What one line of the own-Node watch says about the Node: deleted, or present and Ready or
/// not; `None` for bookmarks, errors and lines that are no event.
fn seen_in_event(line: &[u8]) -> Option<Seen> {
    let event = serde_json::from_slice::<Value>(line).ok()?;
    match event["type"].as_str()? {
        "DELETED" => Some(Seen::Deleted),
        "ADDED" | "MODIFIED" => Some(Seen::Ready(node_is_ready(&event["object"]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_events_tell_deletion_and_readiness() {
        assert_eq!(
            seen_in_event(br#"{"type":"DELETED","object":{"metadata":{"name":"a1"}}}"#),
            Some(Seen::Deleted)
        );
        let ready = br#"{"type":"MODIFIED","object":{"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}}}"#;
        assert_eq!(seen_in_event(ready), Some(Seen::Ready(true)));
        let unknown = br#"{"type":"MODIFIED","object":{"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}}}"#;
        assert_eq!(seen_in_event(unknown), Some(Seen::Ready(false)));
        // A freshly created Node without status is not Ready yet.
        assert_eq!(
            seen_in_event(br#"{"type":"ADDED","object":{}}"#),
            Some(Seen::Ready(false))
        );
        assert_eq!(
            seen_in_event(br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#),
            None
        );
        assert_eq!(seen_in_event(b"not json"), None);
    }

    fn agent() -> NodeAgent {
        let ca = crate::pki::CertAuthority::generate("test").unwrap();
        let (cert, key) = ca
            .issue_with_new_key(&crate::pki::LeafSpec::client(
                "system:node:n1",
                &["system:nodes"],
            ))
            .unwrap();
        NodeAgent::new(NodeAgentConfig {
            node_name: "n1".into(),
            api_url: "https://127.0.0.1:6443".into(),
            ca_pem: cert.clone(),
            identity_cert_pem: cert,
            identity_key_pem: key,
            identity_slot: None,
            server_name: None,
            labels: vec![],
            taints: vec![],
            annotations: BTreeMap::new(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
            heartbeat_interval: Duration::from_secs(10),
        })
        .unwrap()
    }

    #[test]
    fn status_reports_leave_the_runtime_version_to_the_runtime() {
        let status = agent().current_status();
        assert_eq!(status["nodeInfo"]["containerRuntimeVersion"], "");
        let report = status_report(&status);
        assert!(
            report["nodeInfo"].get("containerRuntimeVersion").is_none(),
            "{report}"
        );
        assert!(report["nodeInfo"]["kubeletVersion"].is_string(), "{report}");
        assert!(
            report["conditions"][0]["lastHeartbeatTime"].is_string(),
            "{report}"
        );
    }

    #[test]
    fn status_is_written_on_change_and_periodically() {
        let agent = agent();
        // Never written: due.
        assert!(agent.status_due());
        *agent.reported.lock().unwrap() = Some((Instant::now(), agent.current_status()));
        // Unchanged (the compared status has no timestamps): not due.
        assert!(!agent.status_due());
        agent.set_images(&[("registry.k8s.io/pause:3.10".into(), 321_000)]);
        assert!(agent.status_due());
        *agent.reported.lock().unwrap() = Some((Instant::now(), agent.current_status()));
        assert!(!agent.status_due());
        // Unchanged but the last report is older than the report frequency: due.
        let old = Instant::now()
            .checked_sub(STATUS_REPORT_FREQUENCY)
            .expect("the clock is past the report frequency");
        *agent.reported.lock().unwrap() = Some((old, agent.current_status()));
        assert!(agent.status_due());
    }
}
