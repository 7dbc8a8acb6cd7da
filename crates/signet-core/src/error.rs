//! The one place where signet's own failures become HTTP: the OpenAI error envelope
//! (docs/API.md §6). Modules return typed errors; the edge turns them into an [`ApiError`]
//! here, and only its message (never internal detail) reaches the client.

use serde_json::json;

/// The envelope's `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// 400, 405, 413 and other client mistakes.
    InvalidRequest,
    /// 401.
    Authentication,
    /// 404.
    NotFound,
    /// 502 and 504: the upstream could not be used.
    Upstream,
    /// 500 and 503.
    Server,
    /// ACI §10 `not_found`: an unknown or expired receipt, or a credential mismatch.
    AciNotFound,
    /// ACI §10 `unauthorized`: the receipt is credential-bound and none was presented.
    AciUnauthorized,
    /// An E2EE v2 error (its spec §9 type, e.g. `e2ee_replay_detected`).
    E2ee(&'static str),
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Authentication => "authentication_error",
            ErrorType::NotFound => "not_found_error",
            ErrorType::Upstream => "upstream_error",
            ErrorType::Server => "server_error",
            ErrorType::AciNotFound => "not_found",
            ErrorType::AciUnauthorized => "unauthorized",
            ErrorType::E2ee(kind) => kind,
        }
    }
}

/// Why a request head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadableHead {
    /// Larger than the head limit, or with more header fields than are read.
    TooLarge,
    /// Not a well-formed HTTP/1 request head.
    Malformed,
}

/// An error answer produced by signet itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Envelope `type`.
    pub kind: ErrorType,
    /// Envelope `code`: a stable machine-readable name.
    pub code: &'static str,
    /// Envelope `message`: for humans, safe to show.
    pub message: String,
    /// Envelope `param`, when one request parameter is at fault.
    pub param: Option<&'static str>,
    /// Headers that belong to this answer (`Allow`, `WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    fn new(status: u16, kind: ErrorType, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            headers: Vec::new(),
        }
    }

    /// Names the parameter at fault.
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, ErrorType::InvalidRequest, code, message)
    }

    /// 401, with the challenge RFC 6750 asks for.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut error = Self::new(401, ErrorType::Authentication, "invalid_api_key", message);
        error
            .headers
            .push(("www-authenticate", "Bearer".to_owned()));
        error
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, ErrorType::NotFound, code, message)
    }

    /// 404 with ACI's `not_found` type (ACI §10).
    pub fn aci_not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, ErrorType::AciNotFound, code, message)
    }

    /// 401 with ACI's `unauthorized` type (ACI §10), and the RFC 6750 challenge.
    pub fn aci_unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        let mut error = Self::new(401, ErrorType::AciUnauthorized, code, message);
        error
            .headers
            .push(("www-authenticate", "Bearer".to_owned()));
        error
    }

    /// 400 with an E2EE v2 type (its spec §9): `type` and `code` are both that type.
    pub fn e2ee(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, ErrorType::E2ee(kind), kind, message)
    }

    /// 405.
    pub fn method_not_allowed(allowed: &'static str) -> Self {
        let mut error = Self::new(
            405,
            ErrorType::InvalidRequest,
            "method_not_allowed",
            format!("method not allowed; use {allowed}"),
        );
        error.headers.push(("allow", allowed.to_owned()));
        error
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            ErrorType::InvalidRequest,
            "request_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    /// 502.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, ErrorType::Upstream, "upstream_unreachable", message)
    }

    /// 504.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(504, ErrorType::Upstream, "upstream_timeout", message)
    }

    /// 503, with a hint to retry after a second.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        let mut error = Self::new(503, ErrorType::Server, code, message);
        error.headers.push(("retry-after", "1".to_owned()));
        error
    }

    /// 429: this client asks too often; `retry_after_secs` says when it may again.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut error = Self::new(429, ErrorType::InvalidRequest, "rate_limited", message);
        error
            .headers
            .push(("retry-after", retry_after_secs.max(1).to_string()));
        error
    }

    /// 500, with a generic message: the detail belongs in the log, not the response.
    pub fn internal() -> Self {
        Self::new(500, ErrorType::Server, "internal_error", "internal error")
    }

    /// The answer to a request head the HTTP layer could not read, before any route is known:
    /// 431 for one over `limits.max_header_bytes` or with too many header fields, else 400
    /// (a malformed request line or header, an absolute-form target, conflicting
    /// `Content-Length` values).
    pub fn unreadable_head(why: UnreadableHead) -> Self {
        match why {
            UnreadableHead::TooLarge => Self::from_status(431),
            UnreadableHead::Malformed => Self::bad_request(
                "malformed_request",
                "the request line or headers could not be parsed",
            ),
        }
    }

    /// A generic envelope for a bare status code.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Self::bad_request("bad_request", "bad request"),
            401 => Self::unauthorized("missing or invalid bearer token"),
            404 => Self::not_found("not_found", "not found"),
            408 => Self::new(
                408,
                ErrorType::InvalidRequest,
                "request_timeout",
                "request timed out",
            ),
            413 => Self::new(
                413,
                ErrorType::InvalidRequest,
                "request_too_large",
                "request too large",
            ),
            431 => Self::new(
                431,
                ErrorType::InvalidRequest,
                "headers_too_large",
                "request headers too large",
            ),
            502 => Self::bad_gateway("upstream unreachable"),
            503 => Self::unavailable("unavailable", "service unavailable"),
            504 => Self::gateway_timeout("upstream timed out"),
            s if (400..500).contains(&s) => Self::new(
                status,
                ErrorType::InvalidRequest,
                "bad_request",
                "bad request",
            ),
            _ => Self::internal(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let value = json!({
            "error": {
                "message": self.message,
                "type": self.kind.as_str(),
                "param": self.param,
                "code": self.code,
            }
        });
        // Serializing a json! value cannot fail; fall back to a fixed body regardless.
        serde_json::to_vec(&value).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}"#
                .to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_every_field() {
        let body = ApiError::bad_request("invalid_nonce", "nonce must be hex")
            .with_param("nonce")
            .body();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["message"], "nonce must be hex");
        assert_eq!(value["error"]["type"], "invalid_request_error");
        assert_eq!(value["error"]["param"], "nonce");
        assert_eq!(value["error"]["code"], "invalid_nonce");
        let plain: serde_json::Value =
            serde_json::from_slice(&ApiError::internal().body()).unwrap();
        assert!(plain["error"]["param"].is_null());
        assert_eq!(ApiError::from_status(502).kind, ErrorType::Upstream);
        let aci: serde_json::Value =
            serde_json::from_slice(&ApiError::aci_not_found("receipt_not_found", "no").body())
                .unwrap();
        assert_eq!(
            (aci["error"]["type"].as_str(), 404),
            (Some("not_found"), 404)
        );
        let aci = ApiError::aci_unauthorized("credential_required", "no");
        assert_eq!((aci.status, aci.kind.as_str()), (401, "unauthorized"));
    }

    #[test]
    fn an_unreadable_head_is_too_large_or_malformed() {
        let large = ApiError::unreadable_head(UnreadableHead::TooLarge);
        assert_eq!((large.status, large.code), (431, "headers_too_large"));
        assert_eq!(
            large,
            ApiError::from_status(431),
            "as signet's own head check"
        );
        let bad = ApiError::unreadable_head(UnreadableHead::Malformed);
        assert_eq!((bad.status, bad.code), (400, "malformed_request"));
        assert_eq!(bad.kind, ErrorType::InvalidRequest);
    }
}
