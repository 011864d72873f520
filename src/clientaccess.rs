//! Talking to a cluster's supervisor as a joining node (docs/protocol.md §1.2): fetch `/cacerts`,
//! refuse it unless its hash equals the token's CA hash, prove the server holds a certificate
//! from that CA, then make authenticated requests (basic auth with the role's user, or a
//! bootstrap token as bearer).

use std::time::Duration;

use crate::https::{self, ClientError, HttpsClient, Response, ServerTrust};
use crate::token::{self, Credentials, JoinToken};

/// Default timeout of registration requests (k3s: 10 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a cluster could not be accessed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "token CA hash does not match the Cluster CA certificate hash: {token} != {server} (the token was issued by another cluster, or someone is impersonating the server)"
    )]
    CaHashMismatch { token: String, server: String },
    #[error(
        "CA cert validation failed: the server at {url} does not present a certificate signed by its own CA: {message}"
    )]
    CaValidation { url: String, message: String },
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{url}: {status} {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    Tls(#[from] https::TlsError),
}

impl AccessError {
    /// The HTTP status of a refused request, if that is what happened.
    pub fn status(&self) -> Option<u16> {
        match self {
            AccessError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An authenticated, CA-pinned connection to a cluster's supervisor.
#[derive(Clone)]
pub struct ClusterAccess {
    pub base_url: String,
    /// The cluster CA bundle (as served on `/cacerts`).
    pub ca_bundle: Vec<u8>,
    pub ca_hash: String,
    authorization: String,
    client: HttpsClient,
}

impl std::fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn authorization(token: &JoinToken, user: &str) -> String {
    match &token.credentials {
        Credentials::Basic { password, .. } => https::basic_auth(user, password.expose()),
        Credentials::Bootstrap { id, secret } => format!("Bearer {id}.{}", secret.expose()),
    }
}

impl ClusterAccess {
    /// Fetches and validates the cluster CA at `base_url` (e.g. `https://10.0.0.1:9345`) and
    /// prepares requests as `user` (`server` or `node`). `server_name` overrides the name the
    /// server certificate is checked against (used behind a local load balancer).
    pub async fn connect(
        base_url: &str,
        token: &JoinToken,
        user: &str,
        server_name: Option<&str>,
    ) -> Result<ClusterAccess, AccessError> {
        let base_url = base_url.trim_end_matches('/').to_string();
        let url = format!("{base_url}/cacerts");
        let insecure = HttpsClient::new(&ServerTrust::InsecureForCaFetch, None, REQUEST_TIMEOUT)?;
        let resp = insecure.request(http::Method::GET, &url, &[], None).await?;
        if !resp.is_success() {
            return Err(AccessError::Status {
                url,
                status: resp.status,
                message: resp.error_message(),
            });
        }
        let bundle = resp.body.to_vec();
        let server_hash = token::ca_hash(&bundle);
        match &token.ca_hash {
            Some(expected) if *expected != server_hash => {
                return Err(AccessError::CaHashMismatch {
                    token: expected.clone(),
                    server: server_hash,
                });
            }
            Some(_) => {}
            None => tracing::warn!(
                component = "clientaccess",
                "the token does not include a CA hash; the cluster CA is trusted on first use. \
                 Use the full token from the server's node-token file to verify it"
            ),
        }
        let bundle_text = String::from_utf8_lossy(&bundle).into_owned();
        // Keep-alive: a registration's requests (this CA proof, the node password and two
        // CSRs, the client CA) share one TLS connection, so behind a load balancer they reach
        // one server, whose verified-password cache then spares the second scrypt run
        // (docs/scale.md). A closed pooled connection is replaced by a fresh one.
        let mut client = HttpsClient::new(&ServerTrust::Ca(bundle_text), None, REQUEST_TIMEOUT)?
            .with_keep_alive();
        if let Some(name) = server_name {
            client = client.with_server_name(name);
        }
        // Prove the server owns a certificate from the CA it just served.
        client
            .request(http::Method::GET, &url, &[], None)
            .await
            .map_err(|e| AccessError::CaValidation {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(ClusterAccess {
            base_url,
            ca_bundle: bundle,
            ca_hash: server_hash,
            authorization: authorization(token, user),
            client,
        })
    }

    /// Sends an authenticated request; non-2xx answers become [`AccessError::Status`].
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, AccessError> {
        let url = format!("{}{path}", self.base_url);
        let mut all: Vec<(&str, String)> = vec![("authorization", self.authorization.clone())];
        all.extend(headers.iter().cloned());
        let resp = self.client.request(method, &url, &all, body).await?;
        if !resp.is_success() {
            return Err(AccessError::Status {
                url,
                status: resp.status,
                message: resp.error_message(),
            });
        }
        Ok(resp)
    }

    pub async fn get(&self, path: &str) -> Result<Response, AccessError> {
        self.request(http::Method::GET, path, &[], None).await
    }

    /// GET and parse JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, AccessError> {
        let resp = self.get(path).await?;
        serde_json::from_slice(&resp.body).map_err(|e| AccessError::Status {
            url: format!("{}{path}", self.base_url),
            status: resp.status,
            message: format!("unexpected response body: {e}"),
        })
    }
}

/// Whether an error may go away by itself (server not up yet, restarting, behind a load
/// balancer that has no live backend yet) as opposed to a refusal that will not.
pub fn is_transient(e: &AccessError) -> bool {
    match e {
        AccessError::Client(_) => true,
        AccessError::Status { status, .. } => *status >= 500 || *status == 429,
        AccessError::CaValidation { .. } => true,
        AccessError::CaHashMismatch { .. } | AccessError::Tls(_) => false,
    }
}

/// Longest interval between attempts while a cluster is unreachable (k3s: a fixed 2 s).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// First retry interval: nodes started together with the first server get in as soon as it
/// answers instead of waiting a full interval.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// How long a refused credential (HTTP 401/403) is retried. A server that is still starting
/// (or a load balancer that reached one that is) may refuse a good token for a moment; a token
/// that is still refused after this long is wrong, and the node stops saying so.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(30);

/// What to do after a failed attempt that started `elapsed` after the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again: the cluster may be unreachable or still starting.
    Retry,
    /// Stop: a definitive refusal (CA hash mismatch, or credentials refused for too long).
    Stop,
}

/// The retry policy: connection errors and 5xx always retry, a refused credential retries for
/// [`REFUSAL_GRACE`], and only a CA that differs from the token's hash (or a local TLS
/// setup error) stops at once.
pub fn retry_decision(e: &AccessError, elapsed: Duration) -> RetryDecision {
    let refused = matches!(e.status(), Some(401 | 403));
    if is_transient(e) || (refused && elapsed < REFUSAL_GRACE) {
        RetryDecision::Retry
    } else {
        RetryDecision::Stop
    }
}

/// Runs `f` until it succeeds or [`retry_decision`] says stop, backing off from 250 ms to
/// [`RETRY_INTERVAL`] and logging every retry at info with its reason (every 15th at warn, as
/// a long outage deserves attention). `None` when cancelled.
pub async fn retry<T, F, Fut>(
    cancel: &tokio_util::sync::CancellationToken,
    what: &str,
    mut f: F,
) -> Option<Result<T, AccessError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AccessError>>,
{
    let started = std::time::Instant::now();
    let mut attempts = 0u32;
    let mut delay = FIRST_RETRY;
    loop {
        match f().await {
            Ok(v) => return Some(Ok(v)),
            Err(e) => match retry_decision(&e, started.elapsed()) {
                RetryDecision::Stop => return Some(Err(e)),
                RetryDecision::Retry => {
                    attempts += 1;
                    let hint = if matches!(e.status(), Some(401 | 403)) {
                        " (servers may still be starting)"
                    } else {
                        ""
                    };
                    if attempts.is_multiple_of(15) {
                        tracing::warn!(
                            component = "clientaccess",
                            "{what} failed {attempts} times, retrying in {delay:?}: {e}{hint}"
                        );
                    } else {
                        tracing::info!(
                            component = "clientaccess",
                            "{what} failed, retrying in {delay:?}: {e}{hint}"
                        );
                    }
                }
            },
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16) -> AccessError {
        AccessError::Status {
            url: "https://lb:9345/v1-rke2/config".into(),
            status: code,
            message: "unauthorized".into(),
        }
    }

    #[test]
    fn only_a_ca_mismatch_or_a_lasting_refusal_stops() {
        let early = Duration::from_secs(1);
        assert_eq!(retry_decision(&status(401), early), RetryDecision::Retry);
        assert_eq!(retry_decision(&status(403), early), RetryDecision::Retry);
        assert_eq!(retry_decision(&status(503), early), RetryDecision::Retry);
        assert_eq!(
            retry_decision(&status(503), REFUSAL_GRACE * 10),
            RetryDecision::Retry
        );
        assert_eq!(
            retry_decision(&status(401), REFUSAL_GRACE),
            RetryDecision::Stop
        );
        let mismatch = AccessError::CaHashMismatch {
            token: "a".into(),
            server: "b".into(),
        };
        assert_eq!(retry_decision(&mismatch, early), RetryDecision::Stop);
    }

    /// A 401 while the servers start (then success) is retried, not fatal.
    #[tokio::test]
    async fn a_401_while_servers_start_is_retried() {
        let calls = AtomicU32::new(0);
        let cancel = tokio_util::sync::CancellationToken::new();
        let r = retry(&cancel, "reading the cluster configuration", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(status(401)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap().unwrap(), 2);
        let r: Option<Result<(), _>> = retry(&cancel, "cluster CA check", || async {
            Err(AccessError::CaHashMismatch {
                token: "a".into(),
                server: "b".into(),
            })
        })
        .await;
        assert!(matches!(r, Some(Err(AccessError::CaHashMismatch { .. }))));
    }
}
