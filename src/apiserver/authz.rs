//! Authentication and RBAC-lite authorization for the Kubernetes API. Identity comes from the
//! verified client certificate (user = CN, groups = O). `system:masters` may do anything;
//! nodes (`system:node:<name>` in `system:nodes`) may read cluster state and write only their
//! own Node and their own Lease in `kube-node-lease` (NodeRestriction); every authenticated user
//! may use discovery and the self-subject reviews; everything else is forbidden.

use crate::https::CertIdentity;
use crate::registry::{NodeAccess, ResourceInfo};

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
        let own = a.name == Some(node);
        let allowed = match r.node_access {
            // Nodes read everything they need except secrets.
            NodeAccess::Hidden => false,
            _ if READ_VERBS.contains(&a.verb) => true,
            NodeAccess::Read => false,
            NodeAccess::Own { namespace } => {
                (namespace.is_none() || a.namespace == namespace)
                    && matches!(a.verb, "create" | "update" | "patch" | "delete")
                    && own
            }
            NodeAccess::Write => matches!(a.verb, "create" | "update" | "patch"),
        };
        return if allowed {
            Ok(())
        } else {
            Err(denial(user, a))
        };
    }
    Err(denial(user, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
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
}
