//! Lease (coordination.k8s.io/v1, namespaced): node heartbeats and leader election.

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1 as coordination;
use serde_json::Value;

use super::fields::typed;
use super::print::*;
use super::{NodeAccess, ResourceInfo};

/// `leases`.
pub static LEASES: ResourceInfo = ResourceInfo {
    go_package: "coordination",
    type_check: typed::<coordination::Lease>,
    schema: Some(super::schema::schema_of::<coordination::Lease>),
    tracks_generation: true,
    node_access: NodeAccess::Own {
        namespace: Some("kube-node-lease"),
    },
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    protobuf: Some("k8s.io.api.coordination.v1"),
    ..ResourceInfo::stored(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        "/registry/leases",
    )
};

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    ),
    AGE,
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        text(obj, "/spec/holderIdentity").into(),
        age(obj, now).into(),
    ]
}
