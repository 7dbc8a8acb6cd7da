//! `signet.attestation`: which quote provider and GPU evidence source answer attestation
//! requests, and how reports are encoded, timed and cached.

use super::{ConfigError, HumanDuration, positive_duration};
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
pub(super) fn check(raw: RawAttestation, key: &str) -> Result<AttestationSettings, ConfigError> {
    Ok(AttestationSettings {
        mode: raw.mode,
        gpu: raw.gpu,
        quote_encoding: raw.quote_encoding,
        timeout: positive_duration(&format!("{key}.timeout"), raw.timeout)?,
        configfs_path: raw.configfs_path,
        dstack_socket: raw.dstack_socket,
        cache_ttl: raw.cache_ttl.0,
        nras_claims_version: raw.nras_claims_version,
    })
}
