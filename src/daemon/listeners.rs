//! Socket activation (docs/architecture.md §4.1): listeners handed over by systemd are taken **by
//! name** (`FileDescriptorName=supervisor` / `apiserver`; their order is not stable), each exactly
//! once; listeners that were not handed over are bound by the daemon itself. Unknown or extra
//! descriptors are closed with a warning.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// fd name of the supervisor (9345) listener.
pub const SUPERVISOR: &str = "supervisor";
/// fd name of the Kubernetes API (6443) listener.
pub const APISERVER: &str = "apiserver";

/// Errors taking or binding listeners.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("inherited socket \"{name}\" (fd {fd}) is not a listening TCP socket")]
    NotAListener { name: String, fd: RawFd },
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("socket activation: {0}")]
    Env(std::io::Error),
}

/// Listeners passed by the service manager, by name.
#[derive(Debug, Default)]
pub struct InheritedListeners {
    by_name: BTreeMap<String, std::net::TcpListener>,
}

impl InheritedListeners {
    /// Takes the descriptors from `LISTEN_FDS`/`LISTEN_FDNAMES` (only when `LISTEN_PID` is this
    /// process). Call once, early. Descriptors with names other than `expected` are closed with
    /// a warning; a second descriptor with the same name is closed too.
    pub fn take(expected: &[&str]) -> Result<InheritedListeners, ListenerError> {
        let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
            .map_err(ListenerError::Env)?
            .collect();
        let mut by_name = BTreeMap::new();
        for (fd, name) in fds {
            // SAFETY: sd_notify returned this fd from LISTEN_FDS, verified LISTEN_PID is this
            // process, and set CLOEXEC; the service manager passed it to us to own, and this is
            // the only place that wraps it, exactly once.
            #[allow(unsafe_code)]
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            if !expected.contains(&name.as_str()) {
                tracing::warn!(
                    component = "daemon",
                    fd,
                    "closing inherited socket with unknown name \"{name}\""
                );
                continue;
            }
            if by_name.contains_key(&name) {
                tracing::warn!(
                    component = "daemon",
                    fd,
                    "closing extra inherited socket named \"{name}\""
                );
                continue;
            }
            let is_listening_tcp = rustix::net::sockopt::socket_acceptconn(&owned).unwrap_or(false)
                && matches!(
                    rustix::net::getsockname(&owned),
                    Ok(a) if matches!(a.address_family(), rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6)
                );
            if !is_listening_tcp {
                return Err(ListenerError::NotAListener { name, fd });
            }
            let listener = std::net::TcpListener::from(owned);
            listener.set_nonblocking(true).map_err(ListenerError::Env)?;
            tracing::info!(
                component = "daemon",
                "using socket-activated listener \"{name}\" on {}",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            by_name.insert(name, listener);
        }
        Ok(InheritedListeners { by_name })
    }

    /// The inherited listener named `name`, or a new one bound to `addr`.
    pub fn take_or_bind(
        &mut self,
        name: &'static str,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, ListenerError> {
        let std_listener = match self.by_name.remove(name) {
            Some(l) => l,
            None => {
                let l = bind_reuse(addr).map_err(|source| ListenerError::Bind {
                    name,
                    addr,
                    source,
                })?;
                tracing::info!(component = "daemon", "listening for {name} on {addr}");
                l
            }
        };
        tokio::net::TcpListener::from_std(std_listener).map_err(ListenerError::Env)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Binds with SO_REUSEADDR so a restart does not wait for TIME_WAIT sockets.
fn bind_reuse(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let l = socket.listen(1024)?;
    l.into_std()
}
