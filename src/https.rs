//! HTTPS plumbing shared by the supervisor (9345), the API server (6443) and every client the
//! daemon uses: rustls server configs with optional client-certificate authentication, an accept
//! loop that hands each request the caller's certificate identity, and a small one-shot HTTPS
//! client (a fresh connection per request, so a dead server is never reused, unless a caller
//! opts into [`HttpsClient::with_keep_alive`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// Limits every inbound connection on 6443 and 9345 lives under (docs/limits.md): no client
/// may hold a connection, a task or memory for long without completing requests.
pub mod limits {
    use std::time::Duration;

    /// TLS handshake deadline: a TCP connection that never sends a ClientHello is closed.
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Deadline for a request's headers, counted from when the connection is ready for the
    /// next request, so it is also the idle keep-alive timeout.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// The same deadline for connections whose client certificate verified: kube-apiserver's
    /// idle timeout (90 s). Agents renew their Lease every 10 s over one kept-alive connection;
    /// with the 10 s deadline a renewal arriving a moment late found it closed and paid a new
    /// handshake (docs/scale.md). A certificate holder is accountable, so the slow-header
    /// protection can be looser for it.
    pub const AUTHENTICATED_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    /// Deadline for a whole request body once its headers arrived (3 MiB at 50 KiB/s).
    pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
    /// Largest body either port accepts (upstream's `MaxRequestBodyBytes`); a larger
    /// `Content-Length` is refused before any of the body is read. Routers enforce their own,
    /// smaller caps on what they actually read.
    pub const MAX_REQUEST_BODY: u64 = 3 * 1024 * 1024;
    /// Our header limits, answered with Status objects. Hyper's own limits are set above them
    /// ([`HYPER_MAX_HEADERS`], and its 64 KiB URI and ~400 KiB buffer limits) so that hyper's
    /// body-less 414/431 replies only meet requests far beyond ours.
    pub const MAX_HEADERS: usize = 100;
    pub const MAX_HEADER_BYTES: usize = 128 * 1024;
    pub const MAX_URI_BYTES: usize = 32 * 1024;
    pub const HYPER_MAX_HEADERS: usize = 200;
    /// Connections one client address may hold while unauthenticated: from `accept` until the
    /// handshake verified a client certificate or a request on the connection authenticated
    /// (a router calls [`super::Unauthenticated::authenticated`]). Further connections wait
    /// for a slot (below).
    pub const MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 64;
    /// Connections of one address that may wait for one of its unauthenticated slots, each at
    /// most [`HANDSHAKE_TIMEOUT`]; more are closed right after `accept`. A fleet behind a load
    /// balancer that hides client addresses arrives from one address: its registrations queue
    /// here instead of being refused.
    pub const MAX_WAITING_PER_ADDRESS: usize = 1024;
}

/// A minimal Kubernetes `Status` response: both ports answer every error with one.
pub fn status_response(
    code: http::StatusCode,
    reason: &str,
    message: &str,
) -> http::Response<axum::body::Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut resp = http::Response::new(axum::body::Body::from(body.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Installs a panic hook that logs one line (thread, location, message) through tracing
/// instead of the default multi-line report; request handlers' panics are also caught by
/// [`serve`] and answered 500, so one bad request costs one log line.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string payload)".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            component = "panic",
            thread = thread.name().unwrap_or("unnamed"),
            location,
            "panic: {}",
            message.replace('\n', " ")
        );
    }));
}

/// Counts unauthenticated connections per client address, and the connections waiting for one
/// of its slots (docs/limits.md).
#[derive(Debug, Default)]
struct AddressSlots {
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, AddressCount>>,
    /// Signalled whenever a slot is released, for the connections waiting for one.
    released: tokio::sync::Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct AddressCount {
    held: usize,
    waiting: usize,
}

/// One held slot; released on drop.
#[derive(Debug)]
struct Slot {
    slots: Arc<AddressSlots>,
    ip: std::net::IpAddr,
}

/// A connection's place among those waiting for a slot of its address; given up on drop.
struct WaitTicket {
    slots: Arc<AddressSlots>,
    ip: std::net::IpAddr,
}

/// What [`AddressSlots::admit`] decided for a new connection.
enum Admission {
    Now(Slot),
    Wait(WaitTicket),
    Refused,
}

impl AddressSlots {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, AddressCount>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<Slot> {
        let mut counts = self.lock();
        let n = counts.entry(ip).or_default();
        if n.held >= max {
            if n.held == 0 && n.waiting == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        n.held += 1;
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }

    /// A slot now, a place in the address's queue (at most `max_waiting`), or neither.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr, max: usize, max_waiting: usize) -> Admission {
        if let Some(slot) = self.acquire(ip, max) {
            return Admission::Now(slot);
        }
        let mut counts = self.lock();
        let n = counts.entry(ip).or_default();
        if n.waiting >= max_waiting {
            return Admission::Refused;
        }
        n.waiting += 1;
        Admission::Wait(WaitTicket {
            slots: self.clone(),
            ip,
        })
    }

    /// Waits for a slot of the ticket's address until `deadline`; `None` when none came free.
    async fn wait(
        self: &Arc<Self>,
        ticket: WaitTicket,
        max: usize,
        deadline: tokio::time::Instant,
    ) -> Option<Slot> {
        loop {
            // Registered before trying, so a release between the try and the wait is not lost.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(slot) = self.acquire(ticket.ip, max) {
                drop(ticket);
                return Some(slot);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }

    fn release(&self, ip: std::net::IpAddr, held: usize, waiting: usize) {
        let mut counts = self.lock();
        if let Some(n) = counts.get_mut(&ip) {
            n.held -= held;
            n.waiting -= waiting;
            if n.held == 0 && n.waiting == 0 {
                counts.remove(&ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.ip, 1, 0);
        self.slots.released.notify_waiters();
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        self.slots.release(self.ip, 0, 1);
    }
}

/// A connection's slot among its address's unauthenticated connections, shared by the requests
/// on it: the first request whose credentials a router accepted releases it
/// ([`Unauthenticated::authenticated`]).
#[derive(Debug, Clone, Default)]
pub struct Unauthenticated(Arc<std::sync::Mutex<Option<Slot>>>);

impl Unauthenticated {
    fn holding(slot: Slot) -> Unauthenticated {
        Unauthenticated(Arc::new(std::sync::Mutex::new(Some(slot))))
    }

    /// The connection proved who it is (basic auth with a token, a bootstrap token): it no
    /// longer counts against its address.
    pub fn authenticated(&self) {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(slot);
    }
}

/// A request body that fails once [`limits::BODY_READ_TIMEOUT`] has passed since its headers,
/// so a client announcing a body and sending it slowly (or never) cannot hold a handler.
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimeout(Duration);

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(BodyTimeout(limits::BODY_READ_TIMEOUT).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Refusals decided from the request head alone, before the router sees it.
fn check_head(
    req: &hyper::Request<hyper::body::Incoming>,
) -> Option<http::Response<axum::body::Body>> {
    use http::StatusCode;
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits::MAX_URI_BYTES {
        return Some(status_response(
            StatusCode::URI_TOO_LONG,
            "RequestURITooLong",
            &format!(
                "the request URI is {uri_len} bytes long; at most {} are accepted",
                limits::MAX_URI_BYTES
            ),
        ));
    }
    let headers = req.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > limits::MAX_HEADERS || header_bytes > limits::MAX_HEADER_BYTES {
        return Some(status_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLarge",
            &format!(
                "the request has {} header fields ({header_bytes} bytes); at most {} fields and {} bytes are accepted",
                headers.len(),
                limits::MAX_HEADERS,
                limits::MAX_HEADER_BYTES
            ),
        ));
    }
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = length.filter(|l| *l > limits::MAX_REQUEST_BODY) {
        let mut resp = status_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!(
                "the request body of {length} bytes is larger than {} bytes",
                limits::MAX_REQUEST_BODY
            ),
        );
        // The body will not be read: the connection cannot carry another request.
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Some(resp);
    }
    None
}

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad PEM data ({what}): {message}")]
    Pem { what: &'static str, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "private key",
        message: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(ca_pem, "CA bundle")? {
        store.add(c)?;
    }
    Ok(store)
}

/// A certificate and key that can be swapped while listeners and clients use it: every new
/// handshake takes whatever the slot holds then, so a renewed certificate is served (or
/// presented) without a restart; connections already open keep the one they started with.
pub struct CertSlot {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl std::fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CertSlot").finish_non_exhaustive()
    }
}

fn certified_key(
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let chain = certs(cert_chain_pem, "certificate")?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key(key_pem)?)?;
    let ck = rustls::sign::CertifiedKey::new(chain, key);
    // A certificate read together with another one's key (files caught mid-renewal) is refused.
    ck.keys_match()?;
    Ok(Arc::new(ck))
}

impl CertSlot {
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Arc<CertSlot>, TlsError> {
        Ok(Arc::new(CertSlot {
            current: std::sync::RwLock::new(certified_key(cert_chain_pem, key_pem)?),
        }))
    }

    /// Puts a new certificate in place; a bad one leaves the old in place.
    pub fn replace_pem(&self, cert_chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let new = certified_key(cert_chain_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn get(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for CertSlot {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for CertSlot {
    fn resolve(
        &self,
        _: &[&[u8]],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let ck = self.get();
        ck.key.choose_scheme(schemes).is_some().then_some(ck)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server config presenting `cert_chain_pem`/`key_pem` (see [`server_config_with`]).
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(CertSlot::from_pem(cert_chain_pem, key_pem)?, client_ca_pem)
}

/// A server config presenting what `slot` holds at each handshake. With `client_ca_pem` (a
/// bundle: during a CA rotation it holds the old and the new CA), client certificates signed by
/// one of those CAs are verified when presented (and requests without one are still accepted,
/// to be answered 401 by the handler); certificates from another CA fail the handshake.
pub fn server_config_with(
    slot: Arc<CertSlot>,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder();
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots(ca)?))
                .allow_unauthenticated()
                .build()
                .map_err(TlsError::Verifier)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(slot);
    // HTTP/1.1 only: kubectl has been verified with it (docs/kubernetes-api.md §A.11).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Who is calling, from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// Subject CN.
    pub user: String,
    /// Subject O values.
    pub groups: Vec<String>,
}

/// Per-connection facts every request gets as an extension.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub identity: Option<CertIdentity>,
    /// The connection's unauthenticated slot, if it still holds one.
    pub unauthenticated: Unauthenticated,
}

fn identity_of(der: &CertificateDer<'_>) -> Option<CertIdentity> {
    let info = crate::pki::CertInfo::parse(der).ok()?;
    Some(CertIdentity {
        user: info.common_name,
        groups: info.organizations,
    })
}

/// Serves `router` with TLS on `listener` until `cancel` fires; each request carries a
/// [`ConnInfo`] extension. Every connection lives under [`limits`]; a panic in the router
/// becomes a 500 Status (logged once by the panic hook), never a dropped connection.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    cancel: CancellationToken,
    component: &'static str,
) {
    let local = listener.local_addr().ok();
    let slots = Arc::new(AddressSlots::default());
    let builder = |header_read_timeout| {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_headers(limits::HYPER_MAX_HEADERS);
        Arc::new(http)
    };
    // Hyper's header deadline also runs while a kept-alive connection waits for its next
    // request, so it is the idle timeout too: short for anonymous clients, kube-apiserver's
    // for verified certificate holders.
    let http = builder(limits::HEADER_READ_TIMEOUT);
    let http_verified = builder(limits::AUTHENTICATED_IDLE_TIMEOUT);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(component, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        };
        let admission = slots.admit(
            remote.ip(),
            limits::MAX_UNAUTHENTICATED_PER_ADDRESS,
            limits::MAX_WAITING_PER_ADDRESS,
        );
        if matches!(admission, Admission::Refused) {
            tracing::debug!(
                component,
                remote_addr = %remote,
                "closing a connection: too many unauthenticated connections from this address"
            );
            continue;
        }
        let slots = slots.clone();
        let _ = tcp.set_nodelay(true);
        let cfg = tls.clone();
        let router = router.clone();
        let cancel = cancel.clone();
        let (http, http_verified) = (http.clone(), http_verified.clone());
        let local = tcp.local_addr().ok().or(local).unwrap_or(remote);
        tokio::spawn(async move {
            let slot = match admission {
                Admission::Now(slot) => slot,
                Admission::Wait(ticket) => {
                    let deadline = tokio::time::Instant::now() + limits::HANDSHAKE_TIMEOUT;
                    let waited = tokio::select! {
                        _ = cancel.cancelled() => return,
                        s = slots.wait(ticket, limits::MAX_UNAUTHENTICATED_PER_ADDRESS, deadline) => s,
                    };
                    let Some(slot) = waited else {
                        tracing::debug!(component, remote_addr = %remote,
                            "closing a connection: no unauthenticated slot of its address came free");
                        return;
                    };
                    slot
                }
                Admission::Refused => return,
            };
            let acceptor = TlsAcceptor::from(cfg);
            let handshake = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(limits::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
            };
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(component, remote_addr = %remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(component, remote_addr = %remote, "TLS handshake timed out");
                    return;
                }
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(identity_of);
            // Verified certificate holders no longer count against their address; others do
            // until a request authenticates.
            let verified = identity.is_some();
            let unauthenticated = if identity.is_some() {
                drop(slot);
                Unauthenticated::default()
            } else {
                Unauthenticated::holding(slot)
            };
            let info = ConnInfo {
                remote,
                local,
                identity,
                unauthenticated,
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let refused = check_head(&req);
                    req.extensions_mut().insert(info.clone());
                    let mut router = router.clone();
                    async move {
                        use futures_util::FutureExt as _;
                        use tower::Service;
                        if let Some(resp) = refused {
                            return Ok::<_, std::convert::Infallible>(resp);
                        }
                        let req = req.map(|inner| {
                            axum::body::Body::new(DeadlineBody {
                                inner,
                                deadline: Box::pin(tokio::time::sleep(limits::BODY_READ_TIMEOUT)),
                            })
                        });
                        let call = std::panic::AssertUnwindSafe(router.call(req));
                        match call.catch_unwind().await {
                            Ok(Ok(resp)) => Ok(resp),
                            Ok(Err(never)) => match never {},
                            // The hook logged the panic; the client gets a Status, and nothing
                            // the handler held outlives it (it is dropped with the future).
                            Err(_) => Ok(status_response(
                                http::StatusCode::INTERNAL_SERVER_ERROR,
                                "InternalError",
                                "an internal error occurred while handling the request",
                            )),
                        }
                    }
                },
            );
            let http = if verified { http_verified } else { http };
            let conn = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

/// How a client verifies the server.
#[derive(Clone)]
pub enum ServerTrust {
    /// Trust only this CA bundle (PEM).
    Ca(String),
    /// Accept any certificate: only for fetching `/cacerts`, whose body is then checked
    /// against the token's CA hash before anything else is sent.
    InsecureForCaFetch,
}

/// A client identity (certificate chain + key PEM).
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Errors of outgoing requests.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("invalid TLS server name {name}: {source}")]
    ServerName {
        name: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("TLS with {addr} failed: {message}")]
    Tls { addr: String, message: String },
    #[error("request to {url} failed: {message}")]
    Request { url: String, message: String },
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error(transparent)]
    Setup(#[from] TlsError),
}

/// A response with its body read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The Kubernetes `Status.message` of an error body, else the body text.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| self.text().trim().to_string())
    }
}

/// Largest response body a client reads.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Idle keep-alive connections of a [`HttpsClient::with_keep_alive`] client, by address.
type Pool =
    Arc<std::sync::Mutex<Vec<(String, hyper::client::conn::http1::SendRequest<Full<Bytes>>)>>>;

/// How many idle connections a keep-alive client keeps.
const MAX_IDLE: usize = 8;

/// A small HTTPS client. One connection per request, or pooled keep-alive connections.
#[derive(Clone)]
pub struct HttpsClient {
    tls: Arc<ClientConfig>,
    /// Verify the server certificate for this name instead of the URL host (used when the URL
    /// points at a local load balancer address that is not in the serving certificate).
    server_name: Option<String>,
    timeout: Duration,
    pool: Option<Pool>,
}

impl HttpsClient {
    pub fn new(
        trust: &ServerTrust,
        identity: Option<&ClientIdentity>,
        timeout: Duration,
    ) -> Result<HttpsClient, TlsError> {
        let builder = match trust {
            ServerTrust::Ca(ca) => ClientConfig::builder().with_root_certificates(roots(ca)?),
            ServerTrust::InsecureForCaFetch => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
            }
        };
        let mut cfg = match identity {
            Some(id) => builder.with_client_auth_cert(
                certs(&id.cert_pem, "client certificate")?,
                key(&id.key_pem)?,
            )?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpsClient {
            tls: Arc::new(cfg),
            server_name: None,
            timeout,
            pool: None,
        })
    }

    /// Present what `slot` holds at each connection (instead of a fixed identity), so a
    /// renewed client certificate is used without rebuilding the client.
    pub fn with_client_cert_slot(mut self, slot: Arc<CertSlot>) -> Self {
        let mut cfg = (*self.tls).clone();
        cfg.client_auth_cert_resolver = slot;
        self.tls = Arc::new(cfg);
        self
    }

    /// Verify the server certificate against `name` whatever address is dialled.
    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_string());
        self
    }

    /// Keep connections open and reuse them for later [`HttpsClient::request`]s (clones share
    /// the pool), sparing a TCP + TLS handshake per request for a client that talks to one
    /// server all the time (the node runtime). A closed connection is never reused; a request
    /// that fails on a reused connection before any answer is sent once more on a fresh one
    /// (callers using this send idempotent requests or tolerate a repeat, like events).
    pub fn with_keep_alive(mut self) -> Self {
        self.pool = Some(Pool::default());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        tokio::time::timeout(self.timeout, self.request_inner(method, url, headers, body))
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
            })?
    }

    async fn request_inner(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let (resp, reuse) = match self.send_pooled(&method, url, headers, &body).await {
            Some(Ok(pooled)) => pooled,
            // Nothing pooled, or the pooled connection failed: a fresh one.
            Some(Err(_)) | None => self.send_on_new(method, url, headers, body).await?,
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Request {
                url: url.to_string(),
                message: e.to_string(),
            })?
            .to_bytes();
        if let (Some(pool), Some((key, sender))) = (&self.pool, reuse)
            && !sender.is_closed()
        {
            let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push((key, sender));
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Sends on an idle pooled connection to the URL's address, if there is one.
    async fn send_pooled(
        &self,
        method: &http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: &Option<Vec<u8>>,
    ) -> Option<Result<PooledResponse, ClientError>> {
        let pool = self.pool.as_ref()?;
        let target = self.target(url).ok()?;
        let mut sender = loop {
            let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
            let i = idle.iter().position(|(k, _)| *k == target.key)?;
            let (_, sender) = idle.swap_remove(i);
            if !sender.is_closed() {
                break sender;
            }
        };
        if sender.ready().await.is_err() {
            return Some(Err(ClientError::Request {
                url: url.to_string(),
                message: "pooled connection closed".into(),
            }));
        }
        let req = match target.request(method.clone(), headers, body.clone()) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        Some(
            sender
                .send_request(req)
                .await
                .map(|resp| (resp, Some((target.key, sender))))
                .map_err(|e| ClientError::Request {
                    url: url.to_string(),
                    message: e.to_string(),
                }),
        )
    }

    /// Sends one request and returns the status and the body as it arrives (for watches): the
    /// timeout covers the response head only, the body may stream for as long as the server
    /// keeps it open.
    pub async fn stream(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<(u16, hyper::body::Incoming), ClientError> {
        let resp = tokio::time::timeout(self.timeout, self.send(method, url, headers, None))
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
            })??;
        Ok((resp.status().as_u16(), resp.into_body()))
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        Ok(self.send_on_new(method, url, headers, body).await?.0)
    }

    fn target(&self, url: &str) -> Result<Target, ClientError> {
        let uri: http::Uri = url.parse().map_err(|_| ClientError::Url(url.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::Url(format!(
                "{url}: only https:// is supported"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url(url.to_string()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let name = self.server_name.clone().unwrap_or_else(|| host.clone());
        Ok(Target {
            key: format!("{addr}/{name}"),
            url: url.to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
            addr,
            name,
        })
    }

    /// Opens the TLS connection a request to `url` goes over (verified as for any request), with
    /// the `host:port` the request's Host header names; for callers that speak HTTP on it
    /// themselves (upgrades to a streaming protocol).
    pub async fn connect(
        &self,
        url: &str,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, String), ClientError> {
        let target = self.target(url)?;
        let stream = self.connect_to(&target).await?;
        Ok((stream, target.addr))
    }

    /// TCP, then TLS verified against the target's name.
    async fn connect_to(
        &self,
        target: &Target,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let addr = target.addr.clone();
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let name = target.name.clone();
        let server_name = ServerName::try_from(name.clone())
            .map_err(|source| ClientError::ServerName { name, source })?;
        TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| ClientError::Tls {
                addr,
                message: e.to_string(),
            })
    }

    /// Sends on a new connection; returns the sender too when the client pools connections.
    async fn send_on_new(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<PooledResponse, ClientError> {
        let target = self.target(url)?;
        let stream = self.connect_to(&target).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Request {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = target.request(method, headers, body)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Request {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let reuse = self.pool.is_some().then_some((target.key, sender));
        Ok((resp, reuse))
    }
}

/// A response and, for a pooling client, the connection to give back once its body is read.
type PooledResponse = (
    hyper::Response<hyper::body::Incoming>,
    Option<(String, hyper::client::conn::http1::SendRequest<Full<Bytes>>)>,
);

/// Where a request goes: address, TLS name, path (and the pool key of the first two).
struct Target {
    key: String,
    url: String,
    addr: String,
    name: String,
    path: String,
}

impl Target {
    fn request(
        &self,
        method: http::Method,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(self.path.as_str())
            .header(http::header::HOST, &self.addr)
            .header(
                http::header::USER_AGENT,
                concat!("rke2-rs/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Request {
                url: self.url.clone(),
                message: e.to_string(),
            })
    }
}

/// `Authorization: Basic` header value.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, LeafSpec};

    /// A TLS server on 127.0.0.1 running `router` through [`serve`], and a client for it.
    async fn start(router: axum::Router) -> (SocketAddr, HttpsClient, CancellationToken) {
        let ca = CertAuthority::generate("test").unwrap();
        let (chain, key) = ca
            .issue_with_new_key(&LeafSpec::server("localhost", vec!["localhost".into()]))
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            server_config(&chain, &key, None).unwrap(),
            router,
            cancel.clone(),
            "test",
        ));
        let client = HttpsClient::new(
            &ServerTrust::Ca(ca.cert_pem.clone()),
            None,
            Duration::from_secs(10),
        )
        .unwrap()
        .with_server_name("localhost");
        (addr, client, cancel)
    }

    fn status_of(r: &Response) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!("{} is not JSON: {e}: {}", r.status, r.text());
        });
        assert_eq!(v["kind"], "Status", "{v}");
        assert_eq!(v["code"], r.status, "{v}");
        v
    }

    /// A panicking handler answers 500 with a Status, and the server keeps serving.
    #[tokio::test]
    async fn handler_panic_is_a_500_status() {
        use axum::routing::get;
        let router = axum::Router::new()
            .route(
                "/boom",
                get(|| async {
                    let v: Vec<u8> = Vec::new();
                    // An out-of-bounds index, like the slicing bug this guards against.
                    format!("{}", v[std::hint::black_box(3)])
                }),
            )
            .route("/ok", get(|| async { "ok" }));
        let (addr, client, cancel) = start(router).await;
        for _ in 0..3 {
            let r = client
                .request(
                    http::Method::GET,
                    &format!("https://{addr}/boom"),
                    &[],
                    None,
                )
                .await
                .unwrap();
            assert_eq!(r.status, 500);
            assert_eq!(status_of(&r)["reason"], "InternalError");
        }
        let r = client
            .request(http::Method::GET, &format!("https://{addr}/ok"), &[], None)
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        cancel.cancel();
    }

    /// A keep-alive client sends its requests over one connection (the server sees one client
    /// port); a plain client dials anew for each.
    #[tokio::test]
    async fn keep_alive_clients_reuse_their_connection() {
        use axum::routing::get;
        let router = axum::Router::new().route(
            "/port",
            get(|req: axum::extract::Request| async move {
                req.extensions()
                    .get::<ConnInfo>()
                    .map(|c| c.remote.port().to_string())
                    .unwrap_or_default()
            }),
        );
        let (addr, client, cancel) = start(router).await;
        let url = format!("https://{addr}/port");
        let ports = |c: HttpsClient| {
            let url = url.clone();
            async move {
                let mut out = Vec::new();
                for _ in 0..3 {
                    let r = c.request(http::Method::GET, &url, &[], None).await.unwrap();
                    assert_eq!(r.status, 200);
                    out.push(r.text());
                }
                out
            }
        };
        let pooled = ports(client.clone().with_keep_alive()).await;
        assert!(!pooled[0].is_empty());
        assert!(pooled.iter().all(|p| *p == pooled[0]), "{pooled:?}");
        let fresh = ports(client).await;
        assert!(fresh[0] != fresh[1] && fresh[1] != fresh[2], "{fresh:?}");
        cancel.cancel();
    }

    /// Our header, URI and Content-Length limits answer Status objects before the router runs.
    #[tokio::test]
    async fn head_limits_answer_status_objects() {
        use axum::routing::any;
        let router = axum::Router::new().fallback(any(|| async { "reached" }));
        let (addr, client, cancel) = start(router).await;
        let url = format!("https://{addr}/x");
        let many: Vec<(String, String)> = (0..limits::MAX_HEADERS + 5)
            .map(|i| (format!("x-h{i}"), "v".to_string()))
            .collect();
        let many: Vec<(&str, String)> = many.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let r = client
            .request(http::Method::GET, &url, &many, None)
            .await
            .unwrap();
        assert_eq!(r.status, 431);
        status_of(&r);
        let big = [("x-big", "v".repeat(limits::MAX_HEADER_BYTES))];
        let r = client
            .request(http::Method::GET, &url, &big, None)
            .await
            .unwrap();
        assert_eq!(r.status, 431);
        let long = format!("{url}?q={}", "a".repeat(limits::MAX_URI_BYTES));
        let r = client
            .request(http::Method::GET, &long, &[], None)
            .await
            .unwrap();
        assert_eq!(r.status, 414);
        status_of(&r);
        // A Content-Length beyond the cap is refused at once, with no body ever sent.
        let r = raw_request(
            addr,
            &client,
            "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        assert!(r.contains("\"reason\":\"RequestEntityTooLarge\""), "{r}");
        // Within the limits the router answers.
        let r = client
            .request(http::Method::GET, &url, &many[..10], None)
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "reached"));
        cancel.cancel();
    }

    /// Sends `head` over TLS and reads until the server closes or 10 s pass.
    async fn raw_request(addr: SocketAddr, client: &HttpsClient, head: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(client.tls.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn cert_slot_swaps_and_refuses_a_foreign_key() {
        let ca = crate::pki::CertAuthority::generate("t").unwrap();
        let spec = crate::pki::LeafSpec::server("a", vec!["localhost".into()]);
        let (c1, k1) = ca.issue_with_new_key(&spec).unwrap();
        let (c2, k2) = ca.issue_with_new_key(&spec).unwrap();
        let slot = CertSlot::from_pem(&c1, &k1).unwrap();
        let first = slot.get().cert[0].clone();
        // A certificate with another one's key (files caught mid-renewal) leaves the old one.
        assert!(slot.replace_pem(&c2, &k1).is_err());
        assert_eq!(slot.get().cert[0], first);
        slot.replace_pem(&c2, &k2).unwrap();
        assert_ne!(slot.get().cert[0], first);
    }

    #[test]
    fn address_slots_are_released() {
        let slots = Arc::new(AddressSlots::default());
        let ip: std::net::IpAddr = [127, 0, 0, 9].into();
        let held: Vec<Slot> = (0..3).map(|_| slots.acquire(ip, 3).unwrap()).collect();
        assert!(slots.acquire(ip, 3).is_none());
        assert!(slots.acquire([127, 0, 0, 10].into(), 3).is_some());
        drop(held);
        assert!(slots.acquire(ip, 3).is_some());
        assert!(slots.counts.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn excess_connections_wait_for_a_slot_then_are_refused() {
        let slots = Arc::new(AddressSlots::default());
        let ip: std::net::IpAddr = [127, 0, 0, 9].into();
        let Admission::Now(first) = slots.admit(ip, 1, 2) else {
            panic!("the first connection gets a slot");
        };
        let (Admission::Wait(a), Admission::Wait(b)) =
            (slots.admit(ip, 1, 2), slots.admit(ip, 1, 2))
        else {
            panic!("the next two wait");
        };
        assert!(matches!(slots.admit(ip, 1, 2), Admission::Refused));
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.wait(a, 1, far).await }
        });
        // Authenticating the first connection's request releases its slot to the waiter.
        let first = Unauthenticated::holding(first);
        first.authenticated();
        let second = waiter
            .await
            .unwrap()
            .expect("the waiter got the released slot");
        // With no slot coming free, a waiter gives up at its deadline.
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(slots.wait(b, 1, soon).await.is_none());
        drop(second);
        assert!(slots.counts.lock().unwrap().is_empty());
    }
}
