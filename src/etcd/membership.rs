//! etcd cluster membership (docs/protocol.md §5.3, §5.5): a joining server adds itself as a learner
//! through the existing members; the member that is currently the raft leader promotes learners
//! once they have caught up; deleting a server node removes its member, moving leadership away
//! first and never removing the last voter nor a member whose removal would leave the remaining
//! voters without a healthy majority.
//!
//! Which member belongs to which node is decided by etcd's own membership: a server names its
//! member `<node>-<8 hex>` itself (with the etcd client certificate only servers hold), so no
//! Kubernetes object a client can write takes part (docs/security.md).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use etcd_client::{Client, MemberAddOptions};
use tokio_util::sync::CancellationToken;

use super::{
    EtcdError, EtcdTls, MemberInfo, connect, local_status, member_list, node_of_member,
    with_timeout,
};

/// How long a joiner keeps retrying MemberAdd on retryable errors ("too many learner members").
const JOIN_DEADLINE: Duration = Duration::from_secs(300);
/// Interval of the learner promotion loop on the leader (k3s: 15 s; ours is faster so joins
/// complete in seconds).
pub const PROMOTE_INTERVAL: Duration = Duration::from_millis(500);
/// Retry interval of a refused MemberAdd. etcd refuses adds until its leader has been connected
/// to every voting member for 5 s ("unhealthy cluster") and while another learner exists, so
/// servers started together join one after another; retrying often keeps that queue short.
const JOIN_RETRY: Duration = Duration::from_millis(300);
/// A learner that never starts is removed after this long (k3s: 5 min without progress).
const LEARNER_STALL_LIMIT: Duration = Duration::from_secs(300);

/// The result of adding ourselves to an existing cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    /// `--initial-cluster` for our first start.
    pub initial_cluster: String,
    /// Whether we were already a member (restart after a half-finished join).
    pub already_member: bool,
}

fn peer_host(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => rest,
    }
}

/// Builds `--initial-cluster` from the member list. Unstarted members (empty name) get a unique
/// placeholder name: etcd only compares peer URLs of the other members, but every member must
/// be listed or etcd refuses to start ("member count is unequal").
pub fn initial_cluster(members: &[MemberInfo], my_name: &str, my_peer_url: &str) -> String {
    let mut parts = Vec::new();
    for m in members {
        let Some(url) = m.peer_urls.first() else {
            continue;
        };
        let name = if url == my_peer_url {
            my_name.to_string()
        } else if m.name.is_empty() {
            format!("unstarted-{:x}", m.id)
        } else {
            m.name.clone()
        };
        parts.push(format!("{name}={url}"));
    }
    parts.join(",")
}

/// Decides what to do about our membership given the current member list: already a member,
/// a refusal for a duplicate node name, or "add me".
pub fn classify(
    members: &[MemberInfo],
    my_name: &str,
    my_peer_url: &str,
) -> Result<bool, EtcdError> {
    let my_node = node_of_member(my_name);
    let my_host = peer_host(my_peer_url);
    for m in members {
        let same_url = m.peer_urls.iter().any(|u| u == my_peer_url);
        if same_url && (m.name.is_empty() || m.name == my_name) {
            return Ok(true);
        }
        if !m.name.is_empty() && m.name != my_name && node_of_member(&m.name) == my_node {
            return Err(EtcdError::DuplicateNodeName(m.name.clone()));
        }
        if same_url {
            // Our address is taken by a member with another name: a previous incarnation of
            // this node whose data dir was lost. It must be removed before we can join.
            return Err(EtcdError::Join(format!(
                "etcd member {} already uses peer URL {my_peer_url} ({my_host}); remove it (kubectl delete node) \
                 or restore this server's data directory",
                m.name
            )));
        }
    }
    Ok(false)
}

fn retryable(e: &EtcdError) -> bool {
    match e {
        EtcdError::Timeout => true,
        EtcdError::Client(m) => {
            m.contains("too many learner")
                || m.contains("unhealthy cluster")
                || m.contains("Unavailable")
                || m.contains("tcp connect")
                || m.contains("transport")
                || m.contains("leader changed")
                || m.contains("no leader")
        }
        _ => false,
    }
}

/// Adds this server to the cluster as a learner, talking to the voting members in `existing`
/// (from the join server's `/db/info`). Retries while the cluster refuses for transient
/// reasons (another learner catching up, leader election) so servers started together all join.
pub async fn join_as_learner(
    existing: &[MemberInfo],
    my_name: &str,
    my_peer_url: &str,
    tls: &EtcdTls,
    cancel: &CancellationToken,
) -> Result<JoinPlan, EtcdError> {
    let endpoints: Vec<String> = existing
        .iter()
        .filter(|m| !m.is_learner && !m.peer_urls.iter().any(|u| u == my_peer_url))
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect();
    if endpoints.is_empty() {
        return Err(EtcdError::Join(
            "the cluster reported no voting members to join through".into(),
        ));
    }
    let deadline = Instant::now() + JOIN_DEADLINE;
    let mut last_err = None;
    while Instant::now() < deadline && !cancel.is_cancelled() {
        let attempt = async {
            let client = connect(&endpoints, tls).await?;
            let members = member_list(&client).await?;
            let already = classify(&members, my_name, my_peer_url)?;
            let members = if already {
                members
            } else {
                let mut cc = client.cluster_client();
                with_timeout(cc.member_add(
                    [my_peer_url.to_string()],
                    Some(MemberAddOptions::new().with_is_learner()),
                ))
                .await?;
                tracing::info!(component = "etcd", etcd_member = %my_name, "added to the etcd cluster as a learner");
                member_list(&client).await?
            };
            Ok::<_, EtcdError>(JoinPlan {
                initial_cluster: initial_cluster(&members, my_name, my_peer_url),
                already_member: already,
            })
        };
        match attempt.await {
            Ok(plan) => return Ok(plan),
            Err(e) if retryable(&e) => {
                if last_err.is_none() {
                    tracing::info!(
                        component = "etcd",
                        "etcd is not accepting this member yet ({e}); retrying"
                    );
                } else {
                    tracing::debug!(
                        component = "etcd",
                        "etcd join not possible yet ({e}); retrying"
                    );
                }
                last_err = Some(e);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(JOIN_RETRY) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| EtcdError::Join("cancelled".into())))
}

/// Promotes learners while this member is the raft leader. Runs until `cancel`.
/// `local` must be a client to the local member only.
pub async fn promote_learners(local: Client, cancel: CancellationToken) {
    let mut first_seen: HashMap<u64, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PROMOTE_INTERVAL) => {}
        }
        let Ok(status) = local_status(&local).await else {
            continue;
        };
        if !status.is_leader() {
            first_seen.clear();
            continue;
        }
        let Ok(members) = member_list(&local).await else {
            continue;
        };
        let learners: Vec<&MemberInfo> = members.iter().filter(|m| m.is_learner).collect();
        first_seen.retain(|id, _| learners.iter().any(|l| l.id == *id));
        for l in learners {
            let mut cc = local.cluster_client();
            match with_timeout(cc.member_promote(l.id)).await {
                Ok(_) => {
                    first_seen.remove(&l.id);
                    tracing::info!(component = "etcd", etcd_member = %l.name, "promoted learner to voting member");
                }
                Err(e) => {
                    let seen = *first_seen.entry(l.id).or_insert_with(Instant::now);
                    tracing::debug!(component = "etcd", etcd_member = %l.name, "learner not promoted yet: {e}");
                    if l.name.is_empty() && seen.elapsed() > LEARNER_STALL_LIMIT {
                        tracing::warn!(
                            component = "etcd",
                            "removing learner {:x} ({:?}): it never started within {LEARNER_STALL_LIMIT:?}",
                            l.id,
                            l.peer_urls
                        );
                        let _ = with_timeout(cc.member_remove(l.id)).await;
                        first_seen.remove(&l.id);
                    }
                }
            }
        }
    }
}

/// The started member of server node `node` (unstarted learners have no name yet).
pub fn member_of_node<'a>(members: &'a [MemberInfo], node: &str) -> Option<&'a MemberInfo> {
    members
        .iter()
        .find(|m| !m.name.is_empty() && node_of_member(&m.name) == node)
}

/// Whether removing `target` keeps the cluster safe: never the last voter, and the voters left
/// must have a healthy majority (`healthy` holds the ids of members that answered).
pub fn check_removal(
    members: &[MemberInfo],
    target: &MemberInfo,
    healthy: &HashSet<u64>,
) -> Result<(), EtcdError> {
    if target.is_learner {
        return Ok(());
    }
    let remaining: Vec<&MemberInfo> = members
        .iter()
        .filter(|m| !m.is_learner && m.id != target.id)
        .collect();
    if remaining.is_empty() {
        return Err(EtcdError::LastVoter(target.name.clone()));
    }
    let up = remaining.iter().filter(|m| healthy.contains(&m.id)).count();
    if up * 2 <= remaining.len() {
        return Err(EtcdError::WouldLoseQuorum {
            member: target.name.clone(),
            healthy: up,
            remaining: remaining.len(),
        });
    }
    Ok(())
}

/// How long one member gets to answer a status call in [`healthy_members`].
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Ids of the voting members that answer a status call on their own client URLs.
pub async fn healthy_members(members: &[MemberInfo], tls: &EtcdTls) -> HashSet<u64> {
    let probes = members
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| async move {
            let probe = async {
                let c = connect(&m.client_urls, tls).await?;
                local_status(&c).await
            };
            let ok = matches!(
                tokio::time::timeout(HEALTH_PROBE_TIMEOUT, probe).await,
                Ok(Ok(s)) if s.member_id == m.id
            );
            ok.then_some(m.id)
        });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Checks that the member named `member_name` may be removed now (see [`check_removal`]).
pub async fn removal_allowed(
    client: &Client,
    tls: &EtcdTls,
    member_name: &str,
) -> Result<(), EtcdError> {
    let members = member_list(client).await?;
    let Some(target) = members.iter().find(|m| m.name == member_name) else {
        return Ok(());
    };
    let healthy = healthy_members(&members, tls).await;
    check_removal(&members, target, &healthy)
}

/// Removes the member named `member_name`. If it is the leader, leadership is moved to another
/// voter first (MoveLeader must be sent to the leader itself); the last voter and members whose
/// removal would lose quorum are never removed ([`check_removal`]).
/// Returns false if no such member exists.
pub async fn remove_member(
    client: &Client,
    tls: &EtcdTls,
    member_name: &str,
) -> Result<bool, EtcdError> {
    let members = member_list(client).await?;
    let Some(target) = members.iter().find(|m| m.name == member_name) else {
        return Ok(false);
    };
    let healthy = healthy_members(&members, tls).await;
    check_removal(&members, target, &healthy)?;
    let voters: Vec<&MemberInfo> = members.iter().filter(|m| !m.is_learner).collect();
    let status = local_status(client).await?;
    if status.leader == target.id
        && let Some(next) = voters.iter().find(|m| m.id != target.id)
    {
        let leader = if status.member_id == target.id {
            client.clone()
        } else {
            connect(&target.client_urls, tls).await?
        };
        let mut mc = leader.maintenance_client();
        match with_timeout(mc.move_leader(next.id)).await {
            Ok(_) => {
                tracing::info!(component = "etcd", etcd_member = %member_name, "moved etcd leadership to {}", next.name)
            }
            // A dead leader cannot hand over; removing it still works through the others.
            Err(e) => {
                tracing::warn!(component = "etcd", etcd_member = %member_name, "could not move leadership first: {e}")
            }
        }
    }
    let mut cc = client.cluster_client();
    with_timeout(cc.member_remove(target.id)).await?;
    tracing::info!(component = "etcd", etcd_member = %member_name, "removed etcd member");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, peer: &str, learner: bool) -> MemberInfo {
        MemberInfo {
            id,
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: vec![peer.replace("2380", "2379")],
            is_learner: learner,
        }
    }

    #[test]
    fn initial_cluster_lists_everyone_with_unique_names() {
        let members = vec![
            m(1, "s1-00000001", "https://127.0.1.1:2380", false),
            m(2, "", "https://127.0.1.2:2380", true),
            m(3, "", "https://127.0.1.3:2380", true),
        ];
        let ic = initial_cluster(&members, "s2-00000002", "https://127.0.1.2:2380");
        assert_eq!(
            ic,
            "s1-00000001=https://127.0.1.1:2380,s2-00000002=https://127.0.1.2:2380,unstarted-3=https://127.0.1.3:2380"
        );
    }

    #[test]
    fn classify_detects_membership_and_duplicates() {
        let members = vec![m(1, "s1-00000001", "https://127.0.1.1:2380", false)];
        assert!(!classify(&members, "s2-00000002", "https://127.0.1.2:2380").unwrap());
        assert!(classify(&members, "s1-00000001", "https://127.0.1.1:2380").unwrap());
        let e = classify(&members, "s1-0000000f", "https://127.0.1.9:2380").unwrap_err();
        assert!(matches!(e, EtcdError::DuplicateNodeName(_)), "{e}");
        let half = vec![m(5, "", "https://127.0.1.2:2380", true)];
        assert!(classify(&half, "s2-00000002", "https://127.0.1.2:2380").unwrap());
    }

    #[test]
    fn members_belong_to_the_node_that_named_them() {
        let members = vec![
            m(1, "s1-0000abcd", "https://127.0.1.1:2380", false),
            m(2, "", "https://127.0.1.2:2380", true),
            m(3, "s10-00000003", "https://127.0.1.3:2380", false),
        ];
        assert_eq!(member_of_node(&members, "s1").map(|m| m.id), Some(1));
        assert_eq!(member_of_node(&members, "s10").map(|m| m.id), Some(3));
        assert!(member_of_node(&members, "a1").is_none());
        assert!(member_of_node(&members, "").is_none());
    }

    #[test]
    fn removals_keep_a_voter_and_a_healthy_majority() {
        let one = vec![m(1, "s1-00000001", "https://127.0.1.1:2380", false)];
        let all = |ms: &[MemberInfo]| ms.iter().map(|m| m.id).collect::<HashSet<u64>>();
        let e = check_removal(&one, &one[0], &all(&one)).unwrap_err();
        assert!(matches!(e, EtcdError::LastVoter(_)), "{e}");

        let three = vec![
            m(1, "s1-00000001", "https://127.0.1.1:2380", false),
            m(2, "s2-00000002", "https://127.0.1.2:2380", false),
            m(3, "s3-00000003", "https://127.0.1.3:2380", false),
        ];
        // All healthy: any one may go.
        assert!(check_removal(&three, &three[2], &all(&three)).is_ok());
        // s3 is down: removing it leaves s1+s2 healthy; removing s2 leaves s1 + dead s3.
        let s1_s2: HashSet<u64> = [1, 2].into();
        assert!(check_removal(&three, &three[2], &s1_s2).is_ok());
        let e = check_removal(&three, &three[1], &s1_s2).unwrap_err();
        assert!(
            matches!(
                e,
                EtcdError::WouldLoseQuorum {
                    healthy: 1,
                    remaining: 2,
                    ..
                }
            ),
            "{e}"
        );
        // Learners never count and may always go.
        let with_learner = vec![
            m(1, "s1-00000001", "https://127.0.1.1:2380", false),
            m(4, "s4-00000004", "https://127.0.1.4:2380", true),
        ];
        assert!(check_removal(&with_learner, &with_learner[1], &HashSet::new()).is_ok());
        let e = check_removal(&with_learner, &with_learner[0], &all(&with_learner)).unwrap_err();
        assert!(matches!(e, EtcdError::LastVoter(_)), "{e}");
    }
}
