//! SelfSubjectRulesReview (`authorization.k8s.io/v1`, what `kubectl auth can-i --list` POSTs):
//! the caller's rules in a namespace, computed from the authorizer's policy, never stored.

use k8s_openapi::api::authorization::v1 as authz;
use prost::Message;
use serde_json::{Map, Value, json};

use super::fields::typed;
use super::protobuf::ObjectMeta;
use super::{CREATE_ONLY, ResourceInfo, Review};

/// `selfsubjectrulesreviews.authorization.k8s.io`.
pub static SELF_SUBJECT_RULES_REVIEWS: ResourceInfo = ResourceInfo {
    verbs: CREATE_ONLY,
    review: Some(Review::Rules),
    go_package: "authorization",
    type_check: typed::<authz::SelfSubjectRulesReview>,
    protobuf: Some(decode),
    ..ResourceInfo::stored(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
        "",
    )
};

/// `authorization.v1.SelfSubjectRulesReview` on the wire (kubectl 1.32+ POSTs protobuf).
#[derive(Clone, PartialEq, Message)]
struct SelfSubjectRulesReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<Spec>,
}

#[derive(Clone, PartialEq, Message)]
struct Spec {
    #[prost(string, tag = "1")]
    namespace: String,
}

/// The review's JSON form. Only `spec.namespace` means anything to the server; the request's
/// metadata is not echoed (upstream answers with empty metadata too).
fn decode(raw: &[u8]) -> Result<Map<String, Value>, prost::DecodeError> {
    let r = SelfSubjectRulesReview::decode(raw)?;
    let namespace = r.spec.unwrap_or_default().namespace;
    let mut out = Map::new();
    out.insert("metadata".into(), json!({}));
    out.insert("spec".into(), json!({ "namespace": namespace }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_namespace_from_protobuf() {
        let wire = SelfSubjectRulesReview {
            metadata: Some(ObjectMeta::default()),
            spec: Some(Spec {
                namespace: "kube-system".into(),
            }),
        }
        .encode_to_vec();
        let v = decode(&wire).unwrap();
        assert_eq!(v["spec"]["namespace"], "kube-system");
    }
}
