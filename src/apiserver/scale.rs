//! The `scale` subresource of workloads (deployments/scale, replicasets/scale): an
//! `autoscaling/v1` Scale view of the object's `spec.replicas`, `status.replicas` and selector.
//! Reading builds the view; writing (PUT of a Scale, or any patch of the view, which is what
//! `kubectl scale` sends) changes only `spec.replicas` of the object.

use serde_json::{Value, json};

use super::objects;
use super::patch::{self, PatchKind};
use super::status::ApiError;
use crate::registry::ResourceInfo;
use crate::registry::workload::selector_string;
use crate::storage::{self, Storage};

/// The Scale of a workload object.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut metadata = serde_json::Map::new();
    for key in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(key) {
            metadata.insert(key.to_string(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&obj["spec"]["selector"]),
        },
    })
}

/// `spec.replicas` of a Scale body: present, an integer, not negative (upstream 422).
fn replicas_of(info: &ResourceInfo, name: &str, scale: &Value) -> Result<i64, ApiError> {
    let field = "spec.replicas";
    match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Ok(n),
            Some(n) => Err(ApiError::invalid(
                "Scale.autoscaling",
                name,
                field,
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            )),
            None => Err(ApiError::BadRequest(format!(
                "{}: spec.replicas must be an integer, got {v}",
                info.qualified_kind()
            ))),
        },
    }
}

/// How a write reaches the Scale view.
pub enum Write<'a> {
    /// PUT of a whole Scale.
    Replace(&'a Value),
    /// A JSON, merge or strategic merge patch of the Scale.
    Patch(PatchKind, &'a [u8]),
}

/// Sets `spec.replicas` of the object from a Scale write; returns the new Scale.
pub async fn write(
    store: &Storage,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    how: Write<'_>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let precondition = match &how {
        Write::Replace(body) => storage::resource_version_of(body)?,
        Write::Patch(PatchKind::Apply, _) => {
            return Err(ApiError::BadRequest(
                "server-side apply is not supported on the scale subresource".into(),
            ));
        }
        Write::Patch(..) => None,
    };
    let mut result = Value::Null;
    let updated = store
        .modify(info, ns, name, precondition, |current| {
            let scale = match &how {
                Write::Replace(body) => (*body).clone(),
                Write::Patch(kind, body) => {
                    patch::apply_patch(info, *kind, &scale_of(current), body)?
                }
            };
            let replicas = replicas_of(info, name, &scale)?;
            let mut next = current.clone();
            next["spec"]["replicas"] = json!(replicas);
            objects::prepare_update(info, current, &mut next)?;
            if dry_run {
                result = scale_of(&next);
            } else {
                *current = next;
            }
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok(if dry_run { result } else { scale_of(&updated) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view_of_a_deployment() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}
        });
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(s["metadata"].get("labels").is_none());
    }
}
