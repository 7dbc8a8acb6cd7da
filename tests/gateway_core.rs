//! The core gateway against a real upstream process: transparent proxying, incremental
//! hashing, the seed golden vector, signing, the signature route, and the cases where
//! nothing may be signed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// The seed stream replayed in awkward pieces must always yield the seed's text.
#[tokio::test]
async fn seed_vector_yields_the_seed_text_however_the_stream_is_cut() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let mut signed = Vec::new();
    for chunks in ["", "1", "7,3,1", "2,311", "4096", "100,1,1,1,500"] {
        let mut headers = vec![("x-mock-replay", "seed-response.sse")];
        if !chunks.is_empty() {
            headers.push(("x-mock-chunks", chunks));
        }
        let reply = gateway
            .post("/v1/chat/completions", &headers, SEED_REQUEST)
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            &reply.body[..],
            SEED_RESPONSE,
            "client bytes must be unchanged"
        );
        let receipt = gateway.signature(SEED_ID).await;
        assert_eq!(receipt.status, 200);
        let receipt = receipt.json();
        assert_eq!(receipt["text"], SEED_TEXT, "chunks {chunks:?}");
        assert_receipt(&receipt, SEED_REQUEST, SEED_RESPONSE, &address);
        signed.push((
            SEED_TEXT.to_owned(),
            receipt["signature"].as_str().unwrap().to_owned(),
        ));
    }
    // And by an implementation that is not signet's.
    for recovered in recover_independently_many(&signed) {
        assert_eq!(recovered, address);
    }
}

#[tokio::test]
async fn non_streaming_json_is_signed_over_the_exact_bytes() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#;
    let reply = gateway
        .post("/v1/chat/completions", &[("x-mock-chunks", "3")], body)
        .await;
    assert_eq!(reply.status, 200);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let receipt = gateway.signature(&id).await.json();
    assert_receipt(&receipt, body, &reply.body, &address);
    // The upstream received exactly the client's bytes.
    let seen = upstream.seen().await;
    assert_eq!(seen.last().unwrap()["body_sha256"], sha256_hex(body));
}

#[tokio::test]
async fn legacy_completions_stream_is_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let body = br#"{"model":"m","prompt":"once upon","stream":true,"max_tokens":5}"#;
    let reply = gateway
        .post("/v1/completions", &[("x-mock-events", "5")], body)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("cmpl-"));
    assert_receipt(
        &gateway.signature(id).await.json(),
        body,
        &reply.body,
        &address,
    );
}

/// A stream is forwarded as it is produced: the first event arrives while the upstream is
/// still holding the rest back, and the signature exists only once the stream has ended.
/// Whether the upstream frames it chunked or with a Content-Length, and whether the
/// signature is looked up or comes in-band. (HTTP/2 over TLS: `tests/edge.rs`.)
#[tokio::test]
async fn streams_are_not_buffered() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let body = br#"{"stream":true}"#.to_vec();
    for framing in ["chunked", "length"] {
        for inband in [false, true] {
            let id = format!("gated-{framing}-{inband}");
            let mut headers = vec![
                ("x-mock-gate", id.as_str()),
                ("x-mock-id", id.as_str()),
                ("x-mock-framing", framing),
            ];
            if inband {
                headers.push(("x-signet-signature", "in-band"));
            }
            let mut open = open(
                gateway.addr,
                "POST",
                "/v1/chat/completions",
                &headers,
                body.clone(),
            )
            .await;
            assert_eq!(open.status, 200);
            let mut got = open.read_until(b"\n\n").await;
            assert!(
                got.starts_with(b"data: {"),
                "{id}: {}",
                String::from_utf8_lossy(&got)
            );
            // The upstream is blocked on the gate: the stream is not complete, so nothing is
            // signed.
            assert_eq!(gateway.signature(&id).await.status, 404, "{id}");
            upstream.release(&id).await;
            got.extend(open.read_to_end().await.unwrap());
            let covered = if inband {
                let (covered, trailer) = signet_core::inband::split_stream(&got);
                let trailer = trailer.expect("the in-band signature follows the stream");
                assert_eq!(trailer.signing_address, address);
                covered.to_vec()
            } else {
                got
            };
            assert!(covered.ends_with(b"data: [DONE]\n\n"), "{id}");
            let receipt = gateway.signature(&id).await;
            assert_eq!(receipt.status, 200, "{id}");
            assert_receipt(&receipt.json(), &body, &covered, &address);
        }
    }
}

#[tokio::test]
async fn other_paths_pass_through_unchanged_and_unsigned() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let direct = request(upstream.addr, "GET", "/v1/models", &[], Vec::new()).await;
    let proxied = request(
        gateway.addr,
        "GET",
        "/v1/models",
        &[("accept-encoding", "gzip")],
        Vec::new(),
    )
    .await;
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.body, direct.body);
    let missing = request(gateway.addr, "GET", "/no/such/path", &[], Vec::new()).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json()["object"],
        "error",
        "the upstream's own 404 body"
    );
    let echoed = request(gateway.addr, "POST", "/echo", &[], b"\x00\xffraw".to_vec()).await;
    assert_eq!(
        &echoed.body[..],
        b"\x00\xffraw",
        "pass-through bodies are not checked"
    );
    let seen = upstream.seen().await;
    let models = seen
        .iter()
        .find(|r| r["path"] == "/v1/models" && r["accept_encoding"].is_string());
    assert!(
        models.is_some(),
        "pass-through keeps Accept-Encoding: {seen:?}"
    );
}

#[tokio::test]
async fn accept_encoding_is_removed_toward_the_upstream_on_signed_routes() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("accept-encoding", "gzip, br")],
            br#"{"stream":true}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = upstream.seen().await;
    let last = seen.last().unwrap();
    assert_eq!(last["path"], "/v1/chat/completions");
    assert!(last["accept_encoding"].is_null(), "{last}");
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged_and_are_not_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    for status in ["400", "404", "500", "503"] {
        let body = br#"{"stream":true}"#;
        let reply = gateway
            .post(
                "/v1/chat/completions",
                &[("x-mock-status", status), ("x-mock-id", "err-1")],
                body,
            )
            .await;
        assert_eq!(reply.status.to_string(), status);
        let value = reply.json();
        assert_eq!(
            value["message"], "mock upstream error",
            "the upstream's own body: {value}"
        );
        gateway.wait_for_log_line(&[
            "route=chat_completions",
            &format!("status={status}"),
            "reason=upstream_error",
        ]);
    }
    assert_eq!(gateway.signature("err-1").await.status, 404);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_envelope() {
    let port = free_port();
    let gateway = Gateway::start(&format!("http://127.0.0.1:{port}"));
    let reply = gateway
        .post("/v1/chat/completions", &[], br#"{"stream":true}"#)
        .await;
    reply.assert_envelope(502, "upstream_unreachable");
    let reply = request(gateway.addr, "GET", "/v1/models", &[], Vec::new()).await;
    reply.assert_envelope(502, "upstream_unreachable");
    // Local routes still work without an upstream.
    assert_eq!(gateway.health().await["status"], "ok");
}

/// The upstream dies after part of the stream: the client gets an error, nothing is signed.
#[tokio::test]
async fn a_stream_the_upstream_cuts_is_never_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    for framing in ["chunked", "length"] {
        let id = format!("cut-{framing}");
        let mut open = open(
            gateway.addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("x-mock-die-after", "600"),
                ("x-mock-id", &id),
                ("x-mock-framing", framing),
            ],
            br#"{"stream":true}"#.to_vec(),
        )
        .await;
        assert_eq!(open.status, 200);
        assert!(
            open.read_to_end().await.is_err(),
            "the client must see the stream break"
        );
        gateway.wait_for_log_line(&[&format!("id={id}"), "signed=false", "reason=upstream_abort"]);
        assert_eq!(gateway.signature(&id).await.status, 404);
    }
}

/// The client goes away mid-stream: nothing is signed, even though the upstream finishes.
#[tokio::test]
async fn a_stream_the_client_abandons_is_never_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let mut open = open(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-gate", "abandon-1"),
            ("x-mock-id", "abandoned-1"),
            ("x-request-id", "abandoned-1"),
            ("x-mock-events", "2000"),
        ],
        br#"{"stream":true}"#.to_vec(),
    )
    .await;
    open.read_until(b"\n\n").await;
    drop(open);
    upstream.release("abandon-1").await;
    // The line is picked by request id, then its verdict is read.
    let line = gateway.access_line("abandoned-1");
    assert_eq!(line["route"], "chat_completions", "{line:?}");
    assert_eq!(line["signed"], "false", "{line:?}");
    assert_eq!(line["reason"], "client_abort", "{line:?}");
    assert_eq!(gateway.signature("abandoned-1").await.status, 404);
}

/// OpenAI's SDKs stop reading at `data: [DONE]` and close, often before the upstream's end
/// of body: every byte reached the client, so the response is signed all the same.
#[tokio::test]
async fn a_client_that_leaves_right_after_done_still_gets_its_signature() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let body = br#"{"stream":true}"#;
    let addr = gateway.addr;
    let received = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-mock-id: early-close-1\r\nx-request-id: early-close-1\r\nx-mock-end-delay-ms: 300\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.windows(14).any(|w| w == b"data: [DONE]\n\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "stream ended before [DONE]");
            raw.extend_from_slice(&buf[..n]);
        }
        // Gone before the chunked body's terminator, as SDK clients do.
        body_so_far(&raw).unwrap()
    })
    .await
    .unwrap();
    assert!(received.ends_with(b"data: [DONE]\n\n"));
    let line = gateway.access_line("early-close-1");
    assert_eq!(line["signed"], "true", "{line:?}");
    let receipt = gateway.signature("early-close-1").await.json();
    // Both halves: the request sent and exactly the bytes received.
    assert_receipt_independently(&receipt, body, &received, &gateway.signing_address().await);
}

#[tokio::test]
async fn malformed_requests_get_envelopes_and_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    gateway
        .post("/v1/chat/completions", &[], b"{\"stream\":")
        .await
        .assert_envelope(400, "invalid_request_body");
    gateway
        .post("/v1/chat/completions", &[], b"\xff\xfe{}")
        .await
        .assert_envelope(400, "invalid_request_body");
    gateway
        .post("/v1/completions", &[], b"[1,2,3]")
        .await
        .assert_envelope(400, "invalid_request_body");
    gateway
        .post("/v1/completions", &[], b"")
        .await
        .assert_envelope(400, "invalid_request_body");
    let wrong_method = request(gateway.addr, "GET", "/v1/chat/completions", &[], Vec::new()).await;
    wrong_method.assert_envelope(405, "method_not_allowed");
    assert_eq!(wrong_method.headers["allow"], "POST");
    let stats = upstream.stats().await;
    assert_eq!(stats["requests"].as_array().unwrap().len(), 0, "{stats}");
    assert_eq!(
        stats["incomplete"], 0,
        "not even a request head was sent: {stats}"
    );
}

/// Bodies on the streaming path (chunked, or over the 64 KiB read before the upstream is
/// contacted) are checked once complete, after the request head has gone upstream: the
/// upstream sees that head and then its connection closed before a single body byte, never a
/// complete request, and nothing is signed (docs/API.md §3.2).
#[tokio::test]
async fn bad_bodies_on_the_streaming_path_never_reach_the_upstream_complete() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let pad = "x".repeat(100 * 1024);
    let mut invalid_utf8 = format!(r#"{{"pad":"{pad}"#).into_bytes();
    invalid_utf8.extend_from_slice(b"\xff\xfe\"}");
    let bodies = [
        (
            "malformed",
            format!(r#"{{"pad":"{pad}","stream":"#).into_bytes(),
        ),
        ("array", format!(r#"[{{"pad":"{pad}"}}]"#).into_bytes()),
        ("utf8", invalid_utf8),
        // Small, but chunked: no length to decide on before the upstream is contacted.
        ("small", b"[1,2,3]".to_vec()),
    ];
    let mut refused = 0;
    for (name, body) in bodies {
        for chunked in [false, true] {
            if body.len() <= 64 * 1024 && !chunked {
                continue; // read before the upstream is contacted: the test above
            }
            let request_id = format!("bad-{name}-{}", if chunked { "chunked" } else { "length" });
            let mut headers = vec![
                ("x-request-id", request_id.as_str()),
                ("x-mock-id", "bad-body"),
            ];
            if chunked {
                headers.push(("transfer-encoding", "chunked"));
            }
            gateway
                .post("/v1/chat/completions", &headers, &body)
                .await
                .assert_envelope(400, "invalid_request_body");
            refused += 1;
            let line = gateway.access_line(&request_id);
            assert_eq!(line["status"], "400", "{line:?}");
            assert_eq!(line["signed"], "false", "{line:?}");
            assert_eq!(line["reason"], "rejected", "{line:?}");
            // The upstream notices the closed connection a moment after the client's answer.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let stats = loop {
                let stats = upstream.stats().await;
                if stats["incomplete"] == refused {
                    break stats;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{request_id}: the upstream never saw the head end unanswered: {stats}"
                );
                tokio::task::yield_now().await;
            };
            assert_eq!(
                stats["requests"],
                serde_json::json!([]),
                "{request_id}: {stats}"
            );
            assert_eq!(
                stats["incomplete_body_bytes"], 0,
                "{request_id}: not one body byte went upstream: {stats}"
            );
        }
    }
    assert_eq!(gateway.signature("bad-body").await.status, 404);
}

#[tokio::test]
async fn the_signature_route_follows_the_contract() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    gateway
        .signature("chatcmpl-unknown")
        .await
        .assert_envelope(404, "signature_not_found");
    let long = "a".repeat(257);
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "a%00b",
        "a%20b",
        long.as_str(),
        "",
    ] {
        gateway
            .signature(bad)
            .await
            .assert_envelope(400, "invalid_id");
    }
    gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-id", "ok-1")],
            br#"{"stream":true}"#,
        )
        .await;
    let reply = request(
        gateway.addr,
        "GET",
        "/v1/signature/ok-1?signing_algo=ecdsa",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let reply = request(
        gateway.addr,
        "GET",
        "/v1/signature/ok-1?signing_algo=rsa",
        &[],
        Vec::new(),
    )
    .await;
    reply.assert_envelope(400, "unsupported_signing_algo");
    let reply = request(
        gateway.addr,
        "DELETE",
        "/v1/signature/ok-1",
        &[],
        Vec::new(),
    )
    .await;
    reply.assert_envelope(405, "method_not_allowed");
}

#[tokio::test]
async fn responses_without_an_id_are_not_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-replay", "no-id.sse")],
            br#"{"stream":true}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    gateway.wait_for_log_line(&["route=chat_completions", "reason=no_id"]);
}

/// An id that breaks the id rules, or one that lies past what signet examines (a stream
/// whose id comes after `id_scan_bytes`, a JSON body over `json_response_bytes`): the response
/// is delivered unchanged and not signed, and the access line says why. The same responses
/// under the default limits are signed, so it is the limit that decides.
#[tokio::test]
async fn invalid_ids_and_responses_too_large_to_search_are_delivered_unsigned() {
    let upstream = Upstream::start();
    let limited = Gateway::start_with(
        &upstream.url(),
        "  limits:\n    id_scan_bytes: 1KiB\n    json_response_bytes: 1KiB\n",
    );
    let roomy = Gateway::start(&upstream.url());
    let stream = br#"{"stream":true}"#;
    let json = br#"{"stream":false}"#;

    for (body, kind) in [(&stream[..], "stream"), (&json[..], "json")] {
        let request_id = format!("invalid-id-{kind}");
        let reply = limited
            .post(
                "/v1/chat/completions",
                &[("x-mock-id", "bad id!"), ("x-request-id", &request_id)],
                body,
            )
            .await;
        assert_eq!(reply.status, 200);
        assert!(String::from_utf8_lossy(&reply.body).contains(r#""id":"bad id!""#));
        let line = limited.access_line(&request_id);
        assert_eq!(line["signed"], "false", "{line:?}");
        assert_eq!(line["reason"], "invalid_id", "{line:?}");
    }

    let late = [("x-mock-replay", "late-id.sse")];
    let big_json = [("x-mock-id", "json-too-large"), ("x-mock-events", "200")];
    for (headers, body, id) in [
        (&late[..], &stream[..], "chatcmpl-late-id"),
        (&big_json[..], &json[..], "json-too-large"),
    ] {
        let request_id = format!("too-large-{id}");
        let mut with_request_id = headers.to_vec();
        with_request_id.push(("x-request-id", &request_id));
        let reply = limited
            .post("/v1/chat/completions", &with_request_id, body)
            .await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.len() > 1024,
            "past the limit: {}",
            reply.body.len()
        );
        let direct = request(
            upstream.addr,
            "POST",
            "/v1/chat/completions",
            headers,
            body.to_vec(),
        )
        .await;
        if id == "chatcmpl-late-id" {
            assert_eq!(reply.body, direct.body, "delivered unchanged");
        } else {
            assert_eq!(reply.body.len(), direct.body.len(), "delivered whole");
        }
        let line = limited.access_line(&request_id);
        assert_eq!(line["signed"], "false", "{line:?}");
        assert_eq!(line["reason"], "too_large", "{line:?}");
        limited
            .signature(id)
            .await
            .assert_envelope(404, "signature_not_found");

        // Under the default limits the same response is signed.
        let reply = roomy.post("/v1/chat/completions", headers, body).await;
        let receipt = roomy.signature(id).await;
        assert_eq!(receipt.status, 200, "{id}");
        assert_receipt(
            &receipt.json(),
            body,
            &reply.body,
            &roomy.signing_address().await,
        );
    }
}

#[tokio::test]
async fn health_is_answered_locally() {
    let port = free_port();
    let gateway = Gateway::start(&format!("http://127.0.0.1:{port}"));
    let health = gateway.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["attestation_mode"], "dev");
    assert!(
        health["signing_address"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
}

/// The signature is checked by an implementation that is not signet's: Python's
/// eth-account (`recover_independently`, installed by `scripts/setup.sh`).
#[tokio::test]
async fn eth_account_recovers_the_attested_address() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-replay", "seed-response.sse")],
            SEED_REQUEST,
        )
        .await;
    assert_eq!(reply.status, 200);
    let receipt = gateway.signature(SEED_ID).await.json();
    assert_receipt_independently(&receipt, SEED_REQUEST, SEED_RESPONSE, &address);
    let bare = receipt["signature"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x");
    assert_eq!(
        recover_independently(SEED_TEXT, bare),
        address,
        "eth-account takes the seed's form too"
    );
    // The seed's own signature form (no 0x) is accepted by signet's parser too.
    let bare = receipt["signature"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x");
    assert_eq!(recover(SEED_TEXT, bare), address);
}
