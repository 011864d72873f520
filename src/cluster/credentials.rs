//! Cluster-wide verification of the `server` and `node` passwords. Each server keeps the
//! plaintext passwords in its own `server/cred/passwd` (RKE2 layout), but a token rotated on one
//! server must be honoured — and the old one refused — by every server at once. So the cluster
//! also keeps a record of salted SHA-256 digests in etcd (`/rke2/credentials`, readable only with
//! etcd client certificates); supervisors verify basic auth against it once etcd is up, and
//! against the local passwd before that.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cluster::context::Ctx;
use crate::datastore::{Cas, Datastore, DatastoreError};
use crate::token::{Passwd, Secret, constant_time_eq, random_hex, sha256_hex};

/// etcd key of the credentials record.
pub const CREDENTIALS_KEY: &str = "/rke2/credentials";
/// How long a fetched record is trusted before re-reading it.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// One user's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub salt: String,
    pub sha256: String,
    pub group: String,
}

impl Digest {
    pub fn new(password: &Secret, group: &str) -> Digest {
        let salt = random_hex(16);
        Digest {
            sha256: digest(&salt, password),
            salt,
            group: group.to_string(),
        }
    }

    pub fn matches(&self, password: &str) -> bool {
        constant_time_eq(
            digest(&self.salt, &Secret::new(password)).as_bytes(),
            self.sha256.as_bytes(),
        )
    }
}

fn digest(salt: &str, password: &Secret) -> String {
    sha256_hex(format!("{salt}:{}", password.expose()).as_bytes())
}

/// The record kept in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRecord {
    pub users: BTreeMap<String, Digest>,
}

impl CredentialsRecord {
    pub fn from_passwd(passwd: &Passwd) -> CredentialsRecord {
        CredentialsRecord {
            users: passwd
                .entries
                .iter()
                .map(|e| (e.username.clone(), Digest::new(&e.password, &e.group)))
                .collect(),
        }
    }

    pub fn authenticate(&self, user: &str, password: &str) -> Option<String> {
        let d = self.users.get(user)?;
        d.matches(password).then(|| d.group.clone())
    }
}

/// Reads the record.
pub async fn load(store: &Datastore) -> Result<Option<(CredentialsRecord, i64)>, DatastoreError> {
    let (kv, _) = store.get(CREDENTIALS_KEY).await?;
    match kv {
        Some(kv) => {
            let rec = serde_json::from_slice(&kv.value).map_err(|e| DatastoreError::Corrupt {
                key: CREDENTIALS_KEY.into(),
                message: e.to_string(),
            })?;
            Ok(Some((rec, kv.mod_revision)))
        }
        None => Ok(None),
    }
}

/// Publishes the record for `passwd` unless one exists (first server start).
pub async fn publish_if_absent(store: &Datastore, passwd: &Passwd) -> Result<(), DatastoreError> {
    let rec = CredentialsRecord::from_passwd(passwd);
    let body = serde_json::to_vec(&rec).expect("record serialises");
    match store.create(CREDENTIALS_KEY, body).await? {
        Cas::Written(_) | Cas::Conflict(_) => Ok(()),
    }
}

/// Replaces the record (token rotation).
pub async fn publish(store: &Datastore, passwd: &Passwd) -> Result<(), DatastoreError> {
    let rec = CredentialsRecord::from_passwd(passwd);
    store
        .put(
            CREDENTIALS_KEY,
            serde_json::to_vec(&rec).expect("record serialises"),
        )
        .await
        .map(|_| ())
}

/// Cache of the record for request authentication.
#[derive(Debug, Default)]
pub struct CredentialsCache {
    // A plain lock held only to copy or replace the cached record: a login never waits for
    // another login's etcd read.
    inner: std::sync::RwLock<Option<(Instant, std::sync::Arc<CredentialsRecord>)>>,
}

/// Verifies `user:password`; returns the user's group. Uses the cluster record when etcd is
/// available (re-reading it when stale or when the password does not match the cached copy,
/// so a rotation elsewhere takes effect at once), else the local passwd file.
pub async fn authenticate(ctx: &Ctx, user: &str, password: &str) -> Option<String> {
    let Some(store) = ctx.store.get() else {
        return ctx
            .passwd()
            .authenticate(user, password)
            .map(str::to_string);
    };
    let cached = ctx
        .credentials
        .inner
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some((at, rec)) = cached
        && at.elapsed() < CACHE_TTL
        && let Some(g) = rec.authenticate(user, password)
    {
        return Some(g);
    }
    match load(store).await {
        Ok(Some((rec, _))) => {
            let result = rec.authenticate(user, password);
            *ctx.credentials
                .inner
                .write()
                .unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), std::sync::Arc::new(rec)));
            result
        }
        // No record yet (first server still starting) or etcd trouble: the local file.
        Ok(None) | Err(_) => ctx
            .passwd()
            .authenticate(user, password)
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_verifies_passwords() {
        let mut p = Passwd::default();
        p.set("server", Secret::new("s"), crate::token::SERVER_GROUP);
        p.set("node", Secret::new("n"), crate::token::AGENT_GROUP);
        let rec = CredentialsRecord::from_passwd(&p);
        assert_eq!(
            rec.authenticate("server", "s").as_deref(),
            Some("rke2:server")
        );
        assert_eq!(rec.authenticate("server", "n"), None);
        assert_eq!(rec.authenticate("node", "n").as_deref(), Some("rke2:agent"));
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("\"s\""));
    }
}
