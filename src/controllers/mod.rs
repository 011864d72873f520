//! Control loops of a server. Some run on every server (publishing this server's API endpoint,
//! the status reporter); the rest run only on the elected leader (node lifecycle, etcd member
//! removal for deleted server nodes, the `default/kubernetes` endpoints, expired bootstrap token
//! cleanup, node IPAM, taint-based eviction and the scheduler, docs/scheduling.md). Leadership
//! is an etcd key bound to a lease; every loop selects on cancellation.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod driven;
pub mod endpoints;
pub mod etcd_events;
pub mod gc;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod node_events;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod scheduler;
pub mod taint_eviction;
pub mod watch;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::apiservers::{self, APISERVER_ADDRESSES_PREFIX};
use crate::cluster::context::Ctx;
use crate::datastore::DatastoreError;
use crate::datastore::{Cas, Change};
use crate::events::EventRecorder;
use crate::registry::{
    ENDPOINT_SLICES, ENDPOINTS, NAMESPACES, NODES, ResourceInfo, SECRETS, SYSTEM_NAMESPACES,
};
use crate::storage::{ListOptions, ObjectError, Storage};
use node_lifecycle::NodeFacts;

/// Interval of the leader's periodic loops.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// TTL of a server's published API endpoint.
const ENDPOINT_TTL: i64 = 10;
/// How long the removal of a deleted server's etcd member is retried (k3s: 1 min).
const MEMBER_REMOVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// The datastore is not there yet (etcd still starting).
fn not_ready() -> ObjectError {
    DatastoreError::Unavailable("datastore not ready".into()).into()
}

/// The event recorder of controller `component` on this server.
fn recorder(ctx: &Ctx, component: &str) -> EventRecorder {
    EventRecorder::new(
        ctx.store.clone(),
        component,
        &ctx.node.name,
        ctx.config.event_ttl,
    )
}

/// The store as controllers use it: writes fenced and reads served by this server's watch
/// caches where that is correct (see `Storage::cached`).
fn storage(ctx: &Ctx) -> Option<Storage> {
    ctx.watching
        .get()
        .map(|ds| Storage::cached(ds, ctx.caches.clone()))
}

/// Creates the system namespaces and the `default/kubernetes` Service if missing.
pub async fn ensure_defaults(ctx: &Ctx) -> Result<(), ObjectError> {
    let store = storage(ctx).ok_or_else(not_ready)?;
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match store.create(&NAMESPACES, None, obj).await {
            Ok(_) | Err(ObjectError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let cluster_ip = crate::config::cidr_offset(&ctx.config.service_cidr, 1)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": ctx.config.https_listen_port}],
            "sessionAffinity": "None",
        },
    });
    let ranges = crate::storage::services::ServiceRanges {
        cidr: ctx.config.service_cidr,
        node_ports: ctx.config.service_node_port_range,
        cluster_dns: Some(ctx.config.cluster_dns),
    };
    match crate::storage::services::create(&store, &ranges, "default", svc).await {
        Ok(_) | Err(ObjectError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts the controllers every server runs plus the leader-elected ones.
pub fn spawn_server_controllers(ctx: Ctx, tracker: &TaskTracker, cancel: CancellationToken) {
    let is_leader = leader::campaign(ctx.clone(), "controllers", tracker, cancel.clone());
    tracker.spawn(node_lifecycle::run(
        ctx.watching.clone(),
        ctx.caches.clone(),
        ctx.runtime.clone(),
        ctx.config.node_monitor_grace_period,
        is_leader.clone(),
        Utc::now,
        cancel.clone(),
    ));
    tracker.spawn(member_removal(
        ctx.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(kubernetes_endpoints(
        ctx.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(node_ipam::run(
        ctx.watching.clone(),
        ctx.config.cluster_cidr,
        ctx.config.node_cidr_mask_size,
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(endpoints::run(
        ctx.watching.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(taint_eviction::run(
        ctx.watching.clone(),
        ctx.caches.clone(),
        recorder(&ctx, taint_eviction::COMPONENT),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(deployment::run(
        ctx.watching.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(daemonset::run(
        ctx.watching.clone(),
        ctx.caches.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(job::run(
        ctx.watching.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(cronjob::run(
        ctx.watching.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(gc::run(
        ctx.watching.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(replicaset::run(
        ctx.watching.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    let (store, scheduler_leader, scheduler_cancel) =
        (ctx.watching.clone(), is_leader.clone(), cancel.clone());
    let scheduler_events = recorder(&ctx, scheduler::COMPONENT);
    tracker.spawn(async move {
        if let Some(ds) = watch::store_when_ready(&store, &scheduler_cancel).await {
            scheduler::run(ds, scheduler_events, scheduler_leader, scheduler_cancel).await;
        }
    });
    tracker.spawn(namespace::run(
        ctx.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(node_events::run(
        ctx.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(etcd_events::run(
        ctx.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));
    tracker.spawn(bootstrap_token_cleanup(ctx, is_leader, cancel));
}

/// Publishes this server's API endpoint under a lease, so `/v1-rke2/apiservers` and the
/// `kubernetes` endpoints list only live servers. Called once the server is ready.
pub fn publish_apiserver_endpoint(ctx: Ctx, tracker: &TaskTracker, cancel: CancellationToken) {
    tracker.spawn(async move {
        let key = format!("{APISERVER_ADDRESSES_PREFIX}{}", ctx.node.name);
        let value = ctx.apiserver_endpoint.to_string();
        let Some(store) = ctx.store.get().cloned() else { return };
        let mut lease: Option<i64> = None;
        loop {
            let ok = match lease {
                Some(id) => matches!(store.lease_keep_alive_once(id).await, Ok(ttl) if ttl > 0),
                None => false,
            };
            if !ok {
                lease = None;
                if let Ok(id) = store.lease_grant(ENDPOINT_TTL).await {
                    // Replace any stale entry of ours (from before a restart).
                    let _ = store.delete(&key, None).await;
                    if let Ok(Cas::Written(_)) = store.create_with_lease(&key, value.clone().into_bytes(), id).await {
                        lease = Some(id);
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    if let Some(id) = lease {
                        // Withdraw at once on a clean stop so agents move on immediately
                        // (bounded: a cluster stopping as a whole may have no quorum left).
                        let _ = tokio::time::timeout(crate::datastore::SHUTDOWN_CALL_TIMEOUT, store.lease_revoke(id)).await;
                    }
                    return;
                }
                _ = tokio::time::sleep(Duration::from_secs(if lease.is_some() { 3 } else { 1 })) => {}
            }
        }
    });
}

/// Removes the etcd member of a deleted server node.
async fn member_removal(
    ctx: Ctx,
    is_leader: tokio::sync::watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let nodes = &NODES;
    let serial = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    loop {
        let Some(store) = ctx.watching.get().cloned() else {
            return;
        };
        let mut stream = match store.watch(&nodes.list_prefix(None), 0).await {
            Ok(s) => s,
            Err(_) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                m = stream.next() => m,
            };
            let changes = match msg {
                Ok(Some((changes, _))) => changes,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(
                        component = "controllers",
                        "node watch for member removal ended, restarting it: {e}"
                    );
                    break;
                }
            };
            if !*is_leader.borrow() {
                continue;
            }
            for change in changes {
                let Change::Delete {
                    prev: Some(prev), ..
                } = change
                else {
                    continue;
                };
                // Only the node's name is taken from the deleted object: which etcd member
                // belongs to it comes from etcd's membership, where servers name their own
                // members (labels and annotations are client-writable).
                let name = match serde_json::from_slice::<NodeFacts>(&prev.value) {
                    Ok(n) => n.metadata.name,
                    Err(e) => {
                        tracing::warn!(
                            component = "controllers",
                            "deleted node {} is unreadable: {e} ({} bytes)",
                            prev.key,
                            prev.value.len()
                        );
                        continue;
                    }
                };
                let Some(client) = ctx.etcd.get().cloned() else {
                    continue;
                };
                let member = match crate::etcd::member_list(&client).await {
                    Ok(members) => match crate::etcd::membership::member_of_node(&members, &name) {
                        Some(m) => m.name.clone(),
                        None => continue,
                    },
                    Err(e) => {
                        tracing::warn!(component = "etcd", node = %name, "cannot read the etcd members for deleted node: {e}");
                        continue;
                    }
                };
                // etcd refuses removals for a while after membership changes ("unhealthy
                // cluster"); retry in the background so the watch keeps up. Removals run one
                // at a time so each sees the membership the previous one left.
                let (tls, cancel, serial) = (ctx.etcd_tls.clone(), cancel.clone(), serial.clone());
                let store = store.clone();
                tokio::spawn(async move {
                    let _one_at_a_time = serial.lock().await;
                    let deadline = tokio::time::Instant::now() + MEMBER_REMOVAL_TIMEOUT;
                    loop {
                        match crate::etcd::membership::remove_member(&client, &tls, &member).await {
                            Ok(true) => {
                                tracing::info!(component = "etcd", etcd_member = %member, node = %name, "removed the etcd member of a deleted node");
                                forget_node_password(&store, &name).await;
                                return;
                            }
                            Ok(false) => return,
                            Err(
                                e @ (crate::etcd::EtcdError::LastVoter(_)
                                | crate::etcd::EtcdError::WouldLoseQuorum { .. }),
                            ) => {
                                tracing::warn!(component = "etcd", etcd_member = %member, "not removing the etcd member of a deleted node: {e}");
                                return;
                            }
                            Err(e) if tokio::time::Instant::now() >= deadline => {
                                tracing::warn!(component = "etcd", etcd_member = %member, "giving up removing the etcd member of a deleted node: {e}");
                                return;
                            }
                            Err(e) => {
                                tracing::info!(component = "etcd", etcd_member = %member, "etcd does not allow removing the member yet ({e}); retrying")
                            }
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                });
            }
        }
    }
}

/// Interval at which a server re-checks the privileged metadata of its own Node (it may have been
/// re-registered by the node agent after a deletion).
const OWN_NODE_METADATA_INTERVAL: Duration = Duration::from_secs(5);

/// The labels and annotations of this server's own Node that its node identity may not set:
/// the role labels, the etcd member facts and any configured `node-label` outside the
/// kubelet's set. The server writes them with its own storage access (docs/security.md).
pub fn server_node_metadata(
    ctx: &Ctx,
    member: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels: BTreeMap<String, String> = ["control-plane", "etcd", "master"]
        .iter()
        .map(|r| (format!("node-role.kubernetes.io/{r}"), "true".to_string()))
        .collect();
    for l in &ctx.config.node.node_labels {
        if !crate::validation::node_may_set_label(&l.key) {
            labels.insert(l.key.clone(), l.value.clone());
        }
    }
    let annotations = BTreeMap::from([
        (
            "etcd.rke2.cattle.io/node-name".to_string(),
            member.to_string(),
        ),
        (
            "etcd.rke2.cattle.io/node-address".to_string(),
            ctx.node.primary_ip().to_string(),
        ),
    ]);
    (labels, annotations)
}

fn has_all(node: &Value, field: &str, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| {
        node.pointer(&format!("/metadata/{field}"))
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            == Some(v.as_str())
    })
}

/// Writes [`server_node_metadata`] onto this server's Node when any of it is missing.
async fn apply_server_node_metadata(ctx: &Ctx, member: &str) -> Result<(), ObjectError> {
    let store = storage(ctx).ok_or_else(not_ready)?;
    let nodes = &NODES;
    let (labels, annotations) = server_node_metadata(ctx, member);
    let Some(node) = store.get_opt(nodes, None, &ctx.node.name).await? else {
        return Ok(());
    };
    if has_all(&node, "labels", &labels) && has_all(&node, "annotations", &annotations) {
        return Ok(());
    }
    store
        .modify(nodes, None, &ctx.node.name, None, |n| {
            for (field, want) in [("labels", &labels), ("annotations", &annotations)] {
                if !n["metadata"][field].is_object() {
                    n["metadata"][field] = json!({});
                }
                let map = n["metadata"][field]
                    .as_object_mut()
                    .expect("made an object above");
                for (k, v) in want {
                    map.insert(k.clone(), Value::String(v.clone()));
                }
            }
            Ok::<(), ObjectError>(())
        })
        .await?;
    tracing::info!(component = "controllers", node = %ctx.node.name, "applied the server role labels and etcd annotations");
    Ok(())
}

/// Applies [`server_node_metadata`] now (so it is there when the server reports ready), then
/// keeps it applied until `cancel`.
pub async fn spawn_server_node_metadata(
    ctx: Ctx,
    member: &str,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    if let Err(e) = apply_server_node_metadata(&ctx, member).await {
        tracing::warn!(component = "controllers", node = %ctx.node.name, "could not label this server's node yet: {e}");
    }
    let member = member.to_string();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(OWN_NODE_METADATA_INTERVAL) => {}
            }
            if let Err(e) = apply_server_node_metadata(&ctx, &member).await {
                tracing::debug!(component = "controllers", node = %ctx.node.name, "labelling this server's node: {e}");
            }
        }
    });
}

/// Deletes the node password of a removed server, so the machine can join again with a fresh
/// data directory under the same name (its member is gone, so is its claim on the name).
async fn forget_node_password(store: &crate::datastore::Datastore, node: &str) {
    let secret = crate::cluster::node_password::secret_name(node);
    match Storage::new(store.clone())
        .delete(&SECRETS, Some("kube-system"), &secret, None, None)
        .await
    {
        Ok(_) | Err(ObjectError::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(component = "controllers", node = %node, "could not delete the node password of a removed server: {e}")
        }
    }
}

/// Keeps `default/kubernetes` Endpoints equal to the published API endpoints of live servers.
async fn kubernetes_endpoints(
    ctx: Ctx,
    mut is_leader: tokio::sync::watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    // Reconciles at once (and on winning the lease), not only after the first period: clients
    // look the service's Endpoints up as soon as the API answers.
    loop {
        let leading = *is_leader.borrow_and_update();
        if leading && let Some(store) = storage(&ctx) {
            reconcile_kubernetes_endpoints(&ctx, &store).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            Ok(()) = is_leader.changed() => {}
        }
    }
}

/// One pass of [`kubernetes_endpoints`].
async fn reconcile_kubernetes_endpoints(ctx: &Ctx, store: &Storage) {
    let Ok(addrs) = apiservers::list(store.datastore()).await else {
        return;
    };
    let mut ips = Vec::new();
    let mut port = ctx.config.https_listen_port;
    for a in &addrs {
        if let Ok(sa) = a.parse::<std::net::SocketAddr>() {
            ips.push(json!({"ip": sa.ip().to_string()}));
            port = sa.port();
        }
    }
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        json!([{"addresses": ips, "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
    };
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    });
    upsert_fields(store, &ENDPOINTS, endpoints, &["subsets"]).await;
    // The same as an EndpointSlice, as upstream's API server writes it: what service proxies
    // and DNS read.
    let slice_endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip["ip"]], "conditions": {"ready": true}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {endpoints::SERVICE_NAME_LABEL: "kubernetes"}},
        "addressType": if addrs.iter().any(|a| a.starts_with('[')) { "IPv6" } else { "IPv4" },
        "endpoints": slice_endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    upsert_fields(
        store,
        &ENDPOINT_SLICES,
        slice,
        &["addressType", "endpoints", "ports"],
    )
    .await;
}

/// Creates `desired` in `default`, or brings the `fields` of the stored one in line with it.
/// Failures are left to the next pass.
async fn upsert_fields(store: &Storage, info: &ResourceInfo, desired: Value, fields: &[&str]) {
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    match store.get_opt(info, Some("default"), name).await {
        Ok(Some(existing)) => {
            if fields.iter().any(|f| existing.get(*f) != desired.get(*f)) {
                let _ = store
                    .modify(info, Some("default"), name, None, |o| {
                        for f in fields {
                            o[*f] = desired[*f].clone();
                        }
                        Ok::<(), ObjectError>(())
                    })
                    .await;
            }
        }
        Ok(None) => {
            let _ = store.create(info, Some("default"), desired.clone()).await;
        }
        Err(_) => {}
    }
}

/// Deletes expired bootstrap tokens.
async fn bootstrap_token_cleanup(
    ctx: Ctx,
    is_leader: tokio::sync::watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    use crate::cluster::bootstrap_tokens::{NAMESPACE, SECRET_TYPE, is_expired};
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if !*is_leader.borrow() {
            continue;
        }
        let Some(store) = storage(&ctx) else { continue };
        let secrets = &SECRETS;
        let Ok(list) = store
            .list(secrets, Some(NAMESPACE), &ListOptions::default())
            .await
        else {
            continue;
        };
        let now = Utc::now();
        for s in list
            .items
            .iter()
            .filter(|s| s["type"] == SECRET_TYPE && is_expired(s, now))
        {
            let name = s
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if store
                .delete(secrets, Some(NAMESPACE), name, None, None)
                .await
                .is_ok()
            {
                tracing::info!(
                    component = "tokens",
                    "deleted expired bootstrap token {name}"
                );
            }
        }
    }
}

/// What the status reporter keeps between rounds: the Nodes' names and Ready conditions,
/// decoded again only when a Node changes.
#[derive(Default)]
pub struct StatusMemory {
    nodes: crate::storage::decoded::Decoded<NodeFacts>,
}

/// Refreshes the cluster facts in the runtime state (voting servers, etcd members, nodes, API
/// endpoints). Fails only when the etcd member list cannot be read.
pub async fn refresh_status(
    ctx: &Ctx,
    memory: &mut StatusMemory,
) -> Result<(), crate::etcd::EtcdError> {
    let mut result = Ok(());
    let mut voter_node_names: Option<Vec<String>> = None;
    if let Some(client) = ctx.etcd.get() {
        match crate::etcd::member_list(client).await {
            Ok(members) => {
                let voters = members.iter().filter(|m| !m.is_learner).count() as u32;
                let names: Vec<String> = members
                    .iter()
                    .map(|m| {
                        let n = if m.name.is_empty() {
                            format!("{:x}", m.id)
                        } else {
                            m.name.clone()
                        };
                        if m.is_learner {
                            format!("{n} (learner)")
                        } else {
                            n
                        }
                    })
                    .collect();
                let voter_nodes: Vec<String> = members
                    .iter()
                    .filter(|m| !m.is_learner && !m.name.is_empty())
                    .map(|m| crate::etcd::node_of_member(&m.name).to_string())
                    .collect();
                ctx.runtime.update(|s| {
                    s.server_count = voters;
                    s.etcd_members = names;
                });
                voter_node_names = Some(voter_nodes);
            }
            Err(e) => result = Err(e),
        }
    }
    if let Some(store) = storage(ctx) {
        // Only names and Ready conditions are decoded, as in the lifecycle controller, from
        // this server's watch cache and only for Nodes that changed: every server runs this
        // every 2 s.
        let nodes = &mut memory.nodes;
        if nodes
            .refresh(&store, &NODES, None, |b| serde_json::from_slice(b).ok())
            .await
            .is_ok()
        {
            let ready: std::collections::BTreeSet<&str> = nodes
                .iter()
                .filter(|n| n.ready_status() == Some("True"))
                .map(|n| n.metadata.name.as_str())
                .collect();
            ctx.runtime.update(|s| {
                s.node_count = nodes.iter().count() as u32;
                s.ready_node_count = ready.len() as u32;
                // A voting server counts as ready when its Node is Ready.
                if let Some(voters) = &voter_node_names {
                    s.ready_server_count =
                        voters.iter().filter(|n| ready.contains(n.as_str())).count() as u32;
                }
            });
        }
        if let Some(store) = ctx.store.get()
            && let Ok(addrs) = apiservers::list(store).await
        {
            ctx.runtime.update(|s| s.apiserver_endpoints = addrs);
        }
    }
    result
}

/// Reports cluster facts to the runtime state (STATUS=, D-Bus) and warns about an even number
/// of voting servers. While etcd has no leader, STATUS= says so with the number of reachable
/// servers.
pub fn spawn_status_reporter(ctx: Ctx, tracker: &TaskTracker, cancel: CancellationToken) {
    tracker.spawn(async move {
        let mut warned_even: Option<u32> = None;
        let mut memory = StatusMemory::default();
        let ticker = ctx.runtime.liveness("status-reporter", RECONCILE_INTERVAL);
        loop {
            ticker.tick();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = report_status(&ctx, &mut warned_even, &mut memory) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            }
        }
    });
}

/// One round of [`spawn_status_reporter`].
async fn report_status(ctx: &Ctx, warned_even: &mut Option<u32>, memory: &mut StatusMemory) {
    // Without a leader, reads that need quorum would only run into their timeouts: report
    // the quorum situation instead (Status is answered locally).
    let no_leader = match ctx.etcd.get() {
        Some(client) => matches!(
            crate::etcd::check_ready(client).await,
            Err(crate::etcd::EtcdError::NoLeader)
        ),
        None => false,
    };
    if no_leader {
        let own_peer_url =
            crate::etcd::process::url("https", ctx.node.primary_ip(), ctx.config.etcd_peer_port);
        let phase = match crate::etcd::reachable_voters(&ctx.paths, &own_peer_url).await {
            Ok((reachable, voters)) if voters > 0 => {
                crate::daemon::quorum_status(reachable, voters)
            }
            _ => "waiting for etcd quorum".to_string(),
        };
        if ctx.runtime.snapshot().ready {
            ctx.runtime.set_phase(phase);
        }
        return;
    }
    // A removed member is detected by the etcd supervisor, which stops the server with a clear
    // error; here a failed read just leaves the last known facts in place.
    let _ = refresh_status(ctx, memory).await;
    let s = ctx.runtime.snapshot();
    let voters = s.server_count;
    if voters.is_multiple_of(2) && voters > 0 {
        if *warned_even != Some(voters) {
            tracing::warn!(
                component = "etcd",
                "the cluster has {voters} voting servers: an odd number of servers is required for fault tolerance \
                 ({voters} servers tolerate the loss of {} server(s), like {} would); add or remove one server",
                (voters - 1) / 2,
                voters - 1
            );
            *warned_even = Some(voters);
        }
    } else {
        *warned_even = None;
    }
    if s.ready {
        ctx.runtime.set_phase(crate::daemon::ready_status(&s));
    }
}
