//! Configuration: one YAML file with Pingora's server keys at the top level and signet's own
//! strict `signet:` section.
//!
//! Two layers, as everywhere in signet: raw serde structs that refuse unknown keys, then
//! [`Settings`], typed and checked. Every error names the key it is about
//! (`signet.signatures.ttl: must be greater than zero (got "0s")`). Pingora's `ServerConf`
//! ignores unknown keys by design; signet checks the top-level keys against the ones Pingora
//! knows, so a typo there is an error too, not a silent default.
//!
//! The parsed configuration is never logged: later sections hold secrets (token files).

use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;
pub use signet_attest::settings::{
    AttestationMode, AttestationSettings, GpuEvidenceMode, NrasClaimsVersion, QuoteEncoding,
};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, with the dotted key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `signet.signatures.ttl` (or the file path for I/O errors).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A duration written for humans: `5m`, `30s`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "not a duration ({e}); write e.g. \"30s\", \"5m\", \"500ms\" (got {text:?})"
                ))
            })
    }
}

/// A size in bytes: an integer, or a number with a unit (`64KiB`, `10MiB`, `1GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `123`, `64KiB`, `10 MiB`, `1GB` (decimal and binary units, case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            _ => return None,
        };
        number.checked_mul(multiplier).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => ByteSize::parse(&text).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "not a size; write e.g. 65536, \"64KiB\", \"10MiB\" (got {text:?})"
                ))
            }),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignet {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    upstreams: Option<Vec<String>>,
    #[serde(default)]
    health_check: Option<RawHealthCheck>,
    attestation: RawAttestation,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    signatures: RawSignatures,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    client_timeouts: RawClientTimeouts,
    #[serde(default)]
    upstream_timeouts: RawUpstreamTimeouts,
    #[serde(default)]
    admin: Option<RawAdmin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default = "yes")]
    h2: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
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
struct RawAuth {
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    token_files: Vec<PathBuf>,
    #[serde(default)]
    forward_authorization: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientTimeouts {
    #[serde(default = "default_client_head_timeout")]
    head: HumanDuration,
    #[serde(default = "default_client_body_timeout")]
    body: HumanDuration,
}

impl Default for RawClientTimeouts {
    fn default() -> Self {
        Self {
            head: default_client_head_timeout(),
            body: default_client_body_timeout(),
        }
    }
}

fn default_client_head_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_client_body_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_listen() -> String {
    "127.0.0.1:8000".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttestation {
    mode: AttestationMode,
    gpu: GpuEvidenceMode,
    #[serde(default)]
    quote_encoding: QuoteEncoding,
    #[serde(default = "default_attestation_timeout")]
    timeout: HumanDuration,
    #[serde(default = "default_configfs_path")]
    configfs_path: PathBuf,
    #[serde(default = "default_dstack_socket")]
    dstack_socket: PathBuf,
    #[serde(default = "default_report_cache")]
    cache_ttl: HumanDuration,
    #[serde(default)]
    nras_claims_version: NrasClaimsVersion,
}

fn default_attestation_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_configfs_path() -> PathBuf {
    PathBuf::from("/sys/kernel/config/tsm/report")
}
fn default_dstack_socket() -> PathBuf {
    PathBuf::from("/var/run/dstack.sock")
}
fn default_report_cache() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default = "default_key_prefix")]
    key_prefix: String,
    #[serde(default = "default_lookup_timeout")]
    lookup_timeout: HumanDuration,
    #[serde(default = "default_backlog")]
    backlog: usize,
}

fn default_key_prefix() -> String {
    "signet:sig:".to_owned()
}
fn default_lookup_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_backlog() -> usize {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignatures {
    #[serde(default)]
    backend: RawBackend,
    #[serde(default)]
    redis: Option<RawRedis>,
    #[serde(default = "default_ttl")]
    ttl: HumanDuration,
    #[serde(default = "default_max_entries")]
    max_entries: usize,
    #[serde(default = "default_sweep_interval")]
    sweep_interval: HumanDuration,
}

impl Default for RawSignatures {
    fn default() -> Self {
        Self {
            backend: RawBackend::Memory,
            redis: None,
            ttl: default_ttl(),
            max_entries: default_max_entries(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

fn default_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_max_entries() -> usize {
    100_000
}
fn default_sweep_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_max_request_body")]
    max_request_body: ByteSize,
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: ByteSize,
    #[serde(default = "default_max_concurrent_streams")]
    max_concurrent_streams: usize,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_event_scan")]
    id_scan_bytes: ByteSize,
    #[serde(default = "default_json_copy")]
    json_response_bytes: ByteSize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_request_body: default_max_request_body(),
            max_header_bytes: default_max_header_bytes(),
            max_concurrent_streams: default_max_concurrent_streams(),
            max_connections: default_max_connections(),
            id_scan_bytes: default_event_scan(),
            json_response_bytes: default_json_copy(),
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
fn default_event_scan() -> ByteSize {
    ByteSize(64 << 10)
}
fn default_json_copy() -> ByteSize {
    ByteSize(8 << 20)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTimeouts {
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

/// Signature store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSettings {
    /// Mirror signatures to Redis for a fleet of replicas (`backend: redis`).
    pub redis: Option<crate::shared_store::RedisSettings>,
    /// How long a signature stays retrievable.
    pub ttl: Duration,
    /// Most signatures kept; the oldest go first.
    pub max_entries: usize,
    /// How often expired signatures are swept.
    pub sweep_interval: Duration,
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
    /// Most bytes of an event stream examined for its id.
    pub id_scan_bytes: usize,
    /// Largest JSON response body kept to read its id.
    pub json_response_bytes: usize,
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

/// TLS on the public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Offer HTTP/2 through ALPN (HTTP/1.1 always).
    pub h2: bool,
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

/// Bearer-token authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Accepted tokens (from the config and the token files).
    pub tokens: Vec<String>,
    /// Pass the client's `Authorization` header on to the upstream.
    pub forward_authorization: bool,
}

/// Timeouts toward the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Longest silence while a client sends a request head (the connection is closed beyond).
    pub head: Duration,
    /// Longest silence while the client sends its request body (408 beyond).
    pub body: Duration,
}

/// The checked `signet:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Public listener address.
    pub listen: SocketAddr,
    /// TLS on the public listener (cleartext when absent).
    pub tls: Option<TlsSettings>,
    /// The first upstream (the only one in the one-entry form).
    pub upstream: UpstreamTarget,
    /// Every upstream, balanced round-robin.
    pub upstreams: Vec<UpstreamTarget>,
    /// Health checks (off when `None`).
    pub health_check: Option<HealthCheckSettings>,
    /// Bearer tokens (off when `None`).
    pub auth: Option<AuthSettings>,
    /// Timeouts toward the client.
    pub client_timeouts: ClientTimeouts,
    /// Admin listener serving Prometheus metrics (off when `None`).
    pub admin_listen: Option<SocketAddr>,
    /// Attestation.
    pub attestation: AttestationSettings,
    /// Signature store.
    pub signatures: SignatureSettings,
    /// Size limits.
    pub limits: Limits,
    /// Upstream timeouts.
    pub upstream_timeouts: UpstreamTimeouts,
}

/// The whole file, checked: Pingora's part and signet's.
#[derive(Debug)]
pub struct LoadedConfig {
    /// Pingora's server configuration.
    pub server: ServerConf,
    /// signet's settings.
    pub settings: Settings,
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))?;
    parse(&text)
}

/// Checks configuration text.
pub fn parse(text: &str) -> Result<LoadedConfig, ConfigError> {
    let document: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| ConfigError::new("(file)", format!("not valid YAML: {e}")))?;
    let serde_yaml::Value::Mapping(mut top) = document else {
        return Err(ConfigError::new(
            "(file)",
            "must be a YAML mapping with a `signet:` section",
        ));
    };
    let signet = top
        .remove("signet")
        .ok_or_else(|| ConfigError::new("signet", "missing section"))?;

    check_top_level_keys(&top)?;
    let server: ServerConf = deserialize_at("", serde_yaml::Value::Mapping(top))?;
    let server = server
        .validate()
        .map_err(|e| ConfigError::new("(pingora)", e.to_string()))?;

    let raw: RawSignet = deserialize_at("signet", signet)?;
    let settings = validate(raw)?;
    Ok(LoadedConfig { server, settings })
}

fn deserialize_at<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: serde_yaml::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let key = match (prefix.is_empty(), inner.as_str()) {
            (true, ".") => "(top level)".to_owned(),
            (true, _) => inner,
            (false, ".") => prefix.to_owned(),
            (false, _) => format!("{prefix}.{inner}"),
        };
        ConfigError::new(key, e.into_inner().to_string())
    })
}

/// Pingora would silently ignore a misspelt key such as `grace_period_second`; signet
/// refuses it, naming it.
fn check_top_level_keys(top: &serde_yaml::Mapping) -> Result<(), ConfigError> {
    let known = match serde_yaml::to_value(ServerConf::default()) {
        Ok(serde_yaml::Value::Mapping(known)) => known,
        _ => return Ok(()),
    };
    for key in top.keys() {
        let name = key.as_str().unwrap_or("(non-text key)");
        if !known.contains_key(key) {
            return Err(ConfigError::new(
                name,
                "unknown key: neither a Pingora server key nor `signet`",
            ));
        }
    }
    Ok(())
}

fn validate(raw: RawSignet) -> Result<Settings, ConfigError> {
    let listen: SocketAddr = raw.listen.trim().parse().map_err(|_| {
        ConfigError::new(
            "signet.listen",
            format!(
                "must be IP:PORT, e.g. \"127.0.0.1:8000\" (got {:?})",
                raw.listen
            ),
        )
    })?;
    let upstreams = match (&raw.upstream, &raw.upstreams) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "signet.upstreams",
                "give either `upstream` (one) or `upstreams` (a list), not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                "signet.upstream",
                "missing: the inference server's URL (or `upstreams`, a list)",
            ));
        }
        (Some(one), None) => vec![parse_upstream("signet.upstream", one)?],
        (None, Some(list)) if list.is_empty() => {
            return Err(ConfigError::new(
                "signet.upstreams",
                "must list at least one URL",
            ));
        }
        (None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(i, url)| parse_upstream(&format!("signet.upstreams[{i}]"), url))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let upstream = upstreams[0].clone();
    for (i, target) in upstreams.iter().enumerate() {
        if upstreams[..i]
            .iter()
            .any(|earlier| earlier.addr == target.addr)
        {
            return Err(ConfigError::new(
                format!("signet.upstreams[{i}]"),
                format!("{} is listed twice", target.url),
            ));
        }
    }
    let health_check = match raw.health_check {
        Some(hc) if !hc.enabled => None,
        Some(hc) => Some(HealthCheckSettings {
            path: check_health_path(&hc.path)?,
            interval: positive_duration("signet.health_check.interval", hc.interval)?,
            timeout: positive_duration("signet.health_check.timeout", hc.timeout)?,
        }),
        // On by default when there is a choice of upstreams; a single upstream is always tried.
        None if upstreams.len() > 1 => Some(HealthCheckSettings {
            path: default_health_path(),
            interval: default_health_interval().0,
            timeout: default_health_timeout().0,
        }),
        None => None,
    };
    let tls = raw
        .tls
        .map(|t| {
            for (key, path) in [("signet.tls.cert", &t.cert), ("signet.tls.key", &t.key)] {
                std::fs::metadata(path).map_err(|e| {
                    ConfigError::new(key, format!("cannot read {}: {e}", path.display()))
                })?;
            }
            Ok::<_, ConfigError>(TlsSettings {
                cert: t.cert,
                key: t.key,
                h2: t.h2,
            })
        })
        .transpose()?;
    let auth = raw.auth.map(load_auth).transpose()?;

    let positive = positive_duration;
    let redis = match (raw.signatures.backend, raw.signatures.redis) {
        (RawBackend::Memory, None) => None,
        (RawBackend::Memory, Some(_)) => {
            return Err(ConfigError::new(
                "signet.signatures.redis",
                "set only with `backend: redis`",
            ));
        }
        (RawBackend::Redis, None) => {
            return Err(ConfigError::new(
                "signet.signatures.redis",
                "missing: `backend: redis` needs `redis: {url: ...}`",
            ));
        }
        (RawBackend::Redis, Some(redis)) => Some(redis_settings(redis)?),
    };
    let signatures = SignatureSettings {
        redis,
        ttl: positive("signet.signatures.ttl", raw.signatures.ttl)?,
        max_entries: match raw.signatures.max_entries {
            0 => {
                return Err(ConfigError::new(
                    "signet.signatures.max_entries",
                    "must be at least 1 (got 0)",
                ));
            }
            n => n,
        },
        sweep_interval: positive(
            "signet.signatures.sweep_interval",
            raw.signatures.sweep_interval,
        )?,
    };
    let size = |key: &str, value: ByteSize, min: u64| {
        if value.0 < min {
            return Err(ConfigError::new(
                key,
                format!("must be at least {min} bytes (got {})", value.0),
            ));
        }
        usize::try_from(value.0)
            .map_err(|_| ConfigError::new(key, format!("too large (got {})", value.0)))
    };
    let limits = Limits {
        max_request_body: size(
            "signet.limits.max_request_body",
            raw.limits.max_request_body,
            1,
        )?,
        max_header_bytes: size(
            "signet.limits.max_header_bytes",
            raw.limits.max_header_bytes,
            1024,
        )?,
        max_concurrent_streams: match raw.limits.max_concurrent_streams {
            0 => {
                return Err(ConfigError::new(
                    "signet.limits.max_concurrent_streams",
                    "must be at least 1 (got 0)",
                ));
            }
            n => n,
        },
        max_connections: match raw.limits.max_connections {
            0 => {
                return Err(ConfigError::new(
                    "signet.limits.max_connections",
                    "must be at least 1 (got 0)",
                ));
            }
            n => n,
        },
        id_scan_bytes: size(
            "signet.limits.id_scan_bytes",
            raw.limits.id_scan_bytes,
            1024,
        )?,
        json_response_bytes: size(
            "signet.limits.json_response_bytes",
            raw.limits.json_response_bytes,
            1024,
        )?,
    };
    let upstream_timeouts = UpstreamTimeouts {
        connect: positive(
            "signet.upstream_timeouts.connect",
            raw.upstream_timeouts.connect,
        )?,
        first_byte: positive(
            "signet.upstream_timeouts.first_byte",
            raw.upstream_timeouts.first_byte,
        )?,
        idle: positive("signet.upstream_timeouts.idle", raw.upstream_timeouts.idle)?,
        write: positive(
            "signet.upstream_timeouts.write",
            raw.upstream_timeouts.write,
        )?,
        pool_idle: positive(
            "signet.upstream_timeouts.pool_idle",
            raw.upstream_timeouts.pool_idle,
        )?,
    };
    let attestation = AttestationSettings {
        mode: raw.attestation.mode,
        gpu: raw.attestation.gpu,
        quote_encoding: raw.attestation.quote_encoding,
        timeout: positive("signet.attestation.timeout", raw.attestation.timeout)?,
        configfs_path: raw.attestation.configfs_path,
        dstack_socket: raw.attestation.dstack_socket,
        cache_ttl: raw.attestation.cache_ttl.0,
        nras_claims_version: raw.attestation.nras_claims_version,
    };
    let admin_listen = raw
        .admin
        .map(|admin| {
            admin.listen.trim().parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "signet.admin.listen",
                    format!(
                        "must be IP:PORT, e.g. \"127.0.0.1:9100\" (got {:?})",
                        admin.listen
                    ),
                )
            })
        })
        .transpose()?;
    if admin_listen == Some(listen) {
        return Err(ConfigError::new(
            "signet.admin.listen",
            "must differ from signet.listen: metrics stay off the public port",
        ));
    }
    let client_timeouts = ClientTimeouts {
        head: positive("signet.client_timeouts.head", raw.client_timeouts.head)?,
        body: positive("signet.client_timeouts.body", raw.client_timeouts.body)?,
    };
    Ok(Settings {
        listen,
        tls,
        upstream,
        upstreams,
        health_check,
        auth,
        client_timeouts,
        admin_listen,
        attestation,
        signatures,
        limits,
        upstream_timeouts,
    })
}

fn redis_settings(raw: RawRedis) -> Result<crate::shared_store::RedisSettings, ConfigError> {
    let key = "signet.signatures.redis.url";
    let scheme_ok = raw.url.starts_with("redis://") || raw.url.starts_with("rediss://");
    if !scheme_ok || raw.url.parse::<redis::ConnectionInfo>().is_err() {
        // The URL may hold a password: it is not echoed.
        return Err(ConfigError::new(
            key,
            "must be redis://host:port[/db] or rediss://host:port[/db] (TLS)",
        ));
    }
    let password = match &raw.password_file {
        None => None,
        Some(path) => {
            let key = "signet.signatures.redis.password_file";
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(path).map_err(|e| {
                    ConfigError::new(key, format!("cannot read {}: {e}", path.display()))
                })?;
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "{} is readable by group or others; chmod 600 it",
                            path.display()
                        ),
                    ));
                }
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(key, format!("cannot read {}: {e}", path.display()))
            })?;
            Some(text.trim().to_owned())
        }
    };
    if raw.key_prefix.is_empty() || raw.key_prefix.chars().any(|c| c.is_whitespace()) {
        return Err(ConfigError::new(
            "signet.signatures.redis.key_prefix",
            "must be non-empty, without whitespace",
        ));
    }
    Ok(crate::shared_store::RedisSettings {
        url: raw.url,
        password,
        key_prefix: raw.key_prefix,
        lookup_timeout: positive_duration(
            "signet.signatures.redis.lookup_timeout",
            raw.lookup_timeout,
        )?,
        backlog: raw.backlog.max(1),
    })
}

fn positive_duration(key: &str, value: HumanDuration) -> Result<Duration, ConfigError> {
    if value.0.is_zero() {
        Err(ConfigError::new(key, "must be greater than zero (got 0)"))
    } else {
        Ok(value.0)
    }
}

fn check_health_path(path: &str) -> Result<String, ConfigError> {
    if path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok() {
        Ok(path.to_owned())
    } else {
        Err(ConfigError::new(
            "signet.health_check.path",
            format!("must be an absolute path such as /health (got {path:?})"),
        ))
    }
}

/// Collects tokens from the config and the token files (one per line; blank lines and
/// `#` comments ignored). Files readable by group or others are refused: tokens are secrets.
fn load_auth(raw: RawAuth) -> Result<AuthSettings, ConfigError> {
    let mut tokens = Vec::new();
    for (i, token) in raw.tokens.into_iter().enumerate() {
        tokens.push(check_token(&format!("signet.auth.tokens[{i}]"), token)?);
    }
    for (i, path) in raw.token_files.iter().enumerate() {
        let key = format!("signet.auth.token_files[{i}]");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| {
                ConfigError::new(&key, format!("cannot read {}: {e}", path.display()))
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "{} is readable by group or others (mode {:o}); chmod 600 it",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    ),
                ));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&key, format!("cannot read {}: {e}", path.display())))?;
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                tokens.push(check_token(&key, line.to_owned())?);
            }
        }
    }
    if tokens.is_empty() {
        return Err(ConfigError::new(
            "signet.auth",
            "no tokens: list `tokens` or `token_files`, or remove the section",
        ));
    }
    Ok(AuthSettings {
        tokens,
        forward_authorization: raw.forward_authorization,
    })
}

fn check_token(key: &str, token: String) -> Result<String, ConfigError> {
    // The value itself never goes into a message: it is a secret.
    if token.len() < 16 {
        return Err(ConfigError::new(
            key,
            "a token must be at least 16 characters",
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            key,
            "a token may contain only visible ASCII characters",
        ));
    }
    Ok(token)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
version: 1
threads: 2
signet:
  upstream: http://127.0.0.1:8001
  attestation:
    mode: dev
    gpu: none
";

    fn error_of(text: &str) -> ConfigError {
        parse(text).unwrap_err()
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let loaded = parse(MINIMAL).unwrap();
        let s = loaded.settings;
        assert_eq!(loaded.server.threads, 2);
        assert_eq!(s.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(s.upstream.addr, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(s.signatures.ttl, Duration::from_secs(300));
        assert_eq!(s.signatures.max_entries, 100_000);
        assert_eq!(s.limits.max_request_body, 10 << 20);
        assert_eq!(s.attestation.mode, AttestationMode::Dev);
        assert_eq!(s.attestation.quote_encoding, QuoteEncoding::Base64);
        assert_eq!(s.attestation.nras_claims_version, NrasClaimsVersion::V2);
    }

    #[test]
    fn the_nras_claims_version_is_checked() {
        for (text, version) in [
            ("2.0", NrasClaimsVersion::V2),
            ("\"3.0\"", NrasClaimsVersion::V3),
            ("4.0", NrasClaimsVersion::V4),
            ("none", NrasClaimsVersion::Omit),
        ] {
            let yaml = MINIMAL.replace(
                "gpu: none",
                &format!("gpu: none\n    nras_claims_version: {text}"),
            );
            assert_eq!(
                parse(&yaml)
                    .unwrap()
                    .settings
                    .attestation
                    .nras_claims_version,
                version
            );
        }
        let e = error_of(&MINIMAL.replace("gpu: none", "gpu: none\n    nras_claims_version: 5.0"));
        assert_eq!(
            e.to_string(),
            "signet.attestation.nras_claims_version: must be \"2.0\", \"3.0\", \"4.0\" or none (got \"5.0\")"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = error_of(&format!("{MINIMAL}  colour: blue\n"));
        assert_eq!(e.key, "signet.colour");
        assert!(e.message.contains("colour"), "{e}");

        let e = error_of(&MINIMAL.replace("gpu: none", "gpu: none\n    moed: dev"));
        assert_eq!(e.key, "signet.attestation.moed");
        assert!(e.message.contains("unknown field"), "{e}");

        let e = error_of(&MINIMAL.replace("threads: 2", "thread: 2"));
        assert_eq!(e.key, "thread");
    }

    #[test]
    fn bad_values_are_named_with_what_was_given() {
        let e = error_of(&format!("{MINIMAL}  signatures:\n    ttl: 0s\n"));
        assert_eq!(
            e.to_string(),
            "signet.signatures.ttl: must be greater than zero (got 0)"
        );

        let e = error_of(&format!("{MINIMAL}  signatures:\n    ttl: soon\n"));
        assert_eq!(e.key, "signet.signatures.ttl");
        assert!(e.message.contains("\"soon\""), "{e}");

        let e = error_of(&MINIMAL.replace("mode: dev", "mode: sgx"));
        assert_eq!(e.key, "signet.attestation.mode");

        let e = error_of(&MINIMAL.replace("http://127.0.0.1:8001", "ftp://x"));
        assert_eq!(e.key, "signet.upstream");

        let e = error_of(&MINIMAL.replace(
            "upstream: http://127.0.0.1:8001",
            "upstreams: [\"http://127.0.0.1:8001\", \"http://127.0.0.1:8001\"]",
        ));
        assert_eq!(e.key, "signet.upstreams[1]");

        let e = error_of(&format!("{MINIMAL}  auth:\n    tokens: [\"short\"]\n"));
        assert_eq!(e.key, "signet.auth.tokens[0]");
        assert!(!e.message.contains("short"), "never echo a token: {e}");

        let e = error_of(&format!(
            "{MINIMAL}  tls:\n    cert: /nonexistent.pem\n    key: /nonexistent.key\n"
        ));
        assert_eq!(e.key, "signet.tls.cert");

        let e = error_of(&format!("{MINIMAL}  listen: localhost\n"));
        assert_eq!(e.key, "signet.listen");

        let e = error_of(&format!(
            "{MINIMAL}  limits:\n    max_request_body: 10 parsecs\n"
        ));
        assert_eq!(e.key, "signet.limits.max_request_body");

        let e = error_of(&MINIMAL.replace("threads: 2", "threads: many"));
        assert_eq!(e.key, "threads");
    }

    #[test]
    fn attestation_mode_must_be_chosen_explicitly() {
        let e = error_of(&MINIMAL.replace("    mode: dev\n", ""));
        assert_eq!(e.key, "signet.attestation");
        assert!(e.message.contains("mode"), "{e}");
    }

    #[test]
    fn sizes_and_upstreams_parse() {
        assert_eq!(ByteSize::parse("64KiB"), Some(ByteSize(65_536)));
        assert_eq!(ByteSize::parse("10 MiB"), Some(ByteSize(10 << 20)));
        assert_eq!(ByteSize::parse("1GB"), Some(ByteSize(1_000_000_000)));
        assert_eq!(ByteSize::parse("12"), Some(ByteSize(12)));
        assert_eq!(ByteSize::parse("x"), None);
        assert_eq!(ByteSize::parse("99999999999999999999GiB"), None);

        let up = parse_upstream("k", "https://127.0.0.1").unwrap();
        assert!(up.tls);
        assert_eq!(up.port, 443);
        assert_eq!(up.authority(), "127.0.0.1");
        let up = parse_upstream("k", "http://[::1]:9000/").unwrap();
        assert_eq!(up.authority(), "[::1]:9000");
        assert!(parse_upstream("k", "http://127.0.0.1:8001/v1").is_err());
        assert!(parse_upstream("k", "http://u:p@127.0.0.1:8001").is_err());
    }
}
