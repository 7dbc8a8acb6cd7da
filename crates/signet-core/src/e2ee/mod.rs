//! End-to-end encryption of prompts and completions: ACI's E2EE v2 (refs: e2ee-v2.md), and
//! NEAR AI's wire format ([`near`]) beside it.
//! The client encrypts the content fields of its request to a service key the attested
//! keyset binds; signet decrypts them before forwarding, and encrypts the content fields of
//! the answer (a JSON body, or each SSE `data:` event as it passes) to the client's key.
//!
//! This module owns the protocol's decisions, free of I/O: which headers make a v2
//! request and what is wrong with them ([`E2eeError`], each one of the spec's error types),
//! the service's E2EE keys (a role of their own), replay protection ([`replay`]), the JCS
//! AAD of each field, request restoration ([`fields`]) and the response encryptor
//! ([`stream`]).

pub mod crypto;
pub mod fields;
pub mod near;
pub mod replay;
pub mod stream;

use crate::aci::E2eeKeyEntry;
use crate::error::ApiError;
use crypto::{PublicKey, SecretKey, Suite};
use serde_json::json;

/// The protocol version this module speaks.
pub const VERSION: &str = "2";
/// Suite `x25519-aes-256-gcm-hkdf-sha256`.
pub const ALGO_X25519: &str = "x25519-aes-256-gcm-hkdf-sha256";
/// Suite `secp256k1-aes-256-gcm-hkdf-sha256`.
pub const ALGO_SECP256K1: &str = "secp256k1-aes-256-gcm-hkdf-sha256";
/// Request AAD purpose.
pub const REQUEST_PURPOSE: &str = "aci.e2ee.request.v2";
/// Response AAD purpose.
pub const RESPONSE_PURPOSE: &str = "aci.e2ee.response.v2";
/// How far a request's timestamp may be from the service's clock, in seconds.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// Request and response header names (lowercase).
pub mod headers {
    /// `X-E2EE-Version`.
    pub const VERSION: &str = "x-e2ee-version";
    /// `X-Client-Pub-Key`.
    pub const CLIENT_PUB_KEY: &str = "x-client-pub-key";
    /// `X-Model-Pub-Key`.
    pub const MODEL_PUB_KEY: &str = "x-model-pub-key";
    /// `X-E2EE-Nonce`.
    pub const NONCE: &str = "x-e2ee-nonce";
    /// `X-E2EE-Timestamp`.
    pub const TIMESTAMP: &str = "x-e2ee-timestamp";
    /// `X-Signing-Algo` (NEAR's format: never with v2).
    pub const SIGNING_ALGO: &str = "x-signing-algo";
    /// `X-Encryption-Version` (NEAR's format).
    pub const ENCRYPTION_VERSION: &str = "x-encryption-version";
    /// `X-E2EE-Applied` (response).
    pub const APPLIED: &str = "x-e2ee-applied";
    /// `X-E2EE-Algo` (response).
    pub const ALGO: &str = "x-e2ee-algo";
    /// The request headers of both formats, removed before the request goes upstream.
    pub const REQUEST: [&str; 7] = [
        VERSION,
        CLIENT_PUB_KEY,
        MODEL_PUB_KEY,
        NONCE,
        TIMESTAMP,
        SIGNING_ALGO,
        ENCRYPTION_VERSION,
    ];
}

/// What is wrong with an E2EE request: one variant per spec error type (§9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eeError {
    /// Some but not all five headers are present.
    #[error(
        "E2EE v2 needs all of X-E2EE-Version, X-Client-Pub-Key, X-Model-Pub-Key, X-E2EE-Nonce and X-E2EE-Timestamp (missing {0})"
    )]
    HeaderMissing(&'static str),
    /// A version other than `2`, or v2 headers with `X-Signing-Algo`.
    #[error("unsupported X-E2EE-Version (this service terminates version 2 only)")]
    InvalidVersion,
    /// A public key that is not valid for the suite.
    #[error("{0} is not a valid public key for the selected suite")]
    InvalidPublicKey(&'static str),
    /// `X-Model-Pub-Key` is not in the attested keyset.
    #[error("X-Model-Pub-Key is not an E2EE key of this service's attested keyset")]
    ModelKeyMismatch,
    /// A nonce that is not 64 hex characters.
    #[error("X-E2EE-Nonce must be exactly 64 hexadecimal characters")]
    InvalidNonce,
    /// The nonce was already used with these keys.
    #[error("this X-E2EE-Nonce was already used with these keys")]
    ReplayDetected,
    /// A timestamp that is malformed or outside the window.
    #[error("X-E2EE-Timestamp is malformed or more than 300 seconds from the service's clock")]
    InvalidTimestamp,
    /// The top-level `model` is absent or not a string.
    #[error("the request's top-level model must be a string")]
    InvalidPayloadModel,
    /// A field that does not decrypt, or a request with none.
    #[error("{0}")]
    DecryptionFailed(String),
    /// An endpoint whose fields v2 does not define.
    #[error("E2EE v2 is not defined for this endpoint")]
    UnsupportedEndpoint,
}

impl E2eeError {
    /// The spec's error type.
    pub fn code(&self) -> &'static str {
        match self {
            E2eeError::HeaderMissing(_) => "e2ee_header_missing",
            E2eeError::InvalidVersion => "e2ee_invalid_version",
            E2eeError::InvalidPublicKey(_) => "e2ee_invalid_public_key",
            E2eeError::ModelKeyMismatch => "e2ee_model_key_mismatch",
            E2eeError::InvalidNonce => "e2ee_invalid_nonce",
            E2eeError::ReplayDetected => "e2ee_replay_detected",
            E2eeError::InvalidTimestamp => "e2ee_invalid_timestamp",
            E2eeError::InvalidPayloadModel => "e2ee_invalid_payload_model",
            E2eeError::DecryptionFailed(_) => "e2ee_decryption_failed",
            E2eeError::UnsupportedEndpoint => "e2ee_unsupported_endpoint",
        }
    }

    /// The OpenAI envelope (ACI's error shape: `type` and `code` are the spec's type).
    pub fn to_api_error(&self) -> ApiError {
        ApiError::e2ee(self.code(), self.to_string())
    }
}

/// Which prompt API a request is on, for the fields v2 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// The endpoint of a path, if v2 defines its fields.
    pub fn of_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Endpoint::Chat),
            "/v1/completions" => Some(Endpoint::Completions),
            "/v1/embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        }
    }
}

/// The E2EE request headers as they came (facts from the proxy).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHeaders<'a> {
    /// `X-E2EE-Version`.
    pub version: Option<&'a [u8]>,
    /// `X-Client-Pub-Key`.
    pub client_pub_key: Option<&'a [u8]>,
    /// `X-Model-Pub-Key`.
    pub model_pub_key: Option<&'a [u8]>,
    /// `X-E2EE-Nonce`.
    pub nonce: Option<&'a [u8]>,
    /// `X-E2EE-Timestamp`.
    pub timestamp: Option<&'a [u8]>,
    /// `X-Signing-Algo`.
    pub signing_algo: Option<&'a [u8]>,
    /// `X-Encryption-Version`.
    pub encryption_version: Option<&'a [u8]>,
}

impl RequestHeaders<'_> {
    /// Whether the request asks for ACI E2EE v2 (any header only v2 has).
    fn aci(&self) -> bool {
        self.version.is_some() || self.nonce.is_some() || self.timestamp.is_some()
    }

    /// Whether the request asks for end-to-end encryption in either format. A lone
    /// `X-Signing-Algo` does not (clients send it for signatures alone).
    pub fn any(&self) -> bool {
        self.aci()
            || self.client_pub_key.is_some()
            || self.model_pub_key.is_some()
            || self.encryption_version.is_some()
    }
}

/// The format a request was encrypted in, checked.
#[derive(Debug, Clone)]
pub enum Negotiated {
    /// ACI E2EE v2.
    Aci(Session),
    /// NEAR's format.
    Near(near::NearSession),
}

impl Negotiated {
    /// `X-E2EE-Algo` on the answer.
    pub fn algo(&self) -> &'static str {
        match self {
            Negotiated::Aci(session) => session.suite.algo(),
            Negotiated::Near(session) => session.suite.name(),
        }
    }

    /// `X-E2EE-Version` on the answer (NEAR's format has none).
    pub fn version(&self) -> Option<&'static str> {
        match self {
            Negotiated::Aci(_) => Some(VERSION),
            Negotiated::Near(_) => None,
        }
    }

    /// Which fields.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Negotiated::Aci(session) => session.endpoint,
            Negotiated::Near(session) => session.endpoint,
        }
    }
}

/// A checked v2 request: what decrypting its fields and encrypting its answer needs.
#[derive(Debug, Clone)]
pub struct Session {
    /// The suite of the service key the client chose.
    pub suite: Suite,
    /// Index of that key in the service's keys.
    key_index: usize,
    /// The client's key (response fields are sealed to it).
    pub client_key: PublicKey,
    /// `X-E2EE-Nonce` exactly as sent (it goes into the AAD as is).
    pub nonce: String,
    /// `X-E2EE-Timestamp`.
    pub timestamp: u64,
    /// Which fields.
    pub endpoint: Endpoint,
}

/// The service's side: its E2EE keys (one per suite) and the replay state; NEAR's format
/// with the signing keys when enabled.
#[derive(Debug)]
pub struct E2eeService {
    keys: Vec<(String, SecretKey)>,
    replay: replay::ReplayCache,
    near: Option<near::NearKeys>,
}

impl E2eeService {
    /// A service with one fresh key per suite (X25519 first: the spec's recommended one).
    pub fn generate(replay_capacity: usize) -> Self {
        Self::with_keys(
            vec![
                SecretKey::generate(Suite::X25519),
                SecretKey::generate(Suite::Secp256k1),
            ],
            replay_capacity,
        )
    }

    /// A service with these keys (ids `e2ee-<suite>-1`).
    pub fn with_keys(keys: Vec<SecretKey>, replay_capacity: usize) -> Self {
        let keys = keys
            .into_iter()
            .map(|key| {
                let id = match key.public_key().suite() {
                    Suite::X25519 => "e2ee-x25519-1",
                    Suite::Secp256k1 => "e2ee-secp256k1-1",
                };
                (id.to_owned(), key)
            })
            .collect();
        Self {
            keys,
            replay: replay::ReplayCache::new(replay_capacity),
            near: None,
        }
    }

    /// Also terminates NEAR's format, with the legacy report's signing keys.
    pub fn with_near_keys(mut self, keys: near::NearKeys) -> Self {
        self.near = Some(keys);
        self
    }

    /// The keyset's `e2ee_public_keys` entries.
    pub fn keyset_entries(&self) -> Vec<E2eeKeyEntry> {
        self.keys
            .iter()
            .map(|(id, key)| {
                let public = key.public_key();
                E2eeKeyEntry {
                    key_id: id.clone(),
                    algo: public.suite().algo().to_owned(),
                    public_key: public.to_hex(),
                }
            })
            .collect()
    }

    fn secret(&self, session: &Session) -> Option<&SecretKey> {
        self.keys.get(session.key_index).map(|(_, key)| key)
    }

    /// Checks a request's E2EE headers at `now` (Unix seconds): `Ok(None)` when the request
    /// asks for no E2EE, the format and its session when it does and every check passes
    /// (an ACI nonce is then spent). `path` decides the fields.
    pub fn check_request(
        &self,
        headers: &RequestHeaders<'_>,
        path: &str,
        now: u64,
    ) -> Result<Option<Negotiated>, E2eeError> {
        if !headers.any() {
            return Ok(None);
        }
        if headers.aci() {
            return self
                .check_aci(headers, path, now)
                .map(|s| Some(Negotiated::Aci(s)));
        }
        let Some(keys) = &self.near else {
            return Err(E2eeError::InvalidVersion);
        };
        let algo = header_text(headers.signing_algo, "X-Signing-Algo")?;
        let client = header_text(headers.client_pub_key, "X-Client-Pub-Key")?;
        let version = headers
            .encryption_version
            .map(|v| header_text(Some(v), "X-Encryption-Version"))
            .transpose()?;
        let model = headers
            .model_pub_key
            .map(|v| header_text(Some(v), "X-Model-Pub-Key"))
            .transpose()?;
        near::check(
            keys,
            &algo,
            &client,
            version.as_deref(),
            model.as_deref(),
            path,
        )
        .map(|s| Some(Negotiated::Near(s)))
    }

    fn check_aci(
        &self,
        headers: &RequestHeaders<'_>,
        path: &str,
        now: u64,
    ) -> Result<Session, E2eeError> {
        let text = header_text;
        if let Some(version) = headers.version
            && version.trim_ascii() != VERSION.as_bytes()
        {
            return Err(E2eeError::InvalidVersion);
        }
        if headers.signing_algo.is_some() {
            // X-Signing-Algo selects the legacy path, never v2 (§3.1).
            return Err(E2eeError::InvalidVersion);
        }
        text(headers.version, "X-E2EE-Version")?;
        let client = text(headers.client_pub_key, "X-Client-Pub-Key")?;
        let model = text(headers.model_pub_key, "X-Model-Pub-Key")?;
        let nonce = text(headers.nonce, "X-E2EE-Nonce")?;
        let timestamp = text(headers.timestamp, "X-E2EE-Timestamp")?;
        let endpoint = Endpoint::of_path(path).ok_or(E2eeError::UnsupportedEndpoint)?;
        let key_index = self
            .keys
            .iter()
            .position(|(_, key)| {
                let public = key.public_key();
                PublicKey::parse(public.suite(), &model).is_ok_and(|given| given == public)
            })
            .ok_or(E2eeError::ModelKeyMismatch)?;
        let suite = self.keys[key_index].1.public_key().suite();
        let client_key = PublicKey::parse(suite, &client)
            .ok()
            .filter(PublicKey::is_usable)
            .ok_or(E2eeError::InvalidPublicKey("X-Client-Pub-Key"))?;
        let nonce_bytes = parse_nonce(&nonce).ok_or(E2eeError::InvalidNonce)?;
        let timestamp = parse_timestamp(&timestamp, now).ok_or(E2eeError::InvalidTimestamp)?;
        let service_key = self.keys[key_index].1.public_key();
        if !self
            .replay
            .check_and_insert(&client_key, &service_key, &nonce_bytes, now)
        {
            return Err(E2eeError::ReplayDetected);
        }
        Ok(Session {
            suite,
            key_index,
            client_key,
            nonce,
            timestamp,
            endpoint,
        })
    }

    /// Decrypts an E2EE request body's fields: the restored body, compactly serialized, and
    /// its model (`""` when a NEAR-format request has none).
    pub fn restore_request(
        &self,
        negotiated: &Negotiated,
        body: &[u8],
    ) -> Result<(Vec<u8>, String), E2eeError> {
        match negotiated {
            Negotiated::Aci(session) => {
                let secret = self
                    .secret(session)
                    .ok_or_else(|| E2eeError::DecryptionFailed("no such service key".to_owned()))?;
                fields::restore_request(session, secret, body)
            }
            Negotiated::Near(session) => {
                let keys = self.near.as_ref().ok_or(E2eeError::InvalidVersion)?;
                fields::restore_near_request(session, keys, body)
            }
        }
    }
}

fn header_text(value: Option<&[u8]>, name: &'static str) -> Result<String, E2eeError> {
    let value = value.ok_or(E2eeError::HeaderMissing(name))?;
    std::str::from_utf8(value)
        .map(|v| v.trim().to_owned())
        .map_err(|_| E2eeError::HeaderMissing(name))
}

fn parse_nonce(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

fn parse_timestamp(text: &str, now: u64) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let timestamp: u64 = text.parse().ok()?;
    (timestamp.abs_diff(now) <= TIMESTAMP_WINDOW_SECS).then_some(timestamp)
}

/// The JCS AAD of a request field (§6).
pub fn request_aad(algo: &str, model: &str, field: &str, nonce: &str, ts: u64) -> Vec<u8> {
    jcs(json!({
        "purpose": REQUEST_PURPOSE,
        "algo": algo,
        "model": model,
        "field": field,
        "nonce": nonce,
        "ts": ts,
    }))
}

/// The JCS AAD of a response field (§6).
pub fn response_aad(
    algo: &str,
    model: &str,
    id: &str,
    field: &str,
    nonce: &str,
    ts: u64,
) -> Vec<u8> {
    jcs(json!({
        "purpose": RESPONSE_PURPOSE,
        "algo": algo,
        "model": model,
        "id": id,
        "field": field,
        "nonce": nonce,
        "ts": ts,
    }))
}

fn jcs(value: serde_json::Value) -> Vec<u8> {
    // Strings and a u64 only: always canonicalizable.
    crate::aci::jcs::canonical_bytes(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests;
