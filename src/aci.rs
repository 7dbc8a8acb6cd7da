//! ACI (`aci/1`) beside the legacy protocol: the workload keyset, `GET /v1/aci/attestation`
//! (§4), a signed receipt per delivered completion and `GET /v1/aci/receipts/{id}` (§7),
//! all bound to the same attestation providers as `/v1/attestation/report`.
//!
//! The keyset holds an Ed25519 receipt key drawn at start (its only role: signing receipt
//! documents), the E2EE v2 keys (a role of their own, [`AciService::with_e2ee_keys`]), and
//! the served certificate's SPKI when signet terminates TLS;
//! its `subject` and `not_after` come from `signet.aci`. Past `not_after` the process stops
//! attesting the keyset and stops issuing receipts: a verifier would refuse both.
//!
//! Receipts follow the signature's rules: one is made when the exchange seals (the same
//! hashes as the EIP-191 signature, the response's including the in-band trailer when there
//! is one) and taken back when the exchange's settlement says the client did not get every
//! byte. Each is bound to a digest of the credential that made the request (§7.6); a lookup
//! with another credential is told `not_found`, exactly as for an unknown id.
//!
//! With a shared store (Redis) every receipt is mirrored there as the document this process
//! serves, signed by the writer off the response path, with its credential digest: any
//! replica serves it byte for byte (signed by the key of the replica that made it, whose
//! keyset digest it names), to the same credential only. Same TTL, never replacing another
//! exchange's receipt, and a retraction withdraws exactly this process's record.

use crate::config::{AciSettings, unix_now};
use crate::routes::LocalResponse;
use crate::shared_store::{RecordValue, SharedStore};
use sha2::{Digest, Sha256};
use signet_attest::Attestor;
use signet_core::aci::store::{ReceiptId, ReceiptStore, ReceiptTicket, StoredReceipt};
use signet_core::aci::{
    self, API_VERSION, AciAttestation, AciNonce, AciReport, ED25519, RECEIPT_KEY_ID,
    ReceiptKeyEntry, ServiceCapabilities, SourceProvenance, TlsKeyEntry, WorkloadKeyset,
};
use signet_core::error::ApiError;
use signet_core::ids::Nonce;
use signet_core::query::query_param;
use signet_core::route::ACI_RECEIPT_PREFIX;
use signet_core::signing::ed25519::Ed25519Signer;
use signet_core::store::Clock;
use signet_core::transcript::CompletedExchange;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Domain separation for the credential digest a receipt keeps.
const CREDENTIAL_DOMAIN: &[u8] = b"signet aci receipt credential v1\0";

/// What a signed request will need to get its receipt, fixed when its head arrives.
#[derive(Debug, Clone)]
pub struct PendingReceipt {
    id: ReceiptId,
    /// The receipt id as `X-Receipt-Id` carries it with the response head.
    pub receipt_id: String,
    endpoint: String,
    credential: Option<[u8; 32]>,
}

/// A null-nonce report, kept for `attestation.cache_ttl`.
struct CachedReport {
    made: Instant,
    body: Vec<u8>,
}

/// The ACI side of the gateway.
pub struct AciService {
    keyset: WorkloadKeyset,
    keyset_value: serde_json::Value,
    digest: Arc<str>,
    receipt_key: Arc<Ed25519Signer>,
    receipts: Arc<ReceiptStore>,
    /// The receipts' TTL (to mirror them with it).
    ttl: Duration,
    shared: Option<Arc<SharedStore>>,
    /// Where the keys come from (§3.3), for the evidence.
    key_custody: Option<serde_json::Value>,
    provenance: Option<SourceProvenance>,
    cache_ttl: Duration,
    cache: Mutex<Option<CachedReport>>,
    /// Whether lookups need a credential even for receipts bound to none (bearer tokens
    /// are configured: every receipt is bound, and an absent credential must not tell an
    /// unknown id from a known one).
    credentials_required: bool,
    /// `service_capabilities.supported_e2ee_versions`.
    e2ee_versions: Vec<String>,
}

impl std::fmt::Debug for AciService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AciService")
            .field("digest", &self.digest)
            .field("receipt_key", &self.receipt_key)
            .finish_non_exhaustive()
    }
}

/// Why the ACI service could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the ACI keyset has no canonical form: {0}")]
pub struct AciError(#[from] aci::JcsError);

/// Where the store's receipts come from and how long they are kept.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptLimits {
    /// How long a receipt can be fetched (the signature store's TTL).
    pub ttl: Duration,
    /// Most receipts kept (the signature store's bound).
    pub max_entries: usize,
}

impl AciService {
    /// Builds the keyset from the settings, a receipt key drawn at start, and the served
    /// certificate's SPKI digest (with TLS); `started` is the process's start (Unix time).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &AciSettings,
        receipt_key: Ed25519Signer,
        tls_spki_sha256: Option<[u8; 32]>,
        started: u64,
        limits: ReceiptLimits,
        clock: Arc<dyn Clock>,
        cache_ttl: Duration,
        credentials_required: bool,
    ) -> Result<Self, AciError> {
        let keyset = WorkloadKeyset {
            subject: settings.subject.clone(),
            not_after: settings.not_after.resolve(started),
            receipt_signing_keys: vec![ReceiptKeyEntry {
                key_id: RECEIPT_KEY_ID.to_owned(),
                algo: ED25519.to_owned(),
                public_key: receipt_key.public_key_hex(),
            }],
            e2ee_public_keys: Vec::new(),
            tls_public_keys: tls_spki_sha256
                .map(|spki| TlsKeyEntry {
                    spki_sha256: hex::encode(spki),
                    domain: settings.tls_domain.clone(),
                })
                .into_iter()
                .collect(),
        };
        let keyset_value = keyset.to_value();
        let digest: Arc<str> = aci::keyset_digest(&keyset_value)?.into();
        Ok(Self {
            keyset,
            keyset_value,
            digest,
            receipt_key: Arc::new(receipt_key),
            receipts: Arc::new(ReceiptStore::new(limits.ttl, limits.max_entries, clock)),
            ttl: limits.ttl,
            shared: None,
            key_custody: None,
            provenance: settings.source_provenance.clone(),
            cache_ttl,
            cache: Mutex::new(None),
            credentials_required,
            e2ee_versions: Vec::new(),
        })
    }

    /// Mirrors every receipt to `shared`, and looks there for ids not issued here.
    pub fn with_shared_store(mut self, shared: Arc<SharedStore>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Makes the evidence say where the keys come from and how their custody is shown
    /// (§3.3: `key_custody`).
    pub fn with_key_custody(mut self, custody: serde_json::Value) -> Self {
        self.key_custody = Some(custody);
        self
    }

    /// Publishes E2EE v2 keys in the keyset (a new keyset digest) and advertises version
    /// `2` in the reports' `service_capabilities`.
    pub fn with_e2ee_keys(mut self, entries: Vec<aci::E2eeKeyEntry>) -> Result<Self, AciError> {
        self.e2ee_versions = if entries.is_empty() {
            Vec::new()
        } else {
            vec![signet_core::e2ee::VERSION.to_owned()]
        };
        self.keyset.e2ee_public_keys = entries;
        self.keyset_value = self.keyset.to_value();
        self.digest = aci::keyset_digest(&self.keyset_value)?.into();
        Ok(self)
    }

    /// `workload_keyset_digest`, as `X-ACI-Keyset-Digest` carries it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The keyset.
    pub fn keyset(&self) -> &WorkloadKeyset {
        &self.keyset
    }

    /// The receipts (for sweeping and metrics).
    pub fn receipts(&self) -> &ReceiptStore {
        &self.receipts
    }

    /// The receipt store, shared (the background sweeper holds it, and nothing else).
    pub fn receipts_handle(&self) -> Arc<ReceiptStore> {
        self.receipts.clone()
    }

    /// Whether the keyset's `not_after` has passed.
    pub fn expired(&self) -> bool {
        unix_now() >= self.keyset.not_after
    }

    /// The headers every response carries (§5.2): the version and the keyset digest.
    pub fn headers(&self) -> [(&'static str, &str); 2] {
        [
            (aci::VERSION_HEADER, API_VERSION),
            (aci::KEYSET_DIGEST_HEADER, self.digest.as_ref()),
        ]
    }

    /// Starts a receipt for a request on a signed route, or none past `not_after`.
    pub fn pending(&self, endpoint: &str, authorization: Option<&[u8]>) -> Option<PendingReceipt> {
        if self.expired() {
            return None;
        }
        let id = ReceiptId::random();
        Some(PendingReceipt {
            id,
            receipt_id: id.to_string(),
            endpoint: endpoint.to_owned(),
            credential: authorization.map(credential_digest),
        })
    }

    /// Signs and files the receipt of a sealed exchange: `request_body` is the body
    /// received (and forwarded unchanged), `emitted_sha256` the hash of every response byte
    /// emitted; `restored` an E2EE request's decrypted body and its sha256, which then
    /// stands for the request (E2EE v2 §8: `request.received` covers the restored body,
    /// which is also what was forwarded). `None` past `not_after` (never expected: a
    /// pending receipt is not made then).
    pub fn issue(
        &self,
        pending: &PendingReceipt,
        completed: &CompletedExchange,
        request_body: Option<&[u8]>,
        restored: Option<(&[u8], [u8; 32])>,
        emitted_sha256: [u8; 32],
    ) -> Option<ReceiptTicket> {
        let (request_body, request_sha256) = match restored {
            Some((body, sha256)) => (Some(body), sha256),
            None => (request_body, completed.request_sha256),
        };
        if self.expired() {
            return None;
        }
        let stored = StoredReceipt {
            receipt_id: pending.id,
            chat_id: Some(completed.id.as_str().into()),
            model: request_body
                .and_then(aci::requested_model)
                .map(String::into_boxed_str),
            endpoint: pending.endpoint.as_str().into(),
            served_at: unix_now(),
            request_received: request_sha256,
            // signet forwards the body it received (restored, for E2EE), unchanged.
            request_forwarded: Some(request_sha256),
            response_returned: emitted_sha256,
            credential: pending.credential,
        };
        // Signed when it is fetched, not here: the document is fixed now (every field is
        // stored), Ed25519 is deterministic, so the bytes are the same, and the signing cost
        // is paid only for receipts someone asks for, not on every request. The shared
        // store's copy is signed by its writer, off the response path.
        if let Some(shared) = &self.shared {
            shared.publish_under(
                shared.receipt_keys(&pending.receipt_id, Some(completed.id.as_str())),
                self.shared_record(&stored),
                self.ttl,
            );
        }
        Some(self.receipts.insert(stored))
    }

    /// Takes a receipt back: its response did not reach the client. From the shared store
    /// too, where only this process's record goes.
    pub fn retract(&self, ticket: ReceiptTicket) {
        let Some(stored) = self.receipts.retract(ticket) else {
            return;
        };
        if let Some(shared) = &self.shared {
            let receipt_id = stored.receipt_id.to_string();
            shared.withdraw_under(
                shared.receipt_keys(&receipt_id, stored.chat_id.as_deref()),
                self.shared_record(&stored),
            );
        }
    }

    /// The shared store's record of a receipt, made (and signed) when the writer takes it.
    fn shared_record(&self, stored: &StoredReceipt) -> RecordValue {
        let stored = stored.clone();
        let key = self.receipt_key.clone();
        let digest = self.digest.clone();
        RecordValue::Deferred(Box::new(move || {
            let document = render_document(&stored, &key, &digest)
                .map_err(|e| log::error!("an ACI receipt could not be signed: {e}"))
                .ok()?;
            let record = SharedRecord {
                credential: stored.credential.map(hex::encode),
                document: String::from_utf8(document).ok()?,
            };
            serde_json::to_string(&record).ok()
        }))
    }

    /// `GET /v1/aci/receipts/{id}` (§7.1, §7.6): this process's receipts first, then the
    /// shared store's.
    pub async fn receipt(&self, path: &str, authorization: Option<&[u8]>) -> LocalResponse {
        let id = path.strip_prefix(ACI_RECEIPT_PREFIX).unwrap_or_default();
        let presented = authorization.map(credential_digest);
        if presented.is_none() && self.credentials_required {
            return credential_required();
        }
        if signet_core::ids::validate_id_bytes(id.as_bytes()).is_err() {
            return receipt_not_found();
        }
        if let Some(stored) = self.receipts.get(id) {
            if let Err(refusal) = authorize(stored.credential, presented) {
                return refusal;
            }
            return match render_document(&stored, &self.receipt_key, &self.digest) {
                Ok(body) => LocalResponse::ok_body(body),
                Err(e) => {
                    log::error!("an ACI receipt could not be signed: {e}");
                    ApiError::internal().into()
                }
            };
        }
        let Some(shared) = &self.shared else {
            return receipt_not_found();
        };
        // `id` is a receipt id or a response id: either key may hold it, in that order.
        let keys = shared.receipt_keys(id, Some(id));
        let record = match shared.lookup_first(&keys).await {
            Ok(found) => found.and_then(|json| serde_json::from_str::<SharedRecord>(&json).ok()),
            Err(e) => {
                log::warn!("{e}");
                return ApiError::unavailable(
                    "receipt_store_unavailable",
                    "this replica does not have the receipt and the shared store is unreachable",
                )
                .into();
            }
        };
        let Some(record) = record else {
            return receipt_not_found();
        };
        let bound = match record.credential.as_deref().map(parse_digest) {
            None => None,
            Some(Some(digest)) => Some(digest),
            // A record this code did not write: treat as absent.
            Some(None) => return receipt_not_found(),
        };
        if let Err(refusal) = authorize(bound, presented) {
            return refusal;
        }
        LocalResponse::ok_body(record.document.into_bytes())
    }

    /// `GET /v1/aci/attestation?nonce=` (§4): the statement's digest into report_data,
    /// evidence from the same providers as every report.
    pub async fn attestation(&self, attestor: &Attestor, query: Option<&str>) -> LocalResponse {
        let nonce = match query_param(query, "nonce") {
            Ok(None) => None,
            Ok(Some(text)) => match AciNonce::parse(text) {
                Ok(nonce) => Some(nonce),
                Err(e) => {
                    return ApiError::bad_request("invalid_nonce", e.to_string())
                        .with_param("nonce")
                        .into();
                }
            },
            Err(error) => return error.into(),
        };
        if self.expired() {
            return ApiError::unavailable(
                "keyset_expired",
                "this gateway's ACI keyset is past its not_after; it attests it no longer",
            )
            .into();
        }
        if nonce.is_none()
            && let Some(body) = self.cached()
        {
            return LocalResponse {
                status: 200,
                body,
                headers: Vec::new(),
            };
        }
        let statement = aci::statement(self.digest.as_ref(), nonce.as_ref());
        let report_data = aci::statement_report_data(&statement);
        // The GPU evidence is taken over the client's nonce; without one, over the
        // statement's digest (which binds the keyset).
        let gpu_nonce = Nonce(nonce.as_ref().map_or(report_data, AciNonce::bytes));
        let slot = aci::report_data_slot(&report_data);
        let evidence = match attestor.evidence(slot, gpu_nonce).await {
            Ok(evidence) => evidence,
            Err(e) => return attestor.refusal(e).into(),
        };
        let report = AciReport {
            api_version: API_VERSION.to_owned(),
            workload_keyset_digest: self.digest.to_string(),
            attestation: AciAttestation {
                tee_type: "tdx".to_owned(),
                workload_keyset: self.keyset_value.clone(),
                report_data: hex::encode(report_data),
                source_provenance: self.provenance.clone(),
                evidence: serde_json::json!({
                    "quote": hex::encode(&evidence.quote),
                    "quote_report_data": hex::encode(slot),
                    "nvidia_payload": evidence.nvidia_payload,
                    "gpu_nonce": gpu_nonce.to_hex(),
                    "event_log": evidence.event_log,
                    "vm_config": evidence.vm_config,
                    "info": evidence.info,
                    "attestation_mode": evidence.mode,
                    "gpu_evidence": evidence.gpu_evidence,
                    "key_custody": self.key_custody,
                }),
            },
            service_capabilities: ServiceCapabilities {
                supported_e2ee_versions: self.e2ee_versions.clone(),
                serving: "direct".to_owned(),
            },
        };
        let answer = LocalResponse::ok_json(&report);
        if nonce.is_none() && answer.status == 200 && !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            *cache = Some(CachedReport {
                made: Instant::now(),
                body: answer.body.clone(),
            });
        }
        answer
    }

    fn cached(&self) -> Option<Vec<u8>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|c| c.made.elapsed() < self.cache_ttl)
            .map(|c| c.body.clone())
    }
}

/// A receipt as the shared store keeps it: the exact document served, and the digest of the
/// credential it is bound to.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedRecord {
    credential: Option<String>,
    document: String,
}

/// The served bytes of a receipt: its document, signed by `key`.
fn render_document(
    stored: &StoredReceipt,
    key: &Ed25519Signer,
    digest: &Arc<str>,
) -> Result<Vec<u8>, String> {
    let body = stored.body(digest, RECEIPT_KEY_ID);
    let signature = body.sign(key).map_err(|e| e.to_string())?;
    serde_json::to_vec(&body.signed_document(&signature)).map_err(|e| e.to_string())
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

/// Whether the credential `presented` may read a receipt bound to `bound` (§7.6): a wrong
/// one is told `not_found`, exactly as for an unknown id.
fn authorize(bound: Option<[u8; 32]>, presented: Option<[u8; 32]>) -> Result<(), LocalResponse> {
    match (bound, presented) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(credential_required()),
        (Some(bound), Some(presented)) if constant_time_eq(&bound, &presented) => Ok(()),
        (Some(_), Some(_)) => Err(receipt_not_found()),
    }
}

fn receipt_not_found() -> LocalResponse {
    ApiError::aci_not_found(
        "receipt_not_found",
        "no receipt for this id: unknown, expired, or not yours",
    )
    .into()
}

fn credential_required() -> LocalResponse {
    ApiError::aci_unauthorized(
        "credential_required",
        "this receipt is bound to the credential that made the request: send it \
         (Authorization: Bearer <token>)",
    )
    .into()
}

/// The digest a receipt keeps of the credential that made its request: the bearer token of
/// `Authorization: Bearer <token>`, or the whole header value for any other scheme.
fn credential_digest(authorization: &[u8]) -> [u8; 32] {
    let credential = crate::auth::bearer_token(authorization).unwrap_or(authorization);
    let mut hasher = Sha256::new();
    hasher.update(CREDENTIAL_DOMAIN);
    hasher.update(credential);
    hasher.finalize().into()
}

/// Equality whose running time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotAfter;
    use signet_core::ids::CompletionId;
    use signet_core::store::ManualClock;

    fn service(credentials_required: bool) -> AciService {
        let settings = AciSettings {
            subject: Some("dns:signet.example".to_owned()),
            not_after: NotAfter::AfterStart(Duration::from_secs(3600)),
            tls_domain: Some("signet.example".to_owned()),
            source_provenance: None,
        };
        AciService::new(
            &settings,
            Ed25519Signer::from_seed(&[0x02; 32]),
            Some([0xc0; 32]),
            unix_now(),
            ReceiptLimits {
                ttl: Duration::from_secs(300),
                max_entries: 10,
            },
            Arc::new(ManualClock::default()),
            Duration::ZERO,
            credentials_required,
        )
        .unwrap()
    }

    fn completed() -> CompletedExchange {
        CompletedExchange {
            id: CompletionId::parse("chatcmpl-123").unwrap(),
            request_sha256: [1; 32],
            response_sha256: [2; 32],
        }
    }

    fn body_of(answer: &LocalResponse) -> serde_json::Value {
        serde_json::from_slice(&answer.body).unwrap()
    }

    #[test]
    fn the_keyset_lists_the_receipt_key_and_the_certificate() {
        let service = service(false);
        let keyset = service.keyset();
        assert_eq!(
            keyset.receipt_signing_keys[0].public_key,
            "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
        );
        assert_eq!(keyset.tls_public_keys[0].spki_sha256, "c0".repeat(32));
        assert_eq!(
            keyset.tls_public_keys[0].domain.as_deref(),
            Some("signet.example")
        );
        assert!(keyset.e2ee_public_keys.is_empty());
        assert_eq!(service.digest(), keyset.digest().unwrap());
        assert!(!service.expired());
    }

    #[tokio::test]
    async fn a_receipt_is_served_to_its_credential_only_and_verifies() {
        let service = service(false);
        let pending = service
            .pending("/v1/chat/completions", Some(b"Bearer token-aaaa-1111"))
            .unwrap();
        assert!(pending.receipt_id.starts_with("rcpt-"));
        let request = br#"{"model":"demo-model","messages":[]}"#;
        service
            .issue(&pending, &completed(), Some(request), None, [3; 32])
            .unwrap();
        let path = format!("{ACI_RECEIPT_PREFIX}{}", pending.receipt_id);
        let answer = service
            .receipt(&path, Some(b"bearer  token-aaaa-1111"))
            .await;
        assert_eq!(answer.status, 200);
        let document = body_of(&answer);
        let verified =
            aci::verify_receipt(&document, &service.keyset().to_value(), service.digest()).unwrap();
        assert_eq!(verified.response_returned, aci::prefixed(&[3; 32]));
        assert_eq!(verified.request_received, aci::prefixed(&[1; 32]));
        assert_eq!(document["model"], "demo-model");
        assert_eq!(document["endpoint"], "/v1/chat/completions");
        // By response id too.
        let by_chat = service
            .receipt(
                &format!("{ACI_RECEIPT_PREFIX}chatcmpl-123"),
                Some(b"Bearer token-aaaa-1111"),
            )
            .await;
        assert_eq!(by_chat.body, answer.body);
        // Another credential: not_found, as for an id that does not exist.
        let other = service
            .receipt(&path, Some(b"Bearer token-bbbb-2222"))
            .await;
        let unknown = service
            .receipt(
                &format!("{ACI_RECEIPT_PREFIX}rcpt-unknown"),
                Some(b"Bearer token-bbbb-2222"),
            )
            .await;
        assert_eq!((other.status, other.body.clone()), (404, unknown.body));
        assert_eq!(body_of(&other)["error"]["type"], "not_found");
        // No credential: unauthorized.
        let none = service.receipt(&path, None).await;
        assert_eq!(none.status, 401);
        assert_eq!(body_of(&none)["error"]["type"], "unauthorized");
        // Malformed ids are unknown ids.
        let hostile = service
            .receipt(
                &format!("{ACI_RECEIPT_PREFIX}..%2F"),
                Some(b"Bearer token-aaaa-1111"),
            )
            .await;
        assert_eq!(hostile.status, 404);
    }

    #[tokio::test]
    async fn unauthenticated_receipts_are_public_unless_tokens_are_configured() {
        let open = service(false);
        let pending = open.pending("/v1/completions", None).unwrap();
        let ticket = open
            .issue(&pending, &completed(), None, None, [3; 32])
            .unwrap();
        let path = format!("{ACI_RECEIPT_PREFIX}{}", pending.receipt_id);
        assert_eq!(open.receipt(&path, None).await.status, 200);
        assert_eq!(
            open.receipt(&path, Some(b"Bearer anything")).await.status,
            200
        );
        assert!(body_of(&open.receipt(&path, None).await)["model"].is_null());
        // Taken back: gone.
        open.retract(ticket);
        assert_eq!(open.receipt(&path, None).await.status, 404);

        let closed = service(true);
        assert_eq!(
            closed
                .receipt(&format!("{ACI_RECEIPT_PREFIX}rcpt-unknown"), None)
                .await
                .status,
            401,
            "without a credential an unknown id is not told from a known one"
        );
    }

    #[tokio::test]
    async fn past_not_after_no_report_and_no_receipt() {
        let settings = AciSettings {
            subject: None,
            not_after: NotAfter::At(unix_now() - 1),
            tls_domain: None,
            source_provenance: None,
        };
        let expired = AciService::new(
            &settings,
            Ed25519Signer::generate(),
            None,
            unix_now(),
            ReceiptLimits {
                ttl: Duration::from_secs(300),
                max_entries: 10,
            },
            Arc::new(ManualClock::default()),
            Duration::ZERO,
            false,
        )
        .unwrap();
        assert!(expired.expired());
        assert!(expired.pending("/v1/chat/completions", None).is_none());
        let pending = service(false)
            .pending("/v1/chat/completions", None)
            .unwrap();
        assert!(
            expired
                .issue(&pending, &completed(), None, None, [3; 32])
                .is_none()
        );
        let signer = signet_core::signing::Signer::generate();
        let attestor = Attestor::from_settings(
            &signet_attest::settings::AttestationSettings {
                mode: signet_attest::settings::AttestationMode::Dev,
                gpu: signet_attest::settings::GpuEvidenceMode::None,
                quote_encoding: signet_attest::settings::QuoteEncoding::Base64,
                timeout: Duration::from_secs(5),
                configfs_path: "/nonexistent".into(),
                dstack_socket: "/nonexistent".into(),
                cache_ttl: Duration::ZERO,
                nras_claims_version: signet_attest::settings::NrasClaimsVersion::default(),
                max_concurrent: 1,
                max_waiting: 1,
            },
            signet_attest::SignerIdentity {
                address: *signer.address(),
                public_key: *signer.public_key(),
                ed25519_public_key: None,
            },
        )
        .unwrap();
        let answer = expired.attestation(&attestor, None).await;
        assert_eq!(answer.status, 503);
        assert_eq!(body_of(&answer)["error"]["code"], "keyset_expired");
        // A live one answers, and a malformed nonce is refused before any quote.
        let live = service(false);
        assert_eq!(live.attestation(&attestor, None).await.status, 200);
        assert_eq!(
            live.attestation(&attestor, Some("nonce=AB")).await.status,
            400
        );
    }

    #[test]
    fn credential_digests_read_the_bearer_token() {
        assert_eq!(
            credential_digest(b"Bearer abc"),
            credential_digest(b"BEARER   abc ")
        );
        assert_ne!(
            credential_digest(b"Bearer abc"),
            credential_digest(b"Bearer abd")
        );
        assert_ne!(
            credential_digest(b"Basic abc"),
            credential_digest(b"Bearer abc")
        );
    }
}
