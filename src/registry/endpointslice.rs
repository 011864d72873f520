//! EndpointSlice (discovery.k8s.io/v1, namespaced): the endpoints of a Service in slices, kept
//! by the endpoints controller; the `kubectl get endpointslices` columns.

use chrono::{DateTime, Utc};
use k8s_openapi::api::discovery::v1 as discovery;
use serde_json::Value;

use super::ResourceInfo;
use super::fields::typed;
use super::print::*;

/// `endpointslices`.
pub static ENDPOINT_SLICES: ResourceInfo = ResourceInfo {
    go_package: "discovery",
    type_check: typed::<discovery::EndpointSlice>,
    schema: Some(super::schema::schema_of::<discovery::EndpointSlice>),
    printer: Printer {
        columns: COLUMNS,
        cells,
        conditions: no_conditions,
    },
    ..ResourceInfo::stored(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        "/registry/endpointslices",
    )
};

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type.",
    ),
    col(
        "Ports",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

fn cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = list(obj, "/ports").iter().map(|p| match p.get("port") {
        Some(n) if n.is_i64() => n.to_string(),
        _ => or_placeholder(text(p, "/name"), "*"),
    });
    let addresses = list(obj, "/endpoints")
        .iter()
        .flat_map(|e| list(e, "/addresses"))
        .filter_map(Value::as_str)
        .map(str::to_string);
    vec![
        name(obj).into(),
        text(obj, "/addressType").into(),
        at_most_three(ports).into(),
        at_most_three(addresses).into(),
        age(obj, now).into(),
    ]
}

/// Upstream `listWithMoreString`: the first three, then ` + N more...`; `<unset>` when empty.
fn at_most_three(items: impl Iterator<Item = String>) -> String {
    const MAX: usize = 3;
    let all: Vec<String> = items.collect();
    let shown = all[..all.len().min(MAX)].join(",");
    if all.len() > MAX {
        format!("{shown} + {} more...", all.len() - MAX)
    } else if shown.is_empty() {
        "<unset>".to_string()
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_like_upstream() {
        let slice = json!({
            "metadata": {"name": "web-abcde"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "x"}],
            "endpoints": [{"addresses": ["1.1.1.1"]}, {"addresses": ["1.1.1.2"]}, {"addresses": ["1.1.1.3"]}, {"addresses": ["1.1.1.4"]}],
        });
        let c = cells(&slice, Utc::now());
        assert_eq!(c[1], "IPv4");
        assert_eq!(c[2], "8080,x");
        assert_eq!(c[3], "1.1.1.1,1.1.1.2,1.1.1.3 + 1 more...");
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        assert_eq!(cells(&empty, Utc::now())[3], "<unset>");
    }
}
