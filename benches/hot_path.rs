//! The per-response hot path, without the network: scanning and hashing a 200-event stream
//! as it passes (per chunk and per stream), and signing plus storing at its end; with E2EE,
//! the cost of encrypting each event to the client and of decrypting a request.
//!
//! `cargo bench --bench hot_path`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use signet::notary::Notary;
use signet_core::e2ee::crypto::{self, PublicKey, SecretKey, Suite};
use signet_core::e2ee::fields::ResponseSealer;
use signet_core::e2ee::stream::ResponseEncryptor;
use signet_core::e2ee::{E2eeService, Negotiated, RequestHeaders, request_aad};
use signet_core::ids::CompletionId;
use signet_core::signing::Signer;
use signet_core::store::{MonotonicClock, SignatureStore};
use signet_core::transcript::{BodyKind, CompletedExchange, ResponseCapture, ScanLimits};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const LIMITS: ScanLimits = ScanLimits {
    event_stream: 64 << 10,
    json_body: 8 << 20,
};

/// A vLLM-shaped stream: one event per chunk, as vLLM flushes them.
fn vllm_chunks(events: usize) -> Vec<Vec<u8>> {
    let id = "chatcmpl-7ee2a39468ce48d7b2284783f21782b0";
    let mut chunks = vec![format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1732700000,\"model\":\"meta-llama/Llama-3.3-70B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    )
    .into_bytes()];
    for i in 0..events {
        chunks.push(
            format!(
                "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1732700000,\"model\":\"meta-llama/Llama-3.3-70B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
            )
            .into_bytes(),
        );
    }
    chunks.push(b"data: [DONE]\n\n".to_vec());
    chunks
}

fn scan_and_hash(c: &mut Criterion) {
    let chunks = vllm_chunks(200);
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("scan_and_hash");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("stream_of_200_events", |b| {
        b.iter(|| {
            let mut capture = ResponseCapture::new(BodyKind::EventStream, LIMITS);
            for chunk in &chunks {
                capture.push(black_box(chunk));
            }
            black_box(capture.finish([0u8; 32]).unwrap())
        })
    });
    group.finish();

    // One chunk once the id is known: what every later token costs.
    let mut group = c.benchmark_group("scan_and_hash");
    let later = &chunks[5];
    group.throughput(Throughput::Bytes(later.len() as u64));
    group.bench_function("one_chunk_after_the_id", |b| {
        let mut capture = ResponseCapture::new(BodyKind::EventStream, LIMITS);
        capture.push(&chunks[0]);
        b.iter(|| capture.push(black_box(later)))
    });
    group.finish();
}

fn sign_and_store(c: &mut Criterion) {
    let store = SignatureStore::new(
        Duration::from_secs(300),
        100_000,
        Arc::new(MonotonicClock::default()),
    );
    let notary = Notary::new(Signer::generate(), store);
    let mut n = 0u64;
    c.bench_function("sign_and_store_one_response", |b| {
        b.iter_batched(
            || {
                n += 1;
                CompletedExchange {
                    id: CompletionId::parse(&format!("chatcmpl-bench-{n}")).unwrap(),
                    request_sha256: [7u8; 32],
                    response_sha256: n.to_le_bytes().repeat(4).try_into().unwrap(),
                }
            },
            |exchange| black_box(notary.seal(&exchange).unwrap()),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("lookup_one_signature", |b| {
        let id = CompletionId::parse("chatcmpl-lookup").unwrap();
        let exchange = CompletedExchange {
            id: id.clone(),
            request_sha256: [1u8; 32],
            response_sha256: [2u8; 32],
        };
        notary.seal(&exchange).unwrap();
        assert!(notary.receipt(&id).is_some());
        b.iter(|| black_box(notary.receipt(black_box(&id))))
    });
}

/// An E2EE v2 session as a client of `suite` would open it, and that client's request body.
fn e2ee_session(suite: Suite) -> (E2eeService, Negotiated, Vec<u8>) {
    let service = E2eeService::generate(1 << 20);
    let entry = service
        .keyset_entries()
        .into_iter()
        .find(|e| e.algo == suite.algo())
        .unwrap();
    let model_key = PublicKey::parse(suite, &entry.public_key).unwrap();
    let client = SecretKey::generate(suite).public_key().to_hex();
    let nonce = "ab".repeat(32);
    let now = 1_750_000_000u64;
    let headers = RequestHeaders {
        version: Some(b"2"),
        client_pub_key: Some(client.as_bytes()),
        model_pub_key: Some(entry.public_key.as_bytes()),
        nonce: Some(nonce.as_bytes()),
        timestamp: Some(now.to_string().into_bytes().leak()),
        signing_algo: None,
        encryption_version: None,
    };
    let negotiated = service
        .check_request(&headers, "/v1/chat/completions", now)
        .unwrap()
        .unwrap();
    let prompt = "Summarise the following text in three sentences. ".repeat(20);
    let aad = request_aad(suite.algo(), "m", "messages.0.content", &nonce, now);
    let field = crypto::seal(&model_key, prompt.as_bytes(), &aad);
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "m", "stream": true,
        "messages": [{"role": "user", "content": field}]
    }))
    .unwrap();
    (service, negotiated, body)
}

fn e2ee(c: &mut Criterion) {
    let chunks = vllm_chunks(200);
    for suite in [Suite::X25519, Suite::Secp256k1] {
        let (service, negotiated, body) = e2ee_session(suite);
        let name = format!("{suite:?}").to_lowercase();
        let mut group = c.benchmark_group("e2ee");
        group.bench_function(format!("encrypt_one_stream_event_{name}"), |b| {
            let sealer = ResponseSealer::new(negotiated.clone(), "m".to_owned());
            let mut encryptor = ResponseEncryptor::new(sealer, true);
            b.iter(|| black_box(encryptor.push(black_box(&chunks[1]))));
        });
        group.bench_function(format!("decrypt_one_request_field_{name}"), |b| {
            // Each decryption spends nothing: the replay check is at the head, not here.
            b.iter(|| {
                black_box(
                    service
                        .restore_request(&negotiated, black_box(&body))
                        .unwrap(),
                )
            });
        });
        group.finish();
    }
}

criterion_group!(benches, scan_and_hash, sign_and_store, e2ee);
criterion_main!(benches);
