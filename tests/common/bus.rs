//! A private D-Bus system bus for the integration tests (docs/testing.md §3): `dbus-daemon`
//! with the shipped policy (dbus/io.rke2.conf) included, `busctl`/`dbus-send` helpers, callers
//! as root or as uid 65534 (`setpriv`), and `busctl monitor` for signals. Every process is
//! stopped by a Drop guard.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// How long a daemon may take to appear on the bus.
const ON_BUS: Duration = Duration::from_secs(90);
pub const NOBODY: &str = "65534";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The system-bus-like base policy of docs/testing.md §3 with the shipped rke2 policy
/// included, root allowed to monitor, plus `extra` (e.g. a policy that allows everyone).
pub fn bus_config(socket: &Path, extra: &str) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{policy}</include>
  {extra}
</busconfig>
"#,
        socket = socket.display(),
        policy = repo().join("dbus/io.rke2.conf").display(),
    )
}

/// A policy that lets everyone call everything on io.rke2.Server ("mandatory" policies apply
/// last, so this overrides the shipped one): only the daemon's own uid check is left.
pub const ALLOW_EVERYONE: &str =
    r#"<policy context="mandatory"><allow send_destination="io.rke2.Server"/></policy>"#;

/// A private system bus; killed on drop.
pub struct Bus {
    child: Option<Child>,
    dir: PathBuf,
}

impl Bus {
    pub fn start(dir: &Path) -> Bus {
        require_tool("dbus-daemon", "dbus");
        fs::create_dir_all(dir).unwrap();
        set_mode(dir, 0o755);
        let mut bus = Bus {
            child: None,
            dir: dir.to_path_buf(),
        };
        bus.write_config("");
        bus.spawn();
        bus
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("system_bus_socket")
    }

    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket().display())
    }

    pub fn write_config(&self, extra: &str) {
        fs::write(self.dir.join("bus.conf"), bus_config(&self.socket(), extra)).unwrap();
    }

    pub fn spawn(&mut self) {
        let _ = fs::remove_file(self.socket());
        let child = Command::new("dbus-daemon")
            .arg(format!(
                "--config-file={}",
                self.dir.join("bus.conf").display()
            ))
            .args(["--nofork", "--nopidfile", "--nosyslog"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.dir.join("bus.log")).unwrap())
            .spawn()
            .expect("start dbus-daemon");
        self.child = Some(child);
        let sock = self.socket();
        wait_for(Duration::from_secs(10), "the bus socket", || {
            sock.exists().then_some(())
        });
    }

    /// Replaces the policy and makes the bus reload it (SIGHUP).
    pub fn reload(&self, extra: &str) {
        self.write_config(extra);
        let pid = self.child.as_ref().unwrap().id();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn env(&self) -> (&'static str, String) {
        ("DBUS_SYSTEM_BUS_ADDRESS", self.address())
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `cmd args...`, as uid 65534 when `nobody`.
pub fn run_as(nobody: bool, cmd: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = if nobody {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            cmd,
        ]);
        c
    } else {
        Command::new(cmd)
    };
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// busctl against the bus; `--json=short` output parsed when it succeeds.
pub fn busctl(bus: &Bus, nobody: bool, args: &[&str]) -> Output {
    let addr = format!("--address={}", bus.address());
    let mut all = vec![addr.as_str()];
    all.extend_from_slice(args);
    run_as(nobody, "busctl", &all, &[])
}

pub fn busctl_json(bus: &Bus, nobody: bool, args: &[&str]) -> Value {
    let mut all = vec!["--json=short"];
    all.extend_from_slice(args);
    let out = busctl(bus, nobody, &all);
    assert!(out.status.success(), "busctl {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// A method call on io.rke2.Server with dbus-send, which prints the error *name* on failure.
/// Returns (success, output).
pub fn call(bus: &Bus, nobody: bool, method: &str, args: &[&str]) -> (bool, String) {
    let addr = format!("--bus={}", bus.address());
    let mut all = vec![
        addr.as_str(),
        "--print-reply",
        "--dest=io.rke2.Server",
        "/io/rke2/Server",
        method,
    ];
    all.extend_from_slice(args);
    let out = run_as(nobody, "dbus-send", &all, &[]);
    (out.status.success(), text(&out))
}

pub fn assert_error(result: (bool, String), name: &str) {
    assert!(!result.0, "expected {name}, got success: {}", result.1);
    assert!(
        result.1.contains(&format!("Error {name}")),
        "expected {name}: {}",
        result.1
    );
}

/// `rke2 <args>` (the admin CLI) on the given bus.
pub fn rke2_cli(bus_address: &str, nobody: bool, args: &[&str]) -> Output {
    let bin = rke2_bin();
    run_as(
        nobody,
        bin.to_str().unwrap(),
        args,
        &[("DBUS_SYSTEM_BUS_ADDRESS", bus_address.to_string())],
    )
}

/// `busctl monitor` of io.rke2.Server, as JSON lines in a file; stopped on drop.
pub struct Monitor {
    child: Child,
    file: PathBuf,
}

impl Monitor {
    pub fn start(bus: &Bus, file: &Path) -> Monitor {
        let child = Command::new("busctl")
            .arg(format!("--address={}", bus.address()))
            .args(["monitor", "--json=short", "io.rke2.Server"])
            .stdout(fs::File::create(file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("busctl monitor");
        let m = Monitor {
            child,
            file: file.to_path_buf(),
        };
        // busctl prints nothing until the first message; a Ping proves it is attached.
        wait_for(Duration::from_secs(10), "busctl monitor attached", || {
            let _ = busctl(
                bus,
                false,
                &[
                    "call",
                    "io.rke2.Server",
                    "/io/rke2/Server",
                    "org.freedesktop.DBus.Peer",
                    "Ping",
                ],
            );
            (!m.signals().is_empty()
                || fs::read_to_string(&m.file).is_ok_and(|t| t.contains("Ping")))
            .then_some(())
        });
        m
    }

    /// (interface, member, data) of every signal seen so far.
    pub fn signals(&self) -> Vec<(String, String, Value)> {
        fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["type"] == "signal")
            .map(|m| {
                (
                    m["interface"].as_str().unwrap_or_default().to_string(),
                    m["member"].as_str().unwrap_or_default().to_string(),
                    m["payload"]["data"].clone(),
                )
            })
            .collect()
    }

    pub fn wait_signal(&self, what: &str, f: impl Fn(&str, &Value) -> bool) {
        wait_for(Duration::from_secs(60), what, || {
            self.signals()
                .iter()
                .any(|(i, m, d)| f(&format!("{i}.{m}"), d))
                .then_some(())
        });
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_on_bus(bus: &Bus, name: &str, path: &str, daemon: &mut Daemon) {
    let start = Instant::now();
    while !busctl(bus, false, &["introspect", name, path])
        .status
        .success()
    {
        if let Some(Ok(Some(status))) = daemon.child.as_mut().map(|c| c.try_wait()) {
            panic!("{} exited ({status}):\n{}", daemon.name, daemon.log_tail());
        }
        assert!(
            start.elapsed() < ON_BUS,
            "{name} not on the bus after {ON_BUS:?}:\n{}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a test server with its D-Bus on `bus` (or none).
pub fn start_server_on(
    name: &str,
    ip: std::net::Ipv4Addr,
    root: &Path,
    extra: &[(&'static str, String)],
    bus: Option<&Bus>,
) -> ServerNode {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let mut entries = server_config(name, ip, &dir);
    entries.retain(|(k, _)| *k != "node-heartbeat-interval");
    entries.push(("node-heartbeat-interval", "1s".into()));
    entries.push(("node-monitor-grace-period", "5s".into()));
    entries.extend(extra.iter().cloned());
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    let env = bus.map(Bus::env).unwrap_or((
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", dir.join("no-bus").display()),
    ));
    let daemon = Daemon::start(
        name,
        "server",
        &config,
        &dir.join("log"),
        &[(env.0, env.1.as_str())],
    );
    ServerNode {
        daemon,
        ip,
        kubeconfig: dir.join("rke2.yaml"),
        config,
        dir,
    }
}

/// A server on its own private bus, in a fresh temporary root (mode 0755, so uid 65534 can
/// reach the bus socket). Fields drop in order: the server, then the bus, then the files.
pub struct BusServer {
    pub server: ServerNode,
    pub bus: Bus,
    pub root: tempfile::TempDir,
}

/// Starts server `name` at `block.ip(1)` with `extra` config lines on a new private bus and
/// waits until it serves io.rke2.Server there.
pub fn server_on_bus(block: &AddrBlock, name: &str, extra: &[(&'static str, String)]) -> BusServer {
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o755);
    let bus = Bus::start(&root.path().join("bus"));
    let mut server = start_server_on(name, block.ip(1), root.path(), extra, Some(&bus));
    wait_on_bus(
        &bus,
        "io.rke2.Server",
        "/io/rke2/Server",
        &mut server.daemon,
    );
    BusServer { server, bus, root }
}
