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
async fn the_parameters_the_fields_clients_send() {
    let port = free_port();
    let gateway = Gateway::start(&format!("http://127.0.0.1:{port}"));
    let ours = gateway.signing_address().await;
    let nonce = "0f".repeat(32);
    let get = |query: String| {
        let addr = gateway.addr;
        async move {
            request(
                addr,
                "GET",
                &format!("/v1/attestation/report?{query}"),
                &[],
                Vec::new(),
            )
            .await
        }
    };

    // NEAR AI's verifier: model, nonce, signing_algo, and the signer it looks for.
    for address in [ours.clone(), ours.to_lowercase()] {
        let reply = get(format!(
            "model=deepseek-ai/DeepSeek-V3.1&nonce={nonce}&signing_algo=ecdsa&signing_address={address}"
        ))
        .await;
        assert_eq!(reply.status, 200, "{address}");
        let report = reply.json();
        assert_eq!(report["signing_address"], ours.as_str());
        assert_binding(&report, &nonce);
    }
    let other = format!("0x{}", "ab".repeat(20));
    let reply = get(format!("nonce={nonce}&signing_address={other}")).await;
    reply.assert_envelope(404, "signing_address_not_found");
    assert_eq!(reply.json()["error"]["param"], "signing_address");
    get("signing_address=0x12".to_owned())
        .await
        .assert_envelope(400, "invalid_signing_address");

    // include_tls_fingerprint is NEAR AI's tls_binding: without TLS there is nothing to bind.
    let reply = get(format!("nonce={nonce}&include_tls_fingerprint=true")).await;
    reply.assert_envelope(400, "tls_binding_unavailable");
    assert_eq!(reply.json()["error"]["param"], "include_tls_fingerprint");
    let reply = get(format!("nonce={nonce}&include_tls_fingerprint=false")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json().get("tls_cert_fingerprint").is_none());

    // ed25519, as Phala's and NEAR's proxies serve it: the 32-byte public key is the
    // address (hex, no 0x) and report_data is that key followed by the nonce.
    let reply = get(format!("nonce={nonce}&signing_algo=ed25519")).await;
    assert_eq!(reply.status, 200);
    let report = reply.json();
    assert_eq!(report["signing_algo"], "ed25519");
    let key = report["signing_address"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    assert_eq!(report["signing_public_key"], key.as_str());
    assert_ne!(
        key.to_lowercase(),
        ours.trim_start_matches("0x").to_lowercase()
    );
    let quote = decode_quote(&report);
    let data = tdx_quote::Quote::from_bytes(&quote)
        .unwrap()
        .report_input_data();
    assert_eq!(hex::encode(&data[..32]), key);
    assert_eq!(hex::encode(&data[32..]), nonce);
    let reply = get(format!(
        "nonce={nonce}&signing_algo=ed25519&signing_address={key}"
    ))
    .await;
    assert_eq!(reply.status, 200);
    get(format!(
        "signing_algo=ed25519&signing_address={}",
        "ab".repeat(32)
    ))
    .await
    .assert_envelope(404, "signing_address_not_found");
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

/// How the fake dstack agent answers `POST /GetQuote`.
#[derive(Clone)]
enum Agent {
    /// A mock quote over the requested report data.
    Honest,
    /// A mock quote over other report data.
    Lying,
    /// Real quotes recorded elsewhere, in turn, whatever the report data.
    Recorded(Arc<Vec<Vec<u8>>>),
    /// Honest, but each quote takes this long, as real quote services do; counts its quotes.
    Slow(std::time::Duration, Arc<std::sync::atomic::AtomicUsize>),
    /// Honest with quotes, but `GetKey` fails (a KMS that refuses this application).
    NoKeys,
}

/// The key the fake agent's KMS derives for `path`: the same for every call, as the dstack
/// KMS's is for one application.
fn fake_kms_key(path: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(format!("fake-kms:{path}").as_bytes()).into()
}

/// The fake agent's signature chain for `path` and `purpose` (opaque to signet, which
/// publishes it as given).
fn fake_chain(path: &str, purpose: &str) -> Vec<String> {
    use sha2::Digest;
    vec![
        hex::encode(sha2::Sha256::digest(
            format!("app:{purpose}:{path}").as_bytes(),
        )),
        hex::encode(sha2::Sha256::digest(b"kms-root")),
    ]
}

/// The `app_compose` the fake agent's `Info` describes, as dstack writes it: JSON text.
const APP_COMPOSE: &str = r#"{"docker_compose_file":"services:\n  signet:\n    image: signet@sha256:0000000000000000000000000000000000000000000000000000000000000000\n","manifest_version":2,"name":"signet"}"#;

/// The agent's `POST /Info` answer: `tcb_info` is JSON text, as the agent sends it.
fn agent_info() -> serde_json::Value {
    use sha2::Digest;
    let compose_hash = hex::encode(sha2::Sha256::digest(APP_COMPOSE.as_bytes()));
    serde_json::json!({
        "app_id": "0a".repeat(20),
        "instance_id": "0b".repeat(20),
        "app_cert": "",
        "tcb_info": serde_json::json!({
            "mrtd": "00".repeat(48),
            "rtmr0": "00".repeat(48),
            "rtmr1": "00".repeat(48),
            "rtmr2": "00".repeat(48),
            "rtmr3": "00".repeat(48),
            "app_compose": APP_COMPOSE,
            "event_log": [],
        })
        .to_string(),
        "app_name": "signet",
        "device_id": "0c".repeat(32),
        "key_provider_info": "",
        "compose_hash": compose_hash,
        "vm_config": "{\"cpu_count\":4}",
    })
}

/// A dstack agent on a unix socket: `POST /GetQuote` answered as `agent` says, with the
/// event log and VM configuration beside the quote, and `POST /Info` with [`agent_info`].
async fn fake_dstack_agent(dir: &Path, agent: Agent) -> PathBuf {
    let path = dir.join("dstack.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let quotes = Arc::new(DevQuoteProvider::generate());
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let quotes = quotes.clone();
            let agent = agent.clone();
            let served = served.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let quotes = quotes.clone();
                        let agent = agent.clone();
                        let served = served.clone();
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
                                    let quote = match &agent {
                                        Agent::Honest | Agent::NoKeys => quotes.mock_quote(&data),
                                        Agent::Slow(delay, count) => {
                                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                            tokio::time::sleep(*delay).await;
                                            quotes.mock_quote(&data)
                                        }
                                        Agent::Lying => {
                                            data[0] ^= 0xff;
                                            quotes.mock_quote(&data)
                                        }
                                        Agent::Recorded(recorded) => {
                                            let n = served
                                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                            recorded[n % recorded.len()].clone()
                                        }
                                    };
                                    serde_json::json!({
                                        "quote": hex::encode(quote),
                                        "event_log": "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"00\",\"event\":\"compose-hash\",\"event_payload\":\"\"}]",
                                        "report_data": hex::encode(data),
                                        "vm_config": "{\"cpu_count\":4}"
                                    })
                                }
                                ("/Info", _) => agent_info(),
                                ("/GetKey", _) if matches!(agent, Agent::NoKeys) => {
                                    return Ok(http::Response::builder()
                                        .status(500)
                                        .body(Full::new(Bytes::from(
                                            r#"{"error":"app not allowed by the KMS"}"#,
                                        )))
                                        .unwrap());
                                }
                                ("/GetKey", _) => {
                                    let path = json["path"].as_str().unwrap_or_default();
                                    let purpose = json["purpose"].as_str().unwrap_or_default();
                                    serde_json::json!({
                                        "key": hex::encode(fake_kms_key(path)),
                                        "signature_chain": fake_chain(path, purpose),
                                    })
                                }
                                _ => serde_json::json!({"error": "bad request"}),
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(answer.to_string()),
                            )))
                        }
                    },
                );
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
    let socket = fake_dstack_agent(dir.path(), Agent::Honest).await;
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
    assert_eq!(gateway.health().await["attestation_mode"], "dstack");

    // What the field's dstack checks read, as the agent gave it: the event log replayed into
    // RTMR3 (JSON text), the VM configuration, and `info` whose
    // sha256(tcb_info.app_compose) is the compose hash in MRCONFIGID and `info.compose_hash`.
    let events: serde_json::Value =
        serde_json::from_str(report["event_log"].as_str().unwrap()).unwrap();
    assert_eq!(events[0]["imr"], 3);
    assert_eq!(report["vm_config"], "{\"cpu_count\":4}");
    assert_eq!(report["info"], agent_info());
    let tcb_info: serde_json::Value =
        serde_json::from_str(report["info"]["tcb_info"].as_str().unwrap()).unwrap();
    let app_compose = tcb_info["app_compose"].as_str().unwrap();
    use sha2::Digest;
    assert_eq!(
        report["info"]["compose_hash"],
        hex::encode(sha2::Sha256::digest(app_compose.as_bytes()))
    );
    assert_eq!(report["info"]["vm_config"], report["vm_config"]);

    // Reports from the other modes carry none of the three.
    let dev = Gateway::start(&format!("http://127.0.0.1:{}", free_port()));
    let report = request(dev.addr, "GET", "/v1/attestation/report", &[], Vec::new())
        .await
        .json();
    for field in ["event_log", "vm_config", "info"] {
        assert!(report.get(field).is_none(), "{field}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_v4_and_v5_quotes_from_the_agent_are_refused_for_their_binding() {
    // Real quotes bind someone else's report data: the gateway must parse every one of them
    // (v4, v5 with a TD 1.5 body, v5 whose TCB level Intel's collateral lacks) and refuse it
    // for its binding, never because it cannot read it.
    let real = fixtures_dir().join("tdx/real");
    let recorded: Vec<Vec<u8>> = ["v4_quote.bin", "v5_quote.bin", "v5_no_tcb_level.bin"]
        .iter()
        .map(|name| std::fs::read(real.join(name)).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let socket = fake_dstack_agent(dir.path(), Agent::Recorded(Arc::new(recorded))).await;
    let port = free_port();
    let gateway = Gateway::start_with_attestation(
        &format!("http://127.0.0.1:{port}"),
        &format!(
            "    mode: dstack\n    gpu: none\n    cache_ttl: 0s\n    dstack_socket: {}\n",
            socket.display()
        ),
        "",
    );
    for _ in 0..3 {
        let reply = request(
            gateway.addr,
            "GET",
            &format!("/v1/attestation/report?nonce={}", "5a".repeat(32)),
            &[],
            Vec::new(),
        )
        .await;
        reply.assert_envelope(503, "attestation_unavailable");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let log = loop {
        let log = gateway.log();
        let refusals = log
            .lines()
            .filter(|l| l.contains("does not bind the signing address and nonce"))
            .count();
        if refusals >= 1 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Failures in a row are logged once per interval (a flood must not flood the log); that
    // line names the binding, and no quote was refused for its shape. Each quote's own
    // verdict is checked in signet-attest's unit tests.
    let refusals = log
        .lines()
        .filter(|l| l.contains("does not bind the signing address and nonce"))
        .count();
    assert_eq!(refusals, 1, "{log}");
    assert!(!log.contains("does not parse"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_that_binds_the_wrong_data_is_a_503_and_an_error_log() {
    let dir = tempfile::tempdir().unwrap();
    let socket = fake_dstack_agent(dir.path(), Agent::Lying).await;
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

/// One raw GET from a given loopback address; returns the status code.
fn get_status_from(local: &str, to: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{local}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: signet\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"))
}

/// A flood of fresh-nonce attestation requests from one address neither queues quotes
/// without bound nor keeps a verifier at another address from its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_flood_is_bounded_and_other_verifiers_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let quotes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let socket = fake_dstack_agent(
        dir.path(),
        Agent::Slow(std::time::Duration::from_millis(200), quotes.clone()),
    )
    .await;
    let port = free_port();
    let gateway = Gateway::start_with_attestation(
        &format!("http://127.0.0.1:{port}"),
        &format!(
            "    mode: dstack\n    gpu: none\n    dstack_socket: {}\n    cache_ttl: 0s\n    \
             max_concurrent: 1\n    max_waiting: 2\n    per_client_per_minute: 6\n",
            socket.display()
        ),
        "",
    );
    let addr = gateway.addr;
    let flood: Vec<_> = (0..24u8)
        .map(|i| {
            std::thread::spawn(move || {
                let nonce = format!("{i:02x}").repeat(32);
                get_status_from(
                    "127.0.0.1",
                    addr,
                    &format!("/v1/attestation/report?nonce={nonce}"),
                )
            })
        })
        .collect();
    let statuses: Vec<u16> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    let count = |code: u16| statuses.iter().filter(|&&s| s == code).count();
    assert_eq!(count(200) + count(429) + count(503), 24, "{statuses:?}");
    assert!(
        count(429) >= 18,
        "one address gets its rate and no more: {statuses:?}"
    );
    assert!(count(200) >= 1, "{statuses:?}");
    let made = quotes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(made <= 6, "{made} quotes made for one flooding address");
    // A verifier at another address gets a fresh report.
    let nonce = "ab".repeat(32);
    assert_eq!(
        get_status_from(
            "127.0.0.2",
            addr,
            &format!("/v1/attestation/report?nonce={nonce}")
        ),
        200
    );
    // And the flood was logged once, not once a request.
    let log = gateway.log();
    assert!(log.matches("attestation failed").count() <= 2, "{log}");
}

/// What a gateway shows of its keys: the signing address, the legacy Ed25519 key and the ACI
/// receipt key.
async fn shown_keys(gateway: &Gateway) -> (String, String, String) {
    let legacy = request(
        gateway.addr,
        "GET",
        "/v1/attestation/report?signing_algo=ed25519",
        &[],
        Vec::new(),
    )
    .await
    .json();
    let aci = request(gateway.addr, "GET", "/v1/aci/attestation", &[], Vec::new())
        .await
        .json();
    (
        gateway.signing_address().await,
        legacy["signing_address"].as_str().unwrap().to_owned(),
        aci["attestation"]["workload_keyset"]["receipt_signing_keys"][0]["public_key"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// The KMS keys the fake agent derives for these roles, as `{role: hex}` for the Python
/// scripts that recompute signet's keys from them.
fn fake_kms_keys(roles: &[&str]) -> serde_json::Value {
    roles
        .iter()
        .map(|role| {
            (
                role.to_string(),
                serde_json::Value::from(hex::encode(fake_kms_key(&format!("signet/v1/{role}")))),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn dstack_keys_gateway(socket: &Path) -> Gateway {
    Gateway::start_with_attestation(
        &format!("http://127.0.0.1:{}", free_port()),
        &format!(
            "    mode: dstack\n    gpu: none\n    dstack_socket: {}\n",
            socket.display()
        ),
        "  signing:\n    key_source: dstack\n",
    )
}

/// `signing.key_source: dstack`: every key comes from the KMS (one path per role), so a
/// restarted instance has the same keys, the roles' keys differ, a `random` start differs,
/// and the reports say where the keys come from with what a verifier needs to check custody.
/// The derivation is recomputed by Python (eth-account, cryptography), not by signet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dstack_keys_outlive_a_restart_and_each_role_has_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let socket = fake_dstack_agent(dir.path(), Agent::Honest).await;
    let mut first = dstack_keys_gateway(&socket);
    let keys = shown_keys(&first).await;
    first.kill();
    let second = dstack_keys_gateway(&socket);
    assert_eq!(
        shown_keys(&second).await,
        keys,
        "the same keys after a restart"
    );
    let (signing, legacy, receipt) = keys.clone();
    assert_ne!(legacy, receipt, "one key per role");

    // The KMS keys as the fake derives them, turned into signet's keys independently: the
    // signing key is the KMS key; an Ed25519 role's seed is
    // sha256("signet dstack key seed v1\0" || role || "\0" || KMS key).
    let script = "import sys, hashlib, json\nfrom eth_account import Account\nfrom cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\nfrom cryptography.hazmat.primitives import serialization\nkeys = json.load(sys.stdin)\nprint(Account.from_key(bytes.fromhex(keys['signing'])).address)\nfor role in ['legacy-ed25519', 'aci-receipt']:\n    seed = hashlib.sha256(b'signet dstack key seed v1\\0' + role.encode() + b'\\0' + bytes.fromhex(keys[role])).digest()\n    print(Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex())";
    let kms = fake_kms_keys(&["signing", "legacy-ed25519", "aci-receipt"]);
    let expected = python(script, &kms.to_string());
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(
        expected,
        [signing.as_str(), legacy.as_str(), receipt.as_str()]
    );

    // The reports say so, with each role's path, purpose, chain and link.
    let report = request(
        second.addr,
        "GET",
        "/v1/attestation/report",
        &[],
        Vec::new(),
    )
    .await
    .json();
    let custody = &report["key_custody"];
    assert_eq!(custody["source"], "dstack");
    let roles: Vec<&str> = custody["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "signing",
            "legacy-ed25519",
            "aci-receipt",
            "e2ee-x25519",
            "e2ee-secp256k1"
        ]
    );
    for entry in custody["keys"].as_array().unwrap() {
        let role = entry["role"].as_str().unwrap();
        let (path, purpose) = (format!("signet/v1/{role}"), format!("signet:{role}"));
        assert_eq!(entry["path"], path.as_str());
        assert_eq!(entry["purpose"], purpose.as_str());
        assert_eq!(
            entry["signature_chain"],
            serde_json::json!(fake_chain(&path, &purpose))
        );
        // The chain covers the KMS key; an Ed25519 role's key is vouched for by it.
        let kms_address = python(
            "import sys\nfrom eth_keys import keys\nprint(keys.PublicKey.from_compressed_bytes(bytes.fromhex(sys.stdin.read().strip())).to_checksum_address())",
            entry["kms_public_key"].as_str().unwrap(),
        );
        let kms_address = kms_address.trim();
        let public_key = entry["public_key"].as_str().unwrap();
        if role == "signing" {
            assert_eq!(public_key, signing);
            assert_eq!(kms_address, signing);
            assert!(entry.get("link_signature").is_none());
        } else {
            let link = format!("signet-key-custody:v1:{role}:{public_key}");
            assert_eq!(
                recover_independently(&link, entry["link_signature"].as_str().unwrap()),
                kms_address
            );
        }
    }
    let aci = request(second.addr, "GET", "/v1/aci/attestation", &[], Vec::new())
        .await
        .json();
    assert_eq!(&aci["attestation"]["evidence"]["key_custody"], custody);

    // The E2EE keys come from the KMS too, a seed per role derived as an Ed25519 role's,
    // recomputed by Python's `cryptography` and published in the keyset as E2EE v2 says.
    let e2ee_script = "import sys, hashlib, json\nfrom cryptography.hazmat.primitives.asymmetric import x25519, ec\nfrom cryptography.hazmat.primitives import serialization as s\nkeys = json.load(sys.stdin)\nseed = lambda role: hashlib.sha256(b'signet dstack key seed v1\\0' + role.encode() + b'\\0' + bytes.fromhex(keys[role])).digest()\nprint(x25519.X25519PrivateKey.from_private_bytes(seed('e2ee-x25519')).public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())\nprint(ec.derive_private_key(int.from_bytes(seed('e2ee-secp256k1'), 'big'), ec.SECP256K1()).public_key().public_bytes(s.Encoding.X962, s.PublicFormat.UncompressedPoint).hex())";
    let kms_e2ee = fake_kms_keys(&["e2ee-x25519", "e2ee-secp256k1"]);
    let expected = python(e2ee_script, &kms_e2ee.to_string());
    let published: Vec<&str> = aci["attestation"]["workload_keyset"]["e2ee_public_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["public_key"].as_str().unwrap())
        .collect();
    assert_eq!(expected.lines().collect::<Vec<_>>(), published);

    // A random start has keys of its own, and says so.
    let random = Gateway::start(&format!("http://127.0.0.1:{}", free_port()));
    let (r_signing, r_legacy, r_receipt) = shown_keys(&random).await;
    assert!(r_signing != signing && r_legacy != legacy && r_receipt != receipt);
    let report = request(
        random.addr,
        "GET",
        "/v1/attestation/report",
        &[],
        Vec::new(),
    )
    .await
    .json();
    assert_eq!(
        report["key_custody"],
        serde_json::json!({"source": "random"})
    );
}

/// A KMS that gives no key stops signet at start, saying why; it never falls back to
/// random keys.
#[test]
fn an_agent_that_gives_no_key_stops_signet_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = runtime.block_on(fake_dstack_agent(dir.path(), Agent::NoKeys));
    let stderr = expect_start_failure(&format!(
        "    mode: dstack\n    gpu: none\n    dstack_socket: {}\n  signing:\n    key_source: dstack\n",
        socket.display()
    ));
    assert!(
        stderr.contains("signet.signing.key_source dstack"),
        "{stderr}"
    );
    assert!(stderr.contains("GetKey"), "{stderr}");
    assert!(stderr.contains("500"), "{stderr}");
    let missing = expect_start_failure(
        "    mode: dev\n    gpu: none\n    dstack_socket: /nonexistent/dstack.sock\n  signing:\n    key_source: dstack\n",
    );
    assert!(missing.contains("/nonexistent/dstack.sock"), "{missing}");
}
