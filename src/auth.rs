//! Bearer-token authentication for proxied routes and signature lookups. Tokens are kept only
//! as SHA-256 digests and compared in constant time, so neither a timing difference nor a
//! memory dump of this structure reveals them; they are never logged.

use sha2::{Digest, Sha256};

/// The accepted tokens.
pub struct BearerTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerTokens")
            .field("count", &self.digests.len())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Equality whose running time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl BearerTokens {
    /// Accepts these tokens.
    pub fn new(tokens: &[String]) -> Self {
        Self {
            digests: tokens.iter().map(|t| digest(t.as_bytes())).collect(),
        }
    }

    /// Whether an `Authorization` header value carries an accepted bearer token. Every
    /// accepted token is compared, whatever the outcome, so the time taken says nothing about
    /// which token (if any) matched.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(bearer_token) else {
            return false;
        };
        let presented = digest(presented);
        self.digests.iter().fold(false, |found, accepted| {
            found | constant_time_eq(accepted, &presented)
        })
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750).
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_bearer_tokens_pass() {
        let tokens = BearerTokens::new(&[
            "s3cret-token-000001".to_owned(),
            "another-token-00002".to_owned(),
        ]);
        assert!(tokens.accepts(Some(b"Bearer s3cret-token-000001")));
        assert!(tokens.accepts(Some(b"bearer another-token-00002")));
        assert!(tokens.accepts(Some(b"BEARER  s3cret-token-000001 ")));
        assert!(!tokens.accepts(Some(b"Bearer s3cret-token-000002")));
        assert!(!tokens.accepts(Some(b"Basic s3cret-token-000001")));
        assert!(!tokens.accepts(Some(b"s3cret-token-000001")));
        assert!(!tokens.accepts(Some(b"Bearer ")));
        assert!(!tokens.accepts(Some(b"Bear")));
        assert!(!tokens.accepts(None));
    }

    #[test]
    fn debug_output_holds_no_token() {
        let rendered = format!(
            "{:?}",
            BearerTokens::new(&["s3cret-token-000001".to_owned()])
        );
        assert!(!rendered.contains("s3cret"));
    }
}
