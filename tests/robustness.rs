//! Hostile and unusual clients against the live binary: huge and control-character ids,
//! HTTP/1.0, pipelined requests, slow-loris heads and the connection cap. Each must get the
//! contract's answer, and nothing may be forwarded or signed that should not be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `stream` until the peer closes (or resets) the connection; returns what came.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Splits raw HTTP/1.x responses on one connection (Content-Length or chunked bodies).
fn split_responses(mut raw: &[u8]) -> Vec<(u16, String, Vec<u8>)> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(raw).expect("response head") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial head: {:?}", String::from_utf8_lossy(raw)),
        };
        let status = response.code.unwrap();
        let head = String::from_utf8_lossy(&raw[..head_len]).to_ascii_lowercase();
        let find = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let rest = &raw[head_len..];
        let (body, used) = if let Some(len) = find("content-length") {
            let len: usize = len.trim().parse().unwrap();
            (rest[..len].to_vec(), len)
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                let line_end = at + rest[at..].windows(2).position(|w| w == b"\r\n").unwrap();
                let size_text = String::from_utf8_lossy(&rest[at..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                at = line_end + 2;
                if size == 0 {
                    at += 2; // no trailers
                    break;
                }
                body.extend_from_slice(&rest[at..at + size]);
                at += size + 2;
            }
            (body, at)
        } else {
            (rest.to_vec(), rest.len())
        };
        out.push((status, head, body));
        raw = &rest[used..];
    }
    out
}

#[tokio::test]
async fn hostile_ids_are_refused_with_an_envelope() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let ten_kb = "a".repeat(10 * 1024);
    for bad in [
        ten_kb.as_str(),
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "a%0d%0aSet-Cookie:%20x=1",
        "a%1bb",
        "a%7fb",
        "%c3%a9t%c3%a9",
        "%ff%fe",
        "a;b",
        "a%22b",
    ] {
        let reply = gateway.signature(bad).await;
        reply.assert_envelope(400, "invalid_id");
        assert!(
            reply.body.len() < 1024,
            "the id is not echoed back in full: {} bytes",
            reply.body.len()
        );
        assert!(reply.headers.get("set-cookie").is_none());
    }
    // Dots are legal id characters: `..` is only a key that names no signature.
    gateway
        .signature("..")
        .await
        .assert_envelope(404, "signature_not_found");
    // Nothing about ids reaches the upstream: the route is answered locally.
    assert_eq!(upstream.seen().await.len(), 0);
}

#[tokio::test]
async fn http_1_0_clients_get_a_signed_answer_and_a_closed_connection() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let body = br#"{"stream":true,"messages":[]}"#;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nx-mock-id: ten-1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut stream))
        .await
        .expect("an HTTP/1.0 response ends with the connection");
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"),
        "{head}"
    );
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "an HTTP/1.0 client cannot read chunked framing: {head}"
    );
    let delivered = &raw[head_end..];
    assert!(
        delivered.ends_with(b"data: [DONE]\n\n"),
        "{:?}",
        String::from_utf8_lossy(delivered)
    );
    let address = gateway.signing_address().await;
    let receipt = gateway.signature("ten-1").await;
    assert_eq!(receipt.status, 200);
    assert_receipt(&receipt.json(), body, delivered, &address);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_each_is_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let bodies: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"stream":{},"n":{i}}}"#, i != 1))
        .collect();
    let mut wire = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let last = if i == bodies.len() - 1 {
            "Connection: close\r\n"
        } else {
            ""
        };
        wire.extend_from_slice(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-id: pipe-{i}\r\n{last}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    // All three requests in one write, before any answer.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(&wire).await.unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut stream))
        .await
        .expect("the pipelined answers arrive and the connection closes");
    let responses = split_responses(&raw);
    assert_eq!(responses.len(), 3, "{:?}", String::from_utf8_lossy(&raw));
    let address = gateway.signing_address().await;
    for (i, (status, head, delivered)) in responses.iter().enumerate() {
        assert_eq!(*status, 200, "{head}");
        let id = format!("pipe-{i}");
        if i == 1 {
            let json: serde_json::Value = serde_json::from_slice(delivered).unwrap();
            assert_eq!(json["id"], id.as_str());
        } else {
            assert!(delivered.ends_with(b"data: [DONE]\n\n"));
            assert!(String::from_utf8_lossy(delivered).contains(&id));
        }
        let receipt = gateway.signature(&id).await;
        assert_eq!(receipt.status, 200, "{id}");
        assert_receipt(&receipt.json(), bodies[i].as_bytes(), delivered, &address);
    }
    assert_eq!(upstream.seen().await.len(), 3);
}

#[tokio::test]
async fn a_slow_loris_head_is_cut_by_the_head_timeout() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(&upstream.url(), "  client_timeouts:\n    head: 1s\n");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let started = Instant::now();
    // Half a request head, then silence.
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), read_until_closed(&mut stream))
        .await
        .expect("signet closes a connection whose head never completes");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the head timeout: {:?}",
        started.elapsed()
    );
    assert!(
        answer.is_empty()
            || answer.starts_with(b"HTTP/1.1 408")
            || answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // An idle kept-alive connection is bounded the same way.
    let mut idle = TcpStream::connect(gateway.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(20), read_until_closed(&mut idle))
        .await
        .expect("an idle kept-alive connection is closed after the head timeout");
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    assert_eq!(upstream.seen().await.len(), 0);
    // The gateway still serves.
    assert_eq!(gateway.health().await["status"], "ok");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_the_gateway_recovers() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  limits:\n    max_connections: 2\n  client_timeouts:\n    head: 60s\n",
    );
    // Two clients take the only places with streams the upstream holds open. A holder is
    // in only once its first event arrived; one refused (e.g. while the readiness probe's
    // connection still held a place) tries again.
    let body = br#"{"stream":true}"#;
    let hold = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-gate: cap\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    let mut holders = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while holders.len() < 2 {
        assert!(Instant::now() < deadline, "no place for the holders");
        let mut s = TcpStream::connect(gateway.addr).await.unwrap();
        s.write_all(hold.as_bytes()).await.unwrap();
        let mut first = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {
                assert!(first.starts_with(b"HTTP/1.1 200"));
                holders.push(s);
            }
            _ => tokio::task::yield_now().await,
        }
    }
    // A third is closed at once, without an answer.
    let mut third = TcpStream::connect(gateway.addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(20), read_until_closed(&mut third))
        .await
        .expect("the third connection is closed");
    assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
    gateway.wait_for_log_line(&["refusing a connection", "limits.max_connections"]);
    // Once a holder leaves, its place is free again.
    drop(holders.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = TcpStream::connect(gateway.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let raw = read_until_closed(&mut s).await;
        if raw.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::task::yield_now().await;
    }
    upstream.release("cap").await;
}
