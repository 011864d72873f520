//! Streaming sessions (`kubectl exec`, `attach`, `port-forward`, and `cp`, which is an exec of
//! tar): the kubelet API's `/exec`, `/attach` and `/portForward` endpoints, and the API server's
//! side of `pods/exec`, `pods/attach` and `pods/portforward`.
//!
//! Neither hop speaks the streaming protocols itself. The API server forwards the client's
//! upgrade request (SPDY/3.1 or WebSocket, with the `X-Stream-Protocol-Version` or
//! `Sec-WebSocket-Protocol` offers) to the node's kubelet API; the kubelet API asks the CRI for a
//! streaming URL (containerd's stream server, bound to loopback per node) and forwards the same
//! request there. Whatever containerd answers travels back unchanged: a 101 with the protocol it
//! picked, after which both hops copy bytes both ways, or a refusal (containerd 1.6 answers a
//! WebSocket offer of only `v5.channel.k8s.io` with 403), from which kubectl >= 1.30 falls back to
//! SPDY. So every kubectl version negotiates with the runtime directly, as with upstream's
//! kubelet (docs/streaming.md).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::{Extension, Router};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::cri::{Cri, v1};
use super::logs::{self, KubeletClient};
use crate::https::ConnInfo;

/// Request headers that carry the upgrade and its protocol negotiation to the next hop. Others
/// (the client's credentials above all) stay on the hop they were meant for.
const FORWARDED_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "origin",
    "user-agent",
    "content-type",
];

/// How long a hop waits for the next one to connect and answer the upgrade (the session itself
/// may then last as long as the client keeps it).
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The streaming session kinds: the subresource names on the API, with the kubelet API path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    Exec,
    Attach,
    PortForward,
}

impl Session {
    /// The session a pod subresource opens (`exec`, `attach`, `portforward`).
    pub fn from_subresource(sub: &str) -> Option<Session> {
        [Session::Exec, Session::Attach, Session::PortForward]
            .into_iter()
            .find(|s| s.subresource() == sub)
    }

    pub fn subresource(self) -> &'static str {
        match self {
            Session::Exec => "exec",
            Session::Attach => "attach",
            Session::PortForward => "portforward",
        }
    }

    fn kubelet_path(self) -> &'static str {
        match self {
            Session::Exec => "exec",
            Session::Attach => "attach",
            Session::PortForward => "portForward",
        }
    }
}

/// Percent-encodes a query component (everything but RFC 3986's unreserved characters).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API query parameters of the session options (PodExecOptions, PodAttachOptions,
/// PodPortForwardOptions) [`kubelet_target`] reads.
pub const OPTION_PARAMS: &[&str] = &[
    "command",
    "container",
    "stdin",
    "stdout",
    "stderr",
    "tty",
    "ports",
];

/// A boolean query parameter as upstream reads it: absent is false; present is true unless its
/// first value is `0` or `false` in any case.
fn flag(query: &[(String, String)], key: &str) -> bool {
    query
        .iter()
        .find(|(k, _)| k == key)
        .is_some_and(|(_, v)| !(v == "0" || v.eq_ignore_ascii_case("false")))
}

fn values<'a>(query: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> {
    query
        .iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The kubelet API path and query of a session, from the API request's query (upstream's
/// PodExecOptions / PodAttachOptions / PodPortForwardOptions); `Err` is a 400 message.
pub fn kubelet_target(
    session: Session,
    pod: &serde_json::Value,
    query: &[(String, String)],
) -> Result<String, String> {
    let (ns, name) = logs::pod_ref(pod);
    let mut params: Vec<String> = Vec::new();
    let path = match session {
        Session::PortForward => {
            for p in values(query, "ports") {
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => params.push(format!("port={n}")),
                    _ => {
                        return Err(format!(
                            "ports: invalid value \"{p}\": must be a port number between 1 and 65535"
                        ));
                    }
                }
            }
            format!("/portForward/{ns}/{name}")
        }
        Session::Exec | Session::Attach => {
            let container = logs::pick_container(pod, values(query, "container").next())?;
            let (stdin, stdout, stderr, tty) = (
                flag(query, "stdin"),
                flag(query, "stdout"),
                flag(query, "stderr"),
                flag(query, "tty"),
            );
            if !(stdin || stdout || stderr) {
                return Err("you must specify at least 1 of stdin, stdout, stderr".to_string());
            }
            if session == Session::Exec {
                let command: Vec<&str> = values(query, "command").collect();
                if command.is_empty() {
                    return Err("you must specify at least 1 command".to_string());
                }
                params.extend(
                    command
                        .iter()
                        .map(|c| format!("command={}", query_escape(c))),
                );
            }
            for (on, key) in [
                (stdin, "input"),
                (stdout, "output"),
                (stderr, "error"),
                (tty, "tty"),
            ] {
                if on {
                    params.push(format!("{key}=1"));
                }
            }
            format!(
                "/{}/{ns}/{name}/{}",
                session.kubelet_path(),
                query_escape(&container)
            )
        }
    };
    Ok(if params.is_empty() {
        path
    } else {
        format!("{path}?{}", params.join("&"))
    })
}

/// The API server's side: forwards the upgrade request to the kubelet API of `node` at
/// `target` (from [`kubelet_target`]) and splices the two connections after a 101.
pub async fn proxy(
    client: &KubeletClient,
    node: &serde_json::Value,
    target: &str,
    req: Request,
    cancel: CancellationToken,
) -> Result<Response, (u16, String)> {
    let (https, base) = logs::kubelet_https(client, node).await?;
    let url = format!("{base}{target}");
    let (stream, host) = tokio::time::timeout(UPGRADE_TIMEOUT, https.connect(&url))
        .await
        .map_err(|_| (504, format!("dialing the kubelet at {url}: timed out")))?
        .map_err(|e| (502, format!("dialing the kubelet: {e}")))?;
    splice_upgrade(req, stream, target, &host, cancel)
        .await
        .map_err(|e| (502, format!("{url}: {e}")))
}

/// Sends `req`'s upgrade (its method, the negotiation headers) as `path_and_query` over
/// `backend`, and answers with the backend's response. On a 101 both upgraded connections are
/// spliced until the backend closes (the session ended) or `cancel`; any other answer (a refused
/// protocol, an error Status) is passed on as it is, so the client's fallback rules apply.
pub async fn splice_upgrade<S>(
    mut req: Request,
    backend: S,
    path_and_query: &str,
    host: &str,
    cancel: CancellationToken,
) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(backend))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        // Ends when the connection is upgraded (its IO moves to the upgrade) or closed.
        let _ = conn.with_upgrades().await;
    });
    let mut out = hyper::Request::builder()
        .method(req.method().clone())
        .uri(path_and_query)
        .header(header::HOST, host);
    for (name, value) in req.headers() {
        if FORWARDED_REQUEST_HEADERS.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let out = out
        .body(Full::new(bytes::Bytes::new()))
        .map_err(|e| format!("building the request: {e}"))?;
    let mut resp = tokio::time::timeout(UPGRADE_TIMEOUT, sender.send_request(out))
        .await
        .map_err(|_| format!("no answer to the upgrade request within {UPGRADE_TIMEOUT:?}"))?
        .map_err(|e| format!("sending the upgrade request: {e}"))?;
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let mut r = Response::new(Body::new(resp.into_body()));
        *r.status_mut() = status;
        if let Some(ct) = content_type {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return Ok(r);
    }
    let backend_up = hyper::upgrade::on(&mut resp);
    let client_up = hyper::upgrade::on(&mut req);
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in resp.headers() {
        r.headers_mut().append(name, value.clone());
    }
    tokio::spawn(async move {
        let (client, backend) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async { tokio::try_join!(client_up, backend_up) } => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(component = "streaming", "upgrade failed: {e}");
                    return;
                }
            },
        };
        splice(TokioIo::new(client), TokioIo::new(backend), cancel).await;
    });
    Ok(r)
}

/// Copies bytes both ways until the backend closes its side (the session is over: the exit
/// status or the last port-forward stream was sent) or `cancel`. The client closing its sending
/// side only half-closes the backend's, so the backend's last words still reach it.
async fn splice<C, B>(client: C, backend: B, cancel: CancellationToken)
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
    B: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut backend_rx, mut backend_tx) = tokio::io::split(backend);
    let upstream = async {
        let _ = tokio::io::copy(&mut client_rx, &mut backend_tx).await;
        let _ = backend_tx.shutdown().await;
        // Keep this side pending: only the backend ends a session.
        std::future::pending::<()>().await
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut backend_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// The kubelet API's side.
struct NodeApi {
    cri: Cri,
    cancel: CancellationToken,
}

/// The kubelet API routes of streaming sessions (GET for WebSocket, POST for SPDY).
pub fn routes(cri: Cri, cancel: CancellationToken) -> Router {
    use axum::routing::get;
    Router::new()
        .route(
            "/exec/{ns}/{pod}/{container}",
            get(exec_or_attach).post(exec_or_attach),
        )
        .route(
            "/attach/{ns}/{pod}/{container}",
            get(exec_or_attach).post(exec_or_attach),
        )
        .route(
            "/portForward/{ns}/{pod}",
            get(port_forward).post(port_forward),
        )
        .with_state(Arc::new(NodeApi { cri, cancel }))
}

fn status(code: StatusCode, message: &str) -> Response {
    crate::https::status_response(code, code.canonical_reason().unwrap_or(""), message)
}

fn raw_query(req: &Request) -> Vec<(String, String)> {
    let q = req.uri().query().unwrap_or("");
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{q}").parse().unwrap_or_default(),
    )
    .map(|axum::extract::Query(v)| v)
    .unwrap_or_default()
}

async fn exec_or_attach(
    State(api): State<Arc<NodeApi>>,
    Extension(conn): Extension<ConnInfo>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    req: Request,
) -> Response {
    if let Some(refusal) = logs::refuse_unless_apiserver(&conn, "open streaming sessions") {
        return refusal;
    }
    let query = raw_query(&req);
    let on = |k: &str| flag(&query, k);
    let (stdin, stdout, stderr, tty) = (on("input"), on("output"), on("error"), on("tty"));
    let id = match logs::find_container(&api.cri, &ns, &pod, &container).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let exec = req.uri().path().starts_with("/exec/");
    let mut runtime = api.cri.runtime.clone();
    let url = if exec {
        let cmd: Vec<String> = values(&query, "command").map(str::to_string).collect();
        runtime
            .exec(v1::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                // With a TTY stderr is merged into stdout (the CRI refuses both).
                stderr: stderr && !tty,
            })
            .await
            .map(|r| r.into_inner().url)
    } else {
        runtime
            .attach(v1::AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr: stderr && !tty,
            })
            .await
            .map(|r| r.into_inner().url)
    };
    match url {
        Ok(url) => to_runtime(&url, req, api.cancel.clone()).await,
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
}

async fn port_forward(
    State(api): State<Arc<NodeApi>>,
    Extension(conn): Extension<ConnInfo>,
    UrlPath((ns, pod)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    if let Some(refusal) = logs::refuse_unless_apiserver(&conn, "open streaming sessions") {
        return refusal;
    }
    let query = raw_query(&req);
    let port: Vec<i32> = values(&query, "port")
        .filter_map(|p| p.parse().ok())
        .collect();
    let sandbox = match logs::find_sandbox(&api.cri, &ns, &pod).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let url = api
        .cri
        .runtime
        .clone()
        .port_forward(v1::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port,
        })
        .await
        .map(|r| r.into_inner().url);
    match url {
        Ok(url) => to_runtime(&url, req, api.cancel.clone()).await,
        Err(e) => status(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
}

/// Forwards the upgrade to the runtime's streaming URL (plain HTTP on the node's loopback).
async fn to_runtime(url: &str, req: Request, cancel: CancellationToken) -> Response {
    let Some((host, path)) = url
        .strip_prefix("http://")
        .map(|rest| rest.split_at(rest.find('/').unwrap_or(rest.len())))
    else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the runtime returned a streaming URL this node cannot follow: {url}"),
        );
    };
    let path = if path.is_empty() { "/" } else { path };
    let tcp = match tokio::time::timeout(UPGRADE_TIMEOUT, tokio::net::TcpStream::connect(host))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        Ok(t) => t,
        Err(e) => {
            return status(
                StatusCode::BAD_GATEWAY,
                &format!("dialing the runtime's stream server {host}: {e}"),
            );
        }
    };
    let _ = tcp.set_nodelay(true);
    match splice_upgrade(req, tcp, path, host, cancel).await {
        Ok(r) => r,
        Err(e) => status(StatusCode::BAD_GATEWAY, &format!("{url}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubelet_targets_carry_the_options_upstream_names_them() {
        let pod = json!({"metadata": {"namespace": "ns1", "name": "p"},
                         "spec": {"containers": [{"name": "c"}]}});
        let exec = kubelet_target(
            Session::Exec,
            &pod,
            &q(&[
                ("command", "sh"),
                ("command", "-c"),
                ("command", "echo a&b=c"),
                ("stdin", "true"),
                ("stdout", "true"),
                ("tty", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(
            exec,
            "/exec/ns1/p/c?command=sh&command=-c&command=echo%20a%26b%3Dc&input=1&output=1"
        );
        let attach = kubelet_target(
            Session::Attach,
            &pod,
            &q(&[("container", "c"), ("stdout", "1"), ("tty", "true")]),
        )
        .unwrap();
        assert_eq!(attach, "/attach/ns1/p/c?output=1&tty=1");
        let pf = kubelet_target(Session::PortForward, &pod, &q(&[("ports", "8080")])).unwrap();
        assert_eq!(pf, "/portForward/ns1/p?port=8080");
    }

    #[test]
    fn bad_session_options_are_refused_with_the_reason() {
        let pod = json!({"metadata": {"namespace": "ns1", "name": "p"},
                         "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let err = |s, pairs: &[(&str, &str)]| kubelet_target(s, &pod, &q(pairs)).unwrap_err();
        assert!(
            err(Session::Exec, &[("command", "ls"), ("stdout", "true")]).contains("choose one of")
        );
        assert!(err(Session::Exec, &[("container", "a"), ("stdout", "true")]).contains("command"));
        assert!(
            err(Session::Exec, &[("container", "a"), ("command", "ls")]).contains("stdin, stdout")
        );
        assert!(
            err(
                Session::Exec,
                &[("container", "z"), ("command", "ls"), ("stdout", "1")]
            )
            .contains("not valid")
        );
        assert!(err(Session::PortForward, &[("ports", "0")]).contains("ports"));
        assert!(err(Session::PortForward, &[("ports", "x")]).contains("ports"));
    }
}
