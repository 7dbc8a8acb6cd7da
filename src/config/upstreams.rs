//! `signet.upstream(s)`, `signet.health_check` and `signet.upstream_timeouts`: which
//! inference servers signet forwards to, how it checks them and how long it waits.

use super::{ConfigError, HumanDuration, positive_duration, yes};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_health_path")]
    path: String,
    #[serde(default = "default_health_interval")]
    interval: HumanDuration,
    #[serde(default = "default_health_timeout")]
    timeout: HumanDuration,
}

fn default_health_path() -> String {
    "/health".to_owned()
}

fn default_health_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_health_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTimeouts {
    #[serde(default = "default_connect_timeout")]
    connect: HumanDuration,
    #[serde(default = "default_first_byte_timeout")]
    first_byte: HumanDuration,
    #[serde(default = "default_idle_timeout")]
    idle: HumanDuration,
    #[serde(default = "default_write_timeout")]
    write: HumanDuration,
    #[serde(default = "default_pool_idle")]
    pool_idle: HumanDuration,
}

impl Default for RawUpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            first_byte: default_first_byte_timeout(),
            idle: default_idle_timeout(),
            write: default_write_timeout(),
            pool_idle: default_pool_idle(),
        }
    }
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_first_byte_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}
fn default_write_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_pool_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Where and how to reach the upstream inference server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// The URL as configured (for logs).
    pub url: String,
    /// Whether to speak TLS to it.
    pub tls: bool,
    /// Host name (or address text) from the URL; also the TLS SNI and the `Host` header.
    pub host: String,
    /// Port from the URL (or the scheme's default).
    pub port: u16,
    /// The address resolved at start.
    pub addr: SocketAddr,
}

impl UpstreamTarget {
    /// `host:port` as written in a `Host` header.
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Timeouts toward the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Longest silence of the upstream on a non-streamed request (it answers only when the
    /// whole completion is generated).
    pub first_byte: Duration,
    /// Longest silence of the upstream on a streamed request: before its head and between
    /// chunks.
    pub idle: Duration,
    /// Longest wait for any write of the request.
    pub write: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle: Duration,
}

/// Active health checks of the upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// Path requested with GET; a 2xx answer is healthy.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Connect and read timeout of one check.
    pub timeout: Duration,
}

fn check_health_path(path: &str, key: &str) -> Result<String, ConfigError> {
    if path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok() {
        Ok(path.to_owned())
    } else {
        Err(ConfigError::new(
            key,
            format!("must be an absolute path such as /health (got {path:?})"),
        ))
    }
}

/// Parses `http://host:port` or `https://host[:port]` (no path, query or credentials) and
/// resolves it once, at start.
pub fn parse_upstream(key: &str, url: &str) -> Result<UpstreamTarget, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            key,
            format!("{why}; write e.g. \"http://127.0.0.1:8001\" (got {url:?})"),
        )
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("must not have a path or query"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve host: {e}")))?
        .next()
        .ok_or_else(|| bad("host resolves to no address"))?;
    Ok(UpstreamTarget {
        url: url.trim().to_owned(),
        tls,
        host,
        port,
        addr,
    })
}

/// Checks `upstream` (one URL) or `upstreams` (a list): exactly one of them, every URL valid,
/// none listed twice. `root` is the section's parent path (`signet`).
pub(super) fn check_upstreams(
    one: Option<&str>,
    list: Option<&[String]>,
    root: &str,
) -> Result<Vec<UpstreamTarget>, ConfigError> {
    let upstreams = match (one, list) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("{root}.upstreams"),
                "give either `upstream` (one) or `upstreams` (a list), not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                format!("{root}.upstream"),
                "missing: the inference server's URL (or `upstreams`, a list)",
            ));
        }
        (Some(one), None) => vec![parse_upstream(&format!("{root}.upstream"), one)?],
        (None, Some([])) => {
            return Err(ConfigError::new(
                format!("{root}.upstreams"),
                "must list at least one URL",
            ));
        }
        (None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(i, url)| parse_upstream(&format!("{root}.upstreams[{i}]"), url))
            .collect::<Result<Vec<_>, _>>()?,
    };
    for (i, target) in upstreams.iter().enumerate() {
        if upstreams[..i]
            .iter()
            .any(|earlier| earlier.addr == target.addr)
        {
            return Err(ConfigError::new(
                format!("{root}.upstreams[{i}]"),
                format!("{} is listed twice", target.url),
            ));
        }
    }
    Ok(upstreams)
}

/// Checks `health_check`. Without the section, checks are on when there is a choice of
/// upstreams; a single upstream is always tried.
pub(super) fn check_health(
    raw: Option<RawHealthCheck>,
    key: &str,
    upstreams: usize,
) -> Result<Option<HealthCheckSettings>, ConfigError> {
    Ok(match raw {
        Some(hc) if !hc.enabled => None,
        Some(hc) => Some(HealthCheckSettings {
            path: check_health_path(&hc.path, &format!("{key}.path"))?,
            interval: positive_duration(&format!("{key}.interval"), hc.interval)?,
            timeout: positive_duration(&format!("{key}.timeout"), hc.timeout)?,
        }),
        None if upstreams > 1 => Some(HealthCheckSettings {
            path: default_health_path(),
            interval: default_health_interval().0,
            timeout: default_health_timeout().0,
        }),
        None => None,
    })
}

/// Checks `upstream_timeouts`: every one greater than zero.
pub(super) fn check_timeouts(
    raw: RawUpstreamTimeouts,
    key: &str,
) -> Result<UpstreamTimeouts, ConfigError> {
    let positive = |name: &str, value| positive_duration(&format!("{key}.{name}"), value);
    Ok(UpstreamTimeouts {
        connect: positive("connect", raw.connect)?,
        first_byte: positive("first_byte", raw.first_byte)?,
        idle: positive("idle", raw.idle)?,
        write: positive("write", raw.write)?,
        pool_idle: positive("pool_idle", raw.pool_idle)?,
    })
}
