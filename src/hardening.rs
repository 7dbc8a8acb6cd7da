//! Process and connection hardening.
//!
//! - [`protect_key_material`]: no core dumps (RLIMIT_CORE = 0) and not dumpable
//!   (PR_SET_DUMPABLE = 0, which also keeps other users' debuggers out), so the signing key,
//!   which lives only in this process's memory, never reaches a disk through a crash.
//! - [`GuardedApp`]: wraps the proxy to bound what a client may hold before it has even sent a
//!   request: one deadline for the whole request head, idle kept-alive time included
//!   (slow-loris), and a cap on requests being read or served at once. Pingora's proxy only
//!   bounds each single read of a head by its keep-alive timeout, so a client trickling a
//!   byte a minute would hold a connection for ever, and it has no connection cap.
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
    in_progress: AtomicUsize,
}

impl<A> GuardedApp<A> {
    /// Wraps `inner`.
    pub fn new(inner: A, head_timeout: Duration, max_in_progress: usize) -> Self {
        Self {
            inner: Arc::new(inner),
            head_timeout,
            max_in_progress,
            in_progress: AtomicUsize::new(0),
        }
    }
}

/// Gives the place back when the request is done, however it ends.
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
        let before = self.in_progress.fetch_add(1, Ordering::AcqRel);
        let _place = Place(&self.in_progress);
        if before >= self.max_in_progress {
            // Over the cap: close at once rather than queue (the client may retry elsewhere).
            log::warn!(
                "refusing a connection: {} requests in progress (limits.max_connections)",
                self.max_in_progress
            );
            return None;
        }
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
}
