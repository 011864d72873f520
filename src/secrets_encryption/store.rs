//! The transformer at the storage layer: a [`KvStore`] around the real one that encrypts
//! values written under the Secrets prefix with the active configuration and decrypts them on
//! every way back (get, list, conflicts, watch events with their previous values), so nothing
//! above the datastore ever sees ciphertext and nothing below it ever sees a Secret in plain.
//! Every other key passes through untouched.

use futures_util::future::BoxFuture;

use super::{Active, Keyring};
use crate::datastore::{
    Cas, Change, ChangeStream, Datastore, DatastoreError, KvStore, ListPage, Stored, WatchBatch,
    WatchStream,
};

/// The store with Secrets encrypted under `prefix` (with its trailing `/`).
#[derive(Debug, Clone)]
pub struct EncryptingStore {
    inner: Datastore,
    keyring: Keyring,
    prefix: String,
}

/// `store` with values under `etcd_prefix` (a resource's prefix, e.g. `/registry/secrets`)
/// transformed by `keyring`.
pub fn wrap(store: Datastore, keyring: Keyring, etcd_prefix: &str) -> Datastore {
    Datastore::from_impl(std::sync::Arc::new(EncryptingStore {
        inner: store,
        keyring,
        prefix: format!("{}/", etcd_prefix.trim_end_matches('/')),
    }))
}

fn active(keyring: &Keyring, key: &str) -> Result<std::sync::Arc<Active>, DatastoreError> {
    // The wrapper is only installed once a configuration is loaded; a missing one would mean a
    // Secret written in plain while encryption is expected, so refuse instead.
    keyring.current().ok_or_else(|| DatastoreError::Corrupt {
        key: key.to_string(),
        message: "no encryption configuration is loaded".into(),
    })
}

fn decode_kv(keyring: &Keyring, prefix: &str, mut kv: Stored) -> Result<Stored, DatastoreError> {
    if !kv.key.starts_with(prefix) {
        return Ok(kv);
    }
    let value = Vec::from(std::mem::take(&mut kv.value));
    kv.value = active(keyring, &kv.key)?
        .decode(&kv.key, value)
        .map_err(|e| DatastoreError::Corrupt {
            key: kv.key.clone(),
            message: e.to_string(),
        })?
        .into();
    Ok(kv)
}

impl EncryptingStore {
    /// `inner`'s changes with Secret values decrypted.
    fn decoding(&self, inner: WatchStream) -> WatchStream {
        WatchStream::new(DecodingStream {
            inner,
            keyring: self.keyring.clone(),
            prefix: self.prefix.clone(),
        })
    }

    fn covers(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    fn encode(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, DatastoreError> {
        if !self.covers(key) {
            return Ok(value);
        }
        Ok(active(&self.keyring, key)?.encode(key, value))
    }

    fn decode(&self, kv: Stored) -> Result<Stored, DatastoreError> {
        decode_kv(&self.keyring, &self.prefix, kv)
    }

    fn decode_cas(&self, cas: Cas) -> Result<Cas, DatastoreError> {
        Ok(match cas {
            Cas::Conflict(Some(kv)) => Cas::Conflict(Some(self.decode(kv)?)),
            other => other,
        })
    }
}

impl KvStore for EncryptingStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<Stored>, i64), DatastoreError>> {
        Box::pin(async move {
            let (kv, rev) = self.inner.get(key).await?;
            Ok((kv.map(|kv| self.decode(kv)).transpose()?, rev))
        })
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: i64,
        revision: i64,
    ) -> BoxFuture<'a, Result<ListPage, DatastoreError>> {
        Box::pin(async move {
            let mut page = self
                .inner
                .list(prefix, start_after, limit, revision)
                .await?;
            page.items = std::mem::take(&mut page.items)
                .into_iter()
                .map(|kv| self.decode(kv))
                .collect::<Result<_, _>>()?;
            Ok(page)
        })
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(async move {
            let value = self.encode(key, value)?;
            let cas = match lease {
                Some(l) => self.inner.create_with_lease(key, value, l).await?,
                None => self.inner.create(key, value).await?,
            };
            self.decode_cas(cas)
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(async move {
            let value = self.encode(key, value)?;
            let cas = self.inner.update(key, value, expected).await?;
            self.decode_cas(cas)
        })
    }

    fn update_leased<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
        lease: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(async move {
            let value = self.encode(key, value)?;
            let cas = self
                .inner
                .update_with_lease(key, value, expected, lease)
                .await?;
            self.decode_cas(cas)
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(async move {
            let value = self.encode(key, value)?;
            self.inner.put(key, value).await
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(async move {
            let cas = self.inner.delete(key, expected).await?;
            self.decode_cas(cas)
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(self.inner.delete_prefix(prefix))
    }

    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(self.inner.count(prefix))
    }

    fn revision(&self) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        Box::pin(self.inner.revision())
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        Box::pin(async move {
            let inner = self.inner.watch(prefix, start).await?;
            Ok(self.decoding(inner))
        })
    }

    fn watch_without_prev<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
        progress: bool,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        Box::pin(async move {
            let inner = self
                .inner
                .watch_without_prev(prefix, start, progress)
                .await?;
            Ok(self.decoding(inner))
        })
    }

    fn lease_grant(&self, ttl: i64) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        Box::pin(self.inner.lease_grant(ttl))
    }

    fn lease_keep_alive_once(&self, id: i64) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        Box::pin(self.inner.lease_keep_alive_once(id))
    }

    fn lease_revoke(&self, id: i64) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(self.inner.lease_revoke(id))
    }
}

/// A watch whose events carry decrypted values.
struct DecodingStream {
    inner: WatchStream,
    keyring: Keyring,
    prefix: String,
}

impl DecodingStream {
    fn decode_change(&self, change: Change) -> Result<Change, DatastoreError> {
        let dec = |kv| decode_kv(&self.keyring, &self.prefix, kv);
        Ok(match change {
            Change::Put { kv, prev, created } => Change::Put {
                kv: dec(kv)?,
                prev: prev.map(dec).transpose()?,
                created,
            },
            Change::Delete {
                key,
                prev,
                revision,
            } => Change::Delete {
                key,
                prev: prev.map(dec).transpose()?,
                revision,
            },
        })
    }
}

impl ChangeStream for DecodingStream {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<WatchBatch>, DatastoreError>> {
        Box::pin(async move {
            let Some((changes, rev)) = self.inner.next().await? else {
                return Ok(None);
            };
            let changes = changes
                .into_iter()
                .map(|c| self.decode_change(c))
                .collect::<Result<_, _>>()?;
            Ok(Some((changes, rev)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::memory::MemoryStore;
    use crate::secrets_encryption::providers::Cipher;

    const KEY: &str = "/registry/secrets/default/s1";

    fn setup() -> (Datastore, Datastore, Keyring) {
        let raw = Datastore::from_impl(MemoryStore::new());
        let keyring = Keyring::default();
        keyring.set(Active::generate(Cipher::AesCbc, true));
        let wrapped = wrap(raw.clone(), keyring.clone(), "/registry/secrets");
        (raw, wrapped, keyring)
    }

    #[tokio::test]
    async fn secrets_are_ciphertext_below_and_plain_above() {
        let (raw, store, _) = setup();
        let mut watch = store.watch("/registry/secrets/", 0).await.unwrap();
        let Cas::Written(rev) = store
            .create(KEY, b"{\"data\":\"x\"}".to_vec())
            .await
            .unwrap()
        else {
            panic!("create conflicted")
        };
        let (kv, _) = raw.get(KEY).await.unwrap();
        let stored = kv.unwrap().value;
        assert!(stored.starts_with(b"k8s:enc:aescbc:v1:aescbckey:"));
        assert!(!stored.windows(4).any(|w| w == b"data"));
        assert_eq!(
            store.get(KEY).await.unwrap().0.unwrap().value,
            &b"{\"data\":\"x\"}"[..]
        );
        let page = store.list("/registry/secrets/", None, 0, 0).await.unwrap();
        assert_eq!(page.items[0].value, &b"{\"data\":\"x\"}"[..]);
        // A conflicting write reports the current value decrypted.
        let Cas::Conflict(Some(cur)) = store.update(KEY, b"{}".to_vec(), rev - 1).await.unwrap()
        else {
            panic!("expected a conflict")
        };
        assert_eq!(cur.value, &b"{\"data\":\"x\"}"[..]);
        store
            .update(KEY, b"{\"data\":\"y\"}".to_vec(), rev)
            .await
            .unwrap();
        let (batch, _) = watch.next().await.unwrap().unwrap();
        let Change::Put { kv, .. } = &batch[0] else {
            panic!("expected a put")
        };
        assert_eq!(kv.value, &b"{\"data\":\"x\"}"[..]);
        let mut seen = batch.len();
        while seen < 2 {
            let (batch, _) = watch.next().await.unwrap().unwrap();
            if let Some(Change::Put { kv, prev, .. }) = batch.first() {
                assert_eq!(kv.value, &b"{\"data\":\"y\"}"[..]);
                assert_eq!(prev.as_ref().unwrap().value, &b"{\"data\":\"x\"}"[..]);
            }
            seen += batch.len();
        }
        // Other prefixes pass through untouched.
        store
            .put("/registry/configmaps/default/c", b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(
            raw.get("/registry/configmaps/default/c")
                .await
                .unwrap()
                .0
                .unwrap()
                .value,
            &b"{}"[..]
        );
        // A lookalike prefix is not a Secret.
        store
            .put("/registry/secretsx/a", b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(
            raw.get("/registry/secretsx/a")
                .await
                .unwrap()
                .0
                .unwrap()
                .value,
            &b"{}"[..]
        );
    }

    #[tokio::test]
    async fn plain_values_stay_readable_and_unknown_keys_are_errors() {
        let (raw, store, keyring) = setup();
        raw.put(KEY, b"{\"plain\":true}".to_vec()).await.unwrap();
        assert_eq!(
            store.get(KEY).await.unwrap().0.unwrap().value,
            &b"{\"plain\":true}"[..]
        );
        store.put(KEY, b"{}".to_vec()).await.unwrap();
        // A server without the key cannot read it, and says so.
        keyring.set(Active::generate(Cipher::AesGcm, true));
        let e = store.get(KEY).await.unwrap_err();
        assert!(matches!(e, DatastoreError::Corrupt { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("encrypted with a aescbc key this server does not have"),
            "{e}"
        );
        // A key of the same name with other bytes: the authenticated cipher refuses.
        store.put(KEY, b"{}".to_vec()).await.unwrap();
        keyring.set(Active::generate(Cipher::AesGcm, true));
        let e = store.get(KEY).await.unwrap_err();
        assert!(e.to_string().contains("decryption failed"), "{e}");
    }
}
