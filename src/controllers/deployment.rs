//! The Deployment controller on the leading server, after upstream's: each Deployment owns
//! ReplicaSets named `<deployment>-<pod-template-hash>` (the hash of the pod template labels
//! the RS's selector and pods); the one whose template equals the Deployment's is the new one,
//! the others are old. Strategy `Recreate` scales the old ones to zero before the new one up;
//! `RollingUpdate` scales the new one up within `maxSurge` and the old ones down within
//! `maxUnavailable` (upstream's `reconcileNewReplicaSet`/`reconcileOldReplicaSets` arithmetic).
//! Revisions are kept in the `deployment.kubernetes.io/revision` annotation (the new RS gets
//! the highest, so `kubectl rollout undo` and `history` work), old empty ReplicaSets beyond
//! `revisionHistoryLimit` are deleted, and status carries the counts and the `Available` and
//! `Progressing` conditions with upstream's reasons. Watch-driven like the ReplicaSet
//! controller (see `driven`).

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::driven;
use super::replicaset::{controller_ref, controller_uid};
use crate::datastore::StoreCell;
use crate::registry::print::text;
use crate::registry::workload::{labels_of, selector_is_empty, selector_matches};
use crate::registry::{DEPLOYMENTS, REPLICA_SETS};
use crate::storage::{ListOptions, ObjectError, Storage};

const COMPONENT: &str = "deployment-controller";
/// The label (and selector term) that ties a ReplicaSet's pods to its template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision annotation of Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

fn replicas(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn status_count(obj: &Value, key: &str) -> i64 {
    obj["status"][key].as_i64().unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Upstream's `rand.SafeEncodeString` alphabet (no vowels, no confusable characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-32a of its canonical JSON (and the collision
/// count), printed in upstream's safe alphabet.
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if collision_count > 0 {
        feed(&collision_count.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|d| SAFE_ALPHABET[usize::from(d) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// A template without the `pod-template-hash` label and null metadata fields (clients send
/// `creationTimestamp: null`), for comparing an RS to its Deployment.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|_, v| !v.is_null());
    }
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if t["metadata"].as_object().is_some_and(|m| m.is_empty()) {
        t.as_object_mut().map(|m| m.remove("metadata"));
    }
    t
}

/// Resolves an int-or-percent against `total`, rounding up or down (upstream
/// `GetScaledValueFromIntOrPercent`).
pub fn scaled(v: &Value, total: i64, round_up: bool) -> i64 {
    if let Some(n) = v.as_i64() {
        return n;
    }
    let s = v.as_str().unwrap_or("0");
    let Ok(pct) = s.trim_end_matches('%').parse::<i64>() else {
        return 0;
    };
    let x = pct * total;
    if round_up { (x + 99) / 100 } else { x / 100 }
}

/// `(maxSurge, maxUnavailable)` of a rolling update (upstream `ResolveFenceposts`).
pub fn fenceposts(d: &Value) -> (i64, i64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let want = replicas(d);
    let surge = scaled(ru.get("maxSurge").unwrap_or(&json!("25%")), want, true);
    let unavailable = scaled(
        ru.get("maxUnavailable").unwrap_or(&json!("25%")),
        want,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn is_recreate(d: &Value) -> bool {
    text(d, "/spec/strategy/type") == "Recreate"
}

/// Sets `spec.replicas` (and the revision annotation, when given) of a ReplicaSet.
async fn update_rs(
    store: &Storage,
    rs: &mut Value,
    count: i64,
    rev: Option<i64>,
) -> Result<(), ObjectError> {
    if replicas(rs) == count && rev.is_none_or(|r| revision(rs) == r) {
        return Ok(());
    }
    let ns = text(rs, "/metadata/namespace").to_string();
    let name = text(rs, "/metadata/name").to_string();
    *rs = store
        .modify(&REPLICA_SETS, Some(&ns), &name, None, |r| {
            r["spec"]["replicas"] = json!(count);
            if let Some(rev) = rev {
                r["metadata"]["annotations"][REVISION] = json!(rev.to_string());
            }
            Ok::<(), ObjectError>(())
        })
        .await?;
    Ok(())
}

/// The new ReplicaSet of a Deployment for revision `rev`, with `count` replicas.
async fn create_new_rs(
    store: &Storage,
    d: &Value,
    rev: i64,
    count: i64,
) -> Result<Value, ObjectError> {
    let ns = text(d, "/metadata/namespace");
    let template = &d["spec"]["template"];
    for collisions in 0..5 {
        let hash = template_hash(&without_hash(template), collisions);
        let mut t = template.clone();
        t["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
        let mut labels = t["metadata"]["labels"].clone();
        labels[POD_TEMPLATE_HASH] = json!(hash);
        let rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{}-{hash}", text(d, "/metadata/name")),
                "namespace": ns,
                "labels": labels,
                "annotations": {
                    REVISION: rev.to_string(),
                    "deployment.kubernetes.io/desired-replicas": replicas(d).to_string(),
                    "deployment.kubernetes.io/max-replicas":
                        (replicas(d) + fenceposts(d).0).to_string(),
                },
                "ownerReferences": [controller_ref(&DEPLOYMENTS, d)],
            },
            "spec": {
                "replicas": count,
                "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                "selector": selector,
                "template": t,
            },
        });
        match store.create(&REPLICA_SETS, Some(ns), rs).await {
            Ok(created) => return Ok(created),
            // A ReplicaSet of that name not ours (or of an older template): next hash.
            Err(ObjectError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ObjectError::Conflict {
        resource: REPLICA_SETS.qualified_name(),
        name: text(d, "/metadata/name").to_string(),
    })
}

/// Upstream `reconcileOldReplicaSets` for RollingUpdate: scale down unhealthy old replicas,
/// then old ones while availability stays at or above `replicas - maxUnavailable`.
async fn scale_down_old(
    store: &Storage,
    d: &Value,
    new_rs: &Value,
    old: &mut [Value],
) -> Result<(), ObjectError> {
    let old_count: i64 = old.iter().map(replicas).sum();
    if old_count == 0 {
        return Ok(());
    }
    let (_, max_unavailable) = fenceposts(d);
    let min_available = replicas(d) - max_unavailable;
    let all = |old: &[Value]| old.iter().map(replicas).sum::<i64>() + replicas(new_rs);
    let new_unavailable = replicas(new_rs) - status_count(new_rs, "availableReplicas");
    let max_scaled_down = all(old) - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(());
    }
    old.sort_by_key(|r| text(r, "/metadata/creationTimestamp").to_string());
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = replicas(rs) - status_count(rs, "availableReplicas");
        if replicas(rs) == 0 || unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down - cleaned);
        let count = replicas(rs) - down;
        update_rs(store, rs, count, None).await?;
        cleaned += down;
    }
    let available: i64 = old
        .iter()
        .map(|r| status_count(r, "availableReplicas"))
        .sum::<i64>()
        + status_count(new_rs, "availableReplicas");
    if available <= min_available {
        return Ok(());
    }
    let total = available - min_available;
    let mut done = 0;
    for rs in old.iter_mut() {
        if done >= total {
            break;
        }
        if replicas(rs) == 0 {
            continue;
        }
        let down = replicas(rs).min(total - done);
        let count = replicas(rs) - down;
        update_rs(store, rs, count, None).await?;
        done += down;
    }
    Ok(())
}

fn condition(kind: &str, status: &str, reason: &str, message: String, prev: &Value) -> Value {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let old = prev["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind));
    let transition = match old {
        Some(o) if o["status"] == status => o["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let update = match old {
        Some(o) if o["status"] == status && o["reason"] == reason => o["lastUpdateTime"].clone(),
        _ => json!(now),
    };
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": update, "lastTransitionTime": transition})
}

/// The status of a Deployment from its ReplicaSets.
fn status_for(d: &Value, new_rs: &Value, all: &[&Value], created: bool) -> Value {
    let sum = |k: &str| all.iter().map(|r| status_count(r, k)).sum::<i64>();
    let want = replicas(d);
    let available = sum("availableReplicas");
    let (_, max_unavailable) = fenceposts(d);
    let new_name = text(new_rs, "/metadata/name");
    let available_cond = if available >= want - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            d,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            d,
        )
    };
    let updated = status_count(new_rs, "replicas");
    let complete = updated == want
        && status_count(new_rs, "availableReplicas") == want
        && sum("replicas") == want;
    let counts = [
        ("replicas", sum("replicas")),
        ("updatedReplicas", updated),
        ("readyReplicas", sum("readyReplicas")),
        ("availableReplicas", available),
    ];
    let prev = d["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"));
    let prev_reason = prev.map(|c| text(c, "/reason")).unwrap_or_default();
    // Progress is any change in the counts (or a resume); it restarts the deadline's clock.
    let progressed = counts
        .iter()
        .any(|(k, n)| d["status"][*k].as_i64().unwrap_or(0) != *n)
        || prev_reason == "DeploymentPaused";
    let deadline_passed = || {
        if prev_reason == "ProgressDeadlineExceeded" {
            return true;
        }
        let Some(secs) = d["spec"]["progressDeadlineSeconds"].as_i64() else {
            return false;
        };
        prev.and_then(|c| c["lastUpdateTime"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t + chrono::Duration::seconds(secs) < Utc::now())
    };
    let progressing = if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            d,
        )
    } else if d["spec"]["paused"] == true {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            d,
        )
    } else if !created && !progressed && deadline_passed() {
        condition(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            d,
        )
    } else if progressed && !created {
        let mut c = condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            d,
        );
        c["lastUpdateTime"] = json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
        c
    } else if created {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
            d,
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            d,
        )
    };
    let mut status = json!({
        "observedGeneration": d["metadata"]["generation"].as_i64().unwrap_or(1),
        "conditions": [available_cond, progressing],
    });
    for (k, n) in [
        ("replicas", sum("replicas")),
        ("updatedReplicas", updated),
        ("readyReplicas", sum("readyReplicas")),
        ("availableReplicas", available),
        ("unavailableReplicas", (want - available).max(0)),
    ] {
        if n > 0 {
            status[k] = json!(n);
        }
    }
    status
}

/// Whether two statuses differ other than in condition timestamps.
fn status_changed(old: &Value, new: &Value) -> bool {
    let strip = |s: &Value| {
        let mut s = s.clone();
        if let Some(cs) = s.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastUpdateTime");
                    c.remove("lastTransitionTime");
                }
            }
        }
        s
    };
    strip(old) != strip(new)
}

/// Syncs one Deployment against the ReplicaSets of its namespace.
pub async fn sync_one(store: &Storage, d: &Value, sets: &[Value]) -> Result<(), ObjectError> {
    if d.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
        || selector_is_empty(&d["spec"]["selector"])
    {
        return Ok(());
    }
    let ns = text(d, "/metadata/namespace");
    let name = text(d, "/metadata/name");
    let uid = text(d, "/metadata/uid");
    let mut owned: Vec<Value> = Vec::new();
    for rs in sets {
        match controller_uid(rs) {
            Some(u) if u == uid => owned.push(rs.clone()),
            None if selector_matches(&d["spec"]["selector"], &labels_of(rs)) => {
                let reference = controller_ref(&DEPLOYMENTS, d);
                let rs_name = text(rs, "/metadata/name");
                if let Ok(adopted) = store
                    .modify(&REPLICA_SETS, Some(ns), rs_name, None, |r| {
                        if controller_uid(r).is_some() {
                            return Err(ObjectError::Conflict {
                                resource: REPLICA_SETS.qualified_name(),
                                name: rs_name.to_string(),
                            });
                        }
                        r["metadata"]["ownerReferences"] = json!([reference.clone()]);
                        Ok(())
                    })
                    .await
                {
                    owned.push(adopted);
                }
            }
            _ => {}
        }
    }
    let template = without_hash(&d["spec"]["template"]);
    let max_rev = owned.iter().map(revision).max().unwrap_or(0);
    let (mut new_list, mut old): (Vec<Value>, Vec<Value>) = owned
        .into_iter()
        .partition(|rs| without_hash(&rs["spec"]["template"]) == template);
    // Several equal templates (should not happen): the oldest is the new one.
    new_list.sort_by_key(|r| text(r, "/metadata/creationTimestamp").to_string());
    let mut extra = new_list.split_off(new_list.len().min(1));
    old.append(&mut extra);
    let want = replicas(d);
    let paused = d["spec"]["paused"] == true;
    let mut created = false;
    let mut new_rs = match new_list.pop() {
        Some(mut rs) => {
            // A template rolled back to: it becomes the newest revision.
            let rev = if revision(&rs) < max_rev || max_rev == 0 {
                Some(max_rev.max(1) + i64::from(revision(&rs) < max_rev))
            } else {
                None
            };
            let count = replicas(&rs);
            update_rs(store, &mut rs, count, rev).await?;
            rs
        }
        None if paused => return Ok(()),
        None => {
            let old_total: i64 = old.iter().map(replicas).sum();
            let initial = if is_recreate(d) || old_total == 0 {
                if is_recreate(d) && old_total > 0 {
                    0
                } else {
                    want
                }
            } else {
                let (surge, _) = fenceposts(d);
                (want + surge - old_total).clamp(0, want)
            };
            created = true;
            let rs = create_new_rs(store, d, max_rev + 1, initial).await?;
            tracing::info!(component = COMPONENT, deployment = %name, replicaset = %text(&rs, "/metadata/name"), "created new replica set");
            rs
        }
    };
    if !paused {
        if is_recreate(d) {
            for rs in old.iter_mut() {
                update_rs(store, rs, 0, None).await?;
            }
            let old_pods: i64 = old.iter().map(|r| status_count(r, "replicas")).sum();
            if old_pods == 0 {
                update_rs(store, &mut new_rs, want, None).await?;
            }
        } else if old.iter().all(|r| replicas(r) == 0) {
            update_rs(store, &mut new_rs, want, None).await?;
        } else {
            let (surge, _) = fenceposts(d);
            let total: i64 = old.iter().map(replicas).sum::<i64>() + replicas(&new_rs);
            let room = want + surge - total;
            if replicas(&new_rs) > want {
                update_rs(store, &mut new_rs, want, None).await?;
            } else if room > 0 {
                let count = (replicas(&new_rs) + room).min(want);
                update_rs(store, &mut new_rs, count, None).await?;
            }
            scale_down_old(store, d, &new_rs, &mut old).await?;
        }
    }
    // History: drop the oldest empty old ReplicaSets beyond revisionHistoryLimit.
    let limit = d["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let mut empty: Vec<&Value> = old
        .iter()
        .filter(|r| replicas(r) == 0 && status_count(r, "replicas") == 0)
        .collect();
    if empty.len() > limit {
        empty.sort_by_key(|r| revision(r));
        for rs in &empty[..empty.len() - limit] {
            let rs_name = text(rs, "/metadata/name");
            match store
                .delete(&REPLICA_SETS, Some(ns), rs_name, None, None)
                .await
            {
                Ok(_) | Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut all: Vec<&Value> = old.iter().collect();
    all.push(&new_rs);
    let status = status_for(d, &new_rs, &all, created);
    let rev = revision(&new_rs).to_string();
    let needs_rev = d["metadata"]["annotations"][REVISION].as_str() != Some(rev.as_str());
    if needs_rev || status_changed(&d["status"], &status) {
        store
            .modify(&DEPLOYMENTS, Some(ns), name, None, |cur| {
                if text(cur, "/metadata/uid") == uid {
                    cur["metadata"]["annotations"][REVISION] = json!(rev.clone());
                    cur["status"] = status.clone();
                }
                Ok::<(), ObjectError>(())
            })
            .await?;
    }
    Ok(())
}

/// Syncs every Deployment; returns the revision the lists were read at.
pub async fn sync_all(store: &Storage) -> Result<i64, ObjectError> {
    let deployments = store
        .list(&DEPLOYMENTS, None, &ListOptions::default())
        .await?;
    let sets = store
        .list(&REPLICA_SETS, None, &ListOptions::default())
        .await?;
    let by_ns = driven::by_namespace(&sets.items);
    for d in &deployments.items {
        let in_ns = by_ns
            .get(text(d, "/metadata/namespace"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Err(e) = sync_one(store, d, in_ns).await {
            tracing::debug!(component = COMPONENT, deployment = %text(d, "/metadata/name"), "sync failed: {e}");
        }
    }
    Ok(deployments.resource_version.min(sets.resource_version))
}

/// Runs the controller while leading, until `cancel`.
pub async fn run(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    driven::run(
        cell,
        is_leader,
        cancel,
        COMPONENT,
        &[&DEPLOYMENTS, &REPLICA_SETS],
        |store| async move { sync_all(&store).await },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store() -> Storage {
        Storage::new(crate::datastore::Datastore::from_impl(Arc::new(
            crate::datastore::memory::MemoryStore::default(),
        )))
    }

    fn deployment(image: &str, strategy: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                        "strategy": strategy,
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    async fn sets(store: &Storage) -> Vec<Value> {
        let mut items = store
            .list(&REPLICA_SETS, Some("default"), &ListOptions::default())
            .await
            .unwrap()
            .items;
        items.sort_by_key(revision);
        items
    }

    async fn set_image(store: &Storage, image: &str) {
        store
            .modify(&DEPLOYMENTS, Some("default"), "web", None, |d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        let d = deployment(
            "x",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        assert_eq!(fenceposts(&d), (1, 1));
        let mut d5 = d.clone();
        d5["spec"]["replicas"] = json!(5);
        assert_eq!(fenceposts(&d5), (2, 1));
        let zero = deployment(
            "x",
            json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
        );
        assert_eq!(fenceposts(&zero), (0, 1));
        assert_ne!(
            template_hash(&json!({"a": 1}), 0),
            template_hash(&json!({"a": 1}), 1)
        );
        assert!(
            template_hash(&json!({"a": 1}), 0)
                .bytes()
                .all(|b| SAFE_ALPHABET.contains(&b))
        );
    }

    #[tokio::test]
    async fn rolling_update_respects_surge_and_availability() {
        let store = store();
        let rolling =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
        let mut d = deployment("x:1", rolling);
        (DEPLOYMENTS.on_create)(&mut d);
        store
            .create(&DEPLOYMENTS, Some("default"), d)
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        let first = sets(&store).await;
        assert_eq!(first.len(), 1);
        let hash = text(&first[0], "/metadata/labels/pod-template-hash").to_string();
        assert_eq!(text(&first[0], "/metadata/name"), format!("web-{hash}"));
        assert_eq!(
            first[0]["spec"]["selector"]["matchLabels"][POD_TEMPLATE_HASH],
            hash.as_str()
        );
        assert_eq!(replicas(&first[0]), 4);
        assert_eq!(revision(&first[0]), 1);
        let d = store
            .get(&DEPLOYMENTS, Some("default"), "web")
            .await
            .unwrap();
        assert_eq!(d["metadata"]["annotations"][REVISION], "1");
        assert_eq!(
            d["status"]["conditions"][1]["reason"],
            "NewReplicaSetCreated"
        );
        assert_eq!(d["status"]["conditions"][0]["status"], "False");

        // The old pods are all available (as the ReplicaSet controller would report).
        store
            .modify(
                &REPLICA_SETS,
                Some("default"),
                text(&first[0], "/metadata/name"),
                None,
                |r| {
                    r["status"] =
                        json!({"replicas": 4, "readyReplicas": 4, "availableReplicas": 4});
                    Ok::<(), ObjectError>(())
                },
            )
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        let d = store
            .get(&DEPLOYMENTS, Some("default"), "web")
            .await
            .unwrap();
        assert_eq!(
            d["status"]["conditions"][0]["reason"],
            "MinimumReplicasAvailable"
        );
        assert_eq!(
            d["status"]["conditions"][1]["reason"],
            "NewReplicaSetAvailable"
        );

        set_image(&store, "x:2").await;
        sync_all(&store).await.unwrap();
        let both = sets(&store).await;
        assert_eq!(both.len(), 2);
        // Surge 1: the new one gets 1 (5 in all); unavailability 1: one old one goes.
        assert_eq!(revision(&both[1]), 2);
        assert_eq!(replicas(&both[1]), 1);
        assert_eq!(replicas(&both[0]), 3);
        let total: i64 = both.iter().map(replicas).sum();
        assert!(total <= 5);
    }

    #[tokio::test]
    async fn recreate_empties_old_sets_first_and_history_is_limited() {
        let store = store();
        let mut d = deployment("x:1", json!({"type": "Recreate"}));
        d["spec"]["revisionHistoryLimit"] = json!(1);
        store
            .create(&DEPLOYMENTS, Some("default"), d)
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        let old_name = text(&sets(&store).await[0], "/metadata/name").to_string();
        let set_old_pods = |n: i64| {
            let (store, old_name) = (store.clone(), old_name.clone());
            async move {
                store
                    .modify(&REPLICA_SETS, Some("default"), &old_name, None, |r| {
                        r["status"] = json!({"replicas": n});
                        Ok::<(), ObjectError>(())
                    })
                    .await
                    .unwrap();
            }
        };
        set_old_pods(4).await;
        set_image(&store, "x:2").await;
        sync_all(&store).await.unwrap();
        let s = sets(&store).await;
        assert_eq!(s.len(), 2);
        assert_eq!(replicas(&s[0]), 0, "old scaled to zero");
        assert_eq!(replicas(&s[1]), 0, "new waits while old pods still run");
        // Old pods gone: the new one scales up.
        set_old_pods(0).await;
        sync_all(&store).await.unwrap();
        let s = sets(&store).await;
        assert_eq!(replicas(&s[1]), 4);
        // Two more templates: only one empty old ReplicaSet is kept.
        set_image(&store, "x:3").await;
        sync_all(&store).await.unwrap();
        sync_all(&store).await.unwrap();
        let s = sets(&store).await;
        assert_eq!(
            s.len(),
            2,
            "{:?}",
            s.iter().map(revision).collect::<Vec<_>>()
        );
        assert_eq!(revision(&s[1]), 3);
    }

    #[test]
    fn progress_deadline_and_pause_show_in_the_progressing_condition() {
        let long_ago =
            (Utc::now() - chrono::Duration::seconds(60)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 2},
                        "status": {"replicas": 2}});
        let mut d = json!({"metadata": {"name": "web", "generation": 1},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 30},
            "status": {"replicas": 2, "updatedReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True",
                    "reason": "ReplicaSetUpdated", "message": "",
                    "lastUpdateTime": long_ago, "lastTransitionTime": long_ago}]}});
        let progressing = |d: &Value| {
            let s = status_for(d, &rs, &[&rs], false);
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Progressing")
                .cloned()
                .unwrap()
        };
        // No progress for longer than the deadline: timed out.
        let c = progressing(&d);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("ProgressDeadlineExceeded"))
        );
        assert_eq!(
            c["message"],
            "ReplicaSet \"web-1\" has timed out progressing."
        );
        // Once timed out it stays so while nothing changes.
        d["status"]["conditions"][0] = c;
        let c = progressing(&d);
        assert_eq!(c["reason"], "ProgressDeadlineExceeded");
        // Progress (a count changes) restarts the clock.
        d["status"]["updatedReplicas"] = json!(1);
        let c = progressing(&d);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some("ReplicaSetUpdated"))
        );
        // A paused Deployment is neither progressing nor late.
        d["spec"]["paused"] = json!(true);
        let c = progressing(&d);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("Unknown"), Some("DeploymentPaused"))
        );
        // Within the deadline nothing is reported late.
        d["spec"]["paused"] = json!(false);
        d["status"]["updatedReplicas"] = json!(2);
        d["spec"]["progressDeadlineSeconds"] = json!(600);
        d["status"]["conditions"][0]["reason"] = json!("ReplicaSetUpdated");
        let c = progressing(&d);
        assert_eq!(c["reason"], "ReplicaSetUpdated");
    }

    #[tokio::test]
    async fn a_stuck_rollout_times_out_on_a_later_sync() {
        let store = store();
        let mut d = deployment("x", json!({"type": "RollingUpdate"}));
        d["spec"]["progressDeadlineSeconds"] = json!(3);
        d["spec"]["replicas"] = json!(2);
        store
            .create(&DEPLOYMENTS, Some("default"), d)
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        sync_all(&store).await.unwrap();
        let reason = |d: &Value| {
            d["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Progressing")
                .unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let d = store
            .get(&DEPLOYMENTS, Some("default"), "web")
            .await
            .unwrap();
        assert_ne!(reason(&d), "ProgressDeadlineExceeded", "{d}");
        let long_ago =
            (Utc::now() - chrono::Duration::seconds(60)).to_rfc3339_opts(SecondsFormat::Secs, true);
        store
            .modify(&DEPLOYMENTS, Some("default"), "web", None, |d| {
                for c in d["status"]["conditions"].as_array_mut().unwrap() {
                    c["lastUpdateTime"] = json!(long_ago);
                }
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        let d = store
            .get(&DEPLOYMENTS, Some("default"), "web")
            .await
            .unwrap();
        assert_eq!(reason(&d), "ProgressDeadlineExceeded", "{d}");
    }
}
