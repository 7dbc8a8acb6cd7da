//! The upstream pool: one or more inference servers balanced round-robin with Pingora's
//! load-balancing crate, optionally health-checked in the background (a failing server stops
//! receiving requests until it answers its health check again). Selection skips servers a
//! request already failed to connect to, so a connection failure is retried elsewhere.
//!
//! Pingora's proxy reaches the upstreams through [`UpstreamPool::peer_for`]; the in-band JSON
//! path, which must hold the whole answer before it is signed, through the pool's own small
//! HTTP/1.1 client, [`UpstreamPool::send`], under the same timeouts and the same failover.

use crate::config::{HealthCheckSettings, UpstreamTarget, UpstreamTimeouts};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pingora_core::prelude::HttpPeer;
use pingora_core::services::background::{GenBackgroundService, background_service};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The buffer an HTTP/1 body is read into, per connection: an upstream's response body here,
/// a client's request body in `hardening.rs` (Pingora's default for both: 64 KiB, held as long
/// as the connection's exchange). One coalesced upstream write of an event stream still fits
/// in one read.
pub(crate) const BODY_BUFFER_BYTES: usize = 16 * 1024;

/// Why the pool could not be built.
#[derive(Debug, thiserror::Error)]
#[error("upstreams: {0}")]
pub struct PoolError(String);

/// How a client's request head is edited on its way upstream; one policy for both upstream
/// paths (the proxy and the in-band JSON client).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// The client's bearer token is signet's, not the upstream's: drop `Authorization`
    /// unless configured to forward it.
    pub strip_authorization: bool,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross signet.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// A `Location` header as the client should see it: an absolute URL that points at the
/// upstream itself (its configured authority, or the address it was resolved to) becomes a
/// path, so a redirect never tells the client where the model server lives; any other
/// value is left alone (`None`).
pub fn client_location(value: &str, target: &UpstreamTarget) -> Option<String> {
    let uri: http::Uri = value.trim().parse().ok()?;
    let authority = uri.authority()?;
    let upstream = authority.as_str().eq_ignore_ascii_case(&target.authority())
        || authority.as_str() == target.addr.to_string()
        || (authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            == target.host
            && authority
                .port_u16()
                .unwrap_or(if target.tls { 443 } else { 80 })
                == target.port);
    if !upstream {
        return None;
    }
    Some(
        uri.path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    )
}

impl HeaderPolicy {
    /// Whether a client request header (lowercase name) goes upstream unchanged. On signed
    /// routes `Accept-Encoding` goes, so the upstream sends identity bytes and the hashed
    /// bytes are the delivered bytes; `Host` and `x-request-id` are signet's to set.
    pub fn keeps(&self, name: &str, signed: bool) -> bool {
        !((signed && name == "accept-encoding")
            || (self.strip_authorization && name == "authorization")
            || name == "host"
            || name == "x-request-id")
    }
}

/// The upstreams and how to reach them.
pub struct UpstreamPool {
    balancer: Arc<LoadBalancer<RoundRobin>>,
    targets: Vec<UpstreamTarget>,
    timeouts: UpstreamTimeouts,
    headers: HeaderPolicy,
    /// TLS for [`UpstreamPool::send`] toward https upstreams (`None` when none is https).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

/// The background service that runs the health checks, when there are any.
pub type HealthService = GenBackgroundService<LoadBalancer<RoundRobin>>;

impl UpstreamPool {
    /// Builds the pool; returns the health-check service to hand to Pingora, if checks are on.
    pub fn new(
        targets: Vec<UpstreamTarget>,
        health: Option<&HealthCheckSettings>,
        timeouts: UpstreamTimeouts,
    ) -> Result<(Self, Option<HealthService>), PoolError> {
        let first = targets
            .first()
            .ok_or_else(|| PoolError("no upstream".to_owned()))?;
        let mut balancer =
            LoadBalancer::<RoundRobin>::try_from_iter(targets.iter().map(|t| t.addr))
                .map_err(|e| PoolError(e.to_string()))?;
        let (balancer, service) = match health {
            None => (Arc::new(balancer), None),
            Some(health) => {
                let mut check = HttpHealthCheck::new(&first.authority(), first.tls);
                let mut request = RequestHeader::build("GET", health.path.as_bytes(), None)
                    .map_err(|e| PoolError(e.to_string()))?;
                request
                    .insert_header(http::header::HOST, first.authority())
                    .map_err(|e| PoolError(e.to_string()))?;
                check.req = request;
                check.consecutive_success = 1;
                check.consecutive_failure = 1;
                check.peer_template.options.connection_timeout = Some(health.timeout);
                check.peer_template.options.read_timeout = Some(health.timeout);
                balancer.set_health_check(Box::new(check));
                balancer.health_check_frequency = Some(health.interval);
                balancer.parallel_health_check = true;
                let service = background_service("upstream health checks", balancer);
                (service.task(), Some(service))
            }
        };
        let tls = if targets.iter().any(|t| t.tls) {
            upstream_tls_config()
        } else {
            None
        };
        Ok((
            Self {
                balancer,
                targets,
                timeouts,
                headers: HeaderPolicy::default(),
                tls,
            },
            service,
        ))
    }

    /// Uses this header policy on both upstream paths.
    pub fn with_header_policy(mut self, headers: HeaderPolicy) -> Self {
        self.headers = headers;
        self
    }

    /// The header policy.
    pub fn header_policy(&self) -> HeaderPolicy {
        self.headers
    }

    /// Records that `failed` could not be connected to and says whether another upstream
    /// may take the request (nothing was sent, so trying elsewhere is safe).
    pub fn try_another_after(&self, tried: &mut Vec<SocketAddr>, failed: SocketAddr) -> bool {
        if !tried.contains(&failed) {
            tried.push(failed);
        }
        tried.len() < self.targets.len()
    }

    /// A peer for one attempt at `target`. Streamed requests may stay silent for
    /// `upstream_timeouts.idle` between chunks; others for `first_byte` (a non-streamed
    /// answer comes only once the whole completion is generated).
    pub fn peer_for(&self, target: &UpstreamTarget, stream: Option<bool>) -> HttpPeer {
        let read_timeout = match stream {
            Some(true) => self.timeouts.idle,
            _ => self.timeouts.first_byte,
        };
        self.peer(target, read_timeout)
    }

    /// Edits the request head sent upstream by the header policy, then sets `Host` to the
    /// upstream's authority and `x-request-id` to signet's own id.
    pub fn prepare_request(
        &self,
        request: &mut RequestHeader,
        signed: bool,
        target: &UpstreamTarget,
        request_id: &str,
    ) -> pingora_core::Result<()> {
        let dropped: Vec<http::HeaderName> = request
            .headers
            .keys()
            .filter(|name| !self.headers.keeps(name.as_str(), signed))
            .cloned()
            .collect();
        for name in dropped {
            request.remove_header(&name);
        }
        request.insert_header(http::header::HOST, target.authority())?;
        request.insert_header("x-request-id", request_id)?;
        Ok(())
    }

    /// How many upstreams there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the pool is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The next upstream to try: a healthy one not tried yet, else any not tried yet (when
    /// every upstream failed its health check, trying beats refusing).
    pub fn select(&self, tried: &[SocketAddr]) -> Option<&UpstreamTarget> {
        let untried = |backend: &Backend| {
            backend
                .addr
                .as_inet()
                .is_some_and(|addr| !tried.contains(addr))
        };
        let backend = self
            .balancer
            .select_with(b"", 256, |backend, healthy| healthy && untried(backend))
            .or_else(|| {
                self.balancer
                    .select_with(b"", 256, |backend, _| untried(backend))
            })?;
        let addr = backend.addr.as_inet()?;
        self.targets.iter().find(|t| t.addr == *addr)
    }

    /// A peer for one attempt at `target`, whose reads may stay silent for `read_timeout`.
    pub fn peer(&self, target: &UpstreamTarget, read_timeout: Duration) -> HttpPeer {
        let mut peer = HttpPeer::new(target.addr, target.tls, target.host.clone());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(read_timeout);
        peer.options.write_timeout = Some(self.timeouts.write);
        peer.options.idle_timeout = Some(self.timeouts.pool_idle);
        // Pingora reads a response body into 64 KiB per connection by default, most of it
        // idle for an event stream whose events are a few hundred bytes (measured in
        // BENCHMARKS.md); one coalesced write of an upstream still fits in one read.
        peer.options.h1_body_buffer_size = Some(BODY_BUFFER_BYTES);
        // The events one read brings (a model's multi-token step, a stream behind a slow
        // moment) go on as one slice: one copy, one task between the proxy's halves and one
        // pass of the body filters per read rather than per event. Chunk boundaries carry no
        // meaning in HTTP, and signet's hashing and event scanning never depended on them.
        peer.options.h1_merge_body_chunks = true;
        // A stream between a model's tokens holds no body buffer: it is freed while a read
        // waits and taken again when the upstream is readable (measured in BENCHMARKS.md).
        peer.options.h1_release_idle_body_buffer = true;
        peer
    }
}

/// What a request sent through [`UpstreamPool::send`] came back with.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The upstream that answered.
    pub target: UpstreamTarget,
    /// Status code.
    pub status: u16,
    /// Headers as the upstream sent them.
    pub headers: http::HeaderMap,
    /// The body exactly as received (de-chunked).
    pub body: Bytes,
}

/// How a request sent through [`UpstreamPool::send`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamFailure {
    /// Every upstream was tried and none could be connected to.
    #[error("no upstream is available (every upstream failed to connect)")]
    NoUpstream,
    /// The upstream did not answer (head and body) within the `first_byte` timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The response body is longer than the cap.
    #[error("the response body exceeds {0} bytes")]
    TooLarge(usize),
    /// The exchange broke after the connection was made.
    #[error("HTTP exchange failed: {0}")]
    Exchange(String),
}

/// A failure, and the upstream it happened at (the last one tried, if any was).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{failure}")]
pub struct UpstreamError {
    /// The upstream tried last.
    pub target: Option<UpstreamTarget>,
    /// What went wrong.
    pub failure: UpstreamFailure,
}

/// One attempt at one upstream: a connect failure may be retried elsewhere, nothing else.
enum Attempt {
    Connect(String),
    Failed(UpstreamFailure),
}

/// TLS toward upstreams: the system's roots, as Pingora's own upstream connections use.
fn upstream_tls_config() -> Option<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match rustls_native_certs::load_native_certs() {
        Ok(native) => {
            for cert in native {
                let _ = roots.add(cert);
            }
        }
        Err(e) => log::warn!("upstream TLS: cannot load the system's root certificates: {e}"),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(config))
}

impl UpstreamPool {
    /// Sends one HTTP/1.1 request upstream on a fresh connection and reads the whole answer
    /// (at most `max_body` bytes of body). An upstream that cannot be connected to within
    /// the `connect` timeout is left for another, as on the proxied path
    /// ([`UpstreamPool::try_another_after`]); the answer must come within `first_byte`.
    /// `headers` are sent as given (apply the [`HeaderPolicy`] first); `Host` is the
    /// upstream's authority.
    pub async fn send(
        &self,
        method: &http::Method,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Bytes,
        max_body: usize,
    ) -> Result<Answer, UpstreamError> {
        let mut failed: Vec<SocketAddr> = Vec::new();
        let mut last: Option<UpstreamTarget> = None;
        loop {
            let Some(target) = self.select(&failed).cloned() else {
                return Err(UpstreamError {
                    target: last,
                    failure: UpstreamFailure::NoUpstream,
                });
            };
            let request = build_request(method, path_and_query, headers, &target, body.clone());
            let attempt = match request {
                Ok(request) => self.attempt(&target, request, max_body).await,
                Err(failure) => Err(Attempt::Failed(failure)),
            };
            match attempt {
                Ok((status, headers, body)) => {
                    return Ok(Answer {
                        target,
                        status,
                        headers,
                        body,
                    });
                }
                Err(Attempt::Connect(why)) => {
                    log::warn!("upstream {}: cannot connect: {why}", target.url);
                    let again = self.try_another_after(&mut failed, target.addr);
                    last = Some(target);
                    if !again {
                        return Err(UpstreamError {
                            target: last,
                            failure: UpstreamFailure::NoUpstream,
                        });
                    }
                }
                Err(Attempt::Failed(failure)) => {
                    return Err(UpstreamError {
                        target: Some(target),
                        failure,
                    });
                }
            }
        }
    }

    /// Connects to `target` (TCP, then TLS when it speaks TLS) within the connect timeout,
    /// then has the whole exchange within the first-byte timeout.
    async fn attempt(
        &self,
        target: &UpstreamTarget,
        request: http::Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<(u16, http::HeaderMap, Bytes), Attempt> {
        let connect = self.timeouts.connect;
        let tcp = tokio::time::timeout(connect, tokio::net::TcpStream::connect(target.addr))
            .await
            .map_err(|_| Attempt::Connect(format!("no connection within {connect:?}")))?
            .map_err(|e| Attempt::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let first_byte = self.timeouts.first_byte;
        let exchanged = if target.tls {
            let stream = tokio::time::timeout(connect, self.handshake(target, tcp))
                .await
                .map_err(|_| Attempt::Connect(format!("no TLS handshake within {connect:?}")))??;
            tokio::time::timeout(first_byte, exchange(stream, request, max_body)).await
        } else {
            tokio::time::timeout(first_byte, exchange(tcp, request, max_body)).await
        };
        exchanged
            .map_err(|_| Attempt::Failed(UpstreamFailure::Timeout(first_byte)))?
            .map_err(Attempt::Failed)
    }

    async fn handshake(
        &self,
        target: &UpstreamTarget,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Attempt> {
        let config = self
            .tls
            .clone()
            .ok_or_else(|| Attempt::Connect("no TLS configuration".to_owned()))?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| Attempt::Connect(format!("TLS name {}: {e}", target.host)))?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| Attempt::Connect(format!("TLS: {e}")))
    }
}

/// The request for one attempt at `target`.
fn build_request(
    method: &http::Method,
    path_and_query: &str,
    headers: &[(String, String)],
    target: &UpstreamTarget,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, UpstreamFailure> {
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .header(http::header::HOST, target.authority());
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(body))
        .map_err(|e| UpstreamFailure::Exchange(e.to_string()))
}

/// One HTTP/1.1 exchange on `stream`: the status, the headers and at most `max_body` bytes
/// of body.
async fn exchange<S>(
    stream: S,
    request: http::Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(u16, http::HeaderMap, Bytes), UpstreamFailure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamFailure::Exchange(e.to_string()))?;
    // The connection ends with the exchange, however it ends (an answer, an error, or the
    // timeout dropping this future).
    let _driver = AbortOnDrop(tokio::spawn(connection));
    read_answer(&mut sender, request, max_body).await
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_answer(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(u16, http::HeaderMap, Bytes), UpstreamFailure> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| UpstreamFailure::Exchange(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                UpstreamFailure::TooLarge(max_body)
            } else {
                UpstreamFailure::Exchange(format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    Ok((parts.status.as_u16(), parts.headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_to_the_upstream_become_paths() {
        let target = crate::config::parse_upstream("k", "http://127.0.0.1:8001").unwrap();
        assert_eq!(
            client_location("http://127.0.0.1:8001/v1/models", &target).as_deref(),
            Some("/v1/models")
        );
        assert_eq!(
            client_location("http://127.0.0.1:8001/v1/x?a=b", &target).as_deref(),
            Some("/v1/x?a=b")
        );
        assert_eq!(client_location("https://example.com/next", &target), None);
        assert_eq!(
            client_location("/v1/models/", &target),
            None,
            "already a path"
        );
        let named = crate::config::parse_upstream("k", "http://localhost:8001").unwrap();
        assert_eq!(
            client_location("http://localhost:8001/a", &named).as_deref(),
            Some("/a")
        );
        assert_eq!(
            client_location(&format!("http://{}/a", named.addr), &named).as_deref(),
            Some("/a")
        );
    }

    #[test]
    fn the_header_policy_keeps_what_the_upstream_may_see() {
        let open = HeaderPolicy::default();
        assert!(open.keeps("accept-encoding", false));
        assert!(!open.keeps("accept-encoding", true));
        assert!(open.keeps("authorization", true));
        assert!(!open.keeps("host", false));
        assert!(!open.keeps("x-request-id", true), "signet sets its own");
        let guarded = HeaderPolicy {
            strip_authorization: true,
        };
        assert!(!guarded.keeps("authorization", false));
        assert!(guarded.keeps("content-type", true));
        assert!(is_hop_by_hop("transfer-encoding") && !is_hop_by_hop("content-type"));
    }

    fn target(addr: SocketAddr) -> UpstreamTarget {
        UpstreamTarget {
            url: format!("http://{addr}"),
            tls: false,
            host: addr.ip().to_string(),
            port: addr.port(),
            addr,
        }
    }

    fn pool(addrs: &[SocketAddr], first_byte: Duration) -> UpstreamPool {
        let timeouts = UpstreamTimeouts {
            connect: Duration::from_secs(2),
            first_byte,
            idle: first_byte,
            write: Duration::from_secs(2),
            pool_idle: Duration::from_secs(2),
        };
        UpstreamPool::new(addrs.iter().copied().map(target).collect(), None, timeouts)
            .unwrap()
            .0
    }

    /// An address nothing listens on.
    async fn dead_address() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    /// A server that reads each request (head and `content-length` body), hands it to the
    /// test and answers `answer` (or nothing, when `None`).
    async fn upstream(
        answer: Option<&'static str>,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = socket.read(&mut buf).await.unwrap();
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                            if request.len() >= end + 4 + length || n == 0 {
                                break;
                            }
                        }
                    }
                    let _ = seen.send(String::from_utf8_lossy(&request).to_string());
                    match answer {
                        Some(answer) => socket.write_all(answer.as_bytes()).await.unwrap(),
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        (addr, requests)
    }

    const HELLO: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhello";

    #[tokio::test]
    async fn the_pool_client_fails_over_to_an_upstream_it_can_connect_to() {
        let dead = dead_address().await;
        let (live, mut requests) = upstream(Some(HELLO)).await;
        let pool = pool(&[dead, live], Duration::from_secs(5));
        let headers = vec![("x-request-id".to_owned(), "r1".to_owned())];
        // Round-robin starts at either upstream: within two requests one starts at the dead one.
        for _ in 0..3 {
            let answer = pool
                .send(
                    &http::Method::POST,
                    "/v1/chat/completions?x=1",
                    &headers,
                    Bytes::from_static(b"{\"a\":1}"),
                    1024,
                )
                .await
                .unwrap();
            assert_eq!(answer.target.addr, live);
            assert_eq!(answer.status, 200);
            assert_eq!(answer.headers["content-type"], "application/json");
            assert_eq!(&answer.body[..], b"hello");
            let request = requests.recv().await.unwrap();
            assert!(request.starts_with("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"));
            assert!(request.contains(&format!("host: {live}\r\n")), "{request}");
            assert!(request.contains("x-request-id: r1\r\n"));
            assert!(request.ends_with("\r\n\r\n{\"a\":1}"));
        }
    }

    #[tokio::test]
    async fn when_no_upstream_connects_the_error_names_the_last_one_tried() {
        let (first, second) = (dead_address().await, dead_address().await);
        let pool = pool(&[first, second], Duration::from_secs(5));
        let error = pool
            .send(&http::Method::GET, "/", &[], Bytes::new(), 1024)
            .await
            .unwrap_err();
        assert_eq!(error.failure, UpstreamFailure::NoUpstream);
        assert!(
            error
                .target
                .as_ref()
                .is_some_and(|t| t.addr == first || t.addr == second)
        );
        assert_eq!(
            error.to_string(),
            "no upstream is available (every upstream failed to connect)"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_too_large_and_not_retried() {
        let (one, mut ones) = upstream(Some(HELLO)).await;
        let (other, mut others) = upstream(Some(HELLO)).await;
        let pool = pool(&[one, other], Duration::from_secs(5));
        let error = pool
            .send(&http::Method::GET, "/", &[], Bytes::new(), 4)
            .await
            .unwrap_err();
        assert_eq!(error.failure, UpstreamFailure::TooLarge(4));
        assert!(error.target.is_some());
        let asked = usize::from(ones.try_recv().is_ok()) + usize::from(others.try_recv().is_ok());
        assert_eq!(asked, 1, "an answer that came is never asked for again");
        let exact = pool
            .send(&http::Method::GET, "/", &[], Bytes::new(), 5)
            .await
            .unwrap();
        assert_eq!(
            &exact.body[..],
            b"hello",
            "a body of exactly the cap is whole"
        );
    }

    #[tokio::test]
    async fn an_upstream_that_does_not_answer_in_time_times_out() {
        let (silent, _requests) = upstream(None).await;
        let first_byte = Duration::from_millis(200);
        let pool = pool(&[silent], first_byte);
        let started = std::time::Instant::now();
        let error = pool
            .send(&http::Method::GET, "/", &[], Bytes::new(), 1024)
            .await
            .unwrap_err();
        assert_eq!(error.failure, UpstreamFailure::Timeout(first_byte));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
