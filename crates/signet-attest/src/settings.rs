//! What the attestation providers are told by the configuration: which quote provider and
//! GPU evidence source to use, and how reports are encoded, timed and cached. The server's
//! config checks the YAML and builds these.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Which TDX quote provider answers attestation requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttestationMode {
    /// The kernel's configfs-tsm interface on a TDX guest.
    Tdx,
    /// The dstack agent's unix socket (Phala dstack CVMs).
    Dstack,
    /// A mock quote for machines without TDX; never hardware-rooted.
    Dev,
}

impl AttestationMode {
    /// The name used in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationMode::Tdx => "tdx",
            AttestationMode::Dstack => "dstack",
            AttestationMode::Dev => "dev",
        }
    }
}

/// Where GPU evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuEvidenceMode {
    /// NVML's confidential-computing calls, one report per GPU.
    Nvml,
    /// A recorded fixture, marked as such.
    Dev,
    /// No GPU evidence.
    None,
}

impl GpuEvidenceMode {
    /// The name used in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuEvidenceMode::Nvml => "nvml",
            GpuEvidenceMode::Dev => "dev",
            GpuEvidenceMode::None => "none",
        }
    }
}

/// How the TDX quote is encoded in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuoteEncoding {
    /// Base64, as the seed specification shows.
    #[default]
    Base64,
    /// Lowercase hex, as existing Phala/NEAR verifiers read it.
    Hex,
}

/// Attestation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationSettings {
    /// Quote provider.
    pub mode: AttestationMode,
    /// GPU evidence source.
    pub gpu: GpuEvidenceMode,
    /// Encoding of `intel_quote`.
    pub quote_encoding: QuoteEncoding,
    /// Longest a provider may take before the request gets a 503.
    pub timeout: Duration,
    /// configfs-tsm report directory (mode `tdx`).
    pub configfs_path: PathBuf,
    /// dstack agent socket (mode `dstack`).
    pub dstack_socket: PathBuf,
    /// How long a report made for a nonce-less request may be served again.
    pub cache_ttl: Duration,
}
