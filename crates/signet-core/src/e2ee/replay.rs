//! Replay protection (spec §7): a `(client key, service key, nonce)` tuple is accepted once
//! inside the acceptance window. A nonce is remembered until its window closes (twice the
//! timestamp tolerance after it was seen, so no timestamp the window accepts can bring it
//! back), in bounded memory: when full, expired entries are swept; if it is still full,
//! new requests are refused as replays rather than old nonces forgotten (forgetting would
//! let a captured request be sent again).

use super::TIMESTAMP_WINDOW_SECS;
use super::crypto::PublicKey;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Remembered nonces, each with the Unix second it may be forgotten.
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<HashMap<[u8; 32], u64>>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Records the tuple at `now`: `true` if it is new, `false` if it was seen inside the
    /// window (or the cache is full of live nonces).
    pub fn check_and_insert(
        &self,
        client: &PublicKey,
        service: &PublicKey,
        nonce: &[u8; 32],
        now: u64,
    ) -> bool {
        // Keys in their canonical encoding and the nonce as bytes: either hex case, and
        // either accepted secp256k1 form, is the same tuple.
        let mut digest = Sha256::new();
        digest.update(client.to_hex().as_bytes());
        digest.update([0]);
        digest.update(service.to_hex().as_bytes());
        digest.update([0]);
        digest.update(nonce);
        let key: [u8; 32] = digest.finalize().into();
        let mut seen = match self.seen.lock() {
            Ok(seen) => seen,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(&until) = seen.get(&key)
            && until > now
        {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until > now);
            if seen.len() >= self.capacity {
                return false;
            }
        }
        seen.insert(key, now + 2 * TIMESTAMP_WINDOW_SECS + 1);
        true
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.lock().map_or(0, |seen| seen.len())
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2ee::crypto::{SecretKey, Suite};

    #[test]
    fn a_tuple_is_accepted_once_inside_the_window_and_again_after_it() {
        let cache = ReplayCache::new(10);
        let client = SecretKey::generate(Suite::X25519).public_key();
        let service = SecretKey::generate(Suite::X25519).public_key();
        let other = SecretKey::generate(Suite::X25519).public_key();
        let nonce = [9u8; 32];
        assert!(cache.check_and_insert(&client, &service, &nonce, 1000));
        assert!(!cache.check_and_insert(&client, &service, &nonce, 1000 + 600));
        assert!(cache.check_and_insert(&other, &service, &nonce, 1001));
        assert!(cache.check_and_insert(&client, &service, &[8u8; 32], 1001));
        assert!(cache.check_and_insert(&client, &service, &nonce, 1000 + 601));
    }

    #[test]
    fn a_full_cache_sweeps_expired_nonces_and_refuses_when_all_are_live() {
        let cache = ReplayCache::new(2);
        let client = SecretKey::generate(Suite::X25519).public_key();
        let service = SecretKey::generate(Suite::X25519).public_key();
        assert!(cache.check_and_insert(&client, &service, &[1u8; 32], 0));
        assert!(cache.check_and_insert(&client, &service, &[2u8; 32], 0));
        assert!(!cache.check_and_insert(&client, &service, &[3u8; 32], 10));
        assert_eq!(cache.len(), 2);
        assert!(cache.check_and_insert(&client, &service, &[3u8; 32], 10_000));
        assert_eq!(cache.len(), 1);
    }
}
