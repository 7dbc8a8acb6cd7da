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

/// The proxy, with a head-read timeout and caps on requests in progress, overall and per
/// client address.
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

/// The proxy, with a head-read timeout and a cap on requests in progress.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    head_timeout: Duration,
    max_in_progress: usize,
    max_per_client: usize,
    in_progress: AtomicUsize,
    per_client: dashmap::DashMap<std::net::IpAddr, usize>,
}

impl<A> GuardedApp<A> {
    /// Wraps `inner`.
    pub fn new(
        inner: A,
        head_timeout: Duration,
        max_in_progress: usize,
        max_per_client: usize,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            head_timeout,
            max_in_progress,
            max_per_client,
            in_progress: AtomicUsize::new(0),
            per_client: dashmap::DashMap::new(),
        }
    }

    /// Takes a place for a request from `client`, or says which cap is full.
    fn take_place(&self, client: Option<std::net::IpAddr>) -> Result<Place<'_>, &'static str> {
        let before = self.in_progress.fetch_add(1, Ordering::AcqRel);
        let mut place = Place {
            total: &self.in_progress,
            per_client: None,
        };
        if before >= self.max_in_progress {
            return Err("limits.max_connections");
        }
        if let Some(ip) = client {
            let mut count = self.per_client.entry(ip).or_insert(0);
            *count += 1;
            let over = *count > self.max_per_client;
            drop(count);
            place.per_client = Some((&self.per_client, ip));
            if over {
                return Err("limits.max_connections_per_client");
            }
        }
        Ok(place)
    }
}

/// Gives the place back when the request is done, however it ends.
struct Place<'a> {
    total: &'a AtomicUsize,
    per_client: Option<(
        &'a dashmap::DashMap<std::net::IpAddr, usize>,
        std::net::IpAddr,
    )>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if let Some((map, ip)) = self.per_client {
            // Forget an address once it holds nothing, so the map stays as small as the
            // set of clients connected now.
            map.remove_if_mut(&ip, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
        }
    }
}

#[async_trait]
impl<A> HttpServerApp for GuardedApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let client = match session.client_addr() {
            Some(pingora_core::protocols::l4::socket::SocketAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        };
        let _place = match self.take_place(client) {
            Ok(place) => place,
            Err(cap) => {
                // Over a cap: close at once rather than queue (the client may retry).
                log::warn!("refusing a connection: {cap} reached");
                return None;
            }
        };
        if let ServerSession::H1(h1) = &mut session {
            // Answered strictly in order, one after the other (RFC 9112 §9.3.2).
            h1.set_pipelining_enabled(true);
        }
        let head = Arc::new(AtomicBool::new(false));
        let serve =
            HEAD_RECEIVED.scope(head.clone(), self.inner.process_new_http(session, shutdown));
        tokio::pin!(serve);
        tokio::select! {
            reused = &mut serve => reused,
            () = tokio::time::sleep(self.head_timeout) => {
                if head.load(Ordering::Acquire) {
                    // The head came in time: the request is bounded by its own timeouts now.
                    serve.await
                } else {
                    // Dropping the session closes the connection; nothing was forwarded.
                    log::debug!("closing a connection: no request head within {:?}", self.head_timeout);
                    None
                }
            }
        }
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
        let app = GuardedApp::new((), Duration::from_secs(1), 10, 2);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = app.take_place(Some(a)).unwrap();
        let _second = app.take_place(Some(a)).unwrap();
        assert_eq!(
            app.take_place(Some(a)).err(),
            Some("limits.max_connections_per_client")
        );
        let _other = app.take_place(Some(b)).unwrap();
        assert_eq!(app.in_progress.load(Ordering::Acquire), 3);
        drop(first);
        let _again = app.take_place(Some(a)).unwrap();
        drop(_again);
        drop(_second);
        assert!(
            app.per_client.get(&a).is_none(),
            "a client holding nothing is forgotten"
        );
        let full = GuardedApp::new((), Duration::from_secs(1), 1, 5);
        let _only = full.take_place(None).unwrap();
        assert_eq!(full.take_place(None).err(), Some("limits.max_connections"));
    }
}
