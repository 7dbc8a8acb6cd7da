//! EIP-191 version 0x45 ("personal_sign") digests and the 65-byte r ‖ s ‖ v signature form
//! that Ethereum tools (etherscan, eth-account, ethers) read.

use k256::ecdsa::{RecoveryId, Signature};
use sha3::{Digest, Keccak256};

/// keccak256("\x19Ethereum Signed Message:\n" ‖ decimal byte length ‖ message), per EIP-191.
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(b"\x19Ethereum Signed Message:\n");
    hasher.update(message.len().to_string().as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// Why a signature text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureParseError {
    /// Not hexadecimal.
    #[error("signature is not hexadecimal")]
    NotHex,
    /// Not 65 bytes.
    #[error("signature must be 65 bytes (130 hex chars), got {0} bytes")]
    Length(usize),
    /// v is not 0, 1, 27 or 28.
    #[error("signature v must be 27 or 28 (or 0/1), got {0}")]
    RecoveryByte(u8),
    /// r or s is out of range.
    #[error("signature r/s out of range")]
    Scalar,
}

/// A recoverable secp256k1 signature: r(32) ‖ s(32) ‖ v(1), v = 27 or 28.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecoverableSignature([u8; 65]);

impl std::fmt::Debug for RecoverableSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl RecoverableSignature {
    pub(crate) fn from_parts(signature: &Signature, recovery_id: RecoveryId) -> Self {
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&signature.to_bytes());
        out[64] = 27 + recovery_id.to_byte();
        RecoverableSignature(out)
    }

    /// Wraps raw bytes as stored; `v` is normalised to 27/28.
    pub fn from_bytes(bytes: [u8; 65]) -> Result<Self, SignatureParseError> {
        let mut bytes = bytes;
        bytes[64] = match bytes[64] {
            0 | 27 => 27,
            1 | 28 => 28,
            other => return Err(SignatureParseError::RecoveryByte(other)),
        };
        Ok(RecoverableSignature(bytes))
    }

    /// Parses 130 hex chars, with or without `0x` (the seed's sample has none).
    pub fn parse(text: &str) -> Result<Self, SignatureParseError> {
        let body = text.trim();
        let body = body
            .strip_prefix("0x")
            .or_else(|| body.strip_prefix("0X"))
            .unwrap_or(body);
        let bytes = hex::decode(body).map_err(|_| SignatureParseError::NotHex)?;
        let array: [u8; 65] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SignatureParseError::Length(bytes.len()))?;
        Self::from_bytes(array)
    }

    /// The raw 65 bytes.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }

    /// `0x` + 130 lowercase hex chars.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(132);
        out.push_str("0x");
        out.push_str(&hex::encode(self.0));
        out
    }

    pub(crate) fn to_parts(self) -> Result<(Signature, RecoveryId), SignatureParseError> {
        let signature =
            Signature::from_slice(&self.0[..64]).map_err(|_| SignatureParseError::Scalar)?;
        let recovery_id = RecoveryId::from_byte(self.0[64].saturating_sub(27))
            .ok_or(SignatureParseError::RecoveryByte(self.0[64]))?;
        Ok((signature, recovery_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_uses_the_decimal_byte_length() {
        // "I♥SF" is 6 bytes in UTF-8 but 4 characters.
        let mut manual = Keccak256::new();
        manual.update(b"\x19Ethereum Signed Message:\n6I\xe2\x99\xa5SF");
        let expected: [u8; 32] = manual.finalize().into();
        assert_eq!(eip191_hash("I♥SF".as_bytes()), expected);
    }

    #[test]
    fn parse_accepts_both_prefix_forms_and_normalises_v() {
        let raw = format!("{}{}", "11".repeat(64), "00");
        let bare = RecoverableSignature::parse(&raw).unwrap();
        assert_eq!(bare.as_bytes()[64], 27);
        let prefixed = RecoverableSignature::parse(&format!("0x{raw}")).unwrap();
        assert_eq!(bare, prefixed);
        assert!(prefixed.to_hex().starts_with("0x1111"));
        assert_eq!(prefixed.to_hex().len(), 132);
    }

    #[test]
    fn parse_refuses_malformed_text() {
        assert_eq!(
            RecoverableSignature::parse("0x1234"),
            Err(SignatureParseError::Length(2))
        );
        assert_eq!(
            RecoverableSignature::parse(&"zz".repeat(65)),
            Err(SignatureParseError::NotHex)
        );
        assert_eq!(
            RecoverableSignature::parse(&format!("{}{}", "11".repeat(64), "05")),
            Err(SignatureParseError::RecoveryByte(5))
        );
    }
}
