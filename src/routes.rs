//! Routing and the endpoints signet answers itself: `/health` and `/v1/signature/{id}` here,
//! `/v1/attestation/report` through the attestation module. Each answer is a plain
//! [`LocalResponse`] (status, JSON body); writing it to the wire is the proxy's job.

use crate::error::ApiError;
use crate::ids::CompletionId;
use crate::notary::{Lookup, Notary};

/// Which signed route a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedRoute {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions`.
    Completions,
}

/// What a request is, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    /// `GET /health`.
    Health,
    /// `GET /v1/attestation/report`.
    AttestationReport,
    /// `GET /v1/signature/{id}`.
    Signature,
    /// A route whose responses are signed.
    Signed(SignedRoute),
    /// Anything else: forwarded unchanged, never signed.
    #[default]
    PassThrough,
}

const SIGNATURE_PREFIX: &str = "/v1/signature/";

impl Route {
    /// Classifies a request path (without its query).
    pub fn classify(path: &str) -> Route {
        match path {
            "/health" => Route::Health,
            "/v1/attestation/report" => Route::AttestationReport,
            "/v1/chat/completions" => Route::Signed(SignedRoute::ChatCompletions),
            "/v1/completions" => Route::Signed(SignedRoute::Completions),
            _ if path.starts_with(SIGNATURE_PREFIX) => Route::Signature,
            _ => Route::PassThrough,
        }
    }

    /// A stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::AttestationReport => "attestation",
            Route::Signature => "signature",
            Route::Signed(SignedRoute::ChatCompletions) => "chat_completions",
            Route::Signed(SignedRoute::Completions) => "completions",
            Route::PassThrough => "passthrough",
        }
    }

    /// Whether signet answers this route itself.
    pub fn is_local(self) -> bool {
        matches!(
            self,
            Route::Health | Route::AttestationReport | Route::Signature
        )
    }
}

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

/// Finds `name` in a query string. A parameter given twice is refused, so two parts of a
/// stack can never read different values from one request.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Result<Option<&'q str>, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            if found.is_some() {
                return Err(ApiError::bad_request(
                    "duplicate_parameter",
                    format!("query parameter `{name}` given more than once"),
                ));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// Checks the optional `signing_algo` parameter: only `ecdsa` exists.
pub fn check_signing_algo(query: Option<&str>) -> Result<(), ApiError> {
    match query_param(query, "signing_algo")? {
        None | Some("ecdsa") => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "unsupported_signing_algo",
            "signing_algo must be `ecdsa`",
        )
        .with_param("signing_algo")),
    }
}

/// `GET /v1/signature/{id}`: this process's signatures first, then the shared store's.
pub async fn signature(notary: &Notary, path: &str, query: Option<&str>) -> LocalResponse {
    let raw_id = path.strip_prefix(SIGNATURE_PREFIX).unwrap_or_default();
    let id = match check_signing_algo(query).and_then(|()| {
        CompletionId::parse(raw_id).map_err(|e| {
            ApiError::bad_request("invalid_id", format!("invalid completion id: {e}"))
                .with_param("id")
        })
    }) {
        Ok(id) => id,
        Err(error) => return error.into(),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified_exactly() {
        assert_eq!(Route::classify("/health"), Route::Health);
        assert_eq!(
            Route::classify("/v1/chat/completions"),
            Route::Signed(SignedRoute::ChatCompletions)
        );
        assert_eq!(Route::classify("/v1/chat/completions/"), Route::PassThrough);
        assert_eq!(Route::classify("/v1/models"), Route::PassThrough);
        assert_eq!(Route::classify("/v1/signature/abc"), Route::Signature);
        assert_eq!(Route::classify("/v1/signature/"), Route::Signature);
        assert_eq!(
            Route::classify("/v1/attestation/report"),
            Route::AttestationReport
        );
    }

    #[test]
    fn query_params_are_found_and_duplicates_refused() {
        assert_eq!(query_param(Some("a=1&nonce=ab"), "nonce"), Ok(Some("ab")));
        assert_eq!(query_param(None, "nonce"), Ok(None));
        assert_eq!(query_param(Some("nonce"), "nonce"), Ok(Some("")));
        assert!(query_param(Some("nonce=a&nonce=b"), "nonce").is_err());
        assert!(check_signing_algo(Some("signing_algo=ecdsa")).is_ok());
        assert_eq!(
            check_signing_algo(Some("signing_algo=ed25519"))
                .unwrap_err()
                .status,
            400
        );
    }
}
