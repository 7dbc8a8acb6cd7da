//! Ed25519 keys (RFC 8032), held in memory like the secp256k1 key: drawn from the OS RNG at
//! start or derived from the dstack KMS (`signet.signing.key_source`), never written, never
//! formatted. The seed is held only inside
//! [`ed25519_dalek::SigningKey`], which zeroizes it on drop; the 32 random bytes it is made
//! from live in a [`zeroize::Zeroizing`] buffer for the instant of construction.
//!
//! signet holds two such keys with separate roles (ACI §3.1: a key has one role): the ACI
//! receipt key, which signs only JCS receipt documents, and the legacy Ed25519 key, which
//! signs only the `sha256(request):sha256(response)` text of `GET /v1/signature/{id}`.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// Why an Ed25519 signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ed25519Error {
    /// Not lowercase or uppercase hex of the right length.
    #[error("{what} must be {len} hex characters")]
    Encoding {
        /// Which value.
        what: &'static str,
        /// Expected hex length.
        len: usize,
    },
    /// The public key is not a valid Edwards point.
    #[error("the public key is not a valid Ed25519 point")]
    BadKey,
    /// The signature does not verify.
    #[error("the Ed25519 signature does not verify")]
    Mismatch,
}

/// An Ed25519 signing key.
pub struct Ed25519Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Ed25519Signer {
    // Only the public key: the seed never reaches a formatter.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// Draws a fresh key from the operating system's RNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// A key from its 32-byte seed (RFC 8032 private key): from the configured key source
    /// (drawn at start, or derived from the dstack KMS), or the spec's vectors in tests.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key as 64 lowercase hex characters (no `0x`).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// The key's X25519 secret (RFC 7748 clamped, from SHA-512 of the seed as RFC 8032
    /// derives its scalar), for NEAR's `ed25519` E2EE suite only, which reuses this key by
    /// that protocol's design; it never leaves this crate.
    pub(crate) fn x25519_secret(&self) -> x25519_dalek::StaticSecret {
        use sha2::Digest;
        let mut seed = Zeroizing::new(self.key.to_bytes());
        let digest = Zeroizing::new(<[u8; 64]>::from(sha2::Sha512::digest(seed.as_ref())));
        seed.as_mut().fill(0);
        let mut scalar = Zeroizing::new([0u8; 32]);
        scalar.copy_from_slice(&digest[..32]);
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        x25519_dalek::StaticSecret::from(*scalar)
    }

    /// The 64-byte RFC 8032 signature of `message` (deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// Checks an Ed25519 signature given as hex (128 characters, no `0x`) over `message` under
/// a public key given as hex (64 characters, no `0x`). Strict RFC 8032 verification: a
/// non-canonical `S` or a small-order key is refused.
pub fn verify_hex(
    public_key_hex: &str,
    message: &[u8],
    signature_hex: &str,
) -> Result<(), Ed25519Error> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(public_key_hex, &mut key).map_err(|_| Ed25519Error::Encoding {
        what: "an Ed25519 public key",
        len: 64,
    })?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut signature).map_err(|_| Ed25519Error::Encoding {
        what: "an Ed25519 signature",
        len: 128,
    })?;
    verify(&key, message, &signature)
}

/// Checks an Ed25519 signature over `message` (strict RFC 8032 verification).
pub fn verify(
    public_key: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), Ed25519Error> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| Ed25519Error::BadKey)?;
    let signature = Signature::from_bytes(signature);
    key.verify_strict(message, &signature)
        .map_err(|_| Ed25519Error::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_8032_test_1_signs_as_published() {
        // RFC 8032 §7.1, TEST 1: empty message.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let signer = Ed25519Signer::from_seed(&seed);
        assert_eq!(
            signer.public_key_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let signature = signer.sign(b"");
        assert_eq!(
            hex::encode(signature),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(verify_hex(&signer.public_key_hex(), b"", &hex::encode(signature)).is_ok());
        assert_eq!(
            verify_hex(&signer.public_key_hex(), b"x", &hex::encode(signature)),
            Err(Ed25519Error::Mismatch)
        );
        assert!(matches!(
            verify_hex("zz", b"", &hex::encode(signature)),
            Err(Ed25519Error::Encoding { .. })
        ));
    }

    #[test]
    fn fresh_keys_differ_and_never_print_their_seed() {
        let seed = [0x42u8; 32];
        let rendered = format!("{:?}", Ed25519Signer::from_seed(&seed));
        assert!(!rendered.contains(&hex::encode(seed)));
        assert_ne!(
            Ed25519Signer::generate().public_key(),
            Ed25519Signer::generate().public_key()
        );
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<SigningKey>();
    }
}
