//! The layering rules of docs/architecture.md, checked on the source: every `crate::<module>`
//! path in `src/` (outside comments) is a dependency of the top-level module holding the file.
//! The graph of top-level modules must have no cycle at all (so no two-way dependency between
//! `server`, `agent`, `apiserver`, `controllers`, `dbus`, `supervisor`), the agent must not
//! reach the API server, and the shared layers below the subsystems must not reach up into them.
//! No build or process is involved: the test reads files only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The subsystems `server` wires together; none may depend on another in both directions.
const SUBSYSTEMS: &[&str] = &[
    "server",
    "agent",
    "apiserver",
    "controllers",
    "dbus",
    "supervisor",
    "dns",
    "proxy",
];

/// Shared layers every subsystem may use; they must never use a subsystem.
const SHARED: &[&str] = &[
    "cluster",
    "storage",
    "registry",
    "datastore",
    "protocol",
    "host",
    "validation",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `//` comments (doc comments may mention any module). A `//` counts as a
/// comment at the start of a line or after whitespace, so `https://` in a string stays.
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|line| {
            let bytes = line.as_bytes();
            let cut = (0..bytes.len().saturating_sub(1)).find(|&i| {
                bytes[i] == b'/'
                    && bytes[i + 1] == b'/'
                    && (i == 0 || bytes[i - 1].is_ascii_whitespace())
            });
            match cut {
                Some(i) => &line[..i],
                None => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by `crate::x` and `crate::{x, y::z}` in `src`.
fn named_modules(src: &str) -> BTreeSet<String> {
    let code = strip_comments(src);
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `rke2::crate::` does not exist; `$crate::` (macros) does not name our modules.
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let close = group.find('}').unwrap_or(group.len());
            for item in group[..close].split(',') {
                let name = ident_at(item.trim());
                if !name.is_empty() && name != "self" {
                    out.insert(name.to_string());
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The dependency graph of the top-level modules of the crate rooted at `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel
            .components()
            .next()
            .expect("non-empty path")
            .as_os_str()
            .to_string_lossy();
        let top = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        // The crate root and the binary declare and dispatch to everything.
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let deps = graph.entry(top.clone()).or_default();
        for m in named_modules(&text) {
            if m != top {
                deps.insert(m);
            }
        }
    }
    graph
}

/// Every module reachable from `from`.
fn reachable(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(m) = stack.pop() {
        for d in graph.get(&m).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

/// One path `from` -> ... -> `to`, for the failure message.
fn path(graph: &Graph, from: &str, to: &str) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from.to_string()]);
    while let Some(m) = queue.pop_front() {
        for d in graph.get(&m).into_iter().flatten() {
            // For a cycle (`from == to`) the way back into `from` is the answer.
            if !prev.contains_key(d) && (d != from || to == from) {
                prev.insert(d.clone(), m.clone());
                queue.push_back(d.clone());
            }
        }
    }
    let mut out = vec![to.to_string()];
    let mut at = to.to_string();
    while let Some(p) = prev.get(&at) {
        out.push(p.clone());
        if p == from {
            break;
        }
        at = p.clone();
    }
    out.reverse();
    out
}

/// Every broken rule, described.
fn violations(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for m in graph.keys() {
        if reachable(graph, m).contains(m) {
            out.push(format!(
                "cycle through {m}: {}",
                path(graph, m, m).join(" -> ")
            ));
        }
    }
    for (i, a) in SUBSYSTEMS.iter().enumerate() {
        for b in &SUBSYSTEMS[i + 1..] {
            let direct = |x: &str, y: &str| graph.get(x).is_some_and(|d| d.contains(y));
            if direct(a, b) && direct(b, a) {
                out.push(format!("{a} and {b} use each other"));
            }
        }
    }
    for forbidden in ["apiserver", "server"] {
        if reachable(graph, "agent").contains(forbidden) {
            out.push(format!(
                "the agent reaches {forbidden}: {}",
                path(graph, "agent", forbidden).join(" -> ")
            ));
        }
    }
    for low in SHARED {
        let reach = reachable(graph, low);
        for high in SUBSYSTEMS {
            if reach.contains(*high) {
                out.push(format!(
                    "shared layer {low} reaches subsystem {high}: {}",
                    path(graph, low, high).join(" -> ")
                ));
            }
        }
    }
    out
}

#[test]
fn the_module_graph_is_layered() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The walk found the crate: every subsystem and shared layer is there.
    for m in SUBSYSTEMS.iter().chain(SHARED) {
        assert!(graph.contains_key(*m), "module {m} not found in src/");
    }
    assert!(graph["server"].contains("apiserver"), "{graph:?}");
    let broken = violations(&graph);
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_uses_in_every_form() {
    let src = "use crate::a::B;\nuse crate::{b, c::D, self};\nfn f() { crate::d::g(); }\n\
               // crate::hidden\n/// crate::doc\nlet u = \"https://x\"; // crate::trailing\n\
               use crate::{\n    e,\n    f::G,\n};\nmacro_rules! m { () => { $crate::h } }";
    let names: Vec<String> = named_modules(src).into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
}

#[test]
fn the_checker_rejects_each_kind_of_violation() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for m in SUBSYSTEMS.iter().chain(SHARED) {
            g.entry(m.to_string()).or_default();
        }
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    // The layering the crate has: server on top, shared layers below.
    let good = graph(&[
        ("server", "apiserver"),
        ("server", "agent"),
        ("agent", "dbus"),
        ("apiserver", "storage"),
        ("controllers", "cluster"),
        ("cluster", "storage"),
    ]);
    assert!(violations(&good).is_empty(), "{:?}", violations(&good));
    // The layout before the cluster context left `server`.
    let two_way = graph(&[("server", "apiserver"), ("apiserver", "server")]);
    let v = violations(&two_way);
    assert!(
        v.iter().any(|m| m == "server and apiserver use each other"),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|m| m == "cycle through server: server -> apiserver -> server"),
        "{v:?}"
    );
    // A cycle through a module outside the subsystems.
    let v = violations(&graph(&[("pki", "dbus"), ("dbus", "pki")]));
    assert!(
        v.iter().any(|m| m.starts_with("cycle through pki")),
        "{v:?}"
    );
    // The agent reaching the API server, directly or through another module.
    let v = violations(&graph(&[("agent", "util"), ("util", "apiserver")]));
    assert!(
        v.iter()
            .any(|m| m == "the agent reaches apiserver: agent -> util -> apiserver"),
        "{v:?}"
    );
    // A shared layer reaching up.
    let v = violations(&graph(&[("cluster", "supervisor")]));
    assert!(
        v.iter()
            .any(|m| m.starts_with("shared layer cluster reaches subsystem supervisor")),
        "{v:?}"
    );
}
