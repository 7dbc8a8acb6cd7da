//! The signature store: signatures kept for a fixed time after their response completed,
//! looked up by completion id, bounded in count (the oldest go first).
//!
//! Layout, chosen for memory (docs/BENCHMARKS target: ≤ 256 bytes per entry at a million
//! entries): records live in one ring in insertion order, which is also expiry order since
//! every record gets the same TTL. A [`DashMap`] indexes them from a keyed 64-bit hash of
//! the id to the record's sequence number, so the hash table holds only 16-byte slots and
//! its growth slack stays small. Lookups compare the full id stored in the record, so a hash
//! collision can at worst hide an older record (served as unknown), never return a wrong one.
//!
//! Time comes from an injected [`Clock`], so tests move time without sleeping. Expired
//! records are never served, whether or not the sweeper has run yet.

use crate::ids::CompletionId;
use crate::signing::RecoverableSignature;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A monotonic source of time, injectable for tests.
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since this clock's own epoch.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct MonotonicClock {
    epoch: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms.load(Ordering::SeqCst))
    }
}

/// What is kept for one signed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSignature {
    /// sha256 of the request body.
    pub request_sha256: [u8; 32],
    /// sha256 of the response body.
    pub response_sha256: [u8; 32],
    /// EIP-191 signature over the text built from the two digests.
    pub signature: RecoverableSignature,
}

/// Why a record was not stored: a live record for the same id is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a signature for this id is already stored")]
pub struct Occupied;

/// Proof of one insertion, used to take it back if the response did not reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    key: u64,
    seq: u64,
}

/// Counts of records removed, by cause.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Removed because their TTL ran out.
    pub expired: u64,
    /// Removed to make room under `max_entries`.
    pub evicted: u64,
}

const INLINE_ID: usize = 46;

/// An id stored without a heap allocation when it is short (typical ids are ~41 bytes).
#[derive(Debug)]
enum CompactId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Boxed(Box<str>),
}

impl CompactId {
    fn new(id: &str) -> Self {
        let raw = id.as_bytes();
        match u8::try_from(raw.len()) {
            Ok(len) if raw.len() <= INLINE_ID => {
                let mut bytes = [0u8; INLINE_ID];
                bytes[..raw.len()].copy_from_slice(raw);
                CompactId::Inline { len, bytes }
            }
            _ => CompactId::Boxed(id.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            CompactId::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            CompactId::Boxed(text) => text.as_bytes(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: CompactId,
    record: StoredSignature,
    expires_at_ms: u64,
}

#[derive(Debug)]
struct Ring {
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    entries: VecDeque<Entry>,
}

/// The keys are already uniformly distributed keyed hashes; hashing them again is waste.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Bounded, expiring map from completion id to signature. See the module docs.
pub struct SignatureStore {
    index: DashMap<u64, u64, BuildHasherDefault<PassThroughHasher>>,
    ring: Mutex<Ring>,
    id_hasher: RandomState,
    ttl_ms: u64,
    max_entries: usize,
    clock: Arc<dyn Clock>,
    removed_expired: AtomicU64,
    removed_evicted: AtomicU64,
}

impl std::fmt::Debug for SignatureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureStore")
            .field("ttl_ms", &self.ttl_ms)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

/// Records are preallocated up to this many; beyond it the ring grows on demand. Untouched
/// preallocated pages cost address space, not memory.
const PREALLOCATE_MAX: usize = 1 << 20;

impl SignatureStore {
    /// A store keeping each record for `ttl`, holding at most `max_entries` (at least one).
    pub fn new(ttl: Duration, max_entries: usize, clock: Arc<dyn Clock>) -> Self {
        let max_entries = max_entries.max(1);
        Self {
            index: DashMap::with_hasher(BuildHasherDefault::default()),
            ring: Mutex::new(Ring {
                first_seq: 0,
                entries: VecDeque::with_capacity(max_entries.min(PREALLOCATE_MAX)),
            }),
            id_hasher: RandomState::new(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            max_entries,
            clock,
            removed_expired: AtomicU64::new(0),
            removed_evicted: AtomicU64::new(0),
        }
    }

    fn key_of(&self, id: &str) -> u64 {
        self.id_hasher.hash_one(id)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Nothing panics while holding the lock; if something ever did, the ring is still
        // structurally sound, so keep serving rather than poisoning every later request.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `record` under `id`, unless a live record for the same id is already there:
    /// a later exchange never replaces an earlier one's signature (the earlier client may
    /// still come to look it up), whether the id repeats by accident or by design.
    pub fn insert(&self, id: &CompletionId, record: StoredSignature) -> Result<Ticket, Occupied> {
        let key = self.key_of(id.as_str());
        let now = self.now_ms();
        let mut ring = self.lock();
        self.remove_expired_locked(&mut ring, now);
        if let Some(seq) = self.index.get(&key).map(|entry| *entry) {
            let live = seq
                .checked_sub(ring.first_seq)
                .and_then(|position| usize::try_from(position).ok())
                .and_then(|position| ring.entries.get(position))
                .is_some_and(|entry| {
                    entry.id.as_bytes() == id.as_str().as_bytes() && entry.expires_at_ms > now
                });
            if live {
                return Err(Occupied);
            }
        }
        while ring.entries.len() >= self.max_entries {
            self.pop_front_locked(&mut ring);
            self.removed_evicted.fetch_add(1, Ordering::Relaxed);
        }
        let seq = ring.first_seq + ring.entries.len() as u64;
        ring.entries.push_back(Entry {
            id: CompactId::new(id.as_str()),
            record,
            expires_at_ms: now.saturating_add(self.ttl_ms),
        });
        // Lock order is always ring, then index shard; lookups never hold both.
        self.index.insert(key, seq);
        Ok(Ticket { key, seq })
    }

    /// The live record for `id`, if any.
    pub fn get(&self, id: &str) -> Option<StoredSignature> {
        let key = self.key_of(id);
        let seq = self.index.get(&key).map(|entry| *entry)?;
        let now = self.now_ms();
        let ring = self.lock();
        let position = usize::try_from(seq.checked_sub(ring.first_seq)?).ok()?;
        let entry = ring.entries.get(position)?;
        if entry.id.as_bytes() != id.as_bytes() || entry.expires_at_ms <= now {
            return None;
        }
        Some(entry.record)
    }

    /// Takes back one insertion (the response did not reach the client after all) and
    /// returns its record; a later insertion under the same id is left alone.
    pub fn retract(&self, ticket: Ticket) -> Option<StoredSignature> {
        self.index
            .remove_if(&ticket.key, |_, seq| *seq == ticket.seq)?;
        let ring = self.lock();
        let position = usize::try_from(ticket.seq.checked_sub(ring.first_seq)?).ok()?;
        ring.entries.get(position).map(|entry| entry.record)
    }

    /// Removes every expired record; returns how many went.
    pub fn sweep(&self) -> u64 {
        let now = self.now_ms();
        let mut ring = self.lock();
        self.remove_expired_locked(&mut ring, now)
    }

    fn remove_expired_locked(&self, ring: &mut Ring, now: u64) -> u64 {
        let mut removed = 0;
        while ring
            .entries
            .front()
            .is_some_and(|entry| entry.expires_at_ms <= now)
        {
            self.pop_front_locked(ring);
            removed += 1;
        }
        if removed > 0 {
            self.removed_expired.fetch_add(removed, Ordering::Relaxed);
        }
        removed
    }

    fn pop_front_locked(&self, ring: &mut Ring) {
        if let Some(entry) = ring.entries.pop_front() {
            let seq = ring.first_seq;
            ring.first_seq += 1;
            if let Ok(id) = std::str::from_utf8(entry.id.as_bytes()) {
                let key = self.key_of(id);
                self.index.remove_if(&key, |_, current| *current == seq);
            }
        }
    }

    /// Records that can currently be looked up (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no record can be looked up.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Totals of records removed since start.
    pub fn removed(&self) -> Removed {
        Removed {
            expired: self.removed_expired.load(Ordering::Relaxed),
            evicted: self.removed_evicted.load(Ordering::Relaxed),
        }
    }

    /// The configured time to live.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> StoredSignature {
        let mut sig = [n; 65];
        sig[64] = 27;
        StoredSignature {
            request_sha256: [n; 32],
            response_sha256: [n.wrapping_add(1); 32],
            signature: RecoverableSignature::from_bytes(sig).unwrap(),
        }
    }

    fn id(text: &str) -> CompletionId {
        CompletionId::parse(text).unwrap()
    }

    fn store(ttl_s: u64, max: usize) -> (SignatureStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let store = SignatureStore::new(Duration::from_secs(ttl_s), max, clock.clone());
        (store, clock)
    }

    #[test]
    fn records_are_served_until_their_ttl_and_never_after() {
        let (store, clock) = store(300, 10);
        store.insert(&id("a"), record(1)).unwrap();
        assert_eq!(store.get("a"), Some(record(1)));
        clock.advance(Duration::from_millis(299_999));
        assert_eq!(store.get("a"), Some(record(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(store.get("a"), None, "expired even before a sweep");
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
        assert_eq!(store.removed().expired, 1);
    }

    #[test]
    fn the_oldest_go_first_when_full() {
        let (store, clock) = store(300, 3);
        for (n, name) in ["a", "b", "c", "d"].iter().enumerate() {
            store.insert(&id(name), record(n as u8)).unwrap();
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(store.get("a"), None);
        assert_eq!(store.get("b"), Some(record(1)));
        assert_eq!(store.get("d"), Some(record(3)));
        assert_eq!(store.len(), 3);
        assert_eq!(store.removed().evicted, 1);
    }

    #[test]
    fn unknown_ids_and_lookalikes_are_not_found() {
        let (store, _clock) = store(300, 10);
        store.insert(&id("chatcmpl-1"), record(1)).unwrap();
        assert_eq!(store.get("chatcmpl-2"), None);
        assert_eq!(store.get("chatcmpl-1 "), None);
        assert_eq!(store.get(""), None);
    }

    #[test]
    fn a_retraction_removes_only_its_own_insertion() {
        let (store, _clock) = store(300, 10);
        let first = store.insert(&id("same"), record(1)).unwrap();
        assert_eq!(store.retract(first), Some(record(1)));
        assert_eq!(store.get("same"), None);
        let second = store.insert(&id("same"), record(2)).unwrap();
        assert_eq!(store.retract(first), None, "not the current insertion");
        assert_eq!(store.get("same"), Some(record(2)));
        assert_eq!(store.retract(second), Some(record(2)));
        assert_eq!(store.get("same"), None);
    }

    #[test]
    fn a_later_record_never_replaces_a_live_one() {
        let (store, clock) = store(10, 10);
        store.insert(&id("dup"), record(1)).unwrap();
        clock.advance(Duration::from_secs(5));
        assert_eq!(store.insert(&id("dup"), record(2)), Err(Occupied));
        assert_eq!(store.get("dup"), Some(record(1)), "the first stays");
        clock.advance(Duration::from_secs(6));
        // Once the first has expired, the id is free again.
        assert_eq!(store.get("dup"), None);
        store.insert(&id("dup"), record(3)).unwrap();
        assert_eq!(store.get("dup"), Some(record(3)));
        clock.advance(Duration::from_secs(11));
        assert_eq!(store.sweep(), 1);
        assert_eq!(store.get("dup"), None);
    }

    #[test]
    fn long_ids_are_stored_too() {
        let (store, _clock) = store(300, 10);
        let long = "x".repeat(256);
        store.insert(&id(&long), record(7)).unwrap();
        assert_eq!(store.get(&long), Some(record(7)));
        assert_eq!(store.get(&"x".repeat(255)), None);
    }

    #[test]
    fn concurrent_inserts_and_lookups_stay_bounded_and_consistent() {
        let (store, _clock) = store(300, 500);
        let store = Arc::new(store);
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000u32 {
                        let name = format!("t{t}-{i}");
                        store.insert(&id(&name), record((i % 200) as u8)).unwrap();
                        if let Some(found) = store.get(&name) {
                            assert_eq!(found, record((i % 200) as u8));
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(store.len(), 500);
        assert_eq!(store.removed().evicted, 8_000 - 500);
    }

    #[test]
    fn entries_stay_compact() {
        // The memory target (≤ 256 bytes per stored signature) depends on this.
        assert!(
            std::mem::size_of::<Entry>() <= 192,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }
}
