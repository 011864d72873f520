//! Cluster tokens in RKE2's wire format (docs/protocol.md §1): `K10<ca-hash>::<user>:<password>`,
//! short tokens, kubeadm-style bootstrap tokens, the CA hash, and the `server/cred/passwd` file.
//! Pure functions plus the small amount of file I/O for the token files.

use std::fmt;
use std::path::Path;

use ring::rand::SecureRandom;

use crate::fsutil::{self, IoContext, PathError};

/// A secret string (token, password). `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret value, for the few places that must send or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Errors from token parsing and the token files.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token must not be empty")]
    Empty,
    #[error(
        "invalid token format: expected K10<CA-HASH>::<USERNAME>:<PASSWORD>, <PASSWORD> or a bootstrap token <id>.<secret>"
    )]
    InvalidFormat,
    #[error(
        "invalid token CA hash: expected 64 hexadecimal characters between \"K10\" and \"::\", got {0}"
    )]
    InvalidHashLength(usize),
    /// The hash has the right length but a character outside `0-9a-fA-F`. The character itself
    /// is not printed: a mistyped token may carry its password there.
    #[error(
        "invalid token CA hash: character {position} of 64 is not a hexadecimal digit (0-9, a-f)"
    )]
    InvalidHashCharacter { position: usize },
    #[error(
        "failed to normalize server token; must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>"
    )]
    NotAServerToken,
    #[error("malformed passwd file {path}: line {line}")]
    MalformedPasswd { path: String, line: usize },
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Credentials carried by a token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `user:password` (basic auth). The user is usually overridden by the caller's role.
    Basic { username: String, password: Secret },
    /// kubeadm bootstrap token `<id>.<secret>` (bearer auth).
    Bootstrap { id: String, secret: Secret },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}:<redacted>)"),
            Credentials::Bootstrap { id, .. } => write!(f, "Bootstrap({id}.<redacted>)"),
        }
    }
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the cluster CA bundle, if the token carries one.
    pub ca_hash: Option<String>,
    pub credentials: Credentials,
}

/// True for a kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_bootstrap_token(s: &str) -> bool {
    let Some((id, secret)) = s.split_once('.') else {
        return false;
    };
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    ok(id, 6) && ok(secret, 16)
}

impl JoinToken {
    /// Parses a token the way k3s `clientaccess.parseToken` does.
    pub fn parse(token: &str) -> Result<JoinToken, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let full = if token.starts_with("K10") {
            token.to_string()
        } else if is_bootstrap_token(token) {
            format!("K10::{token}")
        } else {
            format!("K10:::{token}")
        };
        let rest = &full[3..];
        let (hash, creds) = rest.split_once("::").ok_or(TokenError::InvalidFormat)?;
        let ca_hash = match hash.chars().count() {
            0 => None,
            64 => match hash.chars().position(|c| !c.is_ascii_hexdigit()) {
                None => Some(hash.to_ascii_lowercase()),
                Some(i) => return Err(TokenError::InvalidHashCharacter { position: i + 1 }),
            },
            n => return Err(TokenError::InvalidHashLength(n)),
        };
        let credentials = if is_bootstrap_token(creds) {
            let (id, secret) = creds.split_once('.').expect("checked above");
            Credentials::Bootstrap {
                id: id.to_string(),
                secret: Secret::new(secret),
            }
        } else {
            let (user, pw) = creds.split_once(':').ok_or(TokenError::InvalidFormat)?;
            if pw.is_empty() {
                return Err(TokenError::InvalidFormat);
            }
            Credentials::Basic {
                username: user.to_string(),
                password: Secret::new(pw),
            }
        };
        Ok(JoinToken {
            ca_hash,
            credentials,
        })
    }

    /// The password of a basic-auth token; `None` for bootstrap tokens.
    pub fn password(&self) -> Option<&Secret> {
        match &self.credentials {
            Credentials::Basic { password, .. } => Some(password),
            Credentials::Bootstrap { .. } => None,
        }
    }
}

/// Reduces a server token (`K10<hash>::<user>:<pw>` or `<pw>`) to its password. Bootstrap
/// tokens are refused: they must never encrypt bootstrap data or authenticate servers.
pub fn normalize_server_token(token: &Secret) -> Result<Secret, TokenError> {
    let t = token.expose().trim();
    if t.is_empty() {
        return Err(TokenError::Empty);
    }
    if is_bootstrap_token(t) {
        return Err(TokenError::NotAServerToken);
    }
    if t.starts_with("K10") {
        match JoinToken::parse(t)?.credentials {
            Credentials::Basic { password, .. } => Ok(password),
            Credentials::Bootstrap { .. } => Err(TokenError::NotAServerToken),
        }
    } else {
        Ok(Secret::new(t))
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The CA hash of a PEM bundle as served on `/cacerts`: SHA-256 of the raw bytes for a single
/// certificate; for a chain, SHA-256 of the DER of its root (the last self-issued cert), so a
/// renewed intermediate keeps the token valid.
pub fn ca_hash(bundle: &[u8]) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bundle)
        .filter_map(Result::ok)
        .collect();
    if certs.len() > 1 {
        for der in certs.iter().rev() {
            if let Ok((_, c)) = x509_parser::parse_x509_certificate(der)
                && c.subject() == c.issuer()
            {
                return sha256_hex(der);
            }
        }
    }
    sha256_hex(bundle)
}

/// `K10<hash>::<user>:<password>`.
pub fn format_full_token(ca_hash: &str, user: &str, password: &Secret) -> String {
    format!("K10{ca_hash}::{user}:{}", password.expose())
}

/// `n` random bytes from the OS RNG, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the OS random number generator failed");
    hex::encode(buf)
}

/// A random password: 16 bytes, 32 hex characters (RKE2's format).
pub fn generate_password() -> Secret {
    Secret::new(random_hex(16))
}

/// A random kubeadm-style bootstrap token `<6>.<16>` of `[a-z0-9]`.
pub fn generate_bootstrap_token() -> (String, Secret) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let pick = |n: usize| -> String {
        let mut out = String::with_capacity(n);
        while out.len() < n {
            let mut b = [0u8; 1];
            rng.fill(&mut b)
                .expect("the OS random number generator failed");
            // 252 = 7 * 36: reject the tail so every character is equally likely.
            if b[0] < 252 {
                out.push(ALPHABET[(b[0] % 36) as usize] as char);
            }
        }
        out
    };
    let id = pick(6);
    let secret = pick(16);
    (id, Secret::new(secret))
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One record of `server/cred/passwd`: `password,username,username,group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub password: Secret,
    pub username: String,
    pub group: String,
}

/// The `server/cred/passwd` credentials store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passwd {
    pub entries: Vec<PasswdEntry>,
}

/// Group of the server user.
pub const SERVER_GROUP: &str = "rke2:server";
/// Group of the agent ("node") user.
pub const AGENT_GROUP: &str = "rke2:agent";

impl Passwd {
    pub fn parse(text: &str, path: &Path) -> Result<Passwd, TokenError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 3 || f[0].is_empty() {
                return Err(TokenError::MalformedPasswd {
                    path: path.display().to_string(),
                    line: i + 1,
                });
            }
            entries.push(PasswdEntry {
                password: Secret::new(f[0]),
                username: f[1].to_string(),
                group: f.get(3).unwrap_or(&"").to_string(),
            });
        }
        Ok(Passwd { entries })
    }

    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|e| {
                format!(
                    "{},{},{},{}\n",
                    e.password.expose(),
                    e.username,
                    e.username,
                    e.group
                )
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<Option<Passwd>, TokenError> {
        match fsutil::read_optional(path).at(path)? {
            Some(text) => Ok(Some(Passwd::parse(&text, path)?)),
            None => Ok(None),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        fsutil::write_atomic_mkdir(path, self.render().as_bytes(), fsutil::SECRET_FILE_MODE)
            .at(path)?;
        Ok(())
    }

    pub fn password_of(&self, user: &str) -> Option<&Secret> {
        self.entries
            .iter()
            .find(|e| e.username == user)
            .map(|e| &e.password)
    }

    /// Sets (or adds) `user`'s password and group.
    pub fn set(&mut self, user: &str, password: Secret, group: &str) {
        match self.entries.iter_mut().find(|e| e.username == user) {
            Some(e) => {
                e.password = password;
                e.group = group.to_string();
            }
            None => self.entries.push(PasswdEntry {
                password,
                username: user.to_string(),
                group: group.to_string(),
            }),
        }
    }

    /// Returns the group of `user` if `password` matches, comparing in constant time.
    pub fn authenticate(&self, user: &str, password: &str) -> Option<&str> {
        let e = self.entries.iter().find(|e| e.username == user)?;
        if constant_time_eq(e.password.expose().as_bytes(), password.as_bytes()) {
            Some(&e.group)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_full_short_and_bootstrap_tokens() {
        let t = JoinToken::parse(&format!("K10{HASH}::server:pw123")).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(HASH));
        assert_eq!(t.password().unwrap().expose(), "pw123");
        let t = JoinToken::parse("justapassword").unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!(
            t.credentials,
            Credentials::Basic {
                username: String::new(),
                password: Secret::new("justapassword")
            }
        );
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        assert!(matches!(t.credentials, Credentials::Bootstrap { ref id, .. } if id == "abcdef"));
        let t = JoinToken::parse(&format!("K10{HASH}::abcdef.0123456789abcdef")).unwrap();
        assert!(matches!(t.credentials, Credentials::Bootstrap { .. }));
        assert!(matches!(
            JoinToken::parse("K10abc::server:pw"),
            Err(TokenError::InvalidHashLength(3))
        ));
        assert!(matches!(JoinToken::parse(""), Err(TokenError::Empty)));
        // Right length, wrong characters: the message says which, not "got 64".
        let bad_hash = format!("K10{}g{}::server:pw", &HASH[..10], &HASH[11..]);
        let e = JoinToken::parse(&bad_hash).unwrap_err();
        assert!(
            matches!(e, TokenError::InvalidHashCharacter { position: 11 }),
            "{e:?}"
        );
        assert!(e.to_string().contains("character 11 of 64"), "{e}");
        assert!(!e.to_string().contains("got 64"), "{e}");
        // Lengths count characters, so multi-byte input is described as typed.
        assert!(matches!(
            JoinToken::parse("K10\u{e9}\u{e9}::server:pw"),
            Err(TokenError::InvalidHashLength(2))
        ));
        assert!(matches!(
            JoinToken::parse(&format!("K10{HASH}::server:")),
            Err(TokenError::InvalidFormat)
        ));
    }

    #[test]
    fn normalizes_server_tokens() {
        let full = Secret::new(format!("K10{HASH}::server:pw"));
        assert_eq!(normalize_server_token(&full).unwrap().expose(), "pw");
        assert_eq!(
            normalize_server_token(&Secret::new("pw")).unwrap().expose(),
            "pw"
        );
        assert!(normalize_server_token(&Secret::new("abcdef.0123456789abcdef")).is_err());
        assert!(normalize_server_token(&Secret::new("  ")).is_err());
    }

    #[test]
    fn secrets_do_not_leak_in_debug() {
        let t = JoinToken::parse("K10::server:topsecret").unwrap();
        assert!(!format!("{t:?}").contains("topsecret"));
    }

    #[test]
    fn generated_values_have_the_right_shape() {
        let pw = generate_password();
        assert_eq!(pw.expose().len(), 32);
        let (id, secret) = generate_bootstrap_token();
        assert!(is_bootstrap_token(&format!("{id}.{}", secret.expose())));
    }

    #[test]
    fn passwd_round_trip_and_auth() {
        let mut p = Passwd::default();
        p.set("server", Secret::new("s1"), SERVER_GROUP);
        p.set("node", Secret::new("n1"), AGENT_GROUP);
        let text = p.render();
        assert_eq!(
            text,
            "s1,server,server,rke2:server\nn1,node,node,rke2:agent\n"
        );
        let back = Passwd::parse(&text, Path::new("passwd")).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.authenticate("server", "s1"), Some(SERVER_GROUP));
        assert_eq!(back.authenticate("server", "n1"), None);
        assert_eq!(back.authenticate("nobody", "s1"), None);
    }

    #[test]
    fn ca_hash_of_single_cert_is_hash_of_bytes() {
        let bytes = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(ca_hash(bytes), sha256_hex(bytes));
    }
}
