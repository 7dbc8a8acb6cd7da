//! The receipt store: signed receipts kept for the signature store's TTL, at most as many
//! as it keeps, looked up by receipt id (`X-Receipt-Id`) or by the response's `id`.
//!
//! One ring in insertion order (which is also expiry order: every receipt gets the same
//! TTL) and two indexes from id to the record's sequence number, all under one lock: a
//! receipt is written once per completed exchange and read at most a few times, so a plain
//! mutex is enough. Expired receipts are never served, swept or not. A receipt taken back
//! (its response never reached the client) is gone from both indexes at once.
//!
//! Each record carries the digest of the credential that made the request (ACI §7.6); the
//! comparison is the caller's, in constant time.

use super::ReceiptBody;
use crate::store::Clock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What is kept for one receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// The signed content.
    pub body: ReceiptBody,
    /// Ed25519 over the JCS form of `body`'s document.
    pub signature: [u8; 64],
    /// sha256 of the credential that made the request, if it carried one.
    pub credential: Option<[u8; 32]>,
}

/// Proof of one insertion, to take it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptTicket {
    seq: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    expires_at_ms: u64,
    receipt: Arc<StoredReceipt>,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    ring: VecDeque<Entry>,
    by_receipt: HashMap<String, u64>,
    by_chat: HashMap<String, u64>,
}

impl Inner {
    fn entry(&self, seq: u64) -> Option<&Entry> {
        let first = self.ring.front()?.seq;
        let position = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.ring.get(position).filter(|e| e.seq == seq)
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.ring.pop_front() {
            self.unindex(&entry.receipt.body, entry.seq);
        }
    }

    /// Drops the indexes that still point at record `seq`; whether the receipt id did.
    fn unindex(&mut self, body: &ReceiptBody, seq: u64) -> bool {
        let indexed = self.by_receipt.get(&body.receipt_id) == Some(&seq);
        if indexed {
            self.by_receipt.remove(&body.receipt_id);
        }
        if let Some(chat) = &body.chat_id
            && self.by_chat.get(chat) == Some(&seq)
        {
            self.by_chat.remove(chat);
        }
        indexed
    }
}

/// Bounded, expiring receipts. See the module docs.
pub struct ReceiptStore {
    inner: Mutex<Inner>,
    ttl_ms: u64,
    max_entries: usize,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ReceiptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptStore")
            .field("ttl_ms", &self.ttl_ms)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl ReceiptStore {
    /// A store keeping each receipt for `ttl`, at most `max_entries` (at least one).
    pub fn new(ttl: Duration, max_entries: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            max_entries: max_entries.max(1),
            clock,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire(&self, inner: &mut Inner, now: u64) -> u64 {
        let mut removed = 0;
        while inner.ring.front().is_some_and(|e| e.expires_at_ms <= now) {
            inner.pop_front();
            removed += 1;
        }
        removed
    }

    /// Files a receipt. The response id indexes it only while no live receipt holds that
    /// id (the first one stays, as for signatures).
    pub fn insert(&self, receipt: StoredReceipt) -> ReceiptTicket {
        let now = self.now_ms();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        while inner.ring.len() >= self.max_entries {
            inner.pop_front();
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner
            .by_receipt
            .insert(receipt.body.receipt_id.clone(), seq);
        if let Some(chat) = &receipt.body.chat_id {
            inner.by_chat.entry(chat.clone()).or_insert(seq);
        }
        inner.ring.push_back(Entry {
            seq,
            expires_at_ms: now.saturating_add(self.ttl_ms),
            receipt: Arc::new(receipt),
        });
        ReceiptTicket { seq }
    }

    /// The live receipt whose receipt id, or else whose response id, is `id`.
    pub fn get(&self, id: &str) -> Option<Arc<StoredReceipt>> {
        let now = self.now_ms();
        let inner = self.lock();
        let seq = inner
            .by_receipt
            .get(id)
            .or_else(|| inner.by_chat.get(id))
            .copied()?;
        inner
            .entry(seq)
            .filter(|e| e.expires_at_ms > now)
            .map(|e| e.receipt.clone())
    }

    /// Takes a receipt back: its response did not reach the client. The record leaves both
    /// indexes at once; its place in the ring goes when it would have expired.
    pub fn retract(&self, ticket: ReceiptTicket) -> bool {
        let mut inner = self.lock();
        let Some(receipt) = inner.entry(ticket.seq).map(|e| e.receipt.clone()) else {
            return false;
        };
        inner.unindex(&receipt.body, ticket.seq)
    }

    /// Removes expired receipts; returns how many went.
    pub fn sweep(&self) -> u64 {
        let now = self.now_ms();
        let mut inner = self.lock();
        self.expire(&mut inner, now)
    }

    /// Receipts that can be looked up (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.lock().by_receipt.len()
    }

    /// Whether none can be looked up.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ManualClock;

    fn receipt(id: &str, chat: Option<&str>) -> StoredReceipt {
        StoredReceipt {
            body: ReceiptBody {
                receipt_id: id.to_owned(),
                chat_id: chat.map(str::to_owned),
                model: None,
                workload_keyset_digest: "sha256:00".to_owned(),
                endpoint: "/v1/chat/completions".to_owned(),
                method: "POST".to_owned(),
                served_at: 1,
                request_received: [1; 32],
                request_forwarded: Some([1; 32]),
                response_returned: [2; 32],
                key_id: "receipt-1".to_owned(),
            },
            signature: [3; 64],
            credential: None,
        }
    }

    fn new_store(ttl: u64, max: usize) -> (ReceiptStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (
            ReceiptStore::new(Duration::from_secs(ttl), max, clock.clone()),
            clock,
        )
    }

    #[test]
    fn receipts_are_found_by_receipt_id_or_response_id_until_they_expire() {
        let (store, clock) = new_store(300, 10);
        store.insert(receipt("rcpt-a", Some("chat-a")));
        assert_eq!(store.get("rcpt-a").unwrap().body.receipt_id, "rcpt-a");
        assert_eq!(store.get("chat-a").unwrap().body.receipt_id, "rcpt-a");
        assert!(store.get("chat-b").is_none());
        clock.advance(Duration::from_secs(299));
        assert!(store.get("rcpt-a").is_some());
        clock.advance(Duration::from_secs(1));
        assert!(store.get("rcpt-a").is_none(), "never served once expired");
        assert!(store.get("chat-a").is_none());
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn the_store_keeps_its_bound_and_the_first_response_id() {
        let (store, _clock) = new_store(300, 3);
        for i in 0..5 {
            store.insert(receipt(&format!("rcpt-{i}"), Some("chat-same")));
        }
        assert_eq!(store.len(), 3);
        assert!(store.get("rcpt-0").is_none() && store.get("rcpt-1").is_none());
        assert!(store.get("rcpt-4").is_some());
        let (store, _clock) = new_store(300, 3);
        store.insert(receipt("rcpt-0", Some("chat-same")));
        store.insert(receipt("rcpt-1", Some("chat-same")));
        assert_eq!(store.get("chat-same").unwrap().body.receipt_id, "rcpt-0");
    }

    #[test]
    fn a_retracted_receipt_is_gone_by_either_id() {
        let (store, _clock) = new_store(300, 10);
        let first = store.insert(receipt("rcpt-a", Some("chat-a")));
        store.insert(receipt("rcpt-b", Some("chat-b")));
        assert!(store.retract(first));
        assert!(store.get("rcpt-a").is_none());
        assert!(store.get("chat-a").is_none());
        assert!(store.get("rcpt-b").is_some());
        assert!(!store.retract(first), "only once");
    }
}
