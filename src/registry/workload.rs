//! What the apps/v1 workload kinds (ReplicaSet, Deployment) share: label selectors in their
//! `metav1.LabelSelector` form (matching, the string form of `Scale.status.selector`), the pod
//! template's defaults and validation, and the CONTAINERS/IMAGES/SELECTOR table cells.

use super::ListStrategy;
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::fields::{FieldCause, cause};
use super::pod_spec;
use super::print::{list, text};

/// The labels of an object (`metadata.labels`), as strings.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Whether a `metav1.LabelSelector` selects `labels`. An empty selector selects everything, as
/// `metav1.LabelSelectorAsSelector` does; callers refuse empty selectors where upstream does.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    match_labels
        && list(selector, "/matchExpressions").iter().all(|e| {
            let key = text(e, "/key");
            let values: Vec<&str> = list(e, "/values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let have = labels.get(key).map(String::as_str);
            match text(e, "/operator") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => !have.is_some_and(|h| values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// Whether a selector has no requirement at all.
pub fn selector_is_empty(selector: &Value) -> bool {
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty())
        && list(selector, "/matchExpressions").is_empty()
}

/// The string form of a `metav1.LabelSelector` (`app=web,tier in (a,b)`), as
/// `metav1.FormatLabelSelector` prints it: requirements sorted by key.
pub fn selector_string(selector: &Value) -> String {
    let mut parts: Vec<(String, String)> = Vec::new();
    for (k, v) in selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        parts.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
    }
    for e in list(selector, "/matchExpressions") {
        let key = text(e, "/key");
        let mut values: Vec<&str> = list(e, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let s = match text(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        parts.push((key.to_string(), s));
    }
    parts.sort();
    parts
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

/// Go's `%v` of a `map[string]string`, as upstream prints template labels in messages.
fn go_map(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", inner.join(" "))
}

/// Defaults of a workload's `spec.template` (the pod spec defaults upstream applies to it).
pub fn default_template(obj: &mut Value) {
    default_template_at(obj, "/spec/template");
}

/// Defaults of the pod template at `pointer` (`/spec/jobTemplate/spec/template`).
pub fn default_template_at(obj: &mut Value, pointer: &str) {
    if let Some(template) = obj.pointer_mut(pointer)
        && template.is_object()
    {
        pod_spec::apply_defaults(template);
    }
}

/// Sets `spec.<key>` to `value` unless the body has it.
pub fn default_spec(obj: &mut Value, key: &str, value: Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry(key.to_string()).or_insert(value);
    }
}

/// The validation apps/v1 applies to a ReplicaSet or Deployment spec: replicas not negative, a
/// non-empty selector that selects the template's labels, a valid pod template.
pub fn validate_spec(body: &Value, causes: &mut Vec<FieldCause>) {
    let spec = &body["spec"];
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64)
        && r < 0
    {
        causes.push(cause(
            "spec.replicas",
            format!("Invalid value: {r}: must be greater than or equal to 0"),
        ));
    }
    let selector = &spec["selector"];
    let template_labels = labels_of(&spec["template"]);
    if !selector.is_object() {
        causes.push(cause("spec.selector", "Required value"));
    } else if selector_is_empty(selector) {
        causes.push(cause(
            "spec.selector",
            format!(
                "Invalid value: \"{}\": empty selector is invalid for deployment",
                selector_string(selector)
            ),
        ));
    } else if !selector_matches(selector, &template_labels) {
        causes.push(cause(
            "spec.template.metadata.labels",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                go_map(&template_labels)
            ),
        ));
    }
    if !validate_template(spec, "spec", causes) {
        return;
    }
    let restart = text(spec, "/template/spec/restartPolicy");
    if !restart.is_empty() && restart != "Always" {
        causes.push(cause(
            "spec.template.spec.restartPolicy",
            format!("Unsupported value: \"{restart}\": supported values: \"Always\""),
        ));
    }
}

/// Validates `spec.template` of a workload spec found at `path` (`spec`,
/// `spec.jobTemplate.spec`) as a pod spec; `false` when there is no template at all.
pub fn validate_template(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) -> bool {
    if !spec["template"].is_object() {
        causes.push(cause(format!("{path}.template"), "Required value"));
        return false;
    }
    let mut pod_causes = Vec::new();
    pod_spec::validate(&json!({"spec": spec["template"]["spec"]}), &mut pod_causes);
    causes.extend(pod_causes.into_iter().map(|c| FieldCause {
        field: format!("{path}.template.{}", c.field),
        message: c.message,
    }));
    true
}

/// `spec.selector` may not change once set (apps/v1).
pub fn selector_immutable(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let (old_sel, new_sel) = (&old["spec"]["selector"], &new["spec"]["selector"]);
    if old_sel != new_sel {
        causes.push(cause(
            "spec.selector",
            format!(
                "Invalid value: \"{}\": field is immutable",
                selector_string(new_sel)
            ),
        ));
    }
}

/// CONTAINERS, IMAGES and SELECTOR, the wide cells both kinds print.
pub fn wide_cells(obj: &Value) -> [Value; 3] {
    let containers = list(obj, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    [
        names.join(",").into(),
        images.join(",").into(),
        selector_string(&obj["spec"]["selector"]).into(),
    ]
}

/// Strategic-merge strategies of a workload's lists: its pod template's (as a Pod's, below
/// `spec.template`) and its status conditions.
pub const LIST_STRATEGIES: &[(&str, ListStrategy)] = &[
    (
        "spec.template.spec.containers",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.containers.env",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.containers.volumeMounts",
        ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "spec.template.spec.containers.volumeDevices",
        ListStrategy::MergeByKey("devicePath"),
    ),
    (
        "spec.template.spec.containers.ports",
        ListStrategy::MergeByKey("containerPort"),
    ),
    (
        "spec.template.spec.initContainers",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.initContainers.env",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.initContainers.volumeMounts",
        ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "spec.template.spec.initContainers.volumeDevices",
        ListStrategy::MergeByKey("devicePath"),
    ),
    (
        "spec.template.spec.initContainers.ports",
        ListStrategy::MergeByKey("containerPort"),
    ),
    (
        "spec.template.spec.ephemeralContainers",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.ephemeralContainers.env",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.ephemeralContainers.volumeMounts",
        ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "spec.template.spec.ephemeralContainers.volumeDevices",
        ListStrategy::MergeByKey("devicePath"),
    ),
    (
        "spec.template.spec.ephemeralContainers.ports",
        ListStrategy::MergeByKey("containerPort"),
    ),
    (
        "spec.template.spec.volumes",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.imagePullSecrets",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.hostAliases",
        ListStrategy::MergeByKey("ip"),
    ),
    (
        "spec.template.spec.schedulingGates",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.resourceClaims",
        ListStrategy::MergeByKey("name"),
    ),
    (
        "spec.template.spec.topologySpreadConstraints",
        ListStrategy::MergeByKey("topologyKey"),
    ),
    ("status.conditions", ListStrategy::MergeByKey("type")),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_and_print_like_upstream() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        });
        assert!(selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "a")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "c")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
        assert!(!selector_matches(&sel, &labels(&[("tier", "a")])));
        assert_eq!(selector_string(&sel), "app=web,!canary,tier in (a,b)");
    }

    #[test]
    fn selector_must_select_the_template() {
        let body = json!({"spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}}
        }});
        let mut causes = Vec::new();
        validate_spec(&body, &mut causes);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert!(
            causes[0]
                .message
                .contains("`selector` does not match template `labels`")
        );

        let mut ok = body.clone();
        ok["spec"]["template"]["metadata"]["labels"]["app"] = json!("web");
        let mut causes = Vec::new();
        validate_spec(&ok, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");

        let mut no_containers = ok.clone();
        no_containers["spec"]["template"]["spec"]["containers"] = json!([]);
        no_containers["spec"]["replicas"] = json!(-1);
        let mut causes = Vec::new();
        validate_spec(&no_containers, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.replicas"), "{causes:?}");
        assert!(
            fields
                .iter()
                .any(|f| f.starts_with("spec.template.spec.containers")),
            "{causes:?}"
        );
    }
}
