//! The server token on disk and its rotation (docs/protocol.md §1.3, §1.4): `server/token`
//! (`K10<ca-hash>::server:<pw>`, 0600), `node-token` (a symlink to it), `agent-token` (its own
//! file when a separate agent token is configured, else a symlink), and `RotateServerToken`,
//! which re-encrypts the bootstrap data under the new token and revokes the old one everywhere.

use std::path::Path;

use base64::Engine as _;

use crate::bootstrap::{self, BootstrapData};
use crate::fsutil::{self, IoContext, PathError};
use crate::paths::ServerPaths;
use crate::server::context::Ctx;
use crate::server::credentials;
use crate::token::{self, AGENT_GROUP, SERVER_GROUP, Secret, TokenError};

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
}

impl From<TokenOpError> for crate::supervisor::SupervisorError {
    fn from(e: TokenOpError) -> Self {
        use crate::supervisor::SupervisorError as S;
        match e {
            TokenOpError::Invalid(t) => S::BadRequest(t.to_string()),
            TokenOpError::NotReady => S::NotReady("the datastore is not ready yet".into()),
            TokenOpError::Datastore(d) => S::NotReady(d.to_string()),
            TokenOpError::Bootstrap(b) => S::Internal(b.to_string()),
            TokenOpError::Io(i) => S::Internal(i.to_string()),
        }
    }
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

/// Rotates the server token to `new` (or a generated one). The new bootstrap key is written
/// before the old one is removed, so a crash in between leaves both tokens usable rather than
/// none. Returns the new password.
pub async fn rotate_server_token(ctx: &Ctx, new: Option<String>) -> Result<Secret, TokenOpError> {
    let store = ctx.store.get().ok_or(TokenOpError::NotReady)?;
    let new_pw = match new {
        Some(t) => token::normalize_server_token(&Secret::new(t))?,
        None => token::generate_password(),
    };
    let old_pw = ctx.server_password();
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
    store
        .put(&bootstrap::storage_key(&new_pw), sealed.into_bytes())
        .await?;
    credentials::publish(store, &passwd).await?;
    passwd.save(&ctx.paths.passwd()).map_err(|e| match e {
        TokenError::Io(io) => TokenOpError::Io(io),
        other => TokenOpError::Invalid(other),
    })?;
    let agent_pw = ctx
        .config
        .agent_token
        .as_ref()
        .and_then(|_| passwd.password_of("node").cloned());
    write_token_files(&ctx.paths, &ctx.ca_hash(), &new_pw, agent_pw.as_ref())?;
    if bootstrap::storage_key(&old_pw) != bootstrap::storage_key(&new_pw) {
        store.delete(&bootstrap::storage_key(&old_pw), None).await?;
    }
    *ctx.passwd.write().unwrap_or_else(|p| p.into_inner()) = passwd;
    *ctx.server_password
        .write()
        .unwrap_or_else(|p| p.into_inner()) = new_pw.clone();
    tracing::info!(component = "token", node = %ctx.node.name, "server token rotated; restart nodes with the new token");
    Ok(new_pw)
}

#[cfg(test)]
mod tests {
    use super::*;

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
