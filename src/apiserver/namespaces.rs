//! Namespace lifecycle as upstream runs it (docs/namespaces.md): a namespace carries the
//! `kubernetes` finalizer from its creation; DELETE only marks it (`deletionTimestamp`,
//! `status.phase: Terminating`); the namespace controller (src/controllers/namespace.rs) removes
//! its contents, records the deletion conditions, removes the finalizer through the same rules as
//! the `finalize` subresource, and deletes it for good. While it terminates nothing new may be
//! created in it (upstream's NamespaceLifecycle admission).

use super::status::ApiError;
use crate::registry::{NAMESPACES, ResourceInfo};
use crate::storage::Storage;
pub use crate::storage::namespaces::{KUBERNETES_FINALIZER, delete, finalizers, is_terminating};

/// NamespaceLifecycle for a create of `info` named `name` in `ns`: 404 when the namespace does
/// not exist, upstream's 403 while it terminates.
pub async fn admit_create(
    store: &Storage,
    info: &ResourceInfo,
    ns: &str,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let Some(namespace) = store.get_opt(&NAMESPACES, None, ns).await? else {
        return Err(ApiError::NotFound {
            resource: NAMESPACES.qualified_name(),
            name: ns.to_string(),
        });
    };
    if !is_terminating(&namespace) {
        return Ok(());
    }
    let subject = match name {
        Some(n) => format!("{} \"{n}\"", info.qualified_name()),
        None => info.qualified_name(),
    };
    Err(ApiError::Forbidden(format!(
        "{subject} is forbidden: unable to create new content in namespace {ns} because it is being terminated"
    )))
}
