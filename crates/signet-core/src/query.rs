//! The query parameters of signet's local routes. A parameter given twice is refused, so two
//! parts of a stack can never read different values from one request.

use crate::error::ApiError;
use crate::ids::Nonce;
use crate::signing::Address;

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

/// Which key a signature or report is asked for (`signing_algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlgo {
    /// secp256k1, EIP-191 (the default).
    #[default]
    Ecdsa,
    /// Ed25519 (RFC 8032), as Phala's vllm-proxy and NEAR's inference-proxy serve it.
    Ed25519,
}

impl SigningAlgo {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgo::Ecdsa => "ecdsa",
            SigningAlgo::Ed25519 => "ed25519",
        }
    }
}

/// The optional `signing_algo` parameter: `ecdsa` (the default) or `ed25519`.
pub fn signing_algo_param(query: Option<&str>) -> Result<SigningAlgo, ApiError> {
    match query_param(query, "signing_algo")? {
        None | Some("ecdsa") => Ok(SigningAlgo::Ecdsa),
        Some("ed25519") => Ok(SigningAlgo::Ed25519),
        Some(_) => Err(ApiError::bad_request(
            "unsupported_signing_algo",
            "signing_algo must be `ecdsa` or `ed25519`",
        )
        .with_param("signing_algo")),
    }
}

/// Checks the optional `signing_algo` parameter ([`signing_algo_param`]).
pub fn check_signing_algo(query: Option<&str>) -> Result<(), ApiError> {
    signing_algo_param(query).map(|_| ())
}

/// A yes/no parameter: `true`/`false` in any case (Python clients send `True`), or `1`/`0`.
fn flag(
    query: Option<&str>,
    name: &'static str,
    code: &'static str,
) -> Result<Option<bool>, ApiError> {
    match query_param(query, name)? {
        None => Ok(None),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(Some(false)),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(
            ApiError::bad_request(code, format!("{name} must be true or false")).with_param(name),
        ),
    }
}

/// Which parameter, if any, asks for a report bound to the TLS certificate:
/// `tls_binding=true` (signet's name), `include_tls_fingerprint=true` (NEAR AI's), or
/// `version=2` (Phala's). Any one of them asking is enough; a value that is not a yes or no
/// (or a version other than 1 and 2) is refused.
pub fn tls_binding_param(query: Option<&str>) -> Result<Option<&'static str>, ApiError> {
    let binding = flag(query, "tls_binding", "invalid_tls_binding")?;
    let fingerprint = flag(
        query,
        "include_tls_fingerprint",
        "invalid_include_tls_fingerprint",
    )?;
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
    Ok(if binding == Some(true) {
        Some("tls_binding")
    } else if fingerprint == Some(true) {
        Some("include_tls_fingerprint")
    } else if version {
        Some("version")
    } else {
        None
    })
}

/// Whether the query asks for a report bound to the TLS certificate ([`tls_binding_param`]).
pub fn wants_tls_binding(query: Option<&str>) -> Result<bool, ApiError> {
    tls_binding_param(query).map(|asked| asked.is_some())
}

/// The optional `signing_address`: the signer a client is looking for (it learnt the address
/// from a signature and asks each replica for the report of that key). Compared without
/// regard to case, with or without `0x`: a mixed-case address is not refused for its EIP-55
/// checksum, it is only compared.
pub fn signing_address_param(query: Option<&str>) -> Result<Option<Address>, ApiError> {
    query_param(query, "signing_address")?
        .map(|text| {
            Address::parse(&text.to_ascii_lowercase()).map_err(|e| {
                ApiError::bad_request(
                    "invalid_signing_address",
                    format!("signing_address must be a 20-byte hex address: {e}"),
                )
                .with_param("signing_address")
            })
        })
        .transpose()
}

/// The optional `model`: clients of multi-model gateways name the model whose attestation
/// they want. One signet attests one TEE, whatever model it serves, so the value does not
/// change the report; it is read only so that giving it twice is refused like any parameter.
pub fn check_model_param(query: Option<&str>) -> Result<(), ApiError> {
    query_param(query, "model").map(|_| ())
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
            signing_algo_param(Some("signing_algo=ed25519")),
            Ok(SigningAlgo::Ed25519)
        );
        assert_eq!(signing_algo_param(None), Ok(SigningAlgo::Ecdsa));
        for bad in ["signing_algo=rsa", "signing_algo=ED25519", "signing_algo="] {
            assert_eq!(
                check_signing_algo(Some(bad)).unwrap_err().code,
                "unsupported_signing_algo",
                "{bad}"
            );
        }
    }

    #[test]
    fn every_name_for_a_tls_bound_report_is_understood() {
        assert_eq!(tls_binding_param(None), Ok(None));
        for (query, asked) in [
            ("tls_binding=true", Some("tls_binding")),
            ("tls_binding=1", Some("tls_binding")),
            ("tls_binding=false", None),
            (
                "include_tls_fingerprint=true",
                Some("include_tls_fingerprint"),
            ),
            (
                "include_tls_fingerprint=True",
                Some("include_tls_fingerprint"),
            ),
            ("include_tls_fingerprint=false", None),
            ("include_tls_fingerprint=0&version=1", None),
            ("version=2", Some("version")),
            (
                "version=2&include_tls_fingerprint=true",
                Some("include_tls_fingerprint"),
            ),
            (
                "model=x&nonce=ab&include_tls_fingerprint=true",
                Some("include_tls_fingerprint"),
            ),
        ] {
            assert_eq!(tls_binding_param(Some(query)), Ok(asked), "{query}");
        }
        for bad in [
            "include_tls_fingerprint=yes",
            "include_tls_fingerprint=",
            "include_tls_fingerprint=true&include_tls_fingerprint=true",
            "tls_binding=maybe",
            "version=3",
        ] {
            assert_eq!(
                tls_binding_param(Some(bad)).unwrap_err().status,
                400,
                "{bad}"
            );
        }
        let error = tls_binding_param(Some("include_tls_fingerprint=2")).unwrap_err();
        assert_eq!(error.param, Some("include_tls_fingerprint"));
    }

    #[test]
    fn signing_addresses_are_compared_without_regard_to_case() {
        let address = Address([0xab; 20]);
        let lower = format!("0x{}", "ab".repeat(20));
        for text in [
            lower.clone(),
            lower.to_uppercase().replacen("0X", "0x", 1),
            lower.trim_start_matches("0x").to_owned(),
            // Mixed case with a wrong EIP-55 checksum: still only compared.
            format!("0x{}", "aB".repeat(20)),
        ] {
            assert_eq!(
                signing_address_param(Some(&format!("signing_address={text}"))),
                Ok(Some(address)),
                "{text}"
            );
        }
        assert_eq!(signing_address_param(Some("nonce=ab")), Ok(None));
        for bad in [
            "signing_address=0x12",
            "signing_address=",
            "signing_address=zz",
        ] {
            let error = signing_address_param(Some(bad)).unwrap_err();
            assert_eq!(error.status, 400, "{bad}");
            assert_eq!(error.code, "invalid_signing_address");
        }
    }

    #[test]
    fn model_is_accepted_once() {
        assert!(check_model_param(None).is_ok());
        assert!(check_model_param(Some("model=deepseek-ai/DeepSeek-V3.1")).is_ok());
        assert!(check_model_param(Some("model=a&model=b")).is_err());
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
