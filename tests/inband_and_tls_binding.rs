//! Beyond the lookup route: signatures delivered in the response itself, and attestation bound
//! to the TLS certificate the client actually sees (a relay with another certificate fails).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::Arc;

const INBAND: (&str, &str) = ("x-signet-signature", "in-band");

#[tokio::test]
async fn a_streamed_in_band_signature_follows_the_signed_bytes_and_equals_the_lookup() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let body = br#"{"stream":true}"#;
    for framing in ["chunked", "length"] {
        let id = format!("inband-{framing}");
        let reply = gateway
            .post(
                "/v1/chat/completions",
                &[INBAND, ("x-mock-id", &id), ("x-mock-framing", framing)],
                body,
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["x-signet-signature"], "in-band");
        let (covered, signature) = signet_core::inband::split_stream(&reply.body);
        let signature = signature.expect("a trailing signature comment");
        assert!(covered.ends_with(b"data: [DONE]\n\n"));
        let receipt = gateway.signature(&id).await.json();
        assert_receipt(&receipt, body, covered, &address);
        assert_eq!(signature.text, receipt["text"].as_str().unwrap());
        assert_eq!(signature.signature, receipt["signature"].as_str().unwrap());
        assert_eq!(signature.signing_address, address);
        assert_eq!(signature.id, id);
    }
    // Without the header, nothing is appended: the stream is exactly the upstream's.
    let plain = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-replay", "seed-response.sse")],
            SEED_REQUEST,
        )
        .await;
    assert_eq!(&plain.body[..], SEED_RESPONSE);
}

#[tokio::test]
async fn a_plain_json_in_band_signature_comes_in_headers_over_an_unchanged_body() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let body = br#"{"stream":false,"messages":[]}"#;
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[INBAND, ("x-mock-id", "inband-json"), ("x-mock-chunks", "7")],
            body,
        )
        .await;
    assert_eq!(reply.status, 200);
    let direct = request(
        upstream.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-mock-id", "inband-json")],
        body.to_vec(),
    )
    .await;
    let strip_created = |b: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
        v["created"] = serde_json::Value::Null;
        v
    };
    assert_eq!(
        strip_created(&reply.body),
        strip_created(&direct.body),
        "the body is the upstream's"
    );
    let text = reply.headers["x-signet-text"].to_str().unwrap();
    assert_eq!(
        text,
        format!("{}:{}", sha256_hex(body), sha256_hex(&reply.body))
    );
    assert_eq!(
        recover(text, reply.headers["x-signet-signature"].to_str().unwrap()),
        address
    );
    assert_eq!(reply.headers["x-signet-signing-address"], address.as_str());
    assert_eq!(reply.headers["x-signet-completion-id"], "inband-json");
    let receipt = gateway.signature("inband-json").await.json();
    assert_eq!(
        receipt["signature"],
        reply.headers["x-signet-signature"].to_str().unwrap()
    );
    assert!(reply.headers.contains_key("x-request-id"));
    let seen = upstream.seen().await;
    assert_eq!(
        seen[0]["body_sha256"],
        sha256_hex(body),
        "the upstream got the client's exact bytes"
    );
    assert!(seen[0]["accept_encoding"].is_null());

    // Upstream errors pass through, unsigned.
    let error = gateway
        .post(
            "/v1/chat/completions",
            &[INBAND, ("x-mock-status", "400")],
            body,
        )
        .await;
    assert_eq!(error.status, 400);
    assert_eq!(error.json()["message"], "mock upstream error");
    assert!(!error.headers.contains_key("x-signet-text"));
}

#[tokio::test]
async fn a_json_answer_too_large_to_hold_is_refused_clearly() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  limits:\n    json_response_bytes: 2KiB\n",
    );
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[INBAND, ("x-mock-events", "2000")],
            br#"{"stream":false}"#,
        )
        .await;
    reply.assert_envelope(502, "upstream_unreachable");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in-band")
    );
}

// --- TLS binding -------------------------------------------------------------------------

/// A TLS-terminating relay with its own certificate, forwarding the decrypted bytes to the
/// gateway over a TLS connection of its own: the classic man in the middle.
async fn tls_relay(
    target: std::net::SocketAddr,
    own: &TestCert,
    target_cert: &TestCert,
) -> std::net::SocketAddr {
    let certs: Vec<_> = rustls_pemfile::certs(&mut own.cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut own.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let client = signet_verify::http::tls_config(Some(target_cert.cert_pem.as_bytes())).unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (acceptor, connector) = (acceptor.clone(), connector.clone());
            tokio::spawn(async move {
                let Ok(mut inbound) = acceptor.accept(inbound).await else {
                    return;
                };
                let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let Ok(mut outbound) = connector.connect(name, outbound).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

/// The TLS-bound report_data computed without signet's code: openssl hashes the SPKI of the
/// certificate the connection was served, and sha256(address ‖ that hash) ‖ nonce must be
/// the quote's bytes 568..632; `tls_cert_fingerprint` must be that hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_bound_report_data_matches_an_independent_computation() {
    use base64::Engine;
    use sha2::Digest;
    let upstream = Upstream::start();
    let serving = TestCert::localhost();
    let gateway = Gateway::start_tls(&upstream.url(), &serving);
    let nonce = "5a17".repeat(16);
    let (reply, presented) = https_get(
        gateway.addr,
        &serving,
        &format!("/v1/attestation/report?tls_binding=true&nonce={nonce}"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let report = reply.json();
    let spki_sha256 = spki_sha256_by_openssl(&presented);
    assert_eq!(report["tls_cert_fingerprint"], spki_sha256.as_str());
    let address = report["signing_address"].as_str().unwrap();
    let address_bytes = hex::decode(address.strip_prefix("0x").unwrap()).unwrap();
    assert_eq!(address_bytes.len(), 20);
    let mut bound = sha2::Sha256::new();
    bound.update(&address_bytes);
    bound.update(hex::decode(&spki_sha256).unwrap());
    let mut expected = bound.finalize().to_vec();
    expected.extend(hex::decode(&nonce).unwrap());
    let quote = base64::engine::general_purpose::STANDARD
        .decode(report["intel_quote"].as_str().unwrap())
        .unwrap();
    assert_eq!(hex::encode(&quote[568..632]), hex::encode(&expected));
    assert_eq!(report["request_nonce"], nonce.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_over_tls_with_the_report_bound_to_the_certificate() {
    let upstream = Upstream::start();
    let serving = TestCert::localhost();
    let gateway = Gateway::start_tls(&upstream.url(), &serving);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = write_cert(dir.path(), "ca", &serving);
    let (ok, checklist) = verify_json(vec![
        "--url".into(),
        format!("https://localhost:{}", gateway.addr.port()),
        "--ca-cert".into(),
        ca.display().to_string(),
        "--allow-dev".into(),
        "--allow-no-gpu".into(),
    ])
    .await;
    assert!(ok, "{checklist:#}");
    assert_eq!(check_status(&checklist, "tls.binding"), "pass");
    assert_eq!(check_status(&checklist, "quote.report_data"), "pass");
    assert_eq!(check_status(&checklist, "signature.inband"), "pass");
    // The ACI keyset lists the certificate key this connection saw.
    assert_eq!(check_status(&checklist, "aci.tls"), "pass", "{checklist:#}");
    assert_eq!(check_status(&checklist, "aci.receipt.hashes"), "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_relay_with_another_certificate_is_caught() {
    let upstream = Upstream::start();
    let serving = TestCert::localhost();
    let gateway = Gateway::start_tls(&upstream.url(), &serving);
    let relay_cert = TestCert::localhost();
    let relay = tls_relay(gateway.addr, &relay_cert, &serving).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = write_cert(dir.path(), "relay-ca", &relay_cert);
    let (ok, checklist) = verify_json(vec![
        "--url".into(),
        format!("https://localhost:{}", relay.port()),
        "--ca-cert".into(),
        ca.display().to_string(),
        "--allow-dev".into(),
    ])
    .await;
    assert!(!ok, "{checklist:#}");
    assert_eq!(
        check_status(&checklist, "tls.binding"),
        "fail",
        "{checklist:#}"
    );
    assert_eq!(check_status(&checklist, "quote.report_data"), "fail");
    // Everything else about the relayed gateway looks fine: only the binding gives it away.
    assert_eq!(check_status(&checklist, "signature.signer"), "pass");
    assert_eq!(check_status(&checklist, "aci.tls"), "fail", "{checklist:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_reflected_in_the_next_report_after_a_reload() {
    let upstream = Upstream::start();
    let first = TestCert::localhost();
    let old = Gateway::start_tls(&upstream.url(), &first);
    let fingerprint_of = |c: &TestCert| {
        hex::encode(signet::app::spki_sha256_of_pem_chain(c.cert_pem.as_bytes()).unwrap())
    };
    let report = tls_report(old.addr, &first).await;
    assert_eq!(
        report["tls_cert_fingerprint"],
        fingerprint_of(&first).as_str()
    );

    // Rotate the files, then upgrade: the new process serves, and binds, the new certificate.
    let second = TestCert::localhost();
    let dir = old.dir.path().to_owned();
    write_cert(&dir, "serving", &second);
    let config = dir.join("signet.yaml");
    let mut new = std::process::Command::new(signet_bin())
        .args(["serve", "-u", "-c"])
        .arg(&config)
        .stderr(std::fs::File::create(dir.join("new.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.join("signet-upgrade.sock").exists() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::Command::new("kill")
        .args(["-QUIT", &old.pid().to_string()])
        .status()
        .unwrap();
    let mut seen_second = false;
    while !seen_second {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate never showed"
        );
        // Connections may still land on the draining process for a moment; trust both.
        if let Some(report) = tls_report_trusting(old.addr, &[&first, &second]).await {
            seen_second = report["tls_cert_fingerprint"] == fingerprint_of(&second).as_str();
        }
    }
    let _ = new.kill();
    let _ = new.wait();
}

async fn tls_report(addr: std::net::SocketAddr, trusted: &TestCert) -> serde_json::Value {
    tls_report_trusting(addr, &[trusted]).await.unwrap()
}

async fn tls_report_trusting(
    addr: std::net::SocketAddr,
    trusted: &[&TestCert],
) -> Option<serde_json::Value> {
    let pem: String = trusted.iter().map(|c| c.cert_pem.clone()).collect();
    let tls = signet_verify::http::tls_config(Some(pem.as_bytes())).unwrap();
    let base =
        signet_verify::http::BaseUrl::parse(&format!("https://localhost:{}", addr.port())).unwrap();
    let client =
        signet_verify::http::Client::new(base, Some(tls), std::time::Duration::from_secs(10));
    let reply = client
        .send(
            http::Method::GET,
            "/v1/attestation/report?tls_binding=true",
            &[],
            bytes::Bytes::new(),
        )
        .await
        .ok()?;
    let report = reply.json().ok()?;
    assert_eq!(
        report["tls_cert_fingerprint"].as_str().unwrap(),
        hex::encode(reply.peer_spki_sha256.unwrap()),
        "a report always binds the certificate of its own connection"
    );
    Some(report)
}
