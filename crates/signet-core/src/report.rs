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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationReport {
    /// EIP-55 address of the signing key (`ecdsa`), or its 32-byte public key in hex
    /// (`ed25519`, no `0x`).
    pub signing_address: String,
    /// `ecdsa` or `ed25519`.
    pub signing_algo: String,
    /// Uncompressed public key without `04`, 128 hex chars (`ecdsa`); the 32-byte public key,
    /// 64 hex chars (`ed25519`).
    pub signing_public_key: String,
    /// The nonce bound into the quote and the GPU evidence, 64 hex chars.
    pub request_nonce: String,
    /// The TDX quote, base64 or hex.
    pub intel_quote: String,
    /// The body to POST to NVIDIA NRAS `/v3/attest/gpu`, as a JSON string.
    pub nvidia_payload: String,
    /// `tdx`, `dstack` or `dev`.
    pub mode: String,
    /// `nvml`, `dev` or `none`.
    pub gpu_evidence: String,
    /// The event log behind the quote's RTMRs, when the provider gives one (dstack): the
    /// agent's JSON array as text, which verifiers replay into RTMR3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<String>,
    /// dstack: the VM configuration the agent reports with the quote (JSON text), which
    /// dstack's verifier needs to recompute the boot measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<String>,
    /// dstack: the agent's `Info` answer as it gave it (app id, `tcb_info` with the
    /// `app_compose` whose sha256 is in MRCONFIGID, `compose_hash`, `vm_config`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// With `?tls_binding=true`: hex sha256 of the serving certificate's DER
    /// SubjectPublicKeyInfo, bound into report_data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_fingerprint: Option<String>,
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
