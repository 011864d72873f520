//! OpenAPI v3 documents, one per group version, derived from the generated v2 paths and
//! definitions: parameters get a `schema`, bodies become `requestBody`, responses get `content`,
//! definitions move to `components/schemas` with only those the group version reaches, and a
//! `$ref` with sibling keywords is wrapped in `allOf` as upstream does (v3 ignores siblings of a
//! bare `$ref`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::spec::{KindNames, V2_REF_PREFIX, gv_prefix};

const V3_REF_PREFIX: &str = "#/components/schemas/";

/// The discovery key of a group version: `api/v1`, `apis/coordination.k8s.io/v1`.
pub fn gv_key(group: &str, version: &str) -> String {
    gv_prefix(group, version)
        .trim_start_matches('/')
        .to_string()
}

/// One document per group version, keyed by [`gv_key`].
pub fn documents(
    version: &str,
    defs: &BTreeMap<String, Value>,
    paths: &BTreeMap<String, Value>,
    kinds: &[KindNames],
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for k in kinds {
        let key = gv_key(k.info.group, k.info.version);
        if out.contains_key(&key) {
            continue;
        }
        let prefix = format!("/{key}/");
        let gv_paths: Map<String, Value> = paths
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .map(|(p, item)| (p.clone(), path_item(item)))
            .collect();
        let mut wanted = BTreeSet::new();
        let paths_value = Value::Object(gv_paths);
        refs(&paths_value, &mut wanted);
        let mut schemas = Map::new();
        let mut queue: Vec<String> = wanted.iter().cloned().collect();
        while let Some(name) = queue.pop() {
            if schemas.contains_key(&name) {
                continue;
            }
            let Some(def) = defs.get(&name) else { continue };
            let def = convert_schema(def);
            let mut more = BTreeSet::new();
            refs(&def, &mut more);
            queue.extend(more.into_iter().filter(|n| !schemas.contains_key(n)));
            schemas.insert(name, def);
        }
        out.insert(
            key,
            json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": version},
                "paths": paths_value,
                "components": {"schemas": schemas},
            }),
        );
    }
    out
}

/// Names of the definitions `v` refers to (v3 refs).
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(s)) => {
                        if let Some(n) = s.strip_prefix(V3_REF_PREFIX) {
                            out.insert(n.to_string());
                        }
                    }
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// A v2 schema in v3 form: refs point into `components/schemas`, and a ref with siblings
/// (a description, a default) becomes `allOf: [{$ref}]` beside them.
pub fn convert_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            let mut reference = None;
            for (k, x) in m {
                if k == "$ref"
                    && let Some(s) = x.as_str()
                {
                    let name = s.strip_prefix(V2_REF_PREFIX).unwrap_or(s);
                    reference = Some(format!("{V3_REF_PREFIX}{name}"));
                } else {
                    out.insert(k.clone(), convert_schema(x));
                }
            }
            match reference {
                Some(r) if out.is_empty() => json!({"$ref": r}),
                Some(r) => {
                    out.insert("allOf".into(), json!([{"$ref": r}]));
                    Value::Object(out)
                }
                None => Value::Object(out),
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(convert_schema).collect()),
        other => other.clone(),
    }
}

fn parameter(p: &Value) -> Value {
    let mut out = Map::new();
    let mut schema = Map::new();
    for (k, v) in p.as_object().into_iter().flatten() {
        match k.as_str() {
            "type" | "format" | "items" => {
                schema.insert(k.clone(), v.clone());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.insert("schema".into(), Value::Object(schema));
    Value::Object(out)
}

fn operation(op: &Value) -> Value {
    let Some(m) = op.as_object() else {
        return op.clone();
    };
    let produces: Vec<Value> = m
        .get("produces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![json!("application/json")]);
    let consumes: Vec<Value> = m
        .get("consumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![json!("*/*")]);
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "produces" | "consumes" | "schemes" => {}
            "parameters" => {
                let mut params = Vec::new();
                for p in v.as_array().into_iter().flatten() {
                    if p["in"] == "body" {
                        let schema = convert_schema(&p["schema"]);
                        let content: Map<String, Value> = consumes
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|ct| (ct.to_string(), json!({"schema": schema})))
                            .collect();
                        out.insert(
                            "requestBody".into(),
                            json!({"content": content, "required": true}),
                        );
                    } else {
                        params.push(parameter(p));
                    }
                }
                out.insert("parameters".into(), Value::Array(params));
            }
            "responses" => {
                let mut responses = Map::new();
                for (code, r) in v.as_object().into_iter().flatten() {
                    let mut resp = json!({"description": r["description"]});
                    if let Some(schema) = r.get("schema") {
                        let schema = convert_schema(schema);
                        let content: Map<String, Value> = produces
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|ct| (ct.to_string(), json!({"schema": schema})))
                            .collect();
                        resp["content"] = Value::Object(content);
                    }
                    responses.insert(code.clone(), resp);
                }
                out.insert("responses".into(), Value::Object(responses));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in item.as_object().into_iter().flatten() {
        let converted = if k == "parameters" {
            Value::Array(v.as_array().into_iter().flatten().map(parameter).collect())
        } else {
            operation(v)
        };
        out.insert(k.clone(), converted);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::openapi::spec;
    use crate::registry::RESOURCES;

    #[test]
    fn one_document_per_group_version_with_every_reachable_schema() {
        let (defs, kinds) = spec::definitions();
        let paths = spec::paths(&kinds);
        let docs = documents("v1.32.0", &defs, &paths, &kinds);
        for info in RESOURCES {
            let doc = &docs[&gv_key(info.group, info.version)];
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let k = kinds.iter().find(|k| k.info == *info).unwrap();
            assert_eq!(
                schemas[&k.object]["x-kubernetes-group-version-kind"][0]["kind"],
                info.kind
            );
            let mut all = BTreeSet::new();
            refs(doc, &mut all);
            for r in all {
                assert!(schemas.contains_key(&r), "{r} missing from {}", info.plural);
            }
        }
        let core = &docs["api/v1"];
        let taints =
            &core["components"]["schemas"]["io.k8s.api.core.v1.NodeSpec"]["properties"]["taints"];
        assert_eq!(taints["x-kubernetes-list-type"], "atomic");
        assert_eq!(
            taints["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Taint"
        );
        // A described reference is wrapped, so v3 readers see both.
        let spec = &core["components"]["schemas"]["io.k8s.api.core.v1.Node"]["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.NodeSpec"
        );
        assert!(spec["description"].is_string());
        let patch = &core["paths"]["/api/v1/nodes/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Node");
        assert!(
            patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object()
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["schema"].is_object())
        );
        assert!(
            !core["paths"]
                .as_object()
                .unwrap()
                .keys()
                .any(|p| p.starts_with("/apis/"))
        );
    }
}
