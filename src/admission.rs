//! Admission: who may use the gateway and how many completions run at once. Bearer tokens
//! (checked on every route but health and attestation), the concurrency slots of signed
//! routes, how much memory the request bodies signet holds may take together, and how
//! often one client address may ask for an attestation report. What is refused for its
//! shape (head size, method, length, path) is decided by `signet_core::exchange`; this
//! module holds the shared state those decisions cannot.

use crate::auth::BearerTokens;
use signet_core::error::ApiError;
use signet_core::route::Route;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Tokens, slots and the attestation rate.
#[derive(Debug)]
pub struct Admission {
    tokens: Option<BearerTokens>,
    in_flight: Arc<AtomicUsize>,
    max_concurrent: usize,
    attestation_rate: RateLimiter,
    /// The memory request bodies may take, all requests together.
    pub body_memory: BodyMemory,
}

/// A token bucket per client address: `per_minute` requests a minute, as a burst of up to
/// `per_minute` after a quiet minute.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: dashmap::DashMap<IpAddr, (f64, Instant)>,
}

/// Addresses remembered before the idle (full) buckets are forgotten.
const RATE_LIMITER_PRUNE_AT: usize = 10_000;

impl RateLimiter {
    /// `per_minute` (at least 1) requests a minute per address.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: dashmap::DashMap::new(),
        }
    }

    /// Takes one request's worth for `client` at `now`, or says how long until it may.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        if self.buckets.len() >= RATE_LIMITER_PRUNE_AT {
            // Forget addresses whose bucket has refilled: they would start full anyway.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second < capacity
            });
        }
        let mut bucket = self.buckets.entry(client).or_insert((capacity, now));
        let (tokens, at) = *bucket;
        let refilled =
            (tokens + now.saturating_duration_since(at).as_secs_f64() * per_second).min(capacity);
        if refilled >= 1.0 {
            *bucket = (refilled - 1.0, now);
            Ok(())
        } else {
            *bucket = (refilled, now);
            Err(Duration::from_secs_f64((1.0 - refilled) / per_second))
        }
    }
}

/// A place among the requests in flight on signed routes; given back when dropped.
#[derive(Debug)]
pub struct InFlightSlot(Arc<AtomicUsize>);

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The memory all request bodies signet holds may take at once (`limits.body_memory_total`).
#[derive(Debug)]
pub struct BodyMemory {
    held: Arc<AtomicUsize>,
    total: usize,
}

impl BodyMemory {
    /// At most `total` bytes at once.
    pub fn new(total: usize) -> Self {
        Self {
            held: Arc::new(AtomicUsize::new(0)),
            total,
        }
    }

    /// A reservation holding nothing yet, for one request's body.
    pub fn reservation(&self) -> BodyReservation {
        BodyReservation {
            held: self.held.clone(),
            total: self.total,
            bytes: 0,
        }
    }

    /// Bytes reserved now, all requests together.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// The body memory one request holds; given back when dropped (when the request ends).
#[derive(Debug)]
pub struct BodyReservation {
    held: Arc<AtomicUsize>,
    total: usize,
    bytes: usize,
}

impl BodyReservation {
    /// Grows the reservation to `bytes` (it never shrinks), or refuses with a 503 when that
    /// would take the total past its limit: the request is answered at once rather than
    /// queued, so a refused client holds nothing while it waits to retry.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), ApiError> {
        let Some(more) = bytes.checked_sub(self.bytes).filter(|&more| more > 0) else {
            return Ok(());
        };
        let total = self.total;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|&after| after <= total)
            })
            .map_err(|_| {
                let mut error = ApiError::unavailable(
                    "too_many_requests",
                    "signet holds as many request bodies as it may at once; retry shortly",
                );
                error.headers.push(("retry-after", "1".to_owned()));
                error
            })?;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Admission {
    /// Admission with these tokens (none: every request is authorized) and at most
    /// `max_concurrent` signed requests in flight.
    pub fn new(
        tokens: Option<BearerTokens>,
        max_concurrent: usize,
        attestation_per_minute: u32,
    ) -> Self {
        Self {
            tokens,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_concurrent,
            attestation_rate: RateLimiter::new(attestation_per_minute),
            body_memory: BodyMemory::new(usize::MAX),
        }
    }

    /// The same, with request bodies bounded to `total` bytes of memory at once.
    pub fn with_body_memory(mut self, total: usize) -> Self {
        self.body_memory = BodyMemory::new(total);
        self
    }

    /// Admits a request for one of signet's own routes from `client`: attestation reports
    /// (each may cost a fresh quote) are held to the per-client rate; the rest always pass.
    pub fn admit_local(&self, route: Route, client: Option<IpAddr>) -> Result<(), ApiError> {
        match route {
            Route::AttestationReport | Route::AciAttestation => self.admit_attestation(client),
            _ => Ok(()),
        }
    }

    /// Admits an attestation request from `client` (no address: not limited), or refuses
    /// it with a 429 that says when to come back.
    pub fn admit_attestation(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(client) = client else {
            return Ok(());
        };
        self.attestation_rate
            .take(client, Instant::now())
            .map_err(|wait| {
                ApiError::too_many_requests(
                    "too many attestation requests from this address; retry later",
                    wait.as_secs().saturating_add(1),
                )
            })
    }

    /// Whether an `Authorization` header value is accepted: always when no tokens are
    /// configured, else only with an accepted bearer token.
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        self.tokens
            .as_ref()
            .is_none_or(|tokens| tokens.accepts(authorization))
    }

    /// Takes a place among the signed requests in flight, or refuses with a 503.
    pub fn take_slot(&self) -> Result<InFlightSlot, ApiError> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlightSlot(self.in_flight.clone());
        if before >= self.max_concurrent {
            return Err(ApiError::unavailable(
                "too_many_requests",
                format!(
                    "signet is at its limit of {} concurrent completions; retry shortly",
                    self.max_concurrent
                ),
            ));
        }
        Ok(slot)
    }

    /// Signed requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back_on_drop() {
        let admission = Admission::new(None, 2, 60);
        let a = admission.take_slot().unwrap();
        let _b = admission.take_slot().unwrap();
        assert_eq!(admission.take_slot().unwrap_err().status, 503);
        assert_eq!(admission.in_flight(), 2, "a refused request holds no slot");
        drop(a);
        assert!(admission.take_slot().is_ok());
    }

    #[test]
    fn tokens_are_required_only_when_configured() {
        assert!(Admission::new(None, 1, 60).authorized(None));
        let guarded = Admission::new(Some(BearerTokens::new(&["t0k".to_owned()])), 1, 60);
        assert!(!guarded.authorized(None));
        assert!(!guarded.authorized(Some(b"Bearer nope")));
        assert!(guarded.authorized(Some(b"Bearer t0k")));
    }

    #[test]
    fn one_address_gets_its_rate_and_no_more_while_others_are_unaffected() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..60 {
            limiter.take(a, t0).unwrap();
        }
        let wait = limiter.take(a, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            limiter.take(b, t0).is_ok(),
            "another address has its own bucket"
        );
        // One a second comes back.
        assert!(limiter.take(a, t0 + Duration::from_millis(1100)).is_ok());
        assert!(limiter.take(a, t0 + Duration::from_millis(1200)).is_err());
        let refused = Admission::new(None, 1, 1);
        assert!(refused.admit_local(Route::Health, Some(a)).is_ok());
        refused.admit_local(Route::AciAttestation, Some(a)).unwrap();
        assert!(
            refused
                .admit_local(Route::AttestationReport, Some(a))
                .is_err()
        );
        assert!(refused.admit_local(Route::Signature, Some(a)).is_ok());
        let e = refused.admit_attestation(Some(a)).unwrap_err();
        assert_eq!(e.status, 429);
        assert_eq!(e.status, 429);
        assert!(e.headers.iter().any(|(k, _)| *k == "retry-after"));
        assert!(refused.admit_attestation(None).is_ok());
    }

    #[test]
    fn body_memory_is_bounded_in_total_and_given_back_when_a_request_ends() {
        let memory = BodyMemory::new(100);
        let mut a = memory.reservation();
        let mut b = memory.reservation();
        a.grow_to(60).unwrap();
        a.grow_to(40).unwrap();
        assert_eq!(memory.held(), 60, "a reservation never shrinks");
        let refused = b.grow_to(41).unwrap_err();
        assert_eq!((refused.status, refused.code), (503, "too_many_requests"));
        assert!(refused.headers.iter().any(|(k, _)| *k == "retry-after"));
        assert_eq!(memory.held(), 60, "a refused growth takes nothing");
        b.grow_to(40).unwrap();
        assert_eq!(memory.held(), 100);
        drop(a);
        assert_eq!(memory.held(), 40);
        b.grow_to(100).unwrap();
        drop(b);
        assert_eq!(memory.held(), 0);
    }
}
