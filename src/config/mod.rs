//! Configuration in three stages: raw fragments and their merge ([`sources`]), then validation
//! into the typed [`ServerConfig`] / [`AgentConfig`] that the rest of the daemon is given.
//! Every error names where the bad value came from (file and line, env var or flag) and the key.

pub mod ops;
pub mod runtime;
pub mod sources;
pub mod spec;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use sources::{ConfigSources, Origin, Raw, RawSettings};
pub use spec::Role;

use ipnet::IpNet;

use crate::token::Secret;
use crate::validation::{NodeLabel, Taint};

/// A configuration error: which value, from where, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.origin, .key, .message))]
pub struct ConfigError {
    pub origin: Origin,
    /// The config key (empty for whole-file problems such as malformed YAML).
    pub key: String,
    pub message: String,
}

fn render(origin: &Origin, key: &str, message: &str) -> String {
    let key_part = if key.is_empty() {
        String::new()
    } else {
        format!("key \"{key}\": ")
    };
    match origin {
        Origin::Default => format!("{key_part}{message}"),
        other => format!("{other}: {key_part}{message}"),
    }
}

impl ConfigError {
    pub fn at(origin: Origin, key: &str, message: String) -> Self {
        ConfigError {
            origin,
            key: key.to_string(),
            message,
        }
    }

    pub fn file(path: &Path, line: usize, key: &str, message: String) -> Self {
        Self::at(
            Origin::File {
                path: path.to_path_buf(),
                line,
            },
            key,
            message,
        )
    }
}

/// The server URL a joining node registers through (`https://<fixed-address>:9345`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Host name or IP literal (without brackets).
    pub host: String,
    pub port: u16,
}

impl ServerUrl {
    /// `host:port`, with brackets around IPv6 literals.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.authority())
    }
}

impl FromStr for ServerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("https://").ok_or_else(|| {
            if s.contains("://") {
                format!("only https:// URLs are supported, invalid scheme in \"{s}\"")
            } else {
                format!("\"{s}\" is not a URL: expected https://<address>:9345")
            }
        })?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(format!(
                "\"{s}\" must be https://<host>[:port] without a path, query or user"
            ));
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, tail) = r
                .split_once(']')
                .ok_or_else(|| format!("\"{s}\": unterminated IPv6 literal"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p),
                None if tail.is_empty() => None,
                None => return Err(format!("\"{s}\": unexpected text after IPv6 literal")),
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("\"{s}\" has no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("\"{s}\": invalid port \"{p}\""))?,
            None => 443,
        };
        Ok(ServerUrl { host, port })
    }
}

/// How the daemon logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald when stderr is the journal (`JOURNAL_STREAM`), else text.
    Auto,
    Text,
    Journald,
}

/// Settings shared by servers and agents.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// Explicit node name; `None` means the host name (resolved at start).
    pub node_name: Option<String>,
    pub node_ips: Vec<IpAddr>,
    pub node_labels: Vec<NodeLabel>,
    pub node_taints: Vec<Taint>,
    pub server: Option<ServerUrl>,
    pub token: Option<Secret>,
    /// Where `token` came from, for messages that must name the setting to change
    /// (e.g. "`token` in /etc/rancher/rke2/config.yaml:3").
    pub token_source: Option<String>,
    pub heartbeat_interval: Duration,
    pub log_format: LogFormat,
    pub debug: bool,
    /// Container runtime and pod settings (crate::runtime).
    pub runtime: runtime::RuntimeConfig,
}

/// Validated `rke2 server` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub node: NodeConfig,
    pub agent_token: Option<Secret>,
    pub tls_san: Vec<String>,
    pub bind_address: Option<IpAddr>,
    pub advertise_address: Option<IpAddr>,
    pub supervisor_port: u16,
    pub https_listen_port: u16,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub etcd_metrics_port: u16,
    pub etcd_bin: Option<PathBuf>,
    pub etcd_args: Vec<String>,
    pub write_kubeconfig: PathBuf,
    pub write_kubeconfig_mode: u32,
    /// Pod network (`cluster-cidr`), masked to its network like Go's `net.ParseCIDR`.
    pub cluster_cidr: IpNet,
    /// Service network (`service-cidr`), masked likewise; the `kubernetes` service takes its
    /// network address + 1 and cluster DNS + 10.
    pub service_cidr: IpNet,
    pub cluster_dns: IpAddr,
    /// `service-node-port-range`: the ports NodePort services are given, inclusive.
    pub service_node_port_range: (u16, u16),
    pub cluster_domain: String,
    pub node_monitor_grace_period: Duration,
    /// Prefix length of each node's `spec.podCIDR` (`node-cidr-mask-size`; 24 for IPv4 and 64
    /// for IPv6 clusters unless set), at least `cluster-cidr`'s and at most 16 bits longer.
    pub node_cidr_mask_size: u8,
    /// How long Events live after their last write (`event-ttl`, an etcd lease as upstream).
    pub event_ttl: Duration,
    /// `watch-cache-max-events`: the most events each kind's watch-cache window keeps
    /// (docs/watch-cache.md); a WATCH resuming from before the window gets 410.
    pub watch_cache_max_events: usize,
    /// Scheduled and on-demand etcd snapshots.
    pub snapshots: ops::SnapshotConfig,
    /// `cluster-reset` and its restore path.
    pub cluster_reset: ops::ClusterReset,
    /// `secrets-encryption`: whether a new cluster encrypts Secrets at rest.
    pub secrets_encryption: bool,
    /// `secrets-encryption-provider`: `aescbc`, `aesgcm` or `secretbox`.
    pub secrets_encryption_provider: String,
    /// `leaf-cert-validity`: lifetime of this server's own leaf certificates.
    pub leaf_cert_validity: Duration,
}

/// Validated `rke2 agent` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub node: NodeConfig,
    pub lb_server_port: u16,
    pub lb_bind_address: IpAddr,
    pub node_password_file: PathBuf,
}

/// A validated configuration plus the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub config: T,
    pub warnings: Vec<String>,
}

/// Parses a count of events (`watch-cache-max-events`): a whole number of at least 1.
fn parse_event_count(v: &str) -> Result<usize, String> {
    v.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("invalid count \"{v}\": expected a whole number of at least 1"))
}

/// Parses a duration such as `40s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration \"{s}\": expected e.g. 40s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration \"{s}\": unit must be ms, s, m or h"
            ));
        }
    };
    if secs <= 0.0 || !secs.is_finite() {
        return Err(format!("invalid duration \"{s}\": must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Typed access to merged raw settings, producing errors that name origin and key.
struct Reader<'a> {
    raw: &'a RawSettings,
}

impl<'a> Reader<'a> {
    fn entries(&self, key: &str) -> &'a [Raw] {
        self.raw.values.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    fn last(&self, key: &str) -> Option<&'a Raw> {
        self.entries(key).last()
    }

    fn string(&self, key: &str) -> Option<String> {
        self.last(key).map(|r| r.value.clone())
    }

    fn string_or_default(&self, key: &str) -> String {
        self.string(key)
            .or_else(|| spec::find(key).and_then(|s| s.default).map(str::to_string))
            .unwrap_or_default()
    }

    /// Parses the winning value of `key` (or its default) with `f`.
    fn parse<T>(&self, key: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        match self.last(key) {
            Some(r) => f(&r.value).map_err(|m| ConfigError::at(r.origin.clone(), key, m)),
            None => {
                let d = spec::find(key).and_then(|s| s.default).unwrap_or_default();
                f(d).map_err(|m| ConfigError::at(Origin::Default, key, m))
            }
        }
    }

    fn parse_opt<T>(
        &self,
        key: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.last(key) {
            Some(r) if !r.value.is_empty() => f(&r.value)
                .map(Some)
                .map_err(|m| ConfigError::at(r.origin.clone(), key, m)),
            _ => Ok(None),
        }
    }

    fn parse_list<T>(
        &self,
        key: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        self.entries(key)
            .iter()
            .map(|r| f(&r.value).map_err(|m| ConfigError::at(r.origin.clone(), key, m)))
            .collect()
    }

    fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        self.parse(key, |v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            other => Err(format!(
                "invalid boolean \"{other}\": expected true or false"
            )),
        })
    }

    /// Reads a secret from `key` or `<key>-file`; both set is an error.
    /// Where the secret [`Reader::secret`] reads for `key`/`file_key` comes from, in words.
    fn source_of(&self, key: &str, file_key: &str) -> Option<String> {
        let describe = |k: &str, origin: &Origin| match origin {
            Origin::File { path, line } => format!("`{k}` in {}:{line}", path.display()),
            other => format!("`{k}` ({other})"),
        };
        match (self.last(key), self.last(file_key)) {
            (Some(r), _) => Some(describe(key, &r.origin)),
            (None, Some(r)) => Some(format!(
                "the file {} named by {}",
                r.value,
                describe(file_key, &r.origin)
            )),
            (None, None) => None,
        }
    }

    fn secret(&self, key: &str, file_key: &str) -> Result<Option<Secret>, ConfigError> {
        match (self.last(key), self.last(file_key)) {
            (Some(a), Some(_)) => Err(ConfigError::at(
                a.origin.clone(),
                key,
                format!("\"{key}\" and \"{file_key}\" are both set; use one of them"),
            )),
            (Some(r), None) => {
                if r.value.trim().is_empty() {
                    return Err(ConfigError::at(
                        r.origin.clone(),
                        key,
                        "must not be empty".into(),
                    ));
                }
                Ok(Some(Secret::new(r.value.trim().to_string())))
            }
            (None, Some(r)) => {
                let text = std::fs::read_to_string(&r.value).map_err(|e| {
                    ConfigError::at(
                        r.origin.clone(),
                        file_key,
                        format!("cannot read {}: {e}", r.value),
                    )
                })?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(ConfigError::at(
                        r.origin.clone(),
                        file_key,
                        format!("{} is empty", r.value),
                    ));
                }
                Ok(Some(Secret::new(t.to_string())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The most `tls-san` entries a server accepts. RKE2 has no limit, but every name lands in the
/// serving certificates: 20,000 names made the certificate encoder fail after other files were
/// written, and TLS clients refuse certificates far smaller than that.
pub const MAX_TLS_SANS: usize = 1000;
/// The most bytes all `tls-san` entries may add up to (the certificate's SAN extension).
pub const MAX_TLS_SAN_BYTES: usize = 64 * 1024;

fn check_tls_sans(r: &Reader<'_>, sans: &[String]) -> Result<(), ConfigError> {
    let entries = r.entries("tls-san");
    let origin_of = |i: usize| {
        entries
            .get(i)
            .map(|x| x.origin.clone())
            .unwrap_or(Origin::Default)
    };
    if sans.len() > MAX_TLS_SANS {
        return Err(ConfigError::at(
            origin_of(MAX_TLS_SANS),
            "tls-san",
            format!(
                "too many entries: {} (at most {MAX_TLS_SANS} names fit in a serving certificate)",
                sans.len()
            ),
        ));
    }
    let mut total = 0;
    for (i, san) in sans.iter().enumerate() {
        total += san.len();
        if total > MAX_TLS_SAN_BYTES {
            return Err(ConfigError::at(
                origin_of(i),
                "tls-san",
                format!(
                    "the names add up to more than {} KiB (the limit for a serving certificate)",
                    MAX_TLS_SAN_BYTES / 1024
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a token's format where it was configured, before anything is created on disk, so
/// a malformed token is a configuration error (exit 64) naming its source.
fn check_token(
    r: &Reader<'_>,
    key: &str,
    file_key: &str,
    token: Option<&Secret>,
    check: impl Fn(&Secret) -> Result<(), String>,
) -> Result<(), ConfigError> {
    let Some(token) = token else {
        return Ok(());
    };
    check(token).map_err(|m| {
        let (k, origin) = match (r.last(key), r.last(file_key)) {
            (Some(raw), _) => (key, raw.origin.clone()),
            (None, Some(raw)) => (file_key, raw.origin.clone()),
            (None, None) => (key, Origin::Default),
        };
        ConfigError::at(origin, k, m)
    })
}

/// A server's `token`: a password or a full `K10<hash>::<user>:<password>` token.
fn check_server_token(t: &Secret) -> Result<(), String> {
    crate::token::normalize_server_token(t)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `agent-token`: a password, or a full token with a password (not a bootstrap token).
fn check_agent_token(t: &Secret) -> Result<(), String> {
    if !t.expose().starts_with("K10") {
        return Ok(());
    }
    match crate::token::JoinToken::parse(t.expose()).map_err(|e| e.to_string())? {
        crate::token::JoinToken {
            credentials: crate::token::Credentials::Basic { .. },
            ..
        } => Ok(()),
        _ => {
            Err("must be a password or K10<CA-HASH>::node:<PASSWORD>, not a bootstrap token".into())
        }
    }
}

/// An agent's `token`: any join token format.
fn check_join_token(t: &Secret) -> Result<(), String> {
    crate::token::JoinToken::parse(t.expose())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn parse_path(v: &str) -> Result<PathBuf, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(v.strip_prefix("unix://").unwrap_or(v)))
}

fn parse_port(v: &str) -> Result<u16, String> {
    v.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port \"{v}\": expected 1-65535"))
}

fn parse_ip(v: &str) -> Result<IpAddr, String> {
    v.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("invalid IP address \"{v}\""))
}

/// Parses a CIDR the way Go's `net.ParseCIDR` (and so RKE2) reads it: the address is masked to
/// its network, so `10.43.5.0/16` is the network 10.43.0.0/16.
/// `node-cidr-mask-size`: a prefix length no shorter than `cluster`'s, within the address
/// family, and at most 16 bits longer (upstream's limit on the number of node ranges).
fn parse_node_cidr_mask(v: &str, cluster: &IpNet) -> Result<u8, String> {
    let bits: u8 = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a prefix length (a number such as 24)"))?;
    if bits < cluster.prefix_len() || bits > cluster.max_prefix_len() {
        return Err(format!(
            "{bits} must lie between cluster-cidr's prefix length /{} and /{}",
            cluster.prefix_len(),
            cluster.max_prefix_len()
        ));
    }
    if bits - cluster.prefix_len() > 16 {
        return Err(format!(
            "{bits} is more than 16 bits longer than cluster-cidr's /{}: too many node ranges",
            cluster.prefix_len()
        ));
    }
    Ok(bits)
}

fn parse_cidr(v: &str) -> Result<IpNet, String> {
    let (ip, len) = v
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("invalid CIDR \"{v}\": expected address/prefix-length"))?;
    let ip = parse_ip(ip)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("invalid CIDR \"{v}\": prefix length must be 0-{max}"))?;
    IpNet::new(ip, len)
        .map(|net| net.trunc())
        .map_err(|e| format!("invalid CIDR \"{v}\": {e}"))
}

/// The network address of `net` plus `offset` (10.43.0.0/16 + 10 = 10.43.0.10), or `None` when
/// that address falls outside the network.
pub fn cidr_offset(net: &IpNet, offset: u32) -> Option<IpAddr> {
    let ip = match net.network() {
        IpAddr::V4(v4) => IpAddr::V4(u32::from(v4).checked_add(offset)?.into()),
        IpAddr::V6(v6) => IpAddr::V6(u128::from(v6).checked_add(u128::from(offset))?.into()),
    };
    net.contains(&ip).then_some(ip)
}

/// `from-to` (inclusive, `from <= to`), as upstream's `--service-node-port-range`.
fn parse_port_range(v: &str) -> Result<(u16, u16), String> {
    let bad =
        || format!("invalid port range \"{v}\": expected FROM-TO with 1 <= FROM <= TO <= 65535");
    let (a, b) = v.trim().split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn parse_mode(v: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(v.trim().trim_start_matches("0o"), 8)
        .map_err(|_| format!("invalid file mode \"{v}\": expected an octal mode such as 0600"))?;
    if m > 0o777 {
        return Err(format!("invalid file mode \"{v}\": must be at most 0777"));
    }
    Ok(m)
}

fn parse_node_name(v: &str) -> Result<String, String> {
    let name = v.trim().to_ascii_lowercase();
    crate::validation::validate_dns_subdomain(&name)
        .map_err(|e| format!("invalid node name: {e}"))?;
    Ok(name)
}

fn parse_san(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.parse::<IpAddr>().is_ok() {
        return Ok(v.to_string());
    }
    let name = v.strip_prefix("*.").unwrap_or(v).to_ascii_lowercase();
    crate::validation::validate_dns_subdomain(&name)
        .map_err(|_| format!("invalid tls-san \"{v}\": must be an IP address or DNS name"))?;
    Ok(v.to_ascii_lowercase())
}

/// A node has at most one IPv4 and one IPv6 address (a dual-stack pair); two of one family are
/// almost always a merge mistake and made etcd bind the wrong one.
fn check_node_ip_families(r: &Reader<'_>, ips: &[IpAddr]) -> Result<(), ConfigError> {
    for (i, ip) in ips.iter().enumerate() {
        if let Some(first) = ips[..i].iter().find(|o| o.is_ipv4() == ip.is_ipv4()) {
            let origin = r.entries("node-ip")[i].origin.clone();
            return Err(ConfigError::at(
                origin,
                "node-ip",
                format!(
                    "{first} and {ip} are both {}: node-ip takes at most one IPv4 and one IPv6 address (a dual-stack pair)",
                    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                ),
            ));
        }
    }
    Ok(())
}

fn node_config(r: &Reader<'_>) -> Result<NodeConfig, ConfigError> {
    let log_format = r.parse("log-format", |v| match v {
        "auto" => Ok(LogFormat::Auto),
        "text" => Ok(LogFormat::Text),
        "journald" => Ok(LogFormat::Journald),
        other => Err(format!(
            "invalid log format \"{other}\": expected auto, text or journald"
        )),
    })?;
    let data_dir = r.string_or_default("data-dir");
    if data_dir.is_empty() {
        return Err(ConfigError::at(
            Origin::Default,
            "data-dir",
            "must not be empty".into(),
        ));
    }
    let node_ips = r.parse_list("node-ip", parse_ip)?;
    check_node_ip_families(r, &node_ips)?;
    Ok(NodeConfig {
        data_dir: PathBuf::from(data_dir),
        node_name: r.parse_opt("node-name", parse_node_name)?,
        node_ips,
        node_labels: r.parse_list("node-label", |v| {
            v.parse::<NodeLabel>().map_err(|e| e.to_string())
        })?,
        node_taints: r.parse_list("node-taint", |v| {
            v.parse::<Taint>().map_err(|e| e.to_string())
        })?,
        server: r.parse_opt("server", |v| v.parse::<ServerUrl>())?,
        token: r.secret("token", "token-file")?,
        token_source: r.source_of("token", "token-file"),
        heartbeat_interval: r.parse("node-heartbeat-interval", parse_duration)?,
        log_format,
        debug: r.bool("debug")?,
        runtime: runtime::RuntimeConfig {
            endpoint: r.parse_opt("container-runtime-endpoint", parse_path)?,
            run_dir: r.parse_opt("containerd-run-dir", parse_path)?,
            private_registry: PathBuf::from(r.string_or_default("private-registry")),
            system_default_registry: r.parse_opt("system-default-registry", |v| {
                Ok(v.trim().trim_end_matches('/').to_string())
            })?,
            pause_image: r.string_or_default("pause-image"),
            cni: r.parse("cni", |v| v.parse::<runtime::Cni>())?,
            default_runtime: r
                .parse_opt("default-runtime", |v| Ok(v.trim().to_string()))?
                .filter(|v| !v.is_empty()),
        },
    })
}

/// Stage 3 for servers: merged raw settings to a typed, validated [`ServerConfig`].
pub fn validate_server(raw: &RawSettings) -> Result<ServerConfig, ConfigError> {
    let r = Reader { raw };
    let node = node_config(&r)?;
    if node.server.is_some() && node.token.is_none() {
        let origin = r
            .last("server")
            .map(|x| x.origin.clone())
            .unwrap_or(Origin::Default);
        return Err(ConfigError::at(
            origin,
            "token",
            "a token is required to join a cluster (set token or token-file)".into(),
        ));
    }
    let service_cidr = r.parse("service-cidr", parse_cidr)?;
    let cluster_dns = match r.parse_opt("cluster-dns", parse_ip)? {
        Some(ip) => ip,
        None => cidr_offset(&service_cidr, 10).ok_or_else(|| {
            ConfigError::at(
                Origin::Default,
                "cluster-dns",
                format!("service-cidr {service_cidr} is too small to hold the cluster DNS address (network + 10)"),
            )
        })?,
    };
    let cluster_domain = r.parse("cluster-domain", |v| {
        crate::validation::validate_dns_subdomain(v)
            .map(|_| v.to_string())
            .map_err(|e| format!("invalid cluster domain: {e}"))
    })?;
    let etcd_args = r.parse_list("etcd-arg", |v| {
        let v = v.trim().trim_start_matches("--");
        if v.is_empty() || v.starts_with('=') {
            Err(format!("invalid etcd-arg \"{v}\": expected flag=value"))
        } else {
            Ok(v.to_string())
        }
    })?;
    check_token(
        &r,
        "token",
        "token-file",
        node.token.as_ref(),
        check_server_token,
    )?;
    let agent_token = r.secret("agent-token", "agent-token-file")?;
    check_token(
        &r,
        "agent-token",
        "agent-token-file",
        agent_token.as_ref(),
        check_agent_token,
    )?;
    let tls_san = r.parse_list("tls-san", parse_san)?;
    check_tls_sans(&r, &tls_san)?;
    let config = ServerConfig {
        agent_token,
        tls_san,
        bind_address: r.parse_opt("bind-address", parse_ip)?,
        advertise_address: r.parse_opt("advertise-address", parse_ip)?,
        supervisor_port: r.parse("supervisor-port", parse_port)?,
        https_listen_port: r.parse("https-listen-port", parse_port)?,
        etcd_client_port: r.parse("etcd-client-port", parse_port)?,
        etcd_peer_port: r.parse("etcd-peer-port", parse_port)?,
        etcd_metrics_port: r.parse("etcd-metrics-port", parse_port)?,
        etcd_bin: r.parse_opt("etcd-bin", |v| Ok(PathBuf::from(v)))?,
        etcd_args,
        write_kubeconfig: PathBuf::from(r.string_or_default("write-kubeconfig")),
        write_kubeconfig_mode: r.parse("write-kubeconfig-mode", parse_mode)?,
        cluster_cidr: r.parse("cluster-cidr", parse_cidr)?,
        service_cidr,
        cluster_dns,
        service_node_port_range: r.parse("service-node-port-range", parse_port_range)?,
        cluster_domain,
        node_monitor_grace_period: r.parse("node-monitor-grace-period", parse_duration)?,
        node_cidr_mask_size: {
            let cluster: IpNet = r.parse("cluster-cidr", parse_cidr)?;
            r.parse_opt("node-cidr-mask-size", |v| parse_node_cidr_mask(v, &cluster))?
                .unwrap_or(match cluster {
                    IpNet::V4(_) => 24,
                    IpNet::V6(_) => 64,
                })
                .max(cluster.prefix_len())
        },
        event_ttl: r.parse("event-ttl", parse_duration)?,
        watch_cache_max_events: r.parse("watch-cache-max-events", parse_event_count)?,
        snapshots: ops::snapshot_config(&r)?,
        cluster_reset: ops::cluster_reset(&r, node.server.is_some())?,
        secrets_encryption: r.bool("secrets-encryption")?,
        secrets_encryption_provider: r.parse("secrets-encryption-provider", |v| {
            crate::secrets_encryption::providers::Cipher::from_provider(v)
                .map(|c| c.provider().to_string())
                .ok_or_else(|| {
                    format!("unknown provider \"{v}\": expected aescbc, aesgcm or secretbox")
                })
        })?,
        leaf_cert_validity: r.parse("leaf-cert-validity", ops::parse_leaf_validity)?,
        node,
    };
    let ports = [
        ("supervisor-port", config.supervisor_port),
        ("https-listen-port", config.https_listen_port),
        ("etcd-client-port", config.etcd_client_port),
        ("etcd-peer-port", config.etcd_peer_port),
        ("etcd-metrics-port", config.etcd_metrics_port),
    ];
    for (i, (ka, a)) in ports.iter().enumerate() {
        for (kb, b) in &ports[i + 1..] {
            if a == b {
                let origin = r
                    .last(kb)
                    .map(|x| x.origin.clone())
                    .unwrap_or(Origin::Default);
                return Err(ConfigError::at(
                    origin,
                    kb,
                    format!("port {b} is already used by {ka}"),
                ));
            }
        }
    }
    Ok(config)
}

/// Stage 3 for agents.
pub fn validate_agent(raw: &RawSettings) -> Result<AgentConfig, ConfigError> {
    let r = Reader { raw };
    let node = node_config(&r)?;
    if node.server.is_none() {
        return Err(ConfigError::at(
            Origin::Default,
            "server",
            "rke2 agent needs the server to register with (server: https://<fixed-address>:9345)"
                .into(),
        ));
    }
    if node.token.is_none() {
        return Err(ConfigError::at(
            Origin::Default,
            "token",
            "rke2 agent needs a token (token or token-file)".into(),
        ));
    }
    check_token(
        &r,
        "token",
        "token-file",
        node.token.as_ref(),
        check_join_token,
    )?;
    // An agent writes its Node with its node identity, which may not set these (kubelet's
    // --node-labels rule; docs/security.md): refuse them here rather than loop on 403s.
    if let Some(l) = node
        .node_labels
        .iter()
        .find(|l| !crate::validation::node_may_set_label(&l.key))
    {
        return Err(ConfigError::at(
            r.last("node-label")
                .map(|x| x.origin.clone())
                .unwrap_or(Origin::Default),
            "node-label",
            format!(
                "an agent may not set the label \"{}\" (node-role, node-restriction, *.cattle.io \
                 and other kubernetes.io/k8s.io labels outside the kubelet's set are reserved); \
                 set it with kubectl as an administrator",
                l.key
            ),
        ));
    }
    let lb_server_port = r.parse("lb-server-port", parse_port)?;
    if lb_server_port < 2 {
        return Err(ConfigError::at(
            r.last("lb-server-port")
                .map(|x| x.origin.clone())
                .unwrap_or(Origin::Default),
            "lb-server-port",
            "must be at least 2 (the API load balancer uses lb-server-port - 1)".into(),
        ));
    }
    Ok(AgentConfig {
        lb_server_port,
        lb_bind_address: r.parse("lb-bind-address", parse_ip)?,
        node_password_file: PathBuf::from(r.string_or_default("node-password-file")),
        node,
    })
}

/// Loads and validates a server configuration from `sources`.
pub fn load_server(sources: &ConfigSources) -> Result<Loaded<ServerConfig>, ConfigError> {
    let raw = sources::merge(sources, Role::Server)?;
    Ok(Loaded {
        config: validate_server(&raw)?,
        warnings: raw.warnings,
    })
}

/// Loads and validates an agent configuration from `sources`.
pub fn load_agent(sources: &ConfigSources) -> Result<Loaded<AgentConfig>, ConfigError> {
    let raw = sources::merge(sources, Role::Agent)?;
    Ok(Loaded {
        config: validate_agent(&raw)?,
        warnings: raw.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, flags: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.yaml");
        std::fs::write(&p, text).unwrap();
        load_server(&ConfigSources {
            config_file: Some(p),
            env: Default::default(),
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .map(|l| l.config)
    }

    /// Each node's pod range: /24 (IPv4) or /64 (IPv6) unless set; bounded by cluster-cidr.
    #[test]
    fn secrets_encryption_settings_are_validated_with_the_key_named() {
        // Flags over an empty config file.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("config.yaml");
        std::fs::write(&empty, "").unwrap();
        let load = |flags: &[(&str, &str)]| {
            load_server(&ConfigSources {
                config_file: Some(empty.clone()),
                flags: flags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
        };
        let c = load(&[]).unwrap().config;
        assert!(c.secrets_encryption, "encrypted by default, as RKE2");
        assert_eq!(c.secrets_encryption_provider, "aescbc");
        let c = load(&[
            ("secrets-encryption", "false"),
            ("secrets-encryption-provider", "aesgcm"),
        ])
        .unwrap()
        .config;
        assert!(!c.secrets_encryption);
        assert_eq!(c.secrets_encryption_provider, "aesgcm");
        let e = load(&[("secrets-encryption-provider", "rot13")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secrets-encryption-provider") && e.contains("unknown provider \"rot13\""),
            "{e}"
        );
    }

    #[test]
    fn node_cidr_mask_size_defaults_and_bounds() {
        assert_eq!(load("", &[]).unwrap().node_cidr_mask_size, 24);
        assert_eq!(
            load("cluster-cidr: fd00:42::/48\n", &[])
                .unwrap()
                .node_cidr_mask_size,
            64
        );
        assert_eq!(
            load("node-cidr-mask-size: 26\n", &[])
                .unwrap()
                .node_cidr_mask_size,
            26
        );
        for (bad, why) in [
            (
                "node-cidr-mask-size: 8\n",
                "between cluster-cidr's prefix length /16 and /32",
            ),
            ("node-cidr-mask-size: 33\n", "between"),
            ("node-cidr-mask-size: x\n", "not a prefix length"),
            (
                "cluster-cidr: 10.0.0.0/8\nnode-cidr-mask-size: 28\n",
                "more than 16 bits longer",
            ),
        ] {
            let e = load(bad, &[]).unwrap_err();
            assert_eq!(e.key, "node-cidr-mask-size", "{bad}");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    /// RKE2 (Go's `net.ParseCIDR`) masks a CIDR to its network before deriving addresses.
    #[test]
    fn service_cidr_is_masked_to_its_network() {
        let c = load(
            "service-cidr: 10.43.5.0/16\ncluster-cidr: 10.42.7.9/16\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.service_cidr.to_string(), "10.43.0.0/16");
        assert_eq!(c.cluster_cidr.to_string(), "10.42.0.0/16");
        assert_eq!(c.cluster_dns.to_string(), "10.43.0.10");
        assert_eq!(c.service_node_port_range, (30000, 32767));
        assert_eq!(
            cidr_offset(&c.service_cidr, 1).unwrap().to_string(),
            "10.43.0.1"
        );
    }

    #[test]
    fn service_cidr_too_small_for_cluster_dns_is_refused() {
        let e = load("service-cidr: 10.43.0.0/30\n", &[]).unwrap_err();
        assert!(e.to_string().contains("cluster-dns"), "{e}");
        let c = load("service-cidr: 10.43.0.0/30\ncluster-dns: 10.43.0.2\n", &[]).unwrap();
        assert_eq!(
            cidr_offset(&c.service_cidr, 1).unwrap().to_string(),
            "10.43.0.1"
        );
        let v6: IpNet = "fd00:43::/112".parse().unwrap();
        assert_eq!(cidr_offset(&v6, 10).unwrap().to_string(), "fd00:43::a");
    }

    #[test]
    fn defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.supervisor_port, 9345);
        assert_eq!(c.https_listen_port, 6443);
        assert_eq!(c.cluster_dns.to_string(), "10.43.0.10");
        assert_eq!(c.write_kubeconfig_mode, 0o600);
        assert_eq!(c.node.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.node.data_dir, PathBuf::from("/var/lib/rancher/rke2"));
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let e = load("token: x\nnode-ip: 10.0.0.300\n", &[]).unwrap_err();
        assert_eq!(e.key, "node-ip");
        assert!(matches!(e.origin, Origin::File { line: 2, .. }), "{e:?}");
        let e = load(
            "node-taint:\n  - a=b:NoSchedule\n  # a comment\n  - c=d:Never\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "node-taint");
        // The bad item's own line, not the key's.
        assert!(matches!(e.origin, Origin::File { line: 4, .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("NoSchedule, PreferNoSchedule, NoExecute"),
            "{e}"
        );
        let e = load("supervisor-port: 99999\n", &[]).unwrap_err();
        assert_eq!(e.key, "supervisor-port");
        let e = load("write-kubeconfig-mode: rw\n", &[]).unwrap_err();
        assert_eq!(e.key, "write-kubeconfig-mode");
        let e = load("", &[("bind-address", "nope")]).unwrap_err();
        assert_eq!(e.origin, Origin::Flag("bind-address".into()));
        let e = load("server: http://x:9345\ntoken: t\n", &[]).unwrap_err();
        assert!(e.to_string().contains("only https://"), "{e}");
        let e = load("server: https://x:9345\n", &[]).unwrap_err();
        assert_eq!(e.key, "token");
        let e = load("supervisor-port: 6443\n", &[]).unwrap_err();
        assert!(e.to_string().contains("already used"), "{e}");
    }

    #[test]
    fn lists_and_tokens() {
        let c = load(
            "token: K10::server:secret\ntls-san:\n  - lb.example.com\n  - 10.0.0.9,10.0.0.10\nnode-label: [a=b]\n",
            &[("tls-san", "extra")],
        )
        .unwrap();
        assert_eq!(c.tls_san, vec!["extra"]);
        assert_eq!(
            c.node.token.as_ref().unwrap().expose(),
            "K10::server:secret"
        );
    }

    #[test]
    fn bad_token_formats_are_config_errors_naming_the_source() {
        let e = load("token: K10abc::server:secret\n", &[]).unwrap_err();
        assert_eq!(e.key, "token");
        assert!(matches!(e.origin, Origin::File { line: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("got 3"), "{e}");
        assert!(!e.to_string().contains("secret"), "the token leaked: {e}");
        // A bootstrap token cannot be a server token.
        let e = load("", &[("token", "abcdef.0123456789abcdef")]).unwrap_err();
        assert_eq!(e.origin, Origin::Flag("token".into()));
        let e = load("agent-token: K10::abcdef.0123456789abcdef\n", &[]).unwrap_err();
        assert_eq!(e.key, "agent-token");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t");
        std::fs::write(&f, format!("K10{}::server:pw\n", "z".repeat(64))).unwrap();
        let e = load(&format!("token-file: {}\n", f.display()), &[]).unwrap_err();
        assert_eq!(e.key, "token-file");
        assert!(e.to_string().contains("not a hexadecimal digit"), "{e}");
        // Agents: any join token format, but a well-formed one.
        let p = d.path().join("agent.yaml");
        std::fs::write(
            &p,
            "server: https://10.0.0.1:9345\ntoken: K10xyz::node:pw\n",
        )
        .unwrap();
        let e = load_agent(&ConfigSources {
            config_file: Some(p),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "token");
        assert!(matches!(e.origin, Origin::File { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn tls_san_lists_are_capped_and_the_cap_fits_a_certificate() {
        let many: Vec<String> = (0..MAX_TLS_SANS + 1)
            .map(|i| format!("s{i}.example"))
            .collect();
        let text = format!(
            "tls-san:\n{}",
            many.iter()
                .map(|s| format!("  - {s}\n"))
                .collect::<String>()
        );
        let e = load(&text, &[]).unwrap_err();
        assert_eq!(e.key, "tls-san");
        assert!(e.to_string().contains("too many entries: 1001"), "{e}");
        // The line of the first entry over the cap (entry 1001 of a list starting on line 2).
        assert!(matches!(e.origin, Origin::File { line: 1002, .. }), "{e:?}");
        let label = "a".repeat(60);
        let long: Vec<String> = (0..300)
            .map(|i| format!("{i:03}{label}.{label}.{label}.{label}"))
            .collect();
        let e = load("", &[("tls-san", &long.join(","))]).unwrap_err();
        assert!(e.to_string().contains("64 KiB"), "{e}");
        // At the caps a serving certificate can still be issued and parsed.
        let at_cap: Vec<String> = (0..MAX_TLS_SANS)
            .map(|i| format!("{i:04}{}.example", "b".repeat(44)))
            .collect();
        let c = load("", &[("tls-san", &at_cap.join(","))]).unwrap();
        let ca = crate::pki::CertAuthority::generate("test").unwrap();
        let spec = crate::pki::LeafSpec::server("n", c.tls_san.clone());
        let (chain, _key) = ca.issue_with_new_key(&spec).unwrap();
        let der = crate::pki::first_cert_der(chain.as_bytes()).unwrap();
        crate::pki::CertInfo::parse(&der).unwrap();
    }

    #[test]
    fn node_ip_takes_one_address_per_family() {
        let e = load("node-ip: 10.0.0.1,10.0.0.2\n", &[]).unwrap_err();
        assert_eq!(e.key, "node-ip");
        assert!(
            e.to_string()
                .contains("10.0.0.1 and 10.0.0.2 are both IPv4"),
            "{e}"
        );
        let c = load("node-ip: [10.0.0.1, \"fd00::1\"]\n", &[]).unwrap();
        assert_eq!(c.node.node_ips.len(), 2);
        // The flag replaces the file's address instead of being appended to it.
        let c = load("node-ip: 10.0.0.1\n", &[("node-ip", "10.0.0.7")]).unwrap();
        assert_eq!(c.node.node_ips, vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn server_urls() {
        let u: ServerUrl = "https://10.0.0.1:9345/".parse().unwrap();
        assert_eq!(u.authority(), "10.0.0.1:9345");
        let u: ServerUrl = "https://[::1]:9345".parse().unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.authority(), "[::1]:9345");
        assert_eq!("https://lb".parse::<ServerUrl>().unwrap().port, 443);
        assert!("https://lb:0".parse::<ServerUrl>().is_err());
        assert!("lb:9345".parse::<ServerUrl>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("40").unwrap(), Duration::from_secs(40));
        assert_eq!(parse_event_count("16"), Ok(16));
        assert!(parse_event_count("0").is_err());
        assert!(parse_event_count("many").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
