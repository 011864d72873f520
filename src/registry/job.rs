//! Job (batch/v1, namespaced): upstream's defaults (parallelism and completions 1 when neither
//! is given, backoffLimit 6, NonIndexed completion), the generated selector and the
//! `batch.kubernetes.io/controller-uid` / `job-name` template labels, upstream's validation of
//! the counts and of the pod template's restart policy (OnFailure or Never), the immutable
//! selector and template, a `status` subresource and upstream's table columns. Both
//! completion modes are served; `Indexed` needs `completions`, as upstream.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1 as batch;
use serde_json::{Map, Value, json};

use super::ResourceInfo;
use super::fields::{FieldCause, cause, typed};
use super::print::*;
use super::workload;

/// The label (and selector key) naming a Job's uid on its pods.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label naming a Job on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Upstream's bound on `completions` and `parallelism` of Indexed Jobs.
const MAX_INDEXED_COMPLETIONS: i64 = 100_000;
/// The legacy forms of the two labels, which upstream still sets.
const LEGACY_LABELS: [&str; 2] = ["controller-uid", "job-name"];

/// `jobs`.
pub static JOBS: ResourceInfo = ResourceInfo {
    categories: &["all"],
    subresources: &["status"],
    type_check: typed::<batch::Job>,
    schema: Some(super::schema::schema_of::<batch::Job>),
    list_strategies: super::workload::LIST_STRATEGIES,
    lists: &[super::schema::conditions("io.k8s.api.batch.v1.JobStatus")],
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
    ..ResourceInfo::stored("batch", "jobs", "job", "Job", true, "/registry/jobs")
};

/// Upstream's Job spec defaults on the spec object itself (shared with CronJob templates).
pub fn default_job_spec(spec: &mut Map<String, Value>) {
    if !spec.contains_key("completions") && !spec.contains_key("parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    spec.entry("parallelism").or_insert(json!(1));
    spec.entry("backoffLimit").or_insert(json!(6));
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    spec.entry("podReplacementPolicy")
        .or_insert(json!("TerminatingOrFailed"));
}

fn on_create(obj: &mut Value) {
    let uid = text(obj, "/metadata/uid").to_string();
    let name = text(obj, "/metadata/name").to_string();
    let manual = obj.pointer("/spec/manualSelector") == Some(&json!(true));
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        default_job_spec(spec);
        if !manual {
            // Upstream generates the selector from the Job's own uid, so no other Job's pods
            // can ever match it.
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {CONTROLLER_UID_LABEL: uid}}),
            );
            let template = spec.entry("template").or_insert(json!({}));
            if let Some(t) = template.as_object_mut() {
                let meta = t.entry("metadata").or_insert(json!({}));
                if !meta.is_object() {
                    *meta = json!({});
                }
                let labels = meta
                    .as_object_mut()
                    .map(|m| m.entry("labels").or_insert(json!({})));
                if let Some(Value::Object(labels)) = labels {
                    for (k, v) in [
                        (CONTROLLER_UID_LABEL, &uid),
                        (JOB_NAME_LABEL, &name),
                        (LEGACY_LABELS[0], &uid),
                        (LEGACY_LABELS[1], &name),
                    ] {
                        labels.insert(k.into(), json!(v));
                    }
                }
            }
        }
    }
    workload::default_template(obj);
    obj["status"] = json!({});
}

fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        default_job_spec(spec);
    }
    workload::default_template(new);
    workload::selector_immutable(old, new, causes);
    for field in ["template", "completions", "completionMode"] {
        if old["spec"].get(field) != new["spec"].get(field) {
            causes.push(cause(
                format!("spec.{field}"),
                "Invalid value: field is immutable",
            ));
        }
    }
}

fn non_negative(spec: &Value, path: &str, field: &str, causes: &mut Vec<FieldCause>) {
    if let Some(n) = spec.get(field).and_then(Value::as_i64)
        && n < 0
    {
        causes.push(cause(
            format!("{path}.{field}"),
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
}

/// Validates a Job spec at `path` (`spec`, `spec.jobTemplate.spec`), as upstream's
/// `ValidateJobSpec` does for the parts this server implements.
pub fn validate_job_spec(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, path, field, causes);
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && n <= 0
    {
        causes.push(cause(
            format!("{path}.activeDeadlineSeconds"),
            format!("Invalid value: {n}: must be greater than 0"),
        ));
    }
    match text(spec, "/completionMode") {
        "" | "NonIndexed" => {}
        "Indexed" => {
            // Defaulting gives a Job with neither count `completions: 1` before upstream
            // validates; here validation comes first, so only a lone `parallelism` is missing it.
            if spec.get("completions").is_none_or(Value::is_null)
                && spec.get("parallelism").is_some_and(|p| !p.is_null())
            {
                causes.push(cause(
                    format!("{path}.completions"),
                    "Required value: when completion mode is Indexed",
                ));
            }
            for field in ["completions", "parallelism"] {
                if let Some(n) = spec.get(field).and_then(Value::as_i64)
                    && n > MAX_INDEXED_COMPLETIONS
                {
                    causes.push(cause(
                        format!("{path}.{field}"),
                        format!(
                            "Invalid value: {n}: must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed"
                        ),
                    ));
                }
            }
        }
        other => causes.push(cause(
            format!("{path}.completionMode"),
            format!(
                "Unsupported value: \"{other}\": supported values: \"NonIndexed\", \"Indexed\""
            ),
        )),
    }
    let selector = &spec["selector"];
    if selector.is_object() {
        let labels = workload::labels_of(&spec["template"]);
        if workload::selector_is_empty(selector) {
            causes.push(cause(format!("{path}.selector"), "Required value"));
        } else if !workload::selector_matches(selector, &labels) {
            causes.push(cause(
                format!("{path}.template.metadata.labels"),
                "Invalid value: `selector` does not match template `labels`",
            ));
        }
    } else if spec.get("manualSelector") == Some(&json!(true)) {
        causes.push(cause(format!("{path}.selector"), "Required value"));
    }
    if !workload::validate_template(spec, path, causes) {
        return;
    }
    match text(spec, "/template/spec/restartPolicy") {
        "OnFailure" | "Never" => {}
        _ => causes.push(cause(
            format!("{path}.template.spec.restartPolicy"),
            "Required value: valid values: \"OnFailure\", \"Never\"",
        )),
    }
}

fn validate(body: &Value, causes: &mut Vec<FieldCause>) {
    validate_job_spec(&body["spec"], "spec", causes);
}

/// Whether a Job has a condition of type `kind` with status `True`.
pub fn has_condition(job: &Value, kind: &str) -> bool {
    list(job, "/status/conditions")
        .iter()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// Whether a Job has finished (Complete or Failed).
pub fn is_finished(job: &Value) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

const COLUMNS: &[Column] = &[
    NAME,
    col("Status", "Status of the job."),
    col(
        "Completions",
        "The desired number of successfully finished pods the job should be run with.  Setting to null means that the success of any pod signals the success of all pods, and allows parallelism to have any positive value.  Setting to 1 means that parallelism is limited to 1 and the success of that pod signals the success of the job. More info: https://kubernetes.io/docs/concepts/workloads/controllers/jobs-run-to-completion/",
    ),
    col("Duration", "Time required to complete the job."),
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

/// Upstream `printJob`'s STATUS cell.
fn status_cell(job: &Value) -> &'static str {
    if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if job
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let [containers, images, selector] = workload::wide_cells(obj);
    let succeeded = int(obj, "/status/succeeded");
    let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(obj, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = timestamp(obj.pointer("/status/startTime"));
    let end = timestamp(obj.pointer("/status/completionTime"));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.signed_duration_since(s)),
        (Some(s), Some(e)) => human_duration(e.signed_duration_since(s)),
    };
    vec![
        name(obj).into(),
        status_cell(obj).into(),
        completions.into(),
        duration.into(),
        age(obj, now).into(),
        containers,
        images,
        selector,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Value {
        json!({"metadata": {"name": "pi", "uid": "u-1"},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "c", "image": "x:1"}]}}}})
    }

    #[test]
    fn defaults_and_generated_selector_like_upstream() {
        let mut j = job();
        let mut causes = Vec::new();
        validate(&j, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        on_create(&mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {CONTROLLER_UID_LABEL: "u-1"}})
        );
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        validate(&j, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");

        // Only parallelism given: completions stays unset (work-queue jobs).
        let mut wq = job();
        wq["spec"]["parallelism"] = json!(3);
        on_create(&mut wq);
        assert!(wq["spec"].get("completions").is_none());
        assert_eq!(cells(&wq, Utc::now())[2], "0/1 of 3");

        // The template may not change.
        let mut changed = j.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("x:2");
        let mut causes = Vec::new();
        on_update(&j, &mut changed, &mut causes);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template");
    }

    #[test]
    fn restart_policy_and_counts_are_validated() {
        let mut j = job();
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        j["spec"]["backoffLimit"] = json!(-1);
        let mut causes = Vec::new();
        validate(&j, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.backoffLimit", "spec.template.spec.restartPolicy"]
        );
    }

    #[test]
    fn indexed_jobs_need_completions() {
        let mut j = job();
        j["spec"]["completionMode"] = json!("Indexed");
        j["spec"]["parallelism"] = json!(2);
        let mut causes = Vec::new();
        validate(&j, &mut causes);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.completions");
        assert_eq!(
            causes[0].message,
            "Required value: when completion mode is Indexed"
        );
        j["spec"]["completions"] = json!(3);
        let mut causes = Vec::new();
        validate(&j, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        j["spec"]["completionMode"] = json!("Sometimes");
        validate(&j, &mut causes);
        assert_eq!(causes[0].field, "spec.completionMode");
    }

    #[test]
    fn cells_follow_upstream() {
        let now = Utc::now();
        let mut j = job();
        on_create(&mut j);
        j["status"] = json!({"succeeded": 1,
            "startTime": (now - chrono::Duration::seconds(30)).to_rfc3339(),
            "completionTime": (now - chrono::Duration::seconds(20)).to_rfc3339(),
            "conditions": [{"type": "Complete", "status": "True"}]});
        let row = cells(&j, now);
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(row[1], "Complete");
        assert_eq!(row[2], "1/1");
        assert_eq!(row[3], "10s");
    }
}
