//! Kubernetes API errors and their `Status` objects. Every handler error becomes one of these,
//! and [`ApiError::code`] / [`ApiError::to_status`] map each variant in one exhaustive match.

use serde_json::{Value, json};

use crate::datastore::DatastoreError;
pub use crate::registry::FieldCause;
use crate::storage::ObjectError;

/// An error answered by the Kubernetes API, with what the `Status` object needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    /// A precondition or state conflict other than a stale resourceVersion.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    ConflictWith {
        resource: String,
        name: String,
        message: String,
    },
    /// A server-side apply conflict (upstream's `NewApplyConflict`): one
    /// `FieldManagerConflict` cause per conflicting field.
    #[error("{message}")]
    ApplyConflict { message: String, causes: Vec<Value> },
    #[error("{kind} \"{name}\" is invalid: {}", render_causes(.causes))]
    Invalid {
        kind: String,
        name: String,
        causes: Vec<FieldCause>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// 413, worded as upstream's `NewRequestEntityTooLargeError` (`limit is 3145728`, or the
    /// JSON-patch operation count).
    #[error("Request entity too large: {0}")]
    RequestEntityTooLarge(String),
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: i64, oldest: i64 },
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

use crate::storage::error::render_causes;

impl ApiError {
    /// Shorthand for a single-field `Invalid` error.
    pub fn invalid(kind: &str, name: &str, field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            kind: kind.to_string(),
            name: name.to_string(),
            causes: vec![FieldCause {
                field: field.to_string(),
                message: message.into(),
            }],
        }
    }

    /// HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchResource => 404,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ConflictWith { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::RequestEntityTooLarge(_) => 413,
            ApiError::Expired { .. } => 410,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::Timeout(_) => 504,
            ApiError::Internal(_) => 500,
        }
    }

    /// The Kubernetes `reason` string.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchResource => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. }
            | ApiError::ConflictWith { .. }
            | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::Expired { .. } => "Expired",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `details` object, when the error is about a named object.
    fn details(&self) -> Option<Value> {
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name }
            | ApiError::ConflictWith { resource, name, .. } => {
                Some(json!({"name": name, "kind": resource}))
            }
            ApiError::Invalid { kind, name, causes } => Some(json!({
                "name": name,
                "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": "FieldValueInvalid",
                    "message": c.message,
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::ApplyConflict { causes, .. } => Some(json!({"causes": causes})),
            ApiError::NoSuchResource
            | ApiError::BadRequest(_)
            | ApiError::Unauthorized
            | ApiError::Forbidden(_)
            | ApiError::MethodNotAllowed
            | ApiError::UnsupportedMediaType(_)
            | ApiError::RequestEntityTooLarge(_)
            | ApiError::Expired { .. }
            | ApiError::ServiceUnavailable(_)
            | ApiError::Timeout(_)
            | ApiError::Internal(_) => None,
        }
    }

    /// The `v1 Status` object sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(d) = self.details() {
            s["details"] = d;
        }
        s
    }
}

/// The datastore's errors as Kubernetes answers them.
impl From<DatastoreError> for ApiError {
    fn from(e: DatastoreError) -> Self {
        match e {
            DatastoreError::Unavailable(m) => ApiError::ServiceUnavailable(format!(
                "etcd cluster is unavailable or misconfigured: {m}"
            )),
            DatastoreError::Timeout => ApiError::Timeout(
                "etcd request timed out: the etcd cluster may have lost quorum".into(),
            ),
            DatastoreError::Compacted {
                requested,
                compacted,
            } => ApiError::Expired {
                requested,
                oldest: compacted,
            },
            DatastoreError::Etcd(m) => ApiError::Internal(format!("etcd: {m}")),
            DatastoreError::Corrupt { key, message } => {
                ApiError::Internal(format!("stored object {key} is corrupt: {message}"))
            }
        }
    }
}

/// Object storage errors as Kubernetes answers them.
impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound { resource, name } => ApiError::NotFound { resource, name },
            ObjectError::AlreadyExists { resource, name } => {
                ApiError::AlreadyExists { resource, name }
            }
            ObjectError::Conflict { resource, name } => ApiError::Conflict { resource, name },
            ObjectError::ConflictWith {
                resource,
                name,
                message,
            } => ApiError::ConflictWith {
                resource,
                name,
                message,
            },
            ObjectError::BadRequest(m) => ApiError::BadRequest(m),
            ObjectError::Invalid { kind, name, causes } => ApiError::Invalid { kind, name, causes },
            ObjectError::Corrupt {
                resource,
                key,
                source,
            } => ApiError::Internal(format!("stored {resource} {key} is corrupt: {source}")),
            ObjectError::Datastore(e) => e.into(),
        }
    }
}

/// A `Status` object reporting success (e.g. for DELETE of collections).
pub fn success_status(kind: &str, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "kind": kind});
    if let Some(uid) = uid {
        details["uid"] = Value::String(uid.to_string());
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_status_matches_kubernetes() {
        let e = ApiError::Conflict {
            resource: "nodes".into(),
            name: "n1".into(),
        };
        let s = e.to_status();
        assert_eq!(s["code"], 409);
        assert_eq!(s["reason"], "Conflict");
        assert_eq!(
            s["message"],
            "Operation cannot be fulfilled on nodes \"n1\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(s["details"]["kind"], "nodes");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid("Node", "n1", "metadata.labels", "bad key");
        assert_eq!(e.code(), 422);
        assert_eq!(
            e.to_status()["details"]["causes"][0]["field"],
            "metadata.labels"
        );
        assert!(e.to_string().contains("metadata.labels: bad key"));
    }
}
