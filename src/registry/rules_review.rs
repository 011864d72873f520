//! SelfSubjectRulesReview (`authorization.k8s.io/v1`, what `kubectl auth can-i --list` POSTs):
//! the caller's rules in a namespace, computed from the authorizer's policy, never stored.

use k8s_openapi::api::authorization::v1 as authz;

use super::fields::typed;
use super::{CREATE_ONLY, ResourceInfo, Review};

/// `selfsubjectrulesreviews.authorization.k8s.io`.
pub static SELF_SUBJECT_RULES_REVIEWS: ResourceInfo = ResourceInfo {
    verbs: CREATE_ONLY,
    review: Some(Review::Rules),
    go_package: "authorization",
    type_check: typed::<authz::SelfSubjectRulesReview>,
    protobuf: Some("k8s.io.api.authorization.v1"),
    schema: Some(super::schema::schema_of::<authz::SelfSubjectRulesReview>),
    ..ResourceInfo::stored(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
        "",
    )
};
