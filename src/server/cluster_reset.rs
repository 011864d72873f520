//! `rke2 server --cluster-reset [--cluster-reset-restore-path=<snapshot>]` and what the other
//! servers do afterwards, with RKE2's messages (docs/operations.md §4.2):
//!
//! - reset: etcd restarts on the existing data with `force-new-cluster`, leaving a single-member
//!   cluster that keeps all data;
//! - restore: the snapshot is checked first (nothing changes if it is not a snapshot), restored
//!   with etcd's own tool into a new directory, and only then is `db/etcd` moved to
//!   `db/etcd-old-<unix time>`;
//! - either way the server waits for etcd, checks the token against the bootstrap data, writes
//!   `db/reset-flag` and exits asking to restart without the flag; starting again with the flag
//!   while `db/reset-flag` exists is refused, a normal start removes it;
//! - a server restarting with `server` set whose member is no longer in the cluster's member
//!   list (the cluster was reset or restored without it) moves its etcd data to
//!   `db/etcd-old-<unix time>` and joins again as a new member, saying so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ServerError;
use crate::clientaccess::ClusterAccess;
use crate::cluster::context::NodeIdentity;
use crate::config::ServerConfig;
use crate::etcd::snapshot::{self, RestoreTarget, SnapshotError};
use crate::fsutil::{self, IoContext};
use crate::paths::ServerPaths;
use crate::token::JoinToken;

/// How long a restarting server asks the cluster whether it is still a member.
const MEMBERSHIP_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// What RKE2 prints when a reset or restore has finished.
pub fn reset_done_message(data_dir: &Path) -> String {
    format!(
        "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. \
         Backup and delete {}/server/db on each peer etcd server and rejoin the nodes",
        data_dir.display()
    )
}

/// `db/reset-flag`.
pub fn reset_flag(paths: &ServerPaths) -> PathBuf {
    paths.db().join("reset-flag")
}

/// `db/etcd-old-<unix>` (suffixed if taken).
fn old_data_dir(paths: &ServerPaths) -> PathBuf {
    let now = chrono::Utc::now().timestamp();
    let mut dir = paths.db().join(format!("etcd-old-{now}"));
    let mut n = 1;
    while dir.exists() {
        dir = paths.db().join(format!("etcd-old-{now}-{n}"));
        n += 1;
    }
    dir
}

/// Resolves the restore path: a file, or the name of a snapshot in the snapshot directory.
fn snapshot_file(config: &ServerConfig, given: &Path) -> Result<PathBuf, ServerError> {
    if given.is_file() {
        return Ok(given.to_path_buf());
    }
    let name = given.to_string_lossy();
    if !name.contains('/') {
        let dir = snapshot::snapshot_dir(&config.snapshots, &config.node.data_dir);
        if let Ok(p) = snapshot::find(&dir, &name) {
            return Ok(p);
        }
    }
    Err(ServerError::Snapshot(SnapshotError::NotFound {
        name: name.into_owned(),
        dir: snapshot::snapshot_dir(&config.snapshots, &config.node.data_dir)
            .display()
            .to_string(),
    }))
}

/// Prepares the etcd data directory for a reset or restore before etcd starts; returns the
/// extra etcd arguments of this start. Refuses a second reset while `db/reset-flag` exists.
pub(super) async fn prepare(
    config: &ServerConfig,
    paths: &ServerPaths,
    node: &NodeIdentity,
    etcd_bin: &Path,
    path_var: Option<&str>,
) -> Result<Vec<String>, ServerError> {
    let flag = reset_flag(paths);
    let Some(restore) = &config.cluster_reset.restore_path else {
        if flag.exists() {
            return Err(ServerError::ClusterResetDone { flag });
        }
        if !paths.etcd_wal().exists() {
            return Err(ServerError::NoEtcdData {
                dir: paths.etcd_data(),
            });
        }
        tracing::info!(
            component = "cluster-reset",
            "resetting etcd cluster membership: this server becomes the only member and keeps all data"
        );
        return Ok(vec!["force-new-cluster=true".into()]);
    };
    let file = snapshot_file(config, restore)?;
    let bytes = {
        let f = file.clone();
        tokio::task::spawn_blocking(move || snapshot::verify_file(&f))
            .await
            .map_err(ServerError::SnapshotCheck)??
    };
    let tool = snapshot::find_restore_tool(etcd_bin, path_var)
        .ok_or_else(|| ServerError::NoRestoreTool)?;
    tracing::info!(
        component = "cluster-reset",
        "restoring etcd snapshot {} (checked) with {}",
        file.display(),
        tool.display()
    );
    fsutil::ensure_private_dir(&paths.db()).at(&paths.db())?;
    let staging = paths
        .db()
        .join(format!("etcd-restore-{}", chrono::Utc::now().timestamp()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).at(&staging)?;
    }
    let member = format!("{}-{}", node.name, crate::token::random_hex(4));
    let peer_url = crate::etcd::process::url("https", node.primary_ip(), config.etcd_peer_port);
    let target = RestoreTarget {
        member: member.clone(),
        peer_url,
        data_dir: staging.clone(),
    };
    if let Err(e) = snapshot::restore(&tool, bytes, &paths.db(), &target).await {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.into());
    }
    if paths.etcd_data().exists() {
        let old = old_data_dir(paths);
        std::fs::rename(paths.etcd_data(), &old).at(&old)?;
        tracing::info!(
            component = "cluster-reset",
            "moved the previous etcd data to {}",
            old.display()
        );
    }
    std::fs::rename(&staging, paths.etcd_data()).at(&paths.etcd_data())?;
    fsutil::ensure_private_dir(&paths.etcd_data()).at(&paths.etcd_data())?;
    let name_file = paths.etcd_name();
    fsutil::write_atomic(&name_file, member.as_bytes(), fsutil::SECRET_FILE_MODE).at(&name_file)?;
    Ok(Vec::new())
}

/// After a reset or restore only this server is an etcd member: the node-password secrets of
/// the other servers (Nodes with the etcd role) are deleted, so a server that comes back wiped —
/// new data directory, new node password, same name — can register again instead of being
/// refused as an impostor. A server that kept its data registers its password again at its
/// next start. Agents keep theirs: their identities are untouched by a reset. Returns the nodes
/// whose secrets were deleted; failures are logged, never fatal (the operator can delete a
/// secret by hand).
pub(super) async fn forget_other_servers(
    store: &crate::datastore::Datastore,
    own_node: &str,
) -> Vec<String> {
    use crate::registry::{NODES, SECRETS};
    use crate::storage::selectors::LabelSelector;
    use crate::storage::{ListOptions, Storage};
    let storage = Storage::new(store.clone());
    let servers = match LabelSelector::parse("node-role.kubernetes.io/etcd=true") {
        Ok(selector) => {
            storage
                .list(
                    &NODES,
                    None,
                    &ListOptions {
                        label_selector: Some(selector),
                        ..Default::default()
                    },
                )
                .await
        }
        Err(e) => Err(e),
    };
    let servers = match servers {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(
                component = "cluster-reset",
                "cannot list the servers' nodes: {e}"
            );
            return Vec::new();
        }
    };
    let mut forgotten = Vec::new();
    for node in servers {
        let name = crate::registry::print::name(&node).to_string();
        if name == own_node {
            continue;
        }
        let secret = crate::cluster::node_password::secret_name(&name);
        // By key: the value may be encrypted at rest, and nothing in it is needed here.
        match storage
            .datastore()
            .delete(&SECRETS.key(Some("kube-system"), &secret), None)
            .await
        {
            Ok(crate::datastore::Cas::Written(_)) => {
                tracing::info!(
                    component = "cluster-reset",
                    node = %name,
                    "deleted the node password secret kube-system/{secret}: the server may rejoin with a new data directory"
                );
                forgotten.push(name);
            }
            // Not there: nothing to forget.
            Ok(crate::datastore::Cas::Conflict(_)) => {}
            Err(e) => tracing::warn!(
                component = "cluster-reset",
                node = %name,
                "cannot delete kube-system/{secret}: {e}"
            ),
        }
    }
    forgotten
}

/// After a successful reset or restore: writes `db/reset-flag` and tells the operator what
/// to do next.
pub(super) fn finish(config: &ServerConfig, paths: &ServerPaths) -> Result<(), ServerError> {
    let flag = reset_flag(paths);
    fsutil::write_atomic(&flag, b"", fsutil::SECRET_FILE_MODE).at(&flag)?;
    tracing::info!(
        component = "cluster-reset",
        "{}",
        reset_done_message(&config.node.data_dir)
    );
    Ok(())
}

/// On the first normal start after a reset: removes `db/reset-flag`.
pub(super) fn clear_flag(paths: &ServerPaths) -> Result<(), ServerError> {
    let flag = reset_flag(paths);
    if flag.exists() {
        std::fs::remove_file(&flag).at(&flag)?;
        tracing::info!(
            component = "cluster-reset",
            "first start after a cluster reset: removed {}",
            flag.display()
        );
    }
    Ok(())
}

/// For a restarting server that joins through `server`: asks the cluster for its member list
/// and, if this server's member is not in it (the cluster was reset or restored without it),
/// moves `db/etcd` aside so the start becomes a join. Returns whether it did. An unreachable
/// cluster is not an answer: the server then restarts on its data as usual.
pub(super) async fn rejoin_if_left_behind(
    config: &ServerConfig,
    paths: &ServerPaths,
    node: &NodeIdentity,
) -> Result<bool, ServerError> {
    let (Some(server), Some(token)) = (&config.node.server, &config.node.token) else {
        return Ok(false);
    };
    let Ok(Some(member)) = fsutil::read_optional(&paths.etcd_name()) else {
        return Ok(false);
    };
    let member = member.trim().to_string();
    let peer_url = crate::etcd::process::url("https", node.primary_ip(), config.etcd_peer_port);
    let token = JoinToken::parse(token.expose())?;
    let lookup = async {
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_CHECK_TIMEOUT;
        loop {
            let attempt = async {
                let access = ClusterAccess::connect(&server.url(), &token, "server", None).await?;
                access
                    .get_json::<crate::etcd::ClusterInfo>(crate::protocol::DB_INFO)
                    .await
            };
            match attempt.await {
                Ok(info) => return Some(info),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::info!(
                        component = "cluster-reset",
                        "could not read the cluster's etcd member list ({e}); restarting on the local etcd data"
                    );
                    return None;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    };
    let Some(info) = lookup.await else {
        return Ok(false);
    };
    let known = info
        .members
        .iter()
        .any(|m| m.name == member || m.peer_urls.contains(&peer_url));
    if known || info.members.is_empty() {
        return Ok(false);
    }
    let old = old_data_dir(paths);
    std::fs::rename(paths.etcd_data(), &old).at(&old)?;
    // A new member gets a new name, as after RKE2's tombstone or reset.
    let name_file = paths.etcd_name();
    if name_file.exists() {
        std::fs::remove_file(&name_file).at(&name_file)?;
    }
    tracing::warn!(
        component = "cluster-reset",
        "this server's etcd member {member} is not in the cluster's member list ({}): the cluster was reset or restored from a snapshot. \
         Moved the old etcd data to {} and joining the cluster again as a new member",
        info.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        old.display()
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{NODES, SECRETS};
    use crate::storage::Storage;
    use serde_json::json;

    #[tokio::test]
    async fn a_reset_forgets_the_other_servers_node_passwords_only() {
        let store =
            crate::datastore::Datastore::from_impl(crate::datastore::memory::MemoryStore::new());
        let storage = Storage::new(store.clone());
        for (node, server) in [("s1", true), ("s2", true), ("a1", false)] {
            let labels = if server {
                json!({"node-role.kubernetes.io/etcd": "true"})
            } else {
                json!({})
            };
            storage
                .create(
                    &NODES,
                    None,
                    json!({"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": node, "labels": labels}}),
                )
                .await
                .unwrap();
            storage
                .create(
                    &SECRETS,
                    Some("kube-system"),
                    json!({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": crate::cluster::node_password::secret_name(node)}}),
                )
                .await
                .unwrap();
        }
        assert_eq!(forget_other_servers(&store, "s1").await, vec!["s2"]);
        let left = |n: &str| {
            let storage = storage.clone();
            let name = crate::cluster::node_password::secret_name(n);
            async move {
                storage
                    .get_opt(&SECRETS, Some("kube-system"), &name)
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        assert!(left("s1").await, "this server keeps its own");
        assert!(!left("s2").await, "the other server's is gone");
        assert!(left("a1").await, "agents keep theirs");
    }
}
