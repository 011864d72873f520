//! The CronJob controller on the leading server, as upstream's: at each scheduled time (in the
//! CronJob's `timeZone`, UTC when unset; see [`due`] for daylight saving time) it
//! creates a Job `<cronjob>-<minutes since the epoch>` from the job template, owned by the
//! CronJob and annotated with the scheduled time. Only the most recent missed time is run, and
//! not at all when it is more than `startingDeadlineSeconds` late. `concurrencyPolicy` decides
//! what happens while a Job still runs: Allow starts another, Forbid skips the run, Replace
//! deletes the running Jobs first. A suspended CronJob starts nothing. Finished Jobs beyond
//! `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are deleted oldest first (their pods
//! go with the garbage collector). Status keeps the running Jobs (`active`),
//! `lastScheduleTime` and `lastSuccessfulTime`. Driven by watches on CronJobs and Jobs plus a
//! ticker for the schedule; the clock is a parameter so tests control it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::driven;
use super::replicaset::{controller_ref, controller_uid, is_deleting, write_status};
use crate::datastore::StoreCell;
use crate::registry::job::has_condition;
use crate::registry::print::{created, text, timestamp};
use crate::registry::{CRON_JOBS, JOBS, parse_schedule, time_zone};
use crate::storage::{ListOptions, ObjectError, Storage};

const COMPONENT: &str = "cronjob-controller";
/// How often schedules are looked at.
const TICK: Duration = Duration::from_secs(1);
/// The annotation upstream puts on a Job with the time it was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// How many spring-forward gaps a search steps over before giving up (one per year at most).
const MAX_GAP_SKIPS: usize = 8;

/// The CronJob's time zone: `spec.timeZone` from the system tz database, UTC when unset.
fn zone_of(cj: &Value) -> Result<jiff::tz::TimeZone, String> {
    match cj["spec"].get("timeZone").and_then(Value::as_str) {
        Some(name) => time_zone(name),
        None => Ok(jiff::tz::TimeZone::UTC),
    }
}

/// The most recent scheduled time not after `now`. Scheduled times are the instants whose wall
/// clock time in the CronJob's zone matches the schedule, as upstream's cron library computes
/// them: a time that a spring-forward gap skips does not run that day (croner would move it
/// past the gap; such results are passed over). In a fall-back overlap a fixed time runs once,
/// at its first pass (croner's rule; upstream's library runs it in both passes).
pub fn previous_run(
    cron: &croner::Cron,
    zone: jiff::tz::TimeZone,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let now = jiff::Timestamp::from_second(now.timestamp())
        .ok()?
        .to_zoned(zone);
    let mut t = cron.find_previous_occurrence(&now, true).ok()?;
    let mut skips = 0;
    while !cron.is_time_matching(&t).ok()? {
        skips += 1;
        if skips > MAX_GAP_SKIPS {
            return None;
        }
        t = cron.find_previous_occurrence(&t, false).ok()?;
    }
    DateTime::from_timestamp(t.timestamp().as_second(), 0)
}

/// The time a CronJob should run now: the most recent scheduled time after its last run (or
/// its creation) and not after `now`, unless that is later than `startingDeadlineSeconds`.
pub fn due(cj: &Value, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = parse_schedule(text(cj, "/spec/schedule")).ok()?;
    let zone = zone_of(cj).ok()?;
    let mut earliest = timestamp(cj.pointer("/status/lastScheduleTime")).or_else(|| created(cj))?;
    if let Some(deadline) = cj["spec"]["startingDeadlineSeconds"].as_i64() {
        earliest = earliest.max(now - chrono::Duration::seconds(deadline));
    }
    let t = previous_run(&cron, zone, now)?;
    (t > earliest).then_some(t)
}

/// The Job of `cj` for scheduled time `t`.
fn job_for(cj: &Value, t: DateTime<Utc>) -> Value {
    let template = &cj["spec"]["jobTemplate"];
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!(format!(
        "{}-{}",
        text(cj, "/metadata/name"),
        t.timestamp() / 60
    ));
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = json!({});
    }
    metadata["annotations"][SCHEDULED_TIMESTAMP] = json!(rfc3339(t));
    metadata["ownerReferences"] = json!([controller_ref(&CRON_JOBS, cj)]);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template["spec"].clone()})
}

/// A reference to a Job, as `status.active` lists them.
fn reference(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": text(job, "/metadata/name"),
        "namespace": text(job, "/metadata/namespace"),
        "uid": text(job, "/metadata/uid"),
        "resourceVersion": text(job, "/metadata/resourceVersion"),
    })
}

async fn delete_job(store: &Storage, job: &Value) -> Result<(), ObjectError> {
    let (ns, name) = (
        text(job, "/metadata/namespace"),
        text(job, "/metadata/name"),
    );
    match store
        .delete(
            &JOBS,
            Some(ns),
            name,
            Some(text(job, "/metadata/uid")),
            None,
        )
        .await
    {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the oldest of `finished` beyond `limit`.
async fn trim(store: &Storage, mut finished: Vec<&Value>, limit: i64) -> Result<(), ObjectError> {
    let limit = limit.max(0) as usize;
    if finished.len() <= limit {
        return Ok(());
    }
    finished.sort_by_key(|j| {
        (
            text(j, "/metadata/creationTimestamp").to_string(),
            text(j, "/metadata/name").to_string(),
        )
    });
    let surplus = finished.len() - limit;
    for job in &finished[..surplus] {
        delete_job(store, job).await?;
    }
    Ok(())
}

/// Syncs one CronJob against the Jobs of its namespace at `now`.
pub async fn sync_one(
    store: &Storage,
    cj: &Value,
    jobs_in_ns: &[Value],
    now: DateTime<Utc>,
) -> Result<(), ObjectError> {
    if is_deleting(cj) {
        return Ok(());
    }
    let ns = text(cj, "/metadata/namespace");
    let name = text(cj, "/metadata/name");
    let uid = text(cj, "/metadata/uid");
    let owned: Vec<&Value> = jobs_in_ns
        .iter()
        .filter(|j| controller_uid(j) == Some(uid) && !is_deleting(j))
        .collect();
    let complete: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|j| has_condition(j, "Complete"))
        .collect();
    let failed: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|j| has_condition(j, "Failed"))
        .collect();
    let mut active: Vec<Value> = owned
        .iter()
        .filter(|j| !has_condition(j, "Complete") && !has_condition(j, "Failed"))
        .map(|j| (*j).clone())
        .collect();

    let mut last_schedule = cj["status"].get("lastScheduleTime").cloned();
    if let Err(e) = zone_of(cj) {
        // The zone left the system's database after the CronJob was admitted.
        tracing::warn!(component = COMPONENT, cronjob = %name, "no runs: {e}");
    }
    if cj["spec"]["suspend"] != true
        && let Some(t) = due(cj, now)
    {
        let policy = text(cj, "/spec/concurrencyPolicy");
        if policy == "Forbid" && !active.is_empty() {
            tracing::debug!(component = COMPONENT, cronjob = %name, "skipping a run: a job is still active (Forbid)");
        } else {
            if policy == "Replace" {
                for job in active.drain(..) {
                    delete_job(store, &job).await?;
                }
            }
            match store.create(&JOBS, Some(ns), job_for(cj, t)).await {
                Ok(job) => {
                    tracing::info!(component = COMPONENT, cronjob = %name, job = %text(&job, "/metadata/name"), "created scheduled job");
                    active.push(job);
                }
                // Created before (by a previous leader that did not record it).
                Err(ObjectError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            last_schedule = Some(json!(rfc3339(t)));
        }
    }

    trim(
        store,
        complete.clone(),
        cj["spec"]["successfulJobsHistoryLimit"]
            .as_i64()
            .unwrap_or(3),
    )
    .await?;
    trim(
        store,
        failed,
        cj["spec"]["failedJobsHistoryLimit"].as_i64().unwrap_or(1),
    )
    .await?;

    let mut status = json!({});
    if !active.is_empty() {
        active.sort_by_key(|j| text(j, "/metadata/name").to_string());
        status["active"] = Value::Array(active.iter().map(reference).collect());
    }
    if let Some(t) = last_schedule {
        status["lastScheduleTime"] = t;
    }
    let last_success = complete
        .iter()
        .filter_map(|j| timestamp(j.pointer("/status/completionTime")))
        .max()
        .map(|t| json!(rfc3339(t)))
        .or_else(|| cj["status"].get("lastSuccessfulTime").cloned());
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = t;
    }
    write_status(store, &CRON_JOBS, cj, status).await
}

/// Syncs every CronJob at `now`; returns the revision the lists were read at.
pub async fn sync_all_at(store: &Storage, now: DateTime<Utc>) -> Result<i64, ObjectError> {
    let cronjobs = store
        .list(&CRON_JOBS, None, &ListOptions::default())
        .await?;
    let jobs = store.list(&JOBS, None, &ListOptions::default()).await?;
    let by_ns = driven::by_namespace(&jobs.items);
    for cj in &cronjobs.items {
        let in_ns = by_ns
            .get(text(cj, "/metadata/namespace"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Err(e) = sync_one(store, cj, in_ns, now).await {
            tracing::debug!(component = COMPONENT, cronjob = %text(cj, "/metadata/name"), "sync failed: {e}");
        }
    }
    Ok(cronjobs.resource_version.min(jobs.resource_version))
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
        &[&CRON_JOBS, &JOBS],
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

    fn cronjob(name: &str, extra: Value) -> Value {
        let mut spec = json!({"schedule": "*/1 * * * *",
            "jobTemplate": {"metadata": {"labels": {"from": "cron"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "x:1"}]}}}}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    /// The CronJob's Jobs, by name.
    async fn jobs_of(store: &Storage, uid: &str) -> Vec<Value> {
        let mut out: Vec<Value> = store
            .list(&JOBS, Some("default"), &ListOptions::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|j| controller_uid(j) == Some(uid))
            .collect();
        out.sort_by_key(|j| text(j, "/metadata/name").to_string());
        out
    }

    async fn complete(store: &Storage, job: &Value, kind: &str) {
        store
            .modify(
                &JOBS,
                Some("default"),
                text(job, "/metadata/name"),
                None,
                |j| {
                    j["status"]["conditions"] = json!([{"type": kind, "status": "True"}]);
                    j["status"]["completionTime"] = json!(rfc3339(Utc::now()));
                    Ok::<(), ObjectError>(())
                },
            )
            .await
            .unwrap();
    }

    async fn create(store: &Storage, cj: Value) -> (String, DateTime<Utc>) {
        let created = store.create(&CRON_JOBS, Some("default"), cj).await.unwrap();
        (
            text(&created, "/metadata/uid").to_string(),
            created_at(&created),
        )
    }

    fn created_at(obj: &Value) -> DateTime<Utc> {
        created(obj).unwrap()
    }

    fn minute(t: DateTime<Utc>, n: i64) -> DateTime<Utc> {
        let floor = t.timestamp() - t.timestamp().rem_euclid(60);
        DateTime::from_timestamp(floor + 60 * n, 0).unwrap()
    }

    #[tokio::test]
    async fn fires_on_schedule_and_allows_overlap() {
        let store = store();
        let (uid, c) = create(&store, cronjob("tick", json!({}))).await;
        // Before the first full minute after creation: nothing.
        sync_all_at(&store, minute(c, 1) - chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert!(jobs_of(&store, &uid).await.is_empty());

        let t1 = minute(c, 1) + chrono::Duration::seconds(2);
        sync_all_at(&store, t1).await.unwrap();
        sync_all_at(&store, t1).await.unwrap();
        let jobs = jobs_of(&store, &uid).await;
        assert_eq!(jobs.len(), 1, "one job per scheduled time");
        let job = &jobs[0];
        assert_eq!(
            text(job, "/metadata/name"),
            format!("tick-{}", minute(c, 1).timestamp() / 60)
        );
        assert_eq!(job["metadata"]["labels"]["from"], "cron");
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            rfc3339(minute(c, 1))
        );
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        let cj = store
            .get(&CRON_JOBS, Some("default"), "tick")
            .await
            .unwrap();
        assert_eq!(cj["status"]["lastScheduleTime"], rfc3339(minute(c, 1)));
        assert_eq!(
            cj["status"]["active"][0]["name"],
            text(job, "/metadata/name")
        );

        // Several missed minutes: only the latest runs; Allow lets it overlap the first.
        sync_all_at(&store, minute(c, 4) + chrono::Duration::seconds(1))
            .await
            .unwrap();
        let jobs = jobs_of(&store, &uid).await;
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            text(&jobs[1], "/metadata/name"),
            format!("tick-{}", minute(c, 4).timestamp() / 60)
        );
    }

    #[tokio::test]
    async fn forbid_skips_and_replace_replaces() {
        let store = store();
        let (forbid, c) = create(
            &store,
            cronjob("forbid", json!({"concurrencyPolicy": "Forbid"})),
        )
        .await;
        let (replace, _) = create(
            &store,
            cronjob("replace", json!({"concurrencyPolicy": "Replace"})),
        )
        .await;
        let t1 = minute(c, 1) + chrono::Duration::seconds(1);
        sync_all_at(&store, t1).await.unwrap();
        let t2 = minute(c, 2) + chrono::Duration::seconds(1);
        sync_all_at(&store, t2).await.unwrap();
        let f = jobs_of(&store, &forbid).await;
        assert_eq!(f.len(), 1, "Forbid: no second job while the first runs");
        let r = jobs_of(&store, &replace).await;
        assert_eq!(r.len(), 1, "Replace: the first job is gone");
        assert_eq!(
            text(&r[0], "/metadata/name"),
            format!("replace-{}", minute(c, 2).timestamp() / 60)
        );
        // Once the Forbid job finished, the next time runs.
        complete(&store, &f[0], "Complete").await;
        sync_all_at(&store, minute(c, 3) + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(jobs_of(&store, &forbid).await.len(), 2);
        let cj = store
            .get(&CRON_JOBS, Some("default"), "forbid")
            .await
            .unwrap();
        assert!(cj["status"]["lastSuccessfulTime"].is_string());
    }

    #[tokio::test]
    async fn history_limits_and_suspend() {
        let store = store();
        let (uid, c) = create(
            &store,
            cronjob(
                "hist",
                json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}),
            ),
        )
        .await;
        for n in 1..=3 {
            sync_all_at(&store, minute(c, n) + chrono::Duration::seconds(1))
                .await
                .unwrap();
        }
        let jobs = jobs_of(&store, &uid).await;
        assert_eq!(jobs.len(), 3);
        complete(&store, &jobs[0], "Complete").await;
        complete(&store, &jobs[1], "Complete").await;
        complete(&store, &jobs[2], "Failed").await;
        sync_all_at(&store, minute(c, 3) + chrono::Duration::seconds(2))
            .await
            .unwrap();
        let left = jobs_of(&store, &uid).await;
        assert_eq!(left.len(), 1, "one successful job kept, no failed one");
        assert_eq!(
            text(&left[0], "/metadata/name"),
            text(&jobs[1], "/metadata/name")
        );

        store
            .modify(&CRON_JOBS, Some("default"), "hist", None, |cj| {
                cj["spec"]["suspend"] = json!(true);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        sync_all_at(&store, minute(c, 6) + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(
            jobs_of(&store, &uid).await.len(),
            1,
            "suspended: nothing runs"
        );
    }

    #[test]
    fn starting_deadline_skips_late_runs() {
        let c: DateTime<Utc> = "2026-01-01T00:00:30Z".parse().unwrap();
        let mut cj = cronjob("late", json!({"startingDeadlineSeconds": 10}));
        cj["metadata"]["creationTimestamp"] = json!(rfc3339(c));
        let on_time: DateTime<Utc> = "2026-01-01T00:01:05Z".parse().unwrap();
        assert_eq!(
            due(&cj, on_time),
            Some("2026-01-01T00:01:00Z".parse().unwrap())
        );
        let late: DateTime<Utc> = "2026-01-01T00:01:20Z".parse().unwrap();
        assert_eq!(due(&cj, late), None);
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn prev(schedule: &str, zone: &str, now: &str) -> Option<String> {
        let cron = parse_schedule(schedule).unwrap();
        previous_run(&cron, time_zone(zone).unwrap(), utc(now)).map(rfc3339)
    }

    #[test]
    fn schedules_follow_the_time_zone_across_dst() {
        // 09:00 in Berlin is 08:00Z in winter and 07:00Z in summer (DST from 2026-03-29).
        let at9 = |now| prev("0 9 * * *", "Europe/Berlin", now);
        assert_eq!(at9("2026-03-28T12:00:00Z").unwrap(), "2026-03-28T08:00:00Z");
        assert_eq!(at9("2026-03-30T12:00:00Z").unwrap(), "2026-03-30T07:00:00Z");
        // New York springs forward on 2026-03-08 at 02:00: 02:30 does not exist that day and
        // does not run (upstream's cron library skips it); the day before and after it does.
        let at230 = |now| prev("30 2 * * *", "America/New_York", now);
        assert_eq!(
            at230("2026-03-08T16:00:00Z").unwrap(),
            "2026-03-07T07:30:00Z"
        );
        assert_eq!(
            at230("2026-03-09T12:00:00Z").unwrap(),
            "2026-03-09T06:30:00Z"
        );
        // Hourly schedules keep running through the gap (03:00 EDT is 07:00Z).
        assert_eq!(
            prev("0 * * * *", "America/New_York", "2026-03-08T07:10:00Z").unwrap(),
            "2026-03-08T07:00:00Z"
        );
        // Falling back on 2026-11-01 at 02:00: 01:30 runs once, at its first pass (05:30Z).
        let at130 = |now| prev("30 1 * * *", "America/New_York", now);
        assert_eq!(
            at130("2026-11-01T06:45:00Z").unwrap(),
            "2026-11-01T05:30:00Z"
        );
        // UTC and Etc/UTC are plain.
        assert_eq!(
            prev("*/5 * * * *", "Etc/UTC", "2026-06-01T10:07:00Z").unwrap(),
            "2026-06-01T10:05:00Z"
        );
    }

    #[tokio::test]
    async fn a_time_zone_moves_the_run() {
        let store = store();
        // 10:00 in Kolkata (UTC+05:30) is 04:30Z.
        let c = store
            .create(
                &CRON_JOBS,
                Some("default"),
                cronjob(
                    "tz",
                    json!({"schedule": "0 10 * * *", "timeZone": "Asia/Kolkata"}),
                ),
            )
            .await
            .unwrap();
        let uid = text(&c, "/metadata/uid").to_string();
        let created = created(&c).unwrap();
        // The first 04:30Z after the CronJob was made.
        let mut run = created
            .date_naive()
            .and_hms_opt(4, 30, 0)
            .unwrap()
            .and_utc();
        if run <= created {
            run += chrono::Duration::days(1);
        }
        sync_all_at(&store, run - chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert!(jobs_of(&store, &uid).await.is_empty());
        sync_all_at(&store, run + chrono::Duration::seconds(1))
            .await
            .unwrap();
        let jobs = jobs_of(&store, &uid).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            jobs[0]["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            rfc3339(run)
        );
    }
}
