//! Cluster bootstrap data (docs/protocol.md §3): the CA material and shared secrets every server
//! needs, serialised as RKE2's JSON (`{"ServerCA":{"Timestamp":..,"Content":<base64>},..}`) and
//! kept in etcd encrypted with the server token (PBKDF2-HMAC-SHA1 4096, AES-256-GCM) under
//! `/bootstrap/<first 12 hex of sha256(token)>`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, IoContext, PathError};
use crate::paths::ServerPaths;
use crate::token::Secret;

/// etcd key prefix of bootstrap data.
pub const BOOTSTRAP_PREFIX: &str = "/bootstrap/";
const PBKDF2_ITERATIONS: u32 = 4096;

/// Bootstrap errors.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("refusing to use an empty token to encrypt bootstrap data")]
    EmptyToken,
    #[error("bootstrap data is malformed: {0}")]
    Malformed(String),
    #[error("bootstrap data is malformed: {0}")]
    Json(#[source] serde_json::Error),
    #[error("bootstrap data is malformed: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error(
        "bootstrap data could not be decrypted: it was encrypted with a different token (or is corrupt)"
    )]
    WrongToken,
    #[error("bootstrap data is missing {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Io(#[from] PathError),
}

/// One file in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapFile {
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    /// Base64 of the file's bytes.
    #[serde(rename = "Content")]
    pub content: String,
}

/// The bootstrap bundle, keyed by RKE2's field names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BootstrapData {
    pub files: BTreeMap<String, BootstrapFile>,
}

/// Bundle keys and the files they stand for (relative to `<data-dir>/server`).
pub fn bundle_layout(paths: &ServerPaths) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("ETCDServerCA", paths.etcd_server_ca().cert),
        ("ETCDServerCAKey", paths.etcd_server_ca().key),
        ("ETCDPeerCA", paths.etcd_peer_ca().cert),
        ("ETCDPeerCAKey", paths.etcd_peer_ca().key),
        ("ServerCA", paths.server_ca().cert),
        ("ServerCAKey", paths.server_ca().key),
        ("ClientCA", paths.client_ca().cert),
        ("ClientCAKey", paths.client_ca().key),
        ("RequestHeaderCA", paths.request_header_ca().cert),
        ("RequestHeaderCAKey", paths.request_header_ca().key),
        ("PasswdFile", paths.passwd()),
    ]
}

/// Entry names of the kubelet serving CA (docs/security.md). Bundles of clusters created before
/// it existed lack them; the first server to start with this version adds them.
pub const KUBELET_SERVING_CA: &str = "KubeletServingCA";
pub const KUBELET_SERVING_CA_KEY: &str = "KubeletServingCAKey";

// The Secrets encryption entries are named here, below crate::secrets_encryption, which
// re-exports them.
/// Bootstrap entry of the provider configuration (RKE2's name).
pub const BOOTSTRAP_CONFIG: &str = "EncryptionConfig";
/// Bootstrap entry of the rotation state (RKE2's name).
pub const BOOTSTRAP_STATE: &str = "EncryptionHash";
/// `server/cred/encryption-config.json`.
pub fn config_path(paths: &ServerPaths) -> PathBuf {
    paths.cred().join("encryption-config.json")
}

/// `server/cred/encryption-state.json`.
pub fn state_path(paths: &ServerPaths) -> PathBuf {
    paths.cred().join("encryption-state.json")
}

/// Bundle entries that may be absent: bundles of clusters created before the kubelet serving
/// CA (see [`KUBELET_SERVING_CA`]) or Secrets encryption at rest existed lack them.
pub fn optional_layout(paths: &ServerPaths) -> Vec<(&'static str, PathBuf)> {
    vec![
        (KUBELET_SERVING_CA, paths.kubelet_serving_ca().cert),
        (KUBELET_SERVING_CA_KEY, paths.kubelet_serving_ca().key),
        (BOOTSTRAP_CONFIG, config_path(paths)),
        (BOOTSTRAP_STATE, state_path(paths)),
    ]
}

/// Entries written 0600: keys, credentials and the Secrets encryption keys.
fn is_secret_entry(name: &str) -> bool {
    name.ends_with("Key")
        || name == "PasswdFile"
        || name == BOOTSTRAP_CONFIG
        || name == BOOTSTRAP_STATE
}

impl BootstrapData {
    /// Reads the bundle from this server's files (optional entries only when present).
    pub fn read(paths: &ServerPaths) -> Result<BootstrapData, BootstrapError> {
        let mut files = BTreeMap::new();
        let optional = optional_layout(paths)
            .into_iter()
            .filter(|(_, p)| p.exists());
        for (name, path) in bundle_layout(paths).into_iter().chain(optional) {
            let bytes = std::fs::read(&path).at(&path)?;
            let mtime = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                })
                .unwrap_or_default();
            files.insert(
                name.to_string(),
                BootstrapFile {
                    timestamp: mtime,
                    content: B64.encode(bytes),
                },
            );
        }
        Ok(BootstrapData { files })
    }

    /// The decoded bytes of one entry.
    pub fn content(&self, name: &'static str) -> Result<Vec<u8>, BootstrapError> {
        let f = self.files.get(name).ok_or(BootstrapError::Missing(name))?;
        B64.decode(&f.content)
            .map_err(|e| BootstrapError::Malformed(format!("{name}: {e}")))
    }

    /// Writes every entry to its file: directories 0700, keys/passwd 0600, certificates 0644.
    /// Entries are validated before anything is written, so a bad bundle changes nothing.
    pub fn write(&self, paths: &ServerPaths) -> Result<(), BootstrapError> {
        let optional = optional_layout(paths)
            .into_iter()
            .filter(|(name, _)| self.files.contains_key(*name));
        let layout: Vec<_> = bundle_layout(paths).into_iter().chain(optional).collect();
        let mut decoded = Vec::new();
        for (name, path) in &layout {
            decoded.push((path, self.content(name)?, is_secret_entry(name)));
        }
        for (path, bytes, secret) in decoded {
            let mode = if secret {
                fsutil::SECRET_FILE_MODE
            } else {
                fsutil::PUBLIC_FILE_MODE
            };
            fsutil::write_atomic_mkdir(path, &bytes, mode).at(path)?;
        }
        Ok(())
    }

    /// Adds (or replaces) an entry.
    pub fn insert(&mut self, name: &str, bytes: &[u8]) {
        self.files.insert(
            name.to_string(),
            BootstrapFile {
                timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                content: B64.encode(bytes),
            },
        );
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("bootstrap data serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<BootstrapData, BootstrapError> {
        serde_json::from_slice(bytes).map_err(BootstrapError::Json)
    }

    /// Whether two bundles carry the same file contents (timestamps aside).
    pub fn same_content(&self, other: &BootstrapData) -> bool {
        self.files.len() == other.files.len()
            && self.files.iter().all(|(k, v)| {
                other
                    .files
                    .get(k)
                    .map(|o| o.content == v.content)
                    .unwrap_or(false)
            })
    }
}

/// The etcd key of the bootstrap data for a (normalised) server token password.
pub fn storage_key(password: &Secret) -> String {
    let hash = crate::token::sha256_hex(password.expose().as_bytes());
    format!("{BOOTSTRAP_PREFIX}{}", &hash[..12])
}

fn derive_key(password: &Secret, salt: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA1,
        NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero"),
        salt,
        password.expose().as_bytes(),
        &mut key,
    );
    key
}

/// Encrypts `plaintext` under `password`: `<16 hex salt>:<base64(nonce ‖ ciphertext ‖ tag)>`.
pub fn encrypt(password: &Secret, plaintext: &[u8]) -> Result<String, BootstrapError> {
    if password.expose().is_empty() {
        return Err(BootstrapError::EmptyToken);
    }
    let salt = crate::token::random_hex(8);
    let key = derive_key(password, salt.as_bytes());
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, &key).expect("32-byte key"),
    );
    let mut nonce = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .expect("the OS random number generator failed");
    let mut sealed = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut sealed,
    )
    .expect("AES-GCM sealing cannot fail for in-memory data");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!("{salt}:{}", B64.encode(out)))
}

/// Decrypts a value produced by [`encrypt`] (or by RKE2).
pub fn decrypt(password: &Secret, stored: &str) -> Result<Vec<u8>, BootstrapError> {
    if password.expose().is_empty() {
        return Err(BootstrapError::EmptyToken);
    }
    let (salt, data) = stored
        .split_once(':')
        .ok_or_else(|| BootstrapError::Malformed("missing salt separator".into()))?;
    let data = B64.decode(data.trim()).map_err(BootstrapError::Base64)?;
    if data.len() < 12 + 16 {
        return Err(BootstrapError::Malformed("ciphertext too short".into()));
    }
    let key = derive_key(password, salt.as_bytes());
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, &key).expect("32-byte key"),
    );
    let (nonce, sealed) = data.split_at(12);
    let mut buf = sealed.to_vec();
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| BootstrapError::Malformed("bad nonce".into()))?;
    let plain = key
        .open_in_place(nonce, aead::Aad::empty(), &mut buf)
        .map_err(|_| BootstrapError::WrongToken)?;
    Ok(plain.to_vec())
}

/// Whether `dir` holds the bootstrap files already (a server that has been initialised).
pub fn files_present(paths: &ServerPaths) -> bool {
    bundle_layout(paths)
        .iter()
        .all(|(_, p)| Path::new(p).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_round_trip_and_wrong_token() {
        let pw = Secret::new("s3cret");
        let sealed = encrypt(&pw, b"hello bootstrap").unwrap();
        let (salt, _) = sealed.split_once(':').unwrap();
        assert_eq!(salt.len(), 16);
        assert_eq!(decrypt(&pw, &sealed).unwrap(), b"hello bootstrap");
        assert!(matches!(
            decrypt(&Secret::new("other"), &sealed),
            Err(BootstrapError::WrongToken)
        ));
        assert!(matches!(
            encrypt(&Secret::new(""), b"x"),
            Err(BootstrapError::EmptyToken)
        ));
    }

    #[test]
    fn encryption_entries_are_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().unwrap();
        let pa = ServerPaths::new(a.path());
        for (_, p) in bundle_layout(&pa) {
            fsutil::write_atomic_mkdir(&p, b"x", 0o644).unwrap();
        }
        let mut data = BootstrapData::read(&pa).unwrap();
        data.insert(BOOTSTRAP_CONFIG, b"{}");
        data.insert(BOOTSTRAP_STATE, b"start-00");
        let b = tempfile::tempdir().unwrap();
        let pb = ServerPaths::new(b.path());
        data.write(&pb).unwrap();
        for p in [config_path(&pb), state_path(&pb)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        assert!(BootstrapData::read(&pb).unwrap().same_content(&data));
    }

    #[test]
    fn storage_key_uses_12_hex_of_sha256() {
        // sha256("") = e3b0c44298fc..., the legacy empty-token key RKE2 migrates away from.
        assert_eq!(storage_key(&Secret::new("")), "/bootstrap/e3b0c44298fc");
    }

    #[test]
    fn bundle_round_trips_through_files() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = ServerPaths::new(a.path());
        for (_, p) in bundle_layout(&pa) {
            fsutil::write_atomic_mkdir(&p, p.display().to_string().as_bytes(), 0o600).unwrap();
        }
        let data = BootstrapData::read(&pa).unwrap();
        let back = BootstrapData::from_json(&data.to_json()).unwrap();
        assert_eq!(back, data);
        let pb = ServerPaths::new(b.path());
        back.write(&pb).unwrap();
        assert!(files_present(&pb));
        assert!(BootstrapData::read(&pb).unwrap().same_content(&data));
        // Bundles of older clusters lack the kubelet serving CA: still readable and writable.
        assert!(!data.files.contains_key(KUBELET_SERVING_CA));
        assert!(!pb.kubelet_serving_ca().cert.exists());
        let mut with_ca = data.clone();
        with_ca.insert(KUBELET_SERVING_CA, b"cert");
        with_ca.insert(KUBELET_SERVING_CA_KEY, b"key");
        with_ca.write(&pb).unwrap();
        assert_eq!(
            std::fs::read(pb.kubelet_serving_ca().cert).unwrap(),
            b"cert"
        );
        let reread = BootstrapData::read(&pb).unwrap();
        assert!(reread.same_content(&with_ca));
        assert!(!reread.same_content(&data));
    }
}
