//! Which route a request is on, decided from its path alone. Everything that differs per
//! route (admitted, signed, answered locally) keys off [`Route`].

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

/// Path prefix of `GET /v1/signature/{id}`.
pub const SIGNATURE_PREFIX: &str = "/v1/signature/";

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
}
