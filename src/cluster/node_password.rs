//! Node passwords (docs/protocol.md §6): the first registration of a node name stores a scrypt hash
//! of the agent's password in Secret `kube-system/<node>.node-password.rke2`; later
//! registrations of that name must present the same password, so a second machine cannot take
//! over an existing node's identity.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::registry::SECRETS;
use crate::storage::{ObjectError, Storage};
use crate::token::constant_time_eq;

/// Secret type of node password secrets.
pub const SECRET_TYPE: &str = "rke2.cattle.io/node-password";
const NAMESPACE: &str = "kube-system";
/// scrypt parameters: N = 2^15, r = 8, p = 1, 64-byte key (k3s `hash.NewSCrypt`).
const LOG_N: u8 = 15;
const R: u32 = 8;
const P: u32 = 1;
const KEY_LEN: usize = 64;

/// Node password errors.
#[derive(Debug, thiserror::Error)]
pub enum NodePasswordError {
    #[error("unable to verify password for node {0}: hash does not match")]
    Mismatch(String),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("hashing the node password failed")]
    Hashing(#[source] tokio::task::JoinError),
}

/// Name of the Secret for `node`.
pub fn secret_name(node: &str) -> String {
    format!("{}.node-password.rke2", node.to_ascii_lowercase())
}

fn derive(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let params = scrypt::Params::new(LOG_N, R, P, KEY_LEN).expect("valid scrypt parameters");
    let mut out = vec![0u8; KEY_LEN];
    scrypt::scrypt(password, salt, &params, &mut out).expect("valid output length");
    out
}

/// `$1:<salt hex>:15:8:1:<base64 raw std of the key>`.
pub fn hash(password: &str) -> String {
    let salt = hex::decode(crate::token::random_hex(8)).expect("hex");
    let dk = derive(password.as_bytes(), &salt);
    format!(
        "$1:{}:{LOG_N}:{R}:{P}:{}",
        hex::encode(&salt),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(dk)
    )
}

/// Verifies `password` against a hash string (constant-time comparison).
pub fn verify(hash: &str, password: &str) -> bool {
    let parts: Vec<&str> = hash.split(':').collect();
    if parts.len() != 6 || parts[0] != "$1" {
        return false;
    }
    let (Ok(salt), Ok(log_n), Ok(r), Ok(p)) = (
        hex::decode(parts[1]),
        parts[2].parse::<u8>(),
        parts[3].parse::<u32>(),
        parts[4].parse::<u32>(),
    ) else {
        return false;
    };
    let Ok(expected) =
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(parts[5].trim_end_matches('='))
    else {
        return false;
    };
    let Ok(params) = scrypt::Params::new(log_n, r, p, expected.len()) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if scrypt::scrypt(password.as_bytes(), &salt, &params, &mut out).is_err() {
        return false;
    }
    constant_time_eq(&out, &expected)
}

fn stored_hash(secret: &Value) -> Option<String> {
    let b64 = secret.pointer("/data/hash")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

async fn verify_blocking(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&hash, &password))
        .await
        .unwrap_or(false)
}

/// Verifies `password` for `node`, storing its hash on first use (first writer wins).
pub async fn check_or_store(
    storage: &Storage,
    node: &str,
    password: &str,
) -> Result<(), NodePasswordError> {
    let info = &SECRETS;
    let name = secret_name(node);
    for _ in 0..2 {
        if let Some(existing) = storage.get_opt(info, Some(NAMESPACE), &name).await? {
            let Some(h) = stored_hash(&existing) else {
                return Err(NodePasswordError::Mismatch(node.to_string()));
            };
            return if verify_blocking(h, password.to_string()).await {
                Ok(())
            } else {
                Err(NodePasswordError::Mismatch(node.to_string()))
            };
        }
        let pw = password.to_string();
        let h = tokio::task::spawn_blocking(move || hash(&pw))
            .await
            .map_err(NodePasswordError::Hashing)?;
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "immutable": true,
            "data": {"hash": base64::engine::general_purpose::STANDARD.encode(h)},
        });
        match storage.create(info, Some(NAMESPACE), secret).await {
            Ok(_) => return Ok(()),
            // Someone registered the same name concurrently: verify against theirs.
            Err(ObjectError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(NodePasswordError::Mismatch(node.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_format_and_verification() {
        let h = hash("pw1");
        let parts: Vec<&str> = h.split(':').collect();
        assert_eq!(parts[0], "$1");
        assert_eq!(parts[1].len(), 16);
        assert_eq!(&parts[2..5], &["15", "8", "1"]);
        assert!(verify(&h, "pw1"));
        assert!(!verify(&h, "pw2"));
        assert!(!verify("garbage", "pw1"));
    }
}
