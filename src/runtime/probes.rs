//! Container probes like the kubelet's (docs/workloads.md): startup, liveness and readiness
//! probes, each an `exec` (CRI ExecSync in the container), an `httpGet` (to the pod IP, any
//! status in 200..400 passes), a `tcpSocket` (a connection opens) or a `grpc` (the
//! grpc.health.v1 `Check` call on the pod IP answers `SERVING`). Timing follows upstream:
//! nothing is probed before `initialDelaySeconds` after the container started, then every
//! `periodSeconds` (default 10) with a `timeoutSeconds` deadline (default 1); a result flips
//! after `successThreshold` consecutive passes (default 1) or `failureThreshold` consecutive
//! failures (default 3). Until a startup probe has passed, the others do not run and the
//! container is neither started nor ready; readiness starts out failed; a failed liveness (or
//! startup) probe means the container is killed and restarted by its restart policy.
//!
//! This module keeps the per-container bookkeeping ([`ContainerProbes`]) and runs one probe
//! ([`run`]); the pod worker (crate::runtime::kubelet) decides when and acts on the verdicts.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::cri::Cri;
use crate::https::{HttpsClient, ServerTrust};

/// The grpc.health.v1 client (generated from proto/grpc/health/v1/health.proto by build.rs).
#[allow(clippy::all, clippy::pedantic)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// The user agent of HTTP and gRPC probes, as the kubelet's ("kube-probe/<major>.<minor>").
const PROBE_USER_AGENT: &str = "kube-probe/1.33";

/// The three probes of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// The word upstream uses in events ("Liveness probe failed: ...").
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    pub fn of(self, c: &core::Container) -> Option<&core::Probe> {
        match self {
            ProbeKind::Startup => c.startup_probe.as_ref(),
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// A probe's timing and thresholds with upstream's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Settings {
    pub fn of(p: &core::Probe) -> Settings {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        Settings {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// One probe's consecutive results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    /// The settled result: `None` until a threshold was first reached.
    pub result: Option<bool>,
}

impl Counter {
    /// Whether the probe should run now, for a container running for `running_for`.
    pub fn due(&self, set: &Settings, running_for: Duration, now: Instant) -> bool {
        running_for >= set.initial_delay
            && self
                .last_run
                .is_none_or(|t| now.saturating_duration_since(t) >= set.period)
    }

    /// Records one outcome; the result flips only when a threshold is reached.
    pub fn record(&mut self, ok: bool, set: &Settings, now: Instant) {
        self.last_run = Some(now);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= set.success_threshold {
                self.result = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= set.failure_threshold {
                self.result = Some(false);
            }
        }
    }
}

/// The probes of one running container (one container ID: a restart starts afresh).
#[derive(Debug, Clone, Default)]
pub struct ContainerProbes {
    pub container_id: String,
    pub startup: Counter,
    pub liveness: Counter,
    pub readiness: Counter,
}

impl ContainerProbes {
    pub fn new(container_id: &str) -> ContainerProbes {
        ContainerProbes {
            container_id: container_id.to_string(),
            ..Default::default()
        }
    }

    pub fn counter(&mut self, kind: ProbeKind) -> &mut Counter {
        match kind {
            ProbeKind::Startup => &mut self.startup,
            ProbeKind::Liveness => &mut self.liveness,
            ProbeKind::Readiness => &mut self.readiness,
        }
    }

    /// `containerStatuses[].started`: no startup probe, or it has passed.
    pub fn started(&self, c: &core::Container) -> bool {
        c.startup_probe.is_none() || self.startup.result == Some(true)
    }

    /// `containerStatuses[].ready`: started, and no readiness probe or it passes.
    pub fn ready(&self, c: &core::Container) -> bool {
        self.started(c) && (c.readiness_probe.is_none() || self.readiness.result == Some(true))
    }

    /// The probes to run now: the startup probe until it passed, then liveness and readiness.
    pub fn due(&self, c: &core::Container, running_for: Duration, now: Instant) -> Vec<ProbeKind> {
        let kinds: &[ProbeKind] = if self.started(c) {
            &[ProbeKind::Liveness, ProbeKind::Readiness]
        } else {
            &[ProbeKind::Startup]
        };
        kinds
            .iter()
            .copied()
            .filter(|k| {
                let counter = match k {
                    ProbeKind::Startup => &self.startup,
                    ProbeKind::Liveness => &self.liveness,
                    ProbeKind::Readiness => &self.readiness,
                };
                k.of(c)
                    .is_some_and(|p| counter.due(&Settings::of(p), running_for, now))
            })
            .collect()
    }

    /// The probe whose failure means the container must be restarted, if any.
    pub fn failed_fatally(&self) -> Option<ProbeKind> {
        if self.startup.result == Some(false) {
            Some(ProbeKind::Startup)
        } else if self.liveness.result == Some(false) {
            Some(ProbeKind::Liveness)
        } else {
            None
        }
    }
}

/// Where a probe goes.
pub struct Target<'a> {
    pub cri: &'a Cri,
    pub container_id: &'a str,
    /// The pod IP (the host IP for hostNetwork pods): httpGet's and tcpSocket's default host.
    pub host: &'a str,
    pub container: &'a core::Container,
}

/// The number behind a probe's `port` (a number or the name of one of the container's ports).
pub fn resolve_port(port: &IntOrString, c: &core::Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("port \"{s}\" names none of the container's ports"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port {n}"))
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Runs one probe; `Err` carries the failure message shown in the `Unhealthy` event.
pub async fn run(p: &core::Probe, t: &Target<'_>) -> Result<(), String> {
    let timeout = Settings::of(p).timeout;
    if let Some(exec) = &p.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        // ExecSync enforces the timeout in the runtime; the outer one covers a stuck call.
        let r = tokio::time::timeout(
            timeout + Duration::from_secs(2),
            t.cri
                .exec_sync(t.container_id, cmd.clone(), timeout.as_secs() as i64),
        )
        .await
        .map_err(|_| format!("command {cmd:?} timed out after {}s", timeout.as_secs()))?
        .map_err(|e| e.to_string())?;
        if r.exit_code == 0 {
            return Ok(());
        }
        let output =
            String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
        return Err(format!(
            "command {cmd:?} exited with {}: {}",
            r.exit_code,
            output.trim()
        ));
    }
    if let Some(tcp) = &p.tcp_socket {
        let port = resolve_port(&tcp.port, t.container)?;
        let host = tcp.host.as_deref().unwrap_or(t.host);
        let addr = host_port(host, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if let Some(h) = &p.http_get {
        let port = resolve_port(&h.port, t.container)?;
        let host = h.host.as_deref().unwrap_or(t.host);
        let path = h.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.to_ascii_lowercase(), x.value.clone()))
            .collect();
        let https = h.scheme.as_deref() == Some("HTTPS");
        let url = format!(
            "{}://{}{path}",
            if https { "https" } else { "http" },
            host_port(host, port)
        );
        let status = tokio::time::timeout(timeout, http_get(&url, https, &headers, timeout))
            .await
            .map_err(|_| {
                format!(
                    "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )
            })??;
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        };
    }
    if let Some(g) = &p.grpc {
        let port = u16::try_from(g.port)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port {}", g.port))?;
        let service = g.service.clone().unwrap_or_default();
        return grpc_check(&host_port(t.host, port), &service, timeout).await;
    }
    Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

/// A grpc.health.v1 `Check` of `service` at `addr` (plaintext, like the kubelet's), with
/// upstream's failure messages: the connection and the call each get `timeout`.
pub async fn grpc_check(addr: &str, service: &str, timeout: Duration) -> Result<(), String> {
    use health::health_check_response::ServingStatus;
    let secs = timeout.as_secs();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(PROBE_USER_AGENT))
        .map_err(|e| format!("error: failed to connect service at \"{addr}\": {e}"))?
        .connect_timeout(timeout);
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(format!(
                "error: failed to connect service at \"{addr}\": {}",
                error_chain(&e)
            ));
        }
        Err(_) => {
            return Err(format!(
                "timeout: failed to connect service \"{addr}\" within {secs}s: context deadline exceeded"
            ));
        }
    };
    let mut client = health::health_client::HealthClient::new(channel);
    let request = health::HealthCheckRequest {
        service: service.to_string(),
    };
    let response = match tokio::time::timeout(timeout, client.check(request)).await {
        Err(_) => {
            return Err(format!(
                "timeout: health rpc did not complete within {secs}s"
            ));
        }
        Ok(Err(status)) => {
            return Err(match status.code() {
                tonic::Code::Unimplemented => format!(
                    "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    status.message()
                ),
                tonic::Code::DeadlineExceeded => {
                    format!("timeout: health rpc did not complete within {secs}s")
                }
                code => format!(
                    "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                    status.message()
                ),
            });
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "service unhealthy (responded with \"{}\")",
            other.as_str_name()
        )),
        Err(_) => Err(format!(
            "service unhealthy (responded with \"{}\")",
            response.status
        )),
    }
}

/// An error and its sources, `: `-joined (tonic's transport error says little by itself).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A GET returning the status code. HTTPS probes do not verify the certificate, as upstream's.
async fn http_get(
    url: &str,
    https: bool,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<u16, String> {
    let user_agent = ("user-agent".to_string(), PROBE_USER_AGENT.to_string());
    let has_agent = headers.iter().any(|(k, _)| k == "user-agent");
    let mut all: Vec<(&str, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    if !has_agent {
        all.push((user_agent.0.as_str(), user_agent.1.clone()));
    }
    if https {
        let client = HttpsClient::new(&ServerTrust::InsecureForCaFetch, None, timeout)
            .map_err(|e| e.to_string())?;
        let r = client
            .request(http::Method::GET, url, &all, None)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        return Ok(r.status);
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    // The connection task ends with the response (or with the timeout dropping `sender`).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, &authority);
    for (k, v) in &all {
        req = req.header(*k, v);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> core::Container {
        serde_json::from_value(v).unwrap()
    }

    fn probe(v: serde_json::Value) -> core::Probe {
        serde_json::from_value(v).unwrap()
    }

    /// A CRI client nobody answers: network probes never use it.
    fn no_cri() -> Cri {
        Cri::connect(std::path::Path::new("/nonexistent/cri.sock")).unwrap()
    }

    /// Probes of container `c` whose host is 127.0.0.1.
    fn loopback_target<'a>(cri: &'a Cri, c: &'a core::Container) -> Target<'a> {
        Target {
            cri,
            container_id: "x",
            host: "127.0.0.1",
            container: c,
        }
    }

    #[test]
    fn settings_take_upstream_defaults() {
        let s = Settings::of(&core::Probe::default());
        assert_eq!(
            s,
            Settings {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let p: core::Probe = serde_json::from_value(json!({"periodSeconds": 0,
            "initialDelaySeconds": 5, "failureThreshold": 1, "successThreshold": 2}))
        .unwrap();
        let s = Settings::of(&p);
        assert_eq!(s.period, Duration::from_secs(1));
        assert_eq!(s.initial_delay, Duration::from_secs(5));
        assert_eq!((s.success_threshold, s.failure_threshold), (2, 1));
    }

    #[test]
    fn results_flip_only_at_the_thresholds() {
        let set = Settings {
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 3,
        };
        let t0 = Instant::now();
        let mut c = Counter::default();
        assert!(!c.due(&set, Duration::from_secs(4), t0));
        assert!(c.due(&set, Duration::from_secs(5), t0));
        c.record(true, &set, t0);
        assert_eq!(c.result, None);
        assert!(!c.due(&set, Duration::from_secs(6), t0 + Duration::from_secs(1)));
        assert!(c.due(&set, Duration::from_secs(7), t0 + Duration::from_secs(2)));
        c.record(true, &set, t0 + Duration::from_secs(2));
        assert_eq!(c.result, Some(true));
        // Two failures keep the last result, the third flips it.
        for i in 0..2 {
            c.record(false, &set, t0);
            assert_eq!(c.result, Some(true), "failure {i}");
        }
        c.record(false, &set, t0);
        assert_eq!(c.result, Some(false));
        // A single pass is not enough to recover with successThreshold 2.
        c.record(true, &set, t0);
        assert_eq!(c.result, Some(false));
        c.record(true, &set, t0);
        assert_eq!(c.result, Some(true));
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        let c = container(json!({"name": "c",
            "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 1},
            "livenessProbe": {"tcpSocket": {"port": 80}},
            "readinessProbe": {"httpGet": {"port": "web"}}}));
        let now = Instant::now();
        let mut p = ContainerProbes::new("id1");
        assert!(!p.started(&c) && !p.ready(&c));
        assert_eq!(p.due(&c, Duration::ZERO, now), [ProbeKind::Startup]);
        p.counter(ProbeKind::Startup).record(
            true,
            &Settings::of(c.startup_probe.as_ref().unwrap()),
            now,
        );
        assert!(p.started(&c));
        // Readiness starts out failed until its probe passes.
        assert!(!p.ready(&c));
        assert_eq!(
            p.due(&c, Duration::ZERO, now),
            [ProbeKind::Liveness, ProbeKind::Readiness]
        );
        p.counter(ProbeKind::Readiness).record(
            true,
            &Settings::of(c.readiness_probe.as_ref().unwrap()),
            now,
        );
        assert!(p.ready(&c));
        assert_eq!(p.failed_fatally(), None);
        let mut q = ContainerProbes::new("id2");
        q.counter(ProbeKind::Startup).record(
            false,
            &Settings::of(c.startup_probe.as_ref().unwrap()),
            now,
        );
        assert_eq!(q.failed_fatally(), Some(ProbeKind::Startup));
        // Without probes a running container is started and ready at once.
        let plain = container(json!({"name": "c"}));
        let r = ContainerProbes::new("id3");
        assert!(r.started(&plain) && r.ready(&plain));
        assert!(r.due(&plain, Duration::ZERO, now).is_empty());
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c = container(json!({"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}));
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert_eq!(
            resolve_port(&IntOrString::String("web".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("8081".into()), &c),
            Ok(8081)
        );
        let e = resolve_port(&IntOrString::String("nope".into()), &c).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }

    /// httpGet and tcpSocket against real local listeners: 2xx/3xx pass, 5xx and refused
    /// connections fail with upstream's messages.
    #[tokio::test]
    async fn http_and_tcp_probes_hit_real_sockets() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let status = if req.starts_with("GET /healthz ") && req.contains("x-probe: yes") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let cri = no_cri();
        let c = container(json!({"name": "c", "ports": [{"name": "http", "containerPort": port}]}));
        let target = loopback_target(&cri, &c);
        let ok = probe(json!({"httpGet": {"path": "/healthz", "port": "http",
            "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}));
        assert_eq!(run(&ok, &target).await, Ok(()));
        let bad = probe(json!({"httpGet": {"path": "/other", "port": port}}));
        assert_eq!(
            run(&bad, &target).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
        assert_eq!(
            run(&probe(json!({"tcpSocket": {"port": port}})), &target).await,
            Ok(())
        );
        server.abort();
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = run(&probe(json!({"tcpSocket": {"port": closed_port}})), &target)
            .await
            .unwrap_err();
        assert!(e.starts_with("dial tcp 127.0.0.1:"), "{e}");
        assert!(
            run(&probe(json!({})), &target)
                .await
                .unwrap_err()
                .contains("no handler")
        );
    }

    /// gRPC probes against a real grpc.health.v1 server (tonic-health): SERVING passes,
    /// NOT_SERVING, an unknown service and a closed port fail with upstream's messages.
    #[tokio::test]
    async fn grpc_probes_follow_the_health_service() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("app", tonic_health::ServingStatus::NotServing)
            .await;
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = incoming.local_addr().unwrap().port();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        let cri = no_cri();
        let c = container(json!({"name": "c"}));
        let target = loopback_target(&cri, &c);
        let app = probe(json!({"grpc": {"port": port, "service": "app"}}));
        assert_eq!(
            run(&app, &target).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        reporter
            .set_service_status("app", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(run(&app, &target).await, Ok(()));
        // No service: the server's overall health, SERVING by default.
        assert_eq!(
            run(&probe(json!({"grpc": {"port": port}})), &target).await,
            Ok(())
        );
        let e = run(
            &probe(json!({"grpc": {"port": port, "service": "other"}})),
            &target,
        )
        .await
        .unwrap_err();
        assert!(
            e.starts_with("error: health rpc probe failed: rpc error: code = NotFound"),
            "{e}"
        );
        server.abort();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = run(&probe(json!({"grpc": {"port": closed_port}})), &target)
            .await
            .unwrap_err();
        assert!(
            e.starts_with(&format!(
                "error: failed to connect service at \"127.0.0.1:{closed_port}\": "
            )),
            "{e}"
        );
    }
}
