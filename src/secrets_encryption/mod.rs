//! Secrets encrypted at rest (docs/security.md, "Encryption at rest"), as RKE2 does by
//! default: the provider configuration and rotation state ([`config`]) in the bootstrap data
//! and under `server/cred/`, the value formats of upstream's providers ([`providers`]), a
//! transformer around the datastore for the Secrets prefix ([`store`]), the rotation stages
//! behind `rke2 secrets-encrypt` ([`stages`]) and the loop that keeps every server on the
//! cluster's current keys without a restart ([`follow`]).

pub mod config;
pub mod providers;
pub mod store;

use std::sync::{Arc, RwLock};

use config::{EncryptionSettings, EncryptionState};
use providers::Cipher;

use crate::fsutil::{self, IoContext, PathError};
use crate::paths::ServerPaths;

pub use crate::bootstrap::{BOOTSTRAP_CONFIG, BOOTSTRAP_STATE, config_path, state_path};
/// Node annotation where each server reports the state it has applied (RKE2's name).
pub const HASH_ANNOTATION: &str = "encryption.k3s.cattle.io/encryption-hash";
/// Start of every encrypted value.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// Errors of encryption at rest.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("{key} is encrypted with a {provider} key this server does not have")]
    UnknownKey { key: String, provider: String },
    #[error("{key}: {source}")]
    Decrypt {
        key: String,
        #[source]
        source: providers::ProviderError,
    },
    #[error("{key}: malformed encrypted value prefix")]
    Prefix { key: String },
}

/// What a server applies: the settings, the exact configuration bytes and the state.
#[derive(Clone)]
pub struct Active {
    pub settings: EncryptionSettings,
    pub config_json: Vec<u8>,
    pub state: EncryptionState,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration bytes carry the keys: never in a log line.
        f.debug_struct("Active")
            .field("settings", &self.settings)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Active {
    /// From a configuration file's bytes and a state line.
    pub fn parse(config_json: &[u8], state: &str) -> Result<Active, EncryptionError> {
        Ok(Active {
            settings: EncryptionSettings::from_json(config_json)?,
            config_json: config_json.to_vec(),
            state: EncryptionState::parse(state)?,
        })
    }

    /// A new cluster's configuration: one fresh key, stage `start`.
    pub fn generate(cipher: Cipher, enabled: bool) -> Active {
        Active::with_stage(
            EncryptionSettings::generate(cipher, enabled),
            config::Stage::Start,
        )
    }

    /// `settings` at `stage`, hashed.
    pub fn with_stage(settings: EncryptionSettings, stage: config::Stage) -> Active {
        let config_json = settings.to_json();
        let hash = config::config_hash(&config_json);
        Active {
            settings,
            config_json,
            state: EncryptionState { stage, hash },
        }
    }

    /// Reads `server/cred/encryption-{config,state}.json`; `None` when absent.
    pub fn read(paths: &ServerPaths) -> Result<Option<Active>, EncryptionError> {
        let (cfg, st) = (config_path(paths), state_path(paths));
        if !cfg.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&cfg).at(&cfg)?;
        let state = std::fs::read_to_string(&st).at(&st)?;
        Active::parse(&bytes, &state).map(Some)
    }

    /// Writes both files, 0600, each by temp file + rename (state last, so a reader never sees
    /// a state for a configuration that is not there yet).
    pub fn write(&self, paths: &ServerPaths) -> Result<(), EncryptionError> {
        let (cfg, st) = (config_path(paths), state_path(paths));
        fsutil::write_atomic_mkdir(&cfg, &self.config_json, fsutil::SECRET_FILE_MODE).at(&cfg)?;
        fsutil::write_atomic_mkdir(
            &st,
            self.state.render().as_bytes(),
            fsutil::SECRET_FILE_MODE,
        )
        .at(&st)?;
        Ok(())
    }

    /// Encodes a value for storage under `key`: the first key's format while enabled, else as
    /// is (identity).
    pub fn encode(&self, key: &str, plain: Vec<u8>) -> Vec<u8> {
        match self.settings.write_key() {
            Some(k) => k.seal(key, &plain),
            None => plain,
        }
    }

    /// Decodes a stored value: with the key its prefix names, or as is when it carries no
    /// `k8s:enc:` prefix (identity).
    pub fn decode(&self, key: &str, stored: Vec<u8>) -> Result<Vec<u8>, EncryptionError> {
        let Some(rest) = stored.strip_prefix(ENCRYPTED_PREFIX) else {
            return Ok(stored);
        };
        // Key names may contain ':' (RKE2's carry an RFC 3339 time), so the prefix is matched
        // whole against each key's, as upstream's prefix transformers do.
        for k in &self.settings.keys {
            if let Some(data) = stored.strip_prefix(k.value_prefix().as_bytes()) {
                return k
                    .open(key, data)
                    .map_err(|source| EncryptionError::Decrypt {
                        key: key.to_string(),
                        source,
                    });
            }
        }
        // <provider>:v1:<name>:<data>
        let mut parts = rest.splitn(3, |b| *b == b':');
        match (parts.next(), parts.next()) {
            (Some(provider), Some(b"v1")) => Err(EncryptionError::UnknownKey {
                key: key.to_string(),
                provider: String::from_utf8_lossy(provider).into_owned(),
            }),
            _ => Err(EncryptionError::Prefix {
                key: key.to_string(),
            }),
        }
    }
}

/// The configuration a server applies now, swapped whole when the cluster's changes. Cheap to
/// clone; every clone sees the same state.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    active: Arc<RwLock<Option<Arc<Active>>>>,
    /// Held from reading (or writing) the cluster's configuration until it is applied here, so
    /// the follower and a local `secrets-encrypt` never interleave their file writes or apply
    /// an older state after a newer one.
    updates: Arc<tokio::sync::Mutex<()>>,
}

impl Keyring {
    /// The active configuration, if loaded.
    pub fn current(&self) -> Option<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Switches to `active`.
    pub fn set(&self, active: Active) {
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(active));
    }

    /// Exclusive right to update this server's configuration until the guard drops.
    pub async fn lock_updates(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.updates.clone().lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_picks_the_key_its_prefix_names_and_reads_plain_values() {
        let old = Active::generate(Cipher::AesCbc, true);
        let sealed = old.encode("/registry/secrets/a/b", b"{\"v\":1}".to_vec());
        assert!(sealed.starts_with(b"k8s:enc:aescbc:v1:aescbckey:"));
        let next = Active::with_stage(
            old.settings.with_new_key(chrono::Utc::now()).rotated(),
            config::Stage::Rotate,
        );
        let newer = next.encode("/registry/secrets/a/b", b"{\"v\":2}".to_vec());
        assert!(!newer.starts_with(b"k8s:enc:aescbc:v1:aescbckey:"));
        // The rotated configuration reads both; the old one only its own.
        assert_eq!(
            next.decode("/registry/secrets/a/b", sealed.clone())
                .unwrap(),
            b"{\"v\":1}"
        );
        assert_eq!(
            next.decode("/registry/secrets/a/b", newer.clone()).unwrap(),
            b"{\"v\":2}"
        );
        let e = old.decode("/registry/secrets/a/b", newer).unwrap_err();
        assert!(
            e.to_string()
                .contains("aescbc key this server does not have"),
            "{e}"
        );
        // Identity: plain JSON passes through.
        assert_eq!(old.decode("k", b"{}".to_vec()).unwrap(), b"{}");
        assert!(matches!(
            old.decode("k", b"k8s:enc:aescbc".to_vec()),
            Err(EncryptionError::Prefix { .. })
        ));
        // Disabled: writes are plain, encrypted values still readable.
        let mut off = old.settings.clone();
        off.enabled = false;
        let off = Active::with_stage(off, config::Stage::Start);
        assert_eq!(off.encode("k", b"{}".to_vec()), b"{}");
        assert_eq!(
            off.decode("/registry/secrets/a/b", sealed).unwrap(),
            b"{\"v\":1}"
        );
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let a = Active::generate(Cipher::AesCbc, true);
        let secret = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            a.settings.keys[0].secret(),
        );
        let shown = format!("{a:?}");
        assert!(shown.contains("aescbckey"), "{shown}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(!shown.contains(&format!("{:?}", a.settings.keys[0].secret())));
    }

    #[test]
    fn files_are_private_and_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let paths = ServerPaths::new(d.path());
        assert!(Active::read(&paths).unwrap().is_none());
        let a = Active::generate(Cipher::AesGcm, true);
        a.write(&paths).unwrap();
        for p in [config_path(&paths), state_path(&paths)] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let b = Active::read(&paths).unwrap().unwrap();
        assert_eq!(b.settings, a.settings);
        assert_eq!(b.state, a.state);
        assert_eq!(b.state.hash, config::config_hash(&b.config_json));
    }
}
