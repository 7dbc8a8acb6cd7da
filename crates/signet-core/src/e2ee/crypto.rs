//! The two E2EE v2 cipher suites (spec §4): ECDH between a fresh ephemeral key and the
//! recipient's static key, HKDF-SHA256 (no salt) over the shared secret with the suite's
//! `info`, AES-256-GCM under that key with a fresh 12-byte nonce and the field's AAD. A
//! field on the wire is `hex(ephemeral_public_key || nonce || ciphertext || tag)`.
//!
//! Also the service's own E2EE keys: a role of their own, never the receipt or signing key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

/// AES-GCM nonce length.
const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

/// An E2EE v2 cipher suite, named by the keyset entry's `algo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// `x25519-aes-256-gcm-hkdf-sha256`.
    X25519,
    /// `secp256k1-aes-256-gcm-hkdf-sha256`.
    Secp256k1,
}

impl Suite {
    /// The keyset `algo` (and `X-E2EE-Algo`).
    pub fn algo(self) -> &'static str {
        match self {
            Suite::X25519 => super::ALGO_X25519,
            Suite::Secp256k1 => super::ALGO_SECP256K1,
        }
    }

    /// The suite of an `algo`, if it is one of the two.
    pub fn from_algo(algo: &str) -> Option<Self> {
        match algo {
            super::ALGO_X25519 => Some(Suite::X25519),
            super::ALGO_SECP256K1 => Some(Suite::Secp256k1),
            _ => None,
        }
    }

    fn info(self) -> &'static [u8] {
        match self {
            Suite::X25519 => b"aci.e2ee.v2.x25519",
            Suite::Secp256k1 => b"aci.e2ee.v2.secp256k1",
        }
    }

    fn ephemeral_len(self) -> usize {
        match self {
            Suite::X25519 => 32,
            Suite::Secp256k1 => 65,
        }
    }
}

/// A public key of one suite, parsed and checked.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An X25519 public key.
    X25519([u8; 32]),
    /// A secp256k1 point (never the identity).
    Secp256k1(k256::PublicKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// A key that is not valid for its suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid public key for the suite")]
pub struct BadKey;

impl PublicKey {
    /// Parses a key in the spec's encoding: hex with an optional `0x`; X25519 32 bytes;
    /// secp256k1 SEC1 (65 uncompressed, 33 compressed) or the 64 bytes without `0x04`.
    pub fn parse(suite: Suite, text: &str) -> Result<Self, BadKey> {
        let text = text.strip_prefix("0x").unwrap_or(text);
        let bytes = hex::decode(text).map_err(|_| BadKey)?;
        match suite {
            Suite::X25519 => {
                let key: [u8; 32] = bytes.try_into().map_err(|_| BadKey)?;
                Ok(PublicKey::X25519(key))
            }
            Suite::Secp256k1 => {
                let point = if bytes.len() == 64 {
                    let mut sec1 = Vec::with_capacity(65);
                    sec1.push(0x04);
                    sec1.extend_from_slice(&bytes);
                    k256::PublicKey::from_sec1_bytes(&sec1)
                } else {
                    k256::PublicKey::from_sec1_bytes(&bytes)
                };
                point.map(PublicKey::Secp256k1).map_err(|_| BadKey)
            }
        }
    }

    /// The suite this key is for.
    pub fn suite(&self) -> Suite {
        match self {
            PublicKey::X25519(_) => Suite::X25519,
            PublicKey::Secp256k1(_) => Suite::Secp256k1,
        }
    }

    /// Lowercase hex: X25519 raw, secp256k1 65-byte uncompressed SEC1 (as published).
    pub fn to_hex(&self) -> String {
        match self {
            PublicKey::X25519(key) => hex::encode(key),
            PublicKey::Secp256k1(point) => hex::encode(point.to_encoded_point(false).as_bytes()),
        }
    }
}

/// The service's E2EE secret for one suite.
pub enum SecretKey {
    /// X25519 static secret.
    X25519(x25519_dalek::StaticSecret),
    /// secp256k1 secret scalar.
    Secp256k1(k256::SecretKey),
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public_key().to_hex())
    }
}

impl SecretKey {
    /// A fresh key for `suite`, from the OS's randomness.
    pub fn generate(suite: Suite) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        loop {
            OsRng.fill_bytes(seed.as_mut());
            if let Some(key) = Self::from_seed(suite, &seed) {
                return key;
            }
        }
    }

    /// The key whose secret is these 32 bytes (`None`: not a valid secp256k1 scalar).
    pub fn from_seed(suite: Suite, seed: &[u8; 32]) -> Option<Self> {
        match suite {
            Suite::X25519 => Some(SecretKey::X25519(x25519_dalek::StaticSecret::from(*seed))),
            Suite::Secp256k1 => k256::SecretKey::from_slice(seed)
                .ok()
                .map(SecretKey::Secp256k1),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        match self {
            SecretKey::X25519(secret) => {
                PublicKey::X25519(x25519_dalek::PublicKey::from(secret).to_bytes())
            }
            SecretKey::Secp256k1(secret) => PublicKey::Secp256k1(secret.public_key()),
        }
    }

    fn suite(&self) -> Suite {
        match self {
            SecretKey::X25519(_) => Suite::X25519,
            SecretKey::Secp256k1(_) => Suite::Secp256k1,
        }
    }
}

/// Why a field did not open (one kind to the client: no oracle on which step failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ciphertext is malformed or does not authenticate")]
pub struct OpenError;

fn derive_key(suite: Suite, shared: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, shared).expand(suite.info(), key.as_mut());
    key
}

/// ECDH of our secret with their public key: the raw X25519 output or the x-coordinate
/// of the secp256k1 point. `None`: an all-zero X25519 output (a low-order point).
fn agree(secret: &SecretKey, public: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    match secret {
        SecretKey::X25519(secret) => {
            let public: [u8; 32] = public.try_into().ok()?;
            let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(public));
            shared
                .was_contributory()
                .then(|| Zeroizing::new(shared.as_bytes().to_vec()))
        }
        SecretKey::Secp256k1(secret) => {
            let public = k256::PublicKey::from_sec1_bytes(public).ok()?;
            let shared = k256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
            Some(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
        }
    }
}

/// Opens one field addressed to `secret`: `field_hex` as on the wire, `aad` its JCS AAD.
pub fn open(secret: &SecretKey, field_hex: &str, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
    let suite = secret.suite();
    let bytes = hex::decode(field_hex).map_err(|_| OpenError)?;
    let eph_len = suite.ephemeral_len();
    if bytes.len() < eph_len + NONCE_LEN + TAG_LEN {
        return Err(OpenError);
    }
    let (ephemeral, rest) = bytes.split_at(eph_len);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let shared = agree(secret, ephemeral).ok_or(OpenError)?;
    let key = derive_key(suite, &shared);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| OpenError)?;
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map_err(|_| OpenError)
}

/// Seals `plaintext` to `recipient` under `aad`: a fresh ephemeral key and nonce, the
/// field as lowercase hex.
pub fn seal(recipient: &PublicKey, plaintext: &[u8], aad: &[u8]) -> String {
    let suite = recipient.suite();
    let ephemeral = SecretKey::generate(suite);
    let ephemeral_public = match ephemeral.public_key() {
        PublicKey::X25519(key) => key.to_vec(),
        PublicKey::Secp256k1(point) => point.to_encoded_point(false).as_bytes().to_vec(),
    };
    let recipient_bytes = match recipient {
        PublicKey::X25519(key) => key.to_vec(),
        PublicKey::Secp256k1(point) => point.to_encoded_point(false).as_bytes().to_vec(),
    };
    // A low-order X25519 client key gives no secret: the key check refuses those first
    // (`PublicKey::is_usable`); an all-zero key here would only make an unreadable field.
    let shared = agree(&ephemeral, &recipient_bytes).unwrap_or_default();
    let key = derive_key(suite, &shared);
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sealed = Aes256Gcm::new_from_slice(key.as_ref())
        .ok()
        .and_then(|cipher| {
            cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: plaintext,
                        aad,
                    },
                )
                .ok()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(ephemeral_public.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(&ephemeral_public);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    hex::encode(out)
}

impl PublicKey {
    /// Whether fields can be sealed to this key: an X25519 key of small order would make
    /// the shared secret all zeros (anyone could read the field).
    pub fn is_usable(&self) -> bool {
        match self {
            PublicKey::X25519(key) => {
                let probe = x25519_dalek::StaticSecret::from([7u8; 32]);
                probe
                    .diffie_hellman(&x25519_dalek::PublicKey::from(*key))
                    .was_contributory()
            }
            PublicKey::Secp256k1(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_vector_service_key_derives_its_public_key() {
        let key = SecretKey::from_seed(Suite::X25519, &[3u8; 32]).unwrap();
        assert_eq!(
            key.public_key().to_hex(),
            "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22"
        );
    }

    #[test]
    fn a_sealed_field_opens_with_the_right_key_and_aad_only() {
        for suite in [Suite::X25519, Suite::Secp256k1] {
            let service = SecretKey::generate(suite);
            let field = seal(&service.public_key(), b"hello", b"aad");
            assert_eq!(open(&service, &field, b"aad").unwrap(), b"hello");
            assert_eq!(open(&service, &field, b"other"), Err(OpenError));
            let stranger = SecretKey::generate(suite);
            assert_eq!(open(&stranger, &field, b"aad"), Err(OpenError));
            let mut flipped = field.clone().into_bytes();
            let last = flipped.len() - 1;
            flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
            let flipped = String::from_utf8(flipped).unwrap();
            assert_eq!(open(&service, &flipped, b"aad"), Err(OpenError));
            assert_eq!(open(&service, "zz", b"aad"), Err(OpenError));
            assert_eq!(open(&service, "00", b"aad"), Err(OpenError));
            // Fresh ephemeral key and nonce per field.
            assert_ne!(field, seal(&service.public_key(), b"hello", b"aad"));
        }
    }

    #[test]
    fn secp256k1_keys_parse_in_every_accepted_form_as_the_same_key() {
        let secret = SecretKey::generate(Suite::Secp256k1);
        let full = secret.public_key().to_hex();
        let bare = &full[2..];
        let prefixed = format!("0x{full}");
        for text in [full.as_str(), bare, prefixed.as_str()] {
            assert_eq!(
                PublicKey::parse(Suite::Secp256k1, text).unwrap(),
                secret.public_key()
            );
        }
        assert_eq!(PublicKey::parse(Suite::Secp256k1, "04abcd"), Err(BadKey));
        assert_eq!(PublicKey::parse(Suite::X25519, "00"), Err(BadKey));
        assert_eq!(PublicKey::parse(Suite::X25519, "xyz"), Err(BadKey));
    }

    #[test]
    fn a_low_order_x25519_key_is_not_usable() {
        assert!(!PublicKey::X25519([0u8; 32]).is_usable());
        assert!(SecretKey::generate(Suite::X25519).public_key().is_usable());
    }
}
