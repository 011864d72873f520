//! ETCDSnapshotFile (k3s.cattle.io/v1, cluster-scoped): one object per etcd snapshot file of
//! any server, as RKE2 shows them (`kubectl get etcdsnapshotfiles`). Each server keeps the
//! objects of its own snapshots in line with its snapshot directory
//! (crate::etcd::snapshot_records); the columns are those of RKE2's CRD.

use chrono::{DateTime, Utc};
use serde_json::Value;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::print::*;
use super::{ResourceInfo, print::Printer};

/// The typed model of the kind (RKE2's CRD schema), for OpenAPI.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.cattle.k3s.v1.ETCDSnapshotFile")]
pub struct EtcdSnapshotFile {
    /// APIVersion defines the versioned schema of this representation of an object.
    #[serde(default)]
    #[schemars(with = "String")]
    pub api_version: Option<String>,
    /// Kind is a string value representing the REST resource this object represents.
    #[serde(default)]
    #[schemars(with = "String")]
    pub kind: Option<String>,
    /// Standard object's metadata.
    pub metadata: ObjectMeta,
    /// Which snapshot file this is and where it lives.
    pub spec: EtcdSnapshotSpec,
    /// The file's state.
    #[serde(default)]
    #[schemars(with = "EtcdSnapshotStatus")]
    pub status: Option<EtcdSnapshotStatus>,
}

/// `spec` of an ETCDSnapshotFile.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.cattle.k3s.v1.ETCDSnapshotSpec")]
pub struct EtcdSnapshotSpec {
    /// The base name of the snapshot file.
    pub snapshot_name: String,
    /// The node that took the snapshot.
    pub node_name: String,
    /// The file:// URI of the snapshot.
    pub location: String,
    /// Whether the file is zip-compressed (this project's extension of RKE2's spec).
    #[serde(default)]
    #[schemars(with = "bool")]
    pub compressed: Option<bool>,
}

/// `status` of an ETCDSnapshotFile.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.cattle.k3s.v1.ETCDSnapshotStatus")]
pub struct EtcdSnapshotStatus {
    /// Size of the snapshot file.
    #[serde(default)]
    #[schemars(with = "Quantity")]
    pub size: Option<Quantity>,
    /// When the snapshot was taken.
    #[serde(default)]
    #[schemars(with = "Time")]
    pub creation_time: Option<Time>,
    /// Whether the snapshot is complete and may be restored.
    #[serde(default)]
    #[schemars(with = "bool")]
    pub ready_to_use: Option<bool>,
    /// Why the snapshot failed, if it did.
    #[serde(default)]
    #[schemars(with = "String")]
    pub error: Option<String>,
}

/// `etcdsnapshotfiles.k3s.cattle.io`.
pub static ETCD_SNAPSHOT_FILES: ResourceInfo = ResourceInfo {
    go_package: "k3s",
    schema: Some(super::schema::schema_of::<EtcdSnapshotFile>),
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    ..ResourceInfo::stored(
        "k3s.cattle.io",
        "etcdsnapshotfiles",
        "etcdsnapshotfile",
        "ETCDSnapshotFile",
        false,
        "/registry/k3s.cattle.io/etcdsnapshotfiles",
    )
};

const COLUMNS: &[Column] = &[
    NAME,
    col("SnapshotName", "The base name of the snapshot file"),
    col("Node", "The node that took the snapshot"),
    col("Location", "The file:// URI of the snapshot"),
    col("Size", "Size of the snapshot file"),
    col("CreationTime", "When the snapshot was taken"),
];

fn cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        text(obj, "/spec/snapshotName").into(),
        text(obj, "/spec/nodeName").into(),
        text(obj, "/spec/location").into(),
        text(obj, "/status/size").into(),
        text(obj, "/status/creationTime").into(),
    ]
}
