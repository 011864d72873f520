//! Server-side Table rendering (`meta.k8s.io/v1` `Table`) for `kubectl get`: content
//! negotiation and the Table envelope. The columns and cells of each kind come from its
//! registry declaration (`ResourceInfo::printer`), which follows the real apiserver's printers.
//! kubectl prints the column names upper-cased and the cells verbatim, so every string there is
//! user-visible output.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::discovery::accepts_transformed;
use crate::registry::ResourceInfo;
pub use crate::registry::print::human_duration;

/// Content type of a Table response (and of each event of a Table watch).
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Whether the client asked for a `meta.k8s.io/v1` Table. kubectl's `get` sends
/// `application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json`.
pub fn wants_table(accept: &str) -> bool {
    accepts_transformed(accept, "meta.k8s.io", "v1", "Table")
}

pub fn column_definitions(info: &ResourceInfo) -> Value {
    Value::Array(
        info.printer
            .columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.kind,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// One Table row: the cells plus the object's metadata as `PartialObjectMetadata` (what the
/// apiserver sends by default; kubectl needs it for `--show-labels` and `-L`).
pub fn row(info: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Value {
    let printer = &info.printer;
    let mut r = Map::new();
    r.insert("cells".into(), Value::Array((printer.cells)(obj, now)));
    if let Some(c) = (printer.conditions)(obj) {
        r.insert("conditions".into(), c);
    }
    r.insert(
        "object".into(),
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    );
    Value::Object(r)
}

/// A `meta.k8s.io/v1` Table of `objects` (all of kind `info`). `list_resource_version` is the
/// list's (or, for a single GET or a watch event, the object's) resourceVersion; kubectl starts
/// `get -w` from it. For a watch event pass one object and `None`.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_resource_version: &str,
    continue_token: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    let mut metadata = Map::new();
    // ListMeta fields are `omitempty` upstream.
    if !list_resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), list_resource_version.into());
    }
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        metadata.insert("continue".into(), c.into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(info),
        "rows": objects.iter().map(|o| row(info, o, now)).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------------
// Field access. Everything tolerates missing or mistyped fields, rendering Go's zero values.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{RESOURCES, lookup};
    use chrono::Duration;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        lookup(group, "v1", plural).unwrap()
    }

    fn cells(group: &str, plural: &str, obj: &Value) -> Vec<Value> {
        row(info(group, plural), obj, now())["cells"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// A Node as our agent registers it, five days old.
    fn node_fixture() -> Value {
        json!({
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": "n1",
                "uid": "5c1f8a2e-0d4b-4c57-9f3e-2a6b1f0c9d11",
                "resourceVersion": "1001",
                "creationTimestamp": "2026-11-23T12:00:00Z",
                "labels": {
                    "beta.kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": "n1",
                    "kubernetes.io/os": "linux",
                    "node-role.kubernetes.io/control-plane": "true",
                    "node-role.kubernetes.io/etcd": "true",
                    "node-role.kubernetes.io/master": "true"
                },
                "annotations": {"rke2.io/node-args": "[\"server\"]"}
            },
            "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                     "lastHeartbeatTime": "2026-11-28T11:59:50Z", "lastTransitionTime": "2026-11-23T12:00:00Z"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady",
                     "message": "kubelet is posting ready status",
                     "lastHeartbeatTime": "2026-11-28T11:59:50Z", "lastTransitionTime": "2026-11-23T12:00:10Z"}
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "10.0.0.11"},
                    {"type": "Hostname", "address": "n1"}
                ],
                "nodeInfo": {
                    "machineID": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "systemUUID": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                    "bootID": "b0a1c2d3-e4f5-0617-2839-4a5b6c7d8e9f",
                    "kernelVersion": "6.1.0-18-amd64",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "kubeletVersion": "v1.32.4+rke2r1",
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64"
                }
            }
        })
    }

    #[test]
    fn human_duration_matches_upstream() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (5 * 60 + 12, "5m12s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60, "10m"),
            (10 * 60 + 30, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 10 * 60, "5h10m"),
            (7 * 3600 + 59 * 60 + 59, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (400 * 86400, "400d"),
            (729 * 86400 + 23 * 3600, "729d"),
            (730 * 86400, "2y"),
            (760 * 86400, "2y30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400 + 100 * 86400, "20y"),
        ];
        for &(secs, want) in cases {
            assert_eq!(human_duration(Duration::seconds(secs)), want, "{secs}s");
        }
        // Sub-second parts truncate toward zero, as Go's int(d.Seconds()).
        assert_eq!(human_duration(Duration::milliseconds(-1900)), "0s");
        assert_eq!(human_duration(Duration::milliseconds(-2100)), "<invalid>");
        assert_eq!(human_duration(Duration::milliseconds(119_999)), "119s");
        assert_eq!(human_duration(Duration::milliseconds(1500)), "1s");
    }

    #[test]
    fn table_negotiation() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(wants_table(
            "application/json; g=meta.k8s.io; v=v1; as=Table"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table("application/json, */*"));
        assert!(!wants_table(
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        // We only produce JSON Tables.
        assert!(!wants_table(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io"
        ));
    }

    #[test]
    fn node_table_matches_the_real_apiserver() {
        let node = node_fixture();
        let t = table(
            info("", "nodes"),
            std::slice::from_ref(&node),
            "1010",
            None,
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "1010"}));
        let cols: Vec<(&str, u64)> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("Name", 0),
                ("Status", 0),
                ("Roles", 0),
                ("Age", 0),
                ("Version", 0),
                ("Internal-IP", 1),
                ("External-IP", 1),
                ("OS-Image", 1),
                ("Kernel-Version", 1),
                ("Container-Runtime", 1),
            ]
        );
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(t["columnDefinitions"][1]["format"], "");
        assert_eq!(t["columnDefinitions"][0]["type"], "string");
        let row = &t["rows"][0];
        assert_eq!(
            row["cells"],
            json!([
                "n1",
                "Ready",
                "control-plane,etcd,master",
                "5d",
                "v1.32.4+rke2r1",
                "10.0.0.11",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "containerd://1.7.24"
            ])
        );
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(row["object"]["metadata"], node["metadata"]);
        assert!(row.get("conditions").is_none());
    }

    #[test]
    fn node_status_column() {
        let status = |n: &Value| cells("", "nodes", n)[1].clone();
        let mut n = node_fixture();
        n["spec"]["unschedulable"] = json!(true);
        assert_eq!(status(&n), "Ready,SchedulingDisabled");
        n["status"]["conditions"][1]["status"] = json!("False");
        assert_eq!(status(&n), "NotReady,SchedulingDisabled");
        n["spec"]["unschedulable"] = json!(false);
        // Upstream prints NotReady for any status but True, including Unknown.
        n["status"]["conditions"][1]["status"] = json!("Unknown");
        assert_eq!(status(&n), "NotReady");
        n["status"]["conditions"] = json!([{"type": "MemoryPressure", "status": "False"}]);
        assert_eq!(status(&n), "Unknown");
        n["status"] = json!(null);
        assert_eq!(status(&n), "Unknown");
    }

    #[test]
    fn node_roles_and_placeholders() {
        let mut n = node_fixture();
        n["metadata"]["labels"] = json!({
            "kubernetes.io/role": "worker",
            "node-role.kubernetes.io/": "",
            "node-role.kubernetes.io/etcd": "",
            "node-role.kubernetes.io/worker": "true"
        });
        assert_eq!(cells("", "nodes", &n)[2], "etcd,worker");
        n["metadata"]["labels"] = json!({"kubernetes.io/role": ""});
        assert_eq!(cells("", "nodes", &n)[2], "<none>");

        // A bare node: every placeholder of upstream.
        let bare = json!({"metadata": {"name": "bare"}});
        assert_eq!(
            cells("", "nodes", &bare),
            vec![
                json!("bare"),
                json!("Unknown"),
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>"),
            ]
        );

        let mut ext = node_fixture();
        ext["status"]["addresses"] = json!([
            {"type": "ExternalIP", "address": "203.0.113.7"},
            {"type": "InternalIP", "address": "10.0.0.12"},
            {"type": "InternalIP", "address": "10.0.0.13"}
        ]);
        let c = cells("", "nodes", &ext);
        assert_eq!(c[5], "10.0.0.12");
        assert_eq!(c[6], "203.0.113.7");
    }

    #[test]
    fn age_column_edge_cases() {
        let mut n = node_fixture();
        n["metadata"]["creationTimestamp"] = json!("2026-11-28T11:59:15Z");
        assert_eq!(cells("", "nodes", &n)[3], "45s");
        n["metadata"]["creationTimestamp"] = json!("2026-11-28T12:00:01Z");
        assert_eq!(cells("", "nodes", &n)[3], "0s");
        n["metadata"]["creationTimestamp"] = json!("2026-11-28T12:05:00Z");
        assert_eq!(cells("", "nodes", &n)[3], "<invalid>");
        n["metadata"]["creationTimestamp"] = json!("not a time");
        assert_eq!(cells("", "nodes", &n)[3], "<unknown>");
        n["metadata"]["creationTimestamp"] = json!(null);
        assert_eq!(cells("", "nodes", &n)[3], "<unknown>");
        n["metadata"]["creationTimestamp"] = json!("0001-01-01T00:00:00Z");
        assert_eq!(cells("", "nodes", &n)[3], "<unknown>");
    }

    #[test]
    fn namespace_and_lease_tables() {
        let ns = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": "kube-node-lease", "uid": "a1", "resourceVersion": "12",
                         "creationTimestamp": "2026-11-28T09:00:00Z",
                         "labels": {"kubernetes.io/metadata.name": "kube-node-lease"}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        });
        let t = table(info("", "namespaces"), &[ns], "40", None, now());
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Status", "Age"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["kube-node-lease", "Active", "3h"])
        );

        let lease = json!({
            "kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
            "metadata": {"name": "n1", "namespace": "kube-node-lease", "uid": "b2",
                         "resourceVersion": "1009", "creationTimestamp": "2026-11-28T11:55:00Z",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1",
                                              "uid": "5c1f8a2e-0d4b-4c57-9f3e-2a6b1f0c9d11"}]},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                     "renewTime": "2026-11-28T11:59:58.123456Z"}
        });
        let leases = info("coordination.k8s.io", "leases");
        let t = table(leases, &[lease], "1009", Some("tok"), now());
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Holder", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["n1", "n1", "5m"]));
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "1009", "continue": "tok"})
        );
        let unheld = json!({"metadata": {"name": "x", "creationTimestamp": "2026-11-28T11:59:00Z"}, "spec": {}});
        assert_eq!(
            cells("coordination.k8s.io", "leases", &unheld),
            vec![json!("x"), json!(""), json!("60s")]
        );
    }

    #[test]
    fn empty_list_and_metadata_omission() {
        let t = table(info("", "nodes"), &[], "", Some(""), now());
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 10);
        // An object without metadata still yields a well-formed row.
        let r = row(info("", "namespaces"), &json!({}), now());
        assert_eq!(r["object"]["metadata"], json!({}));
        assert_eq!(r["cells"], json!(["", "", "<unknown>"]));
    }

    #[test]
    fn secret_and_configmap_count_keys() {
        let secret = json!({
            "metadata": {"name": "n1.node-password.rke2", "namespace": "kube-system",
                         "creationTimestamp": "2026-11-26T12:00:00Z"},
            "type": "rke2.io/node-password",
            "immutable": true,
            "data": {"hash": "JGMkc2NyeXB0"}
        });
        assert_eq!(
            cells("", "secrets", &secret),
            vec![
                json!("n1.node-password.rke2"),
                json!("rke2.io/node-password"),
                json!(1),
                json!("2d")
            ]
        );
        let cm = json!({
            "metadata": {"name": "kube-root-ca.crt", "creationTimestamp": "2026-11-28T11:00:00Z"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"},
            "binaryData": {"blob": "AAEC", "other": "AA=="}
        });
        assert_eq!(
            cells("", "configmaps", &cm),
            vec![json!("kube-root-ca.crt"), json!(3), json!("60m")]
        );
        let empty = json!({"metadata": {"name": "e"}});
        assert_eq!(cells("", "configmaps", &empty)[1], json!(0));
        assert_eq!(cells("", "secrets", &empty)[1], json!(""));
    }

    #[test]
    fn endpoints_formatting() {
        let ep = |subsets: Value| json!({"metadata": {"name": "kubernetes"}, "subsets": subsets});
        assert_eq!(cells("", "endpoints", &ep(json!([])))[1], "<none>");
        assert_eq!(
            cells("", "endpoints", &json!({"metadata": {}}))[1],
            "<none>"
        );
        let one = ep(json!([{
            "addresses": [{"ip": "10.0.0.11"}, {"ip": "10.0.0.12"}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
        }]));
        assert_eq!(
            cells("", "endpoints", &one)[1],
            "10.0.0.11:6443,10.0.0.12:6443"
        );
        let many = ep(json!([{
            "addresses": [{"ip": "10.0.0.11"}, {"ip": "10.0.0.12"}, {"ip": "fd00::13"}],
            "ports": [{"port": 6443}, {"port": 9345}]
        }]));
        assert_eq!(
            cells("", "endpoints", &many)[1],
            "10.0.0.11:6443,10.0.0.12:6443,[fd00::13]:6443 + 3 more..."
        );
        let headless = ep(json!([{"addresses": [{"ip": "10.42.0.5"}]}]));
        assert_eq!(cells("", "endpoints", &headless)[1], "10.42.0.5");
        // Subsets without addresses print nothing, like upstream.
        let not_ready =
            ep(json!([{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}]));
        assert_eq!(cells("", "endpoints", &not_ready)[1], "");
    }

    #[test]
    fn service_formatting() {
        let svc = json!({
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "creationTimestamp": "2026-11-25T12:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        });
        assert_eq!(
            cells("", "services", &svc),
            vec![
                json!("kubernetes"),
                json!("ClusterIP"),
                json!("10.43.0.1"),
                json!("<none>"),
                json!("443/TCP"),
                json!("3d"),
                json!("<none>"),
            ]
        );
        let lb = json!({
            "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.5.5",
                     "externalIPs": ["198.51.100.9"],
                     "selector": {"app": "web", "tier": "front"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                               {"port": 53, "protocol": "UDP"}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "203.0.113.5"}]}}
        });
        let c = cells("", "services", &lb);
        assert_eq!(c[1], "LoadBalancer");
        assert_eq!(c[2], "10.43.5.5");
        assert_eq!(c[3], "203.0.113.5,lb.example.com,198.51.100.9");
        assert_eq!(c[4], "80:30080/TCP,53/UDP");
        assert_eq!(c[5], "<unknown>");
        assert_eq!(c[6], "app=web,tier=front");
        let pending = json!({"metadata": {"name": "p"}, "spec": {"type": "LoadBalancer"}});
        let c = cells("", "services", &pending);
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "<none>");
        let ext = json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(cells("", "services", &ext)[3], "db.example.com");
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"], "externalIPs": ["1.2.3.4", "5.6.7.8"]}});
        let c = cells("", "services", &headless);
        assert_eq!(c[1], "ClusterIP");
        assert_eq!(c[2], "None");
        assert_eq!(c[3], "1.2.3.4,5.6.7.8");
    }

    #[test]
    fn event_formatting() {
        let ev = json!({
            "metadata": {"name": "n1.17f3a", "namespace": "default",
                         "creationTimestamp": "2026-11-28T11:50:00Z"},
            "involvedObject": {"kind": "Node", "name": "n1", "uid": "n1"},
            "reason": "NodeReady", "type": "Normal",
            "message": "Node n1 status is now: NodeReady\n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-11-28T11:50:00Z",
            "lastTimestamp": "2026-11-28T11:58:00Z",
            "count": 3
        });
        let t = table(info("", "events"), &[ev], "5", None, now());
        let cols: Vec<(&str, u64)> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1),
            ]
        );
        assert_eq!(t["columnDefinitions"][9]["format"], "name");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "2m",
                "Normal",
                "NodeReady",
                "node/n1",
                "",
                "kubelet, n1",
                "Node n1 status is now: NodeReady",
                "10m",
                3,
                "n1.17f3a"
            ])
        );

        // New-style event: eventTime, series, reporting fields, no involved name.
        let new = json!({
            "metadata": {"name": "e2"},
            "involvedObject": {"kind": "Namespace"},
            "eventTime": "2026-11-28T11:00:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2026-11-28T11:59:00.000000Z"},
            "reportingComponent": "rke2-controller", "reportingInstance": "s1",
            "reason": "Sync", "type": "Normal", "message": "ok"
        });
        let c = cells("", "events", &new);
        assert_eq!(c[0], "60s");
        assert_eq!(c[3], "namespace");
        assert_eq!(c[5], "rke2-controller, s1");
        assert_eq!(c[7], "60m");
        assert_eq!(c[8], json!(7));
        // No timestamps at all, no count.
        let bare = json!({"metadata": {"name": "e3"}, "source": {"component": "x"}});
        let c = cells("", "events", &bare);
        assert_eq!(c[0], "<unknown>");
        assert_eq!(c[5], "x");
        assert_eq!(c[7], "<unknown>");
        assert_eq!(c[8], json!(1));
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web-0", "namespace": "default",
                         "creationTimestamp": "2026-11-28T11:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}, {"name": "log"}]},
            "status": status
        })
    }

    #[test]
    fn pod_running_and_restarts() {
        let p = pod(json!({
            "phase": "Running",
            "podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}, {"ip": "fd00::7"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 2,
                 "state": {"running": {"startedAt": "2026-11-28T11:50:00Z"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-28T11:49:00Z"}}},
                {"name": "log", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": "2026-11-28T11:00:05Z"}}}
            ]
        }));
        let t = table(info("", "pods"), &[p], "9", None, now());
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web-0",
                "2/2",
                "Running",
                "2 (11m ago)",
                "60m",
                "10.42.0.7",
                "n1",
                "<none>",
                "<none>"
            ])
        );
    }

    #[test]
    fn pod_status_reasons() {
        let status = |s: Value| cells("", "pods", &pod(s))[2].clone();
        assert_eq!(status(json!({"phase": "Pending"})), "Pending");
        assert_eq!(
            status(json!({"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]})),
            "SchedulingGated"
        );
        assert_eq!(
            status(json!({"phase": "Pending", "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]})),
            "ImagePullBackOff"
        );
        assert_eq!(
            status(json!({"phase": "Running", "containerStatuses": [
                {"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]})),
            "Signal:9"
        );
        assert_eq!(
            status(json!({"phase": "Running", "containerStatuses": [
                {"name": "app", "state": {"terminated": {"exitCode": 3}}}]})),
            "ExitCode:3"
        );
        // Completed container next to a running one.
        assert_eq!(
            status(
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                {"name": "app", "ready": true, "state": {"running": {}}},
                {"name": "log", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]})
            ),
            "NotReady"
        );
        assert_eq!(
            status(json!({"phase": "Running", "reason": "Evicted"})),
            "Evicted"
        );
        let mut deleting = pod(json!({"phase": "Running"}));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-28T11:59:00Z");
        assert_eq!(cells("", "pods", &deleting)[2], "Terminating");
        deleting["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells("", "pods", &deleting)[2], "Unknown");
        deleting["status"] = json!({"phase": "Succeeded"});
        assert_eq!(cells("", "pods", &deleting)[2], "Succeeded");
    }

    #[test]
    fn pod_init_containers() {
        let mut p = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "init-a", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                {"name": "init-b", "restartCount": 1, "state": {"running": {}}}
            ],
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]
        }));
        p["spec"]["initContainers"] = json!([{"name": "init-a"}, {"name": "init-b"}]);
        let c = cells("", "pods", &p);
        assert_eq!(c[1], "0/2");
        assert_eq!(c[2], "Init:1/2");
        assert_eq!(c[3], "1");
        p["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(cells("", "pods", &p)[2], "Init:CrashLoopBackOff");
        p["status"]["initContainerStatuses"][1]["state"] =
            json!({"terminated": {"exitCode": 2, "reason": "Error"}});
        assert_eq!(cells("", "pods", &p)[2], "Init:Error");

        // A started sidecar counts towards READY and TOTAL.
        let mut s = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [
                {"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}
            ],
            "containerStatuses": [
                {"name": "app", "ready": true, "state": {"running": {}}},
                {"name": "log", "ready": false, "state": {"running": {}}}
            ]
        }));
        s["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
        let c = cells("", "pods", &s);
        assert_eq!(c[1], "2/3");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1");
    }

    #[test]
    fn pod_wide_columns_and_conditions() {
        let mut p = pod(json!({"phase": "Succeeded", "nominatedNodeName": "n2",
            "conditions": [{"type": "www.example.com/gate", "status": "True"}]}));
        p["spec"]["readinessGates"] = json!([
            {"conditionType": "www.example.com/gate"},
            {"conditionType": "www.example.com/other"}
        ]);
        p["spec"]["nodeName"] = json!("");
        let r = row(info("", "pods"), &p, now());
        let c = r["cells"].as_array().unwrap();
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "<none>");
        assert_eq!(c[7], "n2");
        assert_eq!(c[8], "1/2");
        assert_eq!(
            r["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                    "message": "The pod has completed successfully."}])
        );
        p["status"]["phase"] = json!("Failed");
        let r = row(info("", "pods"), &p, now());
        assert_eq!(r["conditions"][0]["reason"], "Failed");
    }

    #[test]
    fn generic_table_is_the_default_convertor() {
        let ssar = RESOURCES
            .iter()
            .find(|r| r.kind == "SelfSubjectAccessReview")
            .unwrap();
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2026-11-28T11:00:00.5Z"}});
        let t = table(ssar, &[obj], "", None, now());
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][1]["name"], "Created At");
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(t["rows"][0]["cells"], json!(["x", "2026-11-28T11:00:00Z"]));
        let bare = row(ssar, &json!({}), now());
        assert_eq!(bare["cells"], json!(["", "0001-01-01T00:00:00Z"]));
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        // A spread of objects, from empty to populated, for every resource we serve.
        let objects = [
            json!({}),
            json!({"metadata": {"name": "a"}, "spec": null, "status": "garbage"}),
            node_fixture(),
            pod(json!({"phase": "Running"})),
        ];
        for info in RESOURCES {
            let columns = column_definitions(info).as_array().unwrap().len();
            for obj in &objects {
                let r = row(info, obj, now());
                assert_eq!(
                    r["cells"].as_array().unwrap().len(),
                    columns,
                    "{}",
                    info.plural
                );
            }
        }
    }

    #[test]
    fn watch_event_table_has_one_row() {
        let t = table(info("", "nodes"), &[node_fixture()], "1011", None, now());
        assert_eq!(t["rows"].as_array().unwrap().len(), 1);
        assert_eq!(t["metadata"]["resourceVersion"], "1011");
        assert!(t["metadata"].get("continue").is_none());
    }
}
