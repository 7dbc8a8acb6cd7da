//! The ACI (`aci/1`) half of `signet verify`, and `signet verify-receipt`.
//!
//! Live: the gateway is asked for `GET /v1/aci/attestation` with a fresh nonce. A gateway
//! that does not serve it is not an ACI service (an informational skip); one that does is
//! held to §9.1: the keyset's JCS digest equals the restated one, the statement rebuilt from
//! that digest and the nonce hashes to `report_data`, the quote carries exactly that value
//! (zero-padded) and chains to Intel like the legacy quote, the GPU evidence is over the
//! nonce, the keyset has not expired, and over https the certificate key this connection saw
//! is listed. Then the receipt of the verifier's own completion (§9.3): it verifies under the
//! attested receipt key, names the attested keyset, and its hashes are those of the bytes the
//! verifier sent and received.
//!
//! Offline: an archived receipt is re-checked against an archived report, with no network;
//! with saved Intel collateral, the report's quote is checked against Intel's roots too.
//!
//! Both judge `source_provenance` when asked (`--expect-commit`, `--expect-image-digest`,
//! `--expect-repo`): each expected value must be the report's, and a `null` field fails. The
//! report states these fields outside the quote (§4.1): a match says what the service
//! claims to run, to be corroborated by measured evidence (e.g. dstack's compose hash).

use crate::{
    Checklist, VerifyOptions, check_intel_chain, judge_gpu_evidence as gpu_evidence_outcome,
    now_secs,
};
use ::http::Method;
use bytes::Bytes;
use dcap_qvl::QuoteCollateralV3;
use serde_json::Value;
use signet_core::aci::{self, AciNonce, AciReport, SourceProvenance, VerifiedReceipt};
use signet_core::ids::Nonce;
use std::sync::Arc;

/// The longest a keyset may live from now on before it is implausible (ACI §3.1).
const MAX_LIFETIME_SECS: u64 = 366 * 24 * 3600;

/// A keyset established through a checked report.
#[derive(Debug, Clone)]
pub struct Established {
    /// The keyset as served.
    pub keyset: Value,
    /// Its digest.
    pub digest: String,
}

const REPORT_CHECKS: [&str; 7] = [
    "aci.keyset_digest",
    "aci.statement",
    "aci.quote",
    "aci.quote_chain",
    "aci.gpu",
    "aci.expiry",
    "aci.tls",
];

/// The ACI report checks. `None` when the gateway is not an ACI service or its report
/// fails: then there is no established keyset to check receipts against.
pub(crate) async fn check_report(
    client: &crate::http::Client,
    options: &VerifyOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    list: &mut Checklist,
) -> Option<Established> {
    let nonce = Nonce::random();
    let nonce_text = nonce.to_hex();
    let fetched = client
        .send(
            Method::GET,
            &format!("/v1/aci/attestation?nonce={nonce_text}"),
            &[],
            Bytes::new(),
        )
        .await;
    let response = match fetched {
        Ok(response) => response,
        Err(e) => {
            list.skip("aci.report", false, format!("no ACI report ({e})"));
            return None;
        }
    };
    let json = response.json().ok();
    let version = json
        .as_ref()
        .and_then(|v| v.get("api_version"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(version) = version.filter(|_| response.status == 200) else {
        list.skip(
            "aci.report",
            false,
            format!(
                "not an ACI service (GET /v1/aci/attestation: HTTP {})",
                response.status
            ),
        );
        return None;
    };
    let report: AciReport = match (version == aci::API_VERSION)
        .then(|| json.map(serde_json::from_value::<AciReport>))
        .flatten()
    {
        Some(Ok(report)) => report,
        Some(Err(e)) => {
            list.record(
                "aci.report",
                true,
                Err(format!("malformed ACI report: {e}")),
            );
            skip_rest(list);
            return None;
        }
        None => {
            list.record(
                "aci.report",
                true,
                Err(format!("api_version {version:?}: only aci/1 is known")),
            );
            skip_rest(list);
            return None;
        }
    };
    list.record(
        "aci.report",
        true,
        Ok("an aci/1 report for a fresh random nonce".to_owned()),
    );
    record_provenance(
        report.attestation.source_provenance.as_ref(),
        &options.expect_provenance,
        list,
    );
    let nonce = AciNonce::parse(&nonce_text).ok();
    let Some(established) = check_binding(&report, nonce.as_ref(), list) else {
        for name in &REPORT_CHECKS[2..] {
            list.skip(
                name,
                true,
                "the report does not bind its keyset to this nonce",
            );
        }
        return None;
    };
    // The quote.
    let evidence = &report.attestation.evidence;
    let dev = evidence["attestation_mode"].as_str() == Some("dev");
    let quote = hex::decode(evidence["quote"].as_str().unwrap_or_default())
        .map_err(|_| "evidence.quote is not hex".to_owned());
    let slot = aci::report_data_slot(&{
        let mut digest = [0u8; 32];
        let _ = hex::decode_to_slice(&report.attestation.report_data, &mut digest);
        digest
    });
    let quote_ok = record_quote(quote.as_deref(), &slot, list);
    record_key_custody(&evidence["key_custody"], &established.keyset, list);
    match quote_ok {
        Some(bytes) => {
            check_intel_chain("aci.quote_chain", &bytes, options, dev, tls, list).await;
        }
        None => list.skip("aci.quote_chain", !dev, "no parsed quote"),
    }
    let payload = evidence["nvidia_payload"].as_str().unwrap_or_default();
    let gpu_mode = evidence["gpu_evidence"].as_str().unwrap_or_default();
    list.record(
        "aci.gpu",
        true,
        gpu_evidence_outcome(
            payload,
            gpu_mode == "dev",
            &Nonce(nonce_bytes(&nonce_text)),
            options,
        ),
    );
    record_expiry(&established.keyset, now_secs(), list);
    if client.base().tls {
        let listed = established.keyset["tls_public_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["spki_sha256"].as_str())
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>();
        list.record(
            "aci.tls",
            true,
            match response.peer_spki_sha256.map(hex::encode) {
                None => Err("no TLS certificate was seen on the report's connection".to_owned()),
                Some(seen) if listed.contains(&seen) => Ok(format!(
                    "the keyset lists the certificate key this connection saw ({}…)",
                    &seen[..16]
                )),
                Some(seen) => Err(format!(
                    "this connection was served with certificate key {seen}, which the keyset \
                     does not list: someone else terminates TLS in between"
                )),
            },
        );
    } else {
        list.skip("aci.tls", false, "cleartext URL: no certificate to pin");
    }
    list.aci_keyset_digest = Some(established.digest.clone());
    Some(established)
}

fn nonce_bytes(hex_text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let _ = hex::decode_to_slice(hex_text, &mut out);
    out
}

fn skip_rest(list: &mut Checklist) {
    for name in REPORT_CHECKS {
        list.skip(name, true, "no ACI report");
    }
}

/// §9.1 step 2: digest, then statement. Returns the established keyset.
fn check_binding(
    report: &AciReport,
    nonce: Option<&AciNonce>,
    list: &mut Checklist,
) -> Option<Established> {
    let keyset = report.attestation.workload_keyset.clone();
    let digest = match aci::keyset_digest(&keyset) {
        Ok(digest) => digest,
        Err(e) => {
            list.record("aci.keyset_digest", true, Err(e.to_string()));
            return None;
        }
    };
    let digest_ok = list.record(
        "aci.keyset_digest",
        true,
        if digest == report.workload_keyset_digest {
            Ok(format!("sha256(JCS(keyset)) = {digest}"))
        } else {
            Err(format!(
                "the keyset hashes to {digest}, not to the stated {}",
                report.workload_keyset_digest
            ))
        },
    );
    let statement = aci::statement(&digest, nonce);
    let expected = hex::encode(aci::statement_report_data(&statement));
    let statement_ok = list.record(
        "aci.statement",
        true,
        if expected == report.attestation.report_data {
            Ok(match nonce {
                Some(_) => "report_data = sha256(statement of this keyset and this nonce)",
                None => "report_data = sha256(statement of this keyset, nonce null: no freshness)",
            }
            .to_owned())
        } else {
            Err(format!(
                "report_data {} is not sha256({statement})",
                report.attestation.report_data
            ))
        },
    );
    (digest_ok && statement_ok).then_some(Established { keyset, digest })
}

/// The quote parses and carries exactly `slot`; returns its bytes.
fn record_quote(
    quote: Result<&[u8], &String>,
    slot: &[u8; 64],
    list: &mut Checklist,
) -> Option<Vec<u8>> {
    let outcome = quote.map_err(Clone::clone).and_then(|bytes| {
        let facts = crate::quote::parse_quote(bytes)?;
        if facts.report_data == *slot {
            Ok((
                bytes.to_vec(),
                format!(
                    "TDX quote v{} binds report_data (digest ‖ 32 zero bytes)",
                    facts.version
                ),
            ))
        } else {
            Err(format!(
                "the quote binds {}, not report_data ‖ 0³²",
                hex::encode(facts.report_data)
            ))
        }
    });
    match outcome {
        Ok((bytes, detail)) => {
            list.record("aci.quote", true, Ok(detail));
            Some(bytes)
        }
        Err(e) => {
            list.record("aci.quote", true, Err(e));
            None
        }
    }
}

fn record_expiry(keyset: &Value, at: u64, list: &mut Checklist) {
    list.record(
        "aci.expiry",
        true,
        match keyset["not_after"].as_u64() {
            None => Err("the keyset has no not_after".to_owned()),
            Some(not_after) if at >= not_after => {
                Err(format!("the keyset expired at {not_after} (now {at})"))
            }
            Some(not_after) if not_after - at > MAX_LIFETIME_SECS => Err(format!(
                "not_after {not_after} is implausibly far (more than 366 days)"
            )),
            Some(not_after) => Ok(format!("valid until {not_after}")),
        },
    );
}

/// §9.3 for the verifier's own completion: the receipt named by `X-Receipt-Id`.
pub(crate) async fn check_own_receipt(
    client: &crate::http::Client,
    headers: &[(&'static str, String)],
    established: &Established,
    receipt_id: Option<&str>,
    request: &[u8],
    response: &[u8],
    list: &mut Checklist,
) {
    let Some(receipt_id) = receipt_id else {
        list.record(
            "aci.receipt.fetch",
            true,
            Err("the completion came with neither X-Receipt-Id nor an id".to_owned()),
        );
        for name in ["aci.receipt.signature", "aci.receipt.hashes"] {
            list.skip(name, true, "no receipt id");
        }
        return;
    };
    let fetched = client
        .send(
            Method::GET,
            &format!("/v1/aci/receipts/{}", urlencoding::encode(receipt_id)),
            headers,
            Bytes::new(),
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.json_if_ok());
    let document = match fetched {
        Ok(document) => {
            list.record(
                "aci.receipt.fetch",
                true,
                Ok(format!("receipt {receipt_id}")),
            );
            document
        }
        Err(e) => {
            list.record("aci.receipt.fetch", true, Err(e));
            for name in ["aci.receipt.signature", "aci.receipt.hashes"] {
                list.skip(name, true, "no receipt");
            }
            return;
        }
    };
    record_receipt(&document, established, Some(request), Some(response), list);
}

/// Signature and keyset (§9.3 steps 1, 2), then the hashes against the bytes held (3, 4).
fn record_receipt(
    document: &Value,
    established: &Established,
    request: Option<&[u8]>,
    response: Option<&[u8]>,
    list: &mut Checklist,
) -> Option<VerifiedReceipt> {
    let verified = aci::verify_receipt(document, &established.keyset, &established.digest);
    let verified = match verified {
        Ok(verified) => {
            list.record(
                "aci.receipt.signature",
                true,
                Ok(format!(
                    "Ed25519 over its JCS form, by {} of the attested keyset",
                    document["key_id"].as_str().unwrap_or_default()
                )),
            );
            verified
        }
        Err(e) => {
            list.record("aci.receipt.signature", true, Err(e.to_string()));
            list.skip("aci.receipt.hashes", true, "the receipt does not verify");
            return None;
        }
    };
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    if let Some(request) = request {
        checked.push("request.received");
        if verified.request_received != aci::sha256_digest(request) {
            problems.push(format!(
                "request.received {} is not sha256 of the request body sent",
                verified.request_received
            ));
        }
    }
    if let Some(response) = response {
        checked.push("response.returned");
        if verified.response_returned != aci::sha256_digest(response) {
            problems.push(format!(
                "response.returned {} is not sha256 of the {} bytes received",
                verified.response_returned,
                response.len()
            ));
        }
    }
    if let Some(forwarded) = &verified.request_forwarded
        && *forwarded != verified.request_received
    {
        checked.push("request.forwarded");
        // A rewrite is for policy to judge; signet never rewrites, so say so.
        problems.push(format!(
            "request.forwarded {forwarded} differs from request.received: the service rewrote \
             the request"
        ));
    }
    if checked.is_empty() {
        list.skip(
            "aci.receipt.hashes",
            false,
            "no request or response bytes given to compare",
        );
    } else {
        list.record(
            "aci.receipt.hashes",
            true,
            if problems.is_empty() {
                Ok(format!(
                    "{} {} the bytes held",
                    checked.join(" and "),
                    if checked.len() == 1 {
                        "matches"
                    } else {
                        "match"
                    }
                ))
            } else {
                Err(problems.join("; "))
            },
        );
    }
    Some(verified)
}

/// `aci.key_custody` (§3.3): where the receipt key comes from, as `evidence.key_custody`
/// says. `random`: generated inside the attested workload, nothing more to check (shown).
/// `dstack`: the custody entry of the `aci-receipt` role must name the attested receipt key,
/// and the KMS-derived key must vouch for it (its EIP-191 `link_signature` over
/// `signet-key-custody:v1:aci-receipt:<key>` recovers to the address of `kms_public_key`)
/// with a non-empty `signature_chain`; required, since the report claims it. The chain up to
/// the KMS root is the verifier policy's (it needs the KMS root the policy trusts).
pub(crate) fn record_key_custody(custody: &Value, keyset: &Value, list: &mut Checklist) {
    let outcome = match custody["source"].as_str() {
        None => {
            list.skip(
                "aci.key_custody",
                false,
                "the report says nothing of the keys' custody",
            );
            return;
        }
        Some("random") => {
            list.skip(
                "aci.key_custody",
                false,
                "random: the keys were generated inside the attested workload at start",
            );
            return;
        }
        Some("dstack") => dstack_custody(custody, keyset),
        Some(other) => Err(format!("unknown key source {other:?}")),
    };
    list.record("aci.key_custody", true, outcome);
}

fn dstack_custody(custody: &Value, keyset: &Value) -> Result<String, String> {
    const ROLE: &str = "aci-receipt";
    let attested = keyset["receipt_signing_keys"][0]["public_key"]
        .as_str()
        .ok_or("the keyset lists no receipt key")?;
    let entry = custody["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["role"] == ROLE)
        .ok_or("key_custody has no aci-receipt entry")?;
    let field = |name: &str| {
        entry[name]
            .as_str()
            .ok_or_else(|| format!("key_custody aci-receipt entry has no {name}"))
    };
    let public_key = field("public_key")?;
    if !public_key.eq_ignore_ascii_case(attested) {
        return Err(format!(
            "key_custody names receipt key {public_key}, the keyset {attested}"
        ));
    }
    let kms_address = signet_core::signing::address_of_public_key_hex(field("kms_public_key")?)
        .map_err(|e| format!("kms_public_key: {e}"))?;
    let link = signet_core::signing::RecoverableSignature::parse(field("link_signature")?)
        .map_err(|e| format!("link_signature: {e}"))?;
    let text = signet_core::signing::custody_link_text(ROLE, public_key);
    let signer = signet_core::signing::recover_address(text.as_bytes(), &link)
        .map_err(|e| format!("link_signature: {e}"))?;
    if signer != kms_address {
        return Err(format!(
            "the link signature is {}'s, not the KMS key's ({})",
            signer.to_checksum(),
            kms_address.to_checksum()
        ));
    }
    if entry["signature_chain"]
        .as_array()
        .is_none_or(|chain| chain.is_empty())
    {
        return Err("no KMS signature_chain".to_owned());
    }
    Ok(format!(
        "dstack KMS key at {}: it vouches for the receipt key; check its signature_chain up to \
         the KMS root your policy trusts",
        entry["path"].as_str().unwrap_or("?")
    ))
}

/// What the user expects the report's `source_provenance` to name.
#[derive(Debug, Clone, Default)]
pub struct ProvenanceExpectations {
    /// `repo_url`.
    pub repo_url: Option<String>,
    /// `repo_commit` (compared without regard to case).
    pub commit: Option<String>,
    /// `image_digest` (`sha256:<hex>`, compared without regard to case).
    pub image_digest: Option<String>,
}

impl ProvenanceExpectations {
    /// Whether anything is expected.
    pub fn is_asked(&self) -> bool {
        self.repo_url.is_some() || self.commit.is_some() || self.image_digest.is_some()
    }
}

/// `aci.provenance`: required and judged when something is expected, else shown.
pub(crate) fn record_provenance(
    provenance: Option<&SourceProvenance>,
    expect: &ProvenanceExpectations,
    list: &mut Checklist,
) {
    let field = |name: &str| -> Option<&str> {
        let provenance = provenance?;
        match name {
            "repo_url" => provenance.repo_url.as_deref(),
            "repo_commit" => provenance.repo_commit.as_deref(),
            _ => provenance.image_digest.as_deref(),
        }
    };
    let stated = ["repo_url", "repo_commit", "image_digest"]
        .iter()
        .map(|name| format!("{name} {}", field(name).unwrap_or("null")))
        .collect::<Vec<_>>()
        .join(", ");
    if !expect.is_asked() {
        list.skip(
            "aci.provenance",
            false,
            format!(
                "not asked (--expect-commit, --expect-image-digest, --expect-repo); the report \
                 states {stated}"
            ),
        );
        return;
    }
    let mut problems = Vec::new();
    let mut matched = Vec::new();
    let expectations = [
        ("repo_url", expect.repo_url.as_deref(), "--expect-repo"),
        ("repo_commit", expect.commit.as_deref(), "--expect-commit"),
        (
            "image_digest",
            expect.image_digest.as_deref(),
            "--expect-image-digest",
        ),
    ];
    for (name, wanted, flag) in expectations {
        let Some(wanted) = wanted else { continue };
        let same = |stated: &str| match name {
            "repo_url" => stated.trim_end_matches('/') == wanted.trim_end_matches('/'),
            _ => stated.eq_ignore_ascii_case(wanted.trim()),
        };
        match field(name) {
            None => problems.push(format!(
                "the report states no {name} (null), {flag} wants {wanted}"
            )),
            Some(stated) if same(stated) => matched.push(format!("{name} {stated}")),
            Some(stated) => problems.push(format!("{name} is {stated}, {flag} wants {wanted}")),
        }
    }
    list.record(
        "aci.provenance",
        true,
        if problems.is_empty() {
            Ok(format!(
                "{} as expected (stated by the report, outside the quote: corroborate with \
                 measured evidence)",
                matched.join(", ")
            ))
        } else {
            Err(problems.join("; "))
        },
    );
}

/// What `signet verify-receipt` is given besides the two documents.
#[derive(Debug, Clone, Default)]
pub struct OfflineOptions {
    /// The nonce the report was fetched with (else `evidence.gpu_nonce`, else `null`).
    pub nonce: Option<String>,
    /// The request body sent, to compare with `request.received`.
    pub request: Option<Vec<u8>>,
    /// The response body received, to compare with `response.returned`.
    pub response: Option<Vec<u8>>,
    /// Accept a dev report (mock quote).
    pub allow_dev: bool,
    /// Intel collateral for the report's quote (`--collateral`): check its chain offline.
    pub collateral: Option<Box<QuoteCollateralV3>>,
    /// Judge the collateral as of this time (Unix seconds) instead of now.
    pub at: Option<u64>,
    /// TCB statuses accepted besides `UpToDate`.
    pub accept_tcb: Vec<String>,
    /// What `source_provenance` must name.
    pub expect_provenance: ProvenanceExpectations,
}

/// `signet verify-receipt`: re-checks an archived receipt against an archived report, with
/// no network: the report's keyset digest and statement, its quote's binding (and, given
/// collateral, its chain to Intel's root), the provenance asked for, that the keyset was
/// not expired when the receipt was served, and the receipt itself.
pub fn verify_offline(receipt: &[u8], report: &[u8], options: &OfflineOptions) -> Checklist {
    let mut list = Checklist {
        url: "(offline)".to_owned(),
        ..Checklist::default()
    };
    let report: AciReport = match serde_json::from_slice(report) {
        Ok(report) => report,
        Err(e) => {
            list.record("aci.report", true, Err(format!("the report: {e}")));
            return list;
        }
    };
    let document: Value = match serde_json::from_slice(receipt) {
        Ok(document) => document,
        Err(e) => {
            list.record("aci.receipt", true, Err(format!("the receipt: {e}")));
            return list;
        }
    };
    if !list.record(
        "aci.report",
        true,
        if report.api_version == aci::API_VERSION {
            Ok("an aci/1 report".to_owned())
        } else {
            Err(format!("api_version {:?}", report.api_version))
        },
    ) {
        return list;
    }
    let evidence = &report.attestation.evidence;
    let dev = evidence["attestation_mode"].as_str() == Some("dev");
    list.record(
        "aci.mode",
        true,
        match (dev, options.allow_dev) {
            (false, _) => Ok(format!(
                "{}: hardware-rooted quote (its Intel chain is checked live by signet verify)",
                evidence["attestation_mode"].as_str().unwrap_or("tdx")
            )),
            (true, true) => Ok("dev: NOT hardware-rooted (accepted by --allow-dev)".to_owned()),
            (true, false) => Err("dev: a mock quote (pass --allow-dev to accept)".to_owned()),
        },
    );
    record_provenance(
        report.attestation.source_provenance.as_ref(),
        &options.expect_provenance,
        &mut list,
    );
    // The chain does not depend on the binding: judged for any quote the report carries.
    let quote = hex::decode(evidence["quote"].as_str().unwrap_or_default())
        .map_err(|_| "evidence.quote is not hex".to_owned());
    record_offline_chain(quote.as_deref().ok(), options, dev, &mut list);
    let nonce_text = options
        .nonce
        .clone()
        .or_else(|| evidence["gpu_nonce"].as_str().map(str::to_owned));
    let nonce = match nonce_text.as_deref().map(AciNonce::parse).transpose() {
        Ok(nonce) => nonce,
        Err(e) => {
            list.record("aci.statement", true, Err(format!("--nonce: {e}")));
            return list;
        }
    };
    // A null-nonce report was bound with `"nonce":null`; the GPU nonce of such a report is
    // the statement digest, which never rebuilds it.
    let nonce = match nonce {
        Some(nonce) if check_quietly(&report, Some(&nonce)) => Some(nonce),
        Some(_) if options.nonce.is_none() && check_quietly(&report, None) => None,
        other => other,
    };
    let Some(established) = check_binding(&report, nonce.as_ref(), &mut list) else {
        return list;
    };
    let mut digest = [0u8; 32];
    let _ = hex::decode_to_slice(&report.attestation.report_data, &mut digest);
    record_quote(quote.as_deref(), &aci::report_data_slot(&digest), &mut list);
    record_key_custody(&evidence["key_custody"], &established.keyset, &mut list);
    let Some(verified) = record_receipt(
        &document,
        &established,
        options.request.as_deref(),
        options.response.as_deref(),
        &mut list,
    ) else {
        return list;
    };
    // Was the keyset valid when the receipt was served?
    record_expiry_at_service(&established.keyset, verified.served_at, &mut list);
    list.completion_id = verified.chat_id;
    list.aci_keyset_digest = Some(established.digest);
    list
}

/// `aci.quote_chain` offline: against the collateral given, as of `--at` (or now). Not
/// asked: shown, not deciding (the live `signet verify` checks it). A dev quote never
/// chains, and its check does not decide.
fn record_offline_chain(
    quote: Option<&[u8]>,
    options: &OfflineOptions,
    dev: bool,
    list: &mut Checklist,
) {
    let Some(collateral) = &options.collateral else {
        list.skip(
            "aci.quote_chain",
            false,
            "not asked (give --collateral with Intel collateral saved for this quote)",
        );
        return;
    };
    let Some(quote) = quote else {
        list.record(
            "aci.quote_chain",
            !dev,
            Err("evidence.quote is not hex".to_owned()),
        );
        return;
    };
    let at = options.at.unwrap_or_else(now_secs);
    list.record(
        "aci.quote_chain",
        !dev,
        crate::judge_chain(quote, collateral, at, &options.accept_tcb),
    );
}

fn check_quietly(report: &AciReport, nonce: Option<&AciNonce>) -> bool {
    aci::check_report_binding(report, nonce).is_ok()
}

fn record_expiry_at_service(keyset: &Value, served_at: u64, list: &mut Checklist) {
    list.record(
        "aci.expiry",
        true,
        match keyset["not_after"].as_u64() {
            None => Err("the keyset has no not_after".to_owned()),
            Some(not_after) if served_at >= not_after => Err(format!(
                "served at {served_at}, after the keyset expired ({not_after})"
            )),
            Some(not_after) => Ok(format!(
                "served at {served_at}, before the keyset's not_after {not_after}"
            )),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use signet_core::aci::{ReceiptBody, WorkloadKeyset};
    use signet_core::signing::ed25519::Ed25519Signer;

    fn keyset(key: &Ed25519Signer) -> WorkloadKeyset {
        WorkloadKeyset {
            subject: None,
            not_after: 4_000_000_000,
            receipt_signing_keys: vec![aci::ReceiptKeyEntry {
                key_id: "receipt-1".to_owned(),
                algo: "ed25519".to_owned(),
                public_key: key.public_key_hex(),
            }],
            e2ee_public_keys: Vec::new(),
            tls_public_keys: Vec::new(),
        }
    }

    fn make_report(keyset: &WorkloadKeyset, nonce: Option<&AciNonce>, quote: &[u8]) -> Value {
        let digest = keyset.digest().unwrap();
        let report_data = aci::statement_report_data(&aci::statement(&digest, nonce));
        json!({
            "api_version": "aci/1",
            "workload_keyset_digest": digest,
            "attestation": {
                "tee_type": "tdx",
                "workload_keyset": keyset.to_value(),
                "report_data": hex::encode(report_data),
                "source_provenance": null,
                "evidence": {"quote": hex::encode(quote), "attestation_mode": "dev",
                              "gpu_nonce": nonce.map(AciNonce::as_str)},
            },
            "service_capabilities": {"supported_e2ee_versions": [], "serving": "direct"},
        })
    }

    fn make_receipt(key: &Ed25519Signer, digest: &str, served_at: u64) -> Value {
        let body = ReceiptBody {
            receipt_id: "rcpt-1".to_owned(),
            chat_id: Some("chat-1".to_owned()),
            model: None,
            workload_keyset_digest: digest.to_owned(),
            endpoint: "/v1/chat/completions".to_owned(),
            method: "POST".to_owned(),
            served_at,
            request_received: sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(b"req"),
            )
            .into(),
            request_forwarded: None,
            response_returned: sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(b"resp"),
            )
            .into(),
            key_id: "receipt-1".to_owned(),
        };
        body.signed_document(&body.sign(key).unwrap())
    }

    fn status(list: &Checklist, name: &str) -> crate::Status {
        list.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {list:?}"))
            .status
    }

    #[test]
    fn an_archived_receipt_verifies_offline_and_a_tampered_one_does_not() {
        let key = Ed25519Signer::generate();
        let keyset = keyset(&key);
        let digest = keyset.digest().unwrap();
        let nonce = AciNonce::parse(&"ab".repeat(32)).unwrap();
        let slot = aci::report_data_slot(&aci::statement_report_data(&aci::statement(
            &digest,
            Some(&nonce),
        )));
        let quote = signet_attest::DevQuoteProvider::generate().mock_quote(&slot);
        let report = serde_json::to_vec(&make_report(&keyset, Some(&nonce), &quote)).unwrap();
        let receipt = serde_json::to_vec(&make_receipt(&key, &digest, 1_800_000_000)).unwrap();
        let options = OfflineOptions {
            request: Some(b"req".to_vec()),
            response: Some(b"resp".to_vec()),
            allow_dev: true,
            ..OfflineOptions::default()
        };
        let list = verify_offline(&receipt, &report, &options);
        assert!(list.passed(), "{}", list.render());
        for name in [
            "aci.keyset_digest",
            "aci.statement",
            "aci.quote",
            "aci.receipt.signature",
            "aci.receipt.hashes",
            "aci.expiry",
        ] {
            assert_eq!(status(&list, name), crate::Status::Pass, "{name}");
        }
        // Another response body, a dev report without --allow-dev, a tampered receipt.
        let wrong = OfflineOptions {
            response: Some(b"other".to_vec()),
            ..options.clone()
        };
        assert_eq!(
            status(
                &verify_offline(&receipt, &report, &wrong),
                "aci.receipt.hashes"
            ),
            crate::Status::Fail
        );
        let strict = OfflineOptions {
            allow_dev: false,
            ..options.clone()
        };
        assert!(!verify_offline(&receipt, &report, &strict).passed());
        let mut tampered: Value = serde_json::from_slice(&receipt).unwrap();
        tampered["served_at"] = json!(1_800_000_001);
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            status(
                &verify_offline(&tampered, &report, &options),
                "aci.receipt.signature"
            ),
            crate::Status::Fail
        );
        // Served after the keyset expired.
        let late = serde_json::to_vec(&make_receipt(&key, &digest, 4_000_000_000)).unwrap();
        assert_eq!(
            status(&verify_offline(&late, &report, &options), "aci.expiry"),
            crate::Status::Fail
        );
        // A receipt from another key is not in the keyset.
        let stranger = Ed25519Signer::generate();
        let foreign = serde_json::to_vec(&make_receipt(&stranger, &digest, 1_800_000_000)).unwrap();
        assert!(!verify_offline(&foreign, &report, &options).passed());
        // A quote over other report data.
        let other_quote = signet_attest::DevQuoteProvider::generate().mock_quote(&[7; 64]);
        let lying = serde_json::to_vec(&make_report(&keyset, Some(&nonce), &other_quote)).unwrap();
        assert_eq!(
            status(&verify_offline(&receipt, &lying, &options), "aci.quote"),
            crate::Status::Fail
        );
    }

    #[test]
    fn a_null_nonce_report_is_rebuilt_with_null() {
        let key = Ed25519Signer::generate();
        let keyset = keyset(&key);
        let digest = keyset.digest().unwrap();
        let slot =
            aci::report_data_slot(&aci::statement_report_data(&aci::statement(&digest, None)));
        let quote = signet_attest::DevQuoteProvider::generate().mock_quote(&slot);
        let mut report = make_report(&keyset, None, &quote);
        // The GPU nonce of an unchallenged report is not the statement's nonce.
        report["attestation"]["evidence"]["gpu_nonce"] = json!("cd".repeat(32));
        let report = serde_json::to_vec(&report).unwrap();
        let receipt = serde_json::to_vec(&make_receipt(&key, &digest, 1_800_000_000)).unwrap();
        let options = OfflineOptions {
            allow_dev: true,
            ..OfflineOptions::default()
        };
        let list = verify_offline(&receipt, &report, &options);
        assert!(list.passed(), "{}", list.render());
        assert_eq!(status(&list, "aci.receipt.hashes"), crate::Status::Skip);
    }
}
