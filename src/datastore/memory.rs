//! An in-memory store with etcd's semantics, for unit tests of everything above the store: one
//! global revision bumped by every write (starting at 1, as a fresh etcd), per-key
//! `create_revision`/`mod_revision`, multi-version reads at a past revision, compaction
//! (reads and watches below it answer `Compacted`), watches that replay history from a revision
//! and then follow live writes, and leases that expire on tokio's clock (so tests may pause it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Cas, Change, ChangeStream, DatastoreError, KvStore, ListPage, Stored, WatchBatch, WatchStream,
};

/// One version of a key; `value: None` is a deletion.
#[derive(Debug, Clone)]
struct Version {
    create_revision: i64,
    mod_revision: i64,
    value: Option<Vec<u8>>,
    lease: Option<i64>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<(Vec<Change>, i64)>,
    /// Gets [`MemoryStore::notify_progress`]'s notifications.
    progress: bool,
}

#[derive(Debug)]
struct State {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<String, Vec<Version>>,
    /// Every change after the compaction point, in revision order.
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    /// Lease id → (TTL, expiry).
    leases: HashMap<i64, (i64, Instant)>,
    next_lease: i64,
    /// Set by [`MemoryStore::race_next_delete`].
    race_next_delete: bool,
    /// Lists per prefix so far (see [`MemoryStore::listed`]); bounded by the prefixes in use.
    listed: BTreeMap<String, usize>,
}

/// The in-memory store. Cheap to share through [`super::Datastore::from_impl`].
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Mutex::new(State {
                revision: 1,
                compacted: 0,
                keys: BTreeMap::new(),
                history: Vec::new(),
                watchers: Vec::new(),
                leases: HashMap::new(),
                next_lease: 1,
                race_next_delete: false,
                listed: BTreeMap::new(),
            }),
        }
    }
}

fn stored(key: &str, v: &Version) -> Option<Stored> {
    Some(Stored {
        key: key.to_string(),
        value: v.value.clone()?.into(),
        mod_revision: v.mod_revision,
        create_revision: v.create_revision,
    })
}

impl State {
    /// The live value of `key` at `revision`.
    fn at(&self, key: &str, revision: i64) -> Option<Stored> {
        let v = self
            .keys
            .get(key)?
            .iter()
            .rev()
            .find(|v| v.mod_revision <= revision)?;
        stored(key, v)
    }

    fn current(&self, key: &str) -> Option<Stored> {
        self.at(key, self.revision)
    }

    fn lease_of(&self, key: &str) -> Option<i64> {
        self.keys.get(key)?.last()?.lease
    }

    /// Records changes made at the current revision and tells the watchers.
    fn publish(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let revision = self.revision;
        self.watchers.retain(|w| {
            let mine: Vec<Change> = changes
                .iter()
                .filter(|c| change_key(c).starts_with(&w.prefix))
                .cloned()
                .collect();
            mine.is_empty() || w.tx.send((mine, revision)).is_ok()
        });
        self.history.extend(changes);
    }

    fn write(&mut self, key: &str, value: Vec<u8>, lease: Option<i64>) -> i64 {
        self.revision += 1;
        let rev = self.revision;
        let prev = self.current(key);
        let create_revision = prev.as_ref().map_or(rev, |p| p.create_revision);
        self.keys.entry(key.to_string()).or_default().push(Version {
            create_revision,
            mod_revision: rev,
            value: Some(value.clone()),
            lease,
        });
        let kv = Stored {
            key: key.to_string(),
            value: value.into(),
            mod_revision: rev,
            create_revision,
        };
        self.publish(vec![Change::Put {
            created: prev.is_none(),
            kv,
            prev,
        }]);
        rev
    }

    /// Deletes live keys at one new revision (etcd's delete-range is one revision).
    fn remove(&mut self, keys: &[String]) -> i64 {
        let live: Vec<(String, Stored)> = keys
            .iter()
            .filter_map(|k| Some((k.clone(), self.current(k)?)))
            .collect();
        if live.is_empty() {
            return 0;
        }
        self.revision += 1;
        let rev = self.revision;
        let mut changes = Vec::new();
        for (key, prev) in live {
            self.keys.entry(key.clone()).or_default().push(Version {
                create_revision: 0,
                mod_revision: rev,
                value: None,
                lease: None,
            });
            changes.push(Change::Delete {
                key,
                prev: Some(prev),
                revision: rev,
            });
        }
        let n = changes.len() as i64;
        self.publish(changes);
        n
    }

    fn live_keys(&self, prefix: &str) -> Vec<String> {
        self.keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| self.current(k).is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Deletes the keys of leases whose time is up.
    fn expire_leases(&mut self) {
        let now = Instant::now();
        let expired: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.revoke(id);
        }
    }

    fn revoke(&mut self, id: i64) {
        self.leases.remove(&id);
        let keys: Vec<String> = self
            .keys
            .keys()
            .filter(|k| self.lease_of(k) == Some(id) && self.current(k).is_some())
            .cloned()
            .collect();
        self.remove(&keys);
    }
}

fn change_key(c: &Change) -> &str {
    match c {
        Change::Put { kv, .. } => &kv.key,
        Change::Delete { key, .. } => key,
    }
}

impl MemoryStore {
    /// A new, empty store at revision 1.
    pub fn new() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.expire_leases();
        s
    }

    /// Compacts history up to `revision`: reads and watches below it answer `Compacted`.
    pub fn compact(&self, revision: i64) {
        let mut s = self.lock();
        let revision = revision.min(s.revision);
        s.compacted = s.compacted.max(revision);
        for versions in s.keys.values_mut() {
            // Keep the newest version at or below the compaction point, and everything after.
            let keep_from = versions
                .iter()
                .rposition(|v| v.mod_revision <= revision)
                .unwrap_or(0);
            versions.drain(..keep_from);
        }
        s.history.retain(|c| c.revision() > revision);
    }

    /// Ends every running watch (their streams answer `Ok(None)`), as a broken connection to
    /// etcd or a leader change does; watchers must resume from their last revision.
    pub fn end_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Number of watches whose receiver is still alive.
    pub fn watch_count(&self) -> usize {
        self.lock()
            .watchers
            .iter()
            .filter(|w| !w.tx.is_closed())
            .count()
    }

    /// Number of live watches that asked for progress notifications.
    pub fn progress_watch_count(&self) -> usize {
        self.lock()
            .watchers
            .iter()
            .filter(|w| w.progress && !w.tx.is_closed())
            .count()
    }

    /// Makes the next conditional delete lose a race: just before it, its key is written again
    /// with the same value (a new mod_revision), as another client's write landing between a
    /// reader's read and its delete would.
    pub fn race_next_delete(&self) {
        self.lock().race_next_delete = true;
    }

    /// How often each prefix was listed since the last call: lets tests show that a component
    /// does not read what it does not need.
    pub fn listed(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut self.lock().listed)
    }

    /// Sends every watcher created with progress notifications one (an empty batch at the
    /// current revision), as etcd does at its interval.
    pub fn notify_progress(&self) {
        let s = self.lock();
        for w in s.watchers.iter().filter(|w| w.progress) {
            let _ = w.tx.send((Vec::new(), s.revision));
        }
    }

    fn watch_with(
        &self,
        prefix: &str,
        start: i64,
        progress: bool,
    ) -> Result<WatchStream, DatastoreError> {
        let mut s = self.lock();
        if start > 0 && start < s.compacted {
            return Err(DatastoreError::Compacted {
                requested: start,
                compacted: s.compacted,
            });
        }
        let backlog: Vec<Change> = if start > 0 {
            s.history
                .iter()
                .filter(|c| c.revision() >= start && change_key(c).starts_with(prefix))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        s.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
            progress,
        });
        let revision = s.revision;
        Ok(WatchStream::new(MemoryWatch {
            backlog: (!backlog.is_empty()).then_some((backlog, revision)),
            rx,
        }))
    }
}

struct MemoryWatch {
    backlog: Option<(Vec<Change>, i64)>,
    rx: mpsc::UnboundedReceiver<(Vec<Change>, i64)>,
}

impl ChangeStream for MemoryWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<WatchBatch>, DatastoreError>> {
        Box::pin(async move {
            if let Some(batch) = self.backlog.take() {
                return Ok(Some(batch));
            }
            Ok(self.rx.recv().await)
        })
    }
}

/// Wraps a synchronous result as the trait's future.
fn ready<'a, T: Send + 'a>(
    v: Result<T, DatastoreError>,
) -> BoxFuture<'a, Result<T, DatastoreError>> {
    Box::pin(std::future::ready(v))
}

impl KvStore for MemoryStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<Stored>, i64), DatastoreError>> {
        let s = self.lock();
        ready(Ok((s.current(key), s.revision)))
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: i64,
        revision: i64,
    ) -> BoxFuture<'a, Result<ListPage, DatastoreError>> {
        let mut s = self.lock();
        *s.listed.entry(prefix.to_string()).or_default() += 1;
        let at = if revision > 0 { revision } else { s.revision };
        if at < s.compacted {
            return ready(Err(DatastoreError::Compacted {
                requested: at,
                compacted: s.compacted,
            }));
        }
        if at > s.revision {
            return ready(Err(DatastoreError::Etcd(
                "etcdserver: mvcc: required revision is a future revision".into(),
            )));
        }
        let all: Vec<Stored> = s
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| start_after.is_none_or(|after| k.as_str() > after))
            .filter_map(|(k, _)| s.at(k, at))
            .collect();
        let total = all.len() as i64;
        let items: Vec<Stored> = if limit > 0 {
            all.into_iter().take(limit as usize).collect()
        } else {
            all
        };
        let taken = items.len() as i64;
        ready(Ok(ListPage {
            items,
            revision: s.revision,
            more: taken < total,
            remaining: total - taken,
        }))
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        let mut s = self.lock();
        if let Some(id) = lease
            && !s.leases.contains_key(&id)
        {
            return ready(Err(DatastoreError::Etcd(
                "etcdserver: requested lease not found".into(),
            )));
        }
        if let Some(cur) = s.current(key) {
            return ready(Ok(Cas::Conflict(Some(cur))));
        }
        ready(Ok(Cas::Written(s.write(key, value, lease))))
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        let mut s = self.lock();
        match s.current(key) {
            Some(cur) if cur.mod_revision == expected => {
                let lease = s.lease_of(key);
                ready(Ok(Cas::Written(s.write(key, value, lease))))
            }
            cur => ready(Ok(Cas::Conflict(cur))),
        }
    }

    fn update_leased<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
        lease: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        let mut s = self.lock();
        if !s.leases.contains_key(&lease) {
            return ready(Err(DatastoreError::Etcd(
                "etcdserver: requested lease not found".into(),
            )));
        }
        match s.current(key) {
            Some(cur) if cur.mod_revision == expected => {
                ready(Ok(Cas::Written(s.write(key, value, Some(lease)))))
            }
            cur => ready(Ok(Cas::Conflict(cur))),
        }
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        let mut s = self.lock();
        ready(Ok(s.write(key, value, None)))
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        let mut s = self.lock();
        if expected.is_some()
            && std::mem::take(&mut s.race_next_delete)
            && let Some(cur) = s.current(key)
        {
            s.write(key, cur.value.into(), None);
        }
        match s.current(key) {
            Some(cur) if expected.is_none_or(|e| e == cur.mod_revision) => {
                s.remove(&[key.to_string()]);
                ready(Ok(Cas::Written(s.revision)))
            }
            cur => ready(Ok(Cas::Conflict(cur))),
        }
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        let mut s = self.lock();
        let keys = s.live_keys(prefix);
        ready(Ok(s.remove(&keys)))
    }

    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        let s = self.lock();
        ready(Ok(s.live_keys(prefix).len() as i64))
    }

    fn revision(&self) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        ready(Ok(self.lock().revision))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        ready(self.watch_with(prefix, start, false))
    }

    fn watch_without_prev<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
        progress: bool,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        ready(self.watch_with(prefix, start, progress))
    }

    fn lease_grant(&self, ttl: i64) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        let mut s = self.lock();
        let id = s.next_lease;
        s.next_lease += 1;
        let deadline = Instant::now() + Duration::from_secs(ttl.max(1) as u64);
        s.leases.insert(id, (ttl, deadline));
        ready(Ok(id))
    }

    fn lease_keep_alive_once(&self, id: i64) -> BoxFuture<'_, Result<i64, DatastoreError>> {
        let mut s = self.lock();
        let ttl = match s.leases.get_mut(&id) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + Duration::from_secs((*ttl).max(1) as u64);
                *ttl
            }
            None => 0,
        };
        ready(Ok(ttl))
    }

    fn lease_revoke(&self, id: i64) -> BoxFuture<'_, Result<(), DatastoreError>> {
        let mut s = self.lock();
        if !s.leases.contains_key(&id) {
            return ready(Err(DatastoreError::Etcd(
                "etcdserver: requested lease not found".into(),
            )));
        }
        s.revoke(id);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::Datastore;

    fn store() -> (Arc<MemoryStore>, Datastore) {
        let m = MemoryStore::new();
        (m.clone(), Datastore::from_impl(m))
    }

    #[tokio::test]
    async fn revisions_and_cas_follow_etcd() {
        let (_, ds) = store();
        assert_eq!(ds.revision().await.unwrap(), 1);
        let Cas::Written(r1) = ds.create("/a/1", b"x".to_vec()).await.unwrap() else {
            panic!("create failed")
        };
        assert_eq!(r1, 2);
        // A second create conflicts and shows the current value.
        match ds.create("/a/1", b"y".to_vec()).await.unwrap() {
            Cas::Conflict(Some(cur)) => assert_eq!(cur.value, &b"x"[..]),
            other => panic!("expected conflict, got {other:?}"),
        }
        // Update at a stale revision conflicts; at the right one it writes.
        assert!(matches!(
            ds.update("/a/1", b"z".to_vec(), r1 - 1).await.unwrap(),
            Cas::Conflict(Some(_))
        ));
        let Cas::Written(r2) = ds.update("/a/1", b"z".to_vec(), r1).await.unwrap() else {
            panic!("update failed")
        };
        let (cur, _) = ds.get("/a/1").await.unwrap();
        let cur = cur.unwrap();
        assert_eq!((cur.create_revision, cur.mod_revision), (r1, r2));
        // Delete with a wrong precondition conflicts, then succeeds.
        assert!(matches!(
            ds.delete("/a/1", Some(r1)).await.unwrap(),
            Cas::Conflict(Some(_))
        ));
        assert!(matches!(
            ds.delete("/a/1", Some(r2)).await.unwrap(),
            Cas::Written(_)
        ));
        assert!(matches!(
            ds.delete("/a/1", None).await.unwrap(),
            Cas::Conflict(None)
        ));
    }

    #[tokio::test]
    async fn lists_page_at_a_revision_and_refuse_compacted_ones() {
        let (m, ds) = store();
        for i in 0..5 {
            ds.put(&format!("/p/{i}"), vec![i]).await.unwrap();
        }
        let first = ds.list("/p/", None, 2, 0).await.unwrap();
        assert_eq!(first.items.len(), 2);
        assert!(first.more);
        assert_eq!(first.remaining, 3);
        // A write after the first page does not show in the continuation at its revision.
        ds.put("/p/4", vec![99]).await.unwrap();
        let last = first.items.last().unwrap().key.clone();
        let rest = ds
            .list("/p/", Some(&last), 0, first.revision)
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 3);
        assert_eq!(rest.items[2].value, vec![4]);
        m.compact(ds.revision().await.unwrap());
        assert!(matches!(
            ds.list("/p/", None, 0, first.revision).await,
            Err(DatastoreError::Compacted { .. })
        ));
        assert_eq!(ds.count("/p/").await.unwrap(), 5);
    }

    #[tokio::test]
    async fn watches_replay_from_a_revision_then_follow() {
        let (m, ds) = store();
        let r = ds.put("/w/a", b"1".to_vec()).await.unwrap();
        ds.put("/other", b"x".to_vec()).await.unwrap();
        let mut w = ds.watch("/w/", r).await.unwrap();
        let (batch, _) = w.next().await.unwrap().unwrap();
        assert_eq!(batch.len(), 1);
        assert!(matches!(&batch[0], Change::Put { created: true, .. }));
        ds.delete("/w/a", None).await.unwrap();
        let (batch, rev) = w.next().await.unwrap().unwrap();
        assert!(matches!(&batch[0], Change::Delete { prev: Some(_), .. }));
        assert_eq!(rev, ds.revision().await.unwrap());
        // Progress notifications reach the watches that asked for them.
        let mut p = ds.watch_without_prev("/w/", 0, true).await.unwrap();
        m.notify_progress();
        assert_eq!(p.next().await.unwrap().unwrap().0.len(), 0);
        m.compact(rev);
        assert!(matches!(
            ds.watch("/w/", r).await,
            Err(DatastoreError::Compacted { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn leased_keys_expire_unless_kept_alive() {
        let (_, ds) = store();
        let lease = ds.lease_grant(10).await.unwrap();
        ds.create_with_lease("/l/k", b"v".to_vec(), lease)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(ds.lease_keep_alive_once(lease).await.unwrap(), 10);
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(ds.get("/l/k").await.unwrap().0.is_some());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(ds.get("/l/k").await.unwrap().0.is_none());
        assert_eq!(ds.lease_keep_alive_once(lease).await.unwrap(), 0);
    }
}
