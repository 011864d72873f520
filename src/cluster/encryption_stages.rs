//! The cluster's encryption configuration in the bootstrap data, and the operations of
//! `rke2 secrets-encrypt` on it, in RKE2's stage order: `start` → `prepare` (a new key every
//! server can read, not yet used) → `rotate` (the new key writes) → `reencrypt_request` →
//! `reencrypt_active` (every Secret rewritten with the new key) → `reencrypt_finished` (the old
//! keys removed). Each step (but `reencrypt --force` and the reads) first checks that every
//! server has applied the current state — its Node's [`HASH_ANNOTATION`] — so no server is
//! ever asked to read a value written with a key it does not hold yet.

use serde_json::Value;

use crate::bootstrap::{self, BootstrapData, BootstrapError};
use crate::cluster::context::Ctx;
use crate::datastore::{Cas, Datastore, DatastoreError};
use crate::registry::{NODES, SECRETS};
use crate::secrets_encryption::config::Stage;
use crate::secrets_encryption::providers::Cipher;
use crate::secrets_encryption::{
    Active, BOOTSTRAP_CONFIG, BOOTSTRAP_STATE, EncryptionError, HASH_ANNOTATION,
};
use crate::storage::ObjectError;
use crate::storage::{ListOptions, Storage};
use crate::token::Secret;

/// Label of server nodes.
const SERVER_ROLE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// Secrets rewritten per list page while re-encrypting.
const REENCRYPT_PAGE: i64 = 500;
/// Passes over the Secrets before `reencrypt` gives up on values that keep changing.
const REENCRYPT_PASSES: usize = 5;

/// Why a stage operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(
        "incorrect stage: the cluster is at stage {current}; {operation} needs stage {expected} \
         (order: prepare, rotate, reencrypt)"
    )]
    WrongStage {
        operation: &'static str,
        current: Stage,
        expected: &'static str,
    },
    #[error("secrets encryption is already {0}")]
    Already(&'static str),
    #[error(
        "{0}; every server must have applied the current encryption configuration \
         (start the missing servers, or pass --force)"
    )]
    HashMismatch(String),
    #[error("the datastore is not ready yet; try again once the server is ready")]
    NotReady,
    #[error("the bootstrap data carries no encryption configuration yet")]
    Missing,
    #[error("another secrets-encrypt operation changed the configuration at the same time; retry")]
    Concurrent,
    #[error(
        "{0} Secrets kept changing while being re-encrypted; run reencrypt again (stage stays reencrypt_active)"
    )]
    Unfinished(usize),
    #[error(transparent)]
    Encryption(#[from] EncryptionError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("datastore: {0}")]
    Datastore(#[from] DatastoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error("applying the encryption configuration: {0}")]
    Apply(String),
}

/// The bootstrap bundle under `password` and its mod revision.
pub async fn load_bundle(
    store: &Datastore,
    password: &Secret,
) -> Result<(BootstrapData, i64), StageError> {
    let key = bootstrap::storage_key(password);
    let (kv, _) = store.get(&key).await?;
    let kv = kv.ok_or(BootstrapError::Missing("the bootstrap record"))?;
    let plain = bootstrap::decrypt(password, &String::from_utf8_lossy(&kv.value))?;
    Ok((BootstrapData::from_json(&plain)?, kv.mod_revision))
}

/// The encryption configuration a bundle carries, if any.
pub fn active_of(data: &BootstrapData) -> Result<Option<Active>, StageError> {
    if !data.files.contains_key(BOOTSTRAP_CONFIG) {
        return Ok(None);
    }
    let config = data.content(BOOTSTRAP_CONFIG)?;
    let state = data.content(BOOTSTRAP_STATE)?;
    Ok(Some(Active::parse(
        &config,
        &String::from_utf8_lossy(&state),
    )?))
}

/// Writes `active` into the bundle at `rev`; false when another writer was first.
async fn save(
    store: &Datastore,
    password: &Secret,
    mut data: BootstrapData,
    rev: i64,
    active: &Active,
) -> Result<bool, StageError> {
    data.insert(BOOTSTRAP_CONFIG, &active.config_json);
    data.insert(BOOTSTRAP_STATE, active.state.render().as_bytes());
    let sealed = bootstrap::encrypt(password, &data.to_json())?;
    let key = bootstrap::storage_key(password);
    Ok(matches!(
        store.update(&key, sealed.into_bytes(), rev).await?,
        Cas::Written(_)
    ))
}

/// The cluster's configuration, created on first use: the first server to get here stores a
/// fresh one (`cipher`, enabled per `secrets-encryption`) with a compare-and-swap; every other
/// server takes what is there.
pub async fn ensure_cluster_config(
    store: &Datastore,
    password: &Secret,
    cipher: Cipher,
    enabled: bool,
) -> Result<Active, StageError> {
    loop {
        let (data, rev) = load_bundle(store, password).await?;
        if let Some(active) = active_of(&data)? {
            return Ok(active);
        }
        let active = Active::generate(cipher, enabled);
        if save(store, password, data, rev, &active).await? {
            tracing::info!(
                component = "secrets-encryption",
                provider = cipher.provider(),
                enabled,
                "created the cluster's secrets encryption configuration"
            );
            return Ok(active);
        }
    }
}

/// One key as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::Type)]
pub struct KeyInfo {
    /// Whether new writes use it.
    pub active: bool,
    /// `AES-CBC`, `AES-GCM` or `XSalsa20-POLY1305`.
    pub key_type: String,
    pub name: String,
}

/// `secrets-encrypt status`. Also the D-Bus wire type `(bsbsa(bss))`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::Type)]
pub struct EncryptionStatus {
    pub enabled: bool,
    pub stage: String,
    /// Whether every server has applied the cluster's current configuration.
    pub hashes_match: bool,
    /// `All hashes match`, or which server differs.
    pub hash_message: String,
    pub keys: Vec<KeyInfo>,
}

fn store_of(ctx: &Ctx) -> Result<Datastore, StageError> {
    ctx.store.get().cloned().ok_or(StageError::NotReady)
}

/// The server nodes and the state each reports, sorted by name.
async fn server_hashes(store: &Datastore) -> Result<Vec<(String, Option<String>)>, StageError> {
    let list = Storage::new(store.clone())
        .list(&NODES, None, &ListOptions::default())
        .await?;
    let mut out: Vec<(String, Option<String>)> = list
        .items
        .iter()
        .filter(|n| {
            n.pointer("/metadata/labels")
                .and_then(|l| l.get(SERVER_ROLE_LABEL))
                .is_some()
        })
        .map(|n| {
            let name = n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let hash = n
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(HASH_ANNOTATION))
                .and_then(Value::as_str)
                .map(str::to_string);
            (name, hash)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `Ok` when every server reports `expected`, else the first difference in words.
fn compare_hashes(servers: &[(String, Option<String>)], expected: &str) -> Result<(), String> {
    for (name, hash) in servers {
        match hash {
            None => {
                return Err(format!(
                    "server {name} has not reported its encryption hash yet"
                ));
            }
            Some(h) if h != expected => {
                return Err(format!(
                    "hash does not match between the cluster ({expected}) and server {name} ({h})"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `secrets-encrypt status`.
pub async fn status(ctx: &Ctx) -> Result<EncryptionStatus, StageError> {
    let store = store_of(ctx)?;
    let (data, _) = load_bundle(&store, &ctx.server_password()).await?;
    let active = active_of(&data)?.ok_or(StageError::Missing)?;
    let servers = server_hashes(&store).await?;
    let check = compare_hashes(&servers, &active.state.render());
    let s = &active.settings;
    let keys = s
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| KeyInfo {
            active: s.enabled && i == 0,
            key_type: k.cipher.display().to_string(),
            name: k.name.clone(),
        })
        .collect();
    Ok(EncryptionStatus {
        enabled: s.enabled,
        stage: active.state.stage.to_string(),
        hashes_match: check.is_ok(),
        hash_message: check.err().unwrap_or_else(|| "All hashes match".into()),
        keys,
    })
}

/// The cluster's configuration, checked to be at one of `expected` with every server on it
/// (unless `force`).
async fn current_checked(
    ctx: &Ctx,
    store: &Datastore,
    operation: &'static str,
    expected: &[Stage],
    force: bool,
) -> Result<(BootstrapData, i64, Active), StageError> {
    let (data, rev) = load_bundle(store, &ctx.server_password()).await?;
    let active = active_of(&data)?.ok_or(StageError::Missing)?;
    if !force && !expected.contains(&active.state.stage) {
        return Err(StageError::WrongStage {
            operation,
            current: active.state.stage,
            expected: match expected {
                [Stage::Start, Stage::ReencryptFinished] => "start or reencrypt_finished",
                [Stage::Prepare] => "prepare",
                _ => "rotate",
            },
        });
    }
    if !force {
        compare_hashes(&server_hashes(store).await?, &active.state.render())
            .map_err(StageError::HashMismatch)?;
    }
    Ok((data, rev, active))
}

/// Stores `next` in the bundle (or fails as [`StageError::Concurrent`]) and applies it here;
/// the other servers follow within moments ([`super::encryption_follow`]).
async fn commit(
    ctx: &Ctx,
    store: &Datastore,
    data: BootstrapData,
    rev: i64,
    next: Active,
) -> Result<(), StageError> {
    let _updating = ctx.encryption.lock_updates().await;
    if !save(store, &ctx.server_password(), data, rev, &next).await? {
        return Err(StageError::Concurrent);
    }
    super::encryption_follow::apply(ctx, store, next).await?;
    Ok(())
}

/// `secrets-encrypt enable` / `disable`: new writes encrypted or plain from now on; existing
/// values change only with `reencrypt`.
pub async fn set_enabled(ctx: &Ctx, enabled: bool) -> Result<String, StageError> {
    let store = store_of(ctx)?;
    let (data, rev) = load_bundle(&store, &ctx.server_password()).await?;
    let active = active_of(&data)?.ok_or(StageError::Missing)?;
    let word = if enabled { "enabled" } else { "disabled" };
    if active.settings.enabled == enabled {
        return Err(StageError::Already(word));
    }
    let mut settings = active.settings.clone();
    settings.enabled = enabled;
    commit(
        ctx,
        &store,
        data,
        rev,
        Active::with_stage(settings, Stage::Start),
    )
    .await?;
    Ok(format!("secrets-encryption {word}"))
}

/// `secrets-encrypt prepare`.
pub async fn prepare(ctx: &Ctx, force: bool) -> Result<String, StageError> {
    let store = store_of(ctx)?;
    let (data, rev, active) = current_checked(
        ctx,
        &store,
        "prepare",
        &[Stage::Start, Stage::ReencryptFinished],
        force,
    )
    .await?;
    let next = Active::with_stage(
        active.settings.with_new_key(chrono::Utc::now()),
        Stage::Prepare,
    );
    commit(ctx, &store, data, rev, next).await?;
    Ok("prepare completed successfully".into())
}

/// `secrets-encrypt rotate`.
pub async fn rotate(ctx: &Ctx, force: bool) -> Result<String, StageError> {
    let store = store_of(ctx)?;
    let (data, rev, active) =
        current_checked(ctx, &store, "rotate", &[Stage::Prepare], force).await?;
    let next = Active::with_stage(active.settings.rotated(), Stage::Rotate);
    commit(ctx, &store, data, rev, next).await?;
    Ok("rotate completed successfully".into())
}

/// `secrets-encrypt reencrypt`: every Secret rewritten with the key writes use (or in plain
/// while disabled), then the other keys removed. An interrupted run (stage
/// `reencrypt_request` or `reencrypt_active`) may be run again.
pub async fn reencrypt(ctx: &Ctx, force: bool) -> Result<String, StageError> {
    let store = store_of(ctx)?;
    let (data, rev, active) = current_checked(
        ctx,
        &store,
        "reencrypt",
        &[
            Stage::Rotate,
            Stage::ReencryptRequest,
            Stage::ReencryptActive,
        ],
        force,
    )
    .await?;
    let request = Active::with_stage(active.settings.clone(), Stage::ReencryptRequest);
    commit(ctx, &store, data, rev, request).await?;
    let (data, rev) = load_bundle(&store, &ctx.server_password()).await?;
    let running = Active::with_stage(active.settings.clone(), Stage::ReencryptActive);
    commit(ctx, &store, data, rev, running.clone()).await?;
    let rewritten = rewrite_all(ctx, &store, &running).await?;
    let (data, rev) = load_bundle(&store, &ctx.server_password()).await?;
    let finished = Active::with_stage(active.settings.primary_only(), Stage::ReencryptFinished);
    commit(ctx, &store, data, rev, finished).await?;
    tracing::info!(
        component = "secrets-encryption",
        rewritten,
        "re-encrypted the cluster's Secrets; removed the keys no longer used"
    );
    Ok(format!(
        "reencryption finished: {rewritten} secrets rewritten"
    ))
}

/// Whether a stored value is already in the form `active` writes.
fn is_current(active: &Active, value: &[u8]) -> bool {
    match active.settings.write_key() {
        Some(k) => value.starts_with(k.value_prefix().as_bytes()),
        None => !value.starts_with(crate::secrets_encryption::ENCRYPTED_PREFIX),
    }
}

/// Rewrites every Secret not yet in the current form through the encrypting `store` (each
/// with a compare-and-swap: a value changed meanwhile was written in the current form anyway,
/// and the next pass checks it). Returns how many were rewritten.
async fn rewrite_all(ctx: &Ctx, store: &Datastore, active: &Active) -> Result<usize, StageError> {
    let client = ctx.etcd.get().cloned().ok_or(StageError::NotReady)?;
    // The raw view shows which values still carry another key; reads and writes of values go
    // through the encrypting store.
    let raw = Datastore::new(client);
    let prefix = format!("{}/", SECRETS.etcd_prefix);
    let mut rewritten = 0;
    let mut stale = 0;
    for _ in 0..REENCRYPT_PASSES {
        stale = 0;
        let mut after: Option<String> = None;
        loop {
            let page = raw
                .list(&prefix, after.as_deref(), REENCRYPT_PAGE, 0)
                .await?;
            for kv in &page.items {
                if is_current(active, &kv.value) {
                    continue;
                }
                let plain = active.decode(&kv.key, kv.value.to_vec())?;
                match store.update(&kv.key, plain, kv.mod_revision).await? {
                    Cas::Written(_) => rewritten += 1,
                    Cas::Conflict(_) => stale += 1,
                }
            }
            after = page.items.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        if stale == 0 {
            return Ok(rewritten);
        }
    }
    Err(StageError::Unfinished(stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_comparison_names_the_server() {
        let ok = vec![("s1".to_string(), Some("start-a".to_string()))];
        assert!(compare_hashes(&ok, "start-a").is_ok());
        let stale = vec![
            ("s1".to_string(), Some("start-a".to_string())),
            ("s2".to_string(), Some("start-b".to_string())),
        ];
        let e = compare_hashes(&stale, "start-a").unwrap_err();
        assert!(e.contains("server s2 (start-b)"), "{e}");
        let missing = vec![("s3".to_string(), None)];
        assert!(
            compare_hashes(&missing, "x")
                .unwrap_err()
                .contains("s3 has not reported")
        );
    }

    #[test]
    fn current_form_follows_the_write_key() {
        let a = Active::generate(Cipher::AesCbc, true);
        assert!(is_current(
            &a,
            &a.encode("/registry/secrets/a/b", b"{}".to_vec())
        ));
        assert!(!is_current(&a, b"{}"));
        let r = Active::with_stage(
            a.settings.with_new_key(chrono::Utc::now()).rotated(),
            Stage::Rotate,
        );
        assert!(!is_current(
            &r,
            &a.encode("/registry/secrets/a/b", b"{}".to_vec())
        ));
        let mut off = a.settings.clone();
        off.enabled = false;
        let off = Active::with_stage(off, Stage::Start);
        assert!(is_current(&off, b"{}"));
        assert!(!is_current(
            &off,
            &a.encode("/registry/secrets/a/b", b"{}".to_vec())
        ));
    }

    #[test]
    fn wrong_stage_reads_like_rke2() {
        let e = StageError::WrongStage {
            operation: "rotate",
            current: Stage::Start,
            expected: "prepare",
        };
        assert_eq!(
            e.to_string(),
            "incorrect stage: the cluster is at stage start; rotate needs stage prepare (order: prepare, rotate, reencrypt)"
        );
    }
}
