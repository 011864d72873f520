//! Citations of the project's documents cannot rot. In `src/`, `tests/`, `benches/`,
//! `scripts/`, `docs/` and the README: every `<name>.md §<section>` must name a file in `docs/`
//! with a heading of that section id (`## 2. …`, `### 2.3 …`, `### A.5 …`, `### 2a. …`); every
//! Markdown link `<doc>.md#<anchor>` must match a heading; every other `<path>.md` mentioned must
//! exist. Plain Rust, no daemon.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One reference found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Citation {
    /// 1-based line number.
    line: usize,
    /// The path as written, e.g. `docs/protocol.md` or `protocol.md`.
    path: String,
    /// Section ids after `§`, e.g. `["1.3", "4.2"]`; empty for a bare mention.
    sections: Vec<String>,
    /// `#anchor` of a Markdown link, if any.
    anchor: Option<String>,
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

/// Parses a section id at the start of `s` (`2`, `2.3`, `2a`, `A.5`, `C.3`); returns it and the
/// number of bytes used.
fn section_id(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    if b.len() >= 2 && b[0].is_ascii_uppercase() && b[1] == b'.' {
        i = 2;
    }
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let n = digits(i);
    if n == 0 {
        return None;
    }
    i += n;
    while i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1 + digits(i + 1);
    }
    // A letter suffix (`2a`) only when the id ends there (`2a.`, `2a)`), not `2 and`.
    if i < b.len()
        && b[i].is_ascii_lowercase()
        && b.get(i + 1).is_none_or(|c| !c.is_ascii_alphanumeric())
    {
        i += 1;
    }
    Some((s[..i].to_string(), i))
}

/// The section ids of `§a, §b` following a citation.
fn sections_after(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut s = rest;
    let Some(r) = s.strip_prefix(" §") else {
        return out;
    };
    s = r;
    while let Some((id, used)) = section_id(s) {
        out.push(id);
        s = &s[used..];
        match s.strip_prefix(", §") {
            Some(r) => s = r,
            None => break,
        }
    }
    out
}

/// Every `<path>.md` mentioned, with the sections cited and the anchor linked, if any.
fn citations(text: &str) -> Vec<Citation> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find(".md") {
            let end = from + pos + 3;
            from = end;
            let start = line[..end - 3]
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_path_char(*c))
                .last()
                .map(|(i, _)| i)
                .unwrap_or(end - 3);
            let path = line[start..end].trim_start_matches("./").to_string();
            let rest = &line[end..];
            if rest.starts_with(|c: char| c.is_ascii_alphanumeric())
                || path == ".md"
                || path.contains("//")
            {
                continue; // `.mdx`, a bare extension, a URL
            }
            let sections = sections_after(rest);
            let anchor = rest.strip_prefix('#').map(|a| {
                a.chars()
                    .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_'))
                    .collect::<String>()
            });
            out.push(Citation {
                line: n + 1,
                path,
                sections,
                anchor,
            });
        }
    }
    out
}

/// Section ids of a Markdown document's headings (`## 2. Decisions` → `2`).
fn heading_ids(markdown: &str) -> BTreeSet<String> {
    headings(markdown)
        .filter_map(|h| {
            let word = h.split_whitespace().next()?;
            let (id, used) = section_id(word)?;
            // The whole first word is the id, optionally with a trailing dot.
            (word[used..].is_empty() || &word[used..] == ".").then_some(id)
        })
        .collect()
}

/// GitHub's anchors for a document's headings: lower case, spaces to `-`, other punctuation
/// dropped.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    headings(markdown)
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Heading texts, outside fenced code blocks.
fn headings(markdown: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    markdown.lines().filter_map(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return None;
        }
        if fenced {
            return None;
        }
        let hashes = l.chars().take_while(|c| *c == '#').count();
        (1..=6)
            .contains(&hashes)
            .then(|| l[hashes..].strip_prefix(' '))?
    })
}

/// Lexically normalised `base/rel` (no file system access, so missing files stay missing).
fn join(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Checks the citations of one file (`rel`, relative to `root`) against the documents under
/// `root/docs`; returns one message per problem.
fn check_file(root: &Path, rel: &Path, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let docs = root.join("docs");
    for c in citations(text) {
        let at = format!("{}:{}", rel.display(), c.line);
        // `docs/<name>.md` is relative to the repository; anything else to the citing file
        // (so inside docs/ `protocol.md` is docs/protocol.md, and in src/ it is no document).
        let target = if c.path.starts_with("docs/") {
            join(root, &c.path)
        } else {
            join(root.join(rel).parent().unwrap_or(root), &c.path)
        };
        if c.sections.is_empty() && c.anchor.is_none() {
            // A plain mention or link (a doc, the README, testdata notes) must exist, next to
            // the citing file or from the repository root.
            if !target.is_file() && !join(root, &c.path).is_file() {
                problems.push(format!("{at}: mentions {}, which does not exist", c.path));
            }
            continue;
        }
        if !target.starts_with(&docs) {
            problems.push(format!(
                "{at}: cites {}{}, which is not a document in docs/ (write docs/{}.md)",
                c.path,
                c.sections
                    .iter()
                    .map(|s| format!(" §{s}"))
                    .collect::<String>(),
                c.path
                    .trim_end_matches(".md")
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
            ));
            continue;
        }
        let Ok(doc) = fs::read_to_string(&target) else {
            problems.push(format!("{at}: {} does not exist", c.path));
            continue;
        };
        let ids = heading_ids(&doc);
        for s in &c.sections {
            if !ids.contains(s) {
                problems.push(format!(
                    "{at}: {} has no heading for §{s} (headings: {})",
                    c.path,
                    ids.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if let Some(a) = &c.anchor
            && !heading_anchors(&doc).contains(a)
        {
            problems.push(format!("{at}: {} has no heading with anchor #{a}", c.path));
        }
    }
    problems
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_cited_document_and_section_exists() {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    for dir in ["src", "tests", "benches", "scripts", "docs"] {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    let mut problems = Vec::new();
    let mut cited = 0;
    for f in &files {
        let rel = f.strip_prefix(&root).expect("under the repository");
        // This file's own examples of broken references are fixtures of the checker's test.
        if rel == Path::new("tests/docs_links.rs") {
            continue;
        }
        // Binary fixtures (protobuf captures) are not text.
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        cited += citations(&text)
            .iter()
            .filter(|c| !c.sections.is_empty())
            .count();
        problems.extend(check_file(&root, rel, &text));
    }
    assert!(
        problems.is_empty(),
        "{} broken document reference(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The scan really found the code's citations (a parser that finds nothing passes vacuously).
    assert!(cited >= 30, "only {cited} citations found");
}

#[test]
fn the_checker_reports_missing_files_sections_and_anchors() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("docs")).unwrap();
    fs::create_dir_all(root.path().join("src/agent")).unwrap();
    fs::write(
        root.path().join("docs/protocol.md"),
        "# P\n## 1. Tokens\n### 1.2 CA check\n### 2a. nspawn\n### A.5 Patches\n```\n## 9. fenced\n```\n",
    )
    .unwrap();
    fs::write(root.path().join("README.md"), "# R\n").unwrap();
    let check = |rel: &str, text: &str| check_file(root.path(), Path::new(rel), text);

    let ok = "//! see docs/protocol.md §1, §1.2, §2a and (docs/protocol.md §A.5).\n";
    assert_eq!(check("src/agent/mod.rs", ok), Vec::<String>::new());
    assert_eq!(
        check(
            "docs/other.md",
            "[x](protocol.md#12-ca-check), protocol.md §1.2"
        ),
        Vec::<String>::new()
    );
    let others = "[r](../README.md); tests/x.rs: README.md; https://example.org/guide.md";
    assert_eq!(check("docs/other.md", others), Vec::<String>::new());

    let bad = [
        // Not prefixed with docs/: the file a reader would look for is not in the repository.
        (
            "src/token.rs",
            "//! (protocol.md §1): tokens",
            "not a document in docs/",
        ),
        ("src/a.rs", "// docs/protocol.md §3", "no heading for §3"),
        (
            "src/a.rs",
            "// docs/protocol.md §1.2, §1.3",
            "no heading for §1.3",
        ),
        ("src/a.rs", "// docs/protocol.md §9", "no heading for §9"),
        ("src/a.rs", "// docs/design.md §2", "does not exist"),
        ("tests/x.sh", "# (docs/missing.md)", "does not exist"),
        (
            "docs/other.md",
            "[x](protocol.md#9-fenced)",
            "no heading with anchor",
        ),
        ("docs/other.md", "[x](missing.md)", "does not exist"),
        (
            "src/apiserver/mod.rs",
            "//! (kubernetes-api.md). Routing",
            "does not exist",
        ),
        ("README.md", "[x](docs/nothing.md)", "does not exist"),
        ("docs/other.md", "[x](../NOTES.md)", "does not exist"),
    ];
    for (rel, text, want) in bad {
        let problems = check(rel, text);
        assert!(
            problems.len() == 1 && problems[0].contains(want),
            "{text:?}: expected one problem containing {want:?}, got {problems:?}"
        );
    }
}

#[test]
fn section_ids_are_parsed_like_the_headings_write_them() {
    let ids = |s: &str| sections_after(s);
    assert_eq!(ids(" §2.3: routes"), ["2.3"]);
    assert_eq!(ids(" §1.3, §4.2, §5.1)."), ["1.3", "4.2", "5.1"]);
    assert_eq!(ids(" §A.11)"), ["A.11"]);
    assert_eq!(ids(" §2a. nspawn"), ["2a"]);
    assert_eq!(ids(" §2 and more"), ["2"]);
    assert!(ids(": no section").is_empty());
    let h = heading_ids(
        "## 2. Decisions\n### 2.3 Routes\n### A.5 Patches\n### 2a. nspawn\n# Title\n## 3.Bad\n",
    );
    assert_eq!(h.into_iter().collect::<Vec<_>>(), ["2", "2.3", "2a", "A.5"]);
}
