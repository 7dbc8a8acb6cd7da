//! Every prompt API is signed, not only chat completions: OpenAI's Responses API, Anthropic's
//! Messages API, embeddings, rerank and score, and multipart audio uploads, each with its id
//! taken where that API puts it (or made by signet where the body has none), against the
//! live binary. Routes an operator names are signed too, and routes it removes are not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Posts `body` to `path`, fetches the signature under the response's id (from the body at
/// `pointer`, or from `x-signet-completion-id`) and checks it covers exactly these bytes.
async fn signed_round_trip(
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    id_of: impl Fn(&Reply) -> String,
) -> Reply {
    let address = gateway.signing_address().await;
    let reply = gateway.post(path, headers, body).await;
    assert_eq!(
        reply.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let id = id_of(&reply);
    let receipt = gateway.signature(&id).await;
    assert_eq!(receipt.status, 200, "{path}: no signature under {id}");
    assert_receipt(&receipt.json(), body, &reply.body, &address);
    gateway.wait_for_log_line(&[&format!("id={id} "), "signed=true"]);
    reply
}

fn header_id(reply: &Reply) -> String {
    reply.headers["x-signet-completion-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn sse_field(body: &[u8], event: &str, pointer: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == format!("event: {event}") {
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            let value: serde_json::Value = serde_json::from_str(data).unwrap();
            return value.pointer(pointer).unwrap().as_str().unwrap().to_owned();
        }
    }
    panic!("no {event} event in {text}")
}

#[tokio::test]
async fn the_responses_and_messages_apis_are_signed_under_their_own_ids() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let json = [("content-type", "application/json")];
    for stream in [false, true] {
        let body = format!(r#"{{"model":"m","input":"hi","stream":{stream}}}"#);
        let reply = signed_round_trip(&gateway, "/v1/responses", &json, body.as_bytes(), |r| {
            if stream {
                sse_field(&r.body, "response.created", "/response/id")
            } else {
                r.json()["id"].as_str().unwrap().to_owned()
            }
        })
        .await;
        assert!(reply.headers.get("x-signet-completion-id").is_none());
        let body = format!(
            r#"{{"model":"m","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
        );
        signed_round_trip(&gateway, "/v1/messages", &json, body.as_bytes(), |r| {
            if stream {
                sse_field(&r.body, "message_start", "/message/id")
            } else {
                r.json()["id"].as_str().unwrap().to_owned()
            }
        })
        .await;
    }
}

#[tokio::test]
async fn bodies_without_an_id_are_signed_under_one_signet_makes() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let json = [("content-type", "application/json")];
    for (path, body) in [
        ("/v1/embeddings", &br#"{"model":"m","input":"hello"}"#[..]),
        (
            "/v1/rerank",
            br#"{"model":"m","query":"q","documents":["a","b"]}"#,
        ),
        ("/v1/score", br#"{"model":"m","text_1":"a","text_2":"b"}"#),
    ] {
        let reply = signed_round_trip(&gateway, path, &json, body, header_id).await;
        assert!(header_id(&reply).starts_with("signet-"));
    }
    // A malformed JSON body never reaches the upstream on these routes either.
    let bad = gateway.post("/v1/embeddings", &json, b"{nope").await;
    bad.assert_envelope(400, "invalid_request_body");
}

fn multipart(file: &[u8]) -> Vec<u8> {
    let mut body = b"--signetboundary\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--signetboundary\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\ncontent-type: audio/wav\r\n\r\n".to_vec();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--signetboundary--\r\n");
    body
}

#[tokio::test]
async fn audio_uploads_are_hashed_exactly_as_received_and_signed() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let content_type = [(
        "content-type",
        "multipart/form-data; boundary=signetboundary",
    )];
    // A small upload and one larger than any buffer signet keeps (it streams through).
    for size in [1_000usize, 300_000] {
        let file: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let body = multipart(&file);
        for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
            let reply = signed_round_trip(&gateway, path, &content_type, &body, header_id).await;
            assert_eq!(
                reply.json()["text"],
                format!("heard {} bytes", body.len()),
                "the upload reached the upstream whole"
            );
        }
        let seen = upstream.seen().await;
        assert_eq!(seen.last().unwrap()["body_sha256"], sha256_hex(&body));
    }
}

#[tokio::test]
async fn an_operator_adds_and_removes_signed_routes() {
    let upstream = Upstream::start();
    let gateway = Gateway::start_with(
        &upstream.url(),
        "  signatures:\n    routes:\n      add:\n        - path: /echo\n          id: generated\n          body: opaque\n      remove: [/v1/score]\n",
    );
    signed_round_trip(&gateway, "/echo", &[], b"anything at all", header_id).await;
    let score = gateway
        .post(
            "/v1/score",
            &[("content-type", "application/json")],
            br#"{"model":"m","text_1":"a","text_2":"b"}"#,
        )
        .await;
    assert_eq!(score.status, 200);
    assert!(score.headers.get("x-signet-completion-id").is_none());
    gateway.wait_for_log_line(&["route=passthrough", "status=200"]);
    // A bad rule stops the start, naming the key.
    let (ok, _, stderr) = {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bad.yaml");
        std::fs::write(
            &config,
            config_text(
                free_port(),
                &upstream.url(),
                dir.path(),
                "  signatures:\n    routes:\n      add:\n        - path: /health\n",
            ),
        )
        .unwrap();
        run_signet(&["serve", "-t", "-c", config.to_str().unwrap()])
    };
    assert!(!ok);
    assert!(
        stderr.contains("signet.signatures.routes.add[0].path"),
        "{stderr}"
    );
}
