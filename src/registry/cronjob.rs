//! CronJob (batch/v1, namespaced): upstream's defaults (concurrencyPolicy Allow, suspend false,
//! 3 successful and 1 failed jobs kept), the schedule parsed as a standard 5-field cron
//! expression or a descriptor (`@hourly`) with a well-kept parser (croner), `timeZone` looked
//! up in the system's tz database (jiff reads `/usr/share/zoneinfo`, so zone updates follow the
//! OS's tzdata, as upstream's `time.LoadLocation`), the job template validated as a Job spec, a
//! `status` subresource and upstream's table columns.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::api::batch::v1 as batch;
use serde_json::{Value, json};

use super::ResourceInfo;
use super::fields::{FieldCause, cause, typed};
use super::job;
use super::print::*;
use super::workload;

/// Upstream's limit on a CronJob's name: its Jobs append an 11-character suffix.
const MAX_NAME_LEN: usize = 52;

/// `cronjobs`.
pub static CRON_JOBS: ResourceInfo = ResourceInfo {
    short_names: &["cj"],
    categories: &["all"],
    subresources: &["status"],
    type_check: typed::<batch::CronJob>,
    schema: Some(super::schema::schema_of::<batch::CronJob>),
    list_strategies: LIST_STRATEGIES,
    validate,
    tracks_generation: true,
    on_create,
    on_update,
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    go_package: "batch",
    protobuf: Some(super::protobuf::BATCH_V1),
    ..ResourceInfo::stored(
        "batch",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        "/registry/cronjobs",
    )
};

/// The pod template lists of the job template merge like a Pod's (`spec.jobTemplate.spec...`).
const LIST_STRATEGIES: &[(&str, super::ListStrategy)] = &[
    (
        "spec.jobTemplate.spec.template.spec.containers",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.containers.env",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.containers.volumeMounts",
        super::ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.containers.volumeDevices",
        super::ListStrategy::MergeByKey("devicePath"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.containers.ports",
        super::ListStrategy::MergeByKey("containerPort"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.initContainers",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.initContainers.env",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.initContainers.volumeMounts",
        super::ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.initContainers.volumeDevices",
        super::ListStrategy::MergeByKey("devicePath"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.initContainers.ports",
        super::ListStrategy::MergeByKey("containerPort"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.ephemeralContainers",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.ephemeralContainers.env",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.ephemeralContainers.volumeMounts",
        super::ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.ephemeralContainers.volumeDevices",
        super::ListStrategy::MergeByKey("devicePath"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.ephemeralContainers.ports",
        super::ListStrategy::MergeByKey("containerPort"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.volumes",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.imagePullSecrets",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.hostAliases",
        super::ListStrategy::MergeByKey("ip"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.schedulingGates",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.resourceClaims",
        super::ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.jobTemplate.spec.template.spec.topologySpreadConstraints",
        super::ListStrategy::MergeByKey("topologyKey"),
    ),
];

/// Parses a CronJob schedule as upstream's `cron.ParseStandard` reads it: five fields (minute
/// hour day-of-month month day-of-week) or a descriptor such as `@daily`.
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    let schedule = schedule.trim();
    let fields = schedule.split_whitespace().count();
    if !schedule.starts_with('@') && fields != 5 {
        return Err(format!("expected exactly 5 fields, found {fields}"));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| e.to_string())
}

/// Looks a CronJob `timeZone` up in the system's tz database, with upstream's checks
/// (`validateTimeZone`): names are case-sensitive IANA names made of parts of at most 14
/// letters, digits and `.-_+`; `Local` is refused. The error is upstream's message.
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name.is_empty() {
        return Err("timeZone must be nil or non-empty string".into());
    }
    let unknown = || format!("unknown time zone {name}");
    let valid_part = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
    };
    if !name.split('/').all(valid_part) {
        return Err(unknown());
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    // Go knows UTC without a database; jiff's lookup ignores case, Go's file lookup does not.
    if name == "UTC" {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    match jiff::tz::db().get(name) {
        Ok(tz) if tz.iana_name() == Some(name) => Ok(tz),
        _ => Err(unknown()),
    }
}

fn defaults(obj: &mut Value) {
    workload::default_spec(obj, "concurrencyPolicy", json!("Allow"));
    workload::default_spec(obj, "suspend", json!(false));
    workload::default_spec(obj, "successfulJobsHistoryLimit", json!(3));
    workload::default_spec(obj, "failedJobsHistoryLimit", json!(1));
    if let Some(spec) = obj
        .pointer_mut("/spec/jobTemplate/spec")
        .and_then(Value::as_object_mut)
    {
        job::default_job_spec(spec);
    }
    workload::default_template_at(obj, "/spec/jobTemplate/spec/template");
}

fn on_create(obj: &mut Value) {
    defaults(obj);
    obj["status"] = json!({});
}

fn on_update(_old: &Value, new: &mut Value, _causes: &mut Vec<FieldCause>) {
    defaults(new);
}

fn validate(body: &Value, causes: &mut Vec<FieldCause>) {
    let name = text(body, "/metadata/name");
    if name.len() > MAX_NAME_LEN {
        causes.push(cause(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be no more than {MAX_NAME_LEN} characters"),
        ));
    }
    let spec = &body["spec"];
    let schedule = text(spec, "/schedule");
    if schedule.is_empty() {
        causes.push(cause("spec.schedule", "Required value"));
    } else if schedule.contains("TZ") {
        causes.push(cause(
            "spec.schedule",
            format!(
                "Invalid value: \"{schedule}\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            ),
        ));
    } else if let Err(e) = parse_schedule(schedule) {
        causes.push(cause(
            "spec.schedule",
            format!("Invalid value: \"{schedule}\": {e}"),
        ));
    }
    if let Some(zone) = spec.get("timeZone").and_then(Value::as_str)
        && let Err(e) = time_zone(zone)
    {
        causes.push(cause(
            "spec.timeZone",
            format!("Invalid value: \"{zone}\": {e}"),
        ));
    }
    match text(spec, "/concurrencyPolicy") {
        "" | "Allow" | "Forbid" | "Replace" => {}
        other => causes.push(cause(
            "spec.concurrencyPolicy",
            format!(
                "Unsupported value: \"{other}\": supported values: \"Allow\", \"Forbid\", \"Replace\""
            ),
        )),
    }
    for field in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if let Some(n) = spec.get(field).and_then(Value::as_i64)
            && n < 0
        {
            causes.push(cause(
                format!("spec.{field}"),
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
    }
    let template = &spec["jobTemplate"]["spec"];
    if template.is_object() {
        job::validate_job_spec(template, "spec.jobTemplate.spec", causes);
    } else {
        causes.push(cause("spec.jobTemplate.spec", "Required value"));
    }
}

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones",
    ),
    col(
        "Suspend",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
    ),
    col("Active", "A list of pointers to currently running jobs."),
    col(
        "Last Schedule",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    wide(col(
        "Containers",
        "Names of each container in the template.",
    )),
    wide(col(
        "Images",
        "Images referenced by each container in the template.",
    )),
    wide(col(
        "Selector",
        "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    )),
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let template = &obj["spec"]["jobTemplate"];
    let containers = list(template, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    let selector = match template.pointer("/spec/selector") {
        Some(s) if s.is_object() => workload::selector_string(s),
        _ => "<none>".to_string(),
    };
    let last = match timestamp(obj.pointer("/status/lastScheduleTime")) {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<none>".to_string(),
    };
    vec![
        name(obj).into(),
        text(obj, "/spec/schedule").into(),
        or_placeholder(text(obj, "/spec/timeZone"), "<none>").into(),
        if obj.pointer("/spec/suspend") == Some(&json!(true)) {
            "True"
        } else {
            "False"
        }
        .into(),
        list(obj, "/status/active").len().into(),
        last.into(),
        age(obj, now).into(),
        names.join(",").into(),
        images.join(",").into(),
        selector.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob(schedule: &str) -> Value {
        json!({"metadata": {"name": "tick"},
               "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "OnFailure",
                   "containers": [{"name": "c", "image": "x:1"}]}}}}}})
    }

    #[test]
    fn schedules_are_parsed_and_validated() {
        for ok in ["*/1 * * * *", "0 3 * * 1-5", "@hourly"] {
            let mut causes = Vec::new();
            validate(&cronjob(ok), &mut causes);
            assert!(causes.is_empty(), "{ok}: {causes:?}");
        }
        for bad in ["* * * *", "61 * * * *", "TZ=UTC * * * * *"] {
            let mut causes = Vec::new();
            validate(&cronjob(bad), &mut causes);
            assert_eq!(causes.len(), 1, "{bad}: {causes:?}");
            assert_eq!(causes[0].field, "spec.schedule");
        }
        let mut always = cronjob("@daily");
        always["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] =
            json!("Always");
        always["spec"]["concurrencyPolicy"] = json!("Sometimes");
        let mut causes = Vec::new();
        validate(&always, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.concurrencyPolicy",
                "spec.jobTemplate.spec.template.spec.restartPolicy"
            ]
        );
    }

    #[test]
    fn time_zones_come_from_the_system_database() {
        for ok in [
            "UTC",
            "Etc/UTC",
            "America/New_York",
            "Europe/Berlin",
            "Asia/Kolkata",
        ] {
            let mut c = cronjob("0 9 * * *");
            c["spec"]["timeZone"] = json!(ok);
            let mut causes = Vec::new();
            validate(&c, &mut causes);
            assert!(causes.is_empty(), "{ok}: {causes:?}");
        }
        for (bad, message) in [
            ("Mars/Olympus", "unknown time zone Mars/Olympus"),
            ("america/new_york", "unknown time zone america/new_york"),
            ("../etc/passwd", "unknown time zone ../etc/passwd"),
            (
                "Local",
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ),
            ("", "timeZone must be nil or non-empty string"),
        ] {
            let mut c = cronjob("0 9 * * *");
            c["spec"]["timeZone"] = json!(bad);
            let mut causes = Vec::new();
            validate(&c, &mut causes);
            assert_eq!(causes.len(), 1, "{bad}: {causes:?}");
            assert_eq!(causes[0].field, "spec.timeZone");
            assert_eq!(
                causes[0].message,
                format!("Invalid value: \"{bad}\": {message}")
            );
        }
    }

    #[test]
    fn defaults_and_cells_like_upstream() {
        let mut c = cronjob("*/5 * * * *");
        on_create(&mut c);
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(c["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(c["spec"]["jobTemplate"]["spec"]["backoffLimit"], 6);
        let row = cells(&c, Utc::now());
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(row[1], "*/5 * * * *");
        assert_eq!(row[2], "<none>");
        assert_eq!(row[3], "False");
        assert_eq!(row[5], "<none>");
        assert_eq!(row[9], "<none>");
    }
}
