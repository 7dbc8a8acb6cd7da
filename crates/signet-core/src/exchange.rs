//! One request's life as a state machine, free of Pingora: the proxy's hooks translate what
//! they see into plain facts (the request head, body chunks, the response head, how the
//! attempt failed, how many bytes the client's socket accepted) and carry out what this
//! module decides (refuse with this envelope, read the body first, hold or release these
//! bytes, edit these response headers, sign this exchange, retry or not, and whether a
//! signature made at the end of a stream stands).
//!
//! Every rule that makes a signature right lives here, each one a unit test on values:
//! - **Admission**: head size, method, declared length, an empty body; which requests are
//!   read whole before any upstream is contacted.
//! - **Request body**: hashed and held until complete and checked, so malformed input never
//!   reaches the upstream; a retried attempt replays the same bytes, hashed once.
//! - **Response**: 2xx on a signed route is hashed as it streams; the id is found on the
//!   way; the in-band trailer goes after the signed bytes, never among them.
//! - **Retry**: a POST goes again only when the upstream (never the client) closed an idle
//!   pooled connection without a byte of answer, and only once, on a fresh connection.
//! - **Settle**: a signature stands only if every byte it covers reached the client's socket.
//! - **E2EE v2**: a request that asks for it is checked with its head, read whole, its fields
//!   decrypted before it goes upstream (the received bytes stay what the EIP-191 text
//!   hashes); its answer's content fields are encrypted before they are hashed and sent.

use crate::e2ee::fields::ResponseSealer;
use crate::e2ee::stream::ResponseEncryptor;
use crate::e2ee::{E2eeService, Negotiated, RequestHeaders as E2eeHeaders};
use crate::error::ApiError;
use crate::ids::CompletionId;
use crate::inband::{self, InbandSignature};
use crate::route::{BodyFormat, IdRule, Route, RouteTable};
use crate::store::Ticket;
use crate::transcript::{
    BodyKind, CompletedExchange, RequestBodyError, RequestCapture, ResponseCapture, ScanLimits,
    UnsignedReason,
};
use bytes::Bytes;

/// Request bodies up to this size (declared by `Content-Length`) are read and checked before
/// any upstream connection is made. It is the size of the body buffer Pingora keeps for
/// retries, so such a body can be replayed to a second attempt from that buffer.
pub const PREREAD_LIMIT: u64 = 64 * 1024;

/// Header-name prefix that only signet may emit; the same names from an upstream are dropped.
pub const SIGNET_HEADER_PREFIX: &str = "x-signet-";

/// Whether a response header name is one of signet's own (`x-signet-*`), which an upstream
/// must never be able to supply.
pub fn is_signet_header(name: &str) -> bool {
    name.len() >= SIGNET_HEADER_PREFIX.len()
        && name.as_bytes()[..SIGNET_HEADER_PREFIX.len()]
            .eq_ignore_ascii_case(SIGNET_HEADER_PREFIX.as_bytes())
}

/// The limits an exchange is held to.
#[derive(Debug, Clone)]
pub struct ExchangePolicy {
    /// Largest request head, in bytes (method, target, header names and values).
    pub max_header_bytes: usize,
    /// Largest request body on a signed route, in bytes.
    pub max_request_body: usize,
    /// How far into a response its id is looked for.
    pub scan_limits: ScanLimits,
    /// Longest time from the request head to the end of its body on a signed route.
    pub body_deadline: std::time::Duration,
    /// Which routes are signed, and how.
    pub routes: std::sync::Arc<RouteTable>,
    /// The E2EE v2 keys and replay state (`None`: the service terminates no E2EE).
    pub e2ee: Option<std::sync::Arc<E2eeService>>,
}

/// HTTP version of the client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.0: no chunked framing; a body of unknown length ends with the connection.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// HTTP/2 (framing is the protocol's own).
    Http2,
}

/// The request head, as facts.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The path without the query, as sent (not decoded).
    pub path: &'a str,
    /// The client's HTTP version.
    pub version: HttpVersion,
    /// Size of the head: method, target and every header name and value (+4 per header).
    pub head_bytes: usize,
    /// The `Content-Length` value, if any.
    pub content_length: Option<&'a [u8]>,
    /// Whether a `Transfer-Encoding` header is present.
    pub transfer_encoding: bool,
    /// Whether the request has no body at all (framing says so).
    pub body_empty: bool,
    /// Whether the credentials are accepted (always true without configured tokens).
    pub authorized: bool,
    /// The `x-signet-signature` request header, if any.
    pub inband: Option<&'a [u8]>,
    /// signet's own id for this request (a body without an id of its own is filed under
    /// `signet-<request id>`).
    pub request_id: &'a str,
    /// The E2EE v2 request headers.
    pub e2ee: E2eeHeaders<'a>,
    /// The Unix time the head came (E2EE timestamps and replay window).
    pub now_unix: u64,
}

/// A refusal: the envelope to answer with, and whether the connection must close (the body
/// was not read, so the next bytes on it are not a request head).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The envelope.
    pub error: ApiError,
    /// Close the client connection after answering.
    pub close: bool,
}

/// What to do with a request once its head is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadDecision {
    /// Answer with this envelope; nothing reaches the upstream.
    Refuse(Refusal),
    /// signet answers this route itself.
    Local(Route),
    /// Forward unchanged; never signed.
    Forward,
    /// A signed route: take a concurrency slot, then read the whole body first when
    /// `read_body_first` says so (else it streams through, held until complete).
    Admit {
        /// Read and check the whole body before contacting the upstream.
        read_body_first: bool,
    },
}

/// One upstream attempt, as the exchange sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptPlan {
    /// The request's `stream` flag, once its body is known (sets the upstream read timeout).
    pub stream: Option<bool>,
    /// Use a connection of its own, never a pooled one (a retry after the upstream closed).
    pub fresh_connection: bool,
}

/// The response head, as facts.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<&'a [u8]>,
    /// Whether a `Content-Length` header is present.
    pub content_length: bool,
    /// Whether a `Transfer-Encoding` header is present.
    pub transfer_encoding: bool,
    /// The client's HTTP version.
    pub client_version: HttpVersion,
}

/// Edits to the response head before it goes to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseEdits {
    /// Remove every `x-signet-*` header the upstream sent.
    pub strip_signet_headers: bool,
    /// Remove `Transfer-Encoding`.
    pub remove_transfer_encoding: bool,
    /// Remove `Content-Length` (the body grows by the in-band trailer).
    pub remove_content_length: bool,
    /// Add `Transfer-Encoding: chunked`.
    pub add_chunked: bool,
    /// Add `Connection: close` and do not reuse the client connection.
    pub close: bool,
    /// Add `x-signet-signature: in-band` (the stream ends with the signature comment).
    pub mark_inband: bool,
    /// Add the request id header.
    pub request_id: bool,
    /// Add `x-signet-completion-id` with this id (a body that carries no id of its own).
    pub completion_id: Option<String>,
    /// Add `X-E2EE-Applied: true` and `X-E2EE-Algo` with this algo.
    pub e2ee_algo: Option<&'static str>,
    /// Add `X-E2EE-Version` with this version (ACI E2EE v2: `2`).
    pub e2ee_version: Option<&'static str>,
}

impl ResponseEdits {
    /// The body will not be the upstream's fixed length (it grows, or must not be held back
    /// until its end): drop `Content-Length` and frame it as the client's version allows,
    /// chunked for HTTP/1.1, delimited by the close for HTTP/1.0, by frames for HTTP/2.
    fn drop_fixed_length(&mut self, client_version: HttpVersion) {
        self.remove_content_length = true;
        match client_version {
            HttpVersion::Http11 => self.add_chunked = true,
            HttpVersion::Http10 => self.close = true,
            HttpVersion::Http2 => {}
        }
    }
}

/// What the response body filter does after a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyStep {
    /// Pass the chunk on.
    Continue,
    /// The body ended: sign this exchange, then report back with [`Exchange::sealed`] or
    /// [`Exchange::seal_failed`].
    Seal(CompletedExchange),
}

/// Which side an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Downstream,
    /// The upstream.
    Upstream,
    /// signet itself.
    Internal,
}

/// How an attempt failed, as far as the retry and envelope rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// signet decided this status itself (a refusal).
    Status(u16),
    /// A read or write timed out.
    Timeout,
    /// The connection closed (end of stream while reading).
    Closed {
        /// Not a single byte of the response had been read.
        before_answer: bool,
    },
    /// A reset or broken pipe.
    Reset,
    /// Another read or write error.
    Io,
    /// Anything else (a protocol error, an internal failure).
    Other,
}

/// An error in flight, as facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptError {
    /// Where it came from.
    pub side: Side,
    /// What it was.
    pub failure: Failure,
}

/// The facts the retry rule needs beyond the error itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryFacts {
    /// The method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE).
    pub idempotent: bool,
    /// The upstream connection came from the pool (was idle before this request).
    pub reused_connection: bool,
    /// Nothing of a response has reached the client or been read from the upstream.
    pub nothing_answered: bool,
    /// The request body can be replayed (it was not truncated from the retry buffer).
    pub replayable: bool,
    /// Pingora's own verdict for idempotent requests on a reused connection.
    pub framework_would_retry: bool,
}

/// How a request ended, as facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The error that ended it, if any.
    pub error: Option<Side>,
    /// Response body bytes the client's socket accepted.
    pub client_accepted: u64,
}

/// What the client's socket says, looked at without reading from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Still open (or nothing can be told).
    Open,
    /// The client closed its end (FIN).
    Closed,
    /// The connection was reset: the client closed with bytes unread, or bytes arrived
    /// after it had closed.
    Reset,
}

/// What became of the exchange's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Not a signed route.
    NotSigned,
    /// Signed, and every signed byte reached the client.
    Stands,
    /// Signed at end of stream, but the last bytes never reached the client: take it back.
    Retract(Ticket, CompletionId),
    /// No signature, for this reason.
    Unsigned(UnsignedReason),
}

/// One request's state. Created per request; the proxy's hooks feed it facts.
#[derive(Debug)]
pub struct Exchange {
    policy: ExchangePolicy,
    route: Route,
    request: Option<RequestCapture>,
    response: Option<ResponseCapture>,
    status: Option<u16>,
    rejection: Option<ApiError>,
    sealed: Option<Ticket>,
    completion_id: Option<CompletionId>,
    unsigned: Option<UnsignedReason>,
    response_bytes: u64,
    fresh_connection_retries: u32,
    inband: bool,
    inband_trailer: bool,
    /// Neutralises upstream lines that would pass for signet's trailer (in-band streams).
    trailer_guard: Option<inband::TrailerGuard>,
    read_body_first: bool,
    /// The declared body fits Pingora's retry buffer (read up front, replayed from it).
    fits_retry_buffer: bool,
    /// Where the response's id is (signed routes).
    id_rule: IdRule,
    /// signet's own id for a response without one.
    generated_id: Option<CompletionId>,
    /// The upstream delimits the response body by closing the connection: its end cannot
    /// be told from a cut, so completeness is read from the body itself.
    close_delimited: bool,
    /// The response is an event stream.
    event_stream: bool,
    /// The last bytes of the response body (to see how it ends).
    tail: Tail,
    /// The client was seen gone before the whole body could reach it.
    client_left: bool,
    /// The response hash state just before its end, kept when the in-band trailer follows.
    response_midstate: Option<sha2::Sha256>,
    /// sha256 of every response body byte emitted once sealed, trailer included.
    emitted_sha256: Option<[u8; 32]>,
    /// An E2EE v2 request: its session, its restored body, its answer's encryptor.
    /// Boxed: most exchanges are plain, and every open stream would carry its room.
    e2ee: Option<Box<E2eeExchange>>,
}

/// The E2EE side of one exchange.
#[derive(Debug)]
struct E2eeExchange {
    session: Negotiated,
    /// The decrypted body as forwarded, its sha256 and its model.
    restored: Option<(Bytes, [u8; 32], String)>,
    encryptor: Option<ResponseEncryptor>,
}

/// The last few bytes of a body.
#[derive(Debug, Default)]
struct Tail {
    bytes: [u8; 32],
    len: usize,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        let keep = self.bytes.len();
        if chunk.len() >= keep {
            self.bytes.copy_from_slice(&chunk[chunk.len() - keep..]);
            self.len = keep;
            return;
        }
        let total = (self.len + chunk.len()).min(keep);
        let old = total - chunk.len();
        self.bytes.copy_within(self.len - old..self.len, 0);
        self.bytes[old..total].copy_from_slice(chunk);
        self.len = total;
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Whether an event stream ends with the `data: [DONE]` event and the blank line after it:
/// the only sign of a complete OpenAI stream when the connection's close ends the body.
pub fn ends_with_done_event(tail: &[u8]) -> bool {
    let body = tail.trim_ascii_end();
    let blank_line = [&b"\n\n"[..], b"\r\n\r\n", b"\r\r"]
        .iter()
        .any(|end| tail.ends_with(end));
    blank_line
        && (body.ends_with(b"\ndata: [DONE]")
            || body.ends_with(b"\ndata:[DONE]")
            || body == b"data: [DONE]"
            || body == b"data:[DONE]"
            || body.ends_with(b"\rdata: [DONE]")
            || body.ends_with(b"\rdata:[DONE]"))
}

fn body_refusal(error: RequestBodyError) -> ApiError {
    match error {
        RequestBodyError::TooLarge { limit } => ApiError::too_large(limit),
        other => ApiError::bad_request("invalid_request_body", other.to_string()),
    }
}

/// The envelope a failure is answered with, when nothing of a response was sent yet.
pub fn envelope_for(error: AttemptError) -> ApiError {
    match (error.side, error.failure) {
        (_, Failure::Status(code)) => ApiError::from_status(code),
        (Side::Upstream, Failure::Timeout) => {
            ApiError::gateway_timeout("the upstream did not answer in time")
        }
        (Side::Upstream, _) => ApiError::bad_gateway("the upstream is unreachable or failed"),
        (Side::Downstream, Failure::Timeout) => ApiError::from_status(408),
        (Side::Downstream, _) => ApiError::bad_request("bad_request", "malformed request"),
        (Side::Internal, _) => ApiError::internal(),
    }
}

fn unsigned_for(side: Side) -> UnsignedReason {
    match side {
        Side::Downstream => UnsignedReason::ClientAbort,
        Side::Upstream | Side::Internal => UnsignedReason::UpstreamAbort,
    }
}

impl Exchange {
    /// A new exchange, before its head is known.
    pub fn new(policy: ExchangePolicy) -> Self {
        Self {
            policy,
            route: Route::PassThrough,
            request: None,
            response: None,
            status: None,
            rejection: None,
            sealed: None,
            completion_id: None,
            unsigned: None,
            response_bytes: 0,
            fresh_connection_retries: 0,
            inband: false,
            inband_trailer: false,
            trailer_guard: None,
            read_body_first: false,
            fits_retry_buffer: false,
            id_rule: IdRule::top_level_id(),
            generated_id: None,
            close_delimited: false,
            event_stream: false,
            tail: Tail::default(),
            client_left: false,
            response_midstate: None,
            emitted_sha256: None,
            e2ee: None,
        }
    }

    /// Records a refusal: nothing was signed, and this is the envelope.
    pub fn refuse(&mut self, error: ApiError, close: bool) -> Refusal {
        self.rejection = Some(error.clone());
        self.unsigned = Some(UnsignedReason::Rejected);
        Refusal { error, close }
    }

    /// Decides what to do with a request from its head alone.
    pub fn on_request_head(&mut self, head: &RequestHead<'_>) -> HeadDecision {
        self.route = self.policy.routes.classify(head.path);
        if head.head_bytes > self.policy.max_header_bytes {
            return HeadDecision::Refuse(self.refuse(ApiError::from_status(431), true));
        }
        if let Route::Ambiguous = self.route {
            return HeadDecision::Refuse(self.refuse(
                ApiError::bad_request(
                    "ambiguous_path",
                    "this path spells a signet route in another form (percent-encoding, \
                     dot segments, empty segments, a trailing slash, parameters or case); \
                     send it exactly as documented",
                ),
                true,
            ));
        }
        if !self.route.is_public() && !head.authorized {
            return HeadDecision::Refuse(self.refuse(
                ApiError::unauthorized(
                    "missing or invalid bearer token (Authorization: Bearer <token>)",
                ),
                false,
            ));
        }
        if self.route.is_local() {
            return HeadDecision::Local(self.route);
        }
        let Route::Signed(signed) = self.route else {
            return HeadDecision::Forward;
        };
        let (id_rule, body_format) = match self.policy.routes.spec(signed) {
            Some(spec) => (spec.id.clone(), spec.body),
            None => (IdRule::top_level_id(), BodyFormat::Json),
        };
        if head.method != "POST" {
            return HeadDecision::Refuse(self.refuse(ApiError::method_not_allowed("POST"), true));
        }
        let limit = self.policy.max_request_body;
        let declared = match head.content_length {
            None => None,
            Some(value) => match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(length) => Some(length),
                None => {
                    return HeadDecision::Refuse(self.refuse(
                        ApiError::bad_request("bad_request", "invalid Content-Length"),
                        true,
                    ));
                }
            },
        };
        if declared.is_some_and(|length| length > limit as u64) {
            return HeadDecision::Refuse(self.refuse(ApiError::too_large(limit), true));
        }
        if head.body_empty {
            // A bodiless request would reach the upstream complete with its head alone.
            return HeadDecision::Refuse(self.refuse(
                body_refusal(RequestBodyError::MalformedJson(
                    "the request has no body".to_owned(),
                )),
                false,
            ));
        }
        self.inband = inband::requested(head.inband);
        match self.check_e2ee(head) {
            Ok(Some(session)) => {
                // The in-band JSON path sends the body it received: never a ciphertext.
                self.inband = false;
                self.e2ee = Some(Box::new(E2eeExchange {
                    session,
                    restored: None,
                    encryptor: None,
                }));
            }
            Ok(None) => {}
            Err(error) => return HeadDecision::Refuse(self.refuse(error, true)),
        }
        let fits_retry_buffer =
            !head.transfer_encoding && declared.is_some_and(|length| length <= PREREAD_LIMIT);
        self.fits_retry_buffer = fits_retry_buffer;
        if id_rule == IdRule::Generated {
            self.generated_id = CompletionId::parse(&format!("signet-{}", head.request_id)).ok();
        }
        self.id_rule = id_rule;
        self.request = Some(match body_format {
            BodyFormat::Json => RequestCapture::new(limit),
            // An upload streams through; it is never held, so never read whole up front
            // beyond what fits the retry buffer.
            BodyFormat::Opaque => {
                self.inband = false;
                RequestCapture::opaque(limit)
            }
        });
        // The in-band JSON path sends the request itself: it needs the whole body. An E2EE
        // body is decrypted once complete either way: read up front when it fits the retry
        // buffer, else held as it streams (the upstream then gets it chunked, its length
        // unknown until it is restored).
        self.read_body_first = fits_retry_buffer || self.inband;
        HeadDecision::Admit {
            read_body_first: self.read_body_first,
        }
    }

    /// Hashes and holds a piece of a body being read up front.
    pub fn push_request_body(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let Some(capture) = self.request.as_mut() else {
            return Ok(());
        };
        match capture.push(chunk) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refuse(body_refusal(e), true)),
        }
    }

    /// Ends a body read up front: checked, or refused.
    pub fn finish_request_body(&mut self) -> Result<(), Refusal> {
        let Some(capture) = self.request.as_mut() else {
            return Ok(());
        };
        match capture.finish() {
            Ok(complete) => self.restore_e2ee(&complete),
            Err(e) => Err(self.refuse(body_refusal(e), true)),
        }
    }

    /// Checks the E2EE headers of a signed request: a session when it asks for v2.
    fn check_e2ee(&self, head: &RequestHead<'_>) -> Result<Option<Negotiated>, ApiError> {
        let Some(service) = &self.policy.e2ee else {
            return if head.e2ee.any() {
                Err(crate::e2ee::E2eeError::InvalidVersion.to_api_error())
            } else {
                Ok(None)
            };
        };
        service
            .check_request(&head.e2ee, head.path, head.now_unix)
            .map_err(|e| e.to_api_error())
    }

    /// Decrypts an E2EE request's complete body (nothing when the request is not E2EE):
    /// what goes upstream from now on.
    fn restore_e2ee(&mut self, complete: &Bytes) -> Result<(), Refusal> {
        let (Some(state), Some(service)) = (self.e2ee.as_mut(), self.policy.e2ee.as_ref()) else {
            return Ok(());
        };
        if state.restored.is_some() {
            return Ok(());
        }
        match service.restore_request(&state.session, complete) {
            Ok((body, model)) => {
                let sha256: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&body).into();
                state.restored = Some((Bytes::from(body), sha256, model));
                Ok(())
            }
            Err(e) => Err(self.refuse(e.to_api_error(), true)),
        }
    }

    /// The body as it goes upstream when it differs from the one received (an E2EE
    /// request, decrypted): its length sets the upstream request's `Content-Length`.
    pub fn forwarded_body(&self) -> Option<&Bytes> {
        self.e2ee
            .as_ref()
            .and_then(|state| state.restored.as_ref())
            .map(|(body, _, _)| body)
    }

    /// What ACI's `request.received` and `request.forwarded` cover, when it is not the
    /// received body: an E2EE request's restored plaintext, and its sha256.
    pub fn restored_request(&self) -> Option<(&[u8], [u8; 32])> {
        self.e2ee
            .as_ref()
            .and_then(|state| state.restored.as_ref())
            .map(|(body, sha256, _)| (body.as_ref(), *sha256))
    }

    /// Whether this is an E2EE v2 exchange.
    pub fn is_e2ee(&self) -> bool {
        self.e2ee.is_some()
    }

    /// The body could not be read up front.
    pub fn request_body_unreadable(&mut self, timed_out: bool) -> Refusal {
        let error = if timed_out {
            ApiError::from_status(408)
        } else {
            ApiError::bad_request("bad_request", "the request body could not be read")
        };
        self.refuse(error, true)
    }

    /// Whether the body read up front fits Pingora's retry buffer, so that a retried attempt
    /// can replay it from there (decided from the declared length with the head).
    pub fn fits_retry_buffer(&self) -> bool {
        self.fits_retry_buffer
    }

    /// Bytes of request body this exchange makes signet hold in memory: the body kept to be
    /// checked and signed, and its copy in Pingora's retry buffer when it is replayed from
    /// there. Held until the exchange ends; bounded overall by `limits.body_memory_total`.
    pub fn held_request_bytes(&self) -> usize {
        let held = self.request.as_ref().map_or(0, RequestCapture::held_bytes);
        if self.fits_retry_buffer {
            held.saturating_mul(2)
        } else {
            held
        }
    }

    /// Whether a client that closes its connection before the response is complete may be
    /// let finish: only a stream (OpenAI SDKs close as soon as they have read
    /// `data: [DONE]`, sometimes before the upstream's end-of-body arrives). A non-streamed
    /// request whose client closes before the answer is abandoned, and never signed.
    pub fn tolerates_client_close(&self) -> bool {
        self.request
            .as_ref()
            .is_some_and(|r| r.stream() == Some(true))
    }

    /// Checks a signed request's body against its deadline: `elapsed` since the head came. A
    /// body trickled in (a byte every few seconds never trips the per-read timeout) is cut
    /// off with a 408 once the deadline passes, freeing its slot.
    pub fn body_overdue(&mut self, elapsed: std::time::Duration) -> Option<Refusal> {
        let pending = self.request.as_ref().is_some_and(|r| !r.is_complete());
        (pending && elapsed > self.policy.body_deadline)
            .then(|| self.refuse(ApiError::from_status(408), true))
    }

    /// Whether signet sends this request itself and answers with the signature in the
    /// response headers: in-band asked for, and the request is not a stream.
    pub fn serves_inband_json(&self) -> bool {
        self.inband
            && self
                .request
                .as_ref()
                .is_some_and(|r| r.complete_body().is_some() && r.stream() != Some(true))
    }

    /// The complete, checked request body (once read).
    pub fn request_body(&self) -> Option<&Bytes> {
        self.request
            .as_ref()
            .and_then(RequestCapture::complete_body)
    }

    /// sha256 of the complete request body (once read).
    pub fn request_sha256(&self) -> Option<[u8; 32]> {
        self.request.as_ref().and_then(RequestCapture::sha256)
    }

    /// Starts an upstream attempt: a retried one replays the body from its start.
    pub fn start_attempt(&mut self) -> AttemptPlan {
        if let Some(capture) = self.request.as_mut() {
            capture.restart_if_incomplete();
        }
        AttemptPlan {
            stream: self.request.as_ref().and_then(RequestCapture::stream),
            fresh_connection: self.fresh_connection_retries > 0,
        }
    }

    /// Whether the upstream request is on a signed route (its `Accept-Encoding` goes, so
    /// the hashed bytes are the delivered bytes).
    pub fn is_signed_route(&self) -> bool {
        self.request.is_some()
    }

    /// The request body on its way upstream: what to send for this piece. A body being
    /// streamed is held (an empty chunk sends nothing) until complete and checked, then
    /// sent whole; a retried attempt sends the same bytes again, hashed once.
    pub fn forward_request_body(
        &mut self,
        chunk: Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<Option<Bytes>, Refusal> {
        let Some(capture) = self.request.as_mut() else {
            return Ok(chunk);
        };
        if capture.is_opaque() {
            // Hashed as it passes (once: a replayed attempt's bytes are not hashed again).
            if !capture.is_complete() {
                if let Some(piece) = &chunk
                    && let Err(e) = capture.push(piece)
                {
                    return Err(self.refuse(body_refusal(e), true));
                }
                if end_of_stream {
                    let _ = capture.finish();
                }
            }
            return Ok(chunk);
        }
        if let Some(complete) = capture.complete_body() {
            if !end_of_stream {
                return Ok(Some(Bytes::new()));
            }
            let complete = complete.clone();
            self.restore_e2ee(&complete)?;
            return Ok(Some(self.forwarded_body().cloned().unwrap_or(complete)));
        }
        if let Some(chunk) = chunk
            && let Err(e) = capture.push(&chunk)
        {
            return Err(self.refuse(body_refusal(e), true));
        }
        if !end_of_stream {
            return Ok(Some(Bytes::new()));
        }
        match capture.finish() {
            Ok(complete) => {
                self.restore_e2ee(&complete)?;
                Ok(Some(self.forwarded_body().cloned().unwrap_or(complete)))
            }
            Err(e) => Err(self.refuse(body_refusal(e), true)),
        }
    }

    /// How the upstream frames its response body, as it arrived (before any proxy rewrote
    /// it): with neither a length nor chunked coding, the connection's close ends the body,
    /// and a cut looks the same as an end.
    pub fn on_upstream_framing(&mut self, content_length: bool, transfer_encoding: bool) {
        self.close_delimited = !content_length && !transfer_encoding;
    }

    /// Decides the edits to the response head and starts capturing a 2xx body on a signed
    /// route.
    pub fn on_response_head(&mut self, head: &ResponseHead<'_>) -> ResponseEdits {
        let mut edits = ResponseEdits {
            strip_signet_headers: true,
            ..ResponseEdits::default()
        };
        if (100..200).contains(&head.status) {
            return edits;
        }
        self.status = Some(head.status);
        edits.request_id = true;
        let http10 = head.client_version == HttpVersion::Http10;
        if http10 && head.transfer_encoding {
            // An HTTP/1.0 client cannot read chunked framing: the body goes out as it comes,
            // ended by closing the connection.
            edits.remove_transfer_encoding = true;
            edits.close = true;
        }
        if self.request.is_none() {
            return edits;
        }
        if !(200..300).contains(&head.status) {
            self.unsigned = Some(UnsignedReason::UpstreamError);
            return edits;
        }
        let kind = BodyKind::from_content_type(head.content_type);
        self.event_stream = kind == BodyKind::EventStream;
        if let Some(state) = self.e2ee.as_mut()
            && let Some((_, _, model)) = &state.restored
        {
            let sealer = ResponseSealer::new(state.session.clone(), model.clone());
            state.encryptor = Some(ResponseEncryptor::new(sealer, self.event_stream));
            edits.e2ee_algo = Some(state.session.algo());
            edits.e2ee_version = state.session.version();
            // Encrypted fields are longer than their plaintext: the upstream's length is
            // wrong for what is sent.
            if head.content_length {
                edits.drop_fixed_length(head.client_version);
            }
        }
        if kind == BodyKind::EventStream {
            if self.inband {
                self.inband_trailer = true;
                self.trailer_guard = Some(inband::TrailerGuard::default());
                edits.mark_inband = true;
            }
            // Not with a fixed length: Pingora holds back a body of known length until its
            // end (it buffers such writes), and a stream must reach the client event by event;
            // in-band, the body also grows by the signature comment.
            if head.content_length {
                edits.drop_fixed_length(head.client_version);
            }
        }
        if let Some(id) = &self.generated_id {
            edits.completion_id = Some(id.as_str().to_owned());
        }
        self.response = Some(ResponseCapture::with_rule(
            kind,
            self.policy.scan_limits,
            &self.id_rule,
            self.generated_id.clone(),
        ));
        edits
    }

    /// The bytes to send in place of this piece of the response body, when they differ: on
    /// an in-band stream, upstream lines that would pass for signet's trailer are
    /// neutralised (and hashed as sent). Call before [`Exchange::on_response_body`] and hand
    /// it what is sent.
    pub fn rewrite_response_chunk(
        &mut self,
        chunk: Option<&[u8]>,
        end_of_stream: bool,
    ) -> Option<Vec<u8>> {
        if let Some(encryptor) = self.e2ee.as_mut().and_then(|s| s.encryptor.as_mut()) {
            // E2EE: what is sent (and hashed) is the encrypted form. No in-band trailer
            // guard is needed: in-band is off for E2EE requests.
            let mut out = encryptor.push(chunk.unwrap_or_default());
            if end_of_stream {
                out.extend(encryptor.finish());
            }
            return Some(out);
        }
        let guard = self.trailer_guard.as_mut()?;
        let mut out = guard.filter(chunk.unwrap_or_default());
        if end_of_stream {
            out.extend(guard.finish());
        }
        (out.as_slice() != chunk.unwrap_or_default()).then_some(out)
    }

    /// Whether the body's end is about to be signed (the hook then looks at the client's
    /// socket and reports with [`Exchange::on_client_state`]).
    pub fn awaits_seal(&self) -> bool {
        self.response.is_some()
    }

    /// The client's socket as the last piece of the body goes out (`last_piece_has_bytes`:
    /// that piece still carries body bytes). A reset means bytes already sent never reached
    /// the client; a close before the last body bytes means they cannot. A close after
    /// every body byte went out is an SDK that stopped reading at `data: [DONE]`: fine.
    /// When written bytes are only accepted by the socket, this is what tells a client
    /// that left from one that got everything.
    pub fn on_client_state(&mut self, state: ClientState, last_piece_has_bytes: bool) {
        self.client_left = match state {
            ClientState::Open => false,
            ClientState::Reset => true,
            ClientState::Closed => last_piece_has_bytes,
        };
    }

    /// Hashes a piece of the response body; at its end, hands over the exchange to sign.
    pub fn on_response_body(&mut self, chunk: Option<&[u8]>, end_of_stream: bool) -> BodyStep {
        let Some(capture) = self.response.as_mut() else {
            return BodyStep::Continue;
        };
        if let Some(bytes) = chunk {
            capture.push(bytes);
            self.tail.push(bytes);
        }
        if !end_of_stream {
            return BodyStep::Continue;
        }
        let Some(capture) = self.response.take() else {
            return BodyStep::Continue;
        };
        self.response_bytes = capture.bytes();
        if self.client_left {
            self.completion_id = capture.id_so_far().cloned();
            self.unsigned = Some(UnsignedReason::ClientAbort);
            return BodyStep::Continue;
        }
        if self.close_delimited && self.event_stream && !ends_with_done_event(self.tail.as_slice())
        {
            // The connection closed, but the stream never said it was done: a cut.
            self.completion_id = capture.id_so_far().cloned();
            self.unsigned = Some(UnsignedReason::UpstreamAbort);
            return BodyStep::Continue;
        }
        if self
            .e2ee
            .as_ref()
            .and_then(|s| s.encryptor.as_ref())
            .is_some_and(ResponseEncryptor::failed)
        {
            // An error event replaced what could not be encrypted: not the answer.
            self.completion_id = capture.id_so_far().cloned();
            self.unsigned = Some(UnsignedReason::EncryptionFailed);
            return BodyStep::Continue;
        }
        let Some(request_sha256) = self.request_sha256() else {
            // The upstream answered before the request body was complete: what was sent
            // is not what the client sent, so there is nothing honest to sign.
            self.unsigned = Some(UnsignedReason::UpstreamAbort);
            return BodyStep::Continue;
        };
        if self.inband_trailer {
            self.response_midstate = Some(capture.digest_state());
        }
        match capture.finish(request_sha256) {
            Ok(exchange) => {
                self.completion_id = Some(exchange.id.clone());
                BodyStep::Seal(exchange)
            }
            Err(reason) => {
                self.unsigned = Some(reason);
                BodyStep::Continue
            }
        }
    }

    /// The signature was made and filed. Returns the bytes to append after the body's last
    /// byte (the in-band trailer), if the client asked for them on a stream.
    pub fn sealed(&mut self, ticket: Ticket, signature: &InbandSignature) -> Option<Vec<u8>> {
        self.sealed = Some(ticket);
        let trailer = self
            .inband_trailer
            .then(|| inband::stream_trailer(signature))?;
        if let Some(mut state) = self.response_midstate.take() {
            sha2::Digest::update(&mut state, &trailer);
            self.emitted_sha256 = Some(sha2::Digest::finalize(state).into());
        }
        Some(trailer)
    }

    /// sha256 of every response body byte emitted for a sealed exchange: the signed bytes
    /// (`completed.response_sha256`), and the in-band trailer after them when one was added.
    /// What an ACI receipt's `response.returned` commits to.
    pub fn emitted_sha256(&self, completed: &CompletedExchange) -> [u8; 32] {
        self.emitted_sha256.unwrap_or(completed.response_sha256)
    }

    /// The exchange could not be sealed: signing failed (`SigningFailed`, never expected),
    /// or its id already has a live signature (`DuplicateId`).
    pub fn seal_failed(&mut self, reason: UnsignedReason) {
        self.unsigned = Some(reason);
    }

    /// Records an in-band JSON outcome made outside the body filters.
    pub fn inband_outcome(
        &mut self,
        status: u16,
        response_bytes: u64,
        sealed: Option<(Ticket, CompletionId)>,
        unsigned: Option<UnsignedReason>,
    ) {
        self.status = Some(status);
        self.response_bytes = response_bytes;
        if let Some((ticket, id)) = sealed {
            self.sealed = Some(ticket);
            self.completion_id = Some(id);
        }
        self.unsigned = unsigned;
    }

    /// Whether a failed attempt goes to the upstream again. Idempotent requests follow the
    /// framework's rule; a POST goes again only when the upstream closed a pooled connection
    /// without a single byte of answer (RFC 9112 §9.3.1: the request was never applied),
    /// never when the client went away, and only once: on a fresh connection.
    pub fn should_retry(&mut self, error: AttemptError, facts: RetryFacts) -> bool {
        let retry = if !(facts.reused_connection && facts.nothing_answered && facts.replayable) {
            false
        } else if facts.idempotent {
            facts.framework_would_retry
        } else {
            self.fresh_connection_retries == 0
                && error.side == Side::Upstream
                && matches!(
                    error.failure,
                    Failure::Closed {
                        before_answer: true
                    } | Failure::Reset
                )
        };
        if retry {
            self.fresh_connection_retries += 1;
        }
        retry
    }

    /// The envelope for a failure, unless the response has already begun or the client is
    /// gone (then `None`: nothing can be written).
    pub fn failure_answer(
        &mut self,
        error: AttemptError,
        response_begun: bool,
    ) -> Option<ApiError> {
        let client_gone = error.side == Side::Downstream
            && matches!(
                error.failure,
                Failure::Reset | Failure::Closed { .. } | Failure::Io
            );
        if response_begun || client_gone {
            return None;
        }
        let envelope = self
            .rejection
            .clone()
            .unwrap_or_else(|| envelope_for(error));
        self.status = Some(envelope.status);
        Some(envelope)
    }

    /// Whether signet refused this request itself (its error log is the access line).
    pub fn was_refused(&self) -> bool {
        self.rejection.is_some()
    }

    /// Decides, at the very end, whether the signature stands.
    pub fn settle(&mut self, end: End) -> Settlement {
        if let Some(unfinished) = self.response.take() {
            // The body never reached its end: keep what is known for the access line.
            self.completion_id = unfinished.id_so_far().cloned();
            self.response_bytes = unfinished.bytes();
        }
        if self.request.is_none() && self.rejection.is_none() {
            return Settlement::NotSigned;
        }
        if let Some(side) = end.error {
            // Clients such as the OpenAI SDKs close as soon as they have read
            // `data: [DONE]`, which can surface as an error after the last byte was written.
            let all_written = end.client_accepted >= self.response_bytes;
            if self.sealed.is_some() && all_written {
                return Settlement::Stands;
            }
            if let Some(ticket) = self.sealed.take() {
                self.unsigned = Some(unsigned_for(side));
                if let Some(id) = self.completion_id.clone() {
                    return Settlement::Retract(ticket, id);
                }
                return Settlement::Unsigned(unsigned_for(side));
            }
            let reason = *self.unsigned.get_or_insert(unsigned_for(side));
            return Settlement::Unsigned(reason);
        }
        if self.sealed.is_some() {
            return Settlement::Stands;
        }
        // The response ended without the body filter's end of stream (e.g. a bodiless 2xx).
        let reason = *self.unsigned.get_or_insert(UnsignedReason::NoId);
        Settlement::Unsigned(reason)
    }

    /// The route.
    pub fn route(&self) -> Route {
        self.route
    }

    /// The route's label for logs and metrics.
    pub fn route_label(&self) -> &str {
        self.policy.routes.label(self.route)
    }

    /// The status sent to the client, once known.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Records a status signet wrote itself (a local route).
    pub fn set_status(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// The completion id, once known.
    pub fn completion_id(&self) -> Option<&CompletionId> {
        self.completion_id.as_ref()
    }

    /// Whether a signature is filed (and not retracted).
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Why there is no signature, if there is none.
    pub fn unsigned(&self) -> Option<UnsignedReason> {
        self.unsigned
    }

    /// Response body bytes hashed.
    pub fn response_bytes(&self) -> u64 {
        self.response_bytes
    }

    /// Request body bytes hashed and forwarded (`None` off signed routes, and for a request
    /// refused before it went upstream).
    pub fn request_bytes(&self) -> Option<u64> {
        if self.rejection.is_some() {
            return None;
        }
        self.request.as_ref().map(RequestCapture::hashed_bytes)
    }

    /// Attempts sent again on a fresh connection.
    pub fn retries(&self) -> u32 {
        self.fresh_connection_retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_REQUEST: &[u8] = include_bytes!("../../../tests/fixtures/seed-request.json");
    const SEED_RESPONSE: &[u8] = include_bytes!("../../../tests/fixtures/seed-response.sse");
    const SEED_TEXT: &str = "bcf152411970b14faab35a76d559b4188b78c24ced0048d0edcd320bf47bff0a:2e704942816901eaf435945fd01d76346e5dd283d5f8a2391e525e8f9a9ef36e";

    fn policy() -> ExchangePolicy {
        ExchangePolicy {
            max_header_bytes: 1024,
            max_request_body: 4096,
            scan_limits: ScanLimits {
                event_stream: 64 * 1024,
                json_body: 64 * 1024,
            },
            body_deadline: std::time::Duration::from_secs(10),
            routes: std::sync::Arc::new(RouteTable::builtin()),
            e2ee: None,
        }
    }

    fn head<'a>(method: &'a str, path: &'a str, length: Option<&'a [u8]>) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            version: HttpVersion::Http11,
            head_bytes: 100,
            content_length: length,
            transfer_encoding: false,
            body_empty: length == Some(b"0"),
            authorized: true,
            inband: None,
            request_id: "0123456789abcdef0123456789abcdef",
            e2ee: E2eeHeaders::default(),
            now_unix: 1_750_000_000,
        }
    }

    fn response_head(status: u16, content_type: &[u8]) -> ResponseHead<'_> {
        ResponseHead {
            status,
            content_type: Some(content_type),
            content_length: false,
            transfer_encoding: true,
            client_version: HttpVersion::Http11,
        }
    }

    fn refused_status(decision: HeadDecision) -> (u16, bool) {
        match decision {
            HeadDecision::Refuse(r) => (r.error.status, r.close),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// An exchange that admitted the seed request and read it whole.
    fn admitted_seed() -> Exchange {
        let mut exchange = Exchange::new(policy());
        let length = SEED_REQUEST.len().to_string();
        let decision = exchange.on_request_head(&head(
            "POST",
            "/v1/chat/completions",
            Some(length.as_bytes()),
        ));
        assert_eq!(
            decision,
            HeadDecision::Admit {
                read_body_first: true
            }
        );
        assert!(
            exchange.fits_retry_buffer(),
            "a small declared body is replayable"
        );
        exchange.push_request_body(SEED_REQUEST).unwrap();
        exchange.finish_request_body().unwrap();
        exchange
    }

    fn stream_seed_response(exchange: &mut Exchange) -> CompletedExchange {
        exchange.on_response_head(&response_head(200, b"text/event-stream"));
        let (first, rest) = SEED_RESPONSE.split_at(10);
        assert_eq!(
            exchange.on_response_body(Some(first), false),
            BodyStep::Continue
        );
        match exchange.on_response_body(Some(rest), true) {
            BodyStep::Seal(completed) => completed,
            other => panic!("expected a seal, got {other:?}"),
        }
    }

    fn ticket() -> Ticket {
        use crate::store::{ManualClock, SignatureStore, StoredSignature};
        let store = SignatureStore::new(
            std::time::Duration::from_secs(60),
            10,
            std::sync::Arc::new(ManualClock::default()),
        );
        let signer = crate::signing::Signer::generate();
        let signature = signer.sign_message(SEED_TEXT.as_bytes()).unwrap();
        store
            .insert(
                &CompletionId::parse("chat-1").unwrap(),
                StoredSignature {
                    request_sha256: [1; 32],
                    response_sha256: [2; 32],
                    signature,
                },
            )
            .unwrap()
    }

    #[test]
    fn admission_refuses_before_anything_is_forwarded() {
        let cases: Vec<(RequestHead<'_>, u16, bool)> = vec![
            (
                RequestHead {
                    head_bytes: 2048,
                    ..head("POST", "/v1/chat/completions", Some(b"10"))
                },
                431,
                true,
            ),
            (
                RequestHead {
                    authorized: false,
                    ..head("POST", "/v1/chat/completions", Some(b"10"))
                },
                401,
                false,
            ),
            (
                RequestHead {
                    authorized: false,
                    ..head("GET", "/v1/signature/x", None)
                },
                401,
                false,
            ),
            (head("GET", "/v1/chat/completions", None), 405, true),
            (head("POST", "/v1/completions", Some(b"4097")), 413, true),
            (head("POST", "/v1/completions", Some(b"ten")), 400, true),
            (head("POST", "/v1/completions", Some(b"0")), 400, false),
            (
                head("POST", "/v1/chat%2Fcompletions", Some(b"10")),
                400,
                true,
            ),
            (
                head("POST", "/v1/chat/c%6Fmpletions", Some(b"10")),
                400,
                true,
            ),
            (
                head("POST", "/%761/chat/completions", Some(b"10")),
                400,
                true,
            ),
            (
                head("POST", "/v1//chat/completions", Some(b"10")),
                400,
                true,
            ),
            (
                head("POST", "/v1/./chat/completions", Some(b"10")),
                400,
                true,
            ),
            (
                head("POST", "/v1/x/../chat/completions", Some(b"10")),
                400,
                true,
            ),
            (
                head("POST", "/v1/chat/completions/", Some(b"10")),
                400,
                true,
            ),
            (
                head("POST", "/v1/chat/completions;x=1", Some(b"10")),
                400,
                true,
            ),
            (head("POST", "/V1/Chat/Completions", Some(b"10")), 400, true),
            (head("GET", "/v1/attestation%2freport", None), 400, true),
        ];
        for (request, status, close) in cases {
            let mut exchange = Exchange::new(policy());
            let path = request.path.to_owned();
            assert_eq!(
                refused_status(exchange.on_request_head(&request)),
                (status, close),
                "{path}"
            );
            assert!(exchange.was_refused());
            assert_eq!(exchange.unsigned(), Some(UnsignedReason::Rejected));
        }
    }

    #[test]
    fn attestation_and_health_need_no_token_and_other_routes_pass_through() {
        let mut exchange = Exchange::new(policy());
        let open = RequestHead {
            authorized: false,
            ..head("GET", "/v1/attestation/report", None)
        };
        assert_eq!(
            exchange.on_request_head(&open),
            HeadDecision::Local(Route::AttestationReport)
        );
        let mut exchange = Exchange::new(policy());
        assert_eq!(
            exchange.on_request_head(&head("GET", "/v1/models", None)),
            HeadDecision::Forward
        );
        assert_eq!(
            exchange.settle(End {
                error: None,
                client_accepted: 0
            }),
            Settlement::NotSigned
        );
        // A path that only looks like a signed one once decoded, but is not one, passes.
        let mut exchange = Exchange::new(policy());
        assert_eq!(
            exchange.on_request_head(&head("GET", "/v1/models%2Fx", None)),
            HeadDecision::Forward
        );
    }

    #[test]
    fn small_declared_bodies_and_inband_requests_are_read_first() {
        let mut exchange = Exchange::new(policy());
        let chunked = RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/chat/completions", None)
        };
        assert_eq!(
            exchange.on_request_head(&chunked),
            HeadDecision::Admit {
                read_body_first: false
            }
        );
        let mut exchange = Exchange::new(ExchangePolicy {
            max_request_body: 1 << 20,
            ..policy()
        });
        let large = head("POST", "/v1/chat/completions", Some(b"70000"));
        assert_eq!(
            exchange.on_request_head(&large),
            HeadDecision::Admit {
                read_body_first: false
            }
        );
        let mut exchange = Exchange::new(policy());
        let inband = RequestHead {
            transfer_encoding: true,
            inband: Some(b"in-band"),
            ..head("POST", "/v1/chat/completions", None)
        };
        assert_eq!(
            exchange.on_request_head(&inband),
            HeadDecision::Admit {
                read_body_first: true
            }
        );
        assert!(
            !exchange.fits_retry_buffer(),
            "read whole, but not into the retry buffer"
        );
        exchange.push_request_body(br#"{"stream":false}"#).unwrap();
        exchange.finish_request_body().unwrap();
        assert!(exchange.serves_inband_json());
    }

    #[test]
    fn bad_bodies_read_first_are_refused_and_close_the_connection() {
        for body in [&b"{not json"[..], b"[1,2]", b"\xff\xfe", b"\"text\""] {
            let mut exchange = Exchange::new(policy());
            let length = body.len().to_string();
            exchange.on_request_head(&head("POST", "/v1/completions", Some(length.as_bytes())));
            exchange.push_request_body(body).unwrap();
            let refusal = exchange.finish_request_body().unwrap_err();
            assert_eq!((refusal.error.status, refusal.close), (400, true));
        }
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/completions", None)
        });
        let refusal = exchange.push_request_body(&[b' '; 5000]).unwrap_err();
        assert_eq!(refusal.error.status, 413);
        let timed_out = exchange.request_body_unreadable(true);
        assert_eq!(timed_out.error.status, 408);
    }

    #[test]
    fn a_streamed_body_is_held_until_complete_then_sent_whole_and_replayed_on_retry() {
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/chat/completions", None)
        });
        exchange.start_attempt();
        let (a, b) = SEED_REQUEST.split_at(7);
        let held = exchange
            .forward_request_body(Some(Bytes::copy_from_slice(a)), false)
            .unwrap();
        assert_eq!(
            held,
            Some(Bytes::new()),
            "nothing leaves before the body is checked"
        );
        let sent = exchange
            .forward_request_body(Some(Bytes::copy_from_slice(b)), true)
            .unwrap();
        assert_eq!(sent.as_deref(), Some(SEED_REQUEST));
        // A retried attempt replays the same bytes, hashed once.
        let digest = exchange.request_sha256();
        let plan = exchange.start_attempt();
        assert_eq!(plan.stream, Some(true));
        assert_eq!(
            exchange.forward_request_body(None, false).unwrap(),
            Some(Bytes::new())
        );
        assert_eq!(
            exchange
                .forward_request_body(None, true)
                .unwrap()
                .as_deref(),
            Some(SEED_REQUEST)
        );
        assert_eq!(exchange.request_sha256(), digest);
    }

    #[test]
    fn a_malformed_streamed_body_is_refused_at_its_end_and_never_released() {
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/chat/completions", None)
        });
        assert_eq!(
            exchange
                .forward_request_body(Some(Bytes::from_static(b"{\"a\":")), false)
                .unwrap(),
            Some(Bytes::new())
        );
        let refusal = exchange
            .forward_request_body(Some(Bytes::from_static(b"oops")), true)
            .unwrap_err();
        assert_eq!(refusal.error.status, 400);
    }

    #[test]
    fn a_partial_body_is_forgotten_when_an_attempt_restarts() {
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/chat/completions", None)
        });
        exchange
            .forward_request_body(Some(Bytes::from_static(b"{\"junk\":1")), false)
            .unwrap();
        exchange.start_attempt();
        exchange
            .forward_request_body(Some(Bytes::from_static(SEED_REQUEST)), true)
            .unwrap();
        let completed = stream_seed_response(&mut exchange);
        assert_eq!(completed.text(), SEED_TEXT);
    }

    #[test]
    fn the_seed_exchange_is_sealed_with_the_seed_text() {
        let mut exchange = admitted_seed();
        let completed = stream_seed_response(&mut exchange);
        assert_eq!(completed.text(), SEED_TEXT);
        assert_eq!(
            completed.id.as_str(),
            "chat-7ee2a39468ce48d7b2284783f21782b0"
        );
        assert_eq!(exchange.sealed(ticket(), &signature()), None);
        // Without a trailer the bytes emitted are the signed bytes.
        assert_eq!(
            exchange.emitted_sha256(&completed),
            completed.response_sha256
        );
        assert_eq!(
            exchange.settle(End {
                error: None,
                client_accepted: SEED_RESPONSE.len() as u64
            }),
            Settlement::Stands
        );
    }

    fn signature() -> InbandSignature {
        InbandSignature {
            id: "chat-1".to_owned(),
            text: SEED_TEXT.to_owned(),
            signature: "0x00".to_owned(),
            signing_address: "0x00".to_owned(),
            signing_algo: "ecdsa".to_owned(),
        }
    }

    #[test]
    fn a_signature_whose_last_bytes_never_reached_the_client_is_retracted() {
        let mut exchange = admitted_seed();
        stream_seed_response(&mut exchange);
        exchange.sealed(ticket(), &signature());
        let all = SEED_RESPONSE.len() as u64;
        match exchange.settle(End {
            error: Some(Side::Downstream),
            client_accepted: all - 1,
        }) {
            Settlement::Retract(_, id) => {
                assert_eq!(id.as_str(), "chat-7ee2a39468ce48d7b2284783f21782b0")
            }
            other => panic!("expected a retraction, got {other:?}"),
        }
        assert_eq!(exchange.unsigned(), Some(UnsignedReason::ClientAbort));
        assert!(!exchange.is_sealed());

        // An SDK that closes right after `[DONE]`: every byte was accepted, it stands.
        let mut exchange = admitted_seed();
        stream_seed_response(&mut exchange);
        exchange.sealed(ticket(), &signature());
        assert_eq!(
            exchange.settle(End {
                error: Some(Side::Downstream),
                client_accepted: all
            }),
            Settlement::Stands
        );
    }

    #[test]
    fn unfinished_and_failed_responses_are_unsigned_with_their_reason() {
        // Upstream non-2xx.
        let mut exchange = admitted_seed();
        exchange.on_response_head(&response_head(500, b"application/json"));
        assert_eq!(
            exchange.on_response_body(Some(b"{}"), true),
            BodyStep::Continue
        );
        assert_eq!(
            exchange.settle(End {
                error: None,
                client_accepted: 2
            }),
            Settlement::Unsigned(UnsignedReason::UpstreamError)
        );
        // Upstream died mid-stream: the id found so far is kept for the access line.
        let mut exchange = admitted_seed();
        exchange.on_response_head(&response_head(200, b"text/event-stream"));
        exchange.on_response_body(Some(&SEED_RESPONSE[..400]), false);
        assert_eq!(
            exchange.settle(End {
                error: Some(Side::Upstream),
                client_accepted: 400
            }),
            Settlement::Unsigned(UnsignedReason::UpstreamAbort)
        );
        assert_eq!(
            exchange.completion_id().map(CompletionId::as_str),
            Some("chat-7ee2a39468ce48d7b2284783f21782b0")
        );
        // No id in the body.
        let mut exchange = admitted_seed();
        exchange.on_response_head(&response_head(200, b"application/json"));
        assert_eq!(
            exchange.on_response_body(Some(b"{\"object\":\"x\"}"), true),
            BodyStep::Continue
        );
        assert_eq!(exchange.unsigned(), Some(UnsignedReason::NoId));
        // A bodiless 2xx never reaches the end of the body filter.
        let mut exchange = admitted_seed();
        exchange.on_response_head(&response_head(204, b"application/json"));
        assert_eq!(
            exchange.settle(End {
                error: None,
                client_accepted: 0
            }),
            Settlement::Unsigned(UnsignedReason::NoId)
        );
        // The upstream answered before the request body was complete.
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/chat/completions", None)
        });
        exchange.on_response_head(&response_head(200, b"text/event-stream"));
        assert_eq!(
            exchange.on_response_body(Some(SEED_RESPONSE), true),
            BodyStep::Continue
        );
        assert_eq!(exchange.unsigned(), Some(UnsignedReason::UpstreamAbort));
        // Signing failed.
        let mut exchange = admitted_seed();
        stream_seed_response(&mut exchange);
        exchange.seal_failed(UnsignedReason::SigningFailed);
        assert_eq!(
            exchange.settle(End {
                error: None,
                client_accepted: SEED_RESPONSE.len() as u64
            }),
            Settlement::Unsigned(UnsignedReason::SigningFailed)
        );
    }

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        <sha2::Sha256 as sha2::Digest>::digest(bytes).into()
    }

    /// An E2EE v2 exchange admitted with a chat body whose one message is encrypted
    /// (`content` is what is encrypted); the body as received.
    fn e2ee_exchange(content: &str) -> (Exchange, Vec<u8>, crate::e2ee::crypto::SecretKey) {
        use crate::e2ee::crypto::{self, PublicKey, SecretKey, Suite};
        let service = std::sync::Arc::new(E2eeService::generate(10));
        let entry = service.keyset_entries().remove(0);
        let model_key = PublicKey::parse(Suite::X25519, &entry.public_key).unwrap();
        let client = SecretKey::generate(Suite::X25519);
        let client_hex = client.public_key().to_hex();
        let nonce = "cd".repeat(32);
        let aad = crate::e2ee::request_aad(
            Suite::X25519.algo(),
            "m",
            "messages.0.content",
            &nonce,
            1_750_000_000,
        );
        let field = crypto::seal(&model_key, content.as_bytes(), &aad);
        let received = serde_json::to_vec(&serde_json::json!({
            "model": "m", "stream": true, "messages": [{"role": "user", "content": field}]
        }))
        .unwrap();
        let mut exchange = Exchange::new(ExchangePolicy {
            e2ee: Some(service),
            ..policy()
        });
        let length = received.len().to_string();
        let decision = exchange.on_request_head(&RequestHead {
            inband: Some(b"in-band"),
            e2ee: E2eeHeaders {
                version: Some(b"2"),
                client_pub_key: Some(client_hex.as_bytes()),
                model_pub_key: Some(entry.public_key.as_bytes()),
                nonce: Some(nonce.as_bytes()),
                timestamp: Some(b"1750000000"),
                ..E2eeHeaders::default()
            },
            ..head("POST", "/v1/chat/completions", Some(length.as_bytes()))
        });
        assert_eq!(
            decision,
            HeadDecision::Admit {
                read_body_first: true
            },
            "a small body is read up front"
        );
        assert!(exchange.is_e2ee());
        (exchange, received, client)
    }

    #[test]
    fn e2ee_headers_are_refused_where_the_service_terminates_none() {
        let mut exchange = Exchange::new(policy());
        let decision = exchange.on_request_head(&RequestHead {
            e2ee: E2eeHeaders {
                version: Some(b"2"),
                ..E2eeHeaders::default()
            },
            ..head("POST", "/v1/chat/completions", Some(b"10"))
        });
        let HeadDecision::Refuse(refusal) = decision else {
            panic!("refused")
        };
        assert_eq!(
            (refusal.error.code, refusal.error.status, refusal.close),
            ("e2ee_invalid_version", 400, true)
        );
    }

    #[test]
    fn an_e2ee_exchange_forwards_the_restored_body_and_signs_the_encrypted_answer() {
        let (mut exchange, received, client) = e2ee_exchange("secret prompt");
        exchange.push_request_body(&received).unwrap();
        exchange.finish_request_body().unwrap();
        let restored = serde_json::to_vec(&serde_json::json!({
            "model": "m", "stream": true, "messages": [{"role": "user", "content": "secret prompt"}]
        }))
        .unwrap();
        assert_eq!(
            exchange.forwarded_body().unwrap().as_ref(),
            restored.as_slice()
        );
        assert_eq!(
            exchange.restored_request(),
            Some((restored.as_slice(), sha256(&restored)))
        );
        // The EIP-191 side hashes the body as received.
        assert_eq!(exchange.request_sha256(), Some(sha256(&received)));
        assert!(!exchange.serves_inband_json(), "in-band is off for E2EE");
        exchange.start_attempt();
        let sent = exchange.forward_request_body(None, true).unwrap().unwrap();
        assert_eq!(sent.as_ref(), restored.as_slice());

        let edits = exchange.on_response_head(&ResponseHead {
            content_length: true,
            transfer_encoding: false,
            ..response_head(200, b"text/event-stream")
        });
        assert_eq!(edits.e2ee_algo, Some(crate::e2ee::ALGO_X25519));
        assert_eq!(edits.e2ee_version, Some("2"));
        assert!(edits.remove_content_length && edits.add_chunked && !edits.mark_inband);
        let event = b"data: {\"id\":\"chat-9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let (a, b) = event.split_at(7);
        let mut wire = Vec::new();
        for (piece, end) in [(a, false), (b, false), (&b"data: [DONE]\n\n"[..], true)] {
            let out = exchange.rewrite_response_chunk(Some(piece), end).unwrap();
            wire.extend_from_slice(&out);
            if let BodyStep::Seal(completed) = exchange.on_response_body(Some(&out), end) {
                assert!(end);
                assert_eq!(completed.id.as_str(), "chat-9");
                assert_eq!(completed.request_sha256, sha256(&received));
                assert_eq!(completed.response_sha256, sha256(&wire));
            }
        }
        assert_eq!(exchange.completion_id().unwrap().as_str(), "chat-9");
        let text = std::str::from_utf8(&wire).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("\"hi\""));
        let data = text.lines().next().unwrap().strip_prefix("data: ").unwrap();
        let value: serde_json::Value = serde_json::from_str(data).unwrap();
        let sealed = value["choices"][0]["delta"]["content"].as_str().unwrap();
        let aad = crate::e2ee::response_aad(
            crate::e2ee::ALGO_X25519,
            "m",
            "chat-9",
            "choices.0.delta.content",
            &"cd".repeat(32),
            1_750_000_000,
        );
        assert_eq!(
            crate::e2ee::crypto::open(&client, sealed, &aad).unwrap(),
            b"hi"
        );
    }

    #[test]
    fn an_e2ee_field_that_does_not_open_is_refused_before_the_upstream() {
        let (mut exchange, received, _) = e2ee_exchange("x");
        let tampered =
            String::from_utf8(received)
                .unwrap()
                .replacen("\"content\":\"", "\"content\":\"00", 1);
        exchange.push_request_body(tampered.as_bytes()).unwrap();
        let refusal = exchange.finish_request_body().unwrap_err();
        assert_eq!(refusal.error.code, "e2ee_decryption_failed");
        assert!(refusal.close && exchange.was_refused());
        assert!(exchange.forwarded_body().is_none());
    }

    #[test]
    fn an_e2ee_answer_that_cannot_be_encrypted_ends_with_an_error_event_unsigned() {
        let (mut exchange, received, _) = e2ee_exchange("x");
        exchange.push_request_body(&received).unwrap();
        exchange.finish_request_body().unwrap();
        exchange.on_response_head(&response_head(200, b"text/event-stream"));
        let out = exchange
            .rewrite_response_chunk(Some(b"data: {\"id\":\"c\"\n\n"), false)
            .unwrap();
        assert!(out.starts_with(b"data: {\"error\""));
        assert_eq!(
            exchange.on_response_body(Some(&out), false),
            BodyStep::Continue
        );
        let rest = exchange
            .rewrite_response_chunk(Some(b"data: [DONE]\n\n"), true)
            .unwrap();
        assert!(rest.is_empty(), "nothing follows the error event");
        assert_eq!(
            exchange.on_response_body(Some(&rest), true),
            BodyStep::Continue
        );
        assert_eq!(exchange.unsigned(), Some(UnsignedReason::EncryptionFailed));
    }

    #[test]
    fn inband_streams_get_a_trailer_after_the_signed_bytes_and_lose_their_length() {
        let mut exchange = Exchange::new(policy());
        let length = SEED_REQUEST.len().to_string();
        exchange.on_request_head(&RequestHead {
            inband: Some(b"In-Band "),
            ..head("POST", "/v1/chat/completions", Some(length.as_bytes()))
        });
        exchange.push_request_body(SEED_REQUEST).unwrap();
        exchange.finish_request_body().unwrap();
        assert!(
            !exchange.serves_inband_json(),
            "a stream goes through the proxy"
        );
        let edits = exchange.on_response_head(&ResponseHead {
            content_length: true,
            transfer_encoding: false,
            ..response_head(200, b"text/event-stream; charset=utf-8")
        });
        assert!(edits.mark_inband && edits.remove_content_length && edits.add_chunked);
        let BodyStep::Seal(completed) = exchange.on_response_body(Some(SEED_RESPONSE), true) else {
            panic!("the stream is complete")
        };
        let trailer = exchange.sealed(ticket(), &signature()).unwrap();
        assert!(trailer.starts_with(inband::COMMENT_PREFIX));
        // What was emitted is the signed bytes and then the trailer.
        let mut emitted = SEED_RESPONSE.to_vec();
        emitted.extend_from_slice(&trailer);
        let emitted_sha256: [u8; 32] =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&emitted))
                .into();
        assert_eq!(exchange.emitted_sha256(&completed), emitted_sha256);
        assert_ne!(emitted_sha256, completed.response_sha256);

        // The same for an HTTP/1.0 client: no chunked framing, the connection ends the body.
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&RequestHead {
            inband: Some(b"in-band"),
            version: HttpVersion::Http10,
            ..head("POST", "/v1/chat/completions", Some(length.as_bytes()))
        });
        let edits = exchange.on_response_head(&ResponseHead {
            content_length: true,
            transfer_encoding: false,
            client_version: HttpVersion::Http10,
            ..response_head(200, b"text/event-stream")
        });
        assert!(edits.close && !edits.add_chunked && edits.remove_content_length);
    }

    #[test]
    fn streams_lose_a_fixed_length_so_that_nothing_holds_them_back() {
        let length = SEED_REQUEST.len().to_string();
        for (stream, framed) in [
            (&b"text/event-stream"[..], true),
            (b"application/json", false),
        ] {
            let mut exchange = Exchange::new(policy());
            exchange.on_request_head(&head(
                "POST",
                "/v1/chat/completions",
                Some(length.as_bytes()),
            ));
            exchange.push_request_body(SEED_REQUEST).unwrap();
            exchange.finish_request_body().unwrap();
            let edits = exchange.on_response_head(&ResponseHead {
                content_length: true,
                transfer_encoding: false,
                ..response_head(200, stream)
            });
            assert_eq!(edits.remove_content_length, framed);
            assert_eq!(edits.add_chunked, framed);
            assert!(!edits.mark_inband);
        }
    }

    #[test]
    fn response_heads_always_lose_upstream_signet_headers_and_http10_loses_chunking() {
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&head("GET", "/v1/models", None));
        assert_eq!(
            exchange.on_response_head(&response_head(100, b"")),
            ResponseEdits {
                strip_signet_headers: true,
                ..ResponseEdits::default()
            }
        );
        assert_eq!(
            exchange.status(),
            None,
            "informational answers are not the status"
        );
        let edits = exchange.on_response_head(&ResponseHead {
            client_version: HttpVersion::Http10,
            ..response_head(200, b"text/event-stream")
        });
        assert!(edits.strip_signet_headers && edits.remove_transfer_encoding && edits.close);
        assert!(is_signet_header("X-Signet-Signature"));
        assert!(is_signet_header("x-signet-text"));
        assert!(!is_signet_header("x-signe"));
        assert!(!is_signet_header("x-request-id"));
    }

    const POOLED_SILENT: RetryFacts = RetryFacts {
        idempotent: false,
        reused_connection: true,
        nothing_answered: true,
        replayable: true,
        framework_would_retry: true,
    };

    #[test]
    fn a_post_is_retried_once_only_when_the_upstream_closed_a_pooled_connection() {
        let upstream_closed = AttemptError {
            side: Side::Upstream,
            failure: Failure::Closed {
                before_answer: true,
            },
        };
        let mut exchange = admitted_seed();
        assert!(exchange.should_retry(upstream_closed, POOLED_SILENT));
        assert!(exchange.start_attempt().fresh_connection);
        assert!(
            !exchange.should_retry(upstream_closed, POOLED_SILENT),
            "only once"
        );
        assert_eq!(exchange.retries(), 1);

        let no_retry = [
            // The client reset: the request may well have been applied upstream.
            (
                AttemptError {
                    side: Side::Downstream,
                    failure: Failure::Reset,
                },
                POOLED_SILENT,
            ),
            (
                AttemptError {
                    side: Side::Downstream,
                    failure: Failure::Closed {
                        before_answer: true,
                    },
                },
                POOLED_SILENT,
            ),
            // Part of an answer was read: the request was applied.
            (
                AttemptError {
                    side: Side::Upstream,
                    failure: Failure::Closed {
                        before_answer: false,
                    },
                },
                POOLED_SILENT,
            ),
            (
                AttemptError {
                    side: Side::Upstream,
                    failure: Failure::Timeout,
                },
                POOLED_SILENT,
            ),
            (
                upstream_closed,
                RetryFacts {
                    reused_connection: false,
                    ..POOLED_SILENT
                },
            ),
            (
                upstream_closed,
                RetryFacts {
                    nothing_answered: false,
                    ..POOLED_SILENT
                },
            ),
            (
                upstream_closed,
                RetryFacts {
                    replayable: false,
                    ..POOLED_SILENT
                },
            ),
        ];
        for (error, facts) in no_retry {
            let mut exchange = admitted_seed();
            assert!(!exchange.should_retry(error, facts), "{error:?} {facts:?}");
            assert!(!exchange.start_attempt().fresh_connection);
        }
        // Idempotent requests follow the framework's rule.
        let mut exchange = Exchange::new(policy());
        let idempotent = RetryFacts {
            idempotent: true,
            ..POOLED_SILENT
        };
        let other = AttemptError {
            side: Side::Upstream,
            failure: Failure::Other,
        };
        assert!(exchange.should_retry(other, idempotent));
        assert!(!exchange.should_retry(
            other,
            RetryFacts {
                framework_would_retry: false,
                ..idempotent
            }
        ));
    }

    #[test]
    fn failures_get_their_envelope_unless_the_answer_began_or_the_client_left() {
        let cases = [
            (Side::Upstream, Failure::Timeout, Some(504)),
            (Side::Upstream, Failure::Reset, Some(502)),
            (
                Side::Upstream,
                Failure::Closed {
                    before_answer: true,
                },
                Some(502),
            ),
            (Side::Downstream, Failure::Timeout, Some(408)),
            (Side::Downstream, Failure::Reset, None),
            (Side::Downstream, Failure::Io, None),
            (
                Side::Downstream,
                Failure::Closed {
                    before_answer: false,
                },
                None,
            ),
            (Side::Downstream, Failure::Other, Some(400)),
            (Side::Internal, Failure::Other, Some(500)),
            (Side::Internal, Failure::Status(413), Some(413)),
        ];
        for (side, failure, expected) in cases {
            let mut exchange = Exchange::new(policy());
            let error = AttemptError { side, failure };
            assert_eq!(
                exchange.failure_answer(error, false).map(|e| e.status),
                expected,
                "{error:?}"
            );
            assert_eq!(exchange.failure_answer(error, true), None);
        }
        // A refusal answers with its own envelope.
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&head("POST", "/v1/completions", Some(b"99999")));
        let answer = exchange.failure_answer(
            AttemptError {
                side: Side::Internal,
                failure: Failure::Status(413),
            },
            false,
        );
        assert_eq!(answer.unwrap().status, 413);
        assert_eq!(exchange.status(), Some(413));
    }

    #[test]
    fn a_close_delimited_stream_is_complete_only_with_its_done_event() {
        // A proxy turns a close-delimited body into a chunked one for its client: the facts
        // come from the upstream's own head.
        let close_delimited = response_head(200, b"text/event-stream");
        let mut exchange = admitted_seed();
        exchange.on_upstream_framing(false, false);
        exchange.on_response_head(&close_delimited);
        let cut = SEED_RESPONSE.len() - 20;
        exchange.on_response_body(Some(&SEED_RESPONSE[..cut]), false);
        assert_eq!(exchange.on_response_body(None, true), BodyStep::Continue);
        assert_eq!(exchange.unsigned(), Some(UnsignedReason::UpstreamAbort));

        let mut exchange = admitted_seed();
        exchange.on_upstream_framing(false, false);
        exchange.on_response_head(&close_delimited);
        for piece in SEED_RESPONSE.chunks(7) {
            exchange.on_response_body(Some(piece), false);
        }
        assert!(matches!(
            exchange.on_response_body(None, true),
            BodyStep::Seal(_)
        ));

        // Chunked framing says where the body ends by itself.
        let mut exchange = admitted_seed();
        exchange.on_upstream_framing(false, true);
        exchange.on_response_head(&response_head(200, b"text/event-stream"));
        exchange.on_response_body(Some(&SEED_RESPONSE[..cut]), false);
        assert!(matches!(
            exchange.on_response_body(None, true),
            BodyStep::Seal(_)
        ));
    }

    #[test]
    fn the_done_event_is_recognised_in_every_line_ending() {
        for tail in [
            &b"data: {}\n\ndata: [DONE]\n\n"[..],
            b"data: [DONE]\n\n",
            b"x\r\ndata:[DONE]\r\n\r\n",
            b"x\rdata: [DONE]\r\r",
        ] {
            assert!(ends_with_done_event(tail), "{tail:?}");
        }
        for tail in [
            &b"data: [DONE]"[..],
            b"data: [DONE]\n",
            b"data: {\"x\":\"data: [DONE]\"}\n\n",
            b"",
        ] {
            assert!(!ends_with_done_event(tail), "{tail:?}");
        }
        let mut t = Tail::default();
        for piece in [&b"abc"[..], &[b'x'; 40], b"data: [DONE]\n\n"] {
            t.push(piece);
        }
        assert!(t.as_slice().ends_with(b"xxdata: [DONE]\n\n"));
        assert_eq!(t.as_slice().len(), 32);
    }

    #[test]
    fn only_a_stream_may_finish_after_its_client_closed() {
        let exchange = admitted_seed();
        assert!(
            exchange.tolerates_client_close(),
            "the seed request streams"
        );
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&head("POST", "/v1/completions", Some(b"16")));
        exchange.push_request_body(br#"{"stream":false}"#).unwrap();
        exchange.finish_request_body().unwrap();
        assert!(!exchange.tolerates_client_close());
    }

    #[test]
    fn a_trickled_body_is_cut_off_at_its_deadline() {
        let mut exchange = Exchange::new(policy());
        exchange.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/chat/completions", None)
        });
        exchange
            .forward_request_body(Some(Bytes::from_static(b"{")), false)
            .unwrap();
        assert_eq!(
            exchange.body_overdue(std::time::Duration::from_secs(9)),
            None
        );
        let refusal = exchange
            .body_overdue(std::time::Duration::from_secs(11))
            .unwrap();
        assert_eq!((refusal.error.status, refusal.close), (408, true));
        // A complete body is never overdue, nor is a route without one.
        let mut done = admitted_seed();
        assert_eq!(done.body_overdue(std::time::Duration::from_secs(60)), None);
        let mut other = Exchange::new(policy());
        other.on_request_head(&head("GET", "/v1/models", None));
        assert_eq!(other.body_overdue(std::time::Duration::from_secs(60)), None);
    }

    #[test]
    fn an_inband_stream_never_carries_an_upstream_trailer() {
        let mut exchange = Exchange::new(policy());
        let length = SEED_REQUEST.len().to_string();
        exchange.on_request_head(&RequestHead {
            inband: Some(b"in-band"),
            ..head("POST", "/v1/chat/completions", Some(length.as_bytes()))
        });
        exchange.push_request_body(SEED_REQUEST).unwrap();
        exchange.finish_request_body().unwrap();
        exchange.on_response_head(&response_head(200, b"text/event-stream"));
        let forged = b": signet-signature {}\n\n";
        let sent = exchange
            .rewrite_response_chunk(Some(forged), false)
            .expect("rewritten");
        assert!(sent.starts_with(b": upstream-said signet-signature"));
        assert_eq!(
            exchange.rewrite_response_chunk(Some(SEED_RESPONSE), true),
            None
        );
        // Without in-band, bytes pass untouched.
        let mut plain = admitted_seed();
        plain.on_response_head(&response_head(200, b"text/event-stream"));
        assert_eq!(plain.rewrite_response_chunk(Some(forged), false), None);
    }

    #[test]
    fn each_prompt_api_is_signed_under_the_id_where_that_api_puts_it() {
        let cases: [(&str, &[u8], &[u8], &str); 3] = [
            (
                "/v1/responses",
                b"text/event-stream",
                b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\"}}\n\n",
                "resp_1",
            ),
            (
                "/v1/messages",
                b"application/json",
                br#"{"id":"msg_1","type":"message","content":[]}"#,
                "msg_1",
            ),
            (
                "/v1/embeddings",
                b"application/json",
                br#"{"object":"list","data":[{"embedding":[0.1]}]}"#,
                "signet-0123456789abcdef0123456789abcdef",
            ),
        ];
        for (path, content_type, body, id) in cases {
            let mut exchange = Exchange::new(policy());
            exchange.on_request_head(&head("POST", path, Some(b"2")));
            exchange.push_request_body(b"{}").unwrap();
            exchange.finish_request_body().unwrap();
            let edits = exchange.on_response_head(&response_head(200, content_type));
            let generated = path == "/v1/embeddings";
            assert_eq!(edits.completion_id.is_some(), generated, "{path}");
            match exchange.on_response_body(Some(body), true) {
                BodyStep::Seal(completed) => assert_eq!(completed.id.as_str(), id, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_upload_streams_through_hashed_as_it_passes() {
        let mut exchange = Exchange::new(policy());
        let decision = exchange.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/audio/transcriptions", None)
        });
        assert_eq!(
            decision,
            HeadDecision::Admit {
                read_body_first: false
            }
        );
        let parts: [&[u8]; 2] = [
            b"--b\r\ncontent-disposition: form-data; name=\"file\"\r\n\r\n",
            b"\x00\xffRIFF--b--\r\n",
        ];
        for (i, part) in parts.iter().enumerate() {
            let sent = exchange
                .forward_request_body(Some(Bytes::copy_from_slice(part)), i == 1)
                .unwrap();
            assert_eq!(sent.as_deref(), Some(*part), "not held, not changed");
        }
        let whole: Vec<u8> = parts.concat();
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(&whole).into();
        assert_eq!(exchange.request_sha256(), Some(digest));
        exchange.on_response_head(&response_head(200, b"application/json"));
        assert!(matches!(
            exchange.on_response_body(Some(br#"{"text":"hi"}"#), true),
            BodyStep::Seal(_)
        ));
        // Its size is still bounded.
        let mut big = Exchange::new(policy());
        big.on_request_head(&RequestHead {
            transfer_encoding: true,
            ..head("POST", "/v1/audio/translations", None)
        });
        let refusal = big
            .forward_request_body(Some(Bytes::from(vec![0u8; 5000])), false)
            .unwrap_err();
        assert_eq!(refusal.error.status, 413);
    }

    #[test]
    fn a_client_seen_gone_before_the_last_bytes_is_never_signed() {
        let (most, last) = SEED_RESPONSE.split_at(SEED_RESPONSE.len() - 30);
        let cases = [
            (ClientState::Open, true, true),
            (ClientState::Closed, false, true), // an SDK done at [DONE]
            (ClientState::Closed, true, false), // left before the last bytes
            (ClientState::Reset, false, false), // earlier bytes hit a closed socket
            (ClientState::Reset, true, false),
        ];
        for (state, last_has_bytes, signed) in cases {
            let mut exchange = admitted_seed();
            exchange.on_response_head(&response_head(200, b"text/event-stream"));
            let (body, end): (&[u8], &[u8]) = if last_has_bytes {
                (most, last)
            } else {
                (SEED_RESPONSE, b"")
            };
            exchange.on_response_body(Some(body), false);
            assert!(exchange.awaits_seal());
            exchange.on_client_state(state, last_has_bytes);
            let step = exchange.on_response_body(Some(end), true);
            assert_eq!(
                matches!(step, BodyStep::Seal(_)),
                signed,
                "{state:?} {last_has_bytes}"
            );
            if !signed {
                assert_eq!(exchange.unsigned(), Some(UnsignedReason::ClientAbort));
            }
        }
    }
}
