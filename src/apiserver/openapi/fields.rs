//! Server-side field validation (`fieldValidation=Strict|Warn|Ignore`), against the same
//! generated definitions the OpenAPI documents serve: fields a kind's schema does not know are
//! dropped, as upstream's decoding into Go structs drops them, and reported as upstream reports
//! them (`unknown field "spec.ports[0].foo"`): a 400 under `Strict`, a `Warning` header under
//! `Warn` (upstream's default), nothing under `Ignore`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::V2_REF_PREFIX;

/// How unknown fields are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// From the `fieldValidation` query parameter (absent: `Warn`, as upstream).
    pub fn from_query(value: Option<&str>) -> Result<FieldValidation, String> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(format!(
                "invalid fieldValidation value {other:?}: valid values are Ignore, Warn, Strict"
            )),
        }
    }
}

/// Removes from `value` every field the definition `root` does not declare; returns their paths
/// in upstream's form (`spec.foo`, `spec.ports[0].foo`).
pub fn prune_unknown(defs: &BTreeMap<String, Value>, root: &str, value: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = defs.get(root) {
        walk(defs, schema, value, "", 0, &mut out);
    }
    out
}

/// Deep enough for every built-in kind; a guard against a cyclic schema, not a limit on data.
const MAX_DEPTH: usize = 64;

fn resolve<'a>(defs: &'a BTreeMap<String, Value>, schema: &'a Value) -> Option<&'a Value> {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => defs.get(r.strip_prefix(V2_REF_PREFIX).unwrap_or(r)),
        None => Some(schema),
    }
}

fn walk(
    defs: &BTreeMap<String, Value>,
    schema: &Value,
    value: &mut Value,
    path: &str,
    depth: usize,
    out: &mut Vec<String>,
) {
    let Some(schema) = resolve(defs, schema) else {
        return;
    };
    if depth > MAX_DEPTH
        || schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
    {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let unknown: Vec<String> = map
                    .keys()
                    .filter(|k| !props.contains_key(k.as_str()))
                    .cloned()
                    .collect();
                for k in unknown {
                    map.remove(&k);
                    out.push(join(path, &k));
                }
                for (k, v) in map.iter_mut() {
                    walk(defs, &props[k.as_str()], v, &join(path, k), depth + 1, out);
                }
            } else if let Some(inner) = schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (k, v) in map.iter_mut() {
                    walk(defs, inner, v, &join(path, k), depth + 1, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(inner) = schema.get("items").filter(|s| s.is_object()) {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(defs, inner, v, &format!("{path}[{i}]"), depth + 1, out);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_dropped_and_named_like_upstream() {
        let (defs, _) = super::super::spec::definitions();
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service", "bogus": 1,
            "metadata": {"name": "s", "labels": {"a": "b"}, "annotations": {"x": "y"}, "nope": true},
            "spec": {
                "foo": 1,
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}, {"port": 81, "bar": "x", "targetPort": "http"}]
            }
        });
        let mut unknown = prune_unknown(&defs, "io.k8s.api.core.v1.Service", &mut svc);
        unknown.sort();
        assert_eq!(
            unknown,
            ["bogus", "metadata.nope", "spec.foo", "spec.ports[1].bar"]
        );
        assert_eq!(
            svc,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "s", "labels": {"a": "b"}, "annotations": {"x": "y"}},
                "spec": {
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": 8080}, {"port": 81, "targetPort": "http"}]
                }
            })
        );
        // A valid object is left alone.
        let mut again = svc.clone();
        assert!(prune_unknown(&defs, "io.k8s.api.core.v1.Service", &mut again).is_empty());
        assert_eq!(again, svc);
        // Free-form data (ConfigMap data) and nested definitions (pod containers).
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "i", "env": [{"name": "X", "valu": "1"}]}]}});
        assert_eq!(
            prune_unknown(&defs, "io.k8s.api.core.v1.Pod", &mut pod),
            ["spec.containers[0].env[0].valu"]
        );
    }

    #[test]
    fn field_validation_modes() {
        assert_eq!(FieldValidation::from_query(None), Ok(FieldValidation::Warn));
        assert_eq!(
            FieldValidation::from_query(Some("Strict")),
            Ok(FieldValidation::Strict)
        );
        assert_eq!(
            FieldValidation::from_query(Some("Ignore")),
            Ok(FieldValidation::Ignore)
        );
        let e = FieldValidation::from_query(Some("strict")).unwrap_err();
        assert!(e.contains("fieldValidation"), "{e}");
    }
}
