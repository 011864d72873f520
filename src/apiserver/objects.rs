//! Validation and server-side defaulting of incoming objects before they are stored: the checks
//! upstream's decoder and `ValidateObjectMeta`/per-kind validators make, and the
//! `PrepareForCreate`/`PrepareForUpdate` rules of the registry strategies, for the kinds in
//! [`crate::registry::RESOURCES`], whose declarations carry the per-kind hooks.
//!
//! Order of a write, as upstream: [`check_body_size`] → decode (JSON, or `protobuf::decode_to_json`)
//! → for PATCH `patch::apply_patch` → [`validate_body`] (400 for undecodable or mismatched
//! bodies, 422 for invalid fields) → [`prepare_create`] / [`prepare_update`] /
//! [`prepare_status_update`] (server-owned fields; 422 for forbidden changes) → store.
//!
//! Everything here is a pure function of its arguments (plus fresh randomness for uids and
//! generated names).

use serde_json::{Value, json};

use super::status::ApiError;
use crate::registry::fields::{
    FieldCause, cause, ensure_object, invalid_value, meta, meta_str, metadata_mut,
};
use crate::registry::{ResourceInfo, lookup_kind};
use crate::validation::{validate_dns_label, validate_label_key, validate_label_value};

/// Largest request body accepted (upstream's `MaxRequestBodyBytes`, 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Upstream's limit on the total size of an object's annotations.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// 413 for bodies over [`MAX_BODY_BYTES`].
pub fn check_body_size(len: usize) -> Result<(), ApiError> {
    if len > MAX_BODY_BYTES {
        Err(ApiError::RequestEntityTooLarge(format!(
            "limit is {MAX_BODY_BYTES}"
        )))
    } else {
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// validate_body
// ------------------------------------------------------------------------------------------------

/// Checks a request body (POST/PUT, or a patched object) for the resource `info` addressed by
/// the URL.
///
/// - 400 BadRequest, as upstream's decoder: not a JSON object; `apiVersion` other than the
///   resource's; `kind` other than the resource's; a field of the wrong type (the body is
///   deserialized into the `k8s-openapi` type, serde's message is kept); `metadata.name` differing
///   from `path_name`; `metadata.namespace` differing from `path_namespace`.
/// - 422 Invalid, all causes at once: name/generateName missing or not a DNS subdomain (label for
///   namespaces, DNS-1035 label for services), namespace, label and annotation keys/values, Node
///   taints, Secret/ConfigMap keys and sizes, Secret type-specific keys, SSAR attributes.
///
/// Missing `apiVersion`/`kind` are accepted (upstream defaults them from the URL).
/// `path_name` is `None` on create; then `metadata.name` or `metadata.generateName` is required.
pub fn validate_body(
    info: &ResourceInfo,
    body: &Value,
    path_namespace: Option<&str>,
    path_name: Option<&str>,
) -> Result<(), ApiError> {
    let api_version = info.api_version();
    let Value::Object(obj) = body else {
        return Err(ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type {}): expected a JSON object, got {}",
            info.kind,
            json_type(body)
        )));
    };
    let body_av = match obj.get("apiVersion") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "the object provided is unrecognized (must be of type {}): apiVersion must be a string, got {}",
                info.kind,
                json_type(other)
            )));
        }
    };
    let body_kind = match obj.get("kind") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "the object provided is unrecognized (must be of type {}): kind must be a string, got {}",
                info.kind,
                json_type(other)
            )));
        }
    };
    if !body_av.is_empty() && body_av != api_version {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({body_av}) does not match the expected API version ({api_version})"
        )));
    }
    if !body_kind.is_empty() && body_kind != info.kind {
        // Upstream decodes the other kind, then fails to convert it (transformDecodeError).
        let why = match lookup_kind(&api_version, body_kind) {
            Some(other) => format!(
                "converting ({}.{}) to ({}.{}): unknown conversion",
                other.version, other.kind, info.go_package, info.kind
            ),
            None => format!("no kind \"{body_kind}\" is registered for version \"{api_version}\""),
        };
        return Err(decode_error(info, body_kind, &why));
    }

    typed_check(info, body).map_err(|why| decode_error(info, info.kind, &why))?;

    // Name and namespace against the URL (upstream `checkName` / `ValidNamespace`): 400.
    let name = meta_str(body, "name");
    if let Some(url_name) = path_name
        && name != url_name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name})"
        )));
    }
    let namespace = meta_str(body, "namespace");
    if info.namespaced
        && let Some(url_ns) = path_namespace
        && !namespace.is_empty()
        && namespace != url_ns
    {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }

    let mut causes = Vec::new();
    if info.is_stored() {
        validate_metadata(info, body, path_namespace, path_name.is_none(), &mut causes);
    }
    (info.validate)(body, &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        let shown = if name.is_empty() {
            meta_str(body, "generateName")
        } else {
            name
        };
        Err(ApiError::Invalid {
            kind: info.qualified_kind(),
            name: shown.to_string(),
            causes,
        })
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Type errors of the body, from the kind's typed decoder. k8s-openapi insists that a present
/// apiVersion/kind equals its own; empty strings were accepted by the caller (defaulted from the
/// URL), so they are left out of the typed decode.
fn typed_check(info: &ResourceInfo, body: &Value) -> Result<(), String> {
    match body {
        Value::Object(m)
            if m.get("apiVersion") == Some(&json!(""))
                || m.get("kind") == Some(&json!(""))
                || m.get("apiVersion") == Some(&Value::Null)
                || m.get("kind") == Some(&Value::Null) =>
        {
            let mut m = m.clone();
            m.remove("apiVersion");
            m.remove("kind");
            (info.type_check)(&Value::Object(m))
        }
        other => (info.type_check)(other),
    }
}

/// Upstream `transformDecodeError`: `<Kind> in version "<v>" cannot be handled as a <Kind>: ...`.
fn decode_error(info: &ResourceInfo, data_kind: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{data_kind} in version \"{}\" cannot be handled as a {}: {why}",
        info.version, info.kind
    ))
}

fn validate_metadata(
    info: &ResourceInfo,
    body: &Value,
    path_namespace: Option<&str>,
    creating: bool,
    causes: &mut Vec<FieldCause>,
) {
    let name = meta_str(body, "name");
    let generate_name = meta_str(body, "generateName");
    if name.is_empty() {
        if !creating || generate_name.is_empty() {
            causes.push(cause(
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        } else {
            // Upstream validates the prefix as if a suffix followed: a trailing '-' is fine.
            let masked = match generate_name.strip_suffix('-') {
                Some(p) if !p.is_empty() => format!("{p}a"),
                _ => generate_name.to_string(),
            };
            if let Err(e) = (info.name_rule)(&masked) {
                causes.push(invalid_value("metadata.generateName", generate_name, e));
            }
        }
    } else if let Err(e) = (info.name_rule)(name) {
        causes.push(invalid_value("metadata.name", name, e));
    }

    if info.namespaced {
        let ns = match meta_str(body, "namespace") {
            "" => path_namespace.unwrap_or_default(),
            ns => ns,
        };
        if ns.is_empty() {
            causes.push(cause("metadata.namespace", "Required value"));
        } else if let Err(e) = validate_dns_label(ns) {
            causes.push(invalid_value("metadata.namespace", ns, e));
        }
    }

    if let Some(labels) = meta(body)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            if let Err(e) = validate_label_key(k) {
                causes.push(invalid_value("metadata.labels", k, e));
            }
            let v = v.as_str().unwrap_or_default();
            if let Err(e) = validate_label_value(v) {
                causes.push(invalid_value("metadata.labels", v, e));
            }
        }
    }
    if let Some(ann) = meta(body)
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        let mut total = 0usize;
        for (k, v) in ann {
            // Upstream lower-cases annotation keys before the qualified-name check.
            if let Err(e) = validate_label_key(&k.to_ascii_lowercase()) {
                causes.push(invalid_value("metadata.annotations", k, e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > MAX_ANNOTATIONS_BYTES {
            causes.push(cause(
                "metadata.annotations",
                format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
            ));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Defaulting on create and update
// ------------------------------------------------------------------------------------------------

fn copy_field(from: &Value, to: &mut Value, key: &str) {
    match from.get(key) {
        Some(v) => to[key] = v.clone(),
        None => {
            if let Some(o) = to.as_object_mut() {
                o.remove(key);
            }
        }
    }
}

fn copy_meta_field(old: &Value, new: &mut Value, key: &str) {
    let v = meta(old).and_then(|m| m.get(key)).cloned();
    let m = metadata_mut(new);
    match v {
        Some(v) => {
            m.insert(key.into(), v);
        }
        None => {
            m.remove(key);
        }
    }
}

/// Metadata rules common to every update (upstream `BeforeUpdate` + `ValidateObjectMetaUpdate`):
/// uid/name/namespace immutable, creation and deletion timestamps and generation kept.
fn carry_metadata(info: &ResourceInfo, old: &Value, new: &mut Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    ensure_object(new);
    new["apiVersion"] = Value::String(info.api_version());
    new["kind"] = Value::String(info.kind.to_string());
    metadata_mut(new);

    let immutable = |field: &str, value: &str| {
        invalid_value(format!("metadata.{field}"), value, "field is immutable")
    };
    for key in ["uid", "name"] {
        let (o, n) = (
            meta_str(old, key).to_string(),
            meta_str(new, key).to_string(),
        );
        if n.is_empty() {
            copy_meta_field(old, new, key);
        } else if n != o {
            causes.push(immutable(key, &n));
        }
    }
    if info.namespaced {
        let (o, n) = (
            meta_str(old, "namespace").to_string(),
            meta_str(new, "namespace").to_string(),
        );
        if n.is_empty() {
            copy_meta_field(old, new, "namespace");
        } else if n != o {
            causes.push(immutable("namespace", &n));
        }
    } else {
        metadata_mut(new).remove("namespace");
    }
    // Only DELETE sets these (through the server's own path, not through an update).
    for key in [
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        copy_meta_field(old, new, key);
    }
    metadata_mut(new).remove("selfLink");
    causes
}

fn invalid(info: &ResourceInfo, obj: &Value, causes: Vec<FieldCause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            kind: info.qualified_kind(),
            name: meta_str(obj, "name").to_string(),
            causes,
        })
    }
}

/// Prepares an update of the main resource (PUT, or PATCH after `apply_patch`): keeps immutable
/// and server-owned metadata from `old`, keeps `old`'s `status` for kinds with a status
/// subresource (upstream `PrepareForUpdate`; change status through [`prepare_status_update`]),
/// bumps `generation` when `spec` changed, and applies kind rules: Namespace keeps its
/// `spec.finalizers` (only `/finalize` may change them) and name label; Secret folds `stringData`;
/// an immutable Secret/ConfigMap refuses data changes and un-setting `immutable`, and a Secret's
/// `type` never changes (422, upstream messages). `metadata.resourceVersion` is left as sent: it
/// is the caller's precondition.
pub fn prepare_update(info: &ResourceInfo, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let mut causes = carry_metadata(info, old, new);
    if info.subresources.contains(&"status") {
        copy_field(old, new, "status");
    }
    (info.on_update)(old, new, &mut causes);
    if info.tracks_generation {
        let old_gen = meta(old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(1);
        let changed = old.get("spec") != new.get("spec");
        let generation = if changed { old_gen + 1 } else { old_gen };
        metadata_mut(new).insert("generation".into(), json!(generation));
    }
    invalid(info, new, causes)
}

/// Prepares an update through the `/status` subresource: only `status` (and ordinary metadata
/// such as labels) may change; every other top-level field (`spec`, ...) is taken from `old`, as
/// upstream's node/namespace/pod/service status strategies do. `generation` stays.
pub fn prepare_status_update(
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    let causes = carry_metadata(info, old, new);
    let keep = |k: &str| matches!(k, "apiVersion" | "kind" | "metadata" | "status");
    if let (Some(o), Some(n)) = (old.as_object(), new.as_object_mut()) {
        n.retain(|k, _| keep(k) || o.contains_key(k));
        for (k, v) in o {
            if !keep(k) {
                n.insert(k.clone(), v.clone());
            }
        }
    }
    invalid(info, new, causes)
}

/// Finalizer names that need no domain prefix (upstream `standardFinalizers`).
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Prepares an update through a namespace's `/finalize` subresource: `spec.finalizers` (and
/// ordinary metadata) come from `new`, `status` stays (upstream `namespaceFinalizeStrategy`);
/// every finalizer must be a standard name or domain-qualified (`ValidateFinalizerName`).
pub fn prepare_finalize(info: &ResourceInfo, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let mut causes = carry_metadata(info, old, new);
    copy_field(old, new, "status");
    let finalizers = new
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, f) in finalizers.iter().enumerate() {
        let f = f.as_str().unwrap_or_default();
        if !STANDARD_FINALIZERS.contains(&f) && !f.contains('/') {
            causes.push(invalid_value(
                format!("spec.finalizers[{i}]"),
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    invalid(info, new, causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NAMESPACE_NAME_LABEL;
    use crate::registry::fields::MAX_DATA_BYTES;
    use crate::registry::lookup;
    use crate::storage::metadata::{
        MAX_GENERATE_PREFIX, NAME_ALPHABET, generate_name, prepare_create,
    };
    use chrono::TimeZone;

    fn res(group: &str, plural: &str) -> &'static ResourceInfo {
        lookup(group, "v1", plural).unwrap()
    }

    fn nodes() -> &'static ResourceInfo {
        res("", "nodes")
    }

    /// (resource, body, path namespace, path name, expected code, expected fragment).
    type Case = (
        &'static ResourceInfo,
        Value,
        Option<&'static str>,
        Option<&'static str>,
        u16,
        &'static str,
    );

    #[test]
    fn validate_body_table() {
        let ns = res("", "namespaces");
        let secrets = res("", "secrets");
        let cms = res("", "configmaps");
        let svcs = res("", "services");
        let leases = res("coordination.k8s.io", "leases");
        let ssar = res("authorization.k8s.io", "selfsubjectaccessreviews");
        let cases: Vec<Case> = vec![
            // Accepted.
            (
                nodes(),
                json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}),
                None,
                None,
                0,
                "",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1"}}),
                None,
                Some("n1"),
                0,
                "",
            ),
            (
                nodes(),
                json!({"apiVersion":"","kind":"","metadata":{"name":"n1"}}),
                None,
                None,
                0,
                "",
            ),
            (
                ns,
                json!({"metadata":{"generateName":"team-"}}),
                None,
                None,
                0,
                "",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s","namespace":"default"},"data":{"a.b":"Yg=="}}),
                Some("default"),
                None,
                0,
                "",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s"}}),
                Some("default"),
                None,
                0,
                "",
            ),
            (
                leases,
                json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"n1"},
                            "spec":{"holderIdentity":"n1","leaseDurationSeconds":40,"renewTime":"2024-01-01T00:00:00.000000Z"}}),
                Some("kube-node-lease"),
                None,
                0,
                "",
            ),
            (
                ssar,
                json!({"spec":{"resourceAttributes":{"verb":"list","resource":"nodes"}}}),
                None,
                None,
                0,
                "",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1","labels":{"example.com/a":"b","c":""},
                                         "annotations":{"Example.COM/X":"anything at all"}},
                             "spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"},{"key":"k","effect":"NoExecute"}]}}),
                None,
                None,
                0,
                "",
            ),
            // 400: shape, version, kind, types, URL mismatches.
            (nodes(), json!([1]), None, None, 400, "must be of type Node"),
            (
                nodes(),
                json!({"apiVersion":"v2","kind":"Node","metadata":{"name":"n1"}}),
                None,
                None,
                400,
                "the API version in the data (v2) does not match the expected API version (v1)",
            ),
            (
                leases,
                json!({"apiVersion":"v1","kind":"Lease"}),
                None,
                None,
                400,
                "the API version in the data (v1) does not match the expected API version (coordination.k8s.io/v1)",
            ),
            (
                ns,
                json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}),
                None,
                None,
                400,
                "Pod in version \"v1\" cannot be handled as a Namespace: converting (v1.Pod) to (core.Namespace): unknown conversion",
            ),
            (
                ns,
                json!({"kind":"Foo","metadata":{"name":"x"}}),
                None,
                None,
                400,
                "no kind \"Foo\" is registered for version \"v1\"",
            ),
            (
                nodes(),
                json!({"kind":7}),
                None,
                None,
                400,
                "kind must be a string",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1"},"spec":{"unschedulable":"yes"}}),
                None,
                None,
                400,
                "Node in version \"v1\" cannot be handled as a Node: invalid type: string \"yes\", expected a boolean",
            ),
            (
                nodes(),
                json!({"metadata":"n1"}),
                None,
                None,
                400,
                "cannot be handled as a Node",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s"},"data":{"a":"not base64!"}}),
                Some("default"),
                None,
                400,
                "cannot be handled as a Secret",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n2"}}),
                None,
                Some("n1"),
                400,
                "the name of the object (n2) does not match the name on the URL (n1)",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s","namespace":"other"}}),
                Some("default"),
                None,
                400,
                "the namespace of the provided object does not match the namespace sent on the request",
            ),
            // 422: fields.
            (
                nodes(),
                json!({"metadata":{}}),
                None,
                None,
                422,
                "metadata.name: Required value: name or generateName is required",
            ),
            (
                nodes(),
                json!({"metadata":{"generateName":"x-"}}),
                None,
                Some(""),
                422,
                "metadata.name: Required value",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"Bad_Name"}}),
                None,
                None,
                422,
                "Node \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\"",
            ),
            (
                ns,
                json!({"metadata":{"name":"a.b"}}),
                None,
                None,
                422,
                "not a valid DNS label",
            ),
            (
                ns,
                json!({"metadata":{"generateName":"Team-"}}),
                None,
                None,
                422,
                "metadata.generateName: Invalid value: \"Team-\"",
            ),
            (
                svcs,
                json!({"metadata":{"name":"1svc"}}),
                Some("default"),
                None,
                422,
                "DNS-1035",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s"}}),
                None,
                None,
                422,
                "metadata.namespace: Required value",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s"}}),
                Some("Bad"),
                None,
                422,
                "metadata.namespace: Invalid value: \"Bad\"",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1","labels":{"bad key":"v"}}}),
                None,
                None,
                422,
                "metadata.labels: Invalid value: \"bad key\"",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1","labels":{"k":"bad value"}}}),
                None,
                None,
                422,
                "metadata.labels: Invalid value: \"bad value\"",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1","annotations":{"-x":"v"}}}),
                None,
                None,
                422,
                "metadata.annotations: Invalid value: \"-x\"",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1","annotations":{"big":"x".repeat(MAX_ANNOTATIONS_BYTES)}}}),
                None,
                None,
                422,
                "metadata.annotations: Too long",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1"},"spec":{"taints":[{"key":"k","effect":"Sometimes"}]}}),
                None,
                None,
                422,
                "spec.taints[0].effect: Unsupported value: \"Sometimes\"",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1"},"spec":{"taints":[{"key":"k","value":"v"}]}}),
                None,
                None,
                422,
                "spec.taints[0].effect: Required value",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1"},"spec":{"taints":[{"key":"-k","effect":"NoSchedule"}]}}),
                None,
                None,
                422,
                "spec.taints[0].key: Invalid value: \"-k\"",
            ),
            (
                nodes(),
                json!({"metadata":{"name":"n1"},"spec":{"taints":[{"key":"k","effect":"NoSchedule"},{"key":"k","value":"2","effect":"NoSchedule"}]}}),
                None,
                None,
                422,
                "spec.taints[1]: Duplicate value",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s"},"stringData":{"a b":"x"}}),
                Some("default"),
                None,
                422,
                "stringData[a b]: Invalid value",
            ),
            (
                secrets,
                json!({"metadata":{"name":"s"},"type":"kubernetes.io/tls","data":{"tls.crt":"eA=="}}),
                Some("default"),
                None,
                422,
                "data[tls.key]: Required value",
            ),
            (
                cms,
                json!({"metadata":{"name":"c"},"data":{"..x":"1"}}),
                Some("default"),
                None,
                422,
                "must not start with '..'",
            ),
            (
                cms,
                json!({"metadata":{"name":"c"},"data":{"k":"1"},"binaryData":{"k":"eA=="}}),
                Some("default"),
                None,
                422,
                "duplicate of key present in binaryData",
            ),
            (
                cms,
                json!({"metadata":{"name":"c"},"data":{"k":"x".repeat(MAX_DATA_BYTES + 1)}}),
                Some("default"),
                None,
                422,
                "data: Too long",
            ),
            (
                ssar,
                json!({"spec":{}}),
                None,
                None,
                422,
                "exactly one of nonResourceAttributes or resourceAttributes",
            ),
            (
                leases,
                json!({"metadata":{"name":"Bad"}}),
                Some("kube-node-lease"),
                None,
                422,
                "Lease.coordination.k8s.io \"Bad\" is invalid",
            ),
        ];
        for (i, (info, body, pns, pname, code, needle)) in cases.into_iter().enumerate() {
            let got = validate_body(info, &body, pns, pname);
            match (code, got) {
                (0, Ok(())) => {}
                (0, Err(e)) => panic!("case {i}: unexpected {e}"),
                (_, Ok(())) => panic!("case {i}: expected {code}"),
                (_, Err(e)) => {
                    assert_eq!(e.code(), code, "case {i}: {e}");
                    assert!(e.to_string().contains(needle), "case {i}: {e}");
                }
            }
        }
    }

    #[test]
    fn invalid_collects_all_causes() {
        let e = validate_body(
            nodes(),
            &json!({"metadata":{"name":"n1","labels":{"-a":"b"}},
                    "spec":{"taints":[{"key":"k","effect":"X"}]}}),
            None,
            None,
        )
        .unwrap_err();
        let ApiError::Invalid { causes, .. } = &e else {
            panic!("{e:?}")
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.labels", "spec.taints[0].effect"]);
        assert_eq!(
            e.to_status()["details"]["causes"][1]["field"],
            "spec.taints[0].effect"
        );
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn create_defaults() {
        let mut n = json!({"metadata":{"name":"n1","resourceVersion":"9","uid":"client","namespace":"x",
                                       "deletionTimestamp":"2020-01-01T00:00:00Z"},"spec":{}});
        prepare_create(nodes(), &mut n, None, now());
        let m = &n["metadata"];
        assert_eq!(n["kind"], "Node");
        assert_eq!(n["apiVersion"], "v1");
        assert_eq!(m["creationTimestamp"], "2025-01-02T03:04:05Z");
        assert_ne!(m["uid"], "client");
        assert_eq!(m["uid"].as_str().unwrap().len(), 36);
        assert_eq!(m["generation"], 1);
        for gone in ["resourceVersion", "namespace", "deletionTimestamp"] {
            assert!(m.get(gone).is_none(), "{gone}");
        }

        let mut ns = json!({"metadata":{"generateName":"team-"},"spec":{"finalizers":["x"]},"status":{"phase":"Terminating"}});
        prepare_create(res("", "namespaces"), &mut ns, None, now());
        let name = ns["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("team-") && name.len() == 10, "{name}");
        assert!(name[5..].bytes().all(|b| NAME_ALPHABET.contains(&b)));
        assert!(validate_dns_label(name).is_ok());
        assert_eq!(ns["status"], json!({"phase":"Active"}));
        assert_eq!(ns["spec"]["finalizers"], json!(["x", "kubernetes"]));
        assert_eq!(ns["metadata"]["labels"][NAMESPACE_NAME_LABEL], name);

        let mut s = json!({"metadata":{"name":"s"},"data":{"a":"YQ==","b":"Yg=="},"stringData":{"b":"B","c":"c"}});
        prepare_create(res("", "secrets"), &mut s, Some("default"), now());
        assert_eq!(s["data"], json!({"a":"YQ==","b":"Qg==","c":"Yw=="}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["metadata"]["namespace"], "default");
        assert!(s["metadata"].get("generation").is_none());

        let mut p = json!({"metadata":{"name":"p"},"spec":{},"status":{"phase":"Running"}});
        prepare_create(res("", "pods"), &mut p, Some("default"), now());
        assert_eq!(
            p["status"],
            json!({"phase":"Pending","qosClass":"BestEffort"})
        );

        let long = "a".repeat(80);
        assert_eq!(generate_name(&long).len(), MAX_GENERATE_PREFIX + 5);
    }

    fn stored_node() -> Value {
        json!({"apiVersion":"v1","kind":"Node",
               "metadata":{"name":"n1","uid":"u1","resourceVersion":"5","creationTimestamp":"2025-01-01T00:00:00Z",
                           "generation":1,"labels":{"a":"1"}},
               "spec":{"podCIDR":"10.42.0.0/24"},
               "status":{"conditions":[{"type":"Ready","status":"True"}]}})
    }

    #[test]
    fn update_keeps_server_fields_and_status() {
        let old = stored_node();
        let mut new = json!({"metadata":{"name":"n1","resourceVersion":"5","labels":{"a":"2"},
                                         "creationTimestamp":"1999-01-01T00:00:00Z","generation":77},
                             "spec":{"podCIDR":"10.42.0.0/24","unschedulable":true},
                             "status":{"conditions":[]}});
        prepare_update(nodes(), &old, &mut new).unwrap();
        let m = &new["metadata"];
        assert_eq!(m["uid"], "u1");
        assert_eq!(m["creationTimestamp"], "2025-01-01T00:00:00Z");
        assert_eq!(m["generation"], 2, "spec changed");
        assert_eq!(
            m["resourceVersion"], "5",
            "left for the caller's precondition"
        );
        assert_eq!(m["labels"]["a"], "2");
        assert_eq!(new["status"], old["status"], "main endpoint ignores status");
        assert_eq!(new["kind"], "Node");

        let mut same = stored_node();
        same["metadata"]["labels"]["b"] = json!("x");
        prepare_update(nodes(), &old, &mut same).unwrap();
        assert_eq!(same["metadata"]["generation"], 1, "spec unchanged");

        for (field, value) in [("uid", "other"), ("name", "n2")] {
            let mut bad = stored_node();
            bad["metadata"][field] = json!(value);
            let e = prepare_update(nodes(), &old, &mut bad).unwrap_err();
            assert_eq!(e.code(), 422);
            assert!(
                e.to_string().contains(&format!(
                    "metadata.{field}: Invalid value: \"{value}\": field is immutable"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn status_update_keeps_spec() {
        let old = stored_node();
        let mut new = stored_node();
        new["spec"] = json!({"unschedulable": true});
        new["status"] = json!({"conditions":[{"type":"Ready","status":"False"}]});
        new["extra"] = json!(1);
        new["metadata"]["labels"]["b"] = json!("2");
        prepare_status_update(nodes(), &old, &mut new).unwrap();
        assert_eq!(new["spec"], old["spec"]);
        assert_eq!(new["status"]["conditions"][0]["status"], "False");
        assert!(new.get("extra").is_none());
        assert_eq!(new["metadata"]["generation"], 1);
        assert_eq!(new["metadata"]["labels"]["b"], "2");
    }

    #[test]
    fn namespace_update_rules() {
        let nsr = res("", "namespaces");
        let mut old = json!({"metadata":{"name":"team"},"spec":{}});
        prepare_create(nsr, &mut old, None, now());
        let mut new = json!({"metadata":{"name":"team","labels":{}},"spec":{"finalizers":[]},"status":{"phase":"Terminating"}});
        prepare_update(nsr, &old, &mut new).unwrap();
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(new["status"]["phase"], "Active");
        assert_eq!(new["metadata"]["labels"][NAMESPACE_NAME_LABEL], "team");

        let mut st = old.clone();
        st["status"] = json!({"phase":"Terminating"});
        st["spec"] = json!({"finalizers": []});
        prepare_status_update(nsr, &old, &mut st).unwrap();
        assert_eq!(st["status"]["phase"], "Terminating");
        assert_eq!(st["spec"]["finalizers"], json!(["kubernetes"]));
    }

    #[test]
    fn immutable_secret_and_configmap() {
        let secrets = res("", "secrets");
        let cms = res("", "configmaps");
        let old = json!({"metadata":{"name":"s","namespace":"default","uid":"u"},"type":"Opaque",
                         "immutable":true,"data":{"a":"YQ=="}});
        let cases: Vec<(Value, Option<&str>)> = vec![
            (
                json!({"metadata":{"name":"s","labels":{"x":"y"}},"immutable":true,"data":{"a":"YQ=="}}),
                None,
            ),
            (
                json!({"metadata":{"name":"s"},"immutable":true,"data":{"a":"Yg=="}}),
                Some("data: Forbidden: field is immutable when `immutable` is set"),
            ),
            (
                json!({"metadata":{"name":"s"},"immutable":true,"stringData":{"b":"x"},"data":{"a":"YQ=="}}),
                Some("data: Forbidden"),
            ),
            (
                json!({"metadata":{"name":"s"},"immutable":false,"data":{"a":"YQ=="}}),
                Some("immutable: Forbidden: field is immutable when `immutable` is set"),
            ),
            (
                json!({"metadata":{"name":"s"},"immutable":true,"type":"kubernetes.io/tls","data":{"a":"YQ=="}}),
                Some("type: Invalid value: \"kubernetes.io/tls\": field is immutable"),
            ),
        ];
        for (i, (mut new, want)) in cases.into_iter().enumerate() {
            match (prepare_update(secrets, &old, &mut new), want) {
                (Ok(()), None) => assert_eq!(new["type"], "Opaque"),
                (Err(e), Some(w)) => {
                    assert_eq!(e.code(), 422, "case {i}");
                    assert!(e.to_string().contains(w), "case {i}: {e}");
                    assert!(
                        e.to_string().starts_with("Secret \"s\" is invalid"),
                        "case {i}: {e}"
                    );
                }
                (got, _) => panic!("case {i}: {got:?}"),
            }
        }
        let old = json!({"metadata":{"name":"c"},"immutable":true,"binaryData":{"b":"eA=="}});
        let mut ok =
            json!({"metadata":{"name":"c"},"immutable":true,"binaryData":{"b":"eA=="},"data":{}});
        prepare_update(cms, &old, &mut ok).unwrap();
        let mut bad = json!({"metadata":{"name":"c"},"immutable":true});
        let e = prepare_update(cms, &old, &mut bad).unwrap_err();
        assert!(e.to_string().contains("binaryData: Forbidden"), "{e}");
        // Mutable ones change freely.
        let mut new = json!({"metadata":{"name":"c"},"data":{"x":"1"}});
        prepare_update(
            cms,
            &json!({"metadata":{"name":"c"},"data":{"x":"0"}}),
            &mut new,
        )
        .unwrap();
    }

    #[test]
    fn body_size() {
        assert!(check_body_size(MAX_BODY_BYTES).is_ok());
        assert_eq!(check_body_size(MAX_BODY_BYTES + 1).unwrap_err().code(), 413);
    }

    /// What kubectl's protobuf creates turn into after decode → validate → prepare.
    #[test]
    fn kubectl_protobuf_creates_end_to_end() {
        use crate::apiserver::protobuf::decode_to_json;
        let cases: &[(&[u8], &str, &str, Option<&str>)] = &[
            (
                include_bytes!("testdata/create-namespace-foo.pb"),
                "",
                "namespaces",
                None,
            ),
            (
                include_bytes!("testdata/create-secret-generic-s1.pb"),
                "",
                "secrets",
                Some("default"),
            ),
            (
                include_bytes!("testdata/create-secret-generic-s2-binary.pb"),
                "",
                "secrets",
                Some("default"),
            ),
            (
                include_bytes!("testdata/create-secret-generic-empty.pb"),
                "",
                "secrets",
                Some("default"),
            ),
            (
                include_bytes!("testdata/create-configmap-c1.pb"),
                "",
                "configmaps",
                Some("default"),
            ),
            (
                include_bytes!("testdata/create-configmap-c2-binary.pb"),
                "",
                "configmaps",
                Some("default"),
            ),
            (
                include_bytes!("testdata/auth-can-i-list-nodes.pb"),
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                None,
            ),
            (
                include_bytes!("testdata/auth-can-i-get-healthz.pb"),
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                None,
            ),
            (
                include_bytes!("testdata/auth-whoami.pb"),
                "authentication.k8s.io",
                "selfsubjectreviews",
                None,
            ),
        ];
        for (i, (body, group, plural, ns)) in cases.iter().enumerate() {
            let info = res(group, plural);
            let mut obj = decode_to_json(body).unwrap();
            validate_body(info, &obj, *ns, None).unwrap_or_else(|e| panic!("case {i}: {e}"));
            if info.is_stored() {
                prepare_create(info, &mut obj, *ns, now());
                assert!(obj["metadata"]["uid"].is_string(), "case {i}");
                if info.namespaced {
                    assert_eq!(obj["metadata"]["namespace"], "default", "case {i}");
                }
            }
        }
    }
}
