//! `signet.attestation`: which quote provider and GPU evidence source answer attestation
//! requests, and how reports are encoded, timed and cached.

use super::{ConfigError, HumanDuration, at_least_one, positive_duration};
use serde::Deserialize;
use signet_attest::settings::{
    AttestationMode, AttestationSettings, GpuEvidenceMode, NrasClaimsVersion, QuoteEncoding,
};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAttestation {
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
    #[serde(default = "default_max_concurrent")]
    max_concurrent: usize,
    #[serde(default = "default_max_waiting")]
    max_waiting: usize,
    #[serde(default = "default_per_client_per_minute")]
    per_client_per_minute: u32,
}

fn default_max_concurrent() -> usize {
    4
}
fn default_max_waiting() -> usize {
    32
}
fn default_per_client_per_minute() -> u32 {
    60
}

/// How often one client address may ask for an attestation report.
pub(super) fn per_client_per_minute(raw: &RawAttestation, key: &str) -> Result<u32, ConfigError> {
    if raw.per_client_per_minute == 0 {
        return Err(ConfigError::new(
            format!("{key}.per_client_per_minute"),
            "must be at least 1 (got 0)",
        ));
    }
    Ok(raw.per_client_per_minute)
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

/// Checks the `attestation` section (the provider itself is opened at start).
pub(super) fn check(raw: &RawAttestation, key: &str) -> Result<AttestationSettings, ConfigError> {
    Ok(AttestationSettings {
        mode: raw.mode,
        gpu: raw.gpu,
        quote_encoding: raw.quote_encoding,
        timeout: positive_duration(&format!("{key}.timeout"), raw.timeout)?,
        configfs_path: raw.configfs_path.clone(),
        dstack_socket: raw.dstack_socket.clone(),
        cache_ttl: raw.cache_ttl.0,
        nras_claims_version: raw.nras_claims_version,
        max_concurrent: at_least_one(&format!("{key}.max_concurrent"), raw.max_concurrent)?,
        max_waiting: raw.max_waiting,
    })
}
