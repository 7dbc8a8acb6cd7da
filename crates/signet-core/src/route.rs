//! Which route a request is on, decided from its path alone. Everything that differs per
//! route (admitted, signed, answered locally) keys off [`Route`].
//!
//! Model servers decode and normalise paths before routing (uvicorn and cpp-httplib decode
//! `%XX`; some collapse `//` or dot segments), so `/v1/chat%2Fcompletions` can reach the
//! completion handler. A path that only *becomes* one of signet's routes once decoded,
//! normalised or case-folded is [`Route::Ambiguous`] and is refused: a prompt never reaches
//! a completion handler around the signing.

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
    /// `GET /v1/aci/attestation` (ACI §4).
    AciAttestation,
    /// `GET /v1/aci/receipts/{id}` (ACI §7.1).
    AciReceipt,
    /// A route whose responses are signed.
    Signed(SignedRoute),
    /// Another spelling of one of the routes above (percent-encoding, empty or dot
    /// segments, a trailing slash, `;` parameters, backslashes or case): refused.
    Ambiguous,
    /// Anything else: forwarded unchanged, never signed.
    #[default]
    PassThrough,
}

/// Path prefix of `GET /v1/signature/{id}`.
pub const SIGNATURE_PREFIX: &str = "/v1/signature/";

/// Path prefix of `GET /v1/aci/receipts/{id}`.
pub const ACI_RECEIPT_PREFIX: &str = "/v1/aci/receipts/";

impl Route {
    /// Classifies a request path (without its query).
    pub fn classify(path: &str) -> Route {
        match Self::exact(path) {
            Route::PassThrough => {
                let canonical = canonical_path(path);
                if canonical != path && Self::exact(&canonical) != Route::PassThrough {
                    Route::Ambiguous
                } else {
                    Route::PassThrough
                }
            }
            route => route,
        }
    }

    fn exact(path: &str) -> Route {
        match path {
            "/health" => Route::Health,
            "/v1/attestation/report" => Route::AttestationReport,
            "/v1/chat/completions" => Route::Signed(SignedRoute::ChatCompletions),
            "/v1/completions" => Route::Signed(SignedRoute::Completions),
            "/v1/signature" => Route::Signature,
            _ if path.starts_with(SIGNATURE_PREFIX) => Route::Signature,
            "/v1/aci/attestation" => Route::AciAttestation,
            "/v1/aci/receipts" => Route::AciReceipt,
            _ if path.starts_with(ACI_RECEIPT_PREFIX) => Route::AciReceipt,
            _ => Route::PassThrough,
        }
    }

    /// A stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::AttestationReport => "attestation",
            Route::Signature => "signature",
            Route::AciAttestation => "aci_attestation",
            Route::AciReceipt => "aci_receipt",
            Route::Signed(SignedRoute::ChatCompletions) => "chat_completions",
            Route::Signed(SignedRoute::Completions) => "completions",
            Route::Ambiguous => "ambiguous",
            Route::PassThrough => "passthrough",
        }
    }

    /// Whether signet answers this route itself.
    pub fn is_local(self) -> bool {
        matches!(
            self,
            Route::Health
                | Route::AttestationReport
                | Route::Signature
                | Route::AciAttestation
                | Route::AciReceipt
        )
    }

    /// Whether anyone may ask without a bearer token: the health check and the attestation
    /// reports (public by nature), and receipts, which check the credential themselves (ACI
    /// §7.6: a receipt is served to the credential that made its request, a wrong one is
    /// told `not_found`).
    pub fn is_public(self) -> bool {
        matches!(
            self,
            Route::Health | Route::AttestationReport | Route::AciAttestation | Route::AciReceipt
        )
    }
}

/// The form a lenient server may route `path` as: percent-decoded (until stable, so double
/// encoding counts), backslashes as slashes, `;` parameters dropped, empty and `.` segments
/// dropped, `..` applied, no trailing slash, lowercase.
pub fn canonical_path(path: &str) -> String {
    let mut decoded = path.as_bytes().to_vec();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segments: Vec<String> = Vec::new();
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_ascii_lowercase()),
        }
    }
    format!("/{}", segments.join("/"))
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(byte);
        i += 1;
    }
    out
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
        assert_eq!(Route::classify("/v1/chat/completions/"), Route::Ambiguous);
        assert_eq!(Route::classify("/v1/models"), Route::PassThrough);
        assert_eq!(Route::classify("/v1/signature/abc"), Route::Signature);
        assert_eq!(Route::classify("/v1/signature/"), Route::Signature);
        assert_eq!(
            Route::classify("/v1/attestation/report"),
            Route::AttestationReport
        );
        assert_eq!(
            Route::classify("/v1/aci/attestation"),
            Route::AciAttestation
        );
        assert_eq!(
            Route::classify("/v1/aci/receipts/rcpt-1"),
            Route::AciReceipt
        );
        assert_eq!(Route::classify("/v1/aci/receipts"), Route::AciReceipt);
        assert_eq!(Route::classify("/v1/aci/sessions"), Route::PassThrough);
        assert!(Route::AciReceipt.is_local() && Route::AciReceipt.is_public());
        assert!(!Route::Signature.is_public());
    }

    #[test]
    fn other_spellings_of_a_route_are_ambiguous() {
        for path in [
            "/v1/chat%2Fcompletions",
            "/v1/chat%2fcompletions",
            "/v1/chat/c%6Fmpletions",
            "/%761/chat/completions",
            "/v1/chat%252Fcompletions",
            "//v1/chat/completions",
            "/v1/./completions",
            "/v1/x/../completions",
            "/v1/completions/",
            "/v1/completions;a=b",
            "/v1\\completions",
            "/V1/Completions",
            "/HEALTH",
            "/v1/attestation/report/",
            "/v1%2Fsignature/abc",
            "/v1/aci/attestation/",
            "/v1/ACI/attestation",
            "/v1/aci%2Fattestation",
            "//v1/aci/receipts/rcpt-1",
            "/v1/aci/./receipts/rcpt-1",
        ] {
            assert_eq!(Route::classify(path), Route::Ambiguous, "{path}");
        }
        for path in [
            "/v1/models",
            "/v1/models/",
            "/v1/emb%65ddings",
            "/",
            "/v1/chat",
        ] {
            assert_eq!(Route::classify(path), Route::PassThrough, "{path}");
        }
        assert_eq!(canonical_path("/a/%zz/./b//c/../d;x"), "/a/%zz/b/d");
    }
}
