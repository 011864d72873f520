//! ETCDSnapshotFile (k3s.cattle.io/v1, cluster-scoped): one object per etcd snapshot file of
//! any server, as RKE2 shows them (`kubectl get etcdsnapshotfiles`). Each server keeps the
//! objects of its own snapshots in line with its snapshot directory
//! (crate::etcd::snapshot_records); the columns are those of RKE2's CRD.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::print::*;
use super::{ResourceInfo, print::Printer};

/// `etcdsnapshotfiles.k3s.cattle.io`.
pub static ETCD_SNAPSHOT_FILES: ResourceInfo = ResourceInfo {
    go_package: "k3s",
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
