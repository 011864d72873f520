//! The published API endpoints of ready servers: each server keeps `host:port` under
//! [`APISERVER_ADDRESSES_PREFIX`] with a lease while it runs, so the list holds live servers only.
//! Read by the supervisor (`/v1-rke2/apiservers`, kubelet certificate checks) and the controllers
//! (the `kubernetes` endpoints, runtime status).

use crate::datastore::{Datastore, DatastoreError};

/// Where servers publish their API endpoint, one key per node name.
pub const APISERVER_ADDRESSES_PREFIX: &str = "/rke2/apiaddresses/";

/// The API endpoints of every ready server, sorted and without duplicates.
pub async fn list(store: &Datastore) -> Result<Vec<String>, DatastoreError> {
    let page = store.list(APISERVER_ADDRESSES_PREFIX, None, 0, 0).await?;
    let mut out: Vec<String> = page
        .items
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
