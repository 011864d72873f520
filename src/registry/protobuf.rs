//! Protobuf wire structs of the kinds kubectl POSTs only as `application/vnd.kubernetes.protobuf`,
//! and their conversion to the JSON Go's encoder would write for the same object (empty
//! `omitempty` fields left out), so the rest of the server sees one format. Field numbers come
//! from upstream's `generated.proto` files (`k8s.io/api/{core,authorization,authentication}/v1`,
//! `apimachinery/pkg/apis/meta/v1`, `apimachinery/pkg/runtime`). Kind declarations point at the
//! decoders at the bottom; the envelope is unwrapped by the API server.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat};
use prost::Message;
use serde_json::{Map, Value, json};

// ------------------------------------------------------------------------------------------------
// Wire structs. Field numbers from upstream generated.proto; unknown fields are skipped by prost.
// ------------------------------------------------------------------------------------------------

/// `k8s.io.apimachinery.pkg.runtime.Unknown`.
#[derive(Clone, PartialEq, Message)]
pub struct Unknown {
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<RuntimeTypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    pub raw: Vec<u8>,
    #[prost(string, tag = "3")]
    pub content_encoding: String,
    #[prost(string, tag = "4")]
    pub content_type: String,
}

/// `runtime.TypeMeta` (note: apiVersion is 1 here, unlike meta/v1's TypeMeta).
#[derive(Clone, PartialEq, Message)]
pub struct RuntimeTypeMeta {
    #[prost(string, tag = "1")]
    pub api_version: String,
    #[prost(string, tag = "2")]
    pub kind: String,
}

/// `meta.v1.Time` / `MicroTime` (seconds and nanos since the epoch).
#[derive(Clone, PartialEq, Message)]
pub struct Time {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `meta.v1.OwnerReference`.
#[derive(Clone, PartialEq, Message)]
pub struct OwnerReference {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub uid: String,
    #[prost(string, tag = "5")]
    pub api_version: String,
    #[prost(bool, optional, tag = "6")]
    pub controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub block_owner_deletion: Option<bool>,
}

/// `meta.v1.ObjectMeta` (managedFields, 17, and selfLink, 4, are dropped).
#[derive(Clone, PartialEq, Message)]
pub struct ObjectMeta {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub generate_name: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(string, tag = "5")]
    pub uid: String,
    #[prost(string, tag = "6")]
    pub resource_version: String,
    #[prost(int64, tag = "7")]
    pub generation: i64,
    #[prost(message, optional, tag = "8")]
    pub creation_timestamp: Option<Time>,
    #[prost(message, optional, tag = "9")]
    pub deletion_timestamp: Option<Time>,
    #[prost(int64, optional, tag = "10")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    pub annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    pub owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    pub finalizers: Vec<String>,
}

/// `core.v1.Namespace`.
#[derive(Clone, PartialEq, Message)]
pub struct Namespace {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<NamespaceSpec>,
    #[prost(message, optional, tag = "3")]
    pub status: Option<NamespaceStatus>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    pub finalizers: Vec<String>,
}

/// `core.v1.NamespaceStatus` (conditions, 2, are server-owned and dropped).
#[derive(Clone, PartialEq, Message)]
pub struct NamespaceStatus {
    #[prost(string, tag = "1")]
    pub phase: String,
}

/// `core.v1.Secret`.
#[derive(Clone, PartialEq, Message)]
pub struct Secret {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    pub data: BTreeMap<String, Vec<u8>>,
    #[prost(string, tag = "3")]
    pub r#type: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    pub immutable: Option<bool>,
}

/// `core.v1.ConfigMap`.
#[derive(Clone, PartialEq, Message)]
pub struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    pub data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    pub binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    pub immutable: Option<bool>,
}

/// `authorization.v1.SelfSubjectAccessReview`.
#[derive(Clone, PartialEq, Message)]
pub struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<SelfSubjectAccessReviewSpec>,
    #[prost(message, optional, tag = "3")]
    pub status: Option<SubjectAccessReviewStatus>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SelfSubjectAccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    pub resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    pub non_resource_attributes: Option<NonResourceAttributes>,
}

/// `authorization.v1.ResourceAttributes`. The 1.31+ `fieldSelector` (8) and `labelSelector` (9)
/// attributes are not decoded; kubectl's `auth can-i` does not send them.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceAttributes {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub verb: String,
    #[prost(string, tag = "3")]
    pub group: String,
    #[prost(string, tag = "4")]
    pub version: String,
    #[prost(string, tag = "5")]
    pub resource: String,
    #[prost(string, tag = "6")]
    pub subresource: String,
    #[prost(string, tag = "7")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct NonResourceAttributes {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(string, tag = "2")]
    pub verb: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct SubjectAccessReviewStatus {
    #[prost(bool, tag = "1")]
    pub allowed: bool,
    #[prost(string, tag = "2")]
    pub reason: String,
    #[prost(string, tag = "3")]
    pub evaluation_error: String,
    #[prost(bool, tag = "4")]
    pub denied: bool,
}

/// `authentication.v1.SelfSubjectReview`.
#[derive(Clone, PartialEq, Message)]
pub struct SelfSubjectReview {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub status: Option<SelfSubjectReviewStatus>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SelfSubjectReviewStatus {
    #[prost(message, optional, tag = "1")]
    pub user_info: Option<UserInfo>,
}

/// `authentication.v1.UserInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct UserInfo {
    #[prost(string, tag = "1")]
    pub username: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, repeated, tag = "3")]
    pub groups: Vec<String>,
    #[prost(btree_map = "string, message", tag = "4")]
    pub extra: BTreeMap<String, ExtraValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExtraValue {
    #[prost(string, repeated, tag = "1")]
    pub items: Vec<String>,
}

/// Inserts a string unless empty (Go's `omitempty`).
fn put_str(m: &mut Map<String, Value>, key: &str, v: String) {
    if !v.is_empty() {
        m.insert(key.into(), Value::String(v));
    }
}

fn str_map(m: BTreeMap<String, String>) -> Value {
    Value::Object(m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn bytes_map(m: BTreeMap<String, Vec<u8>>) -> Value {
    Value::Object(
        m.into_iter()
            .map(|(k, v)| (k, Value::String(B64.encode(v))))
            .collect(),
    )
}

/// RFC 3339 like Go's `metav1.Time` (seconds, `Z`); `None` for the zero time, which Go
/// marshals as `null` and we leave out.
fn time_json(t: Option<Time>) -> Option<Value> {
    let t = t?;
    if t.seconds == 0 && t.nanos == 0 {
        return None;
    }
    let dt = DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))?;
    Some(Value::String(dt.to_rfc3339_opts(SecondsFormat::Secs, true)))
}

fn meta_json(meta: Option<ObjectMeta>) -> Value {
    let m = meta.unwrap_or_default();
    let mut out = Map::new();
    put_str(&mut out, "name", m.name);
    put_str(&mut out, "generateName", m.generate_name);
    put_str(&mut out, "namespace", m.namespace);
    put_str(&mut out, "uid", m.uid);
    put_str(&mut out, "resourceVersion", m.resource_version);
    if m.generation != 0 {
        out.insert("generation".into(), m.generation.into());
    }
    if let Some(t) = time_json(m.creation_timestamp) {
        out.insert("creationTimestamp".into(), t);
    }
    if let Some(t) = time_json(m.deletion_timestamp) {
        out.insert("deletionTimestamp".into(), t);
    }
    if let Some(s) = m.deletion_grace_period_seconds {
        out.insert("deletionGracePeriodSeconds".into(), s.into());
    }
    if !m.labels.is_empty() {
        out.insert("labels".into(), str_map(m.labels));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), str_map(m.annotations));
    }
    if !m.owner_references.is_empty() {
        let refs = m
            .owner_references
            .into_iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("apiVersion".into(), Value::String(r.api_version));
                o.insert("kind".into(), Value::String(r.kind));
                o.insert("name".into(), Value::String(r.name));
                o.insert("uid".into(), Value::String(r.uid));
                if let Some(c) = r.controller {
                    o.insert("controller".into(), c.into());
                }
                if let Some(b) = r.block_owner_deletion {
                    o.insert("blockOwnerDeletion".into(), b.into());
                }
                Value::Object(o)
            })
            .collect();
        out.insert("ownerReferences".into(), Value::Array(refs));
    }
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    Value::Object(out)
}

fn namespace_json(ns: Namespace) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), meta_json(ns.metadata));
    let mut spec = Map::new();
    let finalizers = ns.spec.unwrap_or_default().finalizers;
    if !finalizers.is_empty() {
        spec.insert("finalizers".into(), json!(finalizers));
    }
    out.insert("spec".into(), Value::Object(spec));
    let mut status = Map::new();
    put_str(&mut status, "phase", ns.status.unwrap_or_default().phase);
    out.insert("status".into(), Value::Object(status));
    out
}

fn secret_json(s: Secret) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), meta_json(s.metadata));
    if !s.data.is_empty() {
        out.insert("data".into(), bytes_map(s.data));
    }
    if !s.string_data.is_empty() {
        out.insert("stringData".into(), str_map(s.string_data));
    }
    put_str(&mut out, "type", s.r#type);
    if let Some(i) = s.immutable {
        out.insert("immutable".into(), i.into());
    }
    out
}

fn configmap_json(c: ConfigMap) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), meta_json(c.metadata));
    if !c.data.is_empty() {
        out.insert("data".into(), str_map(c.data));
    }
    if !c.binary_data.is_empty() {
        out.insert("binaryData".into(), bytes_map(c.binary_data));
    }
    if let Some(i) = c.immutable {
        out.insert("immutable".into(), i.into());
    }
    out
}

fn ssar_json(r: SelfSubjectAccessReview) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), meta_json(r.metadata));
    let spec = r.spec.unwrap_or_default();
    let mut spec_json = Map::new();
    if let Some(ra) = spec.resource_attributes {
        let mut m = Map::new();
        put_str(&mut m, "namespace", ra.namespace);
        put_str(&mut m, "verb", ra.verb);
        put_str(&mut m, "group", ra.group);
        put_str(&mut m, "version", ra.version);
        put_str(&mut m, "resource", ra.resource);
        put_str(&mut m, "subresource", ra.subresource);
        put_str(&mut m, "name", ra.name);
        spec_json.insert("resourceAttributes".into(), Value::Object(m));
    }
    if let Some(nra) = spec.non_resource_attributes {
        let mut m = Map::new();
        put_str(&mut m, "path", nra.path);
        put_str(&mut m, "verb", nra.verb);
        spec_json.insert("nonResourceAttributes".into(), Value::Object(m));
    }
    out.insert("spec".into(), Value::Object(spec_json));
    let st = r.status.unwrap_or_default();
    let mut status = Map::new();
    status.insert("allowed".into(), st.allowed.into());
    if st.denied {
        status.insert("denied".into(), true.into());
    }
    put_str(&mut status, "reason", st.reason);
    put_str(&mut status, "evaluationError", st.evaluation_error);
    out.insert("status".into(), Value::Object(status));
    out
}

fn ssr_json(r: SelfSubjectReview) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), meta_json(r.metadata));
    let ui = r.status.unwrap_or_default().user_info.unwrap_or_default();
    let mut user = Map::new();
    put_str(&mut user, "username", ui.username);
    put_str(&mut user, "uid", ui.uid);
    if !ui.groups.is_empty() {
        user.insert("groups".into(), json!(ui.groups));
    }
    if !ui.extra.is_empty() {
        let extra: Map<String, Value> = ui
            .extra
            .into_iter()
            .map(|(k, v)| (k, json!(v.items)))
            .collect();
        user.insert("extra".into(), Value::Object(extra));
    }
    out.insert("status".into(), json!({ "userInfo": user }));
    out
}

// ------------------------------------------------------------------------------------------------
// Decoders named by the kind declarations
// ------------------------------------------------------------------------------------------------

/// `v1` Namespace.
pub fn decode_namespace(raw: &[u8]) -> Result<Map<String, Value>, prost::DecodeError> {
    Ok(namespace_json(Namespace::decode(raw)?))
}

/// `v1` Secret.
pub fn decode_secret(raw: &[u8]) -> Result<Map<String, Value>, prost::DecodeError> {
    Ok(secret_json(Secret::decode(raw)?))
}

/// `v1` ConfigMap.
pub fn decode_configmap(raw: &[u8]) -> Result<Map<String, Value>, prost::DecodeError> {
    Ok(configmap_json(ConfigMap::decode(raw)?))
}

/// `authorization.k8s.io/v1` SelfSubjectAccessReview.
pub fn decode_ssar(raw: &[u8]) -> Result<Map<String, Value>, prost::DecodeError> {
    Ok(ssar_json(SelfSubjectAccessReview::decode(raw)?))
}

/// `authentication.k8s.io/v1` SelfSubjectReview.
pub fn decode_ssr(raw: &[u8]) -> Result<Map<String, Value>, prost::DecodeError> {
    Ok(ssr_json(SelfSubjectReview::decode(raw)?))
}
