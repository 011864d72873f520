//! The scheduler's pure decisions, modelled on kube-scheduler's default profile: the compact
//! facts it keeps about nodes and pods ([`NodeInfo`], [`PodInfo`], [`NodeUsage`]), the filters
//! in upstream's plugin order (NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit; the first failing plugin gives the node's reasons), the scores
//! (least-allocated, PreferNoSchedule taints, preferred node affinity, spreading of pods of the
//! same owner) and upstream's `FitError` message. No I/O: everything here is unit-tested.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use crate::registry::quantity::parse_milli;

/// Upstream's default of `allocatable.pods` when a node reports none (kubelet `maxPods`).
pub const DEFAULT_MAX_PODS: i64 = 110;
/// CPU assumed for a container without a request when scoring (upstream `DefaultMilliCPURequest`).
const DEFAULT_MILLI_CPU: i128 = 100;
/// Memory assumed for a container without a request when scoring (200 MiB, upstream
/// `DefaultMemoryRequest`), in milli-bytes.
const DEFAULT_MEMORY_MILLI: i128 = 200 * 1024 * 1024 * 1000;
/// The allocatable resource counting pods (not a kind: a resource-list key).
const ALLOCATABLE_PODS: &str = "pods";
/// Upstream's label/taint key of a NotReady node.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Upstream's taint key of a node whose status is unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The scheduler name this scheduler serves.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Resources in milli-units, by name (`cpu`, `memory`, `ephemeral-storage`, extended ones).
pub type Resources = BTreeMap<String, i128>;

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
    pub time_added: Option<String>,
}

impl Taint {
    fn from_api(t: &core::Taint) -> Taint {
        Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.clone(),
            time_added: t
                .time_added
                .as_ref()
                .map(|t| t.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    }
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub operator: String,
    pub value: String,
    pub effect: String,
    pub seconds: Option<i64>,
}

impl Toleration {
    fn from_api(t: &core::Toleration) -> Toleration {
        Toleration {
            key: t.key.clone().unwrap_or_default(),
            operator: t.operator.clone().unwrap_or_default(),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.clone().unwrap_or_default(),
            seconds: t.toleration_seconds,
        }
    }

    /// Upstream `Toleration.ToleratesTaint`: an empty effect or key matches any; `Exists`
    /// ignores the value, `Equal` (or no operator) compares it.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator.as_str() {
            "" | "Equal" => self.value == taint.value,
            "Exists" => true,
            _ => false,
        }
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// The state of a node's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady,
    /// `Unknown` (the lifecycle controller's verdict for a silent node) or no condition yet.
    Unknown,
}

/// What the scheduler knows about a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub readiness: Readiness,
    /// `status.allocatable` (else `capacity`); `None` while the node reports neither, in which
    /// case only the pod count is limited (see docs/scheduling.md).
    pub allocatable: Option<Resources>,
    /// Allocatable pods.
    pub max_pods: i64,
}

impl NodeInfo {
    /// Reads a Node object; `None` when it is not a decodable Node.
    pub fn from_object(obj: &Value) -> Option<NodeInfo> {
        let node: core::Node = serde_json::from_value(obj.clone()).ok()?;
        let name = node.metadata.name.clone()?;
        let spec = node.spec.unwrap_or_default();
        let status = node.status.unwrap_or_default();
        let readiness = match status
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .rev()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str())
        {
            Some("True") => Readiness::Ready,
            Some("False") => Readiness::NotReady,
            _ => Readiness::Unknown,
        };
        let reported = status.allocatable.or(status.capacity);
        let mut max_pods = DEFAULT_MAX_PODS;
        let allocatable = reported.map(|m| {
            let mut r = Resources::new();
            for (k, q) in m {
                if let Ok(v) = parse_milli(&q.0) {
                    if k == ALLOCATABLE_PODS {
                        max_pods = (v / 1000) as i64;
                    } else {
                        r.insert(k, v);
                    }
                }
            }
            r
        });
        Some(NodeInfo {
            name,
            labels: node.metadata.labels.unwrap_or_default(),
            taints: spec
                .taints
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(Taint::from_api)
                .collect(),
            unschedulable: spec.unschedulable.unwrap_or(false),
            readiness,
            allocatable,
            max_pods,
        })
    }

    /// The taints scheduling sees: the node's own, plus upstream's condition taint
    /// (`not-ready`/`unreachable`, NoSchedule) while the node is not Ready and the lifecycle
    /// controller has not added it yet.
    pub fn effective_taints(&self) -> Vec<Taint> {
        let mut taints = self.taints.clone();
        let key = match self.readiness {
            Readiness::Ready => return taints,
            Readiness::NotReady => TAINT_NOT_READY,
            Readiness::Unknown => TAINT_UNREACHABLE,
        };
        if !taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.to_string(),
                value: String::new(),
                effect: "NoSchedule".into(),
                time_added: None,
            });
        }
        taints
    }
}

/// A requested host port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream `HostPortInfo` semantics: same port and protocol, and either side on the
    /// wildcard address or both on the same one.
    fn conflicts(&self, other: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == other.port
            && self.protocol == other.protocol
            && (wild(&self.ip) || wild(&other.ip) || self.ip == other.ip)
    }
}

/// What the scheduler knows about a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node_name: String,
    pub scheduler_name: String,
    pub phase: String,
    pub deleting: bool,
    /// Effective requests: the larger of the containers' sum and the largest init container,
    /// plus overhead (upstream `PodRequests`).
    pub requests: Resources,
    /// Requests with upstream's non-zero defaults for cpu and memory, used by scoring only.
    pub score_requests: (i128, i128),
    pub host_ports: Vec<HostPort>,
    pub tolerations: Vec<Toleration>,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity terms (ORed); `None` when the pod has none.
    pub required_terms: Option<Vec<core::NodeSelectorTerm>>,
    pub preferred_terms: Vec<(i32, core::NodeSelectorTerm)>,
    /// uid of the controlling owner, for spreading.
    pub owner: Option<String>,
    /// `PodScheduled=False` message last written by the scheduler.
    pub unschedulable_message: Option<String>,
    /// `spec.preemptionPolicy: Never`: the pod may not preempt (changes the message).
    pub never_preempts: bool,
    /// `spec.schedulingGates` is not empty: the pod waits until they are removed.
    pub gated: bool,
}

fn add_requests(
    into: &mut Resources,
    reqs: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) {
    for (k, q) in reqs.into_iter().flatten() {
        if let Ok(v) = parse_milli(&q.0) {
            *into.entry(k.clone()).or_default() += v;
        }
    }
}

fn container_requests(c: &core::Container) -> Resources {
    let mut r = Resources::new();
    let res = c.resources.as_ref();
    // A limit without a request defaults the request to the limit (upstream defaulting).
    let reqs = res.and_then(|r| r.requests.as_ref());
    add_requests(&mut r, reqs);
    if let Some(limits) = res.and_then(|r| r.limits.as_ref()) {
        for (k, q) in limits {
            if !r.contains_key(k)
                && let Ok(v) = parse_milli(&q.0)
            {
                r.insert(k.clone(), v);
            }
        }
    }
    r
}

impl PodInfo {
    /// Reads a Pod object; `None` when it is not a decodable Pod.
    pub fn from_object(obj: &Value) -> Option<PodInfo> {
        let pod: core::Pod = serde_json::from_value(obj.clone()).ok()?;
        let meta = pod.metadata;
        let spec = pod.spec.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        let mut requests = Resources::new();
        let (mut cpu, mut mem) = (0i128, 0i128);
        for c in &spec.containers {
            let r = container_requests(c);
            for (k, v) in &r {
                *requests.entry(k.clone()).or_default() += v;
            }
            cpu += r
                .get("cpu")
                .copied()
                .filter(|v| *v > 0)
                .unwrap_or(DEFAULT_MILLI_CPU);
            mem += r
                .get("memory")
                .copied()
                .filter(|v| *v > 0)
                .unwrap_or(DEFAULT_MEMORY_MILLI);
        }
        for c in spec.init_containers.as_deref().unwrap_or_default() {
            for (k, v) in container_requests(c) {
                let e = requests.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
        add_requests(&mut requests, spec.overhead.as_ref());
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.as_deref().unwrap_or_default())
            .flat_map(|c| c.ports.as_deref().unwrap_or_default())
            .filter(|p| p.host_port.is_some_and(|h| h > 0))
            .map(|p| HostPort {
                ip: p.host_ip.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.host_port.unwrap_or_default(),
            })
            .collect();
        let node_affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref());
        let required_terms = node_affinity
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.clone());
        let preferred_terms = node_affinity
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|p| p.iter().map(|t| (t.weight, t.preference.clone())).collect())
            .unwrap_or_default();
        let owner = meta
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let unschedulable_message = status
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| c.message.clone().unwrap_or_default());
        Some(PodInfo {
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name?,
            uid: meta.uid.unwrap_or_default(),
            node_name: spec.node_name.unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .unwrap_or_else(|| DEFAULT_SCHEDULER.to_string()),
            phase: status.phase.unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            requests,
            score_requests: (cpu, mem),
            host_ports,
            tolerations: spec
                .tolerations
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(Toleration::from_api)
                .collect(),
            node_selector: spec.node_selector.unwrap_or_default(),
            required_terms,
            preferred_terms,
            owner,
            unschedulable_message,
            never_preempts: spec.preemption_policy.as_deref() == Some("Never"),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod still occupies its node's resources (finished pods do not).
    pub fn occupies_node(&self) -> bool {
        !self.node_name.is_empty() && self.phase != "Succeeded" && self.phase != "Failed"
    }

    /// Whether this scheduler should place the pod.
    pub fn wants_scheduling(&self) -> bool {
        self.node_name.is_empty()
            && self.scheduler_name == DEFAULT_SCHEDULER
            && !self.gated
            && !self.deleting
            && self.phase != "Succeeded"
            && self.phase != "Failed"
    }
}

/// What the pods bound to a node use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeUsage {
    pub pods: i64,
    pub requested: Resources,
    /// Sum of the scoring requests (cpu, memory).
    pub score_requested: (i128, i128),
    pub host_ports: Vec<HostPort>,
    /// Pods per controlling owner uid.
    pub owners: HashMap<String, usize>,
}

impl NodeUsage {
    /// Adds (`sign = 1`) or removes (`sign = -1`) a pod's use.
    pub fn account(&mut self, pod: &PodInfo, sign: i64) {
        self.pods += sign;
        for (k, v) in &pod.requests {
            *self.requested.entry(k.clone()).or_default() += v * sign as i128;
        }
        self.score_requested.0 += pod.score_requests.0 * sign as i128;
        self.score_requested.1 += pod.score_requests.1 * sign as i128;
        if sign > 0 {
            self.host_ports.extend(pod.host_ports.iter().cloned());
        } else {
            for hp in &pod.host_ports {
                if let Some(i) = self.host_ports.iter().position(|x| x == hp) {
                    self.host_ports.swap_remove(i);
                }
            }
        }
        if let Some(owner) = &pod.owner {
            let n = self.owners.entry(owner.clone()).or_default();
            *n = n.saturating_add_signed(sign as isize);
            if *n == 0 {
                self.owners.remove(owner);
            }
        }
    }
}

/// Why a node cannot take a pod: one of upstream's filter reasons.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Unschedulable,
    UntoleratedTaint { key: String, value: String },
    NodeAffinity,
    HostPorts,
    TooManyPods,
    Insufficient(String),
}

impl Reason {
    /// The reason as upstream's plugins word it.
    pub fn message(&self) -> String {
        match self {
            Reason::Unschedulable => "node(s) were unschedulable".into(),
            Reason::UntoleratedTaint { key, value } => {
                format!("node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Reason::HostPorts => {
                "node(s) didn't have free ports for the requested pod ports".into()
            }
            Reason::TooManyPods => "Too many pods".into(),
            Reason::Insufficient(r) => format!("Insufficient {r}"),
        }
    }

    /// Whether evicting lower-priority pods could help (upstream: `Unschedulable` rather than
    /// `UnschedulableAndUnresolvable`).
    fn preemption_might_help(&self) -> bool {
        matches!(
            self,
            Reason::HostPorts | Reason::TooManyPods | Reason::Insufficient(_)
        )
    }
}

/// Upstream `NodeSelectorRequirement` matching against labels (or `metadata.name` for fields).
fn requirement_matches(req: &core::NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(int), values) else {
                return false;
            };
            let Some(want) = int(want) else { return false };
            if req.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Whether one node selector term matches: every expression and field requirement holds; a
/// term with neither matches nothing (upstream).
pub fn term_matches(term: &core::NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node.name.as_str())))
}

/// Upstream NodeAffinity: `nodeSelector` and the required node affinity terms.
pub fn node_affinity_fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    selector_ok
        && pod
            .required_terms
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)))
}

/// Upstream NodeResourcesFit: the pod count, then each requested resource against
/// allocatable minus what bound pods request. A node without reported allocatable limits only
/// the pod count.
fn resources_fit(pod: &PodInfo, node: &NodeInfo, usage: &NodeUsage) -> Vec<Reason> {
    let mut out = Vec::new();
    if usage.pods + 1 > node.max_pods {
        out.push(Reason::TooManyPods);
    }
    let Some(alloc) = &node.allocatable else {
        return out;
    };
    // Upstream checks cpu, memory, ephemeral-storage, then scalar resources in name order.
    let order = ["cpu", "memory", "ephemeral-storage"];
    let mut names: Vec<&String> = pod.requests.keys().collect();
    names.sort_by_key(|n| {
        (
            order.iter().position(|o| o == n).unwrap_or(order.len()),
            n.as_str(),
        )
    });
    for name in names {
        let want = pod.requests[name];
        if want <= 0 {
            continue;
        }
        let have = alloc.get(name).copied().unwrap_or(0);
        let used = usage.requested.get(name).copied().unwrap_or(0);
        if want > have - used {
            out.push(Reason::Insufficient(name.clone()));
        }
    }
    out
}

/// Runs the filters in upstream's order; the first failing plugin's reasons (empty = fits).
pub fn filter(pod: &PodInfo, node: &NodeInfo, usage: &NodeUsage) -> Vec<Reason> {
    if node.unschedulable {
        // Upstream NodeUnschedulable lets a pod tolerating the unschedulable taint through.
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            value: String::new(),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        if !tolerated(&pod.tolerations, &taint) {
            return vec![Reason::Unschedulable];
        }
    }
    if let Some(t) = node.effective_taints().into_iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(&pod.tolerations, t)
    }) {
        return vec![Reason::UntoleratedTaint {
            key: t.key,
            value: t.value,
        }];
    }
    if !node_affinity_fits(pod, node) {
        return vec![Reason::NodeAffinity];
    }
    if pod
        .host_ports
        .iter()
        .any(|want| usage.host_ports.iter().any(|used| want.conflicts(used)))
    {
        return vec![Reason::HostPorts];
    }
    resources_fit(pod, node, usage)
}

/// One feasible node's raw scores, normalised across nodes by [`pick`].
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub node: &'a NodeInfo,
    pub usage: &'a NodeUsage,
}

/// Least-allocated score 0–100 of cpu and memory after placing the pod; from the pod count
/// when the node reports no allocatable.
fn least_allocated(pod: &PodInfo, c: &Candidate<'_>) -> i64 {
    let ratio = |alloc: i128, used: i128| -> i64 {
        if alloc <= 0 || used > alloc {
            0
        } else {
            ((alloc - used) * 100 / alloc) as i64
        }
    };
    let alloc = c.node.allocatable.as_ref();
    let cpu = alloc.and_then(|a| a.get("cpu")).copied();
    let mem = alloc.and_then(|a| a.get("memory")).copied();
    match (cpu, mem) {
        (Some(cpu), Some(mem)) => {
            (ratio(cpu, c.usage.score_requested.0 + pod.score_requests.0)
                + ratio(mem, c.usage.score_requested.1 + pod.score_requests.1))
                / 2
        }
        _ => ratio(c.node.max_pods as i128, c.usage.pods as i128 + 1),
    }
}

/// Scales `raw` so the largest becomes 100 (`reverse`: the smallest does).
fn normalise(raw: &[i64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|&v| match (max, reverse) {
            (0, true) => 100,
            (0, false) => 0,
            (m, true) => 100 - v * 100 / m,
            (m, false) => v * 100 / m,
        })
        .collect()
}

/// Weighted total scores of feasible nodes, in input order. Weights follow upstream's default
/// profile: NodeResourcesFit 1, TaintToleration 3, NodeAffinity 2, spreading 2.
pub fn scores(pod: &PodInfo, candidates: &[Candidate<'_>]) -> Vec<i64> {
    let least: Vec<i64> = candidates.iter().map(|c| least_allocated(pod, c)).collect();
    let prefer_no_schedule: Vec<i64> = candidates
        .iter()
        .map(|c| {
            c.node
                .taints
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&pod.tolerations, t))
                .count() as i64
        })
        .collect();
    let affinity: Vec<i64> = candidates
        .iter()
        .map(|c| {
            pod.preferred_terms
                .iter()
                .filter(|(_, t)| term_matches(t, c.node))
                .map(|(w, _)| i64::from(*w))
                .sum()
        })
        .collect();
    let same_owner: Vec<i64> = candidates
        .iter()
        .map(|c| {
            pod.owner
                .as_ref()
                .and_then(|o| c.usage.owners.get(o))
                .copied()
                .unwrap_or(0) as i64
        })
        .collect();
    let (taint, affinity, spread) = (
        normalise(&prefer_no_schedule, true),
        normalise(&affinity, false),
        normalise(&same_owner, true),
    );
    (0..candidates.len())
        .map(|i| least[i] + 3 * taint[i] + 2 * affinity[i] + 2 * spread[i])
        .collect()
}

/// The best candidate: highest score, then fewest pods, then name (deterministic).
pub fn pick<'a>(pod: &PodInfo, candidates: &[Candidate<'a>]) -> Option<&'a NodeInfo> {
    let s = scores(pod, candidates);
    (0..candidates.len())
        .min_by(|&a, &b| {
            s[b].cmp(&s[a])
                .then(candidates[a].usage.pods.cmp(&candidates[b].usage.pods))
                .then(candidates[a].node.name.cmp(&candidates[b].node.name))
        })
        .map(|i| candidates[i].node)
}

/// Upstream's message when no node was left: `0/N nodes are available: <sorted histogram>.`
/// followed by the preemption verdict (ending in `..`, exactly as upstream prints it), or `no nodes available to schedule pods` without nodes.
/// `rejections` holds each node's reasons. Preemption is not implemented: nodes where it might
/// help report "No preemption victims found for incoming pod", as upstream does when no
/// lower-priority pod could make room.
pub fn fit_error_message(
    total_nodes: usize,
    rejections: &[Vec<Reason>],
    never_preempts: bool,
) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let histogram = |reasons: &mut dyn Iterator<Item = String>| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in reasons {
            *counts.entry(r).or_default() += 1;
        }
        let mut parts: Vec<String> = counts
            .into_iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        // Upstream sorts the formatted strings, counts included.
        parts.sort();
        parts.join(", ")
    };
    let filter_msg = histogram(&mut rejections.iter().flatten().map(Reason::message));
    if never_preempts {
        return format!(
            "0/{total_nodes} nodes are available: {filter_msg}. preemption: not eligible due to preemptionPolicy=Never.."
        );
    }
    let preemption = histogram(&mut rejections.iter().map(|reasons| {
        if reasons.iter().any(Reason::preemption_might_help) {
            "No preemption victims found for incoming pod".to_string()
        } else {
            "Preemption is not helpful for scheduling".to_string()
        }
    }));
    // Upstream appends the preemption verdict (itself a sentence ending in ".") with the same
    // " %v." separator, so the message ends in "..".
    format!(
        "0/{total_nodes} nodes are available: {filter_msg}. preemption: 0/{total_nodes} nodes are available: {preemption}.."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn node(name: &str, extra: Value) -> NodeInfo {
        let mut obj = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        merge(&mut obj, extra);
        NodeInfo::from_object(&obj).unwrap()
    }

    pub(crate) fn pod(name: &str, extra: Value) -> PodInfo {
        let mut obj = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        });
        merge(&mut obj, extra);
        PodInfo::from_object(&obj).unwrap()
    }

    fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn tol(v: Value) -> Toleration {
        Toleration::from_api(&serde_json::from_value(v).unwrap())
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn tolerations_match_like_upstream() {
        let t = taint("CriticalAddonsOnly", "true", "NoExecute");
        assert!(tol(json!({"key": "CriticalAddonsOnly", "operator": "Exists"})).tolerates(&t));
        assert!(tol(json!({"key": "CriticalAddonsOnly", "value": "true"})).tolerates(&t));
        assert!(tol(json!({"key": "CriticalAddonsOnly", "operator": "Equal", "value": "true", "effect": "NoExecute"})).tolerates(&t));
        assert!(!tol(json!({"key": "CriticalAddonsOnly", "value": "false"})).tolerates(&t));
        assert!(
            !tol(
                json!({"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"})
            )
            .tolerates(&t)
        );
        assert!(
            tol(json!({"operator": "Exists"})).tolerates(&t),
            "empty key + Exists tolerates all"
        );
        assert!(!tol(json!({"key": "other", "operator": "Exists"})).tolerates(&t));
        assert!(!tol(json!({"key": "CriticalAddonsOnly", "operator": "Bogus"})).tolerates(&t));
    }

    #[test]
    fn taints_filter_noschedule_and_noexecute_only() {
        let u = NodeUsage::default();
        let p = pod("p", json!({}));
        for effect in ["NoSchedule", "NoExecute"] {
            let n = node(
                "n",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": effect}]}}),
            );
            assert_eq!(
                filter(&p, &n, &u),
                vec![Reason::UntoleratedTaint {
                    key: "k".into(),
                    value: "v".into()
                }]
            );
        }
        let n = node(
            "n",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        );
        assert!(filter(&p, &n, &u).is_empty());
        let tolerant = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}),
        );
        let n = node(
            "n",
            json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]}}),
        );
        assert!(filter(&tolerant, &n, &u).is_empty());
    }

    #[test]
    fn not_ready_and_cordoned_nodes_are_filtered() {
        let u = NodeUsage::default();
        let p = pod("p", json!({}));
        let n = node(
            "n",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert_eq!(
            filter(&p, &n, &u),
            vec![Reason::UntoleratedTaint {
                key: TAINT_NOT_READY.into(),
                value: "".into()
            }]
        );
        let n = node(
            "n",
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        assert_eq!(
            filter(&p, &n, &u)[0].message(),
            "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"
        );
        let n = node("n", json!({"spec": {"unschedulable": true}}));
        assert_eq!(filter(&p, &n, &u), vec![Reason::Unschedulable]);
        let tolerant = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(filter(&tolerant, &n, &u).is_empty());
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let u = NodeUsage::default();
        let n = node(
            "n1",
            json!({"metadata": {"labels": {"disk": "ssd", "gen": "5"}}}),
        );
        let sel = |s: Value| pod("p", json!({"spec": {"nodeSelector": s}}));
        assert!(filter(&sel(json!({"disk": "ssd"})), &n, &u).is_empty());
        assert_eq!(
            filter(&sel(json!({"disk": "hdd"})), &n, &u),
            vec![Reason::NodeAffinity]
        );
        let aff = |exprs: Value| {
            pod(
                "p",
                json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}}}),
            )
        };
        let fits = |exprs: Value| filter(&aff(exprs), &n, &u).is_empty();
        assert!(fits(
            json!([{"key": "disk", "operator": "In", "values": ["hdd", "ssd"]}])
        ));
        assert!(!fits(
            json!([{"key": "disk", "operator": "In", "values": ["hdd"]}])
        ));
        assert!(fits(
            json!([{"key": "disk", "operator": "NotIn", "values": ["hdd"]}])
        ));
        assert!(
            fits(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}])),
            "NotIn holds for a missing label"
        );
        assert!(!fits(
            json!([{"key": "disk", "operator": "NotIn", "values": ["ssd"]}])
        ));
        assert!(fits(json!([{"key": "disk", "operator": "Exists"}])));
        assert!(!fits(json!([{"key": "zone", "operator": "Exists"}])));
        assert!(fits(json!([{"key": "zone", "operator": "DoesNotExist"}])));
        assert!(!fits(json!([{"key": "disk", "operator": "DoesNotExist"}])));
        assert!(fits(
            json!([{"key": "gen", "operator": "Gt", "values": ["4"]}])
        ));
        assert!(!fits(
            json!([{"key": "gen", "operator": "Gt", "values": ["5"]}])
        ));
        assert!(fits(
            json!([{"key": "gen", "operator": "Lt", "values": ["6"]}])
        ));
        assert!(
            !fits(json!([{"key": "disk", "operator": "Lt", "values": ["6"]}])),
            "non-numeric label"
        );
        assert!(
            !fits(json!([{"key": "gen", "operator": "Gt", "values": ["1", "2"]}])),
            "Gt takes one value"
        );
        assert!(
            !fits(
                json!([{"key": "disk", "operator": "In", "values": ["ssd"]}, {"key": "gen", "operator": "Gt", "values": ["9"]}])
            ),
            "expressions are ANDed"
        );
        // Terms are ORed; an empty term matches nothing.
        let terms = |t: Value| {
            pod(
                "p",
                json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": t}}}}}),
            )
        };
        assert!(filter(&terms(json!([{"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])), &n, &u).is_empty());
        assert_eq!(
            filter(&terms(json!([{}])), &n, &u),
            vec![Reason::NodeAffinity]
        );
        assert!(filter(&terms(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])), &n, &u).is_empty());
    }

    #[test]
    fn resources_and_pod_count() {
        let n = node(
            "n",
            json!({"status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "3"}}}),
        );
        let p = pod(
            "p",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1500m", "memory": "512Mi"}}}]}}),
        );
        let mut u = NodeUsage::default();
        assert!(filter(&p, &n, &u).is_empty());
        u.account(&p, 1);
        assert_eq!(filter(&p, &n, &u), vec![Reason::Insufficient("cpu".into())]);
        let both = pod(
            "b",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}),
        );
        assert_eq!(
            filter(&both, &n, &u),
            vec![
                Reason::Insufficient("cpu".into()),
                Reason::Insufficient("memory".into())
            ]
        );
        u.account(&pod("x", json!({})), 1);
        u.account(&pod("y", json!({})), 1);
        assert_eq!(
            filter(&pod("z", json!({})), &n, &u),
            vec![Reason::TooManyPods]
        );
        u.account(&p, -1);
        assert!(
            filter(&p, &n, &u).is_empty(),
            "released resources are free again"
        );
        // Limits default requests; init containers count by their maximum.
        let lim = pod(
            "l",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "3"}}}]}}),
        );
        assert_eq!(lim.requests["cpu"], 3000);
        let init = pod(
            "i",
            json!({"spec": {"initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"cpu": "4"}}}], "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}, {"name": "d", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        assert_eq!(init.requests["cpu"], 4000);
        // A node reporting nothing limits only the pod count.
        let bare = node("bare", json!({}));
        assert!(filter(&lim, &bare, &NodeUsage::default()).is_empty());
        assert_eq!(bare.max_pods, DEFAULT_MAX_PODS);
    }

    #[test]
    fn host_ports_conflict() {
        let n = node("n", json!({}));
        let hp = |port: i64, ip: &str, proto: &str| {
            pod(
                "p",
                json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}}),
            )
        };
        let mut u = NodeUsage::default();
        u.account(&hp(8080, "", "TCP"), 1);
        assert_eq!(
            filter(&hp(8080, "127.0.0.1", "TCP"), &n, &u),
            vec![Reason::HostPorts]
        );
        assert!(filter(&hp(8080, "", "UDP"), &n, &u).is_empty());
        assert!(filter(&hp(8081, "", "TCP"), &n, &u).is_empty());
        let mut u = NodeUsage::default();
        u.account(&hp(9000, "127.0.0.1", "TCP"), 1);
        assert!(filter(&hp(9000, "127.0.0.2", "TCP"), &n, &u).is_empty());
        assert_eq!(
            filter(&hp(9000, "0.0.0.0", "TCP"), &n, &u),
            vec![Reason::HostPorts]
        );
    }

    #[test]
    fn scoring_prefers_free_nodes_and_spreads_owners() {
        let alloc = json!({"status": {"allocatable": {"cpu": "4", "memory": "4Gi"}}});
        let (a, b) = (node("a", alloc.clone()), node("b", alloc));
        let owned = |name: &str| {
            pod(
                name,
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]}}),
            )
        };
        let mut ua = NodeUsage::default();
        let ub = NodeUsage::default();
        ua.account(&owned("x"), 1);
        let cands = [
            Candidate {
                node: &a,
                usage: &ua,
            },
            Candidate {
                node: &b,
                usage: &ub,
            },
        ];
        assert_eq!(pick(&owned("y"), &cands).unwrap().name, "b");
        // A PreferNoSchedule taint only lowers the score.
        let c = node(
            "c",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        );
        let d = node("d", json!({}));
        let empty = NodeUsage::default();
        let cands = [
            Candidate {
                node: &c,
                usage: &empty,
            },
            Candidate {
                node: &d,
                usage: &empty,
            },
        ];
        assert_eq!(pick(&pod("p", json!({})), &cands).unwrap().name, "d");
        // Preferred affinity wins over an otherwise equal node.
        let e = node("e", json!({"metadata": {"labels": {"fast": "yes"}}}));
        let pref = pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "preference": {"matchExpressions": [{"key": "fast", "operator": "Exists"}]}}]}}}}),
        );
        let cands = [
            Candidate {
                node: &d,
                usage: &empty,
            },
            Candidate {
                node: &e,
                usage: &empty,
            },
        ];
        assert_eq!(pick(&pref, &cands).unwrap().name, "e");
    }

    #[test]
    fn fit_error_message_matches_upstream() {
        let critical = Reason::UntoleratedTaint {
            key: "CriticalAddonsOnly".into(),
            value: "true".into(),
        };
        let rejections = vec![
            vec![critical.clone()],
            vec![critical.clone()],
            vec![critical],
            vec![Reason::Insufficient("cpu".into())],
        ];
        assert_eq!(
            fit_error_message(4, &rejections, false),
            "0/4 nodes are available: 1 Insufficient cpu, 3 node(s) had untolerated taint {CriticalAddonsOnly: true}. \
             preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling.."
        );
        assert_eq!(
            fit_error_message(
                2,
                &[vec![Reason::Unschedulable], vec![Reason::NodeAffinity]],
                false
            ),
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
        );
        assert_eq!(
            fit_error_message(1, &[vec![Reason::Insufficient("memory".into())]], true),
            "0/1 nodes are available: 1 Insufficient memory. preemption: not eligible due to preemptionPolicy=Never.."
        );
        assert_eq!(
            fit_error_message(0, &[], false),
            "no nodes available to schedule pods"
        );
    }
}
