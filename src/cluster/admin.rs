//! Node and token administration of a running server, as plain async functions over the
//! datastore: list/get/cordon/label/taint/delete nodes (deleting a server node also removes its
//! etcd member) and create/list/delete bootstrap tokens and rotate the server token. The D-Bus
//! service (`crate::dbus`) is a thin wrapper over these; argument checks live here so every
//! front end refuses the same input with the same [`AdminError::InvalidArgument`].

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::cluster::bootstrap_tokens::{NAMESPACE, SECRET_TYPE, secret_name};
use crate::cluster::context::Ctx;
use crate::cluster::token_ops::{self, TokenOpError};
use crate::etcd::EtcdError;
use crate::registry::{NODES, SECRETS};
use crate::storage::{ListOptions, ObjectError, Storage};
use crate::token::{self, Credentials, JoinToken, Secret};
use crate::validation::{self, NodeLabel, Taint, TaintEffect};

/// Default lifetime of a bootstrap token (RKE2/kubeadm: 24 h).
pub const DEFAULT_TOKEN_TTL_SECONDS: i64 = 24 * 3600;
/// Longest lifetime a bootstrap token may be given (one year); 0 means it never expires.
pub const MAX_TOKEN_TTL_SECONDS: i64 = 365 * 24 * 3600;
/// Usages a bootstrap token can carry (kubeadm); the default is all of them.
pub const TOKEN_USAGES: &[&str] = &["signing", "authentication"];
/// Extra group of tokens created here (RKE2's default).
pub const DEFAULT_TOKEN_GROUP: &str = "system:bootstrappers:rke2:default-node-token";
/// Longest token description accepted, in bytes.
const MAX_DESCRIPTION_LEN: usize = 256;
/// Label marking a node whose server runs an etcd member.
const ETCD_ROLE_LABEL: &str = "node-role.kubernetes.io/etcd";
/// Annotation naming a server node's etcd member.
const ETCD_MEMBER_ANNOTATION: &str = "etcd.rke2.cattle.io/node-name";

/// Why an administrative operation failed. Front ends map each variant to their own error
/// vocabulary in one exhaustive match (D-Bus: `crate::dbus::errors`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{what} \"{name}\" not found")]
    NotFound { what: &'static str, name: String },
    #[error("the datastore is not ready yet; try again once the server is ready")]
    NotReady,
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Token(#[from] TokenOpError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Snapshot(#[from] crate::etcd::snapshot::SnapshotError),
    #[error(transparent)]
    Encryption(#[from] crate::cluster::encryption_stages::StageError),
    #[error("node {node} was deleted but its etcd member {member} could not be removed: {source}")]
    MemberRemoval {
        node: String,
        member: String,
        #[source]
        source: EtcdError,
    },
}

fn invalid(msg: impl Into<String>) -> AdminError {
    AdminError::InvalidArgument(msg.into())
}

/// Only uid 0 may change the cluster; everyone may read.
pub fn authorize_mutation(uid: u32, operation: &str) -> Result<(), AdminError> {
    if uid == 0 {
        Ok(())
    } else {
        Err(AdminError::AccessDenied(format!(
            "{operation} changes the cluster and may only be called by root (caller uid {uid})"
        )))
    }
}

/// A node as the admin interfaces show it. Also the D-Bus wire type
/// `(ssbasssssa{ss}as)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::Type)]
pub struct NodeSummary {
    pub name: String,
    /// Status of the `Ready` condition: `True`, `False`, `Unknown`, or empty if not reported.
    pub ready: String,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Roles from `node-role.kubernetes.io/<role>` labels, sorted.
    pub roles: Vec<String>,
    pub internal_ip: String,
    pub version: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// etcd member of a server node, empty for agents.
    pub etcd_member: String,
    pub labels: BTreeMap<String, String>,
    /// Taints as `key[=value]:Effect`.
    pub taints: Vec<String>,
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Status of a node's `Ready` condition, if reported.
pub fn ready_status(node: &Value) -> Option<String> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .get("status")?
        .as_str()
        .map(str::to_string)
}

/// The summary of a stored Node object.
pub fn node_summary(node: &Value) -> NodeSummary {
    let labels: BTreeMap<String, String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let roles = labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    let internal_ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .map(|x| text(x, "/address"))
        .unwrap_or_default();
    let taints = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let (k, v, e) = (text(t, "/key"), text(t, "/value"), text(t, "/effect"));
                    if v.is_empty() {
                        format!("{k}:{e}")
                    } else {
                        format!("{k}={v}:{e}")
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    NodeSummary {
        name: text(node, "/metadata/name"),
        ready: ready_status(node).unwrap_or_default(),
        unschedulable: node
            .pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        roles,
        internal_ip,
        version: text(node, "/status/nodeInfo/kubeletVersion"),
        created: text(node, "/metadata/creationTimestamp"),
        etcd_member: etcd_member_of(node).unwrap_or_default(),
        labels,
        taints,
    }
}

/// The etcd member of a server node (labelled etcd and annotated with its member name).
fn etcd_member_of(node: &Value) -> Option<String> {
    let labels = node.pointer("/metadata/labels")?;
    if labels.get(ETCD_ROLE_LABEL).and_then(Value::as_str) != Some("true") {
        return None;
    }
    let member = node
        .pointer("/metadata/annotations")?
        .get(ETCD_MEMBER_ANNOTATION)?
        .as_str()?;
    (!member.is_empty()).then(|| member.to_string())
}

/// Checks a node name argument.
pub fn validate_node_name(name: &str) -> Result<(), AdminError> {
    validation::validate_dns_subdomain(name)
        .map_err(|e| invalid(format!("invalid node name \"{name}\": {e}")))
}

/// One requested label change: `key=value` sets, `key-` removes (kubectl syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelEdit {
    Set(NodeLabel),
    Remove(String),
}

/// Parses label edits; all must be valid before anything changes.
pub fn parse_label_edits(edits: &[String]) -> Result<Vec<LabelEdit>, AdminError> {
    if edits.is_empty() {
        return Err(invalid("no labels given: expected key=value or key-"));
    }
    edits
        .iter()
        .map(|e| {
            if let Some(key) = e.strip_suffix('-').filter(|k| !k.contains('=')) {
                validation::validate_label_key(key)
                    .map_err(|err| invalid(format!("invalid label removal \"{e}\": {err}")))?;
                Ok(LabelEdit::Remove(key.to_string()))
            } else {
                e.parse::<NodeLabel>()
                    .map(LabelEdit::Set)
                    .map_err(|err| invalid(err.0))
            }
        })
        .collect()
}

/// Applies label edits to a Node object.
pub fn apply_label_edits(node: &mut Value, edits: &[LabelEdit]) {
    if !node["metadata"]["labels"].is_object() {
        node["metadata"]["labels"] = json!({});
    }
    let labels = node["metadata"]["labels"]
        .as_object_mut()
        .expect("made an object above");
    for e in edits {
        match e {
            LabelEdit::Set(l) => {
                labels.insert(l.key.clone(), Value::String(l.value.clone()));
            }
            LabelEdit::Remove(k) => {
                labels.remove(k);
            }
        }
    }
}

/// One requested taint change: `key[=value]:Effect` adds (replacing the same key and effect),
/// `key-` removes every taint with that key, `key:Effect-` only the one with that effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaintEdit {
    Add(Taint),
    Remove {
        key: String,
        effect: Option<TaintEffect>,
    },
}

/// Parses taint edits; all must be valid before anything changes.
pub fn parse_taint_edits(edits: &[String]) -> Result<Vec<TaintEdit>, AdminError> {
    if edits.is_empty() {
        return Err(invalid(
            "no taints given: expected key[=value]:Effect, key:Effect- or key-",
        ));
    }
    edits
        .iter()
        .map(|e| {
            if let Some(spec) = e.strip_suffix('-').filter(|s| !s.contains('=')) {
                let (key, effect) = match spec.split_once(':') {
                    Some((k, eff)) => (
                        k,
                        Some(eff.parse::<TaintEffect>().map_err(|err| {
                            invalid(format!("invalid taint removal \"{e}\": {err}"))
                        })?),
                    ),
                    None => (spec, None),
                };
                validation::validate_label_key(key)
                    .map_err(|err| invalid(format!("invalid taint removal \"{e}\": {err}")))?;
                Ok(TaintEdit::Remove {
                    key: key.to_string(),
                    effect,
                })
            } else {
                e.parse::<Taint>()
                    .map(TaintEdit::Add)
                    .map_err(|err| invalid(err.0))
            }
        })
        .collect()
}

/// Applies taint edits to a Node object.
pub fn apply_taint_edits(node: &mut Value, edits: &[TaintEdit]) {
    let mut taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for e in edits {
        match e {
            TaintEdit::Add(t) => {
                taints
                    .retain(|x| !(x["key"] == t.key.as_str() && x["effect"] == t.effect.as_str()));
                taints.push(t.to_json());
            }
            TaintEdit::Remove { key, effect } => taints.retain(|x| {
                !(x["key"] == key.as_str() && effect.is_none_or(|eff| x["effect"] == eff.as_str()))
            }),
        }
    }
    if !node["spec"].is_object() {
        node["spec"] = json!({});
    }
    let spec = node["spec"].as_object_mut().expect("made an object above");
    if taints.is_empty() {
        spec.remove("taints");
    } else {
        spec.insert("taints".into(), Value::Array(taints));
    }
}

fn storage(ctx: &Ctx) -> Result<Storage, AdminError> {
    ctx.store
        .get()
        .cloned()
        .map(Storage::new)
        .ok_or(AdminError::NotReady)
}

fn node_not_found(e: ObjectError, name: &str) -> AdminError {
    match e {
        ObjectError::NotFound { .. } => AdminError::NotFound {
            what: "node",
            name: name.to_string(),
        },
        other => AdminError::Object(other),
    }
}

/// All nodes, sorted by name.
pub async fn list_nodes(ctx: &Ctx) -> Result<Vec<NodeSummary>, AdminError> {
    let list = storage(ctx)?
        .list(&NODES, None, &ListOptions::default())
        .await?;
    let mut nodes: Vec<NodeSummary> = list.items.iter().map(node_summary).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// One node.
pub async fn get_node(ctx: &Ctx, name: &str) -> Result<NodeSummary, AdminError> {
    validate_node_name(name)?;
    let node = storage(ctx)?
        .get(&NODES, None, name)
        .await
        .map_err(|e| node_not_found(e, name))?;
    Ok(node_summary(&node))
}

async fn modify_node(
    ctx: &Ctx,
    name: &str,
    f: impl FnMut(&mut Value) -> Result<(), ObjectError>,
) -> Result<NodeSummary, AdminError> {
    validate_node_name(name)?;
    let node = storage(ctx)?
        .modify(&NODES, None, name, None, f)
        .await
        .map_err(|e| node_not_found(e, name))?;
    Ok(node_summary(&node))
}

/// Cordons (`true`) or uncordons a node.
pub async fn set_unschedulable(
    ctx: &Ctx,
    name: &str,
    unschedulable: bool,
) -> Result<NodeSummary, AdminError> {
    modify_node(ctx, name, |n| {
        if !n["spec"].is_object() {
            n["spec"] = json!({});
        }
        let spec = n["spec"].as_object_mut().expect("made an object above");
        if unschedulable {
            spec.insert("unschedulable".into(), Value::Bool(true));
        } else {
            spec.remove("unschedulable");
        }
        Ok(())
    })
    .await
}

/// Sets or removes labels.
pub async fn label_node(
    ctx: &Ctx,
    name: &str,
    edits: &[String],
) -> Result<NodeSummary, AdminError> {
    validate_node_name(name)?;
    let edits = parse_label_edits(edits)?;
    modify_node(ctx, name, |n| {
        apply_label_edits(n, &edits);
        Ok(())
    })
    .await
}

/// Adds or removes taints.
pub async fn taint_node(
    ctx: &Ctx,
    name: &str,
    edits: &[String],
) -> Result<NodeSummary, AdminError> {
    validate_node_name(name)?;
    let edits = parse_taint_edits(edits)?;
    modify_node(ctx, name, |n| {
        apply_taint_edits(n, &edits);
        Ok(())
    })
    .await
}

/// Deletes a node. For a server node its etcd member is removed too; the last voting member is
/// refused before anything changes. Returns the removed etcd member, if any.
pub async fn delete_node(ctx: &Ctx, name: &str) -> Result<Option<String>, AdminError> {
    validate_node_name(name)?;
    let store = storage(ctx)?;
    let node = store
        .get(&NODES, None, name)
        .await
        .map_err(|e| node_not_found(e, name))?;
    // The member comes from etcd's membership (servers name their own members), never from
    // the Node's client-writable annotations.
    let client = ctx.etcd.get().ok_or(AdminError::NotReady)?;
    let members = crate::etcd::member_list(client).await?;
    let member = crate::etcd::membership::member_of_node(&members, name).map(|m| m.name.clone());
    if let Some(member) = &member {
        crate::etcd::membership::removal_allowed(client, &ctx.etcd_tls, member).await?;
    }
    let uid = text(&node, "/metadata/uid");
    store
        .delete(&NODES, None, name, Some(&uid), None)
        .await
        .map_err(|e| node_not_found(e, name))?;
    let Some(member) = member else {
        return Ok(None);
    };
    // The leader's member-removal controller reacts to the same deletion; whichever of us gets
    // there first removes the member, and the other finds it gone.
    let client = ctx.etcd.get().ok_or(AdminError::NotReady)?;
    match crate::etcd::membership::remove_member(client, &ctx.etcd_tls, &member).await {
        Ok(_) => Ok(Some(member)),
        Err(e) => {
            let gone = crate::etcd::member_list(client)
                .await
                .is_ok_and(|ms| !ms.iter().any(|m| m.name == member));
            if gone {
                Ok(Some(member))
            } else {
                Err(AdminError::MemberRemoval {
                    node: name.to_string(),
                    member,
                    source: e,
                })
            }
        }
    }
}

/// What to create a bootstrap token with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Lifetime in seconds; 0 = never expires.
    pub ttl_seconds: i64,
    pub description: String,
    /// Empty = all of [`TOKEN_USAGES`].
    pub usages: Vec<String>,
}

/// A validated token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub expiration: Option<DateTime<Utc>>,
    pub description: String,
    pub usages: Vec<String>,
}

/// Checks a token request against the bounds (TTL 0..=[`MAX_TOKEN_TTL_SECONDS`], known usages,
/// a short printable description).
pub fn validate_token_request(
    req: &TokenRequest,
    now: DateTime<Utc>,
) -> Result<TokenSpec, AdminError> {
    if req.ttl_seconds < 0 {
        return Err(invalid(format!(
            "invalid TTL {}s: must be 0 (never expires) or positive",
            req.ttl_seconds
        )));
    }
    if req.ttl_seconds > MAX_TOKEN_TTL_SECONDS {
        return Err(invalid(format!(
            "invalid TTL {}s: at most {MAX_TOKEN_TTL_SECONDS}s (one year); use 0 for a token that never expires",
            req.ttl_seconds
        )));
    }
    if req.description.len() > MAX_DESCRIPTION_LEN || req.description.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "invalid description: at most {MAX_DESCRIPTION_LEN} bytes without control characters"
        )));
    }
    let mut usages: Vec<String> = Vec::new();
    for u in &req.usages {
        if !TOKEN_USAGES.contains(&u.as_str()) {
            return Err(invalid(format!(
                "invalid usage \"{u}\": must be one of {}",
                TOKEN_USAGES.join(", ")
            )));
        }
        if !usages.contains(u) {
            usages.push(u.clone());
        }
    }
    if usages.is_empty() {
        usages = TOKEN_USAGES.iter().map(|s| s.to_string()).collect();
    }
    Ok(TokenSpec {
        expiration: (req.ttl_seconds > 0).then(|| now + chrono::Duration::seconds(req.ttl_seconds)),
        description: req.description.clone(),
        usages,
    })
}

fn b64(s: &str) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(s))
}

/// The Secret object of a bootstrap token (kubeadm layout).
pub fn token_secret_object(id: &str, secret: &Secret, spec: &TokenSpec) -> Value {
    let mut data = serde_json::Map::new();
    data.insert("token-id".into(), b64(id));
    data.insert("token-secret".into(), b64(secret.expose()));
    if !spec.description.is_empty() {
        data.insert("description".into(), b64(&spec.description));
    }
    if let Some(exp) = spec.expiration {
        data.insert(
            "expiration".into(),
            b64(&exp.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
    }
    for u in &spec.usages {
        data.insert(format!("usage-bootstrap-{u}"), b64("true"));
    }
    data.insert("auth-extra-groups".into(), b64(DEFAULT_TOKEN_GROUP));
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(id), "namespace": NAMESPACE},
        "type": SECRET_TYPE,
        "data": data,
    })
}

/// A bootstrap token without its secret. Also the D-Bus wire type `(sssasas)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::Type)]
pub struct TokenSummary {
    pub id: String,
    pub description: String,
    /// RFC 3339 expiration, empty if the token never expires.
    pub expires: String,
    pub usages: Vec<String>,
    pub groups: Vec<String>,
}

fn data_text(secret: &Value, field: &str) -> String {
    crate::cluster::bootstrap_tokens::data_field(secret, field).unwrap_or_default()
}

/// The summary of a bootstrap token Secret (the secret part is never included).
pub fn token_summary(secret: &Value) -> TokenSummary {
    let usages = TOKEN_USAGES
        .iter()
        .filter(|u| data_text(secret, &format!("usage-bootstrap-{u}")) == "true")
        .map(|u| u.to_string())
        .collect();
    let groups = data_text(secret, "auth-extra-groups")
        .split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    let mut id = data_text(secret, "token-id");
    if id.is_empty() {
        id = text(secret, "/metadata/name")
            .trim_start_matches("bootstrap-token-")
            .to_string();
    }
    TokenSummary {
        id,
        description: data_text(secret, "description"),
        expires: data_text(secret, "expiration"),
        usages,
        groups,
    }
}

/// Creates a bootstrap token; returns the full `K10<ca-hash>::<id>.<secret>` join token.
pub async fn create_token(ctx: &Ctx, req: &TokenRequest) -> Result<Secret, AdminError> {
    let spec = validate_token_request(req, Utc::now())?;
    let store = storage(ctx)?;
    let (id, secret) = token::generate_bootstrap_token();
    store
        .create(
            &SECRETS,
            Some(NAMESPACE),
            token_secret_object(&id, &secret, &spec),
        )
        .await?;
    tracing::info!(component = "tokens", token_id = %id, "created bootstrap token");
    Ok(Secret::new(format!(
        "K10{}::{id}.{}",
        ctx.ca_hash(),
        secret.expose()
    )))
}

/// All bootstrap tokens (including expired ones not yet cleaned up), sorted by id.
pub async fn list_tokens(ctx: &Ctx) -> Result<Vec<TokenSummary>, AdminError> {
    let list = storage(ctx)?
        .list(&SECRETS, Some(NAMESPACE), &ListOptions::default())
        .await?;
    let mut tokens: Vec<TokenSummary> = list
        .items
        .iter()
        .filter(|s| s["type"] == SECRET_TYPE)
        .map(token_summary)
        .collect();
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tokens)
}

/// The token id named by `<id>`, `<id>.<secret>` or a full `K10...::<id>.<secret>` token.
pub fn token_id_of(arg: &str) -> Result<String, AdminError> {
    let arg = arg.trim();
    let is_id = arg.len() == 6
        && arg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if is_id {
        return Ok(arg.to_string());
    }
    match JoinToken::parse(arg).map(|t| t.credentials) {
        Ok(Credentials::Bootstrap { id, .. }) => Ok(id),
        _ => Err(invalid(
            "invalid token: expected a token id (6 characters [a-z0-9]), <id>.<secret> or K10<hash>::<id>.<secret>",
        )),
    }
}

/// Deletes a bootstrap token; returns its id.
pub async fn delete_token(ctx: &Ctx, id_or_token: &str) -> Result<String, AdminError> {
    let id = token_id_of(id_or_token)?;
    let store = storage(ctx)?;
    match store
        .delete(&SECRETS, Some(NAMESPACE), &secret_name(&id), None, None)
        .await
    {
        Ok(_) => {
            tracing::info!(component = "tokens", token_id = %id, "deleted bootstrap token");
            Ok(id)
        }
        Err(ObjectError::NotFound { .. }) => Err(AdminError::NotFound {
            what: "bootstrap token",
            name: id,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Checks a requested new server token before anything is persisted: the credentials file is
/// comma-separated, so commas, whitespace and control characters are refused, as are bootstrap
/// tokens (they never authenticate servers).
pub fn validate_new_server_token(new: &str) -> Result<(), AdminError> {
    if new
        .chars()
        .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "invalid server token: commas, whitespace and control characters are not allowed",
        ));
    }
    token::normalize_server_token(&Secret::new(new))
        .map(|_| ())
        .map_err(|e| invalid(format!("invalid server token: {e}")))
}

/// Rotates the server token to `new` (empty = generated); returns the full new token.
pub async fn rotate_server_token(ctx: &Ctx, new: &Secret) -> Result<Secret, AdminError> {
    let new = new.expose();
    if !new.is_empty() {
        validate_new_server_token(new)?;
    }
    storage(ctx)?;
    let pw =
        token_ops::rotate_server_token(ctx, (!new.is_empty()).then(|| new.to_string())).await?;
    Ok(Secret::new(token::format_full_token(
        &ctx.ca_hash(),
        "server",
        &pw,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Value {
        json!({
            "metadata": {
                "name": "s1", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"node-role.kubernetes.io/etcd": "true", "node-role.kubernetes.io/control-plane": "true", "a": "b"},
                "annotations": {"etcd.rke2.cattle.io/node-name": "s1-0000abcd"},
            },
            "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.32.4"},
            },
        })
    }

    #[test]
    fn summarises_nodes() {
        let s = node_summary(&node());
        assert_eq!(s.name, "s1");
        assert_eq!(s.ready, "True");
        assert!(!s.unschedulable);
        assert_eq!(s.roles, vec!["control-plane", "etcd"]);
        assert_eq!(s.internal_ip, "10.0.0.1");
        assert_eq!(s.etcd_member, "s1-0000abcd");
        assert_eq!(s.taints, vec!["k=v:NoSchedule"]);
        let mut agent = node();
        agent["metadata"]["labels"] = json!({});
        assert_eq!(node_summary(&agent).etcd_member, "");
    }

    #[test]
    fn label_edits_parse_and_apply() {
        let edits = parse_label_edits(&["tier=web".into(), "a-".into(), "x.io/y=".into()]).unwrap();
        let mut n = node();
        apply_label_edits(&mut n, &edits);
        let labels = &n["metadata"]["labels"];
        assert_eq!(labels["tier"], "web");
        assert!(labels.get("a").is_none());
        assert_eq!(labels["x.io/y"], "");
        for bad in ["", "novalue", "bad key=x", "k=bad value", "-"] {
            assert!(
                matches!(
                    parse_label_edits(&[bad.into()]),
                    Err(AdminError::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
        assert!(parse_label_edits(&[]).is_err());
    }

    #[test]
    fn taint_edits_parse_and_apply() {
        let mut n = node();
        let edits = parse_taint_edits(&[
            "k=w:NoSchedule".into(),
            "dedicated:NoExecute".into(),
            "gpu=yes:PreferNoSchedule".into(),
        ])
        .unwrap();
        apply_taint_edits(&mut n, &edits);
        let s = node_summary(&n);
        assert_eq!(
            s.taints,
            vec![
                "k=w:NoSchedule",
                "dedicated:NoExecute",
                "gpu=yes:PreferNoSchedule"
            ]
        );
        apply_taint_edits(
            &mut n,
            &parse_taint_edits(&["k-".into(), "gpu:PreferNoSchedule-".into()]).unwrap(),
        );
        assert_eq!(node_summary(&n).taints, vec!["dedicated:NoExecute"]);
        apply_taint_edits(&mut n, &parse_taint_edits(&["dedicated-".into()]).unwrap());
        assert!(n["spec"].get("taints").is_none());
        for bad in ["k=v", "k=v:Sometimes", "-x:NoSchedule", "k:Never-", ""] {
            assert!(
                matches!(
                    parse_taint_edits(&[bad.into()]),
                    Err(AdminError::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn node_names_are_checked() {
        assert!(validate_node_name("a1").is_ok());
        for bad in ["", "UPPER", "a_b", "-x", &"a".repeat(254)] {
            assert!(matches!(
                validate_node_name(bad),
                Err(AdminError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn token_requests_are_bounded() {
        let now = Utc::now();
        let req = |ttl: i64, usages: &[&str]| TokenRequest {
            ttl_seconds: ttl,
            description: "d".into(),
            usages: usages.iter().map(|s| s.to_string()).collect(),
        };
        let s = validate_token_request(&req(60, &[]), now).unwrap();
        assert_eq!(s.expiration, Some(now + chrono::Duration::seconds(60)));
        assert_eq!(s.usages, vec!["signing", "authentication"]);
        assert_eq!(
            validate_token_request(&req(0, &["authentication"]), now)
                .unwrap()
                .expiration,
            None
        );
        for bad in [
            req(-1, &[]),
            req(MAX_TOKEN_TTL_SECONDS + 1, &[]),
            req(5, &["root"]),
        ] {
            assert!(matches!(
                validate_token_request(&bad, now),
                Err(AdminError::InvalidArgument(_))
            ));
        }
        let mut r = req(5, &[]);
        r.description = "line\nbreak".into();
        assert!(validate_token_request(&r, now).is_err());
    }

    #[test]
    fn token_secrets_round_trip_without_the_secret() {
        let now = Utc::now();
        let spec = validate_token_request(
            &TokenRequest {
                ttl_seconds: 3600,
                description: "for a1".into(),
                usages: vec![],
            },
            now,
        )
        .unwrap();
        let obj = token_secret_object("abcdef", &Secret::new("0123456789abcdef"), &spec);
        assert_eq!(obj["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(obj["type"], SECRET_TYPE);
        assert!(crate::cluster::bootstrap_tokens::matches(
            &obj,
            "0123456789abcdef",
            now
        ));
        let s = token_summary(&obj);
        assert_eq!(s.id, "abcdef");
        assert_eq!(s.description, "for a1");
        assert_eq!(s.usages, vec!["signing", "authentication"]);
        assert_eq!(s.groups, vec![DEFAULT_TOKEN_GROUP]);
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
        assert!(s.expires.ends_with('Z'));
    }

    #[test]
    fn token_ids_from_any_form() {
        assert_eq!(token_id_of("abcdef").unwrap(), "abcdef");
        assert_eq!(token_id_of("abcdef.0123456789abcdef").unwrap(), "abcdef");
        let full = format!("K10{}::abcdef.0123456789abcdef", "a".repeat(64));
        assert_eq!(token_id_of(&full).unwrap(), "abcdef");
        for bad in ["", "ABCDEF", "abc", "K10::server:pw"] {
            assert!(token_id_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_server_tokens_are_checked() {
        assert!(validate_new_server_token("s3cret-Token").is_ok());
        for bad in ["a,b", "a b", "abcdef.0123456789abcdef", "x\n"] {
            assert!(validate_new_server_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_root_may_mutate() {
        assert!(authorize_mutation(0, "DeleteNode").is_ok());
        let e = authorize_mutation(65534, "DeleteNode").unwrap_err();
        assert!(matches!(e, AdminError::AccessDenied(_)));
        assert!(e.to_string().contains("65534"));
    }
}
