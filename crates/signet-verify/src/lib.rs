//! `signet verify`: one command that checks everything a client can check about a gateway,
//! and says what passed and what did not.
//!
//! It asks for an attestation report with a fresh random nonce and checks the quote (a TDX
//! quote whose report_data binds the signing address and that nonce, verified against
//! Intel's roots when collateral is available), the signing key, and the NVIDIA payload (same
//! nonce; optionally judged by NRAS). Then it sends its own streamed chat completion, hashes
//! the exact bytes it sent and received, fetches the signature for the completion's id, and
//! checks the text is its own hashes and the signer is the attested address.
//!
//! A gateway that also serves ACI (`aci/1`) is checked as an ACI service too ([`aci`]): its
//! keyset, statement and quote, then the receipt of the same completion.

pub mod aci;
pub mod http;
pub mod nras;
pub mod pccs;
pub mod quote;

use ::http::Method;
use base64::Engine;
use bytes::Bytes;
use dcap_qvl::QuoteCollateralV3;
use http::{BaseUrl, Client};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use signet_core::ids::Nonce;
use signet_core::report::{AttestationReport, spdm_request_nonce};
use signet_core::signing::{
    Address, RecoverableSignature, address_of_public_key_hex, recover_address,
};
use signet_core::sse::{IdSearch, SseIdScanner};
use signet_core::transcript::signed_text;
use std::sync::Arc;
use std::time::Duration;

/// Intel's Provisioning Certification Service, the default source of collateral.
pub const INTEL_PCS: &str = "https://api.trustedservices.intel.com";

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It holds.
    Pass,
    /// It does not hold.
    Fail,
    /// It was not run (the reason says why).
    Skip,
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name, e.g. `quote.report_data`.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// Whether the verdict depends on it.
    pub required: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

/// The verifier's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checklist {
    /// The gateway's base URL.
    pub url: String,
    /// The attested signing address, if a report was read.
    pub signing_address: Option<String>,
    /// The id of the verifier's own completion, if one was read.
    pub completion_id: Option<String>,
    /// The established ACI keyset digest, for an ACI service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aci_keyset_digest: Option<String>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Checklist {
    fn record(
        &mut self,
        name: &'static str,
        required: bool,
        outcome: Result<String, String>,
    ) -> bool {
        let (status, detail, ok) = match outcome {
            Ok(detail) => (Status::Pass, detail, true),
            Err(detail) => (Status::Fail, detail, false),
        };
        self.checks.push(Check {
            name,
            status,
            required,
            detail,
        });
        ok
    }

    fn skip(&mut self, name: &'static str, required: bool, why: impl Into<String>) {
        self.checks.push(Check {
            name,
            status: Status::Skip,
            required,
            detail: why.into(),
        });
    }

    /// Whether every required check passed.
    pub fn passed(&self) -> bool {
        self.checks
            .iter()
            .all(|c| !c.required || c.status == Status::Pass)
    }

    /// The checks that decide a failed verdict.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.required && c.status != Status::Pass)
            .collect()
    }

    /// Human-readable checklist.
    pub fn render(&self) -> String {
        let mut out = format!("signet verify {}\n", self.url);
        for check in &self.checks {
            let mark = match (check.status, check.required) {
                (Status::Pass, _) => "PASS",
                (Status::Fail, true) => "FAIL",
                (Status::Fail, false) => "fail",
                (Status::Skip, true) => "SKIP",
                (Status::Skip, false) => "skip",
            };
            let note = if check.required {
                ""
            } else {
                " (informational)"
            };
            out.push_str(&format!(
                "  {mark}  {:<21} {}{note}\n",
                check.name, check.detail
            ));
        }
        let failures = self.failures();
        if failures.is_empty() {
            let passed = self
                .checks
                .iter()
                .filter(|c| c.status == Status::Pass)
                .count();
            out.push_str(&format!("VERDICT: PASS ({passed} checks passed)\n"));
        } else {
            let names: Vec<&str> = failures.iter().map(|c| c.name).collect();
            out.push_str(&format!(
                "VERDICT: FAIL ({} required check(s) did not pass: {})\n",
                failures.len(),
                names.join(", ")
            ));
        }
        out
    }

    /// The checklist as JSON, with the verdict.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["verdict"] = serde_json::Value::from(if self.passed() { "pass" } else { "fail" });
        value
    }
}

/// Where Intel collateral comes from.
#[derive(Debug, Clone)]
pub enum CollateralSource {
    /// Saved collateral JSON.
    File(Box<QuoteCollateralV3>),
    /// A PCCS or Intel PCS base URL.
    Service(String),
}

/// What to check and how.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The gateway's base URL.
    pub url: String,
    /// Bearer token for proxied routes and signature lookups.
    pub token: Option<String>,
    /// Model for the test completion (default: the first of `/v1/models`).
    pub model: Option<String>,
    /// Prompt for the test completion.
    pub prompt: String,
    /// Accept a `dev` (not hardware-rooted) report.
    pub allow_dev: bool,
    /// Accept a report without GPU evidence.
    pub allow_no_gpu: bool,
    /// Intel collateral for the quote; `None`: Intel's PCS (not contacted for dev quotes,
    /// which can never chain to Intel's root).
    pub collateral: Option<CollateralSource>,
    /// TCB statuses accepted besides `UpToDate`.
    pub accept_tcb: Vec<String>,
    /// Verify as of this time (Unix seconds) instead of now.
    pub at: Option<u64>,
    /// NRAS endpoint to judge the GPU evidence.
    pub nras_url: Option<String>,
    /// Where NVIDIA's keys for NRAS's tokens come from.
    pub nras_jwks: nras::JwksSource,
    /// Extra CA certificates (PEM) to trust for https.
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of each HTTP exchange.
    pub timeout: Duration,
    /// Require the report to bind the TLS certificate this client saw (https only).
    pub tls_binding: bool,
    /// What the ACI report's `source_provenance` must name, if anything.
    pub expect_provenance: aci::ProvenanceExpectations,
}

/// Parses an RFC 3339 time to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    humantime::parse_rfc3339(text)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The attestation facts later checks rely on.
struct Attested {
    address: Address,
    mode: String,
}

/// Runs every check against the gateway.
pub async fn run(options: &VerifyOptions) -> Checklist {
    let mut list = Checklist {
        url: options.url.clone(),
        ..Checklist::default()
    };
    let base = match BaseUrl::parse(&options.url) {
        Ok(base) => base,
        Err(e) => {
            list.record("gateway.url", true, Err(e.to_string()));
            return list;
        }
    };
    let tls = match http::tls_config(options.ca_pem.as_deref()) {
        Ok(tls) => Some(tls),
        Err(e) => {
            list.record("gateway.tls", true, Err(e.to_string()));
            return list;
        }
    };
    let client = Client::new(base, tls.clone(), options.timeout);
    let attested = check_report(&client, options, tls.clone(), &mut list).await;
    let aci = aci::check_report(&client, options, tls, &mut list).await;
    if options.expect_provenance.is_asked()
        && !list.checks.iter().any(|c| c.name == "aci.provenance")
    {
        list.record(
            "aci.provenance",
            true,
            Err("no aci/1 report was read: no source_provenance to compare".to_owned()),
        );
    }
    check_completion(&client, options, attested.as_ref(), aci.as_ref(), &mut list).await;
    list
}

/// Every check that needs the report: skipped together when there is none.
const NEEDS_REPORT: [&str; 7] = [
    "report.mode",
    "report.nonce",
    "quote.structure",
    "quote.report_data",
    "key.address",
    "quote.intel_chain",
    "gpu.evidence",
];

/// The attestation checks, in the order the checklist shows them.
async fn check_report(
    client: &Client,
    options: &VerifyOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    list: &mut Checklist,
) -> Option<Attested> {
    let nonce = Nonce::random();
    let (report, seen_spki) = fetch_report(client, options, &nonce, list).await?;
    let dev = report.mode == "dev";
    list.record(
        "report.mode",
        true,
        judge_mode(&report.mode, options.allow_dev),
    );
    list.record(
        "report.nonce",
        true,
        judge_nonce(&report.request_nonce, &nonce),
    );
    let address = check_key(&report, list);
    let quote = check_quote_structure(&report.intel_quote, list);
    let bound_spki = check_tls(client, options, &report, seen_spki, list);
    match (&quote, &address) {
        (Some((_, facts)), Some(address)) => {
            let expected = expected_report_data(address, &nonce, options, bound_spki, seen_spki);
            list.record(
                "quote.report_data",
                true,
                judge_report_data(facts, &expected, address, options.tls_binding),
            );
        }
        _ => list.skip("quote.report_data", true, "no parsed quote or address"),
    }
    match &quote {
        Some((bytes, _)) => {
            check_intel_chain("quote.intel_chain", bytes, options, dev, tls.clone(), list).await
        }
        None => list.skip("quote.intel_chain", !dev, "no parsed quote"),
    }
    check_gpu(&report, &nonce, options, tls, list).await;
    address.map(|address| Attested {
        address,
        mode: report.mode,
    })
}

/// `GET /v1/attestation/report` for a fresh nonce, read typed; with the certificate key the
/// connection saw. Without a report, every check that needs one is skipped.
async fn fetch_report(
    client: &Client,
    options: &VerifyOptions,
    nonce: &Nonce,
    list: &mut Checklist,
) -> Option<(AttestationReport, Option<[u8; 32]>)> {
    let binding = if options.tls_binding {
        "&tls_binding=true"
    } else {
        ""
    };
    let mut seen_spki: Option<[u8; 32]> = None;
    let fetched = client
        .send(
            Method::GET,
            &format!("/v1/attestation/report?nonce={}{binding}", nonce.to_hex()),
            &[],
            Bytes::new(),
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| {
            seen_spki = r.peer_spki_sha256;
            r.json_if_ok()
        })
        .and_then(read_report);
    match fetched {
        Ok(report) => {
            list.record(
                "report.fetch",
                true,
                Ok("attestation report for a fresh random nonce".to_owned()),
            );
            Some((report, seen_spki))
        }
        Err(e) => {
            list.record("report.fetch", true, Err(e));
            for name in NEEDS_REPORT {
                list.skip(name, true, "no report");
            }
            None
        }
    }
}

/// The report, typed. Only a JSON object is one (serde would also read an array by position).
fn read_report(json: serde_json::Value) -> Result<AttestationReport, String> {
    if !json.is_object() {
        return Err("not an attestation report: not a JSON object".to_owned());
    }
    AttestationReport::deserialize(json).map_err(|e| format!("not an attestation report: {e}"))
}

/// `report.mode`: hardware-rooted, or dev when dev is accepted.
fn judge_mode(mode: &str, allow_dev: bool) -> Result<String, String> {
    match (mode, allow_dev) {
        ("tdx" | "dstack", _) => Ok(format!("{mode}: hardware-rooted")),
        ("dev", true) => Ok("dev: NOT hardware-rooted (accepted by --allow-dev)".to_owned()),
        ("dev", false) => {
            Err("dev: a mock quote, not hardware-rooted (pass --allow-dev to accept)".to_owned())
        }
        (other, _) => Err(format!("unknown mode {other:?}")),
    }
}

/// `report.nonce`: the report answers this request, not an earlier one.
fn judge_nonce(request_nonce: &str, nonce: &Nonce) -> Result<String, String> {
    if request_nonce == nonce.to_hex() {
        Ok("request_nonce is the nonce sent".to_owned())
    } else {
        Err(format!(
            "request_nonce {:?} is not the nonce sent {}",
            request_nonce,
            nonce.to_hex()
        ))
    }
}

/// `key.address`: the public key belongs to the signing address; the address, if it parses.
fn check_key(report: &AttestationReport, list: &mut Checklist) -> Option<Address> {
    let address = Address::parse(&report.signing_address);
    list.record(
        "key.address",
        true,
        match (
            &address,
            address_of_public_key_hex(&report.signing_public_key),
        ) {
            (Ok(a), Ok(from_key)) if *a == from_key => {
                Ok(format!("signing_public_key belongs to {a}"))
            }
            (Ok(a), Ok(from_key)) => Err(format!("signing_public_key is {from_key}'s, not {a}'s")),
            (Err(e), _) => Err(format!("signing_address: {e}")),
            (_, Err(e)) => Err(format!("signing_public_key: {e}")),
        },
    );
    let address = address.ok();
    if let Some(address) = &address {
        list.signing_address = Some(address.to_checksum());
    }
    address
}

/// `quote.structure`: the quote decodes and parses as a TDX quote.
fn check_quote_structure(
    intel_quote: &str,
    list: &mut Checklist,
) -> Option<(Vec<u8>, quote::QuoteFacts)> {
    let parsed = quote::decode_quote_text(intel_quote).and_then(|(bytes, encoding)| {
        let facts = quote::parse_quote(&bytes)?;
        Ok((bytes, facts, encoding))
    });
    match parsed {
        Ok((bytes, facts, encoding)) => {
            list.record(
                "quote.structure",
                true,
                Ok(format!(
                    "TDX quote v{}, {} ({}; MRTD {}…)",
                    facts.version,
                    facts.body,
                    encoding.as_str(),
                    &facts.mr_td[..16]
                )),
            );
            Some((bytes, facts))
        }
        Err(e) => {
            list.record("quote.structure", true, Err(e));
            None
        }
    }
}

/// `tls.binding`: when asked, the report binds the certificate key this connection saw;
/// that key, when it does.
fn check_tls(
    client: &Client,
    options: &VerifyOptions,
    report: &AttestationReport,
    seen_spki: Option<[u8; 32]>,
    list: &mut Checklist,
) -> Option<[u8; 32]> {
    if !options.tls_binding {
        list.skip(
            "tls.binding",
            false,
            if client.base().tls {
                "not asked (--no-tls-binding)"
            } else {
                "cleartext URL: no certificate to bind"
            },
        );
        return None;
    }
    let outcome = check_tls_binding(report, seen_spki);
    let spki = outcome.as_ref().ok().copied();
    list.record(
        "tls.binding",
        true,
        outcome.map(|spki| {
            format!(
                "the report binds the certificate key this connection saw ({}…)",
                &hex::encode(spki)[..16]
            )
        }),
    );
    spki
}

/// The report_data the quote must carry for this address, nonce and connection.
fn expected_report_data(
    address: &Address,
    nonce: &Nonce,
    options: &VerifyOptions,
    bound_spki: Option<[u8; 32]>,
    seen_spki: Option<[u8; 32]>,
) -> [u8; 64] {
    match &bound_spki {
        Some(spki) => signet_core::report::tls_bound_report_data(address, spki, nonce),
        None if options.tls_binding => {
            // The binding failed: compare with what it should have been for what this
            // connection saw, so the quote check fails too.
            signet_core::report::tls_bound_report_data(
                address,
                &seen_spki.unwrap_or_default(),
                nonce,
            )
        }
        None => signet_core::report::report_data(address, nonce),
    }
}

/// `quote.report_data`: the quote binds the signing address (and certificate key) and this
/// nonce; says which part differs when it does not.
fn judge_report_data(
    facts: &quote::QuoteFacts,
    expected: &[u8; 64],
    address: &Address,
    tls_binding: bool,
) -> Result<String, String> {
    if facts.report_data == *expected {
        Ok(if tls_binding {
            "binds the signing address, the TLS certificate key and this nonce".to_owned()
        } else {
            "binds the signing address and this nonce".to_owned()
        })
    } else if facts.report_data[..20] == address.0 {
        Err("binds the signing address but another nonce (a replayed report?)".to_owned())
    } else {
        Err(format!(
            "binds {} instead of address ‖ 0¹² ‖ nonce",
            hex::encode(facts.report_data)
        ))
    }
}

/// The report must carry the fingerprint of the certificate key this very connection was
/// served with; a relay with another certificate cannot produce it.
fn check_tls_binding(
    report: &AttestationReport,
    seen: Option<[u8; 32]>,
) -> Result<[u8; 32], String> {
    let seen = seen.ok_or("no TLS certificate was seen on the report's connection")?;
    match report.tls_cert_fingerprint.as_deref() {
        None => {
            Err("the report is not bound to a TLS certificate (no tls_cert_fingerprint)".to_owned())
        }
        Some(claimed) if claimed.eq_ignore_ascii_case(&hex::encode(seen)) => Ok(seen),
        Some(claimed) => Err(format!(
            "the report binds certificate key {claimed}, but this connection was served with {}: \
             someone else terminates TLS in between",
            hex::encode(seen)
        )),
    }
}

/// `quote.intel_chain`: the quote chains to Intel's root with an accepted TCB status (shown
/// but not deciding for a dev quote).
async fn check_intel_chain(
    name: &'static str,
    quote: &[u8],
    options: &VerifyOptions,
    dev: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    list: &mut Checklist,
) {
    // A dev quote can never chain to Intel: its check is shown but does not decide.
    let required = !dev;
    let source = match (&options.collateral, dev) {
        (Some(source), _) => source.clone(),
        (None, true) => {
            list.skip(
                name,
                false,
                "dev quote: no Intel chain to check (give --collateral to see it fail)",
            );
            return;
        }
        (None, false) => CollateralSource::Service(INTEL_PCS.to_owned()),
    };
    let collateral = match &source {
        CollateralSource::File(collateral) => Ok((**collateral).clone()),
        CollateralSource::Service(url) => pccs::fetch_collateral(url, quote, tls, options.timeout)
            .await
            .map_err(|e| format!("collateral from {url}: {e}")),
    };
    let outcome = collateral.and_then(|collateral| {
        judge_chain(
            quote,
            &collateral,
            options.at.unwrap_or_else(now_secs),
            &options.accept_tcb,
        )
    });
    list.record(name, required, outcome);
}

/// Whether `quote` chains to Intel's root with `collateral` as of `at`, with a TCB status
/// that passes (`UpToDate`) or that the user accepted (never `Revoked`).
pub(crate) fn judge_chain(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    at: u64,
    accept_tcb: &[String],
) -> Result<String, String> {
    let verdict = quote::verify_chain(quote, collateral, at)
        .map_err(|e| format!("does not chain to Intel's root: {e}"))?;
    let advisories = if verdict.advisory_ids.is_empty() {
        String::new()
    } else {
        format!(", advisories {}", verdict.advisory_ids.join(","))
    };
    let accepted = quote::GOOD_TCB_STATUSES.contains(&verdict.status.as_str())
        || (verdict.status != "Revoked" && accept_tcb.contains(&verdict.status));
    if accepted {
        Ok(format!(
            "signed by Intel's root, TCB status {}{advisories}",
            verdict.status
        ))
    } else {
        Err(format!(
            "TCB status {}{advisories} (accept it with --accept-tcb {})",
            verdict.status, verdict.status
        ))
    }
}

/// `gpu.evidence`, then `gpu.nras` when an NRAS endpoint is given.
async fn check_gpu(
    report: &AttestationReport,
    nonce: &Nonce,
    options: &VerifyOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    list: &mut Checklist,
) {
    let raw = report.nvidia_payload.as_str();
    let dev_evidence = report.gpu_evidence == "dev";
    list.record(
        "gpu.evidence",
        true,
        judge_gpu_evidence(raw, dev_evidence, nonce, options),
    );
    match &options.nras_url {
        None => list.skip(
            "gpu.nras",
            false,
            "not asked (pass --nras-url to have NVIDIA judge the evidence)",
        ),
        Some(url) => {
            let outcome = nras::attest(url, raw, &options.nras_jwks, tls, options.timeout)
                .await
                .and_then(|verdict| judge_nras(&verdict, nonce));
            list.record("gpu.nras", true, outcome);
        }
    }
}

/// `gpu.evidence`: the NVIDIA payload and each GPU's SPDM evidence carry this nonce
/// (recorded dev evidence is let through with `--allow-dev`); none at all only with
/// `--allow-no-gpu`.
pub(crate) fn judge_gpu_evidence(
    raw: &str,
    dev_evidence: bool,
    nonce: &Nonce,
    options: &VerifyOptions,
) -> Result<String, String> {
    let payload: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("nvidia_payload is not JSON: {e}"))?;
    if payload["nonce"].as_str() != Some(nonce.to_hex().as_str()) {
        return Err(format!(
            "payload nonce {} is not the nonce sent",
            payload["nonce"]
        ));
    }
    let list = payload["evidence_list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return if options.allow_no_gpu {
            Ok("no GPU evidence (accepted by --allow-no-gpu)".to_owned())
        } else {
            Err(
                "no GPU evidence in the payload (pass --allow-no-gpu for CPU-only gateways)"
                    .to_owned(),
            )
        };
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    for (index, item) in list.iter().enumerate() {
        let evidence = b64
            .decode(item["evidence"].as_str().unwrap_or_default())
            .map_err(|_| format!("GPU {index}: evidence is not base64"))?;
        let inner = spdm_request_nonce(&evidence);
        if inner != Some(nonce.0) {
            if dev_evidence && options.allow_dev {
                continue; // recorded dev evidence carries the nonce it was recorded with
            }
            return Err(format!(
                "GPU {index}: the evidence was not taken with this nonce"
            ));
        }
    }
    Ok(format!(
        "{} GPU(s), payload and evidence{} carry this nonce",
        list.len(),
        if dev_evidence {
            " (dev: recorded evidence)"
        } else {
            ""
        }
    ))
}

/// `gpu.nras`: NVIDIA's overall verdict is true, for this nonce.
fn judge_nras(verdict: &nras::NrasVerdict, nonce: &Nonce) -> Result<String, String> {
    if !verdict.overall {
        return Err("NRAS: overall attestation result false".to_owned());
    }
    match &verdict.nonce {
        None => Err("NRAS's token carries no eat_nonce".to_owned()),
        Some(n) if n.to_ascii_lowercase() != nonce.to_hex() => {
            Err(format!("NRAS's token is for nonce {n}, not this one"))
        }
        Some(_) => Ok(format!(
            "NRAS: overall attestation result true for this nonce ({} token(s) signed by NVIDIA's keys)",
            verdict.tokens
        )),
    }
}

fn auth_headers(options: &VerifyOptions) -> Vec<(&'static str, String)> {
    options
        .token
        .as_ref()
        .map(|t| vec![("authorization", format!("Bearer {t}"))])
        .unwrap_or_default()
}

async fn pick_model(client: &Client, options: &VerifyOptions) -> String {
    if let Some(model) = &options.model {
        return model.clone();
    }
    let listed = client
        .send(
            Method::GET,
            "/v1/models",
            &auth_headers(options),
            Bytes::new(),
        )
        .await
        .ok()
        .and_then(|r| r.json().ok())
        .and_then(|v| v["data"][0]["id"].as_str().map(str::to_owned));
    listed.unwrap_or_else(|| "default".to_owned())
}

/// The checks that need the verifier's own completion.
const NEEDS_COMPLETION: [&str; 3] = ["signature.fetch", "signature.text", "signature.signer"];

/// The signature checks: send a streamed completion, hash what was sent and received, fetch
/// its signature and check text, signer and any in-band copy.
async fn check_completion(
    client: &Client,
    options: &VerifyOptions,
    attested: Option<&Attested>,
    aci: Option<&aci::Established>,
    list: &mut Checklist,
) {
    const ACI_RECEIPT: [&str; 3] = [
        "aci.receipt.fetch",
        "aci.receipt.signature",
        "aci.receipt.hashes",
    ];
    let model = pick_model(client, options).await;
    let request_bytes = completion_request(&model, options);
    let Some(response) = stream_completion(client, options, &model, &request_bytes, list).await
    else {
        if aci.is_some() {
            for name in ACI_RECEIPT {
                list.skip(name, true, "no completion");
            }
        }
        return;
    };
    if let Some(established) = aci {
        // By X-Receipt-Id, or else by the response's own id (ACI 7.1). The receipt covers
        // every byte received, the in-band trailer included.
        let receipt_id = response
            .headers
            .get(signet_core::aci::RECEIPT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                let mut scanner = SseIdScanner::new(1 << 20);
                scanner.feed(signet_core::inband::split_stream(&response.body).0);
                match scanner.finish() {
                    IdSearch::Found(id) => Some(id.to_string()),
                    _ => None,
                }
            });
        aci::check_own_receipt(
            client,
            &auth_headers(options),
            established,
            receipt_id.as_deref(),
            &request_bytes,
            &response.body,
            list,
        )
        .await;
    }
    // The in-band signature, if the gateway appended one, is not part of the signed bytes.
    let (covered, inband) = signet_core::inband::split_stream(&response.body);
    let Some(id) = completion_id(covered, list) else {
        return;
    };
    list.completion_id = Some(id.to_string());
    let own_text = signed_text(
        &Sha256::digest(&request_bytes).into(),
        &Sha256::digest(covered).into(),
    );
    let Some(receipt) = fetch_signature(client, options, &id, list).await else {
        return;
    };
    let text = field(&receipt, "text").to_owned();
    list.record("signature.text", true, judge_signed_text(&text, &own_text));
    list.record(
        "signature.signer",
        true,
        judge_signer(&receipt, &text, attested),
    );
    match inband {
        None => list.skip(
            "signature.inband",
            false,
            "the gateway sent no in-band signature (x-signet-signature: in-band)",
        ),
        Some(inband) => {
            list.record(
                "signature.inband",
                true,
                judge_inband(&inband, &receipt, &text, &own_text, id.as_str()),
            );
        }
    }
}

/// A text field of a JSON answer, empty when absent.
fn field<'a>(json: &'a serde_json::Value, name: &str) -> &'a str {
    json[name].as_str().unwrap_or_default()
}

/// The verifier's own request: a short streamed chat completion.
fn completion_request(model: &str, options: &VerifyOptions) -> Bytes {
    let request = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": options.prompt}],
        "stream": true,
        "max_tokens": 32,
        "temperature": 0,
    });
    Bytes::from(request.to_string())
}

/// `completion.stream`: the completion comes back 200, streamed; the response when it does.
async fn stream_completion(
    client: &Client,
    options: &VerifyOptions,
    model: &str,
    request_bytes: &Bytes,
    list: &mut Checklist,
) -> Option<http::Response> {
    let mut headers = auth_headers(options);
    headers.push(("content-type", "application/json".to_owned()));
    headers.push((
        signet_core::inband::REQUEST_HEADER,
        signet_core::inband::REQUEST_VALUE.to_owned(),
    ));
    let response = client
        .send(
            Method::POST,
            "/v1/chat/completions",
            &headers,
            request_bytes.clone(),
        )
        .await;
    let failure = match response {
        Ok(r) if r.status == 200 => {
            let ends =
                r.body.ends_with(b"data: [DONE]\n\n") || r.body.ends_with(b"data: [DONE]\r\n\r\n");
            list.record(
                "completion.stream",
                true,
                Ok(format!(
                    "streamed {} bytes from model {model}{}",
                    r.body.len(),
                    if ends { "" } else { " (no [DONE] at the end)" }
                )),
            );
            return Some(r);
        }
        Ok(r) => format!(
            "HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
                .chars()
                .take(300)
                .collect::<String>()
        ),
        Err(e) => e.to_string(),
    };
    list.record("completion.stream", true, Err(failure));
    for name in NEEDS_COMPLETION {
        list.skip(name, true, "no completion");
    }
    None
}

/// The completion id in the signed bytes; without one the signature checks cannot run.
fn completion_id(covered: &[u8], list: &mut Checklist) -> Option<signet_core::ids::CompletionId> {
    let mut scanner = SseIdScanner::new(1 << 20);
    scanner.feed(covered);
    match scanner.finish() {
        IdSearch::Found(id) => Some(id),
        other => {
            list.record(
                "signature.fetch",
                true,
                Err(format!("no completion id in the stream: {other:?}")),
            );
            list.skip("signature.text", true, "no completion id");
            list.skip("signature.signer", true, "no completion id");
            None
        }
    }
}

/// `signature.fetch`: `GET /v1/signature/{id}` answers with a receipt.
async fn fetch_signature(
    client: &Client,
    options: &VerifyOptions,
    id: &signet_core::ids::CompletionId,
    list: &mut Checklist,
) -> Option<serde_json::Value> {
    let fetched = client
        .send(
            Method::GET,
            &format!("/v1/signature/{id}"),
            &auth_headers(options),
            Bytes::new(),
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.json_if_ok());
    match fetched {
        Ok(receipt) => {
            list.record("signature.fetch", true, Ok(format!("signature for {id}")));
            Some(receipt)
        }
        Err(e) => {
            list.record("signature.fetch", true, Err(e));
            list.skip("signature.text", true, "no signature");
            list.skip("signature.signer", true, "no signature");
            None
        }
    }
}

/// `signature.text`: the signed text is the hashes of the bytes this client sent and got.
fn judge_signed_text(text: &str, own_text: &str) -> Result<String, String> {
    if text == own_text {
        Ok("sha256(request):sha256(response) of the bytes sent and received".to_owned())
    } else {
        Err(format!(
            "signed text {text:?} is not this exchange's {own_text:?}"
        ))
    }
}

/// `signature.signer`: the signature recovers to the attested address, which the receipt
/// also names.
fn judge_signer(
    receipt: &serde_json::Value,
    text: &str,
    attested: Option<&Attested>,
) -> Result<String, String> {
    let recovered = RecoverableSignature::parse(field(receipt, "signature"))
        .map_err(|e| e.to_string())
        .and_then(|sig| recover_address(text.as_bytes(), &sig).map_err(|e| e.to_string()));
    match (recovered, attested) {
        (Err(e), _) => Err(format!("signature does not recover: {e}")),
        (Ok(signer), None) => Err(format!(
            "signed by {signer}, but no attested address to compare"
        )),
        (Ok(signer), Some(attested)) if signer == attested.address => {
            let claimed = field(receipt, "signing_address");
            if Address::parse(claimed).ok() == Some(signer) {
                Ok(format!(
                    "signed by the attested key {signer} ({} mode)",
                    attested.mode
                ))
            } else {
                Err(format!(
                    "signature recovers to {signer} but the receipt claims {claimed}"
                ))
            }
        }
        (Ok(signer), Some(attested)) => Err(format!(
            "signed by {signer}, not by the attested key {}",
            attested.address
        )),
    }
}

/// `signature.inband`: the signature at the end of the stream covers the bytes before it
/// and equals the one the lookup returns.
fn judge_inband(
    inband: &signet_core::inband::InbandSignature,
    receipt: &serde_json::Value,
    text: &str,
    own_text: &str,
    id: &str,
) -> Result<String, String> {
    let matches = inband.text == text
        && inband.id == id
        && RecoverableSignature::parse(&inband.signature).ok()
            == RecoverableSignature::parse(field(receipt, "signature")).ok();
    if matches && inband.text == own_text {
        Ok("the signature at the end of the stream covers the bytes before it and equals the lookup".to_owned())
    } else if inband.text != own_text {
        Err(format!(
            "in-band text {:?} is not this exchange's {own_text:?}",
            inband.text
        ))
    } else {
        Err("the in-band signature differs from the one /v1/signature returns".to_owned())
    }
}

/// `signet verify-signature`: the address that signed `text`, compared with `expected`.
pub fn verify_signature(
    text: &str,
    signature: &str,
    expected: Option<&str>,
) -> Result<Address, String> {
    let sig = RecoverableSignature::parse(signature).map_err(|e| e.to_string())?;
    let signer = recover_address(text.as_bytes(), &sig).map_err(|e| e.to_string())?;
    if let Some(expected) = expected {
        let expected = Address::parse(expected).map_err(|e| format!("--address: {e}"))?;
        if expected != signer {
            return Err(format!("signed by {signer}, not by {expected}"));
        }
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_typed_and_a_foreign_one_with_fields_missing_still_reads() {
        let report = read_report(serde_json::json!({
            "signing_address": "0x00000000000000000000000000000000000000aa",
            "mode": "tdx",
            "event_log": [{"imr": 3}],
        }))
        .unwrap();
        assert_eq!(report.mode, "tdx");
        assert_eq!(report.nvidia_payload, "");
        assert_eq!(report.tls_cert_fingerprint, None);
        assert_eq!(
            read_report(serde_json::json!(["0xaa", "ecdsa"])).unwrap_err(),
            "not an attestation report: not a JSON object"
        );
    }

    #[test]
    fn each_step_words_its_verdict_as_before() {
        assert_eq!(judge_mode("tdx", false).unwrap(), "tdx: hardware-rooted");
        assert!(
            judge_mode("dev", false)
                .unwrap_err()
                .contains("--allow-dev")
        );
        assert_eq!(judge_mode("sgx", true).unwrap_err(), "unknown mode \"sgx\"");
        let nonce = Nonce::random();
        assert!(judge_nonce(&nonce.to_hex(), &nonce).is_ok());
        assert!(judge_nonce("", &nonce).is_err());
        assert!(judge_signed_text("a:b", "a:b").is_ok());
        assert_eq!(
            judge_signed_text("a:c", "a:b").unwrap_err(),
            "signed text \"a:c\" is not this exchange's \"a:b\""
        );
    }
}
