//! SelfSubjectReview in `authentication.k8s.io/v1beta1`: kubectl 1.27's `auth whoami` asks this
//! version (1.28+ ask v1 first). Same answer and wire format as the v1 kind.

use k8s_openapi::api::authentication::v1beta1 as authn;

use super::ResourceInfo;
use super::fields::typed;

/// `selfsubjectreviews.authentication.k8s.io` at `v1beta1`.
pub static SELF_SUBJECT_REVIEWS_V1BETA1: ResourceInfo = ResourceInfo {
    version: "v1beta1",
    type_check: typed::<authn::SelfSubjectReview>,
    schema: Some(super::schema::schema_of::<authn::SelfSubjectReview>),
    // No v1beta1 messages are vendored; kubectl 1.27 (the one client of this version) sends JSON.
    protobuf: None,
    ..super::SELF_SUBJECT_REVIEWS
};
