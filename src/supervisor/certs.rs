//! Agent certificate routes (docs/protocol.md §2.3): the agent POSTs a DER CSR with its node name,
//! password and IPs; the server checks the node password and signs with the server CA
//! (serving-kubelet) or client CA (client-kubelet, `system:node:<name>` / `system:nodes`).
//! Only the CSR's public key is used; names come from the request's authenticated headers.
//! Also the server-token rotation route.

use std::net::IpAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};

use super::auth::{self, Caller, Role};
use super::{Result, SupervisorError};
use crate::apiserver::storage::Storage;
use crate::https::ConnInfo;
use crate::pki::LeafSpec;
use crate::server::context::Ctx;
use crate::server::node_password::{self, NodePasswordError};

/// Header names (RKE2: `<prog>-Node-*`).
pub const NODE_NAME_HEADER: &str = "rke2-Node-Name";
pub const NODE_PASSWORD_HEADER: &str = "rke2-Node-Password";
pub const NODE_IP_HEADER: &str = "rke2-Node-IP";

struct NodeRequest {
    name: String,
    ips: Vec<IpAddr>,
}

async fn node_request(ctx: &Ctx, headers: &HeaderMap, conn: &ConnInfo) -> Result<NodeRequest> {
    let caller = auth::authenticate(ctx, headers, conn).await?;
    caller.require(super::AGENT_ROLES)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let name = header(NODE_NAME_HEADER)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| SupervisorError::BadRequest("node name not set".into()))?
        .to_ascii_lowercase();
    crate::validation::validate_dns_subdomain(&name)
        .map_err(|e| SupervisorError::BadRequest(format!("invalid node name: {e}")))?;
    if let Caller::Node { name: cert_name } = &caller
        && cert_name != &name
    {
        return Err(SupervisorError::BadRequest(
            "header node name does not match auth node name".into(),
        ));
    }
    let password = header(NODE_PASSWORD_HEADER)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| SupervisorError::BadRequest("node password not set".into()))?;
    let mut ips = Vec::new();
    for ip in header(NODE_IP_HEADER)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        ips.push(
            ip.parse::<IpAddr>()
                .map_err(|_| SupervisorError::BadRequest(format!("invalid node IP \"{ip}\"")))?,
        );
    }
    let store = ctx
        .store
        .get()
        .ok_or_else(|| SupervisorError::NotReady("runtime core not ready".into()))?;
    match node_password::check_or_store(&Storage::new(store.clone()), &name, password).await {
        Ok(()) => {}
        Err(NodePasswordError::Mismatch(n)) => {
            tracing::warn!(component = "supervisor", node = %n, remote_addr = %conn.remote, "node password rejected");
            return Err(SupervisorError::Forbidden);
        }
        Err(NodePasswordError::Api(e)) => return Err(SupervisorError::NotReady(e.to_string())),
    }
    Ok(NodeRequest { name, ips })
}

fn pem_response(pem: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], pem).into_response()
}

/// `POST /v1-rke2/serving-kubelet.crt`.
pub async fn serving_kubelet(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    if method != Method::POST {
        return Err(SupervisorError::MethodNotAllowed);
    }
    let req = node_request(&ctx, &headers, &conn).await?;
    let mut sans = vec![
        req.name.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    sans.extend(req.ips.iter().map(|ip| ip.to_string()));
    let spec = LeafSpec::server(&req.name, sans);
    let pem = ctx
        .server_ca
        .sign_csr(&body, &spec)
        .map_err(|e| SupervisorError::BadRequest(e.to_string()))?;
    tracing::info!(component = "supervisor", node = %req.name, remote_addr = %conn.remote, "issued serving certificate");
    Ok(pem_response(pem))
}

/// `POST /v1-rke2/client-kubelet.crt`.
pub async fn client_kubelet(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    if method != Method::POST {
        return Err(SupervisorError::MethodNotAllowed);
    }
    let req = node_request(&ctx, &headers, &conn).await?;
    let spec = LeafSpec::client(&format!("system:node:{}", req.name), &["system:nodes"]);
    let pem = ctx
        .client_ca
        .sign_csr(&body, &spec)
        .map_err(|e| SupervisorError::BadRequest(e.to_string()))?;
    tracing::info!(component = "supervisor", node = %req.name, remote_addr = %conn.remote, "issued kubelet client certificate");
    Ok(pem_response(pem))
}

#[derive(serde::Deserialize)]
struct RotateBody {
    #[serde(rename = "newToken", default)]
    new_token: String,
}

/// `PUT /v1-rke2/token` (`server` credentials): rotates the server token cluster-wide.
pub async fn rotate_token(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    auth::authenticate(&ctx, &headers, &conn)
        .await?
        .require(&[Role::Server])?;
    let req: RotateBody = serde_json::from_slice(&body)
        .map_err(|e| SupervisorError::BadRequest(format!("invalid body: {e}")))?;
    let new = (!req.new_token.is_empty()).then_some(req.new_token);
    match crate::server::token_ops::rotate_server_token(&ctx, new).await {
        Ok(_) => Ok((
            [(header::CONTENT_TYPE, "text/plain")],
            "Token rotated, restart rke2 nodes with new token\n",
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}
