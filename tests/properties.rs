//! Property tests of the byte-level core: the id scanner and response capture give the same
//! answer however a stream is cut into chunks, and the signature store keeps its bound and
//! never serves an expired record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use signet_core::ids::CompletionId;
use signet_core::signing::Signer;
use signet_core::sse::{IdSearch, SseIdScanner};
use signet_core::store::{Clock, ManualClock, SignatureStore, StoredSignature};
use signet_core::transcript::{BodyKind, ResponseCapture, ScanLimits};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Line ends the SSE specification allows.
fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
}

fn id_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,64}"
}

/// One SSE line that carries no id: a comment, another field, or non-JSON data.
fn noise_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(|t| format!(":{t}")),
        "[a-z]{1,8}".prop_map(|v| format!("event: {v}")),
        "[0-9]{1,6}".prop_map(|v| format!("retry:{v}")),
        "[a-z ]{0,20}".prop_map(|v| format!("data: not json {v}")),
    ]
}

/// A valid event stream whose first JSON data event carries `id`, written with a mix of
/// line ends, `data:` with or without a space, split data lines, comments and padding.
fn valid_stream() -> impl Strategy<Value = (Vec<u8>, String)> {
    (
        any::<bool>(),
        prop::collection::vec((noise_line(), line_end()), 0..6),
        id_text(),
        any::<bool>(),
        any::<bool>(),
        line_end(),
        prop::collection::vec("[ -~]{0,200}", 0..8),
    )
        .prop_map(|(bom, noise, id, space, split_data, end, later)| {
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice(b"\xEF\xBB\xBF");
            }
            for (line, end) in &noise {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(end.as_bytes());
                // A blank line ends each noise event.
                out.extend_from_slice(end.as_bytes());
            }
            let sep = if space { "data: " } else { "data:" };
            let object =
                format!(r#"{{"id":"{id}","object":"chat.completion.chunk","choices":[]}}"#);
            if split_data {
                // The JSON spread over two data lines (joined with LF by the parser).
                // Cut between two members, so the LF lands where JSON allows whitespace.
                let comma = object.find(',').unwrap() + 1;
                let (a, b) = object.split_at(comma);
                out.extend_from_slice(format!("{sep}{a}{end}{sep}{b}{end}{end}").as_bytes());
            } else {
                out.extend_from_slice(format!("{sep}{object}{end}{end}").as_bytes());
            }
            for text in later {
                out.extend_from_slice(format!("data: {text}\n\n").as_bytes());
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
            (out, id)
        })
}

/// Cuts `bytes` at the given points (taken modulo the length), in order.
fn cut(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut offsets: Vec<usize> = points
        .iter()
        .map(|p| {
            if bytes.is_empty() {
                0
            } else {
                p % (bytes.len() + 1)
            }
        })
        .collect();
    offsets.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for offset in offsets {
        pieces.push(bytes[at..offset].to_vec());
        at = offset;
    }
    pieces.push(bytes[at..].to_vec());
    pieces
}

fn scan(pieces: &[Vec<u8>], limit: usize) -> IdSearch {
    let mut scanner = SseIdScanner::new(limit);
    for piece in pieces {
        scanner.feed(piece);
    }
    scanner.finish()
}

fn capture(pieces: &[Vec<u8>], kind: BodyKind, limit: usize) -> (Option<String>, [u8; 32]) {
    let mut capture = ResponseCapture::new(
        kind,
        ScanLimits {
            event_stream: limit,
            json_body: limit,
        },
    );
    for piece in pieces {
        capture.push(piece);
    }
    match capture.finish([0u8; 32]) {
        Ok(done) => (Some(done.id.to_string()), done.response_sha256),
        Err(_) => (None, [0u8; 32]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_split_of_a_valid_stream_finds_its_id_and_hash(
        (stream, id) in valid_stream(),
        points in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let pieces = cut(&stream, &points);
        prop_assert_eq!(pieces.concat(), stream.clone());
        prop_assert_eq!(
            scan(&pieces, 1 << 20),
            IdSearch::Found(CompletionId::parse(&id).unwrap())
        );
        let (found, hash) = capture(&pieces, BodyKind::EventStream, 1 << 20);
        prop_assert_eq!(found.as_deref(), Some(id.as_str()));
        let whole: [u8; 32] = Sha256::digest(&stream).into();
        prop_assert_eq!(hash, whole);
    }

    #[test]
    fn any_split_of_any_bytes_gives_the_same_answer_as_the_whole(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        points in prop::collection::vec(any::<usize>(), 0..24),
        limit in 0usize..700,
    ) {
        let pieces = cut(&bytes, &points);
        let whole = vec![bytes.clone()];
        prop_assert_eq!(scan(&pieces, limit), scan(&whole, limit));
        prop_assert_eq!(
            capture(&pieces, BodyKind::Json, limit),
            capture(&whole, BodyKind::Json, limit)
        );
    }

    #[test]
    fn the_scan_limit_counts_stream_bytes_not_chunks(
        (stream, _id) in valid_stream(),
        points in prop::collection::vec(any::<usize>(), 0..24),
        limit_at in any::<usize>(),
    ) {
        // Whatever the limit (before, inside or after the id's event), the outcome is the
        // one for the whole stream delivered at once.
        let limit = limit_at % (stream.len() + 16);
        let pieces = cut(&stream, &points);
        prop_assert_eq!(scan(&pieces, limit), scan(std::slice::from_ref(&stream), limit));
        prop_assert_eq!(
            capture(&pieces, BodyKind::EventStream, limit),
            capture(std::slice::from_ref(&stream), BodyKind::EventStream, limit)
        );
    }
}

#[derive(Debug, Clone)]
enum StoreOp {
    Insert(u8),
    Get(u8),
    Advance(u64),
    Sweep,
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        4 => any::<u8>().prop_map(|k| StoreOp::Insert(k % 40)),
        4 => any::<u8>().prop_map(|k| StoreOp::Get(k % 40)),
        2 => (0u64..2_000).prop_map(StoreOp::Advance),
        1 => Just(StoreOp::Sweep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_store_keeps_its_bound_and_never_serves_an_expired_record(
        ops in prop::collection::vec(store_op(), 1..400),
        max_entries in 1usize..24,
        ttl_ms in 1u64..5_000,
    ) {
        let clock = Arc::new(ManualClock::default());
        let store = SignatureStore::new(Duration::from_millis(ttl_ms), max_entries, clock.clone());
        let signature = Signer::generate().sign_message(b"record").unwrap();
        // The model: each id's live insertion time, in insertion order; a live record is
        // never replaced.
        let mut inserted_at: HashMap<u8, (u64, usize, [u8; 32])> = HashMap::new();
        let mut insertions = 0usize;
        for op in ops {
            match op {
                StoreOp::Insert(k) => {
                    let id = CompletionId::parse(&format!("chatcmpl-{k}")).unwrap();
                    let request_sha256: [u8; 32] = Sha256::digest([k, insertions as u8]).into();
                    let now = clock.now().as_millis() as u64;
                    let live = inserted_at.get(&k).is_some_and(|&(at, nth, _)| {
                        now < at + ttl_ms && insertions - nth <= max_entries
                    });
                    // The store keeps records as given; one signature serves them all.
                    let stored = store.insert(&id, StoredSignature {
                        request_sha256,
                        response_sha256: [0u8; 32],
                        signature,
                    });
                    if live {
                        prop_assert!(stored.is_err(), "a live record was replaced");
                    } else {
                        prop_assert!(stored.is_ok(), "a free id was refused");
                        inserted_at.insert(k, (now, insertions, request_sha256));
                        insertions += 1;
                    }
                }
                StoreOp::Get(k) => {
                    let now = clock.now().as_millis() as u64;
                    let got = store.get(&format!("chatcmpl-{k}"));
                    match inserted_at.get(&k) {
                        None => prop_assert!(got.is_none()),
                        Some(&(at, nth, digest)) => {
                            let expired = now >= at + ttl_ms;
                            // Records are evicted oldest first once `max_entries` are held.
                            let evicted = insertions - nth > max_entries;
                            if expired || evicted {
                                prop_assert!(got.is_none(), "served a record past its life");
                            } else {
                                let got = got.expect("a live record is served");
                                prop_assert_eq!(got.request_sha256, digest);
                            }
                        }
                    }
                }
                StoreOp::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                StoreOp::Sweep => {
                    store.sweep();
                }
            }
            prop_assert!(store.len() <= max_entries, "{} > {max_entries}", store.len());
        }
    }
}
