//! OpenAPI for the Kubernetes API (docs/kubernetes-api.md, "OpenAPI"): `/openapi/v2` in JSON and
//! in the protobuf form kubectl downloads, `/openapi/v3` (the index of group versions) and
//! `/openapi/v3/<group-version>` with upstream's hash caching. Everything is generated from the
//! registry's typed models ([`spec`]), once, on the first request (off the async threads), and
//! then served from memory: generation costs nothing at startup.

pub mod fields;
pub mod proto;
pub mod spec;
pub mod v3;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::registry::ResourceInfo;
use fields::FieldValidation;

/// What kubectl's discovery client asks `/openapi/v2` for. Go's media type parser refuses the
/// `@`, so upstream answers with [`V2_PROTOBUF`] instead, and so do we.
const V2_PROTOBUF_REQUESTED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The protobuf type `/openapi/v2` answers with (and also accepts).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One encoded document and its entity tag (upstream: SHA-512 of the bytes, upper-case hex).
#[derive(Debug, Clone)]
struct Encoded {
    body: Bytes,
    etag: String,
}

impl Encoded {
    fn new(body: Vec<u8>) -> Encoded {
        let digest = ring::digest::digest(&ring::digest::SHA512, &body);
        Encoded {
            etag: hex::encode_upper(digest.as_ref()),
            body: Bytes::from(body),
        }
    }
}

/// Every document, encoded.
#[derive(Debug)]
struct Documents {
    v2_json: Encoded,
    v2_protobuf: Encoded,
    v3_index: Encoded,
    /// By group-version key (`api/v1`).
    v3: BTreeMap<String, Encoded>,
    /// The v2 definitions and each kind's names, for field validation.
    defs: BTreeMap<String, Value>,
    kinds: Vec<spec::KindNames>,
}

impl Documents {
    fn build() -> Documents {
        let version = crate::apiserver::discovery::version_info()["gitVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (defs, kinds) = spec::definitions();
        let paths = spec::paths(&kinds);
        let v3_docs = v3::documents(&version, &defs, &paths, &kinds);
        let v2 = spec::v2_document_from(&version, defs.clone(), paths);
        let v3: BTreeMap<String, Encoded> = v3_docs
            .into_iter()
            .map(|(k, doc)| (k, Encoded::new(serde_json::to_vec(&doc).expect("JSON"))))
            .collect();
        let index: serde_json::Map<String, Value> = v3
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", e.etag)}),
                )
            })
            .collect();
        Documents {
            v2_protobuf: Encoded::new(proto::encode(&v2)),
            v2_json: Encoded::new(serde_json::to_vec(&v2).expect("JSON")),
            v3_index: Encoded::new(serde_json::to_vec(&json!({"paths": index})).expect("JSON")),
            v3,
            defs,
            kinds,
        }
    }
}

/// The OpenAPI documents of this server, generated on first use.
#[derive(Debug, Default)]
pub struct OpenApi {
    docs: OnceCell<Documents>,
}

impl OpenApi {
    async fn docs(&self) -> &Documents {
        self.docs
            .get_or_init(|| async {
                tokio::task::spawn_blocking(Documents::build)
                    .await
                    .expect("OpenAPI generation does not panic")
            })
            .await
    }

    /// The field validation of a write to `info`, by its `fieldValidation` query parameter;
    /// an invalid value is the error.
    pub async fn field_check(
        &self,
        info: &'static ResourceInfo,
        mode: Option<&str>,
    ) -> Result<FieldCheck<'_>, String> {
        let mode = FieldValidation::from_query(mode)?;
        let docs = self.docs().await;
        let root = docs
            .kinds
            .iter()
            .find(|k| k.info == info)
            .map(|k| k.object.as_str());
        Ok(FieldCheck {
            defs: &docs.defs,
            root,
            mode,
            info,
        })
    }

    /// Answers a request under `/openapi/`; `None` for any other path. The caller has
    /// authenticated the client: upstream lets every authenticated user read OpenAPI.
    pub async fn respond(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Response> {
        let path = uri.path().trim_end_matches('/');
        let rest = path.strip_prefix("/openapi/")?;
        if rest != "v2" && rest != "v3" && !rest.starts_with("v3/") {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET is served here",
            ));
        }
        let docs = self.docs().await;
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("*/*");
        Some(match rest {
            "v2" => match negotiate(accept, &[V2_PROTOBUF_REQUESTED, V2_PROTOBUF]) {
                Some(Format::Json) => serve(&docs.v2_json, "application/json", headers),
                Some(Format::Other(_)) => serve(&docs.v2_protobuf, V2_PROTOBUF, headers),
                None => not_acceptable("application/json, ".to_string() + V2_PROTOBUF),
            },
            "v3" => match negotiate(accept, &[]) {
                Some(_) => serve(&docs.v3_index, "application/json", headers),
                None => not_acceptable("application/json".into()),
            },
            gv => {
                let key = gv.trim_start_matches("v3/");
                let Some(doc) = docs.v3.get(key) else {
                    return Some(plain(StatusCode::NOT_FOUND, "404 page not found"));
                };
                if negotiate(accept, &[]).is_none() {
                    return Some(not_acceptable("application/json".into()));
                }
                let hash = uri.query().and_then(|q| {
                    q.split('&')
                        .find_map(|p| p.strip_prefix("hash="))
                        .map(str::to_string)
                });
                match hash {
                    // A stale hash: upstream redirects to the current document.
                    Some(h) if h != doc.etag => {
                        let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
                        if let Ok(v) =
                            HeaderValue::from_str(&format!("/openapi/v3/{key}?hash={}", doc.etag))
                        {
                            r.headers_mut().insert(header::LOCATION, v);
                        }
                        r
                    }
                    Some(_) => {
                        let mut r = serve(doc, "application/json", headers);
                        let h = r.headers_mut();
                        h.insert(
                            header::CACHE_CONTROL,
                            HeaderValue::from_static("public, immutable"),
                        );
                        let expires = (chrono::Utc::now() + chrono::Duration::days(365))
                            .format("%a, %d %b %Y %H:%M:%S GMT")
                            .to_string();
                        if let Ok(v) = HeaderValue::from_str(&expires) {
                            h.insert(header::EXPIRES, v);
                        }
                        r
                    }
                    None => serve(doc, "application/json", headers),
                }
            }
        })
    }
}

/// Field validation of one write (see [`fields`]).
#[derive(Debug, Clone, Copy)]
pub struct FieldCheck<'a> {
    defs: &'a BTreeMap<String, Value>,
    /// The kind's definition; `None` for a kind without a schema (nothing is checked).
    root: Option<&'a str>,
    mode: FieldValidation,
    info: &'static ResourceInfo,
}

impl FieldCheck<'_> {
    /// Drops the fields of `obj` its kind does not declare. Under `Strict` any such field is
    /// the error (upstream's message); otherwise returns the warnings to send (none under
    /// `Ignore`).
    pub fn apply(&self, obj: &mut Value) -> Result<Vec<String>, String> {
        let Some(root) = self.root else {
            return Ok(Vec::new());
        };
        let unknown = fields::prune_unknown(self.defs, root, obj);
        let described: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match self.mode {
            _ if unknown.is_empty() => Ok(Vec::new()),
            FieldValidation::Strict => Err(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                described.join(", "),
                kind = self.info.kind,
                version = self.info.version,
            )),
            FieldValidation::Warn => Ok(described),
            FieldValidation::Ignore => Ok(Vec::new()),
        }
    }
}

/// Adds one `Warning: 299 - "<text>"` header per warning, as upstream sends them.
pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

#[derive(Debug, PartialEq, Eq)]
enum Format {
    Json,
    /// The first of the offered other types the client accepts.
    Other(usize),
}

/// The first media type of `accept` (in the client's order, q-values aside from `q=0`) that is
/// JSON or one of `others`.
fn negotiate(accept: &str, others: &[&str]) -> Option<Format> {
    for part in accept.split(',') {
        let mut fields = part.split(';').map(str::trim);
        let ty = fields.next().unwrap_or_default();
        if fields.any(|p| p.replace(' ', "") == "q=0") {
            continue;
        }
        if matches!(ty, "application/json" | "application/*" | "*/*") {
            return Some(Format::Json);
        }
        if let Some(i) = others.iter().position(|o| *o == ty) {
            return Some(Format::Other(i));
        }
    }
    None
}

/// A document with its ETag; `304 Not Modified` when the client already has it.
fn serve(doc: &Encoded, content_type: &'static str, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", doc.etag);
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, doc.body.clone()).into_response()
    };
    let h = r.headers_mut();
    if !cached {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // The same URL answers JSON or protobuf: caches must key on Accept.
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_acceptable(offered: String) -> Response {
    let mut r = (
        StatusCode::NOT_ACCEPTABLE,
        format!("only the following media types are accepted: {offered}"),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(api: &OpenApi, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let uri: Uri = uri.parse().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(api.respond(&Method::GET, &uri, &h))
            .expect("an OpenAPI path")
    }

    fn body(r: Response) -> Vec<u8> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(http_body_util::BodyExt::collect(r.into_body()))
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn v2_answers_json_or_protobuf_by_accept() {
        let api = OpenApi::default();
        let r = get(&api, "/openapi/v2", &[("accept", "application/json")]);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
        let doc: Value = serde_json::from_slice(&body(r)).unwrap();
        assert_eq!(doc["swagger"], "2.0");
        // What client-go's discovery sends.
        let r = get(
            &api,
            "/openapi/v2",
            &[(
                "accept",
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            )],
        );
        assert_eq!(r.headers()[header::CONTENT_TYPE], V2_PROTOBUF);
        assert_ne!(r.headers()[header::ETAG].to_str().unwrap(), etag);
        let pb = <proto::Document as prost::Message>::decode(body(r).as_slice()).unwrap();
        assert_eq!(pb.swagger, "2.0");
        let r = get(
            &api,
            "/openapi/v2",
            &[("accept", "application/json"), ("if-none-match", &etag)],
        );
        assert_eq!(r.status(), 304);
        let r = get(&api, "/openapi/v2", &[("accept", "text/html")]);
        assert_eq!(r.status(), 406);
    }

    #[test]
    fn v3_index_hashes_and_caching() {
        let api = OpenApi::default();
        let index: Value = serde_json::from_slice(&body(get(&api, "/openapi/v3", &[]))).unwrap();
        let url = index["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
        assert!(index["paths"]["apis/coordination.k8s.io/v1"].is_object());
        let hash = url.split("hash=").nth(1).unwrap().to_string();
        assert_eq!(hash.len(), 128);

        let r = get(&api, &url, &[]);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable");
        assert!(r.headers().contains_key(header::EXPIRES));
        assert_eq!(r.headers()[header::ETAG], format!("\"{hash}\""));
        let doc: Value = serde_json::from_slice(&body(r)).unwrap();
        assert_eq!(doc["openapi"], "3.0.0");

        let r = get(&api, "/openapi/v3/api/v1", &[]);
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key(header::CACHE_CONTROL));
        let r = get(&api, "/openapi/v3/api/v1?hash=0000", &[]);
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()[header::LOCATION], url.as_str());
        let r = get(&api, "/openapi/v3/apis/foo.example/v1", &[]);
        assert_eq!(r.status(), 404);
        let r = get(&api, &url, &[("if-none-match", &format!("\"{hash}\""))]);
        assert_eq!(r.status(), 304);
    }

    #[test]
    fn other_paths_are_not_answered() {
        let api = OpenApi::default();
        let h = HeaderMap::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for p in ["/api/v1", "/openapi", "/openapi/v4", "/openapix/v2"] {
            let uri: Uri = p.parse().unwrap();
            assert!(
                rt.block_on(api.respond(&Method::GET, &uri, &h)).is_none(),
                "{p}"
            );
        }
    }

    #[test]
    fn field_check_modes_and_warning_headers() {
        let api = OpenApi::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let services = &crate::registry::SERVICES;
        let body = || serde_json::json!({"spec": {"foo": 1, "ports": [{"port": 80}]}});
        let strict = rt
            .block_on(api.field_check(services, Some("Strict")))
            .unwrap();
        let mut obj = body();
        assert_eq!(
            strict.apply(&mut obj).unwrap_err(),
            "Service in version \"v1\" cannot be handled as a Service: strict decoding error: unknown field \"spec.foo\""
        );
        let warn = rt.block_on(api.field_check(services, None)).unwrap();
        let mut obj = body();
        let warnings = warn.apply(&mut obj).unwrap();
        assert_eq!(warnings, ["unknown field \"spec.foo\""]);
        assert_eq!(obj, serde_json::json!({"spec": {"ports": [{"port": 80}]}}));
        let r = with_warnings(StatusCode::OK.into_response(), &warnings);
        assert_eq!(
            r.headers()[header::WARNING],
            "299 - \"unknown field \\\"spec.foo\\\"\""
        );
        let ignore = rt
            .block_on(api.field_check(services, Some("Ignore")))
            .unwrap();
        let mut obj = body();
        assert!(ignore.apply(&mut obj).unwrap().is_empty());
        assert!(obj["spec"].get("foo").is_none());
        assert!(
            rt.block_on(api.field_check(services, Some("Loud")))
                .is_err()
        );
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(
            negotiate("application/json", &[V2_PROTOBUF]),
            Some(Format::Json)
        );
        assert_eq!(
            negotiate(V2_PROTOBUF, &[V2_PROTOBUF]),
            Some(Format::Other(0))
        );
        assert_eq!(
            negotiate(&format!("{V2_PROTOBUF}, application/json"), &[V2_PROTOBUF]),
            Some(Format::Other(0))
        );
        assert_eq!(negotiate("application/json;q=0, text/plain", &[]), None);
        assert_eq!(negotiate("application/yaml", &[]), None);
    }
}
