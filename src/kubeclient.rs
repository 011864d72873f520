//! A node's JSON client of the Kubernetes API, authenticated with the node's identity. Both the
//! node agent (crate::agent) and the node runtime (crate::runtime) use it; it lives below both so
//! neither depends on the other (docs/architecture.md §3).

use serde_json::Value;

use crate::https::{ClientError, HttpsClient, Response};

/// API access with the node's identity.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: HttpsClient,
    pub(crate) base: String,
}

impl Api {
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
