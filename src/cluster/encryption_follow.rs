//! Keeps this server on the cluster's encryption configuration without a restart: loads it
//! at start (creating it on a new cluster) before anything reads a Secret, then watches the
//! bootstrap data and applies every change — files, in-memory keys, and the Node annotation
//! that tells `secrets-encrypt` this server has caught up.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::encryption_stages::{self as stages, StageError};
use crate::bootstrap::BOOTSTRAP_PREFIX;
use crate::cluster::context::Ctx;
use crate::datastore::Datastore;
use crate::registry::{NODES, SECRETS};
use crate::secrets_encryption::{Active, HASH_ANNOTATION, providers::Cipher};
use crate::storage::Storage;

/// How often the configuration is re-read besides the watch until this server's Node carries
/// the current state (the Node appears only once the node has registered); a broken watch is
/// re-opened at the same pace.
const RESYNC: Duration = Duration::from_secs(3);
/// Once settled, re-read only every this many [`RESYNC`] periods (the watch brings changes).
const SETTLED_RESYNC_TICKS: u32 = 10;

/// Loads (or on a new cluster creates) the cluster's configuration, applies it to this
/// server's files and keys, and returns `raw` wrapped so Secrets are encrypted at rest.
pub async fn start(ctx: &Ctx, raw: Datastore) -> Result<Datastore, StageError> {
    let cipher =
        Cipher::from_provider(&ctx.config.secrets_encryption_provider).unwrap_or(Cipher::AesCbc);
    let active = stages::ensure_cluster_config(
        &raw,
        &ctx.server_password(),
        cipher,
        ctx.config.secrets_encryption,
    )
    .await?;
    if active.settings.enabled != ctx.config.secrets_encryption {
        tracing::warn!(
            component = "secrets-encryption",
            "secrets-encryption is {} in this server's configuration but {} for the cluster; \
             the cluster's setting applies (change it with rke2 secrets-encrypt enable|disable)",
            ctx.config.secrets_encryption,
            active.settings.enabled
        );
    }
    write_files(ctx, &active).await?;
    ctx.encryption.set(active);
    Ok(crate::secrets_encryption::store::wrap(
        raw,
        ctx.encryption.clone(),
        SECRETS.etcd_prefix,
    ))
}

async fn write_files(ctx: &Ctx, active: &Active) -> Result<(), StageError> {
    let (paths, a) = (ctx.paths.clone(), active.clone());
    tokio::task::spawn_blocking(move || a.write(&paths))
        .await
        .map_err(|e| StageError::Apply(e.to_string()))??;
    Ok(())
}

/// Applies `active` here: files and keys when they differ, then the Node annotation; returns
/// whether the Node carries it (false before the node has registered). The caller holds
/// [`crate::secrets_encryption::Keyring::lock_updates`].
pub async fn apply(ctx: &Ctx, store: &Datastore, active: Active) -> Result<bool, StageError> {
    let unchanged = ctx
        .encryption
        .current()
        .is_some_and(|c| c.config_json == active.config_json && c.state == active.state);
    let state = active.state.render();
    if !unchanged {
        write_files(ctx, &active).await?;
        let stage = active.state.stage;
        ctx.encryption.set(active);
        tracing::info!(
            component = "secrets-encryption",
            %stage,
            "applied the cluster's secrets encryption configuration"
        );
    }
    annotate(ctx, store, &state).await
}

/// Records `state` on this server's Node; false when the Node does not exist yet.
async fn annotate(ctx: &Ctx, store: &Datastore, state: &str) -> Result<bool, StageError> {
    let storage = Storage::new(store.clone());
    let Some(node) = storage.get_opt(&NODES, None, &ctx.node.name).await? else {
        return Ok(false);
    };
    let current = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(HASH_ANNOTATION))
        .and_then(Value::as_str);
    if current == Some(state) {
        return Ok(true);
    }
    storage
        .modify(&NODES, None, &ctx.node.name, None, |n| {
            let meta = &mut n["metadata"];
            if !meta["annotations"].is_object() {
                meta["annotations"] = json!({});
            }
            meta["annotations"][HASH_ANNOTATION] = Value::String(state.to_string());
            Ok::<(), StageError>(())
        })
        .await?;
    Ok(true)
}

/// Reads the cluster's configuration and applies it; true once this server is settled on it.
async fn sync(ctx: &Ctx, store: &Datastore) -> Result<bool, StageError> {
    let _updating = ctx.encryption.lock_updates().await;
    let (data, _) = stages::load_bundle(store, &ctx.server_password()).await?;
    match stages::active_of(&data)? {
        Some(active) => apply(ctx, store, active).await,
        None => Ok(false),
    }
}

/// Follows the cluster's configuration until `cancel` fires.
pub async fn follow(ctx: Ctx, cancel: CancellationToken) {
    let Some(store) = ctx.store.get().cloned() else {
        return;
    };
    let mut tick = tokio::time::interval(RESYNC);
    let mut watch = None;
    let (mut settled, mut ticks) = (false, 0u32);
    loop {
        let changed = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                ticks = ticks.wrapping_add(1);
                !settled || watch.is_none() || ticks.is_multiple_of(SETTLED_RESYNC_TICKS)
            }
            ev = async {
                match watch.as_mut() {
                    Some(w) => crate::datastore::WatchStream::next(w).await,
                    None => std::future::pending().await,
                }
            } => match ev {
                Ok(Some((changes, _))) => !changes.is_empty(),
                Ok(None) | Err(_) => {
                    watch = None;
                    false
                }
            },
        };
        if watch.is_none() {
            // Opened from "now": the sync below reads whatever came before.
            watch = tokio::select! {
                _ = cancel.cancelled() => return,
                w = store.watch(BOOTSTRAP_PREFIX, 0) => w.ok(),
            };
        }
        if changed {
            let synced = tokio::select! {
                _ = cancel.cancelled() => return,
                r = sync(&ctx, &store) => r,
            };
            settled = match synced {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(
                        component = "secrets-encryption",
                        "following the encryption configuration: {e}; retrying"
                    );
                    false
                }
            };
        }
    }
}
