//! ACI, `aci/1` (Phala's Attested Confidential Inference: docs/API.md §8, and the spec in
//! `shared/refs/aci/aci.md`): the wire types and every construction that is hashed or
//! signed, with no I/O. The server builds its keyset, statements and receipts here; the
//! verifier checks them with the same functions.
//!
//! - [`jcs`]: RFC 8785 canonical JSON, the form the keyset and receipts are hashed and
//!   signed in.
//! - [`WorkloadKeyset`] and [`keyset_digest`] (§3.1); [`statement`] and
//!   [`statement_report_data`] (§3.2): `report_data = sha256(statement)`, in bytes 0–31 of
//!   the quote's report-data slot ([`report_data_slot`]).
//! - [`AciReport`] (§4.1), the body of `GET /v1/aci/attestation`.
//! - [`ReceiptBody`] (§7.3) and its Ed25519 signature over the JCS form, and
//!   [`verify_receipt`] (§9.3).
//! - [`store`]: the bounded, expiring receipt store, looked up by receipt id or response id.

pub mod jcs;
pub mod store;

use crate::signing::ed25519::{self, Ed25519Signer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use jcs::JcsError;

/// The protocol version: `api_version` fields and the `X-ACI-Version` header.
pub const API_VERSION: &str = "aci/1";
/// The purpose tag of the attestation statement (§3.2).
pub const REPORT_DATA_PURPOSE: &str = "aci.report_data.v1";
/// The baseline receipt signature algorithm.
pub const ED25519: &str = "ed25519";
/// The `key_id` of signet's receipt key in its keyset.
pub const RECEIPT_KEY_ID: &str = "receipt-1";

/// Response header: the protocol version.
pub const VERSION_HEADER: &str = "x-aci-version";
/// Response header: the serving keyset digest.
pub const KEYSET_DIGEST_HEADER: &str = "x-aci-keyset-digest";
/// Response header: the lookup id of this response's receipt.
pub const RECEIPT_ID_HEADER: &str = "x-receipt-id";

/// Whether a response header name is one of ACI's (`x-aci-*`, `x-receipt-id`), which only
/// signet may write: the same names from an upstream are dropped.
pub fn is_aci_header(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"x-aci-")
        || name.eq_ignore_ascii_case(RECEIPT_ID_HEADER)
}

/// `"sha256:" || hex(sha256(bytes))`: ACI's digest fields (Appendix A).
pub fn sha256_digest(bytes: &[u8]) -> String {
    prefixed(&Sha256::digest(bytes).into())
}

/// `"sha256:" || hex(digest)`.
pub fn prefixed(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// A receipt signing key entry (§3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptKeyEntry {
    /// Stable id, named by receipts' `key_id`.
    pub key_id: String,
    /// `ed25519`.
    pub algo: String,
    /// The public key, lowercase hex.
    pub public_key: String,
}

/// An E2EE public key entry (§3.1): defined by E2EE extensions, none served yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2eeKeyEntry {
    /// Stable id.
    pub key_id: String,
    /// The extension-defined algorithm.
    pub algo: String,
    /// The extension-defined public key encoding.
    pub public_key: String,
}

/// A TLS key entry (§3.1): the sha256 of the served certificate's SPKI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsKeyEntry {
    /// Lowercase hex sha256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// The one public hostname this entry is for, if restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// The workload keyset (§3.1): the workload's identity, bound into the quote through the
/// statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadKeyset {
    /// Policy-interpreted name, or `null`.
    pub subject: Option<String>,
    /// Unix time after which the keyset is no longer accepted.
    pub not_after: u64,
    /// Keys that sign receipts.
    pub receipt_signing_keys: Vec<ReceiptKeyEntry>,
    /// Keys of E2EE extensions (empty: signet advertises none).
    pub e2ee_public_keys: Vec<E2eeKeyEntry>,
    /// Keys of the TLS certificates served (empty without TLS).
    pub tls_public_keys: Vec<TlsKeyEntry>,
}

impl WorkloadKeyset {
    /// The keyset as a JSON object, as it is embedded in the report.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `workload_keyset_digest`.
    pub fn digest(&self) -> Result<String, JcsError> {
        keyset_digest(&self.to_value())
    }
}

/// `workload_keyset_digest = "sha256:" || hex(sha256(JCS(keyset)))` over the keyset as
/// parsed (a verifier hashes what it was served, unknown members included).
pub fn keyset_digest(keyset: &Value) -> Result<String, JcsError> {
    Ok(sha256_digest(&jcs::canonical_bytes(keyset)?))
}

/// A client nonce: exactly 64 lowercase hex characters (32 bytes), the form the statement
/// embeds it in. Anything else is refused (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AciNonce(String);

/// Why a nonce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nonce must be exactly 64 lowercase hex characters (32 bytes)")]
pub struct AciNonceError;

impl AciNonce {
    /// Parses untrusted text.
    pub fn parse(text: &str) -> Result<Self, AciNonceError> {
        let ok = text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(AciNonceError)
        }
    }

    /// The nonce as sent (64 lowercase hex).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 bytes.
    pub fn bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Checked at parse time: 64 lowercase hex characters always decode.
        let _ = hex::decode_to_slice(&self.0, &mut out);
        out
    }
}

/// The attestation statement (§3.2): `{"keyset_digest":…,"nonce":…,"purpose":…}` in its JCS
/// form, with `"nonce":null` when the client gave none.
pub fn statement(keyset_digest: &str, nonce: Option<&AciNonce>) -> String {
    let value = json!({
        "keyset_digest": keyset_digest,
        "nonce": nonce.map(AciNonce::as_str),
        "purpose": REPORT_DATA_PURPOSE,
    });
    // Only strings and null: canonicalization cannot fail.
    jcs::canonicalize(&value).unwrap_or_default()
}

/// `report_data = sha256(statement bytes)`.
pub fn statement_report_data(statement: &str) -> [u8; 32] {
    Sha256::digest(statement.as_bytes()).into()
}

/// The 64-byte TEE report-data slot: the 32-byte digest, then 32 zero bytes.
pub fn report_data_slot(report_data: &[u8; 32]) -> [u8; 64] {
    let mut slot = [0u8; 64];
    slot[..32].copy_from_slice(report_data);
    slot
}

/// Source provenance (§4.1): each field `null` when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SourceProvenance {
    /// The public repository.
    pub repo_url: Option<String>,
    /// The commit built.
    pub repo_commit: Option<String>,
    /// `sha256:`-prefixed digest of the image run.
    pub image_digest: Option<String>,
    /// Policy-interpreted build-attestation material (signet serves none).
    pub image_provenance: Option<Value>,
}

/// `attestation` of the report (§4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AciAttestation {
    /// `tdx`.
    pub tee_type: String,
    /// The keyset, as a plain JSON object (hashed as parsed).
    pub workload_keyset: Value,
    /// hex(sha256(statement)), 64 lowercase hex characters.
    pub report_data: String,
    /// Where the workload's code comes from, or `null` when unknown.
    pub source_provenance: Option<SourceProvenance>,
    /// TEE-type-specific evidence (docs/API.md §8.2).
    pub evidence: Value,
}

/// `service_capabilities` (§4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCapabilities {
    /// Client-facing E2EE versions terminated here (none yet).
    pub supported_e2ee_versions: Vec<String>,
    /// `direct`: inference runs behind this workload, no attested upstream hop.
    pub serving: String,
}

/// The body of `GET /v1/aci/attestation` (§4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AciReport {
    /// `aci/1`.
    pub api_version: String,
    /// The keyset's digest (restated; verifiers recompute it).
    pub workload_keyset_digest: String,
    /// The attestation.
    pub attestation: AciAttestation,
    /// What the service offers.
    pub service_capabilities: ServiceCapabilities,
}

/// Why a report does not bind what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// `api_version` is not `aci/1`.
    #[error("api_version is {0:?}, not \"aci/1\"")]
    Version(String),
    /// The keyset has no canonical form.
    #[error(transparent)]
    Jcs(#[from] JcsError),
    /// The restated digest is not the keyset's.
    #[error("workload_keyset_digest {stated} is not the keyset's digest {computed}")]
    Digest {
        /// As the report states it.
        stated: String,
        /// As recomputed.
        computed: String,
    },
    /// `report_data` is not the statement's digest for this nonce.
    #[error("report_data {stated} is not sha256 of the statement {statement}")]
    ReportData {
        /// As the report states it.
        stated: String,
        /// The statement rebuilt from the digest and nonce.
        statement: String,
    },
}

/// Recomputes the chain of §9.1 step 2 for a report obtained with `nonce`: the keyset's digest
/// equals the restated one, and `report_data` is the statement's digest. Returns the 64-byte
/// slot the quote must carry.
pub fn check_report_binding(
    report: &AciReport,
    nonce: Option<&AciNonce>,
) -> Result<[u8; 64], BindingError> {
    if report.api_version != API_VERSION {
        return Err(BindingError::Version(report.api_version.clone()));
    }
    let computed = keyset_digest(&report.attestation.workload_keyset)?;
    if computed != report.workload_keyset_digest {
        return Err(BindingError::Digest {
            stated: report.workload_keyset_digest.clone(),
            computed,
        });
    }
    let statement = statement(&computed, nonce);
    let digest = statement_report_data(&statement);
    if hex::encode(digest) != report.attestation.report_data {
        return Err(BindingError::ReportData {
            stated: report.attestation.report_data.clone(),
            statement,
        });
    }
    Ok(report_data_slot(&digest))
}

/// Event types of the receipt event log (§7.4).
pub mod event {
    /// The request body the workload processed (first event).
    pub const REQUEST_RECEIVED: &str = "request.received";
    /// The bytes used for inference, after any rewrite.
    pub const REQUEST_FORWARDED: &str = "request.forwarded";
    /// The exact response body bytes emitted.
    pub const RESPONSE_RETURNED: &str = "response.returned";
}

/// What a receipt (§7.3) says, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptBody {
    /// Opaque id (`X-Receipt-Id`).
    pub receipt_id: String,
    /// The response's `id`, when it has one.
    pub chat_id: Option<String>,
    /// The model the client asked for.
    pub model: Option<String>,
    /// The keyset current when signed.
    pub workload_keyset_digest: String,
    /// The request path, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// The request method.
    pub method: String,
    /// Unix time of signing (self-asserted).
    pub served_at: u64,
    /// sha256 of the request body as received.
    pub request_received: [u8; 32],
    /// sha256 of the bytes forwarded upstream (absent when not forwarded).
    pub request_forwarded: Option<[u8; 32]>,
    /// sha256 of the response body bytes emitted.
    pub response_returned: [u8; 32],
    /// The receipt key's id in the keyset.
    pub key_id: String,
}

impl ReceiptBody {
    /// The document without its `signature` member.
    pub fn document(&self) -> Value {
        let mut events = vec![json!({
            "type": event::REQUEST_RECEIVED,
            "body_hash": prefixed(&self.request_received),
        })];
        if let Some(forwarded) = &self.request_forwarded {
            events.push(json!({
                "type": event::REQUEST_FORWARDED,
                "body_hash": prefixed(forwarded),
            }));
        }
        events.push(json!({
            "type": event::RESPONSE_RETURNED,
            "body_hash": prefixed(&self.response_returned),
        }));
        json!({
            "api_version": API_VERSION,
            "receipt_id": self.receipt_id,
            "chat_id": self.chat_id,
            "model": self.model,
            "workload_keyset_digest": self.workload_keyset_digest,
            "endpoint": self.endpoint,
            "method": self.method,
            "served_at": self.served_at,
            "event_log": events,
            "key_id": self.key_id,
        })
    }

    /// Signs the document: the 64-byte Ed25519 signature over its JCS form.
    pub fn sign(&self, key: &Ed25519Signer) -> Result<[u8; 64], JcsError> {
        Ok(key.sign(&jcs::canonical_bytes(&self.document())?))
    }

    /// The served document: the signed one with `signature` inserted.
    pub fn signed_document(&self, signature: &[u8; 64]) -> Value {
        let mut document = self.document();
        if let Value::Object(map) = &mut document {
            map.insert(
                "signature".to_owned(),
                Value::String(hex::encode(signature)),
            );
        }
        document
    }
}

/// The signing input of any receipt document: the JCS form without its `signature` member.
pub fn receipt_signing_input(document: &Value) -> Result<Vec<u8>, ReceiptError> {
    let Value::Object(map) = document else {
        return Err(ReceiptError::Shape("the receipt is not a JSON object"));
    };
    let mut unsigned = map.clone();
    unsigned.remove("signature");
    Ok(jcs::canonical_bytes(&Value::Object(unsigned))?)
}

/// Signs any receipt document (its `signature` member, if any, is left out): hex.
pub fn sign_receipt_document(
    document: &Value,
    key: &Ed25519Signer,
) -> Result<String, ReceiptError> {
    Ok(hex::encode(key.sign(&receipt_signing_input(document)?)))
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A member is missing or of the wrong type.
    #[error("malformed receipt: {0}")]
    Shape(&'static str),
    /// `api_version` is not `aci/1`.
    #[error("api_version is {0:?}, not \"aci/1\"")]
    Version(String),
    /// The receipt names another keyset.
    #[error("the receipt names keyset {stated}, not the established {established}")]
    Keyset {
        /// As the receipt states it.
        stated: String,
        /// The established one.
        established: String,
    },
    /// `key_id` is not among the keyset's receipt keys.
    #[error("key_id {0:?} is not a receipt key of the keyset")]
    UnknownKey(String),
    /// The keyset entry's algorithm is not one signet verifies.
    #[error("the keyset entry for {key_id:?} has algorithm {algo:?}, not ed25519")]
    Algorithm {
        /// The key.
        key_id: String,
        /// Its algorithm.
        algo: String,
    },
    /// No canonical form.
    #[error(transparent)]
    Jcs(#[from] JcsError),
    /// The signature is malformed or does not verify.
    #[error(transparent)]
    Signature(#[from] ed25519::Ed25519Error),
}

/// What a verified receipt establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// Its id.
    pub receipt_id: String,
    /// The response id, if any.
    pub chat_id: Option<String>,
    /// `request.received` body hash (`sha256:…`).
    pub request_received: String,
    /// `request.forwarded` body hash, when present.
    pub request_forwarded: Option<String>,
    /// `response.returned` body hash.
    pub response_returned: String,
    /// `served_at`.
    pub served_at: u64,
}

fn str_member<'a>(
    map: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, ReceiptError> {
    map.get(name)
        .and_then(Value::as_str)
        .ok_or(ReceiptError::Shape(name))
}

/// §9.3 steps 1 and 2 for a direct service: the signature verifies over the JCS form of the
/// document without `signature`, under the key `key_id` names in the established keyset
/// (whose digest is `established_digest`), with that entry's algorithm; `api_version` is
/// `aci/1`; the document names the established keyset; the first event is
/// `request.received`. Steps 3 and 4 (the hashes against the bytes a client holds) are the
/// caller's, with the hashes returned.
pub fn verify_receipt(
    document: &Value,
    keyset: &Value,
    established_digest: &str,
) -> Result<VerifiedReceipt, ReceiptError> {
    let Value::Object(map) = document else {
        return Err(ReceiptError::Shape("the receipt is not a JSON object"));
    };
    let version = str_member(map, "api_version")?;
    if version != API_VERSION {
        return Err(ReceiptError::Version(version.to_owned()));
    }
    let stated = str_member(map, "workload_keyset_digest")?;
    let computed = keyset_digest(keyset)?;
    if stated != established_digest || computed != established_digest {
        return Err(ReceiptError::Keyset {
            stated: stated.to_owned(),
            established: computed,
        });
    }
    let key_id = str_member(map, "key_id")?;
    let entry = keyset
        .get("receipt_signing_keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|entry| entry.get("key_id").and_then(Value::as_str) == Some(key_id))
        .ok_or_else(|| ReceiptError::UnknownKey(key_id.to_owned()))?;
    let algo = entry
        .get("algo")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if algo != ED25519 {
        return Err(ReceiptError::Algorithm {
            key_id: key_id.to_owned(),
            algo: algo.to_owned(),
        });
    }
    let public_key = entry
        .get("public_key")
        .and_then(Value::as_str)
        .ok_or(ReceiptError::Shape("public_key"))?;
    let signature = str_member(map, "signature")?;
    ed25519::verify_hex(public_key, &receipt_signing_input(document)?, signature)?;

    let events = map
        .get("event_log")
        .and_then(Value::as_array)
        .ok_or(ReceiptError::Shape("event_log"))?;
    let event_type = |e: &Value| e.get("type").and_then(Value::as_str).map(str::to_owned);
    let hash_of = |kind: &str| {
        events
            .iter()
            .find(|e| event_type(e).as_deref() == Some(kind))
            .and_then(|e| e.get("body_hash"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if events.first().and_then(event_type).as_deref() != Some(event::REQUEST_RECEIVED) {
        return Err(ReceiptError::Shape(
            "the first event must be request.received",
        ));
    }
    Ok(VerifiedReceipt {
        receipt_id: str_member(map, "receipt_id")?.to_owned(),
        chat_id: map
            .get("chat_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        request_received: hash_of(event::REQUEST_RECEIVED)
            .ok_or(ReceiptError::Shape("request.received body_hash"))?,
        request_forwarded: hash_of(event::REQUEST_FORWARDED),
        response_returned: hash_of(event::RESPONSE_RETURNED)
            .ok_or(ReceiptError::Shape("response.returned body_hash"))?,
        served_at: map
            .get("served_at")
            .and_then(Value::as_u64)
            .ok_or(ReceiptError::Shape("served_at"))?,
    })
}

/// The `model` member of a request body (the model the client asked for), if it is a
/// string.
pub fn requested_model(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        model: Option<Value>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    match probe.model? {
        Value::String(model) => Some(model),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
