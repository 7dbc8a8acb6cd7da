//! TDX quote checks for the verifier: how `intel_quote` is encoded (hex, `0x`-hex or
//! base64), structure (a v4 or v5 TDX quote and its report_data), and verification against
//! Intel's roots with `dcap-qvl` (PCK chain, CRLs, TCB info, QE identity, TCB status) using
//! collateral given as a file or fetched from a PCCS.

use base64::Engine;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::{Quote, Report};

/// TEE type of a TDX quote in its header.
const TEE_TYPE_TDX: u32 = 0x81;

/// How a report wrote its quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteEncoding {
    /// Hex digits (signet's `quote_encoding: hex`, the dstack agent, vllm-proxy, NEAR AI).
    Hex,
    /// `0x` followed by hex digits.
    PrefixedHex,
    /// Standard base64 (signet's default).
    Base64,
}

impl QuoteEncoding {
    /// The name shown in the checklist.
    pub fn as_str(self) -> &'static str {
        match self {
            QuoteEncoding::Hex => "hex",
            QuoteEncoding::PrefixedHex => "0x-hex",
            QuoteEncoding::Base64 => "base64",
        }
    }
}

/// Decodes `intel_quote`. Hex is decided first and without guessing: a `0x` prefix, or an
/// even number of characters that are all hex digits, is hex; anything else is base64. (Base64
/// first would be wrong: every even-length hex string whose length is a multiple of 4 is also
/// valid base64, and decodes to other bytes.) A base64 quote that happened to use only hex
/// digits would be misread, but a quote's base64 has thousands of characters drawn from 64,
/// so that does not happen.
pub fn decode_quote_text(text: &str) -> Result<(Vec<u8>, QuoteEncoding), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("intel_quote is empty".to_owned());
    }
    if let Some(digits) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return hex::decode(digits)
            .map(|bytes| (bytes, QuoteEncoding::PrefixedHex))
            .map_err(|e| format!("intel_quote starts with 0x but is not hex: {e}"));
    }
    if text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(text)
            .map(|bytes| (bytes, QuoteEncoding::Hex))
            .map_err(|e| format!("intel_quote is not hex: {e}"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(|bytes| (bytes, QuoteEncoding::Base64))
        .map_err(|e| format!("intel_quote is neither hex nor base64 ({e})"))
}

/// What the verifier reads from a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteFacts {
    /// Header version: 4, or 5 (a body descriptor before the TD report).
    pub version: u16,
    /// The TD report: `TD report 1.0`, `TD report 1.5` or `TD report 1.5ex`.
    pub body: &'static str,
    /// The 64 bytes of report_data.
    pub report_data: [u8; 64],
    /// MRTD, hex.
    pub mr_td: String,
    /// RTMR0..3, hex.
    pub rtmrs: [String; 4],
}

/// Parses a TDX quote (never panics on malformed input).
pub fn parse_quote(bytes: &[u8]) -> Result<QuoteFacts, String> {
    let quote = Quote::parse(bytes).map_err(|e| format!("not a DCAP quote: {e:#}"))?;
    if quote.header.tee_type != TEE_TYPE_TDX {
        return Err(format!(
            "not a TDX quote (TEE type {:#x})",
            quote.header.tee_type
        ));
    }
    let body = match &quote.report {
        Report::TD10(_) => "TD report 1.0",
        Report::TD15(_) => "TD report 1.5",
        Report::TD15Ex(_) => "TD report 1.5ex",
        Report::SgxEnclave(_) => return Err("not a TD report".to_owned()),
    };
    let td = quote
        .report
        .as_td10()
        .ok_or_else(|| "not a TD report".to_owned())?;
    Ok(QuoteFacts {
        version: quote.header.version,
        body,
        report_data: td.report_data,
        mr_td: hex::encode(td.mr_td),
        rtmrs: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3].map(hex::encode),
    })
}

/// The outcome of verification against Intel's roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerdict {
    /// TCB status: `UpToDate`, `SWHardeningNeeded`, `ConfigurationNeeded`,
    /// `ConfigurationAndSWHardeningNeeded`, `OutOfDate`, `OutOfDateConfigurationNeeded`,
    /// `Revoked`.
    pub status: String,
    /// Intel security advisories that apply.
    pub advisory_ids: Vec<String>,
}

/// TCB statuses that pass without the user accepting them.
pub const GOOD_TCB_STATUSES: &[&str] = &["UpToDate"];

/// Verifies `quote` against Intel's roots with `collateral`, as of `now_secs`.
pub fn verify_chain(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now_secs: u64,
) -> Result<ChainVerdict, String> {
    let report =
        dcap_qvl::verify::verify(quote, collateral, now_secs).map_err(|e| format!("{e:#}"))?;
    Ok(ChainVerdict {
        status: report.status,
        advisory_ids: report.advisory_ids,
    })
}

/// Reads collateral saved as JSON (the shape dcap-qvl and its tools write).
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, String> {
    serde_json::from_slice(json).map_err(|e| format!("collateral JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_QUOTE: &[u8] = include_bytes!("../../../tests/fixtures/tdx/quote.bin");
    const REAL_COLLATERAL: &[u8] = include_bytes!("../../../tests/fixtures/tdx/collateral.json");

    /// A moment inside the sample collateral's validity window.
    fn inside_window(collateral: &QuoteCollateralV3) -> u64 {
        let tcb: serde_json::Value = serde_json::from_str(&collateral.tcb_info).unwrap();
        let issued = tcb["issueDate"].as_str().unwrap();
        crate::parse_rfc3339(issued).unwrap() + 3600
    }

    #[test]
    fn a_recorded_quote_verifies_against_intels_roots() {
        let collateral = parse_collateral(REAL_COLLATERAL).unwrap();
        let verdict = verify_chain(REAL_QUOTE, &collateral, inside_window(&collateral)).unwrap();
        assert_eq!(verdict.status, "UpToDate");
        let facts = parse_quote(REAL_QUOTE).unwrap();
        assert_eq!(facts.version, 4);
    }

    #[test]
    fn expired_collateral_and_tampered_quotes_fail() {
        let collateral = parse_collateral(REAL_COLLATERAL).unwrap();
        let far_future = inside_window(&collateral) + 10 * 365 * 86_400;
        assert!(verify_chain(REAL_QUOTE, &collateral, far_future).is_err());
        let mut tampered = REAL_QUOTE.to_vec();
        tampered[600] ^= 1; // inside report_data: the QE's signature no longer matches
        assert!(verify_chain(&tampered, &collateral, inside_window(&collateral)).is_err());
    }

    #[test]
    fn a_mock_quote_parses_but_its_chain_fails() {
        let mock = signet_attest::DevQuoteProvider::generate().mock_quote(&[1; 64]);
        let facts = parse_quote(&mock).unwrap();
        assert_eq!(facts.report_data, [1; 64]);
        let collateral = parse_collateral(REAL_COLLATERAL).unwrap();
        assert!(verify_chain(&mock, &collateral, inside_window(&collateral)).is_err());
    }

    #[test]
    fn garbage_is_not_a_quote() {
        assert!(parse_quote(b"").is_err());
        assert!(parse_quote(&[0u8; 10]).is_err());
        assert!(parse_quote(&REAL_QUOTE[..700]).is_err());
    }

    /// The real quotes of tests/fixtures/tdx/real, their collateral and the instant at which
    /// that collateral is valid (its README).
    struct Real {
        name: &'static str,
        quote: &'static [u8],
        collateral: &'static [u8],
        at: &'static str,
        version: u16,
    }

    const V4_COLLATERAL: &[u8] =
        include_bytes!("../../../tests/fixtures/tdx/real/v4_collateral.json");
    const V5_COLLATERAL: &[u8] =
        include_bytes!("../../../tests/fixtures/tdx/real/v5_collateral.json");
    const REAL: [Real; 3] = [
        Real {
            name: "v4",
            quote: include_bytes!("../../../tests/fixtures/tdx/real/v4_quote.bin"),
            collateral: V4_COLLATERAL,
            at: "2025-06-19T11:16:03Z",
            version: 4,
        },
        Real {
            name: "v5",
            quote: include_bytes!("../../../tests/fixtures/tdx/real/v5_quote.bin"),
            collateral: V5_COLLATERAL,
            at: "2026-02-18T11:58:51Z",
            version: 5,
        },
        Real {
            name: "v5_no_tcb_level",
            quote: include_bytes!("../../../tests/fixtures/tdx/real/v5_no_tcb_level.bin"),
            collateral: V5_COLLATERAL,
            at: "2026-02-18T11:58:51Z",
            version: 5,
        },
    ];

    #[test]
    fn hex_is_decided_before_base64() {
        // 8 hex digits are also 8 characters of valid base64: base64 first misreads them.
        assert!(
            base64::engine::general_purpose::STANDARD
                .decode("deadbeef")
                .is_ok()
        );
        assert_eq!(
            decode_quote_text("deadbeef"),
            Ok((vec![0xde, 0xad, 0xbe, 0xef], QuoteEncoding::Hex))
        );
        assert_eq!(
            decode_quote_text(" 0xDEADBEEF\n"),
            Ok((vec![0xde, 0xad, 0xbe, 0xef], QuoteEncoding::PrefixedHex))
        );
        assert_eq!(
            decode_quote_text("3q2+7w=="),
            Ok((vec![0xde, 0xad, 0xbe, 0xef], QuoteEncoding::Base64))
        );
        // Odd length: not hex, and here not base64 either.
        assert!(
            decode_quote_text("abc")
                .unwrap_err()
                .contains("neither hex nor base64")
        );
        assert!(
            decode_quote_text("0xabc")
                .unwrap_err()
                .contains("starts with 0x")
        );
        assert!(decode_quote_text("").is_err());
    }

    #[test]
    fn real_v4_and_v5_quotes_decode_from_base64_hex_and_0x_hex() {
        let b64 = base64::engine::general_purpose::STANDARD;
        for real in REAL {
            for (text, encoding) in [
                (b64.encode(real.quote), QuoteEncoding::Base64),
                (hex::encode(real.quote), QuoteEncoding::Hex),
                (hex::encode_upper(real.quote), QuoteEncoding::Hex),
                (
                    format!("0x{}", hex::encode(real.quote)),
                    QuoteEncoding::PrefixedHex,
                ),
            ] {
                let (bytes, found) = decode_quote_text(&text).unwrap();
                assert_eq!(
                    (bytes.as_slice(), found),
                    (real.quote, encoding),
                    "{}",
                    real.name
                );
                let facts = parse_quote(&bytes).unwrap();
                assert_eq!(facts.version, real.version, "{}", real.name);
            }
        }
    }

    #[test]
    fn real_v4_and_v5_quotes_verify_at_their_instants_and_the_third_names_why_not() {
        for real in REAL {
            let collateral = parse_collateral(real.collateral).unwrap();
            let at = crate::parse_rfc3339(real.at).unwrap();
            let outcome = verify_chain(real.quote, &collateral, at);
            if real.name == "v5_no_tcb_level" {
                let why = outcome.unwrap_err();
                assert!(why.contains("No matching TCB level"), "{why}");
            } else {
                assert_eq!(outcome.unwrap().status, "UpToDate", "{}", real.name);
            }
        }
        let facts = parse_quote(REAL[1].quote).unwrap();
        assert_eq!(facts.body, "TD report 1.5");
    }
}
