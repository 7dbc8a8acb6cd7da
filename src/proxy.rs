//! The Pingora side of signet: a [`ProxyHttp`] implementation whose hooks only translate.
//! Each hook turns Pingora's types into the plain facts of `signet_core::exchange` and
//! carries out the decision it gets back (refuse, read the body first, forward these bytes,
//! edit these headers, sign, retry, retract); none decides anything about signing itself.
//! The per-request state is [`RequestCtx`]: the exchange plus what only the I/O side needs.

use crate::aci::{AciService, PendingReceipt};
use crate::admission::{BodyReservation, InFlightSlot};
use crate::config::UpstreamTarget;
use crate::gateway::Gateway;
use crate::metrics::METRICS;
use crate::notary::SealError;
use crate::routes::{self, LocalResponse};
use async_trait::async_trait;
use bytes::Bytes;
use log::{debug, error, info, warn};
use pingora_core::prelude::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use signet_core::aci::store::ReceiptTicket;
use signet_core::e2ee;
use signet_core::error::{ApiError, UnreadableHead};
use signet_core::exchange::{
    AttemptError, BodyStep, ClientState, End, Exchange, Failure, HeadDecision, HttpVersion,
    Refusal, RequestHead, ResponseEdits, ResponseHead, RetryFacts, Settlement, Side,
    is_signet_header,
};
use signet_core::ids::{CompletionId, client_request_id, new_request_id};
use signet_core::inband;
use signet_core::route::Route;
use signet_core::transcript::UnsignedReason;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state: the exchange, and what only the I/O side needs.
#[derive(Debug)]
pub struct RequestCtx {
    /// The request's state machine.
    exchange: Exchange,
    /// When the request started being processed.
    started: Instant,
    /// signet's own id for this request (upstream, response header, logs).
    pub request_id: String,
    /// The client's `x-request-id`, if well-formed (access log only).
    client_request_id: Option<String>,
    /// A place among the completions in flight (signed routes).
    slot: Option<InFlightSlot>,
    /// The memory this request's body holds (signed routes).
    body_memory: Option<BodyReservation>,
    /// The upstream of the current attempt.
    target: Option<UpstreamTarget>,
    /// Upstreams this request could not connect to.
    failed_connects: Vec<SocketAddr>,
    /// When the request head was sent upstream (latency metrics).
    sent_upstream_at: Option<Instant>,
    /// The ACI receipt this request gets if its exchange seals (signed routes).
    aci: Option<PendingReceipt>,
    /// The receipt filed, to take back if the response does not reach the client.
    receipt: Option<ReceiptTicket>,
}

/// signet's proxy.
pub struct SignetProxy {
    gateway: Arc<Gateway>,
}

impl SignetProxy {
    /// A proxy serving `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

// --- Translation: Pingora's types to the exchange's facts ----------------------------------

fn version_of(version: http::Version) -> HttpVersion {
    match version {
        http::Version::HTTP_09 | http::Version::HTTP_10 => HttpVersion::Http10,
        http::Version::HTTP_2 | http::Version::HTTP_3 => HttpVersion::Http2,
        _ => HttpVersion::Http11,
    }
}

fn head_bytes(header: &RequestHeader) -> usize {
    header.method.as_str().len()
        + header.raw_path().len()
        + header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
}

fn request_facts<'a>(
    header: &'a RequestHeader,
    authorized: bool,
    body_empty: bool,
    request_id: &'a str,
) -> RequestHead<'a> {
    RequestHead {
        method: header.method.as_str(),
        path: header.uri.path(),
        version: version_of(header.version),
        head_bytes: head_bytes(header),
        content_length: header
            .headers
            .get(http::header::CONTENT_LENGTH)
            .map(|v| v.as_bytes()),
        transfer_encoding: header.headers.contains_key(http::header::TRANSFER_ENCODING),
        body_empty,
        authorized,
        inband: header
            .headers
            .get(inband::REQUEST_HEADER)
            .map(|v| v.as_bytes()),
        request_id,
        e2ee: e2ee_facts(&header.headers),
        now_unix: crate::config::unix_now(),
    }
}

/// The E2EE v2 request headers, as facts.
fn e2ee_facts(headers: &http::HeaderMap) -> e2ee::RequestHeaders<'_> {
    let get = |name: &str| headers.get(name).map(|v| v.as_bytes());
    e2ee::RequestHeaders {
        version: get(e2ee::headers::VERSION),
        client_pub_key: get(e2ee::headers::CLIENT_PUB_KEY),
        model_pub_key: get(e2ee::headers::MODEL_PUB_KEY),
        nonce: get(e2ee::headers::NONCE),
        timestamp: get(e2ee::headers::TIMESTAMP),
        signing_algo: get(e2ee::headers::SIGNING_ALGO),
        encryption_version: get(e2ee::headers::ENCRYPTION_VERSION),
    }
}

/// An E2EE request goes upstream decrypted: its length is the restored body's (chunked
/// when the body is still streaming in, restored only once complete), and the protocol's
/// headers stay with signet.
fn prepare_e2ee_request(
    upstream_request: &mut RequestHeader,
    forwarded: Option<usize>,
) -> Result<()> {
    for name in e2ee::headers::REQUEST {
        upstream_request.remove_header(name);
    }
    upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
    upstream_request.remove_header(&http::header::CONTENT_LENGTH);
    match forwarded {
        Some(length) => upstream_request.insert_header(http::header::CONTENT_LENGTH, length),
        None => upstream_request.insert_header(http::header::TRANSFER_ENCODING, "chunked"),
    }
}

/// What a Pingora error was, as the exchange's rules see it.
fn attempt_error(error: &Error) -> AttemptError {
    let side = match error.esource() {
        ErrorSource::Upstream => Side::Upstream,
        ErrorSource::Downstream => Side::Downstream,
        ErrorSource::Internal | ErrorSource::Unset => Side::Internal,
    };
    let failure = match error.etype() {
        ErrorType::HTTPStatus(code) => Failure::Status(*code),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
        ErrorType::ConnectionClosed => Failure::Closed {
            before_answer: error
                .context
                .as_ref()
                .is_some_and(|c| c.as_str().contains("bytes already read: 0")),
        },
        ErrorType::ReadError | ErrorType::WriteError => {
            let reset = error
                .root_cause()
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    )
                });
            if reset { Failure::Reset } else { Failure::Io }
        }
        _ => Failure::Other,
    };
    AttemptError { side, failure }
}

/// Why Pingora could not read a request head, from its error: too large (its size limit,
/// which signet sets to `limits.max_header_bytes`, or more header fields than it reads), or
/// malformed.
fn unreadable_head(error: &Error) -> UnreadableHead {
    let too_many_fields = matches!(
        error.root_cause().downcast_ref::<httparse::Error>(),
        Some(httparse::Error::TooManyHeaders)
    );
    let too_large = error
        .context
        .as_ref()
        .is_some_and(|c| c.as_str().starts_with("Request header larger than"));
    if too_many_fields || too_large {
        UnreadableHead::TooLarge
    } else {
        UnreadableHead::Malformed
    }
}

/// The envelope for a request head Pingora could not read (sent before it closes).
fn unreadable_head_response(why: UnreadableHead) -> Result<(ResponseHeader, Bytes)> {
    let answer = LocalResponse::from(ApiError::unreadable_head(why));
    let mut header = ResponseHeader::build(answer.status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (name, value) in &answer.headers {
        header.insert_header(*name, value.as_str())?;
    }
    Ok((header, Bytes::from(answer.body)))
}

// --- Carrying out decisions -----------------------------------------------------------------

/// Carries out a refusal: the envelope is written by `fail_to_proxy` from the exchange.
fn refuse(session: &mut Session, refusal: Refusal) -> Box<Error> {
    if refusal.close {
        // The body was not read: the next bytes on this connection are not a request head.
        session.set_keepalive(None);
    }
    Error::explain(
        ErrorType::HTTPStatus(refusal.error.status),
        "refused by signet",
    )
}

/// Writes a locally produced JSON response.
async fn write_local(
    session: &mut Session,
    answer: &LocalResponse,
    request_id: &str,
    aci: &AciService,
) -> Result<()> {
    let mut header = ResponseHeader::build(answer.status, Some(8))?;
    for (name, value) in aci.headers() {
        header.insert_header(name, value)?;
    }
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header("x-request-id", request_id)?;
    for (name, value) in &answer.headers {
        header.insert_header(*name, value.as_str())?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(answer.body.clone())), true)
        .await
}

/// Applies the exchange's edits to the response head.
fn apply_edits(
    session: &mut Session,
    response: &mut ResponseHeader,
    edits: ResponseEdits,
    request_id: &str,
) -> Result<()> {
    if edits.strip_signet_headers {
        let forged: Vec<http::HeaderName> = response
            .headers
            .keys()
            .filter(|name| is_signet_header(name.as_str()))
            .cloned()
            .collect();
        for name in forged {
            response.remove_header(&name);
        }
    }
    if edits.request_id {
        response.insert_header("x-request-id", request_id)?;
    }
    if edits.remove_transfer_encoding {
        response.remove_header(&http::header::TRANSFER_ENCODING);
    }
    if edits.remove_content_length {
        response.remove_header(&http::header::CONTENT_LENGTH);
    }
    if edits.add_chunked {
        response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    if edits.close {
        response.insert_header(http::header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    if edits.mark_inband {
        response.insert_header(inband::REQUEST_HEADER, inband::REQUEST_VALUE)?;
    }
    if let Some(id) = edits.completion_id {
        response.insert_header(inband::headers::COMPLETION_ID, id)?;
    }
    // An upstream's E2EE hints never pass: only signet says what it encrypted.
    for name in [
        e2ee::headers::APPLIED,
        e2ee::headers::VERSION,
        e2ee::headers::ALGO,
    ] {
        response.remove_header(name);
    }
    if let Some(algo) = edits.e2ee_algo {
        response.insert_header(e2ee::headers::APPLIED, "true")?;
        response.insert_header(e2ee::headers::ALGO, algo)?;
    }
    if let Some(version) = edits.e2ee_version {
        response.insert_header(e2ee::headers::VERSION, version)?;
    }
    Ok(())
}

/// ACI's response headers (§5.2): an upstream's `x-aci-*` and `x-receipt-id` go; the
/// version and keyset digest go on every final answer, the receipt id on a 2xx of a signed
/// route (its receipt exists once the response is delivered whole).
fn apply_aci_headers(
    response: &mut ResponseHeader,
    aci: &AciService,
    final_answer: bool,
    receipt_id: Option<&str>,
) -> Result<()> {
    let forged: Vec<http::HeaderName> = response
        .headers
        .keys()
        .filter(|name| signet_core::aci::is_aci_header(name.as_str()))
        .cloned()
        .collect();
    for name in forged {
        response.remove_header(&name);
    }
    if !final_answer {
        return Ok(());
    }
    for (name, value) in aci.headers() {
        response.insert_header(name, value)?;
    }
    if let Some(receipt_id) = receipt_id {
        response.insert_header(signet_core::aci::RECEIPT_ID_HEADER, receipt_id)?;
    }
    Ok(())
}

/// Reads the rest of the request body into the exchange (a body read before the upstream is
/// contacted).
async fn read_body_first(
    session: &mut Session,
    exchange: &mut Exchange,
    memory: &mut BodyReservation,
    started: Instant,
) -> std::result::Result<(), Refusal> {
    loop {
        match session.as_mut().read_request_body().await {
            Ok(Some(chunk)) => {
                exchange.push_request_body(&chunk)?;
                hold_body_memory(exchange, memory)?;
                if let Some(refusal) = exchange.body_overdue(started.elapsed()) {
                    return Err(refusal);
                }
            }
            Ok(None) => return exchange.finish_request_body(),
            Err(e) => {
                return Err(exchange.request_body_unreadable(e.etype() == &ErrorType::ReadTimedout));
            }
        }
    }
}

/// Reserves the memory the exchange now holds for the request body, or refuses (503) when
/// every byte `limits.body_memory_total` allows is taken.
fn hold_body_memory(
    exchange: &mut Exchange,
    memory: &mut BodyReservation,
) -> std::result::Result<(), Refusal> {
    memory
        .grow_to(exchange.held_request_bytes())
        .map_err(|error| exchange.refuse(error, true))
}

/// Looks at the client's socket without reading from it: closed (FIN), reset, or open.
/// HTTP/2 streams (no socket of their own) are reported open.
#[allow(unsafe_code)]
fn client_state(session: &Session) -> ClientState {
    let Some(stream) = session.as_downstream().stream() else {
        return ClientState::Open;
    };
    let raw = stream.id();
    // SAFETY: `raw` is the descriptor of the session's socket, owned by `stream`, which is
    // borrowed (and so open) for the whole of this call; it is only peeked at, never closed.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    let mut probe = [0u8; 1];
    match rustix::net::recv(
        fd,
        &mut probe,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => ClientState::Closed,
        Err(rustix::io::Errno::CONNRESET | rustix::io::Errno::PIPE) => ClientState::Reset,
        _ => ClientState::Open,
    }
}

/// Counts the finished request in the metrics.
fn record_metrics(ctx: &RequestCtx) {
    let exchange = &ctx.exchange;
    let route = exchange.route_label();
    let status = exchange
        .status()
        .map_or_else(|| "0".to_owned(), |s| s.to_string());
    METRICS.requests.with_label_values(&[route, &status]).inc();
    if let Some(sent) = ctx.sent_upstream_at {
        METRICS
            .upstream_total_seconds
            .observe(sent.elapsed().as_secs_f64());
    }
    if let Route::Signed(_) = exchange.route() {
        if exchange.is_sealed() {
            METRICS.signed.with_label_values(&[route]).inc();
        } else if let Some(reason) = exchange.unsigned() {
            METRICS.unsigned.with_label_values(&[reason.as_str()]).inc();
        }
    }
    if let Some(request_bytes) = exchange.request_bytes() {
        METRICS
            .hashed_bytes
            .with_label_values(&["request"])
            .inc_by(request_bytes);
        METRICS
            .hashed_bytes
            .with_label_values(&["response"])
            .inc_by(exchange.response_bytes());
    }
}

impl SignetProxy {
    /// Admits a request to a signed route: a slot, then the body read first if so decided,
    /// then either the in-band JSON path (answered here: `Ok(true)`) or the proxy.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        read_first: bool,
    ) -> Result<bool> {
        match self.gateway.admission.take_slot() {
            Ok(slot) => ctx.slot = Some(slot),
            Err(refusal) => return Err(refuse(session, ctx.exchange.refuse(refusal, true))),
        }
        let memory = ctx
            .body_memory
            .insert(self.gateway.admission.body_memory.reservation());
        // A client that closes before its answer is complete is abandoned (never signed),
        // unless the exchange says it may finish: decided again once the body is known.
        session.as_downstream_mut().set_abort_on_close(true);
        if !read_first {
            return Ok(false);
        }
        if ctx.exchange.fits_retry_buffer() {
            // A body read here is replayed to the upstream from Pingora's retry buffer.
            session.as_mut().enable_retry_buffering();
        }
        if let Err(refusal) = read_body_first(session, &mut ctx.exchange, memory, ctx.started).await
        {
            return Err(refuse(session, refusal));
        }
        // SDKs close a stream as soon as they have read `data: [DONE]`, often before the
        // upstream's end-of-body arrives: a stream may finish (and be signed) if every byte
        // reached the client's socket.
        session
            .as_downstream_mut()
            .set_abort_on_close(!ctx.exchange.tolerates_client_close());
        if !ctx.exchange.serves_inband_json() {
            return Ok(false);
        }
        let header = session.req_header();
        let path = header.uri.path_and_query().map_or("/", |p| p.as_str());
        let answer = crate::inband_json::serve(
            &self.gateway,
            &mut ctx.exchange,
            ctx.aci.as_ref(),
            &header.method,
            path,
            &header.headers,
            &ctx.request_id,
        )
        .await;
        ctx.target = answer.target.clone();
        ctx.receipt = answer.receipt;
        let mut head = ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
        for (name, value) in answer.headers {
            head.append_header(name, value)?;
        }
        head.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
        head.insert_header("x-request-id", ctx.request_id.as_str())?;
        for (name, value) in self.gateway.aci.headers() {
            head.insert_header(name, value)?;
        }
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(answer.body), true).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for SignetProxy {
    // Boxed: Pingora keeps the context by value in its per-request future, in more than one
    // place (the argument and the local it moves into), so an inline context of ~1.9 KiB
    // cost ~5.6 KiB per open stream; a box costs 8 bytes there and the context once.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Self::CTX {
        Box::new(RequestCtx {
            exchange: Exchange::new(self.gateway.exchange_policy()),
            started: Instant::now(),
            request_id: new_request_id(),
            client_request_id: None,
            slot: None,
            body_memory: None,
            target: None,
            failed_connects: Vec::new(),
            sent_upstream_at: None,
            aci: None,
            receipt: None,
        })
    }

    /// No downstream modules. Pingora's default adds a (disabled) response compression
    /// module that still runs on every chunk; signet must never re-encode a body anyway,
    /// since the hash has to be over exactly the bytes the client receives.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        crate::hardening::head_received();
        let body_empty = session.as_mut().is_body_empty();
        let header = session.req_header();
        ctx.client_request_id =
            client_request_id(header.headers.get("x-request-id").map(|v| v.as_bytes()));
        let authorized = self.gateway.admission.authorized(
            header
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        );
        let decision = ctx.exchange.on_request_head(&request_facts(
            header,
            authorized,
            body_empty,
            &ctx.request_id,
        ));
        // A client that stalls while sending its body is cut off (slow-loris), and so is one
        // that stops reading what it is sent.
        let body_timeout = self.gateway.settings.client_timeouts.body;
        let write_timeout = self.gateway.settings.client_timeouts.write;
        session
            .as_downstream_mut()
            .set_write_timeout(Some(write_timeout));
        match decision {
            HeadDecision::Refuse(refusal) => Err(refuse(session, refusal)),
            HeadDecision::Local(route) => {
                let client = match session.client_addr() {
                    Some(pingora_core::protocols::l4::socket::SocketAddr::Inet(addr)) => {
                        Some(addr.ip())
                    }
                    _ => None,
                };
                if let Err(refusal) = self.gateway.admission.admit_local(route, client) {
                    return Err(refuse(session, ctx.exchange.refuse(refusal, false)));
                }
                let header = session.req_header();
                let answer = routes::answer_local(
                    &self.gateway,
                    route,
                    &header.method,
                    header.uri.path(),
                    header.uri.query(),
                    header
                        .headers
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                )
                .await;
                ctx.exchange.set_status(answer.status);
                write_local(session, &answer, &ctx.request_id, &self.gateway.aci).await?;
                Ok(true)
            }
            HeadDecision::Forward => {
                session
                    .as_downstream_mut()
                    .set_read_timeout(Some(body_timeout));
                Ok(false)
            }
            HeadDecision::Admit { read_body_first } => {
                session
                    .as_downstream_mut()
                    .set_read_timeout(Some(body_timeout));
                if let Route::Signed(route) = ctx.exchange.route() {
                    let authorization = session
                        .req_header()
                        .headers
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.as_bytes());
                    let endpoint = self.gateway.signed_path(route);
                    ctx.aci = self.gateway.aci.pending(endpoint, authorization);
                }
                self.admit(session, ctx, read_body_first).await
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // Called once per attempt: a retried attempt replays the body from its start.
        let plan = ctx.exchange.start_attempt();
        let Some(target) = self.gateway.upstreams.select(&ctx.failed_connects).cloned() else {
            let refusal = ctx.exchange.refuse(
                ApiError::bad_gateway(
                    "no upstream is available (every upstream failed to connect)",
                ),
                false,
            );
            return Err(refuse(session, refusal));
        };
        let mut peer = self.gateway.upstreams.peer_for(&target, plan.stream);
        if plan.fresh_connection {
            // A connection-group of its own: no pooled connection can be picked for it.
            peer.group_key = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
        }
        ctx.target = Some(target);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(target) = &ctx.target {
            let another = self
                .gateway
                .upstreams
                .try_another_after(&mut ctx.failed_connects, target.addr);
            e.set_retry(another);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(target) = &ctx.target else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
        };
        ctx.sent_upstream_at = Some(Instant::now());
        self.gateway.upstreams.prepare_request(
            upstream_request,
            ctx.exchange.is_signed_route(),
            target,
            &ctx.request_id,
        )?;
        if !ctx.exchange.is_e2ee() {
            return Ok(());
        }
        prepare_e2ee_request(
            upstream_request,
            ctx.exchange.forwarded_body().map(|body| body.len()),
        )
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(refusal) = ctx.exchange.body_overdue(ctx.started.elapsed()) {
            return Err(refuse(session, refusal));
        }
        let forwarded = ctx
            .exchange
            .forward_request_body(body.take(), end_of_stream);
        let held = match (&mut ctx.body_memory, forwarded) {
            (Some(memory), Ok(forward)) => {
                hold_body_memory(&mut ctx.exchange, memory).map(|()| forward)
            }
            (_, forwarded) => forwarded,
        };
        match held {
            Ok(forward) => {
                *body = forward;
                if end_of_stream && ctx.exchange.tolerates_client_close() {
                    session.as_downstream_mut().set_abort_on_close(false);
                }
                Ok(())
            }
            Err(refusal) => Err(refuse(session, refusal)),
        }
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The upstream's framing as it came, before Pingora turns a close-delimited body
        // into a chunked one for the client.
        let headers = &upstream_response.headers;
        ctx.exchange.on_upstream_framing(
            headers.contains_key(http::header::CONTENT_LENGTH),
            headers.contains_key(http::header::TRANSFER_ENCODING),
        );
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let headers = &upstream_response.headers;
        let facts = ResponseHead {
            status: upstream_response.status.as_u16(),
            content_type: headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            content_length: headers.contains_key(http::header::CONTENT_LENGTH),
            transfer_encoding: headers.contains_key(http::header::TRANSFER_ENCODING),
            client_version: version_of(session.req_header().version),
        };
        let edits = ctx.exchange.on_response_head(&facts);
        let status = facts.status;
        if let Some(target) = &ctx.target
            && let Some(location) = upstream_response
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::upstreams::client_location(v, target))
        {
            upstream_response.insert_header(http::header::LOCATION, location)?;
        }
        if edits.request_id
            && let Some(sent) = ctx.sent_upstream_at
        {
            METRICS
                .upstream_first_byte_seconds
                .observe(sent.elapsed().as_secs_f64());
        }
        let receipt_id = ctx
            .aci
            .as_ref()
            .filter(|_| ctx.exchange.is_signed_route() && (200..300).contains(&status))
            .map(|pending| pending.receipt_id.as_str());
        apply_aci_headers(
            upstream_response,
            &self.gateway.aci,
            edits.request_id,
            receipt_id,
        )?;
        apply_edits(session, upstream_response, edits, &ctx.request_id)
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let Some(sent) = ctx
            .exchange
            .rewrite_response_chunk(body.as_deref(), end_of_stream)
        {
            *body = Some(Bytes::from(sent));
        }
        if end_of_stream && ctx.exchange.awaits_seal() {
            // Written bytes are only accepted by the client's socket: whether the client
            // is still there decides whether they can reach it.
            let has_bytes = body.as_ref().is_some_and(|b| !b.is_empty());
            ctx.exchange
                .on_client_state(client_state(session), has_bytes);
        }
        let BodyStep::Seal(completed) = ctx
            .exchange
            .on_response_body(body.as_deref(), end_of_stream)
        else {
            return Ok(None);
        };
        match self.gateway.notary.seal_for_client(&completed) {
            Ok((ticket, signature)) => {
                if let Some(trailer) = ctx.exchange.sealed(ticket, &signature) {
                    // After the signed bytes, never among them.
                    let mut out = body.take().map(Vec::from).unwrap_or_default();
                    out.extend(trailer);
                    *body = Some(Bytes::from(out));
                }
                if let Some(pending) = &ctx.aci {
                    ctx.receipt = self.gateway.aci.issue(
                        pending,
                        &completed,
                        ctx.exchange.request_body().map(|b| b.as_ref()),
                        ctx.exchange.restored_request(),
                        ctx.exchange.emitted_sha256(&completed),
                    );
                }
            }
            Err(SealError::DuplicateId(_)) => {
                warn!("the upstream repeated a completion id: the later response is not signed");
                ctx.exchange.seal_failed(UnsignedReason::DuplicateId);
            }
            Err(SealError::Signing(e)) => {
                error!("signing failed for a completed response: {e}");
                ctx.exchange.seal_failed(UnsignedReason::SigningFailed);
            }
        }
        Ok(None)
    }

    fn invalid_request_response(&self, e: &Error) -> Option<(ResponseHeader, Bytes)> {
        let why = unreadable_head(e);
        // The error's text carries the head's bytes: only its kind is logged.
        debug!("refusing an unreadable request head: {why:?}");
        unreadable_head_response(why).ok()
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let answer = ctx
            .exchange
            .failure_answer(attempt_error(e), session.response_written().is_some());
        let error_code = match answer {
            // Too late for an envelope: the client already has (part of) a response, or is gone.
            None => 0,
            Some(envelope) => {
                let answer = LocalResponse::from(envelope);
                if let Err(write_error) =
                    write_local(session, &answer, &ctx.request_id, &self.gateway.aci).await
                {
                    warn!("could not write error response: {write_error}");
                }
                answer.status
            }
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut framework = e.retry;
        framework.decide_reuse(client_reused);
        let facts = RetryFacts {
            idempotent: session.req_header().method.is_idempotent(),
            reused_connection: client_reused,
            nothing_answered: session.response_written().is_none()
                && ctx.exchange.status().is_none(),
            replayable: !session.as_ref().retry_buffer_truncated(),
            framework_would_retry: framework.retry(),
        };
        let retry = ctx.exchange.should_retry(attempt_error(&e), facts);
        if retry {
            METRICS.upstream_retries.inc();
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        e.set_retry(retry);
        e
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        // Refusals are the client's mistake; the access line records them.
        ctx.exchange.was_refused()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let end = End {
            error: e.map(|e| attempt_error(e).side),
            client_accepted: session.as_downstream().body_bytes_sent() as u64,
        };
        let settlement = ctx.exchange.settle(end);
        if let Settlement::Retract(ticket, id) = &settlement {
            self.gateway.notary.retract(*ticket, id);
        }
        if settlement != Settlement::Stands
            && let Some(receipt) = ctx.receipt.take()
        {
            // The receipt stands exactly when the signature does.
            self.gateway.aci.retract(receipt);
        }
        let exchange = &ctx.exchange;
        let header = session.req_header();
        info!(
            target: "signet::access",
            "request_id={} client_request_id={} route={} method={} status={} duration_ms={:.1} upstream={} id={} signed={} reason={} response_bytes={} sent_bytes={} retries={} error={}",
            ctx.request_id,
            ctx.client_request_id.as_deref().unwrap_or("-"),
            exchange.route_label(),
            header.method,
            exchange.status().map_or_else(|| "-".to_owned(), |s| s.to_string()),
            ctx.started.elapsed().as_secs_f64() * 1000.0,
            ctx.target
                .as_ref()
                .map_or_else(|| "-".to_owned(), |t| t.addr.to_string()),
            exchange.completion_id().map_or("-", CompletionId::as_str),
            exchange.is_sealed(),
            exchange.unsigned().map_or("-", UnsignedReason::as_str),
            exchange.response_bytes(),
            session.as_downstream().body_bytes_sent(),
            exchange.retries(),
            e.map_or_else(|| "-".to_owned(), |e| format!("{:?}", e.etype())),
        );
        if exchange.unsigned() == Some(UnsignedReason::SigningFailed) {
            error!("a completed response could not be signed");
        }
        record_metrics(ctx);
    }
}
