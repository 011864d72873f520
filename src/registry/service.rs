//! Service (core/v1, namespaced): DNS-1035 names, an empty status on create, the
//! `kubectl get services` columns.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};

use super::ListStrategy;
use super::fields::{cause, typed};
use super::print::*;
use super::schema::{ListSemantics, atomic, conditions, keyed};
use super::{FieldCause, ResourceInfo};
use crate::validation::validate_dns_label;

const SERVICE_SPEC: &str = "io.k8s.api.core.v1.ServiceSpec";

/// Upstream's list tags on ServiceSpec and ServiceStatus.
const SERVICE_LISTS: &[ListSemantics] = &[
    keyed(
        SERVICE_SPEC,
        "ports",
        &["port", "protocol"],
        "port",
        "merge",
    ),
    atomic(SERVICE_SPEC, "clusterIPs"),
    atomic(SERVICE_SPEC, "externalIPs"),
    atomic(SERVICE_SPEC, "ipFamilies"),
    atomic(SERVICE_SPEC, "loadBalancerSourceRanges"),
    conditions("io.k8s.api.core.v1.ServiceStatus"),
];

/// `services`.
pub static SERVICES: ResourceInfo = ResourceInfo {
    short_names: &["svc"],
    categories: &["all"],
    subresources: &["status"],
    type_check: typed::<core::Service>,
    schema: Some(super::schema::schema_of::<core::Service>),
    lists: SERVICE_LISTS,
    name_rule: dns1035_label,
    tracks_generation: true,
    on_create,
    on_update,
    printer: Printer {
        columns: COLUMNS,
        cells: service_cells,
        conditions: no_conditions,
    },
    protobuf: Some(super::protobuf::CORE_V1),
    list_strategies: &[
        ("spec.ports", ListStrategy::MergeByKey("port")),
        ("status.conditions", ListStrategy::MergeByKey("type")),
    ],
    ..ResourceInfo::stored(
        "",
        "services",
        "service",
        "Service",
        true,
        "/registry/services/specs",
    )
};

fn dns1035_label(name: &str) -> Result<(), String> {
    validate_dns_label(name).map_err(|e| e.0)?;
    if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a valid DNS-1035 label: lower case alphanumeric characters or '-', \
             starting with an alphabetic character and ending with an alphanumeric character"
        ))
    }
}

fn on_create(obj: &mut Value) {
    obj["status"] = json!({"loadBalancer": {}});
}

/// Upstream's rules for allocated values on update: a ClusterIP or node port the new object
/// leaves out is kept (a `kubectl replace` of the original manifest keeps its address), and a
/// ClusterIP may not move once allocated (the allocation is keyed by it).
fn on_update(old: &Value, new: &mut Value, causes: &mut Vec<FieldCause>) {
    let old_ip = text(old, "/spec/clusterIP");
    if old_ip.is_empty() || !new["spec"].is_object() || text(new, "/spec/type") == "ExternalName" {
        return;
    }
    match text(new, "/spec/clusterIP") {
        "" => {
            new["spec"]["clusterIP"] = json!(old_ip);
            new["spec"]["clusterIPs"] = old
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or_else(|| json!([old_ip]));
        }
        ip if ip != old_ip => causes.push(cause(
            "spec.clusterIPs[0]",
            format!("Invalid value: []string{{\"{ip}\"}}: may not change once set"),
        )),
        _ => {}
    }
    let old_ports = list(old, "/spec/ports");
    if let Some(ports) = new["spec"]["ports"].as_array_mut() {
        for p in ports.iter_mut().filter(|p| int(p, "/nodePort") == 0) {
            let same = |o: &&Value| o["port"] == p["port"] && protocol(o) == protocol(p);
            if let Some(n) = old_ports
                .iter()
                .find(same)
                .map(|o| int(o, "/nodePort"))
                .filter(|n| *n > 0)
            {
                p["nodePort"] = json!(n);
            }
        }
    }
}

fn protocol(port: &Value) -> &str {
    match text(port, "/protocol") {
        "" => "TCP",
        p => p,
    }
}

const COLUMNS: &[Column] = &[
    NAME,
    col("Type", "type determines how the Service is exposed."),
    col(
        "Cluster-IP",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(col(
        "Selector",
        "Route service traffic to pods with label keys and values matching this selector.",
    )),
];

/// `spec.type`, defaulted like the apiserver does on create.
fn service_type(svc: &Value) -> &str {
    match text(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    }
}

/// Upstream `getServiceExternalIP` with `wide = true` (the server renders the wide form).
fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // A sorted set of ingress IPs, or hostnames where there is no IP.
            let lb: BTreeSet<&str> = list(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| match (text(i, "/ip"), text(i, "/hostname")) {
                    ("", "") => None,
                    ("", host) => Some(host),
                    (ip, _) => Some(ip),
                })
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// Upstream `makePortString`: `port/proto` or `port:nodePort/proto`, comma-joined.
fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = match text(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            let port = int(p, "/port");
            let node_port = int(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect();
    if pieces.is_empty() {
        "<none>".to_string()
    } else {
        pieces.join(",")
    }
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // `clusterIPs[0]`; stored objects written before dual-stack may only carry `clusterIP`.
    let cluster_ip = list(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text(svc, "/spec/clusterIP"));
    vec![
        name(svc).into(),
        service_type(svc).into(),
        or_placeholder(cluster_ip, "<none>").into(),
        service_external_ip(svc).into(),
        service_ports(svc).into(),
        age(svc, now).into(),
        format_labels(svc.pointer("/spec/selector")).into(),
    ]
}

#[cfg(test)]
mod update_tests {
    use super::*;

    #[test]
    fn allocated_values_are_kept_and_the_address_may_not_move() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                                  "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        let mut causes = Vec::new();
        on_update(&old, &mut new, &mut causes);
        assert!(causes.is_empty());
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.0.20"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        let mut moved = json!({"spec": {"clusterIP": "10.43.0.21"}});
        on_update(&old, &mut moved, &mut causes);
        assert_eq!(causes.len(), 1);
        assert!(causes[0].message.contains("may not change once set"));
    }
}
