//! `signet.signing`: where the keys come from. `random` draws every key in memory at start
//! (a restart gets new addresses); `dstack` derives each key role's key from the dstack KMS
//! through the agent's `GetKey` (the socket `signet.attestation.dstack_socket`), so a
//! restarted or replicated instance of the same application keeps its keys.

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawKeySource {
    #[default]
    Random,
    Dstack,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    #[serde(default)]
    key_source: RawKeySource,
}

/// Where the keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySource {
    /// Drawn from the operating system's RNG at start.
    #[default]
    Random,
    /// Derived from the dstack KMS (`GetKey`, one path per key role).
    Dstack,
}

impl KeySource {
    /// As configured and as reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Dstack => "dstack",
        }
    }
}

/// The `signing` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SigningSettings {
    /// Where the keys come from.
    pub key_source: KeySource,
}

pub(super) fn check(raw: RawSigning, _key: &str) -> Result<SigningSettings, ConfigError> {
    Ok(SigningSettings {
        key_source: match raw.key_source {
            RawKeySource::Random => KeySource::Random,
            RawKeySource::Dstack => KeySource::Dstack,
        },
    })
}
