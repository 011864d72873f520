//! The self-subject reviews kubectl POSTs (`auth can-i`, `auth whoami`): computed from the
//! request, never stored.

use k8s_openapi::api::authentication::v1 as authn;
use k8s_openapi::api::authorization::v1 as authz;
use serde_json::Value;

use super::fields::{FieldCause, cause, typed};
use super::{CREATE_ONLY, ResourceInfo, Review};

/// `selfsubjectaccessreviews.authorization.k8s.io`.
pub static SELF_SUBJECT_ACCESS_REVIEWS: ResourceInfo = ResourceInfo {
    verbs: CREATE_ONLY,
    review: Some(Review::Access),
    go_package: "authorization",
    type_check: typed::<authz::SelfSubjectAccessReview>,
    schema: Some(super::schema::schema_of::<authz::SelfSubjectAccessReview>),
    validate: validate_ssar,
    protobuf: Some("k8s.io.api.authorization.v1"),
    ..ResourceInfo::stored(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        "",
    )
};

/// `selfsubjectreviews.authentication.k8s.io`.
pub static SELF_SUBJECT_REVIEWS: ResourceInfo = ResourceInfo {
    verbs: CREATE_ONLY,
    review: Some(Review::Subject),
    go_package: "authentication",
    type_check: typed::<authn::SelfSubjectReview>,
    schema: Some(super::schema::schema_of::<authn::SelfSubjectReview>),
    protobuf: Some("k8s.io.api.authentication.v1"),
    ..ResourceInfo::stored(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
        "",
    )
};

fn validate_ssar(body: &Value, causes: &mut Vec<FieldCause>) {
    let spec = body.get("spec");
    let has = |k: &str| spec.and_then(|s| s.get(k)).is_some_and(|v| !v.is_null());
    match (has("resourceAttributes"), has("nonResourceAttributes")) {
        (true, false) | (false, true) => {}
        (true, true) => causes.push(cause(
            "spec.resourceAttributes",
            "Invalid value: \"resourceAttributes\": cannot be specified in combination with nonResourceAttributes",
        )),
        (false, false) => causes.push(cause(
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}
