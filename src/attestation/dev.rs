//! The `dev` quote provider: structurally valid v4 TDX quotes built with `tdx-quote`'s mock
//! support, with the same report_data binding as real ones. Their keys are random and their
//! measurements all zero, so no Intel root will ever accept them. `dev` must be chosen in
//! the configuration and every report says `"mode": "dev"`.

use super::{AttestationError, ProvidedQuote, QuoteProvider};
use crate::config::AttestationMode;
use async_trait::async_trait;
use p256::ecdsa::SigningKey;
use rand_core::OsRng;

/// Text carried where a real quote has its PCK certificate chain.
const DEV_PCK_CHAIN: &[u8] = b"signet dev mode: this quote has no Intel PCK certificate chain";

/// Builds mock quotes with keys drawn at start.
pub struct DevQuoteProvider {
    attestation_key: SigningKey,
    pck_key: SigningKey,
}

impl DevQuoteProvider {
    /// Draws the mock attestation and PCK keys.
    pub fn generate() -> Self {
        Self {
            attestation_key: SigningKey::random(&mut OsRng),
            pck_key: SigningKey::random(&mut OsRng),
        }
    }

    /// A mock quote over `report_data`.
    pub fn mock_quote(&self, report_data: &[u8; 64]) -> Vec<u8> {
        tdx_quote::Quote::mock(
            self.attestation_key.clone(),
            self.pck_key.clone(),
            *report_data,
            DEV_PCK_CHAIN.to_vec(),
        )
        .as_bytes()
    }
}

#[async_trait]
impl QuoteProvider for DevQuoteProvider {
    fn mode(&self) -> AttestationMode {
        AttestationMode::Dev
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
        Ok(ProvidedQuote {
            bytes: self.mock_quote(report_data),
            event_log: None,
        })
    }
}
