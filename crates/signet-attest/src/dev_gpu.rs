//! `gpu: dev`: serves recorded H100 evidence (tests/fixtures/nvidia, NVIDIA's published sample)
//! with the request's nonce in the payload. The nonce inside the recorded SPDM request is the
//! one it was recorded with, so NRAS rejects it: dev evidence is never hardware-rooted, and
//! every report in this mode says `"gpu_evidence": "dev"`.

use super::{AttestationError, GpuEvidence, GpuEvidenceSource, nvidia::HOPPER};
use crate::settings::GpuEvidenceMode;
use async_trait::async_trait;
use signet_core::ids::Nonce;
use std::sync::LazyLock;

const RECORDED_REPORT_HEX: &str =
    include_str!("../../../tests/fixtures/nvidia/hopper-attestation-report.hex");
const RECORDED_CERT_CHAIN: &str =
    include_str!("../../../tests/fixtures/nvidia/hopper-cert-chain.pem");

static RECORDED: LazyLock<GpuEvidence> = LazyLock::new(|| GpuEvidence {
    // The fixture is checked by a unit test; an unreadable one would serve an empty report.
    report: hex::decode(RECORDED_REPORT_HEX.trim()).unwrap_or_default(),
    certificate_chain_pem: RECORDED_CERT_CHAIN.as_bytes().to_vec(),
    arch: HOPPER.to_owned(),
});

/// The recorded H100 evidence.
pub fn recorded_evidence() -> &'static GpuEvidence {
    &RECORDED
}

/// Serves the recorded evidence for one GPU.
#[derive(Debug, Default)]
pub struct DevGpuEvidence;

#[async_trait]
impl GpuEvidenceSource for DevGpuEvidence {
    fn mode(&self) -> GpuEvidenceMode {
        GpuEvidenceMode::Dev
    }

    async fn collect(&self, _nonce: &Nonce) -> Result<Vec<GpuEvidence>, AttestationError> {
        Ok(vec![recorded_evidence().clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvidia::spdm_request_nonce;

    #[test]
    fn the_recorded_evidence_is_a_real_spdm_exchange_and_chain() {
        let evidence = recorded_evidence();
        assert_eq!(evidence.report.len(), 4117);
        let nonce = spdm_request_nonce(&evidence.report).unwrap();
        assert_eq!(hex::encode(&nonce[..4]), "931d8dd0");
        let pem = String::from_utf8(evidence.certificate_chain_pem.clone()).unwrap();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 5);
    }
}
