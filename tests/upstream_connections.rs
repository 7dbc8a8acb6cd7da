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

/// An upstream that writes a whole event stream, one chunk per event, in one write (a model's
/// multi-token step, a stream behind a slow moment): signet takes what one read brings as one
/// piece (`h1_merge_body_chunks`, vendor/README.md), and the client still gets every event,
/// in order, and a signature over exactly the bytes it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_arrive_together_leave_together_and_are_signed_as_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const EVENTS: usize = 60;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let mut stream_body = Vec::new();
    let mut wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        .to_vec();
    for i in 0..EVENTS {
        let event = format!(
            "data: {{\"id\":\"chatcmpl-together\",\"object\":\"chat.completion.chunk\",\
             \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
        );
        wire.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
        stream_body.extend_from_slice(event.as_bytes());
    }
    let done = b"data: [DONE]\n\n";
    wire.extend_from_slice(format!("{:x}\r\n", done.len()).as_bytes());
    wire.extend_from_slice(done);
    wire.extend_from_slice(b"\r\n0\r\n\r\n");
    stream_body.extend_from_slice(done);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let wire = wire.clone();
            tokio::spawn(async move {
                // the request: its head and a body of the length it declares
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let Some(head_end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
                socket.write_all(&wire).await.unwrap();
                let _ = socket.shutdown().await;
            });
        }
    });
    let gateway = Gateway::start(&format!("http://{upstream_addr}"));
    let address = gateway.signing_address().await;
    let body = br#"{"stream":true,"messages":[{"role":"user","content":"together"}]}"#;
    let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).await.unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(body_so_far(&raw).unwrap(), stream_body);
    assert_stream_receipt(&gateway, body, &stream_body, &address).await;
}
