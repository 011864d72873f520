//! The etcd implementation of the store: every call has a deadline, and calls that are safe to
//! repeat are retried while etcd is briefly unavailable (leader election, a restarting member),
//! so the API rides out a leader loss instead of failing (docs/operations.md §1: about 2 s).

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};
use futures_util::future::BoxFuture;

use super::{
    CALL_DEADLINE, Cas, Change, ChangeStream, DatastoreError, KvStore, ListPage, Stored,
    WatchBatch, WatchStream, prefix_end,
};

/// Largest Range response read from etcd (etcd's own Go client allows `math.MaxInt32`).
const MAX_RANGE_RESPONSE: usize = i32::MAX as usize;
/// Timeout of one etcd RPC made by the daemon.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A [`Stored`] from an etcd key-value.
fn stored_from_kv(kv: &etcd_client::KeyValue) -> Stored {
    Stored {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec().into(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
    }
}

/// The store on an etcd client. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdStore")
    }
}

impl EtcdStore {
    pub fn new(client: Client) -> EtcdStore {
        EtcdStore { client }
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
        Ok((resp.kvs().first().map(stored_from_kv), rev))
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
            .call(|c| {
                let (start, end) = (start.clone(), end.clone());
                async move {
                    let mut opts = GetOptions::new().with_range(end);
                    if limit > 0 {
                        opts = opts.with_limit(limit);
                    }
                    if revision > 0 {
                        opts = opts.with_revision(revision);
                    }
                    // A whole table in one Range (every Node of a large cluster is well over
                    // tonic's 4 MiB default): take as much as etcd's Go client does.
                    c.kv_client()
                        .max_decoding_message_size(MAX_RANGE_RESPONSE)
                        .get(start, Some(opts))
                        .await
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
        let items: Vec<Stored> = resp.kvs().iter().map(stored_from_kv).collect();
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
        Ok(cas_outcome(resp))
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
        Ok(cas_outcome(resp))
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
        self.watch_with(prefix, start, true, false).await
    }

    /// [`EtcdStore::watch`] with or without each change's previous value (`prev`): etcd reads
    /// the old revision of the key for every event it sends with one. With `progress`, etcd
    /// sends progress notifications while the watch has no events (see
    /// [`KvStore::watch_without_prev`]).
    pub async fn watch_with(
        &self,
        prefix: &str,
        start: i64,
        prev: bool,
        progress: bool,
    ) -> Result<WatchStream, DatastoreError> {
        let mut opts = WatchOptions::new().with_prefix();
        if progress {
            opts = opts.with_progress_notify();
        }
        if prev {
            opts = opts.with_prev_key();
        }
        if start > 0 {
            opts = opts.with_start_revision(start);
        }
        let mut c = self.client.clone();
        let stream = tokio::time::timeout(RPC_TIMEOUT, c.watch(prefix, Some(opts)))
            .await
            .map_err(|_| DatastoreError::Timeout)?
            .map_err(DatastoreError::classify)?;
        Ok(WatchStream::new(EtcdWatch {
            inner: stream,
            requested: start,
        }))
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
pub struct EtcdWatch {
    inner: etcd_client::WatchStream,
    requested: i64,
}

impl EtcdWatch {
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
                            kv: stored_from_kv(kv),
                            prev: ev.prev_kv().map(stored_from_kv),
                        },
                        EventType::Delete => Change::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            prev: ev.prev_kv().map(stored_from_kv),
                            revision: kv.mod_revision(),
                        },
                    })
                })
                .collect();
            return Ok(Some((changes, revision)));
        }
    }
}

impl ChangeStream for EtcdWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<WatchBatch>, DatastoreError>> {
        Box::pin(EtcdWatch::next(self))
    }
}

impl KvStore for EtcdStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<Stored>, i64), DatastoreError>> {
        Box::pin(EtcdStore::get(self, key))
    }
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: i64,
        revision: i64,
    ) -> BoxFuture<'a, Result<ListPage, DatastoreError>> {
        Box::pin(EtcdStore::list(self, prefix, start_after, limit, revision))
    }
    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        match lease {
            Some(l) => Box::pin(EtcdStore::create_with_lease(self, key, value, l)),
            None => Box::pin(EtcdStore::create(self, key, value)),
        }
    }
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(EtcdStore::update(self, key, value, expected))
    }
    fn update_leased<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
        lease: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(self.txn_put(
            key,
            value,
            Compare::mod_revision(key, CompareOp::Equal, expected),
            Some(lease),
        ))
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(EtcdStore::put(self, key, value))
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(EtcdStore::delete(self, key, expected))
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(EtcdStore::delete_prefix(self, prefix))
    }
    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(EtcdStore::count(self, prefix))
    }
    fn revision(&self) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        Box::pin(EtcdStore::revision(self))
    }
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        Box::pin(EtcdStore::watch(self, prefix, start))
    }
    fn watch_without_prev<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
        progress: bool,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        Box::pin(EtcdStore::watch_with(self, prefix, start, false, progress))
    }
    fn lease_grant(&self, ttl: i64) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        Box::pin(EtcdStore::lease_grant(self, ttl))
    }
    fn lease_keep_alive_once(&self, id: i64) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        Box::pin(EtcdStore::lease_keep_alive_once(self, id))
    }
    fn lease_revoke(&self, id: i64) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(EtcdStore::lease_revoke(self, id))
    }
}

/// The outcome of a transaction guarded on one key whose else-branch reads that key: the new
/// revision when it went through, else the key's current value.
fn cas_outcome(resp: TxnResponse) -> Cas {
    if resp.succeeded() {
        return Cas::Written(resp.header().map(|h| h.revision()).unwrap_or_default());
    }
    let current = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g.kvs().first().map(stored_from_kv)),
        _ => None,
    });
    Cas::Conflict(current.flatten())
}
