//! The `ETCDSnapshotFile` objects (k3s.cattle.io/v1) of this server's snapshots: after every
//! save, delete and prune, and when the schedule starts, the objects labelled with this node
//! are brought in line with the snapshot directory — a record for every file, none for a file
//! that is gone — so `kubectl get etcdsnapshotfiles` on any server lists every server's
//! snapshots (docs/operations.md §4.1). The directory is the truth: a restore that brought
//! back old records, or a file removed by hand, is corrected at the next sync.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::snapshot::{SnapshotInfo, ZIP_SUFFIX};
use crate::registry::ETCD_SNAPSHOT_FILES;
use crate::storage::ObjectError;
use crate::storage::selectors::LabelSelector;
use crate::storage::{ListOptions, Storage};

/// The label naming the node whose disk holds the snapshot (RKE2's).
pub const STORAGE_NODE_LABEL: &str = "etcd.rke2.cattle.io/snapshot-storage-node";

/// The object name of a local snapshot: `local-<snapshot name>`, made a valid DNS subdomain.
pub fn object_name(snapshot: &str) -> String {
    let mut name: String = format!("local-{snapshot}")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

/// The record of one snapshot file in `dir`.
pub fn record(info: &SnapshotInfo, node: &str, dir: &Path) -> Value {
    let created = chrono::DateTime::from_timestamp(info.created, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    json!({
        "apiVersion": ETCD_SNAPSHOT_FILES.api_version(),
        "kind": ETCD_SNAPSHOT_FILES.kind,
        "metadata": {
            "name": object_name(&info.name),
            "labels": {STORAGE_NODE_LABEL: node},
        },
        "spec": {
            "snapshotName": info.name,
            "nodeName": node,
            "location": format!("file://{}", dir.join(&info.name).display()),
            "compressed": info.name.ends_with(ZIP_SUFFIX),
        },
        "status": {
            // resource.Quantity, as RKE2 writes it.
            "size": info.size.to_string(),
            "creationTime": created,
            "readyToUse": true,
        },
    })
}

/// What a sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
}

/// Makes the records labelled with `node` match `present` (the files in `dir`).
pub async fn sync(
    storage: &Storage,
    node: &str,
    dir: &Path,
    present: &[SnapshotInfo],
) -> Result<SyncOutcome, ObjectError> {
    let selector = LabelSelector::parse(&format!("{STORAGE_NODE_LABEL}={node}"))?;
    let existing = storage
        .list(
            &ETCD_SNAPSHOT_FILES,
            None,
            &ListOptions {
                label_selector: Some(selector),
                ..Default::default()
            },
        )
        .await?;
    let mut stored: BTreeMap<String, Value> = existing
        .items
        .into_iter()
        .map(|o| (crate::registry::print::name(&o).to_string(), o))
        .collect();
    let mut outcome = SyncOutcome::default();
    for info in present {
        let want = record(info, node, dir);
        let name = object_name(&info.name);
        match stored.remove(&name) {
            Some(have) if have["spec"] == want["spec"] && have["status"] == want["status"] => {}
            Some(_) => {
                storage
                    .modify(&ETCD_SNAPSHOT_FILES, None, &name, None, |obj| {
                        obj["spec"] = want["spec"].clone();
                        obj["status"] = want["status"].clone();
                        Ok::<(), ObjectError>(())
                    })
                    .await?;
            }
            None => match storage.create(&ETCD_SNAPSHOT_FILES, None, want).await {
                Ok(_) | Err(ObjectError::AlreadyExists { .. }) => outcome.created.push(name),
                Err(e) => return Err(e),
            },
        }
    }
    for name in stored.into_keys() {
        match storage
            .delete(&ETCD_SNAPSHOT_FILES, None, &name, None, None)
            .await
        {
            Ok(_) | Err(ObjectError::NotFound { .. }) => outcome.deleted.push(name),
            Err(e) => return Err(e),
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_records_follow_rke2() {
        assert_eq!(
            object_name("etcd-snapshot-s1-1700000000"),
            "local-etcd-snapshot-s1-1700000000"
        );
        assert_eq!(
            object_name("On_Demand-s1-1.zip"),
            "local-on-demand-s1-1.zip"
        );
        let info = SnapshotInfo {
            name: "on-demand-s1-1700000000.zip".into(),
            node: "s1".into(),
            size: 4096,
            created: 1_700_000_000,
        };
        let r = record(&info, "s1", Path::new("/var/lib/rke2/server/db/snapshots"));
        assert_eq!(r["apiVersion"], "k3s.cattle.io/v1");
        assert_eq!(r["kind"], "ETCDSnapshotFile");
        assert_eq!(r["metadata"]["labels"][STORAGE_NODE_LABEL], "s1");
        assert_eq!(
            r["spec"]["location"],
            "file:///var/lib/rke2/server/db/snapshots/on-demand-s1-1700000000.zip"
        );
        assert_eq!(r["spec"]["compressed"], true);
        assert_eq!(r["status"]["size"], "4096");
        assert_eq!(r["status"]["creationTime"], "2023-11-14T22:13:20Z");
        assert_eq!(r["status"]["readyToUse"], true);
    }

    #[tokio::test]
    async fn sync_creates_updates_and_removes_only_this_nodes_records() {
        let storage = Storage::new(crate::datastore::Datastore::from_impl(
            crate::datastore::memory::MemoryStore::new(),
        ));
        let dir = Path::new("/snap");
        let snap = |name: &str, size| SnapshotInfo {
            name: name.into(),
            node: String::new(),
            size,
            created: 1,
        };
        // Another node's record is never touched.
        storage
            .create(
                &ETCD_SNAPSHOT_FILES,
                None,
                record(&snap("x-s2-1", 1), "s2", dir),
            )
            .await
            .unwrap();
        let out = sync(
            &storage,
            "s1",
            dir,
            &[snap("a-s1-1", 10), snap("b-s1-2", 20)],
        )
        .await
        .unwrap();
        assert_eq!(out.created.len(), 2);
        let out = sync(&storage, "s1", dir, &[snap("b-s1-2", 21)])
            .await
            .unwrap();
        assert_eq!(out.deleted, vec!["local-a-s1-1".to_string()]);
        assert!(out.created.is_empty());
        let b = storage
            .get(&ETCD_SNAPSHOT_FILES, None, "local-b-s1-2")
            .await
            .unwrap();
        assert_eq!(b["status"]["size"], "21");
        assert!(
            storage
                .get_opt(&ETCD_SNAPSHOT_FILES, None, "local-x-s2-1")
                .await
                .unwrap()
                .is_some()
        );
    }
}
