//! Container logs: the node's kubelet HTTPS API on 10250 (`/containerLogs/<ns>/<pod>/<container>`
//! with `follow`, `previous`, `tailLines`, `sinceSeconds`, `timestamps`), served with the node's
//! serving-kubelet certificate to the API server's kubelet client certificate only, and the API
//! server's side of `pods/log`, which finds the pod's node and proxies the request there.
//! Containers write CRI-format logs (`<RFC3339Nano> <stream> <P|F> <text>`; P marks a partial
//! line continued by the next record).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cri::{Cri, v1};
use super::podspec;
use crate::https::{ClientIdentity, ConnInfo, HttpsClient, ServerTrust};

/// The kubelet API port (upstream's default; Node `daemonEndpoints.kubeletEndpoint.Port`).
pub const KUBELET_PORT: u16 = 10250;
/// The identity the API server presents to kubelets.
pub const APISERVER_KUBELET_CLIENT: &str = "system:kube-apiserver";
/// How often a followed log is checked for new data.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Options of a log request (upstream's PodLogOptions subset).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub since_seconds: Option<i64>,
}

impl LogOptions {
    pub fn from_query(q: &HashMap<String, String>) -> Result<LogOptions, String> {
        let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
        let num = |k: &str| -> Result<Option<i64>, String> {
            q.get(k)
                .map(|v| {
                    v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        format!("{k}: invalid value \"{v}\": must be a non-negative integer")
                    })
                })
                .transpose()
        };
        Ok(LogOptions {
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            tail_lines: num("tailLines")?.map(|n| n as usize),
            since_seconds: num("sinceSeconds")?,
        })
    }

    fn query(&self) -> String {
        let mut q = vec![
            format!("follow={}", self.follow),
            format!("previous={}", self.previous),
            format!("timestamps={}", self.timestamps),
        ];
        if let Some(n) = self.tail_lines {
            q.push(format!("tailLines={n}"));
        }
        if let Some(s) = self.since_seconds {
            q.push(format!("sinceSeconds={s}"));
        }
        q.join("&")
    }
}

/// One complete log line (partial records joined).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub time: String,
    pub text: String,
}

/// Parses CRI log records into lines; an unfinished partial line at the end stays in `pending`.
pub fn parse_records(data: &str, pending: &mut Option<LogLine>) -> Vec<LogLine> {
    let mut out = Vec::new();
    for record in data.lines() {
        let mut parts = record.splitn(4, ' ');
        let (Some(time), Some(_stream), Some(tag), text) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let text = text.unwrap_or("");
        let line = pending.get_or_insert_with(|| LogLine {
            time: time.to_string(),
            text: String::new(),
        });
        line.text.push_str(text);
        if tag != "P" {
            out.extend(pending.take());
        }
    }
    out
}

/// Renders the lines the options select (sinceSeconds relative to `now`).
pub fn render(lines: &[LogLine], opts: &LogOptions, now: DateTime<Utc>) -> String {
    let since = opts
        .since_seconds
        .map(|s| now - chrono::Duration::seconds(s));
    let selected: Vec<&LogLine> = lines
        .iter()
        .filter(|l| {
            since.is_none_or(|since| {
                DateTime::parse_from_rfc3339(&l.time).is_ok_and(|t| t.with_timezone(&Utc) >= since)
            })
        })
        .collect();
    let start = opts
        .tail_lines
        .map(|n| selected.len().saturating_sub(n))
        .unwrap_or(0);
    let mut out = String::new();
    for l in &selected[start..] {
        if opts.timestamps {
            out.push_str(&l.time);
            out.push(' ');
        }
        out.push_str(&l.text);
        out.push('\n');
    }
    out
}

fn status(code: StatusCode, message: &str) -> Response {
    crate::https::status_response(code, code.canonical_reason().unwrap_or(""), message)
}

/// The refusal of a kubelet API request from anyone but the API server, which authorised the
/// user already (`what` names the action in the message).
pub(super) fn refuse_unless_apiserver(conn: &ConnInfo, what: &str) -> Option<Response> {
    let allowed = conn
        .identity
        .as_ref()
        .is_some_and(|id| id.user == APISERVER_KUBELET_CLIENT);
    (!allowed).then(|| {
        status(
            StatusCode::FORBIDDEN,
            &format!("only the API server may {what}"),
        )
    })
}

struct KubeletApi {
    cri: Cri,
}

/// The pod's newest sandbox on this node.
pub(super) async fn find_sandbox(
    cri: &Cri,
    ns: &str,
    pod: &str,
) -> Result<v1::PodSandbox, Response> {
    let sandboxes = cri
        .list_sandboxes()
        .await
        .map_err(|e| status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    sandboxes
        .into_iter()
        .filter(|s| {
            s.labels.get(podspec::POD_NAMESPACE).map(String::as_str) == Some(ns)
                && s.labels.get(podspec::POD_NAME).map(String::as_str) == Some(pod)
        })
        .max_by_key(|s| s.created_at)
        .ok_or_else(|| {
            status(
                StatusCode::NOT_FOUND,
                &format!("pod \"{pod}\" in namespace \"{ns}\" has no sandbox on this node"),
            )
        })
}

/// The ID of the container's current attempt, when it runs (sessions need a running one).
pub(super) async fn find_container(
    cri: &Cri,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, Response> {
    let (_, id) = find_log(cri, ns, pod, container, false).await?;
    let st = cri
        .container_status(&id)
        .await
        .map_err(|e| status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    if st.state != v1::ContainerState::ContainerRunning as i32 {
        return Err(status(
            StatusCode::BAD_REQUEST,
            &format!("container \"{container}\" in pod \"{pod}\" is not running"),
        ));
    }
    Ok(id)
}

/// The log file of the container's current (or previous) attempt, and that attempt's ID.
async fn find_log(
    cri: &Cri,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, String), Response> {
    let sb = find_sandbox(cri, ns, pod).await?;
    let mut attempts: Vec<v1::Container> = cri
        .list_containers(Some(&sb.id))
        .await
        .map_err(|e| status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?
        .into_iter()
        .filter(|c| c.metadata.as_ref().map(|m| m.name.as_str()) == Some(container))
        .collect();
    attempts
        .sort_by_key(|c| std::cmp::Reverse(c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0)));
    let pick = if previous {
        attempts.get(1)
    } else {
        attempts.first()
    };
    let Some(c) = pick else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start")
        };
        return Err(status(StatusCode::BAD_REQUEST, &msg));
    };
    let st = cri
        .container_status(&c.id)
        .await
        .map_err(|e| status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    Ok((PathBuf::from(st.log_path), c.id.clone()))
}

async fn container_logs(
    State(api): State<Arc<KubeletApi>>,
    Extension(conn): Extension<ConnInfo>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refusal) = refuse_unless_apiserver(&conn, "read container logs") {
        return refusal;
    }
    let opts = match LogOptions::from_query(&q) {
        Ok(o) => o,
        Err(e) => return status(StatusCode::BAD_REQUEST, &e),
    };
    let (path, id) = match find_log(&api.cri, &ns, &pod, &container, opts.previous).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("{}: {e}", path.display()),
            );
        }
    };
    let mut pending = None;
    let text = String::from_utf8_lossy(&data);
    let lines = parse_records(&text, &mut pending);
    let first = render(&lines, &opts, Utc::now());
    let headers = [(axum::http::header::CONTENT_TYPE, "text/plain")];
    if !opts.follow {
        return (headers, first).into_response();
    }
    // Follow: the rest of the file as it grows, until the container has exited and all of it
    // was sent.
    let cri = api.cri.clone();
    let mut offset = data.len() as u64;
    let stream = async_stream(first, move |tx| async move {
        let mut pending = pending;
        loop {
            let running = cri
                .container_status(&id)
                .await
                .map(|s| s.state == v1::ContainerState::ContainerRunning as i32)
                .unwrap_or(false);
            if let Ok(mut f) = tokio::fs::File::open(&path).await
                && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
            {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                    // Only whole records; a half-written one is read again next time.
                    let end = buf
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map(|i| i + 1)
                        .unwrap_or(0);
                    offset += end as u64;
                    let lines = parse_records(&String::from_utf8_lossy(&buf[..end]), &mut pending);
                    let opts = LogOptions {
                        tail_lines: None,
                        since_seconds: None,
                        ..opts.clone()
                    };
                    let chunk = render(&lines, &opts, Utc::now());
                    if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                        return;
                    }
                    if end > 0 {
                        continue;
                    }
                }
            }
            if !running {
                return;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    (headers, stream).into_response()
}

/// A streaming body: `first`, then what `produce` sends until it returns.
fn async_stream<F, Fut>(first: String, produce: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    let _ = tx.try_send(first);
    tokio::spawn(produce(tx));
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|s| Ok::<_, std::io::Error>(bytes::Bytes::from(s))))
    });
    Body::from_stream(stream)
}

/// TLS material of the node's kubelet API.
#[derive(Debug, Clone)]
pub struct KubeletTls {
    pub cert_pem: String,
    pub key_pem: String,
    /// CA of the clients (the cluster's client CA, which signs the API server's certificate).
    pub client_ca_pem: String,
}

/// Serves the kubelet API on `addr` until `cancel`.
pub async fn serve(
    addr: std::net::SocketAddr,
    tls: KubeletTls,
    cri: Cri,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), String> {
    let config = crate::https::server_config(&tls.cert_pem, &tls.key_pem, Some(&tls.client_ca_pem))
        .map_err(|e| format!("kubelet API TLS: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("kubelet API: binding {addr}: {e}"))?;
    let router = Router::new()
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            axum::routing::get(container_logs),
        )
        .with_state(Arc::new(KubeletApi { cri: cri.clone() }))
        .merge(super::streaming::routes(cri, cancel.clone()));
    tracing::info!(component = "kubelet", "kubelet API listening on {addr}");
    tracker.spawn(crate::https::serve(
        listener, config, router, cancel, "kubelet",
    ));
    Ok(())
}

/// What the API server needs to reach kubelets.
#[derive(Debug, Clone)]
pub struct KubeletClient {
    pub cert_pem: String,
    pub key_pem: String,
    /// The kubelet serving CA, the only CA kubelet certificates are trusted from.
    pub serving_ca: PathBuf,
}

/// The API server's kubelet client certificate, issued in memory from the cluster client CA
/// (kubelets trust that CA for clients and accept only this name for logs).
pub fn apiserver_kubelet_client(ctx: &crate::cluster::context::Ctx) -> Option<KubeletClient> {
    let spec = crate::pki::LeafSpec::client(APISERVER_KUBELET_CLIENT, &[]);
    match ctx.client_ca.issue_with_new_key(&spec) {
        Ok((cert_pem, key_pem)) => Some(KubeletClient {
            cert_pem,
            key_pem,
            serving_ca: ctx.paths.kubelet_serving_ca().cert,
        }),
        Err(e) => {
            tracing::warn!(component = "apiserver", "kubelet client certificate: {e}");
            None
        }
    }
}

/// The pod's namespace and name.
pub fn pod_ref(pod: &serde_json::Value) -> (&str, &str) {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let name = pod
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    (ns, name)
}

/// The container a request names, or the pod's only one; `Err` is a 400 message.
pub fn pick_container(pod: &serde_json::Value, requested: Option<&str>) -> Result<String, String> {
    let (_, name) = pod_ref(pod);
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(|c| c.as_array())
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    match requested {
        Some(c) if containers.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(format!("container {c} is not valid for pod {name}")),
        None if containers.len() == 1 => Ok(containers[0].to_string()),
        None => Err(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        )),
    }
}

/// A client for the kubelet API of `node` (its InternalIP and kubelet port, its serving
/// certificate verified for the node name) and that API's base URL.
pub async fn kubelet_https(
    client: &KubeletClient,
    node: &serde_json::Value,
) -> Result<(HttpsClient, String), (u16, String)> {
    let node_name = node
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let ip = node
        .pointer("/status/addresses")
        .and_then(|a| a.as_array())
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| (500, format!("node {node_name} has no InternalIP")))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(|p| p.as_u64())
        .unwrap_or(u64::from(KUBELET_PORT));
    let ca = tokio::fs::read_to_string(&client.serving_ca)
        .await
        .map_err(|e| (500, format!("{}: {e}", client.serving_ca.display())))?;
    let https = HttpsClient::new(
        &ServerTrust::Ca(ca),
        Some(&ClientIdentity {
            cert_pem: client.cert_pem.clone(),
            key_pem: client.key_pem.clone(),
        }),
        Duration::from_secs(10),
    )
    .map_err(|e| (500, e.to_string()))?
    .with_server_name(node_name);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Ok((https, format!("https://{host}:{port}")))
}

/// The API server's `pods/log`: finds the pod's node and its kubelet endpoint, and streams the
/// kubelet's answer back.
pub async fn proxy(
    client: &KubeletClient,
    pod: &serde_json::Value,
    node: &serde_json::Value,
    query: &HashMap<String, String>,
) -> Result<Response, (u16, String)> {
    let (ns, name) = pod_ref(pod);
    let container =
        pick_container(pod, query.get("container").map(String::as_str)).map_err(|e| (400, e))?;
    let opts = LogOptions::from_query(query).map_err(|e| (400, e))?;
    let (https, base) = kubelet_https(client, node).await?;
    let url = format!(
        "{base}/containerLogs/{ns}/{name}/{container}?{}",
        opts.query()
    );
    let (code, body) = https
        .stream(http::Method::GET, &url, &[])
        .await
        .map_err(|e| (502, format!("Get \"{url}\": {e}")))?;
    if code != 200 {
        use http_body_util::BodyExt;
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err((code, msg));
    }
    let mut r = Response::new(Body::new(body));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_records_join_partials_and_options_select_lines() {
        let mut pending = None;
        let lines = parse_records(
            "2026-01-01T00:00:01.5Z stdout F one\n2026-01-01T00:00:02Z stderr P tw\n2026-01-01T00:00:02Z stderr F o\n2026-01-01T00:00:09Z stdout P thr",
            &mut pending,
        );
        assert_eq!(
            lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(pending.as_ref().unwrap().text, "thr");
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(render(&lines, &LogOptions::default(), now), "one\ntwo\n");
        let tail = LogOptions {
            tail_lines: Some(1),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(render(&lines, &tail, now), "2026-01-01T00:00:02Z two\n");
        let since = LogOptions {
            since_seconds: Some(8),
            ..Default::default()
        };
        assert_eq!(render(&lines, &since, now), "two\n");
        let q: HashMap<String, String> = [("tailLines".to_string(), "-1".to_string())].into();
        assert!(
            LogOptions::from_query(&q)
                .unwrap_err()
                .contains("tailLines")
        );
    }
}
