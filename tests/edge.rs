//! Edge features against the live binary: TLS with HTTP/1.1 and HTTP/2 through ALPN, bearer
//! tokens, size and concurrency limits, upstream timeouts, several upstreams with health
//! checks, and request ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::{Duration, Instant};

// --- TLS ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http1_and_http2_through_alpn_with_a_certificate_the_client_checks() {
    let cert = TestCert::localhost();
    let upstream = Upstream::start();
    let gateway = Gateway::start_tls(&upstream.url(), &cert);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    // HTTP/1.1
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let tls = tls_client(&cert.cert_pem, &[b"http/1.1"])
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"stream":true}"#)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));

    // HTTP/2, signed the same way
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let tls = tls_client(&cert.cert_pem, &[b"h2"])
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("https://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .header("x-mock-id", "over-h2")
        .body(Full::new(Bytes::from_static(br#"{"stream":true}"#)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let h2_body = response.into_body().collect().await.unwrap().to_bytes();
    let request = http::Request::get("https://localhost/v1/signature/over-h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let receipt = sender.send_request(request).await.unwrap();
    assert_eq!(receipt.status(), 200);
    let receipt: serde_json::Value =
        serde_json::from_slice(&receipt.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let health = FakeHealth::address(&gateway, &cert).await;
    assert_receipt(&receipt, br#"{"stream":true}"#, &h2_body, &health);

    // A client that does not trust the certificate refuses the handshake.
    let stranger = TestCert::localhost();
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    assert!(
        tls_client(&stranger.cert_pem, &[b"http/1.1"])
            .connect(name, tcp)
            .await
            .is_err()
    );
}

/// Over HTTP/2 and TLS too, a stream is forwarded as it is produced: the first event arrives
/// while the upstream holds the rest, and the signature exists only once the stream has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_http2_and_tls_are_not_buffered() {
    let cert = TestCert::localhost();
    let upstream = Upstream::start();
    let gateway = Gateway::start_tls(&upstream.url(), &cert);
    let address = FakeHealth::address(&gateway, &cert).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let tls = tls_client(&cert.cert_pem, &[b"h2"])
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = br#"{"stream":true}"#;
    for inband in [false, true] {
        let id = format!("h2-gated-{inband}");
        let mut request = http::Request::post("https://localhost/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-mock-id", &id)
            .header("x-mock-gate", &id);
        if inband {
            request = request.header("x-signet-signature", "in-band");
        }
        let request = request.body(Full::new(Bytes::from_static(body))).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let mut stream = response.into_body();
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"\n\n") {
            let frame = stream.frame().await.expect("more frames").unwrap();
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert!(
            got.starts_with(b"data: {"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        // Another stream on the same connection, while the upstream holds the first back.
        let lookup = http::Request::get(format!("https://localhost/v1/signature/{id}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(sender.send_request(lookup).await.unwrap().status(), 404);
        upstream.release(&id).await;
        got.extend_from_slice(&stream.collect().await.unwrap().to_bytes());
        let covered = if inband {
            let (covered, trailer) = signet_core::inband::split_stream(&got);
            assert_eq!(
                trailer.expect("an in-band signature").signing_address,
                address
            );
            covered.to_vec()
        } else {
            got
        };
        assert!(covered.ends_with(b"data: [DONE]\n\n"));
        let lookup = http::Request::get(format!("https://localhost/v1/signature/{id}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let receipt = sender.send_request(lookup).await.unwrap();
        assert_eq!(receipt.status(), 200);
        let receipt: serde_json::Value =
            serde_json::from_slice(&receipt.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        assert_receipt(&receipt, body, &covered, &address);
    }
}

/// Reads the signing address from /health over TLS.
struct FakeHealth;

impl FakeHealth {
    async fn address(gateway: &Gateway, cert: &TestCert) -> String {
        let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tls_client(&cert.cert_pem, &[b"http/1.1"])
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get("/health")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let body = sender
            .send_request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["signing_address"].as_str().unwrap().to_owned()
    }
}

// --- Bearer tokens -----------------------------------------------------------------------

const TOKEN: &str = "tok-0123456789abcdef";
const FILE_TOKEN: &str = "file-token-fedcba9876543210";

fn authed_gateway(upstream: &Upstream, forward: bool) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("# operators\n\n{FILE_TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let gateway = Gateway::start_with(
        &upstream.url(),
        &format!(
            "  auth:\n    tokens: [\"{TOKEN}\"]\n    token_files: [{}]\n    forward_authorization: {forward}\n",
            token_file.display()
        ),
    );
    std::mem::forget(dir);
    gateway
}

#[tokio::test]
async fn bearer_tokens_guard_completions_and_signatures_but_not_attestation() {
    let upstream = Upstream::start();
    let gateway = authed_gateway(&upstream, false);
    let body = br#"{"stream":true}"#;
    let bearer = format!("Bearer {TOKEN}");

    let missing = gateway.post("/v1/chat/completions", &[], body).await;
    missing.assert_envelope(401, "invalid_api_key");
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    let wrong = gateway
        .post(
            "/v1/chat/completions",
            &[("authorization", "Bearer tok-0123456789abcdeX")],
            body,
        )
        .await;
    wrong.assert_envelope(401, "invalid_api_key");
    let models = request(gateway.addr, "GET", "/v1/models", &[], Vec::new()).await;
    models.assert_envelope(401, "invalid_api_key");
    assert!(
        upstream.seen().await.is_empty(),
        "nothing reached the upstream"
    );

    let ok = gateway
        .post(
            "/v1/chat/completions",
            &[("authorization", &bearer), ("x-mock-id", "authed-1")],
            body,
        )
        .await;
    assert_eq!(ok.status, 200);
    let from_file = format!("Bearer {FILE_TOKEN}");
    let ok = gateway
        .post("/v1/completions", &[("authorization", &from_file)], body)
        .await;
    assert_eq!(ok.status, 200);
    for seen in upstream.seen().await {
        assert!(
            seen["authorization"].is_null(),
            "the token is signet's, not the upstream's: {seen}"
        );
    }

    gateway
        .signature("authed-1")
        .await
        .assert_envelope(401, "invalid_api_key");
    let receipt = request(
        gateway.addr,
        "GET",
        "/v1/signature/authed-1",
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(receipt.status, 200);
    assert_eq!(
        request(
            gateway.addr,
            "GET",
            "/v1/attestation/report",
            &[],
            Vec::new()
        )
        .await
        .status,
        200
    );
    assert_eq!(gateway.health().await["status"], "ok");

    let log = gateway.log();
    assert!(
        !log.contains(TOKEN) && !log.contains(FILE_TOKEN),
        "tokens never reach the log"
    );
}

#[tokio::test]
async fn the_token_is_forwarded_only_when_configured() {
    let upstream = Upstream::start();
    let gateway = authed_gateway(&upstream, true);
    let bearer = format!("Bearer {TOKEN}");
    let ok = gateway
        .post(
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            br#"{"stream":false}"#,
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(upstream.seen().await[0]["authorization"], bearer.as_str());
}

#[test]
fn a_token_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("{FILE_TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("signet.yaml");
    std::fs::write(
        &config,
        format!(
            "signet:\n  upstream: http://127.0.0.1:9\n  attestation: {{mode: dev, gpu: none}}\n  auth:\n    token_files: [{}]\n",
            token_file.display()
        ),
    )
    .unwrap();
    let (ok, _, stderr) = run_signet(&["serve", "-t", "-c", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("signet.auth.token_files[0]") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains(FILE_TOKEN));
}

// --- Limits and timeouts -----------------------------------------------------------------

#[tokio::test]
async fn bodies_and_heads_over_their_limits_are_refused_before_the_upstream() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  limits:\n    max_request_body: 4KiB\n    max_header_bytes: 2KiB\n",
    );
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
    gateway
        .post("/v1/chat/completions", &[], big.as_bytes())
        .await
        .assert_envelope(413, "request_too_large");
    let long_header = "y".repeat(3000);
    gateway
        .post(
            "/v1/chat/completions",
            &[("x-padding", &long_header)],
            br#"{"stream":true}"#,
        )
        .await
        .assert_envelope(431, "headers_too_large");
    let stats = upstream.stats().await;
    assert_eq!(stats["requests"].as_array().unwrap().len(), 0, "{stats}");
    assert_eq!(stats["incomplete"], 0, "{stats}");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(&upstream.url(), "  limits:\n    max_request_body: 64KiB\n");
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000));
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("transfer-encoding", "chunked")],
            big.as_bytes(),
        )
        .await;
    reply.assert_envelope(413, "request_too_large");
    assert!(
        upstream.seen().await.is_empty(),
        "the upstream never got a complete request"
    );
}

#[tokio::test]
async fn concurrent_completions_beyond_the_cap_get_a_503() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  limits:\n    max_concurrent_streams: 1\n",
    );
    let mut first = open(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-gate", "cap-1"),
            ("content-type", "application/json"),
        ],
        br#"{"stream":true}"#.to_vec(),
    )
    .await;
    first.read_until(b"\n\n").await;
    let second = gateway
        .post("/v1/chat/completions", &[], br#"{"stream":true}"#)
        .await;
    second.assert_envelope(503, "too_many_requests");
    assert_eq!(second.headers["retry-after"], "1");
    upstream.release("cap-1").await;
    first.read_to_end().await.unwrap();
    // The place is given back when the gateway has finished the request, which can be a
    // moment after the client has read the last byte.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let third = gateway
            .post("/v1/chat/completions", &[], br#"{"stream":true}"#)
            .await;
        if third.status == 200 {
            break;
        }
        third.assert_envelope(503, "too_many_requests");
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_stalled_stream_is_cut_after_the_idle_timeout_and_not_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  upstream_timeouts:\n    idle: 300ms\n    first_byte: 30s\n",
    );
    let started = Instant::now();
    let mut open = open(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-gate", "never"),
            ("x-mock-id", "stalled-1"),
            ("content-type", "application/json"),
        ],
        br#"{"stream":true}"#.to_vec(),
    )
    .await;
    assert_eq!(open.status, 200);
    assert!(
        open.read_to_end().await.is_err(),
        "the stream ends early, without its terminator"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    gateway.wait_for_log_line(&["id=stalled-1", "signed=false", "reason=upstream_abort"]);
    assert_eq!(gateway.signature("stalled-1").await.status, 404);
}

#[tokio::test]
async fn a_silent_upstream_gets_a_504_after_the_first_byte_timeout() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  upstream_timeouts:\n    first_byte: 300ms\n    idle: 30s\n",
    );
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-head-delay-ms", "5000")],
            br#"{"stream":false}"#,
        )
        .await;
    reply.assert_envelope(504, "upstream_timeout");
}

// --- Several upstreams -------------------------------------------------------------------

fn served_by(upstream_stats: &serde_json::Value) -> usize {
    upstream_stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_stops_getting_traffic_and_comes_back_when_healthy() {
    let port_a = free_port();
    let a = Upstream::start_with(&["--listen", &format!("127.0.0.1:{port_a}")]);
    let mut b = Upstream::start();
    let b_port = b.addr.port();
    let gateway = Gateway::start_with(
        &a.url(),
        "  health_check:\n    interval: 200ms\n    timeout: 200ms\n    path: /health\n",
    )
    .with_upstreams(&[a.url(), b.url()]);
    let body = br#"{"stream":true}"#;
    for _ in 0..10 {
        assert_eq!(
            gateway.post("/v1/chat/completions", &[], body).await.status,
            200
        );
    }
    assert!(
        served_by(&a.stats().await) >= 3 && served_by(&b.stats().await) >= 3,
        "round-robin"
    );

    // B dies: no request fails (connection failures go to A), and B gets nothing.
    b.kill();
    for _ in 0..20 {
        assert_eq!(
            gateway.post("/v1/chat/completions", &[], body).await.status,
            200
        );
    }

    // B comes back on the same port: within a few health checks it serves again.
    let b = Upstream::start_with(&["--listen", &format!("127.0.0.1:{b_port}")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_by(&b.stats().await) == 0 {
        assert!(Instant::now() < deadline, "B never came back");
        assert_eq!(
            gateway.post("/v1/chat/completions", &[], body).await.status,
            200
        );
    }
    let (a_before, b_before) = (served_by(&a.stats().await), served_by(&b.stats().await));
    for _ in 0..10 {
        assert_eq!(
            gateway.post("/v1/chat/completions", &[], body).await.status,
            200
        );
    }
    assert!(
        served_by(&a.stats().await) >= a_before + 3,
        "A still takes its share"
    );
    assert!(
        served_by(&b.stats().await) >= b_before + 3,
        "B takes its share again"
    );
}

// --- Request ids -------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let kept = gateway
        .post(
            "/v1/chat/completions",
            &[("x-request-id", "client-req-42")],
            br#"{"stream":true}"#,
        )
        .await;
    // signet's own id goes upstream and back, never the client's (an upstream such as vLLM
    // makes its completion id from it); the client's stays in the access log.
    let ours = kept.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(ours.len(), 32);
    assert_ne!(ours, "client-req-42");
    assert_eq!(upstream.seen().await[0]["x_request_id"], ours.as_str());
    gateway.wait_for_log_line(&[
        &format!("request_id={ours}"),
        "client_request_id=client-req-42",
        "route=chat_completions",
    ]);

    let replaced = gateway
        .post(
            "/v1/chat/completions",
            &[("x-request-id", "bad id with spaces!")],
            br#"{"stream":true}"#,
        )
        .await;
    let drawn = replaced.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(drawn.len(), 32);

    for reply in [
        request(gateway.addr, "GET", "/health", &[], Vec::new()).await,
        gateway.post("/v1/chat/completions", &[], b"{").await,
        gateway.signature("nope").await,
    ] {
        assert!(
            reply.headers.contains_key("x-request-id"),
            "status {}",
            reply.status
        );
    }
}
