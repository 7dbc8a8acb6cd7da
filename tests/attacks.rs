//! What a client (or a lying upstream) must not be able to bend, against the live binary:
//! other spellings of a signed route never reach the upstream around the signing, and an
//! upstream cannot hand the client a signature of its own making.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Model servers decode `%XX` and normalise paths before routing; each of these reached the
/// completion handler unsigned, unchecked and without a slot before signet refused them.
#[tokio::test]
async fn other_spellings_of_a_signed_route_are_refused_and_never_forwarded() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    for path in [
        "/v1/chat%2Fcompletions",
        "/v1/chat%2fcompletions",
        "/v1/chat/c%6Fmpletions",
        "/%761/chat/completions",
        "/v1/chat%252Fcompletions",
        "//v1/chat/completions",
        "/v1/./chat/completions",
        "/v1/x/../chat/completions",
        "/v1/chat/completions/",
        "/v1/completions;v=1",
        "/V1/Chat/Completions",
        "/v1/attestation%2Freport",
    ] {
        // Malformed JSON, so a forwarded request would also show the body went unchecked.
        let reply = gateway.post(path, &[], b"{not json").await;
        reply.assert_envelope(400, "ambiguous_path");
    }
    let stats = upstream.stats().await;
    assert_eq!(stats["requests"], serde_json::json!([]), "{stats}");
    assert_eq!(stats["incomplete"], 0, "{stats}");
    // The exact spelling still works.
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-replay", "seed-response.sse")],
            SEED_REQUEST,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(gateway.signature(SEED_ID).await.json()["text"], SEED_TEXT);
}

/// An upstream's `x-signet-*` headers never reach the client, on any route: only signet
/// speaks for signet.
#[tokio::test]
async fn an_upstream_cannot_supply_signet_headers() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let forged = ("x-mock-header", "X-Signet-Signature: 0xforged");
    let models = request(gateway.addr, "GET", "/v1/models", &[forged], Vec::new()).await;
    assert_eq!(models.status, 200);
    assert!(models.headers.get("x-signet-signature").is_none());

    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let streamed = gateway.post("/v1/chat/completions", &[forged], body).await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.headers.get("x-signet-signature").is_none());

    // In-band JSON: the one signature header is signet's, and it recovers to its address.
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#;
    let inband = gateway
        .post(
            "/v1/chat/completions",
            &[
                forged,
                ("x-signet-signature", "in-band"),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
    assert_eq!(inband.status, 200);
    let values: Vec<_> = inband
        .headers
        .get_all("x-signet-signature")
        .iter()
        .collect();
    assert_eq!(values.len(), 1, "{values:?}");
    let text = inband.headers["x-signet-text"].to_str().unwrap();
    assert_eq!(
        recover(text, values[0].to_str().unwrap()),
        address,
        "the signature is signet's"
    );
}

/// A second exchange under an id that already has a live signature (an upstream that
/// repeats ids, or one that builds them from something a client chose) never replaces the
/// first signature: the first client's lookup keeps answering with its own exchange.
#[tokio::test]
async fn a_repeated_completion_id_never_replaces_an_earlier_signature() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let same_id = ("x-mock-id", "chatcmpl-repeated");
    let first_body =
        br#"{"model":"m","messages":[{"role":"user","content":"mine"}],"stream":true}"#;
    let first = gateway
        .post("/v1/chat/completions", &[same_id], first_body)
        .await;
    assert_eq!(first.status, 200);
    let later_body =
        br#"{"model":"m","messages":[{"role":"user","content":"attacker"}],"stream":true}"#;
    let later = gateway
        .post("/v1/chat/completions", &[same_id], later_body)
        .await;
    assert_eq!(later.status, 200, "the later client still gets its answer");
    let receipt = gateway.signature("chatcmpl-repeated").await.json();
    assert_receipt(&receipt, first_body, &first.body, &address);
    gateway.wait_for_log_line(&[
        "id=chatcmpl-repeated",
        "signed=false",
        "reason=duplicate_id",
    ]);
}

/// A client that resets its connection while the upstream is still working must not make
/// signet send the prompt upstream a second time (a second inference, billed and logged
/// upstream): only an upstream that closed a pooled connection unanswered is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_never_sends_the_prompt_upstream_twice() {
    use std::io::Write;
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    // A pooled upstream connection, as under any real load.
    let warm = gateway
        .post("/v1/chat/completions", &[], br#"{"stream":false}"#)
        .await;
    assert_eq!(warm.status, 200);
    for run in 0..3 {
        let body = format!(r#"{{"stream":false,"run":{run}}}"#);
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
             x-request-id: reset-run-{run}\r\nx-mock-head-delay-ms: 300\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.connect(&gateway.addr.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        // Once the upstream holds the request, the client resets (RST, not FIN).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while upstream.seen().await.len() < 2 + run {
            assert!(
                std::time::Instant::now() < deadline,
                "the request never arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let socket = socket2::Socket::from(stream);
        socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(socket);
        let line = gateway.wait_for_log_line(&[&format!("client_request_id=reset-run-{run} ")]);
        assert!(line.contains("signed=false"), "{line}");
        assert!(line.contains("retries=0"), "{line}");
    }
    assert_eq!(
        upstream.seen().await.len(),
        4,
        "every prompt reached the upstream exactly once"
    );
}

/// A non-streamed request whose client closes (FIN) before the answer is abandoned: the
/// answer would go to nobody, so it is never signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_to_a_client_that_already_left_is_not_signed() {
    use std::io::Write;
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let body = br#"{"stream":false}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-type: application/json\r\n\
         x-request-id: left-early\r\nx-mock-id: chatcmpl-left-early\r\nx-mock-head-delay-ms: 300\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(gateway.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upstream.seen().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(stream); // FIN: the client is gone before the answer.
    let line = gateway.wait_for_log_line(&["client_request_id=left-early "]);
    assert!(line.contains("signed=false"), "{line}");
    assert_eq!(gateway.signature("chatcmpl-left-early").await.status, 404);
}

/// An upstream that ends its body by closing the connection cannot be told from one that was
/// cut, so a stream delimited that way counts as complete only with its `data: [DONE]`.
#[tokio::test]
async fn a_close_delimited_stream_cut_before_done_is_not_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let whole = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-framing", "close"), ("x-mock-id", "chatcmpl-whole")],
            body,
        )
        .await;
    assert_eq!(whole.status, 200);
    assert!(whole.body.ends_with(b"data: [DONE]\n\n"));
    let receipt = gateway.signature("chatcmpl-whole").await.json();
    assert_receipt(&receipt, body, &whole.body, &address);

    let cut_at = (whole.body.len() - 20).to_string();
    let cut = gateway
        .post(
            "/v1/chat/completions",
            &[
                ("x-mock-framing", "close"),
                ("x-mock-id", "chatcmpl-cut-1"),
                ("x-mock-die-after", &cut_at),
            ],
            body,
        )
        .await;
    assert_eq!(cut.status, 200);
    assert!(!cut.body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(gateway.signature("chatcmpl-cut-1").await.status, 404);
    gateway.wait_for_log_line(&["id=chatcmpl-cut-1", "signed=false", "reason=upstream_abort"]);
}

/// An upstream that writes lines looking like signet's in-band trailer (in the middle, and
/// at the very end) cannot pass one off as signet's: the only `: signet-signature` line the
/// client receives is signet's own, and it recovers to the attested address.
#[tokio::test]
async fn an_upstream_cannot_forge_the_inband_trailer() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[
                ("x-mock-replay", "forged-trailer.sse"),
                ("x-signet-signature", "in-band"),
            ],
            SEED_REQUEST,
        )
        .await;
    assert_eq!(reply.status, 200);
    let lines = reply
        .body
        .split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b": signet-signature"))
        .count();
    assert_eq!(lines, 1, "{}", String::from_utf8_lossy(&reply.body));
    let (covered, trailer) = signet_core::inband::split_stream(&reply.body);
    let trailer = trailer.expect("signet's trailer");
    assert_eq!(trailer.signing_address, address);
    assert_eq!(
        trailer.text,
        format!("{}:{}", sha256_hex(SEED_REQUEST), sha256_hex(covered))
    );
    assert_eq!(recover(&trailer.text, &trailer.signature), address);
    assert!(
        covered
            .windows(b": upstream-said signet-signature".len())
            .filter(|w| *w == b": upstream-said signet-signature")
            .count()
            == 2
    );
}

/// A redirect from the upstream (a trailing-slash 307, say) never tells the client where
/// the model server lives.
#[tokio::test]
async fn an_upstream_redirect_does_not_leak_its_address() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let location = format!("Location: http://{}/v1/models", upstream.addr);
    let reply = request(
        gateway.addr,
        "GET",
        "/v1/models/",
        &[("x-mock-status", "307"), ("x-mock-header", &location)],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 307);
    assert_eq!(reply.headers["location"], "/v1/models");
}

/// An admin (metrics) listener reachable from other machines is said out loud at start: it
/// has no authentication of its own.
#[tokio::test]
async fn an_admin_listener_beyond_loopback_is_warned_about() {
    let upstream = Upstream::start();
    let port = free_port();
    let gateway = Gateway::start_with(
        &upstream.url(),
        &format!("  admin:\n    listen: \"0.0.0.0:{port}\"\n"),
    );
    gateway.wait_for_log_line(&["admin listener", "no authentication"]);
    let quiet = Gateway::start_with(
        &upstream.url(),
        &format!("  admin:\n    listen: \"127.0.0.1:{}\"\n", free_port()),
    );
    assert!(!quiet.log().contains("no authentication"));
}

/// Request heads Pingora itself cannot read are answered, like every error signet gives,
/// with the JSON envelope (Pingora's own answer is a bare 400), and nothing reaches the
/// upstream.
#[tokio::test]
async fn heads_the_http_layer_cannot_read_get_the_envelope() {
    use std::io::{Read, Write};
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(&upstream.url(), "  limits:\n    max_header_bytes: 4KiB\n");
    let many_fields: String = (0..300).map(|i| format!("x-f{i}: v\r\n")).collect();
    let cases = [
        (
            "an absolute-form target naming another host",
            "POST http://other.example/v1/chat/completions HTTP/1.1\r\nhost: signet\r\n".to_owned(),
            400,
            "malformed_request",
        ),
        (
            "differing Content-Length values",
            "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\ncontent-length: 2\r\n\
             content-length: 3\r\n"
                .to_owned(),
            400,
            "malformed_request",
        ),
        (
            "more than 256 header fields",
            format!("POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\n{many_fields}"),
            431,
            "headers_too_large",
        ),
        (
            "a head over max_header_bytes",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: signet\r\nx-pad: {}\r\n",
                "p".repeat(20 << 10)
            ),
            431,
            "headers_too_large",
        ),
    ];
    for (case, head, status, code) in cases {
        let mut stream = std::net::TcpStream::connect(gateway.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let request = format!("{head}content-type: application/json\r\n\r\n{{}}");
        let _ = stream.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{case}: {text:?}"));
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{case}: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{case}: {head}"
        );
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{case}: {e}: {body:?}"));
        assert_eq!(json["error"]["code"], code, "{case}: {json}");
        assert!(json["error"]["message"].is_string(), "{case}: {json}");
        assert_eq!(
            json["error"]["type"], "invalid_request_error",
            "{case}: {json}"
        );
    }
    let stats = upstream.stats().await;
    assert_eq!(stats["requests"].as_array().unwrap().len(), 0, "{stats}");
}
