//! The embedded etcd member: its identity, the TLS client used to reach it, its readiness, and
//! cluster membership (join as learner, promotion by the leader, removal). The process itself is
//! in [`process`].

pub mod membership;
pub mod process;
pub mod snapshot;
pub mod snapshot_records;

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, IoContext, PathError};
use crate::paths::{CertPair, ServerPaths};

/// Timeout of one etcd RPC made by the daemon (declared with the datastore, which uses it too).
pub use crate::datastore::etcd::RPC_TIMEOUT;
/// Dial timeout of etcd clients (k3s uses 2 s).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// etcd errors.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{0}")]
    BinaryNotFound(String),
    #[error("cannot start etcd ({bin}): {source}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd: {0}")]
    Client(String),
    #[error("etcd peer TLS: {0}")]
    PeerTls(#[source] crate::https::TlsError),
    #[error("etcd peer request: {0}")]
    PeerRequest(#[source] crate::https::ClientError),
    #[error("etcd request timed out")]
    Timeout,
    #[error(
        "duplicate node name found: etcd member {0} already uses this node name; use a unique node-name for this server"
    )]
    DuplicateNodeName(String),
    #[error("this server has not yet been promoted from learner to voting member")]
    Learner,
    #[error("etcd has no leader (no quorum)")]
    NoLeader,
    #[error("refusing to remove etcd member {0}: it is the only voting member")]
    LastVoter(String),
    #[error(
        "refusing to remove etcd member {member}: only {healthy} of the {remaining} voting members \
         left would be healthy, which is no quorum; bring the unhealthy members back (or remove \
         them first)"
    )]
    WouldLoseQuorum {
        member: String,
        healthy: usize,
        remaining: usize,
    },
    #[error("joining the etcd cluster failed: {0}")]
    Join(String),
    #[error(
        "this server's etcd member {0} was removed from the cluster (its node was deleted); \
         to rejoin, remove this server's db directory {db} and start it again", db = .1.display()
    )]
    Removed(String, std::path::PathBuf),
    #[error(transparent)]
    Io(#[from] PathError),
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::Client(e.to_string())
    }
}

/// Client credentials for etcd. Clones share one copy, which [`EtcdTls::reload`] replaces when
/// the certificate is renewed while running, so every later connection presents the new one.
#[derive(Clone)]
pub struct EtcdTls {
    pem: std::sync::Arc<std::sync::RwLock<EtcdTlsPem>>,
}

#[derive(Clone)]
struct EtcdTlsPem {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls").finish_non_exhaustive()
    }
}

impl EtcdTls {
    fn read(paths: &ServerPaths) -> Result<EtcdTlsPem, EtcdError> {
        let read = |p: &Path| std::fs::read_to_string(p).at(p);
        let CertPair { cert, key } = paths.etcd_client();
        Ok(EtcdTlsPem {
            ca_pem: read(&paths.etcd_server_ca().cert)?,
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
        })
    }

    /// The etcd client certificate of this server.
    pub fn load(paths: &ServerPaths) -> Result<EtcdTls, EtcdError> {
        Ok(EtcdTls {
            pem: std::sync::Arc::new(std::sync::RwLock::new(Self::read(paths)?)),
        })
    }

    /// Credentials from PEM text (contexts built in memory, e.g. by unit tests).
    pub fn from_pem(ca_pem: String, cert_pem: String, key_pem: String) -> EtcdTls {
        EtcdTls {
            pem: std::sync::Arc::new(std::sync::RwLock::new(EtcdTlsPem {
                ca_pem,
                cert_pem,
                key_pem,
            })),
        }
    }

    /// Reads the files again (after a renewal); on error the previous credentials stay.
    pub fn reload(&self, paths: &ServerPaths) -> Result<(), EtcdError> {
        let new = Self::read(paths)?;
        *self.pem.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn current(&self) -> EtcdTlsPem {
        self.pem.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Connects to etcd at `endpoints` with client-certificate TLS.
pub async fn connect(endpoints: &[String], tls: &EtcdTls) -> Result<Client, EtcdError> {
    let tls = tls.current();
    let options = ConnectOptions::new()
        .with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
        )
        .with_connect_timeout(DIAL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    tokio::time::timeout(RPC_TIMEOUT, Client::connect(endpoints, Some(options)))
        .await
        .map_err(|_| EtcdError::Timeout)?
        .map_err(EtcdError::from)
}

/// Runs one etcd call under [`RPC_TIMEOUT`].
pub async fn with_timeout<T>(
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    tokio::time::timeout(RPC_TIMEOUT, fut)
        .await
        .map_err(|_| EtcdError::Timeout)?
        .map_err(EtcdError::from)
}

/// This server's etcd member name `<node>-<8 hex>`, created once and kept in
/// `server/db/etcd-name` (moved there from `server/db/etcd/name`, where etcd warned about it on
/// every start).
pub fn member_name(paths: &ServerPaths, node_name: &str) -> Result<String, EtcdError> {
    let file = paths.etcd_name();
    let legacy = paths.legacy_etcd_name();
    if let Some(old) = fsutil::read_optional(&legacy).at(&legacy)?
        && !old.trim().is_empty()
    {
        fsutil::ensure_private_dir(&paths.db()).at(&paths.db())?;
        fsutil::write_atomic(&file, old.trim().as_bytes(), fsutil::SECRET_FILE_MODE).at(&file)?;
        std::fs::remove_file(&legacy).at(&legacy)?;
    }
    if let Some(existing) = fsutil::read_optional(&file).at(&file)? {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let name = format!("{node_name}-{}", &crate::token::random_hex(4));
    fsutil::ensure_private_dir(&paths.db()).at(&paths.db())?;
    fsutil::write_atomic(&file, name.as_bytes(), fsutil::SECRET_FILE_MODE).at(&file)?;
    Ok(name)
}

/// The node name a member name belongs to (`n1-1a2b3c4d` -> `n1`).
pub fn node_of_member(member: &str) -> &str {
    match member.rsplit_once('-') {
        Some((node, suffix))
            if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            node
        }
        _ => member,
    }
}

/// One member as exposed on `/db/info` (etcd's own JSON field names, as k3s sends them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(
        rename = "isLearner",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_learner: bool,
}

/// `/db/info` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub members: Vec<MemberInfo>,
    /// Number of voting members (ours; lets joiners and tools see the quorum size).
    #[serde(rename = "votingMembers", default)]
    pub voting_members: usize,
}

/// Lists the members.
/// The local member's client, once etcd runs (shared by the orchestrator and the API server's
/// node admission).
pub type EtcdCell = std::sync::Arc<tokio::sync::OnceCell<Client>>;

pub async fn member_list(client: &Client) -> Result<Vec<MemberInfo>, EtcdError> {
    let mut c = client.cluster_client();
    let resp = with_timeout(c.member_list()).await?;
    Ok(resp
        .members()
        .iter()
        .map(|m| MemberInfo {
            id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        })
        .collect())
}

/// The state of the local member, from a status call to its own endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStatus {
    pub member_id: u64,
    pub leader: u64,
    pub is_learner: bool,
    pub raft_term: u64,
}

impl LocalStatus {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }
}

/// Status of the member behind `client` (which must point only at the local member).
pub async fn local_status(client: &Client) -> Result<LocalStatus, EtcdError> {
    let mut m = client.maintenance_client();
    let s = with_timeout(m.status()).await?;
    Ok(LocalStatus {
        member_id: s.header().map(|h| h.member_id()).unwrap_or_default(),
        leader: s.leader(),
        is_learner: s.is_learner(),
        raft_term: s.raft_term(),
    })
}

/// Readiness as RKE2 defines it: a voting member that sees a leader.
pub async fn check_ready(client: &Client) -> Result<LocalStatus, EtcdError> {
    let s = local_status(client).await?;
    if s.is_learner {
        return Err(EtcdError::Learner);
    }
    if s.leader == 0 {
        return Err(EtcdError::NoLeader);
    }
    Ok(s)
}

/// How long a peer gets to accept a TCP connection before it counts as unreachable.
const PEER_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// One member as etcd's peer endpoint `GET /members` lists it.
#[derive(Debug, Clone, Deserialize)]
struct PeerMember {
    id: u64,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

/// `(reachable, voting)` members of the cluster as the local member knows it: this member plus
/// every voting peer whose peer URL accepts a TCP connection.
///
/// The member list comes from the local member's **peer** endpoint (`GET /members` with the
/// peer client certificate), because that one answers from local state without quorum, while
/// etcd serves its client API only once it has published itself to the cluster, which needs
/// a leader.
pub async fn reachable_voters(
    paths: &ServerPaths,
    own_peer_url: &str,
) -> Result<(usize, usize), EtcdError> {
    use crate::https::{ClientIdentity, HttpsClient, ServerTrust};
    let read = |p: &Path| std::fs::read_to_string(p).at(p);
    let peer = paths.etcd_peer();
    let identity = ClientIdentity {
        cert_pem: read(&peer.cert)?,
        key_pem: read(&peer.key)?,
    };
    let trust = ServerTrust::Ca(read(&paths.etcd_peer_ca().cert)?);
    let client = HttpsClient::new(&trust, Some(&identity), Duration::from_secs(1))
        .map_err(EtcdError::PeerTls)?;
    let resp = client
        .request(
            http::Method::GET,
            &format!("{own_peer_url}/members"),
            &[],
            None,
        )
        .await
        .map_err(EtcdError::PeerRequest)?;
    if !resp.is_success() {
        return Err(EtcdError::Client(format!(
            "peer /members: HTTP {}",
            resp.status
        )));
    }
    let members: Vec<PeerMember> = serde_json::from_slice(&resp.body)
        .map_err(|e| EtcdError::Client(format!("peer /members: {e}")))?;
    let voters: Vec<&PeerMember> = members.iter().filter(|m| !m.is_learner).collect();
    let probes = voters.iter().map(|m| async move {
        m.peer_urls.iter().any(|u| u == own_peer_url) || peer_reachable(&m.peer_urls).await
    });
    let reachable = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .filter(|up| *up)
        .count();
    tracing::debug!(
        component = "etcd",
        "{reachable} of {} voting members reachable ({:x?})",
        voters.len(),
        voters.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    Ok((reachable, voters.len()))
}

/// Whether any of `peer_urls` (`https://host:port`) accepts a TCP connection.
async fn peer_reachable(peer_urls: &[String]) -> bool {
    for url in peer_urls {
        let authority = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .trim_end_matches('/');
        if let Ok(Ok(_)) = tokio::time::timeout(
            PEER_PROBE_TIMEOUT,
            tokio::net::TcpStream::connect(authority),
        )
        .await
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_map_back_to_nodes() {
        assert_eq!(node_of_member("server-1-0a1b2c3d"), "server-1");
        assert_eq!(node_of_member("plain"), "plain");
        assert_eq!(node_of_member("a-b"), "a-b");
    }

    #[test]
    fn member_name_is_persistent() {
        let d = tempfile::tempdir().unwrap();
        let p = ServerPaths::new(d.path());
        let a = member_name(&p, "n1").unwrap();
        assert!(a.starts_with("n1-") && a.len() == 11);
        assert_eq!(member_name(&p, "n1").unwrap(), a);
        assert!(
            !p.etcd_data().exists(),
            "nothing of ours in etcd's data dir"
        );
    }

    #[test]
    fn member_name_moves_out_of_etcds_data_dir() {
        let d = tempfile::tempdir().unwrap();
        let p = ServerPaths::new(d.path());
        std::fs::create_dir_all(p.etcd_data()).unwrap();
        std::fs::write(p.legacy_etcd_name(), "n1-0123abcd\n").unwrap();
        assert_eq!(member_name(&p, "n1").unwrap(), "n1-0123abcd");
        assert!(!p.legacy_etcd_name().exists());
        assert_eq!(member_name(&p, "n1").unwrap(), "n1-0123abcd");
    }

    #[test]
    fn peer_members_json_of_etcd_3_4() {
        let body = r#"[{"id":7480355405778997125,"peerURLs":["https://127.0.99.1:2380"],"name":"pm1-1efd65ff","clientURLs":["https://127.0.99.1:2379"]},
                       {"id":1,"peerURLs":["https://127.0.99.2:2380"],"name":"","clientURLs":[],"isLearner":true}]"#;
        let m: Vec<PeerMember> = serde_json::from_str(body).unwrap();
        assert_eq!(m[0].id, 7480355405778997125);
        assert!(!m[0].is_learner && m[1].is_learner);
        assert_eq!(m[1].peer_urls, ["https://127.0.99.2:2380"]);
    }

    #[test]
    fn db_info_json_matches_k3s() {
        let info = ClusterInfo {
            members: vec![MemberInfo {
                id: 1,
                name: "n1-00000000".into(),
                peer_urls: vec!["https://10.0.0.1:2380".into()],
                client_urls: vec!["https://10.0.0.1:2379".into()],
                is_learner: false,
            }],
            voting_members: 1,
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["members"][0]["peerURLs"][0], "https://10.0.0.1:2380");
        assert!(v["members"][0].get("isLearner").is_none());
    }
}
