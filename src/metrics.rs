//! Prometheus metrics, served on the admin listener (`signet.admin.listen`, never the public
//! port). Counters and histograms live in the default registry that pingora-prometheus
//! serves; gauges that mirror state (signature store size, completions in flight) are read at
//! scrape time by [`StateCollector`], so a scrape never shows a stale value.

use pingora_prometheus::prometheus::core::{Collector, Desc};
use pingora_prometheus::prometheus::proto::MetricFamily;
use pingora_prometheus::prometheus::{
    self, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};
use std::sync::LazyLock;
use std::time::Duration;

/// Latency buckets from 1 ms to 10 minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Every metric signet records.
pub struct Metrics {
    /// Requests by route and final status.
    pub requests: IntCounterVec,
    /// Responses signed, by route.
    pub signed: IntCounterVec,
    /// Responses on signed routes that ended unsigned, by reason.
    pub unsigned: IntCounterVec,
    /// `GET /v1/signature/{id}` outcomes: hit, miss, invalid.
    pub signature_lookups: IntCounterVec,
    /// Attestation requests by provider and outcome (ok, bad_request, not_found, unavailable).
    pub attestation_requests: IntCounterVec,
    /// Attestation latency by provider.
    pub attestation_seconds: HistogramVec,
    /// Time from sending the request upstream to its response head.
    pub upstream_first_byte_seconds: Histogram,
    /// Time from sending the request upstream to the end of the response.
    pub upstream_total_seconds: Histogram,
    /// Bytes hashed, by direction (request, response).
    pub hashed_bytes: IntCounterVec,
    /// Upstream attempts retried on a fresh connection.
    pub upstream_retries: IntCounter,
    /// Commands written to the shared (Redis) store, by result.
    pub shared_store_writes: IntCounterVec,
    /// Records that could not be queued or kept for the shared store.
    pub shared_store_dropped: IntCounter,
    /// Records waiting to be written to the shared store.
    pub shared_store_backlog: IntGauge,
}

fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    // Registering twice only happens in tests that build several gateways in one process.
    let _ = prometheus::register(Box::new(collector.clone()));
    collector
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        IntCounterVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|_| unreachable_metric(name)),
    )
}

#[cold]
fn unreachable_metric(name: &str) -> ! {
    // Metric names and labels are constants above; an invalid one is a programming error.
    panic!("invalid metric definition {name}")
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    requests: counter_vec(
        "signet_requests_total",
        "Requests by route and final HTTP status.",
        &["route", "status"],
    ),
    signed: counter_vec(
        "signet_signed_responses_total",
        "Responses signed, by route.",
        &["route"],
    ),
    unsigned: counter_vec(
        "signet_unsigned_responses_total",
        "Responses on signed routes that ended without a signature, by reason.",
        &["reason"],
    ),
    signature_lookups: counter_vec(
        "signet_signature_lookups_total",
        "GET /v1/signature/{id} outcomes.",
        &["result"],
    ),
    attestation_requests: counter_vec(
        "signet_attestation_requests_total",
        "Attestation report requests by provider and outcome.",
        &["provider", "outcome"],
    ),
    attestation_seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "signet_attestation_duration_seconds",
                "Time to produce an attestation report, by provider.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider"],
        )
        .unwrap_or_else(|_| unreachable_metric("signet_attestation_duration_seconds")),
    ),
    upstream_first_byte_seconds: register(
        Histogram::with_opts(
            HistogramOpts::new(
                "signet_upstream_first_byte_seconds",
                "Time from sending a request upstream to the response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|_| unreachable_metric("signet_upstream_first_byte_seconds")),
    ),
    upstream_total_seconds: register(
        Histogram::with_opts(
            HistogramOpts::new(
                "signet_upstream_total_seconds",
                "Time from sending a request upstream to the end of its response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|_| unreachable_metric("signet_upstream_total_seconds")),
    ),
    hashed_bytes: counter_vec(
        "signet_hashed_bytes_total",
        "Bytes hashed for signing, by direction.",
        &["direction"],
    ),
    upstream_retries: register(
        IntCounter::new(
            "signet_upstream_retries_total",
            "Upstream attempts retried on a fresh connection after a pooled one was closed unanswered.",
        )
        .unwrap_or_else(|_| unreachable_metric("signet_upstream_retries_total")),
    ),
    shared_store_writes: counter_vec(
        "signet_shared_store_writes_total",
        "Commands written to the shared (Redis) store of signatures and receipts, by result.",
        &["result"],
    ),
    shared_store_dropped: register(
        IntCounter::new(
            "signet_shared_store_dropped_total",
            "Records (signatures, receipts) kept only locally because the shared store's queue or backlog was full.",
        )
        .unwrap_or_else(|_| unreachable_metric("signet_shared_store_dropped_total")),
    ),
    shared_store_backlog: register(
        IntGauge::new(
            "signet_shared_store_backlog",
            "Writes waiting for the shared store (a signature is one, a receipt one per key).",
        )
        .unwrap_or_else(|_| unreachable_metric("signet_shared_store_backlog")),
    ),
}
});

/// A source of state the scrape reads directly.
pub trait StateSource: Send + Sync + 'static {
    /// Signatures that can be looked up now.
    fn stored_signatures(&self) -> usize;
    /// Signatures removed since start: (expired, evicted for room).
    fn removed_signatures(&self) -> (u64, u64);
    /// Completions in flight.
    fn completions_in_flight(&self) -> usize;
    /// Bytes of request body held now, all requests together.
    fn request_body_memory(&self) -> usize;
}

/// Reads [`StateSource`] at scrape time.
pub struct StateCollector<S: StateSource> {
    source: std::sync::Arc<S>,
    descs: Vec<Desc>,
}

impl<S: StateSource> StateCollector<S> {
    /// Registers a collector for `source` in the default registry.
    pub fn register(source: std::sync::Arc<S>) {
        let descs = [
            (
                "signet_signature_store_entries",
                "Signatures that can be looked up.",
            ),
            (
                "signet_signature_store_removed_total",
                "Signatures removed from the store, by cause (expired, evicted).",
            ),
            (
                "signet_completions_in_flight",
                "Completions being proxied now.",
            ),
            (
                "signet_request_body_memory_bytes",
                "Bytes of request body held to be checked and signed, all requests together.",
            ),
        ]
        .iter()
        .filter_map(|(name, help)| {
            let labels = if name.ends_with("removed_total") {
                vec!["cause".to_owned()]
            } else {
                Vec::new()
            };
            Desc::new(
                (*name).to_owned(),
                (*help).to_owned(),
                labels,
                Default::default(),
            )
            .ok()
        })
        .collect();
        let _ = prometheus::register(Box::new(Self { source, descs }));
    }
}

impl<S: StateSource> Collector for StateCollector<S> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        let entries = IntGauge::new(
            "signet_signature_store_entries",
            "Signatures that can be looked up.",
        );
        if let Ok(gauge) = entries {
            gauge.set(i64::try_from(self.source.stored_signatures()).unwrap_or(i64::MAX));
            families.extend(gauge.collect());
        }
        if let Ok(removed) = IntCounterVec::new(
            Opts::new(
                "signet_signature_store_removed_total",
                "Signatures removed from the store, by cause (expired, evicted).",
            ),
            &["cause"],
        ) {
            let (expired, evicted) = self.source.removed_signatures();
            removed.with_label_values(&["expired"]).inc_by(expired);
            removed.with_label_values(&["evicted"]).inc_by(evicted);
            families.extend(removed.collect());
        }
        if let Ok(gauge) = IntGauge::new(
            "signet_completions_in_flight",
            "Completions being proxied now.",
        ) {
            gauge.set(i64::try_from(self.source.completions_in_flight()).unwrap_or(i64::MAX));
            families.extend(gauge.collect());
        }
        if let Ok(gauge) = IntGauge::new(
            "signet_request_body_memory_bytes",
            "Bytes of request body held to be checked and signed, all requests together.",
        ) {
            gauge.set(i64::try_from(self.source.request_body_memory()).unwrap_or(i64::MAX));
            families.extend(gauge.collect());
        }
        families
    }
}

/// Seconds as a float, for histograms.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
