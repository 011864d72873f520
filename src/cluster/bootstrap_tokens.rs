//! Kubernetes bootstrap tokens (docs/protocol.md §1.4): Secrets `kube-system/bootstrap-token-<id>`
//! of type `bootstrap.kubernetes.io/token`. Agents may join with one until it expires or is
//! deleted; servers never (the supervisor only accepts them on agent routes).

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::cluster::context::Ctx;
use crate::datastore::DatastoreError;
use crate::token::constant_time_eq;

/// Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Namespace holding them.
pub const NAMESPACE: &str = "kube-system";

/// Name of the Secret for token id `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// A decoded `data` field of a bootstrap token Secret.
pub fn data_field(secret: &serde_json::Value, field: &str) -> Option<String> {
    let b64 = secret.get("data")?.get(field)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether a bootstrap token Secret has expired at `now`.
pub fn is_expired(secret: &serde_json::Value, now: DateTime<Utc>) -> bool {
    match data_field(secret, "expiration") {
        Some(exp) => match DateTime::parse_from_rfc3339(&exp) {
            Ok(t) => t.with_timezone(&Utc) <= now,
            // An unreadable expiration is treated as expired: fail closed.
            Err(_) => true,
        },
        None => false,
    }
}

/// Checks a presented bootstrap token against its Secret: the secret matches, the token is
/// valid for authentication and not expired.
pub fn matches(secret: &serde_json::Value, token_secret: &str, now: DateTime<Utc>) -> bool {
    if secret.get("type").and_then(|t| t.as_str()) != Some(SECRET_TYPE) {
        return false;
    }
    let Some(stored) = data_field(secret, "token-secret") else {
        return false;
    };
    constant_time_eq(stored.as_bytes(), token_secret.as_bytes())
        && data_field(secret, "usage-bootstrap-authentication").as_deref() == Some("true")
        && !is_expired(secret, now)
}

/// Verifies token `<id>.<secret>` against the datastore.
pub async fn verify(ctx: &Ctx, id: &str, token_secret: &str) -> Result<bool, DatastoreError> {
    let Some(store) = ctx.store.get() else {
        return Err(DatastoreError::Unavailable("datastore not ready".into()));
    };
    let key = format!("/registry/secrets/{NAMESPACE}/{}", secret_name(id));
    let (kv, _) = store.get(&key).await?;
    let Some(kv) = kv else { return Ok(false) };
    let secret: serde_json::Value =
        serde_json::from_slice(&kv.value).map_err(|e| DatastoreError::Corrupt {
            key,
            message: e.to_string(),
        })?;
    Ok(matches(&secret, token_secret, Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn matching_respects_secret_usage_and_expiry() {
        let now = Utc::now();
        let mut s = serde_json::json!({
            "type": SECRET_TYPE,
            "data": {
                "token-id": b64("abcdef"),
                "token-secret": b64("0123456789abcdef"),
                "usage-bootstrap-authentication": b64("true"),
                "expiration": b64(&(now + chrono::Duration::hours(1)).to_rfc3339()),
            }
        });
        assert!(matches(&s, "0123456789abcdef", now));
        assert!(!matches(&s, "0123456789abcdeX", now));
        s["data"]["expiration"] = b64(&(now - chrono::Duration::seconds(1)).to_rfc3339()).into();
        assert!(!matches(&s, "0123456789abcdef", now));
        s["data"]["expiration"] = b64("garbage").into();
        assert!(is_expired(&s, now));
    }
}
