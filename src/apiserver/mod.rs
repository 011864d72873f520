//! The Kubernetes API on 6443: a compatible subset served from etcd, shaped by what the real
//! kubectl 1.32 sends and accepts (docs/kubernetes-api.md). This file owns routing (path parsing),
//! the request pipeline (authentication, authorization, body decoding) and response encoding;
//! [`handlers`] does the verbs, [`watch`] streams changes, [`storage`] talks to etcd.

pub mod apply;
pub mod authz;
pub mod discovery;
pub mod fieldset;
pub mod handlers;
pub mod namespaces;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod pods;
pub mod protobuf;
pub mod query;
#[cfg(test)]
mod router_tests;
pub mod scale;
pub mod status;
pub mod streaming;
pub mod table;
pub mod watch;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::datastore::StoreCell;
use crate::https::ConnInfo;
use crate::registry::{self as resources, ResourceInfo};
use authz::User;
use status::ApiError;

/// How long `/readyz` keeps reporting ready after the last successful etcd check: an etcd leader
/// election (1-2 s, docs/operations.md §1) must not make every server look unready to load
/// balancers, while a server that really lost quorum turns unready within seconds.
const ETCD_READY_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Shared state of the API handlers.
pub struct ApiState {
    /// The datastore, once etcd is ready.
    pub store: StoreCell,
    /// The local etcd member's client: node admission asks it who the members are.
    pub etcd: crate::etcd::EtcdCell,
    /// etcd's data directory: errors name it when its disk is full.
    pub etcd_data_dir: std::path::PathBuf,
    pub cancel: CancellationToken,
    /// Lifetime of Events after their last write (`event-ttl`).
    pub event_ttl: std::time::Duration,
    /// How to reach kubelets for `pods/log` (crate::runtime::logs); `None` answers 503.
    pub kubelet: Option<crate::runtime::logs::KubeletClient>,
    /// Where Services get their ClusterIPs and node ports.
    pub service_ranges: crate::storage::services::ServiceRanges,
    /// Per-kind caches serving watches and `resourceVersion=0` lists (crate::storage::watch_cache).
    pub watch_cache: Arc<crate::storage::watch_cache::WatchCaches>,
    /// When etcd last answered a readiness check.
    last_etcd_ok: std::sync::Mutex<Option<std::time::Instant>>,
    /// The OpenAPI documents, generated on first use.
    openapi: crate::apiserver::openapi::OpenApi,
}

type St = Arc<ApiState>;

/// Builds the API router, and starts the server's watch caches (shared with its controllers)
/// once the store is ready (a task ending with `cancel`).
#[allow(
    clippy::too_many_arguments,
    reason = "each is one independent setting of the API server, passed down by value"
)]
pub fn router(
    store: StoreCell,
    etcd: crate::etcd::EtcdCell,
    etcd_data_dir: std::path::PathBuf,
    cancel: CancellationToken,
    event_ttl: std::time::Duration,
    kubelet: Option<crate::runtime::logs::KubeletClient>,
    service_ranges: crate::storage::services::ServiceRanges,
    watch_cache: Arc<crate::storage::watch_cache::WatchCaches>,
) -> Router {
    let st = Arc::new(ApiState {
        watch_cache,
        store,
        etcd,
        etcd_data_dir,
        cancel,
        event_ttl,
        kubelet,
        service_ranges,
        last_etcd_ok: std::sync::Mutex::new(None),
        openapi: Default::default(),
    });
    tokio::spawn(start_watch_caches(st.clone()));
    Router::new().fallback(entry).with_state(st)
}

/// Starts every kind's watch cache as soon as etcd is ready (docs/watch-cache.md): the windows
/// then begin at the server's start, so WATCHes resuming from any revision listed from this
/// server are served, and older ones get 410 like upstream.
async fn start_watch_caches(st: St) {
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
    let ds = loop {
        if let Some(ds) = st.store.get() {
            break ds.clone();
        }
        tokio::select! {
            _ = st.cancel.cancelled() => return,
            _ = poll.tick() => {}
        }
    };
    st.watch_cache.start_all(&ds);
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiPath {
    Version,
    Health(&'static str),
    CoreGroup,
    CoreVersion,
    Groups,
    Group(String),
    GroupVersion(String, String),
    Resource(ResourceRef),
    NotFound,
}

/// A resource path: which resource, where, which object, which subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

fn resource_segments(group: &str, version: &str, segs: &[&str]) -> ApiPath {
    let lookup = |plural: &str| resources::lookup(group, version, plural);
    let r = |info: &'static ResourceInfo, ns: Option<&str>, rest: &[&str]| {
        let (name, sub) = match rest {
            [] => (None, None),
            [name] => (Some(name), None),
            [name, sub] => (Some(name), Some(sub)),
            _ => return ApiPath::NotFound,
        };
        ApiPath::Resource(ResourceRef {
            info,
            namespace: ns.map(str::to_string),
            name: name.map(|s| s.to_string()),
            subresource: sub.map(|s| s.to_string()),
        })
    };
    if let ["namespaces", ns, plural, rest @ ..] = segs
        && let Some(info) = lookup(plural).filter(|i| i.namespaced)
    {
        return r(info, Some(ns), rest);
    }
    match segs {
        [plural, rest @ ..] => match lookup(plural) {
            Some(info) => r(info, None, rest),
            None => ApiPath::NotFound,
        },
        [] => ApiPath::NotFound,
    }
}

/// Parses a request path.
pub fn parse_path(path: &str) -> ApiPath {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => ApiPath::Version,
        ["healthz", ..] => ApiPath::Health("healthz"),
        ["livez", ..] => ApiPath::Health("livez"),
        ["readyz", ..] => ApiPath::Health("readyz"),
        ["api"] => ApiPath::CoreGroup,
        ["api", "v1"] => ApiPath::CoreVersion,
        ["api", "v1", rest @ ..] => resource_segments("", "v1", rest),
        ["apis"] => ApiPath::Groups,
        ["apis", g] => ApiPath::Group(g.to_string()),
        ["apis", g, v] => ApiPath::GroupVersion(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => resource_segments(g, v, rest),
        _ => ApiPath::NotFound,
    }
}

/// Builds a JSON response.
pub fn json(status: StatusCode, value: &Value, content_type: &'static str) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(component = "apiserver", "request failed: {self}");
        }
        json(status, &self.to_status(), "application/json")
    }
}

/// The query string, every value of every key kept ([`query::Query`] reads them as upstream
/// does). A parameter whose name or value does not decode to UTF-8 is a 400 naming it: clients
/// never send such bytes, so guessing (lossy replacement) could only change what a selector
/// means.
pub fn query_map(query: Option<&str>) -> Result<query::Query, ApiError> {
    let mut out = query::Query::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let key = percent_decode(k).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid query parameter name {:?}: not UTF-8 after percent-decoding",
                    String::from_utf8_lossy(k.as_bytes())
                ))
            })?;
            let value = percent_decode(v).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid value for query parameter {key:?}: not UTF-8 after percent-decoding"
                ))
            })?;
            Ok::<_, ApiError>((key, value))
        })
    {
        let (key, value) = pair?;
        out.push(key, value);
    }
    Ok(out)
}

/// Decodes `%XX` escapes and `+` (form encoding). Works on bytes only, so any input is safe: a
/// `%` not followed by two hex digits stays literal (as Go's lenient query parsing would not,
/// but refusing it would break nothing kubectl sends), and the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// Reads a request body up to the API's limit (413 beyond it).
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let limit = objects::MAX_BODY_BYTES;
    let collected = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::RequestEntityTooLarge(format!("limit is {limit}"))
            } else {
                ApiError::BadRequest(format!("reading the request body: {e}"))
            }
        })?;
    Ok(collected.to_bytes())
}

/// Decodes a request body as JSON or Kubernetes protobuf, by Content-Type.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if protobuf::is_protobuf(ct) {
        return protobuf::decode_to_json(body);
    }
    let base = ct.split(';').next().unwrap_or("").trim();
    if !(base == "application/json" || base.is_empty() || base == "*/*") {
        return Err(ApiError::UnsupportedMediaType(
            "application/json, application/vnd.kubernetes.protobuf".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

async fn entry(
    State(st): State<St>,
    Extension(conn): Extension<ConnInfo>,
    req: Request,
) -> Response {
    // Errors on resources are encoded like the response the client asked for.
    let protobuf_errors = matches!(parse_path(req.uri().path()), ApiPath::Resource(_))
        && protobuf::negotiate(&accept(req.headers())) == protobuf::Encoding::Protobuf;
    match dispatch(st.clone(), conn, req).await {
        Ok(r) => r,
        Err(e) => {
            let e = name_full_disk(&st, e).await;
            if protobuf_errors {
                if e.code() >= 500 {
                    tracing::warn!(component = "apiserver", "request failed: {e}");
                }
                protobuf::error_response(&e)
            } else {
                e.into_response()
            }
        }
    }
}

/// The disk problem under etcd's data directory, if any (a statvfs, off the async threads).
async fn etcd_disk_problem(st: &ApiState) -> Option<String> {
    let dir = st.etcd_data_dir.clone();
    tokio::task::spawn_blocking(move || crate::etcd::process::disk_full(&dir))
        .await
        .ok()
        .flatten()
}

/// etcd on a full disk shows only as timeouts or unavailability ("no quorum?"); when the disk
/// under its data directory is full, the error says so.
async fn name_full_disk(st: &ApiState, e: ApiError) -> ApiError {
    if !matches!(
        e,
        ApiError::ServiceUnavailable(_) | ApiError::Timeout(_) | ApiError::Internal(_)
    ) {
        return e;
    }
    let Some(disk) = etcd_disk_problem(st).await else {
        return e;
    };
    match e {
        ApiError::ServiceUnavailable(m) => ApiError::ServiceUnavailable(format!("{disk}: {m}")),
        ApiError::Timeout(m) => ApiError::Timeout(format!("{disk}: {m}")),
        ApiError::Internal(m) => ApiError::Internal(format!("{disk}: {m}")),
        other => other,
    }
}

/// What `etcdctl endpoint health` checks, through the local member only: a linearizable read
/// (which needs a leader and a caught-up member) and no active alarms (NOSPACE, CORRUPT);
/// plus that the member votes (a learner serves no linearizable reads anyway).
async fn etcd_health(st: &ApiState) -> Result<(), String> {
    let (Some(store), Some(client)) = (st.store.get(), st.etcd.get()) else {
        return Err("datastore not started".to_string());
    };
    crate::etcd::check_ready(client)
        .await
        .map_err(|e| e.to_string())?;
    store.revision().await.map_err(|e| e.to_string())?;
    let alarms = client
        .clone()
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .map_err(|e| format!("reading etcd alarms: {e}"))?;
    if !alarms.alarms().is_empty() {
        let names: Vec<&str> = alarms
            .alarms()
            .iter()
            .map(|a| a.alarm().as_str_name())
            .collect();
        return Err(format!("etcd alarm(s) active: {}", names.join(", ")));
    }
    Ok(())
}

async fn readyz(st: &ApiState, verbose: bool) -> Response {
    let check = match tokio::time::timeout(std::time::Duration::from_secs(1), etcd_health(st)).await
    {
        Ok(r) => r,
        Err(_) => Err("etcd did not answer within 1s (no quorum?)".to_string()),
    };
    let check = {
        let mut last_ok = st.last_etcd_ok.lock().unwrap_or_else(|p| p.into_inner());
        match check {
            Ok(()) => {
                *last_ok = Some(std::time::Instant::now());
                Ok(())
            }
            Err(_) if last_ok.is_some_and(|t| t.elapsed() < ETCD_READY_GRACE) => Ok(()),
            Err(e) => Err(e),
        }
    };
    match check {
        Ok(()) if verbose => text(
            StatusCode::OK,
            "[+]ping ok\n[+]etcd ok\nreadyz check passed\n",
        ),
        Ok(()) => text(StatusCode::OK, "ok"),
        Err(e) => {
            let e = match etcd_disk_problem(st).await {
                Some(disk) => format!("{disk}; {e}"),
                None => e,
            };
            tracing::debug!(component = "apiserver", "readyz failed: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("[+]ping ok\n[-]etcd failed: {e}\nreadyz check failed\n"),
            )
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn dispatch(st: St, conn: ConnInfo, req: Request) -> Result<Response, ApiError> {
    let path = parse_path(req.uri().path());
    let query = query_map(req.uri().query())?;
    let method = req.method().clone();
    let accept = accept(req.headers());
    // Health and version are public (system:public-info-viewer upstream).
    match &path {
        ApiPath::Health("readyz") => return Ok(readyz(&st, query.contains_key("verbose")).await),
        ApiPath::Health(_) => return Ok(text(StatusCode::OK, "ok")),
        ApiPath::Version => {
            return Ok(json(
                StatusCode::OK,
                &discovery::version_info(),
                "application/json",
            ));
        }
        _ => {}
    }
    let user = conn
        .identity
        .as_ref()
        .map(User::from_cert)
        .ok_or(ApiError::Unauthorized)?;
    if let Some(r) = st.openapi.respond(&method, req.uri(), req.headers()).await {
        return Ok(r);
    }
    let aggregated = discovery::wants_aggregated(&accept);
    let disc = |v: Value| {
        Ok(if aggregated {
            json(StatusCode::OK, &v, discovery::AGGREGATED_V2_CONTENT_TYPE)
        } else {
            json(StatusCode::OK, &v, "application/json")
        })
    };
    match path {
        ApiPath::CoreGroup => {
            if aggregated {
                disc(discovery::aggregated_core())
            } else {
                disc(discovery::legacy_api_versions(&conn.local.to_string()))
            }
        }
        ApiPath::Groups => {
            if aggregated {
                disc(discovery::aggregated_groups())
            } else {
                disc(discovery::legacy_group_list())
            }
        }
        ApiPath::CoreVersion => Ok(json(
            StatusCode::OK,
            &discovery::api_resource_list("", "v1").ok_or(ApiError::NoSuchResource)?,
            "application/json",
        )),
        ApiPath::Group(g) => Ok(json(
            StatusCode::OK,
            &discovery::api_group(&g).ok_or(ApiError::NoSuchResource)?,
            "application/json",
        )),
        ApiPath::GroupVersion(g, v) => Ok(json(
            StatusCode::OK,
            &discovery::api_resource_list(&g, &v).ok_or(ApiError::NoSuchResource)?,
            "application/json",
        )),
        ApiPath::Resource(r) => {
            if st.store.get().is_none() {
                return Err(ApiError::ServiceUnavailable(
                    "apiserver not ready: etcd is starting".into(),
                ));
            }
            handlers::handle(&st, &user, r, method, query, &accept, req).await
        }
        ApiPath::NotFound | ApiPath::Health(_) | ApiPath::Version => {
            // Method on an unknown path.
            let _ = Method::GET;
            Err(ApiError::NoSuchResource)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_never_splits_a_character() {
        // Issue 17 finding 6 (found again by tests/fuzz.rs): `%a` followed by a multi-byte
        // character panicked while slicing the `&str`.
        let q = query_map(Some("labelSelector=%a\u{e9}&x=%\u{e9}&y=%c3%a9+%41")).unwrap();
        assert_eq!(q["labelSelector"], "%a\u{e9}");
        assert_eq!(q["x"], "%\u{e9}");
        assert_eq!(q["y"], "\u{e9} A");
    }

    fn res(path: &str) -> ResourceRef {
        match parse_path(path) {
            ApiPath::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res("/api/v1/nodes/n1/status");
        assert_eq!(r.info.plural, "nodes");
        assert_eq!(r.name.as_deref(), Some("n1"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = res("/api/v1/namespaces/kube-system/secrets/s1");
        assert_eq!(r.info.plural, "secrets");
        assert_eq!(r.namespace.as_deref(), Some("kube-system"));
        let r = res("/api/v1/namespaces/foo");
        assert_eq!(r.info.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("foo"));
        let r = res("/api/v1/namespaces/foo/status");
        assert_eq!(r.info.plural, "namespaces");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = res("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases");
        assert_eq!(r.info.plural, "leases");
        assert_eq!(r.name, None);
        let r = res("/api/v1/pods");
        assert_eq!(r.namespace, None);
        assert_eq!(parse_path("/api/v1/foos"), ApiPath::NotFound);
        assert_eq!(parse_path("/version"), ApiPath::Version);
        assert_eq!(
            parse_path("/apis/coordination.k8s.io/v1"),
            ApiPath::GroupVersion("coordination.k8s.io".into(), "v1".into())
        );
    }

    #[test]
    fn query_decoding() {
        let q = query_map(Some(
            "fieldSelector=spec.nodeName%3Dn1%2Cstatus.phase%21%3DFailed&limit=500&watch",
        ))
        .unwrap();
        assert_eq!(q["fieldSelector"], "spec.nodeName=n1,status.phase!=Failed");
        assert_eq!(q["limit"], "500");
        assert_eq!(q["watch"], "");
    }

    /// Any byte sequence decodes or is refused without a panic (the request sliced a
    /// `&str` inside a UTF-8 character), and a trailing escape is decoded.
    #[test]
    fn query_decoding_any_bytes() {
        let e = query_map(Some("labelSelector=%a\u{e9}")).unwrap();
        assert_eq!(e["labelSelector"], "%a\u{e9}");
        let e = query_map(Some("labelSelector=%ff%fe")).unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.to_string().contains("labelSelector"), "{e}");
        let e = query_map(Some("%c3=1")).unwrap_err();
        assert_eq!(e.code(), 400);
        assert_eq!(query_map(Some("a=%41")).unwrap()["a"], "A");
        assert_eq!(query_map(Some("a=%4")).unwrap()["a"], "%4");
        assert_eq!(query_map(Some("a=%")).unwrap()["a"], "%");
        assert_eq!(query_map(Some("a=%C3%A9+x")).unwrap()["a"], "\u{e9} x");
        // Every short sequence over an alphabet of the interesting bytes.
        let alphabet = ["%", "a", "4", "1", "\u{e9}", "+", "=", "&", "c3", "%c3%"];
        for x in alphabet {
            for y in alphabet {
                for z in alphabet {
                    let q = format!("{x}{y}{z}");
                    let _ = query_map(Some(&q));
                }
            }
        }
    }
}
