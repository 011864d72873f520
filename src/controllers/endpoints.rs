//! The endpoints controller (docs/services.md), on the leading server and driven by watches of
//! Services and Pods: for each Service with a selector it keeps an Endpoints object and one
//! EndpointSlice listing the pods that match the selector and have a pod IP — ready pods in
//! `addresses` (`conditions.ready=true`), the others in `notReadyAddresses` (`ready=false`),
//! named target ports resolved from the pods' container ports. Services without a selector
//! (the `kubernetes` service, whose Endpoints another loop keeps) are left alone; what it made
//! for a Service that is gone or lost its selector it deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::watch::{forward, store_when_ready, until_leader};
use crate::datastore::{Change, StoreCell};
use crate::registry::{ENDPOINT_SLICES, ENDPOINTS, PODS, SERVICES};
use crate::storage::selectors::LabelSelector;
use crate::storage::{ListOptions, ObjectError, Storage};

const COMPONENT: &str = "endpoints-controller";
/// `kubernetes.io/service-name`: the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Marks the EndpointSlices this controller manages.
pub const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";
/// Marks the Endpoints this controller manages (upstream's label since 1.33).
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
pub const ENDPOINTS_MANAGER: &str = "endpoint-controller";
/// A full resync also runs this often, as upstream's informers resync.
const RESYNC: Duration = Duration::from_secs(60);

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether every `key: value` of the Service's selector is among the pod's labels.
fn selects(selector: &serde_json::Map<String, Value>, pod: &Value) -> bool {
    selector
        .iter()
        .all(|(k, v)| pod.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The container port a Service port's `targetPort` names on `pod` (a number as is).
fn resolve_target_port(port: &Value, pod: &Value) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) if !name.is_empty() => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => port["port"].as_i64(),
    }
}

/// One pod behind a Service.
#[derive(Debug, Clone)]
struct Backend {
    ip: String,
    ready: bool,
    node: String,
    target_ref: Value,
    /// Resolved ports (`name`, `port`, `protocol`), in the Service's port order.
    ports: Vec<Value>,
}

/// The pods behind `svc` among `pods` (same namespace), sorted by IP.
fn backends(svc: &Value, pods: &[Value]) -> Vec<Backend> {
    let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
        return Vec::new();
    };
    let svc_ports: &[Value] = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut out: Vec<Backend> = pods
        .iter()
        .filter(|p| selects(selector, p))
        .filter(|p| !text(p, "/status/podIP").is_empty())
        .filter(|p| {
            p.pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null)
        })
        .filter(|p| !matches!(text(p, "/status/phase"), "Succeeded" | "Failed"))
        .map(|p| Backend {
            ip: text(p, "/status/podIP").to_string(),
            ready: pod_ready(p),
            node: text(p, "/spec/nodeName").to_string(),
            target_ref: json!({
                "kind": PODS.kind,
                "namespace": text(p, "/metadata/namespace"),
                "name": text(p, "/metadata/name"),
                "uid": text(p, "/metadata/uid"),
            }),
            ports: svc_ports
                .iter()
                .filter_map(|sp| {
                    let port = resolve_target_port(sp, p)?;
                    let mut e =
                        json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(name) = sp["name"].as_str().filter(|n| !n.is_empty()) {
                        e["name"] = json!(name);
                    }
                    Some(e)
                })
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    out
}

fn address(b: &Backend) -> Value {
    let mut a = json!({"ip": b.ip, "targetRef": b.target_ref});
    if !b.node.is_empty() {
        a["nodeName"] = json!(b.node);
    }
    a
}

/// One Endpoints subset being built: ports, ready addresses, not-ready addresses.
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

/// Endpoints `subsets`: pods grouped by their resolved ports (upstream's repacking).
pub fn subsets(svc: &Value, pods: &[Value]) -> Value {
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    for b in backends(svc, pods) {
        let key = serde_json::to_string(&b.ports).expect("JSON serialises");
        let entry = groups
            .entry(key)
            .or_insert_with(|| (b.ports.clone(), Vec::new(), Vec::new()));
        if b.ready {
            entry.1.push(address(&b));
        } else {
            entry.2.push(address(&b));
        }
    }
    Value::Array(
        groups
            .into_values()
            .map(|(ports, ready, not_ready)| {
                let mut s = json!({});
                if !ready.is_empty() {
                    s["addresses"] = json!(ready);
                }
                if !not_ready.is_empty() {
                    s["notReadyAddresses"] = json!(not_ready);
                }
                if !ports.is_empty() {
                    s["ports"] = json!(ports);
                }
                s
            })
            .collect(),
    )
}

/// The address type of the Service's first IP family.
fn address_type(svc: &Value) -> &'static str {
    match text(svc, "/spec/ipFamilies/0") {
        "IPv6" => "IPv6",
        _ => "IPv4",
    }
}

/// The EndpointSlice body fields (`addressType`, `endpoints`, `ports`) for `svc`.
pub fn slice_content(svc: &Value, pods: &[Value]) -> (Value, Value, Value) {
    let family = address_type(svc);
    let bs: Vec<Backend> = backends(svc, pods)
        .into_iter()
        .filter(|b| b.ip.contains(':') == (family == "IPv6"))
        .collect();
    let ports = bs.first().map_or_else(|| json!([]), |b| json!(b.ports));
    let endpoints: Vec<Value> = bs
        .iter()
        .map(|b| {
            let mut e = json!({
                "addresses": [b.ip],
                "conditions": {"ready": b.ready, "serving": b.ready, "terminating": false},
                "targetRef": b.target_ref,
            });
            if !b.node.is_empty() {
                e["nodeName"] = json!(b.node);
            }
            e
        })
        .collect();
    (json!(family), json!(endpoints), ports)
}

fn owner_reference(svc: &Value) -> Value {
    json!([{
        "apiVersion": SERVICES.api_version(),
        "kind": SERVICES.kind,
        "name": text(svc, "/metadata/name"),
        "uid": text(svc, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

fn has_selector(svc: &Value) -> bool {
    svc.pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_some_and(|s| !s.is_empty())
}

fn list_opts(selector: &str) -> Result<ListOptions, ObjectError> {
    Ok(ListOptions {
        label_selector: Some(LabelSelector::parse(selector)?),
        ..ListOptions::default()
    })
}

/// Brings the Endpoints and EndpointSlices of namespace `ns` in line with its Services and Pods.
pub async fn sync_namespace(store: &Storage, ns: &str) -> Result<(), ObjectError> {
    let all = ListOptions::default();
    let services = store.list(&SERVICES, Some(ns), &all).await?.items;
    let selected: Vec<&Value> = services.iter().filter(|s| has_selector(s)).collect();
    // Every Pod write wakes this controller for its namespace: where no Service selects
    // anything, the Pods do not matter.
    let pods = if selected.is_empty() {
        Vec::new()
    } else {
        store.list(&PODS, Some(ns), &all).await?.items
    };
    let wanted: BTreeSet<&str> = selected.iter().map(|s| text(s, "/metadata/name")).collect();
    for svc in &selected {
        sync_endpoints(store, ns, svc, &pods).await?;
        sync_slice(store, ns, svc, &pods).await?;
    }
    // What this controller made for Services that are gone (or lost their selector).
    let ours = store
        .list(
            &ENDPOINTS,
            Some(ns),
            &list_opts(&format!("{ENDPOINTS_MANAGED_BY_LABEL}={ENDPOINTS_MANAGER}"))?,
        )
        .await?;
    for ep in &ours.items {
        let name = text(ep, "/metadata/name");
        if !wanted.contains(name) {
            ignore_missing(store.delete(&ENDPOINTS, Some(ns), name, None, None).await)?;
        }
    }
    let slices = store
        .list(
            &ENDPOINT_SLICES,
            Some(ns),
            &list_opts(&format!("{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGER}"))?,
        )
        .await?;
    for s in &slices.items {
        let svc = text(
            s,
            &format!("/metadata/labels/{}", SERVICE_NAME_LABEL.replace('/', "~1")),
        );
        if !wanted.contains(svc) {
            let name = text(s, "/metadata/name");
            ignore_missing(
                store
                    .delete(&ENDPOINT_SLICES, Some(ns), name, None, None)
                    .await,
            )?;
        }
    }
    Ok(())
}

fn ignore_missing<T>(r: Result<T, ObjectError>) -> Result<(), ObjectError> {
    match r {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The Service's labels plus `extra`.
fn labels_with(svc: &Value, extra: &[(&str, &str)]) -> Value {
    let mut labels = svc
        .pointer("/metadata/labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    for (k, v) in extra {
        labels[*k] = json!(v);
    }
    labels
}

async fn sync_endpoints(
    store: &Storage,
    ns: &str,
    svc: &Value,
    pods: &[Value],
) -> Result<(), ObjectError> {
    let name = text(svc, "/metadata/name");
    let subsets = subsets(svc, pods);
    let labels = labels_with(svc, &[(ENDPOINTS_MANAGED_BY_LABEL, ENDPOINTS_MANAGER)]);
    match store.get_opt(&ENDPOINTS, Some(ns), name).await? {
        None => {
            let obj = json!({
                "apiVersion": ENDPOINTS.api_version(), "kind": ENDPOINTS.kind,
                "metadata": {"name": name, "labels": labels},
                "subsets": subsets,
            });
            match store.create(&ENDPOINTS, Some(ns), obj).await {
                Ok(_) | Err(ObjectError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(_) => {
            let r = store
                .modify(&ENDPOINTS, Some(ns), name, None, |ep| {
                    ep["subsets"] = subsets.clone();
                    ep["metadata"]["labels"] = labels.clone();
                    Ok::<(), ObjectError>(())
                })
                .await;
            ignore_missing(r)
        }
    }
}

async fn sync_slice(
    store: &Storage,
    ns: &str,
    svc: &Value,
    pods: &[Value],
) -> Result<(), ObjectError> {
    let name = text(svc, "/metadata/name");
    let (address_type, endpoints, ports) = slice_content(svc, pods);
    let labels = labels_with(
        svc,
        &[
            (SERVICE_NAME_LABEL, name),
            (SLICE_MANAGED_BY_LABEL, SLICE_MANAGER),
        ],
    );
    let existing = store
        .list(
            &ENDPOINT_SLICES,
            Some(ns),
            &list_opts(&format!(
                "{SERVICE_NAME_LABEL}={name},{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGER}"
            ))?,
        )
        .await?;
    let Some(first) = existing.items.first() else {
        let obj = json!({
            "apiVersion": ENDPOINT_SLICES.api_version(), "kind": ENDPOINT_SLICES.kind,
            "metadata": {"generateName": format!("{name}-"), "labels": labels, "ownerReferences": owner_reference(svc)},
            "addressType": address_type,
            "endpoints": endpoints,
            "ports": ports,
        });
        return store
            .create(&ENDPOINT_SLICES, Some(ns), obj)
            .await
            .map(|_| ());
    };
    let slice_name = text(first, "/metadata/name").to_string();
    let r = store
        .modify(&ENDPOINT_SLICES, Some(ns), &slice_name, None, |s| {
            s["addressType"] = address_type.clone();
            s["endpoints"] = endpoints.clone();
            s["ports"] = ports.clone();
            s["metadata"]["labels"] = labels.clone();
            s["metadata"]["ownerReferences"] = owner_reference(svc);
            Ok::<(), ObjectError>(())
        })
        .await;
    ignore_missing(r)?;
    // One slice per Service: extra ones (a lost race on create) go.
    for extra in &existing.items[1..] {
        let n = text(extra, "/metadata/name");
        ignore_missing(
            store
                .delete(&ENDPOINT_SLICES, Some(ns), n, None, None)
                .await,
        )?;
    }
    Ok(())
}

/// The namespace of a stored object's key under `prefix` (`<prefix><ns>/<name>`).
fn namespace_of<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix)?.split('/').next()
}

/// Every namespace holding a Service or a Pod.
async fn all_namespaces(store: &Storage) -> Result<BTreeSet<String>, ObjectError> {
    let mut out = BTreeSet::new();
    for info in [&SERVICES, &PODS, &ENDPOINT_SLICES] {
        let prefix = info.list_prefix(None);
        let page = store.datastore().list(&prefix, None, 0, 0).await?;
        out.extend(
            page.items
                .iter()
                .filter_map(|kv| namespace_of(&kv.key, &prefix).map(str::to_string)),
        );
    }
    Ok(out)
}

async fn sync_all(store: &Storage, namespaces: &BTreeSet<String>) {
    for ns in namespaces {
        if let Err(e) = sync_namespace(store, ns).await {
            tracing::debug!(component = COMPONENT, namespace = %ns, "syncing endpoints: {e}");
        }
    }
}

/// Runs the controller while this server leads, until `cancel`.
pub async fn run(cell: StoreCell, mut is_leader: watch::Receiver<bool>, cancel: CancellationToken) {
    let Some(ds) = store_when_ready(&cell, &cancel).await else {
        return;
    };
    let store = Storage::new(ds.clone());
    loop {
        if !until_leader(&mut is_leader, &cancel).await {
            return;
        }
        let from = match ds.revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(component = COMPONENT, "cannot read the revision: {e}");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let watches = cancel.child_token();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for info in [&SERVICES, &PODS] {
            forward(
                ds.clone(),
                info.list_prefix(None),
                from + 1,
                info,
                tx.clone(),
                watches.clone(),
            );
        }
        drop(tx);
        // Everything as of `from`; the watches bring what changes after it.
        match all_namespaces(&store).await {
            Ok(namespaces) => sync_all(&store, &namespaces).await,
            Err(e) => tracing::debug!(component = COMPONENT, "listing namespaces: {e}"),
        }
        let mut resync = tokio::time::interval(RESYNC);
        resync.reset();
        loop {
            let mut touched = BTreeSet::new();
            let batch = tokio::select! {
                _ = cancel.cancelled() => return,
                r = is_leader.changed() => {
                    if r.is_err() || !*is_leader.borrow() { break }
                    continue;
                }
                _ = resync.tick() => break,
                b = rx.recv() => b,
            };
            let Some((info, Ok(changes))) = batch else {
                break;
            };
            let mut note = |info: &crate::registry::ResourceInfo, changes: Vec<Change>| {
                let prefix = info.list_prefix(None);
                for c in &changes {
                    let key = match c {
                        Change::Put { kv, .. } => kv.key.as_str(),
                        Change::Delete { key, .. } => key.as_str(),
                    };
                    if let Some(ns) = namespace_of(key, &prefix) {
                        touched.insert(ns.to_string());
                    }
                }
            };
            note(info, changes);
            // Coalesce what else is already queued into the same pass.
            while let Ok((info, Ok(changes))) = rx.try_recv() {
                note(info, changes);
            }
            sync_all(&store, &touched).await;
        }
        watches.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::Datastore;
    use crate::datastore::memory::MemoryStore;

    fn pod(name: &str, ip: &str, ready: bool, labels: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        })
    }

    fn service() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ipFamilies": ["IPv4"],
                     "ports": [{"name": "h", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
        })
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports_resolved() {
        let pods = vec![
            pod("a", "10.0.0.2", true, json!({"app": "web"})),
            pod("b", "10.0.0.1", false, json!({"app": "web"})),
            pod("c", "10.0.0.3", true, json!({"app": "other"})),
            pod("d", "", true, json!({"app": "web"})),
        ];
        let s = subsets(&service(), &pods);
        assert_eq!(s[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(s[0]["notReadyAddresses"][0]["ip"], "10.0.0.1");
        assert_eq!(
            s[0]["ports"],
            json!([{"name": "h", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(s.as_array().unwrap().len(), 1);
        let (family, endpoints, ports) = slice_content(&service(), &pods);
        assert_eq!(family, "IPv4");
        assert_eq!(endpoints.as_array().unwrap().len(), 2);
        assert_eq!(endpoints[0]["addresses"], json!(["10.0.0.1"]));
        assert_eq!(endpoints[0]["conditions"]["ready"], false);
        assert_eq!(endpoints[1]["conditions"]["ready"], true);
        assert_eq!(ports[0]["port"], 8080);
    }

    /// The selector-less `kubernetes` Service and pod `a` labelled `app=web`, in `default`.
    async fn selectorless_service_and_pod(store: &Storage) {
        let plain = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes"}, "spec": {"ports": [{"port": 443}]}});
        store
            .create(&SERVICES, Some("default"), plain)
            .await
            .unwrap();
        store
            .create(
                &PODS,
                Some("default"),
                pod("a", "10.0.0.2", true, json!({"app": "web"})),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_namespace_without_selecting_services_reads_no_pods() {
        let memory = MemoryStore::new();
        let store = Storage::new(Datastore::from_impl(memory.clone()));
        selectorless_service_and_pod(&store).await;
        memory.listed();
        sync_namespace(&store, "default").await.unwrap();
        assert!(
            !memory
                .listed()
                .contains_key(&PODS.list_prefix(Some("default")))
        );
        store
            .create(&SERVICES, Some("default"), service())
            .await
            .unwrap();
        sync_namespace(&store, "default").await.unwrap();
        assert!(
            memory
                .listed()
                .contains_key(&PODS.list_prefix(Some("default")))
        );
        let ep = store.get(&ENDPOINTS, Some("default"), "web").await.unwrap();
        assert_eq!(ep["metadata"]["name"], "web");
    }

    #[tokio::test]
    async fn sync_writes_endpoints_and_one_slice_and_cleans_up() {
        let store = Storage::new(Datastore::from_impl(MemoryStore::new()));
        let ns_obj =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        store
            .create(&crate::registry::NAMESPACES, None, ns_obj)
            .await
            .unwrap();
        store
            .create(&SERVICES, Some("default"), service())
            .await
            .unwrap();
        selectorless_service_and_pod(&store).await;
        // Creation resets the status: the node reports the IP and readiness afterwards.
        let status = pod("a", "10.0.0.2", true, json!({}))["status"].clone();
        store
            .modify(&PODS, Some("default"), "a", None, |p| {
                p["status"] = status.clone();
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        sync_namespace(&store, "default").await.unwrap();
        sync_namespace(&store, "default").await.unwrap();
        let ep = store.get(&ENDPOINTS, Some("default"), "web").await.unwrap();
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.0.0.2");
        // The selector-less service is not touched.
        assert!(
            store
                .get_opt(&ENDPOINTS, Some("default"), "kubernetes")
                .await
                .unwrap()
                .is_none()
        );
        let slices = store
            .list(&ENDPOINT_SLICES, Some("default"), &ListOptions::default())
            .await
            .unwrap();
        assert_eq!(slices.items.len(), 1);
        let slice = &slices.items[0];
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(
            slice["metadata"]["labels"][SLICE_MANAGED_BY_LABEL],
            SLICE_MANAGER
        );
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.0.0.2");
        store
            .delete(&SERVICES, Some("default"), "web", None, None)
            .await
            .unwrap();
        sync_namespace(&store, "default").await.unwrap();
        assert!(
            store
                .get_opt(&ENDPOINTS, Some("default"), "web")
                .await
                .unwrap()
                .is_none()
        );
        let slices = store
            .list(&ENDPOINT_SLICES, Some("default"), &ListOptions::default())
            .await
            .unwrap();
        assert!(slices.items.is_empty());
    }
}
