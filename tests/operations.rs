//! Operating signet: Prometheus metrics on the admin listener, access logs that never hold
//! prompts or tokens, graceful shutdown and zero-downtime upgrade with streams in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn metrics_move_with_traffic_on_the_admin_listener_only() {
    let upstream = Upstream::start();
    let admin = free_port();
    let gateway = Gateway::start_with(
        &upstream.url(),
        &format!("  admin:\n    listen: \"127.0.0.1:{admin}\"\n"),
    );
    let before = scrape(admin).await;
    assert_eq!(metric(&before, "signet_signature_store_entries"), 0.0);

    let body = br#"{"stream":true}"#;
    gateway
        .post("/v1/chat/completions", &[("x-mock-id", "m-1")], body)
        .await;
    gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-id", "m-2")],
            br#"{"stream":false}"#,
        )
        .await;
    gateway
        .post("/v1/chat/completions", &[("x-mock-status", "500")], body)
        .await;
    gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-replay", "no-id.sse")],
            body,
        )
        .await;
    gateway
        .post("/v1/chat/completions", &[], b"{not json")
        .await;
    gateway.signature("m-1").await;
    gateway.signature("missing").await;
    request(
        gateway.addr,
        "GET",
        "/v1/attestation/report",
        &[],
        Vec::new(),
    )
    .await;
    gateway.wait_for_log_line(&["route=attestation"]);
    let text = scrape(admin).await;

    assert_eq!(
        metric(
            &text,
            r#"signet_requests_total{route="chat_completions",status="200"}"#
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"signet_requests_total{route="chat_completions",status="500"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"signet_requests_total{route="chat_completions",status="400"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"signet_signed_responses_total{route="chat_completions"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            r#"signet_unsigned_responses_total{reason="upstream_error"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&text, r#"signet_unsigned_responses_total{reason="no_id"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"signet_unsigned_responses_total{reason="rejected"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&text, r#"signet_signature_lookups_total{result="hit"}"#),
        1.0
    );
    assert_eq!(
        metric(&text, r#"signet_signature_lookups_total{result="miss"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"signet_attestation_requests_total{outcome="ok",provider="dev"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"signet_attestation_duration_seconds_count{provider="dev"}"#
        ),
        1.0
    );
    assert_eq!(metric(&text, "signet_signature_store_entries"), 2.0);
    assert_eq!(
        metric(&text, "signet_upstream_first_byte_seconds_count"),
        4.0
    );
    assert_eq!(metric(&text, "signet_upstream_total_seconds_count"), 4.0);
    assert!(metric(&text, r#"signet_hashed_bytes_total{direction="response"}"#) > 1000.0);
    // The four bodies that went upstream; the malformed one was refused before.
    assert_eq!(
        metric(&text, r#"signet_hashed_bytes_total{direction="request"}"#),
        (15 + 16 + 15 + 15) as f64
    );
    assert_eq!(metric(&text, "signet_completions_in_flight"), 0.0);

    // The public port has no metrics of its own: /metrics is an upstream path like any other.
    let public = request(gateway.addr, "GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(public.status, 404);
    assert_eq!(public.json()["object"], "error", "the upstream's 404");
}

#[tokio::test]
async fn a_full_run_never_logs_prompts_tokens_or_keys() {
    // Whatever RUST_LOG says: Pingora's own debug and trace lines carry bodies and headers.
    for rust_log in ["info", "trace"] {
        full_run_never_logs_secrets(rust_log).await;
    }
}

async fn full_run_never_logs_secrets(rust_log: &str) {
    let upstream = Upstream::start();
    let token = "operator-token-3c8e7b5d1f";
    let gateway = Gateway::start_logging(
        &upstream.url(),
        &format!("  auth:\n    tokens: [\"{token}\"]\n"),
        rust_log,
    );
    let prompt = "my secret prompt about zebra-quartz-42";
    let bearer = format!("Bearer {token}");
    let body = format!(r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"stream":true}}"#);
    for stream in [true, false] {
        let body = body.replace("true", if stream { "true" } else { "false" });
        let reply = gateway
            .post(
                "/v1/chat/completions",
                &[
                    ("authorization", &bearer),
                    ("x-mock-id", if stream { "log-1" } else { "log-2" }),
                ],
                body.as_bytes(),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    gateway
        .post(
            "/v1/chat/completions",
            &[("authorization", "Bearer wrong-token-aaaaaaaa")],
            body.as_bytes(),
        )
        .await;
    gateway
        .post(
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            format!("{{\"bad\": \"{prompt}\"").as_bytes(),
        )
        .await;
    request(
        gateway.addr,
        "GET",
        "/v1/signature/log-1",
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    gateway.wait_for_log_line(&["route=signature"]);
    let log = gateway.log();
    assert!(log.contains("id=log-1"), "the access line is there:\n{log}");
    for secret in [prompt, "zebra-quartz", token, "wrong-token", "tok0"] {
        assert!(
            !log.contains(secret),
            "{secret:?} leaked into the log at RUST_LOG={rust_log}:\n{log}"
        );
    }
    // Only the public key and address are ever printed.
    let address = gateway.signing_address().await;
    assert!(log.contains(&address));
}

fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_in_flight_finish_and_be_signed() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::start(&upstream.url());
    let mut open = open(
        gateway.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-gate", "term-1"),
            ("x-mock-id", "in-flight-term"),
            ("content-type", "application/json"),
        ],
        br#"{"stream":true}"#.to_vec(),
    )
    .await;
    open.read_until(b"\n\n").await;
    send_signal(gateway.pid(), "TERM");
    gateway.wait_for_log_line(&["SIGTERM received"]);
    upstream.release("term-1").await;
    let rest = open.read_to_end().await.unwrap();
    assert!(rest.ends_with(b"data: [DONE]\n\n"));
    gateway.wait_for_log_line(&["id=in-flight-term", "signed=true"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = gateway.child_mut().try_wait().unwrap() {
            assert!(status.success(), "clean exit");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "signet did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_over_without_failing_a_request_and_signs_the_stream_in_flight() {
    let upstream = Upstream::start();
    let old = Gateway::start(&upstream.url());
    let old_address = old.signing_address().await;
    let mut in_flight = open(
        old.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-gate", "upgrade-1"),
            ("x-mock-id", "in-flight-upgrade"),
            ("content-type", "application/json"),
        ],
        br#"{"stream":true}"#.to_vec(),
    )
    .await;
    in_flight.read_until(b"\n\n").await;

    // Keep requests flowing throughout the handover, until the new process answers: none may
    // fail. (After the handover both processes accept on the shared socket for a while.)
    let addr = old.addr;
    let old_for_traffic = old_address.clone();
    let traffic = tokio::spawn(async move {
        let mut served = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while served.last().is_none_or(|a| *a == old_for_traffic) {
            assert!(Instant::now() < deadline, "the new process never answered");
            let reply = request(addr, "GET", "/health", &[], Vec::new()).await;
            assert_eq!(
                reply.status,
                200,
                "request {} failed during the upgrade",
                served.len()
            );
            served.push(reply.json()["signing_address"].as_str().unwrap().to_owned());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served
    });

    // The new process takes the listening socket over the upgrade socket (-u)...
    let config = old.dir.path().join("signet.yaml");
    let log_path = old.dir.path().join("new.log");
    let new = KillOnDrop(
        std::process::Command::new(signet_bin())
            .args(["serve", "-u", "-c"])
            .arg(&config)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // ...once the old one, told to (SIGQUIT), hands it over and drains.
    let upgrade_sock = old.dir.path().join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upgrade_sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never waited for the sockets"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    send_signal(old.pid(), "QUIT");

    let served = traffic.await.unwrap();
    let new_address = served.last().unwrap().clone();
    assert_ne!(new_address, old_address, "the new process has its own key");
    assert!(
        served
            .iter()
            .all(|a| *a == old_address || *a == new_address)
    );

    // The stream that was in flight completes on the old process and is signed there.
    upstream.release("upgrade-1").await;
    let rest = in_flight.read_to_end().await.unwrap();
    assert!(rest.ends_with(b"data: [DONE]\n\n"));
    old.wait_for_log_line(&["id=in-flight-upgrade", "signed=true"]);
    drop(new);
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
