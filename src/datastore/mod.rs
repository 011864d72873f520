//! Key-value storage on etcd for the API server and controllers: reads, paginated range lists,
//! compare-and-swap writes keyed on `mod_revision`, and watches resuming from a revision.
//! Every call has a deadline, and calls that are safe to repeat are retried while etcd is
//! briefly unavailable (leader election, a restarting member), so the API rides out a leader
//! loss instead of failing (docs/operations.md §1: about 2 s).

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::etcd::RPC_TIMEOUT;

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

impl DatastoreError {
    fn classify(e: etcd_client::Error) -> DatastoreError {
        let text = e.to_string();
        match &e {
            // gRPC codes 14 (Unavailable) and 4 (DeadlineExceeded): the request may not have
            // reached a leader; safe to retry for our idempotent or compare-guarded calls.
            etcd_client::Error::GRpcStatus(s) if matches!(s.code() as i32, 4 | 14) => {
                DatastoreError::Unavailable(text)
            }
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                DatastoreError::Unavailable(text)
            }
            _ => DatastoreError::Etcd(text),
        }
    }

    fn retryable(&self) -> bool {
        matches!(
            self,
            DatastoreError::Unavailable(_) | DatastoreError::Timeout
        )
    }
}

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

impl Stored {
    fn from_kv(kv: &etcd_client::KeyValue) -> Stored {
        Stored {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        }
    }
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

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Datastore {
    client: Client,
}

impl std::fmt::Debug for Datastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Datastore")
    }
}

/// The end key of a prefix range (prefix with its last byte incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Datastore {
    pub fn new(client: Client) -> Datastore {
        Datastore { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `op` with a per-attempt timeout, retrying unavailability until [`CALL_DEADLINE`].
    async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, DatastoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        let mut delay = Duration::from_millis(50);
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt =
                tokio::time::timeout(remaining.min(RPC_TIMEOUT), op(self.client.clone())).await;
            let err = match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => DatastoreError::classify(e),
                Err(_) => DatastoreError::Timeout,
            };
            if !err.retryable() || tokio::time::Instant::now() + delay >= deadline {
                return Err(err);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<(Option<Stored>, i64), DatastoreError> {
        let resp = self
            .call(|mut c| {
                let key = key.to_string();
                async move { c.get(key, None).await }
            })
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok((resp.kvs().first().map(Stored::from_kv), rev))
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
        let end = prefix_end(prefix.as_bytes());
        let start: Vec<u8> = match start_after {
            Some(k) => {
                let mut s = k.as_bytes().to_vec();
                s.push(0);
                s
            }
            None => prefix.as_bytes().to_vec(),
        };
        let resp = self
            .call(|mut c| {
                let (start, end) = (start.clone(), end.clone());
                async move {
                    let mut opts = GetOptions::new().with_range(end);
                    if limit > 0 {
                        opts = opts.with_limit(limit);
                    }
                    if revision > 0 {
                        opts = opts.with_revision(revision);
                    }
                    c.get(start, Some(opts)).await
                }
            })
            .await
            .map_err(|e| match e {
                DatastoreError::Etcd(m) if m.contains("compacted") => DatastoreError::Compacted {
                    requested: revision,
                    compacted: 0,
                },
                other => other,
            })?;
        let items: Vec<Stored> = resp.kvs().iter().map(Stored::from_kv).collect();
        let count = resp.count();
        Ok(ListPage {
            revision: resp.header().map(|h| h.revision()).unwrap_or_default(),
            more: resp.more(),
            remaining: (count - items.len() as i64).max(0),
            items,
        })
    }

    /// Creates `key` if absent.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<Cas, DatastoreError> {
        self.txn_put(
            key,
            value,
            Compare::create_revision(key, CompareOp::Equal, 0),
            None,
        )
        .await
    }

    /// Creates `key` if absent, attached to an etcd lease (expires with it).
    pub async fn create_with_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Cas, DatastoreError> {
        self.txn_put(
            key,
            value,
            Compare::create_revision(key, CompareOp::Equal, 0),
            Some(lease),
        )
        .await
    }

    /// Replaces `key` only if its mod_revision is still `expected`.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<Cas, DatastoreError> {
        self.txn_put(
            key,
            value,
            Compare::mod_revision(key, CompareOp::Equal, expected),
            None,
        )
        .await
    }

    async fn txn_put(
        &self,
        key: &str,
        value: Vec<u8>,
        cmp: Compare,
        lease: Option<i64>,
    ) -> Result<Cas, DatastoreError> {
        let resp = self
            .call(|mut c| {
                let opts = lease.map(|l| PutOptions::new().with_lease(l));
                let txn = Txn::new()
                    .when([cmp.clone()])
                    .and_then([TxnOp::put(key, value.clone(), opts)])
                    .or_else([TxnOp::get(key, None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(Cas::Written(
                resp.header().map(|h| h.revision()).unwrap_or_default(),
            ));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(Stored::from_kv)),
            _ => None,
        });
        Ok(Cas::Conflict(current.flatten()))
    }

    /// Unconditional write (bootstrap data, leases of our own keys).
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64, DatastoreError> {
        let resp = self
            .call(|mut c| {
                let (key, value) = (key.to_string(), value.clone());
                async move { c.put(key, value, None).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Deletes `key`, only if its mod_revision is `expected` when given. Returns the deleted
    /// value, or `Conflict` with the current value.
    pub async fn delete(&self, key: &str, expected: Option<i64>) -> Result<Cas, DatastoreError> {
        let resp = self
            .call(|mut c| {
                let cmp = match expected {
                    Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
                    None => Compare::create_revision(key, CompareOp::Greater, 0),
                };
                let txn = Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::delete(
                        key,
                        Some(DeleteOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::get(key, None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(Cas::Written(
                resp.header().map(|h| h.revision()).unwrap_or_default(),
            ));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(Stored::from_kv)),
            _ => None,
        });
        Ok(Cas::Conflict(current.flatten()))
    }

    /// Deletes every key under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<i64, DatastoreError> {
        let resp = self
            .call(|mut c| {
                let p = prefix.to_string();
                async move { c.delete(p, Some(DeleteOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(resp.deleted())
    }

    /// Number of keys under `prefix`, without reading their values.
    pub async fn count(&self, prefix: &str) -> Result<i64, DatastoreError> {
        let end = prefix_end(prefix.as_bytes());
        let resp = self
            .call(|mut c| {
                let (p, end) = (prefix.to_string(), end.clone());
                async move {
                    c.get(p, Some(GetOptions::new().with_range(end).with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(resp.count())
    }

    /// The current store revision.
    pub async fn revision(&self) -> Result<i64, DatastoreError> {
        let resp = self
            .call(|mut c| async move {
                c.get(
                    "/registry/health",
                    Some(GetOptions::new().with_count_only()),
                )
                .await
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Watches `prefix` from revision `start` (inclusive; 0 = now). Changes arrive in revision
    /// order; the stream ends with an error when the revision has been compacted or etcd fails.
    pub async fn watch(&self, prefix: &str, start: i64) -> Result<WatchStream, DatastoreError> {
        let mut opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify();
        if start > 0 {
            opts = opts.with_start_revision(start);
        }
        let mut c = self.client.clone();
        let stream = tokio::time::timeout(RPC_TIMEOUT, c.watch(prefix, Some(opts)))
            .await
            .map_err(|_| DatastoreError::Timeout)?
            .map_err(DatastoreError::classify)?;
        Ok(WatchStream {
            inner: stream,
            requested: start,
        })
    }

    /// Grants an etcd lease of `ttl` seconds.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, DatastoreError> {
        let resp = self
            .call(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        Ok(resp.id())
    }

    /// Refreshes a lease once; returns its remaining TTL (0 = expired).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, DatastoreError> {
        let mut c = self.client.clone();
        let fut = async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(resp) => Ok(resp.ttl()),
                None => Ok(0),
            }
        };
        tokio::time::timeout(RPC_TIMEOUT, fut)
            .await
            .map_err(|_| DatastoreError::Timeout)?
            .map_err(DatastoreError::classify)
    }

    /// Revokes a lease (deleting its keys).
    pub async fn lease_revoke(&self, id: i64) -> Result<(), DatastoreError> {
        self.call(|mut c| async move { c.lease_revoke(id).await })
            .await?;
        Ok(())
    }
}

/// A running watch.
pub struct WatchStream {
    inner: etcd_client::WatchStream,
    requested: i64,
}

impl WatchStream {
    /// The next batch of changes; `Ok(Some(vec![]))` is a progress notification carrying the
    /// current revision; `Ok(None)` means the stream ended.
    pub async fn next(&mut self) -> Result<Option<(Vec<Change>, i64)>, DatastoreError> {
        loop {
            let Some(resp) = self
                .inner
                .message()
                .await
                .map_err(DatastoreError::classify)?
            else {
                return Ok(None);
            };
            if resp.compact_revision() > 0 {
                return Err(DatastoreError::Compacted {
                    requested: self.requested,
                    compacted: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                return Err(DatastoreError::Etcd(format!(
                    "watch cancelled: {}",
                    resp.cancel_reason()
                )));
            }
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            if resp.created() && resp.events().is_empty() {
                continue;
            }
            let changes = resp
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    Some(match ev.event_type() {
                        EventType::Put => Change::Put {
                            created: kv.create_revision() == kv.mod_revision(),
                            kv: Stored::from_kv(kv),
                            prev: ev.prev_kv().map(Stored::from_kv),
                        },
                        EventType::Delete => Change::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            prev: ev.prev_kv().map(Stored::from_kv),
                            revision: kv.mod_revision(),
                        },
                    })
                })
                .collect();
            return Ok(Some((changes, revision)));
        }
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
