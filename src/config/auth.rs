//! `signet.auth`: the bearer tokens a client must present (from the config and from token
//! files only their owner can read). Tokens are secrets: no message ever echoes one.

use super::{ConfigError, read_secret_file};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    token_files: Vec<PathBuf>,
    #[serde(default)]
    forward_authorization: bool,
}

/// Bearer-token authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Accepted tokens (from the config and the token files).
    pub tokens: Vec<String>,
    /// Pass the client's `Authorization` header on to the upstream.
    pub forward_authorization: bool,
}

/// Collects tokens from the config and the token files (one per line; blank lines and
/// `#` comments ignored).
pub(super) fn check(raw: RawAuth, key: &str) -> Result<AuthSettings, ConfigError> {
    let mut tokens = Vec::new();
    for (i, token) in raw.tokens.into_iter().enumerate() {
        tokens.push(check_token(&format!("{key}.tokens[{i}]"), token)?);
    }
    for (i, path) in raw.token_files.iter().enumerate() {
        let file_key = format!("{key}.token_files[{i}]");
        let text = read_secret_file(&file_key, path)?;
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                tokens.push(check_token(&file_key, line.to_owned())?);
            }
        }
    }
    if tokens.is_empty() {
        return Err(ConfigError::new(
            key,
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
