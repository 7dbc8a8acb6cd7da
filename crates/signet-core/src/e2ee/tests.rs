//! The protocol's rules, each on plain values: the spec's AAD vectors byte for byte, every
//! error type, request restoration and response sealing in both directions.

use super::crypto::{self, PublicKey, SecretKey, Suite};
use super::fields::ResponseSealer;
use super::stream::{FAILURE_BODY, ResponseEncryptor};
use super::*;
use serde_json::{Value, json};

const NONCE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const NOW: u64 = 1_750_000_000;

#[test]
fn request_aad_matches_the_spec_vector_byte_for_byte() {
    let aad = request_aad(
        ALGO_X25519,
        "demo-model",
        "messages.0.content",
        NONCE,
        1750000000,
    );
    assert_eq!(
        String::from_utf8(aad).unwrap(),
        r#"{"algo":"x25519-aes-256-gcm-hkdf-sha256","field":"messages.0.content","model":"demo-model","nonce":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","purpose":"aci.e2ee.request.v2","ts":1750000000}"#
    );
}

#[test]
fn response_aad_matches_the_spec_vector_byte_for_byte() {
    let aad = response_aad(
        ALGO_X25519,
        "demo-model",
        "chatcmpl-123",
        "choices.0.message.content",
        NONCE,
        1750000000,
    );
    assert_eq!(
        String::from_utf8(aad).unwrap(),
        r#"{"algo":"x25519-aes-256-gcm-hkdf-sha256","field":"choices.0.message.content","id":"chatcmpl-123","model":"demo-model","nonce":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","purpose":"aci.e2ee.response.v2","ts":1750000000}"#
    );
}

struct Client {
    secret: SecretKey,
    service_key: PublicKey,
    nonce: String,
    ts: u64,
}

impl Client {
    fn new(service: &E2eeService, suite: Suite) -> Self {
        let entry = service
            .keyset_entries()
            .into_iter()
            .find(|e| e.algo == suite.algo())
            .unwrap();
        let mut nonce = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        Self {
            secret: SecretKey::generate(suite),
            service_key: PublicKey::parse(suite, &entry.public_key).unwrap(),
            nonce: hex::encode(nonce),
            ts: NOW,
        }
    }

    fn headers(&self) -> (String, String, String, String) {
        (
            self.secret.public_key().to_hex(),
            self.service_key.to_hex(),
            self.nonce.clone(),
            self.ts.to_string(),
        )
    }

    fn encrypt(&self, model: &str, field: &str, plaintext: &str) -> String {
        let aad = request_aad(
            self.service_key.suite().algo(),
            model,
            field,
            &self.nonce,
            self.ts,
        );
        crypto::seal(&self.service_key, plaintext.as_bytes(), &aad)
    }

    fn decrypt(&self, model: &str, id: &str, field: &str, ciphertext: &str) -> String {
        let aad = response_aad(
            self.service_key.suite().algo(),
            model,
            id,
            field,
            &self.nonce,
            self.ts,
        );
        String::from_utf8(crypto::open(&self.secret, ciphertext, &aad).unwrap()).unwrap()
    }

    fn check(&self, service: &E2eeService, path: &str) -> Result<Option<Session>, E2eeError> {
        let (client, model, nonce, ts) = self.headers();
        service
            .check_request(
                &RequestHeaders {
                    version: Some(b"2"),
                    client_pub_key: Some(client.as_bytes()),
                    model_pub_key: Some(model.as_bytes()),
                    nonce: Some(nonce.as_bytes()),
                    timestamp: Some(ts.as_bytes()),
                    signing_algo: None,
                    encryption_version: None,
                },
                path,
                NOW,
            )
            .map(|negotiated| {
                negotiated.map(|n| match n {
                    Negotiated::Aci(session) => session,
                    Negotiated::Near(_) => panic!("not ACI"),
                })
            })
    }
}

fn service() -> E2eeService {
    E2eeService::generate(1000)
}

#[test]
fn a_request_without_e2ee_headers_is_not_e2ee() {
    let service = service();
    assert!(
        service
            .check_request(&RequestHeaders::default(), "/v1/chat/completions", NOW)
            .unwrap()
            .is_none()
    );
}

#[test]
fn every_header_fault_has_its_spec_error_type() {
    let service = service();
    let client = Client::new(&service, Suite::X25519);
    let (ck, mk, nonce, ts) = client.headers();
    let good = RequestHeaders {
        version: Some(b"2"),
        client_pub_key: Some(ck.as_bytes()),
        model_pub_key: Some(mk.as_bytes()),
        nonce: Some(nonce.as_bytes()),
        timestamp: Some(ts.as_bytes()),
        signing_algo: None,
        encryption_version: None,
    };
    let path = "/v1/chat/completions";
    let code = |headers: RequestHeaders<'_>, path: &str, now: u64| {
        service
            .check_request(&headers, path, now)
            .unwrap_err()
            .code()
    };
    let stranger = SecretKey::generate(Suite::X25519).public_key().to_hex();
    let bad_nonce = "ab".repeat(31);
    let cases: Vec<(RequestHeaders<'_>, &str, u64, &str)> = vec![
        (
            RequestHeaders {
                nonce: None,
                ..good
            },
            path,
            NOW,
            "e2ee_header_missing",
        ),
        (
            RequestHeaders {
                client_pub_key: None,
                ..good
            },
            path,
            NOW,
            "e2ee_header_missing",
        ),
        (
            RequestHeaders {
                version: Some(b"3"),
                ..good
            },
            path,
            NOW,
            "e2ee_invalid_version",
        ),
        (
            RequestHeaders {
                signing_algo: Some(b"ecdsa"),
                ..good
            },
            path,
            NOW,
            "e2ee_invalid_version",
        ),
        (
            RequestHeaders {
                model_pub_key: Some(stranger.as_bytes()),
                ..good
            },
            path,
            NOW,
            "e2ee_model_key_mismatch",
        ),
        (
            RequestHeaders {
                client_pub_key: Some(b"nothex"),
                ..good
            },
            path,
            NOW,
            "e2ee_invalid_public_key",
        ),
        (
            RequestHeaders {
                client_pub_key: Some(&[b'0'; 64]),
                ..good
            },
            path,
            NOW,
            "e2ee_invalid_public_key",
        ),
        (
            RequestHeaders {
                nonce: Some(bad_nonce.as_bytes()),
                ..good
            },
            path,
            NOW,
            "e2ee_invalid_nonce",
        ),
        (
            RequestHeaders {
                timestamp: Some(b"17500x"),
                ..good
            },
            path,
            NOW,
            "e2ee_invalid_timestamp",
        ),
        (good, path, NOW + 301, "e2ee_invalid_timestamp"),
        (good, path, NOW - 301, "e2ee_invalid_timestamp"),
        (good, "/v1/responses", NOW, "e2ee_unsupported_endpoint"),
    ];
    for (headers, path, now, expected) in cases {
        assert_eq!(code(headers, path, now), expected, "{headers:?}");
    }
    // The window's edge is inside; then the nonce is spent.
    assert!(
        service
            .check_request(&good, path, NOW + 300)
            .unwrap()
            .is_some()
    );
    assert_eq!(code(good, path, NOW), "e2ee_replay_detected");
    let upper = nonce.to_uppercase();
    let same_nonce_upper = RequestHeaders {
        nonce: Some(upper.as_bytes()),
        ..good
    };
    assert_eq!(code(same_nonce_upper, path, NOW), "e2ee_replay_detected");
    let envelope: Value =
        serde_json::from_slice(&E2eeError::ReplayDetected.to_api_error().body()).unwrap();
    assert_eq!(envelope["error"]["type"], "e2ee_replay_detected");
    assert_eq!(envelope["error"]["code"], "e2ee_replay_detected");
    assert_eq!(E2eeError::ReplayDetected.to_api_error().status, 400);
}

#[test]
fn chat_fields_in_every_shape_are_restored() {
    for suite in [Suite::X25519, Suite::Secp256k1] {
        let service = service();
        let client = Client::new(&service, suite);
        let session = client
            .check(&service, "/v1/chat/completions")
            .unwrap()
            .unwrap();
        let parts = json!([{"type": "text", "text": "look"}]).to_string();
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": client.encrypt("m", "messages.0.content", "be brief")},
                {"role": "user", "content": client.encrypt("m", "messages.1.content", &parts)},
                {"role": "user", "content": [
                    {"type": "text", "text": client.encrypt("m", "messages.2.content.0.text", "what is")},
                    {"type": "image_url", "image_url": {"url": client.encrypt("m", "messages.2.content.1.image_url.url", "data:image/png;base64,AA")}},
                    {"type": "input_audio", "input_audio": {"data": client.encrypt("m", "messages.2.content.2.input_audio.data", "UklG"), "format": "wav"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": []}
            ],
            "stream": true
        });
        let restored = service
            .restore_request(
                &Negotiated::Aci(session.clone()),
                &serde_json::to_vec(&body).unwrap(),
            )
            .unwrap()
            .0;
        let restored: Value = serde_json::from_slice(&restored).unwrap();
        assert_eq!(restored["messages"][0]["content"], "be brief");
        assert_eq!(
            restored["messages"][1]["content"],
            json!([{"type": "text", "text": "look"}])
        );
        assert_eq!(restored["messages"][2]["content"][0]["text"], "what is");
        assert_eq!(
            restored["messages"][2]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(
            restored["messages"][2]["content"][2]["input_audio"]["data"],
            "UklG"
        );
        assert_eq!(restored["stream"], true);
    }
}

#[test]
fn prompt_and_input_are_restored_as_strings_and_string_elements() {
    let service = service();
    let client = Client::new(&service, Suite::X25519);
    let session = client.check(&service, "/v1/completions").unwrap().unwrap();
    let body = json!({"model": "m", "prompt": [client.encrypt("m", "prompt.0", "once"), client.encrypt("m", "prompt.1", "upon")]});
    let restored: Value = serde_json::from_slice(
        &service
            .restore_request(
                &Negotiated::Aci(session.clone()),
                &serde_json::to_vec(&body).unwrap(),
            )
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(restored["prompt"], json!(["once", "upon"]));

    let client = Client::new(&service, Suite::X25519);
    let session = client.check(&service, "/v1/embeddings").unwrap().unwrap();
    let body = json!({"model": "m", "input": [client.encrypt("m", "input.0", "hi"), [1, 2, 3]]});
    let restored: Value = serde_json::from_slice(
        &service
            .restore_request(
                &Negotiated::Aci(session.clone()),
                &serde_json::to_vec(&body).unwrap(),
            )
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(restored["input"], json!(["hi", [1, 2, 3]]));
}

#[test]
fn request_faults_in_the_body_have_their_spec_error_type() {
    let service = service();
    let client = Client::new(&service, Suite::X25519);
    let session = client
        .check(&service, "/v1/chat/completions")
        .unwrap()
        .unwrap();
    let restore = |body: Value| {
        service
            .restore_request(
                &Negotiated::Aci(session.clone()),
                &serde_json::to_vec(&body).unwrap(),
            )
            .unwrap_err()
            .code()
    };
    // No encrypted field at all.
    assert_eq!(
        restore(json!({"model": "m", "messages": [{"role": "user", "content": ""}]})),
        "e2ee_decryption_failed"
    );
    // A plaintext where a ciphertext must be.
    assert_eq!(
        restore(json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]})),
        "e2ee_decryption_failed"
    );
    // A ciphertext moved to another field (its AAD names the first).
    let moved = client.encrypt("m", "messages.0.content", "hi");
    assert_eq!(
        restore(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": moved}]})
        ),
        "e2ee_decryption_failed"
    );
    // Encrypted for another model name.
    let other_model = client.encrypt("M", "messages.0.content", "hi");
    assert_eq!(
        restore(json!({"model": "m", "messages": [{"role": "user", "content": other_model}]})),
        "e2ee_decryption_failed"
    );
    assert_eq!(
        restore(json!({"messages": [{"role": "user", "content": "x"}]})),
        "e2ee_invalid_payload_model"
    );
    assert_eq!(
        restore(json!({"model": 7, "messages": []})),
        "e2ee_invalid_payload_model"
    );
    assert_eq!(
        service
            .restore_request(&Negotiated::Aci(session.clone()), b"not json")
            .unwrap_err()
            .code(),
        "e2ee_decryption_failed"
    );
}

fn sealer_for(suite: Suite, path: &str) -> (Client, ResponseSealer) {
    let service = service();
    let client = Client::new(&service, suite);
    let session = client.check(&service, path).unwrap().unwrap();
    (
        client,
        ResponseSealer::new(Negotiated::Aci(session), "m".to_owned()),
    )
}

#[test]
fn a_buffered_chat_answer_is_sealed_field_by_field_and_opens_at_the_client() {
    for suite in [Suite::X25519, Suite::Secp256k1] {
        let (client, sealer) = sealer_for(suite, "/v1/chat/completions");
        let mut encryptor = ResponseEncryptor::new(sealer, false);
        let body = json!({"id": "chatcmpl-1", "model": "upstream-name", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello", "reasoning_content": "think"}},
            {"index": 3, "message": {"role": "assistant", "content": null}}
        ], "usage": {"total_tokens": 3}})
        .to_string();
        let (head, tail) = body.as_bytes().split_at(10);
        assert!(encryptor.push(head).is_empty());
        assert!(encryptor.push(tail).is_empty());
        let out: Value = serde_json::from_slice(&encryptor.finish()).unwrap();
        assert!(!encryptor.failed());
        let content = out["choices"][0]["message"]["content"].as_str().unwrap();
        assert_ne!(content, "hello");
        // The request model is in the AAD, not the upstream's.
        assert_eq!(
            client.decrypt("m", "chatcmpl-1", "choices.0.message.content", content),
            "hello"
        );
        assert_eq!(
            client.decrypt(
                "m",
                "chatcmpl-1",
                "choices.0.message.reasoning_content",
                out["choices"][0]["message"]["reasoning_content"]
                    .as_str()
                    .unwrap()
            ),
            "think"
        );
        assert!(out["choices"][1]["message"]["content"].is_null());
        assert_eq!(out["usage"]["total_tokens"], 3);
    }
}

#[test]
fn each_stream_event_is_sealed_as_it_completes() {
    let (client, sealer) = sealer_for(Suite::X25519, "/v1/chat/completions");
    let mut encryptor = ResponseEncryptor::new(sealer, true);
    let first =
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    let (a, b) = first.split_at(20);
    assert!(
        encryptor.push(a.as_bytes()).is_empty(),
        "held until the event ends"
    );
    let out = encryptor.push(b.as_bytes());
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("data: {") && text.ends_with("\n\n"));
    let event: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        client.decrypt(
            "m",
            "c1",
            "choices.0.delta.content",
            event["choices"][0]["delta"]["content"].as_str().unwrap()
        ),
        "Hel"
    );
    let done = encryptor.push(b": keep-alive\r\n\r\ndata: [DONE]\n\n");
    assert_eq!(done, b": keep-alive\n\ndata: [DONE]\n\n");
    assert!(encryptor.finish().is_empty());
    assert!(!encryptor.failed());
}

#[test]
fn completions_and_embeddings_answers_are_sealed() {
    let (client, sealer) = sealer_for(Suite::Secp256k1, "/v1/completions");
    let mut value = json!({"id": "cmpl-1", "choices": [{"index": 0, "text": "once"}]});
    sealer.seal(&mut value, false);
    assert_eq!(
        client.decrypt(
            "m",
            "cmpl-1",
            "choices.0.text",
            value["choices"][0]["text"].as_str().unwrap()
        ),
        "once"
    );
    let (client, sealer) = sealer_for(Suite::X25519, "/v1/embeddings");
    let mut value = json!({"data": [{"index": 0, "embedding": [0.5, 1.0]}]});
    sealer.seal(&mut value, false);
    let opened = client.decrypt(
        "m",
        "",
        "data.0.embedding",
        value["data"][0]["embedding"].as_str().unwrap(),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&opened).unwrap(),
        json!([0.5, 1.0])
    );
}

#[test]
fn an_event_that_cannot_be_sealed_ends_the_stream_with_an_error_event() {
    let (_client, sealer) = sealer_for(Suite::X25519, "/v1/chat/completions");
    let mut encryptor = ResponseEncryptor::new(sealer, true);
    let out = encryptor.push(b"data: not json\n\ndata: {\"id\":\"x\"}\n\n");
    let mut expected = b"data: ".to_vec();
    expected.extend_from_slice(FAILURE_BODY);
    expected.extend_from_slice(b"\n\n");
    assert_eq!(out, expected);
    assert!(encryptor.failed());
    assert!(encryptor.push(b"data: {}\n\n").is_empty());
    assert!(encryptor.finish().is_empty());

    let (_client, sealer) = sealer_for(Suite::X25519, "/v1/chat/completions");
    let mut encryptor = ResponseEncryptor::new(sealer, false);
    encryptor.push(b"{broken");
    assert_eq!(encryptor.finish(), FAILURE_BODY);
    assert!(encryptor.failed());
}

proptest::proptest! {
    /// However the upstream cuts its stream (events split mid-line, several per chunk, CRLF
    /// or LF), every event comes out sealed exactly once and opens to its own content.
    #[test]
    fn a_stream_cut_anywhere_is_sealed_event_by_event(
        cuts in proptest::collection::vec(0usize..400, 0..8),
        crlf in proptest::bool::ANY,
        words in proptest::collection::vec("[a-z ]{0,12}", 1..6),
    ) {
        let (client, sealer) = sealer_for(Suite::X25519, "/v1/chat/completions");
        let end = if crlf { "\r\n" } else { "\n" };
        let mut stream = String::new();
        for word in &words {
            let event = json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": word}}]});
            stream.push_str(&format!("data: {event}{end}{end}"));
        }
        stream.push_str(&format!("data: [DONE]{end}{end}"));
        let bytes = stream.as_bytes();
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut encryptor = ResponseEncryptor::new(sealer, true);
        let mut out = Vec::new();
        let mut from = 0;
        for point in points {
            out.extend(encryptor.push(&bytes[from..point]));
            from = point;
        }
        out.extend(encryptor.push(&bytes[from..]));
        out.extend(encryptor.finish());
        proptest::prop_assert!(!encryptor.failed());
        let text = String::from_utf8(out).unwrap();
        let mut opened = Vec::new();
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data: ") else { continue };
            if data == "[DONE]" { continue; }
            let event: Value = serde_json::from_str(data).unwrap();
            let sealed = event["choices"][0]["delta"]["content"].as_str().unwrap();
            opened.push(client.decrypt("m", "c1", "choices.0.delta.content", sealed));
        }
        proptest::prop_assert_eq!(opened, words);
        proptest::prop_assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
