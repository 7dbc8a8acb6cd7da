//! The in-band JSON path: a non-streamed completion whose client asked for the signature in
//! the response headers (`x-signet-signature: in-band`). signet sends the (complete,
//! checked) request itself, holds the JSON answer (up to `limits.json_response_bytes`) until
//! it is signed, and returns head and body together. The request goes through the upstream
//! pool's own client ([`crate::upstreams::UpstreamPool::send`]: its timeouts, its failover
//! when an upstream cannot be connected to). The exchange's state machine decides what is
//! signed exactly as on the proxied path; this module only moves the bytes.

use crate::aci::PendingReceipt;
use crate::gateway::Gateway;
use crate::notary::SealError;
use crate::upstreams::{Answer, UpstreamError, UpstreamFailure, is_hop_by_hop};
use signet_core::error::ApiError;
use signet_core::exchange::{BodyStep, Exchange, HttpVersion, ResponseHead, is_signet_header};
use signet_core::inband::headers as inband_headers;
use signet_core::transcript::{CompletedExchange, UnsignedReason};

/// What the in-band JSON path answers the client with.
#[derive(Debug)]
pub struct InbandAnswer {
    /// Status for the client.
    pub status: u16,
    /// Headers for the client (no hop-by-hop ones, no length: it is set on writing).
    pub headers: Vec<(String, String)>,
    /// Body for the client.
    pub body: bytes::Bytes,
    /// The upstream that answered.
    pub target: Option<crate::config::UpstreamTarget>,
    /// The ACI receipt filed for it, to take back if the answer does not reach the client.
    pub receipt: Option<signet_core::aci::store::ReceiptTicket>,
}

impl InbandAnswer {
    fn refused(exchange: &mut Exchange, error: ApiError, reason: UnsignedReason) -> Self {
        let mut headers: Vec<(String, String)> = error
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        let body = bytes::Bytes::from(error.body());
        exchange.inband_outcome(error.status, body.len() as u64, None, Some(reason));
        Self {
            status: error.status,
            body,
            headers,
            target: None,
            receipt: None,
        }
    }

    fn at(mut self, target: crate::config::UpstreamTarget) -> Self {
        self.target = Some(target);
        self
    }
}

/// The upstream's response headers that reach the client: no hop-by-hop ones, no length
/// (set on writing), and none of signet's own names (an upstream cannot supply a signature).
fn copy_response_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !is_hop_by_hop(name.as_str())
                && *name != http::header::CONTENT_LENGTH
                && !is_signet_header(name.as_str())
                && !signet_core::aci::is_aci_header(name.as_str())
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// The client's request headers that go upstream, by the pool's header policy, and
/// signet's request id.
fn request_headers(
    gateway: &Gateway,
    headers: &http::HeaderMap,
    request_id: &str,
) -> Vec<(String, String)> {
    let policy = gateway.upstreams.header_policy();
    let mut out = Vec::new();
    for (name, value) in headers {
        let keep = !is_hop_by_hop(name.as_str())
            && name != http::header::CONTENT_LENGTH
            && policy.keeps(name.as_str(), true);
        if let (true, Ok(value)) = (keep, value.to_str()) {
            out.push((name.as_str().to_owned(), value.to_owned()));
        }
    }
    out.push(("x-request-id".to_owned(), request_id.to_owned()));
    out
}

/// Sends the request, signs the answer through `exchange` and returns what to write.
pub async fn serve(
    gateway: &Gateway,
    exchange: &mut Exchange,
    aci: Option<&PendingReceipt>,
    method: &http::Method,
    path_and_query: &str,
    headers: &http::HeaderMap,
    request_id: &str,
) -> InbandAnswer {
    let Some(body) = exchange.request_body().cloned() else {
        return InbandAnswer::refused(exchange, ApiError::internal(), UnsignedReason::Rejected);
    };
    let headers = request_headers(gateway, headers, request_id);
    let body_sent = body.clone();
    let sent = gateway
        .upstreams
        .send(
            method,
            path_and_query,
            &headers,
            body,
            gateway.settings.limits.json_response_bytes,
        )
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => return refused_for(exchange, error),
    };
    let mut out = InbandAnswer {
        status: answer.status,
        headers: copy_response_headers(&answer.headers),
        body: answer.body.clone(),
        target: Some(answer.target.clone()),
        receipt: None,
    };
    if let Some(pending) = aci.filter(|_| (200..300).contains(&answer.status)) {
        out.headers.push((
            signet_core::aci::RECEIPT_ID_HEADER.to_owned(),
            pending.receipt_id.clone(),
        ));
    }
    if let Some(completed) = follow_answer(exchange, &answer) {
        seal(gateway, exchange, aci, &completed, &body_sent, &mut out);
    }
    out
}

/// The client's answer when the upstream gave none: the error envelope for what failed, at
/// the upstream it failed at.
fn refused_for(exchange: &mut Exchange, error: UpstreamError) -> InbandAnswer {
    let (api_error, reason) = match &error.failure {
        UpstreamFailure::NoUpstream => (
            ApiError::bad_gateway("no upstream is available (every upstream failed to connect)"),
            UnsignedReason::UpstreamError,
        ),
        UpstreamFailure::Timeout(_) => (
            ApiError::gateway_timeout("the upstream did not answer in time"),
            UnsignedReason::UpstreamAbort,
        ),
        UpstreamFailure::TooLarge(limit) => (
            ApiError::bad_gateway(format!(
                "the response is larger than the {limit} bytes signet holds for an in-band signature; \
                 ask without x-signet-signature and fetch /v1/signature/{{id}}"
            )),
            UnsignedReason::UpstreamError,
        ),
        failure @ UpstreamFailure::Exchange(_) => (
            ApiError::bad_gateway(format!("upstream exchange failed: {failure}")),
            UnsignedReason::UpstreamError,
        ),
    };
    let refused = InbandAnswer::refused(exchange, api_error, reason);
    match error.target {
        Some(target) => refused.at(target),
        None => refused,
    }
}

/// Hands the upstream's head and whole body to the exchange; what to seal, if it is signed.
fn follow_answer(exchange: &mut Exchange, answer: &Answer) -> Option<CompletedExchange> {
    exchange.on_upstream_framing(
        answer.headers.contains_key(http::header::CONTENT_LENGTH),
        answer.headers.contains_key(http::header::TRANSFER_ENCODING),
    );
    exchange.on_response_head(&ResponseHead {
        status: answer.status,
        content_type: answer
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        content_length: true,
        transfer_encoding: false,
        client_version: HttpVersion::Http11,
    });
    match exchange.on_response_body(Some(&answer.body), true) {
        BodyStep::Seal(completed) => Some(completed),
        BodyStep::Continue => None,
    }
}

/// Signs the completed exchange; a JSON answer carries its signature in headers, never in
/// the body.
fn seal(
    gateway: &Gateway,
    exchange: &mut Exchange,
    aci: Option<&PendingReceipt>,
    completed: &CompletedExchange,
    forwarded: &bytes::Bytes,
    out: &mut InbandAnswer,
) {
    match gateway.notary.seal_for_client(completed) {
        Ok((ticket, signature)) => {
            let _ = exchange.sealed(ticket, &signature);
            if let Some(pending) = aci {
                out.receipt = gateway.aci.issue(
                    pending,
                    completed,
                    Some(forwarded),
                    // In-band JSON is never E2EE (the exchange turns it off).
                    None,
                    exchange.emitted_sha256(completed),
                );
            }
            out.headers.extend([
                (inband_headers::SIGNATURE.to_owned(), signature.signature),
                (inband_headers::TEXT.to_owned(), signature.text),
                (
                    inband_headers::SIGNING_ADDRESS.to_owned(),
                    signature.signing_address,
                ),
                (inband_headers::COMPLETION_ID.to_owned(), signature.id),
            ]);
        }
        Err(SealError::DuplicateId(_)) => {
            log::warn!("the upstream repeated a completion id: the later response is not signed");
            exchange.seal_failed(UnsignedReason::DuplicateId);
        }
        Err(SealError::Signing(e)) => {
            log::error!("signing failed for a completed response: {e}");
            exchange.seal_failed(UnsignedReason::SigningFailed);
        }
    }
}
