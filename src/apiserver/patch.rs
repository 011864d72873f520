//! PATCH bodies: which patch type a Content-Type names, and applying JSON patch (RFC 6902),
//! JSON merge patch (RFC 7386) and strategic merge patch to a stored object.
//!
//! Strategic merge patch is implemented without Go struct tags: maps merge and `null` deletes
//! as in RFC 7386, and lists are replaced (atomic) unless the kind's registry entry
//! ([`ResourceInfo::list_strategy`]) says the field merges by key (`status.conditions` by `type`,
//! containers by `name`, ...) or as a set
//! (`metadata.finalizers`). That covers kubectl's label/annotate/taint/cordon bodies (where
//! `spec.taints` is atomic) and kubelet-style status patches with partial `conditions` lists.
//!
//! Directives: `$patch: replace|delete` on maps and inside keyed lists, `$retainKeys`,
//! `$deleteFromPrimitiveList/<f>` and `$setElementOrder/<f>` are handled. Not supported:
//! `$setElementOrder` interleaving of server-only list items (they are kept after the ordered
//! ones, in their old order). Server-side apply (`application/apply-patch+yaml`) is
//! `super::apply`.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::status::{ApiError, FieldCause};
use crate::registry::{ListStrategy, ResourceInfo};

/// The patch types this server accepts, as listed in 415 answers.
pub const ACCEPTED_PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

/// Upstream's cap on the operations in one JSON patch (`maxJSONPatchOperations`); more is 413.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// Upstream's `JSONPatchMaxCopyBytes`: what the `copy` operations of one JSON patch may add in
/// total (serialized JSON); more is 422 with upstream's message.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;
/// The largest object (serialized JSON) any patch may produce: the request body limit, so a
/// patch can build nothing a PUT could not send (docs/limits.md). More is 413.
pub const MAX_PATCHED_BYTES: usize = super::objects::MAX_BODY_BYTES;

/// A PATCH request's type, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply): recognised but not implemented.
    Apply,
}

impl PatchKind {
    /// Maps a Content-Type header (parameters such as `; charset=utf-8` ignored, case-insensitive)
    /// to a patch kind. Unknown types and server-side apply are 415 UnsupportedMediaType listing
    /// [`ACCEPTED_PATCH_TYPES`].
    pub fn from_content_type(content_type: &str) -> Result<PatchKind, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::StrategicMerge),
            // Server-side apply is done by `apiserver::apply`, not by `apply_patch`.
            "application/apply-patch+yaml" => Ok(PatchKind::Apply),
            _ => Err(ApiError::UnsupportedMediaType(
                ACCEPTED_PATCH_TYPES.to_string(),
            )),
        }
    }

    /// The canonical Content-Type of this kind.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchKind::Json => "application/json-patch+json",
            PatchKind::Merge => "application/merge-patch+json",
            PatchKind::StrategicMerge => "application/strategic-merge-patch+json",
            PatchKind::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Applies a PATCH body to `original` and returns the patched object. Nothing is validated
/// beyond the patch itself: the caller runs `objects::validate_body` on the result (which also
/// catches a patch that changed `metadata.name`, as upstream's `checkName`).
///
/// Errors, as upstream: malformed JSON or a patch of the wrong shape → 400 BadRequest with the
/// parser's message; a JSON patch operation that fails (`test` mismatch, missing path) → 422;
/// `$retainKeys` not covering the patch → 422; [`PatchKind::Apply`] → 415. Limits: more than
/// [`MAX_JSON_PATCH_OPERATIONS`] → 413; `copy` operations adding more than
/// [`MAX_JSON_PATCH_COPY_BYTES`] → 422; a result larger than [`MAX_PATCHED_BYTES`] → 413
/// (checked after every JSON-patch operation, and on the result of every kind).
pub fn apply_patch(
    info: &ResourceInfo,
    kind: PatchKind,
    original: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    apply_unchecked(info, kind, original, body).and_then(check_result_size)
}

fn apply_unchecked(
    info: &ResourceInfo,
    kind: PatchKind,
    original: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => apply_json_patch(original, body),
        PatchKind::Merge => {
            let patch = parse_object(body)?;
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchKind::StrategicMerge => {
            let patch = parse_object(body)?;
            let (Value::Object(orig), Value::Object(patch)) = (original, &patch) else {
                return Err(ApiError::BadRequest(
                    "strategic merge patch needs a JSON object on both sides".into(),
                ));
            };
            let mut doc = orig.clone();
            let outcome =
                merge_map(info, &mut doc, patch, "").map_err(|e| name_object(e, original))?;
            match outcome {
                MapOutcome::Merged => Ok(Value::Object(doc)),
                MapOutcome::Replaced(m) => Ok(Value::Object(m)),
            }
        }
        PatchKind::Apply => Err(ApiError::UnsupportedMediaType(
            ACCEPTED_PATCH_TYPES.to_string(),
        )),
    }
}

/// The resourceVersion the patch itself demands, if any.
///
/// A patch is applied to the current object, so the patched object carries the current
/// `metadata.resourceVersion` unless the patch set one (kubectl `--resource-version` sends
/// `{"metadata":{"resourceVersion":"1001"}}`; a JSON patch may `replace` it). Upstream treats such
/// a value as a precondition. So: `Some(rv)` when the patched object's resourceVersion is set and
/// differs from `original`'s — the server answers 409 Conflict (the patch is stale). `None` means
/// no precondition beyond the current object: the server should store with an etcd
/// compare-and-swap on the revision it read and, on a lost race, re-read and re-apply the patch.
/// A patch that repeats the current RV gives `None` the first time and `Some` on a retry after a
/// concurrent write, which is exactly upstream's semantics.
pub fn patch_resource_version(original: &Value, patched: &Value) -> Option<String> {
    let rv = |v: &Value| {
        v.get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let want = rv(patched)?;
    if rv(original).as_deref() == Some(want.as_str()) {
        None
    } else {
        Some(want)
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let v = parse_json(body)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::BadRequest(
            "the patch must be a JSON object".to_string(),
        ))
    }
}

/// 422 for a patch that is well-formed but cannot be applied to this object.
fn unprocessable(original: &Value, message: String) -> ApiError {
    name_object(
        ApiError::Invalid {
            kind: String::new(),
            name: String::new(),
            causes: vec![FieldCause {
                field: "patch".into(),
                message,
            }],
        },
        original,
    )
}

/// Fills the kind and name of an `Invalid` error raised deep in the merge from the object.
fn name_object(err: ApiError, original: &Value) -> ApiError {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    match err {
        ApiError::Invalid { kind, name, causes } if kind.is_empty() && name.is_empty() => {
            ApiError::Invalid {
                kind: s(original.get("kind")),
                name: s(original.get("metadata").and_then(|m| m.get("name"))),
                causes,
            }
        }
        other => other,
    }
}

fn apply_json_patch(original: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let raw = parse_json(body)?;
    let count = match &raw {
        Value::Array(ops) => ops.len(),
        _ => {
            return Err(ApiError::BadRequest(
                "a JSON patch must be an array of operations".into(),
            ));
        }
    };
    if count > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::RequestEntityTooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {count}"
        )));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut doc = original.clone();
    // The document's size is tracked op by op: a `copy` of a subtree into itself doubles it,
    // so a few kilobytes of patch would otherwise build gigabytes before any check ran.
    let mut size = serialized_size(&doc, usize::MAX);
    let mut copied = 0usize;
    for (i, op) in patch.iter().enumerate() {
        use json_patch::PatchOperation as Op;
        let removed = |doc: &Value, path: &str| {
            doc.pointer(path)
                .map_or(0, |v| serialized_size(v, usize::MAX))
        };
        match op {
            Op::Add(a) => size += serialized_size(&a.value, usize::MAX),
            Op::Replace(r) => {
                size = (size + serialized_size(&r.value, usize::MAX))
                    .saturating_sub(removed(&doc, r.path.as_str()));
            }
            Op::Remove(r) => size = size.saturating_sub(removed(&doc, r.path.as_str())),
            Op::Copy(c) => {
                if let Some(from) = doc.pointer(c.from.as_str()) {
                    // Measured only up to what the budget allows: the cost of the check is
                    // bounded like the copies themselves.
                    let budget = MAX_JSON_PATCH_COPY_BYTES - copied;
                    let n = serialized_size(from, budget);
                    copied += n;
                    size += n;
                    if n > budget {
                        return Err(unprocessable(
                            original,
                            format!(
                                "Unable to complete the copy, the accumulated size increase of copy is {copied}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}"
                            ),
                        ));
                    }
                }
            }
            Op::Move(_) | Op::Test(_) => {}
        }
        if size > MAX_PATCHED_BYTES {
            return Err(too_large_result(Some(i)));
        }
        // One operation at a time on our own copy: a failure leaves nothing half-applied
        // outside, so the library's undo log (another copy of every change) is not needed.
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).map_err(|e| {
            unprocessable(
                original,
                format!("operation '/{i}' failed at path '{}': {}", e.path, e.kind),
            )
        })?;
    }
    Ok(doc)
}

/// 413 for a patch whose result would exceed [`MAX_PATCHED_BYTES`].
fn too_large_result(operation: Option<usize>) -> ApiError {
    let at = operation
        .map(|i| format!(" (at operation {i})"))
        .unwrap_or_default();
    ApiError::RequestEntityTooLarge(format!(
        "the patched object would be larger than {MAX_PATCHED_BYTES} bytes{at}"
    ))
}

/// The JSON-serialized size of `v`, counting no further than just past `limit`.
pub fn serialized_size(v: &Value, limit: usize) -> usize {
    struct Counter {
        n: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n = self.n.saturating_add(buf.len());
            if self.n > self.limit {
                // Stops serde_json at once; the caller only needs "more than limit".
                return Err(std::io::Error::other("limit reached"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter { n: 0, limit };
    let _ = serde_json::to_writer(&mut c, v);
    c.n
}

/// The final size check every patch kind passes: merge and strategic-merge patches cannot grow
/// an object beyond the original plus the body, so checking the result once bounds them.
fn check_result_size(doc: Value) -> Result<Value, ApiError> {
    if serialized_size(&doc, MAX_PATCHED_BYTES) > MAX_PATCHED_BYTES {
        return Err(too_large_result(None));
    }
    Ok(doc)
}

// ------------------------------------------------------------------------------------------------
// Strategic merge patch
// ------------------------------------------------------------------------------------------------

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList/";

enum MapOutcome {
    /// `orig` was merged in place.
    Merged,
    /// `$patch: replace` or `$patch: delete`: the map is this value instead.
    Replaced(Map<String, Value>),
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A patch subtree applied where the original has nothing: directives resolved, nulls dropped.
fn fresh_map(
    info: &ResourceInfo,
    patch: &Map<String, Value>,
    path: &str,
) -> Result<Map<String, Value>, ApiError> {
    let mut m = Map::new();
    Ok(match merge_map(info, &mut m, patch, path)? {
        MapOutcome::Merged => m,
        MapOutcome::Replaced(r) => r,
    })
}

fn merge_map(
    info: &ResourceInfo,
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &str,
) -> Result<MapOutcome, ApiError> {
    if let Some(d) = patch.get(DIRECTIVE) {
        return match d.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                Ok(MapOutcome::Replaced(fresh_map(info, &rest, path)?))
            }
            // Upstream: a deleted map becomes an empty map.
            Some("delete") => Ok(MapOutcome::Replaced(Map::new())),
            _ => Err(ApiError::BadRequest(format!(
                "Unknown patch type: {d} in map: {}",
                Value::Object(patch.clone())
            ))),
        };
    }

    let retain = match patch.get(RETAIN_KEYS) {
        None => None,
        Some(Value::Array(keys)) => {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                match k.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => {
                        return Err(ApiError::BadRequest(
                            "invalid patch: $retainKeys must be a list of strings".into(),
                        ));
                    }
                }
            }
            Some(out)
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "invalid patch: $retainKeys must be a list of strings".into(),
            ));
        }
    };

    // Deletions from primitive lists go first, so a patch that also adds to the list wins.
    for (k, v) in patch {
        let Some(field) = k.strip_prefix(DELETE_PRIMITIVE_PREFIX) else {
            continue;
        };
        let Value::Array(gone) = v else {
            return Err(ApiError::BadRequest(format!(
                "invalid patch: {k} must be a list"
            )));
        };
        if let Some(Value::Array(list)) = orig.get_mut(field) {
            let gone: HashSet<String> = gone.iter().map(Value::to_string).collect();
            list.retain(|x| !gone.contains(&x.to_string()));
        }
    }

    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == DIRECTIVE || k == RETAIN_KEYS || k.starts_with(DELETE_PRIMITIVE_PREFIX) {
            continue;
        }
        if let Some(field) = k.strip_prefix(SET_ORDER_PREFIX) {
            match v {
                Value::Array(order) => orders.push((field, order)),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid patch: {k} must be a list"
                    )));
                }
            }
            continue;
        }
        let sub = join(path, k);
        match v {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                let merged = match orig.get_mut(k) {
                    Some(Value::Object(om)) => match merge_map(info, om, pm, &sub)? {
                        MapOutcome::Merged => None,
                        MapOutcome::Replaced(r) => Some(r),
                    },
                    _ => Some(fresh_map(info, pm, &sub)?),
                };
                if let Some(m) = merged {
                    orig.insert(k.clone(), Value::Object(m));
                }
            }
            Value::Array(pl) => {
                let old = match orig.remove(k) {
                    Some(Value::Array(l)) => l,
                    _ => Vec::new(),
                };
                let merged = merge_list(info, old, pl, &sub)?;
                orig.insert(k.clone(), Value::Array(merged));
            }
            scalar => {
                orig.insert(k.clone(), scalar.clone());
            }
        }
    }

    for (field, order) in orders {
        if let Some(Value::Array(list)) = orig.get_mut(field) {
            let strategy = info.list_strategy(&join(path, field));
            reorder(list, order, strategy);
        }
    }

    if let Some(keys) = retain {
        let keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
        for k in patch.keys() {
            if k.starts_with('$') {
                continue;
            }
            if !keys.contains(k.as_str()) {
                return Err(ApiError::Invalid {
                    kind: String::new(),
                    name: String::new(),
                    causes: vec![FieldCause {
                        field: join(path, k),
                        message: "patch content doesn't match retainKeys list".into(),
                    }],
                });
            }
        }
        orig.retain(|k, _| keys.contains(k.as_str()));
    }
    Ok(MapOutcome::Merged)
}

fn merge_list(
    info: &ResourceInfo,
    old: Vec<Value>,
    patch: &[Value],
    path: &str,
) -> Result<Vec<Value>, ApiError> {
    match info.list_strategy(path) {
        ListStrategy::Atomic => Ok(patch.to_vec()),
        ListStrategy::MergePrimitive => {
            // Hashed by serialized form: a long list must not cost a quadratic scan.
            let mut seen: HashSet<String> = old.iter().map(Value::to_string).collect();
            let mut out = old;
            for v in patch {
                if seen.insert(v.to_string()) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::MergeByKey(key) => merge_keyed_list(info, old, patch, key, path),
    }
}

fn directive_of(v: &Value) -> Option<&str> {
    v.get(DIRECTIVE).and_then(Value::as_str)
}

fn merge_keyed_list(
    info: &ResourceInfo,
    out: Vec<Value>,
    patch: &[Value],
    key: &str,
    path: &str,
) -> Result<Vec<Value>, ApiError> {
    // `{"$patch": "replace"}` as an element replaces the whole list with the other elements.
    if patch.iter().any(|e| directive_of(e) == Some("replace")) {
        let mut fresh = Vec::new();
        for e in patch.iter().filter(|e| directive_of(e) != Some("replace")) {
            match e {
                Value::Object(m) => fresh.push(Value::Object(fresh_map(info, m, path)?)),
                other => fresh.push(other.clone()),
            }
        }
        return Ok(fresh);
    }
    // Elements are found through an index by serialized merge-key value (a long patch list
    // must not cost a scan of the list per element); deleted ones become holes until the end.
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, o) in out.iter().enumerate() {
        if let Some(kv) = o.get(key) {
            index.entry(kv.to_string()).or_default().push(i);
        }
    }
    let mut out: Vec<Option<Value>> = out.into_iter().map(Some).collect();
    for e in patch {
        let Value::Object(pm) = e else {
            return Err(ApiError::BadRequest(format!(
                "invalid patch: {path}: list elements must be objects with merge key {key:?}"
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(ApiError::BadRequest(format!(
                "map: {e} does not contain declared merge key: {key}"
            )));
        };
        let kv = kv.to_string();
        match directive_of(e) {
            Some("delete") => {
                for i in index.remove(&kv).unwrap_or_default() {
                    out[i] = None;
                }
                continue;
            }
            Some("merge") | None => {}
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "Unknown patch type: {other} in list element: {e}"
                )));
            }
        }
        let mut pm = pm.clone();
        pm.remove(DIRECTIVE);
        match index.get(&kv).and_then(|p| p.first()).copied() {
            Some(i) => {
                let replaced = match &mut out[i] {
                    Some(Value::Object(om)) => match merge_map(info, om, &pm, path)? {
                        MapOutcome::Merged => None,
                        MapOutcome::Replaced(r) => Some(r),
                    },
                    _ => Some(fresh_map(info, &pm, path)?),
                };
                if let Some(r) = replaced {
                    out[i] = Some(Value::Object(r));
                }
            }
            None => {
                index.entry(kv).or_default().push(out.len());
                out.push(Some(Value::Object(fresh_map(info, &pm, path)?)));
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Applies `$setElementOrder`: listed elements first, in the given order; the rest after, in
/// their previous order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    // First position of each entry of `order`, by serialized key (or value): no scan of
    // `order` per element.
    let identity = |v: &Value| -> Option<String> {
        match strategy {
            ListStrategy::MergeByKey(key) => v.get(key).map(Value::to_string),
            _ => Some(v.to_string()),
        }
    };
    let mut positions: HashMap<String, usize> = HashMap::new();
    for (i, o) in order.iter().enumerate() {
        if let Some(id) = identity(o) {
            positions.entry(id).or_insert(i);
        }
    }
    let rank = |v: &Value| -> usize {
        identity(v)
            .and_then(|id| positions.get(&id).copied())
            .unwrap_or(usize::MAX)
    };
    let mut ranked: Vec<(usize, Value)> = list.drain(..).map(|v| (rank(&v), v)).collect();
    // Stable: unlisted elements keep their relative order.
    ranked.sort_by_key(|(r, _)| *r);
    list.extend(ranked.into_iter().map(|(_, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{NODES, PODS, SERVICES};
    use serde_json::json;

    fn node() -> Value {
        json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": "n1", "resourceVersion": "1001",
                         "labels": {"a": "1", "keep": "yes"},
                         "finalizers": ["x"]},
            "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady"}
            ]}
        })
    }

    #[test]
    fn content_types() {
        let cases: &[(&str, Option<PatchKind>)] = &[
            ("application/json-patch+json", Some(PatchKind::Json)),
            ("application/merge-patch+json", Some(PatchKind::Merge)),
            (
                "application/merge-patch+json; charset=utf-8",
                Some(PatchKind::Merge),
            ),
            (
                "Application/Strategic-Merge-Patch+JSON",
                Some(PatchKind::StrategicMerge),
            ),
            ("application/apply-patch+yaml", Some(PatchKind::Apply)),
            ("application/json", None),
            ("", None),
        ];
        for (ct, want) in cases {
            match (PatchKind::from_content_type(ct), want) {
                (Ok(k), Some(w)) => assert_eq!(k, *w, "{ct}"),
                (Err(e), None) => {
                    assert_eq!(e.code(), 415, "{ct}");
                    assert!(e.to_string().contains("application/merge-patch+json"));
                }
                (got, _) => panic!("{ct}: {got:?}"),
            }
        }
        assert_eq!(
            PatchKind::from_content_type(PatchKind::Json.content_type()),
            Ok(PatchKind::Json)
        );
    }

    /// The bodies kubectl 1.32 sends (docs §A.5) and what they must produce.
    #[test]
    fn kubectl_bodies() {
        let cases: &[(PatchKind, &str, &str, Value)] = &[
            (
                PatchKind::Merge,
                r#"{"metadata":{"labels":{"b":"2"}}}"#,
                "/metadata/labels",
                json!({"a": "1", "keep": "yes", "b": "2"}),
            ),
            (
                PatchKind::Merge,
                r#"{"metadata":{"labels":{"a":null}}}"#,
                "/metadata/labels",
                json!({"keep": "yes"}),
            ),
            (
                PatchKind::StrategicMerge,
                r#"{"spec":{"taints":[{"effect":"NoExecute","key":"k2","value":"v2"},{"effect":"NoSchedule","key":"k","value":"v"}]}}"#,
                "/spec/taints",
                json!([{"effect":"NoExecute","key":"k2","value":"v2"},{"effect":"NoSchedule","key":"k","value":"v"}]),
            ),
            (
                PatchKind::StrategicMerge,
                r#"{"spec":{"taints":[{"effect":"NoExecute","key":"k2"}]}}"#,
                "/spec/taints",
                json!([{"effect":"NoExecute","key":"k2"}]),
            ),
            (
                PatchKind::StrategicMerge,
                r#"{"spec":{"taints":null}}"#,
                "/spec",
                json!({}),
            ),
            (
                PatchKind::StrategicMerge,
                r#"{"spec":{"unschedulable":true}}"#,
                "/spec/unschedulable",
                json!(true),
            ),
            (
                PatchKind::StrategicMerge,
                r#"{"metadata":{"annotations":{"x":"y"}}}"#,
                "/metadata/annotations",
                json!({"x": "y"}),
            ),
            (
                PatchKind::Json,
                r#"[{"op":"add","path":"/metadata/labels/c","value":"3"}]"#,
                "/metadata/labels/c",
                json!("3"),
            ),
            (
                PatchKind::Json,
                r#"[{"op":"test","path":"/metadata/labels/a","value":"1"},{"op":"remove","path":"/metadata/labels/a"}]"#,
                "/metadata/labels",
                json!({"keep": "yes"}),
            ),
        ];
        for (kind, body, ptr, want) in cases {
            let out = apply_patch(&NODES, *kind, &node(), body.as_bytes())
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(out.pointer(ptr), Some(want), "{body}");
            // Nothing else moved.
            assert_eq!(out["metadata"]["name"], "n1", "{body}");
        }
        let uncordoned = apply_patch(
            &NODES,
            PatchKind::StrategicMerge,
            &apply_patch(
                &NODES,
                PatchKind::StrategicMerge,
                &node(),
                br#"{"spec":{"unschedulable":true}}"#,
            )
            .unwrap(),
            br#"{"spec":{"unschedulable":null}}"#,
        )
        .unwrap();
        assert!(uncordoned["spec"].get("unschedulable").is_none());
    }

    #[test]
    fn errors() {
        let cases: &[(PatchKind, &str, u16)] = &[
            (PatchKind::Merge, "{not json", 400),
            (PatchKind::Merge, "[1]", 400),
            (PatchKind::StrategicMerge, "", 400),
            (
                PatchKind::StrategicMerge,
                r#"{"spec":{"$patch":"bogus"}}"#,
                400,
            ),
            (PatchKind::Json, r#"{"op":"add"}"#, 400),
            (PatchKind::Json, r#"[{"op":"frobnicate","path":"/a"}]"#, 400),
            (
                PatchKind::Json,
                r#"[{"op":"test","path":"/metadata/labels/a","value":"2"}]"#,
                422,
            ),
            (
                PatchKind::Json,
                r#"[{"op":"remove","path":"/metadata/nothing"}]"#,
                422,
            ),
            (
                PatchKind::Json,
                r#"[{"op":"replace","path":"/spec/taints/7","value":1}]"#,
                422,
            ),
            (PatchKind::Apply, "{}", 415),
            (
                PatchKind::StrategicMerge,
                r#"{"status":{"conditions":[{"status":"True"}]}}"#,
                400,
            ),
            (
                PatchKind::StrategicMerge,
                r#"{"spec":{"$retainKeys":["taints"],"unschedulable":true}}"#,
                422,
            ),
        ];
        for (kind, body, code) in cases {
            let e = apply_patch(&NODES, *kind, &node(), body.as_bytes()).expect_err(body);
            assert_eq!(e.code(), *code, "{body}: {e}");
        }
        let e = apply_patch(
            &NODES,
            PatchKind::Json,
            &node(),
            br#"[{"op":"test","path":"/metadata/labels/a","value":"2"}]"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("Node \"n1\" is invalid: patch: "),
            "{e}"
        );
        let e = apply_patch(&NODES, PatchKind::Merge, &node(), b"{\"a\":").unwrap_err();
        assert!(e.to_string().contains("EOF"), "serde's message: {e}");
    }

    #[test]
    fn strategic_merge_lists_and_directives() {
        // kubelet-style partial condition update with $setElementOrder.
        let body = r#"{"status":{"$setElementOrder/conditions":[{"type":"MemoryPressure"},{"type":"Ready"}],
            "conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}}"#;
        let out = apply_patch(&NODES, PatchKind::StrategicMerge, &node(), body.as_bytes()).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}
            ])
        );
        assert!(out["status"].get("$setElementOrder/conditions").is_none());

        let cases: &[(&str, &str, Value)] = &[
            // New keyed element appended; nulls inside it dropped.
            (
                r#"{"status":{"conditions":[{"type":"DiskPressure","status":"False","reason":null}]}}"#,
                "/status/conditions/2",
                json!({"type":"DiskPressure","status":"False"}),
            ),
            // Keyed delete.
            (
                r#"{"status":{"conditions":[{"type":"MemoryPressure","$patch":"delete"}]}}"#,
                "/status/conditions",
                json!([{"type": "Ready", "status": "True", "reason": "KubeletReady"}]),
            ),
            // Keyed list replace.
            (
                r#"{"status":{"conditions":[{"type":"X","status":"True"},{"$patch":"replace"}]}}"#,
                "/status/conditions",
                json!([{"type":"X","status":"True"}]),
            ),
            // Reorder only.
            (
                r#"{"status":{"$setElementOrder/conditions":[{"type":"Ready"},{"type":"MemoryPressure"}]}}"#,
                "/status/conditions/0/type",
                json!("Ready"),
            ),
            // Map replace and delete.
            (
                r#"{"metadata":{"labels":{"$patch":"replace","z":"1","gone":null}}}"#,
                "/metadata/labels",
                json!({"z": "1"}),
            ),
            (
                r#"{"metadata":{"labels":{"$patch":"delete"}}}"#,
                "/metadata/labels",
                json!({}),
            ),
            // Primitive merge list: union, and explicit deletion.
            (
                r#"{"metadata":{"finalizers":["y","x"]}}"#,
                "/metadata/finalizers",
                json!(["x", "y"]),
            ),
            (
                r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["x"]}}"#,
                "/metadata/finalizers",
                json!([]),
            ),
            (
                r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["x"],"finalizers":["z"]}}"#,
                "/metadata/finalizers",
                json!(["z"]),
            ),
            // $retainKeys drops everything not listed.
            (
                r#"{"spec":{"$retainKeys":["unschedulable"],"unschedulable":true}}"#,
                "/spec",
                json!({"unschedulable": true}),
            ),
            // New subtree with a keyed list.
            (
                r#"{"spec":{"containers":[{"name":"c","env":[{"name":"A","value":"1"}]}]}}"#,
                "/spec/containers/0/env/0/value",
                json!("1"),
            ),
        ];
        for (body, ptr, want) in cases {
            let out = apply_patch(&NODES, PatchKind::StrategicMerge, &node(), body.as_bytes())
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(out.pointer(ptr), Some(want), "{body}\n{out:#}");
        }

        let pod = json!({"spec":{"containers":[
            {"name":"a","image":"i1","env":[{"name":"X","value":"1"},{"name":"Y","value":"2"}]},
            {"name":"b","image":"i2"}]}});
        let out = apply_patch(
            &PODS,
            PatchKind::StrategicMerge,
            &pod,
            br#"{"spec":{"containers":[{"name":"a","env":[{"name":"Y","value":"3"}]}]}}"#,
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "i1");
        assert_eq!(out["spec"]["containers"][0]["env"][1]["value"], "3");
        assert_eq!(out["spec"]["containers"][1]["name"], "b");
    }

    #[test]
    fn resource_version_precondition() {
        let n = node();
        let cases: &[(PatchKind, &str, Option<&str>)] = &[
            (
                PatchKind::Merge,
                r#"{"metadata":{"labels":{"z":"1"}}}"#,
                None,
            ),
            (
                PatchKind::Merge,
                r#"{"metadata":{"labels":{"z":"1"},"resourceVersion":"1001"}}"#,
                None,
            ),
            (
                PatchKind::Merge,
                r#"{"metadata":{"labels":{"z":"1"},"resourceVersion":"999"}}"#,
                Some("999"),
            ),
            (
                PatchKind::StrategicMerge,
                r#"{"metadata":{"resourceVersion":"5"}}"#,
                Some("5"),
            ),
            (
                PatchKind::Merge,
                r#"{"metadata":{"resourceVersion":null}}"#,
                None,
            ),
            (
                PatchKind::Json,
                r#"[{"op":"replace","path":"/metadata/resourceVersion","value":"7"}]"#,
                Some("7"),
            ),
        ];
        for (kind, body, want) in cases {
            let patched = apply_patch(&NODES, *kind, &n, body.as_bytes()).unwrap();
            assert_eq!(
                patch_resource_version(&n, &patched).as_deref(),
                *want,
                "{body}"
            );
        }
    }

    #[test]
    fn list_strategies_come_from_the_kind() {
        assert_eq!(NODES.list_strategy("spec.taints"), ListStrategy::Atomic);
        assert_eq!(
            NODES.list_strategy("status.conditions"),
            ListStrategy::MergeByKey("type")
        );
        assert_eq!(
            PODS.list_strategy("spec.initContainers.volumeMounts"),
            ListStrategy::MergeByKey("mountPath")
        );
        assert_eq!(
            PODS.list_strategy("spec.containers.args"),
            ListStrategy::Atomic
        );
        // Shared metadata lists, for every kind.
        assert_eq!(
            SERVICES.list_strategy("metadata.finalizers"),
            ListStrategy::MergePrimitive
        );
        // The same path merges differently per kind: Service ports by port, others atomic.
        assert_eq!(
            SERVICES.list_strategy("spec.ports"),
            ListStrategy::MergeByKey("port")
        );
        assert_eq!(NODES.list_strategy("spec.ports"), ListStrategy::Atomic);
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        let body = br#"{"spec":{"ports":[{"port":443,"name":"https"}]}}"#;
        let merged = apply_patch(&SERVICES, PatchKind::StrategicMerge, &svc, body).unwrap();
        assert_eq!(merged["spec"]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(merged["spec"]["ports"][1]["name"], "https");
        let replaced = apply_patch(&NODES, PatchKind::StrategicMerge, &svc, body).unwrap();
        assert_eq!(replaced["spec"]["ports"].as_array().unwrap().len(), 1);
    }

    /// The issue's patch bomb: `copy` of an object into itself doubles it per operation.
    fn bomb(copies: usize) -> String {
        let mut ops = vec![json!({"op": "add", "path": "/metadata/annotations",
                                  "value": {"a": "x".repeat(1000)}})];
        for i in 0..copies {
            ops.push(json!({"op": "copy", "from": "/metadata/annotations",
                            "path": format!("/metadata/annotations/a{i}")}));
        }
        Value::Array(ops).to_string()
    }

    #[test]
    fn copy_bomb_stops_after_a_few_operations() {
        // 14 doublings build 16 MB; the copy budget (3 MiB) stops the chain at operation 12.
        for copies in [14, 25, 40] {
            let e =
                apply_patch(&NODES, PatchKind::Json, &node(), bomb(copies).as_bytes()).unwrap_err();
            assert_eq!(e.code(), 422, "{e}");
            assert!(
                e.to_string()
                    .contains("the accumulated size increase of copy is"),
                "{e}"
            );
        }
        // A short chain is fine.
        let out = apply_patch(&NODES, PatchKind::Json, &node(), bomb(3).as_bytes()).unwrap();
        assert!(out["metadata"]["annotations"]["a2"]["a1"]["a0"]["a"].is_string());
    }

    #[test]
    fn result_size_is_capped_for_every_kind() {
        let big = "x".repeat(MAX_PATCHED_BYTES / 2 + 10);
        // Two adds of half the cap each: no copy, but the result is over the cap.
        let body = json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"a": big}},
            {"op": "add", "path": "/metadata/labels/z", "value": big},
        ])
        .to_string();
        let e = apply_patch(&NODES, PatchKind::Json, &node(), body.as_bytes()).unwrap_err();
        assert_eq!(e.code(), 413, "{e}");
        assert!(e.to_string().contains("at operation 1"), "{e}");
        let mut orig = node();
        orig["metadata"]["annotations"] = json!({"a": big});
        for kind in [PatchKind::Merge, PatchKind::StrategicMerge] {
            let body = json!({"metadata": {"labels": {"z": big}}}).to_string();
            let e = apply_patch(&NODES, kind, &orig, body.as_bytes()).unwrap_err();
            assert_eq!(e.code(), 413, "{kind:?}: {e}");
        }
        // Replacing a big value by another is not growth.
        let body = json!([{"op": "replace", "path": "/metadata/annotations/a", "value": big}]);
        apply_patch(&NODES, PatchKind::Json, &orig, body.to_string().as_bytes()).unwrap();
    }

    #[test]
    fn operation_count_cap_is_413() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/kind", "value": "Node"}))
            .collect();
        let e = apply_patch(
            &NODES,
            PatchKind::Json,
            &node(),
            Value::Array(ops).to_string().as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.code(), 413, "{e}");
        assert!(
            e.to_string()
                .contains("The allowed maximum operations in a JSON patch is 10000, got 10001"),
            "{e}"
        );
    }

    #[test]
    fn serialized_size_stops_at_the_limit() {
        let v = json!({"a": "x".repeat(1000), "b": (0..1000).collect::<Vec<_>>()});
        assert_eq!(serialized_size(&v, usize::MAX), v.to_string().len());
        let n = serialized_size(&v, 1020);
        assert!(n > 1020 && n < 1100, "{n}");
    }

    /// Long lists in a strategic merge patch (a 3 MiB body holds ~100k entries) go through the
    /// hashed paths (a scan per element made 100k entries cost minutes) and merge correctly.
    #[test]
    fn long_lists_merge_without_quadratic_scans() {
        let n = 20_000;
        let mut orig = node();
        orig["metadata"]["finalizers"] = json!((0..n).map(|i| format!("f{i}")).collect::<Vec<_>>());
        orig["status"]["conditions"] = json!(
            (0..n)
                .map(|i| json!({"type": format!("t{i}")}))
                .collect::<Vec<_>>()
        );
        let body = json!({
            "metadata": {"finalizers": (0..n).map(|i| format!("g{i}")).collect::<Vec<_>>(),
                         "$deleteFromPrimitiveList/finalizers":
                             (0..n).step_by(2).map(|i| format!("f{i}")).collect::<Vec<_>>()},
            "status": {
                "conditions": (0..n).map(|i| json!({"type": format!("t{i}"), "status": "True"}))
                    .chain((0..n).step_by(2).map(|i| json!({"type": format!("t{i}"), "$patch": "delete"})))
                    .collect::<Vec<_>>(),
                "$setElementOrder/conditions":
                    (0..n).rev().map(|i| json!({"type": format!("t{i}")})).collect::<Vec<_>>(),
            },
        });
        let out = apply_patch(
            &NODES,
            PatchKind::StrategicMerge,
            &orig,
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["finalizers"].as_array().unwrap().len(),
            n / 2 + n
        );
        let conditions = out["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), n / 2);
        // Deleted: the even ones; merged: the odd ones; reordered as listed (descending).
        assert_eq!(
            conditions[0],
            json!({"type": format!("t{}", n - 1), "status": "True"})
        );
        assert_eq!(
            conditions[n / 2 - 1],
            json!({"type": "t1", "status": "True"})
        );
    }
}
