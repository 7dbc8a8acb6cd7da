//! The gateway's shared state and the decisions the proxy hooks delegate to: which requests
//! are admitted to signed routes, how the upstream request is prepared, how a finished
//! response is sealed, and how local routes are answered.

use crate::auth::BearerTokens;
use crate::config::{Settings, UpstreamTarget};
use crate::metrics::{METRICS, StateSource};
use crate::notary::Notary;
use crate::routes::{self, Health, LocalResponse};
use crate::upstreams::UpstreamPool;
use log::error;
use pingora_core::prelude::HttpPeer;
use pingora_http::RequestHeader;
use signet_attest::Attestor;
use signet_core::error::ApiError;
use signet_core::ids::CompletionId;
use signet_core::inband::{InbandSignature, headers as inband_headers};
use signet_core::route::Route;
use signet_core::store::Ticket;
use signet_core::transcript::{RequestCapture, ResponseCapture, ScanLimits, UnsignedReason};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Everything requests share.
pub struct Gateway {
    settings: Settings,
    notary: Notary,
    attestor: Arc<Attestor>,
    upstreams: UpstreamPool,
    tokens: Option<BearerTokens>,
    in_flight: Arc<AtomicUsize>,
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
}

/// What the in-band (non-streamed) path produced.
#[derive(Debug)]
pub struct InbandOutcome {
    /// Status for the client.
    pub status: u16,
    /// Headers for the client (no hop-by-hop ones, no length: it is set on writing).
    pub headers: Vec<(String, String)>,
    /// Body for the client.
    pub body: bytes::Bytes,
    /// The signature, when one was made.
    pub sealed: Option<Sealed>,
    /// Why not, when none was.
    pub unsigned: Option<UnsignedReason>,
    /// The upstream that answered.
    pub target: Option<UpstreamTarget>,
}

impl InbandOutcome {
    fn refused(error: ApiError) -> Self {
        let mut headers: Vec<(String, String)> = error
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        Self {
            status: error.status,
            body: bytes::Bytes::from(error.body()),
            headers,
            sealed: None,
            unsigned: Some(if error.status == 504 {
                UnsignedReason::UpstreamAbort
            } else {
                UnsignedReason::UpstreamError
            }),
            target: None,
        }
    }

    fn at(mut self, target: UpstreamTarget) -> Self {
        self.target = Some(target);
        self
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross signet.
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn copy_response_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name) && *name != http::header::CONTENT_LENGTH)
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// A signature made and filed for one response.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// To take it back if the response does not reach the client.
    pub ticket: Ticket,
    /// The completion id.
    pub id: CompletionId,
    /// The signature in its in-band form.
    pub inband: InbandSignature,
}

/// A place among the requests in flight on signed routes; given back when dropped.
#[derive(Debug)]
pub struct InFlightSlot(Arc<AtomicUsize>);

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.upstreams)
            .field("signer", &self.notary.address())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Assembles the gateway from checked settings.
    pub fn new(
        settings: Settings,
        notary: Notary,
        attestor: Arc<Attestor>,
        upstreams: UpstreamPool,
    ) -> Self {
        let tokens = settings
            .auth
            .as_ref()
            .map(|auth| BearerTokens::new(&auth.tokens));
        Self {
            settings,
            notary,
            attestor,
            upstreams,
            tokens,
            in_flight: Arc::new(AtomicUsize::new(0)),
            upstream_tls: signet_verify::http::tls_config(None).ok(),
        }
    }

    /// Whether a request to a protected route may proceed: always when no tokens are
    /// configured, else only with an accepted bearer token.
    pub fn authorized(&self, header: &RequestHeader) -> bool {
        self.tokens.as_ref().is_none_or(|tokens| {
            tokens.accepts(
                header
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            )
        })
    }

    /// Checks the size of the request head against `limits.max_header_bytes`.
    pub fn check_head_size(&self, header: &RequestHeader) -> Result<(), ApiError> {
        let size = header.method.as_str().len()
            + header.raw_path().len()
            + header
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if size > self.settings.limits.max_header_bytes {
            return Err(ApiError::from_status(431));
        }
        Ok(())
    }

    /// Takes a place among the requests in flight on signed routes, or refuses with a 503.
    pub fn enter(&self) -> Result<InFlightSlot, ApiError> {
        let max = self.settings.limits.max_concurrent_streams;
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlightSlot(self.in_flight.clone());
        if before >= max {
            return Err(ApiError::unavailable(
                "too_many_requests",
                format!("signet is at its limit of {max} concurrent completions; retry shortly"),
            ));
        }
        Ok(slot)
    }

    /// Requests in flight on signed routes.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The next upstream to try, skipping those already tried for this request.
    pub fn pick_upstream(&self, tried: &[SocketAddr]) -> Option<&UpstreamTarget> {
        self.upstreams.select(tried)
    }

    /// How many upstreams there are.
    pub fn upstream_count(&self) -> usize {
        self.upstreams.len()
    }

    /// A peer for one attempt at `target`. Streamed requests may stay silent for
    /// `upstream_timeouts.idle` between chunks; others for `first_byte` (a non-streamed
    /// answer comes only once the whole completion is generated).
    pub fn peer_for(&self, target: &UpstreamTarget, stream: Option<bool>) -> HttpPeer {
        let timeouts = self.settings.upstream_timeouts;
        let read_timeout = match stream {
            Some(true) => timeouts.idle,
            _ => timeouts.first_byte,
        };
        self.upstreams.peer(target, read_timeout)
    }

    /// The checked settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The notary (signer and store).
    pub fn notary(&self) -> &Notary {
        &self.notary
    }

    /// The attestor.
    pub fn attestor(&self) -> &Arc<Attestor> {
        &self.attestor
    }

    /// Limits for finding a response's id.
    pub fn scan_limits(&self) -> ScanLimits {
        ScanLimits {
            event_stream: self.settings.limits.id_scan_bytes,
            json_body: self.settings.limits.json_response_bytes,
        }
    }

    /// Admits a request to a signed route, or refuses it before anything is forwarded:
    /// only `POST`, and a declared body no larger than the limit.
    pub fn admit_signed(&self, header: &RequestHeader) -> Result<RequestCapture, ApiError> {
        if header.method != http::Method::POST {
            return Err(ApiError::method_not_allowed("POST"));
        }
        let limit = self.settings.limits.max_request_body;
        if let Some(length) = header.headers.get(http::header::CONTENT_LENGTH) {
            let declared = length
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("bad_request", "invalid Content-Length"))?;
            if declared > limit as u64 {
                return Err(ApiError::too_large(limit));
            }
        }
        Ok(RequestCapture::new(limit))
    }

    /// Adjusts the request sent upstream. On signed routes `Accept-Encoding` goes, so the
    /// upstream sends identity bytes and the hashed bytes are the delivered bytes. The
    /// client's bearer token is signet's, not the upstream's: it goes unless configured to be
    /// forwarded. The request id travels along for correlation.
    pub fn prepare_upstream_request(
        &self,
        request: &mut RequestHeader,
        signed: bool,
        target: &UpstreamTarget,
        request_id: &str,
    ) -> pingora_core::Result<()> {
        if signed {
            request.remove_header(&http::header::ACCEPT_ENCODING);
        }
        if self
            .settings
            .auth
            .as_ref()
            .is_some_and(|auth| !auth.forward_authorization)
        {
            request.remove_header(&http::header::AUTHORIZATION);
        }
        request.insert_header(http::header::HOST, target.authority())?;
        request.insert_header("x-request-id", request_id)?;
        Ok(())
    }

    /// Signs a finished response and files the signature.
    pub fn seal(
        &self,
        capture: ResponseCapture,
        request_sha256: Option<[u8; 32]>,
    ) -> Result<Sealed, (UnsignedReason, Option<CompletionId>)> {
        let Some(request_sha256) = request_sha256 else {
            // The upstream answered before the request body was complete: what was sent
            // is not what the client sent, so there is nothing honest to sign.
            return Err((UnsignedReason::UpstreamAbort, None));
        };
        let exchange = capture.finish(request_sha256).map_err(|why| (why, None))?;
        match self.notary.seal(&exchange) {
            Ok((ticket, signature)) => Ok(Sealed {
                ticket,
                inband: InbandSignature {
                    id: exchange.id.to_string(),
                    text: exchange.text(),
                    signature: signature.to_hex(),
                    signing_address: self.notary.address().to_checksum(),
                    signing_algo: "ecdsa".to_owned(),
                },
                id: exchange.id,
            }),
            Err(e) => {
                error!("signing failed for a completed response: {e}");
                Err((UnsignedReason::SigningFailed, Some(exchange.id)))
            }
        }
    }

    /// Serves a non-streamed completion whose signature the client wants in the response
    /// headers: signet sends the (complete, checked) request itself, holds the JSON answer
    /// (up to `limits.json_response_bytes`) until it is signed, and returns it whole.
    pub async fn fetch_for_inband(
        &self,
        header: &RequestHeader,
        request: &RequestCapture,
        request_id: &str,
    ) -> InbandOutcome {
        let Some(body) = request.complete_body().cloned() else {
            return InbandOutcome::refused(ApiError::internal());
        };
        let mut failed: Vec<SocketAddr> = Vec::new();
        let path = header
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let headers = self.inband_request_headers(header, request_id);
        let (target, answer) = loop {
            let Some(target) = self.pick_upstream(&failed).cloned() else {
                return InbandOutcome::refused(ApiError::bad_gateway(
                    "no upstream is available (every upstream failed to connect)",
                ));
            };
            let client = signet_verify::http::Client::new(
                signet_verify::http::BaseUrl {
                    tls: target.tls,
                    host: target.host.clone(),
                    port: target.port,
                    prefix: String::new(),
                },
                self.upstream_tls.clone(),
                self.settings.upstream_timeouts.first_byte,
            )
            .with_max_body(self.settings.limits.json_response_bytes);
            let refs: Vec<(&str, String)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            match client
                .send(header.method.clone(), &path, &refs, body.clone())
                .await
            {
                Err(signet_verify::http::HttpError::Connect(_)) => {
                    failed.push(target.addr);
                    continue;
                }
                other => break (target, other),
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(signet_verify::http::HttpError::Timeout(_)) => {
                return InbandOutcome::refused(ApiError::gateway_timeout(
                    "the upstream did not answer in time",
                ))
                .at(target);
            }
            Err(signet_verify::http::HttpError::TooLarge(limit)) => {
                return InbandOutcome::refused(ApiError::bad_gateway(format!(
                    "the response is larger than the {limit} bytes signet holds for an in-band signature; \
                     ask without x-signet-signature and fetch /v1/signature/{{id}}"
                )))
                .at(target);
            }
            Err(e) => {
                return InbandOutcome::refused(ApiError::bad_gateway(format!(
                    "upstream exchange failed: {e}"
                )))
                .at(target);
            }
        };
        let mut outcome = InbandOutcome {
            status: answer.status,
            headers: copy_response_headers(&answer.headers),
            body: answer.body.clone(),
            sealed: None,
            unsigned: None,
            target: Some(target),
        };
        if !(200..300).contains(&answer.status) {
            outcome.unsigned = Some(UnsignedReason::UpstreamError);
            return outcome;
        }
        let kind = signet_core::transcript::BodyKind::from_content_type(
            answer
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
        );
        let mut capture = ResponseCapture::new(kind, self.scan_limits());
        capture.push(&answer.body);
        match self.seal(capture, request.sha256()) {
            Ok(sealed) => {
                let inband = &sealed.inband;
                outcome.headers.push((
                    inband_headers::SIGNATURE.to_owned(),
                    inband.signature.clone(),
                ));
                outcome
                    .headers
                    .push((inband_headers::TEXT.to_owned(), inband.text.clone()));
                outcome.headers.push((
                    inband_headers::SIGNING_ADDRESS.to_owned(),
                    inband.signing_address.clone(),
                ));
                outcome
                    .headers
                    .push((inband_headers::COMPLETION_ID.to_owned(), inband.id.clone()));
                outcome.sealed = Some(sealed);
            }
            Err((reason, _)) => outcome.unsigned = Some(reason),
        }
        outcome
    }

    fn inband_request_headers(
        &self,
        header: &RequestHeader,
        request_id: &str,
    ) -> Vec<(String, String)> {
        let forward_authorization = self
            .settings
            .auth
            .as_ref()
            .is_none_or(|auth| auth.forward_authorization);
        let mut out = Vec::new();
        for (name, value) in &header.headers {
            let skip = is_hop_by_hop(name)
                || name == http::header::HOST
                || name == http::header::CONTENT_LENGTH
                || name == http::header::ACCEPT_ENCODING
                || name.as_str() == "x-request-id"
                || (name == http::header::AUTHORIZATION && !forward_authorization);
            if let (false, Ok(value)) = (skip, value.to_str()) {
                out.push((name.as_str().to_owned(), value.to_owned()));
            }
        }
        out.push(("x-request-id".to_owned(), request_id.to_owned()));
        out
    }

    /// Takes back a signature whose response did not reach the client.
    pub fn retract(&self, ticket: Ticket, id: &CompletionId) {
        self.notary.retract(ticket, id);
    }

    /// Answers a local route.
    pub async fn answer_local(&self, route: Route, header: &RequestHeader) -> LocalResponse {
        if header.method != http::Method::GET {
            return ApiError::method_not_allowed("GET").into();
        }
        let query = header.uri.query();
        match route {
            Route::Signature => {
                let answer = routes::signature(&self.notary, header.uri.path(), query).await;
                let result = match answer.status {
                    200 => "hit",
                    404 => "miss",
                    503 => "unavailable",
                    _ => "invalid",
                };
                METRICS.signature_lookups.with_label_values(&[result]).inc();
                answer
            }
            Route::AttestationReport => {
                let provider = self.attestor.mode().as_str();
                let started = std::time::Instant::now();
                let answer = match self.attestor.answer(query).await {
                    Ok(report) => LocalResponse::ok_json(&report),
                    Err(refusal) => LocalResponse::from(refusal),
                };
                let outcome = match answer.status {
                    200 => "ok",
                    400 => "bad_request",
                    404 => "not_found",
                    _ => "unavailable",
                };
                METRICS
                    .attestation_requests
                    .with_label_values(&[provider, outcome])
                    .inc();
                METRICS
                    .attestation_seconds
                    .with_label_values(&[provider])
                    .observe(started.elapsed().as_secs_f64());
                answer
            }
            Route::Health => LocalResponse::ok_json(&Health {
                status: "ok",
                version: env!("CARGO_PKG_VERSION"),
                signing_address: self.notary.address().to_checksum(),
                attestation_mode: self.settings.attestation.mode.as_str(),
            }),
            Route::Signed(_) | Route::PassThrough => ApiError::internal().into(),
        }
    }
}

impl StateSource for Gateway {
    fn stored_signatures(&self) -> usize {
        self.notary.store().len()
    }
    fn removed_signatures(&self) -> (u64, u64) {
        let removed = self.notary.store().removed();
        (removed.expired, removed.evicted)
    }
    fn completions_in_flight(&self) -> usize {
        self.in_flight()
    }
}
