//! `signet.listen`, `signet.tls` and `signet.admin`: where signet listens, with what
//! certificate, and where the metrics listener is.

use super::{ConfigError, yes};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default = "yes")]
    h2: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: String,
}

pub(super) fn default_listen() -> String {
    "127.0.0.1:8000".to_owned()
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

/// Checks `listen` (`key`: its dotted path).
pub(super) fn check_listen(raw: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    raw.trim().parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("must be IP:PORT, e.g. \"127.0.0.1:8000\" (got {raw:?})"),
        )
    })
}

/// Checks the `tls` section: both files must be readable now.
pub(super) fn check_tls(raw: RawTls, key: &str) -> Result<TlsSettings, ConfigError> {
    for (name, path) in [("cert", &raw.cert), ("key", &raw.key)] {
        std::fs::metadata(path).map_err(|e| {
            ConfigError::new(
                format!("{key}.{name}"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
    }
    Ok(TlsSettings {
        cert: raw.cert,
        key: raw.key,
        h2: raw.h2,
    })
}

/// Checks the `admin` section: an address other than the public listener's.
pub(super) fn check_admin(
    raw: RawAdmin,
    key: &str,
    public: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    let key = format!("{key}.listen");
    let listen = raw.listen.trim().parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            &key,
            format!(
                "must be IP:PORT, e.g. \"127.0.0.1:9100\" (got {:?})",
                raw.listen
            ),
        )
    })?;
    if listen == public {
        return Err(ConfigError::new(
            key,
            "must differ from signet.listen: metrics stay off the public port",
        ));
    }
    Ok(listen)
}
