//! `io.rke2.Tokens1`: bootstrap tokens for joining agents (create, list, delete) and rotation
//! of the server token. Thin wrappers over [`crate::cluster::admin`]; everything but ListTokens
//! is root only, and ListTokens never returns a token's secret.

use zbus::message::Header;
use zbus::{Connection, interface};

use super::errors::BusError;
use super::require_root;
use crate::cluster::admin::{self, TokenRequest, TokenSummary};
use crate::cluster::context::Ctx;
use crate::token::Secret;

/// `io.rke2.Tokens1` of a server.
#[derive(Debug, Clone)]
pub struct Tokens {
    ctx: Ctx,
}

impl Tokens {
    pub fn new(ctx: Ctx) -> Self {
        Tokens { ctx }
    }
}

/// Join tokens. A listed token is the struct (sssasas): id, description, expiration (RFC 3339,
/// "" = never), usages, extra groups. Errors: io.rke2.Error.{NotFound, InvalidArgument,
/// AccessDenied, NotReady, Conflict, Failed}. Every method but ListTokens is root only.
#[interface(name = "io.rke2.Tokens1")]
impl Tokens {
    /// Creates a bootstrap token that lets agents (never servers) join until it expires or is
    /// deleted. ttl_seconds: 0 = never expires, at most one year (the CLI's default is 24 h).
    /// usages: "signing", "authentication" (empty = both). Returns the full join token
    /// K10<ca-hash>::<id>.<secret>.
    async fn create_token(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        ttl_seconds: i64,
        description: String,
        usages: Vec<String>,
    ) -> Result<String, BusError> {
        require_root(conn, &hdr, "CreateToken").await?;
        let token = admin::create_token(
            &self.ctx,
            &TokenRequest {
                ttl_seconds,
                description,
                usages,
            },
        )
        .await?;
        Ok(token.expose().to_string())
    }

    /// All bootstrap tokens, without their secrets, sorted by id. Each is (id, description,
    /// expiration RFC 3339 or "" for never, usages, extra groups).
    async fn list_tokens(&self) -> Result<Vec<TokenSummary>, BusError> {
        Ok(admin::list_tokens(&self.ctx).await?)
    }

    /// Deletes a bootstrap token given as <id>, <id>.<secret> or the full token; agents can no
    /// longer join with it.
    async fn delete_token(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        token: String,
    ) -> Result<(), BusError> {
        require_root(conn, &hdr, "DeleteToken").await?;
        admin::delete_token(&self.ctx, &token).await?;
        Ok(())
    }

    /// Rotates the server token to new_token ("" = generate one): re-encrypts the bootstrap
    /// data, rewrites the token files; from then on joins need the new token, running nodes keep
    /// working. Returns the full new token K10<ca-hash>::server:<password>.
    async fn rotate_server_token(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        new_token: String,
    ) -> Result<String, BusError> {
        let uid = require_root(conn, &hdr, "RotateServerToken").await?;
        let token = admin::rotate_server_token(&self.ctx, &Secret::new(new_token)).await?;
        tracing::info!(component = "dbus", uid, "server token rotated over D-Bus");
        Ok(token.expose().to_string())
    }
}
