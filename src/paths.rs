//! Where everything lives under the data directory, in RKE2's layout
//! (docs/protocol.md §1.3, §4.2, §5.1). Paths are computed here once so no module builds them by
//! hand.

use std::path::{Path, PathBuf};

/// Paths of a server's state under `<data-dir>/server`.
#[derive(Debug, Clone)]
pub struct ServerPaths {
    pub root: PathBuf,
}

/// A certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPair {
    fn new(dir: &Path, stem: &str) -> Self {
        CertPair {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

impl ServerPaths {
    pub fn new(data_dir: &Path) -> Self {
        ServerPaths {
            root: data_dir.join("server"),
        }
    }
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn etcd_tls(&self) -> PathBuf {
        self.tls().join("etcd")
    }
    pub fn cred(&self) -> PathBuf {
        self.root.join("cred")
    }
    pub fn token(&self) -> PathBuf {
        self.root.join("token")
    }
    pub fn node_token(&self) -> PathBuf {
        self.root.join("node-token")
    }
    pub fn agent_token(&self) -> PathBuf {
        self.root.join("agent-token")
    }
    pub fn passwd(&self) -> PathBuf {
        self.cred().join("passwd")
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.db().join("etcd")
    }
    /// etcd member name, kept across restarts. Beside etcd's data dir, not in it: etcd warns
    /// about every file it does not own there.
    pub fn etcd_name(&self) -> PathBuf {
        self.db().join("etcd-name")
    }
    /// Where earlier versions (and RKE2) keep the member name; moved on the next start.
    pub fn legacy_etcd_name(&self) -> PathBuf {
        self.etcd_data().join("name")
    }
    /// Present once this member's etcd has been initialised.
    pub fn etcd_wal(&self) -> PathBuf {
        self.etcd_data().join("member").join("wal")
    }
    pub fn server_ca(&self) -> CertPair {
        CertPair::new(&self.tls(), "server-ca")
    }
    pub fn client_ca(&self) -> CertPair {
        CertPair::new(&self.tls(), "client-ca")
    }
    pub fn request_header_ca(&self) -> CertPair {
        CertPair::new(&self.tls(), "request-header-ca")
    }
    /// CA of kubelet serving certificates only: no API client trusts it (docs/security.md).
    pub fn kubelet_serving_ca(&self) -> CertPair {
        CertPair::new(&self.tls(), "kubelet-serving-ca")
    }
    /// This server's own node password (its claim on its node name, like an agent's).
    pub fn node_password(&self) -> PathBuf {
        self.cred().join("node-password")
    }
    pub fn etcd_server_ca(&self) -> CertPair {
        CertPair::new(&self.etcd_tls(), "server-ca")
    }
    pub fn etcd_peer_ca(&self) -> CertPair {
        CertPair::new(&self.etcd_tls(), "peer-ca")
    }
    /// Serving certificate for both 9345 and 6443.
    pub fn serving(&self) -> CertPair {
        CertPair::new(&self.tls(), "serving-kube-apiserver")
    }
    pub fn client_admin(&self) -> CertPair {
        CertPair::new(&self.tls(), "client-admin")
    }
    pub fn client_supervisor(&self) -> CertPair {
        CertPair::new(&self.tls(), "client-supervisor")
    }
    pub fn etcd_client(&self) -> CertPair {
        CertPair::new(&self.etcd_tls(), "client")
    }
    pub fn etcd_server(&self) -> CertPair {
        CertPair::new(&self.etcd_tls(), "server-client")
    }
    pub fn etcd_peer(&self) -> CertPair {
        CertPair::new(&self.etcd_tls(), "peer-server-client")
    }
}

/// Paths of a node's agent-side state under `<data-dir>/agent`.
#[derive(Debug, Clone)]
pub struct AgentPaths {
    pub root: PathBuf,
}

impl AgentPaths {
    pub fn new(data_dir: &Path) -> Self {
        AgentPaths {
            root: data_dir.join("agent"),
        }
    }
    pub fn server_ca(&self) -> PathBuf {
        self.root.join("server-ca.crt")
    }
    pub fn client_ca(&self) -> PathBuf {
        self.root.join("client-ca.crt")
    }
    pub fn client_kubelet(&self) -> CertPair {
        CertPair::new(&self.root, "client-kubelet")
    }
    pub fn serving_kubelet(&self) -> CertPair {
        CertPair::new(&self.root, "serving-kubelet")
    }
    pub fn kubelet_kubeconfig(&self) -> PathBuf {
        self.root.join("kubelet.kubeconfig")
    }
    /// Load-balancer state file (RKE2: `agent/etc/rke2-agent-load-balancer.json`).
    pub fn lb_state(&self) -> PathBuf {
        self.root.join("etc").join("rke2-agent-load-balancer.json")
    }
}
