//! TDX quote checks for the verifier: structure (a v4 TDX quote and its report_data), and
//! verification against Intel's roots with `dcap-qvl` (PCK chain, CRLs, TCB info, QE
//! identity, TCB status) using collateral given as a file or fetched from a PCCS.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::{Quote, Report};

/// TEE type of a TDX quote in its header.
const TEE_TYPE_TDX: u32 = 0x81;

/// What the verifier reads from a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteFacts {
    /// Header version (4 for TDX 1.0/1.5 quotes as signet expects, 5 for TDX 1.5 v5).
    pub version: u16,
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
    let (report_data, mr_td, rtmrs) = match &quote.report {
        Report::TD10(r) => (
            r.report_data,
            r.mr_td,
            [r.rt_mr0, r.rt_mr1, r.rt_mr2, r.rt_mr3],
        ),
        Report::TD15(r) => (
            r.base.report_data,
            r.base.mr_td,
            [r.base.rt_mr0, r.base.rt_mr1, r.base.rt_mr2, r.base.rt_mr3],
        ),
        _ => return Err("not a TD report".to_owned()),
    };
    Ok(QuoteFacts {
        version: quote.header.version,
        report_data,
        mr_td: hex::encode(mr_td),
        rtmrs: rtmrs.map(hex::encode),
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
}
