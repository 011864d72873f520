//! The Job controller on the leading server, as upstream's for NonIndexed Jobs: runs up to
//! `parallelism` pods at a time (never more than the completions still missing) from the
//! template, counts succeeded and failed pods (the counts never go down, so deleting a
//! finished pod does not undo it), re-creates failed pods after upstream's back-off (10 s
//! doubling per failure, at most 6 min), and fails the Job with `BackoffLimitExceeded` once more
//! pods failed than `backoffLimit` allows (or, with `restartPolicy: OnFailure`, once the
//! containers restarted that often), or with `DeadlineExceeded` after
//! `activeDeadlineSeconds`. As upstream since 1.31, `SuccessCriteriaMet`/`FailureTarget` come
//! first and the terminal `Complete`/`Failed` condition once no pod of the Job is running;
//! remaining pods are deleted. A suspended Job has its pods deleted. A finished Job with
//! `ttlSecondsAfterFinished` is deleted that long after finishing (its pods then go with the
//! garbage collector). Driven by watches on Jobs and pods plus a ticker for the timed work.
//! Pods are counted from the pods that exist: upstream's `job-tracking` finalizers are not
//! used (docs/workloads-batch.md). Indexed Jobs give each pod an index (annotation and label
//! `batch.kubernetes.io/job-completion-index`, env `JOB_COMPLETION_INDEX`, hostname
//! `<job>-<index>`), run each index until one pod of it succeeds, keep the succeeded ones in
//! `status.completedIndexes` (`0-2,4`) and complete once every index has.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::driven;
use super::replicaset::{
    controller_uid, delete_pod, is_deleting, is_ready, pod_from_template, write_status,
};
use crate::datastore::StoreCell;
use crate::registry::job::{COMPLETION_INDEX, has_condition, is_finished};
use crate::registry::print::{list, text, timestamp};
use crate::registry::{JOBS, PODS};
use crate::storage::{ListOptions, ObjectError, Storage};

const COMPONENT: &str = "job-controller";
/// How often timed work (back-off, deadlines, TTL) is looked at.
const TICK: Duration = Duration::from_secs(2);
/// Upstream's pod failure back-off: 10 s, doubled per failure, at most 6 minutes.
const BACKOFF_BASE_SECONDS: i64 = 10;
const BACKOFF_MAX_SECONDS: i64 = 360;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn phase(pod: &Value) -> &str {
    text(pod, "/status/phase")
}

/// When a finished pod finished: its containers' latest `finishedAt`, else its last condition
/// change.
fn finished_at(pod: &Value) -> Option<DateTime<Utc>> {
    let containers = list(pod, "/status/containerStatuses")
        .iter()
        .filter_map(|c| {
            timestamp(
                c.pointer("/state/terminated/finishedAt")
                    .or_else(|| c.pointer("/lastState/terminated/finishedAt")),
            )
        });
    let conditions = list(pod, "/status/conditions")
        .iter()
        .filter_map(|c| timestamp(c.get("lastTransitionTime")));
    containers.max().or_else(|| conditions.max())
}

/// The delay before the next pod after `failures` failed ones.
fn backoff(failures: i64) -> chrono::Duration {
    if failures <= 0 {
        return chrono::Duration::zero();
    }
    let shift = (failures - 1).min(16) as u32;
    chrono::Duration::seconds((BACKOFF_BASE_SECONDS << shift).min(BACKOFF_MAX_SECONDS))
}

/// Container restarts of the Job's running pods (upstream `pastBackoffLimitOnFailure`).
fn restarts(active: &[&Value]) -> i64 {
    active
        .iter()
        .flat_map(|p| {
            list(p, "/status/containerStatuses")
                .iter()
                .chain(list(p, "/status/initContainerStatuses"))
        })
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum()
}

/// The completion index of an Indexed Job's pod, when it has a valid one (below `completions`).
fn completion_index(pod: &Value, completions: i64) -> Option<i64> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(COMPLETION_INDEX))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|i| (0..completions).contains(i))
}

/// Parses `status.completedIndexes` (`1,3-5,7`); malformed parts are skipped.
fn parse_indexes(s: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bounds = match part.split_once('-') {
            Some((a, b)) => a.parse::<i64>().ok().zip(b.parse::<i64>().ok()),
            None => part.parse::<i64>().ok().map(|i| (i, i)),
        };
        if let Some((a, b)) = bounds {
            out.extend(a..=b);
        }
    }
    out
}

/// Formats indexes as upstream does: ascending, runs of two or more as `first-last`.
fn format_indexes(indexes: &BTreeSet<i64>) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &i in indexes {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The pod of an Indexed Job for `index` (upstream `addCompletionIndexAnnotation`,
/// `addCompletionIndexEnvVariables` and the `<job>-<index>` hostname and name prefix).
fn indexed_pod(job: &Value, index: i64) -> Value {
    let mut pod = pod_from_template(&JOBS, job);
    let name = text(job, "/metadata/name");
    let meta = &mut pod["metadata"];
    meta["generateName"] = json!(format!("{name}-{index}-"));
    for key in ["annotations", "labels"] {
        if !meta[key].is_object() {
            meta[key] = json!({});
        }
        meta[key][COMPLETION_INDEX] = json!(index.to_string());
    }
    let spec = &mut pod["spec"];
    if text(spec, "/hostname").is_empty() {
        spec["hostname"] = json!(format!("{name}-{index}"));
    }
    let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if !c["env"].is_array() {
                c["env"] = json!([]);
            }
            if let Some(vars) = c["env"].as_array_mut()
                && !vars.iter().any(|v| v["name"] == "JOB_COMPLETION_INDEX")
            {
                vars.push(env.clone());
            }
        }
    }
    pod
}

fn condition(kind: &str, reason: &str, message: &str, now: DateTime<Utc>) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": rfc3339(now), "lastTransitionTime": rfc3339(now)})
}

/// Adds `c` to `conditions` unless one of its type is already there.
fn add_condition(conditions: &mut Vec<Value>, c: Value) {
    if !conditions.iter().any(|have| have["type"] == c["type"]) {
        conditions.push(c);
    }
}

/// Syncs one Job against the pods of its namespace at `now`.
pub async fn sync_one(
    store: &Storage,
    job: &Value,
    pods_in_ns: &[Value],
    now: DateTime<Utc>,
) -> Result<(), ObjectError> {
    if is_deleting(job) {
        return Ok(());
    }
    let ns = text(job, "/metadata/namespace");
    let name = text(job, "/metadata/name");
    let uid = text(job, "/metadata/uid");
    let spec = &job["spec"];
    let status = &job["status"];

    if is_finished(job) {
        if let Some(ttl) = spec["ttlSecondsAfterFinished"].as_i64() {
            let finished = timestamp(status.get("completionTime")).or_else(|| {
                list(job, "/status/conditions")
                    .iter()
                    .filter(|c| c["type"] == "Complete" || c["type"] == "Failed")
                    .filter_map(|c| timestamp(c.get("lastTransitionTime")))
                    .max()
            });
            if finished.is_some_and(|t| t + chrono::Duration::seconds(ttl) <= now) {
                match store.delete(&JOBS, Some(ns), name, Some(uid), None).await {
                    Ok(_) | Err(ObjectError::NotFound { .. }) => {
                        tracing::info!(component = COMPONENT, job = %name, "deleted finished job after ttlSecondsAfterFinished");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        return Ok(());
    }

    let owned: Vec<&Value> = pods_in_ns
        .iter()
        .filter(|p| controller_uid(p) == Some(uid))
        .collect();
    let mut active: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| !is_deleting(p) && phase(p) != "Succeeded" && phase(p) != "Failed")
        .collect();
    let terminating = owned
        .iter()
        .filter(|p| is_deleting(p) && phase(p) != "Succeeded" && phase(p) != "Failed")
        .count() as i64;
    let indexed = text(spec, "/completionMode") == "Indexed";
    let completions = spec["completions"].as_i64();
    // Indexed: the indexes with a succeeded pod, which never go (status keeps them).
    let mut completed = BTreeSet::new();
    if indexed {
        completed = parse_indexes(text(status, "/completedIndexes"));
        completed.extend(
            owned
                .iter()
                .filter(|p| phase(p) == "Succeeded")
                .filter_map(|p| completion_index(p, completions.unwrap_or(0))),
        );
    }
    let succeeded = if indexed {
        completed.len() as i64
    } else {
        (owned.iter().filter(|p| phase(p) == "Succeeded").count() as i64)
            .max(status["succeeded"].as_i64().unwrap_or(0))
    };
    let failed_pods: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| phase(p) == "Failed")
        .collect();
    let failed = (failed_pods.len() as i64).max(status["failed"].as_i64().unwrap_or(0));

    let mut conditions: Vec<Value> = list(job, "/status/conditions").to_vec();
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let suspended = spec["suspend"] == true;
    let start = timestamp(status.get("startTime")).or((!suspended).then_some(now));

    // Success and failure targets, decided once and kept.
    let success = has_condition(job, "SuccessCriteriaMet")
        || match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
    let on_failure_restarts = restarts(&active);
    let past_backoff = failed > backoff_limit
        || (text(spec, "/template/spec/restartPolicy") == "OnFailure"
            && if backoff_limit == 0 {
                on_failure_restarts > 0
            } else {
                on_failure_restarts >= backoff_limit
            });
    let past_deadline = spec["activeDeadlineSeconds"]
        .as_i64()
        .zip(start)
        .is_some_and(|(d, s)| s + chrono::Duration::seconds(d) <= now);
    let failure = if let Some(c) = conditions.iter().find(|c| c["type"] == "FailureTarget") {
        Some((
            text(c, "/reason").to_string(),
            text(c, "/message").to_string(),
        ))
    } else if success {
        None
    } else if past_backoff {
        Some((
            "BackoffLimitExceeded".to_string(),
            "Job has reached the specified backoff limit".to_string(),
        ))
    } else if past_deadline {
        Some((
            "DeadlineExceeded".to_string(),
            "Job was active longer than specified deadline".to_string(),
        ))
    } else {
        None
    };

    let mut terminating = terminating;
    // Pods created by this pass count as active at once, as upstream's expectations do.
    let mut created = 0;
    if success || failure.is_some() || suspended {
        // Nothing more runs: stop what still does.
        for p in active.drain(..) {
            delete_pod(store, p).await?;
            terminating += 1;
        }
    } else {
        // Indexed: one running pod per index still missing; pods of a succeeded index, of no
        // valid index or of an index another pod already runs go.
        let mut running = BTreeSet::new();
        if indexed {
            active.sort_by_key(|p| text(p, "/metadata/creationTimestamp").to_string());
            let mut keep = Vec::with_capacity(active.len());
            for p in active.drain(..) {
                match completion_index(p, completions.unwrap_or(0)) {
                    Some(i) if !completed.contains(&i) && running.insert(i) => keep.push(p),
                    _ => {
                        delete_pod(store, p).await?;
                        terminating += 1;
                    }
                }
            }
            active = keep;
        }
        let want = match completions {
            Some(c) => parallelism.min(c - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        } as usize;
        if active.len() < want {
            let last_failure = failed_pods.iter().filter_map(|p| finished_at(p)).max();
            let wait_until = last_failure.map(|t| t + backoff(failed));
            if wait_until.is_none_or(|t| t <= now) {
                let mut pending = (0..completions.unwrap_or(0))
                    .filter(|i| !completed.contains(i) && !running.contains(i));
                for _ in active.len()..want {
                    let template = if indexed {
                        match pending.next() {
                            Some(i) => indexed_pod(job, i),
                            None => break,
                        }
                    } else {
                        pod_from_template(&JOBS, job)
                    };
                    let pod = store.create(&PODS, Some(ns), template).await?;
                    tracing::debug!(component = COMPONENT, job = %name, pod = %text(&pod, "/metadata/name"), "created pod");
                    created += 1;
                }
            }
        } else if active.len() > want {
            active.sort_by_key(|p| {
                std::cmp::Reverse(text(p, "/metadata/creationTimestamp").to_string())
            });
            for p in active.drain(..active.len() - want) {
                delete_pod(store, p).await?;
                terminating += 1;
            }
        }
    }

    let mut completion_time = status.get("completionTime").cloned();
    if success {
        add_condition(
            &mut conditions,
            condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ),
        );
        if active.is_empty() && terminating == 0 {
            add_condition(
                &mut conditions,
                condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
            );
            completion_time.get_or_insert_with(|| json!(rfc3339(now)));
        }
    } else if let Some((reason, message)) = &failure {
        add_condition(
            &mut conditions,
            condition("FailureTarget", reason, message, now),
        );
        if active.is_empty() && terminating == 0 {
            add_condition(&mut conditions, condition("Failed", reason, message, now));
        }
    }
    if suspended && !success && failure.is_none() {
        add_condition(
            &mut conditions,
            condition("Suspended", "JobSuspended", "Job suspended", now),
        );
    } else {
        conditions.retain(|c| c["type"] != "Suspended");
    }

    let mut new_status = json!({
        "ready": active.iter().filter(|p| is_ready(p)).count(),
        "terminating": terminating,
        "uncountedTerminatedPods": {},
    });
    if let Some(s) = start.filter(|_| !suspended || status.get("startTime").is_some()) {
        new_status["startTime"] = status
            .get("startTime")
            .cloned()
            .unwrap_or_else(|| json!(rfc3339(s)));
    }
    // Go's `omitempty` leaves zero counts out.
    for (k, n) in [
        ("active", active.len() as i64 + created),
        ("succeeded", succeeded),
        ("failed", failed),
    ] {
        if n > 0 {
            new_status[k] = json!(n);
        }
    }
    if !completed.is_empty() {
        new_status["completedIndexes"] = json!(format_indexes(&completed));
    }
    if let Some(t) = completion_time {
        new_status["completionTime"] = t;
    }
    if !conditions.is_empty() {
        new_status["conditions"] = json!(conditions);
    }
    write_status(store, &JOBS, job, new_status).await
}

/// Syncs every Job at `now`; returns the revision the lists were read at.
pub async fn sync_all_at(store: &Storage, now: DateTime<Utc>) -> Result<i64, ObjectError> {
    let jobs = store.list(&JOBS, None, &ListOptions::default()).await?;
    // Every Pod write wakes this controller: without jobs, reading (and decoding) every Pod
    // would find nothing to do.
    if jobs.items.is_empty() {
        return Ok(jobs.resource_version);
    }
    let all_pods = store.list(&PODS, None, &ListOptions::default()).await?;
    let by_ns = driven::by_namespace(&all_pods.items);
    for job in &jobs.items {
        let pods = by_ns
            .get(text(job, "/metadata/namespace"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Err(e) = sync_one(store, job, pods, now).await {
            tracing::debug!(component = COMPONENT, job = %text(job, "/metadata/name"), "sync failed: {e}");
        }
    }
    Ok(jobs.resource_version.min(all_pods.resource_version))
}

/// Runs the controller while leading, until `cancel`.
pub async fn run(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    driven::run_every(
        cell,
        is_leader,
        cancel,
        COMPONENT,
        &[&JOBS, &PODS],
        TICK,
        |store| async move { sync_all_at(&store, Utc::now()).await },
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

    fn job(name: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x:1"}]}});
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    #[tokio::test]
    async fn without_jobs_pods_are_not_read() {
        let memory = Arc::new(crate::datastore::memory::MemoryStore::default());
        let store = Storage::new(crate::datastore::Datastore::from_impl(memory.clone()));
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        store.create(&PODS, Some("default"), pod).await.unwrap();
        memory.listed();
        sync_all_at(&store, Utc::now()).await.unwrap();
        assert_eq!(
            memory.listed().into_keys().collect::<Vec<_>>(),
            [JOBS.list_prefix(None)]
        );
        store
            .create(&JOBS, Some("default"), job("j", json!({"completions": 1})))
            .await
            .unwrap();
        memory.listed();
        sync_all_at(&store, Utc::now()).await.unwrap();
        assert!(memory.listed().contains_key(&PODS.list_prefix(None)));
    }

    async fn owned(store: &Storage, uid: &str) -> Vec<Value> {
        store
            .list(&PODS, Some("default"), &ListOptions::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| controller_uid(p) == Some(uid))
            .collect()
    }

    async fn finish(store: &Storage, pod: &Value, phase: &str, at: DateTime<Utc>) {
        let name = text(pod, "/metadata/name").to_string();
        store
            .modify(&PODS, Some("default"), &name, None, |p| {
                p["status"]["phase"] = json!(phase);
                p["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": 0,
                    "state": {"terminated": {"exitCode": if phase == "Failed" { 1 } else { 0 },
                                             "finishedAt": rfc3339(at)}}}]);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
    }

    async fn get(store: &Storage, name: &str) -> Value {
        store.get(&JOBS, Some("default"), name).await.unwrap()
    }

    fn condition_types(job: &Value) -> Vec<String> {
        list(job, "/status/conditions")
            .iter()
            .map(|c| text(c, "/type").to_string())
            .collect()
    }

    #[tokio::test]
    async fn runs_to_completion_with_parallelism() {
        let store = store();
        let created = store
            .create(
                &JOBS,
                Some("default"),
                job("calc", json!({"completions": 3, "parallelism": 2})),
            )
            .await
            .unwrap();
        let uid = text(&created, "/metadata/uid").to_string();
        let now = Utc::now();
        sync_all_at(&store, now).await.unwrap();
        let pods = owned(&store, &uid).await;
        assert_eq!(pods.len(), 2, "parallelism 2");
        assert!(text(&pods[0], "/metadata/name").starts_with("calc-"));
        assert_eq!(
            pods[0]["metadata"]["labels"][crate::registry::job::JOB_NAME_LABEL],
            "calc"
        );
        let j = get(&store, "calc").await;
        assert_eq!(j["status"]["active"], 2);
        assert!(j["status"]["startTime"].is_string());

        for p in &pods {
            finish(&store, p, "Succeeded", now).await;
        }
        sync_all_at(&store, now).await.unwrap();
        // Only one completion is missing: one more pod, not two.
        assert_eq!(owned(&store, &uid).await.len(), 3);
        let j = get(&store, "calc").await;
        assert_eq!(j["status"]["succeeded"], 2);
        assert_eq!(j["status"]["active"], 1);
        assert!(condition_types(&j).is_empty());

        let last = owned(&store, &uid)
            .await
            .into_iter()
            .find(|p| phase(p) == "Pending")
            .unwrap();
        finish(&store, &last, "Succeeded", now).await;
        sync_all_at(&store, now).await.unwrap();
        let j = get(&store, "calc").await;
        assert_eq!(j["status"]["succeeded"], 3);
        assert!(j["status"].get("active").is_none());
        assert_eq!(condition_types(&j), ["SuccessCriteriaMet", "Complete"]);
        assert!(j["status"]["completionTime"].is_string());
        // Finished: nothing more is created.
        sync_all_at(&store, now).await.unwrap();
        assert_eq!(owned(&store, &uid).await.len(), 3);
    }

    #[tokio::test]
    async fn failures_back_off_and_stop_at_the_backoff_limit() {
        let store = store();
        let created = store
            .create(
                &JOBS,
                Some("default"),
                job("fail", json!({"backoffLimit": 1})),
            )
            .await
            .unwrap();
        let uid = text(&created, "/metadata/uid").to_string();
        let t0 = Utc::now();
        sync_all_at(&store, t0).await.unwrap();
        let first = owned(&store, &uid).await;
        assert_eq!(first.len(), 1);
        finish(&store, &first[0], "Failed", t0).await;

        // Within the 10 s back-off: no new pod yet.
        sync_all_at(&store, t0 + chrono::Duration::seconds(5))
            .await
            .unwrap();
        assert_eq!(owned(&store, &uid).await.len(), 1);
        let j = get(&store, "fail").await;
        assert_eq!(j["status"]["failed"], 1);
        assert!(condition_types(&j).is_empty());

        // After it: the second try.
        sync_all_at(&store, t0 + chrono::Duration::seconds(11))
            .await
            .unwrap();
        let pods = owned(&store, &uid).await;
        assert_eq!(pods.len(), 2);
        let second = pods.iter().find(|p| phase(p) == "Pending").unwrap();
        finish(&store, second, "Failed", t0 + chrono::Duration::seconds(12)).await;

        // Two failures > backoffLimit 1: Failed, and no third pod ever.
        let later = t0 + chrono::Duration::seconds(600);
        sync_all_at(&store, later).await.unwrap();
        let j = get(&store, "fail").await;
        assert_eq!(j["status"]["failed"], 2);
        assert_eq!(condition_types(&j), ["FailureTarget", "Failed"]);
        let failed = list(&j, "/status/conditions")
            .iter()
            .find(|c| c["type"] == "Failed")
            .unwrap();
        assert_eq!(failed["reason"], "BackoffLimitExceeded");
        sync_all_at(&store, later).await.unwrap();
        assert_eq!(owned(&store, &uid).await.len(), 2);
    }

    #[tokio::test]
    async fn finished_jobs_expire_after_their_ttl() {
        let store = store();
        let created = store
            .create(
                &JOBS,
                Some("default"),
                job("short", json!({"ttlSecondsAfterFinished": 30})),
            )
            .await
            .unwrap();
        let uid = text(&created, "/metadata/uid").to_string();
        let t0 = Utc::now();
        sync_all_at(&store, t0).await.unwrap();
        let pod = owned(&store, &uid).await.remove(0);
        finish(&store, &pod, "Succeeded", t0).await;
        sync_all_at(&store, t0).await.unwrap();
        assert!(is_finished(&get(&store, "short").await));
        sync_all_at(&store, t0 + chrono::Duration::seconds(10))
            .await
            .unwrap();
        assert!(
            store
                .get_opt(&JOBS, Some("default"), "short")
                .await
                .unwrap()
                .is_some()
        );
        sync_all_at(&store, t0 + chrono::Duration::seconds(31))
            .await
            .unwrap();
        assert!(
            store
                .get_opt(&JOBS, Some("default"), "short")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn backoff_doubles_up_to_six_minutes() {
        assert_eq!(backoff(0).num_seconds(), 0);
        assert_eq!(backoff(1).num_seconds(), 10);
        assert_eq!(backoff(3).num_seconds(), 40);
        assert_eq!(backoff(40).num_seconds(), 360);
    }

    #[test]
    fn completed_indexes_are_written_as_upstream() {
        let set: BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(parse_indexes("x,3"), [3].into_iter().collect());
    }

    fn index_of(pod: &Value) -> i64 {
        completion_index(pod, 100).unwrap()
    }

    #[tokio::test]
    async fn indexed_jobs_run_each_index_until_it_succeeds() {
        let store = store();
        let created = store
            .create(
                &JOBS,
                Some("default"),
                job(
                    "idx",
                    json!({"completions": 3, "parallelism": 2, "completionMode": "Indexed"}),
                ),
            )
            .await
            .unwrap();
        let uid = text(&created, "/metadata/uid").to_string();
        let t0 = Utc::now();
        sync_all_at(&store, t0).await.unwrap();
        let mut pods = owned(&store, &uid).await;
        pods.sort_by_key(index_of);
        assert_eq!(pods.iter().map(index_of).collect::<Vec<_>>(), [0, 1]);
        let p1 = &pods[1];
        assert_eq!(p1["metadata"]["labels"][COMPLETION_INDEX], "1");
        assert!(text(p1, "/metadata/name").starts_with("idx-1-"));
        assert_eq!(p1["spec"]["hostname"], "idx-1");
        assert_eq!(
            p1["spec"]["containers"][0]["env"][0],
            json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
        );

        // Index 1 succeeds, index 0 fails: after the back-off, index 0 runs again and 2 starts.
        finish(&store, &pods[1], "Succeeded", t0).await;
        finish(&store, &pods[0], "Failed", t0).await;
        sync_all_at(&store, t0).await.unwrap();
        assert_eq!(owned(&store, &uid).await.len(), 2, "within the back-off");
        let j = get(&store, "idx").await;
        assert_eq!(j["status"]["completedIndexes"], "1");
        assert_eq!(j["status"]["succeeded"], 1);
        sync_all_at(&store, t0 + chrono::Duration::seconds(11))
            .await
            .unwrap();
        let mut running: Vec<i64> = owned(&store, &uid)
            .await
            .iter()
            .filter(|p| phase(p) == "Pending")
            .map(index_of)
            .collect();
        running.sort();
        assert_eq!(
            running,
            [0, 2],
            "the failed index runs again, not the succeeded one"
        );

        for p in owned(&store, &uid).await {
            if phase(&p) == "Pending" {
                finish(&store, &p, "Succeeded", t0).await;
            }
        }
        let later = t0 + chrono::Duration::seconds(20);
        sync_all_at(&store, later).await.unwrap();
        let j = get(&store, "idx").await;
        assert_eq!(j["status"]["completedIndexes"], "0-2");
        assert_eq!(j["status"]["succeeded"], 3);
        assert_eq!(condition_types(&j), ["SuccessCriteriaMet", "Complete"]);
        // The finished pods may go: the completed indexes stay.
        for p in owned(&store, &uid).await {
            store
                .delete(
                    &PODS,
                    Some("default"),
                    text(&p, "/metadata/name"),
                    None,
                    None,
                )
                .await
                .unwrap();
        }
        sync_all_at(&store, later).await.unwrap();
        assert_eq!(
            get(&store, "idx").await["status"]["completedIndexes"],
            "0-2"
        );
    }
}
