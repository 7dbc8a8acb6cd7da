//! What keeps a flood of attestation requests from taking the quote provider hostage.
//!
//! - [`ReportGate::coalesce`]: requests for the same report_data (the same nonce) share one
//!   making of the report; the work belongs to the waiting requests, so when every one of
//!   them has gone the work is dropped with them.
//! - [`ReportGate::enter`]: at most `max_concurrent` reports are made at once and at most
//!   `max_waiting` requests wait for a place; beyond that the answer is a 503 at once, never
//!   an ever-growing queue of quotes for clients that left long ago.
//! - [`FloodLog`]: a failing provider under a flood logs one line per interval with the
//!   number of failures, not one line per request.

use crate::{AttestationError, AttestationReport};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

type Shared = Arc<OnceCell<Result<AttestationReport, AttestationError>>>;

/// Places for fresh reports, and the reports being made.
#[derive(Debug)]
pub(crate) struct ReportGate {
    places: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    in_flight: Mutex<HashMap<[u8; 64], Shared>>,
}

/// Gives a waiting place back, however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReportGate {
    /// A gate making at most `max_concurrent` (at least one) reports at once, with at most
    /// `max_waiting` requests in line.
    pub(crate) fn new(max_concurrent: usize, max_waiting: usize) -> Self {
        Self {
            places: Semaphore::new(max_concurrent.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// A place to make a report, or `Busy` when the line is full.
    pub(crate) async fn enter(&self) -> Result<SemaphorePermit<'_>, AttestationError> {
        if let Ok(permit) = self.places.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AttestationError::Busy);
        }
        let _waiting = Waiting(&self.waiting);
        self.places
            .acquire()
            .await
            .map_err(|_| AttestationError::Busy)
    }

    /// Runs `make` for `key` unless a request for the same key is already making it, in
    /// which case this one waits for that result.
    pub(crate) async fn coalesce(
        &self,
        key: [u8; 64],
        make: impl Future<Output = Result<AttestationReport, AttestationError>>,
    ) -> Result<AttestationReport, AttestationError> {
        let cell = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            in_flight.entry(key).or_default().clone()
        };
        // If the request making it goes away, a waiting one takes over (OnceCell's rule).
        let result = cell.get_or_init(|| make).await.clone();
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if in_flight
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            in_flight.remove(&key);
        }
        result
    }

    /// Reports being made or waited for right now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// Logs attestation failures at most once per interval, with how many there were.
#[derive(Debug)]
pub(crate) struct FloodLog {
    started: Instant,
    interval: Duration,
    /// Milliseconds since `started` of the last line written (`u64::MAX`: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for FloodLog {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            interval: Duration::from_secs(10),
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl FloodLog {
    /// Records a failure; returns the line to log now, if one is due.
    pub(crate) fn line_for(&self, error: &AttestationError, now: Instant) -> Option<String> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX - 1);
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Acquire);
        let due = last == u64::MAX || now_ms.saturating_sub(last) >= interval_ms;
        if !due
            || self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let also = self.suppressed.swap(0, Ordering::Relaxed);
        Some(if also == 0 {
            format!("attestation failed: {error}")
        } else {
            format!("attestation failed: {error} ({also} more failures since the last line)")
        })
    }

    /// Records a failure and logs it if a line is due.
    pub(crate) fn note(&self, error: &AttestationError) {
        if let Some(line) = self.line_for(error, Instant::now()) {
            log::error!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_failures_is_one_line_per_interval() {
        let log = FloodLog::default();
        let t0 = log.started;
        let e = AttestationError::Busy;
        assert!(log.line_for(&e, t0).is_some());
        for ms in 1..1000 {
            assert_eq!(log.line_for(&e, t0 + Duration::from_millis(ms)), None);
        }
        let line = log.line_for(&e, t0 + Duration::from_secs(11)).unwrap();
        assert!(line.contains("999 more failures"), "{line}");
        assert_eq!(log.line_for(&e, t0 + Duration::from_secs(12)), None);
    }

    #[tokio::test]
    async fn the_line_of_waiting_requests_is_bounded() {
        let gate = ReportGate::new(1, 1);
        let held = gate.enter().await.unwrap();
        let waiter = gate.enter();
        tokio::pin!(waiter);
        // The waiter takes the one place in line (polled once, it is now waiting).
        assert!(futures_poll_once(waiter.as_mut()).await.is_none());
        assert!(matches!(gate.enter().await, Err(AttestationError::Busy)));
        drop(held);
        assert!(waiter.await.is_ok());
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
    }

    /// Polls a future once; `Some` if it finished.
    async fn futures_poll_once<F: Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
