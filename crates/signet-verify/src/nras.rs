//! NVIDIA Remote Attestation Service: the verifier posts the gateway's `nvidia_payload`
//! unchanged to NRAS (`/v3/attest/gpu`) and reads the verdict from the returned tokens.
//!
//! NRAS answers `[["JWT", "<overall token>"], {"GPU-0": "<token>", …}]`: ES384 JSON Web
//! Tokens. Every token's signature is checked against NVIDIA's published signing keys, a JWK
//! set (`/.well-known/jwks.json` on the NRAS host, or a saved copy for offline use) whose keys
//! carry their certificate (`x5c`) or their point (`x`, `y`); the key is picked by the token's
//! `kid`. Only then are the claims read: the overall result and `eat_nonce`, which must be the
//! nonce the verifier sent. A token that is not signed by one of those keys is refused,
//! however good its claims look.
//!
//! The ES384 check is `ring`'s (already the TLS stack's crypto provider); the compact JWS form
//! is split and decoded here, nothing more.

use super::http::{BaseUrl, Client};
use base64::Engine;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What NRAS said, from tokens whose signatures verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NrasVerdict {
    /// `x-nvidia-overall-att-result` of the overall token.
    pub overall: bool,
    /// `eat_nonce` of the overall token, if present.
    pub nonce: Option<String>,
    /// How many tokens were verified (the overall one and one per GPU).
    pub tokens: usize,
}

/// Where NVIDIA's signing keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// `/.well-known/jwks.json` on the NRAS host (as NVIDIA's own SDK does).
    FromNras,
    /// A saved JWK set (offline use).
    Saved(Vec<u8>),
}

/// Seconds of clock skew allowed for `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// NVIDIA's signing keys: the uncompressed P-384 point of each, by key id.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: HashMap<String, Vec<u8>>,
}

impl Jwks {
    /// Reads a JWK set. Keys that are not P-384 EC keys are skipped; a set with none is an
    /// error.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("the JWK set is not JSON: {e}"))?;
        let listed = value["keys"]
            .as_array()
            .ok_or("the JWK set has no \"keys\" list")?;
        let mut keys = HashMap::new();
        for key in listed {
            let Some(kid) = key["kid"].as_str() else {
                continue;
            };
            if let Some(point) = point_of_jwk(key) {
                keys.insert(kid.to_owned(), point);
            }
        }
        if keys.is_empty() {
            return Err("the JWK set has no P-384 key".to_owned());
        }
        Ok(Self { keys })
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The uncompressed P-384 point (0x04 ‖ x ‖ y, 97 bytes) of a JWK: from the first
/// certificate of its `x5c`, else from `x` and `y`.
fn point_of_jwk(key: &serde_json::Value) -> Option<Vec<u8>> {
    use x509_cert::der::Decode;
    if let Some(first) = key["x5c"].get(0).and_then(serde_json::Value::as_str) {
        let der = base64::engine::general_purpose::STANDARD
            .decode(first)
            .ok()?;
        let cert = x509_cert::Certificate::from_der(&der).ok()?;
        let point = cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .as_bytes()?
            .to_vec();
        return (point.len() == 97 && point[0] == 4).then_some(point);
    }
    if key["kty"] != "EC" || key["crv"] != "P-384" {
        return None;
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let x = b64.decode(key["x"].as_str()?).ok()?;
    let y = b64.decode(key["y"].as_str()?).ok()?;
    if x.len() != 48 || y.len() != 48 {
        return None;
    }
    let mut point = vec![4u8];
    point.extend(x);
    point.extend(y);
    Some(point)
}

fn b64url(part: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| "a token part is not base64url".to_owned())
}

/// Verifies a compact ES384 JWS against `jwks` and returns its claims; `now` (Unix seconds)
/// is checked against `exp` and `nbf` when the token has them.
pub fn verify_token(token: &str, jwks: &Jwks, now: u64) -> Result<serde_json::Value, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS (three dot-separated parts)".to_owned());
    };
    let header: serde_json::Value = serde_json::from_slice(&b64url(header)?)
        .map_err(|_| "the token header is not JSON".to_owned())?;
    if header["alg"] != "ES384" {
        return Err(format!("token algorithm {} is not ES384", header["alg"]));
    }
    let kid = header["kid"]
        .as_str()
        .ok_or("the token header has no kid")?;
    let point = jwks
        .keys
        .get(kid)
        .ok_or_else(|| format!("no NVIDIA signing key {kid} in the JWK set"))?;
    let signature = b64url(signature)?;
    let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, point)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| format!("the token's signature does not verify with NVIDIA key {kid}"))?;
    let claims: serde_json::Value = serde_json::from_slice(&b64url(payload)?)
        .map_err(|_| "the token claims are not JSON".to_owned())?;
    if let Some(exp) = claims["exp"].as_u64()
        && now > exp + LEEWAY_SECS
    {
        return Err(format!("the token expired at {exp}"));
    }
    if let Some(nbf) = claims["nbf"].as_u64()
        && nbf > now + LEEWAY_SECS
    {
        return Err(format!("the token is not valid before {nbf}"));
    }
    Ok(claims)
}

/// Verifies every token of an NRAS v3 answer (`[["JWT", "<token>"], {"GPU-0": "<token>"}]`)
/// and reads the verdict from the overall one.
pub fn read_verdict(
    answer: &serde_json::Value,
    jwks: &Jwks,
    now: u64,
) -> Result<NrasVerdict, String> {
    let token = answer
        .get(0)
        .and_then(|pair| pair.get(1))
        .and_then(serde_json::Value::as_str)
        .ok_or("no overall token in the NRAS answer")?;
    let claims = verify_token(token, jwks, now).map_err(|e| format!("overall token: {e}"))?;
    let mut tokens = 1;
    if let Some(detached) = answer.get(1).and_then(serde_json::Value::as_object) {
        for (name, token) in detached {
            let token = token
                .as_str()
                .ok_or_else(|| format!("{name}: the token is not a string"))?;
            verify_token(token, jwks, now).map_err(|e| format!("{name} token: {e}"))?;
            tokens += 1;
        }
    }
    Ok(NrasVerdict {
        overall: claims["x-nvidia-overall-att-result"].as_bool() == Some(true),
        nonce: claims["eat_nonce"].as_str().map(str::to_owned),
        tokens,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Posts `payload` to `url`, gets NVIDIA's signing keys (`jwks`), and reads the verdict from
/// tokens whose signatures verified.
pub async fn attest(
    url: &str,
    payload: &str,
    jwks: &JwksSource,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<NrasVerdict, String> {
    let base = BaseUrl::parse(url).map_err(|e| e.to_string())?;
    let path = if base.prefix.is_empty() {
        "/v3/attest/gpu".to_owned()
    } else {
        base.prefix.clone()
    };
    let client = Client::new(
        BaseUrl {
            prefix: String::new(),
            ..base
        },
        tls,
        timeout,
    );
    let response = client
        .send(
            http::Method::POST,
            &path,
            &[
                ("content-type", "application/json".to_owned()),
                ("accept", "application/json".to_owned()),
            ],
            Bytes::from(payload.to_owned()),
        )
        .await
        .map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!(
            "NRAS answered HTTP {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    let answer = response.json()?;
    let keys = match jwks {
        JwksSource::Saved(bytes) => Jwks::parse(bytes)?,
        JwksSource::FromNras => {
            let fetched = client
                .send(
                    http::Method::GET,
                    "/.well-known/jwks.json",
                    &[("accept", "application/json".to_owned())],
                    Bytes::new(),
                )
                .await
                .map_err(|e| format!("NVIDIA's signing keys: {e}"))?;
            if fetched.status != 200 {
                return Err(format!(
                    "NVIDIA's signing keys: HTTP {} from /.well-known/jwks.json",
                    fetched.status
                ));
            }
            Jwks::parse(&fetched.body)?
        }
    };
    read_verdict(&answer, &keys, now_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    struct TestKey {
        pair: EcdsaKeyPair,
        kid: String,
    }

    impl TestKey {
        fn new(kid: &str) -> Self {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Self {
                pair,
                kid: kid.to_owned(),
            }
        }

        fn jwk(&self) -> serde_json::Value {
            let point = self.pair.public_key().as_ref();
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            serde_json::json!({"kty": "EC", "crv": "P-384", "kid": self.kid,
                "x": b64.encode(&point[1..49]), "y": b64.encode(&point[49..])})
        }

        fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let header = serde_json::json!({"alg": "ES384", "kid": kid, "typ": "JWT"});
            let input = format!(
                "{}.{}",
                b64.encode(header.to_string()),
                b64.encode(claims.to_string())
            );
            let rng = ring::rand::SystemRandom::new();
            let signature = self.pair.sign(&rng, input.as_bytes()).unwrap();
            format!("{input}.{}", b64.encode(signature.as_ref()))
        }
    }

    fn jwks_of(keys: &[&TestKey]) -> Jwks {
        let set = serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        Jwks::parse(set.to_string().as_bytes()).unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    fn claims(result: bool) -> serde_json::Value {
        serde_json::json!({"x-nvidia-overall-att-result": result, "eat_nonce": "ab",
            "iat": NOW, "nbf": NOW, "exp": NOW + 3600})
    }

    #[test]
    fn tokens_signed_by_a_published_key_are_read() {
        let nvidia = TestKey::new("nv-1");
        let jwks = jwks_of(&[&nvidia]);
        let answer = serde_json::json!([
            ["JWT", nvidia.sign("nv-1", &claims(true))],
            {"GPU-0": nvidia.sign("nv-1", &serde_json::json!({"exp": NOW + 3600}))}
        ]);
        assert_eq!(
            read_verdict(&answer, &jwks, NOW).unwrap(),
            NrasVerdict {
                overall: true,
                nonce: Some("ab".to_owned()),
                tokens: 2
            }
        );
        let failed = serde_json::json!([["JWT", nvidia.sign("nv-1", &claims(false))]]);
        assert!(!read_verdict(&failed, &jwks, NOW).unwrap().overall);
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let nvidia = TestKey::new("nv-1");
        let forger = TestKey::new("nv-1");
        let jwks = jwks_of(&[&nvidia]);
        // Good claims, the right kid, the wrong key.
        let forged = serde_json::json!([["JWT", forger.sign("nv-1", &claims(true))]]);
        let e = read_verdict(&forged, &jwks, NOW).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // A good overall token with a forged GPU token.
        let mixed = serde_json::json!([
            ["JWT", nvidia.sign("nv-1", &claims(true))],
            {"GPU-0": forger.sign("nv-1", &claims(true))}
        ]);
        assert!(
            read_verdict(&mixed, &jwks, NOW)
                .unwrap_err()
                .contains("GPU-0")
        );
        // An unknown kid, another algorithm, no signature, a tampered payload.
        let unknown = serde_json::json!([["JWT", nvidia.sign("nv-2", &claims(true))]]);
        assert!(
            read_verdict(&unknown, &jwks, NOW)
                .unwrap_err()
                .contains("nv-2")
        );
        let good = nvidia.sign("nv-1", &claims(true));
        let mut parts: Vec<&str> = good.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none_header = b64.encode(r#"{"alg":"none","kid":"nv-1"}"#);
        parts[0] = &none_header;
        assert!(
            verify_token(&parts.join("."), &jwks, NOW)
                .unwrap_err()
                .contains("ES384")
        );
        let unsigned = format!(
            "{}.{}.",
            good.split('.').next().unwrap(),
            good.split('.').nth(1).unwrap()
        );
        assert!(verify_token(&unsigned, &jwks, NOW).is_err());
        let tampered_claims = b64.encode(claims(true).to_string().replace("ab", "cd"));
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = &tampered_claims;
        assert!(
            verify_token(&parts.join("."), &jwks, NOW)
                .unwrap_err()
                .contains("does not verify")
        );
        // Expired, and not yet valid.
        assert!(
            verify_token(&good, &jwks, NOW + 3600 + LEEWAY_SECS + 1)
                .unwrap_err()
                .contains("expired")
        );
        assert!(
            verify_token(&good, &jwks, NOW - LEEWAY_SECS - 1)
                .unwrap_err()
                .contains("before")
        );
        assert!(read_verdict(&serde_json::json!({"error": 1}), &jwks, NOW).is_err());
        assert!(read_verdict(&serde_json::json!([["JWT", "nope"]]), &jwks, NOW).is_err());
    }

    #[test]
    fn a_jwk_set_without_a_p384_key_is_refused() {
        assert!(Jwks::parse(br#"{"keys": []}"#).is_err());
        assert!(
            Jwks::parse(br#"{"keys": [{"kid": "r", "kty": "RSA", "n": "AQ", "e": "AQAB"}]}"#)
                .is_err()
        );
        assert!(Jwks::parse(b"nope").is_err());
    }
}
