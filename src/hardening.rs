//! Process and connection hardening.
//!
//! - [`protect_key_material`]: no core dumps (RLIMIT_CORE = 0) and not dumpable
//!   (PR_SET_DUMPABLE = 0, which also keeps other users' debuggers out), so the signing key,
//!   which lives only in this process's memory, never reaches a disk through a crash.
//! - [`GuardedApp`]: wraps the proxy to bound what a client may hold before it has even sent a
//!   request: one deadline for the whole request head, idle kept-alive time included
//!   (slow-loris), and a cap on requests being read or served at once. Pingora's proxy only
//!   bounds each single read of a head by its keep-alive timeout, so a client trickling a
//!   byte a minute would hold a connection for ever, and it has no connection cap. The cap
//!   holds per client address too, so one client's idle sockets cannot take every place.
//!   Heads are read no further than `limits.max_header_bytes` (Pingora's own limit is
//!   1 MiB, lowered per session through signet's patched copy, vendor/README.md).
//! - [`HandshakeGuard`]: a TLS connection takes its place (same caps) when it is accepted,
//!   before its handshake, which Pingora runs before any of the above; the handshake itself
//!   is bounded by `client_timeouts.handshake` (set on the listening service).
//! - [`ensure_descriptors`]: raises the open-file limit toward what `max_connections` needs
//!   (a client and an upstream socket each), and says when the hard limit is short.
//!   It also turns on HTTP/1.1 pipelining, which Pingora leaves off (a pipelined request
//!   would otherwise be dropped with the connection).

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

tokio::task_local! {
    /// Set by the proxy once it holds a complete request head (see [`head_received`]).
    static HEAD_RECEIVED: Arc<AtomicBool>;
}

/// Tells the enclosing [`GuardedApp`] that the request head is complete, so its head
/// deadline no longer applies. Called by the proxy's first request callback; a no-op
/// outside a guarded request.
pub fn head_received() {
    let _ = HEAD_RECEIVED.try_with(|flag| flag.store(true, Ordering::Release));
}

/// Disables core dumps and ptrace-style access to this process. Returns what could not be
/// set (an environment that forbids these calls already keeps dumps away, e.g. systemd's
/// LimitCORE=0).
pub fn protect_key_material() -> Vec<String> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let mut failures = Vec::new();
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, none) {
        failures.push(format!("RLIMIT_CORE=0: {e}"));
    }
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        failures.push(format!("PR_SET_DUMPABLE=0: {e}"));
    }
    failures
}

/// File descriptors `max_connections` needs: a client socket and an upstream socket for each,
/// plus headroom for listeners, logs, Redis and attestation.
pub fn descriptors_needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256)
}

/// What to do about the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorPlan {
    /// Raise the soft limit to this.
    pub raise_to: Option<u64>,
    /// Even the hard limit is this many short.
    pub short_by: Option<u64>,
}

/// Plans the soft RLIMIT_NOFILE for `needed` descriptors given the current soft and hard
/// limits (`None`: unlimited).
pub fn plan_descriptors(needed: u64, soft: Option<u64>, hard: Option<u64>) -> DescriptorPlan {
    let reachable = hard.map_or(needed, |hard| needed.min(hard));
    DescriptorPlan {
        raise_to: soft.filter(|&soft| soft < reachable).map(|_| reachable),
        short_by: hard.filter(|&hard| hard < needed).map(|hard| needed - hard),
    }
}

/// Raises the soft open-file limit toward what `max_connections` needs; returns a warning
/// when the limit stays short (accept() would then fail with "Too many open files").
pub fn ensure_descriptors(max_connections: usize) -> Option<String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = descriptors_needed(max_connections);
    let limit = getrlimit(Resource::Nofile);
    let plan = plan_descriptors(needed, limit.current, limit.maximum);
    if let Some(raise_to) = plan.raise_to {
        let raised = Rlimit {
            current: Some(raise_to),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            return Some(format!(
                "could not raise the open-file limit to {raise_to}: {e}"
            ));
        }
    }
    plan.short_by.map(|short| {
        format!(
            "limits.max_connections = {max_connections} needs {needed} open files, {short} more \
             than the hard limit allows: lower it or raise LimitNOFILE"
        )
    })
}

/// What the kernel now says about core dumps of this process, read back after
/// [`protect_key_material`]: `RLIMIT_CORE=<soft>/<hard> dumpable=<0|1>` (for the log).
pub fn key_material_protection() -> String {
    use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
    let limit = getrlimit(Resource::Core);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    let dumpable = match dumpable_behavior() {
        Ok(DumpableBehavior::NotDumpable) => "0",
        Ok(_) => "1",
        Err(_) => "unknown",
    };
    format!(
        "RLIMIT_CORE={}/{} dumpable={dumpable}",
        show(limit.current),
        show(limit.maximum)
    )
}

/// The caps on requests in progress, overall and per client address, shared by the proxy
/// and the TLS handshake guard.
pub struct Places {
    max_in_progress: usize,
    max_per_client: usize,
    in_progress: AtomicUsize,
    per_client: dashmap::DashMap<std::net::IpAddr, usize>,
}

impl Places {
    /// At most `max_in_progress` places, `max_per_client` of them for one address.
    pub fn new(max_in_progress: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_in_progress,
            max_per_client,
            in_progress: AtomicUsize::new(0),
            per_client: dashmap::DashMap::new(),
        })
    }

    /// Takes a place for `client`, or says which cap is full.
    fn take(self: &Arc<Self>, client: Option<std::net::IpAddr>) -> Result<Place, &'static str> {
        let before = self.in_progress.fetch_add(1, Ordering::AcqRel);
        let mut place = Place {
            places: self.clone(),
            client: None,
        };
        if before >= self.max_in_progress {
            return Err("limits.max_connections");
        }
        if let Some(ip) = client {
            let mut count = self.per_client.entry(ip).or_insert(0);
            *count += 1;
            let over = *count > self.max_per_client;
            drop(count);
            place.client = Some(ip);
            if over {
                return Err("limits.max_connections_per_client");
            }
        }
        Ok(place)
    }
}

/// A place among the requests in progress; given back when dropped, however the request or
/// connection ends.
#[derive(Debug)]
struct Place {
    places: Arc<Places>,
    client: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for Places {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Places")
            .field("in_progress", &self.in_progress.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.places.in_progress.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            // Forget an address once it holds nothing, so the map stays as small as the
            // set of clients connected now.
            self.places.per_client.remove_if_mut(&ip, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
        }
    }
}

/// Holds a TLS connection's place from the moment it is accepted, before its handshake, for
/// as long as its socket lives. Pingora hands the raw socket to a pre-TLS callback and
/// nothing else before the handshake; the place rides on the socket in its connection
/// tracer slot (whose value is dropped with the socket), so a handshake that fails, stalls
/// until the handshake deadline, or completes and is later closed gives it back alike.
pub struct HandshakeGuard {
    places: Arc<Places>,
}

impl HandshakeGuard {
    /// Takes places from `places` (the proxy's own, see [`GuardedApp::places`]).
    pub fn new(places: Arc<Places>) -> Self {
        Self { places }
    }
}

/// The place a connection holds, as Pingora's connection tracer (it traces nothing).
#[derive(Debug, Clone)]
struct PlaceOnSocket {
    place: Arc<std::sync::Mutex<Option<Place>>>,
}

impl pingora_core::upstreams::peer::Tracing for PlaceOnSocket {
    fn on_connected(&self) {}
    /// Called as the socket is dropped, before it is closed: the place is free by the time
    /// the client sees the close (were it only dropped with the tracer, after the socket, a
    /// client reconnecting at once could still find it taken).
    fn on_disconnected(&self) {
        if let Ok(mut place) = self.place.lock() {
            place.take();
        }
    }
    fn boxed_clone(&self) -> Box<dyn pingora_core::upstreams::peer::Tracing> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl pingora_core::listeners::PreTlsProcess for HandshakeGuard {
    async fn process(
        &self,
        stream: &mut pingora_core::protocols::l4::stream::Stream,
    ) -> pingora_core::Result<()> {
        use pingora_core::protocols::GetSocketDigest;
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned())
            .and_then(|addr| addr.as_inet().map(|a| a.ip()));
        match self.places.take(client) {
            Ok(place) => {
                stream.tracer = Some(pingora_core::upstreams::peer::Tracer(Box::new(
                    PlaceOnSocket {
                        place: Arc::new(std::sync::Mutex::new(Some(place))),
                    },
                )));
                Ok(())
            }
            Err(cap) => {
                // Over a cap: close before the handshake costs anything.
                log::warn!("refusing a connection: {cap} reached");
                pingora_core::Error::e_explain(
                    pingora_core::ErrorType::AcceptError,
                    "connection cap reached",
                )
            }
        }
    }
}

/// The proxy, with a head-read timeout, a head-size limit and caps on requests in progress.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    head_timeout: Duration,
    max_header_bytes: usize,
    places: Arc<Places>,
}

impl<A> GuardedApp<A> {
    /// Wraps `inner`.
    pub fn new(
        inner: A,
        head_timeout: Duration,
        max_header_bytes: usize,
        places: Arc<Places>,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            head_timeout,
            max_header_bytes,
            places,
        }
    }
}

#[async_trait]
impl<A> HttpServerApp for GuardedApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    // Not an `async fn`: an async block keeps every argument it captured for as long as it
    // lives, so the session (688 bytes, handed on to the inner application at once) would
    // stay in each open stream's future twice. Here it is handed on before the future is
    // made, and the future holds only what it waits on.
    fn process_new_http<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        mut session: ServerSession,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let client = match session.client_addr() {
            Some(pingora_core::protocols::l4::socket::SocketAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        };
        // A TLS connection took its place when it was accepted (HandshakeGuard), and holds
        // it until it closes: that place covers its HTTP/1 requests, one at a time. Each of
        // the streams an HTTP/2 connection carries at once still takes a place of its own.
        let over_tls = session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some());
        let place = if over_tls && matches!(session, ServerSession::H1(_)) {
            None
        } else {
            match self.places.take(client) {
                Ok(place) => Some(place),
                Err(cap) => {
                    // Over a cap: close at once rather than queue (the client may retry).
                    log::warn!("refusing a connection: {cap} reached");
                    return Box::pin(std::future::ready(None));
                }
            }
        };
        if let ServerSession::H1(h1) = &mut session {
            // Answered strictly in order, one after the other (RFC 9112 §9.3.2).
            h1.set_pipelining_enabled(true);
            // A head is read no further than signet accepts one: Pingora would otherwise
            // buffer up to 1 MiB of it first.
            h1.set_max_header_size(self.max_header_bytes);
            // A request body that does not come with its head is read into a buffer that
            // lives as long as the session, 64 KiB by Pingora's default: 64 KiB more per
            // open stream behind a long prompt (BENCHMARKS.md).
            h1.set_body_buffer_size(crate::upstreams::BODY_BUFFER_BYTES);
        }
        let head = Arc::new(AtomicBool::new(false));
        let serve =
            HEAD_RECEIVED.scope(head.clone(), self.inner.process_new_http(session, shutdown));
        let head_timeout = self.head_timeout;
        Box::pin(async move {
            let _place = place;
            tokio::pin!(serve);
            tokio::select! {
                reused = &mut serve => reused,
                () = tokio::time::sleep(head_timeout) => {
                    if head.load(Ordering::Acquire) {
                        // The head came in time: the request is bounded by its own timeouts now.
                        serve.await
                    } else {
                        // Dropping the session closes the connection; nothing was forwarded.
                        log::debug!("closing a connection: no request head within {head_timeout:?}");
                        None
                    }
                }
            }
        })
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner
            .clone()
            .process_custom_session(stream, shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_is_kept_out_of_core_dumps() {
        assert!(protect_key_material().is_empty());
        assert_eq!(key_material_protection(), "RLIMIT_CORE=0/0 dumpable=0");
        let limit = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!(limit.current, Some(0));
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }

    #[test]
    fn the_descriptor_plan_raises_to_what_is_needed_within_the_hard_limit() {
        assert_eq!(descriptors_needed(16384), 33_024);
        let plan = plan_descriptors(33_024, Some(1024), Some(524_288));
        assert_eq!(plan.raise_to, Some(33_024));
        assert_eq!(plan.short_by, None);
        let plan = plan_descriptors(33_024, Some(1024), Some(4096));
        assert_eq!(plan.raise_to, Some(4096));
        assert_eq!(plan.short_by, Some(28_928));
        assert_eq!(
            plan_descriptors(100, Some(1024), None),
            DescriptorPlan {
                raise_to: None,
                short_by: None
            }
        );
        assert_eq!(plan_descriptors(5000, None, None).raise_to, None);
    }

    #[test]
    fn the_systemd_unit_gives_the_default_limits_their_descriptors() {
        let unit = include_str!("../systemd/signet.service");
        let limit: u64 = unit
            .lines()
            .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
            .expect("the unit sets LimitNOFILE")
            .trim()
            .parse()
            .unwrap();
        assert!(limit >= descriptors_needed(16384), "{limit}");
    }

    #[test]
    fn one_client_cannot_take_every_place() {
        let places = Places::new(10, 2);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = places.take(Some(a)).unwrap();
        let _second = places.take(Some(a)).unwrap();
        assert_eq!(
            places.take(Some(a)).unwrap_err(),
            "limits.max_connections_per_client"
        );
        let _other = places.take(Some(b)).unwrap();
        assert_eq!(places.in_progress.load(Ordering::Acquire), 3);
        drop(first);
        let _again = places.take(Some(a)).unwrap();
        drop(_again);
        drop(_second);
        assert!(
            places.per_client.get(&a).is_none(),
            "a client holding nothing is forgotten"
        );
        let full = Places::new(1, 5);
        let _only = full.take(None).unwrap();
        assert_eq!(full.take(None).unwrap_err(), "limits.max_connections");
    }
}
