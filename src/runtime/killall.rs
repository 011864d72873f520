//! `rke2 killall` (RKE2's `rke2-killall.sh`): stops every container of the node, even with the
//! daemon down. It kills the node's containerd-shim processes with their whole process trees
//! (the containers), then the node's containerd, unmounts what the containers left mounted
//! (rootfs overlays, the sandboxes' network namespaces under /run/netns), deletes the pod bridge,
//! releases the pod IPs, and removes the service proxy's nftables table and the node's local
//! route for the cluster DNS address. Only this node's
//! processes are touched: shims are recognised by the containerd socket address on their
//! command line.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command};

use super::containerd::Layout;

/// The `killall` subcommand.
pub fn command() -> Command {
    Command::new("killall")
        .about("Stop every container and the containerd of this node, and clean up its mounts, network namespaces and pod bridge")
        .arg(
            Arg::new("data-dir")
                .long("data-dir")
                .short('d')
                .value_name("DIR")
                .default_value(crate::config::spec::DEFAULT_DATA_DIR)
                .help("Data directory of the node"),
        )
        .arg(
            Arg::new("containerd-run-dir")
                .long("containerd-run-dir")
                .value_name("DIR")
                .help("containerd-run-dir of the node, when it was set"),
        )
}

/// Runs `rke2 killall`; returns the exit code.
pub fn run(args: &ArgMatches) -> i32 {
    let data_dir = PathBuf::from(args.get_one::<String>("data-dir").expect("defaulted"));
    let run_dir = args
        .get_one::<String>("containerd-run-dir")
        .map(PathBuf::from);
    let layout = Layout::new(&data_dir, run_dir.as_deref());
    let report = killall(&layout);
    println!(
        "killed {} processes ({} shims), removed {} network namespaces, unmounted {} mounts",
        report.killed, report.shims, report.netns, report.unmounted
    );
    0
}

/// What `killall` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub shims: usize,
    pub killed: usize,
    pub netns: usize,
    pub unmounted: usize,
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn netns_inode(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// Stops everything of the node described by `layout`.
pub fn killall(layout: &Layout) -> Report {
    let mut report = Report::default();
    let socket = layout.socket().display().to_string();
    let config = layout.config_file().display().to_string();
    let pids = all_pids();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &p in &pids {
        if let Some(pp) = ppid(p) {
            children.entry(pp).or_default().push(p);
        }
    }
    let mut shims = Vec::new();
    let mut daemons = Vec::new();
    for &p in &pids {
        let cmd = cmdline(p);
        let Some(bin) = cmd.first() else { continue };
        let bin = Path::new(bin)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if bin.starts_with("containerd-shim") && cmd.iter().any(|a| a == &socket) {
            shims.push(p);
        } else if bin == "containerd" && cmd.iter().any(|a| a == &config) {
            daemons.push(p);
        }
    }
    report.shims = shims.len();
    // The shims' trees: the containers, whose network namespaces are found before they die.
    let mut tree: BTreeSet<u32> = BTreeSet::new();
    let mut stack = shims.clone();
    while let Some(p) = stack.pop() {
        if tree.insert(p) {
            stack.extend(children.get(&p).cloned().unwrap_or_default());
        }
    }
    let own_netns = netns_inode(std::process::id());
    let namespaces: BTreeSet<String> = tree
        .iter()
        .filter_map(|p| netns_inode(*p))
        .filter(|n| Some(n) != own_netns.as_ref())
        .collect();
    for p in daemons.iter().chain(tree.iter()) {
        if let Some(pid) = rustix::process::Pid::from_raw(*p as i32)
            && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
        {
            report.killed += 1;
        }
    }
    // Network namespaces of sandboxes whose processes are gone already (a stop cut short): the
    // veths on the node's bridge name them.
    let bridge = node_bridge(layout);
    let linked: BTreeSet<String> = bridge.as_deref().map(bridge_netns).unwrap_or_default();
    // Network namespaces the sandboxes had pinned under /run/netns.
    for dir in ["/run/netns", "/var/run/netns"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| linked.contains(n));
            if named || namespaces.contains(&format!("net:[{}]", meta.ino())) {
                let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
                if std::fs::remove_file(&path).is_ok() {
                    report.netns += 1;
                }
            }
        }
    }
    // Mounts left under the node's directories (container rootfs, sandbox shm), deepest first.
    let roots = [layout.root(), layout.state(), layout.agent_dir.join("pods")];
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| roots.iter().any(|r| Path::new(m).starts_with(r)))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH).is_ok() {
            report.unmounted += 1;
        }
    }
    // The pod bridge and the IPs host-local handed out.
    if let Some(bridge) = &bridge {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(layout.cni_data_dir().join("networks"));
    remove_proxy_table(layout);
    super::local_route::remove_recorded(&layout.agent_dir);
    report
}

/// The service proxy's nftables table, named in `<agent-dir>/proxy-table` by the proxy.
fn remove_proxy_table(layout: &Layout) {
    let Ok(name) = std::fs::read_to_string(layout.agent_dir.join("proxy-table")) else {
        return;
    };
    let name = name.trim();
    // Only a name the proxy could have written (`rke2-proxy-<node name>`) reaches nft.
    let valid = name.starts_with("rke2-proxy-")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The pod bridge named in the node's CNI config.
fn node_bridge(layout: &Layout) -> Option<String> {
    let text = std::fs::read_to_string(layout.cni_conf_dir().join(super::cni::CONF_FILE)).ok()?;
    let conf = serde_json::from_str::<serde_json::Value>(&text).ok()?;
    conf.pointer("/plugins/0/bridge")
        .and_then(|b| b.as_str())
        .map(str::to_string)
}

/// Names of the network namespaces the veths on `bridge` lead to (`link-netns <name>` in
/// `ip -o link`).
fn bridge_netns(bridge: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .stderr(std::process::Stdio::null())
        .output();
    out.map(|o| parse_link_netns(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

fn parse_link_netns(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "link-netns")?;
            words.next().map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn veths_name_their_network_namespaces() {
        let text = "9: vethab@if2: <UP> mtu 1500 master rke2br1 state UP \\    link/ether 1a:2b brd ff link-netns cni-1234\n10: vethcd@if2: <UP> link-netnsid 3\n";
        assert_eq!(
            super::parse_link_netns(text)
                .into_iter()
                .collect::<Vec<_>>(),
            ["cni-1234"]
        );
    }

    use super::*;

    #[test]
    fn ppid_reads_past_odd_command_names() {
        let me = std::process::id();
        let parent = ppid(me).expect("own stat readable");
        assert_eq!(
            Some(parent),
            rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32)
        );
    }

    #[test]
    fn killall_on_an_idle_node_does_nothing() {
        let d = tempfile::tempdir().unwrap();
        let r = killall(&Layout::new(d.path(), None));
        assert_eq!(r, Report::default());
    }
}
