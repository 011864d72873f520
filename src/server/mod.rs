//! `rke2 server`: brings a server node up in order — files and certificates, the supervisor
//! listener, the etcd member (new cluster, learner join, or restart), the bootstrap-data check,
//! then the Kubernetes API, controllers and the node agent — and reports each phase to systemd.
//! READY=1 is sent only once every gate is open; shutdown runs through one cancellation token.

pub mod cert_renewal;
pub mod cluster_reset;
pub mod data_lock;
pub mod node_agent;
pub mod prepare;
pub mod tools;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bootstrap::{self, BootstrapData, BootstrapError};
use crate::clientaccess::AccessError;
use crate::cluster::context::{self, Ctx, ServerContext};
use crate::cluster::{credentials, node_password, token_ops};
use crate::config::ServerConfig;
use crate::daemon::listeners::{self, InheritedListeners, ListenerError};
use crate::daemon::{Runtime, stopping_on_cancel};
use crate::datastore::{Cas, Datastore, DatastoreError};
use crate::etcd::process::{EtcdSettings, InitialClusterState, ProcessState};
use crate::etcd::{self, EtcdError, EtcdTls};
use crate::fsutil::{self, IoContext, PathError};
use crate::https::{self, TlsError};
use crate::paths::{AgentPaths, ServerPaths};
use crate::pki::PkiError;
use crate::token::{self, Passwd, TokenError};

/// How often the "waiting for quorum (n/m servers)" status is recomputed.
const QUORUM_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Limit of the local readiness check while etcd starts.
const ETCD_READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long shutdown keeps etcd running for the other tasks to finish their calls.
const ETCD_STOP_DELAY: Duration = Duration::from_secs(2);
/// How long shutdown waits for subsystems before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Server errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cluster-reset was successfully performed, please remove the cluster-reset flag and start rke2 normally, \
         if you need to perform another cluster reset, you must first manually delete the {} file", .flag.display()
    )]
    ClusterResetDone { flag: std::path::PathBuf },
    #[error(
        "cannot perform cluster-reset: there is no etcd data in {} to reset (use --cluster-reset-restore-path to restore a snapshot)",
        .dir.display()
    )]
    NoEtcdData { dir: std::path::PathBuf },
    #[error("checking the snapshot: {0}")]
    SnapshotCheck(#[source] tokio::task::JoinError),
    #[error(
        "restoring a snapshot needs etcd's etcdutl or etcdctl next to etcd or on PATH \
         (Debian: apt-get install -y etcd-client; Nix: pkgs.etcd)"
    )]
    NoRestoreTool,
    #[error("{} is missing: this server's data directory is incomplete", .0.display())]
    IncompleteDataDir(std::path::PathBuf),
    #[error("{} has no server entry; set token", .0.display())]
    NoServerEntry(std::path::PathBuf),
    #[error("the bootstrap data carried no credentials")]
    NoBootstrapCredentials,
    #[error("the bootstrap data disappeared from {0} while starting")]
    BootstrapDataVanished(String),
    #[error("apiserver listener: {0}")]
    ListenerAddress(#[source] std::io::Error),
    #[error("etcd supervision ended unexpectedly")]
    EtcdSupervisionEnded,
    #[error("etcd keeps exiting ({0} restarts); see the etcd log lines above")]
    EtcdCrashLoop(u32),
    #[error("node agent stopped")]
    NodeAgentStopped,
    #[error("following the token rotation: {0}")]
    FollowRotation(#[source] token_ops::TokenOpError),
    #[error(
        "the node name \"{node}\" is already registered with another node password (an agent or an \
         earlier server of that name): choose another node-name, or delete that node \
         (kubectl delete node {node}) and its secret kube-system/{secret}; this server's password is in {}",
        .password_file.display()
    )]
    NodeNameTaken {
        node: String,
        secret: String,
        password_file: std::path::PathBuf,
    },
    #[error(transparent)]
    NodeIdentity(#[from] crate::host::NodeIdentityError),
    #[error("agent-token must be a password or K10<hash>::node:<password>, not a bootstrap token")]
    AgentTokenIsBootstrapToken,
    #[error(
        "a bootstrap token cannot join a server; use the server token (server/token on an existing server)"
    )]
    BootstrapTokenCannotJoin,
    #[error(
        "{} belongs to another cluster (CA hash {local_hash} != {remote_hash}); remove {} to join this cluster",
        .ca_file.display(), .data_dir.display()
    )]
    ForeignCluster {
        ca_file: std::path::PathBuf,
        local_hash: String,
        remote_hash: String,
        data_dir: std::path::PathBuf,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(
        "bootstrap data already found and encrypted with a different token: this server's data was created with another server token. \
         Start it with the token in {token_file} (or the cluster's current token); nothing was changed"
    )]
    DifferentToken { token_file: String },
    #[error(
        "the server token was rotated on {rotated_by} at {rotated_at}: the token from {setting} is the retired one. \
         This server has written the cluster's current token to {token_file}; put that token in place of the old one \
         (or remove the setting: the server then uses its own token file) and start it again"
    )]
    TokenRotated {
        setting: String,
        token_file: String,
        rotated_by: String,
        rotated_at: String,
    },
    #[error("critical configuration value mismatch between servers: {}", .0.join("; "))]
    ConfigMismatch(Vec<String>),
    #[error("cannot join the cluster: {0}")]
    Access(#[from] AccessError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Snapshot(#[from] etcd::snapshot::SnapshotError),
    #[error("datastore: {0}")]
    Datastore(#[from] DatastoreError),
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error(transparent)]
    DataLock(#[from] data_lock::LockError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("node agent: {0}")]
    NodeAgent(#[from] crate::agent::node_agent::NodeAgentError),
    #[error("Kubernetes objects: {0}")]
    Objects(#[from] crate::storage::ObjectError),
    #[error("node password: {0}")]
    NodePassword(#[source] node_password::NodePasswordError),
    #[error("secrets encryption: {0}")]
    Encryption(#[from] crate::cluster::encryption_stages::StageError),
    #[error(
        "the cluster's certificate authorities were replaced (rke2 certificate rotate-ca) since this \
         server last ran; their new files are now in place: start the server again to use them"
    )]
    CaRotated,
    #[error("shut down before the server was ready")]
    Cancelled,
}

/// How this start relates to existing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartMode {
    /// First server of a new cluster.
    Init,
    /// Joining an existing cluster through `server`.
    Join,
    /// Restart with existing etcd data.
    Restart,
}

/// Process facts the server needs from the environment (read once by `main`).
#[derive(Debug, Clone, Default)]
pub struct ProcessEnv {
    pub path: Option<String>,
}

/// The registration address a join hint names: the fixed address this server joined through,
/// else the first `tls-san` (where the guides put the fixed address), else this node's own
/// address (a one-server cluster with no fixed address yet).
pub fn join_url(config: &ServerConfig, own_ip: IpAddr) -> String {
    if let Some(server) = &config.node.server {
        return server.url();
    }
    let host = config
        .tls_san
        .first()
        .cloned()
        .unwrap_or_else(|| config.advertise_address.unwrap_or(own_ip).to_string());
    crate::config::ServerUrl {
        host,
        port: config.supervisor_port,
    }
    .url()
}

fn listen_addr(bind: Option<IpAddr>, port: u16) -> SocketAddr {
    match bind {
        Some(ip) => SocketAddr::new(ip, port),
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
    }
}

/// Where in-process clients reach a listener: its own address, or loopback when it listens on
/// all addresses.
pub fn local_endpoint(listener_addr: SocketAddr) -> SocketAddr {
    let ip = match listener_addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listener_addr.port())
}

/// Runs a server until `cancel` fires. A shutdown asked for while the server is still starting
/// (`systemctl stop` during a join that waits for the other servers) is a clean stop, not a
/// failure: it returns `Ok` so the unit does not end up "failed".
pub async fn run(
    config: ServerConfig,
    env: ProcessEnv,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    let node = prepare::node_identity(&config.node, config.bind_address)?;
    let runtime = Runtime::new(&node.name, "server");
    let tracker = TaskTracker::new();
    // etcd has its own token and tracker: it stops last, once nothing uses it any more, so
    // in-flight API requests and loops finish quickly instead of running into etcd timeouts.
    let etcd = EtcdLifetime {
        cancel: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    // STOPPING=1 as soon as shutdown begins, before the listeners and etcd wind down.
    tracker.spawn(stopping_on_cancel(runtime.clone(), cancel.clone()));
    let result = run_inner(
        config,
        env,
        node,
        runtime.clone(),
        cancel.clone(),
        &tracker,
        &etcd,
    )
    .await;
    runtime.stopping();
    cancel.cancel();
    tracker.close();
    // etcd stops once the other tasks are done, or after ETCD_STOP_DELAY: without quorum,
    // calls in flight would otherwise wait for their timeouts, and stopping etcd ends them.
    let _ = tokio::time::timeout(ETCD_STOP_DELAY, tracker.wait()).await;
    etcd.cancel.cancel();
    etcd.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            component = "server",
            "some tasks did not stop within {SHUTDOWN_GRACE:?}"
        );
    }
    // supervise() itself gives etcd STOP_GRACE before killing it.
    etcd.tracker.wait().await;
    match result {
        Err(ServerError::Cancelled) => {
            tracing::info!(component = "server", "{}", ServerError::Cancelled);
            Ok(())
        }
        other => other,
    }
}

/// The etcd supervisor's own shutdown token and task tracker.
struct EtcdLifetime {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

async fn run_inner(
    config: ServerConfig,
    env: ProcessEnv,
    node: context::NodeIdentity,
    runtime: Runtime,
    cancel: CancellationToken,
    tracker: &TaskTracker,
    etcd_lifetime: &EtcdLifetime,
) -> Result<(), ServerError> {
    let paths = ServerPaths::new(&config.node.data_dir);
    let agent_paths = AgentPaths::new(&config.node.data_dir);
    let mut inherited = InheritedListeners::take(&[listeners::SUPERVISOR, listeners::APISERVER])?;
    let etcd_bin =
        etcd::process::find_etcd_binary(config.etcd_bin.as_deref(), env.path.as_deref())?;

    for dir in [
        config.node.data_dir.as_path(),
        paths.root.as_path(),
        &paths.tls(),
        &paths.cred(),
        &paths.db(),
    ] {
        fsutil::ensure_private_dir(dir).at(dir)?;
    }
    // Held until run_inner returns: offline maintenance refuses while it is held.
    let _data_lock = data_lock::acquire(&config.node.data_dir)?;
    let mut mode = if paths.etcd_wal().exists() {
        StartMode::Restart
    } else if config.node.server.is_some() {
        StartMode::Join
    } else {
        StartMode::Init
    };
    // A server left out of a reset or restore rejoins with fresh etcd data.
    if mode == StartMode::Restart
        && cluster_reset::rejoin_if_left_behind(&config, &paths, &node).await?
    {
        mode = StartMode::Join;
    }
    tracing::info!(component = "server", node = %node.name, "starting server ({mode:?})");
    let configured_pw = config
        .node
        .token
        .as_ref()
        .map(token::normalize_server_token)
        .transpose()?;
    let agent_pw = prepare::agent_password(&config)?;

    // Credentials and CA material.
    let (password, passwd, join_access) = match mode {
        StartMode::Init => {
            runtime.set_phase("generating cluster certificates");
            let existing = Passwd::load(&paths.passwd())?;
            let pw = match (
                &configured_pw,
                existing.as_ref().and_then(|p| p.password_of("server")),
            ) {
                (Some(pw), _) => pw.clone(),
                (None, Some(pw)) => pw.clone(),
                (None, None) => token::generate_password(),
            };
            prepare::authorities(&paths, true)?;
            let passwd = prepare::initial_passwd(existing, pw.clone(), agent_pw.clone());
            passwd.save(&paths.passwd())?;
            (pw, passwd, None)
        }
        StartMode::Join => {
            let download =
                prepare::download_cluster_files(&config, &paths, &runtime, &cancel).await?;
            let passwd = Passwd::load(&paths.passwd())?
                .ok_or_else(|| ServerError::NoBootstrapCredentials)?;
            (download.password, passwd, Some(download.access))
        }
        StartMode::Restart => {
            let passwd = Passwd::load(&paths.passwd())?
                .ok_or_else(|| ServerError::IncompleteDataDir(paths.passwd()))?;
            let pw = match (&configured_pw, passwd.password_of("server")) {
                (Some(pw), _) => pw.clone(),
                (None, Some(pw)) => pw.clone(),
                (None, None) => {
                    return Err(ServerError::NoServerEntry(paths.passwd()));
                }
            };
            (pw, passwd, None)
        }
    };
    let cas = prepare::authorities(&paths, false)?;
    let certificates_renewed =
        prepare::leaf_certificates(&config, &node, &paths, &agent_paths, &cas)?;
    let server_ca_bundle = std::fs::read(&paths.server_ca().cert).at(&paths.server_ca().cert)?;
    if mode != StartMode::Restart {
        token_ops::write_token_files(
            &paths,
            &token::ca_hash(&server_ca_bundle),
            &password,
            agent_pw.as_ref(),
        )?;
    }

    // Listeners: inherited by name from systemd, else bound here.
    let supervisor_listener = inherited.take_or_bind(
        listeners::SUPERVISOR,
        listen_addr(config.bind_address, config.supervisor_port),
    )?;
    let api_listener = inherited.take_or_bind(
        listeners::APISERVER,
        listen_addr(config.bind_address, config.https_listen_port),
    )?;
    let api_local = local_endpoint(
        api_listener
            .local_addr()
            .map_err(ServerError::ListenerAddress)?,
    );

    // Served through a slot that the renewal task refills (cert_renewal).
    let live_certs = cert_renewal::LiveCerts::load(&paths, &agent_paths)?;
    let tls = https::server_config_with(live_certs.serving.clone(), Some(&cas.client.cert_pem))?;
    let apiserver_endpoint = SocketAddr::new(
        config.advertise_address.unwrap_or(node.primary_ip()),
        config.https_listen_port,
    );
    let ctx: Ctx = Arc::new(ServerContext {
        config: config.clone(),
        node: node.clone(),
        paths: paths.clone(),
        agent_paths: agent_paths.clone(),
        server_ca: cas.server,
        client_ca: cas.client,
        kubelet_ca: std::sync::OnceLock::new(),
        server_ca_bundle,
        passwd: RwLock::new(passwd),
        server_password: RwLock::new(password.clone()),
        runtime: runtime.clone(),
        etcd_tls: EtcdTls::load(&paths)?,
        etcd: Default::default(),
        store: Default::default(),
        watching: Default::default(),
        apiserver_endpoint,
        credentials: Default::default(),
        snapshots: tokio::sync::OnceCell::new(),
        encryption: Default::default(),
        token_rotation: Default::default(),
        caches: Arc::new(crate::storage::watch_cache::WatchCaches::new(
            cancel.clone(),
            crate::storage::watch_cache::CacheConfig::with_max_events(
                config.watch_cache_max_events,
            ),
        )),
    });
    // A reset serves nothing: it only rebuilds etcd and exits (as RKE2 disables its apiserver).
    let resetting = config.cluster_reset.enabled;
    if !resetting {
        tracker.spawn(https::serve(
            supervisor_listener,
            tls.clone(),
            crate::supervisor::router(ctx.clone()),
            cancel.clone(),
            "supervisor",
        ));
        tracker.spawn(https::serve(
            api_listener,
            tls.clone(),
            crate::apiserver::router(
                ctx.store.clone(),
                ctx.etcd.clone(),
                ctx.paths.etcd_data(),
                cancel.clone(),
                config.event_ttl,
                crate::runtime::logs::apiserver_kubelet_client(&ctx),
                crate::storage::services::ServiceRanges {
                    cidr: config.service_cidr,
                    node_ports: config.service_node_port_range,
                    cluster_dns: Some(config.cluster_dns),
                },
                ctx.caches.clone(),
            ),
            cancel.clone(),
            "apiserver",
        ));
    }
    tracker.spawn(crate::daemon::run_watchdog(runtime.clone(), cancel.clone()));

    // etcd.
    let mut extra_args = config.etcd_args.clone();
    if resetting {
        extra_args.extend(
            cluster_reset::prepare(&config, &paths, &node, &etcd_bin, env.path.as_deref()).await?,
        );
    }
    let member = etcd::member_name(&paths, &node.name)?;
    let peer_url = etcd::process::url("https", node.primary_ip(), config.etcd_peer_port);
    let (initial_cluster, initial_state) = match (&join_access, mode) {
        (Some(access), StartMode::Join) => {
            runtime.set_phase("reading the etcd member list");
            let info: etcd::ClusterInfo =
                match crate::clientaccess::retry(&cancel, "reading the etcd member list", || {
                    access.get_json(crate::protocol::DB_INFO)
                })
                .await
                {
                    Some(r) => r?,
                    None => return Err(ServerError::Cancelled),
                };
            runtime.set_phase("joining the etcd cluster as a learner");
            let plan = etcd::membership::join_as_learner(
                &info.members,
                &member,
                &peer_url,
                &ctx.etcd_tls,
                &cancel,
            )
            .await?;
            (plan.initial_cluster, InitialClusterState::Existing)
        }
        _ => (format!("{member}={peer_url}"), InitialClusterState::New),
    };
    let loopback_client = !node.primary_ip().is_loopback()
        && std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.etcd_client_port)).is_ok();
    let settings = EtcdSettings {
        bin: etcd_bin,
        name: member.clone(),
        data_dir: paths.etcd_data(),
        address: node.primary_ip(),
        client_port: config.etcd_client_port,
        peer_port: config.etcd_peer_port,
        metrics_port: config.etcd_metrics_port,
        loopback_client,
        server_cert: paths.etcd_server().cert,
        server_key: paths.etcd_server().key,
        server_ca: paths.etcd_server_ca().cert,
        peer_cert: paths.etcd_peer().cert,
        peer_key: paths.etcd_peer().key,
        peer_ca: paths.etcd_peer_ca().cert,
        initial_cluster,
        initial_state,
        extra_args,
    };
    let local_client_url = settings.client_url();
    if mode != StartMode::Join {
        runtime.set_phase("starting etcd");
    }
    let (etcd_state_tx, etcd_state) = watch::channel(ProcessState::Starting);
    let etcd_cancel = etcd_lifetime.cancel.clone();
    let etcd_task = etcd_lifetime.tracker.spawn(etcd::process::supervise(
        settings,
        etcd_cancel.clone(),
        etcd_state_tx,
    ));

    let client = wait_for_etcd(&ctx, &local_client_url, &peer_url, &etcd_state, &cancel).await?;
    let _ = ctx.etcd.set(client.clone());
    let store = Datastore::new(client.clone());

    // Bootstrap data: refuse a token the cluster's data was not encrypted with.
    let reconciled = match reconcile_bootstrap(&ctx, &store, &password).await {
        // The password may have changed: adopted from a rotation made while this server was down.
        Ok(()) => ensure_kubelet_ca(&ctx, &store, &ctx.server_password()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = reconciled {
        etcd_cancel.cancel();
        let _ = etcd_task.await;
        return Err(e);
    }
    if resetting {
        cluster_reset::forget_other_servers(&store, &node.name).await;
        cluster_reset::finish(&config, &paths)?;
        return Ok(());
    }
    cluster_reset::clear_flag(&paths)?;
    if mode == StartMode::Restart {
        // The password may have been adopted from a rotation made while this server was down.
        let current = ctx.server_password();
        token_ops::write_token_files(&paths, &ctx.ca_hash(), &current, agent_pw.as_ref())?;
    }
    // Secrets are encrypted from here on: every later user of the store gets the wrapper.
    let store = crate::cluster::encryption_follow::start(&ctx, store).await?;
    credentials::publish_if_absent(&store, &ctx.passwd()).await?;
    claim_node_name(&ctx, &store).await?;
    ctx.set_store(store);
    tracker.spawn(token_ops::follow_rotations(ctx.clone(), cancel.clone()));
    tracker.spawn(crate::cluster::encryption_follow::follow(
        ctx.clone(),
        cancel.clone(),
    ));

    cert_renewal::write_admin_kubeconfig(&ctx)?;
    tracker.spawn(cert_renewal::run(
        ctx.clone(),
        live_certs.clone(),
        cancel.clone(),
    ));
    tracing::info!(
        component = "server",
        "wrote admin kubeconfig to {}; the join token is in {}",
        config.write_kubeconfig.display(),
        paths.token().display()
    );
    let path = std::env::var("PATH").unwrap_or_default();
    match tools::link_kubectl(&config.node.data_dir, &path) {
        Ok(Some(target)) => tracing::info!(
            component = "server",
            "{} runs {}",
            config.node.data_dir.join("bin/kubectl").display(),
            target.display()
        ),
        Ok(None) => tracing::info!(
            component = "server",
            "no kubectl on PATH, so {} was not created",
            config.node.data_dir.join("bin/kubectl").display()
        ),
        Err(e) => tracing::warn!(
            component = "server",
            "cannot link {}: {e}",
            config.node.data_dir.join("bin/kubectl").display()
        ),
    }
    tracing::info!(
        component = "server",
        "to join a node to this cluster: rke2 server (or agent) -s {} -t ${{SERVER_NODE_TOKEN}}",
        join_url(&config, node.primary_ip())
    );

    runtime.set_phase("creating system namespaces");
    crate::controllers::ensure_defaults(&ctx).await?;
    tracker.spawn(etcd::membership::promote_learners(
        client.clone(),
        cancel.clone(),
    ));
    crate::controllers::spawn_server_controllers(ctx.clone(), tracker, cancel.clone());
    runtime.set_phase("registering node");
    let registered = node_agent::spawn_for_server(
        ctx.clone(),
        api_local,
        live_certs.kubelet_client.clone(),
        tracker,
        cancel.clone(),
    )?;
    wait_registered(registered, &cancel).await?;
    if certificates_renewed {
        crate::controllers::node_events::certificates_renewed(&ctx).await;
    }
    node_agent::spawn_runtime_for_server(&ctx, api_local, tracker, cancel.clone())?;
    crate::controllers::spawn_server_node_metadata(ctx.clone(), &member, tracker, cancel.clone())
        .await;
    crate::controllers::publish_apiserver_endpoint(ctx.clone(), tracker, cancel.clone());
    // Counts for the READY status come from etcd and the API now, not from the periodic
    // reporter, which only starts after readiness.
    if let Err(e) = crate::controllers::refresh_status(&ctx, &mut Default::default()).await {
        tracing::debug!(component = "server", "refreshing the cluster status: {e}");
    }
    let mut s = runtime.snapshot();
    // This server and its Node are up even if the counts could not be read yet.
    s.server_count = s.server_count.max(1);
    s.ready_server_count = s.ready_server_count.max(1);
    s.node_count = s.node_count.max(1);
    s.ready_node_count = s.ready_node_count.max(1);
    runtime.set_ready(crate::daemon::ready_status(&s));
    crate::controllers::spawn_status_reporter(ctx.clone(), tracker, cancel.clone());
    let snapshots = etcd::snapshot::Snapshotter::new(
        client.clone(),
        config.snapshots.clone(),
        &config.node.data_dir,
        &node.name,
    );
    let _ = ctx.snapshots.set(snapshots.clone());
    tracker.spawn(snapshots.run_schedule(cancel.clone()));
    crate::dbus::spawn_server(ctx.clone(), tracker, cancel.clone());

    // Anything else that must run after readiness goes here; then wait for shutdown.
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = etcd_task => {
            return match r {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(ServerError::EtcdSupervisionEnded),
            };
        }
    }
    Ok(())
}

async fn wait_registered(
    mut registered: watch::Receiver<bool>,
    cancel: &CancellationToken,
) -> Result<(), ServerError> {
    tokio::select! {
        _ = cancel.cancelled() => Err(ServerError::Cancelled),
        r = registered.wait_for(|v| *v) => r.map(|_| ()).map_err(|_| ServerError::NodeAgentStopped),
    }
}

/// Connects to the local member and waits until it is a voting member with a leader,
/// reporting the phase while waiting.
async fn wait_for_etcd(
    ctx: &Ctx,
    url: &str,
    peer_url: &str,
    process: &watch::Receiver<ProcessState>,
    cancel: &CancellationToken,
) -> Result<etcd_client::Client, ServerError> {
    let mut client: Option<etcd_client::Client> = None;
    let mut last_quorum_probe: Option<tokio::time::Instant> = None;
    loop {
        if cancel.is_cancelled() {
            return Err(ServerError::Cancelled);
        }
        if let ProcessState::Crashed { restarts } = *process.borrow()
            && restarts >= 5
        {
            return Err(ServerError::EtcdCrashLoop(restarts));
        }
        if client.is_none() {
            client = etcd::connect(&[url.to_string()], &ctx.etcd_tls).await.ok();
        }
        // A member that is not serving its clients yet leaves calls hanging until they time
        // out; a short limit keeps this loop (and the phase) responsive.
        let outcome = match &client {
            Some(c) => tokio::time::timeout(ETCD_READY_CHECK_TIMEOUT, etcd::check_ready(c))
                .await
                .unwrap_or(Err(EtcdError::Timeout)),
            None => Err(EtcdError::Timeout),
        };
        match outcome {
            Ok(_) => {
                if let Some(c) = client {
                    return Ok(c);
                }
            }
            Err(EtcdError::Learner) => ctx
                .runtime
                .set_phase("joined etcd as a learner; waiting for promotion to voting member"),
            Err(e) => {
                // No leader, or not serving clients yet (etcd serves them only after
                // publishing itself to the cluster, which needs quorum): say how many servers
                // are there. Probing the peers takes up to half a second; once a second will do.
                if matches!(*process.borrow(), ProcessState::Running { .. })
                    && last_quorum_probe.is_none_or(|t| t.elapsed() >= QUORUM_PROBE_INTERVAL)
                {
                    last_quorum_probe = Some(tokio::time::Instant::now());
                    let no_leader = matches!(e, EtcdError::NoLeader);
                    let phase = match etcd::reachable_voters(&ctx.paths, peer_url).await {
                        Ok((reachable, voters))
                            if voters > 0 && (no_leader || reachable * 2 <= voters) =>
                        {
                            crate::daemon::quorum_status(reachable, voters)
                        }
                        _ if no_leader => "waiting for etcd quorum".to_string(),
                        _ => "waiting for etcd to start".to_string(),
                    };
                    ctx.runtime.set_phase(phase);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(ServerError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// The token check and bootstrap sync after etcd is ready: data under our token's key is
/// decrypted and any file that differs on disk is replaced from it; data only under other
/// tokens' keys means we were started with the wrong token (nothing is changed); no data at
/// all means we are the first server and save ours.
async fn reconcile_bootstrap(
    ctx: &Ctx,
    store: &Datastore,
    password: &token::Secret,
) -> Result<(), ServerError> {
    let key = bootstrap::storage_key(password);
    let page = store.list(bootstrap::BOOTSTRAP_PREFIX, None, 0, 0).await?;
    if let Some(kv) = page.items.iter().find(|kv| kv.key == key) {
        let plain =
            bootstrap::decrypt(password, &String::from_utf8_lossy(&kv.value)).map_err(|_| {
                ServerError::DifferentToken {
                    token_file: ctx.paths.token().display().to_string(),
                }
            })?;
        let remote = BootstrapData::from_json(&plain)?;
        let local = BootstrapData::read(&ctx.paths)?;
        if !remote.same_content(&local) {
            tracing::warn!(
                component = "server",
                "local certificate authority or credential files differ from the cluster's; replacing them from the datastore"
            );
            remote.write(&ctx.paths)?;
            // This start loaded the old CAs (and issued leaves from them) before etcd could
            // tell: the next start uses the new ones throughout (docs/operations.md §4.3).
            if crate::pki::rotate_ca::cas_differ(&remote, &local) {
                return Err(ServerError::CaRotated);
            }
            if let Some(p) = Passwd::load(&ctx.paths.passwd())? {
                *ctx.passwd.write().unwrap_or_else(|e| e.into_inner()) = p;
            }
        }
        return Ok(());
    }
    if !page.items.is_empty() {
        if let Some(current) = rotated_from(ctx, store, password).await? {
            return adopt_rotated_token(ctx, store, current).await;
        }
        return Err(ServerError::DifferentToken {
            token_file: ctx.paths.token().display().to_string(),
        });
    }
    let data = BootstrapData::read(&ctx.paths)?;
    let sealed = bootstrap::encrypt(password, &data.to_json())?;
    match store.create(&key, sealed.into_bytes()).await? {
        Cas::Written(_) => tracing::info!(component = "server", "saved encrypted bootstrap data"),
        Cas::Conflict(_) => tracing::info!(component = "server", "bootstrap data already exists"),
    }
    Ok(())
}

/// When `password` is a token retired by a rotation of this cluster, the current token (read
/// from the rotation record, which only holders of this cluster's CA key can open) and who
/// rotated it when.
async fn rotated_from(
    ctx: &Ctx,
    store: &Datastore,
    password: &token::Secret,
) -> Result<Option<(token::Secret, token_ops::RotationRecord)>, ServerError> {
    let Ok(Some((record, _))) = token_ops::load_record(store).await else {
        return Ok(None);
    };
    if !record.retired(password) {
        return Ok(None);
    }
    let secret = token_ops::cluster_secret(&ctx.paths)?;
    Ok(record.token(&secret).ok().map(|t| (t, record)))
}

/// A server started with a retired token: its token files (and bootstrap files) are brought to
/// the current token. Started with that token from its own files it then carries on; started
/// with it from a setting, it stops naming exactly the setting to change.
async fn adopt_rotated_token(
    ctx: &Ctx,
    store: &Datastore,
    (current, record): (token::Secret, token_ops::RotationRecord),
) -> Result<(), ServerError> {
    let data = token_ops::fetch_bundle(store, &current)
        .await
        .map_err(ServerError::FollowRotation)?;
    let passwd = token_ops::write_bundle_and_tokens(
        &ctx.paths,
        &ctx.ca_hash(),
        &current,
        &data,
        ctx.config.agent_token.is_some(),
    )
    .map_err(ServerError::FollowRotation)?;
    let token_file = ctx.paths.token().display().to_string();
    if let Some(setting) = &ctx.config.node.token_source {
        return Err(ServerError::TokenRotated {
            setting: setting.clone(),
            token_file,
            rotated_by: record.rotated_by,
            rotated_at: record.rotated_at,
        });
    }
    tracing::info!(
        component = "server",
        "the server token was rotated on {} at {} while this server was down; {token_file} now holds the new token",
        record.rotated_by,
        record.rotated_at
    );
    *ctx.passwd.write().unwrap_or_else(|e| e.into_inner()) = passwd;
    *ctx.server_password
        .write()
        .unwrap_or_else(|e| e.into_inner()) = current;
    Ok(())
}

/// Makes sure the bootstrap data carries the kubelet serving CA (clusters created before it
/// existed lack it): the first server to get here adds a new one with a compare-and-swap, every
/// other server takes whatever the data holds. Loads it into `ctx` for the supervisor.
async fn ensure_kubelet_ca(
    ctx: &Ctx,
    store: &Datastore,
    password: &token::Secret,
) -> Result<(), ServerError> {
    let key = bootstrap::storage_key(password);
    let pair = ctx.paths.kubelet_serving_ca();
    loop {
        let (Some(kv), _) = store.get(&key).await? else {
            return Err(ServerError::BootstrapDataVanished(key));
        };
        let plain = bootstrap::decrypt(password, &String::from_utf8_lossy(&kv.value))?;
        let mut data = BootstrapData::from_json(&plain)?;
        if data.files.contains_key(bootstrap::KUBELET_SERVING_CA)
            && data.files.contains_key(bootstrap::KUBELET_SERVING_CA_KEY)
        {
            let cert = data.content(bootstrap::KUBELET_SERVING_CA)?;
            let key_pem = data.content(bootstrap::KUBELET_SERVING_CA_KEY)?;
            let ca = crate::pki::CertAuthority::from_pem(
                &String::from_utf8_lossy(&cert),
                &String::from_utf8_lossy(&key_pem),
            )?;
            if std::fs::read(&pair.cert).ok().as_deref() != Some(cert.as_slice())
                || std::fs::read(&pair.key).ok().as_deref() != Some(key_pem.as_slice())
            {
                ca.save(&pair)?;
            }
            let _ = ctx.kubelet_ca.set(ca);
            return Ok(());
        }
        let ca = crate::pki::CertAuthority::generate("rke2-kubelet-serving")?;
        data.insert(bootstrap::KUBELET_SERVING_CA, ca.cert_pem.as_bytes());
        data.insert(bootstrap::KUBELET_SERVING_CA_KEY, ca.key_pem().as_bytes());
        let sealed = bootstrap::encrypt(password, &data.to_json())?;
        match store
            .update(&key, sealed.into_bytes(), kv.mod_revision)
            .await?
        {
            Cas::Written(_) => tracing::info!(
                component = "server",
                "added a kubelet serving CA to the bootstrap data"
            ),
            // Another server was quicker: use theirs (next round).
            Cas::Conflict(_) => {}
        }
    }
}

/// Registers this server's node password for its node name, as agents do on their first
/// certificate request, so no agent-token holder can obtain this server's node identity.
async fn claim_node_name(ctx: &Ctx, store: &Datastore) -> Result<(), ServerError> {
    let file = ctx.paths.node_password();
    let password = crate::agent::ensure_node_password(&file)?;
    let storage = crate::storage::Storage::new(store.clone());
    // A registration storm may keep the hashing slots busy: this server's own claim waits.
    let mut checked = node_password::check_or_store(&storage, &ctx.node.name, &password).await;
    while matches!(checked, Err(node_password::NodePasswordError::Busy)) {
        checked = node_password::check_or_store(&storage, &ctx.node.name, &password).await;
    }
    match checked {
        Ok(()) => Ok(()),
        Err(node_password::NodePasswordError::Mismatch(_)) => Err(ServerError::NodeNameTaken {
            node: ctx.node.name.clone(),
            secret: node_password::secret_name(&ctx.node.name),
            password_file: file,
        }),
        Err(e) => Err(ServerError::NodePassword(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ServerConfig {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.yaml");
        std::fs::write(&p, text).unwrap();
        crate::config::load_server(&crate::config::ConfigSources {
            config_file: Some(p),
            ..Default::default()
        })
        .unwrap()
        .config
    }

    #[test]
    fn join_hint_names_the_fixed_registration_address() {
        let own: IpAddr = "10.0.0.2".parse().unwrap();
        let joined = config("server: https://lb.example:9345\ntoken: t\ntls-san: [other]\n");
        assert_eq!(join_url(&joined, own), "https://lb.example:9345");
        let first = config("tls-san: [lb.example, 10.0.0.100]\n");
        assert_eq!(join_url(&first, own), "https://lb.example:9345");
        assert_eq!(join_url(&config(""), own), "https://10.0.0.2:9345");
    }
}
