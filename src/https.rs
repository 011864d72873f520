//! HTTPS plumbing shared by the supervisor (9345), the API server (6443) and every client the
//! daemon uses: rustls server configs with optional client-certificate authentication, an accept
//! loop that hands each request the caller's certificate identity, and a small one-shot HTTPS
//! client (a fresh connection per request, so a dead server is never reused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// TLS handshake deadline for inbound connections.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad PEM data ({what}): {message}")]
    Pem { what: &'static str, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(String),
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

/// A server config presenting `cert_chain_pem`/`key_pem`. With `client_ca_pem`, client
/// certificates signed by that CA are verified when presented (and requests without one are
/// still accepted, to be answered 401 by the handler); certificates from another CA fail the
/// handshake.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder();
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots(ca)?))
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg =
        builder.with_single_cert(certs(cert_chain_pem, "serving certificate")?, key(key_pem)?)?;
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
}

fn identity_of(der: &CertificateDer<'_>) -> Option<CertIdentity> {
    let info = crate::pki::CertInfo::parse(der).ok()?;
    Some(CertIdentity {
        user: info.common_name,
        groups: info.organizations,
    })
}

/// Serves `router` with TLS on `listener` until `cancel` fires; each request carries a
/// [`ConnInfo`] extension.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    cancel: CancellationToken,
    component: &'static str,
) {
    let local = listener.local_addr().ok();
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
        let _ = tcp.set_nodelay(true);
        let cfg = tls.clone();
        let router = router.clone();
        let cancel = cancel.clone();
        let local = tcp.local_addr().ok().or(local).unwrap_or(remote);
        tokio::spawn(async move {
            let acceptor = TlsAcceptor::from(cfg);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(component, remote_addr = %remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(identity_of);
            let info = ConnInfo {
                remote,
                local,
                identity,
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    let mut router = router.clone();
                    async move {
                        use tower::Service;
                        router.call(req.map(axum::body::Body::new)).await
                    }
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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

/// A small HTTPS client. One connection per request.
#[derive(Clone)]
pub struct HttpsClient {
    tls: Arc<ClientConfig>,
    /// Verify the server certificate for this name instead of the URL host (used when the URL
    /// points at a local load balancer address that is not in the serving certificate).
    server_name: Option<String>,
    timeout: Duration,
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
        })
    }

    /// Verify the server certificate against `name` whatever address is dialled.
    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_string());
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
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let name = self.server_name.clone().unwrap_or_else(|| host.clone());
        let server_name =
            ServerName::try_from(name).map_err(|e| ClientError::Url(e.to_string()))?;
        let stream = TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| ClientError::Tls {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Request {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &addr)
            .header(
                http::header::USER_AGENT,
                concat!("rke2-rs/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Request {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Request {
                url: url.to_string(),
                message: e.to_string(),
            })?;
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
        Ok(Response {
            status,
            headers,
            body,
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
