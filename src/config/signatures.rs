//! `signet.signatures`: how long signatures are kept, how many, and whether they are
//! mirrored to Redis for a fleet of replicas.

use super::{ConfigError, HumanDuration, at_least_one, positive_duration, read_secret_file};
use serde::Deserialize;
use signet_core::route::{BodyFormat, IdRule, RouteTable, SignedRouteSpec};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
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
pub(super) struct RawSignatures {
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
    #[serde(default)]
    routes: RawRoutes,
}

/// `signatures.routes`: changes to the built-in set of signed routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoutes {
    #[serde(default)]
    add: Vec<RawRoute>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawBodyFormat {
    #[default]
    Json,
    Opaque,
}

/// One route an operator signs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: String,
    #[serde(default)]
    label: Option<String>,
    /// `generated`: the body carries no id, signet makes one.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    id_pointer: Option<String>,
    #[serde(default)]
    stream_event: Option<String>,
    #[serde(default)]
    stream_id_pointer: Option<String>,
    #[serde(default)]
    body: RawBodyFormat,
}

impl Default for RawSignatures {
    fn default() -> Self {
        Self {
            backend: RawBackend::Memory,
            redis: None,
            routes: RawRoutes::default(),
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
    /// The routes whose responses are signed, and where their ids are.
    pub routes: RouteTable,
}

/// Builds the route table: the built-in set, `remove` taken out, `add` put in.
fn check_routes(raw: RawRoutes, key: &str) -> Result<RouteTable, ConfigError> {
    let mut table = RouteTable::builtin();
    for (i, path) in raw.remove.iter().enumerate() {
        table
            .remove(path)
            .map_err(|e| ConfigError::new(format!("{key}.remove[{i}]"), e.to_string()))?;
    }
    for (i, route) in raw.add.into_iter().enumerate() {
        let at = format!("{key}.add[{i}]");
        let id = match route.id.as_deref() {
            Some("generated") => {
                if route.id_pointer.is_some()
                    || route.stream_event.is_some()
                    || route.stream_id_pointer.is_some()
                {
                    return Err(ConfigError::new(
                        format!("{at}.id"),
                        "`generated` takes no id_pointer, stream_event or stream_id_pointer",
                    ));
                }
                IdRule::Generated
            }
            None | Some("in_body") => {
                let json = route.id_pointer.unwrap_or_else(|| "/id".to_owned());
                IdRule::InBody {
                    stream: route.stream_id_pointer.unwrap_or_else(|| json.clone()),
                    json,
                    event: route.stream_event,
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    format!("{at}.id"),
                    format!("must be `in_body` or `generated` (got {other:?})"),
                ));
            }
        };
        let label = route.label.unwrap_or_else(|| {
            route
                .path
                .trim_start_matches('/')
                .trim_start_matches("v1/")
                .replace(['/', '-', '.'], "_")
        });
        table
            .add(SignedRouteSpec {
                path: route.path,
                label,
                id,
                body: match route.body {
                    RawBodyFormat::Json => BodyFormat::Json,
                    RawBodyFormat::Opaque => BodyFormat::Opaque,
                },
            })
            .map_err(|e| ConfigError::new(format!("{at}.path"), e.to_string()))?;
    }
    Ok(table)
}

fn redis_settings(
    raw: RawRedis,
    key: &str,
) -> Result<crate::shared_store::RedisSettings, ConfigError> {
    let scheme_ok = raw.url.starts_with("redis://") || raw.url.starts_with("rediss://");
    if !scheme_ok || raw.url.parse::<redis::ConnectionInfo>().is_err() {
        // The URL may hold a password: it is not echoed.
        return Err(ConfigError::new(
            format!("{key}.url"),
            "must be redis://host:port[/db] or rediss://host:port[/db] (TLS)",
        ));
    }
    let password = match &raw.password_file {
        None => None,
        Some(path) => Some(
            read_secret_file(&format!("{key}.password_file"), path)?
                .trim()
                .to_owned(),
        ),
    };
    if raw.key_prefix.is_empty() || raw.key_prefix.chars().any(|c| c.is_whitespace()) {
        return Err(ConfigError::new(
            format!("{key}.key_prefix"),
            "must be non-empty, without whitespace",
        ));
    }
    Ok(crate::shared_store::RedisSettings {
        url: raw.url,
        password,
        key_prefix: raw.key_prefix,
        lookup_timeout: positive_duration(&format!("{key}.lookup_timeout"), raw.lookup_timeout)?,
        backlog: raw.backlog.max(1),
    })
}

/// Checks the `signatures` section.
pub(super) fn check(raw: RawSignatures, key: &str) -> Result<SignatureSettings, ConfigError> {
    let redis_key = format!("{key}.redis");
    let redis = match (raw.backend, raw.redis) {
        (RawBackend::Memory, None) => None,
        (RawBackend::Memory, Some(_)) => {
            return Err(ConfigError::new(
                redis_key,
                "set only with `backend: redis`",
            ));
        }
        (RawBackend::Redis, None) => {
            return Err(ConfigError::new(
                redis_key,
                "missing: `backend: redis` needs `redis: {url: ...}`",
            ));
        }
        (RawBackend::Redis, Some(redis)) => Some(redis_settings(redis, &redis_key)?),
    };
    Ok(SignatureSettings {
        redis,
        ttl: positive_duration(&format!("{key}.ttl"), raw.ttl)?,
        max_entries: at_least_one(&format!("{key}.max_entries"), raw.max_entries)?,
        sweep_interval: positive_duration(&format!("{key}.sweep_interval"), raw.sweep_interval)?,
        routes: check_routes(raw.routes, &format!("{key}.routes"))?,
    })
}
