//! Endpoints (core/v1, namespaced): the `kubectl get endpoints` columns.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::ResourceInfo;
use super::fields::typed;
use super::print::*;
use super::schema::{ListSemantics, atomic};

const SUBSET: &str = "io.k8s.api.core.v1.EndpointSubset";

/// Upstream's list tags on Endpoints: every list is atomic.
const ENDPOINTS_LISTS: &[ListSemantics] = &[
    atomic("io.k8s.api.core.v1.Endpoints", "subsets"),
    atomic(SUBSET, "addresses"),
    atomic(SUBSET, "notReadyAddresses"),
    atomic(SUBSET, "ports"),
];

/// `endpoints`, stored under the services prefix as upstream does.
pub static ENDPOINTS: ResourceInfo = ResourceInfo {
    short_names: &["ep"],
    type_check: typed::<core::Endpoints>,
    schema: Some(super::schema::schema_of::<core::Endpoints>),
    lists: ENDPOINTS_LISTS,
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    protobuf: Some(super::protobuf::CORE_V1),
    ..ResourceInfo::stored(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        "/registry/services/endpoints",
    )
};

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        format_endpoints(obj).into(),
        age(obj, now).into(),
    ]
}

/// Upstream `formatEndpoints` with all ports: `ip:port` for every address and port, at most
/// three, then ` + N more...`; `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = list(ss, "/addresses");
        let ports = list(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(text(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(join_host_port(text(a, "/ip"), int(port, "/port")));
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}
