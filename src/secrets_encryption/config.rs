//! The provider configuration in upstream's `EncryptionConfiguration` format
//! (`apiserver.config.k8s.io/v1`), as RKE2 writes it to `server/cred/encryption-config.json`,
//! and the rotation state beside it (`server/cred/encryption-state.json`: `<stage>-<sha256 of
//! the config file>`, RKE2's encryption hash). Both travel in the bootstrap data so every
//! server holds the same keys (docs/security.md, "Encryption at rest").
//!
//! The configuration is one keyed provider (aescbc, aesgcm or secretbox) with its keys, first
//! key = the one new writes use, plus `identity`: after it when encryption is enabled (plain
//! values stay readable), before it when disabled (new writes are plain, encrypted values stay
//! readable).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::providers::{Cipher, ProviderKey};

pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
pub const KIND: &str = "EncryptionConfiguration";

/// The rotation stages, in RKE2's words and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Start,
    Prepare,
    Rotate,
    ReencryptRequest,
    ReencryptActive,
    ReencryptFinished,
}

impl Stage {
    const ALL: [Stage; 6] = [
        Stage::Start,
        Stage::Prepare,
        Stage::Rotate,
        Stage::ReencryptRequest,
        Stage::ReencryptActive,
        Stage::ReencryptFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Start => "start",
            Stage::Prepare => "prepare",
            Stage::Rotate => "rotate",
            Stage::ReencryptRequest => "reencrypt_request",
            Stage::ReencryptActive => "reencrypt_active",
            Stage::ReencryptFinished => "reencrypt_finished",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("encryption configuration is not valid JSON: {0}")]
    Json(String),
    #[error("encryption configuration: {0}")]
    Invalid(String),
    #[error("encryption state \"{0}\" is not <stage>-<hash>")]
    State(String),
    #[error(transparent)]
    Key(#[from] super::providers::ProviderError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileConfig {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    resources: Vec<FileResource>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileResource {
    resources: Vec<String>,
    providers: Vec<FileProvider>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FileProvider {
    #[serde(skip_serializing_if = "Option::is_none")]
    aescbc: Option<FileKeys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aesgcm: Option<FileKeys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secretbox: Option<FileKeys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileKey {
    name: String,
    secret: String,
}

/// The keys of the cluster and whether new writes are encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionSettings {
    pub cipher: Cipher,
    /// First = the key new writes use while enabled.
    pub keys: Vec<ProviderKey>,
    pub enabled: bool,
}

impl EncryptionSettings {
    /// A new configuration with one fresh CSPRNG key named `<provider>key` (RKE2's name).
    pub fn generate(cipher: Cipher, enabled: bool) -> EncryptionSettings {
        EncryptionSettings {
            cipher,
            keys: vec![ProviderKey::generate(
                cipher,
                &format!("{}key", cipher.provider()),
            )],
            enabled,
        }
    }

    /// The key new writes use, `None` when writes are plain (identity first).
    pub fn write_key(&self) -> Option<&ProviderKey> {
        if self.enabled {
            self.keys.first()
        } else {
            None
        }
    }

    /// `prepare`: a new CSPRNG key named `<provider>key-<RFC 3339 time>` after the others, so
    /// every server can read what it will write before any server writes with it.
    pub fn with_new_key(&self, now: chrono::DateTime<chrono::Utc>) -> EncryptionSettings {
        let mut next = self.clone();
        let mut name = format!(
            "{}key-{}",
            self.cipher.provider(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        // Two prepares within one second must still give distinct names.
        while next.keys.iter().any(|k| k.name == name) {
            name.push('x');
        }
        next.keys.push(ProviderKey::generate(self.cipher, &name));
        next
    }

    /// `rotate`: the newest (last) key becomes the one writes use.
    pub fn rotated(&self) -> EncryptionSettings {
        let mut next = self.clone();
        if let Some(k) = next.keys.pop() {
            next.keys.insert(0, k);
        }
        next
    }

    /// After `reencrypt`: only the key writes use remains.
    pub fn primary_only(&self) -> EncryptionSettings {
        let mut next = self.clone();
        next.keys.truncate(1);
        next
    }

    /// Serialises in upstream's format (what kube-apiserver's
    /// `--encryption-provider-config` reads).
    pub fn to_json(&self) -> Vec<u8> {
        let keys = FileKeys {
            keys: self
                .keys
                .iter()
                .map(|k| FileKey {
                    name: k.name.clone(),
                    secret: B64.encode(k.secret()),
                })
                .collect(),
        };
        let mut keyed = FileProvider::default();
        match self.cipher {
            Cipher::AesCbc => keyed.aescbc = Some(keys),
            Cipher::AesGcm => keyed.aesgcm = Some(keys),
            Cipher::Secretbox => keyed.secretbox = Some(keys),
        }
        let identity = FileProvider {
            identity: Some(Default::default()),
            ..Default::default()
        };
        let providers = if self.enabled {
            vec![keyed, identity]
        } else {
            vec![identity, keyed]
        };
        let file = FileConfig {
            kind: KIND.into(),
            api_version: API_VERSION.into(),
            resources: vec![FileResource {
                resources: vec!["secrets".into()],
                providers,
            }],
        };
        serde_json::to_vec(&file).expect("configuration serialises")
    }

    /// Parses a configuration this server (or RKE2) wrote: one resource entry for `secrets`
    /// with one keyed provider and `identity`.
    pub fn from_json(bytes: &[u8]) -> Result<EncryptionSettings, ConfigError> {
        let invalid = |m: &str| ConfigError::Invalid(m.to_string());
        let file: FileConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        if file.kind != KIND || file.api_version != API_VERSION {
            return Err(ConfigError::Invalid(format!(
                "expected kind {KIND} of {API_VERSION}, found {} of {}",
                file.kind, file.api_version
            )));
        }
        let [resource] = file.resources.as_slice() else {
            return Err(invalid("expected exactly one resources entry"));
        };
        if resource.resources != ["secrets"] {
            return Err(invalid("the resources entry must name only secrets"));
        }
        let mut keyed: Option<(Cipher, &FileKeys, usize)> = None;
        let mut identity_at = None;
        for (i, p) in resource.providers.iter().enumerate() {
            let entries = [
                (Cipher::AesCbc, &p.aescbc),
                (Cipher::AesGcm, &p.aesgcm),
                (Cipher::Secretbox, &p.secretbox),
            ];
            let set: Vec<_> = entries
                .iter()
                .filter_map(|(c, k)| k.as_ref().map(|k| (*c, k)))
                .collect();
            match (set.as_slice(), &p.identity) {
                ([(c, k)], None) if keyed.is_none() => keyed = Some((*c, k, i)),
                ([], Some(_)) if identity_at.is_none() => identity_at = Some(i),
                _ => {
                    return Err(invalid(
                        "expected one keyed provider (aescbc, aesgcm or secretbox) and identity, each once",
                    ));
                }
            }
        }
        let (Some((cipher, keys, keyed_at)), Some(identity_at)) = (keyed, identity_at) else {
            return Err(invalid(
                "expected one keyed provider (aescbc, aesgcm or secretbox) and identity",
            ));
        };
        if keys.keys.is_empty() {
            return Err(invalid("the keyed provider has no keys"));
        }
        let mut parsed = Vec::new();
        for k in &keys.keys {
            if k.name.is_empty() {
                return Err(invalid("a key has an empty name"));
            }
            if parsed.iter().any(|p: &ProviderKey| p.name == k.name) {
                return Err(ConfigError::Invalid(format!(
                    "key name \"{}\" is used twice",
                    k.name
                )));
            }
            let secret = B64.decode(&k.secret).map_err(|_| {
                ConfigError::Invalid(format!("the secret of key \"{}\" is not base64", k.name))
            })?;
            parsed.push(ProviderKey::new(cipher, &k.name, secret)?);
        }
        Ok(EncryptionSettings {
            cipher,
            keys: parsed,
            enabled: keyed_at < identity_at,
        })
    }
}

/// The hex SHA-256 of a configuration file's bytes (RKE2's encryption hash).
pub fn config_hash(config_json: &[u8]) -> String {
    crate::token::sha256_hex(config_json)
}

/// The rotation state: the stage and the hash of the configuration it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionState {
    pub stage: Stage,
    pub hash: String,
}

impl EncryptionState {
    /// `<stage>-<hash>`.
    pub fn render(&self) -> String {
        format!("{}-{}", self.stage, self.hash)
    }

    pub fn parse(s: &str) -> Result<EncryptionState, ConfigError> {
        let s = s.trim();
        let (stage, hash) = s
            .rsplit_once('-')
            .ok_or_else(|| ConfigError::State(s.to_string()))?;
        let stage = Stage::parse(stage).ok_or_else(|| ConfigError::State(s.to_string()))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::State(s.to_string()));
        }
        Ok(EncryptionState {
            stage,
            hash: hash.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_upstreams_format() {
        let s = EncryptionSettings::generate(Cipher::AesCbc, true);
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v["apiVersion"], "apiserver.config.k8s.io/v1");
        assert_eq!(v["kind"], "EncryptionConfiguration");
        assert_eq!(
            v["resources"][0]["resources"],
            serde_json::json!(["secrets"])
        );
        let p = &v["resources"][0]["providers"];
        assert_eq!(p[0]["aescbc"]["keys"][0]["name"], "aescbckey");
        let secret = B64
            .decode(p[0]["aescbc"]["keys"][0]["secret"].as_str().unwrap())
            .unwrap();
        assert_eq!(secret.len(), 32);
        assert_eq!(p[1], serde_json::json!({"identity": {}}));
        assert_eq!(EncryptionSettings::from_json(&s.to_json()).unwrap(), s);
        // Two generated configurations never share a key.
        let t = EncryptionSettings::generate(Cipher::AesCbc, true);
        assert_ne!(t.keys[0].secret(), s.keys[0].secret());
    }

    #[test]
    fn disabled_puts_identity_first() {
        let s = EncryptionSettings::generate(Cipher::Secretbox, false);
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(
            v["resources"][0]["providers"][0],
            serde_json::json!({"identity": {}})
        );
        assert_eq!(
            v["resources"][0]["providers"][1]["secretbox"]["keys"][0]["name"],
            "secretboxkey"
        );
        let back = EncryptionSettings::from_json(&s.to_json()).unwrap();
        assert!(!back.enabled);
        assert!(back.write_key().is_none());
    }

    #[test]
    fn prepare_rotate_and_finish_move_keys_like_rke2() {
        let s = EncryptionSettings::generate(Cipher::AesCbc, true);
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let p = s.with_new_key(now);
        assert_eq!(p.keys.len(), 2);
        assert_eq!(p.keys[1].name, "aescbckey-2026-12-02T03:04:05Z");
        assert_eq!(p.write_key().unwrap().name, "aescbckey");
        let r = p.rotated();
        assert_eq!(
            r.write_key().unwrap().name,
            "aescbckey-2026-12-02T03:04:05Z"
        );
        assert_eq!(r.keys[1].name, "aescbckey");
        let f = r.primary_only();
        assert_eq!(f.keys.len(), 1);
        assert_eq!(f.keys[0], p.keys[1]);
        assert_ne!(p.with_new_key(now).keys[2].name, p.keys[1].name);
    }

    #[test]
    fn malformed_configurations_are_named() {
        let bad = |text: &str| {
            EncryptionSettings::from_json(text.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("{").contains("not valid JSON"));
        assert!(
            bad(r#"{"kind":"Other","apiVersion":"v1","resources":[]}"#).contains("expected kind")
        );
        let no_identity = r#"{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1",
            "resources":[{"resources":["secrets"],"providers":[{"aescbc":{"keys":[{"name":"a","secret":"AAAA"}]}}]}]}"#;
        assert!(bad(no_identity).contains("identity"));
        let short = r#"{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1",
            "resources":[{"resources":["secrets"],"providers":[{"aescbc":{"keys":[{"name":"a","secret":"AAAA"}]}},{"identity":{}}]}]}"#;
        assert_eq!(
            bad(short),
            "aescbc key \"a\" must be 16, 24 or 32, not 3 bytes"
        );
    }

    #[test]
    fn state_round_trips() {
        let st = EncryptionState {
            stage: Stage::ReencryptFinished,
            hash: config_hash(b"x"),
        };
        assert!(st.render().starts_with("reencrypt_finished-"));
        assert_eq!(EncryptionState::parse(&st.render()).unwrap(), st);
        assert!(EncryptionState::parse("later-abc").is_err());
        assert!(EncryptionState::parse("start").is_err());
    }
}
