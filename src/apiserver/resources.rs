//! The static table of API resources this server serves: group, version, names, scope, verbs,
//! and where their objects live in etcd. Discovery, routing, storage and Table rendering all read
//! this one table.

/// Verbs of ordinary stored resources.
pub const STORED_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of review-style resources that are only POSTed.
pub const CREATE_ONLY: &[&str] = &["create"];

/// One API resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` for core.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name used in URLs (`nodes`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Subresources served (`status`).
    pub subresources: &'static [&'static str],
    /// etcd key prefix; objects live at `<prefix>/<name>` or `<prefix>/<namespace>/<name>`.
    /// Empty for resources that are not stored (reviews).
    pub etcd_prefix: &'static str,
}

impl ResourceInfo {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Kind of the list object (`NodeList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether objects of this resource are kept in etcd.
    pub fn is_stored(&self) -> bool {
        !self.etcd_prefix.is_empty()
    }

    /// `plural` or `plural.group`, as used in error messages and RBAC.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// etcd key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}/{ns}/{name}", self.etcd_prefix),
            _ => format!("{}/{name}", self.etcd_prefix),
        }
    }

    /// etcd prefix of a list (all objects, or all in one namespace), ending with `/`.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}/{ns}/", self.etcd_prefix),
            _ => format!("{}/", self.etcd_prefix),
        }
    }
}

const fn stored(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    etcd_prefix: &'static str,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories: &[],
        verbs: STORED_VERBS,
        subresources: &[],
        etcd_prefix,
    }
}

/// Every resource served, grouped by API group (core first), in discovery order.
pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        subresources: &["status"],
        ..stored(
            "",
            "nodes",
            "node",
            "Node",
            false,
            &["no"],
            "/registry/minions",
        )
    },
    ResourceInfo {
        subresources: &["status"],
        ..stored(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            "/registry/namespaces",
        )
    },
    stored(
        "",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        "/registry/secrets",
    ),
    stored(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        "/registry/configmaps",
    ),
    stored(
        "",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        "/registry/events",
    ),
    stored(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        "/registry/services/endpoints",
    ),
    ResourceInfo {
        categories: &["all"],
        subresources: &["status"],
        ..stored(
            "",
            "services",
            "service",
            "Service",
            true,
            &["svc"],
            "/registry/services/specs",
        )
    },
    ResourceInfo {
        categories: &["all"],
        subresources: &["status"],
        ..stored("", "pods", "pod", "Pod", true, &["po"], "/registry/pods")
    },
    stored(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        "/registry/leases",
    ),
    ResourceInfo {
        verbs: CREATE_ONLY,
        etcd_prefix: "",
        ..stored(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            "SelfSubjectAccessReview",
            false,
            &[],
            "",
        )
    },
    ResourceInfo {
        verbs: CREATE_ONLY,
        etcd_prefix: "",
        ..stored(
            "authentication.k8s.io",
            "selfsubjectreviews",
            "selfsubjectreview",
            "SelfSubjectReview",
            false,
            &[],
            "",
        )
    },
];

/// Finds a resource by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by kind within a group/version (`apiVersion` + `kind` of a body).
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The API groups other than core, in discovery order, each with its versions.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// The resources of one group/version.
pub fn in_group_version(group: &str, version: &str) -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kubernetes_layout() {
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/minions/n1");
        let leases = lookup("coordination.k8s.io", "v1", "leases").unwrap();
        assert_eq!(
            leases.key(Some("kube-node-lease"), "n1"),
            "/registry/leases/kube-node-lease/n1"
        );
        assert_eq!(leases.list_prefix(None), "/registry/leases/");
        assert_eq!(leases.api_version(), "coordination.k8s.io/v1");
        assert_eq!(lookup_kind("v1", "Secret").unwrap().plural, "secrets");
        assert!(groups().contains(&"authorization.k8s.io"));
    }
}
