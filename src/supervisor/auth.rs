//! Who is calling the supervisor (docs/protocol.md §2.2): basic auth against the credentials store
//! (`server` -> rke2:server, `node` -> rke2:agent), kubeadm bootstrap tokens as bearer tokens
//! (system:bootstrappers, agent routes only, never servers), or a client certificate signed by
//! the client CA (system:nodes, system:masters). A wrong secret is 401; a missing or
//! insufficient identity is 403.

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::SupervisorError;
use crate::cluster::context::Ctx;
use crate::https::ConnInfo;
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
    let caller = identify(ctx, headers, conn).await?;
    // A connection that proved its credentials no longer counts among its address's
    // unauthenticated ones (docs/limits.md): agents behind a load balancer share one address.
    if !matches!(caller, Caller::Anonymous) {
        conn.unauthenticated.authenticated();
    }
    Ok(caller)
}

async fn identify(
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
    let group = crate::cluster::credentials::authenticate(ctx, user, password).await;
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
    match crate::cluster::bootstrap_tokens::verify(ctx, id, secret).await {
        Ok(true) => Ok(Caller::Bootstrapper {
            token_id: id.to_string(),
        }),
        Ok(false) => Err(SupervisorError::Unauthorized),
        Err(e) => Err(e.into()),
    }
}

/// Per-source-address throttling of failed logins (a token bucket per address): each 401
/// takes a token; with none left, requests carrying credentials from that address get 429 with
/// `Retry-After` until a token refills. Failures are logged at warn at most once per
/// [`LoginThrottle::LOG_EVERY`] per address, with the count of the ones not logged; the
/// credentials themselves are never logged.
#[derive(Debug)]
pub struct LoginThrottle {
    capacity: f64,
    refill_per_sec: f64,
    state: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: std::time::Instant,
    last_log: Option<std::time::Instant>,
    unlogged: u64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new(10, 1.0)
    }
}

impl LoginThrottle {
    /// How often failures from one address are logged.
    pub const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    /// Addresses tracked at most; full buckets are forgotten first.
    const MAX_TRACKED: usize = 10_000;

    /// `capacity` failures in a burst, then `refill_per_sec` per second.
    pub fn new(capacity: u32, refill_per_sec: f64) -> Self {
        LoginThrottle {
            capacity: f64::from(capacity),
            refill_per_sec,
            state: Default::default(),
        }
    }

    fn refilled(&self, b: &mut Bucket, now: std::time::Instant) {
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        b.updated = now;
    }

    /// `Some(wait)` when `ip` has no failure tokens left: how long until one refills.
    pub fn throttled(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let b = state.get_mut(&ip)?;
        self.refilled(b, now);
        (b.tokens < 1.0)
            .then(|| std::time::Duration::from_secs_f64((1.0 - b.tokens) / self.refill_per_sec))
    }

    /// Records a failed login from `ip` on `path`, logging it (rate-limited).
    pub fn failed(&self, ip: std::net::IpAddr, path: &str) {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.len() >= Self::MAX_TRACKED && !state.contains_key(&ip) {
            let capacity = self.capacity;
            for b in state.values_mut() {
                self.refilled(b, now);
            }
            state.retain(|_, b| b.tokens < capacity);
            if state.len() >= Self::MAX_TRACKED {
                // Every tracked address is failing: refuse to grow, but still throttle below.
                tracing::warn!(
                    component = "supervisor",
                    "failed login from {ip} on {path}; too many failing addresses to track"
                );
                return;
            }
        }
        let b = state.entry(ip).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
            last_log: None,
            unlogged: 0,
        });
        self.refilled(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
        if b.last_log
            .is_none_or(|t| now.duration_since(t) >= Self::LOG_EVERY)
        {
            let more = match b.unlogged {
                0 => String::new(),
                n => format!(" ({n} more since the last report)"),
            };
            let throttled = if b.tokens < 1.0 {
                "; further attempts are throttled"
            } else {
                ""
            };
            tracing::warn!(
                component = "supervisor",
                remote_addr = %ip,
                "failed login on {path}: wrong credentials{more}{throttled}"
            );
            b.last_log = Some(now);
            b.unlogged = 0;
        } else {
            b.unlogged += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_after_burst_and_refill() {
        let t = LoginThrottle::new(3, 1000.0);
        let ip: std::net::IpAddr = [127, 0, 0, 2].into();
        let other: std::net::IpAddr = [127, 0, 0, 3].into();
        assert!(t.throttled(ip).is_none());
        let slow = LoginThrottle::new(3, 0.5);
        for _ in 0..3 {
            assert!(slow.throttled(ip).is_none());
            slow.failed(ip, "/v1-rke2/readyz");
        }
        let wait = slow.throttled(ip).expect("throttled after the burst");
        assert!(wait > std::time::Duration::from_secs(1), "{wait:?}");
        assert!(slow.throttled(other).is_none(), "per address");
        // A fast refill lets the address in again.
        for _ in 0..3 {
            t.failed(ip, "/x");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(t.throttled(ip).is_none());
    }
}
