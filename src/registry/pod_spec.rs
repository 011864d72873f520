//! The Pod spec rules of the API: upstream's defaults (`SetDefaults_Pod*`, plus what the
//! ServiceAccount, Priority and DefaultTolerationSeconds admission plugins add), the
//! validation of common mistakes with upstream's 422 wording, the QoS class set at creation,
//! and the update rule that a pod's spec is immutable but for images, `activeDeadlineSeconds`
//! and added tolerations (so `spec.nodeName` changes only through `pods/binding`).

use serde_json::{Map, Value, json};

use super::fields::{FieldCause, cause};
use super::quantity::parse_milli;

/// Upstream `DefaultNotReadyTolerationSeconds` / `DefaultUnreachableTolerationSeconds`.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
const CONDITION_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];
/// Every volume source a v1 Volume may name (exactly one per volume).
const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];
const DNS_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// Upstream's refusal of a spec change in an update (its first sentence; upstream appends a
/// diff of the specs).
pub const SPEC_UPDATE_FORBIDDEN: &str = "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent` (upstream).
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    let image = m
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set_default(m, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(m, "resources", json!({}));
    // A limit without a request requests the limit.
    if let Some(res) = m.get_mut("resources").and_then(Value::as_object_mut)
        && let Some(limits) = res.get("limits").and_then(Value::as_object).cloned()
    {
        let requests = res.entry("requests").or_insert_with(|| json!({}));
        if let Some(requests) = requests.as_object_mut() {
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Applies upstream's defaults to a Pod (create, and update bodies before comparison).
pub fn apply_defaults(pod: &mut Value) {
    if !pod["spec"].is_object() {
        return;
    }
    let spec = pod["spec"].as_object_mut().expect("checked above");
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "serviceAccountName", json!("default"));
    let sa = spec["serviceAccountName"].clone();
    set_default(spec, "serviceAccount", sa);
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes.iter_mut() {
            for source in ["configMap", "secret"] {
                if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
                    set_default(s, "defaultMode", json!(420));
                }
            }
        }
    }
}

/// DefaultTolerationSeconds admission: tolerate the not-ready and unreachable NoExecute taints
/// for 300 s unless the pod already tolerates them.
pub fn add_default_tolerations(pod: &mut Value) {
    let Some(spec) = pod["spec"].as_object_mut() else {
        return;
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in CONDITION_TAINTS {
        let covered = list.iter().any(|t| {
            let effect = t["effect"].as_str().unwrap_or_default();
            let tkey = t["key"].as_str().unwrap_or_default();
            let op = t["operator"].as_str().unwrap_or_default();
            (effect.is_empty() || effect == "NoExecute")
                && (tkey == key || (tkey.is_empty() && op == "Exists"))
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
}

/// A pod created with `spec.schedulingGates` starts with `PodScheduled=False`, reason
/// `SchedulingGated` (upstream's API server does this; the scheduler leaves it alone until the
/// gates are removed).
pub fn mark_scheduling_gated(pod: &mut Value) {
    let gated = pod["spec"]["schedulingGates"]
        .as_array()
        .is_some_and(|g| !g.is_empty());
    if gated {
        pod["status"]["conditions"] = json!([{
            "type": "PodScheduled",
            "status": "False",
            "reason": "SchedulingGated",
            "message": "Scheduling is blocked due to non-empty scheduling gates",
            "lastProbeTime": null,
            "lastTransitionTime": null,
        }]);
    }
}

/// Upstream's QoS class: BestEffort without any request or limit, Guaranteed when every
/// container limits cpu and memory with requests equal to the limits, else Burstable.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
        .collect();
    let res = |c: &Value, kind: &str| {
        c["resources"][kind]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            res(c, k).iter().any(|(name, v)| {
                (name == "cpu" || name == "memory")
                    && v.as_str()
                        .and_then(|s| parse_milli(s).ok())
                        .is_some_and(|q| q > 0)
            })
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let (req, lim) = (res(c, "requests"), res(c, "limits"));
        ["cpu", "memory"]
            .iter()
            .all(|r| lim.contains_key(*r) && req.get(*r).is_none_or(|v| Some(v) == lim.get(*r)))
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn supported(value: &str, allowed: &[&str]) -> String {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "Unsupported value: \"{value}\": supported values: {}",
        list.join(", ")
    )
}

fn check_enum(
    spec: &Value,
    field: &str,
    path: &str,
    allowed: &[&str],
    causes: &mut Vec<FieldCause>,
) {
    if let Some(v) = spec.get(field).and_then(Value::as_str)
        && !allowed.contains(&v)
    {
        causes.push(cause(path, supported(v, allowed)));
    }
}

fn validate_port(
    value: Option<&Value>,
    path: String,
    required: bool,
    causes: &mut Vec<FieldCause>,
) {
    match value.and_then(Value::as_i64) {
        None | Some(0) if !required => {}
        None => causes.push(cause(path, "Required value")),
        Some(p) if !(1..=65535).contains(&p) => causes.push(cause(
            path,
            format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
        )),
        Some(_) => {}
    }
}

fn validate_container(c: &Value, path: &str, volumes: &[&str], causes: &mut Vec<FieldCause>) {
    let name = c["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push(cause(format!("{path}.name"), "Required value"));
    } else if crate::validation::validate_dns_label(name).is_err() {
        causes.push(cause(
            format!("{path}.name"),
            format!("Invalid value: \"{name}\": {DNS_LABEL_MESSAGE}"),
        ));
    }
    let image = c["image"].as_str().unwrap_or_default();
    if image.is_empty() {
        causes.push(cause(format!("{path}.image"), "Required value"));
    } else if image.trim() != image {
        causes.push(cause(
            format!("{path}.image"),
            format!("Invalid value: \"{image}\": must not have leading or trailing whitespace"),
        ));
    }
    check_enum(
        c,
        "imagePullPolicy",
        &format!("{path}.imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        causes,
    );
    for (i, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        validate_port(
            p.get("containerPort"),
            format!("{pp}.containerPort"),
            true,
            causes,
        );
        validate_port(p.get("hostPort"), format!("{pp}.hostPort"), false, causes);
        check_enum(
            p,
            "protocol",
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            causes,
        );
    }
    for (i, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mp = format!("{path}.volumeMounts[{i}]");
        let vol = m["name"].as_str().unwrap_or_default();
        if vol.is_empty() {
            causes.push(cause(format!("{mp}.name"), "Required value"));
        } else if !volumes.contains(&vol) {
            causes.push(cause(format!("{mp}.name"), format!("Not found: \"{vol}\"")));
        }
        if m["mountPath"].as_str().unwrap_or_default().is_empty() {
            causes.push(cause(format!("{mp}.mountPath"), "Required value"));
        }
    }
}

/// Validates a Pod body's spec (upstream `ValidatePodSpec`, the common mistakes).
pub fn validate(body: &Value, causes: &mut Vec<FieldCause>) {
    let Some(spec) = body.get("spec").filter(|s| s.is_object()) else {
        causes.push(cause("spec.containers", "Required value"));
        return;
    };
    let mut volume_names: Vec<&str> = Vec::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let path = format!("spec.volumes[{i}]");
        let name = v["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(cause(format!("{path}.name"), "Required value"));
        } else if volume_names.contains(&name) {
            causes.push(cause(
                format!("{path}.name"),
                format!("Duplicate value: \"{name}\""),
            ));
        } else {
            volume_names.push(name);
        }
        let sources: Vec<&&str> = VOLUME_SOURCES
            .iter()
            .filter(|s| v.get(**s).is_some_and(|x| !x.is_null()))
            .collect();
        match sources.as_slice() {
            [] => causes.push(cause(path, "Required value: must specify a volume type")),
            [_] => {}
            [_, second, ..] => causes.push(cause(
                format!("{path}.{second}"),
                "Forbidden: may not specify more than 1 volume type",
            )),
        }
    }
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        causes.push(cause("spec.containers", "Required value"));
    }
    let mut names: Vec<&str> = Vec::new();
    for (list, items) in [
        (
            "initContainers",
            spec["initContainers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        ),
        ("containers", containers),
    ] {
        for (i, c) in items.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            validate_container(c, &path, &volume_names, causes);
            let name = c["name"].as_str().unwrap_or_default();
            if !name.is_empty() {
                if names.contains(&name) {
                    causes.push(cause(
                        format!("{path}.name"),
                        format!("Duplicate value: \"{name}\""),
                    ));
                } else {
                    names.push(name);
                }
            }
        }
    }
    check_enum(
        spec,
        "restartPolicy",
        "spec.restartPolicy",
        &["Always", "OnFailure", "Never"],
        causes,
    );
    check_enum(
        spec,
        "dnsPolicy",
        "spec.dnsPolicy",
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        causes,
    );
    if let Some(g) = spec["terminationGracePeriodSeconds"].as_i64()
        && g < 0
    {
        causes.push(cause(
            "spec.terminationGracePeriodSeconds",
            format!("Invalid value: {g}: must be greater than or equal to 0"),
        ));
    }
    for (i, t) in spec["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.tolerations[{i}]");
        check_enum(
            t,
            "operator",
            &format!("{path}.operator"),
            &["Equal", "Exists"],
            causes,
        );
        check_enum(
            t,
            "effect",
            &format!("{path}.effect"),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            causes,
        );
        if t["operator"] == "Exists"
            && let Some(v) = t["value"].as_str().filter(|v| !v.is_empty())
        {
            causes.push(cause(
                format!("{path}.operator"),
                format!("Invalid value: \"{v}\": value must be empty when `operator` is 'Exists'"),
            ));
        }
    }
}

/// The spec with what an update may change blanked out.
fn frozen_spec(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        m.remove("schedulingGates");
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    s
}

/// Update rule: the spec is immutable but for images, `activeDeadlineSeconds` and added
/// tolerations. Defaults are applied to the new body first, as upstream's decoder does.
pub fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    apply_defaults(new);
    let (Some(old_spec), Some(new_spec)) = (old.get("spec"), new.get("spec")) else {
        return;
    };
    let old_tolerations = old_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_tolerations = new_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kept = old_tolerations.iter().all(|t| new_tolerations.contains(t));
    if frozen_spec(old_spec) != frozen_spec(new_spec) || !kept {
        causes.push(cause("spec", SPEC_UPDATE_FORBIDDEN));
    }
    // Scheduling gates may only be removed.
    let old_gates = old_spec["schedulingGates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for gate in new_spec["schedulingGates"].as_array().into_iter().flatten() {
        if !old_gates.contains(gate) {
            causes.push(cause(
                "spec.schedulingGates",
                format!(
                    "Forbidden: only deletion is allowed, but found new scheduling gate '{}'",
                    gate["name"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes_of(body: Value) -> Vec<String> {
        let mut c = Vec::new();
        validate(&body, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn common_mistakes_get_upstream_messages() {
        assert_eq!(
            causes_of(json!({"spec": {}})),
            ["spec.containers: Required value"]
        );
        assert_eq!(
            causes_of(json!({"spec": {"containers": [{"name": "a"}]}})),
            ["spec.containers[0].image: Required value"]
        );
        assert_eq!(
            causes_of(
                json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}})
            ),
            ["spec.containers[1].name: Duplicate value: \"a\""]
        );
        assert_eq!(
            causes_of(
                json!({"spec": {"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x"}]}})
            ),
            [
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ]
        );
        assert_eq!(
            causes_of(
                json!({"spec": {"volumes": [{"name": "v", "nfsx": {}}], "containers": [{"name": "a", "image": "x"}]}})
            ),
            ["spec.volumes[0]: Required value: must specify a volume type"]
        );
        assert_eq!(
            causes_of(json!({"spec": {"containers": [{"name": "A_b", "image": " x", "volumeMounts": [{"name": "nope", "mountPath": "/m"}], "ports": [{"containerPort": 70000}]}]}})),
            [
                format!("spec.containers[0].name: Invalid value: \"A_b\": {DNS_LABEL_MESSAGE}"),
                "spec.containers[0].image: Invalid value: \" x\": must not have leading or trailing whitespace".to_string(),
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string(),
                "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"".to_string(),
            ]
        );
        assert!(causes_of(json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}})).is_empty());
    }

    #[test]
    fn defaults_like_upstream() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "registry:5000/busybox:1.36", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}}},
            {"name": "c", "image": "busybox:latest"},
            {"name": "d", "image": "busybox@sha256:abc"},
        ]}});
        apply_defaults(&mut pod);
        add_default_tolerations(&mut pod);
        let s = &pod["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["enableServiceLinks"], true);
        let policies: Vec<&str> = s["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["imagePullPolicy"].as_str().unwrap())
            .collect();
        assert_eq!(
            policies,
            ["Always", "IfNotPresent", "Always", "IfNotPresent"]
        );
        assert_eq!(s["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["containers"][1]["resources"]["requests"]["cpu"], "1");
        assert_eq!(
            s["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(
            s["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
        // A pod's own toleration for a condition taint is kept instead of the default.
        let mut own = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        add_default_tolerations(&mut own);
        let t = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 5);
    }

    #[test]
    fn qos_classes() {
        let with = |res: Value| json!({"spec": {"containers": [{"name": "a", "image": "x", "resources": res}]}});
        assert_eq!(qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&with(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&with(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}})
            )),
            "Burstable"
        );
    }

    #[test]
    fn spec_updates_are_limited() {
        let mut old = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "tolerations": [{"key": "k", "operator": "Exists"}]}});
        apply_defaults(&mut old);
        let check = |new: Value| {
            let mut new = new;
            let mut c = Vec::new();
            on_update(&old, &mut new, &mut c);
            c
        };
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("y");
        assert!(check(image).is_empty());
        let mut more = old.clone();
        more["spec"]["tolerations"] =
            json!([{"key": "k", "operator": "Exists"}, {"key": "j", "operator": "Exists"}]);
        assert!(check(more).is_empty());
        let mut moved = old.clone();
        moved["spec"]["nodeName"] = json!("n1");
        assert_eq!(check(moved)[0].message, SPEC_UPDATE_FORBIDDEN);
        let mut fewer = old.clone();
        fewer["spec"]["tolerations"] = json!([]);
        assert_eq!(check(fewer).len(), 1);
        // Scheduling gates may go, not come.
        let mut gated = old.clone();
        gated["spec"]["schedulingGates"] = json!([{"name": "wait"}]);
        let mut c = Vec::new();
        on_update(&gated, &mut old.clone(), &mut c);
        assert!(c.is_empty(), "{c:?}");
        let mut c = Vec::new();
        on_update(&old, &mut gated.clone(), &mut c);
        assert_eq!(
            c[0].message,
            "Forbidden: only deletion is allowed, but found new scheduling gate 'wait'"
        );
        // An update body without defaults is defaulted first, so it changes nothing.
        assert!(check(json!({"spec": {"containers": [{"name": "a", "image": "x"}], "tolerations": [{"key": "k", "operator": "Exists"}]}})).is_empty());
    }
}
