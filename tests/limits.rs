//! What one client can hold, and for how long: a body trickled in, a stream it never reads,
//! and idle sockets. Each bound is shown holding against the live binary: the slot or place
//! comes back and the next client is served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Reads what the peer sends until it closes (or `limit` passes); returns the bytes.
fn read_until_closed(stream: &mut std::net::TcpStream, limit: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

const SMALL: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_in_is_cut_off_at_its_total_deadline_and_frees_its_slot() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  client_timeouts:\n    body: 10s\n    body_total: 1s\n  limits:\n    max_concurrent_streams: 1\n",
    );
    let mut stream = std::net::TcpStream::connect(gateway.addr).unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    // The attacker: one byte every 100 ms, never silent long enough for the per-read timeout.
    let trickle = std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            if writer.write_all(b"1\r\n \r\n").is_err() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    });
    let answer = read_until_closed(&mut stream, Duration::from_secs(8));
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        trickle.join().unwrap() < Duration::from_secs(8),
        "the trickle was cut off"
    );
    // The slot is free again.
    let reply = gateway.post("/v1/chat/completions", &[], SMALL).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_and_frees_its_slot() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  client_timeouts:\n    write: 1s\n  limits:\n    max_concurrent_streams: 1\n",
    );
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&gateway.addr.into()).unwrap();
    let mut stuck: std::net::TcpStream = socket.into();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
         x-request-id: never-reads\r\nx-mock-events: 20000\r\nx-mock-event-bytes: 2048\r\n\
         content-length: {}\r\n\r\n",
        SMALL.len()
    );
    stuck.write_all(head.as_bytes()).unwrap();
    stuck.write_all(SMALL).unwrap();
    // While it holds the only slot, others are turned away; once its writes time out, the
    // slot comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = gateway.post("/v1/chat/completions", &[], SMALL).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(
            reply.status,
            503,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = gateway.wait_for_log_line(&["client_request_id=never-reads "]);
    assert!(line.contains("signed=false"), "{line}");
    drop(stuck);
}

/// Connects from `local` (an address on the loopback network) to `to`.
fn connect_from(local: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{local}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Whether signet closed a fresh connection without a word (refused), rather than waiting
/// for its request head (admitted: nothing comes until the deadline).
fn refused(stream: &mut std::net::TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut probe = [0u8; 1];
    matches!(stream.read(&mut probe), Ok(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_every_connection() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  limits:\n    max_connections_per_client: 2\n",
    );
    // Idle sockets from one address: at most two are admitted, the rest are closed at once.
    let mut admitted = Vec::new();
    let mut refusals = 0;
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.1", gateway.addr);
        if refused(&mut stream) {
            refusals += 1;
        } else {
            admitted.push(stream);
        }
    }
    assert!(admitted.len() <= 2, "{} admitted", admitted.len());
    assert!(refusals >= 2, "{refusals} refused");
    // Another address is not affected by the first one's sockets.
    let mut other = connect_from("127.0.0.2", gateway.addr);
    admitted.push(connect_from("127.0.0.3", gateway.addr));
    for stream in admitted.iter_mut().chain([&mut other]) {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: signet\r\nconnection: close\r\n\r\n")
            .unwrap();
        let answer = read_until_closed(stream, Duration::from_secs(5));
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// Splits a raw HTTP/1 answer into its status code, head and JSON body.
fn parse_answer(answer: &[u8]) -> (u16, String, serde_json::Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, head.to_ascii_lowercase(), json)
}

/// Reads until the peer closes; `None` if it had not closed when `limit` passed.
fn read_to_close(stream: &mut std::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_max_header_bytes_is_answered_before_the_rest_is_sent() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(&upstream.url(), "  limits:\n    max_header_bytes: 4KiB\n");
    let mut stream = std::net::TcpStream::connect(gateway.addr).unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\nx-padding: ")
        .unwrap();
    let answered = std::sync::Arc::new(AtomicBool::new(false));
    let mut writer = stream.try_clone().unwrap();
    let stop = answered.clone();
    // The attacker: one header of 256 KiB, 1 KiB at a time, and a head it never ends.
    // Pingora alone would read on to 1 MiB, holding it, and answer nothing.
    let sender = std::thread::spawn(move || {
        let mut sent = 0usize;
        while sent < 256 << 10 && !stop.load(Ordering::Acquire) {
            if writer.write_all(&[b'y'; 1024]).is_err() {
                break;
            }
            sent += 1024;
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    });
    let answer = read_to_close(&mut stream, Duration::from_secs(20)).expect("never closed");
    answered.store(true, Ordering::Release);
    let sent = sender.join().unwrap();
    let (status, head, json) = parse_answer(&answer);
    assert_eq!(status, 431, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(json["error"]["code"], "headers_too_large", "{json}");
    assert!(
        sent < 128 << 10,
        "answered only after {sent} bytes of a head limited to 4 KiB"
    );
    let stats = upstream.stats().await;
    assert_eq!(stats["requests"].as_array().unwrap().len(), 0, "{stats}");
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_heads_hold_no_more_memory_than_the_head_limit() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(&upstream.url(), "  limits:\n    max_header_bytes: 4KiB\n");
    assert_eq!(gateway.health().await["status"], "ok");
    let before = resident_bytes(gateway.pid());
    // 64 clients each send 512 KiB of a head they never finish (Pingora alone buffers every
    // byte of it, up to 1 MiB a connection, until the head deadline).
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let stream = std::net::TcpStream::connect(gateway.addr).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let _ = writer.write_all(b"GET /v1/models HTTP/1.1\r\nhost: signet\r\nx-pad: ");
                let _ = writer.write_all(&vec![b'z'; 512 << 10]);
            });
            (stream, sender)
        })
        .collect();
    // Each is answered and closed once its head passes the limit.
    for (mut stream, sender) in clients {
        let closed = read_to_close(&mut stream, Duration::from_secs(20)).is_some();
        assert!(closed, "a connection with an oversized head was kept open");
        sender.join().unwrap();
    }
    let grown = resident_bytes(gateway.pid()).saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "64 unfinished heads grew signet by {} KiB",
        grown >> 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_held_in_memory_are_bounded_in_total() {
    let upstream = Upstream::start();
    let admin = free_port();
    let gateway = Gateway::start_with(
        &upstream.url(),
        &format!(
            "  admin:\n    listen: \"127.0.0.1:{admin}\"\n  limits:\n    max_request_body: 16KiB\n    \
             body_memory_total: 32KiB\n"
        ),
    );
    // A valid completion request of exactly 8000 bytes, read whole before the upstream is
    // contacted (it counts twice: the body and its copy in the retry buffer).
    let prefix =
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"pad":""#;
    let mut body = prefix.to_vec();
    body.resize(8000 - 2, b'p');
    body.extend_from_slice(b"\"}");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let held = || async { metric(&scrape(admin).await, "signet_request_body_memory_bytes") };
    let wait_for_held = |bytes: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while held().await != bytes {
            assert!(
                Instant::now() < deadline,
                "held {} not {bytes}",
                held().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let start = |sent: usize| {
        let mut stream = std::net::TcpStream::connect(gateway.addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body[..sent]).unwrap();
        stream
    };
    // Two clients each hold 7000 bytes of their body (14000 counted each) of the 32 KiB.
    let mut first = start(7000);
    wait_for_held(14000.0).await;
    let mut second = start(7000);
    wait_for_held(28000.0).await;
    // The next is refused as soon as its body would pass the total.
    let mut third = start(3000);
    let answer = read_to_close(&mut third, Duration::from_secs(20)).expect("never answered");
    let (status, head_text, json) = parse_answer(&answer);
    assert_eq!(status, 503, "{head_text}");
    assert!(head_text.contains("retry-after: 1"), "{head_text}");
    assert_eq!(json["error"]["code"], "too_many_requests", "{json}");
    assert_eq!(held().await, 28000.0, "the refused body holds nothing");
    // The first finishes and is served; its memory comes back, and the next is served too.
    first.write_all(&body[7000..]).unwrap();
    let answer = read_to_close(&mut first, Duration::from_secs(20)).expect("never answered");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    wait_for_held(14000.0).await;
    let mut again = start(body.len());
    let answer = read_to_close(&mut again, Duration::from_secs(20)).expect("never answered");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    second.write_all(&body[7000..]).unwrap();
    let answer = read_to_close(&mut second, Duration::from_secs(20)).expect("never answered");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    wait_for_held(0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_counts_against_the_client_cap_and_is_cut_at_its_deadline() {
    let upstream = Upstream::start();
    let serving = TestCert::localhost();
    let gateway = Gateway::start_tls_with(
        &upstream.url(),
        &serving,
        "  limits:\n    max_connections_per_client: 2\n  client_timeouts:\n    handshake: 2s\n",
    );
    let refusals = || {
        gateway
            .log()
            .matches("refusing a connection: limits.max_connections_per_client reached")
            .count()
    };
    // Four connections from one address that never start their handshake: two take the
    // address's places, the other two are refused before any handshake.
    let mut silent: Vec<_> = (0..4)
        .map(|_| connect_from("127.0.0.5", gateway.addr))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while refusals() < 2 {
        assert!(
            Instant::now() < deadline,
            "no refusal; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every one is closed: the refused at once, the others at the handshake deadline (2 s
    // here; Pingora's own is 60 s).
    for stream in &mut silent {
        let answer = read_to_close(stream, Duration::from_secs(20));
        assert_eq!(answer, Some(Vec::new()), "a handshake was left open");
    }
    assert_eq!(refusals(), 2, "{}", gateway.log());
    // Their places came back: two more are admitted (and cut at the deadline again).
    for mut stream in [0, 1].map(|_| connect_from("127.0.0.5", gateway.addr)) {
        let answer = read_to_close(&mut stream, Duration::from_secs(20));
        assert_eq!(answer, Some(Vec::new()), "a handshake was left open");
    }
    assert_eq!(refusals(), 2, "{}", gateway.log());
    // A TLS connection holds one place from its accept to its close, its HTTP/1 requests
    // included: two kept-alive clients of one address are served side by side. (An address
    // of their own: 127.0.0.1 may still hold the place of the start-up health check's
    // connection, which the gateway closes when it sees the client go.)
    let kept_alive = || async {
        let tcp = connect_from("127.0.0.6", gateway.addr);
        tcp.set_nonblocking(true).unwrap();
        https_connection_over(tokio::net::TcpStream::from_std(tcp).unwrap(), &serving).await
    };
    let mut clients = vec![kept_alive().await, kept_alive().await];
    for _ in 0..2 {
        for client in &mut clients {
            let request = http::Request::get("/health")
                .header("host", "localhost")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let response = client.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
        }
    }
    assert_eq!(refusals(), 2, "{}", gateway.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_request_with_a_large_body_is_not_taken_for_a_large_head() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(&upstream.url(), "  limits:\n    max_header_bytes: 4KiB\n");
    // Two requests in one write: the bytes read past the first one's body (the second's head
    // and 40 KB of its body) are more than the head limit, but the head itself is small.
    let padded = |size: usize| {
        let mut body =
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"pad":""#
                .to_vec();
        body.resize(size - 2, b'p');
        body.extend_from_slice(b"\"}");
        body
    };
    let (first, big) = (padded(10_000), padded(40_000));
    // The first is chunked: its body is read in large pieces, which may run past its end.
    let mut wire = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n",
        first.len()
    )
    .into_bytes();
    wire.extend_from_slice(&first);
    wire.extend_from_slice(b"\r\n0\r\n\r\n");
    wire.extend_from_slice(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    wire.extend_from_slice(&big);
    let mut stream = std::net::TcpStream::connect(gateway.addr).unwrap();
    stream.write_all(&wire).unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(20)).expect("never closed");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text}");
    assert!(!text.contains("HTTP/1.1 431"), "{text}");
}
