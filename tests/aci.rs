//! ACI (`aci/1`) against a live signet: the attestation report binds the keyset and the
//! client's nonce into the quote, every delivered completion gets a receipt that verifies
//! under the attested keyset, receipts go only to the credential that made the request, and
//! an upstream can forge none of ACI's headers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use signet_core::aci::{self, AciNonce, AciReport};

const NONCE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

async fn aci_report(gateway: &Gateway, query: &str) -> Reply {
    request(
        gateway.addr,
        "GET",
        &format!("/v1/aci/attestation{query}"),
        &[],
        Vec::new(),
    )
    .await
}

async fn receipt(gateway: &Gateway, id: &str, headers: &[(&str, &str)]) -> Reply {
    request(
        gateway.addr,
        "GET",
        &format!("/v1/aci/receipts/{id}"),
        headers,
        Vec::new(),
    )
    .await
}

/// The established keyset of a gateway: its report for a fresh nonce, checked.
async fn established(gateway: &Gateway) -> (serde_json::Value, String) {
    let reply = aci_report(gateway, &format!("?nonce={NONCE}")).await;
    assert_eq!(reply.status, 200);
    let report: AciReport = serde_json::from_value(reply.json()).unwrap();
    aci::check_report_binding(&report, Some(&AciNonce::parse(NONCE).unwrap())).unwrap();
    (
        report.attestation.workload_keyset,
        report.workload_keyset_digest,
    )
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_report_binds_the_keyset_and_the_nonce_into_the_quote() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let reply = aci_report(&gateway, &format!("?nonce={NONCE}")).await;
    assert_eq!(reply.status, 200);
    let json = reply.json();
    let report: AciReport = serde_json::from_value(json.clone()).unwrap();
    let nonce = AciNonce::parse(NONCE).unwrap();
    let slot = aci::check_report_binding(&report, Some(&nonce)).unwrap();
    // The quote carries exactly the slot: statement digest, then 32 zero bytes.
    let evidence = &report.attestation.evidence;
    let quote = hex::decode(evidence["quote"].as_str().unwrap()).unwrap();
    let parsed = tdx_quote::Quote::from_bytes(&quote).unwrap();
    assert_eq!(parsed.report_input_data(), slot);
    assert_eq!(&slot[32..], &[0u8; 32]);
    assert_eq!(evidence["quote_report_data"], hex::encode(slot));
    // The GPU evidence is over the client's nonce.
    let payload: serde_json::Value =
        serde_json::from_str(evidence["nvidia_payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["nonce"], NONCE);
    assert_eq!(evidence["attestation_mode"], "dev");
    // The keyset: one Ed25519 receipt key, one E2EE v2 key per suite, no TLS key (no TLS
    // here), null subject.
    let keyset = &report.attestation.workload_keyset;
    assert_eq!(keyset["receipt_signing_keys"][0]["algo"], "ed25519");
    assert_eq!(keyset["receipt_signing_keys"][0]["key_id"], "receipt-1");
    assert_eq!(keyset["e2ee_public_keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        json["service_capabilities"]["supported_e2ee_versions"],
        serde_json::json!(["2"])
    );
    assert_eq!(keyset["tls_public_keys"], serde_json::json!([]));
    assert!(keyset["subject"].is_null());
    let not_after = keyset["not_after"].as_u64().unwrap();
    let now = signet::config::unix_now();
    assert!(not_after > now + 29 * 86_400 && not_after <= now + 30 * 86_400 + 60);
    assert!(json["attestation"]["source_provenance"].is_null());
    assert_eq!(json["service_capabilities"]["serving"], "direct");
    assert_eq!(json["attestation"]["tee_type"], "tdx");
    // The headers name the same keyset.
    assert_eq!(header(&reply, "x-aci-version"), Some("aci/1"));
    assert_eq!(
        header(&reply, "x-aci-keyset-digest"),
        Some(report.workload_keyset_digest.as_str())
    );
    // The ACI key is not the legacy ECDSA or Ed25519 key.
    let legacy = request(
        gateway.addr,
        "GET",
        "/v1/attestation/report?signing_algo=ed25519",
        &[],
        Vec::new(),
    )
    .await
    .json();
    assert_ne!(
        legacy["signing_public_key"],
        keyset["receipt_signing_keys"][0]["public_key"]
    );

    // Without a nonce: the `null` statement, which a verifier can rebuild too.
    let unchallenged: AciReport =
        serde_json::from_value(aci_report(&gateway, "").await.json()).unwrap();
    aci::check_report_binding(&unchallenged, None).unwrap();
    assert!(aci::check_report_binding(&unchallenged, Some(&nonce)).is_err());
}

#[tokio::test]
async fn nonces_are_64_lowercase_hex_given_once() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    for query in [
        "?nonce=".to_owned(),
        "?nonce=abc".to_owned(),
        format!("?nonce={}", NONCE.to_uppercase()),
        format!("?nonce={NONCE}00"),
        format!("?nonce={NONCE}&nonce={NONCE}"),
    ] {
        let reply = aci_report(&gateway, &query).await;
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(
            reply.json()["error"]["type"],
            "invalid_request_error",
            "{query}"
        );
    }
    let post = request(
        gateway.addr,
        "POST",
        "/v1/aci/attestation",
        &[],
        b"{}".to_vec(),
    )
    .await;
    post.assert_envelope(405, "method_not_allowed");
    // Other spellings of the route never reach the upstream.
    aci_report(&gateway, "/")
        .await
        .assert_envelope(400, "ambiguous_path");
}

/// A completion id, a request body and extra request headers.
type Case<'a> = (&'a str, &'a [u8], &'a [(&'a str, &'a str)]);

#[tokio::test]
async fn every_delivered_completion_gets_a_receipt_that_verifies() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let (keyset, digest) = established(&gateway).await;
    let cases: [Case; 4] = [
        (
            "aci-stream",
            br#"{"model":"m-1","stream":true}"#,
            &[("x-mock-chunks", "1,7,3")],
        ),
        ("aci-json", br#"{"model":"m-2","stream":false}"#, &[]),
        (
            "aci-inband-stream",
            br#"{"model":"m-3","stream":true}"#,
            &[("x-signet-signature", "in-band")],
        ),
        (
            "aci-inband-json",
            br#"{"model":"m-4","stream":false}"#,
            &[("x-signet-signature", "in-band")],
        ),
    ];
    for (id, body, extra) in cases {
        let mut headers = vec![("x-mock-id", id)];
        headers.extend_from_slice(extra);
        let reply = gateway.post("/v1/chat/completions", &headers, body).await;
        assert_eq!(reply.status, 200, "{id}");
        assert_eq!(header(&reply, "x-aci-version"), Some("aci/1"));
        assert_eq!(header(&reply, "x-aci-keyset-digest"), Some(digest.as_str()));
        let receipt_id = header(&reply, "x-receipt-id")
            .expect("X-Receipt-Id")
            .to_owned();
        let document = receipt(&gateway, &receipt_id, &[]).await;
        assert_eq!(document.status, 200, "{id}");
        let document = document.json();
        let verified = aci::verify_receipt(&document, &keyset, &digest).unwrap();
        // The wire bytes both ways, the in-band trailer included when there is one.
        assert_eq!(verified.request_received, aci::sha256_digest(body), "{id}");
        assert_eq!(
            verified.request_forwarded.as_deref(),
            Some(verified.request_received.as_str())
        );
        assert_eq!(
            verified.response_returned,
            aci::sha256_digest(&reply.body),
            "{id}"
        );
        assert_eq!(verified.chat_id.as_deref(), Some(id));
        assert_eq!(verified.receipt_id, receipt_id);
        assert_eq!(document["endpoint"], "/v1/chat/completions");
        assert_eq!(document["method"], "POST");
        assert_eq!(
            document["model"],
            serde_json::from_slice::<serde_json::Value>(body).unwrap()["model"]
        );
        // The response id finds the same receipt.
        assert_eq!(receipt(&gateway, id, &[]).await.json(), document);
    }
    // /v1/completions too, with its own endpoint.
    let reply = gateway
        .post(
            "/v1/completions",
            &[("x-mock-id", "aci-cmpl")],
            br#"{"prompt":"x"}"#,
        )
        .await;
    let receipt_id = header(&reply, "x-receipt-id").unwrap().to_owned();
    let document = receipt(&gateway, &receipt_id, &[]).await.json();
    assert_eq!(document["endpoint"], "/v1/completions");
    assert!(document["model"].is_null());
    aci::verify_receipt(&document, &keyset, &digest).unwrap();
}

#[tokio::test]
async fn what_is_not_signed_has_no_receipt_and_upstreams_forge_no_aci_header() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let (_, digest) = established(&gateway).await;
    // An upstream error: no receipt promised.
    let reply = gateway
        .post("/v1/chat/completions", &[("x-mock-status", "500")], b"{}")
        .await;
    assert_eq!(reply.status, 500);
    assert_eq!(header(&reply, "x-receipt-id"), None);
    assert_eq!(header(&reply, "x-aci-version"), Some("aci/1"));
    // A forged receipt id is replaced by signet's own; a forged digest by the real one.
    for forged in [
        "X-Receipt-Id: rcpt-forged",
        "X-ACI-Keyset-Digest: sha256:00",
    ] {
        let reply = gateway
            .post(
                "/v1/chat/completions",
                &[("x-mock-header", forged), ("x-mock-id", "aci-forged")],
                b"{}",
            )
            .await;
        assert_eq!(reply.headers.get_all("x-receipt-id").iter().count(), 1);
        assert_ne!(header(&reply, "x-receipt-id"), Some("rcpt-forged"));
        assert_eq!(header(&reply, "x-aci-keyset-digest"), Some(digest.as_str()));
    }
    let models = request(
        gateway.addr,
        "GET",
        "/v1/models",
        &[("x-mock-header", "X-Receipt-Id: rcpt-forged")],
        Vec::new(),
    )
    .await;
    assert_eq!(
        header(&models, "x-receipt-id"),
        None,
        "pass-through answers carry none"
    );
    assert_eq!(
        header(&models, "x-aci-keyset-digest"),
        Some(digest.as_str())
    );
    // A stream the client abandons is never signed, and has no receipt.
    let mut open = open(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-gate", "aci-abandon"),
            ("x-mock-id", "aci-abandoned"),
            ("x-mock-events", "2000"),
        ],
        br#"{"stream":true}"#.to_vec(),
    )
    .await;
    let receipt_id = open
        .headers
        .get("x-receipt-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    open.read_until(b"\n\n").await;
    drop(open);
    upstream.release("aci-abandon").await;
    gateway.wait_for_log_line(&["id=aci-abandoned", "signed=false"]);
    assert_eq!(receipt(&gateway, &receipt_id, &[]).await.status, 404);
    assert_eq!(receipt(&gateway, "aci-abandoned", &[]).await.status, 404);
}

#[tokio::test]
async fn a_receipt_goes_only_to_the_credential_that_made_the_request() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  auth:\n    tokens: [\"token-alice-0000001\", \"token-bob-000000002\"]\n",
    );
    let alice = ("authorization", "Bearer token-alice-0000001");
    let bob = ("authorization", "Bearer token-bob-000000002");
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[alice, ("x-mock-id", "aci-alice")],
            b"{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    let receipt_id = header(&reply, "x-receipt-id").unwrap().to_owned();
    for id in [receipt_id.as_str(), "aci-alice"] {
        assert_eq!(receipt(&gateway, id, &[alice]).await.status, 200);
        let wrong = receipt(&gateway, id, &[bob]).await;
        assert_eq!(wrong.status, 404);
        assert_eq!(wrong.json()["error"]["type"], "not_found");
        let unknown = receipt(&gateway, "rcpt-nothing-here", &[bob]).await;
        assert_eq!(
            wrong.body, unknown.body,
            "a wrong credential looks like an unknown id"
        );
        let none = receipt(&gateway, id, &[]).await;
        assert_eq!(none.status, 401);
        assert_eq!(none.json()["error"]["type"], "unauthorized");
    }
    // The report stays public.
    assert_eq!(aci_report(&gateway, "").await.status, 200);
}

#[tokio::test]
async fn the_legacy_protocol_answers_with_the_ed25519_key_too() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let body = br#"{"stream":true}"#;
    let reply = gateway
        .post("/v1/chat/completions", &[("x-mock-id", "ed-1")], body)
        .await;
    assert_eq!(reply.status, 200);
    let signature = request(
        gateway.addr,
        "GET",
        "/v1/signature/ed-1?signing_algo=ed25519",
        &[],
        Vec::new(),
    )
    .await
    .json();
    let text = format!("{}:{}", sha256_hex(body), sha256_hex(&reply.body));
    assert_eq!(signature["text"], text.as_str());
    assert_eq!(signature["signing_algo"], "ed25519");
    let key = signature["signing_address"].as_str().unwrap();
    let sig = signature["signature"].as_str().unwrap();
    assert_eq!((key.len(), sig.len()), (64, 128), "hex without 0x");
    signet_core::signing::ed25519::verify_hex(key, text.as_bytes(), sig).unwrap();
    // The key is the one the Ed25519 report attests.
    let report = request(
        gateway.addr,
        "GET",
        &format!("/v1/attestation/report?signing_algo=ed25519&nonce={NONCE}"),
        &[],
        Vec::new(),
    )
    .await
    .json();
    assert_eq!(report["signing_address"], key);
    // The ECDSA signature is unchanged.
    assert_receipt(
        &gateway.signature("ed-1").await.json(),
        body,
        &reply.body,
        &gateway.signing_address().await,
    );
    let unknown = request(
        gateway.addr,
        "GET",
        "/v1/signature/ed-unknown?signing_algo=ed25519",
        &[],
        Vec::new(),
    )
    .await;
    unknown.assert_envelope(404, "signature_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_keyset_lists_the_served_certificate_key() {
    let upstream = Upstream::start();
    let serving = TestCert::localhost();
    let gateway = Gateway::start_tls(&upstream.url(), &serving);
    let tls = signet_verify::http::tls_config(Some(serving.cert_pem.as_bytes())).unwrap();
    let base =
        signet_verify::http::BaseUrl::parse(&format!("https://localhost:{}", gateway.addr.port()))
            .unwrap();
    let client =
        signet_verify::http::Client::new(base, Some(tls), std::time::Duration::from_secs(10));
    let reply = client
        .send(
            http::Method::GET,
            &format!("/v1/aci/attestation?nonce={NONCE}"),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    let report: AciReport = serde_json::from_value(reply.json().unwrap()).unwrap();
    aci::check_report_binding(&report, Some(&AciNonce::parse(NONCE).unwrap())).unwrap();
    let entries = &report.attestation.workload_keyset["tls_public_keys"];
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(
        entries[0]["spki_sha256"].as_str().unwrap(),
        hex::encode(reply.peer_spki_sha256.unwrap()),
        "the SPKI the client pins is the one it sees"
    );
    assert!(entries[0].get("domain").is_none());
}

#[test]
fn a_keyset_expiry_in_the_past_or_too_far_is_refused_at_start() {
    for (value, words) in [
        ("1000000000", "in the past"),
        ("\"400d\"", "implausibly far"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("signet.yaml");
        let text = config_text(
            free_port(),
            "http://127.0.0.1:9",
            dir.path(),
            &format!("  aci:\n    not_after: {value}\n"),
        );
        std::fs::write(&config, text).unwrap();
        let (ok, _, stderr) = run_signet(&["serve", "-t", "-c", config.to_str().unwrap()]);
        assert!(!ok, "{value}");
        assert!(stderr.contains("signet.aci.not_after"), "{stderr}");
        assert!(stderr.contains(words), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_receipt_verifies_offline_with_signet_verify_receipt() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let body = br#"{"model":"m","stream":true}"#;
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-id", "aci-archived")],
            body,
        )
        .await;
    let receipt_id = header(&reply, "x-receipt-id").unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let receipt_file = write(
        "receipt.json",
        &receipt(&gateway, &receipt_id, &[]).await.body,
    );
    let report_file = write(
        "report.json",
        &aci_report(&gateway, &format!("?nonce={NONCE}")).await.body,
    );
    let request_file = write("request.json", body);
    let response_file = write("response.sse", &reply.body);
    let other_file = write("other.sse", b"data: [DONE]\n\n");
    let run = |response: String, extra: &'static [&'static str]| {
        let (receipt_file, report_file, request_file) = (
            receipt_file.clone(),
            report_file.clone(),
            request_file.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "verify-receipt",
                &receipt_file,
                "--report",
                &report_file,
                "--request",
                &request_file,
                "--response",
                &response,
            ];
            args.extend_from_slice(extra);
            run_signet(&args)
        })
    };
    let (ok, text, _) = run(response_file.clone(), &["--allow-dev"]).await.unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("PASS  aci.receipt.signature"), "{text}");
    assert!(text.contains("PASS  aci.receipt.hashes"), "{text}");
    assert!(text.contains("VERDICT: PASS"), "{text}");
    // Other bytes than those received, or a dev report without --allow-dev: refused.
    let (ok, text, _) = run(other_file, &["--allow-dev"]).await.unwrap();
    assert!(!ok && text.contains("FAIL  aci.receipt.hashes"), "{text}");
    let (ok, text, _) = run(response_file, &[]).await.unwrap();
    assert!(!ok && text.contains("FAIL  aci.mode"), "{text}");
}
