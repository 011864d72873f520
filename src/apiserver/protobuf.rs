//! The Kubernetes protobuf encoding on the wire (`application/vnd.kubernetes.protobuf`): request
//! bodies in, responses and watch streams out, chosen from `Content-Type` and `Accept` like
//! upstream.
//!
//! kubectl 1.32+ talks protobuf through its typed clientset: `create namespace|secret|configmap|
//! service`, `auth can-i|whoami`, and `drain` (pod lists, the pod DELETE with a protobuf
//! `DeleteOptions` body, polling GETs); the captures are in `testdata/`. A body is the 4-byte
//! magic `k8s\0` and a `runtime.Unknown` envelope whose `raw` field holds the object; the
//! conversion between an object's protobuf and JSON forms is generic, driven by upstream's
//! `generated.proto` descriptors (`crate::registry::protobuf`). Watch streams are
//! length-prefixed `WatchEvent` frames (`;stream=watch`) whose objects are envelopes again.

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::Value;

use super::status::ApiError;
use crate::registry::protobuf::{
    self as codec, CodecError, META_V1, RawExtension, RuntimeTypeMeta, Unknown, WatchEvent,
};
use crate::registry::{RESOURCES, ResourceInfo, lookup_kind};

/// The protobuf media type.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Content type of a protobuf watch stream.
pub const PROTOBUF_WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// The envelope's magic prefix.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// `apiVersion/kind` of the kinds with a protobuf encoding (from their registry declarations).
pub fn supported_kinds() -> Vec<String> {
    RESOURCES
        .iter()
        .filter(|r| r.protobuf.is_some())
        .map(|r| format!("{}/{}", r.api_version(), r.kind))
        .collect()
}

/// Whether a Content-Type header names the protobuf encoding (parameters ignored).
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case(PROTOBUF_CONTENT_TYPE)
}

/// The encoding of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

/// The response encoding an `Accept` header asks for, as upstream negotiates it: media ranges in
/// order of preference (`q`, then position), the first one the server can produce wins;
/// transformed representations (`as=Table`) are not plain objects and are skipped here. Nothing
/// acceptable falls back to JSON, which every client reads.
pub fn negotiate(accept: &str) -> Encoding {
    let mut ranges: Vec<(f32, usize, Encoding)> = Vec::new();
    for (pos, clause) in accept.split(',').enumerate() {
        let mut parts = clause.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut transformed = false;
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.trim() {
                "q" => q = v.trim().parse().unwrap_or(0.0),
                "as" | "g" | "v" => transformed = true,
                _ => {}
            }
        }
        if transformed || q <= 0.0 {
            continue;
        }
        let enc = match media.as_str() {
            PROTOBUF_CONTENT_TYPE => Encoding::Protobuf,
            "application/json" | "application/*" | "*/*" => Encoding::Json,
            _ => continue,
        };
        ranges.push((q, pos, enc));
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.first().map(|r| r.2).unwrap_or(Encoding::Json)
}

// ------------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------------

/// Unwraps the `k8s\0` + `runtime.Unknown` envelope: type meta and the object's bytes.
fn unwrap_envelope(body: &[u8]) -> Result<(RuntimeTypeMeta, Vec<u8>), ApiError> {
    let Some(rest) = body.strip_prefix(MAGIC.as_slice()) else {
        return Err(ApiError::BadRequest(format!(
            "provided data does not appear to be a protobuf message, expected prefix {:?}",
            MAGIC
        )));
    };
    let unknown = Unknown::decode(rest).map_err(|e| bad(e.into()))?;
    let tm = unknown.type_meta.unwrap_or_default();
    if !unknown.content_encoding.is_empty() {
        return Err(unsupported(format!(
            "contentEncoding {:?} of {}/{}",
            unknown.content_encoding, tm.api_version, tm.kind
        )));
    }
    if !unknown.content_type.is_empty() && !is_protobuf(&unknown.content_type) {
        return Err(unsupported(format!(
            "contentType {:?} of {}/{}",
            unknown.content_type, tm.api_version, tm.kind
        )));
    }
    Ok((tm, unknown.raw))
}

/// Decodes a protobuf request body into the JSON object it stands for, with `apiVersion` and
/// `kind` set from the envelope.
///
/// Errors: no `k8s\0` magic or undecodable bytes → 400 BadRequest (upstream answers 400 for
/// undecodable bodies); a kind outside [`supported_kinds`], or an envelope whose `raw` is itself
/// encoded or not protobuf → 415 UnsupportedMediaType naming it.
pub fn decode_to_json(body: &[u8]) -> Result<Value, ApiError> {
    let (tm, raw) = unwrap_envelope(body)?;
    let message = lookup_kind(&tm.api_version, &tm.kind).and_then(ResourceInfo::proto_message);
    let Some(message) = message else {
        return Err(unsupported(format!("kind {}/{}", tm.api_version, tm.kind)));
    };
    let mut obj = codec::decode(&message, &raw).map_err(bad)?;
    obj.insert("apiVersion".into(), Value::String(tm.api_version));
    obj.insert("kind".into(), Value::String(tm.kind));
    Ok(Value::Object(obj))
}

/// Decodes a `DeleteOptions` body (JSON or protobuf by Content-Type; empty means none).
pub fn decode_delete_options(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if !is_protobuf(content_type) {
        return serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")));
    }
    let (tm, raw) = unwrap_envelope(body)?;
    if tm.kind != "DeleteOptions" {
        return Err(ApiError::BadRequest(format!(
            "invalid DeleteOptions: the body is a {}/{}",
            tm.api_version, tm.kind
        )));
    }
    let obj = codec::decode(&format!("{META_V1}.DeleteOptions"), &raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?;
    Ok(Value::Object(obj))
}

fn bad(e: CodecError) -> ApiError {
    ApiError::BadRequest(format!("unable to decode protobuf body: {e}"))
}

fn unsupported(what: String) -> ApiError {
    let kinds = supported_kinds();
    ApiError::UnsupportedMediaType(format!(
        "application/json, and {PROTOBUF_CONTENT_TYPE} only for {} (this body is {what})",
        kinds.join(", ")
    ))
}

// ------------------------------------------------------------------------------------------------
// Encoding
// ------------------------------------------------------------------------------------------------

/// The protobuf message of a response object: the object's own kind when the registry has it
/// (`Status` and the kind's list otherwise come from meta/v1 and the resource).
fn message_for(info: &ResourceInfo, obj: &Value) -> Option<String> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(info.kind);
    if kind == info.kind {
        info.proto_message()
    } else if kind == info.list_kind() {
        info.proto_list_message()
    } else {
        let pkg = info.protobuf?;
        let m = format!("{META_V1}.{kind}");
        // meta/v1 kinds (Status) first; otherwise a kind of the resource's own package.
        Some(if codec::message(&m).is_ok() {
            m
        } else {
            format!("{pkg}.{kind}")
        })
    }
}

/// The `k8s\0` + `runtime.Unknown` envelope around one object of `info`'s API.
pub fn encode_object(info: &ResourceInfo, obj: &Value) -> Result<Vec<u8>, ApiError> {
    let message = message_for(info, obj).ok_or_else(|| {
        ApiError::Internal(format!(
            "{} has no protobuf encoding",
            info.qualified_kind()
        ))
    })?;
    let raw = codec::encode(&message, obj)
        .map_err(|e| ApiError::Internal(format!("encoding {message} as protobuf: {e}")))?;
    let tm = RuntimeTypeMeta {
        api_version: obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| info.api_version()),
        kind: obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or(info.kind)
            .to_string(),
    };
    let mut out = MAGIC.to_vec();
    Unknown {
        type_meta: Some(tm),
        raw,
        content_encoding: String::new(),
        content_type: String::new(),
    }
    .encode(&mut out)
    .expect("Vec grows as needed");
    Ok(out)
}

/// A response with `obj` in the negotiated encoding. Protobuf falls back to JSON for a kind
/// without a protobuf encoding, as upstream serves such kinds as JSON only.
pub fn respond(
    status: StatusCode,
    obj: &Value,
    info: &ResourceInfo,
    encoding: Encoding,
) -> Result<Response, ApiError> {
    if encoding == Encoding::Protobuf && info.protobuf.is_some() {
        let body = encode_object(info, obj)?;
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROTOBUF_CONTENT_TYPE),
        );
        return Ok(resp);
    }
    Ok(super::json(status, obj, "application/json"))
}

/// An error as a protobuf `Status`, for clients that negotiated protobuf (upstream encodes
/// errors like any response). Falls back to JSON if the Status cannot be encoded.
pub fn error_response(e: &ApiError) -> Response {
    let status = e.to_status();
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let Ok(raw) = codec::encode(&format!("{META_V1}.Status"), &status) else {
        return super::json(code, &status, "application/json");
    };
    let mut out = MAGIC.to_vec();
    Unknown {
        type_meta: Some(RuntimeTypeMeta {
            api_version: "v1".into(),
            kind: "Status".into(),
        }),
        raw,
        content_encoding: String::new(),
        content_type: String::new(),
    }
    .encode(&mut out)
    .expect("Vec grows as needed");
    let mut resp = (code, out).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROTOBUF_CONTENT_TYPE),
    );
    resp
}

/// One frame of a protobuf watch stream: a 4-byte big-endian length and a `WatchEvent` whose
/// object is an envelope, as upstream's length-delimited framer writes it.
pub fn watch_frame(info: &ResourceInfo, event_type: &str, obj: &Value) -> Result<Bytes, ApiError> {
    let event = WatchEvent {
        r#type: event_type.to_string(),
        object: Some(RawExtension {
            raw: encode_object(info, obj)?,
        }),
    };
    let body = event.encode_to_vec();
    let len = u32::try_from(body.len())
        .map_err(|_| ApiError::Internal("watch event larger than 4 GiB".into()))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Bodies recorded from kubectl v1.32.4 (see testdata/README.md) and the JSON they stand for.
    #[test]
    fn captured_kubectl_fixtures() {
        let cases: &[(&[u8], Value)] = &[
            (
                include_bytes!("testdata/create-namespace-foo.pb"),
                json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"foo"},"spec":{},"status":{}}),
            ),
            (
                include_bytes!("testdata/create-secret-generic-s1.pb"),
                json!({"apiVersion":"v1","kind":"Secret",
                       "metadata":{"name":"s1","namespace":"default"},"data":{"a":"Yg=="}}),
            ),
            (
                include_bytes!("testdata/create-secret-generic-s2-binary.pb"),
                json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s2"},
                       "data":{"bin":"R3Ip1NEUJWQ/wmJziqUIdOI3Led16c7VkfGnJxIegA3rX2gi0ZSG2Q==","k1":"djE="},
                       "type":"example.com/t"}),
            ),
            (
                include_bytes!("testdata/create-secret-generic-empty.pb"),
                json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"empty"}}),
            ),
            (
                include_bytes!("testdata/create-configmap-c1.pb"),
                json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"x":"y"}}),
            ),
            (
                include_bytes!("testdata/create-configmap-c2-binary.pb"),
                json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c2"},
                       "data":{"text.txt":"hello\n"},
                       "binaryData":{"bin":"R3Ip1NEUJWQ/wmJziqUIdOI3Led16c7VkfGnJxIegA3rX2gi0ZSG2Q=="}}),
            ),
            (
                include_bytes!("testdata/auth-can-i-list-nodes.pb"),
                json!({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","metadata":{},
                       "spec":{"resourceAttributes":{"namespace":"default","verb":"list","resource":"nodes"}},
                       "status":{"allowed":false}}),
            ),
            (
                include_bytes!("testdata/auth-can-i-create-pods-log.pb"),
                json!({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","metadata":{},
                       "spec":{"resourceAttributes":{"namespace":"kube-system","verb":"create",
                                                     "resource":"pods","subresource":"log"}},
                       "status":{"allowed":false}}),
            ),
            (
                include_bytes!("testdata/auth-can-i-get-secret-s1.pb"),
                json!({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","metadata":{},
                       "spec":{"resourceAttributes":{"namespace":"default","verb":"get",
                                                     "resource":"secrets","name":"s1"}},
                       "status":{"allowed":false}}),
            ),
            (
                include_bytes!("testdata/auth-can-i-get-healthz.pb"),
                json!({"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","metadata":{},
                       "spec":{"nonResourceAttributes":{"path":"/healthz","verb":"get"}},
                       "status":{"allowed":false}}),
            ),
            (
                include_bytes!("testdata/auth-whoami.pb"),
                json!({"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","metadata":{},
                       "status":{"userInfo":{}}}),
            ),
        ];
        for (i, (body, want)) in cases.iter().enumerate() {
            let got = decode_to_json(body).unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(&got, want, "case {i}");
        }
    }

    /// kubectl 1.32/1.33 bodies of kinds added with the generic codec (testdata/README.md).
    #[test]
    fn captured_kubectl_fixtures_of_every_written_kind() {
        let service = json!({"apiVersion":"v1","kind":"Service",
            "metadata":{"name":"y","labels":{"app":"y"}},
            "spec":{"ports":[{"name":"80","protocol":"TCP","port":80,"targetPort":80}],
                    "selector":{"app":"y"},"type":"ClusterIP"},
            "status":{"loadBalancer":{}}});
        let d = |b: &[u8]| decode_to_json(b).unwrap();
        assert_eq!(
            d(include_bytes!("testdata/create-service-clusterip-y.pb")),
            service
        );
        let mut z = service.clone();
        z["metadata"] = json!({"name":"z","labels":{"app":"z"}});
        z["spec"]["selector"] = json!({"app":"z"});
        assert_eq!(
            d(include_bytes!(
                "testdata/create-service-clusterip-z-1.33.pb"
            )),
            z
        );

        let pod = d(include_bytes!("testdata/debug-node-pod.pb"));
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["spec"]["nodeName"], "cap1");
        assert_eq!(pod["spec"]["hostPID"], true);
        assert_eq!(pod["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(pod["spec"]["containers"][0]["name"], "debugger");
        // `volumeSource` is an embedded struct: its fields sit in the volume itself.
        assert_eq!(pod["spec"]["volumes"][0]["hostPath"]["path"], "/");
        assert!(pod["spec"]["volumes"][0].get("volumeSource").is_none());
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        assert_eq!(
            typed.metadata.name.as_deref(),
            Some("node-debugger-cap1-2chj5")
        );

        let del = |b: &[u8]| decode_delete_options(PROTOBUF_CONTENT_TYPE, b).unwrap();
        assert_eq!(
            del(include_bytes!("testdata/drain-delete-pod-options.pb")),
            json!({})
        );
        assert_eq!(
            del(include_bytes!("testdata/drain-delete-pod-options-1.33.pb")),
            json!({})
        );
        // A pointer field's zero is kept: 0 means "now", absent means the pod's default.
        assert_eq!(
            del(include_bytes!("testdata/drain-grace-period-0.pb")),
            json!({"gracePeriodSeconds": 0})
        );
        assert_eq!(
            decode_delete_options("application/json", br#"{"propagationPolicy":"Background"}"#)
                .unwrap(),
            json!({"propagationPolicy": "Background"})
        );
        let e = decode_delete_options(
            PROTOBUF_CONTENT_TYPE,
            include_bytes!("testdata/create-service-clusterip-y.pb"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("v1/Service"), "{e}");
    }

    /// Upstream's order of preference: q-values, then position; tables and unknown types are
    /// not plain object encodings.
    #[test]
    fn accept_negotiation() {
        let cases = [
            (
                "application/vnd.kubernetes.protobuf,application/json",
                Encoding::Protobuf,
            ),
            ("application/vnd.kubernetes.protobuf", Encoding::Protobuf),
            (
                "application/json, application/vnd.kubernetes.protobuf",
                Encoding::Json,
            ),
            (
                "application/vnd.kubernetes.protobuf;q=0.5, application/json",
                Encoding::Json,
            ),
            (
                "application/vnd.kubernetes.protobuf;stream=watch",
                Encoding::Protobuf,
            ),
            (
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json",
                Encoding::Json,
            ),
            ("application/yaml, */*", Encoding::Json),
            ("", Encoding::Json),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(accept), want, "{accept}");
        }
    }

    /// Every kind's response encoding decodes back to the same object, and a watch frame is a
    /// length prefix plus a WatchEvent wrapping an envelope.
    #[test]
    fn responses_and_watch_frames_round_trip() {
        let obj = json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","resourceVersion":"7"},
                         "spec":{"unschedulable":true,"taints":[{"key":"k","effect":"NoSchedule"}]},
                         "status":{"capacity":{"cpu":"4"},"conditions":[{"type":"Ready","status":"True",
                                   "lastHeartbeatTime":"2024-01-01T00:00:00Z"}]}});
        let info = &crate::registry::NODES;
        assert_eq!(
            decode_to_json(&encode_object(info, &obj).unwrap()).unwrap(),
            obj
        );
        let frame = watch_frame(info, "MODIFIED", &obj).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let ev = WatchEvent::decode(&frame[4..]).unwrap();
        assert_eq!(ev.r#type, "MODIFIED");
        assert_eq!(decode_to_json(&ev.object.unwrap().raw).unwrap(), obj);
        // Status (watch ERROR events, deletecollection) comes from meta/v1.
        let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                            "message":"gone","reason":"Expired","code":410});
        let env = encode_object(info, &status).unwrap();
        let (tm, raw) = unwrap_envelope(&env).unwrap();
        assert_eq!(
            (tm.api_version.as_str(), tm.kind.as_str()),
            ("v1", "Status")
        );
        let mut back = codec::decode(&format!("{META_V1}.Status"), &raw).unwrap();
        back.insert("kind".into(), json!("Status"));
        back.insert("apiVersion".into(), json!("v1"));
        assert_eq!(Value::Object(back), status);
        // Errors: a Status envelope with the code, reason and details.
        let e = ApiError::NotFound {
            resource: "pods".into(),
            name: "p".into(),
        };
        let resp = error_response(&e);
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROTOBUF_CONTENT_TYPE);
        // Every registry kind declaring a protobuf package (custom kinds are JSON only), and
        // its list, have messages.
        for r in RESOURCES.iter().filter(|r| r.protobuf.is_some()) {
            codec::message(&r.proto_message().unwrap()).unwrap();
            if r.is_stored() {
                codec::message(&r.proto_list_message().unwrap()).unwrap();
            }
        }
    }

    /// The decoded objects deserialize into the k8s-openapi types, so the JSON shape is right.
    #[test]
    fn decoded_objects_are_valid_typed_objects() {
        use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview as Ssar;
        use k8s_openapi::api::core::v1::{ConfigMap as Cm, Namespace as Ns, Secret as Sec};
        let d = |b: &[u8]| decode_to_json(b).unwrap();
        let ns: Ns =
            serde_json::from_value(d(include_bytes!("testdata/create-namespace-foo.pb"))).unwrap();
        assert_eq!(ns.metadata.name.as_deref(), Some("foo"));
        let s: Sec =
            serde_json::from_value(d(include_bytes!("testdata/create-secret-generic-s1.pb")))
                .unwrap();
        assert_eq!(s.data.unwrap()["a"].0, b"b");
        let c: Cm =
            serde_json::from_value(d(include_bytes!("testdata/create-configmap-c2-binary.pb")))
                .unwrap();
        assert_eq!(c.binary_data.unwrap()["bin"].0.len(), 40);
        let r: Ssar =
            serde_json::from_value(d(include_bytes!("testdata/auth-can-i-list-nodes.pb"))).unwrap();
        assert_eq!(
            r.spec.resource_attributes.unwrap().resource.as_deref(),
            Some("nodes")
        );
    }

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        Unknown {
            type_meta: Some(RuntimeTypeMeta {
                api_version: api_version.into(),
                kind: kind.into(),
            }),
            raw,
            content_encoding: String::new(),
            content_type: String::new(),
        }
        .encode(&mut out)
        .unwrap();
        out
    }

    /// Every field of ObjectMeta and the kind survives JSON → protobuf → JSON.
    #[test]
    fn full_object_meta_round_trip() {
        let ns = json!({"apiVersion":"v1","kind":"Namespace",
               "metadata":{"generateName":"gen-","uid":"u-1","resourceVersion":"42","generation":3,
                           "creationTimestamp":"2023-11-14T22:13:20Z",
                           "deletionTimestamp":"2023-11-14T22:13:21Z",
                           "deletionGracePeriodSeconds":0,
                           "labels":{"a":"b"},"annotations":{"n":"v"},
                           "ownerReferences":[{"apiVersion":"v1","kind":"Node","name":"n1","uid":"u-n1","controller":true}],
                           "finalizers":["f"]},
               "spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}});
        let body = encode_object(&crate::registry::NAMESPACES, &ns).unwrap();
        assert_eq!(decode_to_json(&body).unwrap(), ns);

        let sec = json!({"apiVersion":"v1","kind":"Secret","metadata":{},"stringData":{"k":"v"},
                         "type":"Opaque","immutable":true});
        let body = encode_object(&crate::registry::SECRETS, &sec).unwrap();
        assert_eq!(decode_to_json(&body).unwrap(), sec);
    }

    #[test]
    fn errors() {
        let ns: Vec<u8> = Vec::new();
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (b"{\"kind\":\"Namespace\"}".to_vec(), 400, "expected prefix"),
            (Vec::new(), 400, "expected prefix"),
            (b"k8s\0\xff\xff\xff".to_vec(), 400, "unable to decode"),
            (envelope("v1", "Widget", ns.clone()), 415, "kind v1/Widget"),
            (
                envelope("v2", "Namespace", ns.clone()),
                415,
                "kind v2/Namespace",
            ),
            (
                envelope("v1", "Namespace", b"\x0a\x05\x0a\x03\xff\xfe\xfd".to_vec()),
                400,
                "unable to decode",
            ),
            (
                {
                    let mut out = MAGIC.to_vec();
                    Unknown {
                        type_meta: Some(RuntimeTypeMeta {
                            api_version: "v1".into(),
                            kind: "Namespace".into(),
                        }),
                        raw: ns.clone(),
                        content_encoding: "gzip".into(),
                        content_type: String::new(),
                    }
                    .encode(&mut out)
                    .unwrap();
                    out
                },
                415,
                "contentEncoding",
            ),
        ];
        for (i, (body, code, needle)) in cases.iter().enumerate() {
            let e = decode_to_json(body).expect_err(&format!("case {i}"));
            assert_eq!(e.code(), *code, "case {i}: {e}");
            assert!(e.to_string().contains(needle), "case {i}: {e}");
        }
        assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
        assert!(is_protobuf(
            "application/vnd.kubernetes.protobuf; charset=x"
        ));
        assert!(!is_protobuf("application/json"));
    }
}
