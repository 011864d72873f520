//! D-Bus API and admin CLI (issue 6): the real binary and real etcd, a private `dbus-daemon`
//! started per test with the shipped policy file (dbus/io.rke2.conf) included, and real
//! `busctl`/`dbus-send`; non-root callers via `setpriv --reuid=65534`. Each test has its own
//! loopback addresses and bus; every process is stopped by a Drop guard.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::bus::*;
use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);

/// Starts an agent joining `server_ip` with `token`, its LB on its own loopback address.
fn start_agent(
    name: &str,
    ip: std::net::Ipv4Addr,
    server_ip: std::net::Ipv4Addr,
    root: &Path,
    token: &str,
    bus: Option<&Bus>,
) -> Daemon {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    write_config(
        &config,
        &[
            ("server", format!("https://{server_ip}:9345")),
            ("token", token.to_string()),
            ("node-name", name.to_string()),
            ("node-ip", ip.to_string()),
            ("data-dir", dir.join("data").display().to_string()),
            ("lb-bind-address", ip.to_string()),
            ("lb-server-port", "6444".into()),
            (
                "node-password-file",
                dir.join("password").display().to_string(),
            ),
            ("node-heartbeat-interval", "1s".into()),
        ],
    );
    let env = bus.map(Bus::env).unwrap_or((
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", dir.join("no-bus").display()),
    ));
    Daemon::start(
        name,
        "agent",
        &config,
        &dir.join("log"),
        &[(env.0, env.1.as_str())],
    )
}

/// An agent that must be refused: it exits non-zero saying the token was refused.
fn assert_agent_refused(mut agent: Daemon) {
    let code = agent.wait_exit(Duration::from_secs(60));
    assert_ne!(code, Some(0), "{}", agent.log_tail());
    let log = agent.log_text();
    assert!(log.contains("refused the token"), "{}", agent.log_tail());
}

fn node_json(s: &ServerNode, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(
        &s.kubeconfig,
        &["get", "node", name, "-o", "json"],
    ))
    .unwrap()
}

/// The io.rke2.* interfaces of an introspection document, without comments or layout, so
/// the shipped XML and the live one compare on what matters.
fn rke2_interfaces(xml: &str) -> String {
    let mut s = xml.to_string();
    while let Some(start) = s.find("<!--") {
        let end = s[start..].find("-->").expect("closed comment") + start + 3;
        s.replace_range(start..end, "");
    }
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut out = Vec::new();
    let mut inside = false;
    for l in lines {
        if l.starts_with("<interface name=\"io.rke2.") {
            inside = true;
        }
        if inside {
            out.push(l);
        }
        if l == "</interface>" {
            inside = false;
        }
    }
    out.join("\n")
}

fn check_shipped_xml(bus: &Bus, name: &str, path: &str, file: &str) {
    let live = busctl_json(
        bus,
        false,
        &[
            "call",
            name,
            path,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
        ],
    );
    let live = live["data"][0].as_str().unwrap();
    let shipped = fs::read_to_string(repo().join("dbus").join(file)).unwrap();
    let (live, shipped) = (rke2_interfaces(live), rke2_interfaces(&shipped));
    assert!(!live.is_empty());
    assert_eq!(
        live, shipped,
        "dbus/{file} does not match the live introspection of {name}"
    );
}

fn string_reply(out: &Value) -> String {
    out["data"][0].as_str().unwrap().to_string()
}

/// One test's world: server `s1` at `block.ip(1)` (server token [`SERVER_TOKEN`]) on its own
/// private bus, with a signal monitor on that bus. Fields drop in order: the monitor, the
/// server, the bus and its files, then the addresses.
struct BusTest {
    monitor: Monitor,
    env: BusServer,
    block: AddrBlock,
    name: &'static str,
    started: Instant,
}

const SERVER_TOKEN: &str = "dbus-test-token";

/// The shared setup of the bus API tests: checks the tools, starts the bus and the server and
/// waits until the server serves io.rke2.Server there. `name` labels the timing line.
fn bus_test(name: &'static str) -> BusTest {
    let started = Instant::now();
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubectl");
    require_tool("busctl", "systemd");
    require_tool("setpriv", "util-linux");
    require_tool("dbus-send", "dbus-bin");
    require_tool("curl", "curl");
    let block = AddrBlock::new();
    let env = server_on_bus(&block, "s1", &[("token", SERVER_TOKEN.into())]);
    let monitor = Monitor::start(&env.bus, &env.root.path().join("monitor.json"));
    BusTest {
        monitor,
        env,
        block,
        name,
        started,
    }
}

/// [`bus_test`], then waits until node s1 is Ready (the node methods need its object).
fn bus_test_ready(name: &'static str) -> BusTest {
    let t = bus_test(name);
    wait_node_ready(&t.env.server.kubeconfig, "s1", READY);
    t
}

impl BusTest {
    /// The end of a test: whatever it did, the server token never reached the server's log.
    fn finish(&self) {
        assert!(
            !self.env.server.daemon.log_text().contains(SERVER_TOKEN),
            "the server token leaked into the log"
        );
        eprintln!("{} test took {:?}", self.name, self.started.elapsed());
    }
}

/// A property of io.rke2.Cluster1 on the server, read as the unprivileged user.
fn cluster_prop(bus: &Bus, prop: &str) -> Value {
    busctl_json(
        bus,
        true,
        &[
            "get-property",
            "io.rke2.Server",
            "/io/rke2/Server",
            "io.rke2.Cluster1",
            prop,
        ],
    )["data"]
        .clone()
}

/// A method call on the server as root that must succeed; its busctl output.
fn call_ok(bus: &Bus, args: &[&str]) -> String {
    let mut all = vec!["call", "io.rke2.Server", "/io/rke2/Server"];
    all.extend_from_slice(args);
    let out = busctl(bus, false, &all);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A call of io.rke2.Tokens1 `method` (signature and arguments following) as root; its reply.
fn tokens_call(bus: &Bus, method: &[&str]) -> Value {
    let mut all = vec![
        "call",
        "io.rke2.Server",
        "/io/rke2/Server",
        "io.rke2.Tokens1",
    ];
    all.extend_from_slice(method);
    busctl_json(bus, false, &all)
}

fn list_tokens(bus: &Bus) -> Value {
    tokens_call(bus, &["ListTokens"])
}

/// CreateToken as root with `ttl` seconds and `desc`, no extra groups; the full token.
fn create_token(bus: &Bus, ttl: &str, desc: &str) -> String {
    string_reply(&tokens_call(bus, &["CreateToken", "xsas", ttl, desc, "0"]))
}

#[test]
fn bus_introspection_xml_and_properties() {
    let t = bus_test("bus_introspection");
    let (bus, s1) = (&t.env.bus, &t.env.server);

    // Introspection lists the three interfaces and their members; the shipped XML matches.
    let out = busctl(
        bus,
        true,
        &["introspect", "io.rke2.Server", "/io/rke2/Server"],
    );
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    for member in [
        "io.rke2.Cluster1",
        ".NodeName",
        ".Ready",
        ".Phase",
        ".ServerCount",
        ".EtcdMembers",
        ".ApiserverEndpoints",
        ".Version",
        "io.rke2.Nodes1",
        ".ListNodes",
        ".GetNode",
        ".CordonNode",
        ".UncordonNode",
        ".LabelNode",
        ".TaintNode",
        ".DeleteNode",
        ".NodeAdded",
        ".NodeRemoved",
        ".NodeReadyChanged",
        "io.rke2.Tokens1",
        ".CreateToken",
        ".ListTokens",
        ".DeleteToken",
        ".RotateServerToken",
    ] {
        assert!(listing.contains(member), "{member} missing:\n{listing}");
    }
    check_shipped_xml(
        bus,
        "io.rke2.Server",
        "/io/rke2/Server",
        "io.rke2.Server.xml",
    );

    // Properties and ListNodes work for anyone.
    let get = |prop: &str| cluster_prop(bus, prop);
    assert_eq!(get("NodeName"), "s1");
    assert_eq!(get("Role"), "server");
    assert_eq!(get("Version"), env!("CARGO_PKG_VERSION"));
    wait_for(Duration::from_secs(30), "Ready and one etcd member", || {
        (get("Ready") == true && get("ServerCount") == 1).then_some(())
    });
    assert!(get("EtcdMembers")[0].as_str().unwrap().starts_with("s1-"));
    let endpoint = format!("{}:6443", s1.ip);
    wait_for(Duration::from_secs(30), "ApiserverEndpoints", || {
        (get("ApiserverEndpoints")[0] == endpoint.as_str()).then_some(())
    });
    let nodes = busctl_json(
        bus,
        true,
        &[
            "call",
            "io.rke2.Server",
            "/io/rke2/Server",
            "io.rke2.Nodes1",
            "ListNodes",
        ],
    );
    assert_eq!(nodes["data"][0][0][0], "s1", "{nodes}");
    assert_eq!(nodes["data"][0][0][1], "True", "{nodes}");
    t.finish();
}

#[test]
fn bus_node_methods_change_the_node() {
    let t = bus_test_ready("bus_node_methods");
    let (bus, s1) = (&t.env.bus, &t.env.server);

    // Cordon shows in kubectl; label and taint too.
    call_ok(bus, &["io.rke2.Nodes1", "CordonNode", "s", "s1"]);
    let line = kubectl_ok(&s1.kubeconfig, &["get", "node", "s1", "--no-headers"]);
    assert!(line.contains("Ready,SchedulingDisabled"), "{line}");
    call_ok(bus, &["io.rke2.Nodes1", "UncordonNode", "s", "s1"]);
    let line = kubectl_ok(&s1.kubeconfig, &["get", "node", "s1", "--no-headers"]);
    assert!(!line.contains("SchedulingDisabled"), "{line}");
    call_ok(
        bus,
        &[
            "io.rke2.Nodes1",
            "LabelNode",
            "sas",
            "s1",
            "2",
            "tier=web",
            "example.com/zone=a",
        ],
    );
    call_ok(
        bus,
        &[
            "io.rke2.Nodes1",
            "TaintNode",
            "sas",
            "s1",
            "1",
            "dedicated=db:NoSchedule",
        ],
    );
    let n = node_json(s1, "s1");
    assert_eq!(n["metadata"]["labels"]["tier"], "web");
    assert_eq!(n["metadata"]["labels"]["example.com/zone"], "a");
    let taints = n["spec"]["taints"].as_array().unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "dedicated" && t["value"] == "db" && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );

    // The last etcd voter cannot be deleted.
    assert_error(
        call(bus, false, "io.rke2.Nodes1.DeleteNode", &["string:s1"]),
        "io.rke2.Error.Conflict",
    );
    kubectl_ok(&s1.kubeconfig, &["get", "node", "s1"]);
    t.finish();
}

#[test]
fn bus_refuses_bad_input_and_non_root_callers() {
    let t = bus_test_ready("bus_refusals");
    let (bus, s1) = (&t.env.bus, &t.env.server);

    // Bad arguments: InvalidArgument and nothing changes.
    let before = node_json(s1, "s1");
    let tokens_before = list_tokens(bus);
    let invalid = "io.rke2.Error.InvalidArgument";
    assert_error(
        call(bus, false, "io.rke2.Nodes1.CordonNode", &["string:"]),
        invalid,
    );
    assert_error(
        call(
            bus,
            false,
            "io.rke2.Nodes1.DeleteNode",
            &["string:Not_A_Name"],
        ),
        invalid,
    );
    assert_error(
        call(
            bus,
            false,
            "io.rke2.Nodes1.TaintNode",
            &["string:s1", "array:string:dedicated=db:Sometimes"],
        ),
        invalid,
    );
    assert_error(
        call(
            bus,
            false,
            "io.rke2.Nodes1.TaintNode",
            &["string:s1", "array:string:ok=x:NoExecute,novalue"],
        ),
        invalid,
    );
    assert_error(
        call(
            bus,
            false,
            "io.rke2.Nodes1.LabelNode",
            &["string:s1", "array:string:bad key=x"],
        ),
        invalid,
    );
    assert_error(
        call(
            bus,
            false,
            "io.rke2.Tokens1.CreateToken",
            &["int64:-5", "string:", "array:string:"],
        ),
        invalid,
    );
    assert_error(
        call(
            bus,
            false,
            "io.rke2.Tokens1.CreateToken",
            &["int64:60", "string:", "array:string:root"],
        ),
        invalid,
    );
    assert_error(
        call(bus, false, "io.rke2.Nodes1.GetNode", &["string:nope"]),
        "io.rke2.Error.NotFound",
    );
    let after = node_json(s1, "s1");
    assert_eq!(before["metadata"]["labels"], after["metadata"]["labels"]);
    assert_eq!(before["spec"], after["spec"]);
    assert_eq!(tokens_before, list_tokens(bus));

    // Non-root: refused by the bus policy.
    let policy_denied = "org.freedesktop.DBus.Error.AccessDenied";
    assert_error(
        call(bus, true, "io.rke2.Nodes1.DeleteNode", &["string:s1"]),
        policy_denied,
    );
    assert_error(
        call(
            bus,
            true,
            "io.rke2.Tokens1.CreateToken",
            &["int64:60", "string:", "array:string:"],
        ),
        policy_denied,
    );
    let out = rke2_cli(&bus.address(), true, &["node", "cordon", "s1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("access denied") && text(&out).contains("must be run as root"),
        "{}",
        text(&out)
    );

    // A looser bus policy: the daemon's own uid check still refuses non-root mutations.
    bus.reload(ALLOW_EVERYONE);
    let own_check = "io.rke2.Error.AccessDenied";
    wait_for(
        Duration::from_secs(20),
        "the relaxed policy in effect",
        || {
            call(bus, true, "io.rke2.Nodes1.DeleteNode", &["string:s1"])
                .1
                .contains(own_check)
                .then_some(())
        },
    );
    for (method, args) in [
        (
            "io.rke2.Tokens1.CreateToken",
            vec!["int64:60", "string:", "array:string:"],
        ),
        ("io.rke2.Nodes1.CordonNode", vec!["string:s1"]),
        ("io.rke2.Tokens1.RotateServerToken", vec!["string:"]),
        ("io.rke2.Tokens1.DeleteToken", vec!["string:abcdef"]),
    ] {
        assert_error(call(bus, true, method, &args), own_check);
    }
    let line = kubectl_ok(&s1.kubeconfig, &["get", "node", "s1", "--no-headers"]);
    assert!(!line.contains("SchedulingDisabled"), "{line}");
    t.finish();
}

#[test]
fn bus_bootstrap_tokens_join_expire_and_node_signals() {
    let t = bus_test("bus_tokens");
    let (bus, s1, root, block) = (&t.env.bus, &t.env.server, t.env.root.path(), &t.block);
    let monitor = &t.monitor;

    // Bootstrap tokens: a short-lived one (expires during the test), a joining one, a server one.
    let short = create_token(bus, "2", "short");
    let short_created = Instant::now();
    let join = create_token(bus, "600", "for a1");
    let hash = s1.token()[3..67].to_string();
    for t in [&short, &join] {
        assert!(t.starts_with(&format!("K10{hash}::")), "{t}");
        let creds = t.rsplit_once("::").unwrap().1;
        assert!(creds.len() == 23 && creds.as_bytes()[6] == b'.', "{t}");
    }
    let listed = rke2_cli(&bus.address(), false, &["token", "list", "-o", "json"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let join_id = &join.rsplit_once("::").unwrap().1[..6];
    let short_id = &short.rsplit_once("::").unwrap().1[..6];
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == join_id && t["description"] == "for a1"),
        "{listed}"
    );
    let table = text(&rke2_cli(&bus.address(), true, &["token", "list"]));
    assert!(
        table.starts_with("TOKEN") && table.contains(join_id),
        "{table}"
    );
    let join_secret = join.rsplit_once('.').unwrap().1;
    assert!(
        !table.contains(join_secret),
        "secrets must never be listed: {table}"
    );

    // An agent joins with the bootstrap token (NodeAdded; the agent serves io.rke2.Agent).
    let mut a1 = start_agent("a1", block.ip(2), s1.ip, root, &join, Some(bus));
    wait_node_ready(&s1.kubeconfig, "a1", READY);
    monitor.wait_signal("NodeAdded a1", |m, d| {
        m == "io.rke2.Nodes1.NodeAdded" && d[0] == "a1"
    });
    monitor.wait_signal("PropertiesChanged NodeCount", |m, d| {
        m == "org.freedesktop.DBus.Properties.PropertiesChanged"
            && d[0] == "io.rke2.Cluster1"
            && d[1].get("NodeCount").is_some()
    });
    wait_on_bus(bus, "io.rke2.Agent", "/io/rke2/Agent", &mut a1);
    check_shipped_xml(bus, "io.rke2.Agent", "/io/rke2/Agent", "io.rke2.Agent.xml");
    let backends = busctl_json(
        bus,
        true,
        &[
            "get-property",
            "io.rke2.Agent",
            "/io/rke2/Agent",
            "io.rke2.Cluster1",
            "LoadBalancerBackends",
        ],
    );
    assert_eq!(
        backends["data"][0][0],
        format!("{}:6443", s1.ip),
        "{backends}"
    );

    // The short token has expired: refused; then the leader cleans it up.
    let wait = Duration::from_secs(3).saturating_sub(short_created.elapsed());
    std::thread::sleep(wait); // the TTL itself is the thing under test
    assert_agent_refused(start_agent("a2", block.ip(3), s1.ip, root, &short, None));

    // After DeleteToken (through the CLI) the join token is refused for a new agent.
    let out = rke2_cli(&bus.address(), false, &["token", "delete", &join]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(join_id));
    assert_agent_refused(start_agent("a3", block.ip(4), s1.ip, root, &join, None));
    // The already joined agent keeps working.
    wait_node_ready(&s1.kubeconfig, "a1", Duration::from_secs(10));

    // A server never joins with a bootstrap token; the supervisor refuses it on server routes
    // while accepting it on agent routes.
    let server_token = create_token(bus, "600", "not for servers");
    let bearer = format!(
        "Authorization: Bearer {}",
        server_token.rsplit_once("::").unwrap().1
    );
    let (code, _) = curl(
        &format!("{}/v1-rke2/server-bootstrap", s1.supervisor()),
        &s1.ca(),
        &["-H", &bearer],
    );
    assert!(
        code == 401 || code == 403,
        "server-bootstrap with a bootstrap token: {code}"
    );
    let (code, _) = curl(
        &format!("{}/v1-rke2/config", s1.supervisor()),
        &s1.ca(),
        &["-H", &bearer],
    );
    assert_eq!(code, 200);
    let mut s2 = start_server_on(
        "s2",
        block.ip(5),
        root,
        &[("server", s1.supervisor()), ("token", server_token.clone())],
        None,
    );
    let code = s2.daemon.wait_exit(Duration::from_secs(60));
    assert_ne!(code, Some(0), "{}", s2.daemon.log_tail());
    assert!(
        s2.daemon
            .log_text()
            .contains("failed to normalize server token"),
        "{}",
        s2.daemon.log_tail()
    );
    let s2_data = s2.data_dir().display().to_string();
    wait_for(
        Duration::from_secs(10),
        "no etcd of the refused server",
        || pids_matching(&s2_data).is_empty().then_some(()),
    );

    // The expired token is cleaned up by the leader.
    wait_for(Duration::from_secs(40), "expired token cleaned up", || {
        let out = rke2_cli(&bus.address(), false, &["token", "list", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (!v.as_array()?.iter().any(|t| t["id"] == short_id)).then_some(())
    });

    // A stopped agent's lease expires: NodeReadyChanged; deleting it: NodeRemoved.
    a1.stop();
    monitor.wait_signal("NodeReadyChanged a1", |m, d| {
        m == "io.rke2.Nodes1.NodeReadyChanged" && d[0] == "a1" && d[1] != "True"
    });
    let out = rke2_cli(&bus.address(), false, &["node", "delete", "a1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("node/a1 deleted"), "{}", text(&out));
    monitor.wait_signal("NodeRemoved a1", |m, d| {
        m == "io.rke2.Nodes1.NodeRemoved" && d[0] == "a1"
    });
    assert!(
        !kubectl(&s1.kubeconfig, &["get", "node", "a1"])
            .status
            .success()
    );
    t.finish();
}

#[test]
fn bus_cli_and_reconnect_after_bus_loss() {
    let mut t = bus_test_ready("bus_cli");
    let address = t.env.bus.address();

    // The CLI: node list (text and JSON), cordon/uncordon.
    let out = rke2_cli(&address, true, &["node", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "s1");
    assert_eq!(list[0]["ready"], "True");
    assert!(list[0]["etcd_member"].as_str().unwrap().starts_with("s1-"));
    let out = rke2_cli(&address, false, &["node", "cordon", "s1"]);
    assert_eq!(text(&out).trim(), "node/s1 cordoned");
    let table = text(&rke2_cli(&address, false, &["node", "list"]));
    assert!(
        table.starts_with("NAME") && table.contains("Ready,SchedulingDisabled"),
        "{table}"
    );
    rke2_cli(&address, false, &["node", "uncordon", "s1"]);
    let out = rke2_cli(
        &address,
        false,
        &["token", "create", "--ttl", "1h", "--description", "cli"],
    );
    assert!(
        out.status.success() && text(&out).starts_with("K10"),
        "{}",
        text(&out)
    );
    let out = rke2_cli(&address, false, &["token", "create", "--ttl", "soon"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    // Daemon not on the bus: a clear error.
    let empty = Bus::start(&t.env.root.path().join("empty-bus"));
    let out = rke2_cli(&empty.address(), false, &["node", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("io.rke2.Server is not on the system bus"),
        "{}",
        text(&out)
    );
    let out = rke2_cli("unix:path=/nonexistent/bus", false, &["token", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot connect to the D-Bus system bus"),
        "{}",
        text(&out)
    );

    // Losing the bus is not fatal: the server reconnects when it comes back.
    t.env.bus.kill();
    std::thread::sleep(Duration::from_millis(200)); // let the daemon notice the hang-up
    t.env.bus.write_config("");
    t.env.bus.spawn();
    wait_on_bus(
        &t.env.bus,
        "io.rke2.Server",
        "/io/rke2/Server",
        &mut t.env.server.daemon,
    );
    assert!(
        t.env
            .server
            .daemon
            .log_text()
            .contains("lost the system bus connection")
    );
    wait_node_ready(&t.env.server.kubeconfig, "s1", Duration::from_secs(10));
    t.finish();
}

#[test]
fn rotate_server_token_over_dbus() {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubectl");
    require_tool("busctl", "systemd");
    let started = Instant::now();
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o755);
    let bus = Bus::start(&root.path().join("bus"));
    let mut s1 = start_server_on(
        "r1",
        block.ip(1),
        root.path(),
        &[("token", "before-rotation".into())],
        Some(&bus),
    );
    wait_on_bus(&bus, "io.rke2.Server", "/io/rke2/Server", &mut s1.daemon);
    let original = s1.token();
    let a1 = start_agent("ra1", block.ip(2), s1.ip, root.path(), &original, None);
    wait_node_ready(&s1.kubeconfig, "ra1", READY);

    // Rotate to a generated token over busctl: the token file follows.
    let reply = busctl_json(
        &bus,
        false,
        &[
            "call",
            "io.rke2.Server",
            "/io/rke2/Server",
            "io.rke2.Tokens1",
            "RotateServerToken",
            "s",
            "",
        ],
    );
    let first = string_reply(&reply);
    assert!(
        first.starts_with(&original[..67]) && first.contains("::server:"),
        "{first}"
    );
    assert_ne!(first, original);
    assert_eq!(s1.token(), first);
    // Then to a chosen token with the CLI; a bootstrap-format token is refused first.
    let out = rke2_cli(
        &bus.address(),
        false,
        &["token", "rotate", "--new-token", "abcdef.0123456789abcdef"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("InvalidArgument"), "{}", text(&out));
    assert_eq!(s1.token(), first, "a refused rotation changes nothing");
    let out = rke2_cli(
        &bus.address(),
        false,
        &["token", "rotate", "--new-token", "after-rotation"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        second,
        format!("{}::server:after-rotation", &original[..67])
    );
    assert_eq!(s1.token(), second);

    // A new server joins with the new token; old tokens are refused for servers and agents.
    let mut old = start_server_on(
        "r3",
        block.ip(4),
        root.path(),
        &[("server", s1.supervisor()), ("token", first.clone())],
        None,
    );
    assert_agent_refused(start_agent(
        "ra2",
        block.ip(5),
        s1.ip,
        root.path(),
        &original,
        None,
    ));
    let s2 = start_server_on(
        "r2",
        block.ip(3),
        root.path(),
        &[("server", s1.supervisor()), ("token", second.clone())],
        None,
    );
    let code = old.daemon.wait_exit(Duration::from_secs(60));
    assert_ne!(code, Some(0), "{}", old.daemon.log_tail());
    assert!(
        old.daemon.log_text().contains("401"),
        "{}",
        old.daemon.log_tail()
    );
    let mut s2 = s2;
    s2.daemon.wait_log("ready:", READY);
    wait_node_ready(&s1.kubeconfig, "r2", READY);
    // Existing nodes stay Ready.
    wait_node_ready(&s1.kubeconfig, "r1", Duration::from_secs(10));
    wait_node_ready(&s1.kubeconfig, "ra1", Duration::from_secs(10));
    let get = |prop: &str| cluster_prop(&bus, prop);
    wait_for(
        Duration::from_secs(30),
        "two voting servers over D-Bus",
        || (get("ServerCount") == 2).then_some(()),
    );
    assert!(
        !s1.daemon.log_text().contains("after-rotation"),
        "token leaked into the log"
    );
    // Without a bus the server runs on, warning once and retrying quietly.
    let warnings = s2
        .daemon
        .log_text()
        .matches("cannot serve io.rke2.Server on the system bus")
        .count();
    assert_eq!(warnings, 1, "{}", s2.daemon.log_tail());
    drop(a1);
    eprintln!("rotate test took {:?}", started.elapsed());
}

/// Replaces `from` with `to` in a server's config file (the token setting).
fn replace_in_config(node: &ServerNode, from: &str, to: &str) {
    let text = fs::read_to_string(&node.config).unwrap();
    assert!(
        text.contains(from),
        "{} lacks {from}",
        node.config.display()
    );
    fs::write(&node.config, text.replace(from, to)).unwrap();
}

#[test]
fn server_token_rotation_reaches_every_server() {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubectl");
    require_tool("busctl", "systemd");
    let started = Instant::now();
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o755);
    let bus = Bus::start(&root.path().join("bus"));
    let old = "rotation-old-token";
    let mut s1 = start_server_on(
        "t1",
        block.ip(1),
        root.path(),
        &[("token", old.into())],
        Some(&bus),
    );
    wait_on_bus(&bus, "io.rke2.Server", "/io/rke2/Server", &mut s1.daemon);
    let joiners: Vec<ServerNode> = [("t2", 2), ("t3", 3)]
        .iter()
        .map(|(name, host)| {
            start_server_on(
                name,
                block.ip(*host),
                root.path(),
                &[("server", s1.supervisor()), ("token", old.into())],
                None,
            )
        })
        .collect();
    let mut servers = vec![s1];
    servers.extend(joiners);
    let a1 = start_agent("ta1", block.ip(11), servers[0].ip, root.path(), old, None);
    for name in ["t1", "t2", "t3", "ta1"] {
        wait_node_ready(&servers[0].kubeconfig, name, READY);
    }
    let before: Vec<String> = servers.iter().map(ServerNode::token).collect();
    assert!(
        before
            .iter()
            .all(|t| t.ends_with("::server:rotation-old-token"))
    );

    // Rotate on t1 with the CLI: every server's token file follows within a bounded wait.
    let out = rke2_cli(
        &bus.address(),
        false,
        &["token", "rotate", "--new-token", "rotation-new-token"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let new = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(new.ends_with("::server:rotation-new-token"), "{new}");
    wait_for(
        Duration::from_secs(15),
        "every server's server/token to hold the new token",
        || servers.iter().all(|s| s.token() == new).then_some(()),
    );
    for s in &servers {
        let node_token = s.data_dir().join("server/node-token");
        assert_eq!(fs::read_to_string(&node_token).unwrap().trim(), new);
        assert_eq!(mode(&s.data_dir().join("server/token")), 0o600);
        assert!(
            !s.daemon.log_text().contains("rotation-new-token"),
            "the token leaked into {}'s log",
            s.daemon.name
        );
    }
    assert!(
        servers[2]
            .daemon
            .log_text()
            .contains("the server token was rotated on t1"),
        "{}",
        servers[2].daemon.log_tail()
    );
    // The joined agent keeps working across the rotation.
    wait_node_ready(&servers[0].kubeconfig, "ta1", Duration::from_secs(10));

    // Two rotations at once: each either wins or is refused with Conflict, never half-applied;
    // every server converges on the winner.
    let race: Vec<Output> = std::thread::scope(|sc| {
        let handles: Vec<_> = ["rotation-race-a", "rotation-race-b"]
            .iter()
            .map(|t| {
                let addr = bus.address();
                sc.spawn(move || rke2_cli(&addr, false, &["token", "rotate", "--new-token", t]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<String> = race
        .iter()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .collect();
    for o in race.iter().filter(|o| !o.status.success()) {
        assert!(text(o).contains("Conflict"), "{}", text(o));
    }
    assert!(!winners.is_empty(), "no rotation succeeded");
    wait_for(
        Duration::from_secs(15),
        "every server on the same, last rotated token",
        || {
            let t = servers[0].token();
            (winners.contains(&t) && servers.iter().all(|s| s.token() == t)).then_some(())
        },
    );
    let new = servers[0].token();

    // Stop all; restart all with the new token in their configs: the cluster comes back.
    for s in servers.iter_mut() {
        s.daemon.stop();
        replace_in_config(s, old, &new);
    }
    let bus_env = bus.address();
    for (i, s) in servers.iter_mut().enumerate() {
        let no_bus = format!("unix:path={}", s.dir.join("no-bus").display());
        let addr = if i == 0 { &bus_env } else { &no_bus };
        s.restart(&[("DBUS_SYSTEM_BUS_ADDRESS", addr.as_str())]);
    }
    for s in servers.iter_mut() {
        s.daemon.wait_log("ready:", READY);
    }
    for name in ["t1", "t2", "t3", "ta1"] {
        wait_node_ready(&servers[0].kubeconfig, name, READY);
    }

    // t3 restarted with the old token in its config is told exactly which setting to change.
    let t3 = &mut servers[2];
    t3.daemon.stop();
    replace_in_config(t3, &new, old);
    t3.restart(&[(
        "DBUS_SYSTEM_BUS_ADDRESS",
        &format!("unix:path={}", t3.dir.join("no-bus").display()),
    )]);
    let code = t3.daemon.wait_exit(READY);
    assert_ne!(code, Some(0), "{}", t3.daemon.log_tail());
    let log = t3.daemon.log_text();
    let expected_setting = format!("`token` in {}:", t3.config.display());
    let token_file = t3.data_dir().join("server/token");
    assert!(
        log.contains("the server token was rotated on t1")
            && log.contains(&expected_setting)
            && log.contains(&token_file.display().to_string()),
        "{}",
        t3.daemon.log_tail()
    );
    assert_eq!(t3.token(), new, "the token file holds the current token");
    // Following the message (the token file's content in the config) works.
    replace_in_config(t3, old, &new);
    t3.restart(&[(
        "DBUS_SYSTEM_BUS_ADDRESS",
        &format!("unix:path={}", t3.dir.join("no-bus").display()),
    )]);
    t3.daemon.wait_log("ready:", READY);
    wait_node_ready(&servers[0].kubeconfig, "ta1", Duration::from_secs(30));
    drop(a1);
    eprintln!("rotation test took {:?}", started.elapsed());
}

#[test]
fn two_servers_on_one_bus_are_each_addressable() {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubectl");
    require_tool("busctl", "systemd");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o755);
    let bus = Bus::start(&root.path().join("bus"));
    let mut d1 = start_server_on(
        "d1",
        block.ip(1),
        root.path(),
        &[("token", "two-on-a-bus".into())],
        Some(&bus),
    );
    wait_on_bus(&bus, "io.rke2.Server", "/io/rke2/Server", &mut d1.daemon);
    let mut d2 = start_server_on(
        "d2",
        block.ip(2),
        root.path(),
        &[
            ("server", d1.supervisor()),
            ("token", "two-on-a-bus".into()),
        ],
        Some(&bus),
    );
    wait_on_bus(&bus, "io.rke2.Server.d2", "/io/rke2/Server", &mut d2.daemon);
    d2.daemon.wait_log("ready:", READY);
    // Only the owner claims the shared name; the other says it serves its own name only.
    assert!(
        d1.daemon
            .log_text()
            .contains("serving io.rke2.Server and io.rke2.Server.d1"),
        "{}",
        d1.daemon.log_tail()
    );
    let d2_log = d2.daemon.log_text();
    assert!(
        d2_log.contains(
            "io.rke2.Server is owned by another node on this bus; serving io.rke2.Server.d2 only"
        ),
        "{}",
        d2.daemon.log_tail()
    );
    assert!(!d2_log.contains("serving io.rke2.Server and"), "{d2_log}");
    // Both reachable by per-node name, with the CLI's --node.
    for node in ["d1", "d2"] {
        let name = get_node_name(&bus, &format!("io.rke2.Server.{node}"));
        assert_eq!(name, node);
    }
    let out = rke2_cli(&bus.address(), true, &["node", "list", "--node", "d2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("d1") && text(&out).contains("d2"));
    // The owner stops: the queued one takes the shared name, and the plain CLI still works.
    d1.daemon.stop();
    d2.daemon
        .wait_log("io.rke2.Server acquired", Duration::from_secs(30));
    assert_eq!(get_node_name(&bus, "io.rke2.Server"), "d2");
    // d2 alone has no etcd quorum, so it may answer NotReady: what matters is that it answers.
    let out = rke2_cli(&bus.address(), true, &["node", "list"]);
    assert!(
        out.status.success() || text(&out).contains("(io.rke2.Error.NotReady)"),
        "{}",
        text(&out)
    );
}

/// The `NodeName` property of the daemon owning `name`.
fn get_node_name(bus: &Bus, name: &str) -> String {
    busctl_json(
        bus,
        true,
        &[
            "get-property",
            name,
            "/io/rke2/Server",
            "io.rke2.Cluster1",
            "NodeName",
        ],
    )["data"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
