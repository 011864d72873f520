//! Server-owned metadata of a new object (uid, timestamps, generation, names from
//! `generateName`, per-kind create defaults), filled in by [`super::Storage::create`] for every
//! writer: the API server, controllers and the admin operations alike.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::registry::ResourceInfo;
use crate::registry::fields::{ensure_object, metadata_mut};

/// Upstream `utilrand.String` alphabet (no vowels, no look-alikes).
pub const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Upstream truncates `generateName` so prefix + 5 characters fit a 63-character label.
pub const MAX_GENERATE_PREFIX: usize = 58;

/// Whether the object has a deletion timestamp (it is going away).
pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// `generateName` plus five random characters, as upstream's `SimpleNameGenerator`.
pub fn generate_name(prefix: &str) -> String {
    let mut base = prefix.to_string();
    if base.len() > MAX_GENERATE_PREFIX {
        let mut cut = MAX_GENERATE_PREFIX;
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        base.truncate(cut);
    }
    let random = uuid::Uuid::new_v4();
    for b in &random.as_bytes()[..5] {
        base.push(NAME_ALPHABET[usize::from(*b) % NAME_ALPHABET.len()] as char);
    }
    base
}

/// Fills server-owned fields of a new object. Run after the API server's validation succeeded.
///
/// Sets `apiVersion`/`kind`, `metadata.uid` (v4), `creationTimestamp` (`now`, RFC 3339 seconds
/// `Z`), `generation: 1` (kinds with `spec`), the name from `generateName`, `metadata.namespace`
/// from `namespace` for namespaced kinds (cleared for cluster-scoped ones); drops client-set
/// `resourceVersion`, `deletionTimestamp`, `deletionGracePeriodSeconds`. Per kind, as upstream:
/// Namespace gets `status.phase: Active`, the `kubernetes` finalizer and the
/// `kubernetes.io/metadata.name` label; Secret folds `stringData` into `data` and defaults
/// `type: Opaque`; Pod starts with `status: {phase: Pending}`; Service with an empty status.
pub fn prepare_create(
    info: &ResourceInfo,
    obj: &mut Value,
    namespace: Option<&str>,
    now: DateTime<Utc>,
) {
    ensure_object(obj);
    obj["apiVersion"] = Value::String(info.api_version());
    obj["kind"] = Value::String(info.kind.to_string());
    let tracks = info.tracks_generation;
    let m = metadata_mut(obj);
    let has_name = m
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !has_name {
        let prefix = m
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !prefix.is_empty() {
            m.insert("name".into(), Value::String(generate_name(&prefix)));
        }
    }
    m.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    m.insert(
        "creationTimestamp".into(),
        Value::String(now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(k);
    }
    if tracks {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    if info.namespaced {
        if let Some(ns) = namespace.filter(|ns| !ns.is_empty()) {
            m.insert("namespace".into(), Value::String(ns.to_string()));
        }
    } else {
        m.remove("namespace");
    }

    (info.on_create)(obj);
}
