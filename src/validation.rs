//! Kubernetes naming rules shared by the config loader, the API server and the D-Bus service:
//! node names, label keys and values, and taints. One implementation, so a value accepted in
//! `config.yaml` is accepted by the API and over the bus, and vice versa.

use std::fmt;
use std::str::FromStr;

/// Why a name, label or taint was rejected; the message is user-facing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// RFC 1123 DNS subdomain (node names, namespaces of most objects): lower-case alphanumerics,
/// `-` and `.`, starting and ending alphanumeric, at most 253 characters.
pub fn validate_dns_subdomain(name: &str) -> Result<(), InvalidValue> {
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.len() > 253 {
        return Err(invalid("must be no more than 253 characters"));
    }
    for label in name.split('.') {
        validate_dns_label_chars(label).map_err(|_| {
            invalid(format!(
                "\"{name}\" is not a valid DNS subdomain: lower case alphanumeric characters, '-' or '.', \
                 starting and ending with an alphanumeric character"
            ))
        })?;
    }
    Ok(())
}

fn validate_dns_label_chars(label: &str) -> Result<(), ()> {
    let bytes = label.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return Err(());
    }
    let ok_edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !ok_edge(bytes[0]) || !ok_edge(bytes[bytes.len() - 1]) {
        return Err(());
    }
    if bytes.iter().all(|&b| ok_edge(b) || b == b'-') {
        Ok(())
    } else {
        Err(())
    }
}

/// RFC 1123 DNS label (namespace names): at most 63 characters, no dots.
pub fn validate_dns_label(name: &str) -> Result<(), InvalidValue> {
    validate_dns_label_chars(name).map_err(|_| {
        invalid(format!(
            "\"{name}\" is not a valid DNS label: at most 63 lower case alphanumeric characters or '-', \
             starting and ending with an alphanumeric character"
        ))
    })
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return false;
    }
    let edge = |c: u8| c.is_ascii_alphanumeric();
    edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// A label (or annotation, or taint) key: `[prefix/]name`, prefix a DNS subdomain, name at most
/// 63 characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), InvalidValue> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        validate_dns_subdomain(p)
            .map_err(|e| invalid(format!("invalid key \"{key}\": prefix {e}")))?;
    }
    if !is_qualified_name_part(name) {
        return Err(invalid(format!(
            "invalid key \"{key}\": name part must be 1-63 characters of alphanumerics, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        )));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters like a key's name part.
pub fn validate_label_value(value: &str) -> Result<(), InvalidValue> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid value \"{value}\": must be empty or 1-63 characters of alphanumerics, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        )))
    }
}

/// A node label `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeLabel {
    pub key: String,
    pub value: String,
}

impl FromStr for NodeLabel {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| invalid(format!("invalid label \"{s}\": expected key=value")))?;
        validate_label_key(key)?;
        validate_label_value(value)?;
        Ok(NodeLabel {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

impl fmt::Display for NodeLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// A taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

impl FromStr for TaintEffect {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "NoSchedule" => Ok(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
            "NoExecute" => Ok(TaintEffect::NoExecute),
            other => Err(invalid(format!(
                "invalid taint effect \"{other}\": must be one of NoSchedule, PreferNoSchedule, NoExecute"
            ))),
        }
    }
}

/// A node taint `key[=value]:Effect`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

impl FromStr for Taint {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kv, effect) = s.rsplit_once(':').ok_or_else(|| {
            invalid(format!(
                "invalid taint \"{s}\": expected key=value:Effect (Effect one of NoSchedule, PreferNoSchedule, NoExecute)"
            ))
        })?;
        let effect: TaintEffect = effect
            .parse()
            .map_err(|e: InvalidValue| invalid(format!("invalid taint \"{s}\": {e}")))?;
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, v),
            None => (kv, ""),
        };
        validate_label_key(key).map_err(|e| invalid(format!("invalid taint \"{s}\": {e}")))?;
        validate_label_value(value).map_err(|e| invalid(format!("invalid taint \"{s}\": {e}")))?;
        Ok(Taint {
            key: key.to_string(),
            value: value.to_string(),
            effect,
        })
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

impl Taint {
    /// The taint as a Kubernetes `spec.taints[]` entry.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("key".into(), self.key.clone().into());
        if !self.value.is_empty() {
            m.insert("value".into(), self.value.clone().into());
        }
        m.insert("effect".into(), self.effect.as_str().into());
        serde_json::Value::Object(m)
    }
}

// Node restriction: which label and annotation keys a node identity may write on its own Node
// (upstream NodeRestriction plus RKE2's protected keys; docs/security.md). Shared by the API
// server's admission, config validation and the node agent.

/// Label namespaces (the part of a key before `/`) a kubelet may set inside `kubernetes.io` and
/// `k8s.io` (upstream `kubeletapis.IsKubeletLabel`): these and their subdomains.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];
/// Individual `kubernetes.io` labels a kubelet may set (upstream `kubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];
/// Key namespaces no node may write, as label or annotation (with their subdomains): upstream's
/// restriction prefix, node roles, and everything RKE2/Rancher derive trust from.
const PROTECTED_NAMESPACES: &[&str] = &[
    "node-restriction.kubernetes.io",
    "node-role.kubernetes.io",
    "cattle.io",
];

fn key_namespace(key: &str) -> Option<&str> {
    key.split_once('/').map(|(ns, _)| ns)
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain
        || ns
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn protected_key(key: &str) -> bool {
    key_namespace(key).is_some_and(|ns| PROTECTED_NAMESPACES.iter().any(|d| in_namespace(ns, d)))
}

/// Whether a node identity may set or change the label `key` on its own Node.
pub fn node_may_set_label(key: &str) -> bool {
    if protected_key(key) {
        return false;
    }
    let Some(ns) = key_namespace(key) else {
        return true;
    };
    let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
    !kubernetes
        || KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES.iter().any(|d| in_namespace(ns, d))
}

/// Whether a node identity may set or change the annotation `key` on its own Node.
pub fn node_may_set_annotation(key: &str) -> bool {
    !protected_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse() {
        let t: Taint = "CriticalAddonsOnly=true:NoExecute".parse().unwrap();
        assert_eq!(t.key, "CriticalAddonsOnly");
        assert_eq!(t.value, "true");
        assert_eq!(t.effect, TaintEffect::NoExecute);
        assert_eq!(t.to_string(), "CriticalAddonsOnly=true:NoExecute");
        let t: Taint = "dedicated:NoSchedule".parse().unwrap();
        assert_eq!(t.value, "");
        assert!("k=v".parse::<Taint>().is_err());
        let e = "k=v:Sometimes".parse::<Taint>().unwrap_err();
        assert!(
            e.0.contains("NoSchedule, PreferNoSchedule, NoExecute"),
            "{e}"
        );
        assert!("-bad=v:NoSchedule".parse::<Taint>().is_err());
    }

    #[test]
    fn labels_parse() {
        let l: NodeLabel = "example.com/tier=web".parse().unwrap();
        assert_eq!(l.key, "example.com/tier");
        assert!("tier".parse::<NodeLabel>().is_err());
        assert!("Bad_Prefix.com/x=1".parse::<NodeLabel>().is_err());
        assert!("x=not ok".parse::<NodeLabel>().is_err());
        assert!("x=".parse::<NodeLabel>().is_ok());
    }

    #[test]
    fn node_names() {
        assert!(validate_dns_subdomain("server-1.example").is_ok());
        assert!(validate_dns_subdomain("").is_err());
        assert!(validate_dns_subdomain("Upper").is_err());
        assert!(validate_dns_subdomain("a..b").is_err());
        assert!(validate_dns_label("kube-system").is_ok());
        assert!(validate_dns_label("a.b").is_err());
    }

    #[test]
    fn kubelet_label_rules() {
        for ok in [
            "tier",
            "example.com/tier",
            "kubernetes.io/hostname",
            "beta.kubernetes.io/arch",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/custom",
            "a.kubelet.kubernetes.io/x",
            "rke2.io/hostname",
            "notcattle.io/x",
        ] {
            assert!(node_may_set_label(ok), "{ok}");
        }
        for bad in [
            "node-role.kubernetes.io/etcd",
            "node-role.kubernetes.io/worker",
            "node-restriction.kubernetes.io/x",
            "a.node-restriction.kubernetes.io/x",
            "kubernetes.io/role",
            "example.k8s.io/x",
            "etcd.rke2.cattle.io/node-name",
            "cattle.io/x",
            "management.cattle.io/x",
        ] {
            assert!(!node_may_set_label(bad), "{bad}");
        }
        assert!(node_may_set_annotation("rke2.io/internal-ip"));
        assert!(node_may_set_annotation("kubernetes.io/anything"));
        assert!(!node_may_set_annotation("etcd.rke2.cattle.io/node-name"));
        assert!(!node_may_set_annotation("node-role.kubernetes.io/etcd"));
    }
}
