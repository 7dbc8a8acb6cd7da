//! The receipt store: signed receipts kept for the signature store's TTL, at most as many
//! as it keeps, looked up by receipt id (`X-Receipt-Id`) or by the response's `id`.
//!
//! Compact by design, since it holds as many receipts as the signature store holds
//! signatures (up to millions): a record keeps only what differs per request (the 16-byte
//! receipt id, the response id and model, the hashes, the time and the
//! credential digest); what every receipt of the process shares (the keyset digest, the key
//! id) is filled in when the document is rebuilt ([`StoredReceipt::body`]), which gives back
//! exactly the document that was signed.
//!
//! One ring in insertion order (which is also expiry order: every receipt gets the same
//! TTL) and two indexes to the record's sequence number: by receipt id, and by a keyed hash
//! of the response id (a lookup compares the full id in the record, so a collision can only
//! hide an older receipt, never serve a wrong one). All under one lock: a receipt is written
//! once per completed exchange and read at most a few times. Expired receipts are never
//! served, swept or not. A receipt taken back (its response never reached the client) leaves
//! both indexes at once.
//!
//! Each record carries the digest of the credential that made the request (ACI §7.6); the
//! comparison is the caller's, in constant time.

use super::ReceiptBody;
use crate::store::Clock;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A receipt id: 16 random bytes, written `rcpt-<32 lowercase hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiptId(pub [u8; 16]);

impl ReceiptId {
    const PREFIX: &'static str = "rcpt-";

    /// Draws one from the operating system's RNG.
    pub fn random() -> Self {
        use rand_core::{OsRng, RngCore};
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses `rcpt-<32 lowercase hex>`; anything else is not a receipt id.
    pub fn parse(text: &str) -> Option<Self> {
        let hex_part = text.strip_prefix(Self::PREFIX)?;
        if hex_part.len() != 32
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(hex_part, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl std::fmt::Display for ReceiptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

/// What is kept for one receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// Its id.
    pub receipt_id: ReceiptId,
    /// The response's `id`, when it has one.
    pub chat_id: Option<Box<str>>,
    /// The model the client asked for.
    pub model: Option<Box<str>>,
    /// The request path.
    pub endpoint: Box<str>,
    /// Unix time of signing.
    pub served_at: u64,
    /// sha256 of the request body as received.
    pub request_received: [u8; 32],
    /// sha256 of the bytes forwarded upstream, when forwarded.
    pub request_forwarded: Option<[u8; 32]>,
    /// sha256 of the response body bytes emitted.
    pub response_returned: [u8; 32],
    /// sha256 of the credential that made the request, if it carried one.
    pub credential: Option<[u8; 32]>,
}

impl StoredReceipt {
    /// The receipt's content, with what every receipt of the process shares: the keyset
    /// digest and the receipt key's id. The method is always `POST` (signed routes).
    pub fn body(&self, workload_keyset_digest: &Arc<str>, key_id: &'static str) -> ReceiptBody {
        ReceiptBody {
            receipt_id: self.receipt_id.to_string(),
            chat_id: self.chat_id.as_deref().map(str::to_owned),
            model: self.model.as_deref().map(str::to_owned),
            workload_keyset_digest: workload_keyset_digest.to_string(),
            endpoint: self.endpoint.to_string(),
            method: "POST".to_owned(),
            served_at: self.served_at,
            request_received: self.request_received,
            request_forwarded: self.request_forwarded,
            response_returned: self.response_returned,
            key_id: key_id.to_owned(),
        }
    }
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
    receipt: StoredReceipt,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    ring: VecDeque<Entry>,
    by_receipt: HashMap<ReceiptId, u64>,
    /// Keyed hash of the response id → sequence number.
    by_chat: HashMap<u64, u64>,
}

impl Inner {
    fn entry(&self, seq: u64) -> Option<&Entry> {
        let first = self.ring.front()?.seq;
        let position = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.ring.get(position).filter(|e| e.seq == seq)
    }
}

/// Bounded, expiring receipts. See the module docs.
pub struct ReceiptStore {
    inner: Mutex<Inner>,
    chat_hasher: RandomState,
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
            chat_hasher: RandomState::new(),
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

    fn chat_key(&self, chat_id: &str) -> u64 {
        self.chat_hasher.hash_one(chat_id)
    }

    /// Drops the indexes that still point at record `seq`; whether the receipt id did.
    fn unindex(&self, inner: &mut Inner, receipt: &StoredReceipt, seq: u64) -> bool {
        let indexed = inner.by_receipt.get(&receipt.receipt_id) == Some(&seq);
        if indexed {
            inner.by_receipt.remove(&receipt.receipt_id);
        }
        if let Some(chat) = &receipt.chat_id {
            let key = self.chat_key(chat);
            if inner.by_chat.get(&key) == Some(&seq) {
                inner.by_chat.remove(&key);
            }
        }
        indexed
    }

    fn pop_front(&self, inner: &mut Inner) {
        if let Some(entry) = inner.ring.pop_front() {
            self.unindex(inner, &entry.receipt, entry.seq);
        }
    }

    fn expire(&self, inner: &mut Inner, now: u64) -> u64 {
        let mut removed = 0;
        while inner.ring.front().is_some_and(|e| e.expires_at_ms <= now) {
            self.pop_front(inner);
            removed += 1;
        }
        removed
    }

    /// Files a receipt. The response id indexes it only while no live receipt holds that
    /// id (the first one stays, as for signatures).
    pub fn insert(&self, receipt: StoredReceipt) -> ReceiptTicket {
        let now = self.now_ms();
        let chat_key = receipt.chat_id.as_deref().map(|chat| self.chat_key(chat));
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        while inner.ring.len() >= self.max_entries {
            self.pop_front(&mut inner);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.by_receipt.insert(receipt.receipt_id, seq);
        if let Some(key) = chat_key {
            let live = inner.by_chat.get(&key).copied().and_then(|held| {
                inner
                    .entry(held)
                    .filter(|e| e.receipt.chat_id == receipt.chat_id)
                    .map(|_| held)
            });
            if live.is_none() {
                inner.by_chat.insert(key, seq);
            }
        }
        inner.ring.push_back(Entry {
            seq,
            expires_at_ms: now.saturating_add(self.ttl_ms),
            receipt,
        });
        ReceiptTicket { seq }
    }

    /// The live receipt whose receipt id, or else whose response id, is `id`.
    pub fn get(&self, id: &str) -> Option<StoredReceipt> {
        let now = self.now_ms();
        let chat_key = self.chat_key(id);
        let inner = self.lock();
        let by_receipt = ReceiptId::parse(id)
            .and_then(|rid| inner.by_receipt.get(&rid).copied())
            .and_then(|seq| inner.entry(seq));
        let entry = by_receipt.or_else(|| {
            inner
                .by_chat
                .get(&chat_key)
                .and_then(|&seq| inner.entry(seq))
                .filter(|e| e.receipt.chat_id.as_deref() == Some(id))
        })?;
        (entry.expires_at_ms > now).then(|| entry.receipt.clone())
    }

    /// Takes a receipt back: its response did not reach the client. The record leaves both
    /// indexes at once; its place in the ring goes when it would have expired. The receipt
    /// taken back, if it was still there.
    pub fn retract(&self, ticket: ReceiptTicket) -> Option<StoredReceipt> {
        let mut inner = self.lock();
        let receipt = inner.entry(ticket.seq).map(|e| e.receipt.clone())?;
        self.unindex(&mut inner, &receipt, ticket.seq)
            .then_some(receipt)
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

    fn receipt(n: u8, chat: Option<&str>) -> StoredReceipt {
        StoredReceipt {
            receipt_id: ReceiptId([n; 16]),
            chat_id: chat.map(Into::into),
            model: None,
            endpoint: "/v1/chat/completions".into(),
            served_at: 1,
            request_received: [1; 32],
            request_forwarded: Some([1; 32]),
            response_returned: [2; 32],
            credential: None,
        }
    }

    fn id(n: u8) -> String {
        ReceiptId([n; 16]).to_string()
    }

    fn new_store(ttl: u64, max: usize) -> (ReceiptStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (
            ReceiptStore::new(Duration::from_secs(ttl), max, clock.clone()),
            clock,
        )
    }

    #[test]
    fn receipt_ids_are_rcpt_and_32_lowercase_hex() {
        let drawn = ReceiptId::random();
        let text = drawn.to_string();
        assert!(text.starts_with("rcpt-") && text.len() == 37, "{text}");
        assert_eq!(ReceiptId::parse(&text), Some(drawn));
        assert_ne!(ReceiptId::random(), drawn);
        for bad in [
            "rcpt-",
            "rcpt-00",
            &text.to_uppercase(),
            &text.replace("rcpt-", "rcpt_"),
            &format!("{text}0"),
            "chatcmpl-1",
        ] {
            assert_eq!(ReceiptId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn receipts_are_found_by_receipt_id_or_response_id_until_they_expire() {
        let (store, clock) = new_store(300, 10);
        store.insert(receipt(1, Some("chat-a")));
        assert_eq!(store.get(&id(1)).unwrap().receipt_id, ReceiptId([1; 16]));
        assert_eq!(store.get("chat-a").unwrap().receipt_id, ReceiptId([1; 16]));
        assert!(store.get("chat-b").is_none());
        assert!(store.get(&id(2)).is_none());
        clock.advance(Duration::from_secs(299));
        assert!(store.get(&id(1)).is_some());
        clock.advance(Duration::from_secs(1));
        assert!(store.get(&id(1)).is_none(), "never served once expired");
        assert!(store.get("chat-a").is_none());
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn the_store_keeps_its_bound_and_the_first_response_id() {
        let (store, _clock) = new_store(300, 3);
        for n in 0..5 {
            store.insert(receipt(n, Some("chat-same")));
        }
        assert_eq!(store.len(), 3);
        assert!(store.get(&id(0)).is_none() && store.get(&id(1)).is_none());
        assert!(store.get(&id(4)).is_some());
        let (store, _clock) = new_store(300, 3);
        store.insert(receipt(0, Some("chat-same")));
        store.insert(receipt(1, Some("chat-same")));
        assert_eq!(
            store.get("chat-same").unwrap().receipt_id,
            ReceiptId([0; 16])
        );
    }

    #[test]
    fn a_retracted_receipt_is_gone_by_either_id() {
        let (store, _clock) = new_store(300, 10);
        let first = store.insert(receipt(1, Some("chat-a")));
        store.insert(receipt(2, Some("chat-b")));
        assert_eq!(
            store.retract(first).map(|r| r.receipt_id),
            Some(ReceiptId([1; 16]))
        );
        assert!(store.get(&id(1)).is_none());
        assert!(store.get("chat-a").is_none());
        assert!(store.get(&id(2)).is_some());
        assert!(store.retract(first).is_none(), "only once");
    }

    #[test]
    fn a_record_stays_small() {
        // Up to millions are kept: what every receipt shares is not stored per receipt.
        assert!(
            std::mem::size_of::<Entry>() <= 304,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn the_rebuilt_body_is_the_receipt() {
        let stored = StoredReceipt {
            model: Some("m".into()),
            ..receipt(7, Some("chat-7"))
        };
        let digest: Arc<str> = Arc::from("sha256:00");
        let body = stored.body(&digest, "receipt-1");
        assert_eq!(body.receipt_id, id(7));
        assert_eq!(body.chat_id.as_deref(), Some("chat-7"));
        assert_eq!(body.model.as_deref(), Some("m"));
        assert_eq!(body.workload_keyset_digest, "sha256:00");
        assert_eq!(
            (body.method.as_str(), body.key_id.as_str()),
            ("POST", "receipt-1")
        );
        assert_eq!(body.response_returned, [2; 32]);
    }
}
