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
//! used (see the report in docs/workloads-batch.md).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::driven;
use super::replicaset::{controller_uid, is_deleting, is_ready, pod_from_template};
use super::timed;
use crate::datastore::StoreCell;
use crate::registry::job::{has_condition, is_finished};
use crate::registry::print::{list, text, timestamp};
use crate::registry::{JOBS, PODS};
use crate::storage::pods;
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

async fn delete_pod(store: &Storage, pod: &Value) -> Result<(), ObjectError> {
    let opts = pods::DeleteOptions {
        uid: Some(text(pod, "/metadata/uid").to_string()),
        ..Default::default()
    };
    match pods::delete(
        store,
        text(pod, "/metadata/namespace"),
        text(pod, "/metadata/name"),
        &opts,
    )
    .await
    {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
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
                    let created = store
                        .create(&PODS, Some(ns), pod_from_template(&JOBS, job))
                        .await?;
                    tracing::debug!(component = COMPONENT, job = %name, pod = %text(&created, "/metadata/name"), "created pod");
                }
                // Counted as active from the next sync on, which the pod watch triggers.
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
        ("active", active.len() as i64),
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
    if job.get("status") != Some(&new_status) {
        store
            .modify(&JOBS, Some(ns), name, None, |current| {
                if text(current, "/metadata/uid") == uid {
                    current["status"] = new_status.clone();
                }
                Ok::<(), ObjectError>(())
            })
            .await?;
    }
    Ok(())
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
    timed::run(
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
