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
