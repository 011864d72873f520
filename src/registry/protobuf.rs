//! The Kubernetes protobuf encoding of every served kind, converted to and from the JSON form the
//! rest of the server works with.
//!
//! The message layouts are not hand-written: they come from upstream's own `generated.proto`
//! files (vendored under `proto/`, see `proto/README.md`), compiled into a descriptor set that is
//! embedded in the binary. A kind declares its protobuf package (`ResourceInfo::protobuf`); its
//! message is `<package>.<Kind>` and its list `<package>.<Kind>List`. The conversion walks the
//! descriptors, so every field of every kind (and `DeleteOptions`, `Status`, `WatchEvent`) is
//! covered the same way. The handful of apimachinery types whose JSON form is not their protobuf
//! shape are special-cased by message name: `Time`/`MicroTime` (RFC 3339 strings), `Duration`,
//! `IntOrString`, `Quantity`, `RawExtension` and `FieldsV1` (embedded JSON), and the
//! slice-typedef wrappers (`Verbs`, `ExtraValue`: a message whose only field is `items`).
//!
//! Decoding follows Go's JSON encoder for the decoded struct closely enough that the server sees
//! what a JSON client would send: empty strings, lists and maps are left out (`omitempty`),
//! numbers and booleans present on the wire are kept (a pointer field such as
//! `gracePeriodSeconds: 0` must survive), and a zero `Time` is left out as Go writes `null`.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as PValue,
};
use serde_json::{Map, Value};

/// The compiled descriptors of the vendored `.proto` files (`scripts/gen-proto-descriptors.sh`).
const DESCRIPTOR_SET: &[u8] = include_bytes!("../../proto/k8s.fds");

/// Decoded once: the descriptor set is constant data of the binary, so this is a lazily built
/// constant, not mutable shared state.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTOR_SET).expect("the embedded descriptor set decodes")
});

/// `<message>.<field>` of the Go fields whose zero number or `false` Go's JSON leaves out
/// (`omitempty` on a non-pointer field; `scripts/gen-proto-descriptors.sh`). Any other number or
/// boolean on the wire is kept even when zero: it may be a pointer (`gracePeriodSeconds: 0`).
const OMITEMPTY: &str = include_str!("../../proto/omitempty.txt");

/// Package of the core/v1 kinds.
pub const CORE_V1: &str = "k8s.io.api.core.v1";
/// The apps/v1 kinds' protobuf package.
pub const APPS_V1: &str = "k8s.io.api.apps.v1";
/// The batch/v1 kinds' protobuf package.
pub const BATCH_V1: &str = "k8s.io.api.batch.v1";
/// Package of apimachinery's meta/v1 messages (`DeleteOptions`, `Status`, `WatchEvent`).
pub const META_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const RUNTIME: &str = "k8s.io.apimachinery.pkg.runtime";

/// What went wrong converting between protobuf and JSON.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("no protobuf message {0}")]
    UnknownMessage(String),
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    #[error("{path}: {reason}")]
    Shape { path: String, reason: String },
}

fn shape(path: &str, reason: impl Into<String>) -> CodecError {
    CodecError::Shape {
        path: if path.is_empty() {
            ".".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

// ------------------------------------------------------------------------------------------------
// Wire structs of the envelope (runtime.Unknown) and of watch frames (meta/v1 WatchEvent).
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

/// `meta.v1.WatchEvent`: the event type and the object, itself an encoded envelope.
#[derive(Clone, PartialEq, Message)]
pub struct WatchEvent {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(message, optional, tag = "2")]
    pub object: Option<RawExtension>,
}

/// `runtime.RawExtension`.
#[derive(Clone, PartialEq, Message)]
pub struct RawExtension {
    #[prost(bytes = "vec", tag = "1")]
    pub raw: Vec<u8>,
}

// ------------------------------------------------------------------------------------------------
// Public conversion entry points
// ------------------------------------------------------------------------------------------------

/// The descriptor of a message by its full name (`k8s.io.api.core.v1.Pod`).
pub fn message(full_name: &str) -> Result<MessageDescriptor, CodecError> {
    POOL.get_message_by_name(full_name)
        .ok_or_else(|| CodecError::UnknownMessage(full_name.to_string()))
}

/// Decodes the protobuf bytes of message `full_name` into its JSON form (without
/// `apiVersion`/`kind`, which protobuf carries in the envelope).
pub fn decode(full_name: &str, raw: &[u8]) -> Result<Map<String, Value>, CodecError> {
    let desc = message(full_name)?;
    let msg = DynamicMessage::decode(desc, raw)?;
    match message_json(&msg) {
        Value::Object(m) => Ok(m),
        other => Ok(Map::from_iter([("value".to_string(), other)])),
    }
}

/// Encodes the JSON form of message `full_name` as protobuf bytes. Fields the message does not
/// have (`apiVersion`, `kind`, fields of newer versions) are left out, as Go's typed encoder
/// would never see them.
pub fn encode(full_name: &str, value: &Value) -> Result<Vec<u8>, CodecError> {
    let desc = message(full_name)?;
    let msg = json_message(&desc, value, "")?;
    Ok(msg.encode_to_vec())
}

// ------------------------------------------------------------------------------------------------
// protobuf → JSON
// ------------------------------------------------------------------------------------------------

/// The JSON of a message, honouring the special apimachinery types.
fn message_json(msg: &DynamicMessage) -> Value {
    let desc = msg.descriptor();
    match special(&desc) {
        Special::Time { micros } => {
            let secs = int_field(msg, 1);
            let nanos = int_field(msg, 2);
            if secs == 0 && nanos == 0 {
                return Value::Null;
            }
            let Some(dt) = DateTime::<Utc>::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0))
            else {
                return Value::Null;
            };
            let fmt = if micros {
                dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            } else {
                dt.to_rfc3339_opts(SecondsFormat::Secs, true)
            };
            return Value::String(fmt);
        }
        Special::Duration => return Value::String(go_duration(int_field(msg, 1))),
        Special::IntOrString => {
            return if int_field(msg, 1) == 1 {
                Value::String(str_field(msg, 3))
            } else {
                Value::from(int_field(msg, 2))
            };
        }
        Special::Quantity => return Value::String(str_field(msg, 1)),
        Special::EmbeddedJson => {
            let raw = bytes_field(msg, 1);
            if raw.is_empty() {
                return Value::Null;
            }
            // JSON as stored by JSON clients; anything else (an embedded protobuf object) is
            // kept as base64 rather than guessed at.
            return serde_json::from_slice(&raw)
                .unwrap_or_else(|_| Value::String(B64.encode(&raw)));
        }
        Special::ItemsWrapper => {
            let items = desc.get_field(1).map(|f| msg.get_field(&f).into_owned());
            return match items {
                Some(v) => value_json(&v),
                None => Value::Array(Vec::new()),
            };
        }
        Special::None => {}
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        if is_zero_scalar(value) && omits_zero(&field) {
            continue;
        }
        if let Some(v) = field_json(&field, value) {
            match v {
                Value::Object(inner) if is_inline(&field) => out.extend(inner),
                v => {
                    out.insert(field.json_name().to_string(), v);
                }
            }
        }
    }
    Value::Object(out)
}

fn is_zero_scalar(v: &PValue) -> bool {
    match v {
        PValue::Bool(b) => !b,
        PValue::I32(i) => *i == 0,
        PValue::I64(i) => *i == 0,
        PValue::U32(i) => *i == 0,
        PValue::U64(i) => *i == 0,
        PValue::F32(f) => *f == 0.0,
        PValue::F64(f) => *f == 0.0,
        _ => false,
    }
}

fn omits_zero(field: &FieldDescriptor) -> bool {
    let name = field.full_name();
    OMITEMPTY.lines().any(|l| l == name)
}

/// Fields that are embedded Go structs (`VolumeSource` in `Volume`, `ProbeHandler` in `Probe`,
/// ...): a message field in protobuf, their fields inlined into the parent in JSON. Go marks
/// them only in its struct definitions (`json:""` on an anonymous field), not in the `.proto`
/// files, so they are listed here from upstream's `types.go`.
fn is_inline(field: &FieldDescriptor) -> bool {
    const INLINE: &[&str] = &[
        "volumeSource",
        "persistentVolumeSource",
        "localObjectReference",
        "ephemeralContainerCommon",
    ];
    let embedded_handler = field.name() == "handler"
        && matches!(field.kind(), Kind::Message(m) if m.name() == "ProbeHandler");
    field.kind().as_message().is_some() && (INLINE.contains(&field.name()) || embedded_handler)
}

/// A present field's JSON, or `None` when Go's encoder would leave it out.
fn field_json(field: &FieldDescriptor, value: &PValue) -> Option<Value> {
    let v = value_json(value);
    let empty = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty() && !is_special_message(field),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() && (field.is_map() || field.is_list()),
        _ => false,
    };
    (!empty).then_some(v)
}

fn is_special_message(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Message(m) if !matches!(special(&m), Special::None))
}

fn value_json(v: &PValue) -> Value {
    match v {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(i) => Value::from(*i),
        PValue::I64(i) => Value::from(*i),
        PValue::U32(i) => Value::from(*i),
        PValue::U64(i) => Value::from(*i),
        PValue::F32(f) => Value::from(f64::from(*f)),
        PValue::F64(f) => Value::from(*f),
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => Value::String(B64.encode(b)),
        PValue::EnumNumber(n) => Value::from(*n),
        PValue::Message(m) => message_json(m),
        PValue::List(items) => Value::Array(items.iter().map(value_json).collect()),
        PValue::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(i) => i.to_string(),
                    MapKey::I64(i) => i.to_string(),
                    MapKey::U32(i) => i.to_string(),
                    MapKey::U64(i) => i.to_string(),
                };
                out.insert(key, value_json(v));
            }
            Value::Object(out)
        }
    }
}

fn int_field(msg: &DynamicMessage, number: u32) -> i64 {
    match msg.get_field_by_number(number).as_deref() {
        Some(PValue::I64(i)) => *i,
        Some(PValue::I32(i)) => i64::from(*i),
        _ => 0,
    }
}

fn str_field(msg: &DynamicMessage, number: u32) -> String {
    match msg.get_field_by_number(number).as_deref() {
        Some(PValue::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn bytes_field(msg: &DynamicMessage, number: u32) -> Vec<u8> {
    match msg.get_field_by_number(number).as_deref() {
        Some(PValue::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    }
}

/// Go's `time.Duration.String()` for the durations Kubernetes stores (whole units and
/// fractional seconds).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        return format!("{sign}{n}ns");
    }
    let (h, rem) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let secs = rem as f64 / 1e9;
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{secs}s"));
    out
}

/// Parses Go duration strings (`1h2m3.5s`, `300ms`) into nanoseconds.
fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "\u{b5}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    let v = total.round() as i64;
    Some(if neg { -v } else { v })
}

// ------------------------------------------------------------------------------------------------
// JSON → protobuf
// ------------------------------------------------------------------------------------------------

fn json_message(
    desc: &MessageDescriptor,
    value: &Value,
    path: &str,
) -> Result<DynamicMessage, CodecError> {
    let mut msg = DynamicMessage::new(desc.clone());
    match special(desc) {
        Special::Time { .. } => {
            let s = value
                .as_str()
                .ok_or_else(|| shape(path, "expected an RFC 3339 time string"))?;
            let dt = DateTime::parse_from_rfc3339(s)
                .map_err(|e| shape(path, format!("invalid time {s:?}: {e}")))?;
            msg.set_field_by_number(1, PValue::I64(dt.timestamp()));
            let nanos = dt.timestamp_subsec_nanos();
            if nanos != 0 {
                msg.set_field_by_number(2, PValue::I32(nanos as i32));
            }
            return Ok(msg);
        }
        Special::Duration => {
            let s = value
                .as_str()
                .ok_or_else(|| shape(path, "expected a duration string"))?;
            let n = parse_go_duration(s)
                .ok_or_else(|| shape(path, format!("invalid duration {s:?}")))?;
            msg.set_field_by_number(1, PValue::I64(n));
            return Ok(msg);
        }
        Special::IntOrString => {
            match value {
                Value::String(s) => {
                    msg.set_field_by_number(1, PValue::I64(1));
                    msg.set_field_by_number(3, PValue::String(s.clone()));
                }
                Value::Number(n) => {
                    let i = n
                        .as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| shape(path, format!("{n} is not an int32")))?;
                    msg.set_field_by_number(1, PValue::I64(0));
                    msg.set_field_by_number(2, PValue::I32(i));
                }
                _ => return Err(shape(path, "expected an integer or a string")),
            }
            return Ok(msg);
        }
        Special::Quantity => {
            let s = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(shape(path, "expected a quantity string")),
            };
            msg.set_field_by_number(1, PValue::String(s));
            return Ok(msg);
        }
        Special::EmbeddedJson => {
            let raw = serde_json::to_vec(value).expect("JSON values serialise");
            msg.set_field_by_number(1, PValue::Bytes(raw.into()));
            return Ok(msg);
        }
        Special::ItemsWrapper => {
            let field = desc.get_field(1).expect("wrapper has field 1");
            if let Some(v) = json_field(&field, value, path)? {
                msg.set_field(&field, v);
            }
            return Ok(msg);
        }
        Special::None => {}
    }
    let obj = value
        .as_object()
        .ok_or_else(|| shape(path, format!("expected an object for {}", desc.name())))?;
    for (key, v) in obj {
        let Some(field) = desc.get_field_by_json_name(key).filter(|f| !is_inline(f)) else {
            continue;
        };
        let sub = format!("{path}.{key}");
        if let Some(pv) = json_field(&field, v, &sub)? {
            msg.set_field(&field, pv);
        }
    }
    // Embedded structs take their fields from this same JSON object.
    for field in desc.fields().filter(is_inline) {
        if let Kind::Message(inner) = field.kind() {
            let sub = json_message(&inner, value, path)?;
            if sub.fields().next().is_some() {
                msg.set_field(&field, PValue::Message(sub));
            }
        }
    }
    Ok(msg)
}

/// The protobuf value of one field from its JSON, `None` for `null`.
fn json_field(
    field: &FieldDescriptor,
    value: &Value,
    path: &str,
) -> Result<Option<PValue>, CodecError> {
    if value.is_null() {
        return Ok(None);
    }
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(shape(path, "map field without an entry message"));
        };
        let value_field = entry.map_entry_value_field();
        let obj = value
            .as_object()
            .ok_or_else(|| shape(path, "expected an object"))?;
        let mut out = std::collections::HashMap::new();
        for (k, v) in obj {
            if v.is_null() {
                continue;
            }
            let pv = scalar_or_message(&value_field.kind(), v, &format!("{path}[{k}]"))?;
            out.insert(MapKey::String(k.clone()), pv);
        }
        return Ok(Some(PValue::Map(out)));
    }
    if field.is_list() {
        let items = value
            .as_array()
            .ok_or_else(|| shape(path, "expected a list"))?;
        let list = items
            .iter()
            .enumerate()
            .map(|(i, v)| scalar_or_message(&field.kind(), v, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(PValue::List(list)));
    }
    scalar_or_message(&field.kind(), value, path).map(Some)
}

fn scalar_or_message(kind: &Kind, v: &Value, path: &str) -> Result<PValue, CodecError> {
    let int = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| shape(path, format!("expected an integer, got {v}")))
    };
    Ok(match kind {
        Kind::Message(m) => PValue::Message(json_message(m, v, path)?),
        Kind::String => PValue::String(
            v.as_str()
                .ok_or_else(|| shape(path, format!("expected a string, got {v}")))?
                .to_string(),
        ),
        Kind::Bool => PValue::Bool(
            v.as_bool()
                .ok_or_else(|| shape(path, format!("expected a boolean, got {v}")))?,
        ),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => PValue::I32(
            i32::try_from(int(v)?).map_err(|_| shape(path, format!("{v} is not an int32")))?,
        ),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => PValue::I64(int(v)?),
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(
            u32::try_from(int(v)?).map_err(|_| shape(path, format!("{v} is not a uint32")))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => PValue::U64(
            u64::try_from(int(v)?).map_err(|_| shape(path, format!("{v} is not a uint64")))?,
        ),
        Kind::Double => PValue::F64(
            v.as_f64()
                .ok_or_else(|| shape(path, format!("expected a number, got {v}")))?,
        ),
        Kind::Float => PValue::F32(
            v.as_f64()
                .ok_or_else(|| shape(path, format!("expected a number, got {v}")))?
                as f32,
        ),
        Kind::Bytes => {
            let s = v
                .as_str()
                .ok_or_else(|| shape(path, format!("expected base64 bytes, got {v}")))?;
            PValue::Bytes(
                B64.decode(s)
                    .map_err(|e| shape(path, format!("invalid base64: {e}")))?
                    .into(),
            )
        }
        Kind::Enum(_) => PValue::EnumNumber(
            i32::try_from(int(v)?).map_err(|_| shape(path, format!("{v} is not an enum")))?,
        ),
    })
}

// ------------------------------------------------------------------------------------------------
// The apimachinery types whose JSON is not their message shape
// ------------------------------------------------------------------------------------------------

enum Special {
    None,
    Time {
        micros: bool,
    },
    Duration,
    IntOrString,
    Quantity,
    /// `RawExtension.raw` and `FieldsV1.Raw`: JSON bytes embedded in the message.
    EmbeddedJson,
    /// A Go slice typedef (`type Verbs []string`) wrapped as `message { repeated items = 1 }`.
    ItemsWrapper,
}

fn special(desc: &MessageDescriptor) -> Special {
    let name = desc.full_name();
    let Some((pkg, short)) = name.rsplit_once('.') else {
        return Special::None;
    };
    match (pkg, short) {
        (META_V1, "Time") => Special::Time { micros: false },
        (META_V1, "MicroTime") => Special::Time { micros: true },
        (META_V1, "Duration") => Special::Duration,
        (META_V1, "FieldsV1") | (RUNTIME, "RawExtension") => Special::EmbeddedJson,
        ("k8s.io.apimachinery.pkg.util.intstr", "IntOrString") => Special::IntOrString,
        ("k8s.io.apimachinery.pkg.api.resource", "Quantity") => Special::Quantity,
        _ => {
            let mut fields = desc.fields();
            match (fields.next(), fields.next()) {
                (Some(f), None) if f.name() == "items" && f.is_list() => Special::ItemsWrapper,
                _ => Special::None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_message_in_the_pool_round_trips_an_empty_object() {
        for m in POOL.all_messages() {
            if m.is_map_entry() || !matches!(special(&m), Special::None) {
                continue;
            }
            let bytes = encode(m.full_name(), &json!({})).unwrap();
            decode(m.full_name(), &bytes).unwrap();
        }
    }

    #[test]
    fn special_types_round_trip() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-01-02T03:04:05Z",
                          "labels": {"a": "b"},
                          "managedFields": [{"manager": "m", "operation": "Apply",
                                             "fieldsType": "FieldsV1",
                                             "fieldsV1": {"f:data": {"f:k": {}}}}]},
            "spec": {"containers": [{"name": "c", "image": "i",
                                     "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                     "resources": {"limits": {"cpu": "100m", "memory": "1Gi"}},
                                     "readinessProbe": {"httpGet": {"port": "http", "path": "/"}}}],
                     "terminationGracePeriodSeconds": 0,
                     "nodeName": "n1"},
        });
        let bytes = encode("k8s.io.api.core.v1.Pod", &pod).unwrap();
        let back = Value::Object(decode("k8s.io.api.core.v1.Pod", &bytes).unwrap());
        assert_eq!(back, pod);
        let ev = json!({"eventTime": "2024-01-02T03:04:05.123456Z", "reason": "R",
                        "involvedObject": {"kind": "Node", "name": "n"},
                        "metadata": {"name": "e"}});
        let bytes = encode("k8s.io.api.core.v1.Event", &ev).unwrap();
        assert_eq!(
            Value::Object(decode("k8s.io.api.core.v1.Event", &bytes).unwrap()),
            ev
        );
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let bytes = encode("k8s.io.api.core.v1.Service", &svc).unwrap();
        assert_eq!(
            Value::Object(decode("k8s.io.api.core.v1.Service", &bytes).unwrap()),
            svc
        );
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("1h0m0.5s"), Some(3_600_500_000_000));
    }

    #[test]
    fn shape_errors_name_the_field() {
        let e = encode(
            "k8s.io.api.core.v1.Pod",
            &json!({"spec": {"containers": [{"name": 3}]}}),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            ".spec.containers[0].name: expected a string, got 3"
        );
        assert!(matches!(
            encode("k8s.io.api.core.v1.Nope", &json!({})),
            Err(CodecError::UnknownMessage(_))
        ));
    }
}
