//! What every request shares, split by responsibility: [`Admission`] (tokens, slots), the
//! [`UpstreamPool`] (peers and the one header policy of both upstream paths), the
//! [`Notary`] (seal, retract, look up) and the [`Attestor`]. The decisions about one
//! request are `signet_core::exchange`'s; the local routes are answered in `routes`.

use crate::aci::AciService;
use crate::admission::Admission;
use crate::auth::BearerTokens;
use crate::config::Settings;
use crate::metrics::StateSource;
use crate::notary::Notary;
use crate::upstreams::{HeaderPolicy, UpstreamPool};
use signet_attest::Attestor;
use signet_core::e2ee::E2eeService;
use signet_core::exchange::ExchangePolicy;
use signet_core::transcript::ScanLimits;
use std::sync::Arc;

/// Everything requests share.
pub struct Gateway {
    /// The checked settings.
    pub settings: Settings,
    /// Tokens and concurrency slots.
    pub admission: Admission,
    /// The upstreams and how requests reach them.
    pub upstreams: UpstreamPool,
    /// The signing key and the signature store.
    pub notary: Notary,
    /// Attestation reports.
    pub attestor: Arc<Attestor>,
    /// The signed routes (shared by every exchange).
    routes: Arc<signet_core::route::RouteTable>,
    /// ACI: the keyset, its reports and the receipts.
    pub aci: AciService,
    /// E2EE v2: its keys (published in the ACI keyset) and replay state.
    e2ee: Option<Arc<E2eeService>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.upstreams)
            .field("signer", &self.notary.address())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Assembles the gateway from checked settings.
    pub fn new(
        settings: Settings,
        notary: Notary,
        attestor: Arc<Attestor>,
        aci: AciService,
        upstreams: UpstreamPool,
    ) -> Self {
        let tokens = settings
            .auth
            .as_ref()
            .map(|auth| BearerTokens::new(&auth.tokens));
        let strip_authorization = settings
            .auth
            .as_ref()
            .is_some_and(|auth| !auth.forward_authorization);
        Self {
            admission: Admission::new(
                tokens,
                settings.limits.max_concurrent_streams,
                settings.attestation_per_client_per_minute,
            )
            .with_body_memory(settings.limits.body_memory_total),
            upstreams: upstreams.with_header_policy(HeaderPolicy {
                strip_authorization,
            }),
            notary,
            attestor,
            routes: Arc::new(settings.signatures.routes.clone()),
            aci,
            settings,
            e2ee: None,
        }
    }

    /// Terminates E2EE v2 with these keys (they must be the ones the ACI keyset publishes).
    pub fn with_e2ee(mut self, e2ee: Arc<E2eeService>) -> Self {
        self.e2ee = Some(e2ee);
        self
    }

    /// The path of a signed route (what an ACI receipt names as its endpoint).
    pub fn signed_path(&self, route: signet_core::route::SignedRoute) -> &str {
        self.routes
            .spec(route)
            .map_or("", |spec| spec.path.as_str())
    }

    /// The limits each exchange is held to.
    pub fn exchange_policy(&self) -> ExchangePolicy {
        let limits = &self.settings.limits;
        ExchangePolicy {
            max_header_bytes: limits.max_header_bytes,
            max_request_body: limits.max_request_body,
            scan_limits: ScanLimits {
                event_stream: limits.id_scan_bytes,
                json_body: limits.json_response_bytes,
            },
            body_deadline: self.settings.client_timeouts.body_total,
            routes: self.routes.clone(),
            e2ee: self.e2ee.clone(),
        }
    }
}

impl StateSource for Gateway {
    fn stored_signatures(&self) -> usize {
        self.notary.store().len()
    }
    fn removed_signatures(&self) -> (u64, u64) {
        let removed = self.notary.store().removed();
        (removed.expired, removed.evicted)
    }
    fn completions_in_flight(&self) -> usize {
        self.admission.in_flight()
    }
    fn request_body_memory(&self) -> usize {
        self.admission.body_memory.held()
    }
}
