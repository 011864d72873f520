//! The server token on disk and its rotation (docs/protocol.md §1.3, §1.4): `server/token`
//! (`K10<ca-hash>::server:<pw>`, 0600), `node-token` (a symlink to it), `agent-token` (its own
//! file when a separate agent token is configured, else a symlink), and `RotateServerToken`,
//! which re-encrypts the bootstrap data under the new token and revokes the old one everywhere,
//! plus the rotation record every server follows (docs/token-rotation.md).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{self, BootstrapData};
use crate::cluster::context::Ctx;
use crate::cluster::credentials;
use crate::datastore::Datastore;
use crate::fsutil::{self, IoContext, PathError};
use crate::paths::ServerPaths;
use crate::token::{self, AGENT_GROUP, Passwd, SERVER_GROUP, Secret, TokenError};

/// Token operation errors.
#[derive(Debug, thiserror::Error)]
pub enum TokenOpError {
    #[error("invalid token: {0}")]
    Invalid(#[from] TokenError),
    #[error("the datastore is not ready yet")]
    NotReady,
    #[error("datastore: {0}")]
    Datastore(#[from] crate::datastore::DatastoreError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error(
        "another server token rotation happened at the same time or is still being applied here; check the token file and retry"
    )]
    Concurrent,
    #[error("token rotation record: {0}")]
    Record(String),
    #[error("token rotation record: {0}")]
    RecordJson(#[source] serde_json::Error),
    #[error("the rotated bundle's credentials: {0}")]
    Passwd(#[source] TokenError),
    #[error("writing the token files: {0}")]
    Apply(#[source] tokio::task::JoinError),
}

/// Writes `server/token`, `node-token` and `agent-token`.
pub fn write_token_files(
    paths: &ServerPaths,
    ca_hash: &str,
    server_password: &Secret,
    agent_password: Option<&Secret>,
) -> Result<(), PathError> {
    let token = format!(
        "{}\n",
        token::format_full_token(ca_hash, "server", server_password)
    );
    let token_path = paths.token();
    fsutil::write_atomic_mkdir(&token_path, token.as_bytes(), fsutil::SECRET_FILE_MODE)
        .at(&token_path)?;
    let node_token = paths.node_token();
    fsutil::symlink_atomic(Path::new("token"), &node_token).at(&node_token)?;
    let agent_token = paths.agent_token();
    match agent_password {
        Some(pw) => {
            let t = format!("{}\n", token::format_full_token(ca_hash, "node", pw));
            fsutil::write_atomic(&agent_token, t.as_bytes(), fsutil::SECRET_FILE_MODE)
                .at(&agent_token)?;
        }
        None => fsutil::symlink_atomic(Path::new("token"), &agent_token).at(&agent_token)?,
    }
    Ok(())
}

/// etcd key of the rotation record: the current server token sealed with the cluster secret,
/// who rotated it and when, and the storage ids of retired tokens. Every server watches it.
pub const ROTATION_KEY: &str = "/rke2/server-token";
/// How many retired token ids the record remembers (to recognise an old token on restart).
const RETIRED_KEPT: usize = 32;
/// Pause before re-reading the record after a failed watch.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);

/// The rotation record kept under [`ROTATION_KEY`] (docs/token-rotation.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    pub generation: u64,
    pub rotated_by: String,
    pub rotated_at: String,
    /// The current server password, sealed like the bootstrap data with [`cluster_secret`].
    pub sealed_token: String,
    /// Bootstrap storage ids (`/bootstrap/<id>`) of retired tokens, oldest first.
    pub retired: Vec<String>,
}

impl RotationRecord {
    /// The current server password this record carries.
    pub fn token(&self, secret: &Secret) -> Result<Secret, TokenOpError> {
        let plain = bootstrap::decrypt(secret, &self.sealed_token)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| TokenOpError::Record("the sealed token is not UTF-8".into()))
    }

    /// Whether `password` was a token of this cluster before a rotation.
    pub fn retired(&self, password: &Secret) -> bool {
        self.retired.iter().any(|id| *id == storage_id(password))
    }
}

fn storage_id(password: &Secret) -> String {
    bootstrap::storage_key(password)
        .trim_start_matches(bootstrap::BOOTSTRAP_PREFIX)
        .to_string()
}

/// The secret the rotation record is sealed with: derived from the server CA key, which every
/// server of the cluster holds (it is part of the bootstrap data) and nothing else does. An etcd
/// snapshot alone therefore reveals neither the token nor the CA key.
pub fn cluster_secret(paths: &ServerPaths) -> Result<Secret, PathError> {
    let key_path = paths.server_ca().key;
    let key = std::fs::read(&key_path).at(&key_path)?;
    let mut input = b"rke2-rs server token record\0".to_vec();
    input.extend_from_slice(&key);
    Ok(Secret::new(token::sha256_hex(&input)))
}

/// Reads the rotation record and its mod_revision.
pub async fn load_record(store: &Datastore) -> Result<Option<(RotationRecord, i64)>, TokenOpError> {
    let (kv, _) = store.get(ROTATION_KEY).await?;
    kv.map(|kv| {
        serde_json::from_slice(&kv.value)
            .map(|r| (r, kv.mod_revision))
            .map_err(TokenOpError::RecordJson)
    })
    .transpose()
}

/// Rotates the server token to `new` (or a generated one), for the whole cluster at once: one
/// etcd transaction, guarded by the record's mod_revision and by the old bootstrap key still
/// existing, writes the record, the bootstrap data re-encrypted under the new token and the
/// credentials digests, and deletes the old bootstrap key. A concurrent rotation on another
/// server makes the guard fail, so rotations are serialised cluster-wide. Every server (this one
/// included) then rewrites its own token files from the record ([`follow_rotations`]).
/// Rotations on this server wait for each other ([`ServerContext::token_rotation`]), so a second
/// one starts from the token the first installed instead of failing as concurrent.
/// Returns the new password.
///
/// [`ServerContext::token_rotation`]: crate::cluster::context::ServerContext::token_rotation
pub async fn rotate_server_token(ctx: &Ctx, new: Option<String>) -> Result<Secret, TokenOpError> {
    let store = ctx.store.get().ok_or(TokenOpError::NotReady)?;
    let _serial = ctx.token_rotation.lock().await;
    let new_pw = match new {
        Some(t) => token::normalize_server_token(&Secret::new(t))?,
        None => token::generate_password(),
    };
    let old_pw = ctx.server_password();
    let secret = cluster_secret(&ctx.paths)?;
    let current = load_record(store).await?;
    if let Some((rec, _)) = &current
        && rec.token(&secret)? != old_pw
    {
        return Err(TokenOpError::Concurrent);
    }
    let mut passwd = ctx.passwd();
    let node_followed_server =
        passwd.password_of("node") == Some(&old_pw) && ctx.config.agent_token.is_none();
    passwd.set("server", new_pw.clone(), SERVER_GROUP);
    if node_followed_server {
        passwd.set("node", new_pw.clone(), AGENT_GROUP);
    }
    // The bundle carries the new passwd so joiners get the new credentials.
    let mut data = BootstrapData::read(&ctx.paths)?;
    if let Some(f) = data.files.get_mut("PasswdFile") {
        f.content = base64::engine::general_purpose::STANDARD.encode(passwd.render());
    }
    let sealed = bootstrap::encrypt(&new_pw, &data.to_json())?;
    let (generation, mut retired) = match &current {
        Some((rec, _)) => (rec.generation + 1, rec.retired.clone()),
        None => (1, Vec::new()),
    };
    let old_id = storage_id(&old_pw);
    if old_id != storage_id(&new_pw) && !retired.contains(&old_id) {
        retired.push(old_id);
    }
    retired.retain(|id| *id != storage_id(&new_pw));
    let excess = retired.len().saturating_sub(RETIRED_KEPT);
    retired.drain(..excess);
    let record = RotationRecord {
        generation,
        rotated_by: ctx.node.name.clone(),
        rotated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sealed_token: bootstrap::encrypt(&secret, new_pw.expose().as_bytes())?,
        retired,
    };
    let old_key = bootstrap::storage_key(&old_pw);
    let new_key = bootstrap::storage_key(&new_pw);
    let guard = match &current {
        Some((_, rev)) => Compare::mod_revision(ROTATION_KEY, CompareOp::Equal, *rev),
        None => Compare::create_revision(ROTATION_KEY, CompareOp::Equal, 0),
    };
    let mut ops = vec![
        TxnOp::put(
            ROTATION_KEY,
            serde_json::to_vec(&record).expect("record serialises"),
            None,
        ),
        TxnOp::put(new_key.as_str(), sealed.into_bytes(), None),
        TxnOp::put(
            credentials::CREDENTIALS_KEY,
            serde_json::to_vec(&credentials::CredentialsRecord::from_passwd(&passwd))
                .expect("record serialises"),
            None,
        ),
    ];
    if old_key != new_key {
        ops.push(TxnOp::delete(old_key.as_str(), None));
    }
    let txn = Txn::new()
        .when([
            guard,
            Compare::version(old_key.as_str(), CompareOp::Greater, 0),
        ])
        .and_then(ops);
    // A multi-key transaction: the etcd client itself (the Datastore offers single-key CAS).
    let mut client = ctx.etcd.get().cloned().ok_or(TokenOpError::NotReady)?;
    let resp = tokio::time::timeout(crate::datastore::CALL_DEADLINE, client.txn(txn))
        .await
        .map_err(|_| TokenOpError::Datastore(crate::datastore::DatastoreError::Timeout))?
        .map_err(|e| {
            TokenOpError::Datastore(crate::datastore::DatastoreError::Etcd(e.to_string()))
        })?;
    if !resp.succeeded() {
        return Err(TokenOpError::Concurrent);
    }
    apply_off_runtime(ctx, &new_pw, data).await?;
    tracing::info!(
        component = "token",
        node = %ctx.node.name,
        generation,
        "server token rotated for the whole cluster; every running server rewrites its {} within seconds",
        ctx.paths.token().display()
    );
    Ok(new_pw)
}

/// Writes this server's files for the token `password` whose bootstrap bundle is `data`: the
/// bundle files (the passwd among them), `server/token` and its symlinks; then switches the
/// in-memory credentials. Blocking (file writes).
fn apply_locally(ctx: &Ctx, password: &Secret, data: &BootstrapData) -> Result<(), TokenOpError> {
    let passwd = write_bundle_and_tokens(
        &ctx.paths,
        &ctx.ca_hash(),
        password,
        data,
        ctx.config.agent_token.is_some(),
    )?;
    *ctx.passwd.write().unwrap_or_else(|p| p.into_inner()) = passwd;
    *ctx.server_password
        .write()
        .unwrap_or_else(|p| p.into_inner()) = password.clone();
    Ok(())
}

/// [`apply_locally`] on a blocking thread, so file writes never stall the async runtime.
async fn apply_off_runtime(
    ctx: &Ctx,
    password: &Secret,
    data: BootstrapData,
) -> Result<(), TokenOpError> {
    let (c, pw) = (ctx.clone(), password.clone());
    tokio::task::spawn_blocking(move || apply_locally(&c, &pw, &data))
        .await
        .map_err(TokenOpError::Apply)?
}

/// Writes the bundle's files and the token files for `password`; returns the bundle's passwd.
pub fn write_bundle_and_tokens(
    paths: &ServerPaths,
    ca_hash: &str,
    password: &Secret,
    data: &BootstrapData,
    separate_agent_token: bool,
) -> Result<Passwd, TokenOpError> {
    data.write(paths)?;
    let passwd = Passwd::load(&paths.passwd())
        .map_err(TokenOpError::Passwd)?
        .ok_or_else(|| TokenOpError::Record("the bootstrap data carried no passwd".into()))?;
    let agent_pw = separate_agent_token
        .then(|| passwd.password_of("node").cloned())
        .flatten();
    write_token_files(paths, ca_hash, password, agent_pw.as_ref())?;
    Ok(passwd)
}

/// Reads and decrypts the bootstrap bundle stored under `password`.
pub async fn fetch_bundle(
    store: &Datastore,
    password: &Secret,
) -> Result<BootstrapData, TokenOpError> {
    let key = bootstrap::storage_key(password);
    let (kv, _) = store.get(&key).await?;
    let kv = kv.ok_or_else(|| {
        TokenOpError::Record(format!("{key} is missing: the rotation did not complete"))
    })?;
    let plain = bootstrap::decrypt(password, &String::from_utf8_lossy(&kv.value))?;
    Ok(BootstrapData::from_json(&plain)?)
}

/// Applies the record's token on this server if it differs from the one in use.
async fn catch_up(ctx: &Ctx, store: &Datastore, secret: &Secret) -> Result<(), TokenOpError> {
    let _serial = ctx.token_rotation.lock().await;
    let Some((record, _)) = load_record(store).await? else {
        return Ok(());
    };
    let password = record.token(secret)?;
    if password == ctx.server_password() {
        return Ok(());
    }
    let data = fetch_bundle(store, &password).await?;
    apply_off_runtime(ctx, &password, data).await?;
    tracing::info!(
        component = "token",
        node = %ctx.node.name,
        generation = record.generation,
        "the server token was rotated on {} at {}; rewrote {} with the new token",
        record.rotated_by,
        record.rotated_at,
        ctx.paths.token().display()
    );
    Ok(())
}

/// Keeps this server's token files on the cluster's current token: watches [`ROTATION_KEY`] and
/// applies every rotation (made on any server) within a moment, until `cancel` fires.
pub async fn follow_rotations(ctx: Ctx, cancel: CancellationToken) {
    let Some(store) = ctx.store.get().cloned() else {
        return;
    };
    let secret = match cluster_secret(&ctx.paths) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(component = "token", "token rotations are not followed: {e}");
            return;
        }
    };
    loop {
        // Read first, then watch from the revision after the read: nothing falls in between.
        let rev = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async {
                let rev = store.revision().await?;
                catch_up(&ctx, &store, &secret).await?;
                Ok::<i64, TokenOpError>(rev)
            } => r,
        };
        let watched = match rev {
            Ok(rev) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    w = store.watch(ROTATION_KEY, rev + 1) => w.map_err(TokenOpError::from),
                }
            }
            Err(e) => Err(e),
        };
        if let Ok(mut watch) = watched {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = watch.next() => match ev {
                        Ok(Some(_)) => {
                            if let Err(e) = catch_up(&ctx, &store, &secret).await {
                                tracing::warn!(component = "token", "applying a token rotation: {e}");
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        } else if let Err(e) = watched {
            tracing::debug!(
                component = "token",
                "following token rotations: {e}; retrying"
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_record_opens_only_with_the_cluster_secret_and_knows_retired_tokens() {
        let d = tempfile::tempdir().unwrap();
        let p = ServerPaths::new(d.path());
        let key = p.server_ca().key;
        fsutil::write_atomic_mkdir(&key, b"ca key one", 0o600).unwrap();
        let secret = cluster_secret(&p).unwrap();
        let record = RotationRecord {
            generation: 2,
            rotated_by: "s1".into(),
            rotated_at: "2024-01-01T00:00:00Z".into(),
            sealed_token: bootstrap::encrypt(&secret, b"new-pw").unwrap(),
            retired: vec![storage_id(&Secret::new("old-pw"))],
        };
        assert_eq!(record.token(&secret).unwrap(), Secret::new("new-pw"));
        assert!(record.retired(&Secret::new("old-pw")));
        assert!(!record.retired(&Secret::new("other")));
        fsutil::write_atomic_mkdir(&key, b"another cluster's key", 0o600).unwrap();
        assert!(record.token(&cluster_secret(&p).unwrap()).is_err());
    }

    #[test]
    fn token_files_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = ServerPaths::new(d.path());
        write_token_files(&p, &"a".repeat(64), &Secret::new("pw"), None).unwrap();
        let t = std::fs::read_to_string(p.token()).unwrap();
        assert_eq!(t, format!("K10{}::server:pw\n", "a".repeat(64)));
        assert_eq!(
            std::fs::read_link(p.node_token()).unwrap(),
            Path::new("token")
        );
        assert_eq!(
            std::fs::read_link(p.agent_token()).unwrap(),
            Path::new("token")
        );
        write_token_files(
            &p,
            &"a".repeat(64),
            &Secret::new("pw"),
            Some(&Secret::new("apw")),
        )
        .unwrap();
        assert!(
            std::fs::read_to_string(p.agent_token())
                .unwrap()
                .contains("::node:apw")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(p.token()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
