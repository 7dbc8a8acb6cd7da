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
//!
//! One module per section, each checking itself (`check(raw, key) -> Result<T, ConfigError>`,
//! `key` being the section's dotted path); [`parse`] composes them.

mod aci;
mod attestation;
mod auth;
mod limits;
mod listen;
mod signatures;
mod signing;
mod upstreams;

pub use aci::{AciSettings, MAX_KEYSET_LIFETIME, NotAfter, unix_now};
pub use auth::AuthSettings;
pub use limits::{ClientTimeouts, Limits};
pub use listen::TlsSettings;
pub use signatures::SignatureSettings;
pub use signing::{KeySource, SigningSettings};
pub use upstreams::{HealthCheckSettings, UpstreamTarget, UpstreamTimeouts, parse_upstream};

use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;
pub use signet_attest::settings::{
    AttestationMode, AttestationSettings, GpuEvidenceMode, NrasClaimsVersion, QuoteEncoding,
};
use std::net::SocketAddr;
use std::path::Path;
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
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
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
    #[serde(default = "listen::default_listen")]
    listen: String,
    #[serde(default)]
    tls: Option<listen::RawTls>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    upstreams: Option<Vec<String>>,
    #[serde(default)]
    health_check: Option<upstreams::RawHealthCheck>,
    attestation: attestation::RawAttestation,
    #[serde(default)]
    auth: Option<auth::RawAuth>,
    #[serde(default)]
    signatures: signatures::RawSignatures,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    client_timeouts: limits::RawClientTimeouts,
    #[serde(default)]
    upstream_timeouts: upstreams::RawUpstreamTimeouts,
    #[serde(default)]
    admin: Option<listen::RawAdmin>,
    #[serde(default)]
    aci: aci::RawAci,
    #[serde(default)]
    signing: signing::RawSigning,
}

/// The checked `signet:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Public listener address.
    pub listen: SocketAddr,
    /// TLS on the public listener (cleartext when absent).
    pub tls: Option<TlsSettings>,
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
    /// Attestation reports one client address may ask for per minute (429 beyond).
    pub attestation_per_client_per_minute: u32,
    /// Signature store.
    pub signatures: SignatureSettings,
    /// Size limits.
    pub limits: Limits,
    /// Upstream timeouts.
    pub upstream_timeouts: UpstreamTimeouts,
    /// ACI: the keyset's subject and expiry, source provenance.
    pub aci: AciSettings,
    /// Where the keys come from.
    pub signing: SigningSettings,
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

/// `true`, for serde defaults.
fn yes() -> bool {
    true
}

/// A duration that must be greater than zero.
fn positive_duration(key: &str, value: HumanDuration) -> Result<Duration, ConfigError> {
    if value.0.is_zero() {
        Err(ConfigError::new(key, "must be greater than zero (got 0)"))
    } else {
        Ok(value.0)
    }
}

/// A count that must be at least 1.
fn at_least_one(key: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        Err(ConfigError::new(key, "must be at least 1 (got 0)"))
    } else {
        Ok(value)
    }
}

/// Reads a file holding a secret (token list, password). One readable by group or others is
/// refused: the secret would not be the service's alone.
fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    let cannot_read =
        |e: std::io::Error| ConfigError::new(key, format!("cannot read {}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(cannot_read)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ConfigError::new(
                key,
                format!(
                    "{} is readable by group or others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
    }
    std::fs::read_to_string(path).map_err(cannot_read)
}

/// Checks the `signet:` section, one section at a time.
fn validate(raw: RawSignet) -> Result<Settings, ConfigError> {
    let listen = listen::check_listen(&raw.listen, "signet.listen")?;
    let upstreams =
        upstreams::check_upstreams(raw.upstream.as_deref(), raw.upstreams.as_deref(), "signet")?;
    let aci = aci::check(raw.aci, "signet.aci", raw.tls.is_some())?;
    Ok(Settings {
        aci,
        signing: signing::check(raw.signing, "signet.signing")?,
        listen,
        tls: raw
            .tls
            .map(|tls| listen::check_tls(tls, "signet.tls"))
            .transpose()?,
        health_check: upstreams::check_health(
            raw.health_check,
            "signet.health_check",
            upstreams.len(),
        )?,
        upstreams,
        auth: raw
            .auth
            .map(|auth| auth::check(auth, "signet.auth"))
            .transpose()?,
        signatures: signatures::check(raw.signatures, "signet.signatures")?,
        limits: limits::check(raw.limits, "signet.limits")?,
        upstream_timeouts: upstreams::check_timeouts(
            raw.upstream_timeouts,
            "signet.upstream_timeouts",
        )?,
        attestation_per_client_per_minute: attestation::per_client_per_minute(
            &raw.attestation,
            "signet.attestation",
        )?,
        attestation: attestation::check(&raw.attestation, "signet.attestation")?,
        admin_listen: raw
            .admin
            .map(|admin| listen::check_admin(admin, "signet.admin", listen))
            .transpose()?,
        client_timeouts: limits::check_client_timeouts(
            raw.client_timeouts,
            "signet.client_timeouts",
        )?,
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
        assert_eq!(s.upstreams[0].addr, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(s.signatures.ttl, Duration::from_secs(300));
        assert_eq!(s.signatures.max_entries, 100_000);
        assert_eq!(s.limits.max_request_body, 10 << 20);
        assert_eq!(s.limits.body_memory_total, 1 << 30);
        assert_eq!(s.client_timeouts.handshake, Duration::from_secs(10));
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

        // At least one largest body must fit in the body memory.
        let e = error_of(&format!(
            "{MINIMAL}  limits:\n    max_request_body: 2MiB\n    body_memory_total: 1MiB\n"
        ));
        assert_eq!(e.key, "signet.limits.body_memory_total");

        let e = error_of(&format!("{MINIMAL}  client_timeouts:\n    handshake: 0s\n"));
        assert_eq!(e.key, "signet.client_timeouts.handshake");

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
