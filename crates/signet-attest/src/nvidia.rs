//! NVIDIA GPU evidence and the payload NVIDIA's Remote Attestation Service (NRAS v3,
//! `POST /v3/attest/gpu`) takes: `{"nonce", "arch", "evidence_list": [{"certificate",
//! "evidence", "arch"}…], "claims_version"}` with the PEM certificate chain and the raw
//! attestation report each base64-encoded, as NVIDIA's own tools build it. `claims_version`
//! is what NVIDIA's attestation SDK adds (`"2.0"` unless told otherwise); which one signet
//! sends is `signet.attestation.nras_claims_version` ([`NrasClaimsVersion`]).

use super::{AttestationError, GpuEvidenceSource};
use crate::settings::{GpuEvidenceMode, NrasClaimsVersion};
use async_trait::async_trait;
use base64::Engine;
use serde_json::json;
use signet_core::ids::Nonce;

/// The architecture name NRAS expects for H100s.
pub const HOPPER: &str = "HOPPER";

/// Evidence from one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuEvidence {
    /// The GPU's attestation certificate chain, PEM.
    pub certificate_chain_pem: Vec<u8>,
    /// The signed attestation report (SPDM measurements over the nonce).
    pub report: Vec<u8>,
    /// NRAS architecture name, e.g. `HOPPER`.
    pub arch: String,
}

/// Serializes the NRAS request body for `nonce` and `evidence` as a JSON string, with the
/// default `claims_version` (`"2.0"`, as NVIDIA's SDK sends it).
pub fn nras_payload(nonce: &Nonce, evidence: &[GpuEvidence]) -> String {
    nras_payload_for(nonce, evidence, NrasClaimsVersion::default())
}

/// Serializes the NRAS request body with the given `claims_version` (or none).
pub fn nras_payload_for(
    nonce: &Nonce,
    evidence: &[GpuEvidence],
    claims_version: NrasClaimsVersion,
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let arch = evidence.first().map_or(HOPPER, |e| e.arch.as_str());
    let list: Vec<serde_json::Value> = evidence
        .iter()
        .map(|item| {
            json!({
                "certificate": b64.encode(&item.certificate_chain_pem),
                "evidence": b64.encode(&item.report),
                "arch": item.arch,
            })
        })
        .collect();
    let mut payload = json!({
        "nonce": nonce.to_hex(),
        "evidence_list": list,
        "arch": arch,
    });
    if let (Some(version), Some(object)) =
        (claims_version.as_payload_value(), payload.as_object_mut())
    {
        object.insert("claims_version".to_owned(), json!(version));
    }
    payload.to_string()
}

pub use signet_core::report::spdm_request_nonce;

/// No GPU evidence: the list is empty (a CPU-only deployment says so openly).
#[derive(Debug, Default)]
pub struct NoGpuEvidence;

#[async_trait]
impl GpuEvidenceSource for NoGpuEvidence {
    fn mode(&self) -> GpuEvidenceMode {
        GpuEvidenceMode::None
    }

    async fn collect(&self, _nonce: &Nonce) -> Result<Vec<GpuEvidence>, AttestationError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_is_read_from_an_spdm_request() {
        let mut report = vec![0x11, 0xE0, 0x01, 0xFF];
        report.extend([7u8; 32]);
        report.push(0);
        assert_eq!(spdm_request_nonce(&report), Some([7; 32]));
        assert_eq!(spdm_request_nonce(&report[..20]), None);
        assert_eq!(
            spdm_request_nonce(b"not spdm at all, not at all, no no no"),
            None
        );
    }

    #[test]
    fn payload_has_the_nras_shape() {
        let nonce = Nonce([0x11; 32]);
        let evidence = vec![GpuEvidence {
            certificate_chain_pem: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            report: vec![1, 2, 3],
            arch: HOPPER.to_owned(),
        }];
        let payload: serde_json::Value =
            serde_json::from_str(&nras_payload(&nonce, &evidence)).unwrap();
        assert_eq!(payload["nonce"], "11".repeat(32));
        assert_eq!(payload["arch"], "HOPPER");
        assert_eq!(payload["evidence_list"][0]["evidence"], "AQID");
        assert_eq!(
            payload["evidence_list"][0]["certificate"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
        );
        assert_eq!(payload["claims_version"], "2.0");
        let empty: serde_json::Value = serde_json::from_str(&nras_payload(&nonce, &[])).unwrap();
        assert_eq!(empty["evidence_list"], json!([]));
    }

    #[test]
    fn claims_version_is_configurable_or_absent() {
        let nonce = Nonce([0x22; 32]);
        let keys = |version| {
            let payload: serde_json::Value =
                serde_json::from_str(&nras_payload_for(&nonce, &[], version)).unwrap();
            let mut keys: Vec<String> = payload.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            (keys, payload["claims_version"].clone())
        };
        assert_eq!(
            keys(NrasClaimsVersion::V3),
            (
                vec![
                    "arch".into(),
                    "claims_version".into(),
                    "evidence_list".into(),
                    "nonce".into()
                ],
                json!("3.0")
            )
        );
        assert_eq!(keys(NrasClaimsVersion::V4).1, json!("4.0"));
        assert_eq!(
            keys(NrasClaimsVersion::Omit),
            (
                vec!["arch".into(), "evidence_list".into(), "nonce".into()],
                serde_json::Value::Null
            )
        );
    }
}
