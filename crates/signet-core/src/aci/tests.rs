//! Every construction of `shared/refs/aci/test-vectors.md`, byte for byte, plus the
//! verification rules around them.

use super::*;

const KEYSET_JCS: &str = r#"{"e2ee_public_keys":[{"algo":"x25519-aes-256-gcm-hkdf-sha256","key_id":"e2ee-1","public_key":"5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22"}],"not_after":1800000000,"receipt_signing_keys":[{"algo":"ed25519","key_id":"receipt-1","public_key":"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"}],"subject":"dstack-app://example-app","tls_public_keys":[{"domain":"api.example.com","spki_sha256":"c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"}]}"#;
const KEYSET_DIGEST: &str =
    "sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371";
const NONCE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const STATEMENT: &str = r#"{"keyset_digest":"sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371","nonce":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","purpose":"aci.report_data.v1"}"#;
const REPORT_DATA: &str = "df2174d28130852b413646a3786927b93e94c11d770268b65def8bdba45cb49e";
const STATEMENT_NULL: &str = r#"{"keyset_digest":"sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371","nonce":null,"purpose":"aci.report_data.v1"}"#;
const REPORT_DATA_NULL: &str = "0633919ca3f00e97bafaa3304278eb22420cc3ff0d19f87dfca2d3f7508150bc";
const SLOT: &str = "df2174d28130852b413646a3786927b93e94c11d770268b65def8bdba45cb49e0000000000000000000000000000000000000000000000000000000000000000";
const REQUEST: &str = r#"{"messages":[{"content":"hi","role":"user"}],"model":"demo-model"}"#;
const REQUEST_HASH: &str =
    "sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b";
const RESPONSE: &str = r#"{"choices":[],"id":"chatcmpl-123"}"#;
const RESPONSE_HASH: &str =
    "sha256:dedfffe5b14d031b8e2c01996d021a15293cb7c63b56be7e4be9e89b6f0a5f61";
const SESSION_ID: &str = "95ad1cb4dd25445808c2e9d116caf420b05703730b506395e8fc1ca6faeae28f";
const SIGNING_INPUT: &str = r#"{"api_version":"aci/1","chat_id":"chatcmpl-123","endpoint":"/v1/chat/completions","event_log":[{"body_hash":"sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b","type":"request.received"},{"body_hash":"sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b","type":"request.forwarded"},{"model_id":"demo-model","required":true,"result":"verified","session_id":"95ad1cb4dd25445808c2e9d116caf420b05703730b506395e8fc1ca6faeae28f","type":"upstream.verified"},{"body_hash":"sha256:dedfffe5b14d031b8e2c01996d021a15293cb7c63b56be7e4be9e89b6f0a5f61","type":"response.returned"}],"key_id":"receipt-1","method":"POST","model":"demo-model","receipt_id":"rcpt-0001","served_at":1750000000,"workload_keyset_digest":"sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371"}"#;
const SIGNING_INPUT_SHA256: &str =
    "1bd328e6880a5a12b3915af95ea32111310e04ab9e21ac3d71ce268e33b965c9";
const SIGNATURE: &str = "d5b005e093bde3b577faf270b7184b09e169cacb0ecb206b103bd2581f997db03da616175454b063323a23ac1dc68f1ce506c2a6eba8aa0561d5e724f0b80c03";
const SERVED: &str = r#"{"api_version":"aci/1","chat_id":"chatcmpl-123","endpoint":"/v1/chat/completions","event_log":[{"body_hash":"sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b","type":"request.received"},{"body_hash":"sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b","type":"request.forwarded"},{"model_id":"demo-model","required":true,"result":"verified","session_id":"95ad1cb4dd25445808c2e9d116caf420b05703730b506395e8fc1ca6faeae28f","type":"upstream.verified"},{"body_hash":"sha256:dedfffe5b14d031b8e2c01996d021a15293cb7c63b56be7e4be9e89b6f0a5f61","type":"response.returned"}],"key_id":"receipt-1","method":"POST","model":"demo-model","receipt_id":"rcpt-0001","served_at":1750000000,"signature":"d5b005e093bde3b577faf270b7184b09e169cacb0ecb206b103bd2581f997db03da616175454b063323a23ac1dc68f1ce506c2a6eba8aa0561d5e724f0b80c03","workload_keyset_digest":"sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371"}"#;

fn receipt_key() -> Ed25519Signer {
    Ed25519Signer::from_seed(&[0x02; 32])
}

/// The vector keyset, built from typed values in an order unlike its JCS form.
fn vector_keyset() -> WorkloadKeyset {
    WorkloadKeyset {
        subject: Some("dstack-app://example-app".to_owned()),
        not_after: 1_800_000_000,
        receipt_signing_keys: vec![ReceiptKeyEntry {
            key_id: "receipt-1".to_owned(),
            algo: ED25519.to_owned(),
            public_key: receipt_key().public_key_hex(),
        }],
        e2ee_public_keys: vec![E2eeKeyEntry {
            key_id: "e2ee-1".to_owned(),
            algo: "x25519-aes-256-gcm-hkdf-sha256".to_owned(),
            public_key: "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22"
                .to_owned(),
        }],
        tls_public_keys: vec![TlsKeyEntry {
            spki_sha256: "c0".repeat(32),
            domain: Some("api.example.com".to_owned()),
        }],
    }
}

#[test]
fn the_fixed_receipt_key_has_the_published_public_key() {
    assert_eq!(
        receipt_key().public_key_hex(),
        "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
    );
}

#[test]
fn vector_1_the_keyset_canonicalizes_and_digests_as_published() {
    let keyset = vector_keyset();
    assert_eq!(jcs::canonicalize(&keyset.to_value()).unwrap(), KEYSET_JCS);
    assert_eq!(keyset.digest().unwrap(), KEYSET_DIGEST);
    // Any encoding of the same content: pretty-printed, members reordered.
    let pretty: Value = serde_json::from_str(
        r#"{ "tls_public_keys": [ { "spki_sha256": "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0", "domain": "api.example.com" } ],
            "subject": "dstack-app://example-app",
            "receipt_signing_keys": [ { "public_key": "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394", "key_id": "receipt-1", "algo": "ed25519" } ],
            "not_after": 1800000000,
            "e2ee_public_keys": [ { "public_key": "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22", "algo": "x25519-aes-256-gcm-hkdf-sha256", "key_id": "e2ee-1" } ] }"#,
    )
    .unwrap();
    assert_eq!(keyset_digest(&pretty).unwrap(), KEYSET_DIGEST);
    // A changed byte is a changed digest.
    let mut other = vector_keyset();
    other.not_after += 1;
    assert_ne!(other.digest().unwrap(), KEYSET_DIGEST);
    // Without TLS domain the member is left out, not null.
    other.tls_public_keys[0].domain = None;
    assert!(
        !jcs::canonicalize(&other.to_value())
            .unwrap()
            .contains("domain")
    );
}

#[test]
fn vector_2_statements_and_report_data_with_and_without_nonce() {
    let nonce = AciNonce::parse(NONCE).unwrap();
    let with = statement(KEYSET_DIGEST, Some(&nonce));
    assert_eq!(with, STATEMENT);
    assert_eq!(hex::encode(statement_report_data(&with)), REPORT_DATA);
    let without = statement(KEYSET_DIGEST, None);
    assert_eq!(without, STATEMENT_NULL);
    assert_eq!(
        hex::encode(statement_report_data(&without)),
        REPORT_DATA_NULL
    );
    assert_eq!(
        hex::encode(report_data_slot(&statement_report_data(&with))),
        SLOT
    );
    assert_eq!(nonce.bytes()[31], 0x1f);
}

#[test]
fn nonces_are_exactly_64_lowercase_hex() {
    assert!(AciNonce::parse(NONCE).is_ok());
    for bad in [
        "",
        &NONCE[..62],
        &format!("{NONCE}00"),
        &NONCE.to_uppercase(),
        &format!("0x{}", &NONCE[2..]),
        &"zz".repeat(32),
        &"é".repeat(32),
        &format!("{} ", &NONCE[..63]),
    ] {
        assert_eq!(AciNonce::parse(bad), Err(AciNonceError), "{bad:?}");
    }
}

#[test]
fn vector_3_the_session_document_canonicalizes_to_its_id() {
    // signet is a direct service and serves no sessions; the construction is JCS and
    // sha256, checked here like every other vector (its id is what vector 4 cites).
    use base64::Engine;
    let evidence = b"example-evidence";
    assert_eq!(
        sha256_digest(evidence),
        "sha256:80d70e44d0ae1e829fd5f37c3ee4a60dfbea8d3aa18407ea3f34cf7ec91da34d"
    );
    let data = format!(
        "data:text/plain;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(evidence)
    );
    assert_eq!(data, "data:text/plain;base64,ZXhhbXBsZS1ldmlkZW5jZQ==");
    let unknown = json!({"status": "unknown"});
    let document = json!({
        "api_version": "aci/1",
        "upstream_name": "demo-upstream",
        "endpoint": "https://upstream.example.com",
        "verifier_id": "example/1",
        "established_at": 1_750_000_000,
        "expires_at": 1_750_003_600,
        "channel_binding": [{"type": "tls_spki_sha256", "origin": "https://upstream.example.com",
                             "spki_sha256": "d1".repeat(32)}],
        "claims": {
            "tee_attested": {"status": "asserted", "source": "hardware_proven",
                             "reason": "example quote verified"},
            "gpu_attested": unknown, "tcb_up_to_date": unknown, "os_known_good": unknown,
            "serving_software_known_good": unknown, "model_weights_provenance": unknown,
            "extra": {"tcb_status": "UpToDate", "gpu_arch": "HOPPER"},
        },
        "evidence": {"digest": sha256_digest(evidence), "data": data},
    });
    let canonical = jcs::canonicalize(&document).unwrap();
    assert_eq!(
        canonical,
        r#"{"api_version":"aci/1","channel_binding":[{"origin":"https://upstream.example.com","spki_sha256":"d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1","type":"tls_spki_sha256"}],"claims":{"extra":{"gpu_arch":"HOPPER","tcb_status":"UpToDate"},"gpu_attested":{"status":"unknown"},"model_weights_provenance":{"status":"unknown"},"os_known_good":{"status":"unknown"},"serving_software_known_good":{"status":"unknown"},"tcb_up_to_date":{"status":"unknown"},"tee_attested":{"reason":"example quote verified","source":"hardware_proven","status":"asserted"}},"endpoint":"https://upstream.example.com","established_at":1750000000,"evidence":{"data":"data:text/plain;base64,ZXhhbXBsZS1ldmlkZW5jZQ==","digest":"sha256:80d70e44d0ae1e829fd5f37c3ee4a60dfbea8d3aa18407ea3f34cf7ec91da34d"},"expires_at":1750003600,"upstream_name":"demo-upstream","verifier_id":"example/1"}"#
    );
    assert_eq!(
        hex::encode(Sha256::digest(canonical.as_bytes())),
        SESSION_ID
    );
}

#[test]
fn vector_4_the_receipt_signs_and_verifies_as_published() {
    assert_eq!(sha256_digest(REQUEST.as_bytes()), REQUEST_HASH);
    assert_eq!(sha256_digest(RESPONSE.as_bytes()), RESPONSE_HASH);
    let document = json!({
        "api_version": "aci/1",
        "receipt_id": "rcpt-0001",
        "chat_id": "chatcmpl-123",
        "model": "demo-model",
        "workload_keyset_digest": KEYSET_DIGEST,
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "served_at": 1_750_000_000,
        "event_log": [
            {"type": "request.received", "body_hash": REQUEST_HASH},
            {"type": "request.forwarded", "body_hash": REQUEST_HASH},
            {"type": "upstream.verified", "result": "verified", "required": true,
             "model_id": "demo-model", "session_id": SESSION_ID},
            {"type": "response.returned", "body_hash": RESPONSE_HASH},
        ],
        "key_id": "receipt-1",
    });
    let input = receipt_signing_input(&document).unwrap();
    assert_eq!(std::str::from_utf8(&input).unwrap(), SIGNING_INPUT);
    assert_eq!(hex::encode(Sha256::digest(&input)), SIGNING_INPUT_SHA256);
    let signature = sign_receipt_document(&document, &receipt_key()).unwrap();
    assert_eq!(signature, SIGNATURE);

    // The served document: any encoding verifies; its JCS form is the published one.
    let served: Value = serde_json::from_str(SERVED).unwrap();
    assert_eq!(jcs::canonicalize(&served).unwrap(), SERVED);
    let keyset: Value = serde_json::from_str(KEYSET_JCS).unwrap();
    let verified = verify_receipt(&served, &keyset, KEYSET_DIGEST).unwrap();
    assert_eq!(verified.request_received, REQUEST_HASH);
    assert_eq!(verified.request_forwarded.as_deref(), Some(REQUEST_HASH));
    assert_eq!(verified.response_returned, RESPONSE_HASH);
    assert_eq!(verified.chat_id.as_deref(), Some("chatcmpl-123"));
    let pretty = serde_json::to_string_pretty(&served).unwrap();
    let reparsed: Value = serde_json::from_str(&pretty).unwrap();
    assert!(verify_receipt(&reparsed, &keyset, KEYSET_DIGEST).is_ok());
}

#[test]
fn a_tampered_receipt_or_a_foreign_keyset_is_refused() {
    let served: Value = serde_json::from_str(SERVED).unwrap();
    let keyset: Value = serde_json::from_str(KEYSET_JCS).unwrap();
    let mut tampered = served.clone();
    tampered["served_at"] = json!(1_750_000_001);
    assert!(matches!(
        verify_receipt(&tampered, &keyset, KEYSET_DIGEST),
        Err(ReceiptError::Signature(_))
    ));
    let mut tampered = served.clone();
    tampered["event_log"][3]["body_hash"] = json!(REQUEST_HASH);
    assert!(verify_receipt(&tampered, &keyset, KEYSET_DIGEST).is_err());
    let mut wrong_version = served.clone();
    wrong_version["api_version"] = json!("aci/2");
    assert!(matches!(
        verify_receipt(&wrong_version, &keyset, KEYSET_DIGEST),
        Err(ReceiptError::Version(_))
    ));
    let mut unknown_key = served.clone();
    unknown_key["key_id"] = json!("receipt-2");
    assert!(matches!(
        verify_receipt(&unknown_key, &keyset, KEYSET_DIGEST),
        Err(ReceiptError::UnknownKey(_))
    ));
    // Another keyset (another receipt key) establishes another digest.
    let mut other = vector_keyset();
    other.receipt_signing_keys[0].public_key = Ed25519Signer::from_seed(&[9; 32]).public_key_hex();
    let other_digest = other.digest().unwrap();
    assert!(matches!(
        verify_receipt(&served, &other.to_value(), &other_digest),
        Err(ReceiptError::Keyset { .. })
    ));
    // An entry with an algorithm signet does not implement is not guessed at.
    let mut foreign = keyset.clone();
    foreign["receipt_signing_keys"][0]["algo"] = json!("ecdsa-p256");
    let foreign_digest = keyset_digest(&foreign).unwrap();
    let mut renamed = served.clone();
    renamed["workload_keyset_digest"] = json!(foreign_digest);
    assert!(matches!(
        verify_receipt(&renamed, &foreign, &foreign_digest),
        Err(ReceiptError::Algorithm { .. })
    ));
}

#[test]
fn signets_receipt_document_has_the_section_7_3_shape() {
    let body = ReceiptBody {
        receipt_id: "rcpt-0001".to_owned(),
        chat_id: Some("chatcmpl-123".to_owned()),
        model: Some("demo-model".to_owned()),
        workload_keyset_digest: KEYSET_DIGEST.to_owned(),
        endpoint: "/v1/chat/completions".to_owned(),
        method: "POST".to_owned(),
        served_at: 1_750_000_000,
        request_received: Sha256::digest(REQUEST.as_bytes()).into(),
        request_forwarded: Some(Sha256::digest(REQUEST.as_bytes()).into()),
        response_returned: Sha256::digest(RESPONSE.as_bytes()).into(),
        key_id: RECEIPT_KEY_ID.to_owned(),
    };
    // The vector's document less its aggregator event: a direct service has no upstream hop.
    let mut expected: Value = serde_json::from_str(SIGNING_INPUT).unwrap();
    expected["event_log"].as_array_mut().unwrap().remove(2);
    assert_eq!(body.document(), expected);
    let signature = body.sign(&receipt_key()).unwrap();
    let served = body.signed_document(&signature);
    let keyset: Value = serde_json::from_str(KEYSET_JCS).unwrap();
    let verified = verify_receipt(&served, &keyset, KEYSET_DIGEST).unwrap();
    assert_eq!(verified.receipt_id, "rcpt-0001");
    assert_eq!(verified.served_at, 1_750_000_000);
    // No request.forwarded when the prompt was not forwarded; null chat id and model.
    let bare = ReceiptBody {
        chat_id: None,
        model: None,
        request_forwarded: None,
        ..body
    };
    let document = bare.document();
    assert_eq!(document["event_log"].as_array().unwrap().len(), 2);
    assert!(document["chat_id"].is_null() && document["model"].is_null());
}

#[test]
fn reports_bind_their_keyset_and_nonce() {
    let keyset = vector_keyset();
    let nonce = AciNonce::parse(NONCE).unwrap();
    let report = AciReport {
        api_version: API_VERSION.to_owned(),
        workload_keyset_digest: KEYSET_DIGEST.to_owned(),
        attestation: AciAttestation {
            tee_type: "tdx".to_owned(),
            workload_keyset: keyset.to_value(),
            report_data: REPORT_DATA.to_owned(),
            source_provenance: None,
            evidence: json!({}),
        },
        service_capabilities: ServiceCapabilities {
            supported_e2ee_versions: Vec::new(),
            serving: "direct".to_owned(),
        },
    };
    assert_eq!(
        hex::encode(check_report_binding(&report, Some(&nonce)).unwrap()),
        SLOT
    );
    // Another nonce, the null form, a changed keyset or a wrong restated digest all fail.
    let other = AciNonce::parse(&"ab".repeat(32)).unwrap();
    assert!(matches!(
        check_report_binding(&report, Some(&other)),
        Err(BindingError::ReportData { .. })
    ));
    assert!(check_report_binding(&report, None).is_err());
    let mut changed = report.clone();
    changed.attestation.workload_keyset["not_after"] = json!(1_800_000_001);
    assert!(matches!(
        check_report_binding(&changed, Some(&nonce)),
        Err(BindingError::Digest { .. })
    ));
    let mut version = report;
    version.api_version = "aci/0".to_owned();
    assert!(matches!(
        check_report_binding(&version, Some(&nonce)),
        Err(BindingError::Version(_))
    ));
}

#[test]
fn aci_headers_are_recognised_and_the_model_is_read() {
    for name in [
        "X-ACI-Version",
        "x-aci-keyset-digest",
        "X-Receipt-Id",
        "x-aci-",
    ] {
        assert!(is_aci_header(name), "{name}");
    }
    for name in ["x-ac", "x-receipt", "x-request-id", "x-signet-text"] {
        assert!(!is_aci_header(name), "{name}");
    }
    assert_eq!(
        requested_model(REQUEST.as_bytes()).as_deref(),
        Some("demo-model")
    );
    assert_eq!(requested_model(br#"{"model": 3}"#), None);
    assert_eq!(requested_model(b"not json"), None);
}
