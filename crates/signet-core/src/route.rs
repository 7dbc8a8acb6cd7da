//! Which route a request is on, decided from its path alone. Everything that differs per
//! route (admitted, signed, answered locally) keys off [`Route`].
//!
//! Model servers decode and normalise paths before routing (uvicorn and cpp-httplib decode
//! `%XX`; some collapse `//` or dot segments), so `/v1/chat%2Fcompletions` can reach the
//! completion handler. A path that only *becomes* one of signet's routes once decoded,
//! normalised or case-folded is [`Route::Ambiguous`] and is refused: a prompt never reaches
//! a completion handler around the signing.

/// Which signed route a request is on: its place in the [`RouteTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRoute(pub u16);

/// Where a signed route's response carries the id its signature is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdRule {
    /// In the body: a JSON body's string at pointer `json`; an event stream's string at
    /// pointer `stream` in the data of the first event (of type `event`, when given) that
    /// has one.
    InBody {
        /// JSON pointer (RFC 6901) into a JSON response.
        json: String,
        /// The SSE event type to look in (`None`: any event).
        event: Option<String>,
        /// JSON pointer into that event's data.
        stream: String,
    },
    /// The body has none (embeddings, rerank, audio): signet makes one from its request id
    /// and returns it in the `x-signet-completion-id` response header.
    Generated,
}

impl IdRule {
    /// The rule of the OpenAI completion APIs: the top-level `id`, in the body and in the
    /// first event that has one.
    pub fn top_level_id() -> Self {
        IdRule::InBody {
            json: "/id".to_owned(),
            event: None,
            stream: "/id".to_owned(),
        }
    }
}

/// What a signed route's request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON object, checked (and held) before anything reaches the upstream.
    Json,
    /// Anything else (multipart uploads): hashed exactly as received and streamed through,
    /// never held whole; only its size is bounded.
    Opaque,
}

/// One route whose responses are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRouteSpec {
    /// The exact path (`POST` only).
    pub path: String,
    /// A stable label for logs and metrics.
    pub label: String,
    /// Where the id comes from.
    pub id: IdRule,
    /// What the request body is.
    pub body: BodyFormat,
}

/// The routes whose responses are signed: the built-in set, changed by configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    signed: Vec<SignedRouteSpec>,
}

/// Why a route table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteTableError {
    /// A path that is not a plain absolute path in canonical form.
    #[error(
        "{0:?} is not a canonical absolute path (lowercase, no empty, dot or encoded segments, no trailing slash)"
    )]
    NotCanonical(String),
    /// A path that is one of signet's own routes.
    #[error("{0:?} is one of signet's own routes")]
    Reserved(String),
    /// A path listed twice.
    #[error("{0:?} is listed twice")]
    Duplicate(String),
    /// A path to remove that is not signed.
    #[error("{0:?} is not a signed route")]
    NotSigned(String),
    /// A JSON pointer that is not one.
    #[error("{0:?} is not a JSON pointer (empty, or starting with /)")]
    BadPointer(String),
}

fn spec(path: &str, label: &str, id: IdRule, body: BodyFormat) -> SignedRouteSpec {
    SignedRouteSpec {
        path: path.to_owned(),
        label: label.to_owned(),
        id,
        body,
    }
}

impl RouteTable {
    /// The prompt APIs vLLM and llama-server serve.
    pub fn builtin() -> Self {
        use BodyFormat::{Json, Opaque};
        let nested = |json: &str, event: &str, stream: &str| IdRule::InBody {
            json: json.to_owned(),
            event: Some(event.to_owned()),
            stream: stream.to_owned(),
        };
        Self {
            signed: vec![
                spec(
                    "/v1/chat/completions",
                    "chat_completions",
                    IdRule::top_level_id(),
                    Json,
                ),
                spec(
                    "/v1/completions",
                    "completions",
                    IdRule::top_level_id(),
                    Json,
                ),
                spec(
                    "/v1/responses",
                    "responses",
                    nested("/id", "response.created", "/response/id"),
                    Json,
                ),
                spec(
                    "/v1/messages",
                    "messages",
                    nested("/id", "message_start", "/message/id"),
                    Json,
                ),
                spec("/v1/embeddings", "embeddings", IdRule::Generated, Json),
                spec("/v1/rerank", "rerank", IdRule::Generated, Json),
                spec("/v1/score", "score", IdRule::Generated, Json),
                spec(
                    "/v1/audio/transcriptions",
                    "audio_transcriptions",
                    IdRule::Generated,
                    Opaque,
                ),
                spec(
                    "/v1/audio/translations",
                    "audio_translations",
                    IdRule::Generated,
                    Opaque,
                ),
            ],
        }
    }

    /// The built-in set with `remove` taken out and `add` put in, each checked.
    pub fn with_changes(
        add: Vec<SignedRouteSpec>,
        remove: &[String],
    ) -> Result<Self, RouteTableError> {
        let mut table = Self::builtin();
        for path in remove {
            table.remove(path)?;
        }
        for route in add {
            table.add(route)?;
        }
        Ok(table)
    }

    /// Stops signing `path`.
    pub fn remove(&mut self, path: &str) -> Result<(), RouteTableError> {
        let before = self.signed.len();
        self.signed.retain(|s| s.path != path);
        if self.signed.len() == before {
            return Err(RouteTableError::NotSigned(path.to_owned()));
        }
        Ok(())
    }

    /// Signs `route` too: a canonical path of its own, with well-formed pointers.
    pub fn add(&mut self, route: SignedRouteSpec) -> Result<(), RouteTableError> {
        let path = route.path.clone();
        if !path.starts_with('/') || canonical_path(&path) != path || path == "/" {
            return Err(RouteTableError::NotCanonical(path));
        }
        if Route::local(&path).is_some() {
            return Err(RouteTableError::Reserved(path));
        }
        if self.signed.iter().any(|s| s.path == path) || self.signed.len() >= usize::from(u16::MAX)
        {
            return Err(RouteTableError::Duplicate(path));
        }
        if let IdRule::InBody { json, stream, .. } = &route.id {
            for pointer in [json, stream] {
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err(RouteTableError::BadPointer(pointer.clone()));
                }
            }
        }
        self.signed.push(route);
        Ok(())
    }

    /// Every signed route.
    pub fn signed(&self) -> &[SignedRouteSpec] {
        &self.signed
    }

    /// The signed route's description.
    pub fn spec(&self, route: SignedRoute) -> Option<&SignedRouteSpec> {
        self.signed.get(usize::from(route.0))
    }

    /// A stable label for logs and metrics.
    pub fn label(&self, route: Route) -> &str {
        match route {
            Route::Signed(signed) => self.spec(signed).map_or("signed", |s| s.label.as_str()),
            other => other.label(),
        }
    }

    /// Classifies a request path (without its query).
    pub fn classify(&self, path: &str) -> Route {
        match self.exact(path) {
            Route::PassThrough => {
                let canonical = canonical_path(path);
                if canonical != path && self.exact(&canonical) != Route::PassThrough {
                    Route::Ambiguous
                } else {
                    Route::PassThrough
                }
            }
            route => route,
        }
    }

    fn exact(&self, path: &str) -> Route {
        if let Some(local) = Route::local(path) {
            return local;
        }
        self.signed
            .iter()
            .position(|s| s.path == path)
            .and_then(|i| u16::try_from(i).ok())
            .map_or(Route::PassThrough, |i| Route::Signed(SignedRoute(i)))
    }
}

static BUILTIN: std::sync::LazyLock<RouteTable> = std::sync::LazyLock::new(RouteTable::builtin);

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
    /// Classifies a request path (without its query) against the built-in route table.
    pub fn classify(path: &str) -> Route {
        BUILTIN.classify(path)
    }

    /// signet's own routes, answered locally.
    fn local(path: &str) -> Option<Route> {
        match path {
            "/health" => Some(Route::Health),
            "/v1/attestation/report" => Some(Route::AttestationReport),
            "/v1/signature" => Some(Route::Signature),
            _ if path.starts_with(SIGNATURE_PREFIX) => Some(Route::Signature),
            "/v1/aci/attestation" => Some(Route::AciAttestation),
            "/v1/aci/receipts" => Some(Route::AciReceipt),
            _ if path.starts_with(ACI_RECEIPT_PREFIX) => Some(Route::AciReceipt),
            _ => None,
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
            Route::Signed(_) => "signed",
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
            Route::Signed(SignedRoute(0))
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
            "/v1/emb%65ddings",
            "/v1/Messages",
            "/v1/audio//transcriptions",
            "/v1/aci/attestation/",
            "/v1/ACI/attestation",
            "/v1/aci%2Fattestation",
            "//v1/aci/receipts/rcpt-1",
            "/v1/aci/./receipts/rcpt-1",
        ] {
            assert_eq!(Route::classify(path), Route::Ambiguous, "{path}");
        }
        for path in ["/v1/models", "/v1/models/", "/v1/mod%65ls", "/", "/v1/chat"] {
            assert_eq!(Route::classify(path), Route::PassThrough, "{path}");
        }
        assert_eq!(canonical_path("/a/%zz/./b//c/../d;x"), "/a/%zz/b/d");
    }

    #[test]
    fn every_prompt_api_is_signed_by_default_with_its_own_id_rule() {
        let table = RouteTable::builtin();
        for (path, label) in [
            ("/v1/chat/completions", "chat_completions"),
            ("/v1/completions", "completions"),
            ("/v1/responses", "responses"),
            ("/v1/messages", "messages"),
            ("/v1/embeddings", "embeddings"),
            ("/v1/rerank", "rerank"),
            ("/v1/score", "score"),
            ("/v1/audio/transcriptions", "audio_transcriptions"),
            ("/v1/audio/translations", "audio_translations"),
        ] {
            let route = table.classify(path);
            assert!(matches!(route, Route::Signed(_)), "{path}");
            assert_eq!(table.label(route), label);
        }
        let Route::Signed(messages) = table.classify("/v1/messages") else {
            panic!()
        };
        assert_eq!(
            table.spec(messages).unwrap().id,
            IdRule::InBody {
                json: "/id".to_owned(),
                event: Some("message_start".to_owned()),
                stream: "/message/id".to_owned(),
            }
        );
        let Route::Signed(audio) = table.classify("/v1/audio/transcriptions") else {
            panic!()
        };
        assert_eq!(table.spec(audio).unwrap().body, BodyFormat::Opaque);
        assert_eq!(table.spec(audio).unwrap().id, IdRule::Generated);
    }

    #[test]
    fn an_operator_adds_and_removes_routes_and_bad_ones_are_refused() {
        let custom = spec(
            "/v1/classify",
            "classify",
            IdRule::Generated,
            BodyFormat::Json,
        );
        let table =
            RouteTable::with_changes(vec![custom.clone()], &["/v1/score".to_owned()]).unwrap();
        assert!(matches!(table.classify("/v1/classify"), Route::Signed(_)));
        assert_eq!(table.classify("/v1/Classify"), Route::Ambiguous);
        assert_eq!(table.classify("/v1/score"), Route::PassThrough);
        for (add, remove, error) in [
            (
                spec("/v1/x/", "x", IdRule::Generated, BodyFormat::Json),
                vec![],
                RouteTableError::NotCanonical("/v1/x/".to_owned()),
            ),
            (
                spec("/health", "x", IdRule::Generated, BodyFormat::Json),
                vec![],
                RouteTableError::Reserved("/health".to_owned()),
            ),
            (
                spec("/v1/messages", "x", IdRule::Generated, BodyFormat::Json),
                vec![],
                RouteTableError::Duplicate("/v1/messages".to_owned()),
            ),
            (
                custom.clone(),
                vec!["/v1/nothing".to_owned()],
                RouteTableError::NotSigned("/v1/nothing".to_owned()),
            ),
            (
                spec(
                    "/v1/y",
                    "y",
                    IdRule::InBody {
                        json: "id".to_owned(),
                        event: None,
                        stream: "/id".to_owned(),
                    },
                    BodyFormat::Json,
                ),
                vec![],
                RouteTableError::BadPointer("id".to_owned()),
            ),
        ] {
            assert_eq!(RouteTable::with_changes(vec![add], &remove), Err(error));
        }
    }
}
