//! The gateway's shared state and the decisions the proxy hooks delegate to: which requests
//! are admitted to signed routes, how the upstream request is prepared, how a finished
//! response is sealed, and how local routes are answered.

use crate::attestation::Attestor;
use crate::config::Settings;
use crate::error::ApiError;
use crate::ids::CompletionId;
use crate::notary::Notary;
use crate::routes::{self, Health, LocalResponse, Route};
use crate::store::Ticket;
use crate::transcript::{RequestCapture, ResponseCapture, ScanLimits, UnsignedReason};
use log::error;
use pingora_core::prelude::HttpPeer;
use pingora_http::RequestHeader;
use std::sync::Arc;

/// Everything requests share.
pub struct Gateway {
    settings: Settings,
    notary: Notary,
    attestor: Arc<Attestor>,
    peer: HttpPeer,
    upstream_label: String,
    upstream_authority: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.upstream_label)
            .field("signer", &self.notary.address())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Assembles the gateway from checked settings.
    pub fn new(settings: Settings, notary: Notary, attestor: Arc<Attestor>) -> Self {
        let upstream = &settings.upstream;
        let mut peer = HttpPeer::new(upstream.addr, upstream.tls, upstream.host.clone());
        let timeouts = settings.upstream_timeouts;
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.total_connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.read);
        peer.options.write_timeout = Some(timeouts.write);
        peer.options.idle_timeout = Some(timeouts.pool_idle);
        let upstream_label = upstream.addr.to_string();
        let upstream_authority = upstream.authority();
        Self {
            settings,
            notary,
            attestor,
            peer,
            upstream_label,
            upstream_authority,
        }
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

    /// The upstream's address, for logs.
    pub fn upstream_label(&self) -> &str {
        &self.upstream_label
    }

    /// A peer for one upstream attempt.
    pub fn upstream_peer(&self) -> HttpPeer {
        self.peer.clone()
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
    /// upstream sends identity bytes and the hashed bytes are the delivered bytes.
    pub fn prepare_upstream_request(
        &self,
        request: &mut RequestHeader,
        signed: bool,
    ) -> pingora_core::Result<()> {
        if signed {
            request.remove_header(&http::header::ACCEPT_ENCODING);
        }
        request.insert_header(http::header::HOST, self.upstream_authority.as_str())?;
        Ok(())
    }

    /// Signs a finished response and files the signature.
    pub fn seal(
        &self,
        capture: ResponseCapture,
        request_sha256: Option<[u8; 32]>,
    ) -> Result<(Ticket, CompletionId), (UnsignedReason, Option<CompletionId>)> {
        let Some(request_sha256) = request_sha256 else {
            // The upstream answered before the request body was complete: what was sent
            // is not what the client sent, so there is nothing honest to sign.
            return Err((UnsignedReason::UpstreamAbort, None));
        };
        let exchange = capture.finish(request_sha256).map_err(|why| (why, None))?;
        match self.notary.seal(&exchange) {
            Ok((ticket, _)) => Ok((ticket, exchange.id)),
            Err(e) => {
                error!("signing failed for a completed response: {e}");
                Err((UnsignedReason::SigningFailed, Some(exchange.id)))
            }
        }
    }

    /// Takes back a signature whose response did not reach the client.
    pub fn retract(&self, ticket: Ticket) {
        self.notary.retract(ticket);
    }

    /// Answers a local route.
    pub async fn answer_local(&self, route: Route, header: &RequestHeader) -> LocalResponse {
        if header.method != http::Method::GET {
            return ApiError::method_not_allowed("GET").into();
        }
        let query = header.uri.query();
        match route {
            Route::Health => LocalResponse::ok_json(&Health {
                status: "ok",
                version: env!("CARGO_PKG_VERSION"),
                signing_address: self.notary.address().to_checksum(),
                attestation_mode: self.settings.attestation.mode.as_str(),
            }),
            Route::Signature => routes::signature(&self.notary, header.uri.path(), query),
            Route::AttestationReport => self.attestor.answer(query).await,
            Route::Signed(_) | Route::PassThrough => ApiError::internal().into(),
        }
    }
}
