//! Kubeconfig files: the admin kubeconfig (`write-kubeconfig`, default
//! `/etc/rancher/rke2/rke2.yaml`, mode from `write-kubeconfig-mode`, default 0600) and the
//! node kubeconfigs, each embedding the CA and a client certificate.

use std::path::Path;

use base64::Engine as _;

use crate::fsutil::{self, IoContext, PathError};

/// What a kubeconfig contains.
#[derive(Debug, Clone)]
pub struct Kubeconfig<'a> {
    pub server_url: &'a str,
    pub ca_pem: &'a str,
    pub client_cert_pem: &'a str,
    pub client_key_pem: &'a str,
    /// Name for the cluster, user and context (RKE2: `default`).
    pub name: &'a str,
    /// Verify the server as this name when the URL's host is not in its certificate
    /// (agents reach the API through a local load balancer address).
    pub tls_server_name: Option<&'a str>,
}

impl Kubeconfig<'_> {
    /// The YAML text. Every value is base64, a URL or a plain name, so no quoting is needed
    /// beyond what is written here.
    pub fn render(&self) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let server_name = self
            .tls_server_name
            .map(|n| format!("    tls-server-name: {n}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {url}\n{server_name}  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    user: {name}\n  name: {name}\ncurrent-context: {name}\npreferences: {{}}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
            ca = b64(self.ca_pem),
            url = self.server_url,
            name = self.name,
            cert = b64(self.client_cert_pem),
            key = b64(self.client_key_pem),
        )
    }

    /// Writes the kubeconfig atomically with `mode`, creating the directory if needed.
    pub fn write(&self, path: &Path, mode: u32) -> Result<(), PathError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            fsutil::ensure_dir(parent, 0o755).at(parent)?;
        }
        fsutil::write_atomic(path, self.render().as_bytes(), mode).at(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_writes_with_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/rke2.yaml");
        let k = Kubeconfig {
            server_url: "https://127.0.0.1:6443",
            ca_pem: "CA",
            client_cert_pem: "CERT",
            client_key_pem: "KEY",
            name: "default",
            tls_server_name: None,
        };
        k.write(&p, 0o600).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("server: https://127.0.0.1:6443"));
        assert!(text.contains("client-key-data: S0VZ"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
