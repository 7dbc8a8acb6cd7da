//! Admission: who may use the gateway and how many completions run at once. Bearer tokens
//! (checked on every route but health and attestation) and the concurrency slots of signed
//! routes. What is refused for its shape (head size, method, length, path) is decided by
//! `signet_core::exchange`; this module holds the shared state those decisions cannot.

use crate::auth::BearerTokens;
use signet_core::error::ApiError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tokens and slots.
#[derive(Debug)]
pub struct Admission {
    tokens: Option<BearerTokens>,
    in_flight: Arc<AtomicUsize>,
    max_concurrent: usize,
}

/// A place among the requests in flight on signed routes; given back when dropped.
#[derive(Debug)]
pub struct InFlightSlot(Arc<AtomicUsize>);

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Admission with these tokens (none: every request is authorized) and at most
    /// `max_concurrent` signed requests in flight.
    pub fn new(tokens: Option<BearerTokens>, max_concurrent: usize) -> Self {
        Self {
            tokens,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_concurrent,
        }
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
        let admission = Admission::new(None, 2);
        let a = admission.take_slot().unwrap();
        let _b = admission.take_slot().unwrap();
        assert_eq!(admission.take_slot().unwrap_err().status, 503);
        assert_eq!(admission.in_flight(), 2, "a refused request holds no slot");
        drop(a);
        assert!(admission.take_slot().is_ok());
    }

    #[test]
    fn tokens_are_required_only_when_configured() {
        assert!(Admission::new(None, 1).authorized(None));
        let guarded = Admission::new(Some(BearerTokens::new(&["t0k".to_owned()])), 1);
        assert!(!guarded.authorized(None));
        assert!(!guarded.authorized(Some(b"Bearer nope")));
        assert!(guarded.authorized(Some(b"Bearer t0k")));
    }
}
