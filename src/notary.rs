//! The notary joins the signing key and the signature store: it signs a completed exchange,
//! files the signature under the completion id, and answers lookups in the contract's shape
//! (docs/API.md §4).

use crate::ids::CompletionId;
use crate::signing::{Address, RecoverableSignature, Signer, SigningError};
use crate::store::{SignatureStore, StoredSignature, Ticket};
use crate::transcript::{CompletedExchange, signed_text};
use serde::Serialize;

/// The body of `GET /v1/signature/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureReceipt {
    /// `<req_sha256>:<resp_sha256>`.
    pub text: String,
    /// `0x` + r ‖ s ‖ v in hex.
    pub signature: String,
    /// The EIP-55 address that signed.
    pub signing_address: String,
    /// Always `ecdsa` for now.
    pub signing_algo: &'static str,
}

/// Signs exchanges and keeps their signatures.
#[derive(Debug)]
pub struct Notary {
    signer: Signer,
    store: SignatureStore,
}

impl Notary {
    /// A notary over `signer` filing into `store`.
    pub fn new(signer: Signer, store: SignatureStore) -> Self {
        Self { signer, store }
    }

    /// The signing identity.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The signing address.
    pub fn address(&self) -> &Address {
        self.signer.address()
    }

    /// The store (for sweeping and metrics).
    pub fn store(&self) -> &SignatureStore {
        &self.store
    }

    /// Signs the exchange's text and files it under its id.
    pub fn seal(
        &self,
        exchange: &CompletedExchange,
    ) -> Result<(Ticket, RecoverableSignature), SigningError> {
        let signature = self.signer.sign_message(exchange.text().as_bytes())?;
        let ticket = self.store.insert(
            &exchange.id,
            StoredSignature {
                request_sha256: exchange.request_sha256,
                response_sha256: exchange.response_sha256,
                signature,
            },
        );
        Ok((ticket, signature))
    }

    /// Takes back a sealed signature whose response did not reach the client.
    pub fn retract(&self, ticket: Ticket) {
        self.store.retract(ticket);
    }

    /// The receipt for `id`, while it is kept.
    pub fn receipt(&self, id: &CompletionId) -> Option<SignatureReceipt> {
        let stored = self.store.get(id.as_str())?;
        Some(SignatureReceipt {
            text: signed_text(&stored.request_sha256, &stored.response_sha256),
            signature: stored.signature.to_hex(),
            signing_address: self.signer.address().to_checksum(),
            signing_algo: "ecdsa",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::recover_address;
    use crate::store::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_sealed_exchange_can_be_looked_up_and_verified() {
        let clock = Arc::new(ManualClock::default());
        let store = SignatureStore::new(Duration::from_secs(300), 10, clock);
        let notary = Notary::new(Signer::generate(), store);
        let exchange = CompletedExchange {
            id: CompletionId::parse("chat-1").unwrap(),
            request_sha256: [1; 32],
            response_sha256: [2; 32],
        };
        let (ticket, signature) = notary.seal(&exchange).unwrap();
        let receipt = notary.receipt(&exchange.id).unwrap();
        assert_eq!(receipt.text, exchange.text());
        assert_eq!(receipt.signature, signature.to_hex());
        let parsed = RecoverableSignature::parse(&receipt.signature).unwrap();
        assert_eq!(
            recover_address(receipt.text.as_bytes(), &parsed)
                .unwrap()
                .to_checksum(),
            receipt.signing_address
        );
        notary.retract(ticket);
        assert_eq!(notary.receipt(&exchange.id), None);
    }
}
