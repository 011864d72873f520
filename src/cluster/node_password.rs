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
    /// No hashing slot came free within [`HASHING_QUEUE_WAIT`]; the agent retries.
    #[error("too many node passwords are being checked; retry later")]
    Busy,
}

/// Longest a request waits for a hashing slot. It stays well under the agents' 10 s request
/// timeout, so a run that starts finishes while its agent still waits for the answer: a run
/// for an agent that gave up is a wasted 32 MiB and tenth of a core-second, and under a
/// registration storm most runs were (docs/scale.md). A busy server answers 503 and the agent
/// retries with backoff, perhaps on another server.
pub const HASHING_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Bounds the scrypt runs in progress to one per core. Each run holds 32 MiB (128 * r * N
/// bytes) and a core for a tenth of a second or more; without a bound a registration storm puts
/// one on every blocking thread (up to 512, 16 GiB) and no run finishes sooner for it
/// (docs/scale.md).
fn hashing_slots() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        std::sync::Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ))
    })
}

/// Runs `f` (an scrypt computation) on a blocking thread once a hashing slot is free. The slot
/// moves into the blocking closure: a run cannot be stopped, so when the request that started
/// it is dropped (its client gave up) the slot stays taken until the run ends. Held by the
/// future instead, it came free at once and the next run started beside the orphan: under a
/// registration storm, dozens of 32 MiB runs at a time (docs/scale.md).
async fn scrypt_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodePasswordError> {
    in_slot(hashing_slots().clone(), HASHING_QUEUE_WAIT, f).await
}

async fn in_slot<T: Send + 'static>(
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodePasswordError> {
    let slot = tokio::time::timeout(wait, slots.acquire_owned())
        .await
        .map_err(|_| NodePasswordError::Busy)?
        .expect("the hashing semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(slot);
        out
    })
    .await
    .map_err(NodePasswordError::Hashing)
}

async fn verify_blocking(hash: String, password: String) -> Result<bool, NodePasswordError> {
    scrypt_blocking(move || verify(&hash, &password)).await
}

/// Most entries [`VerifiedCache`] keeps; it starts over when full (one entry is ~150 bytes).
const VERIFIED_CACHE_MAX: usize = 65_536;

/// Passwords this process verified (or stored) recently: node name -> (the stored hash string
/// they matched, SHA-256 of the password). An agent sends its password with each of its two
/// certificate requests and again at every restart; scrypt is slow on purpose, so only the first
/// check against a given stored hash pays for it (docs/scale.md). An entry only counts while
/// the stored hash is the same string, so a deleted and re-created password Secret is checked
/// with scrypt again. The digest of a random 128-bit node password reveals nothing usable.
struct VerifiedCache(std::sync::Mutex<std::collections::HashMap<String, (String, Vec<u8>)>>);

impl VerifiedCache {
    fn get() -> &'static VerifiedCache {
        static CACHE: std::sync::OnceLock<VerifiedCache> = std::sync::OnceLock::new();
        CACHE.get_or_init(|| VerifiedCache(Default::default()))
    }

    fn digest(password: &str) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, password.as_bytes())
            .as_ref()
            .to_vec()
    }

    fn matches(&self, node: &str, stored: &str, password: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(node).is_some_and(|(h, d)| {
            h == stored && constant_time_eq(d, &VerifiedCache::digest(password))
        })
    }

    fn remember(&self, node: &str, stored: String, password: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_CACHE_MAX {
            map.clear();
        }
        map.insert(node.to_string(), (stored, VerifiedCache::digest(password)));
    }
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
            let cache = VerifiedCache::get();
            if cache.matches(node, &h, password) {
                return Ok(());
            }
            return if verify_blocking(h.clone(), password.to_string()).await? {
                cache.remember(node, h, password);
                Ok(())
            } else {
                Err(NodePasswordError::Mismatch(node.to_string()))
            };
        }
        let pw = password.to_string();
        let h = scrypt_blocking(move || hash(&pw)).await?;
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "immutable": true,
            "data": {"hash": base64::engine::general_purpose::STANDARD.encode(&h)},
        });
        match storage.create(info, Some(NAMESPACE), secret).await {
            Ok(_) => {
                VerifiedCache::get().remember(node, h, password);
                return Ok(());
            }
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

    #[tokio::test]
    async fn an_abandoned_run_keeps_its_slot_until_it_ends() {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let wait = std::time::Duration::from_secs(60);
        let run = tokio::spawn(in_slot(slots.clone(), wait, move || {
            started_tx.send(()).unwrap();
            finish_rx.recv().unwrap();
        }));
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        // The request is dropped (its client gave up); the run goes on, and so does its slot.
        run.abort();
        let _ = run.await;
        assert_eq!(slots.available_permits(), 0);
        // Meanwhile a request that cannot get a slot in time is answered "busy".
        let short = std::time::Duration::from_millis(50);
        let busy = in_slot(slots.clone(), short, || ()).await;
        assert!(matches!(busy, Err(NodePasswordError::Busy)), "{busy:?}");
        finish_tx.send(()).unwrap();
        let freed = tokio::time::timeout(std::time::Duration::from_secs(30), slots.acquire())
            .await
            .expect("the slot comes free when the run ends");
        drop(freed);
    }

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

    #[test]
    fn verified_cache_needs_the_same_stored_hash_and_password() {
        let cache = VerifiedCache(Default::default());
        assert!(!cache.matches("n1", "$1:h1", "pw"));
        cache.remember("n1", "$1:h1".into(), "pw");
        assert!(cache.matches("n1", "$1:h1", "pw"));
        assert!(!cache.matches("n1", "$1:h1", "other"));
        // A re-created Secret (another stored hash) is checked with scrypt again.
        assert!(!cache.matches("n1", "$1:h2", "pw"));
        assert!(!cache.matches("n2", "$1:h1", "pw"));
    }
}
