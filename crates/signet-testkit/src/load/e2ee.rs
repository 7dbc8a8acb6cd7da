//! ACI E2EE v2 for `signet-load bench --e2ee`: the client side of what signet terminates.
//!
//! The attested keyset's key of the chosen suite is fetched once; the client key is one per
//! run. Each request gets its own nonce and timestamp, its five headers and its
//! `messages.0.content` sealed under the field's AAD, all prepared before the timed part so
//! the load generator's own sealing does not count as the target's time, and every request
//! distinct so replay protection accepts each. Answers come back with their content sealed
//! to the client key; the benchmark only counts their bytes, and `--check` opens one to
//! prove they are what the plain answer says.

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use signet_core::e2ee::crypto::{self, PublicKey, SecretKey, Suite};
use signet_core::e2ee::{VERSION, headers, request_aad, response_aad};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The model every benchmark request names (it is in every AAD).
pub const MODEL: &str = "mock-model";

/// The prompt the benchmark sends.
pub const PROMPT: &str = "Say hello.";

/// One run's E2EE client: the service key, the client key, and a counter that keeps every
/// prepared request's nonce distinct.
pub struct E2eeClient {
    service_key: PublicKey,
    service_hex: String,
    client_key: SecretKey,
    client_hex: String,
    prepared: AtomicU64,
}

/// One request ready to send: its headers (the E2EE five among them) and its body.
#[derive(Clone)]
pub struct SealedRequest {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// `X-E2EE-Nonce` and `X-E2EE-Timestamp`: the response's AADs name them.
    pub nonce: String,
    pub timestamp: u64,
}

impl E2eeClient {
    /// A client sealing to `service_key`, with a fresh client key.
    pub fn new(service_key: PublicKey) -> Self {
        let client_key = SecretKey::generate(service_key.suite());
        Self {
            service_hex: service_key.to_hex(),
            client_hex: client_key.public_key().to_hex(),
            service_key,
            client_key,
            prepared: AtomicU64::new(0),
        }
    }

    /// A client for `target`'s attested key of `suite` (from `GET /v1/aci/attestation`).
    pub async fn from_attestation(target: SocketAddr, suite: Suite) -> Result<Self, String> {
        let (status, body) = super::get(target, "/v1/aci/attestation").await?;
        if status != 200 {
            return Err(format!("GET /v1/aci/attestation answered {status}"));
        }
        let report: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the attestation is not JSON: {e}"))?;
        let key = service_key(&report, suite)?;
        Ok(Self::new(key))
    }

    /// The next request: `base_headers` plus the five E2EE headers, and a chat body whose
    /// message content is sealed. Each call has a nonce no earlier call had.
    pub fn prepare(&self, base_headers: &[(String, String)], stream: bool) -> SealedRequest {
        let index = self.prepared.fetch_add(1, Ordering::Relaxed);
        // Unique per run (the client key is fresh) and per request (the index).
        let nonce = hex::encode(
            Sha256::new()
                .chain_update(self.client_hex.as_bytes())
                .chain_update(index.to_le_bytes())
                .finalize(),
        );
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let algo = self.service_key.suite().algo();
        let field = "messages.0.content";
        let aad = request_aad(algo, MODEL, field, &nonce, timestamp);
        let content = crypto::seal(&self.service_key, PROMPT.as_bytes(), &aad);
        let body = json!({
            "model": MODEL,
            "stream": stream,
            "messages": [{"role": "user", "content": content}],
        });
        let mut all = base_headers.to_vec();
        all.extend([
            (headers::VERSION.to_owned(), VERSION.to_owned()),
            (headers::CLIENT_PUB_KEY.to_owned(), self.client_hex.clone()),
            (headers::MODEL_PUB_KEY.to_owned(), self.service_hex.clone()),
            (headers::NONCE.to_owned(), nonce.clone()),
            (headers::TIMESTAMP.to_owned(), timestamp.to_string()),
        ]);
        SealedRequest {
            headers: all,
            body: Bytes::from(body.to_string()),
            nonce,
            timestamp,
        }
    }

    /// The content of an encrypted answer to `request`, opened: a streamed one's
    /// `choices.*.delta.content` in order, or a JSON one's `choices.*.message.content`.
    /// Fails on any field that does not open with the client key under its AAD.
    pub fn open_answer(&self, request: &SealedRequest, body: &[u8]) -> Result<String, String> {
        let mut text = String::new();
        for (value, streaming) in answer_values(body)? {
            let id = value.get("id").and_then(Value::as_str).unwrap_or_default();
            let Some(Value::Array(choices)) = value.get("choices") else {
                continue;
            };
            for (position, choice) in choices.iter().enumerate() {
                let index = choice
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let (member, path) = if streaming {
                    ("delta", format!("choices.{index}.delta.content"))
                } else {
                    ("message", format!("choices.{index}.message.content"))
                };
                let Some(sealed) = choice
                    .get(member)
                    .and_then(|m| m.get("content"))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                let aad = response_aad(
                    self.service_key.suite().algo(),
                    MODEL,
                    id,
                    &path,
                    &request.nonce,
                    request.timestamp,
                );
                let plain = crypto::open(&self.client_key, sealed, &aad)
                    .map_err(|_| format!("{path} of {id} does not open with the client key"))?;
                text.push_str(
                    std::str::from_utf8(&plain).map_err(|_| format!("{path} is not UTF-8"))?,
                );
            }
        }
        Ok(text)
    }
}

/// The content of a plain answer (`open_answer`'s counterpart, for the comparison).
pub fn plain_answer(body: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    for (value, streaming) in answer_values(body)? {
        let member = if streaming { "delta" } else { "message" };
        for choice in value
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(content) = choice
                .get(member)
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
            {
                text.push_str(content);
            }
        }
    }
    Ok(text)
}

/// The JSON values of an answer, each with whether it is a stream's event: the `data:`
/// events of an event stream (without `[DONE]`), or the one JSON body.
fn answer_values(body: &[u8]) -> Result<Vec<(Value, bool)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_owned())?;
    if !text.trim_start().starts_with("data:") {
        let value = serde_json::from_str(text).map_err(|e| format!("the answer: {e}"))?;
        return Ok(vec![(value, false)]);
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]")
        .map(|data| {
            serde_json::from_str(data)
                .map(|v| (v, true))
                .map_err(|e| format!("an event: {e}"))
        })
        .collect()
}

/// The key of `suite` in an attestation report's `workload_keyset.e2ee_public_keys`.
fn service_key(report: &Value, suite: Suite) -> Result<PublicKey, String> {
    let entries = report
        .pointer("/attestation/workload_keyset/e2ee_public_keys")
        .and_then(Value::as_array)
        .ok_or("the attestation's keyset lists no E2EE keys")?;
    let entry = entries
        .iter()
        .find(|e| e.get("algo").and_then(Value::as_str) == Some(suite.algo()))
        .ok_or_else(|| format!("the attested keyset has no {} key", suite.algo()))?;
    let text = entry
        .get("public_key")
        .and_then(Value::as_str)
        .ok_or("an E2EE key entry has no public_key")?;
    PublicKey::parse(suite, text).map_err(|_| format!("the {} key does not parse", suite.algo()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_core::e2ee::fields::ResponseSealer;
    use signet_core::e2ee::stream::ResponseEncryptor;
    use signet_core::e2ee::{E2eeService, Negotiated, RequestHeaders};

    fn header<'a>(request: &'a SealedRequest, name: &str) -> Option<&'a [u8]> {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes())
    }

    /// What signet's service side makes of a prepared request.
    fn check(service: &E2eeService, request: &SealedRequest) -> Option<Negotiated> {
        let given = RequestHeaders {
            version: header(request, headers::VERSION),
            client_pub_key: header(request, headers::CLIENT_PUB_KEY),
            model_pub_key: header(request, headers::MODEL_PUB_KEY),
            nonce: header(request, headers::NONCE),
            timestamp: header(request, headers::TIMESTAMP),
            ..RequestHeaders::default()
        };
        service
            .check_request(&given, "/v1/chat/completions", request.timestamp)
            .ok()
            .flatten()
    }

    fn service_and_client(suite: Suite) -> (E2eeService, E2eeClient) {
        let service = E2eeService::generate(1024);
        let report = json!({"attestation": {"workload_keyset": {
            "e2ee_public_keys": service.keyset_entries(),
        }}});
        let client = E2eeClient::new(service_key(&report, suite).unwrap());
        (service, client)
    }

    #[test]
    fn every_prepared_request_passes_the_service_checks_and_opens_to_the_prompt() {
        for suite in [Suite::X25519, Suite::Secp256k1] {
            let (service, client) = service_and_client(suite);
            let base = [("content-type".to_owned(), "application/json".to_owned())];
            let requests: Vec<_> = (0..20).map(|_| client.prepare(&base, true)).collect();
            for request in &requests {
                let negotiated = check(&service, request).expect("a fresh request is accepted");
                let (restored, model) =
                    service.restore_request(&negotiated, &request.body).unwrap();
                let restored: Value = serde_json::from_slice(&restored).unwrap();
                assert_eq!(model, MODEL);
                assert_eq!(restored["messages"][0]["content"], PROMPT);
                assert_eq!(restored["stream"], true);
                assert_eq!(
                    header(request, "content-type"),
                    Some(&b"application/json"[..])
                );
            }
            // Sent twice, the same request is a replay.
            assert!(check(&service, &requests[0]).is_none());
        }
    }

    #[test]
    fn a_sealed_stream_opens_to_the_plain_one_and_not_under_another_nonce() {
        let (service, client) = service_and_client(Suite::X25519);
        let request = client.prepare(&[], true);
        let negotiated = check(&service, &request).unwrap();
        let plain = [
            r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":" tok0"}}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":" tok1"}}]}"#,
        ]
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect::<String>()
            + "data: [DONE]\n\n";
        let mut encryptor =
            ResponseEncryptor::new(ResponseSealer::new(negotiated, MODEL.to_owned()), true);
        let mut sealed = encryptor.push(plain.as_bytes());
        sealed.extend(encryptor.finish());
        assert!(!sealed.windows(4).any(|w| w == b"tok0"));
        assert_eq!(plain_answer(plain.as_bytes()).unwrap(), " tok0 tok1");
        assert_eq!(client.open_answer(&request, &sealed).unwrap(), " tok0 tok1");
        // Another request's nonce is another AAD: nothing opens.
        let other = client.prepare(&[], true);
        assert!(client.open_answer(&other, &sealed).is_err());
    }
}
