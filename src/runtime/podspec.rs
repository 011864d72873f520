//! A Pod's spec in CRI terms: the sandbox config (metadata labels, hostname, log directory,
//! DNS, hostPorts, security), each container's config (command/args/workingDir, env with
//! `fieldRef`/`configMapKeyRef`/`secretKeyRef`/`envFrom`, mounts from volumes with `subPath`/`readOnly`,
//! resources as cgroup limits, securityContext), and the volumes' host directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;

use super::cri::v1;
use super::quantity;

/// Labels the node runtime puts on sandboxes and containers (as the kubelet does), and finds
/// them by again after a restart.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Annotation holding the container's termination grace period on the sandbox.
pub const GRACE_ANNOTATION: &str = "io.kubernetes.pod.terminationGracePeriod";

/// CFS period used for CPU limits (upstream's default).
const CPU_PERIOD: i64 = 100_000;

/// A spec problem the user must fix (shown as `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// Facts the spec refers to that only the node knows.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    pub node_name: String,
    pub namespace: String,
    pub host_ip: String,
    pub pod_ip: String,
    /// ConfigMaps of the pod's namespace by name (key → value).
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Secrets of the pod's namespace the pod refers to, by name (key → decoded bytes).
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The pod's directory (`<data-dir>/agent/pods/<uid>`).
    pub pod_dir: PathBuf,
    pub log_dir: PathBuf,
}

pub fn meta(pod: &core::Pod) -> (&str, &str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or(""),
    )
}

/// The ConfigMaps and the Secrets the pod's env, envFrom and volumes name, sorted, once each
/// (the node may read exactly those: crate::apiserver::authz).
pub fn references(pod: &core::Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = std::collections::BTreeSet::new();
    let mut secrets = std::collections::BTreeSet::new();
    let spec = spec(pod);
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(k) = &from.config_map_key_ref {
                    cms.insert(k.name.clone());
                }
                if let Some(k) = &from.secret_key_ref {
                    secrets.insert(k.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(n);
        }
    }
    (cms.into_iter().collect(), secrets.into_iter().collect())
}

/// A Secret's `data`, base64-decoded (undecodable values are skipped: the API validated them).
pub fn secret_data(secret: &serde_json::Value) -> BTreeMap<String, Vec<u8>> {
    use base64::Engine as _;
    secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()?;
            Some((k.clone(), bytes))
        })
        .collect()
}

/// The log directory of a pod: `<pod-logs>/<namespace>_<name>_<uid>` (kubelet's layout).
pub fn log_dir(root: &Path, pod: &core::Pod) -> PathBuf {
    let (ns, name, uid) = meta(pod);
    root.join(format!("{ns}_{name}_{uid}"))
}

fn spec(pod: &core::Pod) -> core::PodSpec {
    pod.spec.clone().unwrap_or_default()
}

/// The sandbox config.
pub fn sandbox_config(pod: &core::Pod, ctx: &PodContext) -> v1::PodSandboxConfig {
    let (ns, name, uid) = meta(pod);
    let spec = spec(pod);
    let mut labels: std::collections::HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(POD_UID.into(), uid.into());
    labels.insert(POD_NAME.into(), name.into());
    labels.insert(POD_NAMESPACE.into(), ns.into());
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    let annotations = [(GRACE_ANNOTATION.to_string(), grace.to_string())]
        .into_iter()
        .collect();
    let mut ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            if let Some(host_port) = p.host_port.filter(|h| *h > 0) {
                ports.push(v1::PortMapping {
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => v1::Protocol::Udp as i32,
                        Some("SCTP") => v1::Protocol::Sctp as i32,
                        _ => v1::Protocol::Tcp as i32,
                    },
                    container_port: p.container_port,
                    host_port,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = if host_network {
        String::new()
    } else {
        spec.hostname.clone().unwrap_or_else(|| name.to_string())
    };
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: ns.into(),
            attempt: 0,
        }),
        hostname,
        log_directory: ctx.log_dir.display().to_string(),
        dns_config: None,
        port_mappings: ports,
        labels,
        annotations,
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: if host_network {
                        v1::NamespaceMode::Node as i32
                    } else {
                        v1::NamespaceMode::Pod as i32
                    },
                    pid: v1::NamespaceMode::Container as i32,
                    ipc: v1::NamespaceMode::Pod as i32,
                }),
                privileged,
                ..Default::default()
            }),
        }),
    }
}

/// The value of a `fieldRef`.
fn field_value(pod: &core::Pod, ctx: &PodContext, path: &str) -> Result<String, SpecError> {
    let (ns, name, uid) = meta(pod);
    Ok(match path {
        "metadata.name" => name.into(),
        "metadata.namespace" => ns.into(),
        "metadata.uid" => uid.into(),
        "spec.nodeName" => ctx.node_name.clone(),
        "spec.serviceAccountName" => spec(pod).service_account_name.unwrap_or_default(),
        "status.podIP" => ctx.pod_ip.clone(),
        "status.hostIP" => ctx.host_ip.clone(),
        p => {
            let label = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
                p.strip_prefix(prefix)
                    .and_then(|k| k.strip_suffix("']"))
                    .map(|k| {
                        map.as_ref()
                            .and_then(|m| m.get(k))
                            .cloned()
                            .unwrap_or_default()
                    })
            };
            if let Some(v) = label("metadata.labels['", &pod.metadata.labels) {
                v
            } else if let Some(v) = label("metadata.annotations['", &pod.metadata.annotations) {
                v
            } else {
                return Err(SpecError(format!("unsupported fieldRef fieldPath \"{p}\"")));
            }
        }
    })
}

fn config_map_value(
    ctx: &PodContext,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, SpecError> {
    match ctx.config_maps.get(name) {
        None if optional => Ok(None),
        None => Err(SpecError(format!("configmap \"{name}\" not found"))),
        Some(m) => match m.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(SpecError(format!(
                "couldn't find key {key} in ConfigMap {name}"
            ))),
        },
    }
}

/// A secret value as an environment string (upstream passes the bytes through).
fn secret_string(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn secret_value(
    ctx: &PodContext,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, SpecError> {
    match ctx.secrets.get(name) {
        None if optional => Ok(None),
        None => Err(SpecError(format!("secret \"{name}\" not found"))),
        Some(m) => match m.get(key) {
            Some(v) => Ok(Some(secret_string(v))),
            None if optional => Ok(None),
            None => Err(SpecError(format!(
                "couldn't find key {key} in Secret {}/{name}",
                ctx.namespace
            ))),
        },
    }
}

/// Expands `$(VAR)` references to earlier variables, as the kubelet does (`$$` escapes).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in order, with references resolved.
pub fn env(
    pod: &core::Pod,
    c: &core::Container,
    ctx: &PodContext,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |k: String, v: String, vars: &mut BTreeMap<String, String>| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm) = &from.config_map_ref {
            let optional = cm.optional.unwrap_or(false);
            match ctx.config_maps.get(&cm.name) {
                Some(m) => {
                    for (k, v) in m {
                        set(format!("{prefix}{k}"), v.clone(), &mut vars);
                    }
                }
                None if optional => {}
                None => return Err(SpecError(format!("configmap \"{}\" not found", cm.name))),
            }
        }
        if let Some(s) = &from.secret_ref {
            match ctx.secrets.get(&s.name) {
                Some(m) => {
                    for (k, v) in m {
                        set(format!("{prefix}{k}"), secret_string(v), &mut vars);
                    }
                }
                None if s.optional.unwrap_or(false) => {}
                None => return Err(SpecError(format!("secret \"{}\" not found", s.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(field_value(pod, ctx, &f.field_path)?)
                } else if let Some(k) = &from.config_map_key_ref {
                    config_map_value(ctx, &k.name, &k.key, k.optional.unwrap_or(false))?
                } else if let Some(k) = &from.secret_key_ref {
                    secret_value(ctx, &k.name, &k.key, k.optional.unwrap_or(false))?
                } else if let Some(r) = &from.resource_field_ref {
                    Some(resource_field(c, &r.resource)?)
                } else {
                    None
                }
            }
            (Some(v), None) => Some(expand(v, &vars)),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(e.name.clone(), v, &mut vars);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars[&k].clone();
            (k, v)
        })
        .collect())
}

fn resource_field(c: &core::Container, resource: &str) -> Result<String, SpecError> {
    let (kind, what) = resource
        .split_once('.')
        .ok_or_else(|| SpecError(format!("unsupported resourceFieldRef \"{resource}\"")))?;
    let r = c.resources.clone().unwrap_or_default();
    let map = match kind {
        "limits" => r.limits,
        "requests" => r.requests,
        _ => None,
    };
    Ok(map
        .and_then(|m| m.get(what).map(|q| q.0.clone()))
        .unwrap_or_else(|| "0".into()))
}

/// The host directory of each of the pod's volumes, creating emptyDirs and writing configMap
/// contents. Unsupported volume types are errors naming the volume.
pub fn prepare_volumes(
    pod: &core::Pod,
    ctx: &PodContext,
) -> Result<BTreeMap<String, PathBuf>, SpecError> {
    let mut out = BTreeMap::new();
    let io = |p: &Path, e: std::io::Error| SpecError(format!("{}: {e}", p.display()));
    for v in spec(pod).volumes.iter().flatten() {
        let dir = ctx.pod_dir.join("volumes").join(&v.name);
        let path = if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            dir
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            if !p.is_absolute() {
                return Err(SpecError(format!(
                    "volume \"{}\": hostPath.path \"{}\" must be absolute",
                    v.name, hp.path
                )));
            }
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?,
                "Directory" if !p.is_dir() => {
                    return Err(SpecError(format!(
                        "hostPath type check failed: {} is not a directory",
                        hp.path
                    )));
                }
                "File" if !p.is_file() => {
                    return Err(SpecError(format!(
                        "hostPath type check failed: {} is not a file",
                        hp.path
                    )));
                }
                _ => {}
            }
            p
        } else if let Some(cm) = &v.config_map {
            let data = match ctx.config_maps.get(&cm.name) {
                Some(d) => d
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                    .collect(),
                None if cm.optional.unwrap_or(false) => BTreeMap::new(),
                None => {
                    return Err(SpecError(format!(
                        "configmap \"{}\" not found (volume \"{}\")",
                        cm.name, v.name
                    )));
                }
            };
            write_items(&dir, &v.name, &data, cm.items.as_deref(), cm.default_mode)?;
            dir
        } else if let Some(sv) = &v.secret {
            let name = sv.secret_name.clone().unwrap_or_default();
            let data = match ctx.secrets.get(&name) {
                Some(d) => d.clone(),
                None if sv.optional.unwrap_or(false) => BTreeMap::new(),
                None => {
                    return Err(SpecError(format!(
                        "secret \"{name}\" not found (volume \"{}\")",
                        v.name
                    )));
                }
            };
            write_items(&dir, &v.name, &data, sv.items.as_deref(), sv.default_mode)?;
            dir
        } else {
            return Err(SpecError(format!(
                "volume \"{}\": unsupported volume type (supported: emptyDir, configMap, secret, hostPath)",
                v.name
            )));
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// Default mode of configMap and secret volume files (upstream's `defaultMode`: 0644).
pub const DEFAULT_VOLUME_FILE_MODE: u32 = 0o644;

/// Writes a configMap or secret volume: every key (or the listed `items`, at their paths and
/// modes) as a file, each written atomically (temp file + rename) with `defaultMode` (0644
/// unless given). Keys that left the source are removed.
fn write_items(
    dir: &Path,
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[core::KeyToPath]>,
    default_mode: Option<i32>,
) -> Result<(), SpecError> {
    let io = |p: &Path, e: std::io::Error| SpecError(format!("{}: {e}", p.display()));
    let mode = |m: Option<i32>| -> Result<u32, SpecError> {
        match m {
            None => Ok(DEFAULT_VOLUME_FILE_MODE),
            Some(m) if (0..=0o777).contains(&m) => Ok(m as u32),
            Some(m) => Err(SpecError(format!(
                "volume \"{volume}\": mode {m} must be between 0 and 0777 (511)"
            ))),
        }
    };
    let default_mode = mode(default_mode)?;
    let files: Vec<(String, &[u8], u32)> = match items {
        Some(items) => {
            let mut out = Vec::new();
            for i in items {
                let content = data.get(&i.key).ok_or_else(|| {
                    SpecError(format!(
                        "volume \"{volume}\": key \"{}\" is not in the source",
                        i.key
                    ))
                })?;
                let m = match i.mode {
                    Some(_) => mode(i.mode)?,
                    None => default_mode,
                };
                out.push((i.path.clone(), content.as_slice(), m));
            }
            out
        }
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_slice(), default_mode))
            .collect(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for (rel, _, _) in &files {
        if rel.split('/').any(|c| c == "..") || rel.starts_with('/') || rel.is_empty() {
            return Err(SpecError(format!(
                "volume \"{volume}\": item path \"{rel}\" must be relative without .."
            )));
        }
    }
    for (rel, content, m) in &files {
        let f = dir.join(rel);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        crate::fsutil::write_atomic(&f, content, *m).map_err(|e| io(&f, e))?;
    }
    // Keys removed from the source disappear from the volume (top-level files only).
    let keep: std::collections::BTreeSet<&str> = files
        .iter()
        .map(|(rel, _, _)| rel.split('/').next().unwrap_or(rel))
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(name.as_str()) && e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

fn mounts(
    c: &core::Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<v1::Mount>, SpecError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes.get(&m.name).ok_or_else(|| {
            SpecError(format!(
                "container \"{}\": volumeMount \"{}\" names no volume",
                c.name, m.name
            ))
        })?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                    return Err(SpecError(format!(
                        "container \"{}\": subPath \"{sub}\" must be relative without ..",
                        c.name
                    )));
                }
                let p = base.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p)
                        .map_err(|e| SpecError(format!("{}: {e}", p.display())))?;
                }
                p
            }
            None => base.clone(),
        };
        out.push(v1::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}

/// cgroup limits from requests and limits (upstream's mapping: shares from the CPU request,
/// CFS quota from the CPU limit, memory limit in bytes).
pub fn resources(c: &core::Container) -> Result<v1::LinuxContainerResources, SpecError> {
    let r = c.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone());
    let mut out = v1::LinuxContainerResources::default();
    let bad = |e: String| SpecError(format!("container \"{}\": {e}", c.name));
    let cpu_request = get(&r.requests, "cpu").or_else(|| get(&r.limits, "cpu"));
    out.cpu_shares = match cpu_request {
        Some(q) => (quantity::cpu_millis(&q).map_err(bad)? * 1024 / 1000).max(2),
        None => 2,
    };
    if let Some(q) = get(&r.limits, "cpu") {
        let m = quantity::cpu_millis(&q).map_err(bad)?;
        out.cpu_period = CPU_PERIOD;
        out.cpu_quota = (m * CPU_PERIOD / 1000).max(1000);
    }
    if let Some(q) = get(&r.limits, "memory") {
        out.memory_limit_in_bytes = quantity::bytes(&q).map_err(bad)?;
    }
    Ok(out)
}

/// The pod's QoS class (upstream's rules, for status.qosClass).
pub fn qos_class(pod: &core::Pod) -> &'static str {
    let spec = spec(pod);
    let all: Vec<&core::Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.get(res).map(|q| q.0.clone());
            let q = req.get(res).map(|q| q.0.clone()).or_else(|| l.clone());
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The container config for attempt `attempt`.
pub fn container_config(
    pod: &core::Pod,
    c: &core::Container,
    image: &str,
    attempt: u32,
    ctx: &PodContext,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<v1::ContainerConfig, SpecError> {
    let (ns, name, uid) = meta(pod);
    let envs = env(pod, c, ctx)?;
    let vars: BTreeMap<String, String> = envs.iter().cloned().collect();
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = spec(pod).security_context.unwrap_or_default();
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_group = sc.run_as_group.or(psc.run_as_group);
    if let Some(w) = &c.working_dir
        && !w.starts_with('/')
    {
        return Err(SpecError(format!(
            "container \"{}\": workingDir \"{w}\" must be an absolute path",
            c.name
        )));
    }
    let labels = [
        (POD_UID.to_string(), uid.to_string()),
        (POD_NAME.to_string(), name.to_string()),
        (POD_NAMESPACE.to_string(), ns.to_string()),
        (CONTAINER_NAME.to_string(), c.name.clone()),
    ]
    .into_iter()
    .collect();
    Ok(v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &vars))
            .collect(),
        args: c.args.iter().flatten().map(|s| expand(s, &vars)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: envs
            .into_iter()
            .map(|(key, value)| v1::KeyValue { key, value })
            .collect(),
        mounts: mounts(c, volumes)?,
        labels,
        annotations: Default::default(),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources(c)?),
            security_context: Some(v1::LinuxContainerSecurityContext {
                capabilities: sc.capabilities.as_ref().map(|caps| v1::Capability {
                    add_capabilities: caps.add.clone().unwrap_or_default(),
                    drop_capabilities: caps.drop.clone().unwrap_or_default(),
                }),
                privileged: sc.privileged.unwrap_or(false),
                namespace_options: Some(v1::NamespaceOption {
                    network: if spec(pod).host_network.unwrap_or(false) {
                        v1::NamespaceMode::Node as i32
                    } else {
                        v1::NamespaceMode::Pod as i32
                    },
                    pid: v1::NamespaceMode::Container as i32,
                    ipc: v1::NamespaceMode::Pod as i32,
                }),
                run_as_user: run_as_user.map(|value| v1::Int64Value { value }),
                run_as_group: run_as_group.map(|value| v1::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                no_new_privs: sc.allow_privilege_escalation == Some(false),
            }),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> core::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns1", "uid": "u-1", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn env_resolves_values_field_refs_config_maps_and_expansion() {
        let p = pod(json!({"containers": [{"name": "c", "image": "bb",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-y-$$(A)"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}
        ]}]}));
        let ctx = PodContext {
            node_name: "n1".into(),
            config_maps: [(
                "cm".to_string(),
                [("k".to_string(), "v".to_string())].into(),
            )]
            .into(),
            ..Default::default()
        };
        let e = env(&p, &p.spec.as_ref().unwrap().containers[0], &ctx).unwrap();
        assert_eq!(
            e,
            [
                ("CM_k", "v"),
                ("A", "x"),
                ("B", "x-y-$(A)"),
                ("NODE", "n1"),
                ("APP", "web"),
                ("K", "v")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let ctx = PodContext::default();
        let err = env(&p, &p.spec.as_ref().unwrap().containers[0], &ctx).unwrap_err();
        assert!(err.0.contains("configmap \"cm\" not found"), "{err}");
    }

    #[test]
    fn secrets_feed_env_and_volumes_with_default_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = pod(json!({
            "volumes": [{"name": "s", "secret": {"secretName": "creds"}},
                        {"name": "t", "secret": {"secretName": "creds", "defaultMode": 0o400,
                            "items": [{"key": "user", "path": "sub/u"}, {"key": "pass", "path": "p", "mode": 0o440}]}}],
            "containers": [{"name": "c",
                "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "S_"}],
                "env": [{"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pass"}}},
                        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}}]}]}));
        let ctx = PodContext {
            namespace: "ns1".into(),
            pod_dir: d.path().to_path_buf(),
            secrets: [(
                "creds".to_string(),
                [
                    ("user".to_string(), b"admin".to_vec()),
                    ("pass".to_string(), b"s3cr3t".to_vec()),
                ]
                .into(),
            )]
            .into(),
            ..Default::default()
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = env(&p, c, &ctx).unwrap();
        assert_eq!(
            e,
            [
                ("S_pass", "s3cr3t"),
                ("S_user", "admin"),
                ("PASS", "s3cr3t")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let vols = prepare_volumes(&p, &ctx).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(std::fs::read(vols["s"].join("pass")).unwrap(), b"s3cr3t");
        assert_eq!(mode(&vols["s"].join("pass")), 0o644);
        assert_eq!(std::fs::read(vols["t"].join("sub/u")).unwrap(), b"admin");
        assert_eq!(mode(&vols["t"].join("sub/u")), 0o400);
        assert_eq!(mode(&vols["t"].join("p")), 0o440);
        // A key removed from the Secret leaves the volume.
        let mut ctx2 = ctx.clone();
        ctx2.secrets.get_mut("creds").unwrap().remove("user");
        let mut only_s = p.clone();
        only_s
            .spec
            .as_mut()
            .unwrap()
            .volumes
            .as_mut()
            .unwrap()
            .pop();
        prepare_volumes(&only_s, &ctx2).unwrap();
        assert!(!vols["s"].join("user").exists());
        // Missing secrets and keys are named.
        let err = env(&p, c, &PodContext::default()).unwrap_err();
        assert_eq!(err.0, "secret \"creds\" not found");
        let mut ctx3 = ctx.clone();
        ctx3.secrets.get_mut("creds").unwrap().remove("pass");
        let err = env(&p, c, &ctx3).unwrap_err();
        assert_eq!(err.0, "couldn't find key pass in Secret ns1/creds");
    }

    #[test]
    fn resources_map_to_cgroup_limits_and_qos() {
        let p = pod(json!({"containers": [{"name": "c", "image": "bb",
            "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}]}));
        let r = resources(&p.spec.as_ref().unwrap().containers[0]).unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (256, 50_000, 100_000)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(qos_class(&p), "Burstable");
        assert_eq!(
            qos_class(&pod(json!({"containers": [{"name": "c"}]}))),
            "BestEffort"
        );
        let g = pod(
            json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
        );
        assert_eq!(qos_class(&g), "Guaranteed");
    }

    #[test]
    fn volumes_and_mounts_resolve_to_host_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = pod(json!({
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cm"}},
                        {"name": "s", "secret": {"secretName": "x"}}],
            "containers": [{"name": "c", "volumeMounts": [
                {"name": "scratch", "mountPath": "/s", "subPath": "sub"},
                {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}]}]}));
        let ctx = PodContext {
            pod_dir: d.path().to_path_buf(),
            config_maps: [(
                "cm".to_string(),
                [("a.conf".to_string(), "A".to_string())].into(),
            )]
            .into(),
            ..Default::default()
        };
        let err = prepare_volumes(&p, &ctx).unwrap_err();
        assert!(err.0.contains("volume \"s\""), "{err}");
        let mut p2 = p.clone();
        p2.spec.as_mut().unwrap().volumes.as_mut().unwrap().pop();
        let vols = prepare_volumes(&p2, &ctx).unwrap();
        assert_eq!(
            std::fs::read_to_string(vols["cfg"].join("a.conf")).unwrap(),
            "A"
        );
        let m = mounts(&p2.spec.as_ref().unwrap().containers[0], &vols).unwrap();
        assert!(m[0].host_path.ends_with("volumes/scratch/sub"));
        assert!(m[1].readonly);
    }
}
