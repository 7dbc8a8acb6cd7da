//! The attestation report as it travels (docs/API.md §5), and the report_data layouts that
//! bind the signing key into a TDX quote. The server builds reports with these functions and
//! the verifier checks quotes against the same functions, reading the report typed.

use crate::ids::Nonce;
use crate::signing::Address;
use serde::{Deserialize, Serialize};

/// report_data = 20-byte address ‖ 12 zero bytes ‖ 32-byte nonce, the layout existing
/// verifiers read at quote bytes 568..632.
pub fn report_data(address: &Address, nonce: &Nonce) -> [u8; 64] {
    let mut data = [0u8; 64];
    data[..20].copy_from_slice(&address.0);
    data[32..].copy_from_slice(&nonce.0);
    data
}

/// report_data bound to the TLS certificate too (`?tls_binding=true`):
/// sha256(20-byte address ‖ sha256(DER SubjectPublicKeyInfo of the serving certificate)) ‖
/// 32-byte nonce. A man in the middle with another certificate cannot relay such a report.
pub fn tls_bound_report_data(address: &Address, spki_sha256: &[u8; 32], nonce: &Nonce) -> [u8; 64] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(address.0);
    hasher.update(spki_sha256);
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(&hasher.finalize());
    data[32..].copy_from_slice(&nonce.0);
    data
}

/// report_data for the legacy protocol's Ed25519 key (`signing_algo=ed25519`), as Phala's
/// vllm-proxy and NEAR's inference-proxy lay it out: the 32-byte public key ‖ 32-byte nonce.
pub fn ed25519_report_data(public_key: &[u8; 32], nonce: &Nonce) -> [u8; 64] {
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(public_key);
    data[32..].copy_from_slice(&nonce.0);
    data
}

/// The TLS-bound form for the Ed25519 key: sha256(32-byte public key ‖ sha256(DER SPKI)) ‖
/// 32-byte nonce.
pub fn ed25519_tls_bound_report_data(
    public_key: &[u8; 32],
    spki_sha256: &[u8; 32],
    nonce: &Nonce,
) -> [u8; 64] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(public_key);
    hasher.update(spki_sha256);
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(&hasher.finalize());
    data[32..].copy_from_slice(&nonce.0);
    data
}

/// sha256 of the DER SubjectPublicKeyInfo inside a DER certificate: what the TLS-bound
/// report_data and `tls_cert_fingerprint` are computed from.
pub fn spki_sha256_of_cert(der: &[u8]) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    use x509_cert::der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()?;
    Some(Sha256::digest(&spki).into())
}

/// Byte offset of report_data in a v4 TDX quote (48-byte header + 520 bytes of body).
pub const REPORT_DATA_OFFSET: usize = 568;

/// Byte offset of report_data in a v5 TDX quote: the 6-byte body descriptor (type, size)
/// comes before the body, and report_data is at the same place in TD report 1.0 and 1.5
/// bodies.
pub const REPORT_DATA_OFFSET_V5: usize = REPORT_DATA_OFFSET + 6;

/// The body of `GET /v1/attestation/report`.
///
/// Reading is as forgiving as the verifier always was, because it also reads other gateways'
/// reports: a field that is missing or of another type reads as empty (or `None`), so the
/// one check that needs it fails with its own message instead of the whole report failing
/// to parse. Writing is unchanged: every field the server fills is written as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationReport {
    /// EIP-55 address of the signing key (`ecdsa`), or its 32-byte public key in hex
    /// (`ed25519`, no `0x`).
    #[serde(default, deserialize_with = "lenient")]
    pub signing_address: String,
    /// `ecdsa` or `ed25519`.
    #[serde(default, deserialize_with = "lenient")]
    pub signing_algo: String,
    /// Uncompressed public key without `04`, 128 hex chars (`ecdsa`); the 32-byte public key,
    /// 64 hex chars (`ed25519`).
    #[serde(default, deserialize_with = "lenient")]
    pub signing_public_key: String,
    /// The nonce bound into the quote and the GPU evidence, 64 hex chars.
    #[serde(default, deserialize_with = "lenient")]
    pub request_nonce: String,
    /// The TDX quote, base64 or hex.
    #[serde(default, deserialize_with = "lenient")]
    pub intel_quote: String,
    /// The body to POST to NVIDIA NRAS `/v3/attest/gpu`, as a JSON string.
    #[serde(default, deserialize_with = "lenient")]
    pub nvidia_payload: String,
    /// `tdx`, `dstack` or `dev`.
    #[serde(default, deserialize_with = "lenient")]
    pub mode: String,
    /// `nvml`, `dev` or `none`.
    #[serde(default, deserialize_with = "lenient")]
    pub gpu_evidence: String,
    /// The event log behind the quote's RTMRs, when the provider gives one (dstack): the
    /// agent's JSON array as text, which verifiers replay into RTMR3.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub event_log: Option<String>,
    /// dstack: the VM configuration the agent reports with the quote (JSON text), which
    /// dstack's verifier needs to recompute the boot measurements.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub vm_config: Option<String>,
    /// dstack: the agent's `Info` answer as it gave it (app id, `tcb_info` with the
    /// `app_compose` whose sha256 is in MRCONFIGID, `compose_hash`, `vm_config`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// With `?tls_binding=true`: hex sha256 of the serving certificate's DER
    /// SubjectPublicKeyInfo, bound into report_data.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_cert_fingerprint: Option<String>,
    /// Where the signing keys come from (`signet.signing.key_source`): `{"source":
    /// "random"}`, or `{"source": "dstack", "keys": [...]}` with each key role's KMS path,
    /// purpose and signature chain (docs/API.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_custody: Option<serde_json::Value>,
}

/// Reads one report field, or its default when the field holds another type (a foreign
/// gateway's `null`, number or object where signet writes text).
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

/// The public half of the signing identity, as reports show it.
#[derive(Debug, Clone)]
pub struct SignerIdentity {
    /// The signing address.
    pub address: Address,
    /// 64-byte uncompressed public key without the `04` prefix.
    pub public_key: [u8; 64],
    /// The legacy protocol's Ed25519 public key (`signing_algo=ed25519`), when there is one.
    pub ed25519_public_key: Option<[u8; 32]>,
}

/// The nonce an NVIDIA SPDM GET_MEASUREMENTS request carries (the 32 bytes after the
/// 4-byte request header), or `None` if `report` does not start with such a request.
pub fn spdm_request_nonce(report: &[u8]) -> Option<[u8; 32]> {
    match report {
        [0x11, 0xE0, _, _, rest @ ..] => rest.get(..32)?.try_into().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> AttestationReport {
        AttestationReport {
            signing_address: "0xabc".to_owned(),
            signing_algo: "ecdsa".to_owned(),
            signing_public_key: "04".to_owned(),
            request_nonce: "00".to_owned(),
            intel_quote: "AAAA".to_owned(),
            nvidia_payload: "{}".to_owned(),
            mode: "dev".to_owned(),
            gpu_evidence: "none".to_owned(),
            event_log: None,
            vm_config: None,
            info: None,
            tls_cert_fingerprint: None,
            key_custody: None,
        }
    }

    #[test]
    fn a_report_is_written_as_before_and_reads_back_unchanged() {
        let mut full = report();
        let json = serde_json::to_value(&full).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "signing_address",
                "signing_algo",
                "signing_public_key",
                "request_nonce",
                "intel_quote",
                "nvidia_payload",
                "mode",
                "gpu_evidence"
            ],
            "absent optional fields are not written"
        );
        full.event_log = Some("[]".to_owned());
        full.info = Some(serde_json::json!({"app_id": "x"}));
        full.tls_cert_fingerprint = Some("ab".repeat(32));
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(
            serde_json::from_str::<AttestationReport>(&text).unwrap(),
            full
        );
    }

    #[test]
    fn a_foreign_report_reads_with_missing_and_odd_fields_empty() {
        let read: AttestationReport = serde_json::from_value(serde_json::json!({
            "signing_address": "0xabc",
            "mode": 7,
            "event_log": [{"imr": 3}],
            "tls_cert_fingerprint": null,
            "vendor_extra": true,
        }))
        .unwrap();
        assert_eq!(read.signing_address, "0xabc");
        assert_eq!(read.mode, "", "a number where text belongs reads as empty");
        assert_eq!(read.nvidia_payload, "", "a missing field reads as empty");
        assert_eq!(read.event_log, None);
        assert_eq!(read.tls_cert_fingerprint, None);
        assert!(serde_json::from_value::<AttestationReport>(serde_json::json!("text")).is_err());
    }
}
