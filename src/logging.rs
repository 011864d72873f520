//! Logging setup: native journald entries (structured `RKE2_*` fields, PRIORITY from the level,
//! `SYSLOG_IDENTIFIER=rke2`) under systemd or when asked, readable stderr otherwise. If the
//! journal socket is missing, logging falls back to stderr with one warning.
//!
//! Secrets never reach a log field: tokens and passwords are [`crate::token::Secret`]s, whose
//! `Debug` is redacted, and no code logs key material.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of
/// the stream it gave us; it only counts if stderr is still that stream.
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr().as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// journald priorities for tracing levels. tracing-journald's default maps INFO to NOTICE (5)
/// and DEBUG to INFO (6); syslog convention, and `journalctl -p info` / `-p debug`, expect
/// informational messages at 6 and debugging at 7.
fn priorities() -> tracing_journald::PriorityMappings {
    use tracing_journald::Priority;
    tracing_journald::PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Where log events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Native journal entries.
    Journal,
    /// Human-readable lines on stderr.
    Stderr,
}

/// Installs the global subscriber. `journal_stream` is `$JOURNAL_STREAM`; `rust_log` is
/// `$RUST_LOG` (an env-filter directive overriding the default level).
pub fn init(
    format: LogFormat,
    debug: bool,
    journal_stream: Option<&str>,
    rust_log: Option<&str>,
) -> LogTarget {
    let default = if debug { "debug" } else { "info" };
    let filter = rust_log
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| {
            EnvFilter::new(format!(
                "{default},h2=info,hyper=info,tower=info,zbus=warn,tonic=info"
            ))
        });
    let want_journal = match format {
        LogFormat::Journald => true,
        LogFormat::Text => false,
        LogFormat::Auto => stderr_is_journal(journal_stream),
    };
    let journald = if want_journal {
        match tracing_journald::layer() {
            Ok(layer) => Some(
                layer
                    .with_field_prefix(Some("RKE2".into()))
                    .with_syslog_identifier("rke2".into())
                    .with_priority_mappings(priorities()),
            ),
            Err(e) => {
                // Falls back to stderr; reported once below, after the subscriber exists.
                let _ = e;
                None
            }
        }
    } else {
        None
    };
    let fallback = want_journal && journald.is_none();
    let journald_used = journald.is_some();
    let stderr_layer = if journald.is_none() {
        Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a person at a terminal, never in log files or pipes.
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr_layer)
        .try_init();
    if fallback {
        tracing::warn!(
            component = "logging",
            "the journal socket /run/systemd/journal/socket is not available; logging to stderr"
        );
    }
    if journald_used {
        LogTarget::Journal
    } else {
        LogTarget::Stderr
    }
}
