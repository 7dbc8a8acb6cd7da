//! The layout of a TDX quote as the gateway's binding check reads it, for quote versions 4
//! and 5 (Intel TDX DCAP Quote Generation Library API, appendix "Quote Format": v4 and v5).
//!
//! ```text
//! v4: header (48) ‖ TD report 1.0 body (584)                          ‖ signature data
//! v5: header (48) ‖ body type (u16) ‖ body size (u32) ‖ body (size) ‖ signature data
//! signature data: length (u32) ‖ ECDSA-P256 signature (64) ‖ attestation key (64) ‖
//!                 certification data type (u16) ‖ size (u32) ‖ data
//! ```
//!
//! The quoting enclave signs everything before the signature data with the attestation key:
//! 632 bytes for v4; for v5 the descriptor is signed too, so 638 bytes with a TD report 1.0
//! body and 702 with a 1.5 body. (A parser that checks a v5 signature over header ‖ body,
//! 696 bytes, refuses every real v5 quote.) report_data sits at offset 520 of every TD report
//! body (1.5 only appends fields), so at byte 568 of a v4 quote and 574 of a v5 one.
//!
//! This module finds those pieces, says precisely what is wrong when it cannot, and checks the
//! attestation key's signature so a quote damaged on its way from the provider is caught. It
//! does not judge whether the attestation key is Intel's: that is the client's chain check
//! (`signet verify`), which needs collateral the gateway does not have.

use p256::ecdsa::signature::Verifier;
use std::fmt;

/// Header length, the same in v4 and v5.
pub const HEADER_LEN: usize = 48;
/// The v5 body descriptor: body type (u16) and body size (u32).
pub const BODY_DESCRIPTOR_LEN: usize = 6;
/// Offset of report_data inside every TD report body.
pub const REPORT_DATA_IN_BODY: usize = 520;
/// TEE type of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Attestation key type 2: ECDSA-256 with P-256.
pub const ECDSA_P256: u16 = 2;

/// The TD report a quote carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdBody {
    /// TD report 1.0 (v4, or v5 body type 2): 584 bytes.
    Td10,
    /// TD report 1.5 (v5 body type 3): 648 bytes.
    Td15,
    /// TD report 1.5 with the service-TD extension (v5 body type 4): 885 bytes.
    Td15Ex,
}

impl TdBody {
    /// The body's length in bytes.
    pub fn size(self) -> usize {
        match self {
            TdBody::Td10 => 584,
            TdBody::Td15 => 648,
            TdBody::Td15Ex => 885,
        }
    }

    /// The v5 body type that announces this body.
    pub fn body_type(self) -> u16 {
        match self {
            TdBody::Td10 => 2,
            TdBody::Td15 => 3,
            TdBody::Td15Ex => 4,
        }
    }

    fn from_body_type(body_type: u16) -> Option<Self> {
        match body_type {
            2 => Some(TdBody::Td10),
            3 => Some(TdBody::Td15),
            4 => Some(TdBody::Td15Ex),
            _ => None,
        }
    }
}

impl fmt::Display for TdBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TdBody::Td10 => "TD report 1.0",
            TdBody::Td15 => "TD report 1.5",
            TdBody::Td15Ex => "TD report 1.5ex",
        })
    }
}

/// What is wrong with a quote, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// Fewer bytes than the 48-byte header.
    #[error("{} bytes is shorter than the 48-byte quote header", thousands(*.0))]
    NoHeader(usize),
    /// A version signet does not read.
    #[error("quote version {0} is not a TDX quote version (4 or 5)")]
    Version(u16),
    /// Not a TDX quote.
    #[error("v{version} quote: TEE type {tee_type:#x} is not TDX (0x81)")]
    TeeType {
        /// Header version.
        version: u16,
        /// The TEE type found.
        tee_type: u32,
    },
    /// An attestation key type other than ECDSA-256 with P-256.
    #[error("v{version} quote: attestation key type {key_type} is not ECDSA-P256 (2)")]
    KeyType {
        /// Header version.
        version: u16,
        /// The key type found.
        key_type: u16,
    },
    /// A v5 body type that is not a TD report.
    #[error(
        "v5 quote: body type {0} unknown (2: TD report 1.0, 3: TD report 1.5, 4: TD report 1.5ex)"
    )]
    BodyType(u16),
    /// A v5 body size that does not match its type.
    #[error("v5 quote: body type {} ({body}) says {} bytes; a {body} is {}", body.body_type(), thousands(*size as usize), thousands(body.size()))]
    BodySize {
        /// The body the type announces.
        body: TdBody,
        /// The size the descriptor gives.
        size: u32,
    },
    /// The quote ends before a part it must have.
    #[error("v{version} quote: {} bytes is shorter than the {} bytes of {what}", thousands(*len), thousands(*need))]
    Truncated {
        /// Header version.
        version: u16,
        /// The quote's length.
        len: usize,
        /// How many bytes the part needs the quote to have.
        need: usize,
        /// Which part.
        what: &'static str,
    },
    /// The attestation key is not a point on P-256.
    #[error("v{0} quote: the attestation key is not a P-256 public key")]
    AttestationKey(u16),
    /// The attestation key's signature does not cover the signed bytes.
    #[error("v{version} quote: the attestation key's signature over the {} signed bytes does not verify", thousands(*signed))]
    Signature {
        /// Header version.
        version: u16,
        /// How many bytes are signed.
        signed: usize,
    },
}

/// `1234` as `1,234`: quote sizes read more easily that way in a log line.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A TDX quote's parts, borrowed from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuote<'q> {
    /// Header version: 4 or 5.
    pub version: u16,
    /// The TD report the quote carries.
    pub body: TdBody,
    /// Offset of report_data in the quote.
    pub report_data_offset: usize,
    /// The 64 bytes of report_data.
    pub report_data: [u8; 64],
    /// Header, descriptor (v5) and body: what the attestation key signs.
    pub signed: &'q [u8],
    /// The ECDSA signature, r ‖ s.
    pub signature: [u8; 64],
    /// The attestation public key, x ‖ y.
    pub attestation_key: [u8; 64],
    /// Certification data type (6 on current quoting enclaves: QE report certification data).
    pub certification_type: u16,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let raw: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(raw))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

fn array_at<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

impl<'q> TdxQuote<'q> {
    /// Reads a v4 or v5 TDX quote. Bytes after the signature data are allowed (some quote
    /// services pad their output).
    pub fn parse(bytes: &'q [u8]) -> Result<Self, QuoteError> {
        let len = bytes.len();
        let (Some(version), Some(key_type), Some(tee_type)) =
            (u16_at(bytes, 0), u16_at(bytes, 2), u32_at(bytes, 4))
        else {
            return Err(QuoteError::NoHeader(len));
        };
        if len < HEADER_LEN {
            return Err(QuoteError::NoHeader(len));
        }
        if version != 4 && version != 5 {
            return Err(QuoteError::Version(version));
        }
        if tee_type != TEE_TYPE_TDX {
            return Err(QuoteError::TeeType { version, tee_type });
        }
        if key_type != ECDSA_P256 {
            return Err(QuoteError::KeyType { version, key_type });
        }
        let truncated = |need: usize, what: &'static str| QuoteError::Truncated {
            version,
            len,
            need,
            what,
        };
        let (body, body_start) = if version == 4 {
            (TdBody::Td10, HEADER_LEN)
        } else {
            let descriptor_end = HEADER_LEN + BODY_DESCRIPTOR_LEN;
            let (Some(body_type), Some(size)) =
                (u16_at(bytes, HEADER_LEN), u32_at(bytes, HEADER_LEN + 2))
            else {
                return Err(truncated(descriptor_end, "header and body descriptor"));
            };
            let body = TdBody::from_body_type(body_type).ok_or(QuoteError::BodyType(body_type))?;
            if usize::try_from(size).ok() != Some(body.size()) {
                return Err(QuoteError::BodySize { body, size });
            }
            (body, descriptor_end)
        };
        let signed_len = body_start + body.size();
        let signed = bytes.get(..signed_len).ok_or_else(|| {
            truncated(
                signed_len,
                match (version, body) {
                    (4, _) => "header and TD report 1.0 body",
                    (_, TdBody::Td10) => "header, body descriptor and TD report 1.0 body",
                    (_, TdBody::Td15) => "header, body descriptor and TD report 1.5 body",
                    (_, TdBody::Td15Ex) => "header, body descriptor and TD report 1.5ex body",
                },
            )
        })?;
        let report_data_offset = body_start + REPORT_DATA_IN_BODY;
        let report_data = array_at::<64>(bytes, report_data_offset)
            .ok_or_else(|| truncated(report_data_offset + 64, "report_data"))?;

        // Signature data: its length, then the fixed part this module reads.
        let fixed_end = signed_len + 4 + 64 + 64 + 2 + 4;
        let section_len = u32_at(bytes, signed_len)
            .ok_or_else(|| truncated(signed_len + 4, "the signature data length"))?;
        let section_end = usize::try_from(section_len)
            .ok()
            .and_then(|n| (signed_len + 4).checked_add(n))
            .ok_or_else(|| truncated(usize::MAX, "the signature data its length claims"))?;
        if section_end > len {
            return Err(truncated(
                section_end,
                "the signature data its length claims",
            ));
        }
        if section_end < fixed_end {
            return Err(QuoteError::Truncated {
                version,
                len: section_end,
                need: fixed_end,
                what: "signature, attestation key and certification data header (the signature data length is too small)",
            });
        }
        let signature = array_at::<64>(bytes, signed_len + 4)
            .ok_or_else(|| truncated(fixed_end, "the signature"))?;
        let attestation_key = array_at::<64>(bytes, signed_len + 4 + 64)
            .ok_or_else(|| truncated(fixed_end, "the attestation key"))?;
        let certification_type = u16_at(bytes, signed_len + 4 + 128)
            .ok_or_else(|| truncated(fixed_end, "the certification data type"))?;
        let certification_size = u32_at(bytes, signed_len + 4 + 130)
            .ok_or_else(|| truncated(fixed_end, "the certification data size"))?;
        let certification_end = usize::try_from(certification_size)
            .ok()
            .and_then(|n| fixed_end.checked_add(n))
            .ok_or_else(|| truncated(usize::MAX, "the certification data its size claims"))?;
        if certification_end > section_end {
            return Err(QuoteError::Truncated {
                version,
                len: section_end,
                need: certification_end,
                what: "the certification data its size claims (inside the signature data)",
            });
        }
        Ok(Self {
            version,
            body,
            report_data_offset,
            report_data,
            signed,
            signature,
            attestation_key,
            certification_type,
        })
    }

    /// Checks the attestation key's ECDSA-P256 signature over the signed bytes.
    pub fn verify_signature(&self) -> Result<(), QuoteError> {
        let mut point = [0u8; 65];
        point[0] = 0x04;
        point[1..].copy_from_slice(&self.attestation_key);
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| QuoteError::AttestationKey(self.version))?;
        let bad = QuoteError::Signature {
            version: self.version,
            signed: self.signed.len(),
        };
        let signature =
            p256::ecdsa::Signature::from_slice(&self.signature).map_err(|_| bad.clone())?;
        key.verify(self.signed, &signature).map_err(|_| bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &[u8] = include_bytes!("../../../tests/fixtures/tdx/real/v4_quote.bin");
    const V5: &[u8] = include_bytes!("../../../tests/fixtures/tdx/real/v5_quote.bin");
    const V5_NO_TCB: &[u8] = include_bytes!("../../../tests/fixtures/tdx/real/v5_no_tcb_level.bin");

    fn err(bytes: &[u8]) -> String {
        TdxQuote::parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn real_v4_and_v5_quotes_parse_and_their_signatures_verify() {
        let v4 = TdxQuote::parse(V4).unwrap();
        assert_eq!((v4.version, v4.body), (4, TdBody::Td10));
        assert_eq!(v4.report_data_offset, 568);
        assert_eq!(v4.signed.len(), 632);
        assert_eq!(&v4.report_data[..], &V4[568..632]);
        v4.verify_signature().unwrap();

        for quote in [V5, V5_NO_TCB] {
            let v5 = TdxQuote::parse(quote).unwrap();
            assert_eq!((v5.version, v5.body), (5, TdBody::Td15));
            assert_eq!(v5.report_data_offset, 574);
            assert_eq!(v5.signed.len(), 48 + 6 + 648);
            assert_eq!(&v5.report_data[..], &quote[574..638]);
            assert_eq!(v5.certification_type, 6);
            v5.verify_signature().unwrap();
        }
    }

    #[test]
    fn the_standard_parser_agrees_on_report_data() {
        for quote in [V4, V5, V5_NO_TCB] {
            let ours = TdxQuote::parse(quote).unwrap();
            let standard = dcap_qvl::quote::Quote::parse(quote).unwrap();
            let theirs = standard.report.as_td10().unwrap().report_data;
            assert_eq!(ours.report_data, theirs);
        }
    }

    /// A v5 quote with a TD report 1.0 body: the v4 quote re-framed (header version 5,
    /// descriptor type 2, size 584) and re-signed, since no public v5 sample has that body.
    fn v5_with_td10_body() -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let mut quote = V4[..48].to_vec();
        quote[0..2].copy_from_slice(&5u16.to_le_bytes());
        quote.extend(2u16.to_le_bytes());
        quote.extend(584u32.to_le_bytes());
        quote.extend(&V4[48..632]);
        let signature: p256::ecdsa::Signature = key.sign(&quote);
        let point = key.verifying_key().to_encoded_point(false);
        let rest = &V4[632..];
        quote.extend(&rest[..4]); // signature data length, unchanged
        quote.extend(signature.to_bytes());
        quote.extend(&point.as_bytes()[1..]);
        quote.extend(&rest[4 + 128..]);
        quote
    }

    #[test]
    fn a_v5_td10_quote_is_signed_over_638_bytes_and_reads_report_data_at_574() {
        let quote = v5_with_td10_body();
        let parsed = TdxQuote::parse(&quote).unwrap();
        assert_eq!((parsed.version, parsed.body), (5, TdBody::Td10));
        assert_eq!(parsed.signed.len(), 638);
        assert_eq!(parsed.report_data_offset, 574);
        assert_eq!(&parsed.report_data[..], &V4[568..632]);
        parsed.verify_signature().unwrap();
        let standard = dcap_qvl::quote::Quote::parse(&quote).unwrap();
        assert_eq!(
            standard.report.as_td10().unwrap().report_data,
            parsed.report_data
        );
    }

    #[test]
    fn what_is_wrong_is_said() {
        assert_eq!(
            err(&V4[..40]),
            "40 bytes is shorter than the 48-byte quote header"
        );
        let mut v3 = V4.to_vec();
        v3[0] = 3;
        assert_eq!(
            err(&v3),
            "quote version 3 is not a TDX quote version (4 or 5)"
        );
        let mut sgx = V4.to_vec();
        sgx[4] = 0;
        assert_eq!(err(&sgx), "v4 quote: TEE type 0x0 is not TDX (0x81)");
        let mut body = V5.to_vec();
        body[48] = 7;
        assert_eq!(
            err(&body),
            "v5 quote: body type 7 unknown (2: TD report 1.0, 3: TD report 1.5, 4: TD report 1.5ex)"
        );
        let mut size = V5.to_vec();
        size[50..54].copy_from_slice(&584u32.to_le_bytes());
        assert_eq!(
            err(&size),
            "v5 quote: body type 3 (TD report 1.5) says 584 bytes; a TD report 1.5 is 648"
        );
    }

    #[test]
    fn truncation_and_damage_are_named() {
        assert_eq!(
            err(&V5[..700]),
            "v5 quote: 700 bytes is shorter than the 702 bytes of header, body descriptor and TD report 1.5 body"
        );
        assert!(
            err(&V4[..1234]).starts_with("v4 quote: 1,234 bytes is shorter than the 4,936 bytes"),
            "{}",
            err(&V4[..1234])
        );
        let mut flipped = V5.to_vec();
        flipped[600] ^= 1;
        let parsed = TdxQuote::parse(&flipped).unwrap();
        assert_eq!(
            parsed.verify_signature().unwrap_err().to_string(),
            "v5 quote: the attestation key's signature over the 702 signed bytes does not verify"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(5006), "5,006");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
