//! Pod startup benchmark (docs/workloads.md, Performance): one server and two agents on loopback
//! addresses, the test images pre-imported on the agents. First 50 pods bound to one agent with
//! `spec.nodeName`, created at once: prints the create → Running latency p50/p99 (each pod from
//! its own creation, both seen by one `kubectl get pods --watch`), the time until all are
//! Running from the start of the `kubectl create`, and the agent daemon's RSS with those pods
//! running (containerd and the shims excluded). Then 100 pods across both agents: the same
//! figures. Goals: p99 <= 2 s, 100 pods all Running <= 30 s, agent RSS <= 32 MiB. After each
//! batch, all its pods (grace period 1 s) are deleted at once: prints the time until the last
//! one is gone and where the kubelets' stops went (p50/p99 of their `pod stopped` figures).
//! With cgroup v1's cpuacct (as here) the bench runs in a cpuacct cgroup of its own, so every
//! process it starts (the nodes, etcd, containerd, the shims, runc, the CNI plugins, kubectl)
//! is charged there whoever its parent ends up being: the first burst also prints the CPU
//! seconds per pod this cost, split by process (see [`CpuProbe`]).
//! Run with `cargo bench --bench pods` (root, containerd/runc/CNI plugins installed;
//! `RKE2_DEFAULT_RUNTIME=crun` in the environment runs the pods with crun);
//! `RKE2_BENCH_BIN=<an earlier rke2>` runs it against another build for before/after figures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::workloads::*;
use common::*;

/// cgroup v1 cpuacct, where the bench puts itself (not there on a cgroup v2 host: no CPU figures).
const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";

/// Moves the bench into a cpuacct cgroup of its own; its children inherit it, so the cgroup's
/// usage is the CPU of everything the bench runs, however the processes are reparented.
fn own_cgroup() -> Option<PathBuf> {
    let dir = Path::new(CPUACCT).join(format!("rke2-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).ok()?;
    Some(dir)
}

/// `/proc/<pid>/stat`'s comm, own CPU (utime + stime) and reaped children's CPU (cutime +
/// cstime), in clock ticks.
fn proc_cpu(pid: u32) -> Option<(String, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let comm = head.split_once(" (")?.1.to_string();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14-17 of stat(5); `rest` starts at field 3.
    Some((comm, f[11] + f[12], f[13] + f[14]))
}

/// CPU of the bench's cgroup over one burst, split by process: each live process's own time
/// and its reaped children's (containerd reaps the CNI plugins and shim launches, each shim its
/// runc runs), the containers' own cgroups (runc init, pause, the command) read from the
/// agent's task directory, and what is left (processes whose parent also exited).
struct CpuProbe {
    cgroup: PathBuf,
    usage_ns: u64,
    procs: BTreeMap<u32, (String, u64, u64)>,
    /// pid → label for the nodes' daemons (all are `rke2`).
    names: BTreeMap<u32, String>,
    /// The busy agent's containerd task directory (container IDs).
    tasks: PathBuf,
}

impl CpuProbe {
    fn start(cgroup: &Path, cluster: &PodCluster) -> CpuProbe {
        let mut names = BTreeMap::new();
        names.insert(cluster.server.daemon.pid(), "rke2 server".to_string());
        for (i, (_, a)) in cluster.agents.iter().enumerate() {
            names.insert(a.daemon.pid(), format!("rke2 agent {i}"));
        }
        CpuProbe {
            cgroup: cgroup.to_path_buf(),
            usage_ns: Self::usage(cgroup),
            procs: Self::procs(cgroup),
            names,
            tasks: cluster.agents[0]
                .1
                .dir
                .join("data/agent/run/io.containerd.runtime.v2.task/k8s.io"),
        }
    }

    fn usage(cgroup: &Path) -> u64 {
        std::fs::read_to_string(cgroup.join("cpuacct.usage"))
            .ok()
            .and_then(|u| u.trim().parse().ok())
            .unwrap_or(0)
    }

    fn procs(cgroup: &Path) -> BTreeMap<u32, (String, u64, u64)> {
        std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .filter_map(|pid| Some((pid, proc_cpu(pid)?)))
            .collect()
    }

    /// Prints CPU seconds per pod for `pods` pods: the cgroup's total and its split.
    fn report(&self, pods: usize) {
        let tick = 1.0 / 100.0; // USER_HZ
        let total = (Self::usage(&self.cgroup) - self.usage_ns) as f64 / 1e9;
        let mut split: BTreeMap<String, f64> = BTreeMap::new();
        let mut known = 0.0;
        for (pid, (comm, own, children)) in Self::procs(&self.cgroup) {
            let (own0, children0) = self
                .procs
                .get(&pid)
                .filter(|p| p.0 == comm)
                .map_or((0, 0), |p| (p.1, p.2));
            let label = self.names.get(&pid).cloned().unwrap_or(comm);
            let own = (own - own0) as f64 * tick;
            let children = (children - children0) as f64 * tick;
            *split.entry(label.clone()).or_default() += own;
            *split
                .entry(format!("{label}: reaped children"))
                .or_default() += children;
            known += own + children;
        }
        let mut in_containers = 0.0;
        for e in std::fs::read_dir(&self.tasks)
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = Path::new(CPUACCT).join("k8s.io").join(e.file_name());
            in_containers += Self::usage(&dir) as f64 / 1e9;
        }
        println!(
            "  node CPU (cgroup {}): {:.3} s per pod, {total:.1} s in all; split per pod:",
            self.cgroup.display(),
            total / pods as f64
        );
        split.insert(
            "exited with their parent (not reaped in the window)".into(),
            (total - known).max(0.0),
        );
        let mut rows: Vec<_> = split.into_iter().filter(|(_, v)| *v > 0.0).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (label, v) in rows {
            println!("    {:.3} s  {label}", v / pods as f64);
        }
        println!(
            "    ({:.3} s per pod in the containers' own cgroups: runc init, pause, sleep; not in the total)",
            in_containers / pods as f64
        );
    }
}

/// Creates `pods` (name, node) at once and prints their startup figures once all are Running;
/// with `cpu`, the CPU the burst cost.
fn batch(cluster: &PodCluster, title: &str, pods: &[(String, String)], cpu: Option<&Path>) {
    let k = &cluster.kubeconfig;
    let mut yaml = String::new();
    for (name, node) in pods {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {BUSYBOX_IMAGE}\n    command: [\"sleep\", \"3600\"]\n"
        ));
    }
    let file = cluster.root.path().join("pods.yaml");
    std::fs::write(&file, yaml).unwrap();
    let times = PodTimes::start(k);
    let probe = cpu.map(|c| CpuProbe::start(c, cluster));
    let start = Instant::now();
    // `create` is one POST per pod (`apply` would read each first).
    kubectl_ok(
        k,
        &[
            "create",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ],
    );
    let created = start.elapsed();
    wait_for(Duration::from_secs(300), "all pods Running", || {
        (times.running() == pods.len()).then_some(())
    });
    let (lat, last) = times.latencies();
    let total = last.expect("pods Running") - start;
    println!("{title} (create -> Running, pre-imported image)");
    println!("  p50 startup: {:.2} s", quantile(&lat, 0.50).as_secs_f64());
    println!("  p99 startup: {:.2} s", quantile(&lat, 0.99).as_secs_f64());
    println!(
        "  all Running after: {:.2} s (kubectl create took {:.2} s)",
        total.as_secs_f64(),
        created.as_secs_f64()
    );
    if let Some(p) = probe {
        p.report(pods.len());
    }
}

/// Deletes every pod (`prefix` names them) and prints the time until the last Pod object is
/// gone, from the start of the `kubectl delete`, and the kubelets' own figures for those pods
/// (their `pod stopped` log lines).
fn delete_pods(cluster: &PodCluster, title: &str, prefix: &str) {
    let k = &cluster.kubeconfig;
    let start = Instant::now();
    kubectl(k, &["delete", "pods", "--all", "--wait=false"]);
    let deleted = start.elapsed();
    wait_for(Duration::from_secs(300), "the pods gone", || {
        let out = kubectl(k, &["get", "pods", "-o", "name"]);
        (out.status.success() && out.stdout.is_empty()).then_some(())
    });
    println!("{title} (delete -> gone, grace period 1 s)");
    println!(
        "  all gone after: {:.2} s (kubectl delete took {:.2} s)",
        start.elapsed().as_secs_f64(),
        deleted.as_secs_f64()
    );
    let logs: String = cluster
        .agents
        .iter()
        .map(|(_, a)| a.daemon.log_text())
        .collect();
    let stopped: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("pod stopped") && l.contains(&format!("pod={prefix}")))
        .collect();
    for field in [
        "total_ms",
        "pre_stop_ms",
        "containers_ms",
        "sandbox_ms",
        "delete_ms",
    ] {
        let mut v: Vec<Duration> = stopped
            .iter()
            .filter_map(|l| log_field(l, field))
            .map(Duration::from_millis)
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort();
        println!(
            "  kubelet {field}: p50 {} p99 {} ({} pods)",
            quantile(&v, 0.50).as_millis(),
            quantile(&v, 0.99).as_millis(),
            v.len()
        );
    }
}

/// The number after `field=` in a log line.
fn log_field(line: &str, field: &str) -> Option<u64> {
    let at = line.find(&format!(" {field}="))? + field.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn main() {
    // Pod CIDRs from the block (a /26 per node, three nodes), so runs next to other tests
    // never share a pod range.
    let cgroup = own_cgroup();
    let block = AddrBlock::new();
    let block_octet = block.ip(1).octets()[1];
    let mut cluster = PodCluster::start(
        block,
        2,
        &[
            ("cluster-cidr", format!("198.18.{block_octet}.0/24")),
            ("node-cidr-mask-size", "26".into()),
            ("service-cidr", "198.19.0.0/16".into()),
        ],
        &[],
    );
    let nodes: Vec<String> = cluster.agents.iter().map(|(n, _)| n.clone()).collect();
    // The nodes inherit the environment: RKE2_DEFAULT_RUNTIME=crun measures crun.
    println!(
        "default runtime: {}",
        std::env::var("RKE2_DEFAULT_RUNTIME").unwrap_or_else(|_| "runc".into())
    );

    let one: Vec<(String, String)> = (0..50)
        .map(|i| (format!("b{i}"), nodes[0].clone()))
        .collect();
    batch(&cluster, "pods: 50 on one agent", &one, cgroup.as_deref());
    let rss = proc_status_kib(cluster.agents[0].1.daemon.pid(), "VmRSS:");
    println!(
        "  agent daemon RSS with 50 pods: {:.1} MiB (containerd excluded)",
        rss as f64 / 1024.0
    );
    delete_pods(&cluster, "pods: delete 50 on one agent", "b");

    let two: Vec<(String, String)> = (0..100)
        .map(|i| (format!("c{i}"), nodes[i % 2].clone()))
        .collect();
    batch(&cluster, "pods: 100 across 2 agents", &two, None);
    delete_pods(&cluster, "pods: delete 100 across 2 agents", "c");
    cluster.stop_pods(&[]);
    if let Some(dir) = cgroup {
        // Back to the root cgroup; the directory goes once nothing is left in it.
        let _ = std::fs::write(
            Path::new(CPUACCT).join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(dir);
    }
}
