//! The record of one signed exchange as bytes pass through: the request body (hashed and
//! held until complete so malformed input never reaches the upstream), the response body
//! (hashed as it streams, with its completion id found on the way), and the verdict at the
//! end: the text to sign, or the reason not to.
//!
//! Nothing here knows about Pingora or HTTP framing; callers hand over body bytes in the
//! order the client sends or receives them.

use crate::ids::CompletionId;
use crate::route::IdRule;
use crate::sse::{IdFailure, IdSearch, SseIdScanner, id_at_pointer, id_of_json_object};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// Why a request body was refused before it reached the upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestBodyError {
    /// Larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Not UTF-8.
    #[error("request body is not valid UTF-8")]
    NotUtf8,
    /// Not JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// JSON, but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
}

/// The request side of a signed exchange.
#[derive(Debug)]
pub struct RequestCapture {
    hasher: Sha256,
    held: BytesMut,
    limit: usize,
    complete: Option<(Bytes, [u8; 32])>,
    stream: Option<bool>,
    hashed_total: u64,
    /// Hashed and counted as it passes, never held nor parsed (multipart uploads).
    opaque: bool,
}

impl RequestCapture {
    /// A capture that refuses bodies over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            hasher: Sha256::new(),
            held: BytesMut::new(),
            limit,
            complete: None,
            stream: None,
            hashed_total: 0,
            opaque: false,
        }
    }

    /// A capture for a body that is not JSON (a multipart upload): hashed exactly as it
    /// passes and held to `limit`, but never held whole nor parsed.
    pub fn opaque(limit: usize) -> Self {
        Self {
            opaque: true,
            ..Self::new(limit)
        }
    }

    /// Whether this body streams through rather than being held until checked.
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// Whether the whole body has been received.
    pub fn is_complete(&self) -> bool {
        self.complete.is_some()
    }

    /// Bytes of the body hashed so far (all of it once complete).
    pub fn hashed_bytes(&self) -> u64 {
        match &self.complete {
            Some((body, _)) if !body.is_empty() && !self.opaque => body.len() as u64,
            _ => self.hashed_total,
        }
    }

    /// Bytes of the body held in memory (none for an opaque body, which only passes).
    pub fn held_bytes(&self) -> usize {
        if self.opaque {
            return 0;
        }
        match &self.complete {
            Some((body, _)) => body.len(),
            None => self.held.len(),
        }
    }

    /// The request's `stream` field, once the body is complete (`None` if absent or not a
    /// boolean).
    pub fn stream(&self) -> Option<bool> {
        self.stream
    }

    /// Forgets a partially received body. Called before a retried upstream attempt replays
    /// the body from its start, so no byte is hashed twice.
    pub fn restart_if_incomplete(&mut self) {
        if self.complete.is_none() {
            self.hasher = Sha256::new();
            self.held.clear();
            if self.opaque {
                self.hashed_total = 0;
            }
        }
    }

    /// Hashes and holds the next piece of the body.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), RequestBodyError> {
        if self.opaque {
            let total = self.hashed_total.saturating_add(chunk.len() as u64);
            if total > self.limit as u64 {
                return Err(RequestBodyError::TooLarge { limit: self.limit });
            }
            self.hasher.update(chunk);
            self.hashed_total = total;
            return Ok(());
        }
        if self.held.len().saturating_add(chunk.len()) > self.limit {
            self.held = BytesMut::new();
            return Err(RequestBodyError::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        self.held.extend_from_slice(chunk);
        self.hashed_total = self.held.len() as u64;
        Ok(())
    }

    /// Ends the body: checks it is a UTF-8 JSON object and returns the bytes to forward,
    /// unchanged. A second call (a retried attempt) returns the same bytes.
    pub fn finish(&mut self) -> Result<Bytes, RequestBodyError> {
        if let Some((body, _)) = &self.complete {
            return Ok(body.clone());
        }
        if self.opaque {
            let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            self.complete = Some((Bytes::new(), digest));
            return Ok(Bytes::new());
        }
        let body = std::mem::take(&mut self.held).freeze();
        self.stream = validate_json_object(&body)?;
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        self.complete = Some((body.clone(), digest));
        Ok(body)
    }

    /// The finished body, if complete and held (never for an opaque body).
    pub fn complete_body(&self) -> Option<&Bytes> {
        if self.opaque {
            return None;
        }
        self.complete.as_ref().map(|(body, _)| body)
    }

    /// sha256 of the finished body, if complete.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.complete.as_ref().map(|(_, digest)| *digest)
    }
}

/// Checks that `body` is a UTF-8 JSON object and reads its `stream` flag, in one parse.
fn validate_json_object(body: &[u8]) -> Result<Option<bool>, RequestBodyError> {
    #[derive(serde::Deserialize)]
    struct StreamProbe {
        #[serde(default)]
        stream: Option<serde_json::Value>,
    }
    let text = std::str::from_utf8(body).map_err(|_| RequestBodyError::NotUtf8)?;
    let starts_as_object = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    if !starts_as_object {
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| RequestBodyError::MalformedJson(e.to_string()))?;
        return Err(RequestBodyError::NotAnObject);
    }
    let probe: StreamProbe =
        serde_json::from_str(text).map_err(|e| RequestBodyError::MalformedJson(e.to_string()))?;
    Ok(probe.stream.and_then(|v| v.as_bool()))
}

/// How the response body carries its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `text/event-stream`: the id of the first data event.
    EventStream,
    /// Anything else: the top-level `id` of a JSON object.
    Json,
}

impl BodyKind {
    /// Chooses by the response's `Content-Type`.
    pub fn from_content_type(content_type: Option<&[u8]>) -> Self {
        let is_sse = content_type.is_some_and(|value| {
            let essence = value.split(|&b| b == b';').next().unwrap_or_default();
            essence
                .trim_ascii()
                .eq_ignore_ascii_case(b"text/event-stream")
        });
        if is_sse {
            BodyKind::EventStream
        } else {
            BodyKind::Json
        }
    }
}

/// Limits for finding the id in a response.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Most bytes of an event stream examined before its id is given up on.
    pub event_stream: usize,
    /// Most bytes of a JSON body kept to read its id.
    pub json_body: usize,
}

#[derive(Debug)]
enum IdFinder {
    EventStream(SseIdScanner),
    Json {
        copy: Vec<u8>,
        limit: usize,
        overflowed: bool,
        pointer: String,
    },
    /// The id is signet's own: nothing to look for.
    Given(CompletionId),
}

/// The response side of a signed exchange.
#[derive(Debug)]
pub struct ResponseCapture {
    hasher: Sha256,
    bytes: u64,
    finder: IdFinder,
}

/// Why an exchange ended without a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnsignedReason {
    /// The upstream answered with a non-2xx status.
    UpstreamError,
    /// The upstream connection failed or closed before the body was complete.
    UpstreamAbort,
    /// The client went away before the body was complete.
    ClientAbort,
    /// No completion id in the body.
    NoId,
    /// The id search or the JSON copy ran past its limit.
    TooLarge,
    /// The id breaks the id rules.
    InvalidId,
    /// The request was refused by signet before reaching the upstream.
    Rejected,
    /// Signing failed (never expected; logged as an error).
    SigningFailed,
    /// A live signature for the same completion id is already filed (an upstream that
    /// repeats ids): the earlier one stays, this one is not signed.
    DuplicateId,
    /// An E2EE response could not be encrypted: an error event replaced it.
    EncryptionFailed,
}

impl UnsignedReason {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UnsignedReason::UpstreamError => "upstream_error",
            UnsignedReason::UpstreamAbort => "upstream_abort",
            UnsignedReason::ClientAbort => "client_abort",
            UnsignedReason::NoId => "no_id",
            UnsignedReason::TooLarge => "too_large",
            UnsignedReason::InvalidId => "invalid_id",
            UnsignedReason::Rejected => "rejected",
            UnsignedReason::SigningFailed => "signing_failed",
            UnsignedReason::DuplicateId => "duplicate_id",
            UnsignedReason::EncryptionFailed => "encryption_failed",
        }
    }
}

impl From<IdFailure> for UnsignedReason {
    fn from(value: IdFailure) -> Self {
        match value {
            IdFailure::NotFound => UnsignedReason::NoId,
            IdFailure::TooLarge => UnsignedReason::TooLarge,
            IdFailure::Invalid => UnsignedReason::InvalidId,
        }
    }
}

/// A finished exchange ready to be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedExchange {
    /// The completion id from the response.
    pub id: CompletionId,
    /// sha256 of the request body as the client sent it.
    pub request_sha256: [u8; 32],
    /// sha256 of the response body as the client received it.
    pub response_sha256: [u8; 32],
}

impl CompletedExchange {
    /// `hex(sha256(request)) ":" hex(sha256(response))`, lowercase: the signed text.
    pub fn text(&self) -> String {
        signed_text(&self.request_sha256, &self.response_sha256)
    }
}

/// The signed text for two digests (docs/API.md §3).
pub fn signed_text(request_sha256: &[u8; 32], response_sha256: &[u8; 32]) -> String {
    let mut text = String::with_capacity(129);
    text.push_str(&hex::encode(request_sha256));
    text.push(':');
    text.push_str(&hex::encode(response_sha256));
    text
}

impl ResponseCapture {
    /// Starts capturing a 2xx response body of the given kind.
    pub fn new(kind: BodyKind, limits: ScanLimits) -> Self {
        Self::with_rule(kind, limits, &IdRule::top_level_id(), None)
    }

    /// Starts capturing a 2xx response body whose id is where `rule` says, or is `given`
    /// (signet's own, for bodies that carry none).
    pub fn with_rule(
        kind: BodyKind,
        limits: ScanLimits,
        rule: &IdRule,
        given: Option<CompletionId>,
    ) -> Self {
        let finder = match (rule, given, kind) {
            (_, Some(id), _) => IdFinder::Given(id),
            (IdRule::Generated, None, _) => IdFinder::Json {
                copy: Vec::new(),
                limit: 0,
                overflowed: true,
                pointer: String::new(),
            },
            (IdRule::InBody { event, stream, .. }, None, BodyKind::EventStream) => {
                IdFinder::EventStream(SseIdScanner::with_rule(
                    limits.event_stream,
                    event.as_deref(),
                    stream,
                ))
            }
            (IdRule::InBody { json, .. }, None, BodyKind::Json) => IdFinder::Json {
                copy: Vec::new(),
                limit: limits.json_body,
                overflowed: false,
                pointer: json.clone(),
            },
        };
        Self {
            hasher: Sha256::new(),
            bytes: 0,
            finder,
        }
    }

    /// Hashes the next piece of the body as the client will receive it.
    pub fn push(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
        match &mut self.finder {
            IdFinder::EventStream(scanner) => scanner.feed(chunk),
            IdFinder::Given(_) => {}
            IdFinder::Json {
                copy,
                limit,
                overflowed,
                ..
            } => {
                if *overflowed {
                } else if copy.len().saturating_add(chunk.len()) > *limit {
                    *overflowed = true;
                    *copy = Vec::new();
                } else {
                    copy.extend_from_slice(chunk);
                }
            }
        }
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A copy of the hash state over the bytes so far (to go on hashing bytes that follow
    /// them, such as the in-band trailer).
    pub fn digest_state(&self) -> Sha256 {
        self.hasher.clone()
    }

    /// The id, as soon as it is known (event streams find it early).
    pub fn id_so_far(&self) -> Option<&CompletionId> {
        match &self.finder {
            IdFinder::EventStream(scanner) => match scanner.search() {
                IdSearch::Found(id) => Some(id),
                _ => None,
            },
            IdFinder::Json { .. } => None,
            IdFinder::Given(id) => Some(id),
        }
    }

    /// Ends the body and pairs it with the request digest.
    pub fn finish(self, request_sha256: [u8; 32]) -> Result<CompletedExchange, UnsignedReason> {
        let id = match self.finder {
            IdFinder::EventStream(mut scanner) => match scanner.finish() {
                IdSearch::Found(id) => id,
                IdSearch::Failed(why) => return Err(why.into()),
                IdSearch::Searching => return Err(UnsignedReason::NoId),
            },
            IdFinder::Json {
                copy,
                overflowed,
                pointer,
                ..
            } => {
                if overflowed {
                    return Err(UnsignedReason::TooLarge);
                }
                if pointer == "/id" {
                    id_of_json_object(&copy)?
                } else {
                    id_at_pointer(&copy, &pointer)?
                }
            }
            IdFinder::Given(id) => id,
        };
        Ok(CompletedExchange {
            id,
            request_sha256,
            response_sha256: self.hasher.finalize().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_REQUEST: &[u8] = include_bytes!("../../../tests/fixtures/seed-request.json");
    const SEED_RESPONSE: &[u8] = include_bytes!("../../../tests/fixtures/seed-response.sse");
    const SEED_TEXT: &str = "bcf152411970b14faab35a76d559b4188b78c24ced0048d0edcd320bf47bff0a:2e704942816901eaf435945fd01d76346e5dd283d5f8a2391e525e8f9a9ef36e";
    const LIMITS: ScanLimits = ScanLimits {
        event_stream: 64 * 1024,
        json_body: 1024 * 1024,
    };

    fn request_digest(pieces: &[&[u8]]) -> [u8; 32] {
        let mut request = RequestCapture::new(1 << 20);
        for piece in pieces {
            request.push(piece).unwrap();
        }
        request.finish().unwrap();
        request.sha256().unwrap()
    }

    #[test]
    fn the_seed_exchange_yields_the_seed_text_however_it_is_cut() {
        for cut in (0..=SEED_RESPONSE.len()).step_by(7) {
            let req_cut = cut.min(SEED_REQUEST.len());
            let req = request_digest(&[&SEED_REQUEST[..req_cut], &SEED_REQUEST[req_cut..]]);
            let mut response = ResponseCapture::new(BodyKind::EventStream, LIMITS);
            response.push(&SEED_RESPONSE[..cut]);
            response.push(&SEED_RESPONSE[cut..]);
            let done = response.finish(req).unwrap();
            assert_eq!(done.text(), SEED_TEXT, "cut {cut}");
            assert_eq!(done.id.as_str(), "chat-7ee2a39468ce48d7b2284783f21782b0");
        }
    }

    #[test]
    fn request_bodies_are_checked_before_forwarding() {
        let mut ok = RequestCapture::new(1024);
        ok.push(b" {\"a\":1,\"stream\":true}").unwrap();
        assert_eq!(&ok.finish().unwrap()[..], b" {\"a\":1,\"stream\":true}");
        assert_eq!(ok.stream(), Some(true));
        assert_eq!(
            &ok.finish().unwrap()[..],
            b" {\"a\":1,\"stream\":true}",
            "retries see the same bytes"
        );

        let refuse = |body: &[u8]| {
            let mut capture = RequestCapture::new(1024);
            capture.push(body).unwrap();
            capture.finish().unwrap_err()
        };
        assert_eq!(refuse(b"\xff\xfe{}"), RequestBodyError::NotUtf8);
        assert_eq!(refuse(b"[1,2]"), RequestBodyError::NotAnObject);
        assert!(matches!(
            refuse(b"{\"a\":"),
            RequestBodyError::MalformedJson(_)
        ));
        assert!(matches!(refuse(b""), RequestBodyError::MalformedJson(_)));
        assert!(matches!(
            refuse(b"{} {}"),
            RequestBodyError::MalformedJson(_)
        ));

        let mut big = RequestCapture::new(4);
        big.push(b"{}").unwrap();
        assert_eq!(
            big.push(b"{}{"),
            Err(RequestBodyError::TooLarge { limit: 4 })
        );
    }

    #[test]
    fn a_restart_before_completion_forgets_partial_bytes() {
        let mut capture = RequestCapture::new(1024);
        capture.push(b"{\"a\":").unwrap();
        capture.restart_if_incomplete();
        capture.push(b"{\"a\":1}").unwrap();
        capture.finish().unwrap();
        let expected: [u8; 32] = Sha256::digest(b"{\"a\":1}").into();
        assert_eq!(capture.sha256(), Some(expected));
        capture.restart_if_incomplete();
        assert_eq!(capture.sha256(), Some(expected), "complete bodies stay");
    }

    #[test]
    fn json_bodies_give_their_top_level_id() {
        let body = br#"{"id":"cmpl-1","object":"chat.completion","choices":[]}"#;
        let mut response = ResponseCapture::new(BodyKind::Json, LIMITS);
        for piece in body.chunks(5) {
            response.push(piece);
        }
        let done = response.finish([0; 32]).unwrap();
        assert_eq!(done.id.as_str(), "cmpl-1");
        let expected: [u8; 32] = Sha256::digest(body).into();
        assert_eq!(done.response_sha256, expected);
    }

    #[test]
    fn json_bodies_over_the_copy_limit_are_not_signed() {
        let limits = ScanLimits {
            event_stream: 16,
            json_body: 16,
        };
        let mut response = ResponseCapture::new(BodyKind::Json, limits);
        response.push(br#"{"id":"cmpl-1","#);
        response.push(br#""x":"yyyyyyy"}"#);
        assert_eq!(response.finish([0; 32]), Err(UnsignedReason::TooLarge));
    }

    #[test]
    fn content_types_choose_the_finder() {
        let kind = |v: &[u8]| BodyKind::from_content_type(Some(v));
        assert_eq!(kind(b"text/event-stream"), BodyKind::EventStream);
        assert_eq!(
            kind(b"Text/Event-Stream; charset=utf-8"),
            BodyKind::EventStream
        );
        assert_eq!(kind(b"application/json"), BodyKind::Json);
        assert_eq!(BodyKind::from_content_type(None), BodyKind::Json);
    }
}
