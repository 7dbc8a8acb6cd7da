//! The query parameters of signet's local routes. A parameter given twice is refused, so two
//! parts of a stack can never read different values from one request.

use crate::error::ApiError;
use crate::ids::Nonce;

/// Finds `name` in a query string. A parameter given twice is refused, so two parts of a
/// stack can never read different values from one request.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Result<Option<&'q str>, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            if found.is_some() {
                return Err(ApiError::bad_request(
                    "duplicate_parameter",
                    format!("query parameter `{name}` given more than once"),
                ));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// Checks the optional `signing_algo` parameter: only `ecdsa` exists.
pub fn check_signing_algo(query: Option<&str>) -> Result<(), ApiError> {
    match query_param(query, "signing_algo")? {
        None | Some("ecdsa") => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "unsupported_signing_algo",
            "signing_algo must be `ecdsa`",
        )
        .with_param("signing_algo")),
    }
}

/// Whether the query asks for a report bound to the TLS certificate: `tls_binding=true` (or
/// `1`), or `version=2` as Phala's deployments call it.
pub fn wants_tls_binding(query: Option<&str>) -> Result<bool, ApiError> {
    let binding = match query_param(query, "tls_binding")? {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_tls_binding",
                "tls_binding must be true or false",
            )
            .with_param("tls_binding"));
        }
    };
    let version = match query_param(query, "version")? {
        None | Some("1") => false,
        Some("2") => true,
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_version", "version must be 1 or 2")
                    .with_param("version"),
            );
        }
    };
    Ok(binding || version)
}

/// Reads `nonce` (optional, 64 hex chars) and checks `signing_algo`.
pub fn parse_nonce_query(query: Option<&str>) -> Result<Option<Nonce>, ApiError> {
    check_signing_algo(query)?;
    query_param(query, "nonce")?
        .map(|text| {
            Nonce::parse(text).map_err(|e| {
                ApiError::bad_request("invalid_nonce", e.to_string()).with_param("nonce")
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_duplicates_refused() {
        assert_eq!(query_param(Some("a=1&nonce=ab"), "nonce"), Ok(Some("ab")));
        assert_eq!(query_param(None, "nonce"), Ok(None));
        assert_eq!(query_param(Some("nonce"), "nonce"), Ok(Some("")));
        assert!(query_param(Some("nonce=a&nonce=b"), "nonce").is_err());
        assert!(check_signing_algo(Some("signing_algo=ecdsa")).is_ok());
        assert_eq!(
            check_signing_algo(Some("signing_algo=ed25519"))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn nonce_queries_are_checked() {
        assert_eq!(parse_nonce_query(None), Ok(None));
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_nonce_query(Some(&format!("nonce={hex}"))),
            Ok(Some(Nonce([0xab; 32])))
        );
        for bad in ["nonce=", "nonce=abc", "nonce=../../", "nonce=a&nonce=b"] {
            assert_eq!(
                parse_nonce_query(Some(bad)).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }
}
