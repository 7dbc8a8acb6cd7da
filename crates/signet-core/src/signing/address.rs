//! Ethereum addresses: derivation from a secp256k1 public key and EIP-55 checksummed text.

use sha3::{Digest, Keccak256};

/// Why a text is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not hexadecimal.
    #[error("not hexadecimal")]
    NotHex,
    /// Wrong number of bytes.
    #[error("wrong length")]
    Length,
    /// Mixed case that does not match the EIP-55 checksum.
    #[error("EIP-55 checksum mismatch")]
    Checksum,
    /// The bytes are not a point on secp256k1.
    #[error("not a point on secp256k1")]
    NotOnCurve,
}

/// A 20-byte Ethereum address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(pub [u8; 20]);

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl Address {
    /// The last 20 bytes of keccak256 of the uncompressed point without its `04` prefix.
    pub fn from_public_key(xy: &[u8; 64]) -> Self {
        let hash = Keccak256::digest(xy);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }

    /// `0x` + EIP-55 mixed-case hex: a letter is upper case where the matching nibble of
    /// keccak256(lowercase hex) is 8 or more.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let byte = hash[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }

    /// Parses `0x`-prefixed (or bare) hex. All-lower or all-upper case is accepted as is;
    /// mixed case must carry a valid EIP-55 checksum.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let body = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if body.len() != 40 {
            return Err(AddressError::Length);
        }
        let bytes = hex::decode(body).map_err(|_| AddressError::NotHex)?;
        let mut out = [0u8; 20];
        out.copy_from_slice(&bytes);
        let address = Address(out);
        let has_lower = body.chars().any(|c| c.is_ascii_lowercase());
        let has_upper = body.chars().any(|c| c.is_ascii_uppercase());
        if has_lower && has_upper && address.to_checksum()[2..] != *body {
            return Err(AddressError::Checksum);
        }
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_vectors_from_the_eip() {
        for text in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let parsed = Address::parse(text).unwrap();
            assert_eq!(parsed.to_checksum(), text);
        }
    }

    #[test]
    fn parse_rejects_bad_checksums_and_shapes() {
        assert_eq!(
            Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            Err(AddressError::Checksum)
        );
        assert_eq!(Address::parse("0x1234"), Err(AddressError::Length));
        assert_eq!(
            Address::parse("0xzzaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            Err(AddressError::NotHex)
        );
        assert!(Address::parse("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_ok());
    }
}
