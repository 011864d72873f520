//! The registration ("supervisor") API on 9345 (docs/protocol.md §2): CA download, readiness, the
//! settings joining nodes compare, the encrypted bootstrap data for joining servers, the etcd
//! member list, and certificate signing for agents. Errors are Kubernetes `Status` objects:
//! 401 for bad credentials, 403 for the wrong role.

pub mod auth;
pub mod certs;
mod node_addresses;
mod rotate_ca;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Extension, Router};

use crate::bootstrap::{self, BootstrapData};
use crate::cluster::context::Ctx;
use crate::https::ConnInfo;
use crate::protocol::{self, ControlConfig};
use auth::{Caller, Role};

/// Largest request body accepted (CSRs and token rotation bodies are tiny).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Errors answered by the supervisor, mapped to status codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("not authorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Internal(String),
    /// The datastore failed (etcd unavailable, timed out, ...).
    #[error("datastore: {0}")]
    Datastore(#[from] crate::datastore::DatastoreError),
    /// Objects could not be read.
    #[error("reading objects: {0}")]
    Objects(#[from] crate::storage::ObjectError),
    /// etcd's member list could not be read.
    #[error("etcd: {0}")]
    Etcd(#[from] crate::etcd::EtcdError),
    /// The cluster bootstrap data could not be read or decrypted.
    #[error("bootstrap data: {0}")]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// The certificate request is not one this server signs.
    #[error("{0}")]
    Csr(#[from] crate::pki::PkiError),
    /// The node password could not be checked or stored (the datastore failed; a mismatch is
    /// [`SupervisorError::Forbidden`]).
    #[error("checking the node password: {0}")]
    NodePassword(#[source] crate::cluster::node_password::NodePasswordError),
}

impl SupervisorError {
    fn status(&self) -> StatusCode {
        match self {
            SupervisorError::Unauthorized => StatusCode::UNAUTHORIZED,
            SupervisorError::Forbidden => StatusCode::FORBIDDEN,
            SupervisorError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SupervisorError::NotFound(_) => StatusCode::NOT_FOUND,
            SupervisorError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SupervisorError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            SupervisorError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SupervisorError::NodePassword(_)
            | SupervisorError::Datastore(_)
            | SupervisorError::Objects(_)
            | SupervisorError::Etcd(_) => StatusCode::SERVICE_UNAVAILABLE,
            SupervisorError::Bootstrap(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SupervisorError::Csr(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            SupervisorError::Unauthorized => "Unauthorized",
            SupervisorError::Forbidden => "Forbidden",
            SupervisorError::BadRequest(_) => "BadRequest",
            SupervisorError::NotFound(_) => "NotFound",
            SupervisorError::MethodNotAllowed => "MethodNotAllowed",
            SupervisorError::NotReady(_) => "ServiceUnavailable",
            SupervisorError::Internal(_) => "InternalError",
            SupervisorError::NodePassword(_)
            | SupervisorError::Datastore(_)
            | SupervisorError::Objects(_)
            | SupervisorError::Etcd(_) => "ServiceUnavailable",
            SupervisorError::Bootstrap(_) => "InternalError",
            SupervisorError::Csr(_) => "BadRequest",
        }
    }
}

impl IntoResponse for SupervisorError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(component = "supervisor", "request failed: {self}");
        }
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": status.as_u16(),
        });
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

/// Token rotation errors as the supervisor answers them.
impl From<crate::cluster::token_ops::TokenOpError> for SupervisorError {
    fn from(e: crate::cluster::token_ops::TokenOpError) -> Self {
        use crate::cluster::token_ops::TokenOpError;
        use SupervisorError as S;
        match e {
            TokenOpError::Invalid(t) => S::BadRequest(t.to_string()),
            TokenOpError::NotReady => S::NotReady("the datastore is not ready yet".into()),
            TokenOpError::Datastore(d) => S::Datastore(d),
            TokenOpError::Bootstrap(b) => S::Bootstrap(b),
            TokenOpError::Io(i) => S::Internal(i.to_string()),
            e @ TokenOpError::Concurrent => S::NotReady(e.to_string()),
            e @ (TokenOpError::Record(_)
            | TokenOpError::RecordJson(_)
            | TokenOpError::Passwd(_)
            | TokenOpError::Apply(_)) => S::Internal(e.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, SupervisorError>;

fn text(body: impl Into<Bytes>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

/// Builds the router.
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route(protocol::CACERTS, any(cacerts))
        .route(protocol::PING, any(ping))
        .route(protocol::DB_INFO, any(db_info))
        .route(protocol::READYZ, get(readyz))
        .route(protocol::CONFIG, get(config))
        .route(protocol::APISERVERS, get(apiservers))
        .route(protocol::SERVER_BOOTSTRAP, get(server_bootstrap))
        .route(protocol::CLIENT_CA, get(client_ca))
        .route(protocol::SERVER_CA, get(server_ca))
        .route(protocol::SERVING_KUBELET, any(certs::serving_kubelet))
        .route(protocol::CLIENT_KUBELET, any(certs::client_kubelet))
        .route(protocol::CERT_CACERTS, put(rotate_ca::rotate_ca))
        .route(
            protocol::TOKEN,
            put(certs::rotate_token).fallback(|| async { SupervisorError::MethodNotAllowed }),
        )
        .fallback(|| async {
            SupervisorError::NotFound("the server could not find the requested resource".into())
        })
        .layer(Extension(
            Arc::new(node_addresses::NodeAddresses::default()),
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth::LoginThrottle::default()),
            guard,
        ))
        .with_state(ctx)
}

/// Wraps every route: refuses requests with credentials from an address that failed too many
/// logins (429 + `Retry-After`), refuses an announced body over [`MAX_BODY_BYTES`] (413),
/// records 401s, and turns every error answer not already a
/// `Status` (axum's 405 for a wrong method, 413 from the body limit, extractor 400s) into one.
async fn guard(
    State(throttle): State<Arc<auth::LoginThrottle>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ip = req.extensions().get::<ConnInfo>().map(|c| c.remote.ip());
    let path = req.uri().path().to_string();
    if let Some(ip) = ip
        && req.headers().contains_key(header::AUTHORIZATION)
        && let Some(wait) = throttle.throttled(ip)
    {
        let mut resp = crate::https::status_response(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many failed logins from this address; retry later",
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return resp;
    }
    // An announced body over the limit is refused before it is read (so no `100 Continue`
    // invites the client to send it).
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let mut resp = crate::https::status_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("Request entity too large: limit is {MAX_BODY_BYTES}"),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED
        && let Some(ip) = ip
    {
        throttle.failed(ip, &path);
    }
    as_status(resp).await
}

/// The Kubernetes `reason` for an HTTP error code.
fn reason_for(code: StatusCode) -> &'static str {
    match code {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::NOT_ACCEPTABLE => "NotAcceptable",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::GATEWAY_TIMEOUT => "Timeout",
        c if c.is_server_error() => "InternalError",
        _ => "BadRequest",
    }
}

/// An error response whose body is not JSON becomes a `Status` carrying its text.
async fn as_status(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // Error texts are short; a longer one is cut rather than buffered.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let fresh = crate::https::status_response(status, reason_for(status), &message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    Response::from_parts(parts, body)
}

/// Who may use the agent routes: the agent token, a kubelet certificate, or a bootstrap token
/// (never the server token's user alone; joining servers call these as `node`).
pub const AGENT_ROLES: &[Role] = &[Role::Agent, Role::Node, Role::Bootstrapper];

/// Authenticates a request to an agent route.
async fn require_agent(ctx: &Ctx, headers: &HeaderMap, conn: &ConnInfo) -> Result<Caller> {
    let caller = auth::authenticate(ctx, headers, conn).await?;
    caller.require(AGENT_ROLES)?;
    Ok(caller)
}

async fn cacerts(State(ctx): State<Ctx>) -> Response {
    text(ctx.server_ca_bundle.clone())
}

async fn ping() -> Response {
    text("pong")
}

async fn readyz(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Result<Response> {
    require_agent(&ctx, &headers, &conn).await?;
    if ctx.runtime.snapshot().ready {
        Ok(text("ok"))
    } else {
        Err(SupervisorError::NotReady("runtime core not ready".into()))
    }
}

/// The settings every server must agree on (k3s `CriticalControlArgs`), keyed by flag name.
pub fn critical_settings(c: &crate::config::ServerConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cluster-cidr".to_string(), c.cluster_cidr.to_string()),
        ("service-cidr".to_string(), c.service_cidr.to_string()),
        ("cluster-dns".to_string(), c.cluster_dns.to_string()),
        ("cluster-domain".to_string(), c.cluster_domain.clone()),
    ])
}

async fn config(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Result<axum::Json<ControlConfig>> {
    require_agent(&ctx, &headers, &conn).await?;
    let c = &ctx.config;
    Ok(axum::Json(ControlConfig {
        supervisor_port: c.supervisor_port,
        https_port: c.https_listen_port,
        cluster_domain: c.cluster_domain.clone(),
        cluster_dns: c.cluster_dns.to_string(),
        service_ip_range: c.service_cidr.to_string(),
        cluster_ip_range: c.cluster_cidr.to_string(),
        critical: critical_settings(c),
        server_count: ctx.runtime.snapshot().server_count,
    }))
}

/// The API endpoints of every ready server, sorted.
pub async fn list_apiservers(ctx: &Ctx) -> Result<Vec<String>> {
    let store = ctx
        .store
        .get()
        .ok_or_else(|| SupervisorError::NotReady("datastore not ready".into()))?;
    Ok(crate::cluster::apiservers::list(store).await?)
}

async fn apiservers(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Result<axum::Json<Vec<String>>> {
    require_agent(&ctx, &headers, &conn).await?;
    Ok(axum::Json(list_apiservers(&ctx).await?))
}

async fn server_bootstrap(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = auth::authenticate(&ctx, &headers, &conn).await?;
    caller.require(&[Role::Server])?;
    let Caller::Server { password } = caller else {
        return Err(SupervisorError::Forbidden);
    };
    let store = ctx
        .store
        .get()
        .ok_or_else(|| SupervisorError::NotReady("etcd is not ready yet".into()))?;
    let key = bootstrap::storage_key(&password);
    let (stored, _) = store.get(&key).await?;
    let data = match stored {
        Some(kv) => {
            let sealed = String::from_utf8_lossy(&kv.value).into_owned();
            let plain = bootstrap::decrypt(&password, &sealed)?;
            BootstrapData::from_json(&plain)?
        }
        // Not saved yet (first server still starting): serve our files, as k3s does.
        None => BootstrapData::read(&ctx.paths)?,
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], data.to_json()).into_response())
}

async fn client_ca(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Result<Response> {
    require_agent(&ctx, &headers, &conn).await?;
    Ok(text(ctx.client_ca.cert_pem.clone()))
}

async fn server_ca(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Result<Response> {
    require_agent(&ctx, &headers, &conn).await?;
    Ok(text(ctx.server_ca_bundle.clone()))
}

async fn db_info(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
) -> Result<axum::Json<crate::etcd::ClusterInfo>> {
    if method != Method::GET {
        return Err(SupervisorError::MethodNotAllowed);
    }
    // The member list (names, peer and client URLs) is for joining servers only, wherever the
    // caller is: on one host every local process would otherwise read it.
    auth::authenticate(&ctx, &headers, &conn)
        .await?
        .require(&[Role::Server])?;
    let client = ctx
        .etcd
        .get()
        .ok_or_else(|| SupervisorError::Internal("etcd client not started".into()))?;
    let members = crate::etcd::member_list(client).await?;
    let voting_members = members.iter().filter(|m| !m.is_learner).count();
    Ok(axum::Json(crate::etcd::ClusterInfo {
        members,
        voting_members,
    }))
}
