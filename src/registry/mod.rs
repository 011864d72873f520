//! The resource registry: every served kind is declared once, in its own file below, with its
//! group, version, names, scope, verbs, subresources, etcd prefix, defaulting and validation
//! hooks, Table printer, field selectors and protobuf support. Discovery, routing, storage,
//! validation, Table rendering, controllers and the D-Bus service all read these declarations
//! through typed handles (`&registry::NODES`) or the lookups here; nothing else chooses a kind by
//! its name. Adding a kind is one new file plus one line in [`RESOURCES`].
//!
//! The registry sits below the HTTP layer: it knows no request, response or HTTP error.

pub mod fields;
pub mod print;
pub mod protobuf;
pub mod quantity;
pub mod schema;

mod configmap;
mod controllerrevision;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod endpointslice;
mod etcdsnapshotfile;
mod event;
mod event_v1;
pub mod job;
mod lease;
mod namespace;
mod node;
mod pod;
mod pod_spec;
mod replicaset;
mod reviews;
mod rules_review;
mod secret;
mod service;
mod whoami_v1beta1;
pub mod workload;

pub use configmap::CONFIGMAPS;
pub use controllerrevision::CONTROLLER_REVISIONS;
pub use cronjob::{CRON_JOBS, parse_schedule, time_zone};
pub use daemonset::DAEMON_SETS;
pub use deployment::DEPLOYMENTS;
pub use endpoints::ENDPOINTS;
pub use endpointslice::ENDPOINT_SLICES;
pub use etcdsnapshotfile::ETCD_SNAPSHOT_FILES;
pub use event::EVENTS;
pub use event_v1::EVENTS_V1;
pub use fields::FieldCause;
pub use job::JOBS;
pub use lease::LEASES;
pub use namespace::{NAMESPACE_NAME_LABEL, NAMESPACES, SYSTEM_NAMESPACES};
pub use node::NODES;
pub use pod::PODS;
pub use replicaset::REPLICA_SETS;
pub use reviews::{SELF_SUBJECT_ACCESS_REVIEWS, SELF_SUBJECT_REVIEWS};
pub use rules_review::SELF_SUBJECT_RULES_REVIEWS;
pub use secret::SECRETS;
pub use service::SERVICES;
pub use whoami_v1beta1::SELF_SUBJECT_REVIEWS_V1BETA1;

use serde_json::Value;

use fields::{dns_subdomain_name, no_defaults, no_update_rules, no_validation, untyped};
use print::Printer;

/// Every resource served, grouped by API group (core first), in discovery order.
pub static RESOURCES: &[&ResourceInfo] = &[
    &NODES,
    &NAMESPACES,
    &SECRETS,
    &CONFIGMAPS,
    &EVENTS,
    &ENDPOINTS,
    &SERVICES,
    &PODS,
    &LEASES,
    &EVENTS_V1,
    &SELF_SUBJECT_ACCESS_REVIEWS,
    &SELF_SUBJECT_RULES_REVIEWS,
    &SELF_SUBJECT_REVIEWS,
    &ETCD_SNAPSHOT_FILES,
    &DEPLOYMENTS,
    &REPLICA_SETS,
    &SELF_SUBJECT_REVIEWS_V1BETA1,
    &ENDPOINT_SLICES,
    &DAEMON_SETS,
    &CONTROLLER_REVISIONS,
    &JOBS,
    &CRON_JOBS,
];

/// A Kubernetes API verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Create,
    Delete,
    DeleteCollection,
    Get,
    List,
    Patch,
    Update,
    Watch,
}

impl Verb {
    /// The verb as RBAC and discovery spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Patch => "patch",
            Verb::Update => "update",
            Verb::Watch => "watch",
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verbs of ordinary stored resources, in discovery order.
pub const STORED_VERBS: &[Verb] = &[
    Verb::Create,
    Verb::Delete,
    Verb::DeleteCollection,
    Verb::Get,
    Verb::List,
    Verb::Patch,
    Verb::Update,
    Verb::Watch,
];
/// Verbs of review-style resources that are only POSTed.
pub const CREATE_ONLY: &[Verb] = &[Verb::Create];

/// What a review-style (computed, never stored) resource answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// SelfSubjectAccessReview: may the caller do this?
    Access,
    /// SelfSubjectReview: who is the caller?
    Subject,
    /// SelfSubjectRulesReview: what may the caller do in a namespace?
    Rules,
}

/// What a node's own credentials may do with a resource (the node authorizer's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAccess {
    /// Not even read (secrets).
    Hidden,
    /// Read only.
    Read,
    /// Read, and write the object named after the node, in `namespace` when given.
    Own { namespace: Option<&'static str> },
    /// Read, create, update and patch (events).
    Write,
    /// [`NodeAccess::Write`], and delete objects bound to the node (`spec.nodeName`, checked
    /// against the stored object): pods, which a node deletes once their containers stopped.
    Bound,
}

/// One API resource and everything kind-specific about it.
#[derive(Debug, Clone, Copy)]
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
    pub verbs: &'static [Verb],
    /// Subresources served (`status`).
    pub subresources: &'static [&'static str],
    /// etcd key prefix; objects live at `<prefix>/<name>` or `<prefix>/<namespace>/<name>`.
    /// Empty for resources that are not stored (reviews).
    pub etcd_prefix: &'static str,
    /// For review resources: what they compute.
    pub review: Option<Review>,
    /// The Go package of the kind's internal type, for upstream-shaped conversion messages.
    pub go_package: &'static str,
    /// Type errors of a body, as the typed decoder reports them.
    pub type_check: fn(&Value) -> Result<(), String>,
    /// The rule `metadata.name` (and a `generateName` prefix) must follow.
    pub name_rule: fn(&str) -> Result<(), String>,
    /// Kind-specific validation of a body, beyond the common metadata rules.
    pub validate: fn(&Value, &mut Vec<FieldCause>),
    /// Whether the server maintains `metadata.generation` (bumped when `spec` changes).
    pub tracks_generation: bool,
    /// Kind-specific defaulting of a new object, after the common metadata defaults.
    pub on_create: fn(&mut Value),
    /// Kind-specific rules of an update (`old`, `new`), after the common metadata rules.
    pub on_update: fn(&Value, &mut Value, &mut Vec<FieldCause>),
    /// How `kubectl get` shows objects of this kind.
    pub printer: Printer,
    /// Field selectors upstream indexes for this kind, beyond `metadata.name`/`namespace`.
    pub field_selectors: &'static [&'static str],
    /// The protobuf package of the kind's messages (`k8s.io.api.core.v1`): the kind is
    /// `<package>.<Kind>`, its list `<package>.<Kind>List` (see [`protobuf`]). `None` for a kind
    /// served as JSON only.
    pub protobuf: Option<&'static str>,
    /// What nodes may do with objects of this kind.
    pub node_access: NodeAccess,
    /// The kind's OpenAPI schema, from its typed model (`schema::schema_of::<T>`).
    pub schema: Option<schema::SchemaFn>,
    /// Merge semantics of the kind's own list fields (beyond [`schema::COMMON_LISTS`]).
    pub lists: &'static [schema::ListSemantics],
    /// Whether objects expire after the server's `event-ttl` (an etcd lease on every write, as
    /// upstream stores Events).
    pub expires: bool,
    /// Converts an object of this version into the form stored in etcd, where several versions
    /// share one prefix (events.k8s.io/v1 Events are stored as core/v1 Events).
    pub to_storage: fn(&mut Value),
    /// Converts a stored object into this version (the inverse of `to_storage`).
    pub from_storage: fn(&mut Value),
    /// Strategic-merge strategies of this kind's list fields, by dotted path from the object
    /// root (list levels do not appear: `spec.containers.env`), from the `+patchStrategy` /
    /// `+patchMergeKey` tags of its Go type. Lists not named here (and not in
    /// [`METADATA_LIST_STRATEGIES`]) are atomic.
    pub list_strategies: &'static [(&'static str, ListStrategy)],
}

/// How a list field merges under strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced as a whole (no `patchStrategy` tag; e.g. `spec.taints`).
    Atomic,
    /// `patchStrategy=merge` with `patchMergeKey`: elements matched by this key.
    MergeByKey(&'static str),
    /// `patchStrategy=merge` on a list of scalars: set union.
    MergePrimitive,
}

/// The list strategies of `ObjectMeta`, shared by every kind.
pub const METADATA_LIST_STRATEGIES: &[(&str, ListStrategy)] = &[
    ("metadata.ownerReferences", ListStrategy::MergeByKey("uid")),
    ("metadata.finalizers", ListStrategy::MergePrimitive),
];

/// Resources are identified by group, version and plural: the hooks do not take part.
impl PartialEq for ResourceInfo {
    fn eq(&self, other: &Self) -> bool {
        (self.group, self.version, self.plural) == (other.group, other.version, other.plural)
    }
}

impl Eq for ResourceInfo {}

impl ResourceInfo {
    /// A stored kind of `group/v1` at `etcd_prefix`, with every hook at its default; kind files
    /// override what they need with struct-update syntax.
    pub const fn stored(
        group: &'static str,
        plural: &'static str,
        singular: &'static str,
        kind: &'static str,
        namespaced: bool,
        etcd_prefix: &'static str,
    ) -> ResourceInfo {
        ResourceInfo {
            group,
            version: "v1",
            plural,
            singular,
            kind,
            namespaced,
            short_names: &[],
            categories: &[],
            verbs: STORED_VERBS,
            subresources: &[],
            etcd_prefix,
            review: None,
            go_package: "core",
            type_check: untyped,
            name_rule: dns_subdomain_name,
            validate: no_validation,
            tracks_generation: false,
            on_create: no_defaults,
            on_update: no_update_rules,
            printer: print::GENERIC,
            field_selectors: &[],
            protobuf: None,
            node_access: NodeAccess::Read,
            schema: None,
            lists: &[],
            expires: false,
            to_storage: no_defaults,
            from_storage: no_defaults,
            list_strategies: &[],
        }
    }

    /// The strategic-merge strategy of the list at `path` (see [`ResourceInfo::list_strategies`]).
    pub fn list_strategy(&self, path: &str) -> ListStrategy {
        METADATA_LIST_STRATEGIES
            .iter()
            .chain(self.list_strategies)
            .find(|(p, _)| *p == path)
            .map_or(ListStrategy::Atomic, |(_, s)| *s)
    }

    /// Whether `verb` is served on this resource.
    pub fn serves(&self, verb: Verb) -> bool {
        self.verbs.contains(&verb)
    }

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

    /// Full protobuf message name of the kind, when it has a protobuf encoding.
    pub fn proto_message(&self) -> Option<String> {
        self.protobuf.map(|pkg| format!("{pkg}.{}", self.kind))
    }

    /// Full protobuf message name of the kind's list.
    pub fn proto_list_message(&self) -> Option<String> {
        self.protobuf
            .map(|pkg| format!("{pkg}.{}", self.list_kind()))
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

    /// `Kind` or `Kind.group`, as upstream names objects in `Invalid` errors.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// Finds a resource by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by kind within a group/version (`apiVersion` + `kind` of a body).
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// Finds a resource by group and plural name, in `version` when given (SelfSubjectAccessReview
/// attributes may leave the version out).
pub fn lookup_any_version(
    group: &str,
    version: Option<&str>,
    plural: &str,
) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.group == group && r.plural == plural && version.is_none_or(|v| v == r.version))
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
        .copied()
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

    /// The production code (test modules excluded) of every `.rs` file under `dir`.
    fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = match text.find("#[cfg(test)]") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                };
                out.push((path.display().to_string(), code));
            }
        }
    }

    /// Whether `line` chooses something by the string `lit` (`"Node" =>`, `== "nodes"`,
    /// `"Pod" |`, `| "Pod"`, `("", "Node")` in a pattern).
    fn matches_on(line: &str, lit: &str) -> bool {
        let mut from = 0;
        while let Some(i) = line[from..].find(lit) {
            let (before, after) = (
                line[..from + i].trim_end(),
                line[from + i + lit.len()..].trim_start(),
            );
            let after = after.trim_start_matches(')').trim_start();
            if after.starts_with("=>")
                || after.starts_with('|')
                || before.ends_with("==")
                || before.ends_with("!=")
                || before.ends_with('|')
            {
                return true;
            }
            from += i + lit.len();
        }
        false
    }

    /// The registry rule: no module outside `src/registry/` picks a kind by its name.
    #[test]
    fn no_kind_name_matches_outside_the_registry() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let registry_dir = root.join("registry").display().to_string();
        let mut offences = Vec::new();
        for (path, code) in &files {
            if path.starts_with(&registry_dir) {
                continue;
            }
            for (n, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                for r in RESOURCES {
                    for name in [r.kind, r.plural] {
                        if matches_on(line, &format!("\"{name}\"")) {
                            offences.push(format!("{path}:{}: {}", n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(
            offences.is_empty(),
            "kinds chosen by name outside src/registry (declare the behaviour on the kind \
             instead):\n{}",
            offences.join("\n")
        );
    }

    #[test]
    fn the_rule_catches_kind_matches() {
        assert!(matches_on(
            r#"        ("", "Node") => check(v),"#,
            "\"Node\""
        ));
        assert!(matches_on(r#"    "Pod" | "Node" => x,"#, "\"Node\""));
        assert!(matches_on(r#"if info.plural == "nodes" {"#, "\"nodes\""));
        assert!(!matches_on(r#"json!({"kind": "Node"})"#, "\"Node\""));
    }
}
