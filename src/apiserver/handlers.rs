//! The verbs: get, list (+ watch), create, update, patch, delete and deletecollection on stored
//! resources, plus the self-subject reviews kubectl POSTs. Each request is authorized before it
//! touches storage; bodies are validated before anything is written.

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::authz::{self, Attributes, User};
use super::query::Query;
use super::status::{ApiError, success_status};
use super::{
    ApiState, ResourceRef, apply, decode_body, json as json_response, namespaces, objects, patch,
    pods, protobuf, read_body, scale, table, watch,
};
use crate::apiserver::openapi::with_warnings;
use crate::registry::{
    self as resources, NAMESPACES, PODS, ResourceInfo, Review, SERVICES, SYSTEM_NAMESPACES, Verb,
};
use crate::storage::selectors::{FieldSelector, LabelSelector};
use crate::storage::{self, ListOptions, Storage, ownership, services};

fn storage(st: &ApiState) -> Result<Storage, ApiError> {
    st.store
        .get()
        // Writes go through the watch caches' fence (cached LISTs wait for them), and a write
        // reads the current object from the cache.
        .map(|ds| Storage::cached(ds, st.watch_cache.clone()).with_ttl(st.event_ttl))
        .ok_or_else(|| ApiError::ServiceUnavailable("apiserver not ready".into()))
}

/// One request on a resource: the verb, with the object name where the verb has one.
enum Op<'a> {
    Get(&'a str),
    List,
    Watch,
    Create(Value),
    /// POST to a subresource of an existing object (pods/binding, pods/eviction).
    CreateSubresource(&'a str, &'a str, Value),
    Update(&'a str),
    Patch(&'a str),
    Delete(&'a str),
    DeleteCollection,
}

fn verb_of(method: &Method, r: &ResourceRef, query: &Query) -> Result<Verb, ApiError> {
    let is_watch = query.flag("watch");
    Ok(match (method, r.name.is_some()) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if is_watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        // Subresources created on an object: pods/binding, pods/eviction.
        (&Method::POST, true) if r.subresource.is_some() => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return Err(ApiError::MethodNotAllowed),
    })
}

fn deny(e: authz::Denied) -> ApiError {
    ApiError::Forbidden(e.0)
}

/// `pods/<name>/log`: proxied to the kubelet of the pod's node (crate::runtime::logs).
async fn pod_log(
    st: &ApiState,
    store: &Storage,
    info: &'static crate::registry::ResourceInfo,
    ns: Option<&str>,
    name: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    // The kubelet's own parameters, each with its first value (as upstream reads them).
    let query: std::collections::HashMap<String, String> = [
        "container",
        "follow",
        "previous",
        "sinceSeconds",
        "sinceTime",
        "tailLines",
        "timestamps",
        "limitBytes",
    ]
    .iter()
    .filter_map(|k| query.get(k).map(|v| (k.to_string(), v.clone())))
    .collect();
    let query = &query;
    let client = st.kubelet.as_ref().ok_or_else(|| {
        ApiError::ServiceUnavailable("this server has no kubelet client certificate".into())
    })?;
    let pod = store.get(info, ns, name).await?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("pod {name} is not scheduled to a node yet"))
        })?;
    let node = store.get(&crate::registry::NODES, None, node_name).await?;
    crate::runtime::logs::proxy(client, &pod, &node, query)
        .await
        .map_err(|(code, msg)| super::streaming::kubelet_error(name, code, msg))
}

/// Handles a request on a resource path.
pub async fn handle(
    st: &ApiState,
    user: &User,
    r: ResourceRef,
    method: Method,
    query: Query,
    accept: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let info = r.info;
    if let Some(sub) = r.subresource.as_deref()
        && !info.subresources.contains(&sub)
    {
        return Err(ApiError::NoSuchResource);
    }
    if let Some(session) = super::streaming::session_of(&r) {
        return super::streaming::handle(st, storage(st)?, user, &r, session, &query, req).await;
    }
    let verb = verb_of(&method, &r, &query)?;
    if !info.serves(verb) {
        return Err(ApiError::MethodNotAllowed);
    }
    // Cluster-scoped resources ignore a namespace; namespaced single objects need one.
    let ns = if info.namespaced {
        r.namespace.as_deref()
    } else {
        None
    };
    if info.namespaced && r.name.is_some() && ns.is_none() {
        return Err(ApiError::NoSuchResource);
    }
    let headers = req.headers().clone();
    let body = if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        read_body(req.into_body()).await?
    } else {
        Default::default()
    };

    // Review resources are computed, not stored.
    if let Some(kind) = info.review {
        let obj = decode_body(&headers, &body)?;
        return review(user, info, kind, obj, protobuf::negotiate(accept));
    }

    let op = match (verb, r.name.as_deref()) {
        (Verb::Get, Some(name)) => Op::Get(name),
        (Verb::List, None) => Op::List,
        (Verb::Watch, None) => Op::Watch,
        (Verb::Create, None) => Op::Create(decode_body(&headers, &body)?),
        (Verb::Create, Some(name)) => match r.subresource.as_deref() {
            Some(sub) => Op::CreateSubresource(name, sub, decode_body(&headers, &body)?),
            None => return Err(ApiError::MethodNotAllowed),
        },
        (Verb::Update, Some(name)) => Op::Update(name),
        (Verb::Patch, Some(name)) => Op::Patch(name),
        (Verb::Delete, Some(name)) => Op::Delete(name),
        (Verb::DeleteCollection, None) => Op::DeleteCollection,
        _ => return Err(ApiError::MethodNotAllowed),
    };
    // Name for authorization: from the path, or from the body on create.
    let create_name = match &op {
        Op::Create(body) => body.pointer("/metadata/name").and_then(Value::as_str),
        _ => None,
    };
    let attrs = Attributes {
        verb: verb.as_str(),
        resource: info,
        subresource: r.subresource.as_deref(),
        namespace: ns,
        name: r.name.as_deref().or(create_name),
    };
    if let Err(denied) = authz::authorize(user, &attrs) {
        if !authz::needs_node_reference(user, &attrs) {
            return Err(deny(denied));
        }
        // A node reading a Secret/ConfigMap: allowed when one of its pods references it.
        let pods = storage(st)?
            .list(&crate::registry::PODS, ns, &ListOptions::default())
            .await?
            .items;
        authz::admit_node_reference(user, &attrs, &pods).map_err(deny)?;
    }
    let store = storage(st)?;
    if r.subresource.as_deref() == Some("log") {
        let Op::Get(name) = op else {
            return Err(ApiError::MethodNotAllowed);
        };
        return pod_log(st, &store, info, ns, name, &query).await;
    }
    let wants_table = table::wants_table(accept);
    let encoding = protobuf::negotiate(accept);
    let writer = apply::Writer::from_request(
        &query,
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        r.subresource.as_deref(),
    )?;
    let respond = |status: StatusCode, obj: &Value| protobuf::respond(status, obj, info, encoding);
    let mut dry_run = query.dry_run(match verb {
        Verb::Create => "CreateOptions",
        Verb::Update => "UpdateOptions",
        Verb::Patch => "PatchOptions",
        _ => "DeleteOptions",
    })?;

    // The scale subresource is a view of the object; see `scale`.
    if r.subresource.as_deref() == Some("scale") {
        let json_ok = |v: &Value| Ok(json_response(StatusCode::OK, v, "application/json"));
        return match op {
            Op::Get(name) => json_ok(&scale::scale_of(&store.get(info, ns, name).await?)),
            Op::Update(name) => {
                let obj = decode_body(&headers, &body)?;
                let how = scale::Write::Replace(&obj);
                json_ok(&scale::write(&store, info, ns, name, how, dry_run).await?)
            }
            Op::Patch(name) => {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let how = scale::Write::Patch(patch::PatchKind::from_content_type(ct)?, &body);
                json_ok(&scale::write(&store, info, ns, name, how, dry_run).await?)
            }
            _ => Err(ApiError::MethodNotAllowed),
        };
    }

    match op {
        Op::Get(name) => {
            let obj = store.get(info, ns, name).await?;
            if wants_table {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Ok(table_response(&table::table(
                    info,
                    &[obj],
                    &rv,
                    None,
                    Utc::now(),
                )))
            } else {
                respond(StatusCode::OK, &obj)
            }
        }
        Op::List => list(st, &store, info, ns, &query, wants_table, encoding).await,
        Op::Watch => watch::serve(st, store, info, ns, &query, wants_table, encoding).await,
        Op::Create(mut obj) => {
            let warnings = field_check(st, info, &query)
                .await?
                .apply(&mut obj)
                .map_err(ApiError::BadRequest)?;
            objects::validate_body(info, &obj, ns, None)?;
            authz::admit_write(user, info, None, &obj).map_err(deny)?;
            if info.namespaced {
                let ns = ns.ok_or_else(|| {
                    ApiError::BadRequest("a namespace is required to create this object".into())
                })?;
                let name = obj.pointer("/metadata/name").and_then(Value::as_str);
                namespaces::admit_create(&store, info, ns, name).await?;
            }
            apply::track_update(info, None, &mut obj, &writer, Utc::now());
            let created = create_object(&store, st, info, ns, obj, dry_run).await?;
            respond(StatusCode::CREATED, &created).map(|r| with_warnings(r, &warnings))
        }
        Op::CreateSubresource(name, sub, obj) => {
            let ns = ns.ok_or(ApiError::NoSuchResource)?;
            pods::create_subresource(&store, user.node_name(), ns, name, sub, &obj, dry_run).await
        }
        Op::Update(name) => {
            let mut obj = decode_body(&headers, &body)?;
            let warnings = field_check(st, info, &query)
                .await?
                .apply(&mut obj)
                .map_err(ApiError::BadRequest)?;
            objects::validate_body(info, &obj, ns, Some(name))?;
            let precondition = storage::resource_version_of(&obj)?;
            let sub = r.subresource.as_deref();
            let updated = store
                .modify_with(info, ns, name, precondition, dry_run, |current| {
                    let mut next = obj.clone();
                    prepare_write(info, sub, current, &mut next)?;
                    apply::track_update(info, Some(current), &mut next, &writer, Utc::now());
                    authz::admit_write(user, info, Some(current), &next).map_err(deny)?;
                    *current = next;
                    Ok::<(), ApiError>(())
                })
                .await?;
            respond(StatusCode::OK, &updated).map(|r| with_warnings(r, &warnings))
        }
        Op::Patch(name) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = patch::PatchKind::from_content_type(ct)?;
            let status_only = r.subresource.as_deref() == Some("status");
            let sub = r.subresource.as_deref();
            if kind == patch::PatchKind::Apply {
                let force = match query.get("force").map(String::as_str) {
                    None | Some("") => false,
                    Some(v) => parse_go_bool(v)
                        .ok_or_else(|| ApiError::BadRequest(format!("invalid force {v:?}")))?,
                };
                let ctx = ApplyRequest {
                    user,
                    info,
                    ns,
                    name,
                    writer: &writer,
                    force,
                    dry_run,
                    status_only,
                };
                let (code, obj) = server_side_apply(&store, st, &query, &body, ctx).await?;
                return respond(code, &obj);
            }
            let fields = field_check(st, info, &query).await?;
            let mut warnings = Vec::new();
            let updated = store
                .modify_with(info, ns, name, None, dry_run, |current| {
                    let mut patched = patch::apply_patch(info, kind, current, &body)?;
                    warnings = fields.apply(&mut patched).map_err(ApiError::BadRequest)?;
                    // A patch may not move the object's resourceVersion (upstream 409).
                    if patch::patch_resource_version(current, &patched).is_some() {
                        return Err(ApiError::Conflict {
                            resource: info.qualified_name(),
                            name: name.to_string(),
                        });
                    }
                    objects::validate_body(info, &patched, ns, Some(name))?;
                    let mut next = patched;
                    prepare_write(info, sub, current, &mut next)?;
                    apply::track_update(info, Some(current), &mut next, &writer, Utc::now());
                    authz::admit_write(user, info, Some(current), &next).map_err(deny)?;
                    *current = next;
                    Ok(())
                })
                .await?;
            respond(StatusCode::OK, &updated).map(|r| with_warnings(r, &warnings))
        }
        Op::Delete(name) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let opts = protobuf::decode_delete_options(ct, &body)?;
            let dry_run = dry_run || body_dry_run(&opts)?;
            let delete_opts =
                pods::delete_options(&opts, query.get("gracePeriodSeconds").map(String::as_str))?;
            if *info == NAMESPACES && SYSTEM_NAMESPACES.contains(&name) {
                return Err(ApiError::Forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            if user.node_name().is_some() && info.node_access == resources::NodeAccess::Bound {
                let obj = store.get(info, ns, name).await?;
                authz::admit_node_bound_delete(user, info, &obj).map_err(deny)?;
            }
            if authz::delete_needs_member_check(user, info) {
                let member = node_is_etcd_member(st, name).await?;
                authz::admit_node_delete(user, name, member).map_err(deny)?;
            }
            let policy = opts
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .or(query.get("propagationPolicy").map(String::as_str));
            let policy = match policy {
                None if opts.get("orphanDependents") == Some(&json!(true)) => Some("Orphan"),
                p => p,
            };
            // Only owner kinds have dependents to cascade to; for every other kind each policy
            // is a plain delete.
            let owner_kind = ownership::OWNER_KINDS.contains(&info);
            match policy {
                None | Some("Background") => {}
                Some("Orphan" | "Foreground") if dry_run || !owner_kind => {}
                // Orphan deletion: the owner's references leave its dependents first, then the
                // owner goes (unless other finalizers hold it).
                Some("Orphan") => {
                    let owner = ownership::mark_deleting(
                        &store,
                        info,
                        ns,
                        name,
                        ownership::ORPHAN_FINALIZER,
                    )
                    .await?;
                    ownership::orphan_dependents(&store, &owner).await?;
                    let done = ownership::remove_finalizer(
                        &store,
                        info,
                        ns,
                        name,
                        ownership::ORPHAN_FINALIZER,
                    )
                    .await?;
                    return respond(StatusCode::OK, &done.unwrap_or(owner));
                }
                // Foreground deletion: the owner stays, marked, until the garbage collector
                // has deleted its dependents.
                Some("Foreground") => {
                    let owner = ownership::mark_deleting(
                        &store,
                        info,
                        ns,
                        name,
                        ownership::FOREGROUND_FINALIZER,
                    )
                    .await?;
                    return respond(StatusCode::OK, &owner);
                }
                Some(other) => {
                    return Err(ApiError::Invalid {
                        kind: "DeleteOptions.meta.k8s.io".into(),
                        name: String::new(),
                        causes: vec![crate::registry::fields::cause(
                            "propagationPolicy",
                            format!(
                                "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                            ),
                        )],
                    });
                }
            }
            if *info == PODS && !dry_run {
                let ns = ns.ok_or(ApiError::NoSuchResource)?;
                let (pods::Deleted::Gone(obj) | pods::Deleted::Terminating(obj)) =
                    pods::delete(&store, ns, name, &delete_opts).await?;
                return Ok(json_response(StatusCode::OK, &obj, "application/json"));
            }
            let deleted = delete_object(
                &store,
                info,
                ns,
                name,
                delete_opts.uid.as_deref(),
                delete_opts.resource_version,
                dry_run,
            )
            .await?;
            respond(StatusCode::OK, &deleted)
        }
        Op::DeleteCollection => {
            if !body.is_empty() {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                dry_run |= body_dry_run(&protobuf::decode_delete_options(ct, &body)?)?;
            }
            let opts = list_options(info, &query)?;
            let page = store
                .list(
                    info,
                    ns,
                    &ListOptions {
                        limit: 0,
                        continue_token: None,
                        ..opts
                    },
                )
                .await?;
            for item in &page.items {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
                if *info == NAMESPACES && SYSTEM_NAMESPACES.contains(&name) {
                    continue;
                }
                let result = if *info == PODS && !dry_run {
                    let grace = query.get("gracePeriodSeconds").map(String::as_str);
                    let opts = pods::delete_options(&Value::Null, grace)?;
                    let pod_ns = item_ns.or(ns).unwrap_or_default();
                    pods::delete(&store, pod_ns, name, &opts)
                        .await
                        .map(|_| ())
                        .map_err(ApiError::from)
                } else {
                    delete_object(&store, info, item_ns.or(ns), name, None, None, dry_run)
                        .await
                        .map(|_| ())
                };
                match result {
                    Ok(()) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            respond(StatusCode::OK, &success_status(info.plural, "", None))
        }
    }
}

/// What a server-side apply request names.
struct ApplyRequest<'a> {
    user: &'a User,
    info: &'static ResourceInfo,
    ns: Option<&'a str>,
    name: &'a str,
    writer: &'a apply::Writer,
    force: bool,
    dry_run: bool,
    status_only: bool,
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `PATCH` with `application/apply-patch+yaml`: creates the object from the applied
/// configuration when it does not exist (which needs `create` permission too), else merges it
/// into the live object ([`apply::apply_to`]); validated and admitted like any write.
async fn server_side_apply(
    store: &Storage,
    st: &ApiState,
    query: &Query,
    body: &[u8],
    req: ApplyRequest<'_>,
) -> Result<(StatusCode, Value), ApiError> {
    let ApplyRequest {
        user,
        info,
        ns,
        name,
        writer,
        force,
        dry_run,
        status_only,
    } = req;
    if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::BadRequest(
            "fieldManager is required for apply requests".into(),
        ));
    }
    let applied = apply::parse_applied(info, body, name, ns)?;
    if store.get_opt(info, ns, name).await?.is_none() {
        if status_only {
            return Err(ApiError::NotFound {
                resource: info.qualified_name(),
                name: name.to_string(),
            });
        }
        authz::authorize(
            user,
            &Attributes {
                verb: Verb::Create.as_str(),
                resource: info,
                subresource: None,
                namespace: ns,
                name: Some(name),
            },
        )
        .map_err(deny)?;
        let obj = apply::apply_create(info, &applied, writer, Utc::now());
        objects::validate_body(info, &obj, ns, None)?;
        authz::admit_write(user, info, None, &obj).map_err(deny)?;
        if let Some(ns) = ns.filter(|_| info.namespaced) {
            namespaces::admit_create(store, info, ns, Some(name)).await?;
        }
        let created = create_object(store, st, info, ns, obj, dry_run).await?;
        return Ok((StatusCode::CREATED, created));
    }
    let updated = store
        .modify(info, ns, name, None, |current| {
            let mut next = apply::apply_to(info, current, &applied, writer, force, Utc::now())?;
            // As for every patch kind, the result may not outgrow what a PUT could send.
            if patch::serialized_size(&next, patch::MAX_PATCHED_BYTES) > patch::MAX_PATCHED_BYTES {
                return Err(ApiError::RequestEntityTooLarge(format!(
                    "the patched object would be larger than {} bytes",
                    patch::MAX_PATCHED_BYTES
                )));
            }
            objects::validate_body(info, &next, ns, Some(name))?;
            if status_only {
                objects::prepare_status_update(info, current, &mut next)?;
            } else {
                objects::prepare_update(info, current, &mut next)?;
            }
            authz::admit_write(user, info, Some(current), &next).map_err(deny)?;
            if !dry_run {
                *current = next;
            }
            Ok::<(), ApiError>(())
        })
        .await?;
    Ok((StatusCode::OK, updated))
}

/// Whether a `DeleteOptions` body asks for a dry run (`dryRun: ["All"]`, as `kubectl delete
/// --dry-run=server` sends it); any other value is upstream's 422.
fn body_dry_run(opts: &Value) -> Result<bool, ApiError> {
    let Some(values) = opts.get("dryRun").filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    let values = values.as_array().ok_or_else(|| {
        ApiError::BadRequest("invalid DeleteOptions: dryRun must be a list of strings".into())
    })?;
    let values: Vec<String> = values
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect();
    super::query::dry_run_values(&values, "DeleteOptions")
}

/// Writes a new object (or, with `dry_run`, only completes it); Services go through their
/// admission, which allocates their ClusterIP and node ports.
async fn create_object(
    store: &Storage,
    st: &ApiState,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    mut obj: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if *info == SERVICES {
        if dry_run {
            services::apply_defaults(&mut obj, &st.service_ranges);
        } else {
            let ns = ns.ok_or(ApiError::NoSuchResource)?;
            return Ok(services::create(store, &st.service_ranges, ns, obj).await?);
        }
    }
    Ok(store.create_with(info, ns, obj, dry_run).await?)
}

/// Whether `node` has an etcd member (by the member names servers give themselves; see
/// docs/security.md). Fails closed: without an answer from etcd the deletion is refused.
/// The `fieldValidation` of a write (src/openapi/fields.rs).
async fn field_check<'a>(
    st: &'a ApiState,
    info: &'static ResourceInfo,
    query: &Query,
) -> Result<crate::apiserver::openapi::FieldCheck<'a>, ApiError> {
    st.openapi
        .field_check(info, query.get("fieldValidation").map(String::as_str))
        .await
        .map_err(ApiError::BadRequest)
}

async fn node_is_etcd_member(st: &ApiState, node: &str) -> Result<bool, ApiError> {
    let client = st
        .etcd
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("etcd client not ready".into()))?;
    let members = crate::etcd::member_list(client)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
    Ok(crate::etcd::membership::member_of_node(&members, node).is_some())
}

fn table_response(v: &Value) -> Response {
    json_response(StatusCode::OK, v, table::TABLE_CONTENT_TYPE)
}

/// The rules of a write through `sub` (none, `status` or a namespace's `finalize`).
fn prepare_write(
    info: &ResourceInfo,
    sub: Option<&str>,
    current: &Value,
    next: &mut Value,
) -> Result<(), ApiError> {
    match sub {
        Some("status") => objects::prepare_status_update(info, current, next),
        Some("finalize") => objects::prepare_finalize(info, current, next),
        _ => objects::prepare_update(info, current, next),
    }
}

/// One object's DELETE; a namespace is marked Terminating first and goes once finalized
/// ([`namespaces::delete`]).
async fn delete_object(
    store: &Storage,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    uid: Option<&str>,
    rv: Option<i64>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if *info == NAMESPACES {
        return namespaces::delete(store, name, uid, rv, dry_run, Utc::now())
            .await
            .map_err(ApiError::from);
    }
    let deleted = store.delete_with(info, ns, name, uid, rv, dry_run).await?;
    // A deleted Service's ClusterIP and node ports are free again.
    if *info == SERVICES && !dry_run {
        services::release(store, &deleted).await;
    }
    Ok(deleted)
}

/// Parses list options from the query.
pub fn list_options(info: &ResourceInfo, query: &Query) -> Result<ListOptions, ApiError> {
    let label_selector = match query.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(LabelSelector::parse(s)?),
        None => None,
    };
    let field_selector = match query.get("fieldSelector").filter(|s| !s.is_empty()) {
        Some(s) => {
            let f = FieldSelector::parse(s)?;
            f.check_supported(info)?;
            Some(f)
        }
        None => None,
    };
    let limit = query.non_negative("limit")?.unwrap_or(0);
    Ok(ListOptions {
        label_selector,
        field_selector,
        limit,
        continue_token: query.get("continue").filter(|s| !s.is_empty()).cloned(),
    })
}

async fn list(
    st: &ApiState,
    store: &Storage,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    query: &Query,
    wants_table: bool,
    encoding: protobuf::Encoding,
) -> Result<Response, ApiError> {
    let opts = list_options(info, query)?;
    let source = watch::list_source(query, &opts)?;
    let cache = match source {
        watch::ListSource::Store => None,
        _ => st.watch_cache.kind(info),
    };
    // `None` when the cache is not caught up in time: etcd answers instead.
    let result = match (cache, source) {
        (Some(cache), watch::ListSource::CacheNotOlderThan(at_least)) => {
            cache.list(ns, &opts, at_least).await.ok().transpose()?
        }
        (Some(cache), watch::ListSource::CacheConsistent) => {
            watch::consistent_from_cache(store, &cache, ns, &opts).await?
        }
        _ => None,
    };
    if wants_table {
        let result = match result {
            Some(raw) => raw.decoded(info)?,
            None => store.list(info, ns, &opts).await?,
        };
        let rv = result.resource_version.to_string();
        return Ok(table_response(&table::table(
            info,
            &result.items,
            &rv,
            result.continue_token.as_deref(),
            Utc::now(),
        )));
    }
    // Plain lists are assembled from the stored bytes: no per-object parse and re-encode.
    let result = match result {
        Some(r) => r,
        None => store.list_stored(info, ns, &opts).await?,
    };
    // A large list is tens of milliseconds of CPU at 5,000 Nodes (megabytes to copy, or to
    // parse again for protobuf): built on the blocking pool, it does not hold up the requests
    // queued on this async worker (docs/scale.md).
    let bytes: usize = result.items.iter().map(|kv| kv.value.len()).sum();
    if bytes < LARGE_LIST_BYTES {
        return list_response(info, result, encoding);
    }
    tokio::task::spawn_blocking(move || list_response(info, result, encoding))
        .await
        .map_err(|e| ApiError::Internal(format!("building a list response: {e}")))?
}

/// The stored bytes of a list's items above which its response is built off the async workers.
const LARGE_LIST_BYTES: usize = 1 << 20;

/// A plain list response, from the stored bytes of its items.
fn list_response(
    info: &'static ResourceInfo,
    result: storage::RawListResult,
    encoding: protobuf::Encoding,
) -> Result<Response, ApiError> {
    let mut metadata = json!({"resourceVersion": result.resource_version.to_string()});
    if let Some(c) = &result.continue_token {
        metadata["continue"] = Value::String(c.clone());
        if let Some(n) = result.remaining {
            metadata["remainingItemCount"] = json!(n);
        }
    }
    let mut body = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        info.list_kind(),
        info.api_version(),
        metadata
    )
    .into_bytes();
    body.reserve(result.items.iter().map(|kv| kv.value.len() + 32).sum());
    for (i, kv) in result.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        storage::write_item(info, kv, &mut body)?;
    }
    body.extend_from_slice(b"]}");
    if encoding == protobuf::Encoding::Protobuf && info.protobuf.is_some() {
        let list: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Internal(format!("re-reading a list: {e}")))?;
        return protobuf::respond(StatusCode::OK, &list, info, encoding);
    }
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// SelfSubjectAccessReview and SelfSubjectReview.
fn review(
    user: &User,
    info: &ResourceInfo,
    kind: Review,
    mut obj: Value,
    encoding: protobuf::Encoding,
) -> Result<Response, ApiError> {
    match kind {
        Review::Access => {
            objects::validate_body(info, &obj, None, None)?;
            let (allowed, reason) = if let Some(ra) = obj.pointer("/spec/resourceAttributes") {
                let group = ra.get("group").and_then(Value::as_str).unwrap_or("");
                let resource = ra.get("resource").and_then(Value::as_str).unwrap_or("");
                let verb = ra.get("verb").and_then(Value::as_str).unwrap_or("");
                let version = ra
                    .get("version")
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty());
                let found = resources::lookup_any_version(group, version, resource);
                match found {
                    Some(res) => {
                        let attrs = Attributes {
                            verb,
                            resource: res,
                            subresource: ra
                                .get("subresource")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty()),
                            namespace: ra
                                .get("namespace")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty()),
                            name: ra
                                .get("name")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty()),
                        };
                        match authz::authorize(user, &attrs) {
                            Ok(()) => (true, String::new()),
                            Err(d) => (false, d.0),
                        }
                    }
                    None if user.in_group("system:masters") => (true, String::new()),
                    None => (
                        false,
                        format!("no RBAC policy matched (unknown resource {resource})"),
                    ),
                }
            } else {
                // Non-resource URLs: masters and anyone for discovery/health.
                let path = obj
                    .pointer("/spec/nonResourceAttributes/path")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if user.in_group("system:masters") || authz::is_public_path(path) {
                    (true, String::new())
                } else {
                    (false, "no RBAC policy matched".into())
                }
            };
            obj["status"] = if allowed {
                json!({"allowed": true})
            } else {
                json!({"allowed": false, "reason": reason})
            };
            obj["apiVersion"] = json!(info.api_version());
            obj["kind"] = json!(info.kind);
            protobuf::respond(StatusCode::CREATED, &obj, info, encoding)
        }
        Review::Rules => {
            let namespace = obj
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            let (resource_rules, non_resource_rules) = authz::rules(user, namespace);
            obj["status"] = json!({
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": false,
            });
            obj["apiVersion"] = json!(info.api_version());
            obj["kind"] = json!(info.kind);
            Ok(json_response(StatusCode::CREATED, &obj, "application/json"))
        }
        Review::Subject => {
            let body = json!({
                "kind": info.kind,
                "apiVersion": info.api_version(),
                "metadata": {"creationTimestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
                "status": {"userInfo": {"username": user.name, "groups": user.groups}},
            });
            protobuf::respond(StatusCode::CREATED, &body, info, encoding)
        }
    }
}
