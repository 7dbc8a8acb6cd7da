//! The upstream pool: one or more inference servers balanced round-robin with Pingora's
//! load-balancing crate, optionally health-checked in the background (a failing server stops
//! receiving requests until it answers its health check again). Selection skips servers a
//! request already failed to connect to, so a connection failure is retried elsewhere.

use crate::config::{HealthCheckSettings, UpstreamTarget, UpstreamTimeouts};
use pingora_core::prelude::HttpPeer;
use pingora_core::services::background::{GenBackgroundService, background_service};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the pool could not be built.
#[derive(Debug, thiserror::Error)]
#[error("upstreams: {0}")]
pub struct PoolError(String);

/// How a client's request head is edited on its way upstream; one policy for both upstream
/// paths (the proxy and the in-band JSON client).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// The client's bearer token is signet's, not the upstream's: drop `Authorization`
    /// unless configured to forward it.
    pub strip_authorization: bool,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross signet.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// A `Location` header as the client should see it: an absolute URL that points at the
/// upstream itself (its configured authority, or the address it was resolved to) becomes a
/// path, so a redirect never tells the client where the model server lives; any other
/// value is left alone (`None`).
pub fn client_location(value: &str, target: &UpstreamTarget) -> Option<String> {
    let uri: http::Uri = value.trim().parse().ok()?;
    let authority = uri.authority()?;
    let upstream = authority.as_str().eq_ignore_ascii_case(&target.authority())
        || authority.as_str() == target.addr.to_string()
        || (authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            == target.host
            && authority
                .port_u16()
                .unwrap_or(if target.tls { 443 } else { 80 })
                == target.port);
    if !upstream {
        return None;
    }
    Some(
        uri.path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    )
}

impl HeaderPolicy {
    /// Whether a client request header (lowercase name) goes upstream unchanged. On signed
    /// routes `Accept-Encoding` goes, so the upstream sends identity bytes and the hashed
    /// bytes are the delivered bytes; `Host` and `x-request-id` are signet's to set.
    pub fn keeps(&self, name: &str, signed: bool) -> bool {
        !((signed && name == "accept-encoding")
            || (self.strip_authorization && name == "authorization")
            || name == "host"
            || name == "x-request-id")
    }
}

/// The upstreams and how to reach them.
pub struct UpstreamPool {
    balancer: Arc<LoadBalancer<RoundRobin>>,
    targets: Vec<UpstreamTarget>,
    timeouts: UpstreamTimeouts,
    headers: HeaderPolicy,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

/// The background service that runs the health checks, when there are any.
pub type HealthService = GenBackgroundService<LoadBalancer<RoundRobin>>;

impl UpstreamPool {
    /// Builds the pool; returns the health-check service to hand to Pingora, if checks are on.
    pub fn new(
        targets: Vec<UpstreamTarget>,
        health: Option<&HealthCheckSettings>,
        timeouts: UpstreamTimeouts,
    ) -> Result<(Self, Option<HealthService>), PoolError> {
        let first = targets
            .first()
            .ok_or_else(|| PoolError("no upstream".to_owned()))?;
        let mut balancer =
            LoadBalancer::<RoundRobin>::try_from_iter(targets.iter().map(|t| t.addr))
                .map_err(|e| PoolError(e.to_string()))?;
        let (balancer, service) = match health {
            None => (Arc::new(balancer), None),
            Some(health) => {
                let mut check = HttpHealthCheck::new(&first.authority(), first.tls);
                let mut request = RequestHeader::build("GET", health.path.as_bytes(), None)
                    .map_err(|e| PoolError(e.to_string()))?;
                request
                    .insert_header(http::header::HOST, first.authority())
                    .map_err(|e| PoolError(e.to_string()))?;
                check.req = request;
                check.consecutive_success = 1;
                check.consecutive_failure = 1;
                check.peer_template.options.connection_timeout = Some(health.timeout);
                check.peer_template.options.read_timeout = Some(health.timeout);
                balancer.set_health_check(Box::new(check));
                balancer.health_check_frequency = Some(health.interval);
                balancer.parallel_health_check = true;
                let service = background_service("upstream health checks", balancer);
                (service.task(), Some(service))
            }
        };
        Ok((
            Self {
                balancer,
                targets,
                timeouts,
                headers: HeaderPolicy::default(),
            },
            service,
        ))
    }

    /// Uses this header policy on both upstream paths.
    pub fn with_header_policy(mut self, headers: HeaderPolicy) -> Self {
        self.headers = headers;
        self
    }

    /// The header policy.
    pub fn header_policy(&self) -> HeaderPolicy {
        self.headers
    }

    /// The timeouts toward the upstreams.
    pub fn timeouts(&self) -> UpstreamTimeouts {
        self.timeouts
    }

    /// Records that `failed` could not be connected to and says whether another upstream
    /// may take the request (nothing was sent, so trying elsewhere is safe).
    pub fn try_another_after(&self, tried: &mut Vec<SocketAddr>, failed: SocketAddr) -> bool {
        if !tried.contains(&failed) {
            tried.push(failed);
        }
        tried.len() < self.targets.len()
    }

    /// A peer for one attempt at `target`. Streamed requests may stay silent for
    /// `upstream_timeouts.idle` between chunks; others for `first_byte` (a non-streamed
    /// answer comes only once the whole completion is generated).
    pub fn peer_for(&self, target: &UpstreamTarget, stream: Option<bool>) -> HttpPeer {
        let read_timeout = match stream {
            Some(true) => self.timeouts.idle,
            _ => self.timeouts.first_byte,
        };
        self.peer(target, read_timeout)
    }

    /// Edits the request head sent upstream by the header policy, then sets `Host` to the
    /// upstream's authority and `x-request-id` to signet's own id.
    pub fn prepare_request(
        &self,
        request: &mut RequestHeader,
        signed: bool,
        target: &UpstreamTarget,
        request_id: &str,
    ) -> pingora_core::Result<()> {
        let dropped: Vec<http::HeaderName> = request
            .headers
            .keys()
            .filter(|name| !self.headers.keeps(name.as_str(), signed))
            .cloned()
            .collect();
        for name in dropped {
            request.remove_header(&name);
        }
        request.insert_header(http::header::HOST, target.authority())?;
        request.insert_header("x-request-id", request_id)?;
        Ok(())
    }

    /// How many upstreams there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the pool is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The next upstream to try: a healthy one not tried yet, else any not tried yet (when
    /// every upstream failed its health check, trying beats refusing).
    pub fn select(&self, tried: &[SocketAddr]) -> Option<&UpstreamTarget> {
        let untried = |backend: &Backend| {
            backend
                .addr
                .as_inet()
                .is_some_and(|addr| !tried.contains(addr))
        };
        let backend = self
            .balancer
            .select_with(b"", 256, |backend, healthy| healthy && untried(backend))
            .or_else(|| {
                self.balancer
                    .select_with(b"", 256, |backend, _| untried(backend))
            })?;
        let addr = backend.addr.as_inet()?;
        self.targets.iter().find(|t| t.addr == *addr)
    }

    /// A peer for one attempt at `target`, whose reads may stay silent for `read_timeout`.
    pub fn peer(&self, target: &UpstreamTarget, read_timeout: Duration) -> HttpPeer {
        let mut peer = HttpPeer::new(target.addr, target.tls, target.host.clone());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(read_timeout);
        peer.options.write_timeout = Some(self.timeouts.write);
        peer.options.idle_timeout = Some(self.timeouts.pool_idle);
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_to_the_upstream_become_paths() {
        let target = crate::config::parse_upstream("k", "http://127.0.0.1:8001").unwrap();
        assert_eq!(
            client_location("http://127.0.0.1:8001/v1/models", &target).as_deref(),
            Some("/v1/models")
        );
        assert_eq!(
            client_location("http://127.0.0.1:8001/v1/x?a=b", &target).as_deref(),
            Some("/v1/x?a=b")
        );
        assert_eq!(client_location("https://example.com/next", &target), None);
        assert_eq!(
            client_location("/v1/models/", &target),
            None,
            "already a path"
        );
        let named = crate::config::parse_upstream("k", "http://localhost:8001").unwrap();
        assert_eq!(
            client_location("http://localhost:8001/a", &named).as_deref(),
            Some("/a")
        );
        assert_eq!(
            client_location(&format!("http://{}/a", named.addr), &named).as_deref(),
            Some("/a")
        );
    }

    #[test]
    fn the_header_policy_keeps_what_the_upstream_may_see() {
        let open = HeaderPolicy::default();
        assert!(open.keeps("accept-encoding", false));
        assert!(!open.keeps("accept-encoding", true));
        assert!(open.keeps("authorization", true));
        assert!(!open.keeps("host", false));
        assert!(!open.keeps("x-request-id", true), "signet sets its own");
        let guarded = HeaderPolicy {
            strip_authorization: true,
        };
        assert!(!guarded.keeps("authorization", false));
        assert!(guarded.keeps("content-type", true));
        assert!(is_hop_by_hop("transfer-encoding") && !is_hop_by_hop("content-type"));
    }
}
