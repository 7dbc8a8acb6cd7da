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

/// The owner of a process's /proc files: root's for a process that is not dumpable.
fn proc_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid()
}

/// The signing key lives only in the memory of the running gateway, which may not dump core
/// (RLIMIT_CORE 0/0) and is not dumpable (PR_SET_DUMPABLE 0: the kernel then gives its /proc
/// files to root, and no debugger of its own user may attach), and was so before the key was
/// made. The binary is checked from outside, not the hardening function in this process.
#[tokio::test]
async fn the_running_gateway_is_not_dumpable_and_was_hardened_before_its_key_existed() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let upstream = Upstream::start();
    // Root's processes have root's /proc files anyway: when the tests run as root, the
    // gateway runs as nobody, whose /proc files are its own unless it is not dumpable.
    let me = rustix::process::geteuid().as_raw();
    let runs_as = if me == 0 { 65534 } else { me };
    let as_user = |command: &mut std::process::Command| {
        if me == 0 {
            command.uid(runs_as).gid(runs_as);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let config = dir.path().join("signet.yaml");
    std::fs::write(&config, config_text(port, &upstream.url(), dir.path(), "")).unwrap();
    let gateway = Gateway::spawn_configured(dir, config, port, as_user);
    let pid = gateway.pid();

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap();
    assert_eq!(uid, runs_as.to_string(), "{status}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core: Vec<&str> = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max core file size"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(core, ["0", "0", "bytes"], "{limits}");
    assert_eq!(
        proc_owner(pid),
        0,
        "not dumpable: its /proc files are root's"
    );

    // The same look at a dumpable process of the same user sees the difference.
    let mut control = std::process::Command::new("sleep");
    control.arg("60");
    as_user(&mut control);
    let control = KillOnDrop(control.spawn().unwrap());
    assert_eq!(proc_owner(control.0.id()), runs_as, "a dumpable process");
    drop(control);

    // Hardened before the key existed: the read-back comes before the address is first known.
    let address = gateway.signing_address().await;
    let log = gateway.log();
    let hardened = log
        .find("before generating the signing key: RLIMIT_CORE=0/0 dumpable=0")
        .unwrap_or_else(|| panic!("no hardening line:\n{log}"));
    let first_address = log.find(&address).expect("the address is logged at start");
    assert!(hardened < first_address, "{log}");
}

/// A streamed completion with its signature in-band (a process that is shutting down or
/// handing over may no longer answer lookups): the bytes covered and the signature.
struct Delivered {
    request: Vec<u8>,
    covered: Vec<u8>,
    signature: signet_core::inband::InbandSignature,
}

impl Delivered {
    /// Checks that the signed text is the hashes of the bytes sent and received.
    fn assert_text(&self) {
        assert_eq!(
            self.signature.text,
            format!(
                "{}:{}",
                sha256_hex(&self.request),
                sha256_hex(&self.covered)
            ),
            "{}",
            self.signature.id
        );
    }
}

/// Reads an opened in-band stream to its end.
async fn finish_inband(mut open: OpenReply, request: Vec<u8>, got: Vec<u8>) -> Delivered {
    let mut all = got;
    all.extend(open.read_to_end().await.expect("the stream completes"));
    let (covered, signature) = signet_core::inband::split_stream(&all);
    let signature = signature.expect("an in-band signature after the stream");
    assert!(covered.ends_with(b"data: [DONE]\n\n"));
    Delivered {
        request,
        covered: covered.to_vec(),
        signature,
    }
}

/// Starts an in-band stream that the upstream holds after its first event (`gate`).
async fn open_gated_inband(addr: std::net::SocketAddr, gate: &str) -> (OpenReply, Vec<u8>) {
    let mut open = open(
        addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-gate", gate),
            ("x-mock-id", gate),
            ("x-request-id", gate),
            ("x-signet-signature", "in-band"),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"stream":true,"n":"{gate}"}}"#).into_bytes(),
    )
    .await;
    assert_eq!(open.status, 200);
    let got = open.read_until(b"\n\n").await;
    (open, got)
}

/// Recovers every signature with eth-account and checks it is `expected`'s.
fn assert_signers(delivered: &[&Delivered], expected: &[&str]) {
    let pairs: Vec<(String, String)> = delivered
        .iter()
        .map(|d| (d.signature.text.clone(), d.signature.signature.clone()))
        .collect();
    let recovered = recover_independently_many(&pairs);
    for ((d, recovered), expected) in delivered.iter().zip(recovered).zip(expected) {
        assert_eq!(recovered, *expected, "{}", d.signature.id);
        assert_eq!(d.signature.signing_address, *expected, "{}", d.signature.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_streams_in_flight_finish_and_be_signed() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let gates = ["term-1", "term-2", "term-3"];
    let mut in_flight = Vec::new();
    for gate in gates {
        in_flight.push(open_gated_inband(gateway.addr, gate).await);
    }
    send_signal(gateway.pid(), "TERM");
    gateway.wait_for_log_line(&["SIGTERM received"]);
    let mut delivered = Vec::new();
    for (gate, (open, got)) in gates.iter().zip(in_flight) {
        upstream.release(gate).await;
        let request = format!(r#"{{"stream":true,"n":"{gate}"}}"#).into_bytes();
        let d = finish_inband(open, request, got).await;
        d.assert_text();
        assert_eq!(d.signature.id, *gate);
        delivered.push(d);
    }
    let all: Vec<&Delivered> = delivered.iter().collect();
    assert_signers(&all, &[address.as_str(); 3]);
    for gate in gates {
        let line = gateway.access_line(gate);
        assert_eq!(line["signed"], "true", "{line:?}");
        assert_eq!(line["id"], gate, "{line:?}");
    }
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
async fn an_upgrade_hands_over_without_failing_a_stream_and_signs_the_stream_in_flight() {
    let upstream = Upstream::start();
    let old = Gateway::start(&upstream.url());
    let old_address = old.signing_address().await;
    let (held, held_got) = open_gated_inband(old.addr, "upgrade-1").await;

    // Keep streamed completions flowing throughout the handover, until the new process has
    // signed a few: none may fail, and each carries its signature. (After the handover both
    // processes accept on the shared socket for a while.)
    let addr = old.addr;
    let old_for_traffic = old_address.clone();
    let traffic = tokio::spawn(async move {
        let mut delivered: Vec<Delivered> = Vec::new();
        let mut by_new = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while by_new < 3 {
            assert!(Instant::now() < deadline, "the new process never answered");
            let n = delivered.len();
            let request = format!(r#"{{"stream":true,"n":{n}}}"#).into_bytes();
            let mut open = open(
                addr,
                "POST",
                "/v1/chat/completions",
                &[
                    ("x-signet-signature", "in-band"),
                    ("x-mock-id", &format!("handover-{n}")),
                    ("content-type", "application/json"),
                ],
                request.clone(),
            )
            .await;
            assert_eq!(open.status, 200, "stream {n} failed during the upgrade");
            let got = open.read_until(b"\n\n").await;
            let d = finish_inband(open, request, got).await;
            d.assert_text();
            if d.signature.signing_address != old_for_traffic {
                by_new += 1;
            }
            delivered.push(d);
        }
        delivered
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
    let upgrade_sock = old.dir.path().join("signet-upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upgrade_sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never waited for the sockets"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    send_signal(old.pid(), "QUIT");

    let delivered = traffic.await.unwrap();
    let new_address = delivered.last().unwrap().signature.signing_address.clone();
    assert_ne!(new_address, old_address, "the new process has its own key");
    let signers: Vec<&str> = delivered
        .iter()
        .map(|d| {
            let signer = d.signature.signing_address.as_str();
            assert!(
                signer == old_address || signer == new_address,
                "{signer} is neither process"
            );
            signer
        })
        .collect();
    let all: Vec<&Delivered> = delivered.iter().collect();
    assert_signers(&all, &signers);
    // The new process answers lookups for what it signed (a lookup that lands on the old
    // one, still draining, is a 404 there).
    let last = delivered.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let receipt = loop {
        let receipt = old.signature(&last.signature.id).await;
        if receipt.status == 200 {
            break receipt.json();
        }
        receipt.assert_envelope(404, "signature_not_found");
        assert!(Instant::now() < deadline, "the new process never answered");
    };
    assert_receipt_independently(&receipt, &last.request, &last.covered, &new_address);

    // The stream that was in flight completes on the old process and is signed there.
    upstream.release("upgrade-1").await;
    let request = br#"{"stream":true,"n":"upgrade-1"}"#.to_vec();
    let d = finish_inband(held, request, held_got).await;
    d.assert_text();
    assert_signers(&[&d], &[old_address.as_str()]);
    let line = old.access_line("upgrade-1");
    assert_eq!(line["signed"], "true", "{line:?}");
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
