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

    /// Streams the watch at `path` (its query asking `watch=true` from a resourceVersion) and
    /// passes each event's type and object to `on_event` as it arrives, until the watch ends or
    /// fails, `on_event` answers `false` (say, an ERROR event such as 410 Gone), or `cancel`.
    /// The caller lists again afterwards: events may have been missed.
    pub(crate) async fn stream_events(
        &self,
        path: &str,
        cancel: &CancellationToken,
        mut on_event: impl FnMut(&str, Value) -> bool,
    ) {
        let url = format!("{}{path}", self.base);
        let headers = [("accept", "application/json".to_string())];
        let Ok((200, mut body)) = self.client.stream(http::Method::GET, &url, &headers).await
        else {
            return;
        };
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::select! {
                _ = cancel.cancelled() => return,
                f = body.frame() => f,
            };
            let Some(Ok(frame)) = frame else { return };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(mut event) = serde_json::from_slice::<Value>(&line) else {
                    return;
                };
                let kind = event["type"].as_str().unwrap_or("").to_string();
                if !on_event(&kind, event["object"].take()) {
                    return;
                }
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
