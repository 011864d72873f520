//! The store seam: the key-value operations the API server, controllers and supervisor need
//! (reads, paginated range lists at a revision, compare-and-swap writes keyed on `mod_revision`,
//! watches resuming from a revision, leases), behind one trait with two implementations that
//! share one semantics: [`etcd::EtcdStore`] for the real cluster and [`memory::MemoryStore`]
//! (global revision, per-key create/mod revisions, compaction) for fast unit tests.
//! Everything above takes a [`Datastore`] handle and never knows which one it has.

pub mod etcd;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use futures_util::future::BoxFuture;

/// Total time a call may take including retries.
pub const CALL_DEADLINE: Duration = Duration::from_secs(8);
/// Bound for best-effort calls made while shutting down (lease revocations).
pub const SHUTDOWN_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Datastore errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatastoreError {
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    #[error("etcd request timed out (no quorum?)")]
    Timeout,
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("stored value under {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    /// Shared, so the watch cache hands out copies of large objects without copying them.
    pub value: bytes::Bytes,
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// One page of a range list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Stored>,
    /// The store revision the list was read at.
    pub revision: i64,
    /// Whether more keys follow the last item.
    pub more: bool,
    /// Keys remaining after this page (for `remainingItemCount`).
    pub remaining: i64,
}

/// Outcome of a compare-and-swap write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// Written; the new mod_revision.
    Written(i64),
    /// The comparison failed; the current value (None if the key does not exist).
    Conflict(Option<Stored>),
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        kv: Stored,
        /// The value before this write (absent on create or once compacted).
        prev: Option<Stored>,
        created: bool,
    },
    Delete {
        key: String,
        prev: Option<Stored>,
        revision: i64,
    },
}

impl Change {
    pub fn revision(&self) -> i64 {
        match self {
            Change::Put { kv, .. } => kv.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// The end key of a prefix range (prefix with its last byte incremented).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The operations of a store. Implementations keep etcd's semantics: one global revision bumped
/// by every write, `mod_revision`/`create_revision` per key, `Compacted` for reads and watches
/// below the compaction point, watches that deliver every change after `start` in order.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// Reads one key; also returns the store revision.
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<Stored>, i64), DatastoreError>>;
    /// Lists keys under `prefix` in key order, after `start_after`, at most `limit` (0 = all),
    /// at `revision` (0 = latest).
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: i64,
        revision: i64,
    ) -> BoxFuture<'a, Result<ListPage, DatastoreError>>;
    /// Creates `key` if absent, attached to `lease` when given.
    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>>;
    /// Replaces `key` only if its mod_revision is still `expected`.
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>>;
    /// [`KvStore::update`] attaching the key to `lease` (a plain update detaches it in etcd).
    fn update_leased<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
        lease: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>>;
    /// Unconditional write.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<i64, DatastoreError>>;
    /// Deletes `key` (only at mod_revision `expected` when given).
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>>;
    /// Deletes every key under `prefix`; returns how many.
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>>;
    /// Number of keys under `prefix`.
    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>>;
    /// The current store revision.
    fn revision(&self) -> BoxFuture<'_, Result<i64, DatastoreError>>;
    /// Watches `prefix` from revision `start` (inclusive; 0 = now).
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>>;
    /// [`KvStore::watch`] for a watcher that keeps every object itself (the watch cache), so
    /// its changes may come without previous values. etcd then skips a read of the old
    /// revision for every event; other stores may include them anyway.
    ///
    /// With `progress`, the store also sends progress notifications (empty batches at its
    /// current revision) while the watch has no events; etcd does so at its
    /// `watch-progress-notify-interval`. Plain watches get none.
    fn watch_without_prev<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
        progress: bool,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        let _ = progress;
        self.watch(prefix, start)
    }
    /// Grants a lease of `ttl` seconds.
    fn lease_grant(&self, ttl: i64) -> BoxFuture<'_, Result<i64, DatastoreError>>;
    /// Refreshes a lease once; returns its remaining TTL (0 = expired).
    fn lease_keep_alive_once(&self, id: i64) -> BoxFuture<'_, Result<i64, DatastoreError>>;
    /// Revokes a lease, deleting its keys.
    fn lease_revoke(&self, id: i64) -> BoxFuture<'_, Result<(), DatastoreError>>;
}

/// One batch of a watch: the changes and the store revision they bring it to.
pub type WatchBatch = (Vec<Change>, i64);

/// The receiving end of a watch, as an implementation provides it.
pub trait ChangeStream: Send {
    /// See [`WatchStream::next`].
    fn next(&mut self) -> BoxFuture<'_, Result<Option<WatchBatch>, DatastoreError>>;
}

/// A running watch.
pub struct WatchStream(Box<dyn ChangeStream>);

impl WatchStream {
    /// Wraps an implementation's stream.
    pub fn new(inner: impl ChangeStream + 'static) -> WatchStream {
        WatchStream(Box::new(inner))
    }

    /// The next batch of changes; `Ok(Some(vec![]))` is a progress notification carrying the
    /// current revision; `Ok(None)` means the stream ended; `Compacted` when the start revision
    /// is gone.
    pub async fn next(&mut self) -> Result<Option<WatchBatch>, DatastoreError> {
        self.0.next().await
    }
}

/// The store of a server, set once its etcd member is ready; shared by the subsystems.
pub type StoreCell = Arc<tokio::sync::OnceCell<Datastore>>;

/// Handle to the store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Datastore(Arc<dyn KvStore>);

impl Datastore {
    /// The store on an etcd client.
    pub fn new(client: Client) -> Datastore {
        Datastore(Arc::new(etcd::EtcdStore::new(client)))
    }

    /// A handle on any implementation.
    pub fn from_impl(store: Arc<dyn KvStore>) -> Datastore {
        Datastore(store)
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<(Option<Stored>, i64), DatastoreError> {
        self.0.get(key).await
    }

    /// Lists keys under `prefix` in key order, starting after `start_after` (exclusive) when
    /// continuing a paginated list, at most `limit` items (0 = all), at `revision` (0 = latest).
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: i64,
        revision: i64,
    ) -> Result<ListPage, DatastoreError> {
        self.0.list(prefix, start_after, limit, revision).await
    }

    /// Creates `key` if absent.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<Cas, DatastoreError> {
        self.0.create(key, value, None).await
    }

    /// Creates `key` if absent, attached to a lease (expires with it).
    pub async fn create_with_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Cas, DatastoreError> {
        self.0.create(key, value, Some(lease)).await
    }

    /// Replaces `key` only if its mod_revision is still `expected`.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<Cas, DatastoreError> {
        self.0.update(key, value, expected).await
    }

    /// Replaces `key` only if its mod_revision is still `expected`, attached to `lease`
    /// (objects that expire, like Events, get a fresh lease on every write).
    pub async fn update_with_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        lease: i64,
    ) -> Result<Cas, DatastoreError> {
        self.0.update_leased(key, value, expected, lease).await
    }

    /// Unconditional write (bootstrap data, leases of our own keys).
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64, DatastoreError> {
        self.0.put(key, value).await
    }

    /// Deletes `key`, only if its mod_revision is `expected` when given. Returns the deletion
    /// revision, or `Conflict` with the current value.
    pub async fn delete(&self, key: &str, expected: Option<i64>) -> Result<Cas, DatastoreError> {
        self.0.delete(key, expected).await
    }

    /// Deletes every key under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<i64, DatastoreError> {
        self.0.delete_prefix(prefix).await
    }

    /// Number of keys under `prefix`, without reading their values.
    pub async fn count(&self, prefix: &str) -> Result<i64, DatastoreError> {
        self.0.count(prefix).await
    }

    /// The current store revision.
    pub async fn revision(&self) -> Result<i64, DatastoreError> {
        self.0.revision().await
    }

    /// Watches `prefix` from revision `start` (inclusive; 0 = now). Changes arrive in revision
    /// order; the stream ends with an error when the revision has been compacted or etcd fails.
    pub async fn watch(&self, prefix: &str, start: i64) -> Result<WatchStream, DatastoreError> {
        self.0.watch(prefix, start).await
    }

    /// [`Datastore::watch`] whose changes may lack previous values (see
    /// [`KvStore::watch_without_prev`]).
    pub async fn watch_without_prev(
        &self,
        prefix: &str,
        start: i64,
        progress: bool,
    ) -> Result<WatchStream, DatastoreError> {
        self.0.watch_without_prev(prefix, start, progress).await
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, DatastoreError> {
        self.0.lease_grant(ttl).await
    }

    /// Refreshes a lease once; returns its remaining TTL (0 = expired).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, DatastoreError> {
        self.0.lease_keep_alive_once(id).await
    }

    /// Revokes a lease (deleting its keys).
    pub async fn lease_revoke(&self, id: i64) -> Result<(), DatastoreError> {
        self.0.lease_revoke(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(
            prefix_end(b"/registry/minions/"),
            b"/registry/minions0".to_vec()
        );
        assert_eq!(prefix_end(&[0x61, 0xff]), vec![0x62]);
    }
}
