//! NEAR AI's E2EE wire format (nearai/inference-proxy, the format Brave's browser speaks):
//! `X-Signing-Algo: ecdsa|ed25519` and `X-Client-Pub-Key`, with `X-Encryption-Version: 2`
//! for `ed25519`; optionally `X-Model-Pub-Key`, which must then be the attested signing key.
//! Fields carry no AAD and there is no nonce or timestamp: the format has no replay
//! protection and does not bind a ciphertext to its place in the body.
//!
//! - `ecdsa`: ECDH of a fresh secp256k1 key with the recipient's (the x-coordinate), HKDF-SHA256
//!   (no salt, info `ecdsa_encryption`), AES-256-GCM; a field is
//!   `hex(ephemeral_pub(65, uncompressed) ‖ nonce(12) ‖ ciphertext ‖ tag(16))`.
//! - `ed25519`: the Ed25519 keys taken to X25519 (RFC 7748 birational map; the secret from
//!   SHA-512 of the seed, clamped), ECDH with a fresh X25519 key, HKDF-SHA256 (no salt, info
//!   `ed25519_encryption`), XChaCha20-Poly1305; a field is
//!   `hex(ephemeral_pub(32) ‖ nonce(24) ‖ ciphertext ‖ tag(16))`.
//!
//! The service keys are the legacy report's signing keys, by that protocol's design: the
//! secp256k1 key that signs the EIP-191 texts, and the legacy Ed25519 key.

use super::crypto::OpenError;
use super::{E2eeError, Endpoint};
use crate::signing::Signer;
use crate::signing::ed25519::Ed25519Signer;
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use hkdf::Hkdf;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

/// A NEAR suite, named by `X-Signing-Algo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearSuite {
    /// `ecdsa`: secp256k1, AES-256-GCM.
    Ecdsa,
    /// `ed25519`: X25519 from Ed25519, XChaCha20-Poly1305.
    Ed25519,
}

impl NearSuite {
    /// The `X-Signing-Algo` value (and `X-E2EE-Algo` on the answer).
    pub fn name(self) -> &'static str {
        match self {
            NearSuite::Ecdsa => "ecdsa",
            NearSuite::Ed25519 => "ed25519",
        }
    }

    fn info(self) -> &'static [u8] {
        match self {
            NearSuite::Ecdsa => b"ecdsa_encryption",
            NearSuite::Ed25519 => b"ed25519_encryption",
        }
    }
}

/// The service's side: the signing keys, as NEAR's format uses them.
pub struct NearKeys {
    ecdsa: k256::SecretKey,
    x25519: x25519_dalek::StaticSecret,
    ecdsa_public: k256::PublicKey,
    ed25519_public: [u8; 32],
}

impl std::fmt::Debug for NearKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearKeys")
            .field("ed25519_public", &hex::encode(self.ed25519_public))
            .finish_non_exhaustive()
    }
}

impl NearKeys {
    /// The keys of the legacy report: `signer` (ecdsa) and `ed25519`.
    pub fn from_signers(signer: &Signer, ed25519: &Ed25519Signer) -> Self {
        let ecdsa = k256::SecretKey::from(*signer.secret_scalar());
        Self {
            ecdsa_public: ecdsa.public_key(),
            ecdsa,
            x25519: ed25519.x25519_secret(),
            ed25519_public: ed25519.public_key(),
        }
    }

    /// The X25519 public key the `ed25519` suite encrypts to (what a client derives from
    /// the report's Ed25519 key).
    pub fn x25519_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.x25519).to_bytes()
    }
}

/// A client key of one NEAR suite.
#[derive(Clone, PartialEq, Eq)]
enum ClientKey {
    Secp256k1(k256::PublicKey),
    /// The client's Ed25519 key, taken to X25519.
    X25519([u8; 32]),
}

/// A checked NEAR-format request.
#[derive(Clone, PartialEq, Eq)]
pub struct NearSession {
    /// The suite.
    pub suite: NearSuite,
    client: ClientKey,
    /// Which fields.
    pub endpoint: Endpoint,
}

impl std::fmt::Debug for NearSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearSession")
            .field("suite", &self.suite)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn secp256k1_key(text: &str) -> Option<k256::PublicKey> {
    let bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text)).ok()?;
    if bytes.len() == 64 {
        let mut sec1 = vec![0x04];
        sec1.extend_from_slice(&bytes);
        return k256::PublicKey::from_sec1_bytes(&sec1).ok();
    }
    (bytes.len() == 65)
        .then(|| k256::PublicKey::from_sec1_bytes(&bytes).ok())
        .flatten()
}

fn ed25519_key(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text)).ok()?;
    bytes.try_into().ok()
}

/// Checks a NEAR-format request's headers (`signing_algo` and `client_pub_key` present).
pub fn check(
    keys: &NearKeys,
    signing_algo: &str,
    client_pub_key: &str,
    encryption_version: Option<&str>,
    model_pub_key: Option<&str>,
    path: &str,
) -> Result<NearSession, E2eeError> {
    let suite = match signing_algo.to_ascii_lowercase().as_str() {
        "ecdsa" => NearSuite::Ecdsa,
        "ed25519" => NearSuite::Ed25519,
        _ => return Err(E2eeError::InvalidVersion),
    };
    // ed25519 is versioned (v1, NaCl box, is not served); ecdsa has one form.
    match (suite, encryption_version) {
        (NearSuite::Ed25519, Some("2")) | (NearSuite::Ecdsa, None | Some("2")) => {}
        _ => return Err(E2eeError::InvalidVersion),
    }
    let endpoint = Endpoint::of_path(path).ok_or(E2eeError::UnsupportedEndpoint)?;
    let client = match suite {
        NearSuite::Ecdsa => secp256k1_key(client_pub_key).map(ClientKey::Secp256k1),
        NearSuite::Ed25519 => ed25519_key(client_pub_key)
            .and_then(|key| ed25519_dalek::VerifyingKey::from_bytes(&key).ok())
            .map(|key| key.to_montgomery().to_bytes())
            .filter(|key| {
                // A small-order key would make every field readable by anyone.
                crate::e2ee::crypto::PublicKey::X25519(*key).is_usable()
            })
            .map(ClientKey::X25519),
    }
    .ok_or(E2eeError::InvalidPublicKey("X-Client-Pub-Key"))?;
    if let Some(model) = model_pub_key {
        let matches = match suite {
            NearSuite::Ecdsa => secp256k1_key(model) == Some(keys.ecdsa_public),
            NearSuite::Ed25519 => ed25519_key(model) == Some(keys.ed25519_public),
        };
        if !matches {
            return Err(E2eeError::ModelKeyMismatch);
        }
    }
    Ok(NearSession {
        suite,
        client,
        endpoint,
    })
}

fn derive(suite: NearSuite, shared: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes: far below HKDF-SHA256's limit, expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, shared).expand(suite.info(), key.as_mut());
    key
}

/// A recipient's secret: the service's keys, or a client's.
enum Recipient<'a> {
    Secp256k1(&'a k256::SecretKey),
    X25519(&'a x25519_dalek::StaticSecret),
}

fn open_with(recipient: Recipient<'_>, field_hex: &str) -> Result<Vec<u8>, OpenError> {
    let bytes = hex::decode(field_hex).map_err(|_| OpenError)?;
    match recipient {
        Recipient::Secp256k1(secret) => {
            if bytes.len() < 65 + 12 + 16 {
                return Err(OpenError);
            }
            let (ephemeral, rest) = bytes.split_at(65);
            let (nonce, sealed) = rest.split_at(12);
            let ephemeral = k256::PublicKey::from_sec1_bytes(ephemeral).map_err(|_| OpenError)?;
            let shared =
                k256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), ephemeral.as_affine());
            let key = derive(NearSuite::Ecdsa, shared.raw_secret_bytes());
            Aes256Gcm::new_from_slice(key.as_ref())
                .map_err(|_| OpenError)?
                .decrypt(aes_gcm::Nonce::from_slice(nonce), sealed)
                .map_err(|_| OpenError)
        }
        Recipient::X25519(secret) => {
            if bytes.len() < 32 + 24 + 16 {
                return Err(OpenError);
            }
            let (ephemeral, rest) = bytes.split_at(32);
            let (nonce, sealed) = rest.split_at(24);
            let ephemeral: [u8; 32] = ephemeral.try_into().map_err(|_| OpenError)?;
            let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral));
            if !shared.was_contributory() {
                return Err(OpenError);
            }
            let key = derive(NearSuite::Ed25519, shared.as_bytes());
            XChaCha20Poly1305::new_from_slice(key.as_ref())
                .map_err(|_| OpenError)?
                .decrypt(chacha20poly1305::XNonce::from_slice(nonce), sealed)
                .map_err(|_| OpenError)
        }
    }
}

fn seal_to(recipient: &ClientKey, plaintext: &[u8]) -> String {
    let mut out = Vec::new();
    match recipient {
        ClientKey::Secp256k1(public) => {
            let ephemeral = k256::SecretKey::random(&mut OsRng);
            let shared =
                k256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), public.as_affine());
            let key = derive(NearSuite::Ecdsa, shared.raw_secret_bytes());
            let mut nonce = [0u8; 12];
            OsRng.fill_bytes(&mut nonce);
            let sealed = Aes256Gcm::new_from_slice(key.as_ref())
                .ok()
                .and_then(|c| {
                    c.encrypt(aes_gcm::Nonce::from_slice(&nonce), plaintext)
                        .ok()
                })
                .unwrap_or_default();
            out.extend_from_slice(ephemeral.public_key().to_encoded_point(false).as_bytes());
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&sealed);
        }
        ClientKey::X25519(public) => {
            let mut seed = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(seed.as_mut());
            let ephemeral = x25519_dalek::StaticSecret::from(*seed);
            let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
            let key = derive(NearSuite::Ed25519, shared.as_bytes());
            let mut nonce = [0u8; 24];
            OsRng.fill_bytes(&mut nonce);
            let sealed = XChaCha20Poly1305::new_from_slice(key.as_ref())
                .ok()
                .and_then(|c| {
                    c.encrypt(chacha20poly1305::XNonce::from_slice(&nonce), plaintext)
                        .ok()
                })
                .unwrap_or_default();
            out.extend_from_slice(x25519_dalek::PublicKey::from(&ephemeral).as_bytes());
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&sealed);
        }
    }
    hex::encode(out)
}

/// Opens a request field encrypted to the service.
pub fn open(keys: &NearKeys, session: &NearSession, field_hex: &str) -> Result<Vec<u8>, OpenError> {
    match session.suite {
        NearSuite::Ecdsa => open_with(Recipient::Secp256k1(&keys.ecdsa), field_hex),
        NearSuite::Ed25519 => open_with(Recipient::X25519(&keys.x25519), field_hex),
    }
}

/// Seals a response field to the client.
pub fn seal(session: &NearSession, plaintext: &[u8]) -> String {
    seal_to(&session.client, plaintext)
}

/// The client's side of NEAR's format (tests, tools): a fresh key pair, fields sealed to
/// the service's report key and answers opened.
pub struct NearClient {
    suite: NearSuite,
    ecdsa: k256::SecretKey,
    ed25519: Ed25519Signer,
}

impl NearClient {
    /// A fresh client of `suite`.
    pub fn generate(suite: NearSuite) -> Self {
        Self {
            suite,
            ecdsa: k256::SecretKey::random(&mut OsRng),
            ed25519: Ed25519Signer::generate(),
        }
    }

    /// `X-Client-Pub-Key`: secp256k1 uncompressed (130 hex), or the Ed25519 key (64 hex).
    pub fn public_key_hex(&self) -> String {
        match self.suite {
            NearSuite::Ecdsa => {
                hex::encode(self.ecdsa.public_key().to_encoded_point(false).as_bytes())
            }
            NearSuite::Ed25519 => self.ed25519.public_key_hex(),
        }
    }

    /// Seals `plaintext` to the service key of the legacy report (`signing_public_key`).
    pub fn seal_to_service(&self, service_public_hex: &str, plaintext: &[u8]) -> Option<String> {
        let recipient = match self.suite {
            NearSuite::Ecdsa => ClientKey::Secp256k1(secp256k1_key(service_public_hex)?),
            NearSuite::Ed25519 => ClientKey::X25519(
                ed25519_dalek::VerifyingKey::from_bytes(&ed25519_key(service_public_hex)?)
                    .ok()?
                    .to_montgomery()
                    .to_bytes(),
            ),
        };
        Some(seal_to(&recipient, plaintext))
    }

    /// Opens a response field sealed to this client.
    pub fn open(&self, field_hex: &str) -> Option<Vec<u8>> {
        match self.suite {
            NearSuite::Ecdsa => open_with(Recipient::Secp256k1(&self.ecdsa), field_hex).ok(),
            NearSuite::Ed25519 => {
                let secret = self.ed25519.x25519_secret();
                open_with(Recipient::X25519(&secret), field_hex).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 test 1's seed; its X25519 forms as libsodium's
    /// `crypto_sign_ed25519_{sk,pk}_to_curve25519` compute them.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    fn keys() -> NearKeys {
        let seed: [u8; 32] = hex::decode(SEED).unwrap().try_into().unwrap();
        NearKeys::from_signers(&Signer::generate(), &Ed25519Signer::from_seed(&seed))
    }

    #[test]
    fn the_ed25519_key_converts_to_x25519_as_libsodium_does() {
        let keys = keys();
        assert_eq!(
            hex::encode(keys.x25519.to_bytes()),
            "307c83864f2833cb427a2ef1c00a013cfdff2768d980c0a3a520f006904de94f"
        );
        assert_eq!(
            hex::encode(keys.x25519_public()),
            "d85e07ec22b0ad881537c2f44d662d1a143cf830c57aca4305d85c7a90f6b62e"
        );
        // The same map from the public side, as a client computes it.
        let edwards = ed25519_dalek::VerifyingKey::from_bytes(&keys.ed25519_public).unwrap();
        assert_eq!(edwards.to_montgomery().to_bytes(), keys.x25519_public());
    }

    /// A session whose client key is the service's own (so a sealed field opens here).
    fn self_session(keys: &NearKeys, suite: NearSuite) -> NearSession {
        let client = match suite {
            NearSuite::Ecdsa => hex::encode(keys.ecdsa_public.to_encoded_point(false).as_bytes()),
            NearSuite::Ed25519 => hex::encode(keys.ed25519_public),
        };
        let version = (suite == NearSuite::Ed25519).then_some("2");
        check(
            keys,
            suite.name(),
            &client,
            version,
            None,
            "/v1/chat/completions",
        )
        .unwrap()
    }

    #[test]
    fn fields_round_trip_in_both_suites_and_tampering_fails() {
        let keys = keys();
        for suite in [NearSuite::Ecdsa, NearSuite::Ed25519] {
            let session = self_session(&keys, suite);
            let field = seal(&session, b"hello");
            // A client's side: sealed to the service's report key, opened by the service.
            let client = NearClient::generate(suite);
            let service_hex = match suite {
                NearSuite::Ecdsa => {
                    hex::encode(&keys.ecdsa_public.to_encoded_point(false).as_bytes()[1..])
                }
                NearSuite::Ed25519 => hex::encode(keys.ed25519_public),
            };
            let request = client.seal_to_service(&service_hex, b"prompt").unwrap();
            assert_eq!(open(&keys, &session, &request).unwrap(), b"prompt");
            let client_session = check(
                &keys,
                suite.name(),
                &client.public_key_hex(),
                (suite == NearSuite::Ed25519).then_some("2"),
                None,
                "/v1/chat/completions",
            )
            .unwrap();
            assert_eq!(
                client.open(&seal(&client_session, b"answer")).unwrap(),
                b"answer"
            );
            let eph_len = if suite == NearSuite::Ecdsa { 65 } else { 32 };
            let nonce_len = if suite == NearSuite::Ecdsa { 12 } else { 24 };
            assert_eq!(field.len(), 2 * (eph_len + nonce_len + 5 + 16));
            assert_eq!(open(&keys, &session, &field).unwrap(), b"hello");
            let mut tampered = field.into_bytes();
            let last = tampered.len() - 1;
            tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
            assert!(open(&keys, &session, std::str::from_utf8(&tampered).unwrap()).is_err());
            assert!(open(&keys, &session, "00").is_err());
        }
    }

    #[test]
    fn header_faults_have_their_error_types() {
        let keys = keys();
        let ed = hex::encode(keys.ed25519_public);
        let path = "/v1/chat/completions";
        let code =
            |algo: &str, key: &str, version: Option<&str>, model: Option<&str>, path: &str| {
                check(&keys, algo, key, version, model, path)
                    .unwrap_err()
                    .code()
            };
        assert_eq!(
            code("rsa", &ed, Some("2"), None, path),
            "e2ee_invalid_version"
        );
        assert_eq!(
            code("ed25519", &ed, None, None, path),
            "e2ee_invalid_version"
        );
        assert_eq!(
            code("ed25519", &ed, Some("1"), None, path),
            "e2ee_invalid_version"
        );
        assert_eq!(
            code("ed25519", "abcd", Some("2"), None, path),
            "e2ee_invalid_public_key"
        );
        assert_eq!(
            code("ecdsa", &ed, None, None, path),
            "e2ee_invalid_public_key"
        );
        let other = hex::encode(Ed25519Signer::generate().public_key());
        assert_eq!(
            code("ed25519", &ed, Some("2"), Some(&other), path),
            "e2ee_model_key_mismatch"
        );
        assert_eq!(
            code("ed25519", &ed, Some("2"), None, "/v1/responses"),
            "e2ee_unsupported_endpoint"
        );
        assert!(check(&keys, "ED25519", &ed, Some("2"), Some(&ed), path).is_ok());
    }
}
