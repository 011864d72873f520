//! Authentication and RBAC-lite authorization for the Kubernetes API. Identity comes from the
//! verified client certificate (user = CN, groups = O). `system:masters` may do anything;
//! nodes (`system:node:<name>` in `system:nodes`) may read cluster state and write only their
//! own Node and their own Lease in `kube-node-lease`; every authenticated user may use discovery
//! and the self-subject reviews; everything else is forbidden.
//!
//! Node writes are further restricted by [`admit_node_write`] and [`admit_node_delete`]
//! (upstream's NodeRestriction admission plus RKE2's protected keys; docs/security.md): a node
//! may not set role, restriction or `*.cattle.io` labels and annotations, may not change its
//! taints, pod CIDRs or provider ID after registration, and may not delete itself while it is
//! an etcd member.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::https::CertIdentity;
use crate::registry::{NodeAccess, RESOURCES, ResourceInfo};
use crate::validation::{node_may_set_annotation, node_may_set_label};

/// The authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn from_cert(id: &CertIdentity) -> User {
        let mut groups = id.groups.clone();
        groups.push("system:authenticated".into());
        User {
            name: id.user.clone(),
            groups,
        }
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// The node name of a node identity.
    pub fn node_name(&self) -> Option<&str> {
        if self.in_group("system:nodes") {
            self.name.strip_prefix("system:node:")
        } else {
            None
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub resource: &'a ResourceInfo,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// Object name (for create: the name in the body).
    pub name: Option<&'a str>,
}

/// A refusal with the Kubernetes-style message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

fn denial(user: &User, a: &Attributes<'_>) -> Denied {
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource.plural),
        None => a.resource.plural.to_string(),
    };
    let scope = match a.namespace {
        Some(ns) if a.resource.namespaced => format!("in the namespace \"{ns}\""),
        _ => "at the cluster scope".to_string(),
    };
    let subject = match a.name {
        Some(n) => format!("{} \"{n}\" is forbidden: ", a.resource.qualified_name()),
        None => format!("{} is forbidden: ", a.resource.qualified_name()),
    };
    Denied(format!(
        "{subject}User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.resource.group
    ))
}

const READ_VERBS: &[&str] = &["get", "list", "watch"];
/// What a node may do with a kind of [`NodeAccess::Write`] (events) besides reading.
const NODE_WRITE_VERBS: &[&str] = &["create", "update", "patch"];
/// What a node may do with its own object of a kind of [`NodeAccess::Own`] besides reading.
const NODE_OWN_VERBS: &[&str] = &["create", "update", "patch", "delete"];
/// Subresources that open a session inside a workload (crate::runtime::streaming): never a
/// node's, whatever it may do with the parent (upstream's Node authorizer grants none of them).
const SESSION_SUBRESOURCES: &[&str] = &["exec", "attach", "portforward"];

/// Paths every authenticated user may GET (upstream's `system:discovery` and
/// `system:public-info-viewer`); a trailing `*` matches everything below.
pub const PUBLIC_PATHS: &[&str] = &[
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/version/",
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi",
    "/openapi/*",
];

/// Whether a non-resource `path` is one of [`PUBLIC_PATHS`].
pub fn is_public_path(path: &str) -> bool {
    PUBLIC_PATHS.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix) || path == prefix.trim_end_matches('/'),
        None => path == *p || path.starts_with(&format!("{p}/")),
    })
}

/// Decides whether `user` may do `a`.
pub fn authorize(user: &User, a: &Attributes<'_>) -> Result<(), Denied> {
    if user.in_group("system:masters") {
        return Ok(());
    }
    let r = a.resource;
    // Everyone may ask who they are and what they may do.
    if r.review.is_some() {
        return Ok(());
    }
    if let Some(node) = user.node_name() {
        if a.subresource
            .is_some_and(|s| SESSION_SUBRESOURCES.contains(&s))
        {
            return Err(denial(user, a));
        }
        let own = a.name == Some(node);
        let allowed = match r.node_access {
            // Nodes read everything they need except secrets.
            NodeAccess::Hidden => false,
            _ if READ_VERBS.contains(&a.verb) => true,
            NodeAccess::Read => false,
            NodeAccess::Own { namespace } => {
                (namespace.is_none() || a.namespace == namespace)
                    && NODE_OWN_VERBS.contains(&a.verb)
                    && own
            }
            NodeAccess::Write => NODE_WRITE_VERBS.contains(&a.verb),
            // Deletes are checked against the object's node by `admit_node_bound_delete`.
            NodeAccess::Bound => NODE_OWN_VERBS.contains(&a.verb),
        };
        return if allowed {
            Ok(())
        } else {
            Err(denial(user, a))
        };
    }
    Err(denial(user, a))
}

/// The rules of a SelfSubjectRulesReview: what `user` may do in `namespace`, as RBAC
/// `resourceRules` and `nonResourceRules`, derived from the same policy [`authorize`] applies
/// (a unit test checks the two agree).
pub fn rules(user: &User, namespace: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    let mut resource_rules = Vec::new();
    if user.in_group("system:masters") {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        let non_resource = vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})];
        return (resource_rules, non_resource);
    }
    // The reviews: everyone may ask (upstream's `system:basic-user`).
    for r in RESOURCES.iter().filter(|r| r.review.is_some()) {
        resource_rules.push(json!({
            "verbs": ["create"], "apiGroups": [r.group], "resources": [r.plural],
        }));
    }
    if let Some(node) = user.node_name() {
        for r in RESOURCES.iter().filter(|r| r.is_stored()) {
            let (write, names): (&[&str], Vec<&str>) = match r.node_access {
                NodeAccess::Hidden => continue,
                NodeAccess::Read => (&[], vec![]),
                NodeAccess::Write => (NODE_WRITE_VERBS, vec![]),
                NodeAccess::Bound => (NODE_OWN_VERBS, vec![]),
                NodeAccess::Own { namespace: only }
                    if only.is_none() || (r.namespaced && only == namespace) =>
                {
                    (NODE_OWN_VERBS, vec![node])
                }
                NodeAccess::Own { .. } => (&[], vec![]),
            };
            // Subresources are authorized as their resource.
            let resources: Vec<String> = std::iter::once(r.plural.to_string())
                .chain(
                    r.subresources
                        .iter()
                        .filter(|s| !SESSION_SUBRESOURCES.contains(s))
                        .map(|s| format!("{}/{s}", r.plural)),
                )
                .collect();
            resource_rules.push(json!({
                "verbs": READ_VERBS, "apiGroups": [r.group], "resources": resources,
            }));
            if !write.is_empty() {
                let mut rule = json!({
                    "verbs": write, "apiGroups": [r.group], "resources": resources,
                });
                if !names.is_empty() {
                    rule["resourceNames"] = json!(names);
                }
                resource_rules.push(rule);
            }
        }
    }
    let non_resource = vec![json!({"verbs": ["get"], "nonResourceURLs": PUBLIC_PATHS})];
    (resource_rules, non_resource)
}

/// Keys of the string map at `pointer` whose value differs between `old` and `new` (added,
/// removed or changed).
fn changed_keys(old: Option<&Value>, new: &Value, pointer: &str) -> BTreeSet<String> {
    let map = |v: Option<&Value>| {
        v.and_then(|v| v.pointer(pointer))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (a, b) = (map(old), map(Some(new)));
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn node_forbidden(name: &str, message: String) -> Denied {
    Denied(format!("nodes \"{name}\" is forbidden: {message}"))
}

/// NodeRestriction for a node identity creating (`old` = None) or changing its own Node.
/// Others pass unchecked (their writes were authorized already).
pub fn admit_node_write(user: &User, old: Option<&Value>, new: &Value) -> Result<(), Denied> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(node);
    let join = |keys: Vec<String>| keys.join(", ");
    let labels: Vec<String> = changed_keys(old, new, "/metadata/labels")
        .into_iter()
        .filter(|k| !node_may_set_label(k))
        .collect();
    let annotations: Vec<String> = changed_keys(old, new, "/metadata/annotations")
        .into_iter()
        .filter(|k| !node_may_set_annotation(k))
        .collect();
    let Some(old) = old else {
        // Registration: kubelet's --register-with-taints may set taints; labels are checked.
        if !labels.is_empty() {
            return Err(node_forbidden(
                name,
                format!(
                    "node \"{node}\" is not allowed to set the following labels: {}",
                    join(labels)
                ),
            ));
        }
        if !annotations.is_empty() {
            return Err(node_forbidden(
                name,
                format!(
                    "node \"{node}\" is not allowed to set the following annotations: {}",
                    join(annotations)
                ),
            ));
        }
        return Ok(());
    };
    let spec = |v: &Value, field: &str| v.pointer(&format!("/spec/{field}")).cloned();
    for (field, what) in [
        ("podCIDR", "pod CIDRs"),
        ("podCIDRs", "pod CIDRs"),
        ("providerID", "provider ID"),
        ("configSource", "config source"),
    ] {
        if spec(old, field) != spec(new, field) {
            return Err(node_forbidden(
                name,
                format!("node \"{node}\" is not allowed to modify {what}"),
            ));
        }
    }
    let taints = |v: &Value| {
        v.pointer("/spec/taints")
            .filter(|t| !t.is_null())
            .cloned()
            .unwrap_or(Value::Array(Vec::new()))
    };
    if taints(old) != taints(new) {
        return Err(node_forbidden(
            name,
            format!("node \"{node}\" is not allowed to modify taints"),
        ));
    }
    if !labels.is_empty() {
        return Err(node_forbidden(
            name,
            format!("is not allowed to modify labels: {}", join(labels)),
        ));
    }
    if !annotations.is_empty() {
        return Err(node_forbidden(
            name,
            format!(
                "is not allowed to modify annotations: {}",
                join(annotations)
            ),
        ));
    }
    Ok(())
}

fn is_nodes(info: &ResourceInfo) -> bool {
    *info == crate::registry::NODES
}

/// Admission of a write to any resource: NodeRestriction for node identities writing Nodes.
pub fn admit_write(
    user: &User,
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), Denied> {
    if is_nodes(info) {
        admit_node_write(user, old, new)
    } else {
        Ok(())
    }
}

/// Whether deleting an object of `info` needs [`admit_node_delete`] (and so the etcd member
/// lookup it takes).
pub fn delete_needs_member_check(user: &User, info: &ResourceInfo) -> bool {
    is_nodes(info) && user.node_name().is_some()
}

/// A node identity may delete an object of a [`NodeAccess::Bound`] kind (a pod) only when it
/// is bound to that node (upstream's NodeRestriction for pods).
pub fn admit_node_bound_delete(
    user: &User,
    info: &ResourceInfo,
    obj: &Value,
) -> Result<(), Denied> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    if info.node_access != NodeAccess::Bound {
        return Ok(());
    }
    let bound = obj.pointer("/spec/nodeName").and_then(Value::as_str);
    if bound == Some(node) {
        return Ok(());
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(Denied(format!(
        "{} \"{name}\" is forbidden: node \"{node}\" can only delete {} bound to it",
        info.plural, info.plural
    )))
}

/// Whether `a` is a node reading one Secret or ConfigMap by name. Such a read is denied by
/// [`authorize`] (nodes may not read these kinds at large) but allowed by
/// [`admit_node_reference`] when a pod bound to the node references the object (upstream's
/// Node authorizer graph, docs/security.md).
pub fn needs_node_reference(user: &User, a: &Attributes<'_>) -> bool {
    user.node_name().is_some()
        && is_referenced_kind(a.resource)
        && a.verb == "get"
        && a.subresource.is_none()
        && a.name.is_some()
        && a.namespace.is_some()
}

fn is_referenced_kind(info: &ResourceInfo) -> bool {
    *info == crate::registry::SECRETS || *info == crate::registry::CONFIGMAPS
}

/// Names of the Secrets (`secrets = true`) or ConfigMaps a pod refers to: env `valueFrom`,
/// `envFrom`, volumes (also projected ones) and, for secrets, `imagePullSecrets`.
pub fn pod_references(pod: &Value, secrets: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str) {
            out.insert(n.to_string());
        }
    };
    let (key_ref, from_ref, volume, volume_name) = if secrets {
        ("secretKeyRef", "secretRef", "secret", "secretName")
    } else {
        ("configMapKeyRef", "configMapRef", "configMap", "name")
    };
    let spec = &pod["spec"];
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for c in list(&spec[field]) {
            for e in list(&c["env"]) {
                add(e.pointer(&format!("/valueFrom/{key_ref}/name")));
            }
            for f in list(&c["envFrom"]) {
                add(f.pointer(&format!("/{from_ref}/name")));
            }
        }
    }
    for v in list(&spec["volumes"]) {
        add(v.pointer(&format!("/{volume}/{volume_name}")));
        for src in list(&v.pointer("/projected/sources").cloned().unwrap_or_default()) {
            add(src.pointer(&format!("/{volume}/name")));
        }
    }
    if secrets {
        for s in list(&spec["imagePullSecrets"]) {
            add(s.get("name"));
        }
    }
    out
}

/// Allows a read for which [`needs_node_reference`] holds when one of `pods` (the namespace's
/// pods) is bound to the node and references the object; denies with upstream's message
/// otherwise.
pub fn admit_node_reference(user: &User, a: &Attributes<'_>, pods: &[Value]) -> Result<(), Denied> {
    let (Some(node), Some(name)) = (user.node_name(), a.name) else {
        return Err(denial(user, a));
    };
    let secrets = *a.resource == crate::registry::SECRETS;
    let referenced = pods.iter().any(|p| {
        p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
            && p.pointer("/metadata/namespace").and_then(Value::as_str) == a.namespace
            && pod_references(p, secrets).contains(name)
    });
    if referenced {
        Ok(())
    } else {
        let Denied(base) = denial(user, a);
        Err(Denied(format!(
            "{base}: no relationship found between node '{node}' and this object"
        )))
    }
}

/// A node identity may delete its own Node (authorized already) unless that node is an etcd
/// member: removing a server's Node removes its member, which only an admin may decide.
pub fn admit_node_delete(user: &User, name: &str, is_etcd_member: bool) -> Result<(), Denied> {
    match user.node_name() {
        Some(node) if is_etcd_member => Err(node_forbidden(
            name,
            format!(
                "node \"{node}\" is not allowed to delete node \"{name}\": it is an etcd member; \
                 only an administrator may remove a server node"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn nodes_delete_only_the_pods_bound_to_them() {
        let pods = &crate::registry::PODS;
        let n1 = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        let admin = user("admin", &["system:masters"]);
        let on = |node: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node}});
        assert!(admit_node_bound_delete(&n1, pods, &on("n1")).is_ok());
        let denied = admit_node_bound_delete(&n1, pods, &on("n2")).unwrap_err();
        assert!(
            denied.0.contains("can only delete pods bound to it"),
            "{}",
            denied.0
        );
        assert!(admit_node_bound_delete(&n1, pods, &json!({"metadata": {"name": "p"}})).is_err());
        assert!(admit_node_bound_delete(&admin, pods, &on("n2")).is_ok());
    }

    /// A node reads a Secret or ConfigMap only when a pod bound to it references it.
    #[test]
    fn nodes_read_only_the_secrets_and_config_maps_of_their_pods() {
        let secrets = &crate::registry::SECRETS;
        let cms = &crate::registry::CONFIGMAPS;
        let n1 = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        let get = |resource, name| Attributes {
            verb: "get",
            resource,
            subresource: None,
            namespace: Some("default"),
            name: Some(name),
        };
        let pods = vec![
            json!({"metadata": {"name": "p1", "namespace": "default"}, "spec": {"nodeName": "n1",
                "containers": [{"name": "c",
                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                    "envFrom": [{"secretRef": {"name": "from-secret"}}]}],
                "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [{"name": "v", "secret": {"secretName": "vol-secret"}},
                            {"name": "w", "configMap": {"name": "vol-cm"}},
                            {"name": "x", "projected": {"sources": [{"secret": {"name": "proj-secret"}}]}}]}}),
            json!({"metadata": {"name": "p2", "namespace": "default"}, "spec": {"nodeName": "n2",
                "volumes": [{"name": "v", "secret": {"secretName": "other-node"}}]}}),
            json!({"metadata": {"name": "p3", "namespace": "kube-system"}, "spec": {"nodeName": "n1",
                "volumes": [{"name": "v", "secret": {"secretName": "other-ns"}}]}}),
        ];
        for name in [
            "env-secret",
            "from-secret",
            "pull",
            "vol-secret",
            "proj-secret",
        ] {
            let a = get(secrets, name);
            assert!(authorize(&n1, &a).is_err(), "{name}: not readable at large");
            assert!(needs_node_reference(&n1, &a));
            assert!(admit_node_reference(&n1, &a, &pods).is_ok(), "{name}");
        }
        for name in ["env-cm", "init-cm", "vol-cm"] {
            assert!(
                admit_node_reference(&n1, &get(cms, name), &pods).is_ok(),
                "{name}"
            );
        }
        for name in ["other-node", "other-ns", "env-cm", "unreferenced"] {
            let e = admit_node_reference(&n1, &get(secrets, name), &pods).unwrap_err();
            assert_eq!(
                e.0,
                format!(
                    "secrets \"{name}\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
                )
            );
        }
        assert!(admit_node_reference(&n1, &get(cms, "env-secret"), &pods).is_err());
        // Lists and watches of these kinds stay forbidden for nodes; other users are not
        // subject to the graph at all.
        let list = Attributes {
            verb: "list",
            name: None,
            ..get(cms, "x")
        };
        assert!(authorize(&n1, &list).is_err());
        assert!(!needs_node_reference(&n1, &list));
        let admin = user("system:admin", &["system:masters"]);
        assert!(!needs_node_reference(&admin, &get(secrets, "x")));
    }

    #[test]
    fn node_restriction() {
        let nodes = lookup("", "v1", "nodes").unwrap();
        let leases = lookup("coordination.k8s.io", "v1", "leases").unwrap();
        let secrets = lookup("", "v1", "secrets").unwrap();
        let n1 = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        let a = |verb, resource, ns, name| Attributes {
            verb,
            resource,
            subresource: None,
            namespace: ns,
            name,
        };
        assert!(authorize(&n1, &a("patch", nodes, None, Some("n1"))).is_ok());
        let e = authorize(&n1, &a("patch", nodes, None, Some("n2"))).unwrap_err();
        assert!(
            e.0.contains("User \"system:node:n1\" cannot patch resource \"nodes\""),
            "{}",
            e.0
        );
        assert!(authorize(&n1, &a("list", nodes, None, None)).is_ok());
        assert!(
            authorize(
                &n1,
                &a("update", leases, Some("kube-node-lease"), Some("n1"))
            )
            .is_ok()
        );
        assert!(authorize(&n1, &a("update", leases, Some("default"), Some("n1"))).is_err());
        assert!(authorize(&n1, &a("get", secrets, Some("kube-system"), Some("x"))).is_err());
        let admin = user("system:admin", &["system:masters"]);
        assert!(
            authorize(
                &admin,
                &a("delete", secrets, Some("kube-system"), Some("x"))
            )
            .is_ok()
        );
        let nobody = user("bob", &["system:authenticated"]);
        assert!(authorize(&nobody, &a("list", nodes, None, None)).is_err());
    }

    fn node_user(name: &str) -> User {
        user(
            &format!("system:node:{name}"),
            &["system:nodes", "system:authenticated"],
        )
    }

    fn node(labels: Value, annotations: Value, taints: Value) -> Value {
        json!({"metadata": {"name": "a1", "labels": labels, "annotations": annotations},
               "spec": {"taints": taints}})
    }

    #[test]
    fn node_restriction_admission() {
        let a1 = node_user("a1");
        let old = node(
            json!({"kubernetes.io/hostname": "a1", "node-role.kubernetes.io/etcd": "true"}),
            json!({"rke2.io/hostname": "a1"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        // The attack: role label plus member annotation.
        let mut attack = old.clone();
        attack["metadata"]["labels"]["node-role.kubernetes.io/etcd"] = json!("false");
        attack["metadata"]["annotations"]["etcd.rke2.cattle.io/node-name"] = json!("s3-1234");
        let e = admit_node_write(&a1, Some(&old), &attack).unwrap_err();
        assert_eq!(
            e.0,
            "nodes \"a1\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/etcd"
        );
        let mut ann = old.clone();
        ann["metadata"]["annotations"]["etcd.rke2.cattle.io/node-name"] = json!("s3-1234");
        let e = admit_node_write(&a1, Some(&old), &ann).unwrap_err();
        assert!(
            e.0.ends_with("is not allowed to modify annotations: etcd.rke2.cattle.io/node-name"),
            "{}",
            e.0
        );
        // Removing a protected label is a modification too.
        let mut removed = old.clone();
        removed["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("node-role.kubernetes.io/etcd");
        assert!(admit_node_write(&a1, Some(&old), &removed).is_err());
        // Taints never change after registration.
        let mut tainted = old.clone();
        tainted["spec"]["taints"] = json!([]);
        let e = admit_node_write(&a1, Some(&old), &tainted).unwrap_err();
        assert!(e.0.ends_with("is not allowed to modify taints"), "{}", e.0);
        let mut cidr = old.clone();
        cidr["spec"]["podCIDR"] = json!("10.0.0.0/24");
        assert!(admit_node_write(&a1, Some(&old), &cidr).is_err());
        // Ordinary labels, annotations and unchanged protected keys are fine.
        let mut fine = old.clone();
        fine["metadata"]["labels"]["tier"] = json!("web");
        fine["metadata"]["annotations"]["rke2.io/internal-ip"] = json!("10.0.0.1");
        fine["status"] = json!({"conditions": []});
        assert!(admit_node_write(&a1, Some(&old), &fine).is_ok());
        // Registration: taints allowed, protected labels/annotations not.
        let fresh = node(json!({"tier": "web"}), json!({}), json!([{"key": "k"}]));
        assert!(admit_node_write(&a1, None, &fresh).is_ok());
        let bad = node(
            json!({"node-role.kubernetes.io/master": "true"}),
            json!({}),
            json!(null),
        );
        let e = admit_node_write(&a1, None, &bad).unwrap_err();
        assert_eq!(
            e.0,
            "nodes \"a1\" is forbidden: node \"a1\" is not allowed to set the following labels: node-role.kubernetes.io/master"
        );
        let bad = node(
            json!({}),
            json!({"etcd.rke2.cattle.io/node-address": "x"}),
            json!(null),
        );
        assert!(admit_node_write(&a1, None, &bad).is_err());
        // Admins are not restricted.
        let admin = user("system:admin", &["system:masters"]);
        assert!(admit_node_write(&admin, Some(&old), &attack).is_ok());
    }

    #[test]
    fn node_delete_admission() {
        let s1 = node_user("s1");
        let e = admit_node_delete(&s1, "s1", true).unwrap_err();
        assert!(e.0.starts_with("nodes \"s1\" is forbidden: "), "{}", e.0);
        assert!(admit_node_delete(&s1, "s1", false).is_ok());
        let admin = user("system:admin", &["system:masters"]);
        assert!(admit_node_delete(&admin, "s1", true).is_ok());
    }

    /// Whether `rules` grant `verb` on `resource` (group, plural or plural/sub) named `name`.
    fn granted(rules: &[Value], verb: &str, group: &str, resource: &str, name: &str) -> bool {
        let has = |v: &Value, key: &str, want: &str| {
            v[key]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == want || x == "*"))
        };
        rules.iter().any(|r| {
            has(r, "verbs", verb)
                && has(r, "apiGroups", group)
                && has(r, "resources", resource)
                && (r.get("resourceNames").is_none() || has(r, "resourceNames", name))
        })
    }

    /// The rules a SelfSubjectRulesReview reports are exactly what `authorize` allows, for
    /// every kind, verb, subresource and namespace, for an admin, a node and a plain user.
    #[test]
    fn nodes_read_pods_but_never_open_sessions_in_them() {
        let n = node_user("n1");
        let on = |verb, subresource| Attributes {
            verb,
            resource: &crate::registry::PODS,
            subresource,
            namespace: Some("default"),
            name: Some("p"),
        };
        assert!(authorize(&n, &on("get", None)).is_ok());
        for sub in SESSION_SUBRESOURCES {
            for verb in ["create", "get"] {
                let denied = authorize(&n, &on(verb, Some(sub))).unwrap_err();
                assert!(
                    denied
                        .0
                        .contains(&format!("cannot {verb} resource \"pods/{sub}\"")),
                    "{}",
                    denied.0
                );
            }
        }
        let admin = user("system:admin", &["system:masters"]);
        assert!(authorize(&admin, &on("create", Some("exec"))).is_ok());
    }

    #[test]
    fn rules_agree_with_the_authorizer() {
        let users = [
            user("system:admin", &["system:masters"]),
            node_user("n1"),
            user("jane", &["devs"]),
        ];
        for u in &users {
            for ns in ["default", "kube-node-lease"] {
                let (rules, non_resource) = rules(u, Some(ns));
                assert!(!non_resource.is_empty());
                for r in crate::registry::RESOURCES {
                    let subs = std::iter::once(None).chain(r.subresources.iter().map(|s| Some(*s)));
                    for sub in subs {
                        for verb in r.verbs {
                            for name in ["n1", "other"] {
                                let a = Attributes {
                                    verb: verb.as_str(),
                                    resource: r,
                                    subresource: sub,
                                    namespace: r.namespaced.then_some(ns),
                                    name: Some(name),
                                };
                                let resource = match sub {
                                    Some(s) => format!("{}/{s}", r.plural),
                                    None => r.plural.to_string(),
                                };
                                let allowed = authorize(u, &a).is_ok();
                                assert_eq!(
                                    granted(&rules, verb.as_str(), r.group, &resource, name),
                                    allowed,
                                    "{} {verb} {resource} {name} in {ns}",
                                    u.name
                                );
                            }
                        }
                    }
                }
            }
        }
        assert!(is_public_path("/apis/apps/v1") && is_public_path("/healthz/etcd"));
        assert!(!is_public_path("/metrics") && !is_public_path("/apiserver"));
    }
}
