//! Server-side Table rendering (`meta.k8s.io/v1` `Table`) for `kubectl get`: the column
//! definitions and cells of each kind, following the real apiserver's printers
//! (`pkg/printers/internalversion/printers.go`), and `HumanDuration` for the AGE columns.
//! kubectl prints the column names upper-cased and the cells verbatim, so every string here is
//! user-visible output. Pure functions over `serde_json::Value`: missing or malformed fields
//! render as the upstream placeholders, never as errors.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::discovery::accepts_transformed;
use super::resources::ResourceInfo;

/// Content type of a Table response (and of each event of a Table watch).
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Whether the client asked for a `meta.k8s.io/v1` Table. kubectl's `get` sends
/// `application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json`.
pub fn wants_table(accept: &str) -> bool {
    accepts_transformed(accept, "meta.k8s.io", "v1", "Table")
}

/// Kubernetes `duration.HumanDuration`: about two significant figures, e.g. `45s`, `5m12s`,
/// `3h`, `5h10m`, `2d`, `3d4h`, `400d`, `2y30d`, `9y`. Up to one second in the future counts as
/// `0s` (clock skew between servers); further in the future is `<invalid>`.
pub fn human_duration(d: Duration) -> String {
    // Go truncates `d.Seconds()` toward zero; `num_seconds` does the same.
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// One column of a Table.
#[derive(Debug, Clone, Copy)]
struct Column {
    name: &'static str,
    /// OpenAPI type of the cells: `string`, `integer`, `date`...
    kind: &'static str,
    /// `name` marks the column holding the object name.
    format: &'static str,
    description: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    priority: u8,
}

const fn col(name: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind: "string",
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(c: Column) -> Column {
    Column { priority: 1, ..c }
}

// Descriptions follow the upstream field documentation; kubectl ignores them, but other
// clients show them.
const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const ADDRESSES_DESC: &str =
    "List of addresses reachable to the node. Queried from cloud provider, if available.";

const NAME: Column = Column {
    format: "name",
    ..col("Name", NAME_DESC)
};
const AGE: Column = col("Age", CREATED_DESC);

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "The status of the node"),
    col("Roles", "The roles of the node"),
    AGE,
    col("Version", "Kubelet Version reported by the node."),
    wide(col("Internal-IP", ADDRESSES_DESC)),
    wide(col("External-IP", ADDRESSES_DESC)),
    wide(col(
        "OS-Image",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    )),
    wide(col(
        "Kernel-Version",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    )),
    wide(col(
        "Container-Runtime",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    )),
];

const NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "The status of the namespace"), AGE];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    ),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col(
        "Data",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Data",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "type determines how the Service is exposed."),
    col(
        "Cluster-IP",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(col(
        "Selector",
        "Route service traffic to pods with label keys and values matching this selector.",
    )),
];

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "The object that this event is about."),
    wide(col(
        "Subobject",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    )),
    wide(col(
        "Source",
        "The component reporting this event. Should be a short machine understandable string.",
    )),
    col(
        "Message",
        "A human-readable description of the status of this operation.",
    ),
    wide(col(
        "First Seen",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    )),
    wide(col("Count", "The number of times this event has occurred.")),
    Column {
        priority: 1,
        ..NAME
    },
];

const POD_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(col(
        "IP",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    )),
    wide(col(
        "Node",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.",
    )),
    wide(col(
        "Nominated Node",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
    )),
    wide(col(
        "Readiness Gates",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    )),
];

/// What the apiserver's default table convertor shows for kinds without a printer.
const GENERIC_COLUMNS: &[Column] = &[
    NAME,
    Column {
        kind: "date",
        ..col("Created At", CREATED_DESC)
    },
];

/// The printers we have, chosen by group and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Node,
    Namespace,
    Lease,
    Secret,
    ConfigMap,
    Endpoints,
    Service,
    Event,
    Pod,
    Generic,
}

impl Printer {
    fn of(info: &ResourceInfo) -> Printer {
        match (info.group, info.kind) {
            ("", "Node") => Printer::Node,
            ("", "Namespace") => Printer::Namespace,
            ("", "Secret") => Printer::Secret,
            ("", "ConfigMap") => Printer::ConfigMap,
            ("", "Endpoints") => Printer::Endpoints,
            ("", "Service") => Printer::Service,
            ("", "Event") => Printer::Event,
            ("", "Pod") => Printer::Pod,
            ("coordination.k8s.io", "Lease") => Printer::Lease,
            _ => Printer::Generic,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Node => NODE_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::ConfigMap => CONFIGMAP_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Event => EVENT_COLUMNS,
            Printer::Pod => POD_COLUMNS,
            Printer::Generic => GENERIC_COLUMNS,
        }
    }

    /// The cells of one object, always including the wide (`priority: 1`) ones: the server
    /// sends every column and kubectl hides the wide ones unless `-o wide`.
    fn cells(self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        match self {
            Printer::Node => node_cells(obj, now),
            Printer::Namespace => vec![
                name(obj).into(),
                text(obj, "/status/phase").into(),
                age(obj, now).into(),
            ],
            Printer::Lease => vec![
                name(obj).into(),
                text(obj, "/spec/holderIdentity").into(),
                age(obj, now).into(),
            ],
            // Upstream sends the key counts as integers although the column says "string".
            Printer::Secret => vec![
                name(obj).into(),
                text(obj, "/type").into(),
                (object_len(obj, "/data") as i64).into(),
                age(obj, now).into(),
            ],
            Printer::ConfigMap => vec![
                name(obj).into(),
                ((object_len(obj, "/data") + object_len(obj, "/binaryData")) as i64).into(),
                age(obj, now).into(),
            ],
            Printer::Endpoints => vec![
                name(obj).into(),
                format_endpoints(obj).into(),
                age(obj, now).into(),
            ],
            Printer::Service => service_cells(obj, now),
            Printer::Event => event_cells(obj, now),
            Printer::Pod => pod_cells(obj, now),
            Printer::Generic => vec![
                name(obj).into(),
                // Go formats the zero time when the timestamp is missing.
                created(obj)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
                    .into(),
            ],
        }
    }

    /// Row conditions: only finished pods have one, so clients can de-emphasise them.
    fn conditions(self, obj: &Value) -> Option<Value> {
        if self != Printer::Pod {
            return None;
        }
        let (reason, message) = match text(obj, "/status/phase") {
            "Succeeded" => ("Succeeded", "The pod has completed successfully."),
            "Failed" => ("Failed", "The pod failed."),
            _ => return None,
        };
        Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": reason,
            "message": message,
        }]))
    }
}

/// The `columnDefinitions` of `info`'s Table.
pub fn column_definitions(info: &ResourceInfo) -> Value {
    Value::Array(
        Printer::of(info)
            .columns()
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
    let printer = Printer::of(info);
    let mut r = Map::new();
    r.insert("cells".into(), Value::Array(printer.cells(obj, now)));
    if let Some(c) = printer.conditions(obj) {
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

/// The string at a JSON pointer, or `""`.
fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The array at a JSON pointer, or an empty slice.
fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The integer at a JSON pointer, or 0.
fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Number of keys of the map at a JSON pointer (0 when absent).
fn object_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

fn name(obj: &Value) -> &str {
    text(obj, "/metadata/name")
}

/// A timestamp (`Time` or `MicroTime`); `None` for a missing, null, unparsable or zero time,
/// which Go's `IsZero` treats alike.
fn timestamp(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(v?.as_str()?).ok()?;
    let t = t.with_timezone(&Utc);
    (t != DateTime::<Utc>::MIN_UTC && t.timestamp() != GO_ZERO_TIME_UNIX).then_some(t)
}

/// `0001-01-01T00:00:00Z`, Go's zero `time.Time`, in Unix seconds.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

fn created(obj: &Value) -> Option<DateTime<Utc>> {
    timestamp(obj.pointer("/metadata/creationTimestamp"))
}

/// Upstream `translateTimestampSince`: `<unknown>` for a zero time.
fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

fn age(obj: &Value, now: DateTime<Utc>) -> String {
    since(created(obj), now)
}

fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() {
        placeholder.to_string()
    } else {
        s.to_string()
    }
}

/// Go's `net.JoinHostPort`: IPv6 literals get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, or `<none>`.
fn format_labels(v: Option<&Value>) -> String {
    let pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            // serde_json maps are sorted by key unless `preserve_order` is on; sort anyway.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| format!("{k}={}", m[k].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

// ---------------------------------------------------------------------------------------------
// Node

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Upstream builds a map by condition type, so the last Ready condition wins. Any status
    // other than "True" (including "Unknown", which the node lifecycle controller sets for a
    // lost node) prints "NotReady"; only a missing Ready condition prints "Unknown".
    let ready = list(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| text(c, "/type") == "Ready")
        .map(|c| text(c, "/status"));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }

    let roles = node_roles(node);
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    vec![
        name(node).into(),
        status.into(),
        roles.into(),
        age(node, now).into(),
        text(node, "/status/nodeInfo/kubeletVersion").into(),
        node_address(node, "InternalIP").into(),
        node_address(node, "ExternalIP").into(),
        or_placeholder(text(node, "/status/nodeInfo/osImage"), "<unknown>").into(),
        or_placeholder(text(node, "/status/nodeInfo/kernelVersion"), "<unknown>").into(),
        or_placeholder(
            text(node, "/status/nodeInfo/containerRuntimeVersion"),
            "<unknown>",
        )
        .into(),
    ]
}

/// Roles from `node-role.kubernetes.io/<role>` label keys and the `kubernetes.io/role` value,
/// sorted and deduplicated.
fn node_roles(node: &Value) -> BTreeSet<String> {
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let role = match k.strip_prefix(NODE_ROLE_PREFIX) {
                Some(suffix) => suffix,
                None if k == NODE_ROLE_LABEL => v.as_str().unwrap_or(""),
                None => continue,
            };
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        }
    }
    roles
}

/// The first address of the given type, or `<none>`.
fn node_address(node: &Value, kind: &str) -> String {
    list(node, "/status/addresses")
        .iter()
        .find(|a| text(a, "/type") == kind)
        .map_or_else(|| "<none>".to_string(), |a| text(a, "/address").to_string())
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// Upstream `formatEndpoints` with all ports: `ip:port` for every address and port, at most
/// three, then ` + N more...`; `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = list(ss, "/addresses");
        let ports = list(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(text(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(join_host_port(text(a, "/ip"), int(port, "/port")));
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------
// Service

/// `spec.type`, defaulted like the apiserver does on create.
fn service_type(svc: &Value) -> &str {
    match text(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    }
}

/// Upstream `getServiceExternalIP` with `wide = true` (the server renders the wide form).
fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // A sorted set of ingress IPs, or hostnames where there is no IP.
            let lb: BTreeSet<&str> = list(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| match (text(i, "/ip"), text(i, "/hostname")) {
                    ("", "") => None,
                    ("", host) => Some(host),
                    (ip, _) => Some(ip),
                })
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// Upstream `makePortString`: `port/proto` or `port:nodePort/proto`, comma-joined.
fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = match text(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            let port = int(p, "/port");
            let node_port = int(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect();
    if pieces.is_empty() {
        "<none>".to_string()
    } else {
        pieces.join(",")
    }
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // `clusterIPs[0]`; stored objects written before dual-stack may only carry `clusterIP`.
    let cluster_ip = list(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text(svc, "/spec/clusterIP"));
    vec![
        name(svc).into(),
        service_type(svc).into(),
        or_placeholder(cluster_ip, "<none>").into(),
        service_external_ip(svc).into(),
        service_ports(svc).into(),
        age(svc, now).into(),
        format_labels(svc.pointer("/spec/selector")).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Event

fn event_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first = match timestamp(ev.get("firstTimestamp")) {
        Some(t) => since(Some(t), now),
        // Events from the events.k8s.io API only carry eventTime.
        None => since(timestamp(ev.get("eventTime")), now),
    };
    let mut last = match timestamp(ev.get("lastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(ev, "/count");
    if let Some(series) = ev.get("series").filter(|s| s.is_object()) {
        last = since(timestamp(series.get("lastObservedTime")), now);
        count = int(series, "/count");
    } else if count == 0 {
        // Singleton events have no count in the new API.
        count = 1;
    }
    let kind = text(ev, "/involvedObject/kind").to_lowercase();
    let target = match text(ev, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    // Source: component (or reportingComponent), then ", host" (or reportingInstance).
    let component = match text(ev, "/source/component") {
        "" => text(ev, "/reportingComponent"),
        c => c,
    };
    let host = match text(ev, "/source/host") {
        "" => text(ev, "/reportingInstance"),
        h => h,
    };
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        last.into(),
        text(ev, "/type").into(),
        text(ev, "/reason").into(),
        target.into(),
        text(ev, "/involvedObject/fieldPath").into(),
        source.into(),
        text(ev, "/message").trim().into(),
        first.into(),
        count.into(),
        name(ev).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Pod

/// A sidecar: an init container with `restartPolicy: Always`.
fn is_restartable_init(pod: &Value, container_name: &str) -> bool {
    list(pod, "/spec/initContainers")
        .iter()
        .find(|c| text(c, "/name") == container_name)
        .is_some_and(|c| text(c, "/restartPolicy") == "Always")
}

fn has_condition_true(pod: &Value, kind: &str) -> bool {
    list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == kind && text(c, "/status") == "True")
}

/// `finishedAt` of the container's last termination, if any.
fn last_termination(status: &Value) -> Option<DateTime<Utc>> {
    timestamp(status.pointer("/lastState/terminated/finishedAt"))
}

/// Keeps the later of two optional times (Go compares zero times as earliest).
fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Reason for a terminated container without one: the signal, else the exit code.
fn terminated_without_reason(terminated: &Value, prefix: &str) -> String {
    let signal = int(terminated, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int(terminated, "/exitCode"))
    }
}

/// Upstream `printPod`: READY `ready/total`, STATUS (the pod's reason refined by init and
/// container states), RESTARTS (`n` or `n (age ago)`), AGE, then the wide IP, NODE,
/// NOMINATED NODE and READINESS GATES.
fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let init_specs = list(pod, "/spec/initContainers");
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    // Sidecars (restartable init containers) count as containers.
    let total = list(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| text(c, "/restartPolicy") == "Always")
            .count();
    let mut ready: usize = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;

    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, cs) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let count = int(cs, "/restartCount");
        restarts += count;
        last_restart = later(last_restart, last_termination(cs));
        let sidecar = is_restartable_init(pod, text(cs, "/name"));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, last_termination(cs));
        }
        let terminated = cs.pointer("/state/terminated").filter(|t| t.is_object());
        let waiting_reason = text(cs, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            match text(t, "/reason") {
                "" => terminated_without_reason(t, "Init:"),
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || has_condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(cs, "/restartCount");
            last_restart = later(last_restart, last_termination(cs));
            let waiting_reason = text(cs, "/state/waiting/reason");
            let terminated = cs.pointer("/state/terminated").filter(|t| t.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = match text(t, "/reason") {
                    "" => terminated_without_reason(t, ""),
                    r => r.to_string(),
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod with a completed container but one still running is not "Completed".
        if reason == "Completed" && has_running {
            reason = if has_condition_true(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = list(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "/status/podIP"));

    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(pod, "/status/conditions");
        let met = gates
            .iter()
            .filter(|g| {
                let kind = text(g, "/conditionType");
                // Only the first condition of that type counts, as upstream.
                conditions
                    .iter()
                    .find(|c| text(c, "/type") == kind)
                    .is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };

    vec![
        name(pod).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        age(pod, now).into(),
        or_placeholder(pod_ip, "<none>").into(),
        or_placeholder(text(pod, "/spec/nodeName"), "<none>").into(),
        or_placeholder(text(pod, "/status/nominatedNodeName"), "<none>").into(),
        readiness_gates.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::{RESOURCES, lookup};

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
