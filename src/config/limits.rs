//! `signet.limits` and `signet.client_timeouts`: how large and how many requests may be, and
//! how long a client may stay silent.

use super::{ByteSize, ConfigError, HumanDuration, at_least_one, positive_duration};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "default_max_request_body")]
    max_request_body: ByteSize,
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: ByteSize,
    #[serde(default = "default_max_concurrent_streams")]
    max_concurrent_streams: usize,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_connections_per_client")]
    max_connections_per_client: usize,
    #[serde(default = "default_id_scan_bytes")]
    id_scan_bytes: ByteSize,
    #[serde(default = "default_json_response_bytes")]
    json_response_bytes: ByteSize,
    #[serde(default = "default_body_memory_total")]
    body_memory_total: ByteSize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_request_body: default_max_request_body(),
            max_header_bytes: default_max_header_bytes(),
            max_concurrent_streams: default_max_concurrent_streams(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            id_scan_bytes: default_id_scan_bytes(),
            json_response_bytes: default_json_response_bytes(),
            body_memory_total: default_body_memory_total(),
        }
    }
}

fn default_max_request_body() -> ByteSize {
    ByteSize(10 << 20)
}
fn default_max_header_bytes() -> ByteSize {
    ByteSize(32 << 10)
}
fn default_max_concurrent_streams() -> usize {
    4096
}
fn default_max_connections() -> usize {
    16384
}
fn default_max_connections_per_client() -> usize {
    1024
}
fn default_id_scan_bytes() -> ByteSize {
    ByteSize(64 << 10)
}
fn default_json_response_bytes() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_body_memory_total() -> ByteSize {
    ByteSize(1 << 30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientTimeouts {
    #[serde(default = "default_client_handshake_timeout")]
    handshake: HumanDuration,
    #[serde(default = "default_client_head_timeout")]
    head: HumanDuration,
    #[serde(default = "default_client_body_timeout")]
    body: HumanDuration,
    #[serde(default = "default_client_body_total_timeout")]
    body_total: HumanDuration,
    #[serde(default = "default_client_write_timeout")]
    write: HumanDuration,
}

impl Default for RawClientTimeouts {
    fn default() -> Self {
        Self {
            handshake: default_client_handshake_timeout(),
            head: default_client_head_timeout(),
            body: default_client_body_timeout(),
            body_total: default_client_body_total_timeout(),
            write: default_client_write_timeout(),
        }
    }
}

fn default_client_handshake_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_client_head_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_client_body_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_client_body_total_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_client_write_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Size and concurrency limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body on signed routes (413 beyond).
    pub max_request_body: usize,
    /// Largest request head (request line and headers), in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most requests on signed routes in flight at once (503 beyond).
    pub max_concurrent_streams: usize,
    /// Most requests being read or served at once, all routes (connections beyond are closed).
    pub max_connections: usize,
    /// Most of those from one client address (its connections beyond are closed).
    pub max_connections_per_client: usize,
    /// Most bytes of an event stream examined for its id.
    pub id_scan_bytes: usize,
    /// Largest JSON response body kept to read its id.
    pub json_response_bytes: usize,
    /// Most memory the request bodies signet holds (to check and sign them) may take, all
    /// requests together (503 beyond).
    pub body_memory_total: usize,
}

/// Timeouts toward the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Longest time from accepting a TLS connection to the end of its handshake (the
    /// connection is closed beyond).
    pub handshake: Duration,
    /// Longest silence while a client sends a request head (the connection is closed beyond).
    pub head: Duration,
    /// Longest silence while the client sends its request body (408 beyond).
    pub body: Duration,
    /// Longest time from the request head to the end of its body, however it trickles in
    /// (408 beyond).
    pub body_total: Duration,
    /// Longest wait for the client's socket to take a write: a client that stops reading is
    /// cut off (and its response is not signed).
    pub write: Duration,
}

/// A size of at least `min` bytes that fits in memory.
fn size(key: String, value: ByteSize, min: u64) -> Result<usize, ConfigError> {
    if value.0 < min {
        return Err(ConfigError::new(
            key,
            format!("must be at least {min} bytes (got {})", value.0),
        ));
    }
    usize::try_from(value.0)
        .map_err(|_| ConfigError::new(key, format!("too large (got {})", value.0)))
}

/// Checks the `limits` section.
pub(super) fn check(raw: RawLimits, key: &str) -> Result<Limits, ConfigError> {
    let at = |name: &str| format!("{key}.{name}");
    Ok(Limits {
        max_request_body: size(at("max_request_body"), raw.max_request_body, 1)?,
        max_header_bytes: size(at("max_header_bytes"), raw.max_header_bytes, 1024)?,
        max_concurrent_streams: at_least_one(
            &at("max_concurrent_streams"),
            raw.max_concurrent_streams,
        )?,
        max_connections: at_least_one(&at("max_connections"), raw.max_connections)?,
        max_connections_per_client: at_least_one(
            &at("max_connections_per_client"),
            raw.max_connections_per_client,
        )?,
        id_scan_bytes: size(at("id_scan_bytes"), raw.id_scan_bytes, 1024)?,
        json_response_bytes: size(at("json_response_bytes"), raw.json_response_bytes, 1024)?,
        // At least one largest body must fit, or such a request could never be served.
        body_memory_total: size(
            at("body_memory_total"),
            raw.body_memory_total,
            raw.max_request_body.0,
        )?,
    })
}

/// Checks the `client_timeouts` section.
pub(super) fn check_client_timeouts(
    raw: RawClientTimeouts,
    key: &str,
) -> Result<ClientTimeouts, ConfigError> {
    Ok(ClientTimeouts {
        handshake: positive_duration(&format!("{key}.handshake"), raw.handshake)?,
        head: positive_duration(&format!("{key}.head"), raw.head)?,
        body: positive_duration(&format!("{key}.body"), raw.body)?,
        body_total: positive_duration(&format!("{key}.body_total"), raw.body_total)?,
        write: positive_duration(&format!("{key}.write"), raw.write)?,
    })
}
