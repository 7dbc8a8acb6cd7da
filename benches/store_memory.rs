//! Memory per stored signature: fills a store with 1,000,000 records (ids shaped like
//! vLLM's) and reports the growth of this process's resident memory per record.
//!
//! `cargo bench --bench store_memory` (prints one JSON line; target ≤ 256 bytes/record)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use signet_core::ids::CompletionId;
use signet_core::signing::Signer;
use signet_core::store::{MonotonicClock, SignatureStore, StoredSignature};
use std::sync::Arc;
use std::time::Duration;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

fn main() {
    // `cargo bench` passes `--bench`; any other run (e.g. `cargo test --benches`) skips it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    const RECORDS: usize = 1_000_000;
    let signature = Signer::generate().sign_message(b"record").unwrap();
    let ids: Vec<CompletionId> = (0..RECORDS)
        .map(|n| CompletionId::parse(&format!("chatcmpl-{n:032x}")).unwrap())
        .collect();
    let before = rss_bytes();
    let store = SignatureStore::new(
        Duration::from_secs(3600),
        RECORDS,
        Arc::new(MonotonicClock::default()),
    );
    for (n, id) in ids.iter().enumerate() {
        let mut request_sha256 = [0u8; 32];
        request_sha256[..8].copy_from_slice(&(n as u64).to_le_bytes());
        store
            .insert(
                id,
                StoredSignature {
                    request_sha256,
                    response_sha256: [1u8; 32],
                    signature,
                },
            )
            .unwrap();
    }
    let after = rss_bytes();
    assert_eq!(store.len(), RECORDS);
    let per_record = (after - before) as f64 / RECORDS as f64;
    println!(
        "{{\"records\":{RECORDS},\"id_bytes\":{},\"rss_growth_bytes\":{},\"bytes_per_record\":{per_record:.1}}}",
        ids[0].as_str().len(),
        after - before
    );
}
