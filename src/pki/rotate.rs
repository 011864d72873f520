//! Offline certificate maintenance with RKE2's commands (docs/operations.md §4.3):
//! `rke2 certificate check` lists every leaf certificate of the node with its expiry and warns
//! within 120 days; `rke2 certificate rotate [--service …]` copies `server/tls` to
//! `server/tls-<unix time>` and removes the selected leaves, which the next start regenerates
//! (with new keys) from the unchanged CAs.

use std::path::{Path, PathBuf};

use super::{CertInfo, PkiError, RENEW_BEFORE, first_cert_der};
use crate::fsutil::{self, IoContext, PathError};
use crate::paths::{AgentPaths, CertPair, ServerPaths};

/// RKE2's service names; the ones rke2-rs has no certificate for are accepted and rotate
/// nothing (their components do not exist here).
pub const SERVICES: &[&str] = &[
    "admin",
    "api-server",
    "controller-manager",
    "scheduler",
    "supervisor",
    "rke2-controller",
    "rke2-server",
    "cloud-controller",
    "etcd",
    "auth-proxy",
    "kubelet",
    "kube-proxy",
];

/// Certificate maintenance failures.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("unknown service \"{0}\"; expected one of: {services}", services = SERVICES.join(", "))]
    UnknownService(String),
    #[error("{0} has no certificates: is this the data-dir of an rke2 node?")]
    NoCertificates(String),
    #[error("{path}: {source}")]
    Cert {
        path: String,
        #[source]
        source: PkiError,
    },
    #[error(transparent)]
    Io(#[from] PathError),
}

/// One leaf certificate of this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeafStatus {
    pub file: String,
    pub service: String,
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
    /// RFC 3339.
    pub expires: String,
    pub seconds_left: i64,
    /// `OK`, `WARNING` (within 120 days) or `EXPIRED`.
    pub status: String,
}

/// The leaf certificates of a node and the service each belongs to.
fn leaves(paths: &ServerPaths, agent: &AgentPaths) -> Vec<(&'static str, CertPair)> {
    vec![
        ("admin", paths.client_admin()),
        ("api-server", paths.serving()),
        ("supervisor", paths.client_supervisor()),
        ("etcd", paths.etcd_client()),
        ("etcd", paths.etcd_server()),
        ("etcd", paths.etcd_peer()),
        ("kubelet", agent.client_kubelet()),
        ("kubelet", agent.serving_kubelet()),
    ]
}

/// The files a service's rotation removes (`rke2-server` is the supervisor's serving
/// certificate, which is the API's here).
fn files_of(service: &str, paths: &ServerPaths, agent: &AgentPaths) -> Vec<CertPair> {
    let wanted = if service == "rke2-server" {
        "api-server"
    } else {
        service
    };
    leaves(paths, agent)
        .into_iter()
        .filter(|(s, _)| *s == wanted)
        .map(|(_, p)| p)
        .collect()
}

/// Every leaf certificate present under `data_dir`, in a fixed order.
pub fn check(data_dir: &Path) -> Result<Vec<LeafStatus>, RotateError> {
    let (paths, agent) = (ServerPaths::new(data_dir), AgentPaths::new(data_dir));
    let now = chrono::Utc::now().timestamp();
    let mut out = Vec::new();
    for (service, pair) in leaves(&paths, &agent) {
        let Some(pem) = fsutil::read_optional(&pair.cert).at(&pair.cert)? else {
            continue;
        };
        let cert_err = |source| RotateError::Cert {
            path: pair.cert.display().to_string(),
            source,
        };
        let info = CertInfo::parse(&first_cert_der(pem.as_bytes()).map_err(cert_err)?)
            .map_err(cert_err)?;
        let left = info.not_after - now;
        out.push(LeafStatus {
            file: pair.cert.display().to_string(),
            service: service.to_string(),
            subject: info.common_name,
            not_after: info.not_after,
            expires: chrono::DateTime::from_timestamp(info.not_after, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            seconds_left: left,
            status: if left <= 0 {
                "EXPIRED"
            } else if left <= RENEW_BEFORE.as_secs() as i64 {
                "WARNING"
            } else {
                "OK"
            }
            .to_string(),
        });
    }
    if out.is_empty() {
        return Err(RotateError::NoCertificates(data_dir.display().to_string()));
    }
    Ok(out)
}

/// The earliest expiry (unix seconds) of the node's leaf certificates, if any can be read.
pub fn earliest_leaf_expiry(data_dir: &Path) -> Option<i64> {
    check(data_dir).ok()?.iter().map(|l| l.not_after).min()
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// `server/tls-<unix>` (and the agent files' copy under `agent/tls-<unix>`).
    pub backups: Vec<PathBuf>,
    /// Certificate files removed (regenerated at the next start).
    pub removed: Vec<PathBuf>,
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), PathError> {
    fsutil::ensure_private_dir(dst).at(dst)?;
    for entry in std::fs::read_dir(src).at(src)? {
        let entry = entry.at(src)?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().at(&from)?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                entry.metadata().at(&from)?.permissions().mode() & 0o777
            };
            let bytes = std::fs::read(&from).at(&from)?;
            fsutil::write_atomic(&to, &bytes, mode).at(&to)?;
        }
    }
    Ok(())
}

/// Backs up and removes the leaves of `services` (empty = all). Run while rke2 is stopped:
/// the next start regenerates the missing certificates from the CAs, which are kept.
pub fn rotate(data_dir: &Path, services: &[String], now: i64) -> Result<Rotation, RotateError> {
    for s in services {
        if !SERVICES.contains(&s.as_str()) {
            return Err(RotateError::UnknownService(s.clone()));
        }
    }
    let (paths, agent) = (ServerPaths::new(data_dir), AgentPaths::new(data_dir));
    let selected: Vec<&str> = if services.is_empty() {
        SERVICES.to_vec()
    } else {
        services.iter().map(String::as_str).collect()
    };
    let mut files: Vec<CertPair> = Vec::new();
    for s in selected {
        for pair in files_of(s, &paths, &agent) {
            if pair.cert.exists() && !files.contains(&pair) {
                files.push(pair);
            }
        }
    }
    if !paths.tls().is_dir() && !agent.client_kubelet().cert.exists() {
        return Err(RotateError::NoCertificates(data_dir.display().to_string()));
    }
    let mut backups = Vec::new();
    if paths.tls().is_dir() {
        let dst = paths.root.join(format!("tls-{now}"));
        copy_tree(&paths.tls(), &dst)?;
        backups.push(dst);
    }
    let agent_files: Vec<&CertPair> = files
        .iter()
        .filter(|p| !p.cert.starts_with(paths.tls()))
        .collect();
    if let (false, Some(agent_dir)) = (agent_files.is_empty(), agent.client_kubelet().cert.parent())
    {
        let dst = agent_dir.join(format!("tls-{now}"));
        fsutil::ensure_private_dir(&dst).at(&dst)?;
        for pair in agent_files {
            for f in [&pair.cert, &pair.key] {
                if let (Some(name), Ok(bytes)) = (f.file_name(), std::fs::read(f)) {
                    let to = dst.join(name);
                    fsutil::write_atomic(&to, &bytes, fsutil::SECRET_FILE_MODE).at(&to)?;
                }
            }
        }
        backups.push(dst);
    }
    let mut removed = Vec::new();
    for pair in &files {
        for f in [&pair.cert, &pair.key] {
            match std::fs::remove_file(f) {
                Ok(()) => removed.push(f.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(PathError {
                        path: f.clone(),
                        source: e,
                    }
                    .into());
                }
            }
        }
    }
    Ok(Rotation { backups, removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, LeafSpec};

    #[test]
    fn check_and_rotate_keep_backups() {
        let d = tempfile::tempdir().unwrap();
        let (paths, agent) = (ServerPaths::new(d.path()), AgentPaths::new(d.path()));
        fsutil::ensure_private_dir(&paths.etcd_tls()).unwrap();
        let (ca, _) = CertAuthority::load_or_create(&paths.client_ca(), "rke2-client").unwrap();
        ca.ensure_leaf(
            &paths.client_admin(),
            &LeafSpec::client("system:admin", &[]),
        )
        .unwrap();
        ca.ensure_leaf(&paths.client_supervisor(), &LeafSpec::client("s", &[]))
            .unwrap();
        ca.ensure_leaf(&agent.client_kubelet(), &LeafSpec::client("k", &[]))
            .unwrap();
        let c = check(d.path()).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].subject, "system:admin");
        assert_eq!(c[0].status, "OK");
        assert!(c[0].seconds_left > 364 * 86400);

        assert!(matches!(
            rotate(d.path(), &["nope".into()], 1).unwrap_err(),
            RotateError::UnknownService(_)
        ));
        let r = rotate(d.path(), &["admin".into(), "kubelet".into()], 1234).unwrap();
        assert!(!paths.client_admin().cert.exists());
        assert!(!agent.client_kubelet().key.exists());
        assert!(paths.client_supervisor().cert.exists());
        assert!(paths.client_ca().key.exists());
        assert!(paths.root.join("tls-1234/client-admin.crt").exists());
        assert!(paths.root.join("tls-1234/client-ca.key").exists());
        assert!(paths.root.join("tls-1234/client-admin.key").exists());
        assert_eq!(r.removed.len(), 4);
        assert_eq!(r.backups.len(), 2);
    }
}
