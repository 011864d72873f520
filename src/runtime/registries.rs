//! `registries.yaml` (`private-registry`), RKE2's private registry configuration: `mirrors`
//! (per registry host, or `*`, an `endpoint` list and `rewrite` rules) and `configs` (per
//! registry host: `auth` and `tls`), rendered into containerd's CRI registry configuration so
//! pulls go to the mirrors with the right credentials and certificates.
//!
//! `rewrite` rules (regex -> replacement on the repository path, used only against the mirror
//! endpoints) need RKE2's patched containerd; Debian's has none, so the node runtime applies them
//! itself: [`Registries::rewritten_pulls`] names the image at each mirror endpoint under its
//! rewritten path, and each such endpoint gets a mirrors entry of its own so that name reaches
//! exactly that endpoint (docs/workloads.md, "Private registries").

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

impl Mirror {
    /// The repository path as this mirror's endpoints know it: the first rule, in pattern
    /// order, whose regex changes the path (every match replaced, `$1` expanded); `None` when
    /// no rule changes it.
    pub fn rewrite(&self, repository: &str) -> Option<String> {
        self.rewrite.iter().find_map(|(pattern, replacement)| {
            // Patterns were checked when the file was read; one that fails here is skipped.
            let re = regex::Regex::new(pattern).ok()?;
            let out = re.replace_all(repository, replacement.as_str());
            (out != repository).then(|| out.into_owned())
        })
    }
}

/// A normalised reference split into registry host, repository path and the rest (`:tag`,
/// `@digest` or both, with their separators).
fn split_reference(image: &str) -> Option<(&str, &str, &str)> {
    let (host, rest) = image.split_once('/')?;
    let name_end = rest.find('@').unwrap_or(rest.len());
    let repo_end = match rest[..name_end].rfind(':') {
        Some(i) if !rest[i..name_end].contains('/') => i,
        _ => name_end,
    };
    Some((host, &rest[..repo_end], &rest[repo_end..]))
}

/// An endpoint URL's `host[:port]` when images there are addressed by name alone: no path
/// other than `/v2`.
fn endpoint_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (!host.is_empty() && matches!(path.trim_end_matches('/'), "" | "v2")).then_some(host)
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
            for pattern in m.rewrite.keys() {
                if let Err(e) = regex::Regex::new(pattern) {
                    return Err(format!("mirrors.{host}.rewrite.{}: {e}", q(pattern)));
                }
            }
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

    /// The mirror containerd uses for `registry`: its own entry, else `*`.
    fn mirror_of(&self, registry: &str) -> Option<&Mirror> {
        self.mirrors.get(registry).or_else(|| self.mirrors.get("*"))
    }

    /// The references that pull `image` (normalised, `host/repository[:tag][@digest]`) from
    /// its registry's mirror endpoints under the repository path a `rewrite` rule gives it, in
    /// endpoint order: `<endpoint host>/<rewritten path><tag or digest>`. Empty when no rule
    /// changes the path, or for endpoints with a path of their own (not addressable by name).
    pub fn rewritten_pulls(&self, image: &str) -> Vec<String> {
        let Some((registry, repository, rest)) = split_reference(image) else {
            return Vec::new();
        };
        let Some(m) = self.mirror_of(registry) else {
            return Vec::new();
        };
        let Some(path) = m.rewrite(repository) else {
            return Vec::new();
        };
        m.endpoint
            .iter()
            .filter_map(|e| endpoint_host(e))
            .map(|host| format!("{host}/{path}{rest}"))
            .collect()
    }

    /// The endpoints rewritten names are pulled from that have no mirrors entry of their own:
    /// host -> `scheme://host`. Each gets an entry listing only itself, so a pull naming it
    /// goes there alone, over the scheme the user gave (not a `*` mirror, not https for an
    /// http endpoint).
    fn rewrite_endpoints(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for m in self.mirrors.values().filter(|m| !m.rewrite.is_empty()) {
            for e in &m.endpoint {
                let Some(host) = endpoint_host(e) else {
                    continue;
                };
                if self.mirrors.contains_key(host) {
                    continue;
                }
                let scheme = if e.starts_with("http://") {
                    "http"
                } else {
                    "https"
                };
                out.entry(host.to_string())
                    .or_insert_with(|| format!("{scheme}://{host}"));
            }
        }
        out
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
                for e in m.endpoint.iter().filter(|e| endpoint_host(e).is_none()) {
                    tracing::warn!(
                        component = "containerd",
                        "registries.yaml: mirrors.{host}.rewrite: endpoint {e} has a path, so rewritten names are not pulled from it"
                    );
                }
            }
        }
        for (host, origin) in self.rewrite_endpoints() {
            let _ = writeln!(
                out,
                "# a rewrite endpoint: the node pulls rewritten names from it by its own name\n\
                 [{BASE}.mirrors.{}]\n  endpoint = [{}]\n",
                q(&host),
                q(&origin)
            );
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
    fn rewrites_name_each_mirror_endpoint_and_route_it_there_alone() {
        let r = Registries::parse(
            r#"
mirrors:
  docker.io:
    endpoint: ["https://reg.example:5000", "http://10.0.0.9:5000/v2/", "https://proxy.example/v2/docker"]
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
  "*":
    endpoint: ["https://any.example"]
  other.example:
    endpoint: ["https://reg.example:5000"]
"#,
        )
        .unwrap();
        assert_eq!(
            r.rewritten_pulls("docker.io/rancher/rancher-agent:v2.6.7"),
            [
                "reg.example:5000/mirrorproject/rancher-images/rancher-agent:v2.6.7",
                "10.0.0.9:5000/mirrorproject/rancher-images/rancher-agent:v2.6.7",
            ]
        );
        // Digests and tag+digest keep their separators.
        assert_eq!(
            r.rewritten_pulls("docker.io/rancher/x@sha256:ab")[0],
            "reg.example:5000/mirrorproject/rancher-images/x@sha256:ab"
        );
        assert_eq!(
            r.rewritten_pulls("docker.io/rancher/x:1@sha256:ab")[0],
            "reg.example:5000/mirrorproject/rancher-images/x:1@sha256:ab"
        );
        // No rule matches, or the registry's mirror has no rules: nothing to rewrite.
        assert!(r.rewritten_pulls("docker.io/library/busybox:1").is_empty());
        assert!(r.rewritten_pulls("other.example/rancher/x:1").is_empty());
        assert!(r.rewritten_pulls("quay.io/rancher/x:1").is_empty());
        // Each addressable endpoint without an entry of its own is routed to itself, keeping
        // its scheme; the endpoint with a path is left out.
        let t = r.render_cri();
        assert!(
            t.contains("mirrors.\"10.0.0.9:5000\"]\n  endpoint = [\"http://10.0.0.9:5000\"]"),
            "{t}"
        );
        assert!(
            t.contains(
                "mirrors.\"reg.example:5000\"]\n  endpoint = [\"https://reg.example:5000\"]"
            ),
            "{t}"
        );
        assert!(!t.contains("mirrors.\"proxy.example"), "{t}");
        // The `*` mirror's rules apply to registries without an entry.
        let star = Registries::parse(
            "mirrors:\n  \"*\":\n    endpoint: [\"https://m:1\"]\n    rewrite: {\"^(.*)$\": \"cache/$1\", \"^a/(.*)\": \"z/$1\"}\n",
        )
        .unwrap();
        // Rules are tried in pattern order; the first that changes the path wins.
        assert_eq!(star.rewritten_pulls("q.io/a/b:1"), ["m:1/cache/a/b:1"]);
    }

    #[test]
    fn a_bad_rewrite_regex_names_the_file_and_the_key() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("registries.yaml");
        std::fs::write(
            &path,
            "mirrors:\n  docker.io:\n    endpoint: [\"https://m\"]\n    rewrite:\n      \"^rancher/(.*\": \"x/$1\"\n",
        )
        .unwrap();
        let e = Registries::load(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(
            e.contains("mirrors.docker.io.rewrite.\"^rancher/(.*\""),
            "{e}"
        );
        assert!(e.contains("unclosed group"), "{e}");
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
