//! Upstreams that close keep-alive connections on their own (llama-server closes after every
//! stream while still advertising keep-alive): signet must never fail a request because a
//! pooled connection died, and never send a body twice to an upstream that may have read it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Sends `count` streamed completions one after another on ONE keep-alive connection to
/// signet, like an SDK client does, and returns how many got a complete 200 stream. Each
/// complete stream's receipt must be the hashes of the bytes sent and received, signed by the
/// gateway's key.
async fn sequential_on_one_connection(
    gateway: &Gateway,
    count: usize,
    headers: &[(&str, &str)],
) -> usize {
    let address = gateway.signing_address().await;
    let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut complete = 0;
    for i in 0..count {
        sender.ready().await.unwrap();
        let mut builder = http::Request::post("/v1/chat/completions")
            .header("host", "signet")
            .header("content-type", "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = format!(r#"{{"stream":true,"messages":[{{"role":"user","content":"n{i}"}}]}}"#);
        let response = sender
            .send_request(
                builder
                    .body(Full::new(bytes::Bytes::from(body.clone())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if status == 200 && bytes.ends_with(b"data: [DONE]\n\n") {
            complete += 1;
            assert_stream_receipt(gateway, body.as_bytes(), &bytes, &address).await;
        }
    }
    complete
}

/// Looks up the receipt of a complete stream (its id is the first event's) and checks it.
async fn assert_stream_receipt(gateway: &Gateway, request: &[u8], stream: &[u8], address: &str) {
    let first = stream.split(|&b| b == b'\n').next().unwrap();
    let event: serde_json::Value =
        serde_json::from_slice(first.strip_prefix(b"data: ").unwrap()).unwrap();
    let id = event["id"].as_str().unwrap();
    let receipt = gateway.signature(id).await;
    assert_eq!(receipt.status, 200, "{id}");
    assert_receipt(&receipt.json(), request, stream, address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_after_every_stream_fails_no_request() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let done = sequential_on_one_connection(&gateway, 200, &[("x-mock-close", "1")]).await;
    assert_eq!(done, 200, "log:\n{}", gateway.log());
    let seen = upstream.seen().await;
    assert_eq!(
        seen.len(),
        200,
        "every body reached the upstream exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_unread_is_retried_on_a_fresh_connection_once() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    // Each response leaves its connection in the pool while the upstream, not reading, is
    // about to close it: the next request is written into a dying connection and reset.
    let done = sequential_on_one_connection(&gateway, 30, &[("x-mock-close-after-ms", "30")]).await;
    assert_eq!(done, 30, "log:\n{}", gateway.log());
    let seen = upstream.seen().await;
    assert_eq!(
        seen.len(),
        30,
        "a reset request was never read, and is sent again once"
    );
    let mut bodies: Vec<String> = seen
        .iter()
        .map(|r| r["body_sha256"].as_str().unwrap().to_owned())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 30, "no body was received twice");
    assert!(
        gateway.log().contains("retries=1"),
        "the resets were retried"
    );
}

/// An upstream that reads a request completely and hangs up: the request goes out at most
/// once more, on a fresh connection, and then signet answers 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_after_reading_is_retried_at_most_once_on_a_fresh_connection() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    for round in 0..10 {
        // A normal exchange first, so that signet holds a pooled upstream connection.
        let ok = gateway
            .post("/v1/chat/completions", &[], br#"{"stream":true}"#)
            .await;
        assert_eq!(ok.status, 200);
        assert_stream_receipt(&gateway, br#"{"stream":true}"#, &ok.body, &address).await;
        let body = format!(r#"{{"stream":false,"round":{round}}}"#);
        let reply = gateway
            .post(
                "/v1/chat/completions",
                &[("x-mock-hangup", "1")],
                body.as_bytes(),
            )
            .await;
        reply.assert_envelope(502, "upstream_unreachable");
        let seen = upstream.seen().await;
        let read = seen
            .iter()
            .filter(|r| r["body_sha256"] == sha256_hex(body.as_bytes()))
            .count();
        assert!(
            (1..=2).contains(&read),
            "read {read} times: at most once on a pooled connection and once on a fresh one; log:\n{}",
            gateway.log()
        );
    }
}
