//! `PUT /v1-rke2/cert/cacerts[?force=true]` (server token): the route behind
//! `rke2 certificate rotate-ca`. The body is bootstrap-data JSON holding new CA entries; they are
//! checked against the cluster's current CAs (crate::pki::rotate_ca) and written into the
//! bootstrap data with a compare-and-swap, so every server takes them at its next start
//! (docs/operations.md §4.3). Nothing changes when a check fails.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::auth::{self, Caller, Role};
use super::{Result, SupervisorError};
use crate::bootstrap::{self, BootstrapData};
use crate::cluster::context::Ctx;
use crate::datastore::Cas;
use crate::https::ConnInfo;
use crate::pki::rotate_ca;

/// Compare-and-swap attempts before giving up on a busy bootstrap record.
const ATTEMPTS: usize = 5;

#[derive(Debug, serde::Deserialize)]
pub struct RotateQuery {
    #[serde(default)]
    force: bool,
}

pub async fn rotate_ca(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    Query(query): Query<RotateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let caller = auth::authenticate(&ctx, &headers, &conn).await?;
    caller.require(&[Role::Server])?;
    let Caller::Server { password } = caller else {
        return Err(SupervisorError::Forbidden);
    };
    let upload = BootstrapData::from_json(&body)
        .map_err(|e| SupervisorError::BadRequest(format!("invalid body: {e}")))?;
    let mut new = std::collections::BTreeMap::new();
    for name in upload.files.keys() {
        let entry = rotate_ca::CA_FILES
            .iter()
            .flat_map(|(_, c, k)| [*c, *k])
            .find(|e| e == name)
            .ok_or_else(|| {
                SupervisorError::BadRequest(
                    rotate_ca::RotateCaError::UnknownEntry(name.clone()).to_string(),
                )
            })?;
        let bytes = upload
            .content(entry)
            .map_err(|e| SupervisorError::BadRequest(e.to_string()))?;
        new.insert(name.clone(), bytes);
    }
    let store = ctx
        .store
        .get()
        .ok_or_else(|| SupervisorError::NotReady("etcd is not ready yet".into()))?;
    let key = bootstrap::storage_key(&password);
    for _ in 0..ATTEMPTS {
        let (Some(kv), _) = store
            .get(&key)
            .await
            .map_err(|e| SupervisorError::NotReady(e.to_string()))?
        else {
            return Err(SupervisorError::NotReady(
                "the bootstrap data is not saved yet".into(),
            ));
        };
        let plain = bootstrap::decrypt(&password, &String::from_utf8_lossy(&kv.value))
            .map_err(|e| SupervisorError::Internal(format!("bootstrap data: {e}")))?;
        let mut data = BootstrapData::from_json(&plain)
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        rotate_ca::validate(&data, &new, query.force)
            .map_err(|e| SupervisorError::BadRequest(e.to_string()))?;
        rotate_ca::apply(&mut data, &new);
        let sealed = bootstrap::encrypt(&password, &data.to_json())
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        match store
            .update(&key, sealed.into_bytes(), kv.mod_revision)
            .await
            .map_err(|e| SupervisorError::NotReady(e.to_string()))?
        {
            Cas::Written(_) => {
                tracing::info!(
                    component = "pki",
                    entries = %new.keys().cloned().collect::<Vec<_>>().join(","),
                    force = query.force,
                    "new certificate authorities written to the bootstrap data; servers use them from their next start"
                );
                return Ok((
                    [(header::CONTENT_TYPE, "text/plain")],
                    "certificates have been written to the datastore: restart each server to use \
                     them, then the agents\n",
                )
                    .into_response());
            }
            Cas::Conflict(_) => continue,
        }
    }
    Err(SupervisorError::Internal(
        "the bootstrap data kept changing; try again".into(),
    ))
}
