//! A node's JSON client of the Kubernetes API, authenticated with the node's identity. Both the
//! node agent (crate::agent) and the node runtime (crate::runtime) use it; it lives below both so
//! neither depends on the other (docs/architecture.md §3).

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::https::{ClientError, ClientIdentity, HttpsClient, Response, ServerTrust, TlsError};

/// API access with the node's identity.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: HttpsClient,
    pub(crate) base: String,
}

impl Api {
    /// A client of the API at `api_url` that trusts `ca_pem` and presents the node's
    /// certificate, verifying the server as `server_name` when given.
    pub(crate) fn new(
        api_url: &str,
        ca_pem: &str,
        identity: ClientIdentity,
        server_name: Option<&str>,
        timeout: Duration,
    ) -> Result<Api, TlsError> {
        let mut client = HttpsClient::new(
            &ServerTrust::Ca(ca_pem.to_string()),
            Some(&identity),
            timeout,
        )?;
        if let Some(n) = server_name {
            client = client.with_server_name(n);
        }
        Ok(Api {
            client,
            base: api_url.trim_end_matches('/').to_string(),
        })
    }

    /// The same client, keeping connections open for the next request (for callers that talk
    /// to the API all the time).
    pub(crate) fn with_keep_alive(mut self) -> Api {
        self.client = self.client.with_keep_alive();
        self
    }

    /// Streams the watch at `path` (its query asking `watch=true`) and wakes `wake` at every
    /// event; the watch is opened again a second after it ends or fails, until `cancel`.
    pub(crate) async fn wake_on_watch(
        &self,
        path: &str,
        wake: &Notify,
        cancel: &CancellationToken,
    ) {
        let url = format!("{}{path}", self.base);
        let headers = [("accept", "application/json".to_string())];
        loop {
            if let Ok((200, mut body)) = self.client.stream(http::Method::GET, &url, &headers).await
            {
                loop {
                    let frame = tokio::select! {
                        _ = cancel.cancelled() => return,
                        f = body.frame() => f,
                    };
                    match frame {
                        Some(Ok(_)) => wake.notify_one(),
                        _ => break,
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One request to `base` + `path`, JSON accepted, `body` serialised as JSON when given.
    pub(crate) async fn call(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Result<Response, ClientError> {
        let mut headers = vec![("accept", "application/json".to_string())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.to_string()));
        }
        let body = body.map(|b| serde_json::to_vec(&b).expect("serialises"));
        self.client
            .request(method, &format!("{}{path}", self.base), &headers, body)
            .await
    }
}
