//! Settings of the cluster operations: scheduled etcd snapshots (`etcd-snapshot-*`,
//! `etcd-disable-snapshots`) and cluster reset / restore (`cluster-reset`,
//! `cluster-reset-restore-path`), validated with RKE2's names, defaults and messages
//! (docs/operations.md §4).

use std::path::PathBuf;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::{ConfigError, Origin, Reader};

/// A 5-field cron expression (minute hour day-of-month month day-of-week, or a descriptor such
/// as `@daily`), as RKE2's scheduler (robfig/cron's standard parser) reads it.
#[derive(Clone)]
pub struct CronSchedule {
    text: String,
    cron: Cron,
}

/// The expression only: the parsed form's own `Debug` runs to thousands of lines.
impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CronSchedule").field(&self.text).finish()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronSchedule {
    /// Parses `text`; the error says what a valid expression looks like.
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && fields != 5 {
            return Err(format!(
                "invalid cron expression \"{text}\": expected 5 fields (minute hour day-of-month month day-of-week), got {fields}; e.g. \"0 */12 * * *\""
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| {
                format!(
                    "invalid cron expression \"{text}\": {e}; expected 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 */12 * * *\""
                )
            })?;
        Ok(CronSchedule {
            text: text.to_string(),
            cron,
        })
    }

    /// The expression as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first matching time strictly after `after`.
    pub fn next_after<Tz: chrono::TimeZone>(
        &self,
        after: &chrono::DateTime<Tz>,
    ) -> Option<chrono::DateTime<Tz>> {
        self.cron.find_next_occurrence(after, false).ok()
    }
}

/// Scheduled and on-demand etcd snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotConfig {
    /// `etcd-disable-snapshots`: no scheduled snapshots (on-demand ones still work).
    pub disabled: bool,
    /// Name prefix of scheduled snapshots (`etcd-snapshot-name`).
    pub name: String,
    pub schedule: CronSchedule,
    /// Snapshots kept per prefix and node (at least 1).
    pub retention: u32,
    /// `etcd-snapshot-dir`; `None` = `<data-dir>/server/db/snapshots`.
    pub dir: Option<PathBuf>,
    pub compress: bool,
}

/// `rke2 server --cluster-reset [--cluster-reset-restore-path=<snapshot>]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterReset {
    pub enabled: bool,
    /// A snapshot file, or the name of one in the snapshot directory.
    pub restore_path: Option<PathBuf>,
}

/// A snapshot name prefix: it becomes part of file names (and, in RKE2, of object names), so
/// lower-case letters, digits, `-` and `.` only.
pub fn parse_snapshot_name(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        || v.starts_with(['.', '-'])
    {
        return Err(format!(
            "invalid snapshot name \"{v}\": use lower-case letters, digits, '-' and '.', starting with a letter or digit"
        ));
    }
    Ok(v.to_string())
}

/// Parses `leaf-cert-validity`: a duration from 30 s (short lives are for exercising renewal)
/// up to the 10 years of the CAs, which no leaf may outlive.
pub fn parse_leaf_validity(v: &str) -> Result<std::time::Duration, String> {
    let d = super::parse_duration(v)?;
    if d < std::time::Duration::from_secs(30) || d > crate::pki::CA_VALIDITY {
        return Err(format!(
            "invalid leaf-cert-validity \"{}\": must be between 30s and 87600h (the CAs' lifetime)",
            v.trim()
        ));
    }
    Ok(d)
}

/// Parses a snapshot retention count (at least 1).
pub fn parse_retention(v: &str) -> Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("invalid retention \"{v}\": expected a whole number of at least 1"))
}

pub(super) fn snapshot_config(r: &Reader<'_>) -> Result<SnapshotConfig, ConfigError> {
    Ok(SnapshotConfig {
        disabled: r.bool("etcd-disable-snapshots")?,
        name: r.parse("etcd-snapshot-name", parse_snapshot_name)?,
        schedule: r.parse("etcd-snapshot-schedule-cron", CronSchedule::parse)?,
        retention: r.parse("etcd-snapshot-retention", parse_retention)?,
        dir: r.parse_opt("etcd-snapshot-dir", |v| Ok(PathBuf::from(v.trim())))?,
        compress: r.bool("etcd-snapshot-compress")?,
    })
}

/// Reads the reset settings; `server_set` refuses a reset of a joining server as RKE2 does.
pub(super) fn cluster_reset(r: &Reader<'_>, server_set: bool) -> Result<ClusterReset, ConfigError> {
    let enabled = r.bool("cluster-reset")?;
    let restore_path = r.parse_opt("cluster-reset-restore-path", |v| {
        Ok(PathBuf::from(v.trim()))
    })?;
    let origin = |key: &str| {
        r.last(key)
            .map(|x| x.origin.clone())
            .unwrap_or(Origin::Default)
    };
    if restore_path.is_some() && !enabled {
        return Err(ConfigError::at(
            origin("cluster-reset-restore-path"),
            "cluster-reset-restore-path",
            "Invalid flag use; --cluster-reset required with --cluster-reset-restore-path".into(),
        ));
    }
    if enabled && server_set {
        return Err(ConfigError::at(
            origin("server"),
            "cluster-reset",
            "cannot perform cluster-reset while server URL is set - remove server from configuration before resetting".into(),
        ));
    }
    Ok(ClusterReset {
        enabled,
        restore_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_like_robfig_standard() {
        let c = CronSchedule::parse("0 */12 * * *").unwrap();
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-01T05:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            c.next_after(&t).unwrap().to_rfc3339(),
            "2026-01-01T12:00:00+00:00"
        );
        assert!(CronSchedule::parse("* * * * *").is_ok());
        assert!(CronSchedule::parse("@daily").is_ok());
        let e = CronSchedule::parse("0 */12 * *").unwrap_err();
        assert!(e.contains("expected 5 fields"), "{e}");
        let e = CronSchedule::parse("0 25 * * *").unwrap_err();
        assert!(e.contains("invalid cron expression \"0 25 * * *\""), "{e}");
        assert!(CronSchedule::parse("0 0 * * * *").is_err());
        assert!(CronSchedule::parse("soon").is_err());
    }

    #[test]
    fn names_and_retention() {
        assert_eq!(
            parse_snapshot_name("etcd-snapshot").unwrap(),
            "etcd-snapshot"
        );
        assert!(parse_snapshot_name("a/b").is_err());
        assert!(parse_snapshot_name("..").is_err());
        assert!(parse_snapshot_name("Big").is_err());
        assert_eq!(parse_retention("5"), Ok(5));
        assert!(parse_retention("0").is_err());
        assert!(parse_retention("-1").is_err());
    }
}
