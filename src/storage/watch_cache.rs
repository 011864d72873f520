//! The watch cache (docs/watch-cache.md): one datastore watch per resource kind feeding an
//! in-memory copy of the kind's objects and a bounded window of recent events, so that client
//! WATCHes and `resourceVersion=0` / `NotOlderThan` LISTs are served from memory instead of
//! opening one etcd watch and one range read each, as kube-apiserver's cacher does.
//!
//! Per kind, a task lists the prefix once, then watches from the list revision, resuming from
//! the last revision it applied whenever the watch breaks (reconnect, etcd leader change) and
//! relisting only when that revision has been compacted. Objects are kept as the stored bytes
//! (decoded only to evaluate selectors or encode events), in key order – which is also the
//! namespace index, since keys are `prefix/namespace/name` – plus an index by `spec.nodeName`.
//! Client watches register a bounded channel; each event is pushed only to the watchers whose
//! namespace, `spec.nodeName` or `metadata.name` could match it. A watcher that falls behind
//! is dropped (its stream ends, the client resumes from its last revision, like upstream).
//!
//! Read-your-writes: the API server writes through [`WatchCaches::fenced`], which records the
//! revision of every acknowledged write per cached kind; a LIST from the cache first waits until
//! the cache has applied that revision, so it never answers older than a write the same server
//! acknowledged. A consistent LIST (no `resourceVersion`) is served from memory once the cache
//! has applied etcd's current revision, read linearizably when the request arrives
//! ([`KindCache::list_consistent`]); etcd's progress notifications move an idle kind's cache to
//! that revision.
//!
//! The server's own subsystems (controllers, the supervisor's node index) watch through
//! [`WatchCaches::serving_watches`]: their datastore watches of a cached kind are served by its
//! cache, so etcd sends each change once per server rather than once per watcher.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::selectors::FieldOp;
use super::{ListOptions, ObjectError, RawListResult, decode};
use crate::datastore::{
    Cas, Change, Datastore, DatastoreError, KvStore, ListPage, Stored, WatchStream,
};
use crate::registry::ResourceInfo;

/// Sizing of the event window and of the per-watcher buffers.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Events always kept, whatever their age.
    pub min_events: usize,
    /// Events never exceeded, whatever their age.
    pub max_events: usize,
    /// Events younger than this are kept (up to `max_events`): clients that reconnect within
    /// it resume without relisting.
    pub max_age: Duration,
    /// Events queued for one client watch before it is dropped as too slow.
    pub watcher_buffer: usize,
    /// The same for a watch of this server's own subsystems ([`WatchCaches::serving_watches`]):
    /// larger, since a dropped one relists from etcd, and its reader only forwards events.
    pub subsystem_buffer: usize,
    /// How long a LIST or WATCH waits for the cache to reach the revision it needs.
    pub freshness_wait: Duration,
    /// A consistent LIST (no `resourceVersion`) is answered from the cache once the cache has
    /// reached etcd's current revision. When it has not yet, the LIST waits for it only if the
    /// kind has at least this many objects: a smaller list is cheaper to read from etcd than
    /// to wait for the cache's next event or progress notification. Only the etcd watches of
    /// kinds this large ask for progress notifications.
    pub consistent_min_objects: usize,
    /// How long such a LIST waits before it reads etcd instead: a little over two of etcd's
    /// progress notification intervals (`ENV_DEFAULTS` in `etcd::process`), which is how long
    /// an idle kind's cache may take to learn that it is current.
    pub consistent_wait: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            min_events: 1024,
            max_events: 200_000,
            // Upstream's default watch-cache window target.
            max_age: Duration::from_secs(75),
            watcher_buffer: 1024,
            subsystem_buffer: 65_536,
            freshness_wait: Duration::from_secs(3),
            consistent_min_objects: 500,
            consistent_wait: Duration::from_millis(500),
        }
    }
}

impl CacheConfig {
    /// The defaults with at most `max_events` events per kind (`watch-cache-max-events`); a
    /// window smaller than the default minimum is kept at that size whatever its age.
    pub fn with_max_events(max_events: usize) -> CacheConfig {
        let d = CacheConfig::default();
        CacheConfig {
            min_events: d.min_events.min(max_events),
            max_events,
            ..d
        }
    }
}

/// The kinds every API server caches from its start: each stored kind clients can watch, once
/// per etcd prefix (kinds served in two versions share one cache).
pub fn cached_kinds() -> Vec<&'static ResourceInfo> {
    let mut out: Vec<&'static ResourceInfo> = Vec::new();
    for info in crate::registry::RESOURCES.iter().copied() {
        if info.is_stored()
            && info.serves(crate::registry::Verb::Watch)
            && !out.iter().any(|o| o.etcd_prefix == info.etcd_prefix)
        {
            out.push(info);
        }
    }
    out
}

/// Why the cache cannot serve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The requested revision is older than the window (the client must relist: 410).
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: i64, oldest: i64 },
    /// The cache has not caught up in time (not listed yet, or behind the revision needed);
    /// the caller reads etcd instead.
    #[error("watch cache not ready")]
    NotReady,
}

/// One cached object: its stored form and the index values taken from it.
#[derive(Debug)]
pub struct Entry {
    pub kv: Stored,
    /// `spec.nodeName`, when set and non-empty.
    node: Option<Box<str>>,
}

impl Entry {
    fn new(kv: Stored) -> Entry {
        #[derive(serde::Deserialize)]
        struct Spec {
            #[serde(rename = "nodeName")]
            node_name: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Probe {
            spec: Option<Spec>,
        }
        // A typed probe skips every other field: much cheaper than a full parse.
        let node = serde_json::from_slice::<Probe>(&kv.value)
            .ok()
            .and_then(|p| p.spec?.node_name)
            .filter(|n| !n.is_empty())
            .map(String::into_boxed_str);
        Entry { kv, node }
    }

    /// Approximate bytes held for this object: the entry, its stored bytes, and the copies of
    /// its key in the object map and the node index (map node overhead not counted).
    fn footprint(&self) -> usize {
        let key = self.kv.key.len();
        std::mem::size_of::<Entry>()
            + std::mem::size_of::<Arc<Entry>>()
            + 2 * key
            + self.kv.value.len()
            + self.node.as_ref().map_or(0, |n| 2 * n.len() + key)
    }
}

/// A change applied to the cache.
#[derive(Debug)]
pub struct CacheEvent {
    /// The revision of the change (for deletions, the deletion revision).
    pub revision: i64,
    /// The object after the change; for a deletion, its last state.
    pub obj: Arc<Entry>,
    /// The object before a put (`None` on create).
    pub prev: Option<Arc<Entry>>,
    pub deleted: bool,
    at: Instant,
}

impl CacheEvent {
    fn name(&self) -> &str {
        self.obj.kv.key.rsplit('/').next().unwrap_or_default()
    }
}

/// Which index a client watch is registered under.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Index {
    Node(String),
    Name(String),
    None,
}

impl Index {
    fn of(opts: &ListOptions) -> Index {
        let Some(fs) = &opts.field_selector else {
            return Index::None;
        };
        if let Some(t) = fs
            .terms()
            .iter()
            .find(|t| t.field == "spec.nodeName" && t.op == FieldOp::Equals && !t.value.is_empty())
        {
            return Index::Node(t.value.clone());
        }
        fs.single_name()
            .map_or(Index::None, |n| Index::Name(n.to_string()))
    }
}

struct Slot {
    tx: mpsc::Sender<Arc<CacheEvent>>,
    prefix: String,
    index: Index,
}

impl Slot {
    fn wants(&self, ev: &CacheEvent) -> bool {
        ev.obj.kv.key.starts_with(&self.prefix)
            && match &self.index {
                Index::None => true,
                Index::Name(n) => ev.name() == n,
                Index::Node(n) => {
                    ev.obj.node.as_deref() == Some(n.as_str())
                        || ev.prev.as_ref().and_then(|p| p.node.as_deref()) == Some(n.as_str())
                }
            }
    }
}

#[derive(Default)]
struct Watchers {
    slots: HashMap<u64, Slot>,
    by_node: HashMap<String, HashSet<u64>>,
    by_name: HashMap<String, HashSet<u64>>,
    other: HashSet<u64>,
    next_id: u64,
}

impl Watchers {
    fn add(&mut self, slot: Slot) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        match &slot.index {
            Index::Node(n) => self.by_node.entry(n.clone()).or_default().insert(id),
            Index::Name(n) => self.by_name.entry(n.clone()).or_default().insert(id),
            Index::None => self.other.insert(id),
        };
        self.slots.insert(id, slot);
        id
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        let (map, key) = match &slot.index {
            Index::Node(n) => (&mut self.by_node, n),
            Index::Name(n) => (&mut self.by_name, n),
            Index::None => {
                self.other.remove(&id);
                return;
            }
        };
        if let Some(set) = map.get_mut(key) {
            set.remove(&id);
            if set.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Pushes `ev` to every interested watcher; drops those whose buffer is full.
    fn dispatch(&mut self, ev: &Arc<CacheEvent>) {
        let mut ids: Vec<u64> = self.other.iter().copied().collect();
        if let Some(set) = self.by_name.get(ev.name()) {
            ids.extend(set);
        }
        for node in [
            ev.obj.node.as_deref(),
            ev.prev.as_ref().and_then(|p| p.node.as_deref()),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(set) = self.by_node.get(node) {
                ids.extend(set);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut slow = Vec::new();
        for id in ids {
            let slot = &self.slots[&id];
            if slot.wants(ev) && slot.tx.try_send(ev.clone()).is_err() {
                slow.push(id);
            }
        }
        for id in slow {
            tracing::debug!(
                component = "watchcache",
                "dropping a slow or closed watcher"
            );
            self.remove(id);
        }
    }
}

#[derive(Default)]
struct State {
    /// The revision the cache reflects (0 until the first list).
    revision: i64,
    /// Every event after this revision is in `ring`.
    window_start: i64,
    objects: BTreeMap<String, Arc<Entry>>,
    by_node: HashMap<Box<str>, BTreeSet<String>>,
    ring: VecDeque<Arc<CacheEvent>>,
    watchers: Watchers,
    /// Sum of [`Entry::footprint`] over `objects`.
    bytes: usize,
}

impl State {
    fn index(&mut self, e: &Arc<Entry>) {
        self.bytes += e.footprint();
        if let Some(n) = &e.node {
            self.by_node
                .entry(n.clone())
                .or_default()
                .insert(e.kv.key.clone());
        }
    }

    fn unindex(&mut self, e: &Arc<Entry>) {
        self.bytes = self.bytes.saturating_sub(e.footprint());
        if let Some(n) = &e.node
            && let Some(set) = self.by_node.get_mut(n)
        {
            set.remove(&e.kv.key);
            if set.is_empty() {
                self.by_node.remove(n);
            }
        }
    }

    /// The objects under `prefix` that a watcher on `index` may select, in key order. With
    /// `exact_key`, `prefix` + name is the key of a name-selected object.
    fn select<'a>(
        &'a self,
        prefix: &'a str,
        index: &'a Index,
        exact_key: bool,
    ) -> Box<dyn Iterator<Item = &'a Arc<Entry>> + 'a> {
        match index {
            Index::Node(n) => Box::new(
                self.by_node
                    .get(n.as_str())
                    .into_iter()
                    .flatten()
                    .filter(move |k| k.starts_with(prefix))
                    .filter_map(|k| self.objects.get(k)),
            ),
            Index::Name(n) if exact_key => {
                Box::new(self.objects.get(&format!("{prefix}{n}")).into_iter())
            }
            _ => Box::new(
                self.objects
                    .range(prefix.to_string()..)
                    .take_while(move |(k, _)| k.starts_with(prefix))
                    .map(|(_, e)| e),
            ),
        }
    }

    /// Replaces the contents with a fresh list; every client watch ends (they resume from
    /// their revision, which is now outside the window unless nothing changed: 410).
    fn reset(&mut self, items: Vec<Stored>, revision: i64) {
        let watchers = std::mem::take(&mut self.watchers);
        *self = State {
            revision,
            window_start: revision,
            watchers: Watchers {
                next_id: watchers.next_id,
                ..Default::default()
            },
            ..Default::default()
        };
        for kv in items {
            let e = Arc::new(Entry::new(kv));
            self.index(&e);
            self.objects.insert(e.kv.key.clone(), e);
        }
    }

    fn push(&mut self, ev: Arc<CacheEvent>, cfg: &CacheConfig) {
        self.watchers.dispatch(&ev);
        self.ring.push_back(ev);
        let now = Instant::now();
        while self.ring.len() > cfg.min_events
            && (self.ring.len() > cfg.max_events
                || self
                    .ring
                    .front()
                    .is_some_and(|e| now.duration_since(e.at) > cfg.max_age))
        {
            if let Some(old) = self.ring.pop_front() {
                self.window_start = old.revision;
            }
        }
    }

    fn apply(&mut self, changes: Vec<Change>, rev: i64, cfg: &CacheConfig) {
        let base = self.revision;
        let at = Instant::now();
        // An empty batch is a progress notification: nothing else happened up to `rev`. (A
        // batch's own revision may run ahead of its events, so only events count otherwise.)
        if changes.is_empty() {
            self.revision = self.revision.max(rev);
        }
        for change in changes {
            let revision = change.revision();
            // A resumed watch must not apply a revision twice.
            if revision <= base {
                continue;
            }
            let ev = match change {
                Change::Put { kv, .. } => {
                    let obj = Arc::new(Entry::new(kv));
                    let prev = self.objects.insert(obj.kv.key.clone(), obj.clone());
                    if let Some(p) = &prev {
                        self.unindex(p);
                    }
                    self.index(&obj);
                    CacheEvent {
                        revision,
                        obj,
                        prev,
                        deleted: false,
                        at,
                    }
                }
                Change::Delete { key, .. } => {
                    let Some(obj) = self.objects.remove(&key) else {
                        continue;
                    };
                    self.unindex(&obj);
                    CacheEvent {
                        revision,
                        obj,
                        prev: None,
                        deleted: true,
                        at,
                    }
                }
            };
            self.revision = self.revision.max(revision);
            self.push(Arc::new(ev), cfg);
        }
    }
}

/// Size figures of one kind's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub objects: usize,
    /// Approximate bytes held for the objects (stored bytes, keys, index entries).
    pub bytes: usize,
    pub events: usize,
    pub watchers: usize,
    pub revision: i64,
    pub window_start: i64,
}

impl CacheStats {
    /// Average bytes per cached object.
    pub fn bytes_per_object(&self) -> usize {
        self.bytes.checked_div(self.objects).unwrap_or(0)
    }
}

/// The cache of one resource kind.
pub struct KindCache {
    info: &'static ResourceInfo,
    prefix: String,
    cfg: CacheConfig,
    state: RwLock<State>,
    /// The applied revision, for waiters.
    revision: watch::Sender<i64>,
    /// The highest revision of a write to this kind acknowledged through the fenced store.
    acked: Arc<AtomicI64>,
}

impl std::fmt::Debug for KindCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl KindCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Size figures.
    pub fn stats(&self) -> CacheStats {
        let s = self.read();
        CacheStats {
            objects: s.objects.len(),
            bytes: s.bytes,
            events: s.ring.len(),
            watchers: s.watchers.slots.len(),
            revision: s.revision,
            window_start: s.window_start,
        }
    }

    /// Waits until the cache has applied `at_least` and every write acknowledged through the
    /// fenced store; `NotReady` after the configured wait.
    async fn fresh(&self, at_least: i64) -> Result<(), CacheError> {
        self.fresh_within(at_least, self.cfg.freshness_wait).await
    }

    /// [`KindCache::fresh`] with its own bound on the wait.
    async fn fresh_within(&self, at_least: i64, wait: Duration) -> Result<(), CacheError> {
        let target = at_least.max(self.acked.load(Ordering::Acquire)).max(1);
        let mut rx = self.revision.subscribe();
        match tokio::time::timeout(wait, rx.wait_for(|r| *r >= target)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CacheError::NotReady),
        }
    }

    /// A consistent LIST from memory, as upstream's consistent reads from cache: `current` is
    /// etcd's revision read (linearizably) when the request arrived, and the cache answers
    /// once it has applied that revision, so the answer holds every write acknowledged
    /// anywhere before the request. `NotReady` sends the LIST to etcd: the cache did not get
    /// there within [`CacheConfig::consistent_wait`], or it is behind and the kind is too small
    /// to be worth waiting for ([`CacheConfig::consistent_min_objects`]).
    pub async fn list_consistent(
        &self,
        ns: Option<&str>,
        opts: &ListOptions,
        current: i64,
    ) -> Result<Result<RawListResult, ObjectError>, CacheError> {
        let (reached, objects) = {
            let s = self.read();
            (s.revision >= current, s.objects.len())
        };
        if !reached && objects < self.cfg.consistent_min_objects {
            return Err(CacheError::NotReady);
        }
        self.fresh_within(current, self.cfg.consistent_wait).await?;
        self.list_now(ns, opts)
    }

    /// Lists from memory, at a revision not older than `at_least` nor than any write
    /// acknowledged through the fenced store. `limit` and `continue` are not applied (as
    /// upstream's cache ignores `limit` for `resourceVersion=0`): the whole list is returned.
    pub async fn list(
        &self,
        ns: Option<&str>,
        opts: &ListOptions,
        at_least: i64,
    ) -> Result<Result<RawListResult, ObjectError>, CacheError> {
        self.fresh(at_least).await?;
        self.list_now(ns, opts)
    }

    /// The LIST from what the cache holds now.
    fn list_now(
        &self,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Result<RawListResult, ObjectError>, CacheError> {
        let info = self.info;
        let prefix = info.list_prefix(ns);
        let s = self.read();
        let index = Index::of(opts);
        let exact_key = !info.namespaced || ns.is_some();
        let candidates = s.select(&prefix, &index, exact_key);
        let filtering = opts.label_selector.is_some() || opts.field_selector.is_some();
        let mut items = Vec::new();
        for e in candidates {
            if filtering {
                match decode(info, &e.kv) {
                    Ok(v) if selected(opts, &v) => {}
                    Ok(_) => continue,
                    Err(err) => return Ok(Err(err)),
                }
            }
            items.push(e.kv.clone());
        }
        Ok(Ok(RawListResult {
            items,
            resource_version: s.revision,
            continue_token: None,
            remaining: None,
        }))
    }

    /// The objects under `ns` as shared entries, at a revision not older than any write
    /// acknowledged through the fenced store (what an informer's store holds): controllers
    /// scan a kind this way instead of reading it from etcd on every pass.
    pub async fn snapshot(&self, ns: Option<&str>) -> Result<(Vec<Arc<Entry>>, i64), CacheError> {
        self.fresh(0).await?;
        let prefix = self.info.list_prefix(ns);
        let s = self.read();
        let items = s.select(&prefix, &Index::None, false).cloned().collect();
        Ok((items, s.revision))
    }

    /// The object under `key` as of now, without waiting: `None` when the cache has no list
    /// yet, `Some(None)` when the key is absent from the cache. The copy may be behind etcd
    /// (even behind this server's own latest write): it is only a starting point for a
    /// compare-and-swap, which etcd checks. Waiting for this server's acknowledged writes, as
    /// LISTs do, would send most writes of a busy kind to etcd for nothing, since some write
    /// of the kind is nearly always in flight.
    pub fn current_object(&self, key: &str) -> Option<Option<Stored>> {
        let s = self.read();
        if s.revision == 0 {
            return None;
        }
        Some(s.objects.get(key).map(|e| e.kv.clone()))
    }

    /// Registers a client watch of the objects under `ns` that `opts` may select. With
    /// `after = Some(n)`, the events after revision `n` (410 when `n` is older than the
    /// window); with `None`, the current objects as initial events (`resourceVersion=0`).
    pub async fn watch(
        self: &Arc<Self>,
        ns: Option<&str>,
        opts: &ListOptions,
        after: Option<i64>,
    ) -> Result<CacheWatch, CacheError> {
        // Only waits for the first list (and for this server's own writes): a client's
        // revision from another server is served as soon as the cache gets there.
        self.fresh(0).await?;
        let (tx, rx) = mpsc::channel(self.cfg.watcher_buffer);
        let slot = Slot {
            tx,
            prefix: self.info.list_prefix(ns),
            index: Index::of(opts),
        };
        let exact_key = !self.info.namespaced || ns.is_some();
        self.register(slot, rx, after, exact_key)
    }

    /// A watch of every key under `prefix` (this kind's prefix or a namespace's within it)
    /// after revision `after`, for this server's own subsystems: as [`KindCache::watch`].
    async fn watch_keys(
        self: &Arc<Self>,
        prefix: &str,
        after: i64,
    ) -> Result<CacheWatch, CacheError> {
        self.fresh(0).await?;
        let (tx, rx) = mpsc::channel(self.cfg.subsystem_buffer);
        let slot = Slot {
            tx,
            prefix: prefix.to_string(),
            index: Index::None,
        };
        self.register(slot, rx, Some(after), false)
    }

    fn register(
        self: &Arc<Self>,
        slot: Slot,
        rx: mpsc::Receiver<Arc<CacheEvent>>,
        after: Option<i64>,
        exact_key: bool,
    ) -> Result<CacheWatch, CacheError> {
        let mut s = self.write();
        let (initial, start) = match after {
            Some(n) if n < s.window_start => {
                return Err(CacheError::Expired {
                    requested: n,
                    oldest: s.window_start,
                });
            }
            Some(n) => {
                let from = s.ring.partition_point(|e| e.revision <= n);
                let replay: Vec<_> = s
                    .ring
                    .range(from..)
                    .filter(|e| slot.wants(e))
                    .cloned()
                    .collect();
                (replay, n)
            }
            None => {
                let snapshot = s
                    .select(&slot.prefix, &slot.index, exact_key)
                    .map(|e| {
                        Arc::new(CacheEvent {
                            revision: e.kv.mod_revision,
                            obj: e.clone(),
                            prev: None,
                            deleted: false,
                            at: Instant::now(),
                        })
                    })
                    .filter(|e| slot.wants(e))
                    .collect();
                (snapshot, s.revision)
            }
        };
        let id = s.watchers.add(slot);
        drop(s);
        Ok(CacheWatch {
            cache: self.clone(),
            id,
            initial: initial.into(),
            rx,
            last: start,
        })
    }

    /// Lists the prefix and replaces the contents.
    async fn relist(&self, ds: &Datastore) -> Result<i64, DatastoreError> {
        let page = ds.list(&self.prefix, None, 0, 0).await?;
        let rev = page.revision;
        let mut s = self.write();
        s.reset(page.items, rev);
        let (objects, bytes) = (s.objects.len(), s.bytes);
        drop(s);
        tracing::debug!(
            component = "watchcache",
            prefix = %self.prefix,
            objects,
            bytes,
            bytes_per_object = bytes.checked_div(objects).unwrap_or(0),
            "listed at revision {rev}"
        );
        self.revision.send_replace(rev);
        Ok(rev)
    }

    fn apply(&self, changes: Vec<Change>, rev: i64) {
        let mut s = self.write();
        s.apply(changes, rev, &self.cfg);
        let now = s.revision;
        drop(s);
        self.revision.send_replace(now);
    }

    fn current(&self) -> i64 {
        self.read().revision
    }

    /// Keeps the cache in step with the datastore until cancelled.
    async fn run(self: Arc<Self>, ds: Datastore, cancel: CancellationToken) {
        const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut backoff = BACKOFF.0;
        let mut listed = false;
        loop {
            let pause = backoff;
            if !listed {
                match tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = self.relist(&ds) => r,
                } {
                    Ok(_) => listed = true,
                    Err(e) => {
                        tracing::warn!(component = "watchcache", prefix = %self.prefix, "list failed: {e}")
                    }
                }
            }
            if listed {
                let from = self.current() + 1;
                let progress = self.wants_progress(false);
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    // The cache keeps every object, so it needs no previous values.
                    r = ds.watch_without_prev(&self.prefix, from, progress) => r,
                };
                match outcome {
                    Ok(stream) => match self.follow(stream, progress, &cancel).await {
                        None => return,
                        Some(Err(DatastoreError::Compacted { .. })) => listed = false,
                        Some(Err(e)) => {
                            tracing::debug!(component = "watchcache", prefix = %self.prefix, "watch broke, resuming: {e}")
                        }
                        Some(Ok(progressed)) => {
                            if progressed {
                                backoff = BACKOFF.0;
                            }
                            // The kind grew or shrank past the size that wants progress
                            // notifications: watch again at once, from where it stopped.
                            if self.wants_progress(progress) != progress {
                                continue;
                            }
                        }
                    },
                    Err(DatastoreError::Compacted { .. }) => listed = false,
                    Err(e) => {
                        tracing::debug!(component = "watchcache", prefix = %self.prefix, "watch failed: {e}")
                    }
                }
                if !listed {
                    tracing::info!(component = "watchcache", prefix = %self.prefix, "revision compacted, relisting");
                    continue;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Whether this kind's etcd watch should ask for progress notifications, given whether it
    /// does now. Only a consistent LIST of a kind with [`CacheConfig::consistent_min_objects`]
    /// waits for the cache, and only an idle kind needs a progress notification to learn that
    /// it is current; each one costs etcd and this server a message per interval, so the
    /// kinds smaller than that (most of them, in most clusters) go without. Off again below
    /// half the size, so that a kind near it does not switch back and forth.
    fn wants_progress(&self, now: bool) -> bool {
        let objects = self.read().objects.len();
        let min = self.cfg.consistent_min_objects;
        if now {
            objects >= min / 2
        } else {
            objects >= min
        }
    }

    /// Applies a watch until it ends: `None` when cancelled, `Ok(progressed)` when the stream
    /// ended cleanly (or the kind's size calls for the other `progress`), the error otherwise.
    async fn follow(
        &self,
        mut stream: WatchStream,
        progress: bool,
        cancel: &CancellationToken,
    ) -> Option<Result<bool, DatastoreError>> {
        let mut progressed = false;
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return None,
                m = stream.next() => m,
            };
            match msg {
                Ok(Some((changes, rev))) => {
                    progressed = true;
                    let sized = !changes.is_empty();
                    self.apply(changes, rev);
                    if sized && self.wants_progress(progress) != progress {
                        return Some(Ok(true));
                    }
                }
                Ok(None) => return Some(Ok(progressed)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Whether `v` satisfies the selectors of `opts`.
pub fn selected(opts: &ListOptions, v: &serde_json::Value) -> bool {
    opts.label_selector
        .as_ref()
        .is_none_or(|s| s.matches_object(v))
        && opts.field_selector.as_ref().is_none_or(|s| s.matches(v))
}

/// A client watch on a [`KindCache`]; unregisters when dropped.
pub struct CacheWatch {
    cache: Arc<KindCache>,
    id: u64,
    initial: VecDeque<Arc<CacheEvent>>,
    rx: mpsc::Receiver<Arc<CacheEvent>>,
    /// The revision of the last event handed out (or where the watch started).
    last: i64,
}

impl CacheWatch {
    /// The revision the watch started after, then the revision of the last event returned.
    pub fn last_revision(&self) -> i64 {
        self.last
    }

    /// The next event; `None` when the watch was dropped (too slow, or the cache relisted):
    /// the client resumes from its last revision.
    pub async fn next(&mut self) -> Option<Arc<CacheEvent>> {
        if let Some(ev) = self.try_next() {
            return Some(ev);
        }
        loop {
            let ev = self.rx.recv().await?;
            if let Some(ev) = self.fresh_event(ev) {
                return Some(ev);
            }
        }
    }

    /// The next event if one is queued, without waiting.
    fn try_next(&mut self) -> Option<Arc<CacheEvent>> {
        if let Some(ev) = self.initial.pop_front() {
            self.last = self.last.max(ev.revision);
            return Some(ev);
        }
        while let Ok(ev) = self.rx.try_recv() {
            if let Some(ev) = self.fresh_event(ev) {
                return Some(ev);
            }
        }
        None
    }

    /// `ev` unless the initial state already covers it (a watch started at a revision the
    /// cache had not reached yet); advances the watch's revision.
    fn fresh_event(&mut self, ev: Arc<CacheEvent>) -> Option<Arc<CacheEvent>> {
        (ev.revision > self.last).then(|| {
            self.last = ev.revision;
            ev
        })
    }

    /// The events already queued, then the revision a BOOKMARK may carry: every event up to it
    /// that this watch selects is among the events returned before.
    pub fn drain_for_bookmark(&mut self) -> (Vec<Arc<CacheEvent>>, i64) {
        // Read the revision first: every event at or below it is queued by then.
        let cache_rev = self.cache.current();
        let out: Vec<_> = std::iter::from_fn(|| self.try_next()).collect();
        (out, cache_rev.max(self.last))
    }
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        self.cache.write().watchers.remove(self.id);
    }
}

type Fence = Arc<RwLock<Vec<(String, Arc<AtomicI64>)>>>;

/// Watch caches of one API server, one per resource kind, started on first use.
pub struct WatchCaches {
    registry: Arc<Registry>,
    /// The fenced wrapper of the raw store.
    fenced: OnceLock<Datastore>,
}

/// The caches and what starting one takes: shared with the stores that serve watches from
/// them ([`WatchCaches::serving_watches`]).
struct Registry {
    cfg: CacheConfig,
    cancel: CancellationToken,
    kinds: Mutex<HashMap<String, Arc<KindCache>>>,
    fence: Fence,
    /// The raw store the caches read.
    raw: OnceLock<Datastore>,
}

impl std::fmt::Debug for WatchCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCaches").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    fn kinds(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<KindCache>>> {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache of `info`'s kind, started on the first call; `None` before the store is bound.
    fn kind(&self, info: &'static ResourceInfo) -> Option<Arc<KindCache>> {
        let raw = self.raw.get()?.clone();
        let prefix = info.list_prefix(None);
        let mut kinds = self.kinds();
        if let Some(k) = kinds.get(&prefix) {
            return Some(k.clone());
        }
        let acked = Arc::new(AtomicI64::new(0));
        self.fence
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((prefix.clone(), acked.clone()));
        let cache = Arc::new(KindCache {
            info,
            prefix: prefix.clone(),
            cfg: self.cfg.clone(),
            state: RwLock::default(),
            revision: watch::Sender::new(0),
            acked,
        });
        kinds.insert(prefix, cache.clone());
        tokio::spawn(cache.clone().run(raw, self.cancel.child_token()));
        Some(cache)
    }

    /// The cache of the kind whose keys include every key under `prefix`, if one is cached.
    fn covering(&self, prefix: &str) -> Option<Arc<KindCache>> {
        cached_kinds()
            .into_iter()
            .find(|info| prefix.starts_with(&info.list_prefix(None)))
            .and_then(|info| self.kind(info))
    }
}

impl WatchCaches {
    pub fn new(cancel: CancellationToken, cfg: CacheConfig) -> WatchCaches {
        WatchCaches {
            registry: Arc::new(Registry {
                cfg,
                cancel,
                kinds: Mutex::default(),
                fence: Fence::default(),
                raw: OnceLock::new(),
            }),
            fenced: OnceLock::new(),
        }
    }

    /// Binds the caches to `ds` on the first call (later calls keep the first store); the
    /// raw store and its fenced wrapper.
    fn bind(&self, ds: &Datastore) -> (&Datastore, &Datastore) {
        let raw = self.registry.raw.get_or_init(|| ds.clone());
        let fenced = self.fenced.get_or_init(|| {
            Datastore::from_impl(Arc::new(Fenced {
                inner: raw.clone(),
                fence: self.registry.fence.clone(),
                watches: None,
            }))
        });
        (raw, fenced)
    }

    /// `ds` with every acknowledged write recorded, so that LISTs from the caches wait for it.
    /// The API server writes through this handle.
    pub fn fenced(&self, ds: &Datastore) -> Datastore {
        self.bind(ds).1.clone()
    }

    /// [`WatchCaches::fenced`] whose watches of a cached kind (all of it, or one namespace)
    /// are served from that kind's cache instead of opening an etcd watch each, with previous
    /// values as the cache holds them. For this server's own subsystems that follow changes
    /// (controllers, indexes), which then add no etcd watch, nor etcd's read of the previous
    /// value for every event. A start revision older than the cache's window is `Compacted`
    /// (the caller lists again); a cache not ready yet leaves the watch to etcd.
    pub fn serving_watches(&self, ds: &Datastore) -> Datastore {
        let raw = self.bind(ds).0.clone();
        Datastore::from_impl(Arc::new(Fenced {
            inner: raw,
            fence: self.registry.fence.clone(),
            watches: Some(self.registry.clone()),
        }))
    }

    /// The cache of `info`'s kind, started on the first call; `None` before the store is known
    /// (before the first [`WatchCaches::fenced`]).
    pub fn kind(&self, info: &'static ResourceInfo) -> Option<Arc<KindCache>> {
        self.registry.kind(info)
    }

    /// The cache of `info`'s kind if it has been started (never starts one: callers with a
    /// non-static `info` fall back to etcd until [`WatchCaches::start_all`] has run).
    pub fn started(&self, info: &ResourceInfo) -> Option<Arc<KindCache>> {
        self.registry.kinds().get(&info.list_prefix(None)).cloned()
    }

    /// Binds the caches to `ds` and starts the cache of every kind of [`cached_kinds`], so that
    /// each window begins at the server's start (as upstream's cacher): a client resuming from a
    /// revision it listed from this server is then inside the window, not answered 410.
    pub fn start_all(&self, ds: &Datastore) {
        self.bind(ds);
        for info in cached_kinds() {
            self.kind(info);
        }
    }

    /// Figures of every started cache, by etcd prefix.
    pub fn stats(&self) -> Vec<(String, CacheStats)> {
        let kinds = self.registry.kinds();
        let mut out: Vec<_> = kinds.iter().map(|(p, k)| (p.clone(), k.stats())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// A store recording the revision of each acknowledged write under a cached prefix, and with
/// `watches`, serving watches from the caches.
#[derive(Debug)]
struct Fenced {
    inner: Datastore,
    fence: Fence,
    watches: Option<Arc<Registry>>,
}

/// A cache watch as a datastore watch: each batch is what is queued, with the previous
/// values the cache holds.
struct CachedChanges(CacheWatch);

impl CachedChanges {
    fn change(ev: &CacheEvent) -> Change {
        if ev.deleted {
            return Change::Delete {
                key: ev.obj.kv.key.clone(),
                prev: Some(ev.obj.kv.clone()),
                revision: ev.revision,
            };
        }
        Change::Put {
            kv: ev.obj.kv.clone(),
            prev: ev.prev.as_ref().map(|p| p.kv.clone()),
            created: ev.obj.kv.create_revision == ev.obj.kv.mod_revision,
        }
    }
}

impl crate::datastore::ChangeStream for CachedChanges {
    fn next(
        &mut self,
    ) -> BoxFuture<'_, Result<Option<crate::datastore::WatchBatch>, DatastoreError>> {
        Box::pin(async move {
            let Some(first) = self.0.next().await else {
                // Dropped as too slow, or the cache relisted: the caller lists again.
                return Err(DatastoreError::Unavailable(
                    "the watch cache ended the watch".into(),
                ));
            };
            let mut batch = vec![Self::change(&first)];
            while let Some(ev) = self.0.try_next() {
                batch.push(Self::change(&ev));
            }
            Ok(Some((batch, self.0.last_revision())))
        })
    }
}

impl Fenced {
    /// The watch of `prefix` from `start` (0: now) served by a cache, when this store serves
    /// watches and a ready cache covers the prefix.
    async fn cache_watch(
        &self,
        prefix: &str,
        start: i64,
    ) -> Option<Result<WatchStream, DatastoreError>> {
        let cache = self.watches.as_ref()?.covering(prefix)?;
        let after = if start > 0 {
            start - 1
        } else {
            cache.current()
        };
        match cache.watch_keys(prefix, after).await {
            Ok(w) => Some(Ok(WatchStream::new(CachedChanges(w)))),
            Err(CacheError::Expired { requested, oldest }) => {
                Some(Err(DatastoreError::Compacted {
                    requested: requested + 1,
                    compacted: oldest,
                }))
            }
            Err(CacheError::NotReady) => None,
        }
    }

    fn record(&self, key: &str, rev: i64) {
        for (prefix, acked) in self.fence.read().unwrap_or_else(|p| p.into_inner()).iter() {
            if key.starts_with(prefix.as_str()) {
                acked.fetch_max(rev, Ordering::AcqRel);
            }
        }
    }

    fn recorded<'a>(
        &'a self,
        key: &'a str,
        fut: BoxFuture<'a, Result<Cas, DatastoreError>>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        Box::pin(async move {
            let out = fut.await?;
            if let Cas::Written(rev) = out {
                self.record(key, rev);
            }
            Ok(out)
        })
    }
}

impl KvStore for Fenced {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<Stored>, i64), DatastoreError>> {
        Box::pin(self.inner.get(key))
    }
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: i64,
        revision: i64,
    ) -> BoxFuture<'a, Result<ListPage, DatastoreError>> {
        Box::pin(self.inner.list(prefix, start_after, limit, revision))
    }
    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        let fut: BoxFuture<'a, _> = match lease {
            Some(l) => Box::pin(self.inner.create_with_lease(key, value, l)),
            None => Box::pin(self.inner.create(key, value)),
        };
        self.recorded(key, fut)
    }
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        self.recorded(key, Box::pin(self.inner.update(key, value, expected)))
    }
    fn update_leased<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: i64,
        lease: i64,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        self.recorded(
            key,
            Box::pin(self.inner.update_with_lease(key, value, expected, lease)),
        )
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(async move {
            let rev = self.inner.put(key, value).await?;
            self.record(key, rev);
            Ok(rev)
        })
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<i64>,
    ) -> BoxFuture<'a, Result<Cas, DatastoreError>> {
        self.recorded(key, Box::pin(self.inner.delete(key, expected)))
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<i64, DatastoreError>> {
        Box::pin(async move {
            let n = self.inner.delete_prefix(prefix).await?;
            // The count does not carry the revision: the current one is at least as new.
            let rev = self.inner.revision().await?;
            self.record(prefix, rev);
            Ok(n)
        })
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
            match self.cache_watch(prefix, start).await {
                Some(served) => served,
                None => self.inner.watch(prefix, start).await,
            }
        })
    }
    fn watch_without_prev<'a>(
        &'a self,
        prefix: &'a str,
        start: i64,
        progress: bool,
    ) -> BoxFuture<'a, Result<WatchStream, DatastoreError>> {
        Box::pin(async move {
            match self.cache_watch(prefix, start).await {
                Some(served) => served,
                None => self.inner.watch_without_prev(prefix, start, progress).await,
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::memory::MemoryStore;
    use crate::registry::PODS;
    use crate::storage::selectors::FieldSelector;

    struct Fixture {
        memory: Arc<MemoryStore>,
        /// The store as the API server writes to it.
        ds: Datastore,
        caches: WatchCaches,
        pods: Arc<KindCache>,
        _cancel: tokio_util::sync::DropGuard,
    }

    fn fixture(cfg: CacheConfig) -> Fixture {
        let memory = MemoryStore::new();
        let cancel = CancellationToken::new();
        let caches = WatchCaches::new(cancel.clone(), cfg);
        let ds = caches.fenced(&Datastore::from_impl(memory.clone()));
        let pods = caches.kind(&PODS).expect("bound");
        Fixture {
            memory,
            ds,
            caches,
            pods,
            _cancel: cancel.drop_guard(),
        }
    }

    fn pod(name: &str, node: &str, gen_: u32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {"gen": gen_.to_string()}},
            "spec": {"nodeName": node},
        }))
        .unwrap()
    }

    fn key(name: &str) -> String {
        PODS.key(Some("ns"), name)
    }

    fn opts(field: &str) -> ListOptions {
        ListOptions {
            field_selector: Some(FieldSelector::parse(field).unwrap()),
            ..Default::default()
        }
    }

    fn all() -> ListOptions {
        ListOptions::default()
    }

    async fn next(w: &mut CacheWatch) -> Arc<CacheEvent> {
        tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an event within 10 s")
            .expect("the watch is open")
    }

    /// Waits until the cache has applied revision `rev`.
    async fn caught_up(c: &KindCache, rev: i64) {
        c.fresh(rev).await.expect("the cache catches up");
    }

    async fn deleted(ds: &Datastore, k: &str) -> i64 {
        match ds.delete(k, None).await.unwrap() {
            Cas::Written(r) => r,
            c => panic!("delete of {k}: {c:?}"),
        }
    }

    #[tokio::test]
    async fn resumes_inside_the_window_and_expires_outside() {
        let f = fixture(CacheConfig {
            min_events: 0,
            max_events: 4,
            ..Default::default()
        });
        let first = f.ds.put(&key("a"), pod("a", "n1", 0)).await.unwrap();
        caught_up(&f.pods, first).await;
        let mut revs = Vec::new();
        for i in 1..=3 {
            revs.push(f.ds.put(&key("a"), pod("a", "n1", i)).await.unwrap());
        }
        caught_up(&f.pods, revs[2]).await;
        // Resuming after the first write replays exactly the three later ones.
        let mut w = f.pods.watch(None, &all(), Some(first)).await.unwrap();
        for rev in &revs {
            assert_eq!(next(&mut w).await.revision, *rev);
        }
        // Six more writes push the window past `first`.
        let mut last = 0;
        for i in 4..10 {
            last = f.ds.put(&key("a"), pod("a", "n1", i)).await.unwrap();
        }
        caught_up(&f.pods, last).await;
        let stats = f.pods.stats();
        assert_eq!(stats.events, 4);
        match f.pods.watch(None, &all(), Some(first)).await {
            Err(CacheError::Expired { requested, oldest }) => {
                assert_eq!((requested, oldest), (first, stats.window_start));
            }
            other => panic!("expected Expired, got {:?}", other.map(|_| ())),
        }
        // The oldest resumable revision still works and replays the whole window.
        let mut w = f
            .pods
            .watch(None, &all(), Some(stats.window_start))
            .await
            .unwrap();
        assert_eq!(next(&mut w).await.revision, stats.window_start + 1);
    }

    #[tokio::test]
    async fn bookmarks_cover_every_event_delivered_and_follow_progress() {
        // Large enough a kind (one object) for its watch to get progress notifications.
        let f = fixture(CacheConfig {
            consistent_min_objects: 1,
            ..CacheConfig::default()
        });
        let a = f.ds.put(&key("a"), pod("a", "n1", 0)).await.unwrap();
        caught_up(&f.pods, a).await;
        let mut w = f.pods.watch(None, &all(), Some(a)).await.unwrap();
        let b = f.ds.put(&key("b"), pod("b", "n1", 0)).await.unwrap();
        caught_up(&f.pods, b).await;
        // The queued event comes out before a bookmark at its revision.
        let (queued, rev) = w.drain_for_bookmark();
        assert_eq!(queued.iter().map(|e| e.revision).collect::<Vec<_>>(), [b]);
        assert_eq!(rev, b);
        // Writes elsewhere move the revision; a progress notification brings the cache (and
        // the next bookmark) there without any event of this kind.
        let other =
            f.ds.put("/registry/configmaps/ns/x", b"{}".to_vec())
                .await
                .unwrap();
        progress_until(&f, || f.pods.current() >= other).await;
        let (queued, rev) = w.drain_for_bookmark();
        assert!(queued.is_empty());
        assert_eq!(rev, other);
    }

    #[tokio::test]
    async fn field_selector_watches_get_only_their_objects() {
        let f = fixture(CacheConfig::default());
        let start = f.ds.revision().await.unwrap();
        caught_up(&f.pods, 1).await;
        let mut n1 = f
            .pods
            .watch(None, &opts("spec.nodeName=n1"), None)
            .await
            .unwrap();
        let mut by_name = f
            .pods
            .watch(Some("ns"), &opts("metadata.name=b"), None)
            .await
            .unwrap();
        let mut every = f.pods.watch(None, &all(), Some(start)).await.unwrap();
        let a = f.ds.put(&key("a"), pod("a", "n1", 0)).await.unwrap();
        let b = f.ds.put(&key("b"), pod("b", "n2", 0)).await.unwrap();
        // `a` moves from n1 to n2: n1's watcher must hear of it to send DELETED.
        let moved = f.ds.put(&key("a"), pod("a", "n2", 1)).await.unwrap();
        let c = f.ds.put(&key("c"), pod("c", "n1", 0)).await.unwrap();
        caught_up(&f.pods, c).await;
        for rev in [a, b, moved, c] {
            assert_eq!(next(&mut every).await.revision, rev);
        }
        assert_eq!(next(&mut n1).await.revision, a);
        let ev = next(&mut n1).await;
        assert_eq!(ev.revision, moved);
        assert_eq!(ev.prev.as_ref().unwrap().node.as_deref(), Some("n1"));
        assert_eq!(next(&mut n1).await.revision, c);
        assert_eq!(next(&mut by_name).await.revision, b);
        // Nothing else was queued for the selective watchers.
        assert!(n1.drain_for_bookmark().0.is_empty());
        assert!(by_name.drain_for_bookmark().0.is_empty());
        // Lists use the same indexes.
        let listed = f.pods.list(None, &opts("spec.nodeName=n2"), 0).await;
        let keys: Vec<_> = listed
            .unwrap()
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, [key("a"), key("b")]);
        let listed = f.pods.list(Some("ns"), &opts("metadata.name=c"), 0).await;
        let listed = listed.unwrap().unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.resource_version, c);
    }

    #[tokio::test]
    async fn a_list_is_never_older_than_an_acknowledged_write() {
        let f = fixture(CacheConfig::default());
        caught_up(&f.pods, 1).await;
        for i in 0..20 {
            let name = format!("p{i}");
            // The write is acknowledged before the cache task had a chance to apply it (this
            // test runs on one thread): the list must wait for it rather than answer without.
            let rev = f.ds.put(&key(&name), pod(&name, "n1", 0)).await.unwrap();
            let listed = f.pods.list(None, &all(), 0).await.unwrap().unwrap();
            assert!(listed.resource_version >= rev);
            assert_eq!(listed.items.len(), i + 1, "the write of {name} is listed");
        }
    }

    /// Sends progress notifications until `done`: the cache task may not have opened its
    /// progress-notified watch yet when the test first asks.
    async fn progress_until(f: &Fixture, done: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                f.memory.notify_progress();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("progress within 10 s");
    }

    /// A fixture whose pods' cache holds `pods` Pods and is one revision behind the store: the
    /// last write went to a ConfigMap, which the pods' cache never sees. Returns the store's
    /// revision.
    async fn idle_and_behind(cfg: CacheConfig, pods: usize) -> (Fixture, i64) {
        let f = fixture(cfg);
        caught_up(&f.pods, 1).await;
        for i in 0..pods {
            let name = format!("p{i}");
            f.memory
                .put(&key(&name), pod(&name, "n1", 0))
                .await
                .unwrap();
        }
        let cm = crate::registry::CONFIGMAPS.key(Some("ns"), "other");
        let current = f.memory.put(&cm, b"{}".to_vec()).await.unwrap();
        caught_up(&f.pods, current - 1).await;
        assert!(f.pods.current() < current);
        (f, current)
    }

    #[tokio::test]
    async fn a_consistent_list_waits_for_writes_made_behind_the_caches_back() {
        let f = fixture(CacheConfig {
            consistent_min_objects: 1,
            ..CacheConfig::default()
        });
        let first = f.ds.put(&key("p0"), pod("p0", "n1", 0)).await.unwrap();
        caught_up(&f.pods, first).await;
        // Written straight to the store, as another server would: nothing was acknowledged
        // through this server, yet a consistent LIST must hold them. The test's one thread
        // has not run the cache task since, so the cache is behind when the LIST starts.
        let mut last = 0;
        for i in 0..3 {
            let name = format!("q{i}");
            last = f
                .memory
                .put(&key(&name), pod(&name, "n1", 0))
                .await
                .unwrap();
        }
        let current = f.memory.revision().await.unwrap();
        assert_eq!(current, last);
        assert!(f.pods.current() < current);
        let listed = f.pods.list_consistent(None, &all(), current).await;
        let listed = listed.expect("the cache catches up").unwrap();
        assert!(listed.resource_version >= current);
        assert_eq!(listed.items.len(), 4);
    }

    #[tokio::test]
    async fn a_consistent_list_of_an_idle_kind_is_confirmed_by_a_progress_notification() {
        let cfg = CacheConfig {
            consistent_min_objects: 1,
            consistent_wait: Duration::from_secs(3600),
            ..CacheConfig::default()
        };
        // The cache has every Pod, but only a progress notification tells it that nothing
        // else happened to Pods up to `current`.
        let (f, current) = idle_and_behind(cfg, 2).await;
        let pods = f.pods.clone();
        let list = tokio::spawn(async move { pods.list_consistent(None, &all(), current).await });
        tokio::task::yield_now().await;
        assert!(
            !list.is_finished(),
            "answered before the cache reached {current}"
        );
        progress_until(&f, || list.is_finished()).await;
        let listed = list.await.unwrap().expect("served from the cache").unwrap();
        assert_eq!(listed.resource_version, current);
        assert_eq!(listed.items.len(), 2);
    }

    #[tokio::test]
    async fn a_consistent_list_goes_to_the_store_when_the_cache_is_behind_and_small_or_late() {
        // Small: not worth waiting for, etcd answers at once (the wait would be an hour).
        let cfg = CacheConfig {
            consistent_min_objects: 3,
            consistent_wait: Duration::from_secs(3600),
            ..CacheConfig::default()
        };
        let (f, current) = idle_and_behind(cfg, 2).await;
        let small = tokio::time::timeout(
            Duration::from_secs(10),
            f.pods.list_consistent(None, &all(), current),
        )
        .await
        .expect("no wait for a small kind");
        assert!(matches!(small, Err(CacheError::NotReady)));
        // Caught up already: served from the cache whatever its size.
        let now = f.memory.put(&key("p9"), pod("p9", "n1", 0)).await.unwrap();
        caught_up(&f.pods, now).await;
        let listed = f.pods.list_consistent(None, &all(), now).await;
        assert_eq!(listed.unwrap().unwrap().items.len(), 3);

        // Large enough but no progress within the wait: etcd answers.
        let cfg = CacheConfig {
            consistent_min_objects: 1,
            consistent_wait: Duration::from_millis(20),
            ..CacheConfig::default()
        };
        let (f, current) = idle_and_behind(cfg, 2).await;
        let late = f.pods.list_consistent(None, &all(), current).await;
        assert!(matches!(late, Err(CacheError::NotReady)));
    }

    #[tokio::test]
    async fn only_large_kinds_watch_with_progress_notifications_and_lose_no_event_switching() {
        let f = fixture(CacheConfig {
            consistent_min_objects: 4,
            ..CacheConfig::default()
        });
        caught_up(&f.pods, 1).await;
        let mut w = f
            .pods
            .watch(None, &all(), Some(f.pods.current()))
            .await
            .unwrap();
        let memory = f.memory.clone();
        let wait_for = move |want: usize| {
            let memory = memory.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    while memory.progress_watch_count() != want {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await
                .expect("the cache's watch switches");
            }
        };
        let mut written = Vec::new();
        for i in 0..4 {
            let name = format!("p{i}");
            written.push(
                f.memory
                    .put(&key(&name), pod(&name, "n1", 0))
                    .await
                    .unwrap(),
            );
            if i < 3 {
                caught_up(&f.pods, written[i]).await;
                assert_eq!(f.memory.progress_watch_count(), 0, "{} pods", i + 1);
            }
        }
        // Four Pods: the kind's watch asks for progress from then on.
        wait_for(1).await;
        // Down to one (under half of four): without again.
        for i in 0..3 {
            match f.memory.delete(&key(&format!("p{i}")), None).await.unwrap() {
                Cas::Written(rev) => written.push(rev),
                other => panic!("delete: {other:?}"),
            }
        }
        wait_for(0).await;
        let last = f.memory.put(&key("p9"), pod("p9", "n1", 0)).await.unwrap();
        written.push(last);
        // The client watch saw every change once, in order, across both switches.
        let mut seen = Vec::new();
        while seen.len() < written.len() {
            seen.push(next(&mut w).await.revision);
        }
        assert_eq!(seen, written);
        assert_eq!(f.memory.watch_count(), cached_kinds_bound(&f));
    }

    /// The store watches of the fixture's caches (one per bound kind).
    fn cached_kinds_bound(f: &Fixture) -> usize {
        f.caches.stats().len()
    }

    #[tokio::test]
    async fn no_event_is_lost_or_duplicated_across_watch_restarts() {
        let f = fixture(CacheConfig::default());
        caught_up(&f.pods, 1).await;
        let start = f.pods.current();
        let mut watches = Vec::new();
        for _ in 0..5 {
            watches.push(f.pods.watch(None, &all(), Some(start)).await.unwrap());
        }
        // Five client watches, one datastore watch.
        assert_eq!(f.memory.watch_count(), 1);
        let mut written = Vec::new();
        for round in 0..4 {
            for i in 0..5 {
                let name = format!("p{i}");
                written.push(
                    f.ds.put(&key(&name), pod(&name, "n1", round))
                        .await
                        .unwrap(),
                );
            }
            written.push(deleted(&f.ds, &key("p0")).await);
            // The datastore watch breaks (a reconnect, a leader change) between rounds; a
            // round may land before or after the cache has resumed.
            f.memory.end_watches();
            if round % 2 == 1 {
                tokio::task::yield_now().await;
            }
        }
        let last = *written.last().unwrap();
        caught_up(&f.pods, last).await;
        assert_eq!(
            f.memory.watch_count(),
            1,
            "the cache resumed with one watch"
        );
        for w in &mut watches {
            let mut seen = Vec::new();
            while seen.last() != Some(&last) {
                seen.push(next(w).await.revision);
            }
            assert_eq!(seen, written);
        }
        // The cache's objects match the store's.
        let listed = f.pods.list(None, &all(), last).await.unwrap().unwrap();
        let stored =
            f.ds.list(&PODS.list_prefix(None), None, 0, 0)
                .await
                .unwrap();
        assert_eq!(listed.items, stored.items);
    }

    #[tokio::test]
    async fn compaction_past_the_cache_relists_and_expires_old_watches() {
        let f = fixture(CacheConfig::default());
        let a = f.ds.put(&key("a"), pod("a", "n1", 0)).await.unwrap();
        caught_up(&f.pods, a).await;
        let mut w = f.pods.watch(None, &all(), Some(a)).await.unwrap();
        // While the cache is disconnected, history it has not seen is compacted away.
        f.memory.end_watches();
        f.ds.put(&key("b"), pod("b", "n1", 0)).await.unwrap();
        let c = deleted(&f.ds, &key("a")).await;
        f.memory.compact(c);
        caught_up(&f.pods, c).await;
        let listed = f.pods.list(None, &all(), c).await.unwrap().unwrap();
        let keys: Vec<_> = listed.items.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, [key("b")]);
        // The client watch ends, and resuming from its revision is 410.
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while w.next().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "the client watch ends on relist");
        assert!(matches!(
            f.pods.watch(None, &all(), Some(a)).await,
            Err(CacheError::Expired { .. })
        ));
    }

    /// The changes of the next batch of a datastore watch.
    async fn batch(w: &mut WatchStream) -> Vec<Change> {
        tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("a batch within 10 s")
            .expect("the watch works")
            .expect("the watch is open")
            .0
    }

    #[tokio::test]
    async fn subsystem_watches_are_served_from_the_cache_with_previous_values() {
        let f = fixture(CacheConfig::default());
        let a = f.ds.put(&key("a"), pod("a", "n1", 0)).await.unwrap();
        caught_up(&f.pods, a).await;
        let serving = f.caches.serving_watches(&f.ds);
        let store_watches = f.memory.watch_count();
        let mut w = serving
            .watch_without_prev(&PODS.list_prefix(Some("ns")), a + 1, false)
            .await
            .unwrap();
        // A watcher of the cache, and no store watch of its own.
        assert_eq!(f.pods.stats().watchers, 1);
        assert_eq!(f.memory.watch_count(), store_watches);
        let moved = serving.put(&key("a"), pod("a", "n2", 1)).await.unwrap();
        let gone = deleted(&serving, &key("a")).await;
        let other_ns = PODS.key(Some("x"), "o");
        f.ds.put(&other_ns, pod("o", "n1", 0)).await.unwrap();
        let d = f.ds.put(&key("d"), pod("d", "n1", 0)).await.unwrap();
        let mut changes = Vec::new();
        while changes.len() < 3 {
            changes.extend(batch(&mut w).await);
        }
        // Previous values come from the cache even though none were asked for; the other
        // namespace's pod is not under the watched prefix.
        match &changes[..] {
            [
                Change::Put {
                    kv: m,
                    prev: Some(before),
                    created: false,
                },
                Change::Delete {
                    key: k,
                    prev: Some(last),
                    revision,
                },
                Change::Put {
                    kv: new,
                    prev: None,
                    created: true,
                },
            ] => {
                assert_eq!((m.mod_revision, before.mod_revision), (moved, a));
                assert_eq!(
                    (k.as_str(), last.mod_revision, *revision),
                    (key("a").as_str(), moved, gone)
                );
                assert_eq!(new.mod_revision, d);
            }
            other => panic!("unexpected changes: {other:?}"),
        }
        // Dropping the stream unregisters the watcher.
        drop(w);
        assert_eq!(f.pods.stats().watchers, 0);
    }

    #[tokio::test]
    async fn subsystem_watches_older_than_the_window_are_compacted_and_others_go_to_the_store() {
        let f = fixture(CacheConfig {
            min_events: 0,
            max_events: 2,
            ..Default::default()
        });
        let first = f.ds.put(&key("a"), pod("a", "n1", 0)).await.unwrap();
        // The cache has listed before the later writes, so they are events of its window.
        caught_up(&f.pods, first).await;
        let mut last = first;
        for i in 1..5 {
            last = f.ds.put(&key("a"), pod("a", "n1", i)).await.unwrap();
        }
        caught_up(&f.pods, last).await;
        let serving = f.caches.serving_watches(&f.ds);
        match serving.watch(&PODS.list_prefix(None), first + 1).await {
            Err(DatastoreError::Compacted { .. }) => {}
            other => panic!("expected Compacted, got {:?}", other.map(|_| ())),
        }
        // The last revision inside the window is served.
        let oldest = f.pods.stats().window_start;
        let mut w = serving
            .watch(&PODS.list_prefix(None), oldest + 1)
            .await
            .unwrap();
        assert_eq!(batch(&mut w).await[0].revision(), oldest + 1);
        // A prefix no cached kind covers is watched in the store.
        let store_watches = f.memory.watch_count();
        let mut raw = serving.watch("/custom/", 0).await.unwrap();
        assert_eq!(f.memory.watch_count(), store_watches + 1);
        let rev = serving.put("/custom/k", b"v".to_vec()).await.unwrap();
        assert_eq!(batch(&mut raw).await[0].revision(), rev);
    }

    #[tokio::test]
    async fn memory_per_object_is_reported() {
        let f = fixture(CacheConfig::default());
        let mut last = 0;
        let mut stored = 0;
        for i in 0..100 {
            let name = format!("p{i}");
            let value = pod(&name, &format!("n{}", i % 7), 0);
            stored += value.len() + key(&name).len();
            last = f.ds.put(&key(&name), value).await.unwrap();
        }
        caught_up(&f.pods, last).await;
        let (prefix, stats) = f.caches.stats().remove(0);
        assert_eq!(prefix, PODS.list_prefix(None));
        assert_eq!(stats.objects, 100);
        assert!(stats.bytes >= stored, "{stats:?}");
        println!(
            "cached pod: {} bytes per object ({stats:?})",
            stats.bytes_per_object()
        );
    }
}
