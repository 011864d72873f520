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
//! used (docs/workloads-batch.md).

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
use crate::registry::job::{has_condition, is_finished};
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
    let succeeded = (owned.iter().filter(|p| phase(p) == "Succeeded").count() as i64)
        .max(status["succeeded"].as_i64().unwrap_or(0));
    let failed_pods: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| phase(p) == "Failed")
        .collect();
    let failed = (failed_pods.len() as i64).max(status["failed"].as_i64().unwrap_or(0));

    let mut conditions: Vec<Value> = list(job, "/status/conditions").to_vec();
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let completions = spec["completions"].as_i64();
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
        let want = match completions {
            Some(c) => parallelism.min(c - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        } as usize;
        if active.len() < want {
            let last_failure = failed_pods.iter().filter_map(|p| finished_at(p)).max();
            let wait_until = last_failure.map(|t| t + backoff(failed));
            if wait_until.is_none_or(|t| t <= now) {
                for _ in active.len()..want {
                    let pod = store
                        .create(&PODS, Some(ns), pod_from_template(&JOBS, job))
                        .await?;
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
}
