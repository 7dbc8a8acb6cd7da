//! NVIDIA Remote Attestation Service: the verifier posts the gateway's `nvidia_payload`
//! unchanged to NRAS (`/v3/attest/gpu`) and reads the verdict from the returned tokens. The
//! answer comes straight from NRAS over the connection the verifier opened (TLS for the real
//! service), so the tokens' claims are read, not re-verified against NVIDIA's key set.

use super::http::{BaseUrl, Client};
use base64::Engine;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// What NRAS said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NrasVerdict {
    /// `x-nvidia-overall-att-result` of the overall token.
    pub overall: bool,
    /// `eat_nonce` of the overall token, if present.
    pub nonce: Option<String>,
}

/// Decodes the claims (middle part) of a JWT without checking its signature.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads the overall token out of an NRAS v3 answer: `[["JWT", "<token>"], {"GPU-0": …}]`.
pub fn read_verdict(answer: &serde_json::Value) -> Result<NrasVerdict, String> {
    let token = answer
        .get(0)
        .and_then(|pair| pair.get(1))
        .and_then(serde_json::Value::as_str)
        .ok_or("no overall token in the NRAS answer")?;
    let claims = jwt_claims(token).ok_or("the overall token is not a JWT")?;
    Ok(NrasVerdict {
        overall: claims["x-nvidia-overall-att-result"].as_bool() == Some(true),
        nonce: claims["eat_nonce"].as_str().map(str::to_owned),
    })
}

/// Posts `payload` to `url` and reads the verdict.
pub async fn attest(
    url: &str,
    payload: &str,
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
    read_verdict(&response.json()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(br#"{"alg":"ES384"}"#),
            b64.encode(claims.to_string())
        )
    }

    #[test]
    fn the_overall_result_and_nonce_are_read() {
        let answer = serde_json::json!([
            ["JWT", token(serde_json::json!({"x-nvidia-overall-att-result": true, "eat_nonce": "ab"}))],
            {"GPU-0": token(serde_json::json!({}))}
        ]);
        assert_eq!(
            read_verdict(&answer).unwrap(),
            NrasVerdict {
                overall: true,
                nonce: Some("ab".to_owned())
            }
        );
        let failed = serde_json::json!([[
            "JWT",
            token(serde_json::json!({"x-nvidia-overall-att-result": false}))
        ]]);
        assert!(!read_verdict(&failed).unwrap().overall);
        assert!(read_verdict(&serde_json::json!({"error": 1})).is_err());
        assert!(read_verdict(&serde_json::json!([["JWT", "nope"]])).is_err());
    }
}
