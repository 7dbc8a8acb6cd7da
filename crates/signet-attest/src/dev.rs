//! The `dev` quote provider: structurally valid v4 TDX quotes built with `tdx-quote`'s mock
//! support, with the same report_data binding as real ones. Their keys are random and their
//! measurements all zero, so no Intel root will ever accept them. `dev` must be chosen in
//! the configuration and every report says `"mode": "dev"`.

use super::{AttestationError, ProvidedQuote, QuoteProvider};
use crate::settings::AttestationMode;
use async_trait::async_trait;
use p256::ecdsa::SigningKey;
use rand_core::OsRng;

/// Offset of the signature-section length in a v4 quote (48-byte header + 584-byte body).
const SIGNATURE_SECTION_OFFSET: usize = 632;

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
        let mut quote = tdx_quote::Quote::mock(
            self.attestation_key.clone(),
            self.pck_key.clone(),
            *report_data,
            DEV_PCK_CHAIN.to_vec(),
        )
        .as_bytes();
        // The mock writes a signature-section length (bytes 632..636) four bytes short of
        // what follows it; standard parsers (dcap-qvl, Intel's QVL) bound the section by that
        // field and refuse the quote. Set it to the real length. It lies outside the signed
        // header and body, so the mock signature stays valid.
        if let Some(rest) = quote.len().checked_sub(SIGNATURE_SECTION_OFFSET + 4) {
            if let (Ok(rest), Some(field)) = (
                u32::try_from(rest),
                quote.get_mut(SIGNATURE_SECTION_OFFSET..SIGNATURE_SECTION_OFFSET + 4),
            ) {
                field.copy_from_slice(&rest.to_le_bytes());
            }
        }
        quote
    }
}

#[async_trait]
impl QuoteProvider for DevQuoteProvider {
    fn mode(&self) -> AttestationMode {
        AttestationMode::Dev
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
        Ok(ProvidedQuote::bare(self.mock_quote(report_data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_quotes_parse_with_both_parsers() {
        let quote = DevQuoteProvider::generate().mock_quote(&[0x42; 64]);
        let ours = tdx_quote::Quote::from_bytes(&quote).unwrap();
        assert_eq!(ours.report_input_data(), [0x42; 64]);
        let standard = dcap_qvl::quote::Quote::parse(&quote).unwrap();
        assert_eq!(standard.header.version, 4);
    }
}
