//! Discovery documents: `/version`, aggregated discovery v2 (`/api`, `/apis`) and legacy discovery
//! (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`). Every document is generated from
//! [`resources::RESOURCES`], so adding a resource there is all it takes to make kubectl see it.
//! Pure functions: the HTTP layer picks the document and the content type.

use serde_json::{Map, Value, json};

use crate::registry::{self as resources, RESOURCES, ResourceInfo};

/// Content type of aggregated discovery v2. kubectl only treats a body as aggregated when the
/// response carries exactly this content type; with plain `application/json` it parses the
/// body as legacy discovery, finds no versions and fails.
pub const AGGREGATED_V2_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Content type of every other discovery document (and of `/version`).
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The Kubernetes minor version we claim. kubectl's dispatcher execs a different client binary
/// for other minors, so this must stay "32".
const KUBE_MAJOR: &str = "1";
const KUBE_MINOR: &str = "32";
const KUBE_PATCH: &str = "4";

/// `GET /version`.
///
/// `gitCommit` and `buildDate` come from the build environment (`RKE2_GIT_COMMIT`,
/// `RKE2_BUILD_DATE`) when the packager sets them; otherwise placeholders, because a pure
/// function must not look at the clock or the repository.
pub fn version_info() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!(
            "v{KUBE_MAJOR}.{KUBE_MINOR}.{KUBE_PATCH}+rke2rs{}",
            env!("CARGO_PKG_VERSION")
        ),
        "gitCommit": option_env!("RKE2_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": "clean",
        "buildDate": option_env!("RKE2_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
        "goVersion": "n/a",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, crate::host::arch()),
    })
}

/// One media range of an Accept header: `type/subtype` plus its parameters, names lower-cased.
struct MediaRange<'a> {
    essence: String,
    params: Vec<(String, &'a str)>,
}

impl MediaRange<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// `q=0` means "not acceptable" (RFC 9110 §12.4.2).
    fn refused(&self) -> bool {
        self.param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .is_some_and(|q| q <= 0.0)
    }
}

/// Splits an Accept header into media ranges. Parameter order is not significant, so callers
/// look parameters up by name instead of matching substrings.
fn media_ranges(accept: &str) -> impl Iterator<Item = MediaRange<'_>> {
    accept.split(',').filter_map(|range| {
        let mut parts = range.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        if essence.is_empty() {
            return None;
        }
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim().to_ascii_lowercase(), v.trim()))
            })
            .collect();
        Some(MediaRange { essence, params })
    })
}

/// Whether the client accepts a JSON body of `group`/`version`/`as` (the Kubernetes
/// "transformed" media types such as Table and APIGroupDiscoveryList).
pub(crate) fn accepts_transformed(accept: &str, group: &str, version: &str, as_kind: &str) -> bool {
    media_ranges(accept).any(|m| {
        m.essence == "application/json"
            && !m.refused()
            && m.param("g") == Some(group)
            && m.param("v") == Some(version)
            && m.param("as") == Some(as_kind)
    })
}

/// Whether `/api` or `/apis` should be answered with aggregated discovery v2.
///
/// Only v2 counts: a client that accepts just v2beta1 (kubectl <= 1.29) would not recognise a
/// v2 response, and legacy discovery always works for it.
pub fn wants_aggregated(accept: &str) -> bool {
    accepts_transformed(accept, "apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList")
}

/// The API versions of one group (core is `""`), in table order without duplicates.
fn versions_of(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Verbs served on a subresource. Only `status` exists today; the others are listed so that a
/// subresource added to the table gets the verbs the real apiserver advertises.
fn subresource_verbs(subresource: &str) -> &'static [&'static str] {
    match subresource {
        "status" | "scale" | "ephemeralcontainers" | "resize" => &["get", "patch", "update"],
        "eviction" | "binding" | "token" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" | "proxy" => &["create", "get"],
        _ => &["get"],
    }
}

/// Kind returned by a subresource: the parent kind, except for the few with their own type.
fn subresource_kind<'a>(info: &'a ResourceInfo, subresource: &str) -> &'a str {
    match subresource {
        "scale" => "Scale",
        "eviction" => "Eviction",
        "binding" => "Binding",
        "token" => "TokenRequest",
        "exec" | "attach" | "portforward" | "proxy" => "Status",
        "log" => "Pod",
        _ => info.kind,
    }
}

/// Group and version of a subresource whose kind lives in another group (pods/eviction,
/// deployments/scale).
fn subresource_group_version(subresource: &str) -> Option<(&'static str, &'static str)> {
    match subresource {
        "eviction" => Some(("policy", "v1")),
        "scale" => Some(("autoscaling", "v1")),
        _ => None,
    }
}

fn scope(info: &ResourceInfo) -> &'static str {
    if info.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// `responseKind`: kubectl drops a resource without it. Group and version are empty like the
/// real apiserver's, meaning "the same as the resource".
fn response_kind(kind: &str) -> Value {
    json!({"group": "", "version": "", "kind": kind})
}

/// One `APIResourceDiscovery` of aggregated discovery.
fn aggregated_resource(info: &ResourceInfo) -> Value {
    let mut r = Map::new();
    r.insert("resource".into(), info.plural.into());
    r.insert("responseKind".into(), response_kind(info.kind));
    r.insert("scope".into(), scope(info).into());
    r.insert("singularResource".into(), info.singular.into());
    r.insert("verbs".into(), json!(info.verbs));
    // Empty lists are omitted like Go's `omitempty` does.
    if !info.short_names.is_empty() {
        r.insert("shortNames".into(), json!(info.short_names));
    }
    if !info.categories.is_empty() {
        r.insert("categories".into(), json!(info.categories));
    }
    if !info.subresources.is_empty() {
        let subs: Vec<Value> = info
            .subresources
            .iter()
            .map(|s| {
                let mut kind = response_kind(subresource_kind(info, s));
                if let Some((group, version)) = subresource_group_version(s) {
                    kind["group"] = group.into();
                    kind["version"] = version.into();
                }
                json!({
                    "subresource": s,
                    "responseKind": kind,
                    "verbs": subresource_verbs(s),
                })
            })
            .collect();
        r.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(r)
}

/// One `APIGroupDiscovery` item: a group with all its versions.
fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = versions_of(group)
        .into_iter()
        .map(|v| {
            let resources: Vec<Value> = resources::in_group_version(group, v)
                .into_iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    // The item metadata is required by kubectl even for core, whose name is empty and omitted.
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

fn aggregated_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `GET /api` as aggregated discovery v2 (send with [`AGGREGATED_V2_CONTENT_TYPE`]).
pub fn aggregated_core() -> Value {
    aggregated_list(vec![aggregated_group("")])
}

/// `GET /apis` as aggregated discovery v2 (send with [`AGGREGATED_V2_CONTENT_TYPE`]).
pub fn aggregated_groups() -> Value {
    aggregated_list(
        resources::groups()
            .into_iter()
            .map(aggregated_group)
            .collect(),
    )
}

/// `GET /api` in legacy form. `server_address` is `host:port` as clients should reach us.
pub fn legacy_api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": versions_of(""),
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

/// The `name`/`versions`/`preferredVersion` body shared by `APIGroup` and `APIGroupList` items.
fn group_body(group: &str) -> Map<String, Value> {
    let versions: Vec<Value> = versions_of(group)
        .into_iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    let mut body = Map::new();
    body.insert("name".into(), group.into());
    // The first version listed is the preferred one, as in the table.
    if let Some(preferred) = versions.first().cloned() {
        body.insert("preferredVersion".into(), preferred);
    }
    body.insert("versions".into(), Value::Array(versions));
    body
}

/// `GET /apis` in legacy form.
pub fn legacy_group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|g| Value::Object(group_body(g)))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`; `None` for core or a group we do not serve.
pub fn api_group(group: &str) -> Option<Value> {
    if group.is_empty() || !resources::groups().contains(&group) {
        return None;
    }
    let mut body = group_body(group);
    body.insert("kind".into(), "APIGroup".into());
    body.insert("apiVersion".into(), "v1".into());
    Some(Value::Object(body))
}

/// One legacy `APIResource`, for a resource (`subresource == None`) or one of its subresources.
fn legacy_resource(info: &ResourceInfo, subresource: Option<&str>) -> Value {
    let mut r = Map::new();
    match subresource {
        None => {
            r.insert("name".into(), info.plural.into());
            r.insert("singularName".into(), info.singular.into());
            r.insert("namespaced".into(), info.namespaced.into());
            r.insert("kind".into(), info.kind.into());
            r.insert("verbs".into(), json!(info.verbs));
            if !info.short_names.is_empty() {
                r.insert("shortNames".into(), json!(info.short_names));
            }
            if !info.categories.is_empty() {
                r.insert("categories".into(), json!(info.categories));
            }
        }
        Some(s) => {
            // Subresources have an empty singularName in the real apiserver's documents.
            r.insert("name".into(), format!("{}/{s}", info.plural).into());
            r.insert("singularName".into(), "".into());
            r.insert("namespaced".into(), info.namespaced.into());
            r.insert("kind".into(), subresource_kind(info, s).into());
            r.insert("verbs".into(), json!(subresource_verbs(s)));
            // kubectl drain finds the Eviction API version here.
            if let Some((group, version)) = subresource_group_version(s) {
                r.insert("group".into(), group.into());
                r.insert("version".into(), version.into());
            }
        }
    }
    Value::Object(r)
}

/// `GET /api/v1` (group `""`) or `GET /apis/<group>/<version>`; `None` when nothing is served
/// there. Subresources appear as separate `plural/sub` entries, as kubectl expects.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let infos = resources::in_group_version(group, version);
    if infos.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for info in infos {
        list.push(legacy_resource(info, None));
        for s in info.subresources {
            list.push(legacy_resource(info, Some(s)));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": list,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_DISCOVERY_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    fn find_resource<'a>(list: &'a Value, version_idx: usize, name: &str) -> &'a Value {
        list["items"][version_idx]["versions"][0]["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["resource"] == name))
            .unwrap_or_else(|| panic!("resource {name} missing"))
    }

    #[test]
    fn version_claims_1_32_for_the_dispatcher() {
        let v = version_info();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "32");
        let git = v["gitVersion"].as_str().unwrap();
        assert!(git.starts_with("v1.32."), "{git}");
        assert!(git.ends_with(env!("CARGO_PKG_VERSION")), "{git}");
        assert_eq!(v["compiler"], "rustc");
        assert_eq!(v["gitTreeState"], "clean");
        let platform = v["platform"].as_str().unwrap();
        assert!(platform.starts_with("linux/"), "{platform}");
        assert!(!platform.contains("x86_64"), "{platform}");
    }

    #[test]
    fn aggregated_negotiation() {
        assert!(wants_aggregated(KUBECTL_DISCOVERY_ACCEPT));
        // Parameter order and whitespace do not matter.
        assert!(wants_aggregated(
            "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(!wants_aggregated(""));
        // v2beta1 only: answer legacy, which such a client understands.
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        // q=0 refuses the range.
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0,application/json"
        ));
        // The "as" must be the list kind, not a Table.
        assert!(!wants_aggregated(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
    }

    #[test]
    fn aggregated_core_has_what_kubectl_requires() {
        let d = aggregated_core();
        assert_eq!(d["kind"], "APIGroupDiscoveryList");
        assert_eq!(d["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(d["metadata"], json!({}));
        let items = d["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"], json!({"creationTimestamp": null}));
        assert_eq!(items[0]["versions"][0]["version"], "v1");
        assert_eq!(items[0]["versions"][0]["freshness"], "Current");

        let nodes = find_resource(&d, 0, "nodes");
        assert_eq!(
            nodes,
            &json!({
                "resource": "nodes",
                "responseKind": {"group": "", "version": "", "kind": "Node"},
                "scope": "Cluster",
                "singularResource": "node",
                "shortNames": ["no"],
                "verbs": ["create","delete","deletecollection","get","list","patch","update","watch"],
                "subresources": [{
                    "subresource": "status",
                    "responseKind": {"group": "", "version": "", "kind": "Node"},
                    "verbs": ["get", "patch", "update"],
                }],
            })
        );
        let pods = find_resource(&d, 0, "pods");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(
            find_resource(&d, 0, "namespaces")["shortNames"],
            json!(["ns"])
        );
        assert_eq!(find_resource(&d, 0, "events")["shortNames"], json!(["ev"]));
        // No empty lists are sent.
        let secrets = find_resource(&d, 0, "secrets");
        assert!(secrets.get("shortNames").is_none());
        assert!(secrets.get("subresources").is_none());
        assert!(secrets.get("categories").is_none());
    }

    #[test]
    fn every_resource_appears_exactly_once_in_aggregated_discovery() {
        let core = aggregated_core();
        let groups = aggregated_groups();
        for info in RESOURCES {
            let doc = if info.group.is_empty() {
                &core
            } else {
                &groups
            };
            let hits: usize = doc["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|item| item["metadata"]["name"].as_str().unwrap_or("") == info.group)
                .flat_map(|item| item["versions"].as_array().unwrap().iter())
                .filter(|v| v["version"] == info.version)
                .flat_map(|v| v["resources"].as_array().unwrap().iter())
                .filter(|r| r["resource"] == info.plural)
                .count();
            assert_eq!(hits, 1, "{}", info.qualified_name());
        }
    }

    #[test]
    fn aggregated_groups_name_every_group() {
        let d = aggregated_groups();
        let items = d["items"].as_array().unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, resources::groups());
        let coord = items
            .iter()
            .find(|i| i["metadata"]["name"] == "coordination.k8s.io")
            .unwrap();
        assert_eq!(coord["metadata"]["creationTimestamp"], Value::Null);
        let lease = &coord["versions"][0]["resources"][0];
        assert_eq!(lease["resource"], "leases");
        assert_eq!(lease["scope"], "Namespaced");
        assert_eq!(lease["singularResource"], "lease");
        assert_eq!(lease["responseKind"]["kind"], "Lease");
        let ssar = items
            .iter()
            .find(|i| i["metadata"]["name"] == "authorization.k8s.io")
            .unwrap();
        assert_eq!(
            ssar["versions"][0]["resources"][0]["verbs"],
            json!(["create"])
        );
        assert_eq!(ssar["versions"][0]["resources"][0]["scope"], "Cluster");
    }

    #[test]
    fn legacy_documents() {
        assert_eq!(
            legacy_api_versions("127.0.0.1:6443"),
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
            })
        );
        let list = legacy_group_list();
        assert_eq!(list["kind"], "APIGroupList");
        assert_eq!(list["apiVersion"], "v1");
        let coord = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "coordination.k8s.io")
            .unwrap();
        let gv = json!({"groupVersion": "coordination.k8s.io/v1", "version": "v1"});
        assert_eq!(coord["versions"], json!([gv.clone()]));
        assert_eq!(coord["preferredVersion"], gv);
        assert_eq!(
            list["groups"].as_array().unwrap().len(),
            resources::groups().len()
        );
    }

    #[test]
    fn api_group_document() {
        let g = api_group("coordination.k8s.io").unwrap();
        assert_eq!(g["kind"], "APIGroup");
        assert_eq!(g["apiVersion"], "v1");
        assert_eq!(g["name"], "coordination.k8s.io");
        assert_eq!(
            g["preferredVersion"]["groupVersion"],
            "coordination.k8s.io/v1"
        );
        assert!(api_group("").is_none());
        assert!(api_group("networking.k8s.io").is_none());
        assert_eq!(
            api_group("apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
    }

    #[test]
    fn core_resource_list_has_subresource_entries() {
        let l = api_resource_list("", "v1").unwrap();
        assert_eq!(l["kind"], "APIResourceList");
        assert_eq!(l["apiVersion"], "v1");
        assert_eq!(l["groupVersion"], "v1");
        let rs = l["resources"].as_array().unwrap();
        let nodes = rs.iter().find(|r| r["name"] == "nodes").unwrap();
        assert_eq!(
            nodes,
            &json!({
                "name": "nodes",
                "singularName": "node",
                "namespaced": false,
                "kind": "Node",
                "verbs": ["create","delete","deletecollection","get","list","patch","update","watch"],
                "shortNames": ["no"],
            })
        );
        let status = rs.iter().find(|r| r["name"] == "nodes/status").unwrap();
        assert_eq!(
            status,
            &json!({
                "name": "nodes/status",
                "singularName": "",
                "namespaced": false,
                "kind": "Node",
                "verbs": ["get", "patch", "update"],
            })
        );
        assert!(rs.iter().any(|r| r["name"] == "pods/status"));
        assert_eq!(
            rs.iter().find(|r| r["name"] == "pods").unwrap()["categories"],
            json!(["all"])
        );
        // Exactly one entry per resource plus one per subresource.
        let expected: usize = resources::in_group_version("", "v1")
            .iter()
            .map(|r| 1 + r.subresources.len())
            .sum();
        assert_eq!(rs.len(), expected);
    }

    #[test]
    fn group_resource_lists() {
        let l = api_resource_list("coordination.k8s.io", "v1").unwrap();
        assert_eq!(l["groupVersion"], "coordination.k8s.io/v1");
        assert_eq!(l["resources"][0]["name"], "leases");
        assert_eq!(l["resources"][0]["namespaced"], true);
        let a = api_resource_list("authorization.k8s.io", "v1").unwrap();
        assert_eq!(a["resources"][0]["verbs"], json!(["create"]));
        assert!(api_resource_list("", "v2").is_none());
        assert!(api_resource_list("networking.k8s.io", "v1").is_none());
    }

    /// kubectl drain posts evictions only when discovery names the Eviction's group/version.
    #[test]
    fn pods_eviction_names_policy_v1() {
        let list = api_resource_list("", "v1").unwrap();
        let eviction = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .expect("pods/eviction is listed");
        assert_eq!(eviction["kind"], "Eviction");
        assert_eq!(
            (eviction["group"].as_str(), eviction["version"].as_str()),
            (Some("policy"), Some("v1"))
        );
        assert_eq!(eviction["verbs"], json!(["create"]));
        let binding = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/binding")
            .unwrap();
        assert_eq!(binding["kind"], "Binding");
        assert!(binding.get("group").is_none());
    }
}
