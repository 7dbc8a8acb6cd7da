//! Identifiers that cross the wire and must be validated before use: completion ids
//! (the key under which a signature is stored and looked up) and attestation nonces.
//!
//! Both parsers take untrusted text and never panic; what they accept is exactly what the
//! contract (docs/API.md §4 and §5) allows.

/// Longest completion id signet stores or looks up, in bytes.
pub const MAX_COMPLETION_ID_LEN: usize = 256;

/// Why a completion id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty.
    #[error("id is empty")]
    Empty,
    /// Longer than [`MAX_COMPLETION_ID_LEN`].
    #[error("id is longer than {MAX_COMPLETION_ID_LEN} bytes")]
    TooLong,
    /// A byte outside `[A-Za-z0-9._:-]`.
    #[error("id may contain only A-Z a-z 0-9 . _ : -")]
    BadCharacter,
}

/// A completion id: 1 to 256 bytes of `[A-Za-z0-9._:-]`.
///
/// The character set keeps ids safe in URL paths, logs and Redis keys without escaping:
/// no `/`, no `%`, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompletionId(String);

impl CompletionId {
    /// Validates `text` as a completion id.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        validate_id_bytes(text.as_bytes())?;
        Ok(CompletionId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CompletionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks the id rules on raw bytes (used before any allocation on hot paths).
pub fn validate_id_bytes(bytes: &[u8]) -> Result<(), IdError> {
    if bytes.is_empty() {
        return Err(IdError::Empty);
    }
    if bytes.len() > MAX_COMPLETION_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

/// Longest request id kept from a client's `x-request-id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// signet's own id for a request (32 hex chars, random): what the upstream, the response's
/// `x-request-id` and the logs carry. Never the client's: an upstream such as vLLM builds
/// the completion id from the request id it receives, and a client that could choose it
/// could collide with another client's completion.
pub fn new_request_id() -> String {
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The client's `x-request-id`, kept for the access log when it is 1 to 128 bytes of
/// `[A-Za-z0-9._:-]` (safe to log); `None` otherwise.
pub fn client_request_id(client_value: Option<&[u8]>) -> Option<String> {
    client_value
        .filter(|value| value.len() <= MAX_REQUEST_ID_LEN && validate_id_bytes(value).is_ok())
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Why a nonce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Not exactly 64 characters.
    #[error("nonce must be exactly 64 hex characters (32 bytes), got {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("nonce must be hexadecimal")]
    NotHex,
}

/// A 32-byte attestation nonce.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce(pub [u8; 32]);

impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Nonce {
    /// Parses exactly 64 hex characters, either case; no `0x` prefix, no whitespace.
    pub fn parse(text: &str) -> Result<Self, NonceError> {
        if text.len() != 64 {
            return Err(NonceError::Length(text.chars().count()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| NonceError::NotHex)?;
        Ok(Nonce(out))
    }

    /// Draws 32 bytes from the operating system's RNG.
    pub fn random() -> Self {
        use rand_core::{OsRng, RngCore};
        let mut out = [0u8; 32];
        OsRng.fill_bytes(&mut out);
        Nonce(out)
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_contract() {
        assert!(CompletionId::parse("chat-7ee2a39468ce48d7b2284783f21782b0").is_ok());
        assert!(CompletionId::parse("cmpl.a_b:c-d").is_ok());
        assert!(CompletionId::parse(&"a".repeat(256)).is_ok());
        assert_eq!(CompletionId::parse(&"a".repeat(257)), Err(IdError::TooLong));
        assert_eq!(CompletionId::parse(""), Err(IdError::Empty));
        for hostile in [
            "../etc/passwd",
            "a/b",
            "a%2Fb",
            "a b",
            "a\nb",
            "a\u{0}b",
            "é",
        ] {
            assert_eq!(
                CompletionId::parse(hostile),
                Err(IdError::BadCharacter),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn client_request_ids_are_kept_only_when_well_formed_and_signets_are_drawn() {
        assert_eq!(
            client_request_id(Some(b"req-123.a:b_c")).as_deref(),
            Some("req-123.a:b_c")
        );
        for hostile in [&b"a b"[..], b"a\nb", b"", &[b'x'; 129], b"\xff"] {
            assert_eq!(client_request_id(Some(hostile)), None, "{hostile:?}");
        }
        let drawn = new_request_id();
        assert_eq!(drawn.len(), 32);
        assert!(drawn.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn nonces_are_exactly_64_hex_chars() {
        let upper = "AB".repeat(32);
        let parsed = Nonce::parse(&upper).unwrap();
        assert_eq!(parsed.to_hex(), "ab".repeat(32));
        assert_eq!(Nonce::parse("ab"), Err(NonceError::Length(2)));
        assert_eq!(Nonce::parse(&"zz".repeat(32)), Err(NonceError::NotHex));
        assert_eq!(
            Nonce::parse(&format!("0x{}", "ab".repeat(31))),
            Err(NonceError::NotHex)
        );
        assert_eq!(Nonce::parse(&"é".repeat(32)), Err(NonceError::NotHex));
        assert_eq!(Nonce::parse(&"é".repeat(10)), Err(NonceError::Length(10)));
        assert_ne!(Nonce::random(), Nonce::random());
    }
}
