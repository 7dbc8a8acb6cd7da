//! ACI E2EE v2 against a live signet: a client that encrypts to a key from the attested
//! keyset gets through, the upstream sees the plaintext, the client gets ciphertext that
//! opens under its own key (buffered and streamed, both suites); the receipt covers the
//! restored request and the wire response, the EIP-191 text the wire bytes both ways; every
//! faulty E2EE request is refused with its spec error before anything reaches the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use signet_core::aci::{self, AciNonce, AciReport};
use signet_core::e2ee::crypto::{self, PublicKey, SecretKey, Suite};
use signet_core::e2ee::{request_aad, response_aad};

const NONCE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The attested keyset: its E2EE keys and the report's capabilities.
async fn keyset(gateway: &Gateway) -> (Value, String, Value) {
    let reply = request(
        gateway.addr,
        "GET",
        &format!("/v1/aci/attestation?nonce={NONCE}"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let json = reply.json();
    let report: AciReport = serde_json::from_value(json.clone()).unwrap();
    aci::check_report_binding(&report, Some(&AciNonce::parse(NONCE).unwrap())).unwrap();
    (
        report.attestation.workload_keyset,
        report.workload_keyset_digest,
        json["service_capabilities"].clone(),
    )
}

struct Client {
    secret: SecretKey,
    service: PublicKey,
    nonce: String,
    ts: String,
}

impl Client {
    fn new(keyset: &Value, suite: Suite) -> Self {
        let entry = keyset["e2ee_public_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["algo"] == suite.algo())
            .expect("a key of this suite in the keyset");
        let mut nonce = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        Self {
            secret: SecretKey::generate(suite),
            service: PublicKey::parse(suite, entry["public_key"].as_str().unwrap()).unwrap(),
            nonce: hex::encode(nonce),
            ts: signet::config::unix_now().to_string(),
        }
    }

    fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("x-e2ee-version".into(), "2".into()),
            ("x-client-pub-key".into(), self.secret.public_key().to_hex()),
            ("x-model-pub-key".into(), self.service.to_hex()),
            ("x-e2ee-nonce".into(), self.nonce.clone()),
            ("x-e2ee-timestamp".into(), self.ts.clone()),
        ]
    }

    fn encrypt(&self, model: &str, field: &str, plaintext: &str) -> String {
        let aad = request_aad(
            self.service.suite().algo(),
            model,
            field,
            &self.nonce,
            self.ts.parse().unwrap(),
        );
        crypto::seal(&self.service, plaintext.as_bytes(), &aad)
    }

    fn decrypt(&self, model: &str, id: &str, field: &str, ciphertext: &str) -> String {
        let aad = response_aad(
            self.service.suite().algo(),
            model,
            id,
            field,
            &self.nonce,
            self.ts.parse().unwrap(),
        );
        String::from_utf8(crypto::open(&self.secret, ciphertext, &aad).expect("opens")).unwrap()
    }
}

async fn post(gateway: &Gateway, path: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    gateway.post(path, &borrowed, body).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

fn plain_chat(stream: bool) -> Value {
    json!({"model": "e2ee-model", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "secret prompt"}
    ], "stream": stream})
}

fn encrypted_chat(client: &Client, stream: bool) -> Value {
    let mut body = plain_chat(stream);
    for m in 0..2 {
        let text = body["messages"][m]["content"].as_str().unwrap().to_owned();
        body["messages"][m]["content"] =
            Value::String(client.encrypt("e2ee-model", &format!("messages.{m}.content"), &text));
    }
    body
}

/// The content a stream carries, decrypted event by event.
fn stream_content(client: &Client, body: &[u8], sealed: bool) -> String {
    let mut content = String::new();
    for line in std::str::from_utf8(body).unwrap().lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let event: Value = serde_json::from_str(data).unwrap();
        let Some(piece) = event["choices"][0]["delta"]["content"].as_str() else {
            continue;
        };
        if sealed {
            let id = event["id"].as_str().unwrap();
            content.push_str(&client.decrypt("e2ee-model", id, "choices.0.delta.content", piece));
        } else {
            content.push_str(piece);
        }
    }
    content
}

#[tokio::test]
async fn the_keyset_publishes_one_e2ee_key_per_suite_and_the_report_advertises_v2() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let (keyset, digest, capabilities) = keyset(&gateway).await;
    assert_eq!(capabilities["supported_e2ee_versions"], json!(["2"]));
    let keys = keyset["e2ee_public_keys"].as_array().unwrap();
    let algos: Vec<&str> = keys.iter().map(|k| k["algo"].as_str().unwrap()).collect();
    assert_eq!(
        algos,
        [
            "x25519-aes-256-gcm-hkdf-sha256",
            "secp256k1-aes-256-gcm-hkdf-sha256"
        ]
    );
    // Role separation: no E2EE key is the receipt key.
    let receipt_key = keyset["receipt_signing_keys"][0]["public_key"]
        .as_str()
        .unwrap();
    assert!(keys.iter().all(|k| k["public_key"] != receipt_key));
    assert_eq!(aci::keyset_digest(&keyset).unwrap(), digest);
}

#[tokio::test]
async fn an_encrypted_chat_reaches_the_upstream_in_plaintext_and_the_client_in_ciphertext() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let (keyset, digest, _) = keyset(&gateway).await;
    let address = gateway.signing_address().await;
    for suite in [Suite::X25519, Suite::Secp256k1] {
        for stream in [false, true] {
            let label = format!("{suite:?} stream={stream}");
            let id = format!("e2ee-{suite:?}-{stream}").to_lowercase();
            // The same request in the clear, for the content to expect.
            let plain_reply = gateway
                .post(
                    "/v1/chat/completions",
                    &[("x-mock-id", &format!("{id}-plain"))],
                    &serde_json::to_vec(&plain_chat(stream)).unwrap(),
                )
                .await;
            assert_eq!(plain_reply.status, 200);
            let client = Client::new(&keyset, suite);
            let body = serde_json::to_vec(&encrypted_chat(&client, stream)).unwrap();
            let mut headers = client.headers();
            headers.push(("x-mock-id".into(), id.clone()));
            let reply = post(&gateway, "/v1/chat/completions", &headers, &body).await;
            assert_eq!(
                reply.status,
                200,
                "{label}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            assert_eq!(header(&reply, "x-e2ee-applied"), Some("true"), "{label}");
            assert_eq!(header(&reply, "x-e2ee-version"), Some("2"));
            assert_eq!(header(&reply, "x-e2ee-algo"), Some(suite.algo()));
            // The upstream got the restored plaintext, compactly serialized.
            let restored = serde_json::to_vec(&plain_chat(stream)).unwrap();
            let seen = upstream.seen().await;
            let last = seen.last().unwrap();
            assert_eq!(last["body_sha256"], sha256_hex(&restored), "{label}");
            assert_eq!(last["body_len"], restored.len());
            // The client got ciphertext, which opens to the plaintext answer.
            let (content, expected) = if stream {
                (
                    stream_content(&client, &reply.body, true),
                    stream_content(&client, &plain_reply.body, false),
                )
            } else {
                let answer = reply.json();
                let sealed = answer["choices"][0]["message"]["content"].as_str().unwrap();
                assert!(!sealed.contains("tok"), "{label}: not encrypted");
                (
                    client.decrypt("e2ee-model", &id, "choices.0.message.content", sealed),
                    plain_reply.json()["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            };
            assert!(!expected.is_empty());
            assert_eq!(content, expected, "{label}");
            // EIP-191: the wire bytes both ways.
            let signature = gateway.signature(&id).await;
            assert_eq!(signature.status, 200, "{label}");
            assert_receipt(&signature.json(), &body, &reply.body, &address);
            // ACI: the restored request (received = forwarded), the wire response.
            let receipt_id = header(&reply, "x-receipt-id").unwrap().to_owned();
            let document = request(
                gateway.addr,
                "GET",
                &format!("/v1/aci/receipts/{receipt_id}"),
                &[],
                Vec::new(),
            )
            .await
            .json();
            let verified = aci::verify_receipt(&document, &keyset, &digest).unwrap();
            assert_eq!(verified.request_received, aci::sha256_digest(&restored));
            assert_eq!(
                verified.request_forwarded.as_deref(),
                Some(verified.request_received.as_str())
            );
            assert_eq!(verified.response_returned, aci::sha256_digest(&reply.body));
            assert_eq!(document["model"], "e2ee-model");
        }
    }
}

#[tokio::test]
async fn every_faulty_e2ee_request_is_refused_with_its_spec_error_before_the_upstream() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let (keyset, _, _) = keyset(&gateway).await;
    let before = upstream.seen().await.len();
    let set = |headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>| {
        headers.retain(|(n, _)| n != name);
        if let Some(value) = value {
            headers.push((name.to_owned(), value.to_owned()));
        }
    };
    let stranger = SecretKey::generate(Suite::X25519).public_key().to_hex();
    let stale = (signet::config::unix_now() - 400).to_string();
    type Edit = Box<dyn Fn(&mut Vec<(String, String)>, &mut Value, &Client)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "e2ee_header_missing",
            "/v1/chat/completions",
            Box::new(move |h, _, _| set(h, "x-e2ee-nonce", None)),
        ),
        (
            "e2ee_invalid_version",
            "/v1/chat/completions",
            Box::new(move |h, _, _| set(h, "x-e2ee-version", Some("3"))),
        ),
        (
            "e2ee_invalid_version",
            "/v1/chat/completions",
            Box::new(move |h, _, _| set(h, "x-signing-algo", Some("ecdsa"))),
        ),
        ("e2ee_model_key_mismatch", "/v1/chat/completions", {
            let stranger = stranger.clone();
            Box::new(move |h, _, _| set(h, "x-model-pub-key", Some(&stranger)))
        }),
        (
            "e2ee_invalid_public_key",
            "/v1/chat/completions",
            Box::new(move |h, _, _| set(h, "x-client-pub-key", Some("0x1234"))),
        ),
        (
            "e2ee_invalid_nonce",
            "/v1/chat/completions",
            Box::new(move |h, _, _| set(h, "x-e2ee-nonce", Some("abcd"))),
        ),
        ("e2ee_invalid_timestamp", "/v1/chat/completions", {
            let stale = stale.clone();
            Box::new(move |h, _, _| set(h, "x-e2ee-timestamp", Some(&stale)))
        }),
        (
            "e2ee_unsupported_endpoint",
            "/v1/responses",
            Box::new(|_, _, _| {}),
        ),
        (
            "e2ee_decryption_failed",
            "/v1/chat/completions",
            Box::new(|_, b, _| {
                // A ciphertext moved to another message: its AAD names the first.
                let first = b["messages"][0]["content"].clone();
                b["messages"][1]["content"] = first;
            }),
        ),
        (
            "e2ee_decryption_failed",
            "/v1/chat/completions",
            Box::new(|_, b, _| {
                b["messages"] = json!([{"role": "user", "content": ""}]);
            }),
        ),
        (
            "e2ee_invalid_payload_model",
            "/v1/chat/completions",
            Box::new(|_, b, _| {
                b["model"] = json!(7);
            }),
        ),
    ];
    for (code, path, edit) in cases {
        let client = Client::new(&keyset, Suite::X25519);
        let mut headers = client.headers();
        let mut body = encrypted_chat(&client, false);
        edit(&mut headers, &mut body, &client);
        let reply = post(
            &gateway,
            path,
            &headers,
            &serde_json::to_vec(&body).unwrap(),
        )
        .await;
        reply.assert_envelope(400, code);
        assert_eq!(reply.json()["error"]["type"], code);
        assert_eq!(header(&reply, "x-e2ee-applied"), None);
    }
    // A replayed nonce: the first goes through, the same again is refused.
    let client = Client::new(&keyset, Suite::X25519);
    let body = serde_json::to_vec(&encrypted_chat(&client, false)).unwrap();
    let first = post(&gateway, "/v1/chat/completions", &client.headers(), &body).await;
    assert_eq!(first.status, 200);
    let again = post(&gateway, "/v1/chat/completions", &client.headers(), &body).await;
    again.assert_envelope(400, "e2ee_replay_detected");
    // Only the one good request reached the upstream.
    assert_eq!(upstream.seen().await.len(), before + 1);
}

/// The legacy report's key for `algo` (what NEAR's format encrypts to).
async fn report_key(gateway: &Gateway, algo: &str) -> String {
    let reply = request(
        gateway.addr,
        "GET",
        &format!("/v1/attestation/report?signing_algo={algo}"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    reply.json()["signing_public_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn nears_format_round_trips_in_both_suites_streamed_and_buffered() {
    use signet_core::e2ee::near::{NearClient, NearSuite};
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    for suite in [NearSuite::Ecdsa, NearSuite::Ed25519] {
        let service_key = report_key(&gateway, suite.name()).await;
        for stream in [false, true] {
            let label = format!("{suite:?} stream={stream}");
            let id = format!("near-{}-{stream}", suite.name());
            let plain_reply = gateway
                .post(
                    "/v1/chat/completions",
                    &[("x-mock-id", &format!("{id}-plain"))],
                    &serde_json::to_vec(&plain_chat(stream)).unwrap(),
                )
                .await;
            let client = NearClient::generate(suite);
            let mut body = plain_chat(stream);
            for m in 0..2 {
                let text = body["messages"][m]["content"].as_str().unwrap().to_owned();
                body["messages"][m]["content"] = Value::String(
                    client
                        .seal_to_service(&service_key, text.as_bytes())
                        .unwrap(),
                );
            }
            let body = serde_json::to_vec(&body).unwrap();
            let mut headers = vec![
                ("x-signing-algo".to_owned(), suite.name().to_owned()),
                ("x-client-pub-key".to_owned(), client.public_key_hex()),
                ("x-mock-id".to_owned(), id.clone()),
            ];
            if suite == NearSuite::Ed25519 {
                headers.push(("x-encryption-version".to_owned(), "2".to_owned()));
            }
            let reply = post(&gateway, "/v1/chat/completions", &headers, &body).await;
            assert_eq!(
                reply.status,
                200,
                "{label}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            assert_eq!(header(&reply, "x-e2ee-applied"), Some("true"));
            assert_eq!(header(&reply, "x-e2ee-algo"), Some(suite.name()));
            assert_eq!(header(&reply, "x-e2ee-version"), None);
            let restored = serde_json::to_vec(&plain_chat(stream)).unwrap();
            let seen = upstream.seen().await;
            assert_eq!(seen.last().unwrap()["body_sha256"], sha256_hex(&restored));
            let open = |hex: &str| String::from_utf8(client.open(hex).expect("opens")).unwrap();
            let (content, expected) = if stream {
                let mut content = String::new();
                for line in std::str::from_utf8(&reply.body).unwrap().lines() {
                    let Some(data) = line.strip_prefix("data: ").filter(|d| *d != "[DONE]") else {
                        continue;
                    };
                    let event: Value = serde_json::from_str(data).unwrap();
                    if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
                        content.push_str(&open(piece));
                    }
                }
                let client_plain = Client {
                    secret: SecretKey::generate(Suite::X25519),
                    service: SecretKey::generate(Suite::X25519).public_key(),
                    nonce: String::new(),
                    ts: "0".into(),
                };
                (
                    content,
                    stream_content(&client_plain, &plain_reply.body, false),
                )
            } else {
                (
                    open(
                        reply.json()["choices"][0]["message"]["content"]
                            .as_str()
                            .unwrap(),
                    ),
                    plain_reply.json()["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            };
            assert!(!expected.is_empty());
            assert_eq!(content, expected, "{label}");
            let signature = gateway.signature(&id).await;
            assert_receipt(&signature.json(), &body, &reply.body, &address);
        }
    }
    // Its faults: ed25519 unversioned, a field that does not open, a key of another service.
    let before = upstream.seen().await.len();
    let client = NearClient::generate(NearSuite::Ed25519);
    let ed_key = report_key(&gateway, "ed25519").await;
    let good = client.seal_to_service(&ed_key, b"hi").unwrap();
    let body = |content: &str| {
        serde_json::to_vec(
            &json!({"model": "m", "messages": [{"role": "user", "content": content}]}),
        )
        .unwrap()
    };
    let pubkey = client.public_key_hex();
    type Case<'a> = (Vec<(String, String)>, Vec<u8>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![
                ("x-signing-algo".into(), "ed25519".into()),
                ("x-client-pub-key".into(), pubkey.clone()),
            ],
            body(&good),
            "e2ee_invalid_version",
        ),
        (
            vec![
                ("x-signing-algo".into(), "ed25519".into()),
                ("x-client-pub-key".into(), pubkey.clone()),
                ("x-encryption-version".into(), "2".into()),
            ],
            body("deadbeef"),
            "e2ee_decryption_failed",
        ),
        (
            vec![
                ("x-signing-algo".into(), "ed25519".into()),
                ("x-client-pub-key".into(), pubkey.clone()),
                ("x-encryption-version".into(), "2".into()),
                ("x-model-pub-key".into(), "ab".repeat(32)),
            ],
            body(&good),
            "e2ee_model_key_mismatch",
        ),
        (
            vec![("x-client-pub-key".into(), pubkey.clone())],
            body(&good),
            "e2ee_header_missing",
        ),
    ];
    for (headers, body, code) in cases {
        let reply = post(&gateway, "/v1/chat/completions", &headers, &body).await;
        reply.assert_envelope(400, code);
    }
    assert_eq!(upstream.seen().await.len(), before);
}

#[tokio::test]
async fn a_large_encrypted_request_beyond_the_retry_buffer_is_restored_whole() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let (keyset, _, _) = keyset(&gateway).await;
    let client = Client::new(&keyset, Suite::X25519);
    // ~200 KB of prompt: past the 64 KiB read up front into Pingora's retry buffer.
    let prompt = "a long document line\n".repeat(10_000);
    let body = json!({"model": "e2ee-model", "messages": [
        {"role": "user", "content": client.encrypt("e2ee-model", "messages.0.content", &prompt)}
    ]});
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &client.headers(),
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let restored = serde_json::to_vec(&json!({"model": "e2ee-model", "messages": [
        {"role": "user", "content": prompt}
    ]}))
    .unwrap();
    let seen = upstream.seen().await;
    assert_eq!(seen.last().unwrap()["body_sha256"], sha256_hex(&restored));
    assert_eq!(header(&reply, "x-e2ee-applied"), Some("true"));

    // The same size with a field that does not open: refused once the body is complete;
    // the upstream never gets a complete request, and no plaintext.
    let client = Client::new(&keyset, Suite::X25519);
    let moved = client.encrypt("e2ee-model", "messages.1.content", &prompt);
    let body = json!({"model": "e2ee-model", "messages": [{"role": "user", "content": moved}]});
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &client.headers(),
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    reply.assert_envelope(400, "e2ee_decryption_failed");
    assert_eq!(upstream.seen().await.len(), seen.len());
}
