//! etcd snapshots, restore and cluster reset (issue 16) with the real binary, real etcd,
//! etcdctl, kubectl and a private D-Bus: `rke2 etcd-snapshot save/list/delete/prune` and the
//! io.rke2.Cluster1 methods (root only, twice), scheduled snapshots with a per-minute cron and
//! pruning, a save cut short that never shows up, bad input refused with nothing changed, and a
//! 3-server cluster restored from a snapshot with the other servers rejoining.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::bus::*;
use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);

fn out_text(o: &Output) -> String {
    text(o)
}

fn snapshot_dir(s: &ServerNode) -> PathBuf {
    s.data_dir().join("server/db/snapshots")
}

/// Visible snapshot files (names not starting with '.').
fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `etcdctl snapshot status` of a file: (hash, revision, total keys).
fn etcdctl_status(path: &Path) -> Value {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cli(bus: &Bus, nobody: bool, args: &[&str]) -> Output {
    rke2_cli(&bus.address(), nobody, args)
}

fn cli_ok(bus: &Bus, args: &[&str]) -> String {
    let out = cli(bus, false, args);
    assert!(out.status.success(), "rke2 {args:?}: {}", out_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(bus: &Bus) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&cli_ok(bus, &["etcd-snapshot", "list", "-o", "json"])).expect("json");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn save_list_delete_prune_over_cli_and_dbus_root_only() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("busctl", "systemd");
    require_tool("setpriv", "util-linux");
    require_tool("dbus-send", "dbus-bin");
    let block = AddrBlock::new();
    let env = server_on_bus(&block, "s1", &[("token", "snap-token".into())]);
    let (bus, s1, root) = (&env.bus, &env.server, &env.root);
    let monitor = Monitor::start(bus, &root.path().join("monitor.json"));
    let dir = snapshot_dir(s1);
    fs::write(
        root.path().join("live.xml"),
        busctl_json(
            bus,
            false,
            &[
                "call",
                "io.rke2.Server",
                "/io/rke2/Server",
                "org.freedesktop.DBus.Introspectable",
                "Introspect",
            ],
        )["data"][0]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    if let Ok(keep) = std::env::var("RKE2_TEST_DUMP_XML") {
        fs::copy(root.path().join("live.xml"), keep).unwrap();
    }

    // save: RKE2's name, in <data-dir>/server/db/snapshots, 0600, a real etcd snapshot.
    let path = cli_ok(bus, &["etcd-snapshot", "save"]).trim().to_string();
    let path = PathBuf::from(path);
    assert_eq!(path.parent().unwrap(), dir);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let ts = name.strip_prefix("on-demand-s1-").expect(&name);
    let ts: i64 = ts.parse().expect("unix time");
    assert!((ts - chrono::Utc::now().timestamp()).abs() < 120);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert!(etcdctl_status(&path)["totalKey"].as_u64().unwrap() > 10);
    monitor.wait_signal("SnapshotSaved", |m, d| {
        m == "io.rke2.Cluster1.SnapshotSaved" && d[0] == name.as_str() && d[1] == "s1"
    });

    // list: table and json (json as anyone; the table has RKE2's columns).
    let table = cli_ok(bus, &["etcd-snapshot", "ls"]);
    assert!(table.starts_with("Name"), "{table}");
    assert!(table.contains(&name), "{table}");
    let out = cli(bus, true, &["etcd-snapshot", "list", "-o", "yaml"]);
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("name: {name}")));
    let listing = busctl_json(
        bus,
        true,
        &[
            "call",
            "io.rke2.Server",
            "/io/rke2/Server",
            "io.rke2.Cluster1",
            "ListSnapshots",
        ],
    );
    assert_eq!(listing["data"][0][0][0], name.as_str(), "{listing}");
    assert_eq!(listing["data"][0][0][1], "s1");
    assert_eq!(
        listing["data"][0][0][2].as_u64().unwrap(),
        fs::metadata(&path).unwrap().len()
    );
    assert_eq!(listing["data"][0][0][3].as_i64().unwrap(), ts);
    let expiry = busctl_json(
        bus,
        true,
        &[
            "get-property",
            "io.rke2.Server",
            "/io/rke2/Server",
            "io.rke2.Cluster1",
            "CertificateExpiry",
        ],
    )["data"]
        .as_i64()
        .unwrap();
    assert!(
        expiry > chrono::Utc::now().timestamp() + 360 * 86400,
        "{expiry}"
    );

    // Mutations are root only: the bus policy refuses a non-root caller...
    let before = snapshot_files(&dir);
    let out = cli(bus, true, &["etcd-snapshot", "save"]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("access denied"),
        "{}",
        out_text(&out)
    );
    assert_error(
        call(
            bus,
            true,
            "io.rke2.Cluster1.DeleteSnapshot",
            &[&format!("string:{name}")],
        ),
        "org.freedesktop.DBus.Error.AccessDenied",
    );
    // ...and with a policy that lets everyone through, the daemon itself refuses.
    bus.reload(ALLOW_EVERYONE);
    wait_for(Duration::from_secs(10), "the permissive policy", || {
        let r = call(bus, true, "io.rke2.Cluster1.SaveSnapshot", &["string:"]);
        r.1.contains("io.rke2.Error.AccessDenied").then_some(())
    });
    assert_error(
        call(
            bus,
            true,
            "io.rke2.Cluster1.DeleteSnapshot",
            &[&format!("string:{name}")],
        ),
        "io.rke2.Error.AccessDenied",
    );
    assert_error(
        call(
            bus,
            true,
            "io.rke2.Cluster1.PruneSnapshots",
            &["string:", "uint32:1"],
        ),
        "io.rke2.Error.AccessDenied",
    );
    assert_eq!(
        snapshot_files(&dir),
        before,
        "a refused call changed nothing"
    );

    // Bad input: clear errors (exit 1 with the bus error), nothing changed.
    let refused = |args: &[&str], needles: &[&str]| {
        let out = cli(bus, false, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out_text(&out));
        for n in needles {
            assert!(out_text(&out).contains(n), "{args:?}: {}", out_text(&out));
        }
    };
    refused(
        &["etcd-snapshot", "delete", "no-such-snapshot-1"],
        &[
            "etcd snapshot \"no-such-snapshot-1\" not found",
            "io.rke2.Error.NotFound",
        ],
    );
    refused(
        &["etcd-snapshot", "delete", "../tls/server-ca.key"],
        &["io.rke2.Error.InvalidArgument"],
    );
    refused(
        &["etcd-snapshot", "save", "--name", "Bad/Name"],
        &["io.rke2.Error.InvalidArgument"],
    );
    let out = cli(
        bus,
        false,
        &["etcd-snapshot", "prune", "--snapshot-retention", "zero"],
    );
    assert_eq!(out.status.code(), Some(64), "{}", out_text(&out));
    assert_eq!(snapshot_files(&dir), before);

    // Three more under one prefix, then prune to 2: the newest two stay.
    let mut keep = Vec::new();
    for _ in 0..3 {
        let p = wait_for(Duration::from_secs(10), "a save in a new second", || {
            let out = cli(bus, false, &["etcd-snapshot", "save", "--name", "keep"]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        });
        keep.push(
            PathBuf::from(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    let out = cli_ok(
        bus,
        &[
            "etcd-snapshot",
            "prune",
            "--name",
            "keep",
            "--snapshot-retention",
            "2",
        ],
    );
    assert_eq!(out, format!("Snapshot {} pruned\n", keep[0]));
    let names = listed(bus);
    assert!(
        names.contains(&keep[1]) && names.contains(&keep[2]),
        "{names:?}"
    );
    assert!(
        !names.contains(&keep[0]) && names.contains(&name),
        "{names:?}"
    );

    // delete
    let out = cli_ok(bus, &["etcd-snapshot", "delete", &name]);
    assert_eq!(out, format!("Snapshot {name} deleted\n"));
    assert!(!path.exists());
    assert!(!listed(bus).contains(&name));
}

/// A server with `cron`, retention 1 and compression; waits for it to be ready.
fn scheduled_server(root: &Path, block: &AddrBlock, bus: &Bus) -> ServerNode {
    let mut s = start_server_on(
        "s1",
        block.ip(1),
        root,
        &[
            ("token", "cron-token".into()),
            ("etcd-snapshot-schedule-cron", "* * * * *".into()),
            ("etcd-snapshot-retention", "1".into()),
            ("etcd-snapshot-compress", "true".into()),
            ("etcd-snapshot-name", "cron".into()),
        ],
        Some(bus),
    );
    s.daemon.wait_log("ready:", READY);
    s
}

#[test]
fn scheduled_snapshots_fire_and_prune_and_a_cut_save_is_never_listed() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("busctl", "systemd");
    require_tool("unzip", "unzip");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o755);
    let bus = Bus::start(&root.path().join("bus"));
    let mut s1 = scheduled_server(root.path(), &block, &bus);
    let dir = snapshot_dir(&s1);

    // Two firings of the per-minute schedule; retention 1 leaves the newest only.
    let first = wait_for(Duration::from_secs(80), "a scheduled snapshot", || {
        snapshot_files(&dir).first().cloned()
    });
    assert!(
        first.starts_with("cron-s1-") && first.ends_with(".zip"),
        "{first}"
    );
    let second = wait_for(
        Duration::from_secs(80),
        "the next scheduled snapshot",
        || {
            let f = snapshot_files(&dir);
            (f.len() == 1 && f[0] != first).then(|| f[0].clone())
        },
    );
    s1.daemon.wait_log(
        "pruned etcd snapshot (retention 1)",
        Duration::from_secs(10),
    );
    assert!(s1.daemon.log_text().contains(&first));
    // The zip holds a real etcd snapshot.
    let unpacked = root.path().join("unpacked");
    let out = std::process::Command::new("unzip")
        .arg("-d")
        .arg(&unpacked)
        .arg(dir.join(&second))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    let inner = unpacked.join(second.trim_end_matches(".zip"));
    assert!(etcdctl_status(&inner)["totalKey"].as_u64().unwrap() > 10);

    // A save cut short: etcd is frozen (SIGSTOP) before the next firing, so the save stalls
    // with its temporary file open; the daemon and etcd are then killed outright.
    let etcd_pid = wait_for(Duration::from_secs(10), "the etcd child", || {
        pids_matching(&format!(
            "--data-dir={}",
            s1.data_dir().join("server/db/etcd").display()
        ))
        .first()
        .copied()
    });
    let kill = |sig: &str, pid: u32| {
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
    };
    kill("-STOP", etcd_pid);
    let part = wait_for(Duration::from_secs(80), "a save in progress", || {
        fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok())
            .find_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".part").then_some(n)
            })
    });
    s1.daemon.kill9();
    kill("-KILL", etcd_pid);
    let files = snapshot_files(&dir);
    assert_eq!(
        files,
        vec![second.clone()],
        "only the complete snapshot is visible"
    );
    assert!(
        dir.join(&part).exists(),
        "the cut save left its hidden temporary file"
    );

    // After a restart the listing shows the complete snapshot only.
    let log = s1.dir.join("log-2");
    let env = bus.env();
    s1.daemon = Daemon::start("s1", "server", &s1.config, &log, &[(env.0, env.1.as_str())]);
    wait_on_bus(&bus, "io.rke2.Server", "/io/rke2/Server", &mut s1.daemon);
    let names = wait_for(READY, "the snapshot list", || {
        let out = cli(&bus, false, &["etcd-snapshot", "list", "-o", "json"]);
        out.status.success().then(|| {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    });
    assert!(names.contains(&second), "{names:?}");
    assert!(!names.iter().any(|n| n.contains(".part")), "{names:?}");
}

#[test]
fn bad_snapshot_settings_and_restore_paths_are_refused_with_nothing_changed() {
    require_tool("etcd", "etcd-server");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("c");
    fs::create_dir_all(&dir).unwrap();
    let run = |extra: &[(&'static str, String)]| {
        let mut entries = server_config("c1", block.ip(1), &dir);
        entries.extend(extra.iter().cloned());
        let config = dir.join("config.yaml");
        write_config(&config, &entries);
        std::process::Command::new(rke2_bin())
            .args(["server", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = run(&[("etcd-snapshot-schedule-cron", "0 */12 * *".into())]);
    assert_eq!(out.status.code(), Some(64), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("etcd-snapshot-schedule-cron")
            && out_text(&out).contains("expected 5 fields"),
        "{}",
        out_text(&out)
    );
    let out = run(&[("etcd-snapshot-schedule-cron", "61 * * * *".into())]);
    assert_eq!(out.status.code(), Some(64), "{}", out_text(&out));
    let out = run(&[("etcd-snapshot-retention", "0".into())]);
    assert_eq!(out.status.code(), Some(64), "{}", out_text(&out));
    let out = run(&[("cluster-reset-restore-path", "/x".into())]);
    assert_eq!(out.status.code(), Some(64), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("--cluster-reset required with --cluster-reset-restore-path"),
        "{}",
        out_text(&out)
    );
    let out = run(&[
        ("cluster-reset", "true".into()),
        ("server", "https://127.0.0.1:9345".into()),
        ("token", "t".into()),
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("cannot perform cluster-reset while server URL is set"),
        "{}",
        out_text(&out)
    );
    assert!(
        !dir.join("data").exists(),
        "a refused config creates nothing"
    );

    // A real server's data; then restores from things that are not snapshots.
    let mut entries = server_config("c1", block.ip(1), &dir);
    entries.push(("token", "bad-input".into()));
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    let mut d = Daemon::start("c1", "server", &config, &dir.join("log"), &[]);
    d.wait_log("ready:", READY);
    d.stop();
    let etcd_dir = dir.join("data/server/db/etcd");
    let name_before = fs::read_to_string(dir.join("data/server/db/etcd-name")).unwrap();
    let db_entries = || {
        let mut v: Vec<String> = fs::read_dir(dir.join("data/server/db"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = db_entries();
    let not_a_snapshot = dir.join("notes.txt");
    fs::write(&not_a_snapshot, "hello").unwrap();
    let truncated = dir.join("truncated.db");
    let good = fs::read(etcd_dir.join("member/snap/db")).unwrap();
    fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    for (path, expect) in [
        (
            not_a_snapshot.display().to_string(),
            "is not an etcd snapshot: too short",
        ),
        (
            etcd_dir.join("member/snap/db").display().to_string(),
            "is not an etcd snapshot: no SHA-256 trailer",
        ),
        (truncated.display().to_string(), "is not an etcd snapshot"),
        (
            "no-such-snapshot-7".to_string(),
            "etcd snapshot \"no-such-snapshot-7\" not found",
        ),
    ] {
        let mut e = entries.clone();
        e.push(("cluster-reset", "true".into()));
        e.push(("cluster-reset-restore-path", path.clone()));
        write_config(&config, &e);
        let mut d = Daemon::start(
            "c1",
            "server",
            &config,
            &dir.join(format!("log-{}", unique_suffix())),
            &[],
        );
        assert_eq!(d.wait_exit(READY), Some(1), "{path}: {}", d.log_text());
        assert!(d.log_text().contains(expect), "{path}: {}", d.log_text());
        assert_eq!(db_entries(), before, "{path}: db/ changed");
        assert_eq!(
            fs::read_to_string(dir.join("data/server/db/etcd-name")).unwrap(),
            name_before
        );
    }
}

fn voters_and_learners(node: &ServerNode) -> Option<(usize, usize)> {
    etcd_members(node).map(|m| {
        (
            m.iter().filter(|(n, l)| !l && !n.is_empty()).count(),
            m.iter().filter(|(_, l)| *l).count(),
        )
    })
}

fn configmaps(k: &Path) -> Vec<String> {
    kubectl_ok(k, &["get", "configmaps", "-o", "name"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn three_servers_restored_from_a_snapshot_rejoin_as_voters() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("kubectl", "kubernetes-client");
    require_tool("busctl", "systemd");
    let block = AddrBlock::new();
    let token = "restore-token";
    let env = server_on_bus(&block, "s1", &[("token", token.into())]);
    let (bus, root) = (&env.bus, &env.root);
    let mut s1 = env.server;
    let join = |name: &str, ip| {
        start_server(
            name,
            ip,
            root.path(),
            &[("token", token.into()), ("server", s1.supervisor())],
        )
    };
    let mut s2 = join("s2", block.ip(2));
    let mut s3 = join("s3", block.ip(3));
    let k = s1.kubeconfig.clone();
    wait_for(READY, "3 Ready nodes and 3 voters", || {
        (all_ready(&k, &["s1", "s2", "s3"]) && voters_and_learners(&s1) == Some((3, 0)))
            .then_some(())
    });
    for i in 0..10 {
        kubectl_ok(
            &k,
            &[
                "create",
                "configmap",
                &format!("before-{i}"),
                "--from-literal=k=v",
            ],
        );
    }
    let snapshot = PathBuf::from(cli_ok(bus, &["etcd-snapshot", "save"]).trim());
    for i in 0..10 {
        kubectl_ok(
            &k,
            &[
                "create",
                "configmap",
                &format!("after-{i}"),
                "--from-literal=k=v",
            ],
        );
    }
    for s in [&mut s1, &mut s2, &mut s3] {
        s.daemon.stop();
    }

    // Restore on s1: the reset run exits 0 with RKE2's message and leaves db/reset-flag.
    let base = fs::read_to_string(&s1.config).unwrap();
    fs::write(
        &s1.config,
        format!(
            "{base}cluster-reset: true\ncluster-reset-restore-path: {}\n",
            snapshot.display()
        ),
    )
    .unwrap();
    let mut reset = Daemon::start(
        "s1-reset",
        "server",
        &s1.config,
        &s1.dir.join("log-reset"),
        &[],
    );
    assert_eq!(reset.wait_exit(READY), Some(0), "{}", reset.log_text());
    let log = reset.log_text();
    assert!(
        log.contains("Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete"),
        "{log}"
    );
    let db = s1.data_dir().join("server/db");
    assert!(db.join("reset-flag").exists());
    assert!(
        fs::read_dir(&db).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("etcd-old-")),
        "old etcd data moved aside"
    );
    // Starting again with the flag still set is refused, as RKE2 does (restore path removed).
    fs::write(&s1.config, format!("{base}cluster-reset: true\n")).unwrap();
    let mut again = Daemon::start(
        "s1-again",
        "server",
        &s1.config,
        &s1.dir.join("log-again"),
        &[],
    );
    assert_eq!(again.wait_exit(READY), Some(1));
    assert!(
        again.log_text().contains(
            "cluster-reset was successfully performed, please remove the cluster-reset flag"
        ),
        "{}",
        again.log_text()
    );

    // Normal start of s1, then s2 and s3 rejoin by themselves.
    fs::write(&s1.config, &base).unwrap();
    s1.restart(&[]);
    s1.daemon.wait_log("ready:", READY);
    assert!(!db.join("reset-flag").exists());
    s2.restart(&[]);
    s2.daemon
        .wait_log("is not in the cluster's member list", READY);
    s2.daemon.wait_log("ready:", READY);
    assert!(
        fs::read_dir(s2.data_dir().join("server/db"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("etcd-old-")),
        "s2: old data moved aside"
    );
    // s3 comes back wiped (a new host with the same name, hence a new node password): the
    // reset deleted the other servers' node-password secrets, so it registers again.
    assert!(
        log.contains("deleted the node password secret kube-system/s3.node-password.rke2"),
        "{log}"
    );
    s3.daemon.stop();
    fs::remove_dir_all(s3.data_dir()).unwrap();
    s3.restart(&[]);
    s3.daemon.wait_log("ready:", READY);
    wait_for(READY, "3 Ready nodes, 3 voters, no learner", || {
        (all_ready(&k, &["s1", "s2", "s3"]) && voters_and_learners(&s1) == Some((3, 0)))
            .then_some(())
    });
    // The snapshot taken before the restore is recorded again (the restored data predates
    // its record).
    let record = format!("local-{}", snapshot.file_name().unwrap().to_string_lossy());
    wait_for(Duration::from_secs(30), "the snapshot's record", || {
        snapshot_records(&k).contains_key(&record).then_some(())
    });
    let cms = configmaps(&k);
    for i in 0..10 {
        assert!(cms.contains(&format!("configmap/before-{i}")), "{cms:?}");
        assert!(!cms.contains(&format!("configmap/after-{i}")), "{cms:?}");
    }
    // The restored cluster takes writes through every server.
    for s in [&s2, &s3] {
        kubectl_ok(
            &s.kubeconfig,
            &["create", "configmap", &format!("new-{}", s.daemon.name)],
        );
    }
}

/// The ETCDSnapshotFile records (name → object) as kubectl on `k` lists them.
fn snapshot_records(k: &Path) -> std::collections::BTreeMap<String, Value> {
    let list: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "etcdsnapshotfiles", "-o", "json"])).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o.clone(),
            )
        })
        .collect()
}

#[test]
fn every_server_lists_every_servers_snapshot_records_with_kubectl() {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubernetes-client");
    require_tool("busctl", "systemd");
    let block = AddrBlock::new();
    let token = "records-token";
    let env = server_on_bus(&block, "s1", &[("token", token.into())]);
    let (bus, root) = (&env.bus, &env.root);
    let s1 = &env.server;
    let mut s2 = start_server_on(
        "s2",
        block.ip(2),
        root.path(),
        &[("token", token.into()), ("server", s1.supervisor())],
        Some(bus),
    );
    s2.daemon.wait_log("ready:", READY);
    wait_on_bus(bus, "io.rke2.Server.s2", "/io/rke2/Server", &mut s2.daemon);
    let p1 = PathBuf::from(cli_ok(bus, &["etcd-snapshot", "--node", "s1", "save"]).trim());
    let p2 = PathBuf::from(cli_ok(bus, &["etcd-snapshot", "--node", "s2", "save"]).trim());
    let n1 = p1.file_name().unwrap().to_string_lossy().into_owned();
    let n2 = p2.file_name().unwrap().to_string_lossy().into_owned();

    // Both servers' APIs list both records, with RKE2's fields.
    for s in [s1, &s2] {
        let records = snapshot_records(&s.kubeconfig);
        for (node, name, path) in [("s1", &n1, &p1), ("s2", &n2, &p2)] {
            let r = records
                .get(&format!("local-{name}"))
                .unwrap_or_else(|| panic!("no record of {name} on {}: {records:?}", s.daemon.name));
            assert_eq!(r["apiVersion"], "k3s.cattle.io/v1");
            assert_eq!(r["kind"], "ETCDSnapshotFile");
            assert!(r["metadata"].get("namespace").is_none(), "cluster-scoped");
            assert_eq!(r["spec"]["snapshotName"], name.as_str());
            assert_eq!(r["spec"]["nodeName"], node);
            assert_eq!(
                r["spec"]["location"],
                format!("file://{}", path.display()).as_str()
            );
            assert_eq!(r["spec"]["compressed"], false);
            assert_eq!(r["status"]["readyToUse"], true);
            assert_eq!(
                r["status"]["size"],
                fs::metadata(path).unwrap().len().to_string().as_str()
            );
            let created =
                chrono::DateTime::parse_from_rfc3339(r["status"]["creationTime"].as_str().unwrap())
                    .unwrap();
            assert!((created.timestamp() - chrono::Utc::now().timestamp()).abs() < 300);
            assert_eq!(
                r["metadata"]["labels"]["etcd.rke2.cattle.io/snapshot-storage-node"],
                node
            );
        }
    }
    // kubectl's table shows RKE2's columns.
    let table = kubectl_ok(&s2.kubeconfig, &["get", "etcdsnapshotfiles.k3s.cattle.io"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SNAPSHOTNAME",
            "NODE",
            "LOCATION",
            "SIZE",
            "CREATIONTIME"
        ],
        "{table}"
    );
    assert!(table.contains(&n1) && table.contains(&n2), "{table}");

    // Deleting s2's snapshot removes its record everywhere; s1's stays.
    cli_ok(bus, &["etcd-snapshot", "--node", "s2", "delete", &n2]);
    let records = snapshot_records(&s1.kubeconfig);
    assert!(!records.contains_key(&format!("local-{n2}")), "{records:?}");
    assert!(records.contains_key(&format!("local-{n1}")), "{records:?}");

    // A file removed behind the server's back loses its record at the next sync (here: the
    // next save on that server).
    fs::remove_file(&p1).unwrap();
    let p3 = PathBuf::from(
        cli_ok(
            bus,
            &["etcd-snapshot", "--node", "s1", "save", "--name", "again"],
        )
        .trim(),
    );
    let records = snapshot_records(&s2.kubeconfig);
    assert!(!records.contains_key(&format!("local-{n1}")), "{records:?}");
    assert!(
        records.contains_key(&format!(
            "local-{}",
            p3.file_name().unwrap().to_string_lossy()
        )),
        "{records:?}"
    );
}
