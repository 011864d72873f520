//! Stage 1 and 2 of configuration: read the raw fragments (config file, `config.yaml.d/*.yaml`
//! drop-ins, `RKE2_*` variables, command-line flags) and merge them with RKE2's precedence into
//! one map of raw values, each remembering where it came from so later errors can name it.
//!
//! This is the only place that parses YAML (see docs/operations.md §3: serde_yaml is deprecated, so
//! swapping the parser must stay a one-file change).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::spec::{self, Role, Shape};

/// Where a raw value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: usize },
    Env(String),
    Flag(String),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// One value with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub value: String,
    pub origin: Origin,
}

/// Merged raw settings: scalars hold one entry (the winner), lists every accumulated element.
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    pub values: BTreeMap<&'static str, Vec<Raw>>,
    /// Non-fatal findings (unknown keys, keys for the other role), each naming file and key.
    pub warnings: Vec<String>,
}

/// What a configuration is loaded from. Tests and the Nix evaluation tests build this directly;
/// the binary fills it from the real process environment and argv.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// Config file; `None` means the default path (which may be absent).
    pub config_file: Option<PathBuf>,
    /// Environment variables (only `RKE2_*` are looked at).
    pub env: BTreeMap<String, String>,
    /// Values given as command-line flags, in order: (key, value). Booleans carry "true".
    pub flags: Vec<(String, String)>,
}

impl ConfigSources {
    /// The config file this load reads: the explicit path, else `RKE2_CONFIG_FILE`, else the
    /// default.
    pub fn config_path(&self) -> PathBuf {
        self.config_file
            .clone()
            .or_else(|| self.env.get("RKE2_CONFIG_FILE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(spec::DEFAULT_CONFIG_FILE))
    }
}

/// A key/value pair read from one YAML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The key without a trailing `+`.
    pub key: String,
    /// `key+:`: append to what earlier files set.
    pub append: bool,
    pub values: Vec<String>,
    pub is_list: bool,
    /// 1-based line of the key.
    pub line: usize,
    /// Line of each list element (block lists put each on its own line), so an error about one
    /// element points at it rather than at the key.
    pub item_lines: Vec<usize>,
}

/// Lines of the `count` elements of the list whose key is on `key_line` (1-based): the
/// following `- ` lines of a block list, else the key's own line (flow lists, scalars).
fn item_lines(text: &str, key_line: usize, count: usize) -> Vec<usize> {
    let mut lines: Vec<usize> = text
        .lines()
        .enumerate()
        .skip(key_line)
        .map(|(i, l)| (i + 1, l.trim_start()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .take_while(|(_, l)| l.starts_with('-'))
        .map(|(n, _)| n)
        .take(count)
        .collect();
    if lines.len() != count {
        lines = vec![key_line; count];
    }
    lines
}

/// The explicitly named config file (`--config` or `RKE2_CONFIG_FILE`) must exist: a typo there
/// would otherwise start a brand-new cluster from defaults. Only the default path may be absent.
fn check_explicit_config(sources: &ConfigSources) -> Result<(), ConfigError> {
    let (path, origin) = match (&sources.config_file, sources.env.get("RKE2_CONFIG_FILE")) {
        (Some(p), _) => (p.clone(), Origin::Flag("config".into())),
        (None, Some(p)) => (PathBuf::from(p), Origin::Env("RKE2_CONFIG_FILE".into())),
        (None, None) => return Ok(()),
    };
    if path.is_file() {
        return Ok(());
    }
    let why = if path.exists() {
        "is not a regular file"
    } else {
        "does not exist"
    };
    Err(ConfigError::at(
        origin,
        "config",
        format!("config file {} {why}", path.display()),
    ))
}

/// Levenshtein distance, for "did you mean" hints on unknown keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key closest to an unknown one, if it is close enough to be a typo.
pub fn suggest_key(unknown: &str) -> Option<&'static str> {
    spec::SETTINGS
        .iter()
        .map(|s| (edit_distance(unknown, s.key), s.key))
        .filter(|(d, key)| *d <= 2.max(key.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, key)| key)
}

/// The config file followed by its drop-ins (`<config>.d/*.yaml|*.yml`, name order).
fn config_files(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    if main.exists() {
        files.push(main.to_path_buf());
    }
    let mut dropin_dir = main.as_os_str().to_owned();
    dropin_dir.push(".d");
    let dropin_dir = PathBuf::from(dropin_dir);
    match std::fs::read_dir(&dropin_dir) {
        Ok(rd) => {
            let mut dropins: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .map(|e| {
                                let e = e.to_string_lossy().to_ascii_lowercase();
                                e == "yaml" || e == "yml"
                            })
                            .unwrap_or(false)
                })
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::file(
                &dropin_dir,
                0,
                "",
                format!("cannot read: {e}"),
            ));
        }
    }
    Ok(files)
}

/// Finds the line of a top-level key in YAML text (1-based), for error messages.
fn key_line(text: &str, key: &str) -> usize {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_end();
        if l.starts_with(' ') || l.starts_with('\t') || l.starts_with('#') {
            continue;
        }
        let candidate = l
            .strip_prefix('"')
            .and_then(|r| r.strip_prefix(key))
            .and_then(|r| r.strip_prefix('"'))
            .or_else(|| {
                l.strip_prefix('\'')
                    .and_then(|r| r.strip_prefix(key))
                    .and_then(|r| r.strip_prefix('\''))
            })
            .or_else(|| l.strip_prefix(key));
        if let Some(rest) = candidate
            && rest.trim_start().starts_with(':')
        {
            return i + 1;
        }
    }
    // Flow mappings (`{a: 1}`) and escaped keys: the first line mentioning the key, else the
    // first line. Never 0: every message must point somewhere in the file.
    text.lines()
        .position(|l| l.contains(key))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// The 1-based line of `byte` in `text`.
fn line_of_offset(text: &[u8], byte: usize) -> usize {
    1 + text[..byte.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// The line where a second YAML document starts (a `---` after content), for the error that
/// names it.
fn second_document_line(text: &str) -> Option<usize> {
    let mut content_seen = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        let is_marker = t == "---" || t.starts_with("--- ") || t.starts_with("---\t");
        if is_marker && content_seen {
            return Some(i + 1);
        }
        if t == "..." && content_seen {
            // A document end followed by anything but comments starts a new document.
            let next = text.lines().skip(i + 1).position(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#')
            });
            if let Some(n) = next {
                return Some(i + 2 + n);
            }
        }
        // A marker itself is not content, but `--- {a: 1}` carries some after it.
        let c = if is_marker { t[3..].trim() } else { t.trim() };
        if !c.is_empty() && !c.starts_with('#') && !c.starts_with('%') {
            content_seen = true;
        }
    }
    None
}

/// The line of the second occurrence of `key` as a mapping key at or after line `from`.
fn duplicate_key_line(text: &str, key: &str, from: usize) -> Option<usize> {
    let is_key_line = |l: &str| {
        let l = l.trim_start().trim_start_matches("- ");
        [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
            format!("{key} :"),
        ]
        .iter()
        .any(|p| l.starts_with(p.as_str()))
    };
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .filter(|(_, l)| is_key_line(l))
        .map(|(i, _)| i + 1)
        .nth(1)
}

/// The first line using an alias (`*name`), where an expansion bomb is triggered.
fn first_alias_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            let b = l.as_bytes();
            b.iter().enumerate().any(|(i, c)| {
                *c == b'*'
                    && (i == 0 || matches!(b[i - 1], b' ' | b'[' | b',' | b'\t' | b'{'))
                    && b.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric())
            })
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// Turns a serde_yaml error into a config error at the right line: serde_yaml reports
/// duplicate keys at the start of the mapping and gives no location at all for a second
/// document or an alias expansion that hits its limit.
fn yaml_error(path: &Path, text: &str, e: &serde_yaml::Error) -> ConfigError {
    let msg = e.to_string();
    // Errors at the end of input are reported one line past the last one: name the last.
    let last_line = text.lines().count().max(1);
    let located = e
        .location()
        .map(|l| l.line().min(last_line))
        .filter(|l| *l > 0);
    if let Some(rest) = msg.split("duplicate entry with key \"").nth(1)
        && let Some(key) = rest.split('"').next()
    {
        let line = duplicate_key_line(text, key, located.unwrap_or(1))
            .or_else(|| duplicate_key_line(text, key, 1))
            .or(located)
            .unwrap_or(1);
        return ConfigError::file(
            path,
            line,
            key,
            "duplicate key (each key may appear once per file; use \"key+:\" in a drop-in to append)"
                .into(),
        );
    }
    if msg.contains("more than one document") {
        let line = second_document_line(text).unwrap_or(1);
        return ConfigError::file(
            path,
            line,
            "",
            "a second YAML document starts here; a config file must hold exactly one".into(),
        );
    }
    if msg.contains("repetition limit exceeded") {
        return ConfigError::file(
            path,
            first_alias_line(text),
            "",
            "YAML aliases expand to too many values (alias bomb?)".into(),
        );
    }
    ConfigError::file(
        path,
        located.unwrap_or(1),
        "",
        format!("malformed YAML: {e}"),
    )
}

fn scalar_to_string(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn describe(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "an empty value",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Parses one YAML config file into entries. Errors name the file, line and key.
fn parse_file(path: &Path) -> Result<Vec<FileEntry>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::file(path, 0, "", format!("cannot read: {e}")))?;
    parse_config_text(path, &bytes)
}

/// Parses the bytes of the config file `path` (used only in messages) into entries. Public for
/// the fuzz targets (tests/fuzz.rs): any input gives entries or an error naming a line ≥ 1.
pub fn parse_config_text(path: &Path, bytes: &[u8]) -> Result<Vec<FileEntry>, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ConfigError::file(
            path,
            line_of_offset(bytes, e.valid_up_to()),
            "",
            format!(
                "not valid UTF-8 (invalid byte at offset {}); config files must be UTF-8",
                e.valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| yaml_error(path, text, &e))?;
    let map = match doc {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok(Vec::new()),
        other => {
            return Err(ConfigError::file(
                path,
                1,
                "",
                format!(
                    "the config must be a mapping of keys to values, found {}",
                    describe(&other)
                ),
            ));
        }
    };
    let mut entries = Vec::new();
    for (k, v) in map {
        let Some(raw_key) = scalar_to_string(&k) else {
            return Err(ConfigError::file(
                path,
                complex_key_line(text),
                "",
                format!("keys must be strings, found {}", describe(&k)),
            ));
        };
        let line = key_line(text, &raw_key);
        let (key, append) = match raw_key.strip_suffix('+') {
            Some(k) => (k.to_string(), true),
            None => (raw_key.clone(), false),
        };
        let (values, is_list) = match &v {
            serde_yaml::Value::Sequence(items) => {
                let mut out = Vec::new();
                for item in items {
                    match scalar_to_string(item) {
                        Some(s) => out.push(s),
                        None => {
                            return Err(ConfigError::file(
                                path,
                                line,
                                &key,
                                format!(
                                    "list elements must be strings, numbers or booleans, found {}",
                                    describe(item)
                                ),
                            ));
                        }
                    }
                }
                (out, true)
            }
            other => match scalar_to_string(other) {
                Some(s) => (vec![s], false),
                None => {
                    return Err(ConfigError::file(
                        path,
                        line,
                        &key,
                        format!(
                            "expected a string, number, boolean or list, found {}",
                            describe(other)
                        ),
                    ));
                }
            },
        };
        let item_lines = item_lines(text, line, values.len());
        entries.push(FileEntry {
            key,
            append,
            values,
            is_list,
            line,
            item_lines,
        });
    }
    Ok(entries)
}

/// The first top-level line whose key is not a plain scalar (`[a]: 1`, `{a: 1}: 2`, `? ...`).
fn complex_key_line(text: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with('[') || l.starts_with('{') || l.starts_with('?'))
        .map(|i| i + 1)
        .unwrap_or(1)
}

fn split_commas(shape: Shape, value: &str) -> Vec<String> {
    match shape {
        Shape::CommaList => value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => vec![value.to_string()],
    }
}

/// Reads and merges every source for `role`.
///
/// Precedence (lowest first): defaults < `RKE2_*` env < config file < drop-ins (name order)
/// < flags. Every source replaces what a lower one set, lists included: flags given for a list
/// key replace the files' whole list (RKE2's documented rule; accumulating put a second
/// `--node-ip` after the file's and made etcd bind the wrong address). Within one source list
/// elements accumulate, and `key+:` in a file appends to what earlier files set.
pub fn merge(sources: &ConfigSources, role: Role) -> Result<RawSettings, ConfigError> {
    check_explicit_config(sources)?;
    let mut out = RawSettings::default();

    // Environment variables.
    for setting in spec::SETTINGS.iter().filter(|s| s.roles.includes(role)) {
        let var = setting.env_var();
        if let Some(value) = sources.env.get(&var) {
            let origin = Origin::Env(var.clone());
            let raws = split_commas(setting.shape, value)
                .into_iter()
                .map(|value| Raw {
                    value,
                    origin: origin.clone(),
                })
                .collect();
            out.values.insert(setting.key, raws);
        }
    }

    // Config files. Track which keys were set by files so env values are replaced, not
    // appended to.
    let mut from_files: BTreeMap<&'static str, Vec<Raw>> = BTreeMap::new();
    for path in config_files(&sources.config_path())? {
        for entry in parse_file(&path)? {
            let origin = Origin::File {
                path: path.clone(),
                line: entry.line,
            };
            let Some(setting) = spec::find(&entry.key) else {
                let hint = suggest_key(&entry.key)
                    .map(|k| format!(" (did you mean \"{k}\"?)"))
                    .unwrap_or_default();
                out.warnings.push(format!(
                    "{}:{}: unknown key \"{}\", ignored{hint}",
                    path.display(),
                    entry.line,
                    entry.key
                ));
                continue;
            };
            if !setting.roles.includes(role) {
                out.warnings.push(format!(
                    "{}:{}: key \"{}\" is not used by rke2 {}, ignored",
                    path.display(),
                    entry.line,
                    entry.key,
                    role.as_str()
                ));
                continue;
            }
            if entry.key == "config" {
                continue;
            }
            if entry.is_list && matches!(setting.shape, Shape::Scalar | Shape::Bool) {
                return Err(ConfigError::at(
                    origin,
                    &entry.key,
                    "expected a single value, found a list".to_string(),
                ));
            }
            let mut raws = Vec::new();
            for (v, line) in entry.values.into_iter().zip(entry.item_lines) {
                let origin = Origin::File {
                    path: path.clone(),
                    line,
                };
                for value in split_commas(setting.shape, &v) {
                    raws.push(Raw {
                        value,
                        origin: origin.clone(),
                    });
                }
            }
            let slot = from_files.entry(setting.key).or_default();
            match setting.shape {
                Shape::List | Shape::CommaList if entry.append => slot.extend(raws),
                _ => *slot = raws,
            }
        }
    }
    for (k, v) in from_files {
        out.values.insert(k, v);
    }

    // Flags: scalars replace; the first flag of a list key replaces the env/file list, later
    // ones of the same key accumulate.
    let mut flag_lists_started: Vec<&'static str> = Vec::new();
    for (key, value) in &sources.flags {
        let Some(setting) = spec::find(key).filter(|s| s.roles.includes(role)) else {
            return Err(ConfigError::at(
                Origin::Flag(key.clone()),
                key,
                format!("unknown flag for rke2 {}", role.as_str()),
            ));
        };
        let origin = Origin::Flag(key.clone());
        let raws: Vec<Raw> = split_commas(setting.shape, value)
            .into_iter()
            .map(|value| Raw {
                value,
                origin: origin.clone(),
            })
            .collect();
        match setting.shape {
            Shape::List | Shape::CommaList => {
                let slot = out.values.entry(setting.key).or_default();
                if !flag_lists_started.contains(&setting.key) {
                    slot.clear();
                    flag_lists_started.push(setting.key);
                }
                slot.extend(raws);
            }
            Shape::Scalar | Shape::Bool => {
                out.values.insert(setting.key, raws);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    fn values(r: &RawSettings, key: &str) -> Vec<String> {
        r.values
            .get(key)
            .map(|v| v.iter().map(|r| r.value.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn dropins_override_and_append() {
        let d = tempfile::tempdir().unwrap();
        let main = write(
            d.path(),
            "config.yaml",
            "token: a\nnode-label:\n  - x=1\ntls-san: one,two\n",
        );
        write(
            d.path(),
            "config.yaml.d/10-b.yaml",
            "token: b\nnode-label+:\n  - y=2\n",
        );
        write(d.path(), "config.yaml.d/20-c.yml", "tls-san: [three]\n");
        write(d.path(), "config.yaml.d/ignored.txt", "token: zzz\n");
        let r = merge(
            &ConfigSources {
                config_file: Some(main),
                ..Default::default()
            },
            Role::Server,
        )
        .unwrap();
        assert_eq!(values(&r, "token"), vec!["b"]);
        assert_eq!(values(&r, "node-label"), vec!["x=1", "y=2"]);
        assert_eq!(values(&r, "tls-san"), vec!["three"]);
    }

    #[test]
    fn precedence_env_file_flag() {
        let d = tempfile::tempdir().unwrap();
        let main = write(
            d.path(),
            "config.yaml",
            "node-name: from-file\ntls-san: [f]\n",
        );
        let mut env = BTreeMap::new();
        env.insert("RKE2_NODE_NAME".into(), "from-env".into());
        env.insert("RKE2_DATA_DIR".into(), "/env/dir".into());
        env.insert("RKE2_TLS_SAN".into(), "e1,e2".into());
        let r = merge(
            &ConfigSources {
                config_file: Some(main),
                env,
                flags: vec![
                    ("node-name".into(), "from-flag".into()),
                    ("tls-san".into(), "cli".into()),
                ],
            },
            Role::Server,
        )
        .unwrap();
        assert_eq!(values(&r, "node-name"), vec!["from-flag"]);
        assert_eq!(values(&r, "data-dir"), vec!["/env/dir"]);
        assert_eq!(values(&r, "tls-san"), vec!["cli"]);
    }

    #[test]
    fn list_flags_replace_the_file_list() {
        let d = tempfile::tempdir().unwrap();
        let main = write(
            d.path(),
            "config.yaml",
            "node-ip: 127.0.0.1\nnode-label: [a=1]\n",
        );
        let r = merge(
            &ConfigSources {
                config_file: Some(main),
                flags: vec![
                    ("node-ip".into(), "127.0.0.2".into()),
                    ("node-label".into(), "b=2".into()),
                    ("node-label".into(), "c=3".into()),
                ],
                ..Default::default()
            },
            Role::Agent,
        )
        .unwrap();
        assert_eq!(values(&r, "node-ip"), vec!["127.0.0.2"]);
        assert_eq!(values(&r, "node-label"), vec!["b=2", "c=3"]);
    }

    #[test]
    fn explicit_config_file_must_exist() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope.yaml");
        let e = merge(
            &ConfigSources {
                config_file: Some(missing.clone()),
                ..Default::default()
            },
            Role::Server,
        )
        .unwrap_err();
        assert_eq!(e.origin, Origin::Flag("config".into()));
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("does not exist"), "{e}");
        let mut env = BTreeMap::new();
        env.insert("RKE2_CONFIG_FILE".into(), missing.display().to_string());
        let e = merge(
            &ConfigSources {
                env,
                ..Default::default()
            },
            Role::Agent,
        )
        .unwrap_err();
        assert_eq!(e.origin, Origin::Env("RKE2_CONFIG_FILE".into()));
    }

    #[test]
    fn unknown_keys_suggest_the_nearest_key() {
        assert_eq!(suggest_key("node-lable"), Some("node-label"));
        assert_eq!(suggest_key("tls-sans"), Some("tls-san"));
        assert_eq!(suggest_key("completely-different"), None);
        let d = tempfile::tempdir().unwrap();
        let main = write(d.path(), "config.yaml", "node-lable: [a=b]\n");
        let r = merge(
            &ConfigSources {
                config_file: Some(main),
                ..Default::default()
            },
            Role::Agent,
        )
        .unwrap();
        assert!(
            r.warnings[0].contains("did you mean \"node-label\"?"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn unknown_and_other_role_keys_warn_with_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let main = write(
            d.path(),
            "config.yaml",
            "token: a\nfoo-bar: 1\ntls-san: x\n",
        );
        let r = merge(
            &ConfigSources {
                config_file: Some(main.clone()),
                ..Default::default()
            },
            Role::Agent,
        )
        .unwrap();
        assert_eq!(r.warnings.len(), 2);
        assert!(r.warnings[0].contains(&format!("{}:2", main.display())));
        assert!(r.warnings[0].contains("foo-bar"));
        assert!(r.warnings[1].contains("tls-san"));
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let main = write(d.path(), "config.yaml", "token: a\nnode-label: [x\n");
        let e = merge(
            &ConfigSources {
                config_file: Some(main.clone()),
                ..Default::default()
            },
            Role::Server,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&main.display().to_string()), "{msg}");
        assert!(msg.contains("malformed YAML"), "{msg}");
    }

    #[test]
    fn nested_mapping_is_a_type_error_naming_key_and_line() {
        let d = tempfile::tempdir().unwrap();
        let main = write(d.path(), "config.yaml", "token: a\nnode-name:\n  x: 1\n");
        let e = merge(
            &ConfigSources {
                config_file: Some(main),
                ..Default::default()
            },
            Role::Server,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(":2:") && msg.contains("node-name"), "{msg}");
    }

    fn text_error(text: &[u8]) -> ConfigError {
        parse_config_text(Path::new("/etc/rke2/config.yaml"), text).unwrap_err()
    }

    fn line(e: &ConfigError) -> usize {
        match e.origin {
            Origin::File { line, .. } => line,
            ref other => panic!("not a file origin: {other:?}"),
        }
    }

    #[test]
    fn duplicate_key_names_the_second_occurrence() {
        let e = text_error(b"token: a\nnode-name: n\n\ntoken: b\n");
        assert_eq!((line(&e), e.key.as_str()), (4, "token"), "{e}");
        assert!(e.to_string().contains("duplicate key"), "{e}");
        let e = text_error(b"token: a\nnode-name:\n  c: 1\n  c: 2\n");
        assert_eq!((line(&e), e.key.as_str()), (4, "c"), "{e}");
    }

    #[test]
    fn second_document_is_named_at_its_marker() {
        let e = text_error(b"token: a\n---\nnode-name: n\n");
        assert_eq!(line(&e), 2, "{e}");
        assert!(e.to_string().contains("second YAML document"), "{e}");
        let e = text_error(b"# comment\n---\ntoken: a\n# x\n---\nnode-name: n\n");
        assert_eq!(line(&e), 5, "{e}");
        let e = text_error(b"token: a\n...\n\nnode-name: n\n");
        assert_eq!(line(&e), 4, "{e}");
    }

    #[test]
    fn non_utf8_names_the_line_of_the_bad_byte() {
        let e = text_error(b"token: a\nnode-name: n\nnode-label: caf\xe9\n");
        assert_eq!(line(&e), 3, "{e}");
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn alias_bomb_is_refused_at_the_first_alias() {
        let mut text = String::from("token: a\nx0: &x0 [a,a,a,a,a,a,a,a,a]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "x{i}: &x{i} [*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p}]\n"
            ));
        }
        let e = text_error(text.as_bytes());
        assert_eq!(line(&e), 3, "{e}");
        assert!(e.to_string().contains("alias"), "{e}");
    }

    #[test]
    fn errors_at_the_end_of_input_name_the_last_line() {
        // Found by tests/fuzz.rs (fuzz_config_yaml): serde_yaml said line 2 of a 1-line file.
        let e = text_error(b"[  !!str ");
        assert_eq!(line(&e), 1, "{e}");
        let e = text_error(b"token: a\nnode-label: [x\n");
        assert_eq!(line(&e), 2, "{e}");
    }

    #[test]
    fn non_string_keys_and_flow_mappings_have_lines() {
        let e = text_error(b"token: a\n[x]: 1\n");
        assert_eq!(line(&e), 2, "{e}");
        let entries =
            parse_config_text(Path::new("c.yaml"), b"# c\n{token: a, node-name: n}\n").unwrap();
        assert!(entries.iter().all(|e| e.line == 2), "{entries:?}");
    }
}
