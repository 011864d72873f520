//! `registries.yaml` (`private-registry`), RKE2's private registry configuration: `mirrors`
//! (per registry host, or `*`, an `endpoint` list and `rewrite` rules) and `configs` (per
//! registry host: `auth` and `tls`), rendered into containerd's CRI registry configuration so
//! pulls go to the mirrors with the right credentials and certificates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::RuntimeError;

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth: Option<String>,
    pub identity_token: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

impl Registries {
    /// Reads `path`; a missing file means no private registry (RKE2's default).
    pub fn load(path: &Path) -> Result<Registries, RuntimeError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registries::default()),
            Err(e) => return Err(RuntimeError::io(path, e)),
        };
        Registries::parse(&text).map_err(|message| RuntimeError::Registries {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Registries, String> {
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        let r: Registries = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (host, m) in &r.mirrors {
            for e in &m.endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(format!(
                        "mirrors.{host}.endpoint: \"{e}\" must be an http:// or https:// URL"
                    ));
                }
            }
        }
        Ok(r)
    }

    /// The `[plugins."io.containerd.grpc.v1.cri".registry]` tables.
    pub fn render_cri(&self) -> String {
        let mut out = String::new();
        const BASE: &str = "plugins.\"io.containerd.grpc.v1.cri\".registry";
        for (host, m) in &self.mirrors {
            let endpoints: Vec<String> = m.endpoint.iter().map(|e| q(e)).collect();
            let _ = writeln!(
                out,
                "[{BASE}.mirrors.{}]\n  endpoint = [{}]\n",
                q(host),
                endpoints.join(", ")
            );
            if !m.rewrite.is_empty() {
                // Debian's containerd has no rewrite support (RKE2 bundles a patched one).
                tracing::warn!(
                    component = "containerd",
                    "registries.yaml: mirrors.{host}.rewrite is not supported by this containerd and is ignored"
                );
            }
        }
        for (host, c) in &self.configs {
            if let Some(a) = &c.auth {
                let _ = writeln!(out, "[{BASE}.configs.{}.auth]", q(host));
                for (k, v) in [
                    ("username", &a.username),
                    ("password", &a.password),
                    ("auth", &a.auth),
                    ("identitytoken", &a.identity_token),
                ] {
                    if let Some(v) = v {
                        let _ = writeln!(out, "  {k} = {}", q(v));
                    }
                }
                out.push('\n');
            }
            if let Some(t) = &c.tls {
                let _ = writeln!(out, "[{BASE}.configs.{}.tls]", q(host));
                for (k, v) in [
                    ("cert_file", &t.cert_file),
                    ("key_file", &t.key_file),
                    ("ca_file", &t.ca_file),
                ] {
                    if let Some(v) = v {
                        let _ = writeln!(out, "  {k} = {}", q(v));
                    }
                }
                let _ = writeln!(out, "  insecure_skip_verify = {}\n", t.insecure_skip_verify);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rke2_registries_yaml_renders_mirrors_auth_and_tls() {
        let r = Registries::parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.9:5000"
configs:
  "127.0.0.9:5000":
    auth:
      username: u
      password: "p\"w"
    tls:
      ca_file: /etc/ca.pem
      insecure_skip_verify: true
"#,
        )
        .unwrap();
        let t = r.render_cri();
        assert!(
            t.contains("registry.mirrors.\"docker.io\"]\n  endpoint = [\"http://127.0.0.9:5000\"]"),
            "{t}"
        );
        assert!(
            t.contains(
                "configs.\"127.0.0.9:5000\".auth]\n  username = \"u\"\n  password = \"p\\\"w\""
            ),
            "{t}"
        );
        assert!(
            t.contains("ca_file = \"/etc/ca.pem\"\n  insecure_skip_verify = true"),
            "{t}"
        );
    }

    #[test]
    fn bad_registries_yaml_is_refused_with_the_key() {
        let e =
            Registries::parse("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n").unwrap_err();
        assert!(e.contains("mirrors.docker.io.endpoint"), "{e}");
        let e = Registries::parse("mirror:\n  x: {}\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        assert_eq!(Registries::parse("").unwrap(), Registries::default());
    }
}
