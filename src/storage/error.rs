//! The domain error of object storage: what went wrong with a Kubernetes object in the
//! datastore, independent of any wire format. The API server maps it to a `Status`
//! (`apiserver::status`), the D-Bus service to an error name (`dbus::errors`), the server to an
//! exit code; each mapping is one exhaustive match in its own module.

use crate::datastore::DatastoreError;
use crate::registry::FieldCause;

/// `field: message` of every cause, comma-joined, as upstream's `Invalid` message lists them.
pub fn render_causes(causes: &[FieldCause]) -> String {
    causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// A compare-and-swap lost against a newer revision (or the caller's precondition was stale).
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    /// A precondition other than a stale revision failed (uid, explicit resourceVersion).
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    ConflictWith {
        resource: String,
        name: String,
        message: String,
    },
    /// The object breaks a rule only the store can check (an address already allocated):
    /// upstream's 422 `Invalid` with one cause per field.
    #[error("{kind} \"{name}\" is invalid: {}", render_causes(.causes))]
    Invalid {
        kind: String,
        name: String,
        causes: Vec<FieldCause>,
    },
    /// The request itself is malformed (selector, continue token, resourceVersion, renaming).
    #[error("{0}")]
    BadRequest(String),
    /// A stored value does not parse: the datastore holds something this daemon did not write.
    #[error("stored {resource} {key} is corrupt")]
    Corrupt {
        resource: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
}
