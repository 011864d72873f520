//! Server-side apply and `metadata.managedFields` (docs/server-side-apply.md).
//!
//! Every write records who set which fields: a create, update or patch by manager `m` makes `m`'s
//! `Update` entry own the fields it changed and takes them away from every other entry; fields
//! the write removed leave every entry. An apply (`PATCH` with `application/apply-patch+yaml`)
//! merges the applied configuration into the live object, removes the fields its manager applied
//! before but no longer applies (unless another manager owns them too), and owns exactly what it
//! applied in its `Apply` entry. Applying a different value to a field another manager owns is a
//! 409 conflict with upstream's message unless `force=true`, which moves the field to the
//! applier. The sets use upstream's `FieldsV1` encoding ([`super::fieldset`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::fieldset::{self, FieldSet, Path};
use super::status::ApiError;
use crate::registry::ListStrategy;
use crate::registry::ResourceInfo;

/// Upstream's limit on a field manager's name.
const MAX_MANAGER_LEN: usize = 128;

/// `metadata` fields the server owns; they are never in a manager's set.
const SERVER_METADATA: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.creationTimestamp",
    "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
    "metadata.managedFields",
    "metadata.selfLink",
    "metadata.generateName",
];

/// Who writes, and through which endpoint.
#[derive(Debug, Clone)]
pub struct Writer {
    pub manager: String,
    /// `status` for writes to the status subresource.
    pub subresource: Option<String>,
}

impl Writer {
    /// The manager of a request: `fieldManager`, else the User-Agent up to its first `/`
    /// (`kubectl/v1.32.4 (linux/amd64) ...` → `kubectl`), as upstream names managers.
    pub fn from_request(
        query: &super::query::Query,
        user_agent: Option<&str>,
        subresource: Option<&str>,
    ) -> Result<Writer, ApiError> {
        let manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) => {
                if m.chars().count() > MAX_MANAGER_LEN {
                    return Err(ApiError::BadRequest(format!(
                        "fieldManager: Too long: may not be more than {MAX_MANAGER_LEN} bytes"
                    )));
                }
                if m.chars().any(|c| c.is_control()) {
                    return Err(ApiError::BadRequest(
                        "fieldManager: Invalid value: must only contain printable characters"
                            .into(),
                    ));
                }
                m.clone()
            }
            None => {
                let ua = user_agent.unwrap_or_default();
                let prefix = ua.split('/').next().unwrap_or_default();
                prefix.chars().take(MAX_MANAGER_LEN).collect()
            }
        };
        Ok(Writer {
            manager,
            subresource: subresource.map(str::to_string),
        })
    }
}

/// Whether a dotted path is tracked for writes through `subresource`: server metadata never;
/// `status` only through the status subresource of kinds that have one, and only `status` there.
fn skipper(info: &ResourceInfo, subresource: Option<&str>) -> impl Fn(&str) -> bool + use<> {
    let has_status = info.subresources.contains(&"status");
    let status_only = subresource == Some("status");
    move |path: &str| {
        if path == "apiVersion" || path == "kind" || SERVER_METADATA.contains(&path) {
            return true;
        }
        let top = path.split('.').next().unwrap_or_default();
        if status_only {
            top != "status"
        } else {
            has_status && top == "status"
        }
    }
}

fn fields_of(info: &ResourceInfo, obj: &Value, subresource: Option<&str>) -> FieldSet {
    let skip = skipper(info, subresource);
    fieldset::from_object(info, obj, &skip)
}

/// One `managedFields` entry, parsed.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// A new entry of `writer` for `operation`, stamped now.
    fn new(
        info: &ResourceInfo,
        writer: &Writer,
        operation: &str,
        set: FieldSet,
        now: DateTime<Utc>,
    ) -> Entry {
        Entry {
            manager: writer.manager.clone(),
            operation: operation.into(),
            api_version: info.api_version(),
            time: Some(now_string(now)),
            subresource: writer.subresource.clone(),
            set,
        }
    }

    fn parse(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }

    fn is(&self, w: &Writer, operation: &str) -> bool {
        self.manager == w.manager
            && self.operation == operation
            && self.subresource == w.subresource
    }

    /// How upstream names the manager in a conflict message.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
            if let Some(t) = &self.time {
                s.push_str(&format!(" at {t}"));
            }
        }
        s
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, list: Vec<Entry>) {
    let list: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| e.to_json())
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn now_string(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Records a create, update or (non-apply) patch: `old` is the stored object (`None` for a
/// create), `new` the object about to be stored; `new`'s managedFields are rewritten from
/// `old`'s (whatever the client sent in them is not trusted).
pub fn track_update(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    writer: &Writer,
    now: DateTime<Utc>,
) {
    let sub = writer.subresource.as_deref();
    let new_set = fields_of(info, new, sub);
    let (mut list, changed) = match old {
        None => (Vec::new(), new_set.clone()),
        Some(old) => {
            let mut changed = FieldSet::default();
            for p in new_set.members() {
                let was = fieldset::get(old, &p);
                let is = fieldset::get(new, &p);
                // A keyed item or set member that existed keeps its owners; its fields are
                // compared one by one.
                let container = new_set_children(&new_set, &p);
                if was.is_none() || (!container && was != is) {
                    changed.insert(&p);
                }
            }
            (entries(old), changed)
        }
    };
    // Fields the write removed leave every entry (only for the part of the object this
    // endpoint writes).
    // The half this endpoint writes is `new_set` already; only the other half is walked.
    let main = sub.is_some().then(|| fields_of(info, new, None));
    let status = (sub != Some("status")).then(|| fields_of(info, new, Some("status")));
    let all_now = main
        .as_ref()
        .unwrap_or(&new_set)
        .union(status.as_ref().unwrap_or(&new_set));
    for e in &mut list {
        e.set = e.set.intersection(&all_now);
        if !e.is(writer, "Update") {
            e.set = e.set.difference(&changed);
        }
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| e.is(writer, "Update")) {
            Some(e) => {
                e.set = e.set.union(&changed);
                e.time = Some(now_string(now));
                e.api_version = info.api_version();
            }
            None => list.push(Entry::new(info, writer, "Update", changed, now)),
        }
    }
    store_entries(new, list);
}

fn new_set_children(set: &FieldSet, path: &[String]) -> bool {
    let mut node = set;
    for el in path {
        match node.children.get(el) {
            Some(c) => node = c,
            None => return false,
        }
    }
    !node.children.is_empty()
}

/// Parses an apply body (YAML or JSON) into the applied configuration, checking it names the
/// object of the URL.
pub fn parse_applied(
    info: &ResourceInfo,
    body: &[u8],
    name: &str,
    namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the apply patch is not UTF-8".into()))?;
    // JSON (what kubectl and the client libraries send) is YAML too, but read without the
    // YAML decoder; YAML is read only without aliases, whose expansion is not bounded by the
    // body size (docs/limits.md).
    let applied: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            if has_yaml_alias(text) {
                return Err(ApiError::BadRequest(
                    "error decoding YAML: aliases (*name) are not accepted in apply patches".into(),
                ));
            }
            serde_yaml::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
        }
    };
    if !applied.is_object() {
        return Err(ApiError::BadRequest(
            "the apply patch must be an object".into(),
        ));
    }
    let api_version = applied.get("apiVersion").and_then(Value::as_str);
    let kind = applied.get("kind").and_then(Value::as_str);
    if api_version.is_none_or(str::is_empty) || kind.is_none_or(str::is_empty) {
        return Err(ApiError::BadRequest(
            "apiVersion and kind must be set in an apply patch".into(),
        ));
    }
    if api_version != Some(info.api_version().as_str()) || kind != Some(info.kind) {
        return Err(ApiError::BadRequest(format!(
            "the apply patch is a {}/{} but the request is for {} {}",
            api_version.unwrap_or_default(),
            kind.unwrap_or_default(),
            info.api_version(),
            info.kind
        )));
    }
    let body_name = applied.pointer("/metadata/name").and_then(Value::as_str);
    if body_name.is_some_and(|n| n != name) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            body_name.unwrap_or_default()
        )));
    }
    let body_ns = applied
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    if let (Some(b), Some(u)) = (body_ns, namespace)
        && info.namespaced
        && !b.is_empty()
        && b != u
    {
        return Err(ApiError::BadRequest(format!(
            "the namespace of the object ({b}) does not match the namespace on the URL ({u})"
        )));
    }
    if applied.pointer("/metadata/managedFields").is_some() {
        return Err(ApiError::BadRequest(
            "metadata.managedFields must be nil in an apply patch".into(),
        ));
    }
    Ok(applied)
}

/// Whether YAML text may use an alias: a `*` that starts a token outside quotes and comments.
/// Conservative: a `*` starting a word inside a block scalar counts too (such a patch is refused
/// with a clear message rather than risking an expansion bomb).
fn has_yaml_alias(text: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => quote = None,
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' if prev.is_whitespace() || "[{,:-".contains(prev) => quote = Some(c),
                '#' if prev.is_whitespace() => {
                    for n in chars.by_ref() {
                        if n == '\n' {
                            break;
                        }
                    }
                    prev = '\n';
                    continue;
                }
                '*' if (prev.is_whitespace() || "[{,:-".contains(prev))
                    && chars.peek().is_some_and(|n| !n.is_whitespace()) =>
                {
                    return true;
                }
                _ => {}
            },
        }
        prev = c;
    }
    false
}

/// The object an apply creates when none exists: the applied configuration itself, with one
/// `Apply` entry (the caller validates and prepares it like any create).
pub fn apply_create(
    info: &ResourceInfo,
    applied: &Value,
    writer: &Writer,
    now: DateTime<Utc>,
) -> Value {
    let mut obj = applied.clone();
    let set = fields_of(info, applied, writer.subresource.as_deref());
    store_entries(&mut obj, vec![Entry::new(info, writer, "Apply", set, now)]);
    obj
}

/// Applies `applied` to the live object: conflicts, merge, removal of fields this manager no
/// longer applies, and the new managedFields. Returns the object to store.
pub fn apply_to(
    info: &ResourceInfo,
    live: &Value,
    applied: &Value,
    writer: &Writer,
    force: bool,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let sub = writer.subresource.as_deref();
    let applied_set = fields_of(info, applied, sub);
    let mut list = entries(live);

    // Conflicts: a leaf applied with a value other than the live one, owned by someone else.
    let mut conflicts: Vec<(usize, Path)> = Vec::new();
    for p in applied_set.members() {
        if new_set_children(&applied_set, &p) {
            continue;
        }
        let Some(current) = fieldset::get(live, &p) else {
            continue;
        };
        if fieldset::get(applied, &p) == Some(current) {
            continue;
        }
        for (i, e) in list.iter().enumerate() {
            if !e.is(writer, "Apply") && e.set.contains(&p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&list, &conflicts));
    }

    let mut obj = live.clone();
    // Fields this manager applied before and no longer does go, unless someone else owns them.
    let previous = list
        .iter()
        .find(|e| e.is(writer, "Apply"))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others = list
        .iter()
        .filter(|e| !e.is(writer, "Apply"))
        .fold(FieldSet::default(), |acc, e| acc.union(&e.set));
    // Parents first: a list item that goes takes its fields with it. The key fields of an
    // item that stays are never removed (the item would no longer be addressable).
    let mut removed: Vec<Path> = Vec::new();
    for p in previous.difference(&applied_set).members() {
        if removed.iter().any(|r| p.starts_with(r))
            || others.touches(&p)
            || applied_set.touches(&p)
            || fieldset::is_item_key(&p)
        {
            continue;
        }
        fieldset::remove(&mut obj, &p);
        removed.push(p);
    }

    merge(info, &mut obj, applied, "");

    // Ownership: the applier owns exactly what it applied; a forced field leaves its owners;
    // a field whose value this apply changed leaves every other owner too (as with updates).
    let mut changed = FieldSet::default();
    for p in applied_set.members() {
        if !new_set_children(&applied_set, &p) && fieldset::get(live, &p) != fieldset::get(&obj, &p)
        {
            changed.insert(&p);
        }
    }
    let all_now = fields_of(info, &obj, None).union(&fields_of(info, &obj, Some("status")));
    for e in &mut list {
        e.set = e.set.intersection(&all_now);
        if !e.is(writer, "Apply") {
            e.set = e.set.difference(&changed);
        }
    }
    match list.iter_mut().find(|e| e.is(writer, "Apply")) {
        Some(e) => {
            e.set = applied_set;
            e.time = Some(now_string(now));
            e.api_version = info.api_version();
        }
        None => list.push(Entry::new(info, writer, "Apply", applied_set, now)),
    }
    store_entries(&mut obj, list);
    Ok(obj)
}

/// Upstream's `NewConflictError`: 409 `Conflict` with one `FieldManagerConflict` cause per
/// conflict and the summary message.
fn conflict_error(list: &[Entry], conflicts: &[(usize, Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, p)| {
            json!({
                "type": "FieldManagerConflict",
                "message": format!("conflict with {}", list[*i].describe()),
                "field": fieldset::path_string(p),
            })
        })
        .collect();
    let message = if let [(i, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            list[*i].describe(),
            fieldset::path_string(p)
        )
    } else {
        let mut by_manager: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (i, p) in conflicts {
            by_manager
                .entry(list[*i].describe())
                .or_default()
                .push(fieldset::path_string(p));
        }
        let mut lines = Vec::new();
        for (m, paths) in by_manager {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::ApplyConflict { message, causes }
}

/// Merges the applied configuration into an object: maps key by key, lists by their strategy
/// (by key, as a set, or replaced), scalars replaced.
fn merge(info: &ResourceInfo, target: &mut Value, applied: &Value, path: &str) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) => merge(info, existing, v, &p),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(a)) => match info.list_strategy(path) {
            ListStrategy::Atomic => *t = a.clone(),
            ListStrategy::MergePrimitive => {
                for item in a {
                    if !t.contains(item) {
                        t.push(item.clone());
                    }
                }
            }
            ListStrategy::MergeByKey(key) => {
                for item in a {
                    let found = item
                        .get(key)
                        .and_then(|kv| t.iter_mut().find(|x| x.get(key) == Some(kv)));
                    match found {
                        Some(existing) => merge(info, existing, item, path),
                        None => t.push(item.clone()),
                    }
                }
            }
        },
        (target, applied) => *target = applied.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{CONFIGMAPS, PODS, SERVICES};

    fn w(m: &str) -> Writer {
        Writer {
            manager: m.into(),
            subresource: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"d"},"data":data})
    }

    #[test]
    fn create_update_and_apply_track_owners() {
        let mut obj = cm(json!({"a": "1"}));
        track_update(&CONFIGMAPS, None, &mut obj, &w("kubectl-create"), now());
        let mf = &obj["metadata"]["managedFields"];
        assert_eq!(
            mf,
            &json!([{"manager":"kubectl-create","operation":"Update","apiVersion":"v1",
                     "time":"2023-11-14T22:13:20Z","fieldsType":"FieldsV1",
                     "fieldsV1":{"f:data":{"f:a":{}}}}])
        );

        // An apply of the same value shares the field; of b adds it.
        let applied = cm(json!({"a": "1", "b": "2"}));
        let after = apply_to(&CONFIGMAPS, &obj, &applied, &w("mgr"), false, now()).unwrap();
        assert_eq!(after["data"], json!({"a": "1", "b": "2"}));
        let e = entries(&after);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].operation, "Apply");
        assert_eq!(
            e[1].set.to_fields_v1(),
            json!({"f:data":{"f:a":{},"f:b":{}}})
        );

        // Another applier changing b conflicts with mgr (an Apply manager: no "using").
        let other = cm(json!({"b": "3"}));
        let err = apply_to(&CONFIGMAPS, &after, &other, &w("other"), false, now()).unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"mgr\": .data.b"
        );
        // Changing a conflicts with both the Update manager (with version and time) and mgr.
        let both = cm(json!({"a": "9"}));
        let err = apply_to(&CONFIGMAPS, &after, &both, &w("other"), false, now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using v1 at \
             2023-11-14T22:13:20Z:\n- .data.a\nconflicts with \"mgr\":\n- .data.a"
        );

        // Forced, ownership moves.
        let forced = apply_to(&CONFIGMAPS, &after, &other, &w("other"), true, now()).unwrap();
        assert_eq!(forced["data"]["b"], "3");
        let e = entries(&forced);
        let mgr = e.iter().find(|e| e.manager == "mgr").unwrap();
        assert_eq!(mgr.set.to_fields_v1(), json!({"f:data":{"f:a":{}}}));

        // mgr stops applying a: a stays (kubectl-create still owns it); stops applying b
        // (no longer its field): untouched.
        let less = apply_to(
            &CONFIGMAPS,
            &forced,
            &cm(json!({})),
            &w("mgr"),
            false,
            now(),
        )
        .unwrap();
        assert_eq!(less["data"], json!({"a": "1", "b": "3"}));
    }

    #[test]
    fn apply_removes_fields_it_no_longer_applies() {
        let first = apply_create(
            &CONFIGMAPS,
            &cm(json!({"a": "1", "b": "2"})),
            &w("m"),
            now(),
        );
        let second = apply_to(
            &CONFIGMAPS,
            &first,
            &cm(json!({"a": "1"})),
            &w("m"),
            false,
            now(),
        )
        .unwrap();
        assert_eq!(second["data"], json!({"a": "1"}));
        // An update by someone else takes the field it changes.
        let mut updated = second.clone();
        updated["data"]["a"] = json!("x");
        track_update(
            &CONFIGMAPS,
            Some(&second),
            &mut updated,
            &w("kubectl-edit"),
            now(),
        );
        let e = entries(&updated);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].manager, "kubectl-edit");
    }

    #[test]
    fn keyed_lists_merge_by_key() {
        let pod = |containers: Value| {
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
                   "spec":{"containers":containers}})
        };
        let live = apply_create(
            &PODS,
            &pod(json!([{"name":"a","image":"x"}])),
            &w("m1"),
            now(),
        );
        let both = apply_to(
            &PODS,
            &live,
            &pod(json!([{"name":"b","image":"y"}])),
            &w("m2"),
            false,
            now(),
        )
        .unwrap();
        assert_eq!(
            both["spec"]["containers"],
            json!([{"name":"a","image":"x"},{"name":"b","image":"y"}])
        );
        let err = apply_to(
            &PODS,
            &both,
            &pod(json!([{"name":"a","image":"z"}])),
            &w("m2"),
            false,
            now(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"m1\": .spec.containers[name=\"a\"].image"
        );
    }

    /// An item whose key changed goes as a whole (found by kubectl on a Service port change).
    #[test]
    fn a_keyed_item_no_longer_applied_goes_whole() {
        let svc = |port: u16| {
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},
                   "spec":{"ports":[{"name":"http","port":port,"protocol":"TCP","targetPort":"http"}]}})
        };
        let live = apply_create(&SERVICES, &svc(80), &w("m"), now());
        let next = apply_to(&SERVICES, &live, &svc(8080), &w("m"), false, now()).unwrap();
        assert_eq!(
            next["spec"]["ports"],
            json!([{"name":"http","port":8080,"protocol":"TCP","targetPort":"http"}])
        );
    }

    #[test]
    fn yaml_aliases_are_refused_json_is_read_as_json() {
        assert!(has_yaml_alias("a: &x [1]\nb: *x\n"));
        assert!(has_yaml_alias("a: [*x, *x]"));
        assert!(!has_yaml_alias(
            "a: \"*.example.com\"\nb: '*x' # *c\nc: 2*3\n"
        ));
        let bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nx: &a [1]\ny: [*a, *a]\n";
        let e = parse_applied(&CONFIGMAPS, bomb.as_bytes(), "c", None).unwrap_err();
        assert!(e.to_string().contains("aliases"), "{e}");
        let json =
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"*x"}}"#;
        assert_eq!(
            parse_applied(&CONFIGMAPS, json.as_bytes(), "c", None).unwrap()["data"]["k"],
            "*x"
        );
    }

    #[test]
    fn managers_from_query_or_user_agent() {
        let query = |k: &str, v: String| {
            let mut q = crate::apiserver::query::Query::default();
            q.push(k.to_string(), v);
            q
        };
        let q = query("fieldManager", "kubectl-edit".to_string());
        assert_eq!(
            Writer::from_request(&q, Some("kubectl/v1.32"), None)
                .unwrap()
                .manager,
            "kubectl-edit"
        );
        let none = crate::apiserver::query::Query::default();
        assert_eq!(
            Writer::from_request(&none, Some("kubectl/v1.32.4 (linux/amd64)"), None)
                .unwrap()
                .manager,
            "kubectl"
        );
        let long = query("fieldManager", "x".repeat(129));
        assert_eq!(
            Writer::from_request(&long, None, None).unwrap_err().code(),
            400
        );
    }
}
