//! Field sets as server-side apply tracks them: which fields of an object a manager owns, in
//! upstream's `FieldsV1` encoding (`metadata.managedFields[].fieldsV1`).
//!
//! A set is a tree of path elements: `f:<name>` (a field of a map or struct), `k:<json>` (an
//! item of a list merged by key, named by its key fields), `v:<json>` (an item of a list of
//! scalars merged as a set) and `i:<n>` (an index, never produced here). A node is a *member*
//! when the field itself is owned: a leaf (`{}`), or a node with children that is owned as a
//! whole, marked `".": {}` (list items, set-lists). Lists follow the patch strategies of the
//! served types (`ResourceInfo::list_strategy`): merged by key, merged as a set, or atomic (owned as
//! one leaf).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::registry::{ListStrategy, ResourceInfo};

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Whether the node itself is in the set.
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

/// One path element, as in the `FieldsV1` keys.
pub type Path = Vec<String>;

impl FieldSet {
    /// Whether nothing is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Parses the `FieldsV1` JSON form. Unknown shapes (not objects) count as leaves.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(obj) = v.as_object() {
            for (k, child) in obj {
                if k == "." {
                    continue;
                }
                let mut c = FieldSet::from_fields_v1(child);
                c.member = child
                    .as_object()
                    .is_none_or(|o| o.is_empty() || o.contains_key("."));
                set.children.insert(k.clone(), c);
            }
        }
        set
    }

    /// The `FieldsV1` JSON form.
    pub fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        for (k, c) in &self.children {
            if c.is_empty() {
                continue;
            }
            let mut inner = match c.to_fields_v1() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if c.member && !inner.is_empty() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            out.insert(k.clone(), Value::Object(inner));
        }
        Value::Object(out)
    }

    /// Adds a path (its last element a member).
    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for el in path {
            node = node.children.entry(el.clone()).or_default();
        }
        node.member = true;
    }

    /// Whether a path is a member.
    pub fn contains(&self, path: &[String]) -> bool {
        let mut node = self;
        for el in path {
            match node.children.get(el) {
                Some(c) => node = c,
                None => return false,
            }
        }
        node.member
    }

    /// Whether the path or anything below it is in the set.
    pub fn touches(&self, path: &[String]) -> bool {
        let mut node = self;
        for el in path {
            match node.children.get(el) {
                Some(c) => node = c,
                None => return false,
            }
        }
        !node.is_empty()
    }

    /// Removes one path's membership (children stay).
    pub fn remove(&mut self, path: &[String]) {
        fn go(node: &mut FieldSet, path: &[String]) {
            match path.split_first() {
                None => node.member = false,
                Some((first, rest)) => {
                    if let Some(c) = node.children.get_mut(first) {
                        go(c, rest);
                        if c.is_empty() {
                            node.children.remove(first);
                        }
                    }
                }
            }
        }
        go(self, path);
    }

    /// Every member path, parents before children.
    pub fn members(&self) -> Vec<Path> {
        fn go(node: &FieldSet, prefix: &mut Path, out: &mut Vec<Path>) {
            for (k, c) in &node.children {
                prefix.push(k.clone());
                if c.member {
                    out.push(prefix.clone());
                }
                go(c, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        go(self, &mut Vec::new(), &mut out);
        out
    }

    /// Members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for p in self.members() {
            if !other.contains(&p) {
                out.insert(&p);
            }
        }
        out
    }

    /// Members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for p in self.members() {
            if other.contains(&p) {
                out.insert(&p);
            }
        }
        out
    }

    /// Members of either.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for p in other.members() {
            out.insert(&p);
        }
        out
    }
}

/// The set of fields an object sets, with `skip(dotted_path)` naming the fields not tracked
/// (server-owned metadata, `status` of the main resource).
pub fn from_object(info: &ResourceInfo, obj: &Value, skip: &dyn Fn(&str) -> bool) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(map) = obj.as_object() {
        walk_map(info, map, "", skip, &mut set);
    }
    set
}

fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_map(
    info: &ResourceInfo,
    map: &Map<String, Value>,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
    set: &mut FieldSet,
) {
    for (k, v) in map {
        let path = dotted(prefix, k);
        if v.is_null() || skip(&path) {
            continue;
        }
        let el = format!("f:{k}");
        match v {
            Value::Object(m) if !m.is_empty() => {
                let mut child = FieldSet::default();
                walk_map(info, m, &path, skip, &mut child);
                if !child.is_empty() {
                    set.children.insert(el, child);
                }
            }
            Value::Array(items) => {
                let child = walk_list(info, items, &path, skip);
                set.children.insert(el, child);
            }
            _ => {
                set.children.entry(el).or_default().member = true;
            }
        }
    }
}

fn walk_list(
    info: &ResourceInfo,
    items: &[Value],
    path: &str,
    skip: &dyn Fn(&str) -> bool,
) -> FieldSet {
    let mut node = FieldSet::default();
    match info.list_strategy(path) {
        ListStrategy::Atomic => node.member = true,
        ListStrategy::MergePrimitive => {
            node.member = true;
            for item in items {
                node.children.entry(value_element(item)).or_default().member = true;
            }
        }
        ListStrategy::MergeByKey(key) => {
            for item in items {
                let Some(el) = key_element(item, key) else {
                    // An item without its key cannot be addressed: own the list as a whole.
                    node.member = true;
                    continue;
                };
                let mut child = FieldSet {
                    member: true,
                    ..Default::default()
                };
                if let Some(m) = item.as_object() {
                    walk_map(info, m, path, skip, &mut child);
                }
                node.children.insert(el, child);
            }
        }
    }
    node
}

/// `k:{"name":"c"}` for an item of a list merged by `key`.
pub fn key_element(item: &Value, key: &str) -> Option<String> {
    let v = item.get(key).filter(|v| !v.is_null())?;
    let mut m = Map::new();
    m.insert(key.to_string(), v.clone());
    Some(format!("k:{}", Value::Object(m)))
}

/// `v:"x"` for an item of a set-list.
pub fn value_element(item: &Value) -> String {
    format!("v:{item}")
}

/// What a path element matches in a list item, if it addresses list items.
fn item_matches(el: &str, item: &Value) -> bool {
    if let Some(k) = el.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        keys.iter().all(|(name, v)| item.get(name) == Some(v))
    } else if let Some(v) = el.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|v| &v == item)
    } else if let Some(i) = el.strip_prefix("i:") {
        let _ = i;
        false
    } else {
        false
    }
}

/// Whether the last element of a path is one of the key fields of the list item above it
/// (`f:name` under `k:{"name":"c"}`).
pub fn is_item_key(path: &[String]) -> bool {
    let [.., parent, last] = path else {
        return false;
    };
    let (Some(k), Some(field)) = (parent.strip_prefix("k:"), last.strip_prefix("f:")) else {
        return false;
    };
    matches!(serde_json::from_str::<Value>(k), Ok(Value::Object(keys)) if keys.contains_key(field))
}

/// The value at a path in an object.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = match (el.strip_prefix("f:"), cur) {
            (Some(name), Value::Object(m)) => m.get(name)?,
            (None, Value::Array(items)) => items.iter().find(|i| item_matches(el, i))?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the value at a path from an object (a map entry or a list item).
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent_path {
        let next = match (el.strip_prefix("f:"), cur) {
            (Some(name), Value::Object(m)) => m.get_mut(name),
            (None, Value::Array(items)) => items.iter_mut().find(|i| item_matches(el, i)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last.strip_prefix("f:"), cur) {
        (Some(name), Value::Object(m)) => {
            m.remove(name);
        }
        (None, Value::Array(items)) => items.retain(|i| !item_matches(last, i)),
        _ => {}
    }
}

/// A path as upstream prints it in conflicts: `.data.k`, `.spec.containers[name="c"].image`,
/// `.metadata.finalizers[="x"]`.
pub fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(name) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Vec<String> = match serde_json::from_str::<Value>(k) {
                Ok(Value::Object(m)) => m.iter().map(|(n, v)| format!("{n}={v}")).collect(),
                _ => vec![k.to_string()],
            };
            out.push_str(&format!("[{}]", keys.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none(_: &str) -> bool {
        false
    }

    #[test]
    fn objects_become_upstream_fields_v1() {
        let obj = json!({
            "metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "data": {"k": "v", "e": ""},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                     "taints": [{"key": "t"}]},
        });
        let set = from_object(&crate::registry::PODS, &obj, &none);
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {".": {}, "v:\"x\"": {}}},
                "f:data": {"f:k": {}, "f:e": {}},
                "f:spec": {
                    "f:containers": {"k:{\"name\":\"c\"}": {
                        ".": {}, "f:name": {}, "f:image": {},
                        "f:ports": {"k:{\"containerPort\":80}": {".": {}, "f:containerPort": {}}}}},
                    "f:taints": {},
                },
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&set.to_fields_v1()), set);
    }

    #[test]
    fn set_operations_paths_and_removal() {
        let a = from_object(
            &crate::registry::CONFIGMAPS,
            &json!({"data": {"a": "1", "b": "2"}}),
            &none,
        );
        let b = from_object(
            &crate::registry::CONFIGMAPS,
            &json!({"data": {"b": "2", "c": "3"}}),
            &none,
        );
        let p = |s: &str| vec!["f:data".to_string(), format!("f:{s}")];
        assert!(a.difference(&b).contains(&p("a")));
        assert!(!a.difference(&b).contains(&p("b")));
        assert!(a.intersection(&b).contains(&p("b")));
        assert_eq!(a.union(&b).members().len(), 3);
        let mut obj = json!({"spec": {"containers": [{"name": "c", "image": "i"}, {"name": "d"}]},
                             "metadata": {"finalizers": ["x", "y"]}});
        let item = vec![
            "f:spec".to_string(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(get(&obj, &item), Some(&json!("i")));
        assert_eq!(path_string(&item), ".spec.containers[name=\"c\"].image");
        remove(&mut obj, &item[..3]);
        assert_eq!(obj["spec"]["containers"], json!([{"name": "d"}]));
        let fin = vec![
            "f:metadata".to_string(),
            "f:finalizers".into(),
            "v:\"x\"".into(),
        ];
        assert_eq!(path_string(&fin), ".metadata.finalizers[=\"x\"]");
        remove(&mut obj, &fin);
        assert_eq!(obj["metadata"]["finalizers"], json!(["y"]));
    }
}
