//! Who is calling the supervisor (docs/protocol.md §2.2): basic auth against the credentials store
//! (`server` -> rke2:server, `node` -> rke2:agent), kubeadm bootstrap tokens as bearer tokens
//! (system:bootstrappers, agent routes only, never servers), or a client certificate signed by
//! the client CA (system:nodes, system:masters). A wrong secret is 401; a missing or
//! insufficient identity is 403.

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::SupervisorError;
use crate::https::ConnInfo;
use crate::server::context::Ctx;
use crate::token::{AGENT_GROUP, SERVER_GROUP, Secret};

/// A role a route may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// rke2:server (basic auth with the server token).
    Server,
    /// rke2:agent (basic auth with the agent token).
    Agent,
    /// system:nodes (kubelet client certificate).
    Node,
    /// system:bootstrappers (a bootstrap token).
    Bootstrapper,
    /// system:masters (admin or supervisor client certificate).
    Masters,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    Server { password: Secret },
    Agent,
    Node { name: String },
    Bootstrapper { token_id: String },
    Masters { user: String },
    Anonymous,
}

impl Caller {
    fn role(&self) -> Option<Role> {
        match self {
            Caller::Server { .. } => Some(Role::Server),
            Caller::Agent => Some(Role::Agent),
            Caller::Node { .. } => Some(Role::Node),
            Caller::Bootstrapper { .. } => Some(Role::Bootstrapper),
            Caller::Masters { .. } => Some(Role::Masters),
            Caller::Anonymous => None,
        }
    }

    /// 403 unless the caller has one of `allowed`.
    pub fn require(&self, allowed: &[Role]) -> Result<(), SupervisorError> {
        match self.role() {
            Some(r) if allowed.contains(&r) => Ok(()),
            _ => Err(SupervisorError::Forbidden),
        }
    }
}

/// Authenticates a request.
pub async fn authenticate(
    ctx: &Ctx,
    headers: &HeaderMap,
    conn: &ConnInfo,
) -> Result<Caller, SupervisorError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| SupervisorError::Unauthorized)?;
        if let Some(encoded) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| SupervisorError::Unauthorized)?;
            let decoded = String::from_utf8(decoded).map_err(|_| SupervisorError::Unauthorized)?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or(SupervisorError::Unauthorized)?;
            return basic(ctx, user, password).await;
        }
        if let Some(token) = value.strip_prefix("Bearer ") {
            return bearer(ctx, token.trim()).await;
        }
        return Err(SupervisorError::Unauthorized);
    }
    if let Some(id) = &conn.identity {
        if id.groups.iter().any(|g| g == "system:masters") {
            return Ok(Caller::Masters {
                user: id.user.clone(),
            });
        }
        if id.groups.iter().any(|g| g == "system:nodes")
            && let Some(name) = id.user.strip_prefix("system:node:")
        {
            return Ok(Caller::Node {
                name: name.to_string(),
            });
        }
    }
    Ok(Caller::Anonymous)
}

async fn basic(ctx: &Ctx, user: &str, password: &str) -> Result<Caller, SupervisorError> {
    let group = crate::server::credentials::authenticate(ctx, user, password).await;
    match group.as_deref() {
        Some(SERVER_GROUP) => Ok(Caller::Server {
            password: Secret::new(password),
        }),
        Some(AGENT_GROUP) => Ok(Caller::Agent),
        _ => Err(SupervisorError::Unauthorized),
    }
}

async fn bearer(ctx: &Ctx, token: &str) -> Result<Caller, SupervisorError> {
    if !crate::token::is_bootstrap_token(token) {
        return Err(SupervisorError::Unauthorized);
    }
    let (id, secret) = token.split_once('.').ok_or(SupervisorError::Unauthorized)?;
    match crate::server::bootstrap_tokens::verify(ctx, id, secret).await {
        Ok(true) => Ok(Caller::Bootstrapper {
            token_id: id.to_string(),
        }),
        Ok(false) => Err(SupervisorError::Unauthorized),
        Err(e) => Err(SupervisorError::NotReady(e.to_string())),
    }
}
