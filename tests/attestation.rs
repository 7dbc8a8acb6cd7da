//! `GET /v1/attestation/report` on the live binary: dev mode end to end, the dstack agent over
//! a real unix socket, recorded GPU evidence, bad nonces, and providers that are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use signet_attest::{DevQuoteProvider, REPORT_DATA_OFFSET, spdm_request_nonce};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn decode_quote(report: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(report["intel_quote"].as_str().unwrap())
        .unwrap()
}

/// Checks the plain binding without signet's code: report_data, at bytes 568..632 of the
/// quote, is the 20 address bytes, 12 zero bytes and the 32 nonce bytes; eth-keys derives
/// the address from the public key.
fn assert_binding(report: &serde_json::Value, nonce_hex: &str) {
    let quote = decode_quote(report);
    let address = report["signing_address"].as_str().unwrap();
    let mut expected = hex::decode(address.strip_prefix("0x").unwrap()).unwrap();
    assert_eq!(expected.len(), 20);
    expected.extend([0u8; 12]);
    expected.extend(hex::decode(nonce_hex).unwrap());
    assert_eq!(
        hex::encode(&quote[568..632]),
        hex::encode(&expected),
        "report_data = address ‖ 0^12 ‖ nonce"
    );
    let parsed = tdx_quote::Quote::from_bytes(&quote).expect("a parseable v4 quote");
    assert_eq!(&parsed.report_input_data()[..], &expected[..]);
    assert_eq!(REPORT_DATA_OFFSET, 568);
    // The public key and the address belong together.
    assert_eq!(
        address_of_public_key_independently(report["signing_public_key"].as_str().unwrap()),
        address
    );
    let payload: serde_json::Value =
        serde_json::from_str(report["nvidia_payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["nonce"], nonce_hex);
    assert_eq!(report["request_nonce"], nonce_hex);
}

#[tokio::test]
async fn a_dev_report_binds_the_signing_address_and_the_callers_nonce() {
    let port = free_port();
    let gateway = Gateway::start(&format!("http://127.0.0.1:{port}"));
    let nonce = "0123456789abcdef".repeat(4);
    let reply = request(
        gateway.addr,
        "GET",
        &format!("/v1/attestation/report?nonce={}", nonce.to_uppercase()),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let report = reply.json();
    for field in [
        "signing_address",
        "signing_algo",
        "signing_public_key",
        "request_nonce",
        "intel_quote",
        "nvidia_payload",
        "mode",
    ] {
        assert!(report.get(field).is_some(), "missing {field}: {report}");
    }
    assert_eq!(report["mode"], "dev");
    assert_eq!(report["signing_algo"], "ecdsa");
    assert_eq!(
        report["signing_address"],
        gateway.signing_address().await.as_str()
    );
    assert_binding(&report, &nonce);
    let log = gateway.log();
    assert!(
        log.contains("ATTESTATION IS IN DEV MODE"),
        "loud warning at start:\n{log}"
    );
}

#[tokio::test]
async fn without_a_nonce_signet_draws_one() {
    let port = free_port();
    let gateway = Gateway::start(&format!("http://127.0.0.1:{port}"));
    let report = request(
        gateway.addr,
        "GET",
        "/v1/attestation/report",
        &[],
        Vec::new(),
    )
    .await
    .json();
    let nonce = report["request_nonce"].as_str().unwrap().to_owned();
    assert_eq!(nonce.len(), 64);
    assert_ne!(nonce, "00".repeat(32));
    assert_binding(&report, &nonce);
}

#[tokio::test]
async fn bad_nonces_and_methods_get_envelopes() {
    let port = free_port();
    let gateway = Gateway::start(&format!("http://127.0.0.1:{port}"));
    let good = "ab".repeat(32);
    for query in [
        "nonce=abc".to_owned(),
        format!("nonce={}", "zz".repeat(32)),
        format!("nonce=0x{}", "ab".repeat(31)),
        format!("nonce={good}00"),
        format!("nonce={good}&nonce={good}"),
        "nonce=".to_owned(),
        "nonce=%2e%2e%2f".to_owned(),
    ] {
        let reply = request(
            gateway.addr,
            "GET",
            &format!("/v1/attestation/report?{query}"),
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, 400, "{query}");
        let code = reply.json()["error"]["code"].as_str().unwrap().to_owned();
        assert!(
            code == "invalid_nonce" || code == "duplicate_parameter",
            "{query}: {code}"
        );
    }
    let reply = request(
        gateway.addr,
        "GET",
        &format!("/v1/attestation/report?nonce={good}&signing_algo=rsa"),
        &[],
        Vec::new(),
    )
    .await;
    reply.assert_envelope(400, "unsupported_signing_algo");
    let reply = request(
        gateway.addr,
        "POST",
        "/v1/attestation/report",
        &[],
        b"{}".to_vec(),
    )
    .await;
    reply.assert_envelope(405, "method_not_allowed");
}

#[tokio::test]
async fn hex_encoding_and_recorded_gpu_evidence() {
    let port = free_port();
    let gateway = Gateway::start_with_attestation(
        &format!("http://127.0.0.1:{port}"),
        "    mode: dev\n    gpu: dev\n    quote_encoding: hex\n",
        "",
    );
    let nonce = "77".repeat(32);
    let report = request(
        gateway.addr,
        "GET",
        &format!("/v1/attestation/report?nonce={nonce}"),
        &[],
        Vec::new(),
    )
    .await
    .json();
    assert_eq!(report["gpu_evidence"], "dev");
    let quote = hex::decode(report["intel_quote"].as_str().unwrap()).expect("hex quote");
    assert!(tdx_quote::Quote::from_bytes(&quote).is_ok());
    let payload: serde_json::Value =
        serde_json::from_str(report["nvidia_payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["nonce"], nonce.as_str());
    assert_eq!(payload["arch"], "HOPPER");
    let item = &payload["evidence_list"][0];
    let b64 = base64::engine::general_purpose::STANDARD;
    let evidence = b64.decode(item["evidence"].as_str().unwrap()).unwrap();
    let recorded = hex::decode(
        std::fs::read_to_string(fixtures_dir().join("nvidia/hopper-attestation-report.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(evidence, recorded);
    // Dev evidence is what was recorded: its inner nonce is not this request's.
    assert_ne!(hex::encode(spdm_request_nonce(&evidence).unwrap()), nonce);
    let chain = b64.decode(item["certificate"].as_str().unwrap()).unwrap();
    assert!(chain.starts_with(b"-----BEGIN CERTIFICATE-----"));
}

/// A dstack agent on a unix socket: `POST /GetQuote` answered with a mock quote over the
/// requested report data (or, if `lie`, over different data).
async fn fake_dstack_agent(dir: &Path, lie: bool) -> PathBuf {
    let path = dir.join("dstack.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let quotes = Arc::new(DevQuoteProvider::generate());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let quotes = quotes.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let quotes = quotes.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let answer = match (
                                path.as_str(),
                                json["report_data"].as_str().map(hex::decode),
                            ) {
                                ("/GetQuote", Some(Ok(data))) if data.len() == 64 => {
                                    let mut data: [u8; 64] = data.try_into().unwrap();
                                    if lie {
                                        data[0] ^= 0xff;
                                    }
                                    serde_json::json!({
                                        "quote": hex::encode(quotes.mock_quote(&data)),
                                        "event_log": "[{\"imr\":0,\"digest\":\"00\"}]",
                                        "vm_config": "{}"
                                    })
                                }
                                _ => serde_json::json!({"error": "bad request"}),
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(answer.to_string()),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dstack_quotes_come_from_the_agent_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = fake_dstack_agent(dir.path(), false).await;
    let port = free_port();
    let gateway = Gateway::start_with_attestation(
        &format!("http://127.0.0.1:{port}"),
        &format!(
            "    mode: dstack\n    gpu: none\n    dstack_socket: {}\n",
            socket.display()
        ),
        "",
    );
    let nonce = "42".repeat(32);
    let report = request(
        gateway.addr,
        "GET",
        &format!("/v1/attestation/report?nonce={nonce}"),
        &[],
        Vec::new(),
    )
    .await
    .json();
    assert_eq!(report["mode"], "dstack");
    assert_binding(&report, &nonce);
    assert!(report["event_log"].as_str().unwrap().contains("imr"));
    assert_eq!(gateway.health().await["attestation_mode"], "dstack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_that_binds_the_wrong_data_is_a_503_and_an_error_log() {
    let dir = tempfile::tempdir().unwrap();
    let socket = fake_dstack_agent(dir.path(), true).await;
    let port = free_port();
    let gateway = Gateway::start_with_attestation(
        &format!("http://127.0.0.1:{port}"),
        &format!(
            "    mode: dstack\n    gpu: none\n    cache_ttl: 0s\n    dstack_socket: {}\n",
            socket.display()
        ),
        "",
    );
    let reply = request(
        gateway.addr,
        "GET",
        "/v1/attestation/report",
        &[],
        Vec::new(),
    )
    .await;
    reply.assert_envelope(503, "attestation_unavailable");
    gateway.wait_for_log_line(&["ERROR", "does not bind the signing address and nonce"]);
}

#[test]
fn missing_providers_stop_signet_at_start() {
    let stderr = expect_start_failure(
        "    mode: tdx\n    gpu: none\n    configfs_path: /nonexistent/tsm/report\n",
    );
    assert!(stderr.contains("/nonexistent/tsm/report"), "{stderr}");
    assert!(stderr.contains("TDX guest"), "{stderr}");

    let stderr = expect_start_failure(
        "    mode: dstack\n    gpu: none\n    dstack_socket: /nonexistent/dstack.sock\n",
    );
    assert!(stderr.contains("/nonexistent/dstack.sock"), "{stderr}");

    // No NVIDIA driver here (or no CC mode on a machine that has one): refuse, never fall back.
    let stderr = expect_start_failure("    mode: dev\n    gpu: nvml\n");
    assert!(
        stderr.contains("NVML") || stderr.contains("confidential computing"),
        "{stderr}"
    );
}
