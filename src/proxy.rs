//! The Pingora side of signet: a thin [`ProxyHttp`] implementation whose hooks only route,
//! hand bytes to the domain modules (transcript, notary, routes, attestation) and write
//! what those return. The per-request state is [`RequestCtx`].

use crate::config::UpstreamTarget;
use crate::gateway::{Gateway, InFlightSlot};
use crate::metrics::METRICS;
use crate::routes::LocalResponse;
use async_trait::async_trait;
use bytes::Bytes;
use log::{error, info, warn};
use pingora_core::prelude::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use signet_core::error::ApiError;
use signet_core::ids::{CompletionId, request_id};
use signet_core::inband;
use signet_core::route::Route;
use signet_core::store::Ticket;
use signet_core::transcript::{
    BodyKind, RequestBodyError, RequestCapture, ResponseCapture, UnsignedReason,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state. Created empty for every request; fields fill in as hooks run.
#[derive(Debug)]
pub struct RequestCtx {
    /// What the request is, by path.
    pub route: Route,
    /// When the request started being processed.
    pub started: Instant,
    /// Request body capture (signed routes only).
    request: Option<RequestCapture>,
    /// Response body capture (2xx responses on signed routes only).
    response: Option<ResponseCapture>,
    /// Status sent to the client (upstream's, or signet's own).
    status: Option<u16>,
    /// An answer signet decided on itself, written by `fail_to_proxy`.
    rejection: Option<ApiError>,
    /// The signature filed for this response, until the response is known delivered.
    sealed: Option<Ticket>,
    /// The completion id, once known (for the access log).
    completion_id: Option<CompletionId>,
    /// Why a signed route ended without a signature.
    unsigned: Option<UnsignedReason>,
    /// Response body bytes hashed (signed routes).
    response_bytes: u64,
    /// Upstream attempts retried on a fresh connection.
    fresh_connection_retries: u32,
    /// The request id: the client's `x-request-id` if well-formed, else drawn.
    pub request_id: String,
    /// A place among the completions in flight (signed routes).
    slot: Option<InFlightSlot>,
    /// The upstream of the current attempt.
    target: Option<UpstreamTarget>,
    /// Upstreams this request could not connect to.
    failed_connects: Vec<SocketAddr>,
    /// When the request head was sent upstream (latency metrics).
    sent_upstream_at: Option<Instant>,
    /// The client asked for the signature in the response itself.
    inband: bool,
    /// This response is a stream that gets its signature appended as an SSE comment.
    inband_trailer: bool,
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self {
            route: Route::PassThrough,
            started: Instant::now(),
            request: None,
            response: None,
            status: None,
            rejection: None,
            sealed: None,
            completion_id: None,
            unsigned: None,
            response_bytes: 0,
            fresh_connection_retries: 0,
            request_id: String::new(),
            slot: None,
            target: None,
            failed_connects: Vec::new(),
            sent_upstream_at: None,
            inband: false,
            inband_trailer: false,
        }
    }
}

impl RequestCtx {
    /// Records a refusal and turns it into the error that stops the request; the envelope
    /// itself is written by `fail_to_proxy`.
    fn refuse(&mut self, refusal: ApiError) -> Box<Error> {
        let status = refusal.status;
        self.rejection = Some(refusal);
        self.unsigned = Some(UnsignedReason::Rejected);
        Error::explain(ErrorType::HTTPStatus(status), "refused by signet")
    }
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

/// Writes a locally produced JSON response.
async fn write_local(
    session: &mut Session,
    answer: &LocalResponse,
    request_id: &str,
) -> Result<()> {
    let mut header = ResponseHeader::build(answer.status, Some(6))?;
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

/// Bodies up to this size are read and checked before any upstream connection is made.
/// It is the capacity of the body buffer Pingora 0.9 keeps for retries (`BODY_BUF_LIMIT`):
/// a body read in `request_filter` with retry buffering on is replayed from that buffer to
/// the upstream, so nothing of a malformed request ever leaves signet. Larger bodies stream
/// through the body filter, which holds them back until they are complete and checked.
const PREREAD_LIMIT: u64 = 64 * 1024;

/// Whether the request declares a body small enough to be read up front.
fn fits_retry_buffer(header: &RequestHeader) -> bool {
    if header.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return false;
    }
    header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length <= PREREAD_LIMIT)
}

/// Reads and checks the whole (small) request body before the upstream is contacted.
async fn preread_body(
    session: &mut Session,
    capture: &mut RequestCapture,
) -> std::result::Result<(), ApiError> {
    session.as_mut().enable_retry_buffering();
    read_rest_of_body(session, capture).await
}

/// Reads what is left of the request body into `capture` and checks it.
async fn read_rest_of_body(
    session: &mut Session,
    capture: &mut RequestCapture,
) -> std::result::Result<(), ApiError> {
    loop {
        match session.as_mut().read_request_body().await {
            Ok(Some(chunk)) => capture.push(&chunk).map_err(request_body_refusal)?,
            Ok(None) => break,
            Err(e) if e.etype() == &ErrorType::ReadTimedout => {
                return Err(ApiError::from_status(408));
            }
            Err(_) => {
                return Err(ApiError::bad_request(
                    "bad_request",
                    "the request body could not be read",
                ));
            }
        }
    }
    capture.finish().map(|_| ()).map_err(request_body_refusal)
}

fn request_body_refusal(error: RequestBodyError) -> ApiError {
    match error {
        RequestBodyError::TooLarge { limit } => ApiError::too_large(limit),
        other => ApiError::bad_request("invalid_request_body", other.to_string()),
    }
}

/// Maps a Pingora failure to the envelope the client gets.
fn envelope_for(error: &Error) -> ApiError {
    match (error.esource(), error.etype()) {
        (_, ErrorType::HTTPStatus(code)) => ApiError::from_status(*code),
        (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
            ApiError::gateway_timeout("the upstream did not answer in time")
        }
        (ErrorSource::Upstream, _) => {
            ApiError::bad_gateway("the upstream is unreachable or failed")
        }
        (ErrorSource::Downstream, ErrorType::ReadTimedout) => ApiError::from_status(408),
        (ErrorSource::Downstream, _) => ApiError::bad_request("bad_request", "malformed request"),
        _ => ApiError::internal(),
    }
}

/// Counts the finished request in the metrics.
fn record_metrics(ctx: &RequestCtx) {
    let route = ctx.route.label();
    let status = ctx.status.map_or_else(|| "0".to_owned(), |s| s.to_string());
    METRICS.requests.with_label_values(&[route, &status]).inc();
    if let Some(sent) = ctx.sent_upstream_at {
        METRICS
            .upstream_total_seconds
            .observe(sent.elapsed().as_secs_f64());
    }
    if let Route::Signed(_) = ctx.route {
        if ctx.sealed.is_some() {
            METRICS.signed.with_label_values(&[route]).inc();
        } else if let Some(reason) = ctx.unsigned {
            METRICS.unsigned.with_label_values(&[reason.as_str()]).inc();
        }
    }
    if let Some(request) = &ctx.request {
        METRICS
            .hashed_bytes
            .with_label_values(&["request"])
            .inc_by(request.hashed_bytes());
        METRICS
            .hashed_bytes
            .with_label_values(&["response"])
            .inc_by(ctx.response_bytes);
    }
}

/// Whether the upstream closed the connection before sending any byte of a response: a
/// reset (our bytes arrived at a closed socket), a broken pipe, or an end of stream while
/// reading the response head with nothing read.
fn closed_idle_without_answer(error: &Error) -> bool {
    match error.etype() {
        ErrorType::ConnectionClosed => error
            .context
            .as_ref()
            .is_some_and(|c| c.as_str().contains("bytes already read: 0")),
        ErrorType::ReadError | ErrorType::WriteError => error
            .root_cause()
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            }),
        _ => false,
    }
}

/// Why a failed request ended unsigned.
fn unsigned_reason_for(error: &Error) -> UnsignedReason {
    match error.esource() {
        ErrorSource::Downstream => UnsignedReason::ClientAbort,
        _ => UnsignedReason::UpstreamAbort,
    }
}

impl SignetProxy {
    /// Writes the outcome of the in-band JSON path and ends the request.
    async fn write_inband(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        outcome: crate::gateway::InbandOutcome,
    ) -> Result<bool> {
        ctx.status = Some(outcome.status);
        ctx.target = outcome.target;
        ctx.unsigned = outcome.unsigned;
        if let Some(sealed) = outcome.sealed {
            ctx.sealed = Some(sealed.ticket);
            ctx.completion_id = Some(sealed.id);
            ctx.response_bytes = outcome.body.len() as u64;
        }
        let mut header = ResponseHeader::build(outcome.status, Some(outcome.headers.len() + 2))?;
        for (name, value) in outcome.headers {
            header.append_header(name, value)?;
        }
        header.insert_header(http::header::CONTENT_LENGTH, outcome.body.len())?;
        header.insert_header("x-request-id", ctx.request_id.as_str())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(outcome.body), true)
            .await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for SignetProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    /// No downstream modules. Pingora's default adds a (disabled) response compression
    /// module that still runs on every chunk; signet must never re-encode a body anyway,
    /// since the hash has to be over exactly the bytes the client receives.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        crate::hardening::head_received();
        let header = session.req_header();
        ctx.request_id = request_id(header.headers.get("x-request-id").map(|v| v.as_bytes()));
        ctx.route = Route::classify(header.uri.path());
        if let Err(refusal) = self.gateway.check_head_size(header) {
            session.set_keepalive(None);
            return Err(ctx.refuse(refusal));
        }
        let protected = !matches!(ctx.route, Route::Health | Route::AttestationReport);
        if protected && !self.gateway.authorized(header) {
            return Err(ctx.refuse(ApiError::unauthorized(
                "missing or invalid bearer token (Authorization: Bearer <token>)",
            )));
        }
        if ctx.route.is_local() {
            let answer = self.gateway.answer_local(ctx.route, header).await;
            ctx.status = Some(answer.status);
            write_local(session, &answer, &ctx.request_id).await?;
            return Ok(true);
        }
        // A client that stalls while sending its body is cut off (slow-loris).
        let body_timeout = self.gateway.settings().client_timeouts.body;
        session
            .as_downstream_mut()
            .set_read_timeout(Some(body_timeout));
        if let Route::Signed(_) = ctx.route {
            let header = session.req_header();
            let mut capture = match self.gateway.admit_signed(header) {
                Ok(capture) => capture,
                Err(refusal) => {
                    // The body was not read: do not try to reuse this connection.
                    session.set_keepalive(None);
                    return Err(ctx.refuse(refusal));
                }
            };
            if session.as_mut().is_body_empty() {
                // A bodiless request would reach the upstream complete with its head alone.
                return Err(
                    ctx.refuse(request_body_refusal(RequestBodyError::MalformedJson(
                        "the request has no body".to_owned(),
                    ))),
                );
            }
            match self.gateway.enter() {
                Ok(slot) => ctx.slot = Some(slot),
                Err(refusal) => {
                    session.set_keepalive(None);
                    return Err(ctx.refuse(refusal));
                }
            }
            // SDKs close their end as soon as they have read `data: [DONE]`, often before
            // the upstream's end-of-body arrives; let the response finish (a real disconnect
            // still surfaces when a write fails) so a fully delivered stream gets signed.
            session.as_downstream_mut().set_abort_on_close(false);
            ctx.inband = inband::requested(
                session
                    .req_header()
                    .headers
                    .get(inband::REQUEST_HEADER)
                    .map(|v| v.as_bytes()),
            );
            if fits_retry_buffer(session.req_header()) {
                preread_body(session, &mut capture)
                    .await
                    .map_err(|refusal| {
                        session.set_keepalive(None);
                        ctx.refuse(refusal)
                    })?;
            }
            if ctx.inband && capture.complete_body().is_none() {
                // The in-band JSON path sends the request itself: it needs the whole body.
                read_rest_of_body(session, &mut capture)
                    .await
                    .map_err(|refusal| {
                        session.set_keepalive(None);
                        ctx.refuse(refusal)
                    })?;
            }
            if ctx.inband && capture.stream() != Some(true) {
                let outcome = self
                    .gateway
                    .fetch_for_inband(session.req_header(), &capture, &ctx.request_id)
                    .await;
                ctx.request = Some(capture);
                return self.write_inband(session, ctx, outcome).await;
            }
            ctx.request = Some(capture);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // Called once per attempt: a retried attempt replays the body from its start.
        if let Some(capture) = ctx.request.as_mut() {
            capture.restart_if_incomplete();
        }
        let Some(target) = self.gateway.pick_upstream(&ctx.failed_connects).cloned() else {
            return Err(ctx.refuse(ApiError::bad_gateway(
                "no upstream is available (every upstream failed to connect)",
            )));
        };
        let stream = ctx.request.as_ref().and_then(RequestCapture::stream);
        let mut peer = self.gateway.peer_for(&target, stream);
        if ctx.fresh_connection_retries > 0 {
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
        // Nothing was sent: another upstream, if there is one left, may take the request.
        if let Some(target) = &ctx.target {
            ctx.failed_connects.push(target.addr);
        }
        if ctx.failed_connects.len() < self.gateway.upstream_count() {
            e.set_retry(true);
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
        self.gateway.prepare_upstream_request(
            upstream_request,
            ctx.request.is_some(),
            target,
            &ctx.request_id,
        )
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(capture) = ctx.request.as_mut() else {
            return Ok(());
        };
        if let Some(complete) = capture.complete_body() {
            // A retried attempt: forward the same bytes again, hashed once already.
            *body = Some(if end_of_stream {
                complete.clone()
            } else {
                Bytes::new()
            });
            return Ok(());
        }
        if let Some(chunk) = body.take() {
            if let Err(e) = capture.push(&chunk) {
                return Err(ctx.refuse(request_body_refusal(e)));
            }
        }
        if !end_of_stream {
            // Hold the body until it is complete and checked; an empty chunk sends nothing.
            *body = Some(Bytes::new());
            return Ok(());
        }
        match capture.finish() {
            Ok(complete) => {
                *body = Some(complete);
                Ok(())
            }
            Err(e) => Err(ctx.refuse(request_body_refusal(e))),
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = upstream_response.status;
        if status.is_informational() {
            return Ok(());
        }
        ctx.status = Some(status.as_u16());
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        let http10_client = session.req_header().version == http::Version::HTTP_10;
        if http10_client
            && upstream_response
                .remove_header(&http::header::TRANSFER_ENCODING)
                .is_some()
        {
            // An HTTP/1.0 client cannot read chunked framing (Pingora would pass it on): the
            // body goes out as it comes, ended by closing the connection.
            upstream_response.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        if let Some(sent) = ctx.sent_upstream_at {
            METRICS
                .upstream_first_byte_seconds
                .observe(sent.elapsed().as_secs_f64());
        }
        if ctx.request.is_none() {
            return Ok(());
        }
        if status.is_success() {
            let content_type = upstream_response
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes());
            let kind = BodyKind::from_content_type(content_type);
            if ctx.inband && kind == BodyKind::EventStream {
                // The body grows by the signature comment: it cannot keep a fixed length.
                ctx.inband_trailer = true;
                if upstream_response
                    .remove_header(&http::header::CONTENT_LENGTH)
                    .is_some()
                {
                    if session.req_header().version == http::Version::HTTP_11 {
                        upstream_response
                            .insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                    } else if http10_client {
                        upstream_response.insert_header(http::header::CONNECTION, "close")?;
                        session.set_keepalive(None);
                    }
                }
                upstream_response.insert_header(inband::REQUEST_HEADER, inband::REQUEST_VALUE)?;
            }
            ctx.response = Some(ResponseCapture::new(kind, self.gateway.scan_limits()));
        } else {
            ctx.unsigned = Some(UnsignedReason::UpstreamError);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        let Some(capture) = ctx.response.as_mut() else {
            return Ok(None);
        };
        if let Some(bytes) = body {
            capture.push(bytes);
        }
        if end_of_stream {
            if let Some(capture) = ctx.response.take() {
                ctx.response_bytes = capture.bytes();
                let request_sha256 = ctx.request.as_ref().and_then(RequestCapture::sha256);
                match self.gateway.seal(capture, request_sha256) {
                    Ok(sealed) => {
                        ctx.sealed = Some(sealed.ticket);
                        ctx.completion_id = Some(sealed.id);
                        if ctx.inband_trailer {
                            // After the signed bytes, never among them.
                            let mut out = body.take().map(Vec::from).unwrap_or_default();
                            out.extend(inband::stream_trailer(&sealed.inband));
                            *body = Some(Bytes::from(out));
                        }
                    }
                    Err((reason, id)) => {
                        ctx.unsigned = Some(reason);
                        ctx.completion_id = id;
                    }
                }
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let client_gone = *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        let error_code = if session.response_written().is_some() || client_gone {
            // Too late for an envelope: the client already has (part of) a response, or is gone.
            0
        } else {
            let envelope = ctx.rejection.clone().unwrap_or_else(|| envelope_for(e));
            let answer = LocalResponse::from(envelope);
            if let Err(write_error) = write_local(session, &answer, &ctx.request_id).await {
                warn!("could not write error response: {write_error}");
            }
            answer.status
        };
        if error_code != 0 {
            ctx.status = Some(error_code);
        }
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
        let nothing_answered = session.response_written().is_none() && ctx.status.is_none();
        let replayable = !session.as_ref().retry_buffer_truncated();
        let retry = if !(client_reused && nothing_answered && replayable) {
            false
        } else if session.req_header().method.is_idempotent() {
            // Pingora's own rule for idempotent requests on a reused connection.
            let mut decided = e.retry;
            decided.decide_reuse(client_reused);
            decided.retry()
        } else {
            // A POST is sent again only when a connection that sat idle in the pool was
            // closed by the upstream without a single byte of answer (RFC 9112 §9.3.1: the
            // request was never applied; the case HTTP clients such as Go's retry), and only
            // once: the retry goes out on a fresh connection, never another pooled one.
            ctx.fresh_connection_retries == 0 && closed_idle_without_answer(&e)
        };
        if retry {
            ctx.fresh_connection_retries += 1;
            METRICS.upstream_retries.inc();
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        e.set_retry(retry);
        e
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        // Refusals are the client's mistake; the access line records them.
        ctx.rejection.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if let Some(unfinished) = ctx.response.take() {
            // The body never reached its end: keep what is known for the access line.
            ctx.completion_id = unfinished.id_so_far().cloned();
            ctx.response_bytes = unfinished.bytes();
        }
        if let Some(error) = e {
            // Clients such as the OpenAI SDKs close as soon as they have read `data: [DONE]`,
            // which can surface as an error after the last body byte was already written.
            let all_written =
                session.as_downstream().body_bytes_sent() as u64 >= ctx.response_bytes;
            if ctx.sealed.is_some() && all_written {
                // Every signed byte reached the client's socket: the signature stands.
            } else if let Some(ticket) = ctx.sealed.take() {
                // Signed at end of stream, but the last bytes never reached the client.
                if let Some(id) = &ctx.completion_id {
                    self.gateway.retract(ticket, id);
                }
                ctx.unsigned = Some(unsigned_reason_for(error));
            } else if ctx.request.is_some() && ctx.unsigned.is_none() {
                ctx.unsigned = Some(unsigned_reason_for(error));
            }
        } else if ctx.request.is_some() && ctx.sealed.is_none() && ctx.unsigned.is_none() {
            // The response ended without passing through the body filter's end of stream
            // (e.g. a bodiless 2xx): nothing was signed.
            ctx.unsigned = Some(UnsignedReason::NoId);
        }
        let header = session.req_header();
        let signed = ctx.sealed.is_some();
        info!(
            target: "signet::access",
            "request_id={} route={} method={} status={} duration_ms={:.1} upstream={} id={} signed={} reason={} response_bytes={} sent_bytes={} retries={} error={}",
            ctx.request_id,
            ctx.route.label(),
            header.method,
            ctx.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            ctx.started.elapsed().as_secs_f64() * 1000.0,
            ctx.target
                .as_ref()
                .map_or_else(|| "-".to_owned(), |t| t.addr.to_string()),
            ctx.completion_id.as_ref().map_or("-", CompletionId::as_str),
            signed,
            ctx.unsigned.map_or("-", UnsignedReason::as_str),
            ctx.response_bytes,
            session.as_downstream().body_bytes_sent(),
            ctx.fresh_connection_retries,
            e.map_or_else(|| "-".to_owned(), |e| format!("{:?}", e.etype())),
        );
        if ctx.unsigned == Some(UnsignedReason::SigningFailed) {
            error!("a completed response could not be signed");
        }
        record_metrics(ctx);
    }
}
