//! What kubectl's `get` shows for a kind: the Table columns and the helpers that render cells
//! from an object, following the real apiserver's printers
//! (`pkg/printers/internalversion/printers.go`). Each kind's declaration names its columns and
//! its cell function; the Table envelope itself is built by the API server. Everything here
//! tolerates missing or mistyped fields, rendering Go's zero values and upstream placeholders.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// How one kind is printed: its columns, the cells of one object (always including the wide,
/// `priority: 1` ones: the server sends every column and kubectl hides the wide ones unless
/// `-o wide`), and optional row conditions.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub columns: &'static [Column],
    pub cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
    pub conditions: fn(&Value) -> Option<Value>,
}

/// Row conditions of kinds that have none.
pub fn no_conditions(_: &Value) -> Option<Value> {
    None
}

/// What the apiserver's default table convertor shows for kinds without a printer.
pub const GENERIC: Printer = Printer {
    columns: GENERIC_COLUMNS,
    cells: generic_cells,
    conditions: no_conditions,
};

fn generic_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        // Go formats the zero time when the timestamp is missing.
        created(obj)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
            .into(),
    ]
}

/// Kubernetes `duration.HumanDuration`: about two significant figures, e.g. `45s`, `5m12s`,
/// `3h`, `5h10m`, `2d`, `3d4h`, `400d`, `2y30d`, `9y`. Up to one second in the future counts as
/// `0s` (clock skew between servers); further in the future is `<invalid>`.
pub fn human_duration(d: Duration) -> String {
    // Go truncates `d.Seconds()` toward zero; `num_seconds` does the same.
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// One column of a Table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    /// OpenAPI type of the cells: `string`, `integer`, `date`...
    pub kind: &'static str,
    /// `name` marks the column holding the object name.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: u8,
}

pub const fn col(name: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind: "string",
        format: "",
        description,
        priority: 0,
    }
}

pub const fn wide(c: Column) -> Column {
    Column { priority: 1, ..c }
}

// Descriptions follow the upstream field documentation; kubectl ignores them, but other
// clients show them.
pub const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub const CREATED_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
pub const ADDRESSES_DESC: &str =
    "List of addresses reachable to the node. Queried from cloud provider, if available.";

pub const NAME: Column = Column {
    format: "name",
    ..col("Name", NAME_DESC)
};
pub const AGE: Column = col("Age", CREATED_DESC);

/// What the apiserver's default table convertor shows for kinds without a printer.
pub const GENERIC_COLUMNS: &[Column] = &[
    NAME,
    Column {
        kind: "date",
        ..col("Created At", CREATED_DESC)
    },
];

/// The string at a JSON pointer, or `""`.
pub fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The array at a JSON pointer, or an empty slice.
pub fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The integer at a JSON pointer, or 0.
pub fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Number of keys of the map at a JSON pointer (0 when absent).
pub fn object_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

pub fn name(obj: &Value) -> &str {
    text(obj, "/metadata/name")
}

/// A timestamp (`Time` or `MicroTime`); `None` for a missing, null, unparsable or zero time,
/// which Go's `IsZero` treats alike.
pub fn timestamp(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(v?.as_str()?).ok()?;
    let t = t.with_timezone(&Utc);
    (t != DateTime::<Utc>::MIN_UTC && t.timestamp() != GO_ZERO_TIME_UNIX).then_some(t)
}

/// `0001-01-01T00:00:00Z`, Go's zero `time.Time`, in Unix seconds.
pub const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

pub fn created(obj: &Value) -> Option<DateTime<Utc>> {
    timestamp(obj.pointer("/metadata/creationTimestamp"))
}

/// Upstream `translateTimestampSince`: `<unknown>` for a zero time.
pub fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

pub fn age(obj: &Value, now: DateTime<Utc>) -> String {
    since(created(obj), now)
}

pub fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() {
        placeholder.to_string()
    } else {
        s.to_string()
    }
}

/// Go's `net.JoinHostPort`: IPv6 literals get brackets.
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, or `<none>`.
pub fn format_labels(v: Option<&Value>) -> String {
    let pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            // serde_json maps are sorted by key unless `preserve_order` is on; sort anyway.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| format!("{k}={}", m[k].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}
