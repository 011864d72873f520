//! The DNS server: hickory-server's UDP and TCP front end with a request handler that answers
//! every question from the in-memory [`Records`] (docs/dns.md). Sockets are bound with
//! SO_REUSEPORT, so every node sharing a network namespace (test clusters) serves the same
//! address, and IP_FREEBIND, so binding does not race the local route that makes the address
//! local.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::records::Records;

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// The largest UDP answer offered to EDNS clients, in bytes (the common safe size).
const EDNS_PAYLOAD: u16 = 1232;

/// Answers questions from the shared records.
pub struct Handler {
    records: Arc<RwLock<Records>>,
}

impl Handler {
    pub fn new(records: Arc<RwLock<Records>>) -> Handler {
        Handler { records }
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e
        });
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let code = if request.metadata.message_type != MessageType::Query {
            Some(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else {
            None
        };
        let info = match (code, request.request_info()) {
            (None, Ok(info)) => info,
            (code, _) => {
                let code = code.unwrap_or(ResponseCode::FormErr);
                let msg = builder.error_msg(&request.metadata, code);
                return response
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| failed(request, code));
            }
        };
        let name = hickory_proto::rr::Name::from(info.query.name());
        let answer = self
            .records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .answer(&name, info.query.query_type());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = answer.code != ResponseCode::Refused;
        metadata.response_code = answer.code;
        let msg = builder.build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            answer.authority.iter(),
            answer.additionals.iter(),
        );
        response
            .send_response(msg)
            .await
            .unwrap_or_else(|_| failed(request, ResponseCode::ServFail))
    }
}

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    match addr {
        SocketAddr::V4(_) => s.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_freebind_v6(true)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Binds UDP and TCP on `addr` (shared with other processes doing the same) and serves until
/// `cancel`. Returns once both sockets are bound, with the task that serves them.
pub fn serve(
    addr: SocketAddr,
    records: Arc<RwLock<Records>>,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let udp = socket(addr, Type::DGRAM, Protocol::UDP)?;
    let tcp = socket(addr, Type::STREAM, Protocol::TCP)?;
    tcp.listen(1024)?;
    let udp = tokio::net::UdpSocket::from_std(udp.into())?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into())?;
    let mut server = Server::new(Handler::new(records));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64 * 1024);
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = server.shutdown_gracefully().await;
            }
            r = server.block_until_done() => {
                if let Err(e) = r {
                    tracing::warn!(component = "dns", "DNS server on {addr} stopped: {e}");
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    async fn udp(addr: SocketAddr, q: &[u8]) -> Message {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(q, addr).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    /// The real server on a loopback port answers over UDP and TCP from the shared records,
    /// and sees changes to them at once.
    #[tokio::test]
    async fn answers_over_udp_and_tcp_from_the_records() {
        let records = Arc::new(RwLock::new(Records::new("cluster.local").unwrap()));
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "198.19.0.20"}
        }))
        .unwrap();
        records.write().unwrap().put_service(&svc);
        // A free port on a loopback address of this test's own.
        let probe = std::net::UdpSocket::bind("127.0.0.53:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let cancel = CancellationToken::new();
        let handle = serve(addr, records.clone(), cancel.clone()).unwrap();

        let m = udp(
            addr,
            &query(7, "web.default.svc.cluster.local.", RecordType::A),
        )
        .await;
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].data.to_string(), "198.19.0.20");

        let m = udp(
            addr,
            &query(8, "nope.default.svc.cluster.local.", RecordType::A),
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        let m = udp(addr, &query(9, "example.org.", RecordType::A)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);

        records.write().unwrap().delete_service("default", "web");
        let m = udp(
            addr,
            &query(10, "web.default.svc.cluster.local.", RecordType::A),
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        records.write().unwrap().put_service(&svc);

        // TCP: two-byte length prefix.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let q = query(11, "web.default.svc.cluster.local.", RecordType::A);
        tcp.write_all(&(q.len() as u16).to_be_bytes())
            .await
            .unwrap();
        tcp.write_all(&q).await.unwrap();
        let len = tcp.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        tcp.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(m.metadata.id, 11);
        assert_eq!(m.answers[0].data.to_string(), "198.19.0.20");

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }
}
