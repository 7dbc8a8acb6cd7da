//! `signet.aci`: the ACI keyset's `subject`, its expiry (`not_after`), the hostname its TLS
//! entry is restricted to, and the source provenance the report publishes.
//!
//! `not_after` is an absolute Unix time or a duration after start. One in the past, or more
//! than [`MAX_KEYSET_LIFETIME`] ahead (a verifier should reject an implausibly distant
//! expiry, ACI §3.1), is refused at start, naming the key.

use super::ConfigError;
use serde::Deserialize;
use signet_core::aci::SourceProvenance;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a keyset may live: 366 days.
pub const MAX_KEYSET_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawNotAfter {
    Unix(u64),
    Text(String),
}

fn default_not_after() -> RawNotAfter {
    RawNotAfter::Text("30d".to_owned())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvenance {
    #[serde(default)]
    repo_url: Option<String>,
    #[serde(default)]
    repo_commit: Option<String>,
    #[serde(default)]
    image_digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAci {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default = "default_not_after")]
    not_after: RawNotAfter,
    #[serde(default)]
    tls_domain: Option<String>,
    #[serde(default)]
    source_provenance: RawProvenance,
}

impl Default for RawAci {
    fn default() -> Self {
        Self {
            subject: None,
            not_after: default_not_after(),
            tls_domain: None,
            source_provenance: RawProvenance::default(),
        }
    }
}

/// When the keyset expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAfter {
    /// At this Unix time.
    At(u64),
    /// This long after the process started.
    AfterStart(Duration),
}

impl NotAfter {
    /// The Unix time, for a process started at `start` (Unix seconds).
    pub fn resolve(self, start: u64) -> u64 {
        match self {
            NotAfter::At(at) => at,
            NotAfter::AfterStart(lifetime) => start.saturating_add(lifetime.as_secs()),
        }
    }
}

/// The checked `signet.aci` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AciSettings {
    /// The keyset's `subject` (`null` when absent).
    pub subject: Option<String>,
    /// The keyset's expiry.
    pub not_after: NotAfter,
    /// The hostname the TLS entry of the keyset is restricted to (needs `signet.tls`).
    pub tls_domain: Option<String>,
    /// Source provenance; `None` when nothing is configured (the report says `null`).
    pub source_provenance: Option<SourceProvenance>,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn printable(key: &str, text: &str, what: &str) -> Result<(), ConfigError> {
    if text.is_empty() || text.len() > 512 || text.chars().any(char::is_control) {
        return Err(ConfigError::new(
            key,
            format!("must be {what}: 1 to 512 printable characters"),
        ));
    }
    Ok(())
}

fn check_not_after(raw: RawNotAfter, key: &str, now: u64) -> Result<NotAfter, ConfigError> {
    let max = MAX_KEYSET_LIFETIME.as_secs();
    let not_after = match raw {
        RawNotAfter::Unix(at) => NotAfter::At(at),
        RawNotAfter::Text(text) => match humantime::parse_duration(text.trim()) {
            Ok(lifetime) => NotAfter::AfterStart(lifetime),
            Err(_) => match signet_verify::parse_rfc3339(text.trim()) {
                Some(at) => NotAfter::At(at),
                None => {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "must be a Unix time, an RFC 3339 time or a duration after start \
                             such as \"30d\" (got {text:?})"
                        ),
                    ));
                }
            },
        },
    };
    match not_after {
        NotAfter::At(at) if at <= now => Err(ConfigError::new(
            key,
            format!("is in the past ({at}, now {now}): the keyset would be expired"),
        )),
        NotAfter::At(at) if at - now > max => Err(ConfigError::new(
            key,
            format!("is implausibly far ({at}): at most 366 days from now"),
        )),
        NotAfter::AfterStart(lifetime) if lifetime.as_secs() == 0 => {
            Err(ConfigError::new(key, "must be greater than zero (got 0)"))
        }
        NotAfter::AfterStart(lifetime) if lifetime.as_secs() > max => Err(ConfigError::new(
            key,
            format!(
                "is implausibly far ({}): at most 366 days",
                humantime::format_duration(lifetime)
            ),
        )),
        ok => Ok(ok),
    }
}

fn check_provenance(
    raw: RawProvenance,
    key: &str,
) -> Result<Option<SourceProvenance>, ConfigError> {
    if let Some(url) = &raw.repo_url {
        let ok = url.starts_with("https://")
            && url.len() > "https://".len()
            && url.len() <= 512
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(ConfigError::new(
                format!("{key}.repo_url"),
                "must be an https:// URL without spaces",
            ));
        }
    }
    if let Some(commit) = &raw.repo_commit {
        let ok = (7..=64).contains(&commit.len())
            && commit
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(ConfigError::new(
                format!("{key}.repo_commit"),
                format!("must be a git commit: 7 to 64 lowercase hex characters (got {commit:?})"),
            ));
        }
    }
    if let Some(digest) = &raw.image_digest {
        let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if !ok {
            return Err(ConfigError::new(
                format!("{key}.image_digest"),
                format!("must be sha256:<64 lowercase hex> (got {digest:?})"),
            ));
        }
    }
    if raw.repo_url.is_none() && raw.repo_commit.is_none() && raw.image_digest.is_none() {
        return Ok(None);
    }
    Ok(Some(SourceProvenance {
        repo_url: raw.repo_url,
        repo_commit: raw.repo_commit,
        image_digest: raw.image_digest,
        image_provenance: None,
    }))
}

/// Checks the `aci` section; `tls` says whether signet terminates TLS.
pub(super) fn check(raw: RawAci, key: &str, tls: bool) -> Result<AciSettings, ConfigError> {
    if let Some(subject) = &raw.subject {
        printable(&format!("{key}.subject"), subject, "a name")?;
    }
    if let Some(domain) = &raw.tls_domain {
        let domain_key = format!("{key}.tls_domain");
        let ok = !domain.is_empty()
            && domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !ok {
            return Err(ConfigError::new(
                domain_key,
                format!("must be a host name (letters, digits, - and .) (got {domain:?})"),
            ));
        }
        if !tls {
            return Err(ConfigError::new(
                domain_key,
                "set only with signet.tls: the keyset lists a TLS key only when signet serves one",
            ));
        }
    }
    Ok(AciSettings {
        subject: raw.subject,
        not_after: check_not_after(raw.not_after, &format!("{key}.not_after"), unix_now())?,
        tls_domain: raw.tls_domain,
        source_provenance: check_provenance(
            raw.source_provenance,
            &format!("{key}.source_provenance"),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_after(raw: RawNotAfter) -> Result<NotAfter, ConfigError> {
        check_not_after(raw, "signet.aci.not_after", 1_800_000_000)
    }

    #[test]
    fn not_after_is_a_time_or_a_lifetime_within_bounds() {
        assert_eq!(
            not_after(RawNotAfter::Text("30d".to_owned())),
            Ok(NotAfter::AfterStart(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(
            not_after(RawNotAfter::Unix(1_800_086_400)),
            Ok(NotAfter::At(1_800_086_400))
        );
        assert_eq!(
            not_after(RawNotAfter::Text("2027-01-16T08:00:00Z".to_owned())),
            Ok(NotAfter::At(1_800_086_400))
        );
        assert_eq!(NotAfter::AfterStart(Duration::from_secs(10)).resolve(5), 15);
        for (raw, words) in [
            (RawNotAfter::Unix(1_799_999_999), "in the past"),
            (RawNotAfter::Unix(1_800_000_000), "in the past"),
            (
                RawNotAfter::Unix(1_800_000_000 + 367 * 86_400),
                "implausibly far",
            ),
            (RawNotAfter::Text("400d".to_owned()), "implausibly far"),
            (RawNotAfter::Text("0s".to_owned()), "greater than zero"),
            (RawNotAfter::Text("soon".to_owned()), "duration after start"),
        ] {
            let e = not_after(raw).unwrap_err();
            assert_eq!(e.key, "signet.aci.not_after");
            assert!(e.message.contains(words), "{e}");
        }
    }

    #[test]
    fn provenance_and_names_are_checked() {
        let raw = RawProvenance {
            repo_url: Some("https://github.com/example/signet".to_owned()),
            repo_commit: Some("0123abc".to_owned()),
            image_digest: None,
        };
        let provenance = check_provenance(raw, "p").unwrap().unwrap();
        assert_eq!(provenance.image_digest, None);
        assert_eq!(check_provenance(RawProvenance::default(), "p"), Ok(None));
        for (raw, key) in [
            (
                RawProvenance {
                    repo_url: Some("http://x".to_owned()),
                    ..RawProvenance::default()
                },
                "p.repo_url",
            ),
            (
                RawProvenance {
                    repo_commit: Some("XYZ".to_owned()),
                    ..RawProvenance::default()
                },
                "p.repo_commit",
            ),
            (
                RawProvenance {
                    image_digest: Some("sha256:00".to_owned()),
                    ..RawProvenance::default()
                },
                "p.image_digest",
            ),
        ] {
            assert_eq!(check_provenance(raw, "p").unwrap_err().key, key);
        }
        let raw = RawAci {
            tls_domain: Some("api.example.com".to_owned()),
            ..RawAci::default()
        };
        assert_eq!(
            check(raw, "signet.aci", false).unwrap_err().key,
            "signet.aci.tls_domain"
        );
        let raw = RawAci {
            subject: Some("bad\nname".to_owned()),
            ..RawAci::default()
        };
        assert_eq!(
            check(raw, "signet.aci", true).unwrap_err().key,
            "signet.aci.subject"
        );
    }
}
