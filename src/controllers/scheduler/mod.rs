//! The scheduler: on the leading server, places pending pods (`spec.schedulerName`
//! default-scheduler, no `spec.nodeName`) on nodes through the binding operation. It keeps a
//! cache of nodes and pods fed by one list and then watches (no polling), runs the filters and
//! scores of [`predicates`] for each queued pod, binds the best node, and for a pod no node
//! takes writes `PodScheduled=False` (reason `Unschedulable`, upstream's message) and a
//! `FailedScheduling` event. Unschedulable pods are retried when a node changes, when a pod
//! stops using a node, and every [`RETRY_INTERVAL`]. See docs/scheduling.md.

pub mod predicates;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::controllers::watch::forward;
use crate::datastore::{Change, Datastore};
use crate::events::{EventRecorder, EventType, ObjectRef};
use crate::registry::{NODES, PODS};
use crate::storage::ObjectError;
use crate::storage::pods;
use crate::storage::{ListOptions, Storage};
use predicates::{Candidate, NodeInfo, NodeUsage, PodInfo, Reason};

/// How often unschedulable pods are tried again without any change (upstream flushes them
/// after at most 5 minutes; a shorter period suits small clusters).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// The component name on events and in logs.
pub const COMPONENT: &str = "default-scheduler";

/// Which watch a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Nodes,
    Pods,
}

/// The scheduler's state while leading.
pub struct Scheduler {
    store: Storage,
    events: EventRecorder,
    nodes: BTreeMap<String, NodeInfo>,
    usage: HashMap<String, NodeUsage>,
    /// Every known pod by `namespace/name`, with the revision it was seen at.
    pods: HashMap<String, (PodInfo, i64)>,
    active: VecDeque<String>,
    queued: HashSet<String>,
    unschedulable: HashSet<String>,
}

/// The fields that decide where a pod may go: a change of any of them retries the pod.
fn placement_facts(p: &PodInfo) -> impl PartialEq + '_ {
    (
        &p.requests,
        &p.host_ports,
        &p.tolerations,
        &p.node_selector,
        &p.required_terms,
        &p.scheduler_name,
        p.gated,
    )
}

impl Scheduler {
    pub fn new(store: Storage, events: EventRecorder) -> Scheduler {
        Scheduler {
            store,
            events,
            nodes: BTreeMap::new(),
            usage: HashMap::new(),
            pods: HashMap::new(),
            active: VecDeque::new(),
            queued: HashSet::new(),
            unschedulable: HashSet::new(),
        }
    }

    /// Number of pods waiting in the active queue.
    pub fn queued(&self) -> usize {
        self.active.len()
    }

    /// Reads every node and pod; returns the revision the lists were read at.
    pub async fn load(&mut self) -> Result<i64, ObjectError> {
        let nodes = self
            .store
            .list_stored(&NODES, None, &ListOptions::default())
            .await?;
        let pods = self
            .store
            .list_stored(&PODS, None, &ListOptions::default())
            .await?;
        for kv in &nodes.items {
            if let Some(n) = decode(&kv.value).as_ref().and_then(NodeInfo::from_object) {
                self.apply_node(n.name.clone(), Some(n));
            }
        }
        for kv in &pods.items {
            if let Some(p) = decode(&kv.value).as_ref().and_then(PodInfo::from_object) {
                self.apply_pod(p.key(), Some(p), kv.mod_revision);
            }
        }
        Ok(pods.resource_version.max(nodes.resource_version))
    }

    fn enqueue(&mut self, key: String) {
        self.unschedulable.remove(&key);
        if self.queued.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    /// Moves every unschedulable pod back to the queue (something changed that may help).
    pub fn retry_unschedulable(&mut self) {
        let mut keys: Vec<String> = self.unschedulable.drain().collect();
        keys.sort();
        for k in keys {
            self.enqueue(k);
        }
    }

    /// Applies a node's new state (`None` = deleted).
    fn apply_node(&mut self, name: String, node: Option<NodeInfo>) {
        let changed = match &node {
            Some(n) => self.nodes.get(&name) != Some(n),
            None => self.nodes.contains_key(&name),
        };
        match node {
            Some(n) => {
                self.nodes.insert(name, n);
            }
            None => {
                self.nodes.remove(&name);
            }
        }
        if changed {
            self.retry_unschedulable();
        }
    }

    /// Applies a pod's new state seen at `revision` (`None` = deleted); stale states (older than
    /// what the scheduler itself wrote) are ignored.
    fn apply_pod(&mut self, key: String, pod: Option<PodInfo>, revision: i64) {
        let old = self.pods.remove(&key);
        if let Some((_, seen)) = &old
            && *seen > revision
            && pod.is_some()
        {
            self.pods.insert(key, old.expect("checked above"));
            return;
        }
        let node_of = |p: &PodInfo| p.occupies_node().then(|| p.node_name.clone());
        let old_node = old.as_ref().and_then(|(o, _)| node_of(o));
        let new_node = pod.as_ref().and_then(node_of);
        if let (Some(node), Some((o, _))) = (&old_node, &old) {
            self.usage.entry(node.clone()).or_default().account(o, -1);
        }
        if let (Some(node), Some(p)) = (&new_node, &pod) {
            self.usage.entry(node.clone()).or_default().account(p, 1);
        }
        let freed = old_node.is_some() && old_node != new_node;
        match pod {
            Some(p) => {
                if p.wants_scheduling() {
                    let same_placement = old
                        .as_ref()
                        .is_some_and(|(o, _)| placement_facts(o) == placement_facts(&p));
                    if !(same_placement && self.unschedulable.contains(&key)) {
                        self.enqueue(key.clone());
                    }
                } else {
                    self.unschedulable.remove(&key);
                }
                self.pods.insert(key, (p, revision));
            }
            None => {
                self.unschedulable.remove(&key);
            }
        }
        if freed {
            self.retry_unschedulable();
        }
    }

    /// Applies one watch batch.
    fn apply_changes(&mut self, source: Source, changes: Vec<Change>) {
        let prefix = match source {
            Source::Nodes => NODES.list_prefix(None),
            Source::Pods => PODS.list_prefix(None),
        };
        for change in changes {
            let (key, value, revision) = match &change {
                Change::Put { kv, .. } => (kv.key.as_str(), Some(&kv.value), kv.mod_revision),
                Change::Delete { key, revision, .. } => (key.as_str(), None, *revision),
            };
            let Some(name) = key.strip_prefix(&prefix) else {
                continue;
            };
            let object = value.and_then(|v| decode(v));
            match source {
                Source::Nodes => {
                    let node = object.as_ref().and_then(NodeInfo::from_object);
                    if value.is_some() && node.is_none() {
                        continue;
                    }
                    self.apply_node(name.to_string(), node);
                }
                Source::Pods => {
                    let pod = object.as_ref().and_then(PodInfo::from_object);
                    if value.is_some() && pod.is_none() {
                        continue;
                    }
                    self.apply_pod(name.to_string(), pod, revision);
                }
            }
        }
    }

    /// Schedules the next queued pod; `false` when the queue is empty.
    pub async fn schedule_next(&mut self) -> bool {
        let Some(key) = self.active.pop_front() else {
            return false;
        };
        self.queued.remove(&key);
        let Some((pod, _)) = self.pods.get(&key).cloned() else {
            return true;
        };
        if !pod.wants_scheduling() {
            return true;
        }
        let empty = NodeUsage::default();
        let mut rejections: Vec<Vec<Reason>> = Vec::new();
        let mut feasible: Vec<Candidate<'_>> = Vec::new();
        for node in self.nodes.values() {
            let usage = self.usage.get(&node.name).unwrap_or(&empty);
            let reasons = predicates::filter(&pod, node, usage);
            if reasons.is_empty() {
                feasible.push(Candidate { node, usage });
            } else {
                rejections.push(reasons);
            }
        }
        let chosen = predicates::pick(&pod, &feasible).map(|n| n.name.clone());
        let total = self.nodes.len();
        drop(feasible);
        match chosen {
            Some(node) => self.bind(&key, pod, node).await,
            None => {
                let message = predicates::fit_error_message(total, &rejections, pod.never_preempts);
                self.unschedulable.insert(key.clone());
                if pod.unschedulable_message.as_deref() != Some(message.as_str())
                    && let Err(e) = self.report_unschedulable(&key, &pod, &message).await
                {
                    tracing::debug!(component = COMPONENT, pod = %key, "could not record the scheduling failure: {e}");
                }
            }
        }
        true
    }

    async fn bind(&mut self, key: &str, mut pod: PodInfo, node: String) {
        match pods::bind(
            &self.store,
            &pod.namespace,
            &pod.name,
            &node,
            Some(&pod.uid),
        )
        .await
        {
            Ok(bound) => {
                tracing::debug!(component = COMPONENT, pod = %key, node = %node, "bound pod");
                let revision = revision_of(&bound);
                pod.node_name = node;
                pod.unschedulable_message = None;
                self.apply_pod(key.to_string(), Some(pod), revision);
                if let Err(e) = self
                    .events
                    .record(
                        &ObjectRef::of(&PODS, &bound),
                        EventType::Normal,
                        "Scheduled",
                        &format!(
                            "Successfully assigned {key} to {}",
                            bound["spec"]["nodeName"].as_str().unwrap_or_default()
                        ),
                    )
                    .await
                {
                    tracing::debug!(component = COMPONENT, pod = %key, "could not record the Scheduled event: {e}");
                }
            }
            // Gone, replaced, or bound by someone else: the watch brings the truth.
            Err(ObjectError::NotFound { .. } | ObjectError::ConflictWith { .. }) => {}
            Err(e) => {
                tracing::warn!(component = COMPONENT, pod = %key, node = %node, "binding failed, will retry: {e}");
                self.unschedulable.insert(key.to_string());
            }
        }
    }

    /// `PodScheduled=False` with reason Unschedulable and the message, plus a FailedScheduling
    /// event, on the pod that is still the one decided on.
    async fn report_unschedulable(
        &mut self,
        key: &str,
        pod: &PodInfo,
        message: &str,
    ) -> Result<(), ObjectError> {
        tracing::info!(component = COMPONENT, pod = %key, "{message}");
        let uid = pod.uid.clone();
        let updated = self
            .store
            .modify(&PODS, Some(&pod.namespace), &pod.name, None, |p| {
                let still_pending = p["metadata"]["uid"] == uid.as_str()
                    && p.pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty);
                if still_pending {
                    pods::set_condition(
                        p,
                        json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null}),
                    );
                }
                Ok::<(), ObjectError>(())
            })
            .await?;
        if let Some((cached, _)) = self.pods.get_mut(key) {
            cached.unschedulable_message = Some(message.to_string());
        }
        self.events
            .record(
                &ObjectRef::of(&PODS, &updated),
                EventType::Warning,
                "FailedScheduling",
                message,
            )
            .await
    }
}

fn decode(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

fn revision_of(obj: &Value) -> i64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Runs the scheduler while `is_leader` says so, until `cancel`.
pub async fn run(
    store: Datastore,
    events: EventRecorder,
    mut is_leader: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    loop {
        // Wait for leadership.
        while !*is_leader.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = is_leader.changed() => if r.is_err() { return },
            }
        }
        let mut s = Scheduler::new(Storage::new(store.clone()), events.clone());
        let revision = match s.load().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    component = COMPONENT,
                    "cannot read nodes and pods, retrying: {e}"
                );
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let watches = cancel.child_token();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (source, prefix) in [
            (Source::Nodes, NODES.list_prefix(None)),
            (Source::Pods, PODS.list_prefix(None)),
        ] {
            forward(
                store.clone(),
                prefix,
                revision + 1,
                source,
                tx.clone(),
                watches.clone(),
            );
        }
        drop(tx);
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    watches.cancel();
                    return;
                }
                r = is_leader.changed() => {
                    if r.is_err() || !*is_leader.borrow() {
                        break;
                    }
                }
                batch = rx.recv() => match batch {
                    Some((source, Ok(changes))) => s.apply_changes(source, changes),
                    Some((_, Err(e))) => {
                        tracing::debug!(component = COMPONENT, "watch ended, reloading: {e}");
                        break;
                    }
                    None => break,
                },
                _ = retry.tick() => s.retry_unschedulable(),
                _ = std::future::ready(()), if s.queued() > 0 => {
                    s.schedule_next().await;
                }
            }
        }
        watches.cancel();
    }
}

#[cfg(test)]
mod tests;
