//! Kubernetes objects in etcd (docs/architecture.md §2): JSON under `/registry/...`,
//! `resourceVersion` = etcd `mod_revision` (injected on read, never stored), updates as
//! compare-and-swap on that revision. Read-modify-write without a client precondition retries the
//! swap internally, so PATCH never surfaces a 409 (docs/kubernetes-api.md §A.5).

use std::sync::Arc;

use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

pub mod decoded;
pub mod error;
pub mod metadata;
pub mod namespaces;
pub mod ownership;
pub mod pods;
pub mod selectors;
pub mod services;
pub mod watch_cache;

pub use error::ObjectError;
use selectors::{FieldSelector, LabelSelector};

use crate::datastore::{Cas, Datastore, Stored};
use crate::registry::{NAMESPACES, ResourceInfo};
use watch_cache::WatchCaches;

/// How often a precondition-free read-modify-write retries a lost race before giving up.
const MAX_CAS_ATTEMPTS: usize = 64;

/// Options of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: Option<LabelSelector>,
    pub field_selector: Option<FieldSelector>,
    /// Page size (0 = everything).
    pub limit: i64,
    /// Continue token from a previous page.
    pub continue_token: Option<String>,
}

/// A list result.
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// A list result with undecoded items.
#[derive(Debug, Clone)]
pub struct RawListResult {
    pub items: Vec<Stored>,
    pub resource_version: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

impl RawListResult {
    /// The items decoded.
    pub fn decoded(self, info: &ResourceInfo) -> Result<ListResult, ObjectError> {
        Ok(ListResult {
            items: self
                .items
                .iter()
                .map(|kv| decode(info, kv))
                .collect::<Result<_, _>>()?,
            resource_version: self.resource_version,
            continue_token: self.continue_token,
            remaining: self.remaining,
        })
    }
}

/// The stored JSON of an object with its `resourceVersion` spliced in, without parsing it. The
/// daemon stores objects with serde_json's sorted keys, so the top-level `"metadata":{` comes
/// right after `apiVersion` and `kind`; anything unexpected (including an object stored in
/// another version than the one served) falls back to decode + encode.
pub fn encode_item(info: &ResourceInfo, kv: &Stored) -> Result<Vec<u8>, ObjectError> {
    let mut out = Vec::with_capacity(kv.value.len() + 32);
    write_item(info, kv, &mut out)?;
    Ok(out)
}

/// [`encode_item`], appended to `out` (a list body), with no copy of its own.
pub fn write_item(info: &ResourceInfo, kv: &Stored, out: &mut Vec<u8>) -> Result<(), ObjectError> {
    const META: &[u8] = b"\"metadata\":{";
    let v = &kv.value;
    let served_version = format!("{{\"apiVersion\":\"{}\",", info.api_version());
    if v.starts_with(served_version.as_bytes())
        && let Some(pos) = v.windows(META.len()).position(|w| w == META)
        && !v[1..pos].contains(&b'{')
    {
        let at = pos + META.len();
        let empty = v.get(at) == Some(&b'}');
        let rv = format!(
            "\"resourceVersion\":\"{}\"{}",
            kv.mod_revision,
            if empty { "" } else { "," }
        );
        out.extend_from_slice(&v[..at]);
        out.extend_from_slice(rv.as_bytes());
        out.extend_from_slice(&v[at..]);
        return Ok(());
    }
    serde_json::to_writer(out, &decode(info, kv)?).expect("JSON values serialise");
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let json = serde_json::to_vec(&ContinueToken {
        rv,
        start: start.to_string(),
    })
    .expect("serialises");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Result<ContinueToken, ObjectError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ObjectError::BadRequest("invalid continue token".into()))
}

/// The stored object with its resourceVersion filled in.
pub fn decode(info: &ResourceInfo, kv: &Stored) -> Result<Value, ObjectError> {
    let mut v: Value =
        serde_json::from_slice(&kv.value).map_err(|source| ObjectError::Corrupt {
            resource: info.plural.to_string(),
            key: kv.key.clone(),
            source,
        })?;
    (info.from_storage)(&mut v);
    set_resource_version(&mut v, kv.mod_revision);
    Ok(v)
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(v: &mut Value, rev: i64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// `metadata.resourceVersion` as a revision, if present and numeric.
pub fn resource_version_of(v: &Value) -> Result<Option<i64>, ObjectError> {
    match v
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ObjectError::BadRequest(format!("invalid resourceVersion \"{s}\""))),
    }
}

fn encode(info: &ResourceInfo, v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    (info.to_storage)(&mut v);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&v).expect("JSON values serialise")
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A DeleteOptions `preconditions.uid` against the object: upstream's 409 when they differ.
pub fn check_uid(
    info: &ResourceInfo,
    name: &str,
    obj: &Value,
    uid: Option<&str>,
) -> Result<(), ObjectError> {
    let actual = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match uid {
        Some(uid) if uid != actual => Err(ObjectError::ConflictWith {
            resource: info.qualified_name(),
            name: name.to_string(),
            message: format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
            ),
        }),
        _ => Ok(()),
    }
}

/// Object storage.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Datastore,
    /// Lifetime (seconds) of objects of expiring kinds (Events), from `event-ttl`; without it
    /// they are stored without a lease.
    ttl: Option<i64>,
    /// This server's watch caches, when reads may be served from them (see
    /// [`Storage::cached`]).
    cache: Option<Arc<WatchCaches>>,
}

impl Storage {
    pub fn new(store: Datastore) -> Storage {
        Storage {
            store,
            ttl: None,
            cache: None,
        }
    }

    /// A handle writing through `caches`' fenced store and reading from the caches where that
    /// keeps every answer correct: a write's read of the current object (the compare-and-swap
    /// still decides, so a stale copy costs a retry, never a lost update) and the scans of
    /// [`Storage::scan`]. Scans wait (briefly, then read etcd) until the cache has applied
    /// this server's own acknowledged writes; a write's read does not, its swap checks it.
    /// Watches through [`Storage::datastore`] are served by the caches too
    /// ([`WatchCaches::serving_watches`]).
    pub fn cached(store: &Datastore, caches: Arc<WatchCaches>) -> Storage {
        Storage {
            store: caches.serving_watches(store),
            ttl: None,
            cache: Some(caches),
        }
    }

    /// The current stored object under `key` for a write, and whether it came from the watch
    /// cache (else etcd). With a resourceVersion `precondition` newer than the cached copy, the
    /// cache is behind the caller, so etcd answers; so it does for a key the cache lacks.
    async fn current(
        &self,
        info: &ResourceInfo,
        key: &str,
        precondition: Option<i64>,
    ) -> Result<(Option<Stored>, bool), ObjectError> {
        if let Some(kind) = self.cache.as_ref().and_then(|c| c.started(info))
            && let Some(Some(kv)) = kind.current_object(key)
            && precondition.is_none_or(|rv| kv.mod_revision >= rv)
        {
            return Ok((Some(kv), true));
        }
        Ok((self.store.get(key).await?.0, false))
    }

    /// Calls `f` on every stored object of `info` under `ns` (all namespaces when `None`) and
    /// returns the revision they reflect. With a cache (see [`Storage::cached`]) this is its
    /// in-memory copy, as an informer's store (never older than this server's own
    /// acknowledged writes); otherwise, or while the cache is not ready, one etcd range read.
    pub async fn scan<F>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut f: F,
    ) -> Result<i64, ObjectError>
    where
        F: FnMut(&Stored),
    {
        if let Some(kind) = self.cache.as_ref().and_then(|c| c.started(info))
            && let Ok((items, revision)) = kind.snapshot(ns).await
        {
            for e in &items {
                f(&e.kv);
            }
            return Ok(revision);
        }
        let listed = self.list_stored(info, ns, &ListOptions::default()).await?;
        for kv in &listed.items {
            f(kv);
        }
        Ok(listed.resource_version)
    }

    /// Objects of expiring kinds written through this handle live `ttl` after their last write.
    pub fn with_ttl(mut self, ttl: std::time::Duration) -> Storage {
        self.ttl = Some((ttl.as_secs() as i64).max(1));
        self
    }

    /// A fresh lease for a write of `info`, when its objects expire.
    async fn lease_for(&self, info: &ResourceInfo) -> Result<Option<i64>, ObjectError> {
        match self.ttl {
            Some(ttl) if info.expires => Ok(Some(self.store.lease_grant(ttl).await?)),
            _ => Ok(None),
        }
    }

    pub fn datastore(&self) -> &Datastore {
        &self.store
    }

    fn not_found(info: &ResourceInfo, name: &str) -> ObjectError {
        ObjectError::NotFound {
            resource: info.qualified_name(),
            name: name.to_string(),
        }
    }

    /// Reads one object; `None` when it does not exist.
    pub async fn get_opt(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ObjectError> {
        let (kv, _) = self.store.get(&info.key(ns, name)).await?;
        kv.map(|kv| decode(info, &kv)).transpose()
    }

    /// Reads one object; 404 when it does not exist.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ObjectError> {
        self.get_opt(info, ns, name)
            .await?
            .ok_or_else(|| Self::not_found(info, name))
    }

    /// Creates an object (metadata is completed here: uid, timestamps, namespace, generation).
    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<Value, ObjectError> {
        self.create_with(info, ns, obj, false).await
    }

    /// [`Storage::create`], or with `dry_run` (`dryRun=All`) what it would store without
    /// writing: the object with its metadata completed and no resourceVersion; 409 when the
    /// name is taken, as the real create would answer (upstream's dry-run storage checks too).
    pub async fn create_with(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ObjectError> {
        metadata::prepare_create(info, &mut obj, ns, Utc::now());
        let name = name_of(&obj);
        let already_exists = || ObjectError::AlreadyExists {
            resource: info.qualified_name(),
            name: name.clone(),
        };
        if dry_run {
            return match self.get_opt(info, ns, &name).await? {
                Some(_) => Err(already_exists()),
                None => Ok(obj),
            };
        }
        let (key, value) = (info.key(ns, &name), encode(info, &obj));
        let written = match self.lease_for(info).await? {
            Some(lease) => self.store.create_with_lease(&key, value, lease).await?,
            None => self.store.create(&key, value).await?,
        };
        match written {
            Cas::Written(rev) => {
                set_resource_version(&mut obj, rev);
                Ok(obj)
            }
            Cas::Conflict(_) => Err(already_exists()),
        }
    }

    /// Read-modify-write with compare-and-swap. `f` edits the current object in place. With
    /// `precondition`, a stale revision is a 409; without, lost races are retried.
    pub async fn modify<F, E>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        f: F,
    ) -> Result<Value, E>
    where
        F: FnMut(&mut Value) -> Result<(), E>,
        E: From<ObjectError>,
    {
        self.modify_with(info, ns, name, precondition, false, f)
            .await
    }

    /// [`Storage::modify`], or with `dry_run` everything it does except the write: the answer
    /// is the object that would have been stored (with the current resourceVersion, as
    /// upstream's dry-run update answers).
    pub async fn modify_with<F, E>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        dry_run: bool,
        mut f: F,
    ) -> Result<Value, E>
    where
        F: FnMut(&mut Value) -> Result<(), E>,
        E: From<ObjectError>,
    {
        let key = info.key(ns, name);
        let conflict = || ObjectError::Conflict {
            resource: info.qualified_name(),
            name: name.to_string(),
        };
        let (mut current, mut cached) = self.current(info, &key, precondition).await?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let kv = current.ok_or_else(|| Self::not_found(info, name))?;
            if let Some(rv) = precondition
                && rv != kv.mod_revision
            {
                return Err(conflict().into());
            }
            let mut obj = decode(info, &kv)?;
            let before = obj.clone();
            let edited = f(&mut obj);
            // What the compare-and-swap does not check (an edit refused, or no change to
            // write) is decided on etcd's copy, never on a cached one that may be behind.
            if cached && (edited.is_err() || dry_run || obj == before) {
                (current, cached) = (
                    self.store.get(&key).await.map_err(ObjectError::from)?.0,
                    false,
                );
                continue;
            }
            edited?;
            // The new object must not rename or move itself.
            if name_of(&obj) != name {
                return Err(ObjectError::BadRequest(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(&obj)
                ))
                .into());
            }
            if dry_run || obj == before {
                return Ok(obj);
            }
            if finalized(info, &before, &obj) {
                // The update removed the last finalizer of an object being deleted: as upstream,
                // that update deletes it.
                match self
                    .store
                    .delete(&key, Some(kv.mod_revision))
                    .await
                    .map_err(ObjectError::from)?
                {
                    Cas::Written(_) => return Ok(obj),
                    Cas::Conflict(now) => {
                        if precondition.is_some() {
                            return Err(conflict().into());
                        }
                        (current, cached) = (now, false);
                        continue;
                    }
                }
            }
            let value = encode(info, &obj);
            let written = match self.lease_for(info).await? {
                Some(lease) => self
                    .store
                    .update_with_lease(&key, value, kv.mod_revision, lease)
                    .await
                    .map_err(ObjectError::from)?,
                None => self
                    .store
                    .update(&key, value, kv.mod_revision)
                    .await
                    .map_err(ObjectError::from)?,
            };
            match written {
                Cas::Written(rev) => {
                    set_resource_version(&mut obj, rev);
                    return Ok(obj);
                }
                Cas::Conflict(now) => {
                    if precondition.is_some() {
                        return Err(conflict().into());
                    }
                    (current, cached) = (now, false);
                }
            }
        }
        Err(conflict().into())
    }

    /// Deletes an object, optionally only if its uid / resourceVersion match.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        uid: Option<&str>,
        resource_version: Option<i64>,
    ) -> Result<Value, ObjectError> {
        self.delete_with(info, ns, name, uid, resource_version, false)
            .await
    }

    /// [`Storage::delete`], or with `dry_run` its checks (existence, preconditions) without the
    /// delete; the answer is the object that would have been deleted.
    pub async fn delete_with(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        uid: Option<&str>,
        resource_version: Option<i64>,
        dry_run: bool,
    ) -> Result<Value, ObjectError> {
        let key = info.key(ns, name);
        let conflict = || ObjectError::Conflict {
            resource: info.qualified_name(),
            name: name.to_string(),
        };
        // Deletes are rare: they read etcd, so the uid precondition is never checked against
        // a cached copy that may be behind.
        let (mut current, _) = self.store.get(&key).await?;
        // As upstream's conditional delete: a write that lands between the read and the delete
        // is not the caller's conflict unless it breaks their preconditions, so the delete is
        // retried against the new object (a Node's heartbeat must not fail `kubectl delete`).
        for _ in 0..MAX_CAS_ATTEMPTS {
            let kv = current.ok_or_else(|| Self::not_found(info, name))?;
            let obj = decode(info, &kv)?;
            check_uid(info, name, &obj, uid)?;
            if let Some(rv) = resource_version
                && rv != kv.mod_revision
            {
                return Err(ObjectError::ConflictWith {
                    resource: info.qualified_name(),
                    name: name.to_string(),
                    message: format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                });
            }
            if has_finalizers(info, &obj) {
                // Finalizers hold the object: DELETE only marks it, and the update that removes
                // the last finalizer deletes it (see `modify_with`).
                let mut marked = obj;
                let meta = &mut marked["metadata"];
                if meta["deletionTimestamp"].is_null() {
                    meta["deletionTimestamp"] =
                        json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
                }
                meta["deletionGracePeriodSeconds"] = json!(0);
                if dry_run {
                    return Ok(marked);
                }
                match self
                    .store
                    .update(&key, encode(info, &marked), kv.mod_revision)
                    .await?
                {
                    Cas::Written(rev) => {
                        set_resource_version(&mut marked, rev);
                        return Ok(marked);
                    }
                    Cas::Conflict(now) => current = now,
                }
                continue;
            }
            if dry_run {
                return Ok(obj);
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await? {
                Cas::Written(_) => return Ok(obj),
                Cas::Conflict(now) => current = now,
            }
        }
        Err(conflict())
    }

    /// Lists objects (all namespaces when `ns` is `None`), filtered by selectors, paginated.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, ObjectError> {
        self.list_stored(info, ns, opts).await?.decoded(info)
    }

    /// Like [`Storage::list`], but returns the stored values undecoded, so a plain list can be
    /// answered without parsing every object (see [`encode_item`]). Objects are decoded only
    /// to evaluate selectors.
    pub async fn list_stored(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<RawListResult, ObjectError> {
        let filtering = opts.label_selector.is_some() || opts.field_selector.is_some();
        let matches = |kv: &Stored| -> Result<bool, ObjectError> {
            if !filtering {
                return Ok(true);
            }
            let v = decode(info, kv)?;
            Ok(opts
                .label_selector
                .as_ref()
                .is_none_or(|s| s.matches_object(&v))
                && opts.field_selector.as_ref().is_none_or(|s| s.matches(&v)))
        };
        // A metadata.name field selector reads one key instead of the range.
        if let Some(name) = opts.field_selector.as_ref().and_then(|f| f.single_name())
            && (!info.namespaced || ns.is_some())
        {
            let (kv, rev) = self.store.get(&info.key(ns, name)).await?;
            let mut items = Vec::new();
            if let Some(kv) = kv
                && matches(&kv)?
            {
                items.push(kv);
            }
            return Ok(RawListResult {
                items,
                resource_version: rev,
                continue_token: None,
                remaining: None,
            });
        }
        let prefix = info.list_prefix(ns);
        let (mut start, mut revision) = match &opts.continue_token {
            Some(t) => {
                let c = decode_continue(t)?;
                if !c.start.starts_with(&prefix) {
                    return Err(ObjectError::BadRequest(
                        "continue token does not belong to this list".into(),
                    ));
                }
                (Some(c.start), c.rv)
            }
            None => (None, 0),
        };
        let mut items = Vec::new();
        loop {
            let want = if opts.limit > 0 {
                opts.limit - items.len() as i64
            } else {
                0
            };
            let page = self
                .store
                .list(&prefix, start.as_deref(), want, revision)
                .await?;
            if revision == 0 {
                revision = page.revision;
            }
            let last_key = page.items.last().map(|kv| kv.key.clone());
            let remaining = page.remaining;
            let more = page.more;
            for kv in page.items {
                if matches(&kv)? {
                    items.push(kv);
                }
            }
            let full = opts.limit > 0 && items.len() as i64 >= opts.limit;
            if !more {
                return Ok(RawListResult {
                    items,
                    resource_version: revision,
                    continue_token: None,
                    remaining: None,
                });
            }
            if full {
                let last = last_key.unwrap_or_default();
                return Ok(RawListResult {
                    items,
                    resource_version: revision,
                    continue_token: Some(encode_continue(revision, &last)),
                    remaining: (!filtering).then_some(remaining),
                });
            }
            start = last_key;
        }
    }

    /// The current store revision (for lists of resources that are never stored).
    pub async fn revision(&self) -> Result<i64, ObjectError> {
        Ok(self.store.revision().await?)
    }
}

/// `metadata.finalizers` of an object.
fn metadata_finalizers(obj: &Value) -> &[Value] {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether finalizers hold `obj` when it is deleted. Namespaces keep their own lifecycle
/// (`namespaces`: their content goes first), so the generic rule leaves them alone.
fn has_finalizers(info: &ResourceInfo, obj: &Value) -> bool {
    *info != NAMESPACES && !metadata_finalizers(obj).is_empty()
}

/// Whether an update from `before` to `after` removed the last finalizer of an object being
/// deleted with nothing left to wait for (a pod still terminating gracefully keeps its
/// `deletionGracePeriodSeconds` and is finished by its node, as upstream).
fn finalized(info: &ResourceInfo, before: &Value, after: &Value) -> bool {
    *info != NAMESPACES
        && !metadata_finalizers(before).is_empty()
        && metadata_finalizers(after).is_empty()
        && metadata::is_deleting(after)
        && after
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| g == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose first conditional delete loses a race to another write of its key.
    fn racing_storage() -> Storage {
        let memory = crate::datastore::memory::MemoryStore::new();
        memory.race_next_delete();
        Storage::new(Datastore::from_impl(memory))
    }

    #[tokio::test]
    async fn a_write_between_read_and_delete_is_not_the_callers_conflict() {
        let store = racing_storage();
        let info = crate::registry::lookup("", "v1", "nodes").unwrap();
        let node =
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "s3"}});
        store.create(info, None, node).await.unwrap();
        store.delete(info, None, "s3", None, None).await.unwrap();
        let gone = store.get(info, None, "s3").await;
        assert!(
            matches!(gone, Err(ObjectError::NotFound { .. })),
            "{gone:?}"
        );
    }

    #[tokio::test]
    async fn a_write_between_read_and_delete_breaks_a_resource_version_precondition() {
        let store = racing_storage();
        let info = crate::registry::lookup("", "v1", "nodes").unwrap();
        let node =
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "s3"}});
        let created = store.create(info, None, node).await.unwrap();
        let rv: i64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let err = store.delete(info, None, "s3", None, Some(rv)).await;
        assert!(
            matches!(err, Err(ObjectError::ConflictWith { .. })),
            "{err:?}"
        );
        assert!(store.get(info, None, "s3").await.is_ok());
    }

    /// A store with started watch caches: the memory store to write behind the caches' back
    /// (as another server would), and a cached handle over it once the Nodes are cached.
    async fn cached_storage() -> (
        Arc<crate::datastore::memory::MemoryStore>,
        Storage,
        tokio_util::sync::DropGuard,
    ) {
        let memory = crate::datastore::memory::MemoryStore::new();
        let ds = Datastore::from_impl(memory.clone());
        let cancel = tokio_util::sync::CancellationToken::new();
        let caches = Arc::new(WatchCaches::new(cancel.clone(), Default::default()));
        caches.start_all(&ds);
        let store = Storage::cached(&ds, caches.clone());
        let nodes = caches.started(&crate::registry::NODES).unwrap();
        while nodes.stats().revision == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        (memory, store, cancel.drop_guard())
    }

    fn label(obj: &Value) -> &str {
        obj["metadata"]["labels"]["l"].as_str().unwrap_or_default()
    }

    /// Another server's write the cache has not applied yet (no await in between lets the
    /// cache task run).
    async fn write_behind(memory: &crate::datastore::memory::MemoryStore, name: &str, l: &str) {
        use crate::datastore::KvStore as _;
        let key = crate::registry::NODES.key(None, name);
        let (kv, _) = memory.get(&key).await.unwrap();
        let mut obj: Value = serde_json::from_slice(&kv.unwrap().value).unwrap();
        obj["metadata"]["labels"]["l"] = json!(l);
        memory
            .put(&key, serde_json::to_vec(&obj).unwrap())
            .await
            .unwrap();
    }

    async fn create_node(store: &Storage, name: &str) -> Value {
        let info = &crate::registry::NODES;
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"l": "1"}}});
        let created = store.create(info, None, node).await.unwrap();
        // The cache has the object once it answers a scan (fenced: our own write).
        let mut seen = false;
        store
            .scan(info, None, |kv| seen |= kv.key.ends_with(name))
            .await
            .unwrap();
        assert!(seen);
        created
    }

    #[tokio::test]
    async fn a_write_from_a_stale_cached_copy_loses_no_update() {
        let (memory, store, _guard) = cached_storage().await;
        create_node(&store, "n1").await;
        write_behind(&memory, "n1", "2").await;
        let out = store
            .modify(&crate::registry::NODES, None, "n1", None, |n| {
                n["metadata"]["annotations"] = json!({"a": "b"});
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        assert_eq!(label(&out), "2", "the retry edits the current object");
        assert_eq!(out["metadata"]["annotations"]["a"], "b");
        let stored = store
            .get(&crate::registry::NODES, None, "n1")
            .await
            .unwrap();
        assert_eq!(label(&stored), "2");
        assert_eq!(stored["metadata"]["annotations"]["a"], "b");
    }

    #[tokio::test]
    async fn an_edit_that_changes_nothing_on_a_stale_copy_is_checked_against_etcd() {
        let (memory, store, _guard) = cached_storage().await;
        create_node(&store, "n1").await;
        write_behind(&memory, "n1", "2").await;
        // Setting l=1 is a no-op on the cached copy but not on etcd's.
        let out = store
            .modify(&crate::registry::NODES, None, "n1", None, |n| {
                n["metadata"]["labels"]["l"] = json!("1");
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        assert_eq!(label(&out), "1");
        let stored = store
            .get(&crate::registry::NODES, None, "n1")
            .await
            .unwrap();
        assert_eq!(label(&stored), "1");
    }

    #[tokio::test]
    async fn an_edit_refused_on_a_stale_copy_is_decided_on_etcd() {
        let (memory, store, _guard) = cached_storage().await;
        create_node(&store, "n1").await;
        write_behind(&memory, "n1", "2").await;
        // Refused only when the label is still 1 (as an immutable-field check would be).
        let out = store
            .modify(&crate::registry::NODES, None, "n1", None, |n| {
                if label(n) == "1" {
                    return Err(ObjectError::BadRequest("still 1".into()));
                }
                n["metadata"]["labels"]["l"] = json!("3");
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(label(&out), "3");
    }

    #[tokio::test]
    async fn a_precondition_newer_than_the_cache_is_checked_against_etcd() {
        let (memory, store, _guard) = cached_storage().await;
        create_node(&store, "n1").await;
        write_behind(&memory, "n1", "2").await;
        use crate::datastore::KvStore as _;
        let (kv, _) = memory
            .get(&crate::registry::NODES.key(None, "n1"))
            .await
            .unwrap();
        let rv = kv.unwrap().mod_revision;
        let out = store
            .modify(&crate::registry::NODES, None, "n1", Some(rv), |n| {
                n["metadata"]["labels"]["l"] = json!("3");
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        assert_eq!(label(&out), "3");
        // A precondition older than the cached copy is a conflict.
        let err = store
            .modify(&crate::registry::NODES, None, "n1", Some(rv), |_| {
                Ok::<(), ObjectError>(())
            })
            .await;
        assert!(matches!(err, Err(ObjectError::Conflict { .. })), "{err:?}");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "/registry/minions/n7");
        let c = decode_continue(&t).unwrap();
        assert_eq!(c.rv, 42);
        assert_eq!(c.start, "/registry/minions/n7");
        assert!(decode_continue("%%%").is_err());
    }

    #[test]
    fn encode_item_splices_the_resource_version() {
        let info = crate::registry::lookup("", "v1", "nodes").unwrap();
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "b"}}, "spec": {}});
        let kv = Stored {
            key: "/registry/minions/n1".into(),
            value: encode(info, &obj).into(),
            mod_revision: 42,
            create_revision: 40,
        };
        let fast: Value = serde_json::from_slice(&encode_item(info, &kv).unwrap()).unwrap();
        assert_eq!(fast, decode(info, &kv).unwrap());
        let empty = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {}});
        let kv = Stored {
            value: encode(info, &empty).into(),
            ..kv
        };
        let fast: Value = serde_json::from_slice(&encode_item(info, &kv).unwrap()).unwrap();
        assert_eq!(fast["metadata"]["resourceVersion"], "42");
    }

    #[test]
    fn resource_version_is_not_stored() {
        let v = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        let bytes = encode(crate::registry::lookup("", "v1", "nodes").unwrap(), &v);
        assert!(
            !String::from_utf8(bytes)
                .unwrap()
                .contains("resourceVersion")
        );
        assert_eq!(resource_version_of(&v).unwrap(), Some(7));
    }

    #[tokio::test]
    async fn finalizers_hold_a_deleted_object_until_the_last_one_goes() {
        use crate::registry::CONFIGMAPS;
        let store = Storage::new(Datastore::from_impl(std::sync::Arc::new(
            crate::datastore::memory::MemoryStore::default(),
        )));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "namespace": "default",
                         "finalizers": ["example.com/a", "example.com/b"]}});
        store
            .create(&CONFIGMAPS, Some("default"), cm)
            .await
            .unwrap();
        let marked = store
            .delete(&CONFIGMAPS, Some("default"), "held", None, None)
            .await
            .unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        let drop_one = |name: &'static str| {
            move |o: &mut Value| {
                if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
                    f.retain(|x| x != name);
                }
                Ok::<(), ObjectError>(())
            }
        };
        // One finalizer left: still there.
        store
            .modify(
                &CONFIGMAPS,
                Some("default"),
                "held",
                None,
                drop_one("example.com/a"),
            )
            .await
            .unwrap();
        let still = store
            .get(&CONFIGMAPS, Some("default"), "held")
            .await
            .unwrap();
        assert_eq!(still["metadata"]["finalizers"], json!(["example.com/b"]));
        // The last one: the update deletes it.
        store
            .modify(
                &CONFIGMAPS,
                Some("default"),
                "held",
                None,
                drop_one("example.com/b"),
            )
            .await
            .unwrap();
        assert!(
            store
                .get_opt(&CONFIGMAPS, Some("default"), "held")
                .await
                .unwrap()
                .is_none()
        );
        // Without a deletion under way, removing finalizers is an ordinary update.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "live", "namespace": "default", "finalizers": ["example.com/a"]}});
        store
            .create(&CONFIGMAPS, Some("default"), cm)
            .await
            .unwrap();
        store
            .modify(
                &CONFIGMAPS,
                Some("default"),
                "live",
                None,
                drop_one("example.com/a"),
            )
            .await
            .unwrap();
        assert!(
            store
                .get_opt(&CONFIGMAPS, Some("default"), "live")
                .await
                .unwrap()
                .is_some()
        );
    }
}
