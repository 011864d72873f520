//! D-Bus errors of the rke2 service: every failure is answered as `io.rke2.Error.<Kind>` with a
//! human-readable message. [`kind_of`] maps the library's typed errors to a kind in one
//! exhaustive match (no catch-all arm), so a new error variant cannot silently become a
//! generic failure.

use zbus::DBusError;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

use crate::bootstrap::BootstrapError;
use crate::cluster::admin::AdminError;
use crate::cluster::encryption_stages::StageError;
use crate::cluster::token_ops::TokenOpError;
use crate::datastore::DatastoreError;
use crate::etcd::EtcdError;
use crate::etcd::snapshot::SnapshotError;
use crate::storage::ObjectError;

/// Prefix of every error name.
pub const ERROR_PREFIX: &str = "io.rke2.Error";

/// The error kinds of the API (the last element of the error name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The node or token does not exist.
    NotFound,
    /// An argument was refused (node name, label or taint syntax, TTL bounds...); nothing changed.
    InvalidArgument,
    /// The caller may not do this (mutations are root only).
    AccessDenied,
    /// The server is not ready yet (datastore or etcd unavailable); retry later.
    NotReady,
    /// The operation conflicts with the cluster's state (concurrent change, last etcd voter,
    /// duplicate).
    Conflict,
    /// Anything else; the message says what.
    Failed,
}

impl ErrorKind {
    /// The full D-Bus error name.
    pub fn error_name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "io.rke2.Error.NotFound",
            ErrorKind::InvalidArgument => "io.rke2.Error.InvalidArgument",
            ErrorKind::AccessDenied => "io.rke2.Error.AccessDenied",
            ErrorKind::NotReady => "io.rke2.Error.NotReady",
            ErrorKind::Conflict => "io.rke2.Error.Conflict",
            ErrorKind::Failed => "io.rke2.Error.Failed",
        }
    }
}

/// An error answered over the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.error_name(), self.message)
    }
}

impl std::error::Error for BusError {}

impl DBusError for BusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.kind.error_name()).build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.kind.error_name())
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

impl From<AdminError> for BusError {
    fn from(e: AdminError) -> Self {
        BusError {
            kind: kind_of(&e),
            message: e.to_string(),
        }
    }
}

impl From<zbus::Error> for BusError {
    fn from(e: zbus::Error) -> Self {
        BusError {
            kind: ErrorKind::Failed,
            message: e.to_string(),
        }
    }
}

/// The one mapping from library errors to D-Bus error kinds.
pub fn kind_of(e: &AdminError) -> ErrorKind {
    use ErrorKind as K;
    match e {
        AdminError::InvalidArgument(_) => K::InvalidArgument,
        AdminError::AccessDenied(_) => K::AccessDenied,
        AdminError::NotFound { .. } => K::NotFound,
        AdminError::NotReady => K::NotReady,
        AdminError::Object(o) => match o {
            ObjectError::NotFound { .. } => K::NotFound,
            ObjectError::AlreadyExists { .. }
            | ObjectError::Conflict { .. }
            | ObjectError::ConflictWith { .. } => K::Conflict,
            ObjectError::BadRequest(_) | ObjectError::Invalid { .. } => K::InvalidArgument,
            ObjectError::Corrupt { .. } => K::Failed,
            ObjectError::Datastore(d) => datastore_kind(d),
        },
        AdminError::Token(t) => match t {
            TokenOpError::Invalid(_) => K::InvalidArgument,
            TokenOpError::NotReady => K::NotReady,
            TokenOpError::Datastore(d) => datastore_kind(d),
            TokenOpError::Bootstrap(b) => match b {
                BootstrapError::EmptyToken => K::InvalidArgument,
                BootstrapError::Malformed(_)
                | BootstrapError::Json(_)
                | BootstrapError::Base64(_)
                | BootstrapError::WrongToken
                | BootstrapError::Missing(_)
                | BootstrapError::Io(_) => K::Failed,
            },
            TokenOpError::Io(_)
            | TokenOpError::Record(_)
            | TokenOpError::RecordJson(_)
            | TokenOpError::Passwd(_)
            | TokenOpError::Apply(_) => K::Failed,
            TokenOpError::Concurrent => K::Conflict,
        },
        AdminError::Snapshot(s) => match s {
            SnapshotError::NotFound { .. } => K::NotFound,
            SnapshotError::InvalidName { .. } | SnapshotError::NotASnapshot { .. } => {
                K::InvalidArgument
            }
            SnapshotError::Exists(_) => K::Conflict,
            SnapshotError::NotReady => K::NotReady,
            SnapshotError::Stream(_) | SnapshotError::Restore { .. } | SnapshotError::Io(_) => {
                K::Failed
            }
        },
        AdminError::Encryption(s) => match s {
            StageError::WrongStage { .. }
            | StageError::Already(_)
            | StageError::HashMismatch(_)
            | StageError::Concurrent => K::Conflict,
            StageError::NotReady => K::NotReady,
            StageError::Datastore(d) => datastore_kind(d),
            StageError::Missing
            | StageError::Unfinished(_)
            | StageError::Encryption(_)
            | StageError::Bootstrap(_)
            | StageError::Objects(_)
            | StageError::Apply(_) => K::Failed,
        },
        AdminError::Etcd(etcd) | AdminError::MemberRemoval { source: etcd, .. } => match etcd {
            EtcdError::LastVoter(_)
            | EtcdError::WouldLoseQuorum { .. }
            | EtcdError::DuplicateNodeName(_) => K::Conflict,
            EtcdError::Timeout
            | EtcdError::NoLeader
            | EtcdError::Learner
            | EtcdError::Removed(..) => K::NotReady,
            EtcdError::Client(_)
            | EtcdError::PeerTls(_)
            | EtcdError::PeerRequest(_)
            | EtcdError::Join(_)
            | EtcdError::BinaryNotFound(_)
            | EtcdError::Spawn { .. }
            | EtcdError::Io(_) => K::Failed,
        },
    }
}

fn datastore_kind(e: &DatastoreError) -> ErrorKind {
    match e {
        DatastoreError::Unavailable(_) | DatastoreError::Timeout => ErrorKind::NotReady,
        DatastoreError::Compacted { .. }
        | DatastoreError::Etcd(_)
        | DatastoreError::Corrupt { .. } => ErrorKind::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_get_their_names() {
        let cases: Vec<(AdminError, &str)> = vec![
            (
                AdminError::InvalidArgument("bad".into()),
                "io.rke2.Error.InvalidArgument",
            ),
            (
                AdminError::AccessDenied("no".into()),
                "io.rke2.Error.AccessDenied",
            ),
            (
                AdminError::NotFound {
                    what: "node",
                    name: "x".into(),
                },
                "io.rke2.Error.NotFound",
            ),
            (AdminError::NotReady, "io.rke2.Error.NotReady"),
            (
                AdminError::Etcd(EtcdError::LastVoter("s1".into())),
                "io.rke2.Error.Conflict",
            ),
            (
                AdminError::Object(ObjectError::AlreadyExists {
                    resource: "secrets".into(),
                    name: "x".into(),
                }),
                "io.rke2.Error.Conflict",
            ),
            (
                AdminError::Token(TokenOpError::Invalid(crate::token::TokenError::Empty)),
                "io.rke2.Error.InvalidArgument",
            ),
        ];
        for (e, name) in cases {
            let b = BusError::from(e);
            assert_eq!(b.kind.error_name(), name);
            assert_eq!(DBusError::name(&b).as_str(), name);
            assert!(b.kind.error_name().starts_with(ERROR_PREFIX));
        }
    }
}
