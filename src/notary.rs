//! The notary joins the signing key and the signature store: it signs a completed exchange,
//! files the signature under the completion id, and answers lookups in the contract's shape
//! (docs/API.md §4). With `signing_algo=ed25519` a lookup answers with the legacy Ed25519
//! key's signature over the same text, made from the filed record (Ed25519 is deterministic,
//! and a retracted record is gone): only for exchanges this process sealed.

use crate::shared_store::{SharedStore, SharedStoreError};
use signet_core::ids::CompletionId;
use signet_core::inband::InbandSignature;
pub use signet_core::receipt::SignatureReceipt;
use signet_core::signing::ed25519::Ed25519Signer;
use signet_core::signing::{Address, RecoverableSignature, Signer, SigningError};
use signet_core::store::{Occupied, SignatureStore, StoredSignature, Ticket};
use signet_core::transcript::{CompletedExchange, signed_text};
use std::sync::Arc;

/// Why an exchange was not sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Signing failed (never expected).
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// A live signature for the same id is already filed.
    #[error(transparent)]
    DuplicateId(#[from] Occupied),
}

/// Signs exchanges and keeps their signatures (in memory, and mirrored to a shared store
/// when one is configured).
#[derive(Debug)]
pub struct Notary {
    signer: Signer,
    ed25519: Ed25519Signer,
    store: Arc<SignatureStore>,
    shared: Option<Arc<SharedStore>>,
}

/// Where a looked-up receipt came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// This process signed it.
    Local(SignatureReceipt),
    /// Another replica did (shared store).
    Shared(SignatureReceipt),
    /// Nobody has it.
    Missing,
}

impl Notary {
    /// A notary over `signer` filing into `store`, with a fresh legacy Ed25519 key.
    pub fn new(signer: Signer, store: SignatureStore) -> Self {
        Self {
            signer,
            ed25519: Ed25519Signer::generate(),
            store: Arc::new(store),
            shared: None,
        }
    }

    /// Uses `key` as the legacy protocol's Ed25519 key (from `signet.signing.key_source`).
    pub fn with_ed25519(mut self, key: Ed25519Signer) -> Self {
        self.ed25519 = key;
        self
    }

    /// The legacy protocol's Ed25519 key (`signing_algo=ed25519`).
    pub fn ed25519(&self) -> &Ed25519Signer {
        &self.ed25519
    }

    /// The receipt for `id` signed by the legacy Ed25519 key, while this process keeps it:
    /// the same text, the signature 128 hex characters and the address the 32-byte public
    /// key in hex (both without `0x`), as Phala's and NEAR's proxies serve them.
    pub fn ed25519_receipt(&self, id: &CompletionId) -> Option<SignatureReceipt> {
        let stored = self.store.get(id.as_str())?;
        let text = signed_text(&stored.request_sha256, &stored.response_sha256);
        Some(SignatureReceipt {
            signature: hex::encode(self.ed25519.sign(text.as_bytes())),
            text,
            signing_address: self.ed25519.public_key_hex(),
            signing_algo: "ed25519".to_owned(),
        })
    }

    /// Mirrors every signature to `shared` and looks there for ids not signed here.
    pub fn with_shared_store(mut self, shared: Arc<SharedStore>) -> Self {
        self.shared = Some(shared);
        self
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

    /// The store, shared (the background sweeper holds it, and nothing else).
    pub fn store_handle(&self) -> Arc<SignatureStore> {
        self.store.clone()
    }

    /// Signs the exchange's text and files it under its id, unless a live signature is
    /// already filed under that id (a later exchange never replaces an earlier one's).
    pub fn seal(
        &self,
        exchange: &CompletedExchange,
    ) -> Result<(Ticket, RecoverableSignature), SealError> {
        let signature = self.signer.sign_message(exchange.text().as_bytes())?;
        let ticket = self.store.insert(
            &exchange.id,
            StoredSignature {
                request_sha256: exchange.request_sha256,
                response_sha256: exchange.response_sha256,
                signature,
            },
        )?;
        if let Some(shared) = &self.shared {
            let receipt = self.receipt_for(
                &exchange.request_sha256,
                &exchange.response_sha256,
                &signature,
            );
            shared.publish(exchange.id.as_str(), &receipt, self.store.ttl());
        }
        Ok((ticket, signature))
    }

    /// Signs and files the exchange, returning what the client may get in-band.
    pub fn seal_for_client(
        &self,
        exchange: &CompletedExchange,
    ) -> Result<(Ticket, InbandSignature), SealError> {
        let (ticket, signature) = self.seal(exchange)?;
        Ok((
            ticket,
            InbandSignature {
                id: exchange.id.to_string(),
                text: exchange.text(),
                signature: signature.to_hex(),
                signing_address: self.address().to_checksum(),
                signing_algo: "ecdsa".to_owned(),
            },
        ))
    }

    fn receipt_for(
        &self,
        request_sha256: &[u8; 32],
        response_sha256: &[u8; 32],
        signature: &RecoverableSignature,
    ) -> SignatureReceipt {
        SignatureReceipt {
            text: signed_text(request_sha256, response_sha256),
            signature: signature.to_hex(),
            signing_address: self.signer.address().to_checksum(),
            signing_algo: "ecdsa".to_owned(),
        }
    }

    /// Takes back a sealed signature whose response did not reach the client.
    pub fn retract(&self, ticket: Ticket, id: &CompletionId) {
        let Some(record) = self.store.retract(ticket) else {
            return;
        };
        if let Some(shared) = &self.shared {
            // Only this record: the shared store deletes the key only while it still holds
            // exactly what this replica published.
            let receipt = self.receipt_for(
                &record.request_sha256,
                &record.response_sha256,
                &record.signature,
            );
            shared.withdraw(id.as_str(), &receipt);
        }
    }

    /// Looks `id` up here, then in the shared store. An unreachable shared store is an
    /// error, not a miss: the signature may well exist on another replica.
    pub async fn lookup(&self, id: &CompletionId) -> Result<Lookup, SharedStoreError> {
        if let Some(receipt) = self.receipt(id) {
            return Ok(Lookup::Local(receipt));
        }
        match &self.shared {
            None => Ok(Lookup::Missing),
            Some(shared) => Ok(shared
                .lookup(id.as_str())
                .await?
                .map_or(Lookup::Missing, Lookup::Shared)),
        }
    }

    /// The receipt for `id`, while it is kept.
    pub fn receipt(&self, id: &CompletionId) -> Option<SignatureReceipt> {
        let stored = self.store.get(id.as_str())?;
        Some(self.receipt_for(
            &stored.request_sha256,
            &stored.response_sha256,
            &stored.signature,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_core::signing::recover_address;
    use signet_core::store::ManualClock;
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
        // The same text under the Ed25519 key, as Phala's and NEAR's verifiers check it.
        let ed = notary.ed25519_receipt(&exchange.id).unwrap();
        assert_eq!(ed.text, exchange.text());
        assert_eq!(ed.signing_address, notary.ed25519().public_key_hex());
        assert_eq!(ed.signing_algo, "ed25519");
        assert!(
            signet_core::signing::ed25519::verify_hex(
                &ed.signing_address,
                ed.text.as_bytes(),
                &ed.signature
            )
            .is_ok()
        );
        notary.retract(ticket, &exchange.id);
        assert_eq!(notary.receipt(&exchange.id), None);
        assert_eq!(notary.ed25519_receipt(&exchange.id), None);
    }

    #[test]
    fn a_later_exchange_with_the_same_id_never_replaces_the_first_signature() {
        let clock = Arc::new(ManualClock::default());
        let store = SignatureStore::new(Duration::from_secs(300), 10, clock);
        let notary = Notary::new(Signer::generate(), store);
        let first = CompletedExchange {
            id: CompletionId::parse("chatcmpl-shared").unwrap(),
            request_sha256: [1; 32],
            response_sha256: [2; 32],
        };
        let later = CompletedExchange {
            request_sha256: [3; 32],
            ..first.clone()
        };
        let (ticket, _) = notary.seal(&first).unwrap();
        assert!(matches!(
            notary.seal(&later),
            Err(SealError::DuplicateId(_))
        ));
        assert_eq!(notary.receipt(&first.id).unwrap().text, first.text());
        // Once the first is retracted (never delivered), the id is free.
        notary.retract(ticket, &first.id);
        notary.seal(&later).unwrap();
        assert_eq!(notary.receipt(&first.id).unwrap().text, later.text());
    }
}
