//! The gateway's signing identity: a secp256k1 key born in memory at start, and the
//! EIP-191 `personal_sign` signatures it makes over `sha256(request):sha256(response)`.
//!
//! This module owns key generation, signing and recovery. It never writes the key anywhere:
//! the secret scalar lives only inside [`k256::ecdsa::SigningKey`], which zeroizes it on drop,
//! and nothing here formats it. What leaves this module is the public key, the Ethereum
//! address and signatures.

mod address;
pub mod ed25519;
mod eip191;

pub use address::{Address, AddressError};
pub use eip191::{RecoverableSignature, SignatureParseError, eip191_hash};

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use rand_core::OsRng;

/// Errors from signing or recovering.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The ECDSA primitive refused (in practice unreachable for a valid key and digest).
    #[error("ecdsa signing failed: {0}")]
    Sign(k256::ecdsa::Error),
    /// The signature does not recover to any public key.
    #[error("signature does not recover to a public key: {0}")]
    Recover(k256::ecdsa::Error),
    /// The signature bytes are malformed.
    #[error(transparent)]
    Parse(#[from] SignatureParseError),
}

/// The gateway's signing key with its derived public identity.
pub struct Signer {
    key: SigningKey,
    address: Address,
    public_key: [u8; 64],
}

impl std::fmt::Debug for Signer {
    // Only the public identity: the secret never reaches a formatter.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("address", &self.address.to_checksum())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Draws a fresh key from the operating system's RNG.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::random(&mut OsRng))
    }

    /// Builds a signer from a 32-byte secret: a key from the configured key source (drawn at
    /// start, or derived by the dstack KMS), or a known identity in tests and tools.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Result<Self, SigningError> {
        let key = SigningKey::from_bytes(secret.into()).map_err(SigningError::Sign)?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: SigningKey) -> Self {
        let public_key = uncompressed_xy(key.verifying_key());
        let address = Address::from_public_key(&public_key);
        Self {
            key,
            address,
            public_key,
        }
    }

    /// The Ethereum address of the key.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The uncompressed public point without the `04` prefix (x ‖ y, 64 bytes).
    pub fn public_key(&self) -> &[u8; 64] {
        &self.public_key
    }

    /// The secret scalar, for NEAR's `ecdsa` E2EE suite only (which reuses the signing key
    /// by that protocol's design); it never leaves this crate.
    pub(crate) fn secret_scalar(&self) -> &k256::NonZeroScalar {
        self.key.as_nonzero_scalar()
    }

    /// EIP-191 `personal_sign` of `message`: RFC 6979 deterministic, low-S, v = 27 or 28.
    pub fn sign_message(&self, message: &[u8]) -> Result<RecoverableSignature, SigningError> {
        let digest = eip191_hash(message);
        let (signature, recovery_id): (Signature, RecoveryId) = self
            .key
            .sign_prehash_recoverable(&digest)
            .map_err(SigningError::Sign)?;
        Ok(RecoverableSignature::from_parts(&signature, recovery_id))
    }
}

/// Recovers the address that made `signature` over `message` under EIP-191.
pub fn recover_address(
    message: &[u8],
    signature: &RecoverableSignature,
) -> Result<Address, SigningError> {
    let digest = eip191_hash(message);
    let (sig, recovery_id) = signature.to_parts()?;
    let key = VerifyingKey::recover_from_prehash(&digest, &sig, recovery_id)
        .map_err(SigningError::Recover)?;
    Ok(Address::from_public_key(&uncompressed_xy(&key)))
}

/// The text a key the dstack KMS derived signs (EIP-191) to vouch for a key signet made from
/// it (`key_custody.keys[].link_signature`, docs/API.md §5).
pub fn custody_link_text(role: &str, public_key: &str) -> String {
    format!("signet-key-custody:v1:{role}:{public_key}")
}

/// Parses a public key given as 128 hex chars (x ‖ y) or 130 with the `04` prefix, as
/// attestation reports carry it, or compressed (66 hex chars, `02`/`03`), and returns its
/// address.
pub fn address_of_public_key_hex(hex_key: &str) -> Result<Address, AddressError> {
    let trimmed = hex_key.strip_prefix("0x").unwrap_or(hex_key);
    let bytes = hex::decode(trimmed).map_err(|_| AddressError::NotHex)?;
    if bytes.len() == 33 && matches!(bytes.first(), Some(0x02 | 0x03)) {
        let key = VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| AddressError::NotOnCurve)?;
        return Ok(Address::from_public_key(&uncompressed_xy(&key)));
    }
    let xy: [u8; 64] = match bytes.len() {
        64 => bytes
            .as_slice()
            .try_into()
            .map_err(|_| AddressError::Length)?,
        65 if bytes.first() == Some(&0x04) => bytes
            .get(1..)
            .and_then(|s| s.try_into().ok())
            .ok_or(AddressError::Length)?,
        _ => return Err(AddressError::Length),
    };
    // A point that is not on the curve is not a public key at all.
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..].copy_from_slice(&xy);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| AddressError::NotOnCurve)?;
    Ok(Address::from_public_key(&xy))
}

fn uncompressed_xy(key: &VerifyingKey) -> [u8; 64] {
    let point = key.to_encoded_point(false);
    let mut xy = [0u8; 64];
    // An uncompressed SEC1 point is 0x04 ‖ x ‖ y: 65 bytes.
    if let Some(tail) = point.as_bytes().get(1..65) {
        xy.copy_from_slice(tail);
    }
    xy
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key whose address and signature were computed with eth-account (not signet), so the
    // derivation and signing below are checked against an independent implementation.
    const DOC_SECRET: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const DOC_ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";

    fn doc_signer() -> Signer {
        let secret: [u8; 32] = hex::decode(DOC_SECRET).unwrap().try_into().unwrap();
        Signer::from_secret_bytes(&secret).unwrap()
    }

    #[test]
    fn address_matches_a_published_vector() {
        assert_eq!(doc_signer().address().to_checksum(), DOC_ADDRESS);
    }

    #[test]
    fn a_compressed_public_key_gives_the_same_address() {
        // eth_keys: PrivateKey(DOC_SECRET).public_key.to_compressed_bytes()
        let compressed = "024e3b81af9c2234cad09d679ce6035ed1392347ce64ce405f5dcd36228a25de6e";
        assert_eq!(
            address_of_public_key_hex(compressed).unwrap().to_checksum(),
            DOC_ADDRESS
        );
        assert!(address_of_public_key_hex(&format!("05{}", &compressed[2..])).is_err());
    }

    #[test]
    fn signature_matches_eth_account_for_the_same_key_and_message() {
        // eth_account: Account.sign_message(encode_defunct(text="I♥SF"), DOC_SECRET).signature
        let sig = doc_signer().sign_message("I♥SF".as_bytes()).unwrap();
        assert_eq!(
            sig.to_hex(),
            "0x87f6856afaa7684bc6ecccef96246c155da984e7889dbdda1ae59940bdab8e676cd3055bd38ac073cd5710e3040f1ed08073ca026266caeb097213d52665c4c01b"
        );
    }

    #[test]
    fn sign_then_recover_round_trips() {
        let signer = Signer::generate();
        let text = b"bcf1:2e70";
        let sig = signer.sign_message(text).unwrap();
        assert_eq!(&recover_address(text, &sig).unwrap(), signer.address());
        assert_ne!(
            &recover_address(b"bcf1:2e71", &sig).unwrap(),
            signer.address()
        );
    }

    #[test]
    fn signatures_are_low_s_with_v_27_or_28() {
        let signer = Signer::generate();
        for i in 0..64u32 {
            let sig = signer.sign_message(&i.to_be_bytes()).unwrap();
            let bytes = sig.as_bytes();
            assert!(bytes[64] == 27 || bytes[64] == 28);
            let (parsed, _) = sig.to_parts().unwrap();
            assert!(parsed.normalize_s().is_none(), "s must already be low");
        }
    }

    #[test]
    fn public_key_hex_maps_to_the_same_address() {
        let signer = doc_signer();
        let hex_key = hex::encode(signer.public_key());
        assert_eq!(
            &address_of_public_key_hex(&hex_key).unwrap(),
            signer.address()
        );
        assert_eq!(
            &address_of_public_key_hex(&format!("04{hex_key}")).unwrap(),
            signer.address()
        );
        assert!(address_of_public_key_hex("zz").is_err());
        assert!(address_of_public_key_hex(&"11".repeat(64)).is_err());
    }

    #[test]
    fn the_secret_is_wiped_when_the_key_is_dropped() {
        // Fails to compile if the key type ever stops zeroizing its scalar on drop.
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<SigningKey>();
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let rendered = format!("{:?}", doc_signer());
        assert!(!rendered.contains(DOC_SECRET));
        assert!(rendered.contains(DOC_ADDRESS));
    }
}
