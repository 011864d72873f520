//! Agent certificate routes (docs/protocol.md §2.3): the agent POSTs a DER CSR with its node
//! name, password and IPs; the server checks the node password and signs with the kubelet serving CA
//! (serving-kubelet) or client CA (client-kubelet, `system:node:<name>` / `system:nodes`).
//! Only the CSR's public key is used; names come from the request's authenticated headers.
//! The request is validated completely (CSR included) before the node password is stored.
//!
//! Kubelet serving certificates come from a CA no API client trusts, and carry only the node's
//! name and those of its addresses that belong to no server and no other node
//! (docs/security.md). Also the server-token rotation route.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};

use super::auth::{self, Caller, Role};
use super::node_addresses::{NodeAddresses, reported_addresses};
use super::{Result, SupervisorError};
use crate::cluster::context::Ctx;
use crate::cluster::node_password::{self, NodePasswordError};
use crate::https::ConnInfo;
use crate::pki::LeafSpec;
use crate::protocol::{NODE_IP_HEADER, NODE_NAME_HEADER, NODE_PASSWORD_HEADER};
use crate::storage::Storage;

struct NodeRequest {
    name: String,
    ips: Vec<IpAddr>,
}

/// Node names that would let a kubelet certificate stand for the API (what agents and
/// kubeconfigs verify the API as), refused on the certificate routes.
pub fn reserved_node_name(ctx: &Ctx, name: &str) -> bool {
    let domain = format!("kubernetes.default.svc.{}", ctx.config.cluster_domain);
    [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .contains(&name)
        || name == domain
        || ctx
            .config
            .tls_san
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
        || ctx
            .config
            .node
            .server
            .as_ref()
            .is_some_and(|s| s.host.eq_ignore_ascii_case(name))
}

async fn node_request(
    ctx: &Ctx,
    headers: &HeaderMap,
    conn: &ConnInfo,
    csr: &[u8],
) -> Result<NodeRequest> {
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
    if reserved_node_name(ctx, &name) {
        return Err(SupervisorError::BadRequest(format!(
            "invalid node name: \"{name}\" is reserved for the API server"
        )));
    }
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
    // Everything is checked before the password is stored: a bad request claims no name.
    crate::pki::parse_csr(csr)?;
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
        Err(e) => return Err(SupervisorError::NodePassword(e)),
    }
    Ok(NodeRequest { name, ips })
}

/// SANs of a kubelet serving certificate: the node's name and each requested address that is
/// not loopback, unspecified or multicast and not in `foreign` (addresses of servers and other
/// nodes). Returns the SANs and the refused addresses.
pub fn kubelet_serving_sans(
    name: &str,
    requested: &[IpAddr],
    foreign: &HashSet<IpAddr>,
) -> (Vec<String>, Vec<IpAddr>) {
    let mut sans = vec![name.to_string()];
    let mut refused = Vec::new();
    for ip in requested {
        let localhost =
            *ip == IpAddr::from([127, 0, 0, 1]) || *ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]);
        let own = !localhost && !ip.is_unspecified() && !ip.is_multicast() && !foreign.contains(ip);
        if own {
            if !sans.contains(&ip.to_string()) {
                sans.push(ip.to_string());
            }
        } else {
            refused.push(*ip);
        }
    }
    (sans, refused)
}

/// Which of `requested` a kubelet certificate of `node` must not hold: this server's serving
/// names (tls-san, the fixed registration address, its node and service IPs), every published
/// API endpoint, every etcd member's host, and the addresses other Nodes report (from the
/// [`NodeAddresses`] index, O(1) in the number of Nodes; from etcd until the index is ready).
async fn foreign_addresses(
    ctx: &Ctx,
    index: &NodeAddresses,
    node: &str,
    requested: &[IpAddr],
) -> Result<HashSet<IpAddr>> {
    let mut out: HashSet<IpAddr> = crate::cluster::context::serving_sans(&ctx.config, &ctx.node)
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    for a in super::list_apiservers(ctx).await? {
        if let Ok(sa) = a.parse::<std::net::SocketAddr>() {
            out.insert(sa.ip());
        }
    }
    if let Some(client) = ctx.etcd.get() {
        let members = crate::etcd::member_list(client).await?;
        for url in members
            .iter()
            .flat_map(|m| m.peer_urls.iter().chain(&m.client_urls))
        {
            if let Some(ip) = url_host_ip(url) {
                out.insert(ip);
            }
        }
    }
    let store = ctx
        .watching
        .get()
        .ok_or_else(|| SupervisorError::NotReady("runtime core not ready".into()))?;
    if let Some(claimed) = index.claimed_by_others(store, node, requested) {
        out.extend(claimed);
        return Ok(out);
    }
    let nodes = &crate::registry::NODES;
    let page = Storage::new(store.clone())
        .list(nodes, None, &Default::default())
        .await?;
    for n in page
        .items
        .iter()
        .filter(|n| n.pointer("/metadata/name").and_then(|v| v.as_str()) != Some(node))
    {
        out.extend(reported_addresses(n));
    }
    Ok(out)
}

fn url_host_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h,
        None => authority,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn pem_response(pem: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], pem).into_response()
}

/// `POST /v1-rke2/serving-kubelet.crt`.
pub async fn serving_kubelet(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    Extension(index): Extension<Arc<NodeAddresses>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    if method != Method::POST {
        return Err(SupervisorError::MethodNotAllowed);
    }
    let req = node_request(&ctx, &headers, &conn, &body).await?;
    let ca = ctx
        .kubelet_ca
        .get()
        .ok_or_else(|| SupervisorError::NotReady("kubelet serving CA not loaded yet".into()))?;
    let foreign = foreign_addresses(&ctx, &index, &req.name, &req.ips).await?;
    let (sans, refused) = kubelet_serving_sans(&req.name, &req.ips, &foreign);
    if !refused.is_empty() {
        tracing::warn!(component = "supervisor", node = %req.name, remote_addr = %conn.remote,
            "left addresses of servers, other nodes or loopback out of a kubelet serving certificate: {refused:?}");
    }
    let pem = ca.sign_csr(&body, &LeafSpec::server(&req.name, sans))?;
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
    let req = node_request(&ctx, &headers, &conn, &body).await?;
    let spec = LeafSpec::client(&format!("system:node:{}", req.name), &["system:nodes"]);
    let pem = ctx.client_ca.sign_csr(&body, &spec)?;
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
    match crate::cluster::token_ops::rotate_server_token(&ctx, new).await {
        Ok(_) => Ok((
            [(header::CONTENT_TYPE, "text/plain")],
            "Token rotated, restart rke2 nodes with new token\n",
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_serving_sans_keep_only_the_nodes_own_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let foreign: HashSet<IpAddr> = [ip("10.0.0.100"), ip("10.0.0.1"), ip("10.43.0.1")].into();
        let (sans, refused) = kubelet_serving_sans(
            "a1",
            &[
                ip("10.0.0.11"),
                ip("10.0.0.100"),
                ip("10.0.0.1"),
                ip("127.0.0.1"),
                ip("::1"),
                ip("0.0.0.0"),
                ip("10.0.0.11"),
                ip("127.0.3.11"),
            ],
            &foreign,
        );
        assert_eq!(sans, vec!["a1", "10.0.0.11", "127.0.3.11"]);
        assert_eq!(
            refused,
            vec![
                ip("10.0.0.100"),
                ip("10.0.0.1"),
                ip("127.0.0.1"),
                ip("::1"),
                ip("0.0.0.0")
            ]
        );
        assert!(!sans.iter().any(|s| s == "localhost"));
    }

    #[test]
    fn hosts_of_member_urls() {
        assert_eq!(
            url_host_ip("https://127.0.1.2:2380"),
            Some("127.0.1.2".parse().unwrap())
        );
        assert_eq!(
            url_host_ip("https://[::1]:2379"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(url_host_ip("https://name:2379"), None);
    }
}
