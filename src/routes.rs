//! Routing and the endpoints signet answers itself: `/health` and `/v1/signature/{id}` here,
//! `/v1/attestation/report` through the attestation module, `/v1/aci/attestation` and
//! `/v1/aci/receipts/{id}` through [`crate::aci`]. Each answer is a plain [`LocalResponse`]
//! (status, JSON body); writing it to the wire is the proxy's job.

use crate::gateway::Gateway;
use crate::metrics::METRICS;
use crate::notary::{Lookup, Notary};
use signet_core::error::ApiError;
use signet_core::ids::CompletionId;
use signet_core::query::{SigningAlgo, signing_algo_param};
use signet_core::route::Route;
use signet_core::route::SIGNATURE_PREFIX;

/// A response signet writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// Extra headers (`Allow`, `WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl LocalResponse {
    /// 200 with a JSON body.
    pub fn ok_json(value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status: 200,
                body,
                headers: Vec::new(),
            },
            Err(_) => ApiError::internal().into(),
        }
    }

    /// A 200 whose JSON body is already serialized.
    pub fn ok_body(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            body,
            headers: Vec::new(),
        }
    }
}

impl From<ApiError> for LocalResponse {
    fn from(error: ApiError) -> Self {
        Self {
            status: error.status,
            body: error.body(),
            headers: error.headers,
        }
    }
}

/// `GET /v1/signature/{id}`: this process's signatures first, then the shared store's.
pub async fn signature(notary: &Notary, path: &str, query: Option<&str>) -> LocalResponse {
    let raw_id = path.strip_prefix(SIGNATURE_PREFIX).unwrap_or_default();
    let (algo, id) = match signing_algo_param(query).and_then(|algo| {
        CompletionId::parse(raw_id)
            .map(|id| (algo, id))
            .map_err(|e| {
                ApiError::bad_request("invalid_id", format!("invalid completion id: {e}"))
                    .with_param("id")
            })
    }) {
        Ok(parsed) => parsed,
        Err(error) => return error.into(),
    };
    if algo == SigningAlgo::Ed25519 {
        // Only exchanges this process sealed: another replica's record carries its own
        // ECDSA signature, and this key signs only what this process saw delivered.
        return match notary.ed25519_receipt(&id) {
            Some(receipt) => LocalResponse::ok_json(&receipt),
            None => ApiError::not_found(
                "signature_not_found",
                "no Ed25519 signature for this id here: unknown, not signed, expired, or \
                 signed by another replica (ask it, or ask for signing_algo=ecdsa)",
            )
            .into(),
        };
    }
    match notary.lookup(&id).await {
        Ok(Lookup::Local(receipt) | Lookup::Shared(receipt)) => LocalResponse::ok_json(&receipt),
        Ok(Lookup::Missing) => ApiError::not_found(
            "signature_not_found",
            "no signature for this id: unknown, not signed, or expired",
        )
        .into(),
        Err(e) => {
            log::warn!("{e}");
            ApiError::unavailable(
                "signature_store_unavailable",
                "this replica does not have the signature and the shared store is unreachable",
            )
            .into()
        }
    }
}

/// The body of `GET /health`.
#[derive(Debug, serde::Serialize)]
pub struct Health<'a> {
    /// Always `ok` while serving.
    pub status: &'static str,
    /// signet's version.
    pub version: &'static str,
    /// The signing address.
    pub signing_address: String,
    /// The attestation mode (`dev` is not hardware-rooted).
    pub attestation_mode: &'a str,
}

/// Answers a local route (`method`, `path`, `query` and the `Authorization` header as the
/// request has them).
pub async fn answer_local(
    gateway: &Gateway,
    route: Route,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> LocalResponse {
    if method != http::Method::GET {
        return ApiError::method_not_allowed("GET").into();
    }
    match route {
        Route::Signature => {
            let answer = signature(&gateway.notary, path, query).await;
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
            let provider = gateway.attestor.mode().as_str();
            let started = std::time::Instant::now();
            let answer = match gateway.attestor.answer(query).await {
                Ok(report) => LocalResponse::ok_json(&report),
                Err(refusal) => LocalResponse::from(refusal),
            };
            record_attestation(provider, started, answer.status);
            answer
        }
        Route::AciAttestation => {
            let provider = gateway.attestor.mode().as_str();
            let started = std::time::Instant::now();
            let answer = gateway.aci.attestation(&gateway.attestor, query).await;
            record_attestation(provider, started, answer.status);
            answer
        }
        Route::AciReceipt => gateway.aci.receipt(path, authorization).await,
        Route::Health => LocalResponse::ok_json(&Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            signing_address: gateway.notary.address().to_checksum(),
            attestation_mode: gateway.settings.attestation.mode.as_str(),
        }),
        Route::Signed(_) | Route::PassThrough | Route::Ambiguous => ApiError::internal().into(),
    }
}

/// Counts an attestation request (legacy or ACI) by provider and outcome, and its duration.
fn record_attestation(provider: &str, started: std::time::Instant, status: u16) {
    let outcome = match status {
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
}
