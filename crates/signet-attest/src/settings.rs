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

/// The `claims_version` put in the NRAS payload (`nvidia_payload`), which tells NVIDIA's
/// Remote Attestation Service which claims schema to answer with.
///
/// NRAS `/v3/attest/gpu` answers with the 2.0 claims; 3.0 came with `/v4/attest/gpu`
/// (NRAS release 4.0.5), which takes 2.0, 3.0 and 4.0. NVIDIA's attestation SDK sends
/// `"claims_version": "2.0"` unless told otherwise, to `/v3` as well; older collectors, and
/// the dstack lineage's proxies, send no `claims_version` at all, and `/v3` accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NrasClaimsVersion {
    /// `"2.0"`: what NVIDIA's SDK sends by default; the claims `/v3` answers with.
    #[default]
    V2,
    /// `"3.0"`: every claim, even when attestation fails (`/v4/attest/gpu` only).
    V3,
    /// `"4.0"`: adds the opaque-data claims (`/v4/attest/gpu` only).
    V4,
    /// No `claims_version` key: the payload as NVIDIA's collectors and older tools build it.
    Omit,
}

impl NrasClaimsVersion {
    /// The value in the payload, or `None` for no key.
    pub fn as_payload_value(self) -> Option<&'static str> {
        match self {
            NrasClaimsVersion::V2 => Some("2.0"),
            NrasClaimsVersion::V3 => Some("3.0"),
            NrasClaimsVersion::V4 => Some("4.0"),
            NrasClaimsVersion::Omit => None,
        }
    }

    fn from_text(text: &str) -> Option<Self> {
        match text.trim() {
            "2" | "2.0" => Some(NrasClaimsVersion::V2),
            "3" | "3.0" => Some(NrasClaimsVersion::V3),
            "4" | "4.0" => Some(NrasClaimsVersion::V4),
            "none" => Some(NrasClaimsVersion::Omit),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for NrasClaimsVersion {
    /// Takes `"2.0"`, `"3.0"`, `"4.0"` or `none`, and the same numbers unquoted (YAML reads
    /// `2.0` as a number).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl Visitor {
            fn check<E: serde::de::Error>(text: String) -> Result<NrasClaimsVersion, E> {
                NrasClaimsVersion::from_text(&text).ok_or_else(|| {
                    E::custom(format!(
                        "must be \"2.0\", \"3.0\", \"4.0\" or none (got {text:?})"
                    ))
                })
            }
        }

        impl serde::de::Visitor<'_> for Visitor {
            type Value = NrasClaimsVersion;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"2.0\", \"3.0\", \"4.0\" or none")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Self::check(text.to_owned())
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self::Value, E> {
                Self::check(format!("{n:?}"))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Self::check(format!("{n}.0"))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Self::check(format!("{n}.0"))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Self::check("null".to_owned())
            }
        }

        deserializer.deserialize_any(Visitor)
    }
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
    /// `claims_version` in the NRAS payload.
    pub nras_claims_version: NrasClaimsVersion,
    /// Most fresh reports (quote + GPU evidence) being made at once.
    pub max_concurrent: usize,
    /// Most requests waiting for one of those places; beyond, a 503 at once.
    pub max_waiting: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_versions_parse_quoted_or_not() {
        for (text, version) in [
            ("\"2.0\"", NrasClaimsVersion::V2),
            ("2.0", NrasClaimsVersion::V2),
            ("2", NrasClaimsVersion::V2),
            ("\"3.0\"", NrasClaimsVersion::V3),
            ("3.0", NrasClaimsVersion::V3),
            ("\"4.0\"", NrasClaimsVersion::V4),
            ("\"none\"", NrasClaimsVersion::Omit),
        ] {
            assert_eq!(
                serde_json::from_str::<NrasClaimsVersion>(text).unwrap(),
                version,
                "{text}"
            );
        }
        for bad in ["\"2.5\"", "2.5", "\"v3\"", "\"\"", "null"] {
            let error = serde_json::from_str::<NrasClaimsVersion>(bad).unwrap_err();
            assert!(error.to_string().contains("or none"), "{bad}: {error}");
        }
        assert_eq!(NrasClaimsVersion::default().as_payload_value(), Some("2.0"));
        assert_eq!(NrasClaimsVersion::Omit.as_payload_value(), None);
    }
}
