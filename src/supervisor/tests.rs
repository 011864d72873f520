//! Supervisor authentication and node registration over the in-memory store, through the real
//! router: tokens, bootstrap tokens, client certificates, node passwords. No etcd, no sockets.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::cluster::admin::{self, TokenRequest};
use crate::cluster::context::{Ctx, test_context};
use crate::datastore::Datastore;
use crate::datastore::memory::MemoryStore;
use crate::https::{CertIdentity, ConnInfo};
use crate::protocol;

struct Supervisor {
    ctx: Ctx,
    router: Router,
    _dir: tempfile::TempDir,
}

fn supervisor() -> Supervisor {
    let dir = tempfile::tempdir().unwrap();
    let ctx = test_context(dir.path(), Some(Datastore::from_impl(MemoryStore::new())));
    Supervisor {
        router: super::router(ctx.clone()),
        ctx,
        _dir: dir,
    }
}

/// How a request authenticates.
enum As<'a> {
    Nobody,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
    Header(&'a str),
    Cert(&'a str, &'a str),
}

impl Supervisor {
    async fn call(
        &self,
        who: As<'_>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut b = Request::builder().method(method).uri(path);
        let mut identity = None;
        match who {
            As::Nobody => {}
            As::Basic(user, pw) => {
                let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
                b = b.header("authorization", format!("Basic {cred}"));
            }
            As::Bearer(t) => b = b.header("authorization", format!("Bearer {t}")),
            As::Header(v) => b = b.header("authorization", v),
            As::Cert(user, group) => {
                identity = Some(CertIdentity {
                    user: user.into(),
                    groups: vec![group.into()],
                })
            }
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(Body::from(body)).unwrap();
        req.extensions_mut().insert(ConnInfo {
            remote: "127.0.0.3:40000".parse().unwrap(),
            local: "127.0.0.2:9345".parse().unwrap(),
            identity,
            unauthenticated: Default::default(),
        });
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    }

    async fn get(&self, who: As<'_>, path: &str) -> StatusCode {
        self.call(who, Method::GET, path, &[], Vec::new()).await.0
    }

    /// Asks for a kubelet client certificate for `node` with `password`.
    async fn register(&self, who: As<'_>, node: &str, password: &str) -> (StatusCode, Vec<u8>) {
        let (_, csr) = crate::pki::new_key_and_csr().unwrap();
        self.call(
            who,
            Method::POST,
            protocol::CLIENT_KUBELET,
            &[
                (protocol::NODE_NAME_HEADER, node),
                (protocol::NODE_PASSWORD_HEADER, password),
            ],
            csr,
        )
        .await
    }
}

#[tokio::test]
async fn the_agent_token_opens_agent_routes_and_a_wrong_one_is_401() {
    let s = supervisor();
    let (status, body) = s
        .call(
            As::Basic("node", "agent-pw"),
            Method::GET,
            protocol::CONFIG,
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let config: protocol::ControlConfig = serde_json::from_slice(&body).unwrap();
    assert_eq!(config.cluster_dns, "10.43.0.10");
    assert_eq!(
        s.get(As::Basic("node", "wrong"), protocol::CONFIG).await,
        401
    );
    assert_eq!(
        s.get(As::Basic("nobody", "agent-pw"), protocol::CONFIG)
            .await,
        401
    );
    assert_eq!(s.get(As::Header("Basic !!!"), protocol::CONFIG).await, 401);
    assert_eq!(s.get(As::Header("Digest x"), protocol::CONFIG).await, 401);
    // No credentials at all: an anonymous caller has no role.
    assert_eq!(s.get(As::Nobody, protocol::CONFIG).await, 403);
    // Public routes need nothing.
    assert_eq!(s.get(As::Nobody, protocol::PING).await, 200);
    assert_eq!(s.get(As::Nobody, protocol::CACERTS).await, 200);
}

#[tokio::test]
async fn the_server_token_is_for_servers_only() {
    let s = supervisor();
    let caller = super::auth::authenticate(
        &s.ctx,
        &[(
            axum::http::header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("server:server-pw")
            )
            .parse()
            .unwrap(),
        )]
        .into_iter()
        .collect(),
        &ConnInfo {
            remote: "127.0.0.3:1".parse().unwrap(),
            local: "127.0.0.2:9345".parse().unwrap(),
            identity: None,
            unauthenticated: Default::default(),
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(caller, super::auth::Caller::Server { .. }),
        "{caller:?}"
    );
    // Agent routes refuse the server user alone; the agent token may not read server data.
    assert_eq!(
        s.get(As::Basic("server", "server-pw"), protocol::CONFIG)
            .await,
        403
    );
    assert_eq!(
        s.get(As::Basic("node", "agent-pw"), protocol::SERVER_BOOTSTRAP)
            .await,
        403
    );
    assert_eq!(
        s.get(As::Basic("node", "agent-pw"), protocol::DB_INFO)
            .await,
        403
    );
}

#[tokio::test]
async fn bootstrap_tokens_open_agent_routes_until_deleted() {
    let s = supervisor();
    let full = admin::create_token(
        &s.ctx,
        &TokenRequest {
            ttl_seconds: 3600,
            description: "test".into(),
            usages: Vec::new(),
        },
    )
    .await
    .unwrap();
    let bearer = full.expose().split_once("::").unwrap().1.to_string();
    assert_eq!(s.get(As::Bearer(&bearer), protocol::CONFIG).await, 200);
    let (id, secret) = bearer.split_once('.').unwrap();
    let wrong = format!(
        "{id}.{}",
        if secret.starts_with('a') { "b" } else { "a" }.repeat(16)
    );
    assert_eq!(s.get(As::Bearer(&wrong), protocol::CONFIG).await, 401);
    assert_eq!(
        s.get(As::Bearer("not-a-token"), protocol::CONFIG).await,
        401
    );
    // Bootstrap tokens never make a server.
    assert_eq!(
        s.get(As::Bearer(&bearer), protocol::SERVER_BOOTSTRAP).await,
        403
    );
    admin::delete_token(&s.ctx, id).await.unwrap();
    assert_eq!(s.get(As::Bearer(&bearer), protocol::CONFIG).await, 401);
}

#[tokio::test]
async fn client_certificates_authenticate_nodes_and_admins() {
    let s = supervisor();
    assert_eq!(
        s.get(As::Cert("system:node:n1", "system:nodes"), protocol::CONFIG)
            .await,
        200
    );
    // A masters certificate is not a node, and a node certificate of a foreign group is nobody.
    assert_eq!(
        s.get(As::Cert("admin", "system:masters"), protocol::CONFIG)
            .await,
        403
    );
    assert_eq!(
        s.get(As::Cert("system:node:n1", "tenants"), protocol::CONFIG)
            .await,
        403
    );
}

#[tokio::test]
async fn a_node_name_is_bound_to_the_first_node_password() {
    let s = supervisor();
    let (status, pem) = s
        .register(As::Basic("node", "agent-pw"), "n1", "pw-1")
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&pem));
    assert!(String::from_utf8_lossy(&pem).contains("BEGIN CERTIFICATE"));
    // The same name with another password is another machine: 403, and no certificate.
    let (status, body) = s
        .register(As::Basic("node", "agent-pw"), "n1", "pw-2")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!String::from_utf8_lossy(&body).contains("BEGIN CERTIFICATE"));
    // The first machine keeps its name; a bad token is 401 before any password check.
    let (status, _) = s
        .register(As::Basic("node", "agent-pw"), "n1", "pw-1")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.register(As::Basic("node", "bad"), "n1", "pw-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A node certificate may only ask for its own name.
    let (status, _) = s
        .register(As::Cert("system:node:n2", "system:nodes"), "n1", "pw-1")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logins_use_the_cluster_record_once_etcd_has_one() {
    let s = supervisor();
    let store = s.ctx.store.get().unwrap().clone();
    // Another server rotated the agent password and published the record.
    let mut rotated = s.ctx.passwd();
    rotated.set(
        "node",
        crate::token::Secret::new("agent-pw-2"),
        crate::token::AGENT_GROUP,
    );
    crate::cluster::credentials::publish(&store, &rotated)
        .await
        .unwrap();
    assert_eq!(
        s.get(As::Basic("node", "agent-pw-2"), protocol::CONFIG)
            .await,
        200
    );
    assert_eq!(
        s.get(As::Basic("node", "agent-pw"), protocol::CONFIG).await,
        401
    );
    // Concurrent logins each read the record and all succeed.
    let s = Arc::new(s);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let s = s.clone();
        set.spawn(async move {
            s.get(As::Basic("node", "agent-pw-2"), protocol::CONFIG)
                .await
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), 200);
    }
}
